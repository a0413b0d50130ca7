//! Where blocking work runs: the engine's file and embedded-database calls go through
//! [`run`] (and the [`fs`] helpers built on it), never through `tokio::task::spawn_blocking`
//! or `tokio::fs` directly (the workspace's `clippy.toml` forbids both).
//!
//! Normally [`run`] hands the work to tokio's blocking pool, as `spawn_blocking` does. A
//! deterministic simulation instead marks its runtime's only thread with [`inline_here`]:
//! blocking work started on that thread then runs in place, so when it completes is decided
//! by the program and the simulated scheduler, not by the timing of another thread. The
//! simulation may also give every piece of work a simulated duration (a slow disk, a slow
//! `fsync`) through the [`Inline`] it installs: the caller waits that long on tokio's (paused)
//! clock, then the work runs, so other tasks make progress meanwhile, as they would while a
//! real disk is busy.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// What a piece of blocking work does, for a simulation that slows some kinds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Io {
    /// Reads files or directories (or an embedded database) and changes nothing.
    Read,
    /// Writes, syncs, creates, renames or removes.
    Write,
}

/// The blocking work could not finish: it panicked, or the runtime is shutting down.
#[derive(Debug)]
pub struct BlockingError(String);

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocking work failed: {}", self.0)
    }
}

impl std::error::Error for BlockingError {}

impl From<BlockingError> for std::io::Error {
    fn from(e: BlockingError) -> Self {
        std::io::Error::other(e)
    }
}

/// How blocking work runs on a thread marked by [`inline_here`]: in place, after the
/// simulated delay `delay` gives it.
pub struct Inline {
    delay: Box<dyn Fn(Io) -> Duration>,
}

impl Inline {
    /// Work runs in place with no delay.
    pub fn immediate() -> Self {
        Inline {
            delay: Box::new(|_| Duration::ZERO),
        }
    }

    /// Work of kind `io` runs in place after `delay(io)` of (tokio, simulated) time.
    pub fn delayed(delay: impl Fn(Io) -> Duration + 'static) -> Self {
        Inline {
            delay: Box::new(delay),
        }
    }
}

impl fmt::Debug for Inline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inline").finish_non_exhaustive()
    }
}

thread_local! {
    static INLINE: RefCell<Option<Rc<Inline>>> = const { RefCell::new(None) };
}

/// Marks this thread: blocking work started on it runs in place (see the module docs) until
/// the returned guard is dropped. Only for a single-threaded runtime whose time is simulated:
/// on any other runtime, running file work in place would stall the other tasks of the thread.
#[must_use = "blocking work runs in place only while the guard lives"]
pub fn inline_here(inline: Inline) -> InlineGuard {
    let previous = INLINE.with(|cell| cell.replace(Some(Rc::new(inline))));
    InlineGuard {
        previous,
        _not_send: std::marker::PhantomData,
    }
}

/// Undoes [`inline_here`] when dropped.
pub struct InlineGuard {
    previous: Option<Rc<Inline>>,
    _not_send: std::marker::PhantomData<Rc<()>>,
}

impl fmt::Debug for InlineGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineGuard").finish_non_exhaustive()
    }
}

impl Drop for InlineGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        INLINE.with(|cell| *cell.borrow_mut() = previous);
    }
}

/// Runs blocking work `f` of kind `io`: on tokio's blocking pool, or in place on a thread
/// marked by [`inline_here`].
pub async fn run<T, F>(io: Io, f: F) -> Result<T, BlockingError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let delay = INLINE.with(|cell| cell.borrow().as_ref().map(|inline| (inline.delay)(io)));
    match delay {
        Some(delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(f())
        }
        None => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BlockingError(e.to_string())),
    }
}

/// Runs fallible blocking IO `f`; a failure to run it at all is an [`std::io::Error`] too.
pub async fn io<T, F>(io: Io, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    run(io, f).await?
}

pub mod fs {
    //! The file-system calls the engine makes from async code, through [`super::run`].

    use std::fs::{DirEntry, Metadata};
    use std::io;
    use std::path::Path;

    use super::{Io, io};

    /// `std::fs::remove_file`.
    pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref().to_path_buf();
        io(Io::Write, move || std::fs::remove_file(path)).await
    }

    /// `std::fs::remove_dir_all`.
    pub async fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref().to_path_buf();
        io(Io::Write, move || std::fs::remove_dir_all(path)).await
    }

    /// `std::fs::metadata`.
    pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
        let path = path.as_ref().to_path_buf();
        io(Io::Read, move || std::fs::metadata(path)).await
    }

    /// `std::fs::exists`: whether the path exists (an error when that cannot be told).
    pub async fn try_exists(path: impl AsRef<Path>) -> io::Result<bool> {
        let path = path.as_ref().to_path_buf();
        io(Io::Read, move || std::fs::exists(path)).await
    }

    /// `std::fs::read`.
    pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let path = path.as_ref().to_path_buf();
        io(Io::Read, move || std::fs::read(path)).await
    }

    /// The entries of a directory, sorted by file name: the order does not depend on the
    /// file system's own (hash) order, so what is done with them happens in the same order
    /// on every machine and every run.
    pub async fn read_dir(path: impl AsRef<Path>) -> io::Result<Vec<DirEntry>> {
        let path = path.as_ref().to_path_buf();
        io(Io::Read, move || {
            let mut entries = std::fs::read_dir(path)?.collect::<io::Result<Vec<_>>>()?;
            entries.sort_by_key(DirEntry::file_name);
            Ok(entries)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn inline_work_runs_on_this_thread_after_its_simulated_delay() {
        let here = std::thread::current().id();
        let start = tokio::time::Instant::now();
        {
            let _inline = inline_here(Inline::delayed(|io| match io {
                Io::Write => Duration::from_millis(40),
                Io::Read => Duration::ZERO,
            }));
            let on = run(Io::Write, || std::thread::current().id())
                .await
                .unwrap();
            assert_eq!(on, here);
            assert_eq!(start.elapsed(), Duration::from_millis(40));
            let on = run(Io::Read, || std::thread::current().id()).await.unwrap();
            assert_eq!(on, here);
            assert_eq!(start.elapsed(), Duration::from_millis(40));
        }
        // The guard is gone: back to the blocking pool.
        let on = run(Io::Read, || std::thread::current().id()).await.unwrap();
        assert_ne!(on, here);
    }

    #[tokio::test]
    async fn a_panic_in_pooled_work_is_an_error() {
        let e = run::<(), _>(Io::Read, || panic!("boom")).await.unwrap_err();
        assert!(e.to_string().contains("blocking work failed"), "{e}");
    }

    #[tokio::test]
    async fn directory_entries_come_sorted_by_name() {
        let dir = std::env::temp_dir().join(format!("clock-blocking-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b", "c", "a"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        let names: Vec<_> = fs::read_dir(&dir)
            .await
            .unwrap()
            .iter()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
