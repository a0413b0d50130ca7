//! Metadata errors, with the Go project's wire codes (`werr`) so callers and remote peers can
//! branch on them.

use super::kv::KvError;

/// Result alias for metadata operations.
pub type MetaResult<T> = Result<T, MetaError>;

/// What went wrong with metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The store could not be reached or did not answer in time.
    #[error("metadata store at {endpoint} unavailable: {detail}")]
    Unavailable {
        /// Where the store is.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The store refused the request.
    #[error("metadata store refused the request: {0}")]
    Rejected(String),
    /// Some but not all of the initialisation keys exist.
    #[error("metadata under `{prefix}` is partly initialised: {detail}")]
    Init {
        /// The root prefix.
        prefix: String,
        /// Which keys are there and which are not.
        detail: String,
    },
    /// A stored value does not decode.
    #[error("metadata value at `{key}` is corrupt: {detail}")]
    CorruptValue {
        /// The key.
        key: String,
        /// Why it does not decode.
        detail: String,
    },
    /// The log does not exist.
    #[error("log `{log}` does not exist")]
    LogNotFound {
        /// The log name.
        log: String,
    },
    /// A log with this name exists.
    #[error("log `{log}` already exists")]
    LogAlreadyExists {
        /// The log name.
        log: String,
    },
    /// The name cannot be a log name.
    #[error("invalid log name `{log}`: it must be non-empty, without `/` or control characters")]
    InvalidLogName {
        /// The name.
        log: String,
    },
    /// A key that must exist does not.
    #[error("metadata key `{key}` does not exist")]
    KeyNotExists {
        /// The key.
        key: String,
    },
    /// A key that must not exist does.
    #[error("metadata key `{key}` already exists")]
    KeyAlreadyExists {
        /// The key.
        key: String,
    },
    /// The segment's metadata already exists: another writer created it first.
    #[error("segment {segment} of log `{log}` already exists")]
    SegmentAlreadyExists {
        /// The log name.
        log: String,
        /// The segment id.
        segment: i64,
    },
    /// A compare-and-swap lost: the value changed since it was read.
    #[error("metadata at `{key}` changed since revision {expected}")]
    RevisionInvalid {
        /// The key.
        key: String,
        /// The revision the caller read.
        expected: i64,
    },
    /// The log-id generator moved under us too often.
    #[error("creating log `{log}` kept losing the id generator race")]
    CreateLogTxn {
        /// The log name.
        log: String,
    },
    /// Woodpecker keys exist under both the legacy and the configured root prefix, and
    /// `woodpecker.meta.prefixMode` is `auto`: choosing either would hide the other's logs.
    #[error(
        "the metadata store holds Woodpecker keys under two root prefixes: `{legacy}` ({}) and \
         `{configured}` ({}); refusing to pick one, which would hide the other's logs. Set \
         woodpecker.meta.prefixMode to `legacy` to use `{legacy}` (the fixed prefix of Go \
         Woodpecker up to v0.1.29 and Milvus 2.6) or to `configured` to use `{configured}` \
         (etcd.rootPath/woodpecker.meta.prefix, as Go Woodpecker v0.1.30 and later on a fresh \
         store); `woodpecker meta prefix` shows both",
        super::prefix::name_list(legacy_logs, 5),
        super::prefix::name_list(configured_logs, 5)
    )]
    PrefixConflict {
        /// The legacy prefix (`woodpecker`).
        legacy: String,
        /// The logs under it.
        legacy_logs: Vec<String>,
        /// `<etcd.rootPath>/<woodpecker.meta.prefix>`.
        configured: String,
        /// The logs under it.
        configured_logs: Vec<String>,
    },
    /// Another writer holds the log's writer lock.
    #[error("log `{log}` has a writer already (lock held by {holder})")]
    LockHeld {
        /// The log name.
        log: String,
        /// The key of the holder's lock entry.
        holder: String,
    },
    /// The writer lock's session ended: the writer must stop and reopen.
    #[error("writer lock of log `{log}` lost: {detail}")]
    LockLost {
        /// The log name.
        log: String,
        /// Why.
        detail: String,
    },
}

impl MetaError {
    /// The Go project's error code for this error.
    pub fn code(&self) -> i32 {
        match self {
            MetaError::Unavailable { .. } => 3001,
            MetaError::Rejected(_) | MetaError::KeyAlreadyExists { .. } => 3002,
            MetaError::Init { .. } | MetaError::PrefixConflict { .. } => 3000,
            MetaError::CorruptValue { .. } => 3004,
            MetaError::LogNotFound { .. } | MetaError::KeyNotExists { .. } => 3012,
            MetaError::LogAlreadyExists { .. } => 3013,
            MetaError::InvalidLogName { .. } => 8005,
            MetaError::SegmentAlreadyExists { .. } => 3014,
            MetaError::RevisionInvalid { .. } => 3011,
            MetaError::CreateLogTxn { .. } => 3006,
            MetaError::LockHeld { .. } | MetaError::LockLost { .. } => 1405,
        }
    }

    /// Whether repeating the call may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            MetaError::Unavailable { .. } | MetaError::CreateLogTxn { .. }
        )
    }
}

impl From<KvError> for MetaError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Unavailable { endpoint, detail } => {
                MetaError::Unavailable { endpoint, detail }
            }
            KvError::Corrupt { endpoint, detail } => MetaError::CorruptValue {
                key: endpoint,
                detail,
            },
            other => MetaError::Rejected(other.to_string()),
        }
    }
}
