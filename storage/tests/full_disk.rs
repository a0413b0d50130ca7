//! Local segments and the journal on a disk that really fills up: a small tmpfs.
//!
//! Mounting needs root (`scripts/test` runs as root in CI); without it each case says so on
//! stderr and passes without running. As root, a failed mount fails it. These cases live in
//! their own test binary because they start processes (`mount`): a process forked while
//! another test holds the journal's `flock` keeps that lock until it execs, which would make
//! the journal's own lock tests flaky.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use storage::codec::HEADER_RECORD_LEN;
use storage::segment::journal::{ALIGN, JOURNAL_DIR, Journal};
use storage::segment::local::{DATA_FILE, LocalSegmentReader, LocalSegmentWriter};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipped: mounting a tmpfs to fill needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with a file until it is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", filler.display()),
        }
    }
    let _ = f.sync_all();
    filler
}

async fn entries(dir: &Path) -> Vec<Vec<u8>> {
    let r = LocalSegmentReader::open(dir).await.unwrap();
    let batch = r.read_from(0, usize::MAX).await.unwrap();
    batch.entries.into_iter().map(|e| e.data.to_vec()).collect()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn a_full_disk_fails_an_append_cleanly_and_appends_resume_with_room() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let dir = fs.path().join("seg");
    let w = LocalSegmentWriter::create(&dir, 0, 6).await.unwrap();
    w.append_block(0, &[b"kept"]).await.unwrap();
    let before = file_len(&dir.join(DATA_FILE));
    let filler = fill(fs.path());
    let big = vec![7u8; 256 << 10];
    let err = w.append_block(1, &[&big[..]]).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    // Rolled back: the file is what it was, and the writer takes the same block again.
    assert_eq!(file_len(&dir.join(DATA_FILE)), before);
    fs::remove_file(filler).unwrap();
    w.append_block(1, &[&big[..]]).await.unwrap();
    assert_eq!(entries(&dir).await, [b"kept".to_vec(), big]);
}

#[tokio::test]
async fn a_create_that_finds_the_disk_full_leaves_nothing_behind() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let filler = fill(fs.path());
    let dir = fs.path().join("1").join("0");
    let err = LocalSegmentWriter::create(&dir, 0, 6).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    // No header-less data.log that would read as a damaged segment, no empty directory.
    assert!(!dir.exists(), "left {}", dir.display());
    fs::remove_file(filler).unwrap();
    LocalSegmentWriter::create(&dir, 0, 6).await.unwrap();
}

fn journal_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join(JOURNAL_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wpj"))
        .collect();
    files.sort();
    files
}

/// Copies `from` to `to` as a crash would leave it; retried while a journal file is retired
/// in the middle of the copy.
fn crash_copy(from: &Path, to: &Path) {
    fn copy_tree(from: &Path, to: &Path) -> bool {
        fs::create_dir_all(to).unwrap();
        let mut whole = true;
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                whole &= copy_tree(&e.path(), &target);
            } else if e.file_name() != "lock" {
                match fs::copy(e.path(), &target) {
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => whole = false,
                    Err(err) => panic!("copying {}: {err}", e.path().display()),
                }
            }
        }
        whole
    }
    for _ in 0..100 {
        let _ = fs::remove_dir_all(to);
        if copy_tree(from, to) {
            return;
        }
    }
    panic!("no whole copy of {}", from.display());
}

#[tokio::test]
async fn a_journal_commit_that_finds_the_disk_full_fails_alone_and_replay_never_sees_it() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    let root = fs.path().join("root");
    let (journal, _) = Journal::open(&root, clock::SystemClock::shared())
        .unwrap()
        .unwrap();
    let writer = |dir: PathBuf, journal: Arc<Journal>| async move {
        LocalSegmentWriter::create(&dir, 0, 6)
            .await
            .unwrap()
            .with_journal(journal)
    };
    let a = writer(root.join("1/0"), journal.clone()).await;
    let b = writer(root.join("1/1"), journal.clone()).await;
    a.append_block(0, &[b"before"]).await.unwrap();

    // The next commit needs a page the file system no longer has; the block itself fits in
    // the page its segment file already holds, so it is the journal's write that fails.
    let filler = fill(fs.path());
    let err = b.append_block(0, &[b"no room"]).await.unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    let current = journal_files(&root);
    assert_eq!(current.len(), 1);
    assert!(
        file_len(&current[0]) <= ALIGN as u64,
        "the failed commit was not cut off"
    );

    // Room again: the journal goes on (it used to refuse every commit after one failure).
    fs::remove_file(&filler).unwrap();
    a.append_block(1, &[b"after"]).await.unwrap();
    let c = writer(root.join("1/2"), journal.clone()).await;
    c.append_block(0, &[b"later"]).await.unwrap();
    assert_eq!(
        entries(&root.join("1/0")).await,
        [b"before".to_vec(), b"after".to_vec()]
    );

    // A crash now, in which segment 1/1 lost its unacknowledged block: replay must bring
    // back at most the three acknowledged blocks (fewer once a checkpoint retired the file
    // that held them) and nothing of the failed commit.
    let copy = tempfile::tempdir().unwrap();
    crash_copy(&root, copy.path());
    let b_data = copy.path().join("1/1").join(DATA_FILE);
    OpenOptions::new()
        .write(true)
        .open(&b_data)
        .unwrap()
        .set_len(HEADER_RECORD_LEN as u64)
        .unwrap();
    let (_replayed_journal, replayed) = Journal::open(copy.path(), clock::SystemClock::shared())
        .unwrap()
        .unwrap();
    assert!(replayed.records <= 3, "{replayed:?}");
    assert_eq!(file_len(&b_data), HEADER_RECORD_LEN as u64);
    assert_eq!(
        entries(&copy.path().join("1/0")).await,
        [b"before".to_vec(), b"after".to_vec()]
    );
    drop(journal);
}
