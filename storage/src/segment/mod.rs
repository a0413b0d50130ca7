//! The layouts of one segment at rest.
//!
//! * [`object`]: the object-store layout (`N.blk`, fence object, `footer.blk`, `m_N.blk`,
//!   `write.lock`) with a writer, a compactor and the probing reader of spec section 5.2.
//! * [`local`]: the single append-only `data.log` file of local mode (spec section 5.3), with
//!   fsync per block and recovery by scanning.
//!
//! Both encode blocks with [`crate::codec`] and verify every block before returning entries;
//! a block that does not verify is described by a [`DamagedBlock`].

mod disk;
pub mod journal;
pub mod local;
pub mod object;

use std::fmt;

use crate::Error;

/// A block of a segment that does not verify: in a `data.log`, a block whose data fails its
/// CRC or a stretch (a damaged block header, say) between the blocks around it; in object
/// storage, a block object that does not decode. Where the block's own header cannot say,
/// its number and entries are those the blocks around it leave for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedBlock {
    /// Its block number: from its own header when that is intact, else the next number after
    /// the block before it.
    pub block_number: i32,
    /// How many blocks the stretch stood for, by the numbers of the blocks around it (1 when
    /// its header is intact).
    pub block_count: i32,
    /// Byte offset in `data.log` where it starts (a block boundary; 0 for an object).
    pub offset: u64,
    /// Its bytes, up to where the next block starts (the object's size for an object).
    pub len: u64,
    /// First entry it held: from its header, else the one after the block before it.
    pub first_entry_id: i64,
    /// Last entry it held: from its header, else the one before the block after it
    /// (`first_entry_id - 1` when it held none; `i64::MAX` when no block follows to say).
    pub last_entry_id: i64,
    /// The object's key, for a block of an object segment.
    pub object: Option<String>,
    /// What check failed.
    pub detail: String,
}

impl DamagedBlock {
    /// The entries it held (none when `last_entry_id < first_entry_id`).
    pub fn entry_count(&self) -> u64 {
        u64::try_from(i128::from(self.last_entry_id) - i128::from(self.first_entry_id) + 1)
            .unwrap_or(0)
    }

    /// Whether the entries it held are known (a block follows it, or its header says).
    pub fn end_known(&self) -> bool {
        self.last_entry_id != i64::MAX
    }

    /// Where it is, for messages: `block 3 at offset 4096 (2100 bytes)`, or `block 3
    /// (<key>)` for an object.
    pub fn position(&self) -> String {
        let blocks = if self.block_count > 1 {
            format!(
                "blocks {}..={}",
                self.block_number,
                self.block_number.saturating_add(self.block_count - 1)
            )
        } else {
            format!("block {}", self.block_number)
        };
        match &self.object {
            Some(key) => format!("{blocks} ({key}, {} bytes)", self.len),
            None => format!("{blocks} at offset {} ({} bytes)", self.offset, self.len),
        }
    }

    /// What is lost, for messages: `entries 100..=199 (100) cannot be read; the segment goes
    /// on at entry 200`.
    pub fn lost(&self) -> String {
        if !self.end_known() {
            return format!(
                "entries from {} on cannot be read (no later block says where they end)",
                self.first_entry_id
            );
        }
        if self.entry_count() == 0 {
            return format!(
                "it holds no entry; the segment goes on at entry {}",
                self.first_entry_id
            );
        }
        format!(
            "entries {}..={} ({}) cannot be read; the segment goes on at entry {}",
            self.first_entry_id,
            self.last_entry_id,
            self.entry_count(),
            self.last_entry_id.saturating_add(1)
        )
    }

    /// The [`Error::Corrupt`] a read of it gives: `location` (the file or segment) with the
    /// block and offset, what is wrong and which entries are lost.
    pub fn error(&self, location: impl fmt::Display) -> Error {
        Error::corrupt(
            format!("{location} {}", self.position()),
            format!("{}; {}", self.detail, self.lost()),
        )
    }
}
