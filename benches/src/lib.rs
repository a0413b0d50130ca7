//! Benchmarks and probes for woodpecker-rs.
//!
//! * [`ceilings`]: the backend ceilings probe (binary `ceilings`): raw local-disk and
//!   object-store figures of this machine, the baseline every other figure is reported against.
//! * [`kafka_shim`]: the Kafka shim benchmark (binary `kafka_shim`): Kafka's perf tools
//!   through `woodpecker serve` against the engine's native path, in the same run.
//! * [`milvus_wal`]: the Milvus WAL benchmark (binary `milvus_wal`): Milvus-shaped appends
//!   natively, through the Milvus WAL service and through the Kafka listener, in one run.
//! * [`compare`]: the side-by-side comparison (binary `compare`): this engine natively and
//!   through the Kafka shim against Apache Kafka, Apache Pulsar, Go Woodpecker and Tansu.
//! * [`service_cluster`]: the comparison's service-mode systems: three LogStore nodes (this
//!   engine's or Go Woodpecker's) on loopback and the clients that write through them.
//! * [`s3util`]: the probe's S3 settings and a raw client built by the storage layer.

// Benchmarks measure real time and pace real processes.
#![allow(clippy::disallowed_methods)]

pub mod args;
pub mod ceilings;
pub mod compare;
pub mod kafka_shim;
pub mod milvus_wal;
pub mod s3util;
mod serve;
pub mod service_cluster;
