//! Properties of the pure parsers and the log escaper, over generated
//! input.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use socks4d::audit::quote;
use socks4d::ident;
use socks4d::proxy::{self, Header, MAX_HEADER_LEN};
use socks4d::request::{
    self, encode, Command, Invalid, Parse, Request, MAX_HOSTNAME_LEN, MAX_REQUEST_LEN, MAX_USERID_LEN,
};
use socks4d::rules;

fn no_nul(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, 0..=max)
}

prop_compose! {
    fn valid_request()(
        bind in any::<bool>(),
        port in any::<u16>(),
        socks4a in any::<bool>(),
        ip in any::<[u8; 4]>(),
        marker in 1u8..=255,
        userid in no_nul(MAX_USERID_LEN),
        host in prop::collection::vec(1u8..=255, 1..=MAX_HOSTNAME_LEN),
    ) -> Request {
        let ip = if socks4a {
            Ipv4Addr::new(0, 0, 0, marker)
        } else if request::is_socks4a_marker(Ipv4Addr::from(ip)) {
            Ipv4Addr::new(1, ip[1], ip[2], ip[3])
        } else {
            Ipv4Addr::from(ip)
        };
        Request {
            command: if bind { Command::Bind } else { Command::Connect },
            port,
            ip,
            userid,
            hostname: socks4a.then_some(host),
        }
    }
}

fn socket_addr() -> impl Strategy<Value = std::net::SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| (Ipv4Addr::from(ip), port).into()),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| (std::net::Ipv6Addr::from(ip), port).into()),
    ]
}

/// Bytes that begin like a PROXY header, so that the parser gets past
/// the signatures.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(proxy::V2_SIGNATURE.to_vec()),
        Just(Vec::new()),
    ];
    (start, prop::collection::vec(any::<u8>(), 0..1200)).prop_map(|(mut s, rest)| {
        s.extend(rest);
        s
    })
}

extern "C" {
    /// The C library's reading of a numeric IPv4 address.
    fn inet_aton(cp: *const std::ffi::c_char, inp: *mut nix::libc::in_addr) -> std::ffi::c_int;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_parser_never_panics_and_never_overreads(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        match request::parse(&bytes) {
            Ok(Parse::Complete(_, used)) => prop_assert!(used <= bytes.len() && used <= MAX_REQUEST_LEN),
            Ok(Parse::Incomplete) => prop_assert!(bytes.len() < MAX_REQUEST_LEN),
            Err(_) => {}
        }
    }

    #[test]
    fn parse_of_encode_is_identity(req in valid_request(), trailing in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = encode(&req);
        let len = bytes.len();
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(request::parse(&bytes), Ok(Parse::Complete(req, len)));
    }

    #[test]
    fn every_split_parses_the_same(req in valid_request()) {
        let bytes = encode(&req);
        // Fed in any prefix, the parser says "incomplete" until the last byte.
        for n in 0..bytes.len() {
            prop_assert_eq!(request::parse(&bytes[..n]), Ok(Parse::Incomplete));
        }
        prop_assert_eq!(request::parse(&bytes), Ok(Parse::Complete(req, bytes.len())));
    }

    #[test]
    fn over_long_fields_are_always_rejected(extra in 1usize..600, host_extra in 1usize..300, port in any::<u16>()) {
        let long_user = Request {
            command: Command::Connect,
            port,
            ip: Ipv4Addr::new(10, 0, 0, 1),
            userid: vec![b'u'; MAX_USERID_LEN + extra],
            hostname: None,
        };
        prop_assert_eq!(request::parse(&encode(&long_user)), Err(Invalid::UseridTooLong));
        let long_host = Request {
            command: Command::Connect,
            port,
            ip: Ipv4Addr::new(0, 0, 0, 1),
            userid: Vec::new(),
            hostname: Some(vec![b'h'; MAX_HOSTNAME_LEN + host_extra]),
        };
        prop_assert_eq!(request::parse(&encode(&long_host)), Err(Invalid::HostnameTooLong));
    }

    #[test]
    fn quoted_values_hold_no_control_byte_or_bare_quote(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let q = quote(&bytes);
        prop_assert!(q.bytes().all(|b| (0x20..0x7f).contains(&b)));
        prop_assert!(q.starts_with('"'));
        let body_end = q.rfind('"').unwrap();
        prop_assert!(body_end > 0);
        let inner = &q.as_bytes()[1..body_end];
        let mut i = 0;
        while i < inner.len() {
            if inner[i] == b'\\' {
                i += 2;
                continue;
            }
            prop_assert_ne!(inner[i], b'"');
            i += 1;
        }
    }

    #[test]
    fn ident_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200), a in any::<u16>(), b in any::<u16>()) {
        let _ = ident::parse(&bytes, a, b);
    }

    #[test]
    fn ident_user_is_whatever_follows_the_opsys(user in "[!-~]([ -~]{0,60}[!-~])?") {
        let line = format!("5555 , 1080 : USERID : UNIX : {user}\r\n");
        match ident::parse(line.as_bytes(), 5555, 1080) {
            Ok(socks4d::net::Parse::Complete(ident::Reply::UserId { user: got, .. }, used)) => {
                prop_assert_eq!(got, user.as_bytes());
                prop_assert_eq!(used, line.len());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn rules_parser_never_panics(text in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = rules::parse(&text, "fuzz.conf", rules::Services::default(), &mut rules::Fixed::default());
    }

    #[test]
    fn rules_errors_and_warnings_name_a_line_in_the_file(lines in prop::collection::vec("[ -~]{0,80}", 1..20)) {
        let text = lines.join("\n");
        let checked = rules::check(text.as_bytes(), "f", rules::Services::default(), &mut rules::Fixed::default());
        if let Err(errors) = checked.loaded {
            for e in errors {
                let n = e.line.unwrap();
                prop_assert!(n >= 1 && n <= lines.len());
            }
        }
        for note in checked.notes {
            prop_assert!(note.line >= 1 && note.line <= lines.len());
        }
    }

    #[test]
    fn inet_addr_forms_read_as_the_c_library_reads_them(s in "[0-9xXa-fA-F.]{0,24}") {
        let c = std::ffi::CString::new(s.as_str()).unwrap();
        let mut a = nix::libc::in_addr { s_addr: 0 };
        // SAFETY: `c` is NUL-terminated and `a` is a valid in_addr.
        let libc = (unsafe { inet_aton(c.as_ptr(), &mut a) } != 0).then(|| Ipv4Addr::from(u32::from_be(a.s_addr)));
        prop_assert_eq!(rules::grammar::inet_aton(&s), libc, "{:?}", s);
    }

    /// A substituted value is one shell word that is an operand: never
    /// empty, never an option, never a path.
    #[test]
    fn substituted_values_never_reach_the_shell_unsanitised(user in prop::collection::vec(any::<u8>(), 0..400)) {
        let subst = rules::Subst { user: user.clone(), ..Default::default() };
        let out = rules::expand(b"%u", &subst);
        prop_assert!(out.iter().all(|b| b.is_ascii_alphanumeric() || b"!@%_=+:,.-".contains(b)));
        prop_assert!(!out.is_empty() && out.len() <= rules::MAX_SUBST_LEN);
        prop_assert!(!b"-+.".contains(&out[0]), "{:?}", String::from_utf8_lossy(&out));
        prop_assert!(!out.windows(2).any(|w| w == b".."), "{:?}", String::from_utf8_lossy(&out));
        // Byte for byte: what is kept stays where it was.
        if !user.is_empty() {
            prop_assert_eq!(out.len(), user.len().min(rules::MAX_SUBST_LEN));
        }
    }

    #[test]
    fn proxy_parser_answers_within_its_bound_and_every_prefix_agrees(bytes in header_like()) {
        let whole = proxy::parse(&bytes);
        match &whole {
            Ok(proxy::Parse::Complete(_, used)) => prop_assert!(*used <= bytes.len() && *used <= MAX_HEADER_LEN),
            Ok(proxy::Parse::Incomplete) => prop_assert!(bytes.len() < MAX_HEADER_LEN),
            Err(_) => {}
        }
        for cut in (0..bytes.len()).step_by(7) {
            match proxy::parse(&bytes[..cut]) {
                Ok(proxy::Parse::Incomplete) => {}
                prefix => prop_assert_eq!(&prefix, &whole, "cut at {}", cut),
            }
        }
    }

    #[test]
    fn proxy_headers_parse_back_whole_at_every_split(
        src in socket_addr(),
        dst in socket_addr(),
        v2 in any::<bool>(),
        tlvs in prop::collection::vec(any::<u8>(), 0..64),
        after in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        // One family for both, as a real connection has.
        let dst = if src.is_ipv4() == dst.is_ipv4() { dst } else { std::net::SocketAddr::new(src.ip(), dst.port()) };
        let mut bytes = if v2 { proxy::encode_v2(Some((src, dst)), &tlvs) } else { proxy::encode_v1(src, dst) };
        let len = bytes.len();
        bytes.extend_from_slice(&after);
        let want = Header::Proxied { version: if v2 { 2 } else { 1 }, src, dst };
        prop_assert_eq!(proxy::parse(&bytes), Ok(proxy::Parse::Complete(want, len)));
        for cut in 0..len {
            prop_assert_eq!(proxy::parse(&bytes[..cut]), Ok(proxy::Parse::Incomplete));
        }
    }
}
