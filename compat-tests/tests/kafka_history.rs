//! A Kafka-level history checker, after Jepsen's Kafka workload: an idempotent producer
//! (acks=all) and a consumer group that commits, both real librdkafka clients (the `rdkafka`
//! crate), run against `woodpecker serve` while it is killed (SIGKILL), paused
//! (SIGSTOP/SIGCONT) and restarted. Every send, acknowledgement (partition, offset), poll and
//! commit is recorded; at the end a fresh reader reads every partition from the start, and the
//! history is checked against the model:
//!
//! * no acknowledged record is lost: each is read back at its acknowledged partition and
//!   offset, with its value;
//! * none is duplicated: a value is stored once, however often the producer retried it;
//! * per-partition order: offsets read are strictly increasing, and records acknowledged on a
//!   partition sit in the order they were sent;
//! * the group's committed offsets never regress, what the broker reports as committed is
//!   never behind the last successful commit, and the group skips no acknowledged record
//!   below its final committed offset.
//!
//! A second run puts serve's metadata on etcd and its segments on MinIO, and pauses those
//! too, and kills and restarts them (`scripts/services restart`: SIGKILL, then the same ports
//! and data). The run is bounded by time: `KAFKA_HISTORY_SECS` (default 20) of faults, then a bounded
//! drain. Waits are for events (acknowledgements, reads); the fault loop's pauses are the
//! workload, not assertions.

// Faults and the run budget are real time against real processes.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use compat_tests::Server;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const TOPIC: &str = "history";
const PARTITIONS: i32 = 3;
const GROUP: &str = "history-group";
/// Sends in flight at once (pipelined, so that retries after a fault can reorder or
/// duplicate if the broker lets them).
const WINDOW: usize = 16;
/// A hang guard for the drain and the final read, not a timing assertion.
const DRAIN_GUARD: Duration = Duration::from_secs(180);

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// The producer acknowledged `value` (sent as number `seq`) at `partition`/`offset`.
    Ack {
        seq: u64,
        value: String,
        partition: i32,
        offset: i64,
    },
    /// A send failed for good (the value may or may not be stored, once).
    SendFailed { value: String },
    /// The group consumer polled a record.
    Poll { partition: i32, offset: i64 },
    /// A commit of `offset` (the next offset to read) succeeded.
    Commit { partition: i32, offset: i64 },
    /// The broker reported `offset` as the group's committed offset.
    Committed { partition: i32, offset: i64 },
    /// A fault was injected into serve.
    Fault(&'static str),
    /// The group consumer was sent back to an offset it had read (a re-delivery).
    Rewind,
}

#[derive(Debug, Default)]
struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// Every way `events` and the final read (`partition -> [(offset, value)]`) break the model.
fn check(events: &[Event], read: &BTreeMap<i32, Vec<(i64, String)>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut at: HashMap<(i32, i64), &str> = HashMap::new();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (p, records) in read {
        let mut prev = None;
        for (o, v) in records {
            if prev.is_some_and(|q| *o <= q) {
                out.push(format!(
                    "partition {p}: offset {o} read after {}",
                    prev.unwrap()
                ));
            }
            prev = Some(*o);
            at.insert((*p, *o), v.as_str());
            *times.entry(v.as_str()).or_default() += 1;
        }
    }
    let mut dups: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    dups.sort();
    for (v, n) in dups {
        out.push(format!("value {v} stored {n} times"));
    }
    let mut acked_by_partition: BTreeMap<i32, Vec<(u64, i64)>> = BTreeMap::new();
    for e in events {
        if let Event::Ack {
            seq,
            value,
            partition,
            offset,
        } = e
        {
            match at.get(&(*partition, *offset)) {
                None => out.push(format!(
                    "lost: {value} acknowledged at {partition}/{offset} is not there"
                )),
                Some(v) if v != value => out.push(format!(
                    "lost: {value} acknowledged at {partition}/{offset}, which holds {v}"
                )),
                Some(_) => {}
            }
            acked_by_partition
                .entry(*partition)
                .or_default()
                .push((*seq, *offset));
        }
    }
    for (p, mut acks) in acked_by_partition {
        acks.sort_unstable();
        for w in acks.windows(2) {
            if w[1].1 <= w[0].1 {
                out.push(format!(
                    "partition {p}: send {} acknowledged at {} but the earlier send {} at {}",
                    w[1].0, w[1].1, w[0].0, w[0].1
                ));
            }
        }
    }
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut polled: HashMap<i32, Vec<i64>> = HashMap::new();
    for e in events {
        match e {
            Event::Commit { partition, offset } => {
                let last = committed.entry(*partition).or_insert(*offset);
                if *offset < *last {
                    out.push(format!(
                        "partition {partition}: commit {offset} after commit {last}"
                    ));
                }
                *last = (*last).max(*offset);
            }
            Event::Committed { partition, offset } => {
                if let Some(last) = committed.get(partition)
                    && offset < last
                {
                    out.push(format!(
                        "partition {partition}: the broker reports {offset} committed after a \
                         successful commit of {last}"
                    ));
                }
            }
            Event::Poll { partition, offset } => {
                let ps = polled.entry(*partition).or_default();
                ps.push(*offset);
            }
            _ => {}
        }
    }
    for e in events {
        if let Event::Ack {
            value,
            partition,
            offset,
            ..
        } = e
            && committed.get(partition).is_some_and(|c| offset < c)
            && !polled.get(partition).is_some_and(|ps| ps.contains(offset))
        {
            out.push(format!(
                "the group committed past {partition}/{offset} ({value}) without polling it"
            ));
        }
    }
    out
}

fn secs() -> u64 {
    std::env::var("KAFKA_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {pid}: {status}");
    }
    Ok(())
}

/// Faults injected, by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Faults {
    kills: u32,
    pauses: u32,
    restarts: u32,
    /// SIGSTOP/SIGCONT of MinIO or etcd.
    service_pauses: u32,
    /// SIGKILL and restart of MinIO or etcd (same ports, same data).
    service_restarts: u32,
}

/// Crashes service `name` (SIGKILL) and starts it again on its ports with its data, through
/// `scripts/services restart` (which started it); returns once it is healthy again.
async fn restart_service(name: &'static str) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .args(["restart", name])
            .output()
    })
    .await??;
    if !out.status.success() {
        bail!(
            "scripts/services restart {name}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

async fn chaos(
    server: &mut Server,
    until: Instant,
    history: &History,
    services: &[&'static str],
) -> Result<Faults> {
    let mut f = Faults::default();
    while Instant::now() < until {
        let (wait, kind, pause) = {
            let mut rng = rand::rng();
            (
                Duration::from_millis(rng.random_range(500..2_500)),
                rng.random_range(0..3 + 2 * services.len()),
                Duration::from_millis(rng.random_range(200..3_000)),
            )
        };
        tokio::time::sleep(wait).await;
        match kind {
            0 => {
                history.push(Event::Fault("SIGKILL"));
                server.kill().await?;
                server.start_again().await?;
                f.kills += 1;
            }
            1 => {
                let pid = server.pid().context("serve is not running")?;
                history.push(Event::Fault("SIGSTOP"));
                signal(pid, "STOP")?;
                tokio::time::sleep(pause).await;
                signal(pid, "CONT")?;
                f.pauses += 1;
            }
            2 => {
                history.push(Event::Fault("SIGTERM restart"));
                server.restart().await?;
                f.restarts += 1;
            }
            k if k < 3 + services.len() => {
                let name = services[k - 3];
                let pid = service_pid(name).with_context(|| format!("{name} is not running"))?;
                history.push(Event::Fault(name));
                signal(pid, "STOP")?;
                tokio::time::sleep(pause).await;
                signal(pid, "CONT")?;
                f.service_pauses += 1;
            }
            k => {
                let name = services[k - 3 - services.len()];
                history.push(Event::Fault(name));
                restart_service(name).await?;
                f.service_restarts += 1;
            }
        }
    }
    Ok(f)
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.max.ms", "500")
        .create()?)
}

/// Produces until `stop`, `WINDOW` sends in flight; returns how many were sent.
async fn produce(
    bootstrap: String,
    history: Arc<History>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<u64> {
    let mut p = producer(&bootstrap)?;
    let mut seq = 0u64;
    let mut inflight = FuturesOrdered::new();
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::SeqCst);
        if !stopping && inflight.len() < WINDOW {
            let value = format!("v{seq}");
            let partition = (seq % PARTITIONS as u64) as i32;
            let prod = p.clone();
            let s = seq;
            inflight.push_back(async move {
                let r = prod
                    .send(
                        FutureRecord::<(), String>::to(TOPIC)
                            .payload(&value)
                            .partition(partition),
                        Duration::from_secs(0),
                    )
                    .await;
                (s, value, r)
            });
            seq += 1;
            continue;
        }
        let Some((s, value, r)) = inflight.next().await else {
            break;
        };
        match r {
            Ok((partition, offset)) => history.push(Event::Ack {
                seq: s,
                value,
                partition,
                offset,
            }),
            Err((e, _)) => {
                history.push(Event::SendFailed { value });
                // A fatal idempotence error leaves the producer unusable: a new one gets a
                // new producer id (its records are new sends, never resends).
                if p.client().fatal_error().is_some() {
                    eprintln!("producer fatal error ({e}); starting a new producer");
                    p = producer(&bootstrap)?;
                }
            }
        }
    }
    Ok(seq)
}

fn group_consumer(bootstrap: &str) -> Result<StreamConsumer> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "500")
        .create()?;
    c.subscribe(&[TOPIC])?;
    Ok(c)
}

/// Asks the broker for the group's committed offsets and records them.
fn record_committed(c: &StreamConsumer, history: &History) {
    if let Ok(tpl) = c.committed(Duration::from_secs(5)) {
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                history.push(Event::Committed {
                    partition: e.partition(),
                    offset: o,
                });
            }
        }
    }
}

/// Consumes and commits until `stop` and the committed offsets reach `target` (set when the
/// producer is done).
async fn consume(
    bootstrap: String,
    history: Arc<History>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    target: Arc<Mutex<Option<HashMap<i32, i64>>>>,
) -> Result<()> {
    let c = group_consumer(&bootstrap)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut since_commit = 0;
    let mut last_check = Instant::now();
    loop {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            history.push(Event::Poll {
                partition: m.partition(),
                offset: m.offset(),
            });
            let prev = next.insert(m.partition(), m.offset() + 1);
            since_commit += 1;
            if prev.is_some_and(|p| m.offset() + 1 < p) {
                // The group went back (a rebalance re-delivers from the committed offset:
                // at least once). What the broker holds as committed must still be at
                // least the last successful commit.
                history.push(Event::Rewind);
                record_committed(&c, &history);
            }
        }
        if since_commit >= 10 || (since_commit > 0 && last_check.elapsed() > Duration::from_secs(1))
        {
            // Commits only move forward: after a re-delivery the consumer does not commit
            // below what it committed, so the broker's committed offsets may never go back.
            let ahead: Vec<(i32, i64)> = next
                .iter()
                .filter(|(p, o)| committed.get(*p).is_none_or(|c| **o > *c))
                .map(|(p, o)| (*p, *o))
                .collect();
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &ahead {
                tpl.add_partition_offset(TOPIC, *p, Offset::Offset(*o))?;
            }
            if ahead.is_empty() || c.commit(&tpl, CommitMode::Sync).is_ok() {
                for (p, o) in ahead {
                    history.push(Event::Commit {
                        partition: p,
                        offset: o,
                    });
                    committed.insert(p, o);
                }
                since_commit = 0;
            }
        }
        if last_check.elapsed() > Duration::from_secs(1) {
            last_check = Instant::now();
            record_committed(&c, &history);
            if stop.load(std::sync::atomic::Ordering::SeqCst)
                && let Some(t) = target.lock().unwrap().as_ref()
                && t.iter()
                    .all(|(p, end)| committed.get(p).is_some_and(|c| c >= end))
            {
                return Ok(());
            }
        }
    }
}

/// Reads every partition from the start up to its high watermark.
fn read_all(bootstrap: &str) -> Result<BTreeMap<i32, Vec<(i64, String)>>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "history-verifier")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = c.fetch_watermarks(TOPIC, p, Duration::from_secs(30))?;
        ends.insert(p, high);
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let started = Instant::now();
    let done = |out: &BTreeMap<i32, Vec<(i64, String)>>| {
        ends.iter().all(|(p, end)| {
            *end == 0
                || out
                    .get(p)
                    .and_then(|v| v.last())
                    .is_some_and(|(o, _)| o + 1 >= *end)
        })
    };
    while !done(&out) {
        if started.elapsed() > DRAIN_GUARD {
            bail!("the final read did not reach the high watermarks {ends:?}");
        }
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            let m = m?;
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.entry(m.partition()).or_default().push((m.offset(), v));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_producer_and_group_under_kill_pause_restart_of_serve() -> Result<()> {
    history_run(Server::start().await?, &[]).await
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!(
            "{name} is not set: this test needs etcd and MinIO; run `eval \"$(scripts/services \
             start)\"` first (or use scripts/test)"
        )
    })
}

/// The pid of a service `scripts/services` started (`minio`, `etcd`), from its state
/// directory.
fn service_pid(name: &str) -> Option<u32> {
    let dir = std::env::var_os("WOODPECKER_SERVICES_DIR")?;
    std::fs::read_to_string(std::path::PathBuf::from(dir).join(name).join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The same history with serve's metadata on etcd and its segments on MinIO, and MinIO and
/// etcd paused (SIGSTOP/SIGCONT) and killed and restarted among the faults when `WOODPECKER_SERVICES_DIR` names the
/// state of the `scripts/services` that started them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_producer_and_group_on_etcd_and_minio_under_faults_of_every_process()
-> Result<()> {
    let s3 = required("WOODPECKER_TEST_S3_ENDPOINT")?;
    let key = required("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?;
    let secret = required("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?;
    let region = required("WOODPECKER_TEST_S3_REGION")?;
    let etcd = required("WOODPECKER_TEST_ETCD_ENDPOINT")?;
    let id = rand::random::<u64>();
    let host_port = s3
        .trim_end_matches('/')
        .split_once("://")
        .map_or(s3.as_str(), |x| x.1);
    let (host, port) = host_port.rsplit_once(':').context("S3 endpoint port")?;
    let work = tempfile::tempdir()?;
    let config = work.path().join("woodpecker.yaml");
    std::fs::write(
        &config,
        format!(
            "woodpecker:\n  meta:\n    type: etcd\n    prefixMode: configured\n  storage:\n    \
             type: minio\netcd:\n  endpoints: [\"{etcd}\"]\n  rootPath: wp-kh-{id}\nminio:\n  \
             address: \"{host}\"\n  port: {port}\n  accessKeyID: \"{key}\"\n  \
             secretAccessKey: \"{secret}\"\n  region: \"{region}\"\n  bucketName: wp-kh-{id}\n  \
             createBucket: true\n  rootPath: files\n"
        ),
    )?;
    let config_arg = config.display().to_string();
    let server = Server::start_with(&["--config", &config_arg]).await?;
    let services: Vec<&'static str> = ["minio", "etcd"]
        .into_iter()
        .filter(|n| service_pid(n).is_some())
        .collect();
    history_run(server, &services).await
}

async fn history_run(mut server: Server, services: &[&'static str]) -> Result<()> {
    let bootstrap = server.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let created = admin
        .create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in created {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    let history = Arc::new(History::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let target = Arc::new(Mutex::new(None));
    let producing = tokio::spawn(produce(bootstrap.clone(), history.clone(), stop.clone()));
    let consuming = tokio::spawn(consume(
        bootstrap.clone(),
        history.clone(),
        stop.clone(),
        target.clone(),
    ));

    let until = Instant::now() + Duration::from_secs(secs());
    let faults = chaos(&mut server, until, &history, services).await?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = tokio::time::timeout(DRAIN_GUARD, producing)
        .await
        .context("the producer did not drain")???;
    // The group is done when it has committed past every acknowledged record.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for e in history.snapshot() {
        if let Event::Ack {
            partition, offset, ..
        } = e
        {
            let end = ends.entry(partition).or_insert(0);
            *end = (*end).max(offset + 1);
        }
    }
    *target.lock().unwrap() = Some(ends);
    tokio::time::timeout(DRAIN_GUARD, consuming)
        .await
        .context("the group did not commit past every acknowledged record")???;

    let b = bootstrap.clone();
    let read = tokio::task::spawn_blocking(move || read_all(&b)).await??;
    let events = history.snapshot();
    let acked = events
        .iter()
        .filter(|e| matches!(e, Event::Ack { .. }))
        .count();
    let failed = events
        .iter()
        .filter(|e| matches!(e, Event::SendFailed { .. }))
        .count();
    let commits = events
        .iter()
        .filter(|e| matches!(e, Event::Commit { .. }))
        .count();
    let rewinds = events.iter().filter(|e| **e == Event::Rewind).count();
    let violations = check(&events, &read);
    println!(
        "kafka history: {sent} sent, {acked} acknowledged, {failed} failed for good, {commits} \
         commits, {rewinds} re-deliveries; faults: {} SIGKILL, {} SIGSTOP/SIGCONT, {} restarts of \
         serve, {} SIGSTOP/SIGCONT and {} SIGKILL-restarts of MinIO or etcd; {} violations",
        faults.kills,
        faults.pauses,
        faults.restarts,
        faults.service_pauses,
        faults.service_restarts,
        violations.len()
    );
    assert!(acked > 0, "nothing was acknowledged");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    server.stop().await
}

#[test]
fn the_model_names_each_broken_rule() {
    let ack = |seq, value: &str, partition, offset| Event::Ack {
        seq,
        value: value.into(),
        partition,
        offset,
    };
    let events = vec![
        ack(0, "a", 0, 0),
        ack(1, "b", 0, 1),
        ack(2, "c", 0, 3),
        ack(3, "d", 0, 2),
        Event::Commit {
            partition: 0,
            offset: 3,
        },
        Event::Poll {
            partition: 0,
            offset: 0,
        },
        Event::Commit {
            partition: 0,
            offset: 2,
        },
        Event::Committed {
            partition: 0,
            offset: 1,
        },
    ];
    let read: BTreeMap<i32, Vec<(i64, String)>> = [(
        0,
        vec![
            (0, "a".to_string()),
            (2, "d".to_string()),
            (3, "c".to_string()),
            (4, "c".to_string()),
        ],
    )]
    .into();
    let v = check(&events, &read);
    let has = |s: &str| v.iter().any(|x| x.contains(s));
    assert!(has("lost: b acknowledged at 0/1"), "{v:?}");
    assert!(has("value c stored 2 times"), "{v:?}");
    assert!(
        has("send 3 acknowledged at 2 but the earlier send 2 at 3"),
        "{v:?}"
    );
    assert!(has("commit 2 after commit 3"), "{v:?}");
    assert!(has("reports 1 committed"), "{v:?}");
    assert!(has("committed past 0/1 (b) without polling it"), "{v:?}");
    let clean = check(
        &events[..2],
        &[(0, vec![(0, "a".into()), (1, "b".into())])].into(),
    );
    assert_eq!(clean, Vec::<String>::new());
}
