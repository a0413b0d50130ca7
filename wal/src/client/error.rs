//! Client errors, with the Go project's wire codes (spec Appendix A).

use crate::logstore::LogStoreError;
use crate::message::{LogMessageId, MessageError};
use crate::meta::MetaError;

/// Result alias for the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Wire codes of the errors the client itself produces (Go `werr`).
pub mod code {
    /// Fencing the active segments of a log failed; no writer was opened.
    pub const FENCE_FAILED: i32 = 1107;
    /// The writer lost its log (fenced by a newer writer, a metadata conflict, or closed).
    pub const WRITER_LOCK_LOST: i32 = 1405;
    /// A message with neither payload nor properties.
    pub const INVALID_MESSAGE: i32 = 8100;
    /// The log does not exist.
    pub const LOG_NOT_FOUND: i32 = 3012;
    /// The log exists already.
    pub const LOG_ALREADY_EXISTS: i32 = 3013;
    /// A truncation request was refused.
    pub const TRUNCATE_FAILED: i32 = 1105;
    /// A reader cannot read (its start position is truncated, or the stored data
    /// disagrees with the metadata).
    pub const READER_READ_FAILED: i32 = 1504;
    /// A quorum step could not reach enough replicas (retriable).
    pub const QUORUM_FAILED: i32 = 1302;
    /// The segment is not in a state (or mode) that allows the operation.
    pub const SEGMENT_STATE_INVALID: i32 = 1202;
    /// No replica set could be selected for a new segment (retriable).
    pub const SELECT_QUORUM_FAILED: i32 = 4001;
}

/// What went wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The log does not exist (3012).
    #[error("log `{log}` does not exist")]
    LogNotFound {
        /// The log name.
        log: String,
    },
    /// A log with this name exists (3013).
    #[error("log `{log}` already exists")]
    LogAlreadyExists {
        /// The log name.
        log: String,
    },
    /// The message cannot be written (8100).
    #[error(transparent)]
    InvalidMessage(#[from] MessageError),
    /// Fencing and completing an active segment failed while opening a writer (1107); no
    /// writer was opened.
    #[error(
        "fence failed: segment {segment} of log `{log}` could not be fenced and completed: {source}"
    )]
    FenceFailed {
        /// The log name.
        log: String,
        /// The segment.
        segment: i64,
        /// Why.
        #[source]
        source: Box<ClientError>,
    },
    /// The writer lost its log: a newer writer fenced it or won a metadata race (1405).
    /// This write and every later one fail; everything acknowledged stays. Reopen a writer.
    #[error("writer of log `{log}` lost its log, reopen a writer: {reason}")]
    WriterLost {
        /// The log name.
        log: String,
        /// What showed the loss.
        reason: String,
    },
    /// Storage could not take a write (a full disk, an IO error; 8103): this write and every
    /// later one of the writer fail; everything acknowledged stays. The log is still this
    /// writer's: close it (which gives up a segment the failure left empty, so that no empty
    /// segment stays behind) and open a new writer when storage works again.
    #[error("writer of log `{log}` stopped on a storage failure, reopen a writer: {reason}")]
    StorageFailed {
        /// The log name.
        log: String,
        /// The storage failure.
        reason: String,
    },
    /// The writer was closed (1405, as Go's invalidated writer).
    #[error("writer of log `{log}` is closed, open a new writer")]
    WriterClosed {
        /// The log name.
        log: String,
    },
    /// A truncation request was refused (1105): an entry outside a finished segment, a
    /// negative id, or too many concurrent updates of the log metadata.
    #[error("cannot truncate log `{log}` at {id}: {reason}")]
    TruncateFailed {
        /// The log name.
        log: String,
        /// The requested truncation point.
        id: LogMessageId,
        /// Why.
        reason: String,
    },
    /// A reader was opened at an explicit position at or before the log's truncation point
    /// (1504, not retriable). Open at `LogMessageId::EARLIEST`, which starts right after
    /// the truncation point, or at a later position.
    #[error(
        "log `{log}` is truncated up to {truncated_at} (inclusive); cannot read from {requested}"
    )]
    Truncated {
        /// The log name.
        log: String,
        /// The position asked for.
        requested: LogMessageId,
        /// The truncation point (inclusive).
        truncated_at: LogMessageId,
    },
    /// A reader cannot go on (1504): an invalid start position, or stored data that
    /// disagrees with the metadata (a finished segment missing entries).
    #[error("reader of log `{log}` failed: {reason}")]
    ReadFailed {
        /// The log name.
        log: String,
        /// Why.
        reason: String,
    },
    /// Too few of a segment's replicas answered a quorum step (fence, completion) for the
    /// client to decide (1302, retriable): the reason names each replica's failure.
    #[error("quorum failed for segment {segment} of log `{log}`: {reason}")]
    QuorumFailed {
        /// The log name.
        log: String,
        /// The segment.
        segment: i64,
        /// What the replicas answered.
        reason: String,
    },
    /// No replica set could be selected for a new segment (4001, retriable).
    #[error("cannot select the replicas of a new segment: {reason}")]
    SelectQuorumFailed {
        /// What the seeds answered.
        reason: String,
    },
    /// This client cannot serve a segment's quorum (1202): a segment written in service
    /// mode opened by an embedded client, or the reverse, or a malformed quorum.
    #[error("segment {segment} of log `{log}` cannot be used by this client: {reason}")]
    IncompatibleSegment {
        /// The log name.
        log: String,
        /// The segment.
        segment: i64,
        /// Why.
        reason: String,
    },
    /// A metadata error (its own code).
    #[error(transparent)]
    Meta(MetaError),
    /// A LogStore error (its own code).
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
}

impl From<MetaError> for ClientError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::LogNotFound { log } => ClientError::LogNotFound { log },
            MetaError::LogAlreadyExists { log } => ClientError::LogAlreadyExists { log },
            e => ClientError::Meta(e),
        }
    }
}

impl ClientError {
    /// The Go wire code.
    pub fn code(&self) -> i32 {
        match self {
            ClientError::LogNotFound { .. } => code::LOG_NOT_FOUND,
            ClientError::LogAlreadyExists { .. } => code::LOG_ALREADY_EXISTS,
            ClientError::InvalidMessage(_) => code::INVALID_MESSAGE,
            ClientError::FenceFailed { .. } => code::FENCE_FAILED,
            ClientError::WriterLost { .. } | ClientError::WriterClosed { .. } => {
                code::WRITER_LOCK_LOST
            }
            ClientError::StorageFailed { .. } => crate::logstore::code::STORAGE_NOT_WRITABLE,
            ClientError::TruncateFailed { .. } => code::TRUNCATE_FAILED,
            ClientError::Truncated { .. } | ClientError::ReadFailed { .. } => {
                code::READER_READ_FAILED
            }
            ClientError::QuorumFailed { .. } => code::QUORUM_FAILED,
            ClientError::SelectQuorumFailed { .. } => code::SELECT_QUORUM_FAILED,
            ClientError::IncompatibleSegment { .. } => code::SEGMENT_STATE_INVALID,
            ClientError::Meta(e) => e.code(),
            ClientError::LogStore(e) => e.code(),
        }
    }

    /// Whether repeating the call may succeed (the Go `retriable` flag). A failed fence
    /// (1107, never retriable in Go) is retriable here when what failed it is: replicas that
    /// did not answer, a metadata store that was unavailable; once they answer, a new
    /// `open_writer` fences and completes the segment.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Meta(e) => e.is_retriable(),
            ClientError::LogStore(e) => e.is_retriable(),
            ClientError::FenceFailed { source, .. } => source.is_retriable(),
            ClientError::QuorumFailed { .. } | ClientError::SelectQuorumFailed { .. } => true,
            _ => false,
        }
    }

    /// Whether the writer is gone and the application must open a new one (1405).
    pub fn is_writer_lost(&self) -> bool {
        self.code() == code::WRITER_LOCK_LOST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_appendix_a() {
        let log = || "l".to_string();
        assert_eq!(ClientError::LogNotFound { log: log() }.code(), 3012);
        assert_eq!(ClientError::LogAlreadyExists { log: log() }.code(), 3013);
        assert_eq!(ClientError::from(MessageError::Empty).code(), 8100);
        let lost = ClientError::WriterLost {
            log: log(),
            reason: "fenced".into(),
        };
        assert_eq!(lost.code(), 1405);
        assert!(lost.is_writer_lost());
        assert!(!lost.is_retriable());
        assert!(lost.to_string().contains("reopen"));
        let fence = ClientError::FenceFailed {
            log: log(),
            segment: 3,
            source: Box::new(lost),
        };
        assert_eq!(fence.code(), 1107);
        assert!(fence.to_string().contains("fence failed"));
        // Retriable exactly when its cause is.
        assert!(!fence.is_retriable());
        let unavailable = ClientError::FenceFailed {
            log: log(),
            segment: 3,
            source: Box::new(ClientError::from(MetaError::CreateLogTxn { log: log() })),
        };
        assert!(unavailable.is_retriable());
        assert_eq!(
            ClientError::from(MetaError::LogNotFound { log: log() }).code(),
            3012
        );
        let txn = ClientError::from(MetaError::CreateLogTxn { log: log() });
        assert_eq!(txn.code(), 3006);
        assert!(txn.is_retriable());
        let conflict = ClientError::from(MetaError::RevisionInvalid {
            key: "k".into(),
            expected: 1,
        });
        assert_eq!(conflict.code(), 3011);
        let fenced = ClientError::from(LogStoreError::SegmentFenced {
            segment: "s".into(),
            detail: String::new(),
        });
        assert_eq!(fenced.code(), 8104);
        assert!(!fenced.is_retriable());
        let storage = ClientError::StorageFailed {
            log: log(),
            reason: "No space left on device".into(),
        };
        assert_eq!(storage.code(), 8103);
        assert!(!storage.is_writer_lost());
        assert!(!storage.is_retriable());
        assert!(storage.to_string().contains("No space left"));
    }
}
