//! Where CSTC sockd's own limits made it read a line otherwise than it is
//! written, and socks4d reads it as written. Pure.
//!
//! sockd read a file [`SOCKD_PIECE_LEN`] bytes at a time and took each
//! piece for a line; and it split a rule into at most [`SOCKD_MAX_FIELDS`]
//! fields, the last of which kept the rest of the line, blanks included.
//! So a 9-field rule lost its port test, and an 8-field rule whose port
//! was a service name followed by anything (a blank, a comment, a
//! command, a CR) was skipped as "Invalid port number".

use super::lex::fields;
use super::note::NoteKind;
use super::rule::PortOp;

/// The most bytes sockd read of a line at a time.
pub const SOCKD_PIECE_LEN: usize = 1022;
/// The most fields sockd split a rule into.
pub const SOCKD_MAX_FIELDS: usize = 8;

/// The note on any line, `raw` as in the file (with a CR if it has one):
/// a line sockd read in more than one piece.
pub(crate) fn line_notes(raw: &[u8]) -> Option<(NoteKind, String)> {
    if raw.len() < SOCKD_PIECE_LEN {
        return None;
    }
    let what = if raw.len() == SOCKD_PIECE_LEN {
        "read the line whole but took its newline for one more, empty line".to_string()
    } else {
        format!(
            "cut the line after byte {SOCKD_PIECE_LEN} and read its last {} byte(s), {:?}, as a line of its own",
            raw.len() - SOCKD_PIECE_LEN,
            String::from_utf8_lossy(&raw[SOCKD_PIECE_LEN..])
        )
    };
    Some((
        NoteKind::LongLine,
        format!(
            "{} bytes; CSTC sockd read lines at most {SOCKD_PIECE_LEN} bytes at a time, so it {what}, and \
             numbered every later line one higher than the file does; socks4d reads the line whole",
            raw.len()
        ),
    ))
}

/// The note on a rule written in the classic grammar, `raw` as in the
/// file: where sockd's field limit changed its meaning.
pub(crate) fn field_notes(raw: &[u8]) -> Option<(NoteKind, String)> {
    // sockd's rule ends at its first ':' or '#'.
    let body = match raw.iter().position(|&b| b == b':' || b == b'#') {
        Some(p) => &raw[..p],
        None => raw,
    };
    // The first fields are all that matter, and the count.
    let mut first = [(0, &b""[..]); SOCKD_MAX_FIELDS + 2];
    let mut total = 0;
    for f in fields(body) {
        if let Some(slot) = first.get_mut(total) {
            *slot = f;
        }
        total += 1;
    }
    let tokens = &first[..total.min(first.len())];
    let op_at = port_test_at(tokens)?;
    let port_at = op_at + 1;
    let last = SOCKD_MAX_FIELDS - 1;
    if op_at == last {
        let test = format!(
            "{} {}",
            String::from_utf8_lossy(tokens[op_at].1),
            String::from_utf8_lossy(tokens[port_at].1)
        );
        return Some((
            NoteKind::NineFields,
            format!(
                "{} fields; CSTC sockd ignored the port test of such lines ({test:?} was its 8th field with the \
                 rest of the line, so it matched every port); socks4d applies it",
                total
            ),
        ));
    }
    if port_at == last {
        let (start, port) = tokens[port_at];
        let eighth = &body[start..];
        if eighth != port && !port[0].is_ascii_digit() {
            let after = match raw.get(body.len()) {
                Some(b':') => "a command",
                Some(b'#') => "a comment",
                _ if total > SOCKD_MAX_FIELDS => "more fields",
                _ if eighth.ends_with(b"\r") => "a CR (a DOS line end)",
                _ => "a blank",
            };
            return Some((
                NoteKind::EighthFieldService,
                format!(
                    "8 fields with the service name {:?} last and {after} after it; CSTC sockd kept the blanks \
                     in its 8th field, read the port as {:?} and skipped the line as \"Invalid port number\"; \
                     socks4d applies the rule (delete the line to keep sockd's behaviour)",
                    String::from_utf8_lossy(port),
                    String::from_utf8_lossy(eighth)
                ),
            ));
        }
    }
    None
}

/// Where the port test's operator of a classic rule is, if it has one:
/// after the action, `?=`, `*=`, the source pair and the destination pair.
fn port_test_at(tokens: &[(usize, &[u8])]) -> Option<usize> {
    let t = |i: usize| tokens.get(i).map(|t| t.1);
    let mut at = 1;
    if t(at)?.starts_with(b"?=") {
        at += 1;
    }
    if t(at).is_some_and(|f| f.starts_with(b"*=")) {
        at += 1;
    }
    at += 2;
    if tokens.len() > at + 1 && PortOp::from_token(t(at)?).is_none() {
        at += 2;
    }
    (tokens.len() > at + 1 && PortOp::from_token(t(at)?).is_some()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(n: &Option<(NoteKind, String)>) -> Vec<NoteKind> {
        n.iter().map(|n| n.0).collect()
    }

    #[test]
    fn nine_fields_lose_their_port_test() {
        let n = field_notes(b"permit ?=I *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq 23");
        assert_eq!(kinds(&n), [NoteKind::NineFields]);
        assert!(
            n.as_ref()
                .unwrap()
                .1
                .starts_with("9 fields; CSTC sockd ignored the port test"),
            "{}",
            n.as_ref().unwrap().1
        );
        // Eight or fewer: none.
        assert!(field_notes(b"permit *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq 23").is_none());
        assert!(field_notes(b"permit ?=I *=alice 10.0.0.0 255.0.0.0 eq 23").is_none());
    }

    #[test]
    fn eighth_field_service_with_anything_after_it_was_skipped() {
        for (line, after) in [
            (
                &b"permit *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet "[..],
                "a blank",
            ),
            (
                b"permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet # c",
                "a comment",
            ),
            (
                b"permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet\t: echo x",
                "a command",
            ),
            (
                b"permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet\r",
                "a CR (a DOS line end)",
            ),
            (
                b"permit ?=i 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet extra",
                "more fields",
            ),
        ] {
            let n = field_notes(line);
            assert_eq!(kinds(&n), [NoteKind::EighthFieldService], "{line:?}");
            assert!(n.as_ref().unwrap().1.contains(after), "{}", n.as_ref().unwrap().1);
        }
        // A number in that place, or nothing after the name: as written.
        assert!(field_notes(b"permit *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq 23 ").is_none());
        assert!(field_notes(b"permit *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet").is_none());
        assert!(field_notes(b"permit *=alice 10.0.0.0 255.0.0.0 0.0.0.0 0.0.0.0 eq telnet:x").is_none());
    }

    #[test]
    fn long_lines_were_read_in_pieces() {
        assert!(line_notes(&[b'x'; 1021]).is_none());
        let n = line_notes(&[b'x'; 1022]);
        assert_eq!(kinds(&n), [NoteKind::LongLine]);
        assert!(
            n.as_ref().unwrap().1.contains("one more, empty line"),
            "{}",
            n.as_ref().unwrap().1
        );
        let mut line = vec![b' '; 1022];
        line.push(b'7');
        let n = line_notes(&line);
        assert!(
            n.as_ref().unwrap().1.starts_with("1023 bytes") && n.as_ref().unwrap().1.contains("\"7\""),
            "{}",
            n.as_ref().unwrap().1
        );
    }
}
