//! The Woodpecker record and block format (spec §5.1), byte for byte the Go project's v5 and
//! v6 formats. Pure functions over byte buffers: no IO, no async, no clock.
//!
//! # Records
//!
//! Every record is framed as `[crc32 u32][type u8][len u32][payload; len]`, little-endian,
//! where the CRC-32/IEEE (zlib's) covers type, len and payload:
//!
//! | type | record | payload | record bytes |
//! |---|---|---|---|
//! | 1 | [`HeaderRecord`] | `version u16`, `flags u16`, `first_entry_id i64`, magic `HDR\x01` | 25 |
//! | 2 | data | an entry's raw bytes | 9 + n |
//! | 3 | [`IndexRecord`] | `block_number i32`, `start_offset i64`, `block_size u32`, `first_entry_id i64`, `last_entry_id i64` | 41 |
//! | 4 | [`FooterRecord`] | `total_blocks i32`, `total_records u32`, `total_size u64`, `index_offset u64`, `index_length u32`, `version u16`, `flags u16`, magic `FTR\x01`, and in v6 only `lac i64` | 45 (v5) / 53 (v6) |
//! | 5 | [`BlockHeaderRecord`] | `block_number i32`, `first_entry_id i64`, `last_entry_id i64`, `block_length u32`, `block_crc u32` | 37 |
//!
//! # Blocks
//!
//! A block is a block header record followed by its data records. `block_length` counts the
//! data records region (their 9-byte headers included, the block header excluded) and
//! `block_crc` is the CRC-32 of that region. Entry ids are implicit: the i-th data record has
//! id `first_entry_id + i`, so a block holds exactly `last_entry_id - first_entry_id + 1`
//! records. Only the first block of a segment is preceded by the segment's header record.
//!
//! # Invariants the decoders keep
//!
//! * They never panic and never allocate from a length they have not checked against the bytes
//!   actually present; a capacity is capped by what the buffer can hold.
//! * A decoded block's entries are returned only after `block_length`, `block_crc`, every data
//!   record's CRC and the entry count were verified: a damaged block yields an error, never
//!   wrong entries.
//! * The strict decoders ([`decode_record`], [`decode_block`], [`footer_from_tail`]) accept
//!   format versions 5 and 6 only, and a footer only when its size matches its version, so
//!   re-encoding anything they accept gives the same bytes.
//! * The prefix decoders ([`decode_record_list`], [`BlockScanner`], [`scan_blocks`]) stop
//!   silently at the first truncated or invalid record and return the valid prefix: that is
//!   how torn tails are cut off.
//! * Data payloads are zero-copy [`Bytes`](bytes::Bytes) slices of the input.
//!
//! Errors are [`CodecError`]; [`CodecError::at`] turns one into the crate's
//! [`Error::Corrupt`](crate::Error::Corrupt) naming where the bytes came from.

mod block;
mod error;
mod record;
mod scan;

pub use block::{DecodedBlock, decode_block, decode_block_data, decode_block_prefix, encode_block};
pub use error::CodecError;
pub use record::{
    BLOCK_HEADER_PAYLOAD_LEN, BLOCK_HEADER_RECORD_LEN, BlockHeaderRecord, FOOTER_FLAG_COMPACTED,
    FOOTER_MAGIC, FOOTER_V5_PAYLOAD_LEN, FOOTER_V5_RECORD_LEN, FOOTER_V6_PAYLOAD_LEN,
    FOOTER_V6_RECORD_LEN, FORMAT_V5, FORMAT_V6, FooterRecord, FrameHeader, HEADER_MAGIC,
    HEADER_PAYLOAD_LEN, HEADER_RECORD_LEN, HeaderRecord, INDEX_PAYLOAD_LEN, INDEX_RECORD_LEN,
    IndexRecord, RECORD_HEADER_LEN, Record, RecordType, decode_record, decode_record_list,
    encode_data_record, entry_id, footer_from_tail,
};
pub use scan::{BlockScanner, ScanReport, ScanStop, ScannedBlock, scan_blocks};
