//! DescribeConfigs for topics and this broker, and the config entries CreateTopics reports.

use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, describe_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, str_bytes};
use crate::error::KafkaCode;
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};
use crate::topics::{TOPIC_CONFIG_KEYS, Topic};

impl Broker {
    pub(crate) fn config_entries(
        &self,
        topic: &Topic,
        keys: Option<&[StrBytes]>,
    ) -> Vec<(String, String, bool, bool)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .filter(|(k, _)| {
                keys.is_none_or(|ks| ks.is_empty() || ks.iter().any(|x| x.as_str() == *k))
            })
            .filter_map(|(k, read_only)| {
                topic
                    .config(k, &self.config.topic_defaults)
                    .map(|(v, set)| (k.to_string(), v, *read_only, set))
            })
            .collect()
    }

    pub(crate) fn describe_configs(
        &self,
        session: &Session,
        req: DescribeConfigsRequest,
    ) -> DescribeConfigsResponse {
        let mut results = Vec::new();
        for res in req.resources {
            let name = res.resource_name.as_str().to_string();
            let mut r = describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let entries: Option<Vec<(String, String, bool, bool)>> = match res.resource_type {
                2 if !self.allowed(
                    session,
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &name,
                ) =>
                {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                    r.error_message = Some(str_bytes("Topic authorization failed."));
                    None
                }
                4 if !self.allowed(
                    session,
                    Operation::DescribeConfigs,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                ) =>
                {
                    r.error_code = KafkaCode::ClusterAuthorizationFailed.code();
                    r.error_message = Some(str_bytes("Cluster authorization failed."));
                    None
                }
                2 => match self.topics.get(&name) {
                    Some(topic) => {
                        Some(self.config_entries(&topic, res.configuration_keys.as_deref()))
                    }
                    None => {
                        r.error_code = KafkaCode::UnknownTopicOrPartition.code();
                        r.error_message = Some(str_bytes(&format!("Topic {name} does not exist")));
                        None
                    }
                },
                4 if name.is_empty() || name == self.config.node_id.to_string() => {
                    Some(self.broker_configs(res.configuration_keys.as_deref()))
                }
                4 => {
                    r.error_code = KafkaCode::InvalidRequest.code();
                    r.error_message = Some(str_bytes(&format!("unknown broker {name}")));
                    None
                }
                other => {
                    r.error_code = KafkaCode::InvalidRequest.code();
                    r.error_message =
                        Some(str_bytes(&format!("resource type {other} is not served")));
                    None
                }
            };
            if let Some(entries) = entries {
                r.configs = entries
                    .into_iter()
                    .map(|(k, v, read_only, set)| {
                        let source = match (res.resource_type, set) {
                            (2, true) => 1, // TOPIC_CONFIG
                            (4, true) => 4, // STATIC_BROKER_CONFIG
                            _ => 5,         // DEFAULT_CONFIG
                        };
                        describe_configs_response::DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(&k))
                            .with_value(Some(str_bytes(&v)))
                            .with_read_only(read_only)
                            .with_config_source(source)
                            .with_config_type(config_type(&k))
                    })
                    .collect();
            }
            results.push(r);
        }
        DescribeConfigsResponse::default().with_results(results)
    }

    fn broker_configs(&self, keys: Option<&[StrBytes]>) -> Vec<(String, String, bool, bool)> {
        let d = &self.config.topic_defaults;
        let all = [
            (
                "advertised.listeners",
                self.config.advertised_listeners.clone().unwrap_or_else(|| {
                    format!(
                        "PLAINTEXT://{}:{}",
                        self.config.advertised_host, self.config.advertised_port
                    )
                }),
                true,
            ),
            (
                "auto.create.topics.enable",
                self.config.auto_create_topics.to_string(),
                true,
            ),
            ("broker.id", self.config.node_id.to_string(), true),
            ("default.replication.factor", "1".to_string(), false),
            ("log.retention.bytes", d.retention_bytes.to_string(), false),
            ("log.retention.ms", d.retention_ms.to_string(), false),
            ("message.max.bytes", d.max_message_bytes.to_string(), false),
            ("min.insync.replicas", "1".to_string(), false),
            ("num.partitions", d.partitions.to_string(), true),
            ("offsets.topic.replication.factor", "1".to_string(), false),
            (
                "transaction.state.log.replication.factor",
                "1".to_string(),
                false,
            ),
            (
                "transaction.max.timeout.ms",
                self.config.transactions.max_timeout.as_millis().to_string(),
                true,
            ),
        ];
        all.into_iter()
            .filter(|(k, _, _)| {
                keys.is_none_or(|ks| ks.is_empty() || ks.iter().any(|x| x.as_str() == *k))
            })
            .map(|(k, v, set)| (k.to_string(), v, true, set))
            .collect()
    }
}

/// Kafka's config types: 1 boolean, 2 string, 3 int, 5 long, 7 list.
fn config_type(key: &str) -> i8 {
    match key {
        "retention.ms" | "retention.bytes" | "log.retention.ms" | "log.retention.bytes" => 5,
        "max.message.bytes"
        | "segment.bytes"
        | "min.insync.replicas"
        | "message.max.bytes"
        | "num.partitions"
        | "transaction.max.timeout.ms"
        | "broker.id" => 3,
        "default.replication.factor"
        | "offsets.topic.replication.factor"
        | "transaction.state.log.replication.factor" => 4,
        "auto.create.topics.enable" => 1,
        "cleanup.policy" => 7,
        _ => 2,
    }
}
