//! The embedded-mode client read path: readers, start positions, tail waiting, truncation.
//!
//! Every test runs on in-memory object storage and on local files, with the embedded
//! metadata store and a `ManualClock`. The LogStore flushes every append at once (a
//! `max_flush_size` of one byte), so durability never waits for the clock; the readers'
//! poll interval only passes when a test advances the clock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::meta::{SegmentMetadata, SegmentState};
use wal::client::{Client, ClientSettings, LogHandle, LogReader, LogWriter, embedded_quorum};
use wal::clock::{ClockRef, ManualClock};
use wal::config::SegmentRollingPolicy;
use wal::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};
use wal::message::{LogMessage, LogMessageId, WriteMessage};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;
use wal::meta::{KvMetadata, MetadataProvider};

const START_MILLIS: u64 = 1_700_000_000_000;
const POLL: Duration = Duration::from_millis(200);

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
            Kind::Memory => Backend::Object(storage::object::ObjectStorage::in_memory("").unwrap()),
            Kind::Local => {
                let dir = tempfile::tempdir().unwrap();
                let b = Backend::local(dir.path(), "");
                dirs.push(dir);
                b
            }
        };
        let logstore = Env::logstore_on(&backend, &clock_ref);
        Env {
            clock,
            clock_ref,
            meta: Arc::new(meta),
            backend,
            logstore,
            _dirs: dirs,
        }
    }

    fn logstore_on(backend: &Backend, clock: &ClockRef) -> Arc<LogStore> {
        Arc::new(
            LogStore::new(backend.clone(), policy(), FormatVersion::V6, clock.clone()).unwrap(),
        )
    }

    fn client_on(&self, logstore: Arc<LogStore>, rolling: SegmentRollingPolicy) -> Client {
        let settings = ClientSettings {
            rolling,
            ..ClientSettings::default()
        };
        Client::new(
            self.meta.clone(),
            logstore,
            settings,
            self.clock_ref.clone(),
        )
    }

    fn client(&self, rolling: SegmentRollingPolicy) -> Client {
        self.client_on(self.logstore.clone(), rolling)
    }

    /// A client of "another process": its own LogStore on the same storage and metadata.
    fn other_process_client(&self, rolling: SegmentRollingPolicy) -> Client {
        self.client_on(Env::logstore_on(&self.backend, &self.clock_ref), rolling)
    }

    async fn log(&self, client: &Client, name: &str) -> LogHandle {
        client.create_log(name).await.unwrap();
        client.open_log(name).await.unwrap()
    }
}

fn no_rolling() -> SegmentRollingPolicy {
    SegmentRollingPolicy::default()
}

/// Rolls after about three messages.
fn small_segments() -> SegmentRollingPolicy {
    SegmentRollingPolicy {
        max_size: 60,
        ..SegmentRollingPolicy::default()
    }
}

fn msg(i: usize) -> WriteMessage {
    WriteMessage::new(format!("m-{i:04}")).with_property("i", i.to_string())
}

fn id(seg: i64, entry: i64) -> LogMessageId {
    LogMessageId::new(seg, entry)
}

fn assert_msg(m: &LogMessage, i: usize) {
    assert_eq!(m.payload, Bytes::from(format!("m-{i:04}")), "{m:?}");
    assert_eq!(m.properties.get("i"), Some(&i.to_string()), "{m:?}");
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

/// Writes messages `range` and returns their ids.
async fn write_range(w: &LogWriter, range: std::ops::Range<usize>) -> Vec<LogMessageId> {
    let mut ids = Vec::new();
    for i in range {
        ids.push(w.write(msg(i)).await.unwrap());
    }
    ids
}

async fn read_n(r: &mut LogReader, n: usize) -> Vec<LogMessage> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(within(r.read_next()).await.unwrap());
    }
    out
}

/// Spawns one `read_next` on `r`; the task gives the reader back with the result.
fn spawn_read(
    mut r: LogReader,
) -> tokio::task::JoinHandle<(LogReader, wal::client::Result<LogMessage>)> {
    tokio::spawn(async move {
        let m = r.read_next().await;
        (r, m)
    })
}

/// Gives a task that should stay parked a moment of real time in which a wrong
/// implementation would finish it (the manual clock does not move). Only for checks that
/// something does *not* happen; what must happen is waited for as an event.
#[allow(clippy::disallowed_methods)]
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Spawns `read_next` on `r` and waits until the reader is parked: sleeping on the clock
/// (which stands still) for one poll interval.
async fn spawn_parked_read(
    env_clock: &ManualClock,
    r: LogReader,
) -> tokio::task::JoinHandle<(LogReader, wal::client::Result<LogMessage>)> {
    let task = spawn_read(r);
    env_clock.wait_for_sleeper_of(POLL).await;
    task
}

#[tokio::test]
async fn reads_everything_from_earliest_across_segments() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "read-all").await;
        let w = h.open_writer().await.unwrap();
        let ids = write_range(&w, 0..20).await;
        w.close().await.unwrap();
        let segs = h.segments().await.unwrap();
        assert!(segs.len() >= 4, "{segs:?}");

        let mut r = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let got = read_n(&mut r, 20).await;
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.id, ids[i]);
            assert_msg(m, i);
        }
        // Nothing more: the next read waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), r.read_next())
                .await
                .is_err()
        );
        r.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn opens_mid_segment_and_at_latest() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "positions").await;
        let w = h.open_writer().await.unwrap();
        let ids = write_range(&w, 0..10).await;

        // Middle of a segment (not its first entry, not in the first segment).
        let at = ids
            .iter()
            .position(|i| i.segment_id > 0 && i.entry_id > 0)
            .unwrap();
        let mut r = h.open_reader(ids[at], None).await.unwrap();
        let got = read_n(&mut r, 10 - at).await;
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m.id, ids[at + k]);
            assert_msg(m, at + k);
        }
        r.close().await.unwrap();

        // Latest on an active segment, then new writes only.
        let mut latest = h.open_reader(LogMessageId::LATEST, None).await.unwrap();
        let last = ids[9];
        assert_eq!(latest.position(), id(last.segment_id, last.entry_id + 1));
        let new_ids = write_range(&w, 10..15).await;
        let got = read_n(&mut latest, 5).await;
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m.id, new_ids[k]);
            assert_msg(m, 10 + k);
        }
        latest.close().await.unwrap();

        // Latest after the last segment was completed: the next segment.
        w.close().await.unwrap();
        let max = *h.segments().await.unwrap().keys().next_back().unwrap();
        let mut latest = h.open_reader(LogMessageId::LATEST, None).await.unwrap();
        assert_eq!(latest.position(), id(max + 1, 0));
        let w2 = h.open_writer().await.unwrap();
        let more = write_range(&w2, 15..17).await;
        assert_eq!(more[0], id(max + 1, 0));
        let got = read_n(&mut latest, 2).await;
        assert_eq!(got[0].id, more[0]);
        assert_msg(&got[1], 16);
        latest.close().await.unwrap();
        w2.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tail_reader_is_woken_by_a_write_of_this_process_without_polling() {
    both(|env| async move {
        let client = env.client(no_rolling());
        let h = env.log(&client, "tail").await;
        let w = h.open_writer().await.unwrap();
        write_range(&w, 0..1).await;
        let r = h.open_reader(LogMessageId::LATEST, None).await.unwrap();
        assert_eq!(r.position(), id(0, 1));
        let task = spawn_parked_read(&env.clock, r).await;
        settle().await;
        assert!(!task.is_finished(), "nothing was written yet");
        let before = env.clock_ref.now_millis();
        let written = write_range(&w, 1..2).await;
        // The clock never moves: the reader was woken by the LogStore, not by its poll.
        let (r, m) = within(task).await.unwrap();
        let m = m.unwrap();
        assert_eq!(m.id, written[0]);
        assert_msg(&m, 1);
        assert_eq!(env.clock_ref.now_millis(), before);
        r.close().await.unwrap();
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reader_of_another_process_sees_new_entries_after_the_poll_interval() {
    both(|env| async move {
        let writer_client = env.other_process_client(no_rolling());
        let h_w = env.log(&writer_client, "cross").await;
        let w = h_w.open_writer().await.unwrap();
        write_range(&w, 0..3).await;

        let reader_client = env.client(no_rolling());
        let h_r = reader_client.open_log("cross").await.unwrap();
        let r = h_r.open_reader(LogMessageId::LATEST, None).await.unwrap();
        assert_eq!(r.position(), id(0, 3));
        let early = read_n(&mut h_r.open_reader(id(0, 1), None).await.unwrap(), 2).await;
        assert_msg(&early[1], 2);

        let task = spawn_parked_read(&env.clock, r).await;
        let written = write_range(&w, 3..4).await;
        settle().await;
        assert!(!task.is_finished(), "no poll interval passed yet");
        // Advance one poll interval at a time until the reader looks again: after each
        // advance the reader either finishes or parks for its next poll.
        let mut polls = 0;
        while !task.is_finished() {
            env.clock.advance(POLL);
            polls += 1;
            assert!(polls < 50, "reader never saw the entry");
            let next_poll = wal::clock::Clock::now_millis(&env.clock) + POLL.as_millis() as u64;
            wal::clock::testing::eventually("the reader to poll", || {
                task.is_finished() || env.clock.sleepers_until(next_poll) > 0
            })
            .await;
        }
        let (r, m) = task.await.unwrap();
        let m = m.unwrap();
        assert_eq!(m.id, written[0]);
        assert_msg(&m, 3);
        r.close().await.unwrap();
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn truncation_moves_earliest_and_refuses_truncated_positions() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "trunc").await;
        let w = h.open_writer().await.unwrap();
        let ids = write_range(&w, 0..12).await;
        assert_eq!(h.truncation_point().await.unwrap(), None);

        let point = ids[5];
        h.truncate(point).await.unwrap();
        assert_eq!(h.truncation_point().await.unwrap(), Some(point));

        // Earliest starts right after the point.
        let mut r = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let got = read_n(&mut r, 6).await;
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m.id, ids[6 + k]);
            assert_msg(m, 6 + k);
        }
        r.close().await.unwrap();

        // An explicit position at or before the point is refused, naming the point.
        // ((0, 0) itself is EARLIEST, which skips forward.)
        for before in [ids[1], ids[3], point] {
            let e = h.open_reader(before, None).await.unwrap_err();
            assert_eq!(e.code(), 1504, "{e}");
            assert!(!e.is_retriable());
            assert!(e.to_string().contains(&point.to_string()), "{e}");
        }
        // Right after it is fine.
        let mut r = h.open_reader(ids[6], None).await.unwrap();
        assert_eq!(r.read_next().await.unwrap().id, ids[6]);
        r.close().await.unwrap();
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn truncate_validation() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "trunc-rules").await;
        let w = h.open_writer().await.unwrap();
        write_range(&w, 0..10).await;
        let segs = h.segments().await.unwrap();
        let (&done_id, done) = segs
            .iter()
            .find(|(_, s)| s.state == SegmentState::Completed as i32)
            .unwrap();
        let (&active_id, _) = segs.iter().next_back().unwrap();

        // Beyond a completed segment's last entry: refused.
        let e = h
            .truncate(id(done_id, done.last_entry_id + 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 1105, "{e}");
        assert_eq!(h.truncation_point().await.unwrap(), None);
        let e = h.truncate(id(0, -1)).await.unwrap_err();
        assert_eq!(e.code(), 1105, "{e}");

        // A missing segment: nothing happens.
        h.truncate(id(active_id + 10, 0)).await.unwrap();
        assert_eq!(h.truncation_point().await.unwrap(), None);

        h.truncate(id(1, 1)).await.unwrap();
        // Backwards (and equal) moves are ignored.
        h.truncate(id(0, 2)).await.unwrap();
        h.truncate(id(1, 0)).await.unwrap();
        h.truncate(id(1, 1)).await.unwrap();
        assert_eq!(h.truncation_point().await.unwrap(), Some(id(1, 1)));
        // Forward into the active segment is allowed.
        h.truncate(id(active_id, 0)).await.unwrap();
        assert_eq!(h.truncation_point().await.unwrap(), Some(id(active_id, 0)));
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reader_crosses_a_takeover_without_gaps() {
    both(|env| async move {
        let client_a = env.client(no_rolling());
        let h_a = env.log(&client_a, "takeover").await;
        let w_a = h_a.open_writer().await.unwrap();
        let mut ids = write_range(&w_a, 0..5).await;

        // A second writer (another client on the same LogStore) fences A's segment.
        let client_b = env.client(no_rolling());
        let h_b = client_b.open_log("takeover").await.unwrap();
        let w_b = h_b.open_writer().await.unwrap();
        assert!(w_a.write(msg(99)).await.is_err());
        ids.extend(write_range(&w_b, 5..10).await);
        assert_eq!(ids[5], id(1, 0));

        let mut r = h_a.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let got = read_n(&mut r, 10).await;
        for (k, m) in got.iter().enumerate() {
            assert_eq!(m.id, ids[k]);
            assert_msg(m, k);
        }
        r.close().await.unwrap();
        w_b.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reader_never_serves_beyond_a_completed_segment_last_entry() {
    both(|env| async move {
        let client = env.client(no_rolling());
        let h = env.log(&client, "capped").await;
        let w = h.open_writer().await.unwrap();
        write_range(&w, 0..5).await;
        w.close().await.unwrap();
        // Pretend the fenced last id was 2 (metadata is the authority for finished segments).
        let mut seg = env.meta.get_segment_metadata("capped", 0).await.unwrap();
        assert_eq!(seg.value.last_entry_id, 4);
        seg.value.last_entry_id = 2;
        env.meta
            .update_segment_metadata("capped", &seg.value, seg.revision)
            .await
            .unwrap();
        let w = h.open_writer().await.unwrap();
        let next = write_range(&w, 5..6).await;
        assert_eq!(next[0], id(1, 0));

        let mut r = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let got: Vec<_> = read_n(&mut r, 4).await.into_iter().map(|m| m.id).collect();
        assert_eq!(got, vec![id(0, 0), id(0, 1), id(0, 2), id(1, 0)]);
        r.close().await.unwrap();
        w.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn malformed_entry_is_an_error_naming_it() {
    both(|env| async move {
        let client = env.client(no_rolling());
        let h = env.log(&client, "garbage").await;
        let seg = SegmentMetadata {
            seg_no: 0,
            state: SegmentState::Active as i32,
            last_entry_id: -1,
            quorum: Some(embedded_quorum()),
            ..SegmentMetadata::default()
        };
        env.meta
            .store_segment_metadata("garbage", &seg)
            .await
            .unwrap();
        let receipt = env
            .logstore
            .add_entry(h.log_id(), 0, 0, Bytes::from_static(&[0xff, 0xff, 0xff]))
            .await
            .unwrap();
        within(receipt).await.unwrap();
        let mut r = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let e = within(r.read_next()).await.unwrap_err();
        assert_eq!(e.code(), 8100, "{e}");
        assert!(e.to_string().contains("0:0"), "{e}");
        r.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reader_record_lives_while_reading_and_goes_on_close() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "records").await;
        let w = h.open_writer().await.unwrap();
        let ids = write_range(&w, 0..8).await;
        w.close().await.unwrap();

        let mut r = h
            .open_reader(LogMessageId::EARLIEST, Some("milvus"))
            .await
            .unwrap();
        assert!(r.name().starts_with("records-r-milvus-"), "{}", r.name());
        let infos = env.meta.get_reader_temp_infos(h.log_id()).await.unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].reader_name, r.name());
        assert_eq!((infos[0].open_segment_id, infos[0].open_entry_id), (0, 0));

        // Reaching a higher segment records the position.
        let got = read_n(&mut r, 8).await;
        let last = got.last().unwrap().id;
        assert_eq!(last, ids[7]);
        assert!(last.segment_id > 0);
        let infos = env.meta.get_reader_temp_infos(h.log_id()).await.unwrap();
        assert_eq!(infos[0].recent_read_segment_id, last.segment_id);

        // A plain reader name, next to it.
        let r2 = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        assert!(r2.name().starts_with("records-r-"));
        assert_ne!(r2.name(), r.name());
        assert_eq!(
            env.meta
                .get_reader_temp_infos(h.log_id())
                .await
                .unwrap()
                .len(),
            2
        );
        r.close().await.unwrap();
        r2.close().await.unwrap();
        assert!(
            env.meta
                .get_reader_temp_infos(h.log_id())
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

/// Damages the block holding message `i` of segment 0 (one entry per block here): a byte of
/// its payload in `data.log`, or of its `N.blk` object.
async fn damage_message(env: &Env, log_id: i64, i: usize) {
    let needle = format!("m-{i:04}").into_bytes();
    match &env.backend {
        Backend::Local(dir) => {
            let path = dir
                .join(log_id.to_string())
                .join("0")
                .join(storage::segment::local::DATA_FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .expect("payload in data.log");
            bytes[at + 2] ^= 0x20;
            std::fs::write(&path, bytes).unwrap();
        }
        Backend::Object(storage) => {
            let objects = storage::segment::object::SegmentObjects::new(storage.clone(), log_id, 0);
            let key = objects.block_key(i as i32);
            let mut bytes = storage.get(&key).await.unwrap().to_vec();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .expect("payload in the block");
            bytes[at + 2] ^= 0x20;
            storage.put(&key, Bytes::from(bytes)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_damaged_block_fails_the_reads_that_reach_it_until_skipped() {
    both(|env| async move {
        let client = env.client(no_rolling());
        let log = env.log(&client, "damaged").await;
        let w = log.open_writer().await.unwrap();
        write_range(&w, 0..6).await;
        // A writer that did not close: its Active segment is fenced and completed by the
        // next one, which must keep the blocks after the damage.
        drop(w);
        damage_message(&env, log.log_id(), 3).await;
        let w = log.open_writer().await.unwrap();
        assert_eq!(w.write(msg(6)).await.unwrap(), id(1, 0));
        w.close().await.unwrap();
        let segs = log.segments().await.unwrap();
        assert_eq!(
            segs[&0].last_entry_id, 5,
            "the blocks after the damage are kept"
        );

        let mut r = log.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        for (i, m) in read_n(&mut r, 3).await.iter().enumerate() {
            assert_msg(m, i);
        }
        // Every read at the damaged block fails the same way, at once.
        for _ in 0..2 {
            let e = within(r.read_next()).await.unwrap_err();
            assert_eq!(e.code(), 8007, "{e}");
            let text = e.to_string();
            assert!(text.contains("segment 0"), "{text}");
            assert!(text.contains("block 3"), "{text}");
            assert!(text.contains("entries 3..=3 (1) cannot be read"), "{text}");
            assert_eq!(r.position(), id(0, 3));
        }
        let skipped = r
            .skip_damaged()
            .await
            .unwrap()
            .expect("a damaged block here");
        assert_eq!((skipped.first, skipped.last), (id(0, 3), id(0, 3)));
        assert_eq!(skipped.block.block_number, 3);
        let rest = read_n(&mut r, 3).await;
        assert_msg(&rest[0], 4);
        assert_msg(&rest[1], 5);
        assert_msg(&rest[2], 6);
        assert_eq!(rest[2].id, id(1, 0));
        // Nothing damaged where the reader stands now.
        assert!(r.skip_damaged().await.unwrap().is_none());
        r.close().await.unwrap();

        // A reader opened after the damaged block never meets it.
        let mut r = log.open_reader(id(0, 4), None).await.unwrap();
        assert_msg(&read_n(&mut r, 1).await[0], 4);
        r.close().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_read_next_dropped_before_it_finishes_loses_no_message() {
    both(|env| async move {
        let client = env.client(small_segments());
        let h = env.log(&client, "cancel-safe").await;
        let w = h.open_writer().await.unwrap();
        let ids = write_range(&w, 0..20).await;
        w.close().await.unwrap();

        // Each read gets a time budget and is dropped when it runs out, as a caller that
        // gives up on a read when something else happens first (a select) does; the budget
        // doubles after every drop, so that each read finishes eventually. Reads are dropped
        // at every await on the way: metadata, storage, and recording the read position when
        // a segment is crossed.
        let mut r = h.open_reader(LogMessageId::EARLIEST, None).await.unwrap();
        let mut got = Vec::new();
        let first_budget = Duration::from_micros(5);
        let (mut budget, mut dropped) = (first_budget, 0);
        while got.len() < ids.len() {
            match tokio::time::timeout(budget, r.read_next()).await {
                Ok(m) => {
                    got.push(m.unwrap());
                    budget = first_budget;
                }
                Err(_) => {
                    dropped += 1;
                    budget *= 2;
                    assert!(budget < Duration::from_secs(10), "a read takes 10 s");
                }
            }
        }
        eprintln!("{dropped} reads dropped before they finished");
        assert!(dropped > 0);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.id, ids[i]);
            assert_msg(m, i);
        }
        r.close().await.unwrap();
    })
    .await;
}
