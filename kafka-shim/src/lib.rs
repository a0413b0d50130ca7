//! The Kafka wire protocol over the woodpecker-rs engine.
//!
//! Each topic-partition is one log of the engine (`kafka:<topic>:<partition>`); each Kafka
//! record batch is one log entry, stored as the producer sent it with its base offset
//! assigned. Topics, committed group offsets and the producer-id allocator live in the
//! engine's metadata store under `<prefix>/kafka/`. See the README's Kafka section for the
//! served API versions and the mapping.
//!
//! * [`server`]: the listener (framing, ApiVersions negotiation, pipelining, shutdown).
//! * [`codec`] and [`batch`] (re-exported from `kafka-wire`): request frames to typed
//!   requests with every count and length bounded by the frame, and record batches.
//! * [`broker`]: topics, the partition registry and request dispatch; the handlers are one
//!   file per API in the (private) `handlers` module.
//! * [`partition`]: one topic-partition over one log.
//! * [`fetch_session`]: fetch sessions (KIP-227), which incremental fetches name.
//! * [`groups`]: the consumer-group coordinator and committed offsets.
//! * [`quotas`]: client quotas (user / client-id byte rates) and their enforcement.
//! * [`offsets_topic`]: `__consumer_offsets`, the committed offsets as a readable topic.
//! * [`security`]: listeners, TLS, SASL and ACLs; the checks each API makes are in the
//!   (private) `access` module.
//! * [`store`]: the shim's durable state in the engine's metadata store (the one module that
//!   talks to it).
//! * [`txn`]: the transaction coordinator (exactly-once: transactional producers, markers,
//!   transactional offset commits).

mod access;
pub mod broker;
pub mod error;
pub mod fetch_session;
pub mod groups;
mod handlers;
pub mod metrics;
pub mod offsets_topic;
pub mod partition;
pub mod quotas;
pub mod security;
pub mod server;
pub mod store;
pub mod topics;
pub mod txn;

pub use broker::{Broker, BrokerConfig};
pub use error::{KafkaCode, ShimError};
pub use kafka_wire::{batch, codec};
pub use metrics::Metrics;
pub use server::{Listener, ServerConfig, serve, serve_listener};

/// The prefix of every log name the Kafka front door owns: partition `p` of topic `t` is the
/// log `kafka:t:p` ([`topics::log_name`]). Entries of such a log are Kafka record batches;
/// anything else written there breaks the partition.
pub const LOG_PREFIX: &str = "kafka:";

/// Whether the log `name` belongs to the Kafka front door (see [`LOG_PREFIX`]).
pub fn owns_log(name: &str) -> bool {
    name.starts_with(LOG_PREFIX)
}

/// What the group coordinator needs to know about topics.
pub trait TopicCatalog: Send + Sync {
    /// The number of partitions of `topic`, or `None` when it does not exist.
    fn partition_count(&self, topic: &str) -> Option<i32>;
}
