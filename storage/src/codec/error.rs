//! Why a decoder refused its input.

use std::fmt;

use super::record::RecordType;

/// A decoder rejected its input. Every variant is about the bytes, never about IO.
///
/// [`CodecError::is_truncation`] separates "the bytes end too early" (a torn tail, or a read
/// that was too short) from "the bytes are there and wrong" (corruption or a foreign format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ends before the record or block does.
    #[error("truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the record or block needs, counted from its start.
        needed: u64,
        /// Bytes that were there.
        available: usize,
    },

    /// The record's CRC-32 does not match its type, length and payload.
    #[error("record crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    RecordCrc {
        /// CRC in the record header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },

    /// The type byte is none of the five record types.
    #[error("unknown record type {0}")]
    UnknownType(u8),

    /// A fixed-size record carries a payload of another size.
    #[error("{kind} record payload is {actual} bytes, expected {}", .kind.payload_len_desc())]
    PayloadLength {
        /// The record type.
        kind: RecordType,
        /// The payload length in the record header.
        actual: u32,
    },

    /// A header or footer record without its magic.
    #[error("{kind} record has bad magic {found:02x?}")]
    BadMagic {
        /// The record type.
        kind: RecordType,
        /// The four bytes found where the magic belongs.
        found: [u8; 4],
    },

    /// A header or footer record of a format version this codec does not read (only 5 and 6).
    #[error("unsupported format version {version} in {kind} record")]
    UnsupportedVersion {
        /// The record type.
        kind: RecordType,
        /// The version found.
        version: u16,
    },

    /// A footer whose version field disagrees with its payload size (v5 is 36 bytes, v6 is 44).
    #[error("footer version {version} does not match its {payload_len}-byte payload")]
    FooterVersionMismatch {
        /// The version field.
        version: u16,
        /// The payload length.
        payload_len: u32,
    },

    /// A valid record of the wrong type for its place.
    #[error("expected a {expected} record, found a {found} record")]
    UnexpectedRecord {
        /// What the layout requires here.
        expected: RecordType,
        /// What is there.
        found: RecordType,
    },

    /// The data region of a block is not as long as its block header says.
    #[error("block data region is {actual} bytes, block header says {declared}")]
    BlockLength {
        /// `blockLength` in the block header.
        declared: u32,
        /// Bytes given as the data region.
        actual: usize,
    },

    /// The CRC-32 of a block's data region does not match its block header.
    #[error("block crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BlockCrc {
        /// `blockCrc` in the block header.
        stored: u32,
        /// CRC of the data region.
        computed: u32,
    },

    /// The data region of a block does not hold `lastEntryId - firstEntryId + 1` entries.
    #[error("block declares entries {first}..={last} but holds {actual} data records")]
    EntryCount {
        /// `firstEntryId` in the block header.
        first: i64,
        /// `lastEntryId` in the block header.
        last: i64,
        /// Data records found in the region.
        actual: usize,
    },

    /// A record inside a block's data region (whose block CRC matched) is malformed.
    #[error("entry {index} of the block: {source}")]
    BadEntry {
        /// Position of the record in the data region, from 0.
        index: usize,
        /// What is wrong with it.
        source: Box<CodecError>,
    },

    /// Bytes follow a block that was expected to fill its buffer.
    #[error("{extra} bytes after the end of the block")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },

    /// Neither a v6 nor a v5 footer record ends the given tail.
    #[error("no footer record at the tail (as v6: {v6}; as v5: {v5})")]
    NoFooter {
        /// Why the 53-byte probe failed.
        v6: Box<CodecError>,
        /// Why the 45-byte probe failed.
        v5: Box<CodecError>,
    },
}

impl CodecError {
    /// Whether the input merely ended too early: more bytes could make it decode. Everything
    /// else is wrong bytes that no amount of waiting repairs.
    pub fn is_truncation(&self) -> bool {
        matches!(self, CodecError::Truncated { .. })
    }

    /// Turns this into the crate's [`Error::Corrupt`](crate::Error::Corrupt), naming where
    /// the bytes came from (for example `"log 3 segment 7 block 2"`).
    pub fn at(self, location: impl fmt::Display) -> crate::Error {
        crate::Error::corrupt(location, self)
    }
}
