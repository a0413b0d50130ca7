//! Metadata: brokers, topics (auto-creating them when allowed) and authorized operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, TopicName, metadata_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};
use crate::topics::{Topic, valid_topic_name};

impl Broker {
    /// This broker as the listener the session connected through advertises it.
    pub(crate) fn broker_entry(
        &self,
        session: &Session,
    ) -> metadata_response::MetadataResponseBroker {
        metadata_response::MetadataResponseBroker::default()
            .with_node_id(BrokerId(self.config.node_id))
            .with_host(str_bytes(&session.advertised_host))
            .with_port(session.advertised_port)
    }

    pub(crate) fn topic_entry(&self, topic: &Topic) -> metadata_response::MetadataResponseTopic {
        let node = BrokerId(self.config.node_id);
        let partitions = (0..topic.partitions)
            .map(|i| {
                metadata_response::MetadataResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
            })
            .collect();
        metadata_response::MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(&topic.name))))
            .with_topic_id(topic.id)
            .with_is_internal(is_internal(&topic.name))
            .with_partitions(partitions)
    }

    pub(crate) async fn metadata(
        self: Arc<Self>,
        session: &Session,
        req: MetadataRequest,
        version: i16,
    ) -> Reply {
        let described =
            |name: &str| self.allowed(session, Operation::Describe, ResourceType::Topic, name);
        let denied = |name: &str| {
            metadata_response::MetadataResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_error_code(KafkaCode::TopicAuthorizationFailed.code())
        };
        // v0: an empty list means all topics; v1+: null means all, empty means none.
        let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
            None => None,
            Some(list) if list.is_empty() && version == 0 => None,
            Some(list) => Some(
                list.into_iter()
                    .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                    .collect(),
            ),
        };
        let auto_create =
            self.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        let mut topics = Vec::new();
        match requested {
            None => {
                for t in self.topics.all() {
                    if described(&t.name) {
                        topics.push(self.topic_entry(&t));
                    }
                }
            }
            Some(list) => {
                for (name, id) in list {
                    let Some(name) = name else {
                        // By topic id (v10+).
                        let found = self.topics.all().into_iter().find(|t| t.id == id);
                        topics.push(match found {
                            Some(t) if !described(&t.name) => {
                                metadata_response::MetadataResponseTopic::default()
                                    .with_topic_id(id)
                                    .with_error_code(KafkaCode::TopicAuthorizationFailed.code())
                            }
                            Some(t) => self.topic_entry(&t),
                            None => metadata_response::MetadataResponseTopic::default()
                                .with_topic_id(id)
                                .with_error_code(KafkaCode::UnknownTopicId.code()),
                        });
                        continue;
                    };
                    let may_create = || {
                        self.allowed(
                            session,
                            Operation::Create,
                            ResourceType::Cluster,
                            CLUSTER_NAME,
                        ) || self.allowed(session, Operation::Create, ResourceType::Topic, &name)
                    };
                    if is_internal(&name) && described(&name) {
                        // Asked for by name (a consumer of it): made with its own settings,
                        // as Kafka's broker makes it.
                        if let Err(e) = self.groups().ensure_log().await {
                            tracing::warn!(error = %e, "could not create the offsets topic");
                        }
                    }
                    let entry = if !described(&name) {
                        denied(&name)
                    } else if let Some(t) = self.topics.get(&name) {
                        self.topic_entry(&t)
                    } else if is_internal(&name) {
                        // Never auto-created as an ordinary topic.
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code())
                    } else if !valid_topic_name(&name) {
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::InvalidTopicException.code())
                    } else if self.topics.unservable(&name).is_some() {
                        // Stored but not served (see `Topic::unservable`); never re-created.
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code())
                    } else if auto_create && !may_create() {
                        denied(&name)
                    } else if auto_create {
                        let partitions = self.config.topic_defaults.partitions;
                        match self
                            .create_topic(&name, partitions, BTreeMap::new())
                            .await?
                        {
                            Ok(t) => self.topic_entry(&t),
                            Err(_) => match self.topics.get(&name) {
                                Some(t) => self.topic_entry(&t),
                                None => metadata_response::MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(str_bytes(&name))))
                                    .with_error_code(KafkaCode::UnknownTopicOrPartition.code()),
                            },
                        }
                    } else {
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code())
                    };
                    topics.push(entry);
                }
            }
        }
        if version >= 8 {
            for t in &mut topics {
                t.topic_authorized_operations = match &t.name {
                    Some(n) if req.include_topic_authorized_operations => {
                        self.authorized_operations(session, ResourceType::Topic, n.as_str())
                    }
                    _ => i32::MIN,
                };
            }
        }
        let mut resp = MetadataResponse::default()
            .with_brokers(vec![self.broker_entry(session)])
            .with_cluster_id(Some(str_bytes(&self.cluster_id)))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_topics(topics);
        if (8..=10).contains(&version) {
            resp.cluster_authorized_operations = if !req.include_cluster_authorized_operations {
                i32::MIN
            } else if self.allowed(
                session,
                Operation::Describe,
                ResourceType::Cluster,
                CLUSTER_NAME,
            ) {
                self.authorized_operations(session, ResourceType::Cluster, CLUSTER_NAME)
            } else {
                0
            };
        }
        encode(&resp, version)
    }
}
