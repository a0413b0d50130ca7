//! The metadata provider: every operation the engine needs, each with the compare-and-swap guard
//! of the Go project (spec section 4), written once over the [`Kv`] contract.
//!
//! [`KvMetadata`] over an [`super::etcd::EtcdKv`] shares logs with Go Woodpecker clients on the
//! same etcd; over an [`super::embedded::EmbeddedKv`] it is the zero-dependency default.
//!
//! Guards, and what losing them means:
//!
//! | operation | guard | on loss |
//! |---|---|---|
//! | create log | `value(logidgen) == read` and the log key absent | retry with the new id, or "already exists" |
//! | update log meta | `mod_revision(log) == read` | [`MetaError::RevisionInvalid`] |
//! | store segment | log key present, segment key absent | [`MetaError::SegmentAlreadyExists`]: another writer took over |
//! | update segment | `mod_revision(segment) == read` | [`MetaError::RevisionInvalid`]: takeover |
//! | delete segment | segment key present | [`MetaError::KeyNotExists`] |
//! | condition-write decision | key absent | the stored decision wins |
//! | delete log, phase 2 | `mod_revision(log) == read` | already deleted |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use proto::meta::{
    LogMeta, ReaderTempInfo, SegmentCleanupStatus, SegmentCompactedNotifyStatus, SegmentMetadata,
    Version,
};

use super::error::{MetaError, MetaResult};
use super::keys::{Keys, log_name_of, valid_log_name};
use super::kv::{Compare, CompareOp, KeyValue, Kv, Revision, Txn, TxnOp, TxnOpResult};
use super::lock::{LockOptions, WriterLock};
use super::prefix::{PrefixCandidates, PrefixChoice, PrefixMode, choose_prefix, name_list};
use super::readers::ReaderRegistration;
use crate::clock::ClockRef;

/// A value and the `mod_revision` it was read at (the token for a later compare-and-swap).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its key's `mod_revision` when read.
    pub revision: Revision,
}

/// Defaults a new log's metadata carries (reserved fields the Go project writes).
pub const DEFAULT_ROLL_TIME_SECONDS: i64 = 60;
/// See [`DEFAULT_ROLL_TIME_SECONDS`].
pub const DEFAULT_ROLL_SIZE_BYTES: i64 = 256 * 1024 * 1024;
/// See [`DEFAULT_ROLL_TIME_SECONDS`].
pub const DEFAULT_COMPACTION_BUFFER_BYTES: i64 = 128 * 1024 * 1024;
/// See [`DEFAULT_ROLL_TIME_SECONDS`].
pub const DEFAULT_MAX_COMPACTION_FILES: i64 = 600;
/// Operations per transaction when parking a deleted log (etcd allows 128 by default).
const PARK_BATCH: usize = 120;
/// Attempts at the id-generator race before giving up with [`MetaError::CreateLogTxn`].
const CREATE_LOG_ATTEMPTS: usize = 64;

/// Everything the engine asks of metadata.
#[async_trait]
pub trait MetadataProvider: Send + Sync + fmt::Debug {
    /// The root prefix in use.
    fn prefix(&self) -> &str;

    /// Writes `instance`, `version`, `logidgen` and `quorumidgen` when none exists; fails with
    /// [`MetaError::Init`] when only some do.
    async fn init_if_necessary(&self) -> MetaResult<()>;

    /// Creates a log with the next id of the generator.
    async fn create_log(&self, name: &str) -> MetaResult<LogMeta>;
    /// Whether the log exists.
    async fn log_exists(&self, name: &str) -> MetaResult<bool>;
    /// The log's metadata.
    async fn get_log_meta(&self, name: &str) -> MetaResult<Versioned<LogMeta>>;
    /// Every log name, sorted.
    async fn list_logs(&self) -> MetaResult<Vec<String>>;
    /// Log names starting with `prefix`, sorted.
    async fn list_logs_with_prefix(&self, prefix: &str) -> MetaResult<Vec<String>>;
    /// Replaces the log's metadata if it is still at `revision`; returns the new revision.
    async fn update_log_meta(
        &self,
        name: &str,
        meta: &LogMeta,
        revision: Revision,
    ) -> MetaResult<Revision>;

    /// Stores a new segment's metadata; returns its revision.
    async fn store_segment_metadata(
        &self,
        log: &str,
        segment: &SegmentMetadata,
    ) -> MetaResult<Revision>;
    /// One segment's metadata.
    async fn get_segment_metadata(
        &self,
        log: &str,
        segment_id: i64,
    ) -> MetaResult<Versioned<SegmentMetadata>>;
    /// Every segment of the log by id.
    async fn get_all_segment_metadata(
        &self,
        log: &str,
    ) -> MetaResult<BTreeMap<i64, Versioned<SegmentMetadata>>>;
    /// Replaces a segment's metadata if it is still at `revision`; returns the new revision.
    async fn update_segment_metadata(
        &self,
        log: &str,
        segment: &SegmentMetadata,
        revision: Revision,
    ) -> MetaResult<Revision>;
    /// Deletes a segment's metadata.
    async fn delete_segment_metadata(&self, log: &str, segment_id: i64) -> MetaResult<()>;
    /// Deletes a segment's metadata if it is still at `revision`: what a writer does to give
    /// up a segment it created and never got an entry into. [`MetaError::RevisionInvalid`]
    /// when it changed (another writer fenced and completed it), [`MetaError::KeyNotExists`]
    /// when it is gone.
    async fn delete_segment_metadata_at(
        &self,
        log: &str,
        segment_id: i64,
        revision: Revision,
    ) -> MetaResult<()>;

    /// Records a reader's position under a lease that is kept alive until the registration is
    /// closed or dropped.
    async fn register_reader(
        &self,
        log_id: i64,
        reader_name: &str,
        open_segment_id: i64,
        open_entry_id: i64,
    ) -> MetaResult<ReaderRegistration>;
    /// Every live reader of the log.
    async fn get_reader_temp_infos(&self, log_id: i64) -> MetaResult<Vec<ReaderTempInfo>>;

    /// Creates a cleanup record; [`MetaError::KeyAlreadyExists`] if there is one.
    async fn create_segment_cleanup_status(&self, status: &SegmentCleanupStatus) -> MetaResult<()>;
    /// Updates an existing cleanup record; [`MetaError::KeyNotExists`] if there is none.
    async fn update_segment_cleanup_status(&self, status: &SegmentCleanupStatus) -> MetaResult<()>;
    /// A cleanup record.
    async fn get_segment_cleanup_status(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> MetaResult<Option<SegmentCleanupStatus>>;
    /// Every cleanup record of a log.
    async fn list_segment_cleanup_status(
        &self,
        log_id: i64,
    ) -> MetaResult<Vec<SegmentCleanupStatus>>;
    /// Deletes a cleanup record (missing is fine).
    async fn delete_segment_cleanup_status(&self, log_id: i64, segment_id: i64) -> MetaResult<()>;

    /// Creates a compacted-notify record unless one exists; returns whether it created it.
    async fn create_compacted_notify_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
    ) -> MetaResult<bool>;
    /// Replaces a compacted-notify record if it is still at `revision`.
    async fn update_compacted_notify_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
        revision: Revision,
    ) -> MetaResult<Revision>;
    /// A compacted-notify record.
    async fn get_compacted_notify_status(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> MetaResult<Option<Versioned<SegmentCompactedNotifyStatus>>>;
    /// Deletes a compacted-notify record (missing is fine).
    async fn delete_compacted_notify_status(&self, log_id: i64, segment_id: i64) -> MetaResult<()>;

    /// Stores `enabled` as the cluster's condition-write decision unless one is stored; returns
    /// the decision in force.
    async fn init_condition_write(&self, enabled: bool) -> MetaResult<bool>;
    /// The stored condition-write decision, if any.
    async fn get_condition_write(&self) -> MetaResult<Option<bool>>;
    /// Stores "true" (after `enable` mode probed the store successfully).
    async fn store_condition_write_enabled(&self) -> MetaResult<()>;

    /// Takes the log's writer lock without waiting (etcd mutex protocol, session lease).
    async fn acquire_log_writer_lock(
        &self,
        log: &str,
        options: LockOptions,
    ) -> MetaResult<WriterLock>;

    /// Deletes the log's metadata: parks copies under `logs-deleted/` (unless `force`), then
    /// removes the log, its segments, lock, readers and status records in one guarded step.
    async fn delete_log_metadata(&self, name: &str, force: bool) -> MetaResult<()>;
}

/// [`MetadataProvider`] over any [`Kv`].
#[derive(Clone)]
pub struct KvMetadata {
    kv: Arc<dyn Kv>,
    keys: Keys,
    clock: ClockRef,
    choice: Option<PrefixChoice>,
}

impl fmt::Debug for KvMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvMetadata")
            .field("store", &self.kv.endpoint())
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

fn decode<T: Message + Default>(kv: &KeyValue) -> MetaResult<T> {
    T::decode(kv.value.as_ref()).map_err(|e| MetaError::CorruptValue {
        key: kv.key.clone(),
        detail: e.to_string(),
    })
}

fn encode<T: Message>(value: &T) -> Bytes {
    Bytes::from(value.encode_to_vec())
}

fn first_get(results: &[TxnOpResult], index: usize) -> Option<&KeyValue> {
    match results.get(index) {
        Some(TxnOpResult::Get(kvs)) => kvs.first(),
        _ => None,
    }
}

impl KvMetadata {
    /// A provider under an explicit root prefix.
    pub fn with_prefix(kv: Arc<dyn Kv>, prefix: &str, clock: ClockRef) -> Self {
        KvMetadata {
            kv,
            keys: Keys::new(prefix),
            clock,
            choice: None,
        }
    }

    /// A provider under the prefix `mode` chooses between the legacy `woodpecker` and
    /// `<etcd.rootPath>/<woodpecker.meta.prefix>` ([`super::prefix`]). The choice is logged
    /// (a warning when the other prefix holds logs this provider will not see) and kept
    /// ([`KvMetadata::prefix_choice`]).
    ///
    /// Fails with [`MetaError::PrefixConflict`] in `auto` mode when both prefixes hold keys.
    pub async fn open(
        kv: Arc<dyn Kv>,
        etcd_root: &str,
        meta_prefix: &str,
        mode: PrefixMode,
        clock: ClockRef,
    ) -> MetaResult<Self> {
        let candidates = PrefixCandidates::new(etcd_root, meta_prefix);
        let choice = choose_prefix(kv.as_ref(), mode, &candidates, false).await?;
        tracing::info!(
            store = %kv.endpoint(),
            prefix = %choice.prefix,
            mode = %choice.mode,
            "metadata keys under `{}/`: {}",
            choice.prefix,
            choice.reason
        );
        if let Some(other) = choice.shadowed() {
            tracing::warn!(
                store = %kv.endpoint(),
                prefix = %choice.prefix,
                "metadata keys also exist under `{}/` ({}), which this process does not see: \
                 woodpecker.meta.prefixMode is `{}`; set it to `{}` to use them instead",
                other.prefix,
                name_list(other.logs.as_deref().unwrap_or_default(), 10),
                choice.mode,
                if other.prefix == candidates.legacy { "legacy" } else { "configured" }
            );
        }
        let mut provider = Self::with_prefix(kv, &choice.prefix, clock);
        provider.choice = Some(choice);
        Ok(provider)
    }

    /// How the prefix was chosen, when [`KvMetadata::open`] chose it.
    pub fn prefix_choice(&self) -> Option<&PrefixChoice> {
        self.choice.as_ref()
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The store under the provider.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    async fn txn(&self, txn: Txn) -> MetaResult<super::kv::TxnResult> {
        Ok(self.kv.txn(txn).await?)
    }

    async fn get_decoded<T: Message + Default>(
        &self,
        key: &str,
    ) -> MetaResult<Option<Versioned<T>>> {
        match self.kv.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(&kv)?,
                revision: kv.mod_revision,
            })),
        }
    }

    async fn list_decoded<T: Message + Default>(&self, prefix: &str) -> MetaResult<Vec<T>> {
        let (kvs, _) = self.kv.get_prefix(prefix).await?;
        kvs.iter().map(decode).collect()
    }

    /// A guarded put: if `key` is still at `revision`, write `value`.
    async fn cas_put(&self, key: &str, value: Bytes, revision: Revision) -> MetaResult<Revision> {
        let out = self
            .txn(Txn {
                compares: vec![Compare::mod_revision(key, CompareOp::Equal, revision)],
                success: vec![TxnOp::put(key, value)],
                failure: vec![TxnOp::Get {
                    key: key.to_string(),
                }],
            })
            .await?;
        if out.succeeded {
            Ok(out.revision)
        } else if first_get(&out.results, 0).is_none() {
            Err(MetaError::KeyNotExists {
                key: key.to_string(),
            })
        } else {
            Err(MetaError::RevisionInvalid {
                key: key.to_string(),
                expected: revision,
            })
        }
    }

    /// Writes `value` at `key` if the key's existence is `exists`; returns whether it did.
    async fn put_if(&self, key: &str, value: Bytes, exists: bool) -> MetaResult<bool> {
        let compare = if exists {
            Compare::create_revision(key, CompareOp::Greater, 0)
        } else {
            Compare::create_revision(key, CompareOp::Equal, 0)
        };
        let out = self
            .txn(Txn {
                compares: vec![compare],
                success: vec![TxnOp::put(key, value)],
                failure: vec![],
            })
            .await?;
        Ok(out.succeeded)
    }

    fn check_name(name: &str) -> MetaResult<()> {
        if valid_log_name(name) {
            Ok(())
        } else {
            Err(MetaError::InvalidLogName {
                log: name.to_string(),
            })
        }
    }

    fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }

    fn segment_id_of(&self, log: &str, kv: &KeyValue) -> MetaResult<i64> {
        let prefix = self.keys.segments_prefix(log);
        kv.key
            .strip_prefix(&prefix)
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or_else(|| MetaError::CorruptValue {
                key: kv.key.clone(),
                detail: "segment key does not end in a decimal segment id".into(),
            })
    }
}

#[async_trait]
impl MetadataProvider for KvMetadata {
    fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    async fn init_if_necessary(&self) -> MetaResult<()> {
        let keys = [
            self.keys.instance(),
            self.keys.version(),
            self.keys.log_id_gen(),
            self.keys.quorum_id_gen(),
        ];
        let values = [
            Bytes::from(uuid::Uuid::new_v4().to_string()),
            encode(&Version {
                major: 1,
                minor: 0,
                patch: 0,
            }),
            Bytes::from_static(b"0"),
            Bytes::from_static(b"0"),
        ];
        // All four absent: create all four at once. A racing initialiser makes this fail, and
        // then all four exist, which is fine.
        let out = self
            .txn(Txn {
                compares: keys
                    .iter()
                    .map(|k| Compare::create_revision(k, CompareOp::Equal, 0))
                    .collect(),
                success: keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| TxnOp::put(k, v))
                    .collect(),
                failure: keys.iter().map(|k| TxnOp::Get { key: k.clone() }).collect(),
            })
            .await?;
        if out.succeeded {
            return Ok(());
        }
        let missing: Vec<&String> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| first_get(&out.results, *i).is_none())
            .map(|(_, k)| k)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MetaError::Init {
                prefix: self.keys.prefix().to_string(),
                detail: format!("missing {missing:?} while the others exist"),
            })
        }
    }

    async fn create_log(&self, name: &str) -> MetaResult<LogMeta> {
        Self::check_name(name)?;
        let gen_key = self.keys.log_id_gen();
        let log_key = self.keys.log(name);
        for attempt in 0..CREATE_LOG_ATTEMPTS {
            let Some(generator) = self.kv.get(&gen_key).await? else {
                return Err(MetaError::KeyNotExists { key: gen_key });
            };
            let current: i64 = std::str::from_utf8(&generator.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| MetaError::CorruptValue {
                    key: gen_key.clone(),
                    detail: format!("not a decimal counter: {:?}", generator.value),
                })?;
            let now = self.clock.now_secs();
            let meta = LogMeta {
                log_id: current + 1,
                max_segment_roll_time_seconds: DEFAULT_ROLL_TIME_SECONDS,
                max_segment_roll_size_bytes: DEFAULT_ROLL_SIZE_BYTES,
                compaction_buffer_size_bytes: DEFAULT_COMPACTION_BUFFER_BYTES,
                max_compaction_file_count: DEFAULT_MAX_COMPACTION_FILES,
                creation_timestamp: now,
                modification_timestamp: now,
                truncated_segment_id: -1,
                truncated_entry_id: -1,
            };
            let out = self
                .txn(Txn {
                    compares: vec![
                        Compare::value(&gen_key, CompareOp::Equal, generator.value.clone()),
                        Compare::create_revision(&log_key, CompareOp::Equal, 0),
                    ],
                    success: vec![
                        TxnOp::put(&log_key, encode(&meta)),
                        TxnOp::put(&gen_key, Bytes::from((current + 1).to_string())),
                    ],
                    failure: vec![TxnOp::Get {
                        key: log_key.clone(),
                    }],
                })
                .await?;
            if out.succeeded {
                return Ok(meta);
            }
            if first_get(&out.results, 0).is_some() {
                return Err(MetaError::LogAlreadyExists {
                    log: name.to_string(),
                });
            }
            // Another log took the id. Somebody won, so reading again makes progress; no wait
            // is needed (and a wait on an injected clock could stall).
            tracing::debug!(log = name, attempt, "log id generator moved; retrying");
            tokio::task::yield_now().await;
        }
        Err(MetaError::CreateLogTxn {
            log: name.to_string(),
        })
    }

    async fn log_exists(&self, name: &str) -> MetaResult<bool> {
        Self::check_name(name)?;
        Ok(self.kv.get(&self.keys.log(name)).await?.is_some())
    }

    async fn get_log_meta(&self, name: &str) -> MetaResult<Versioned<LogMeta>> {
        Self::check_name(name)?;
        self.get_decoded(&self.keys.log(name))
            .await?
            .ok_or_else(|| MetaError::LogNotFound {
                log: name.to_string(),
            })
    }

    async fn list_logs(&self) -> MetaResult<Vec<String>> {
        self.list_logs_with_prefix("").await
    }

    async fn list_logs_with_prefix(&self, prefix: &str) -> MetaResult<Vec<String>> {
        let (kvs, _) = self
            .kv
            .get_prefix(&format!("{}{prefix}", self.keys.logs_prefix()))
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| log_name_of(&self.keys, &kv.key).map(str::to_string))
            .collect())
    }

    async fn update_log_meta(
        &self,
        name: &str,
        meta: &LogMeta,
        revision: Revision,
    ) -> MetaResult<Revision> {
        Self::check_name(name)?;
        match self
            .cas_put(&self.keys.log(name), encode(meta), revision)
            .await
        {
            Err(MetaError::KeyNotExists { .. }) => Err(MetaError::LogNotFound {
                log: name.to_string(),
            }),
            other => other,
        }
    }

    async fn store_segment_metadata(
        &self,
        log: &str,
        segment: &SegmentMetadata,
    ) -> MetaResult<Revision> {
        Self::check_name(log)?;
        let log_key = self.keys.log(log);
        let seg_key = self.keys.segment(log, segment.seg_no);
        let out = self
            .txn(Txn {
                compares: vec![
                    Compare::create_revision(&log_key, CompareOp::NotEqual, 0),
                    Compare::create_revision(&seg_key, CompareOp::Equal, 0),
                ],
                success: vec![TxnOp::put(&seg_key, encode(segment))],
                failure: vec![TxnOp::Get { key: log_key }],
            })
            .await?;
        if out.succeeded {
            Ok(out.revision)
        } else if first_get(&out.results, 0).is_none() {
            Err(MetaError::LogNotFound {
                log: log.to_string(),
            })
        } else {
            Err(MetaError::SegmentAlreadyExists {
                log: log.to_string(),
                segment: segment.seg_no,
            })
        }
    }

    async fn get_segment_metadata(
        &self,
        log: &str,
        segment_id: i64,
    ) -> MetaResult<Versioned<SegmentMetadata>> {
        Self::check_name(log)?;
        let key = self.keys.segment(log, segment_id);
        self.get_decoded(&key)
            .await?
            .ok_or(MetaError::KeyNotExists { key })
    }

    async fn get_all_segment_metadata(
        &self,
        log: &str,
    ) -> MetaResult<BTreeMap<i64, Versioned<SegmentMetadata>>> {
        Self::check_name(log)?;
        let (kvs, _) = self.kv.get_prefix(&self.keys.segments_prefix(log)).await?;
        let mut out = BTreeMap::new();
        for kv in &kvs {
            out.insert(
                self.segment_id_of(log, kv)?,
                Versioned {
                    value: decode(kv)?,
                    revision: kv.mod_revision,
                },
            );
        }
        Ok(out)
    }

    async fn update_segment_metadata(
        &self,
        log: &str,
        segment: &SegmentMetadata,
        revision: Revision,
    ) -> MetaResult<Revision> {
        Self::check_name(log)?;
        self.cas_put(
            &self.keys.segment(log, segment.seg_no),
            encode(segment),
            revision,
        )
        .await
    }

    async fn delete_segment_metadata(&self, log: &str, segment_id: i64) -> MetaResult<()> {
        Self::check_name(log)?;
        let key = self.keys.segment(log, segment_id);
        let out = self
            .txn(Txn {
                compares: vec![Compare::create_revision(&key, CompareOp::Greater, 0)],
                success: vec![TxnOp::Delete { key: key.clone() }],
                failure: vec![],
            })
            .await?;
        if out.succeeded {
            Ok(())
        } else {
            Err(MetaError::KeyNotExists { key })
        }
    }

    async fn delete_segment_metadata_at(
        &self,
        log: &str,
        segment_id: i64,
        revision: Revision,
    ) -> MetaResult<()> {
        Self::check_name(log)?;
        let key = self.keys.segment(log, segment_id);
        let out = self
            .txn(Txn {
                compares: vec![Compare::mod_revision(&key, CompareOp::Equal, revision)],
                success: vec![TxnOp::Delete { key: key.clone() }],
                failure: vec![TxnOp::Get { key: key.clone() }],
            })
            .await?;
        if out.succeeded {
            Ok(())
        } else if first_get(&out.results, 0).is_none() {
            Err(MetaError::KeyNotExists { key })
        } else {
            Err(MetaError::RevisionInvalid {
                key,
                expected: revision,
            })
        }
    }

    async fn register_reader(
        &self,
        log_id: i64,
        reader_name: &str,
        open_segment_id: i64,
        open_entry_id: i64,
    ) -> MetaResult<ReaderRegistration> {
        let now = self.now_millis();
        let info = ReaderTempInfo {
            reader_name: reader_name.to_string(),
            open_timestamp: now,
            log_id,
            open_segment_id,
            open_entry_id,
            recent_read_segment_id: open_segment_id,
            recent_read_entry_id: open_entry_id,
            recent_read_timestamp: now,
        };
        ReaderRegistration::start(
            Arc::clone(&self.kv),
            self.keys.reader(log_id, reader_name),
            info,
            Arc::clone(&self.clock),
        )
        .await
    }

    async fn get_reader_temp_infos(&self, log_id: i64) -> MetaResult<Vec<ReaderTempInfo>> {
        self.list_decoded(&self.keys.readers_prefix(log_id)).await
    }

    async fn create_segment_cleanup_status(&self, status: &SegmentCleanupStatus) -> MetaResult<()> {
        let key = self.keys.cleaning(status.log_id, status.segment_id);
        if self.put_if(&key, encode(status), false).await? {
            Ok(())
        } else {
            Err(MetaError::KeyAlreadyExists { key })
        }
    }

    async fn update_segment_cleanup_status(&self, status: &SegmentCleanupStatus) -> MetaResult<()> {
        let key = self.keys.cleaning(status.log_id, status.segment_id);
        if self.put_if(&key, encode(status), true).await? {
            Ok(())
        } else {
            Err(MetaError::KeyNotExists { key })
        }
    }

    async fn get_segment_cleanup_status(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> MetaResult<Option<SegmentCleanupStatus>> {
        Ok(self
            .get_decoded(&self.keys.cleaning(log_id, segment_id))
            .await?
            .map(|v| v.value))
    }

    async fn list_segment_cleanup_status(
        &self,
        log_id: i64,
    ) -> MetaResult<Vec<SegmentCleanupStatus>> {
        self.list_decoded(&self.keys.cleaning_prefix(log_id)).await
    }

    async fn delete_segment_cleanup_status(&self, log_id: i64, segment_id: i64) -> MetaResult<()> {
        self.kv
            .delete(&self.keys.cleaning(log_id, segment_id))
            .await?;
        Ok(())
    }

    async fn create_compacted_notify_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
    ) -> MetaResult<bool> {
        let key = self.keys.marking(status.log_id, status.segment_id);
        self.put_if(&key, encode(status), false).await
    }

    async fn update_compacted_notify_status(
        &self,
        status: &SegmentCompactedNotifyStatus,
        revision: Revision,
    ) -> MetaResult<Revision> {
        self.cas_put(
            &self.keys.marking(status.log_id, status.segment_id),
            encode(status),
            revision,
        )
        .await
    }

    async fn get_compacted_notify_status(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> MetaResult<Option<Versioned<SegmentCompactedNotifyStatus>>> {
        self.get_decoded(&self.keys.marking(log_id, segment_id))
            .await
    }

    async fn delete_compacted_notify_status(&self, log_id: i64, segment_id: i64) -> MetaResult<()> {
        self.kv
            .delete(&self.keys.marking(log_id, segment_id))
            .await?;
        Ok(())
    }

    async fn init_condition_write(&self, enabled: bool) -> MetaResult<bool> {
        let key = self.keys.condition_write();
        let value = if enabled { "true" } else { "false" };
        let out = self
            .txn(Txn {
                compares: vec![Compare::create_revision(&key, CompareOp::Equal, 0)],
                success: vec![TxnOp::put(&key, Bytes::from_static(value.as_bytes()))],
                failure: vec![TxnOp::Get { key: key.clone() }],
            })
            .await?;
        if out.succeeded {
            return Ok(enabled);
        }
        match first_get(&out.results, 0) {
            Some(kv) => parse_bool(kv),
            // Deleted in between: the decision is ours to make again.
            None => Box::pin(self.init_condition_write(enabled)).await,
        }
    }

    async fn get_condition_write(&self) -> MetaResult<Option<bool>> {
        match self.kv.get(&self.keys.condition_write()).await? {
            None => Ok(None),
            Some(kv) => parse_bool(&kv).map(Some),
        }
    }

    async fn store_condition_write_enabled(&self) -> MetaResult<()> {
        self.kv
            .put(
                &self.keys.condition_write(),
                Bytes::from_static(b"true"),
                None,
            )
            .await?;
        Ok(())
    }

    async fn acquire_log_writer_lock(
        &self,
        log: &str,
        options: LockOptions,
    ) -> MetaResult<WriterLock> {
        Self::check_name(log)?;
        WriterLock::try_acquire(
            Arc::clone(&self.kv),
            log,
            self.keys.lock(log),
            options,
            Arc::clone(&self.clock),
        )
        .await
    }

    async fn delete_log_metadata(&self, name: &str, force: bool) -> MetaResult<()> {
        Self::check_name(name)?;
        let log_key = self.keys.log(name);
        let Some(log_kv) = self.kv.get(&log_key).await? else {
            return Ok(());
        };
        let meta: LogMeta = decode(&log_kv)?;
        let log_id = meta.log_id;
        if !force {
            let stamp = u128::from(self.now_millis()) * 1_000_000
                + u128::from(rand::random::<u32>() % 1_000_000);
            let (segments, _) = self.kv.get_prefix(&self.keys.segments_prefix(name)).await?;
            let mut ops = vec![TxnOp::put(
                self.keys.deleted_log(name, stamp),
                log_kv.value.clone(),
            )];
            for kv in &segments {
                let id = self.segment_id_of(name, kv)?;
                ops.push(TxnOp::put(
                    self.keys.deleted_segment(name, stamp, id),
                    kv.value.clone(),
                ));
            }
            for chunk in ops.chunks(PARK_BATCH) {
                self.txn(Txn {
                    compares: vec![],
                    success: chunk.to_vec(),
                    failure: vec![],
                })
                .await?;
            }
        }
        let lock = self.keys.lock(name);
        let out = self
            .txn(Txn {
                compares: vec![Compare::mod_revision(
                    &log_key,
                    CompareOp::Equal,
                    log_kv.mod_revision,
                )],
                success: vec![
                    TxnOp::Delete {
                        key: log_key.clone(),
                    },
                    TxnOp::Delete { key: lock.clone() },
                    TxnOp::DeletePrefix {
                        prefix: format!("{lock}/"),
                    },
                    TxnOp::DeletePrefix {
                        prefix: self.keys.segments_prefix(name),
                    },
                    TxnOp::DeletePrefix {
                        prefix: self.keys.readers_prefix(log_id),
                    },
                    TxnOp::DeletePrefix {
                        prefix: self.keys.cleaning_prefix(log_id),
                    },
                    TxnOp::DeletePrefix {
                        prefix: self.keys.marking_prefix(log_id),
                    },
                ],
                failure: vec![],
            })
            .await?;
        if !out.succeeded {
            // The log changed or vanished meanwhile: somebody else deleted (or recreated) it.
            tracing::info!(
                log = name,
                "log metadata changed during deletion; treating as deleted"
            );
        }
        Ok(())
    }
}

fn parse_bool(kv: &KeyValue) -> MetaResult<bool> {
    match kv.value.as_ref() {
        b"true" => Ok(true),
        b"false" => Ok(false),
        other => Err(MetaError::CorruptValue {
            key: kv.key.clone(),
            detail: format!(
                "expected `true` or `false`, found {:?}",
                String::from_utf8_lossy(other)
            ),
        }),
    }
}
