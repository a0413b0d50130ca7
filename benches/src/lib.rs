//! Benchmarks and probes for woodpecker-rs.
//!
//! * [`ceilings`]: the backend ceilings probe (binary `ceilings`): raw local-disk and
//!   object-store figures of this machine, the baseline every other figure is reported against.
//! * [`kafka_shim`]: the Kafka shim benchmark (binary `kafka_shim`): Kafka's perf tools
//!   through `woodpecker serve` against the engine's native path, in the same run.
//! * [`s3util`]: the probe's S3 settings and a raw client built by the storage layer.

pub mod ceilings;
pub mod kafka_shim;
pub mod s3util;
