//! Time, behind a trait so tests can run timeouts, leases and retention in milliseconds, and
//! where blocking work runs ([`blocking`]: tokio's blocking pool, or in place on a
//! simulation's one thread).
//!
//! The clock lives in its own crate (`woodpecker-clock`) so that `storage` below the engine
//! uses the same seams; this module re-exports it under the engine's name.

pub use ::clock::{Clock, ClockRef, ManualClock, SystemClock, blocking, testing};
