//! Engine set-up shared by every command (and, later, `serve`): configuration, metadata,
//! storage, the in-process LogStore and the client.
//!
//! Precedence of settings: `--data-dir` > `WOODPECKER_CONFIG__...` environment variables >
//! the `--config` file > the built-in defaults. Without `--config` the built-in default is
//! [`DEFAULT_YAML`]: local-disk segments under the data directory and the embedded metadata
//! store in `<data dir>/meta`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use storage::config::{ConditionWriteMode, StorageType};
use storage::object::probe::decide_condition_write;
use storage::object::{BuildOptions, build_object_storage};
use wal::client::{Client, ClientSettings};
use wal::clock::{ClockRef, SystemClock};
use wal::config::{Config, SegmentSyncPolicy};
use wal::logstore::{Backend, FormatVersion, LogStore, SyncPolicy};
use wal::meta::{KvMetadata, MetaError, MetadataProvider, open_metadata};

/// The data directory when neither `--data-dir` nor `--config` says otherwise.
pub(crate) const DEFAULT_DATA_DIR: &str = "./data";

/// The prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "WOODPECKER_CONFIG__";

/// The configuration used without `--config`: everything in one process, nothing to install.
pub(crate) const DEFAULT_YAML: &str = "\
woodpecker:
  meta:
    type: embedded
  storage:
    type: local
    rootPath: ./data
";

/// The global options every command takes.
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineOptions {
    /// `--config FILE`.
    pub(crate) config: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub(crate) data_dir: Option<PathBuf>,
}

/// Reads the configuration: the file (or [`DEFAULT_YAML`]), environment overrides, then
/// `--data-dir` as `woodpecker.storage.rootPath`. Errors name the setting and the file.
pub(crate) fn load_config(opts: &EngineOptions) -> anyhow::Result<Config> {
    let mut cfg = match &opts.config {
        Some(path) => {
            let overrides: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .collect();
            if overrides.is_empty() {
                // Positions in errors then point into the file itself.
                Config::from_file(path)?
            } else {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Config::from_yaml_str_with_env(&text, overrides).map_err(|e| {
                    anyhow!(
                        "{e} (in {} with {ENV_PREFIX}* environment overrides)",
                        path.display()
                    )
                })?
            }
        }
        None => Config::from_yaml_str_with_env(DEFAULT_YAML, std::env::vars()).map_err(|e| {
            anyhow!("{e} (in the default configuration with environment overrides)")
        })?,
    };
    if let Some(dir) = &opts.data_dir {
        let dir = dir
            .to_str()
            .ok_or_else(|| anyhow!("--data-dir {} is not valid UTF-8", dir.display()))?;
        cfg.woodpecker.storage.root_path = dir.to_string();
        cfg.validate()
            .map_err(|e| anyhow!("{e} (after applying --data-dir)"))?;
    }
    Ok(cfg)
}

/// `woodpecker.logstore.segmentSyncPolicy` as the LogStore's [`SyncPolicy`]
/// (`maxIntervalForService` applies to service mode only and is not used here).
pub(crate) fn sync_policy(s: &SegmentSyncPolicy) -> SyncPolicy {
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

/// An open engine: one process's metadata store, LogStore and client.
#[derive(Debug)]
pub(crate) struct Engine {
    /// The configuration in force.
    #[expect(dead_code, reason = "for `serve`, which reads more sections")]
    pub(crate) config: Config,
    /// `woodpecker.storage.rootPath` (the data directory).
    #[expect(dead_code, reason = "for `serve`")]
    pub(crate) data_root: PathBuf,
    /// The in-process LogStore (embedded mode).
    pub(crate) logstore: Arc<LogStore>,
    /// The client over it.
    pub(crate) client: Client,
}

impl Engine {
    /// Opens the engine described by `opts`.
    pub(crate) async fn open(opts: &EngineOptions) -> anyhow::Result<Engine> {
        let config = load_config(opts)?;
        let clock: ClockRef = SystemClock::shared();
        let storage_section = &config.woodpecker.storage;
        if storage_section.kind == StorageType::Service {
            bail!(
                "invalid setting `woodpecker.storage.type`: service mode is not available yet; \
                 use `local` or `minio`"
            );
        }
        let data_root = PathBuf::from(storage_section.root_path.trim());
        let meta = open_meta(&config, &data_root, clock.clone()).await?;
        let backend = match storage_section.kind {
            StorageType::Local => Backend::local(&data_root, &config.minio.root_path),
            StorageType::Minio => {
                let built = build_object_storage(&config.minio, BuildOptions::default())
                    .await
                    .context("cannot open the object storage (minio section)")?;
                let mode = config.woodpecker.logstore.fence_policy.condition_write;
                decide_and_record(&built.storage, mode, meta.as_ref()).await?;
                Backend::Object(built.storage)
            }
            StorageType::Service => unreachable!("refused above"),
        };
        let logstore = LogStore::new(
            backend,
            sync_policy(&config.woodpecker.logstore.segment_sync_policy),
            FormatVersion::default(),
            clock.clone(),
        )
        .map_err(|e| anyhow!("invalid setting: {e}"))?;
        let logstore = Arc::new(logstore);
        let mut settings = ClientSettings::from(&config.woodpecker.client)
            .with_logstore(&config.woodpecker.logstore);
        // Keep in-flight appends inside the LogStore's window (see ClientSettings docs).
        settings.max_in_flight = settings
            .max_in_flight
            .min(sync_policy(&config.woodpecker.logstore.segment_sync_policy).max_entries)
            .max(1);
        let client = Client::new(meta, logstore.clone(), settings, clock);
        Ok(Engine {
            config,
            data_root,
            logstore,
            client,
        })
    }

    /// Flushes and stops every segment processor.
    pub(crate) async fn shutdown(&self) {
        self.logstore.close_all().await;
    }
}

/// Opens the metadata store; an embedded store held by another process gets an error that
/// names the data directory.
async fn open_meta(
    config: &Config,
    data_root: &Path,
    clock: ClockRef,
) -> anyhow::Result<Arc<dyn MetadataProvider>> {
    let section = &config.woodpecker.meta;
    match open_metadata(section, &config.etcd, data_root, clock).await {
        Ok(meta) => {
            let meta: Arc<KvMetadata> = meta;
            Ok(meta)
        }
        Err(MetaError::Unavailable { detail, .. })
            if detail.contains("already in use by another process") =>
        {
            Err(anyhow!(
                "data directory {} is in use by another woodpecker process: the embedded \
                 metadata store ({}) can be opened by one process at a time; stop the other \
                 process or use etcd metadata",
                data_root.display(),
                section.embedded_dir(data_root).display()
            ))
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot open the metadata store")),
    }
}

/// Applies `fencePolicy.conditionWrite` to the object storage and records a new decision
/// for the cluster.
async fn decide_and_record(
    storage: &storage::object::ObjectStorage,
    mode: ConditionWriteMode,
    meta: &dyn MetadataProvider,
) -> anyhow::Result<()> {
    let stored = meta
        .get_condition_write()
        .await
        .context("cannot read the condition-write decision")?;
    let decision = decide_condition_write(storage, mode, stored).await?;
    if decision.store == Some(true) {
        if mode == ConditionWriteMode::Enable {
            meta.store_condition_write_enabled()
                .await
                .context("cannot record the condition-write decision")?;
        } else {
            let in_force = meta
                .init_condition_write(true)
                .await
                .context("cannot record the condition-write decision")?;
            // Another node recorded a decision first: follow the cluster's.
            storage.set_condition_write(in_force);
        }
    }
    Ok(())
}
