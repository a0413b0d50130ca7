//! Golden encodings: protobuf bytes worked out by hand from the wire format and
//! checked in both directions (encode == expected, decode(expected) == value).
//!
//! Wire-format reminders used below:
//! * key byte = field_number << 3 | wire_type (0 varint, 1 fixed64, 2 length-delimited);
//! * `int64`/`int32` are plain varints (no zig-zag), so -1 is the 10-byte
//!   varint `ff ff ff ff ff ff ff ff ff 01`;
//! * `fixed64` and `double` are 8 bytes little-endian;
//! * proto3 leaves out fields holding their default value;
//! * repeated scalars are packed (one length-delimited field);
//! * a map entry is a nested message with key = field 1, value = field 2.

use bytes::Bytes;
use prost::Message;
use proto::logstore::{
    AddEntriesResponse, AddEntryState, LastReadState, LogMessageIdData, LogMessageLayout, NodeMeta,
};
use proto::meta::{
    LogMeta, QuorumInfo, QuorumNode, ReaderTempInfo, SegmentCleanupState, SegmentCleanupStatus,
    SegmentMetadata, SegmentState, Version,
};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// Parses a hex string; whitespace is ignored so the bytes can be grouped by field.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit")
        })
        .collect()
}

/// Asserts both directions of the golden encoding.
fn check<M: Message + Default + PartialEq + Debug>(value: &M, expected_hex: &str) {
    let expected = hex(expected_hex);
    assert_eq!(value.encode_to_vec(), expected, "encoding of {value:?}");
    assert_eq!(value.encoded_len(), expected.len());
    let decoded = M::decode(expected.as_slice()).expect("golden bytes decode");
    assert_eq!(&decoded, value);
}

/// The 10-byte varint of -1 (int64 and int32 alike).
const MINUS_ONE: &str = "ff ff ff ff ff ff ff ff ff 01";

#[test]
fn log_meta_as_created() {
    let meta = LogMeta {
        log_id: 1,
        max_segment_roll_time_seconds: 60,
        max_segment_roll_size_bytes: 256 << 20,
        compaction_buffer_size_bytes: 128 << 20,
        max_compaction_file_count: 600,
        creation_timestamp: 1_700_000_000,     // 0x6553f100
        modification_timestamp: 1_700_000_123, // 0x6553f17b
        truncated_segment_id: -1,
        truncated_entry_id: -1,
    };
    let expected = format!(
        "08 01
         10 3c
         18 80 80 80 80 01
         20 80 80 80 40
         28 d8 04
         31 00 f1 53 65 00 00 00 00
         39 7b f1 53 65 00 00 00 00
         40 {MINUS_ONE}
         48 {MINUS_ONE}"
    );
    check(&meta, &expected);
}

#[test]
fn log_meta_after_truncation() {
    let meta = LogMeta {
        log_id: 2,
        creation_timestamp: 1,
        modification_timestamp: 0, // default: left out even though fixed64
        truncated_segment_id: 5,
        truncated_entry_id: 0, // default: left out
        ..LogMeta::default()
    };
    check(&meta, "08 02  31 01 00 00 00 00 00 00 00  40 05");
}

/// A completed segment as v0.1.13 writes it: no `quorum`, `quorumId` = -1.
#[test]
#[allow(deprecated)] // quorumId is deprecated in the schema but still written
fn segment_metadata_without_quorum() {
    let seg = SegmentMetadata {
        seg_no: 3,
        create_time: 1_700_000_000_000, // 0x18b_cfe5_6800
        quorum_id: -1,
        state: SegmentState::Completed as i32,
        completion_time: 1_700_000_005_000, // 0x18b_cfe5_7b88
        last_entry_id: 99,
        size: 4096,
        sealed_time: 0,
        quorum: None,
    };
    let expected = format!(
        "08 03
         10 80 d0 95 ff bc 31
         18 {MINUS_ONE}
         20 02
         28 88 f7 95 ff bc 31
         30 63
         38 80 20"
    );
    check(&seg, &expected);
}

/// A sealed segment of an embedded client (v0.1.14+), replica set embedded.
#[test]
fn segment_metadata_with_embedded_quorum() {
    let seg = SegmentMetadata {
        seg_no: 4,
        create_time: 1_700_000_000_000,
        state: SegmentState::Sealed as i32,
        completion_time: 1_700_000_005_000,
        last_entry_id: 99,
        size: 4096,
        sealed_time: 1_700_000_005_000,
        quorum: Some(QuorumInfo {
            id: -1,
            es: 1,
            wq: 1,
            aq: 1,
            nodes: vec!["127.0.0.1:59456".to_owned()],
            replicas: vec![],
        }),
        ..SegmentMetadata::default()
    };
    // QuorumInfo body: 11 (id) + 6 (es, wq, aq) + 17 (nodes) = 34 = 0x22 bytes.
    let expected = format!(
        "08 04
         10 80 d0 95 ff bc 31
         20 03
         28 88 f7 95 ff bc 31
         30 63
         38 80 20
         40 88 f7 95 ff bc 31
         4a 22
            08 {MINUS_ONE}
            10 01
            18 01
            20 01
            2a 0f 31 32 37 2e 30 2e 30 2e 31 3a 35 39 34 35 36"
    );
    check(&seg, &expected);
    assert_eq!(seg.state(), SegmentState::Sealed);
}

#[test]
fn quorum_info_with_replica_and_tags() {
    let quorum = QuorumInfo {
        id: 1,
        es: 3,
        wq: 3,
        aq: 2,
        nodes: vec!["a:1".to_owned()],
        replicas: vec![QuorumNode {
            endpoint: "a:1".to_owned(),
            az: "z".to_owned(),
            tags: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            ..QuorumNode::default()
        }],
    };
    // QuorumNode body: 5 (endpoint) + 3 (az) + 8 (one tag entry) = 16 = 0x10.
    check(
        &quorum,
        "08 01  10 03  18 03  20 02
         2a 03 61 3a 31
         32 10
            0a 03 61 3a 31
            2a 01 7a
            3a 06  0a 01 6b  12 01 76",
    );
}

/// Value 1 of SegmentState is unused (a dropped state). Proto3 enums are open,
/// so it must survive a decode/encode round trip as the raw number.
#[test]
fn segment_state_unused_value_round_trips() {
    let bytes = hex("20 01");
    let seg = SegmentMetadata::decode(bytes.as_slice()).expect("decode");
    assert_eq!(seg.state, 1);
    assert!(SegmentState::try_from(seg.state).is_err());
    assert_eq!(seg.encode_to_vec(), bytes);
    assert_eq!(SegmentState::Truncated as i32, 4);
}

#[test]
fn reader_temp_info() {
    let info = ReaderTempInfo {
        reader_name: "reader-1".to_owned(),
        open_timestamp: 1_700_000_000_000, // 0x18b_cfe5_6800
        log_id: 7,
        open_segment_id: 2,
        open_entry_id: 5,
        recent_read_segment_id: 2,
        recent_read_entry_id: 9,
        recent_read_timestamp: 1_700_000_001_000, // 0x18b_cfe5_6be8
    };
    check(
        &info,
        "0a 08 72 65 61 64 65 72 2d 31
         11 00 68 e5 cf 8b 01 00 00
         18 07
         20 02
         28 05
         30 02
         38 09
         41 e8 6b e5 cf 8b 01 00 00",
    );
}

#[test]
fn version_one_zero_zero() {
    check(
        &Version {
            major: 1,
            minor: 0,
            patch: 0,
        },
        "08 01",
    );
}

#[test]
fn segment_cleanup_status() {
    let status = SegmentCleanupStatus {
        log_id: 1,
        segment_id: 2,
        state: SegmentCleanupState::CleanupCompleted as i32,
        start_time: 1000,
        last_update_time: 2000,
        quorum_cleanup_status: BTreeMap::from([("a:1".to_owned(), true)]),
        error_message: String::new(),
    };
    check(
        &status,
        "08 01  10 02  18 01
         20 e8 07
         28 d0 0f
         32 07  0a 03 61 3a 31  10 01",
    );
}

#[test]
fn log_message_id_data() {
    check(
        &LogMessageIdData {
            seg_id: 0,
            entry_id: 0,
        },
        "",
    );
    check(
        &LogMessageIdData {
            seg_id: 3,
            entry_id: 7,
        },
        "08 03 10 07",
    );
}

#[test]
fn log_message_layout_with_property() {
    let layout = LogMessageLayout {
        payload: Bytes::from_static(b"hello"),
        properties: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
    };
    check(
        &layout,
        "0a 05 68 65 6c 6c 6f
         12 06  0a 01 6b  12 01 76",
    );
}

#[test]
fn last_read_state_with_negative_block_id() {
    let state = LastReadState {
        segment_id: 2,
        flags: 1,
        version: 1,
        last_block_id: -1, // int32: still sign-extended to 10 bytes
        block_offset: 0,
        block_size: 0,
        node: "n1:1".to_owned(),
    };
    let expected = format!("08 02  10 01  18 01  20 {MINUS_ONE}  3a 04 6e 31 3a 31");
    check(&state, &expected);
}

#[test]
fn add_entries_response_packs_entry_ids() {
    let response = AddEntriesResponse {
        status: None,
        entry_id: vec![5, 6, 7],
        state: AddEntryState::Synced as i32,
    };
    check(&response, "12 03 05 06 07  18 01");
}

#[test]
fn node_meta_double_and_late_fields() {
    let node = NodeMeta {
        node_id: "n1".to_owned(),
        endpoint: "h:1".to_owned(),
        load_factor: 0.5, // 0x3fe0_0000_0000_0000
        load_updated_at: 1,
        ..NodeMeta::default()
    };
    check(
        &node,
        "0a 02 6e 31
         22 03 68 3a 31
         51 00 00 00 00 00 00 e0 3f
         58 01",
    );
}

#[test]
fn milvus_message_id_encodes_like_log_message_id_data() {
    // The Milvus WAL service's id carries Woodpecker's field numbers and types, so Milvus's
    // stored form (base64 of these bytes) is the same whichever message encoded it.
    for (seg, entry, expected) in [
        (0, 0, ""),
        (3, 7, "08 03 10 07"),
        (0, 300, "10 ac 02"),
        (
            -1,
            -1,
            "08 ff ff ff ff ff ff ff ff ff 01 10 ff ff ff ff ff ff ff ff ff 01",
        ),
    ] {
        let id = proto::milvus::MessageId {
            segment_id: seg,
            entry_id: entry,
        };
        check(&id, expected);
        let data = LogMessageIdData {
            seg_id: seg,
            entry_id: entry,
        };
        assert_eq!(id.encode_to_vec(), data.encode_to_vec());
    }
}

#[test]
fn milvus_error_detail_and_term_record() {
    let detail = proto::milvus::ErrorDetail {
        reason: proto::milvus::ErrorReason::Fenced as i32,
        message: "f".into(),
        term: 2,
        code: 1405,
    };
    // reason 1, message "f", term 2, code 1405 (0x57d: fd 0a).
    check(&detail, "08 01 12 01 66 18 02 20 fd 0a");
    let record = proto::milvus::PChannelTerm {
        term: 5,
        owner: "ab".into(),
        updated_at_ms: 1,
    };
    check(&record, "08 05 12 02 61 62 18 01");
}
