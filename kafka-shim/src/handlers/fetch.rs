//! Fetch: reading batches from partitions, with long polling and read_committed.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName, fetch_response};

use crate::batch::{self};
use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    pub(crate) async fn fetch(
        self: Arc<Self>,
        session: &Session,
        req: FetchRequest,
        version: i16,
    ) -> Reply {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let max_bytes = if version >= 3 && req.max_bytes > 0 {
            req.max_bytes as usize
        } else {
            usize::MAX
        };
        let min_bytes = req.min_bytes.max(0) as usize;
        // read_committed: nothing at or past the last stable offset, and the aborted
        // transactions of what is returned.
        let committed_only = req.isolation_level == 1;
        // Resolve the partitions once.
        let mut wanted = Vec::new();
        for t in &req.topics {
            let name = t.topic.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let readable = self.allowed(session, Operation::Read, ResourceType::Topic, &name);
            for p in &t.partitions {
                let part = match &topic {
                    _ if !readable => Err(KafkaCode::TopicAuthorizationFailed),
                    Some(topic) => self.partition(topic, p.partition).await,
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                };
                wanted.push((name.clone(), p.clone(), part));
            }
        }
        loop {
            let mut total = 0usize;
            let mut errors = false;
            let mut topics: Vec<fetch_response::FetchableTopicResponse> = Vec::new();
            for (name, fp, part) in &wanted {
                let mut pd = fetch_response::PartitionData::default()
                    .with_partition_index(fp.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_aborted_transactions(None)
                    .with_log_start_offset(-1);
                if version >= 11 {
                    pd.preferred_read_replica = BrokerId(-1);
                }
                match part {
                    Err(code) => {
                        pd.error_code = code.code();
                        errors = true;
                    }
                    Ok(p) => {
                        let (start, hwm) = p.offsets();
                        let lso = p.last_stable_offset();
                        pd.high_watermark = hwm;
                        pd.last_stable_offset = lso;
                        pd.log_start_offset = start;
                        // Kafka lists aborted transactions (maybe none) to read_committed
                        // fetches only; read_uncommitted ones get null.
                        pd.aborted_transactions = committed_only.then(Vec::new);
                        let budget = (fp.partition_max_bytes.max(0) as usize)
                            .min(max_bytes.saturating_sub(total));
                        // KIP-74: the first batch of the first partition with data is
                        // returned whole even when it exceeds the limits; every other batch
                        // fits within both the partition's and the response's limit.
                        let whole_first = total == 0;
                        if budget > 0 || whole_first {
                            match p
                                .read(fp.fetch_offset, budget, whole_first, committed_only)
                                .await
                            {
                                Ok(None) => {
                                    pd.error_code = KafkaCode::OffsetOutOfRange.code();
                                    errors = true;
                                }
                                Ok(Some(batches)) if !batches.is_empty() => {
                                    if version < 10
                                        && batches.iter().any(|b| {
                                            batch::read_header(b)
                                                .is_ok_and(|h| h.compression() == 4)
                                        })
                                    {
                                        pd.error_code =
                                            KafkaCode::UnsupportedCompressionType.code();
                                        errors = true;
                                    } else {
                                        let size: usize = batches.iter().map(Bytes::len).sum();
                                        let mut buf = BytesMut::with_capacity(size);
                                        for b in &batches {
                                            buf.extend_from_slice(b);
                                        }
                                        if committed_only {
                                            let end = batches
                                                .last()
                                                .and_then(|b| batch::read_header(b).ok())
                                                .map_or(lso, |h| h.base_offset + h.offset_count());
                                            pd.aborted_transactions = Some(
                                                p.aborted_between(fp.fetch_offset, end)
                                                    .into_iter()
                                                    .map(|a| {
                                                        fetch_response::AbortedTransaction::default(
                                                        )
                                                        .with_producer_id(a.producer_id.into())
                                                        .with_first_offset(a.first_offset)
                                                    })
                                                    .collect(),
                                            );
                                        }
                                        total += size;
                                        pd.records = Some(buf.freeze());
                                    }
                                }
                                Ok(Some(_)) => {}
                                Err(code) => {
                                    pd.error_code = code.code();
                                    errors = true;
                                }
                            }
                        }
                    }
                }
                match topics.last_mut() {
                    Some(t) if t.topic.0.as_str() == name => t.partitions.push(pd),
                    _ => topics.push(
                        fetch_response::FetchableTopicResponse::default()
                            .with_topic(TopicName(str_bytes(name)))
                            .with_partitions(vec![pd]),
                    ),
                }
            }
            let now = tokio::time::Instant::now();
            if total >= min_bytes.max(1) || errors || now >= deadline || wanted.is_empty() {
                self.metrics.fetched(total as u64);
                return encode(&FetchResponse::default().with_responses(topics), version);
            }
            // Long poll: wait for any partition's high watermark to move.
            let mut receivers: Vec<_> = wanted
                .iter()
                .filter_map(|(_, _, p)| p.as_ref().ok().map(|p| p.subscribe()))
                .collect();
            for r in &mut receivers {
                r.borrow_and_update();
            }
            let changed = futures::future::select_all(
                receivers
                    .iter_mut()
                    .map(|r| Box::pin(r.changed()))
                    .collect::<Vec<_>>(),
            );
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}
