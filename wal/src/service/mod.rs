//! Service mode, server side: a LogStore node that Woodpecker clients (ours and Go's) reach
//! over gRPC (`woodpecker.proto.logstore.LogStore`, spec §3.3 and §7).
//!
//! * [`node`]: the node's state and operations (tenants, delete markers, lifecycle,
//!   maintenance), over [`crate::logstore::staged`] storage;
//! * [`server`]: the tonic service mapping every RPC onto the node;
//! * [`membership`] and [`selection`]: gossip between nodes and SelectNodes strategies;
//! * [`admin`]: the admin and metrics HTTP endpoint (`/metrics`, `/healthz`, decommission);
//! * [`disk`]: the disk watermark that refuses appends on a full disk;
//! * [`tenants`], [`error`], [`metrics`]: tenant stores, wire errors, counters.
//!
//! There is no server-to-server data traffic: each client writes every entry to every replica
//! of a segment's quorum and acknowledges at a majority; nodes gossip only to answer
//! SelectNodes.

pub mod admin;
pub mod disk;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod selection;
pub mod server;
pub mod tenants;

pub use error::{ServiceError, code};
pub use membership::{GossipSettings, Membership};
pub use node::{Lifecycle, LogStoreNode, MaintenanceSettings, NodeSettings};
pub use selection::SelectionPolicy;
pub use server::LogStoreService;
pub use tenants::{Tenant, TenantSettings};
