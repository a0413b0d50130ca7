//! CreateTopics.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, create_topics_response};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};
use crate::topics::{MAX_RECORDS_PER_REQUEST, valid_topic_name, validate_configs};

impl Broker {
    pub(crate) async fn create_topics(
        self: Arc<Self>,
        session: &Session,
        req: CreateTopicsRequest,
        version: i16,
    ) -> Reply {
        let cluster_create = self.allowed(
            session,
            Operation::Create,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        // Like Kafka's controller, refuse the whole request when it would create more than
        // MAX_RECORDS_PER_REQUEST records (a topic, each partition, each configuration).
        let records: i64 = req
            .topics
            .iter()
            .map(|t| {
                let partitions = if t.num_partitions == -1 {
                    i64::from(self.config.topic_defaults.partitions).max(t.assignments.len() as i64)
                } else {
                    i64::from(t.num_partitions.max(0))
                };
                1 + partitions + t.configs.len() as i64
            })
            .sum();
        let too_large = records > MAX_RECORDS_PER_REQUEST;
        let mut results = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = create_topics_response::CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let partitions = if t.num_partitions == -1 && t.assignments.is_empty() {
                self.config.topic_defaults.partitions
            } else if !t.assignments.is_empty() {
                t.assignments.len() as i32
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let refusal: Option<(KafkaCode, String)> = if too_large {
                Some((
                    KafkaCode::PolicyViolation,
                    "Unable to perform excessively large batch operation.".into(),
                ))
            } else if !cluster_create
                && !self.allowed(session, Operation::Create, ResourceType::Topic, &name)
            {
                Some((
                    KafkaCode::TopicAuthorizationFailed,
                    "Authorization failed.".into(),
                ))
            } else if !valid_topic_name(&name) {
                Some((
                    KafkaCode::InvalidTopicException,
                    format!("`{name}` is not a legal topic name (1-249 of [a-zA-Z0-9._-])"),
                ))
            } else if self.topics.get(&name).is_some() || is_internal(&name) {
                // The internal topic exists for clients from the start (it is made with its
                // own settings when first used, never by a client).
                Some((
                    KafkaCode::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ))
            } else if !t.assignments.is_empty() && t.num_partitions != -1 {
                Some((
                    KafkaCode::InvalidRequest,
                    "A manual partition assignment was specified, but numPartitions was not set to -1.".into(),
                ))
            } else if partitions < 1 {
                Some((
                    KafkaCode::InvalidPartitions,
                    "Number of partitions was set to an invalid non-positive value.".into(),
                ))
            } else if t.replication_factor == 0 || t.replication_factor < -1 {
                Some((
                    KafkaCode::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value."
                        .into(),
                ))
            } else if t.replication_factor > 1 {
                Some((
                    KafkaCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {} is larger than the 1 available broker",
                        t.replication_factor
                    ),
                ))
            } else if t
                .assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || *a.broker_ids[0] != self.config.node_id)
            {
                Some((
                    KafkaCode::InvalidRequest,
                    format!(
                        "replicas may only be assigned to broker {}",
                        self.config.node_id
                    ),
                ))
            } else if let Err(msg) = validate_configs(&configs) {
                Some((KafkaCode::InvalidConfig, msg))
            } else {
                None
            };
            match refusal {
                Some((code, msg)) => {
                    r.error_code = code.code();
                    r.error_message = Some(str_bytes(&msg));
                }
                None if req.validate_only => {
                    r.num_partitions = partitions;
                    r.replication_factor = 1;
                }
                None => match self.create_topic(&name, partitions, configs).await? {
                    Ok(topic) => {
                        r.topic_id = topic.id;
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                        if version >= 5
                            && !self.allowed(
                                session,
                                Operation::DescribeConfigs,
                                ResourceType::Topic,
                                &name,
                            )
                        {
                            r.topic_config_error_code = KafkaCode::TopicAuthorizationFailed.code();
                        } else if version >= 5 {
                            r.configs = Some(
                                self.config_entries(&topic, None)
                                    .into_iter()
                                    .map(|(k, v, read_only, set)| {
                                        create_topics_response::CreatableTopicConfigs::default()
                                            .with_name(str_bytes(&k))
                                            .with_value(Some(str_bytes(&v)))
                                            .with_read_only(read_only)
                                            .with_config_source(if set { 1 } else { 5 })
                                    })
                                    .collect(),
                            );
                        }
                    }
                    Err(code) => {
                        r.error_code = code.code();
                        r.error_message =
                            Some(str_bytes(&format!("Topic '{name}' already exists.")));
                    }
                },
            }
            if version < 5 {
                r.num_partitions = -1;
                r.replication_factor = -1;
            }
            if version < 1 {
                r.error_message = None;
            }
            results.push(r);
        }
        encode(
            &CreateTopicsResponse::default().with_topics(results),
            version,
        )
    }
}
