//! The PROXY protocol header parser on any bytes, whole and split at a
//! point taken from the input: the same answer both ways, an answer by
//! MAX_HEADER_LEN bytes, and a complete header that re-encodes to one
//! the parser reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4d::proxy::{self, Header, Parse, MAX_HEADER_LEN, MAX_V1_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let whole = proxy::parse(bytes);
    match &whole {
        Ok(Parse::Incomplete) => assert!(bytes.len() < MAX_HEADER_LEN),
        Ok(Parse::Complete(header, used)) => {
            assert!(*used <= bytes.len() && *used <= MAX_HEADER_LEN);
            if bytes[0] == b'P' {
                // A v1 line: ends with its CR LF, within the limit.
                assert!(*used <= MAX_V1_LEN && bytes[..*used].ends_with(b"\r\n"));
            } else {
                // v2: the fixed part and exactly the length it states.
                assert_eq!(*used, 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]])));
            }
            if let Header::Proxied { version, src, dst } = *header {
                if src.is_ipv4() == dst.is_ipv4() {
                    let again = if version == 1 {
                        proxy::encode_v1(src, dst)
                    } else {
                        proxy::encode_v2(Some((src, dst)), &[])
                    };
                    assert_eq!(proxy::parse(&again), Ok(Parse::Complete(*header, again.len())));
                }
            }
        }
        Err(_) => {}
    }
    // Fed in two reads, the parser must agree once it has everything: a
    // prefix is either incomplete or gives the same answer.
    let cut = (split as usize).min(bytes.len());
    match proxy::parse(&bytes[..cut]) {
        Ok(Parse::Incomplete) => {}
        prefix => assert_eq!(prefix, whole),
    }
});
