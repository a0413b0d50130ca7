//! The client: [`Client`], [`LogHandle`] and [`LogWriter`] in embedded mode (spec §2.1–2.3,
//! §6.1, §6.4, §6.5).
//!
//! Embedded mode is a quorum of one: every segment is written to the in-process
//! [`LogStore`] and its metadata records the fixed [`embedded_quorum`]. Metadata goes through
//! a [`MetadataProvider`] (etcd or the embedded store) with the Go compare-and-swap guards, so
//! one writer per log is enforced by fencing (`open_writer` fences and completes every active
//! segment) and by the guards (a lost race invalidates the older writer, code 1405).

mod error;
mod handle;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockRef;
use crate::config::{ClientSection, SegmentRollingPolicy};
use crate::logstore::LogStore;
use crate::meta::{MetaError, MetadataProvider};
use proto::meta::QuorumInfo;

pub use error::{ClientError, Result, code};
pub use handle::LogHandle;
pub use writer::LogWriter;

/// The address Go's embedded client records as the single replica of every segment.
pub const EMBEDDED_NODE: &str = "127.0.0.1:59456";

/// The quorum embedded mode records in segment metadata: `{id:-1, es:1, wq:1, aq:1,
/// nodes:["127.0.0.1:59456"]}`.
pub fn embedded_quorum() -> QuorumInfo {
    QuorumInfo {
        id: -1,
        es: 1,
        wq: 1,
        aq: 1,
        nodes: vec![EMBEDDED_NODE.to_string()],
        ..QuorumInfo::default()
    }
}

/// Client settings: `woodpecker.client` plus what the Go client hard-codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `segmentRollingPolicy`: when a writer rolls to a new segment.
    pub rolling: SegmentRollingPolicy,
    /// Appends a writer keeps in flight (`segmentAppend.queueSize`); keep it at or below the
    /// LogStore's `segmentSyncPolicy.maxEntries` so appends never land outside its window.
    pub max_in_flight: usize,
    /// Attempts of `create_log` on the id-generator race (Go: 5).
    pub create_log_attempts: usize,
    /// Pause between those attempts, on the client's clock (Go: 10 ms).
    pub create_log_retry_interval: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings::from(&ClientSection::default())
    }
}

impl From<&ClientSection> for ClientSettings {
    fn from(section: &ClientSection) -> Self {
        ClientSettings {
            rolling: section.segment_rolling_policy,
            max_in_flight: usize::try_from(section.segment_append.queue_size)
                .unwrap_or(usize::MAX)
                .max(1),
            create_log_attempts: 5,
            create_log_retry_interval: Duration::from_millis(10),
        }
    }
}

/// What every handle and writer of a client shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) meta: Arc<dyn MetadataProvider>,
    pub(crate) logstore: Arc<LogStore>,
    pub(crate) settings: ClientSettings,
    pub(crate) clock: ClockRef,
}

impl Shared {
    pub(crate) fn now_millis(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }
}

/// The embedded-mode client: logs by name, and handles to write them.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// A client over `meta` (already initialised) and the process's `logstore`.
    pub fn new(
        meta: Arc<dyn MetadataProvider>,
        logstore: Arc<LogStore>,
        settings: ClientSettings,
        clock: ClockRef,
    ) -> Client {
        Client {
            shared: Arc::new(Shared {
                meta,
                logstore,
                settings,
                clock,
            }),
        }
    }

    /// The metadata provider.
    pub fn metadata(&self) -> &Arc<dyn MetadataProvider> {
        &self.shared.meta
    }

    /// Creates a log; retries the id-generator race (3006) up to
    /// [`ClientSettings::create_log_attempts`] times. A log that exists gives 3013.
    pub async fn create_log(&self, name: &str) -> Result<()> {
        let attempts = self.shared.settings.create_log_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.shared.meta.create_log(name).await {
                Ok(meta) => {
                    tracing::info!(log = name, log_id = meta.log_id, "log created");
                    return Ok(());
                }
                Err(MetaError::CreateLogTxn { .. }) if attempt < attempts => {
                    let pause = self.shared.settings.create_log_retry_interval;
                    if !pause.is_zero() {
                        self.shared.clock.sleep(pause).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A handle on an existing log (3012 when it does not exist).
    pub async fn open_log(&self, name: &str) -> Result<LogHandle> {
        let meta = self.shared.meta.get_log_meta(name).await?;
        Ok(LogHandle::new(
            name.to_string(),
            meta.value.log_id,
            self.shared.clone(),
        ))
    }

    /// Whether the log exists.
    pub async fn log_exists(&self, name: &str) -> Result<bool> {
        Ok(self.shared.meta.log_exists(name).await?)
    }

    /// Every log name, sorted.
    pub async fn list_logs(&self) -> Result<Vec<String>> {
        Ok(self.shared.meta.list_logs().await?)
    }

    /// Log names starting with `prefix`, sorted.
    pub async fn list_logs_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.shared.meta.list_logs_with_prefix(prefix).await?)
    }
}
