//! The membership state machine of one classic group, without I/O.
//!
//! A [`Group`] owns the JoinGroup / SyncGroup / Heartbeat / LeaveGroup protocol of one group:
//! members, generations, the leader, static members (KIP-345) and every timer (session expiry,
//! rebalance timeout, the initial rebalance delay, pending member ids). Time comes in as a
//! value ([`Now`]) and nothing here sleeps, locks or spawns. A request that must wait (a join
//! until the rebalance completes, a follower's sync until the leader's assignment) is
//! answered with [`Answer::Parked`] and an [`Effect::Park`]; its answer comes out later as an
//! [`Effect::Join`] / [`Effect::Sync`] of some other input. The coordinator holds the parked
//! requests and delivers those effects in order.
//!
//! The group also carries the cache of its committed offsets (plain data; the coordinator
//! keeps it in step with the store), because whether a group can be forgotten depends on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};

use super::store::StoredOffset;
use super::{GroupSettings, GroupState, sb};
use crate::error::KafkaCode;

/// How long an Empty group without members, pending members or offsets is kept before it is
/// forgotten (Kafka's `offsets.retention.check.interval.ms`).
pub(super) const EMPTY_GROUP_LINGER: Duration = Duration::from_secs(600);

/// The moment an input happens: monotonic time since the coordinator's epoch (for timers)
/// and wall-clock milliseconds (for offset retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Now {
    /// Monotonic time since an arbitrary fixed epoch.
    pub(super) mono: Duration,
    /// Milliseconds since the Unix epoch.
    pub(super) wall_ms: i64,
}

/// Which kind of request is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Waiting {
    /// A JoinGroup waiting for the join phase to complete.
    Join,
    /// A SyncGroup waiting for the leader's assignment.
    Sync,
}

/// What the coordinator must do after an input, in order.
#[derive(Debug)]
pub(super) enum Effect {
    /// Park the current request under this member id (it replaces nothing: any earlier
    /// parked request of the member was answered by an effect before this one).
    Park {
        /// The member the request waits as.
        member_id: String,
        /// Join or sync.
        kind: Waiting,
    },
    /// Answer the JoinGroup parked under this member id.
    Join {
        /// The member id it was parked under.
        member_id: String,
        /// The answer.
        response: JoinGroupResponse,
    },
    /// Answer the SyncGroup parked under this member id.
    Sync {
        /// The member id it was parked under.
        member_id: String,
        /// The answer.
        response: SyncGroupResponse,
    },
}

/// The answer to the request that was the input.
#[derive(Debug)]
pub(super) enum Answer<R> {
    /// Answer now.
    Now(R),
    /// Parked: the answer is a later [`Effect`] for the member of the [`Effect::Park`].
    Parked,
}

/// A JoinGroup, validated for its version (fields the version lacks are `None`/defaults).
#[derive(Debug, Clone)]
pub(super) struct JoinInput {
    /// Empty for a new member.
    pub(super) member_id: String,
    /// `group.instance.id` (v5+), `None` for a dynamic member.
    pub(super) instance_id: Option<String>,
    /// The protocol type (`consumer`, `connect`, ...).
    pub(super) protocol_type: String,
    /// `(name, metadata)` in the member's order of preference.
    pub(super) protocols: Vec<(String, Bytes)>,
    /// The session timeout the member asked for, in ms (checked against the settings).
    pub(super) session_timeout_ms: i32,
    /// The rebalance timeout, in ms (`<= 0`: the session timeout).
    pub(super) rebalance_timeout_ms: i32,
    /// The request version (for the answer's shape).
    pub(super) version: i16,
    /// The client id of the request header.
    pub(super) client_id: String,
    /// The client's host as DescribeGroups shows it (`/127.0.0.1`).
    pub(super) client_host: String,
}

/// A SyncGroup.
#[derive(Debug, Clone)]
pub(super) struct SyncInput {
    /// The member.
    pub(super) member_id: String,
    /// `group.instance.id` (v3+).
    pub(super) instance_id: Option<String>,
    /// The generation the member believes in.
    pub(super) generation: i32,
    /// v5+: the protocol type the member expects.
    pub(super) protocol_type: Option<String>,
    /// v5+: the protocol name the member expects.
    pub(super) protocol_name: Option<String>,
    /// The leader's assignment, `(member id, assignment)`.
    pub(super) assignments: Vec<(String, Bytes)>,
    /// The request version.
    pub(super) version: i16,
}

/// One member of the group.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) assignment: Bytes,
    /// The version of a parked JoinGroup.
    join: Option<i16>,
    /// The version of a parked SyncGroup.
    sync: Option<i16>,
    /// When the session expires unless the member shows up (ignored while it waits).
    deadline: Duration,
}

impl Member {
    /// The metadata the member gave for `protocol`.
    pub(super) fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(name, _)| name == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

/// The initial delay of a rebalance that started from Empty.
#[derive(Debug)]
struct InitialDelay {
    /// The delay never extends past this.
    limit: Duration,
    /// A member joined since the delay was (re)armed.
    member_added: bool,
}

/// One classic group.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order; the leader is normally the first.
    pub(super) members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: HashMap<String, Duration>,
    /// group.instance.id to member id.
    statics: HashMap<String, String>,
    rebalance_deadline: Option<Duration>,
    initial: Option<InitialDelay>,
    /// Since when the group is Empty (monotonic), for forgetting it.
    empty_since: Duration,
    /// Since when the group is Empty (wall clock), for offset retention.
    pub(super) empty_since_ms: i64,
    /// The committed offsets: topic -> partition -> offset.
    pub(super) offsets: BTreeMap<String, BTreeMap<i32, StoredOffset>>,
    /// Effects of the input being processed, drained by the caller.
    effects: Vec<Effect>,
}

impl Group {
    /// An Empty group.
    pub(super) fn new(now: Now) -> Self {
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
            empty_since: now.mono,
            empty_since_ms: now.wall_ms,
            offsets: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// Takes the effects of the last input.
    pub(super) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
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
    ) -> Result<(), KafkaCode> {
        if self.is_fenced(instance_id, member_id) {
            return Err(KafkaCode::FencedInstanceId);
        }
        if self.member(member_id).is_none() {
            return Err(KafkaCode::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(KafkaCode::IllegalGeneration);
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

    /// Answers a member's parked requests with `error`.
    fn fail_member_waiters(&mut self, index: usize, error: KafkaCode) {
        let member = &mut self.members[index];
        if let Some(version) = member.join.take() {
            self.effects.push(Effect::Join {
                member_id: member.id.clone(),
                response: join_error(version, error, &member.id),
            });
        }
        if member.sync.take().is_some() {
            self.effects.push(Effect::Sync {
                member_id: member.id.clone(),
                response: sync_error(error),
            });
        }
    }

    /// Answers every parked request with `error` (the coordinator shuts down).
    pub(super) fn fail_all_waiters(&mut self, error: KafkaCode) {
        for i in 0..self.members.len() {
            self.fail_member_waiters(i, error);
        }
    }

    fn park(&mut self, index: usize, kind: Waiting, version: i16) {
        let member = &mut self.members[index];
        match kind {
            Waiting::Join => member.join = Some(version),
            Waiting::Sync => member.sync = Some(version),
        }
        self.effects.push(Effect::Park {
            member_id: member.id.clone(),
            kind,
        });
    }

    fn add_member(&mut self, member: Member, now: Now, settings: &GroupSettings) {
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
    }

    /// Removes a member; its parked requests get `error`.
    fn remove_member(&mut self, id: &str, error: KafkaCode) -> bool {
        let Some(pos) = self.members.iter().position(|m| m.id == id) else {
            return false;
        };
        self.fail_member_waiters(pos, error);
        let member = self.members.remove(pos);
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
    fn after_departure(&mut self, now: Now, settings: &GroupSettings) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, settings);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn prepare_rebalance(&mut self, now: Now, settings: &GroupSettings) {
        if self.state == GroupState::CompletingRebalance {
            for i in 0..self.members.len() {
                self.members[i].assignment = Bytes::new();
                if self.members[i].sync.take().is_some() {
                    let member_id = self.members[i].id.clone();
                    self.effects.push(Effect::Sync {
                        member_id,
                        response: sync_error(KafkaCode::RebalanceInProgress),
                    });
                    // It waited; its session starts over from the answer.
                    self.members[i].deadline = now.mono + self.members[i].session_timeout;
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
                limit: now.mono + timeout,
                member_added: false,
            });
            self.rebalance_deadline =
                Some(now.mono + settings.initial_rebalance_delay.min(timeout));
        } else {
            self.initial = None;
            self.rebalance_deadline = Some(now.mono + timeout);
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase when every member has rejoined (outside the initial delay).
    fn try_complete_join(&mut self, now: Now) {
        if self.state == GroupState::PreparingRebalance
            && self.initial.is_none()
            && self.pending.is_empty()
            && self.members.iter().all(|m| m.join.is_some())
        {
            self.complete_join(now);
        }
    }

    /// The rebalance timeout (or initial delay) passed.
    fn rebalance_timed_out(&mut self, now: Now, settings: &GroupSettings) {
        if let Some(initial) = &mut self.initial {
            if initial.member_added && now.mono < initial.limit {
                initial.member_added = false;
                self.rebalance_deadline =
                    Some((now.mono + settings.initial_rebalance_delay).min(initial.limit));
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
            self.remove_member(&id, KafkaCode::UnknownMemberId);
        }
        self.complete_join(now);
    }

    fn complete_join(&mut self, now: Now) {
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
            self.members[i].deadline = now.mono + self.members[i].session_timeout;
            if let Some(version) = self.members[i].join.take() {
                let member_id = self.members[i].id.clone();
                let response = self.current_join_response(&member_id, version, false);
                self.effects.push(Effect::Join {
                    member_id,
                    response,
                });
            }
        }
    }

    fn become_empty(&mut self, now: Now) {
        self.state = GroupState::Empty;
        self.empty_since = now.mono;
        self.empty_since_ms = now.wall_ms;
    }

    /// The JoinGroup answer describing the current generation to `member_id`; the leader
    /// gets the members. `skip_assignment`: the leader must not assign (KIP-814, v9+).
    fn current_join_response(
        &self,
        member_id: &str,
        version: i16,
        skip_assignment: bool,
    ) -> JoinGroupResponse {
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
            .with_skip_assignment(version >= 9 && skip_assignment && self.is_leader(member_id))
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

    /// JoinGroup. A new member (empty id) gets an id: a dynamic one at v4+ through
    /// MEMBER_ID_REQUIRED, a static one at once. A known static member coming back with a
    /// new incarnation takes over its old membership and fences the old id; in a Stable
    /// group whose protocol it does not change, without a rebalance (KIP-345).
    pub(super) fn join(
        &mut self,
        req: JoinInput,
        new_member_id: impl FnOnce(Option<&str>) -> String,
        settings: &GroupSettings,
        now: Now,
    ) -> Answer<JoinGroupResponse> {
        let version = req.version;
        let fail = |e: KafkaCode| Answer::Now(join_error(version, e, &req.member_id));
        let session = millis(req.session_timeout_ms);
        if req.session_timeout_ms < 0
            || session < settings.min_session_timeout
            || session > settings.max_session_timeout
        {
            return fail(KafkaCode::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return fail(KafkaCode::CoordinatorNotAvailable);
        }
        let rebalance = if version == 0 || req.rebalance_timeout_ms <= 0 {
            session
        } else {
            millis(req.rebalance_timeout_ms)
        };
        if req.member_id.is_empty() {
            return self.join_new(req, new_member_id, session, rebalance, settings, now);
        }
        let member_id = req.member_id.as_str();
        if self.is_fenced(req.instance_id.as_deref(), member_id) {
            return fail(KafkaCode::FencedInstanceId);
        }
        if !self.supports(&req.protocol_type, &req.protocols, member_id) {
            return fail(KafkaCode::InconsistentGroupProtocol);
        }
        if self.pending.remove(member_id).is_some() {
            let member = Member {
                id: member_id.to_owned(),
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                session_timeout: session,
                rebalance_timeout: rebalance,
                assignment: Bytes::new(),
                join: None,
                sync: None,
                deadline: now.mono + session,
            };
            self.add_member(member, now, settings);
            let index = self.members.len() - 1;
            self.park(index, Waiting::Join, version);
            self.try_complete_join(now);
            return Answer::Parked;
        }
        let state_now = self.state;
        let is_leader = self.is_leader(member_id);
        let Some(index) = self.members.iter().position(|m| m.id == member_id) else {
            return fail(KafkaCode::UnknownMemberId);
        };
        let member = &mut self.members[index];
        member.deadline = now.mono + session;
        let unchanged = member.protocols == req.protocols;
        match state_now {
            GroupState::Empty | GroupState::Dead => fail(KafkaCode::UnknownMemberId),
            GroupState::CompletingRebalance if unchanged => {
                Answer::Now(self.current_join_response(member_id, version, false))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Answer::Now(self.current_join_response(member_id, version, false))
            }
            _ => {
                if let Some(old) = member.join.take() {
                    self.effects.push(Effect::Join {
                        member_id: member_id.to_owned(),
                        response: join_error(old, KafkaCode::RebalanceInProgress, member_id),
                    });
                }
                let member = &mut self.members[index];
                member.protocol_type = req.protocol_type;
                member.protocols = req.protocols;
                member.session_timeout = session;
                member.rebalance_timeout = rebalance;
                member.client_id = req.client_id;
                member.client_host = req.client_host;
                self.park(index, Waiting::Join, version);
                if state_now != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now, settings);
                }
                self.try_complete_join(now);
                Answer::Parked
            }
        }
    }

    /// A JoinGroup without a member id.
    fn join_new(
        &mut self,
        req: JoinInput,
        new_member_id: impl FnOnce(Option<&str>) -> String,
        session: Duration,
        rebalance: Duration,
        settings: &GroupSettings,
        now: Now,
    ) -> Answer<JoinGroupResponse> {
        let version = req.version;
        let old_id = req
            .instance_id
            .as_ref()
            .and_then(|i| self.statics.get(i).cloned());
        if !self.supports(
            &req.protocol_type,
            &req.protocols,
            old_id.as_deref().unwrap_or(""),
        ) {
            return Answer::Now(join_error(
                version,
                KafkaCode::InconsistentGroupProtocol,
                "",
            ));
        }
        let new_id = new_member_id(req.instance_id.as_deref());
        let Some(instance) = req.instance_id.clone() else {
            if version >= 4 {
                self.pending.insert(new_id.clone(), now.mono + session);
                return Answer::Now(join_error(version, KafkaCode::MemberIdRequired, &new_id));
            }
            return self.add_new_member(req, new_id, session, rebalance, settings, now);
        };
        let Some(index) = old_id
            .as_deref()
            .and_then(|old| self.members.iter().position(|m| m.id == old))
        else {
            return self.add_new_member(req, new_id, session, rebalance, settings, now);
        };
        // A static member came back with a new incarnation: the old id is fenced.
        let old_id = self.members[index].id.clone();
        self.fail_member_waiters(index, KafkaCode::FencedInstanceId);
        let old_protocols = std::mem::replace(&mut self.members[index].protocols, req.protocols);
        let member = &mut self.members[index];
        member.id = new_id.clone();
        member.protocol_type = req.protocol_type;
        member.session_timeout = session;
        member.rebalance_timeout = rebalance;
        member.deadline = now.mono + session;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        self.statics.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if self.state == GroupState::Stable
            && (self.members[index].protocols == old_protocols
                || self.select_protocol() == self.protocol_name)
        {
            // The assignment it had stays, and nobody else hears of it. A returning leader
            // must not assign: from v9 it is told so (KIP-814); before, it is given the old
            // leader id, so that it does not believe it leads.
            if version >= 9 || !self.is_leader(&new_id) {
                return Answer::Now(self.current_join_response(&new_id, version, true));
            }
            return Answer::Now(
                self.current_join_response(&new_id, version, false)
                    .with_leader(sb(&old_id))
                    .with_members(Vec::new()),
            );
        }
        self.park(index, Waiting::Join, version);
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now, settings);
        }
        self.try_complete_join(now);
        Answer::Parked
    }

    fn add_new_member(
        &mut self,
        req: JoinInput,
        id: String,
        session: Duration,
        rebalance: Duration,
        settings: &GroupSettings,
        now: Now,
    ) -> Answer<JoinGroupResponse> {
        let member = Member {
            id,
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            session_timeout: session,
            rebalance_timeout: rebalance,
            assignment: Bytes::new(),
            join: None,
            sync: None,
            deadline: now.mono + session,
        };
        self.add_member(member, now, settings);
        let index = self.members.len() - 1;
        self.park(index, Waiting::Join, req.version);
        self.try_complete_join(now);
        Answer::Parked
    }

    /// SyncGroup. A member waits for the leader's assignment; the leader's sync completes
    /// the rebalance. A Stable member gets its assignment again.
    pub(super) fn sync(&mut self, req: SyncInput, now: Now) -> Answer<SyncGroupResponse> {
        let fail = |e: KafkaCode| Answer::Now(sync_error(e));
        let member_id = req.member_id.as_str();
        if let Err(e) = self.validate_member(member_id, req.instance_id.as_deref(), req.generation)
        {
            return fail(e);
        }
        if req.version >= 5 {
            let type_ok = req
                .protocol_type
                .as_deref()
                .is_none_or(|t| self.protocol_type.as_deref() == Some(t));
            let name_ok = req
                .protocol_name
                .as_deref()
                .is_none_or(|n| self.protocol_name.as_deref() == Some(n));
            if !type_ok || !name_ok {
                return fail(KafkaCode::InconsistentGroupProtocol);
            }
        }
        let Some(index) = self.members.iter().position(|m| m.id == member_id) else {
            return fail(KafkaCode::UnknownMemberId);
        };
        match self.state {
            GroupState::Empty | GroupState::Dead => fail(KafkaCode::UnknownMemberId),
            GroupState::PreparingRebalance => fail(KafkaCode::RebalanceInProgress),
            GroupState::Stable => {
                let member = &mut self.members[index];
                member.deadline = now.mono + member.session_timeout;
                let assignment = member.assignment.clone();
                Answer::Now(self.sync_response(req.version, assignment))
            }
            GroupState::CompletingRebalance => {
                let member = &mut self.members[index];
                member.deadline = now.mono + member.session_timeout;
                if member.sync.take().is_some() {
                    self.effects.push(Effect::Sync {
                        member_id: member_id.to_owned(),
                        response: sync_error(KafkaCode::RebalanceInProgress),
                    });
                }
                self.park(index, Waiting::Sync, req.version);
                if self.is_leader(member_id) {
                    // The last assignment of a member wins; members left out get nothing.
                    let assignments: HashMap<&str, &Bytes> = req
                        .assignments
                        .iter()
                        .map(|(m, a)| (m.as_str(), a))
                        .collect();
                    for m in &mut self.members {
                        m.assignment = assignments
                            .get(m.id.as_str())
                            .map(|a| (*a).clone())
                            .unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    for i in 0..self.members.len() {
                        if let Some(version) = self.members[i].sync.take() {
                            self.members[i].deadline = now.mono + self.members[i].session_timeout;
                            let response =
                                self.sync_response(version, self.members[i].assignment.clone());
                            self.effects.push(Effect::Sync {
                                member_id: self.members[i].id.clone(),
                                response,
                            });
                        }
                    }
                }
                Answer::Parked
            }
        }
    }

    /// Heartbeat: extends the session; REBALANCE_IN_PROGRESS tells the member to rejoin.
    pub(super) fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Result<(), KafkaCode> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Err(KafkaCode::UnknownMemberId);
        }
        self.validate_member(member_id, instance_id, generation)?;
        if let Some(member) = self.member_mut(member_id) {
            member.deadline = now.mono + member.session_timeout;
        }
        if self.state == GroupState::PreparingRebalance {
            Err(KafkaCode::RebalanceInProgress)
        } else {
            Ok(())
        }
    }

    /// LeaveGroup of `(member id, group.instance.id)` pairs; one error code each. A static
    /// member leaves by instance id (its member id may be empty, not stale).
    pub(super) fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        settings: &GroupSettings,
        now: Now,
    ) -> Vec<i16> {
        let mut departed = false;
        let mut pending_left = false;
        let mut codes = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let code = match instance_id {
                Some(instance) => match self.statics.get(instance).cloned() {
                    Some(holder) if !member_id.is_empty() && holder != *member_id => {
                        KafkaCode::FencedInstanceId.code()
                    }
                    Some(holder) => {
                        departed |= self.remove_member(&holder, KafkaCode::UnknownMemberId);
                        0
                    }
                    None => KafkaCode::UnknownMemberId.code(),
                },
                None => {
                    if self.pending.remove(member_id).is_some() {
                        pending_left = true;
                        0
                    } else if self.remove_member(member_id, KafkaCode::UnknownMemberId) {
                        departed = true;
                        0
                    } else {
                        KafkaCode::UnknownMemberId.code()
                    }
                }
            };
            codes.push(code);
        }
        if departed {
            self.after_departure(now, settings);
        } else if pending_left {
            self.try_complete_join(now);
        }
        codes
    }

    /// Checks the member fields of an offset commit to this group; a member's commit
    /// extends its session. A negative generation commits for a group without members.
    pub(super) fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Result<(), KafkaCode> {
        if self.state == GroupState::Dead {
            return Err(KafkaCode::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.is_fenced(instance_id, member_id) {
            return Err(KafkaCode::FencedInstanceId);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(KafkaCode::RebalanceInProgress);
        }
        self.validate_member(member_id, instance_id, generation)?;
        if let Some(member) = self.member_mut(member_id) {
            member.deadline = now.mono + member.session_timeout;
        }
        Ok(())
    }

    /// Runs the timers due at `now`. A session that runs out removes the member, static or
    /// not (a static member's leave is its session timeout).
    pub(super) fn tick(&mut self, now: Now, settings: &GroupSettings) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now.mono);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.join.is_none() && m.sync.is_none() && m.deadline <= now.mono)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::debug!(member = %id, "group member session expired");
            self.remove_member(id, KafkaCode::UnknownMemberId);
        }
        if !expired.is_empty() {
            self.after_departure(now, settings);
        } else if self.pending.len() != pending_before {
            self.try_complete_join(now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| d <= now.mono)
        {
            self.rebalance_timed_out(now, settings);
        }
    }

    /// Whether the group can be forgotten (nothing left in it).
    pub(super) fn is_vacant(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
    }

    /// Whether the group is vacant and has been long enough to be forgotten.
    pub(super) fn is_forgettable(&self, now: Now) -> bool {
        self.is_vacant() && self.empty_since + EMPTY_GROUP_LINGER <= now.mono
    }

    /// The earliest moment [`Group::tick`] has something to do.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
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

impl Group {
    /// Whether committed offsets may be deleted (OffsetDelete), and which topics are then
    /// off limits: `Ok(Some(topics))` the topics the members subscribe to (none when Empty),
    /// `Ok(None)` every topic (a consumer group whose subscriptions are not known yet). Only
    /// an Empty group or one of the `consumer` protocol may lose offsets, as in Kafka.
    pub(super) fn offsets_deletable(&self) -> Result<Option<BTreeSet<String>>, KafkaCode> {
        match self.state {
            GroupState::Dead => Err(KafkaCode::GroupIdNotFound),
            GroupState::Empty => Ok(Some(BTreeSet::new())),
            _ if self.protocol_type.as_deref() != Some("consumer") => Err(KafkaCode::NonEmptyGroup),
            _ => Ok(self.subscribed_topics()),
        }
    }

    /// The topics the members subscribe to, from their metadata of the selected `consumer`
    /// protocol (ConsumerProtocolSubscription); `None` when not known.
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in &self.members {
            topics.extend(subscription_topics(m.metadata_for(Some(protocol)))?);
        }
        Some(topics)
    }
}

/// The topics of a consumer's subscription metadata (ConsumerProtocolSubscription: an INT16
/// version, then, in every version, the topics as an INT32-counted array of INT16-length
/// strings first); `None` when it does not parse. Read by hand with every length checked
/// against what is there: the metadata is whatever a client sent.
fn subscription_topics(metadata: Bytes) -> Option<Vec<String>> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Some(head)
    }
    let mut buf: &[u8] = &metadata;
    let version = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(&mut buf, 4)?.try_into().ok()?);
    // Each topic takes at least its two length bytes.
    let count = usize::try_from(count)
        .ok()
        .filter(|c| *c <= buf.len() / 2)?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
        let name = take(&mut buf, usize::try_from(len).ok()?)?;
        topics.push(std::str::from_utf8(name).ok()?.to_owned());
    }
    Some(topics)
}

/// A JoinGroup error answer.
pub(super) fn join_error(version: i16, error: KafkaCode, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_protocol_name(protocol_name_for(version, None))
        .with_leader(sb(""))
        .with_member_id(sb(member_id))
}

/// A SyncGroup error answer.
pub(super) fn sync_error(error: KafkaCode) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_error_code(error.code())
        .with_assignment(Bytes::new())
}

/// `protocol_name` of a JoinGroup response: nullable from v7, an empty string before.
fn protocol_name_for(
    version: i16,
    name: Option<&str>,
) -> Option<kafka_protocol::protocol::StrBytes> {
    match name {
        Some(name) => Some(sb(name)),
        None if version >= 7 => None,
        None => Some(sb("")),
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: i32 = 10_000;

    fn at(ms: u64) -> Now {
        Now {
            mono: Duration::from_millis(ms),
            wall_ms: 1_700_000_000_000 + i64::try_from(ms).unwrap_or(0),
        }
    }

    fn settings() -> GroupSettings {
        GroupSettings::default()
    }

    fn join(member: &str, instance: Option<&str>, version: i16) -> JoinInput {
        JoinInput {
            member_id: member.to_owned(),
            instance_id: instance.map(str::to_owned),
            protocol_type: "consumer".to_owned(),
            protocols: vec![("range".to_owned(), Bytes::from_static(b"m"))],
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: 30_000,
            version,
            client_id: "client-1".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
        }
    }

    fn sync(
        member: &str,
        instance: Option<&str>,
        generation: i32,
        assign: &[(&str, &str)],
    ) -> SyncInput {
        SyncInput {
            member_id: member.to_owned(),
            instance_id: instance.map(str::to_owned),
            generation,
            protocol_type: None,
            protocol_name: None,
            assignments: assign
                .iter()
                .map(|(m, a)| ((*m).to_owned(), Bytes::from((*a).to_owned())))
                .collect(),
            version: 3,
        }
    }

    /// Makes member ids for one join.
    type IdMaker = Box<dyn FnOnce(Option<&str>) -> String>;

    /// A generator of member ids: `<instance or member>-<n>`.
    fn ids() -> impl FnMut() -> IdMaker {
        let mut n = 0;
        move || {
            n += 1;
            let n = n;
            Box::new(move |i: Option<&str>| format!("{}-{n}", i.unwrap_or("member")))
        }
    }

    /// The join answers among effects: (member, error code, generation).
    fn joins(effects: &[Effect]) -> Vec<(String, i16, i32)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Join {
                    member_id,
                    response,
                } => Some((
                    member_id.clone(),
                    response.error_code,
                    response.generation_id,
                )),
                _ => None,
            })
            .collect()
    }

    fn syncs(effects: &[Effect]) -> Vec<(String, i16, Bytes)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Sync {
                    member_id,
                    response,
                } => Some((
                    member_id.clone(),
                    response.error_code,
                    response.assignment.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn parks(effects: &[Effect]) -> usize {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Park { .. }))
            .count()
    }

    fn now_code<R>(answer: Answer<R>, code: impl Fn(&R) -> i16) -> Option<i16> {
        match answer {
            Answer::Now(r) => Some(code(&r)),
            Answer::Parked => None,
        }
    }

    /// Two static members `a` and `b` (instances `ia`, `ib`), Stable at generation 1 with
    /// assignments "pa" and "pb". Returns the group and the clock in ms.
    fn stable_pair() -> (Group, u64) {
        let s = settings();
        let mut next = ids();
        let mut g = Group::new(at(0));
        assert!(matches!(
            g.join(join("", Some("ia"), 5), next(), &s, at(0)),
            Answer::Parked
        ));
        assert!(matches!(
            g.join(join("", Some("ib"), 5), next(), &s, at(10)),
            Answer::Parked
        ));
        assert_eq!(parks(&g.take_effects()), 2);
        // The initial delay (100 ms) passes, extended once by b's arrival.
        g.tick(at(100), &s);
        assert!(joins(&g.take_effects()).is_empty());
        g.tick(at(200), &s);
        let joined = joins(&g.take_effects());
        assert_eq!(
            joined,
            vec![("ia-1".to_owned(), 0, 1), ("ib-2".to_owned(), 0, 1)]
        );
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert!(matches!(
            g.sync(sync("ib-2", Some("ib"), 1, &[]), at(210)),
            Answer::Parked
        ));
        assert!(matches!(
            g.sync(
                sync("ia-1", Some("ia"), 1, &[("ia-1", "pa"), ("ib-2", "pb")]),
                at(220)
            ),
            Answer::Parked
        ));
        let synced = syncs(&g.take_effects());
        assert_eq!(
            synced,
            vec![
                ("ia-1".to_owned(), 0, Bytes::from("pa")),
                ("ib-2".to_owned(), 0, Bytes::from("pb")),
            ]
        );
        assert_eq!(g.state, GroupState::Stable);
        (g, 220)
    }

    #[test]
    fn session_timeouts_outside_the_bounds_are_refused() {
        let s = GroupSettings {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            ..GroupSettings::default()
        };
        let table: [(i32, Option<i16>); 6] = [
            (-1, Some(KafkaCode::InvalidSessionTimeout.code())),
            (0, Some(KafkaCode::InvalidSessionTimeout.code())),
            (5_999, Some(KafkaCode::InvalidSessionTimeout.code())),
            (6_000, Some(KafkaCode::MemberIdRequired.code())),
            (1_800_000, Some(KafkaCode::MemberIdRequired.code())),
            (1_800_001, Some(KafkaCode::InvalidSessionTimeout.code())),
        ];
        for (session_ms, expected) in table {
            let mut g = Group::new(at(0));
            let mut input = join("", None, 4);
            input.session_timeout_ms = session_ms;
            let answer = g.join(input, |_| "m".to_owned(), &s, at(0));
            assert_eq!(
                now_code(answer, |r| r.error_code),
                expected,
                "session {session_ms} ms"
            );
            assert!(g.take_effects().is_empty(), "session {session_ms} ms");
            assert_eq!(g.state, GroupState::Empty);
        }
    }

    #[test]
    fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
        let s = settings();
        let (mut g, t) = stable_pair();
        let answer = g.join(
            join("", Some("ib"), 5),
            |i| format!("{}-new", i.unwrap_or("?")),
            &s,
            at(t + 5),
        );
        let Answer::Now(r) = answer else {
            panic!("a static rejoin in a Stable group must answer at once");
        };
        assert_eq!((r.error_code, r.generation_id), (0, 1));
        assert_eq!(r.member_id.as_str(), "ib-new");
        assert_eq!(r.leader.as_str(), "ia-1");
        assert!(r.members.is_empty());
        // Nobody else hears of it: no effects, still Stable, same generation.
        assert!(g.take_effects().is_empty());
        assert_eq!((g.state, g.generation), (GroupState::Stable, 1));
        let table: [(&str, i16); 3] = [
            ("ib-2", KafkaCode::FencedInstanceId.code()),
            ("ib-new", 0),
            ("ia-1", KafkaCode::FencedInstanceId.code()),
        ];
        for (member, code) in table {
            let got = g
                .heartbeat(member, Some("ib"), 1, at(t + 6))
                .err()
                .map_or(0, |e| e.code());
            assert_eq!(got, code, "heartbeat of {member} as ib");
        }
        assert_eq!(g.heartbeat("ia-1", Some("ia"), 1, at(t + 6)), Ok(()));
        let Answer::Now(r) = g.sync(sync("ib-new", Some("ib"), 1, &[]), at(t + 7)) else {
            panic!("a Stable sync answers at once");
        };
        assert_eq!((r.error_code, r.assignment), (0, Bytes::from("pb")));
        assert_eq!(
            g.validate_commit("ib-2", Some("ib"), 1, at(t + 8)),
            Err(KafkaCode::FencedInstanceId)
        );
        assert_eq!(
            g.validate_commit("ib-new", Some("ib"), 1, at(t + 8)),
            Ok(())
        );
        let m = g.members.iter().find(|m| m.id == "ib-new").expect("member");
        assert_eq!(
            (m.client_id.as_str(), m.client_host.as_str()),
            ("client-1", "/127.0.0.1")
        );
    }

    #[test]
    fn a_static_rejoin_keeps_the_group_while_its_protocol_stays_selected() {
        let s = settings();
        let (mut g, t) = stable_pair();
        let mut input = join("", Some("ib"), 5);
        input.protocols = vec![
            ("sticky".to_owned(), Bytes::new()),
            ("range".to_owned(), Bytes::new()),
        ];
        // Still "range" for the group: the selection does not change, no rebalance.
        assert!(matches!(
            g.join(input.clone(), |_| "ib-x".to_owned(), &s, at(t + 1)),
            Answer::Now(_)
        ));
        assert_eq!(g.state, GroupState::Stable);
        // A member that now prefers only "sticky" cannot join a "range" group.
        input.protocols = vec![("sticky".to_owned(), Bytes::new())];
        let answer = g.join(input, |_| "ib-y".to_owned(), &s, at(t + 2));
        assert_eq!(
            now_code(answer, |r| r.error_code),
            Some(KafkaCode::InconsistentGroupProtocol.code())
        );
    }

    #[test]
    fn a_static_rejoin_during_a_rebalance_fences_the_parked_join() {
        let s = settings();
        let (mut g, t) = stable_pair();
        // a rejoins (dynamic-style, with its id): a rebalance starts, a's join parks.
        assert!(matches!(
            g.join(
                join("ia-1", Some("ia"), 5),
                |_| unreachable!(),
                &s,
                at(t + 1)
            ),
            Answer::Parked
        ));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(parks(&g.take_effects()), 1);
        // a restarts: the parked join of the old id is fenced, the new one parks.
        assert!(matches!(
            g.join(
                join("", Some("ia"), 5),
                |_| "ia-9".to_owned(),
                &s,
                at(t + 2)
            ),
            Answer::Parked
        ));
        let effects = g.take_effects();
        assert_eq!(
            joins(&effects),
            vec![("ia-1".to_owned(), KafkaCode::FencedInstanceId.code(), -1)]
        );
        assert_eq!(parks(&effects), 1);
        // b rejoins too: the join completes for both, generation 2, leader under its new id.
        assert!(matches!(
            g.join(
                join("ib-2", Some("ib"), 5),
                |_| unreachable!(),
                &s,
                at(t + 3)
            ),
            Answer::Parked
        ));
        let effects = g.take_effects();
        assert_eq!(
            joins(&effects),
            vec![("ia-9".to_owned(), 0, 2), ("ib-2".to_owned(), 0, 2)]
        );
    }

    #[test]
    fn the_session_timeout_removes_a_static_member() {
        let s = settings();
        let (mut g, t) = stable_pair();
        // a keeps heartbeating; b goes silent for a whole session.
        let mut clock = t;
        while clock < t + 9_000 {
            clock += 3_000;
            assert_eq!(g.heartbeat("ia-1", Some("ia"), 1, at(clock)), Ok(()));
            g.tick(at(clock), &s);
        }
        g.tick(at(t + u64::try_from(SESSION_MS).unwrap_or(0)), &s);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert!(g.members.iter().all(|m| m.id != "ib-2"));
        // The instance id is free again: a new ib is a new member, not a replacement.
        let answer = g.join(
            join("", Some("ib"), 5),
            |_| "ib-3".to_owned(),
            &s,
            at(clock + 10),
        );
        assert!(matches!(answer, Answer::Parked));
        assert_eq!(g.members.len(), 2);
    }

    #[test]
    fn leave_by_instance_id_in_a_batch() {
        let s = settings();
        let (mut g, t) = stable_pair();
        let table = [
            (
                ("ib-1".to_owned(), Some("ib".to_owned())),
                KafkaCode::FencedInstanceId.code(),
            ),
            (
                ("".to_owned(), Some("nobody".to_owned())),
                KafkaCode::UnknownMemberId.code(),
            ),
            (("".to_owned(), Some("ia".to_owned())), 0),
            (("ib-2".to_owned(), Some("ib".to_owned())), 0),
            (
                ("ghost".to_owned(), None),
                KafkaCode::UnknownMemberId.code(),
            ),
        ];
        let leaving: Vec<(String, Option<String>)> = table.iter().map(|(l, _)| l.clone()).collect();
        let expected: Vec<i16> = table.iter().map(|(_, c)| *c).collect();
        assert_eq!(g.leave(&leaving, &s, at(t + 1)), expected);
        // Both left: the rebalance completes at once with nobody, and the group is Empty.
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.members.is_empty());
        assert!(g.is_vacant());
    }

    #[test]
    fn subscription_topics_reads_only_what_is_there() {
        let mut good = vec![0u8, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        good.extend_from_slice(&[0, 0, 0, 0]); // v1 user data etc. follow the topics
        let table: [(&[u8], Option<Vec<&str>>); 7] = [
            (&good, Some(vec!["a", "bc"])),
            (&[0, 0, 0, 0, 0, 0], Some(vec![])),
            (b"meta-range", None),
            (&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0], None),
            (&[0, 0, 0, 0, 0, 1, 0, 5, b'a'], None),
            (&[0xff, 0xff, 0, 0, 0, 0], None),
            (&[0], None),
        ];
        for (bytes, want) in table {
            let got = subscription_topics(Bytes::copy_from_slice(bytes));
            let want = want.map(|w| w.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "{bytes:?}");
        }
    }

    #[test]
    fn heartbeat_answers() {
        let (mut g, t) = stable_pair();
        type Case<'a> = (&'a str, Option<&'a str>, i32, Result<(), KafkaCode>);
        let table: [Case<'_>; 5] = [
            ("ia-1", Some("ia"), 1, Ok(())),
            ("ia-1", None, 1, Ok(())),
            ("ia-1", Some("ia"), 2, Err(KafkaCode::IllegalGeneration)),
            ("ghost", None, 1, Err(KafkaCode::UnknownMemberId)),
            ("ghost", Some("ia"), 1, Err(KafkaCode::FencedInstanceId)),
        ];
        for (member, instance, generation, expected) in table {
            assert_eq!(
                g.heartbeat(member, instance, generation, at(t + 1)),
                expected,
                "{member} {instance:?} {generation}"
            );
        }
    }
}
