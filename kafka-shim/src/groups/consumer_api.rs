//! The consumer-protocol APIs of the coordinator (KIP-848): ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, over the [`ConsumerGroup`] machines in the coordinator's state.
//!
//! A group id names one group of one type. A heartbeat to a classic group that has members
//! (or is rebalancing) is refused with GROUP_ID_NOT_FOUND, and a JoinGroup to a consumer
//! group with members with INCONSISTENT_GROUP_PROTOCOL, as a Kafka 4 broker answers with
//! online migration off (`group.consumer.migration.policy=disabled`); an empty group of
//! either type (committed offsets and nothing else) becomes the type of whoever joins it,
//! offsets kept.
//!
//! Membership lives in memory, as the classic groups' does: after a restart members find
//! themselves unknown (UNKNOWN_MEMBER_ID) and rejoin; committed offsets are durable.

use kafka_protocol::messages::consumer_group_describe_response::{
    self as cgd, DescribedGroup as CgdGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    self as cgh, Assignment as CghAssignment,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};

use super::consumer::{
    Assignment, ConsumerGroup, ConsumerSettings, HeartbeatInput, Refusal, TopicMeta, TopicsView,
    validate,
};
use super::*;

/// A topic as the consumer-protocol coordinator needs it: id, name, partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic id.
    pub id: uuid::Uuid,
    /// The name.
    pub name: String,
    /// The partition count.
    pub partitions: i32,
}

fn view(topics: &[TopicInfo]) -> TopicsView {
    topics
        .iter()
        .map(|t| {
            (
                t.id,
                TopicMeta {
                    name: t.name.clone(),
                    partitions: t.partitions,
                },
            )
        })
        .collect()
}

fn refused(r: Refusal) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(r.code.code())
        .with_error_message(Some(sb(&r.message)))
        .with_member_id(None)
}

fn wire_assignment(a: &Assignment) -> CghAssignment {
    CghAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                cgh::TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

impl GroupSettings {
    pub(super) fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            session_timeout: self.consumer_session_timeout,
            heartbeat_interval: self.consumer_heartbeat_interval,
            max_size: self.consumer_max_size,
        }
    }
}

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat (v0-1). `topics` is every topic that exists.
    pub async fn consumer_group_heartbeat(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        origin: &MemberOrigin,
        topics: &[TopicInfo],
    ) -> ConsumerGroupHeartbeatResponse {
        let response = self.heartbeat_consumer(req, version, origin, topics);
        self.shared.wake.notify_one();
        response
    }

    fn heartbeat_consumer(
        &self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        origin: &MemberOrigin,
        topics: &[TopicInfo],
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = req.group_id.to_string();
        if group_id.is_empty() {
            return refused(Refusal {
                code: KafkaCode::InvalidRequest,
                message: "GroupId can't be empty.".into(),
            });
        }
        let input = HeartbeatInput {
            version,
            member_id: req.member_id.to_string(),
            member_epoch: req.member_epoch,
            instance_id: req.instance_id.as_deref().map(str::to_owned),
            rack_id: req.rack_id.as_deref().map(str::to_owned),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            subscribed_topic_names: req
                .subscribed_topic_names
                .as_ref()
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
            subscribed_topic_regex: if version >= 1 {
                req.subscribed_topic_regex.as_deref().map(str::to_owned)
            } else {
                None
            },
            server_assignor: req.server_assignor.as_deref().map(str::to_owned),
            owned: req.topic_partitions.as_ref().map(|tps| {
                let mut owned = Assignment::new();
                for tp in tps {
                    owned
                        .entry(tp.topic_id)
                        .or_default()
                        .extend(tp.partitions.iter().copied());
                }
                owned.retain(|_, ps| !ps.is_empty());
                owned
            }),
            client_id: origin.client_id.clone(),
            client_host: if origin.host.is_empty() {
                String::new()
            } else {
                format!("/{}", origin.host)
            },
        };
        if let Err(r) = validate(&input) {
            return refused(r);
        }
        let topics = view(topics);
        let settings = self.shared.settings.consumer();
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return refused(Refusal {
                code: KafkaCode::CoordinatorNotAvailable,
                message: "The coordinator is shutting down.".into(),
            });
        }
        if !state.consumers.contains_key(&group_id) {
            // A classic group that is only committed offsets may become a consumer group.
            if let Some(classic) = state.groups.get(&group_id)
                && (classic.state != GroupState::Empty || !classic.members.is_empty())
            {
                return refused(Refusal {
                    code: KafkaCode::GroupIdNotFound,
                    message: format!("Group {group_id} is not a consumer group."),
                });
            }
            if input.member_epoch != 0 {
                return refused(Refusal {
                    code: KafkaCode::UnknownMemberId,
                    message: format!(
                        "Member {} is not a member of group {group_id}.",
                        input.member_id
                    ),
                });
            }
        }
        let created = !state.consumers.contains_key(&group_id);
        let group = state
            .consumers
            .entry(group_id.clone())
            .or_insert_with(|| ConsumerGroup::new(now.mono));
        let answer = group.heartbeat(input, &topics, &settings, now.mono, || {
            uuid::Uuid::new_v4().to_string()
        });
        if created && group.members.is_empty() {
            state.consumers.remove(&group_id);
        } else {
            // Its committed offsets live in an Empty classic group of the same id, which the
            // offset and admin APIs find.
            state
                .groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(now));
        }
        match answer {
            Err(r) => refused(r),
            Ok(out) => {
                let interval =
                    i32::try_from(settings.heartbeat_interval.as_millis()).unwrap_or(i32::MAX);
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(0)
                    .with_member_id(Some(sb(&out.member_id)))
                    .with_member_epoch(out.member_epoch)
                    .with_heartbeat_interval_ms(interval)
                    .with_assignment(out.assignment.as_ref().map(wire_assignment))
            }
        }
    }

    /// ConsumerGroupDescribe (v0). A group that is not a consumer-protocol group is
    /// GROUP_ID_NOT_FOUND (the Admin client then asks DescribeGroups).
    pub async fn consumer_group_describe(
        &self,
        req: ConsumerGroupDescribeRequest,
        _version: i16,
        topics: &[TopicInfo],
    ) -> ConsumerGroupDescribeResponse {
        let names: HashMap<uuid::Uuid, String> =
            topics.iter().map(|t| (t.id, t.name.clone())).collect();
        let wire = |a: &Assignment| {
            cgd::Assignment::default().with_topic_partitions(
                a.iter()
                    .map(|(t, ps)| {
                        cgd::TopicPartitions::default()
                            .with_topic_id(*t)
                            .with_topic_name(TopicName(sb(names.get(t).map_or("", String::as_str))))
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            )
        };
        let state = self.shared.lock();
        let groups = req
            .group_ids
            .iter()
            .map(|group_id| {
                let described = CgdGroup::default()
                    .with_group_id(group_id.clone())
                    .with_authorized_operations(i32::MIN);
                if group_id.is_empty() {
                    return described
                        .with_error_code(KafkaCode::InvalidGroupId.code())
                        .with_error_message(Some(sb("The group id can't be empty.")));
                }
                let Some(group) = state.consumers.get(group_id.as_str()) else {
                    let message = if state.groups.contains_key(group_id.as_str()) {
                        format!("Group {} is not a consumer group.", group_id.as_str())
                    } else {
                        format!("Group {} not found.", group_id.as_str())
                    };
                    return described
                        .with_error_code(KafkaCode::GroupIdNotFound.code())
                        .with_error_message(Some(sb(&message)));
                };
                let members = group
                    .members
                    .values()
                    .map(|m| {
                        cgd::Member::default()
                            .with_member_id(sb(&m.id))
                            .with_instance_id(m.instance_id.as_deref().map(sb))
                            .with_rack_id(m.rack_id.as_deref().map(sb))
                            .with_member_epoch(m.epoch)
                            .with_client_id(sb(&m.client_id))
                            .with_client_host(sb(&m.client_host))
                            .with_subscribed_topic_names(
                                m.subscribed_names
                                    .iter()
                                    .map(|n| TopicName(sb(n)))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(m.subscribed_regex.as_deref().map(sb))
                            .with_assignment(wire(&m.assigned))
                            .with_target_assignment(wire(
                                group.target.get(&m.id).unwrap_or(&Assignment::new()),
                            ))
                    })
                    .collect();
                described
                    .with_error_code(0)
                    .with_group_state(sb(group.state().as_str()))
                    .with_group_epoch(group.group_epoch)
                    .with_assignment_epoch(group.assignment_epoch)
                    .with_assignor_name(sb(&group.assignor))
                    .with_members(members)
            })
            .collect();
        ConsumerGroupDescribeResponse::default().with_groups(groups)
    }
}
