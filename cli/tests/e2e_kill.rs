//! No acknowledged entry is ever lost: `woodpecker log write` on local disk with embedded
//! metadata is killed with SIGKILL at random moments while it is being fed, over and over;
//! after every kill the log must hold every acknowledged entry exactly once, in order, and
//! nothing that was never sent.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");
const LOG: &str = "k";
const ROUNDS: usize = 20;
/// A hang guard, not a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn run(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn woodpecker");
    wait_output(child, args)
}

/// `wait_with_output` with a hang guard (the child is killed when it expires).
fn wait_output(child: Child, what: &[&str]) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let guard = thread::spawn(move || {
        if rx.recv_timeout(HANG_GUARD).is_err() {
            // Still running: end it so that the test fails instead of hanging.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait for woodpecker");
    let _ = tx.send(());
    guard.join().unwrap();
    assert!(
        started.elapsed() < HANG_GUARD,
        "woodpecker {what:?} did not finish within {HANG_GUARD:?}"
    );
    out
}

#[track_caller]
fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

fn parse_id(s: &str) -> (i64, i64) {
    let (seg, entry) = s
        .split_once(':')
        .unwrap_or_else(|| panic!("not an id: {s:?}"));
    (seg.parse().unwrap(), entry.parse().unwrap())
}

fn parse_line(s: &str) -> (usize, u64) {
    let rest = s
        .strip_prefix("round-")
        .unwrap_or_else(|| panic!("a line that was never sent: {s:?}"));
    let (round, n) = rest
        .split_once("-line-")
        .unwrap_or_else(|| panic!("a line that was never sent: {s:?}"));
    (
        round
            .parse()
            .unwrap_or_else(|_| panic!("a line that was never sent: {s:?}")),
        n.parse()
            .unwrap_or_else(|_| panic!("a line that was never sent: {s:?}")),
    )
}

/// What one round of `log write` did before it was killed.
struct Round {
    /// Lines written completely into the child's stdin (`round-R-line-0` ..).
    sent: u64,
    /// The ids printed, in order: the k-th acknowledges `round-R-line-k`.
    acked: Vec<(i64, i64)>,
    /// How the writer ended.
    stderr: String,
}

fn write_and_kill(dir: &Path, round: usize, delay: Duration) -> Round {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["log", "write", LOG])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn woodpecker log write");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();

    // Feeds lines until the pipe breaks (the child died); returns how many went in whole.
    let feeder = thread::spawn(move || {
        let mut sent = 0u64;
        loop {
            let line = format!("round-{round}-line-{sent}\n");
            if stdin.write_all(line.as_bytes()).is_err() {
                return sent;
            }
            sent += 1;
            if sent.is_multiple_of(64) {
                // Let acknowledgements interleave with input instead of one flood.
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let reader = thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            acked.push(parse_id(line.trim()));
        }
        acked
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });

    thread::sleep(delay);
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    let sent = feeder.join().unwrap();
    let acked = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    Round {
        sent,
        acked,
        stderr,
    }
}

/// One row of `log inspect`: (segment, state, last entry or None when empty, check).
fn inspect_rows(text: &str) -> Vec<(i64, String, Option<i64>, String)> {
    let mut rows = Vec::new();
    for line in text.lines().skip(2) {
        if line.contains("segment(s)") {
            break;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(
            cols.len() >= 6,
            "unexpected inspect row {line:?} in\n{text}"
        );
        let last = if cols[2] == "empty" {
            None
        } else {
            let range = cols[2]
                .strip_prefix("0..")
                .unwrap_or_else(|| panic!("entries not dense from 0: {line:?}\n{text}"));
            Some(range.parse().unwrap())
        };
        rows.push((
            cols[0].parse().unwrap(),
            cols[1].to_string(),
            last,
            cols[5..].join(" "),
        ));
    }
    rows
}

#[test]
fn no_acknowledged_entry_is_lost_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(run(d, &["log", "create", LOG]), "create");

    let mut rng = rand::rng();
    let mut rounds: Vec<Round> = Vec::new();
    // Per round, how many of its lines the previous check found (they must stay).
    let mut seen_before: Vec<u64> = Vec::new();

    for r in 0..ROUNDS {
        let delay = Duration::from_millis(rng.random_range(30..=400));
        let round = write_and_kill(d, r, delay);
        assert!(
            round.acked.len() as u64 <= round.sent,
            "round {r}: {} ids printed for {} lines sent",
            round.acked.len(),
            round.sent
        );
        assert!(
            !round.stderr.contains("error"),
            "round {r}: the writer reported an error before the kill:\n{}",
            round.stderr
        );
        rounds.push(round);

        // Acknowledged ids: strictly increasing and dense within each segment.
        let all_acked: Vec<(usize, (i64, i64))> = rounds
            .iter()
            .enumerate()
            .flat_map(|(i, rd)| rd.acked.iter().map(move |&id| (i, id)))
            .collect();
        for pair in all_acked.windows(2) {
            let ((ra, a), (rb, b)) = (pair[0], pair[1]);
            assert!(
                a < b,
                "ids not increasing: {a:?} (round {ra}) then {b:?} (round {rb})"
            );
            if a.0 == b.0 {
                assert_eq!(
                    a.1 + 1,
                    b.1,
                    "a gap between acknowledged ids {a:?} and {b:?}"
                );
            } else {
                assert_eq!(b.1, 0, "segment {} does not start at entry 0", b.0);
            }
        }
        if let Some(&(_, first)) = all_acked.first() {
            // Every segment's acknowledged ids begin at 0.
            assert_eq!(first.1, 0, "the first acknowledged id is {first:?}");
        }

        // The log as `tail` reads it now (the last segment is still Active).
        let tail = ok(run(d, &["log", "tail", LOG]), "tail");
        let mut per_round = vec![0u64; r + 1];
        let mut seen = HashSet::new();
        let mut last: Option<(usize, u64)> = None;
        for line in tail.lines() {
            assert!(seen.insert(line), "check {r}: {line:?} is in the log twice");
            let (lr, n) = parse_line(line);
            assert!(
                lr <= r && n < rounds[lr].sent,
                "check {r}: {line:?} was never sent"
            );
            assert!(
                last < Some((lr, n)),
                "check {r}: {line:?} comes after {last:?}: out of order"
            );
            // A round's lines in the log are a prefix of what it sent: no holes.
            assert_eq!(
                n, per_round[lr],
                "check {r}: {line:?} present but round-{lr}-line-{} is missing",
                per_round[lr]
            );
            per_round[lr] += 1;
            last = Some((lr, n));
        }
        for (i, rd) in rounds.iter().enumerate() {
            assert!(
                per_round[i] >= rd.acked.len() as u64,
                "check {r}: round {i} had {} lines acknowledged but the log holds only {}:\n{}",
                rd.acked.len(),
                per_round[i],
                rd.stderr
            );
            if let Some(&before) = seen_before.get(i) {
                assert_eq!(
                    per_round[i], before,
                    "check {r}: round {i} had {before} lines in the log at the previous \
                     check and now {}",
                    per_round[i]
                );
            }
        }
        seen_before = per_round.clone();

        // Segments: dense from 0, Completed except the last, nothing damaged, and together
        // exactly as many entries as tail printed.
        let text = ok(run(d, &["log", "inspect", LOG]), "inspect");
        assert!(text.contains(" 0 damaged"), "{text}");
        let rows = inspect_rows(&text);
        assert!(!rows.is_empty(), "no segments:\n{text}");
        let mut total = 0i64;
        for (i, (seg, state, seg_last, check)) in rows.iter().enumerate() {
            if i + 1 < rows.len() {
                assert_eq!(state, "Completed", "segment {seg} is {state}:\n{text}");
            }
            assert!(check.starts_with("ok"), "segment {seg}: {check}\n{text}");
            if let Some(l) = seg_last {
                total += l + 1;
            }
            for rd in &rounds {
                for &(s, e) in &rd.acked {
                    if s == *seg {
                        assert!(
                            seg_last.is_some_and(|l| e <= l),
                            "acknowledged {s}:{e} is past segment {seg}'s end:\n{text}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            total,
            tail.lines().count() as i64,
            "inspect counts {total} entries, tail printed {}:\n{text}",
            tail.lines().count()
        );
    }

    let acked: usize = rounds.iter().map(|r| r.acked.len()).sum();
    let rounds_with_acks = rounds.iter().filter(|r| !r.acked.is_empty()).count();
    eprintln!(
        "{ROUNDS} rounds, {acked} entries acknowledged, {rounds_with_acks} rounds with \
         acknowledgements, {} lines sent",
        rounds.iter().map(|r| r.sent).sum::<u64>()
    );
    assert!(
        acked >= 100 && rounds_with_acks >= ROUNDS / 4,
        "too few acknowledgements to mean anything: {acked} in {rounds_with_acks} rounds"
    );
}
