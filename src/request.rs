//! The SOCKS4/4a wire format: pure code over byte slices.
//!
//! Request: `VN CD DSTPORT(2, big-endian) DSTIP(4) USERID NUL`, and for
//! SOCKS4a (DSTIP `0.0.0.x`, x ≠ 0) a hostname and a second NUL.
//! Reply: `00 CD DSTPORT DSTIP`, always 8 bytes.

use std::net::Ipv4Addr;

/// The longest USERID accepted, not counting its NUL.
pub const MAX_USERID_LEN: usize = 512;
/// The longest SOCKS4a hostname accepted, not counting its NUL.
pub const MAX_HOSTNAME_LEN: usize = 255;
/// The most bytes a valid request can take: header, USERID, hostname and
/// their NULs. A reader that holds this many bytes always gets an answer
/// other than [`Parse::Incomplete`].
pub const MAX_REQUEST_LEN: usize = 8 + MAX_USERID_LEN + 1 + MAX_HOSTNAME_LEN + 1;

/// Reply code: request granted.
pub const REPLY_GRANTED: u8 = 0x5A;
/// Reply code: request rejected or failed.
pub const REPLY_REJECTED: u8 = 0x5B;
/// Reply code: rejected because the client's identd could not be reached.
pub const REPLY_NO_IDENTD: u8 = 0x5C;
/// Reply code: rejected because identd's user-id differs from the claim.
pub const REPLY_BAD_USERID: u8 = 0x5D;

/// SOCKS5's answer "no acceptable authentication method": what a SOCKS5
/// client's greeting gets, so that it can say what went wrong.
pub const SOCKS5_NO_METHOD: &[u8] = &[5, 0xFF];
/// What an HTTP client's request gets.
pub const HTTP_NOT_SOCKS: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Connection: close\r\n\
\r\n\
This is a SOCKS4/4a proxy, not an HTTP proxy: use it as a SOCKS4a proxy \
(curl --socks4a HOST:PORT, or socks4a://HOST:PORT as the proxy).\r\n";

/// A client that speaks another protocol, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// A SOCKS5 greeting (version byte 5).
    Socks5,
    /// An HTTP request: a method and a blank.
    Http,
}

/// The HTTP methods an HTTP client or proxy client begins with.
const HTTP_METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
];

impl Foreign {
    /// The protocol `start` (the first bytes received, the version byte
    /// not 4) is in, if it is one that gets an answer.
    pub fn of(start: &[u8]) -> Option<Foreign> {
        match start.first()? {
            5 => Some(Foreign::Socks5),
            _ if HTTP_METHODS.iter().any(|m| start.starts_with(m)) => Some(Foreign::Http),
            _ => None,
        }
    }

    /// What the client gets before the close: `05 FF` (no acceptable
    /// method) for SOCKS5, a short 400 naming SOCKS4/4a for HTTP.
    pub fn answer(self) -> &'static [u8] {
        match self {
            Foreign::Socks5 => SOCKS5_NO_METHOD,
            Foreign::Http => HTTP_NOT_SOCKS,
        }
    }

    /// The protocol and the answer, for the log.
    pub fn name(self) -> &'static str {
        match self {
            Foreign::Socks5 => "SOCKS5, answered 05 FF (no acceptable method)",
            Foreign::Http => "HTTP, answered 400",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Bind => "bind",
        }
    }

    fn code(self) -> u8 {
        match self {
            Command::Connect => 1,
            Command::Bind => 2,
        }
    }
}

/// A complete, well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub port: u16,
    /// DSTIP as sent. For SOCKS4a this is the `0.0.0.x` marker.
    pub ip: Ipv4Addr,
    /// The claimed user-id, without its NUL. Arbitrary bytes.
    pub userid: Vec<u8>,
    /// The SOCKS4a hostname, without its NUL; `None` for plain SOCKS4.
    pub hostname: Option<Vec<u8>>,
}

/// Why a request is refused before anything else is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// VN is not 4 (a SOCKS5 or HTTP client, say). Gets no reply.
    Version(u8),
    /// CD is neither CONNECT nor BIND.
    Command(u8),
    /// No NUL within [`MAX_USERID_LEN`] + 1 bytes of USERID.
    UseridTooLong,
    /// No NUL within [`MAX_HOSTNAME_LEN`] + 1 bytes of hostname.
    HostnameTooLong,
    /// A SOCKS4a request whose hostname is empty.
    EmptyHostname,
}

impl Invalid {
    /// Whether the client gets a reply at all. A client that does not speak
    /// SOCKS4 would not understand one.
    pub fn gets_reply(self) -> bool {
        !matches!(self, Invalid::Version(_))
    }
}

/// The parser's answer for the bytes received so far: a whole request
/// and the bytes it took (any after those belong to the relay), or
/// incomplete (nothing seen so far is wrong).
pub type Parse = crate::net::Parse<Request>;

/// Parses everything received so far. Call again with the longer buffer when
/// the answer is [`Parse::Incomplete`]. Errors are reported as early as the
/// bytes allow, so a hostile client cannot make the caller read more than
/// [`MAX_REQUEST_LEN`] bytes.
pub fn parse(buf: &[u8]) -> Result<Parse, Invalid> {
    if let Some(&vn) = buf.first() {
        if vn != 4 {
            return Err(Invalid::Version(vn));
        }
    }
    let command = match buf.get(1) {
        None => return Ok(Parse::Incomplete),
        Some(1) => Command::Connect,
        Some(2) => Command::Bind,
        Some(&cd) => return Err(Invalid::Command(cd)),
    };
    if buf.len() < 8 {
        return Ok(Parse::Incomplete);
    }
    let port = u16::from_be_bytes([buf[2], buf[3]]);
    let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);

    let Some((userid, after_userid)) = nul_terminated(&buf[8..], MAX_USERID_LEN, Invalid::UseridTooLong)? else {
        return Ok(Parse::Incomplete);
    };
    let mut used = 8 + after_userid;

    let hostname = if is_socks4a_marker(ip) {
        let Some((name, after_name)) = nul_terminated(&buf[used..], MAX_HOSTNAME_LEN, Invalid::HostnameTooLong)? else {
            return Ok(Parse::Incomplete);
        };
        if name.is_empty() {
            return Err(Invalid::EmptyHostname);
        }
        used += after_name;
        Some(name.to_vec())
    } else {
        None
    };

    let request = Request {
        command,
        port,
        ip,
        userid: userid.to_vec(),
        hostname,
    };
    Ok(Parse::Complete(request, used))
}

/// Finds a NUL-terminated field of at most `max` bytes at the start of
/// `buf`. Returns the field and the bytes used including the NUL, `None` when
/// the NUL has not arrived yet, or `too_long` once `max + 1` bytes arrived
/// without one.
fn nul_terminated(buf: &[u8], max: usize, too_long: Invalid) -> Result<Option<(&[u8], usize)>, Invalid> {
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(Some((&buf[..n], n + 1))),
        None if window.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// SOCKS4a: DSTIP `0.0.0.x` with x ≠ 0 says a hostname follows the USERID.
pub fn is_socks4a_marker(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0
}

/// The 8-byte reply: `00 CD DSTPORT DSTIP`.
pub fn reply(code: u8, port: u16, ip: Ipv4Addr) -> [u8; 8] {
    let p = port.to_be_bytes();
    let a = ip.octets();
    [0, code, p[0], p[1], a[0], a[1], a[2], a[3]]
}

/// The wire form of a request; the inverse of [`parse`]. Used by tests and
/// tools that play the client.
pub fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_REQUEST_LEN);
    out.push(4);
    out.push(request.command.code());
    out.extend_from_slice(&request.port.to_be_bytes());
    out.extend_from_slice(&request.ip.octets());
    out.extend_from_slice(&request.userid);
    out.push(0);
    if let Some(name) = &request.hostname {
        out.extend_from_slice(name);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_protocols_are_told_by_their_first_bytes() {
        assert_eq!(Foreign::of(&[5, 1, 0]), Some(Foreign::Socks5));
        assert_eq!(Foreign::of(&[5]), Some(Foreign::Socks5));
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"CONNECT a:443 HTTP/1.1",
            b"POST /x",
            b"HEAD /",
        ] {
            assert_eq!(Foreign::of(http), Some(Foreign::Http), "{http:?}");
        }
        // A PROXY header from a peer not trusted with it, a TLS hello, a
        // method not yet whole, lower case, nothing.
        for other in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            &[0x16, 3, 1],
            b"GE",
            b"GET",
            b"get /",
            b"",
        ] {
            assert_eq!(Foreign::of(other), None, "{other:?}");
        }
        assert!(Foreign::Http.answer().starts_with(b"HTTP/1.0 400 "));
        assert_eq!(Foreign::Socks5.answer(), [5, 0xff]);
    }

    fn connect(port: u16, ip: [u8; 4], user: &[u8]) -> Vec<u8> {
        let mut v = vec![4, 1];
        v.extend_from_slice(&port.to_be_bytes());
        v.extend_from_slice(&ip);
        v.extend_from_slice(user);
        v.push(0);
        v
    }

    #[test]
    fn plain_connect() {
        let bytes = connect(80, [192, 0, 2, 1], b"alice");
        let Ok(Parse::Complete(r, used)) = parse(&bytes) else {
            panic!("not complete")
        };
        assert_eq!(used, bytes.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.port, 80);
        assert_eq!(r.ip, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.userid, b"alice");
        assert_eq!(r.hostname, None);
    }

    #[test]
    fn literal_bind_request() {
        let bytes = b"\x04\x02\x00\x15\x7f\x00\x00\x01\x00";
        let Ok(Parse::Complete(r, 9)) = parse(bytes) else {
            panic!("not complete")
        };
        assert_eq!(r.command, Command::Bind);
        assert_eq!(r.port, 21);
        assert!(r.userid.is_empty());
    }

    #[test]
    fn socks4a_hostname() {
        let mut bytes = connect(443, [0, 0, 0, 1], b"bob");
        bytes.extend_from_slice(b"example.org\0");
        let Ok(Parse::Complete(r, used)) = parse(&bytes) else {
            panic!("not complete")
        };
        assert_eq!(used, bytes.len());
        assert_eq!(r.hostname.as_deref(), Some(&b"example.org"[..]));
    }

    #[test]
    fn zero_ip_is_not_socks4a() {
        let bytes = connect(80, [0, 0, 0, 0], b"");
        assert!(matches!(
            parse(&bytes),
            Ok(Parse::Complete(Request { hostname: None, .. }, 9))
        ));
    }

    #[test]
    fn every_prefix_is_incomplete_then_complete() {
        let mut bytes = connect(443, [0, 0, 0, 7], b"carol");
        bytes.extend_from_slice(b"host.example\0");
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Ok(Parse::Incomplete), "prefix {n}");
        }
        assert!(matches!(parse(&bytes), Ok(Parse::Complete(_, n)) if n == bytes.len()));
    }

    #[test]
    fn trailing_bytes_are_left_for_the_relay() {
        let mut bytes = connect(80, [10, 0, 0, 1], b"u");
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        assert!(matches!(parse(&bytes), Ok(Parse::Complete(_, n)) if n == len));
    }

    #[test]
    fn wrong_version_is_seen_at_once() {
        assert_eq!(parse(b"\x05"), Err(Invalid::Version(5)));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Invalid::Version(b'G')));
        assert!(!Invalid::Version(5).gets_reply());
    }

    #[test]
    fn unknown_command() {
        assert_eq!(parse(b"\x04\x03"), Err(Invalid::Command(3)));
        assert_eq!(parse(b"\x04\x00\x00\x50"), Err(Invalid::Command(0)));
        assert!(Invalid::Command(3).gets_reply());
    }

    #[test]
    fn userid_of_512_is_accepted_and_513_rejected() {
        let ok = connect(80, [10, 0, 0, 1], &[b'a'; 512]);
        assert!(matches!(parse(&ok), Ok(Parse::Complete(r, _)) if r.userid.len() == 512));
        let long = connect(80, [10, 0, 0, 1], &[b'a'; 513]);
        assert_eq!(parse(&long), Err(Invalid::UseridTooLong));
        // Rejected as soon as the 513th byte arrives, before any NUL.
        assert_eq!(parse(&long[..8 + 513]), Err(Invalid::UseridTooLong));
        assert_eq!(parse(&long[..8 + 512]), Ok(Parse::Incomplete));
    }

    #[test]
    fn hostname_of_255_is_accepted_and_256_rejected() {
        let mut ok = connect(80, [0, 0, 0, 1], b"");
        ok.extend_from_slice(&[b'h'; 255]);
        ok.push(0);
        assert!(matches!(parse(&ok), Ok(Parse::Complete(_, n)) if n == ok.len()));
        assert!(ok.len() <= MAX_REQUEST_LEN);

        let mut long = connect(80, [0, 0, 0, 1], b"");
        long.extend_from_slice(&[b'h'; 256]);
        assert_eq!(parse(&long), Err(Invalid::HostnameTooLong));
    }

    #[test]
    fn empty_hostname_is_invalid() {
        let mut bytes = connect(80, [0, 0, 0, 1], b"u");
        bytes.push(0);
        assert_eq!(parse(&bytes), Err(Invalid::EmptyHostname));
    }

    #[test]
    fn longest_request_fits_the_cap() {
        let req = Request {
            command: Command::Connect,
            port: 1,
            ip: Ipv4Addr::new(0, 0, 0, 9),
            userid: vec![b'u'; MAX_USERID_LEN],
            hostname: Some(vec![b'h'; MAX_HOSTNAME_LEN]),
        };
        let bytes = encode(&req);
        assert_eq!(bytes.len(), MAX_REQUEST_LEN);
        assert_eq!(parse(&bytes), Ok(Parse::Complete(req, MAX_REQUEST_LEN)));
    }

    #[test]
    fn reply_layout() {
        assert_eq!(
            reply(REPLY_GRANTED, 0x1234, Ipv4Addr::new(1, 2, 3, 4)),
            [0, 0x5A, 0x12, 0x34, 1, 2, 3, 4]
        );
    }
}
