//! The shape of every request this broker decodes: which fields each version carries, in
//! wire order, and which of them are lengths, counts or tagged fields.
//!
//! This is what [`super::bounds`] walks before a request is handed to the `kafka-protocol`
//! decoder. The table is written the way Apache Kafka's message definitions
//! (`common/message/*Request.json`) state it: field names, types and version ranges as
//! there, so that it can be reviewed against them line by line; the `schema_matches_kafka`
//! test compares it with the definitions shipped in Kafka's own `kafka-clients` jar.
//!
//! Only the shape matters here, not the meaning: nullability, defaults and entity types are
//! left to the decoder.

/// A version range as Kafka writes it: `"3+"`, `"0-7"` or `"5"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Versions {
    pub(crate) lo: i16,
    pub(crate) hi: i16,
}

impl Versions {
    /// Parses `"N+"`, `"N-M"`, `"N"` or `"none"` at compile time (a bad literal fails the
    /// build).
    pub(crate) const fn parse(text: &str) -> Versions {
        let b = text.as_bytes();
        if b.len() == 4 && b[0] == b'n' {
            // "none": an empty range.
            return Versions { lo: 1, hi: 0 };
        }
        let mut i = 0;
        let lo = number(b, &mut i);
        let hi = if i == b.len() {
            lo
        } else if b[i] == b'+' && i + 1 == b.len() {
            i16::MAX
        } else if b[i] == b'-' {
            i += 1;
            let hi = number(b, &mut i);
            assert!(i == b.len(), "trailing characters in a version range");
            hi
        } else {
            panic!("a version range is N+, N-M or N")
        };
        Versions { lo, hi }
    }

    pub(crate) const fn contains(self, version: i16) -> bool {
        self.lo <= version && version <= self.hi
    }
}

const fn number(b: &[u8], i: &mut usize) -> i16 {
    let start = *i;
    let mut n: i16 = 0;
    while *i < b.len() && b[*i].is_ascii_digit() {
        n = n * 10 + (b[*i] - b'0') as i16;
        *i += 1;
    }
    assert!(*i > start, "a version range starts with a number");
    n
}

/// A field's wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    /// An IEEE 754 double (eight bytes).
    Float64,
    Uuid,
    /// A string: INT16 length, or UNSIGNED_VARINT length + 1 in flexible versions.
    String,
    /// Bytes: INT32 length, or UNSIGNED_VARINT length + 1 in flexible versions.
    Bytes,
    /// A record set, framed as bytes.
    Records,
    /// An array: INT32 count, or UNSIGNED_VARINT count + 1 in flexible versions.
    Array(&'static Ty),
    /// A structure: its fields in order, then (flexible versions) its tagged fields.
    Struct(&'static [Field]),
}

/// One field of a request or of a structure inside one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    /// Kafka's name for it (error messages, the comparison with Kafka's definitions).
    pub(crate) name: &'static str,
    /// The versions that carry it (for a tagged field: its tagged versions).
    pub(crate) versions: Versions,
    /// `Some(tag)` for a tagged field, which lives in the tagged-field section.
    pub(crate) tag: Option<u32>,
    pub(crate) ty: Ty,
}

const fn f(name: &'static str, versions: &str, ty: Ty) -> Field {
    Field {
        name,
        versions: Versions::parse(versions),
        tag: None,
        ty,
    }
}

const fn tagged(name: &'static str, tag: u32, versions: &str, ty: Ty) -> Field {
    Field {
        name,
        versions: Versions::parse(versions),
        tag: Some(tag),
        ty,
    }
}

/// One request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Api {
    pub(crate) key: i16,
    /// Kafka's message name (`MetadataRequest`).
    pub(crate) name: &'static str,
    /// The versions described here (Apache Kafka 3.9's valid versions).
    pub(crate) valid: Versions,
    /// The versions that use compact lengths and tagged fields.
    pub(crate) flexible: Versions,
    pub(crate) fields: &'static [Field],
}

const fn api(
    key: i16,
    name: &'static str,
    valid: &str,
    flexible: &str,
    fields: &'static [Field],
) -> Api {
    Api {
        key,
        name,
        valid: Versions::parse(valid),
        flexible: Versions::parse(flexible),
        fields,
    }
}

use Ty::{Bool, Bytes, Float64, Int8, Int16, Int32, Int64, Records, String, Uuid};

const STRINGS: Ty = Ty::Array(&String);
const INT32S: Ty = Ty::Array(&Int32);
/// `AddPartitionsToTxnTopic`, a common structure of AddPartitionsToTxn.
const ADD_PARTITIONS_TO_TXN_TOPIC: Ty =
    Ty::Struct(&[f("Name", "0+", String), f("Partitions", "0+", INT32S)]);

/// Every request the broker decodes, by API key.
#[rustfmt::skip]
pub(crate) const APIS: &[Api] = &[
    api(0, "ProduceRequest", "0-11", "9+", &[
        f("TransactionalId", "3+", String),
        f("Acks", "0+", Int16),
        f("TimeoutMs", "0+", Int32),
        f("TopicData", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("PartitionData", "0+", Ty::Array(&Ty::Struct(&[
                f("Index", "0+", Int32),
                f("Records", "0+", Records),
            ]))),
        ]))),
    ]),
    api(1, "FetchRequest", "0-17", "12+", &[
        tagged("ClusterId", 0, "12+", String),
        f("ReplicaId", "0-14", Int32),
        tagged("ReplicaState", 1, "15+", Ty::Struct(&[
            f("ReplicaId", "15+", Int32),
            f("ReplicaEpoch", "15+", Int64),
        ])),
        f("MaxWaitMs", "0+", Int32),
        f("MinBytes", "0+", Int32),
        f("MaxBytes", "3+", Int32),
        f("IsolationLevel", "4+", Int8),
        f("SessionId", "7+", Int32),
        f("SessionEpoch", "7+", Int32),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Topic", "0-12", String),
            f("TopicId", "13+", Uuid),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("Partition", "0+", Int32),
                f("CurrentLeaderEpoch", "9+", Int32),
                f("FetchOffset", "0+", Int64),
                f("LastFetchedEpoch", "12+", Int32),
                f("LogStartOffset", "5+", Int64),
                f("PartitionMaxBytes", "0+", Int32),
                tagged("ReplicaDirectoryId", 0, "17+", Uuid),
            ]))),
        ]))),
        f("ForgottenTopicsData", "7+", Ty::Array(&Ty::Struct(&[
            f("Topic", "7-12", String),
            f("TopicId", "13+", Uuid),
            f("Partitions", "7+", INT32S),
        ]))),
        f("RackId", "11+", String),
    ]),
    api(2, "ListOffsetsRequest", "0-9", "6+", &[
        f("ReplicaId", "0+", Int32),
        f("IsolationLevel", "2+", Int8),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
                f("CurrentLeaderEpoch", "4+", Int32),
                f("Timestamp", "0+", Int64),
                f("MaxNumOffsets", "0", Int32),
            ]))),
        ]))),
    ]),
    api(3, "MetadataRequest", "0-12", "9+", &[
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("TopicId", "10+", Uuid),
            f("Name", "0+", String),
        ]))),
        f("AllowAutoTopicCreation", "4+", Bool),
        f("IncludeClusterAuthorizedOperations", "8-10", Bool),
        f("IncludeTopicAuthorizedOperations", "8+", Bool),
    ]),
    api(8, "OffsetCommitRequest", "0-9", "8+", &[
        f("GroupId", "0+", String),
        f("GenerationIdOrMemberEpoch", "1+", Int32),
        f("MemberId", "1+", String),
        f("GroupInstanceId", "7+", String),
        f("RetentionTimeMs", "2-4", Int64),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
                f("CommittedOffset", "0+", Int64),
                f("CommittedLeaderEpoch", "6+", Int32),
                f("CommitTimestamp", "1", Int64),
                f("CommittedMetadata", "0+", String),
            ]))),
        ]))),
    ]),
    api(9, "OffsetFetchRequest", "0-9", "6+", &[
        f("GroupId", "0-7", String),
        f("Topics", "0-7", Ty::Array(&Ty::Struct(&[
            f("Name", "0-7", String),
            f("PartitionIndexes", "0-7", INT32S),
        ]))),
        f("Groups", "8+", Ty::Array(&Ty::Struct(&[
            f("GroupId", "8+", String),
            f("MemberId", "9+", String),
            f("MemberEpoch", "9+", Int32),
            f("Topics", "8+", Ty::Array(&Ty::Struct(&[
                f("Name", "8+", String),
                f("PartitionIndexes", "8+", INT32S),
            ]))),
        ]))),
        f("RequireStable", "7+", Bool),
    ]),
    api(10, "FindCoordinatorRequest", "0-6", "3+", &[
        f("Key", "0-3", String),
        f("KeyType", "1+", Int8),
        f("CoordinatorKeys", "4+", STRINGS),
    ]),
    api(11, "JoinGroupRequest", "0-9", "6+", &[
        f("GroupId", "0+", String),
        f("SessionTimeoutMs", "0+", Int32),
        f("RebalanceTimeoutMs", "1+", Int32),
        f("MemberId", "0+", String),
        f("GroupInstanceId", "5+", String),
        f("ProtocolType", "0+", String),
        f("Protocols", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Metadata", "0+", Bytes),
        ]))),
        f("Reason", "8+", String),
    ]),
    api(12, "HeartbeatRequest", "0-4", "4+", &[
        f("GroupId", "0+", String),
        f("GenerationId", "0+", Int32),
        f("MemberId", "0+", String),
        f("GroupInstanceId", "3+", String),
    ]),
    api(13, "LeaveGroupRequest", "0-5", "4+", &[
        f("GroupId", "0+", String),
        f("MemberId", "0-2", String),
        f("Members", "3+", Ty::Array(&Ty::Struct(&[
            f("MemberId", "3+", String),
            f("GroupInstanceId", "3+", String),
            f("Reason", "5+", String),
        ]))),
    ]),
    api(14, "SyncGroupRequest", "0-5", "4+", &[
        f("GroupId", "0+", String),
        f("GenerationId", "0+", Int32),
        f("MemberId", "0+", String),
        f("GroupInstanceId", "3+", String),
        f("ProtocolType", "5+", String),
        f("ProtocolName", "5+", String),
        f("Assignments", "0+", Ty::Array(&Ty::Struct(&[
            f("MemberId", "0+", String),
            f("Assignment", "0+", Bytes),
        ]))),
    ]),
    api(15, "DescribeGroupsRequest", "0-5", "5+", &[
        f("Groups", "0+", STRINGS),
        f("IncludeAuthorizedOperations", "3+", Bool),
    ]),
    api(16, "ListGroupsRequest", "0-5", "3+", &[
        f("StatesFilter", "4+", STRINGS),
        f("TypesFilter", "5+", STRINGS),
    ]),
    api(17, "SaslHandshakeRequest", "0-1", "none", &[
        f("Mechanism", "0+", String),
    ]),
    api(18, "ApiVersionsRequest", "0-4", "3+", &[
        f("ClientSoftwareName", "3+", String),
        f("ClientSoftwareVersion", "3+", String),
    ]),
    api(19, "CreateTopicsRequest", "0-7", "5+", &[
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("NumPartitions", "0+", Int32),
            f("ReplicationFactor", "0+", Int16),
            f("Assignments", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
                f("BrokerIds", "0+", INT32S),
            ]))),
            f("Configs", "0+", Ty::Array(&Ty::Struct(&[
                f("Name", "0+", String),
                f("Value", "0+", String),
            ]))),
        ]))),
        f("timeoutMs", "0+", Int32),
        f("validateOnly", "1+", Bool),
    ]),
    api(20, "DeleteTopicsRequest", "0-6", "4+", &[
        f("Topics", "6+", Ty::Array(&Ty::Struct(&[
            f("Name", "6+", String),
            f("TopicId", "6+", Uuid),
        ]))),
        f("TopicNames", "0-5", STRINGS),
        f("TimeoutMs", "0+", Int32),
    ]),
    api(21, "DeleteRecordsRequest", "0-2", "2+", &[
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
                f("Offset", "0+", Int64),
            ]))),
        ]))),
        f("TimeoutMs", "0+", Int32),
    ]),
    api(22, "InitProducerIdRequest", "0-5", "2+", &[
        f("TransactionalId", "0+", String),
        f("TransactionTimeoutMs", "0+", Int32),
        f("ProducerId", "3+", Int64),
        f("ProducerEpoch", "3+", Int16),
    ]),
    api(23, "OffsetForLeaderEpochRequest", "0-4", "4+", &[
        f("ReplicaId", "3+", Int32),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Topic", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("Partition", "0+", Int32),
                f("CurrentLeaderEpoch", "2+", Int32),
                f("LeaderEpoch", "0+", Int32),
            ]))),
        ]))),
    ]),
    api(24, "AddPartitionsToTxnRequest", "0-5", "3+", &[
        f("Transactions", "4+", Ty::Array(&Ty::Struct(&[
            f("TransactionalId", "4+", String),
            f("ProducerId", "4+", Int64),
            f("ProducerEpoch", "4+", Int16),
            f("VerifyOnly", "4+", Bool),
            f("Topics", "4+", Ty::Array(&ADD_PARTITIONS_TO_TXN_TOPIC)),
        ]))),
        f("V3AndBelowTransactionalId", "0-3", String),
        f("V3AndBelowProducerId", "0-3", Int64),
        f("V3AndBelowProducerEpoch", "0-3", Int16),
        f("V3AndBelowTopics", "0-3", Ty::Array(&ADD_PARTITIONS_TO_TXN_TOPIC)),
    ]),
    api(25, "AddOffsetsToTxnRequest", "0-4", "3+", &[
        f("TransactionalId", "0+", String),
        f("ProducerId", "0+", Int64),
        f("ProducerEpoch", "0+", Int16),
        f("GroupId", "0+", String),
    ]),
    api(26, "EndTxnRequest", "0-4", "3+", &[
        f("TransactionalId", "0+", String),
        f("ProducerId", "0+", Int64),
        f("ProducerEpoch", "0+", Int16),
        f("Committed", "0+", Bool),
    ]),
    api(28, "TxnOffsetCommitRequest", "0-4", "3+", &[
        f("TransactionalId", "0+", String),
        f("GroupId", "0+", String),
        f("ProducerId", "0+", Int64),
        f("ProducerEpoch", "0+", Int16),
        f("GenerationId", "3+", Int32),
        f("MemberId", "3+", String),
        f("GroupInstanceId", "3+", String),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
                f("CommittedOffset", "0+", Int64),
                f("CommittedLeaderEpoch", "2+", Int32),
                f("CommittedMetadata", "0+", String),
            ]))),
        ]))),
    ]),
    api(29, "DescribeAclsRequest", "0-3", "2+", &[
        f("ResourceTypeFilter", "0+", Int8),
        f("ResourceNameFilter", "0+", String),
        f("PatternTypeFilter", "1+", Int8),
        f("PrincipalFilter", "0+", String),
        f("HostFilter", "0+", String),
        f("Operation", "0+", Int8),
        f("PermissionType", "0+", Int8),
    ]),
    api(30, "CreateAclsRequest", "0-3", "2+", &[
        f("Creations", "0+", Ty::Array(&Ty::Struct(&[
            f("ResourceType", "0+", Int8),
            f("ResourceName", "0+", String),
            f("ResourcePatternType", "1+", Int8),
            f("Principal", "0+", String),
            f("Host", "0+", String),
            f("Operation", "0+", Int8),
            f("PermissionType", "0+", Int8),
        ]))),
    ]),
    api(31, "DeleteAclsRequest", "0-3", "2+", &[
        f("Filters", "0+", Ty::Array(&Ty::Struct(&[
            f("ResourceTypeFilter", "0+", Int8),
            f("ResourceNameFilter", "0+", String),
            f("PatternTypeFilter", "1+", Int8),
            f("PrincipalFilter", "0+", String),
            f("HostFilter", "0+", String),
            f("Operation", "0+", Int8),
            f("PermissionType", "0+", Int8),
        ]))),
    ]),
    api(32, "DescribeConfigsRequest", "0-4", "4+", &[
        f("Resources", "0+", Ty::Array(&Ty::Struct(&[
            f("ResourceType", "0+", Int8),
            f("ResourceName", "0+", String),
            f("ConfigurationKeys", "0+", STRINGS),
        ]))),
        f("IncludeSynonyms", "1+", Bool),
        f("IncludeDocumentation", "3+", Bool),
    ]),
    api(33, "AlterConfigsRequest", "0-2", "2+", &[
        f("Resources", "0+", Ty::Array(&Ty::Struct(&[
            f("ResourceType", "0+", Int8),
            f("ResourceName", "0+", String),
            f("Configs", "0+", Ty::Array(&Ty::Struct(&[
                f("Name", "0+", String),
                f("Value", "0+", String),
            ]))),
        ]))),
        f("ValidateOnly", "0+", Bool),
    ]),
    api(36, "SaslAuthenticateRequest", "0-2", "2+", &[
        f("AuthBytes", "0+", Bytes),
    ]),
    api(37, "CreatePartitionsRequest", "0-3", "2+", &[
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Count", "0+", Int32),
            f("Assignments", "0+", Ty::Array(&Ty::Struct(&[
                f("BrokerIds", "0+", INT32S),
            ]))),
        ]))),
        f("TimeoutMs", "0+", Int32),
        f("ValidateOnly", "0+", Bool),
    ]),
    api(42, "DeleteGroupsRequest", "0-2", "2+", &[
        f("GroupsNames", "0+", STRINGS),
    ]),
    api(44, "IncrementalAlterConfigsRequest", "0-1", "1+", &[
        f("Resources", "0+", Ty::Array(&Ty::Struct(&[
            f("ResourceType", "0+", Int8),
            f("ResourceName", "0+", String),
            f("Configs", "0+", Ty::Array(&Ty::Struct(&[
                f("Name", "0+", String),
                f("ConfigOperation", "0+", Int8),
                f("Value", "0+", String),
            ]))),
        ]))),
        f("ValidateOnly", "0+", Bool),
    ]),
    api(47, "OffsetDeleteRequest", "0", "none", &[
        f("GroupId", "0+", String),
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Partitions", "0+", Ty::Array(&Ty::Struct(&[
                f("PartitionIndex", "0+", Int32),
            ]))),
        ]))),
    ]),
    api(48, "DescribeClientQuotasRequest", "0-1", "1+", &[
        f("Components", "0+", Ty::Array(&Ty::Struct(&[
            f("EntityType", "0+", String),
            f("MatchType", "0+", Int8),
            f("Match", "0+", String),
        ]))),
        f("Strict", "0+", Bool),
    ]),
    api(49, "AlterClientQuotasRequest", "0-1", "1+", &[
        f("Entries", "0+", Ty::Array(&Ty::Struct(&[
            f("Entity", "0+", Ty::Array(&Ty::Struct(&[
                f("EntityType", "0+", String),
                f("EntityName", "0+", String),
            ]))),
            f("Ops", "0+", Ty::Array(&Ty::Struct(&[
                f("Key", "0+", String),
                f("Value", "0+", Float64),
                f("Remove", "0+", Bool),
            ]))),
        ]))),
        f("ValidateOnly", "0+", Bool),
    ]),
    api(50, "DescribeUserScramCredentialsRequest", "0", "0+", &[
        f("Users", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
        ]))),
    ]),
    api(51, "AlterUserScramCredentialsRequest", "0", "0+", &[
        f("Deletions", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Mechanism", "0+", Int8),
        ]))),
        f("Upsertions", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("Mechanism", "0+", Int8),
            f("Iterations", "0+", Int32),
            f("Salt", "0+", Bytes),
            f("SaltedPassword", "0+", Bytes),
        ]))),
    ]),
    api(60, "DescribeClusterRequest", "0-1", "0+", &[
        f("IncludeClusterAuthorizedOperations", "0+", Bool),
        f("EndpointType", "1+", Int8),
    ]),
    api(61, "DescribeProducersRequest", "0", "0+", &[
        f("Topics", "0+", Ty::Array(&Ty::Struct(&[
            f("Name", "0+", String),
            f("PartitionIndexes", "0+", INT32S),
        ]))),
    ]),
    api(65, "DescribeTransactionsRequest", "0", "0+", &[
        f("TransactionalIds", "0+", STRINGS),
    ]),
    api(66, "ListTransactionsRequest", "0-1", "0+", &[
        f("StateFilters", "0+", STRINGS),
        f("ProducerIdFilters", "0+", Ty::Array(&Int64)),
        f("DurationFilter", "1+", Int64),
    ]),
    // Version 1 is Kafka 4.0's (KIP-848 GA, KIP-1082): newer than the kafka-clients jar the
    // comparison test reads, see `NEWER_THAN_THE_JAR` there.
    api(68, "ConsumerGroupHeartbeatRequest", "0-1", "0+", &[
        f("GroupId", "0+", String),
        f("MemberId", "0+", String),
        f("MemberEpoch", "0+", Int32),
        f("InstanceId", "0+", String),
        f("RackId", "0+", String),
        f("RebalanceTimeoutMs", "0+", Int32),
        f("SubscribedTopicNames", "0+", STRINGS),
        f("SubscribedTopicRegex", "1+", String),
        f("ServerAssignor", "0+", String),
        f("TopicPartitions", "0+", Ty::Array(&Ty::Struct(&[
            f("TopicId", "0+", Uuid),
            f("Partitions", "0+", INT32S),
        ]))),
    ]),
    api(69, "ConsumerGroupDescribeRequest", "0", "0+", &[
        f("GroupIds", "0+", STRINGS),
        f("IncludeAuthorizedOperations", "0+", Bool),
    ]),
];

/// The request header (`RequestHeader.json`): version 1 for non-flexible request versions,
/// 2 (with tagged fields) for flexible ones. The client id is an INT16-length string in
/// both (`"flexibleVersions": "none"`).
pub(crate) const HEADER: &[Field] = &[
    f("RequestApiKey", "0+", Int16),
    f("RequestApiVersion", "0+", Int16),
    f("CorrelationId", "0+", Int32),
    f("ClientId", "1+", String),
];

/// The description of API `key`, if this broker decodes it.
pub(crate) fn api_for(key: i16) -> Option<&'static Api> {
    APIS.iter().find(|a| a.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    #[test]
    fn version_ranges_parse_as_kafka_writes_them() {
        assert_eq!(
            Versions::parse("3+"),
            Versions {
                lo: 3,
                hi: i16::MAX
            }
        );
        assert_eq!(Versions::parse("8-10"), Versions { lo: 8, hi: 10 });
        assert_eq!(Versions::parse("1"), Versions { lo: 1, hi: 1 });
        assert!(!Versions::parse("none").contains(0));
        assert!(Versions::parse("12+").contains(17));
        assert!(!Versions::parse("0-12").contains(13));
    }

    /// The kafka-clients jar the compatibility tools installed (`scripts/compat-tools`).
    fn kafka_clients_jar() -> std::path::PathBuf {
        let cp = std::env::var("WOODPECKER_COMPAT_JAVA_CP").expect(
            "WOODPECKER_COMPAT_JAVA_CP is not set: this test reads Kafka's message definitions \
             from the kafka-clients jar that `scripts/compat-tools install` fetches; run it \
             through scripts/test or eval \"$(scripts/compat-tools env)\" first",
        );
        for entry in cp.split(':') {
            let dir = std::path::Path::new(entry.trim_end_matches(['*', '\\']));
            let Ok(list) = std::fs::read_dir(dir) else {
                continue;
            };
            for file in list.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with("kafka-clients-") && name.ends_with(".jar") {
                    return file.path();
                }
            }
        }
        panic!("no kafka-clients jar on WOODPECKER_COMPAT_JAVA_CP ({cp})");
    }

    /// Kafka's JSON with its `//` comment lines removed.
    fn definition(jar: &mut zip::ZipArchive<std::fs::File>, name: &str) -> serde_json::Value {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut jar
                .by_name(&format!("common/message/{name}.json"))
                .unwrap_or_else(|e| panic!("{name}.json: {e}")),
            &mut text,
        )
        .unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"))
    }

    fn text<'a>(v: &'a serde_json::Value, key: &str, at: &str) -> &'a str {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no string {key:?} in {v}"))
    }

    /// Compares our description of one type with Kafka's type string (and its inline
    /// fields or common struct).
    fn same_type(
        ours: &Ty,
        theirs: &str,
        def: &serde_json::Value,
        commons: &serde_json::Map<String, serde_json::Value>,
        at: &str,
    ) {
        if let Some(element) = theirs.strip_prefix("[]") {
            let Ty::Array(inner) = ours else {
                panic!("{at}: Kafka has {theirs}, we have {ours:?}")
            };
            return same_type(inner, element, def, commons, at);
        }
        let primitive = match theirs {
            "bool" => Some(Ty::Bool),
            "int8" => Some(Ty::Int8),
            "int16" => Some(Ty::Int16),
            "int32" => Some(Ty::Int32),
            "int64" => Some(Ty::Int64),
            "float64" => Some(Ty::Float64),
            "uuid" => Some(Ty::Uuid),
            "string" => Some(Ty::String),
            "bytes" => Some(Ty::Bytes),
            "records" => Some(Ty::Records),
            _ => None,
        };
        if let Some(p) = primitive {
            assert_eq!(*ours, p, "{at}: Kafka's type is {theirs}");
            return;
        }
        let Ty::Struct(fields) = ours else {
            panic!("{at}: Kafka has the structure {theirs}, we have {ours:?}")
        };
        let theirs_fields = def
            .get("fields")
            .or_else(|| commons.get(theirs).map(|c| &c["fields"]))
            .unwrap_or_else(|| panic!("{at}: no fields for {theirs}"));
        same_fields(fields, theirs_fields, commons, at);
    }

    fn same_fields(
        ours: &[Field],
        theirs: &serde_json::Value,
        commons: &serde_json::Map<String, serde_json::Value>,
        at: &str,
    ) {
        let theirs = theirs.as_array().unwrap_or_else(|| panic!("{at}: fields"));
        assert_eq!(
            ours.iter().map(|f| f.name).collect::<Vec<_>>(),
            theirs
                .iter()
                .map(|f| text(f, "name", at))
                .collect::<Vec<_>>(),
            "{at}: the fields and their order"
        );
        for (o, t) in ours.iter().zip(theirs) {
            let at = format!("{at}.{}", o.name);
            let tag = t.get("tag").map(|v| v.as_u64().unwrap() as u32);
            assert_eq!(o.tag, tag, "{at}: tag");
            let versions = match tag {
                Some(_) => text(t, "taggedVersions", &at),
                None => text(t, "versions", &at),
            };
            assert_eq!(o.versions, Versions::parse(versions), "{at}: versions");
            if let Some(flex) = t.get("flexibleVersions") {
                panic!("{at}: a field with its own flexible versions ({flex}) is not described");
            }
            same_type(&o.ty, text(t, "type", &at), t, commons, &at);
        }
    }

    /// APIs described past the versions of the jar's definitions (Kafka 3.9), with the
    /// Kafka release that added the versions: only the versions the jar knows are compared.
    const NEWER_THAN_THE_JAR: &[(i16, &str)] = &[(68, "4.0: ConsumerGroupHeartbeat v1")];

    /// The table against Apache Kafka's own message definitions, field by field: names,
    /// order, types, versions, tags, valid and flexible versions.
    #[test]
    fn schema_matches_kafka() {
        let jar = kafka_clients_jar();
        let mut jar = zip::ZipArchive::new(std::fs::File::open(&jar).unwrap()).unwrap();
        for api in APIS {
            let def = definition(&mut jar, api.name);
            assert_eq!(
                def["apiKey"].as_i64(),
                Some(i64::from(api.key)),
                "{}",
                api.name
            );
            let theirs = Versions::parse(text(&def, "validVersions", api.name));
            if theirs != api.valid && NEWER_THAN_THE_JAR.iter().any(|(k, _)| *k == api.key) {
                assert_eq!(theirs.lo, api.valid.lo, "{}", api.name);
                assert!(theirs.hi < api.valid.hi, "{}", api.name);
                // The fields of the versions the jar knows (this API has no common structs).
                let known: Vec<Field> = api
                    .fields
                    .iter()
                    .filter(|f| f.versions.lo <= theirs.hi)
                    .copied()
                    .collect();
                same_fields(&known, &def["fields"], &Default::default(), api.name);
                continue;
            }
            assert_eq!(api.valid, theirs);
            assert_eq!(
                api.flexible,
                Versions::parse(text(&def, "flexibleVersions", api.name))
            );
            let commons = def["commonStructs"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|c| (text(c, "name", api.name).to_string(), c.clone()))
                        .collect()
                })
                .unwrap_or_default();
            same_fields(api.fields, &def["fields"], &commons, api.name);
        }
        // The header: the same fields; the client id is never compact.
        let def = definition(&mut jar, "RequestHeader");
        let mut fields = def["fields"].clone();
        let client_id = fields.as_array_mut().unwrap().last_mut().unwrap();
        assert_eq!(client_id["flexibleVersions"], "none");
        client_id
            .as_object_mut()
            .unwrap()
            .remove("flexibleVersions");
        same_fields(HEADER, &fields, &Default::default(), "RequestHeader");
    }

    #[test]
    fn api_keys_are_unique() {
        for (i, a) in APIS.iter().enumerate() {
            assert!(APIS[i + 1..].iter().all(|b| b.key != a.key), "{}", a.name);
        }
    }
}
