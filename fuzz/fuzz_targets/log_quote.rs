//! The log escaper: the output never holds a control byte or an unescaped
//! quote, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4d::audit::quote;

fuzz_target!(|data: &[u8]| {
    let q = quote(data);
    assert!(q.bytes().all(|b| (0x20..0x7f).contains(&b)));
    assert!(q.starts_with('"'));
    let end = q.rfind('"').unwrap();
    assert!(end > 0);
    assert!(q[end + 1..].is_empty() || &q[end + 1..] == "...");
    let inner = &q.as_bytes()[1..end];
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' {
            assert!(i + 1 < inner.len(), "dangling backslash");
            i += 2;
            continue;
        }
        assert_ne!(inner[i], b'"');
        i += 1;
    }
});
