//! The simulated transport: [`SimCluster`] and [`SimNodeClient`] implement the client's
//! [`LogStoreCluster`] and [`LogStoreClient`] over in-process [`LogStoreNode`]s, calling the
//! same node operations the gRPC service maps each RPC to, with the gRPC client's failure
//! semantics: a request that gets no answer fails with a timeout after the request (or ack)
//! budget, a node that is down refuses at once, node errors come back as `Remote` errors with
//! their wire code and retriable flag.
//!
//! Faults live here: partitions (requests and replies vanish), crash and restart (the node
//! stops answering at once; its old instance is closed and a new one opens the same
//! directory, replaying its journal), and per-call lost requests, lost replies and delays,
//! decided from the seed and the node's call number.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use proto::logstore::NodeMeta;
use proto::meta::QuorumInfo;
use wal::client::{AppendEvent, AppendStream, ClientError, LogStoreClient, LogStoreCluster};
use wal::clock::ClockRef;
use wal::config::DiskWatermarkPolicy;
use wal::logstore::{CleanScope, CompactResult, LogStoreError, ReadResult, SyncPolicy};
use wal::service::{
    LogStoreNode, MaintenanceSettings, Membership, NodeSettings, SelectionPolicy, ServiceError,
    TenantSettings,
};

use crate::plan::{MessageFaults, draw};

/// The tenant every simulated client writes as.
pub const BUCKET: &str = "sim-bucket";
/// The tenant's root path.
pub const ROOT: &str = "sim-root";

/// How long a call waits for an answer (the gRPC client's request timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an append stream waits for its next frame (the gRPC client's ack timeout).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Faults injected by the transport, by kind.
#[derive(Debug, Default)]
pub struct NetCounts {
    /// Requests lost on the way to a node.
    pub lost_requests: AtomicU64,
    /// Replies lost on the way back (the request was applied).
    pub lost_replies: AtomicU64,
    /// Delayed requests.
    pub delayed: AtomicU64,
    /// Calls refused because the node was down.
    pub refused_down: AtomicU64,
    /// Calls that vanished into a partition.
    pub partitioned_calls: AtomicU64,
    /// Partitions started.
    pub partitions: AtomicU64,
    /// Crash-restarts.
    pub crashes: AtomicU64,
    /// Crash-restarts that lost what was not synced ([`crate::disk`]).
    pub hard_crashes: AtomicU64,
    /// Journaled blocks a hard crash lost from their `data.log` (replay restores them).
    pub lost_unsynced_blocks: AtomicU64,
    /// Torn writes a hard crash left at the end of a journal file or a `data.log`.
    pub torn_tails: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    node: Option<Arc<LogStoreNode>>,
    /// The directory as the last hard crash left it, installed at the restart.
    image: Option<PathBuf>,
    incarnation: u64,
    partitioned: bool,
    calls: u64,
}

/// The nodes and the faults between them and the client.
#[derive(Debug)]
pub struct SimNet {
    seed: u64,
    dirs: Vec<PathBuf>,
    slots: Vec<Mutex<Slot>>,
    objects: Arc<dyn ObjectStore>,
    clock: ClockRef,
    messages: MessageFaults,
    faults_on: AtomicBool,
    /// What was injected.
    pub counts: NetCounts,
    /// One line per fault event, in order, for the run's trace.
    trace: Mutex<Vec<String>>,
}

enum Fate {
    Down,
    Vanish,
    Deliver { delay: Duration, lose_reply: bool },
}

fn node_settings(dir: PathBuf) -> NodeSettings {
    NodeSettings {
        tenants: TenantSettings {
            data_dir: dir,
            minio: storage::config::MinioConfig::default(),
            sync_policy: SyncPolicy {
                // Time-based flushes on the simulated clock, a short retry so that a failed
                // object write is retried within the run.
                max_interval_local: Duration::from_millis(5),
                retry_interval: Duration::from_millis(50),
                ..SyncPolicy::default()
            },
            compaction_max_bytes: 4 * 1024,
        },
        read_max_bytes: 64 * 1024,
        maintenance: MaintenanceSettings::default(),
        selection: SelectionPolicy::default(),
        // The temporary directory's disk fullness is not part of the simulation.
        disk_watermark: DiskWatermarkPolicy {
            enabled: false,
            ..DiskWatermarkPolicy::default()
        },
    }
}

fn endpoint(i: usize) -> String {
    format!("sim-node-{i}:18080")
}

fn remote(node: &str, e: &ServiceError) -> LogStoreError {
    LogStoreError::Remote {
        node: node.to_string(),
        code: e.code(),
        reason: e.to_string(),
        retriable: e.is_retriable(),
    }
}

fn timed_out(node: &str, rpc: &str) -> LogStoreError {
    LogStoreError::Unavailable {
        node: node.to_string(),
        detail: format!("{rpc} got no answer in time"),
        timed_out: true,
    }
}

fn refused(node: &str, rpc: &str) -> LogStoreError {
    LogStoreError::Unavailable {
        node: node.to_string(),
        detail: format!("{rpc}: connection refused (node down)"),
        timed_out: false,
    }
}

async fn open_node(
    dir: PathBuf,
    objects: Arc<dyn ObjectStore>,
    clock: ClockRef,
    i: usize,
) -> anyhow::Result<Arc<LogStoreNode>> {
    let me = NodeMeta {
        endpoint: endpoint(i),
        ..NodeMeta::default()
    };
    let membership = Arc::new(Membership::solo(me, clock.clone()));
    LogStoreNode::open_with_object_store(node_settings(dir), membership, clock, objects)
        .await
        .map_err(|e| anyhow::anyhow!("node {i} did not open: {e}"))
}

impl SimNet {
    /// Opens `n` nodes under `root` over `objects`.
    pub async fn start(
        seed: u64,
        n: usize,
        root: &std::path::Path,
        objects: Arc<dyn ObjectStore>,
        clock: ClockRef,
        messages: MessageFaults,
    ) -> anyhow::Result<Arc<SimNet>> {
        let mut dirs = Vec::new();
        let mut slots = Vec::new();
        for i in 0..n {
            let dir = root.join(format!("node{i}"));
            std::fs::create_dir_all(&dir)?;
            let node = open_node(dir.clone(), objects.clone(), clock.clone(), i).await?;
            dirs.push(dir);
            slots.push(Mutex::new(Slot {
                node: Some(node),
                image: None,
                incarnation: 0,
                partitioned: false,
                calls: 0,
            }));
        }
        Ok(Arc::new(SimNet {
            seed,
            dirs,
            slots,
            objects,
            clock,
            messages,
            faults_on: AtomicBool::new(true),
            counts: NetCounts::default(),
            trace: Mutex::new(Vec::new()),
        }))
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line to the trace.
    pub fn note(&self, line: String) {
        self.trace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// The trace so far.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Switches the per-call faults off (the heal phase).
    pub fn calm(&self) {
        self.faults_on.store(false, Ordering::SeqCst);
    }

    /// Cuts node `i` off from the client.
    pub fn partition(&self, i: usize) {
        let mut s = self.slot(i);
        if !s.partitioned {
            s.partitioned = true;
            self.counts.partitions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reconnects node `i`.
    pub fn heal(&self, i: usize) {
        self.slot(i).partitioned = false;
    }

    /// Node `i` stops answering at once. Its old instance is closed in the background (what
    /// it buffered is flushed, as by a process that dies after its last flush); the node is
    /// down until [`restart`](Self::restart). With `hard`, the restart instead finds the
    /// directory as a power loss at this instant could have left it ([`crate::disk`]):
    /// unsynced writes lost, the last writes torn. Returns the old instance's closing task.
    pub fn crash(&self, i: usize, hard: bool) -> Option<tokio::task::JoinHandle<()>> {
        let old = {
            let mut s = self.slot(i);
            s.incarnation += 1;
            let old = s.node.take()?;
            if hard {
                let image = self.dirs[i].with_extension(format!("crash{}", s.incarnation));
                match crate::disk::snapshot(&self.dirs[i], &image) {
                    Ok(()) => s.image = Some(image),
                    Err(e) => self.note(format!("crash image of node {i} failed: {e}")),
                }
            }
            old
        };
        self.counts.crashes.fetch_add(1, Ordering::Relaxed);
        Some(tokio::spawn(async move { old.close().await }))
    }

    /// Starts node `i` again from its directory (after `closing`, the old instance's close,
    /// has finished: two instances never share a directory), or from the image its hard
    /// crash left.
    pub async fn restart(
        &self,
        i: usize,
        closing: Option<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<()> {
        if let Some(c) = closing {
            c.await?;
        }
        let (image, incarnation) = {
            let mut s = self.slot(i);
            if s.node.is_some() {
                return Ok(());
            }
            (s.image.take(), s.incarnation)
        };
        if let Some(image) = image {
            let seed = crate::plan::mix(self.seed, i as u64, incarnation);
            let damage = crate::disk::damage(&image, seed).await?;
            crate::disk::install_image(&self.dirs[i], &image)?;
            self.counts.hard_crashes.fetch_add(1, Ordering::Relaxed);
            self.counts
                .lost_unsynced_blocks
                .fetch_add(damage.lost_unsynced_blocks, Ordering::Relaxed);
            self.counts
                .torn_tails
                .fetch_add(damage.torn_tails, Ordering::Relaxed);
            self.note(format!(
                "node {i} restarts from a power loss: {} torn writes",
                damage.torn_tails
            ));
        }
        let node = open_node(
            self.dirs[i].clone(),
            self.objects.clone(),
            self.clock.clone(),
            i,
        )
        .await?;
        let mut s = self.slot(i);
        s.incarnation += 1;
        s.node = Some(node);
        Ok(())
    }

    /// Whether node `i` is up (not crashed), whatever the partitions.
    pub fn is_up(&self, i: usize) -> bool {
        self.slot(i).node.is_some()
    }

    fn fate(&self, i: usize) -> (Option<Arc<LogStoreNode>>, u64, Fate) {
        let mut s = self.slot(i);
        s.calls += 1;
        let call = s.calls;
        let Some(node) = s.node.clone() else {
            self.counts.refused_down.fetch_add(1, Ordering::Relaxed);
            return (None, s.incarnation, Fate::Down);
        };
        if s.partitioned {
            self.counts
                .partitioned_calls
                .fetch_add(1, Ordering::Relaxed);
            return (Some(node), s.incarnation, Fate::Vanish);
        }
        if !self.faults_on.load(Ordering::SeqCst) {
            let fate = Fate::Deliver {
                delay: Duration::ZERO,
                lose_reply: false,
            };
            return (Some(node), s.incarnation, fate);
        }
        let m = &self.messages;
        let salt = i as u64;
        if draw(self.seed, salt, call.wrapping_mul(4)) < m.lose_request {
            self.counts.lost_requests.fetch_add(1, Ordering::Relaxed);
            return (Some(node), s.incarnation, Fate::Vanish);
        }
        let delay = if draw(self.seed, salt, call.wrapping_mul(4) + 1) < m.delay {
            self.counts.delayed.fetch_add(1, Ordering::Relaxed);
            let f = draw(self.seed, salt, call.wrapping_mul(4) + 2);
            m.max_delay.mul_f64(f)
        } else {
            Duration::ZERO
        };
        let lose_reply = draw(self.seed, salt, call.wrapping_mul(4) + 3) < m.lose_reply;
        if lose_reply {
            self.counts.lost_replies.fetch_add(1, Ordering::Relaxed);
        }
        (
            Some(node),
            s.incarnation,
            Fate::Deliver { delay, lose_reply },
        )
    }

    /// Whether a reply of node `i` sent by `incarnation` reaches the client now: `None` when
    /// it does, otherwise whether the node died (an immediate error) or the reply vanishes.
    fn reply_lost(&self, i: usize, incarnation: u64) -> Option<bool> {
        let s = self.slot(i);
        if s.incarnation != incarnation || s.node.is_none() {
            Some(true)
        } else if s.partitioned {
            Some(false)
        } else {
            None
        }
    }
}

/// One node as the client sees it.
#[derive(Debug, Clone)]
pub struct SimNodeClient {
    net: Arc<SimNet>,
    index: usize,
    endpoint: String,
}

impl SimNodeClient {
    async fn unary<T, F, Fut>(&self, rpc: &'static str, call: F) -> Result<T, LogStoreError>
    where
        F: FnOnce(Arc<LogStoreNode>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let (node, incarnation, fate) = self.net.fate(self.index);
        let (node, lose_reply) = match (node, fate) {
            (_, Fate::Down) | (None, _) => return Err(refused(&self.endpoint, rpc)),
            (Some(_), Fate::Vanish) => {
                tokio::time::sleep(REQUEST_TIMEOUT).await;
                return Err(timed_out(&self.endpoint, rpc));
            }
            (Some(node), Fate::Deliver { delay, lose_reply }) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                (node, lose_reply)
            }
        };
        let out = call(node).await;
        match self.net.reply_lost(self.index, incarnation) {
            Some(true) => return Err(refused(&self.endpoint, rpc)),
            Some(false) => {
                tokio::time::sleep(REQUEST_TIMEOUT).await;
                return Err(timed_out(&self.endpoint, rpc));
            }
            None => {}
        }
        if lose_reply {
            tokio::time::sleep(REQUEST_TIMEOUT).await;
            return Err(timed_out(&self.endpoint, rpc));
        }
        out.map_err(|e| remote(&self.endpoint, &e))
    }
}

#[async_trait]
impl LogStoreClient for SimNodeClient {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn add_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        entries: Vec<(i64, Bytes)>,
    ) -> Result<AppendStream, LogStoreError> {
        let last = entries.last().map_or(-1, |(id, _)| *id);
        let entries: Vec<(i64, i64, Bytes)> = entries
            .into_iter()
            .map(|(id, data)| (segment_id, id, data))
            .collect();
        let (node, incarnation, fate) = self.net.fate(self.index);
        let rpc = "AddEntries";
        let (node, lose_reply) = match (node, fate) {
            (_, Fate::Down) | (None, _) => return Err(refused(&self.endpoint, rpc)),
            (Some(_), Fate::Vanish) => {
                tokio::time::sleep(REQUEST_TIMEOUT).await;
                return Err(timed_out(&self.endpoint, rpc));
            }
            (Some(node), Fate::Deliver { delay, lose_reply }) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                (node, lose_reply)
            }
        };
        let handle = match node.add_entries(BUCKET, ROOT, log_id, entries).await {
            Ok(h) => h,
            Err((_, e)) => return Err(remote(&self.endpoint, &e)),
        };
        if lose_reply || self.net.reply_lost(self.index, incarnation).is_some() {
            // The entries are in the node's buffer; the client never hears of it.
            tokio::time::sleep(REQUEST_TIMEOUT).await;
            return Err(timed_out(&self.endpoint, rpc));
        }
        struct Frames {
            net: Arc<SimNet>,
            index: usize,
            incarnation: u64,
            endpoint: String,
            outcomes: tokio::sync::mpsc::UnboundedReceiver<(i64, Result<i64, LogStoreError>)>,
            done: bool,
            last: i64,
        }
        let frames = Frames {
            net: self.net.clone(),
            index: self.index,
            incarnation,
            endpoint: self.endpoint.clone(),
            outcomes: handle.outcomes,
            done: false,
            last,
        };
        let synced = futures::stream::unfold(frames, |mut f| async move {
            if f.done {
                return None;
            }
            let next = tokio::time::timeout(ACK_TIMEOUT, f.outcomes.recv()).await;
            let item = match next {
                Err(_) => Err(timed_out(&f.endpoint, "AddEntries")),
                Ok(None) => Err(LogStoreError::Unavailable {
                    node: f.endpoint.clone(),
                    detail: format!(
                        "the AddEntries stream ended before entry {} was synced",
                        f.last
                    ),
                    timed_out: false,
                }),
                Ok(Some((id, r))) => match f.net.reply_lost(f.index, f.incarnation) {
                    Some(true) => Err(refused(&f.endpoint, "AddEntries")),
                    Some(false) => {
                        tokio::time::sleep(ACK_TIMEOUT).await;
                        Err(timed_out(&f.endpoint, "AddEntries"))
                    }
                    None => match r {
                        Ok(_) => Ok(AppendEvent::Synced(id)),
                        Err(e) => Err(LogStoreError::Remote {
                            node: f.endpoint.clone(),
                            code: e.code(),
                            reason: e.to_string(),
                            retriable: e.is_retriable(),
                        }),
                    },
                },
            };
            f.done = match &item {
                Ok(AppendEvent::Synced(id)) => *id >= f.last,
                _ => true,
            };
            Some((item, f))
        });
        let stream = futures::stream::once(async { Ok(AppendEvent::Buffered) }).chain(synced);
        Ok(stream.boxed())
    }

    async fn get_batch_entries(
        &self,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: usize,
        _max_bytes: usize,
    ) -> Result<ReadResult, LogStoreError> {
        let max = i64::try_from(max_entries.max(1)).unwrap_or(i64::MAX);
        self.unary("GetBatchEntriesAdv", |n| async move {
            n.read(BUCKET, ROOT, log_id, segment_id, from_entry, max)
                .await
        })
        .await
    }

    async fn fence_segment(&self, log_id: i64, segment_id: i64) -> Result<i64, LogStoreError> {
        self.unary("FenceSegment", |n| async move {
            n.fence(BUCKET, ROOT, log_id, segment_id).await
        })
        .await
    }

    async fn complete_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> Result<i64, LogStoreError> {
        self.unary("CompleteSegment", |n| async move {
            n.complete(BUCKET, ROOT, log_id, segment_id, lac).await
        })
        .await
    }

    async fn compact_segment(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<CompactResult, LogStoreError> {
        let c = self
            .unary("CompactSegment", |n| async move {
                n.compact(BUCKET, ROOT, log_id, segment_id).await
            })
            .await?;
        Ok(CompactResult {
            size: c.size,
            blocks: c.blocks,
            last_entry_id: c.last_entry_id,
            compacted: true,
        })
    }

    async fn notify_segment_compacted(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<(), LogStoreError> {
        self.unary("NotifySegmentCompacted", |n| async move {
            n.notify_compacted(BUCKET, ROOT, log_id, segment_id).await
        })
        .await
    }

    async fn get_segment_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<i64, LogStoreError> {
        let r = self
            .unary("GetSegmentLastAddConfirmed", |n| async move {
                n.last_entry_id(BUCKET, ROOT, log_id, segment_id).await
            })
            .await;
        match r {
            Err(LogStoreError::Remote { code, .. })
                if code == wal::logstore::code::NO_BLOCK_FOUND =>
            {
                Ok(-1)
            }
            other => other,
        }
    }

    async fn get_segment_block_count(
        &self,
        log_id: i64,
        segment_id: i64,
    ) -> Result<usize, LogStoreError> {
        let n = self
            .unary("GetSegmentBlockCount", |n| async move {
                n.block_count(BUCKET, ROOT, log_id, segment_id).await
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn update_last_add_confirmed(
        &self,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> Result<(), LogStoreError> {
        self.unary("UpdateLastAddConfirmed", |n| async move {
            n.update_lac(BUCKET, ROOT, log_id, segment_id, lac).await
        })
        .await
    }

    async fn clean_segment(
        &self,
        log_id: i64,
        segment_id: i64,
        scope: CleanScope,
    ) -> Result<(), LogStoreError> {
        let flag = scope.flag();
        self.unary("CleanSegment", |n| async move {
            n.clean(BUCKET, ROOT, log_id, segment_id, flag).await
        })
        .await
    }
}

/// The cluster: a quorum is `replicas` nodes drawn (from the seed) among the nodes that are
/// up, as the nodes' gossip would offer them (a partitioned node is still offered: gossip
/// between nodes is not cut by a client-side partition).
#[derive(Debug)]
pub struct SimCluster {
    net: Arc<SimNet>,
    replicas: usize,
    selections: AtomicU64,
}

impl SimCluster {
    /// The cluster over `net` writing `replicas` replicas.
    pub fn new(net: Arc<SimNet>, replicas: usize) -> SimCluster {
        SimCluster {
            net,
            replicas,
            selections: AtomicU64::new(0),
        }
    }

    fn pick(&self) -> Option<Vec<usize>> {
        let up: Vec<usize> = (0..self.net.len()).filter(|i| self.net.is_up(*i)).collect();
        if up.len() < self.replicas {
            return None;
        }
        let n = self.selections.fetch_add(1, Ordering::Relaxed);
        let mut keyed: Vec<(u64, usize)> = up
            .into_iter()
            .map(|i| {
                let k = (draw(self.net.seed, 1_000 + n, i as u64) * 1e9) as u64;
                (k, i)
            })
            .collect();
        keyed.sort_unstable();
        Some(
            keyed
                .into_iter()
                .take(self.replicas)
                .map(|(_, i)| i)
                .collect(),
        )
    }
}

#[async_trait]
impl LogStoreCluster for SimCluster {
    async fn select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(q) = self.try_select_quorum().await {
                return Ok(q);
            }
            if tokio::time::Instant::now() >= deadline {
                return self.try_select_quorum().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn try_select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        let Some(nodes) = self.pick() else {
            return Err(ClientError::SelectQuorumFailed {
                reason: format!("fewer than {} nodes are up", self.replicas),
            });
        };
        let r = self.replicas as i32;
        Ok(QuorumInfo {
            id: 1,
            es: r,
            wq: r,
            aq: r / 2 + 1,
            nodes: nodes.into_iter().map(endpoint).collect(),
            ..QuorumInfo::default()
        })
    }

    fn node(&self, endpoint_name: &str) -> Result<Arc<dyn LogStoreClient>, ClientError> {
        let index = (0..self.net.len())
            .find(|i| endpoint(*i) == endpoint_name)
            .ok_or_else(|| ClientError::SelectQuorumFailed {
                reason: format!("unknown node {endpoint_name}"),
            })?;
        Ok(Arc::new(SimNodeClient {
            net: self.net.clone(),
            index,
            endpoint: endpoint_name.to_string(),
        }))
    }

    fn compacts(&self) -> bool {
        true
    }
}
