//! Group commit across local segments: one journal `fdatasync` makes the blocks of many
//! segments durable at once.
//!
//! Each local segment is its own `data.log` (spec §5.3), so a process appending to many
//! segments at the same time (a Kafka topic with 16 partitions is 16 logs) would pay one
//! `fdatasync` per segment per flush, and small flushes make that the bottleneck. With a
//! journal, a small block is written to its `data.log` without syncing, then appended to the
//! journal; every block waiting at that moment goes out in one `write`, synced once. A block
//! is acknowledged only after that sync: what is acknowledged is in the journal or (for
//! blocks that bypass it) synced in its `data.log`. The same design keeps BookKeeper's journal
//! and ledger files apart.
//!
//! Who writes a commit: when the journal is idle, the caller of [`Journal::commit`] writes its
//! block itself, in the call (with `O_DIRECT | O_DSYNC` that is one `pwrite` of a few KiB), so
//! a lone writer pays no hand-off to another thread and no wake-up back. Blocks committed
//! while a commit is being written wait for the committer thread, which writes all of them
//! together once that commit ends and keeps going while more arrive: under load the journal
//! groups commits exactly as a dedicated thread would, and one caller at a time at most is
//! held in a write.
//!
//! Checkpoints: the committer moves to a new journal file once the current one holds
//! [`ROTATE_BYTES`] or is [`ROTATE_INTERVAL`] old; a checkpoint thread then syncs every
//! `data.log` the old file covered and retires it. So a journal file exists only while some of
//! its blocks may not be durable in their segments yet, and the segments' files end up exactly
//! as they would without a journal (the on-disk format of a segment does not change).
//!
//! Writes: where the filesystem supports it (Linux, not tmpfs), journal files are written with
//! `O_DIRECT | O_DSYNC`: one `pwrite` per commit that is durable when it returns, without the
//! page cache and its writeback. Each commit then starts at a multiple of [`ALIGN`] bytes, and
//! a padding record (an empty segment path, skipped by replay) fills the rest of its last
//! [`ALIGN`] bytes. Elsewhere a commit is a `pwrite` and an `fdatasync`.
//!
//! Recycling: a retired file is kept as a spare (up to [`SPARES`]) and renamed to become a later
//! journal file, which is then overwritten from its start. Overwriting blocks a file already
//! has does not change its size or its block map, so a commit writes the data alone, without
//! the inode (which makes a synced commit about a third faster on an ext4 disk). When the
//! journal is busy (a file reached an eighth of [`ROTATE_BYTES`] before it rotated), the
//! checkpoint thread fills spares with zeros up to [`ROTATE_BYTES`] off the commit path, so
//! every commit of a recycled file overwrites. Every record carries its file's sequence
//! number, so replay stops at the first record left over from the file's earlier life.
//!
//! Replay ([`Journal::open`], before any segment is opened): every record of every journal
//! file, oldest first, is compared with its `data.log` at its offset and written there when
//! different; the segments are synced and the journal files deleted. Records stop at the first
//! torn or corrupt record of a file (that commit was never acknowledged). Records of segments
//! whose directory is gone (a deleted log) are skipped. Replay is idempotent.
//!
//! One journal per root: the journal directory is locked (`flock`); a second store on the same
//! root (in this process or another) gets `None` from [`Journal::open`] and syncs each block
//! in its own file, as without a journal.
//!
//! Failures: a commit that cannot be written or synced (a full disk) fails its blocks, and
//! the file is cut back to where the commit started, so that replay never meets a record of
//! it; later commits go on in the same file once there is room again. Only when that cut fails
//! too is the journal stopped (every later commit fails until the store is reopened).
//!
//! Record layout (little-endian): magic `WPJ1` (u32), body length (u32), CRC-32 of the body
//! (u32); body = the journal file's sequence number (u64), path length (u16), the segment
//! directory relative to the root (UTF-8, `/` separated), offset in `data.log` (u64), the
//! block bytes. A padding record has an empty path, offset 0 and zero bytes. Files are
//! `<sequence, 20 digits>.wpj`; spares are `<sequence>.spare`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clock::ClockRef;
use tokio::sync::oneshot;

use crate::segment::disk::{DATA_FILE, io_error, sync_dir};
use crate::{Error, Result};

/// Name of the journal directory under the local root.
pub const JOURNAL_DIR: &str = ".journal";
/// A journal file is retired once it holds this many bytes.
pub(crate) const ROTATE_BYTES: u64 = 64 << 20;
/// ... or once it is this old (and holds something).
pub const ROTATE_INTERVAL: Duration = Duration::from_secs(1);
/// Blocks this large or larger skip the journal: their own `fdatasync` costs about what the
/// journal's would, and writing them twice would not.
pub const MAX_JOURNALED_BLOCK: usize = 512 << 10;

/// Retired journal files kept for reuse.
pub(crate) const SPARES: usize = 2;

/// Commits start at multiples of this in a journal file written with `O_DIRECT`.
pub const ALIGN: usize = 4096;
/// The bytes of a record before its path and block: header, sequence number, path length
/// and offset.
const RECORD_OVERHEAD: usize = RECORD_HEADER + 8 + 2 + 8;

const MAGIC: u32 = u32::from_le_bytes(*b"WPJ1");
const RECORD_HEADER: usize = 12;
const LOCK_FILE: &str = "lock";
const SUFFIX: &str = ".wpj";
const SPARE_SUFFIX: &str = ".spare";

/// The journal of one local root. Cheap to share (`Arc`); dropping the last handle stops the
/// committer after a final checkpoint.
pub struct Journal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Holds the `flock` of the journal directory.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.files.dir)
            .finish_non_exhaustive()
    }
}

struct Shared {
    root: PathBuf,
    /// Ages journal files for rotation. The committer thread still waits on a condition
    /// variable in real time; under a manual clock a due file rotates at its next wake-up
    /// (a commit or the next timed wait) after the clock passed the deadline.
    clock: ClockRef,
    files: Arc<Files>,
    queue: Mutex<Queue>,
    /// Wakes the committer thread: blocks wait, the journal closes, or a file's age is due.
    wake: Condvar,
    /// The file being written; held by whoever writes a commit (see [`Queue::busy`]), taken
    /// by the committer thread when the journal closes.
    committer: Mutex<Option<Committer>>,
}

/// The journal directory's files, shared by the committer and the checkpoint thread.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    /// Retired journal files ready for reuse.
    spares: Mutex<Vec<PathBuf>>,
    /// [`ROTATE_BYTES`], smaller in tests.
    rotate_bytes: u64,
}

#[derive(Debug, Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A commit is being written, by a caller of [`Journal::commit`] or by the committer
    /// thread: blocks committed meanwhile wait in `pending` for the committer thread.
    busy: bool,
    /// When the current file is old enough to rotate (it holds something).
    rotate_at: Option<Instant>,
    closed: bool,
    /// A journal write or sync failed and what it left could not be cut off: the journal
    /// file is in an unknown state, so nothing more is committed through it (appends fail;
    /// the segments' writers stop).
    failed: Option<String>,
}

#[derive(Debug)]
struct Pending {
    rel: Arc<str>,
    offset: u64,
    data: Bytes,
    file: Arc<File>,
    done: oneshot::Sender<Result<()>>,
}

/// What [`Journal::open`] replayed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Journal files read.
    pub files: usize,
    /// Records read.
    pub records: usize,
    /// Records whose bytes were missing or different in their `data.log`, and written.
    pub written: usize,
    /// Records of segments that no longer exist.
    pub skipped: usize,
}

impl Journal {
    /// Replays what an earlier process left under `root` and starts the committer. `None`
    /// when another store holds this root's journal. Files rotate by age on `clock`.
    pub fn open(
        root: impl AsRef<Path>,
        clock: ClockRef,
    ) -> Result<Option<(Arc<Journal>, Replayed)>> {
        Self::open_rotating_at(root, ROTATE_BYTES, clock)
    }

    fn open_rotating_at(
        root: impl AsRef<Path>,
        rotate_bytes: u64,
        clock: ClockRef,
    ) -> Result<Option<(Arc<Journal>, Replayed)>> {
        let root = root.as_ref().to_path_buf();
        let dir = root.join(JOURNAL_DIR);
        fs::create_dir_all(&dir).map_err(|e| io_error("mkdir", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(io_error("flock", &lock_path, e)),
        }
        let (replayed, last_seq) = replay(&root, &dir)?;
        let files = Arc::new(Files {
            dir,
            spares: Mutex::new(Vec::new()),
            rotate_bytes,
        });
        let current = next_file(&files, last_seq, clock.now())?;
        let committer = Committer {
            current,
            buf: AlignedBuf::default(),
            checkpoints: Checkpointer::start(files.clone()),
        };
        let shared = Arc::new(Shared {
            root,
            clock,
            files,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            committer: Mutex::new(Some(committer)),
        });
        let spawned = std::thread::Builder::new()
            .name("wp-journal".into())
            .spawn({
                let shared = shared.clone();
                move || commit_thread(&shared)
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                if let Some(c) = shared.lock_committer().take() {
                    c.checkpoints.finish();
                }
                return Err(io_error("spawn", &shared.files.dir, e));
            }
        };
        Ok(Some((
            Arc::new(Journal {
                shared,
                thread: Mutex::new(Some(thread)),
                _lock: lock,
            }),
            replayed,
        )))
    }

    /// The segment directory `dir` relative to the root, when it is under it.
    pub fn relative(&self, dir: &Path) -> Option<Arc<str>> {
        let rel = dir.strip_prefix(&self.shared.root).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        let parts = parts?;
        (!parts.is_empty()).then(|| parts.join("/").into())
    }

    /// Commits `data`, already written at `offset` of the `data.log` of `rel` (open as
    /// `file`); the receiver resolves once the journal holding it is synced.
    ///
    /// When no commit is being written, this call writes it (with whatever else is waiting)
    /// before it returns, so the receiver is resolved already: the call blocks for one
    /// journal write (a tenth of a millisecond or so on an SSD with `O_DIRECT`). Otherwise
    /// the block waits for the committer thread and the call returns at once.
    pub fn commit(
        &self,
        rel: Arc<str>,
        offset: u64,
        data: Bytes,
        file: Arc<File>,
    ) -> oneshot::Receiver<Result<()>> {
        let (done, rx) = oneshot::channel();
        let batch = {
            let mut q = self.lock();
            if let Some(e) = &q.failed {
                let _ = done.send(Err(journal_failed(&self.shared.files.dir, e)));
                return rx;
            }
            if q.closed {
                let _ = done.send(Err(Error::Unsupported {
                    what: "a commit to a closed journal".into(),
                }));
                return rx;
            }
            q.pending.push(Pending {
                rel,
                offset,
                data,
                file,
                done,
            });
            if q.busy {
                // Whoever writes now hands what waits to the committer thread when done.
                return rx;
            }
            q.busy = true;
            std::mem::take(&mut q.pending)
        };
        self.shared.write(batch, true);
        rx
    }

    /// Whether blocks may still be committed through this journal (not closed).
    pub(crate) fn is_open(&self) -> bool {
        !self.lock().closed
    }

    /// Stops the journal after a final checkpoint: every segment it covered is synced and its
    /// files are removed. Blocks: call it from the blocking pool. Later commits fail; writers
    /// check [`is_open`](Self::is_open) and sync their blocks themselves instead. Idempotent;
    /// dropping the last handle does the same.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.wake.notify_one();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock_committer(&self) -> MutexGuard<'_, Option<Committer>> {
        self.committer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `batch` as one commit (an empty batch only rotates a file that is due), as the
    /// one that set [`Queue::busy`], then clears it and wakes the committer thread when it
    /// has something to do. `rotate`: whether the file may rotate first (not while closing).
    fn write(&self, batch: Vec<Pending>, rotate: bool) {
        let rotate_at = match self.lock_committer().as_mut() {
            Some(c) => c.write(self, batch, rotate),
            None => {
                // Only after the committer thread stopped, which waits until nobody writes.
                for p in batch {
                    let _ = p.done.send(Err(Error::Unsupported {
                        what: "a commit to a closed journal".into(),
                    }));
                }
                None
            }
        };
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.busy = false;
        let due_changed = q.rotate_at != rotate_at;
        q.rotate_at = rotate_at;
        if !q.pending.is_empty() || q.closed || q.failed.is_some() || due_changed {
            self.wake.notify_one();
        }
    }

    /// Fails the blocks of one commit that could not be written; the journal goes on.
    fn fail_commit(&self, batch: Vec<Pending>, detail: String) {
        tracing::warn!(error = %detail, blocks = batch.len(), "a journal commit failed; its blocks fail");
        for p in batch {
            let _ = p.done.send(Err(journal_failed(&self.files.dir, &detail)));
        }
    }

    /// Marks the journal failed and fails `batch` and everything waiting with it.
    fn fail(&self, batch: Vec<Pending>, detail: String) {
        tracing::error!(error = %detail, "journal write failed; local appends stop");
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.failed = Some(detail.clone());
        let later = std::mem::take(&mut q.pending);
        drop(q);
        for p in batch.into_iter().chain(later) {
            let _ = p.done.send(Err(journal_failed(&self.files.dir, &detail)));
        }
    }
}

fn journal_failed(dir: &Path, detail: &str) -> Error {
    Error::Backend {
        op: "journal",
        path: dir.display().to_string(),
        source: detail.to_string().into(),
    }
}

/// An open journal file.
struct Current {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Written with `O_DIRECT | O_DSYNC` (aligned commits, no separate sync).
    direct: bool,
    size: u64,
    opened: Instant,
    /// The segment files its records were written to, by path.
    covers: HashMap<Arc<str>, Arc<File>>,
}

/// Starts journal file `after + 1` (from a spare when there is one) and syncs the directory.
fn next_file(files: &Files, after: u64, now: Instant) -> Result<Current> {
    let dir = &files.dir;
    let seq = after + 1;
    let path = dir.join(format!("{seq:020}{SUFFIX}"));
    let spare = files.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
    match spare {
        Some(spare) => fs::rename(&spare, &path).map_err(|e| io_error("reuse", &spare, e))?,
        None => {
            OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error("create", &path, e))?;
        }
    }
    let (file, direct) = open_for_commits(&path)?;
    sync_dir(dir)?;
    Ok(Current {
        seq,
        path,
        file,
        direct,
        size: 0,
        opened: now,
        covers: HashMap::new(),
    })
}

/// Opens a journal file for commits: with `O_DIRECT | O_DSYNC` where the filesystem takes it,
/// plainly (commits then sync) where it does not.
fn open_for_commits(path: &Path) -> Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
        {
            return Ok((f, true));
        }
    }
    OpenOptions::new()
        .write(true)
        .open(path)
        .map(|f| (f, false))
        .map_err(|e| io_error("open", path, e))
}

/// Pads `buf` (one commit, starting at an [`ALIGN`]ed offset) with a padding record to a
/// multiple of [`ALIGN`].
fn pad(buf: &mut impl Sink, seq: u64) {
    let rem = buf.len() % ALIGN;
    if rem == 0 {
        return;
    }
    let mut gap = ALIGN - rem;
    if gap < RECORD_OVERHEAD {
        gap += ALIGN;
    }
    const ZEROS: [u8; 2 * ALIGN] = [0; 2 * ALIGN];
    encode(buf, seq, "", 0, &ZEROS[..gap - RECORD_OVERHEAD]);
}

/// Removes what a failed commit may have left at the end of `current` (a short write, or
/// records whose sync failed): the file is cut back to where the commit started and synced.
/// Replay must never find a record of a commit that was not acknowledged, because its block
/// may be written differently later. Cutting a file frees blocks and needs no space, so this
/// works on a full disk.
fn cut_failed_commit(current: &Current) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(&current.path)?;
    f.set_len(current.size)?;
    f.sync_all()
}

/// Writes one commit at the end of `current`, durably: through `O_DIRECT | O_DSYNC`, or a
/// write and an `fdatasync`. A filesystem that opened the file with `O_DIRECT` but refuses
/// the write (`EINVAL`: it wants another alignment) gets this and every later commit of the
/// file written plainly; nothing was written by the refused call.
fn write_commit(current: &mut Current, buf: &[u8]) -> io::Result<()> {
    let bytes = buf.len();
    let _span = tracing::debug_span!(target: telemetry::trace::SPAN_TARGET, "storage.fsync", file = "journal", bytes).entered();
    let timer = telemetry::Stopwatch::start();
    write_durably(current, buf)?;
    let (latency, synced) = telemetry::catalog::fsync(telemetry::catalog::FsyncFile::Journal);
    latency.observe(timer.elapsed_nanos());
    synced.add(bytes as u64);
    Ok(())
}

/// The durable write of [`write_commit`].
fn write_durably(current: &mut Current, buf: &[u8]) -> io::Result<()> {
    if current.direct {
        match current.file.write_all_at(buf, current.size) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(journal = %current.path.display(), error = %e, "O_DIRECT refused; the journal syncs its writes instead");
                current.file = OpenOptions::new().write(true).open(&current.path)?;
                current.direct = false;
            }
            other => return other,
        }
    }
    current.file.write_all_at(buf, current.size)?;
    current.file.sync_data()
}

/// Where encoding appends: a plain `Vec`, or an [`AlignedBuf`].
trait Sink {
    fn len(&self) -> usize;
    fn put(&mut self, bytes: &[u8]);
    fn bytes_mut(&mut self) -> &mut [u8];
}

/// Tests encode into plain vectors.
#[cfg(test)]
impl Sink for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// A growable buffer whose contents start at an [`ALIGN`]ed address, as `O_DIRECT` wants, so
/// a commit is encoded in place rather than copied to aligned memory.
#[derive(Default)]
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl Sink for AlignedBuf {
    fn len(&self) -> usize {
        self.len
    }

    fn put(&mut self, bytes: &[u8]) {
        let need = self.start + self.len + bytes.len();
        if need > self.mem.len() {
            let size = (2 * (self.len + bytes.len())).max(1 << 16) + ALIGN;
            let mut mem = vec![0u8; size];
            let start = mem.as_ptr().align_offset(ALIGN);
            mem[start..start + self.len].copy_from_slice(self.as_slice());
            self.mem = mem;
            self.start = start;
        }
        let at = self.start + self.len;
        self.mem[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// The file commits go to, and what writing it needs.
struct Committer {
    current: Current,
    buf: AlignedBuf,
    checkpoints: Checkpointer,
}

impl Committer {
    /// Rotates the file when due (and `rotate`), writes `batch` as one commit and answers
    /// its blocks. Returns when the file (then) current is due to rotate by age.
    fn write(&mut self, shared: &Shared, batch: Vec<Pending>, rotate: bool) -> Option<Instant> {
        // Rotation comes before the next write, so the newest commit stays in the current
        // file until something follows it.
        if rotate {
            self.rotate_if_due(&shared.files, shared.clock.now());
        }
        if !batch.is_empty() {
            let current = &mut self.current;
            let buf = &mut self.buf;
            buf.clear();
            for p in &batch {
                encode(buf, current.seq, &p.rel, p.offset, &p.data);
            }
            if current.direct {
                pad(buf, current.seq);
            }
            match write_commit(current, buf.as_slice()) {
                Ok(()) => {
                    current.size += buf.len() as u64;
                    for p in batch {
                        current.covers.entry(p.rel).or_insert(p.file);
                        let _ = p.done.send(Ok(()));
                    }
                }
                Err(e) => {
                    let detail = format!("writing {}: {e}", current.path.display());
                    match cut_failed_commit(current) {
                        // The file ends where it did before: the journal goes on, and only
                        // this commit's blocks fail (a full disk may have room again later).
                        Ok(()) => shared.fail_commit(batch, detail),
                        Err(cut) => shared.fail(
                            batch,
                            format!("{detail}; the failed commit could not be cut off: {cut}"),
                        ),
                    }
                }
            }
        }
        (!self.current.covers.is_empty()).then(|| self.current.opened + ROTATE_INTERVAL)
    }

    /// Moves to the next journal file once the current one is full or old (and holds
    /// something).
    fn rotate_if_due(&mut self, files: &Files, now: Instant) {
        let current = &mut self.current;
        let due = current.size >= files.rotate_bytes
            || (!current.covers.is_empty()
                && now.saturating_duration_since(current.opened) >= ROTATE_INTERVAL);
        if !due {
            return;
        }
        match next_file(files, current.seq, now) {
            Ok(next) => {
                let old = std::mem::replace(current, next);
                self.checkpoints.retire(old);
            }
            Err(e) => {
                // Keep writing the current file; the next rotation tries again.
                tracing::warn!(error = %e, "cannot start a new journal file");
                current.opened = now;
            }
        }
    }
}

/// The committer thread: writes the blocks that waited while a commit was being written,
/// rotates files that are due when nothing is written, and checkpoints the last file when
/// the journal closes.
fn commit_thread(shared: &Shared) {
    loop {
        let work = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if !q.busy {
                    if q.failed.is_some() {
                        break None;
                    }
                    if !q.pending.is_empty() {
                        q.busy = true;
                        break Some((std::mem::take(&mut q.pending), !q.closed));
                    }
                    if q.closed {
                        break None;
                    }
                    if q.rotate_at.is_some_and(|t| t <= shared.clock.now()) {
                        q.busy = true;
                        break Some((Vec::new(), true));
                    }
                }
                // A file due while someone writes is rotated by that write (which says so).
                let now = shared.clock.now();
                q = match q.rotate_at {
                    Some(t) if t > now => {
                        shared
                            .wake
                            .wait_timeout(q, t - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    _ => shared.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
                };
            }
        };
        match work {
            Some((batch, rotate)) => shared.write(batch, rotate),
            None => break,
        }
    }
    // Closing (or failed): the last file is retired like the others, and the checkpointer
    // finishes. Nobody writes any more: commits are refused and none is being written.
    let failed = shared
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .failed
        .is_some();
    let Some(Committer {
        current,
        checkpoints,
        ..
    }) = shared.lock_committer().take()
    else {
        return;
    };
    if failed {
        // Keep the file: a later replay decides what it holds.
        checkpoints.finish();
        return;
    }
    checkpoints.retire(current);
    checkpoints.finish();
    // Spares are only worth keeping while the journal runs.
    let spares = std::mem::take(
        &mut *shared
            .files
            .spares
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for spare in spares {
        let _ = fs::remove_file(spare);
    }
}

/// Syncs the segments a retired journal file covered, then deletes it.
struct Checkpointer {
    tx: std::sync::mpsc::Sender<Current>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    fn start(files: Arc<Files>) -> Checkpointer {
        let (tx, rx) = std::sync::mpsc::channel::<Current>();
        let handle = std::thread::Builder::new()
            .name("wp-journal-checkpoint".into())
            .spawn(move || {
                for old in rx {
                    checkpoint(&files, old);
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the journal checkpoint thread: {e}"));
        Checkpointer { tx, handle }
    }

    fn retire(&self, old: Current) {
        // The receiver lives until `finish`.
        let _ = self.tx.send(old);
    }

    fn finish(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

fn checkpoint(files: &Files, old: Current) {
    let dir = &files.dir;
    for (rel, file) in &old.covers {
        if let Err(e) = file.sync_data() {
            // The journal file stays; the next start replays it.
            tracing::error!(segment = %rel, error = %e, journal = %old.path.display(), "syncing a segment at a journal checkpoint failed");
            return;
        }
    }
    drop(old.file);
    // Only this thread adds spares; the committer may take one meanwhile.
    let keep = files.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < SPARES;
    let retired = if keep {
        let spare = dir.join(format!("{:020}{SPARE_SUFFIX}", old.seq));
        fs::rename(&old.path, &spare).map(|()| {
            if old.size >= files.rotate_bytes / 8
                && let Err(e) = fill_with_zeros(&spare, files.rotate_bytes)
            {
                tracing::debug!(error = %e, spare = %spare.display(), "cannot fill a journal spare");
            }
            files
                .spares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(spare);
        })
    } else {
        fs::remove_file(&old.path)
    };
    if let Err(e) = retired {
        tracing::warn!(error = %e, journal = %old.path.display(), "cannot retire a checkpointed journal file");
        return;
    }
    if let Err(e) = sync_dir(dir) {
        tracing::debug!(error = %e, "syncing the journal directory");
    }
}

/// Extends the file at `path` with zeros to `len` bytes and syncs it, so that commits to it
/// overwrite allocated blocks instead of growing the file.
fn fill_with_zeros(path: &Path, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    let mut at = f.metadata()?.len();
    if at >= len {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    while at < len {
        let n = usize::try_from(len - at).map_or(zeros.len(), |n| n.min(zeros.len()));
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    f.sync_data()
}

fn encode(out: &mut impl Sink, seq: u64, rel: &str, offset: u64, data: &[u8]) {
    let start = out.len();
    out.put(&MAGIC.to_le_bytes());
    out.put(&[0; 8]);
    let body = out.len();
    out.put(&seq.to_le_bytes());
    out.put(&(rel.len() as u16).to_le_bytes());
    out.put(rel.as_bytes());
    out.put(&offset.to_le_bytes());
    out.put(data);
    let bytes = out.bytes_mut();
    let len = (bytes.len() - body) as u32;
    let crc = crc32fast::hash(&bytes[body..]);
    bytes[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    bytes[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    rel: &'a str,
    offset: u64,
    data: &'a [u8],
}

/// The record of journal file `seq` at the start of `buf` and its length; `None` at a torn
/// or corrupt record, or one left from the file's earlier life as another journal file.
fn decode(buf: &[u8], seq: u64) -> Option<(Record<'_>, usize)> {
    if buf.len() < RECORD_HEADER {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    if word(0) != MAGIC {
        return None;
    }
    let len = word(4) as usize;
    let body = buf.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != word(8) || body.len() < 18 {
        return None;
    }
    if u64::from_le_bytes(body[..8].try_into().ok()?) != seq {
        return None;
    }
    let body = &body[8..];
    let rel_len = usize::from(u16::from_le_bytes([body[0], body[1]]));
    let rel = std::str::from_utf8(body.get(2..2 + rel_len)?).ok()?;
    let at = 2 + rel_len;
    let offset = u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
    Some((
        Record {
            rel,
            offset,
            data: &body[at + 8..],
        },
        RECORD_HEADER + len,
    ))
}

/// Journal files under `dir` with their sequence numbers, oldest first.
fn journal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes the spares a previous run left.
fn remove_spares(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(SPARE_SUFFIX))
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| io_error("delete", &path, e))?;
        }
    }
    Ok(())
}

/// Replays the journal files under `dir`; returns what it did and the highest sequence number
/// seen (0 when none), which the next file continues from.
fn replay(root: &Path, dir: &Path) -> Result<(Replayed, u64)> {
    let mut out = Replayed::default();
    remove_spares(dir)?;
    let files = journal_files(dir)?;
    let last_seq = files.last().map_or(0, |(seq, _)| *seq);
    if files.is_empty() {
        return Ok((out, last_seq));
    }
    let mut touched: HashMap<String, File> = HashMap::new();
    let mut missing: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (seq, path) in &files {
        out.files += 1;
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| io_error("read", path, e))?;
        let mut at = 0;
        while let Some((rec, len)) = decode(&buf[at..], *seq) {
            at += len;
            if rec.rel.is_empty() {
                // Padding after an aligned commit.
                continue;
            }
            out.records += 1;
            let seg_dir = rec
                .rel
                .split('/')
                .fold(root.to_path_buf(), |p, part| p.join(part));
            let data_path = seg_dir.join(DATA_FILE);
            if !touched.contains_key(rec.rel) && !missing.contains(rec.rel) {
                match OpenOptions::new().read(true).write(true).open(&data_path) {
                    Ok(f) => {
                        touched.insert(rec.rel.to_string(), f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        missing.insert(rec.rel.to_string());
                    }
                    Err(e) => return Err(io_error("open", &data_path, e)),
                }
            }
            let Some(f) = touched.get(rec.rel) else {
                out.skipped += 1;
                continue;
            };
            let mut have = vec![0; rec.data.len()];
            let same = match f.read_exact_at(&mut have, rec.offset) {
                Ok(()) => have == rec.data,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                Err(e) => return Err(io_error("read", &data_path, e)),
            };
            if !same {
                let len = f
                    .metadata()
                    .map_err(|e| io_error("stat", &data_path, e))?
                    .len();
                if len < rec.offset {
                    tracing::warn!(file = %data_path.display(), offset = rec.offset, len, "journal replay writes past the end of a segment");
                }
                f.write_all_at(rec.data, rec.offset)
                    .map_err(|e| io_error("write", &data_path, e))?;
                out.written += 1;
            }
        }
        if at < buf.len() {
            tracing::info!(journal = %path.display(), kept = at, dropped = buf.len() - at, "journal ends in a torn or corrupt record (never acknowledged)");
        }
    }
    for (rel, f) in &touched {
        f.sync_data()
            .map_err(|e| io_error("fsync", &root.join(rel), e))?;
    }
    for (_, path) in &files {
        fs::remove_file(path).map_err(|e| io_error("delete", path, e))?;
    }
    sync_dir(dir)?;
    tracing::info!(
        files = out.files,
        records = out.records,
        written = out.written,
        skipped = out.skipped,
        "journal replayed"
    );
    Ok((out, last_seq))
}

#[cfg(test)]
// The tests poll the journal directory with real deadlines.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::io::Write;

    use clock::{ManualClock, SystemClock};

    use crate::segment::local::{BlockWrite, LocalSegmentReader, LocalSegmentWriter};

    fn entries(tag: &str, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
    }

    async fn read_all(dir: &Path) -> Vec<Vec<u8>> {
        let reader = LocalSegmentReader::open(dir).await.unwrap();
        let batch = reader.read_from(0, usize::MAX).await.unwrap();
        batch.entries.into_iter().map(|e| e.data.to_vec()).collect()
    }

    /// A new segment at `dir` whose small blocks go through `journal`.
    async fn journaled_writer(journal: &Arc<Journal>, dir: &Path) -> LocalSegmentWriter {
        LocalSegmentWriter::create(dir, 0, 6)
            .await
            .unwrap()
            .with_journal(journal.clone())
    }

    fn journal_files_in(root: &Path) -> Vec<PathBuf> {
        journal_files(&root.join(JOURNAL_DIR))
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    #[tokio::test]
    async fn journaled_blocks_are_durable_and_the_journal_is_checkpointed_on_close() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (journal, replayed) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        assert_eq!(replayed, Replayed::default());
        let dir = root.join("7").join("3");
        let w = journaled_writer(&journal, &dir).await;
        let a = entries("a", 3);
        let b = entries("b", 2);
        w.append_block(0, &a).await.unwrap();
        w.append_block(3, &b).await.unwrap();
        // Acknowledged: the journal holds both blocks until a checkpoint.
        let files = journal_files_in(root);
        assert_eq!(files.len(), 1);
        assert!(fs::metadata(&files[0]).unwrap().len() > 0);
        assert_eq!(read_all(&dir).await, [a, b].concat());
        drop(w);
        drop(journal);
        // Closing checkpoints: the segment is synced and the journal file deleted.
        assert!(journal_files_in(root).is_empty());
    }

    /// Segments appending at once, each with several blocks waiting: some commits are
    /// written by the caller (the journal idle), the rest by the committer thread behind
    /// them, with rotations in between; every block is confirmed in its segment's order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_are_written_by_callers_and_the_committer_alike() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let (journal, _) = Journal::open_rotating_at(&root, 16 << 10, SystemClock::shared())
            .unwrap()
            .unwrap();
        let mut tasks = Vec::new();
        for seg in 0..8 {
            let dir = root.join("9").join(seg.to_string());
            let w = journaled_writer(&journal, &dir).await;
            tasks.push(tokio::spawn(async move {
                let mut waiting = std::collections::VecDeque::new();
                let mut all = Vec::new();
                for b in 0..60i64 {
                    let block = entries(&format!("s{seg}-b{b}"), 2);
                    match w.write_block(b * 2, &block).await.unwrap() {
                        BlockWrite::Journaled(j) => waiting.push_back(j),
                        BlockWrite::Durable(_) => panic!("small blocks go through the journal"),
                    }
                    all.extend(block);
                    if waiting.len() > 3 {
                        let (info, r) = waiting.pop_front().unwrap().durable().await;
                        w.confirm(info, r).await.unwrap();
                    }
                }
                while let Some(j) = waiting.pop_front() {
                    let (info, r) = j.durable().await;
                    w.confirm(info, r).await.unwrap();
                }
                let status = w.status().await;
                assert_eq!((status.last_entry_id, status.block_count), (119, 60));
                (dir, all)
            }));
        }
        let mut written = Vec::new();
        for t in tasks {
            written.push(t.await.unwrap());
        }
        for (dir, all) in &written {
            assert_eq!(&read_all(dir).await, all);
        }
        drop(journal);
        assert!(journal_files_in(&root).is_empty());
    }

    /// A file a caller wrote is retired by age (on the journal's clock) with nothing written
    /// after it.
    #[tokio::test]
    async fn an_idle_journal_retires_its_file_once_it_is_old() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let clock = ManualClock::new(0);
        let (journal, _) = Journal::open(root, clock.shared()).unwrap().unwrap();
        let dir = root.join("7").join("3");
        let w = journaled_writer(&journal, &dir).await;
        w.append_block(0, &entries("a", 2)).await.unwrap();
        let first = journal_files_in(root);
        assert_eq!(first.len(), 1);
        // Real time passes, the journal's clock does not: the file stays.
        std::thread::sleep(2 * ROTATE_INTERVAL);
        assert!(journal_files_in(root).contains(&first[0]));
        clock.advance(ROTATE_INTERVAL);
        let deadline = Instant::now() + 20 * ROTATE_INTERVAL;
        while journal_files_in(root).contains(&first[0]) {
            assert!(
                Instant::now() < deadline,
                "the journal file was not retired by age"
            );
            tokio::time::sleep(ROTATE_INTERVAL / 10).await;
        }
        // The block left the journal at the checkpoint: it is synced in its segment.
        assert_eq!(read_all(&dir).await, entries("a", 2));
        drop(w);
        drop(journal);
    }

    #[tokio::test]
    async fn after_close_blocks_are_synced_in_their_own_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (journal, _) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        let dir = root.join("7").join("3");
        let w = journaled_writer(&journal, &dir).await;
        w.append_block(0, &entries("a", 2)).await.unwrap();
        journal.close();
        assert!(!journal.is_open());
        // Closing checkpointed: no journal file is left, and appends go on without it.
        assert!(journal_files_in(root).is_empty());
        w.append_block(2, &entries("b", 2)).await.unwrap();
        assert!(journal_files_in(root).is_empty());
        assert_eq!(
            read_all(&dir).await,
            [entries("a", 2), entries("b", 2)].concat()
        );
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_root_gets_no_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, _) = Journal::open(tmp.path(), SystemClock::shared())
            .unwrap()
            .unwrap();
        assert!(
            Journal::open(tmp.path(), SystemClock::shared())
                .unwrap()
                .is_none()
        );
        drop(first);
        assert!(
            Journal::open(tmp.path(), SystemClock::shared())
                .unwrap()
                .is_some()
        );
    }

    /// A segment with two synced blocks; returns its directory, the bytes of `data.log` and
    /// the entries.
    async fn two_blocks(root: &Path) -> (PathBuf, Vec<u8>, Vec<Vec<u8>>) {
        let dir = root.join("7").join("3");
        let w = LocalSegmentWriter::create(&dir, 0, 6).await.unwrap();
        let a = entries("a", 3);
        let b = entries("b", 4);
        w.append_block(0, &a).await.unwrap();
        w.append_block(3, &b).await.unwrap();
        drop(w);
        let bytes = fs::read(dir.join(DATA_FILE)).unwrap();
        (dir, bytes, [a, b].concat())
    }

    /// Writes a journal file the way the committer does.
    fn write_journal(root: &Path, seq: u64, records: &[(&str, u64, &[u8])]) -> PathBuf {
        let dir = root.join(JOURNAL_DIR);
        fs::create_dir_all(&dir).unwrap();
        let mut buf = Vec::new();
        for (rel, offset, data) in records {
            encode(&mut buf, seq, rel, *offset, data);
        }
        let path = dir.join(format!("{seq:020}{SUFFIX}"));
        fs::write(&path, buf).unwrap();
        path
    }

    #[tokio::test]
    async fn replay_restores_blocks_a_crash_lost_from_the_segment_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (dir, bytes, all) = two_blocks(root).await;
        // The blocks start after the 25-byte header; find where the second one starts.
        let reader = LocalSegmentReader::open(&dir).await.unwrap();
        let batch = reader.read_from(0, usize::MAX).await.unwrap();
        assert_eq!(batch.entries.len(), all.len());
        let data_path = dir.join(DATA_FILE);
        let second = {
            let w = LocalSegmentWriter::open_for_recovery(&dir).await.unwrap().1;
            w.blocks[1].offset as usize
        };
        // The crash: both blocks were in the journal (split over two files), the second
        // never reached the segment file, and the first is half there.
        write_journal(root, 1, &[("7/3", 25, &bytes[25..second])]);
        write_journal(root, 2, &[("7/3", second as u64, &bytes[second..])]);
        fs::write(&data_path, &bytes[..25 + (second - 25) / 2]).unwrap();

        let (_journal, replayed) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        assert_eq!(
            replayed,
            Replayed {
                files: 2,
                records: 2,
                written: 2,
                skipped: 0
            }
        );
        assert_eq!(fs::read(&data_path).unwrap(), bytes);
        assert_eq!(read_all(&dir).await, all);
        // The replayed files are gone; only the new, empty journal file is left.
        let left = journal_files_in(root);
        assert_eq!(left.len(), 1);
        assert_eq!(fs::metadata(&left[0]).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn replay_stops_at_what_a_recycled_file_held_before() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (dir, bytes, all) = two_blocks(root).await;
        let data_path = dir.join(DATA_FILE);
        // File 7 is a recycled file 3: one record of its own, then file 3's old records (which
        // name a block that is not in the segment).
        let mut buf = Vec::new();
        encode(&mut buf, 7, "7/3", 25, &bytes[25..]);
        encode(
            &mut buf,
            3,
            "7/3",
            bytes.len() as u64,
            b"stale block from file 3",
        );
        let jdir = root.join(JOURNAL_DIR);
        fs::create_dir_all(&jdir).unwrap();
        fs::write(jdir.join(format!("{:020}{SUFFIX}", 7)), &buf).unwrap();
        fs::write(jdir.join(format!("{:020}{SPARE_SUFFIX}", 6)), b"old spare").unwrap();
        fs::write(&data_path, &bytes[..25]).unwrap();

        let (_journal, replayed) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        assert_eq!((replayed.records, replayed.written), (1, 1));
        assert_eq!(fs::read(&data_path).unwrap(), bytes);
        assert_eq!(read_all(&dir).await, all);
        // Spares of the previous run are gone; numbering continues after the replayed file.
        let names: Vec<String> = fs::read_dir(&jdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert_eq!(names, [format!("{:020}{SUFFIX}", 8)]);
    }

    /// Copies the files under `from` (recursively) to `to`, as a crash would leave them while
    /// the journal runs: a file retired (renamed or deleted) during the copy is left out.
    /// Copies the tree under `from` to `to` as a crash would leave it, while the journal keeps
    /// checkpointing: a copy during which a journal file was retired (renamed or deleted) is
    /// not what any instant held, so it is thrown away and taken again.
    fn crash_copy(from: &Path, to: &Path) {
        for _ in 0..100 {
            let _ = fs::remove_dir_all(to);
            if copy_tree(from, to) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no copy of {} without a file retired during it",
            from.display()
        );
    }

    /// Copies `from` to `to`; false when a file vanished while copying.
    fn copy_tree(from: &Path, to: &Path) -> bool {
        fs::create_dir_all(to).unwrap();
        let mut whole = true;
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                whole &= copy_tree(&e.path(), &target);
            } else {
                match fs::copy(e.path(), &target) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => whole = false,
                    Err(err) => panic!("copying {}: {err}", e.path().display()),
                }
            }
        }
        whole
    }

    #[tokio::test]
    async fn recycled_journal_files_replay_only_their_own_records() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("live");
        // Rotate every few blocks, so that files are retired, kept as spares and reused.
        let (journal, _) = Journal::open_rotating_at(&root, 2048, SystemClock::shared())
            .unwrap()
            .unwrap();
        let dir = root.join("7").join("3");
        let w = journaled_writer(&journal, &dir).await;
        let mut all = Vec::new();
        for b in 0..150 {
            let block = entries(&format!("block-{b:03}-{}", "x".repeat(b % 40)), 3);
            w.append_block(b as i64 * 3, &block).await.unwrap();
            all.extend(block);
        }
        let bytes = fs::read(dir.join(DATA_FILE)).unwrap();
        // A crash now: copy what is on disk (the journal keeps running on the original).
        let crashed = tmp.path().join("crashed");
        crash_copy(&root, &crashed);
        let files = journal_files(&crashed.join(JOURNAL_DIR)).unwrap();
        assert!(!files.is_empty());
        // The segment lost everything the journal files on disk still hold.
        let (seq, first) = &files[0];
        let journal_bytes = fs::read(first).unwrap();
        let (rec, _) = decode(&journal_bytes, *seq).expect("the oldest file holds a record");
        let cut = rec.offset as usize;
        assert!(cut > 25, "some blocks were checkpointed out of the journal");
        let crashed_data = crashed.join("7").join("3").join(DATA_FILE);
        fs::write(&crashed_data, &bytes[..cut]).unwrap();

        let (_replayed_journal, replayed) = Journal::open(&crashed, SystemClock::shared())
            .unwrap()
            .unwrap();
        assert!(replayed.written > 0);
        assert_eq!(fs::read(&crashed_data).unwrap(), bytes);
        assert_eq!(read_all(&crashed.join("7").join("3")).await, all);
        drop(w);
        drop(journal);
        assert_eq!(read_all(&dir).await, all);
    }

    #[tokio::test]
    async fn replay_is_idempotent_and_skips_what_it_cannot_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (dir, bytes, all) = two_blocks(root).await;
        let mut torn = Vec::new();
        encode(&mut torn, 1, "7/3", 25, &bytes[25..]);
        let path = write_journal(
            root,
            1,
            &[
                // Already in the segment: nothing to write.
                ("7/3", 25, &bytes[25..]),
                // A deleted log.
                ("9/1", 25, b"gone"),
            ],
        );
        // A torn record at the end (a commit that was never acknowledged) is ignored.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        drop(f);

        let (_journal, replayed) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        assert_eq!(
            replayed,
            Replayed {
                files: 1,
                records: 2,
                written: 0,
                skipped: 1
            }
        );
        assert_eq!(fs::read(dir.join(DATA_FILE)).unwrap(), bytes);
        assert_eq!(read_all(&dir).await, all);
        assert!(!root.join("9").exists(), "replay never creates segments");
    }

    #[test]
    fn records_round_trip_and_stop_at_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, 5, "7/3", 25, b"block one");
        encode(&mut buf, 5, "7/4", 99, b"");
        // A record of another journal file (a recycled file's leftovers) ends the file.
        assert!(decode(&buf, 4).is_none());
        let (a, n) = decode(&buf, 5).unwrap();
        assert_eq!(
            a,
            Record {
                rel: "7/3",
                offset: 25,
                data: b"block one"
            }
        );
        let (b, m) = decode(&buf[n..], 5).unwrap();
        assert_eq!((b.rel, b.offset, b.data), ("7/4", 99, &b""[..]));
        assert_eq!(n + m, buf.len());
        // Torn: any prefix short of a whole record decodes to nothing.
        for cut in 0..n {
            assert!(decode(&buf[..cut], 5).is_none(), "prefix {cut}");
        }
        // Corrupt: one flipped bit anywhere is refused.
        for i in 0..n {
            let mut bad = buf[..n].to_vec();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 5).is_none(), "flipped byte {i}");
        }
    }

    #[test]
    fn aligned_commits_end_in_a_padding_record() {
        for len in [
            0usize,
            1,
            5,
            ALIGN - RECORD_OVERHEAD - 1,
            ALIGN - RECORD_OVERHEAD,
            ALIGN - 1,
            ALIGN,
            3 * ALIGN + 7,
        ] {
            let mut buf = Vec::new();
            encode(&mut buf, 9, "7/3", 25, &vec![7u8; len]);
            let before = buf.len();
            pad(&mut buf, 9);
            assert_eq!(buf.len() % ALIGN, 0, "block of {len}");
            assert!(buf.len() - before < 2 * ALIGN);
            let (rec, n) = decode(&buf, 9).unwrap();
            assert_eq!((rec.rel, rec.data.len()), ("7/3", len));
            if n < buf.len() {
                let (padding, m) = decode(&buf[n..], 9).unwrap();
                assert_eq!((padding.rel, n + m), ("", buf.len()));
            }
        }
    }

    #[test]
    fn an_aligned_buffer_encodes_what_a_vec_does_and_stays_aligned_as_it_grows() {
        let mut aligned = AlignedBuf::default();
        let mut plain = Vec::new();
        for round in 0..3 {
            aligned.clear();
            plain.clear();
            for i in 0..40usize {
                let data = vec![i as u8; 1000 * i * (round + 1)];
                encode(&mut aligned, 3, "1/2", i as u64, &data);
                encode(&mut plain, 3, "1/2", i as u64, &data);
                assert_eq!(aligned.as_slice().as_ptr().align_offset(ALIGN), 0);
            }
            pad(&mut aligned, 3);
            pad(&mut plain, 3);
            assert_eq!(aligned.as_slice(), &plain[..]);
            assert_eq!(aligned.len() % ALIGN, 0);
        }
    }

    #[tokio::test]
    async fn replay_skips_padding_and_stops_at_the_zeros_of_a_filled_spare() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let (dir, bytes, all) = two_blocks(root).await;
        let second = {
            let w = LocalSegmentWriter::open_for_recovery(&dir).await.unwrap().1;
            w.blocks[1].offset as usize
        };
        // Two aligned commits, then the zeros a filled spare holds.
        let mut buf = Vec::new();
        encode(&mut buf, 4, "7/3", 25, &bytes[25..second]);
        pad(&mut buf, 4);
        encode(&mut buf, 4, "7/3", second as u64, &bytes[second..]);
        pad(&mut buf, 4);
        let jdir = root.join(JOURNAL_DIR);
        fs::create_dir_all(&jdir).unwrap();
        let path = jdir.join(format!("{:020}{SUFFIX}", 4));
        fs::write(&path, &buf).unwrap();
        fill_with_zeros(&path, 64 * 1024).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 64 * 1024);
        // The segment lost both blocks.
        fs::write(dir.join(DATA_FILE), &bytes[..25]).unwrap();

        let (_journal, replayed) = Journal::open(root, SystemClock::shared()).unwrap().unwrap();
        assert_eq!(
            replayed,
            Replayed {
                files: 1,
                records: 2,
                written: 2,
                skipped: 0
            }
        );
        assert_eq!(fs::read(dir.join(DATA_FILE)).unwrap(), bytes);
        assert_eq!(read_all(&dir).await, all);
    }
}
