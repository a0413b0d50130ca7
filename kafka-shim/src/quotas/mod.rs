//! Client quotas: what AlterClientQuotas sets, DescribeClientQuotas shows, and Produce and
//! Fetch enforce.
//!
//! A quota belongs to an entity: a user, a client id, or a user and a client id, each
//! named or the default (`<default>`, a null name on the wire). The byte-rate quotas
//! (`producer_byte_rate`, `consumer_byte_rate`) are enforced as Kafka does (KIP-13,
//! KIP-219): a request is measured against the quota of the most specific entity that sets
//! one ([`resolve`], Kafka's eight-step precedence), the bytes of everyone that shares that
//! entity's quota are counted together over a window ([`rate`]), and a client over its
//! quota gets a throttle time in its response and is not served again for that long.
//!
//! `request_percentage` and `controller_mutation_rate` are Kafka quota keys too, but this
//! broker has no request-handler threads to take a share of, nor a controller, so it
//! refuses to set them rather than store quotas it would ignore; likewise the `ip` entity
//! (`connection_creation_rate`).
//!
//! Quotas live in the metadata store ([`crate::store`]), one record per entity under
//! `<root>/quotas/`, and in memory for enforcement: loaded at start, replaced by every
//! alteration and refreshed by every description (a quota another broker of the same store
//! altered is enforced here from then on).

pub mod rate;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wal::clock::ClockRef;

use crate::error::{KafkaCode, ShimError};
use crate::store::{ShimStore, to_json};
use rate::{QuotaWindow, Rate, throttle_ms};

/// The entity type of users.
pub const USER: &str = "user";
/// The entity type of client ids.
pub const CLIENT_ID: &str = "client-id";
/// The entity type of client addresses (not served: see the module docs).
pub const IP: &str = "ip";

/// A quota key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKey {
    /// Bytes per second a producer may send.
    ProducerByteRate,
    /// Bytes per second a consumer may fetch.
    ConsumerByteRate,
}

impl QuotaKey {
    /// Kafka's name of the key.
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
        }
    }
}

/// The name of one part of an entity: a name, or the default of its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityName {
    /// `<default>`: null on the wire.
    Default,
    /// A user or client id.
    Named(String),
}

impl EntityName {
    fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    /// The wire name: `None` for the default.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// A quota entity: a user, a client id, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntity {
    /// The user part, if any.
    pub user: Option<EntityName>,
    /// The client-id part, if any.
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// The entity's parts as (entity type, name) pairs, user first.
    pub fn parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push((USER, u.as_wire()));
        }
        if let Some(c) = &self.client_id {
            parts.push((CLIENT_ID, c.as_wire()));
        }
        parts
    }

    fn part(&self, entity_type: &str) -> Option<&EntityName> {
        match entity_type {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            _ => None,
        }
    }

    /// The store key's last part: unambiguous for any names (hex), `~` for a default.
    fn key(&self) -> String {
        let part = |p: &Option<EntityName>| match p {
            None => "-".to_string(),
            Some(EntityName::Default) => "~".to_string(),
            Some(EntityName::Named(n)) => n.bytes().map(|b| format!("{b:02x}")).collect(),
        };
        format!(
            "user={},client-id={}",
            part(&self.user),
            part(&self.client_id)
        )
    }
}

/// A refusal of a request or of one of its entries: Kafka's code and message.
pub type Refusal = (KafkaCode, String);

fn invalid(message: impl Into<String>) -> Refusal {
    (KafkaCode::InvalidRequest, message.into())
}

/// The entity an AlterClientQuotas entry names, checked as Kafka checks it.
pub fn parse_entity<'a>(
    parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<QuotaEntity, Refusal> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    let mut empty = true;
    for (entity_type, name) in parts {
        empty = false;
        let slot = match entity_type {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            IP => {
                return Err(invalid(
                    "Client quotas of the ip entity type (connection_creation_rate) are not \
                     supported by this broker",
                ));
            }
            other => {
                return Err(invalid(format!(
                    "Unhandled client quota entity type: {other}"
                )));
            }
        };
        if slot.is_some() {
            return Err(invalid(format!(
                "Invalid client quota entity, duplicate entity entry {entity_type}"
            )));
        }
        if name == Some("") {
            return Err(invalid(format!("Empty {entity_type} not supported")));
        }
        *slot = Some(EntityName::from_wire(name));
    }
    if empty {
        return Err(invalid("Invalid empty client quota entity"));
    }
    Ok(entity)
}

/// One operation of an AlterClientQuotas entry, checked: `Some(value)` sets, `None` removes.
pub fn parse_op(key: &str, value: f64, remove: bool) -> Result<(QuotaKey, Option<f64>), Refusal> {
    let key = match key {
        "producer_byte_rate" => QuotaKey::ProducerByteRate,
        "consumer_byte_rate" => QuotaKey::ConsumerByteRate,
        "request_percentage" | "controller_mutation_rate" => {
            return Err(invalid(format!(
                "The quota {key} is not enforced by this broker (it has no request handler \
                 threads or controller to limit), so it cannot be set"
            )));
        }
        other => return Err(invalid(format!("Invalid configuration key {other}"))),
    };
    if remove {
        return Ok((key, None));
    }
    // Kafka's checks, in its order and words: a limit must be positive, and the byte rates
    // are LONG settings (whole, within a long).
    let name = key.name();
    if value.is_nan() || value <= 0.0 {
        return Err(invalid(format!("Quota {name} must be greater than 0")));
    }
    if value > i64::MAX as f64 {
        return Err(invalid(format!(
            "Proposed value for {name} is too large for a LONG."
        )));
    }
    if (value % 1.0).abs() > 1e-6 {
        return Err(invalid(format!("{name} cannot be a fractional value.")));
    }
    Ok((key, Some(value.round())))
}

/// How a DescribeClientQuotas filter component matches an entity's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// That name exactly (match type 0).
    Exact(String),
    /// The default (match type 1).
    Default,
    /// Any name, the default included (match type 2).
    Any,
}

/// A DescribeClientQuotas filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    components: Vec<(String, Match)>,
    strict: bool,
}

impl Filter {
    /// The filter of a request, checked as Kafka checks it.
    pub fn parse<'a>(
        components: impl IntoIterator<Item = (&'a str, i8, Option<&'a str>)>,
        strict: bool,
    ) -> Result<Filter, Refusal> {
        let mut parsed: Vec<(String, Match)> = Vec::new();
        for (entity_type, match_type, name) in components {
            if ![USER, CLIENT_ID, IP].contains(&entity_type) {
                return Err(invalid(format!(
                    "Custom entity type '{entity_type}' not supported"
                )));
            }
            if parsed.iter().any(|(t, _)| t == entity_type) {
                return Err(invalid(format!(
                    "Entity type {entity_type} cannot appear more than once in the filter."
                )));
            }
            let m = match (match_type, name) {
                (0, Some(n)) => Match::Exact(n.to_string()),
                (0, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.",
                    ));
                }
                (1, None) => Match::Default,
                (2, None) => Match::Any,
                (1, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.",
                    ));
                }
                (2, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.",
                    ));
                }
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            };
            parsed.push((entity_type.to_string(), m));
        }
        Ok(Filter {
            components: parsed,
            strict,
        })
    }

    /// Whether the filter selects `entity`: every component matches its part of that type,
    /// and, when strict, the entity has no part of a type no component names.
    pub fn matches(&self, entity: &QuotaEntity) -> bool {
        let each = self
            .components
            .iter()
            .all(|(t, m)| match (entity.part(t), m) {
                (None, _) => false,
                (Some(_), Match::Any) => true,
                (Some(EntityName::Default), Match::Default) => true,
                (Some(EntityName::Named(n)), Match::Exact(want)) => n == want,
                _ => false,
            });
        let only = !self.strict
            || entity
                .parts()
                .iter()
                .all(|(t, _)| self.components.iter().any(|(ct, _)| ct == t));
        each && only
    }
}

/// Every quota set, by entity.
pub type QuotaConfigs = BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>;

/// Whose usage is counted together: the user and client id of the quota entity a request
/// resolved to, with the names of the request's own client in place of defaults and ""
/// for a part the entity does not have (Kafka's metric tags of a quota).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    /// The user counted ("" when the quota is per client id alone).
    pub user: String,
    /// The client id counted ("" when the quota is per user alone).
    pub client_id: String,
}

/// The quota that applies to a client and whose usage it counts against.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The limit, per second.
    pub limit: f64,
    /// The entity that set it.
    pub entity: QuotaEntity,
    /// Whose usage it limits.
    pub bucket: Bucket,
}

/// The quota `key` of the client `client_id` of `user`: the first entity of Kafka's order
/// that sets it, from most to least specific:
///
/// 1. user and client id, 2. user and default client id, 3. user,
/// 4. default user and client id, 5. default user and default client id, 6. default user,
/// 7. client id, 8. default client id.
///
/// `None`: no quota applies.
pub fn resolve(
    configs: &QuotaConfigs,
    user: &str,
    client_id: &str,
    key: QuotaKey,
) -> Option<Resolved> {
    use EntityName::{Default, Named};
    let named = |s: &str| Some(Named(s.to_string()));
    let order = [
        (named(user), named(client_id)),
        (named(user), Some(Default)),
        (named(user), None),
        (Some(Default), named(client_id)),
        (Some(Default), Some(Default)),
        (Some(Default), None),
        (None, named(client_id)),
        (None, Some(Default)),
    ];
    order.into_iter().find_map(|(u, c)| {
        let entity = QuotaEntity {
            user: u,
            client_id: c,
        };
        let limit = *configs.get(&entity)?.get(&key)?;
        let bucket = Bucket {
            user: if entity.user.is_some() {
                user.to_string()
            } else {
                String::new()
            },
            client_id: if entity.client_id.is_some() {
                client_id.to_string()
            } else {
                String::new()
            },
        };
        Some(Resolved {
            limit,
            entity,
            bucket,
        })
    })
}

/// The user name quotas know a principal by: `User:alice` is `alice`.
pub fn quota_user(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// A connection's pause: until when the listener serves none of its requests (KIP-219: a
/// throttled client is answered at once, then not read from for its throttle time). Shared
/// by the broker, which throttles, and the listener, which waits.
#[derive(Debug, Clone, Default)]
pub struct ThrottleGate(Arc<Mutex<Option<Instant>>>);

impl PartialEq for ThrottleGate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ThrottleGate {}

impl ThrottleGate {
    /// Holds the connection until `until` (or later, if it is held longer already).
    pub fn hold_until(&self, until: Instant) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }

    /// Until when the connection is held, if it is.
    pub fn until(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first Produce and Fetch versions whose clients back off by themselves when told a
/// throttle time (KIP-219); older clients are throttled by a delayed response.
pub const PRODUCE_BACKS_OFF_FROM: i16 = 6;
/// See [`PRODUCE_BACKS_OFF_FROM`].
pub const FETCH_BACKS_OFF_FROM: i16 = 8;

/// Throttles a connection for `time` after its response: a client that backs off by
/// itself is answered at once and its connection held ([`ThrottleGate`]); an older one
/// gets its response only after `time` (this waits).
pub(crate) async fn throttle(
    gate: &ThrottleGate,
    clock: &ClockRef,
    time: Duration,
    client_backs_off: bool,
) {
    if time.is_zero() {
        return;
    }
    if client_backs_off {
        gate.hold_until(clock.now() + time);
    } else {
        clock.sleep(time).await;
    }
}

/// A throttle time as the responses carry it.
pub(crate) fn throttle_time_ms(time: Duration) -> i32 {
    i32::try_from(time.as_millis()).unwrap_or(i32::MAX)
}

/// What one stored record holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    entity: QuotaEntity,
    values: BTreeMap<String, f64>,
}

/// Usage buckets kept before idle ones are forgotten.
const BUCKETS_BEFORE_SWEEP: usize = 1024;

/// The client quotas of a broker: the stored ones, and the usage measured against them.
pub struct Quotas {
    store: ShimStore,
    prefix: String,
    configs: RwLock<Arc<QuotaConfigs>>,
    usage: Mutex<HashMap<(QuotaKey, Bucket), Rate>>,
    window: QuotaWindow,
    clock: ClockRef,
    /// The clock's reading at start: rates are measured in milliseconds since then.
    epoch: Instant,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("prefix", &self.prefix)
            .field("window", &self.window)
            .finish()
    }
}

impl Quotas {
    /// The quotas stored under `<root>/quotas/`, measured over `window` in `clock`'s time.
    pub async fn open(
        store: ShimStore,
        window: QuotaWindow,
        clock: ClockRef,
    ) -> Result<Quotas, ShimError> {
        let prefix = format!("{}/quotas/", store.root());
        let epoch = clock.now();
        let quotas = Quotas {
            store,
            prefix,
            configs: RwLock::new(Arc::default()),
            usage: Mutex::new(HashMap::new()),
            window,
            clock,
            epoch,
        };
        quotas.load().await?;
        Ok(quotas)
    }

    /// Reads every stored quota and enforces what was read.
    pub async fn load(&self) -> Result<Arc<QuotaConfigs>, ShimError> {
        let mut configs = QuotaConfigs::new();
        for record in self.store.list(&self.prefix).await? {
            let stored: Stored = record.json("client quota")?;
            let mut values = BTreeMap::new();
            for (k, v) in stored.values {
                // Only keys this broker sets are ever stored; anything else is damage.
                let (key, _) = parse_op(&k, v, true).map_err(|(_, m)| ShimError::Corrupt {
                    what: format!("client quota {}", record.key),
                    detail: m,
                })?;
                values.insert(key, v);
            }
            if !values.is_empty() {
                configs.insert(stored.entity, values);
            }
        }
        let configs = Arc::new(configs);
        *self.configs.write().unwrap_or_else(|p| p.into_inner()) = configs.clone();
        Ok(configs)
    }

    /// The quotas enforced now.
    pub fn configs(&self) -> Arc<QuotaConfigs> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `changes` to `entity`'s stored quotas (`None` removes a key), atomically
    /// against concurrent alterations of the same entity, and enforces the result.
    pub async fn alter(
        &self,
        entity: &QuotaEntity,
        changes: &[(QuotaKey, Option<f64>)],
    ) -> Result<(), ShimError> {
        let key = format!("{}{}", self.prefix, entity.key());
        loop {
            let current = self.store.get(&key).await?;
            let mut values = match &current {
                Some(r) => r.json::<Stored>("client quota")?.values,
                None => BTreeMap::new(),
            };
            for (k, v) in changes {
                match v {
                    Some(v) => values.insert(k.name().to_string(), *v),
                    None => values.remove(k.name()),
                };
            }
            let written = if values.is_empty() {
                match &current {
                    Some(r) => self.store.delete_at(&key, r.revision).await?,
                    None => true,
                }
            } else {
                let value = to_json(
                    &Stored {
                        entity: entity.clone(),
                        values,
                    },
                    &key,
                )?;
                self.store
                    .replace(&key, current.as_ref().map(|r| r.revision), value)
                    .await?
            };
            if written {
                break;
            }
        }
        self.load().await?;
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The quota `key` that applies to `client_id` of `principal`, if any.
    pub fn applies(&self, key: QuotaKey, principal: &str, client_id: &str) -> Option<Resolved> {
        resolve(&self.configs(), quota_user(principal), client_id, key)
    }

    /// Records `bytes` against the quota that applies to the client (nothing when none
    /// does) and returns its throttle time.
    pub fn record(&self, resolved: &Resolved, key: QuotaKey, bytes: u64) -> Duration {
        let now = self.now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if usage.len() >= BUCKETS_BEFORE_SWEEP {
            usage.retain(|_, r| !r.idle(&self.window, now));
        }
        let rate = usage.entry((key, resolved.bucket.clone())).or_default();
        rate.record(&self.window, now, bytes as f64);
        let ms = throttle_ms(
            rate.per_second(&self.window, now),
            resolved.limit,
            rate.window_ms(&self.window, now),
            self.window.max_throttle_ms(),
        );
        Duration::from_millis(ms)
    }

    /// Takes back `bytes` recorded by [`Quotas::record`] and not served after all.
    pub fn unrecord(&self, resolved: &Resolved, key: QuotaKey, bytes: u64) {
        let now = self.now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rate) = usage.get_mut(&(key, resolved.bucket.clone())) {
            rate.unrecord(&self.window, now, bytes as f64);
        }
    }

    /// The most one response may carry under `resolved` (Kafka bounds quota-limited fetches
    /// so that one response never needs more than the window to pay back).
    pub fn max_bytes_in_window(&self, resolved: &Resolved) -> usize {
        let v = self.window.max_value_in_window(resolved.limit);
        if v >= usize::MAX as f64 {
            usize::MAX
        } else {
            (v as usize).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EntityName::{Default as D, Named};

    fn n(s: &str) -> Option<EntityName> {
        Some(Named(s.into()))
    }

    fn entity(user: Option<EntityName>, client_id: Option<EntityName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    /// The eight entities of the precedence, most specific first, with a distinct limit.
    fn all_eight() -> Vec<(QuotaEntity, f64)> {
        vec![
            (entity(n("alice"), n("app")), 1.0),
            (entity(n("alice"), Some(D)), 2.0),
            (entity(n("alice"), None), 3.0),
            (entity(Some(D), n("app")), 4.0),
            (entity(Some(D), Some(D)), 5.0),
            (entity(Some(D), None), 6.0),
            (entity(None, n("app")), 7.0),
            (entity(None, Some(D)), 8.0),
        ]
    }

    #[test]
    fn the_most_specific_entity_wins_in_kafkas_order() {
        let eight = all_eight();
        // Remove the entities one by one from the most specific: each time the next one
        // in the order decides.
        for first in 0..eight.len() {
            let configs: QuotaConfigs = eight[first..]
                .iter()
                .map(|(e, v)| {
                    (
                        e.clone(),
                        BTreeMap::from([(QuotaKey::ProducerByteRate, *v)]),
                    )
                })
                .collect();
            let r = resolve(&configs, "alice", "app", QuotaKey::ProducerByteRate).unwrap();
            assert_eq!(r.entity, eight[first].0, "{first}");
            assert_eq!(r.limit, eight[first].1);
        }
        // Another key is not confused with this one.
        let configs: QuotaConfigs = eight
            .iter()
            .map(|(e, v)| {
                (
                    e.clone(),
                    BTreeMap::from([(QuotaKey::ProducerByteRate, *v)]),
                )
            })
            .collect();
        assert!(resolve(&configs, "alice", "app", QuotaKey::ConsumerByteRate).is_none());
        assert!(resolve(&QuotaConfigs::new(), "a", "b", QuotaKey::ProducerByteRate).is_none());
    }

    #[test]
    fn other_users_and_clients_fall_to_the_defaults() {
        let configs: QuotaConfigs = all_eight()
            .into_iter()
            .map(|(e, v)| (e, BTreeMap::from([(QuotaKey::ConsumerByteRate, v)])))
            .collect();
        let key = QuotaKey::ConsumerByteRate;
        // bob with app: the default user with client app.
        assert_eq!(resolve(&configs, "bob", "app", key).unwrap().limit, 4.0);
        // alice with another client: alice with the default client.
        assert_eq!(resolve(&configs, "alice", "other", key).unwrap().limit, 2.0);
        // Neither named: both defaults.
        assert_eq!(resolve(&configs, "bob", "other", key).unwrap().limit, 5.0);
    }

    #[test]
    fn usage_is_shared_by_whoever_shares_the_entity() {
        let configs: QuotaConfigs = [
            (entity(n("alice"), None), 100.0),
            (entity(Some(D), Some(D)), 10.0),
            (entity(None, n("batch")), 50.0),
        ]
        .into_iter()
        .map(|(e, v)| (e, BTreeMap::from([(QuotaKey::ProducerByteRate, v)])))
        .collect();
        let key = QuotaKey::ProducerByteRate;
        // alice's quota is hers, whatever her client: one bucket for all her clients.
        let a1 = resolve(&configs, "alice", "x", key).unwrap();
        let a2 = resolve(&configs, "alice", "y", key).unwrap();
        assert_eq!(a1.bucket, a2.bucket);
        assert_eq!(a1.bucket.client_id, "");
        // The default user/client quota is per user and client: each its own bucket.
        let b = resolve(&configs, "bob", "x", key).unwrap();
        let c = resolve(&configs, "carol", "x", key).unwrap();
        assert_ne!(b.bucket, c.bucket);
        assert_eq!(
            b.bucket,
            Bucket {
                user: "bob".into(),
                client_id: "x".into()
            }
        );
        // A user with no quota of its own but a client-id quota: not reached, the
        // default user/client quota comes first.
        assert_eq!(resolve(&configs, "dave", "batch", key).unwrap().limit, 10.0);
    }

    #[test]
    fn client_id_quotas_alone_are_shared_by_every_user() {
        let configs: QuotaConfigs = [(entity(None, n("batch")), 50.0)]
            .into_iter()
            .map(|(e, v)| (e, BTreeMap::from([(QuotaKey::ProducerByteRate, v)])))
            .collect();
        let key = QuotaKey::ProducerByteRate;
        let a = resolve(&configs, "alice", "batch", key).unwrap();
        let b = resolve(&configs, "ANONYMOUS", "batch", key).unwrap();
        assert_eq!(a.bucket, b.bucket);
        assert_eq!(a.bucket.user, "");
        assert!(resolve(&configs, "alice", "other", key).is_none());
    }

    #[test]
    fn entities_are_checked_as_kafka_checks_them() {
        assert_eq!(
            parse_entity([(USER, Some("a")), (CLIENT_ID, None)]).unwrap(),
            entity(n("a"), Some(D))
        );
        let refused = |parts: Vec<(&str, Option<&str>)>| parse_entity(parts).unwrap_err();
        assert_eq!(
            refused(vec![]),
            invalid("Invalid empty client quota entity")
        );
        assert_eq!(
            refused(vec![("group", Some("g"))]).0,
            KafkaCode::InvalidRequest
        );
        assert_eq!(
            refused(vec![(IP, Some("1.2.3.4"))]).0,
            KafkaCode::InvalidRequest
        );
        assert_eq!(
            refused(vec![(USER, Some("a")), (USER, Some("b"))]),
            invalid("Invalid client quota entity, duplicate entity entry user")
        );
        assert_eq!(
            refused(vec![("group", Some("g"))]),
            invalid("Unhandled client quota entity type: group")
        );
        assert_eq!(
            refused(vec![(CLIENT_ID, Some(""))]),
            invalid("Empty client-id not supported")
        );
    }

    #[test]
    fn keys_and_values_are_checked_as_kafka_checks_them() {
        assert_eq!(
            parse_op("producer_byte_rate", 1024.0, false).unwrap(),
            (QuotaKey::ProducerByteRate, Some(1024.0))
        );
        assert_eq!(
            parse_op("consumer_byte_rate", f64::NAN, true).unwrap(),
            (QuotaKey::ConsumerByteRate, None)
        );
        assert_eq!(
            parse_op("nope", 1.0, false).unwrap_err(),
            invalid("Invalid configuration key nope")
        );
        let message = |v: f64| parse_op("producer_byte_rate", v, false).unwrap_err().1;
        assert_eq!(
            message(0.0),
            "Quota producer_byte_rate must be greater than 0"
        );
        assert_eq!(
            message(-5.0),
            "Quota producer_byte_rate must be greater than 0"
        );
        assert_eq!(
            message(1.5),
            "producer_byte_rate cannot be a fractional value."
        );
        assert_eq!(
            message(1e300),
            "Proposed value for producer_byte_rate is too large for a LONG."
        );
        for bad in [1.5, -1.0, 0.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(
                parse_op("producer_byte_rate", bad, false).unwrap_err().0,
                KafkaCode::InvalidRequest,
                "{bad}"
            );
        }
        for unenforced in ["request_percentage", "controller_mutation_rate"] {
            let (code, message) = parse_op(unenforced, 50.0, false).unwrap_err();
            assert_eq!(code, KafkaCode::InvalidRequest);
            assert!(message.contains("not enforced"), "{message}");
        }
    }

    #[test]
    fn filters_match_exact_default_and_any_strictly_or_not() {
        let alice = entity(n("alice"), None);
        let alice_app = entity(n("alice"), n("app"));
        let default_user = entity(Some(D), None);
        let app = entity(None, n("app"));
        let f = |c: Vec<(&str, i8, Option<&str>)>, strict| Filter::parse(c, strict).unwrap();
        let exact = f(vec![(USER, 0, Some("alice"))], false);
        assert!(exact.matches(&alice) && exact.matches(&alice_app));
        assert!(!exact.matches(&default_user) && !exact.matches(&app));
        let exact_strict = f(vec![(USER, 0, Some("alice"))], true);
        assert!(exact_strict.matches(&alice) && !exact_strict.matches(&alice_app));
        let default = f(vec![(USER, 1, None)], false);
        assert!(default.matches(&default_user) && !default.matches(&alice));
        let any_user = f(vec![(USER, 2, None)], true);
        assert!(any_user.matches(&alice) && any_user.matches(&default_user));
        assert!(!any_user.matches(&alice_app) && !any_user.matches(&app));
        let everything = f(vec![], false);
        assert!(
            [&alice, &alice_app, &default_user, &app]
                .iter()
                .all(|e| everything.matches(e))
        );
        let nothing_strict = f(vec![], true);
        assert!(!nothing_strict.matches(&alice));
        // ip components are valid filters; no ip quota exists for them to match.
        assert!(!f(vec![(IP, 2, None)], false).matches(&alice));
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = |c: Vec<(&str, i8, Option<&str>)>| Filter::parse(c, false).unwrap_err().0;
        assert_eq!(bad(vec![("group", 2, None)]), KafkaCode::InvalidRequest);
        assert_eq!(bad(vec![(USER, 0, None)]), KafkaCode::InvalidRequest);
        assert_eq!(bad(vec![(USER, 1, Some("a"))]), KafkaCode::InvalidRequest);
        assert_eq!(bad(vec![(USER, 7, None)]), KafkaCode::InvalidRequest);
        assert_eq!(
            bad(vec![(USER, 2, None), (USER, 1, None)]),
            KafkaCode::InvalidRequest
        );
    }

    #[test]
    fn store_keys_tell_every_entity_apart() {
        let keys: Vec<String> = all_eight().iter().map(|(e, _)| e.key()).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|o| o != k), "{k}");
        }
        // A name that looks like the default marker is still a name.
        assert_ne!(entity(n("~"), None).key(), entity(Some(D), None).key());
    }

    #[tokio::test]
    async fn quotas_survive_a_reopen_and_removing_every_key_removes_the_record() {
        use wal::clock::SystemClock;
        use wal::meta::embedded::EmbeddedKv;
        use wal::meta::kv::Kv;
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(
            EmbeddedKv::open(dir.path(), SystemClock::shared())
                .await
                .unwrap(),
        );
        let store = ShimStore::new(kv.clone(), "q/kafka");
        let clock = SystemClock::shared();
        let q = Quotas::open(store.clone(), QuotaWindow::default(), clock.clone())
            .await
            .unwrap();
        let alice = entity(n("alice"), None);
        q.alter(
            &alice,
            &[
                (QuotaKey::ProducerByteRate, Some(1024.0)),
                (QuotaKey::ConsumerByteRate, Some(2048.0)),
            ],
        )
        .await
        .unwrap();
        let again = Quotas::open(store.clone(), QuotaWindow::default(), clock.clone())
            .await
            .unwrap();
        assert_eq!(
            again.configs()[&alice],
            BTreeMap::from([
                (QuotaKey::ProducerByteRate, 1024.0),
                (QuotaKey::ConsumerByteRate, 2048.0)
            ])
        );
        q.alter(&alice, &[(QuotaKey::ProducerByteRate, None)])
            .await
            .unwrap();
        q.alter(&alice, &[(QuotaKey::ConsumerByteRate, None)])
            .await
            .unwrap();
        assert!(q.configs().is_empty());
        assert!(store.list("q/kafka/quotas/").await.unwrap().is_empty());
    }

    #[test]
    fn a_gate_keeps_the_latest_hold() {
        let g = ThrottleGate::default();
        assert_eq!(g.until(), None);
        let t = wal::clock::SystemClock::shared().now();
        g.hold_until(t + Duration::from_secs(2));
        g.hold_until(t + Duration::from_secs(1));
        assert_eq!(g.until(), Some(t + Duration::from_secs(2)));
        assert_eq!(g.clone(), g);
        assert_ne!(ThrottleGate::default(), g);
    }
}
