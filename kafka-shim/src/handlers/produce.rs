//! Produce: validating record batches, assigning offsets and waiting for the acks asked for.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName, produce_response};

use crate::batch::{self, BatchError};
use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::partition::Partition;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    pub(crate) async fn produce(
        self: &Arc<Self>,
        session: &Session,
        req: ProduceRequest,
        version: i16,
    ) -> BoxFuture<'static, Reply> {
        let acks = req.acks;
        let timeout_ms = req.timeout_ms;
        let mut issued = Vec::new();
        let transactional_id = req
            .transactional_id
            .as_ref()
            .map(|t| t.as_str().to_string());
        for topic_data in req.topic_data {
            let name = topic_data.name.0.as_str().to_string();
            let topic = self.topics.get(&name);
            for part in topic_data.partition_data {
                let index = part.index;
                let outcome: Result<(Arc<Partition>, i64, i64), KafkaCode> = async {
                    if transactional_id.as_deref().is_some_and(|t| {
                        !self.allowed(session, Operation::Write, ResourceType::TransactionalId, t)
                    }) {
                        return Err(KafkaCode::TransactionalIdAuthorizationFailed);
                    }
                    if !self.allowed(session, Operation::Write, ResourceType::Topic, &name) {
                        return Err(KafkaCode::TopicAuthorizationFailed);
                    }
                    let topic = topic.as_ref().ok_or(KafkaCode::UnknownTopicOrPartition)?;
                    let records = part.records.as_ref().ok_or(KafkaCode::CorruptMessage)?;
                    let batches = batch::split_and_validate(records).map_err(|e| {
                        tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                        batch_code(&e)
                    })?;
                    let limit = topic.max_message_bytes(&self.config.topic_defaults);
                    for (h, _) in &batches {
                        if h.size as i64 > limit {
                            return Err(KafkaCode::MessageTooLarge);
                        }
                        if h.compression() == 4 && version < 7 {
                            return Err(KafkaCode::UnsupportedCompressionType);
                        }
                    }
                    // A transactional batch only into a partition of its producer's open
                    // transaction (Kafka's verification, KIP-890); one without a
                    // transactional id in the request cannot be checked.
                    if let Some((h, _)) = batches.iter().find(|(h, _)| h.is_transactional()) {
                        let id = transactional_id
                            .as_deref()
                            .ok_or(KafkaCode::InvalidTxnState)?;
                        self.txn
                            .check_produce(id, h.producer_id, h.producer_epoch, &name, index)
                            .await?;
                    }
                    let bytes: u64 = batches.iter().map(|(h, _)| h.size as u64).sum();
                    let records: i64 = batches.iter().map(|(h, _)| i64::from(h.record_count)).sum();
                    let p = self.partition(topic, index).await?;
                    let (first, last) = p.issue(batches).await?;
                    self.metrics.produced(bytes, records);
                    Ok((p, first, last))
                }
                .await;
                issued.push((name.clone(), index, outcome));
            }
        }
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut topics: Vec<produce_response::TopicProduceResponse> = Vec::new();
            for (name, index, outcome) in issued {
                let mut resp = produce_response::PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let result = match outcome {
                    Ok((p, first, last)) => p
                        .wait_acknowledged(last, timeout_ms)
                        .await
                        .map(|()| (p, first)),
                    Err(code) => Err(code),
                };
                match result {
                    Ok((p, first)) => {
                        resp.base_offset = first;
                        resp.log_start_offset = p.offsets().0;
                    }
                    Err(code) => {
                        metrics.produce_errors.fetch_add(1, Ordering::Relaxed);
                        resp.error_code = code.code();
                    }
                }
                match topics.last_mut() {
                    Some(t) if t.name.0.as_str() == name => t.partition_responses.push(resp),
                    _ => topics.push(
                        produce_response::TopicProduceResponse::default()
                            .with_name(TopicName(str_bytes(&name)))
                            .with_partition_responses(vec![resp]),
                    ),
                }
            }
            if acks == 0 {
                return Ok(None);
            }
            encode(&ProduceResponse::default().with_responses(topics), version)
        })
    }
}

fn batch_code(e: &BatchError) -> KafkaCode {
    match e {
        BatchError::Malformed(_) | BatchError::Crc { .. } => KafkaCode::CorruptMessage,
        BatchError::Magic(_) | BatchError::Invalid(_) => KafkaCode::InvalidRecord,
        BatchError::Compression(_) => KafkaCode::UnsupportedCompressionType,
    }
}
