//! The layouts of one segment at rest.
//!
//! * [`object`]: the object-store layout (`N.blk`, fence object, `footer.blk`, `m_N.blk`,
//!   `write.lock`) with a writer, a compactor and the probing reader of spec section 5.2.
//! * [`local`]: the single append-only `data.log` file of local mode (spec section 5.3), with
//!   fsync per block and recovery by scanning.
//!
//! Both encode blocks with [`crate::codec`] and verify every block before returning entries.

pub mod journal;
pub mod local;
pub mod object;
