//! The replication core (`wal::quorum`): readable tables and exhaustive checks.
//!
//! * `wal/tests/testdata/quorum/append.txt`: acknowledgement at `Aq` of `Wq`, in order,
//!   failures and their cascade, step by step.
//! * `wal/tests/testdata/quorum/recovery.txt`: fence targets and completion after a writer
//!   crash, including every history of Go issue #320 and the cases of #252 and #327.
//! * Exhaustive checks over write quorums 3 to 7 of the invariant stated in the module docs
//!   of `wal::quorum`: every tail assignment (up to a permutation of replicas, which no rule
//!   distinguishes), every set of fence replies and every set of completion replies.
//!
//! `REWRITE=1 cargo test -p woodpecker-wal --test quorum` rewrites the tables' outputs.

#[path = "support/datadriven.rs"]
mod datadriven;

use std::fmt::Write as _;
use std::path::PathBuf;

use proptest::prelude::*;
use wal::quorum::{AppendQuorum, QuorumSpec, RecoveryError, Settled, completion, fence_target};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata/quorum")
        .join(name)
}

fn replica_name(r: usize) -> char {
    (b'a' + r as u8) as char
}

fn replica_of(case: &datadriven::Case, name: &str) -> usize {
    let c = name.chars().next().unwrap_or('?');
    assert!(
        name.len() == 1 && c.is_ascii_lowercase(),
        "{}: `{name}` is not a replica name (a, b, c, ...)",
        case.pos
    );
    (c as u8 - b'a') as usize
}

fn spec_of(case: &datadriven::Case) -> QuorumSpec {
    let wq = case.arg("wq").parse().unwrap();
    let aq = case.arg("aq").parse().unwrap();
    QuorumSpec::new(wq, aq).unwrap_or_else(|e| panic!("{}: {e}", case.pos))
}

/// `0..=4` or `3`.
fn id_range(s: &str) -> std::ops::RangeInclusive<i64> {
    match s.split_once("..=") {
        Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
        None => {
            let v = s.parse().unwrap();
            v..=v
        }
    }
}

fn describe(q: &AppendQuorum) -> String {
    let mut s = String::new();
    let tails: Vec<String> = (0..q.spec().wq())
        .map(|r| {
            format!(
                "{}={}{}",
                replica_name(r),
                q.tail(r),
                if q.is_failed(r) { "(failed)" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(s, "tails {}", tails.join(" "));
    let _ = write!(
        s,
        "issued {} settled {} lac {}",
        q.last_issued(),
        q.last_settled(),
        q.lac()
    );
    match q.doomed_from() {
        Some(d) => {
            let _ = writeln!(s, " doomed from {d}");
        }
        None => s.push('\n'),
    }
    let pending: Vec<String> = (q.last_settled() + 1..=q.last_issued())
        .map(|e| format!("{e}:{}", q.ack_count(e)))
        .collect();
    if !pending.is_empty() {
        let _ = writeln!(s, "pending acks {}", pending.join(" "));
    }
    s
}

#[test]
fn append_tables() {
    let mut q: Option<AppendQuorum> = None;
    datadriven::run_file(&testdata("append.txt"), |case| {
        let mut out = String::new();
        match case.cmd.as_str() {
            "new" => {
                let spec = spec_of(case);
                q = Some(AppendQuorum::new(spec));
                let _ = writeln!(out, "{spec}");
            }
            "issue" => {
                let q = q.as_mut().expect("`new` first");
                for (k, v) in &case.args {
                    let text = match v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    };
                    for id in id_range(&text) {
                        let s = q.issue(id).unwrap_or_else(|e| panic!("{}: {e}", case.pos));
                        if !s.is_empty() {
                            let _ = writeln!(out, "issue {id}: {s}");
                        }
                    }
                }
                out.push_str(&describe(q));
            }
            "synced" => {
                let q = q.as_mut().expect("`new` first");
                for (k, v) in &case.args {
                    let r = replica_of(case, k);
                    let through: i64 = v.as_deref().expect("replica=id").parse().unwrap();
                    let s = q.synced(r, through).unwrap();
                    let _ = writeln!(out, "{k} synced {through}: {s}");
                }
                out.push_str(&describe(q));
            }
            "fail" => {
                let q = q.as_mut().expect("`new` first");
                for (k, _) in &case.args {
                    let s = q.fail(replica_of(case, k)).unwrap();
                    let _ = writeln!(out, "{k} failed: {s}");
                }
                out.push_str(&describe(q));
            }
            "state" => out.push_str(&describe(q.as_ref().expect("`new` first"))),
            other => panic!("{}: unknown command {other}", case.pos),
        }
        out
    });
}

/// The `Aq`-th largest tail: the most a writer can have acknowledged with these tails.
fn most_acknowledged(spec: QuorumSpec, tails: &[i64]) -> i64 {
    let mut t = tails.to_vec();
    t.sort_unstable_by(|a, b| b.cmp(a));
    t[spec.aq() - 1]
}

/// `recover wq=.. aq=..` with the lines `tails a=.. b=..`, `fence <replicas that answer>`
/// and `complete <replicas that answer>` (a replica answers with its tail; the others fail).
fn recover(case: &datadriven::Case) -> String {
    let spec = spec_of(case);
    let mut tails = vec![-1i64; spec.wq()];
    let mut fence_from = vec![false; spec.wq()];
    let mut complete_from = vec![false; spec.wq()];
    for line in &case.input {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("tails") => {
                for w in words {
                    let (r, t) = w.split_once('=').expect("replica=tail");
                    tails[replica_of(case, r)] = t.parse().unwrap();
                }
            }
            Some("fence") => words.for_each(|r| fence_from[replica_of(case, r)] = true),
            Some("complete") => words.for_each(|r| complete_from[replica_of(case, r)] = true),
            _ => panic!("{}: bad input line `{line}`", case.pos),
        }
    }
    let acked = most_acknowledged(spec, &tails);
    let mut out = String::new();
    let _ = writeln!(out, "acknowledged at most through {acked}");
    let replies: Vec<Option<i64>> = tails
        .iter()
        .zip(&fence_from)
        .map(|(t, on)| on.then_some(*t))
        .collect();
    let shown: Vec<String> = replies
        .iter()
        .enumerate()
        .map(|(r, v)| match v {
            Some(t) => format!("{}={t}", replica_name(r)),
            None => format!("{}=failed", replica_name(r)),
        })
        .collect();
    let _ = writeln!(out, "fence replies {}", shown.join(" "));
    // What Go chose before #326 (the ack quorum counted from the top of the replies that
    // arrived, sorted[len - Aq]), as #320 reports it: shown so the table makes the
    // regression visible.
    let mut got: Vec<i64> = replies.iter().flatten().copied().collect();
    got.sort_unstable();
    if got.len() >= spec.aq() {
        let old = got[got.len() - spec.aq()];
        let verdict = if old < acked {
            "would lose acknowledged entries"
        } else {
            "safe here"
        };
        let _ = writeln!(out, "go before #326 chose {old}: {verdict}");
    }
    let target = match fence_target(spec, &replies) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(out, "fence refused: {e}");
            return out;
        }
    };
    assert!(
        target.target >= acked,
        "{}: target {} below acknowledged {acked}",
        case.pos,
        target.target
    );
    let _ = writeln!(out, "fence {target}");
    let finalized: Vec<Option<i64>> = tails
        .iter()
        .zip(&complete_from)
        .map(|(t, on)| on.then_some(*t))
        .collect();
    match completion(spec, target.target, &replies, &finalized) {
        Ok(c) => {
            let _ = writeln!(out, "{c}");
        }
        Err(e) => {
            let _ = writeln!(out, "not completed: {e}");
        }
    }
    out
}

#[test]
fn recovery_tables() {
    datadriven::run_file(&testdata("recovery.txt"), |case| match case.cmd.as_str() {
        "recover" => recover(case),
        other => panic!("{}: unknown command {other}", case.pos),
    });
}

/// Every non-decreasing sequence of `len` values in `lo..=hi`: tail assignments up to a
/// permutation of replicas.
fn sorted_tails(len: usize, lo: i64, hi: i64) -> Vec<Vec<i64>> {
    fn go(len: usize, from: i64, hi: i64, cur: &mut Vec<i64>, out: &mut Vec<Vec<i64>>) {
        if cur.len() == len {
            out.push(cur.clone());
            return;
        }
        for v in from..=hi {
            cur.push(v);
            go(len, v, hi, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(len, lo, hi, &mut Vec::new(), &mut out);
    out
}

fn masked(tails: &[i64], mask: u32) -> Vec<Option<i64>> {
    tails
        .iter()
        .enumerate()
        .map(|(r, t)| (mask & (1 << r) != 0).then_some(*t))
        .collect()
}

/// Wq 3..=7 with the majority Aq; every tail in -1..=3 (five values: enough for every
/// order relation between seven replicas' tails and the target), every set of fence
/// replies, every set of completion replies. Checks the invariant of `wal::quorum` and
/// that recovery always concludes when `Aq` replicas answer both phases.
#[test]
fn exhaustive_recovery_keeps_every_acknowledged_entry() {
    let mut checked = 0u64;
    for wq in 3..=7usize {
        let spec = QuorumSpec::majority(wq).unwrap();
        for tails in sorted_tails(wq, -1, 3) {
            let acked = most_acknowledged(spec, &tails);
            for fence_mask in 0..(1u32 << wq) {
                let replies = masked(&tails, fence_mask);
                let answered = fence_mask.count_ones() as usize;
                let target = match fence_target(spec, &replies) {
                    Ok(t) => t.target,
                    Err(RecoveryError::TooFewFenceReplies { .. }) => {
                        assert!(
                            answered < spec.fence_replies_needed(),
                            "{tails:?} {fence_mask:b}"
                        );
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                };
                assert!(answered >= spec.fence_replies_needed());
                // Safety: every acknowledged entry is inside the target.
                assert!(
                    target >= acked,
                    "{spec} tails {tails:?} replies {replies:?}: target {target} < {acked}"
                );
                // Nothing invented: a replica that answered holds the target.
                let highest = replies.iter().flatten().copied().max().unwrap();
                assert!(target <= highest, "{spec} {tails:?} {replies:?}");
                // Minimality: silent replicas holding everything would make the target an
                // acknowledged entry, so nothing lower is safe.
                if target >= 0 {
                    let worst: Vec<i64> = replies.iter().map(|r| r.unwrap_or(i64::MAX)).collect();
                    assert!(
                        worst.iter().filter(|t| **t >= target).count() >= spec.aq(),
                        "{spec} {replies:?}: target {target} is not minimal"
                    );
                }
                for complete_mask in 0..(1u32 << wq) {
                    let finalized = masked(&tails, complete_mask);
                    let n = complete_mask.count_ones() as usize;
                    match completion(spec, target, &replies, &finalized) {
                        Ok(c) => {
                            assert!(n >= spec.aq());
                            assert_eq!(c.last_entry_id, target);
                            // Each acknowledged entry is on Aq replicas (their tails).
                            assert!(tails.iter().filter(|t| **t >= acked).count() >= spec.aq());
                        }
                        Err(RecoveryError::TooFewFinalized { .. }) => assert!(n < spec.aq()),
                        // Refused when no finalized replica serves the target: publishing it
                        // would leave the tail to a replica nobody completes; recovery
                        // retries (refusing never loses anything).
                        Err(RecoveryError::Uncovered { .. }) => {
                            assert!(n >= spec.aq());
                            assert!(finalized.iter().flatten().all(|c| *c < target));
                        }
                        Err(e) => panic!("{spec} {tails:?} {replies:?} {finalized:?}: {e}"),
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1_000_000, "{checked}");
}

/// One event a replica reports to the append core.
#[derive(Debug, Clone, Copy)]
enum Event {
    Synced(usize, i64),
    Fail(usize),
}

/// Drives an [`AppendQuorum`] with `events` after issuing `0..=last`, checking on every step
/// that results settle each id exactly once, in order, acknowledged before failed; returns
/// the core and the settled outcome per id.
fn drive(spec: QuorumSpec, last: i64, events: &[Event]) -> (AppendQuorum, Vec<Option<bool>>) {
    let mut q = AppendQuorum::new(spec);
    let mut outcome: Vec<Option<bool>> = vec![None; (last + 1) as usize];
    let mut next = 0i64;
    let mut take = |s: Settled, outcome: &mut Vec<Option<bool>>| {
        for (range, ok) in [(s.acked, true), (s.failed, false)] {
            if let Some(r) = range {
                assert_eq!(r.first, next, "settled out of order: {s}");
                for id in r.ids() {
                    assert!(outcome[id as usize].is_none(), "entry {id} settled twice");
                    outcome[id as usize] = Some(ok);
                }
                next = r.last + 1;
            }
        }
    };
    for id in 0..=last {
        let s = q.issue(id).unwrap();
        take(s, &mut outcome);
    }
    for ev in events {
        let s = match *ev {
            Event::Synced(r, t) => q.synced(r, t).unwrap(),
            Event::Fail(r) => q.fail(r).unwrap(),
        };
        take(s, &mut outcome);
    }
    (q, outcome)
}

/// What the definitions say once every replica reported `tails` and the `failed` ones
/// failed: entry `e` is acknowledged when `Aq` tails reach it and every earlier entry is;
/// an unacknowledged entry has failed when it, or an earlier unacknowledged one, cannot
/// reach `Aq` any more; the rest wait.
fn expected_outcome(
    spec: QuorumSpec,
    last: i64,
    tails: &[i64],
    failed: &[bool],
) -> Vec<Option<bool>> {
    let mut out = Vec::new();
    let mut broken = false;
    let mut acking = true;
    for e in 0..=last {
        let holders = tails.iter().filter(|t| **t >= e).count();
        let able = tails
            .iter()
            .zip(failed)
            .filter(|(t, f)| **t >= e || !**f)
            .count();
        if acking && holders >= spec.aq() {
            out.push(Some(true));
            continue;
        }
        acking = false;
        if able < spec.aq() {
            broken = true;
        }
        out.push(if broken { Some(false) } else { None });
    }
    // A failure is only reported once every earlier entry settled.
    if let Some(first_wait) = out.iter().position(Option::is_none) {
        for o in out.iter_mut().skip(first_wait) {
            if *o == Some(false) {
                *o = None;
            }
        }
    }
    out
}

/// Wq 3..=7, every tail assignment in -1..=3 (up to permutation) for entries 0..=3, every
/// set of failed replicas, events delivered in three orders: the core settles exactly what
/// the definitions say, never above the `Aq`-th largest tail (which every recovery covers,
/// by the exhaustive recovery check), in order and once.
#[test]
fn exhaustive_acknowledgement_matches_the_definitions() {
    let last = 3;
    for wq in 3..=7usize {
        let spec = QuorumSpec::majority(wq).unwrap();
        for tails in sorted_tails(wq, -1, last) {
            for fail_mask in 0..(1u32 << wq) {
                let failed: Vec<bool> = (0..wq).map(|r| fail_mask & (1 << r) != 0).collect();
                let expected = expected_outcome(spec, last, &tails, &failed);
                // Order 1: replica by replica, each one's failure after its reports.
                let mut by_replica = Vec::new();
                for (r, t) in tails.iter().enumerate() {
                    by_replica.extend((0..=*t).map(|e| Event::Synced(r, e)));
                    if failed[r] {
                        by_replica.push(Event::Fail(r));
                    }
                }
                // Order 2: round robin, one entry at a time; failures at the end.
                let mut round_robin = Vec::new();
                for e in 0..=last {
                    for (r, t) in tails.iter().enumerate() {
                        if e <= *t {
                            round_robin.push(Event::Synced(r, e));
                        }
                    }
                }
                round_robin.extend((0..wq).filter(|r| failed[*r]).map(Event::Fail));
                // Order 3: failures first, then cumulative reports in reverse replica order.
                let mut fail_first: Vec<Event> =
                    (0..wq).filter(|r| failed[*r]).map(Event::Fail).collect();
                fail_first.extend(
                    tails
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(r, t)| Event::Synced(r, *t)),
                );
                for events in [&by_replica, &round_robin, &fail_first] {
                    let (q, got) = drive(spec, last, events);
                    // Reports of failed replicas made after the failure still count, so
                    // order 3 may acknowledge what orders 1 and 2 failed earlier: compare
                    // orders 1 and 2 with the definitions, and bound order 3.
                    if !std::ptr::eq(events, &fail_first) {
                        assert_eq!(
                            got, expected,
                            "{spec} tails {tails:?} failed {failed:?} {events:?}"
                        );
                    }
                    assert!(q.lac() <= most_acknowledged(spec, &tails));
                    let acked = got.iter().take_while(|o| **o == Some(true)).count() as i64 - 1;
                    assert_eq!(q.lac(), acked);
                }
            }
        }
    }
}

proptest! {
    /// Random interleavings of reports and failures: results settle in order, exactly once,
    /// acknowledged entries are held by `Aq` replicas, and the LAC never exceeds the
    /// `Aq`-th largest tail.
    #[test]
    fn random_interleavings_settle_in_order(
        wq in prop::sample::select(vec![1usize, 3, 5, 7]),
        raw in prop::collection::vec((0usize..7, -1i64..12, any::<bool>()), 0..60),
    ) {
        let spec = QuorumSpec::majority(wq).unwrap();
        let last = 10;
        let events: Vec<Event> = raw
            .into_iter()
            .map(|(r, t, fail)| if fail && t % 5 == 0 { Event::Fail(r % wq) } else { Event::Synced(r % wq, t) })
            .collect();
        let (q, got) = drive(spec, last, &events);
        for (e, o) in got.iter().enumerate() {
            if *o == Some(true) {
                prop_assert!(q.ack_count(e as i64) >= spec.aq());
            }
        }
        prop_assert!(q.lac() <= most_acknowledged(spec, q.tails()));
    }
}
