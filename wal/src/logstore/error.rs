//! The LogStore error contract: the Go wire codes of spec Appendix A.
//!
//! Every failure a caller of the LogStore sees has a [`code`](LogStoreError::code) that the
//! client branches on: retry ([`is_retriable`](LogStoreError::is_retriable)), or give the
//! segment up and roll ([`is_segment_not_writable`](LogStoreError::is_segment_not_writable)).
//! Errors are `Clone` because one failed flush answers many waiting appends.

use std::sync::Arc;

/// Result alias for the LogStore.
pub type Result<T, E = LogStoreError> = std::result::Result<T, E>;

/// Wire codes of the errors this module produces (Go `werr`).
pub mod code {
    /// Stored bytes failed a check (CRC, length, magic, sequence); not retriable.
    pub const CORRUPT: i32 = 8007;
    /// Nothing at the asked entry yet (retriable): what a [`ReadEnd::NotYet`] batch means on
    /// the wire.
    ///
    /// [`ReadEnd::NotYet`]: crate::logstore::ReadEnd::NotYet
    pub const ENTRY_NOT_FOUND: i32 = 8102;
    /// The segment is not there (retriable).
    pub const SEGMENT_NOT_FOUND: i32 = 8105;
    /// The segment is finished and fully read: what an empty [`ReadEnd::Eof`] batch means on
    /// the wire.
    ///
    /// [`ReadEnd::Eof`]: crate::logstore::ReadEnd::Eof
    pub const EOF: i32 = 2310;
    /// The segment is not in a state that allows the operation.
    pub const SEGMENT_STATE_INVALID: i32 = 1202;
    /// Client closed (not-writable).
    pub const CLIENT_CLOSED: i32 = 1002;
    /// Segment closed (retriable, not-writable).
    pub const SEGMENT_CLOSED: i32 = 1200;
    /// The out-of-order window is full (retriable).
    pub const BUFFER_FULL: i32 = 2200;
    /// An entry id the segment cannot take.
    pub const INVALID_ENTRY_ID: i32 = 2215;
    /// The segment is finalized (not-writable).
    pub const FINALIZED: i32 = 2216;
    /// The writer is closed.
    pub const WRITER_CLOSED: i32 = 2217;
    /// The writer was reopened on existing data and takes no appends.
    pub const IN_RECOVERY_MODE: i32 = 2218;
    /// The segment is being finalized (not-writable).
    pub const FINALIZING: i32 = 2219;
    /// A block could not be stored; the writer takes no more appends (not-writable).
    pub const STORAGE_NOT_WRITABLE: i32 = 8103;
    /// A fence stands in the segment (not-writable).
    pub const SEGMENT_FENCED: i32 = 8104;
    /// A compaction of the segment is already running on this LogStore.
    pub const ALREADY_COMPACTING: i32 = 2110;
    /// Local file system error (retriable).
    pub const FS_ERROR: i32 = 9000;
    /// Object storage error (retriable).
    pub const OBJECT_STORAGE_ERROR: i32 = 9100;
    /// Something failed inside or on the way to a node (retriable).
    pub const INTERNAL: i32 = 8000;
    /// A node did not answer in time (retriable).
    pub const TIMEOUT: i32 = 8002;
    /// The segment holds no entry (GetSegmentLastAddConfirmed on an empty segment).
    pub const NO_BLOCK_FOUND: i32 = 2311;

    /// The codes Go's `IsSegmentNotWritableErr` matches.
    pub const SEGMENT_NOT_WRITABLE: [i32; 6] = [
        SEGMENT_CLOSED,
        SEGMENT_FENCED,
        STORAGE_NOT_WRITABLE,
        FINALIZED,
        FINALIZING,
        CLIENT_CLOSED,
    ];
}

/// Which storage medium a [`LogStoreError::Storage`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// Object storage (code 9100).
    Object,
    /// A local file system (code 9000).
    Local,
}

/// Errors of the LogStore write path.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogStoreError {
    /// The entry id lies beyond the out-of-order window; retry once earlier entries flushed.
    #[error("buffer full: entry {entry_id} is outside the window [{first}, {end})")]
    BufferFull {
        /// The rejected id.
        entry_id: i64,
        /// First id of the window.
        first: i64,
        /// One past the last id of the window.
        end: i64,
    },

    /// The entry id can never be taken (negative).
    #[error("invalid entry id {entry_id}: {reason}")]
    InvalidEntryId {
        /// The rejected id.
        entry_id: i64,
        /// Why.
        reason: String,
    },

    /// The segment is finalized: it has its footer and takes no appends.
    #[error("segment {segment} is finalized")]
    Finalized {
        /// `log <id> segment <id>`.
        segment: String,
    },

    /// The processor is closed.
    #[error("writer of segment {segment} is closed")]
    WriterClosed {
        /// `log <id> segment <id>`.
        segment: String,
    },

    /// The writer was reopened on a segment that already holds data: it serves fence and
    /// complete only.
    #[error("writer of segment {segment} is in recovery mode")]
    InRecoveryMode {
        /// `log <id> segment <id>`.
        segment: String,
    },

    /// A block could not be stored; this writer takes no more appends.
    #[error("storage not writable for segment {segment}: {detail}")]
    StorageNotWritable {
        /// `log <id> segment <id>`.
        segment: String,
        /// The storage failure.
        detail: String,
    },

    /// A fence stands in the segment (ours or another writer's).
    #[error("segment {segment} is fenced: {detail}")]
    SegmentFenced {
        /// `log <id> segment <id>`.
        segment: String,
        /// Where or why.
        detail: String,
    },

    /// Stored data failed a check; `location` names log, segment and block (or file and
    /// offset).
    #[error("corrupt data in segment {segment} at {location}: {detail}")]
    Corrupt {
        /// `log <id> segment <id>`.
        segment: String,
        /// Where, as storage reported it.
        location: String,
        /// What check failed.
        detail: String,
    },

    /// The segment is not there: this LogStore cleaned it, or its directory is gone.
    #[error("segment {segment} not found: {detail}")]
    SegmentNotFound {
        /// `log <id> segment <id>`.
        segment: String,
        /// Why.
        detail: String,
    },

    /// The segment is not in a state that allows the operation (for example compacting a
    /// segment without a footer).
    #[error("segment {segment} is in the wrong state: {detail}")]
    SegmentStateInvalid {
        /// `log <id> segment <id>`.
        segment: String,
        /// What is wrong.
        detail: String,
    },

    /// A compaction of the segment is already running here.
    #[error("segment {segment} is already being compacted")]
    AlreadyCompacting {
        /// `log <id> segment <id>`.
        segment: String,
    },

    /// A storage operation failed (fence, finalize, open); it may pass on retry.
    #[error("storage error ({kind:?}): {source}")]
    Storage {
        /// Object storage or local files.
        kind: StorageKind,
        /// The storage error.
        #[source]
        source: Arc<storage::Error>,
    },

    /// A remote LogStore answered with a failure (service mode): its Go code, reason and
    /// retriable flag as the node sent them.
    #[error("logstore {node}: {reason} (code {code})")]
    Remote {
        /// The node's endpoint.
        node: String,
        /// The Go wire code.
        code: i32,
        /// The node's reason.
        reason: String,
        /// The node's retriable flag.
        retriable: bool,
    },

    /// A remote LogStore could not be reached, broke the call, or did not answer in time
    /// (service mode; retriable). Code 8002 for a timeout, 8000 otherwise.
    #[error("logstore {node} unavailable: {detail}")]
    Unavailable {
        /// The node's endpoint.
        node: String,
        /// What happened.
        detail: String,
        /// Whether the call timed out.
        timed_out: bool,
    },
}

impl LogStoreError {
    /// The Go wire code (spec Appendix A).
    pub fn code(&self) -> i32 {
        match self {
            LogStoreError::BufferFull { .. } => code::BUFFER_FULL,
            LogStoreError::InvalidEntryId { .. } => code::INVALID_ENTRY_ID,
            LogStoreError::Finalized { .. } => code::FINALIZED,
            LogStoreError::WriterClosed { .. } => code::WRITER_CLOSED,
            LogStoreError::InRecoveryMode { .. } => code::IN_RECOVERY_MODE,
            LogStoreError::StorageNotWritable { .. } => code::STORAGE_NOT_WRITABLE,
            LogStoreError::SegmentFenced { .. } => code::SEGMENT_FENCED,
            LogStoreError::Corrupt { .. } => code::CORRUPT,
            LogStoreError::SegmentNotFound { .. } => code::SEGMENT_NOT_FOUND,
            LogStoreError::SegmentStateInvalid { .. } => code::SEGMENT_STATE_INVALID,
            LogStoreError::AlreadyCompacting { .. } => code::ALREADY_COMPACTING,
            LogStoreError::Storage {
                kind: StorageKind::Object,
                ..
            } => code::OBJECT_STORAGE_ERROR,
            LogStoreError::Storage {
                kind: StorageKind::Local,
                ..
            } => code::FS_ERROR,
            LogStoreError::Remote { code, .. } => *code,
            LogStoreError::Unavailable {
                timed_out: true, ..
            } => code::TIMEOUT,
            LogStoreError::Unavailable { .. } => code::INTERNAL,
        }
    }

    /// Whether the same request may succeed later (the Go `retriable` flag).
    pub fn is_retriable(&self) -> bool {
        match self {
            LogStoreError::Remote { retriable, .. } => return *retriable,
            LogStoreError::Unavailable { .. } => return true,
            _ => {}
        }
        matches!(
            self.code(),
            code::BUFFER_FULL
                | code::FS_ERROR
                | code::OBJECT_STORAGE_ERROR
                | code::SEGMENT_CLOSED
                | code::SEGMENT_NOT_FOUND
        )
    }

    /// Whether the client must give up this segment and roll (Go `IsSegmentNotWritableErr`).
    pub fn is_segment_not_writable(&self) -> bool {
        code::SEGMENT_NOT_WRITABLE.contains(&self.code())
    }

    /// A storage error from `kind`; a fence becomes [`LogStoreError::SegmentFenced`].
    pub(crate) fn storage(segment: &str, kind: StorageKind, e: storage::Error) -> Self {
        match e {
            storage::Error::Fenced { path } => LogStoreError::SegmentFenced {
                segment: segment.to_string(),
                detail: format!("fence at {path}"),
            },
            e => LogStoreError::Storage {
                kind,
                source: Arc::new(e),
            },
        }
    }

    /// A storage error on the read path: corruption becomes [`LogStoreError::Corrupt`] with
    /// its location; the rest as [`LogStoreError::storage`].
    pub(crate) fn read(segment: &str, kind: StorageKind, e: storage::Error) -> Self {
        match e {
            storage::Error::Corrupt { location, detail } => LogStoreError::Corrupt {
                segment: segment.to_string(),
                location,
                detail,
            },
            e => LogStoreError::storage(segment, kind, e),
        }
    }

    /// The error a failed block gives its entries and every later append: 8104 for a fence,
    /// 8103 for anything else.
    pub(crate) fn block_failed(segment: &str, e: &storage::Error) -> Self {
        match e {
            storage::Error::Fenced { path } => LogStoreError::SegmentFenced {
                segment: segment.to_string(),
                detail: format!("fence at {path}"),
            },
            e => LogStoreError::StorageNotWritable {
                segment: segment.to_string(),
                detail: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> String {
        "log 1 segment 2".into()
    }

    #[test]
    fn codes_and_classes_follow_appendix_a() {
        let cases: Vec<(LogStoreError, i32, bool, bool)> = vec![
            (
                LogStoreError::BufferFull {
                    entry_id: 10,
                    first: 0,
                    end: 10,
                },
                2200,
                true,
                false,
            ),
            (
                LogStoreError::InvalidEntryId {
                    entry_id: -1,
                    reason: "negative".into(),
                },
                2215,
                false,
                false,
            ),
            (
                LogStoreError::Finalized { segment: seg() },
                2216,
                false,
                true,
            ),
            (
                LogStoreError::WriterClosed { segment: seg() },
                2217,
                false,
                false,
            ),
            (
                LogStoreError::InRecoveryMode { segment: seg() },
                2218,
                false,
                false,
            ),
            (
                LogStoreError::StorageNotWritable {
                    segment: seg(),
                    detail: String::new(),
                },
                8103,
                false,
                true,
            ),
            (
                LogStoreError::SegmentFenced {
                    segment: seg(),
                    detail: String::new(),
                },
                8104,
                false,
                true,
            ),
            (
                LogStoreError::storage(
                    &seg(),
                    StorageKind::Object,
                    storage::Error::NotFound { path: "x".into() },
                ),
                9100,
                true,
                false,
            ),
            (
                LogStoreError::storage(
                    &seg(),
                    StorageKind::Local,
                    storage::Error::NotFound { path: "x".into() },
                ),
                9000,
                true,
                false,
            ),
            (
                LogStoreError::read(
                    &seg(),
                    StorageKind::Object,
                    storage::Error::corrupt("log 1 segment 2 block 3.blk", "crc"),
                ),
                8007,
                false,
                false,
            ),
            (
                LogStoreError::SegmentNotFound {
                    segment: seg(),
                    detail: String::new(),
                },
                8105,
                true,
                false,
            ),
            (
                LogStoreError::SegmentStateInvalid {
                    segment: seg(),
                    detail: String::new(),
                },
                1202,
                false,
                false,
            ),
        ];
        for (e, c, retriable, not_writable) in cases {
            assert_eq!(e.code(), c, "{e}");
            assert_eq!(e.is_retriable(), retriable, "{e}");
            assert_eq!(e.is_segment_not_writable(), not_writable, "{e}");
        }
    }

    #[test]
    fn a_fence_maps_to_8104_and_anything_else_to_8103() {
        let fenced = storage::Error::Fenced {
            path: "1/2/3.blk".into(),
        };
        assert_eq!(LogStoreError::block_failed(&seg(), &fenced).code(), 8104);
        assert_eq!(
            LogStoreError::storage(&seg(), StorageKind::Object, fenced).code(),
            8104
        );
        let other = storage::Error::Unsupported { what: "x".into() };
        assert_eq!(LogStoreError::block_failed(&seg(), &other).code(), 8103);
    }
}
