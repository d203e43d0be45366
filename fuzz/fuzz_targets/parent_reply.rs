//! The parents' answers (src/parent.rs) on any bytes: each parser fed
//! the whole input and the input split in two at a point taken from it
//! gives the same answer; a whole answer takes no more than its cap
//! (8 bytes for SOCKS4, 262 for SOCKS5, 8192 for an HTTP head) and no
//! more than it was given; and a parser given its cap's worth of bytes
//! has answered.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use socks4d::net::Parse;
use socks4d::parent::{self, Garbled, MAX_HTTP_HEAD_LEN, MAX_SOCKS5_REPLY_LEN};

fn check<T: PartialEq + Debug>(data: &[u8], cap: usize, parse: impl Fn(&[u8]) -> Result<Parse<T>, Garbled>) {
    let whole = parse(data);
    if let Ok(Parse::Complete(_, used)) = &whole {
        assert!(*used >= 1 && *used <= cap && *used <= data.len());
    }
    if data.len() >= cap {
        assert!(!matches!(whole, Ok(Parse::Incomplete)), "incomplete after {cap} bytes");
    }
    // Fed in two reads: the first read's answer, if not incomplete, is
    // the whole input's (the same message, or an error).
    let cut = usize::from(data.first().copied().unwrap_or(0)) % (data.len() + 1);
    match (parse(&data[..cut]), &whole) {
        (Ok(Parse::Incomplete), _) | (Err(_), Err(_)) => {}
        (Ok(first), Ok(w)) => assert_eq!(&first, w),
        (first, w) => panic!("split at {cut}: {first:?}, whole: {w:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, 8, parent::socks4_reply);
    check(data, 2, parent::socks5_choice);
    check(data, 2, parent::socks5_auth_status);
    check(data, MAX_SOCKS5_REPLY_LEN, parent::socks5_reply);
    check(data, MAX_HTTP_HEAD_LEN, parent::http_response);
});
