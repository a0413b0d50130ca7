//! The replicated appender: one segment's appends written to every replica of its quorum
//! and acknowledged at the ack quorum, in order (spec §6.1 steps 3-8, §7.2, §7.3).
//!
//! The writer hands an entry over with the same callback form as an in-process processor
//! ([`Replicated::try_add_entry_with`]); the entry is kept here until every live replica has
//! it durable, and one task per replica sends what that replica has not been sent yet as
//! `AddEntries` batches (up to `maxBatchEntries` / `maxBatchBytes`, several requests in
//! flight, at most [`ReplicationSettings::node_window`] ids beyond what the replica made
//! durable, inside the LogStore's out-of-order window). Every `Synced` frame goes to the pure
//! core ([`AppendQuorum`]), which says what became acknowledged or failed; callbacks run in
//! id order, outside every lock (whoever settles entries while nobody is delivering becomes
//! the deliverer, and the others leave their results to it).
//!
//! Failures, per replica:
//!
//! * A retriable failure (the node unreachable, a timeout, a full window) cancels that
//!   replica's requests and resends from its durable tail after a backoff, up to
//!   [`ReplicationSettings::max_retries`] times in a row without progress.
//! * Anything else, or the retries spent, fails the replica for this segment: the core
//!   cascades failures to entries that can no longer reach `Aq` (with that replica's error),
//!   and the segment asks to roll ([`Replicated::wants_roll`]). Entries still reach `Aq` on
//!   the other replicas in the meantime.
//! * A live replica trailing the acknowledged entries by more than
//!   [`ReplicationSettings::max_lag`] is failed too, so a slow replica cannot make the
//!   appender keep unbounded data.
//!
//! Every wait is bounded: the replica clients bound each reply (see [`super::grpc`]), and
//! the backoff sleeps on the client's clock. A separate task pushes the last-add-confirmed
//! id to the live replicas (`UpdateLastAddConfirmed`, only the latest value, as Go's
//! coalescing syncer does), which bounds what they serve to readers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, watch};

use super::store::{AppendEvent, LogStoreClient, StoreResult};
use crate::clock::ClockRef;
use crate::logstore::{LogStoreError, OnDurable, TryAdd, code};
use crate::quorum::{AppendQuorum, QuorumSpec, Settled};
use crate::service::error::code as service_code;

/// How a replicated segment sends its appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Entries per AddEntries request (`segmentAppend.maxBatchEntries`, 1000).
    pub max_batch_entries: usize,
    /// Payload bytes per AddEntries request (`segmentAppend.maxBatchBytes`, 2 MB); a
    /// request holds at least one entry.
    pub max_batch_bytes: usize,
    /// Retriable failures of one replica in a row, without progress, before it is failed
    /// for the segment (`segmentAppend.maxRetries`, 3).
    pub max_retries: u32,
    /// The first pause before a resend (doubling up to [`Self::max_retry_backoff`]).
    pub retry_backoff: Duration,
    /// The longest pause before a resend.
    pub max_retry_backoff: Duration,
    /// AddEntries requests in flight per replica.
    pub requests_in_flight: usize,
    /// Ids a replica may be sent beyond its durable tail (keep it within the LogStore's
    /// `segmentSyncPolicy.maxEntries` window).
    pub node_window: usize,
    /// Entries a live replica may trail the acknowledged ones by before it is failed.
    pub max_lag: usize,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            max_batch_entries: 1_000,
            max_batch_bytes: 2_000_000,
            max_retries: 3,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(1),
            requests_in_flight: 8,
            node_window: 10_000,
            max_lag: 20_000,
        }
    }
}

/// An entry waiting for its replicas.
struct Slot {
    data: Bytes,
    /// The writer's callback, until the entry settles.
    answer: Option<OnDurable>,
}

struct State {
    core: AppendQuorum,
    /// Id of `entries[0]`.
    base: i64,
    /// Entries not yet durable on every live replica (or not yet settled).
    entries: VecDeque<Slot>,
    /// Per replica, the next id to send.
    next_send: Vec<i64>,
    /// Per replica, retriable failures in a row without progress.
    retries: Vec<u32>,
    /// The failure that failed the last replica (given to entries that fail with it).
    last_error: Option<LogStoreError>,
    roll: bool,
    closed: bool,
    /// Results to hand to callbacks, in id order.
    ready: Vec<(OnDurable, StoreResult<i64>)>,
    delivering: bool,
}

struct Inner {
    log_id: i64,
    segment_id: i64,
    label: String,
    nodes: Vec<Arc<dyn LogStoreClient>>,
    settings: ReplicationSettings,
    clock: ClockRef,
    state: Mutex<State>,
    /// Wakes a replica's task: entries to send, or its window opened.
    wake: Vec<Notify>,
    /// Wakes appends waiting for room.
    space: Notify,
    /// The last-add-confirmed id, for the pusher task.
    lac: watch::Sender<i64>,
    /// Set once: every task stops.
    stop: watch::Sender<bool>,
}

/// Stops the tasks and answers what is left when the last handle goes.
struct Guard {
    inner: Arc<Inner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

/// The appender of one replicated segment (cheap to clone; the last clone dropped stops it).
#[derive(Clone)]
pub(crate) struct Replicated {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl fmt::Debug for Replicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Replicated")
            .field("segment", &self.inner.label)
            .field("lac", &st.core.lac())
            .field("issued", &st.core.last_issued())
            .field("tails", &st.core.tails())
            .finish()
    }
}

impl Replicated {
    /// Starts the appender of segment `segment_id` of `log_id` on `nodes` (one task per
    /// replica and one pushing the LAC).
    pub(crate) fn start(
        log_id: i64,
        segment_id: i64,
        spec: QuorumSpec,
        nodes: Vec<Arc<dyn LogStoreClient>>,
        settings: ReplicationSettings,
        clock: ClockRef,
    ) -> Replicated {
        let n = nodes.len();
        let (lac, _) = watch::channel(-1);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            log_id,
            segment_id,
            label: format!("log {log_id} segment {segment_id}"),
            nodes,
            settings,
            clock,
            state: Mutex::new(State {
                core: AppendQuorum::new(spec),
                base: 0,
                entries: VecDeque::new(),
                next_send: vec![0; n],
                retries: vec![0; n],
                last_error: None,
                roll: false,
                closed: false,
                ready: Vec::new(),
                delivering: false,
            }),
            wake: (0..n).map(|_| Notify::new()).collect(),
            space: Notify::new(),
            lac,
            stop,
        });
        for r in 0..n {
            tokio::spawn(run_replica(inner.clone(), r));
        }
        tokio::spawn(push_lac(inner.clone()));
        Replicated {
            _guard: Arc::new(Guard {
                inner: inner.clone(),
            }),
            inner,
        }
    }

    /// Takes entry `entry_id` (the next id) without waiting: [`TryAdd::WouldWait`] when the
    /// appender holds as many entries as it may. `on_durable` is made only when the entry is
    /// taken and is told once, in id order: the id once `Aq` replicas have the entry and
    /// every earlier one, or the error that made it fail.
    pub(crate) fn try_add_entry_with(
        &self,
        entry_id: i64,
        data: &Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> StoreResult<TryAdd> {
        Ok(match self.inner.try_admit(entry_id, data, on_durable)? {
            None => TryAdd::Taken,
            Some(_) => TryAdd::WouldWait,
        })
    }

    /// [`try_add_entry_with`](Self::try_add_entry_with), waiting for room.
    pub(crate) async fn add_entry_with(
        &self,
        entry_id: i64,
        data: Bytes,
        on_durable: impl FnOnce() -> OnDurable,
    ) -> StoreResult<()> {
        let mut make = on_durable;
        loop {
            let space = self.inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.inner.try_admit(entry_id, &data, make)? {
                None => return Ok(()),
                Some(unmade) => make = unmade,
            }
            space.await;
        }
    }

    /// Whether a replica failed for good: the segment should roll to a fresh quorum.
    pub(crate) fn wants_roll(&self) -> bool {
        self.inner.lock().roll
    }

    /// Waits until every live replica has made every entry up to `last` durable (a replica
    /// failed for the segment is not waited for), or `bound` has passed; whether they have. The writer calls it before it
    /// completes a segment it closes: entries are acknowledged once the ack quorum has them,
    /// and without this the slowest replica would be completed a few entries short and
    /// serve less than the others for the segment's life (readers fail over; nothing is
    /// lost, but one copy fewer holds the tail).
    pub(crate) async fn drain(&self, last: i64, bound: Duration) -> bool {
        let deadline = self.inner.clock.sleep(bound);
        tokio::pin!(deadline);
        loop {
            // Every rise of the live replicas' floor drops entries, which notifies `space`.
            let progress = self.inner.space.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let st = self.inner.lock();
                if st.closed {
                    return false;
                }
                // A failed replica will not catch up: only the live ones are waited for.
                if (0..self.inner.nodes.len())
                    .filter(|r| !st.core.is_failed(*r))
                    .all(|r| st.core.tail(r) >= last)
                {
                    return true;
                }
            }
            tokio::select! {
                biased;
                () = &mut progress => {}
                () = &mut deadline => return false,
            }
        }
    }

    /// Stops sending (after the writer saw every append answered, before it completes the
    /// segment) and answers anything left with 2217.
    pub(crate) fn close(&self) {
        self.inner.shut_down();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries kept at most (settled ones a slow replica still needs included).
    fn capacity(&self) -> usize {
        self.settings.max_lag.max(1)
    }

    fn closed_error(&self) -> LogStoreError {
        LogStoreError::WriterClosed {
            segment: self.label.clone(),
        }
    }

    fn try_admit<F: FnOnce() -> OnDurable>(
        &self,
        entry_id: i64,
        data: &Bytes,
        make: F,
    ) -> StoreResult<Option<F>> {
        let mut st = self.lock();
        if st.closed {
            return Err(self.closed_error());
        }
        let expected = st.core.last_issued() + 1;
        if entry_id != expected {
            return Err(LogStoreError::InvalidEntryId {
                entry_id,
                reason: format!("{}: the next entry id is {expected}", self.label),
            });
        }
        if st.entries.len() >= self.capacity() {
            return Ok(Some(make));
        }
        st.entries.push_back(Slot {
            data: data.clone(),
            answer: Some(make()),
        });
        let settled = st
            .core
            .issue(entry_id)
            .expect("the id was checked to be the next one");
        self.apply(&mut st, settled);
        for w in &self.wake {
            w.notify_one();
        }
        self.deliver(st);
        Ok(None)
    }

    /// Queues the answers of what settled, publishes the LAC and drops entries every live
    /// replica has.
    fn apply(&self, st: &mut State, settled: Settled) {
        if let Some(acked) = settled.acked {
            for id in acked.ids() {
                let idx = (id - st.base) as usize;
                if let Some(answer) = st.entries.get_mut(idx).and_then(|s| s.answer.take()) {
                    st.ready.push((answer, Ok(id)));
                }
            }
            self.lac.send_replace(acked.last);
        }
        if let Some(failed) = settled.failed {
            let e = st.last_error.clone().unwrap_or_else(|| self.closed_error());
            for id in failed.ids() {
                let idx = (id - st.base) as usize;
                if let Some(answer) = st.entries.get_mut(idx).and_then(|s| s.answer.take()) {
                    st.ready.push((answer, Err(e.clone())));
                }
            }
        }
        self.trim(st);
    }

    /// Drops entries that are settled and durable on every live replica; fails a live
    /// replica that trails by more than `max_lag`.
    fn trim(&self, st: &mut State) {
        loop {
            let settled = st.core.last_settled();
            let live_floor = (0..self.nodes.len())
                .filter(|r| !st.core.is_failed(*r))
                .map(|r| st.core.tail(r))
                .min()
                .unwrap_or(i64::MAX);
            let keep_from = (settled + 1).min(live_floor.saturating_add(1));
            let mut dropped = false;
            while st.base < keep_from && !st.entries.is_empty() {
                st.entries.pop_front();
                st.base += 1;
                dropped = true;
            }
            if dropped {
                self.space.notify_waiters();
            }
            if st.entries.len() < self.capacity() {
                return;
            }
            // Full: a live replica holds everything back.
            let laggard = (0..self.nodes.len())
                .filter(|r| !st.core.is_failed(*r))
                .min_by_key(|r| st.core.tail(*r));
            let Some(r) = laggard else { return };
            if st.core.tail(r) >= settled {
                // What is kept is unsettled: the writer's own in-flight limit bounds it.
                return;
            }
            let e = LogStoreError::Unavailable {
                node: self.nodes[r].endpoint().to_string(),
                detail: format!(
                    "{}: the replica trails the acknowledged entries by {}",
                    self.label,
                    settled - st.core.tail(r)
                ),
                timed_out: false,
            };
            tracing::warn!(segment = %self.label, node = self.nodes[r].endpoint(), "replica too far behind; failing it for the segment");
            self.fail_replica(st, r, e);
        }
    }

    fn fail_replica(&self, st: &mut State, r: usize, e: LogStoreError) {
        // A node that restarted (its processor reopened in recovery mode), dropped the
        // segment's processor (closed) or is stopping fails this replica, not the writer:
        // should the quorum be lost with it, the entries fail as unavailable (retriable) and
        // the writer rolls, where its completion, and the metadata revision it holds, still
        // find out a newer writer.
        let e = match e.code() {
            code::IN_RECOVERY_MODE | code::WRITER_CLOSED | service_code::SHUTDOWN => {
                LogStoreError::Unavailable {
                    node: self.nodes[r].endpoint().to_string(),
                    detail: format!("{}: {e}", self.label),
                    timed_out: false,
                }
            }
            _ => e,
        };
        st.last_error = Some(e);
        st.roll = true;
        let settled = st.core.fail(r).expect("a replica of this quorum");
        self.wake[r].notify_one();
        self.apply(st, settled);
    }

    /// Runs queued callbacks outside the lock, in order; one deliverer at a time.
    fn deliver<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        if st.delivering || st.ready.is_empty() {
            return;
        }
        st.delivering = true;
        loop {
            let batch = std::mem::take(&mut st.ready);
            if batch.is_empty() {
                st.delivering = false;
                return;
            }
            drop(st);
            for (answer, r) in batch {
                answer(r);
            }
            st = self.lock();
        }
    }

    fn on_synced(&self, r: usize, through: i64) {
        let mut st = self.lock();
        let before = st.core.tail(r);
        let settled = st
            .core
            .synced(r, through)
            .expect("a replica of this quorum");
        if st.core.tail(r) > before {
            st.retries[r] = 0;
            // Its window moved.
            self.wake[r].notify_one();
        }
        self.apply(&mut st, settled);
        self.deliver(st);
    }

    /// The next request for replica `r`, if it has entries to send inside its window.
    fn next_batch(&self, st: &mut State, r: usize) -> Option<Vec<(i64, Bytes)>> {
        let from = st.next_send[r];
        let window_end = st.core.tail(r) + self.settings.node_window.max(1) as i64;
        let to = st
            .core
            .last_issued()
            .min(window_end)
            .min(from + self.settings.max_batch_entries.max(1) as i64 - 1);
        if to < from || from < st.base {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for id in from..=to {
            let slot = &st.entries[(id - st.base) as usize];
            if !batch.is_empty() && bytes + slot.data.len() > self.settings.max_batch_bytes {
                break;
            }
            bytes += slot.data.len();
            batch.push((id, slot.data.clone()));
        }
        st.next_send[r] = from + batch.len() as i64;
        Some(batch)
    }

    /// Handles a failed request of replica `r`: `true` to go on (after a backoff, resending
    /// from its durable tail), `false` when the replica is failed for the segment.
    async fn on_error(&self, r: usize, e: LogStoreError) -> bool {
        let node = self.nodes[r].endpoint().to_string();
        let final_error = !e.is_retriable()
            || e.is_segment_not_writable()
            || matches!(e.code(), code::IN_RECOVERY_MODE | code::WRITER_CLOSED);
        let attempt = {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            if final_error || st.retries[r] >= self.settings.max_retries {
                tracing::warn!(segment = %self.label, node = %node, error = %e, "replica failed for the segment; it will roll");
                self.fail_replica(&mut st, r, e);
                self.deliver(st);
                return false;
            }
            st.retries[r] += 1;
            st.next_send[r] = st.core.tail(r) + 1;
            st.retries[r]
        };
        tracing::debug!(segment = %self.label, node = %node, error = %e, attempt, "append to a replica failed; resending");
        let pause = self
            .settings
            .retry_backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.settings.max_retry_backoff);
        let mut stop = self.stop.subscribe();
        tokio::select! {
            () = self.clock.sleep(pause) => true,
            () = stopped(&mut stop) => false,
        }
    }

    /// Stops the tasks; unsettled entries fail with 2217.
    fn shut_down(&self) {
        let mut st = self.lock();
        if !st.closed {
            st.closed = true;
            let base = st.base;
            let settled = st.core.last_settled();
            let e = self.closed_error();
            let mut left = Vec::new();
            for (i, slot) in st.entries.iter_mut().enumerate() {
                if base + i as i64 > settled
                    && let Some(answer) = slot.answer.take()
                {
                    left.push((answer, Err(e.clone())));
                }
            }
            st.ready.extend(left);
            st.entries.clear();
            self.stop.send_replace(true);
            self.space.notify_waiters();
        }
        self.deliver(st);
    }
}

/// Resolves once the appender is stopped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One replica's sender.
async fn run_replica(inner: Arc<Inner>, r: usize) {
    let mut stop = inner.stop.subscribe();
    let mut requests = FuturesUnordered::new();
    loop {
        while requests.len() < inner.settings.requests_in_flight.max(1) {
            let batch = {
                let mut st = inner.lock();
                if st.closed || st.core.is_failed(r) {
                    return;
                }
                inner.next_batch(&mut st, r)
            };
            let Some(batch) = batch else { break };
            requests.push(send(inner.clone(), r, batch));
        }
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            Some(result) = requests.next(), if !requests.is_empty() => {
                if let Err(e) = result {
                    // The replica's other requests are dropped (cancelled); everything it
                    // has not made durable is sent again.
                    requests = FuturesUnordered::new();
                    if !inner.on_error(r, e).await {
                        return;
                    }
                }
            }
            () = inner.wake[r].notified() => {}
        }
    }
}

/// One AddEntries request: every Synced frame goes to the core as it arrives.
async fn send(inner: Arc<Inner>, r: usize, batch: Vec<(i64, Bytes)>) -> StoreResult<()> {
    let mut stream = inner.nodes[r]
        .add_entries(inner.log_id, inner.segment_id, batch)
        .await?;
    while let Some(event) = stream.next().await {
        if let AppendEvent::Synced(through) = event? {
            inner.on_synced(r, through);
        }
    }
    Ok(())
}

/// Pushes the latest LAC to the live replicas whenever it moves (only the latest value).
async fn push_lac(inner: Arc<Inner>) {
    let mut lac = inner.lac.subscribe();
    let mut stop = inner.stop.subscribe();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            changed = lac.changed() => if changed.is_err() { return },
        }
        let value = *lac.borrow_and_update();
        let live: Vec<Arc<dyn LogStoreClient>> = {
            let st = inner.lock();
            (0..inner.nodes.len())
                .filter(|r| !st.core.is_failed(*r))
                .map(|r| inner.nodes[r].clone())
                .collect()
        };
        let inner = &inner;
        let pushes = live.iter().map(|n| async move {
            if let Err(e) = n
                .update_last_add_confirmed(inner.log_id, inner.segment_id, value)
                .await
            {
                tracing::debug!(segment = %inner.label, node = n.endpoint(), error = %e, "LAC push failed");
            }
        });
        futures::future::join_all(pushes).await;
    }
}
