//! A request frame as the listener receives it (the bytes after the 4-byte size) through
//! `codec::decode`: the bounds walk, the header and the body decoder of every API the broker
//! serves. It must return, never panic, and never allocate beyond libFuzzer's
//! `-malloc_limit_mb` (the run script sets it far below what an unchecked count asks for).
//! A frame that decodes must encode again.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(request) = decode(Bytes::copy_from_slice(input)) else {
        return;
    };
    let mut out = BytesMut::new();
    let _ = request.body.encode(&mut out, request.version);
});
