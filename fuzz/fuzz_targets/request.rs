//! The request parser on any bytes, whole and split at points taken from
//! the input: same answer every way, never past MAX_REQUEST_LEN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4d::request::{self, Parse, MAX_REQUEST_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let whole = request::parse(bytes);
    if let Ok(Parse::Complete(req, used)) = &whole {
        assert!(*used <= bytes.len() && *used <= MAX_REQUEST_LEN);
        // What it parsed is exactly what encode gives back.
        assert_eq!(&request::encode(req)[..], &bytes[..*used]);
    }
    if let Ok(Parse::Incomplete) = whole {
        assert!(bytes.len() < MAX_REQUEST_LEN);
    }
    // Fed in two reads, the parser must agree once it has everything: a
    // prefix is either incomplete or gives the same answer.
    let cut = (split as usize).min(bytes.len());
    match request::parse(&bytes[..cut]) {
        Ok(Parse::Incomplete) => {}
        prefix => assert_eq!(prefix, whole),
    }
});
