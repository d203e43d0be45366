//! The rules-file parser on any bytes: no panic; every rule, error and
//! warning names a line of the file; and deciding a request on what it
//! parsed does not panic either.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socks4d::rules::{self, Conditions, RuleSource};

/// The fixed world the parser looks things up in: one user-list file and
/// two host names, so that those paths are reached too.
fn lookups() -> &'static rules::Fixed {
    static L: OnceLock<rules::Fixed> = OnceLock::new();
    L.get_or_init(|| {
        rules::Fixed::default()
            .file("/u", "alice, bob\tcarol\n# dave\n")
            .host("localhost", &[Ipv4Addr::LOCALHOST])
            .host("gw", &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)])
    })
}

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    thread_local! {
        static SERVICES: rules::Services = rules::Services::parse(b"telnet 23/tcp\nhttp 80/tcp www\n");
    }
    let services = SERVICES.with(rules::Services::clone);
    let checked = rules::check(data, "fuzz.conf", services, &mut lookups().clone());
    for note in &checked.notes {
        assert!(note.line >= 1 && note.line <= lines);
    }
    match checked.loaded {
        Ok(r) => {
            let RuleSource::Text(list) = &r.source else {
                panic!("a parse gives text rules");
            };
            for rule in list {
                assert!(rule.line >= 1 && rule.line <= lines);
                assert!(!rule.src.is_empty());
            }
            let facts = rules::Facts {
                user: b"alice",
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                port: 23,
                name: None,
            };
            if let Some(rule) = rules::decide(&r, &facts).rule {
                assert!(rule.matches(&facts));
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let n = e.line.expect("a parse error names its line");
                assert!(n >= 1 && n <= lines);
            }
        }
    }
});
