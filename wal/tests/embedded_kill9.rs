//! `kill -9` an [`EmbeddedKv`] writer at random moments and check that no acknowledged update is
//! lost and that every reopen finds a consistent store.
//!
//! The test binary runs itself as the writer: [`child_process`] does nothing unless
//! [`kill9::DIR_ENV`] is set. The child opens the store, grants a lease, and loops on compare-and-swap
//! transactions `If(ModRevision(counter) == rev) Then(Put(counter, n+1), Put(n/<n+1>, n+1),
//! Put(owner, run, lease))`, printing every transaction whose call returned (acknowledged). The
//! parent kills it with SIGKILL after a random delay, reopens the store itself and checks:
//!
//! * the counter is the last acknowledged value, or one more (the transaction in flight);
//! * every `n/<i>` up to the counter is there, with the revision its transaction had, and none
//!   past it (transactions are atomic);
//! * the store revision is exactly `1 + counter` (the counter's transactions are the only
//!   changes), and acknowledged revisions strictly increase;
//! * lease ids strictly increase across runs (never reused after a crash);
//! * while a child has the store open, this process cannot open it.

#[path = "support/kill9.rs"]
mod kill9;

use std::path::Path;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use wal::clock::SystemClock;
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::{Compare, CompareOp, KeyValue, Kv, KvError, Txn, TxnOp};

const RUNS: u64 = 60;
/// Marks the lines of the child's protocol on stdout, among the test harness's own.
const MARK: &str = "@@kill9 ";
const COUNTER: &str = "counter";
const OWNER: &str = "owner";

fn item(n: u64) -> String {
    format!("n/{n:08}")
}

#[test]
#[ignore = "the writer process of embedded_kill9_loses_no_acknowledged_update; idle on its own"]
fn child_process() {
    let Some((dir, run)) = kill9::child_args::<u64>() else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(Path::new(&dir), run));
}

fn say(line: &str) {
    kill9::say(MARK, line);
}

async fn child(dir: &Path, run: u64) {
    let kv = EmbeddedKv::open(dir, SystemClock::shared())
        .await
        .expect("child: open");
    let lease = kv
        .lease_grant(Duration::from_secs(3600))
        .await
        .expect("child: lease");
    say(&format!("ready {lease}"));
    loop {
        let (n, rev) = match kv.get(COUNTER).await.expect("child: get") {
            Some(kv) => (number(&kv), kv.mod_revision),
            None => (0, 0),
        };
        let next = n + 1;
        let value = Bytes::from(next.to_string());
        let result = kv
            .txn(Txn {
                compares: vec![Compare::mod_revision(COUNTER, CompareOp::Equal, rev)],
                success: vec![
                    TxnOp::put(COUNTER, value.clone()),
                    TxnOp::put(item(next), value),
                    TxnOp::Put {
                        key: OWNER.into(),
                        value: Bytes::from(run.to_string()),
                        lease: Some(lease),
                    },
                ],
                failure: vec![],
            })
            .await
            .expect("child: txn");
        assert!(result.succeeded, "the only writer lost a CAS: {result:?}");
        say(&format!("ack {next} {}", result.revision));
    }
}

fn number(kv: &KeyValue) -> u64 {
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {kv:?}"))
}

/// What one child said before it died.
#[derive(Debug, Default)]
struct Said {
    lease: Option<i64>,
    /// `(value, revision)` of each acknowledged transaction, in order.
    acks: Vec<(u64, i64)>,
}

fn parse(lines: &[String]) -> Said {
    let mut said = Said::default();
    for line in lines {
        let Some((_, message)) = line.split_once(MARK) else {
            continue;
        };
        let words: Vec<&str> = message.split_whitespace().collect();
        match words.as_slice() {
            ["ready", lease] => said.lease = Some(lease.parse().unwrap()),
            ["ack", n, rev] => said.acks.push((n.parse().unwrap(), rev.parse().unwrap())),
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
    said
}

#[test]
fn embedded_kill9_loses_no_acknowledged_update() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    // The counter as verified after the previous run.
    let mut counter = 0u64;
    let mut last_lease = 0i64;
    let mut total_acks = 0usize;
    let mut refused_opens = 0usize;

    for run in 0..RUNS {
        let mut child = kill9::Run::start(dir.path(), run, MARK);
        // Every sixth run dies while opening (recovery, lease refresh) or just after.
        let early = run % 6 == 5;
        if early {
            thread::sleep(Duration::from_millis(rng.random_range(0..=15)));
        } else {
            child.wait_ready();
            if run % 4 == 0 {
                // Another process has the store: this one must be refused, harmlessly.
                match rt.block_on(EmbeddedKv::open(dir.path(), SystemClock::shared())) {
                    Err(KvError::Unavailable { detail, .. }) => {
                        assert!(
                            detail.contains("already in use by another process"),
                            "{detail}"
                        );
                        refused_opens += 1;
                    }
                    other => panic!("run {run}: opened a store a live child holds: {other:?}"),
                }
            }
            thread::sleep(Duration::from_millis(rng.random_range(5..=80)));
        }
        let seen = child.kill();

        let said = parse(&seen);
        if let Some(lease) = said.lease {
            assert!(lease > last_lease, "run {run}: lease id {lease} reused");
            last_lease = lease;
        }
        for (i, &(n, rev)) in said.acks.iter().enumerate() {
            assert_eq!(n, counter + 1 + i as u64, "run {run}: acks out of order");
            assert_eq!(rev, n as i64 + 1, "run {run}: ack {n} at revision {rev}");
        }
        total_acks += said.acks.len();
        let acked = said.acks.last().map_or(counter, |&(n, _)| n);

        counter = rt.block_on(verify(dir.path(), run, counter, acked, said.lease));
    }
    eprintln!(
        "{RUNS} kills, {total_acks} acknowledged transactions, counter {counter}, \
         {refused_opens} opens refused while a child held the store"
    );
    assert!(
        total_acks >= RUNS as usize,
        "only {total_acks} acknowledged transactions in {RUNS} runs: the children did not work"
    );
    assert!(refused_opens >= 5);
    assert!(counter as usize >= total_acks);
}

/// Reopens the store after a kill and checks it; returns the counter.
async fn verify(dir: &Path, run: u64, before: u64, acked: u64, lease: Option<i64>) -> u64 {
    let kv = EmbeddedKv::open(dir, SystemClock::shared())
        .await
        .unwrap_or_else(|e| panic!("run {run}: reopen after kill -9 failed: {e}"));
    let (all, revision) = kv.get_prefix("").await.unwrap();
    let counter = kv.get(COUNTER).await.unwrap();
    let n = counter.as_ref().map_or(0, number);
    assert!(
        n == acked || n == acked + 1,
        "run {run}: counter {n} after acknowledging {acked}"
    );
    assert_eq!(
        revision,
        n as i64 + 1,
        "run {run}: revision {revision}, counter {n}"
    );
    if let Some(counter) = &counter {
        assert_eq!(counter.mod_revision, revision);
        assert_eq!(counter.create_revision, 2);
        assert_eq!(counter.version, n as i64);
    }
    let items: Vec<&KeyValue> = all.iter().filter(|kv| kv.key.starts_with("n/")).collect();
    assert_eq!(
        items.len() as u64,
        n,
        "run {run}: {} items for counter {n}",
        items.len()
    );
    for (i, kv) in items.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(kv.key, item(i));
        assert_eq!(number(kv), i);
        assert_eq!(
            (kv.create_revision, kv.mod_revision),
            (i as i64 + 1, i as i64 + 1)
        );
    }
    assert_eq!(all.len() as u64, items.len() as u64 + 2 * u64::from(n > 0));
    if n > 0 {
        // Every transaction puts the owner with its run's lease.
        let owner = kv.get(OWNER).await.unwrap().expect("owner");
        assert_eq!(owner.mod_revision, revision);
        assert_ne!(owner.lease, 0);
        if n > before {
            assert_eq!(number(&owner), run, "run {run}: owner");
            if let Some(lease) = lease {
                assert_eq!(owner.lease, lease, "run {run}: owner's lease");
            }
        }
    }
    n
}
