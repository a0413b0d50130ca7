//! The consumer-group coordinator (classic and KIP-848 consumer protocol) and committed
//! offsets.
//!
//! This node coordinates every group. Membership (the JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup protocol of classic groups, the ConsumerGroupHeartbeat protocol of consumer
//! groups) lives in memory only, as it does on a Kafka broker that just became
//! coordinator: clients rejoin after a restart. Committed offsets are durable: each
//! OffsetCommit is written to the metadata key-value store before the reply (see `store`),
//! and they are loaded back by [`GroupCoordinator::open`]. Every change of a committed
//! offset is first appended to the offsets log the broker attaches (`__consumer_offsets`,
//! see [`crate::offsets_topic`]), under the same lock that orders the store's writes.
//!
//! The parts: `machine` is the membership state machine of one classic group, without I/O
//! (inputs in, answers and effects out, time passed in); `consumer` the same for one
//! consumer-protocol group, driven by `consumer_api`; `store` owns the offsets' keys and writes;
//! this module is the coordinator that drives them (membership requests, parked requests,
//! timers), with the offset APIs in `offsets` and the group administration APIs in
//! `admin`.
//!
//! One mutex guards the groups; it is never held across an `.await`. Requests that must wait
//! (a JoinGroup until the rebalance completes, a follower's SyncGroup until the leader's
//! assignment arrives) park a one-shot sender here, keyed by group and member id, and await
//! the receiver outside the lock; the machine's effects say when to answer them. One
//! background task (the reaper) sleeps until the earliest deadline (session expiry,
//! rebalance timeout, pending-member expiry, offset retention) and is woken whenever a request
//! changes the groups. It uses tokio time, so tests can pause the clock.

mod admin;
mod consumer;
mod consumer_api;
mod machine;
mod offsets;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::store::ShimStore;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use wal::clock::{Clock, ClockRef, SystemClock};

use self::consumer::ConsumerGroup;
pub use self::consumer_api::TopicInfo;
use self::machine::{
    Answer, Effect, Group, JoinInput, Now, SyncInput, Waiting, join_error, sync_error,
};
use self::store::{OffsetStore, StoredOffset};
pub use self::store::{decode_name, encode_name};
use crate::TopicCatalog;
use crate::error::{KafkaCode, ShimError};
use crate::offsets_topic::{
    LogRecord, OFFSETS_TOPIC_PARTITIONS, OffsetLog, offset_commit_key, offset_commit_value,
    partition_for,
};

/// Largest `committed_metadata` accepted, in bytes (Kafka's `offset.metadata.max.bytes`).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

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
    /// The session timeout of consumer-protocol members
    /// (`group.consumer.session.timeout.ms`, 45 s).
    pub consumer_session_timeout: Duration,
    /// The heartbeat interval consumer-protocol members are given
    /// (`group.consumer.heartbeat.interval.ms`, 5 s).
    pub consumer_heartbeat_interval: Duration,
    /// The most members a consumer-protocol group may have (`group.consumer.max.size`).
    pub consumer_max_size: usize,
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
            consumer_session_timeout: Duration::from_secs(45),
            consumer_heartbeat_interval: Duration::from_secs(5),
            consumer_max_size: i32::MAX as usize,
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
    Store(#[from] ShimError),
    /// The offsets log (`__consumer_offsets`) could not be written: nothing was stored.
    #[error("offsets log: {0}")]
    Log(String),
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

/// Where a JoinGroup comes from, as DescribeGroups reports a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberOrigin {
    /// The `client.id` of the request header.
    pub client_id: String,
    /// The client's IP address (DescribeGroups shows it as Kafka does, `/<ip>`).
    pub host: String,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    /// The membership of consumer-protocol groups (KIP-848). Their committed offsets are in
    /// `groups`, under an Empty classic group that never gets members while this has it.
    consumers: HashMap<String, ConsumerGroup>,
    /// Parked JoinGroups by (group, member id).
    joins: HashMap<(String, String), oneshot::Sender<JoinGroupResponse>>,
    /// Parked SyncGroups by (group, member id).
    syncs: HashMap<(String, String), oneshot::Sender<SyncGroupResponse>>,
    next_retention_check: Option<Instant>,
    /// Offsets committed inside open transactions (TxnOffsetCommit): group -> producer id ->
    /// partition -> offset. They become committed offsets when the transaction commits.
    txn_pending: HashMap<String, HashMap<i64, StagedOffsets>>,
}

/// Offsets one transaction staged for one group, by (topic, partition).
type StagedOffsets = BTreeMap<(String, i32), StoredOffset>;

/// The request being handled, if it may be parked.
enum Parkable {
    None,
    Join(oneshot::Sender<JoinGroupResponse>),
    Sync(oneshot::Sender<SyncGroupResponse>),
}

impl State {
    /// Carries out a group's effects, in order; `own` is the request that was the input.
    fn apply(&mut self, group_id: &str, effects: Vec<Effect>, mut own: Parkable) {
        for effect in effects {
            match effect {
                Effect::Park { member_id, kind } => {
                    let key = (group_id.to_owned(), member_id);
                    match (kind, std::mem::replace(&mut own, Parkable::None)) {
                        (Waiting::Join, Parkable::Join(tx)) => {
                            self.joins.insert(key, tx);
                        }
                        (Waiting::Sync, Parkable::Sync(tx)) => {
                            self.syncs.insert(key, tx);
                        }
                        _ => tracing::error!(
                            group = group_id,
                            "a group parked a request of another kind"
                        ),
                    }
                }
                Effect::Join {
                    member_id,
                    response,
                } => {
                    if let Some(tx) = self.joins.remove(&(group_id.to_owned(), member_id)) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Sync {
                    member_id,
                    response,
                } => {
                    if let Some(tx) = self.syncs.remove(&(group_id.to_owned(), member_id)) {
                        let _ = tx.send(response);
                    }
                }
            }
        }
    }

    /// Takes a group's effects and carries them out.
    fn settle(&mut self, group_id: &str, own: Parkable) {
        let effects = self
            .groups
            .get_mut(group_id)
            .map(Group::take_effects)
            .unwrap_or_default();
        self.apply(group_id, effects, own);
    }
}

struct Shared {
    store: OffsetStore,
    settings: GroupSettings,
    state: Mutex<State>,
    /// Serializes writes of offsets (commits, deletions, expiry) with their cache updates
    /// and their records in the offsets log.
    persist: tokio::sync::Mutex<()>,
    /// The offsets log (`__consumer_offsets`), once the broker attached it.
    log: OnceLock<Weak<dyn OffsetLog>>,
    /// Whether the log is known to exist (and to hold the offsets stored before it).
    log_ready: AtomicBool,
    /// The log was created by this process and has not yet got every offset stored before
    /// (a failed write of them is retried by the next change).
    backfill_pending: AtomicBool,
    wake: Arc<Notify>,
    /// Set by [`GroupCoordinator::shutdown`]: nothing may park any more.
    closed: AtomicBool,
    /// The zero of the machines' monotonic time.
    epoch: Instant,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = self.state.try_lock().map(|s| s.groups.len()).ok();
        f.debug_struct("GroupCoordinator")
            .field("store", self.store.store())
            .field("settings", &self.settings)
            .field("groups", &groups)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `group`'s changes to the offsets log, when one is attached, before the store
    /// is written (see `offsets_topic`): `Some(offset)` a commit, `None` a deletion. The
    /// caller holds the persist lock. On the first write the log is created if needed, and
    /// when created now it first gets every offset stored before it existed.
    async fn log(&self, group: &str, changes: &[OffsetChange]) -> Result<(), GroupError> {
        if changes.is_empty() {
            return Ok(());
        }
        let Some(log) = self.ensure_log().await? else {
            return Ok(());
        };
        let now_ms = wall_ms(self.settings.clock.as_ref());
        let records = log_records(group, changes)?;
        log.append(group, records, now_ms)
            .await
            .map_err(GroupError::Log)
    }

    /// The attached offsets log, made sure to exist; when created now, it first gets every
    /// offset stored before. The caller holds the persist lock.
    async fn ensure_log(&self) -> Result<Option<Arc<dyn OffsetLog>>, GroupError> {
        let Some(log) = self.log.get().and_then(Weak::upgrade) else {
            return Ok(None);
        };
        let now_ms = wall_ms(self.settings.clock.as_ref());
        if !self.log_ready.load(Ordering::Acquire) {
            if log.ensure().await.map_err(GroupError::Log)? {
                self.backfill_pending.store(true, Ordering::Release);
            }
            if self.backfill_pending.load(Ordering::Acquire) {
                for (g, offsets) in self.offsets_in_force() {
                    let records = log_records(&g, &offsets)?;
                    log.append(&g, records, now_ms)
                        .await
                        .map_err(GroupError::Log)?;
                }
            }
            self.backfill_pending.store(false, Ordering::Release);
            self.log_ready.store(true, Ordering::Release);
        }
        Ok(Some(log))
    }

    /// Every committed offset in force, per group (in group order), as changes that set it.
    fn offsets_in_force(&self) -> Vec<(String, Vec<OffsetChange>)> {
        let state = self.lock();
        state
            .groups
            .iter()
            .filter(|(_, group)| !group.offsets.is_empty())
            .map(|(g, group)| {
                let offsets = group
                    .offsets
                    .iter()
                    .flat_map(|(t, parts)| {
                        parts
                            .iter()
                            .map(|(p, o)| ((t.clone(), *p), Some(o.clone())))
                    })
                    .collect();
                (g.clone(), offsets)
            })
            .collect()
    }

    /// Compacts the partitions of the offsets log in which at least `min_superseded`
    /// records are superseded and those outnumber the records in force (see
    /// `offsets_topic`); returns how many. The caller holds the persist lock, so no offset
    /// write comes between a partition's snapshot and the move of its start.
    async fn compact_log(&self, min_superseded: i64) -> Result<usize, GroupError> {
        if !self.log_ready.load(Ordering::Acquire) {
            // Nothing was written to it by this process yet (it may not even exist).
            return Ok(0);
        }
        let Some(log) = self.ensure_log().await? else {
            return Ok(0);
        };
        let now_ms = wall_ms(self.settings.clock.as_ref());
        let mut by_partition: BTreeMap<i32, Vec<(String, Vec<OffsetChange>)>> = BTreeMap::new();
        for (group, offsets) in self.offsets_in_force() {
            by_partition
                .entry(partition_for(&group, OFFSETS_TOPIC_PARTITIONS))
                .or_default()
                .push((group, offsets));
        }
        let mut compacted = 0;
        for partition in 0..OFFSETS_TOPIC_PARTITIONS {
            let (start, end) = log.span(partition).await.map_err(GroupError::Log)?;
            let groups = by_partition.remove(&partition).unwrap_or_default();
            let in_force: i64 = groups.iter().map(|(_, o)| o.len() as i64).sum();
            let superseded = (end - start) - in_force;
            if superseded < min_superseded.max(in_force).max(1) {
                continue;
            }
            let snapshot = groups
                .iter()
                .map(|(group, offsets)| Ok((group.clone(), log_records(group, offsets)?)))
                .collect::<Result<Vec<_>, GroupError>>()?;
            log.compact(partition, snapshot, now_ms)
                .await
                .map_err(GroupError::Log)?;
            tracing::info!(
                partition,
                superseded,
                in_force,
                "offsets log partition compacted"
            );
            compacted += 1;
        }
        Ok(compacted)
    }

    /// The current moment, as the machines take it.
    fn now(&self) -> Now {
        Now {
            mono: self
                .settings
                .clock
                .now()
                .saturating_duration_since(self.epoch),
            wall_ms: wall_ms(self.settings.clock.as_ref()),
        }
    }

    /// Runs due timers; returns the next deadline and whether offset retention is due.
    fn tick(&self) -> (Option<Instant>, bool) {
        let at = self.settings.clock.now();
        let now = self.now();
        let mut state = self.lock();
        let ids: Vec<String> = state.groups.keys().cloned().collect();
        for id in &ids {
            if let Some(group) = state.groups.get_mut(id) {
                group.tick(now, &self.settings);
            }
            state.settle(id, Parkable::None);
        }
        for group in state.consumers.values_mut() {
            group.tick(now.mono);
        }
        let State {
            groups, consumers, ..
        } = &mut *state;
        consumers.retain(|id, g| {
            !g.members.is_empty()
                || g.empty_since + machine::EMPTY_GROUP_LINGER > now.mono
                || groups.get(id).is_some_and(|o| !o.offsets.is_empty())
        });
        groups.retain(|id, g| !g.is_forgettable(now) || consumers.contains_key(id));
        let mut next: Option<Instant> = state
            .groups
            .values()
            .filter_map(Group::next_deadline)
            .chain(
                state
                    .consumers
                    .values()
                    .filter_map(ConsumerGroup::next_deadline),
            )
            .min()
            .map(|d| self.epoch + d);
        let mut retention_due = false;
        if let Some(retention) = self.settings.offsets_retention {
            let check = state.next_retention_check.unwrap_or(at);
            if check <= at {
                retention_due = true;
                let pause = retention
                    .min(RETENTION_CHECK_INTERVAL)
                    .max(MIN_RETENTION_CHECK_INTERVAL);
                state.next_retention_check = Some(at + pause);
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
                            doomed.push((group_id.clone(), topic.clone(), *partition));
                        }
                        !expired
                    });
                }
                group.offsets.retain(|_, partitions| !partitions.is_empty());
            }
        }
        let mut by_group: BTreeMap<&str, Vec<OffsetChange>> = BTreeMap::new();
        for (group, topic, partition) in &doomed {
            by_group
                .entry(group.as_str())
                .or_default()
                .push(((topic.clone(), *partition), None));
        }
        for (group, tombstones) in by_group {
            if let Err(e) = self.log(group, &tombstones).await {
                tracing::warn!(error = %e, "could not log expired group offsets");
                return;
            }
        }
        if let Err(e) = self.store.delete_offsets(&doomed).await {
            tracing::warn!(error = %e, "could not delete expired group offsets");
        }
    }
}

/// A change of one committed offset of a group: `(topic, partition)` and the new offset,
/// `None` when it is deleted.
type OffsetChange = ((String, i32), Option<StoredOffset>);

/// `group`'s changes as records of the offsets log (`None`: a tombstone).
fn log_records(group: &str, changes: &[OffsetChange]) -> Result<Vec<LogRecord>, GroupError> {
    changes
        .iter()
        .map(|((topic, partition), offset)| {
            let key = offset_commit_key(group, topic, *partition)?;
            let value = offset
                .as_ref()
                .map(|o| {
                    offset_commit_value(
                        o.offset,
                        o.leader_epoch,
                        o.metadata.as_deref(),
                        o.commit_timestamp_ms,
                    )
                })
                .transpose()?;
            Ok((key, value))
        })
        .collect::<Result<_, String>>()
        .map_err(GroupError::Log)
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

impl GroupCoordinator {
    /// Attaches the offsets log every later change of a committed offset is written to
    /// first (see `offsets_topic`); a second call changes nothing.
    pub fn attach_log(&self, log: Weak<dyn OffsetLog>) {
        let _ = self.shared.log.set(log);
    }

    /// Compacts the partitions of the offsets log in which at least `min_superseded` records
    /// are superseded, and more than are in force (see `offsets_topic`); returns how many
    /// partitions were compacted. Offset writes wait meanwhile.
    pub async fn compact_offsets_log(&self, min_superseded: i64) -> Result<usize, GroupError> {
        let _persist = self.shared.persist.lock().await;
        self.shared.compact_log(min_superseded).await
    }

    /// Makes sure the attached offsets log exists (a client asked for it), writing the
    /// offsets stored before to it when it is created now.
    pub async fn ensure_log(&self) -> Result<(), GroupError> {
        if self.shared.log_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _persist = self.shared.persist.lock().await;
        self.shared.ensure_log().await.map(|_| ())
    }

    /// Opens the coordinator: loads the committed offsets under `<root>/groups/` of the shim
    /// store and starts the timer task (on the current tokio runtime).
    pub async fn open(
        store: ShimStore,
        settings: GroupSettings,
    ) -> Result<Arc<GroupCoordinator>, GroupError> {
        let wake = Arc::new(Notify::new());
        let epoch = settings.clock.now();
        let shared = Arc::new(Shared {
            store: OffsetStore::new(store),
            settings,
            state: Mutex::new(State::default()),
            persist: tokio::sync::Mutex::new(()),
            log: OnceLock::new(),
            log_ready: AtomicBool::new(false),
            backfill_pending: AtomicBool::new(false),
            wake: wake.clone(),
            closed: AtomicBool::new(false),
            epoch,
        });
        let loaded = shared.store.load().await?;
        let now = shared.now();
        {
            let mut state = shared.lock();
            for (group, topic, partition, offset) in loaded {
                state
                    .groups
                    .entry(group)
                    .or_insert_with(|| Group::new(now))
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
        let ids: Vec<String> = state.groups.keys().cloned().collect();
        for id in &ids {
            if let Some(group) = state.groups.get_mut(id) {
                group.fail_all_waiters(KafkaCode::CoordinatorNotAvailable);
            }
            state.settle(id, Parkable::None);
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

    /// JoinGroup (v0-9) of a caller without a connection (no client id or host to show).
    pub async fn join_group(&self, req: JoinGroupRequest, version: i16) -> JoinGroupResponse {
        self.join_group_from(req, version, &MemberOrigin::default())
            .await
    }

    /// JoinGroup (v0-9). May wait until the rebalance completes.
    pub async fn join_group_from(
        &self,
        req: JoinGroupRequest,
        version: i16,
        origin: &MemberOrigin,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.to_string();
        let (tx, rx) = oneshot::channel();
        let answer = self.join_locked(req, version, origin, tx);
        self.shared.wake.notify_one();
        match answer {
            Answer::Now(response) => response,
            Answer::Parked => rx.await.unwrap_or_else(|_| {
                join_error(version, KafkaCode::CoordinatorNotAvailable, &member_id)
            }),
        }
    }

    fn join_locked(
        &self,
        req: JoinGroupRequest,
        version: i16,
        origin: &MemberOrigin,
        tx: oneshot::Sender<JoinGroupResponse>,
    ) -> Answer<JoinGroupResponse> {
        let group_id = req.group_id.to_string();
        if group_id.is_empty() {
            return Answer::Now(join_error(
                version,
                KafkaCode::InvalidGroupId,
                &req.member_id,
            ));
        }
        let input = JoinInput {
            member_id: req.member_id.to_string(),
            instance_id: if version >= 5 {
                req.group_instance_id
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .map(str::to_owned)
            } else {
                None
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            version,
            client_id: origin.client_id.clone(),
            client_host: if origin.host.is_empty() {
                String::new()
            } else {
                format!("/{}", origin.host)
            },
        };
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return Answer::Now(join_error(
                version,
                KafkaCode::CoordinatorNotAvailable,
                &input.member_id,
            ));
        }
        if let Some(consumer) = state.consumers.get(&group_id) {
            if !consumer.members.is_empty() {
                return Answer::Now(join_error(
                    version,
                    KafkaCode::InconsistentGroupProtocol,
                    &input.member_id,
                ));
            }
            // An empty consumer group becomes a classic one; its offsets stay.
            state.consumers.remove(&group_id);
        }
        let created = !state.groups.contains_key(&group_id);
        if created && !input.member_id.is_empty() {
            return Answer::Now(join_error(
                version,
                KafkaCode::UnknownMemberId,
                &input.member_id,
            ));
        }
        let group = state
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(now));
        let answer = group.join(input, new_member_id, &self.shared.settings, now);
        let vacant = group.is_vacant();
        state.settle(&group_id, Parkable::Join(tx));
        if created && vacant {
            state.groups.remove(&group_id);
        }
        answer
    }

    /// SyncGroup (v0-5). A follower may wait for the leader's assignment.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let (tx, rx) = oneshot::channel();
        let answer = self.sync_locked(req, version, tx);
        self.shared.wake.notify_one();
        match answer {
            Answer::Now(response) => response,
            Answer::Parked => rx
                .await
                .unwrap_or_else(|_| sync_error(KafkaCode::CoordinatorNotAvailable)),
        }
    }

    fn sync_locked(
        &self,
        req: SyncGroupRequest,
        version: i16,
        tx: oneshot::Sender<SyncGroupResponse>,
    ) -> Answer<SyncGroupResponse> {
        if req.group_id.is_empty() {
            return Answer::Now(sync_error(KafkaCode::InvalidGroupId));
        }
        let group_id = req.group_id.to_string();
        let input = SyncInput {
            member_id: req.member_id.to_string(),
            instance_id: if version >= 3 {
                req.group_instance_id.as_deref().map(str::to_owned)
            } else {
                None
            },
            generation: req.generation_id,
            protocol_type: req.protocol_type.as_deref().map(str::to_owned),
            protocol_name: req.protocol_name.as_deref().map(str::to_owned),
            assignments: req
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
            version,
        };
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return Answer::Now(sync_error(KafkaCode::CoordinatorNotAvailable));
        }
        let Some(group) = state.groups.get_mut(&group_id) else {
            return Answer::Now(sync_error(KafkaCode::UnknownMemberId));
        };
        let answer = group.sync(input, now);
        state.settle(&group_id, Parkable::Sync(tx));
        answer
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

    fn heartbeat_locked(&self, req: &HeartbeatRequest, version: i16) -> Result<(), KafkaCode> {
        if req.group_id.is_empty() {
            return Err(KafkaCode::InvalidGroupId);
        }
        let instance_id = if version >= 3 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let now = self.shared.now();
        let mut state = self.shared.lock();
        let group = state
            .groups
            .get_mut(req.group_id.as_str())
            .ok_or(KafkaCode::UnknownMemberId)?;
        group.heartbeat(&req.member_id, instance_id, req.generation_id, now)
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
        if group_id.is_empty() {
            return (KafkaCode::InvalidGroupId.code(), vec![0; leaving.len()]);
        }
        let now = self.shared.now();
        let mut state = self.shared.lock();
        let Some(group) = state.groups.get_mut(group_id) else {
            return (0, vec![KafkaCode::UnknownMemberId.code(); leaving.len()]);
        };
        let codes = group.leave(leaving, &self.shared.settings, now);
        state.settle(group_id, Parkable::None);
        (0, codes)
    }
}

fn new_member_id(instance_id: Option<&str>) -> String {
    match instance_id {
        Some(instance) => format!("{instance}-{}", uuid::Uuid::new_v4()),
        None => format!("member-{}", uuid::Uuid::new_v4()),
    }
}

/// The reaper: runs the groups' timers until the coordinator goes away.
async fn reaper(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let (next, clock) = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let (next, retention_due) = shared.tick();
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

fn offset_fields(offset: Option<StoredOffset>) -> (i64, i32, String) {
    match offset {
        Some(o) => (o.offset, o.leader_epoch, o.metadata.unwrap_or_default()),
        None => (-1, -1, String::new()),
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
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

#[cfg(test)]
// The tests move tokio's paused time, which the system clock follows.
#[allow(clippy::disallowed_methods)]
mod tests;
