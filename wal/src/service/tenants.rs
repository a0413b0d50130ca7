//! Tenants of a LogStore node: every request names the bucket and root path of the client's
//! own object-storage configuration (spec §3.3), and the node keeps one [`StagedStore`] per
//! pair: local segments under `<data dir>/<bucket>/<rootPath>/` and compaction into that bucket
//! under that root, through the node's own object-storage endpoint and credentials.
//!
//! Names are checked before they touch a path: a bucket is one path component of letters,
//! digits, `.`, `-` and `_`; a root path is one or more such components joined by `/` (leading
//! and trailing slashes ignored). A root component may not be all digits: log directories are,
//! and `root/5` must never be read as log 5 of tenant `root`. Anything else (`..`, empty
//! components, other characters) is refused with 2008 and creates nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use storage::config::{CloudProvider, MinioConfig};
use storage::object::{
    BackendKind, BuildOptions, Capabilities, ObjectStorage, build_object_storage,
};
use tokio::sync::{Mutex, OnceCell};

use super::error::{Result, ServiceError};
use crate::clock::ClockRef;
use crate::logstore::SyncPolicy;
use crate::logstore::staged::StagedStore;

/// A checked (bucket, root path) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant {
    /// The bucket.
    pub bucket: String,
    /// The root path, without leading or trailing slashes.
    pub root: String,
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.bucket, self.root)
    }
}

fn component_ok(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && c.len() <= 255
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Tenant {
    /// Checks the names a request carries.
    pub fn parse(bucket: &str, root_path: &str) -> Result<Tenant> {
        if !component_ok(bucket) {
            return Err(ServiceError::InvalidTenant(format!(
                "bucket_name `{bucket}` must be one path component of letters, digits, `.`, `-`, `_`"
            )));
        }
        let root = root_path.trim_matches('/');
        let root_component_ok = |c: &str| component_ok(c) && !c.bytes().all(|b| b.is_ascii_digit());
        if root.is_empty() || !root.split('/').all(root_component_ok) {
            return Err(ServiceError::InvalidTenant(format!(
                "root_path `{root_path}` must be components of letters, digits, `.`, `-`, `_` joined by `/`"
            )));
        }
        Ok(Tenant {
            bucket: bucket.to_string(),
            root: root.to_string(),
        })
    }

    /// `<data dir>/<bucket>/<root>`.
    pub fn dir(&self, data_dir: &std::path::Path) -> PathBuf {
        let mut d = data_dir.join(&self.bucket);
        for c in self.root.split('/') {
            d.push(c);
        }
        d
    }
}

/// What every tenant's store is built with.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// Root of the node's local data (`woodpecker.storage.rootPath` or `--data-dir`).
    pub data_dir: PathBuf,
    /// The node's object-storage endpoint and credentials; bucket and root path come from each
    /// request.
    pub minio: MinioConfig,
    /// Flush settings of local segments.
    pub sync_policy: SyncPolicy,
    /// Bytes of one merged block (`segmentCompactionPolicy.maxBytes`).
    pub compaction_max_bytes: usize,
}

type Slot = Arc<OnceCell<Arc<StagedStore>>>;

/// The node's tenants, opened on first use.
#[derive(Debug)]
pub struct Tenants {
    settings: TenantSettings,
    clock: ClockRef,
    map: Mutex<HashMap<Tenant, Slot>>,
    /// With `cloudProvider: memory`, one in-process store shared by every tenant (tests).
    memory: Option<Arc<dyn ObjectStore>>,
}

impl Tenants {
    /// No tenant open yet.
    pub fn new(settings: TenantSettings, clock: ClockRef) -> Tenants {
        let memory = (settings.minio.cloud_provider == CloudProvider::Memory)
            .then(|| Arc::new(object_store::memory::InMemory::new()) as Arc<dyn ObjectStore>);
        Tenants {
            settings,
            clock,
            map: Mutex::new(HashMap::new()),
            memory,
        }
    }

    /// No tenant open yet; every tenant's objects live in `store` (under its bucket and
    /// root), whatever `settings.minio` says. The seam for harnesses that run several nodes
    /// in one process over one shared, possibly fault-injecting, object store.
    pub fn with_object_store(
        settings: TenantSettings,
        clock: ClockRef,
        store: Arc<dyn ObjectStore>,
    ) -> Tenants {
        Tenants {
            settings,
            clock,
            map: Mutex::new(HashMap::new()),
            memory: Some(store),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &TenantSettings {
        &self.settings
    }

    /// The store of `tenant`, opened (object storage built, local journal replayed) on first
    /// use.
    pub async fn get(&self, tenant: &Tenant) -> Result<Arc<StagedStore>> {
        let slot = self
            .map
            .lock()
            .await
            .entry(tenant.clone())
            .or_default()
            .clone();
        slot.get_or_try_init(|| self.open(tenant))
            .await
            .map(Arc::clone)
    }

    /// The stores opened so far.
    pub async fn open_stores(&self) -> Vec<(Tenant, Arc<StagedStore>)> {
        self.map
            .lock()
            .await
            .iter()
            .filter_map(|(t, s)| s.get().map(|s| (t.clone(), s.clone())))
            .collect()
    }

    /// Opens every tenant that has local data under the data directory (a restart: journals
    /// are replayed and segments found before any request arrives). A tenant directory is one
    /// holding a `.journal` directory.
    pub(crate) async fn open_existing(&self) -> Vec<Tenant> {
        let mut found = Vec::new();
        let mut stack = vec![(self.settings.data_dir.clone(), Vec::<String>::new())];
        while let Some((dir, parts)) = stack.pop() {
            if parts.len() > 16 {
                continue;
            }
            let Ok(entries) = crate::clock::blocking::fs::read_dir(&dir).await else {
                continue;
            };
            let mut has_journal = false;
            for e in entries {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if name == ".journal" {
                    has_journal = true;
                } else if !name.starts_with('.') && name.parse::<i64>().is_err() {
                    let mut p = parts.clone();
                    p.push(name);
                    stack.push((e.path(), p));
                }
            }
            if has_journal
                && parts.len() >= 2
                && let Ok(t) = Tenant::parse(&parts[0], &parts[1..].join("/"))
            {
                found.push(t);
            }
        }
        let mut opened = Vec::new();
        for t in found {
            match self.get(&t).await {
                Ok(_) => opened.push(t),
                Err(e) => tracing::warn!(tenant = %t, error = %e, "cannot reopen tenant"),
            }
        }
        opened
    }

    async fn open(&self, tenant: &Tenant) -> Result<Arc<StagedStore>> {
        let storage_err = |detail: String| ServiceError::ObjectStorage {
            tenant: tenant.to_string(),
            detail,
        };
        let objects = match &self.memory {
            Some(store) => ObjectStorage::new(
                store.clone(),
                BackendKind::Memory,
                Capabilities {
                    user_metadata: true,
                },
                &tenant.bucket,
                &tenant.root,
            )
            .map_err(|e| storage_err(e.to_string()))?,
            None => {
                let mut cfg = self.settings.minio.clone();
                cfg.bucket_name = tenant.bucket.clone();
                cfg.root_path = tenant.root.clone();
                let opts = BuildOptions {
                    tenant_metrics: true,
                    ..BuildOptions::default()
                };
                build_object_storage(&cfg, opts)
                    .await
                    .map_err(|e| storage_err(e.to_string()))?
                    .storage
            }
        };
        let dir = tenant.dir(&self.settings.data_dir);
        let store = StagedStore::open(
            dir,
            objects,
            self.settings.sync_policy.clone(),
            self.settings.compaction_max_bytes,
            self.clock.clone(),
        )
        .map_err(ServiceError::Internal)?;
        tracing::info!(%tenant, "tenant opened");
        Ok(Arc::new(store))
    }

    /// Forgets a tenant (its store, if opened, is returned for the caller to close).
    pub async fn remove(&self, tenant: &Tenant) -> Option<Arc<StagedStore>> {
        let slot = self.map.lock().await.remove(tenant)?;
        slot.get().cloned()
    }

    /// Closes idle processors of every tenant; returns how many were closed.
    pub async fn close_idle(&self, max_idle: Duration) -> usize {
        let mut n = 0;
        for (_, s) in self.open_stores().await {
            n += s.close_idle(max_idle).await;
        }
        n
    }

    /// Closes every tenant's processors and journal.
    pub async fn close_all(&self) {
        for (_, s) in self.open_stores().await {
            s.close_all().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_checked_before_they_become_paths() {
        let t = Tenant::parse("a-bucket", "/files/wp/").unwrap();
        assert_eq!(t.root, "files/wp");
        assert_eq!(
            t.dir(std::path::Path::new("/d")),
            PathBuf::from("/d/a-bucket/files/wp")
        );
        for (b, r) in [
            ("", "files"),
            ("..", "files"),
            ("a/b", "files"),
            ("bucket", ""),
            ("bucket", "files/../x"),
            ("bucket", "files//x"),
            ("bucket", "files/x y"),
            ("bucket", "."),
            ("bucket", "files/5"),
        ] {
            let e = Tenant::parse(b, r).unwrap_err();
            assert_eq!(e.code(), 2008, "{b:?} {r:?}");
        }
    }
}
