//! Request frames to typed requests, safely.
//!
//! [`decode`] is the only way a request's bytes become a request: it reads the frame's
//! fixed prefix, refuses API keys and versions this broker does not decode, walks the frame
//! along the request's [schema](schema) so that no count or length in it can exceed the
//! bytes that follow ([`bounds`]), and only then lets the `kafka-protocol` decoder build the
//! header and body. A frame that fails any step is an error naming the field and byte, and
//! nothing was allocated for it beyond a small multiple of its own size.
//!
//! The same function is what the fuzz targets (`kafka-wire/fuzz`) drive.

pub mod bounds;
pub mod legacy;
pub(crate) mod schema;

use bytes::Bytes;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, AlterClientQuotasRequest,
    AlterConfigsRequest, AlterUserScramCredentialsRequest, ApiKey, ApiVersionsRequest,
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, CreateAclsRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteAclsRequest, DeleteGroupsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeProducersRequest, DescribeTransactionsRequest, DescribeUserScramCredentialsRequest,
    EndTxnRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, ListTransactionsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest,
    ProduceRequest, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest, SyncGroupRequest,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Decodable, decode_request_header_from_buffer};

pub use bounds::BoundsError;

/// A frame that is not a request this broker can decode. The listener closes the
/// connection on it, as Kafka does on an `InvalidRequestException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {api} request: {detail}")]
pub struct DecodeError {
    /// The API and version, as far as they could be read.
    pub api: String,
    /// Why.
    pub detail: String,
}

/// The fixed start of every request frame: API key, API version, correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The API key as sent (it may name no API).
    pub key: i16,
    /// The API version as sent.
    pub version: i16,
    /// The correlation id the response must carry.
    pub correlation_id: i32,
}

impl Prefix {
    /// Reads the prefix of `frame` (the bytes after the 4-byte size).
    pub fn read(frame: &[u8]) -> Result<Prefix, DecodeError> {
        if frame.len() < 8 {
            return Err(DecodeError {
                api: "frame".into(),
                detail: format!("{} bytes is shorter than a request header", frame.len()),
            });
        }
        Ok(Prefix {
            key: i16::from_be_bytes([frame[0], frame[1]]),
            version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }

    fn describe(&self) -> String {
        match ApiKey::try_from(self.key) {
            Ok(key) => format!("{key:?} v{}", self.version),
            Err(()) => format!("api key {} v{}", self.key, self.version),
        }
    }
}

/// A decoded request: its header and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The API key.
    pub key: ApiKey,
    /// The API version the body was decoded at.
    pub version: i16,
    /// The header (correlation id, client id).
    pub header: RequestHeader,
    /// The body.
    pub body: Body,
    /// The frame's size in bytes (header and body, without the 4-byte size prefix): what
    /// Kafka's request quotas count.
    pub size: usize,
}

macro_rules! bodies {
    ($($variant:ident($t:ty)),* $(,)?) => {
        /// A request body of one of the APIs this broker decodes.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)]
        pub enum Body {
            $($variant($t),)*
        }

        fn decode_body(key: ApiKey, body: &mut Bytes, version: i16) -> Result<Body, String> {
            match key {
                $(ApiKey::$variant => <$t>::decode(body, version)
                    .map(Body::$variant)
                    .map_err(|e| e.to_string()),)*
                other => Err(format!("{other:?} is not decoded by this broker")),
            }
        }

        #[cfg(any(test, feature = "request-encode"))]
        impl Body {
            /// Kafka's encoding of this body at `version`: what a body that decoded must
            /// encode back to (the fuzz target and the tests check it for every API).
            pub fn encode(&self, out: &mut bytes::BytesMut, version: i16) -> Result<(), String> {
                if let Body::OffsetForLeaderEpoch(b) = self
                    && legacy::offset_for_leader_epoch_legacy(version)
                {
                    return legacy::encode_offset_for_leader_epoch_request(b, out);
                }
                match self {
                    $(Body::$variant(b) => {
                        kafka_protocol::protocol::Encodable::encode(b, out, version)
                            .map_err(|e| e.to_string())
                    })*
                }
            }
        }
    };
}

bodies!(
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    SyncGroup(SyncGroupRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    ApiVersions(ApiVersionsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    DeleteRecords(DeleteRecordsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DescribeConfigs(DescribeConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    CreatePartitions(CreatePartitionsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    DeleteGroups(DeleteGroupsRequest),
    DescribeCluster(DescribeClusterRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    DescribeAcls(DescribeAclsRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
    DescribeClientQuotas(DescribeClientQuotasRequest),
    AlterClientQuotas(AlterClientQuotasRequest),
    DescribeUserScramCredentials(DescribeUserScramCredentialsRequest),
    AlterUserScramCredentials(AlterUserScramCredentialsRequest),
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    EndTxn(EndTxnRequest),
    TxnOffsetCommit(TxnOffsetCommitRequest),
    OffsetDelete(OffsetDeleteRequest),
    DescribeProducers(DescribeProducersRequest),
    DescribeTransactions(DescribeTransactionsRequest),
    ListTransactions(ListTransactionsRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
);

/// The API versions [`decode`] accepts for `key`: those both described by the schema and
/// decodable by `kafka-protocol` or by hand ([`legacy`]). `None` for an API it does not
/// decode.
pub fn decodable_versions(key: ApiKey) -> Option<(i16, i16)> {
    let api = schema::api_for(key as i16)?;
    let mut crate_range = key.valid_versions();
    if key == ApiKey::OffsetForLeaderEpoch {
        crate_range.min = 0;
    }
    let lo = api.valid.lo.max(crate_range.min);
    let hi = api.valid.hi.min(crate_range.max);
    (lo <= hi).then_some((lo, hi))
}

/// Decodes one request frame (the bytes after the 4-byte size): see the module docs.
pub fn decode(mut frame: Bytes) -> Result<Request, DecodeError> {
    let size = frame.len();
    let prefix = Prefix::read(&frame)?;
    let malformed = |detail: String| DecodeError {
        api: prefix.describe(),
        detail,
    };
    let key = ApiKey::try_from(prefix.key).map_err(|()| malformed("unknown API key".into()))?;
    let api =
        schema::api_for(prefix.key).ok_or_else(|| malformed("this API is not served".into()))?;
    let (lo, hi) =
        decodable_versions(key).ok_or_else(|| malformed("this API is not served".into()))?;
    if !(lo..=hi).contains(&prefix.version) {
        return Err(malformed(format!("decodable versions are {lo}..={hi}")));
    }
    bounds::check_frame(api, prefix.version, &frame).map_err(|e| malformed(e.to_string()))?;
    let header = decode_request_header_from_buffer(&mut frame)
        .map_err(|e| malformed(format!("request header: {e}")))?;
    let body = if key == ApiKey::OffsetForLeaderEpoch
        && legacy::offset_for_leader_epoch_legacy(prefix.version)
    {
        legacy::decode_offset_for_leader_epoch_request(&mut frame).map(Body::OffsetForLeaderEpoch)
    } else {
        decode_body(key, &mut frame, prefix.version)
    }
    .map_err(malformed)?;
    Ok(Request {
        key,
        version: prefix.version,
        header,
        body,
        size,
    })
}

#[cfg(test)]
mod tests;
