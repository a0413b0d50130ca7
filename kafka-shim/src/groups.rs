//! The classic consumer-group coordinator and committed offsets.
//!
//! This node coordinates every group. Membership (the JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup protocol) lives in memory only, as it does on a Kafka broker that just became
//! coordinator: clients rejoin after a restart. Committed offsets are durable: each
//! OffsetCommit is written to the metadata key-value store before the reply, under
//! `{prefix}/groups/{group}/offsets/{topic}/{partition}` (names percent-encoded, see
//! [`encode_name`]) with a small JSON value, and they are loaded back by
//! [`GroupCoordinator::open`].
//!
//! One mutex guards the groups; it is never held across an `.await`. Requests that must wait
//! (a JoinGroup until the rebalance completes, a follower's SyncGroup until the leader's
//! assignment arrives) park a one-shot sender in the member and await the receiver outside the
//! lock. One background task (the reaper) sleeps until the earliest deadline (session expiry,
//! rebalance timeout, pending-member expiry, offset retention) and is woken whenever a request
//! changes the groups. It uses tokio time, so tests can pause the clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tokio::sync::{Notify, oneshot};
use wal::clock::{Clock, ClockRef, SystemClock};
use wal::meta::kv::{Kv, KvError, Txn, TxnOp};

use crate::TopicCatalog;

/// Largest `committed_metadata` accepted, in bytes (Kafka's `offset.metadata.max.bytes`).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// Most operations put in one key-value transaction (the embedded store's and etcd's limit).
const MAX_OPS_PER_TXN: usize = 128;

/// How long an Empty group without members, pending members or offsets is kept before it is
/// forgotten (Kafka's `offsets.retention.check.interval.ms`).
const EMPTY_GROUP_LINGER: Duration = Duration::from_secs(600);

/// Longest pause between two offset-retention checks.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// Shortest pause between two offset-retention checks.
const MIN_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Coordinator settings (Kafka's `group.*` and `offsets.*` broker settings).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// How long a rebalance of an Empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`; Kafka's default is 3 s, ours 100 ms).
    pub initial_rebalance_delay: Duration,
    /// Smallest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout: Duration,
    /// Largest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout: Duration,
    /// How long the offsets of an Empty group are kept (`offsets.retention.minutes`);
    /// `None` keeps them forever.
    pub offsets_retention: Option<Duration>,
    /// The coordinator's time: session and rebalance timeouts, offset retention.
    pub clock: ClockRef,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(100),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            offsets_retention: None,
            clock: SystemClock::shared(),
        }
    }
}

/// Failures of the coordinator outside the Kafka protocol (those become error codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The metadata store failed.
    #[error("group metadata store: {0}")]
    Kv(#[from] KvError),
    /// A stored offset could not be read back.
    #[error("stored offset under {key} is damaged: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The state of a classic group, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (may still have committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assignment delivered.
    Stable,
    /// Unknown or deleted group.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One committed offset, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredOffset {
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    commit_timestamp_ms: i64,
}

#[derive(Debug)]
struct JoinWaiter {
    tx: oneshot::Sender<JoinGroupResponse>,
    version: i16,
}

#[derive(Debug)]
struct SyncWaiter {
    tx: oneshot::Sender<SyncGroupResponse>,
    version: i16,
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    assignment: Bytes,
    join: Option<JoinWaiter>,
    sync: Option<SyncWaiter>,
    /// When the session expires unless the member shows up (ignored while it waits).
    deadline: Instant,
}

impl Member {
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(name, _)| name == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn fail_waiters(&mut self, error: ResponseError) {
        if let Some(w) = self.join.take() {
            let _ = w.tx.send(join_error(w.version, error, &self.id));
        }
        if let Some(w) = self.sync.take() {
            let _ = w.tx.send(sync_error(error));
        }
    }
}

/// The initial delay of a rebalance that started from Empty.
#[derive(Debug)]
struct InitialDelay {
    /// The delay never extends past this.
    limit: Instant,
    /// A member joined since the delay was (re)armed.
    member_added: bool,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order; the leader is normally the first.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Instant>,
    /// group.instance.id to member id.
    statics: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    initial: Option<InitialDelay>,
    /// Since when the group is Empty (monotonic), for forgetting it.
    empty_since: Instant,
    /// Since when the group is Empty (wall clock), for offset retention.
    empty_since_ms: i64,
    offsets: BTreeMap<String, BTreeMap<i32, StoredOffset>>,
    /// The coordinator's clock.
    clock: ClockRef,
}

impl Group {
    fn new(clock: &ClockRef) -> Self {
        let now = clock.now();
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: None,
            initial: None,
            empty_since: now,
            empty_since_ms: wall_ms(clock.as_ref()),
            offsets: BTreeMap::new(),
            clock: clock.clone(),
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn is_leader(&self, id: &str) -> bool {
        self.leader.as_deref() == Some(id)
    }

    /// Whether a static member's id is stale (another member holds its instance id).
    fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        instance_id
            .and_then(|i| self.statics.get(i))
            .is_some_and(|holder| holder != member_id)
    }

    /// Checks a request from a current member: fencing, membership, generation.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if self.is_fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if self.member(member_id).is_none() {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Whether a member (other than `except`) can join with these protocols.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], except: &str) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self.members.iter().filter(|m| m.id != except).collect();
        if others.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            let choice = m
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name));
            if let Some(i) = choice {
                votes[i] += 1;
            }
        }
        let mut best: Option<usize> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|b| *v > votes[b]) {
                best = Some(i);
            }
        }
        best.map(|i| candidates[i].to_owned())
    }

    fn add_member(&mut self, member: Member, now: Instant, settings: &GroupSettings) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.statics.insert(instance.clone(), member.id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        self.members.push(member);
        if self.state == GroupState::PreparingRebalance {
            if let Some(initial) = &mut self.initial {
                initial.member_added = true;
            }
        } else {
            self.prepare_rebalance(now, settings);
        }
        self.try_complete_join(now);
    }

    /// Removes a member; its parked requests get `error`.
    fn remove_member(&mut self, id: &str, error: ResponseError) -> bool {
        let Some(pos) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        let mut member = self.members.remove(pos);
        member.fail_waiters(error);
        if let Some(instance) = &member.instance_id
            && self.statics.get(instance).is_some_and(|m| *m == member.id)
        {
            self.statics.remove(instance);
        }
        if self.is_leader(id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        true
    }

    /// Reacts to members having left or expired.
    fn after_departure(&mut self, now: Instant, settings: &GroupSettings) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, settings);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, settings: &GroupSettings) {
        if self.state == GroupState::CompletingRebalance {
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync.take() {
                    let _ = w.tx.send(sync_error(ResponseError::RebalanceInProgress));
                    // It waited; its session starts over from the answer.
                    m.deadline = now + m.session_timeout;
                }
            }
        }
        let timeout = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == GroupState::Empty {
            self.initial = Some(InitialDelay {
                limit: now + timeout,
                member_added: false,
            });
            self.rebalance_deadline = Some(now + settings.initial_rebalance_delay.min(timeout));
        } else {
            self.initial = None;
            self.rebalance_deadline = Some(now + timeout);
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase when every member has rejoined (outside the initial delay).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance
            && self.initial.is_none()
            && self.pending.is_empty()
            && self.members.iter().all(|m| m.join.is_some())
        {
            self.complete_join(now);
        }
    }

    /// The rebalance timeout (or initial delay) passed.
    fn rebalance_timed_out(&mut self, now: Instant, settings: &GroupSettings) {
        if let Some(initial) = &mut self.initial {
            if initial.member_added && now < initial.limit {
                initial.member_added = false;
                self.rebalance_deadline =
                    Some((now + settings.initial_rebalance_delay).min(initial.limit));
                return;
            }
            self.initial = None;
        }
        // Dynamic members that did not rejoin are gone; static ones stay (as in Kafka) and
        // find out about the new generation when they heartbeat.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, ResponseError::UnknownMemberId);
        }
        self.complete_join(now);
    }

    fn complete_join(&mut self, now: Instant) {
        self.initial = None;
        self.rebalance_deadline = None;
        self.generation = self.generation.wrapping_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.become_empty(now);
            return;
        }
        if self
            .leader
            .as_deref()
            .is_none_or(|l| self.member(l).is_none())
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.protocol_type = self.members.first().map(|m| m.protocol_type.clone());
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        for i in 0..self.members.len() {
            self.members[i].deadline = now + self.members[i].session_timeout;
            if let Some(w) = self.members[i].join.take() {
                let response = self.current_join_response(&self.members[i].id, w.version);
                let _ = w.tx.send(response);
            }
        }
    }

    fn become_empty(&mut self, now: Instant) {
        self.state = GroupState::Empty;
        self.empty_since = now;
        self.empty_since_ms = wall_ms(self.clock.as_ref());
    }

    /// The JoinGroup answer describing the current generation to `member_id`.
    fn current_join_response(&self, member_id: &str, version: i16) -> JoinGroupResponse {
        let members = if self.is_leader(member_id) {
            self.members
                .iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(sb(&m.id))
                        .with_group_instance_id(if version >= 5 {
                            m.instance_id.as_deref().map(sb)
                        } else {
                            None
                        })
                        .with_metadata(m.metadata_for(self.protocol_name.as_deref()))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_error_code(0)
            .with_generation_id(self.generation)
            .with_protocol_type(if version >= 7 {
                self.protocol_type.as_deref().map(sb)
            } else {
                None
            })
            .with_protocol_name(protocol_name_for(version, self.protocol_name.as_deref()))
            .with_leader(sb(self.leader.as_deref().unwrap_or("")))
            .with_member_id(sb(member_id))
            .with_members(members)
    }

    fn sync_response(&self, version: i16, assignment: Bytes) -> SyncGroupResponse {
        let mut response = SyncGroupResponse::default()
            .with_error_code(0)
            .with_assignment(assignment);
        if version >= 5 {
            response = response
                .with_protocol_type(self.protocol_type.as_deref().map(sb))
                .with_protocol_name(self.protocol_name.as_deref().map(sb));
        }
        response
    }

    /// Runs the timers due at `now`.
    fn tick(&mut self, now: Instant, settings: &GroupSettings) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.join.is_none() && m.sync.is_none() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::debug!(member = %id, "group member session expired");
            self.remove_member(id, ResponseError::UnknownMemberId);
        }
        if !expired.is_empty() {
            self.after_departure(now, settings);
        } else if self.pending.len() != pending_before {
            self.try_complete_join(now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| d <= now)
        {
            self.rebalance_timed_out(now, settings);
        }
    }

    /// Whether the group can be forgotten (nothing left in it).
    fn is_vacant(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
    }

    /// The earliest moment [`Group::tick`] has something to do.
    fn next_deadline(&self) -> Option<Instant> {
        let members = self
            .members
            .iter()
            .filter(|m| m.join.is_none() && m.sync.is_none())
            .map(|m| m.deadline);
        let rebalance = if self.state == GroupState::PreparingRebalance {
            self.rebalance_deadline
        } else {
            None
        };
        let vacant = self
            .is_vacant()
            .then_some(self.empty_since + EMPTY_GROUP_LINGER);
        members
            .chain(self.pending.values().copied())
            .chain(rebalance)
            .chain(vacant)
            .min()
    }
}

#[derive(Debug)]
struct State {
    groups: HashMap<String, Group>,
    next_retention_check: Option<Instant>,
    /// Offsets committed inside open transactions (TxnOffsetCommit): group -> producer id ->
    /// partition -> offset. They become committed offsets when the transaction commits.
    txn_pending: HashMap<String, HashMap<i64, StagedOffsets>>,
}

/// Offsets one transaction staged for one group, by (topic, partition).
type StagedOffsets = BTreeMap<(String, i32), StoredOffset>;

/// An offset committed inside a transaction (TxnOffsetCommit), pending until it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset.
    pub offset: i64,
    /// The leader epoch the client gave (-1: none).
    pub leader_epoch: i32,
    /// The metadata the client gave.
    pub metadata: Option<String>,
}

struct Shared {
    kv: Arc<dyn Kv>,
    /// Key prefix without a trailing '/'.
    prefix: String,
    settings: GroupSettings,
    state: Mutex<State>,
    /// Serializes writes of offsets (commits, deletions, expiry) with their cache updates.
    persist: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Set by [`GroupCoordinator::shutdown`]: nothing may park any more.
    closed: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = self.state.try_lock().map(|s| s.groups.len()).ok();
        f.debug_struct("GroupCoordinator")
            .field("kv", &self.kv)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .field("groups", &groups)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn groups_key(&self) -> String {
        format!("{}/groups/", self.prefix)
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}/groups/{}/", self.prefix, encode_name(group))
    }

    fn topic_key(&self, group: &str, topic: &str) -> String {
        format!(
            "{}/groups/{}/offsets/{}/",
            self.prefix,
            encode_name(group),
            encode_name(topic)
        )
    }

    fn offset_key(&self, group: &str, topic: &str, partition: i32) -> String {
        format!("{}{partition}", self.topic_key(group, topic))
    }

    /// Runs due timers; returns the next deadline and whether offset retention is due.
    fn tick(&self, now: Instant) -> (Option<Instant>, bool) {
        let mut state = self.lock();
        let mut next: Option<Instant> = None;
        for group in state.groups.values_mut() {
            group.tick(now, &self.settings);
        }
        state
            .groups
            .retain(|_, g| !(g.is_vacant() && g.empty_since + EMPTY_GROUP_LINGER <= now));
        for group in state.groups.values() {
            next = min_opt(next, group.next_deadline());
        }
        let mut retention_due = false;
        if let Some(retention) = self.settings.offsets_retention {
            let check = state.next_retention_check.unwrap_or(now);
            if check <= now {
                retention_due = true;
                let pause = retention
                    .min(RETENTION_CHECK_INTERVAL)
                    .max(MIN_RETENTION_CHECK_INTERVAL);
                state.next_retention_check = Some(now + pause);
            }
            next = min_opt(next, state.next_retention_check);
        }
        (next, retention_due)
    }

    /// Deletes the offsets of Empty groups older than the retention.
    async fn expire_offsets(&self) {
        let Some(retention) = self.settings.offsets_retention else {
            return;
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let _persist = self.persist.lock().await;
        let now_ms = wall_ms(self.settings.clock.as_ref());
        let mut doomed = Vec::new();
        {
            let mut state = self.lock();
            for (group_id, group) in &mut state.groups {
                if group.state != GroupState::Empty {
                    continue;
                }
                let since = group.empty_since_ms;
                for (topic, partitions) in &mut group.offsets {
                    partitions.retain(|partition, o| {
                        let expired = o
                            .commit_timestamp_ms
                            .max(since)
                            .saturating_add(retention_ms)
                            <= now_ms;
                        if expired {
                            doomed.push(self.offset_key(group_id, topic, *partition));
                        }
                        !expired
                    });
                }
                group.offsets.retain(|_, partitions| !partitions.is_empty());
            }
        }
        for chunk in doomed.chunks(MAX_OPS_PER_TXN) {
            let txn = Txn {
                success: chunk
                    .iter()
                    .map(|key| TxnOp::Delete { key: key.clone() })
                    .collect(),
                ..Txn::default()
            };
            if let Err(e) = self.kv.txn(txn).await {
                tracing::warn!(error = %e, "could not delete expired group offsets");
            }
        }
    }
}

/// The group coordinator of this node. Share it as `Arc<GroupCoordinator>`.
#[derive(Debug)]
pub struct GroupCoordinator {
    shared: Arc<Shared>,
    reaper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for GroupCoordinator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Reply<T, R> {
    Now(T),
    Wait(oneshot::Receiver<R>),
}

impl GroupCoordinator {
    /// Opens the coordinator: loads the committed offsets under `{prefix}/groups/` from `kv`
    /// and starts the timer task (on the current tokio runtime).
    pub async fn open(
        kv: Arc<dyn Kv>,
        prefix: &str,
        settings: GroupSettings,
    ) -> Result<Arc<GroupCoordinator>, GroupError> {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            kv,
            prefix,
            settings,
            state: Mutex::new(State {
                groups: HashMap::new(),
                next_retention_check: None,
                txn_pending: HashMap::new(),
            }),
            persist: tokio::sync::Mutex::new(()),
            wake: wake.clone(),
            closed: AtomicBool::new(false),
        });
        let root = shared.groups_key();
        let (kvs, _) = shared.kv.get_prefix(&root).await?;
        {
            let mut state = shared.lock();
            for entry in kvs {
                let Some(rest) = entry.key.strip_prefix(&root) else {
                    continue;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                let [group, "offsets", topic, partition] = parts.as_slice() else {
                    tracing::warn!(key = %entry.key, "ignoring unexpected key under the groups prefix");
                    continue;
                };
                let corrupt = |detail: String| GroupError::Corrupt {
                    key: entry.key.clone(),
                    detail,
                };
                let partition: i32 = partition
                    .parse()
                    .map_err(|e| corrupt(format!("partition: {e}")))?;
                let group = decode_name(group).ok_or_else(|| corrupt("group name".into()))?;
                let topic = decode_name(topic).ok_or_else(|| corrupt("topic name".into()))?;
                let offset: StoredOffset =
                    serde_json::from_slice(&entry.value).map_err(|e| corrupt(e.to_string()))?;
                state
                    .groups
                    .entry(group)
                    .or_insert_with(|| Group::new(&shared.settings.clock))
                    .offsets
                    .entry(topic)
                    .or_default()
                    .insert(partition, offset);
            }
        }
        let task = tokio::spawn(reaper(Arc::downgrade(&shared), wake));
        Ok(Arc::new(GroupCoordinator {
            shared,
            reaper: Mutex::new(Some(task.abort_handle())),
        }))
    }

    /// Stops the timers and answers every parked JoinGroup/SyncGroup, and every later one,
    /// with COORDINATOR_NOT_AVAILABLE. Idempotent.
    pub fn shutdown(&self) {
        let handle = self.reaper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.abort();
        }
        let mut state = self.shared.lock();
        self.shared.closed.store(true, Ordering::Release);
        for group in state.groups.values_mut() {
            for m in &mut group.members {
                m.fail_waiters(ResponseError::CoordinatorNotAvailable);
            }
        }
    }

    /// The state of a group (`Dead` when unknown), for the server and tests.
    pub fn group_state(&self, group_id: &str) -> GroupState {
        self.shared
            .lock()
            .groups
            .get(group_id)
            .map_or(GroupState::Dead, |g| g.state)
    }

    fn settings(&self) -> &GroupSettings {
        &self.shared.settings
    }

    /// JoinGroup (v0-9). May wait until the rebalance completes.
    pub async fn join_group(&self, req: JoinGroupRequest, version: i16) -> JoinGroupResponse {
        let reply = self.join_locked(&req, version);
        self.shared.wake.notify_one();
        match reply {
            Reply::Now(response) => response,
            Reply::Wait(rx) => rx.await.unwrap_or_else(|_| {
                join_error(
                    version,
                    ResponseError::CoordinatorNotAvailable,
                    &req.member_id,
                )
            }),
        }
    }

    fn join_locked(
        &self,
        req: &JoinGroupRequest,
        version: i16,
    ) -> Reply<JoinGroupResponse, JoinGroupResponse> {
        let now = self.settings().clock.now();
        let settings = self.settings();
        let group_id: &str = &req.group_id;
        let member_id: &str = &req.member_id;
        let fail = |e: ResponseError| Reply::Now(join_error(version, e, member_id));
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let session = millis(req.session_timeout_ms);
        if req.session_timeout_ms < 0
            || session < settings.min_session_timeout
            || session > settings.max_session_timeout
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        let rebalance = if version == 0 || req.rebalance_timeout_ms <= 0 {
            session
        } else {
            millis(req.rebalance_timeout_ms)
        };
        let instance_id = if version >= 5 {
            req.group_instance_id
                .as_deref()
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
        } else {
            None
        };
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let protocol_type = req.protocol_type.to_string();

        let mut state = self.shared.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let groups = &mut state.groups;
        if member_id.is_empty() {
            let created = !groups.contains_key(group_id);
            let group = groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Group::new(&self.settings().clock));
            let reply = join_new_member(
                group,
                settings,
                version,
                now,
                instance_id,
                protocol_type,
                protocols,
                session,
                rebalance,
            );
            if created && group.is_vacant() {
                groups.remove(group_id);
            }
            return reply;
        }
        let Some(group) = groups.get_mut(group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if group.is_fenced(instance_id.as_deref(), member_id) {
            return fail(ResponseError::FencedInstanceId);
        }
        if !group.supports(&protocol_type, &protocols, member_id) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if group.pending.remove(member_id).is_some() {
            let (tx, rx) = oneshot::channel();
            let member = Member {
                id: member_id.to_owned(),
                instance_id,
                protocol_type,
                protocols,
                session_timeout: session,
                rebalance_timeout: rebalance,
                assignment: Bytes::new(),
                join: Some(JoinWaiter { tx, version }),
                sync: None,
                deadline: now + session,
            };
            group.add_member(member, now, settings);
            return Reply::Wait(rx);
        }
        let state_now = group.state;
        let is_leader = group.is_leader(member_id);
        let Some(member) = group.member_mut(member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        member.deadline = now + session;
        let unchanged = member.protocols == protocols;
        match state_now {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance if unchanged => {
                Reply::Now(group.current_join_response(member_id, version))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Reply::Now(group.current_join_response(member_id, version))
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = member.join.take() {
                    let _ = old.tx.send(join_error(
                        old.version,
                        ResponseError::RebalanceInProgress,
                        member_id,
                    ));
                }
                member.protocol_type = protocol_type;
                member.protocols = protocols;
                member.session_timeout = session;
                member.rebalance_timeout = rebalance;
                member.join = Some(JoinWaiter { tx, version });
                if state_now != GroupState::PreparingRebalance {
                    group.prepare_rebalance(now, settings);
                }
                group.try_complete_join(now);
                Reply::Wait(rx)
            }
        }
    }

    /// SyncGroup (v0-5). A follower may wait for the leader's assignment.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let reply = self.sync_locked(&req, version);
        self.shared.wake.notify_one();
        match reply {
            Reply::Now(response) => response,
            Reply::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| sync_error(ResponseError::CoordinatorNotAvailable)),
        }
    }

    fn sync_locked(
        &self,
        req: &SyncGroupRequest,
        version: i16,
    ) -> Reply<SyncGroupResponse, SyncGroupResponse> {
        let now = self.settings().clock.now();
        let fail = |e: ResponseError| Reply::Now(sync_error(e));
        if req.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let member_id: &str = &req.member_id;
        let instance_id = if version >= 3 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let mut state = self.shared.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let Some(group) = state.groups.get_mut(req.group_id.as_str()) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if let Err(e) = group.validate_member(member_id, instance_id, req.generation_id) {
            return fail(e);
        }
        if version >= 5 {
            let type_ok = req
                .protocol_type
                .as_deref()
                .is_none_or(|t| group.protocol_type.as_deref() == Some(t));
            let name_ok = req
                .protocol_name
                .as_deref()
                .is_none_or(|n| group.protocol_name.as_deref() == Some(n));
            if !type_ok || !name_ok {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let Some(member) = group.member_mut(member_id) else {
                    return fail(ResponseError::UnknownMemberId);
                };
                member.deadline = now + member.session_timeout;
                let assignment = member.assignment.clone();
                Reply::Now(group.sync_response(version, assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let is_leader = group.is_leader(member_id);
                let Some(member) = group.member_mut(member_id) else {
                    return fail(ResponseError::UnknownMemberId);
                };
                member.deadline = now + member.session_timeout;
                if let Some(old) = member.sync.take() {
                    let _ = old.tx.send(sync_error(ResponseError::RebalanceInProgress));
                }
                member.sync = Some(SyncWaiter { tx, version });
                if is_leader {
                    // The last assignment of a member wins; members left out get nothing.
                    let assignments: HashMap<&str, &Bytes> = req
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.as_str(), &a.assignment))
                        .collect();
                    for m in &mut group.members {
                        m.assignment = assignments
                            .get(m.id.as_str())
                            .map(|a| (*a).clone())
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    for i in 0..group.members.len() {
                        if let Some(w) = group.members[i].sync.take() {
                            group.members[i].deadline = now + group.members[i].session_timeout;
                            let response =
                                group.sync_response(w.version, group.members[i].assignment.clone());
                            let _ = w.tx.send(response);
                        }
                    }
                }
                Reply::Wait(rx)
            }
        }
    }

    /// Heartbeat (v0-4).
    pub async fn heartbeat(&self, req: HeartbeatRequest, version: i16) -> HeartbeatResponse {
        let code = match self.heartbeat_locked(&req, version) {
            Ok(()) => 0,
            Err(e) => e.code(),
        };
        // A heartbeat only pushes a deadline later: the reaper need not look again.
        HeartbeatResponse::default().with_error_code(code)
    }

    fn heartbeat_locked(&self, req: &HeartbeatRequest, version: i16) -> Result<(), ResponseError> {
        let now = self.settings().clock.now();
        if req.group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let instance_id = if version >= 3 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let mut state = self.shared.lock();
        let group = state
            .groups
            .get_mut(req.group_id.as_str())
            .ok_or(ResponseError::UnknownMemberId)?;
        if matches!(group.state, GroupState::Empty | GroupState::Dead) {
            return Err(ResponseError::UnknownMemberId);
        }
        group.validate_member(&req.member_id, instance_id, req.generation_id)?;
        let rebalancing = group.state == GroupState::PreparingRebalance;
        if let Some(member) = group.member_mut(&req.member_id) {
            member.deadline = now + member.session_timeout;
        }
        if rebalancing {
            Err(ResponseError::RebalanceInProgress)
        } else {
            Ok(())
        }
    }

    /// LeaveGroup (v0-5): one member (v0-2) or a batch (v3+).
    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_deref().map(str::to_owned),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let (top, results) = self.leave_locked(&req.group_id, &leaving);
        self.shared.wake.notify_one();
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            response = response.with_error_code(top).with_members(
                leaving
                    .iter()
                    .zip(&results)
                    .map(|((member_id, instance_id), code)| {
                        MemberResponse::default()
                            .with_member_id(sb(member_id))
                            .with_group_instance_id(instance_id.as_deref().map(sb))
                            .with_error_code(*code)
                    })
                    .collect(),
            );
        } else {
            let code = if top != 0 {
                top
            } else {
                results.first().copied().unwrap_or(0)
            };
            response = response.with_error_code(code);
        }
        response
    }

    fn leave_locked(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>) {
        let now = self.settings().clock.now();
        if group_id.is_empty() {
            return (ResponseError::InvalidGroupId.code(), vec![0; leaving.len()]);
        }
        let mut state = self.shared.lock();
        let Some(group) = state.groups.get_mut(group_id) else {
            return (
                0,
                vec![ResponseError::UnknownMemberId.code(); leaving.len()],
            );
        };
        let mut departed = false;
        let mut pending_left = false;
        let mut codes = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let code = match instance_id {
                Some(instance) => match group.statics.get(instance).cloned() {
                    Some(holder) if !member_id.is_empty() && holder != *member_id => {
                        ResponseError::FencedInstanceId.code()
                    }
                    Some(holder) => {
                        departed |= group.remove_member(&holder, ResponseError::UnknownMemberId);
                        0
                    }
                    None => ResponseError::UnknownMemberId.code(),
                },
                None => {
                    if group.pending.remove(member_id).is_some() {
                        pending_left = true;
                        0
                    } else if group.remove_member(member_id, ResponseError::UnknownMemberId) {
                        departed = true;
                        0
                    } else {
                        ResponseError::UnknownMemberId.code()
                    }
                }
            };
            codes.push(code);
        }
        if departed {
            group.after_departure(now, &self.shared.settings);
        } else if pending_left {
            group.try_complete_join(now);
        }
        (0, codes)
    }

    /// OffsetCommit (v2-9). Durable before it answers.
    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
        topics: &dyn TopicCatalog,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.to_string();
        // One code per requested partition, in request order.
        let mut codes: Vec<Vec<i16>> = req
            .topics
            .iter()
            .map(|t| vec![0; t.partitions.len()])
            .collect();
        let _persist = self.shared.persist.lock().await;
        let verdict = if group_id.is_empty() {
            Err(ResponseError::InvalidGroupId)
        } else {
            self.validate_commit(&req, version)
        };
        match verdict {
            Err(e) => {
                for code in codes.iter_mut().flatten() {
                    *code = e.code();
                }
            }
            Ok(()) => {
                self.write_offsets(&group_id, &req, version, topics, &mut codes)
                    .await;
            }
        }
        drop(_persist);
        self.shared.wake.notify_one();
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .zip(codes)
                .map(|(t, codes)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(codes)
                                .map(|(p, code)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    fn validate_commit(
        &self,
        req: &OffsetCommitRequest,
        version: i16,
    ) -> Result<(), ResponseError> {
        let instance_id = if version >= 7 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        self.validate_member_commit(
            req.group_id.as_str(),
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            instance_id,
        )
    }

    /// Checks the member fields of a commit (OffsetCommit, or TxnOffsetCommit v3+): a
    /// negative generation commits for a group without members; otherwise the member must
    /// be in the group at that generation.
    pub fn validate_member_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        let now = self.settings().clock.now();
        let mut state = self.shared.lock();
        let Some(group) = state.groups.get_mut(group_id) else {
            if generation < 0 {
                // A group that does not use the coordinator for membership.
                state
                    .groups
                    .insert(group_id.to_string(), Group::new(&self.settings().clock));
                return Ok(());
            }
            return Err(ResponseError::IllegalGeneration);
        };
        if group.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if group.is_fenced(instance_id, member_id) {
            return Err(ResponseError::FencedInstanceId);
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        group.validate_member(member_id, instance_id, generation)?;
        if let Some(member) = group.member_mut(member_id) {
            member.deadline = now + member.session_timeout;
        }
        Ok(())
    }

    async fn write_offsets(
        &self,
        group_id: &str,
        req: &OffsetCommitRequest,
        version: i16,
        catalog: &dyn TopicCatalog,
        codes: &mut [Vec<i16>],
    ) {
        let now_ms = wall_ms(self.settings().clock.as_ref());
        // The last write of each partition wins; the store refuses one key twice in a txn.
        let mut writes: BTreeMap<(String, i32), StoredOffset> = BTreeMap::new();
        let mut origin: Vec<((String, i32), usize, usize)> = Vec::new();
        for (ti, topic) in req.topics.iter().enumerate() {
            let count = catalog.partition_count(&topic.name);
            for (pi, p) in topic.partitions.iter().enumerate() {
                let known = count.is_some_and(|c| p.partition_index >= 0 && p.partition_index < c);
                if !known {
                    codes[ti][pi] = ResponseError::UnknownTopicOrPartition.code();
                    continue;
                }
                let metadata = p.committed_metadata.as_deref();
                if metadata.is_some_and(|m| m.len() > MAX_OFFSET_METADATA_BYTES) {
                    codes[ti][pi] = ResponseError::OffsetMetadataTooLarge.code();
                    continue;
                }
                let key = (topic.name.to_string(), p.partition_index);
                writes.insert(
                    key.clone(),
                    StoredOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.map(str::to_owned),
                        commit_timestamp_ms: now_ms,
                    },
                );
                origin.push((key, ti, pi));
            }
        }
        let writes: Vec<((String, i32), StoredOffset)> = writes.into_iter().collect();
        for chunk in writes.chunks(MAX_OPS_PER_TXN) {
            let mut ops = Vec::with_capacity(chunk.len());
            for ((topic, partition), offset) in chunk {
                // Serializing a plain struct of numbers and strings cannot fail.
                let value = serde_json::to_vec(offset).unwrap_or_default();
                ops.push(TxnOp::put(
                    self.shared.offset_key(group_id, topic, *partition),
                    value,
                ));
            }
            let txn = Txn {
                success: ops,
                ..Txn::default()
            };
            match self.shared.kv.txn(txn).await {
                Ok(_) => {
                    let mut state = self.shared.lock();
                    let group = state
                        .groups
                        .entry(group_id.to_owned())
                        .or_insert_with(|| Group::new(&self.settings().clock));
                    for ((topic, partition), offset) in chunk {
                        group
                            .offsets
                            .entry(topic.clone())
                            .or_default()
                            .insert(*partition, offset.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(group = group_id, error = %e, "could not store committed offsets");
                    for (key, _) in chunk {
                        for (k, ti, pi) in &origin {
                            if k == key {
                                codes[*ti][*pi] = ResponseError::CoordinatorNotAvailable.code();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Keeps offsets a transaction committed (TxnOffsetCommit) until it ends; a later commit
    /// of the same partition in the same transaction replaces the earlier one.
    pub fn stage_txn_offsets(&self, group_id: &str, producer_id: i64, offsets: &[TxnOffset]) {
        let now_ms = wall_ms(self.settings().clock.as_ref());
        let mut state = self.shared.lock();
        let pending = state
            .txn_pending
            .entry(group_id.to_owned())
            .or_default()
            .entry(producer_id)
            .or_default();
        for o in offsets {
            pending.insert(
                (o.topic.clone(), o.partition),
                StoredOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_timestamp_ms: now_ms,
                },
            );
        }
    }

    /// Ends the offsets a transaction staged for `group_id`: on commit they are stored
    /// (durable before this returns) and become the group's committed offsets; on abort
    /// they are dropped. Nothing staged is nothing to do.
    pub async fn end_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), GroupError> {
        let _persist = self.shared.persist.lock().await;
        let staged: Vec<((String, i32), StoredOffset)> = {
            let state = self.shared.lock();
            state
                .txn_pending
                .get(group_id)
                .and_then(|g| g.get(&producer_id))
                .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        if commit {
            for chunk in staged.chunks(MAX_OPS_PER_TXN) {
                let ops = chunk
                    .iter()
                    .map(|((topic, partition), offset)| {
                        TxnOp::put(
                            self.shared.offset_key(group_id, topic, *partition),
                            serde_json::to_vec(offset).unwrap_or_default(),
                        )
                    })
                    .collect();
                self.shared
                    .kv
                    .txn(Txn {
                        success: ops,
                        ..Txn::default()
                    })
                    .await?;
            }
        }
        let mut state = self.shared.lock();
        if commit {
            let group = state
                .groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Group::new(&self.settings().clock));
            for ((topic, partition), offset) in staged {
                group
                    .offsets
                    .entry(topic)
                    .or_default()
                    .insert(partition, offset);
            }
        }
        if let Some(g) = state.txn_pending.get_mut(group_id) {
            g.remove(&producer_id);
            if g.is_empty() {
                state.txn_pending.remove(group_id);
            }
        }
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// OffsetFetch (v1-9; v8+ for several groups at once).
    pub async fn offset_fetch(
        &self,
        req: OffsetFetchRequest,
        version: i16,
        topics: &dyn TopicCatalog,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    let (code, found) =
                        self.fetch_one(&g.group_id, wanted, topics, req.require_stable);
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code)
                        .with_topics(
                            found
                                .into_iter()
                                .map(|(name, partitions)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(sb(&name)))
                                        .with_partitions(
                                            partitions
                                                .into_iter()
                                                .map(|(index, offset, code)| {
                                                    let (off, epoch, meta) = offset_fields(offset);
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(index)
                                                        .with_committed_offset(off)
                                                        .with_committed_leader_epoch(epoch)
                                                        .with_metadata(Some(sb(&meta)))
                                                        .with_error_code(code)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let (code, found) = self.fetch_one(
            &req.group_id,
            wanted,
            topics,
            version >= 7 && req.require_stable,
        );
        let mut response = OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(sb(&name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset, partition_code)| {
                                    let (off, epoch, meta) = offset_fields(offset);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(sb(&meta)))
                                        .with_error_code(if version < 2 && code != 0 {
                                            code
                                        } else {
                                            partition_code
                                        })
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        if version >= 2 {
            response = response.with_error_code(code);
        }
        response
    }

    /// The committed offsets of one group: `(group error, [(topic, [(partition, offset,
    /// partition error)])])`. `wanted` `None` means every committed partition.
    #[allow(clippy::type_complexity)]
    ///
    /// With `require_stable` (KIP-447), a partition an open transaction committed an offset
    /// for answers UNSTABLE_OFFSET_COMMIT instead of its committed offset.
    fn fetch_one(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
        catalog: &dyn TopicCatalog,
        require_stable: bool,
    ) -> (i16, Vec<(String, Vec<(i32, Option<StoredOffset>, i16)>)>) {
        let state = self.shared.lock();
        let group = state.groups.get(group_id);
        let pending = state.txn_pending.get(group_id);
        let unstable = |topic: &str, partition: i32| {
            require_stable
                && pending.is_some_and(|by_producer| {
                    by_producer
                        .values()
                        .any(|p| p.contains_key(&(topic.to_owned(), partition)))
                })
        };
        let invalid = group_id.is_empty();
        let code = if invalid {
            ResponseError::InvalidGroupId.code()
        } else {
            0
        };
        match wanted {
            Some(wanted) => {
                let found = wanted
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let committed = group.and_then(|g| g.offsets.get(&topic));
                        let partitions = partitions
                            .into_iter()
                            .map(|p| {
                                if !invalid && unstable(&topic, p) {
                                    return (p, None, ResponseError::UnstableOffsetCommit.code());
                                }
                                let offset = committed.and_then(|c| c.get(&p)).cloned();
                                (p, if invalid { None } else { offset }, 0)
                            })
                            .collect();
                        (topic, partitions)
                    })
                    .collect();
                (code, found)
            }
            None if invalid => (code, Vec::new()),
            None => {
                let found = group
                    .map(|g| {
                        g.offsets
                            .iter()
                            .filter(|(topic, _)| catalog.partition_count(topic).is_some())
                            .map(|(topic, partitions)| {
                                (
                                    topic.clone(),
                                    partitions
                                        .iter()
                                        .map(|(p, o)| (*p, Some(o.clone()), 0))
                                        .collect(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (code, found)
            }
        }
    }

    /// ListGroups (v0-4; v4 filters by state).
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = if version >= 4 {
            req.states_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let types: Vec<String> = if version >= 5 {
            req.types_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let state = self.shared.lock();
        let mut ids: Vec<&String> = state.groups.keys().collect();
        ids.sort();
        let groups = ids
            .into_iter()
            .filter_map(|id| {
                let group = state.groups.get(id)?;
                let name = group.state.as_str();
                if !states.is_empty() && !states.iter().any(|s| s == &name.to_ascii_lowercase()) {
                    return None;
                }
                if !types.is_empty() && !types.iter().any(|t| t == "classic") {
                    return None;
                }
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(sb(id)))
                    .with_protocol_type(sb(group.protocol_type.as_deref().unwrap_or("")));
                if version >= 4 {
                    listed = listed.with_group_state(sb(name));
                }
                if version >= 5 {
                    listed = listed.with_group_type(sb("classic"));
                }
                Some(listed)
            })
            .collect();
        ListGroupsResponse::default()
            .with_error_code(0)
            .with_groups(groups)
    }

    /// DescribeGroups (v0-5).
    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let state = self.shared.lock();
        let groups = req
            .groups
            .iter()
            .map(|group_id| {
                let described = DescribedGroup::default()
                    .with_group_id(group_id.clone())
                    .with_authorized_operations(i32::MIN);
                if group_id.is_empty() {
                    return described
                        .with_error_code(ResponseError::InvalidGroupId.code())
                        .with_group_state(sb(GroupState::Dead.as_str()));
                }
                let Some(group) = state.groups.get(group_id.as_str()) else {
                    return described.with_group_state(sb(GroupState::Dead.as_str()));
                };
                let stable = group.state == GroupState::Stable;
                let protocol = if stable {
                    group.protocol_name.as_deref()
                } else {
                    None
                };
                let members = group
                    .members
                    .iter()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default()
                            .with_member_id(sb(&m.id))
                            .with_client_id(sb(""))
                            .with_client_host(sb(""));
                        if version >= 4 {
                            member =
                                member.with_group_instance_id(m.instance_id.as_deref().map(sb));
                        }
                        if stable {
                            member = member
                                .with_member_metadata(m.metadata_for(protocol))
                                .with_member_assignment(m.assignment.clone());
                        }
                        member
                    })
                    .collect();
                described
                    .with_error_code(0)
                    .with_group_state(sb(group.state.as_str()))
                    .with_protocol_type(sb(group.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(sb(protocol.unwrap_or("")))
                    .with_members(members)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// DeleteGroups (v0-2): only Empty groups; their committed offsets go too.
    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let _persist = self.shared.persist.lock().await;
        let mut results = Vec::with_capacity(req.groups_names.len());
        for group_id in &req.groups_names {
            let code = self.delete_one(group_id).await;
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id.clone())
                    .with_error_code(code),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    /// Deletes one group; the caller holds the persist lock.
    async fn delete_one(&self, group_id: &str) -> i16 {
        if group_id.is_empty() {
            return ResponseError::InvalidGroupId.code();
        }
        let removed = {
            let mut state = self.shared.lock();
            match state.groups.get(group_id) {
                None => return ResponseError::GroupIdNotFound.code(),
                Some(g) if g.state == GroupState::Dead => {
                    return ResponseError::GroupIdNotFound.code();
                }
                Some(g) if g.state != GroupState::Empty || !g.members.is_empty() => {
                    return ResponseError::NonEmptyGroup.code();
                }
                Some(_) => state.groups.remove(group_id),
            }
        };
        let Some(removed) = removed else {
            return ResponseError::GroupIdNotFound.code();
        };
        let txn = Txn {
            success: vec![TxnOp::DeletePrefix {
                prefix: self.shared.group_key(group_id),
            }],
            ..Txn::default()
        };
        match self.shared.kv.txn(txn).await {
            Ok(_) => 0,
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "could not delete group offsets");
                // Keep what is still stored visible.
                let mut state = self.shared.lock();
                let group = state
                    .groups
                    .entry(group_id.to_owned())
                    .or_insert_with(|| Group::new(&self.settings().clock));
                for (topic, partitions) in removed.offsets {
                    let entry = group.offsets.entry(topic).or_default();
                    for (p, o) in partitions {
                        entry.entry(p).or_insert(o);
                    }
                }
                ResponseError::CoordinatorNotAvailable.code()
            }
        }
    }

    /// Forgets every group's committed offsets of `topic` (the topic was deleted).
    pub async fn delete_topic_offsets(&self, topic: &str) -> Result<(), GroupError> {
        let _persist = self.shared.persist.lock().await;
        let prefixes: Vec<String> = {
            let mut state = self.shared.lock();
            state
                .groups
                .iter_mut()
                .filter_map(|(group_id, g)| {
                    g.offsets
                        .remove(topic)
                        .map(|_| self.shared.topic_key(group_id, topic))
                })
                .collect()
        };
        for chunk in prefixes.chunks(MAX_OPS_PER_TXN) {
            let txn = Txn {
                success: chunk
                    .iter()
                    .map(|prefix| TxnOp::DeletePrefix {
                        prefix: prefix.clone(),
                    })
                    .collect(),
                ..Txn::default()
            };
            self.shared.kv.txn(txn).await?;
        }
        self.shared.wake.notify_one();
        Ok(())
    }
}

/// Handles a JoinGroup without a member id.
#[allow(clippy::too_many_arguments)]
fn join_new_member(
    group: &mut Group,
    settings: &GroupSettings,
    version: i16,
    now: Instant,
    instance_id: Option<String>,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session: Duration,
    rebalance: Duration,
) -> Reply<JoinGroupResponse, JoinGroupResponse> {
    if group.state == GroupState::Dead {
        return Reply::Now(join_error(
            version,
            ResponseError::CoordinatorNotAvailable,
            "",
        ));
    }
    let old_id = instance_id
        .as_ref()
        .and_then(|i| group.statics.get(i).cloned());
    if !group.supports(&protocol_type, &protocols, old_id.as_deref().unwrap_or("")) {
        return Reply::Now(join_error(
            version,
            ResponseError::InconsistentGroupProtocol,
            "",
        ));
    }
    let new_id = match &instance_id {
        Some(instance) => format!("{instance}-{}", uuid::Uuid::new_v4()),
        None => format!("member-{}", uuid::Uuid::new_v4()),
    };
    if instance_id.is_none() && version >= 4 {
        group.pending.insert(new_id.clone(), now + session);
        return Reply::Now(join_error(
            version,
            ResponseError::MemberIdRequired,
            &new_id,
        ));
    }
    let (tx, rx) = oneshot::channel();
    if let Some(old_id) = old_id
        && let Some(member) = group.member_mut(&old_id)
    {
        // A static member came back with a new incarnation: the old id is fenced.
        member.fail_waiters(ResponseError::FencedInstanceId);
        member.id = new_id.clone();
        member.protocol_type = protocol_type;
        member.protocols = protocols;
        member.session_timeout = session;
        member.rebalance_timeout = rebalance;
        member.deadline = now + session;
        member.join = Some(JoinWaiter { tx, version });
        if let Some(instance) = &instance_id {
            group.statics.insert(instance.clone(), new_id.clone());
        }
        if group.leader.as_deref() == Some(old_id.as_str()) {
            group.leader = Some(new_id);
        }
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now, settings);
        }
        group.try_complete_join(now);
        return Reply::Wait(rx);
    }
    let member = Member {
        id: new_id,
        instance_id,
        protocol_type,
        protocols,
        session_timeout: session,
        rebalance_timeout: rebalance,
        assignment: Bytes::new(),
        join: Some(JoinWaiter { tx, version }),
        sync: None,
        deadline: now + session,
    };
    group.add_member(member, now, settings);
    Reply::Wait(rx)
}

/// The reaper: runs the groups' timers until the coordinator goes away.
async fn reaper(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let (next, clock) = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let (next, retention_due) = shared.tick(shared.settings.clock.now());
            if retention_due {
                shared.expire_offsets().await;
            }
            (next, shared.settings.clock.clone())
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = clock.sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

fn join_error(version: i16, error: ResponseError, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_protocol_name(protocol_name_for(version, None))
        .with_leader(sb(""))
        .with_member_id(sb(member_id))
}

fn sync_error(error: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(error.code())
        .with_assignment(Bytes::new())
}

/// `protocol_name` of a JoinGroup response: nullable from v7, an empty string before.
fn protocol_name_for(version: i16, name: Option<&str>) -> Option<StrBytes> {
    match name {
        Some(name) => Some(sb(name)),
        None if version >= 7 => None,
        None => Some(sb("")),
    }
}

fn offset_fields(offset: Option<StoredOffset>) -> (i64, i32, String) {
    match offset {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn wall_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now_millis()).unwrap_or(i64::MAX)
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Encodes a group or topic name for a key: `%` and `/` (and control characters) become
/// `%XX`, so names never collide and never add a path level.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == '%' || c == '/' || c.is_ascii_control() {
            // ASCII only, so one byte.
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`encode_name`]; `None` on a malformed escape.
pub fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
// The tests move tokio's paused time, which the system clock follows.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::collections::HashMap;

    use bytes::BytesMut;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::protocol::Encodable;
    use wal::clock::SystemClock;
    use wal::meta::embedded::EmbeddedKv;

    use super::*;

    const SESSION_MS: i32 = 10_000;

    #[derive(Debug)]
    struct Catalog(HashMap<String, i32>);

    impl TopicCatalog for Catalog {
        fn partition_count(&self, topic: &str) -> Option<i32> {
            self.0.get(topic).copied()
        }
    }

    fn catalog() -> Catalog {
        Catalog(HashMap::from([
            ("orders".to_owned(), 3),
            ("events.v1-x_y".to_owned(), 2),
        ]))
    }

    async fn kv(dir: &std::path::Path) -> Arc<dyn Kv> {
        Arc::new(
            EmbeddedKv::open(dir, SystemClock::shared())
                .await
                .expect("open kv"),
        )
    }

    async fn coordinator(kv: &Arc<dyn Kv>) -> Arc<GroupCoordinator> {
        GroupCoordinator::open(kv.clone(), "kafka/", GroupSettings::default())
            .await
            .expect("open coordinator")
    }

    fn gid(s: &str) -> GroupId {
        GroupId(sb(s))
    }

    fn join_req(group: &str, member: &str, protocols: &[&str]) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(gid(group))
            .with_session_timeout_ms(SESSION_MS)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(sb(member))
            .with_protocol_type(sb("consumer"))
            .with_protocols(
                protocols
                    .iter()
                    .map(|p| {
                        JoinGroupRequestProtocol::default()
                            .with_name(sb(p))
                            .with_metadata(Bytes::from(format!("meta-{p}")))
                    })
                    .collect(),
            )
    }

    fn sync_req(
        group: &str,
        member: &str,
        generation: i32,
        assignments: &[(&str, &str)],
    ) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_generation_id(generation)
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(m))
                            .with_assignment(Bytes::from(a.to_string()))
                    })
                    .collect(),
            )
    }

    fn heartbeat_req(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
        HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_generation_id(generation)
    }

    fn commit_req(
        group: &str,
        member: &str,
        generation: i32,
        parts: &[(&str, i32, i64)],
    ) -> OffsetCommitRequest {
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in parts {
            let p = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(7)
                .with_committed_metadata(Some(sb("meta")));
            match topics.iter_mut().find(|t| t.name.as_str() == *topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(sb(topic)))
                        .with_partitions(vec![p]),
                ),
            }
        }
        OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(topics)
    }

    fn codes(response: &OffsetCommitResponse) -> Vec<(String, i32, i16)> {
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
            })
            .collect()
    }

    fn encodes<T: Encodable + fmt::Debug>(message: &T, version: i16) {
        let mut buf = BytesMut::new();
        if let Err(e) = message.encode(&mut buf, version) {
            panic!("{message:?} does not encode at v{version}: {e}");
        }
    }

    /// Joins a new member with the v4+ two-step flow; returns the id handed out.
    async fn member_id(c: &GroupCoordinator, group: &str, version: i16) -> String {
        let r = c.join_group(join_req(group, "", &["range"]), version).await;
        assert_eq!(r.error_code, ResponseError::MemberIdRequired.code());
        encodes(&r, version);
        assert!(!r.member_id.is_empty());
        r.member_id.to_string()
    }

    /// A one-member Stable group; returns (member id, generation).
    async fn stable_single(c: &Arc<GroupCoordinator>, group: &str) -> (String, i32) {
        let id = member_id(c, group, 5).await;
        let r = c.join_group(join_req(group, &id, &["range"]), 5).await;
        assert_eq!(r.error_code, 0);
        let s = c
            .sync_group(sync_req(group, &id, r.generation_id, &[(&id, "a")]), 3)
            .await;
        assert_eq!(s.error_code, 0);
        (id, r.generation_id)
    }

    #[test]
    fn names_round_trip_through_key_encoding() {
        for name in ["plain", "a/b", "100%", "g.1-x_y", "%2F", "", "ünï/cödé%"] {
            let encoded = encode_name(name);
            assert!(!encoded.contains('/'));
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
        assert_ne!(encode_name("a/b"), encode_name("a%2Fb"));
        assert_eq!(decode_name("%zz"), None);
        assert_eq!(decode_name("%+1"), None);
        assert_eq!(decode_name("%4"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn two_members_join_sync_and_rebalance_on_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let a = member_id(&c, "g", 6).await;
        let b = member_id(&c, "g", 6).await;
        assert_ne!(a, b);
        assert_eq!(c.group_state("g"), GroupState::Empty);

        let ja = tokio::spawn({
            let c = c.clone();
            let req = join_req("g", &a, &["roundrobin", "range"]);
            async move { c.join_group(req, 6).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(c.group_state("g"), GroupState::PreparingRebalance);
        let rb = c
            .join_group(join_req("g", &b, &["range", "roundrobin"]), 7)
            .await;
        let ra = ja.await.expect("join a");
        assert_eq!((ra.error_code, rb.error_code), (0, 0));
        assert_eq!(ra.generation_id, 1);
        assert_eq!(rb.generation_id, 1);
        assert_eq!(ra.leader.as_str(), a);
        assert_eq!(rb.leader.as_str(), a);
        assert_eq!(ra.members.len(), 2);
        assert!(rb.members.is_empty());
        // One vote each; the leader's preference breaks the tie.
        assert_eq!(ra.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(rb.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(ra.members[1].metadata, Bytes::from("meta-roundrobin"));
        encodes(&ra, 6);
        encodes(&rb, 7);
        assert_eq!(c.group_state("g"), GroupState::CompletingRebalance);

        // The follower waits for the leader's assignment.
        let sb_task = tokio::spawn({
            let c = c.clone();
            let req = sync_req("g", &b, 1, &[]);
            async move { c.sync_group(req, 5).await }
        });
        tokio::task::yield_now().await;
        let hb = c.heartbeat(heartbeat_req("g", &a, 1), 4).await;
        assert_eq!(hb.error_code, 0);
        let sa = c
            .sync_group(sync_req("g", &a, 1, &[(&a, "for-a"), (&b, "for-b")]), 5)
            .await;
        let sbr = sb_task.await.expect("sync b");
        assert_eq!(sa.assignment, Bytes::from("for-a"));
        assert_eq!(sbr.assignment, Bytes::from("for-b"));
        assert_eq!(sbr.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(c.group_state("g"), GroupState::Stable);

        let d = c
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
                5,
            )
            .await;
        let g = &d.groups[0];
        assert_eq!(g.group_state.as_str(), "Stable");
        assert_eq!(g.protocol_data.as_str(), "roundrobin");
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.members[1].member_assignment, Bytes::from("for-b"));
        assert_eq!(g.authorized_operations, i32::MIN);

        // A member commit with the right generation is fine.
        let cat = catalog();
        let r = c
            .offset_commit(commit_req("g", &b, 1, &[("orders", 0, 10)]), 8, &cat)
            .await;
        assert_eq!(codes(&r), vec![("orders".to_owned(), 0, 0)]);

        // B leaves: A learns about the rebalance and rejoins alone.
        let l = c
            .leave_group(
                LeaveGroupRequest::default()
                    .with_group_id(gid("g"))
                    .with_members(vec![
                        MemberIdentity::default().with_member_id(sb(&b)),
                        MemberIdentity::default().with_member_id(sb("nobody")),
                    ]),
                4,
            )
            .await;
        assert_eq!(l.error_code, 0);
        assert_eq!(l.members[0].error_code, 0);
        assert_eq!(
            l.members[1].error_code,
            ResponseError::UnknownMemberId.code()
        );
        let hb = c.heartbeat(heartbeat_req("g", &a, 1), 4).await;
        assert_eq!(hb.error_code, ResponseError::RebalanceInProgress.code());
        // Commits of the current generation are still accepted while rebalancing.
        let r = c
            .offset_commit(commit_req("g", &a, 1, &[("orders", 1, 5)]), 8, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, 0);
        let ra = c
            .join_group(join_req("g", &a, &["roundrobin", "range"]), 6)
            .await;
        assert_eq!(ra.error_code, 0);
        assert_eq!(ra.generation_id, 2);
        assert_eq!(ra.members.len(), 1);
        let hb = c.heartbeat(heartbeat_req("g", &b, 2), 4).await;
        assert_eq!(hb.error_code, ResponseError::UnknownMemberId.code());

        // The last member leaving (v0 form) empties the group.
        let l = c
            .leave_group(
                LeaveGroupRequest::default()
                    .with_group_id(gid("g"))
                    .with_member_id(sb(&a)),
                0,
            )
            .await;
        assert_eq!(l.error_code, 0);
        assert_eq!(c.group_state("g"), GroupState::Empty);
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn session_expiry_rebalances_then_empties_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        // v3: the member id is assigned directly.
        let ra = c.join_group(join_req("g", "", &["range"]), 3).await;
        assert_eq!(ra.error_code, 0);
        let a = ra.member_id.to_string();
        // B arrives after A's join completed: A must rejoin for the second generation.
        let jb = tokio::spawn({
            let c = c.clone();
            let req = join_req("g", "", &["range"]);
            async move { c.join_group(req, 3).await }
        });
        tokio::task::yield_now().await;
        let ra = c.join_group(join_req("g", &a, &["range"]), 3).await;
        let rb = jb.await.expect("join b");
        let b = rb.member_id.to_string();
        assert_eq!(ra.generation_id, 2);
        assert_eq!(rb.generation_id, 2);
        let gen_b = rb.generation_id;
        let generation = gen_b;
        let s = c
            .sync_group(sync_req("g", &a, generation, &[(&a, "x"), (&b, "y")]), 2)
            .await;
        assert_eq!(s.error_code, 0);
        let s = c.sync_group(sync_req("g", &b, generation, &[]), 2).await;
        assert_eq!(s.assignment, Bytes::from("y"));

        // A keeps heartbeating, B goes silent.
        let mut rebalancing = false;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let hb = c.heartbeat(heartbeat_req("g", &a, generation), 2).await;
            if hb.error_code == ResponseError::RebalanceInProgress.code() {
                rebalancing = true;
                break;
            }
            assert_eq!(hb.error_code, 0);
        }
        assert!(rebalancing, "B's expiry must start a rebalance");
        let ra = c.join_group(join_req("g", &a, &["range"]), 3).await;
        assert_eq!(ra.generation_id, generation + 1);
        assert_eq!(ra.members.len(), 1);
        let hb = c.heartbeat(heartbeat_req("g", &b, generation), 2).await;
        assert_eq!(hb.error_code, ResponseError::UnknownMemberId.code());

        // A goes silent too: the group ends up Empty.
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(SESSION_MS).unwrap_or(0) * 2,
        ))
        .await;
        assert_eq!(c.group_state("g"), GroupState::Empty);
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn pending_member_ids_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let id = member_id(&c, "g", 9).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let r = c.join_group(join_req("g", &id, &["range"]), 9).await;
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        encodes(&r, 9);

        // A member id handed out to a Stable group and never used disturbs nobody.
        let (a, generation) = stable_single(&c, "s").await;
        let _unused = member_id(&c, "s", 9).await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let hb = c.heartbeat(heartbeat_req("s", &a, generation), 4).await;
            assert_eq!(hb.error_code, 0);
        }
        assert_eq!(c.group_state("s"), GroupState::Stable);
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_of_join_sync_heartbeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let r = c.join_group(join_req("", "", &["range"]), 5).await;
        assert_eq!(r.error_code, ResponseError::InvalidGroupId.code());
        let r = c
            .join_group(join_req("g", "", &["range"]).with_session_timeout_ms(10), 5)
            .await;
        assert_eq!(r.error_code, ResponseError::InvalidSessionTimeout.code());
        let r = c.join_group(join_req("g", "", &[]), 5).await;
        assert_eq!(
            r.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        let r = c.join_group(join_req("g", "ghost", &["range"]), 5).await;
        assert_eq!(r.error_code, ResponseError::UnknownMemberId.code());
        assert_eq!(
            c.group_state("g"),
            GroupState::Dead,
            "failed joins leave no group"
        );

        let (a, generation) = stable_single(&c, "g").await;
        // Another protocol type, or no common protocol.
        let r = c
            .join_group(
                join_req("g", "", &["range"]).with_protocol_type(sb("connect")),
                5,
            )
            .await;
        assert_eq!(
            r.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        let r = c.join_group(join_req("g", "", &["sticky"]), 5).await;
        assert_eq!(
            r.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );

        let hb = c.heartbeat(heartbeat_req("g", &a, generation + 1), 4).await;
        assert_eq!(hb.error_code, ResponseError::IllegalGeneration.code());
        let hb = c
            .heartbeat(heartbeat_req("g", "ghost", generation), 4)
            .await;
        assert_eq!(hb.error_code, ResponseError::UnknownMemberId.code());
        let hb = c.heartbeat(heartbeat_req("nope", &a, generation), 4).await;
        assert_eq!(hb.error_code, ResponseError::UnknownMemberId.code());
        let hb = c.heartbeat(heartbeat_req("", &a, generation), 0).await;
        assert_eq!(hb.error_code, ResponseError::InvalidGroupId.code());
        let s = c
            .sync_group(sync_req("g", &a, generation - 1, &[]), 1)
            .await;
        assert_eq!(s.error_code, ResponseError::IllegalGeneration.code());
        let s = c
            .sync_group(sync_req("g", "ghost", generation, &[]), 1)
            .await;
        assert_eq!(s.error_code, ResponseError::UnknownMemberId.code());
        let s = c
            .sync_group(
                sync_req("g", &a, generation, &[]).with_protocol_name(Some(sb("sticky"))),
                5,
            )
            .await;
        assert_eq!(
            s.error_code,
            ResponseError::InconsistentGroupProtocol.code()
        );
        // A Stable member re-syncing gets its assignment again.
        let s = c
            .sync_group(
                sync_req("g", &a, generation, &[])
                    .with_protocol_type(Some(sb("consumer")))
                    .with_protocol_name(Some(sb("range"))),
                5,
            )
            .await;
        assert_eq!((s.error_code, s.assignment.clone()), (0, Bytes::from("a")));

        let cat = catalog();
        let r = c
            .offset_commit(
                commit_req("g", &a, generation + 3, &[("orders", 0, 1)]),
                8,
                &cat,
            )
            .await;
        assert_eq!(codes(&r)[0].2, ResponseError::IllegalGeneration.code());
        let r = c
            .offset_commit(
                commit_req("g", "ghost", generation, &[("orders", 0, 1)]),
                8,
                &cat,
            )
            .await;
        assert_eq!(codes(&r)[0].2, ResponseError::UnknownMemberId.code());
        // Standalone commits are refused while the group has members.
        let r = c
            .offset_commit(commit_req("g", "", -1, &[("orders", 0, 1)]), 8, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, ResponseError::UnknownMemberId.code());
        // A member commit to an unknown group: an old generation.
        let r = c
            .offset_commit(commit_req("other", &a, 4, &[("orders", 0, 1)]), 8, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, ResponseError::IllegalGeneration.code());

        // Rejoin of the leader forces a rebalance; sync during it is refused.
        let join = tokio::spawn({
            let c = c.clone();
            let req = join_req("g", "", &["range"]);
            async move { c.join_group(req, 3).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(c.group_state("g"), GroupState::PreparingRebalance);
        let s = c.sync_group(sync_req("g", &a, generation, &[]), 1).await;
        assert_eq!(s.error_code, ResponseError::RebalanceInProgress.code());
        let ra = c.join_group(join_req("g", &a, &["range"]), 5).await;
        let rb = join.await.expect("join");
        assert_eq!(ra.generation_id, generation + 1);
        assert_eq!(rb.generation_id, generation + 1);
        // A commit between join and sync is told to wait.
        let r = c
            .offset_commit(
                commit_req("g", &a, generation + 1, &[("orders", 0, 1)]),
                8,
                &cat,
            )
            .await;
        assert_eq!(codes(&r)[0].2, ResponseError::RebalanceInProgress.code());
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn static_member_rejoin_fences_the_old_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let static_join = |member: &str| {
            join_req("g", member, &["range"]).with_group_instance_id(Some(sb("instance-1")))
        };
        // Static members get their id at once, even at v4+.
        let r1 = c.join_group(static_join(""), 5).await;
        assert_eq!(r1.error_code, 0);
        let old = r1.member_id.to_string();
        let s = c
            .sync_group(
                sync_req("g", &old, r1.generation_id, &[(&old, "p0")])
                    .with_group_instance_id(Some(sb("instance-1"))),
                3,
            )
            .await;
        assert_eq!(s.error_code, 0);

        // The same instance restarts without its member id.
        let r2 = c.join_group(static_join(""), 5).await;
        assert_eq!(r2.error_code, 0);
        let new = r2.member_id.to_string();
        assert_ne!(old, new);
        assert_eq!(r2.leader.as_str(), new);
        assert_eq!(r2.members.len(), 1);
        assert_eq!(
            r2.members[0].group_instance_id.as_deref(),
            Some("instance-1")
        );
        encodes(&r2, 5);

        let hb = c
            .heartbeat(
                heartbeat_req("g", &old, r1.generation_id)
                    .with_group_instance_id(Some(sb("instance-1"))),
                3,
            )
            .await;
        assert_eq!(hb.error_code, ResponseError::FencedInstanceId.code());
        let r = c.join_group(static_join(&old), 5).await;
        assert_eq!(r.error_code, ResponseError::FencedInstanceId.code());
        let l = c
            .leave_group(
                LeaveGroupRequest::default()
                    .with_group_id(gid("g"))
                    .with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(sb(&old))
                            .with_group_instance_id(Some(sb("instance-1"))),
                    ]),
                3,
            )
            .await;
        assert_eq!(
            l.members[0].error_code,
            ResponseError::FencedInstanceId.code()
        );

        let d = c
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
                4,
            )
            .await;
        assert_eq!(
            d.groups[0].members[0].group_instance_id.as_deref(),
            Some("instance-1")
        );

        // Leaving by instance id alone (member id unknown to the client) removes it.
        let l = c
            .leave_group(
                LeaveGroupRequest::default()
                    .with_group_id(gid("g"))
                    .with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(sb(""))
                            .with_group_instance_id(Some(sb("instance-1"))),
                    ]),
                5,
            )
            .await;
        assert_eq!(l.members[0].error_code, 0);
        assert_eq!(c.group_state("g"), GroupState::Empty);
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn standalone_commits_are_durable_and_fetchable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let cat = catalog();
        let group = "app.one/with%odd_chars";
        {
            let c = coordinator(&kv).await;
            let mut req = commit_req(
                group,
                "",
                -1,
                &[
                    ("orders", 0, 42),
                    ("orders", 2, 7),
                    ("orders", 3, 1),
                    ("missing", 0, 1),
                    ("events.v1-x_y", 1, 99),
                ],
            );
            req.topics[0].partitions[1].committed_metadata =
                Some(sb(&"m".repeat(MAX_OFFSET_METADATA_BYTES + 1)));
            req.topics[0].partitions[0].committed_metadata = None;
            let r = c.offset_commit(req, 6, &cat).await;
            assert_eq!(
                codes(&r),
                vec![
                    ("orders".to_owned(), 0, 0),
                    (
                        "orders".to_owned(),
                        2,
                        ResponseError::OffsetMetadataTooLarge.code()
                    ),
                    (
                        "orders".to_owned(),
                        3,
                        ResponseError::UnknownTopicOrPartition.code()
                    ),
                    (
                        "missing".to_owned(),
                        0,
                        ResponseError::UnknownTopicOrPartition.code()
                    ),
                    ("events.v1-x_y".to_owned(), 1, 0),
                ]
            );
            let r = c
                .offset_commit(commit_req("", "", -1, &[("orders", 0, 1)]), 2, &cat)
                .await;
            assert_eq!(codes(&r)[0].2, ResponseError::InvalidGroupId.code());
            let l = c.list_groups(ListGroupsRequest::default(), 4).await;
            assert_eq!(l.groups.len(), 1);
            assert_eq!(l.groups[0].group_state.as_str(), "Empty");
            assert_eq!(l.groups[0].protocol_type.as_str(), "");
            c.shutdown();
        }
        // A new coordinator on the same store sees the commits.
        let c = coordinator(&kv).await;
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(gid(group))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(sb("orders")))
                            .with_partition_indexes(vec![0, 1, 2]),
                    ])),
                5,
                &cat,
            )
            .await;
        assert_eq!(r.error_code, 0);
        let parts = &r.topics[0].partitions;
        assert_eq!(parts[0].committed_offset, 42);
        assert_eq!(parts[0].committed_leader_epoch, 7);
        assert_eq!(parts[0].metadata.as_deref(), Some(""));
        assert_eq!(parts[1].committed_offset, -1);
        assert_eq!(parts[2].committed_offset, -1);
        // Null topics: everything committed.
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(gid(group))
                    .with_topics(None),
                7,
                &cat,
            )
            .await;
        let mut all: Vec<(String, i32, i64, String)> = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.metadata.as_deref().unwrap_or("?").to_owned(),
                    )
                })
            })
            .collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                ("events.v1-x_y".to_owned(), 1, 99, "meta".to_owned()),
                ("orders".to_owned(), 0, 42, String::new()),
            ]
        );

        // v8: several groups at once, one unknown, one invalid.
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(gid(group))
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(sb("events.v1-x_y")))
                                .with_partition_indexes(vec![1]),
                        ])),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(gid("unknown"))
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(sb("orders")))
                                .with_partition_indexes(vec![0]),
                        ])),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(gid(group))
                        .with_topics(None),
                    OffsetFetchRequestGroup::default().with_group_id(gid("")),
                ]),
                8,
                &cat,
            )
            .await;
        encodes(&r, 8);
        assert_eq!(r.groups.len(), 4);
        assert_eq!(r.groups[0].error_code, 0);
        assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 99);
        assert_eq!(
            r.groups[0].topics[0].partitions[0].committed_leader_epoch,
            7
        );
        assert_eq!(r.groups[1].error_code, 0);
        assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
        assert_eq!(r.groups[2].topics.len(), 2);
        assert_eq!(r.groups[3].error_code, ResponseError::InvalidGroupId.code());

        // Deleting a topic drops its offsets, durably.
        c.delete_topic_offsets("orders")
            .await
            .expect("delete topic");
        drop(c);
        let c = coordinator(&kv).await;
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(gid(group))
                    .with_topics(None),
                3,
                &cat,
            )
            .await;
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].name.as_str(), "events.v1-x_y");

        // Deleting the group removes the rest.
        let d = c
            .delete_groups(
                DeleteGroupsRequest::default().with_groups_names(vec![gid(group), gid("nope")]),
                2,
            )
            .await;
        assert_eq!(d.results[0].error_code, 0);
        assert_eq!(
            d.results[1].error_code,
            ResponseError::GroupIdNotFound.code()
        );
        let (left, _) = kv.get_prefix("kafka/groups/").await.expect("scan");
        assert!(left.is_empty(), "{left:?}");
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn list_describe_delete_follow_group_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let cat = catalog();
        let (a, generation) = stable_single(&c, "busy").await;
        let r = c
            .offset_commit(commit_req("idle", "", -1, &[("orders", 0, 3)]), 2, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, 0);

        let l = c.list_groups(ListGroupsRequest::default(), 0).await;
        let listed: Vec<(String, String)> = l
            .groups
            .iter()
            .map(|g| (g.group_id.to_string(), g.protocol_type.to_string()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("busy".to_owned(), "consumer".to_owned()),
                ("idle".to_owned(), String::new())
            ]
        );
        let l = c
            .list_groups(
                ListGroupsRequest::default().with_states_filter(vec![sb("stable")]),
                4,
            )
            .await;
        assert_eq!(l.groups.len(), 1);
        assert_eq!(l.groups[0].group_state.as_str(), "Stable");

        let d = c
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![
                    gid("busy"),
                    gid("idle"),
                    gid("unknown"),
                ]),
                0,
            )
            .await;
        let states: Vec<&str> = d.groups.iter().map(|g| g.group_state.as_str()).collect();
        assert_eq!(states, vec!["Stable", "Empty", "Dead"]);
        assert!(d.groups.iter().all(|g| g.error_code == 0));
        assert_eq!(d.groups[0].members[0].member_id.as_str(), a);
        assert_eq!(
            d.groups[0].members[0].member_metadata,
            Bytes::from("meta-range")
        );

        let del = c
            .delete_groups(
                DeleteGroupsRequest::default().with_groups_names(vec![
                    gid("busy"),
                    gid("idle"),
                    gid(""),
                ]),
                1,
            )
            .await;
        let del: Vec<i16> = del.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            del,
            vec![
                ResponseError::NonEmptyGroup.code(),
                0,
                ResponseError::InvalidGroupId.code()
            ]
        );
        assert_eq!(c.group_state("idle"), GroupState::Dead);
        let hb = c.heartbeat(heartbeat_req("busy", &a, generation), 1).await;
        assert_eq!(hb.error_code, 0);
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_of_empty_groups_expire_after_the_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let settings = GroupSettings {
            offsets_retention: Some(Duration::ZERO),
            ..GroupSettings::default()
        };
        let c = GroupCoordinator::open(kv.clone(), "kafka", settings)
            .await
            .expect("open");
        let cat = catalog();
        let (a, generation) = stable_single(&c, "busy").await;
        let r = c
            .offset_commit(
                commit_req("busy", &a, generation, &[("orders", 0, 3)]),
                8,
                &cat,
            )
            .await;
        assert_eq!(codes(&r)[0].2, 0);
        let r = c
            .offset_commit(commit_req("idle", "", -1, &[("orders", 0, 3)]), 8, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, 0);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let hb = c.heartbeat(heartbeat_req("busy", &a, generation), 4).await;
            assert_eq!(hb.error_code, 0);
        }
        let (left, _) = kv.get_prefix("kafka/groups/").await.expect("scan");
        let keys: Vec<&str> = left.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, vec!["kafka/groups/busy/offsets/orders/0"]);
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(gid("idle"))
                    .with_topics(None),
                6,
                &cat,
            )
            .await;
        assert!(r.topics.is_empty());
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_parked_joins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks_before = metrics.num_alive_tasks();
        let c = coordinator(&kv).await;
        assert_eq!(
            metrics.num_alive_tasks(),
            tasks_before + 1,
            "the timer task"
        );
        let id = member_id(&c, "g", 4).await;
        let join = tokio::spawn({
            let c = c.clone();
            let req = join_req("g", &id, &["range"]);
            async move { c.join_group(req, 4).await }
        });
        tokio::task::yield_now().await;
        c.shutdown();
        let r = join.await.expect("join");
        assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
        let r = c.join_group(join_req("g", &id, &["range"]), 4).await;
        assert_eq!(r.error_code, ResponseError::CoordinatorNotAvailable.code());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            metrics.num_alive_tasks(),
            tasks_before,
            "no timer left behind"
        );
    }

    /// Every handler's answer encodes at every version the server advertises.
    #[tokio::test(start_paused = true)]
    async fn responses_encode_at_every_advertised_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let cat = catalog();

        for version in 0..=9i16 {
            let group = format!("join-v{version}");
            let id = if version >= 4 {
                member_id(&c, &group, version).await
            } else {
                String::new()
            };
            let mut req = join_req(&group, &id, &["range"]);
            if version >= 5 {
                req = req.with_group_instance_id(None);
            }
            let r = c.join_group(req, version).await;
            assert_eq!(r.error_code, 0, "v{version}");
            encodes(&r, version);
            let member = r.member_id.to_string();
            // An error answer too.
            let e = c
                .join_group(join_req(&group, "ghost", &["range"]), version)
                .await;
            assert_eq!(e.error_code, ResponseError::UnknownMemberId.code());
            encodes(&e, version);
            let sync_version = version.min(5);
            let s = c
                .sync_group(
                    sync_req(&group, &member, r.generation_id, &[(&member, "x")]),
                    sync_version,
                )
                .await;
            assert_eq!(s.error_code, 0);
            encodes(&s, sync_version);
            let hb_version = version.min(4);
            let hb = c
                .heartbeat(heartbeat_req(&group, &member, r.generation_id), hb_version)
                .await;
            assert_eq!(hb.error_code, 0);
            encodes(&hb, hb_version);
        }

        let (a, generation) = stable_single(&c, "g").await;
        for version in 2..=9i16 {
            let r = c
                .offset_commit(
                    commit_req("g", &a, generation, &[("orders", 0, 5), ("nope", 0, 1)]),
                    version,
                    &cat,
                )
                .await;
            encodes(&r, version);
            let r = c
                .offset_commit(
                    commit_req("solo", "", -1, &[("orders", 1, 5)]),
                    version,
                    &cat,
                )
                .await;
            assert_eq!(codes(&r)[0].2, 0);
            encodes(&r, version);
        }
        for version in 1..=9i16 {
            let topics = vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("orders")))
                    .with_partition_indexes(vec![0, 1]),
            ];
            let req = if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(gid("g"))
                        .with_topics(None),
                    OffsetFetchRequestGroup::default().with_group_id(gid("")),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(gid("g"))
                    .with_topics(Some(topics.clone()))
            };
            let r = c.offset_fetch(req, version, &cat).await;
            encodes(&r, version);
            let r = c
                .offset_fetch(
                    OffsetFetchRequest::default()
                        .with_group_id(gid(""))
                        .with_topics(Some(topics)),
                    version.min(7),
                    &cat,
                )
                .await;
            encodes(&r, version.min(7));
        }
        for version in 0..=4i16 {
            let r = c.list_groups(ListGroupsRequest::default(), version).await;
            assert!(!r.groups.is_empty());
            encodes(&r, version);
        }
        for version in 0..=5i16 {
            let r = c
                .describe_groups(
                    DescribeGroupsRequest::default().with_groups(vec![
                        gid("g"),
                        gid("solo"),
                        gid("unknown"),
                        gid(""),
                    ]),
                    version,
                )
                .await;
            encodes(&r, version);
        }
        for version in 0..=2i16 {
            let r = c
                .delete_groups(
                    DeleteGroupsRequest::default().with_groups_names(vec![gid("g"), gid("x")]),
                    version,
                )
                .await;
            encodes(&r, version);
        }
        for version in 0..=5i16 {
            let req = LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_member_id(if version < 3 { sb("ghost") } else { sb("") })
                .with_members(if version >= 3 {
                    vec![MemberIdentity::default().with_member_id(sb("ghost"))]
                } else {
                    Vec::new()
                });
            let r = c.leave_group(req, version).await;
            assert_eq!(
                if version >= 3 {
                    r.members[0].error_code
                } else {
                    r.error_code
                },
                ResponseError::UnknownMemberId.code()
            );
            encodes(&r, version);
        }
        c.shutdown();
    }
}
