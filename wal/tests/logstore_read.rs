//! The LogStore read path and segment maintenance on in-memory object storage and on local
//! files, with a `ManualClock` driving flushes.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use storage::object::ObjectStorage;
use storage::segment::local::{DATA_FILE, FENCE_FILE};
use storage::segment::object::SegmentObjects;
use wal::clock::{ClockRef, ManualClock};
use wal::logstore::{
    Backend, CleanScope, FormatVersion, LogStore, LogStoreError, ReadEnd, SyncPolicy, WaitOutcome,
};

const LOG: i64 = 7;
const SEG: i64 = 3;

fn payload(id: i64) -> Bytes {
    Bytes::from(format!("entry-{id:05}"))
}

fn dense(range: std::ops::Range<i64>) -> Vec<(i64, Bytes)> {
    range.map(|id| (id, payload(id))).collect()
}

/// Blocks of three 11-byte entries on object storage.
fn policy() -> SyncPolicy {
    SyncPolicy {
        max_flush_size: 30,
        ..SyncPolicy::default()
    }
}

fn manual() -> (ManualClock, ClockRef) {
    let clock = ManualClock::new(1_000_000);
    (clock.clone(), Arc::new(clock))
}

fn store(backend: &Backend, clock: &ClockRef) -> LogStore {
    LogStore::new(backend.clone(), policy(), FormatVersion::V6, clock.clone()).unwrap()
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

/// Appends `ids` and waits until all are durable.
async fn write(ls: &LogStore, clock: &ManualClock, ids: std::ops::Range<i64>) {
    let mut receipts = Vec::new();
    for id in ids {
        receipts.push(ls.add_entry(LOG, SEG, id, payload(id)).await.unwrap());
    }
    for r in drive(clock, futures::future::join_all(receipts)).await {
        r.unwrap();
    }
}

/// Reads from `from` in batches until the tail or the end, checking every batch's bounds.
async fn read_all(
    ls: &LogStore,
    from: i64,
    max_entries: usize,
    max_bytes: usize,
) -> (Vec<(i64, Bytes)>, ReadEnd) {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let r = ls
            .read_batch(LOG, SEG, next, max_entries, max_bytes)
            .await
            .unwrap();
        assert!(r.entries.len() <= max_entries.max(1), "{r:?}");
        if r.end == ReadEnd::More {
            assert!(!r.entries.is_empty());
        }
        if let Some((last, _)) = r.entries.last() {
            next = last + 1;
        }
        out.extend(r.entries);
        if r.end != ReadEnd::More {
            return (out, r.end);
        }
    }
}

fn object_backend() -> (ObjectStorage, Backend) {
    let storage = ObjectStorage::in_memory("root").unwrap();
    (storage.clone(), Backend::Object(storage))
}

fn local_backend(dir: &Path) -> (PathBuf, Backend) {
    let seg_dir = dir.join(LOG.to_string()).join(SEG.to_string());
    (seg_dir, Backend::local(dir, ""))
}

async fn reads_are_bounded_and_complete(backend: Backend) {
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..20).await;

    let r = ls.read_batch(LOG, SEG, 0, 1000, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(0..20));
    assert_eq!(r.end, ReadEnd::Tail);
    assert_eq!(r.wire_code(), None);

    // From the middle of a block.
    let r = ls.read_batch(LOG, SEG, 4, 1000, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(4..20));

    // Small limits: bounded batches, never empty while entries remain.
    for (max_entries, max_bytes) in [(3, usize::MAX), (1, usize::MAX), (1000, 1), (0, 0)] {
        let (entries, end) = read_all(&ls, 0, max_entries, max_bytes).await;
        assert_eq!(entries, dense(0..20), "{max_entries} {max_bytes}");
        // A batch cut by the budget right at the tail says `More`; the next one `NotYet`.
        assert!(matches!(end, ReadEnd::Tail | ReadEnd::NotYet), "{end:?}");
    }
    let r = ls.read_batch(LOG, SEG, 5, 2, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(5..7));
    assert_eq!(r.end, ReadEnd::More);

    // Past the tail: not yet (8102), then the entry appears.
    let r = ls.read_batch(LOG, SEG, 20, 10, usize::MAX).await.unwrap();
    assert_eq!(r.end, ReadEnd::NotYet);
    assert!(r.entries.is_empty());
    assert_eq!(r.wire_code(), Some(8102));
    write(&ls, &clock, 20..21).await;
    let r = ls.read_batch(LOG, SEG, 20, 10, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(20..21));

    // A negative start is refused.
    let e = ls.read_batch(LOG, SEG, -1, 10, 10).await.unwrap_err();
    assert_eq!(e.code(), 2215);
    ls.close_all().await;
}

#[tokio::test]
async fn object_reads_are_bounded_and_complete() {
    reads_are_bounded_and_complete(object_backend().1).await;
}

#[tokio::test]
async fn local_reads_are_bounded_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    reads_are_bounded_and_complete(local_backend(dir.path()).1).await;
}

async fn wait_resolves_when_durable(backend: Backend) {
    // Local segments flush as soon as the flusher is idle (group commit), so an entry may be
    // durable before the clock ticks; object segments wait for the ticker.
    let flushes_on_tick = matches!(backend, Backend::Object(_));
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    // No processor yet: nothing to wait on.
    assert_eq!(ls.wait_for_entry(LOG, SEG, 0).await, WaitOutcome::NoWriter);
    write(&ls, &clock, 0..3).await;
    assert_eq!(
        ls.wait_for_entry(LOG, SEG, 2).await,
        WaitOutcome::Durable(2)
    );

    let wait = ls.wait_for_entry(LOG, SEG, 3);
    tokio::pin!(wait);
    assert!(futures::poll!(&mut wait).is_pending());
    let receipt = ls.add_entry(LOG, SEG, 3, payload(3)).await.unwrap();
    if flushes_on_tick {
        // Buffered but not durable: still waiting, and readers do not see it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(futures::poll!(&mut wait).is_pending());
        let r = ls.read_batch(LOG, SEG, 3, 10, usize::MAX).await.unwrap();
        assert_eq!(r.end, ReadEnd::NotYet);
    }
    // The clock ticks; the flush makes it durable and the waiter resolves without further
    // time passing.
    assert_eq!(drive(&clock, receipt).await.unwrap(), 3);
    assert_eq!(within(wait).await, WaitOutcome::Durable(3));
    let r = ls.read_batch(LOG, SEG, 3, 10, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(3..4));

    // Completion wakes a waiter for an entry that will never come.
    let wait = ls.wait_for_entry(LOG, SEG, 100);
    tokio::pin!(wait);
    assert!(futures::poll!(&mut wait).is_pending());
    assert_eq!(
        drive(&clock, ls.complete_segment(LOG, SEG, 3))
            .await
            .unwrap(),
        3
    );
    assert_eq!(within(wait).await, WaitOutcome::Sealed);
    let r = ls.read_batch(LOG, SEG, 4, 10, usize::MAX).await.unwrap();
    assert_eq!(r.end, ReadEnd::Eof);
    assert_eq!(r.wire_code(), Some(2310));

    // A closed processor is no writer.
    ls.close_processor(LOG, SEG).await;
    assert_eq!(
        ls.wait_for_entry(LOG, SEG, 100).await,
        WaitOutcome::NoWriter
    );
}

#[tokio::test]
async fn object_wait_for_entry_resolves_when_durable() {
    wait_resolves_when_durable(object_backend().1).await;
}

#[tokio::test]
async fn local_wait_for_entry_resolves_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    wait_resolves_when_durable(local_backend(dir.path()).1).await;
}

async fn eof_after_complete_and_at_fence(backend: Backend) {
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..10).await;
    assert_eq!(drive(&clock, ls.fence_segment(LOG, SEG)).await.unwrap(), 9);
    let (entries, end) = read_all(&ls, 0, 4, usize::MAX).await;
    assert_eq!(entries, dense(0..10));
    assert_eq!(end, ReadEnd::Eof);
    let r = ls.read_batch(LOG, SEG, 10, 4, usize::MAX).await.unwrap();
    assert_eq!((r.entries.len(), r.end), (0, ReadEnd::Eof));

    // Another LogStore sees the fence too, then the footer after completion.
    let other = store(&backend, &clock_ref);
    let r = other
        .read_batch(LOG, SEG, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries, r.end), (dense(0..10), ReadEnd::Eof));
    assert_eq!(
        drive(&clock, ls.complete_segment(LOG, SEG, 9))
            .await
            .unwrap(),
        9
    );
    let r = other
        .read_batch(LOG, SEG, 3, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries, r.end), (dense(3..10), ReadEnd::Eof));
    ls.close_all().await;
}

#[tokio::test]
async fn object_eof_after_complete_and_at_fence() {
    eof_after_complete_and_at_fence(object_backend().1).await;
}

#[tokio::test]
async fn local_eof_after_complete_and_at_fence() {
    let dir = tempfile::tempdir().unwrap();
    eof_after_complete_and_at_fence(local_backend(dir.path()).1).await;
}

#[tokio::test]
async fn object_fence_placed_by_someone_else_is_an_eof() {
    let (storage, backend) = object_backend();
    let (clock, clock_ref) = manual();
    let writer = store(&backend, &clock_ref);
    write(&writer, &clock, 0..5).await;
    writer.close_all().await;
    let reader = store(&backend, &clock_ref);
    let r = reader
        .read_batch(LOG, SEG, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries, r.end), (dense(0..5), ReadEnd::Tail));
    SegmentObjects::new(storage, LOG, SEG)
        .fence()
        .await
        .unwrap();
    // The cached reader probes on and meets the fence object.
    let r = reader
        .read_batch(LOG, SEG, 5, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries.len(), r.end), (0, ReadEnd::Eof));
}

#[tokio::test]
async fn local_fence_file_written_by_someone_else_is_an_eof() {
    let dir = tempfile::tempdir().unwrap();
    let (seg_dir, backend) = local_backend(dir.path());
    let (clock, clock_ref) = manual();
    let writer = store(&backend, &clock_ref);
    write(&writer, &clock, 0..5).await;
    writer.close_all().await;
    let reader = store(&backend, &clock_ref);
    let r = reader
        .read_batch(LOG, SEG, 5, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(r.end, ReadEnd::NotYet);
    std::fs::write(seg_dir.join(FENCE_FILE), "fenced").unwrap();
    let r = reader
        .read_batch(LOG, SEG, 5, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(r.end, ReadEnd::Eof);
    let r = reader
        .read_batch(LOG, SEG, 2, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries, r.end), (dense(2..5), ReadEnd::Eof));
}

#[tokio::test]
async fn object_read_after_compaction_returns_the_same_entries() {
    let (storage, backend) = object_backend();
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..20).await;

    // Not completed: refused.
    let e = ls.compact_segment(LOG, SEG, 1_000).await.unwrap_err();
    assert!(
        matches!(e, LogStoreError::SegmentStateInvalid { .. }),
        "{e}"
    );
    assert_eq!(e.code(), 1202);

    drive(&clock, ls.complete_segment(LOG, SEG, 19))
        .await
        .unwrap();
    ls.close_processor(LOG, SEG).await;
    assert_eq!(ls.block_count(LOG, SEG).await.unwrap(), 7);
    // A cached reader that knows the original footer.
    let r = ls.read_batch(LOG, SEG, 0, 2, usize::MAX).await.unwrap();
    assert_eq!(r.entries, dense(0..2));

    let c = ls.compact_segment(LOG, SEG, 1_000).await.unwrap();
    assert!(c.compacted);
    assert_eq!((c.blocks, c.last_entry_id), (1, 19));
    assert!(c.size > 0);
    assert!(storage.get(&format!("{LOG}/{SEG}/0.blk")).await.is_err());
    // Idempotent.
    assert_eq!(ls.compact_segment(LOG, SEG, 1_000).await.unwrap(), c);

    let (entries, end) = read_all(&ls, 2, 3, usize::MAX).await;
    assert_eq!((entries, end), (dense(2..20), ReadEnd::Eof));
    let fresh = store(&backend, &clock_ref);
    let (entries, end) = read_all(&fresh, 0, 1000, 1).await;
    assert_eq!((entries, end), (dense(0..20), ReadEnd::Eof));
    assert_eq!(fresh.block_count(LOG, SEG).await.unwrap(), 1);
    assert_eq!(fresh.segment_last_entry_id(LOG, SEG).await.unwrap(), 19);
}

#[tokio::test]
async fn local_compaction_is_a_no_op_reporting_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (seg_dir, backend) = local_backend(dir.path());
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    let e = ls.compact_segment(LOG, SEG, 1_000).await.unwrap_err();
    assert_eq!(e.code(), 8105);
    write(&ls, &clock, 0..6).await;
    drive(&clock, ls.complete_segment(LOG, SEG, 5))
        .await
        .unwrap();
    let c = ls.compact_segment(LOG, SEG, 1_000).await.unwrap();
    let size = std::fs::metadata(seg_dir.join(DATA_FILE)).unwrap().len();
    assert_eq!((c.size, c.last_entry_id, c.compacted), (size, 5, false));
    let r = ls.read_batch(LOG, SEG, 0, 100, usize::MAX).await.unwrap();
    assert_eq!((r.entries, r.end), (dense(0..6), ReadEnd::Eof));
}

async fn clean_removes_the_data(backend: Backend, gone: impl AsyncFnOnce() -> bool) {
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..6).await;
    drive(&clock, ls.complete_segment(LOG, SEG, 5))
        .await
        .unwrap();
    assert_eq!(
        ls.read_batch(LOG, SEG, 0, 100, usize::MAX)
            .await
            .unwrap()
            .entries
            .len(),
        6
    );

    ls.clean_segment(LOG, SEG, CleanScope::All).await.unwrap();
    assert!(gone().await);
    assert!(ls.existing_processor(LOG, SEG).await.is_none());
    let e = ls
        .read_batch(LOG, SEG, 0, 100, usize::MAX)
        .await
        .unwrap_err();
    assert!(matches!(e, LogStoreError::SegmentNotFound { .. }), "{e}");
    assert_eq!(e.code(), 8105);
    assert!(e.is_retriable());
    // Idempotent.
    ls.clean_segment(LOG, SEG, CleanScope::All).await.unwrap();
    // Without this LogStore's memory, a cleaned segment is simply empty.
    let fresh = store(&backend, &clock_ref);
    let r = fresh
        .read_batch(LOG, SEG, 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!((r.entries.len(), r.end), (0, ReadEnd::NotYet));
    assert_eq!(fresh.segment_last_entry_id(LOG, SEG).await.unwrap(), -1);
    assert_eq!(fresh.block_count(LOG, SEG).await.unwrap(), 0);
}

#[tokio::test]
async fn object_clean_segment_removes_the_data() {
    let (storage, backend) = object_backend();
    clean_removes_the_data(backend, async || {
        storage
            .list(&format!("{LOG}/{SEG}"))
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn local_clean_segment_removes_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (seg_dir, backend) = local_backend(dir.path());
    clean_removes_the_data(backend, async || !seg_dir.exists()).await;
}

#[tokio::test]
async fn object_clean_scopes_follow_the_go_flags() {
    let (storage, backend) = object_backend();
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..6).await;
    drive(&clock, ls.complete_segment(LOG, SEG, 5))
        .await
        .unwrap();
    ls.compact_segment(LOG, SEG, 1_000).await.unwrap();
    assert_eq!(CleanScope::from_flag(2), Some(CleanScope::Merged));
    assert_eq!(CleanScope::from_flag(3), None);
    ls.clean_segment(LOG, SEG, CleanScope::Merged)
        .await
        .unwrap();
    assert!(storage.get(&format!("{LOG}/{SEG}/m_0.blk")).await.is_err());
    assert!(
        storage
            .get(&format!("{LOG}/{SEG}/footer.blk"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn object_corrupt_block_is_reported_with_its_location() {
    let (storage, backend) = object_backend();
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..9).await;
    ls.close_all().await;
    let key = format!("{LOG}/{SEG}/1.blk");
    let mut bytes = storage.get(&key).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    storage.put(&key, Bytes::from(bytes)).await.unwrap();

    let reader = store(&backend, &clock_ref);
    let e = reader
        .read_batch(LOG, SEG, 3, 100, usize::MAX)
        .await
        .unwrap_err();
    assert_eq!(e.code(), 8007, "{e}");
    assert!(!e.is_retriable());
    let LogStoreError::Corrupt { location, .. } = &e else {
        panic!("{e}");
    };
    assert!(location.contains("log 7 segment 3"), "{location}");
    assert!(location.contains("1.blk"), "{location}");
    // Entries before the damage still read.
    let r = reader.read_batch(LOG, SEG, 0, 3, 1).await.unwrap();
    assert_eq!(r.entries, dense(0..3));
}

#[tokio::test]
async fn local_corrupt_block_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let (seg_dir, backend) = local_backend(dir.path());
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..3).await;
    write(&ls, &clock, 3..6).await;
    drive(&clock, ls.complete_segment(LOG, SEG, 5))
        .await
        .unwrap();
    ls.close_all().await;
    let path = seg_dir.join(DATA_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip the last payload byte of entry 2, in block 0.
    let at = bytes.windows(11).position(|w| w == b"entry-00002").unwrap() + 10;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let reader = store(&backend, &clock_ref);
    let e = reader
        .read_batch(LOG, SEG, 0, 100, usize::MAX)
        .await
        .unwrap_err();
    assert_eq!(e.code(), 8007, "{e}");
    assert!(e.to_string().contains(DATA_FILE), "{e}");
}

async fn a_restarted_store_reads_what_the_previous_one_wrote(backend: Backend, complete: bool) {
    let (clock, clock_ref) = manual();
    let first = store(&backend, &clock_ref);
    write(&first, &clock, 0..12).await;
    if complete {
        drive(&clock, first.complete_segment(LOG, SEG, 11))
            .await
            .unwrap();
    }
    let blocks = first.block_count(LOG, SEG).await.unwrap();
    first.close_all().await;
    drop(first);

    let second = store(&backend, &clock_ref);
    let (entries, end) = read_all(&second, 0, 5, usize::MAX).await;
    assert_eq!(entries, dense(0..12));
    assert_eq!(
        end,
        if complete {
            ReadEnd::Eof
        } else {
            ReadEnd::Tail
        }
    );
    // Reading opened no processor.
    assert!(second.existing_processor(LOG, SEG).await.is_none());
    assert_eq!(second.segment_last_entry_id(LOG, SEG).await.unwrap(), 11);
    assert_eq!(second.block_count(LOG, SEG).await.unwrap(), blocks);
    assert_eq!(
        second.wait_for_entry(LOG, SEG, 12).await,
        WaitOutcome::NoWriter
    );
}

#[tokio::test]
async fn object_restart_reads_previous_data() {
    let (_, backend) = object_backend();
    a_restarted_store_reads_what_the_previous_one_wrote(backend, false).await;
    let (_, backend) = object_backend();
    a_restarted_store_reads_what_the_previous_one_wrote(backend, true).await;
}

#[tokio::test]
async fn local_restart_reads_previous_data() {
    let dir = tempfile::tempdir().unwrap();
    a_restarted_store_reads_what_the_previous_one_wrote(local_backend(dir.path()).1, false).await;
    let dir = tempfile::tempdir().unwrap();
    a_restarted_store_reads_what_the_previous_one_wrote(local_backend(dir.path()).1, true).await;
}

#[tokio::test]
async fn local_inspection_does_not_touch_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (seg_dir, backend) = local_backend(dir.path());
    let (clock, clock_ref) = manual();
    let ls = store(&backend, &clock_ref);
    write(&ls, &clock, 0..4).await;
    ls.close_all().await;
    let path = seg_dir.join(DATA_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x42; 20]);
    std::fs::write(&path, &bytes).unwrap();

    let fresh = store(&backend, &clock_ref);
    assert_eq!(fresh.segment_last_entry_id(LOG, SEG).await.unwrap(), 3);
    assert_eq!(fresh.block_count(LOG, SEG).await.unwrap(), 1);
    assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len());
}
