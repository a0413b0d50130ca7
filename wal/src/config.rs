//! `woodpecker.yaml`: the Go project's configuration schema, with its defaults.
//!
//! A Go Woodpecker (or Milvus) file loads unchanged: every section and key of the Go reference
//! file is accepted, unknown keys are ignored, and the keys this engine acts on keep the Go
//! names, units and defaults. Durations are numbers in the unit the Go file documents (seconds
//! or milliseconds, named in each field's docs); sizes are bytes.
//!
//! [`Config::validate`] names the YAML key of the first wrong value. Environment variables
//! override keys ([`Config::apply_env`]): `WOODPECKER_CONFIG__<path>` with the path's
//! components joined by `__`, for example `WOODPECKER_CONFIG__MINIO__ADDRESS=10.0.0.5` or
//! `WOODPECKER_CONFIG__WOODPECKER__STORAGE__TYPE=local` (matching is case-insensitive).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use storage::config::{FencePolicy, MinioConfig, StorageSection};

use crate::meta::config::MetaSection;
use crate::meta::etcd::EtcdConfig;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {message}")]
pub struct ConfigError {
    /// The YAML key to fix (dotted path).
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

impl From<storage::Error> for ConfigError {
    fn from(e: storage::Error) -> Self {
        match e {
            storage::Error::Config { setting, message } => ConfigError { setting, message },
            other => ConfigError::new("<storage>", other.to_string()),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `woodpecker:`.
    pub woodpecker: WoodpeckerSection,
    /// `etcd:`.
    pub etcd: EtcdConfig,
    /// `minio:`.
    pub minio: MinioConfig,
}

/// `woodpecker:`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct WoodpeckerSection {
    /// `woodpecker.meta`.
    pub meta: MetaSection,
    /// `woodpecker.client`.
    pub client: ClientSection,
    /// `woodpecker.logstore`.
    pub logstore: LogstoreSection,
    /// `woodpecker.storage`.
    pub storage: StorageSection,
}

/// `woodpecker.client`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClientSection {
    /// `segmentAppend`.
    pub segment_append: SegmentAppend,
    /// `segmentRollingPolicy`.
    pub segment_rolling_policy: SegmentRollingPolicy,
    /// `auditor`.
    pub auditor: Auditor,
    /// `sessionMonitor`.
    pub session_monitor: SessionMonitor,
    /// `quorum`: where service mode finds LogStore nodes and how it picks replicas.
    pub quorum: QuorumSection,
}

/// `woodpecker.client.quorum` (spec §7.1): static seeds of LogStore nodes, grouped in pools
/// (regions), and how a new segment's replicas are selected. Read by service mode only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QuorumSection {
    /// `quorumBufferPools`: `[{name, seeds: [host:port, ...]}]`.
    #[serde(deserialize_with = "null_as_default")]
    pub quorum_buffer_pools: Vec<QuorumBufferPool>,
    /// `quorumSelectStrategy`.
    pub quorum_select_strategy: QuorumSelectStrategy,
}

impl Default for QuorumSection {
    fn default() -> Self {
        QuorumSection {
            quorum_buffer_pools: vec![QuorumBufferPool {
                name: "default-region-pool".into(),
                seeds: Vec::new(),
            }],
            quorum_select_strategy: QuorumSelectStrategy::default(),
        }
    }
}

impl QuorumSection {
    /// Checks what service mode needs: a seed, 3 or 5 replicas, placement rules that name
    /// pools. The error names the key.
    pub fn validate_for_service(&self) -> Result<(), ConfigError> {
        const KEY: &str = "woodpecker.client.quorum";
        if !self.quorum_buffer_pools.iter().any(|p| !p.seeds.is_empty()) {
            return Err(ConfigError::new(
                format!("{KEY}.quorumBufferPools"),
                "service mode needs at least one pool with seeds (host:port of LogStore nodes)",
            ));
        }
        for (i, pool) in self.quorum_buffer_pools.iter().enumerate() {
            if let Some(bad) = pool.seeds.iter().find(|s| s.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("{KEY}.quorumBufferPools[{i}].seeds"),
                    format!("`{bad}` is not a host:port"),
                ));
            }
        }
        let strategy = &self.quorum_select_strategy;
        if !matches!(strategy.replicas, 3 | 5) {
            return Err(ConfigError::new(
                format!("{KEY}.quorumSelectStrategy.replicas"),
                format!("{} replicas: use 3 or 5", strategy.replicas),
            ));
        }
        if strategy.strategy == QuorumStrategy::Custom {
            if strategy.custom_placement.is_empty() {
                return Err(ConfigError::new(
                    format!("{KEY}.quorumSelectStrategy.customPlacement"),
                    "the custom strategy needs one placement rule per replica",
                ));
            }
            for rule in &strategy.custom_placement {
                if !self
                    .quorum_buffer_pools
                    .iter()
                    .any(|p| p.name == rule.region)
                {
                    return Err(ConfigError::new(
                        format!("{KEY}.quorumSelectStrategy.customPlacement"),
                        format!(
                            "rule `{}` names pool `{}`, which is not in quorumBufferPools",
                            rule.name, rule.region
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One `woodpecker.client.quorum.quorumBufferPools` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QuorumBufferPool {
    /// `name`: the pool (region) name.
    pub name: String,
    /// `seeds`: gRPC `host:port` of LogStore nodes in the pool.
    #[serde(deserialize_with = "null_as_default")]
    pub seeds: Vec<String>,
}

/// `woodpecker.client.quorum.quorumSelectStrategy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct QuorumSelectStrategy {
    /// `affinityMode`: `soft` (filters are preferences) or `hard` (requirements).
    pub affinity_mode: AffinityMode,
    /// `replicas`: 3 or 5; every entry goes to all of them, acknowledged at a majority.
    pub replicas: u32,
    /// `strategy`.
    pub strategy: QuorumStrategy,
    /// `customPlacement`: one rule per replica for the `custom` strategy.
    #[serde(deserialize_with = "null_as_default")]
    pub custom_placement: Vec<CustomPlacement>,
}

impl Default for QuorumSelectStrategy {
    fn default() -> Self {
        QuorumSelectStrategy {
            affinity_mode: AffinityMode::Soft,
            replicas: 3,
            strategy: QuorumStrategy::Random,
            custom_placement: Vec::new(),
        }
    }
}

/// `affinityMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityMode {
    /// Filters are preferences.
    #[default]
    Soft,
    /// Filters are requirements.
    Hard,
}

/// `strategy`: how replicas spread over availability zones, resource groups and regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumStrategy {
    /// Any nodes.
    #[default]
    Random,
    /// One zone, one resource group.
    SingleAzSingleRg,
    /// One zone, several resource groups.
    SingleAzMultiRg,
    /// Several zones, one resource group.
    MultiAzSingleRg,
    /// Several zones and resource groups.
    MultiAzMultiRg,
    /// Replicas spread over at least two pools.
    CrossRegion,
    /// One placement rule per replica.
    Custom,
    /// One of the fixed groups of nodes.
    RandomGroup,
}

/// One `customPlacement` rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomPlacement {
    /// `name`.
    pub name: String,
    /// `region`: the pool to pick from.
    pub region: String,
    /// `az`: a regular expression over availability zones.
    pub az: String,
    /// `resourceGroup`: a regular expression over resource groups.
    pub resource_group: String,
}

/// A key present with no value (`key:`) reads as the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `woodpecker.client.segmentAppend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SegmentAppend {
    /// `queueSize`: appends queued per segment.
    pub queue_size: u64,
    /// `maxRetries`: retries of one append.
    pub max_retries: u32,
    /// `maxBatchEntries`: appends coalesced into one batch (1 disables batching).
    pub max_batch_entries: u64,
    /// `maxBatchBytes`: payload bytes of one batch.
    pub max_batch_bytes: u64,
}

impl Default for SegmentAppend {
    fn default() -> Self {
        SegmentAppend {
            queue_size: 10_000,
            max_retries: 3,
            max_batch_entries: 1_000,
            max_batch_bytes: 2_000_000,
        }
    }
}

/// `woodpecker.client.segmentRollingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SegmentRollingPolicy {
    /// `maxSize`: bytes after which a segment rolls.
    pub max_size: u64,
    /// `maxInterval`: seconds after which a non-empty segment rolls.
    pub max_interval: u64,
    /// `maxBlocks`: blocks after which a segment rolls.
    pub max_blocks: u64,
}

impl Default for SegmentRollingPolicy {
    fn default() -> Self {
        SegmentRollingPolicy {
            max_size: 256_000_000,
            max_interval: 600,
            max_blocks: 1_000,
        }
    }
}

/// `woodpecker.client.auditor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Auditor {
    /// `maxInterval`: seconds between auditor passes.
    pub max_interval: u64,
}

impl Default for Auditor {
    fn default() -> Self {
        Auditor { max_interval: 10 }
    }
}

/// `woodpecker.client.sessionMonitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionMonitor {
    /// `checkInterval`: seconds between writer-lock session checks.
    pub check_interval: u64,
    /// `maxFailures`: failed checks in a row that invalidate the writer.
    pub max_failures: u32,
}

impl Default for SessionMonitor {
    fn default() -> Self {
        SessionMonitor {
            check_interval: 3,
            max_failures: 5,
        }
    }
}

/// `woodpecker.logstore`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LogstoreSection {
    /// `segmentSyncPolicy`.
    pub segment_sync_policy: SegmentSyncPolicy,
    /// `segmentCompactionPolicy`.
    pub segment_compaction_policy: SegmentCompactionPolicy,
    /// `segmentReadPolicy`.
    pub segment_read_policy: SegmentReadPolicy,
    /// `retentionPolicy`.
    pub retention_policy: RetentionPolicy,
    /// `fencePolicy`.
    pub fence_policy: FencePolicy,
    /// `processorCleanupPolicy` (service-mode LogStore nodes).
    pub processor_cleanup_policy: ProcessorCleanupPolicy,
    /// `diskWatermarkPolicy` (service-mode LogStore nodes).
    pub disk_watermark_policy: DiskWatermarkPolicy,
    /// `formatVersion` (this project's extension): the block format written, 6 (default) or 5
    /// (readable by the Go Woodpecker of Milvus 2.6). Both are read either way.
    pub format_version: u16,
}

impl Default for LogstoreSection {
    fn default() -> Self {
        LogstoreSection {
            segment_sync_policy: SegmentSyncPolicy::default(),
            segment_compaction_policy: SegmentCompactionPolicy::default(),
            segment_read_policy: SegmentReadPolicy::default(),
            retention_policy: RetentionPolicy::default(),
            fence_policy: FencePolicy::default(),
            processor_cleanup_policy: ProcessorCleanupPolicy::default(),
            disk_watermark_policy: DiskWatermarkPolicy::default(),
            format_version: 6,
        }
    }
}

/// `woodpecker.logstore.segmentSyncPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SegmentSyncPolicy {
    /// `maxInterval`: milliseconds between flushes to object storage.
    pub max_interval: u64,
    /// `maxIntervalForLocalStorage`: milliseconds between flushes to local disk.
    pub max_interval_for_local_storage: u64,
    /// `maxIntervalForService`: milliseconds between flushes in service mode.
    pub max_interval_for_service: u64,
    /// `maxEntries`: entries of the write buffer window.
    pub max_entries: u64,
    /// `maxBytes`: bytes of the write buffer (backpressure above).
    pub max_bytes: u64,
    /// `maxFlushRetries`: retries of one block upload.
    pub max_flush_retries: u32,
    /// `retryInterval`: milliseconds, the longest wait between upload retries.
    pub retry_interval: u64,
    /// `maxFlushSize`: bytes at which a block is closed.
    pub max_flush_size: u64,
    /// `maxFlushThreads`: block uploads in parallel.
    pub max_flush_threads: u32,
}

impl Default for SegmentSyncPolicy {
    fn default() -> Self {
        SegmentSyncPolicy {
            max_interval: 200,
            max_interval_for_local_storage: 10,
            max_interval_for_service: 1,
            max_entries: 10_000,
            max_bytes: 256_000_000,
            max_flush_retries: 5,
            retry_interval: 1_000,
            max_flush_size: 2_000_000,
            max_flush_threads: 32,
        }
    }
}

/// `woodpecker.logstore.segmentCompactionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SegmentCompactionPolicy {
    /// `maxBytes`: bytes of one merged block.
    pub max_bytes: u64,
    /// `maxParallelUploads`.
    pub max_parallel_uploads: u32,
    /// `maxParallelReads`.
    pub max_parallel_reads: u32,
}

impl Default for SegmentCompactionPolicy {
    fn default() -> Self {
        SegmentCompactionPolicy {
            max_bytes: 2_000_000,
            max_parallel_uploads: 4,
            max_parallel_reads: 8,
        }
    }
}

/// `woodpecker.logstore.segmentReadPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SegmentReadPolicy {
    /// `maxBatchSize`: bytes of one read batch.
    pub max_batch_size: u64,
    /// `maxFetchThreads`: block reads in parallel.
    pub max_fetch_threads: u32,
}

impl Default for SegmentReadPolicy {
    fn default() -> Self {
        SegmentReadPolicy {
            max_batch_size: 2_000_000,
            max_fetch_threads: 32,
        }
    }
}

/// `woodpecker.logstore.processorCleanupPolicy`: when a LogStore node closes segment
/// processors nobody used for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProcessorCleanupPolicy {
    /// `cleanupInterval`: seconds between scans for idle processors.
    pub cleanup_interval: u64,
    /// `maxIdleTime`: seconds without appends after which a processor is closed.
    pub max_idle_time: u64,
    /// `shutdownTimeout`: seconds a clean stop waits for processors to close.
    pub shutdown_timeout: u64,
}

impl Default for ProcessorCleanupPolicy {
    fn default() -> Self {
        ProcessorCleanupPolicy {
            cleanup_interval: 60,
            max_idle_time: 300,
            shutdown_timeout: 15,
        }
    }
}

/// `woodpecker.logstore.diskWatermarkPolicy`: write backpressure when the disk holding a
/// LogStore node's local segments fills up. Ratios are used / (used + available), as `df`
/// shows them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskWatermarkPolicy {
    /// `enabled`.
    pub enabled: bool,
    /// `softThresholdRatio`: above it appends are refused at random, more often the fuller the
    /// disk (with `throttleEnabled`).
    pub soft_threshold_ratio: f64,
    /// `hardThresholdRatio`: at or above it every append is refused (1.0 or more: never).
    pub hard_threshold_ratio: f64,
    /// `minFreeBytes`: available bytes at or below which every append is refused (a number of
    /// bytes or a size such as `1GB`, `512Mi`; units are powers of 1024).
    #[serde(deserialize_with = "byte_size")]
    pub min_free_bytes: u64,
    /// `sampleInterval`: seconds between disk samples.
    pub sample_interval: u64,
    /// `throttleEnabled`.
    pub throttle_enabled: bool,
}

impl Default for DiskWatermarkPolicy {
    fn default() -> Self {
        DiskWatermarkPolicy {
            enabled: true,
            soft_threshold_ratio: 0.80,
            hard_threshold_ratio: 0.90,
            min_free_bytes: 1 << 30,
            sample_interval: 10,
            throttle_enabled: true,
        }
    }
}

/// A byte count as a number or a string with an optional unit (`K`, `M`, `G`, `T`, each
/// optionally followed by `B`, `i` or `iB`; powers of 1024).
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_byte_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses `1GB`, `512Mi`, `4096`, `2 KiB` (powers of 1024).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (a number with an optional K/M/G/T unit)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KI" | "KIB" => 10,
        "M" | "MB" | "MI" | "MIB" => 20,
        "G" | "GB" | "GI" | "GIB" => 30,
        "T" | "TB" | "TI" | "TIB" => 40,
        _ => return Err(format!("`{text}` has an unknown unit")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `woodpecker.logstore.retentionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// `ttl`: seconds a truncated segment is kept before collection.
    pub ttl: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy { ttl: 259_200 }
    }
}

impl RetentionPolicy {
    /// The TTL as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl)
    }
}

impl Config {
    /// Parses YAML text, then validates it.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            serde_yaml_ng::from_str(text).map_err(|e| match storage::config::yaml_error(e) {
                storage::Error::Config { setting, message } => ConfigError { setting, message },
                other => ConfigError::new("<document>", other.to_string()),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a file (see [`Config::from_yaml_str`]); errors name the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_yaml_str(&text).map_err(|e| ConfigError {
            message: format!("{} (in {})", e.message, path.display()),
            ..e
        })
    }

    /// Re-reads `text` with environment overrides applied (see the module docs), then
    /// validates. `vars` is usually `std::env::vars()`.
    pub fn from_yaml_str_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: serde_yaml_ng::Value = if text.trim().is_empty() {
            serde_yaml_ng::Value::Mapping(Default::default())
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| ConfigError::new("<document>", e.to_string()))?
        };
        Self::apply_env(&mut doc, vars);
        let text = serde_yaml_ng::to_string(&doc)
            .map_err(|e| ConfigError::new("<document>", e.to_string()))?;
        Self::from_yaml_str(&text)
    }

    /// Applies `WOODPECKER_CONFIG__A__B=value` overrides to a YAML document: the value is
    /// parsed as YAML (so numbers and booleans keep their type) and set at `a.b`. Components
    /// match case-insensitively: keys of the document first, then the Go reference file's
    /// spelling ([`REFERENCE_YAML`]) for keys the document lacks.
    pub fn apply_env(
        doc: &mut serde_yaml_ng::Value,
        vars: impl IntoIterator<Item = (String, String)>,
    ) {
        const PREFIX: &str = "WOODPECKER_CONFIG__";
        for (name, value) in vars {
            let Some(path) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let parts: Vec<&str> = path.split("__").filter(|p| !p.is_empty()).collect();
            if parts.is_empty() {
                continue;
            }
            let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&value)
                .unwrap_or(serde_yaml_ng::Value::String(value.clone()));
            let spelled = go_spelling(&parts);
            let parts: Vec<&str> = spelled.iter().map(String::as_str).collect();
            set_path(doc, &parts, parsed);
        }
    }

    /// Checks the values this engine acts on; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.woodpecker;
        storage::config::validate(&w.storage, &self.minio)?;
        let positive = |v: u64, key: &str| {
            if v == 0 {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        if !matches!(w.logstore.format_version, 5 | 6) {
            return Err(ConfigError::new(
                "woodpecker.logstore.formatVersion",
                format!("{} is not 5 or 6", w.logstore.format_version),
            ));
        }
        let sync = &w.logstore.segment_sync_policy;
        positive(
            sync.max_interval,
            "woodpecker.logstore.segmentSyncPolicy.maxInterval",
        )?;
        positive(
            sync.max_interval_for_local_storage,
            "woodpecker.logstore.segmentSyncPolicy.maxIntervalForLocalStorage",
        )?;
        positive(
            sync.max_entries,
            "woodpecker.logstore.segmentSyncPolicy.maxEntries",
        )?;
        positive(
            sync.max_bytes,
            "woodpecker.logstore.segmentSyncPolicy.maxBytes",
        )?;
        positive(
            sync.max_flush_size,
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize",
        )?;
        positive(
            u64::from(sync.max_flush_threads),
            "woodpecker.logstore.segmentSyncPolicy.maxFlushThreads",
        )?;
        if sync.max_flush_size > sync.max_bytes {
            return Err(ConfigError::new(
                "woodpecker.logstore.segmentSyncPolicy.maxFlushSize",
                format!(
                    "{} is larger than maxBytes ({}): a block could never fill",
                    sync.max_flush_size, sync.max_bytes
                ),
            ));
        }
        positive(
            w.logstore.segment_compaction_policy.max_bytes,
            "woodpecker.logstore.segmentCompactionPolicy.maxBytes",
        )?;
        positive(
            w.logstore.processor_cleanup_policy.cleanup_interval,
            "woodpecker.logstore.processorCleanupPolicy.cleanupInterval",
        )?;
        positive(
            w.logstore.processor_cleanup_policy.max_idle_time,
            "woodpecker.logstore.processorCleanupPolicy.maxIdleTime",
        )?;
        let dw = &w.logstore.disk_watermark_policy;
        if !(dw.soft_threshold_ratio > 0.0 && dw.soft_threshold_ratio <= dw.hard_threshold_ratio) {
            return Err(ConfigError::new(
                "woodpecker.logstore.diskWatermarkPolicy.softThresholdRatio",
                format!(
                    "require 0 < softThresholdRatio <= hardThresholdRatio, got {} and {}",
                    dw.soft_threshold_ratio, dw.hard_threshold_ratio
                ),
            ));
        }
        positive(
            dw.sample_interval,
            "woodpecker.logstore.diskWatermarkPolicy.sampleInterval",
        )?;
        positive(
            w.logstore.segment_read_policy.max_batch_size,
            "woodpecker.logstore.segmentReadPolicy.maxBatchSize",
        )?;
        let roll = &w.client.segment_rolling_policy;
        positive(
            roll.max_size,
            "woodpecker.client.segmentRollingPolicy.maxSize",
        )?;
        positive(
            roll.max_interval,
            "woodpecker.client.segmentRollingPolicy.maxInterval",
        )?;
        positive(
            roll.max_blocks,
            "woodpecker.client.segmentRollingPolicy.maxBlocks",
        )?;
        positive(
            w.client.auditor.max_interval,
            "woodpecker.client.auditor.maxInterval",
        )?;
        positive(
            w.client.segment_append.queue_size,
            "woodpecker.client.segmentAppend.queueSize",
        )?;
        positive(
            w.client.segment_append.max_batch_entries,
            "woodpecker.client.segmentAppend.maxBatchEntries",
        )?;
        positive(
            w.client.session_monitor.check_interval,
            "woodpecker.client.sessionMonitor.checkInterval",
        )?;
        // `storage.type: service` is also a LogStore node's own setting (`woodpecker
        // logstore`), which has no quorum section: the client checks its seeds when it
        // builds its cluster (`ServiceCluster::new`).
        if w.meta.kind == crate::meta::MetaType::Etcd {
            self.etcd
                .validate()
                .map_err(|e| ConfigError::new(e.setting, e.message))?;
        }
        Ok(())
    }
}

/// The configuration used when none is given (`woodpecker` without `--config`): everything in
/// one process, nothing to install: local-disk segments under `./data` and the embedded
/// metadata store.
pub const EMBEDDED_DEFAULT_YAML: &str = "\
woodpecker:
  meta:
    type: embedded
  storage:
    type: local
    rootPath: ./data
";

/// The Go reference file's keys and values (comments left out), plus this project's
/// extension keys (`woodpecker.meta.embeddedDir`, `woodpecker.meta.prefixMode`,
/// `woodpecker.logstore.formatVersion`): the spelling that environment overrides are
/// matched against, and a test that such a file loads.
pub const REFERENCE_YAML: &str = r#"
woodpecker:
  meta:
    type: etcd
    prefix: woodpecker
    prefixMode: auto
    embeddedDir: ""
  client:
    segmentAppend:
      queueSize: 10000
      maxRetries: 3
      maxBatchEntries: 1000
      maxBatchBytes: 2000000
    segmentRollingPolicy:
      maxSize: 256000000
      maxInterval: 600
      maxBlocks: 1000
    auditor:
      maxInterval: 10
    sessionMonitor:
      checkInterval: 3
      maxFailures: 5
    directRead:
      enabled: true
      maxBatchSize: 16777216
      maxFetchThreads: 4
    quorum:
      quorumBufferPools:
        - name: default-region-pool
          seeds: [ ]
      quorumSelectStrategy:
        affinityMode: soft
        replicas: 3
        strategy: random
        customPlacement:
  logstore:
    segmentSyncPolicy:
      maxInterval: 200
      maxIntervalForLocalStorage: 10
      maxIntervalForService: 1
      maxEntries: 10000
      maxBytes: 256000000
      maxFlushRetries: 5
      retryInterval: 1000
      maxFlushSize: 2000000
      maxFlushThreads: 32
    segmentCompactionPolicy:
      maxBytes: 2000000
      maxParallelUploads: 4
      maxParallelReads: 8
    segmentReadPolicy:
      maxBatchSize: 2000000
      maxFetchThreads: 32
    retentionPolicy:
      ttl: 259200
    fencePolicy:
      conditionWrite: auto
    formatVersion: 6
    grpc:
      serverMaxSendSize: 536870912
      serverMaxRecvSize: 268435456
      clientMaxSendSize: 268435456
      clientMaxRecvSize: 536870912
    processorCleanupPolicy:
      cleanupInterval: 60
      maxIdleTime: 300
      shutdownTimeout: 15
    diskWatermarkPolicy:
      enabled: true
      softThresholdRatio: 0.80
      minFreeBytes: 1GB
      sampleInterval: 10
  storage:
    type: minio
    rootPath: /var/lib/woodpecker
log:
  level: info
  file:
    rootPath:
  format: text
trace:
  exporter: noop
  sampleFraction: 1
etcd:
  endpoints:
    - localhost:2379
  rootPath: by-dev
  metaSubPath: meta
  kvSubPath: kv
  log:
    level: info
    path: stdout
  ssl:
    enabled: false
    tlsCert: /path/to/etcd-client.pem
    tlsKey: /path/to/etcd-client-key.pem
    tlsCACert: /path/to/ca.pem
    tlsMinVersion: 1.3
  requestTimeout: 10000
  use:
    embed: false
  data:
    dir: default.etcd
  auth:
    enabled: false
    userName:
    password:
minio:
  address: localhost
  port: 9000
  accessKeyID: minioadmin
  secretAccessKey: minioadmin
  useSSL: false
  ssl:
    tlsCACert: /path/to/public.crt
  bucketName: a-bucket
  createBucket: true
  rootPath: files
  useIAM: false
  cloudProvider: aws
  gcpCredentialJSON:
  iamEndpoint:
  logLevel: fatal
  region:
  useVirtualHost: false
  requestTimeoutMs: 10000
  listObjectsMaxKeys: 0
"#;

/// The Go spelling of each path component, as far as the reference file knows the path.
fn go_spelling(parts: &[&str]) -> Vec<String> {
    let reference: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(REFERENCE_YAML).unwrap_or(serde_yaml_ng::Value::Null);
    let mut node = Some(&reference);
    parts
        .iter()
        .map(|part| {
            let found = node.and_then(|n| n.as_mapping()).and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(part)))
            });
            node = found.map(|(_, v)| v);
            found
                .and_then(|(k, _)| k.as_str())
                .unwrap_or(part)
                .to_string()
        })
        .collect()
}

fn set_path(doc: &mut serde_yaml_ng::Value, parts: &[&str], value: serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    if !matches!(doc, Value::Mapping(_)) {
        *doc = Value::Mapping(Default::default());
    }
    let Value::Mapping(map) = doc else {
        return;
    };
    let (head, rest) = (parts[0], &parts[1..]);
    let existing = map
        .keys()
        .find(|k| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(head)))
        .cloned();
    let key = existing.unwrap_or_else(|| Value::String(head.to_string()));
    if rest.is_empty() {
        map.insert(key, value);
    } else {
        let child = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Default::default()));
        set_path(child, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaType;
    use storage::config::{CloudProvider, ConditionWriteMode, StorageType};

    #[test]
    fn the_go_reference_file_loads_with_its_defaults() {
        let cfg = Config::from_yaml_str(REFERENCE_YAML).unwrap();
        // The file states the defaults, with placeholder certificate paths.
        let mut expected = Config::default();
        expected.etcd.ssl.tls_cert = "/path/to/etcd-client.pem".into();
        expected.etcd.ssl.tls_key = "/path/to/etcd-client-key.pem".into();
        expected.etcd.ssl.tls_ca_cert = "/path/to/ca.pem".into();
        expected.minio.ssl.tls_ca_cert = "/path/to/public.crt".into();
        assert_eq!(cfg, expected);
        assert_eq!(cfg.woodpecker.meta.kind, MetaType::Etcd);
        assert_eq!(cfg.woodpecker.storage.kind, StorageType::Minio);
        assert_eq!(cfg.etcd.root_path, "by-dev");
        assert_eq!(cfg.minio.cloud_provider, CloudProvider::Aws);
        assert_eq!(
            cfg.woodpecker.logstore.retention_policy.ttl(),
            Duration::from_secs(259_200)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let setting = |yaml: &str| Config::from_yaml_str(yaml).unwrap_err().setting;
        assert_eq!(
            setting("woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxFlushSize: 0\n"),
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize"
        );
        assert_eq!(
            setting(
                "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxBytes: 10\n      maxFlushSize: 20\n"
            ),
            "woodpecker.logstore.segmentSyncPolicy.maxFlushSize"
        );
        assert_eq!(
            setting("woodpecker:\n  client:\n    auditor:\n      maxInterval: -1\n"),
            "woodpecker.client.auditor.maxInterval"
        );
        assert_eq!(setting("minio:\n  port: nine\n"), "minio.port");
        assert_eq!(
            setting("woodpecker:\n  logstore:\n    formatVersion: 7\n"),
            "woodpecker.logstore.formatVersion"
        );
        assert_eq!(setting("etcd:\n  endpoints: []\n"), "etcd.endpoints");
        assert_eq!(
            setting("woodpecker:\n  meta:\n    type: zookeeper\n"),
            "woodpecker.meta.type"
        );
        // Embedded metadata does not need a valid etcd section.
        Config::from_yaml_str("woodpecker:\n  meta:\n    type: embedded\netcd:\n  endpoints: []\n")
            .unwrap();
    }

    #[test]
    fn environment_overrides_keys() {
        let vars = [
            ("WOODPECKER_CONFIG__MINIO__ADDRESS", "10.0.0.5"),
            ("WOODPECKER_CONFIG__minio__port", "9100"),
            ("WOODPECKER_CONFIG__WOODPECKER__STORAGE__TYPE", "local"),
            (
                "WOODPECKER_CONFIG__WOODPECKER__LOGSTORE__FENCEPOLICY__CONDITIONWRITE",
                "disable",
            ),
            ("UNRELATED", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = Config::from_yaml_str_with_env("minio:\n  address: localhost\n", vars).unwrap();
        assert_eq!(cfg.minio.address, "10.0.0.5");
        assert_eq!(cfg.minio.port, 9100);
        assert_eq!(cfg.woodpecker.storage.kind, StorageType::Local);
        assert_eq!(
            cfg.woodpecker.logstore.fence_policy.condition_write,
            ConditionWriteMode::Disable
        );
        // An override that makes the file invalid is refused like the file would be.
        let bad = [(
            "WOODPECKER_CONFIG__MINIO__PORT".to_string(),
            "0".to_string(),
        )];
        assert_eq!(
            Config::from_yaml_str_with_env("", bad).unwrap_err().setting,
            "minio.port"
        );
    }

    #[test]
    fn disk_watermark_sizes_and_ratios() {
        assert_eq!(parse_byte_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_byte_size(" 2 KiB"), Ok(2048));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert!(parse_byte_size("1 parsec").is_err());
        let cfg = Config::from_yaml_str(
            "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      minFreeBytes: 2GB\n      hardThresholdRatio: 0.95\n",
        )
        .unwrap();
        let dw = cfg.woodpecker.logstore.disk_watermark_policy;
        assert_eq!(dw.min_free_bytes, 2 << 30);
        assert_eq!(dw.hard_threshold_ratio, 0.95);
        assert!(dw.enabled && dw.throttle_enabled);
        let e = Config::from_yaml_str(
            "woodpecker:\n  logstore:\n    diskWatermarkPolicy:\n      softThresholdRatio: 0.95\n",
        )
        .unwrap_err();
        assert_eq!(
            e.setting,
            "woodpecker.logstore.diskWatermarkPolicy.softThresholdRatio"
        );
    }

    #[test]
    fn a_missing_file_names_the_option() {
        let err = Config::from_file(Path::new("/nonexistent/woodpecker.yaml")).unwrap_err();
        assert_eq!(err.setting, "--config");
    }

    fn storage_setting_of(yaml: &str) -> String {
        match Config::from_yaml_str(yaml) {
            Err(e) => e.setting,
            Ok(cfg) => panic!("expected a config error, got {cfg:?}"),
        }
    }

    #[test]
    fn reads_the_storage_keys_of_the_go_schema() {
        let yaml = r#"
woodpecker:
  meta:
    prefix: woodpecker
  logstore:
    segmentSyncPolicy:
      maxInterval: 200
    fencePolicy:
      conditionWrite: disable
  storage:
    type: default
    rootPath: /tmp/wp
etcd:
  endpoints: [localhost:2379]
minio:
  address: 10.0.0.5
  port: 9100
  accessKeyID: ak
  secretAccessKey: sk
  useSSL: true
  ssl:
    tlsCACert: ""
  bucketName: milvus-bucket
  createBucket: false
  rootPath: files/wp
  useIAM: false
  cloudProvider: aliyun
  iamEndpoint:
  logLevel: fatal
  region: cn-hangzhou
  useVirtualHost: true
  requestTimeoutMs: 3000
  listObjectsMaxKeys: 0
"#;
        let cfg = Config::from_yaml_str(yaml).unwrap();
        assert_eq!(cfg.woodpecker.storage.kind, StorageType::Minio);
        assert_eq!(
            cfg.woodpecker.logstore.fence_policy.condition_write,
            ConditionWriteMode::Disable
        );
        let m = &cfg.minio;
        assert_eq!(m.endpoint_url(), "https://10.0.0.5:9100");
        assert_eq!(m.cloud_provider, CloudProvider::Aliyun);
        assert_eq!(m.effective_region(), "cn-hangzhou");
        assert!(m.use_virtual_host);
        assert!(!m.create_bucket);
        assert_eq!(m.root_path, "files/wp");
        assert!(
            !format!("{m:?}").contains("sk"),
            "secret must not be printed"
        );
    }

    #[test]
    fn storage_type_spellings() {
        for (text, kind) in [
            ("minio", StorageType::Minio),
            ("default", StorageType::Minio),
            ("\"\"", StorageType::Minio),
            ("local", StorageType::Local),
            ("service", StorageType::Service),
        ] {
            let yaml = format!("woodpecker:\n  storage:\n    type: {text}\n");
            let cfg = Config::from_yaml_str(&yaml).unwrap();
            assert_eq!(cfg.woodpecker.storage.kind, kind, "{text}");
        }
    }

    #[test]
    fn bad_storage_values_name_the_setting() {
        assert_eq!(storage_setting_of("minio:\n  port: abc\n"), "minio.port");
        assert_eq!(storage_setting_of("minio:\n  port: 0\n"), "minio.port");
        assert_eq!(
            storage_setting_of("minio:\n  bucketName: \"\"\n"),
            "minio.bucketName"
        );
        assert_eq!(
            storage_setting_of("minio:\n  bucketName: My_Bucket\n"),
            "minio.bucketName"
        );
        assert_eq!(
            storage_setting_of("minio:\n  rootPath: a//b\n"),
            "minio.rootPath"
        );
        assert_eq!(
            storage_setting_of("minio:\n  rootPath: a/../b\n"),
            "minio.rootPath"
        );
        assert_eq!(
            storage_setting_of("minio:\n  cloudProvider: ibm\n"),
            "minio.cloudProvider"
        );
        assert_eq!(
            storage_setting_of("minio:\n  accessKeyID: ak\n  secretAccessKey: \"\"\n"),
            "minio.secretAccessKey"
        );
        assert_eq!(
            storage_setting_of("minio:\n  requestTimeoutMs: 0\n"),
            "minio.requestTimeoutMs"
        );
        assert_eq!(
            storage_setting_of(
                "woodpecker:\n  logstore:\n    fencePolicy:\n      conditionWrite: sometimes\n"
            ),
            "woodpecker.logstore.fencePolicy.conditionWrite"
        );
        assert_eq!(
            storage_setting_of("woodpecker:\n  storage:\n    type: nfs\n"),
            "woodpecker.storage.type"
        );
        assert_eq!(
            storage_setting_of("woodpecker:\n  storage:\n    type: local\n    rootPath: \"\"\n"),
            "woodpecker.storage.rootPath"
        );
        // Not YAML at all.
        assert!(Config::from_yaml_str("minio: [unclosed").is_err());
    }

    #[test]
    fn local_storage_does_not_need_minio_credentials() {
        let yaml = "woodpecker:\n  storage:\n    type: local\n    rootPath: ./data\nminio:\n  bucketName: \"\"\n";
        Config::from_yaml_str(yaml).unwrap();
    }
}
