//! DeleteTopics, by name or by topic id.

use std::sync::Arc;

use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName, delete_topics_response,
};

use crate::broker::{Broker, Reply, encode, str_bytes};
use crate::error::KafkaCode;
use crate::offsets_topic::is_internal;
use crate::security::Session;
use crate::security::acl::{Operation, ResourceType};

impl Broker {
    pub(crate) async fn delete_topics(
        self: Arc<Self>,
        session: &Session,
        req: DeleteTopicsRequest,
        version: i16,
    ) -> Reply {
        let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            req.topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                .collect()
        } else {
            req.topic_names
                .into_iter()
                .map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::new();
        for (name, id) in targets {
            let topic = match &name {
                Some(n) => self.topics.get(n).or_else(|| self.topics.unservable(n)),
                None => self.topics.all().into_iter().find(|t| t.id == id),
            };
            let mut r = delete_topics_response::DeletableTopicResult::default()
                .with_name(name.as_deref().map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            let deletable =
                |t: &str| self.allowed(session, Operation::Delete, ResourceType::Topic, t);
            match topic {
                _ if name.as_deref().is_some_and(|n| !deletable(n)) => {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                }
                Some(topic) if !deletable(&topic.name) => {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                }
                None => {
                    r.error_code = if name.is_some() {
                        KafkaCode::UnknownTopicOrPartition.code()
                    } else {
                        100 // UNKNOWN_TOPIC_ID
                    };
                }
                // Kafka's controller would delete it (only its tools refuse); here its log
                // is the account of the committed offsets, which outlive it.
                Some(topic) if is_internal(&topic.name) => {
                    r.name = Some(TopicName(str_bytes(&topic.name)));
                    r.topic_id = topic.id;
                    r.error_code = KafkaCode::InvalidTopicException.code();
                    r.error_message = Some(str_bytes(&format!(
                        "{} is an internal topic of this broker and cannot be deleted",
                        topic.name
                    )));
                }
                Some(topic) => {
                    r.name = Some(TopicName(str_bytes(&topic.name)));
                    r.topic_id = topic.id;
                    if let Err(e) = self.delete_topic(&topic).await {
                        tracing::warn!(topic = %topic.name, error = %e, "deleting a topic failed");
                        r.error_code = KafkaCode::KafkaStorageError.code();
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
            responses.push(r);
        }
        encode(
            &DeleteTopicsResponse::default().with_responses(responses),
            version,
        )
    }
}
