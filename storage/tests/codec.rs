//! Codec tests: golden bytes pin the format (their CRCs were computed with Python's
//! `zlib.crc32`, independently of this crate), property tests check round trips and that no
//! damage goes unnoticed.

use bytes::Bytes;
use proptest::prelude::*;
use storage::codec::*;

// ---------------------------------------------------------------------------------------------
// Golden bytes. Each array is laid out field by field as spec §5.1 lists them.
// ---------------------------------------------------------------------------------------------

const HEADER_GOLDEN: [u8; 25] = [
    0x85, 0xf5, 0x8b, 0x8b, // crc32 = 0x8b8bf585
    0x01, // type 1
    0x10, 0x00, 0x00, 0x00, // len 16
    0x06, 0x00, // version 6
    0x01, 0x00, // flags: compacted
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // first entry id 0x0102030405060708
    0x48, 0x44, 0x52, 0x01, // "HDR\x01"
];
const HEADER_VALUE: HeaderRecord = HeaderRecord {
    version: 6,
    flags: 1,
    first_entry_id: 0x0102_0304_0506_0708,
};

const DATA_GOLDEN: [u8; 14] = [
    0x9f, 0xac, 0xda, 0x5d, // crc32 = 0x5ddaac9f
    0x02, // type 2
    0x05, 0x00, 0x00, 0x00, // len 5
    b'h', b'e', b'l', b'l', b'o',
];

const INDEX_GOLDEN: [u8; 41] = [
    0x21, 0xd1, 0xc6, 0x82, // crc32 = 0x82c6d121
    0x03, // type 3
    0x20, 0x00, 0x00, 0x00, // len 32
    0x03, 0x00, 0x00, 0x00, // block number 3
    0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // start offset 0x1122334455667788
    0xdd, 0xcc, 0xbb, 0xaa, // block size 0xaabbccdd
    0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // first entry id -2
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // last entry id 42
];
const INDEX_VALUE: IndexRecord = IndexRecord {
    block_number: 3,
    start_offset: 0x1122_3344_5566_7788,
    block_size: 0xaabb_ccdd,
    first_entry_id: -2,
    last_entry_id: 42,
};

const FOOTER_V5_GOLDEN: [u8; 45] = [
    0xbe, 0x80, 0xda, 0x82, // crc32 = 0x82da80be
    0x04, // type 4
    0x24, 0x00, 0x00, 0x00, // len 36
    0x02, 0x00, 0x00, 0x00, // total blocks 2
    0x02, 0x00, 0x00, 0x00, // total records 2
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // total size 0x0102030405060708
    0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // index offset 140
    0x52, 0x00, 0x00, 0x00, // index length 82
    0x05, 0x00, // version 5
    0x01, 0x00, // flags: compacted
    0x46, 0x54, 0x52, 0x01, // "FTR\x01"
];
const FOOTER_V5_VALUE: FooterRecord = FooterRecord {
    total_blocks: 2,
    total_records: 2,
    total_size: 0x0102_0304_0506_0708,
    index_offset: 140,
    index_length: 82,
    version: 5,
    flags: 1,
    lac: -1,
};

const FOOTER_V6_GOLDEN: [u8; 53] = [
    0xc8, 0xbf, 0x96, 0x8a, // crc32 = 0x8a96bfc8
    0x04, // type 4
    0x2c, 0x00, 0x00, 0x00, // len 44
    0x02, 0x00, 0x00, 0x00, // total blocks 2
    0x02, 0x00, 0x00, 0x00, // total records 2
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // total size 0x0102030405060708
    0x8c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // index offset 140
    0x52, 0x00, 0x00, 0x00, // index length 82
    0x06, 0x00, // version 6
    0x00, 0x00, // flags
    0x46, 0x54, 0x52, 0x01, // "FTR\x01"
    0x63, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // lac 99
];
const FOOTER_V6_VALUE: FooterRecord = FooterRecord {
    total_blocks: 2,
    total_records: 2,
    total_size: 0x0102_0304_0506_0708,
    index_offset: 140,
    index_length: 82,
    version: 6,
    flags: 0,
    lac: 99,
};

const BLOCK_HEADER_GOLDEN: [u8; 37] = [
    0x88, 0xe9, 0x02, 0xcc, // crc32 = 0xcc02e988
    0x05, // type 5
    0x1c, 0x00, 0x00, 0x00, // len 28
    0x07, 0x00, 0x00, 0x00, // block number 7
    0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first entry id 10
    0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // last entry id 11
    0x78, 0x56, 0x34, 0x12, // block length 0x12345678
    0xef, 0xbe, 0xad, 0xde, // block crc 0xdeadbeef
];
const BLOCK_HEADER_VALUE: BlockHeaderRecord = BlockHeaderRecord {
    block_number: 7,
    first_entry_id: 10,
    last_entry_id: 11,
    block_length: 0x1234_5678,
    block_crc: 0xdead_beef,
};

/// `0.blk` of a segment: header (v6, first entry 0), block 0 holding entries "ab" and "".
const BLOCK_GOLDEN: [u8; 82] = [
    // header record
    0x5a, 0xde, 0x30, 0xbb, // crc32 = 0xbb30de5a
    0x01, 0x10, 0x00, 0x00, 0x00, // type 1, len 16
    0x06, 0x00, 0x00, 0x00, // version 6, flags 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first entry id 0
    0x48, 0x44, 0x52, 0x01, // "HDR\x01"
    // block header record
    0x3e, 0x8e, 0x6f, 0x3f, // crc32 = 0x3f6f8e3e
    0x05, 0x1c, 0x00, 0x00, 0x00, // type 5, len 28
    0x00, 0x00, 0x00, 0x00, // block number 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first entry id 0
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // last entry id 1
    0x14, 0x00, 0x00, 0x00, // block length 20 = (9 + 2) + (9 + 0)
    0x2d, 0x60, 0x4e, 0xc7, // block crc = crc32(data region) = 0xc74e602d
    // data record "ab"
    0xce, 0x35, 0x61, 0x98, // crc32 = 0x986135ce
    0x02, 0x02, 0x00, 0x00, 0x00, // type 2, len 2
    0x61, 0x62, // "ab"
    // data record ""
    0x7d, 0xa4, 0xe2, 0xbc, // crc32 = 0xbce2a47d
    0x02, 0x00, 0x00, 0x00, 0x00, // type 2, len 0
];

fn encoded(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    assert_eq!(out.len(), record.encoded_len());
    out
}

fn decode_exact(bytes: &[u8]) -> Record {
    let buf = Bytes::copy_from_slice(bytes);
    let (record, len) = decode_record(&buf).expect("golden bytes decode");
    assert_eq!(len, bytes.len());
    record
}

#[test]
fn golden_header_record() {
    let record = Record::Header(HEADER_VALUE);
    assert_eq!(encoded(&record), HEADER_GOLDEN);
    assert_eq!(decode_exact(&HEADER_GOLDEN), record);
    assert_eq!(
        HeaderRecord::decode(&HEADER_GOLDEN),
        Ok((HEADER_VALUE, HEADER_RECORD_LEN))
    );
    assert!(HEADER_VALUE.is_compacted());
}

#[test]
fn golden_data_record() {
    let mut out = Vec::new();
    encode_data_record(b"hello", &mut out);
    assert_eq!(out, DATA_GOLDEN);
    assert_eq!(
        decode_exact(&DATA_GOLDEN),
        Record::Data(Bytes::from_static(b"hello"))
    );
}

#[test]
fn golden_index_record() {
    let record = Record::Index(INDEX_VALUE);
    assert_eq!(encoded(&record), INDEX_GOLDEN);
    assert_eq!(decode_exact(&INDEX_GOLDEN), record);
    assert_eq!(INDEX_GOLDEN.len(), INDEX_RECORD_LEN);
}

#[test]
fn golden_footer_v5() {
    let record = Record::Footer(FOOTER_V5_VALUE);
    assert_eq!(encoded(&record), FOOTER_V5_GOLDEN);
    assert_eq!(decode_exact(&FOOTER_V5_GOLDEN), record);
    assert_eq!(FOOTER_V5_GOLDEN.len(), FOOTER_V5_RECORD_LEN);
    assert!(FOOTER_V5_VALUE.is_compacted());
    // A LAC is not part of v5: whatever the struct holds, the bytes are the same.
    let with_lac = FooterRecord {
        lac: 1234,
        ..FOOTER_V5_VALUE
    };
    assert_eq!(encoded(&Record::Footer(with_lac)), FOOTER_V5_GOLDEN);
}

#[test]
fn golden_footer_v6() {
    let record = Record::Footer(FOOTER_V6_VALUE);
    assert_eq!(encoded(&record), FOOTER_V6_GOLDEN);
    assert_eq!(decode_exact(&FOOTER_V6_GOLDEN), record);
    assert_eq!(FOOTER_V6_GOLDEN.len(), FOOTER_V6_RECORD_LEN);
    assert!(!FOOTER_V6_VALUE.is_compacted());
}

#[test]
fn golden_block_header_record() {
    let record = Record::BlockHeader(BLOCK_HEADER_VALUE);
    assert_eq!(encoded(&record), BLOCK_HEADER_GOLDEN);
    assert_eq!(decode_exact(&BLOCK_HEADER_GOLDEN), record);
    assert_eq!(BLOCK_HEADER_GOLDEN.len(), BLOCK_HEADER_RECORD_LEN);
}

#[test]
fn golden_block() {
    let header = HeaderRecord {
        version: FORMAT_V6,
        flags: 0,
        first_entry_id: 0,
    };
    let mut out = Vec::new();
    let block_header = encode_block(Some(&header), 0, 0, &[&b"ab"[..], &b""[..]], &mut out);
    assert_eq!(out, BLOCK_GOLDEN);
    assert_eq!(out.capacity(), BLOCK_GOLDEN.len(), "one exact reservation");
    assert_eq!(
        block_header,
        BlockHeaderRecord {
            block_number: 0,
            first_entry_id: 0,
            last_entry_id: 1,
            block_length: 20,
            block_crc: 0xc74e_602d,
        }
    );
    // Block 0 data starts at byte 62 (25 + 37).
    assert_eq!(&BLOCK_GOLDEN[62 + 9..62 + 11], b"ab");

    let decoded = decode_block(&Bytes::from_static(&BLOCK_GOLDEN)).unwrap();
    assert_eq!(decoded.header, Some(header));
    assert_eq!(decoded.block_header, block_header);
    assert_eq!(
        decoded.entries,
        vec![Bytes::from_static(b"ab"), Bytes::new()]
    );
    let ids: Vec<i64> = decoded.entries_with_ids().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![0, 1]);
    assert_eq!(block_header.entry_id(1), Some(1));
    assert_eq!(block_header.entry_id(2), None);
}

// ---------------------------------------------------------------------------------------------
// Rejections of the strict record decoder.
// ---------------------------------------------------------------------------------------------

/// Frames `payload` as a record of raw type `kind` with a correct CRC.
fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut body = vec![kind];
    body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    body.extend_from_slice(payload);
    let mut out = crc32fast::hash(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    Bytes::from(out)
}

#[test]
fn frame_helper_matches_encoder() {
    assert_eq!(
        frame(1, &HEADER_GOLDEN[9..]),
        Bytes::from_static(&HEADER_GOLDEN)
    );
}

#[test]
fn truncation_at_every_length_is_reported() {
    for golden in [
        &HEADER_GOLDEN[..],
        &DATA_GOLDEN,
        &INDEX_GOLDEN,
        &FOOTER_V5_GOLDEN,
        &FOOTER_V6_GOLDEN,
        &BLOCK_HEADER_GOLDEN,
    ] {
        for len in 0..golden.len() {
            let err = decode_record(&Bytes::copy_from_slice(&golden[..len])).unwrap_err();
            assert!(err.is_truncation(), "len {len}: {err}");
        }
    }
}

#[test]
fn crc_mismatch_is_rejected() {
    let mut bad = DATA_GOLDEN;
    bad[0] ^= 1;
    assert_eq!(
        decode_record(&Bytes::copy_from_slice(&bad)),
        Err(CodecError::RecordCrc {
            stored: 0x5dda_ac9e,
            computed: 0x5dda_ac9f
        })
    );
}

#[test]
fn unknown_types_are_rejected() {
    for kind in [0u8, 6, 7, 0x80, 0xff] {
        assert_eq!(
            decode_record(&frame(kind, b"x")),
            Err(CodecError::UnknownType(kind))
        );
    }
}

#[test]
fn fixed_payload_sizes_are_enforced() {
    let cases: [(u8, RecordType, &[usize]); 4] = [
        (1, RecordType::Header, &[0, 15, 17]),
        (3, RecordType::Index, &[0, 31, 33]),
        (4, RecordType::Footer, &[0, 35, 37, 43, 45]),
        (5, RecordType::BlockHeader, &[0, 27, 29]),
    ];
    for (kind, record_type, lens) in cases {
        for &len in lens {
            assert_eq!(
                decode_record(&frame(kind, &vec![0u8; len])),
                Err(CodecError::PayloadLength {
                    kind: record_type,
                    actual: len as u32
                }),
                "type {kind} len {len}"
            );
        }
    }
}

#[test]
fn magic_is_checked() {
    let mut payload = HEADER_GOLDEN[9..].to_vec();
    payload[15] = 0x02;
    assert_eq!(
        decode_record(&frame(1, &payload)),
        Err(CodecError::BadMagic {
            kind: RecordType::Header,
            found: *b"HDR\x02"
        })
    );
    let mut payload = FOOTER_V6_GOLDEN[9..].to_vec();
    payload[32] = b'f';
    assert_eq!(
        decode_record(&frame(4, &payload)),
        Err(CodecError::BadMagic {
            kind: RecordType::Footer,
            found: *b"fTR\x01"
        })
    );
}

#[test]
fn only_versions_5_and_6_are_read() {
    for version in [0u16, 4, 7, 0xffff] {
        let header = HeaderRecord {
            version,
            ..HEADER_VALUE
        };
        let err = decode_record(&Bytes::from(encoded(&Record::Header(header)))).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                kind: RecordType::Header,
                version
            }
        );
        let footer = FooterRecord {
            version,
            ..FOOTER_V6_VALUE
        };
        let err = decode_record(&Bytes::from(encoded(&Record::Footer(footer)))).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnsupportedVersion {
                kind: RecordType::Footer,
                version
            }
        );
    }
}

#[test]
fn footer_size_must_match_its_version() {
    // A v6 payload labelled version 5, and a v5 payload labelled version 6.
    let mut long = FOOTER_V6_GOLDEN[9..].to_vec();
    long[28] = 5;
    assert_eq!(
        decode_record(&frame(4, &long)),
        Err(CodecError::FooterVersionMismatch {
            version: 5,
            payload_len: 44
        })
    );
    let mut short = FOOTER_V5_GOLDEN[9..].to_vec();
    short[28] = 6;
    assert_eq!(
        decode_record(&frame(4, &short)),
        Err(CodecError::FooterVersionMismatch {
            version: 6,
            payload_len: 36
        })
    );
}

#[test]
fn typed_decoders_refuse_other_types() {
    assert_eq!(
        FooterRecord::decode(&INDEX_GOLDEN),
        Err(CodecError::UnexpectedRecord {
            expected: RecordType::Footer,
            found: RecordType::Index
        })
    );
}

#[test]
fn corrupt_error_names_its_location() {
    let err = decode_record(&Bytes::from_static(&DATA_GOLDEN[..3])).unwrap_err();
    let err = err.at("log 3 segment 7 block 2");
    assert!(matches!(err, storage::Error::Corrupt { .. }));
    assert_eq!(
        err.to_string(),
        "corrupt data at log 3 segment 7 block 2: truncated: need 9 bytes, have 3"
    );
}

// ---------------------------------------------------------------------------------------------
// Footer probing and record lists.
// ---------------------------------------------------------------------------------------------

#[test]
fn footer_from_tail_prefers_v6_then_v5() {
    let mut tail = INDEX_GOLDEN.to_vec();
    tail.extend_from_slice(&FOOTER_V6_GOLDEN);
    assert_eq!(footer_from_tail(&tail), Ok(FOOTER_V6_VALUE));
    assert_eq!(footer_from_tail(&FOOTER_V6_GOLDEN), Ok(FOOTER_V6_VALUE));

    let mut tail = INDEX_GOLDEN.to_vec();
    tail.extend_from_slice(&FOOTER_V5_GOLDEN);
    assert_eq!(footer_from_tail(&tail), Ok(FOOTER_V5_VALUE));
    assert_eq!(footer_from_tail(&FOOTER_V5_GOLDEN), Ok(FOOTER_V5_VALUE));
    assert_eq!(footer_from_tail(&FOOTER_V5_GOLDEN).unwrap().lac, -1);
}

#[test]
fn footer_from_tail_rejects_non_footers() {
    for tail in [
        &[][..],
        &FOOTER_V5_GOLDEN[..44],
        &INDEX_GOLDEN,
        &BLOCK_GOLDEN,
        &FOOTER_V6_GOLDEN[..52],
    ] {
        assert!(
            matches!(footer_from_tail(tail), Err(CodecError::NoFooter { .. })),
            "{tail:?}"
        );
    }
    // A footer followed by anything is not at the tail.
    let mut tail = FOOTER_V6_GOLDEN.to_vec();
    tail.push(0);
    assert!(footer_from_tail(&tail).is_err());
}

#[test]
fn record_list_stops_at_first_bad_record() {
    let mut image = Vec::new();
    image.extend_from_slice(&HEADER_GOLDEN);
    image.extend_from_slice(&DATA_GOLDEN);
    let good = image.len();
    let mut bad_data = DATA_GOLDEN;
    bad_data[10] ^= 0x20;
    image.extend_from_slice(&bad_data);
    image.extend_from_slice(&INDEX_GOLDEN);
    let (records, consumed) = decode_record_list(&Bytes::from(image));
    assert_eq!(
        records,
        vec![
            Record::Header(HEADER_VALUE),
            Record::Data(Bytes::from_static(b"hello"))
        ]
    );
    assert_eq!(consumed, good);

    let (records, consumed) = decode_record_list(&frame(9, b""));
    assert!(records.is_empty());
    assert_eq!(consumed, 0);
}

#[test]
fn data_payloads_are_zero_copy() {
    let buf = Bytes::from(BLOCK_GOLDEN.to_vec());
    let decoded = decode_block(&buf).unwrap();
    let base = buf.as_ptr() as usize;
    assert_eq!(decoded.entries[0].as_ptr() as usize, base + 62 + 9);
    let (records, _) = decode_record_list(&buf);
    let Record::Data(d) = &records[2] else {
        panic!("{records:?}")
    };
    assert_eq!(d.as_ptr() as usize, base + 62 + 9);
}

// ---------------------------------------------------------------------------------------------
// Blocks.
// ---------------------------------------------------------------------------------------------

fn block(header: Option<&HeaderRecord>, number: i32, first: i64, entries: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_block(header, number, first, entries, &mut out);
    out
}

#[test]
fn block_without_header_and_empty_block() {
    let bytes = block(None, 4, 100, &[b"x", b"yz", b""]);
    let decoded = decode_block(&Bytes::from(bytes.clone())).unwrap();
    assert_eq!(decoded.header, None);
    assert_eq!(decoded.block_header.first_entry_id, 100);
    assert_eq!(decoded.block_header.last_entry_id, 102);
    assert_eq!(decoded.block_header.block_number, 4);
    assert_eq!(decoded.entries.len(), 3);

    let empty = block(None, 0, 5, &[]);
    assert_eq!(empty.len(), BLOCK_HEADER_RECORD_LEN);
    let decoded = decode_block(&Bytes::from(empty)).unwrap();
    assert_eq!(decoded.block_header.last_entry_id, 4);
    assert!(decoded.entries.is_empty());
}

#[test]
fn block_trailing_bytes_and_truncation() {
    let mut bytes = block(None, 0, 0, &[b"abc"]);
    let full = bytes.len();
    bytes.push(0);
    assert_eq!(
        decode_block(&Bytes::from(bytes.clone())),
        Err(CodecError::TrailingBytes { extra: 1 })
    );
    let (decoded, len) = decode_block_prefix(&Bytes::from(bytes.clone())).unwrap();
    assert_eq!(len, full);
    assert_eq!(decoded.entries, vec![Bytes::from_static(b"abc")]);
    for cut in 0..full {
        let err = decode_block(&Bytes::copy_from_slice(&bytes[..cut])).unwrap_err();
        assert!(err.is_truncation(), "cut {cut}: {err}");
    }
}

/// A block header that passes its own CRC but lies about the region.
fn with_block_header(mut block_header: BlockHeaderRecord, data: &[u8], fix_crc: bool) -> Bytes {
    if fix_crc {
        block_header.block_crc = crc32fast::hash(data);
    }
    let mut out = Vec::new();
    block_header.encode(&mut out);
    out.extend_from_slice(data);
    Bytes::from(out)
}

#[test]
fn block_entry_count_must_match_ids() {
    let mut region = Vec::new();
    encode_data_record(b"a", &mut region);
    encode_data_record(b"b", &mut region);
    let base = BlockHeaderRecord {
        block_number: 0,
        first_entry_id: 10,
        last_entry_id: 11,
        block_length: region.len() as u32,
        block_crc: 0,
    };
    assert!(decode_block(&with_block_header(base, &region, true)).is_ok());
    for last in [9, 10, 12, i64::MAX, i64::MIN, -5] {
        let lying = BlockHeaderRecord {
            last_entry_id: last,
            ..base
        };
        assert_eq!(
            decode_block(&with_block_header(lying, &region, true)),
            Err(CodecError::EntryCount {
                first: 10,
                last,
                actual: 2
            }),
            "last {last}"
        );
    }
    let extreme = BlockHeaderRecord {
        first_entry_id: i64::MIN,
        last_entry_id: i64::MAX,
        ..base
    };
    assert!(matches!(
        decode_block(&with_block_header(extreme, &region, true)),
        Err(CodecError::EntryCount { .. })
    ));
}

#[test]
fn block_region_must_hold_only_valid_data_records() {
    let mut region = Vec::new();
    encode_data_record(b"a", &mut region);
    HEADER_VALUE.encode(&mut region);
    let lying = BlockHeaderRecord {
        block_number: 0,
        first_entry_id: 0,
        last_entry_id: 1,
        block_length: region.len() as u32,
        block_crc: 0,
    };
    assert_eq!(
        decode_block(&with_block_header(lying, &region, true)),
        Err(CodecError::BadEntry {
            index: 1,
            source: Box::new(CodecError::UnexpectedRecord {
                expected: RecordType::Data,
                found: RecordType::Header
            })
        })
    );
    // A region cut inside a record although the block CRC matches.
    let cut = &region[..region.len() - 1];
    let lying = BlockHeaderRecord {
        block_length: cut.len() as u32,
        ..lying
    };
    assert!(matches!(
        decode_block(&with_block_header(lying, cut, true)),
        Err(CodecError::BadEntry { index: 1, .. })
    ));
    // Block length and CRC are checked before anything inside.
    let wrong_crc = BlockHeaderRecord {
        block_crc: 1,
        ..lying
    };
    assert!(matches!(
        decode_block(&with_block_header(wrong_crc, cut, false)),
        Err(CodecError::BlockCrc { stored: 1, .. })
    ));
    assert_eq!(
        decode_block_data(&wrong_crc, &Bytes::copy_from_slice(&region)),
        Err(CodecError::BlockLength {
            declared: cut.len() as u32,
            actual: region.len()
        })
    );
}

/// Long records take the CRC-combine path when the region CRC is computed; the result must
/// be the plain CRC of the region all the same.
#[test]
fn long_entries_give_the_plain_region_crc() {
    let long: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let exact: Vec<u8> = vec![7; 64 * 1024 - 9];
    let entries: [&[u8]; 5] = [&long, b"small", &long[..70_000], &exact, b""];
    let bytes = block(None, 2, 40, &entries);
    let region = &bytes[BLOCK_HEADER_RECORD_LEN..];
    let (bh, _) = BlockHeaderRecord::decode(&bytes).unwrap();
    assert_eq!(bh.block_crc, crc32fast::hash(region));
    assert_eq!(bh.block_length as usize, region.len());

    let decoded = decode_block(&Bytes::from(bytes.clone())).unwrap();
    assert_eq!(decoded.entries.len(), 5);
    assert_eq!(&decoded.entries[2][..], &long[..70_000]);
    // Damage inside a long entry, and inside the CRC of a long record.
    for at in [
        BLOCK_HEADER_RECORD_LEN + 9 + 100_000,
        BLOCK_HEADER_RECORD_LEN + 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x80;
        assert!(
            matches!(
                decode_block(&Bytes::from(damaged)),
                Err(CodecError::BlockCrc { .. })
            ),
            "byte {at}"
        );
    }
}

#[test]
fn every_corrupt_byte_of_a_block_is_detected() {
    let header = HeaderRecord {
        version: FORMAT_V5,
        flags: 0,
        first_entry_id: 7,
    };
    for bytes in [
        block(Some(&header), 0, 7, &[b"first", b"", b"third entry"]),
        block(None, 1, 10, &[b"x", b"yy"]),
        BLOCK_GOLDEN.to_vec(),
    ] {
        let original = decode_block(&Bytes::from(bytes.clone())).unwrap();
        for pos in 0..bytes.len() {
            for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff, 0x5a] {
                let mut damaged = bytes.clone();
                damaged[pos] ^= mask;
                let result = decode_block(&Bytes::from(damaged));
                assert!(
                    result.is_err(),
                    "byte {pos} ^ {mask:#04x} decoded as {result:?} (was {original:?})"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scanning a data.log image.
// ---------------------------------------------------------------------------------------------

/// A data.log image: header, blocks of the given entry counts, and optionally index and footer.
/// Returns the image and the end offset of each block.
fn data_log(block_sizes: &[usize], finalize: Option<u16>) -> (Vec<u8>, Vec<usize>) {
    let header = HeaderRecord {
        version: finalize.unwrap_or(FORMAT_V6),
        flags: 0,
        first_entry_id: 0,
    };
    let mut image = Vec::new();
    header.encode(&mut image);
    let mut ends = Vec::new();
    let mut index = Vec::new();
    let mut next = 0i64;
    for (number, &n) in block_sizes.iter().enumerate() {
        let entries: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; (i * 7) % 13]).collect();
        let offset = image.len();
        let bh = encode_block(None, number as i32, next, &entries, &mut image);
        ends.push(image.len());
        index.push(IndexRecord {
            block_number: number as i32,
            start_offset: offset as i64,
            block_size: (image.len() - offset) as u32,
            first_entry_id: bh.first_entry_id,
            last_entry_id: bh.last_entry_id,
        });
        next = bh.last_entry_id + 1;
    }
    if let Some(version) = finalize {
        let index_offset = image.len() as u64;
        for r in &index {
            r.encode(&mut image);
        }
        FooterRecord {
            total_blocks: index.len() as i32,
            total_records: index.len() as u32,
            total_size: image.len() as u64,
            index_offset,
            index_length: (index.len() * INDEX_RECORD_LEN) as u32,
            version,
            flags: 0,
            lac: next - 1,
        }
        .encode(&mut image);
    }
    (image, ends)
}

#[test]
fn scan_of_a_torn_tail_yields_exactly_the_complete_blocks() {
    let (image, ends) = data_log(&[3, 1, 0, 5], None);
    for len in 0..=image.len() {
        let buf = Bytes::copy_from_slice(&image[..len]);
        let report = scan_blocks(&buf, 0);
        let complete: Vec<usize> = ends.iter().copied().filter(|&e| e <= len).collect();
        let got: Vec<usize> = report.blocks.iter().map(|b| b.end()).collect();
        assert_eq!(got, complete, "len {len}");
        let expected_end = complete
            .last()
            .copied()
            .unwrap_or(if len >= HEADER_RECORD_LEN {
                HEADER_RECORD_LEN
            } else {
                0
            });
        assert_eq!(report.end, expected_end, "len {len}");
        assert_eq!(
            report.header.is_some(),
            len >= HEADER_RECORD_LEN,
            "len {len}"
        );
        if len == expected_end {
            assert_eq!(report.stop, ScanStop::End, "len {len}");
        } else {
            assert!(
                matches!(report.stop, ScanStop::Torn(_)),
                "len {len}: {:?}",
                report.stop
            );
        }
        // Entry ids run on from block to block.
        let mut next = 0;
        for b in &report.blocks {
            assert_eq!(b.block_header.first_entry_id, next);
            next += b.entries.len() as i64;
        }
        // Scanning past the header gives the same blocks.
        if len >= HEADER_RECORD_LEN {
            let from_25 = scan_blocks(&buf, HEADER_RECORD_LEN);
            assert_eq!(from_25.blocks, report.blocks);
            assert_eq!(from_25.header, None);
        }
    }
}

#[test]
fn scan_stops_at_the_index_of_a_finalized_image() {
    for version in [FORMAT_V5, FORMAT_V6] {
        let (image, ends) = data_log(&[2, 2], Some(version));
        let blocks_end = *ends.last().unwrap();
        let report = scan_blocks(&Bytes::from(image.clone()), 0);
        assert_eq!(report.blocks.len(), 2);
        assert_eq!(report.end, blocks_end);
        assert_eq!(report.stop, ScanStop::Trailer(RecordType::Index));
        let footer = footer_from_tail(&image).unwrap();
        assert_eq!(footer.version, version);
        assert_eq!(footer.index_offset, blocks_end as u64);
        assert_eq!(footer.lac, if version == FORMAT_V6 { 3 } else { -1 });
        // A torn index is a torn tail.
        let report = scan_blocks(&Bytes::copy_from_slice(&image[..blocks_end + 40]), 0);
        assert!(matches!(report.stop, ScanStop::Torn(_)));
        assert_eq!(report.end, blocks_end);
    }
}

#[test]
fn scan_reports_corruption_and_stray_records() {
    let (image, ends) = data_log(&[2, 2, 2], None);
    // Damage a byte inside block 1's data region.
    let mut damaged = image.clone();
    damaged[ends[0] + BLOCK_HEADER_RECORD_LEN + 3] ^= 0x10;
    let report = scan_blocks(&Bytes::from(damaged), 0);
    assert_eq!(report.blocks.len(), 1);
    assert_eq!(report.end, ends[0]);
    assert!(
        matches!(report.stop, ScanStop::Corrupt(CodecError::BlockCrc { .. })),
        "{:?}",
        report.stop
    );

    // A data record where a block header belongs.
    let mut stray = image[..ends[0]].to_vec();
    stray.extend_from_slice(&DATA_GOLDEN);
    let report = scan_blocks(&Bytes::from(stray), 0);
    assert_eq!(report.end, ends[0]);
    assert_eq!(
        report.stop,
        ScanStop::Corrupt(CodecError::UnexpectedRecord {
            expected: RecordType::BlockHeader,
            found: RecordType::Data
        })
    );

    // A second header record is out of place.
    let mut twice = image[..ends[0]].to_vec();
    twice.extend_from_slice(&HEADER_GOLDEN);
    let report = scan_blocks(&Bytes::from(twice), 0);
    assert!(matches!(
        report.stop,
        ScanStop::Corrupt(CodecError::UnexpectedRecord { .. })
    ));

    // Zeros after a crash (size persisted, data not) are corruption, not a torn write.
    let mut zeros = image[..ends[0]].to_vec();
    zeros.extend_from_slice(&[0u8; 64]);
    let report = scan_blocks(&Bytes::from(zeros), 0);
    assert_eq!(report.end, ends[0]);
    assert!(matches!(
        report.stop,
        ScanStop::Corrupt(CodecError::RecordCrc { .. })
    ));

    // A start offset past the end.
    let report = scan_blocks(&Bytes::from_static(&HEADER_GOLDEN), 100);
    assert!(matches!(report.stop, ScanStop::Torn(_)));
    assert!(report.end <= HEADER_GOLDEN.len());
}

#[test]
fn scanner_iterates_lazily() {
    let (image, ends) = data_log(&[1, 1], None);
    let mut scanner = BlockScanner::new(Bytes::from(image), 0);
    assert_eq!(scanner.offset(), 0);
    assert!(scanner.stop().is_none());
    let first = scanner.next().unwrap();
    assert_eq!(first.offset, HEADER_RECORD_LEN);
    assert_eq!(scanner.offset(), ends[0]);
    assert!(scanner.header().is_some());
    assert!(scanner.next().is_some());
    assert!(scanner.next().is_none());
    assert_eq!(scanner.stop(), Some(&ScanStop::End));
    assert!(scanner.next().is_none());
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn version() -> impl Strategy<Value = u16> {
    prop_oneof![Just(FORMAT_V5), Just(FORMAT_V6)]
}

fn header_record() -> impl Strategy<Value = HeaderRecord> {
    (version(), any::<u16>(), any::<i64>()).prop_map(|(version, flags, first_entry_id)| {
        HeaderRecord {
            version,
            flags,
            first_entry_id,
        }
    })
}

fn index_record() -> impl Strategy<Value = IndexRecord> {
    (
        any::<i32>(),
        any::<i64>(),
        any::<u32>(),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(b, s, z, f, l)| IndexRecord {
            block_number: b,
            start_offset: s,
            block_size: z,
            first_entry_id: f,
            last_entry_id: l,
        })
}

fn footer_record() -> impl Strategy<Value = FooterRecord> {
    (
        (any::<i32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        (any::<u32>(), version(), any::<u16>(), any::<i64>()),
    )
        .prop_map(
            |((tb, tr, ts, io), (il, version, flags, lac))| FooterRecord {
                total_blocks: tb,
                total_records: tr,
                total_size: ts,
                index_offset: io,
                index_length: il,
                version,
                flags,
                // v5 has no LAC on disk; it reads back as -1.
                lac: if version == FORMAT_V5 { -1 } else { lac },
            },
        )
}

fn block_header_record() -> impl Strategy<Value = BlockHeaderRecord> {
    (
        any::<i32>(),
        any::<i64>(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(b, f, l, len, crc)| BlockHeaderRecord {
            block_number: b,
            first_entry_id: f,
            last_entry_id: l,
            block_length: len,
            block_crc: crc,
        })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        header_record().prop_map(Record::Header),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| Record::Data(Bytes::from(d))),
        index_record().prop_map(Record::Index),
        footer_record().prop_map(Record::Footer),
        block_header_record().prop_map(Record::BlockHeader),
    ]
}

fn entries() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 0..200)
        ],
        0..24,
    )
}

proptest! {
    #[test]
    fn record_round_trip(record in record()) {
        let bytes = Bytes::from(encoded(&record));
        let (decoded, len) = decode_record(&bytes).unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(&decoded, &record);
        prop_assert_eq!(encoded(&decoded), bytes.to_vec());
    }

    #[test]
    fn footer_round_trips_through_the_tail(footer in footer_record(), prefix in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut tail = prefix;
        footer.encode(&mut tail);
        prop_assert_eq!(footer_from_tail(&tail), Ok(footer));
    }

    #[test]
    fn record_list_round_trip(records in proptest::collection::vec(record(), 0..16), cut in any::<prop::sample::Index>()) {
        let mut image = Vec::new();
        let mut ends = Vec::new();
        for r in &records {
            r.encode(&mut image);
            ends.push(image.len());
        }
        let (decoded, consumed) = decode_record_list(&Bytes::from(image.clone()));
        prop_assert_eq!(&decoded, &records);
        prop_assert_eq!(consumed, image.len());

        // Any cut keeps exactly the records wholly before it.
        let len = cut.index(image.len() + 1);
        let (decoded, consumed) = decode_record_list(&Bytes::copy_from_slice(&image[..len]));
        let whole = ends.iter().filter(|&&e| e <= len).count();
        prop_assert_eq!(&decoded[..], &records[..whole]);
        prop_assert_eq!(consumed, if whole == 0 { 0 } else { ends[whole - 1] });
    }

    #[test]
    fn block_round_trip(
        header in proptest::option::of(header_record()),
        number in any::<i32>(),
        first in 0i64..i64::MAX / 2,
        entries in entries(),
    ) {
        let mut out = Vec::new();
        let bh = encode_block(header.as_ref(), number, first, &entries, &mut out);
        prop_assert_eq!(out.len(), out.capacity());
        prop_assert_eq!(bh.last_entry_id, first + entries.len() as i64 - 1);
        prop_assert_eq!(bh.block_length as usize, entries.iter().map(|e| 9 + e.len()).sum::<usize>());
        let decoded = decode_block(&Bytes::from(out.clone())).unwrap();
        prop_assert_eq!(decoded.header, header);
        prop_assert_eq!(decoded.block_header, bh);
        prop_assert_eq!(decoded.entries.len(), entries.len());
        for ((id, got), (i, want)) in decoded.entries_with_ids().zip(entries.iter().enumerate()) {
            prop_assert_eq!(id, first + i as i64);
            prop_assert_eq!(&got[..], &want[..]);
        }
        // The block is also a valid record list: header?, block header, data records.
        let (records, consumed) = decode_record_list(&Bytes::from(out.clone()));
        prop_assert_eq!(consumed, out.len());
        prop_assert_eq!(records.len(), usize::from(header.is_some()) + 1 + entries.len());
    }

    #[test]
    fn damaged_blocks_never_decode_to_other_data(
        entries in entries(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut out = Vec::new();
        encode_block(None, 0, 0, &entries, &mut out);
        let mut damaged = out.clone();
        for (at, mask) in &damage {
            let i = at.index(damaged.len());
            damaged[i] ^= mask;
        }
        match decode_block(&Bytes::from(damaged.clone())) {
            Ok(decoded) => {
                // Only possible when the flips cancelled out.
                prop_assert_eq!(&damaged, &out);
                prop_assert_eq!(decoded.entries.len(), entries.len());
            }
            Err(_) => prop_assert_ne!(&damaged, &out),
        }
    }

    #[test]
    fn decoders_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), start in 0usize..300) {
        let buf = Bytes::from(bytes.clone());
        if let Ok((record, len)) = decode_record(&buf) {
            prop_assert_eq!(encoded(&record), bytes[..len].to_vec());
        }
        let (records, consumed) = decode_record_list(&buf);
        prop_assert!(consumed <= bytes.len());
        prop_assert_eq!(records.iter().map(Record::encoded_len).sum::<usize>(), consumed);
        let _ = footer_from_tail(&bytes);
        let _ = decode_block(&buf);
        let report = scan_blocks(&buf, start);
        prop_assert!(report.end <= bytes.len());
    }

    #[test]
    fn scan_of_concatenated_blocks(blocks in proptest::collection::vec(entries(), 0..6), cut in any::<prop::sample::Index>()) {
        let header = HeaderRecord { version: FORMAT_V6, flags: 0, first_entry_id: 0 };
        let mut image = Vec::new();
        header.encode(&mut image);
        let mut next = 0i64;
        let mut ends = Vec::new();
        for (n, entries) in blocks.iter().enumerate() {
            let bh = encode_block(None, n as i32, next, entries, &mut image);
            next = bh.last_entry_id + 1;
            ends.push(image.len());
        }
        let report = scan_blocks(&Bytes::from(image.clone()), 0);
        prop_assert_eq!(report.blocks.len(), blocks.len());
        prop_assert_eq!(report.end, image.len());
        prop_assert_eq!(report.stop, ScanStop::End);
        for (scanned, entries) in report.blocks.iter().zip(&blocks) {
            prop_assert_eq!(scanned.entries.len(), entries.len());
        }
        let len = cut.index(image.len() + 1);
        let report = scan_blocks(&Bytes::copy_from_slice(&image[..len]), 0);
        prop_assert_eq!(report.blocks.len(), ends.iter().filter(|&&e| e <= len).count());
    }
}
