//! Block codec throughput: CRC-32, block encode and decode, and the record-list scan, each
//! next to a `memcpy` of the same bytes in the same group so ratios can be read off one run
//! (absolute figures move with the machine's load).
//!
//! `cargo bench -p woodpecker-benches --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use storage::codec::{
    FORMAT_V6, HeaderRecord, decode_block, decode_record_list, encode_block, scan_blocks,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Deterministic, incompressible-looking bytes.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn memcpy(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    src: &[u8],
) {
    let mut dst = vec![0u8; src.len()];
    c.bench_function(BenchmarkId::new("memcpy", id), |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(src));
            black_box(&dst);
        })
    });
}

fn crc32(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32");
    for (id, len) in [
        ("100B", 100),
        ("4KiB", 4 * KIB),
        ("64KiB", 64 * KIB),
        ("1MiB", MIB),
        ("16MiB", 16 * MIB),
    ] {
        let data = payload(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("crc32fast", id), |b| {
            b.iter(|| crc32fast::hash(black_box(&data)))
        });
        memcpy(&mut group, id, &data);
    }
    group.finish();
}

/// (name, entry size, entry count)
const BLOCKS: [(&str, usize, usize); 2] = [("1KiBx1000", KIB, 1000), ("1MiBx2", MIB, 2)];

fn entries(size: usize, count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| payload(size, i as u64)).collect()
}

fn header() -> HeaderRecord {
    HeaderRecord {
        version: FORMAT_V6,
        flags: 0,
        first_entry_id: 0,
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_block");
    for (id, size, count) in BLOCKS {
        let entries = entries(size, count);
        let mut out = Vec::new();
        encode_block(Some(&header()), 0, 0, &entries, &mut out);
        group.throughput(Throughput::Bytes(out.len() as u64));
        // The output buffer is reused, so this is the codec's cost without the allocator's.
        group.bench_function(BenchmarkId::new("encode_block", id), |b| {
            b.iter(|| {
                out.clear();
                black_box(encode_block(
                    Some(&header()),
                    0,
                    0,
                    black_box(&entries),
                    &mut out,
                ))
            })
        });
        let encoded = out.clone();
        memcpy(&mut group, id, &encoded);
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_block");
    for (id, size, count) in BLOCKS {
        let mut out = Vec::new();
        encode_block(Some(&header()), 0, 0, &entries(size, count), &mut out);
        let buf = Bytes::from(out);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(BenchmarkId::new("decode_block", id), |b| {
            b.iter(|| decode_block(black_box(&buf)).expect("valid block"))
        });
        memcpy(&mut group, id, &buf);
    }
    group.finish();
}

/// A 2 MiB `data.log` image: header, then blocks of 64 entries of 1 KiB.
fn image() -> Bytes {
    let mut out = Vec::with_capacity(2 * MIB + 64 * KIB);
    header().encode(&mut out);
    let block = entries(KIB, 64);
    let mut next = 0;
    let mut number = 0;
    while out.len() < 2 * MIB {
        let bh = encode_block(None, number, next, &block, &mut out);
        next = bh.last_entry_id + 1;
        number += 1;
    }
    Bytes::from(out)
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_2MiB");
    let image = image();
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("decode_record_list", |b| {
        b.iter(|| {
            let (records, consumed) = decode_record_list(black_box(&image));
            assert_eq!(consumed, image.len());
            records
        })
    });
    group.bench_function("scan_blocks", |b| {
        b.iter(|| scan_blocks(black_box(&image), 0))
    });
    memcpy(&mut group, "2MiB", &image);
    group.finish();
}

criterion_group!(benches, crc32, encode, decode, scan);
criterion_main!(benches);
