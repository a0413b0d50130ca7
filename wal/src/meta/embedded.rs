//! [`EmbeddedKv`]: the [`Kv`] contract in one process, durable on local disk.
//!
//! This is the metadata store of the zero-dependency default: no etcd, one directory holding one
//! [`redb`] database file (`meta.redb`). It keeps etcd v3's model exactly as [`super::kv`]
//! describes it, so the Woodpecker rules written on top behave the same here and on a real etcd:
//!
//! * The store revision starts at 1 and grows by exactly one per transaction that changes a key;
//!   a transaction, put or delete that changes nothing leaves it alone. Every key changed by one
//!   transaction gets that transaction's revision as `mod_revision`.
//! * The operations of a transaction are applied in order and each sees the effects of the ones
//!   before it (a `Get` after a `Put` returns the new value with the new revision).
//! * Requests etcd refuses are refused here too, as [`KvError::Rejected`]: an empty key, more than
//!   [`MAX_TXN_OPS`] operations, and a branch that puts one key twice or puts a key it also
//!   deletes. A put naming a missing lease fails the whole transaction with
//!   [`KvError::LeaseNotFound`].
//!
//! # Durability
//!
//! Every request that changes something is one redb write transaction committed with
//! [`redb::Durability::Immediate`] (fsync, with redb's two-phase commit and quick repair) before
//! the call returns, so an acknowledged write survives `kill -9` and power loss. A request that
//! turns out to change nothing aborts its write transaction instead (no fsync). Reads use read
//! transactions, which never wait for writers. The blocking redb work runs on tokio's blocking
//! pool. A caller that drops a future mid-write does not cancel the write: it may or may not be
//! applied, as with a timed-out etcd request.
//!
//! # Leases
//!
//! Lease ids come from a persisted counter and are never reused, not even across restarts. Time
//! comes only from the injected [`Clock`](crate::clock::Clock). Expiry is exact: every request
//! first revokes the leases that are due (in its own write transaction, or, for reads, in an
//! expiry transaction run before the read when the read snapshot shows something due), so no
//! request ever sees a key whose lease has expired. Each expired lease is revoked as etcd would,
//! taking one revision of its own when it deletes keys. A background task also sweeps about
//! every [`EXPIRY_INTERVAL`] of clock time; it holds only a weak reference, and stops when the
//! last handle is dropped.
//!
//! **On restart every surviving lease gets a fresh full TTL from the time of the open**, as etcd
//! does after a leader change: the store cannot know how long it was down, and must not let a
//! lease expire for an owner that had no chance to keep it alive.
//!
//! # Exclusivity
//!
//! Only one [`EmbeddedKv`] may have a directory open at a time, in any process: redb locks the
//! whole file ([`redb::ConcurrencyMode::ExclusiveWriter`]), and a second open fails with
//! [`KvError::Unavailable`] ("already in use by another process") without touching the file.
//!
//! This module never calls the system clock or tokio's timer directly, and never panics on a
//! damaged record: it reports [`KvError::Corrupt`] naming the key.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, MultimapTable, MultimapTableDefinition, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use tokio::task::AbortHandle;

use super::kv::{
    Compare, KeyValue, Kv, KvError, LeaseId, Revision, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::clock::ClockRef;
use crate::clock::blocking::{self, Io};

/// The database file inside the store's directory.
pub(crate) const DB_FILE: &str = "meta.redb";

/// How often, in clock time, the background task looks for expired leases.
pub(crate) const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);

/// The most operations a transaction may carry (in its compares, or either branch): etcd's
/// default `--max-txn-ops`, so that what works here also works on etcd.
pub(crate) const MAX_TXN_OPS: usize = 128;

/// Version of the layout of the tables below, kept in [`META`] under [`META_FORMAT`].
const FORMAT: i64 = 1;

/// Key bytes to an encoded [`Record`].
const KEYS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("keys");
/// Lease id to an encoded [`LeaseRecord`].
const LEASES: TableDefinition<'_, i64, &[u8]> = TableDefinition::new("leases");
/// `(expiry millis, lease id)`, ordered so the first entry is the next lease to expire.
const LEASE_EXPIRY: TableDefinition<'_, (u64, i64), ()> = TableDefinition::new("lease_expiry");
/// Lease id to the keys attached to it.
const LEASE_KEYS: MultimapTableDefinition<'_, i64, &[u8]> =
    MultimapTableDefinition::new("lease_keys");
/// Store-wide counters, each an `i64` little-endian.
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_LAST_LEASE: &str = "last_lease";

/// A [`Kv`] kept in one directory on local disk, for one process.
///
/// Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct EmbeddedKv {
    inner: Arc<Inner>,
}

impl fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedKv")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    dir: PathBuf,
    endpoint: String,
    clock: ClockRef,
    /// Queues writers here rather than as blocked threads inside `begin_write`.
    writers: tokio::sync::Mutex<()>,
    expiry_task: OnceLock<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.expiry_task.get() {
            task.abort();
        }
    }
}

impl EmbeddedKv {
    /// Opens the store in `dir`, creating the directory and the database when missing.
    ///
    /// Fails with [`KvError::Unavailable`] when another [`EmbeddedKv`], in this process or
    /// another, has the directory open, and with [`KvError::Corrupt`] when the file is damaged.
    /// Every surviving lease is given a fresh full TTL from now (see the module docs).
    pub async fn open(dir: impl AsRef<Path>, clock: ClockRef) -> Result<EmbeddedKv, KvError> {
        let dir = dir.as_ref().to_path_buf();
        let endpoint = dir.display().to_string();
        let db = {
            let dir = dir.clone();
            let clock = clock.clone();
            let at = endpoint.clone();
            blocking::run(Io::Write, move || {
                open_database(&dir, clock.now_millis()).map_err(|e| e.into_kv(&at))
            })
            .await
            .map_err(|e| worker_failed(&endpoint, &e))??
        };
        let inner = Arc::new(Inner {
            db,
            dir,
            endpoint,
            clock: clock.clone(),
            writers: tokio::sync::Mutex::new(()),
            expiry_task: OnceLock::new(),
        });
        let task = tokio::spawn(expiry_loop(Arc::downgrade(&inner), clock));
        // Only this function sets it, once.
        let _ = inner.expiry_task.set(task.abort_handle());
        Ok(EmbeddedKv { inner })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `f` as blocking work of kind `io` ([`blocking::run`]: the blocking pool, or in place
    /// in a simulation) and turns its failure into a [`KvError`].
    async fn blocking<T: Send + 'static>(
        &self,
        io: Io,
        f: impl FnOnce(&Inner) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, KvError> {
        let inner = self.inner.clone();
        blocking::run(io, move || {
            f(&inner).map_err(|e| e.into_kv(&inner.endpoint))
        })
        .await
        .map_err(|e| worker_failed(&self.inner.endpoint, &e))?
    }

    /// Like [`Self::blocking`] for requests that write: one at a time past this point.
    async fn writing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, KvError> {
        let _turn = self.inner.writers.lock().await;
        self.blocking(Io::Write, f).await
    }

    /// Runs a transaction: as a read when it needs no write, else as a write.
    async fn run(&self, txn: Txn) -> Result<TxnResult, KvError> {
        validate(&txn).map_err(|e| e.into_kv(&self.inner.endpoint))?;
        if has_writes(&txn.success) || has_writes(&txn.failure) {
            // The branch taken may still be read-only (`If(..) Then(Put) Else(Get)`): a read
            // snapshot decides first, and only a branch that writes pays for a write.
            self.writing(move |inner| {
                let now = inner.clock.now_millis();
                match inner.read(now, |r| txn_read(r, &txn))? {
                    Some(result) => Ok(result),
                    None => inner.write(|w, _| txn_write(w, &txn)),
                }
            })
            .await
        } else {
            self.blocking(Io::Read, move |inner| {
                inner.read_or_write(|r| txn_read(r, &txn), |w| txn_write(w, &txn))
            })
            .await
        }
    }
}

fn worker_failed(endpoint: &str, e: &blocking::BlockingError) -> KvError {
    KvError::Unavailable {
        endpoint: endpoint.to_owned(),
        detail: format!("metadata worker failed: {e}"),
    }
}

#[async_trait]
impl Kv for EmbeddedKv {
    fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let txn = Txn {
            success: vec![TxnOp::Get {
                key: key.to_owned(),
            }],
            ..Txn::default()
        };
        let result = self.run(txn).await?;
        Ok(first_get(result).and_then(|mut kvs| kvs.pop()))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        let txn = Txn {
            success: vec![TxnOp::GetPrefix {
                prefix: prefix.to_owned(),
            }],
            ..Txn::default()
        };
        let result = self.run(txn).await?;
        let revision = result.revision;
        Ok((first_get(result).unwrap_or_default(), revision))
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let txn = Txn {
            success: vec![TxnOp::Put {
                key: key.to_owned(),
                value,
                lease,
            }],
            ..Txn::default()
        };
        Ok(self.run(txn).await?.revision)
    }

    async fn delete(&self, key: &str) -> Result<u64, KvError> {
        let txn = Txn {
            success: vec![TxnOp::Delete {
                key: key.to_owned(),
            }],
            ..Txn::default()
        };
        let result = self.run(txn).await?;
        Ok(match result.results.first() {
            Some(TxnOpResult::Delete(n)) => *n,
            _ => 0,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, KvError> {
        self.run(txn).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(Fail::Rejected("a lease TTL must be at least 1 ms".into())
                .into_kv(&self.inner.endpoint));
        }
        self.writing(move |inner| inner.write(|w, now| w.grant(ttl_ms, now)))
            .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration, KvError> {
        self.writing(move |inner| inner.write(|w, now| w.keep_alive(lease, now)))
            .await
            .map(Duration::from_millis)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), KvError> {
        self.writing(move |inner| inner.write(|w, _| w.revoke(lease).map(drop)))
            .await
    }
}

/// The keys of the first `Get` result of a single-read transaction.
fn first_get(result: TxnResult) -> Option<Vec<KeyValue>> {
    result.results.into_iter().find_map(|r| match r {
        TxnOpResult::Get(kvs) => Some(kvs),
        _ => None,
    })
}

/// Sweeps expired leases about every [`EXPIRY_INTERVAL`] until the store is dropped.
async fn expiry_loop(store: Weak<Inner>, clock: ClockRef) {
    loop {
        clock.sleep(EXPIRY_INTERVAL).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        let endpoint = inner.endpoint.clone();
        let swept = blocking::run(Io::Write, move || {
            let now = inner.clock.now_millis();
            match inner.read(now, |_| Ok(Some(())))? {
                Some(()) => Ok(()),
                None => inner.write(|_, _| Ok(())),
            }
        })
        .await;
        match swept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let error = e.into_kv(&endpoint);
                tracing::warn!(store = %endpoint, %error, "lease expiry sweep failed");
            }
            Err(error) => tracing::warn!(store = %endpoint, %error, "lease expiry sweep failed"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opening

fn open_database(dir: &Path, now: u64) -> Result<Database, Fail> {
    std::fs::create_dir_all(dir).map_err(|e| io_fail(e, "cannot create the directory"))?;
    let path = dir.join(DB_FILE);
    let db = Database::builder()
        // Metadata is small; the default cache bound is 1 GiB.
        .set_cache_size(32 << 20)
        // Verify every page on open: a file damaged outside redb is reported, not trusted.
        .set_check_integrity_on_open(true)
        .create(&path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => Fail::InUse(path.clone()),
            e => Fail::from(e),
        })?;
    // The file's directory entry must be durable too before anything is acknowledged.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_fail(e, "cannot sync the directory"))?;

    let wtx = begin_write(&db)?;
    {
        let mut meta = wtx.open_table(META)?;
        let keys = wtx.open_table(KEYS)?;
        let mut leases = wtx.open_table(LEASES)?;
        let mut expiry = wtx.open_table(LEASE_EXPIRY)?;
        wtx.open_multimap_table(LEASE_KEYS)?;
        match read_meta(&meta, META_FORMAT)? {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Fail::Unsupported(format!(
                    "{} has format {other}, this build reads format {FORMAT}",
                    path.display()
                )));
            }
            None if keys.is_empty()? && leases.is_empty()? => {
                // A new store: etcd's first revision is 1.
                write_meta(&mut meta, META_FORMAT, FORMAT)?;
                write_meta(&mut meta, META_REVISION, 1)?;
                write_meta(&mut meta, META_LAST_LEASE, 0)?;
            }
            None => {
                return Err(Fail::Corrupt(format!(
                    "{} holds keys but no format marker",
                    path.display()
                )));
            }
        }
        // A fresh full TTL for every lease (see the module docs).
        let mut refreshed = Vec::new();
        for entry in leases.iter()? {
            let (id, raw) = entry?;
            let id = id.value();
            refreshed.push((id, LeaseRecord::decode(id, raw.value())?.ttl_ms));
        }
        expiry.retain(|_, _| false)?;
        for (id, ttl_ms) in refreshed {
            let lease = LeaseRecord {
                ttl_ms,
                expiry_ms: now.saturating_add(ttl_ms),
            };
            leases.insert(id, lease.encode().as_slice())?;
            expiry.insert((lease.expiry_ms, id), ())?;
        }
    }
    wtx.commit()?;
    Ok(db)
}

fn begin_write(db: &Database) -> Result<WriteTransaction, Fail> {
    let mut wtx = db.begin_write()?;
    // Recovery after a crash reads the allocator state saved by the last commit instead of
    // walking the file; this also turns on two-phase commit. Immediate durability is redb's
    // default and is never lowered here.
    wtx.set_quick_repair(true);
    Ok(wtx)
}

// ---------------------------------------------------------------------------------------------
// Running requests

impl Inner {
    /// Runs `f` on a read snapshot taken at `now`, or returns `None` when the snapshot shows an
    /// expired lease (the request must then run as a write, which revokes it first), or when `f`
    /// returns `None` (it needs to write).
    fn read<T>(
        &self,
        now: u64,
        f: impl FnOnce(&Reader) -> Result<Option<T>, Fail>,
    ) -> Result<Option<T>, Fail> {
        let rtx = self.db.begin_read()?;
        let reader = Reader::open(&rtx)?;
        if reader.lease_due(now)? {
            return Ok(None);
        }
        f(&reader)
    }

    /// A read when nothing is due, else a write that expires leases first.
    fn read_or_write<T>(
        &self,
        read: impl FnOnce(&Reader) -> Result<Option<T>, Fail>,
        write: impl FnOnce(&mut Writer<'_>) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let now = self.clock.now_millis();
        match self.read(now, read)? {
            Some(out) => Ok(out),
            None => self.write(|w, _| write(w)),
        }
    }

    /// One write transaction: expires due leases, runs `f`, and commits durably when anything
    /// changed (else aborts). An error from `f` aborts everything.
    fn write<T>(&self, f: impl FnOnce(&mut Writer<'_>, u64) -> Result<T, Fail>) -> Result<T, Fail> {
        let now = self.clock.now_millis();
        let wtx = begin_write(&self.db)?;
        let (out, dirty) = {
            let mut writer = Writer::open(&wtx)?;
            writer.expire_due(now)?;
            let out = f(&mut writer, now)?;
            (out, writer.finish()?)
        };
        if dirty {
            wtx.commit()?;
        } else {
            wtx.abort()?;
        }
        Ok(out)
    }
}

/// Whether any of `ops` writes.
fn has_writes(ops: &[TxnOp]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            TxnOp::Put { .. } | TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. }
        )
    })
}

/// Refuses what etcd refuses before looking at any data.
fn validate(txn: &Txn) -> Result<(), Fail> {
    let ops = txn
        .compares
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > MAX_TXN_OPS {
        return Err(Fail::Rejected(format!(
            "too many operations in txn request ({ops} > {MAX_TXN_OPS})"
        )));
    }
    if txn.compares.iter().any(|c| c.key.is_empty()) {
        return Err(Fail::Rejected("key is not provided".into()));
    }
    for branch in [&txn.success, &txn.failure] {
        let mut puts: Vec<&str> = Vec::new();
        for op in branch.iter() {
            match op {
                TxnOp::Put { key, .. } | TxnOp::Get { key } | TxnOp::Delete { key }
                    if key.is_empty() =>
                {
                    return Err(Fail::Rejected("key is not provided".into()));
                }
                TxnOp::Put { key, .. } => puts.push(key),
                _ => {}
            }
        }
        puts.sort_unstable();
        let duplicate = puts.windows(2).any(|w| w[0] == w[1]);
        let deleted = puts.iter().any(|key| {
            branch.iter().any(|op| match op {
                TxnOp::Delete { key: d } => d == key,
                TxnOp::DeletePrefix { prefix } => key.starts_with(prefix.as_str()),
                _ => false,
            })
        });
        if duplicate || deleted {
            return Err(Fail::Rejected("duplicate key given in txn request".into()));
        }
    }
    Ok(())
}

fn branch(txn: &Txn, succeeded: bool) -> &[TxnOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// Whether every comparison holds on `keys`.
fn evaluate(
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    compares: &[Compare],
) -> Result<bool, Fail> {
    for compare in compares {
        if !compare.evaluate(get_key(keys, compare.key.as_bytes())?.as_ref()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A transaction on a read snapshot; `None` when its branch writes.
fn txn_read(reader: &Reader, txn: &Txn) -> Result<Option<TxnResult>, Fail> {
    let succeeded = evaluate(&reader.keys, &txn.compares)?;
    let ops = branch(txn, succeeded);
    if has_writes(ops) {
        return Ok(None);
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(TxnOpResult::Get(match op {
            TxnOp::Get { key } => get_key(&reader.keys, key.as_bytes())?.into_iter().collect(),
            TxnOp::GetPrefix { prefix } => get_prefix(&reader.keys, prefix.as_bytes())?,
            _ => return Ok(None),
        }));
    }
    Ok(Some(TxnResult {
        succeeded,
        revision: read_meta(&reader.meta, META_REVISION)?.ok_or_else(missing_revision)?,
        results,
    }))
}

/// A transaction in a write transaction.
fn txn_write(writer: &mut Writer<'_>, txn: &Txn) -> Result<TxnResult, Fail> {
    writer.next_group();
    let succeeded = evaluate(&writer.keys, &txn.compares)?;
    let ops = branch(txn, succeeded);
    for op in ops {
        if let TxnOp::Put {
            lease: Some(lease), ..
        } = op
            && *lease != 0
            && writer.lease(*lease)?.is_none()
        {
            return Err(Fail::LeaseNotFound(*lease));
        }
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            TxnOp::Put { key, value, lease } => {
                writer.put(key, value, lease.unwrap_or(0))?;
                TxnOpResult::Put
            }
            TxnOp::Get { key } => {
                TxnOpResult::Get(get_key(&writer.keys, key.as_bytes())?.into_iter().collect())
            }
            TxnOp::GetPrefix { prefix } => {
                TxnOpResult::Get(get_prefix(&writer.keys, prefix.as_bytes())?)
            }
            TxnOp::Delete { key } => TxnOpResult::Delete(writer.delete(key.as_bytes())?),
            TxnOp::DeletePrefix { prefix } => {
                TxnOpResult::Delete(writer.delete_prefix(prefix.as_bytes())?)
            }
        });
    }
    writer.next_group();
    Ok(TxnResult {
        succeeded,
        revision: writer.revision,
        results,
    })
}

fn get_key(
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<KeyValue>, Fail> {
    match keys.get(key)? {
        Some(raw) => Ok(Some(
            Record::decode(key, raw.value())?.into_key_value(key, raw.value())?,
        )),
        None => Ok(None),
    }
}

fn get_header(
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Record>, Fail> {
    match keys.get(key)? {
        Some(raw) => Ok(Some(Record::decode(key, raw.value())?)),
        None => Ok(None),
    }
}

/// Every key starting with `prefix`, in byte order.
fn get_prefix(
    keys: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Vec<KeyValue>, Fail> {
    let mut out = Vec::new();
    for entry in keys.range(prefix..)? {
        let (key, raw) = entry?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        out.push(Record::decode(key, raw.value())?.into_key_value(key, raw.value())?);
    }
    Ok(out)
}

fn read_meta(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<i64>, Fail> {
    match meta.get(name)? {
        Some(raw) => match <[u8; 8]>::try_from(raw.value()) {
            Ok(bytes) => Ok(Some(i64::from_le_bytes(bytes))),
            Err(_) => Err(Fail::Corrupt(format!(
                "store counter {name:?} has {} bytes instead of 8",
                raw.value().len()
            ))),
        },
        None => Ok(None),
    }
}

fn write_meta(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    name: &str,
    value: i64,
) -> Result<(), Fail> {
    meta.insert(name, value.to_le_bytes().as_slice())?;
    Ok(())
}

fn missing_revision() -> Fail {
    Fail::Corrupt("the store revision is missing".into())
}

/// The tables a read needs, on one snapshot.
struct Reader {
    keys: ReadOnlyTable<&'static [u8], &'static [u8]>,
    expiry: ReadOnlyTable<(u64, i64), ()>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Reader {
    fn open(rtx: &ReadTransaction) -> Result<Self, Fail> {
        Ok(Reader {
            keys: rtx.open_table(KEYS)?,
            expiry: rtx.open_table(LEASE_EXPIRY)?,
            meta: rtx.open_table(META)?,
        })
    }

    /// Whether some lease has expired at `now`.
    fn lease_due(&self, now: u64) -> Result<bool, Fail> {
        Ok(match self.expiry.first()? {
            Some((entry, _)) => entry.value().0 <= now,
            None => false,
        })
    }
}

/// The tables of one write transaction, and its revision bookkeeping.
///
/// Changes are grouped as etcd applies them: one user transaction, or one lease revocation, is a
/// group, and every key it changes gets the same new revision, taken when its first change is
/// made. A group that changes no key takes no revision.
struct Writer<'t> {
    keys: Table<'t, &'static [u8], &'static [u8]>,
    leases: Table<'t, i64, &'static [u8]>,
    expiry: Table<'t, (u64, i64), ()>,
    lease_keys: MultimapTable<'t, i64, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    /// The store revision, including the groups applied so far.
    revision: Revision,
    start_revision: Revision,
    /// Whether the current group has taken its revision.
    group_has_revision: bool,
    /// Whether anything at all changed (revisions, leases).
    dirty: bool,
}

impl<'t> Writer<'t> {
    fn open(wtx: &'t WriteTransaction) -> Result<Self, Fail> {
        let meta = wtx.open_table(META)?;
        let revision = read_meta(&meta, META_REVISION)?.ok_or_else(missing_revision)?;
        Ok(Writer {
            keys: wtx.open_table(KEYS)?,
            leases: wtx.open_table(LEASES)?,
            expiry: wtx.open_table(LEASE_EXPIRY)?,
            lease_keys: wtx.open_multimap_table(LEASE_KEYS)?,
            meta,
            revision,
            start_revision: revision,
            group_has_revision: false,
            dirty: false,
        })
    }

    /// Ends the current group: the next change takes a new revision.
    fn next_group(&mut self) {
        self.group_has_revision = false;
    }

    /// The revision of a change in the current group.
    fn change_revision(&mut self) -> Revision {
        if !self.group_has_revision {
            self.revision += 1;
            self.group_has_revision = true;
        }
        self.dirty = true;
        self.revision
    }

    /// Saves the revision; returns whether anything changed.
    fn finish(mut self) -> Result<bool, Fail> {
        if self.revision != self.start_revision {
            write_meta(&mut self.meta, META_REVISION, self.revision)?;
        }
        Ok(self.dirty)
    }

    fn put(&mut self, key: &str, value: &[u8], lease: LeaseId) -> Result<(), Fail> {
        let key = key.as_bytes();
        let old = get_header(&self.keys, key)?;
        let revision = self.change_revision();
        let (create_revision, version) = match &old {
            Some(old) => (old.create_revision, old.version.saturating_add(1)),
            None => (revision, 1),
        };
        if let Some(old) = &old
            && old.lease != 0
            && old.lease != lease
        {
            self.lease_keys.remove(old.lease, key)?;
        }
        if lease != 0 {
            self.lease_keys.insert(lease, key)?;
        }
        let record = Record {
            create_revision,
            mod_revision: revision,
            version,
            lease,
        };
        self.keys.insert(key, record.encode(value).as_slice())?;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<u64, Fail> {
        let Some(old) = get_header(&self.keys, key)? else {
            return Ok(0);
        };
        self.remove(key, old.lease)?;
        Ok(1)
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<u64, Fail> {
        let mut doomed = Vec::new();
        for entry in self.keys.range(prefix..)? {
            let (key, raw) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            doomed.push((key.to_vec(), Record::decode(key, raw.value())?.lease));
        }
        for (key, lease) in &doomed {
            self.remove(key, *lease)?;
        }
        Ok(doomed.len() as u64)
    }

    fn remove(&mut self, key: &[u8], lease: LeaseId) -> Result<(), Fail> {
        self.change_revision();
        self.keys.remove(key)?;
        if lease != 0 {
            self.lease_keys.remove(lease, key)?;
        }
        Ok(())
    }

    fn lease(&self, id: LeaseId) -> Result<Option<LeaseRecord>, Fail> {
        match self.leases.get(id)? {
            Some(raw) => Ok(Some(LeaseRecord::decode(id, raw.value())?)),
            None => Ok(None),
        }
    }

    fn set_lease(&mut self, id: LeaseId, lease: LeaseRecord) -> Result<(), Fail> {
        self.leases.insert(id, lease.encode().as_slice())?;
        self.expiry.insert((lease.expiry_ms, id), ())?;
        self.dirty = true;
        Ok(())
    }

    fn grant(&mut self, ttl_ms: u64, now: u64) -> Result<LeaseId, Fail> {
        let last = read_meta(&self.meta, META_LAST_LEASE)?.unwrap_or(0);
        let id = last
            .checked_add(1)
            .ok_or_else(|| Fail::Rejected("lease ids are exhausted".into()))?;
        write_meta(&mut self.meta, META_LAST_LEASE, id)?;
        self.set_lease(
            id,
            LeaseRecord {
                ttl_ms,
                expiry_ms: now.saturating_add(ttl_ms),
            },
        )?;
        Ok(id)
    }

    fn keep_alive(&mut self, id: LeaseId, now: u64) -> Result<u64, Fail> {
        let old = self.lease(id)?.ok_or(Fail::LeaseNotFound(id))?;
        self.expiry.remove((old.expiry_ms, id))?;
        self.set_lease(
            id,
            LeaseRecord {
                ttl_ms: old.ttl_ms,
                expiry_ms: now.saturating_add(old.ttl_ms),
            },
        )?;
        Ok(old.ttl_ms)
    }

    /// Deletes a lease and its keys as one group; returns whether the lease existed.
    fn revoke(&mut self, id: LeaseId) -> Result<bool, Fail> {
        let Some(lease) = self.lease(id)? else {
            return Ok(false);
        };
        self.leases.remove(id)?;
        self.expiry.remove((lease.expiry_ms, id))?;
        self.dirty = true;
        let keys = self
            .lease_keys
            .remove_all(id)?
            .map(|key| key.map(|key| key.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        self.next_group();
        for key in keys {
            // The index is kept in step with the keys; the check keeps a stale entry harmless.
            if get_header(&self.keys, &key)?.is_some_and(|record| record.lease == id) {
                self.change_revision();
                self.keys.remove(key.as_slice())?;
            }
        }
        self.next_group();
        Ok(true)
    }

    /// Revokes every lease whose expiry is at or before `now`, earliest first.
    fn expire_due(&mut self, now: u64) -> Result<(), Fail> {
        let due: RangeInclusive<(u64, i64)> = (0, i64::MIN)..=(now, i64::MAX);
        let ids = self
            .expiry
            .range(due)?
            .map(|entry| entry.map(|(key, _)| key.value().1))
            .collect::<Result<Vec<_>, _>>()?;
        for id in ids {
            if !self.revoke(id)? {
                return Err(Fail::Corrupt(format!(
                    "lease {id:x} is in the expiry index but not in the lease table"
                )));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Record layouts

/// The bookkeeping of one key. Stored as the value of [`KEYS`], followed by the key's value:
///
/// | bytes | field |
/// |---|---|
/// | 0 | layout version, [`Record::V1`] |
/// | 1..9 | `create_revision`, i64 little-endian |
/// | 9..17 | `mod_revision`, i64 little-endian |
/// | 17..25 | `version`, i64 little-endian |
/// | 25..33 | `lease` (0: none), i64 little-endian |
/// | 33.. | the value |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: LeaseId,
}

impl Record {
    const V1: u8 = 1;
    const HEADER: usize = 33;

    fn encode(&self, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + value.len());
        out.push(Self::V1);
        for field in [
            self.create_revision,
            self.mod_revision,
            self.version,
            self.lease,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    /// Decodes the header of the record of `key`.
    fn decode(key: &[u8], raw: &[u8]) -> Result<Record, Fail> {
        let damaged = |what: &str| {
            Fail::Corrupt(format!(
                "record of key {:?} is damaged: {what}",
                String::from_utf8_lossy(key)
            ))
        };
        let Some((&version, rest)) = raw.split_first() else {
            return Err(damaged("empty"));
        };
        if version != Self::V1 {
            return Err(damaged(&format!("unknown layout version {version}")));
        }
        if raw.len() < Self::HEADER {
            return Err(damaged(&format!(
                "{} bytes, shorter than the {}-byte header",
                raw.len(),
                Self::HEADER
            )));
        }
        let field = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&rest[i * 8..i * 8 + 8]);
            i64::from_le_bytes(bytes)
        };
        let record = Record {
            create_revision: field(0),
            mod_revision: field(1),
            version: field(2),
            lease: field(3),
        };
        if record.create_revision < 1
            || record.mod_revision < record.create_revision
            || record.version < 1
            || record.lease < 0
        {
            return Err(damaged(&format!("impossible bookkeeping {record:?}")));
        }
        Ok(record)
    }

    fn into_key_value(self, key: &[u8], raw: &[u8]) -> Result<KeyValue, Fail> {
        let key = std::str::from_utf8(key).map_err(|_| {
            Fail::Corrupt(format!(
                "key {:?} is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(&raw[Self::HEADER..]),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

/// One lease. Stored as the value of [`LEASES`]:
///
/// | bytes | field |
/// |---|---|
/// | 0 | layout version, [`LeaseRecord::V1`] |
/// | 1..9 | TTL in milliseconds, u64 little-endian |
/// | 9..17 | expiry in clock milliseconds, u64 little-endian |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseRecord {
    ttl_ms: u64,
    expiry_ms: u64,
}

impl LeaseRecord {
    const V1: u8 = 1;
    const LEN: usize = 17;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0] = Self::V1;
        out[1..9].copy_from_slice(&self.ttl_ms.to_le_bytes());
        out[9..17].copy_from_slice(&self.expiry_ms.to_le_bytes());
        out
    }

    fn decode(id: LeaseId, raw: &[u8]) -> Result<LeaseRecord, Fail> {
        let Ok(raw) = <&[u8; Self::LEN]>::try_from(raw) else {
            return Err(Fail::Corrupt(format!(
                "lease {id:x} is damaged: {} bytes instead of {}",
                raw.len(),
                Self::LEN
            )));
        };
        if raw[0] != Self::V1 {
            return Err(Fail::Corrupt(format!(
                "lease {id:x} is damaged: unknown layout version {}",
                raw[0]
            )));
        }
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        Ok(LeaseRecord {
            ttl_ms: field(1),
            expiry_ms: field(9),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A failure inside the blocking code, turned into a [`KvError`] at the edge.
#[derive(Debug)]
enum Fail {
    Store(redb::Error),
    /// Another handle (this process or another) has the database file locked.
    InUse(PathBuf),
    Unsupported(String),
    Io(String),
    Corrupt(String),
    Rejected(String),
    LeaseNotFound(LeaseId),
}

fn io_fail(e: std::io::Error, what: &str) -> Fail {
    Fail::Io(format!("{what}: {e}"))
}

impl Fail {
    fn into_kv(self, endpoint: &str) -> KvError {
        let endpoint = endpoint.to_owned();
        match self {
            Fail::Store(redb::Error::Corrupted(detail)) => KvError::Corrupt {
                endpoint,
                detail: format!("redb: {detail}"),
            },
            Fail::Store(e) => KvError::Unavailable {
                endpoint,
                detail: format!("redb: {e}"),
            },
            Fail::InUse(path) => KvError::Unavailable {
                detail: format!(
                    "{} is already in use by another process (or by another handle in this \
                     one); only one EmbeddedKv may open a directory at a time",
                    path.display()
                ),
                endpoint,
            },
            Fail::Unsupported(detail) | Fail::Io(detail) => {
                KvError::Unavailable { endpoint, detail }
            }
            Fail::Corrupt(detail) => KvError::Corrupt { endpoint, detail },
            Fail::Rejected(detail) => KvError::Rejected { endpoint, detail },
            Fail::LeaseNotFound(lease) => KvError::LeaseNotFound { lease },
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Fail {
            fn from(e: $error) -> Self {
                Fail::Store(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

#[cfg(test)]
// Reopening waits for a sweep on the blocking pool, and one test lets real time pass to show
// that only the manual clock counts.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::meta::kv::CompareOp;

    const START: u64 = 1_700_000_000_000;

    async fn open(dir: &Path, clock: &ManualClock) -> EmbeddedKv {
        EmbeddedKv::open(dir, Arc::new(clock.clone()))
            .await
            .unwrap()
    }

    /// Opens `dir` again after the last handle was dropped. A lease sweep that was running on
    /// the blocking pool keeps the database open until it ends, so the first attempts may be
    /// refused while it finishes (bounded: 10 s).
    async fn reopen(dir: &Path, clock: &ManualClock) -> EmbeddedKv {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match EmbeddedKv::open(dir, Arc::new(clock.clone())).await {
                Ok(kv) => return kv,
                Err(KvError::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    async fn fresh() -> (tempfile::TempDir, EmbeddedKv, ManualClock) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let kv = open(dir.path(), &clock).await;
        (dir, kv, clock)
    }

    async fn revision(kv: &EmbeddedKv) -> Revision {
        kv.get_prefix("\u{10FFFF}-nothing-here").await.unwrap().1
    }

    /// The revision as stored, read without running expiry first.
    fn raw_revision(kv: &EmbeddedKv) -> Revision {
        let rtx = kv.inner.db.begin_read().unwrap();
        let meta = rtx.open_table(META).unwrap();
        read_meta(&meta, META_REVISION).unwrap().unwrap()
    }

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::put(key, value.to_owned())
    }

    fn get(key: &str) -> TxnOp {
        TxnOp::Get { key: key.into() }
    }

    fn keys(kvs: &[KeyValue]) -> Vec<&str> {
        kvs.iter().map(|kv| kv.key.as_str()).collect()
    }

    #[tokio::test]
    async fn a_new_store_starts_at_revision_one_and_counts_every_change() {
        let (_dir, kv, _) = fresh().await;
        assert_eq!(revision(&kv).await, 1);
        assert_eq!(kv.put("a", "1".into(), None).await.unwrap(), 2);
        let a = kv.get("a").await.unwrap().unwrap();
        assert_eq!(
            a,
            KeyValue {
                key: "a".into(),
                value: "1".into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: 0,
            }
        );
        assert_eq!(kv.put("a", "2".into(), None).await.unwrap(), 3);
        // The same value again is still a change, as in etcd.
        assert_eq!(kv.put("a", "2".into(), None).await.unwrap(), 4);
        let a = kv.get("a").await.unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 3));
        assert_eq!(kv.put("b", "x".into(), None).await.unwrap(), 5);
        assert_eq!(kv.delete("a").await.unwrap(), 1);
        assert_eq!(revision(&kv).await, 6);
        // Deleting a missing key changes nothing and takes no revision.
        assert_eq!(kv.delete("a").await.unwrap(), 0);
        assert_eq!(kv.delete("never").await.unwrap(), 0);
        assert_eq!(revision(&kv).await, 6);
        assert_eq!(kv.get("a").await.unwrap(), None);
        // Re-created: a new life, version from 1.
        assert_eq!(kv.put("a", "3".into(), None).await.unwrap(), 7);
        let a = kv.get("a").await.unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (7, 7, 1));
        let b = kv.get("b").await.unwrap().unwrap();
        assert_eq!((b.create_revision, b.mod_revision, b.version), (5, 5, 1));
    }

    #[tokio::test]
    async fn compares_follow_etcd_rules_on_present_and_missing_keys() {
        let (_dir, kv, _) = fresh().await;
        kv.put("k", "m".into(), None).await.unwrap(); // rev 2
        kv.put("k", "m".into(), None).await.unwrap(); // rev 3, version 2
        use CompareOp::*;
        let cases: Vec<(Compare, bool)> = vec![
            (Compare::value("k", Equal, "m"), true),
            (Compare::value("k", NotEqual, "m"), false),
            (Compare::value("k", Greater, "l"), true),
            (Compare::value("k", Greater, "ma"), false),
            (Compare::value("k", Less, "ma"), true),
            (Compare::value("k", Less, "m"), false),
            (Compare::create_revision("k", Equal, 2), true),
            (Compare::create_revision("k", Greater, 1), true),
            (Compare::create_revision("k", Less, 2), false),
            (Compare::create_revision("k", NotEqual, 0), true),
            (Compare::mod_revision("k", Equal, 3), true),
            (Compare::mod_revision("k", Equal, 2), false),
            (Compare::mod_revision("k", Less, 4), true),
            (Compare::mod_revision("k", Greater, 3), false),
            (Compare::version("k", Equal, 2), true),
            (Compare::version("k", Greater, 1), true),
            (Compare::version("k", Less, 2), false),
            (Compare::version("k", NotEqual, 2), false),
            // A missing key: revisions and version are 0, a value comparison is always false.
            (Compare::value("gone", Equal, ""), false),
            (Compare::value("gone", NotEqual, "x"), false),
            (Compare::value("gone", Less, "x"), false),
            (Compare::value("gone", Greater, ""), false),
            (Compare::create_revision("gone", Equal, 0), true),
            (Compare::create_revision("gone", Greater, 0), false),
            (Compare::mod_revision("gone", Equal, 0), true),
            (Compare::mod_revision("gone", Less, 1), true),
            (Compare::version("gone", Equal, 0), true),
            (Compare::version("gone", NotEqual, 0), false),
        ];
        for (compare, expected) in cases {
            let result = kv
                .txn(Txn {
                    compares: vec![compare.clone()],
                    success: vec![get("k")],
                    failure: vec![],
                })
                .await
                .unwrap();
            assert_eq!(result.succeeded, expected, "{compare:?}");
            assert_eq!(result.results.len(), usize::from(expected), "{compare:?}");
            assert_eq!(result.revision, 3);
        }
        // All comparisons must hold.
        let result = kv
            .txn(Txn {
                compares: vec![
                    Compare::version("k", Equal, 2),
                    Compare::create_revision("gone", Greater, 0),
                ],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert!(!result.succeeded);
    }

    #[tokio::test]
    async fn txn_applies_success_or_failure_and_reports_each_result() {
        let (_dir, kv, _) = fresh().await;
        // Condition write: the first decision is stored, later ones read it back.
        let decide = |v: &str| Txn {
            compares: vec![Compare::create_revision("cw", CompareOp::Equal, 0)],
            success: vec![put("cw", v)],
            failure: vec![get("cw")],
        };
        let first = kv.txn(decide("true")).await.unwrap();
        assert!(first.succeeded);
        assert_eq!(first.revision, 2);
        assert_eq!(first.results, vec![TxnOpResult::Put]);
        let second = kv.txn(decide("false")).await.unwrap();
        assert!(!second.succeeded);
        assert_eq!(second.revision, 2);
        let TxnOpResult::Get(got) = &second.results[0] else {
            panic!("{second:?}");
        };
        assert_eq!(got[0].value, Bytes::from("true"));

        // A failure branch that writes.
        let result = kv
            .txn(Txn {
                compares: vec![Compare::value("cw", CompareOp::Equal, "nope")],
                success: vec![put("s", "1")],
                failure: vec![put("f", "1"), TxnOp::Delete { key: "cw".into() }, get("f")],
            })
            .await
            .unwrap();
        assert!(!result.succeeded);
        assert_eq!(result.revision, 3);
        assert_eq!(result.results.len(), 3);
        assert_eq!(result.results[1], TxnOpResult::Delete(1));
        assert_eq!(kv.get("s").await.unwrap(), None);
        assert_eq!(kv.get("cw").await.unwrap(), None);
        assert_eq!(kv.get("f").await.unwrap().unwrap().mod_revision, 3);
    }

    #[tokio::test]
    async fn operations_in_one_txn_see_earlier_ones_and_share_one_revision() {
        let (_dir, kv, _) = fresh().await;
        kv.put("a", "old".into(), None).await.unwrap(); // rev 2
        let result = kv
            .txn(Txn {
                compares: vec![],
                success: vec![
                    get("a"),
                    put("a", "new"),
                    get("a"),
                    put("b", "b"),
                    TxnOp::GetPrefix { prefix: "".into() },
                    TxnOp::Delete { key: "x".into() },
                    TxnOp::Delete { key: "b".into() },
                    get("b"),
                ],
                failure: vec![],
            })
            .await;
        // Putting a key and deleting it in one branch is refused by etcd.
        assert!(
            matches!(result, Err(KvError::Rejected { .. })),
            "{result:?}"
        );

        let result = kv
            .txn(Txn {
                compares: vec![],
                success: vec![
                    get("a"),
                    put("a", "new"),
                    get("a"),
                    put("b", "b"),
                    TxnOp::GetPrefix { prefix: "".into() },
                    TxnOp::Delete { key: "x".into() },
                ],
                failure: vec![],
            })
            .await
            .unwrap();
        assert_eq!(result.revision, 3);
        let got = |i: usize| match &result.results[i] {
            TxnOpResult::Get(kvs) => kvs.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got(0)[0].value, Bytes::from("old"));
        assert_eq!(got(0)[0].mod_revision, 2);
        let a = &got(2)[0];
        assert_eq!(
            (&a.value[..], a.create_revision, a.mod_revision, a.version),
            (&b"new"[..], 2, 3, 2)
        );
        let all = got(4);
        assert_eq!(keys(&all), ["a", "b"]);
        assert!(all.iter().all(|kv| kv.mod_revision == 3));
        assert_eq!(result.results[5], TxnOpResult::Delete(0));

        // A delete followed by a get in the same txn sees the key gone.
        let result = kv
            .txn(Txn {
                success: vec![TxnOp::Delete { key: "b".into() }, get("b"), get("a")],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(result.revision, 4);
        assert_eq!(result.results[1], TxnOpResult::Get(vec![]));
        assert_eq!(kv.get("a").await.unwrap().unwrap().mod_revision, 3);
    }

    #[tokio::test]
    async fn read_only_and_no_op_txns_keep_the_revision() {
        let (_dir, kv, _) = fresh().await;
        kv.put("a", "1".into(), None).await.unwrap();
        for txn in [
            Txn::default(),
            Txn {
                success: vec![get("a"), TxnOp::GetPrefix { prefix: "".into() }],
                ..Txn::default()
            },
            Txn {
                success: vec![
                    TxnOp::Delete { key: "zz".into() },
                    TxnOp::DeletePrefix {
                        prefix: "nothing/".into(),
                    },
                ],
                ..Txn::default()
            },
            Txn {
                compares: vec![Compare::version("a", CompareOp::Equal, 9)],
                success: vec![put("never", "x")],
                failure: vec![get("a")],
            },
        ] {
            let result = kv.txn(txn.clone()).await.unwrap();
            assert_eq!(result.revision, 2, "{txn:?}");
            assert_eq!(revision(&kv).await, 2, "{txn:?}");
        }
        assert_eq!(kv.get("never").await.unwrap(), None);
    }

    #[tokio::test]
    async fn get_prefix_returns_keys_in_byte_order_and_only_under_the_prefix() {
        let (_dir, kv, _) = fresh().await;
        for key in [
            "logs/b",
            "logs/a/segments/10",
            "logs/a",
            "logs/a/segments/2",
            "logs0",
            "log",
            "logs/é",
            "logs/z",
            "logs/a/segments/1",
            "m",
        ] {
            kv.put(key, key.to_owned().into(), None).await.unwrap();
        }
        let (all, rev) = kv.get_prefix("logs/").await.unwrap();
        assert_eq!(rev, 11);
        assert_eq!(
            keys(&all),
            [
                "logs/a",
                "logs/a/segments/1",
                "logs/a/segments/10",
                "logs/a/segments/2",
                "logs/b",
                "logs/z",
                "logs/é",
            ]
        );
        assert!(all.iter().all(|kv| kv.value == kv.key.as_bytes()));
        let (segments, _) = kv.get_prefix("logs/a/segments/").await.unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(kv.get_prefix("").await.unwrap().0.len(), 10);
        assert!(kv.get_prefix("logs/a/x").await.unwrap().0.is_empty());
        assert!(kv.get_prefix("zzz").await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn delete_prefix_deletes_every_key_under_the_prefix_in_one_revision() {
        let (_dir, kv, _) = fresh().await;
        for key in ["p/1", "p/2", "p/2/x", "p", "q/1"] {
            kv.put(key, "v".into(), None).await.unwrap();
        }
        let result = kv
            .txn(Txn {
                success: vec![TxnOp::DeletePrefix {
                    prefix: "p/".into(),
                }],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(result.results, vec![TxnOpResult::Delete(3)]);
        assert_eq!(result.revision, 7);
        assert_eq!(keys(&kv.get_prefix("").await.unwrap().0), ["p", "q/1"]);
        let result = kv
            .txn(Txn {
                success: vec![TxnOp::DeletePrefix {
                    prefix: "p/".into(),
                }],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(result.results, vec![TxnOpResult::Delete(0)]);
        assert_eq!(result.revision, 7);
        // An empty prefix is every key.
        let result = kv
            .txn(Txn {
                success: vec![TxnOp::DeletePrefix { prefix: "".into() }],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(result.results, vec![TxnOpResult::Delete(2)]);
        assert_eq!(result.revision, 8);
    }

    #[tokio::test]
    async fn requests_etcd_refuses_are_rejected_and_change_nothing() {
        let (_dir, kv, _) = fresh().await;
        kv.put("a", "1".into(), None).await.unwrap();
        let many = |n: usize| {
            (0..n)
                .map(|i| put(&format!("k{i}"), "v"))
                .collect::<Vec<_>>()
        };
        assert!(
            kv.txn(Txn {
                success: many(MAX_TXN_OPS),
                ..Txn::default()
            })
            .await
            .is_ok()
        );
        let rev = revision(&kv).await;
        let refused = [
            Txn {
                success: many(MAX_TXN_OPS + 1),
                ..Txn::default()
            },
            Txn {
                compares: vec![Compare::version("a", CompareOp::Equal, 1); MAX_TXN_OPS + 1],
                ..Txn::default()
            },
            Txn {
                success: vec![put("d", "1"), put("d", "2")],
                ..Txn::default()
            },
            Txn {
                failure: vec![put("d", "1"), TxnOp::Delete { key: "d".into() }],
                ..Txn::default()
            },
            Txn {
                success: vec![TxnOp::DeletePrefix { prefix: "d".into() }, put("dd", "1")],
                ..Txn::default()
            },
            Txn {
                success: vec![put("", "1")],
                ..Txn::default()
            },
            Txn {
                success: vec![get("")],
                ..Txn::default()
            },
            Txn {
                compares: vec![Compare::version("", CompareOp::Equal, 0)],
                ..Txn::default()
            },
        ];
        for txn in refused {
            let result = kv.txn(txn.clone()).await;
            assert!(
                matches!(result, Err(KvError::Rejected { .. })),
                "{txn:?}: {result:?}"
            );
        }
        assert!(matches!(
            kv.put("", "x".into(), None).await,
            Err(KvError::Rejected { .. })
        ));
        assert!(matches!(kv.get("").await, Err(KvError::Rejected { .. })));
        assert!(matches!(kv.delete("").await, Err(KvError::Rejected { .. })));
        assert!(matches!(
            kv.lease_grant(Duration::ZERO).await,
            Err(KvError::Rejected { .. })
        ));
        assert_eq!(revision(&kv).await, rev);
        assert_eq!(kv.get("d").await.unwrap(), None);
        // Puts of one key in different branches, or deletes overlapping each other, are fine.
        let ok = kv
            .txn(Txn {
                success: vec![
                    put("d", "1"),
                    TxnOp::Delete { key: "e".into() },
                    TxnOp::DeletePrefix { prefix: "e".into() },
                ],
                failure: vec![put("d", "2")],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert!(ok.succeeded);
    }

    #[tokio::test]
    async fn leases_expire_exactly_when_the_clock_passes_their_ttl() {
        let (_dir, kv, clock) = fresh().await;
        let lease = kv.lease_grant(Duration::from_secs(10)).await.unwrap();
        assert_ne!(lease, 0);
        kv.put("owned", "1".into(), Some(lease)).await.unwrap(); // rev 2
        kv.put("owned2", "1".into(), Some(lease)).await.unwrap(); // rev 3
        kv.put("free", "1".into(), None).await.unwrap(); // rev 4
        assert_eq!(kv.get("owned").await.unwrap().unwrap().lease, lease);

        clock.advance(Duration::from_millis(9_999));
        assert!(kv.get("owned").await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        // Expired at exactly the TTL, whatever the background task did meanwhile: the read
        // itself revokes the lease first, both keys going in one revision.
        assert_eq!(kv.get("owned").await.unwrap(), None);
        let (left, rev) = kv.get_prefix("").await.unwrap();
        assert_eq!(keys(&left), ["free"]);
        assert_eq!(rev, 5);
        assert!(matches!(
            kv.lease_keep_alive(lease).await,
            Err(KvError::LeaseNotFound { lease: l }) if l == lease
        ));
        // Compares see the expiry too.
        let result = kv
            .txn(Txn {
                compares: vec![Compare::create_revision("owned2", CompareOp::Equal, 0)],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert!(result.succeeded);
        assert_eq!(result.revision, 5);
    }

    #[tokio::test]
    async fn expiry_inside_a_write_takes_its_own_revision_before_the_write() {
        let (_dir, kv, clock) = fresh().await;
        let lease = kv.lease_grant(Duration::from_secs(1)).await.unwrap();
        kv.put("owned", "1".into(), Some(lease)).await.unwrap(); // rev 2
        clock.advance(Duration::from_secs(1));
        let result = kv
            .txn(Txn {
                compares: vec![Compare::version("owned", CompareOp::Equal, 0)],
                success: vec![put("after", "1")],
                failure: vec![],
            })
            .await
            .unwrap();
        assert!(result.succeeded);
        // Revision 3 is the lease's revocation, 4 the txn.
        assert_eq!(result.revision, 4);
        assert_eq!(kv.get("after").await.unwrap().unwrap().mod_revision, 4);
    }

    #[tokio::test]
    async fn keep_alive_extends_a_lease_and_fails_once_it_expired() {
        let (_dir, kv, clock) = fresh().await;
        let lease = kv.lease_grant(Duration::from_millis(1_500)).await.unwrap();
        kv.put("k", "1".into(), Some(lease)).await.unwrap();
        for _ in 0..5 {
            clock.advance(Duration::from_millis(1_000));
            assert_eq!(
                kv.lease_keep_alive(lease).await.unwrap(),
                Duration::from_millis(1_500)
            );
        }
        assert!(kv.get("k").await.unwrap().is_some());
        clock.advance(Duration::from_millis(1_499));
        assert!(kv.get("k").await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        assert!(kv.get("k").await.unwrap().is_none());
        assert!(matches!(
            kv.lease_keep_alive(lease).await,
            Err(KvError::LeaseNotFound { .. })
        ));
        assert!(matches!(
            kv.lease_keep_alive(424_242).await,
            Err(KvError::LeaseNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn revoke_deletes_the_lease_keys_in_one_revision() {
        let (_dir, kv, _) = fresh().await;
        let a = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        let b = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        assert!(b > a);
        kv.put("a1", "1".into(), Some(a)).await.unwrap();
        kv.put("a2", "1".into(), Some(a)).await.unwrap();
        kv.put("b1", "1".into(), Some(b)).await.unwrap(); // rev 4
        kv.lease_revoke(a).await.unwrap();
        let (left, rev) = kv.get_prefix("").await.unwrap();
        assert_eq!(keys(&left), ["b1"]);
        assert_eq!(rev, 5);
        // Revoking again, or a lease that never was, is not an error and changes nothing.
        kv.lease_revoke(a).await.unwrap();
        kv.lease_revoke(987_654).await.unwrap();
        // A lease without keys goes without a revision.
        let c = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.lease_revoke(c).await.unwrap();
        assert_eq!(revision(&kv).await, 5);
        assert!(matches!(
            kv.put("c", "1".into(), Some(c)).await,
            Err(KvError::LeaseNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn put_with_an_unknown_lease_fails_the_whole_txn() {
        let (_dir, kv, _) = fresh().await;
        kv.put("a", "1".into(), None).await.unwrap();
        let result = kv
            .txn(Txn {
                success: vec![
                    put("a", "2"),
                    TxnOp::Delete { key: "a2".into() },
                    TxnOp::Put {
                        key: "b".into(),
                        value: "1".into(),
                        lease: Some(77),
                    },
                ],
                ..Txn::default()
            })
            .await;
        assert!(
            matches!(result, Err(KvError::LeaseNotFound { lease: 77 })),
            "{result:?}"
        );
        assert_eq!(revision(&kv).await, 2);
        assert_eq!(kv.get("a").await.unwrap().unwrap().value, Bytes::from("1"));
        assert_eq!(kv.get("b").await.unwrap(), None);
        // Only the branch taken is checked, as in etcd; lease 0 is "no lease".
        let result = kv
            .txn(Txn {
                compares: vec![Compare::version("a", CompareOp::Equal, 1)],
                success: vec![TxnOp::Put {
                    key: "b".into(),
                    value: "1".into(),
                    lease: Some(0),
                }],
                failure: vec![TxnOp::Put {
                    key: "c".into(),
                    value: "1".into(),
                    lease: Some(77),
                }],
            })
            .await
            .unwrap();
        assert!(result.succeeded);
        assert_eq!(kv.get("b").await.unwrap().unwrap().lease, 0);
    }

    #[tokio::test]
    async fn re_putting_a_key_moves_it_between_leases() {
        let (_dir, kv, _) = fresh().await;
        let a = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        let b = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.put("to-b", "1".into(), Some(a)).await.unwrap();
        kv.put("to-none", "1".into(), Some(a)).await.unwrap();
        kv.put("to-b", "2".into(), Some(b)).await.unwrap();
        kv.put("to-none", "2".into(), None).await.unwrap();
        kv.lease_revoke(a).await.unwrap();
        let (left, _) = kv.get_prefix("").await.unwrap();
        assert_eq!(keys(&left), ["to-b", "to-none"]);
        assert_eq!(left[0].lease, b);
        assert_eq!(left[1].lease, 0);
        kv.lease_revoke(b).await.unwrap();
        assert_eq!(keys(&kv.get_prefix("").await.unwrap().0), ["to-none"]);
        // Deleted keys leave no trace in the index: a key re-created without a lease survives.
        let c = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.put("k", "1".into(), Some(c)).await.unwrap();
        kv.delete("k").await.unwrap();
        kv.put("k", "2".into(), None).await.unwrap();
        kv.lease_revoke(c).await.unwrap();
        assert!(kv.get("k").await.unwrap().is_some());
        // Nor do keys deleted by prefix: revoking their lease deletes nothing, takes no revision.
        let d = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.put("gone/1", "1".into(), Some(d)).await.unwrap();
        kv.txn(Txn {
            success: vec![TxnOp::DeletePrefix {
                prefix: "gone/".into(),
            }],
            ..Txn::default()
        })
        .await
        .unwrap();
        let before = revision(&kv).await;
        kv.lease_revoke(d).await.unwrap();
        assert_eq!(revision(&kv).await, before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_compare_and_swap_writers_never_lose_an_increment() {
        let (_dir, kv, _) = fresh().await;
        let workers = (0..8)
            .map(|w| {
                let kv = kv.clone();
                tokio::spawn(async move {
                    let mut done = 0;
                    while done < 25 {
                        let current = kv.get("counter").await.unwrap();
                        let (n, rev) = current.map_or((0, 0), |c| {
                            (
                                std::str::from_utf8(&c.value)
                                    .unwrap()
                                    .parse::<u64>()
                                    .unwrap(),
                                c.mod_revision,
                            )
                        });
                        let result = kv
                            .txn(Txn {
                                compares: vec![Compare::mod_revision(
                                    "counter",
                                    CompareOp::Equal,
                                    rev,
                                )],
                                success: vec![
                                    put("counter", &(n + 1).to_string()),
                                    put(&format!("by/{w}/{done}"), &(n + 1).to_string()),
                                ],
                                failure: vec![get("counter")],
                            })
                            .await
                            .unwrap();
                        if result.succeeded {
                            done += 1;
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        for worker in workers {
            worker.await.unwrap();
        }
        let counter = kv.get("counter").await.unwrap().unwrap();
        assert_eq!(counter.value, Bytes::from("200"));
        assert_eq!(counter.version, 200);
        assert_eq!(revision(&kv).await, 201);
        let (by, _) = kv.get_prefix("by/").await.unwrap();
        let mut values: Vec<u64> = by
            .iter()
            .map(|kv| std::str::from_utf8(&kv.value).unwrap().parse().unwrap())
            .collect();
        values.sort_unstable();
        assert_eq!(values, (1..=200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_background_task_expires_leases_without_any_request() {
        let (_dir, kv, clock) = fresh().await;
        let lease = kv.lease_grant(Duration::from_secs(5)).await.unwrap();
        kv.put("k", "1".into(), Some(lease)).await.unwrap();
        assert_eq!(raw_revision(&kv), 2);
        clock.advance(Duration::from_secs(5));
        ::clock::testing::eventually("the expiry task to delete the key", || {
            raw_revision(&kv) != 2
        })
        .await;
        assert_eq!(raw_revision(&kv), 3);
        let rtx = kv.inner.db.begin_read().unwrap();
        assert!(
            rtx.open_table(KEYS)
                .unwrap()
                .get(b"k".as_slice())
                .unwrap()
                .is_none()
        );
        assert!(rtx.open_table(LEASES).unwrap().is_empty().unwrap());
    }

    #[tokio::test]
    async fn everything_survives_a_reopen_and_leases_get_a_fresh_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let (lease, last_lease) = {
            let kv = open(dir.path(), &clock).await;
            kv.put("a", "1".into(), None).await.unwrap();
            kv.put("a", "2".into(), None).await.unwrap();
            let lease = kv.lease_grant(Duration::from_secs(10)).await.unwrap();
            let last = kv.lease_grant(Duration::from_secs(10)).await.unwrap();
            kv.put("owned", "1".into(), Some(lease)).await.unwrap(); // rev 4
            clock.advance(Duration::from_secs(8));
            (lease, last)
        };
        // Down for longer than the TTL: the lease survives with a full TTL from the reopen.
        clock.advance(Duration::from_secs(60));
        let kv = reopen(dir.path(), &clock).await;
        assert_eq!(revision(&kv).await, 4);
        let a = kv.get("a").await.unwrap().unwrap();
        assert_eq!(
            (&a.value[..], a.create_revision, a.mod_revision, a.version),
            (&b"2"[..], 2, 3, 2)
        );
        assert_eq!(kv.get("owned").await.unwrap().unwrap().lease, lease);
        let next = kv.lease_grant(Duration::from_secs(10)).await.unwrap();
        assert!(next > last_lease, "lease ids are never reused");
        assert_eq!(kv.put("b", "1".into(), None).await.unwrap(), 5);
        clock.advance(Duration::from_millis(9_999));
        assert!(kv.get("owned").await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        assert!(kv.get("owned").await.unwrap().is_none());
        assert_eq!(revision(&kv).await, 6);
        drop(kv);
        let kv = reopen(dir.path(), &clock).await;
        assert_eq!(revision(&kv).await, 6);
        assert!(kv.lease_grant(Duration::from_secs(1)).await.unwrap() > next);
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_is_refused() {
        let (dir, kv, clock) = fresh().await;
        kv.put("a", "1".into(), None).await.unwrap();
        let second = EmbeddedKv::open(dir.path(), Arc::new(clock.clone())).await;
        match second {
            Err(KvError::Unavailable { endpoint, detail }) => {
                assert_eq!(endpoint, dir.path().display().to_string());
                assert!(
                    detail.contains("already in use by another process"),
                    "{detail}"
                );
                assert!(detail.contains(&endpoint), "{detail}");
            }
            other => panic!("a second open must be refused: {other:?}"),
        }
        // The first handle is unharmed.
        assert_eq!(kv.put("a", "2".into(), None).await.unwrap(), 3);
        assert_eq!(kv.get("a").await.unwrap().unwrap().version, 2);
        assert_eq!(kv.endpoint(), dir.path().display().to_string());
        assert!(format!("{kv:?}").contains("EmbeddedKv"));
        // Dropping every clone releases the directory.
        let clone = kv.clone();
        drop(kv);
        assert!(
            EmbeddedKv::open(dir.path(), Arc::new(clock.clone()))
                .await
                .is_err()
        );
        drop(clone);
        let kv = EmbeddedKv::open(dir.path(), Arc::new(clock.clone()))
            .await
            .unwrap();
        assert_eq!(kv.get("a").await.unwrap().unwrap().mod_revision, 3);
    }

    #[tokio::test]
    async fn a_damaged_record_is_reported_as_corrupt_naming_the_key() {
        let (_dir, kv, _) = fresh().await;
        kv.put("good", "1".into(), None).await.unwrap();
        {
            let wtx = kv.inner.db.begin_write().unwrap();
            wtx.open_table(KEYS)
                .unwrap()
                .insert(b"logs/bad".as_slice(), [1u8, 2, 3].as_slice())
                .unwrap();
            wtx.commit().unwrap();
        }
        for result in [
            kv.get("logs/bad").await.map(drop),
            kv.get_prefix("logs/").await.map(drop),
            kv.put("logs/bad", "x".into(), None).await.map(drop),
            kv.delete("logs/bad").await.map(drop),
        ] {
            match result {
                Err(KvError::Corrupt { detail, .. }) => {
                    assert!(detail.contains("logs/bad"), "{detail}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(kv.get("good").await.unwrap().is_some());
    }

    #[test]
    fn record_layouts_are_pinned() {
        let record = Record {
            create_revision: 2,
            mod_revision: 0x0102,
            version: 3,
            lease: 0x7f,
        };
        let bytes = record.encode(b"val");
        assert_eq!(
            bytes,
            [
                1, //
                2, 0, 0, 0, 0, 0, 0, 0, //
                2, 1, 0, 0, 0, 0, 0, 0, //
                3, 0, 0, 0, 0, 0, 0, 0, //
                0x7f, 0, 0, 0, 0, 0, 0, 0, //
                b'v', b'a', b'l',
            ]
        );
        assert_eq!(Record::decode(b"k", &bytes).unwrap(), record);
        let kv = record.into_key_value(b"k", &bytes).unwrap();
        assert_eq!(kv.value, Bytes::from("val"));

        let lease = LeaseRecord {
            ttl_ms: 15_000,
            expiry_ms: 0x0102_0304,
        };
        assert_eq!(
            lease.encode(),
            [1, 0x98, 0x3a, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        assert_eq!(LeaseRecord::decode(1, &lease.encode()).unwrap(), lease);
    }

    #[test]
    fn decoding_damaged_bytes_never_panics() {
        let good = Record {
            create_revision: 5,
            mod_revision: 9,
            version: 2,
            lease: 0,
        }
        .encode(b"value");
        for len in 0..Record::HEADER {
            let result = Record::decode(b"k", &good[..len]);
            assert!(
                matches!(&result, Err(Fail::Corrupt(d)) if d.contains("\"k\"")),
                "{result:?}"
            );
        }
        let mut bad_version = good.clone();
        bad_version[0] = 2;
        assert!(Record::decode(b"k", &bad_version).is_err());
        let mut impossible = good.clone();
        impossible[9..17].copy_from_slice(&1i64.to_le_bytes()); // mod < create
        assert!(Record::decode(b"k", &impossible).is_err());
        assert!(
            Record::decode(b"k", &good)
                .unwrap()
                .into_key_value(&[0xff, 0xfe], &good)
                .is_err()
        );
        // Arbitrary bytes: an error or a record, never a panic.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            if let Ok(record) = Record::decode(b"k", &bytes) {
                let _ = record.into_key_value(b"k", &bytes);
            }
            let _ = LeaseRecord::decode(1, &bytes);
        }
        assert!(LeaseRecord::decode(1, &[1; 16]).is_err());
        assert!(LeaseRecord::decode(1, &[2; 17]).is_err());
    }

    #[tokio::test]
    async fn the_manual_clock_is_the_only_time_source() {
        // No keep-alives and plenty of real time: a lease lives until the clock says otherwise.
        let (_dir, kv, clock) = fresh().await;
        let lease = kv.lease_grant(Duration::from_millis(50)).await.unwrap();
        kv.put("k", "1".into(), Some(lease)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(kv.get("k").await.unwrap().is_some());
        assert_eq!(clock.now_millis(), START);
    }
}
