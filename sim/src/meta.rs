//! Metadata-store faults: a [`Kv`] decorator that fails calls before or after applying them
//! and delays them, decided from the seed and the call's number (the run's path is
//! deterministic, so the same calls meet the same faults on every run of a seed).
//!
//! A failure after applying is what a client of etcd sees when a request times out or its
//! connection drops after the server committed it: the change is in, the answer is lost. Only
//! calls that change something can meet it. Faults are on only while [`FaultyKv::set_on`] says
//! so (the write phase); setting up and healing see a healthy store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use wal::meta::kv::{KeyValue, Kv, KvError, Revision, Txn, TxnOp, TxnResult};

use crate::plan::{MetaFaults, draw};

/// The store's name in messages: the same in every run (the real store's directory is a
/// fresh temporary one each time, and messages go into the run's trace).
const ENDPOINT: &str = "sim-metadata";

/// Faults injected, by kind.
#[derive(Debug, Default)]
pub struct MetaCounts {
    /// Calls failed before they were applied.
    pub errors_before: AtomicU64,
    /// Calls applied, then failed.
    pub errors_after: AtomicU64,
    /// Calls delayed.
    pub delayed: AtomicU64,
}

/// A [`Kv`] that injects the faults of a [`MetaFaults`] plan into another.
#[derive(Debug)]
pub struct FaultyKv {
    inner: Arc<dyn Kv>,
    seed: u64,
    faults: MetaFaults,
    on: AtomicBool,
    calls: AtomicU64,
    /// A key fragment: the next change to a key containing it is applied, then fails.
    fail_next_change_to: std::sync::Mutex<Option<String>>,
    /// What was injected.
    pub counts: MetaCounts,
}

/// What happens to one call.
enum Fate {
    FailBefore,
    Apply { delay: Duration, fail_after: bool },
}

impl FaultyKv {
    /// Wraps `inner`; faults start off.
    pub fn new(inner: Arc<dyn Kv>, seed: u64, faults: MetaFaults) -> Self {
        FaultyKv {
            inner,
            seed,
            faults,
            on: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            fail_next_change_to: std::sync::Mutex::new(None),
            counts: MetaCounts::default(),
        }
    }

    /// Switches the faults on or off.
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// Makes the next change (a put, a delete, a transaction that changes something) to a
    /// key containing `fragment` be applied and then fail, as if its answer were lost; for a
    /// test that needs that fault at one exact call. Independent of [`FaultyKv::set_on`].
    pub fn fail_next_change_to(&self, fragment: &str) {
        *self
            .fail_next_change_to
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fragment.to_string());
    }

    /// Whether a change to `keys` is the one [`FaultyKv::fail_next_change_to`] asked for
    /// (and clears that request).
    fn targeted<'a>(&self, mut keys: impl Iterator<Item = &'a str>) -> bool {
        let mut target = self
            .fail_next_change_to
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let hit = target
            .as_deref()
            .is_some_and(|fragment| keys.any(|k| k.contains(fragment)));
        if hit {
            *target = None;
            self.counts.errors_after.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    fn fate(&self, writes: bool) -> Fate {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if !self.on.load(Ordering::SeqCst) {
            return Fate::Apply {
                delay: Duration::ZERO,
                fail_after: false,
            };
        }
        let f = &self.faults;
        // A salt apart from the transport's and the object store's draws.
        let at = |k: u64| draw(self.seed ^ 0x6d65_7461, call, k);
        if at(0) < f.error_before {
            self.counts.errors_before.fetch_add(1, Ordering::Relaxed);
            return Fate::FailBefore;
        }
        let delay = if at(1) < f.delay {
            self.counts.delayed.fetch_add(1, Ordering::Relaxed);
            f.max_delay.mul_f64(at(2))
        } else {
            Duration::ZERO
        };
        let fail_after = writes && at(3) < f.error_after;
        if fail_after {
            self.counts.errors_after.fetch_add(1, Ordering::Relaxed);
        }
        Fate::Apply { delay, fail_after }
    }

    fn unavailable(&self, what: &str) -> KvError {
        KvError::Unavailable {
            endpoint: ENDPOINT.into(),
            detail: format!("simulated: {what}"),
        }
    }

    /// Runs `call` under the call's fate.
    async fn call<T>(
        &self,
        writes: bool,
        call: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        self.call_targeted(writes, false, call).await
    }

    /// [`FaultyKv::call`], failing after applying when `targeted`.
    async fn call_targeted<T>(
        &self,
        writes: bool,
        targeted: bool,
        call: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        if targeted {
            return call
                .await
                .and_then(|_| Err(self.unavailable("applied, then the answer was lost")));
        }
        match self.fate(writes) {
            Fate::FailBefore => Err(self.unavailable("request failed before it was applied")),
            Fate::Apply { delay, fail_after } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let out = call.await;
                if fail_after && out.is_ok() {
                    return Err(self.unavailable("applied, then the answer was lost"));
                }
                out
            }
        }
    }
}

#[async_trait]
impl Kv for FaultyKv {
    fn endpoint(&self) -> String {
        ENDPOINT.into()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.call(false, self.inner.get(key)).await
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        self.call(false, self.inner.get_prefix(prefix)).await
    }

    async fn has_prefix(&self, prefix: &str) -> Result<bool, KvError> {
        self.call(false, self.inner.has_prefix(prefix)).await
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<i64>) -> Result<Revision, KvError> {
        let targeted = self.targeted(std::iter::once(key));
        self.call_targeted(true, targeted, self.inner.put(key, value, lease))
            .await
    }

    async fn delete(&self, key: &str) -> Result<u64, KvError> {
        let targeted = self.targeted(std::iter::once(key));
        self.call_targeted(true, targeted, self.inner.delete(key))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, KvError> {
        let writes = txn
            .success
            .iter()
            .chain(&txn.failure)
            .any(|op| !matches!(op, TxnOp::Get { .. } | TxnOp::GetPrefix { .. }));
        let targeted =
            writes
                && self.targeted(txn.success.iter().chain(&txn.failure).filter_map(
                    |op| match op {
                        TxnOp::Put { key, .. } | TxnOp::Delete { key } => Some(key.as_str()),
                        TxnOp::DeletePrefix { prefix } => Some(prefix.as_str()),
                        TxnOp::Get { .. } | TxnOp::GetPrefix { .. } => None,
                    },
                ));
        self.call_targeted(writes, targeted, self.inner.txn(txn))
            .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64, KvError> {
        self.call(true, self.inner.lease_grant(ttl)).await
    }

    async fn lease_keep_alive(&self, lease: i64) -> Result<Duration, KvError> {
        self.call(true, self.inner.lease_keep_alive(lease)).await
    }

    async fn lease_revoke(&self, lease: i64) -> Result<(), KvError> {
        self.call(true, self.inner.lease_revoke(lease)).await
    }
}
