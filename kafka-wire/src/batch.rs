//! Kafka record batches (magic 2), read without decompressing.
//!
//! The front door stores batches as the producer sent them. It reads the fixed 61-byte header,
//! checks the CRC-32C (which covers everything from the attributes to the end) and patches the
//! two fields that sit outside the CRC: the base offset (bytes 0..8) and the partition leader
//! epoch (bytes 12..16).
//!
//! ```text
//! 0  baseOffset i64        27 baseTimestamp i64      53 baseSequence i32
//! 8  batchLength i32       35 maxTimestamp i64       57 recordCount i32
//! 12 partitionLeaderEpoch  43 producerId i64         61 records...
//! 16 magic i8              51 producerEpoch i16
//! 17 crc u32               21 attributes i16   23 lastOffsetDelta i32
//! ```

use std::io::Read as _;

use bytes::{Bytes, BytesMut};

/// The size of the batch header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s count starts (baseOffset and batchLength itself).
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// Attributes bit: transactional batch.
const TRANSACTIONAL: i16 = 0x10;
/// Attributes bit: control batch.
const CONTROL: i16 = 0x20;

/// Why a batch was refused; each maps to the Kafka error a broker returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The bytes do not frame as record batches, or a header field is impossible
    /// (`CORRUPT_MESSAGE`, as Kafka answers for a malformed record set).
    #[error("malformed record batch: {0}")]
    Malformed(String),
    /// The stored CRC-32C does not match (`CORRUPT_MESSAGE`).
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// Not magic 2 (`INVALID_RECORD`, as Kafka answers for older message formats on
    /// Produce v3+).
    #[error("record batch magic {0} is not supported (only magic 2)")]
    Magic(i8),
    /// An attribute the shim does not serve (transactions, control batches) (`INVALID_RECORD`).
    #[error("record batch not accepted: {0}")]
    Invalid(String),
    /// An unknown compression codec (`UNSUPPORTED_COMPRESSION_TYPE`).
    #[error("unknown compression codec {0}")]
    Compression(i16),
}

/// The header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Base offset as stored.
    pub base_offset: i64,
    /// Total length of the batch in bytes (header included).
    pub size: usize,
    /// Attributes.
    pub attributes: i16,
    /// Offset of the last record relative to the base.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer id, -1 without idempotence.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 without idempotence.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

impl BatchHeader {
    /// The compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (a transaction marker), written by brokers only.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// The number of offsets the batch takes.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// The sequence of the last record.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        // Sequences wrap at i32::MAX back to 0.
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch at the start of `bytes` (which must hold at least the
/// whole batch) without checking the CRC.
pub fn read_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Malformed(format!(
            "{} bytes is shorter than a batch header ({HEADER_LEN})",
            bytes.len()
        )));
    }
    let magic = bytes[16] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let batch_length = i32_at(bytes, 8);
    let size = usize::try_from(batch_length)
        .ok()
        .and_then(|l| l.checked_add(LOG_OVERHEAD))
        .filter(|&s| s >= HEADER_LEN)
        .ok_or_else(|| BatchError::Malformed(format!("batch length {batch_length}")))?;
    if size > bytes.len() {
        return Err(BatchError::Malformed(format!(
            "batch of {size} bytes but only {} present",
            bytes.len()
        )));
    }
    let header = BatchHeader {
        base_offset: i64_at(bytes, 0),
        size,
        attributes: i16_at(bytes, 21),
        last_offset_delta: i32_at(bytes, 23),
        base_timestamp: i64_at(bytes, 27),
        max_timestamp: i64_at(bytes, 35),
        producer_id: i64_at(bytes, 43),
        producer_epoch: i16_at(bytes, 51),
        base_sequence: i32_at(bytes, 53),
        record_count: i32_at(bytes, 57),
    };
    if header.record_count < 1 || header.last_offset_delta < 0 {
        return Err(BatchError::Malformed(format!(
            "{} records with last offset delta {}",
            header.record_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// Splits a produce request's record set into batches and checks each one completely:
/// framing, magic, CRC-32C, compression codec and attributes.
pub fn split_and_validate(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        let header = read_header(rest)?;
        let batch = &rest[..header.size];
        let stored = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        let computed = crc32c::crc32c(&batch[CRC_START..]);
        if stored != computed {
            return Err(BatchError::Crc { stored, computed });
        }
        if header.compression() > 4 {
            return Err(BatchError::Compression(header.compression()));
        }
        if header.attributes & CONTROL != 0 {
            return Err(BatchError::Invalid(
                "control batches are written by the broker only".into(),
            ));
        }
        if header.is_transactional() && header.producer_id < 0 {
            return Err(BatchError::Invalid(
                "a transactional batch without a producer id".into(),
            ));
        }
        out.push((header, records.slice(at..at + header.size)));
        at += header.size;
    }
    if out.is_empty() {
        return Err(BatchError::Malformed("empty record set".into()));
    }
    Ok(out)
}

/// The kind of a transaction marker (a control record's key type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The transaction was aborted (type 0).
    Abort,
    /// The transaction was committed (type 1).
    Commit,
}

/// A control batch holding one transaction marker, as a transaction coordinator has a
/// partition leader write it: transactional and control attributes, the producer's id and
/// epoch, no sequence, one record whose key is (version 0, type) and whose value is
/// (version 0, coordinator epoch). Its base offset is 0 until patched.
pub fn marker_batch(
    marker: Marker,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&(marker as i16).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    // attributes, timestamp delta 0, offset delta 0, key, value, no headers
    let mut body = vec![0u8, 0, 0];
    body.push(zigzag_byte(key.len() as i32));
    body.extend_from_slice(&key);
    body.push(zigzag_byte(value.len() as i32));
    body.extend_from_slice(&value);
    body.push(0);
    let mut records = vec![zigzag_byte(body.len() as i32)];
    records.extend_from_slice(&body);
    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&(TRANSACTIONAL | CONTROL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// A record's key and value (`None`: null), for [`plain_batch`].
pub type PlainRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// An uncompressed batch of plain records (no producer id, no sequence, timestamp type
/// CreateTime), as a broker writes its own records: each `(key, value)` with `None` for a
/// null (a value of `None` is a tombstone). Its base offset is 0 until patched. An empty
/// slice is not a batch.
pub fn plain_batch(records: &[PlainRecord<'_>], timestamp: i64) -> Result<Bytes, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid("a batch of no records".into()));
    }
    let count = i32::try_from(records.len())
        .map_err(|_| BatchError::Invalid(format!("{} records in one batch", records.len())))?;
    let mut encoded = Vec::new();
    let mut body = Vec::new();
    for (delta, (key, value)) in records.iter().enumerate() {
        body.clear();
        body.push(0); // attributes
        put_varlong(&mut body, 0); // timestamp delta
        put_varlong(&mut body, delta as i64);
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varlong(&mut body, b.len() as i64);
                    body.extend_from_slice(b);
                }
                None => put_varlong(&mut body, -1),
            }
        }
        put_varlong(&mut body, 0); // headers
        put_varlong(&mut encoded, body.len() as i64);
        encoded.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(HEADER_LEN + encoded.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + encoded.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&encoded);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(b))
}

/// Appends the zigzag varint of `v` (a record field's encoding).
fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Zigzag encoding of a small value (|v| < 64) as one varint byte.
fn zigzag_byte(v: i32) -> u8 {
    ((v << 1) ^ (v >> 31)) as u8
}

/// The marker a stored control batch holds: the type in its first record's key.
/// `Ok(None)` for a control record of another type (Kafka reserves more).
pub fn read_marker(batch: &[u8]) -> Result<Option<Marker>, BatchError> {
    let header = read_header(batch)?;
    if !header.is_control() {
        return Err(BatchError::Invalid("not a control batch".into()));
    }
    let mut reader = records_reader(&header, batch)?;
    let malformed = |e: std::io::Error| BatchError::Malformed(format!("control record: {e}"));
    let _len = read_varlong(&mut reader).map_err(malformed)?;
    let mut attributes = [0u8; 1];
    std::io::Read::read_exact(&mut reader, &mut attributes).map_err(malformed)?;
    let _ts = read_varlong(&mut reader).map_err(malformed)?;
    let _delta = read_varlong(&mut reader).map_err(malformed)?;
    let key_len = read_varlong(&mut reader).map_err(malformed)?;
    if key_len < 4 {
        return Err(BatchError::Malformed(format!(
            "control record key of {key_len} bytes"
        )));
    }
    let mut key = [0u8; 4];
    std::io::Read::read_exact(&mut reader, &mut key).map_err(malformed)?;
    Ok(match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    })
}

/// A copy of `batch` with its base offset and partition leader epoch set (both outside the
/// CRC, so the batch stays valid).
pub fn with_base_offset(batch: &Bytes, base_offset: i64, leader_epoch: i32) -> Bytes {
    let mut b = BytesMut::from(&batch[..]);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    b.freeze()
}

/// The largest record a timestamp scan reads past (bigger ones are malformed here).
const MAX_RECORD_BYTES: u64 = 1 << 30;

/// The records of a batch, decompressed as a stream: the scan never holds more than one
/// block of the batch in memory, so a batch that decompresses to something huge costs time,
/// not memory.
fn records_reader<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
) -> Result<Box<dyn std::io::Read + 'a>, BatchError> {
    let body = &batch[HEADER_LEN..header.size];
    Ok(match header.compression() {
        0 => Box::new(body),
        1 => Box::new(flate2::read::GzDecoder::new(body)),
        2 => Box::new(SnappyReader::new(body)),
        3 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        4 => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| BatchError::Malformed(format!("zstd: {e}")))?;
            // The window a frame may ask the decoder to hold: producers compress batches of
            // at most a few MiB, and a tiny frame must not make the decoder allocate 128 MiB.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| BatchError::Malformed(format!("zstd: {e}")))?;
            Box::new(decoder)
        }
        other => return Err(BatchError::Compression(other)),
    })
}

/// Snappy as Kafka producers write it: Java's xerial framing (a magic header, then
/// length-prefixed raw blocks), or one raw block (librdkafka without framing).
struct SnappyReader<'a> {
    rest: &'a [u8],
    raw: bool,
    started: bool,
    block: Vec<u8>,
    at: usize,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// The largest decompressed snappy block accepted.
const MAX_SNAPPY_BLOCK: usize = 64 << 20;
/// The most a snappy block can expand: its best element, a copy with a 2-byte offset,
/// writes 64 bytes from 3. A block claiming more than this multiple of its size (plus its
/// length preamble) is malformed, and is refused before anything is allocated for it.
const SNAPPY_MAX_EXPANSION: usize = 22;
/// The largest zstd window (log2 bytes) a batch may ask for: 16 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8]) -> Self {
        SnappyReader {
            rest: body,
            raw: !body.starts_with(XERIAL_MAGIC),
            started: false,
            block: Vec::new(),
            at: 0,
        }
    }

    fn next_block(&mut self) -> std::io::Result<bool> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let compressed: &[u8] = if self.raw {
            if self.started {
                return Ok(false);
            }
            std::mem::take(&mut self.rest)
        } else {
            if !self.started {
                // magic (8), version (4), compatible version (4)
                if self.rest.len() < 16 {
                    return Err(bad("short xerial snappy header".into()));
                }
                self.rest = &self.rest[16..];
            }
            if self.rest.is_empty() {
                return Ok(false);
            }
            if self.rest.len() < 4 {
                return Err(bad("short xerial block length".into()));
            }
            let len = u32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]])
                as usize;
            if self.rest.len() < 4 + len {
                return Err(bad("xerial block runs past the batch".into()));
            }
            let block = &self.rest[4..4 + len];
            self.rest = &self.rest[4 + len..];
            block
        };
        self.started = true;
        let size = snap::raw::decompress_len(compressed).map_err(|e| bad(e.to_string()))?;
        if size > MAX_SNAPPY_BLOCK || size > compressed.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
            return Err(bad(format!(
                "a snappy block of {} bytes claims {size} bytes decompressed",
                compressed.len()
            )));
        }
        self.block.resize(size, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(|e| bad(e.to_string()))?;
        self.at = 0;
        Ok(true)
    }
}

impl std::io::Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn read_varlong(r: &mut dyn std::io::Read) -> std::io::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let mut byte = [0u8; 1];
        r.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            // zigzag
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "varint longer than 10 bytes",
    ))
}

/// Walks the records of a stored batch in order, calling `visit(offset, timestamp)` for
/// each until it returns `true`; returns that record. Compressed batches are decompressed
/// as a stream. Used for timestamp lookups (ListOffsets), which Kafka answers per record.
pub fn find_record(
    batch: &[u8],
    mut visit: impl FnMut(i64, i64) -> bool,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = read_header(batch)?;
    let mut reader = records_reader(&header, batch)?;
    let malformed = |e: std::io::Error| BatchError::Malformed(format!("records: {e}"));
    for _ in 0..header.record_count {
        let len = read_varlong(&mut reader).map_err(malformed)?;
        if !(0..=MAX_RECORD_BYTES as i64).contains(&len) {
            return Err(BatchError::Malformed(format!("record length {len}")));
        }
        let mut counting = (&mut reader).take(len as u64);
        let mut attributes = [0u8; 1];
        std::io::Read::read_exact(&mut counting, &mut attributes).map_err(malformed)?;
        let ts_delta = read_varlong(&mut counting).map_err(malformed)?;
        let offset_delta = read_varlong(&mut counting).map_err(malformed)?;
        std::io::copy(&mut counting, &mut std::io::sink()).map_err(malformed)?;
        // Both deltas come off the wire: a batch whose deltas overflow its base is malformed.
        let (Some(offset), Some(ts)) = (
            header.base_offset.checked_add(offset_delta),
            header.base_timestamp.checked_add(ts_delta),
        ) else {
            return Err(BatchError::Malformed(format!(
                "record deltas overflow (offset delta {offset_delta}, timestamp delta {ts_delta})"
            )));
        };
        if visit(offset, ts) {
            return Ok(Some((offset, ts)));
        }
    }
    Ok(None)
}

/// The positions (0-based, in record order) of the records of a batch that have no key:
/// what a compacted topic refuses (Kafka's `RecordError` batch indexes). Compressed batches
/// are decompressed as a stream.
pub fn records_without_key(batch: &[u8]) -> Result<Vec<i32>, BatchError> {
    let header = read_header(batch)?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let mut reader = records_reader(&header, batch)?;
    let malformed = |e: std::io::Error| BatchError::Malformed(format!("records: {e}"));
    let mut missing = Vec::new();
    for i in 0..header.record_count {
        let len = read_varlong(&mut reader).map_err(malformed)?;
        if !(0..=MAX_RECORD_BYTES as i64).contains(&len) {
            return Err(BatchError::Malformed(format!("record length {len}")));
        }
        let mut counting = (&mut reader).take(len as u64);
        let mut attributes = [0u8; 1];
        std::io::Read::read_exact(&mut counting, &mut attributes).map_err(malformed)?;
        read_varlong(&mut counting).map_err(malformed)?; // timestamp delta
        read_varlong(&mut counting).map_err(malformed)?; // offset delta
        if read_varlong(&mut counting).map_err(malformed)? < 0 {
            missing.push(i);
        }
        std::io::copy(&mut counting, &mut std::io::sink()).map_err(malformed)?;
    }
    Ok(missing)
}

/// The codec of a topic's `compression.type` (Kafka's values): `None` for `producer` (batches
/// kept as the producer compressed them), else the codec batches are stored with.
pub fn topic_codec(compression_type: &str) -> Option<Result<i16, BatchError>> {
    Some(Ok(match compression_type {
        "producer" => return None,
        "uncompressed" => 0,
        "gzip" => 1,
        "snappy" => 2,
        "lz4" => 3,
        "zstd" => 4,
        _ => return Some(Err(BatchError::Compression(-1))),
    }))
}

/// The snappy block size Kafka's Java producer frames with (xerial's default).
const XERIAL_BLOCK: usize = 32 * 1024;

/// `batch` with its records compressed with `codec` instead (a topic whose
/// `compression.type` names a codec stores every batch with it, as Kafka's log validator
/// recompresses). The records, offsets, timestamps and producer fields are unchanged; the
/// length, attributes and CRC are rewritten. A batch already in `codec`, or a control batch,
/// is returned as it is. Decompressing more than `max_records_bytes` is refused.
pub fn recompress(
    batch: &Bytes,
    codec: i16,
    max_records_bytes: usize,
) -> Result<Bytes, BatchError> {
    let header = read_header(batch)?;
    if header.compression() == codec || header.is_control() {
        return Ok(batch.clone());
    }
    let mut records = Vec::new();
    let reader = records_reader(&header, batch)?;
    let read = std::io::Read::read_to_end(
        &mut std::io::Read::take(reader, max_records_bytes as u64 + 1),
        &mut records,
    )
    .map_err(|e| BatchError::Malformed(format!("records: {e}")))?;
    if read > max_records_bytes {
        return Err(BatchError::Invalid(format!(
            "the records decompress to more than {max_records_bytes} bytes"
        )));
    }
    let io = |e: std::io::Error| BatchError::Malformed(format!("compressing: {e}"));
    let body: Vec<u8> = match codec {
        0 => records,
        1 => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, &records).map_err(io)?;
            enc.finish().map_err(io)?
        }
        2 => {
            // Java's xerial framing, which every Kafka client reads.
            let mut out = Vec::with_capacity(records.len() / 2 + 16);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for chunk in records.chunks(XERIAL_BLOCK) {
                let block = enc
                    .compress_vec(chunk)
                    .map_err(|e| BatchError::Malformed(format!("snappy: {e}")))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        3 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut enc, &records).map_err(io)?;
            enc.finish()
                .map_err(|e| BatchError::Malformed(format!("lz4: {e}")))?
        }
        4 => zstd::encode_all(&records[..], 3).map_err(io)?,
        other => return Err(BatchError::Compression(other)),
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&body);
    let length = (HEADER_LEN - LOG_OVERHEAD + body.len()) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = (header.attributes & !0x07) | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    //! Valid batches for tests.
    use super::*;

    /// A valid uncompressed batch of `count` records with the given producer fields.
    pub fn batch(count: i32, producer_id: i64, epoch: i16, base_seq: i32) -> Bytes {
        let mut records = Vec::new();
        for i in 0..count {
            // length varint, attributes, ts delta, offset delta, key len -1, value len 1, value, headers 0
            let body = [
                0u8,
                0,
                zigzag(i),
                1, // key length -1 (zigzag)
                2, // value length 1
                b'x',
                0,
            ];
            records.push(zigzag(body.len() as i32));
            records.extend_from_slice(&body);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        let len = (HEADER_LEN - LOG_OVERHEAD + records.len()) as i32;
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&(1000i64 + i64::from(count)).to_be_bytes());
        b.extend_from_slice(&producer_id.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&base_seq.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    /// The same as [`batch`], marked transactional.
    pub fn transactional_batch(count: i32, producer_id: i64, epoch: i16, base_seq: i32) -> Bytes {
        let mut b = BytesMut::from(&batch(count, producer_id, epoch, base_seq)[..]);
        let attributes = i16_at(&b, 21) | TRANSACTIONAL;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b.freeze()
    }

    fn zigzag(v: i32) -> u8 {
        ((v << 1) ^ (v >> 31)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::batch;
    use super::*;

    #[test]
    fn recompressed_batches_keep_their_records() {
        let plain = batch(5, 7, 1, 10);
        let before = read_header(&plain).unwrap();
        let mut seen_before = Vec::new();
        find_record(&plain, |o, t| {
            seen_before.push((o, t));
            false
        })
        .unwrap();
        for codec in 1..=4 {
            let packed = recompress(&plain, codec, 1 << 20).unwrap();
            let h = read_header(&packed).unwrap();
            assert_eq!(h.compression(), codec);
            assert_eq!(
                (h.record_count, h.producer_id, h.base_sequence),
                (
                    before.record_count,
                    before.producer_id,
                    before.base_sequence
                )
            );
            // The CRC and framing check out, and the records read back the same.
            split_and_validate(&packed).unwrap();
            let mut seen = Vec::new();
            find_record(&packed, |o, t| {
                seen.push((o, t));
                false
            })
            .unwrap();
            assert_eq!(seen, seen_before, "codec {codec}");
            assert_eq!(records_without_key(&packed).unwrap(), vec![0, 1, 2, 3, 4]);
            // And back to uncompressed: the original bytes.
            assert_eq!(recompress(&packed, 0, 1 << 20).unwrap(), plain);
        }
        assert!(recompress(&plain, 4, 8).is_err(), "a decompression bound");
    }

    #[test]
    fn records_without_a_key_are_found_by_position() {
        // The test batches' records have no key.
        assert_eq!(
            records_without_key(&batch(3, 1, 0, 0)).unwrap(),
            vec![0, 1, 2]
        );
        let mut keyed = batch(1, 1, 0, 0).to_vec();
        // Record body: attributes, ts delta, offset delta, key length (zigzag -1 = 1); a key
        // length of 0 (zigzag 0) is an empty key, not a null one. The CRC is not checked.
        let key_at = keyed.len() - 4;
        assert_eq!(keyed[key_at], 1);
        keyed[key_at] = 0;
        assert_eq!(records_without_key(&keyed).unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn a_valid_batch_is_read_and_patched() {
        let b = batch(3, -1, -1, -1);
        let batches = split_and_validate(&b).unwrap();
        assert_eq!(batches.len(), 1);
        let (h, bytes) = &batches[0];
        assert_eq!(h.record_count, 3);
        assert_eq!(h.offset_count(), 3);
        assert_eq!(h.max_timestamp, 1003);
        let patched = with_base_offset(bytes, 42, 0);
        let again = split_and_validate(&patched).unwrap();
        assert_eq!(again[0].0.base_offset, 42);
    }

    #[test]
    fn plain_batches_are_valid_and_read_back_by_kafkas_decoder() {
        let long = vec![7u8; 300];
        let records: [PlainRecord<'_>; 3] = [
            (Some(b"k"), None),
            (Some(b"key"), Some(&long)),
            (None, Some(b"v")),
        ];
        let b = plain_batch(&records, 1_700_000_000_000).unwrap();
        // Pinned: the first record, a tombstone (key "k", null value).
        assert_eq!(
            &b[HEADER_LEN..HEADER_LEN + 8],
            &[14, 0, 0, 0, 2, b'k', 1, 0]
        );
        let (h, _) = &split_and_validate(&b).unwrap()[0];
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(h.offset_count(), 3);
        assert!(!h.is_transactional() && !h.is_control());
        let mut buf = b.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        type Read = (Option<Vec<u8>>, Option<Vec<u8>>, i64, i64);
        let got: Vec<Read> = set
            .records
            .iter()
            .map(|r| {
                (
                    r.key.as_ref().map(|k| k.to_vec()),
                    r.value.as_ref().map(|v| v.to_vec()),
                    r.offset,
                    r.timestamp,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some(b"k".to_vec()), None, 0, 1_700_000_000_000),
                (
                    Some(b"key".to_vec()),
                    Some(long.clone()),
                    1,
                    1_700_000_000_000
                ),
                (None, Some(b"v".to_vec()), 2, 1_700_000_000_000),
            ]
        );
        assert!(plain_batch(&[], 0).is_err());
    }

    #[test]
    fn markers_are_valid_control_batches_and_read_back() {
        for (marker, kind) in [(Marker::Abort, 0u8), (Marker::Commit, 1u8)] {
            let b = marker_batch(marker, 4000, 7, 0, 1_700_000_000_000);
            // Pinned bytes: Kafka's layout of an end-transaction marker.
            assert_eq!(&b[21..23], &[0, 0x30]);
            assert_eq!(
                &b[HEADER_LEN..],
                &[32, 0, 0, 0, 8, 0, 0, 0, kind, 12, 0, 0, 0, 0, 0, 0, 0]
            );
            let h = read_header(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (4000, 7, -1)
            );
            assert_eq!(read_marker(&b).unwrap(), Some(marker));
            // A client may not send one.
            assert!(matches!(
                split_and_validate(&b),
                Err(BatchError::Invalid(_))
            ));
        }
        let data = test_support::transactional_batch(2, 9, 0, 0);
        let (h, _) = &split_and_validate(&data).unwrap()[0];
        assert!(h.is_transactional() && !h.is_control());
        assert!(read_marker(&data).is_err());
    }

    #[test]
    fn several_batches_in_one_record_set() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(2, -1, -1, -1));
        all.extend_from_slice(&batch(5, -1, -1, -1));
        let batches = split_and_validate(&all.freeze()).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0.record_count, 5);
    }

    #[test]
    fn corruption_is_refused() {
        let b = batch(2, -1, -1, -1);
        let mut flipped = BytesMut::from(&b[..]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            split_and_validate(&flipped.freeze()),
            Err(BatchError::Crc { .. })
        ));
        let truncated = b.slice(..b.len() - 1);
        assert!(matches!(
            split_and_validate(&truncated),
            Err(BatchError::Malformed(_))
        ));
        let mut magic = BytesMut::from(&b[..]);
        magic[16] = 1;
        assert!(matches!(
            split_and_validate(&magic.freeze()),
            Err(BatchError::Magic(1))
        ));
        assert!(split_and_validate(&Bytes::new()).is_err());
        assert!(split_and_validate(&Bytes::from_static(&[0; 10])).is_err());
    }

    #[test]
    fn records_are_found_by_timestamp() {
        let b = batch(4, -1, -1, -1);
        // The helper's records all carry the batch's base timestamp (1000).
        let mut seen = Vec::new();
        let none = find_record(&b, |o, t| {
            seen.push((o, t));
            false
        })
        .unwrap();
        assert_eq!(none, None);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[2].0, 2);
        assert_eq!(find_record(&b, |o, _| o == 3).unwrap(), Some((3, 1000)));
    }

    #[test]
    fn sequences_wrap() {
        let h = read_header(&batch(3, 7, 0, i32::MAX - 1)).unwrap();
        assert_eq!(h.last_sequence(), 0);
        let h = read_header(&batch(3, 7, 0, 10)).unwrap();
        assert_eq!(h.last_sequence(), 12);
    }

    /// The records section of [`batch`] (uncompressed), and a batch holding `body` as
    /// its records section compressed with `codec`.
    fn records_section(count: i32) -> Vec<u8> {
        batch(count, -1, -1, -1)[HEADER_LEN..].to_vec()
    }

    fn compressed_batch(codec: i16, count: i32, body: &[u8]) -> Bytes {
        let mut b = batch(count, -1, -1, -1)[..HEADER_LEN].to_vec();
        let len = (HEADER_LEN - LOG_OVERHEAD + body.len()) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(body);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn compress(codec: i16, raw: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(raw).unwrap(),
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(raw).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::encode_all(raw, 3).unwrap(),
            _ => unreachable!("a codec"),
        }
    }

    /// Java's xerial framing of snappy: magic, version, compatible version, then
    /// length-prefixed raw blocks.
    fn xerial(raw: &[u8], block: usize) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for chunk in raw.chunks(block) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn every_codec_is_read_and_snappy_in_both_framings() {
        let raw = records_section(5);
        for codec in 1..=4 {
            let b = compressed_batch(codec, 5, &compress(codec, &raw));
            let mut n = 0;
            find_record(&b, |_, _| {
                n += 1;
                false
            })
            .unwrap_or_else(|e| panic!("codec {codec}: {e}"));
            assert_eq!(n, 5, "codec {codec}");
        }
        let b = compressed_batch(2, 5, &xerial(&raw, 7));
        assert_eq!(find_record(&b, |o, _| o == 4).unwrap(), Some((4, 1000)));
    }

    #[test]
    fn a_snappy_block_claiming_more_than_snappy_can_expand_is_refused() {
        // A raw block whose preamble claims 60 MiB, followed by 3 bytes.
        let body = [0x80, 0x80, 0x80, 0x1e, 0x00, 0x00, 0x00];
        let b = compressed_batch(2, 1, &body);
        let err = find_record(&b, |_, _| false).unwrap_err().to_string();
        assert!(err.contains("claims 62914560 bytes"), "{err}");
        // The same inside xerial framing.
        let mut framed = xerial(&[], 1);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        let b = compressed_batch(2, 1, &framed);
        assert!(find_record(&b, |_, _| false).is_err());
        // What snappy really makes of 1 MiB of zeros (its best ratio) is read.
        let zeros = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        let mut reader = SnappyReader::new(&packed);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
        assert_eq!(out, zeros);
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        use std::io::Write;
        let raw = records_section(2);
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        e.include_contentsize(false).unwrap();
        e.write_all(&raw).unwrap();
        let b = compressed_batch(4, 2, &e.finish().unwrap());
        let err = find_record(&b, |_, _| false).unwrap_err().to_string();
        assert!(err.contains("records"), "{err}");
    }

    #[test]
    fn record_deltas_that_overflow_the_base_are_malformed() {
        // A record whose offset delta added to the batch's base offset overflows i64 (found
        // by the record_batch fuzz target; its input is the seed gzip-offset-delta-overflow).
        let body = [
            0u8, // attributes
            0,   // timestamp delta
            0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x01, // offset delta i64::MAX
            1, 2, b'x', 0,
        ];
        let mut raw = vec![(body.len() as u8) << 1]; // zigzag varint of the length
        raw.extend_from_slice(&body);
        let mut b = compressed_batch(0, 1, &raw).to_vec();
        b[0..8].copy_from_slice(&1i64.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = find_record(&b, |_, _| false).unwrap_err().to_string();
        assert!(err.contains("overflow"), "{err}");
    }

    /// Every checked-in record_batch seed (among them the inputs of fixed fuzz findings) goes
    /// through the fuzz target's path on every `cargo test`, not only under cargo-fuzz.
    #[test]
    fn record_batch_fuzz_seeds_are_handled() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/record_batch");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((&mode, data)) = input.split_first() else {
                continue;
            };
            let mut data = data.to_vec();
            if mode & 1 == 1 && data.len() >= 61 {
                let length = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
                if let Some(end) = usize::try_from(length).ok().and_then(|l| l.checked_add(12))
                    && (21..=data.len()).contains(&end)
                {
                    let crc = crc32c::crc32c(&data[21..end]);
                    data[17..21].copy_from_slice(&crc.to_be_bytes());
                }
            }
            if let Ok(batches) = split_and_validate(&Bytes::from(data)) {
                for (header, batch) in batches {
                    let mut seen = 0;
                    let _ = find_record(&batch, |_, _| {
                        seen += 1;
                        false
                    });
                    assert!(seen <= header.record_count);
                }
            }
            n += 1;
        }
        assert!(n >= 7, "only {n} seeds in {}", dir.display());
    }

    /// Writes the fuzz targets' seed inputs (`kafka-wire/fuzz/seeds/`): run with
    /// `cargo test -p woodpecker-kafka-wire --lib write_batch_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes files: run by hand to refresh the fuzz seeds"]
    fn write_batch_fuzz_seeds() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        let raw = records_section(3);
        let mut with_mode = vec![1u8];
        with_mode.extend_from_slice(&batch(3, -1, -1, -1));
        write("record_batch", "uncompressed", &with_mode);
        let mut two = vec![1u8];
        two.extend_from_slice(&batch(2, 7, 0, 5));
        two.extend_from_slice(&batch(1, 7, 0, 7));
        write("record_batch", "two-idempotent", &two);
        for (codec, name) in [(1, "gzip"), (2, "snappy-raw"), (3, "lz4"), (4, "zstd")] {
            let packed = compress(codec, &raw);
            let mut seed = vec![1u8];
            seed.extend_from_slice(&compressed_batch(codec, 3, &packed));
            write("record_batch", name, &seed);
            // compressed_records: mode = codec - 1 + 4 * (count - 1).
            let mut seed = vec![(codec - 1) as u8 + 4 * 2];
            seed.extend_from_slice(&packed);
            write("compressed_records", name, &seed);
        }
        let framed = xerial(&raw, 9);
        let mut seed = vec![1u8];
        seed.extend_from_slice(&compressed_batch(2, 3, &framed));
        write("record_batch", "snappy-xerial", &seed);
        let mut seed = vec![1u8 + 4 * 2];
        seed.extend_from_slice(&framed);
        write("compressed_records", "snappy-xerial", &seed);
    }
}
