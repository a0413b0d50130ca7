//! The Kafka wire formats the front door reads from clients, with no IO and no knowledge of
//! the engine: what a fuzzer can drive and a reviewer can check against Kafka's definitions.
//!
//! * [`codec`]: request frames to typed requests, with every count and length bounded by
//!   the frame before anything is allocated for it.
//! * [`batch`]: record batches (magic 2): framing, CRC-32C, the header fields, and a
//!   streaming record walk through every compression codec.

pub mod batch;
pub mod codec;
