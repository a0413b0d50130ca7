//! The global options every command shares (and, later, `serve`): where the configuration
//! comes from. The engine itself is assembled by `wal::engine`.
//!
//! Precedence of settings: `--data-dir` > `WOODPECKER_CONFIG__...` environment variables >
//! the `--config` file > the built-in defaults. Without `--config` the built-in default is
//! [`DEFAULT_YAML`]: local-disk segments under the data directory and the embedded metadata
//! store in `<data dir>/meta`.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, anyhow};
use wal::clock::SystemClock;
use wal::config::Config;
pub(crate) use wal::engine::Engine;

/// The data directory when neither `--data-dir` nor `--config` says otherwise.
pub(crate) const DEFAULT_DATA_DIR: &str = "./data";

/// The prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "WOODPECKER_CONFIG__";

/// The configuration used without `--config`: everything in one process, nothing to install.
pub(crate) const DEFAULT_YAML: &str = wal::config::EMBEDDED_DEFAULT_YAML;

/// The secret values of the configuration in use (`minio.secretAccessKey`,
/// `minio.gcpCredentialJSON`, `etcd.auth.password`), so that an error text can be cleaned of
/// them before it is printed ([`redact`]).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `text` without credentials: URL query strings and user info, and the configured secrets.
pub(crate) fn redact(text: &str) -> String {
    let text = storage::redact::urls(text);
    let secrets = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    storage::redact::secrets(&text, &secrets).into_owned()
}

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
    *SECRETS.lock().unwrap_or_else(PoisonError::into_inner) = [
        &cfg.minio.secret_access_key,
        &cfg.minio.gcp_credential_json,
        &cfg.etcd.auth.password,
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .cloned()
    .collect();
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

/// Opens the engine the global options describe.
pub(crate) async fn open(opts: &EngineOptions) -> anyhow::Result<Engine> {
    let config = load_config(opts)?;
    Ok(Engine::open(config, SystemClock::shared()).await?)
}
