//! `sim-soak SECONDS [FIRST_SEED] [--twice]`: runs simulation seeds one after the other until
//! the time is up, then prints the runs, the faults injected per kind and the lost entries (0
//! unless a seed failed; a failing seed is printed with its reproduction command and the soak
//! exits non-zero). With `--twice` every seed runs a second time and must take the same path
//! (the same [`sim::Report::trace_digest`]); a seed whose paths differ fails the soak too.

// The soak runs seeds for a wall-clock budget, in real time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use sim::check::ReopenCause;
use sim::run::FaultCounts;

/// Real time after which a seed still running is reported: a run takes well under a second
/// of real time, so one that takes this long spins without moving simulated time.
const SLOW: Duration = Duration::from_secs(60);

/// Starts a thread that reports, on standard error, a seed running for longer than [`SLOW`];
/// the soak stores the seed it starts in the returned cell.
fn watchdog() -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let current = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let watched = current.clone();
    std::thread::spawn(move || {
        let (mut seen, mut since, mut reported) = (u64::MAX, Instant::now(), false);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = watched.load(Ordering::Relaxed);
            if now != seen {
                (seen, since, reported) = (now, Instant::now(), false);
            } else if !reported && since.elapsed() > SLOW {
                eprintln!(
                    "SLOW seed {seen}: still running after {} s of real time",
                    SLOW.as_secs()
                );
                reported = true;
            }
        }
    });
    current
}

fn main() -> anyhow::Result<()> {
    let (flags, positional): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let twice = match flags.as_slice() {
        [] => false,
        [f] if f == "--twice" => true,
        _ => anyhow::bail!("usage: sim-soak SECONDS [FIRST_SEED] [--twice]"),
    };
    let mut args = positional.into_iter();
    let secs: u64 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: sim-soak SECONDS [FIRST_SEED] [--twice]"))?
        .parse()?;
    let first: u64 = match args.next() {
        Some(s) => s.parse()?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    let mut acked = 0u64;
    let mut sealed = 0u64;
    let mut reopens = 0u64;
    // Per cause: how many, and the seeds of the first few.
    let mut reopen_causes = std::collections::BTreeMap::<ReopenCause, (u64, Vec<u64>)>::new();
    let mut simulated = Duration::ZERO;
    let mut faults = FaultCounts::default();
    let mut failed = Vec::new();
    let (mut violated, mut lost, mut hangs, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut diverged = Vec::new();
    let mut seed = first;
    let current = watchdog();
    while Instant::now() < deadline {
        current.store(seed, std::sync::atomic::Ordering::Relaxed);
        match sim::run_seed(seed) {
            Ok(r) => {
                if twice {
                    match sim::run_seed(seed) {
                        Ok(again) if again.trace_digest == r.trace_digest => {}
                        Ok(_) => {
                            eprintln!("DIVERGED seed {seed}: a second run took another path");
                            diverged.push(seed);
                        }
                        Err(e) => {
                            eprintln!("DIVERGED seed {seed}: a second run failed: {e}");
                            diverged.push(seed);
                        }
                    }
                }
                acked += r.acked as u64;
                sealed += r.sealed as u64;
                reopens += r.reopen_causes.len() as u64;
                for cause in &r.reopen_causes {
                    let (n, seeds) = reopen_causes.entry(*cause).or_default();
                    *n += 1;
                    if seeds.len() < 5 && !seeds.contains(&seed) {
                        seeds.push(seed);
                    }
                }
                simulated += r.simulated;
                faults.add(&r.faults);
            }
            Err(e) => {
                eprintln!("FAILED {e}");
                match &e {
                    sim::Failure::Violations { violations, .. } => {
                        violated += 1;
                        lost += violations
                            .iter()
                            .filter(|v| matches!(v, sim::check::Violation::Lost { .. }))
                            .count() as u64;
                    }
                    sim::Failure::Hang { .. } => hangs += 1,
                    sim::Failure::Error { .. } => errors += 1,
                }
                failed.push(seed);
            }
        }
        runs += 1;
        seed = seed.wrapping_add(1);
    }
    println!(
        "seeds {first}..{seed}: {runs} runs, {} failed",
        failed.len()
    );
    println!(
        "failed runs: {violated} broke an invariant of the history, {hangs} hung, {errors} \
         ended in an error (a failed run's history is checked up to where its read stopped)"
    );
    println!("acknowledged entries checked: {acked}; segments sealed and re-read: {sealed}");
    println!("simulated time: {} s", simulated.as_secs());
    println!("writer reopens after a non-retriable error under faults: {reopens}");
    for (cause, (n, seeds)) in &reopen_causes {
        println!("  {cause}: {n} (seeds {seeds:?})");
    }
    println!("faults injected ({} in all):", faults.total());
    println!("  node partitions       {}", faults.partitions);
    println!("  calls into partitions {}", faults.partitioned_calls);
    println!("  node crash-restarts   {}", faults.crashes);
    println!("  calls to a down node  {}", faults.refused_down);
    println!("  requests lost         {}", faults.lost_requests);
    println!("  replies lost          {}", faults.lost_replies);
    println!("  requests delayed      {}", faults.delayed);
    println!("  object errors before  {}", faults.object_errors_before);
    println!("  object errors after   {}", faults.object_errors_after);
    println!("  runs with object latency {}", faults.object_latency_runs);
    println!("  power losses (of the crashes) {}", faults.power_losses);
    println!("  unsynced blocks lost  {}", faults.lost_unsynced_blocks);
    println!("  torn writes           {}", faults.torn_tails);
    println!("  slow disk operations  {}", faults.slow_disk_ops);
    println!("  metadata errors before {}", faults.meta_errors_before);
    println!("  metadata errors after {}", faults.meta_errors_after);
    println!("  metadata calls delayed {}", faults.meta_delayed);
    println!("lost acknowledged entries: {lost}");
    if twice {
        println!(
            "second runs that took another path: {} of {}",
            diverged.len(),
            runs - failed.len() as u64
        );
    }
    if !failed.is_empty() {
        anyhow::bail!("failing seeds: {failed:?}")
    }
    if !diverged.is_empty() {
        anyhow::bail!("seeds whose second run took another path: {diverged:?}")
    }
    Ok(())
}
