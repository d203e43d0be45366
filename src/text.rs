//! Bytes from files and from the wire, made safe to print, and the lines
//! of a text file. Pure; used by the audit lines, the rules and the route
//! file.

/// The most bytes of a field an error message quotes.
pub const MAX_SHOWN_LEN: usize = 64;

/// Quotes `value`: printable ASCII as it is, `"` and `\` backslash-escaped,
/// every other byte as `\xHH`; past `max_len` bytes, cut and marked with
/// `...` after the closing quote. The result never holds a control byte or
/// an unescaped quote.
pub fn quote(value: &[u8], max_len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Bytes shown as they are. A table: this runs for every field of an
    // error message and every wire-supplied value of an audit line.
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0x20;
        while b <= 0x7e {
            t[b] = b != b'"' as usize && b != b'\\' as usize;
            b += 1;
        }
        t
    };
    let mut rest = &value[..value.len().min(max_len)];
    let mut out = Vec::with_capacity(rest.len() + 5);
    out.push(b'"');
    while !rest.is_empty() {
        let run = rest.iter().position(|&b| !PLAIN[usize::from(b)]).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { break };
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            _ => out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
        }
        rest = &rest[run + 1..];
    }
    out.push(b'"');
    if value.len() > max_len {
        out.extend_from_slice(b"...");
    }
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// A field quoted for an error message, at most [`MAX_SHOWN_LEN`] bytes of
/// it ([`quote`]).
pub fn show(field: &[u8]) -> String {
    quote(field, MAX_SHOWN_LEN)
}

/// `s` without the bytes `blank` takes for blanks at either end.
pub fn trim(mut s: &[u8], blank: impl Fn(u8) -> bool) -> &[u8] {
    while let [b, rest @ ..] = s {
        if !blank(*b) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., b] = s {
        if !blank(*b) {
            break;
        }
        s = rest;
    }
    s
}

/// The lines of a text file with their numbers from 1, each without its
/// newline (a CR before it stays); a newline at the end starts no line.
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let count = if text.is_empty() { 0 } else { usize::MAX };
    body.split(|&b| b == b'\n').take(count).zip(1..).map(|(l, n)| (n, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_and_cuts() {
        assert_eq!(show(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(show(b"\x00\xff\tx"), r#""\x00\xff\x09x""#);
        assert_eq!(quote(b"abcdef", 4), r#""abcd"..."#);
        assert_eq!(quote(b"abcd", 4), r#""abcd""#);
        assert_eq!(quote(b"", 4), r#""""#);
    }

    #[test]
    fn trimming_takes_what_the_caller_calls_blank() {
        assert_eq!(trim(b" \t x y\t ", |b| b == b' ' || b == b'\t'), b"x y");
        assert_eq!(trim(b"\r x\r", |b| b == b' '), b"\r x\r");
        assert_eq!(trim(b"   ", |b| b == b' '), b"");
    }

    #[test]
    fn lines_are_numbered_and_a_last_newline_starts_none() {
        fn all(t: &[u8]) -> Vec<(usize, &[u8])> {
            lines(t).collect()
        }
        assert_eq!(all(b"a\nb\r\n"), [(1, &b"a"[..]), (2, b"b\r")]);
        assert_eq!(all(b"a\n\nb"), [(1, &b"a"[..]), (2, b""), (3, b"b")]);
        assert_eq!(all(b"\n"), [(1, &b""[..])]);
        assert!(all(b"").is_empty());
    }
}
