//! Deterministic simulation of the engine: one seed picks a cluster (3 to 5 LogStore nodes),
//! a workload (writers, a fencing second writer, recovery, compaction, read-back) and a fault
//! plan (partitions, lost requests and replies, delays, node crash and restart, power losses
//! that lose unsynced writes and tear the last ones ([`disk`]), slow disks and `fsync`s,
//! object-store errors and latency, metadata-store errors before and after applying and
//! delays ([`meta`])); the run executes the real client, quorum, LogStore node and staged
//! storage code on a single-threaded tokio runtime whose time is paused (simulated), and
//! checks Woodpecker's invariants at the end (see [`check`]).
//!
//! # Why not turmoil or madsim
//!
//! * `madsim` replaces tokio (and tonic, etcd-client) with its own simulated crates through
//!   `[patch]`/renamed dependencies and a `--cfg madsim` build of the whole graph: the engine
//!   would build against a forked tokio, and every dependency that spawns threads or touches
//!   files (redb, the local segment journal, `object_store`) would need a simulated twin.
//! * `turmoil` keeps tokio and simulates hosts and TCP, but the engine's gRPC client builds
//!   its own tonic channels over real sockets, so using it means a connector seam in the
//!   client and running tonic/hyper over turmoil streams, and its hosts would still share one
//!   real file system and one object store.
//!
//! The engine already has the seams a simulation needs: the [`LogStoreClient`] and
//! [`LogStoreCluster`] traits (everything the client says to a node goes through them), the
//! [`wal::clock::Clock`] trait, and the object-store decorator. So the harness is a seeded
//! current-thread runtime with paused time, and a simulated transport behind
//! `LogStoreClient` ([`net`]) that calls the real [`LogStoreNode`] operations the gRPC
//! service maps to, with the gRPC client's timeout semantics. The only engine change is a
//! constructor that gives in-process nodes one shared object store
//! ([`LogStoreNode::open_with_object_store`]).
//!
//! # What is deterministic
//!
//! Everything: the fault plan, the workload and every per-call fault decision are functions
//! of the seed (per node, per call number), and the engine's interleaving is fixed too. The
//! runtime has one thread and paused time; the engine's blocking work (local segment files,
//! the journal's commits, which the caller writes itself when the journal is idle, as it
//! always is here, and the embedded metadata store) goes through `clock::blocking`, which the
//! simulation sets to run in place on that thread ([`run::run_seed`]), so it completes in
//! program order, never on another thread's timing; directory listings come sorted. A second
//! run of a seed takes the same path: [`run::Report::trace_digest`] covers the fault trace, the
//! faults per kind, the acknowledged and read ids and the simulated time, and
//! `scripts/sim-soak SECONDS FIRST --twice` checks it for every seed it runs. (The journal's
//! checkpoint thread still syncs and retires journal files on its own; what it does is never
//! visible to the engine's path: a power loss's image may or may not still hold a retired
//! file's records, and replay writes back the same bytes either way.)
//!
//! [`LogStoreClient`]: wal::client::LogStoreClient
//! [`LogStoreCluster`]: wal::client::LogStoreCluster
//! [`LogStoreNode`]: wal::service::LogStoreNode
//! [`LogStoreNode::open_with_object_store`]: wal::service::LogStoreNode::open_with_object_store

// The simulation runs on a current-thread tokio runtime with paused time: tokio's clock is the
// simulated time the harness drives, so reading and sleeping on it directly is the point (the
// engine itself gets it through `clock::SimClock`).
#![allow(clippy::disallowed_methods)]

pub mod check;
pub mod clock;
pub mod disk;
pub mod meta;
pub mod net;
pub mod plan;
pub mod run;

pub use plan::Plan;
pub use run::{Failure, Report, run_seed};
