//! The chain-file parser on any bytes, with a fixed user-list file and a
//! fixed credential file: no panic; every line and error names a line of
//! the file; what parses prints back (`Line::to_bytes`) to a file that
//! parses to the same routes; the line that decides a request matches it;
//! the check's notes name lines of the file.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socks4d::chain::{self, Action};
use socks4d::rules::{self, MAX_LINE_LEN};

/// The fixed world: one user-list file, one credential file.
fn world() -> &'static rules::Fixed {
    static W: OnceLock<rules::Fixed> = OnceLock::new();
    W.get_or_init(|| {
        rules::Fixed::default()
            .file("/u", "alice, bob\tcarol\n# dave\n")
            .file("/s", "proxy:se:cret\n")
    })
}

fn parse(text: &[u8]) -> chain::Loaded {
    thread_local! {
        static SERVICES: rules::Services = rules::Services::parse(b"http 80/tcp www\nhttps 443/tcp\n");
    }
    let services = SERVICES.with(rules::Services::clone);
    let mut w = world().clone();
    chain::parse(text, "fuzz.chain", &services, &mut world().clone(), &mut w)
}

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let c = match parse(data) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let n = e.line.expect("a parse error names its line");
                assert!(n >= 1 && n <= lines);
            }
            return;
        }
    };
    for l in &c.lines {
        assert!(l.line >= 1 && l.line <= lines);
        if let Action::Parent(via) = &l.action {
            assert!(!via.parents.is_empty() && via.parents.iter().all(|p| p.port != 0));
        }
    }
    // What parses prints back, unless a printed line outgrew the limit
    // (user lists expanded, ports written out).
    let printed: Vec<Vec<u8>> = c.lines.iter().map(chain::Line::to_bytes).collect();
    if printed.iter().all(|l| l.len() <= MAX_LINE_LEN) {
        let again = parse(&printed.join(&b"\n"[..])).unwrap_or_else(|e| panic!("printed back: {e:?}"));
        assert!(chain::same_routes(&c, &again));
    }
    // Deciding: a request of each kind gets a line that matches it, or
    // none.
    let name = std::str::from_utf8(data.get(..data.len().min(40)).unwrap_or_default()).ok();
    for (dst, name) in [
        (Some(IpAddr::from([10, 0, 0, 2])), None),
        (Some("2001:db8::1".parse().unwrap()), None),
        (None, Some("www.example.org")),
        (None, name),
        (Some(IpAddr::from([192, 0, 2, 1])), Some("x.example")),
    ] {
        for user in [&b"alice"[..], b"", b"mallory"] {
            match chain::decide(&c, user, dst, name, 443) {
                chain::Routed::By(l) => assert!(c.lines.iter().any(|m| std::ptr::eq(m, l))),
                chain::Routed::Unmatched => {}
                // Only a request known by its name alone needs its address.
                chain::Routed::NeedsAddress => assert!(dst.is_none()),
            }
        }
    }
    for (line, _) in chain::notes(&c) {
        assert!(line.is_none_or(|n| n >= 1 && n <= lines));
    }
});
