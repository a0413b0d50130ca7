//! CreatePartitions: grows a topic's partition count. The new partitions are new logs,
//! created when first used, as every partition of this broker is; only the topic record
//! changes here.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, TopicName, create_partitions_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};
use crate::topics::{MAX_PARTITIONS, Topic};

impl Broker {
    pub(crate) async fn create_partitions(
        self: Arc<Self>,
        session: &Session,
        req: CreatePartitionsRequest,
        version: i16,
    ) -> Reply {
        let mut seen = HashSet::new();
        let duplicates: HashSet<String> = req
            .topics
            .iter()
            .map(|t| t.name.0.as_str().to_string())
            .filter(|n| !seen.insert(n.clone()))
            .collect();
        let mut results = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let outcome = if duplicates.contains(&name) {
                Err((
                    KafkaCode::InvalidRequest,
                    "Duplicate topic name.".to_string(),
                ))
            } else if !self.allowed(session, Operation::Alter, ResourceType::Topic, &name) {
                Err((
                    KafkaCode::TopicAuthorizationFailed,
                    "Topic authorization failed.".to_string(),
                ))
            } else if is_internal(&name) && self.topics.get(&name).is_some() {
                // Its partition count places the groups (Kafka's controller would allow
                // it and move every group's records).
                Err((
                    KafkaCode::InvalidTopicException,
                    format!(
                        "{name} is an internal topic of this broker: its partition count is fixed"
                    ),
                ))
            } else {
                self.grow_topic(&name, t.count, t.assignments.as_deref(), req.validate_only)
                    .await?
            };
            let mut r = create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(TopicName(str_bytes(&name)));
            if let Err((code, message)) = outcome {
                r.error_code = code.code();
                r.error_message = Some(str_bytes(&message));
            }
            results.push(r);
        }
        encode(
            &CreatePartitionsResponse::default().with_results(results),
            version,
        )
    }

    /// Checks a request to grow `name` to `count` partitions the way Kafka's controller
    /// does and, unless `validate_only`, stores the new count.
    async fn grow_topic(
        &self,
        name: &str,
        count: i32,
        assignments: Option<
            &[kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment],
        >,
        validate_only: bool,
    ) -> Result<Result<(), (KafkaCode, String)>, crate::ShimError> {
        let Some(topic) = self.topics.get(name) else {
            return Ok(Err((
                KafkaCode::UnknownTopicOrPartition,
                format!("The topic '{name}' does not exist."),
            )));
        };
        let check = |current: &Topic| -> Result<(), (KafkaCode, String)> {
            let have = current.partitions;
            if count < have {
                return Err((
                    KafkaCode::InvalidPartitions,
                    format!(
                        "The topic {name} currently has {have} partition(s); {count} would not be an increase."
                    ),
                ));
            }
            if count == have {
                return Err((
                    KafkaCode::InvalidPartitions,
                    format!("Topic already has {have} partition(s)."),
                ));
            }
            if count > MAX_PARTITIONS {
                return Err((
                    KafkaCode::PolicyViolation,
                    "Unable to perform excessively large batch operation.".to_string(),
                ));
            }
            if let Some(assignments) = assignments {
                let added = count - have;
                if assignments.len() as i64 != i64::from(added) {
                    return Err((
                        KafkaCode::InvalidReplicaAssignment,
                        format!(
                            "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                            assignments.len()
                        ),
                    ));
                }
                // One broker: the only assignment that can be honoured is this node alone.
                for a in assignments {
                    if a.broker_ids.len() != 1 {
                        return Err((
                            KafkaCode::InvalidReplicationFactor,
                            format!(
                                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have 1 replica(s).",
                                a.broker_ids.len()
                            ),
                        ));
                    }
                    if *a.broker_ids[0] != self.config.node_id {
                        return Err((
                            KafkaCode::InvalidReplicaAssignment,
                            format!(
                                "The manual partition assignment includes broker {}, but no such broker is registered.",
                                *a.broker_ids[0]
                            ),
                        ));
                    }
                }
            }
            Ok(())
        };
        if let Err(refusal) = check(&topic) {
            return Ok(Err(refusal));
        }
        if validate_only {
            return Ok(Ok(()));
        }
        let refused = std::sync::Mutex::new(None);
        let updated = self
            .topics
            .update(name, topic.id, |current| match check(current) {
                Ok(()) => Ok(Topic {
                    partitions: count,
                    ..current.clone()
                }),
                Err((code, message)) => {
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                    Err(code)
                }
            })
            .await?;
        Ok(match updated {
            Ok(_) => {
                tracing::info!(topic = name, partitions = count, "partitions added");
                Ok(())
            }
            Err(code) => {
                let message = refused
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_else(|| format!("The topic '{name}' does not exist."));
                Err((code, message))
            }
        })
    }
}
