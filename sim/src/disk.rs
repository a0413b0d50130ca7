//! Disk faults: what a power loss leaves of a LogStore node's directory, and slow disks.
//!
//! The simulation runs file work in place on its one thread (`clock::blocking`), so at any
//! moment a node's directory holds exactly the writes that completed, synced or not. A hard
//! crash turns that into what a machine that lost power could hold ([`crash_image`]):
//!
//! * **Unsynced writes lost.** A block written to a segment's `data.log` and committed through
//!   the node's journal is durable in the journal; its bytes in `data.log` may not have reached
//!   the disk yet (the journal's checkpoint syncs them later). Every such block still named by a
//!   journal record may be lost from `data.log`: its range is zeroed in the image. Replay must
//!   write it back from the journal.
//! * **Torn writes.** The write in flight when the power went is cut short: the image gets a
//!   partial record at the end of the newest journal file (a header with a length its bytes do
//!   not reach, never acknowledged), and a partial block at the end of the `data.log` of
//!   segments that are not finalized. Replay and recovery must stop at them and cut them off.
//!
//! Nothing that was synced and acknowledged outside the journal is touched: a finalized
//! segment (its footer written and synced) gets no torn tail, and only ranges the journal also
//! holds are lost. Which blocks are lost and how long the torn tails are comes from the seed.
//!
//! The journal's record layout (its module docs in `storage::segment::journal`): magic `WPJ1`
//! (u32 LE), body length (u32), CRC-32 of the body (u32); body = the journal file's sequence
//! number (u64), path length (u16), the segment directory relative to the journal's root, the
//! offset in `data.log` (u64), the block bytes. The parser here is independent of the
//! storage crate's, on purpose: the judge does not share the code it judges.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::plan::draw;

const MAGIC: &[u8; 4] = b"WPJ1";
const HEADER: usize = 12;
const JOURNAL_DIR: &str = ".journal";
const DATA_FILE: &str = "data.log";

/// What a crash image did to a node's directory. `lost_unsynced_blocks` depends on which
/// journal files the journal's checkpoint thread had retired (in real time) when the crash
/// came; the engine's path does not (replay writes the same bytes back either way), so it is
/// reported but kept out of the path's digest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrashDamage {
    /// Journaled blocks whose bytes were lost from their `data.log`.
    pub lost_unsynced_blocks: u64,
    /// Torn writes left at the end of a journal file or a `data.log`.
    pub torn_tails: u64,
}

/// One journal record: a block of `data.log` in `segment` (relative to the journal's root).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    segment: String,
    offset: u64,
    len: u64,
}

/// Copies `dir` to `image` at the moment of a crash: every write that completed, synced or
/// not. The simulation's file work runs in place on its one thread, so the copy is of one
/// instant. [`damage`] then makes it what a power loss could have left.
pub fn snapshot(dir: &Path, image: &Path) -> io::Result<()> {
    copy_tree(dir, image)
}

/// Turns a [`snapshot`] into what a power loss could have left (see the module docs), with
/// the choices drawn from `seed`.
pub async fn damage(image: &Path, seed: u64) -> io::Result<CrashDamage> {
    // Tears come from their own generator, drawn in an order the engine's path fixes; which
    // journaled blocks are lost is decided per block (whether the journal's checkpoint
    // thread retired a file before the crash is a matter of real time, and must not shift
    // the other draws).
    let mut rng = StdRng::seed_from_u64(seed);
    let mut damage = CrashDamage::default();
    let mut journals = Vec::new();
    find_journals(image, &mut journals)?;
    journals.sort();
    for journal in journals {
        let root = journal.parent().unwrap_or(image).to_path_buf();
        let mut files: Vec<PathBuf> = fs::read_dir(&journal)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wpj"))
            .collect();
        files.sort();
        for file in &files {
            for record in records(&fs::read(file)?) {
                let which = record
                    .segment
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                if draw(seed, which, record.offset) < 0.5
                    && zero_range(&root.join(&record.segment), &record)?
                {
                    damage.lost_unsynced_blocks += 1;
                }
            }
        }
        if let Some(newest) = files.last()
            && rng.random_bool(0.5)
        {
            tear_journal(newest, &mut rng)?;
            damage.torn_tails += 1;
        }
        let mut segments = Vec::new();
        find_data_logs(&root, &mut segments)?;
        segments.sort();
        for data in segments {
            if rng.random_bool(0.3) && !is_finalized(&data).await {
                tear_data_log(&data, &mut rng)?;
                damage.torn_tails += 1;
            }
        }
    }
    Ok(damage)
}

/// Replaces `dir` with `image` (after the crashed instance let go of it).
pub fn install_image(dir: &Path, image: &Path) -> io::Result<()> {
    fs::remove_dir_all(dir)?;
    fs::rename(image, dir)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            match fs::copy(&src, &dst) {
                Ok(_) => {}
                // Retired by the journal's checkpoint thread while this copied.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn find_journals(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            if e.file_name() == JOURNAL_DIR {
                out.push(e.path());
            } else {
                find_journals(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

fn find_data_logs(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let kind = e.file_type()?;
        if kind.is_dir() && e.file_name() != JOURNAL_DIR {
            find_data_logs(&e.path(), out)?;
        } else if kind.is_file() && e.file_name() == DATA_FILE {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The valid records of a journal file, up to the first that is not (torn, or left from the
/// file's earlier life: replay stops there too). Padding records (empty path) are skipped.
fn records(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut sequence = None;
    while let Some(header) = bytes.get(at..at + HEADER) {
        if &header[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        let Some(body) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(body) != crc || body.len() < 18 {
            break;
        }
        let seq = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        if *sequence.get_or_insert(seq) != seq {
            break;
        }
        let path_len = u16::from_le_bytes(body[8..10].try_into().unwrap_or_default()) as usize;
        let Some(path) = body.get(10..10 + path_len) else {
            break;
        };
        let Some(offset) = body.get(10 + path_len..18 + path_len) else {
            break;
        };
        let offset = u64::from_le_bytes(offset.try_into().unwrap_or_default());
        let block = (body.len() - 18 - path_len) as u64;
        if !path.is_empty() {
            out.push(Record {
                segment: String::from_utf8_lossy(path).into_owned(),
                offset,
                len: block,
            });
        }
        at += HEADER + len;
    }
    out
}

/// Zeroes the record's block in its `data.log`, where the file holds it.
fn zero_range(segment: &Path, record: &Record) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let data = segment.join(DATA_FILE);
    let Ok(file) = fs::OpenOptions::new().write(true).open(&data) else {
        return Ok(false);
    };
    if file.metadata()?.len() < record.offset + record.len {
        return Ok(false);
    }
    let len = usize::try_from(record.len).map_err(io::Error::other)?;
    file.write_all_at(&vec![0u8; len], record.offset)?;
    Ok(true)
}

/// Appends a record header whose length its bytes never reach.
fn tear_journal(file: &Path, rng: &mut StdRng) -> io::Result<()> {
    use std::io::Write;
    let mut torn = Vec::from(&MAGIC[..]);
    let claimed: u32 = rng.random_range(64..4096);
    torn.extend_from_slice(&claimed.to_le_bytes());
    torn.extend_from_slice(&rng.random::<u32>().to_le_bytes());
    let partial = rng.random_range(0..usize::try_from(claimed).unwrap_or(64) / 2);
    torn.extend((0..partial).map(|_| rng.random::<u8>()));
    let keep = rng.random_range(1..=torn.len());
    let mut f = fs::OpenOptions::new().append(true).open(file)?;
    f.write_all(&torn[..keep])
}

/// Appends the first bytes of a block that never finished: a copy of the file's own first
/// bytes after its header would look like a block start, so random bytes of a random length
/// stand for it (recovery must cut whatever does not verify).
fn tear_data_log(data: &Path, rng: &mut StdRng) -> io::Result<()> {
    use std::io::Write;
    let len = rng.random_range(1..=200usize);
    let torn: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
    let mut f = fs::OpenOptions::new().append(true).open(data)?;
    f.write_all(&torn)
}

/// Whether the segment's `data.log` is finalized (its footer written): nothing is written
/// after that, so a power loss cannot tear its end. A file the verifier cannot read is left
/// alone rather than guessed at.
async fn is_finalized(data: &Path) -> bool {
    let dir = data.parent().unwrap_or(data);
    match storage::segment::local::check_segment(dir).await {
        Ok(Some(check)) => check.footer.is_some(),
        Ok(None) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, path: &str, offset: u64, block: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&(path.len() as u16).to_le_bytes());
        body.extend_from_slice(path.as_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(block);
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn records_stop_at_a_torn_or_foreign_record_and_skip_padding() {
        let mut bytes = record(7, "1/0", 64, b"abc");
        bytes.extend(record(7, "", 0, b""));
        bytes.extend(record(7, "1/1", 128, b"de"));
        bytes.extend(record(6, "1/2", 0, b"old life"));
        assert_eq!(
            records(&bytes),
            [
                Record {
                    segment: "1/0".into(),
                    offset: 64,
                    len: 3
                },
                Record {
                    segment: "1/1".into(),
                    offset: 128,
                    len: 2
                }
            ]
        );
        let mut torn = record(7, "1/0", 64, b"abc");
        let whole = torn.len();
        torn.extend(record(7, "1/1", 128, b"de"));
        torn.truncate(torn.len() - 1);
        assert_eq!(records(&torn).len(), 1);
        torn[whole - 1] ^= 1;
        assert!(records(&torn).is_empty());
    }
}
