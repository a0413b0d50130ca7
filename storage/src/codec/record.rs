//! The five record types and their framing.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use super::error::CodecError;

/// Bytes of the record header: `crc32 u32`, `type u8`, `len u32`.
pub const RECORD_HEADER_LEN: usize = 9;

/// Payload bytes of a [`HeaderRecord`].
pub const HEADER_PAYLOAD_LEN: usize = 16;
/// Payload bytes of an [`IndexRecord`].
pub const INDEX_PAYLOAD_LEN: usize = 32;
/// Payload bytes of a version 5 [`FooterRecord`].
pub const FOOTER_V5_PAYLOAD_LEN: usize = 36;
/// Payload bytes of a version 6 [`FooterRecord`] (v5 plus `lac i64`).
pub const FOOTER_V6_PAYLOAD_LEN: usize = 44;
/// Payload bytes of a [`BlockHeaderRecord`].
pub const BLOCK_HEADER_PAYLOAD_LEN: usize = 28;

/// Encoded bytes of a [`HeaderRecord`].
pub const HEADER_RECORD_LEN: usize = RECORD_HEADER_LEN + HEADER_PAYLOAD_LEN;
/// Encoded bytes of an [`IndexRecord`].
pub const INDEX_RECORD_LEN: usize = RECORD_HEADER_LEN + INDEX_PAYLOAD_LEN;
/// Encoded bytes of a version 5 [`FooterRecord`].
pub const FOOTER_V5_RECORD_LEN: usize = RECORD_HEADER_LEN + FOOTER_V5_PAYLOAD_LEN;
/// Encoded bytes of a version 6 [`FooterRecord`].
pub const FOOTER_V6_RECORD_LEN: usize = RECORD_HEADER_LEN + FOOTER_V6_PAYLOAD_LEN;
/// Encoded bytes of a [`BlockHeaderRecord`].
pub const BLOCK_HEADER_RECORD_LEN: usize = RECORD_HEADER_LEN + BLOCK_HEADER_PAYLOAD_LEN;

/// Format version of Woodpecker v0.1.0 to v0.1.13, the one Milvus 2.6 reads: 36-byte footer.
pub const FORMAT_V5: u16 = 5;
/// Current format version: 44-byte footer with the LAC.
pub const FORMAT_V6: u16 = 6;

/// Flag bit 0 of header and footer records: the segment's blocks are merged (`m_N.blk`).
pub const FOOTER_FLAG_COMPACTED: u16 = 1;

/// Magic at payload offset 12 of a [`HeaderRecord`].
pub const HEADER_MAGIC: [u8; 4] = *b"HDR\x01";
/// Magic at payload offset 32 of a [`FooterRecord`].
pub const FOOTER_MAGIC: [u8; 4] = *b"FTR\x01";

/// The type byte of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// [`HeaderRecord`]: starts a segment.
    Header = 1,
    /// A data record: one entry's bytes.
    Data = 2,
    /// [`IndexRecord`]: locates one block.
    Index = 3,
    /// [`FooterRecord`]: ends a finalized segment.
    Footer = 4,
    /// [`BlockHeaderRecord`]: starts a block.
    BlockHeader = 5,
}

impl RecordType {
    /// The type for a type byte, if it is one of the five.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Header),
            2 => Some(Self::Data),
            3 => Some(Self::Index),
            4 => Some(Self::Footer),
            5 => Some(Self::BlockHeader),
            _ => None,
        }
    }

    /// The type byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn payload_len_desc(self) -> &'static str {
        match self {
            Self::Header => "16",
            Self::Data => "any length",
            Self::Index => "32",
            Self::Footer => "36 (v5) or 44 (v6)",
            Self::BlockHeader => "28",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Header => "header",
            Self::Data => "data",
            Self::Index => "index",
            Self::Footer => "footer",
            Self::BlockHeader => "block header",
        })
    }
}

/// The 9-byte header of a record, read without checking anything but its own length. Lets a
/// reader of a file learn how many bytes the next record needs before reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Stored CRC-32 of type, length and payload.
    pub crc: u32,
    /// Raw type byte; see [`RecordType::from_u8`].
    pub record_type: u8,
    /// Payload length.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Reads the first 9 bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, CodecError> {
        let Some(head) = buf.first_chunk::<RECORD_HEADER_LEN>() else {
            return Err(CodecError::Truncated {
                needed: RECORD_HEADER_LEN as u64,
                available: buf.len(),
            });
        };
        Ok(Self {
            crc: u32::from_le_bytes([head[0], head[1], head[2], head[3]]),
            record_type: head[4],
            payload_len: u32::from_le_bytes([head[5], head[6], head[7], head[8]]),
        })
    }

    /// Bytes of the whole record, header included. `u64` because `9 + u32::MAX` need not fit a
    /// 32-bit `usize`.
    pub(crate) fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.payload_len)
    }
}

/// Checks the first record of `buf` (complete, CRC, known type) and returns its type and the
/// range of its payload within `buf`. Nothing is allocated and nothing is trusted before the
/// length check.
pub(crate) fn check_frame(buf: &[u8]) -> Result<(RecordType, Range<usize>), CodecError> {
    let head = FrameHeader::parse(buf)?;
    let total = head.record_len();
    if total > buf.len() as u64 {
        return Err(CodecError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    // `total <= buf.len()`, so it fits in usize.
    let end = total as usize;
    let computed = crc32fast::hash(&buf[4..end]);
    if computed != head.crc {
        return Err(CodecError::RecordCrc {
            stored: head.crc,
            computed,
        });
    }
    let kind =
        RecordType::from_u8(head.record_type).ok_or(CodecError::UnknownType(head.record_type))?;
    Ok((kind, RECORD_HEADER_LEN..end))
}

/// Appends one framed record and returns its CRC.
///
/// # Panics
///
/// If the payload is 4 GiB or longer, which the format cannot express.
pub(crate) fn put_record(out: &mut Vec<u8>, kind: RecordType, payload: &[u8]) -> u32 {
    let len = u32::try_from(payload.len()).expect("record payload must be shorter than 4 GiB");
    let mut type_len = [0u8; 5];
    type_len[0] = kind.as_u8();
    type_len[1..].copy_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&type_len);
    crc.update(payload);
    let crc = crc.finalize();
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&type_len);
    out.extend_from_slice(payload);
    crc
}

/// Running CRC-32 of a block's data region, fed one record at a time.
///
/// A record's own CRC already covers everything after its first 4 bytes, so for a long record
/// the region CRC is extended by combining that value instead of hashing the bytes a second
/// time. A combine costs about as much as hashing a few tens of KiB, so runs of short records
/// are hashed, in one call per run.
pub(crate) struct RegionCrc {
    hasher: crc32fast::Hasher,
    /// Start of the bytes not hashed yet.
    pending: usize,
}

impl RegionCrc {
    /// Records at least this long are combined rather than hashed again.
    const COMBINE_MIN: usize = 64 * 1024;

    /// A region starting at `start` in the buffer later passed to `push` and `finalize`.
    pub(crate) fn new(start: usize) -> Self {
        Self {
            hasher: crc32fast::Hasher::new(),
            pending: start,
        }
    }

    /// Extends the region by the framed record at `record` in `buf`, right after the previous
    /// one, whose CRC is `record_crc` (computed or verified by the caller).
    pub(crate) fn push(&mut self, buf: &[u8], record: Range<usize>, record_crc: u32) {
        if record.len() >= Self::COMBINE_MIN {
            self.hasher.update(&buf[self.pending..record.start + 4]);
            let rest =
                crc32fast::Hasher::new_with_initial_len(record_crc, (record.len() - 4) as u64);
            self.hasher.combine(&rest);
            self.pending = record.end;
        }
    }

    /// The CRC of the region, which ends at `end` in `buf`.
    pub(crate) fn finalize(mut self, buf: &[u8], end: usize) -> u32 {
        self.hasher.update(&buf[self.pending..end]);
        self.hasher.finalize()
    }
}

/// Appends one data record holding `payload` (an entry's bytes).
///
/// # Panics
///
/// If the payload is 4 GiB or longer.
pub fn encode_data_record(payload: &[u8], out: &mut Vec<u8>) {
    put_record(out, RecordType::Data, payload);
}

/// Little-endian field writer over a fixed payload array.
struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
}

/// Little-endian field reader over a payload whose length was checked by the caller.
struct Get<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Get<'_> {
    fn take<const W: usize>(&mut self) -> [u8; W] {
        let mut out = [0u8; W];
        out.copy_from_slice(&self.buf[self.at..self.at + W]);
        self.at += W;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
}

fn payload_len_error(kind: RecordType, payload: &[u8]) -> CodecError {
    CodecError::PayloadLength {
        kind,
        // The payload came out of a frame, whose length is a u32.
        actual: u32::try_from(payload.len()).unwrap_or(u32::MAX),
    }
}

fn check_version(kind: RecordType, version: u16) -> Result<(), CodecError> {
    if version == FORMAT_V5 || version == FORMAT_V6 {
        Ok(())
    } else {
        Err(CodecError::UnsupportedVersion { kind, version })
    }
}

/// A record type with a fixed-layout payload.
trait Fixed: Sized {
    const KIND: RecordType;
    fn from_payload(payload: &[u8]) -> Result<Self, CodecError>;
}

/// Decodes the first record of `buf` as `T`.
fn decode_fixed<T: Fixed>(buf: &[u8]) -> Result<(T, usize), CodecError> {
    let (kind, range) = check_frame(buf)?;
    if kind != T::KIND {
        return Err(CodecError::UnexpectedRecord {
            expected: T::KIND,
            found: kind,
        });
    }
    let end = range.end;
    Ok((T::from_payload(&buf[range])?, end))
}

/// Type 1: the first record of a segment (of `data.log`, `0.blk` and `m_0.blk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRecord {
    /// Format version, 5 or 6.
    pub version: u16,
    /// Bit 0: compacted ([`FOOTER_FLAG_COMPACTED`]).
    pub flags: u16,
    /// Id of the segment's first entry, normally 0.
    pub first_entry_id: i64,
}

impl HeaderRecord {
    /// Appends the framed record (25 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = [0u8; HEADER_PAYLOAD_LEN];
        Put { buf: &mut p, at: 0 }
            .u16(self.version)
            .u16(self.flags)
            .i64(self.first_entry_id)
            .bytes(&HEADER_MAGIC);
        put_record(out, RecordType::Header, &p);
    }

    /// Decodes the first record of `buf`, which must be a header record; returns it and the
    /// bytes it took.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), CodecError> {
        decode_fixed(buf)
    }

    /// Whether the compacted flag is set.
    pub fn is_compacted(&self) -> bool {
        self.flags & FOOTER_FLAG_COMPACTED != 0
    }
}

impl Fixed for HeaderRecord {
    const KIND: RecordType = RecordType::Header;

    fn from_payload(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() != HEADER_PAYLOAD_LEN {
            return Err(payload_len_error(Self::KIND, payload));
        }
        let mut g = Get {
            buf: payload,
            at: 0,
        };
        let (version, flags, first_entry_id, magic) = (g.u16(), g.u16(), g.i64(), g.take::<4>());
        if magic != HEADER_MAGIC {
            return Err(CodecError::BadMagic {
                kind: Self::KIND,
                found: magic,
            });
        }
        check_version(Self::KIND, version)?;
        Ok(Self {
            version,
            flags,
            first_entry_id,
        })
    }
}

/// Type 3: where one block is. In `data.log` `start_offset` is the byte offset of the block's
/// header record and `block_size` is 37 + data length; in `footer.blk` of object storage
/// `start_offset` is the block number and `block_size` the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// Block number.
    pub block_number: i32,
    /// Byte offset (local file) or block number (object storage).
    pub start_offset: i64,
    /// Bytes of the block.
    pub block_size: u32,
    /// First entry id in the block.
    pub first_entry_id: i64,
    /// Last entry id in the block.
    pub last_entry_id: i64,
}

impl IndexRecord {
    /// Appends the framed record (41 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = [0u8; INDEX_PAYLOAD_LEN];
        Put { buf: &mut p, at: 0 }
            .i32(self.block_number)
            .i64(self.start_offset)
            .u32(self.block_size)
            .i64(self.first_entry_id)
            .i64(self.last_entry_id);
        put_record(out, RecordType::Index, &p);
    }

    /// Decodes the first record of `buf`, which must be an index record.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), CodecError> {
        decode_fixed(buf)
    }
}

impl Fixed for IndexRecord {
    const KIND: RecordType = RecordType::Index;

    fn from_payload(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() != INDEX_PAYLOAD_LEN {
            return Err(payload_len_error(Self::KIND, payload));
        }
        let mut g = Get {
            buf: payload,
            at: 0,
        };
        Ok(Self {
            block_number: g.i32(),
            start_offset: g.i64(),
            block_size: g.u32(),
            first_entry_id: g.i64(),
            last_entry_id: g.i64(),
        })
    }
}

/// Type 4: ends a finalized segment. The payload layout follows `version`: 5 is the 36-byte
/// payload without LAC (decoded with `lac = -1`), 6 the 44-byte payload with `lac` at 36.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterRecord {
    /// Number of blocks (index records).
    pub total_blocks: i32,
    /// Blocks in embedded and local mode; entries in a service-mode compacted footer.
    pub total_records: u32,
    /// Bytes before the footer (local file) or of all blocks (object storage).
    pub total_size: u64,
    /// Offset of the first index record (0 in `footer.blk`).
    pub index_offset: u64,
    /// `41 * total_blocks`.
    pub index_length: u32,
    /// Format version, 5 or 6.
    pub version: u16,
    /// Bit 0: compacted ([`FOOTER_FLAG_COMPACTED`]).
    pub flags: u16,
    /// Last add confirmed; only stored in version 6, `-1` when read from version 5.
    pub lac: i64,
}

impl FooterRecord {
    /// Appends the framed record: 45 bytes when `version` is 5, otherwise 53.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = [0u8; FOOTER_V6_PAYLOAD_LEN];
        let mut put = Put { buf: &mut p, at: 0 };
        put.i32(self.total_blocks)
            .u32(self.total_records)
            .u64(self.total_size)
            .u64(self.index_offset)
            .u32(self.index_length)
            .u16(self.version)
            .u16(self.flags)
            .bytes(&FOOTER_MAGIC);
        let len = if self.version == FORMAT_V5 {
            FOOTER_V5_PAYLOAD_LEN
        } else {
            put.i64(self.lac);
            FOOTER_V6_PAYLOAD_LEN
        };
        put_record(out, RecordType::Footer, &p[..len]);
    }

    /// Bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        if self.version == FORMAT_V5 {
            FOOTER_V5_RECORD_LEN
        } else {
            FOOTER_V6_RECORD_LEN
        }
    }

    /// Decodes the first record of `buf`, which must be a footer record.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), CodecError> {
        decode_fixed(buf)
    }

    /// Whether the compacted flag is set: the index lists merged `m_N.blk` blocks.
    pub fn is_compacted(&self) -> bool {
        self.flags & FOOTER_FLAG_COMPACTED != 0
    }
}

impl Fixed for FooterRecord {
    const KIND: RecordType = RecordType::Footer;

    fn from_payload(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() != FOOTER_V5_PAYLOAD_LEN && payload.len() != FOOTER_V6_PAYLOAD_LEN {
            return Err(payload_len_error(Self::KIND, payload));
        }
        let mut g = Get {
            buf: payload,
            at: 0,
        };
        let mut footer = Self {
            total_blocks: g.i32(),
            total_records: g.u32(),
            total_size: g.u64(),
            index_offset: g.u64(),
            index_length: g.u32(),
            version: g.u16(),
            flags: g.u16(),
            lac: -1,
        };
        let magic = g.take::<4>();
        if magic != FOOTER_MAGIC {
            return Err(CodecError::BadMagic {
                kind: Self::KIND,
                found: magic,
            });
        }
        check_version(Self::KIND, footer.version)?;
        // The size must agree with the version, or re-encoding would change the bytes; no
        // writer of either version produces a mismatch.
        let expected = if footer.version == FORMAT_V5 {
            FOOTER_V5_PAYLOAD_LEN
        } else {
            FOOTER_V6_PAYLOAD_LEN
        };
        if payload.len() != expected {
            return Err(CodecError::FooterVersionMismatch {
                version: footer.version,
                payload_len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            });
        }
        if footer.version == FORMAT_V6 {
            footer.lac = g.i64();
        }
        Ok(footer)
    }
}

/// Type 5: starts a block, describing the data records that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeaderRecord {
    /// Block number within the segment (or merged block number).
    pub block_number: i32,
    /// Id of the first entry; the i-th data record has id `first_entry_id + i`.
    pub first_entry_id: i64,
    /// Id of the last entry.
    pub last_entry_id: i64,
    /// Bytes of the data records region, their 9-byte headers included.
    pub block_length: u32,
    /// CRC-32 of the data records region.
    pub block_crc: u32,
}

impl BlockHeaderRecord {
    /// Appends the framed record (37 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = [0u8; BLOCK_HEADER_PAYLOAD_LEN];
        Put { buf: &mut p, at: 0 }
            .i32(self.block_number)
            .i64(self.first_entry_id)
            .i64(self.last_entry_id)
            .u32(self.block_length)
            .u32(self.block_crc);
        put_record(out, RecordType::BlockHeader, &p);
    }

    /// Decodes the first record of `buf`, which must be a block header record.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), CodecError> {
        decode_fixed(buf)
    }

    /// Entries the header declares, `last - first + 1`, or `None` when `last < first - 1`.
    pub fn entry_count(&self) -> Option<u64> {
        let count = i128::from(self.last_entry_id) - i128::from(self.first_entry_id) + 1;
        u64::try_from(count).ok()
    }

    /// Id of the `index`-th entry of the block, `None` past `last_entry_id`.
    pub fn entry_id(&self, index: usize) -> Option<i64> {
        entry_id(self.first_entry_id, index).filter(|id| *id <= self.last_entry_id)
    }

    /// Bytes of the whole block: this record plus the data region.
    pub fn block_size(&self) -> u64 {
        BLOCK_HEADER_RECORD_LEN as u64 + u64::from(self.block_length)
    }
}

impl Fixed for BlockHeaderRecord {
    const KIND: RecordType = RecordType::BlockHeader;

    fn from_payload(payload: &[u8]) -> Result<Self, CodecError> {
        if payload.len() != BLOCK_HEADER_PAYLOAD_LEN {
            return Err(payload_len_error(Self::KIND, payload));
        }
        let mut g = Get {
            buf: payload,
            at: 0,
        };
        Ok(Self {
            block_number: g.i32(),
            first_entry_id: g.i64(),
            last_entry_id: g.i64(),
            block_length: g.u32(),
            block_crc: g.u32(),
        })
    }
}

/// Id of the `index`-th entry of a block starting at `first_entry_id` (ids are implicit), or
/// `None` on overflow.
pub fn entry_id(first_entry_id: i64, index: usize) -> Option<i64> {
    i64::try_from(index)
        .ok()
        .and_then(|i| first_entry_id.checked_add(i))
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Type 1.
    Header(HeaderRecord),
    /// Type 2: the payload, a zero-copy slice of the decoded buffer.
    Data(Bytes),
    /// Type 3.
    Index(IndexRecord),
    /// Type 4.
    Footer(FooterRecord),
    /// Type 5.
    BlockHeader(BlockHeaderRecord),
}

impl Record {
    /// The record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Header(_) => RecordType::Header,
            Record::Data(_) => RecordType::Data,
            Record::Index(_) => RecordType::Index,
            Record::Footer(_) => RecordType::Footer,
            Record::BlockHeader(_) => RecordType::BlockHeader,
        }
    }

    /// Appends the framed record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Header(r) => r.encode(out),
            Record::Data(d) => encode_data_record(d, out),
            Record::Index(r) => r.encode(out),
            Record::Footer(r) => r.encode(out),
            Record::BlockHeader(r) => r.encode(out),
        }
    }

    /// Bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Header(_) => HEADER_RECORD_LEN,
            Record::Data(d) => RECORD_HEADER_LEN + d.len(),
            Record::Index(_) => INDEX_RECORD_LEN,
            Record::Footer(r) => r.encoded_len(),
            Record::BlockHeader(_) => BLOCK_HEADER_RECORD_LEN,
        }
    }
}

/// Decodes the record at `buf[pos..]`; returns it and its length.
pub(crate) fn decode_record_at(buf: &Bytes, pos: usize) -> Result<(Record, usize), CodecError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let (kind, range) = check_frame(rest)?;
    let end = range.end;
    let payload = &rest[range.clone()];
    let record = match kind {
        RecordType::Header => Record::Header(HeaderRecord::from_payload(payload)?),
        RecordType::Data => Record::Data(buf.slice(pos + range.start..pos + range.end)),
        RecordType::Index => Record::Index(IndexRecord::from_payload(payload)?),
        RecordType::Footer => Record::Footer(FooterRecord::from_payload(payload)?),
        RecordType::BlockHeader => Record::BlockHeader(BlockHeaderRecord::from_payload(payload)?),
    };
    Ok((record, end))
}

/// Decodes the first record of `buf` strictly: truncation, a CRC mismatch, an unknown type, a
/// fixed payload of the wrong size, a bad magic or a version other than 5 and 6 are errors.
/// Returns the record and the bytes it took. A data payload is a slice of `buf`, not a copy.
pub fn decode_record(buf: &Bytes) -> Result<(Record, usize), CodecError> {
    decode_record_at(buf, 0)
}

/// Decodes records one after another and stops silently at the first one that is truncated,
/// fails its CRC or is otherwise invalid: what it returns is the longest valid prefix and the
/// bytes that prefix covers. This is how a torn tail is cut off.
pub fn decode_record_list(buf: &Bytes) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match decode_record_at(buf, pos) {
            Ok((record, len)) => {
                records.push(record);
                pos += len;
            }
            Err(_) => break,
        }
    }
    (records, pos)
}

/// Finds the footer at the end of `tail` (the last bytes of a file or `footer.blk`): a
/// 53-byte v6 record at the very end first, then a 45-byte v5 record.
pub fn footer_from_tail(tail: &[u8]) -> Result<FooterRecord, CodecError> {
    let probe = |record_len: usize| -> Result<FooterRecord, CodecError> {
        let start = tail
            .len()
            .checked_sub(record_len)
            .ok_or(CodecError::Truncated {
                needed: record_len as u64,
                available: tail.len(),
            })?;
        let (footer, len) = FooterRecord::decode(&tail[start..])?;
        if len != record_len {
            // A v5 record where a v6 one was probed for (or the reverse) cannot end the tail.
            return Err(CodecError::TrailingBytes {
                extra: record_len.saturating_sub(len),
            });
        }
        Ok(footer)
    };
    match probe(FOOTER_V6_RECORD_LEN) {
        Ok(footer) => Ok(footer),
        Err(v6) => probe(FOOTER_V5_RECORD_LEN).map_err(|v5| CodecError::NoFooter {
            v6: Box::new(v6),
            v5: Box::new(v5),
        }),
    }
}
