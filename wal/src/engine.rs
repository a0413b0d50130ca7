//! Assembling an engine from `woodpecker.yaml`: metadata, where segments live, and the
//! client.
//!
//! `woodpecker.storage.type: local` keeps segments as `data.log` files under
//! `<storage.rootPath>/<minio.rootPath>`; `minio` builds the object storage of the `minio:`
//! section and applies `fencePolicy.conditionWrite` (probing the store and recording the
//! cluster's decision in metadata). Both run the LogStore in process (embedded mode, a quorum
//! of one). `service` runs no LogStore: the client writes every segment to `replicas` LogStore
//! nodes found from the seeds of `woodpecker.client.quorum` (service mode), naming the tenant
//! of the `minio:` section (`bucketName`, `rootPath`) in every request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage::config::{ConditionWriteMode, StorageType};
use storage::object::probe::decide_condition_write;
use storage::object::{BuildOptions, ObjectStorage, build_object_storage};

use crate::client::cluster::{SelectSettings, ServiceCluster};
use crate::client::grpc::{RpcSettings, Tenant};
use crate::client::{Client, ClientSettings};
use crate::clock::ClockRef;
use crate::config::{Config, ConfigError, SegmentSyncPolicy};
use crate::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};
use crate::meta::{KvMetadata, MetaError, MetadataProvider, open_metadata};

/// Why an engine could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A setting is wrong; the error names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The embedded metadata store of this data directory is open in another process.
    #[error(
        "data directory {data_dir} is in use by another woodpecker process: the embedded metadata \
         store ({meta_dir}) can be opened by one process at a time; stop the other process or \
         use etcd metadata"
    )]
    DataDirInUse {
        /// The data directory.
        data_dir: String,
        /// The embedded store's directory.
        meta_dir: String,
    },
    /// The metadata store could not be opened or initialised.
    #[error("cannot open the metadata store: {0}")]
    Meta(MetaError),
    /// The object storage could not be built or refused the condition-write probe.
    #[error("cannot open the object storage (minio section): {0}")]
    Storage(storage::Error),
}

impl From<&SegmentSyncPolicy> for SyncPolicy {
    /// `woodpecker.logstore.segmentSyncPolicy` for the embedded LogStore
    /// (`maxIntervalForService` belongs to service mode).
    fn from(s: &SegmentSyncPolicy) -> Self {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        SyncPolicy {
            max_interval: Duration::from_millis(s.max_interval),
            max_interval_local: Duration::from_millis(s.max_interval_for_local_storage),
            max_entries: size(s.max_entries),
            max_bytes: size(s.max_bytes),
            max_flush_size: size(s.max_flush_size),
            max_flush_threads: usize::try_from(s.max_flush_threads).unwrap_or(usize::MAX),
            max_flush_retries: s.max_flush_retries,
            retry_interval: Duration::from_millis(s.retry_interval),
        }
    }
}

/// One process's engine: metadata, LogStores and client.
#[derive(Debug)]
pub struct Engine {
    /// The configuration in force.
    pub config: Config,
    /// `woodpecker.storage.rootPath`.
    pub data_root: PathBuf,
    /// The metadata provider.
    pub meta: Arc<KvMetadata>,
    /// The in-process LogStore (embedded mode).
    pub logstore: Option<Arc<LogStore>>,
    /// The client.
    pub client: Client,
}

impl Engine {
    /// Opens the engine `config` describes (it is validated again first).
    pub async fn open(config: Config, clock: ClockRef) -> Result<Engine, EngineError> {
        config.validate()?;
        let storage_section = &config.woodpecker.storage;
        let data_root = PathBuf::from(storage_section.root_path.trim());
        let meta = match open_metadata(
            &config.woodpecker.meta,
            &config.etcd,
            &data_root,
            clock.clone(),
        )
        .await
        {
            Ok(meta) => meta,
            Err(MetaError::Unavailable { detail, .. })
                if detail.contains("already in use by another process") =>
            {
                return Err(EngineError::DataDirInUse {
                    data_dir: data_root.display().to_string(),
                    meta_dir: config
                        .woodpecker
                        .meta
                        .embedded_dir(&data_root)
                        .display()
                        .to_string(),
                });
            }
            Err(e) => return Err(EngineError::Meta(e)),
        };
        let mut settings = ClientSettings::from(&config.woodpecker.client)
            .with_logstore(&config.woodpecker.logstore);
        if storage_section.kind == StorageType::Service {
            let tenant = Tenant {
                bucket: config.minio.bucket_name.clone(),
                root_path: config.minio.root_path.clone(),
            };
            // A replica's window is the LogStore's `maxEntries`; keep what one replica is
            // sent beyond its durable tail inside it.
            let window =
                usize::try_from(config.woodpecker.logstore.segment_sync_policy.max_entries)
                    .unwrap_or(usize::MAX);
            settings.replication.node_window = settings.replication.node_window.min(window);
            let cluster = ServiceCluster::new(
                &config.woodpecker.client.quorum,
                tenant,
                RpcSettings::default(),
                SelectSettings::default(),
                clock.clone(),
            )?;
            let provider: Arc<dyn MetadataProvider> = meta.clone();
            let client = Client::with_cluster(provider, Arc::new(cluster), settings, clock);
            return Ok(Engine {
                config,
                data_root,
                meta,
                logstore: None,
                client,
            });
        }
        let backend = if storage_section.kind == StorageType::Local {
            Backend::local(&data_root, &config.minio.root_path)
        } else {
            let built = build_object_storage(&config.minio, BuildOptions::default())
                .await
                .map_err(EngineError::Storage)?;
            let mode = config.woodpecker.logstore.fence_policy.condition_write;
            decide_and_record(&built.storage, mode, meta.as_ref()).await?;
            Backend::Object(built.storage)
        };
        let policy = SyncPolicy::from(&config.woodpecker.logstore.segment_sync_policy);
        let format =
            FormatVersion::try_from(config.woodpecker.logstore.format_version).map_err(|_| {
                ConfigError {
                    setting: "woodpecker.logstore.formatVersion".into(),
                    message: "must be 5 or 6".into(),
                }
            })?;
        let logstore =
            LogStore::new(backend, policy.clone(), format, clock.clone()).map_err(|message| {
                ConfigError {
                    setting: "woodpecker.logstore.segmentSyncPolicy".into(),
                    message,
                }
            })?;
        let logstore = Arc::new(logstore);
        // Keep in-flight appends inside the LogStore's window.
        settings.max_in_flight = settings.max_in_flight.min(policy.max_entries).max(1);
        let provider: Arc<dyn MetadataProvider> = meta.clone();
        let client = Client::new(provider, logstore.clone(), settings, clock);
        Ok(Engine {
            config,
            data_root,
            meta,
            logstore: Some(logstore),
            client,
        })
    }

    /// Flushes and stops what the client's LogStores run in this process (every segment
    /// processor of an in-process LogStore).
    pub async fn shutdown(&self) {
        self.client.cluster().shutdown().await;
    }
}

/// Applies `fencePolicy.conditionWrite` to the object storage and records a new decision for
/// the cluster (the first recorded decision wins).
async fn decide_and_record(
    storage: &ObjectStorage,
    mode: ConditionWriteMode,
    meta: &dyn MetadataProvider,
) -> Result<(), EngineError> {
    let stored = meta
        .get_condition_write()
        .await
        .map_err(EngineError::Meta)?;
    let decision = decide_condition_write(storage, mode, stored)
        .await
        .map_err(EngineError::Storage)?;
    if decision.store == Some(true) {
        if mode == ConditionWriteMode::Enable {
            meta.store_condition_write_enabled()
                .await
                .map_err(EngineError::Meta)?;
        } else {
            let in_force = meta
                .init_condition_write(true)
                .await
                .map_err(EngineError::Meta)?;
            // Another node recorded a decision first: follow the cluster's.
            storage.set_condition_write(in_force);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::message::{LogMessageId, WriteMessage};

    fn local_config(dir: &std::path::Path, format: u16) -> Config {
        let yaml = format!(
            "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n  logstore:\n    formatVersion: {format}\n    segmentSyncPolicy:\n      maxFlushSize: 1\n",
            dir.display()
        );
        Config::from_yaml_str(&yaml).unwrap()
    }

    #[tokio::test]
    async fn opens_the_embedded_default_and_writes_the_configured_format() {
        let dir = tempfile::tempdir().unwrap();
        let clock: ClockRef = Arc::new(ManualClock::new(1_000));
        let engine = Engine::open(local_config(dir.path(), 5), clock.clone())
            .await
            .unwrap();
        engine.client.create_log("l").await.unwrap();
        let log = engine.client.open_log("l").await.unwrap();
        let writer = log.open_writer().await.unwrap();
        let id = writer.write(WriteMessage::new(&b"x"[..])).await.unwrap();
        assert_eq!(id, LogMessageId::new(0, 0));
        writer.close().await.unwrap();
        engine.shutdown().await;
        // Format 5: the segment's data.log starts with a version-5 header record.
        let data = std::fs::read(dir.path().join("files/1/0/data.log")).unwrap();
        let (header, _) = storage::codec::HeaderRecord::decode(&data).unwrap();
        assert_eq!(header.version, 5);

        // A second engine on the same data directory is refused while the first is open.
        let again = Engine::open(local_config(dir.path(), 6), clock.clone())
            .await
            .unwrap_err();
        assert!(matches!(again, EngineError::DataDirInUse { .. }), "{again}");
    }

    #[tokio::test]
    async fn service_mode_needs_seeds_and_names_the_setting() {
        let mut cfg = Config::default();
        cfg.woodpecker.meta.kind = crate::meta::MetaType::Embedded;
        cfg.woodpecker.storage.kind = StorageType::Service;
        let clock: ClockRef = Arc::new(ManualClock::new(0));
        match Engine::open(cfg.clone(), clock.clone()).await {
            Err(EngineError::Config(e)) => {
                assert_eq!(e.setting, "woodpecker.client.quorum.quorumBufferPools")
            }
            other => panic!("{other:?}"),
        }
        cfg.woodpecker.client.quorum.quorum_buffer_pools[0].seeds = vec!["127.0.0.1:1".into()];
        cfg.woodpecker.client.quorum.quorum_select_strategy.replicas = 4;
        match Engine::open(cfg, clock).await {
            Err(EngineError::Config(e)) => assert_eq!(
                e.setting,
                "woodpecker.client.quorum.quorumSelectStrategy.replicas"
            ),
            other => panic!("{other:?}"),
        }
    }
}
