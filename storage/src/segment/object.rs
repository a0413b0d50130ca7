//! The object layout of one segment (spec section 5.2), as Go Woodpecker writes and reads it.
//!
//! Under `<rootPath>/<logId>/<segmentId>/`:
//!
//! | object | content | written with |
//! |---|---|---|
//! | `N.blk` | one block; block 0 starts with the segment's header record | conditional create |
//! | `N.blk` (fence) | one byte `F`, metadata `Fenced: true`, at the block after the last | conditional create |
//! | `footer.blk` | index records (start offset = block number, size = object size) and a footer | conditional create |
//! | `m_N.blk` | a merged block after compaction; `m_0.blk` starts with a compacted header | plain put |
//! | `footer.blk` (compacted) | index over `m_N.blk`, compacted flag, entry count kept | plain put, then originals deleted |
//! | `write.lock` | text naming the writer | conditional create |
//!
//! The writer assigns block numbers in order and writes each block once; the reader follows the
//! footer when there is one and otherwise probes `0.blk`, `1.blk`, ... until an object is
//! missing or is a fence. A segment that a takeover fenced without a footer (the Go v0.1.13 path
//! Milvus 2.6 uses) reads to its fence and ends there.
//!
//! Nothing here knows about metadata: which segments exist and what their last entry is comes
//! from the engine.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::codec::{
    self, BlockHeaderRecord, FOOTER_FLAG_COMPACTED, FORMAT_V5, FORMAT_V6, FooterRecord,
    HeaderRecord, INDEX_RECORD_LEN, IndexRecord,
};
use crate::error::{Error, Result};
use crate::object::{Created, Fence, ObjectStorage};
use crate::segment::DamagedBlock;

/// File name of the footer object.
pub const FOOTER_OBJECT: &str = "footer.blk";
/// File name of the writer lock object.
pub const LOCK_OBJECT: &str = "write.lock";
/// How many times fencing re-scans when a block lands where it wanted to put the fence.
const FENCE_ATTEMPTS: usize = 5;

/// The keys of one segment, relative to the storage root.
#[derive(Debug, Clone)]
pub struct SegmentObjects {
    storage: ObjectStorage,
    log_id: i64,
    segment_id: i64,
}

impl SegmentObjects {
    /// The objects of `segment_id` in `log_id`.
    pub fn new(storage: ObjectStorage, log_id: i64, segment_id: i64) -> Self {
        SegmentObjects {
            storage,
            log_id,
            segment_id,
        }
    }

    /// The storage.
    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// `<logId>/<segmentId>`.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.log_id, self.segment_id)
    }

    /// `<logId>/<segmentId>/<n>.blk`.
    pub fn block_key(&self, n: i32) -> String {
        format!("{}/{}/{n}.blk", self.log_id, self.segment_id)
    }

    /// `<logId>/<segmentId>/m_<n>.blk`.
    pub fn merged_key(&self, n: i32) -> String {
        format!("{}/{}/m_{n}.blk", self.log_id, self.segment_id)
    }

    /// `<logId>/<segmentId>/footer.blk`.
    pub fn footer_key(&self) -> String {
        format!("{}/{}/{FOOTER_OBJECT}", self.log_id, self.segment_id)
    }

    /// `<logId>/<segmentId>/write.lock`.
    pub fn lock_key(&self) -> String {
        format!("{}/{}/{LOCK_OBJECT}", self.log_id, self.segment_id)
    }

    fn location(&self, what: impl std::fmt::Display) -> String {
        format!("log {} segment {} {what}", self.log_id, self.segment_id)
    }

    /// Reads and checks `footer.blk`; `None` when the segment has none.
    pub async fn read_footer(&self) -> Result<Option<SegmentFooter>> {
        let key = self.footer_key();
        let bytes = match self.storage.get(&key).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        SegmentFooter::decode(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(self.location(FOOTER_OBJECT), e))
    }

    /// Creates `write.lock` naming this writer. Fails with [`Error::AlreadyExists`] when another
    /// writer holds it.
    pub async fn acquire_write_lock(&self) -> Result<()> {
        let body = format!(
            "logId={}\nsegmentId={}\npid={}\ntimestamp={}\nhostname={}\n",
            self.log_id,
            self.segment_id,
            std::process::id(),
            chrono::Utc::now().timestamp_millis(),
            hostname(),
        );
        match self
            .storage
            .put_if_absent(&self.lock_key(), Bytes::from(body))
            .await?
        {
            Created::New | Created::AlreadyOurs => Ok(()),
        }
    }

    /// Removes `write.lock`.
    pub async fn release_write_lock(&self) -> Result<()> {
        self.storage.delete(&self.lock_key()).await
    }

    /// Fences the segment: places a fence object after the last block and returns what the
    /// segment holds. Idempotent: an existing fence is found and reported.
    pub async fn fence(&self) -> Result<FenceOutcome> {
        for _ in 0..FENCE_ATTEMPTS {
            let scan = self.scan_blocks().await?;
            if let Some(footer) = &scan.footer {
                // Finalized: nothing can be appended any more; the footer is the end.
                return Ok(FenceOutcome {
                    last_block: footer.blocks.last().map(|b| b.block_number),
                    last_entry_id: footer.last_entry_id(),
                    fence_block: None,
                });
            }
            let next = scan.blocks.last().map_or(0, |b| b.block_number + 1);
            let outcome = FenceOutcome {
                last_block: scan.blocks.last().map(|b| b.block_number),
                last_entry_id: scan.blocks.last().map_or(-1, |b| b.last_entry_id),
                fence_block: Some(next),
            };
            if scan.fenced_at.is_some() {
                return Ok(FenceOutcome {
                    fence_block: scan.fenced_at,
                    ..outcome
                });
            }
            match self.storage.put_fence(&self.block_key(next)).await {
                Ok(Fence::Placed | Fence::AlreadyFenced) => return Ok(outcome),
                // A block landed there between our scan and our fence: scan again.
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Backend {
            op: "fence",
            path: self.prefix(),
            source: format!("blocks kept landing after {FENCE_ATTEMPTS} scans").into(),
        })
    }

    /// Lists the blocks present from `0.blk` on (decoding each block's header only through a
    /// full read and check), stopping at the first gap or fence object. A block that does not
    /// decode but that a valid block follows is listed too, with the entries the blocks
    /// around it leave for it (and in [`BlockScan::damaged`]); a damaged block that is the
    /// last one is an [`Error::Corrupt`]: nothing says which entries it held.
    pub async fn scan_blocks(&self) -> Result<BlockScan> {
        if let Some(footer) = self.read_footer().await? {
            return Ok(BlockScan {
                blocks: footer.blocks.clone(),
                fenced_at: None,
                footer: Some(footer),
                damaged: Vec::new(),
            });
        }
        let mut blocks: Vec<IndexRecord> = Vec::new();
        let mut damaged: Vec<DamagedBlock> = Vec::new();
        // A damaged block waiting for the block after it (which says where its entries end).
        let mut pending: Option<(DamagedBlock, Error)> = None;
        let mut n = 0;
        loop {
            let end = match self.read_raw_block(n).await {
                Ok(RawBlock::Missing) => Some(None),
                Ok(RawBlock::Fence) => Some(Some(n)),
                Ok(RawBlock::Block { block, size }) => {
                    if let Some((mut d, _)) = pending.take() {
                        d.last_entry_id = block.block_header.first_entry_id.saturating_sub(1);
                        blocks.push(IndexRecord {
                            block_number: d.block_number,
                            start_offset: i64::from(d.block_number),
                            block_size: u32::try_from(d.len).unwrap_or(u32::MAX),
                            first_entry_id: d.first_entry_id,
                            last_entry_id: d.last_entry_id,
                        });
                        damaged.push(d);
                    }
                    blocks.push(IndexRecord {
                        block_number: n,
                        start_offset: i64::from(n),
                        block_size: size,
                        first_entry_id: block.block_header.first_entry_id,
                        last_entry_id: block.block_header.last_entry_id,
                    });
                    None
                }
                Err(e @ Error::Corrupt { .. }) => {
                    if let Some((_, first_error)) = pending {
                        return Err(first_error);
                    }
                    let len = match self.storage.stat(&self.block_key(n)).await {
                        Ok(Some(info)) => info.size,
                        _ => 0,
                    };
                    let detail = match &e {
                        Error::Corrupt { detail, .. } => detail.clone(),
                        _ => e.to_string(),
                    };
                    let d = DamagedBlock {
                        block_number: n,
                        block_count: 1,
                        offset: 0,
                        len,
                        first_entry_id: blocks
                            .last()
                            .map_or(0, |b| b.last_entry_id.saturating_add(1)),
                        last_entry_id: i64::MAX,
                        object: Some(self.block_key(n)),
                        detail,
                    };
                    pending = Some((d, e));
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(fenced_at) = end {
                if let Some((_, e)) = pending {
                    return Err(e);
                }
                return Ok(BlockScan {
                    blocks,
                    fenced_at,
                    footer: None,
                    damaged,
                });
            }
            n += 1;
        }
    }

    async fn read_raw_block(&self, n: i32) -> Result<RawBlock> {
        let key = self.block_key(n);
        let (info, bytes) = match self.storage.get_with_info(&key).await {
            Ok(found) => found,
            Err(Error::NotFound { .. }) => return Ok(RawBlock::Missing),
            Err(e) => return Err(e),
        };
        if info.fenced {
            return Ok(RawBlock::Fence);
        }
        let block = self.decode_block(&bytes, n, false)?;
        Ok(RawBlock::Block {
            block,
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        })
    }

    fn decode_block(&self, bytes: &Bytes, n: i32, merged: bool) -> Result<codec::DecodedBlock> {
        let name = if merged {
            format!("merged block m_{n}.blk")
        } else {
            format!("block {n}.blk")
        };
        let block = codec::decode_block(bytes).map_err(|e| e.at(self.location(&name)))?;
        if block.block_header.block_number != n {
            return Err(Error::corrupt(
                self.location(&name),
                format!(
                    "block header names block {}",
                    block.block_header.block_number
                ),
            ));
        }
        if (n == 0) != block.header.is_some() {
            return Err(Error::corrupt(
                self.location(&name),
                "the segment header record must open block 0 and only block 0",
            ));
        }
        Ok(block)
    }

    /// The blocks that do not decode, without changing anything: every block the footer's
    /// index lists, or (without a footer) every block from `0.blk` up to the first missing
    /// one or the fence. Where a block's entries end is known from the footer or the block
    /// after it.
    pub async fn damaged_blocks(&self) -> Result<Vec<DamagedBlock>> {
        let mut damaged = Vec::new();
        if let Some(footer) = self.read_footer().await? {
            let merged = footer.is_compacted();
            for index in &footer.blocks {
                let key = if merged {
                    self.merged_key(index.block_number)
                } else {
                    self.block_key(index.block_number)
                };
                let body = match self.storage.get(&key).await {
                    Ok(b) => b,
                    Err(Error::NotFound { .. }) => {
                        damaged.push(damaged_object(
                            &key,
                            index,
                            0,
                            "listed in footer.blk but missing",
                        ));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let checked = self
                    .decode_block(&body, index.block_number, merged)
                    .and_then(|b| {
                        if b.block_header.first_entry_id != index.first_entry_id
                            || b.block_header.last_entry_id != index.last_entry_id
                        {
                            return Err(Error::corrupt(
                                self.location(&key),
                                "entry range differs from the footer index",
                            ));
                        }
                        Ok(())
                    });
                match checked {
                    Ok(()) => {}
                    Err(Error::Corrupt { detail, .. }) => {
                        damaged.push(damaged_object(&key, index, body.len(), detail));
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(damaged);
        }
        let mut next_id = 0i64;
        let mut n = 0;
        loop {
            match self.read_raw_block(n).await {
                Ok(RawBlock::Missing | RawBlock::Fence) => return Ok(damaged),
                Ok(RawBlock::Block { block, .. }) => {
                    if let Some(last) = damaged.last_mut()
                        && !last.end_known()
                    {
                        last.last_entry_id = block.block_header.first_entry_id.saturating_sub(1);
                    }
                    next_id = block.block_header.last_entry_id.saturating_add(1);
                }
                Err(Error::Corrupt { detail, .. }) => {
                    let len = match self.storage.stat(&self.block_key(n)).await {
                        Ok(Some(info)) => info.size,
                        _ => 0,
                    };
                    damaged.push(DamagedBlock {
                        block_number: n,
                        block_count: 1,
                        offset: 0,
                        len,
                        first_entry_id: next_id,
                        last_entry_id: i64::MAX,
                        object: Some(self.block_key(n)),
                        detail,
                    });
                }
                Err(e) => return Err(e),
            }
            n += 1;
        }
    }

    /// Whether the segment holds no block object (original, merged, fence) and no footer:
    /// only, perhaps, a `write.lock`.
    pub async fn holds_no_block(&self) -> Result<bool> {
        let prefix = self.prefix();
        for meta in self.storage.list(&prefix).await? {
            let key = self.storage.relative_key(&meta.location);
            if key
                .rsplit('/')
                .next()
                .is_some_and(|name| name.ends_with(".blk"))
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes the segment's objects: `flag` 0 everything (`*.blk`, `footer.blk`, `*.lock`),
    /// 1 only original `N.blk` blocks, 2 only merged `m_N.blk` blocks.
    pub async fn delete(&self, flag: DeleteScope) -> Result<usize> {
        let prefix = self.prefix();
        let mut deleted = 0;
        for meta in self.storage.list(&prefix).await? {
            let key = self.storage.relative_key(&meta.location).to_string();
            let Some(name) = key.rsplit('/').next() else {
                continue;
            };
            let is_merged = name.starts_with("m_") && name.ends_with(".blk");
            let is_original = !is_merged && name != FOOTER_OBJECT && name.ends_with(".blk");
            let selected = match flag {
                DeleteScope::All => name.ends_with(".blk") || name.ends_with(".lock"),
                DeleteScope::Originals => is_original,
                DeleteScope::Merged => is_merged,
            };
            if selected {
                self.storage.delete(&key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

enum RawBlock {
    Missing,
    Fence,
    Block {
        block: codec::DecodedBlock,
        size: u32,
    },
}

/// Which objects [`SegmentObjects::delete`] removes (the Go `flag` values 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteScope {
    /// Everything of the segment (flag 0; truncation GC).
    All,
    /// Original `N.blk` blocks only (flag 1).
    Originals,
    /// Merged `m_N.blk` blocks only (flag 2).
    Merged,
}

/// What [`SegmentObjects::scan_blocks`] found.
#[derive(Debug, Clone)]
pub struct BlockScan {
    /// Blocks in order (from the footer index when there is a footer).
    pub blocks: Vec<IndexRecord>,
    /// The block number holding a fence object, if the scan stopped at one.
    pub fenced_at: Option<i32>,
    /// The footer, when the segment is finalized.
    pub footer: Option<SegmentFooter>,
    /// Damaged blocks among `blocks` (found without a footer; with one, reads find them).
    pub damaged: Vec<DamagedBlock>,
}

/// What [`SegmentObjects::fence`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceOutcome {
    /// The last data block before the fence.
    pub last_block: Option<i32>,
    /// The last entry id the segment holds (-1 when empty).
    pub last_entry_id: i64,
    /// Where the fence object stands (`None` when a footer already closed the segment).
    pub fence_block: Option<i32>,
}

/// A decoded `footer.blk`: index records and the footer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFooter {
    /// The index, one record per block, in block order.
    pub blocks: Vec<IndexRecord>,
    /// The footer record.
    pub footer: FooterRecord,
}

impl SegmentFooter {
    /// Encodes `[IndexRecord × n][FooterRecord]`.
    pub fn encode(&self) -> Bytes {
        let mut out =
            Vec::with_capacity(self.blocks.len() * INDEX_RECORD_LEN + self.footer.encoded_len());
        for b in &self.blocks {
            b.encode(&mut out);
        }
        self.footer.encode(&mut out);
        Bytes::from(out)
    }

    /// Decodes and cross-checks a `footer.blk` image.
    pub fn decode(bytes: &Bytes) -> std::result::Result<Self, String> {
        let footer = codec::footer_from_tail(bytes).map_err(|e| e.to_string())?;
        let total = usize::try_from(footer.total_blocks)
            .map_err(|_| format!("negative block count {}", footer.total_blocks))?;
        let expected_len = total
            .checked_mul(INDEX_RECORD_LEN)
            .ok_or("block count overflows")?;
        if footer.index_length as usize != expected_len {
            return Err(format!(
                "index length {} does not match {} blocks",
                footer.index_length, total
            ));
        }
        let start = usize::try_from(footer.index_offset).map_err(|_| "index offset overflows")?;
        let end = start
            .checked_add(expected_len)
            .filter(|end| *end + footer.encoded_len() <= bytes.len())
            .ok_or_else(|| {
                format!(
                    "index {start}+{expected_len} does not fit before the footer in {} bytes",
                    bytes.len()
                )
            })?;
        let mut blocks = Vec::with_capacity(total);
        let mut at = start;
        while at < end {
            let (index, len) = IndexRecord::decode(&bytes[at..end]).map_err(|e| e.to_string())?;
            blocks.push(index);
            at += len;
        }
        for (i, pair) in blocks.windows(2).enumerate() {
            if pair[1].first_entry_id != pair[0].last_entry_id + 1 {
                return Err(format!(
                    "index records {i} and {} are not contiguous ({}..{} then {}..{})",
                    i + 1,
                    pair[0].first_entry_id,
                    pair[0].last_entry_id,
                    pair[1].first_entry_id,
                    pair[1].last_entry_id
                ));
            }
        }
        Ok(SegmentFooter { blocks, footer })
    }

    /// Whether the index lists merged `m_N.blk` blocks.
    pub fn is_compacted(&self) -> bool {
        self.footer.is_compacted()
    }

    /// The last entry id in the segment (-1 when empty).
    pub fn last_entry_id(&self) -> i64 {
        self.blocks.last().map_or(-1, |b| b.last_entry_id)
    }

    /// The index position of the block holding `entry_id`, or of the first block after it.
    fn block_for(&self, entry_id: i64) -> usize {
        self.blocks.partition_point(|b| b.last_entry_id < entry_id)
    }
}

/// A block encoded by [`ObjectSegmentWriter::prepare_block`], ready to upload.
#[derive(Debug, Clone)]
pub struct PreparedBlock {
    /// Its block number.
    pub header: BlockHeaderRecord,
    /// The object body.
    pub bytes: Bytes,
}

/// Writes one segment's blocks, fence and footer.
///
/// Blocks are numbered in order by [`prepare_block`](Self::prepare_block); uploads
/// ([`SegmentObjects::put_block`]) may run in parallel; [`block_durable`](Self::block_durable)
/// must then be told of them in block order, which is the order entries become durable in.
#[derive(Debug)]
pub struct ObjectSegmentWriter {
    objects: SegmentObjects,
    version: u16,
    first_entry_id: i64,
    next_block: i32,
    next_entry: i64,
    durable: Vec<IndexRecord>,
    finalized: bool,
}

impl ObjectSegmentWriter {
    /// A writer for a new segment whose first entry is `first_entry_id` (normally 0), writing
    /// format `version` (5 for Milvus 2.6 readers, 6 otherwise).
    pub fn new(
        objects: SegmentObjects,
        first_entry_id: i64,
        version: u16,
    ) -> Result<ObjectSegmentWriter> {
        if version != FORMAT_V5 && version != FORMAT_V6 {
            return Err(Error::config(
                "format version",
                format!("{version} is not 5 or 6"),
            ));
        }
        Ok(ObjectSegmentWriter {
            objects,
            version,
            first_entry_id,
            next_block: 0,
            next_entry: first_entry_id,
            durable: Vec::new(),
            finalized: false,
        })
    }

    /// A writer that continues a segment found in storage (after a restart): it picks up after
    /// the last block present. A fenced or finalized segment cannot be continued.
    pub async fn recover(objects: SegmentObjects, version: u16) -> Result<ObjectSegmentWriter> {
        let scan = objects.scan_blocks().await?;
        if let Some(at) = scan.fenced_at {
            return Err(Error::Fenced {
                path: objects.block_key(at),
            });
        }
        let mut w = ObjectSegmentWriter::new(objects, 0, version)?;
        if let Some(footer) = scan.footer {
            w.finalized = true;
            w.durable = footer.blocks;
        } else {
            w.durable = scan.blocks;
        }
        if let Some(first) = w.durable.first() {
            w.first_entry_id = first.first_entry_id;
        }
        if let Some(last) = w.durable.last() {
            w.next_block = last.block_number + 1;
            w.next_entry = last.last_entry_id + 1;
        }
        Ok(w)
    }

    /// The segment's objects.
    pub fn objects(&self) -> &SegmentObjects {
        &self.objects
    }

    /// The id the next entry must have.
    pub fn next_entry_id(&self) -> i64 {
        self.next_entry
    }

    /// The last entry id made durable (-1 when none).
    pub fn last_durable_entry_id(&self) -> i64 {
        self.durable
            .last()
            .map_or(self.first_entry_id - 1, |b| b.last_entry_id)
    }

    /// Blocks made durable, in order.
    pub fn durable_blocks(&self) -> &[IndexRecord] {
        &self.durable
    }

    /// Encodes the next block from `entries` (ids continue from the previous block).
    pub fn prepare_block<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<PreparedBlock> {
        if self.finalized {
            return Err(Error::Unsupported {
                what: format!("appending to finalized {}", self.objects.prefix()),
            });
        }
        if entries.is_empty() {
            return Err(Error::Unsupported {
                what: "an empty block".into(),
            });
        }
        let header = (self.next_block == 0).then_some(HeaderRecord {
            version: self.version,
            flags: 0,
            first_entry_id: self.first_entry_id,
        });
        let mut out = Vec::new();
        let block_header = codec::encode_block(
            header.as_ref(),
            self.next_block,
            self.next_entry,
            entries,
            &mut out,
        );
        self.next_block += 1;
        self.next_entry = block_header.last_entry_id + 1;
        Ok(PreparedBlock {
            header: block_header,
            bytes: Bytes::from(out),
        })
    }

    /// Records that `block` is stored and returns its index record. Blocks must be reported in
    /// block order.
    pub fn block_durable(&mut self, block: &PreparedBlock) -> Result<IndexRecord> {
        let expected = self.durable.last().map_or(0, |b| b.block_number + 1);
        if block.header.block_number != expected {
            return Err(Error::Unsupported {
                what: format!(
                    "block {} reported durable before block {expected}",
                    block.header.block_number
                ),
            });
        }
        let record = IndexRecord {
            block_number: block.header.block_number,
            start_offset: i64::from(block.header.block_number),
            block_size: u32::try_from(block.bytes.len()).unwrap_or(u32::MAX),
            first_entry_id: block.header.first_entry_id,
            last_entry_id: block.header.last_entry_id,
        };
        self.durable.push(record);
        Ok(record)
    }

    /// Encodes, uploads and records one block: the sequential path.
    pub async fn append_block<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<IndexRecord> {
        let block = self.prepare_block(entries)?;
        self.objects.put_block(&block).await?;
        self.block_durable(&block)
    }

    /// Writes `footer.blk` over the durable blocks. Idempotent: a footer already in place
    /// (ours from an earlier attempt, or a fencer's completion) counts as done and is returned.
    pub async fn finalize(&mut self) -> Result<SegmentFooter> {
        let blocks = self.durable.clone();
        let footer = SegmentFooter {
            footer: FooterRecord {
                total_blocks: i32::try_from(blocks.len()).unwrap_or(i32::MAX),
                total_records: u32::try_from(blocks.len()).unwrap_or(u32::MAX),
                total_size: blocks.iter().map(|b| u64::from(b.block_size)).sum(),
                index_offset: 0,
                index_length: u32::try_from(blocks.len() * INDEX_RECORD_LEN).unwrap_or(u32::MAX),
                version: self.version,
                flags: 0,
                lac: blocks.last().map_or(-1, |b| b.last_entry_id),
            },
            blocks,
        };
        let key = self.objects.footer_key();
        let result = match self
            .objects
            .storage
            .put_if_absent(&key, footer.encode())
            .await
        {
            Ok(_) => footer,
            Err(Error::AlreadyExists { .. }) => self
                .objects
                .read_footer()
                .await?
                .ok_or(Error::NotFound { path: key.clone() })?,
            Err(e) => return Err(e),
        };
        self.finalized = true;
        Ok(result)
    }
}

impl SegmentObjects {
    /// Uploads a prepared block with a conditional create. An object that is exactly this block
    /// is success (a retry of ours); a fence object is [`Error::Fenced`].
    pub async fn put_block(&self, block: &PreparedBlock) -> Result<Created> {
        self.storage
            .put_if_absent(
                &self.block_key(block.header.block_number),
                block.bytes.clone(),
            )
            .await
    }

    /// Merges a finalized segment's blocks into `m_N.blk` objects of about `max_bytes` each,
    /// rewrites `footer.blk` over them and deletes the originals. Idempotent: a segment already
    /// compacted is only cleaned of leftover originals.
    pub async fn compact(&self, max_bytes: usize) -> Result<SegmentFooter> {
        let Some(old) = self.read_footer().await? else {
            return Err(Error::Unsupported {
                what: format!(
                    "compacting {}: the segment must be finalized first",
                    self.prefix()
                ),
            });
        };
        if old.is_compacted() {
            self.delete_leftover_originals().await?;
            return Ok(old);
        }
        let version = old.footer.version;
        let first_entry = old.blocks.first().map_or(0, |b| b.first_entry_id);
        let mut writer = MergedWriter::new(self, version, first_entry, max_bytes);
        for index in &old.blocks {
            let bytes = self
                .storage
                .get(&self.block_key(index.block_number))
                .await?;
            let block = self.decode_block(&bytes, index.block_number, false)?;
            if block.block_header.first_entry_id != index.first_entry_id
                || block.block_header.last_entry_id != index.last_entry_id
            {
                return Err(Error::corrupt(
                    self.location(format!("block {}.blk", index.block_number)),
                    "entry range differs from the footer index",
                ));
            }
            for entry in block.entries {
                writer.push(entry).await?;
            }
        }
        let merged = writer.finish().await?;
        let footer = SegmentFooter {
            footer: FooterRecord {
                total_blocks: i32::try_from(merged.len()).unwrap_or(i32::MAX),
                total_records: old.footer.total_records,
                total_size: merged.iter().map(|b| u64::from(b.block_size)).sum(),
                index_offset: 0,
                index_length: u32::try_from(merged.len() * INDEX_RECORD_LEN).unwrap_or(u32::MAX),
                version,
                flags: old.footer.flags | FOOTER_FLAG_COMPACTED,
                lac: old.footer.lac,
            },
            blocks: merged,
        };
        // The footer is the commit point: before it, readers use the originals.
        self.storage
            .put(&self.footer_key(), footer.encode())
            .await?;
        for index in &old.blocks {
            self.storage
                .delete(&self.block_key(index.block_number))
                .await?;
        }
        Ok(footer)
    }

    async fn delete_leftover_originals(&self) -> Result<()> {
        for meta in self.storage.list(&self.prefix()).await? {
            let key = self.storage.relative_key(&meta.location).to_string();
            let name = key.rsplit('/').next().unwrap_or("");
            let is_numbered = name
                .strip_suffix(".blk")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
            if is_numbered && meta.size != 1 {
                // Data blocks only; a fence object (one byte) stays as the end marker.
                self.storage.delete(&key).await?;
            }
        }
        Ok(())
    }
}

impl SegmentObjects {
    /// Writes `footer` as `footer.blk` with a conditional create, the commit point of a
    /// compaction that produced no originals (service mode). A footer already there (an earlier
    /// attempt, or another replica's compaction) is read and returned instead.
    pub async fn put_footer_if_absent(&self, footer: &SegmentFooter) -> Result<SegmentFooter> {
        let key = self.footer_key();
        match self.storage.put_if_absent(&key, footer.encode()).await {
            Ok(_) => Ok(footer.clone()),
            Err(Error::AlreadyExists { .. }) => self
                .read_footer()
                .await?
                .ok_or(Error::NotFound { path: key }),
            Err(e) => Err(e),
        }
    }
}

/// How merged blocks record their position in the footer index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergedOffsets {
    /// `startOffset` = the merged block's number (embedded compaction, spec §5.2).
    BlockNumber,
    /// `startOffset` = 0 (service-mode staged compaction, spec §5.4).
    Zero,
}

/// Writes entries, in id order, as merged blocks `m_0.blk`, `m_1.blk`, ... of about `max_bytes`
/// each (a block closes once its payload reaches `max_bytes`): `m_0.blk` opens with a header
/// record carrying the compacted flag. Merged blocks are written with plain PUTs (a retried
/// compaction overwrites them with the same bytes); the caller commits them with a footer.
#[derive(Debug)]
pub struct MergedWriter<'a> {
    objects: &'a SegmentObjects,
    version: u16,
    segment_first: i64,
    max_bytes: usize,
    offsets: MergedOffsets,
    pending: Vec<Bytes>,
    pending_bytes: usize,
    next_entry: i64,
    merged: Vec<IndexRecord>,
}

impl<'a> MergedWriter<'a> {
    /// A writer of `objects`' merged blocks, for a segment whose first entry is
    /// `segment_first`, in format `version`.
    pub fn new(
        objects: &'a SegmentObjects,
        version: u16,
        segment_first: i64,
        max_bytes: usize,
    ) -> Self {
        MergedWriter {
            objects,
            version,
            segment_first,
            max_bytes: max_bytes.max(1),
            offsets: MergedOffsets::BlockNumber,
            pending: Vec::new(),
            pending_bytes: 0,
            next_entry: segment_first,
            merged: Vec::new(),
        }
    }

    /// Records `offsets` in the index instead of block numbers.
    pub fn with_offsets(mut self, offsets: MergedOffsets) -> Self {
        self.offsets = offsets;
        self
    }

    /// Adds the next entry; uploads a block once `max_bytes` of payload are pending.
    pub async fn push(&mut self, entry: Bytes) -> Result<()> {
        self.pending_bytes += entry.len();
        self.pending.push(entry);
        if self.pending_bytes >= self.max_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Uploads what is pending and returns the index of every merged block, in order.
    pub async fn finish(mut self) -> Result<Vec<IndexRecord>> {
        if !self.pending.is_empty() {
            self.flush().await?;
        }
        Ok(self.merged)
    }

    async fn flush(&mut self) -> Result<()> {
        let m = i32::try_from(self.merged.len()).unwrap_or(i32::MAX);
        let header = (m == 0).then_some(HeaderRecord {
            version: self.version,
            flags: FOOTER_FLAG_COMPACTED,
            first_entry_id: self.segment_first,
        });
        let mut out = Vec::new();
        let bh = codec::encode_block(header.as_ref(), m, self.next_entry, &self.pending, &mut out);
        let size = u32::try_from(out.len()).unwrap_or(u32::MAX);
        self.objects
            .storage
            .put(&self.objects.merged_key(m), Bytes::from(out))
            .await?;
        self.next_entry += self.pending.len() as i64;
        self.pending.clear();
        self.pending_bytes = 0;
        self.merged.push(IndexRecord {
            block_number: m,
            start_offset: match self.offsets {
                MergedOffsets::BlockNumber => i64::from(m),
                MergedOffsets::Zero => 0,
            },
            block_size: size,
            first_entry_id: bh.first_entry_id,
            last_entry_id: bh.last_entry_id,
        });
        Ok(())
    }
}

/// Why a [`ReadBatch`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// The byte budget was reached; more entries may follow at once.
    Budget,
    /// The last block present was read and the segment is still open: entries may come later.
    Tail,
    /// The segment is closed (footer or fence object) and everything was read.
    EndOfSegment,
}

/// Entries read from a segment.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// `(entry id, payload)` in id order, starting at the requested id.
    pub entries: Vec<(i64, Bytes)>,
    /// Why the batch ended.
    pub end: BatchEnd,
}

/// Reads one segment following the footer, or by probing blocks when there is none.
///
/// Keeps what it learnt (the footer, blocks seen, a fence) between calls, so a tail reader
/// only fetches new objects.
#[derive(Debug)]
pub struct ObjectSegmentReader {
    objects: SegmentObjects,
    footer: Option<SegmentFooter>,
    /// Blocks seen while probing, by number.
    probed: BTreeMap<i32, IndexRecord>,
    /// Damaged blocks stepped over while probing, with the last entry they held (known from
    /// the block after them).
    skipped: BTreeMap<i32, i64>,
    fenced_at: Option<i32>,
}

impl ObjectSegmentReader {
    /// A reader of `objects`; nothing is fetched until the first read.
    pub fn new(objects: SegmentObjects) -> Self {
        ObjectSegmentReader {
            objects,
            footer: None,
            probed: BTreeMap::new(),
            skipped: BTreeMap::new(),
            fenced_at: None,
        }
    }

    /// The footer, once one has been seen.
    pub fn footer(&self) -> Option<&SegmentFooter> {
        self.footer.as_ref()
    }

    /// Whether a fence object was met.
    pub fn is_fenced(&self) -> bool {
        self.fenced_at.is_some()
    }

    /// Reads entries with id ≥ `from`, up to about `max_bytes` (always at least one entry when
    /// one is available). Every block is checked (lengths and CRCs) before any entry of it is
    /// returned; a damaged block is [`Error::Corrupt`] naming log, segment and block.
    pub async fn read(&mut self, from: i64, max_bytes: usize) -> Result<ReadBatch> {
        if self.footer.is_none() && self.fenced_at.is_none() {
            self.footer = self.objects.read_footer().await?;
        }
        if self.footer.is_some() {
            return self.read_with_footer(from, max_bytes).await;
        }
        let batch = self.read_probing(from, max_bytes).await?;
        if batch.entries.is_empty() && batch.end == BatchEnd::Tail {
            // The writer may have finalized since we looked.
            if let Some(footer) = self.objects.read_footer().await? {
                self.footer = Some(footer);
                return self.read_with_footer(from, max_bytes).await;
            }
        }
        Ok(batch)
    }

    async fn read_with_footer(&mut self, from: i64, max_bytes: usize) -> Result<ReadBatch> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut refreshed = false;
        let mut i = self.footer.as_ref().map_or(0, |f| f.block_for(from));
        while let Some(footer) = self.footer.as_ref() {
            let Some(index) = footer.blocks.get(i).copied() else {
                break;
            };
            if bytes >= max_bytes && !entries.is_empty() {
                return Ok(ReadBatch {
                    entries,
                    end: BatchEnd::Budget,
                });
            }
            let merged = footer.is_compacted();
            let key = if merged {
                self.objects.merged_key(index.block_number)
            } else {
                self.objects.block_key(index.block_number)
            };
            let body = match self.objects.storage.get(&key).await {
                Ok(b) => b,
                // Compaction replaced the originals after we read the footer: read it again.
                Err(Error::NotFound { .. }) if !merged && !refreshed => {
                    refreshed = true;
                    self.footer = self.objects.read_footer().await?;
                    let next = entries.last().map_or(from, |(id, _)| id + 1);
                    i = self.footer.as_ref().map_or(0, |f| f.block_for(next));
                    continue;
                }
                Err(Error::NotFound { .. }) => {
                    return Err(Error::corrupt(
                        self.objects.location(&key),
                        "listed in footer.blk but missing",
                    ));
                }
                Err(e) => return Err(e),
            };
            let checked = self
                .objects
                .decode_block(&body, index.block_number, merged)
                .and_then(|block| {
                    if block.block_header.first_entry_id != index.first_entry_id
                        || block.block_header.last_entry_id != index.last_entry_id
                    {
                        return Err(Error::corrupt(
                            self.objects.location(&key),
                            "entry range differs from the footer index",
                        ));
                    }
                    Ok(block)
                });
            match checked {
                Ok(block) => push_entries(&block, from, &mut entries, &mut bytes),
                // The entries before it are good; a read that starts at it fails, naming it
                // and what it lost.
                Err(Error::Corrupt { .. }) if !entries.is_empty() => {
                    return Ok(ReadBatch {
                        entries,
                        end: BatchEnd::Budget,
                    });
                }
                Err(Error::Corrupt { detail, .. }) => {
                    let d = damaged_object(&key, &index, body.len(), detail);
                    return Err(d.error(self.objects.location("")));
                }
                Err(e) => return Err(e),
            }
            i += 1;
        }
        Ok(ReadBatch {
            entries,
            end: BatchEnd::EndOfSegment,
        })
    }

    async fn read_probing(&mut self, from: i64, max_bytes: usize) -> Result<ReadBatch> {
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        // Start at the known block holding `from`, else after the last known block.
        let mut n = self
            .probed
            .values()
            .find(|b| b.last_entry_id >= from)
            .map(|b| b.block_number)
            .unwrap_or_else(|| {
                let probed = self.probed.keys().next_back().copied();
                let skipped = self.skipped.keys().next_back().copied();
                probed.max(skipped).map_or(0, |last| last + 1)
            });
        loop {
            if bytes >= max_bytes && !entries.is_empty() {
                return Ok(ReadBatch {
                    entries,
                    end: BatchEnd::Budget,
                });
            }
            if self.fenced_at == Some(n) {
                return Ok(ReadBatch {
                    entries,
                    end: BatchEnd::EndOfSegment,
                });
            }
            let raw = match self.objects.read_raw_block(n).await {
                Ok(raw) => raw,
                Err(Error::Corrupt { .. }) if !entries.is_empty() => {
                    return Ok(ReadBatch {
                        entries,
                        end: BatchEnd::Budget,
                    });
                }
                Err(Error::Corrupt { detail, .. }) => {
                    // Where the damaged block ends is only known from the block after it.
                    let first = match self.skipped.get(&(n - 1)) {
                        Some(last) => last.saturating_add(1),
                        None => self
                            .probed
                            .get(&(n - 1))
                            .map_or(0, |b| b.last_entry_id.saturating_add(1)),
                    };
                    let next = match self.objects.read_raw_block(n + 1).await {
                        Ok(RawBlock::Block { block, .. }) => Some(block.block_header),
                        _ => None,
                    };
                    if let Some(next) = next
                        && next.first_entry_id > first
                        && next.first_entry_id <= from
                    {
                        // Wholly before the asked entry: step over it.
                        self.skipped
                            .insert(n, next.first_entry_id.saturating_sub(1));
                        n += 1;
                        continue;
                    }
                    let d = DamagedBlock {
                        block_number: n,
                        block_count: 1,
                        offset: 0,
                        len: 0,
                        first_entry_id: first,
                        last_entry_id: next
                            .map_or(i64::MAX, |h| h.first_entry_id.saturating_sub(1)),
                        object: Some(self.objects.block_key(n)),
                        detail,
                    };
                    return Err(d.error(self.objects.location("")));
                }
                Err(e) => return Err(e),
            };
            match raw {
                RawBlock::Missing => {
                    return Ok(ReadBatch {
                        entries,
                        end: BatchEnd::Tail,
                    });
                }
                RawBlock::Fence => {
                    self.fenced_at = Some(n);
                    return Ok(ReadBatch {
                        entries,
                        end: BatchEnd::EndOfSegment,
                    });
                }
                RawBlock::Block { block, size } => {
                    let prev_last = match self.skipped.get(&(n - 1)) {
                        Some(last) => Some(*last),
                        None => self.probed.get(&(n - 1)).map(|b| b.last_entry_id),
                    };
                    if let Some(prev_last) = prev_last
                        && prev_last + 1 != block.block_header.first_entry_id
                    {
                        return Err(Error::corrupt(
                            self.objects.location(format!("block {n}.blk")),
                            format!(
                                "starts at entry {} but block {} ended at {prev_last}",
                                block.block_header.first_entry_id,
                                n - 1,
                            ),
                        ));
                    }
                    self.probed.insert(
                        n,
                        IndexRecord {
                            block_number: n,
                            start_offset: i64::from(n),
                            block_size: size,
                            first_entry_id: block.block_header.first_entry_id,
                            last_entry_id: block.block_header.last_entry_id,
                        },
                    );
                    push_entries(&block, from, &mut entries, &mut bytes);
                }
            }
            n += 1;
        }
    }
}

/// A block object that does not decode, where the footer's index says what it held.
fn damaged_object(
    key: &str,
    index: &IndexRecord,
    len: usize,
    detail: impl std::fmt::Display,
) -> DamagedBlock {
    DamagedBlock {
        block_number: index.block_number,
        block_count: 1,
        offset: 0,
        len: len as u64,
        first_entry_id: index.first_entry_id,
        last_entry_id: index.last_entry_id,
        object: Some(key.to_string()),
        detail: detail.to_string(),
    }
}

fn push_entries(
    block: &codec::DecodedBlock,
    from: i64,
    entries: &mut Vec<(i64, Bytes)>,
    bytes: &mut usize,
) {
    for (id, payload) in block.entries_with_ids() {
        if id >= from {
            *bytes += payload.len();
            entries.push((id, payload.clone()));
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
