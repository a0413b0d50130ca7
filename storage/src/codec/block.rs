//! Blocks: a block header record followed by the data records it describes.

use bytes::Bytes;

use super::error::CodecError;
use super::record::{
    BLOCK_HEADER_RECORD_LEN, BlockHeaderRecord, FrameHeader, HEADER_RECORD_LEN, HeaderRecord,
    RECORD_HEADER_LEN, RecordType, RegionCrc, check_frame, put_record,
};

/// A block whose lengths, CRCs and entry count were all verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBlock {
    /// The segment header record, present only before the first block of a segment.
    pub header: Option<HeaderRecord>,
    /// The block header record.
    pub block_header: BlockHeaderRecord,
    /// Entry payloads in id order, zero-copy slices of the decoded buffer.
    pub entries: Vec<Bytes>,
}

impl DecodedBlock {
    /// Entries with their ids (`first_entry_id + i`).
    pub fn entries_with_ids(&self) -> impl Iterator<Item = (i64, &Bytes)> + '_ {
        let first = self.block_header.first_entry_id;
        // Verified on decode: `first + len - 1 == last`, so no id overflows.
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, e)| (first.wrapping_add(i as i64), e))
    }
}

/// Appends one block to `out`: `header` (the segment header record, for the first block of a
/// segment only), the block header record, then one data record per entry. Returns the block
/// header written. `out` grows once, by exactly the block's size.
///
/// With no entries the block is empty: `block_length = 0` and `last_entry_id =
/// first_entry_id - 1`.
///
/// # Panics
///
/// If the data region would reach 4 GiB, or the last entry id would overflow `i64`.
pub fn encode_block<E: AsRef<[u8]>>(
    header: Option<&HeaderRecord>,
    block_number: i32,
    first_entry_id: i64,
    entries: &[E],
    out: &mut Vec<u8>,
) -> BlockHeaderRecord {
    let data_len: usize = entries
        .iter()
        .map(|e| RECORD_HEADER_LEN + e.as_ref().len())
        .sum();
    let block_length =
        u32::try_from(data_len).expect("block data region must be shorter than 4 GiB");
    let last_entry_id = i64::try_from(entries.len())
        .ok()
        .and_then(|n| first_entry_id.checked_add(n))
        .and_then(|next| next.checked_sub(1))
        .expect("last entry id must fit in i64");

    out.reserve(header.map_or(0, |_| HEADER_RECORD_LEN) + BLOCK_HEADER_RECORD_LEN + data_len);
    if let Some(h) = header {
        h.encode(out);
    }
    // The block header carries the region's CRC, so it is written last into a reserved slot.
    let header_at = out.len();
    out.resize(header_at + BLOCK_HEADER_RECORD_LEN, 0);
    let data_at = out.len();
    let mut region = RegionCrc::new(data_at);
    for entry in entries {
        let at = out.len();
        let crc = put_record(out, RecordType::Data, entry.as_ref());
        region.push(out, at..out.len(), crc);
    }
    let block_header = BlockHeaderRecord {
        block_number,
        first_entry_id,
        last_entry_id,
        block_length,
        block_crc: region.finalize(out, out.len()),
    };
    let mut framed = Vec::with_capacity(BLOCK_HEADER_RECORD_LEN);
    block_header.encode(&mut framed);
    out[header_at..data_at].copy_from_slice(&framed);
    block_header
}

/// Decodes a buffer that holds exactly one block (an `N.blk` or `m_N.blk` object), optionally
/// preceded by the segment header record. Bytes after the block are an error.
pub fn decode_block(buf: &Bytes) -> Result<DecodedBlock, CodecError> {
    let (block, len) = decode_block_prefix(buf)?;
    if len != buf.len() {
        return Err(CodecError::TrailingBytes {
            extra: buf.len() - len,
        });
    }
    Ok(block)
}

/// Decodes the block at the start of `buf` (optionally preceded by the segment header record)
/// and returns it with the bytes it took; what follows is not looked at.
///
/// Entries are returned only once `block_length`, `block_crc`, every data record's own CRC and
/// the entry count (`last_entry_id - first_entry_id + 1`) all check out. An error never comes
/// with partial entries.
pub fn decode_block_prefix(buf: &Bytes) -> Result<(DecodedBlock, usize), CodecError> {
    let mut pos = 0;
    let header = match FrameHeader::parse(buf)?.record_type {
        t if t == RecordType::Header.as_u8() => {
            let (h, len) = HeaderRecord::decode(buf)?;
            pos = len;
            Some(h)
        }
        _ => None,
    };
    let (block_header, len) = BlockHeaderRecord::decode(&buf[pos..])?;
    pos += len;
    let data_end = pos as u64 + u64::from(block_header.block_length);
    if data_end > buf.len() as u64 {
        return Err(CodecError::Truncated {
            needed: data_end,
            available: buf.len(),
        });
    }
    // Fits: bounded by buf.len().
    let data_end = data_end as usize;
    let entries = decode_block_data(&block_header, &buf.slice(pos..data_end))?;
    Ok((
        DecodedBlock {
            header,
            block_header,
            entries,
        },
        data_end,
    ))
}

/// Verifies and splits the data region of a block: `data` must be exactly `block_length`
/// bytes with CRC `block_crc`, and hold exactly `last - first + 1` data records with valid
/// CRCs. Entries are zero-copy slices of `data`. Damage anywhere in the region is reported as
/// [`CodecError::BlockCrc`]; [`CodecError::BadEntry`] means the region is as its writer made
/// it but malformed.
pub fn decode_block_data(
    block_header: &BlockHeaderRecord,
    data: &Bytes,
) -> Result<Vec<Bytes>, CodecError> {
    if data.len() as u64 != u64::from(block_header.block_length) {
        return Err(CodecError::BlockLength {
            declared: block_header.block_length,
            actual: data.len(),
        });
    }
    let declared = block_header.entry_count();
    // Every data record takes at least 9 bytes: the declared count must not size an allocation
    // beyond what the region can hold.
    let max_records = data.len() / RECORD_HEADER_LEN;
    let capacity = declared.map_or(0, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(max_records)
    });
    let mut entries = Vec::with_capacity(capacity);
    // One pass: each record's CRC is verified and folded into the region's CRC. Nothing is
    // returned before both match, and a damaged region is reported as a block CRC mismatch
    // whichever check notices it first.
    let block_crc_error = |computed| CodecError::BlockCrc {
        stored: block_header.block_crc,
        computed,
    };
    let mut region = RegionCrc::new(0);
    let mut pos = 0;
    while pos < data.len() {
        let bad = |index, source| {
            let computed = crc32fast::hash(data);
            if computed != block_header.block_crc {
                block_crc_error(computed)
            } else {
                CodecError::BadEntry {
                    index,
                    source: Box::new(source),
                }
            }
        };
        let (kind, range) = check_frame(&data[pos..]).map_err(|e| bad(entries.len(), e))?;
        if kind != RecordType::Data {
            return Err(bad(
                entries.len(),
                CodecError::UnexpectedRecord {
                    expected: RecordType::Data,
                    found: kind,
                },
            ));
        }
        let crc = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        region.push(data, pos..pos + range.end, crc);
        entries.push(data.slice(pos + range.start..pos + range.end));
        pos += range.end;
    }
    let computed = region.finalize(data, data.len());
    if computed != block_header.block_crc {
        return Err(block_crc_error(computed));
    }
    if declared != Some(entries.len() as u64) {
        return Err(CodecError::EntryCount {
            first: block_header.first_entry_id,
            last: block_header.last_entry_id,
            actual: entries.len(),
        });
    }
    Ok(entries)
}
