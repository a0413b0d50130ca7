//! Produce: validating record batches, assigning offsets and waiting for the acks asked
//! for; and the producer byte-rate quota ([`crate::quotas`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName, produce_response};

use crate::batch::{self, BatchError};
use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::partition::Partition;
use crate::quotas::{self, PRODUCE_BACKS_OFF_FROM, QuotaKey, throttle_time_ms};
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    pub(crate) async fn produce(
        self: &Arc<Self>,
        session: &Session,
        client_id: &str,
        req: ProduceRequest,
        version: i16,
        request_size: usize,
    ) -> BoxFuture<'static, Reply> {
        // The producer quota (KIP-13) counts the whole request, header and body, taken or
        // refused, as Kafka does.
        let throttle =
            match self
                .quotas
                .applies(QuotaKey::ProducerByteRate, &session.principal, client_id)
            {
                Some(quota) => {
                    self.quotas
                        .record(&quota, QuotaKey::ProducerByteRate, request_size as u64)
                }
                None => Duration::ZERO,
            };
        let gate = session.throttle.clone();
        let clock = self.config.clock.clone();
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
                let outcome: Result<(Arc<Partition>, i64, i64), Refused> = async {
                    if transactional_id.as_deref().is_some_and(|t| {
                        !self.allowed(session, Operation::Write, ResourceType::TransactionalId, t)
                    }) {
                        return Err(KafkaCode::TransactionalIdAuthorizationFailed.into());
                    }
                    if !self.allowed(session, Operation::Write, ResourceType::Topic, &name) {
                        return Err(KafkaCode::TopicAuthorizationFailed.into());
                    }
                    // Kafka: "Cannot append to internal topic" for every client.
                    if is_internal(&name) {
                        return Err(KafkaCode::InvalidTopicException.into());
                    }
                    let topic = topic.as_ref().ok_or(KafkaCode::UnknownTopicOrPartition)?;
                    let records = part.records.as_ref().ok_or(KafkaCode::CorruptMessage)?;
                    let batches = batch::split_and_validate(records).map_err(|e| {
                        tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                        batch_code(&e)
                    })?;
                    let batches = recompressed(topic, batches, version, &self.config.topic_defaults)?;
                    let limit = topic.max_message_bytes(&self.config.topic_defaults);
                    for (h, _) in &batches {
                        if h.size as i64 > limit {
                            return Err(KafkaCode::MessageTooLarge.into());
                        }
                        if h.compression() == 4 && version < 7 {
                            return Err(KafkaCode::UnsupportedCompressionType.into());
                        }
                    }
                    if topic.compacted(&self.config.topic_defaults) {
                        refuse_records_without_key(&batches, &name, index)?;
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
                        .map(|()| (p, first))
                        .map_err(Refused::from),
                    Err(refused) => Err(refused),
                };
                match result {
                    Ok((p, first)) => {
                        resp.base_offset = first;
                        resp.log_start_offset = p.offsets().0;
                    }
                    Err(refused) => {
                        metrics.produce_errors.fetch_add(1, Ordering::Relaxed);
                        resp.error_code = refused.code.code();
                        if version >= 8 && !refused.records.is_empty() {
                            resp.error_message = Some(str_bytes(&refused.message()));
                            resp.record_errors = refused
                                .records
                                .iter()
                                .map(|(i, m)| {
                                    produce_response::BatchIndexAndErrorMessage::default()
                                        .with_batch_index(*i)
                                        .with_batch_index_error_message(Some(str_bytes(m)))
                                })
                                .collect();
                        }
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
            if !throttle.is_zero() {
                metrics.throttled(QuotaKey::ProducerByteRate, throttle.as_millis() as u64);
            }
            // acks=0 gets no response, but its connection is held all the same.
            let backs_off = version >= PRODUCE_BACKS_OFF_FROM || acks == 0;
            quotas::throttle(&gate, &clock, throttle, backs_off).await;
            if acks == 0 {
                return Ok(None);
            }
            encode(
                &ProduceResponse::default()
                    .with_responses(topics)
                    .with_throttle_time_ms(throttle_time_ms(throttle)),
                version,
            )
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

/// Why a partition's part of a produce request was refused: the code, and for record-level
/// refusals (Produce v8+) which records and why.
struct Refused {
    code: KafkaCode,
    records: Vec<(i32, String)>,
}

impl From<KafkaCode> for Refused {
    fn from(code: KafkaCode) -> Self {
        Refused {
            code,
            records: Vec::new(),
        }
    }
}

impl Refused {
    /// Kafka's message for record errors (`LogValidator.processRecordErrors`).
    fn message(&self) -> String {
        let shown: Vec<String> = self
            .records
            .iter()
            .take(3)
            .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
            .collect();
        format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            self.records.len(),
            shown.join(", ")
        )
    }
}

/// A compacted topic refuses records without a key, as Kafka's log validator does: the
/// whole partition's data is refused (nothing is appended) with INVALID_RECORD, and each
/// such record is named by its position in the request's records.
fn refuse_records_without_key(
    batches: &[(batch::BatchHeader, bytes::Bytes)],
    topic: &str,
    partition: i32,
) -> Result<(), Refused> {
    let mut records = Vec::new();
    let mut at = 0i32;
    for (h, b) in batches {
        for i in batch::records_without_key(b).map_err(|e| Refused::from(batch_code(&e)))? {
            records.push((
                at + i,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
                ),
            ));
        }
        at = at.saturating_add(h.record_count);
    }
    if records.is_empty() {
        return Ok(());
    }
    Err(Refused {
        code: KafkaCode::InvalidRecord,
        records,
    })
}

/// The most a batch's records may decompress to when the broker recompresses it.
const MAX_RECOMPRESSED_RECORDS: usize = 256 << 20;

/// The batches as the topic stores them: a topic whose `compression.type` names a codec
/// gets every batch in that codec (Kafka's log validator recompresses on append), so that
/// consumers see what Kafka would give them. `producer` keeps them as sent. Done on produce,
/// not fetch: a batch is compressed once, and what is stored (and its size against
/// `max.message.bytes`) is what every fetch returns.
fn recompressed(
    topic: &crate::topics::Topic,
    batches: Vec<(batch::BatchHeader, bytes::Bytes)>,
    version: i16,
    defaults: &crate::topics::TopicDefaults,
) -> Result<Vec<(batch::BatchHeader, bytes::Bytes)>, Refused> {
    let codec = match topic
        .config("compression.type", defaults)
        .and_then(|(v, _)| batch::topic_codec(&v))
    {
        None => return Ok(batches),
        Some(Ok(codec)) => codec,
        Some(Err(e)) => return Err(batch_code(&e).into()),
    };
    // zstd needs Produce v7+ (KIP-110), whoever asked for it.
    if codec == 4 && version < 7 {
        return Err(KafkaCode::UnsupportedCompressionType.into());
    }
    batches
        .into_iter()
        .map(|(h, b)| {
            if h.compression() == codec || h.is_control() {
                return Ok((h, b));
            }
            let b = batch::recompress(&b, codec, MAX_RECOMPRESSED_RECORDS)
                .map_err(|e| Refused::from(batch_code(&e)))?;
            let h = batch::read_header(&b).map_err(|e| Refused::from(batch_code(&e)))?;
            Ok((h, b))
        })
        .collect()
}
