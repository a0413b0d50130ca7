//! ListOffsets: earliest, latest, max-timestamp and by-timestamp offsets.

use std::sync::Arc;

use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, TopicName, list_offsets_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    pub(crate) async fn list_offsets(
        self: Arc<Self>,
        session: &Session,
        req: ListOffsetsRequest,
        version: i16,
    ) -> Reply {
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let described = self.allowed(session, Operation::Describe, ResourceType::Topic, &name);
            let mut parts = Vec::new();
            for p in t.partitions {
                let mut r = list_offsets_response::ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                let part = match &topic {
                    _ if !described => Err(KafkaCode::TopicAuthorizationFailed),
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                    // Leader epochs stay 0 here (see Fetch).
                    Some(_) if version >= 4 && p.current_leader_epoch > 0 => {
                        Err(KafkaCode::UnknownLeaderEpoch)
                    }
                    Some(topic) => self.partition(topic, p.partition_index).await,
                };
                match part {
                    Err(code) => r.error_code = code.code(),
                    Ok(part) => {
                        let (start, hwm) = part.offsets();
                        if version >= 4 {
                            r.leader_epoch = 0;
                        }
                        match p.timestamp {
                            // read_committed consumers end at the last stable offset.
                            -1 if version >= 2 && req.isolation_level == 1 => {
                                r.offset = part.last_stable_offset();
                            }
                            -1 => r.offset = hwm,
                            -2 => r.offset = start,
                            // KIP-405/KIP-1005: with no tiered storage the local log starts
                            // where the log does, and nothing is tiered (no offset).
                            -4 if version >= 8 => r.offset = start,
                            -5 if version >= 9 => {}
                            -3 if version >= 7 => match part.max_timestamp().await {
                                Ok(Some((offset, ts))) => {
                                    r.offset = offset;
                                    r.timestamp = ts;
                                }
                                Ok(None) => {}
                                Err(code) => r.error_code = code.code(),
                            },
                            ts if ts >= 0 => match part.offset_for_timestamp(ts).await {
                                Ok(Some((offset, found))) => {
                                    r.offset = offset;
                                    r.timestamp = found;
                                }
                                Ok(None) => {}
                                Err(code) => r.error_code = code.code(),
                            },
                            _ => r.error_code = KafkaCode::InvalidRequest.code(),
                        }
                    }
                }
                parts.push(r);
            }
            topics.push(
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(parts),
            );
        }
        encode(&ListOffsetsResponse::default().with_topics(topics), version)
    }
}
