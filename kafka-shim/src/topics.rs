//! Topics: their names, ids, partition counts and configurations, kept in the engine's
//! metadata store under `<prefix>/kafka/topics/<name>`, and the log naming.
//!
//! Partition `p` of topic `t` is the log **`kafka:t:p`** (`:` cannot occur in a Kafka topic
//! name, so the mapping is one-to-one). A deleted topic's logs are deleted; a topic created
//! again under the same name starts at offset 0 with a new topic id, as in Kafka.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{KafkaCode, ShimError};
use crate::store::{ShimStore, to_json};

/// The most records one CreateTopics request may create: a topic counts one, each of its
/// partitions and configurations one more. Apache Kafka's controller refuses larger
/// operations the same way (`POLICY_VIOLATION`, "Unable to perform excessively large batch
/// operation."); it is also what bounds the partitions of a topic of this broker.
pub const MAX_RECORDS_PER_REQUEST: i64 = 10_000;

/// The most partitions a stored topic may claim. Nothing this broker creates has more; a
/// stored record with more (written before the limit existed, or damaged) is not served,
/// only deleted.
pub const MAX_PARTITIONS: i32 = MAX_RECORDS_PER_REQUEST as i32;

/// The log holding partition `partition` of `topic`.
pub fn log_name(topic: &str, partition: i32) -> String {
    format!("{}{partition}", log_prefix(topic))
}

/// The common prefix of the logs of `topic`'s partitions.
pub fn log_prefix(topic: &str) -> String {
    format!("{}{topic}:", crate::LOG_PREFIX)
}

/// Kafka's topic name rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Broker-wide defaults for topic configurations.
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    /// Partitions of an auto-created topic (`num.partitions`).
    pub partitions: i32,
    /// `retention.ms` (-1: forever).
    pub retention_ms: i64,
    /// `retention.bytes` per partition (-1: no limit).
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 4,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            // Milvus sends records of up to 10 MiB.
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A topic configuration key the broker knows: (name, read-only, documentation).
pub const TOPIC_CONFIG_KEYS: &[(&str, bool)] = &[
    ("cleanup.policy", false),
    ("compression.type", false),
    ("max.message.bytes", false),
    ("message.timestamp.type", true),
    ("min.insync.replicas", true),
    ("retention.bytes", false),
    ("retention.ms", false),
    ("segment.bytes", true),
];

/// One topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Topic {
    /// The name.
    pub name: String,
    /// The topic id (a UUID, stable for the topic's life).
    pub id: uuid::Uuid,
    /// The number of partitions.
    pub partitions: i32,
    /// Configuration set on the topic (overrides of the defaults).
    pub configs: BTreeMap<String, String>,
    /// Creation time.
    pub created_ms: i64,
}

impl Topic {
    /// The value of a configuration key, with the source: `true` when set on the topic.
    pub fn config(&self, key: &str, defaults: &TopicDefaults) -> Option<(String, bool)> {
        if let Some(v) = self.configs.get(key) {
            return Some((v.clone(), true));
        }
        let v = match key {
            "cleanup.policy" => "delete".to_string(),
            "compression.type" => "producer".to_string(),
            "max.message.bytes" => defaults.max_message_bytes.to_string(),
            "message.timestamp.type" => "CreateTime".to_string(),
            "min.insync.replicas" => "1".to_string(),
            "retention.bytes" => defaults.retention_bytes.to_string(),
            "retention.ms" => defaults.retention_ms.to_string(),
            "segment.bytes" => "1073741824".to_string(),
            _ => return None,
        };
        Some((v, false))
    }

    fn number(&self, key: &str, default: i64) -> i64 {
        self.configs
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// `retention.ms` in force.
    pub fn retention_ms(&self, d: &TopicDefaults) -> i64 {
        self.number("retention.ms", d.retention_ms)
    }

    /// `retention.bytes` in force.
    pub fn retention_bytes(&self, d: &TopicDefaults) -> i64 {
        self.number("retention.bytes", d.retention_bytes)
    }

    /// `max.message.bytes` in force.
    pub fn max_message_bytes(&self, d: &TopicDefaults) -> i64 {
        self.number("max.message.bytes", d.max_message_bytes)
    }

    /// Whether `cleanup.policy` includes `delete` (retention and DeleteRecords apply).
    pub fn deletes_records(&self, d: &TopicDefaults) -> bool {
        self.config("cleanup.policy", d)
            .is_some_and(|(v, _)| v.split(',').any(|p| p.trim() == "delete"))
    }

    /// Whether `cleanup.policy` includes `compact`: every record must have a key.
    pub fn compacted(&self, d: &TopicDefaults) -> bool {
        self.config("cleanup.policy", d)
            .is_some_and(|(v, _)| v.split(',').any(|p| p.trim() == "compact"))
    }
}

/// Checks topic configurations given at creation; the error names the offending key.
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        let number = |min: i64| -> Result<(), String> {
            match v.parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                _ => Err(format!("{k}={v}: expected an integer of at least {min}")),
            }
        };
        match k.as_str() {
            "retention.ms" | "retention.bytes" => number(-1)?,
            "max.message.bytes" => number(0)?,
            "segment.bytes" => number(14)?,
            "min.insync.replicas" => number(1)?,
            // `compact` is accepted for what clients can see of it: records without a key are
            // refused (INVALID_RECORD); older records of a key are not removed.
            "cleanup.policy"
                if !v.trim().is_empty()
                    && v.split(',')
                        .all(|p| matches!(p.trim(), "delete" | "compact")) => {}
            "cleanup.policy" => {
                return Err(format!(
                    "Invalid value {v} for configuration cleanup.policy: String must be one of: compact, delete"
                ));
            }
            "compression.type" if crate::batch::topic_codec(v).is_none_or(|c| c.is_ok()) => {}
            "compression.type" => {
                return Err(format!(
                    "Invalid value {v} for configuration compression.type: String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer"
                ));
            }
            "message.timestamp.type" if v == "CreateTime" => {}
            "message.timestamp.type" => {
                return Err(format!(
                    "message.timestamp.type={v}: only `CreateTime` is supported"
                ));
            }
            _ => return Err(format!("unknown topic configuration `{k}`")),
        }
    }
    Ok(())
}

impl Topic {
    /// Why a stored topic cannot be served, if it cannot.
    pub fn unservable(&self) -> Option<String> {
        (!(1..=MAX_PARTITIONS).contains(&self.partitions)).then(|| {
            format!(
                "topic `{}` claims {} partitions, outside 1..={MAX_PARTITIONS}: it is not served; \
                 delete it (kafka-topics.sh --delete) to reclaim its name and logs",
                self.name, self.partitions
            )
        })
    }
}

/// The topic registry: an in-memory copy of the stored topics.
#[derive(Debug)]
pub struct Topics {
    store: ShimStore,
    prefix: String,
    /// `<prefix>/log-start/`: the log start offsets DeleteRecords set, per topic (see
    /// [`Topics::raise_log_start`]).
    log_starts: String,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Stored topics that cannot be served ([`Topic::unservable`]): kept apart so that
    /// nothing iterates their partitions, but known, so that they can be deleted.
    unservable: RwLock<BTreeMap<String, Arc<Topic>>>,
}

impl Topics {
    /// Loads every topic stored under `<root>/topics/`.
    pub async fn load(store: ShimStore) -> Result<Topics, ShimError> {
        let log_starts = format!("{}/log-start/", store.root());
        let prefix = format!("{}/topics/", store.root());
        let mut topics = BTreeMap::new();
        let mut unservable = BTreeMap::new();
        for item in store.list(&prefix).await? {
            let topic: Topic = item.json("topic")?;
            match topic.unservable() {
                Some(why) => {
                    tracing::error!("{why}");
                    unservable.insert(topic.name.clone(), Arc::new(topic));
                }
                None => {
                    topics.insert(topic.name.clone(), Arc::new(topic));
                }
            }
        }
        Ok(Topics {
            store,
            prefix,
            log_starts,
            topics: RwLock::new(topics),
            unservable: RwLock::new(unservable),
        })
    }

    /// A stored topic that is not served ([`Topic::unservable`]), by name.
    pub fn unservable(&self, name: &str) -> Option<Arc<Topic>> {
        self.unservable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// A topic by name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The topic with this topic id.
    pub fn by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        if id.is_nil() {
            return None;
        }
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Every topic.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stores a new topic. `Ok(Err(TopicAlreadyExists))` when another one won.
    pub async fn create(&self, topic: Topic) -> Result<Result<Arc<Topic>, KafkaCode>, ShimError> {
        let key = format!("{}{}", self.prefix, topic.name);
        let value = to_json(&topic, &key)?;
        if !self.store.create(&key, value).await? {
            // Someone else created it: refresh our copy.
            if let Some(item) = self.store.get(&key).await?
                && let Ok(t) = item.json::<Topic>("topic")
            {
                let registry = match t.unservable() {
                    Some(_) => &self.unservable,
                    None => &self.topics,
                };
                registry
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(t.name.clone(), Arc::new(t));
            }
            return Ok(Err(KafkaCode::TopicAlreadyExists));
        }
        let topic = Arc::new(topic);
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.name.clone(), topic.clone());
        Ok(Ok(topic))
    }

    /// Replaces the stored topic `name` of id `id` by what `change` makes of it, as one
    /// compare-and-swap on its record (a concurrent change is retried on the new value).
    /// `Ok(Err(UnknownTopicOrPartition))` when the topic is gone or was re-created;
    /// `Ok(Err(code))` when `change` refuses; nothing is written then.
    pub async fn update(
        &self,
        name: &str,
        id: uuid::Uuid,
        change: impl Fn(&Topic) -> Result<Topic, KafkaCode>,
    ) -> Result<Result<Arc<Topic>, KafkaCode>, ShimError> {
        let key = format!("{}{}", self.prefix, name);
        for _ in 0..16 {
            let Some(item) = self.store.get(&key).await? else {
                return Ok(Err(KafkaCode::UnknownTopicOrPartition));
            };
            let current: Topic = item.json("topic")?;
            if current.id != id {
                return Ok(Err(KafkaCode::UnknownTopicOrPartition));
            }
            let next = match change(&current) {
                Ok(t) => t,
                Err(code) => return Ok(Err(code)),
            };
            let value = to_json(&next, &key)?;
            if self.store.replace(&key, Some(item.revision), value).await? {
                let next = Arc::new(next);
                self.topics
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(next.name.clone(), next.clone());
                return Ok(Ok(next));
            }
        }
        Err(ShimError::Corrupt {
            what: key,
            detail: "the topic record kept changing concurrently".into(),
        })
    }

    fn log_start_key(&self, topic: &Topic, partition: i32) -> String {
        format!("{}{}/{}/{partition}", self.log_starts, topic.name, topic.id)
    }

    /// The log start offset DeleteRecords set for a partition, if any. Keyed by topic id
    /// too, so that a topic re-created under the same name never inherits one.
    pub async fn log_start(&self, topic: &Topic, partition: i32) -> Result<i64, ShimError> {
        let key = self.log_start_key(topic, partition);
        match self.store.get(&key).await? {
            Some(item) => parse_i64(&item.value, &key),
            None => Ok(0),
        }
    }

    /// Stores `offset` as the partition's log start offset unless a higher one is stored
    /// (a start never moves back, whatever order concurrent DeleteRecords land in).
    pub async fn raise_log_start(
        &self,
        topic: &Topic,
        partition: i32,
        offset: i64,
    ) -> Result<(), ShimError> {
        let key = self.log_start_key(topic, partition);
        for _ in 0..16 {
            let revision = match self.store.get(&key).await? {
                Some(item) if parse_i64(&item.value, &key)? >= offset => return Ok(()),
                Some(item) => Some(item.revision),
                None => None,
            };
            if self
                .store
                .replace(&key, revision, Bytes::from(offset.to_string()))
                .await?
            {
                return Ok(());
            }
        }
        Err(ShimError::Corrupt {
            what: key,
            detail: "the log start offset kept changing concurrently".into(),
        })
    }

    /// Removes a topic's record (its logs are deleted by the caller first) and the log
    /// start offsets stored for it.
    pub async fn remove(&self, name: &str) -> Result<(), ShimError> {
        let starts = self
            .store
            .list(&format!("{}{name}/", self.log_starts))
            .await?;
        for item in starts {
            self.store.delete(&item.key).await?;
        }
        let key = format!("{}{}", self.prefix, name);
        self.store.delete(&key).await?;
        for registry in [&self.topics, &self.unservable] {
            registry
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        Ok(())
    }
}

/// Allocates durable, unique producer ids in blocks, from `<prefix>/producer-id-block`.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    store: ShimStore,
    key: String,
    block: tokio::sync::Mutex<(i64, i64)>,
}

/// Producer ids reserved per metadata write.
const PRODUCER_ID_BLOCK: i64 = 1000;

impl ProducerIds {
    /// An allocator whose high mark is `<root>/producer-id-block`.
    pub(crate) fn new(store: ShimStore) -> ProducerIds {
        ProducerIds {
            key: format!("{}/producer-id-block", store.root()),
            store,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// A producer id never handed out before, by this process or an earlier one.
    pub(crate) async fn next(&self) -> Result<i64, ShimError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            *block = self.reserve().await?;
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Whether `id` was ever handed out (by the persisted high mark).
    pub(crate) async fn was_issued(&self, id: i64) -> Result<bool, ShimError> {
        let high = match self.store.get(&self.key).await? {
            Some(item) => parse_i64(&item.value, &self.key)?,
            None => 0,
        };
        Ok(id >= 0 && id < high)
    }

    async fn reserve(&self) -> Result<(i64, i64), ShimError> {
        for _ in 0..16 {
            let (start, revision) = match self.store.get(&self.key).await? {
                Some(item) => (parse_i64(&item.value, &self.key)?, Some(item.revision)),
                None => (0, None),
            };
            let end = start + PRODUCER_ID_BLOCK;
            if self
                .store
                .replace(&self.key, revision, Bytes::from(end.to_string()))
                .await?
            {
                return Ok((start, end));
            }
        }
        Err(ShimError::Corrupt {
            what: self.key.clone(),
            detail: "the producer id block kept changing concurrently".into(),
        })
    }
}

fn parse_i64(bytes: &[u8], key: &str) -> Result<i64, ShimError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ShimError::Corrupt {
            what: key.to_string(),
            detail: "not an integer".into(),
        })
}

/// The cluster id: generated once and stored under `<root>/cluster-id`.
pub async fn cluster_id(store: &ShimStore) -> Result<String, ShimError> {
    let key = format!("{}/cluster-id", store.root());
    if let Some(item) = store.get(&key).await? {
        return Ok(String::from_utf8_lossy(&item.value).into_owned());
    }
    // Kafka's form: 22 characters of URL-safe base64 of a UUID.
    let id = base64_uuid(uuid::Uuid::new_v4());
    if store.create(&key, Bytes::from(id.clone())).await? {
        return Ok(id);
    }
    match store.get(&key).await? {
        Some(item) => Ok(String::from_utf8_lossy(&item.value).into_owned()),
        None => Ok(id),
    }
}

fn base64_uuid(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = id.as_bytes();
    let mut out = String::with_capacity(22);
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_logs() {
        assert!(valid_topic_name("by-dev-rootcoord-dml_7"));
        assert!(valid_topic_name("a.b_c-D9"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("."));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name("a:b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
        assert_eq!(log_name("t", 3), "kafka:t:3");
    }

    #[test]
    fn configs_are_checked() {
        let ok: BTreeMap<String, String> = [("retention.ms", "1000"), ("cleanup.policy", "delete")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(validate_configs(&ok).is_ok());
        for (k, v) in [
            ("cleanup.policy", "compress"),
            ("cleanup.policy", ""),
            ("retention.ms", "soon"),
            ("no.such.key", "1"),
            ("compression.type", "brotli"),
        ] {
            let bad = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(validate_configs(&bad).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn cluster_ids_look_like_kafka_ones() {
        let id = base64_uuid(uuid::Uuid::new_v4());
        assert_eq!(id.len(), 22);
    }
}
