//! Who may do what: the authorization hook of the broker's dispatch, the checks of the
//! group APIs (made around the group coordinator, which knows nothing of principals), and
//! the security APIs (ACLs, SCRAM credentials).
//!
//! The checks are those of Kafka 3.9's `KafkaApis`/`ControllerApis`:
//!
//! | API | checked | refused with |
//! |---|---|---|
//! | Produce | WRITE transactional id (when given), WRITE topic | `TRANSACTIONAL_ID_`/`TOPIC_AUTHORIZATION_FAILED` per partition |
//! | Fetch | READ topic | `TOPIC_AUTHORIZATION_FAILED` per partition |
//! | ListOffsets | DESCRIBE topic | `TOPIC_AUTHORIZATION_FAILED` per partition |
//! | Metadata | DESCRIBE topic; auto-creation: CREATE cluster or topic | unauthorized topics left out of "all topics", `TOPIC_AUTHORIZATION_FAILED` when named |
//! | CreateTopics | CREATE cluster or topic | `TOPIC_AUTHORIZATION_FAILED` per topic |
//! | DeleteTopics | DELETE topic | `TOPIC_AUTHORIZATION_FAILED` per topic |
//! | DescribeConfigs | DESCRIBE_CONFIGS topic / cluster | `TOPIC_`/`CLUSTER_AUTHORIZATION_FAILED` per resource |
//! | EndTxn | WRITE transactional id | `TRANSACTIONAL_ID_AUTHORIZATION_FAILED` |
//! | AddPartitionsToTxn v0-3 | WRITE transactional id, WRITE topic | `TRANSACTIONAL_ID_AUTHORIZATION_FAILED` everywhere, or `TOPIC_AUTHORIZATION_FAILED` for denied topics and `OPERATION_NOT_ATTEMPTED` for the rest |
//! | AddPartitionsToTxn v4+ | CLUSTER_ACTION cluster | `CLUSTER_AUTHORIZATION_FAILED` |
//! | TxnOffsetCommit | WRITE transactional id, READ group | `TRANSACTIONAL_ID_`/`GROUP_AUTHORIZATION_FAILED` per partition (READ on the topics is not checked yet) |
//! | DescribeProducers, DescribeTransactions, ListTransactions | not checked yet | |
//! | AddOffsetsToTxn | WRITE transactional id, READ group | `TRANSACTIONAL_ID_`/`GROUP_AUTHORIZATION_FAILED` |
//! | InitProducerId | transactional id: WRITE on it; else IDEMPOTENT_WRITE cluster or WRITE on some topic | `TRANSACTIONAL_ID_`/`CLUSTER_AUTHORIZATION_FAILED` |
//! | FindCoordinator | DESCRIBE group / transactional id | `GROUP_`/`TRANSACTIONAL_ID_AUTHORIZATION_FAILED` |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | READ group | `GROUP_AUTHORIZATION_FAILED` |
//! | ConsumerGroupHeartbeat | READ group, DESCRIBE every subscribed topic name | `GROUP_`/`TOPIC_AUTHORIZATION_FAILED` (topics matched by a regex are not filtered yet) |
//! | ConsumerGroupDescribe | DESCRIBE group | `GROUP_AUTHORIZATION_FAILED` per group |
//! | OffsetCommit | READ group, READ topic | `GROUP_AUTHORIZATION_FAILED` everywhere / `TOPIC_AUTHORIZATION_FAILED` per partition |
//! | OffsetFetch | DESCRIBE group, DESCRIBE topic | `GROUP_AUTHORIZATION_FAILED`; named topics `TOPIC_AUTHORIZATION_FAILED`, others left out |
//! | DescribeGroups | DESCRIBE group | `GROUP_AUTHORIZATION_FAILED` per group |
//! | ListGroups | DESCRIBE cluster, else DESCRIBE per group | unauthorized groups left out |
//! | DeleteGroups | DELETE group | `GROUP_AUTHORIZATION_FAILED` per group |
//! | OffsetDelete | DELETE group, READ topic | `GROUP_AUTHORIZATION_FAILED`; `TOPIC_AUTHORIZATION_FAILED` per partition |
//! | DescribeAcls, DescribeUserScramCredentials | DESCRIBE cluster | `CLUSTER_AUTHORIZATION_FAILED` |
//! | CreateAcls, DeleteAcls, AlterUserScramCredentials | ALTER cluster | `CLUSTER_AUTHORIZATION_FAILED` per entry |
//! | DescribeClientQuotas | DESCRIBE_CONFIGS cluster | `CLUSTER_AUTHORIZATION_FAILED` |
//! | AlterClientQuotas | ALTER_CONFIGS cluster | `CLUSTER_AUTHORIZATION_FAILED` per entry |
//!
//! Without an authorizer everything is allowed and the ACL APIs answer `SECURITY_DISABLED`.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeAclsRequest, DescribeAclsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, EndTxnResponse, FindCoordinatorResponse,
    HeartbeatResponse, InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupResponse, alter_user_scram_credentials_response,
    create_acls_response, delete_acls_response, delete_groups_response, describe_acls_response,
    describe_groups_response, describe_user_scram_credentials_response, offset_commit_response,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnResponse, OffsetDeleteRequest, OffsetDeleteResponse, TxnOffsetCommitResponse,
    add_partitions_to_txn_response, offset_delete_response, txn_offset_commit_response,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse,
    consumer_group_describe_response,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::codec::Body;
use crate::error::KafkaCode;
use crate::security::Session;
use crate::security::acl::{AclBinding, AclFilter, CLUSTER_NAME, Operation, ResourceType};
use crate::security::scram::{MAX_ITERATIONS, MIN_ITERATIONS, ScramCredential, ScramMechanism};

/// What Kafka answers when authorization fails for the cluster.
const CLUSTER_DENIED: &str = "Cluster authorization failed.";

impl Broker {
    /// Whether the session may perform `op` on the resource (always, without an
    /// authorizer).
    pub(crate) fn allowed(
        &self,
        session: &Session,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.authorizer()
            .is_none_or(|a| a.authorize(&session.principal, &session.host, op, resource_type, name))
    }

    /// The authorized-operations bit field of a resource (every operation of its type
    /// without an authorizer).
    pub(crate) fn authorized_operations(
        &self,
        session: &Session,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        match self.authorizer() {
            Some(a) => {
                a.authorized_operations(&session.principal, &session.host, resource_type, name)
            }
            None => resource_type
                .operations()
                .iter()
                .fold(0, |bits, op| bits | (1 << (*op as i8))),
        }
    }

    /// The authorization hook of the dispatch: a request refused as a whole is answered
    /// here; `None` lets it through (per-resource checks happen in its handler).
    pub(crate) fn refuse(&self, session: &Session, body: &Body, version: i16) -> Option<Reply> {
        let group_denied =
            |group: &str| !self.allowed(session, Operation::Read, ResourceType::Group, group);
        let code = KafkaCode::GroupAuthorizationFailed.code();
        // The transaction APIs need WRITE on the transactional id first.
        let txn_denied =
            |id: &str| !self.allowed(session, Operation::Write, ResourceType::TransactionalId, id);
        let txn_code = KafkaCode::TransactionalIdAuthorizationFailed.code();
        match body {
            Body::JoinGroup(r) if group_denied(r.group_id.as_str()) => {
                let mut resp = JoinGroupResponse::default().with_error_code(code);
                if version >= 7 {
                    resp.protocol_name = None;
                }
                Some(encode(&resp, version))
            }
            Body::SyncGroup(r) if group_denied(r.group_id.as_str()) => Some(encode(
                &SyncGroupResponse::default().with_error_code(code),
                version,
            )),
            Body::Heartbeat(r) if group_denied(r.group_id.as_str()) => Some(encode(
                &HeartbeatResponse::default().with_error_code(code),
                version,
            )),
            Body::LeaveGroup(r) if group_denied(r.group_id.as_str()) => Some(encode(
                &LeaveGroupResponse::default().with_error_code(code),
                version,
            )),
            Body::ConsumerGroupHeartbeat(r) => {
                let refused = if group_denied(r.group_id.as_str()) {
                    Some((code, "The principal is not authorized to access the group."))
                } else if r.subscribed_topic_names.as_ref().is_some_and(|names| {
                    names.iter().any(|t| {
                        !self.allowed(session, Operation::Describe, ResourceType::Topic, t)
                    })
                }) {
                    Some((
                        KafkaCode::TopicAuthorizationFailed.code(),
                        "The principal is not authorized to describe every subscribed topic.",
                    ))
                } else {
                    None
                };
                refused.map(|(code, message)| {
                    encode(
                        &ConsumerGroupHeartbeatResponse::default()
                            .with_error_code(code)
                            .with_error_message(Some(str_bytes(message)))
                            .with_member_id(None),
                        version,
                    )
                })
            }
            Body::InitProducerId(r) => {
                let denied = match r.transactional_id.as_ref().map(|t| t.as_str()) {
                    Some(t) if !t.is_empty() => {
                        (!self.allowed(session, Operation::Write, ResourceType::TransactionalId, t))
                            .then_some(KafkaCode::TransactionalIdAuthorizationFailed)
                    }
                    _ => {
                        let idempotent = self.allowed(
                            session,
                            Operation::IdempotentWrite,
                            ResourceType::Cluster,
                            CLUSTER_NAME,
                        ) || self.authorizer().is_none_or(|a| {
                            a.authorize_any(
                                &session.principal,
                                &session.host,
                                Operation::Write,
                                ResourceType::Topic,
                            )
                        });
                        (!idempotent).then_some(KafkaCode::ClusterAuthorizationFailed)
                    }
                };
                denied.map(|code| {
                    encode(
                        &InitProducerIdResponse::default()
                            .with_error_code(code.code())
                            .with_producer_id((-1).into())
                            .with_producer_epoch(-1),
                        version,
                    )
                })
            }
            Body::AddPartitionsToTxn(r) if version <= 3 => {
                let txn = txn_denied(r.v3_and_below_transactional_id.as_str());
                let topic_denied =
                    |t: &str| !self.allowed(session, Operation::Write, ResourceType::Topic, t);
                if !txn
                    && !r
                        .v3_and_below_topics
                        .iter()
                        .any(|t| topic_denied(t.name.as_str()))
                {
                    return None;
                }
                // Kafka: every partition refused for the transactional id; else the
                // unauthorized topics' partitions refused and the others not attempted.
                let results = r
                    .v3_and_below_topics
                    .iter()
                    .map(|t| {
                        let code = if txn {
                            KafkaCode::TransactionalIdAuthorizationFailed
                        } else if topic_denied(t.name.as_str()) {
                            KafkaCode::TopicAuthorizationFailed
                        } else {
                            KafkaCode::OperationNotAttempted
                        };
                        add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                            .with_name(t.name.clone())
                            .with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_partition_error_code(code.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Some(encode(
                    &AddPartitionsToTxnResponse::default()
                        .with_results_by_topic_v3_and_below(results),
                    version,
                ))
            }
            // v4+ is what brokers send one another (verification): CLUSTER_ACTION.
            Body::AddPartitionsToTxn(_)
                if !self.allowed(
                    session,
                    Operation::ClusterAction,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                ) =>
            {
                Some(encode(
                    &AddPartitionsToTxnResponse::default()
                        .with_error_code(KafkaCode::ClusterAuthorizationFailed.code()),
                    version,
                ))
            }
            Body::TxnOffsetCommit(r) => {
                let code = if txn_denied(r.transactional_id.as_str()) {
                    KafkaCode::TransactionalIdAuthorizationFailed
                } else if group_denied(r.group_id.as_str()) {
                    KafkaCode::GroupAuthorizationFailed
                } else {
                    return None;
                };
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code.code())
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Some(encode(
                    &TxnOffsetCommitResponse::default().with_topics(topics),
                    version,
                ))
            }
            Body::EndTxn(r) if txn_denied(r.transactional_id.as_str()) => Some(encode(
                &EndTxnResponse::default().with_error_code(txn_code),
                version,
            )),
            Body::AddOffsetsToTxn(r) => {
                let code = if txn_denied(r.transactional_id.as_str()) {
                    txn_code
                } else if group_denied(r.group_id.as_str()) {
                    KafkaCode::GroupAuthorizationFailed.code()
                } else {
                    return None;
                };
                Some(encode(
                    &AddOffsetsToTxnResponse::default().with_error_code(code),
                    version,
                ))
            }
            _ => None,
        }
    }

    /// FindCoordinator's answer with the keys the session may not describe refused.
    pub(crate) fn filter_coordinators(
        &self,
        session: &Session,
        key_type: i8,
        single_key: &str,
        mut resp: FindCoordinatorResponse,
        version: i16,
    ) -> FindCoordinatorResponse {
        let (rt, code) = if key_type == 1 {
            (
                ResourceType::TransactionalId,
                KafkaCode::TransactionalIdAuthorizationFailed,
            )
        } else {
            (ResourceType::Group, KafkaCode::GroupAuthorizationFailed)
        };
        let denied = |key: &str| !self.allowed(session, Operation::Describe, rt, key);
        if version >= 4 {
            for c in &mut resp.coordinators {
                if denied(c.key.as_str()) {
                    c.error_code = code.code();
                    c.error_message = None;
                    c.node_id = (-1).into();
                    c.host = StrBytes::default();
                    c.port = -1;
                }
            }
        } else if denied(single_key) {
            resp = FindCoordinatorResponse::default()
                .with_error_code(code.code())
                .with_node_id((-1).into())
                .with_port(-1);
        }
        resp
    }

    /// OffsetCommit: READ on the group, READ on each topic.
    pub(crate) async fn authorized_offset_commit(
        &self,
        session: &Session,
        mut req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let error_topic =
            |t: &kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic,
             code: KafkaCode| {
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    )
            };
        if !self.allowed(
            session,
            Operation::Read,
            ResourceType::Group,
            req.group_id.as_str(),
        ) {
            return OffsetCommitResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| error_topic(t, KafkaCode::GroupAuthorizationFailed))
                    .collect(),
            );
        }
        let (allowed, denied): (Vec<_>, Vec<_>) =
            std::mem::take(&mut req.topics).into_iter().partition(|t| {
                self.allowed(
                    session,
                    Operation::Read,
                    ResourceType::Topic,
                    t.name.as_str(),
                )
            });
        req.topics = allowed;
        let mut resp = self.groups().offset_commit(req, version, self).await;
        resp.topics.extend(
            denied
                .iter()
                .map(|t| error_topic(t, KafkaCode::TopicAuthorizationFailed)),
        );
        resp
    }

    /// OffsetFetch: DESCRIBE on each group, DESCRIBE on each topic.
    pub(crate) async fn authorized_offset_fetch(
        &self,
        session: &Session,
        req: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        let group_ok = |g: &str| self.allowed(session, Operation::Describe, ResourceType::Group, g);
        let topic_ok = |t: &str| self.allowed(session, Operation::Describe, ResourceType::Topic, t);
        if version < 8 {
            if !group_ok(req.group_id.as_str()) {
                return OffsetFetchResponse::default()
                    .with_error_code(KafkaCode::GroupAuthorizationFailed.code());
            }
            let named = req.topics.is_some();
            let mut resp = self.groups().offset_fetch(req, version, self).await;
            if named {
                for t in &mut resp.topics {
                    if !topic_ok(t.name.as_str()) {
                        for p in &mut t.partitions {
                            p.error_code = KafkaCode::TopicAuthorizationFailed.code();
                            p.committed_offset = -1;
                            p.metadata = Some(StrBytes::default());
                        }
                    }
                }
            } else {
                resp.topics.retain(|t| topic_ok(t.name.as_str()));
            }
            return resp;
        }
        let named: HashSet<String> = req
            .groups
            .iter()
            .filter(|g| g.topics.is_some())
            .map(|g| g.group_id.as_str().to_string())
            .collect();
        let denied: Vec<_> = req
            .groups
            .iter()
            .filter(|g| !group_ok(g.group_id.as_str()))
            .map(|g| g.group_id.clone())
            .collect();
        let mut req = req;
        req.groups.retain(|g| !denied.contains(&g.group_id));
        let mut resp = self.groups().offset_fetch(req, version, self).await;
        for g in &mut resp.groups {
            if named.contains(g.group_id.as_str()) {
                for t in &mut g.topics {
                    if !topic_ok(t.name.as_str()) {
                        for p in &mut t.partitions {
                            p.error_code = KafkaCode::TopicAuthorizationFailed.code();
                            p.committed_offset = -1;
                            p.metadata = Some(StrBytes::default());
                        }
                    }
                }
            } else {
                g.topics.retain(|t| topic_ok(t.name.as_str()));
            }
        }
        for id in denied {
            resp.groups.push(
                kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup::default(
                )
                .with_group_id(id)
                .with_error_code(KafkaCode::GroupAuthorizationFailed.code()),
            );
        }
        resp
    }

    /// DescribeGroups: DESCRIBE on each group; authorized operations when asked for.
    pub(crate) async fn authorized_describe_groups(
        &self,
        session: &Session,
        mut req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let include_ops = version >= 3 && req.include_authorized_operations;
        let (allowed, denied): (Vec<_>, Vec<_>) =
            std::mem::take(&mut req.groups).into_iter().partition(|g| {
                self.allowed(
                    session,
                    Operation::Describe,
                    ResourceType::Group,
                    g.as_str(),
                )
            });
        req.groups = allowed;
        let mut resp = if req.groups.is_empty() {
            DescribeGroupsResponse::default()
        } else {
            self.groups().describe_groups(req, version).await
        };
        for g in &mut resp.groups {
            g.authorized_operations = if include_ops {
                self.authorized_operations(session, ResourceType::Group, g.group_id.as_str())
            } else {
                i32::MIN
            };
        }
        for id in denied {
            resp.groups.push(
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(KafkaCode::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN),
            );
        }
        resp
    }

    /// ConsumerGroupDescribe: DESCRIBE on each group (else GROUP_AUTHORIZATION_FAILED for
    /// it); the authorized operations when asked.
    pub(crate) async fn authorized_consumer_group_describe(
        &self,
        session: &Session,
        mut req: ConsumerGroupDescribeRequest,
        version: i16,
    ) -> ConsumerGroupDescribeResponse {
        let include_ops = req.include_authorized_operations;
        let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.group_ids)
            .into_iter()
            .partition(|g| {
                self.allowed(
                    session,
                    Operation::Describe,
                    ResourceType::Group,
                    g.as_str(),
                )
            });
        req.group_ids = allowed;
        let topics = self.topic_infos();
        let mut resp = self
            .groups()
            .consumer_group_describe(req, version, &topics)
            .await;
        for g in &mut resp.groups {
            g.authorized_operations = if include_ops && g.error_code == 0 {
                self.authorized_operations(session, ResourceType::Group, g.group_id.as_str())
            } else {
                i32::MIN
            };
        }
        for id in denied {
            resp.groups.push(
                consumer_group_describe_response::DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(KafkaCode::GroupAuthorizationFailed.code())
                    .with_authorized_operations(i32::MIN),
            );
        }
        resp
    }

    /// ListGroups: every group with DESCRIBE on the cluster, else those the session may
    /// describe.
    pub(crate) fn filter_groups(
        &self,
        session: &Session,
        mut resp: ListGroupsResponse,
    ) -> ListGroupsResponse {
        if !self.allowed(
            session,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            resp.groups.retain(|g| {
                self.allowed(
                    session,
                    Operation::Describe,
                    ResourceType::Group,
                    g.group_id.as_str(),
                )
            });
        }
        resp
    }

    /// OffsetDelete: DELETE on the group (else GROUP_AUTHORIZATION_FAILED for the request),
    /// READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its partitions).
    pub(crate) async fn authorized_offset_delete(
        &self,
        session: &Session,
        mut req: OffsetDeleteRequest,
        version: i16,
    ) -> OffsetDeleteResponse {
        if !self.allowed(
            session,
            Operation::Delete,
            ResourceType::Group,
            req.group_id.as_str(),
        ) {
            return OffsetDeleteResponse::default()
                .with_error_code(KafkaCode::GroupAuthorizationFailed.code());
        }
        let (allowed, denied): (Vec<_>, Vec<_>) =
            std::mem::take(&mut req.topics).into_iter().partition(|t| {
                self.allowed(
                    session,
                    Operation::Read,
                    ResourceType::Topic,
                    t.name.as_str(),
                )
            });
        req.topics = allowed;
        let mut resp = self.groups().offset_delete(req, version, self).await;
        if resp.error_code == 0 {
            for t in denied {
                resp.topics.push(
                    offset_delete_response::OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    offset_delete_response::OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(KafkaCode::TopicAuthorizationFailed.code())
                                })
                                .collect(),
                        ),
                );
            }
        }
        resp
    }

    /// DeleteGroups: DELETE on each group.
    pub(crate) async fn authorized_delete_groups(
        &self,
        session: &Session,
        mut req: DeleteGroupsRequest,
        version: i16,
    ) -> DeleteGroupsResponse {
        let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.groups_names)
            .into_iter()
            .partition(|g| {
                self.allowed(session, Operation::Delete, ResourceType::Group, g.as_str())
            });
        req.groups_names = allowed;
        let mut resp = if req.groups_names.is_empty() {
            DeleteGroupsResponse::default()
        } else {
            self.groups().delete_groups(req, version).await
        };
        for id in denied {
            resp.results.push(
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(KafkaCode::GroupAuthorizationFailed.code()),
            );
        }
        resp
    }

    // ------------------------------------------------------------ ACL APIs

    pub(crate) fn describe_acls(
        &self,
        session: &Session,
        req: DescribeAclsRequest,
        version: i16,
    ) -> Reply {
        let Some(authorizer) = self.authorizer() else {
            return encode(
                &DescribeAclsResponse::default()
                    .with_error_code(KafkaCode::SecurityDisabled.code())
                    .with_error_message(Some(str_bytes(
                        "No Authorizer is configured on the broker",
                    ))),
                version,
            );
        };
        if !self.allowed(
            session,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            return encode(
                &DescribeAclsResponse::default()
                    .with_error_code(KafkaCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(CLUSTER_DENIED))),
                version,
            );
        }
        let filter = AclFilter {
            resource_type: req.resource_type_filter,
            resource_name: req.resource_name_filter.map(|s| s.as_str().to_string()),
            pattern_type: req.pattern_type_filter,
            principal: req.principal_filter.map(|s| s.as_str().to_string()),
            host: req.host_filter.map(|s| s.as_str().to_string()),
            operation: req.operation,
            permission: req.permission_type,
        };
        if let Err(msg) = filter.validate() {
            return encode(
                &DescribeAclsResponse::default()
                    .with_error_code(KafkaCode::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&msg))),
                version,
            );
        }
        let mut resources: BTreeMap<(i8, String, i8), Vec<describe_acls_response::AclDescription>> =
            BTreeMap::new();
        for b in authorizer.describe(&filter) {
            resources
                .entry((b.resource_type, b.resource_name.clone(), b.pattern_type))
                .or_default()
                .push(
                    describe_acls_response::AclDescription::default()
                        .with_principal(str_bytes(&b.principal))
                        .with_host(str_bytes(&b.host))
                        .with_operation(b.operation)
                        .with_permission_type(b.permission),
                );
        }
        let resources = resources
            .into_iter()
            .map(|((rt, name, pt), acls)| {
                describe_acls_response::DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(str_bytes(&name))
                    .with_pattern_type(pt)
                    .with_acls(acls)
            })
            .collect();
        encode(
            &DescribeAclsResponse::default().with_resources(resources),
            version,
        )
    }

    pub(crate) async fn create_acls(
        &self,
        session: &Session,
        req: CreateAclsRequest,
        version: i16,
    ) -> Reply {
        let result = |code: KafkaCode, msg: Option<&str>| {
            create_acls_response::AclCreationResult::default()
                .with_error_code(code.code())
                .with_error_message(msg.map(str_bytes))
        };
        let Some(authorizer) = self.authorizer() else {
            let results = req
                .creations
                .iter()
                .map(|_| {
                    result(
                        KafkaCode::SecurityDisabled,
                        Some("No Authorizer is configured."),
                    )
                })
                .collect();
            return encode(
                &CreateAclsResponse::default().with_results(results),
                version,
            );
        };
        let cluster_ok = self.allowed(
            session,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        let mut results = Vec::new();
        for c in req.creations {
            if !cluster_ok {
                results.push(result(
                    KafkaCode::ClusterAuthorizationFailed,
                    Some(CLUSTER_DENIED),
                ));
                continue;
            }
            let binding = AclBinding {
                resource_type: c.resource_type,
                resource_name: c.resource_name.as_str().to_string(),
                pattern_type: if version >= 1 {
                    c.resource_pattern_type
                } else {
                    3
                },
                principal: c.principal.as_str().to_string(),
                host: c.host.as_str().to_string(),
                operation: c.operation,
                permission: c.permission_type,
            };
            if let Err(msg) = binding.validate() {
                results.push(result(KafkaCode::InvalidRequest, Some(&msg)));
                continue;
            }
            match authorizer.create(binding).await {
                Ok(()) => results.push(result(KafkaCode::None, None)),
                Err(e) => results.push(result(KafkaCode::UnknownServerError, Some(&e.to_string()))),
            }
        }
        encode(
            &CreateAclsResponse::default().with_results(results),
            version,
        )
    }

    pub(crate) async fn delete_acls(
        &self,
        session: &Session,
        req: DeleteAclsRequest,
        version: i16,
    ) -> Reply {
        let failed = |code: KafkaCode, msg: &str| {
            delete_acls_response::DeleteAclsFilterResult::default()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(msg)))
        };
        let Some(authorizer) = self.authorizer() else {
            let results = req
                .filters
                .iter()
                .map(|_| failed(KafkaCode::SecurityDisabled, "No Authorizer is configured."))
                .collect();
            return encode(
                &DeleteAclsResponse::default().with_filter_results(results),
                version,
            );
        };
        let cluster_ok = self.allowed(
            session,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        let mut results = Vec::new();
        for f in req.filters {
            if !cluster_ok {
                results.push(failed(
                    KafkaCode::ClusterAuthorizationFailed,
                    CLUSTER_DENIED,
                ));
                continue;
            }
            let filter = AclFilter {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.map(|s| s.as_str().to_string()),
                pattern_type: if version >= 1 {
                    f.pattern_type_filter
                } else {
                    3
                },
                principal: f.principal_filter.map(|s| s.as_str().to_string()),
                host: f.host_filter.map(|s| s.as_str().to_string()),
                operation: f.operation,
                permission: f.permission_type,
            };
            if let Err(msg) = filter.validate() {
                results.push(failed(KafkaCode::InvalidRequest, &msg));
                continue;
            }
            match authorizer.delete(&filter).await {
                Ok(deleted) => results.push(
                    delete_acls_response::DeleteAclsFilterResult::default().with_matching_acls(
                        deleted
                            .into_iter()
                            .map(|b| {
                                delete_acls_response::DeleteAclsMatchingAcl::default()
                                    .with_resource_type(b.resource_type)
                                    .with_resource_name(str_bytes(&b.resource_name))
                                    .with_pattern_type(b.pattern_type)
                                    .with_principal(str_bytes(&b.principal))
                                    .with_host(str_bytes(&b.host))
                                    .with_operation(b.operation)
                                    .with_permission_type(b.permission)
                            })
                            .collect(),
                    ),
                ),
                Err(e) => results.push(failed(KafkaCode::UnknownServerError, &e.to_string())),
            }
        }
        encode(
            &DeleteAclsResponse::default().with_filter_results(results),
            version,
        )
    }

    // ------------------------------------------------------------ SCRAM credential APIs

    pub(crate) async fn describe_scram_credentials(
        &self,
        session: &Session,
        req: DescribeUserScramCredentialsRequest,
        version: i16,
    ) -> Reply {
        if !self.allowed(
            session,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            return encode(
                &DescribeUserScramCredentialsResponse::default()
                    .with_error_code(KafkaCode::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(CLUSTER_DENIED))),
                version,
            );
        }
        let stored = self.credentials().list().await?;
        let result =
            describe_user_scram_credentials_response::DescribeUserScramCredentialsResult::default;
        let infos = |mechs: &Vec<(ScramMechanism, i32)>| {
            mechs
                .iter()
                .map(|(m, i)| {
                    describe_user_scram_credentials_response::CredentialInfo::default()
                        .with_mechanism(m.code())
                        .with_iterations(*i)
                })
                .collect::<Vec<_>>()
        };
        let mut results = Vec::new();
        match req.users.filter(|u| !u.is_empty()) {
            None => {
                for (user, mechs) in &stored {
                    results.push(
                        result()
                            .with_user(str_bytes(user))
                            .with_credential_infos(infos(mechs)),
                    );
                }
            }
            Some(users) => {
                let mut seen: Vec<(String, bool)> = Vec::new();
                for u in users {
                    let name = u.name.as_str().to_string();
                    match seen.iter_mut().find(|(n, _)| *n == name) {
                        Some(entry) => entry.1 = true,
                        None => seen.push((name, false)),
                    }
                }
                for (user, duplicate) in seen {
                    let r = result().with_user(str_bytes(&user));
                    results.push(if duplicate {
                        r.with_error_code(KafkaCode::DuplicateResource.code()).with_error_message(Some(
                            str_bytes(&format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                            )),
                        ))
                    } else if let Some(mechs) = stored.get(&user) {
                        r.with_credential_infos(infos(mechs))
                    } else {
                        r.with_error_code(KafkaCode::ResourceNotFound.code()).with_error_message(Some(
                            str_bytes(&format!(
                                "Attempt to describe a user credential that does not exist: {user}"
                            )),
                        ))
                    });
                }
            }
        }
        encode(
            &DescribeUserScramCredentialsResponse::default().with_results(results),
            version,
        )
    }

    pub(crate) async fn alter_scram_credentials(
        &self,
        session: &Session,
        req: AlterUserScramCredentialsRequest,
        version: i16,
    ) -> Reply {
        let result = |user: &str, code: KafkaCode, msg: Option<&str>| {
            alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                .with_user(str_bytes(user))
                .with_error_code(code.code())
                .with_error_message(msg.map(str_bytes))
        };
        if !self.allowed(
            session,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            let mut users: Vec<String> = Vec::new();
            for name in req
                .deletions
                .iter()
                .map(|d| &d.name)
                .chain(req.upsertions.iter().map(|u| &u.name))
            {
                if !users.iter().any(|u| u == name.as_str()) {
                    users.push(name.as_str().to_string());
                }
            }
            let results = users
                .iter()
                .map(|u| {
                    result(
                        u,
                        KafkaCode::ClusterAuthorizationFailed,
                        Some(CLUSTER_DENIED),
                    )
                })
                .collect();
            return encode(
                &AlterUserScramCredentialsResponse::default().with_results(results),
                version,
            );
        }
        let check_user_mechanism =
            |name: &str, mechanism: i8| -> Result<ScramMechanism, (KafkaCode, String)> {
                if name.is_empty() {
                    return Err((
                        KafkaCode::UnacceptableCredential,
                        "Username must not be empty".into(),
                    ));
                }
                ScramMechanism::from_code(mechanism).ok_or((
                    KafkaCode::UnsupportedSaslMechanism,
                    "Unknown SCRAM mechanism".into(),
                ))
            };
        // Kafka's controller: a user altered twice is refused; errors are reported after
        // the successful deletions and upsertions.
        let mut errors: Vec<(String, KafkaCode, String)> = Vec::new();
        let mut deletions: Vec<(String, ScramMechanism)> = Vec::new();
        let mut upserts: Vec<(String, ScramMechanism, ScramCredential)> = Vec::new();
        let dup = |errors: &mut Vec<(String, KafkaCode, String)>, name: &str| {
            errors.push((
                name.to_string(),
                KafkaCode::DuplicateResource,
                "A user credential cannot be altered twice in the same request".into(),
            ));
        };
        for d in &req.deletions {
            let name = d.name.as_str();
            if errors.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            if let Some(i) = deletions.iter().position(|(n, _)| n == name) {
                deletions.remove(i);
                dup(&mut errors, name);
                continue;
            }
            match check_user_mechanism(name, d.mechanism) {
                Err((code, msg)) => errors.push((name.into(), code, msg)),
                Ok(m) => {
                    if self.credentials().get(name, m).await?.is_none() {
                        errors.push((
                            name.into(),
                            KafkaCode::ResourceNotFound,
                            "Attempt to delete a user credential that does not exist".into(),
                        ));
                    } else {
                        deletions.push((name.into(), m));
                    }
                }
            }
        }
        for u in &req.upsertions {
            let name = u.name.as_str();
            if errors.iter().any(|(n, _, _)| n == name) {
                continue;
            }
            let in_deletions = deletions.iter().position(|(n, _)| n == name);
            let in_upserts = upserts.iter().position(|(n, _, _)| n == name);
            if in_deletions.is_some() || in_upserts.is_some() {
                if let Some(i) = in_deletions {
                    deletions.remove(i);
                }
                if let Some(i) = in_upserts {
                    upserts.remove(i);
                }
                dup(&mut errors, name);
                continue;
            }
            match check_user_mechanism(name, u.mechanism) {
                Err((code, msg)) => errors.push((name.into(), code, msg)),
                Ok(_) if u.iterations < MIN_ITERATIONS => errors.push((
                    name.into(),
                    KafkaCode::UnacceptableCredential,
                    "Too few iterations".into(),
                )),
                Ok(_) if u.iterations > MAX_ITERATIONS => errors.push((
                    name.into(),
                    KafkaCode::UnacceptableCredential,
                    "Too many iterations".into(),
                )),
                Ok(_) if u.salt.is_empty() || u.salted_password.is_empty() => errors.push((
                    name.into(),
                    KafkaCode::UnacceptableCredential,
                    "The salt and the salted password must not be empty".into(),
                )),
                Ok(m) => upserts.push((
                    name.into(),
                    m,
                    ScramCredential::from_salted_password(
                        m,
                        &u.salt,
                        &u.salted_password,
                        u.iterations,
                    ),
                )),
            }
        }
        let mut results = Vec::new();
        for (name, m) in deletions {
            self.credentials().delete(&name, m).await?;
            results.push(result(&name, KafkaCode::None, None));
        }
        for (name, m, credential) in upserts {
            self.credentials().put(&name, m, credential).await?;
            results.push(result(&name, KafkaCode::None, None));
        }
        for (name, code, msg) in errors {
            results.push(result(&name, code, Some(&msg)));
        }
        encode(
            &AlterUserScramCredentialsResponse::default().with_results(results),
            version,
        )
    }
}
