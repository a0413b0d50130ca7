//! The adapter's errors and how they travel: as a gRPC status whose details carry an
//! [`ErrorDetail`] (what the caller must do), or as the error of one append result.
//!
//! The status details follow gRPC's rich error model: the `grpc-status-details-bin` trailer
//! holds a `google.rpc.Status` whose `details` hold one `google.protobuf.Any` of type
//! `type.googleapis.com/woodpecker.milvus.v1.ErrorDetail`, which Go's
//! `status.FromError(err).Details()` decodes once the generated package is linked.

use bytes::Bytes;
use prost::Message as _;
use proto::milvus::{ErrorDetail, ErrorReason};
use tonic::{Code, Status};
use wal::client::ClientError;
use wal::meta::kv::KvError;

/// The type URL of [`ErrorDetail`] inside a status.
pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/woodpecker.milvus.v1.ErrorDetail";

/// The wire form of `google.rpc.Status` (code 1, message 2, details 3).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<RpcAny>,
}

/// The wire form of `google.protobuf.Any` (type URL 1, value 2).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// What went wrong in the adapter. Each kind maps to one [`ErrorReason`] (what the caller must
/// do) and one gRPC code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A newer read-write open of the pchannel (a higher term, or the same term later) took
    /// its writer over; this session never writes again. Close it.
    #[error(
        "pchannel `{pchannel}` was taken over by a newer open (term {term}); this session is fenced"
    )]
    Fenced {
        /// The pchannel.
        pchannel: String,
        /// The pchannel's term in force.
        term: i64,
    },
    /// A read-write open with a term below the pchannel's durable term.
    #[error(
        "term {requested} of pchannel `{pchannel}` is stale: the pchannel is at term {current}"
    )]
    StaleTerm {
        /// The pchannel.
        pchannel: String,
        /// The term asked for.
        requested: i64,
        /// The durable term.
        current: i64,
    },
    /// The session does not exist: never opened, closed, or expired.
    #[error("session {0} does not exist (never opened, closed, or expired)")]
    SessionNotFound(u64),
    /// The pchannel has no log.
    #[error("pchannel `{0}` does not exist")]
    PChannelNotFound(String),
    /// The request is wrong; nothing changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An append or truncation on a read-only session.
    #[error("session {0} is read-only: appends and truncations need a read-write open")]
    ReadOnly(u64),
    /// A transient condition; retrying may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Kv(#[from] KvError),
    /// The engine failed (classified by its code and retriability).
    #[error(transparent)]
    Engine(#[from] ClientError),
    /// A stored term record that does not decode.
    #[error("the term record of pchannel `{pchannel}` is damaged: {detail}")]
    CorruptTerm {
        /// The pchannel.
        pchannel: String,
        /// What is wrong.
        detail: String,
    },
}

impl AdapterError {
    /// What the caller must do about it.
    pub fn reason(&self) -> ErrorReason {
        match self {
            AdapterError::Fenced { .. } => ErrorReason::Fenced,
            AdapterError::StaleTerm { .. } => ErrorReason::StaleTerm,
            AdapterError::SessionNotFound(_) | AdapterError::PChannelNotFound(_) => {
                ErrorReason::NotFound
            }
            AdapterError::InvalidArgument(_) => ErrorReason::InvalidArgument,
            AdapterError::ReadOnly(_) => ErrorReason::ReadOnly,
            AdapterError::Unavailable(_) | AdapterError::ShuttingDown => ErrorReason::Unavailable,
            AdapterError::Kv(e) => match e {
                KvError::Unavailable { .. } => ErrorReason::Unavailable,
                _ => ErrorReason::Internal,
            },
            AdapterError::CorruptTerm { .. } => ErrorReason::Internal,
            AdapterError::Engine(e) => engine_reason(e),
        }
    }

    /// The term in force, for fencing errors (0 otherwise).
    fn term(&self) -> i64 {
        match self {
            AdapterError::Fenced { term, .. } => *term,
            AdapterError::StaleTerm { current, .. } => *current,
            _ => 0,
        }
    }

    /// The detail sent to the caller.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            reason: self.reason() as i32,
            message: self.to_string(),
            term: self.term(),
            code: match self {
                AdapterError::Engine(e) => e.code(),
                _ => 0,
            },
        }
    }

    /// The gRPC status, with the detail attached.
    pub fn to_status(&self) -> Status {
        status(&self.detail())
    }
}

impl From<AdapterError> for Status {
    fn from(e: AdapterError) -> Self {
        e.to_status()
    }
}

/// How an engine error is reported. Writer loss is decided by the session (fenced by a newer
/// open, or taken over outside the adapter and reopened), so it only lands here when there
/// is no session to ask.
fn engine_reason(e: &ClientError) -> ErrorReason {
    match e {
        ClientError::LogNotFound { .. } => ErrorReason::NotFound,
        ClientError::InvalidMessage(_) | ClientError::TruncateFailed { .. } => {
            ErrorReason::InvalidArgument
        }
        ClientError::Truncated { .. } => ErrorReason::Truncated,
        ClientError::FenceFailed { .. } => ErrorReason::Unavailable,
        e if e.is_writer_lost() => ErrorReason::Unavailable,
        e if e.is_retriable() => ErrorReason::Unavailable,
        _ => ErrorReason::Internal,
    }
}

/// The gRPC code of a reason.
pub fn code_of(reason: ErrorReason) -> Code {
    match reason {
        ErrorReason::Fenced | ErrorReason::StaleTerm | ErrorReason::ReadOnly => {
            Code::FailedPrecondition
        }
        ErrorReason::NotFound => Code::NotFound,
        ErrorReason::InvalidArgument => Code::InvalidArgument,
        ErrorReason::Truncated => Code::OutOfRange,
        ErrorReason::Unavailable => Code::Unavailable,
        ErrorReason::Internal | ErrorReason::Unspecified => Code::Internal,
    }
}

/// A status carrying `detail`.
pub fn status(detail: &ErrorDetail) -> Status {
    let code = code_of(detail.reason());
    let rich = RpcStatus {
        code: code as i32,
        message: detail.message.clone(),
        details: vec![RpcAny {
            type_url: ERROR_DETAIL_TYPE_URL.to_string(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(
        code,
        detail.message.clone(),
        Bytes::from(rich.encode_to_vec()),
    )
}

/// The [`ErrorDetail`] a status carries, if any (for Rust clients of the service).
pub fn detail_of(status: &Status) -> Option<ErrorDetail> {
    let rich = RpcStatus::decode(status.details()).ok()?;
    rich.details
        .into_iter()
        .find(|any| any.type_url == ERROR_DETAIL_TYPE_URL)
        .and_then(|any| ErrorDetail::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_their_detail() {
        let e = AdapterError::StaleTerm {
            pchannel: "p".into(),
            requested: 1,
            current: 3,
        };
        let s = e.to_status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        let d = detail_of(&s).unwrap();
        assert_eq!(d.reason(), ErrorReason::StaleTerm);
        assert_eq!(d.term, 3);
        assert!(d.message.contains("stale"), "{}", d.message);

        let e = AdapterError::Engine(ClientError::LogNotFound { log: "x".into() });
        let s = e.to_status();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(detail_of(&s).unwrap().code, 3012);

        assert_eq!(
            AdapterError::ShuttingDown.to_status().code(),
            Code::Unavailable
        );
        assert!(detail_of(&Status::internal("plain")).is_none());
    }

    #[test]
    fn the_details_are_a_google_rpc_status() {
        // google.rpc.Status{code: 9, message: "m", details: [Any{type_url, value}]}, by hand.
        let detail = ErrorDetail {
            reason: ErrorReason::Fenced as i32,
            message: "m".into(),
            term: 0,
            code: 0,
        };
        let s = status(&detail);
        let value = detail.encode_to_vec(); // 08 01 12 01 6d
        let mut any = vec![0x0a, ERROR_DETAIL_TYPE_URL.len() as u8];
        any.extend_from_slice(ERROR_DETAIL_TYPE_URL.as_bytes());
        any.push(0x12);
        any.push(value.len() as u8);
        any.extend_from_slice(&value);
        let mut expected = vec![0x08, 9, 0x12, 1, b'm', 0x1a, any.len() as u8];
        expected.extend_from_slice(&any);
        assert_eq!(s.details(), expected.as_slice());
    }
}
