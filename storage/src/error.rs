//! The storage error contract.
//!
//! A few kinds, each telling the caller what to do next: retry ([`Error::is_retriable`]), stop
//! writing because a fence object stands in the way ([`Error::Fenced`]), fix a setting
//! ([`Error::Config`]), or treat stored bytes as damaged ([`Error::Corrupt`]). The backend's own
//! error is kept as the source for logs.

use std::fmt;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Boxed error source.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object or file at this path.
    #[error("not found: {path}")]
    NotFound { path: String },

    /// A conditional create found an object at the path that is not ours and not a fence.
    #[error("object already exists: {path}")]
    AlreadyExists { path: String },

    /// A fence object stands at the path: the segment is fenced and this writer must stop.
    #[error("segment fenced: fence object at {path}")]
    Fenced { path: String },

    /// Stored bytes failed a check (CRC, length, magic, version).
    #[error("corrupt data at {location}: {detail}")]
    Corrupt { location: String, detail: String },

    /// A setting is missing or wrong; `setting` names the YAML key to fix.
    #[error("invalid setting `{setting}`: {message}")]
    Config { setting: String, message: String },

    /// The backend cannot do what was asked (for example conditional writes).
    #[error("not supported by this backend: {what}")]
    Unsupported { what: String },

    /// A failure that may pass: timeouts, throttling, 5xx, connection resets.
    #[error("transient {op} failure on {path}: {source}")]
    Transient {
        op: &'static str,
        path: String,
        #[source]
        source: BoxError,
    },

    /// Any other backend failure; retrying will not help.
    #[error("{op} failed on {path}: {source}")]
    Backend {
        op: &'static str,
        path: String,
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether repeating the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// A corruption error at `location`.
    pub fn corrupt(location: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Error::Corrupt {
            location: location.to_string(),
            detail: detail.to_string(),
        }
    }

    /// A configuration error naming the setting to fix.
    pub fn config(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            setting: setting.into(),
            message: message.into(),
        }
    }
}
