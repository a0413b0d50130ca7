//! Failures of the LogStore service and how they travel: every unary answer carries a
//! `Status` with the Go wire code (spec Appendix A) inside a gRPC OK, so clients branch on
//! codes, not messages.

use proto::logstore::Status;

use crate::logstore::LogStoreError;

/// Wire codes the service adds to the LogStore's own ([`crate::logstore::code`]).
pub mod code {
    /// The node is stopping or decommissioning and takes no appends (not retriable: the
    /// client gives the replica up and rolls).
    pub const SHUTDOWN: i32 = 2002;
    /// The log (or its whole instance) is marked deleted on this node.
    pub const LOG_BEING_DELETED: i32 = 2005;
    /// The local disk is above its watermark (retriable).
    pub const DISK_PRESSURE: i32 = 2007;
    /// A delete marker could not be stored (retriable).
    pub const MARK_DELETE_FAILED: i32 = 2006;
    /// `bucket_name` / `root_path` cannot name a tenant.
    pub const INVALID_ROOT_PATH: i32 = 2008;
    /// The segment holds no entry (GetSegmentLastAddConfirmed).
    pub const NO_BLOCK_FOUND: i32 = 2311;
    /// SelectNodes without filters.
    pub const NO_FILTER: i32 = 4000;
    /// SelectNodes found no node for a hard filter (retriable).
    pub const SELECT_QUORUM_FAILED: i32 = 4001;
    /// The node is not ready to select (retriable).
    pub const INSUFFICIENT_QUORUM: i32 = 4002;
    /// Something unexpected inside the node (retriable).
    pub const INTERNAL: i32 = 8000;
    /// The request cannot be right (malformed batch, negative ids, unknown flag).
    pub const INVALID_MESSAGE: i32 = 8100;
    /// Object storage could not be reached for the tenant (retriable).
    pub const OBJECT_STORAGE: i32 = 9100;
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A failure of the segment's LogStore (its own code).
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    /// The node takes no appends (stopping or decommissioning).
    #[error("logstore node is {0}: no new appends")]
    Shutdown(&'static str),
    /// The disk holding local segments is too full.
    #[error("logstore local disk above its watermark, write backpressure active: {0}")]
    DiskPressure(String),
    /// The log or its instance is marked deleted.
    #[error("log {log_id} of {tenant} is being deleted")]
    LogBeingDeleted {
        /// `bucket/rootPath`.
        tenant: String,
        /// The log.
        log_id: i64,
    },
    /// A delete marker could not be written.
    #[error("cannot store the delete marker: {0}")]
    MarkDeleteFailed(String),
    /// The tenant names are unusable.
    #[error("invalid tenant: {0}")]
    InvalidTenant(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The segment holds no entry.
    #[error("segment {0} holds no entry")]
    NoBlockFound(String),
    /// SelectNodes without filters.
    #[error("no filter provided")]
    NoFilter,
    /// No node matched a hard filter.
    #[error("failed to select quorum nodes: {0}")]
    SelectFailed(String),
    /// Membership is not ready.
    #[error("insufficient quorum nodes: {0}")]
    InsufficientQuorum(String),
    /// The tenant's object storage could not be opened.
    #[error("object storage for {tenant}: {detail}")]
    ObjectStorage {
        /// `bucket/rootPath`.
        tenant: String,
        /// The storage error.
        detail: String,
    },
    /// An unexpected failure inside the node.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The Go wire code.
    pub fn code(&self) -> i32 {
        match self {
            ServiceError::LogStore(e) => e.code(),
            ServiceError::Shutdown(_) => code::SHUTDOWN,
            ServiceError::DiskPressure(_) => code::DISK_PRESSURE,
            ServiceError::LogBeingDeleted { .. } => code::LOG_BEING_DELETED,
            ServiceError::MarkDeleteFailed(_) => code::MARK_DELETE_FAILED,
            ServiceError::InvalidTenant(_) => code::INVALID_ROOT_PATH,
            ServiceError::InvalidRequest(_) => code::INVALID_MESSAGE,
            ServiceError::NoBlockFound(_) => code::NO_BLOCK_FOUND,
            ServiceError::NoFilter => code::NO_FILTER,
            ServiceError::SelectFailed(_) => code::SELECT_QUORUM_FAILED,
            ServiceError::InsufficientQuorum(_) => code::INSUFFICIENT_QUORUM,
            ServiceError::ObjectStorage { .. } => code::OBJECT_STORAGE,
            ServiceError::Internal(_) => code::INTERNAL,
        }
    }

    /// The Go `retriable` flag.
    pub fn is_retriable(&self) -> bool {
        match self {
            ServiceError::LogStore(e) => e.is_retriable(),
            ServiceError::MarkDeleteFailed(_)
            | ServiceError::DiskPressure(_)
            | ServiceError::SelectFailed(_)
            | ServiceError::InsufficientQuorum(_)
            | ServiceError::ObjectStorage { .. }
            | ServiceError::Internal(_) => true,
            _ => false,
        }
    }

    /// The `Status` carried in a response.
    pub fn status(&self) -> Status {
        let reason = match self {
            ServiceError::LogStore(e) => e.to_string(),
            other => other.to_string(),
        };
        Status {
            code: self.code(),
            retriable: self.is_retriable(),
            detail: reason.clone(),
            reason,
            extra_info: Default::default(),
        }
    }
}

/// Result alias of the service.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The `Status` of success (code 0).
pub(crate) fn ok_status() -> Status {
    Status::default()
}

/// The `Status` of a result.
pub(crate) fn status_of<T>(r: &Result<T>) -> Status {
    match r {
        Ok(_) => ok_status(),
        Err(e) => e.status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retriable_flags_follow_appendix_a() {
        let cases = [
            (ServiceError::Shutdown("stopping"), 2002, false),
            (
                ServiceError::LogBeingDeleted {
                    tenant: "b/r".into(),
                    log_id: 1,
                },
                2005,
                false,
            ),
            (ServiceError::MarkDeleteFailed("x".into()), 2006, true),
            (ServiceError::DiskPressure("x".into()), 2007, true),
            (ServiceError::InvalidTenant("x".into()), 2008, false),
            (ServiceError::NoBlockFound("x".into()), 2311, false),
            (ServiceError::NoFilter, 4000, false),
            (ServiceError::SelectFailed("x".into()), 4001, true),
            (ServiceError::InsufficientQuorum("x".into()), 4002, true),
            (ServiceError::InvalidRequest("x".into()), 8100, false),
            (
                ServiceError::LogStore(LogStoreError::BufferFull {
                    entry_id: 1,
                    first: 0,
                    end: 1,
                }),
                2200,
                true,
            ),
        ];
        for (e, c, r) in cases {
            let s = e.status();
            assert_eq!((s.code, s.retriable), (c, r), "{e}");
            assert!(!s.reason.is_empty());
        }
        assert_eq!(ok_status().code, 0);
    }
}
