//! What decoding a request may allocate: a small multiple of the frame, whatever the frame
//! claims. Counted by a global allocator that tallies every byte handed out; this binary
//! has one test so that nothing else allocates while it measures.

use std::alloc::System;

use bytes::{BufMut, Bytes, BytesMut};
use cap::Cap;
use kafka_wire::codec::decode;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// The bound checked: `FACTOR` bytes per frame byte plus a fixed allowance (the decoder's
/// own small buffers). The worst shapes found (arrays of empty compact strings, structures
/// full of empty unknown tagged fields) stay well below it.
const FACTOR: usize = 64;
const ALLOWANCE: usize = 64 * 1024;

fn allocated_by_decode(frame: &Bytes) -> usize {
    let before = ALLOC.total_allocated();
    let result = decode(frame.clone());
    let ok = result.is_ok();
    drop(result);
    let used = ALLOC.total_allocated() - before;
    eprintln!(
        "{} bytes -> {used} bytes allocated ({:.1}x), {}",
        frame.len(),
        used as f64 / frame.len() as f64,
        if ok { "decoded" } else { "refused" }
    );
    used
}

fn uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A request header (v2 when `flexible`) for `key` at `version`.
fn header(key: i16, version: i16, flexible: bool) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(-1);
    if flexible {
        b.put_u8(0);
    }
    b
}

#[test]
fn decoding_allocates_a_bounded_multiple_of_the_frame() {
    let mut frames: Vec<(&str, Bytes)> = Vec::new();

    // The reported frame: Metadata v4 claiming 0x7fffffff topics.
    frames.push((
        "metadata v4, 2^31-1 topics claimed",
        Bytes::from_static(b"\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff\x00"),
    ));

    // The same claim at every width: compact (flexible) counts and string lengths.
    let mut b = header(3, 12, true);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    frames.push(("metadata v12, 2^32-1 topics claimed", b.freeze()));
    let mut b = header(11, 9, true);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    frames.push(("join group v9, a 4 GiB group id claimed", b.freeze()));
    let mut b = header(11, 5, false);
    b.put_i16(0x7fff);
    frames.push(("join group v5, a 32 KiB group id claimed", b.freeze()));

    // Many elements of the smallest encoding: DescribeGroups v5 with 200,000 empty names.
    let n = 200_000;
    let mut b = header(15, 5, true);
    uvarint(&mut b, n + 1);
    for _ in 0..n {
        b.put_u8(1);
    }
    b.put_u8(0); // include authorized operations
    b.put_u8(0); // tagged fields
    frames.push(("describe groups v5, 200k empty names", b.freeze()));

    // Structures full of empty unknown tagged fields: Metadata v12, 2,000 topics with 60
    // tags each.
    let mut b = header(3, 12, true);
    uvarint(&mut b, 2_001);
    for _ in 0..2_000 {
        b.put_bytes(0, 16); // topic id
        b.put_u8(0); // null name
        uvarint(&mut b, 60);
        for tag in 0..60 {
            uvarint(&mut b, 1_000 + tag);
            b.put_u8(0);
        }
    }
    b.put_u8(1);
    b.put_u8(0);
    b.put_u8(0);
    frames.push(("metadata v12, 2000 topics x 60 unknown tags", b.freeze()));

    // Produce v9 with 100,000 partitions of null records.
    let mut b = header(0, 9, true);
    b.put_u8(0); // null transactional id
    b.put_i16(1);
    b.put_i32(1000);
    uvarint(&mut b, 2);
    uvarint(&mut b, 2);
    b.put_u8(b't');
    uvarint(&mut b, 100_001);
    for i in 0..100_000 {
        b.put_i32(i);
        b.put_u8(0); // null records
        b.put_u8(0); // tagged fields
    }
    b.put_u8(0);
    b.put_u8(0);
    frames.push(("produce v9, 100k partitions", b.freeze()));

    for (what, frame) in &frames {
        eprint!("{what}: ");
        let used = allocated_by_decode(frame);
        assert!(
            used <= FACTOR * frame.len() + ALLOWANCE,
            "{what}: {used} bytes allocated for a {}-byte frame",
            frame.len()
        );
    }
}
