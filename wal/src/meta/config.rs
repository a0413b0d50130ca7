//! Choosing and opening the metadata store from `woodpecker.meta` and `etcd:`.
//!
//! `woodpecker.meta.type` is `etcd` in the Go schema (its only value there, and the default when
//! a YAML file leaves it out); this project adds `embedded`, the single-process store that the
//! zero-configuration `woodpecker serve` uses. The root of every key is chosen by
//! `woodpecker.meta.prefixMode` (this project's extension, [`super::prefix`]) between the fixed
//! `woodpecker` of published Go Woodpecker and `<etcd.rootPath>/<woodpecker.meta.prefix>`, the
//! same way for both stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::embedded::EmbeddedKv;
use super::error::{MetaError, MetaResult};
use super::etcd::{EtcdConfig, EtcdKv};
use super::kv::Kv;
use super::prefix::PrefixMode;
use super::provider::{KvMetadata, MetadataProvider};
use crate::clock::ClockRef;

/// `woodpecker.meta.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaType {
    /// A real etcd, configured by the `etcd:` section.
    #[default]
    Etcd,
    /// The embedded single-process store (this project's extension).
    Embedded,
}

/// `woodpecker.meta`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetaSection {
    /// `type`: `etcd` or `embedded`.
    #[serde(rename = "type")]
    pub kind: MetaType,
    /// `prefix`: joined to `etcd.rootPath` to form the configured key root (default
    /// `woodpecker`).
    pub prefix: String,
    /// `prefixMode`: `auto`, `legacy` or `configured` (this project's extension; see
    /// [`super::prefix`]).
    pub prefix_mode: PrefixMode,
    /// `embeddedDir`: directory of the embedded store (default: `meta` under the data root).
    pub embedded_dir: String,
}

impl Default for MetaSection {
    fn default() -> Self {
        MetaSection {
            kind: MetaType::Etcd,
            prefix: "woodpecker".into(),
            prefix_mode: PrefixMode::Auto,
            embedded_dir: String::new(),
        }
    }
}

impl MetaSection {
    /// The embedded store's directory: `embeddedDir`, or `<data_root>/meta`.
    pub(crate) fn embedded_dir(&self, data_root: &Path) -> PathBuf {
        if self.embedded_dir.trim().is_empty() {
            data_root.join("meta")
        } else {
            PathBuf::from(self.embedded_dir.trim())
        }
    }
}

/// Opens the configured store, chooses the key root by `woodpecker.meta.prefixMode` and
/// initialises it if needed.
///
/// Errors name what to fix: an `etcd.*` setting, an unreachable etcd (its endpoints), an
/// embedded directory that another process holds, or keys under both candidate roots
/// ([`MetaError::PrefixConflict`]).
pub async fn open_metadata(
    meta: &MetaSection,
    etcd: &EtcdConfig,
    data_root: &Path,
    clock: ClockRef,
) -> MetaResult<Arc<KvMetadata>> {
    let kv = open_kv(meta, etcd, data_root, clock.clone()).await?;
    let provider =
        KvMetadata::open(kv, &etcd.root_path, &meta.prefix, meta.prefix_mode, clock).await?;
    provider.init_if_necessary().await?;
    Ok(Arc::new(provider))
}

/// Opens the configured key-value store, without choosing a prefix or writing anything.
pub async fn open_kv(
    meta: &MetaSection,
    etcd: &EtcdConfig,
    data_root: &Path,
    clock: ClockRef,
) -> MetaResult<Arc<dyn Kv>> {
    Ok(match meta.kind {
        MetaType::Etcd => {
            if let Err(e) = etcd.validate() {
                return Err(MetaError::Rejected(e.to_string()));
            }
            Arc::new(EtcdKv::connect(etcd).await?)
        }
        MetaType::Embedded => {
            Arc::new(EmbeddedKv::open(meta.embedded_dir(data_root), clock).await?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn reads_the_go_section_and_the_extension() {
        let go: MetaSection = serde_yaml_ng::from_str("type: etcd\nprefix: woodpecker\n").unwrap();
        assert_eq!(go, MetaSection::default());
        let ours: MetaSection = serde_yaml_ng::from_str(
            "type: embedded\nembeddedDir: /srv/wp-meta\nprefixMode: configured\n",
        )
        .unwrap();
        assert_eq!(ours.kind, MetaType::Embedded);
        assert_eq!(ours.prefix_mode, PrefixMode::Configured);
        assert_eq!(MetaSection::default().prefix_mode, PrefixMode::Auto);
        assert_eq!(
            ours.embedded_dir(Path::new("/data")),
            PathBuf::from("/srv/wp-meta")
        );
        assert_eq!(
            MetaSection::default().embedded_dir(Path::new("/data")),
            PathBuf::from("/data/meta")
        );
        assert!(serde_yaml_ng::from_str::<MetaSection>("type: zookeeper\n").is_err());
    }

    #[tokio::test]
    async fn opens_and_initialises_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaSection {
            kind: MetaType::Embedded,
            ..MetaSection::default()
        };
        let clock: ClockRef = Arc::new(ManualClock::new(1_000));
        let provider = open_metadata(&meta, &EtcdConfig::default(), dir.path(), clock.clone())
            .await
            .unwrap();
        // A fresh store takes the prefix published Go Woodpecker uses.
        assert_eq!(provider.prefix(), "woodpecker");
        assert_eq!(provider.create_log("a").await.unwrap().log_id, 1);
        assert!(dir.path().join("meta").is_dir());
        drop(provider);
        // Reopened: the log is still there.
        let again = open_metadata(&meta, &EtcdConfig::default(), dir.path(), clock)
            .await
            .unwrap();
        assert_eq!(again.list_logs().await.unwrap(), ["a"]);
    }

    #[tokio::test]
    async fn a_store_initialised_under_the_configured_prefix_stays_there() {
        // Stores written before `auto` existed keep `by-dev/woodpecker`: no migration.
        let dir = tempfile::tempdir().unwrap();
        let clock: ClockRef = Arc::new(ManualClock::new(1_000));
        let configured = MetaSection {
            kind: MetaType::Embedded,
            prefix_mode: PrefixMode::Configured,
            ..MetaSection::default()
        };
        let first = open_metadata(
            &configured,
            &EtcdConfig::default(),
            dir.path(),
            clock.clone(),
        )
        .await
        .unwrap();
        assert_eq!(first.prefix(), "by-dev/woodpecker");
        first.create_log("old").await.unwrap();
        drop(first);
        let auto = MetaSection {
            kind: MetaType::Embedded,
            ..MetaSection::default()
        };
        let again = open_metadata(&auto, &EtcdConfig::default(), dir.path(), clock)
            .await
            .unwrap();
        assert_eq!(again.prefix(), "by-dev/woodpecker");
        assert_eq!(again.list_logs().await.unwrap(), ["old"]);
    }

    #[tokio::test]
    async fn a_bad_etcd_section_is_refused_naming_the_setting() {
        let etcd = EtcdConfig {
            endpoints: vec![],
            ..EtcdConfig::default()
        };
        let clock: ClockRef = Arc::new(ManualClock::new(0));
        let err = open_metadata(&MetaSection::default(), &etcd, Path::new("."), clock)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("etcd.endpoints"), "{err}");
    }
}
