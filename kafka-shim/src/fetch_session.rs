//! Fetch sessions (KIP-227).
//!
//! A consumer fetches the same partitions over and over. With a session it names them once (a
//! full fetch with epoch 0 opens the session); each later request (epoch 1, 2, ...) lists only
//! the partitions whose fetch position changed and those to forget, and each response lists
//! only the partitions with something new: records, an error, or a moved high watermark, last
//! stable offset or log start offset. Kafka's rules, which this module follows:
//!
//! * epoch `-1` (final): no session; a non-zero session id closes that session. The response
//!   carries session id 0 and every requested partition.
//! * epoch `0` (initial): a full fetch; a non-zero session id closes that session first. The
//!   response opens a new session when the cache has room (else session id 0: the client goes
//!   on without one).
//! * epoch `n > 0`: incremental in session `id`; an unknown id is `FETCH_SESSION_ID_NOT_FOUND`,
//!   an epoch other than the one expected `INVALID_FETCH_SESSION_EPOCH`, and a session opened
//!   with topic names used with topic ids (Fetch v13+) or the reverse
//!   `FETCH_SESSION_TOPIC_ID_ERROR`. The expected epoch moves on as the request is accepted,
//!   so a retried or concurrent request with the same epoch is refused.
//!
//! Partitions that returned records move to the end of their session's order, so that when a
//! response fills up, the next one starts with the partitions that were left out.
//!
//! The cache holds at most `slots` partitions over all sessions
//! (`max.incremental.fetch.session.cache.slots`). A new session that does not fit evicts the
//! least recently used session idle for at least the eviction time
//! (`min.incremental.fetch.session.eviction.ms`), else the smallest session smaller than
//! itself; otherwise it is not opened. The module is pure: time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::KafkaCode;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const DEFAULT_SLOTS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms` default.
pub const DEFAULT_EVICTION_MS: u64 = 120_000;

/// How a request names a topic: by name (Fetch v7 to v12) or by topic id (v13 and later).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    /// A topic name.
    Name(String),
    /// A topic id.
    Id(uuid::Uuid),
}

/// One partition of a session: the topic as the client names it, and the partition index.
pub(crate) type PartitionKey = (TopicKey, i32);

/// What the client asks of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The offset to read from.
    pub fetch_offset: i64,
    /// The most bytes to return for the partition.
    pub max_bytes: i32,
    /// The leader epoch the client knows (`-1`: unknown).
    pub current_leader_epoch: i32,
}

/// What a response said about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The partition's error code.
    pub error: i16,
    /// Whether records were returned.
    pub records: bool,
    /// The high watermark returned.
    pub high_watermark: i64,
    /// The last stable offset returned.
    pub last_stable_offset: i64,
    /// The log start offset returned.
    pub log_start_offset: i64,
}

/// How a request relates to the session cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// No session: every requested partition is answered, with session id 0.
    Sessionless,
    /// A full fetch that opens a session when it is answered.
    Open {
        /// Whether the session names topics by id.
        by_id: bool,
    },
    /// A fetch in an open session: only partitions with news are answered.
    Incremental {
        /// The session.
        id: i32,
    },
}

/// The partitions one request reads, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The request's relation to the cache.
    pub context: Context,
    /// Every partition to read, in the order to read them.
    pub partitions: Vec<(PartitionKey, Wanted)>,
}

/// The fields of a Fetch request this module reads.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `session_id`.
    pub session_id: i32,
    /// `session_epoch`.
    pub epoch: i32,
    /// Whether the request names topics by id (Fetch v13+).
    pub by_id: bool,
    /// The partitions named, in request order.
    pub partitions: Vec<(PartitionKey, Wanted)>,
    /// `forgotten_topics_data`, flattened.
    pub forgotten: Vec<PartitionKey>,
}

struct Entry {
    key: PartitionKey,
    wanted: Wanted,
    /// What the last response that listed the partition said; `None` before any.
    told: Option<Answer>,
}

struct Session {
    by_id: bool,
    /// The epoch the next request must carry.
    next_epoch: i32,
    entries: Vec<Entry>,
    last_used_ms: u64,
}

impl Session {
    fn position(&self, key: &PartitionKey) -> Option<usize> {
        self.entries.iter().position(|e| &e.key == key)
    }
}

#[derive(Default)]
struct Cache {
    sessions: HashMap<i32, Session>,
    /// Partitions held over all sessions.
    used: usize,
}

impl Cache {
    fn remove(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.used -= s.entries.len();
        }
    }

    /// Makes room for `size` partitions, or says there is none.
    fn make_room(&mut self, size: usize, slots: usize, now_ms: u64, eviction_ms: u64) -> bool {
        if size > slots {
            return false;
        }
        while self.used + size > slots {
            let stale = self
                .sessions
                .iter()
                .filter(|(_, s)| now_ms.saturating_sub(s.last_used_ms) >= eviction_ms)
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(id, _)| *id);
            let victim = stale.or_else(|| {
                self.sessions
                    .iter()
                    .filter(|(_, s)| s.entries.len() < size)
                    .min_by_key(|(_, s)| (s.entries.len(), s.last_used_ms))
                    .map(|(id, _)| *id)
            });
            match victim {
                Some(id) => self.remove(id),
                None => return false,
            }
        }
        true
    }

    fn new_id(&self) -> i32 {
        loop {
            let id = (uuid::Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The epoch after `epoch` (it wraps to 1: 0 only ever opens a session).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

/// The broker's fetch-session cache.
pub(crate) struct FetchSessions {
    cache: Mutex<Cache>,
    slots: usize,
    eviction_ms: u64,
}

impl std::fmt::Debug for FetchSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = self.cache.lock().expect("fetch-session cache");
        f.debug_struct("FetchSessions")
            .field("sessions", &cache.sessions.len())
            .field("used", &cache.used)
            .field("slots", &self.slots)
            .finish()
    }
}

impl Default for FetchSessions {
    fn default() -> Self {
        FetchSessions::new(DEFAULT_SLOTS, DEFAULT_EVICTION_MS)
    }
}

impl FetchSessions {
    /// A cache of at most `slots` partitions; sessions idle for `eviction_ms` may be evicted.
    pub(crate) fn new(slots: usize, eviction_ms: u64) -> Self {
        FetchSessions {
            cache: Mutex::new(Cache::default()),
            slots,
            eviction_ms,
        }
    }

    /// The number of open sessions.
    pub(crate) fn len(&self) -> usize {
        self.cache
            .lock()
            .expect("fetch-session cache")
            .sessions
            .len()
    }

    /// Reads a request's session fields: the partitions to read and how to answer, or the
    /// top-level error the whole request gets. `version`: the Fetch version (sessions start at
    /// v7; earlier requests are sessionless whatever they carry).
    pub(crate) fn begin(&self, version: i16, req: Request, now_ms: u64) -> Result<Plan, KafkaCode> {
        if version < 7 {
            return Ok(Plan {
                context: Context::Sessionless,
                partitions: req.partitions,
            });
        }
        let mut cache = self.cache.lock().expect("fetch-session cache");
        match req.epoch {
            -1 | 0 => {
                if req.session_id != 0 {
                    cache.remove(req.session_id);
                }
                let context = if req.epoch == 0 {
                    Context::Open { by_id: req.by_id }
                } else {
                    Context::Sessionless
                };
                Ok(Plan {
                    context,
                    partitions: req.partitions,
                })
            }
            epoch if epoch > 0 => {
                let cache = &mut *cache;
                let session = cache
                    .sessions
                    .get_mut(&req.session_id)
                    .ok_or(KafkaCode::FetchSessionIdNotFound)?;
                if session.next_epoch != epoch {
                    return Err(KafkaCode::InvalidFetchSessionEpoch);
                }
                if session.by_id != req.by_id {
                    return Err(KafkaCode::FetchSessionTopicIdError);
                }
                let before = session.entries.len();
                for key in &req.forgotten {
                    if let Some(i) = session.position(key) {
                        session.entries.remove(i);
                    }
                }
                for (key, wanted) in req.partitions {
                    match session.position(&key) {
                        Some(i) => session.entries[i].wanted = wanted,
                        None => session.entries.push(Entry {
                            key,
                            wanted,
                            told: None,
                        }),
                    }
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used_ms = now_ms;
                let partitions = session
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.wanted))
                    .collect();
                // A session may grow past the slots it was admitted with, as in Kafka: the
                // cap applies when sessions are opened.
                let after = session.entries.len();
                cache.used = cache.used + after - before;
                Ok(Plan {
                    context: Context::Incremental { id: req.session_id },
                    partitions,
                })
            }
            _ => Err(KafkaCode::InvalidFetchSessionEpoch),
        }
    }

    /// Settles a request once its partitions were read. `answers` are in the plan's order.
    /// Returns the session id the response carries and, per partition, whether the response
    /// lists it; or the top-level error when the session went away meanwhile (evicted).
    pub(crate) fn finish(
        &self,
        plan: &Plan,
        answers: &[Answer],
        now_ms: u64,
    ) -> Result<(i32, Vec<bool>), KafkaCode> {
        debug_assert_eq!(plan.partitions.len(), answers.len());
        match plan.context {
            Context::Sessionless => Ok((0, vec![true; answers.len()])),
            Context::Open { by_id } => {
                let mut cache = self.cache.lock().expect("fetch-session cache");
                let mut entries: Vec<Entry> = Vec::with_capacity(plan.partitions.len());
                let mut seen: HashMap<&PartitionKey, usize> = HashMap::new();
                for ((key, wanted), answer) in plan.partitions.iter().zip(answers) {
                    let entry = Entry {
                        key: key.clone(),
                        wanted: *wanted,
                        told: Some(*answer),
                    };
                    match seen.get(key) {
                        Some(&i) => entries[i] = entry,
                        None => {
                            seen.insert(key, entries.len());
                            entries.push(entry);
                        }
                    }
                }
                let id = if cache.make_room(entries.len(), self.slots, now_ms, self.eviction_ms) {
                    let id = cache.new_id();
                    cache.used += entries.len();
                    cache.sessions.insert(
                        id,
                        Session {
                            by_id,
                            next_epoch: 1,
                            entries,
                            last_used_ms: now_ms,
                        },
                    );
                    id
                } else {
                    0
                };
                Ok((id, vec![true; answers.len()]))
            }
            Context::Incremental { id } => {
                let mut cache = self.cache.lock().expect("fetch-session cache");
                let session = cache
                    .sessions
                    .get_mut(&id)
                    .ok_or(KafkaCode::FetchSessionIdNotFound)?;
                let mut listed = Vec::with_capacity(answers.len());
                let mut moved = Vec::new();
                for ((key, _), answer) in plan.partitions.iter().zip(answers) {
                    let Some(i) = session.position(key) else {
                        // Forgotten by a later request meanwhile: nothing to say about it.
                        listed.push(false);
                        continue;
                    };
                    let entry = &mut session.entries[i];
                    let news = answer.error != 0
                        || answer.records
                        || entry.told.is_none_or(|told| {
                            told.high_watermark != answer.high_watermark
                                || told.last_stable_offset != answer.last_stable_offset
                                || told.log_start_offset != answer.log_start_offset
                        });
                    if news {
                        entry.told = Some(*answer);
                    }
                    if answer.records {
                        moved.push(key.clone());
                    }
                    listed.push(news);
                }
                for key in moved {
                    if let Some(i) = session.position(&key) {
                        let entry = session.entries.remove(i);
                        session.entries.push(entry);
                    }
                }
                session.last_used_ms = now_ms;
                Ok((id, listed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, p: i32) -> PartitionKey {
        (TopicKey::Name(topic.to_string()), p)
    }

    fn wanted(offset: i64) -> Wanted {
        Wanted {
            fetch_offset: offset,
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn quiet(hwm: i64) -> Answer {
        Answer {
            error: 0,
            records: false,
            high_watermark: hwm,
            last_stable_offset: hwm,
            log_start_offset: 0,
        }
    }

    fn with_records(hwm: i64) -> Answer {
        Answer {
            records: true,
            ..quiet(hwm)
        }
    }

    fn request(id: i32, epoch: i32, parts: &[(&str, i32, i64)]) -> Request {
        Request {
            session_id: id,
            epoch,
            by_id: false,
            partitions: parts
                .iter()
                .map(|(t, p, o)| (key(t, *p), wanted(*o)))
                .collect(),
            forgotten: Vec::new(),
        }
    }

    /// Opens a session over `parts`, every partition answered quiet at high watermark 10.
    fn open(cache: &FetchSessions, parts: &[(&str, i32, i64)]) -> i32 {
        let plan = cache.begin(12, request(0, 0, parts), 0).unwrap();
        assert_eq!(plan.context, Context::Open { by_id: false });
        let answers = vec![quiet(10); plan.partitions.len()];
        let (id, listed) = cache.finish(&plan, &answers, 0).unwrap();
        assert_ne!(id, 0);
        assert!(listed.iter().all(|l| *l));
        id
    }

    #[test]
    fn old_versions_and_final_epoch_are_sessionless() {
        let cache = FetchSessions::default();
        let plan = cache.begin(6, request(5, 3, &[("t", 0, 0)]), 0).unwrap();
        assert_eq!(plan.context, Context::Sessionless);
        let plan = cache.begin(12, request(0, -1, &[("t", 0, 0)]), 0).unwrap();
        assert_eq!(plan.context, Context::Sessionless);
        assert_eq!(
            cache.finish(&plan, &[quiet(0)], 0).unwrap(),
            (0, vec![true])
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn incremental_fetches_list_only_partitions_with_news() {
        let cache = FetchSessions::default();
        let id = open(&cache, &[("a", 0, 0), ("a", 1, 0), ("b", 0, 0)]);
        // Epoch 1 names nothing: every partition is read, only the one that moved is listed.
        let plan = cache.begin(12, request(id, 1, &[]), 1).unwrap();
        assert_eq!(plan.context, Context::Incremental { id });
        assert_eq!(plan.partitions.len(), 3);
        let answers = [quiet(10), with_records(12), quiet(10)];
        let (got, listed) = cache.finish(&plan, &answers, 1).unwrap();
        assert_eq!(got, id);
        assert_eq!(listed, vec![false, true, false]);
        // The partition that returned records moved to the end; its new position comes
        // with the next request.
        let plan = cache.begin(12, request(id, 2, &[("a", 1, 12)]), 2).unwrap();
        let order: Vec<_> = plan
            .partitions
            .iter()
            .map(|(k, w)| (k.clone(), w.fetch_offset))
            .collect();
        assert_eq!(
            order,
            vec![(key("a", 0), 0), (key("b", 0), 0), (key("a", 1), 12)]
        );
        // An error is always listed; a moved log start offset or last stable offset too.
        let mut error = quiet(10);
        error.error = KafkaCode::UnknownTopicOrPartition.code();
        let mut trimmed = quiet(10);
        trimmed.log_start_offset = 4;
        let (_, listed) = cache
            .finish(&plan, &[error, trimmed, quiet(12)], 2)
            .unwrap();
        assert_eq!(listed, vec![true, true, false]);
    }

    #[test]
    fn epochs_must_follow_each_other() {
        let cache = FetchSessions::default();
        let id = open(&cache, &[("a", 0, 0)]);
        assert_eq!(
            cache.begin(12, request(id, 2, &[]), 1).unwrap_err(),
            KafkaCode::InvalidFetchSessionEpoch
        );
        assert!(cache.begin(12, request(id, 1, &[]), 1).is_ok());
        // The same epoch again (a retry, or a second request in flight) is refused.
        assert_eq!(
            cache.begin(12, request(id, 1, &[]), 1).unwrap_err(),
            KafkaCode::InvalidFetchSessionEpoch
        );
        assert!(cache.begin(12, request(id, 2, &[]), 1).is_ok());
        assert_eq!(
            cache.begin(12, request(id + 1, 1, &[]), 1).unwrap_err(),
            KafkaCode::FetchSessionIdNotFound
        );
        assert_eq!(next_epoch(i32::MAX), 1);
    }

    #[test]
    fn forgotten_partitions_leave_and_new_ones_join() {
        let cache = FetchSessions::default();
        let id = open(&cache, &[("a", 0, 0), ("a", 1, 0)]);
        let mut req = request(id, 1, &[("c", 0, 5)]);
        req.forgotten = vec![key("a", 0)];
        let plan = cache.begin(12, req, 1).unwrap();
        let keys: Vec<_> = plan.partitions.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![key("a", 1), key("c", 0)]);
        // A partition that joined is listed the first time, even when quiet.
        let (_, listed) = cache.finish(&plan, &[quiet(10), quiet(0)], 1).unwrap();
        assert_eq!(listed, vec![false, true]);
    }

    #[test]
    fn closing_and_reopening() {
        let cache = FetchSessions::default();
        let id = open(&cache, &[("a", 0, 0)]);
        // Epoch 0 with the old id closes it and opens another.
        let plan = cache.begin(12, request(id, 0, &[("a", 0, 0)]), 1).unwrap();
        assert_eq!(
            cache.begin(12, request(id, 1, &[]), 1).unwrap_err(),
            KafkaCode::FetchSessionIdNotFound
        );
        let (new, _) = cache.finish(&plan, &[quiet(0)], 1).unwrap();
        assert_ne!(new, 0);
        assert_eq!(cache.len(), 1);
        // Epoch -1 closes without opening.
        let plan = cache.begin(12, request(new, -1, &[]), 2).unwrap();
        assert_eq!(cache.finish(&plan, &[], 2).unwrap().0, 0);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn names_and_ids_do_not_mix_in_one_session() {
        let cache = FetchSessions::default();
        let id = open(&cache, &[("a", 0, 0)]);
        let mut req = request(id, 1, &[]);
        req.by_id = true;
        assert_eq!(
            cache.begin(13, req, 1).unwrap_err(),
            KafkaCode::FetchSessionTopicIdError
        );
    }

    #[test]
    fn the_cache_evicts_idle_sessions_then_smaller_ones() {
        let cache = FetchSessions::new(4, 100);
        let small = open(&cache, &[("a", 0, 0)]);
        let pair = open(&cache, &[("b", 0, 0), ("b", 1, 0)]);
        // Three more partitions do not fit: nothing is idle, so the smallest session smaller
        // than the new one goes.
        let plan = cache
            .begin(
                12,
                request(0, 0, &[("c", 0, 0), ("c", 1, 0), ("c", 2, 0)]),
                1,
            )
            .unwrap();
        let (third, _) = cache.finish(&plan, &[quiet(0); 3], 1).unwrap();
        assert_ne!(third, 0);
        assert!(cache.begin(12, request(small, 1, &[]), 1).is_err());
        // One eviction did not make room (2 + 3 > 4), so the pair went too.
        assert!(cache.begin(12, request(pair, 1, &[]), 1).is_err());
        // A session larger than the new one and not idle is kept: the new one is refused,
        // and still answered in full.
        let plan = cache
            .begin(12, request(0, 0, &[("d", 0, 0), ("d", 1, 0)]), 2)
            .unwrap();
        let (refused, listed) = cache.finish(&plan, &[quiet(0); 2], 2).unwrap();
        assert_eq!(refused, 0);
        assert_eq!(listed, vec![true, true]);
        // Once idle long enough, it is evicted for any newcomer.
        let plan = cache
            .begin(12, request(0, 0, &[("e", 0, 0), ("e", 1, 0)]), 500)
            .unwrap();
        let (fourth, _) = cache.finish(&plan, &[quiet(0); 2], 500).unwrap();
        assert_ne!(fourth, 0);
        assert_eq!(cache.len(), 1);
        // More partitions than the cache holds never open a session.
        let big: Vec<_> = (0..5).map(|p| ("f", p, 0)).collect();
        let plan = cache.begin(12, request(0, 0, &big), 600).unwrap();
        assert_eq!(cache.finish(&plan, &[quiet(0); 5], 600).unwrap().0, 0);
    }

    #[test]
    fn a_session_evicted_between_read_and_answer_is_reported() {
        let cache = FetchSessions::new(1, 0);
        let id = open(&cache, &[("a", 0, 0)]);
        let plan = cache.begin(12, request(id, 1, &[]), 1).unwrap();
        let _other = open(&cache, &[("b", 0, 0)]);
        assert_eq!(
            cache.finish(&plan, &[quiet(10)], 1).unwrap_err(),
            KafkaCode::FetchSessionIdNotFound
        );
    }
}
