//! `footer_from_tail` on arbitrary bytes: never panics, and a footer it finds is the exact
//! encoding of the input's last 45 or 53 bytes. The first input byte chooses whether the CRC
//! of a would-be v6 or v5 footer at the tail is fixed up first.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use storage::codec::{FORMAT_V5, FORMAT_V6, footer_from_tail};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    let fix_len = match mode % 3 {
        0 => 0,
        1 => 53,
        _ => 45,
    };
    if fix_len > 0 && data.len() >= fix_len {
        let start = data.len() - fix_len;
        common::fix_record_crc(&mut data[start..]);
    }
    let data = &data[..];
    if let Ok(footer) = footer_from_tail(data) {
        assert!(footer.version == FORMAT_V5 || footer.version == FORMAT_V6);
        if footer.version == FORMAT_V5 {
            assert_eq!(footer.lac, -1);
        }
        let mut again = Vec::new();
        footer.encode(&mut again);
        assert_eq!(again.len(), footer.encoded_len());
        assert!(
            data.ends_with(&again),
            "the footer must be the input's tail"
        );
    }
});
