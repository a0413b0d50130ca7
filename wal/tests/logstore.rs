//! The in-process LogStore write path on in-memory object storage and on local files.
//!
//! No external service is needed. Timing that matters runs on a `ManualClock` that the tests
//! advance; real time is only used as a bound on how long a test waits.

// `drive` paces the manual clock in real time, and a check that something does *not*
// happen gives a wrong implementation a moment of real time to act.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use object_store::memory::InMemory;
use storage::object::faults::{FaultInjectingStore, FaultRule, Op};
use storage::object::metrics::{CountingStore, StoreCounters};
use storage::object::{BackendKind, Capabilities, ObjectStorage};
use storage::segment::local::{FENCE_FILE, LocalSegmentReader};
use storage::segment::object::{BatchEnd, ObjectSegmentReader, SegmentObjects};
use wal::clock::{ClockRef, ManualClock, SystemClock};
use wal::logstore::{
    AppendReceipt, Backend, FormatVersion, LogStore, LogStoreError, OnDurable, SyncPolicy, TryAdd,
};

const LOG: i64 = 7;
const SEG: i64 = 3;

fn payload(id: i64) -> Bytes {
    Bytes::from(format!("entry-{id:05}"))
}

fn store(backend: Backend, policy: SyncPolicy, clock: ClockRef) -> LogStore {
    LogStore::new(backend, policy, FormatVersion::V6, clock).unwrap()
}

fn manual() -> (ManualClock, ClockRef) {
    let clock = ManualClock::new(1_000_000);
    (clock.clone(), Arc::new(clock))
}

/// Advances the manual clock in 100 ms steps until `fut` completes.
async fn drive<F: Future>(clock: &ManualClock, fut: F) -> F::Output {
    tokio::pin!(fut);
    for _ in 0..3_000 {
        tokio::select! {
            out = &mut fut => return out,
            () = tokio::time::sleep(Duration::from_millis(2)) => clock.advance(Duration::from_millis(100)),
        }
    }
    panic!("did not complete while the clock advanced 300 s");
}

/// Waits in real time (bounded) without touching the clock.
async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("timed out")
}

async fn all(receipts: Vec<AppendReceipt>) -> Vec<Result<i64, LogStoreError>> {
    futures::future::join_all(receipts).await
}

async fn read_object(storage: &ObjectStorage, seg: i64) -> (Vec<(i64, Bytes)>, BatchEnd, bool) {
    let mut reader = ObjectSegmentReader::new(SegmentObjects::new(storage.clone(), LOG, seg));
    let batch = reader.read(0, usize::MAX).await.unwrap();
    (batch.entries, batch.end, reader.footer().is_some())
}

async fn read_local(root: &Path, seg: i64) -> (Vec<(i64, Bytes)>, bool) {
    let reader = LocalSegmentReader::open(root.join(LOG.to_string()).join(seg.to_string()))
        .await
        .unwrap();
    let batch = reader.read_from(0, usize::MAX).await.unwrap();
    (
        batch
            .entries
            .into_iter()
            .map(|e| (e.entry_id, e.data))
            .collect(),
        batch.finalized,
    )
}

fn dense(n: i64) -> Vec<(i64, Bytes)> {
    (0..n).map(|id| (id, payload(id))).collect()
}

/// memory <- faults, as the store of an ObjectStorage with root `root`.
fn faulty_storage(seed: u64) -> (FaultInjectingStore, ObjectStorage) {
    faulty_storage_on(seed, SystemClock::shared())
}

/// [`faulty_storage`] whose injected latencies pass on `clock`.
fn faulty_storage_on(seed: u64, clock: ClockRef) -> (FaultInjectingStore, ObjectStorage) {
    let faults = FaultInjectingStore::new(Arc::new(InMemory::new()), seed).with_clock(clock);
    let storage = ObjectStorage::new(
        Arc::new(faults.clone()),
        BackendKind::Memory,
        Capabilities {
            user_metadata: true,
        },
        "memory",
        "root",
    )
    .unwrap();
    (faults, storage)
}

async fn out_of_order_round(backend: Backend, clock: ManualClock, clock_ref: ClockRef) -> LogStore {
    let ls = store(backend, SyncPolicy::default(), clock_ref);
    let mut receipts = Vec::new();
    for id in [4, 2, 5, 1, 3] {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    // Ticks pass, but nothing is contiguous from 0: nothing is flushed or acknowledged.
    // Each tick is handled once the processor's ticker sleeps again.
    for _ in 0..5 {
        clock.wait_for_sleepers(1).await;
        clock.advance(Duration::from_millis(200));
    }
    clock.wait_for_sleepers(1).await;
    for r in &mut receipts {
        assert!(
            r.now_or_never().is_none(),
            "acknowledged before entry 0 came"
        );
    }
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.last_entry_id(), -1);
    assert_eq!(p.block_count(), 0);
    receipts.insert(0, ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap());
    let acks = drive(&clock, all(receipts)).await;
    let acks: Vec<i64> = acks.into_iter().map(Result::unwrap).collect();
    assert_eq!(acks, [0, 4, 2, 5, 1, 3]);
    assert_eq!(p.last_entry_id(), 5);
    ls
}

#[tokio::test]
async fn object_out_of_order_entries_are_acknowledged_once_contiguous_and_read_back_dense() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (clock, clock_ref) = manual();
    let ls = out_of_order_round(Backend::Object(storage.clone()), clock, clock_ref).await;
    let (entries, end, _) = read_object(&storage, SEG).await;
    assert_eq!(entries, dense(6));
    assert_eq!(end, BatchEnd::Tail);
    ls.close_all().await;
}

#[tokio::test]
async fn local_out_of_order_entries_are_acknowledged_once_contiguous_and_read_back_dense() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, clock_ref) = manual();
    let ls = out_of_order_round(Backend::local(dir.path(), "files"), clock, clock_ref).await;
    let (entries, finalized) = read_local(&dir.path().join("files"), SEG).await;
    assert_eq!(entries, dense(6));
    assert!(!finalized);
    ls.close_all().await;
}

async fn concurrent_appenders(ls: Arc<LogStore>) {
    const TASKS: i64 = 8;
    const N: i64 = 2_000;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let ls = ls.clone();
        handles.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for id in (t..N).step_by(TASKS as usize) {
                receipts.push((id, ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap()));
            }
            for (id, r) in receipts {
                assert_eq!(r.await.unwrap(), id);
            }
        }));
    }
    for h in handles {
        within(h).await.unwrap();
    }
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.last_entry_id(), N - 1);
    assert!(p.block_count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_many_concurrent_appenders() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let policy = SyncPolicy {
        max_flush_size: 4_000,
        ..SyncPolicy::default()
    };
    let ls = Arc::new(store(
        Backend::Object(storage.clone()),
        policy,
        SystemClock::shared(),
    ));
    concurrent_appenders(ls.clone()).await;
    assert_eq!(read_object(&storage, SEG).await.0, dense(2_000));
    ls.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_many_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let ls = Arc::new(store(
        Backend::local(dir.path(), ""),
        SyncPolicy::default(),
        SystemClock::shared(),
    ));
    concurrent_appenders(ls.clone()).await;
    assert_eq!(read_local(dir.path(), SEG).await.0, dense(2_000));
    ls.close_all().await;
}

#[tokio::test]
async fn a_flush_triggers_on_size_without_the_clock_moving() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_flush_size: 30,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage.clone()), policy, clock_ref);
    let mut receipts = Vec::new();
    for id in 0..9 {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    // 11-byte entries: every third entry reaches 30 bytes.
    let acks = within(all(receipts)).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.block_count(), 3);
    assert_eq!(read_object(&storage, SEG).await.0, dense(9));
}

#[tokio::test]
async fn a_fence_by_another_writer_fails_the_next_flush_with_8104_and_keeps_what_was_acknowledged()
{
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let mut receipts = Vec::new();
    for id in 0..3 {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    assert!(drive(&clock, all(receipts)).await.iter().all(Result::is_ok));

    let outcome = SegmentObjects::new(storage.clone(), LOG, SEG)
        .fence()
        .await
        .unwrap();
    assert_eq!(outcome.last_entry_id, 2);

    let r3 = ls.add_entry(LOG, SEG, 3, payload(3)).await.unwrap();
    let r4 = ls.add_entry(LOG, SEG, 4, payload(4)).await.unwrap();
    let e = drive(&clock, r3).await.unwrap_err();
    assert_eq!(e.code(), 8104, "{e}");
    assert!(e.is_segment_not_writable());
    assert_eq!(r4.await.unwrap_err().code(), 8104);
    let e = ls.add_entry(LOG, SEG, 5, payload(5)).await.unwrap_err();
    assert_eq!(e.code(), 8104);
    // An acknowledged id is still answered as durable.
    assert_eq!(
        ls.add_entry(LOG, SEG, 1, payload(1))
            .await
            .unwrap()
            .await
            .unwrap(),
        1
    );

    let (entries, end, _) = read_object(&storage, SEG).await;
    assert_eq!(entries, dense(3));
    assert_eq!(end, BatchEnd::EndOfSegment);
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.last_entry_id(), 2);
    // Our own fence now reports the other writer's fence.
    assert_eq!(p.fence().await.unwrap(), 2);
}

#[tokio::test]
async fn transient_put_failures_are_retried_and_acknowledged() {
    let (faults, storage) = faulty_storage(1);
    faults.add_rule(FaultRule::fail(&[Op::Put]).times(3));
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let mut receipts = Vec::new();
    for id in 0..5 {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    let acks = drive(&clock, all(receipts)).await;
    assert_eq!(
        acks.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(faults.stats().before, 3);
    assert_eq!(read_object(&storage, SEG).await.0, dense(5));
}

#[tokio::test]
async fn retries_stop_after_max_flush_retries_and_fail_with_8103() {
    let (faults, storage) = faulty_storage(2);
    faults.add_rule(FaultRule::fail(&[Op::Put]));
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let r = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    let e = drive(&clock, r).await.unwrap_err();
    assert_eq!(e.code(), 8103, "{e}");
    // One attempt and five retries.
    assert_eq!(faults.stats().before, 6);
}

#[tokio::test]
async fn a_permanent_failure_fails_the_entries_with_8103_and_later_appends_fast() {
    let (faults, storage) = faulty_storage(3);
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let r0 = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    assert_eq!(drive(&clock, r0).await.unwrap(), 0);

    faults.add_rule(FaultRule::fail(&[Op::Put]).permanent());
    let r1 = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    let r2 = ls.add_entry(LOG, SEG, 2, payload(2)).await.unwrap();
    let r4 = ls.add_entry(LOG, SEG, 4, payload(4)).await.unwrap();
    let e = drive(&clock, r1).await.unwrap_err();
    assert_eq!(e.code(), 8103, "{e}");
    assert!(e.is_segment_not_writable());
    assert!(!e.is_retriable());
    assert_eq!(r2.await.unwrap_err().code(), 8103);
    assert_eq!(
        r4.await.unwrap_err().code(),
        8103,
        "buffered entries fail too"
    );
    assert_eq!(faults.stats().before, 1, "a permanent error is not retried");
    let e = ls.add_entry(LOG, SEG, 3, payload(3)).await.unwrap_err();
    assert_eq!(e.code(), 8103);
    assert_eq!(read_object(&storage, SEG).await.0, dense(1));
}

/// A LogStore on object storage whose PUTs take 300 ms, with `max_bytes` 20: the second
/// 11-byte entry starts a flush, and a third must wait for it.
fn slow_puts_small_buffer(seed: u64) -> (Arc<LogStore>, ObjectStorage) {
    let (faults, storage) = faulty_storage(seed);
    faults.add_rule(FaultRule::delay(&[Op::Put], Duration::from_millis(300)));
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_bytes: 20,
        ..SyncPolicy::default()
    };
    let ls = Arc::new(store(Backend::Object(storage.clone()), policy, clock_ref));
    (ls, storage)
}

#[tokio::test]
async fn appends_wait_while_buffered_and_in_flight_bytes_reach_max_bytes() {
    let (ls, storage) = slow_puts_small_buffer(4);
    let r0 = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    // 22 bytes ≥ max_bytes: a flush starts and takes 300 ms.
    let r1 = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    let third = tokio::spawn({
        let ls = ls.clone();
        async move { ls.add_entry(LOG, SEG, 2, payload(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!third.is_finished(), "the third append must wait for space");
    let r2 = within(third).await.unwrap().unwrap();
    assert!(r0.now_or_never().is_some(), "space came from the flush");
    assert_eq!(within(r1).await.unwrap(), 1);
    // The last entry alone is below max_bytes: a close flushes it.
    ls.close_all().await;
    assert_eq!(r2.await.unwrap(), 2);
    assert_eq!(read_object(&storage, SEG).await.0, dense(3));
}

/// The callback form: `try_add_entry_with` refuses without making the callback where
/// `add_entry` would wait for space, and every callback made is called once, in id order.
#[tokio::test]
async fn callbacks_are_made_only_for_taken_entries_and_called_once_in_order() {
    let (ls, storage) = slow_puts_small_buffer(5);
    let p = ls.processor(LOG, SEG).await.unwrap();
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    let on = |id: i64| -> OnDurable {
        let told = told.clone();
        Box::new(move |r| told.lock().unwrap().push((id, r.map_err(|e| e.code()))))
    };
    let mut made = 0;
    for id in 0..2 {
        let r = p.try_add_entry_with(id, &payload(id), || {
            made += 1;
            on(id)
        });
        assert!(matches!(r, Ok(TryAdd::Taken)), "{r:?}");
    }
    // 22 bytes ≥ max_bytes: a flush is under way and the next entry would wait.
    let r = p.try_add_entry_with(2, &payload(2), || {
        made += 1;
        on(2)
    });
    assert!(matches!(r, Ok(TryAdd::WouldWait)), "{r:?}");
    assert_eq!(made, 2, "no callback is made for an entry not taken");
    // The waiting form takes it once the flush has freed space.
    within(p.add_entry_with(2, payload(2), || on(2)))
        .await
        .unwrap();
    // A negative id is refused without a callback.
    let e = p
        .try_add_entry_with(-1, &payload(0), || on(-1))
        .unwrap_err();
    assert_eq!(e.code(), 2215);
    ls.close_all().await;
    assert_eq!(
        *told.lock().unwrap(),
        [(0, Ok(0)), (1, Ok(1)), (2, Ok(2))],
        "each taken entry told once, in order"
    );
    assert_eq!(read_object(&storage, SEG).await.0, dense(3));
}

#[tokio::test]
async fn ids_beyond_the_window_are_rejected_as_buffer_full() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_entries: 4,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage), policy, clock_ref);
    let e = ls.add_entry(LOG, SEG, 4, payload(4)).await.unwrap_err();
    assert_eq!(e.code(), 2200);
    assert!(e.is_retriable());
    assert_eq!(
        ls.add_entry(LOG, SEG, -1, payload(0))
            .await
            .unwrap_err()
            .code(),
        2215
    );
    let r = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    drive(&clock, r).await.unwrap();
    // The window moved on.
    let r = ls.add_entry(LOG, SEG, 4, payload(4)).await.unwrap();
    assert!(r.now_or_never().is_none());
}

#[tokio::test]
async fn object_complete_writes_a_footer_and_is_idempotent() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let mut receipts = Vec::new();
    for id in [0, 1, 2, 3, 5] {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    let r5 = receipts.pop().unwrap();
    // No clock movement: completion itself flushes the contiguous prefix.
    assert_eq!(within(ls.complete_segment(LOG, SEG, 3)).await.unwrap(), 3);
    assert!(all(receipts).await.into_iter().all(|r| r.is_ok()));
    assert_eq!(
        r5.await.unwrap_err().code(),
        2216,
        "a gap can never be filled now"
    );
    assert_eq!(ls.complete_segment(LOG, SEG, 3).await.unwrap(), 3);
    let e = ls.add_entry(LOG, SEG, 4, payload(4)).await.unwrap_err();
    assert_eq!(e.code(), 2216);
    assert!(e.is_segment_not_writable());
    let (entries, end, footer) = read_object(&storage, SEG).await;
    assert_eq!(entries, dense(4));
    assert_eq!(end, BatchEnd::EndOfSegment);
    assert!(footer);
    drop(clock);
}

#[tokio::test]
async fn local_complete_writes_a_footer_and_fence_stops_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::local(dir.path(), ""),
        SyncPolicy::default(),
        clock_ref,
    );
    for seg in [SEG, SEG + 1] {
        let mut receipts = Vec::new();
        for id in 0..4 {
            receipts.push(ls.add_entry(LOG, seg, id, payload(id)).await.unwrap());
        }
        assert!(drive(&clock, all(receipts)).await.iter().all(Result::is_ok));
    }
    assert_eq!(ls.complete_segment(LOG, SEG, 3).await.unwrap(), 3);
    let (entries, finalized) = read_local(dir.path(), SEG).await;
    assert_eq!(entries, dense(4));
    assert!(finalized);

    let seg = SEG + 1;
    assert_eq!(ls.fence_segment(LOG, seg).await.unwrap(), 3);
    assert!(
        dir.path()
            .join(format!("{LOG}/{seg}/{FENCE_FILE}"))
            .exists()
    );
    let e = ls.add_entry(LOG, seg, 4, payload(4)).await.unwrap_err();
    assert_eq!(e.code(), 8104);
    assert_eq!(ls.complete_segment(LOG, seg, 3).await.unwrap(), 3);
    assert_eq!(read_local(dir.path(), seg).await, (dense(4), true));
}

#[tokio::test]
async fn object_fence_then_complete_as_a_takeover_does() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let r0 = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    let r1 = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    let r3 = ls.add_entry(LOG, SEG, 3, payload(3)).await.unwrap();
    // The contiguous prefix is flushed before the fence; the rest fails with 8104.
    assert_eq!(ls.fence_segment(LOG, SEG).await.unwrap(), 1);
    assert_eq!(r0.await.unwrap(), 0);
    assert_eq!(r1.await.unwrap(), 1);
    assert_eq!(r3.await.unwrap_err().code(), 8104);
    assert_eq!(
        ls.add_entry(LOG, SEG, 2, payload(2))
            .await
            .unwrap_err()
            .code(),
        8104
    );
    assert_eq!(
        ls.fence_segment(LOG, SEG).await.unwrap(),
        1,
        "fencing is idempotent"
    );
    assert_eq!(ls.complete_segment(LOG, SEG, 1).await.unwrap(), 1);
    let (entries, _, footer) = read_object(&storage, SEG).await;
    assert_eq!(entries, dense(2));
    assert!(footer);
    // An empty segment fences at -1.
    assert_eq!(ls.fence_segment(LOG, SEG + 1).await.unwrap(), -1);
    drop(clock);
}

async fn restart_round(backend: Backend) {
    let (clock, clock_ref) = manual();
    let first = store(backend.clone(), SyncPolicy::default(), clock_ref.clone());
    let mut receipts = Vec::new();
    for id in 0..6 {
        receipts.push(first.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    assert!(drive(&clock, all(receipts)).await.iter().all(Result::is_ok));
    first.close_all().await;
    // A closed processor is forgotten; the next use reopens it, now on existing data.
    let second = store(backend, SyncPolicy::default(), clock_ref);
    let p = second.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.last_entry_id(), 5);
    assert!(p.block_count() >= 1);
    let e = second.add_entry(LOG, SEG, 6, payload(6)).await.unwrap_err();
    assert_eq!(e.code(), 2218, "{e}");
    assert!(!e.is_segment_not_writable());
    // Re-appending a stored id is answered as durable.
    assert_eq!(
        second
            .add_entry(LOG, SEG, 3, payload(3))
            .await
            .unwrap()
            .await
            .unwrap(),
        3
    );
    assert_eq!(second.fence_segment(LOG, SEG).await.unwrap(), 5);
    assert_eq!(second.complete_segment(LOG, SEG, 5).await.unwrap(), 5);
    second.close_all().await;
}

#[tokio::test]
async fn object_a_restarted_processor_on_existing_data_is_in_recovery_mode() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    restart_round(Backend::Object(storage.clone())).await;
    let (entries, _, footer) = read_object(&storage, SEG).await;
    assert_eq!(entries, dense(6));
    assert!(footer);
}

#[tokio::test]
async fn local_a_restarted_processor_on_existing_data_is_in_recovery_mode() {
    let dir = tempfile::tempdir().unwrap();
    restart_round(Backend::local(dir.path(), "wp")).await;
    assert_eq!(
        read_local(&dir.path().join("wp"), SEG).await,
        (dense(6), true)
    );
}

#[tokio::test]
async fn close_flushes_the_contiguous_prefix_and_fails_the_rest() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (_clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    let r0 = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    let r1 = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    let r3 = ls.add_entry(LOG, SEG, 3, payload(3)).await.unwrap();
    let p = ls.processor(LOG, SEG).await.unwrap();
    ls.close_processor(LOG, SEG).await;
    assert_eq!(r0.await.unwrap(), 0);
    assert_eq!(r1.await.unwrap(), 1);
    assert_eq!(r3.await.unwrap_err().code(), 2217);
    assert_eq!(p.add_entry(2, payload(2)).await.unwrap_err().code(), 2217);
    assert_eq!(read_object(&storage, SEG).await.0, dense(2));
}

#[tokio::test]
async fn format_version_5_is_written_when_asked() {
    let storage = ObjectStorage::in_memory("root").unwrap();
    let (_clock, clock_ref) = manual();
    let ls = LogStore::new(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        FormatVersion::V5,
        clock_ref,
    )
    .unwrap();
    let r = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    ls.complete_segment(LOG, SEG, 0).await.unwrap();
    r.await.unwrap();
    let footer = SegmentObjects::new(storage, LOG, SEG)
        .read_footer()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(footer.footer.version, 5);
    assert!(
        LogStore::new(
            Backend::local("/tmp", ""),
            SyncPolicy {
                max_flush_threads: 0,
                ..SyncPolicy::default()
            },
            FormatVersion::V6,
            SystemClock::shared(),
        )
        .is_err()
    );
}

/// Waits until block `n` is stored and checks that block 0 (delayed) is not, and that no
/// receipt resolved: nothing is acknowledged before block 0.
async fn assert_block_lands_before_block_0(
    storage: &ObjectStorage,
    objects: &SegmentObjects,
    n: i32,
    receipts: &mut [AppendReceipt],
) {
    within(async {
        while storage.stat(&objects.block_key(n)).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(storage.stat(&objects.block_key(0)).await.unwrap().is_none());
    for r in receipts {
        assert!(r.now_or_never().is_none(), "acknowledged before block 0");
    }
}

/// Entries 0..6 become contiguous at once and go out as six one-entry blocks in parallel.
async fn six_blocks_in_one_flush(ls: &LogStore) -> Vec<AppendReceipt> {
    let mut receipts = Vec::new();
    for id in (1..6).rev() {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    receipts.push(ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap());
    receipts.reverse();
    receipts
}

#[tokio::test]
async fn parallel_blocks_are_acknowledged_in_block_order() {
    let (faults, storage) = faulty_storage(5);
    faults
        .add_rule(FaultRule::delay(&[Op::Put], Duration::from_millis(300)).under("root/7/3/0.blk"));
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_flush_size: 11,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage.clone()), policy, clock_ref);
    let mut receipts = six_blocks_in_one_flush(&ls).await;
    let objects = SegmentObjects::new(storage.clone(), LOG, SEG);
    // Blocks 1..5 land while block 0 is still uploading; none of them is acknowledged.
    assert_block_lands_before_block_0(&storage, &objects, 5, &mut receipts).await;
    let acks = within(all(receipts)).await;
    assert_eq!(
        acks.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.block_count(), 6);
    assert_eq!(read_object(&storage, SEG).await.0, dense(6));
}

/// Appends `ids` one by one (each fills a block at `max_flush_size` 11, so each starts a
/// flush of its own) and returns their receipts.
async fn one_flush_each(ls: &LogStore, ids: std::ops::Range<i64>) -> Vec<AppendReceipt> {
    let mut receipts = Vec::new();
    for id in ids {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
        tokio::task::yield_now().await;
    }
    receipts
}

#[tokio::test]
async fn consecutive_flushes_overlap_and_are_acknowledged_in_order() {
    let (faults, storage) = faulty_storage(8);
    faults.add_rule(
        FaultRule::delay(&[Op::Put], Duration::from_millis(1500)).under("root/7/3/0.blk"),
    );
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_flush_size: 11,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage.clone()), policy, clock_ref);
    let mut receipts = one_flush_each(&ls, 0..3).await;
    let objects = SegmentObjects::new(storage.clone(), LOG, SEG);
    // The later flushes upload while the first is still in flight, and wait for it.
    assert_block_lands_before_block_0(&storage, &objects, 2, &mut receipts).await;
    let acks = within(all(receipts)).await;
    assert_eq!(
        acks.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(read_object(&storage, SEG).await.0, dense(3));
}

#[tokio::test]
async fn flushes_beyond_max_flush_threads_wait_for_an_upload_to_finish() {
    let (faults, storage) = faulty_storage(9);
    faults
        .add_rule(FaultRule::delay(&[Op::Put], Duration::from_millis(300)).under("root/7/3/0.blk"));
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_flush_size: 11,
        max_flush_threads: 1,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage.clone()), policy, clock_ref);
    let receipts = one_flush_each(&ls, 0..4).await;
    let objects = SegmentObjects::new(storage.clone(), LOG, SEG);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(storage.stat(&objects.block_key(0)).await.unwrap().is_none());
    assert!(
        storage.stat(&objects.block_key(1)).await.unwrap().is_none(),
        "one upload at a time"
    );
    // The deferred flush starts when block 0 lands, without the clock moving.
    let acks = within(all(receipts)).await;
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    assert_eq!(read_object(&storage, SEG).await.0, dense(4));
}

#[tokio::test]
async fn the_first_failed_block_fails_every_later_block_even_if_stored() {
    let (faults, storage) = faulty_storage(6);
    faults.add_rule(
        FaultRule::fail(&[Op::Put])
            .permanent()
            .under("root/7/3/0.blk"),
    );
    let (_clock, clock_ref) = manual();
    let policy = SyncPolicy {
        max_flush_size: 11,
        ..SyncPolicy::default()
    };
    let ls = store(Backend::Object(storage.clone()), policy, clock_ref);
    let receipts = six_blocks_in_one_flush(&ls).await;
    for r in within(all(receipts)).await {
        assert_eq!(r.unwrap_err().code(), 8103);
    }
    let p = ls.processor(LOG, SEG).await.unwrap();
    assert_eq!(p.last_entry_id(), -1);
    assert_eq!(p.block_count(), 0);
    let (entries, end, _) = read_object(&storage, SEG).await;
    assert!(entries.is_empty(), "readers stop at the missing block 0");
    assert_eq!(end, BatchEnd::Tail);
}

#[tokio::test]
async fn a_fenced_put_is_not_retried() {
    let counters = Arc::new(StoreCounters::default());
    let storage = ObjectStorage::new(
        Arc::new(CountingStore::new(
            Arc::new(InMemory::new()),
            counters.clone(),
        )),
        BackendKind::Memory,
        Capabilities {
            user_metadata: true,
        },
        "memory",
        "root",
    )
    .unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        clock_ref,
    );
    ls.processor(LOG, SEG).await.unwrap();
    SegmentObjects::new(storage.clone(), LOG, SEG)
        .fence()
        .await
        .unwrap();
    let before = counters.snapshot(Op::Put).requests;
    let r = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    assert_eq!(drive(&clock, r).await.unwrap_err().code(), 8104);
    assert_eq!(counters.snapshot(Op::Put).requests - before, 1);
}

#[tokio::test]
async fn local_a_fence_file_from_another_process_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, clock_ref) = manual();
    let ls = store(
        Backend::local(dir.path(), ""),
        SyncPolicy::default(),
        clock_ref,
    );
    let r0 = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    assert_eq!(drive(&clock, r0).await.unwrap(), 0);
    std::fs::write(
        dir.path().join(format!("{LOG}/{SEG}/{FENCE_FILE}")),
        b"fenced",
    )
    .unwrap();
    let r1 = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    assert_eq!(drive(&clock, r1).await.unwrap_err().code(), 8104);
    assert_eq!(
        ls.add_entry(LOG, SEG, 2, payload(2))
            .await
            .unwrap_err()
            .code(),
        8104
    );
    assert_eq!(read_local(dir.path(), SEG).await.0, dense(1));
}

/// Opening a segment's processor reads storage; that must not hold up appends to segments
/// that are already open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_one_segment_does_not_stall_appends_to_another() {
    let faults_clock = ManualClock::new(0);
    let (faults, storage) = faulty_storage_on(9, faults_clock.shared());
    let policy = SyncPolicy {
        max_flush_size: 1,
        ..SyncPolicy::default()
    };
    let ls = Arc::new(store(
        Backend::Object(storage),
        policy,
        SystemClock::shared(),
    ));
    ls.processor(LOG, SEG).await.unwrap();
    // Every read of segment 4 hangs until the faults' clock moves, which it never does.
    faults.add_rule(
        FaultRule::delay(&[Op::Get, Op::Head, Op::List], Duration::from_secs(3_600))
            .under(format!("root/{LOG}/4/")),
    );
    let slow = {
        let ls = ls.clone();
        tokio::spawn(async move { ls.processor(LOG, 4).await.map(|_| ()) })
    };
    // The slow open reached storage once a read of it hangs.
    faults_clock.wait_for_sleepers(1).await;
    let acked = within(async { ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap().await }).await;
    assert_eq!(acked.unwrap(), 0);
    assert!(!slow.is_finished(), "segment 4 is still opening");
    slow.abort();
}

/// A manual clock that counts the sleeps started on it.
#[derive(Debug)]
struct CountingClock {
    inner: ManualClock,
    sleeps: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl wal::clock::Clock for CountingClock {
    fn now_millis(&self) -> u64 {
        self.inner.now_millis()
    }

    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }

    async fn sleep(&self, duration: Duration) {
        self.sleeps
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sleep(duration).await;
    }
}

/// An idle segment (nothing buffered or in flight) stops its flush ticker, and the next
/// entry starts it again on the same grid of ticks: an entry arriving half an interval
/// before a tick is flushed at that tick, as with a ticker that never stopped.
#[tokio::test]
async fn an_idle_processor_stops_its_ticker_until_an_entry_arrives() {
    use std::sync::atomic::Ordering;
    let (_, storage) = faulty_storage(7);
    let start = 1_000_000;
    let clock = ManualClock::new(start);
    let counting = Arc::new(CountingClock {
        inner: clock.clone(),
        sleeps: Default::default(),
    });
    let ls = store(
        Backend::Object(storage.clone()),
        SyncPolicy::default(),
        counting.clone(),
    );
    let interval = SyncPolicy::default().max_interval;
    let period = u64::try_from(interval.as_millis()).unwrap();
    // The processor's ticks fall on `start + k * period`.
    ls.processor(LOG, SEG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = ls.add_entry(LOG, SEG, 0, payload(0)).await.unwrap();
    assert_eq!(drive(&clock, r).await.unwrap(), 0);
    // Idle for 50 intervals: the ticker sleeps at most once more (the one it was in).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = counting.sleeps.load(Ordering::SeqCst);
    for _ in 0..50 {
        clock.advance(interval);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let idle_sleeps = counting.sleeps.load(Ordering::SeqCst) - before;
    assert!(
        idle_sleeps <= 1,
        "an idle processor started {idle_sleeps} ticker sleeps"
    );
    // Half an interval before the next tick, an entry arrives and starts the ticker; the
    // clock then reaches that tick and the entry is flushed (no size trigger, no wake-up).
    let into = (wal::clock::Clock::now_millis(&clock) - start) % period;
    clock.advance(Duration::from_millis((period + period / 2 - into) % period));
    let r = ls.add_entry(LOG, SEG, 1, payload(1)).await.unwrap();
    // The ticker started again once it sleeps towards its next tick.
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_millis(period / 2));
    assert_eq!(within(r).await.unwrap(), 1);
    assert_eq!(read_object(&storage, SEG).await.0, dense(2));
}
