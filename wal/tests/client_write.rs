//! The embedded-mode client write path: logs, writers, dense ids, rolling, takeover.
//!
//! Every test runs on in-memory object storage and on local files, with the embedded
//! metadata store and a `ManualClock`. The LogStore flushes every append at once (a
//! `max_flush_size` of one byte), so durability never waits for the clock; time only moves
//! when a test advances it.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use proto::meta::{SegmentMetadata, SegmentState};
use storage::object::faults::{FaultInjectingStore, FaultRule, Op};
use storage::object::{BackendKind, Capabilities, ObjectStorage};
use storage::segment::local::LocalSegmentReader;
use storage::segment::object::{ObjectSegmentReader, SegmentObjects};
use wal::client::{Client, ClientError, ClientSettings, LogHandle, embedded_quorum};
use wal::clock::{ClockRef, ManualClock};
use wal::config::SegmentRollingPolicy;
use wal::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};
use wal::message::{LogMessage, LogMessageId, WriteMessage};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;
use wal::meta::{KvMetadata, MetadataProvider};

const START_MILLIS: u64 = 1_700_000_000_000;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Local,
}

struct Env {
    clock: ManualClock,
    clock_ref: ClockRef,
    meta: Arc<dyn MetadataProvider>,
    backend: Backend,
    logstore: Arc<LogStore>,
    _dirs: Vec<tempfile::TempDir>,
}

fn policy() -> SyncPolicy {
    SyncPolicy {
        max_flush_size: 1,
        ..SyncPolicy::default()
    }
}

impl Env {
    async fn new(kind: Kind) -> Env {
        Env::build(kind, None).await
    }

    async fn build(kind: Kind, object: Option<ObjectStorage>) -> Env {
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
        let mut dirs = vec![meta_dir];
        let backend = match kind {
            Kind::Memory => {
                Backend::Object(object.unwrap_or_else(|| ObjectStorage::in_memory("").unwrap()))
            }
            Kind::Local => {
                let dir = tempfile::tempdir().unwrap();
                let b = Backend::local(dir.path(), "");
                dirs.push(dir);
                b
            }
        };
        let logstore = Arc::new(
            LogStore::new(
                backend.clone(),
                policy(),
                FormatVersion::V6,
                clock_ref.clone(),
            )
            .unwrap(),
        );
        Env {
            clock,
            clock_ref,
            meta: Arc::new(meta),
            backend,
            logstore,
            _dirs: dirs,
        }
    }

    fn client(&self, rolling: SegmentRollingPolicy) -> Client {
        let settings = ClientSettings {
            rolling,
            ..ClientSettings::default()
        };
        Client::new(
            self.meta.clone(),
            self.logstore.clone(),
            settings,
            self.clock_ref.clone(),
        )
    }

    /// A second LogStore on the same storage: the LogStore of a restarted process.
    fn restarted_logstore(&self) -> Arc<LogStore> {
        Arc::new(
            LogStore::new(
                self.backend.clone(),
                policy(),
                FormatVersion::V6,
                self.clock_ref.clone(),
            )
            .unwrap(),
        )
    }

    /// Every entry of a segment, straight from storage.
    async fn read_segment(&self, log_id: i64, seg: i64) -> Vec<LogMessage> {
        let raw: Vec<(i64, Bytes)> = match &self.backend {
            Backend::Object(storage) => {
                let mut reader =
                    ObjectSegmentReader::new(SegmentObjects::new(storage.clone(), log_id, seg));
                reader.read(0, usize::MAX).await.unwrap().entries
            }
            Backend::Local(dir) => {
                let reader =
                    LocalSegmentReader::open(dir.join(log_id.to_string()).join(seg.to_string()))
                        .await
                        .unwrap();
                reader
                    .read_from(0, usize::MAX)
                    .await
                    .unwrap()
                    .entries
                    .into_iter()
                    .map(|e| (e.entry_id, e.data))
                    .collect()
            }
        };
        raw.into_iter()
            .map(|(id, data)| LogMessage::decode(LogMessageId::new(seg, id), data).unwrap())
            .collect()
    }
}

fn no_rolling() -> SegmentRollingPolicy {
    SegmentRollingPolicy::default()
}

fn msg(i: usize) -> WriteMessage {
    WriteMessage::new(format!("m-{i:04}")).with_property("i", i.to_string())
}

fn id(seg: i64, entry: i64) -> LogMessageId {
    LogMessageId::new(seg, entry)
}

async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("timed out")
}

async fn segments(h: &LogHandle) -> Vec<(i64, SegmentMetadata)> {
    h.segments().await.unwrap().into_iter().collect()
}

fn completed(s: &SegmentMetadata) -> bool {
    s.state == SegmentState::Completed as i32
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
async fn create_open_and_list_logs() {
    both(|env| async move {
        let client = env.client(no_rolling());
        for name in ["by-dev-dml_0", "by-dev-dml_1", "other"] {
            client.create_log(name).await.unwrap();
        }
        let e = client.create_log("other").await.unwrap_err();
        assert_eq!(e.code(), 3013, "{e}");
        assert!(client.log_exists("by-dev-dml_1").await.unwrap());
        assert!(!client.log_exists("nope").await.unwrap());
        assert_eq!(
            client.list_logs().await.unwrap(),
            ["by-dev-dml_0", "by-dev-dml_1", "other"]
        );
        assert_eq!(
            client.list_logs_with_prefix("by-dev-").await.unwrap(),
            ["by-dev-dml_0", "by-dev-dml_1"]
        );
        let h = client.open_log("other").await.unwrap();
        assert_eq!(h.name(), "other");
        assert_eq!(h.log_id(), 3);
        let e = client.open_log("nope").await.unwrap_err();
        assert!(matches!(e, ClientError::LogNotFound { .. }), "{e}");
        assert_eq!(e.code(), 3012);
    })
    .await;
}

#[tokio::test]
async fn writes_get_dense_ids_in_order_and_read_back() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        // No segment before the first write.
        assert!(segments(&h).await.is_empty());

        for i in 0..5 {
            assert_eq!(w.write(msg(i)).await.unwrap(), id(0, i as i64));
        }
        // An invalid message fails with 8100 and takes no id.
        let e = w.write(WriteMessage::default()).await.unwrap_err();
        assert_eq!(e.code(), 8100);

        let segs = segments(&h).await;
        assert_eq!(segs.len(), 1);
        let (sid, s) = &segs[0];
        assert_eq!(*sid, 0);
        assert_eq!(s.state, SegmentState::Active as i32);
        assert_eq!(s.last_entry_id, -1);
        assert_eq!(s.create_time, START_MILLIS as i64);
        assert_eq!(s.quorum, Some(embedded_quorum()));

        // Pipelined: issue many, await later; the issue order fixes the ids.
        let futs: Vec<_> = (5..45).map(|i| w.write_async(msg(i))).collect();
        // Await the last one first: it resolves only after all earlier ones are durable.
        let results = futures::future::join_all(futs.into_iter().rev()).await;
        let got: Vec<_> = results.into_iter().rev().map(Result::unwrap).collect();
        let want: Vec<_> = (5..45).map(|e| id(0, e)).collect();
        assert_eq!(got, want);

        w.close().await.unwrap();
        assert!(!w.is_valid());
        let e = w.write(msg(99)).await.unwrap_err();
        assert_eq!(e.code(), 1405, "{e}");
        // A callback write on a closed writer is answered at once, in the call.
        let (tx, rx) = std::sync::mpsc::channel();
        w.write_then(msg(100), move |r| tx.send(r).unwrap());
        let e = rx.try_recv().expect("answered in the call").unwrap_err();
        assert_eq!(e.code(), 1405, "{e}");
        w.close().await.unwrap();

        let segs = segments(&h).await;
        assert_eq!(segs.len(), 1);
        assert!(completed(&segs[0].1));
        assert_eq!(segs[0].1.last_entry_id, 44);
        assert!(segs[0].1.size > 0);
        assert!(segs[0].1.completion_time >= START_MILLIS as i64);

        let read = env.read_segment(h.log_id(), 0).await;
        assert_eq!(read.len(), 45);
        for (i, m) in read.iter().enumerate() {
            assert_eq!(m.id, id(0, i as i64));
            assert_eq!(m.payload, format!("m-{i:04}"));
            assert_eq!(m.properties.get("i"), Some(&i.to_string()));
        }
    })
    .await;
}

#[tokio::test]
async fn rolls_by_size() {
    both(|env| async move {
        // Each message encodes to 16 bytes: a segment rolls after its second.
        assert_eq!(msg(0).encode().unwrap().len(), 16);
        let client = env.client(SegmentRollingPolicy {
            max_size: 30,
            ..no_rolling()
        });
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(w.write(msg(i)).await.unwrap());
        }
        assert_eq!(
            ids,
            [id(0, 0), id(0, 1), id(1, 0), id(1, 1), id(2, 0), id(2, 1)]
        );
        let segs = segments(&h).await;
        assert_eq!(segs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(completed(&segs[0].1) && completed(&segs[1].1));
        assert!(!completed(&segs[2].1));
        assert_eq!(segs[0].1.last_entry_id, 1);
        assert_eq!(segs[1].1.last_entry_id, 1);
        assert_eq!(segs[0].1.size, 32);
        w.close().await.unwrap();
        let segs = segments(&h).await;
        assert!(completed(&segs[2].1));
        assert_eq!(segs[2].1.last_entry_id, 1);
        for seg in 0..3 {
            let read = env.read_segment(h.log_id(), seg).await;
            let payloads: Vec<_> = read.iter().map(|m| m.payload.clone()).collect();
            let i = seg as usize * 2;
            assert_eq!(payloads, [format!("m-{i:04}"), format!("m-{:04}", i + 1)]);
        }
    })
    .await;
}

/// Writes taken in line and writes queued behind a roll or a full in-flight limit keep the
/// issue order, and `write_then` callbacks run once each, in that order.
#[tokio::test]
async fn pipelined_writes_keep_their_order_across_rolls_and_the_in_flight_limit() {
    both(|env| async move {
        let client = Client::new(
            env.meta.clone(),
            env.logstore.clone(),
            ClientSettings {
                // Two 16-byte messages per segment; at most three appends in flight.
                rolling: SegmentRollingPolicy {
                    max_size: 30,
                    ..no_rolling()
                },
                max_in_flight: 3,
                ..ClientSettings::default()
            },
            env.clock_ref.clone(),
        );
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut futs = Vec::new();
        for i in 0..40 {
            if i % 5 == 4 {
                // Let the writer's task catch up, so that the next writes are taken in line.
                tokio::task::yield_now().await;
            }
            if i % 3 == 0 {
                futs.push((i, w.write_async(msg(i))));
            } else {
                let told = told.clone();
                w.write_then(msg(i), move |r| told.lock().unwrap().push((i, r.unwrap())));
            }
        }
        let mut awaited = Vec::new();
        for (i, f) in futs {
            awaited.push((i, f.await.unwrap()));
        }
        w.close().await.unwrap();
        let want = |i: usize| id((i / 2) as i64, (i % 2) as i64);
        let told = told.lock().unwrap().clone();
        assert_eq!(told.len(), 40 - awaited.len());
        assert!(
            told.windows(2).all(|p| p[0].0 < p[1].0),
            "callbacks in issue order"
        );
        for (i, got) in told.into_iter().chain(awaited) {
            assert_eq!(got, want(i), "write {i}");
        }
        for seg in 0..20 {
            let read = env.read_segment(h.log_id(), seg).await;
            let payloads: Vec<_> = read.iter().map(|m| m.payload.clone()).collect();
            let i = seg as usize * 2;
            assert_eq!(payloads, [format!("m-{i:04}"), format!("m-{:04}", i + 1)]);
        }
    })
    .await;
}

#[tokio::test]
async fn rolls_by_time_only_when_non_empty() {
    both(|env| async move {
        let client = env.client(SegmentRollingPolicy {
            max_interval: 10,
            ..no_rolling()
        });
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        assert_eq!(w.write(msg(0)).await.unwrap(), id(0, 0));
        env.clock.advance(Duration::from_secs(9));
        assert_eq!(w.write(msg(1)).await.unwrap(), id(0, 1));
        env.clock.advance(Duration::from_secs(1));
        assert_eq!(w.write(msg(2)).await.unwrap(), id(1, 0));
        let segs = segments(&h).await;
        assert!(completed(&segs[0].1));
        assert_eq!(segs[0].1.last_entry_id, 1);
        assert_eq!(segs[0].1.completion_time, (START_MILLIS + 10_000) as i64);
        assert_eq!(segs[1].1.create_time, (START_MILLIS + 10_000) as i64);
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn rolls_by_block_count() {
    both(|env| async move {
        let client = env.client(SegmentRollingPolicy {
            max_blocks: 3,
            ..no_rolling()
        });
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(w.write(msg(i)).await.unwrap());
        }
        // One block per acknowledged write: the fourth write finds three blocks.
        assert_eq!(ids, [id(0, 0), id(0, 1), id(0, 2), id(1, 0)]);
        assert_eq!(segments(&h).await[0].1.last_entry_id, 2);
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_new_writer_fences_the_old_one() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        for i in 0..3 {
            assert_eq!(a.write(msg(i)).await.unwrap(), id(0, i as i64));
        }

        let b = client
            .open_log("log")
            .await
            .unwrap()
            .open_writer()
            .await
            .unwrap();
        let segs = segments(&h).await;
        assert_eq!(segs.len(), 1);
        assert!(completed(&segs[0].1));
        assert_eq!(segs[0].1.last_entry_id, 2);

        let e = a.write(msg(100)).await.unwrap_err();
        assert_eq!(e.code(), 1405, "{e}");
        assert!(e.to_string().contains("reopen"), "{e}");
        assert!(!a.is_valid());
        let e = a.write(msg(101)).await.unwrap_err();
        assert_eq!(e.code(), 1405, "{e}");
        // Closing a lost writer changes nothing.
        a.close().await.unwrap();

        assert_eq!(b.write(msg(3)).await.unwrap(), id(1, 0));
        assert_eq!(b.write(msg(4)).await.unwrap(), id(1, 1));
        b.close().await.unwrap();

        let read = env.read_segment(h.log_id(), 0).await;
        let payloads: Vec<_> = read.iter().map(|m| m.payload.clone()).collect();
        assert_eq!(payloads, ["m-0000", "m-0001", "m-0002"]);
        let segs = segments(&h).await;
        assert_eq!(segs.len(), 2);
        assert!(completed(&segs[0].1) && completed(&segs[1].1));
        assert_eq!(segs[0].1.last_entry_id, 2);
        assert_eq!(segs[1].1.last_entry_id, 1);
        assert_eq!(env.read_segment(h.log_id(), 1).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn pipelined_writes_of_a_fenced_writer_fail_in_order_after_the_acknowledged_ones() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        let first: Vec<_> = (0..10).map(|i| a.write_async(msg(i))).collect();
        let acked = futures::future::join_all(first).await;
        assert!(acked.iter().all(Result::is_ok));
        let _b = h.open_writer().await.unwrap();
        let later: Vec<_> = (10..20).map(|i| a.write_async(msg(i))).collect();
        for r in futures::future::join_all(later).await {
            assert_eq!(r.unwrap_err().code(), 1405);
        }
        assert_eq!(env.read_segment(h.log_id(), 0).await.len(), 10);
        assert_eq!(segments(&h).await[0].1.last_entry_id, 9);
    })
    .await;
}

#[tokio::test]
async fn an_empty_active_segment_of_a_crashed_writer_is_completed_at_minus_one() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        // A writer that created segment 0 and crashed before writing to it.
        let seg = SegmentMetadata {
            seg_no: 0,
            create_time: START_MILLIS as i64,
            state: SegmentState::Active as i32,
            last_entry_id: -1,
            quorum: Some(embedded_quorum()),
            ..SegmentMetadata::default()
        };
        env.meta.store_segment_metadata("log", &seg).await.unwrap();

        let w = h.open_writer().await.unwrap();
        let segs = segments(&h).await;
        assert!(completed(&segs[0].1));
        assert_eq!(segs[0].1.last_entry_id, -1);
        assert_eq!(w.write(msg(0)).await.unwrap(), id(1, 0));
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_writer_after_a_process_restart_fences_what_the_crashed_one_wrote() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        for i in 0..4 {
            a.write(msg(i)).await.unwrap();
        }
        drop(a); // crash: segment 0 stays Active
        env.logstore.close_all().await;
        assert!(!completed(&segments(&h).await[0].1));

        let restarted = Client::new(
            env.meta.clone(),
            env.restarted_logstore(),
            ClientSettings::default(),
            env.clock_ref.clone(),
        );
        let h2 = restarted.open_log("log").await.unwrap();
        let b = h2.open_writer().await.unwrap();
        let segs = segments(&h2).await;
        assert!(completed(&segs[0].1));
        assert_eq!(segs[0].1.last_entry_id, 3);
        assert_eq!(b.write(msg(4)).await.unwrap(), id(1, 0));
        b.close().await.unwrap();
        assert_eq!(env.read_segment(h.log_id(), 0).await.len(), 4);
    })
    .await;
}

#[tokio::test]
async fn a_segment_created_by_another_writer_invalidates_this_one() {
    both(|env| async move {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let w = h.open_writer().await.unwrap();
        // Another writer created segment 0 meanwhile (3014 for us).
        let seg = SegmentMetadata {
            seg_no: 0,
            state: SegmentState::Active as i32,
            last_entry_id: -1,
            ..SegmentMetadata::default()
        };
        env.meta.store_segment_metadata("log", &seg).await.unwrap();
        let e = w.write(msg(0)).await.unwrap_err();
        assert_eq!(e.code(), 1405, "{e}");
        assert_eq!(w.write(msg(1)).await.unwrap_err().code(), 1405);
    })
    .await;
}

/// memory <- faults.
fn faulty_storage() -> (FaultInjectingStore, ObjectStorage) {
    let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), 7);
    let storage = ObjectStorage::new(
        Arc::new(faults.clone()),
        BackendKind::Memory,
        Capabilities {
            user_metadata: true,
        },
        "memory",
        "",
    )
    .unwrap();
    (faults, storage)
}

#[tokio::test]
async fn a_fence_that_fails_opens_no_writer_and_changes_no_metadata() {
    let (faults, storage) = faulty_storage();
    let env = Env::build(Kind::Memory, Some(storage)).await;
    within(async {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        a.write(msg(0)).await.unwrap();
        faults.add_rule(FaultRule::fail(&[Op::Put]).permanent());
        let e = h.open_writer().await.unwrap_err();
        assert_eq!(e.code(), 1107, "{e}");
        assert!(e.to_string().contains("fence failed"), "{e}");
        let segs = segments(&h).await;
        assert_eq!(segs[0].1.state, SegmentState::Active as i32);
        assert_eq!(segs[0].1.last_entry_id, -1);
    })
    .await;
}

#[tokio::test]
async fn a_storage_failure_invalidates_the_writer_and_keeps_what_was_acknowledged() {
    let (faults, storage) = faulty_storage();
    let env = Env::build(Kind::Memory, Some(storage)).await;
    within(async {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        a.write(msg(0)).await.unwrap();
        a.write(msg(1)).await.unwrap();
        faults.add_rule(FaultRule::fail(&[Op::Put]).permanent());
        let e = a.write(msg(2)).await.unwrap_err();
        assert!(matches!(e, ClientError::StorageFailed { .. }), "{e}");
        assert_eq!(e.code(), 8103, "{e}");
        assert_eq!(a.write(msg(3)).await.unwrap_err().code(), 8103);
        faults.clear();
        let b = h.open_writer().await.unwrap();
        assert_eq!(segments(&h).await[0].1.last_entry_id, 1);
        assert_eq!(b.write(msg(4)).await.unwrap(), id(1, 0));
        assert_eq!(env.read_segment(h.log_id(), 0).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_writer_stopped_by_storage_gives_up_the_segment_it_never_got_an_entry_into() {
    let (faults, storage) = faulty_storage();
    let env = Env::build(Kind::Memory, Some(storage)).await;
    within(async {
        let client = env.client(no_rolling());
        client.create_log("log").await.unwrap();
        let h = client.open_log("log").await.unwrap();
        let a = h.open_writer().await.unwrap();
        assert_eq!(a.write(msg(0)).await.unwrap(), id(0, 0));
        a.close().await.unwrap();

        // Storage refuses every block: each writer creates a segment and fails in it.
        faults.add_rule(FaultRule::fail(&[Op::Put]).permanent());
        for _ in 0..3 {
            let b = h.open_writer().await.unwrap();
            let e = b.write(msg(1)).await.unwrap_err();
            assert_eq!(e.code(), 8103, "{e}");
            assert_eq!(
                segments(&h).await.len(),
                2,
                "segment 1 exists while writing"
            );
            b.close().await.unwrap();
            // Given up on close: no empty segment stays behind.
            let segs = segments(&h).await;
            assert_eq!(segs.len(), 1, "{segs:?}");
            assert!(completed(&segs[0].1));
            assert_eq!(segs[0].1.last_entry_id, 0);
        }

        // Storage works again: the next writer takes the given-up id.
        faults.clear();
        let c = h.open_writer().await.unwrap();
        assert_eq!(c.write(msg(2)).await.unwrap(), id(1, 0));
        c.close().await.unwrap();
        let read: Vec<String> = env
            .read_segment(h.log_id(), 1)
            .await
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(read, ["m-0002"]);
    })
    .await;
}

/// `fencePolicy.conditionWrite: disable`: object storage that cannot fence, so one writer at a
/// time is enforced by the metadata writer lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_condition_writes_the_metadata_lock_keeps_one_writer() {
    let storage = ObjectStorage::in_memory("").unwrap();
    storage.set_condition_write(false);
    let env = Env::build(Kind::Memory, Some(storage)).await;
    let client = env.client(SegmentRollingPolicy::default());
    client.create_log("locked").await.unwrap();
    let log = client.open_log("locked").await.unwrap();

    let a = log.open_writer().await.unwrap();
    assert_eq!(
        a.write(WriteMessage::new(&b"a0"[..])).await.unwrap(),
        LogMessageId::new(0, 0)
    );
    // A second writer is refused while the first holds the lock.
    let err = log.open_writer().await.unwrap_err();
    assert_eq!(err.code(), 1405, "{err}");
    assert!(err.to_string().contains("locked"), "{err}");

    // Closing releases it; the next writer starts the next segment.
    a.close().await.unwrap();
    let b = log.open_writer().await.unwrap();
    assert_eq!(
        b.write(WriteMessage::new(&b"b0"[..])).await.unwrap(),
        LogMessageId::new(1, 0)
    );

    // A writer that dies without closing frees the lock after the session TTL (15 s).
    drop(b);
    assert_eq!(log.open_writer().await.unwrap_err().code(), 1405);
    let mut reopened = None;
    for _ in 0..40 {
        env.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Ok(w) = log.open_writer().await {
            reopened = Some(w);
            break;
        }
    }
    let c = reopened.expect("the dead writer's lock expired");
    // The dead writer's segment was completed on takeover; the new one comes after it.
    assert_eq!(
        c.write(WriteMessage::new(&b"c0"[..])).await.unwrap(),
        LogMessageId::new(2, 0)
    );
    c.close().await.unwrap();
}
