//! The woodpecker-rs engine.
//!
//! * [`client`]: `Client`, `LogHandle` and `LogWriter`: the embedded-mode write path (segment
//!   creation, dense entry ids, rolling, fencing on writer takeover).
//! * [`meta`]: log and segment metadata with the Go project's etcd keys, values and
//!   compare-and-swap guards, on etcd or on an embedded single-node store.
//! * [`engine`]: assembling metadata, storage, the LogStore and the client from
//!   `woodpecker.yaml`.
//! * [`config`]: `woodpecker.yaml` with the Go project's schema and defaults.
//! * [`message`]: messages and message ids in the Go project's encodings.
//! * [`clock`]: the time source of every timeout, lease and retention rule, injectable in tests.
//! * [`logstore`]: the in-process LogStore write path (segment processors, buffering, flush,
//!   fence and completion) that embedded mode talks to, and its staged storage for service mode.
//! * [`quorum`]: the replication core as pure code: acknowledgement at `Aq` of `Wq`, the
//!   last-add-confirmed entry, fence and completion targets after a writer crash.
//! * [`service`]: the service-mode LogStore node: the gRPC server, membership and node
//!   selection, the admin endpoint.

pub mod client;
pub mod clock;
pub mod config;
pub mod engine;
pub mod logstore;
pub mod message;
pub mod meta;
pub mod quorum;
pub mod service;
