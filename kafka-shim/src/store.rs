//! The shim's durable state: everything the Kafka front door keeps lives in the engine's
//! metadata store (etcd or the embedded one) under `<prefix>/kafka/`, and this is the only
//! module that talks to that store. Topics, producer ids, committed group offsets,
//! transactions, ACLs and SCRAM credentials name their keys below [`ShimStore::root`] and
//! write through the operations here: plain puts and deletes, create-if-absent,
//! compare-and-swap on a record's revision, atomic multi-key writes, and JSON records whose
//! decoding failures are [`ShimError::Corrupt`] naming the key.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wal::meta::kv::{Compare, CompareOp, Kv, Txn, TxnOp};

use crate::error::ShimError;

/// A stored value and the revision of its last write (for [`ShimStore::replace`]).
#[derive(Debug, Clone)]
pub struct Record {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The revision of the value's last write.
    pub revision: i64,
}

impl Record {
    /// The value decoded from JSON; `what` names it in the error.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, ShimError> {
        serde_json::from_slice(&self.value).map_err(|e| ShimError::Corrupt {
            what: format!("{what} {}", self.key),
            detail: e.to_string(),
        })
    }
}

/// One write of an atomic [`ShimStore::write_all`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Sets a key.
    Put(String, Bytes),
    /// Removes a key.
    Delete(String),
    /// Removes every key starting with a prefix.
    DeletePrefix(String),
}

/// The shim's handle on the metadata store (cheap to clone).
#[derive(Clone)]
pub struct ShimStore {
    kv: Arc<dyn Kv>,
    root: String,
}

impl std::fmt::Debug for ShimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimStore")
            .field("kv", &self.kv)
            .field("root", &self.root)
            .finish()
    }
}

/// A value as JSON; `what` names it in the error.
pub fn to_json<T: Serialize>(value: &T, what: &str) -> Result<Bytes, ShimError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ShimError::Corrupt {
            what: what.to_string(),
            detail: e.to_string(),
        })
}

impl ShimStore {
    /// The shim's state in `kv`, under `root` (`<prefix>/kafka`).
    pub fn new(kv: Arc<dyn Kv>, root: &str) -> ShimStore {
        ShimStore {
            kv,
            root: root.trim_end_matches('/').to_string(),
        }
    }

    /// The key every key of the shim starts with (`<prefix>/kafka`, no trailing slash).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The metadata store itself, for diagnostics.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    /// The record at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Record>, ShimError> {
        Ok(self.kv.get(key).await?.map(|kv| Record {
            key: kv.key,
            value: kv.value,
            revision: kv.mod_revision,
        }))
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Record>, ShimError> {
        let (items, _) = self.kv.get_prefix(prefix).await?;
        Ok(items
            .into_iter()
            .map(|kv| Record {
                key: kv.key,
                value: kv.value,
                revision: kv.mod_revision,
            })
            .collect())
    }

    /// Sets `key`.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<(), ShimError> {
        self.kv.put(key, value, None).await?;
        Ok(())
    }

    /// Sets `key` when it does not exist; `false` when it does (nothing written).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<bool, ShimError> {
        let txn = Txn {
            compares: vec![Compare::create_revision(key, CompareOp::Equal, 0)],
            success: vec![TxnOp::put(key, value)],
            failure: vec![],
        };
        Ok(self.kv.txn(txn).await?.succeeded)
    }

    /// Sets `key` if its last write is still `revision` (`None`: if it does not exist);
    /// `false` when another write came first (nothing written).
    pub async fn replace(
        &self,
        key: &str,
        revision: Option<i64>,
        value: Bytes,
    ) -> Result<bool, ShimError> {
        let compare = match revision {
            Some(r) => Compare::mod_revision(key, CompareOp::Equal, r),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let txn = Txn {
            compares: vec![compare],
            success: vec![TxnOp::put(key, value)],
            failure: vec![],
        };
        Ok(self.kv.txn(txn).await?.succeeded)
    }

    /// Removes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ShimError> {
        Ok(self.kv.delete(key).await? > 0)
    }

    /// Removes `key` if its last write is still `revision`; `false` when another write
    /// came first (nothing removed).
    pub async fn delete_at(&self, key: &str, revision: i64) -> Result<bool, ShimError> {
        let txn = Txn {
            compares: vec![Compare::mod_revision(key, CompareOp::Equal, revision)],
            success: vec![TxnOp::Delete {
                key: key.to_string(),
            }],
            failure: vec![],
        };
        Ok(self.kv.txn(txn).await?.succeeded)
    }

    /// Applies every write or none.
    pub async fn write_all(&self, writes: Vec<Write>) -> Result<(), ShimError> {
        if writes.is_empty() {
            return Ok(());
        }
        let success = writes
            .into_iter()
            .map(|w| match w {
                Write::Put(key, value) => TxnOp::put(key, value),
                Write::Delete(key) => TxnOp::Delete { key },
                Write::DeletePrefix(prefix) => TxnOp::DeletePrefix { prefix },
            })
            .collect();
        self.kv
            .txn(Txn {
                compares: vec![],
                success,
                failure: vec![],
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal::clock::SystemClock;
    use wal::meta::embedded::EmbeddedKv;

    #[tokio::test]
    async fn records_are_created_once_swapped_by_revision_and_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(
            EmbeddedKv::open(dir.path(), SystemClock::shared())
                .await
                .unwrap(),
        );
        let store = ShimStore::new(kv, "p/kafka/");
        assert_eq!(store.root(), "p/kafka");
        let key = format!("{}/a", store.root());
        assert!(store.create(&key, Bytes::from("1")).await.unwrap());
        assert!(!store.create(&key, Bytes::from("2")).await.unwrap());
        let first = store.get(&key).await.unwrap().unwrap();
        assert_eq!(first.value, Bytes::from("1"));
        assert!(
            store
                .replace(&key, Some(first.revision), Bytes::from("3"))
                .await
                .unwrap()
        );
        // A stale revision loses.
        assert!(
            !store
                .replace(&key, Some(first.revision), Bytes::from("4"))
                .await
                .unwrap()
        );
        assert!(!store.replace(&key, None, Bytes::from("5")).await.unwrap());
        store
            .write_all(vec![
                Write::Put(format!("{}/b", store.root()), Bytes::from("[1]")),
                Write::Delete(key.clone()),
            ])
            .await
            .unwrap();
        let all = store.list("p/kafka/").await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].json::<Vec<i32>>("list").unwrap(), vec![1]);
        assert!(matches!(
            all[0].json::<String>("a string"),
            Err(ShimError::Corrupt { .. })
        ));
        assert!(!store.delete(&key).await.unwrap());
        // A delete by revision loses to a newer write.
        let b = format!("{}/b", store.root());
        let at = store.get(&b).await.unwrap().unwrap().revision;
        store.put(&b, Bytes::from("[2]")).await.unwrap();
        assert!(!store.delete_at(&b, at).await.unwrap());
        let now = store.get(&b).await.unwrap().unwrap().revision;
        assert!(store.delete_at(&b, now).await.unwrap());
        assert!(store.get(&b).await.unwrap().is_none());
    }
}
