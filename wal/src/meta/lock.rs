//! The writer lock of a log: etcd's mutex protocol on a session lease, as Go's
//! `concurrency.Mutex` runs it, so Go and Rust writers exclude each other.
//!
//! A holder puts `<P>/logs/<name>/lock/<lease id in hex>` (empty value) under its session lease;
//! the holder is the key with the lowest `create_revision` under the lock prefix. `try_acquire`
//! never waits and never touches another holder's key: if someone else holds the lock, our key
//! is removed again and [`MetaError::LockHeld`] is returned. A holder that dies stops renewing
//! its lease; after the session TTL (15 s by default) the lease expires, its key goes, and the
//! lock is free. A live holder renews every `check_interval`; after `max_failures` renewals in a
//! row fail, or as soon as the lease is reported gone, the lock is marked lost and the writer
//! must stop ([`WriterLock::is_valid`], [`WriterLock::lost`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::{MetaError, MetaResult};
use super::kv::{Compare, CompareOp, KeyValue, Kv, KvError, LeaseId, Txn, TxnOp, TxnOpResult};
use crate::clock::ClockRef;

/// Session and monitoring settings (`woodpecker.client.sessionMonitor` and the Go constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    /// Session lease TTL (Go: 15 s).
    pub ttl: Duration,
    /// How often the session is renewed and checked (`sessionMonitor.checkInterval`, 3 s).
    pub check_interval: Duration,
    /// Renewal failures in a row that mark the lock lost (`sessionMonitor.maxFailures`, 5).
    pub max_failures: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(15),
            check_interval: Duration::from_secs(3),
            max_failures: 5,
        }
    }
}

/// A held writer lock. Dropping it without [`release`](Self::release) stops the renewals, so
/// the lock frees itself when the lease runs out, as if the process had died.
#[derive(Debug)]
pub struct WriterLock {
    kv: Arc<dyn Kv>,
    log: String,
    key: String,
    lease: LeaseId,
    valid: Arc<AtomicBool>,
    lost: watch::Receiver<bool>,
    monitor: JoinHandle<()>,
}

impl WriterLock {
    pub(crate) async fn try_acquire(
        kv: Arc<dyn Kv>,
        log: &str,
        lock_prefix: String,
        options: LockOptions,
        clock: ClockRef,
    ) -> MetaResult<WriterLock> {
        let lease = kv.lease_grant(options.ttl).await?;
        let key = format!("{lock_prefix}/{lease:x}");
        let holders_prefix = format!("{lock_prefix}/");
        let attempt = kv
            .txn(Txn {
                compares: vec![Compare::create_revision(&key, CompareOp::Equal, 0)],
                success: vec![
                    TxnOp::Put {
                        key: key.clone(),
                        value: Bytes::new(),
                        lease: Some(lease),
                    },
                    TxnOp::GetPrefix {
                        prefix: holders_prefix.clone(),
                    },
                ],
                failure: vec![TxnOp::GetPrefix {
                    prefix: holders_prefix,
                }],
            })
            .await;
        let out = match attempt {
            Ok(out) => out,
            Err(e) => {
                let _ = kv.lease_revoke(lease).await;
                return Err(e.into());
            }
        };
        let holders: &[KeyValue] = match out.results.last() {
            Some(TxnOpResult::Get(kvs)) => kvs,
            _ => &[],
        };
        let owner = holders.iter().min_by_key(|kv| kv.create_revision);
        match owner {
            Some(owner) if owner.key == key => {}
            other => {
                let holder = other.map_or_else(|| "unknown".to_string(), |kv| kv.key.clone());
                // Leave nothing behind: our key and our session go.
                let _ = kv.delete(&key).await;
                let _ = kv.lease_revoke(lease).await;
                return Err(MetaError::LockHeld {
                    log: log.to_string(),
                    holder,
                });
            }
        }
        let valid = Arc::new(AtomicBool::new(true));
        let (lost_tx, lost) = watch::channel(false);
        let monitor = tokio::spawn(monitor(
            Arc::clone(&kv),
            lease,
            options,
            clock,
            Arc::clone(&valid),
            lost_tx,
            log.to_string(),
        ));
        Ok(WriterLock {
            kv,
            log: log.to_string(),
            key,
            lease,
            valid,
            lost,
            monitor,
        })
    }

    /// Whether the lock is still held (its session is alive).
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// Resolves when the lock is lost.
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Fails with [`MetaError::LockLost`] when the lock is no longer held.
    pub fn check(&self) -> MetaResult<()> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(MetaError::LockLost {
                log: self.log.clone(),
                detail: "the lock session expired or could not be renewed".into(),
            })
        }
    }

    /// The holder key (`<P>/logs/<name>/lock/<lease hex>`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Releases the lock: deletes the key and ends the session.
    pub async fn release(self) -> MetaResult<()> {
        self.unlock().await
    }

    /// [`release`](Self::release) through a shared reference: for a lock that other tasks
    /// still watch. The lock is invalid afterwards.
    pub async fn unlock(&self) -> MetaResult<()> {
        self.monitor.abort();
        self.valid.store(false, Ordering::Release);
        self.kv.delete(&self.key).await?;
        match self.kv.lease_revoke(self.lease).await {
            Ok(()) | Err(KvError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

async fn monitor(
    kv: Arc<dyn Kv>,
    lease: LeaseId,
    options: LockOptions,
    clock: ClockRef,
    valid: Arc<AtomicBool>,
    lost: watch::Sender<bool>,
    log: String,
) {
    let mut failures = 0u32;
    loop {
        clock.sleep(options.check_interval).await;
        match kv.lease_keep_alive(lease).await {
            Ok(_) => failures = 0,
            Err(KvError::LeaseNotFound { .. }) => {
                tracing::warn!(log, "writer lock session expired");
                break;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(log, failures, error = %e, "writer lock renewal failed");
                if failures >= options.max_failures {
                    break;
                }
            }
        }
    }
    valid.store(false, Ordering::Release);
    lost.send_replace(true);
}
