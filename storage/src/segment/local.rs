//! A segment as one local file, `data.log` (spec §5.3), as the embedded "local" mode and the
//! service-mode staged storage keep it.
//!
//! ```text
//! data.log = [HeaderRecord][Block 0][Block 1]…[IndexRecord × n][FooterRecord]
//! ```
//!
//! # Contract
//!
//! * [`LocalSegmentWriter::append_block`] returns only after the block is durable: written
//!   and `fdatasync`ed, or (a block under [`MAX_JOURNALED_BLOCK`] of a writer given a
//!   [`Journal`]) written and committed in the journal, whose group commit syncs many
//!   segments' blocks at once. Entry ids must run on without gaps.
//! * [`LocalSegmentWriter::finalize`] appends the index and the footer (v5 or v6, the writer's
//!   format setting) and syncs; afterwards the file never changes.
//! * Fencing is the presence of `write.fence` beside `data.log`. Once it exists no append
//!   succeeds (the writer checks for it before every block, so a fence made by another process
//!   is seen too); finalize is still allowed, since completing a segment follows fencing it.
//! * [`LocalSegmentWriter::open_for_recovery`] trusts a footer only when its index describes
//!   the file exactly. Otherwise it scans blocks from offset 25, verifying every CRC, and
//!   **truncates the file** after the last complete valid block, so that what a crash left
//!   half-written can never be read and later appends continue a clean file. A damaged block
//!   that valid blocks follow is not a torn write: it is kept, and so is everything after it
//!   ([`Recovery::damaged`]); the footer written later lists it, so the file still describes
//!   itself exactly.
//! * [`LocalSegmentReader`] may run while a writer appends: it re-reads the file's tail on
//!   every call and only hands out blocks whose CRCs it verified. A damaged block is an
//!   [`Error::Corrupt`] naming the file, the block, its offset, what is wrong and which entries
//!   are lost ([`DamagedBlock`]), never skipped silently: a read that reaches it returns the
//!   entries before it, and the next read (from its first entry) fails. Reads from entries
//!   after it go on, also past a damaged block header (the reader finds the next block that
//!   verifies). A block still being written is "no more yet".
//! * [`check_segment`] verifies a whole file without changing it, and [`repair_segment`]
//!   rewrites a finalized one with each damaged block replaced by a block of the same
//!   entries, each entry given by the caller (a marker saying it was lost).
//!
//! The file is read and written with plain `std::fs` calls on the blocking pool; there is no
//! mmap and no preallocation. The journal never changes the file's layout: replay writes
//! journaled blocks back at their offsets before any segment is opened.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use clock::blocking::Io;
use tokio::sync::{Mutex, oneshot};

use crate::codec::{
    BLOCK_HEADER_RECORD_LEN, BlockHeaderRecord, CodecError, FOOTER_V5_RECORD_LEN,
    FOOTER_V6_RECORD_LEN, FORMAT_V5, FORMAT_V6, FooterRecord, FrameHeader, HEADER_RECORD_LEN,
    HeaderRecord, INDEX_RECORD_LEN, IndexRecord, RECORD_HEADER_LEN, RecordType, decode_block_data,
    encode_block, footer_from_tail,
};
use crate::segment::DamagedBlock;
use crate::segment::disk::{io_error, sync_dir};
use crate::segment::journal::{Journal, MAX_JOURNALED_BLOCK};
use crate::{Error, Result};

pub use super::disk::DATA_FILE;
/// The largest single `write` of a block to `data.log` (see `append`).
const WRITE_PIECE: usize = 1 << 20;
/// Name of the fence marker; its presence means fenced.
pub const FENCE_FILE: &str = "write.fence";

/// Where one block of `data.log` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Block number, from 0.
    pub block_number: i32,
    /// Byte offset of the block header record.
    pub offset: u64,
    /// Bytes of the block: 37 plus the data region.
    pub size: u32,
    /// First entry id.
    pub first_entry_id: i64,
    /// Last entry id.
    pub last_entry_id: i64,
}

impl BlockInfo {
    /// Offset just past the block.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.size)
    }

    fn from_header(offset: u64, h: &BlockHeaderRecord) -> Option<Self> {
        let size = u32::try_from(h.block_size()).ok()?;
        Some(Self {
            block_number: h.block_number,
            offset,
            size,
            first_entry_id: h.first_entry_id,
            last_entry_id: h.last_entry_id,
        })
    }

    fn index_record(&self) -> IndexRecord {
        IndexRecord {
            block_number: self.block_number,
            // Offsets are bounded by the file size, far below i64::MAX.
            start_offset: self.offset as i64,
            block_size: self.size,
            first_entry_id: self.first_entry_id,
            last_entry_id: self.last_entry_id,
        }
    }
}

/// How [`LocalSegmentWriter::write_block`] wrote a block.
#[derive(Debug)]
pub enum BlockWrite {
    /// Written and synced in `data.log`.
    Durable(BlockInfo),
    /// Written in `data.log` and queued in the journal.
    Journaled(JournaledBlock),
}

/// A block waiting for the journal's group commit.
#[derive(Debug)]
pub struct JournaledBlock {
    info: BlockInfo,
    commit: oneshot::Receiver<Result<()>>,
}

impl JournaledBlock {
    /// Where the block is.
    pub fn info(&self) -> BlockInfo {
        self.info
    }

    /// Waits for the journal; pass the outcome to [`LocalSegmentWriter::confirm`].
    pub async fn durable(self) -> (BlockInfo, Result<()>) {
        let synced = self.commit.await.unwrap_or_else(|_| {
            Err(Error::Unsupported {
                what: "the journal stopped".into(),
            })
        });
        (self.info, synced)
    }
}

/// What [`LocalSegmentWriter::open_for_recovery`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The segment header record.
    pub header: HeaderRecord,
    /// The blocks kept, in order.
    pub blocks: Vec<BlockInfo>,
    /// Id of the last entry kept; `first_entry_id - 1` when there is none.
    pub last_entry_id: i64,
    /// The footer, when the file was finalized.
    pub footer: Option<FooterRecord>,
    /// Bytes cut off the end of the file (a torn or corrupt tail, or a torn index and footer).
    pub truncated_bytes: u64,
    /// Whether `write.fence` exists.
    pub fenced: bool,
    /// Damaged blocks that valid blocks follow: kept (they are in `blocks`, as a footer's
    /// index will list them), never cut off with what follows them.
    pub damaged: Vec<DamagedBlock>,
}

/// A snapshot of a writer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterStatus {
    /// Id the segment starts at (from the header record).
    pub first_entry_id: i64,
    /// Id of the last entry written; `first_entry_id - 1` when there is none.
    pub last_entry_id: i64,
    /// Blocks written.
    pub block_count: usize,
    /// Bytes of `data.log`.
    pub size: u64,
    /// Format version of header and footer.
    pub format_version: u16,
    /// The footer, once finalized.
    pub footer: Option<FooterRecord>,
    /// Whether this writer has seen the fence.
    pub fenced: bool,
}

/// Appends blocks to a segment's `data.log`. Methods take `&self` and are serialized by an
/// internal lock, so a fence from another task waits for an append in progress and the other
/// way round.
#[derive(Debug)]
pub struct LocalSegmentWriter {
    dir: PathBuf,
    inner: Arc<Mutex<WriterInner>>,
    /// The journal small blocks are committed through, with this segment's path in it.
    journal: Option<(Arc<Journal>, Arc<str>)>,
}

#[derive(Debug)]
struct WriterInner {
    path: PathBuf,
    fence_path: PathBuf,
    /// Shared with the journal, which syncs it at checkpoints.
    file: Arc<File>,
    header: HeaderRecord,
    blocks: Vec<BlockInfo>,
    /// End of the last block: where the next block (or the index) goes.
    end: u64,
    footer: Option<FooterRecord>,
    fenced: bool,
    /// A failed write or sync left the file in an unknown state; only recovery may touch it.
    broken: bool,
    /// Blocks written after `blocks` whose journal commit is not confirmed yet, in order.
    journaled: VecDeque<BlockInfo>,
}

impl LocalSegmentWriter {
    /// Creates `dir` (and its parents) and a new `data.log` holding the header record, synced.
    /// Fails with [`Error::AlreadyExists`] when `data.log` exists. `format_version` (5 or 6)
    /// is written in the header and later in the footer; 5 keeps the file readable by Milvus
    /// 2.6.
    pub async fn create(
        dir: impl AsRef<Path>,
        first_entry_id: i64,
        format_version: u16,
    ) -> Result<Self> {
        if format_version != FORMAT_V5 && format_version != FORMAT_V6 {
            return Err(Error::config(
                "formatVersion",
                format!("format version {format_version} is not one of 5 and 6"),
            ));
        }
        let dir = dir.as_ref().to_path_buf();
        let inner = blocking(Io::Write, {
            let dir = dir.clone();
            move || WriterInner::create(&dir, first_entry_id, format_version)
        })
        .await?;
        Ok(Self {
            dir,
            inner: Arc::new(Mutex::new(inner)),
            journal: None,
        })
    }

    /// Reopens the segment in `dir` after a crash or for fencing and completion. A valid
    /// footer makes the writer finalized; otherwise the file is scanned, truncated after its
    /// last complete valid block, and appends continue from there.
    pub async fn open_for_recovery(dir: impl AsRef<Path>) -> Result<(Self, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        let (inner, recovery) = blocking(Io::Write, {
            let dir = dir.clone();
            move || WriterInner::recover(&dir)
        })
        .await?;
        Ok((
            Self {
                dir,
                inner: Arc::new(Mutex::new(inner)),
                journal: None,
            },
            recovery,
        ))
    }

    /// The segment directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one block holding `entries` with ids `first_entry_id..` and returns once it is
    /// durable. The ids must continue the segment exactly. Fails with [`Error::Fenced`] once
    /// `write.fence` exists, and when the writer is finalized or broken by an earlier IO
    /// failure.
    pub async fn append_block<E: AsRef<[u8]>>(
        &self,
        first_entry_id: i64,
        entries: &[E],
    ) -> Result<BlockInfo> {
        match self.write_block(first_entry_id, entries).await? {
            BlockWrite::Durable(info) => Ok(info),
            BlockWrite::Journaled(started) => {
                let (info, synced) = started.durable().await;
                self.confirm(info, synced).await
            }
        }
    }

    /// Writes one block (ids as for [`append_block`](Self::append_block)) and returns without
    /// waiting when it goes through the journal: the caller awaits
    /// [`JournaledBlock::durable`] and passes the outcome to [`confirm`](Self::confirm), in
    /// block order. Several journaled blocks may be waiting at once, so that the next one is
    /// already queued when the journal's sync of the previous ones ends. A block written with
    /// its own sync ([`BlockWrite::Durable`]) also makes every journaled block before it
    /// durable (the sync covers the whole file).
    pub async fn write_block<E: AsRef<[u8]>>(
        &self,
        first_entry_id: i64,
        entries: &[E],
    ) -> Result<BlockWrite> {
        let mut inner = self.inner.clone().lock_owned().await;
        inner.check_append(first_entry_id, entries.len())?;
        let number = i32::try_from(inner.blocks.len() + inner.journaled.len()).map_err(|_| {
            Error::Unsupported {
                what: "more than i32::MAX blocks in a segment".into(),
            }
        })?;
        let mut buf = Vec::new();
        let block_header = encode_block(None, number, first_entry_id, entries, &mut buf);
        match &self.journal {
            Some((journal, rel)) if buf.len() < MAX_JOURNALED_BLOCK && journal.is_open() => {
                // Written without a sync, made durable by the journal's group commit. The
                // write only copies a small block into the page cache, so it is made here
                // rather than handed to the blocking pool: the hand-off and the wake-up back
                // cost more than the copy.
                let buf = Bytes::from(buf);
                let info = inner.write_block(&buf, &block_header, false)?;
                inner.journaled.push_back(info);
                let file = inner.file.clone();
                let commit = journal.commit(rel.clone(), info.offset, buf, file);
                Ok(BlockWrite::Journaled(JournaledBlock { info, commit }))
            }
            _ => blocking(Io::Write, move || {
                inner.write_block(&buf, &block_header, true)
            })
            .await
            .map(BlockWrite::Durable),
        }
    }

    /// Records the outcome of a journaled block's commit (in block order): the block is part
    /// of the segment, or (`Err`) the writer stops, since the file holds a block nobody will
    /// acknowledge. A block a later sync already made durable is confirmed whatever the
    /// journal said.
    pub async fn confirm(&self, info: BlockInfo, synced: Result<()>) -> Result<BlockInfo> {
        let mut inner = self.inner.lock().await;
        inner.confirm(info, synced)
    }

    /// Makes blocks smaller than [`MAX_JOURNALED_BLOCK`] durable through `journal` (which must
    /// cover this segment's directory) instead of an `fdatasync` of `data.log` each.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.journal = journal.relative(&self.dir).map(|rel| (journal, rel));
        self
    }

    /// Appends the index and the footer and syncs; idempotent: a finalized writer returns its
    /// footer again (and ignores `lac`). `lac` defaults to the last entry id (-1 when empty).
    /// A v5 footer cannot hold a LAC; the returned footer is what a reader will decode, so its
    /// `lac` is -1 then.
    pub async fn finalize(&self, lac: Option<i64>) -> Result<FooterRecord> {
        let mut inner = self.inner.clone().lock_owned().await;
        if let Some(footer) = inner.footer {
            return Ok(footer);
        }
        blocking(Io::Write, move || inner.finalize(lac)).await
    }

    /// Creates `write.fence` (idempotent) and syncs it: no append succeeds afterwards, from
    /// this writer or any other. Waits for an append in progress to finish first, so the
    /// blocks a reader can see once the fence exists are all the segment will ever hold.
    pub async fn fence(&self) -> Result<()> {
        let mut inner = self.inner.clone().lock_owned().await;
        let dir = self.dir.clone();
        blocking(Io::Write, move || {
            write_fence_file(&dir, &inner.fence_path)?;
            inner.fenced = true;
            Ok(())
        })
        .await
    }

    /// Whether `write.fence` exists.
    pub async fn is_fenced(&self) -> Result<bool> {
        let fence_path = self.dir.join(FENCE_FILE);
        blocking(Io::Read, move || exists(&fence_path)).await
    }

    /// A snapshot of the writer's state.
    pub async fn status(&self) -> WriterStatus {
        let inner = self.inner.lock().await;
        WriterStatus {
            first_entry_id: inner.header.first_entry_id,
            last_entry_id: inner.last_entry_id(),
            block_count: inner.blocks.len(),
            size: inner
                .footer
                .map_or(inner.end, |f| f.total_size + footer_len(&f) as u64),
            format_version: inner.header.version,
            footer: inner.footer,
            fenced: inner.fenced,
        }
    }
}

impl WriterInner {
    fn create(dir: &Path, first_entry_id: i64, format_version: u16) -> Result<Self> {
        let made_dir = !exists(dir)?;
        fs::create_dir_all(dir).map_err(|e| io_error("create_dir", dir, e))?;
        let path = dir.join(DATA_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        let header = HeaderRecord {
            version: format_version,
            flags: 0,
            first_entry_id,
        };
        let mut buf = Vec::with_capacity(HEADER_RECORD_LEN);
        header.encode(&mut buf);
        let written = file
            .write_all(&buf)
            .map_err(|e| io_error("write", &path, e))
            .and_then(|()| file.sync_all().map_err(|e| io_error("fsync", &path, e)))
            .and_then(|()| sync_dir(dir));
        if let Err(e) = written {
            // A full disk, typically. A file without its whole header can never hold an entry;
            // left behind, it would read as a damaged segment. Nothing of it was acknowledged.
            drop(file);
            let _ = fs::remove_file(&path);
            if made_dir {
                let _ = fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(Self {
            fence_path: dir.join(FENCE_FILE),
            path,
            file: Arc::new(file),
            header,
            blocks: Vec::new(),
            end: HEADER_RECORD_LEN as u64,
            footer: None,
            fenced: false,
            broken: false,
            journaled: VecDeque::new(),
        })
    }

    fn recover(dir: &Path) -> Result<(Self, Recovery)> {
        let path = dir.join(DATA_FILE);
        let fence_path = dir.join(FENCE_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let size = file_size(&file, &path)?;
        let header = read_header(&mut file, &path, size)?.ok_or_else(|| {
            CodecError::Truncated {
                needed: HEADER_RECORD_LEN as u64,
                available: size as usize,
            }
            .at(format!("{} header record", path.display()))
        })?;

        let (blocks, end, footer, damaged) = match read_footer(&mut file, &path, size, &header)? {
            Some((footer, blocks)) => {
                let end = footer.index_offset;
                (blocks, end, Some(footer), Vec::new())
            }
            None => {
                let scanned = scan_verified(&mut file, &path, size, &header)?;
                for d in &scanned.damaged {
                    tracing::error!(path = %path.display(), position = %d.position(), error = %d.detail, lost = %d.lost(),
                        "damaged block in a segment file; the blocks after it are kept (see `woodpecker log repair`)");
                }
                (scanned.blocks, scanned.end, None, scanned.damaged)
            }
        };
        let truncated_bytes = if footer.is_none() && end < size {
            tracing::warn!(path = %path.display(), size, keep = end, "truncating torn or corrupt tail of segment file");
            file.set_len(end)
                .map_err(|e| io_error("truncate", &path, e))?;
            file.sync_all().map_err(|e| io_error("fsync", &path, e))?;
            size - end
        } else {
            0
        };
        file.seek(SeekFrom::Start(end))
            .map_err(|e| io_error("seek", &path, e))?;
        let fenced = exists(&fence_path)?;
        let inner = Self {
            path,
            fence_path,
            file: Arc::new(file),
            header,
            blocks,
            end,
            footer,
            fenced,
            broken: false,
            journaled: VecDeque::new(),
        };
        let recovery = Recovery {
            header,
            blocks: inner.blocks.clone(),
            last_entry_id: inner.last_entry_id(),
            footer,
            truncated_bytes,
            fenced,
            damaged,
        };
        Ok((inner, recovery))
    }

    fn last_entry_id(&self) -> i64 {
        self.blocks
            .last()
            .map_or(self.header.first_entry_id.saturating_sub(1), |b| {
                b.last_entry_id
            })
    }

    fn check_append(&self, first_entry_id: i64, count: usize) -> Result<()> {
        if self.fenced {
            return Err(Error::Fenced {
                path: self.fence_path.display().to_string(),
            });
        }
        if self.footer.is_some() {
            return Err(Error::Unsupported {
                what: format!("append to finalized segment file {}", self.path.display()),
            });
        }
        if self.broken {
            return Err(Error::Unsupported {
                what: format!(
                    "append to {} after a failed write; reopen it with recovery",
                    self.path.display()
                ),
            });
        }
        let written = self
            .journaled
            .back()
            .map_or_else(|| self.last_entry_id(), |b| b.last_entry_id);
        let expected = written.checked_add(1);
        if count == 0 || expected != Some(first_entry_id) {
            return Err(Error::Unsupported {
                what: format!(
                    "block of {count} entries from id {first_entry_id} in {}: the next block must start at {} and \
                     hold at least one entry",
                    self.path.display(),
                    written.saturating_add(1)
                ),
            });
        }
        Ok(())
    }

    /// Writes a block at the end; with `sync`, syncs it and records it. Without, the caller
    /// records it (through [`Self::committed`]) once the journal holding it is synced.
    fn write_block(
        &mut self,
        buf: &[u8],
        block_header: &BlockHeaderRecord,
        sync: bool,
    ) -> Result<BlockInfo> {
        // A fence made by another process is noticed here, before anything is written.
        if exists(&self.fence_path)? {
            self.fenced = true;
            return Err(Error::Fenced {
                path: self.fence_path.display().to_string(),
            });
        }
        let info =
            BlockInfo::from_header(self.end, block_header).ok_or_else(|| Error::Unsupported {
                what: "a block of 4 GiB or more".into(),
            })?;
        self.append(buf, sync)?;
        if sync {
            // The sync covered the journaled blocks written before this one too.
            self.blocks.extend(self.journaled.drain(..));
            self.blocks.push(info);
        }
        Ok(info)
    }

    fn confirm(&mut self, info: BlockInfo, journal: Result<()>) -> Result<BlockInfo> {
        let already = self
            .blocks
            .get(info.block_number as usize)
            .is_some_and(|b| *b == info);
        if already {
            return Ok(info);
        }
        if self.journaled.front() != Some(&info) {
            self.broken = true;
            return Err(Error::Unsupported {
                what: format!(
                    "block {} of {} confirmed out of order",
                    info.block_number,
                    self.path.display()
                ),
            });
        }
        match journal {
            Ok(()) => {
                self.journaled.pop_front();
                self.blocks.push(info);
                Ok(info)
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Writes `buf` at the end and syncs. A failed write is rolled back by truncating to the
    /// old end; a failed sync (or rollback) leaves the file unknown, so the writer refuses
    /// further work and recovery must scan it.
    fn append_synced(&mut self, buf: &[u8]) -> Result<()> {
        self.append(buf, true)
    }

    fn append(&mut self, buf: &[u8], sync: bool) -> Result<()> {
        let mut file = &*self.file;
        // In pieces of at most WRITE_PIECE: a block of several MiB written in one call and then
        // synced took two to three times as long on an ext4 disk as the same bytes written in
        // 1 MiB pieces and synced once (the sync is what the caller waits for).
        let result = file.seek(SeekFrom::Start(self.end)).and_then(|_| {
            buf.chunks(WRITE_PIECE)
                .try_for_each(|piece| file.write_all(piece))
        });
        if let Err(e) = result {
            let rolled_back = file
                .set_len(self.end)
                .and_then(|_| file.seek(SeekFrom::Start(self.end)));
            if rolled_back.is_err() {
                self.broken = true;
            }
            return Err(io_error("write", &self.path, e));
        }
        if sync && let Err(e) = fsync_segment(file, buf.len()) {
            self.broken = true;
            return Err(io_error("fsync", &self.path, e));
        }
        self.end += buf.len() as u64;
        Ok(())
    }

    fn finalize(&mut self, lac: Option<i64>) -> Result<FooterRecord> {
        if !self.journaled.is_empty() {
            return Err(Error::Unsupported {
                what: format!(
                    "finalize {} while {} journaled blocks are unconfirmed",
                    self.path.display(),
                    self.journaled.len()
                ),
            });
        }
        if self.broken {
            return Err(Error::Unsupported {
                what: format!(
                    "finalize {} after a failed write; reopen it with recovery",
                    self.path.display()
                ),
            });
        }
        if let Some(empty) = self
            .blocks
            .iter()
            .find(|b| b.last_entry_id < b.first_entry_id)
        {
            // Bytes between blocks that held no entry (not what a damaged block leaves): an
            // index cannot describe them. `repair_segment` cannot either; the file needs an
            // operator.
            return Err(Error::corrupt(
                format!("{} at offset {}", self.path.display(), empty.offset),
                format!(
                    "{} bytes between blocks hold no entry; the file cannot be finalized as it is",
                    empty.size
                ),
            ));
        }
        let n = self.blocks.len();
        let index_length = u32::try_from(n * INDEX_RECORD_LEN).map_err(|_| Error::Unsupported {
            what: "an index of 4 GiB or more".into(),
        })?;
        let version = self.header.version;
        let mut footer = FooterRecord {
            total_blocks: n as i32,
            total_records: n as u32,
            total_size: self.end + u64::from(index_length),
            index_offset: self.end,
            index_length,
            version,
            flags: 0,
            lac: lac.unwrap_or_else(|| self.blocks.last().map_or(-1, |b| b.last_entry_id)),
        };
        let mut buf = Vec::with_capacity(n * INDEX_RECORD_LEN + FOOTER_V6_RECORD_LEN);
        for block in &self.blocks {
            block.index_record().encode(&mut buf);
        }
        footer.encode(&mut buf);
        self.append_synced(&buf)?;
        if version == FORMAT_V5 {
            footer.lac = -1;
        }
        self.footer = Some(footer);
        Ok(footer)
    }
}

/// Which entries a [`LocalBatch`] ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// The byte budget ran out; more entries are already in the file.
    More,
    /// The batch reaches the end of what is written; the segment is open and may grow.
    NotYet,
    /// The batch reaches the end of a finalized or fenced segment: nothing more will come.
    Eof,
}

/// One entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Entry id.
    pub entry_id: i64,
    /// Entry bytes.
    pub data: Bytes,
}

/// The answer to [`LocalSegmentReader::read_from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBatch {
    /// Entries in id order, from the asked id on.
    pub entries: Vec<LocalEntry>,
    /// What follows the last entry.
    pub end: BatchEnd,
    /// Id of the last entry in the file now (`first_entry_id - 1` when none, -1 before the
    /// header is written).
    pub last_entry_id: i64,
    /// Whether the segment has its footer.
    pub finalized: bool,
    /// Whether `write.fence` exists.
    pub fenced: bool,
}

/// Reads entries from a segment's `data.log`, also while a writer appends to it.
#[derive(Debug)]
pub struct LocalSegmentReader {
    dir: PathBuf,
    inner: Arc<Mutex<ReaderInner>>,
}

#[derive(Debug)]
struct ReaderInner {
    path: PathBuf,
    fence_path: PathBuf,
    file: File,
    header: Option<HeaderRecord>,
    /// Complete blocks found so far (by their header records; data CRCs are verified when read).
    blocks: Vec<BlockInfo>,
    /// Where the next block would start.
    scanned_to: u64,
    /// File size when the footer was last probed for.
    probed_size: u64,
    footer: Option<FooterRecord>,
    /// A bad record where the next block should start, that no valid block follows (yet):
    /// `(location, detail)`. Reads stop there with an error rather than treat it as the end.
    corrupt_at: Option<(String, String)>,
    /// Where the search for a valid block after `corrupt_at` last found none: (offset, file
    /// size); searched again only once the file grew.
    resync_failed: Option<(u64, u64)>,
    /// Damaged blocks among `blocks`, by offset: stretches found while scanning, and blocks
    /// whose data failed its CRC when read.
    damaged: HashMap<u64, DamagedBlock>,
    /// The last block read and verified: a reader going forward with a byte limit smaller
    /// than a block asks for the same block several times in a row, and blocks never change.
    last_block: Option<(BlockInfo, Vec<Bytes>)>,
}

impl LocalSegmentReader {
    /// Opens `dir/data.log` for reading; [`Error::NotFound`] when it does not exist.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let inner = blocking(Io::Read, {
            let dir = dir.clone();
            move || {
                let path = dir.join(DATA_FILE);
                let file = File::open(&path).map_err(|e| io_error("open", &path, e))?;
                Ok(ReaderInner {
                    path,
                    fence_path: dir.join(FENCE_FILE),
                    file,
                    header: None,
                    blocks: Vec::new(),
                    scanned_to: HEADER_RECORD_LEN as u64,
                    probed_size: 0,
                    footer: None,
                    corrupt_at: None,
                    resync_failed: None,
                    damaged: HashMap::new(),
                    last_block: None,
                })
            }
        })
        .await?;
        Ok(Self {
            dir,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The segment directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The footer, once a read has found it. Readers that serve only confirmed entries cap at
    /// its `lac`; this reader returns every entry the blocks hold.
    pub async fn footer(&self) -> Option<FooterRecord> {
        self.inner.lock().await.footer
    }

    /// Entries with ids from `entry_id` on, at most `max_bytes` of entry data but at least one
    /// entry when there is one. Every block is CRC-checked before its entries are returned.
    pub async fn read_from(&self, entry_id: i64, max_bytes: usize) -> Result<LocalBatch> {
        let mut inner = self.inner.clone().lock_owned().await;
        blocking(Io::Read, move || inner.read_from(entry_id, max_bytes)).await
    }
}

impl ReaderInner {
    fn read_from(&mut self, entry_id: i64, max_bytes: usize) -> Result<LocalBatch> {
        // Looked at before the file: a fence made by the writer waits for its appends, so all
        // the blocks there will ever be are visible below when it is seen here.
        let fenced = exists(&self.fence_path)?;
        self.refresh()?;
        let finalized = self.footer.is_some();
        let last_entry_id = match (self.blocks.last(), &self.header) {
            (Some(b), _) => b.last_entry_id,
            (None, Some(h)) => h.first_entry_id.saturating_sub(1),
            (None, None) => -1,
        };
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut end = if finalized || fenced {
            BatchEnd::Eof
        } else {
            BatchEnd::NotYet
        };
        let start = self.blocks.partition_point(|b| b.last_entry_id < entry_id);
        'blocks: for i in start..self.blocks.len() {
            let info = self.blocks[i];
            let read = match &self.last_block {
                Some((cached, entries)) if *cached == info => Ok(entries.clone()),
                _ if self.damaged.contains_key(&info.offset) => Err(None),
                _ => match self.read_block(&info) {
                    Ok(entries) => {
                        self.last_block = Some((info, entries.clone()));
                        Ok(entries)
                    }
                    Err(Error::Corrupt { detail, .. }) => {
                        let d = damaged_block(&info, detail);
                        self.damaged.insert(info.offset, d);
                        Err(None)
                    }
                    Err(e) => Err(Some(e)),
                },
            };
            let block = match read {
                Ok(block) => block,
                Err(Some(e)) => return Err(e),
                // Damaged: the entries before it are good; a read that starts at it fails,
                // naming it and what it lost.
                Err(None) if entries.is_empty() => {
                    let d = &self.damaged[&info.offset];
                    return Err(d.error(self.path.display()));
                }
                Err(None) => {
                    end = BatchEnd::More;
                    break 'blocks;
                }
            };
            for (offset, data) in block.into_iter().enumerate() {
                let id = info.first_entry_id + offset as i64;
                if id < entry_id {
                    continue;
                }
                if !entries.is_empty() && bytes.saturating_add(data.len()) > max_bytes {
                    end = BatchEnd::More;
                    break 'blocks;
                }
                bytes = bytes.saturating_add(data.len());
                entries.push(LocalEntry { entry_id: id, data });
            }
        }
        if end != BatchEnd::More
            && let Some((location, detail)) = &self.corrupt_at
        {
            // The entries before the damage are good; the next read reports it.
            if entries.is_empty() {
                return Err(Error::corrupt(location, detail));
            }
            end = BatchEnd::More;
        }
        Ok(LocalBatch {
            entries,
            end,
            last_entry_id,
            finalized,
            fenced,
        })
    }

    /// Learns what was appended since the last call: the header, new complete blocks, or the
    /// footer.
    fn refresh(&mut self) -> Result<()> {
        if self.footer.is_some() {
            return Ok(());
        }
        let size = file_size(&self.file, &self.path)?;
        let header = match self.header {
            Some(h) => h,
            None => match read_header(&mut self.file, &self.path, size)? {
                Some(h) => *self.header.insert(h),
                // The writer is still creating the file.
                None => return Ok(()),
            },
        };
        if size != self.probed_size {
            self.probed_size = size;
            if let Some((footer, blocks)) = read_footer(&mut self.file, &self.path, size, &header)?
            {
                // What was seen before must be what the index lists.
                if blocks.get(..self.blocks.len()) != Some(&self.blocks[..]) {
                    return Err(Error::corrupt(
                        self.path.display(),
                        "the footer's index disagrees with blocks read before it was written",
                    ));
                }
                self.blocks = blocks;
                self.scanned_to = footer.index_offset;
                self.footer = Some(footer);
                self.corrupt_at = None;
                return Ok(());
            }
        }
        loop {
            let next_id = self
                .blocks
                .last()
                .map_or(header.first_entry_id, |b| b.last_entry_id.saturating_add(1));
            let next_number = self
                .blocks
                .last()
                .map_or(0, |b| b.block_number.saturating_add(1));
            let (location, problem) =
                match next_block(&mut self.file, &self.path, self.scanned_to, size)? {
                    Next::Block(info) => match out_of_sequence(&info, next_id) {
                        None => {
                            self.scanned_to = info.end();
                            self.blocks.push(info);
                            continue;
                        }
                        Some(problem) => (block_location(&self.path, &info), problem),
                    },
                    Next::Corrupt(e) => (
                        format!(
                            "{} block {next_number} at offset {}",
                            self.path.display(),
                            self.scanned_to
                        ),
                        e.to_string(),
                    ),
                    Next::End | Next::Torn | Next::Trailer => {
                        self.corrupt_at = None;
                        return Ok(());
                    }
                };
            // A damaged block header: the blocks go on at the next block that verifies.
            let found = if self.resync_failed == Some((self.scanned_to, size)) {
                None
            } else {
                find_next_block(
                    &mut self.file,
                    &self.path,
                    self.scanned_to + 1,
                    size,
                    next_id,
                )?
            };
            let Some(found) = found else {
                self.resync_failed = Some((self.scanned_to, size));
                self.corrupt_at = Some((location, problem));
                return Ok(());
            };
            let d = DamagedBlock {
                block_number: next_number,
                block_count: found.block_number.saturating_sub(next_number).max(1),
                offset: self.scanned_to,
                len: found.offset - self.scanned_to,
                first_entry_id: next_id,
                last_entry_id: found.first_entry_id.saturating_sub(1),
                object: None,
                detail: problem,
            };
            self.blocks.push(stretch_info(&d));
            self.damaged.insert(d.offset, d);
            self.corrupt_at = None;
            self.scanned_to = found.offset;
        }
    }

    /// Reads and verifies one block; entries are zero-copy slices of one read buffer.
    fn read_block(&mut self, info: &BlockInfo) -> Result<Vec<Bytes>> {
        let buf = Bytes::from(read_at(
            &mut self.file,
            &self.path,
            info.offset,
            info.size as usize,
        )?);
        let located = |e: CodecError| e.at(block_location(&self.path, info));
        let (block_header, len) = BlockHeaderRecord::decode(&buf).map_err(located)?;
        if BlockInfo::from_header(info.offset, &block_header) != Some(*info) {
            return Err(Error::corrupt(
                block_location(&self.path, info),
                format!("block header {block_header:?} disagrees with the index entry {info:?}"),
            ));
        }
        decode_block_data(&block_header, &buf.slice(len..)).map_err(located)
    }
}

/// What follows a block boundary in the file.
enum Next {
    /// A complete block (by size; its data CRC is not checked yet).
    Block(BlockInfo),
    /// The file ends here.
    End,
    /// The file ends inside a record or block.
    Torn,
    /// An index or footer record starts here.
    Trailer,
    /// A record that is all there is wrong.
    Corrupt(CodecError),
}

/// Reads the record at `pos` and decides what it is, reading only the 37-byte block header
/// record of a block.
fn next_block(file: &mut File, path: &Path, pos: u64, size: u64) -> Result<Next> {
    if pos >= size {
        return Ok(Next::End);
    }
    let available = (size - pos).min(BLOCK_HEADER_RECORD_LEN as u64) as usize;
    if available < RECORD_HEADER_LEN {
        return Ok(Next::Torn);
    }
    let head = read_at(file, path, pos, available)?;
    let frame = FrameHeader::parse(&head).map_err(|e| e.at(path.display()))?;
    if frame.record_type == RecordType::Index.as_u8()
        || frame.record_type == RecordType::Footer.as_u8()
    {
        return Ok(Next::Trailer);
    }
    let block_header = match BlockHeaderRecord::decode(&head) {
        Ok((h, _)) => h,
        Err(e) if e.is_truncation() => return Ok(Next::Torn),
        Err(e) => return Ok(Next::Corrupt(e)),
    };
    if pos + block_header.block_size() > size {
        return Ok(Next::Torn);
    }
    match BlockInfo::from_header(pos, &block_header) {
        Some(info) => Ok(Next::Block(info)),
        None => Ok(Next::Corrupt(CodecError::BlockLength {
            declared: block_header.block_length,
            actual: (size - pos) as usize,
        })),
    }
}

/// Why a block does not continue the segment (its first id must follow the previous block's
/// last, and it must hold at least one entry), or `None` when it does.
fn out_of_sequence(info: &BlockInfo, next_id: i64) -> Option<String> {
    if info.first_entry_id != next_id {
        Some(format!(
            "block starts at entry {} where {next_id} was due",
            info.first_entry_id
        ))
    } else if info.last_entry_id < info.first_entry_id {
        Some(format!(
            "block holds no entries ({}..={})",
            info.first_entry_id, info.last_entry_id
        ))
    } else {
        None
    }
}

/// A block whose header is intact and whose data does not verify.
fn damaged_block(info: &BlockInfo, detail: impl fmt::Display) -> DamagedBlock {
    DamagedBlock {
        block_number: info.block_number,
        block_count: 1,
        offset: info.offset,
        len: u64::from(info.size),
        first_entry_id: info.first_entry_id,
        last_entry_id: info.last_entry_id,
        object: None,
        detail: detail.to_string(),
    }
}

/// A damaged stretch as an index entry (for a footer that describes the file as it is).
fn stretch_info(d: &DamagedBlock) -> BlockInfo {
    BlockInfo {
        block_number: d.block_number,
        offset: d.offset,
        size: u32::try_from(d.len).unwrap_or(u32::MAX),
        first_entry_id: d.first_entry_id,
        last_entry_id: d.last_entry_id,
    }
}

/// What a scan of blocks from offset 25 found.
#[derive(Debug, Default)]
struct Scanned {
    /// The blocks in order, damaged stretches included (as the index of a footer lists them),
    /// up to the last block that verifies.
    blocks: Vec<BlockInfo>,
    /// The damaged stretches among `blocks`.
    damaged: Vec<DamagedBlock>,
    /// Where the last block that verifies ends.
    end: u64,
    /// What follows `end` when it is neither the end of the file nor an index: (offset, why).
    /// A torn last write, or damage that no valid block follows (they look the same).
    tail: Option<(u64, String)>,
}

/// Scans blocks from offset 25, verifying every CRC. A damaged block is stepped over (by its
/// header's length, or to the next block that verifies when its header is damaged too) and
/// recorded when a valid block follows it; what no valid block follows is the tail.
fn scan_verified(
    file: &mut File,
    path: &Path,
    size: u64,
    header: &HeaderRecord,
) -> Result<Scanned> {
    let mut out = Scanned {
        end: HEADER_RECORD_LEN as u64,
        ..Scanned::default()
    };
    // Damage seen since the last block that verified; kept only once one follows it.
    let mut pending: Vec<DamagedBlock> = Vec::new();
    let mut pos = HEADER_RECORD_LEN as u64;
    let mut next_id = header.first_entry_id;
    let mut next_number = 0i32;
    loop {
        let problem = match next_block(file, path, pos, size)? {
            Next::Block(info) => match out_of_sequence(&info, next_id) {
                None => {
                    match verify_block(file, path, &info) {
                        Ok(()) => {
                            for d in pending.drain(..) {
                                out.blocks.push(stretch_info(&d));
                                out.damaged.push(d);
                            }
                            out.blocks.push(info);
                            out.end = info.end();
                        }
                        Err(e) => pending.push(damaged_block(&info, e)),
                    }
                    pos = info.end();
                    next_id = info.last_entry_id.saturating_add(1);
                    next_number = info.block_number.saturating_add(1);
                    continue;
                }
                Some(problem) => problem,
            },
            Next::Corrupt(e) => e.to_string(),
            Next::Torn => {
                out.tail = Some((pos, "a block is cut short".into()));
                break;
            }
            Next::End | Next::Trailer => break,
        };
        match find_next_block(file, path, pos + 1, size, next_id)? {
            Some(found) => {
                pending.push(DamagedBlock {
                    block_number: next_number,
                    block_count: found.block_number.saturating_sub(next_number).max(1),
                    offset: pos,
                    len: found.offset - pos,
                    first_entry_id: next_id,
                    last_entry_id: found.first_entry_id.saturating_sub(1),
                    object: None,
                    detail: problem,
                });
                next_id = found.first_entry_id;
                next_number = found.block_number;
                pos = found.offset;
            }
            None => {
                out.tail = Some((pos, problem));
                break;
            }
        }
    }
    if let Some(first) = pending.first() {
        out.tail = Some((first.offset, first.detail.clone()));
    }
    Ok(out)
}

/// Reads a block and checks its header against `info` and its data against the CRCs.
fn verify_block(file: &mut File, path: &Path, info: &BlockInfo) -> std::result::Result<(), String> {
    let buf = Bytes::from(
        read_at(file, path, info.offset, info.size as usize).map_err(|e| e.to_string())?,
    );
    let (h, len) = BlockHeaderRecord::decode(&buf).map_err(|e| e.to_string())?;
    if BlockInfo::from_header(info.offset, &h) != Some(*info) {
        return Err(format!(
            "block header {h:?} disagrees with the index entry {info:?}"
        ));
    }
    decode_block_data(&h, &buf.slice(len..))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The first block after `from` whose header and data verify and whose entries could follow
/// entry `next_id - 1`: where the blocks go on after a stretch that does not decode. Reads
/// the rest of the file; only damaged files get here.
fn find_next_block(
    file: &mut File,
    path: &Path,
    from: u64,
    size: u64,
    next_id: i64,
) -> Result<Option<BlockInfo>> {
    if from + BLOCK_HEADER_RECORD_LEN as u64 > size {
        return Ok(None);
    }
    let buf = Bytes::from(read_at(file, path, from, (size - from) as usize)?);
    let block_type = RecordType::BlockHeader.as_u8();
    let payload_len = (BLOCK_HEADER_RECORD_LEN - RECORD_HEADER_LEN) as u32;
    for q in 0..=buf.len() - BLOCK_HEADER_RECORD_LEN {
        // A block header record: type 5, payload length 28 (cheap checks before the CRC).
        if buf[q + 4] != block_type
            || u32::from_le_bytes([buf[q + 5], buf[q + 6], buf[q + 7], buf[q + 8]]) != payload_len
        {
            continue;
        }
        let Ok((h, len)) = BlockHeaderRecord::decode(&buf[q..]) else {
            continue;
        };
        if h.first_entry_id < next_id || h.last_entry_id < h.first_entry_id {
            continue;
        }
        let Some(end) = (q as u64).checked_add(h.block_size()) else {
            continue;
        };
        if end > buf.len() as u64 {
            continue;
        }
        if decode_block_data(&h, &buf.slice(q + len..end as usize)).is_ok()
            && let Some(info) = BlockInfo::from_header(from + q as u64, &h)
        {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// What [`check_segment`] found in a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The segment header record.
    pub header: HeaderRecord,
    /// The footer, when the file is finalized.
    pub footer: Option<FooterRecord>,
    /// Blocks that verify.
    pub valid_blocks: usize,
    /// Damaged blocks followed by valid ones (or listed in the footer's index), in order.
    pub damaged: Vec<DamagedBlock>,
    /// The last entry of the last block that verifies (`first_entry_id - 1` when none).
    pub last_entry_id: i64,
    /// Bytes of the file.
    pub size: u64,
    /// What follows the last valid block when it is not the end or an index: (offset, why).
    /// A torn last write, which recovery cuts off; or damage no valid block follows.
    pub tail: Option<(u64, String)>,
}

/// Reads and verifies every block of `dir/data.log` without changing it: following the
/// footer's index when the file is finalized, else scanning (past damaged blocks, as recovery
/// does). `Ok(None)` when there is no `data.log`.
pub async fn check_segment(dir: impl AsRef<Path>) -> Result<Option<SegmentCheck>> {
    let dir = dir.as_ref().to_path_buf();
    blocking(Io::Read, move || {
        let path = dir.join(DATA_FILE);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let size = file_size(&file, &path)?;
        let header = read_header(&mut file, &path, size)?.ok_or_else(|| {
            CodecError::Truncated {
                needed: HEADER_RECORD_LEN as u64,
                available: size as usize,
            }
            .at(format!("{} header record", path.display()))
        })?;
        let none_yet = header.first_entry_id.saturating_sub(1);
        if let Some((footer, blocks)) = read_footer(&mut file, &path, size, &header)? {
            let mut damaged = Vec::new();
            let mut last_entry_id = none_yet;
            for info in &blocks {
                match verify_block(&mut file, &path, info) {
                    Ok(()) => last_entry_id = info.last_entry_id,
                    Err(e) => damaged.push(damaged_block(info, e)),
                }
            }
            return Ok(Some(SegmentCheck {
                header,
                footer: Some(footer),
                valid_blocks: blocks.len() - damaged.len(),
                damaged,
                last_entry_id,
                size,
                tail: None,
            }));
        }
        let scanned = scan_verified(&mut file, &path, size, &header)?;
        Ok(Some(SegmentCheck {
            header,
            footer: None,
            valid_blocks: scanned.blocks.len() - scanned.damaged.len(),
            last_entry_id: scanned.blocks.last().map_or(none_yet, |b| b.last_entry_id),
            damaged: scanned.damaged,
            size,
            tail: scanned.tail,
        }))
    })
    .await
}

/// What [`repair_segment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The damaged blocks that were replaced, in order.
    pub replaced: Vec<DamagedBlock>,
    /// Where the damaged file was kept, byte for byte.
    pub kept: PathBuf,
    /// Bytes of the new `data.log`.
    pub size: u64,
}

/// Name prefix of the damaged file [`repair_segment`] keeps: `data.log.damaged-<unix secs>`.
pub const DAMAGED_FILE_PREFIX: &str = "data.log.damaged-";

/// Rewrites the finalized segment in `dir` with each damaged block (one its footer's index
/// lists and that does not verify) replaced by a block of the same number and entry ids,
/// whose entry `id` is `lost(id, damaged block)`. Every other block is copied byte for byte,
/// and the index and footer are written for the new layout. The new file replaces `data.log`
/// in one rename, and the damaged file is kept beside it (a hard link made first:
/// `data.log` exists throughout). `Ok(None)`, changing nothing, when no block is damaged.
///
/// The segment must be finalized: a segment without a footer may still be written (fence and
/// complete it first, which keeps its damaged blocks in the index). Nothing else may write the
/// file meanwhile, and no journal may hold blocks of it (the caller holds the root's journal,
/// which replayed them when it opened). `now_secs` (Unix seconds, from the caller's clock)
/// names the kept file.
pub async fn repair_segment<F>(
    dir: impl AsRef<Path>,
    now_secs: u64,
    lost: F,
) -> Result<Option<Repaired>>
where
    F: Fn(i64, &DamagedBlock) -> Vec<u8> + Send + 'static,
{
    let dir = dir.as_ref().to_path_buf();
    blocking(Io::Read, move || {
        let path = dir.join(DATA_FILE);
        let mut file = File::open(&path).map_err(|e| io_error("open", &path, e))?;
        let size = file_size(&file, &path)?;
        let header = read_header(&mut file, &path, size)?.ok_or_else(|| {
            Error::corrupt(format!("{} header record", path.display()), "truncated")
        })?;
        let Some((footer, blocks)) = read_footer(&mut file, &path, size, &header)? else {
            return Err(Error::Unsupported {
                what: format!(
                    "repair of {}: the segment has no footer, so it may still be written; fence \
                     and complete it first",
                    path.display()
                ),
            });
        };
        let mut damaged = HashMap::new();
        for info in &blocks {
            if let Err(e) = verify_block(&mut file, &path, info) {
                damaged.insert(info.offset, damaged_block(info, e));
            }
        }
        if damaged.is_empty() {
            return Ok(None);
        }

        let mut out = Vec::with_capacity(size as usize);
        header.encode(&mut out);
        let mut index = Vec::with_capacity(blocks.len());
        let mut replaced = Vec::new();
        for info in &blocks {
            let offset = out.len() as u64;
            match damaged.remove(&info.offset) {
                Some(d) => {
                    let entries: Vec<Vec<u8>> = (d.first_entry_id..=d.last_entry_id)
                        .map(|id| lost(id, &d))
                        .collect();
                    let h =
                        encode_block(None, d.block_number, d.first_entry_id, &entries, &mut out);
                    index.push(BlockInfo::from_header(offset, &h).ok_or_else(|| {
                        Error::Unsupported {
                            what: "a replacement block of 4 GiB or more".into(),
                        }
                    })?);
                    replaced.push(d);
                }
                None => {
                    out.extend_from_slice(&read_at(
                        &mut file,
                        &path,
                        info.offset,
                        info.size as usize,
                    )?);
                    index.push(BlockInfo { offset, ..*info });
                }
            }
        }
        let end = out.len() as u64;
        let index_length =
            u32::try_from(index.len() * INDEX_RECORD_LEN).map_err(|_| Error::Unsupported {
                what: "an index of 4 GiB or more".into(),
            })?;
        for info in &index {
            info.index_record().encode(&mut out);
        }
        FooterRecord {
            total_blocks: index.len() as i32,
            total_records: index.len() as u32,
            total_size: end + u64::from(index_length),
            index_offset: end,
            index_length,
            ..footer
        }
        .encode(&mut out);

        let staged = dir.join(format!("{DATA_FILE}.repair"));
        let _ = fs::remove_file(&staged);
        let mut new = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
            .map_err(|e| io_error("create", &staged, e))?;
        new.write_all(&out)
            .and_then(|()| new.sync_all())
            .map_err(|e| io_error("write", &staged, e))?;
        let kept = dir.join(format!("{DAMAGED_FILE_PREFIX}{now_secs}"));
        fs::hard_link(&path, &kept).map_err(|e| io_error("link", &kept, e))?;
        fs::rename(&staged, &path).map_err(|e| io_error("rename", &staged, e))?;
        sync_dir(&dir)?;
        Ok(Some(Repaired {
            replaced,
            kept,
            size: out.len() as u64,
        }))
    })
    .await
}

/// Reads the header record; `None` while the file is shorter than one.
fn read_header(file: &mut File, path: &Path, size: u64) -> Result<Option<HeaderRecord>> {
    if size < HEADER_RECORD_LEN as u64 {
        return Ok(None);
    }
    let buf = read_at(file, path, 0, HEADER_RECORD_LEN)?;
    let (header, _) = HeaderRecord::decode(&buf)
        .map_err(|e| e.at(format!("{} header record", path.display())))?;
    Ok(Some(header))
}

/// Looks for a footer at the end of the file and accepts it only when its index describes the
/// file exactly: blocks back to back from offset 25 with contiguous entry ids, the index right
/// after them, the footer right after the index. Entry data can hold any bytes, a footer's
/// included, so the footer's own CRC is not enough.
fn read_footer(
    file: &mut File,
    path: &Path,
    size: u64,
    header: &HeaderRecord,
) -> Result<Option<(FooterRecord, Vec<BlockInfo>)>> {
    let min = (HEADER_RECORD_LEN + FOOTER_V5_RECORD_LEN) as u64;
    if size < min {
        return Ok(None);
    }
    let tail_len = (size - HEADER_RECORD_LEN as u64).min(FOOTER_V6_RECORD_LEN as u64);
    let tail = read_at(file, path, size - tail_len, tail_len as usize)?;
    let Ok(footer) = footer_from_tail(&tail) else {
        return Ok(None);
    };
    match index_blocks(file, path, size, header, &footer)? {
        Ok(blocks) => Ok(Some((footer, blocks))),
        Err(reason) => {
            tracing::warn!(path = %path.display(), ?footer, reason, "ignoring a footer that does not fit the file");
            Ok(None)
        }
    }
}

/// The blocks a footer's index lists, or why the footer does not describe this file.
fn index_blocks(
    file: &mut File,
    path: &Path,
    size: u64,
    header: &HeaderRecord,
    footer: &FooterRecord,
) -> Result<std::result::Result<Vec<BlockInfo>, &'static str>> {
    let Ok(n) = u64::try_from(footer.total_blocks) else {
        return Ok(Err("negative block count"));
    };
    if u64::from(footer.index_length) != n * INDEX_RECORD_LEN as u64 {
        return Ok(Err("index length is not 41 bytes per block"));
    }
    if footer.index_offset < HEADER_RECORD_LEN as u64
        || footer
            .index_offset
            .checked_add(u64::from(footer.index_length))
            != Some(footer.total_size)
        || footer.total_size.checked_add(footer_len(footer) as u64) != Some(size)
    {
        return Ok(Err(
            "index offset, index length and total size do not add up to the file size",
        ));
    }
    // Bounded by the file size, checked just above.
    let index = read_at(
        file,
        path,
        footer.index_offset,
        footer.index_length as usize,
    )?;
    let mut blocks = Vec::with_capacity(index.len() / INDEX_RECORD_LEN);
    let mut pos = HEADER_RECORD_LEN as u64;
    let mut next_id = header.first_entry_id;
    for chunk in index.chunks_exact(INDEX_RECORD_LEN) {
        let Ok((record, _)) = IndexRecord::decode(chunk) else {
            return Ok(Err("an index record does not decode"));
        };
        let info = BlockInfo {
            block_number: record.block_number,
            offset: u64::try_from(record.start_offset).unwrap_or(u64::MAX),
            size: record.block_size,
            first_entry_id: record.first_entry_id,
            last_entry_id: record.last_entry_id,
        };
        if info.offset != pos || (info.size as usize) < BLOCK_HEADER_RECORD_LEN {
            return Ok(Err("index blocks are not back to back from offset 25"));
        }
        if out_of_sequence(&info, next_id).is_some() {
            return Ok(Err("index entry ids do not run on"));
        }
        pos = info.end();
        next_id = info.last_entry_id.saturating_add(1);
        blocks.push(info);
    }
    if pos != footer.index_offset {
        return Ok(Err("the index does not start where the last block ends"));
    }
    Ok(Ok(blocks))
}

fn footer_len(footer: &FooterRecord) -> usize {
    footer.encoded_len()
}

fn block_location(path: &Path, info: &BlockInfo) -> String {
    format!(
        "{} block {} at offset {}",
        path.display(),
        info.block_number,
        info.offset
    )
}

/// Reads exactly `len` bytes at `offset`; the caller has checked them against the file size.
fn read_at(file: &mut File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| io_error("read", path, e))?;
    Ok(buf)
}

fn file_size(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| io_error("stat", path, e))?
        .len())
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|e| io_error("stat", path, e))
}

fn write_fence_file(dir: &Path, fence_path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(fence_path)
        .map_err(|e| io_error("create", fence_path, e))?;
    // The body is informational only; presence is what fences.
    let body = format!("fenced=true\npid={}\n", std::process::id());
    file.write_all(body.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| io_error("write", fence_path, e))?;
    sync_dir(dir)
}

/// `fdatasync` of a segment file after `bytes` were written, measured and traced.
fn fsync_segment(file: &File, bytes: usize) -> io::Result<()> {
    let _span = tracing::debug_span!(target: telemetry::trace::SPAN_TARGET, "storage.fsync", file = "segment", bytes).entered();
    let timer = telemetry::Stopwatch::start();
    file.sync_data()?;
    let (latency, synced) = telemetry::catalog::fsync(telemetry::catalog::FsyncFile::Segment);
    latency.observe(timer.elapsed_nanos());
    synced.add(bytes as u64);
    Ok(())
}

/// Runs blocking file work of kind `io` through [`clock::blocking`] (tokio's blocking pool, or
/// in place in a simulation), inside the caller's span when spans are exported.
async fn blocking<T: Send + 'static>(
    io: Io,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let span = if telemetry::trace::exporting() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    };
    clock::blocking::run(io, move || span.in_scope(f))
        .await
        .unwrap_or_else(|e| {
            Err(Error::Backend {
                op: "blocking",
                path: String::new(),
                source: Box::new(e),
            })
        })
}

#[cfg(test)]
// A reader test polls a concurrent writer in real time.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::codec::decode_record_list;

    fn payloads(tag: &str, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{tag}-{i}-{}", "x".repeat(i % 5)).into_bytes())
            .collect()
    }

    /// Writes blocks of the given sizes; returns every entry written (id order) and the blocks.
    async fn write_blocks(
        w: &LocalSegmentWriter,
        first: i64,
        sizes: &[usize],
    ) -> (Vec<Vec<u8>>, Vec<BlockInfo>) {
        let mut all = Vec::new();
        let mut infos = Vec::new();
        let mut next = first;
        for (b, &n) in sizes.iter().enumerate() {
            let entries = payloads(&format!("b{b}"), n);
            let info = w.append_block(next, &entries).await.unwrap();
            assert_eq!(info.first_entry_id, next);
            assert_eq!(info.last_entry_id, next + n as i64 - 1);
            next += n as i64;
            all.extend(entries);
            infos.push(info);
        }
        (all, infos)
    }

    async fn read_all(r: &LocalSegmentReader, from: i64) -> LocalBatch {
        r.read_from(from, usize::MAX).await.unwrap()
    }

    fn data(batch: &LocalBatch) -> Vec<Vec<u8>> {
        batch.entries.iter().map(|e| e.data.to_vec()).collect()
    }

    fn file_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(DATA_FILE)).unwrap().len()
    }

    /// A block larger than one write piece, and not a multiple of it, lands whole and in
    /// place, and the file is exactly the blocks.
    #[tokio::test]
    async fn a_block_of_several_write_pieces_is_written_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log/1/seg");
        let w = LocalSegmentWriter::create(&dir, 0, FORMAT_V6)
            .await
            .unwrap();
        let entries: Vec<Vec<u8>> = (0..3u8)
            .map(|i| vec![i + 1; WRITE_PIECE + 12_345])
            .collect();
        let small = vec![b"after".to_vec()];
        let big = w.append_block(0, &entries).await.unwrap();
        let next = w.append_block(3, &small).await.unwrap();
        assert!(big.end() - big.offset > 3 * WRITE_PIECE as u64);
        assert_eq!(next.offset, big.end());
        assert_eq!(file_len(&dir), next.end());
        let r = LocalSegmentReader::open(&dir).await.unwrap();
        assert_eq!(data(&read_all(&r, 0).await), [entries, small].concat());
    }

    #[tokio::test]
    async fn write_and_read_across_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log/1/seg");
        let w = LocalSegmentWriter::create(&dir, 0, FORMAT_V6)
            .await
            .unwrap();
        let (all, infos) = write_blocks(&w, 0, &[3, 1, 4]).await;
        assert_eq!(infos[0].offset, HEADER_RECORD_LEN as u64);
        assert_eq!(infos[1].offset, infos[0].end());
        assert_eq!(file_len(&dir), infos[2].end());
        assert_eq!(
            infos.iter().map(|b| b.block_number).collect::<Vec<_>>(),
            [0, 1, 2]
        );

        let r = LocalSegmentReader::open(&dir).await.unwrap();
        let batch = read_all(&r, 0).await;
        assert_eq!(data(&batch), all);
        assert_eq!(
            batch.entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(batch.end, BatchEnd::NotYet);
        assert_eq!(batch.last_entry_id, 7);
        assert!(!batch.finalized && !batch.fenced);

        // From the middle of a block.
        let batch = read_all(&r, 5).await;
        assert_eq!(batch.entries.first().map(|e| e.entry_id), Some(5));
        assert_eq!(data(&batch), all[5..]);

        // Byte bounds: at least one entry, never more than the budget otherwise.
        let batch = r.read_from(0, 1).await.unwrap();
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.end, BatchEnd::More);
        let budget = all[2].len() + all[3].len() + all[4].len();
        let batch = r.read_from(2, budget).await.unwrap();
        assert_eq!(
            batch.entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(batch.end, BatchEnd::More);

        // Past the end: nothing yet.
        let batch = read_all(&r, 8).await;
        assert!(batch.entries.is_empty());
        assert_eq!(batch.end, BatchEnd::NotYet);

        let status = w.status().await;
        assert_eq!(status.last_entry_id, 7);
        assert_eq!(status.block_count, 3);
        assert_eq!(status.size, file_len(&dir));
    }

    #[tokio::test]
    async fn create_refuses_existing_file_bad_version_and_gaps() {
        let tmp = tempfile::tempdir().unwrap();
        let w = LocalSegmentWriter::create(tmp.path(), 10, FORMAT_V5)
            .await
            .unwrap();
        assert!(matches!(
            LocalSegmentWriter::create(tmp.path(), 0, FORMAT_V6).await,
            Err(Error::AlreadyExists { .. })
        ));
        let other = tmp.path().join("other");
        assert!(matches!(
            LocalSegmentWriter::create(&other, 0, 7).await,
            Err(Error::Config { .. })
        ));
        assert!(!other.exists());

        assert!(
            w.append_block(0, &[b"a"]).await.is_err(),
            "segment starts at 10"
        );
        assert!(w.append_block(11, &[b"a"]).await.is_err(), "gap");
        assert!(
            w.append_block::<&[u8]>(10, &[]).await.is_err(),
            "empty block"
        );
        w.append_block(10, &[b"a", b"b"]).await.unwrap();
        assert!(w.append_block(11, &[b"c"]).await.is_err(), "overlap");
        w.append_block(12, &[b"c"]).await.unwrap();
        let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
        let batch = read_all(&r, 0).await;
        assert_eq!(
            batch.entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
            [10, 11, 12]
        );

        assert!(matches!(
            LocalSegmentReader::open(tmp.path().join("missing")).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn finalize_v5_and_v6_then_reopen() {
        for version in [FORMAT_V5, FORMAT_V6] {
            for lac in [None, Some(4)] {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path();
                let w = LocalSegmentWriter::create(dir, 0, version).await.unwrap();
                let (all, infos) = write_blocks(&w, 0, &[2, 3, 1]).await;
                let footer = w.finalize(lac).await.unwrap();
                let blocks_end = infos[2].end();
                assert_eq!(footer.version, version);
                assert_eq!(footer.total_blocks, 3);
                assert_eq!(footer.total_records, 3);
                assert_eq!(footer.index_offset, blocks_end);
                assert_eq!(footer.index_length, 3 * INDEX_RECORD_LEN as u32);
                assert_eq!(footer.total_size, blocks_end + 3 * INDEX_RECORD_LEN as u64);
                assert_eq!(footer.flags, 0);
                let expected_lac = if version == FORMAT_V5 {
                    -1
                } else {
                    lac.unwrap_or(5)
                };
                assert_eq!(footer.lac, expected_lac);
                assert_eq!(
                    file_len(dir),
                    footer.total_size + footer.encoded_len() as u64
                );

                // The bytes on disk: index records then the footer, exactly.
                let bytes = Bytes::from(fs::read(dir.join(DATA_FILE)).unwrap());
                assert_eq!(footer_from_tail(&bytes), Ok(footer));
                let (records, consumed) = decode_record_list(&bytes.slice(blocks_end as usize..));
                assert_eq!(consumed as u64, file_len(dir) - blocks_end);
                let index: Vec<IndexRecord> = infos.iter().map(BlockInfo::index_record).collect();
                let mut expected: Vec<crate::codec::Record> = index
                    .iter()
                    .copied()
                    .map(crate::codec::Record::Index)
                    .collect();
                expected.push(crate::codec::Record::Footer(footer));
                assert_eq!(records, expected);
                assert_eq!(index[1].start_offset as u64, infos[1].offset);
                assert_eq!(index[1].block_size, infos[1].size);

                // Idempotent, and closed to appends.
                assert_eq!(w.finalize(Some(99)).await.unwrap(), footer);
                assert!(w.append_block(6, &[b"late"]).await.is_err());

                let r = LocalSegmentReader::open(dir).await.unwrap();
                let batch = read_all(&r, 0).await;
                assert_eq!(data(&batch), all);
                assert_eq!(batch.end, BatchEnd::Eof);
                assert!(batch.finalized);
                assert_eq!(r.footer().await, Some(footer));
                let batch = read_all(&r, 6).await;
                assert!(batch.entries.is_empty());
                assert_eq!(batch.end, BatchEnd::Eof);

                drop(w);
                let (w, recovery) = LocalSegmentWriter::open_for_recovery(dir).await.unwrap();
                assert_eq!(recovery.footer, Some(footer));
                assert_eq!(recovery.blocks, infos);
                assert_eq!(recovery.last_entry_id, 5);
                assert_eq!(recovery.truncated_bytes, 0);
                assert_eq!(recovery.header.version, version);
                assert_eq!(w.finalize(None).await.unwrap(), footer);
                assert!(w.append_block(6, &[b"late"]).await.is_err());
                assert_eq!(
                    file_len(dir),
                    footer.total_size + footer.encoded_len() as u64
                );
            }
        }
    }

    #[tokio::test]
    async fn empty_segment_finalizes_with_lac_minus_one() {
        let tmp = tempfile::tempdir().unwrap();
        let w = LocalSegmentWriter::create(tmp.path(), 0, FORMAT_V6)
            .await
            .unwrap();
        let footer = w.finalize(None).await.unwrap();
        assert_eq!(footer.total_blocks, 0);
        assert_eq!(footer.lac, -1);
        assert_eq!(footer.index_offset, HEADER_RECORD_LEN as u64);
        let (_, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert_eq!(recovery.footer, Some(footer));
        let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
        let batch = read_all(&r, 0).await;
        assert!(batch.entries.is_empty());
        assert_eq!(batch.end, BatchEnd::Eof);
        assert_eq!(batch.last_entry_id, -1);
    }

    /// Writes a segment of blocks `sizes` into a fresh directory and returns the file bytes
    /// and block infos.
    async fn image(sizes: &[usize], finalize: bool) -> (Vec<u8>, Vec<BlockInfo>, Vec<Vec<u8>>) {
        let tmp = tempfile::tempdir().unwrap();
        let w = LocalSegmentWriter::create(tmp.path(), 0, FORMAT_V6)
            .await
            .unwrap();
        let (all, infos) = write_blocks(&w, 0, sizes).await;
        if finalize {
            w.finalize(None).await.unwrap();
        }
        (fs::read(tmp.path().join(DATA_FILE)).unwrap(), infos, all)
    }

    #[tokio::test]
    async fn recovery_cuts_a_torn_last_block_at_every_offset() {
        let (bytes, infos, all) = image(&[2, 1, 3], false).await;
        let keep = infos[1].end();
        let kept_entries = 3;
        for cut in keep..infos[2].end() {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(DATA_FILE), &bytes[..cut as usize]).unwrap();

            let (w, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
                .await
                .unwrap();
            assert_eq!(recovery.blocks, infos[..2], "cut {cut}");
            assert_eq!(recovery.last_entry_id, 2);
            assert_eq!(recovery.truncated_bytes, cut - keep);
            assert_eq!(recovery.footer, None);
            assert_eq!(
                file_len(tmp.path()),
                keep,
                "file truncated after the last whole block"
            );

            // Appends continue the clean prefix.
            let info = w.append_block(3, &[b"again"]).await.unwrap();
            assert_eq!(info.offset, keep);
            assert_eq!(info.block_number, 2);
            let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
            let batch = read_all(&r, 0).await;
            let mut expected = all[..kept_entries].to_vec();
            expected.push(b"again".to_vec());
            assert_eq!(data(&batch), expected, "cut {cut}");
        }
    }

    #[tokio::test]
    async fn recovery_cuts_corrupt_tails_and_torn_finalize() {
        // A damaged byte in the last block (a crash that kept the size but not the data).
        let (mut bytes, infos, _) = image(&[2, 2], false).await;
        let at = infos[1].offset as usize + BLOCK_HEADER_RECORD_LEN + 4;
        bytes[at] ^= 0x40;
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();
        let (_, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert_eq!(recovery.blocks, infos[..1]);
        assert_eq!(file_len(tmp.path()), infos[0].end());

        // Zeros after the last block.
        let (mut bytes, infos, _) = image(&[2, 2], false).await;
        bytes.extend_from_slice(&[0u8; 100]);
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();
        let (_, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert_eq!(recovery.blocks, infos);
        assert_eq!(recovery.truncated_bytes, 100);

        // Finalize torn anywhere inside the index or footer: back to an open segment.
        let (bytes, infos, _) = image(&[2, 2], true).await;
        let blocks_end = infos[1].end();
        for cut in blocks_end..bytes.len() as u64 {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(DATA_FILE), &bytes[..cut as usize]).unwrap();
            let (w, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
                .await
                .unwrap();
            assert_eq!(recovery.footer, None, "cut {cut}");
            assert_eq!(recovery.blocks, infos);
            assert_eq!(file_len(tmp.path()), blocks_end);
            if cut == blocks_end + 50 {
                let footer = w.finalize(None).await.unwrap();
                assert_eq!(footer.lac, 3);
                assert_eq!(fs::read(tmp.path().join(DATA_FILE)).unwrap(), bytes);
            }
        }

        // A file without even its header cannot be recovered.
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &bytes[..10]).unwrap();
        assert!(matches!(
            LocalSegmentWriter::open_for_recovery(tmp.path()).await,
            Err(Error::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn corrupt_block_in_a_finalized_file_is_an_error() {
        for finalize in [true, false] {
            let (mut bytes, infos, all) = image(&[2, 2, 2], finalize).await;
            bytes[infos[1].offset as usize + BLOCK_HEADER_RECORD_LEN + 12] ^= 1;
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();
            let r = LocalSegmentReader::open(tmp.path()).await.unwrap();

            // Block 0 alone is fine.
            let batch = r.read_from(0, 1).await.unwrap();
            assert_eq!(data(&batch), all[..1]);
            // A read reaching block 1 returns what comes before it, and says there is more.
            let batch = r.read_from(0, usize::MAX).await.unwrap();
            assert_eq!(data(&batch), all[..2]);
            assert_eq!(batch.end, BatchEnd::More);
            // A read starting in it fails, naming the file, the block, the offset, what is
            // wrong and which entries are lost.
            let err = r.read_from(2, usize::MAX).await.unwrap_err();
            let Error::Corrupt { location, detail } = &err else {
                panic!("{err:?}")
            };
            assert!(
                location.contains(&format!("data.log block 1 at offset {}", infos[1].offset)),
                "{location}"
            );
            assert!(detail.contains("crc"), "{detail}");
            assert!(
                detail.contains("entries 2..=3 (2) cannot be read; the segment goes on at entry 4"),
                "{detail}"
            );
            assert!(r.read_from(3, 1).await.is_err());
            // Block 2 is still readable on its own.
            let batch = read_all(&r, 4).await;
            assert_eq!(data(&batch), all[4..]);

            let check = check_segment(tmp.path()).await.unwrap().unwrap();
            assert_eq!(check.valid_blocks, 2);
            assert_eq!(check.damaged.len(), 1);
            assert_eq!(check.damaged[0].offset, infos[1].offset);
            assert_eq!(
                (
                    check.damaged[0].first_entry_id,
                    check.damaged[0].last_entry_id
                ),
                (2, 3)
            );
            assert_eq!(check.last_entry_id, 5);
            assert_eq!(check.footer.is_some(), finalize);
        }
    }

    #[tokio::test]
    async fn recovery_keeps_a_damaged_block_and_everything_after_it() {
        // The block header is damaged too: recovery finds block 2 by its own header.
        for header_damage in [false, true] {
            let (mut bytes, infos, all) = image(&[2, 2, 2], false).await;
            let at = if header_damage {
                10
            } else {
                BLOCK_HEADER_RECORD_LEN + 3
            };
            bytes[infos[1].offset as usize + at] ^= 0x10;
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();

            let (w, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
                .await
                .unwrap();
            assert_eq!(recovery.truncated_bytes, 0, "nothing cut off");
            assert_eq!(file_len(tmp.path()), bytes.len() as u64);
            assert_eq!(recovery.last_entry_id, 5);
            assert_eq!(recovery.damaged.len(), 1);
            let d = &recovery.damaged[0];
            assert_eq!(
                (d.block_number, d.offset, d.len),
                (1, infos[1].offset, u64::from(infos[1].size))
            );
            assert_eq!((d.first_entry_id, d.last_entry_id), (2, 3));
            assert_eq!(recovery.blocks.len(), 3);

            // Appends go on after the last block; the footer lists the damaged block, so the
            // file still describes itself and reads stay the same.
            w.append_block(6, &[b"more"]).await.unwrap();
            let footer = w.finalize(None).await.unwrap();
            assert_eq!(footer.total_blocks, 4);
            assert_eq!(footer.lac, 6);
            let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
            let batch = read_all(&r, 0).await;
            assert_eq!(data(&batch), all[..2]);
            assert_eq!(batch.end, BatchEnd::More);
            let err = r.read_from(2, usize::MAX).await.unwrap_err();
            assert!(err.to_string().contains("entries 2..=3"), "{err}");
            let batch = read_all(&r, 4).await;
            let mut expected = all[4..].to_vec();
            expected.push(b"more".to_vec());
            assert_eq!(data(&batch), expected);
            assert_eq!(batch.end, BatchEnd::Eof);
            let (_, again) = LocalSegmentWriter::open_for_recovery(tmp.path())
                .await
                .unwrap();
            assert_eq!(again.footer, Some(footer));
        }
    }

    #[tokio::test]
    async fn repair_replaces_damaged_blocks_and_keeps_the_damaged_file() {
        let (mut bytes, infos, all) = image(&[2, 3, 2, 1], true).await;
        bytes[infos[1].offset as usize + BLOCK_HEADER_RECORD_LEN + 5] ^= 0x01;
        bytes[infos[3].offset as usize + BLOCK_HEADER_RECORD_LEN + 5] ^= 0x01;
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();

        let repaired = repair_segment(tmp.path(), 1_700_000_000, |id, d| {
            format!("lost {id} of block {}", d.block_number).into_bytes()
        })
        .await
        .unwrap()
        .expect("something to repair");
        assert_eq!(repaired.replaced.len(), 2);
        assert_eq!(
            (
                repaired.replaced[0].first_entry_id,
                repaired.replaced[0].last_entry_id
            ),
            (2, 4)
        );
        assert_eq!(
            (
                repaired.replaced[1].first_entry_id,
                repaired.replaced[1].last_entry_id
            ),
            (7, 7)
        );
        assert_eq!(
            fs::read(&repaired.kept).unwrap(),
            bytes,
            "the damaged file is kept"
        );
        assert!(
            repaired
                .kept
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(DAMAGED_FILE_PREFIX)
        );

        let check = check_segment(tmp.path()).await.unwrap().unwrap();
        assert!(check.damaged.is_empty());
        assert_eq!(check.valid_blocks, 4);
        assert_eq!(check.size, repaired.size);
        let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
        let batch = read_all(&r, 0).await;
        let mut expected = all.clone();
        for id in [2usize, 3, 4] {
            expected[id] = format!("lost {id} of block 1").into_bytes();
        }
        expected[7] = b"lost 7 of block 3".to_vec();
        assert_eq!(data(&batch), expected);
        assert_eq!(batch.end, BatchEnd::Eof);
        // Recovery trusts the new footer; nothing left to repair.
        let (_, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert!(recovery.footer.is_some());
        assert!(
            repair_segment(tmp.path(), 1_700_000_000, |_, _| Vec::new())
                .await
                .unwrap()
                .is_none()
        );

        // A segment without a footer is refused, unchanged.
        let (mut open, infos, _) = image(&[2, 2], false).await;
        open[infos[0].offset as usize + BLOCK_HEADER_RECORD_LEN + 5] ^= 0x01;
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &open).unwrap();
        let err = repair_segment(tmp.path(), 1_700_000_000, |_, _| Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no footer"), "{err}");
        assert_eq!(fs::read(tmp.path().join(DATA_FILE)).unwrap(), open);
    }

    #[tokio::test]
    async fn damaged_block_header_in_an_open_file_stops_reads_there() {
        let (mut bytes, infos, all) = image(&[2, 2, 2], false).await;
        bytes[infos[1].offset as usize + 10] ^= 0x08;
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(DATA_FILE), &bytes).unwrap();
        let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
        // What comes before the damage is served; the batch does not pretend to be the end.
        let batch = read_all(&r, 0).await;
        assert_eq!(data(&batch), all[..2]);
        assert_eq!(batch.end, BatchEnd::More);
        let err = read_all_err(&r, 2).await;
        let Error::Corrupt { location, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(
            location.contains("data.log block 1 at offset"),
            "{location}"
        );
        // Also once fenced: damage is never mistaken for the end of the segment.
        fs::write(tmp.path().join(FENCE_FILE), "").unwrap();
        assert!(matches!(read_all_err(&r, 2).await, Error::Corrupt { .. }));
    }

    async fn read_all_err(r: &LocalSegmentReader, from: i64) -> Error {
        r.read_from(from, usize::MAX).await.unwrap_err()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_follows_a_concurrent_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let w = Arc::new(
            LocalSegmentWriter::create(&dir, 0, FORMAT_V6)
                .await
                .unwrap(),
        );
        let r = LocalSegmentReader::open(&dir).await.unwrap();
        let batch = read_all(&r, 0).await;
        assert!(batch.entries.is_empty());
        assert_eq!(batch.end, BatchEnd::NotYet);

        // A block that is only partly written is not there yet, and not an error.
        let mut torn = Vec::new();
        encode_block(None, 0, 0, &[b"partial entry"], &mut torn);
        let mut raw = OpenOptions::new()
            .append(true)
            .open(dir.join(DATA_FILE))
            .unwrap();
        raw.write_all(&torn[..torn.len() - 3]).unwrap();
        let batch = read_all(&r, 0).await;
        assert!(batch.entries.is_empty());
        assert_eq!(batch.end, BatchEnd::NotYet);
        raw.write_all(&torn[torn.len() - 3..]).unwrap();
        let batch = read_all(&r, 0).await;
        assert_eq!(data(&batch), [b"partial entry".to_vec()]);
        drop(raw);
        drop(w);
        let (w, _) = LocalSegmentWriter::open_for_recovery(&dir).await.unwrap();
        let w = Arc::new(w);

        let blocks = 20;
        let writer = tokio::spawn({
            let w = w.clone();
            async move {
                for b in 0..blocks {
                    let first = 1 + 3 * b;
                    let entries = payloads(&format!("c{b}"), 3);
                    w.append_block(first, &entries).await.unwrap();
                    tokio::task::yield_now().await;
                }
                w.fence().await.unwrap();
            }
        });
        let mut next = 1;
        let mut seen = Vec::new();
        loop {
            let batch = r.read_from(next, 64).await.unwrap();
            for e in &batch.entries {
                assert_eq!(e.entry_id, next, "no gaps, no repeats");
                next += 1;
                seen.push(e.data.clone());
            }
            if batch.end == BatchEnd::Eof {
                break;
            }
            if batch.entries.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        writer.await.unwrap();
        assert_eq!(next, 1 + 3 * blocks);
        assert_eq!(seen.len(), 3 * blocks as usize);
        assert_eq!(&seen[3][..], b"c1-0-");
    }

    #[tokio::test]
    async fn fence_stops_appends_but_not_finalize() {
        let tmp = tempfile::tempdir().unwrap();
        let w = LocalSegmentWriter::create(tmp.path(), 0, FORMAT_V6)
            .await
            .unwrap();
        w.append_block(0, &[b"a"]).await.unwrap();
        assert!(!w.is_fenced().await.unwrap());
        w.fence().await.unwrap();
        w.fence().await.unwrap();
        assert!(w.is_fenced().await.unwrap());
        assert!(tmp.path().join(FENCE_FILE).is_file());
        assert!(matches!(
            w.append_block(1, &[b"b"]).await,
            Err(Error::Fenced { .. })
        ));

        let r = LocalSegmentReader::open(tmp.path()).await.unwrap();
        let batch = read_all(&r, 0).await;
        assert_eq!(batch.entries.len(), 1);
        assert!(batch.fenced);
        assert_eq!(batch.end, BatchEnd::Eof);

        let footer = w.finalize(None).await.unwrap();
        assert_eq!(footer.lac, 0);
        let (w2, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert!(recovery.fenced);
        assert_eq!(recovery.footer, Some(footer));
        assert!(w2.is_fenced().await.unwrap());
    }

    #[tokio::test]
    async fn a_fence_file_from_elsewhere_stops_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let w = LocalSegmentWriter::create(tmp.path(), 0, FORMAT_V5)
            .await
            .unwrap();
        w.append_block(0, &[b"a"]).await.unwrap();
        fs::write(tmp.path().join(FENCE_FILE), "fenced by another process\n").unwrap();
        assert!(matches!(
            w.append_block(1, &[b"b"]).await,
            Err(Error::Fenced { .. })
        ));
        assert!(w.status().await.fenced);
        let (_, recovery) = LocalSegmentWriter::open_for_recovery(tmp.path())
            .await
            .unwrap();
        assert!(recovery.fenced);
        assert_eq!(recovery.last_entry_id, 0);
    }
}
