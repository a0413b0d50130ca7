//! The internal topic `__consumer_offsets`, as Kafka shows it: listed as internal with 50
//! partitions (`offsets.topic.num.partitions`) and `cleanup.policy=compact`, and readable:
//! every change of a committed offset is a record in Kafka's own format, in the partition
//! Kafka would put it in.
//!
//! **Where the truth is.** The committed offsets' source of truth stays the metadata store
//! (`groups::store`): OffsetFetch, restarts and retention read it, and its keys are what a
//! single key-value transaction can update. This log is a faithful *account* of it, written
//! by the coordinator through [`OffsetLog`] under the same lock that orders the store's
//! writes, and always **before** the store write it describes: a commit is acknowledged only
//! once its record is durable in the log, so the log never lacks an acknowledged commit.
//! The converse does not hold: when the store write fails after the record was appended, the
//! client gets an error (and retries) while the log already shows the record, as Kafka's log
//! may show a commit whose acknowledgement was lost. Keeping the store as the truth (rather
//! than replaying this log at start-up, as Kafka does) keeps the coordinator's restart cost
//! independent of the log's length. The log is compacted by rewrite (`OffsetLog::compact`):
//! once enough of a partition is superseded ([`COMPACT_MIN_SUPERSEDED`], and more than is in
//! force), the offsets in force are appended again and the partition's log start is raised
//! past everything they supersede.
//!
//! **What the log holds.** Key version 1 (`group`, `topic`, `partition`) and value version 3
//! (`offset`, `leader_epoch`, `metadata`, `commit_timestamp`), the layouts of Kafka's
//! `OffsetCommitKey` and `OffsetCommitValue` (non-flexible versions: INT16 version, then the
//! fields, strings with an INT16 length); a deleted offset (DeleteGroups, OffsetDelete, a
//! deleted topic, retention) is a tombstone, its key with a null value. Group `g` goes to
//! partition `abs(hash(g)) % 50` with `hash` Java's `String.hashCode` and `abs(i32::MIN)`
//! taken as 0, as Kafka's coordinator places it. Batches are uncompressed, with no producer
//! id. Group membership records (key version 2) are not written: membership is not durable
//! here (see `groups`).
//!
//! Transactional offset commits (TxnOffsetCommit) reach the log when their transaction
//! commits, as ordinary records at that moment; Kafka writes them when they are sent, as
//! transactional records followed by the transaction's marker. A `read_committed` reader sees
//! the same offsets in both; a `read_uncommitted` reader of Kafka would also see those of
//! aborted transactions, which never reach this log.
//!
//! The topic is created when the first offset is written (Kafka creates it at the first
//! FindCoordinator); offsets stored before it existed are written to it then, one record
//! each, before anything else (a failed attempt is retried by the next change; a process
//! that stops in the middle leaves those older offsets out of the log until they are
//! committed again). Clients may read it; they may not write to it, delete it or
//! its records, add partitions to it or change its configuration (`is_internal`).

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use crate::batch;
use crate::broker::Broker;
use crate::error::KafkaCode;
use crate::topics::Topic;

/// The name of the internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Its partitions (Kafka's `offsets.topic.num.partitions` default).
pub const OFFSETS_TOPIC_PARTITIONS: i32 = 50;

/// The most records appended in one batch (a deleted group may have many tombstones).
const MAX_RECORDS_PER_BATCH: usize = 500;

/// A partition is compacted only once at least this many of its records are superseded
/// (and they outnumber the records still in force): small logs are not worth the rewrite.
pub const COMPACT_MIN_SUPERSEDED: i64 = 10_000;

/// Whether `topic` is one of Kafka's internal topics that this broker keeps itself.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

/// The topic configuration Kafka gives `__consumer_offsets` at creation
/// (`offsets.topic.segment.bytes`, `offsets.topic.compression.codec` and compaction).
fn offsets_topic_configs() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact"),
        ("compression.type", "producer"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Java's `String.hashCode` of `s`: `s[0]*31^(n-1) + ... + s[n-1]` over its UTF-16 code
/// units, in wrapping 32-bit arithmetic.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The partition of `__consumer_offsets` (of `partitions`) that holds `group`'s records.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    // Kafka's `Utils.abs`: the absolute value, with i32::MIN (which has none) as 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

fn put_string(out: &mut Vec<u8>, s: &str, field: &str) -> Result<(), String> {
    let len = i16::try_from(s.len())
        .map_err(|_| format!("{field} of {} bytes does not fit a Kafka string", s.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The record key of a committed offset: `OffsetCommitKey` version 1.
pub fn offset_commit_key(group: &str, topic: &str, partition: i32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(8 + group.len() + topic.len());
    out.extend_from_slice(&1i16.to_be_bytes());
    put_string(&mut out, group, "group id")?;
    put_string(&mut out, topic, "topic")?;
    out.extend_from_slice(&partition.to_be_bytes());
    Ok(out)
}

/// The record value of a committed offset: `OffsetCommitValue` version 3 (a null metadata
/// is written as the empty string, Kafka's "no metadata").
pub fn offset_commit_value(
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&str>,
    commit_timestamp_ms: i64,
) -> Result<Vec<u8>, String> {
    let metadata = metadata.unwrap_or("");
    let mut out = Vec::with_capacity(24 + metadata.len());
    out.extend_from_slice(&3i16.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&leader_epoch.to_be_bytes());
    put_string(&mut out, metadata, "metadata")?;
    out.extend_from_slice(&commit_timestamp_ms.to_be_bytes());
    Ok(out)
}

/// One record for the log: key and value (`None`: a tombstone).
pub type LogRecord = (Vec<u8>, Option<Vec<u8>>);

/// Where the group coordinator writes its account of committed offsets (see the module
/// docs). The broker implements it over the `__consumer_offsets` topic.
pub trait OffsetLog: Send + Sync {
    /// Makes sure the log exists; `true` when this call created it (so that offsets stored
    /// before are written to it first).
    fn ensure(&self) -> BoxFuture<'_, Result<bool, String>>;

    /// Appends `group`'s records in order to its partition and returns once they are
    /// durable.
    fn append<'a>(
        &'a self,
        group: &'a str,
        records: Vec<LogRecord>,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// The (log start, end) offsets of `partition`.
    fn span(&self, partition: i32) -> BoxFuture<'_, Result<(i64, i64), String>>;

    /// Compacts `partition`: appends `snapshot` (every record still in force there, per
    /// group) and then moves the partition's log start to where the snapshot begins, so that
    /// everything it supersedes goes. The caller holds the writes still, so nothing else is
    /// appended in between.
    fn compact(
        &self,
        partition: i32,
        snapshot: Vec<(String, Vec<LogRecord>)>,
        timestamp_ms: i64,
    ) -> BoxFuture<'_, Result<(), String>>;
}

impl Broker {
    /// The `__consumer_offsets` topic, created when missing; `true` when created now.
    async fn offsets_topic(&self) -> Result<(std::sync::Arc<Topic>, bool), String> {
        if let Some(t) = self.topics().get(OFFSETS_TOPIC) {
            return Ok((t, false));
        }
        let created = self
            .create_topic(
                OFFSETS_TOPIC,
                OFFSETS_TOPIC_PARTITIONS,
                offsets_topic_configs(),
            )
            .await
            .map_err(|e| format!("creating {OFFSETS_TOPIC}: {e}"))?;
        match created {
            Ok(t) => Ok((t, true)),
            // Created meanwhile by another request.
            Err(_) => self
                .topics()
                .get(OFFSETS_TOPIC)
                .map(|t| (t, false))
                .ok_or_else(|| format!("{OFFSETS_TOPIC} could not be created")),
        }
    }
}

impl Broker {
    /// Appends `records` of `group` to partition `index` of the offsets topic, durably.
    async fn append_offsets_records(
        &self,
        topic: &Topic,
        index: i32,
        records: &[LogRecord],
        timestamp_ms: i64,
    ) -> Result<(), String> {
        let partition = self
            .partition(topic, index)
            .await
            .map_err(|c| format!("{OFFSETS_TOPIC}-{index}: {c:?}"))?;
        let mut batches = Vec::new();
        for chunk in records.chunks(MAX_RECORDS_PER_BATCH) {
            let refs: Vec<batch::PlainRecord<'_>> = chunk
                .iter()
                .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
                .collect();
            let bytes = batch::plain_batch(&refs, timestamp_ms).map_err(|e| e.to_string())?;
            let header = batch::read_header(&bytes).map_err(|e| e.to_string())?;
            batches.push((header, bytes));
        }
        partition
            .append(batches)
            .await
            .map(|_| ())
            .map_err(|c: KafkaCode| format!("appending to {OFFSETS_TOPIC}-{index}: {c:?}"))
    }
}

impl OffsetLog for Broker {
    fn ensure(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move { self.offsets_topic().await.map(|(_, created)| created) })
    }

    fn append<'a>(
        &'a self,
        group: &'a str,
        records: Vec<LogRecord>,
        timestamp_ms: i64,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let (topic, _) = self.offsets_topic().await?;
            let index = partition_for(group, topic.partitions);
            self.append_offsets_records(&topic, index, &records, timestamp_ms)
                .await
        })
    }

    fn span(&self, partition: i32) -> BoxFuture<'_, Result<(i64, i64), String>> {
        Box::pin(async move {
            let (topic, _) = self.offsets_topic().await?;
            let p = self
                .partition(&topic, partition)
                .await
                .map_err(|c| format!("{OFFSETS_TOPIC}-{partition}: {c:?}"))?;
            Ok(p.offsets())
        })
    }

    fn compact(
        &self,
        partition: i32,
        snapshot: Vec<(String, Vec<LogRecord>)>,
        timestamp_ms: i64,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (topic, _) = self.offsets_topic().await?;
            let p = self
                .partition(&topic, partition)
                .await
                .map_err(|c| format!("{OFFSETS_TOPIC}-{partition}: {c:?}"))?;
            let (_, snapshot_start) = p.offsets();
            for (_, records) in &snapshot {
                self.append_offsets_records(&topic, partition, records, timestamp_ms)
                    .await?;
            }
            self.delete_partition_records(&topic, partition, snapshot_start)
                .await
                .map(|_| ())
                .map_err(|c| format!("compacting {OFFSETS_TOPIC}-{partition}: {c:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java: "".hashCode() == 0, "a".hashCode() == 97, "group".hashCode() == 98629247,
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE (abs taken as 0).
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("group"), 98_629_247);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Non-ASCII counts UTF-16 units: "é" is 0xe9; "😀" is the pair d83d de00.
        assert_eq!(java_string_hash("é"), 0xe9);
        assert_eq!(java_string_hash("😀"), 0xd83d * 31 + 0xde00);
        assert_eq!(partition_for("a", 50), 97 % 50);
        assert_eq!(partition_for("group", 50), 98_629_247 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // A negative hash: "kafka-console-consumer-1".hashCode() is negative in Java.
        let h = java_string_hash("zzzzzzzz");
        assert!(h < 0, "{h}");
        assert_eq!(partition_for("zzzzzzzz", 50), (-h) % 50);
    }

    #[test]
    fn records_have_kafkas_layout() {
        // OffsetCommitKey v1: version, group, topic, partition.
        assert_eq!(
            offset_commit_key("g", "tp", 3).unwrap(),
            b"\x00\x01\x00\x01g\x00\x02tp\x00\x00\x00\x03"
        );
        // OffsetCommitValue v3: version, offset, leader epoch, metadata, commit timestamp.
        assert_eq!(
            offset_commit_value(42, 7, Some("m"), 1_700_000_000_000).unwrap(),
            b"\x00\x03\
              \x00\x00\x00\x00\x00\x00\x00\x2a\
              \x00\x00\x00\x07\
              \x00\x01m\
              \x00\x00\x01\x8b\xcf\xe5\x68\x00"
        );
        // No metadata is the empty string; no epoch is -1.
        assert_eq!(
            offset_commit_value(0, -1, None, 0).unwrap(),
            b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00"
        );
        // A name no Kafka string can hold is an error, not a truncated record.
        assert!(offset_commit_key(&"g".repeat(40_000), "t", 0).is_err());
    }
}
