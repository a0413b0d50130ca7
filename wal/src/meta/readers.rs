//! A reader's recorded position (`<P>/readers/<logId>/<reader>`), kept alive under a lease.
//!
//! Retention never collects segments a live reader may still need: it reads these records.
//! The record sits under a 60 s lease that a background task renews every 20 s for as long as
//! the registration lives (Go Woodpecker fixed the same record expiring 60 s after open in
//! v0.1.38). If the lease is lost anyway (the store was unreachable for a minute), the next
//! renewal or update puts the record back under a new lease. Closing deletes the record;
//! dropping without closing stops the renewals and lets the lease remove it.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto::meta::ReaderTempInfo;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::error::MetaResult;
use super::kv::{Kv, KvError, LeaseId};
use crate::clock::ClockRef;

/// The lease TTL of a reader record (Go: 60 s).
pub const READER_LEASE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct State {
    info: ReaderTempInfo,
    lease: LeaseId,
}

#[derive(Debug)]
struct Shared {
    kv: Arc<dyn Kv>,
    key: String,
    clock: ClockRef,
    state: Mutex<State>,
}

impl Shared {
    /// Writes the record under the current lease, granting a new one if it is gone.
    async fn write(&self, state: &mut State) -> MetaResult<()> {
        let value = bytes::Bytes::from(state.info.encode_to_vec());
        match self
            .kv
            .put(&self.key, value.clone(), Some(state.lease))
            .await
        {
            Ok(_) => Ok(()),
            Err(KvError::LeaseNotFound { .. }) => {
                state.lease = self.kv.lease_grant(READER_LEASE_TTL).await?;
                self.kv.put(&self.key, value, Some(state.lease)).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A live reader record.
#[derive(Debug)]
pub struct ReaderRegistration {
    shared: Arc<Shared>,
    renewer: JoinHandle<()>,
}

impl ReaderRegistration {
    pub(crate) async fn start(
        kv: Arc<dyn Kv>,
        key: String,
        info: ReaderTempInfo,
        clock: ClockRef,
    ) -> MetaResult<ReaderRegistration> {
        let lease = kv.lease_grant(READER_LEASE_TTL).await?;
        let shared = Arc::new(Shared {
            kv,
            key,
            clock,
            state: Mutex::new(State { info, lease }),
        });
        {
            let mut state = shared.state.lock().await;
            shared.write(&mut state).await?;
        }
        let renewer = tokio::spawn(renew(Arc::clone(&shared)));
        Ok(ReaderRegistration { shared, renewer })
    }

    /// The record as last written.
    pub async fn info(&self) -> ReaderTempInfo {
        self.shared.state.lock().await.info.clone()
    }

    /// The record's key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Records the reader's most recent position.
    pub async fn update(&self, segment_id: i64, entry_id: i64) -> MetaResult<()> {
        let mut state = self.shared.state.lock().await;
        state.info.recent_read_segment_id = segment_id;
        state.info.recent_read_entry_id = entry_id;
        state.info.recent_read_timestamp = self.shared.clock.now_millis();
        self.shared.write(&mut state).await
    }

    /// Deletes the record and ends its lease.
    pub async fn close(self) -> MetaResult<()> {
        self.renewer.abort();
        let state = self.shared.state.lock().await;
        self.shared.kv.delete(&self.shared.key).await?;
        match self.shared.kv.lease_revoke(state.lease).await {
            Ok(()) | Err(KvError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for ReaderRegistration {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(shared: Arc<Shared>) {
    loop {
        shared.clock.sleep(READER_LEASE_TTL / 3).await;
        let mut state = shared.state.lock().await;
        match shared.kv.lease_keep_alive(state.lease).await {
            Ok(_) => {}
            Err(KvError::LeaseNotFound { .. }) => {
                if let Err(e) = shared.write(&mut state).await {
                    tracing::warn!(key = %shared.key, error = %e, "cannot restore reader record");
                }
            }
            Err(e) => tracing::warn!(key = %shared.key, error = %e, "reader lease renewal failed"),
        }
    }
}
