//! `kill -9` a LogStore writing local segments through the journal, and check that no
//! acknowledged entry is lost.
//!
//! The test binary runs itself as the writer: [`child_process`] does nothing unless
//! [`kill9::DIR_ENV`] is set. The child opens a [`LogStore`] on a local root (which takes the root's
//! journal), appends to [`LOGS`] segments at once (segment id = run number, so every run writes
//! fresh segments) with many entries in flight per segment, and prints every entry whose
//! receipt resolved `Ok`. The parent kills it with SIGKILL after a random delay, then opens a
//! LogStore on the same root itself (replaying whatever journal the child left) and checks
//! every segment of the run:
//!
//! * the entries in `data.log` are a gapless prefix `0..n`, each with exactly the bytes the
//!   child wrote for it;
//! * every acknowledged id is in that prefix;
//! * a processor reopened on the segment (recovery mode) reports `n - 1` as its last entry.
//!
//! At the end every segment of every run is read again: later runs and replays must not have
//! changed earlier segments.
//!
//! [`journal_holds_acknowledged_blocks_until_a_clean_close`] checks, in one process, that the
//! local write path uses the journal at all.

#[path = "support/kill9.rs"]
mod kill9;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand::Rng;
use storage::segment::local::{LocalSegmentReader, LocalSegmentWriter};
use wal::clock::SystemClock;
use wal::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};

const RUNS: i64 = 20;
/// Log ids `1..=LOGS`, one segment each per run.
const LOGS: i64 = 4;
/// Entries in flight per segment in the child.
const IN_FLIGHT: usize = 128;
/// Marks the lines of the child's protocol on stdout, among the test harness's own.
const MARK: &str = "@@lskill9 ";
const JOURNAL_DIR: &str = ".journal";

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The bytes of entry `id` of segment `seg` of `log`: 200 bytes to 4 KiB, naming the entry and
/// filled with a pattern seeded by it.
fn payload(log: i64, seg: i64, id: i64) -> Bytes {
    let seed = splitmix((log as u64) << 48 ^ (seg as u64) << 32 ^ id as u64);
    let len = 200 + (seed % 3_900) as usize;
    let mut out = format!("log={log} seg={seg} id={id}|").into_bytes();
    let mut x = seed;
    while out.len() < len {
        x = splitmix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[test]
#[ignore = "the writer process of logstore_kill9_loses_no_acknowledged_entry; idle on its own"]
fn child_process() {
    let Some((dir, run)) = kill9::child_args::<i64>() else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(PathBuf::from(dir), run));
}

fn say(line: &str) {
    kill9::say(MARK, line);
}

async fn child(dir: PathBuf, seg: i64) {
    let ls = Arc::new(
        LogStore::new(
            Backend::Local(dir),
            SyncPolicy::default(),
            FormatVersion::V6,
            SystemClock::shared(),
        )
        .expect("child: open the LogStore"),
    );
    say("ready");
    let mut writers = Vec::new();
    for log in 1..=LOGS {
        let ls = ls.clone();
        writers.push(tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut next = 0i64;
            loop {
                while in_flight.len() < IN_FLIGHT {
                    let receipt = ls
                        .add_entry(log, seg, next, payload(log, seg, next))
                        .await
                        .unwrap_or_else(|e| panic!("child: add_entry {log}/{seg}/{next}: {e}"));
                    let id = next;
                    in_flight.push_back(async move { (id, receipt.await) });
                    next += 1;
                }
                let (id, acked) = in_flight.next().await.unwrap();
                let acked =
                    acked.unwrap_or_else(|e| panic!("child: receipt {log}/{seg}/{id}: {e}"));
                assert_eq!(acked, id, "child: receipt of {id} names {acked}");
                say(&format!("ack {log} {seg} {id}"));
            }
        }));
    }
    // The writers run until the parent kills this process; one ends only by failing.
    let (ended, _, _) = futures::future::select_all(writers).await;
    panic!("child: a writer stopped: {ended:?}");
}

/// What one child said before it died.
#[derive(Debug, Default)]
struct Said {
    ready: bool,
    /// Acknowledged ids by log, in the order acknowledged.
    acks: HashMap<i64, Vec<i64>>,
}

fn parse(run: i64, lines: &[String]) -> Said {
    let mut said = Said::default();
    for line in lines {
        let Some((_, message)) = line.split_once(MARK) else {
            continue;
        };
        let words: Vec<&str> = message.split_whitespace().collect();
        match words.as_slice() {
            ["ready"] => said.ready = true,
            ["ack", log, seg, id] => {
                let seg: i64 = seg.parse().unwrap();
                assert_eq!(
                    seg, run,
                    "run {run}: ack for another run's segment: {line:?}"
                );
                said.acks
                    .entry(log.parse().unwrap())
                    .or_default()
                    .push(id.parse().unwrap());
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
    said
}

/// The journal files under `root` and their sizes, oldest first.
fn journal_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let dir = root.join(JOURNAL_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, u64)> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".wpj")))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    files.sort();
    files
}

/// The `data.log` bytes of the run's segments (empty when missing).
fn data_files(root: &Path, seg: i64) -> Vec<Vec<u8>> {
    (1..=LOGS)
        .map(|log| std::fs::read(segment_dir(root, log, seg).join("data.log")).unwrap_or_default())
        .collect()
}

fn segment_dir(root: &Path, log: i64, seg: i64) -> PathBuf {
    root.join(log.to_string()).join(seg.to_string())
}

/// Every entry of the segment, checked to be the gapless prefix `0..n` with the bytes the child
/// wrote; returns `n`. A segment the child never created holds nothing.
async fn verify_segment(root: &Path, run: i64, log: i64, seg: i64) -> i64 {
    let dir = segment_dir(root, log, seg);
    if !dir.join("data.log").exists() {
        return 0;
    }
    let reader = LocalSegmentReader::open(&dir)
        .await
        .unwrap_or_else(|e| panic!("run {run}: open {}: {e}", dir.display()));
    let mut next = 0i64;
    loop {
        let batch = reader
            .read_from(next, usize::MAX)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "run {run}: reading {} from entry {next} failed: {e}",
                    dir.display()
                )
            });
        if batch.entries.is_empty() {
            break;
        }
        for e in batch.entries {
            assert_eq!(
                e.entry_id,
                next,
                "run {run}: {}: entry {} where {next} was expected (a gap)",
                dir.display(),
                e.entry_id
            );
            let want = payload(log, seg, next);
            assert!(
                e.data == want,
                "run {run}: {}: entry {next} holds {} bytes starting {:?}, expected {} bytes starting {:?}",
                dir.display(),
                e.data.len(),
                String::from_utf8_lossy(&e.data[..e.data.len().min(40)]),
                want.len(),
                String::from_utf8_lossy(&want[..40]),
            );
            next += 1;
        }
    }
    next
}

#[test]
fn logstore_kill9_loses_no_acknowledged_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    let mut total_acks = 0usize;
    let mut runs_with_acks = 0usize;
    let mut runs_with_journal = 0usize;
    let mut runs_changed_by_replay = 0usize;
    let mut total_entries = 0i64;
    // Entries found in each (log, segment) after its run.
    let mut found: HashMap<(i64, i64), i64> = HashMap::new();

    for run in 1..=RUNS {
        let mut child = kill9::Run::start(&root, run, MARK);
        // Every fifth run dies while starting (journal open, first segments) or just after.
        let early = run % 5 == 0;
        if early {
            thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
        } else {
            child.wait_ready();
            thread::sleep(Duration::from_millis(rng.random_range(50..=400)));
        }
        let seen = child.kill();
        let said = parse(run, &seen);
        for (log, ids) in &said.acks {
            assert!((1..=LOGS).contains(log), "run {run}: ack for log {log}");
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(id, i as i64, "run {run}: log {log}: acks out of order");
            }
        }
        let acks: usize = said.acks.values().map(Vec::len).sum();
        total_acks += acks;
        runs_with_acks += usize::from(acks > 0);

        // What the child left in its journal, replayed by the LogStore opened below.
        let left = journal_files(&root);
        if left.iter().any(|(_, len)| *len > 0) {
            runs_with_journal += 1;
        }
        let files_before = data_files(&root, run);
        let ls = LogStore::new(
            Backend::Local(root.clone()),
            SyncPolicy::default(),
            FormatVersion::V6,
            SystemClock::shared(),
        )
        .unwrap_or_else(|e| panic!("run {run}: reopen after kill -9 failed: {e}"));
        // The process died, its page cache did not: replay normally finds every journaled
        // block already in place (counted, not asserted).
        if data_files(&root, run) != files_before {
            runs_changed_by_replay += 1;
        }
        // Replay deletes every file it read and starts numbering again: one empty file is left.
        let after = journal_files(&root);
        assert!(
            after.len() == 1 && after[0].1 == 0,
            "run {run}: journal files after the replay: {after:?} (before: {left:?})"
        );

        rt.block_on(async {
            for log in 1..=LOGS {
                let n = verify_segment(&root, run, log, run).await;
                let acked = said.acks.get(&log).map_or(0, |ids| ids.len() as i64);
                assert!(
                    n >= acked,
                    "run {run}: log {log} segment {run}: {acked} entries acknowledged \
                     (0..={}), only {n} in data.log; journal files the child left: {left:?}",
                    acked - 1
                );
                if n > 0 {
                    // What a restarted writer finds (recovery scans and checks every block).
                    let p = ls
                        .processor(log, run)
                        .await
                        .unwrap_or_else(|e| panic!("run {run}: reopen {log}/{run}: {e}"));
                    assert_eq!(
                        p.last_entry_id(),
                        n - 1,
                        "run {run}: log {log}: the recovered processor disagrees with the reader"
                    );
                }
                found.insert((log, run), n);
                total_entries += n;
            }
            ls.close_all().await;
        });
        drop(ls);
        assert!(
            journal_files(&root).iter().all(|(_, len)| *len == 0),
            "run {run}: journal files left by a clean close: {:?}",
            journal_files(&root)
        );
    }

    // Nothing a later run or replay did changed an earlier segment.
    rt.block_on(async {
        for (&(log, seg), &n) in &found {
            assert_eq!(
                verify_segment(&root, RUNS + 1, log, seg).await,
                n,
                "log {log} segment {seg} changed after its run"
            );
        }
    });
    // A recovered writer truncates a torn tail; no more than what was found is ever there.
    for (&(log, seg), &n) in &found {
        if n == 0 {
            continue;
        }
        let (_, recovery) = rt
            .block_on(LocalSegmentWriter::open_for_recovery(segment_dir(
                &root, log, seg,
            )))
            .unwrap();
        assert_eq!(recovery.last_entry_id, n - 1, "log {log} segment {seg}");
    }

    eprintln!(
        "{RUNS} kills, {total_acks} acknowledged entries ({runs_with_acks} runs with acks), \
         {total_entries} entries found, {runs_with_journal} runs left journal data to replay, \
         {runs_changed_by_replay} replays changed a data.log"
    );
    assert!(
        runs_with_acks >= (RUNS as usize) / 2,
        "only {runs_with_acks} of {RUNS} runs acknowledged anything: the children did not work"
    );
    assert!(total_entries as usize >= total_acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_holds_acknowledged_blocks_until_a_clean_close() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let ls = LogStore::new(
        Backend::Local(root.clone()),
        SyncPolicy::default(),
        FormatVersion::V6,
        SystemClock::shared(),
    )
    .unwrap();
    // A journal file is checkpointed (and deleted) once it is a second old, possibly right
    // after the commit that acknowledged a round; the next round then starts a fresh file.
    let mut next = [0i64; 2];
    let mut journaled = Vec::new();
    for _round in 0..20 {
        let mut receipts = Vec::new();
        for (i, seg) in [1i64, 2].into_iter().enumerate() {
            for _ in 0..50 {
                let id = next[i];
                next[i] += 1;
                receipts.push((
                    id,
                    ls.add_entry(1, seg, id, payload(1, seg, id)).await.unwrap(),
                ));
            }
        }
        for (id, r) in receipts {
            assert_eq!(r.await.unwrap(), id);
        }
        journaled = journal_files(&root)
            .into_iter()
            .filter(|(_, len)| *len > 0)
            .collect();
        if !journaled.is_empty() {
            break;
        }
    }
    assert!(
        !journaled.is_empty(),
        "no journal data under {} after acknowledged appends: {:?}",
        root.join(JOURNAL_DIR).display(),
        journal_files(&root)
    );
    ls.close_all().await;
    drop(ls);
    let left = journal_files(&root);
    assert!(
        left.iter().all(|(_, len)| *len == 0),
        "journal data left after a clean close: {left:?}"
    );
    for (i, seg) in [1i64, 2].into_iter().enumerate() {
        assert_eq!(verify_segment(&root, 0, 1, seg).await, next[i]);
    }
}
