//! The transaction requests: decoded bodies in, encoded responses out, the decisions left
//! to the [coordinator](super::TxnCoordinator) and the partitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, add_partitions_to_txn_request,
    add_partitions_to_txn_response, describe_producers_response, describe_transactions_response,
    list_transactions_response, txn_offset_commit_response,
};

use super::{TxnRecord, TxnState};
use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::groups::TxnOffset;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    /// The partitions of an AddPartitionsToTxn topic list, and the code each gets when the
    /// request cannot proceed because some partition is unknown (Kafka: the unknown ones
    /// UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED).
    fn txn_partitions(
        &self,
        topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    ) -> (Vec<(String, i32)>, Option<Vec<KafkaCode>>) {
        let mut all = Vec::new();
        let mut unknown = Vec::new();
        for t in topics {
            let count = self.topics().get(t.name.as_str()).map(|t| t.partitions);
            for &p in &t.partitions {
                all.push((t.name.to_string(), p));
                unknown.push(!count.is_some_and(|c| p >= 0 && p < c));
            }
        }
        let refusal = unknown.iter().any(|u| *u).then(|| {
            unknown
                .iter()
                .map(|&u| {
                    if u {
                        KafkaCode::UnknownTopicOrPartition
                    } else {
                        KafkaCode::OperationNotAttempted
                    }
                })
                .collect()
        });
        (all, refusal)
    }

    /// Per-topic results in the order the topics were asked for.
    fn txn_topic_results(
        topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
        codes: &[KafkaCode],
    ) -> Vec<add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
        let mut codes = codes.iter();
        topics
            .iter()
            .map(|t| {
                add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|&p| {
                                add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_partition_error_code(
                                        codes.next().copied().unwrap_or(KafkaCode::None).code(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    /// One transaction of an AddPartitionsToTxn request: a code per partition.
    async fn add_partitions_one(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        verify_only: bool,
        topics: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    ) -> Vec<KafkaCode> {
        let (partitions, refusal) = self.txn_partitions(topics);
        if transactional_id.is_empty() {
            return vec![KafkaCode::InvalidRequest; partitions.len()];
        }
        if let Some(codes) = refusal {
            return codes;
        }
        let outcome = if verify_only {
            self.txn()
                .verify_partitions(transactional_id, producer_id, epoch, &partitions)
                .await
        } else {
            self.txn()
                .add_partitions(transactional_id, producer_id, epoch, &partitions)
                .await
                .map(|()| vec![KafkaCode::None; partitions.len()])
        };
        outcome.unwrap_or_else(|code| vec![code; partitions.len()])
    }

    /// AddPartitionsToTxn: v0-3 from producers, v4+ batched (and `verify_only`) as brokers
    /// send it.
    pub(crate) async fn add_partitions_to_txn(
        self: Arc<Self>,
        req: AddPartitionsToTxnRequest,
        version: i16,
    ) -> Reply {
        let mut resp = AddPartitionsToTxnResponse::default();
        if version <= 3 {
            let codes = self
                .add_partitions_one(
                    req.v3_and_below_transactional_id.as_str(),
                    req.v3_and_below_producer_id.0,
                    req.v3_and_below_producer_epoch,
                    false,
                    &req.v3_and_below_topics,
                )
                .await;
            let codes: Vec<KafkaCode> = codes
                .into_iter()
                .map(|c| c.fenced_for(version, 2))
                .collect();
            resp.results_by_topic_v3_and_below =
                Self::txn_topic_results(&req.v3_and_below_topics, &codes);
            return encode(&resp, version);
        }
        for t in &req.transactions {
            let codes = self
                .add_partitions_one(
                    t.transactional_id.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    t.verify_only,
                    &t.topics,
                )
                .await;
            resp.results_by_transaction.push(
                add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(Self::txn_topic_results(&t.topics, &codes)),
            );
        }
        encode(&resp, version)
    }

    /// AddOffsetsToTxn.
    pub(crate) async fn add_offsets_to_txn(
        self: Arc<Self>,
        req: AddOffsetsToTxnRequest,
        version: i16,
    ) -> Reply {
        let code = if req.transactional_id.is_empty() || req.group_id.is_empty() {
            KafkaCode::InvalidRequest
        } else {
            match self
                .txn()
                .add_offsets(
                    req.transactional_id.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    req.group_id.as_str(),
                )
                .await
            {
                Ok(()) => KafkaCode::None,
                Err(code) => code,
            }
        };
        encode(
            &AddOffsetsToTxnResponse::default().with_error_code(code.fenced_for(version, 2).code()),
            version,
        )
    }

    /// EndTxn.
    pub(crate) async fn end_txn(self: Arc<Self>, req: EndTxnRequest, version: i16) -> Reply {
        let code = if req.transactional_id.is_empty() {
            KafkaCode::InvalidRequest
        } else {
            match self
                .txn()
                .end_txn(
                    &self,
                    req.transactional_id.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    req.committed,
                )
                .await
            {
                Ok(()) => KafkaCode::None,
                Err(code) => code,
            }
        };
        encode(
            &EndTxnResponse::default().with_error_code(code.fenced_for(version, 2).code()),
            version,
        )
    }

    /// TxnOffsetCommit: offsets committed inside a transaction, visible when it commits.
    pub(crate) async fn txn_offset_commit(
        self: Arc<Self>,
        session: &Session,
        req: TxnOffsetCommitRequest,
        version: i16,
    ) -> Reply {
        let group = req.group_id.to_string();
        // Partitions of unknown topics are refused one by one; the rest proceed.
        let mut codes: Vec<Vec<KafkaCode>> = Vec::new();
        let mut offsets = Vec::new();
        for t in &req.topics {
            let count = self.topics().get(t.name.as_str()).map(|t| t.partitions);
            // Kafka: READ on each topic (WRITE on the transactional id and READ on the group
            // are checked before the request gets here).
            let readable = self.allowed(
                session,
                Operation::Read,
                ResourceType::Topic,
                t.name.as_str(),
            );
            let mut topic_codes = Vec::new();
            for p in &t.partitions {
                if !readable {
                    topic_codes.push(KafkaCode::TopicAuthorizationFailed);
                    continue;
                }
                if !count.is_some_and(|c| p.partition_index >= 0 && p.partition_index < c) {
                    topic_codes.push(KafkaCode::UnknownTopicOrPartition);
                    continue;
                }
                if p.committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > crate::groups::MAX_OFFSET_METADATA_BYTES)
                {
                    topic_codes.push(KafkaCode::OffsetMetadataTooLarge);
                    continue;
                }
                topic_codes.push(KafkaCode::None);
                offsets.push(TxnOffset {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if version >= 2 {
                        p.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
            codes.push(topic_codes);
        }
        let verdict: Result<(), i16> = if req.transactional_id.is_empty() || group.is_empty() {
            Err(KafkaCode::InvalidRequest.code())
        } else if version >= 3 && req.generation_id >= 0 {
            // KIP-447: the member's generation is checked as for OffsetCommit.
            self.groups()
                .validate_member_commit(
                    &group,
                    req.generation_id,
                    req.member_id.as_str(),
                    req.group_instance_id.as_deref(),
                )
                .map_err(|e| e.code())
        } else {
            Ok(())
        };
        let verdict = match verdict {
            Ok(()) if offsets.is_empty() => Ok(()),
            Ok(()) => self
                .txn()
                .txn_offset_commit(
                    &self,
                    req.transactional_id.as_str(),
                    &group,
                    req.producer_id.0,
                    req.producer_epoch,
                    offsets,
                )
                .await
                .map_err(KafkaCode::code),
            Err(code) => Err(code),
        };
        let topics = req
            .topics
            .iter()
            .zip(codes)
            .map(|(t, codes)| {
                txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(codes)
                            .map(|(p, code)| {
                                let code = match (code, verdict) {
                                    (KafkaCode::None, Err(e)) => e,
                                    (code, _) => code.code(),
                                };
                                txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        encode(
            &TxnOffsetCommitResponse::default().with_topics(topics),
            version,
        )
    }

    /// DescribeTransactions (`kafka-transactions.sh describe`).
    pub(crate) async fn describe_transactions(
        self: Arc<Self>,
        session: &Session,
        req: DescribeTransactionsRequest,
        version: i16,
    ) -> Reply {
        let mut states = Vec::new();
        for id in req.transactional_ids {
            let mut s = describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone());
            // Kafka: DESCRIBE on the transactional id; its partitions of topics the
            // principal may not DESCRIBE are left out.
            if !self.allowed(
                session,
                Operation::Describe,
                ResourceType::TransactionalId,
                id.as_str(),
            ) {
                s.error_code = KafkaCode::TransactionalIdAuthorizationFailed.code();
                states.push(s);
                continue;
            }
            match self.txn().describe(id.as_str()).await {
                None => {
                    s.error_code = KafkaCode::TransactionalIdNotFound.code();
                }
                Some(r) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (t, p) in &r.partitions {
                        if self.allowed(session, Operation::Describe, ResourceType::Topic, t) {
                            topics.entry(t).or_default().push(*p);
                        }
                    }
                    s = s
                        .with_transaction_state(str_bytes(r.state.name()))
                        .with_transaction_timeout_ms(r.timeout_ms)
                        .with_transaction_start_time_ms(r.start_ms)
                        .with_producer_id(r.producer_id.into())
                        .with_producer_epoch(r.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(t, ps)| {
                                    describe_transactions_response::TopicData::default()
                                        .with_topic(TopicName(str_bytes(t)))
                                        .with_partitions(ps)
                                })
                                .collect(),
                        );
                }
            }
            states.push(s);
        }
        encode(
            &DescribeTransactionsResponse::default().with_transaction_states(states),
            version,
        )
    }

    /// ListTransactions (`kafka-transactions.sh list`, `find-hanging`).
    pub(crate) async fn list_transactions(
        self: Arc<Self>,
        session: &Session,
        req: ListTransactionsRequest,
        version: i16,
    ) -> Reply {
        let unknown: Vec<_> = req
            .state_filters
            .iter()
            .filter(|s| !TxnState::KAFKA_NAMES.contains(&s.as_str()))
            .cloned()
            .collect();
        let now = self.txn().now_ms();
        let duration = if version >= 1 {
            req.duration_filter
        } else {
            -1
        };
        let wanted = |r: &TxnRecord| {
            (req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == r.state.name()))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == r.producer_id))
                && (duration < 0 || now.saturating_sub(r.start_ms) >= duration)
        };
        let states = self
            .txn()
            .records()
            .await
            .into_iter()
            // Kafka lists only the transactional ids the principal may DESCRIBE.
            .filter(|r| {
                r.producer_epoch >= 0
                    && wanted(r)
                    && self.allowed(
                        session,
                        Operation::Describe,
                        ResourceType::TransactionalId,
                        &r.transactional_id,
                    )
            })
            .map(|r| {
                list_transactions_response::TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(&r.transactional_id)))
                    .with_producer_id(r.producer_id.into())
                    .with_transaction_state(str_bytes(r.state.name()))
            })
            .collect();
        encode(
            &ListTransactionsResponse::default()
                .with_unknown_state_filters(unknown)
                .with_transaction_states(states),
            version,
        )
    }

    /// DescribeProducers (`kafka-transactions.sh describe-producers`, `find-hanging`): the
    /// producers each partition holds state for, with their open transactions.
    pub(crate) async fn describe_producers(
        self: Arc<Self>,
        session: &Session,
        req: DescribeProducersRequest,
        version: i16,
    ) -> Reply {
        let mut topics = Vec::new();
        for t in req.topics {
            let topic = self.topics().get(t.name.as_str());
            // Kafka: READ on the topic.
            let readable = self.allowed(
                session,
                Operation::Read,
                ResourceType::Topic,
                t.name.as_str(),
            );
            let mut partitions = Vec::new();
            for index in t.partition_indexes {
                let mut r = describe_producers_response::PartitionResponse::default()
                    .with_partition_index(index);
                let part = match &topic {
                    _ if !readable => Err(KafkaCode::TopicAuthorizationFailed),
                    Some(topic) => self.partition(topic, index).await,
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                };
                match part {
                    Err(code) => r.error_code = code.code(),
                    Ok(p) => {
                        r.active_producers = p
                            .producers()
                            .await
                            .into_iter()
                            .map(|v| {
                                describe_producers_response::ProducerState::default()
                                    .with_producer_id(v.producer_id.into())
                                    .with_producer_epoch(i32::from(v.epoch))
                                    .with_last_sequence(v.last_sequence)
                                    .with_last_timestamp(v.last_timestamp)
                                    .with_coordinator_epoch(v.coordinator_epoch)
                                    .with_current_txn_start_offset(v.txn_start_offset)
                            })
                            .collect();
                    }
                }
                partitions.push(r);
            }
            topics.push(
                describe_producers_response::TopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        encode(
            &DescribeProducersResponse::default().with_topics(topics),
            version,
        )
    }
}
