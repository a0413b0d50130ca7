//! The durable committed offsets of every group, in the metadata key-value store.
//!
//! Each committed offset is one key, `{prefix}/groups/{group}/offsets/{topic}/{partition}`
//! (names percent-encoded by [`encode_name`], so that no name adds a path level or collides
//! with another), holding a small JSON value. Writes go in transactions of at most
//! [`MAX_OPS_PER_TXN`] operations.

use serde::{Deserialize, Serialize};

use super::GroupError;
use crate::store::{ShimStore, Write, to_json};

/// Most operations put in one key-value transaction (the embedded store's and etcd's limit).
const MAX_OPS_PER_TXN: usize = 128;

/// One committed offset, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredOffset {
    pub(super) offset: i64,
    pub(super) leader_epoch: i32,
    pub(super) metadata: Option<String>,
    pub(super) commit_timestamp_ms: i64,
}

/// One stored offset as loaded: group, topic, partition, offset.
pub(super) type LoadedOffset = (String, String, i32, StoredOffset);

/// The offsets' keys and their reads and writes.
#[derive(Debug)]
pub(super) struct OffsetStore {
    store: ShimStore,
    /// Key prefix without a trailing '/' (the shim store's root).
    prefix: String,
}

impl OffsetStore {
    /// The offsets under the shim store's root.
    pub(super) fn new(store: ShimStore) -> Self {
        let prefix = store.root().to_owned();
        OffsetStore { store, prefix }
    }

    /// The shim store, for the coordinator's Debug output.
    pub(super) fn store(&self) -> &ShimStore {
        &self.store
    }

    fn groups_key(&self) -> String {
        format!("{}/groups/", self.prefix)
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}/groups/{}/", self.prefix, encode_name(group))
    }

    fn topic_key(&self, group: &str, topic: &str) -> String {
        format!(
            "{}/groups/{}/offsets/{}/",
            self.prefix,
            encode_name(group),
            encode_name(topic)
        )
    }

    fn offset_key(&self, group: &str, topic: &str, partition: i32) -> String {
        format!("{}{partition}", self.topic_key(group, topic))
    }

    /// Every stored offset. Unexpected keys are skipped (with a warning); a damaged key or
    /// value is an error.
    pub(super) async fn load(&self) -> Result<Vec<LoadedOffset>, GroupError> {
        let root = self.groups_key();
        let kvs = self.store.list(&root).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for entry in kvs {
            let Some(rest) = entry.key.strip_prefix(&root) else {
                continue;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            let [group, "offsets", topic, partition] = parts.as_slice() else {
                tracing::warn!(key = %entry.key, "ignoring unexpected key under the groups prefix");
                continue;
            };
            let corrupt = |detail: String| GroupError::Corrupt {
                key: entry.key.clone(),
                detail,
            };
            let partition: i32 = partition
                .parse()
                .map_err(|e| corrupt(format!("partition: {e}")))?;
            let group = decode_name(group).ok_or_else(|| corrupt("group name".into()))?;
            let topic = decode_name(topic).ok_or_else(|| corrupt("topic name".into()))?;
            let offset: StoredOffset =
                serde_json::from_slice(&entry.value).map_err(|e| corrupt(e.to_string()))?;
            out.push((group, topic, partition, offset));
        }
        Ok(out)
    }

    /// Splits writes into transactions the store accepts.
    pub(super) fn chunks<T>(items: &[T]) -> std::slice::Chunks<'_, T> {
        items.chunks(MAX_OPS_PER_TXN)
    }

    /// Stores one transaction's worth (at most [`MAX_OPS_PER_TXN`], see [`Self::chunks`]) of
    /// a group's offsets.
    pub(super) async fn put(
        &self,
        group: &str,
        offsets: &[((String, i32), StoredOffset)],
    ) -> Result<(), GroupError> {
        let mut writes = Vec::with_capacity(offsets.len());
        for ((topic, partition), offset) in offsets {
            let key = self.offset_key(group, topic, *partition);
            let value = to_json(offset, &key)?;
            writes.push(Write::Put(key, value));
        }
        self.store.write_all(writes).await?;
        Ok(())
    }

    /// Deletes single offsets, `(group, topic, partition)`, in as many transactions as needed.
    pub(super) async fn delete_offsets(
        &self,
        doomed: &[(String, String, i32)],
    ) -> Result<(), GroupError> {
        for chunk in doomed.chunks(MAX_OPS_PER_TXN) {
            let writes = chunk
                .iter()
                .map(|(group, topic, partition)| {
                    Write::Delete(self.offset_key(group, topic, *partition))
                })
                .collect();
            self.store.write_all(writes).await?;
        }
        Ok(())
    }

    /// Deletes every offset of a group.
    pub(super) async fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        self.store
            .write_all(vec![Write::DeletePrefix(self.group_key(group))])
            .await?;
        Ok(())
    }

    /// Deletes the offsets of one topic in each of `groups`.
    pub(super) async fn delete_topic(
        &self,
        groups: &[String],
        topic: &str,
    ) -> Result<(), GroupError> {
        for chunk in groups.chunks(MAX_OPS_PER_TXN) {
            let writes = chunk
                .iter()
                .map(|group| Write::DeletePrefix(self.topic_key(group, topic)))
                .collect();
            self.store.write_all(writes).await?;
        }
        Ok(())
    }
}

/// Encodes a group or topic name for a key: `%` and `/` (and control characters) become
/// `%XX`, so names never collide and never add a path level.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '%' || c == '/' || c.is_ascii_control() {
            // ASCII only, so one byte.
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`encode_name`]; `None` on a malformed escape.
pub fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_key_encoding() {
        for name in ["plain", "a/b", "100%", "g.1-x_y", "%2F", "", "ünï/cödé%"] {
            let encoded = encode_name(name);
            assert!(!encoded.contains('/'));
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        assert_eq!(decode_name("%zz"), None);
        assert_eq!(decode_name("%+1"), None);
        assert_eq!(decode_name("%4"), None);
    }
}
