//! The engine's metrics: one place that names them all, as Go Woodpecker's
//! `common/metrics` does.
//!
//! Where this engine measures what Go Woodpecker measures, the metric has Go's name, labels,
//! label values and unit, so that a dashboard or alert written for Go Woodpecker reads this
//! engine unchanged: latencies named `*_latency` are in **milliseconds** (Go observes
//! `time.Since(start).Milliseconds()`; here the buckets reach below one millisecond, since a
//! local append takes a fraction of one), `log_ns` is `<minio.bucketName>/<minio.rootPath>`,
//! `node_id` is the `NODE_NAME` environment variable or `embed`. Metrics Go does not have use
//! Prometheus' conventions: a unit in the name, seconds for time.
//!
//! Handles are resolved once per log ([`ClientLogMetrics::for_log`],
//! [`ServerLogMetrics::for_log`]) or per object-store call site
//! ([`ObjectStorageMetrics::for_log`]) and kept; observing through them is lock-free.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use crate::metrics::{Counter, Family, Gauge, Histogram, Layout, Render, render_all};

/// `woodpecker_client_append_requests_total{log_ns,log_id}`: appends issued by writers.
pub static CLIENT_APPEND_REQUESTS: Family<Counter> = Family::new(
    "woodpecker_client_append_requests_total",
    "Total number of append requests",
    &["log_ns", "log_id"],
    (),
);

/// `woodpecker_client_append_bytes{log_ns,log_id}`: the size of each append.
pub static CLIENT_APPEND_BYTES: Family<Histogram> = Family::new(
    "woodpecker_client_append_bytes",
    "Size of append operations in bytes",
    &["log_ns", "log_id"],
    &Layout::APPEND_BYTES,
);

/// `woodpecker_client_append_latency{log_ns,log_id}`: milliseconds from issuing an append to
/// its acknowledgement (durable), for appends that succeeded.
pub static CLIENT_APPEND_LATENCY: Family<Histogram> = Family::new(
    "woodpecker_client_append_latency",
    "Latency of append operations",
    &["log_ns", "log_id"],
    &Layout::MILLIS,
);

/// `woodpecker_client_segment_completion_retries_total{log_ns,log_id}`: attempts a writer
/// repeated to complete a segment (a roll or a close) through failures that may pass:
/// replicas down or not answering, the metadata store unavailable. Not a Go metric.
pub static CLIENT_SEGMENT_COMPLETION_RETRIES: Family<Counter> = Family::new(
    "woodpecker_client_segment_completion_retries_total",
    "Segment completion attempts repeated through failures that may pass",
    &["log_ns", "log_id"],
    (),
);

/// `woodpecker_client_writers_lost_total{log_ns,log_id}`: writers that stopped for good: lost
/// their log (1405: fenced, taken over, or failures past their patience) or stopped on a
/// storage failure. Closing a writer does not count. Not a Go metric.
pub static CLIENT_WRITERS_LOST: Family<Counter> = Family::new(
    "woodpecker_client_writers_lost_total",
    "Writers that lost their log or stopped on a storage failure",
    &["log_ns", "log_id"],
    (),
);

/// `woodpecker_server_file_flush_latency{node_id,log_ns,log_id}`: milliseconds to make one
/// flushed block durable (local: write and fsync or journal commit; objects: the PUT).
pub static SERVER_FILE_FLUSH_LATENCY: Family<Histogram> = Family::new(
    "woodpecker_server_file_flush_latency",
    "Latency of flush blocks operations",
    &["node_id", "log_ns", "log_id"],
    &Layout::MILLIS,
);

/// `woodpecker_server_flush_bytes_written{node_id,log_ns,log_id}`: block bytes flushed.
pub static SERVER_FLUSH_BYTES_WRITTEN: Family<Counter> = Family::new(
    "woodpecker_server_flush_bytes_written",
    "Total block bytes flushed",
    &["node_id", "log_ns", "log_id"],
    (),
);

/// `woodpecker_server_object_storage_operations_total{node_id,log_ns,log_id,operation,status}`.
pub static OBJECT_STORAGE_OPERATIONS: Family<Counter> = Family::new(
    "woodpecker_server_object_storage_operations_total",
    "Total number of object storage operations",
    &["node_id", "log_ns", "log_id", "operation", "status"],
    (),
);

/// `woodpecker_server_object_storage_operation_latency{node_id,log_ns,log_id,operation,status}`:
/// milliseconds per call, retries included (what the caller waited).
pub static OBJECT_STORAGE_OPERATION_LATENCY: Family<Histogram> = Family::new(
    "woodpecker_server_object_storage_operation_latency",
    "Latency of object storage operations",
    &["node_id", "log_ns", "log_id", "operation", "status"],
    &Layout::MILLIS,
);

/// `woodpecker_server_object_storage_request_bytes{node_id,log_ns,log_id,operation}`.
pub static OBJECT_STORAGE_REQUEST_BYTES: Family<Histogram> = Family::new(
    "woodpecker_server_object_storage_request_bytes",
    "Size of individual object storage requests in bytes",
    &["node_id", "log_ns", "log_id", "operation"],
    &Layout::REQUEST_BYTES,
);

/// `woodpecker_server_object_storage_bytes_transferred{node_id,log_ns,log_id,operation}`.
pub static OBJECT_STORAGE_BYTES_TRANSFERRED: Family<Counter> = Family::new(
    "woodpecker_server_object_storage_bytes_transferred",
    "Total bytes transferred to/from object storage",
    &["node_id", "log_ns", "log_id", "operation"],
    (),
);

/// `woodpecker_server_fsync_latency_seconds{node_id,file}` (this engine's): one durable write
/// of a local file: `segment` (a block's `fdatasync` in its `data.log`) or `journal` (a group
/// commit: an `O_DSYNC` write, or a write and an `fdatasync`).
pub static SERVER_FSYNC_LATENCY: Family<Histogram> = Family::new(
    "woodpecker_server_fsync_latency_seconds",
    "Time of one durable write of a local file (fdatasync, or an O_DSYNC journal write)",
    &["node_id", "file"],
    &Layout::SECONDS,
);

/// `woodpecker_server_fsync_bytes_total{node_id,file}` (this engine's): bytes those durable
/// writes covered.
pub static SERVER_FSYNC_BYTES: Family<Counter> = Family::new(
    "woodpecker_server_fsync_bytes_total",
    "Bytes made durable by fdatasync or O_DSYNC journal writes",
    &["node_id", "file"],
    (),
);

/// `woodpecker_build_info{version}` (this engine's): always 1.
pub static BUILD_INFO: Family<Gauge> = Family::new(
    "woodpecker_build_info",
    "Build of the running woodpecker-rs (value 1)",
    &["version"],
    (),
);

/// `woodpecker_server_logstore_operations_total{node_id,log_ns,log_id,operation,status}`:
/// LogStore RPCs of a service-mode node, by Go's operation names.
pub static LOGSTORE_OPERATIONS: Family<Counter> = Family::new(
    "woodpecker_server_logstore_operations_total",
    "Total number of log store operations",
    &["node_id", "log_ns", "log_id", "operation", "status"],
    (),
);

/// `woodpecker_server_logstore_operation_latency{node_id,log_ns,log_id,operation,status}`:
/// milliseconds from an RPC's arrival to its answer (for the append streams: until the
/// entries are buffered, as Go measures).
pub static LOGSTORE_OPERATION_LATENCY: Family<Histogram> = Family::new(
    "woodpecker_server_logstore_operation_latency",
    "Latency of log store operations",
    &["node_id", "log_ns", "log_id", "operation", "status"],
    &Layout::MILLIS,
);

/// Every metric above, in exposition order.
pub static ALL: [&dyn Render; 16] = [
    &BUILD_INFO,
    &CLIENT_APPEND_REQUESTS,
    &CLIENT_APPEND_BYTES,
    &CLIENT_APPEND_LATENCY,
    &CLIENT_SEGMENT_COMPLETION_RETRIES,
    &CLIENT_WRITERS_LOST,
    &SERVER_FILE_FLUSH_LATENCY,
    &SERVER_FLUSH_BYTES_WRITTEN,
    &SERVER_FSYNC_LATENCY,
    &SERVER_FSYNC_BYTES,
    &OBJECT_STORAGE_OPERATIONS,
    &OBJECT_STORAGE_OPERATION_LATENCY,
    &OBJECT_STORAGE_REQUEST_BYTES,
    &OBJECT_STORAGE_BYTES_TRANSFERRED,
    &LOGSTORE_OPERATIONS,
    &LOGSTORE_OPERATION_LATENCY,
];

/// Writes every engine metric in the Prometheus text format.
pub fn render(out: &mut String) {
    render_all(&ALL, out);
}

/// Marks the build (`woodpecker_build_info{version}` = 1).
pub fn set_build_info(version: &str) {
    BUILD_INFO.with(&[version]).set(1);
}

/// This node's id for `node_id` labels: `NODE_NAME`, else `embed` (as Go Woodpecker).
pub fn node_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| match std::env::var("NODE_NAME") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => "embed".to_string(),
    })
}

static LOG_NAMESPACE: RwLock<String> = RwLock::new(String::new());

/// Sets `log_ns` for handles resolved from now on: `<bucket>/<root path>` (Go's
/// `BuildLogNs`). The engine sets it when it opens; a process with several engines labels
/// each log with the namespace current when its handles were made.
pub fn set_log_namespace(bucket: &str, root_path: &str) {
    let ns = format!("{bucket}/{root_path}");
    *LOG_NAMESPACE.write().unwrap_or_else(|p| p.into_inner()) = ns;
}

/// The current `log_ns`.
pub fn log_namespace() -> String {
    LOG_NAMESPACE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// A writer's handles for one log.
#[derive(Debug, Clone, Copy)]
pub struct ClientLogMetrics {
    /// `woodpecker_client_append_requests_total`.
    pub append_requests: &'static Counter,
    /// `woodpecker_client_append_bytes`.
    pub append_bytes: &'static Histogram,
    /// `woodpecker_client_append_latency`.
    pub append_latency: &'static Histogram,
    /// `woodpecker_client_segment_completion_retries_total`.
    pub completion_retries: &'static Counter,
    /// `woodpecker_client_writers_lost_total`.
    pub writers_lost: &'static Counter,
}

impl ClientLogMetrics {
    /// The handles of log `log_id` in the current namespace.
    pub fn for_log(log_id: i64) -> Self {
        let ns = log_namespace();
        let id = log_id.to_string();
        let labels = [ns.as_str(), id.as_str()];
        ClientLogMetrics {
            append_requests: CLIENT_APPEND_REQUESTS.with(&labels),
            append_bytes: CLIENT_APPEND_BYTES.with(&labels),
            append_latency: CLIENT_APPEND_LATENCY.with(&labels),
            completion_retries: CLIENT_SEGMENT_COMPLETION_RETRIES.with(&labels),
            writers_lost: CLIENT_WRITERS_LOST.with(&labels),
        }
    }
}

/// A segment processor's handles for its log.
#[derive(Debug, Clone, Copy)]
pub struct ServerLogMetrics {
    /// `woodpecker_server_file_flush_latency`.
    pub flush_latency: &'static Histogram,
    /// `woodpecker_server_flush_bytes_written`.
    pub flush_bytes: &'static Counter,
}

impl ServerLogMetrics {
    /// The handles of log `log_id` in the current namespace.
    pub fn for_log(log_id: i64) -> Self {
        Self::for_log_in(&log_namespace(), log_id)
    }

    /// The handles of log `log_id` in namespace `ns` (`<bucket>/<root path>`): a LogStore
    /// node labels each tenant's logs with the tenant, not with the process's namespace.
    pub fn for_log_in(ns: &str, log_id: i64) -> Self {
        let id = log_id.to_string();
        let labels = [node_id(), ns, id.as_str()];
        ServerLogMetrics {
            flush_latency: SERVER_FILE_FLUSH_LATENCY.with(&labels),
            flush_bytes: SERVER_FLUSH_BYTES_WRITTEN.with(&labels),
        }
    }
}

/// Which local file a durable write was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncFile {
    /// A segment's `data.log`.
    Segment,
    /// The group-commit journal.
    Journal,
}

/// The fsync handles of `file`: (latency, bytes).
pub fn fsync(file: FsyncFile) -> (&'static Histogram, &'static Counter) {
    static HANDLES: [OnceLock<(&'static Histogram, &'static Counter)>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let (slot, name) = match file {
        FsyncFile::Segment => (0, "segment"),
        FsyncFile::Journal => (1, "journal"),
    };
    *HANDLES[slot].get_or_init(|| {
        let labels = [node_id(), name];
        (
            SERVER_FSYNC_LATENCY.with(&labels),
            SERVER_FSYNC_BYTES.with(&labels),
        )
    })
}

/// An object-store operation, by Go Woodpecker's `operation` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectOp {
    /// A plain PUT (`put_object`).
    Put,
    /// A PUT only if absent (`condition_put_object`).
    ConditionPut,
    /// A fence object (`put_fenced_object`).
    PutFence,
    /// A GET (`get_object`).
    Get,
    /// A HEAD (`stat_object`).
    Stat,
    /// A DELETE (`remove_object`).
    Remove,
    /// A copy or rename (`copy_object`).
    Copy,
    /// A listing (`list_objects`).
    List,
}

impl ObjectOp {
    /// Every operation, in label order.
    pub const ALL: [ObjectOp; 8] = [
        ObjectOp::Put,
        ObjectOp::ConditionPut,
        ObjectOp::PutFence,
        ObjectOp::Get,
        ObjectOp::Stat,
        ObjectOp::Remove,
        ObjectOp::Copy,
        ObjectOp::List,
    ];

    /// The `operation` label value.
    pub fn label(self) -> &'static str {
        match self {
            ObjectOp::Put => "put_object",
            ObjectOp::ConditionPut => "condition_put_object",
            ObjectOp::PutFence => "put_fenced_object",
            ObjectOp::Get => "get_object",
            ObjectOp::Stat => "stat_object",
            ObjectOp::Remove => "remove_object",
            ObjectOp::Copy => "copy_object",
            ObjectOp::List => "list_objects",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The handles of one operation of one log.
#[derive(Debug)]
struct OpHandles {
    ok: &'static Counter,
    failed: &'static Counter,
    ok_latency: &'static Histogram,
    failed_latency: &'static Histogram,
    request_bytes: &'static Histogram,
    transferred: &'static Counter,
}

/// The object-storage handles of one log (`log_id` empty for objects outside any log).
#[derive(Debug)]
pub struct ObjectStorageMetrics {
    ops: Vec<OpHandles>,
}

impl ObjectStorageMetrics {
    /// The handles of `log_id` (`None`: objects outside a log's segments), made on first use
    /// and cached: after the first call for a log this takes a read lock and allocates
    /// nothing.
    pub fn for_log(log_id: Option<i64>) -> &'static ObjectStorageMetrics {
        type Cache = HashMap<Option<i64>, &'static ObjectStorageMetrics>;
        static CACHE: OnceLock<RwLock<Cache>> = OnceLock::new();
        let cache = CACHE.get_or_init(RwLock::default);
        if let Some(m) = cache.read().unwrap_or_else(|p| p.into_inner()).get(&log_id) {
            return m;
        }
        let mut w = cache.write().unwrap_or_else(|p| p.into_inner());
        w.entry(log_id)
            .or_insert_with(|| Self::make(&log_namespace(), log_id))
    }

    /// [`for_log`](Self::for_log) in namespace `ns` (`<bucket>/<root path>`) rather than the
    /// process's: a LogStore node's stores label their traffic with their tenant.
    pub fn for_log_in(ns: &str, log_id: Option<i64>) -> &'static ObjectStorageMetrics {
        type Cache = HashMap<String, HashMap<Option<i64>, &'static ObjectStorageMetrics>>;
        static CACHE: OnceLock<RwLock<Cache>> = OnceLock::new();
        let cache = CACHE.get_or_init(RwLock::default);
        if let Some(m) = cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
            .and_then(|logs| logs.get(&log_id))
        {
            return m;
        }
        let mut w = cache.write().unwrap_or_else(|p| p.into_inner());
        w.entry(ns.to_string())
            .or_default()
            .entry(log_id)
            .or_insert_with(|| Self::make(ns, log_id))
    }

    /// New handles, leaked: each (namespace, log) gets one set for the life of the process.
    fn make(ns: &str, log_id: Option<i64>) -> &'static ObjectStorageMetrics {
        let id = log_id.map(|i| i.to_string()).unwrap_or_default();
        let ops = ObjectOp::ALL
            .iter()
            .map(|op| {
                let with = |status: &'static str| [node_id(), ns, id.as_str(), op.label(), status];
                let bytes_labels = [node_id(), ns, id.as_str(), op.label()];
                OpHandles {
                    ok: OBJECT_STORAGE_OPERATIONS.with(&with("success")),
                    failed: OBJECT_STORAGE_OPERATIONS.with(&with("error")),
                    ok_latency: OBJECT_STORAGE_OPERATION_LATENCY.with(&with("success")),
                    failed_latency: OBJECT_STORAGE_OPERATION_LATENCY.with(&with("error")),
                    request_bytes: OBJECT_STORAGE_REQUEST_BYTES.with(&bytes_labels),
                    transferred: OBJECT_STORAGE_BYTES_TRANSFERRED.with(&bytes_labels),
                }
            })
            .collect();
        Box::leak(Box::new(ObjectStorageMetrics { ops }))
    }

    /// Records one call: its outcome, its time in nanoseconds and the payload bytes it sent
    /// or received (0 for none).
    pub fn record(&self, op: ObjectOp, ok: bool, nanos: u64, bytes: u64) {
        let h = &self.ops[op.index()];
        if ok {
            h.ok.inc();
            h.ok_latency.observe(nanos);
            if bytes > 0 {
                h.request_bytes.observe(bytes);
                h.transferred.add(bytes);
            }
        } else {
            h.failed.inc();
            h.failed_latency.observe(nanos);
        }
    }
}

/// A LogStore RPC, by Go Woodpecker's `operation` label values (RPCs Go does not measure
/// have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStoreOp {
    /// AddEntry (`add_entry`).
    AddEntry,
    /// AddEntries (`add_entry_batch`).
    AddEntries,
    /// GetBatchEntriesAdv (`get_batch_entries`).
    GetBatchEntries,
    /// CompleteSegment (`complete`).
    Complete,
    /// FenceSegment (`fence`).
    Fence,
    /// GetSegmentLastAddConfirmed (`get_segment_lac`).
    GetSegmentLac,
    /// GetSegmentBlockCount (`get_segment_block_count`).
    GetSegmentBlockCount,
    /// CompactSegment (`compact_segment`).
    CompactSegment,
    /// CleanSegment (`clean_segment`).
    CleanSegment,
    /// UpdateLastAddConfirmed (`update_lac`).
    UpdateLac,
}

impl LogStoreOp {
    /// Every operation, in label order.
    pub const ALL: [LogStoreOp; 10] = [
        LogStoreOp::AddEntry,
        LogStoreOp::AddEntries,
        LogStoreOp::GetBatchEntries,
        LogStoreOp::Complete,
        LogStoreOp::Fence,
        LogStoreOp::GetSegmentLac,
        LogStoreOp::GetSegmentBlockCount,
        LogStoreOp::CompactSegment,
        LogStoreOp::CleanSegment,
        LogStoreOp::UpdateLac,
    ];

    /// The `operation` label value.
    pub fn label(self) -> &'static str {
        match self {
            LogStoreOp::AddEntry => "add_entry",
            LogStoreOp::AddEntries => "add_entry_batch",
            LogStoreOp::GetBatchEntries => "get_batch_entries",
            LogStoreOp::Complete => "complete",
            LogStoreOp::Fence => "fence",
            LogStoreOp::GetSegmentLac => "get_segment_lac",
            LogStoreOp::GetSegmentBlockCount => "get_segment_block_count",
            LogStoreOp::CompactSegment => "compact_segment",
            LogStoreOp::CleanSegment => "clean_segment",
            LogStoreOp::UpdateLac => "update_lac",
        }
    }
}

/// The handles of one LogStore operation of one log: (success, error) counters and
/// latencies.
#[derive(Debug)]
struct RpcHandles {
    ok: &'static Counter,
    failed: &'static Counter,
    ok_latency: &'static Histogram,
    failed_latency: &'static Histogram,
}

/// A service-mode node's RPC handles for one log of one tenant.
#[derive(Debug)]
pub struct LogStoreRpcMetrics {
    ops: Vec<RpcHandles>,
}

impl LogStoreRpcMetrics {
    /// The handles of `log_id` in the tenant `bucket/root_path`, made on first use and
    /// cached: after the first call for a log this takes a read lock and allocates nothing.
    /// A node serves many tenants, so the namespace comes with each request rather than from
    /// [`set_log_namespace`].
    pub fn for_log(bucket: &str, root_path: &str, log_id: i64) -> &'static LogStoreRpcMetrics {
        type Cache = HashMap<(String, String), HashMap<i64, &'static LogStoreRpcMetrics>>;
        static CACHE: OnceLock<RwLock<Cache>> = OnceLock::new();
        let cache = CACHE.get_or_init(RwLock::default);
        {
            let r = cache.read().unwrap_or_else(|p| p.into_inner());
            // Tenants are few; a linear look at them avoids building a key per call.
            if let Some(m) = r
                .iter()
                .find(|((b, p), _)| b == bucket && p == root_path)
                .and_then(|(_, logs)| logs.get(&log_id))
            {
                return m;
            }
        }
        let mut w = cache.write().unwrap_or_else(|p| p.into_inner());
        w.entry((bucket.to_string(), root_path.to_string()))
            .or_default()
            .entry(log_id)
            .or_insert_with(|| {
                let ns = format!("{bucket}/{root_path}");
                let id = log_id.to_string();
                let ops = LogStoreOp::ALL
                    .iter()
                    .map(|op| {
                        let with = |status: &'static str| {
                            [node_id(), ns.as_str(), id.as_str(), op.label(), status]
                        };
                        RpcHandles {
                            ok: LOGSTORE_OPERATIONS.with(&with("success")),
                            failed: LOGSTORE_OPERATIONS.with(&with("error")),
                            ok_latency: LOGSTORE_OPERATION_LATENCY.with(&with("success")),
                            failed_latency: LOGSTORE_OPERATION_LATENCY.with(&with("error")),
                        }
                    })
                    .collect();
                Box::leak(Box::new(LogStoreRpcMetrics { ops }))
            })
    }

    /// Records one call of `op`: its outcome and its time in nanoseconds.
    pub fn record(&self, op: LogStoreOp, ok: bool, nanos: u64) {
        let h = &self.ops[op as usize];
        if ok {
            h.ok.inc();
            h.ok_latency.observe(nanos);
        } else {
            h.failed.inc();
            h.failed_latency.observe(nanos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_with_the_same_log_id_get_series_of_their_own() {
        let a = ServerLogMetrics::for_log_in("tenant-a/root", 41);
        let b = ServerLogMetrics::for_log_in("tenant-b/root", 41);
        a.flush_bytes.add(100);
        b.flush_bytes.add(7);
        let oa = ObjectStorageMetrics::for_log_in("tenant-a/root", Some(41));
        let ob = ObjectStorageMetrics::for_log_in("tenant-b/root", Some(41));
        assert!(!std::ptr::eq(oa, ob));
        assert!(std::ptr::eq(
            oa,
            ObjectStorageMetrics::for_log_in("tenant-a/root", Some(41))
        ));
        oa.record(ObjectOp::Put, true, 1_000, 10);
        ob.record(ObjectOp::Put, true, 1_000, 20);
        let mut out = String::new();
        render(&mut out);
        for line in [
            "woodpecker_server_flush_bytes_written{node_id=\"embed\",log_ns=\"tenant-a/root\",log_id=\"41\"} 100",
            "woodpecker_server_flush_bytes_written{node_id=\"embed\",log_ns=\"tenant-b/root\",log_id=\"41\"} 7",
            "woodpecker_server_object_storage_bytes_transferred{node_id=\"embed\",log_ns=\"tenant-a/root\",log_id=\"41\",operation=\"put_object\"} 10",
            "woodpecker_server_object_storage_bytes_transferred{node_id=\"embed\",log_ns=\"tenant-b/root\",log_id=\"41\",operation=\"put_object\"} 20",
        ] {
            assert!(out.contains(line), "missing {line} in\n{out}");
        }
    }

    #[test]
    fn go_names_and_labels() {
        set_log_namespace("bucket", "files");
        let client = ClientLogMetrics::for_log(7);
        client.append_requests.inc();
        client.append_latency.observe(2_000_000);
        let server = ServerLogMetrics::for_log(7);
        server.flush_bytes.add(4096);
        let objects = ObjectStorageMetrics::for_log(Some(7));
        objects.record(ObjectOp::ConditionPut, true, 3_000_000, 1 << 20);
        objects.record(ObjectOp::Get, false, 1_000, 0);
        assert!(std::ptr::eq(
            objects,
            ObjectStorageMetrics::for_log(Some(7))
        ));
        let rpcs = LogStoreRpcMetrics::for_log("tenant", "root", 9);
        rpcs.record(LogStoreOp::AddEntries, true, 500_000);
        rpcs.record(LogStoreOp::Fence, false, 2_000_000);
        assert!(std::ptr::eq(
            rpcs,
            LogStoreRpcMetrics::for_log("tenant", "root", 9)
        ));
        assert!(!std::ptr::eq(
            rpcs,
            LogStoreRpcMetrics::for_log("tenant", "other", 9)
        ));
        let (lat, bytes) = fsync(FsyncFile::Journal);
        lat.observe(100_000);
        bytes.add(16384);
        let mut out = String::new();
        render(&mut out);
        for line in [
            "woodpecker_client_append_requests_total{log_ns=\"bucket/files\",log_id=\"7\"} 1",
            "woodpecker_client_append_latency_bucket{log_ns=\"bucket/files\",log_id=\"7\",le=\"2\"} 1",
            "woodpecker_server_flush_bytes_written{node_id=\"embed\",log_ns=\"bucket/files\",log_id=\"7\"} 4096",
            "woodpecker_server_object_storage_operations_total{node_id=\"embed\",log_ns=\"bucket/files\",log_id=\"7\",operation=\"condition_put_object\",status=\"success\"} 1",
            "woodpecker_server_object_storage_operations_total{node_id=\"embed\",log_ns=\"bucket/files\",log_id=\"7\",operation=\"get_object\",status=\"error\"} 1",
            "woodpecker_server_object_storage_bytes_transferred{node_id=\"embed\",log_ns=\"bucket/files\",log_id=\"7\",operation=\"condition_put_object\"} 1048576",
            "woodpecker_server_fsync_latency_seconds_count{node_id=\"embed\",file=\"journal\"} 1",
            "woodpecker_server_fsync_bytes_total{node_id=\"embed\",file=\"journal\"} 16384",
            "woodpecker_server_logstore_operations_total{node_id=\"embed\",log_ns=\"tenant/root\",log_id=\"9\",operation=\"add_entry_batch\",status=\"success\"} 1",
            "woodpecker_server_logstore_operations_total{node_id=\"embed\",log_ns=\"tenant/root\",log_id=\"9\",operation=\"fence\",status=\"error\"} 1",
            "woodpecker_server_logstore_operation_latency_bucket{node_id=\"embed\",log_ns=\"tenant/root\",log_id=\"9\",operation=\"fence\",status=\"error\",le=\"2\"} 1",
        ] {
            assert!(out.contains(&format!("{line}\n")), "missing {line}\n{out}");
        }
    }
}
