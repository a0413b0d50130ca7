//! DescribeClientQuotas and AlterClientQuotas: the quotas of [`crate::quotas`] on the wire,
//! with the cluster-level checks Kafka makes (DESCRIBE_CONFIGS to describe, ALTER_CONFIGS
//! to alter).

use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, alter_client_quotas_response, describe_client_quotas_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::quotas::{Filter, QuotaKey, parse_entity, parse_op};
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};

/// What Kafka answers when authorization fails for the cluster.
const CLUSTER_DENIED: &str = "Cluster authorization failed.";

impl Broker {
    pub(crate) async fn describe_client_quotas(
        &self,
        session: &Session,
        req: DescribeClientQuotasRequest,
        version: i16,
    ) -> Reply {
        let refused = |code: KafkaCode, message: &str| {
            encode(
                &DescribeClientQuotasResponse::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
                    .with_entries(None),
                version,
            )
        };
        if !self.allowed(
            session,
            Operation::DescribeConfigs,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            return refused(KafkaCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
        }
        let filter = Filter::parse(
            req.components.iter().map(|c| {
                (
                    c.entity_type.as_str(),
                    c.match_type,
                    c._match.as_ref().map(|m| m.as_str()),
                )
            }),
            req.strict,
        );
        let filter = match filter {
            Ok(f) => f,
            Err((code, message)) => return refused(code, &message),
        };
        // From the store, not the memory: what another broker of the store set shows, and
        // is enforced here from now on.
        let configs = self.quotas.load().await?;
        let entries = configs
            .iter()
            .filter(|(entity, _)| filter.matches(entity))
            .map(|(entity, values)| {
                describe_client_quotas_response::EntryData::default()
                    .with_entity(
                        entity
                            .parts()
                            .into_iter()
                            .map(|(t, name)| {
                                describe_client_quotas_response::EntityData::default()
                                    .with_entity_type(str_bytes(t))
                                    .with_entity_name(name.map(str_bytes))
                            })
                            .collect(),
                    )
                    .with_values(
                        values
                            .iter()
                            .map(|(k, v)| {
                                describe_client_quotas_response::ValueData::default()
                                    .with_key(str_bytes(k.name()))
                                    .with_value(*v)
                            })
                            .collect(),
                    )
            })
            .collect();
        encode(
            &DescribeClientQuotasResponse::default().with_entries(Some(entries)),
            version,
        )
    }

    pub(crate) async fn alter_client_quotas(
        &self,
        session: &Session,
        req: AlterClientQuotasRequest,
        version: i16,
    ) -> Reply {
        let allowed = self.allowed(
            session,
            Operation::AlterConfigs,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        let mut results = Vec::with_capacity(req.entries.len());
        for entry in &req.entries {
            let outcome = if allowed {
                self.alter_entry(entry, req.validate_only).await?
            } else {
                Err((KafkaCode::ClusterAuthorizationFailed, CLUSTER_DENIED.into()))
            };
            let (code, message) = match outcome {
                Ok(()) => (KafkaCode::None, None),
                Err((code, message)) => (code, Some(str_bytes(&message))),
            };
            results.push(
                alter_client_quotas_response::EntryData::default()
                    .with_error_code(code.code())
                    .with_error_message(message)
                    .with_entity(
                        entry
                            .entity
                            .iter()
                            .map(|e| {
                                alter_client_quotas_response::EntityData::default()
                                    .with_entity_type(e.entity_type.clone())
                                    .with_entity_name(e.entity_name.clone())
                            })
                            .collect(),
                    ),
            );
        }
        encode(
            &AlterClientQuotasResponse::default().with_entries(results),
            version,
        )
    }

    /// One entry of AlterClientQuotas: checked whole before anything of it is written.
    async fn alter_entry(
        &self,
        entry: &kafka_protocol::messages::alter_client_quotas_request::EntryData,
        validate_only: bool,
    ) -> Result<Result<(), (KafkaCode, String)>, crate::error::ShimError> {
        let entity = match parse_entity(
            entry
                .entity
                .iter()
                .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())),
        ) {
            Ok(e) => e,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut changes: Vec<(QuotaKey, Option<f64>)> = Vec::with_capacity(entry.ops.len());
        for op in &entry.ops {
            match parse_op(op.key.as_str(), op.value, op.remove) {
                Ok((key, _)) if changes.iter().any(|(k, _)| *k == key) => {
                    return Ok(Err((
                        KafkaCode::InvalidRequest,
                        format!("Duplicate quota key {} in one entity", key.name()),
                    )));
                }
                Ok(change) => changes.push(change),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        if !validate_only && !changes.is_empty() {
            self.quotas.alter(&entity, &changes).await?;
            tracing::info!(?entity, ?changes, "client quotas altered");
        }
        Ok(Ok(()))
    }
}
