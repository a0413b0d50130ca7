//! `sim-soak SECONDS [FIRST_SEED]`: runs simulation seeds one after the other until the time
//! is up, then prints the runs, the faults injected per kind and the lost entries (0 unless
//! a seed failed; a failing seed is printed with its reproduction command and the soak
//! exits non-zero).

// The soak runs seeds for a wall-clock budget, in real time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use sim::run::FaultCounts;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: sim-soak SECONDS [FIRST_SEED]"))?
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
    let mut simulated = Duration::ZERO;
    let mut faults = FaultCounts::default();
    let mut failed = Vec::new();
    let (mut violated, mut lost, mut hangs, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut seed = first;
    while Instant::now() < deadline {
        match sim::run_seed(seed) {
            Ok(r) => {
                acked += r.acked as u64;
                sealed += r.sealed as u64;
                reopens += r.writer_reopens as u64;
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
    println!("lost acknowledged entries: {lost}");
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("failing seeds: {failed:?}")
    }
}
