//! One LogStore node: the state behind the gRPC service (tenants, delete markers, lifecycle,
//! membership, metrics) and the operations the RPCs map to, with the Go server's semantics
//! (spec §3.3, §6.2, §6.5, §7.3, §7.4).
//!
//! The node never lets bad input touch disk: tenant names, ids and batch shapes are checked
//! first and refused with their codes. A decommissioning or stopping node refuses appends
//! with 2002, so clients give the replica up and roll; everything else (reads, fence,
//! complete, compact) keeps working until the node stops.
//!
//! Background maintenance (idle processors, the compacted-copy reconcile, delete-marker
//! reclaim, decommission progress) runs on one task that stops with the node.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use proto::logstore::{AffinityMode, NodeFilter, NodeMeta, StrategyType};
use tokio::sync::{mpsc, watch};

use super::disk::{self, DiskUsage};
use super::error::{Result, ServiceError};
use super::membership::Membership;
use super::metrics::Metrics;
use super::selection::{SelectionPolicy, select_nodes};
use super::tenants::{Tenant, TenantSettings, Tenants};
use crate::clock::ClockRef;
use crate::config::DiskWatermarkPolicy;
use crate::logstore::staged::{StagedCompaction, StagedStore};
use crate::logstore::{CleanScope, LogStoreError, OnDurable, ReadResult};

/// Intervals of the background work (Go `processorCleanupPolicy`, `maintenanceStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceSettings {
    /// How often idle processors are looked for (60 s).
    pub cleanup_interval: Duration,
    /// A processor idle this long is closed (300 s).
    pub max_idle: Duration,
    /// How often compacted local copies are reconciled and delete markers reclaimed (5 s).
    pub reclaim_interval: Duration,
    /// A completed local segment this old is checked against object storage (1800 s).
    pub reconcile_age: Duration,
    /// A delete marker this old has its local data removed (5 s).
    pub delete_grace: Duration,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        MaintenanceSettings {
            cleanup_interval: Duration::from_secs(60),
            max_idle: Duration::from_secs(300),
            reclaim_interval: Duration::from_secs(5),
            reconcile_age: Duration::from_secs(1_800),
            delete_grace: Duration::from_secs(5),
        }
    }
}

/// Everything a node is built from.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Tenant storage.
    pub tenants: TenantSettings,
    /// Bytes of one read batch (`segmentReadPolicy.maxBatchSize`).
    pub read_max_bytes: usize,
    /// Background work.
    pub maintenance: MaintenanceSettings,
    /// SelectNodes.
    pub selection: SelectionPolicy,
    /// Write backpressure on a full disk.
    pub disk_watermark: DiskWatermarkPolicy,
}

/// Where the node stands in its life (persisted across restarts, spec §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Serving.
    Active,
    /// Refusing appends until its local data is compacted and reclaimed.
    Decommissioning,
    /// No local data left; safe to remove.
    Decommissioned,
}

impl Lifecycle {
    /// The name used on disk, in the admin API and in the `status` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Decommissioning => "decommissioning",
            Lifecycle::Decommissioned => "decommissioned",
        }
    }

    fn from_str(s: &str) -> Option<Lifecycle> {
        match s.trim() {
            "active" => Some(Lifecycle::Active),
            "decommissioning" => Some(Lifecycle::Decommissioning),
            "decommissioned" => Some(Lifecycle::Decommissioned),
            _ => None,
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Lifecycle {
        match v {
            1 => Lifecycle::Decommissioning,
            2 => Lifecycle::Decommissioned,
            _ => Lifecycle::Active,
        }
    }
}

/// A delete marker (`.deleted/<bucket>/<root>/<logId>.json` or `_instance_.json`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct DeleteMarker {
    bucket: String,
    #[serde(rename = "rootPath")]
    root_path: String,
    #[serde(rename = "logId")]
    log_id: i64,
    instance: bool,
    #[serde(rename = "deletedAt")]
    deleted_at: u64,
}

#[derive(Debug, Default)]
struct Deletions {
    logs: HashSet<(Tenant, i64)>,
    instances: HashSet<Tenant>,
    /// Markers whose local data was removed since this process started.
    reclaimed: HashSet<(Tenant, i64)>,
    markers: HashMap<(Tenant, i64), DeleteMarker>,
}

/// The LogStore node: see the module docs.
#[derive(Debug)]
pub struct LogStoreNode {
    settings: NodeSettings,
    tenants: Tenants,
    membership: Arc<Membership>,
    metrics: Arc<Metrics>,
    clock: ClockRef,
    lifecycle: AtomicU8,
    stopping: watch::Sender<bool>,
    deletions: StdMutex<Deletions>,
    /// The last disk sample (`None` until one succeeded: appends are not held back by a
    /// sampler that cannot read the file system).
    disk: StdMutex<Option<DiskUsage>>,
}

/// Log id of an instance marker.
const INSTANCE: i64 = -1;

impl LogStoreNode {
    /// The node's clock: the time of its replies and its background work.
    pub(crate) fn clock(&self) -> &ClockRef {
        &self.clock
    }

    /// A node over `settings.tenants.data_dir`: reads its persisted lifecycle and delete
    /// markers, reopens every tenant with local data (replaying journals), and publishes its
    /// status in `membership`.
    pub async fn open(
        settings: NodeSettings,
        membership: Arc<Membership>,
        clock: ClockRef,
    ) -> Result<Arc<LogStoreNode>> {
        let tenants = Tenants::new(settings.tenants.clone(), clock.clone());
        Self::open_with(settings, membership, clock, tenants).await
    }

    /// [`open`](Self::open), with every tenant's objects in `store` instead of the store
    /// `settings.tenants.minio` names (see [`Tenants::with_object_store`]).
    pub async fn open_with_object_store(
        settings: NodeSettings,
        membership: Arc<Membership>,
        clock: ClockRef,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Result<Arc<LogStoreNode>> {
        let tenants = Tenants::with_object_store(settings.tenants.clone(), clock.clone(), store);
        Self::open_with(settings, membership, clock, tenants).await
    }

    async fn open_with(
        settings: NodeSettings,
        membership: Arc<Membership>,
        clock: ClockRef,
        tenants: Tenants,
    ) -> Result<Arc<LogStoreNode>> {
        let data_dir = settings.tenants.data_dir.clone();
        std::fs::create_dir_all(data_dir.join(".node")).map_err(|e| {
            ServiceError::Internal(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let lifecycle = std::fs::read_to_string(lifecycle_path(&data_dir))
            .ok()
            .and_then(|s| Lifecycle::from_str(&s))
            .unwrap_or(Lifecycle::Active);
        let node = Arc::new(LogStoreNode {
            tenants,
            settings,
            membership,
            metrics: Arc::new(Metrics::default()),
            clock,
            lifecycle: AtomicU8::new(lifecycle.to_u8()),
            stopping: watch::channel(false).0,
            deletions: StdMutex::new(Deletions::default()),
            disk: StdMutex::new(None),
        });
        node.sample_disk();
        node.load_markers();
        let reopened = node.tenants.open_existing().await;
        if !reopened.is_empty() {
            tracing::info!(tenants = reopened.len(), "reopened tenants with local data");
        }
        node.publish_status().await;
        Ok(node)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The membership view.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The tenants.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Where the node stands.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle::from_u8(self.lifecycle.load(Ordering::Acquire))
    }

    fn data_dir(&self) -> &PathBuf {
        &self.settings.tenants.data_dir
    }

    async fn publish_status(&self) {
        let state = self.lifecycle();
        self.membership
            .update(|me| {
                if state == Lifecycle::Active {
                    me.tags.remove("status");
                } else {
                    me.tags.insert("status".into(), state.as_str().into());
                }
            })
            .await;
    }

    fn set_lifecycle(&self, state: Lifecycle) -> Result<()> {
        let path = lifecycle_path(self.data_dir());
        write_synced(&path, state.as_str().as_bytes())
            .map_err(|e| ServiceError::Internal(format!("cannot persist node state: {e}")))?;
        self.lifecycle.store(state.to_u8(), Ordering::Release);
        Ok(())
    }

    /// Starts decommissioning (idempotent): appends are refused from now on, SelectNodes
    /// stops choosing this node, and once every local segment is compacted and reclaimed the
    /// node is `decommissioned`. Persisted across restarts.
    pub async fn decommission(&self) -> Result<Lifecycle> {
        if self.lifecycle() == Lifecycle::Active {
            self.set_lifecycle(Lifecycle::Decommissioning)?;
            tracing::info!("decommissioning: appends refused from now on");
            self.publish_status().await;
        }
        self.check_decommission_progress().await;
        Ok(self.lifecycle())
    }

    /// Local segments not yet reclaimed, per tenant.
    pub(crate) async fn pending_local_segments(&self) -> Vec<(Tenant, i64, i64)> {
        let mut out = Vec::new();
        for (t, s) in self.tenants.open_stores().await {
            for (l, seg) in s.unreclaimed_segments().await {
                out.push((t.clone(), l, seg));
            }
        }
        out
    }

    async fn check_decommission_progress(&self) {
        if self.lifecycle() != Lifecycle::Decommissioning {
            return;
        }
        if self.pending_local_segments().await.is_empty()
            && self.set_lifecycle(Lifecycle::Decommissioned).is_ok()
        {
            tracing::info!("decommissioned: no local data left");
            self.publish_status().await;
        }
    }

    /// Stops taking appends (a clean stop is under way).
    pub fn begin_stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Closes every tenant (flushes, fails what is left, checkpoints journals).
    pub async fn close(&self) {
        self.begin_stop();
        self.tenants.close_all().await;
    }

    /// Samples the data directory's file system for the disk watermark.
    fn sample_disk(&self) {
        match disk::sample(self.data_dir()) {
            Ok(u) => {
                let was = self
                    .disk
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(u);
                let p = &self.settings.disk_watermark;
                let over = |u: DiskUsage| u.used_ratio > p.soft_threshold_ratio;
                if p.enabled && over(u) && !was.is_some_and(over) {
                    tracing::warn!(
                        used = u.used_ratio,
                        available = u.available,
                        "local disk above its soft watermark"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(dir = %self.data_dir().display(), error = %e, "cannot sample the local disk")
            }
        }
    }

    fn check_appends(&self) -> Result<()> {
        if *self.stopping.borrow() {
            return Err(ServiceError::Shutdown("stopping"));
        }
        let usage = *self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = usage {
            disk::admit(u, &self.settings.disk_watermark, rand::random::<f64>())
                .map_err(ServiceError::DiskPressure)?;
        }
        match self.lifecycle() {
            Lifecycle::Active => Ok(()),
            Lifecycle::Decommissioning => Err(ServiceError::Shutdown("decommissioning")),
            Lifecycle::Decommissioned => Err(ServiceError::Shutdown("decommissioned")),
        }
    }

    /// The tenant's store, after the name and delete checks (`log_id` of `None` for
    /// tenant-wide requests).
    async fn store(
        &self,
        bucket: &str,
        root: &str,
        log_id: Option<i64>,
    ) -> Result<(Tenant, Arc<StagedStore>)> {
        let tenant = Tenant::parse(bucket, root)?;
        if let Some(log_id) = log_id {
            if log_id < 0 {
                return Err(ServiceError::InvalidRequest(format!(
                    "log_id {log_id} is negative"
                )));
            }
            let d = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
            if d.instances.contains(&tenant) || d.logs.contains(&(tenant.clone(), log_id)) {
                return Err(ServiceError::LogBeingDeleted {
                    tenant: tenant.to_string(),
                    log_id,
                });
            }
        }
        let store = self.tenants.get(&tenant).await?;
        Ok((tenant, store))
    }

    /// Buffers a run of consecutive entries of one segment (AddEntry / AddEntries phase
    /// one). Returns the ids and a channel that yields each entry's outcome in id order.
    /// On failure, returns how many entries were buffered and the error.
    pub async fn add_entries(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        entries: Vec<(i64, i64, Bytes)>,
    ) -> std::result::Result<AddHandle, (usize, ServiceError)> {
        let fail0 = |e| (0, e);
        self.check_appends().map_err(fail0)?;
        let Some(&(segment_id, first, _)) = entries.first() else {
            return Err(fail0(ServiceError::InvalidRequest("no entries".into())));
        };
        for (i, (seg, id, _)) in entries.iter().enumerate() {
            if *seg != segment_id || *id != first + i as i64 || *id < 0 || segment_id < 0 {
                return Err(fail0(ServiceError::InvalidRequest(format!(
                    "entries must be consecutive ids of one segment: got segment {seg} entry {id} at position {i} \
                     after segment {segment_id} entry {first}"
                ))));
            }
        }
        let (_, store) = self
            .store(bucket, root, Some(log_id))
            .await
            .map_err(fail0)?;
        let processor = store
            .processor(log_id, segment_id)
            .await
            .map_err(|e| fail0(e.into()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let ids: Vec<i64> = entries.iter().map(|(_, id, _)| *id).collect();
        let bytes: usize = entries.iter().map(|(_, _, d)| d.len()).sum();
        for (i, (_, id, data)) in entries.into_iter().enumerate() {
            let tx = tx.clone();
            let made = processor
                .add_entry_with(id, data, move || -> OnDurable {
                    Box::new(move |r| {
                        let _ = tx.send((id, r));
                    })
                })
                .await;
            if let Err(e) = made {
                self.metrics.append_failed();
                return Err((i, e.into()));
            }
        }
        self.metrics.appended(ids.len(), bytes);
        Ok(AddHandle { ids, outcomes: rx })
    }

    /// GetBatchEntriesAdv.
    pub async fn read(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
        from_entry: i64,
        max_entries: i64,
    ) -> Result<ReadResult> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        let max_entries = usize::try_from(max_entries).unwrap_or(0).clamp(1, 100_000);
        let r = store
            .read_batch(
                log_id,
                segment_id,
                from_entry,
                max_entries,
                self.settings.read_max_bytes,
            )
            .await?;
        self.metrics.read(r.entries.len());
        Ok(r)
    }

    /// FenceSegment.
    pub async fn fence(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<i64> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        Ok(store.fence(log_id, segment_id).await?)
    }

    /// CompleteSegment.
    pub async fn complete(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> Result<i64> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        Ok(store.complete(log_id, segment_id, lac).await?)
    }

    /// CompactSegment.
    pub async fn compact(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<StagedCompaction> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        let r = store.compact(log_id, segment_id).await;
        self.metrics.compacted(r.is_ok());
        Ok(r?)
    }

    /// NotifySegmentCompacted.
    pub async fn notify_compacted(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<()> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        Ok(store.notify_compacted(log_id, segment_id).await?)
    }

    /// GetSegmentLastAddConfirmed: the last entry stored here; 2311 when none.
    pub async fn last_entry_id(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<i64> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        let last = store.last_entry_id(log_id, segment_id).await?;
        if last < 0 {
            return Err(ServiceError::NoBlockFound(format!(
                "log {log_id} segment {segment_id}"
            )));
        }
        Ok(last)
    }

    /// GetSegmentBlockCount.
    pub async fn block_count(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
    ) -> Result<i64> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        Ok(i64::try_from(store.block_count(log_id, segment_id).await?).unwrap_or(i64::MAX))
    }

    /// UpdateLastAddConfirmed.
    pub async fn update_lac(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
        lac: i64,
    ) -> Result<()> {
        let (_, store) = self.store(bucket, root, Some(log_id)).await?;
        store.update_lac(log_id, segment_id, lac);
        Ok(())
    }

    /// CleanSegment.
    pub async fn clean(
        &self,
        bucket: &str,
        root: &str,
        log_id: i64,
        segment_id: i64,
        flag: i32,
    ) -> Result<()> {
        let scope = CleanScope::from_flag(flag)
            .ok_or_else(|| ServiceError::InvalidRequest(format!("unknown clean flag {flag}")))?;
        // Cleaning a deleted log's segment is allowed: it is what deletion wants.
        let tenant = Tenant::parse(bucket, root)?;
        let store = self.tenants.get(&tenant).await?;
        Ok(store.clean(log_id, segment_id, scope).await?)
    }

    /// MarkLogDeleted (`log_id`) or MarkInstanceDeleted (`None`): stores the marker (synced)
    /// before answering; requests for the log (or tenant) are refused with 2005 from now on and
    /// its local data is removed after the grace period.
    pub(crate) async fn mark_deleted(
        &self,
        bucket: &str,
        root: &str,
        log_id: Option<i64>,
    ) -> Result<()> {
        let tenant = Tenant::parse(bucket, root)?;
        if log_id.is_some_and(|l| l < 0) {
            return Err(ServiceError::InvalidRequest("log_id is negative".into()));
        }
        let marker = DeleteMarker {
            bucket: tenant.bucket.clone(),
            root_path: tenant.root.clone(),
            log_id: log_id.unwrap_or(INSTANCE),
            instance: log_id.is_none(),
            deleted_at: self.clock.now_millis(),
        };
        let path = marker_path(self.data_dir(), &tenant, log_id);
        let body = serde_json::to_vec(&marker)
            .map_err(|e| ServiceError::MarkDeleteFailed(e.to_string()))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                ServiceError::MarkDeleteFailed(format!("{}: {e}", parent.display()))
            })?;
        }
        if !path.exists() {
            write_synced(&path, &body)
                .map_err(|e| ServiceError::MarkDeleteFailed(format!("{}: {e}", path.display())))?;
        }
        let mut d = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
        match log_id {
            Some(l) => {
                d.logs.insert((tenant.clone(), l));
            }
            None => {
                d.instances.insert(tenant.clone());
            }
        }
        d.markers
            .entry((tenant, log_id.unwrap_or(INSTANCE)))
            .or_insert(marker);
        Ok(())
    }

    fn load_markers(&self) {
        let root = self.data_dir().join(".deleted");
        let mut stack = vec![root];
        let mut d = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Some(marker) = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<DeleteMarker>(&b).ok())
                else {
                    continue;
                };
                let Ok(t) = Tenant::parse(&marker.bucket, &marker.root_path) else {
                    continue;
                };
                if marker.instance {
                    d.instances.insert(t.clone());
                } else {
                    d.logs.insert((t.clone(), marker.log_id));
                }
                d.markers.insert((t, marker.log_id), marker);
            }
        }
    }

    /// Removes the local data of markers past the grace period. A reclaimed instance marker
    /// is removed with the tenant's log markers, so the bucket and root path can serve a new
    /// instance (whose log ids start again at 1).
    async fn reclaim_deleted(&self) {
        let now = self.clock.now_millis();
        let grace = u64::try_from(self.settings.maintenance.delete_grace.as_millis()).unwrap_or(0);
        let due: Vec<DeleteMarker> = {
            let d = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
            d.markers
                .iter()
                .filter(|(k, m)| {
                    now.saturating_sub(m.deleted_at) >= grace && !d.reclaimed.contains(*k)
                })
                .map(|(_, m)| m.clone())
                .collect()
        };
        for m in due {
            let Ok(tenant) = Tenant::parse(&m.bucket, &m.root_path) else {
                continue;
            };
            if m.instance {
                // Opened (journal replayed) so that only this tenant's own files go.
                let store = match self.tenants.get(&tenant).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%tenant, error = %e, "cannot open a deleted instance to reclaim it");
                        continue;
                    }
                };
                if let Err(e) = store.delete_local_instance().await {
                    tracing::warn!(%tenant, error = %e, "cannot remove a deleted instance's data");
                    continue;
                }
                self.tenants.remove(&tenant).await;
                let markers = self
                    .data_dir()
                    .join(".deleted")
                    .join(&tenant.bucket)
                    .join(&tenant.root);
                let _ = crate::clock::blocking::fs::remove_dir_all(&markers).await;
                let mut d = self.deletions.lock().unwrap_or_else(|p| p.into_inner());
                d.instances.remove(&tenant);
                d.logs.retain(|(t, _)| *t != tenant);
                d.markers.retain(|(t, _), _| *t != tenant);
                d.reclaimed.retain(|(t, _)| *t != tenant);
                tracing::info!(%tenant, "reclaimed a deleted instance");
            } else {
                match self.tenants.get(&tenant).await {
                    Ok(store) => match store.delete_local_log(m.log_id).await {
                        Ok(()) => {
                            self.deletions
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .reclaimed
                                .insert((tenant.clone(), m.log_id));
                            tracing::info!(%tenant, log_id = m.log_id, "reclaimed a deleted log");
                        }
                        Err(e) => {
                            tracing::warn!(%tenant, log_id = m.log_id, error = %e, "cannot reclaim a deleted log")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(%tenant, error = %e, "cannot open a tenant to reclaim a deleted log")
                    }
                }
            }
        }
    }

    /// SelectNodes.
    pub async fn select(
        &self,
        strategy: StrategyType,
        affinity: AffinityMode,
        filters: &[NodeFilter],
    ) -> Result<Vec<NodeMeta>> {
        if filters.is_empty() {
            return Err(ServiceError::NoFilter);
        }
        let nodes = self.membership.live_nodes().await;
        let now = i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX);
        let mut rng = rand::rng();
        select_nodes(
            &nodes,
            strategy,
            affinity,
            filters,
            &self.settings.selection,
            now,
            &mut rng,
        )
        .map_err(ServiceError::SelectFailed)
    }

    /// Runs the background work until the node stops.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let node = Arc::downgrade(self);
        let mut stop = self.stopping.subscribe();
        let clock = self.clock.clone();
        let m = self.settings.maintenance;
        tokio::spawn(async move {
            let disk_every = Duration::from_secs(
                node.upgrade()
                    .map_or(10, |n| n.settings.disk_watermark.sample_interval)
                    .max(1),
            );
            let tick = m
                .reclaim_interval
                .min(m.cleanup_interval)
                .min(disk_every)
                .max(Duration::from_millis(10));
            let mut since_disk = Duration::ZERO;
            let mut since_cleanup = Duration::ZERO;
            loop {
                tokio::select! {
                    () = clock.sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let Some(node) = node.upgrade() else { return };
                since_disk += tick;
                if since_disk >= disk_every {
                    since_disk = Duration::ZERO;
                    node.sample_disk();
                }
                since_cleanup += tick;
                if since_cleanup >= m.cleanup_interval {
                    since_cleanup = Duration::ZERO;
                    let closed = node.tenants.close_idle(m.max_idle).await;
                    if closed > 0 {
                        tracing::debug!(closed, "closed idle segment processors");
                    }
                }
                for (_, store) in node.tenants.open_stores().await {
                    store.reconcile_compacted(m.reconcile_age).await;
                }
                node.reclaim_deleted().await;
                node.check_decommission_progress().await;
            }
        })
    }
}

/// The outcome side of [`LogStoreNode::add_entries`].
#[derive(Debug)]
pub struct AddHandle {
    /// The buffered ids, in order.
    pub ids: Vec<i64>,
    /// `(id, outcome)` per entry, in id order.
    pub outcomes: mpsc::UnboundedReceiver<(i64, std::result::Result<i64, LogStoreError>)>,
}

fn lifecycle_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(".node").join("lifecycle")
}

fn marker_path(data_dir: &std::path::Path, tenant: &Tenant, log_id: Option<i64>) -> PathBuf {
    let mut p = data_dir.join(".deleted").join(&tenant.bucket);
    for c in tenant.root.split('/') {
        p.push(c);
    }
    p.join(match log_id {
        Some(l) => format!("{l}.json"),
        None => "_instance_.json".to_string(),
    })
}

/// Writes `path` through a synced temporary file and a rename (synced directory), so a crash
/// leaves the old or the new content.
fn write_synced(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
