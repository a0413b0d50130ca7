//! Sequential scan of a `data.log` image: the valid prefix of blocks, and why it ends.

use bytes::Bytes;

use super::block::decode_block_data;
use super::error::CodecError;
use super::record::{
    BLOCK_HEADER_RECORD_LEN, BlockHeaderRecord, HeaderRecord, Record, RecordType, decode_record_at,
};

/// One complete block whose lengths, CRCs and entry count were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedBlock {
    /// Offset of the block header record in the image.
    pub offset: usize,
    /// Bytes of the block: 37 plus `block_length`.
    pub len: usize,
    /// The block header record.
    pub block_header: BlockHeaderRecord,
    /// Entry payloads, zero-copy slices of the image; the i-th has id `first_entry_id + i`.
    pub entries: Vec<Bytes>,
}

impl ScannedBlock {
    /// Offset just past the block.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// The image ends exactly after the last complete block.
    End,
    /// The image ends inside a record or a block: a write that did not complete, or bytes not
    /// read yet.
    Torn(CodecError),
    /// Bytes that are all there but fail a check (CRC, type, length, magic, version, entry
    /// count), or a record out of place.
    Corrupt(CodecError),
    /// A valid index or footer record starts here: the blocks are over.
    Trailer(RecordType),
}

/// Iterates over the complete, valid blocks of an image from a start offset, stopping at the
/// first thing that is not one. After the last item, [`stop`](Self::stop) says why and
/// [`offset`](Self::offset) is where the valid prefix ends.
///
/// A segment header record is accepted only as the very first record of an image scanned
/// from offset 0; anywhere else it is out of place.
#[derive(Debug, Clone)]
pub struct BlockScanner {
    buf: Bytes,
    pos: usize,
    header: Option<HeaderRecord>,
    stop: Option<ScanStop>,
}

impl BlockScanner {
    /// A scanner over `buf` starting at `start`. A start past the end stops at once as torn.
    pub fn new(buf: Bytes, start: usize) -> Self {
        let mut scanner = Self {
            pos: start.min(buf.len()),
            buf,
            header: None,
            stop: None,
        };
        if start > scanner.buf.len() {
            scanner.stop = Some(ScanStop::Torn(CodecError::Truncated {
                needed: start as u64,
                available: scanner.buf.len(),
            }));
        }
        scanner
    }

    /// The segment header record, once scanned.
    pub fn header(&self) -> Option<&HeaderRecord> {
        self.header.as_ref()
    }

    /// End of the valid prefix scanned so far: the start, or just past the last block (or
    /// header record) returned.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Why the scan stopped; `None` while it has not.
    pub fn stop(&self) -> Option<&ScanStop> {
        self.stop.as_ref()
    }

    fn step(&mut self) -> Result<Option<ScannedBlock>, ScanStop> {
        loop {
            if self.pos == self.buf.len() {
                return Err(ScanStop::End);
            }
            let classify = |e: CodecError| {
                if e.is_truncation() {
                    ScanStop::Torn(e)
                } else {
                    ScanStop::Corrupt(e)
                }
            };
            let (record, len) = decode_record_at(&self.buf, self.pos).map_err(classify)?;
            match record {
                Record::Header(h) if self.pos == 0 && self.header.is_none() => {
                    self.header = Some(h);
                    self.pos += len;
                }
                Record::BlockHeader(block_header) => {
                    let data_at = self.pos + len;
                    let data_end = data_at as u64 + u64::from(block_header.block_length);
                    if data_end > self.buf.len() as u64 {
                        return Err(ScanStop::Torn(CodecError::Truncated {
                            needed: data_end - self.pos as u64,
                            available: self.buf.len() - self.pos,
                        }));
                    }
                    // Bounded by buf.len().
                    let data_end = data_end as usize;
                    let entries =
                        decode_block_data(&block_header, &self.buf.slice(data_at..data_end))
                            .map_err(ScanStop::Corrupt)?;
                    let block = ScannedBlock {
                        offset: self.pos,
                        len: BLOCK_HEADER_RECORD_LEN + block_header.block_length as usize,
                        block_header,
                        entries,
                    };
                    self.pos = data_end;
                    return Ok(Some(block));
                }
                Record::Index(_) => return Err(ScanStop::Trailer(RecordType::Index)),
                Record::Footer(_) => return Err(ScanStop::Trailer(RecordType::Footer)),
                other => {
                    return Err(ScanStop::Corrupt(CodecError::UnexpectedRecord {
                        expected: RecordType::BlockHeader,
                        found: other.record_type(),
                    }));
                }
            }
        }
    }
}

impl Iterator for BlockScanner {
    type Item = ScannedBlock;

    fn next(&mut self) -> Option<ScannedBlock> {
        if self.stop.is_some() {
            return None;
        }
        match self.step() {
            Ok(block) => block,
            Err(stop) => {
                self.stop = Some(stop);
                None
            }
        }
    }
}

/// Everything a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The segment header record, when the scan started at offset 0 on one.
    pub header: Option<HeaderRecord>,
    /// Complete, valid blocks in order.
    pub blocks: Vec<ScannedBlock>,
    /// End of the valid prefix: truncating the image here keeps exactly `header` and `blocks`.
    pub end: usize,
    /// Why the scan stopped at `end`.
    pub stop: ScanStop,
}

/// Scans `image` from `start` to the end of its valid prefix of blocks. Use 0 for an image
/// that begins with its header record, or 25 to skip it.
pub fn scan_blocks(image: &Bytes, start: usize) -> ScanReport {
    let mut scanner = BlockScanner::new(image.clone(), start);
    let blocks: Vec<ScannedBlock> = scanner.by_ref().collect();
    ScanReport {
        header: scanner.header,
        blocks,
        end: scanner.pos,
        stop: scanner.stop.unwrap_or(ScanStop::End),
    }
}
