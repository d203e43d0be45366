//! The fields of a rules-file line, split on blanks as CSTC sockd split
//! them. Pure; what the grammar and the classic readings share.

/// The field separators: blanks, and the other bytes C's `isspace` takes
/// for blanks, as sockd did (a newline ends the line before this is asked).
pub fn is_blank(b: u8) -> bool {
    // A table rather than comparisons: this runs for every byte of every
    // line, at each connection and in the fuzzer's instrumented build.
    const BLANK: [bool; 256] = {
        let mut t = [false; 256];
        t[b' ' as usize] = true;
        t[b'\t' as usize] = true;
        t[b'\r' as usize] = true;
        t[0x0b] = true;
        t[0x0c] = true;
        t
    };
    BLANK[usize::from(b)]
}

/// `s` without blanks at either end.
pub fn trim(s: &[u8]) -> &[u8] {
    crate::text::trim(s, is_blank)
}

/// The fields of `line` with their offsets in it.
pub fn fields(line: &[u8]) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < line.len() && is_blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return None;
        }
        let start = i;
        while i < line.len() && !is_blank(line[i]) {
            i += 1;
        }
        Some((start, &line[start..i]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_on_every_blank_c_knows() {
        let got: Vec<_> = fields(b" permit\t10.0.0.0\x0b\x0c255.0.0.0\r").collect();
        assert_eq!(got, [(1, &b"permit"[..]), (8, b"10.0.0.0"), (18, b"255.0.0.0")]);
        assert_eq!(fields(b" \t\r").count(), 0);
        assert_eq!(trim(b"\t x y \r"), b"x y");
        assert!(!is_blank(b'\n') && !is_blank(0));
    }
}
