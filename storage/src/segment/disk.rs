//! The file-system primitives that local segment files and the journal both use: the data
//! file's name, directory fsync and the mapping of IO errors.
//!
//! It exists so that `local` (which commits blocks through the journal) and `journal` (which
//! replays blocks into segment files) depend on it and not on each other.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::{Error, Result};

/// Name of the segment file.
pub const DATA_FILE: &str = "data.log";

/// Makes a created or renamed file's directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("fsync", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An IO error as a storage error: a missing or existing path keeps its kind.
pub(crate) fn io_error(op: &'static str, path: &Path, e: io::Error) -> Error {
    let path = path.display().to_string();
    match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound { path },
        io::ErrorKind::AlreadyExists => Error::AlreadyExists { path },
        _ => Error::Backend {
            op,
            path,
            source: Box::new(e),
        },
    }
}
