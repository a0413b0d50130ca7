//! Object stores for segment data, with the write-once and fencing rules Woodpecker relies on.
//!
//! [`ObjectStorage`] wraps one `Arc<dyn ObjectStore>` (any backend of the `object_store` crate,
//! usually behind the decorators of this module) and a root prefix, the Go project's
//! `minio.rootPath`. Everything above this module speaks in keys relative to that root.
//!
//! The protocol it enforces:
//!
//! * **Write-once objects.** [`ObjectStorage::put_if_absent`] is a conditional create
//!   (`If-None-Match: *` on S3, its equivalent elsewhere). When the key is taken it says whose
//!   object stands there: [`Created::AlreadyOurs`] when the stored bytes are exactly ours (an
//!   earlier attempt of ours landed), [`Error::Fenced`] when a fence object stands there, and
//!   [`Error::AlreadyExists`] for anybody else's object.
//! * **Fence objects** are what Go Woodpecker writes: a one-byte body `F` with the user metadata
//!   `Fenced: true` (`x-amz-meta-fenced` on S3), created conditionally at the next block number.
//!   Backends that keep no user metadata (local files) mark a fence by its one-byte `F` body alone;
//!   no block can be one byte long, so the two can never be confused.
//! * **Condition writes can be off** (`fencePolicy.conditionWrite: disable`, or a store that failed
//!   the capability probe): creates become plain PUTs and single-writer safety moves to a lock in
//!   metadata. See [`probe`].
//!
//! It must never retry a conditional write blindly (see [`retry`]), and never report a
//! foreign object as ours.

mod build;
pub mod faults;
mod forbid_overwrite;
pub mod metrics;
pub mod probe;
pub mod retry;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload,
};

pub use build::{BuildOptions, Built, build_object_storage};
pub use object_store::ObjectMeta;

use crate::error::{Error, Result};

/// The body of a fence object.
pub const FENCE_BODY: &[u8] = b"F";
/// The user-metadata key marking a fence object (case-insensitive on read).
pub const FENCE_METADATA_KEY: &str = "Fenced";
/// The user-metadata value marking a fence object (case-sensitive, as Go compares it).
pub const FENCE_METADATA_VALUE: &str = "true";

/// What a backend can do, fixed when the store is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend stores and returns user metadata (`x-amz-meta-*` and equivalents).
    pub user_metadata: bool,
}

/// Which kind of backend sits under the decorators (for messages and metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// S3 or an S3-compatible server.
    S3,
    /// Google Cloud Storage, native API.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A directory on local disk.
    LocalFiles,
    /// Process memory (tests, ephemeral use).
    Memory,
}

impl BackendKind {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::S3 => "s3",
            BackendKind::Gcs => "gcs",
            BackendKind::Azure => "azure",
            BackendKind::LocalFiles => "local",
            BackendKind::Memory => "memory",
        }
    }
}

/// How a successful [`ObjectStorage::put_if_absent`] came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// This call created the object.
    New,
    /// The object already held exactly these bytes: an earlier attempt of ours landed.
    AlreadyOurs,
}

/// How a successful [`ObjectStorage::put_fence`] came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// This call placed the fence object.
    Placed,
    /// A fence object was already there (ours or another fencer's): the key is fenced either way.
    AlreadyFenced,
}

/// What stands at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a fence object.
    pub fenced: bool,
    /// The backend's entity tag, when it has one.
    pub e_tag: Option<String>,
}

/// One object store plus the root prefix every key is relative to.
///
/// Cheap to clone; clones share the store and the condition-write switch.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    root: String,
    kind: BackendKind,
    caps: Capabilities,
    condition_write: AtomicBool,
    bucket: String,
    /// Where the store is (scheme, host and port; no credentials), for messages only.
    endpoint: String,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("kind", &self.inner.kind)
            .field("bucket", &self.inner.bucket)
            .field("root", &self.inner.root)
            .field("condition_write", &self.condition_write_enabled())
            .field("store", &self.inner.store.to_string())
            .finish()
    }
}

impl ObjectStorage {
    /// Wraps a store. `root` is the key prefix (`minio.rootPath`; empty for none), `bucket` is
    /// used in messages only. Condition writes start enabled.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        kind: BackendKind,
        caps: Capabilities,
        bucket: impl Into<String>,
        root: &str,
    ) -> Result<Self> {
        crate::config::validate_root_path("minio.rootPath", root)?;
        Ok(ObjectStorage {
            inner: Arc::new(Inner {
                store,
                root: root.trim_matches('/').to_string(),
                kind,
                caps,
                condition_write: AtomicBool::new(true),
                bucket: bucket.into(),
                endpoint: String::new(),
            }),
        })
    }

    /// Names the store's endpoint (`scheme://host:port`, never with credentials) in messages
    /// such as "bucket `b` does not exist at http://host:9000". Call it right after
    /// [`new`](Self::new), before the storage is cloned; on a shared one it does nothing.
    pub fn with_endpoint(mut self, endpoint: &str) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.endpoint = crate::redact::urls(endpoint).into_owned();
        }
        self
    }

    /// The bucket name given at creation (used in messages).
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// An in-memory store, for tests and ephemeral use.
    pub fn in_memory(root: &str) -> Result<Self> {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            BackendKind::Memory,
            Capabilities {
                user_metadata: true,
            },
            "memory",
            root,
        )
    }

    /// The store under this wrapper (with its decorators).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The backend kind.
    pub fn kind(&self) -> BackendKind {
        self.inner.kind
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.caps
    }

    /// The root prefix (no leading or trailing slash; empty for none).
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// Whether creates are conditional. Off after `conditionWrite: disable` or a failed probe.
    pub fn condition_write_enabled(&self) -> bool {
        self.inner.condition_write.load(Ordering::Acquire)
    }

    /// Switches conditional creates on or off for this store and all its clones.
    pub fn set_condition_write(&self, enabled: bool) {
        self.inner.condition_write.store(enabled, Ordering::Release);
    }

    /// The full object path of a key relative to the root.
    pub fn path(&self, key: &str) -> Path {
        let key = key.trim_matches('/');
        if self.inner.root.is_empty() {
            Path::from(key)
        } else if key.is_empty() {
            Path::from(self.inner.root.as_str())
        } else {
            Path::from(format!("{}/{key}", self.inner.root))
        }
    }

    /// The key relative to the root of a full path (the inverse of [`Self::path`]).
    pub fn relative_key<'a>(&self, path: &'a Path) -> &'a str {
        let full = path.as_ref();
        if self.inner.root.is_empty() {
            return full;
        }
        full.strip_prefix(self.inner.root.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(full)
    }

    /// `bucket/root/key`, as messages name an object.
    pub fn describe(&self, key: &str) -> String {
        let path = self.path(key);
        if self.inner.bucket.is_empty() {
            path.to_string()
        } else {
            format!("{}/{}", self.inner.bucket, path)
        }
    }

    /// Stores `body` at `key`, replacing whatever is there.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.inner
            .store
            .put_opts(&self.path(key), body.into(), PutOptions::default())
            .await
            .map_err(|e| self.map_err("put", key, e))?;
        Ok(())
    }

    /// Creates `key` with `body` only if nothing is there (see the module docs).
    ///
    /// With condition writes off this is a plain PUT; on an error, an object of the same size at
    /// the key counts as our earlier attempt.
    pub async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Created> {
        if !self.condition_write_enabled() {
            return self.put_unconditional(key, body).await;
        }
        let opts = PutOptions::from(PutMode::Create);
        match self
            .inner
            .store
            .put_opts(&self.path(key), body.clone().into(), opts)
            .await
        {
            Ok(_) => Ok(Created::New),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.resolve_existing(key, &body).await
            }
            Err(e) => Err(self.map_err("conditional put", key, e)),
        }
    }

    async fn put_unconditional(&self, key: &str, body: Bytes) -> Result<Created> {
        let len = body.len() as u64;
        match self.put(key, body).await {
            Ok(()) => Ok(Created::New),
            Err(err) => match self.stat(key).await {
                Ok(Some(info)) if info.size == len && !info.fenced => Ok(Created::AlreadyOurs),
                _ => Err(err),
            },
        }
    }

    /// Works out whose object stands at `key` after a create found it taken.
    async fn resolve_existing(&self, key: &str, ours: &Bytes) -> Result<Created> {
        let (info, existing) = match self.get_with_info(key).await {
            Ok(found) => found,
            // Deleted between our create and this read: somebody else owns the key's history.
            Err(Error::NotFound { .. }) => {
                return Err(Error::AlreadyExists {
                    path: self.describe(key),
                });
            }
            Err(e) => return Err(e),
        };
        if info.fenced {
            Err(Error::Fenced {
                path: self.describe(key),
            })
        } else if existing == *ours {
            Ok(Created::AlreadyOurs)
        } else {
            Err(Error::AlreadyExists {
                path: self.describe(key),
            })
        }
    }

    /// Places a fence object at `key` (conditionally, so it never replaces data).
    ///
    /// An existing fence is success; an existing data object is [`Error::AlreadyExists`].
    pub async fn put_fence(&self, key: &str) -> Result<Fence> {
        let mut attributes = Attributes::new();
        if self.inner.caps.user_metadata {
            attributes.insert(
                Attribute::Metadata(FENCE_METADATA_KEY.into()),
                AttributeValue::from(FENCE_METADATA_VALUE),
            );
        }
        let conditional = self.condition_write_enabled();
        if !conditional {
            // Without conditional writes the best we can do is not to overwrite what we see.
            if let Some(info) = self.stat(key).await? {
                return self.existing_fence_outcome(key, &info);
            }
        }
        let opts = PutOptions {
            mode: if conditional {
                PutMode::Create
            } else {
                PutMode::Overwrite
            },
            attributes,
            ..PutOptions::default()
        };
        match self
            .inner
            .store
            .put_opts(&self.path(key), PutPayload::from_static(FENCE_BODY), opts)
            .await
        {
            Ok(_) => Ok(Fence::Placed),
            Err(object_store::Error::AlreadyExists { .. }) => match self.stat(key).await? {
                Some(info) => self.existing_fence_outcome(key, &info),
                None => Err(Error::AlreadyExists {
                    path: self.describe(key),
                }),
            },
            Err(e) => Err(self.map_err("fence put", key, e)),
        }
    }

    fn existing_fence_outcome(&self, key: &str, info: &ObjectInfo) -> Result<Fence> {
        if info.fenced {
            Ok(Fence::AlreadyFenced)
        } else {
            Err(Error::AlreadyExists {
                path: self.describe(key),
            })
        }
    }

    /// Size, fence mark and entity tag of `key`, or `None` when nothing is there.
    pub async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let opts = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = match self.inner.store.get_opts(&self.path(key), opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.map_err("head", key, e)),
        };
        let size = result.meta.size;
        let e_tag = result.meta.e_tag.clone();
        let fenced = if self.inner.caps.user_metadata {
            has_fence_metadata(&result.attributes)
        } else if size == FENCE_BODY.len() as u64 {
            // No metadata on this backend: a one-byte `F` body is the fence mark.
            match self.get(key).await {
                Ok(body) => body.as_ref() == FENCE_BODY,
                Err(Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        } else {
            false
        };
        Ok(Some(ObjectInfo {
            size,
            fenced,
            e_tag,
        }))
    }

    /// The whole object at `key` and what it is, in one request where the backend allows.
    pub(crate) async fn get_with_info(&self, key: &str) -> Result<(ObjectInfo, Bytes)> {
        let result = self
            .inner
            .store
            .get_opts(&self.path(key), GetOptions::default())
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        let attributes = result.attributes.clone();
        let e_tag = result.meta.e_tag.clone();
        let body = result
            .bytes()
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        let fenced = if self.inner.caps.user_metadata {
            has_fence_metadata(&attributes)
        } else {
            body.as_ref() == FENCE_BODY
        };
        Ok((
            ObjectInfo {
                size: body.len() as u64,
                fenced,
                e_tag,
            },
            body,
        ))
    }

    /// The whole object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let result = self
            .inner
            .store
            .get_opts(&self.path(key), GetOptions::default())
            .await
            .map_err(|e| self.map_err("get", key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.map_err("get", key, e))
    }

    /// Bytes `range` of the object at `key`. A range past the end is an error.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .inner
            .store
            .get_ranges(&self.path(key), std::slice::from_ref(&range))
            .await
            .map_err(|e| self.map_err("range get", key, e))?
            .pop()
            .unwrap_or_default();
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                self.describe(key),
                format!(
                    "range {}..{} returned {} bytes",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Every object under `prefix` (relative to the root), sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let path = self.path(prefix);
        let prefix_path = if path.as_ref().is_empty() {
            None
        } else {
            Some(&path)
        };
        let mut all: Vec<ObjectMeta> = self
            .inner
            .store
            .list(prefix_path)
            .try_collect()
            .await
            .map_err(|e| self.map_err("list", prefix, e))?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(all)
    }

    /// Deletes `key`. Deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let locations = futures::stream::iter([Ok(self.path(key))]).boxed();
        let results: Vec<_> = self.inner.store.delete_stream(locations).collect().await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.map_err("delete", key, e)),
            }
        }
        Ok(())
    }

    /// Maps a backend error to this crate's contract; a missing bucket is named with the
    /// store's endpoint.
    pub(crate) fn map_err(&self, op: &'static str, key: &str, e: object_store::Error) -> Error {
        if is_missing_bucket(&e) {
            let at = if self.inner.endpoint.is_empty() {
                String::new()
            } else {
                format!(" at {}", self.inner.endpoint)
            };
            return Error::config(
                "minio.bucketName",
                format!(
                    "bucket `{}` does not exist{at} ({op} of {}); create it or set minio.createBucket: true",
                    self.inner.bucket,
                    self.describe(key)
                ),
            );
        }
        map_store_error(op, self.describe(key), e)
    }
}

/// Whether user metadata marks a fence: key `Fenced` in any case, value exactly `true`.
pub(crate) fn has_fence_metadata(attributes: &Attributes) -> bool {
    attributes.iter().any(|(k, v)| match k {
        Attribute::Metadata(name) => {
            name.eq_ignore_ascii_case(FENCE_METADATA_KEY) && v.as_ref() == FENCE_METADATA_VALUE
        }
        _ => false,
    })
}

/// Maps an `object_store` error to [`Error`], classifying what may pass as transient. The
/// backend's message is kept as text with the query strings and user info of URLs removed
/// ([`crate::redact::urls`]): an HTTP client's error quotes the URL it failed on.
pub(crate) fn map_store_error(op: &'static str, path: String, e: object_store::Error) -> Error {
    use object_store::Error as E;
    let text = crate::redact::urls(&e.to_string()).into_owned();
    if is_transient(&e) {
        return Error::Transient {
            op,
            path,
            source: text.into(),
        };
    }
    let missing_bucket = is_missing_bucket(&e);
    match e {
        E::NotFound { .. } if missing_bucket => Error::config(
            "minio.bucketName",
            format!(
                "the bucket does not exist ({path}); create it or set minio.createBucket: true"
            ),
        ),
        E::NotFound { .. } => Error::NotFound { path },
        E::AlreadyExists { .. } => Error::AlreadyExists { path },
        E::NotSupported { .. } | E::NotImplemented { .. } => Error::Unsupported {
            what: format!("{op} on {path}: {text}"),
        },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::config(
            "minio.accessKeyID",
            format!(
                "the store refused the credentials for {op} on {path} (check minio.accessKeyID, minio.secretAccessKey or minio.useIAM): {text}"
            ),
        ),
        _ => Error::Backend {
            op,
            path,
            source: text.into(),
        },
    }
}

/// Whether the store said the bucket (or Azure container) does not exist.
fn is_missing_bucket(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::NotFound { .. }) {
        return false;
    }
    let text = e.to_string();
    text.contains("NoSuchBucket") || text.contains("ContainerNotFound")
}

/// Whether an `object_store` error may pass on its own: connection trouble, timeouts, throttling,
/// server errors, and faults injected as transient.
pub(crate) fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    let E::Generic { source, .. } = e else {
        return false;
    };
    if let Some(fault) = source.downcast_ref::<faults::InjectedFault>() {
        return fault.transient;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cause {
        if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            if matches!(
                http.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    let text = source.to_string();
    const MARKERS: [&str; 9] = [
        "status code: 5",
        "status code: 429",
        "status code: 408",
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "connection reset",
        "timed out",
    ];
    MARKERS.iter().any(|m| text.contains(m))
}

/// Whether a failure of `e` proves the request never reached the server, so that even a
/// non-idempotent request may be sent again.
pub(crate) fn is_not_sent(e: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = e else {
        return false;
    };
    if let Some(fault) = source.downcast_ref::<faults::InjectedFault>() {
        return fault.transient && !fault.applied;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cause {
        if let Some(http) = err.downcast_ref::<object_store::client::HttpError>() {
            return matches!(http.kind(), object_store::client::HttpErrorKind::Connect);
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_root() {
        let s = ObjectStorage::in_memory("files/wp").unwrap();
        assert_eq!(s.path("6/23/0.blk").as_ref(), "files/wp/6/23/0.blk");
        assert_eq!(s.path("/6/23/").as_ref(), "files/wp/6/23");
        assert_eq!(s.relative_key(&s.path("6/23/0.blk")), "6/23/0.blk");
        let bare = ObjectStorage::in_memory("").unwrap();
        assert_eq!(bare.path("1/0/footer.blk").as_ref(), "1/0/footer.blk");
        assert!(ObjectStorage::in_memory("a/../b").is_err());
    }

    #[test]
    fn fence_metadata_is_case_insensitive_on_the_key_only() {
        let mut a = Attributes::new();
        a.insert(Attribute::Metadata("fenced".into()), "true".into());
        assert!(has_fence_metadata(&a));
        let mut b = Attributes::new();
        b.insert(Attribute::Metadata("FENCED".into()), "True".into());
        assert!(!has_fence_metadata(&b));
        assert!(!has_fence_metadata(&Attributes::new()));
    }
}
