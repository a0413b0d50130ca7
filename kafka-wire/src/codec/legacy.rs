//! Versions Kafka 3.9 still serves that the `kafka-protocol` crate no longer reads or writes:
//! OffsetForLeaderEpoch v0 and v1 (KIP-279 added v1's leader epoch in the response; the
//! crate starts at v2, as Kafka 4.0 does).
//!
//! The request of both versions is the same (Kafka's `OffsetForLeaderEpochRequest.json`:
//! `ReplicaId` is 3+, `CurrentLeaderEpoch` 2+):
//!
//! ```text
//! Topics: INT32 count, then each: Topic (INT16 length + UTF-8),
//!         Partitions: INT32 count, then each: Partition INT32, LeaderEpoch INT32
//! ```
//!
//! and the response (`OffsetForLeaderEpochResponse.json`; no `ThrottleTimeMs` before v2):
//!
//! ```text
//! Topics: INT32 count, then each: Topic (INT16 length + UTF-8),
//!         Partitions: INT32 count, then each: ErrorCode INT16, Partition INT32,
//!                     LeaderEpoch INT32 (v1 only), EndOffset INT64
//! ```
//!
//! The decoder trusts no count: each is checked against the bytes that remain before
//! anything is reserved for it, so a hostile frame is an error naming the field, never a
//! panic or an allocation larger than the frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
};
use kafka_protocol::protocol::StrBytes;

/// Whether OffsetForLeaderEpoch `version` is one this module reads and writes.
pub fn offset_for_leader_epoch_legacy(version: i16) -> bool {
    (0..=1).contains(&version)
}

/// The smallest encoding of a topic: an empty name and an empty partition array.
const MIN_TOPIC_BYTES: usize = 2 + 4;
/// A partition: partition index and leader epoch.
const PARTITION_BYTES: usize = 4 + 4;

/// Decodes an OffsetForLeaderEpoch v0/v1 request body (the bytes after the header). Fields
/// the old versions lack get the values Kafka gives them: `ReplicaId` -2 (a consumer),
/// `CurrentLeaderEpoch` -1 (none). Every byte must be used.
pub fn decode_offset_for_leader_epoch_request(
    body: &mut Bytes,
) -> Result<OffsetForLeaderEpochRequest, String> {
    let topic_count = count(body, "Topics", MIN_TOPIC_BYTES)?;
    let mut topics = Vec::with_capacity(topic_count);
    for t in 0..topic_count {
        let name = string(body, &format!("Topics[{t}].Topic"))?;
        let partition_count = count(body, &format!("Topics[{t}].Partitions"), PARTITION_BYTES)?;
        let mut partitions = Vec::with_capacity(partition_count);
        for _ in 0..partition_count {
            // `count` checked that every partition's bytes are there.
            let partition = body.get_i32();
            let leader_epoch = body.get_i32();
            partitions.push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(leader_epoch),
            );
        }
        topics.push(
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(name))
                .with_partitions(partitions),
        );
    }
    if body.has_remaining() {
        return Err(format!("{} bytes after the last field", body.remaining()));
    }
    Ok(OffsetForLeaderEpochRequest::default()
        .with_replica_id((-2).into())
        .with_topics(topics))
}

/// Encodes an OffsetForLeaderEpoch v0/v1 request body: what a client of those versions
/// sends (the fields v2+ added are not written).
pub fn encode_offset_for_leader_epoch_request(
    req: &OffsetForLeaderEpochRequest,
    out: &mut BytesMut,
) -> Result<(), String> {
    put_count(out, req.topics.len(), "Topics")?;
    for t in &req.topics {
        put_string(out, t.topic.0.as_str(), "Topic")?;
        put_count(out, t.partitions.len(), "Partitions")?;
        for p in &t.partitions {
            out.put_i32(p.partition);
            out.put_i32(p.leader_epoch);
        }
    }
    Ok(())
}

/// Encodes an OffsetForLeaderEpoch v0/v1 response body. v0 has no leader epoch per
/// partition; neither has a throttle time.
pub fn encode_offset_for_leader_epoch_response(
    resp: &OffsetForLeaderEpochResponse,
    version: i16,
    out: &mut BytesMut,
) -> Result<(), String> {
    if !offset_for_leader_epoch_legacy(version) {
        return Err(format!(
            "OffsetForLeaderEpoch v{version} is not a legacy version"
        ));
    }
    put_count(out, resp.topics.len(), "Topics")?;
    for t in &resp.topics {
        put_string(out, t.topic.0.as_str(), "Topic")?;
        put_count(out, t.partitions.len(), "Partitions")?;
        for p in &t.partitions {
            out.put_i16(p.error_code);
            out.put_i32(p.partition);
            if version >= 1 {
                out.put_i32(p.leader_epoch);
            }
            out.put_i64(p.end_offset);
        }
    }
    Ok(())
}

/// An INT32 array count whose elements, `min_element` bytes each at least, fit in what
/// remains. A null array (-1) is refused: no field of these versions is nullable.
fn count(body: &mut Bytes, field: &str, min_element: usize) -> Result<usize, String> {
    if body.remaining() < 4 {
        return Err(format!("{field}: the frame ends inside the array count"));
    }
    let n = body.get_i32();
    if n < 0 {
        return Err(format!("{field}: array count {n} (not nullable)"));
    }
    let n = n as usize;
    if n.saturating_mul(min_element) > body.remaining() {
        return Err(format!(
            "{field}: {n} elements cannot fit in the {} bytes left",
            body.remaining()
        ));
    }
    Ok(n)
}

/// An INT16-length UTF-8 string, not null.
fn string(body: &mut Bytes, field: &str) -> Result<StrBytes, String> {
    if body.remaining() < 2 {
        return Err(format!("{field}: the frame ends inside the string length"));
    }
    let n = body.get_i16();
    if n < 0 {
        return Err(format!("{field}: string length {n} (not nullable)"));
    }
    let n = n as usize;
    if n > body.remaining() {
        return Err(format!(
            "{field}: a string of {n} bytes with {} left",
            body.remaining()
        ));
    }
    StrBytes::from_utf8(body.split_to(n)).map_err(|e| format!("{field}: {e}"))
}

fn put_count(out: &mut BytesMut, n: usize, field: &str) -> Result<(), String> {
    let n = i32::try_from(n).map_err(|_| format!("{field}: {n} elements"))?;
    out.put_i32(n);
    Ok(())
}

fn put_string(out: &mut BytesMut, s: &str, field: &str) -> Result<(), String> {
    let n = i16::try_from(s.len()).map_err(|_| format!("{field}: {} bytes", s.len()))?;
    out.put_i16(n);
    out.put_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };

    fn decode(bytes: &[u8]) -> Result<OffsetForLeaderEpochRequest, String> {
        decode_offset_for_leader_epoch_request(&mut Bytes::copy_from_slice(bytes))
    }

    /// One topic `t` with partitions 0 (epoch 5) and 7 (epoch -1), as a v0/v1 client
    /// writes it.
    const REQUEST: &[u8] = b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\
        \x00\x00\x00\x00\x00\x00\x00\x05\
        \x00\x00\x00\x07\xff\xff\xff\xff";

    #[test]
    fn a_request_decodes_with_the_defaults_of_later_fields_and_encodes_back() {
        let req = decode(REQUEST).unwrap();
        assert_eq!(req.replica_id.0, -2);
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].topic.0.as_str(), "t");
        let parts: Vec<_> = req.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.current_leader_epoch, p.leader_epoch))
            .collect();
        assert_eq!(parts, [(0, -1, 5), (7, -1, -1)]);
        let mut again = BytesMut::new();
        encode_offset_for_leader_epoch_request(&req, &mut again).unwrap();
        assert_eq!(&again[..], REQUEST);
    }

    #[test]
    fn hostile_requests_are_errors_naming_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "Topics: the frame ends inside the array count"),
            (
                b"\x7f\xff\xff\xff",
                "Topics: 2147483647 elements cannot fit",
            ),
            (b"\xff\xff\xff\xff", "Topics: array count -1"),
            (b"\x80\x00\x00\x00", "Topics: array count -2147483648"),
            // One topic whose name claims 32767 bytes.
            (
                b"\x00\x00\x00\x01\x7f\xff\x00\x00\x00\x00",
                "Topics[0].Topic: a string of 32767 bytes",
            ),
            (
                b"\x00\x00\x00\x01\xff\xff\x00\x00\x00\x00",
                "Topics[0].Topic: string length -1",
            ),
            // A partition count far beyond the bytes left.
            (
                b"\x00\x00\x00\x01\x00\x01t\x10\x00\x00\x00\x00\x00\x00\x00",
                "Topics[0].Partitions: 268435456 elements",
            ),
            // Half a partition.
            (
                b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01\x00\x00\x00\x00",
                "Topics[0].Partitions: 1 elements cannot fit",
            ),
            (
                b"\x00\x00\x00\x01\x00\x01\xff\x00\x00\x00\x00",
                "Topics[0].Topic: invalid utf-8",
            ),
            (b"\x00\x00\x00\x00\x00", "1 bytes after the last field"),
        ];
        for (bytes, want) in cases {
            let err = decode(bytes).unwrap_err();
            assert!(
                err.to_lowercase().contains(&want.to_lowercase()),
                "{bytes:02x?}: {err}"
            );
        }
    }

    #[test]
    fn every_cut_and_every_changed_byte_is_an_error_or_a_request() {
        for cut in 0..REQUEST.len() {
            assert!(decode(&REQUEST[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..REQUEST.len() {
            for b in [0x00, 0x7f, 0x80, 0xff] {
                let mut bytes = REQUEST.to_vec();
                bytes[at] = b;
                let _ = decode(&bytes);
            }
        }
    }

    fn response() -> OffsetForLeaderEpochResponse {
        OffsetForLeaderEpochResponse::default()
            .with_throttle_time_ms(9)
            .with_topics(vec![
                OffsetForLeaderTopicResult::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        EpochEndOffset::default()
                            .with_partition(0)
                            .with_leader_epoch(0)
                            .with_end_offset(42),
                        EpochEndOffset::default()
                            .with_error_code(3)
                            .with_partition(9),
                    ]),
            ])
    }

    #[test]
    fn responses_are_written_as_kafka_defines_v0_and_v1() {
        let mut v0 = BytesMut::new();
        encode_offset_for_leader_epoch_response(&response(), 0, &mut v0).unwrap();
        assert_eq!(
            &v0[..],
            b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x2a\
              \x00\x03\x00\x00\x00\x09\xff\xff\xff\xff\xff\xff\xff\xff"
        );
        let mut v1 = BytesMut::new();
        encode_offset_for_leader_epoch_response(&response(), 1, &mut v1).unwrap();
        assert_eq!(
            &v1[..],
            b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x2a\
              \x00\x03\x00\x00\x00\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
        );
        assert!(encode_offset_for_leader_epoch_response(&response(), 2, &mut v1).is_err());
    }
}
