//! Kafka error codes the shim answers with, and the shim's own errors.

/// A Kafka protocol error code (the subset this broker returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum KafkaCode {
    /// No error.
    None = 0,
    /// The requested offset is outside the range of offsets held.
    OffsetOutOfRange = 1,
    /// A record batch failed its CRC or does not frame.
    CorruptMessage = 2,
    /// Unknown topic or partition.
    UnknownTopicOrPartition = 3,
    /// This broker does not lead the partition (also: the partition is being reopened).
    NotLeaderOrFollower = 6,
    /// The request's `timeout_ms` ran out before the outcome was known.
    RequestTimedOut = 7,
    /// A batch is larger than `max.message.bytes`.
    MessageTooLarge = 10,
    /// The coordinator is not available.
    CoordinatorNotAvailable = 15,
    /// An invalid topic name.
    InvalidTopicException = 17,
    /// A request field is invalid.
    InvalidRequest = 42,
    /// A replication factor this single node cannot provide.
    InvalidReplicationFactor = 38,
    /// An invalid number of partitions.
    InvalidPartitions = 37,
    /// A replica assignment naming brokers that do not exist.
    InvalidReplicaAssignment = 39,
    /// The client's leader epoch is older than the broker's.
    FencedLeaderEpoch = 74,
    /// The client's leader epoch is newer than the broker's.
    UnknownLeaderEpoch = 75,
    /// Unknown or malformed topic configuration.
    InvalidConfig = 40,
    /// The topic exists.
    TopicAlreadyExists = 36,
    /// The API version is not supported.
    UnsupportedVersion = 35,
    /// A request exceeds a policy (Kafka's controller: too many records in one request).
    PolicyViolation = 44,
    /// Sequence gap for an idempotent producer.
    OutOfOrderSequenceNumber = 45,
    /// The producer epoch is older than the one in force.
    InvalidProducerEpoch = 47,
    /// The principal may not use the topic for this operation.
    TopicAuthorizationFailed = 29,
    /// The principal may not use the group for this operation.
    GroupAuthorizationFailed = 30,
    /// The principal may not perform this operation on the cluster.
    ClusterAuthorizationFailed = 31,
    /// The SASL mechanism asked for is not enabled on the listener.
    UnsupportedSaslMechanism = 33,
    /// A request arrived in a SASL state that does not allow it.
    IllegalSaslState = 34,
    /// The transactional id is not supported.
    TransactionalIdAuthorizationFailed = 53,
    /// No authorizer is configured (ACL APIs).
    SecurityDisabled = 54,
    /// SASL authentication failed.
    SaslAuthenticationFailed = 58,
    /// The producer attempted a transactional operation in an invalid state.
    InvalidTxnState = 48,
    /// The producer id is not the one the transactional id holds.
    InvalidProducerIdMapping = 49,
    /// The transaction timeout is larger than `transaction.max.timeout.ms` (or not positive).
    InvalidTransactionTimeout = 50,
    /// The transactional id is ending a transaction; retry.
    ConcurrentTransactions = 51,
    /// The request was not attempted because another part of it failed.
    OperationNotAttempted = 55,
    /// A newer producer with the same transactional id fenced this one.
    ProducerFenced = 90,
    /// The transactional id is not known.
    TransactionalIdNotFound = 105,
    /// Committed offset metadata is larger than allowed.
    OffsetMetadataTooLarge = 12,
    /// Storage failed under the partition.
    KafkaStorageError = 56,
    /// The producer id is not known.
    UnknownProducerId = 59,
    /// The compression codec is not allowed for this request version.
    UnsupportedCompressionType = 76,
    /// A record is invalid.
    InvalidRecord = 87,
    /// No fetch session with this id is open (KIP-227).
    FetchSessionIdNotFound = 70,
    /// The fetch session's epoch is not the one expected next.
    InvalidFetchSessionEpoch = 71,
    /// No topic has this topic id.
    UnknownTopicId = 100,
    /// A fetch session opened with topic names was used with topic ids, or the reverse.
    FetchSessionTopicIdError = 106,
    /// Topic deletion is disabled or the topic is being deleted.
    TopicDeletionDisabled = 73,
    /// The resource is not known.
    ResourceNotFound = 91,
    /// The same resource appears twice in one request.
    DuplicateResource = 92,
    /// A credential does not meet the broker's rules.
    UnacceptableCredential = 93,
    /// The generation named is not the group's current one.
    IllegalGeneration = 22,
    /// The member's protocols do not match the group's.
    InconsistentGroupProtocol = 23,
    /// The group id is empty or invalid.
    InvalidGroupId = 24,
    /// The member id is not a member of the group.
    UnknownMemberId = 25,
    /// The session timeout is outside the broker's bounds.
    InvalidSessionTimeout = 26,
    /// The group is rebalancing.
    RebalanceInProgress = 27,
    /// The group still has members.
    NonEmptyGroup = 68,
    /// The group does not exist.
    GroupIdNotFound = 69,
    /// A new member must rejoin with the member id it was given (KIP-394).
    MemberIdRequired = 79,
    /// Another member took this static member's instance id (KIP-345).
    FencedInstanceId = 82,
    /// The group's members subscribe to the topic whose offsets were to be deleted.
    GroupSubscribedToTopic = 86,
    /// An offset of the partition is pending in an open transaction (KIP-447).
    UnstableOffsetCommit = 88,
    /// A new member would take the group past `group.consumer.max.size`.
    GroupMaxSizeReached = 81,
    /// The member epoch is not the coordinator's: the member must drop its partitions and
    /// rejoin (KIP-848).
    FencedMemberEpoch = 110,
    /// Another live member still holds this static member's instance id (KIP-848).
    UnreleasedInstanceId = 111,
    /// The server-side assignor the member asked for does not exist (KIP-848).
    UnsupportedAssignor = 112,
    /// An offset commit or fetch names an old member epoch (KIP-848).
    StaleMemberEpoch = 113,
    /// A subscription regular expression does not compile (KIP-848).
    InvalidRegularExpression = 128,
    /// An unknown server error.
    UnknownServerError = -1,
}

impl KafkaCode {
    /// The code on the wire.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// `PRODUCER_FENCED` as a request of `version` may receive it: before `first` (the version
    /// that introduced the code, KIP-588) Kafka answers `INVALID_PRODUCER_EPOCH`, which older
    /// clients handle the same way. Any other code is unchanged.
    pub fn fenced_for(self, version: i16, first: i16) -> KafkaCode {
        if self == KafkaCode::ProducerFenced && version < first {
            KafkaCode::InvalidProducerEpoch
        } else {
            self
        }
    }
}

impl From<KafkaCode> for i16 {
    fn from(c: KafkaCode) -> i16 {
        c.code()
    }
}

/// Errors of the shim outside the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    /// The engine's metadata store failed.
    #[error("metadata: {0}")]
    Kv(#[from] wal::meta::kv::KvError),
    /// The engine failed.
    #[error("engine: {0}")]
    Client(#[from] wal::client::ClientError),
    /// Stored shim metadata does not decode.
    #[error("stored {what} does not decode: {detail}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// Why.
        detail: String,
    },
    /// A listener or socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The group coordinator failed.
    #[error("groups: {0}")]
    Groups(String),
    /// A request body that does not decode, or an API this broker does not serve.
    #[error("malformed {api} request: {detail}")]
    Malformed {
        /// The API and version.
        api: String,
        /// Why.
        detail: String,
    },
    /// A client failed to authenticate, or broke the SASL rules; its connection is closed.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// A response that does not encode (a bug).
    #[error("cannot encode a response: {0}")]
    Encode(String),
}

impl From<kafka_wire::codec::DecodeError> for ShimError {
    fn from(e: kafka_wire::codec::DecodeError) -> Self {
        ShimError::Malformed {
            api: e.api,
            detail: e.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::ResponseError;

    /// Every code is Kafka's: the same number under the same name as in the protocol
    /// crate's table of Kafka's errors.
    #[test]
    fn codes_are_kafkas() {
        for code in [
            KafkaCode::OffsetOutOfRange,
            KafkaCode::CorruptMessage,
            KafkaCode::UnknownTopicOrPartition,
            KafkaCode::NotLeaderOrFollower,
            KafkaCode::RequestTimedOut,
            KafkaCode::MessageTooLarge,
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::InvalidTopicException,
            KafkaCode::InvalidRequest,
            KafkaCode::InvalidReplicationFactor,
            KafkaCode::InvalidPartitions,
            KafkaCode::InvalidReplicaAssignment,
            KafkaCode::FencedLeaderEpoch,
            KafkaCode::UnknownLeaderEpoch,
            KafkaCode::InvalidConfig,
            KafkaCode::TopicAlreadyExists,
            KafkaCode::UnsupportedVersion,
            KafkaCode::PolicyViolation,
            KafkaCode::OutOfOrderSequenceNumber,
            KafkaCode::InvalidProducerEpoch,
            KafkaCode::TopicAuthorizationFailed,
            KafkaCode::GroupAuthorizationFailed,
            KafkaCode::ClusterAuthorizationFailed,
            KafkaCode::UnsupportedSaslMechanism,
            KafkaCode::IllegalSaslState,
            KafkaCode::TransactionalIdAuthorizationFailed,
            KafkaCode::SecurityDisabled,
            KafkaCode::SaslAuthenticationFailed,
            KafkaCode::InvalidTxnState,
            KafkaCode::InvalidProducerIdMapping,
            KafkaCode::InvalidTransactionTimeout,
            KafkaCode::ConcurrentTransactions,
            KafkaCode::OperationNotAttempted,
            KafkaCode::ProducerFenced,
            KafkaCode::TransactionalIdNotFound,
            KafkaCode::OffsetMetadataTooLarge,
            KafkaCode::KafkaStorageError,
            KafkaCode::UnknownProducerId,
            KafkaCode::UnsupportedCompressionType,
            KafkaCode::InvalidRecord,
            KafkaCode::FetchSessionIdNotFound,
            KafkaCode::InvalidFetchSessionEpoch,
            KafkaCode::UnknownTopicId,
            KafkaCode::FetchSessionTopicIdError,
            KafkaCode::TopicDeletionDisabled,
            KafkaCode::ResourceNotFound,
            KafkaCode::DuplicateResource,
            KafkaCode::UnacceptableCredential,
            KafkaCode::IllegalGeneration,
            KafkaCode::InconsistentGroupProtocol,
            KafkaCode::InvalidGroupId,
            KafkaCode::UnknownMemberId,
            KafkaCode::InvalidSessionTimeout,
            KafkaCode::RebalanceInProgress,
            KafkaCode::NonEmptyGroup,
            KafkaCode::GroupIdNotFound,
            KafkaCode::MemberIdRequired,
            KafkaCode::FencedInstanceId,
            KafkaCode::GroupSubscribedToTopic,
            KafkaCode::UnstableOffsetCommit,
            KafkaCode::GroupMaxSizeReached,
            KafkaCode::FencedMemberEpoch,
            KafkaCode::UnreleasedInstanceId,
            KafkaCode::UnsupportedAssignor,
            KafkaCode::StaleMemberEpoch,
            KafkaCode::InvalidRegularExpression,
            KafkaCode::UnknownServerError,
        ] {
            let kafka = ResponseError::try_from_code(code.code())
                .unwrap_or_else(|| panic!("{code:?} ({}) is not a Kafka error", code.code()));
            assert_eq!(format!("{kafka:?}"), format!("{code:?}"), "{}", code.code());
        }
    }
}
