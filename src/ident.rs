//! RFC 1413 ident: the query line and a strict reply parser, pure, plus
//! [`query`], the one function that talks to the client host's identd.
//!
//! A reply is `<port-pair> : USERID : <opsys>[,<charset>] : <user-id>` or
//! `<port-pair> : ERROR : <error-type>`, ended by CR LF. Whitespace around
//! the tokens is allowed. The user-id is everything after the colon that
//! follows the opsys field, up to CR LF, so it may itself hold colons.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use crate::net::{self, Deadline, Parse, Unread};

/// When to ask the client host's identd, and what its answer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No USERID answer: 0x5C. A different user-id: 0x5D.
    Required,
    /// No USERID answer: proceed. A different user-id: 0x5D.
    Optional,
    /// No query.
    Off,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Required => "required",
            Mode::Optional => "optional",
            Mode::Off => "off",
        }
    }
}

/// The well-known ident port.
pub const IDENT_PORT: u16 = 113;
/// The longest reply line accepted, CR LF included.
pub const MAX_REPLY_LEN: usize = 1000;

/// A complete, well-formed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `USERID`: who owns the connection.
    UserId {
        opsys: String,
        charset: Option<String>,
        /// Surrounding spaces and tabs trimmed; arbitrary bytes otherwise.
        user: Vec<u8>,
    },
    /// `ERROR`: the identd would not or could not say (`NO-USER`,
    /// `HIDDEN-USER`, ...).
    Error(String),
}

/// Why a reply line is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// No CR LF within [`MAX_REPLY_LEN`] bytes.
    TooLong,
    /// A NUL byte before the end of the line.
    Nul,
    /// A LF not preceded by CR, or a CR not followed by LF.
    BareNewline,
    /// The port pair does not echo the query.
    WrongPorts,
    /// Anything else that does not follow the grammar; says what.
    Malformed(&'static str),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::TooLong => write!(f, "reply longer than {MAX_REPLY_LEN} bytes"),
            Invalid::Nul => write!(f, "NUL byte in reply"),
            Invalid::BareNewline => write!(f, "line not ended by CR LF"),
            Invalid::WrongPorts => write!(f, "reply names other ports than asked"),
            Invalid::Malformed(what) => write!(f, "malformed reply: {what}"),
        }
    }
}

/// The query for the connection from the client's `client_port` to our
/// `our_port`: `"<client port> , <our port>\r\n"`.
pub fn query_line(client_port: u16, our_port: u16) -> String {
    format!("{client_port} , {our_port}\r\n")
}

/// Parses everything received so far: incomplete while there is no CR LF
/// yet and the cap is not reached, so more may come.
pub fn parse(buf: &[u8], client_port: u16, our_port: u16) -> Result<Parse<Reply>, Invalid> {
    let end = buf.iter().position(|&b| b == b'\n' || b == b'\r' || b == 0);
    let Some(end) = end else {
        return if buf.len() >= MAX_REPLY_LEN {
            Err(Invalid::TooLong)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    if end + 2 > MAX_REPLY_LEN {
        return Err(Invalid::TooLong);
    }
    match (buf[end], buf.get(end + 1)) {
        (0, _) => return Err(Invalid::Nul),
        (b'\n', _) => return Err(Invalid::BareNewline),
        (b'\r', None) => return Ok(Parse::Incomplete),
        (b'\r', Some(b'\n')) => {}
        _ => return Err(Invalid::BareNewline),
    }
    parse_line(&buf[..end], client_port, our_port).map(|reply| Parse::Complete(reply, end + 2))
}

/// Parses one line without its CR LF.
fn parse_line(line: &[u8], client_port: u16, our_port: u16) -> Result<Reply, Invalid> {
    let mut fields = line.splitn(3, |&b| b == b':');
    let ports = fields.next().ok_or(Invalid::Malformed("empty line"))?;
    let kind = fields.next().ok_or(Invalid::Malformed("no reply type"))?;
    let info = fields.next().ok_or(Invalid::Malformed("no additional info"))?;

    let (a, b) = port_pair(ports)?;
    if (a, b) != (client_port, our_port) {
        return Err(Invalid::WrongPorts);
    }
    match trim(kind) {
        b"USERID" => {
            let colon = info
                .iter()
                .position(|&b| b == b':')
                .ok_or(Invalid::Malformed("no user-id after opsys"))?;
            let (opsys_field, user) = (&info[..colon], &info[colon + 1..]);
            let (opsys, charset) = match opsys_field.iter().position(|&b| b == b',') {
                Some(comma) => (
                    &opsys_field[..comma],
                    Some(token(&opsys_field[comma + 1..], "charset")?),
                ),
                None => (opsys_field, None),
            };
            let opsys = token(opsys, "opsys")?;
            let user = trim(user);
            if user.is_empty() {
                return Err(Invalid::Malformed("empty user-id"));
            }
            Ok(Reply::UserId {
                opsys,
                charset,
                user: user.to_vec(),
            })
        }
        b"ERROR" => Ok(Reply::Error(token(info, "error type")?)),
        _ => Err(Invalid::Malformed("reply type is neither USERID nor ERROR")),
    }
}

/// `<port> , <port>`, each from 1 to 65535.
fn port_pair(field: &[u8]) -> Result<(u16, u16), Invalid> {
    let comma = field
        .iter()
        .position(|&b| b == b',')
        .ok_or(Invalid::Malformed("no port pair"))?;
    Ok((port(&field[..comma])?, port(&field[comma + 1..])?))
}

fn port(field: &[u8]) -> Result<u16, Invalid> {
    let digits = trim(field);
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Invalid::Malformed("port is not a number"));
    }
    let n = digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Invalid::Malformed("port out of range")),
    }
}

/// A non-empty printable token with its surrounding whitespace trimmed.
fn token(field: &[u8], what: &'static str) -> Result<String, Invalid> {
    let t = trim(field);
    if t.is_empty() || !t.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::Malformed(match what {
            "opsys" => "bad opsys field",
            "charset" => "bad charset",
            _ => "bad error type",
        }));
    }
    Ok(String::from_utf8_lossy(t).into_owned())
}

/// `s` without blanks and tabs at either end.
fn trim(s: &[u8]) -> &[u8] {
    crate::text::trim(s, |b| b == b' ' || b == b'\t')
}

/// What the identd said, or why it said nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    UserId(Vec<u8>),
    Error(String),
    /// No connection, a timeout, or a reply that breaks the grammar.
    Unreachable(String),
    /// No query was made: this process is out of descriptors.
    FdLimit(String),
}

/// Asks the identd on `client`'s host, at [`IDENT_PORT`], who owns the
/// connection from `client` to our port `our_port`. The query socket is
/// bound to the first of `sources` that this host has (normally one: the
/// address the client connected to, as RFC 1413 requires on a
/// multi-homed host). Connect, write and read all share `deadline`; at
/// most [`MAX_REPLY_LEN`] bytes are read. The socket is closed before
/// returning.
pub fn query(sources: &[IpAddr], client: SocketAddr, our_port: u16, deadline: Deadline) -> Answer {
    let to = SocketAddr::new(client.ip(), IDENT_PORT);
    let mut stream = None;
    let mut last = String::from("no source address");
    for &ip in sources {
        match net::connect_from(to, Some(SocketAddr::new(ip, 0)), deadline) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            // Not an address of this host: try the next.
            Err(net::ConnectError::Bind(e)) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                last = format!("bind {ip}: {e}");
            }
            Err(e) => {
                let e = e.into_io();
                if net::is_fd_limit(&e) {
                    return Answer::FdLimit(format!("ident socket: {e}{}", net::nofile_note()));
                }
                return Answer::Unreachable(e.to_string());
            }
        }
    }
    let Some(stream) = stream else {
        return Answer::Unreachable(last);
    };
    match exchange(stream, client, our_port, deadline) {
        Ok(Reply::UserId { user, .. }) => Answer::UserId(user),
        Ok(Reply::Error(e)) => Answer::Error(e),
        Err(why) => Answer::Unreachable(why),
    }
}

fn exchange(stream: TcpStream, client: SocketAddr, our_port: u16, deadline: Deadline) -> Result<Reply, String> {
    let q = query_line(client.port(), our_port);
    net::write_all(&stream, q.as_bytes(), deadline, "ident query").map_err(|e| e.to_string())?;
    let mut buf = [0u8; MAX_REPLY_LEN];
    let parse = |b: &[u8]| parse(b, client.port(), our_port);
    match net::read_message(&stream, &mut buf, 0, deadline, "ident reply", parse) {
        Ok((reply, _, _)) => Ok(reply),
        Err(Unread::Invalid(invalid, _)) => Err(format!("bad reply: {invalid}")),
        Err(Unread::Closed(0)) => Err("closed without a reply".into()),
        Err(Unread::Closed(_)) => Err("bad reply: line not ended by CR LF".into()),
        Err(Unread::Io(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Result<Option<Reply>, Invalid> {
        parse(s, 5555, 1080).map(|p| match p {
            Parse::Complete(reply, _) => Some(reply),
            Parse::Incomplete => None,
        })
    }

    fn user(s: &[u8]) -> Vec<u8> {
        match p(s) {
            Ok(Some(Reply::UserId { user, .. })) => user,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        }
    }

    #[test]
    fn query_line_names_both_ports() {
        assert_eq!(query_line(5555, 1080), "5555 , 1080\r\n");
    }

    #[test]
    fn userid_reply() {
        assert_eq!(
            p(b"5555 , 1080 : USERID : UNIX : alice\r\n"),
            Ok(Some(Reply::UserId {
                opsys: "UNIX".into(),
                charset: None,
                user: b"alice".to_vec()
            }))
        );
    }

    #[test]
    fn error_reply() {
        assert_eq!(
            p(b"5555 , 1080 : ERROR : NO-USER\r\n"),
            Ok(Some(Reply::Error("NO-USER".into())))
        );
        assert_eq!(
            p(b"5555,1080:ERROR:HIDDEN-USER\r\n"),
            Ok(Some(Reply::Error("HIDDEN-USER".into())))
        );
    }

    #[test]
    fn spacing_variants() {
        assert_eq!(user(b"5555,1080:USERID:UNIX:alice\r\n"), b"alice");
        assert_eq!(user(b"  5555\t,  1080 \t:\tUSERID :  UNIX\t:   alice  \r\n"), b"alice");
    }

    #[test]
    fn other_opsys_and_charset() {
        assert_eq!(
            p(b"5555 , 1080 : USERID : OTHER , US-ASCII : 0x1f:weird id\r\n"),
            Ok(Some(Reply::UserId {
                opsys: "OTHER".into(),
                charset: Some("US-ASCII".into()),
                user: b"0x1f:weird id".to_vec()
            }))
        );
    }

    #[test]
    fn user_id_keeps_inner_colons_and_case() {
        assert_eq!(user(b"5555 , 1080 : USERID : UNIX : Bob:x : y\r\n"), b"Bob:x : y");
    }

    #[test]
    fn wrong_ports_are_refused() {
        assert_eq!(p(b"5556 , 1080 : USERID : UNIX : alice\r\n"), Err(Invalid::WrongPorts));
        assert_eq!(p(b"1080 , 5555 : USERID : UNIX : alice\r\n"), Err(Invalid::WrongPorts));
        assert!(matches!(
            p(b"70000 , 1080 : USERID : UNIX : alice\r\n"),
            Err(Invalid::Malformed(_))
        ));
        assert!(matches!(
            p(b"x , 1080 : ERROR : NO-USER\r\n"),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn over_long_lines_are_refused() {
        let mut long = b"5555 , 1080 : USERID : UNIX : ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REPLY_LEN));
        assert_eq!(p(&long), Err(Invalid::TooLong));
        long.extend_from_slice(b"\r\n");
        assert_eq!(p(&long), Err(Invalid::TooLong));
        // Just within the cap.
        let mut ok = b"5555 , 1080 : USERID : UNIX : ".to_vec();
        ok.resize(MAX_REPLY_LEN - 2, b'b');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(user(&ok).len(), MAX_REPLY_LEN - 2 - 30);
    }

    #[test]
    fn nul_and_bare_newlines_are_refused() {
        assert_eq!(p(b"5555 , 1080 : USERID : UNIX : al\0ice\r\n"), Err(Invalid::Nul));
        assert_eq!(p(b"5555 , 1080 : USERID : UNIX : alice\n"), Err(Invalid::BareNewline));
        assert_eq!(
            p(b"5555 , 1080 : USERID : UNIX : al\rice\r\n"),
            Err(Invalid::BareNewline)
        );
    }

    #[test]
    fn incomplete_until_cr_lf() {
        let full = b"5555 , 1080 : USERID : UNIX : alice\r\n";
        for n in 0..full.len() {
            assert_eq!(p(&full[..n]), Ok(None), "{n}");
        }
        assert!(p(full).unwrap().is_some());
    }

    #[test]
    fn garbled_replies_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"5555 , 1080\r\n",
            b"5555 , 1080 : USERID\r\n",
            b"5555 , 1080 : USERID : UNIX\r\n",
            b"5555 , 1080 : USERID : UNIX :   \r\n",
            b"5555 , 1080 : userid : UNIX : alice\r\n",
            b"5555 , 1080 : ERROR : \r\n",
            b"5555 1080 : ERROR : NO-USER\r\n",
        ] {
            assert!(
                matches!(p(bad), Err(Invalid::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bytes_after_the_line_are_ignored() {
        assert_eq!(user(b"5555 , 1080 : USERID : UNIX : alice\r\nmore"), b"alice");
    }
}
