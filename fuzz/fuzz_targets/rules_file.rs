//! The rules-file parser on any bytes: no panic, and every error names a
//! line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use socks4d::rules;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let services = rules::Services::parse(b"telnet 23/tcp\nhttp 80/tcp www\n");
    match rules::parse(data, "fuzz.conf", services, &mut |_: &Path| Ok(b"alice bob\n".to_vec())) {
        Ok(r) => {
            for rule in &r.rules {
                assert!(rule.line >= 1 && rule.line <= lines);
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
