//! AlterConfigs (replace a resource's configuration) and IncrementalAlterConfigs (SET,
//! DELETE, APPEND, SUBTRACT per key). Topic configurations are stored with the topic record
//! and in force at once: produce, fetch and retention read them from the topic each time.
//! Broker configurations are static on this broker: altering one is refused as Kafka
//! refuses a config it cannot update dynamically.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::{KafkaCode, ShimError};
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};
use crate::topics::{Topic, TopicDefaults, validate_configs};

/// Kafka's `ConfigResource.Type` codes.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;

/// IncrementalAlterConfigs' operations (`AlterConfigOp.OpType`).
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// A refusal of one resource: its code and Kafka's message.
type Refusal = (KafkaCode, String);

/// What a request asks of one resource's configuration.
enum Change {
    /// AlterConfigs: these keys exactly, everything else back to its default.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (key, operation, value).
    Incremental(Vec<(String, i8, Option<String>)>),
}

impl Broker {
    pub(crate) async fn alter_configs(
        self: Arc<Self>,
        session: &Session,
        req: AlterConfigsRequest,
        version: i16,
    ) -> Reply {
        let mut responses = Vec::new();
        for res in req.resources {
            let change = Change::Replace(
                res.configs
                    .into_iter()
                    .map(|c| {
                        (
                            c.name.as_str().to_string(),
                            c.value.map(|v| v.as_str().to_string()),
                        )
                    })
                    .collect(),
            );
            let outcome = self
                .alter_resource(
                    session,
                    res.resource_type,
                    res.resource_name.as_str(),
                    change,
                    req.validate_only,
                )
                .await?;
            let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((code, message)) = outcome {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(&message));
            }
            responses.push(r);
        }
        encode(
            &AlterConfigsResponse::default().with_responses(responses),
            version,
        )
    }

    pub(crate) async fn incremental_alter_configs(
        self: Arc<Self>,
        session: &Session,
        req: IncrementalAlterConfigsRequest,
        version: i16,
    ) -> Reply {
        let mut responses = Vec::new();
        for res in req.resources {
            let change = Change::Incremental(
                res.configs
                    .into_iter()
                    .map(|c| {
                        (
                            c.name.as_str().to_string(),
                            c.config_operation,
                            c.value.map(|v| v.as_str().to_string()),
                        )
                    })
                    .collect(),
            );
            let outcome = self
                .alter_resource(
                    session,
                    res.resource_type,
                    res.resource_name.as_str(),
                    change,
                    req.validate_only,
                )
                .await?;
            let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            if let Err((code, message)) = outcome {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(&message));
            }
            responses.push(r);
        }
        encode(
            &IncrementalAlterConfigsResponse::default().with_responses(responses),
            version,
        )
    }

    /// Authorizes, checks and (unless `validate_only`) applies one resource's change.
    async fn alter_resource(
        &self,
        session: &Session,
        resource_type: i8,
        name: &str,
        change: Change,
        validate_only: bool,
    ) -> Result<Result<(), Refusal>, ShimError> {
        match resource_type {
            TOPIC => {
                if !self.allowed(session, Operation::AlterConfigs, ResourceType::Topic, name) {
                    return Ok(Err((
                        KafkaCode::TopicAuthorizationFailed,
                        "Topic authorization failed.".into(),
                    )));
                }
                if is_internal(name) && self.topics.get(name).is_some() {
                    // Kafka would store the change; nothing here would act on it.
                    return Ok(Err((
                        KafkaCode::InvalidRequest,
                        format!(
                            "{name} is an internal topic of this broker: its configuration is fixed"
                        ),
                    )));
                }
                self.alter_topic(name, &change, validate_only).await
            }
            BROKER | BROKER_LOGGER => {
                if !self.allowed(
                    session,
                    Operation::AlterConfigs,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                ) {
                    return Ok(Err((
                        KafkaCode::ClusterAuthorizationFailed,
                        "Cluster authorization failed.".into(),
                    )));
                }
                if !name.is_empty() && name != self.config.node_id.to_string() {
                    return Ok(Err((
                        KafkaCode::InvalidRequest,
                        format!(
                            "Unexpected broker id, expected {}, but received {name}",
                            self.config.node_id
                        ),
                    )));
                }
                let keys: Vec<&str> = match &change {
                    Change::Replace(c) => c.iter().map(|(k, _)| k.as_str()).collect(),
                    Change::Incremental(c) => c.iter().map(|(k, _, _)| k.as_str()).collect(),
                };
                if keys.is_empty() {
                    return Ok(Ok(()));
                }
                // Every broker setting of this broker comes from its configuration file.
                Ok(Err((
                    KafkaCode::InvalidRequest,
                    format!(
                        "Cannot update these configs dynamically: Set({})",
                        keys.join(", ")
                    ),
                )))
            }
            other => Ok(Err((
                KafkaCode::InvalidRequest,
                format!("Unexpected resource type {other}"),
            ))),
        }
    }

    async fn alter_topic(
        &self,
        name: &str,
        change: &Change,
        validate_only: bool,
    ) -> Result<Result<(), Refusal>, ShimError> {
        let Some(topic) = self.topics.get(name) else {
            return Ok(Err((
                KafkaCode::UnknownTopicOrPartition,
                format!("Topic {name} does not exist"),
            )));
        };
        let defaults = &self.config.topic_defaults;
        let first = match changed_configs(&topic, change, defaults) {
            Ok(c) => c,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if validate_only || first == topic.configs {
            return Ok(Ok(()));
        }
        let refused = std::sync::Mutex::new(None);
        let updated = self
            .topics
            .update(name, topic.id, |current| {
                match changed_configs(current, change, defaults) {
                    Ok(configs) => Ok(Topic {
                        configs,
                        ..current.clone()
                    }),
                    Err((code, message)) => {
                        *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                        Err(code)
                    }
                }
            })
            .await?;
        Ok(match updated {
            Ok(t) => {
                tracing::info!(topic = name, configs = ?t.configs, "topic configuration altered");
                Ok(())
            }
            Err(code) => Err((
                code,
                refused
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| format!("Topic {name} does not exist")),
            )),
        })
    }
}

/// The topic's configuration overrides after `change`, checked as CreateTopics checks them.
fn changed_configs(
    topic: &Topic,
    change: &Change,
    defaults: &TopicDefaults,
) -> Result<BTreeMap<String, String>, Refusal> {
    let invalid_request = |m: String| (KafkaCode::InvalidRequest, m);
    let mut seen = HashSet::new();
    let configs = match change {
        Change::Replace(entries) => {
            let mut configs = BTreeMap::new();
            for (k, v) in entries {
                if !seen.insert(k.as_str()) {
                    return Err(invalid_request(format!(
                        "Error due to duplicate config keys: {k}"
                    )));
                }
                let Some(v) = v else {
                    return Err(invalid_request(format!(
                        "Null value not supported for topic configs: {k}"
                    )));
                };
                configs.insert(k.clone(), v.clone());
            }
            configs
        }
        Change::Incremental(ops) => {
            let mut configs = topic.configs.clone();
            for (k, op, v) in ops {
                if !seen.insert(k.as_str()) {
                    return Err(invalid_request(format!(
                        "Error due to duplicate config keys: {k}"
                    )));
                }
                match *op {
                    DELETE => {
                        configs.remove(k);
                    }
                    SET | APPEND | SUBTRACT => {
                        let Some(v) = v else {
                            return Err(invalid_request(format!(
                                "Null value not supported for : {k}"
                            )));
                        };
                        if *op == SET {
                            configs.insert(k.clone(), v.clone());
                            continue;
                        }
                        if !is_list(k) {
                            let verb = if *op == APPEND { "append" } else { "subtract" };
                            return Err((
                                KafkaCode::InvalidConfig,
                                format!("Config value {verb} is not allowed for config key: {k}"),
                            ));
                        }
                        // Kafka appends to (subtracts from) the value in force, the default
                        // when none is set.
                        let current = configs
                            .get(k)
                            .cloned()
                            .or_else(|| topic.config(k, defaults).map(|(v, _)| v))
                            .unwrap_or_default();
                        let mut items: Vec<String> = split_list(&current);
                        let given = split_list(v);
                        if *op == APPEND {
                            for g in given {
                                if !items.contains(&g) {
                                    items.push(g);
                                }
                            }
                        } else {
                            items.retain(|i| !given.contains(i));
                        }
                        configs.insert(k.clone(), items.join(","));
                    }
                    other => {
                        return Err(invalid_request(format!(
                            "Unknown config operation {other} for config key: {k}"
                        )));
                    }
                }
            }
            configs
        }
    };
    validate_configs(&configs).map_err(|m| (KafkaCode::InvalidConfig, m))?;
    Ok(configs)
}

/// The list-typed topic configurations (APPEND and SUBTRACT apply to them only).
fn is_list(key: &str) -> bool {
    key == "cleanup.policy"
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
