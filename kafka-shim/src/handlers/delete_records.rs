//! DeleteRecords: moves partitions' log start offsets forward (Kafka's truncation from the
//! front). The new start is stored in the metadata store before it is applied, so that it
//! holds across restarts; the batches wholly below it leave the log.

use std::sync::Arc;

use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, TopicName, delete_records_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

/// Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`: delete up to the high watermark.
const HIGH_WATERMARK: i64 = -1;

impl Broker {
    pub(crate) async fn delete_records(
        self: Arc<Self>,
        session: &Session,
        req: DeleteRecordsRequest,
        version: i16,
    ) -> Reply {
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let deletable = self.allowed(session, Operation::Delete, ResourceType::Topic, &name);
            let mut partitions = Vec::new();
            for p in t.partitions {
                let outcome = match &topic {
                    _ if !deletable => Err(KafkaCode::TopicAuthorizationFailed),
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                    // Kafka: "Cannot delete records of internal topic".
                    Some(_) if is_internal(&name) => Err(KafkaCode::InvalidTopicException),
                    // Kafka refuses to delete records of a topic whose cleanup policy does
                    // not include `delete`.
                    Some(topic) if !topic.deletes_records(&self.config.topic_defaults) => {
                        Err(KafkaCode::PolicyViolation)
                    }
                    Some(topic) => {
                        self.delete_partition_records(topic, p.partition_index, p.offset)
                            .await
                    }
                };
                let mut r = delete_records_response::DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                match outcome {
                    Ok(low) => r.low_watermark = low,
                    Err(code) => r.error_code = code.code(),
                }
                partitions.push(r);
            }
            topics.push(
                delete_records_response::DeleteRecordsTopicResult::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(partitions),
            );
        }
        encode(
            &DeleteRecordsResponse::default().with_topics(topics),
            version,
        )
    }

    /// Raises one partition's log start offset to `offset` (`-1`: the high watermark) and
    /// returns the low watermark now in force.
    pub(crate) async fn delete_partition_records(
        &self,
        topic: &crate::topics::Topic,
        index: i32,
        offset: i64,
    ) -> Result<i64, KafkaCode> {
        let p = self.partition(topic, index).await?;
        let (start, hwm) = p.offsets();
        let target = if offset == HIGH_WATERMARK {
            hwm
        } else {
            offset
        };
        if target < 0 || target > hwm {
            return Err(KafkaCode::OffsetOutOfRange);
        }
        if target <= start {
            return Ok(start);
        }
        self.topics
            .raise_log_start(topic, index, target)
            .await
            .map_err(|e| {
                tracing::warn!(topic = %topic.name, partition = index, error = %e, "storing a log start offset failed");
                KafkaCode::KafkaStorageError
            })?;
        p.advance_log_start(target).await.map_err(|e| {
            // The start is stored: it is in force from the next open of the partition on.
            tracing::warn!(topic = %topic.name, partition = index, error = %e, "truncating a partition's log failed");
            KafkaCode::KafkaStorageError
        })
    }
}
