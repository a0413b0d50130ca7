//! The transaction coordinator (Kafka's exactly-once: KIP-98, KIP-360, KIP-447).
//!
//! This node coordinates every transactional id. What Kafka keeps in `__transaction_state`
//! is kept here in the engine's metadata store, one record per transactional id under
//! `<prefix>/kafka/transactions/<id>` (percent-encoded like group names): the producer id
//! and epoch, the transaction timeout, the state, the partitions and groups in the open
//! transaction, the offsets it committed (TxnOffsetCommit) and when it started. Every state
//! change is written before it is answered, so a restart finds each transaction where the
//! last acknowledged request left it.
//!
//! Ending a transaction follows Kafka's two steps: the decision (PrepareCommit or
//! PrepareAbort) is made durable first; then the coordinator has every partition of the
//! transaction write a COMMIT or ABORT marker into its log itself (what Kafka's
//! WriteTxnMarkers asks of partition leaders; no inter-broker API is served), makes the
//! transaction's offsets visible to the group (commit) or drops them (abort), and records
//! CompleteCommit or CompleteAbort. A crash between the two steps leaves a prepared
//! transaction, which is completed when the broker opens, before it serves; an open
//! (Ongoing) transaction is aborted once its timeout passes, whether or not the broker
//! restarted meanwhile. Aborting a transaction the client did not end (timeout, or a new
//! InitProducerId of the same transactional id) bumps the producer epoch, fencing the
//! producer that began it, as Kafka does.
//!
//! Each transactional id is served by one async lock held across the whole of a request
//! (store writes, marker writes), so its requests are applied one at a time; different
//! transactional ids do not wait for each other.

mod api;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wal::clock::ClockRef;

use crate::batch::Marker;
use crate::broker::Broker;
use crate::error::{KafkaCode, ShimError};
use crate::groups::{TxnOffset, decode_name, encode_name};
use crate::store::{ShimStore, to_json};

/// The coordinator epoch written into markers: one coordinator that never moves.
pub const COORDINATOR_EPOCH: i32 = 0;

/// Settings of the transaction coordinator (Kafka's `transaction.*` broker settings).
#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// The longest transaction timeout a producer may ask for (`transaction.max.timeout.ms`,
    /// 15 minutes); more is INVALID_TRANSACTION_TIMEOUT.
    pub max_timeout: Duration,
    /// How often open transactions are checked against their timeout
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
    pub abort_check_interval: Duration,
    /// Wall-clock time (transaction start times) and the check timer.
    pub clock: ClockRef,
}

impl Default for TxnSettings {
    fn default() -> Self {
        TxnSettings {
            max_timeout: Duration::from_secs(15 * 60),
            abort_check_interval: Duration::from_secs(10),
            clock: wal::clock::SystemClock::shared(),
        }
    }
}

/// The state of a transactional id, with Kafka's names (DescribeTransactions,
/// ListTransactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction open.
    Empty,
    /// A transaction is open.
    Ongoing,
    /// Committing: markers are being written.
    PrepareCommit,
    /// Aborting: markers are being written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Every state Kafka names, for ListTransactions' state filter (`Dead` and
    /// `PrepareEpochFence` exist in Kafka but no transactional id is listed in them).
    const KAFKA_NAMES: &[&str] = &[
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];

    fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its current epoch (-1 before the first InitProducerId completed).
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1: none), so that a retried InitProducerId of the
    /// producer that caused the bump gets the same answer (KIP-360).
    pub last_producer_epoch: i16,
    /// The transaction timeout the producer asked for.
    pub timeout_ms: i32,
    /// The state.
    pub state: TxnState,
    /// The partitions in the open (or ending) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// The groups whose offsets the transaction commits, with the offsets committed so far.
    pub groups: BTreeMap<String, Vec<TxnOffset>>,
    /// When the open transaction started (wall clock ms; -1: none open).
    pub start_ms: i64,
    /// When the record last changed (wall clock ms).
    pub update_ms: i64,
}

impl TxnRecord {
    fn new(transactional_id: &str, producer_id: i64, now_ms: i64) -> TxnRecord {
        TxnRecord {
            transactional_id: transactional_id.to_owned(),
            producer_id,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms: 0,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeMap::new(),
            start_ms: -1,
            update_ms: now_ms,
        }
    }

    /// Whether `producer_id`/`epoch` is this record's producer (the checks every
    /// transactional request of a producer starts with, in Kafka's order and codes).
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), KafkaCode> {
        if producer_id != self.producer_id {
            return Err(KafkaCode::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(KafkaCode::ProducerFenced);
        }
        Ok(())
    }
}

/// A transactional id's slot: its record (`None` until the first InitProducerId stores one).
type Slot = Arc<tokio::sync::Mutex<Option<TxnRecord>>>;

/// The transaction coordinator of this node.
pub struct TxnCoordinator {
    store: ShimStore,
    /// `<prefix>/kafka/transactions/`.
    root: String,
    settings: TxnSettings,
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCoordinator")
            .field("root", &self.root)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A marker that could not be written, so a transaction stays prepared.
#[derive(Debug)]
struct MarkerFailure {
    topic: String,
    partition: i32,
    code: KafkaCode,
}

impl TxnCoordinator {
    /// Loads every transactional id stored under `<root>/transactions/`.
    pub async fn open(
        store: ShimStore,
        settings: TxnSettings,
    ) -> Result<TxnCoordinator, ShimError> {
        let root = format!("{}/transactions/", store.root());
        let mut slots = HashMap::new();
        for item in store.list(&root).await? {
            let corrupt = |detail: String| ShimError::Corrupt {
                what: item.key.clone(),
                detail,
            };
            let name = item
                .key
                .strip_prefix(&root)
                .and_then(decode_name)
                .ok_or_else(|| corrupt("the transactional id in the key".into()))?;
            let record: TxnRecord = item.json("transaction state")?;
            if record.transactional_id != name {
                return Err(corrupt(format!(
                    "holds transactional id `{}`",
                    record.transactional_id
                )));
            }
            slots.insert(name, Arc::new(tokio::sync::Mutex::new(Some(record))));
        }
        Ok(TxnCoordinator {
            store,
            root,
            settings,
            slots: Mutex::new(slots),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &TxnSettings {
        &self.settings
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.settings.clock.now_millis()).unwrap_or(i64::MAX)
    }

    fn slot(&self, transactional_id: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(transactional_id.to_owned())
            .or_default()
            .clone()
    }

    fn existing(&self, transactional_id: &str) -> Option<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(transactional_id)
            .cloned()
    }

    fn all_slots(&self) -> Vec<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stores `record` (durable before it returns).
    async fn persist(&self, record: &TxnRecord) -> Result<(), KafkaCode> {
        let key = format!("{}{}", self.root, encode_name(&record.transactional_id));
        // A plain struct of numbers, strings and maps of them always serializes.
        let value = to_json(record, &key).unwrap_or_default();
        self.store.put(&key, value).await.map_err(|e| {
            tracing::warn!(transactional_id = %record.transactional_id, error = %e, "storing transaction state failed");
            KafkaCode::CoordinatorNotAvailable
        })?;
        Ok(())
    }

    /// Stores `next` in place of `slot`'s record, or leaves the record as it was.
    async fn transition(
        &self,
        slot: &mut Option<TxnRecord>,
        mut next: TxnRecord,
    ) -> Result<(), KafkaCode> {
        next.update_ms = self.now_ms();
        self.persist(&next).await?;
        *slot = Some(next);
        Ok(())
    }

    /// InitProducerId with a transactional id: the producer id and a new epoch, fencing
    /// every earlier producer of the id. An open transaction is aborted first (with the
    /// epoch bumped) and CONCURRENT_TRANSACTIONS answered, so that the client retries, as
    /// Kafka does.
    pub async fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), KafkaCode> {
        let max_ms = i64::try_from(self.settings.max_timeout.as_millis()).unwrap_or(i64::MAX);
        if timeout_ms <= 0 || i64::from(timeout_ms) > max_ms {
            return Err(KafkaCode::InvalidTransactionTimeout);
        }
        let slot = self.slot(transactional_id);
        let mut guard = slot.lock().await;
        let mut record = match guard.as_ref() {
            Some(r) => r.clone(),
            None => {
                let pid = broker.next_producer_id().await.map_err(|e| {
                    tracing::warn!(error = %e, "allocating a producer id failed");
                    KafkaCode::CoordinatorNotAvailable
                })?;
                TxnRecord::new(transactional_id, pid, self.now_ms())
            }
        };
        match record.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                // Still ending: complete it now if its markers failed before.
                self.complete(broker, &mut guard).await;
                return Err(KafkaCode::ConcurrentTransactions);
            }
            TxnState::Ongoing => {
                // A new instance of the producer: abort what the old one left open.
                self.fence_and_abort(broker, &mut guard).await?;
                return Err(KafkaCode::ConcurrentTransactions);
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
        }
        if let Some((pid, epoch)) = expected {
            // KIP-360: only the current producer may bump its own epoch; a retry of the call
            // that bumped it gets the same answer.
            if pid != record.producer_id {
                return Err(KafkaCode::ProducerFenced);
            }
            if epoch == record.last_producer_epoch && record.producer_epoch >= 0 {
                return Ok((record.producer_id, record.producer_epoch));
            }
            if epoch != record.producer_epoch {
                return Err(KafkaCode::ProducerFenced);
            }
        }
        if record.producer_epoch >= i16::MAX - 1 {
            // The epoch is exhausted: a new producer id starts again at 0.
            record.producer_id = broker.next_producer_id().await.map_err(|e| {
                tracing::warn!(error = %e, "allocating a producer id failed");
                KafkaCode::CoordinatorNotAvailable
            })?;
            record.last_producer_epoch = -1;
            record.producer_epoch = 0;
        } else {
            record.last_producer_epoch = record.producer_epoch;
            record.producer_epoch += 1;
        }
        record.timeout_ms = timeout_ms;
        record.state = TxnState::Empty;
        record.partitions.clear();
        record.groups.clear();
        record.start_ms = -1;
        self.transition(&mut guard, record.clone()).await?;
        Ok((record.producer_id, record.producer_epoch))
    }

    /// Checks a producer's request against its transactional id's record and state before
    /// something is added to its transaction.
    fn check_addable(
        record: Option<&TxnRecord>,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&TxnRecord, KafkaCode> {
        let record = record.ok_or(KafkaCode::InvalidProducerIdMapping)?;
        record.check_producer(producer_id, epoch)?;
        if record.state.is_prepared() {
            return Err(KafkaCode::ConcurrentTransactions);
        }
        Ok(record)
    }

    /// Opens the transaction (if it is not open) and adds `partitions` to it.
    async fn add(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        group: Option<&str>,
    ) -> Result<(), KafkaCode> {
        let slot = self
            .existing(transactional_id)
            .ok_or(KafkaCode::InvalidProducerIdMapping)?;
        let mut guard = slot.lock().await;
        let record = Self::check_addable(guard.as_ref(), producer_id, epoch)?;
        let new_partitions = partitions.iter().any(|p| !record.partitions.contains(p));
        let new_group = group.is_some_and(|g| !record.groups.contains_key(g));
        if record.state == TxnState::Ongoing && !new_partitions && !new_group {
            return Ok(());
        }
        let mut next = record.clone();
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.start_ms = self.now_ms();
            next.partitions.clear();
            next.groups.clear();
        }
        next.partitions.extend(partitions.iter().cloned());
        if let Some(g) = group {
            next.groups.entry(g.to_owned()).or_default();
        }
        self.transition(&mut guard, next).await
    }

    /// AddPartitionsToTxn (the client's form).
    pub async fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaCode> {
        self.add(transactional_id, producer_id, epoch, partitions, None)
            .await
    }

    /// AddOffsetsToTxn: the group's offsets become part of the transaction.
    pub async fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), KafkaCode> {
        self.add(transactional_id, producer_id, epoch, &[], Some(group))
            .await
    }

    /// AddPartitionsToTxn v4+ with `verify_only`: whether each partition is in the
    /// producer's open transaction (INVALID_TXN_STATE when not), changing nothing.
    pub async fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<KafkaCode>, KafkaCode> {
        let slot = self
            .existing(transactional_id)
            .ok_or(KafkaCode::InvalidProducerIdMapping)?;
        let guard = slot.lock().await;
        let record = Self::check_addable(guard.as_ref(), producer_id, epoch)?;
        Ok(partitions
            .iter()
            .map(|p| {
                if record.state == TxnState::Ongoing && record.partitions.contains(p) {
                    KafkaCode::None
                } else {
                    KafkaCode::InvalidTxnState
                }
            })
            .collect())
    }

    /// Whether a transactional batch of `producer_id`/`epoch` may be written to the
    /// partition: its transaction is open and holds the partition (Kafka's partition
    /// verification, KIP-890). An older epoch is INVALID_PRODUCER_EPOCH, as a partition
    /// leader answers it.
    pub async fn check_produce(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), KafkaCode> {
        let slot = self
            .existing(transactional_id)
            .ok_or(KafkaCode::InvalidTxnState)?;
        let guard = slot.lock().await;
        let record = guard.as_ref().ok_or(KafkaCode::InvalidTxnState)?;
        if producer_id != record.producer_id {
            return Err(KafkaCode::InvalidTxnState);
        }
        if epoch < record.producer_epoch {
            return Err(KafkaCode::InvalidProducerEpoch);
        }
        if epoch != record.producer_epoch
            || record.state != TxnState::Ongoing
            || !record.partitions.contains(&(topic.to_owned(), partition))
        {
            return Err(KafkaCode::InvalidTxnState);
        }
        Ok(())
    }

    /// TxnOffsetCommit: checks that the group is in the producer's open transaction and
    /// stores the offsets with it (durable), pending until the transaction ends.
    pub async fn txn_offset_commit(
        &self,
        broker: &Broker,
        transactional_id: &str,
        group: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<TxnOffset>,
    ) -> Result<(), KafkaCode> {
        let slot = self
            .existing(transactional_id)
            .ok_or(KafkaCode::InvalidProducerIdMapping)?;
        let mut guard = slot.lock().await;
        let record = guard.as_ref().ok_or(KafkaCode::InvalidProducerIdMapping)?;
        if producer_id != record.producer_id {
            return Err(KafkaCode::InvalidProducerIdMapping);
        }
        if epoch != record.producer_epoch {
            // What the group coordinator answers a producer of another epoch.
            return Err(KafkaCode::InvalidProducerEpoch);
        }
        if record.state != TxnState::Ongoing || !record.groups.contains_key(group) {
            return Err(KafkaCode::InvalidTxnState);
        }
        let mut next = record.clone();
        let staged = next.groups.entry(group.to_owned()).or_default();
        for o in &offsets {
            staged.retain(|s| !(s.topic == o.topic && s.partition == o.partition));
            staged.push(o.clone());
        }
        self.transition(&mut guard, next).await?;
        broker
            .groups()
            .stage_txn_offsets(group, producer_id, &offsets);
        Ok(())
    }

    /// EndTxn: commits or aborts the open transaction. The decision is durable before the
    /// markers are written; the answer comes once they are (or, if a partition could not
    /// take its marker, once the decision is: the transaction is completed later, as
    /// Kafka answers once the decision is in its log).
    pub async fn end_txn(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), KafkaCode> {
        let slot = self
            .existing(transactional_id)
            .ok_or(KafkaCode::InvalidProducerIdMapping)?;
        let mut guard = slot.lock().await;
        let record = guard.as_ref().ok_or(KafkaCode::InvalidProducerIdMapping)?;
        record.check_producer(producer_id, epoch)?;
        match (record.state, commit) {
            (TxnState::Ongoing, _) => {}
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(KafkaCode::ConcurrentTransactions);
            }
            _ => return Err(KafkaCode::InvalidTxnState),
        }
        let mut next = record.clone();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        self.transition(&mut guard, next).await?;
        self.complete(broker, &mut guard).await;
        Ok(())
    }

    /// Aborts the open transaction of `slot` after bumping the producer epoch, so that its
    /// producer is fenced (a new InitProducerId, or the transaction timed out).
    async fn fence_and_abort(
        &self,
        broker: &Broker,
        slot: &mut Option<TxnRecord>,
    ) -> Result<(), KafkaCode> {
        let Some(record) = slot.as_ref() else {
            return Ok(());
        };
        let mut next = record.clone();
        if next.producer_epoch >= i16::MAX - 1 {
            // No epoch left to fence with: the next InitProducerId moves to a new producer
            // id, which fences just as well; abort with the current one.
        } else {
            next.last_producer_epoch = -1;
            next.producer_epoch += 1;
        }
        next.state = TxnState::PrepareAbort;
        self.transition(slot, next).await?;
        self.complete(broker, slot).await;
        Ok(())
    }

    /// Completes a prepared transaction: writes its markers, ends its group offsets and
    /// records the outcome. When a partition cannot take its marker the transaction stays
    /// prepared, and the periodic check tries again.
    async fn complete(&self, broker: &Broker, slot: &mut Option<TxnRecord>) {
        let Some(record) = slot.as_ref() else { return };
        let commit = match record.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return,
        };
        let marker = if commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let now = self.now_ms();
        let writes = record.partitions.iter().map(|(topic, partition)| {
            let (pid, epoch) = (record.producer_id, record.producer_epoch);
            async move {
                broker
                    .write_marker(topic, *partition, pid, epoch, marker, now)
                    .await
                    .map_err(|code| MarkerFailure {
                        topic: topic.clone(),
                        partition: *partition,
                        code,
                    })
            }
        });
        let failures: Vec<MarkerFailure> = futures::future::join_all(writes)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if !failures.is_empty() {
            for f in &failures {
                tracing::warn!(
                    transactional_id = %record.transactional_id,
                    topic = %f.topic,
                    partition = f.partition,
                    error = ?f.code,
                    "writing a transaction marker failed; the transaction stays prepared and is retried"
                );
            }
            return;
        }
        for group in record.groups.keys() {
            // Staged again first: after a restart only the stored record holds them.
            broker
                .groups()
                .stage_txn_offsets(group, record.producer_id, &record.groups[group]);
            if let Err(e) = broker
                .groups()
                .end_txn_offsets(group, record.producer_id, commit)
                .await
            {
                tracing::warn!(transactional_id = %record.transactional_id, group, error = %e, "ending a transaction's offsets failed; retried later");
                return;
            }
        }
        let mut next = record.clone();
        next.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.groups.clear();
        next.start_ms = -1;
        if let Err(code) = self.transition(slot, next).await {
            tracing::warn!(error = ?code, "recording a completed transaction failed; it is completed again later");
        }
    }

    /// Completes every prepared transaction and aborts every open one past its timeout.
    /// Run at open (before serving) and then periodically.
    pub async fn check_transactions(&self, broker: &Broker) {
        let now = self.now_ms();
        for slot in self.all_slots() {
            let mut guard = slot.lock().await;
            let Some(record) = guard.as_ref() else {
                continue;
            };
            if record.state.is_prepared() {
                self.complete(broker, &mut guard).await;
            } else if record.state == TxnState::Ongoing
                && record.start_ms.saturating_add(i64::from(record.timeout_ms)) < now
            {
                tracing::info!(
                    transactional_id = %record.transactional_id,
                    producer_id = record.producer_id,
                    epoch = record.producer_epoch,
                    "aborting a transaction past its timeout"
                );
                if let Err(code) = self.fence_and_abort(broker, &mut guard).await {
                    tracing::warn!(error = ?code, "aborting a timed-out transaction failed; retried later");
                }
            }
        }
    }

    /// A copy of a transactional id's record.
    pub async fn describe(&self, transactional_id: &str) -> Option<TxnRecord> {
        let slot = self.existing(transactional_id)?;
        slot.lock().await.clone()
    }

    /// Every record, ordered by transactional id.
    pub async fn records(&self) -> Vec<TxnRecord> {
        let mut out = Vec::new();
        for slot in self.all_slots() {
            if let Some(r) = slot.lock().await.clone() {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}
