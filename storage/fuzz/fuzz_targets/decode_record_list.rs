//! `decode_record_list` on arbitrary bytes: never panics, returns a prefix that re-encodes to
//! exactly the bytes it says it consumed, and stops only where a strict decode fails. The first
//! input byte chooses whether CRCs are fixed up first.
#![no_main]

#[path = "common.rs"]
mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use storage::codec::{decode_record, decode_record_list};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 {
        common::fix_crcs(&mut data);
    }
    let data = &data[..];
    let buf = Bytes::copy_from_slice(data);
    let (records, consumed) = decode_record_list(&buf);
    assert!(consumed <= data.len());
    let mut again = Vec::with_capacity(consumed);
    for record in &records {
        record.encode(&mut again);
    }
    assert_eq!(
        &again[..],
        &data[..consumed],
        "the prefix must re-encode to itself"
    );
    if consumed < data.len() {
        assert!(
            decode_record(&buf.slice(consumed..)).is_err(),
            "stopped before a valid record"
        );
    }
    let (prefix_records, prefix_consumed) = decode_record_list(&buf.slice(..consumed));
    assert_eq!(prefix_consumed, consumed);
    assert_eq!(prefix_records, records);
});
