//! What one observation costs: a counter add, a histogram observation, a stopwatch read and
//! the whole per-append bookkeeping of a writer (what `wal::client` does per entry).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry::Stopwatch;
use telemetry::catalog::ClientLogMetrics;
use telemetry::metrics::{Counter, Histogram, Layout};

fn instruments(c: &mut Criterion) {
    static COUNTER: Counter = Counter::new();
    static HIST: Histogram = Histogram::new(&Layout::MILLIS);
    c.bench_function("counter_inc", |b| b.iter(|| COUNTER.inc()));
    let mut v = 1u64;
    c.bench_function("histogram_observe", |b| {
        b.iter(|| {
            // Spread over the buckets so that the branch predictor cannot learn one value.
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            HIST.observe(black_box(v >> 34));
        })
    });
    c.bench_function("stopwatch_start_elapsed", |b| {
        b.iter(|| black_box(Stopwatch::start()).elapsed_nanos())
    });
    let log = ClientLogMetrics::for_log(1);
    c.bench_function("append_bookkeeping", |b| {
        b.iter(|| {
            let t = Stopwatch::start();
            log.append_requests.inc();
            log.append_bytes.observe(black_box(1024));
            log.append_latency.observe(t.elapsed_nanos());
        })
    });
    let _ = Duration::ZERO;
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = instruments
}
criterion_main!(benches);
