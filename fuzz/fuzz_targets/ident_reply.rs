//! The ident reply parser on any bytes: no panic, and a USERID answer only
//! for a line that echoes the ports asked about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4d::ident::{self, Reply};
use socks4d::net::Parse;

fuzz_target!(|data: &[u8]| {
    let Some((ports, line)) = data.split_at_checked(4) else { return };
    let a = u16::from_be_bytes([ports[0], ports[1]]);
    let b = u16::from_be_bytes([ports[2], ports[3]]);
    if let Ok(Parse::Complete(reply, used)) = ident::parse(line, a, b) {
        assert!(used <= line.len() && line[..used].ends_with(b"\r\n"));
        let text = String::from_utf8_lossy(line);
        assert!(text.contains("\r\n"));
        if let Reply::UserId { user, .. } = reply {
            assert!(!user.is_empty());
            assert!(!user.contains(&0) && !user.contains(&b'\n'));
        }
    }
});
