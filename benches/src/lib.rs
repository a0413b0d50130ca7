//! Benchmarks and probes for woodpecker-rs.
//!
//! * [`ceilings`]: the backend ceilings probe (binary `ceilings`): raw local-disk and
//!   object-store figures of this machine, the baseline every other figure is reported against.
//! * [`s3util`]: the probe's S3 settings and a raw client built by the storage layer.

pub mod ceilings;
pub mod s3util;
