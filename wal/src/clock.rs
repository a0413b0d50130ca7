//! Time, behind a trait so tests can run timeouts, leases and retention in milliseconds.
//!
//! The clock lives in its own crate (`woodpecker-clock`) so that `storage` below the engine
//! uses the same seam; this module re-exports it under the engine's name.

pub use ::clock::{Clock, ClockRef, ManualClock, SystemClock, testing};
