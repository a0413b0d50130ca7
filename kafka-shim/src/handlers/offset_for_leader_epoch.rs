//! OffsetForLeaderEpoch: the end offset of a leader epoch, which consumers use to detect log
//! truncation after a leader change (KIP-320). This broker is the only leader its partitions
//! ever had, at epoch 0 (what Metadata and Fetch report), so the epoch cache Kafka keeps
//! holds at most one entry: epoch 0, from the first batch ever written.
//!
//! Versions 0 and 1 (which Kafka 3.9 still serves) are read and written by hand
//! ([`crate::codec::legacy`]); v0's answer carries no leader epoch.

use std::sync::Arc;

use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    offset_for_leader_epoch_response,
};

use bytes::BytesMut;

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::codec::legacy;
use crate::error::{KafkaCode, ShimError};
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};

/// The leader epoch of every partition of this broker.
const LEADER_EPOCH: i32 = 0;

/// Kafka's "no epoch" (`UNDEFINED_EPOCH`) and "no offset" (`UNDEFINED_EPOCH_OFFSET`).
const UNDEFINED: i32 = -1;
const UNDEFINED_OFFSET: i64 = -1;

impl Broker {
    pub(crate) async fn offset_for_leader_epoch(
        self: Arc<Self>,
        session: &Session,
        req: OffsetForLeaderEpochRequest,
        version: i16,
    ) -> Reply {
        // Kafka: CLUSTER_ACTION on the cluster (replicas) allows every topic; anyone else
        // needs DESCRIBE on each topic.
        let cluster_action = self.allowed(
            session,
            Operation::ClusterAction,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.topic.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let described = cluster_action
                || self.allowed(session, Operation::Describe, ResourceType::Topic, &name);
            let mut partitions = Vec::new();
            for p in t.partitions {
                let mut r = offset_for_leader_epoch_response::EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(UNDEFINED)
                    .with_end_offset(UNDEFINED_OFFSET);
                let part = match &topic {
                    _ if !described => Err(KafkaCode::TopicAuthorizationFailed),
                    Some(topic) => self.partition(topic, p.partition).await,
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                };
                match part {
                    Err(code) => r.error_code = code.code(),
                    // The fencing check of the current leader epoch (-1: none given).
                    Ok(_) if p.current_leader_epoch > LEADER_EPOCH => {
                        r.error_code = KafkaCode::UnknownLeaderEpoch.code();
                    }
                    // -1 is "no epoch given"; any other epoch below ours is an old one.
                    Ok(_)
                        if p.current_leader_epoch != UNDEFINED
                            && p.current_leader_epoch < LEADER_EPOCH =>
                    {
                        r.error_code = KafkaCode::FencedLeaderEpoch.code();
                    }
                    Ok(part) => {
                        let (start, hwm) = part.offsets();
                        // Kafka's epoch cache gets its entry with the first batch written;
                        // an empty partition has none.
                        let ever_written = hwm > 0;
                        let (epoch, end) = match p.leader_epoch {
                            e if e == LEADER_EPOCH && ever_written => (LEADER_EPOCH, hwm),
                            // An epoch below every cached one ends where the first cached
                            // epoch starts (its start moves with the log start offset).
                            e if e < LEADER_EPOCH && e != UNDEFINED && ever_written => (e, start),
                            _ => (UNDEFINED, UNDEFINED_OFFSET),
                        };
                        r.leader_epoch = epoch;
                        r.end_offset = end;
                    }
                }
                partitions.push(r);
            }
            topics.push(
                offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                    .with_topic(TopicName(str_bytes(&name)))
                    .with_partitions(partitions),
            );
        }
        let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
        if legacy::offset_for_leader_epoch_legacy(version) {
            let mut out = BytesMut::new();
            legacy::encode_offset_for_leader_epoch_response(&resp, version, &mut out)
                .map_err(ShimError::Encode)?;
            return Ok(Some(out));
        }
        encode(&resp, version)
    }
}
