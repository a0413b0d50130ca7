//! What every woodpecker-rs crate shares to be observed: metrics and trace context.
//!
//! * [`metrics`]: counters, gauges and histograms built for hot paths (an observation is one
//!   or two relaxed atomic adds: no lock, no allocation), label sets resolved once into a
//!   `&'static` handle, and the Prometheus text exposition.
//! * [`catalog`]: the engine's metrics, under Go Woodpecker's names and labels where this
//!   engine measures the same thing, so that dashboards written for Go Woodpecker work here.
//! * [`trace`]: the span target and names, whether an OpenTelemetry exporter is installed, and
//!   trace context carried in gRPC metadata ([`trace::grpc`]).
//! * [`Stopwatch`]: the monotonic clock that measurements read.
//!
//! This crate never decides behaviour and never installs anything global except what the
//! binary asks for ([`trace::set_exporting`]); the OpenTelemetry SDK and exporter live in the
//! binary. Latencies are measured on the monotonic clock, not on the engine's injected
//! `wal::clock`: a test's manual clock must not make real work look instantaneous, and a
//! measurement never changes what the engine does.

pub mod catalog;
pub mod metrics;
pub mod trace;

use std::time::{Duration, Instant};

/// Elapsed time on the monotonic clock: the one place measurements read it.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// A stopwatch started now.
    #[inline]
    pub fn start() -> Self {
        // Measurements read real time on purpose (see the module docs); engine decisions
        // never do.
        #[allow(clippy::disallowed_methods)]
        Stopwatch(Instant::now())
    }

    /// Time since the start.
    #[inline]
    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    /// Nanoseconds since the start (saturating).
    #[inline]
    pub fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
