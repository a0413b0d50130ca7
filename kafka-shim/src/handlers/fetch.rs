//! Fetch: reading batches from partitions, with long polling and read_committed; and the
//! consumer byte-rate quota ([`crate::quotas`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName, fetch_response};

use crate::batch::{self};
use crate::broker::{Broker, Reply, encode, now_ms, str_bytes};
use crate::error::KafkaCode;
use crate::fetch_session::{self, Answer, TopicKey, Wanted};
use crate::partition::Partition;
use crate::quotas::{self, FETCH_BACKS_OFF_FROM, QuotaKey, throttle_time_ms};
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

/// One partition a Fetch reads: its topic's name and id, and the partition or the error it
/// gets.
struct Target {
    name: String,
    id: uuid::Uuid,
    index: i32,
    wanted: Wanted,
    part: Result<Arc<Partition>, KafkaCode>,
}

impl Broker {
    pub(crate) async fn fetch(
        self: Arc<Self>,
        session: &Session,
        client_id: &str,
        req: FetchRequest,
        version: i16,
    ) -> Reply {
        let clock = self.config.clock.clone();
        let deadline = clock.now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let quota = self
            .quotas
            .applies(QuotaKey::ConsumerByteRate, &session.principal, client_id);
        let max_bytes = if version >= 3 && req.max_bytes > 0 {
            req.max_bytes as usize
        } else {
            usize::MAX
        };
        // Under a consumer quota no response carries more than the quota's window can pay
        // back, or a client would be throttled for ever (as in Kafka).
        let max_bytes = match &quota {
            Some(q) => max_bytes.min(self.quotas.max_bytes_in_window(q)),
            None => max_bytes,
        };
        let min_bytes = req.min_bytes.max(0) as usize;
        // read_committed: nothing at or past the last stable offset, and the aborted
        // transactions of what is returned.
        let committed_only = req.isolation_level == 1;
        // Fetch v13 names topics by id, earlier versions by name.
        let by_id = version >= 13;
        let topic_key = |name: &TopicName, id: uuid::Uuid| {
            if by_id {
                TopicKey::Id(id)
            } else {
                TopicKey::Name(name.0.as_str().to_string())
            }
        };
        let mut named = Vec::new();
        for t in &req.topics {
            for p in &t.partitions {
                let wanted = Wanted {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                };
                named.push(((topic_key(&t.topic, t.topic_id), p.partition), wanted));
            }
        }
        let mut forgotten = Vec::new();
        for t in &req.forgotten_topics_data {
            for p in &t.partitions {
                forgotten.push((topic_key(&t.topic, t.topic_id), *p));
            }
        }
        let request = fetch_session::Request {
            session_id: req.session_id,
            epoch: req.session_epoch,
            by_id,
            partitions: named,
            forgotten,
        };
        let plan = match self.fetch_sessions.begin(
            version,
            request,
            now_ms(self.config.clock.as_ref()) as u64,
        ) {
            Ok(plan) => plan,
            Err(code) => {
                return encode(
                    &FetchResponse::default()
                        .with_error_code(code.code())
                        .with_session_id(0),
                    version,
                );
            }
        };
        // Resolve the partitions once: the topic's name and id, and the partition or the
        // error it gets.
        let mut wanted = Vec::with_capacity(plan.partitions.len());
        for ((key, index), w) in &plan.partitions {
            let topic = match key {
                TopicKey::Name(name) => self.topics.get(name),
                TopicKey::Id(id) => self.topics.by_id(*id),
            };
            let (name, id) = match (&topic, key) {
                (Some(t), _) => (t.name.clone(), t.id),
                (None, TopicKey::Name(name)) => (name.clone(), uuid::Uuid::nil()),
                (None, TopicKey::Id(id)) => (String::new(), *id),
            };
            let part = match &topic {
                None if by_id => Err(KafkaCode::UnknownTopicId),
                _ if !self.allowed(session, Operation::Read, ResourceType::Topic, &name) => {
                    Err(KafkaCode::TopicAuthorizationFailed)
                }
                None => Err(KafkaCode::UnknownTopicOrPartition),
                // The shim's partitions keep leader epoch 0: a client that knows a later one
                // talks about a future this broker has not seen.
                Some(_) if w.current_leader_epoch > 0 => Err(KafkaCode::UnknownLeaderEpoch),
                Some(topic) => self.partition(topic, *index).await,
            };
            wanted.push(Target {
                name,
                id,
                index: *index,
                wanted: *w,
                part,
            });
        }
        loop {
            let mut total = 0usize;
            let mut errors = false;
            let mut answered = Vec::with_capacity(wanted.len());
            for Target {
                index,
                wanted: w,
                part,
                ..
            } in &wanted
            {
                let mut pd = fetch_response::PartitionData::default()
                    .with_partition_index(*index)
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
                        let budget =
                            (w.max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                        // KIP-74: the first batch of the first partition with data is
                        // returned whole even when it exceeds the limits; every other batch
                        // fits within both the partition's and the response's limit.
                        let whole_first = total == 0;
                        if budget > 0 || whole_first {
                            match p
                                .read(w.fetch_offset, budget, whole_first, committed_only)
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
                                                p.aborted_between(w.fetch_offset, end)
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
                answered.push(pd);
            }
            let now = clock.now();
            if total >= min_bytes.max(1) || errors || now >= deadline || wanted.is_empty() {
                let throttle = match &quota {
                    Some(q) => self
                        .quotas
                        .record(q, QuotaKey::ConsumerByteRate, total as u64),
                    None => Duration::ZERO,
                };
                if !throttle.is_zero() {
                    // Kafka answers a throttled fetch empty and does not count what it
                    // did not send: the client asks again for the same offsets.
                    if let Some(q) = &quota {
                        self.quotas
                            .unrecord(q, QuotaKey::ConsumerByteRate, total as u64);
                    }
                    for pd in &mut answered {
                        if pd.records.take().is_some() && committed_only {
                            pd.aborted_transactions = Some(Vec::new());
                        }
                    }
                    self.metrics
                        .throttled(QuotaKey::ConsumerByteRate, throttle.as_millis() as u64);
                } else {
                    self.metrics.fetched(total as u64);
                }
                let reply = self.fetch_response(&plan, &wanted, answered, version, throttle);
                quotas::throttle(
                    &session.throttle,
                    &clock,
                    throttle,
                    version >= FETCH_BACKS_OFF_FROM,
                )
                .await;
                return reply;
            }
            // Long poll: wait for any partition's high watermark to move.
            let mut receivers: Vec<_> = wanted
                .iter()
                .filter_map(|t| t.part.as_ref().ok().map(|p| p.subscribe()))
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
            tokio::select! {
                _ = changed => {}
                () = clock.sleep_until(deadline) => {}
            }
        }
    }

    /// The Fetch response for what was read: every partition, or in an incremental session
    /// only those with news; grouped by topic as the request named them.
    fn fetch_response(
        &self,
        plan: &fetch_session::Plan,
        wanted: &[Target],
        answered: Vec<fetch_response::PartitionData>,
        version: i16,
        throttle: Duration,
    ) -> Reply {
        let answers: Vec<Answer> = answered
            .iter()
            .map(|pd| Answer {
                error: pd.error_code,
                records: pd.records.as_ref().is_some_and(|r| !r.is_empty()),
                high_watermark: pd.high_watermark,
                last_stable_offset: pd.last_stable_offset,
                log_start_offset: pd.log_start_offset,
            })
            .collect();
        let settled =
            self.fetch_sessions
                .finish(plan, &answers, now_ms(self.config.clock.as_ref()) as u64);
        self.metrics
            .fetch_sessions
            .store(self.fetch_sessions.len() as i64, Ordering::Relaxed);
        let (session_id, listed) = match settled {
            Ok(settled) => {
                if matches!(plan.context, fetch_session::Context::Incremental { .. }) {
                    self.metrics
                        .incremental_fetches
                        .fetch_add(1, Ordering::Relaxed);
                }
                settled
            }
            Err(code) => {
                return encode(
                    &FetchResponse::default()
                        .with_error_code(code.code())
                        .with_session_id(0),
                    version,
                );
            }
        };
        let mut topics: Vec<fetch_response::FetchableTopicResponse> = Vec::new();
        for ((((key, _), _), pd), Target { name, id, .. }) in plan
            .partitions
            .iter()
            .zip(answered)
            .zip(wanted)
            .zip(listed)
            .filter_map(|(entry, listed)| listed.then_some(entry))
        {
            match topics.last_mut() {
                Some(t) if same_topic(t, key) => t.partitions.push(pd),
                _ => {
                    // v13+ responses carry the id, earlier ones the name; an unknown id is
                    // answered with the id the client sent.
                    let mut t =
                        fetch_response::FetchableTopicResponse::default().with_partitions(vec![pd]);
                    match key {
                        TopicKey::Id(sent) => t.topic_id = *sent,
                        TopicKey::Name(_) => {
                            t.topic = TopicName(str_bytes(name));
                            t.topic_id = *id;
                        }
                    }
                    topics.push(t);
                }
            }
        }
        encode(
            &FetchResponse::default()
                .with_session_id(session_id)
                .with_responses(topics)
                .with_throttle_time_ms(throttle_time_ms(throttle)),
            version,
        )
    }
}

/// Whether a response topic is the one `key` names.
fn same_topic(t: &fetch_response::FetchableTopicResponse, key: &TopicKey) -> bool {
    match key {
        TopicKey::Id(id) => t.topic_id == *id,
        TopicKey::Name(name) => t.topic.0.as_str() == name,
    }
}
