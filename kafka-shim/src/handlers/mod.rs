//! The request handlers of the broker that are not about consumer groups, ACLs, SCRAM
//! credentials or transactions (those live in [`crate::groups`], `crate::access` and
//! [`crate::txn`]): one file per API, each an `impl Broker` block. Dispatch and the
//! partition registry stay in [`crate::broker`].

mod alter_configs;
mod client_quotas;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod fetch;
mod find_coordinator;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
