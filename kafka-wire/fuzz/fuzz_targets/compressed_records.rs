//! The decompressors behind `batch::find_record`, reached directly: the first input byte
//! picks the codec (gzip, snappy, lz4, zstd) and the record count, the rest is the batch's
//! compressed records section. The target wraps it in a well-formed batch header with the
//! right length and CRC-32C, so every input exercises the codec and the record walk: xerial
//! snappy framing, raw snappy, lz4 frames, zstd frames and their limits.
#![no_main]

use kafka_wire::batch::find_record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, body)) = input.split_first() else {
        return;
    };
    let codec = i16::from(mode % 4) + 1;
    let count = i32::from(mode >> 2) + 1;
    let mut b = Vec::with_capacity(61 + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((49 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&codec.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&1_000i64.to_be_bytes()); // base timestamp
    b.extend_from_slice(&2_000i64.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut seen = 0;
    let _ = find_record(&b, |_, _| {
        seen += 1;
        false
    });
    assert!(seen <= count);
});
