//! The client: [`Client`], [`LogHandle`], [`LogWriter`] and [`LogReader`] (spec §2.1–2.4,
//! §6.1, §6.3–6.5).
//!
//! The client talks to LogStores only through the boundary in [`store`]: a
//! [`LogStoreCluster`] chooses the replica set of a new segment and hands out a
//! [`LogStoreClient`] per node named in a segment's metadata. Embedded mode is a quorum of
//! one: an [`EmbeddedCluster`] over the in-process [`LogStore`], whose segments record the
//! fixed [`embedded_quorum`]. Metadata goes through a [`MetadataProvider`] (etcd or the
//! embedded store) with the Go compare-and-swap guards, so one writer per log is enforced by
//! fencing (`open_writer` fences and completes every active segment) and by the guards (a
//! lost race invalidates the older writer, code 1405).

mod auditor;
pub mod cluster;
mod error;
pub mod grpc;
mod handle;
mod reader;
mod replicated;
mod segment;
pub mod store;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::ClockRef;
use crate::config::{
    ClientSection, LogstoreSection, RetentionPolicy, SegmentCompactionPolicy, SegmentRollingPolicy,
};
use crate::logstore::LogStore;
use crate::meta::{MetaError, MetadataProvider};
use proto::meta::QuorumInfo;

pub use auditor::{AuditReport, Auditor, AuditorHandle};
pub use error::{ClientError, Result, code};
pub use handle::LogHandle;
pub use reader::{LogReader, READER_INFO_UPDATE_INTERVAL, SkippedEntries};
pub use replicated::ReplicationSettings;
pub use store::{
    AppendEvent, AppendStream, EmbeddedCluster, LocalLogStoreClient, LogStoreClient,
    LogStoreCluster,
};
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
    /// Time between auditor passes (`client.auditor.maxInterval`, 10 s).
    pub auditor_interval: Duration,
    /// How long a truncated segment is kept before collection (`logstore.retentionPolicy.ttl`,
    /// 72 h).
    pub retention_ttl: Duration,
    /// Target size of a merged block when the auditor compacts a segment
    /// (`logstore.segmentCompactionPolicy.maxBytes`, 2 MB).
    pub compaction_max_bytes: usize,
    /// After how long without an update an IN_PROGRESS cleanup record is taken over by the
    /// auditor (Go: 10 min).
    pub cleanup_stale_after: Duration,
    /// Entries a reader fetches per batch (Go `DefaultBatchEntriesLimit`: 200).
    pub read_batch_entries: usize,
    /// About how many payload bytes a reader fetches per batch (at least one entry);
    /// the `logstore.segmentReadPolicy.maxBatchSize` default, 2 MB.
    pub read_batch_bytes: usize,
    /// How long a reader at the tail sleeps, on the client's clock, before looking at
    /// storage and metadata again when no writer of this process wakes it (Go
    /// `NoDataReadWaitIntervalMs`: 200 ms).
    pub read_poll_interval: Duration,
    /// How a segment with several replicas sends its appends (service mode).
    pub replication: ReplicationSettings,
    /// How long a writer keeps writing a segment that is due to roll (a replica failed, it
    /// is full or old) when no fresh quorum can be selected yet, before it tries again.
    pub roll_retry_interval: Duration,
    /// How long a writer that rolls or closes keeps completing its segment through failures
    /// that may pass (replicas down or not answering, the metadata store unavailable)
    /// before it gives the log up (1405). Writes queue behind a roll meanwhile; 10 s rides
    /// out a node or etcd restart.
    pub complete_patience: Duration,
}

impl ClientSettings {
    /// Takes the retention TTL and the compaction block size from `woodpecker.logstore`.
    pub(crate) fn with_logstore(mut self, logstore: &LogstoreSection) -> Self {
        self.retention_ttl = logstore.retention_policy.ttl();
        self.compaction_max_bytes =
            usize::try_from(logstore.segment_compaction_policy.max_bytes).unwrap_or(usize::MAX);
        self
    }
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
            auditor_interval: Duration::from_secs(section.auditor.max_interval),
            retention_ttl: RetentionPolicy::default().ttl(),
            compaction_max_bytes: usize::try_from(SegmentCompactionPolicy::default().max_bytes)
                .unwrap_or(usize::MAX),
            cleanup_stale_after: Duration::from_secs(600),
            read_batch_entries: 200,
            read_batch_bytes: 2 * 1024 * 1024,
            read_poll_interval: Duration::from_millis(200),
            replication: ReplicationSettings {
                max_batch_entries: usize::try_from(section.segment_append.max_batch_entries)
                    .unwrap_or(usize::MAX)
                    .max(1),
                max_batch_bytes: usize::try_from(section.segment_append.max_batch_bytes)
                    .unwrap_or(usize::MAX)
                    .max(1),
                max_retries: section.segment_append.max_retries,
                ..ReplicationSettings::default()
            },
            roll_retry_interval: Duration::from_secs(1),
            complete_patience: Duration::from_secs(10),
        }
    }
}

/// `d` in whole milliseconds, as the client's clock counts them (saturating).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A writer's patience with something that may pass (completing a segment through replicas
/// that are down or a metadata store that is unavailable): pauses on the client's clock of
/// 100 ms, doubling up to a second, for up to [`ClientSettings::complete_patience`] from its
/// start; every pause counts as a retry in `retries`.
pub(crate) struct Patience<'a> {
    shared: &'a Shared,
    deadline: i64,
    pause: Duration,
    retries: &'static telemetry::metrics::Counter,
}

impl<'a> Patience<'a> {
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    pub(crate) fn new(shared: &'a Shared, retries: &'static telemetry::metrics::Counter) -> Self {
        Patience {
            deadline: shared
                .now_millis()
                .saturating_add(millis(shared.settings.complete_patience)),
            shared,
            pause: Self::FIRST_PAUSE,
            retries,
        }
    }

    /// The pause the next retry takes; `None` when it would end past the deadline.
    pub(crate) fn next_pause(&self) -> Option<Duration> {
        (self.shared.now_millis().saturating_add(millis(self.pause)) <= self.deadline)
            .then_some(self.pause)
    }

    /// Sleeps the next pause (once [`Patience::next_pause`] gave one) and counts the retry.
    pub(crate) async fn pause(&mut self) {
        self.retries.inc();
        self.shared.clock.sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Self::MAX_PAUSE);
    }
}

/// What every handle and writer of a client shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) meta: Arc<dyn MetadataProvider>,
    pub(crate) cluster: Arc<dyn LogStoreCluster>,
    pub(crate) settings: ClientSettings,
    pub(crate) clock: ClockRef,
}

impl Shared {
    pub(crate) fn now_millis(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }
}

/// The client: logs by name, and handles to write and read them.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// An embedded-mode client over `meta` (already initialised) and the process's
    /// `logstore`: a quorum of one.
    pub fn new(
        meta: Arc<dyn MetadataProvider>,
        logstore: Arc<LogStore>,
        settings: ClientSettings,
        clock: ClockRef,
    ) -> Client {
        let cluster = EmbeddedCluster::new(logstore, settings.compaction_max_bytes);
        Client::with_cluster(meta, Arc::new(cluster), settings, clock)
    }

    /// A client over `meta` (already initialised) whose segments live on `cluster`'s
    /// LogStores.
    pub fn with_cluster(
        meta: Arc<dyn MetadataProvider>,
        cluster: Arc<dyn LogStoreCluster>,
        settings: ClientSettings,
        clock: ClockRef,
    ) -> Client {
        Client {
            shared: Arc::new(Shared {
                meta,
                cluster,
                settings,
                clock,
            }),
        }
    }

    /// The metadata provider.
    pub fn metadata(&self) -> &Arc<dyn MetadataProvider> {
        &self.shared.meta
    }

    /// Where the client's segments live.
    pub fn cluster(&self) -> &Arc<dyn LogStoreCluster> {
        &self.shared.cluster
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
