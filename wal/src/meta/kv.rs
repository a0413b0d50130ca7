//! The key-value contract the metadata layer is written against: etcd v3's data model.
//!
//! Every key carries `create_revision` (the store revision of its creation, 0 when absent),
//! `mod_revision` (of its last change), `version` (puts since creation) and an optional lease.
//! The store revision grows by one with every transaction that changes something. A
//! transaction compares any number of keys and then applies one list of operations or the other,
//! atomically. A lease expires `ttl` after its last keep-alive and takes its keys with it.
//!
//! Two implementations keep this contract exactly: [`super::etcd::EtcdKv`] (a real etcd, the
//! Go project's keys and values, shared with Go clients) and [`super::embedded::EmbeddedKv`]
//! (one process, durable on local disk). The Woodpecker rules ([`super::MetadataProvider`]) are
//! written once on top.
//!
//! Comparison rules follow etcd: on a missing key, revisions and version compare as 0, and a
//! value comparison is always false.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// A store revision.
pub type Revision = i64;
/// A lease id (never 0; 0 means "no lease").
pub(crate) type LeaseId = i64;

/// One key with its value and bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the key's creation.
    pub create_revision: Revision,
    /// Revision of the key's last change.
    pub mod_revision: Revision,
    /// Number of puts since creation (1 after the first).
    pub version: i64,
    /// Lease attached to the key, 0 for none.
    pub lease: LeaseId,
}

/// How a comparison compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

impl CompareOp {
    /// Applies the comparison to an ordering of (actual, expected).
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CompareOp::Equal => ordering == Equal,
            CompareOp::NotEqual => ordering != Equal,
            CompareOp::Greater => ordering == Greater,
            CompareOp::Less => ordering == Less,
        }
    }
}

/// What a comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value's bytes (always false on a missing key).
    Value(Bytes),
    /// `create_revision` (0 when missing).
    CreateRevision(Revision),
    /// `mod_revision` (0 when missing).
    ModRevision(Revision),
    /// `version` (0 when missing).
    Version(i64),
}

/// One comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the value it is compared with.
    pub target: CompareTarget,
}

impl Compare {
    /// `create_revision(key) op revision`.
    pub fn create_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(revision),
        }
    }

    /// `mod_revision(key) op revision`.
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: Revision) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// `value(key) op value`.
    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// `version(key) op version`.
    pub fn version(key: impl Into<String>, op: CompareOp, version: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }

    /// Whether the comparison holds for `kv` (`None`: the key is missing), by etcd's rules.
    pub fn evaluate(&self, kv: Option<&KeyValue>) -> bool {
        match (&self.target, kv) {
            (CompareTarget::Value(_), None) => false,
            (CompareTarget::Value(expected), Some(kv)) => {
                self.op.holds(kv.value.as_ref().cmp(expected.as_ref()))
            }
            (CompareTarget::CreateRevision(r), kv) => {
                self.op.holds(kv.map_or(0, |kv| kv.create_revision).cmp(r))
            }
            (CompareTarget::ModRevision(r), kv) => {
                self.op.holds(kv.map_or(0, |kv| kv.mod_revision).cmp(r))
            }
            (CompareTarget::Version(v), kv) => self.op.holds(kv.map_or(0, |kv| kv.version).cmp(v)),
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Sets a key, optionally attached to a lease.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// The lease, if any.
        lease: Option<LeaseId>,
    },
    /// Reads one key.
    Get {
        /// The key.
        key: String,
    },
    /// Reads every key starting with `prefix`, in key order.
    GetPrefix {
        /// The prefix.
        prefix: String,
    },
    /// Deletes one key.
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key starting with `prefix`.
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

impl TxnOp {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
}

/// The result of one [`TxnOp`], in the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// A put was applied.
    Put,
    /// The keys read (empty when missing), in key order.
    Get(Vec<KeyValue>),
    /// How many keys were deleted.
    Delete(u64),
}

/// A transaction: if every comparison holds, apply `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Comparisons, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations applied when they do.
    pub success: Vec<TxnOp>,
    /// Operations applied when they do not.
    pub failure: Vec<TxnOp>,
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the comparisons held (and `success` was applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One result per applied operation.
    pub results: Vec<TxnOpResult>,
}

/// Failures of a key-value store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The store could not be reached or did not answer in time.
    #[error("metadata store at {endpoint} unavailable: {detail}")]
    Unavailable {
        /// Where the store is (`http://127.0.0.1:2379`, a directory).
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The lease does not exist (expired or revoked).
    #[error("lease {lease:x} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease.
        lease: LeaseId,
    },
    /// The request was refused (too many operations, a key too large, bad credentials...).
    #[error("metadata store at {endpoint} refused the request: {detail}")]
    Rejected {
        /// Where the store is.
        endpoint: String,
        /// What it said.
        detail: String,
    },
    /// The store's own data is damaged.
    #[error("metadata store at {endpoint} is damaged: {detail}")]
    Corrupt {
        /// Where the store is.
        endpoint: String,
        /// What is wrong.
        detail: String,
    },
}

/// A transactional key-value store with revisions and leases: etcd's model.
#[async_trait]
pub trait Kv: Send + Sync + Debug + 'static {
    /// Where the store is, for messages.
    fn endpoint(&self) -> String;

    /// One key, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Every key starting with `prefix`, in key order, and the store revision of the read.
    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError>;

    /// Whether any key starts with `prefix`. Stores that can answer without reading every such
    /// key (etcd: a keys-only read limited to one) override this.
    async fn has_prefix(&self, prefix: &str) -> Result<bool, KvError> {
        Ok(!self.get_prefix(prefix).await?.0.is_empty())
    }

    /// Sets a key; returns the new store revision.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError>;

    /// Deletes a key; returns how many keys were deleted (0 or 1).
    async fn delete(&self, key: &str) -> Result<u64, KvError>;

    /// Runs a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, KvError>;

    /// Grants a lease that expires `ttl` after its last keep-alive. A store may round `ttl` up
    /// to its granularity (etcd: whole seconds, at least one); [`Kv::lease_keep_alive`] returns
    /// the TTL in force.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError>;

    /// Renews a lease; returns its TTL, or [`KvError::LeaseNotFound`] when it is gone.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, KvError>;

    /// Revokes a lease and deletes its keys. Revoking a missing lease is not an error.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), KvError>;
}
