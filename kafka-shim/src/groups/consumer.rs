//! The membership state machine of one consumer-protocol group (KIP-848), without I/O.
//!
//! In the consumer protocol the broker assigns partitions and every member only heartbeats
//! (ConsumerGroupHeartbeat): it states its subscription when it changes and the partitions it
//! owns, and it receives its assignment and member epoch. A [`ConsumerGroup`] keeps three
//! epochs apart:
//!
//! * the **group epoch** goes up whenever something the assignment depends on changes (a
//!   member joins or goes, a subscription or assignor changes, a subscribed topic appears or
//!   grows);
//! * the **assignment epoch** is the group epoch the target assignment was computed for
//!   (the server-side assignor, `uniform` or `range`, runs when the group epoch is ahead);
//! * each member's **member epoch** is the assignment epoch it has caught up with.
//!
//! A member moves to a new target in two steps, so that no partition is ever owned twice:
//! first it is asked to revoke the partitions it must give up (its epoch stays; it is fenced
//! if it has not reported them released within its rebalance timeout), then it takes the
//! new epoch and the new partitions that no other member still owns; partitions another
//! member has not released yet are handed over on a later heartbeat, once that member's
//! heartbeat shows it let them go.
//!
//! Time comes in as monotonic [`Duration`]s since the coordinator's epoch, and the topics
//! as a [`TopicsView`] snapshot; nothing here sleeps, locks or reads the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use regex::Regex;
use uuid::Uuid;

use crate::error::KafkaCode;

/// Partitions by topic id.
pub(super) type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The server-side assignors, the default first (Kafka's `group.consumer.assignors`).
pub(super) const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Member epoch of a request that joins.
const JOIN_EPOCH: i32 = 0;
/// Member epoch of a request that leaves.
pub(super) const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member that leaves for a while and will come back.
pub(super) const STATIC_LEAVE_EPOCH: i32 = -2;

/// One topic as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TopicMeta {
    /// The topic's name.
    pub(super) name: String,
    /// Its partition count.
    pub(super) partitions: i32,
}

/// The topics that exist, by id.
pub(super) type TopicsView = BTreeMap<Uuid, TopicMeta>;

/// The broker's settings of the consumer protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConsumerSettings {
    /// `group.consumer.session.timeout.ms`.
    pub(super) session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms`.
    pub(super) heartbeat_interval: Duration,
    /// `group.consumer.max.size`.
    pub(super) max_size: usize,
}

/// A ConsumerGroupHeartbeat, decoded (topic ids kept, names of the subscription kept).
#[derive(Debug, Clone, Default)]
pub(super) struct HeartbeatInput {
    /// The request version (v1+: the client makes up its member id).
    pub(super) version: i16,
    pub(super) member_id: String,
    pub(super) member_epoch: i32,
    pub(super) instance_id: Option<String>,
    pub(super) rack_id: Option<String>,
    /// `-1`: unchanged.
    pub(super) rebalance_timeout_ms: i32,
    /// `None`: unchanged.
    pub(super) subscribed_topic_names: Option<Vec<String>>,
    /// `None`: unchanged (v1+).
    pub(super) subscribed_topic_regex: Option<String>,
    /// `None`: unchanged.
    pub(super) server_assignor: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub(super) owned: Option<Assignment>,
    /// The client id of the request header.
    pub(super) client_id: String,
    /// The client's host as the describe APIs show it (`/127.0.0.1`).
    pub(super) client_host: String,
}

/// The answer to a heartbeat that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeartbeatOutput {
    pub(super) member_id: String,
    pub(super) member_epoch: i32,
    /// `None`: the member's assignment did not change.
    pub(super) assignment: Option<Assignment>,
}

/// A heartbeat refused: the code and Kafka's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: KafkaCode,
    pub(super) message: String,
}

fn refuse(code: KafkaCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Checks a heartbeat's fields the way Kafka does before it looks at the group
/// (INVALID_REQUEST with Kafka's messages; UNSUPPORTED_ASSIGNOR).
pub(super) fn validate(req: &HeartbeatInput) -> Result<(), Refusal> {
    let invalid = |m: &str| Err(refuse(KafkaCode::InvalidRequest, m));
    if req.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if req.version >= 1 && req.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    match req.member_epoch {
        JOIN_EPOCH => {
            if req.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if req.owned.as_ref().is_some_and(|o| !o.is_empty()) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        STATIC_LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
            if req.instance_id.is_none() {
                return invalid("InstanceId can't be null.");
            }
        }
        e if e > 0 => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        _ => return invalid("MemberEpoch is invalid."),
    }
    if let Some(assignor) = &req.server_assignor
        && !ASSIGNORS.contains(&assignor.as_str())
    {
        return Err(refuse(
            KafkaCode::UnsupportedAssignor,
            format!(
                "ServerAssignor {assignor} is not supported. Supported assignors: {}.",
                ASSIGNORS.join(", ")
            ),
        ));
    }
    if let Some(regex) = &req.subscribed_topic_regex
        && !regex.is_empty()
    {
        compile(regex)?;
    }
    Ok(())
}

/// Compiles a subscription pattern; it must match a whole topic name, as Kafka's does.
fn compile(pattern: &str) -> Result<Regex, Refusal> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        refuse(
            KafkaCode::InvalidRegularExpression,
            format!("SubscribedTopicRegex `{pattern}` is not a valid regular expression: {e}."),
        )
    })
}

/// Where a member is in moving to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MemberState {
    /// It owns what its epoch gives it.
    Stable,
    /// It was asked to revoke partitions and has not reported them released yet.
    UnrevokedPartitions,
    /// It is at the new epoch but waits for partitions other members have not released.
    UnreleasedPartitions,
}

/// One member of a consumer-protocol group.
#[derive(Debug, Clone)]
pub(super) struct ConsumerMember {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) rack_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) rebalance_timeout: Duration,
    pub(super) subscribed_names: Vec<String>,
    pub(super) subscribed_regex: Option<String>,
    regex: Option<Regex>,
    pub(super) server_assignor: Option<String>,
    /// `STATIC_LEAVE_EPOCH` while a static member is away.
    pub(super) epoch: i32,
    previous_epoch: i32,
    pub(super) state: MemberState,
    /// What the member owns and keeps.
    pub(super) assigned: Assignment,
    /// What it owns and was asked to give up.
    pub(super) revoking: Assignment,
    session_deadline: Duration,
    revoke_deadline: Option<Duration>,
    /// The assignment the member was last told.
    last_sent: Option<Assignment>,
}

impl ConsumerMember {
    fn new(id: String, now: Duration, settings: &ConsumerSettings) -> Self {
        ConsumerMember {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout: Duration::ZERO,
            subscribed_names: Vec::new(),
            subscribed_regex: None,
            regex: None,
            server_assignor: None,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            session_deadline: now + settings.session_timeout,
            revoke_deadline: None,
            last_sent: None,
        }
    }

    /// The topics of `topics` the member subscribes to.
    fn subscribed(&self, topics: &TopicsView) -> BTreeSet<Uuid> {
        topics
            .iter()
            .filter(|(_, t)| {
                self.subscribed_names.contains(&t.name)
                    || self.regex.as_ref().is_some_and(|r| r.is_match(&t.name))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn owns(&self, topic: &Uuid, partition: i32) -> bool {
        [&self.assigned, &self.revoking]
            .iter()
            .any(|a| a.get(topic).is_some_and(|p| p.contains(&partition)))
    }
}

/// The state of a consumer-protocol group, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// One consumer-protocol group.
#[derive(Debug, Clone, Default)]
pub(super) struct ConsumerGroup {
    pub(super) group_epoch: i32,
    pub(super) assignment_epoch: i32,
    pub(super) members: BTreeMap<String, ConsumerMember>,
    /// Instance id to member id.
    statics: HashMap<String, String>,
    /// The target assignment of each member, for `assignment_epoch`.
    pub(super) target: BTreeMap<String, Assignment>,
    /// The subscribed topics as they were when the group epoch last moved.
    subscribed_topics: BTreeMap<Uuid, TopicMeta>,
    /// The assignor that computed the target.
    pub(super) assignor: String,
    /// Since when the group has no members (monotonic).
    pub(super) empty_since: Duration,
}

impl ConsumerGroup {
    /// An empty group.
    pub(super) fn new(now: Duration) -> Self {
        ConsumerGroup {
            assignor: ASSIGNORS[0].to_owned(),
            empty_since: now,
            ..ConsumerGroup::default()
        }
    }

    pub(super) fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.state != MemberState::Stable
                || (m.epoch != self.assignment_epoch && m.epoch != STATIC_LEAVE_EPOCH)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The topic names the members subscribe to (by name, or resolved from a pattern).
    pub(super) fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_names.iter().cloned())
            .collect();
        names.extend(self.subscribed_topics.values().map(|t| t.name.clone()));
        names
    }

    /// One heartbeat (already [validated](validate)). `new_member_id` makes a member id for
    /// a v0 join.
    pub(super) fn heartbeat(
        &mut self,
        req: HeartbeatInput,
        topics: &TopicsView,
        settings: &ConsumerSettings,
        now: Duration,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<HeartbeatOutput, Refusal> {
        match req.member_epoch {
            LEAVE_EPOCH => return self.leave(&req.member_id, now),
            STATIC_LEAVE_EPOCH => return self.leave_for_a_while(&req),
            _ => {}
        }
        let joining = req.member_epoch == JOIN_EPOCH;
        let id = if joining {
            self.join(&req, settings, now, new_member_id)?
        } else {
            let member = self.members.get(&req.member_id).ok_or_else(|| {
                refuse(
                    KafkaCode::UnknownMemberId,
                    format!("Member {} is not a member of the group.", req.member_id),
                )
            })?;
            check_epoch(member, req.member_epoch, req.owned.as_ref())?;
            req.member_id.clone()
        };
        let member = self
            .members
            .get_mut(&id)
            .expect("the member was just found");
        member.session_deadline = now + settings.session_timeout;
        let mut changed = joining && member.epoch == 0 && member.previous_epoch == -1;
        changed |= update(member, &req)?;
        changed |= self.refresh_topics(topics);
        if changed {
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(topics);
        }
        self.reconcile(&id, req.owned.as_ref(), now);
        let member = self
            .members
            .get_mut(&id)
            .expect("the member is in the group");
        let send = joining
            || member.last_sent.as_ref() != Some(&member.assigned)
            || req.owned.as_ref().is_some_and(|o| *o != member.assigned);
        let assignment = send.then(|| member.assigned.clone());
        if send {
            member.last_sent = Some(member.assigned.clone());
        }
        Ok(HeartbeatOutput {
            member_id: id,
            member_epoch: member.epoch,
            assignment,
        })
    }

    /// A join (epoch 0): a new member, a static member coming back, or a member starting
    /// over. Returns the member id.
    fn join(
        &mut self,
        req: &HeartbeatInput,
        settings: &ConsumerSettings,
        now: Duration,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<String, Refusal> {
        let id = if req.member_id.is_empty() {
            new_member_id()
        } else {
            req.member_id.clone()
        };
        if let Some(instance) = &req.instance_id
            && let Some(holder) = self.statics.get(instance).cloned()
            && holder != id
        {
            let away = self
                .members
                .get(&holder)
                .is_none_or(|m| m.epoch == STATIC_LEAVE_EPOCH);
            if !away {
                return Err(refuse(
                    KafkaCode::UnreleasedInstanceId,
                    format!(
                        "Static member {id} with instance id {instance} cannot join the group \
                         because the instance id is owned by {holder} member."
                    ),
                ));
            }
            // The static member comes back under a new member id: it takes over what its
            // previous incarnation had, epoch included, so the group does not rebalance.
            if let Some(mut member) = self.members.remove(&holder) {
                member.id = id.clone();
                member.epoch = member.previous_epoch.max(0);
                member.last_sent = None;
                self.members.insert(id.clone(), member);
                if let Some(target) = self.target.remove(&holder) {
                    self.target.insert(id.clone(), target);
                }
            }
            self.statics.insert(instance.clone(), id.clone());
            return Ok(id);
        }
        match self.members.get_mut(&id) {
            Some(member) => {
                if member.epoch == STATIC_LEAVE_EPOCH {
                    member.epoch = member.previous_epoch.max(0);
                } else {
                    // It starts over: whatever it owned, it has dropped (a join owns nothing).
                    member.assigned.clear();
                    member.revoking.clear();
                    member.state = MemberState::Stable;
                    member.revoke_deadline = None;
                    member.previous_epoch = member.epoch;
                    member.epoch = 0;
                }
                member.last_sent = None;
            }
            // An id the group does not know joins under that id: a v1 client makes its own,
            // and a v0 client that was fenced rejoins with the one it was given.
            None => {
                if self.members.len() >= settings.max_size {
                    return Err(refuse(
                        KafkaCode::GroupMaxSizeReached,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            settings.max_size
                        ),
                    ));
                }
                self.members
                    .insert(id.clone(), ConsumerMember::new(id.clone(), now, settings));
            }
        }
        if let Some(instance) = &req.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        Ok(id)
    }

    /// A leave (epoch -1): the member goes and its partitions are reassigned.
    fn leave(&mut self, member_id: &str, now: Duration) -> Result<HeartbeatOutput, Refusal> {
        if !self.members.contains_key(member_id) {
            return Err(refuse(
                KafkaCode::UnknownMemberId,
                format!("Member {member_id} is not a member of the group."),
            ));
        }
        self.remove(member_id, now);
        Ok(HeartbeatOutput {
            member_id: member_id.to_owned(),
            member_epoch: LEAVE_EPOCH,
            assignment: None,
        })
    }

    /// A static member's leave (epoch -2): it keeps its partitions until it comes back or
    /// its session expires.
    fn leave_for_a_while(&mut self, req: &HeartbeatInput) -> Result<HeartbeatOutput, Refusal> {
        let instance = req.instance_id.clone().unwrap_or_default();
        let Some(member) = self.members.get_mut(&req.member_id) else {
            return Err(refuse(
                KafkaCode::UnknownMemberId,
                format!("Member {} is not a member of the group.", req.member_id),
            ));
        };
        if member.instance_id.as_deref() != Some(instance.as_str()) {
            return Err(refuse(
                KafkaCode::FencedInstanceId,
                format!(
                    "Static member {} with instance id {instance} is not the member that \
                     holds the instance id.",
                    req.member_id
                ),
            ));
        }
        if member.epoch != STATIC_LEAVE_EPOCH {
            member.previous_epoch = member.epoch;
            member.epoch = STATIC_LEAVE_EPOCH;
        }
        Ok(HeartbeatOutput {
            member_id: req.member_id.clone(),
            member_epoch: STATIC_LEAVE_EPOCH,
            assignment: None,
        })
    }

    /// Takes a member out (it left or was fenced); its partitions are free at once.
    pub(super) fn remove(&mut self, member_id: &str, now: Duration) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.instance_id
            && self.statics.get(instance).is_some_and(|m| m == member_id)
        {
            self.statics.remove(instance);
        }
        self.target.remove(member_id);
        self.group_epoch += 1;
        if self.members.is_empty() {
            self.empty_since = now;
        }
    }

    /// Notices subscribed topics that appeared, grew or went; true if they changed.
    fn refresh_topics(&mut self, topics: &TopicsView) -> bool {
        let mut wanted = BTreeSet::new();
        for member in self.members.values() {
            wanted.extend(member.subscribed(topics));
        }
        let now: BTreeMap<Uuid, TopicMeta> = wanted
            .into_iter()
            .filter_map(|id| topics.get(&id).map(|t| (id, t.clone())))
            .collect();
        if now == self.subscribed_topics {
            return false;
        }
        self.subscribed_topics = now;
        true
    }

    /// Runs the assignor for the current group epoch.
    fn compute_target(&mut self, topics: &TopicsView) {
        let assignor = self.pick_assignor();
        let subscriptions: BTreeMap<String, BTreeSet<Uuid>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed(topics)))
            .collect();
        self.target = match assignor.as_str() {
            "range" => assign_range(&subscriptions, topics),
            _ => assign_uniform(&subscriptions, topics, &self.target),
        };
        self.assignor = assignor;
        self.assignment_epoch = self.group_epoch;
    }

    /// The assignor most members ask for (ties: the first in [`ASSIGNORS`]), else the
    /// default.
    fn pick_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        ASSIGNORS
            .iter()
            .find(|a| best > 0 && votes.get(**a) == Some(&best))
            .unwrap_or(&ASSIGNORS[0])
            .to_string()
    }

    /// Moves one member towards its target, as far as its report of what it owns allows.
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Duration) {
        let Some(member) = self.members.get(id) else {
            return;
        };
        match member.state {
            MemberState::UnrevokedPartitions => {
                let released = owned.is_some_and(|o| !intersects(o, &member.revoking));
                if released {
                    let member = self.members.get_mut(id).expect("present");
                    member.revoking.clear();
                    member.revoke_deadline = None;
                    self.advance(id, now);
                }
            }
            MemberState::UnreleasedPartitions => self.advance(id, now),
            MemberState::Stable => {
                if member.epoch != self.assignment_epoch {
                    self.advance(id, now);
                }
            }
        }
    }

    /// One step towards the target: revoke what must go, or else take the new epoch and
    /// every new partition no other member still owns.
    fn advance(&mut self, id: &str, now: Duration) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let taken: Vec<(Uuid, i32)> = target
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .filter(|(t, p)| self.members.values().any(|m| m.id != id && m.owns(t, *p)))
            .collect();
        let epoch = self.assignment_epoch;
        let member = self.members.get_mut(id).expect("present");
        let revoke = difference(&member.assigned, &target);
        if !revoke.is_empty() {
            member.assigned = intersection(&member.assigned, &target);
            member.revoking = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revoke_deadline = Some(now + member.rebalance_timeout);
            return;
        }
        let mut next = target;
        for (t, p) in &taken {
            if let Some(ps) = next.get_mut(t) {
                ps.remove(p);
            }
        }
        next.retain(|_, ps| !ps.is_empty());
        member.assigned = next;
        if member.epoch != epoch {
            member.previous_epoch = member.epoch;
            member.epoch = epoch;
        }
        member.revoke_deadline = None;
        member.state = if taken.is_empty() {
            MemberState::Stable
        } else {
            MemberState::UnreleasedPartitions
        };
    }

    /// Fences members whose session expired or who did not revoke in time. True if any
    /// member went.
    pub(super) fn tick(&mut self, now: Duration) -> bool {
        let doomed: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revoke_deadline.is_some_and(|d| d <= now))
            .map(|m| m.id.clone())
            .collect();
        for id in &doomed {
            self.remove(id, now);
        }
        !doomed.is_empty()
    }

    /// The earliest moment [`tick`](Self::tick) has something to do.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline), m.revoke_deadline])
            .flatten()
            .min()
    }

    /// Checks the member fields of an offset commit: a negative epoch may only commit for a
    /// group without members; otherwise the member must exist and be at that epoch.
    /// `version` is the OffsetCommit version (`None`: a transactional commit).
    pub(super) fn validate_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: Option<i16>,
    ) -> Result<(), KafkaCode> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(KafkaCode::UnknownMemberId)?;
        if version.is_some_and(|v| v < 9) {
            return Err(KafkaCode::UnsupportedVersion);
        }
        if member_epoch != member.epoch {
            return Err(KafkaCode::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Checks the member fields of an offset fetch (OffsetFetch v9+): none, or a member at
    /// its current epoch.
    pub(super) fn validate_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), KafkaCode> {
        let Some(member_id) = member_id else {
            return Ok(());
        };
        if member_epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(KafkaCode::UnknownMemberId)?;
        if member_epoch != member.epoch {
            return Err(KafkaCode::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// Refuses an epoch that is not the member's (FENCED_MEMBER_EPOCH), except the epoch just
/// before it when the member shows it owns no more than it was given (its last answer was
/// lost).
fn check_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), Refusal> {
    if received > member.epoch {
        return Err(refuse(
            KafkaCode::FencedMemberEpoch,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one \
                 known by the group coordinator ({}). The member must abandon all its \
                 partitions and rejoin.",
                member.epoch
            ),
        ));
    }
    if received < member.epoch {
        let lost_answer = received == member.previous_epoch
            && owned.is_some_and(|o| difference(o, &member.assigned).is_empty());
        if !lost_answer {
            return Err(refuse(
                KafkaCode::FencedMemberEpoch,
                format!(
                    "The consumer group member has a smaller member epoch ({received}) than the \
                     one known by the group coordinator ({}). The member must abandon all its \
                     partitions and rejoin.",
                    member.epoch
                ),
            ));
        }
    }
    Ok(())
}

/// Applies the fields a heartbeat sets; true if the subscription or the assignor changed.
fn update(member: &mut ConsumerMember, req: &HeartbeatInput) -> Result<bool, Refusal> {
    let mut changed = false;
    if req.instance_id.is_some() {
        member.instance_id = req.instance_id.clone();
    }
    if req.rack_id.is_some() {
        member.rack_id = req.rack_id.clone();
    }
    if req.rebalance_timeout_ms >= 0 {
        member.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
    }
    if !req.client_id.is_empty() {
        member.client_id = req.client_id.clone();
    }
    if !req.client_host.is_empty() {
        member.client_host = req.client_host.clone();
    }
    if let Some(names) = &req.subscribed_topic_names {
        let mut names = names.clone();
        names.sort();
        names.dedup();
        if names != member.subscribed_names {
            member.subscribed_names = names;
            changed = true;
        }
    }
    if let Some(pattern) = &req.subscribed_topic_regex {
        let pattern = (!pattern.is_empty()).then(|| pattern.clone());
        if pattern != member.subscribed_regex {
            member.regex = pattern.as_deref().map(compile).transpose()?;
            member.subscribed_regex = pattern;
            changed = true;
        }
    }
    if req.server_assignor.is_some() && req.server_assignor != member.server_assignor {
        member.server_assignor = req.server_assignor.clone();
        changed = true;
    }
    Ok(changed)
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|qs| !ps.is_disjoint(qs)))
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let left: BTreeSet<i32> = match b.get(t) {
                Some(qs) => ps.difference(qs).copied().collect(),
                None => ps.clone(),
            };
            (!left.is_empty()).then_some((*t, left))
        })
        .collect()
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let both: BTreeSet<i32> = ps.intersection(b.get(t)?).copied().collect();
            (!both.is_empty()).then_some((*t, both))
        })
        .collect()
}

/// `uniform`: every partition of a subscribed topic goes to one of its subscribers, loads
/// differ by at most one between members that could trade, and a partition stays with its
/// previous owner where that keeps the balance.
pub(super) fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    topics: &TopicsView,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut load: BTreeMap<&str, usize> = subscriptions.keys().map(|m| (m.as_str(), 0)).collect();
    let partitions: Vec<(Uuid, i32)> = topics
        .iter()
        .filter(|(id, _)| subscriptions.values().any(|s| s.contains(id)))
        .flat_map(|(id, t)| (0..t.partitions).map(move |p| (*id, p)))
        .collect();
    let total = partitions.len();
    let members = subscriptions.len().max(1);
    let ceiling = total.div_ceil(members);
    let mut unplaced = Vec::new();
    // Sticky pass: previous owners keep what they still subscribe to, up to a fair share.
    for (t, p) in &partitions {
        let keeper = previous.iter().find(|(m, a)| {
            a.get(t).is_some_and(|ps| ps.contains(p))
                && subscriptions.get(*m).is_some_and(|s| s.contains(t))
        });
        match keeper {
            Some((m, _)) if load[m.as_str()] < ceiling => {
                out.get_mut(m)
                    .expect("known")
                    .entry(*t)
                    .or_default()
                    .insert(*p);
                *load.get_mut(m.as_str()).expect("known") += 1;
            }
            _ => unplaced.push((*t, *p)),
        }
    }
    for (t, p) in unplaced {
        let least = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(&t))
            .min_by_key(|(m, _)| (load[m.as_str()], (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = least {
            out.get_mut(&m)
                .expect("known")
                .entry(t)
                .or_default()
                .insert(p);
            *load.get_mut(m.as_str()).expect("known") += 1;
        }
    }
    // Balance: move a partition from a member to one that could take it while their loads
    // differ by more than one. Each move lowers the sum of squared loads, so this ends.
    loop {
        let mut moved = false;
        'search: for from in subscriptions.keys() {
            for (t, ps) in out[from].clone() {
                for p in ps {
                    let to = subscriptions
                        .iter()
                        .filter(|(m, s)| *m != from && s.contains(&t))
                        .filter(|(m, _)| load[m.as_str()] + 1 < load[from.as_str()])
                        .min_by_key(|(m, _)| (load[m.as_str()], (*m).clone()))
                        .map(|(m, _)| m.clone());
                    if let Some(to) = to {
                        let source = out.get_mut(from).expect("known");
                        if let Some(set) = source.get_mut(&t) {
                            set.remove(&p);
                            if set.is_empty() {
                                source.remove(&t);
                            }
                        }
                        out.get_mut(&to)
                            .expect("known")
                            .entry(t)
                            .or_default()
                            .insert(p);
                        *load.get_mut(from.as_str()).expect("known") -= 1;
                        *load.get_mut(to.as_str()).expect("known") += 1;
                        moved = true;
                        break 'search;
                    }
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

/// `range`: for each topic, its subscribers in member-id order take consecutive ranges of
/// partitions, the first ones one more when the count does not divide evenly.
pub(super) fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    topics: &TopicsView,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (id, topic) in topics {
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(id))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let count = usize::try_from(topic.partitions).unwrap_or(0);
        let each = count / subscribers.len();
        let extra = count % subscribers.len();
        let mut next = 0;
        for (i, m) in subscribers.iter().enumerate() {
            let n = each + usize::from(i < extra);
            if n > 0 {
                out.get_mut(*m)
                    .expect("known")
                    .insert(*id, (next..next + n).map(|p| p as i32).collect());
            }
            next += n;
        }
    }
    out
}

#[cfg(test)]
mod tests;
