//! The auditor (truncation marking, compaction, truncation GC) and `Client::delete_log`.
//!
//! Embedded metadata, a LogStore on in-memory object storage or local files, and a
//! `ManualClock`: the retention TTL is 30 s of that clock, so a test passes it in an instant.
//! Each message encodes to 16 bytes and segments roll after 30 bytes: two entries a segment.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::meta::{SegmentCleanupState, SegmentCleanupStatus, SegmentMetadata, SegmentState};
use storage::object::ObjectStorage;
use storage::segment::object::{ObjectSegmentReader, SegmentObjects};
use wal::client::{AuditReport, Client, ClientSettings, EMBEDDED_NODE, LogHandle, LogWriter};
use wal::clock::{ClockRef, ManualClock};
use wal::config::SegmentRollingPolicy;
use wal::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};
use wal::message::{LogMessage, LogMessageId, WriteMessage};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;
use wal::meta::{KvMetadata, MetadataProvider};

const START_MILLIS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Local,
}

struct Env {
    kind: Kind,
    clock: ManualClock,
    meta: Arc<dyn MetadataProvider>,
    backend: Backend,
    logstore: Arc<LogStore>,
    client: Client,
    _dirs: Vec<tempfile::TempDir>,
}

impl Env {
    async fn new(kind: Kind) -> Env {
        let clock = ManualClock::new(START_MILLIS);
        let clock_ref: ClockRef = Arc::new(clock.clone());
        let meta_dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(
            EmbeddedKv::open(meta_dir.path(), clock_ref.clone())
                .await
                .unwrap(),
        );
        let meta = KvMetadata::with_prefix(kv, "by-dev/woodpecker", clock_ref.clone());
        meta.init_if_necessary().await.unwrap();
        let meta: Arc<dyn MetadataProvider> = Arc::new(meta);
        let mut dirs = vec![meta_dir];
        let backend = match kind {
            Kind::Memory => Backend::Object(ObjectStorage::in_memory("").unwrap()),
            Kind::Local => {
                let dir = tempfile::tempdir().unwrap();
                let b = Backend::local(dir.path(), "");
                dirs.push(dir);
                b
            }
        };
        let policy = SyncPolicy {
            max_flush_size: 1,
            ..SyncPolicy::default()
        };
        let logstore = Arc::new(
            LogStore::new(
                backend.clone(),
                policy,
                FormatVersion::V6,
                clock_ref.clone(),
            )
            .unwrap(),
        );
        let settings = ClientSettings {
            rolling: SegmentRollingPolicy {
                max_size: 30,
                ..SegmentRollingPolicy::default()
            },
            retention_ttl: TTL,
            compaction_max_bytes: 64,
            ..ClientSettings::default()
        };
        let client = Client::new(meta.clone(), logstore.clone(), settings, clock_ref);
        Env {
            kind,
            clock,
            meta,
            backend,
            logstore,
            client,
            _dirs: dirs,
        }
    }

    /// Creates `log` and writes `n` messages; returns the handle and the open writer.
    async fn log_with(&self, log: &str, n: usize) -> (LogHandle, LogWriter) {
        self.client.create_log(log).await.unwrap();
        let h = self.client.open_log(log).await.unwrap();
        let w = h.open_writer().await.unwrap();
        for i in 0..n {
            w.write(msg(i)).await.unwrap();
        }
        (h, w)
    }

    /// Sets the truncation point by a CAS on the log metadata.
    async fn truncate(&self, log: &str, segment: i64, entry: i64) {
        let current = self.meta.get_log_meta(log).await.unwrap();
        let mut next = current.value;
        next.truncated_segment_id = segment;
        next.truncated_entry_id = entry;
        self.meta
            .update_log_meta(log, &next, current.revision)
            .await
            .unwrap();
    }

    /// Whether any data of the segment is left in storage.
    async fn has_data(&self, log_id: i64, seg: i64) -> bool {
        match &self.backend {
            Backend::Object(storage) => !storage
                .list(&format!("{log_id}/{seg}/"))
                .await
                .unwrap()
                .is_empty(),
            Backend::Local(dir) => dir.join(log_id.to_string()).join(seg.to_string()).exists(),
        }
    }

    /// Every payload of a segment, read through the LogStore.
    async fn payloads(&self, log_id: i64, seg: i64) -> Vec<String> {
        let read = self
            .logstore
            .read_batch(log_id, seg, 0, usize::MAX, usize::MAX)
            .await
            .unwrap();
        read.entries
            .into_iter()
            .map(|(id, data)| {
                LogMessage::decode(LogMessageId::new(seg, id), data)
                    .unwrap()
                    .payload
            })
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    }
}

fn msg(i: usize) -> WriteMessage {
    WriteMessage::new(format!("m-{i:04}")).with_property("i", i.to_string())
}

fn expected(seg: i64) -> Vec<String> {
    let i = seg as usize * 2;
    vec![format!("m-{i:04}"), format!("m-{:04}", i + 1)]
}

fn state(s: &SegmentMetadata) -> SegmentState {
    SegmentState::try_from(s.state).unwrap()
}

async fn states(h: &LogHandle) -> Vec<(i64, SegmentState)> {
    h.segments()
        .await
        .unwrap()
        .iter()
        .map(|(id, s)| (*id, state(s)))
        .collect()
}

async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("timed out")
}

async fn both<F, Fut>(test: F)
where
    F: Fn(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    for kind in [Kind::Memory, Kind::Local] {
        eprintln!("backend {kind:?}");
        within(test(Env::new(kind).await)).await;
    }
}

#[tokio::test]
async fn completed_segments_are_compacted_and_sealed_on_object_storage_only() {
    both(|env| async move {
        let (h, _w) = env.log_with("log", 5).await;
        use SegmentState::*;
        assert_eq!(
            states(&h).await,
            [(0, Completed), (1, Completed), (2, Active)]
        );
        env.clock.advance(Duration::from_secs(1));
        let report = h.auditor().run_once().await.unwrap();
        assert_eq!(report.truncated_segment_id, -1);
        assert_eq!(report.marked_truncated, 0);
        assert_eq!(report.compaction_failed, 0);
        let segs = h.segments().await.unwrap();
        match env.kind {
            Kind::Memory => {
                assert_eq!((report.sealed, report.compaction_skipped), (2, 0));
                assert_eq!(states(&h).await, [(0, Sealed), (1, Sealed), (2, Active)]);
                for seg in 0..2 {
                    let s = &segs[&seg];
                    assert_eq!(s.sealed_time, (START_MILLIS + 1_000) as i64);
                    assert_eq!(s.last_entry_id, 1);
                    assert!(s.size > 0);
                    let Backend::Object(storage) = &env.backend else {
                        unreachable!()
                    };
                    let objects = SegmentObjects::new(storage.clone(), h.log_id(), seg);
                    let footer = objects.read_footer().await.unwrap().unwrap();
                    assert!(footer.is_compacted());
                    assert_eq!(footer.last_entry_id(), 1);
                    assert_eq!(s.size as u64, footer.footer.total_size);
                    // Straight from storage, and through the LogStore.
                    let mut reader = ObjectSegmentReader::new(objects);
                    let raw = reader.read(0, usize::MAX).await.unwrap().entries;
                    let ids: Vec<_> = raw.iter().map(|(id, _)| *id).collect();
                    assert_eq!(ids, [0, 1]);
                    assert_eq!(env.payloads(h.log_id(), seg).await, expected(seg));
                }
            }
            Kind::Local => {
                // No compaction on local files: the segments stay Completed, as in Go.
                assert_eq!((report.sealed, report.compaction_skipped), (0, 2));
                assert_eq!(
                    states(&h).await,
                    [(0, Completed), (1, Completed), (2, Active)]
                );
                for seg in 0..2 {
                    assert_eq!(env.payloads(h.log_id(), seg).await, expected(seg));
                }
            }
        }
        // A second pass changes nothing.
        let again = h.auditor().run_once().await.unwrap();
        assert_eq!(again.sealed, 0);
        assert_eq!(again.compaction_failed, 0);
    })
    .await;
}

#[tokio::test]
async fn a_completed_segment_without_footer_stays_completed() {
    let env = within(Env::new(Kind::Memory)).await;
    within(async {
        let (h, w) = env.log_with("log", 2).await;
        w.close().await.unwrap();
        // Segment 5: blocks flushed but never finalized (a v0.1.13 writer's takeover left
        // it Completed without a footer).
        for e in 0..2 {
            env.logstore
                .add_entry(h.log_id(), 5, e, Bytes::from_static(b"x"))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        env.logstore.close_processor(h.log_id(), 5).await;
        let seg0 = h.segments().await.unwrap()[&0].clone();
        env.meta
            .store_segment_metadata(
                "log",
                &SegmentMetadata {
                    seg_no: 5,
                    state: SegmentState::Completed as i32,
                    last_entry_id: 1,
                    ..seg0
                },
            )
            .await
            .unwrap();
        let report = h.auditor().run_once().await.unwrap();
        assert_eq!((report.sealed, report.compaction_failed), (1, 1));
        use SegmentState::*;
        assert_eq!(states(&h).await, [(0, Sealed), (5, Completed)]);
    })
    .await;
}

#[tokio::test]
async fn truncation_marks_only_finished_segments_below_the_point() {
    both(|env| async move {
        let (h, _w) = env.log_with("log", 5).await;
        // Memory: segments 0 and 1 become Sealed; local: they stay Completed.
        h.auditor().run_once().await.unwrap();
        // Truncate past the active segment 2: it must not be touched (#285/#286).
        env.truncate("log", 3, 0).await;
        let report = h.auditor().run_once().await.unwrap();
        assert_eq!(report.truncated_segment_id, 3);
        assert_eq!(report.marked_truncated, 2);
        assert_eq!(report.conflicts, 0);
        use SegmentState::*;
        assert_eq!(
            states(&h).await,
            [(0, Truncated), (1, Truncated), (2, Active)]
        );
        // Inside the TTL: nothing collected yet, the data is all there.
        assert_eq!(report.collected, 0);
        assert_eq!(report.retained, 2);
        for seg in 0..3 {
            assert!(env.has_data(h.log_id(), seg).await);
        }
        let again = h.auditor().run_once().await.unwrap();
        assert_eq!(again.marked_truncated, 0);
    })
    .await;
}

#[tokio::test]
async fn gc_waits_for_the_ttl_and_never_passes_a_live_reader() {
    both(|env| async move {
        let (h, _w) = env.log_with("log", 7).await;
        let log_id = h.log_id();
        h.auditor().run_once().await.unwrap();
        env.truncate("log", 3, 0).await;
        let reader = env.meta.register_reader(log_id, "r-1", 1, 0).await.unwrap();

        let r = h.auditor().run_once().await.unwrap();
        assert_eq!((r.marked_truncated, r.collected, r.retained), (3, 0, 3));

        env.clock.advance(TTL - Duration::from_millis(1));
        let r = h.auditor().run_once().await.unwrap();
        assert_eq!((r.collected, r.retained), (0, 3), "{r:?}");

        env.clock.advance(Duration::from_millis(1));
        let r = h.auditor().run_once().await.unwrap();
        // Only below the reader (segment 1).
        assert_eq!((r.collected, r.retained), (1, 2), "{r:?}");
        use SegmentState::*;
        assert_eq!(
            states(&h).await,
            [(1, Truncated), (2, Truncated), (3, Active)]
        );
        assert!(!env.has_data(log_id, 0).await);
        assert!(env.has_data(log_id, 1).await);
        assert_eq!(env.payloads(log_id, 1).await, expected(1));
        assert!(
            env.meta
                .get_segment_cleanup_status(log_id, 0)
                .await
                .unwrap()
                .is_none()
        );

        reader.close().await.unwrap();
        let r = h.auditor().run_once().await.unwrap();
        assert_eq!((r.collected, r.retained), (2, 0), "{r:?}");
        assert_eq!(states(&h).await, [(3, Active)]);
        for seg in 0..3 {
            assert!(!env.has_data(log_id, seg).await, "segment {seg}");
        }
        assert!(env.has_data(log_id, 3).await);
        assert!(
            env.meta
                .list_segment_cleanup_status(log_id)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn interrupted_cleanups_are_resumed() {
    both(|env| async move {
        let (h, _w) = env.log_with("log", 7).await;
        let log_id = h.log_id();
        env.truncate("log", 3, 0).await;
        h.auditor().run_once().await.unwrap();
        env.clock.advance(TTL);
        let now = START_MILLIS + TTL.as_millis() as u64;
        let record = |seg: i64, state: SegmentCleanupState| SegmentCleanupStatus {
            log_id,
            segment_id: seg,
            state: state as i32,
            start_time: now,
            last_update_time: now,
            quorum_cleanup_status: [(EMBEDDED_NODE.to_string(), false)].into(),
            error_message: String::new(),
        };
        // Segment 0: a pass died right after writing its record (data still there).
        // Segment 1: a pass died after cleaning the data (record COMPLETED, metadata kept).
        // Segment 9: a pass died after deleting the metadata (an orphan record).
        env.meta
            .create_segment_cleanup_status(&record(0, SegmentCleanupState::CleanupInProgress))
            .await
            .unwrap();
        env.logstore
            .clean_segment(log_id, 1, wal::logstore::CleanScope::All)
            .await
            .unwrap();
        env.meta
            .create_segment_cleanup_status(&record(1, SegmentCleanupState::CleanupCompleted))
            .await
            .unwrap();
        env.meta
            .create_segment_cleanup_status(&record(9, SegmentCleanupState::CleanupInProgress))
            .await
            .unwrap();

        let r = h.auditor().run_once().await.unwrap();
        // The fresh IN_PROGRESS record belongs to a cleaner that may still run.
        assert_eq!(
            (r.collected, r.retained, r.orphan_records_removed),
            (2, 1, 1),
            "{r:?}"
        );
        use SegmentState::*;
        assert_eq!(states(&h).await, [(0, Truncated), (3, Active)]);
        assert!(env.has_data(log_id, 0).await);

        // Once stale (10 min without an update), it is taken over.
        env.clock.advance(Duration::from_secs(600));
        let r = h.auditor().run_once().await.unwrap();
        assert_eq!((r.collected, r.retained), (1, 0), "{r:?}");
        assert_eq!(states(&h).await, [(3, Active)]);
        for seg in 0..3 {
            assert!(!env.has_data(log_id, seg).await, "segment {seg}");
        }
        assert!(
            env.meta
                .list_segment_cleanup_status(log_id)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn the_background_auditor_runs_on_the_clock() {
    let env = within(Env::new(Kind::Memory)).await;
    within(async {
        let (h, _w) = env.log_with("log", 5).await;
        let auditor = h.start_auditor();
        tokio::task::yield_now().await;
        use SegmentState::*;
        assert_eq!(
            states(&h).await,
            [(0, Completed), (1, Completed), (2, Active)]
        );
        env.clock.advance(Duration::from_secs(10));
        while states(&h).await != [(0, Sealed), (1, Sealed), (2, Active)] {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!auditor.is_finished());
        auditor.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_log_removes_data_and_metadata() {
    both(|env| async move {
        let (h, w) = env.log_with("log", 5).await;
        let (other, _ow) = env.log_with("other", 3).await;
        w.close().await.unwrap();
        let log_id = h.log_id();
        h.auditor().run_once().await.unwrap();
        env.client.delete_log("log").await.unwrap();
        assert!(!env.client.log_exists("log").await.unwrap());
        for seg in 0..3 {
            assert!(!env.has_data(log_id, seg).await, "segment {seg}");
        }
        let e = env.client.delete_log("log").await.unwrap_err();
        assert_eq!(e.code(), 3012, "{e}");
        // The other log is untouched, and the name can be reused.
        assert_eq!(env.payloads(other.log_id(), 0).await, expected(0));
        env.client.create_log("log").await.unwrap();
        let h2 = env.client.open_log("log").await.unwrap();
        assert!(h2.segments().await.unwrap().is_empty());
        let _: AuditReport = h2.auditor().run_once().await.unwrap();
    })
    .await;
}
