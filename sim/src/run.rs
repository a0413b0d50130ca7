//! One simulated run: build the cluster a [`Plan`] describes, drive the workload under its
//! faults, heal, recover, compact, read everything back and [`check`](crate::check) it.
//!
//! Phases, all in simulated time, each bounded (a bound that runs out is a hang):
//!
//! 1. **write**: writer 0 writes; after `fence_at` writes, writer 1 opens (fencing writer 0,
//!    which keeps trying `stale_writes` more entries concurrently) and writes the rest. The
//!    timed faults and the per-call faults are on. A write that fails with a retriable error
//!    is tried again as a new entry (a new payload): an entry whose acknowledgement was lost
//!    may be stored once, never twice.
//! 2. **heal**: the fault driver stops, crashed nodes restart, partitions heal, per-call
//!    faults stop. Object-store faults stay on to the end: they are transient, and the
//!    object store is only used from here on (compaction, reads of sealed segments).
//! 3. **recover**: writer 2 opens (fencing and completing what is active), writes, closes.
//!    From here on every operation must succeed: an error that is not retriable, or one that
//!    keeps coming until the bound, fails the run.
//! 4. **read**: a reader reads the whole log from the LogStores.
//! 5. **compact**: auditor passes until every completed segment is sealed (compacted into the
//!    object store), then the log is read again, now from the compacted copies.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use proto::meta::SegmentState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storage::object::faults::{FaultInjectingStore, FaultRule, Op};
use wal::client::{
    Client, ClientError, ClientSettings, LogHandle, LogWriter, ReplicationSettings, code,
};
use wal::clock::ClockRef;
use wal::clock::blocking::{Inline, Io, inline_here};
use wal::config::SegmentRollingPolicy;
use wal::message::{LogMessageId, WriteMessage};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;
use wal::meta::{KvMetadata, MetadataProvider};

use crate::check::{Ack, History, ReopenCause, Violation, check};
use crate::clock::SimClock;
use crate::meta::FaultyKv;
use crate::net::{SimCluster, SimNet};
use crate::plan::{Fault, Plan};

/// How long one write may take, retries included, before the run counts it as a hang.
const WRITE_BOUND: Duration = Duration::from_secs(300);
/// How long one read may take.
const READ_BOUND: Duration = Duration::from_secs(120);
/// Auditor passes before the run gives up on sealing every segment.
const COMPACTION_PASSES: usize = 20;

/// Faults injected in one run (or summed over many), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Partitions of one node from the client.
    pub partitions: u64,
    /// Node crash-restarts.
    pub crashes: u64,
    /// Requests lost.
    pub lost_requests: u64,
    /// Replies lost after the node applied the request.
    pub lost_replies: u64,
    /// Requests delayed.
    pub delayed: u64,
    /// Calls refused by a down node.
    pub refused_down: u64,
    /// Calls lost in a partition.
    pub partitioned_calls: u64,
    /// Object-store errors before the operation.
    pub object_errors_before: u64,
    /// Object-store errors after the operation was applied.
    pub object_errors_after: u64,
    /// Runs with object-store latency.
    pub object_latency_runs: u64,
    /// Crashes that were power losses (the rest stopped after their last flush).
    pub power_losses: u64,
    /// Journaled blocks a power loss took from their `data.log` (replay restores them).
    pub lost_unsynced_blocks: u64,
    /// Torn writes a power loss left at the end of a journal file or a `data.log`.
    pub torn_tails: u64,
    /// Local file operations slowed down (a slow disk or `fsync`).
    pub slow_disk_ops: u64,
    /// Metadata-store calls failed before they were applied.
    pub meta_errors_before: u64,
    /// Metadata-store calls that were applied and then failed (the answer was lost).
    pub meta_errors_after: u64,
    /// Metadata-store calls delayed.
    pub meta_delayed: u64,
}

impl FaultCounts {
    /// Adds `o`.
    pub fn add(&mut self, o: &FaultCounts) {
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.lost_requests += o.lost_requests;
        self.lost_replies += o.lost_replies;
        self.delayed += o.delayed;
        self.refused_down += o.refused_down;
        self.partitioned_calls += o.partitioned_calls;
        self.object_errors_before += o.object_errors_before;
        self.object_errors_after += o.object_errors_after;
        self.object_latency_runs += o.object_latency_runs;
        self.power_losses += o.power_losses;
        self.lost_unsynced_blocks += o.lost_unsynced_blocks;
        self.torn_tails += o.torn_tails;
        self.slow_disk_ops += o.slow_disk_ops;
        self.meta_errors_before += o.meta_errors_before;
        self.meta_errors_after += o.meta_errors_after;
        self.meta_delayed += o.meta_delayed;
    }

    /// The counts the engine's path decides: all but `lost_unsynced_blocks` (see
    /// [`crate::disk::CrashDamage`]).
    pub fn on_path(&self) -> FaultCounts {
        FaultCounts {
            lost_unsynced_blocks: 0,
            ..*self
        }
    }

    /// Every fault injected.
    pub fn total(&self) -> u64 {
        self.partitions
            + self.crashes
            + self.lost_requests
            + self.lost_replies
            + self.delayed
            + self.refused_down
            + self.partitioned_calls
            + self.object_errors_before
            + self.object_errors_after
            + self.power_losses
            + self.lost_unsynced_blocks
            + self.torn_tails
            + self.slow_disk_ops
            + self.meta_errors_before
            + self.meta_errors_after
            + self.meta_delayed
    }
}

/// What a correct run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The plan.
    pub plan: Plan,
    /// Entries sent (attempts).
    pub sent: usize,
    /// Entries acknowledged.
    pub acked: usize,
    /// Entries read back (from the LogStores; the same after compaction).
    pub read: usize,
    /// Segments of the log at the end.
    pub segments: usize,
    /// Segments sealed (compacted) at the end.
    pub sealed: usize,
    /// Why the current writer was reopened, once per error that was not retriable seen
    /// while faults were on (every one legitimate in a correct run); a fenced writer's own
    /// errors are not counted.
    pub reopen_causes: Vec<ReopenCause>,
    /// `open_writer` calls that failed to fence (1107) under faults and were retried.
    pub fence_retries: usize,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Simulated time of the run.
    pub simulated: Duration,
    /// A digest of the run's path: the fault trace, the faults injected per call, the
    /// acknowledged and read ids, the segments, the reopens and the simulated time. Equal
    /// digests, same path.
    pub trace_digest: u64,
    /// The fault trace (timed faults, writer reopens and their errors).
    pub trace: Vec<String>,
}

/// A run that broke an invariant or could not run.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Invariants broken.
    #[error("seed {seed}: {} invariant violation(s): {}\n  reproduce: SIM_SEED={seed} cargo test -p woodpecker-sim --test seeds one_seed -- --nocapture", violations.len(), violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Violations {
        /// The seed.
        seed: u64,
        /// What broke.
        violations: Vec<Violation>,
    },
    /// An operation did not finish within its simulated-time bound.
    #[error(
        "seed {seed}: hang in {phase}\n  reproduce: SIM_SEED={seed} cargo test -p woodpecker-sim --test seeds one_seed -- --nocapture"
    )]
    Hang {
        /// The seed.
        seed: u64,
        /// Where.
        phase: String,
    },
    /// An error that should not have happened (after healing, or not retriable).
    #[error(
        "seed {seed}: error in {phase}: {error}\n  reproduce: SIM_SEED={seed} cargo test -p woodpecker-sim --test seeds one_seed -- --nocapture"
    )]
    Error {
        /// The seed.
        seed: u64,
        /// Where.
        phase: String,
        /// The error.
        error: String,
    },
}

impl Failure {
    /// The seed that failed.
    pub fn seed(&self) -> u64 {
        match self {
            Failure::Violations { seed, .. }
            | Failure::Hang { seed, .. }
            | Failure::Error { seed, .. } => *seed,
        }
    }
}

/// Runs `seed` on a fresh single-threaded runtime with paused time.
pub fn run_seed(seed: u64) -> Result<Report, Failure> {
    let plan = Plan::from_seed(seed);
    let slow_ops = Rc::new(Cell::new(0u64));
    let disk = slow_disk(&plan, slow_ops.clone());
    simulate(disk, run(plan, slow_ops)).map_err(|e| Failure::Error {
        seed,
        phase: "runtime".into(),
        error: e.to_string(),
    })?
}

/// Runs `work` as the simulation runs everything: on a fresh single-threaded runtime with
/// paused time, with blocking work (local files, the metadata store) done in place on that
/// one thread as `disk` says, so that its completion is scheduled with everything else (a
/// slow disk gives each operation a simulated duration drawn from the seed in the order the
/// operations come, which the deterministic path fixes).
pub fn simulate<F: std::future::Future>(disk: Inline, work: F) -> std::io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let _inline = inline_here(disk);
    Ok(rt.block_on(work))
}

/// How the run's file work is done: in place, slowed down as the plan's disk faults say.
fn slow_disk(plan: &Plan, slow_ops: Rc<Cell<u64>>) -> Inline {
    let (write, read) = (plan.disk.max_write_latency, plan.disk.max_read_latency);
    if write.is_zero() && read.is_zero() {
        return Inline::immediate();
    }
    let rng = RefCell::new(StdRng::seed_from_u64(crate::plan::mix(
        plan.seed,
        0x6469_736b,
        0,
    )));
    Inline::delayed(move |io| {
        let max = match io {
            Io::Write => write,
            Io::Read => read,
        };
        if max.is_zero() {
            return Duration::ZERO;
        }
        slow_ops.set(slow_ops.get() + 1);
        max.mul_f64(rng.borrow_mut().random_range(0.0..1.0))
    })
}

struct Ctx {
    seed: u64,
    history: Mutex<History>,
    fence_retries: AtomicU64,
}

impl Ctx {
    fn err(&self, phase: &str, e: impl std::fmt::Display) -> Failure {
        Failure::Error {
            seed: self.seed,
            phase: phase.into(),
            error: e.to_string(),
        }
    }

    fn hang(&self, phase: &str) -> Failure {
        Failure::Hang {
            seed: self.seed,
            phase: phase.into(),
        }
    }

    fn sent(&self, payload: &str) {
        self.lock().sent.insert(payload.to_string());
    }

    /// Records the permanent error that made the current writer reopen; the checker judges
    /// its cause.
    fn reopened(&self, writer: u8, e: &ClientError) {
        self.lock()
            .reopens
            .push((writer, ReopenCause::of(e), e.to_string()));
    }

    fn acked(&self, writer: u8, payload: String, id: LogMessageId) {
        self.lock().acks.push(Ack {
            writer,
            payload,
            id,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a write loop ended early.
enum Stop {
    /// A non-retriable error (the writer is done).
    Permanent(ClientError),
    /// The bound ran out.
    Hang,
}

/// Writes entries `from..to` as `writer`, each retried (as a new payload) on retriable
/// errors until [`WRITE_BOUND`].
async fn write_range(
    ctx: &Ctx,
    w: &LogWriter,
    writer: u8,
    from: usize,
    to: usize,
) -> Result<(), (usize, Stop)> {
    for i in from..to {
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            let payload = format!("w{writer}-{i}-{attempt}");
            ctx.sent(&payload);
            let left = WRITE_BOUND.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, w.write(WriteMessage::new(payload.clone()))).await {
                Ok(Ok(id)) => {
                    ctx.acked(writer, payload, id);
                    break;
                }
                Ok(Err(e)) if e.is_retriable() => {
                    if started.elapsed() >= WRITE_BOUND {
                        return Err((i, Stop::Hang));
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err((i, Stop::Permanent(e))),
                Err(_) => return Err((i, Stop::Hang)),
            }
        }
    }
    Ok(())
}

/// Opens a writer, retrying retriable errors until the bound. Under faults (`faults_on`), a
/// failed fence (1107) is retried as well: it is what `open_writer` answers while a majority
/// of the active segment's replicas cannot be reached, or when the older writer changed the
/// segment's metadata meanwhile, and it clears once they answer (see the README's findings).
async fn open_writer(
    ctx: &Ctx,
    log: &LogHandle,
    phase: &str,
    faults_on: bool,
) -> Result<LogWriter, Failure> {
    let started = tokio::time::Instant::now();
    loop {
        let left = WRITE_BOUND.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, log.open_writer()).await {
            Ok(Ok(w)) => return Ok(w),
            Ok(Err(e))
                if (e.is_retriable() || (faults_on && e.code() == code::FENCE_FAILED))
                    && started.elapsed() < WRITE_BOUND =>
            {
                if !e.is_retriable() {
                    ctx.fence_retries.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(ctx.err(phase, e)),
            Err(_) => return Err(ctx.hang(phase)),
        }
    }
}

/// The client settings of a run: short retry pauses, segments small enough to roll often.
fn settings(plan: &Plan) -> ClientSettings {
    ClientSettings {
        rolling: SegmentRollingPolicy {
            max_size: plan.segment_max_bytes,
            ..SegmentRollingPolicy::default()
        },
        replication: ReplicationSettings {
            retry_backoff: Duration::from_millis(20),
            max_retry_backoff: Duration::from_millis(200),
            ..ReplicationSettings::default()
        },
        roll_retry_interval: Duration::from_millis(100),
        read_poll_interval: Duration::from_millis(20),
        ..ClientSettings::default()
    }
}

/// Drives the timed faults; returns the restarts still pending when it is stopped.
fn spawn_fault_driver(
    net: Arc<SimNet>,
    plan: &Plan,
    pending: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) -> tokio::task::JoinHandle<()> {
    let faults = plan.faults.clone();
    let power_loss = plan.disk.power_loss;
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for t in faults {
            tokio::time::sleep_until(start + t.at).await;
            match t.fault {
                Fault::Partition { node, heal_after } => {
                    net.note(format!("{:?} partition node {node}", t.at));
                    net.partition(node);
                    let net = net.clone();
                    let heal = tokio::spawn(async move {
                        tokio::time::sleep(heal_after).await;
                        net.heal(node);
                    });
                    pending.lock().unwrap_or_else(|p| p.into_inner()).push(heal);
                }
                Fault::CrashRestart { node, down_for } => {
                    net.note(format!("{:?} crash node {node}", t.at));
                    let closing = net.crash(node, power_loss);
                    let net = net.clone();
                    let restart = tokio::spawn(async move {
                        tokio::time::sleep(down_for).await;
                        if let Err(e) = net.restart(node, closing).await {
                            net.note(format!("restart of node {node} failed: {e}"));
                        }
                    });
                    pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(restart);
                }
            }
        }
    })
}

/// Reads the whole log from the start until `last` was read. Retriable read errors are
/// retried (an application would) within the bound; anything else ends the read. Returns
/// what was read, and the failure that stopped it early, if any.
async fn read_all(
    ctx: &Ctx,
    log: &LogHandle,
    last: LogMessageId,
    phase: &str,
) -> (Vec<(LogMessageId, String)>, Option<Failure>) {
    let mut out = Vec::new();
    let mut reader =
        match tokio::time::timeout(READ_BOUND, log.open_reader(LogMessageId::EARLIEST, None)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return (out, Some(ctx.err(phase, e))),
            Err(_) => return (out, Some(ctx.hang(phase))),
        };
    loop {
        let started = tokio::time::Instant::now();
        let m = loop {
            let left = READ_BOUND.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, reader.read_next()).await {
                Ok(Ok(m)) => break m,
                Ok(Err(e)) if e.is_retriable() && started.elapsed() < READ_BOUND => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => {
                    let f = ctx.err(phase, format!("after {} entries: {e}", out.len()));
                    return (out, Some(f));
                }
                Err(_) => {
                    let f = ctx.hang(&format!(
                        "{phase} (after {} entries, waiting past {:?} for {last:?})",
                        out.len(),
                        out.last().map(|(id, _): &(LogMessageId, String)| *id)
                    ));
                    return (out, Some(f));
                }
            }
        };
        let id = m.id;
        out.push((id, String::from_utf8_lossy(&m.payload).into_owned()));
        if id >= last {
            break;
        }
    }
    let _ = reader.close().await;
    (out, None)
}

/// The violations among entries up to where a read that stopped early got: acknowledged
/// entries past the last one read are not judged.
fn check_partial(h: &History, read: &[(LogMessageId, String)]) -> Vec<Violation> {
    let Some((reached, _)) = read.last() else {
        return Vec::new();
    };
    let partial = History {
        acks: h
            .acks
            .iter()
            .filter(|a| a.id <= *reached)
            .cloned()
            .collect(),
        sent: h.sent.clone(),
        reads: read.to_vec(),
        reopens: h.reopens.clone(),
    };
    check(&partial)
}

/// A read that stopped early: the failure, with what the entries before the stop show.
fn stopped(ctx: &Ctx, read: &[(LogMessageId, String)], f: Failure) -> Failure {
    let violations = check_partial(&ctx.lock(), read);
    if violations.is_empty() {
        f
    } else {
        Failure::Violations {
            seed: ctx.seed,
            violations,
        }
    }
}

/// The run's directory (node data, the metadata store): in memory where the system has a
/// tmpfs at `/dev/shm`, since the simulation's file work runs in place on its one thread and
/// a real disk's syncs would only slow it down; else the usual temporary directory.
fn sim_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("wp-sim").tempdir_in(shm)
    {
        return Ok(dir);
    }
    tempfile::tempdir()
}

/// A simulated cluster and its client, as a plan sets them up (faults off until the
/// caller turns them on: the metadata store's with [`FaultyKv::set_on`], the timed ones by
/// driving [`SimNet`]; the per-call transport and object-store faults are on from the start).
#[derive(Debug)]
pub struct World {
    /// The simulated clock.
    pub sim: SimClock,
    /// The same clock, as the engine takes it.
    pub clock: ClockRef,
    /// Where the nodes' and the metadata store's files are (removed when dropped).
    pub dir: tempfile::TempDir,
    /// The object store, with the plan's faults.
    pub objects: FaultInjectingStore,
    /// The metadata store, with the plan's faults.
    pub meta: Arc<FaultyKv>,
    /// The LogStore nodes and the transport to them.
    pub net: Arc<SimNet>,
    /// The cluster the client selects quorums from (and reaches nodes through).
    pub cluster: Arc<SimCluster>,
    /// A client over the nodes.
    pub client: Client,
}

/// Sets up the plan's cluster, object store, metadata store and client. Must run on the
/// simulation's runtime (see [`run_seed`]).
pub async fn world(plan: &Plan) -> anyhow::Result<World> {
    let seed = plan.seed;
    let sim = SimClock::new(1_700_000_000_000);
    let clock: ClockRef = Arc::new(sim);
    let dir = sim_dir()?;
    let faulty = FaultInjectingStore::new(Arc::new(InMemory::new()), seed);
    let all_ops = [Op::Put, Op::Get, Op::Head, Op::List, Op::Delete, Op::Copy];
    if plan.objects.error_before > 0.0 {
        faulty.add_rule(FaultRule::fail(&all_ops).rate(plan.objects.error_before));
    }
    if plan.objects.error_after > 0.0 {
        faulty.add_rule(
            FaultRule::fail(&[Op::Put, Op::Delete, Op::Copy])
                .rate(plan.objects.error_after)
                .after_applying(),
        );
    }
    if !plan.objects.latency.is_zero() {
        faulty.add_rule(FaultRule::delay(&all_ops, plan.objects.latency));
    }
    let objects: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    let store: Arc<dyn Kv> =
        Arc::new(EmbeddedKv::open(dir.path().join("meta"), clock.clone()).await?);
    let faulty_meta = Arc::new(FaultyKv::new(store, seed, plan.meta));
    let kv: Arc<dyn Kv> = faulty_meta.clone();
    let meta = KvMetadata::with_prefix(kv, "sim/woodpecker", clock.clone());
    meta.init_if_necessary().await?;
    let meta: Arc<dyn MetadataProvider> = Arc::new(meta);
    let net = SimNet::start(
        seed,
        plan.nodes,
        dir.path(),
        objects,
        clock.clone(),
        plan.messages,
    )
    .await?;
    let cluster = Arc::new(SimCluster::new(net.clone(), plan.replicas));
    let client = Client::with_cluster(meta, cluster.clone(), settings(plan), clock.clone());
    Ok(World {
        sim,
        clock,
        dir,
        objects: faulty,
        meta: faulty_meta,
        net,
        cluster,
        client,
    })
}

async fn run(plan: Plan, slow_ops: Rc<Cell<u64>>) -> Result<Report, Failure> {
    let seed = plan.seed;
    let ctx = Ctx {
        seed,
        history: Mutex::new(History::default()),
        fence_retries: AtomicU64::new(0),
    };
    let World {
        sim,
        clock: _,
        dir: _dir,
        objects: faulty,
        meta: faulty_meta,
        net,
        cluster: _,
        client,
    } = world(&plan).await.map_err(|e| ctx.err("setup", e))?;
    client
        .create_log("sim")
        .await
        .map_err(|e| ctx.err("setup", e))?;
    let log = client
        .open_log("sim")
        .await
        .map_err(|e| ctx.err("setup", e))?;

    // 1. write, under faults.
    let pending = Arc::new(Mutex::new(Vec::new()));
    let driver = spawn_fault_driver(net.clone(), &plan, pending.clone());
    faulty_meta.set_on(true);
    let mut w0 = Arc::new(open_writer(&ctx, &log, "open writer 0", true).await?);
    let mut next = 0usize;
    while next < plan.fence_at {
        match write_range(&ctx, &w0, 0, next, plan.fence_at).await {
            Ok(()) => next = plan.fence_at,
            Err((_, Stop::Hang)) => return Err(ctx.hang("write phase, writer 0")),
            Err((i, Stop::Permanent(e))) => {
                net.note(format!("writer 0 reopened after: {e}"));
                ctx.reopened(0, &e);
                next = i + 1;
                w0 = Arc::new(open_writer(&ctx, &log, "reopen writer 0", true).await?);
            }
        }
    }
    // Writer 1 fences writer 0, which keeps trying concurrently.
    let ctx = Arc::new(ctx);
    let stale = {
        let ctx = ctx.clone();
        let (from, to) = (plan.fence_at, plan.fence_at + plan.stale_writes);
        let w0 = w0.clone();
        tokio::spawn(async move {
            // A fenced writer's errors are expected; a hang is not.
            match write_range(&ctx, &w0, 0, from, to).await {
                Err((_, Stop::Hang)) => Err(ctx.hang("stale writer 0")),
                _ => Ok(()),
            }
        })
    };
    let mut w1 = open_writer(&ctx, &log, "open writer 1", true).await?;
    let mut next = plan.fence_at;
    while next < plan.writes {
        match write_range(&ctx, &w1, 1, next, plan.writes).await {
            Ok(()) => next = plan.writes,
            Err((_, Stop::Hang)) => return Err(ctx.hang("write phase, writer 1")),
            Err((i, Stop::Permanent(e))) => {
                net.note(format!("writer 1 reopened after: {e}"));
                ctx.reopened(1, &e);
                next = i + 1;
                w1 = open_writer(&ctx, &log, "reopen writer 1", true).await?;
            }
        }
    }
    match stale.await {
        Ok(r) => r?,
        Err(e) => return Err(ctx.err("stale writer 0", e)),
    }

    // 2. heal.
    driver.abort();
    let _ = driver.await;
    let waiting: Vec<_> = std::mem::take(&mut *pending.lock().unwrap_or_else(|p| p.into_inner()));
    for h in waiting {
        let _ = h.await;
    }
    for i in 0..net.len() {
        net.heal(i);
        if !net.is_up(i) {
            net.restart(i, None).await.map_err(|e| ctx.err("heal", e))?;
        }
    }
    net.calm();
    faulty_meta.set_on(false);

    // 3. recover: a new writer fences and completes whatever is active; writes must now work.
    let w2 = open_writer(&ctx, &log, "open recovery writer", false).await?;
    match write_range(&ctx, &w2, 2, 0, 3).await {
        Ok(()) => {}
        Err((_, Stop::Hang)) => return Err(ctx.hang("recovery writes")),
        Err((_, Stop::Permanent(e))) => return Err(ctx.err("recovery writes", e)),
    }
    match tokio::time::timeout(WRITE_BOUND, w2.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ctx.err("close recovery writer", e)),
        Err(_) => return Err(ctx.hang("close recovery writer")),
    }
    drop(w0);
    drop(w1);
    let last = ctx
        .lock()
        .acks
        .last()
        .map(|a| a.id)
        .ok_or_else(|| ctx.err("recovery writes", "nothing acknowledged"))?;

    // 4. read from the LogStores.
    let (first_read, stop) = read_all(&ctx, &log, last, "read back").await;
    if let Some(f) = stop {
        return Err(stopped(&ctx, &first_read, f));
    }
    ctx.lock().reads = first_read.clone();
    let violations = check(&ctx.lock());
    if !violations.is_empty() {
        return Err(Failure::Violations { seed, violations });
    }

    // 5. compact into the object store, then read again.
    let auditor = log.auditor();
    let mut sealed = 0;
    let mut segments = 0;
    for pass in 0..COMPACTION_PASSES {
        match tokio::time::timeout(WRITE_BOUND, auditor.run_once()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.is_retriable() => {}
            Ok(Err(e)) => return Err(ctx.err(&format!("auditor pass {pass}"), e)),
            Err(_) => return Err(ctx.hang("auditor pass")),
        }
        let segs = log.segments().await.map_err(|e| ctx.err("segments", e))?;
        segments = segs.len();
        sealed = segs
            .values()
            .filter(|s| s.state == SegmentState::Sealed as i32)
            .count();
        if sealed == segments {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The log is read again even when a segment did not seal: what a reader gets from a
    // partly compacted log is part of the finding.
    let (second_read, stop) = read_all(&ctx, &log, last, "read back after compaction").await;
    if sealed < segments {
        let lost = match &stop {
            None => first_read
                .iter()
                .filter(|e| !second_read.contains(e))
                .map(|(id, p)| format!("{p} at {id:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            Some(e) => format!("(the second read failed: {e})"),
        };
        return Err(ctx.err(
            "compaction",
            format!(
                "{sealed} of {segments} segments sealed after {COMPACTION_PASSES} passes; \
                 entries read before compaction and not after: [{lost}]"
            ),
        ));
    }
    if let Some(f) = stop {
        return Err(stopped(&ctx, &second_read, f));
    }
    ctx.lock().reads = second_read.clone();
    let violations = check(&ctx.lock());
    if !violations.is_empty() {
        return Err(Failure::Violations { seed, violations });
    }
    if second_read != first_read {
        return Err(ctx.err(
            "read back after compaction",
            format!(
                "{} entries read after compaction, {} before, or in another order",
                second_read.len(),
                first_read.len()
            ),
        ));
    }

    let injected = faulty.stats();
    let h = ctx.lock();
    let c = &net.counts;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let faults = FaultCounts {
        partitions: load(&c.partitions),
        crashes: load(&c.crashes),
        lost_requests: load(&c.lost_requests),
        lost_replies: load(&c.lost_replies),
        delayed: load(&c.delayed),
        refused_down: load(&c.refused_down),
        partitioned_calls: load(&c.partitioned_calls),
        object_errors_before: injected.before,
        object_errors_after: injected.after,
        object_latency_runs: u64::from(!plan.objects.latency.is_zero()),
        power_losses: load(&c.hard_crashes),
        lost_unsynced_blocks: load(&c.lost_unsynced_blocks),
        torn_tails: load(&c.torn_tails),
        slow_disk_ops: slow_ops.get(),
        meta_errors_before: load(&faulty_meta.counts.errors_before),
        meta_errors_after: load(&faulty_meta.counts.errors_after),
        meta_delayed: load(&faulty_meta.counts.delayed),
    };
    let fence_retries = usize::try_from(ctx.fence_retries.load(Ordering::Relaxed)).unwrap_or(0);
    let simulated = Duration::from_millis(sim.elapsed_millis());
    // Everything the run did that the engine's path decides: equal digests, same path.
    let mut hasher = DefaultHasher::new();
    net.trace().hash(&mut hasher);
    for a in &h.acks {
        (a.writer, a.id.segment_id, a.id.entry_id, &a.payload).hash(&mut hasher);
    }
    for (id, payload) in &second_read {
        (id.segment_id, id.entry_id, payload).hash(&mut hasher);
    }
    format!("{:?}", faults.on_path()).hash(&mut hasher);
    (
        h.sent.len(),
        segments,
        sealed,
        h.reopens.len(),
        fence_retries,
        simulated,
    )
        .hash(&mut hasher);
    Ok(Report {
        sent: h.sent.len(),
        acked: h.acks.len(),
        read: second_read.len(),
        segments,
        sealed,
        reopen_causes: h.reopens.iter().map(|(_, cause, _)| *cause).collect(),
        fence_retries,
        faults,
        simulated,
        trace_digest: hasher.finish(),
        trace: net.trace(),
        plan,
    })
}
