//! The frozen-file reader (`rules::frozen::from_bytes`, the checks a
//! connection makes on the bytes it read) on any bytes: no panic and no
//! read out of bounds, and a line it decides does match the request.
//!
//! An input whose first byte is even is the frozen file itself. One whose
//! first byte is odd is a rules text, up to a NUL byte, compiled as
//! `--compile` would, then damaged by the edits after the NUL (three bytes
//! each: where, two bytes little-endian taken modulo the length, and what
//! to XOR there): so the checks past the header, and deciding, are
//! reached. Undamaged, the frozen rules decide every request, and every
//! request known in part, as the parsed text does.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socks4d::rules::{self, frozen, Conditions, RuleSource};

fn lookups() -> &'static rules::Fixed {
    static L: OnceLock<rules::Fixed> = OnceLock::new();
    L.get_or_init(|| {
        rules::Fixed::default()
            .file("/u", "alice, bob\tcarol\n")
            .host("gw", &[Ipv4Addr::new(10, 0, 0, 1)])
    })
}

/// The requests each frozen file decides.
fn requests() -> &'static [rules::Facts<'static>] {
    static R: OnceLock<Vec<rules::Facts<'static>>> = OnceLock::new();
    R.get_or_init(|| {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut v = Vec::new();
        for user in [&b"alice"[..], b"mallory", b""] {
            for (src, dst) in [
                ("10.0.0.1", "192.0.2.9"),
                ("127.0.0.1", "10.0.0.2"),
                ("2001:db8::1", "2001:db8:1::5"),
            ] {
                for port in [23, 80, 1024] {
                    v.push(rules::Facts {
                        user,
                        src: ip(src),
                        dst: ip(dst),
                        port,
                        name: None,
                    });
                }
            }
        }
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (bytes, parsed) = if mode & 1 == 0 {
        (rest.to_vec(), None)
    } else {
        let (text, edits) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        thread_local! {
            static SERVICES: rules::Services = rules::Services::parse(b"telnet 23/tcp\nhttp 80/tcp www\n");
        }
        let services = SERVICES.with(rules::Services::clone);
        let Ok(r) = rules::grammar::read(text, "fuzz.conf", &services, &mut lookups().clone(), false).0 else {
            return;
        };
        let Ok(mut bytes) = frozen::encode(&r, frozen::Identity::default(), frozen::hash(text), &[]) else {
            return;
        };
        let edits: Vec<&[u8]> = edits.chunks_exact(3).collect();
        for e in &edits {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % bytes.len();
            bytes[at] ^= e[2];
        }
        (bytes, edits.is_empty().then_some(r))
    };
    let Ok(opened) = frozen::from_bytes(bytes) else {
        assert!(parsed.is_none(), "an undamaged frozen file was refused");
        return;
    };
    if let Some(r) = &parsed {
        assert_eq!(opened.frozen.len(), r.rules.len());
        assert_eq!(opened.no_identd, r.no_identd);
        assert_eq!(opened.bad_id, r.bad_id);
    }
    let text = parsed.map(|r| RuleSource::Text(r.rules));
    let frozen = RuleSource::Frozen(opened.frozen);
    for f in requests() {
        let got = frozen.first_match(f);
        if let Some(rule) = got {
            assert!(rule.matches(f), "{rule:?} decided {f:?}");
        }
        if let Some(text) = &text {
            assert_eq!(got, text.first_match(f), "{f:?}");
            let p = rules::Partial {
                src: f.src,
                user: (f.port != 80).then_some(f.user),
                port: (f.port != 1024).then_some(f.port),
                name: None,
            };
            assert_eq!(frozen.denied(&p), text.denied(&p), "{p:?}");
        }
    }
});
