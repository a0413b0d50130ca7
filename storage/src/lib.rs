//! Everything that touches bytes at rest.
//!
//! * [`codec`]: the Woodpecker record and block format (spec section 5.1), byte-compatible with
//!   the Go project's v5 and v6 formats.
//! * [`object`]: object stores (S3 and S3-compatible, GCS, Azure, local files, memory) behind
//!   `Arc<dyn ObjectStore>`, with conditional create, fence objects, the condition-write
//!   capability probe and decorators for retries, fault injection and counters.
//! * [`redact`]: credentials out of error texts (URL query strings, user info, secrets).
//! * [`segment`]: the layouts of one segment, as objects (`N.blk`, `footer.blk`, `m_N.blk`) and
//!   as a local `data.log` file.
//!
//! This crate knows nothing of logs, clients or metadata: it stores and reads blocks.

pub mod codec;
pub mod config;
pub mod error;
pub mod object;
pub mod redact;
pub mod segment;

pub use error::{Error, Result};
