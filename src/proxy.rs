//! The PROXY protocol header (HAProxy's `doc/proxy-protocol.txt`,
//! versions 1 and 2) that a TCP load balancer puts before the client's
//! bytes to say whose connection it relays: pure code over byte slices.
//!
//! Version 1 is one text line, at most 107 bytes with its CR LF:
//! `PROXY TCP4 192.0.2.10 198.51.100.1 49706 1080\r\n` (or `TCP6`, or
//! `UNKNOWN` and anything up to CR LF). Version 2 is a 12-byte signature,
//! a version-and-command byte, a family-and-protocol byte, a 16-bit length
//! and that many bytes: the addresses, then type-length-value fields,
//! which are skipped.
//!
//! [`parse`] is fed everything received so far and answers incomplete, a
//! complete header and how many bytes it took, or invalid; the bytes after
//! the header are the client's own. It decides as early as the bytes allow
//! (a first byte that starts neither signature is [`Invalid::Missing`]),
//! and never needs more than [`MAX_HEADER_LEN`] bytes to answer.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// How a version 1 header begins.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// How a version 2 header begins.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CR LF included (the specification's worst
/// case, `PROXY UNKNOWN` with two full IPv6 addresses).
pub const MAX_V1_LEN: usize = 107;
/// The longest version 2 header accepted, the fixed 16 bytes included:
/// room for the longest address block (AF_UNIX, 216 bytes) and 792 bytes
/// of TLVs. HAProxy sends no TLV unless `proxy-v2-options` asks for some,
/// and its SSL, unique-id and authority fields fit.
pub const MAX_V2_LEN: usize = 1024;
/// The most bytes [`parse`] needs before it answers other than
/// [`Parse::Incomplete`].
pub const MAX_HEADER_LEN: usize = MAX_V2_LEN;
const _: () = assert!(MAX_V1_LEN <= MAX_HEADER_LEN);

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed TCP connection: the client's address and port, and the
    /// address and port the client connected to (on the balancer).
    Proxied {
        version: u8,
        src: SocketAddr,
        dst: SocketAddr,
    },
    /// No client behind it: the balancer's own connection (a health
    /// check: v1 `UNKNOWN`, v2 `LOCAL`), or a v2 `PROXY` for a family or
    /// protocol other than TCP over IPv4 or IPv6, which the specification
    /// lets a receiver treat as unspecified.
    Local(Local),
}

/// Which kind of [`Header::Local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    V1Unknown,
    V2Local,
    /// v2 `PROXY` with the family or the protocol UNSPEC.
    V2Unspec,
    /// v2 `PROXY` for AF_UNIX.
    V2Unix,
    /// v2 `PROXY` for UDP.
    V2Dgram,
}

impl Local {
    /// The log keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Local::V1Unknown => "v1-unknown",
            Local::V2Local => "v2-local",
            Local::V2Unspec => "v2-unspec",
            Local::V2Unix => "v2-unix",
            Local::V2Dgram => "v2-dgram",
        }
    }
}

/// What [`parse`] made of the bytes so far: a whole header and the bytes
/// it took, or a prefix of one that may still be valid.
pub type Parse = crate::net::Parse<Header>;

/// Why the bytes are not an acceptable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The first byte starts neither signature: no header was sent (a
    /// SOCKS request, say). Holds that byte.
    Missing(u8),
    /// v1: no CR LF within [`MAX_V1_LEN`] bytes; v2: a length beyond
    /// [`MAX_V2_LEN`].
    TooLong,
    /// Anything else that breaks the format; says what.
    Malformed(&'static str),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Missing(b) => write!(f, "no PROXY header: the first byte is 0x{b:02x}"),
            Invalid::TooLong => write!(
                f,
                "header too long (v1: no CR LF within {MAX_V1_LEN} bytes; v2: over {MAX_V2_LEN} bytes)"
            ),
            Invalid::Malformed(what) => write!(f, "malformed PROXY header: {what}"),
        }
    }
}

/// Parses everything received so far.
pub fn parse(buf: &[u8]) -> Result<Parse, Invalid> {
    let Some(&first) = buf.first() else {
        return Ok(Parse::Incomplete);
    };
    if first == V2_SIGNATURE[0] {
        let n = buf.len().min(V2_SIGNATURE.len());
        if buf[..n] != V2_SIGNATURE[..n] {
            return Err(Invalid::Malformed("bad v2 signature"));
        }
        return parse_v2(buf);
    }
    if first == V1_PREFIX[0] {
        let n = buf.len().min(V1_PREFIX.len());
        if buf[..n] != V1_PREFIX[..n] {
            return Err(Invalid::Malformed("bad v1 signature (not \"PROXY \")"));
        }
        return parse_v1(buf);
    }
    Err(Invalid::Missing(first))
}

fn parse_v1(buf: &[u8]) -> Result<Parse, Invalid> {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= MAX_V1_LEN {
            Err(Invalid::TooLong)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    if window[end] == b'\n' {
        return Err(Invalid::Malformed("LF without CR"));
    }
    // The LF must fit within the limit too.
    if end + 1 >= MAX_V1_LEN {
        return Err(Invalid::TooLong);
    }
    match buf.get(end + 1) {
        None => return Ok(Parse::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(Invalid::Malformed("CR without LF")),
    }
    let used = end + 2;
    let line = &buf[V1_PREFIX.len()..end];
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let v6 = match proto {
        // The rest of the line, if any, is to be ignored.
        b"UNKNOWN" => return Ok(Parse::Complete(Header::Local(Local::V1Unknown), used)),
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(Invalid::Malformed("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let fields: Vec<&[u8]> = fields.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(Invalid::Malformed(
            "not 4 fields after the protocol, separated by one space each",
        ));
    };
    let ip = |t: &[u8]| -> Result<std::net::IpAddr, Invalid> {
        let s = std::str::from_utf8(t).map_err(|_| Invalid::Malformed("address is not ASCII"))?;
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(Into::into)
                .map_err(|_| Invalid::Malformed("address is not IPv6 (TCP6)"))
        } else {
            // Rust reads only four decimal parts without leading zeros,
            // as the specification requires.
            s.parse::<Ipv4Addr>()
                .map(Into::into)
                .map_err(|_| Invalid::Malformed("address is not a dotted quad (TCP4)"))
        }
    };
    let (src, dst) = (ip(src)?, ip(dst)?);
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    Ok(Parse::Complete(
        Header::Proxied {
            version: 1,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        used,
    ))
}

/// A decimal port from 0 to 65535 with no leading zero.
fn v1_port(t: &[u8]) -> Result<u16, Invalid> {
    let ok = !t.is_empty() && t.len() <= 5 && t.iter().all(u8::is_ascii_digit) && (t[0] != b'0' || t.len() == 1);
    if !ok {
        return Err(Invalid::Malformed("port is not a decimal number without leading zeros"));
    }
    let n = t.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| Invalid::Malformed("port above 65535"))
}

/// The v2 address block lengths: two addresses and, for IP, two ports.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

fn parse_v2(buf: &[u8]) -> Result<Parse, Invalid> {
    const FIXED: usize = 16;
    if buf.len() < FIXED {
        return Ok(Parse::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Invalid::Malformed("v2 version nibble is not 2"));
    }
    if command > 1 {
        return Err(Invalid::Malformed("v2 command is neither LOCAL nor PROXY"));
    }
    let (family, protocol) = (buf[13] >> 4, buf[13] & 0x0f);
    if family > 3 {
        return Err(Invalid::Malformed("v2 address family unknown"));
    }
    if protocol > 2 {
        return Err(Invalid::Malformed("v2 transport protocol unknown"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let used = FIXED + len;
    if used > MAX_V2_LEN {
        return Err(Invalid::TooLong);
    }
    if buf.len() < used {
        return Ok(Parse::Incomplete);
    }
    let block = &buf[FIXED..used];
    let local = |kind| Ok(Parse::Complete(Header::Local(kind), used));
    if command == 0 {
        // The family and the addresses, if any, are to be ignored.
        return local(Local::V2Local);
    }
    let need = match family {
        0 => return local(Local::V2Unspec),
        1 => V2_INET_LEN,
        2 => V2_INET6_LEN,
        _ => V2_UNIX_LEN,
    };
    if protocol == 0 {
        return local(Local::V2Unspec);
    }
    if block.len() < need {
        return Err(Invalid::Malformed("v2 address block shorter than its family needs"));
    }
    if family == 3 {
        return local(Local::V2Unix);
    }
    if protocol == 2 {
        return local(Local::V2Dgram);
    }
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (src, dst) = if family == 1 {
        let ip = |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
        (
            SocketAddr::new(ip(0).into(), port(8)),
            SocketAddr::new(ip(4).into(), port(10)),
        )
    } else {
        let ip = |at: usize| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&block[at..at + 16]);
            Ipv6Addr::from(o)
        };
        (
            SocketAddr::new(ip(0).into(), port(32)),
            SocketAddr::new(ip(16).into(), port(34)),
        )
    };
    Ok(Parse::Complete(Header::Proxied { version: 2, src, dst }, used))
}

/// A version 1 header for a connection from `src` to `dst`, which must be
/// of one family. For tests and fuzzing.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A version 2 header: `PROXY` for TCP from `src` to `dst` (one family),
/// or `LOCAL` when `None`; `tlvs` follow the addresses. For tests and
/// fuzzing.
pub fn encode_v2(addrs: Option<(SocketAddr, SocketAddr)>, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut block = Vec::new();
    match addrs {
        None => out.extend_from_slice(&[0x20, 0x00]),
        Some((src, dst)) => {
            match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.extend_from_slice(&[0x21, 0x11]);
                    block.extend_from_slice(&s.ip().octets());
                    block.extend_from_slice(&d.ip().octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0x21]);
                    let v6 = |a: SocketAddr| match a {
                        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
                        SocketAddr::V6(a) => a.ip().octets(),
                    };
                    block.extend_from_slice(&v6(s));
                    block.extend_from_slice(&v6(d));
                }
            }
            block.extend_from_slice(&src.port().to_be_bytes());
            block.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    block.extend_from_slice(tlvs);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn complete(buf: &[u8]) -> (Header, usize) {
        match parse(buf) {
            Ok(Parse::Complete(h, n)) => (h, n),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Every strict prefix of a complete header is incomplete.
    fn prefixes_incomplete(buf: &[u8], used: usize) {
        for cut in 0..used {
            assert_eq!(parse(&buf[..cut]), Ok(Parse::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn v1_tcp4_with_request_bytes_after_it() {
        let mut buf = b"PROXY TCP4 192.0.2.10 198.51.100.1 49706 1080\r\n".to_vec();
        let len = buf.len();
        buf.extend_from_slice(&[4, 1, 0, 80]);
        let (h, used) = complete(&buf);
        assert_eq!(used, len);
        assert_eq!(
            h,
            Header::Proxied {
                version: 1,
                src: sa("192.0.2.10:49706"),
                dst: sa("198.51.100.1:1080")
            }
        );
        prefixes_incomplete(&buf, used);
    }

    #[test]
    fn v1_tcp6_and_the_longest_lines() {
        let (h, _) = complete(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
        assert_eq!(
            h,
            Header::Proxied {
                version: 1,
                src: sa("[2001:db8::1]:65535"),
                dst: sa("[::1]:0")
            }
        );
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let worst = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(worst.len(), MAX_V1_LEN);
        assert_eq!(
            complete(worst.as_bytes()),
            (Header::Local(Local::V1Unknown), MAX_V1_LEN)
        );
        let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(complete(tcp6.as_bytes()).1, 104);
    }

    #[test]
    fn v1_unknown_ignores_the_rest() {
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (Header::Local(Local::V1Unknown), 15));
        assert_eq!(complete(b"PROXY UNKNOWN whatever is here\r\nmore").1, 32);
    }

    #[test]
    fn v1_too_long_is_refused_at_the_limit() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1_LEN - 1, b'x');
        assert_eq!(parse(&long), Ok(Parse::Incomplete));
        long.push(b'x');
        assert_eq!(parse(&long), Err(Invalid::TooLong));
        // A CR in the last allowed byte leaves no room for the LF.
        let mut cr = long[..MAX_V1_LEN - 1].to_vec();
        cr.push(b'\r');
        assert_eq!(parse(&cr), Err(Invalid::TooLong));
    }

    #[test]
    fn v1_malformed_lines() {
        for (line, why) in [
            (&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..], "LF without CR"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "CR without LF"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "4 fields"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "4 fields"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "4 fields"),
            (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "dotted quad"),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "dotted quad"),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "leading zeros"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "above 65535"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "decimal"),
            (b"PROXY \r\n", "protocol"),
            (b"PROXYTCP4", "bad v1 signature"),
            (b"PRoXY ", "bad v1 signature"),
        ] {
            match parse(line) {
                Err(Invalid::Malformed(w)) => assert!(w.contains(why), "{line:?}: {w}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
            }
        }
    }

    #[test]
    fn no_header_is_missing_at_the_first_byte() {
        assert_eq!(parse(&[4, 1, 0, 80]), Err(Invalid::Missing(4)));
        assert_eq!(parse(b"GET / HTTP/1.0\r\n"), Err(Invalid::Missing(b'G')));
        assert_eq!(parse(b""), Ok(Parse::Incomplete));
    }

    #[test]
    fn v2_inet_inet6_and_tlvs() {
        let (src, dst) = (sa("192.0.2.10:49706"), sa("198.51.100.1:1080"));
        let mut buf = encode_v2(Some((src, dst)), &[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let len = buf.len();
        assert_eq!(len, 16 + 12 + 5);
        buf.extend_from_slice(b"\x04\x01");
        assert_eq!(complete(&buf), (Header::Proxied { version: 2, src, dst }, len));
        prefixes_incomplete(&buf, len);

        let (src, dst) = (sa("[2001:db8::1]:1"), sa("[2001:db8::2]:2"));
        let buf = encode_v2(Some((src, dst)), &[]);
        assert_eq!(buf.len(), 16 + 36);
        assert_eq!(complete(&buf), (Header::Proxied { version: 2, src, dst }, 52));
    }

    #[test]
    fn v2_local_and_the_families_treated_as_unspecified() {
        let local = encode_v2(None, &[]);
        assert_eq!(complete(&local), (Header::Local(Local::V2Local), 16));
        // LOCAL with an address block: skipped, whatever it holds.
        let mut with_block = encode_v2(Some((sa("1.2.3.4:1"), sa("5.6.7.8:2"))), &[]);
        with_block[12] = 0x20;
        assert_eq!(complete(&with_block), (Header::Local(Local::V2Local), 28));
        let fam = |fam: u8, len: usize| {
            let mut b = V2_SIGNATURE.to_vec();
            b.extend_from_slice(&[0x21, fam]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
            b.resize(16 + len, 0);
            b
        };
        assert_eq!(complete(&fam(0x00, 0)).0, Header::Local(Local::V2Unspec));
        assert_eq!(complete(&fam(0x10, 12)).0, Header::Local(Local::V2Unspec));
        assert_eq!(complete(&fam(0x31, 216)).0, Header::Local(Local::V2Unix));
        assert_eq!(complete(&fam(0x12, 12)).0, Header::Local(Local::V2Dgram));
        assert_eq!(
            parse(&fam(0x11, 11)),
            Err(Invalid::Malformed("v2 address block shorter than its family needs"))
        );
        assert_eq!(
            parse(&fam(0x31, 100)),
            Err(Invalid::Malformed("v2 address block shorter than its family needs"))
        );
    }

    #[test]
    fn v2_malformed_and_too_long_are_seen_from_the_fixed_part() {
        let good = encode_v2(Some((sa("1.2.3.4:1"), sa("5.6.7.8:2"))), &[]);
        let with = |at: usize, b: u8| {
            let mut v = good[..16].to_vec();
            v[at] = b;
            v
        };
        assert_eq!(
            parse(&with(12, 0x11)),
            Err(Invalid::Malformed("v2 version nibble is not 2"))
        );
        assert_eq!(
            parse(&with(12, 0x22)),
            Err(Invalid::Malformed("v2 command is neither LOCAL nor PROXY"))
        );
        assert_eq!(
            parse(&with(13, 0x41)),
            Err(Invalid::Malformed("v2 address family unknown"))
        );
        assert_eq!(
            parse(&with(13, 0x13)),
            Err(Invalid::Malformed("v2 transport protocol unknown"))
        );
        assert_eq!(parse(&with(10, b'X')), Err(Invalid::Malformed("bad v2 signature")));
        // A wrong signature is seen as soon as its byte arrives.
        assert_eq!(
            parse(b"\r\n\r\n\0\r\nQUIX"),
            Err(Invalid::Malformed("bad v2 signature"))
        );
        let mut long = good[..16].to_vec();
        long[14..16].copy_from_slice(&((MAX_V2_LEN - 16 + 1) as u16).to_be_bytes());
        assert_eq!(parse(&long), Err(Invalid::TooLong));
        let mut max = good[..16].to_vec();
        max[14..16].copy_from_slice(&((MAX_V2_LEN - 16) as u16).to_be_bytes());
        assert_eq!(parse(&max), Ok(Parse::Incomplete));
        max.resize(MAX_V2_LEN, 0);
        assert_eq!(complete(&max).1, MAX_V2_LEN);
    }

    #[test]
    fn v2_fed_one_byte_at_a_time() {
        let buf = encode_v2(Some((sa("[::1]:5"), sa("[::1]:6"))), b"\x01\x00\x02h2");
        let mut seen = Vec::new();
        for (i, &b) in buf.iter().enumerate() {
            seen.push(b);
            let r = parse(&seen);
            if i + 1 < buf.len() {
                assert_eq!(r, Ok(Parse::Incomplete), "at {i}");
            } else {
                assert!(matches!(r, Ok(Parse::Complete(Header::Proxied { .. }, n)) if n == buf.len()));
            }
        }
    }

    #[test]
    fn encoders_round_trip() {
        for (s, d) in [
            (sa("127.0.0.5:40000"), sa("127.0.0.1:1080")),
            (sa("[::1]:1"), sa("[fe80::1]:65535")),
        ] {
            let want = Header::Proxied {
                version: 1,
                src: s,
                dst: d,
            };
            let v1 = encode_v1(s, d);
            assert_eq!(complete(&v1), (want, v1.len()));
        }
    }
}
