//! Log and segment metadata.
//!
//! [`kv`] is the key-value contract (etcd's data model: revisions, transactions, leases).
//! [`etcd::EtcdKv`] keeps it on a real etcd, [`embedded::EmbeddedKv`] in one process on local
//! disk. The Woodpecker layout of keys and values ([`keys`]) and the compare-and-swap guard of
//! every operation ([`provider`]) are written once on top of it, so a Go Woodpecker and this
//! engine pointed at the same etcd see the same logs, and the embedded default keeps the same
//! guarantees.

pub mod config;
pub mod embedded;
pub mod error;
pub mod etcd;
pub mod keys;
pub mod kv;
pub mod lock;
pub mod prefix;
pub mod provider;
pub mod readers;

pub use config::{MetaSection, MetaType, open_metadata};
pub use error::{MetaError, MetaResult};
pub use lock::{LockOptions, WriterLock};
pub use prefix::{PrefixChoice, PrefixMode};
pub use provider::{KvMetadata, MetadataProvider, Versioned};
pub use readers::ReaderRegistration;
