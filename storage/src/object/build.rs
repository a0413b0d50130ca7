//! Building an [`ObjectStorage`] from the `minio:` section.
//!
//! | `cloudProvider` | backend | conditional create |
//! |---|---|---|
//! | `aws`, `minio` | S3 API, path-style unless `useVirtualHost` | `If-None-Match: *` |
//! | `gcp` | GCS through its S3-interoperable endpoint, HMAC keys | `If-None-Match: *` (the probe decides whether it holds) |
//! | `gcpnative` | GCS JSON API, service-account JSON or ambient credentials | `x-goog-if-generation-match: 0` |
//! | `aliyun`, `tencent` | S3 API, virtual-host style | `x-oss-` / `x-cos-forbid-overwrite: true` |
//! | `azure` | Blob Storage; `accessKeyID` = account, `secretAccessKey` = key | `If-None-Match: *` |
//! | `local` (extension) | a directory named by `address` | atomic link |
//! | `memory` (extension) | process memory | in-process check |
//!
//! The raw backend is wrapped, innermost first, in optional fault injection, counters,
//! retries and the Prometheus metrics ([`super::metrics::MeteredStore`]); the backend's own retries are turned off so that [`super::retry`] is the only layer
//! that decides what may be sent twice.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::faults::FaultInjectingStore;
use super::forbid_overwrite::ForbidOverwriteStore;
use super::metrics::{CountingStore, MeteredStore, StoreCounters};
use super::retry::{RetryPolicy, RetryingStore};
use super::{BackendKind, Capabilities, ObjectStorage};
use crate::config::{CloudProvider, MinioConfig};
use crate::error::{Error, Result};

/// Knobs of [`build_object_storage`] that are not in the YAML.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Retry policy (default: [`RetryPolicy::default`]); `max_retries: 0` disables retries.
    pub retry: Option<RetryPolicy>,
    /// Counters to count backend requests into.
    pub counters: Option<Arc<StoreCounters>>,
    /// Wrap the backend in a fault injector with this seed (tests).
    pub fault_seed: Option<u64>,
    /// Label the store's metrics with its own `log_ns` (`<bucket>/<root path>`) rather than
    /// the process's: set by a service-mode node, which holds one store per tenant.
    pub tenant_metrics: bool,
}

/// The result of a build: the storage and, when asked for, the fault injector under it.
#[derive(Debug, Clone)]
pub struct Built {
    /// The storage to use.
    pub storage: ObjectStorage,
    /// The fault injector, when [`BuildOptions::fault_seed`] was set.
    pub faults: Option<FaultInjectingStore>,
}

/// Builds the object storage described by `cfg`, creating the bucket when `createBucket` is set
/// (S3-compatible stores) or checking that it exists (GCS, Azure).
///
/// Errors name the setting to fix: a malformed value, an unreachable endpoint
/// (`minio.address` / `minio.port`), refused credentials, or a missing bucket
/// (`minio.bucketName`).
pub async fn build_object_storage(cfg: &MinioConfig, opts: BuildOptions) -> Result<Built> {
    cfg.validate()?;
    let (raw, kind, caps, s3_for_bucket) = raw_store(cfg)?;
    let mut store: Arc<dyn ObjectStore> = raw;
    let mut faults = None;
    if let Some(seed) = opts.fault_seed {
        let f = FaultInjectingStore::new(store, seed);
        faults = Some(f.clone());
        store = Arc::new(f);
    }
    if let Some(counters) = opts.counters {
        store = Arc::new(CountingStore::new(store, counters));
    }
    let policy = opts.retry.unwrap_or_default();
    if policy.max_retries > 0 {
        store = Arc::new(RetryingStore::new(store, policy));
    }
    let mut metered = MeteredStore::new(store, &cfg.root_path);
    if opts.tenant_metrics {
        metered = metered.with_log_namespace(&format!("{}/{}", cfg.bucket_name, cfg.root_path));
    }
    store = Arc::new(metered);
    let storage = ObjectStorage::new(store, kind, caps, &cfg.bucket_name, &cfg.root_path)?
        .with_endpoint(&store_location(cfg));
    if cfg.create_bucket {
        match s3_for_bucket {
            Some(s3) => ensure_s3_bucket(cfg, &s3).await?,
            None => check_bucket(cfg, &storage).await?,
        }
    }
    Ok(Built { storage, faults })
}

type RawStore = (
    Arc<dyn ObjectStore>,
    BackendKind,
    Capabilities,
    Option<object_store::aws::AmazonS3>,
);

fn raw_store(cfg: &MinioConfig) -> Result<RawStore> {
    let with_metadata = Capabilities {
        user_metadata: true,
    };
    match cfg.cloud_provider {
        CloudProvider::Memory => Ok((
            Arc::new(InMemory::new()),
            BackendKind::Memory,
            with_metadata,
            None,
        )),
        CloudProvider::Local => Ok((
            Arc::new(local_fs(std::path::Path::new(cfg.address.trim()))?),
            BackendKind::LocalFiles,
            Capabilities {
                user_metadata: false,
            },
            None,
        )),
        CloudProvider::Aws | CloudProvider::Minio | CloudProvider::Gcp => {
            let s3 = s3_builder(cfg, false)?
                .build()
                .map_err(|e| Error::config("minio.address", e.to_string()))?;
            Ok((
                Arc::new(s3.clone()),
                BackendKind::S3,
                with_metadata,
                Some(s3),
            ))
        }
        CloudProvider::Aliyun | CloudProvider::Tencent => {
            let header = if cfg.cloud_provider == CloudProvider::Aliyun {
                "x-oss-forbid-overwrite"
            } else {
                "x-cos-forbid-overwrite"
            };
            let plain = s3_builder(cfg, true)?
                .build()
                .map_err(|e| Error::config("minio.address", e.to_string()))?;
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::HeaderName::from_static(header),
                http::HeaderValue::from_static("true"),
            );
            let forbidding = s3_builder(cfg, true)?
                .with_client_options(client_options(cfg)?.with_default_headers(headers))
                .build()
                .map_err(|e| Error::config("minio.address", e.to_string()))?;
            let store = ForbidOverwriteStore::new(Arc::new(plain.clone()), Arc::new(forbidding));
            Ok((Arc::new(store), BackendKind::S3, with_metadata, Some(plain)))
        }
        CloudProvider::Gcpnative => {
            let mut b = if cfg.gcp_credential_json.trim().is_empty() || cfg.use_iam {
                GoogleCloudStorageBuilder::from_env()
            } else {
                GoogleCloudStorageBuilder::new().with_service_account_key(&cfg.gcp_credential_json)
            };
            b = b
                .with_bucket_name(&cfg.bucket_name)
                .with_client_options(client_options(cfg)?)
                .with_retry(no_retries());
            let gcs = b
                .build()
                .map_err(|e| Error::config("minio.gcpCredentialJSON", e.to_string()))?;
            Ok((Arc::new(gcs), BackendKind::Gcs, with_metadata, None))
        }
        CloudProvider::Azure => {
            let mut b = if cfg.use_iam {
                MicrosoftAzureBuilder::from_env()
            } else {
                MicrosoftAzureBuilder::new()
                    .with_account(&cfg.access_key_id)
                    .with_access_key(&cfg.secret_access_key)
            };
            b = b
                .with_container_name(&cfg.bucket_name)
                .with_client_options(client_options(cfg)?)
                .with_retry(no_retries());
            let address = cfg.address.trim();
            if !address.is_empty() && !address.contains("windows.net") && address != "localhost" {
                // A private endpoint or an emulator (Azurite): account in the path.
                b = b
                    .with_endpoint(format!("{}/{}", cfg.endpoint_url(), cfg.access_key_id))
                    .with_allow_http(!cfg.use_ssl);
            }
            let azure = b
                .build()
                .map_err(|e| Error::config("minio.address", e.to_string()))?;
            Ok((Arc::new(azure), BackendKind::Azure, with_metadata, None))
        }
    }
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn client_options(cfg: &MinioConfig) -> Result<ClientOptions> {
    let mut options = ClientOptions::new()
        .with_timeout(Duration::from_millis(cfg.request_timeout_ms))
        .with_connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
        .with_allow_http(!cfg.use_ssl);
    if cfg.use_ssl && !cfg.ssl.tls_ca_cert.is_empty() {
        let pem = std::fs::read(&cfg.ssl.tls_ca_cert).map_err(|e| {
            Error::config(
                "minio.ssl.tlsCACert",
                format!("cannot read {}: {e}", cfg.ssl.tls_ca_cert),
            )
        })?;
        let cert = object_store::Certificate::from_pem(&pem)
            .map_err(|e| Error::config("minio.ssl.tlsCACert", e.to_string()))?;
        options = options.with_root_certificate(cert);
    }
    Ok(options)
}

fn s3_builder(cfg: &MinioConfig, virtual_host_default: bool) -> Result<AmazonS3Builder> {
    let mut b = if cfg.use_iam {
        let b = AmazonS3Builder::from_env();
        if cfg.iam_endpoint.trim().is_empty() {
            b
        } else {
            b.with_metadata_endpoint(cfg.iam_endpoint.trim())
        }
    } else {
        AmazonS3Builder::new()
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
    };
    let virtual_host = cfg.use_virtual_host || virtual_host_default;
    let endpoint = cfg.endpoint_url();
    let endpoint = if virtual_host {
        // Virtual-host style wants the bucket in the host name.
        let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", &endpoint));
        format!("{scheme}://{}.{host}", cfg.bucket_name)
    } else {
        endpoint
    };
    b = b
        .with_endpoint(endpoint)
        .with_bucket_name(&cfg.bucket_name)
        .with_region(cfg.effective_region())
        .with_virtual_hosted_style_request(virtual_host)
        .with_allow_http(!cfg.use_ssl)
        .with_client_options(client_options(cfg)?)
        .with_retry(no_retries());
    Ok(b)
}

/// Creates the bucket of an S3-compatible store when it is missing.
///
/// `object_store` has no bucket API, so the two bucket requests go out as pre-signed URLs made by
/// the store's own signer: `HEAD /<bucket>/` and `PUT /<bucket>/`.
async fn ensure_s3_bucket(cfg: &MinioConfig, s3: &object_store::aws::AmazonS3) -> Result<()> {
    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)));
    if cfg.use_ssl && !cfg.ssl.tls_ca_cert.is_empty() {
        let pem = std::fs::read(&cfg.ssl.tls_ca_cert).map_err(|e| {
            Error::config(
                "minio.ssl.tlsCACert",
                format!("cannot read {}: {e}", cfg.ssl.tls_ca_cert),
            )
        })?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| Error::config("minio.ssl.tlsCACert", e.to_string()))?;
        client = client.add_root_certificate(cert);
    }
    let client = client
        .build()
        .map_err(|e| Error::config("minio.useSSL", e.to_string()))?;
    let endpoint = cfg.endpoint_url();
    // The request URLs are pre-signed: their query strings hold the access key id and a
    // signature, so an error names the endpoint and never the URL.
    let unreachable = |e: reqwest::Error| {
        let e = e.without_url();
        let cause = crate::redact::urls(&error_chain(&e)).into_owned();
        Error::config(
            "minio.address",
            format!(
                "cannot reach the object store at {endpoint} (check minio.address, minio.port and minio.useSSL): {cause}"
            ),
        )
    };
    let root = Path::from("");
    let head_url = s3
        .signed_url(http::Method::HEAD, &root, Duration::from_secs(300))
        .await
        .map_err(|e| Error::config("minio.accessKeyID", crate::redact::urls(&e.to_string())))?;
    let head = client
        .head(head_url.as_str())
        .send()
        .await
        .map_err(unreachable)?;
    match head.status().as_u16() {
        200 => return Ok(()),
        404 => {}
        401 | 403 => {
            return Err(Error::config(
                "minio.accessKeyID",
                format!(
                    "the store at {endpoint} refused the credentials for bucket `{}` (HTTP {}); check minio.accessKeyID and minio.secretAccessKey",
                    cfg.bucket_name,
                    head.status()
                ),
            ));
        }
        other => {
            return Err(Error::config(
                "minio.address",
                format!(
                    "unexpected HTTP {other} from {endpoint} checking bucket `{}`",
                    cfg.bucket_name
                ),
            ));
        }
    }
    let put_url = s3
        .signed_url(http::Method::PUT, &root, Duration::from_secs(300))
        .await
        .map_err(|e| Error::config("minio.accessKeyID", crate::redact::urls(&e.to_string())))?;
    let put = client
        .put(put_url.as_str())
        .send()
        .await
        .map_err(unreachable)?;
    let status = put.status();
    if status.is_success() {
        tracing::info!(bucket = %cfg.bucket_name, %endpoint, "created bucket");
        return Ok(());
    }
    let body = put.text().await.unwrap_or_default();
    // A racing creator may have made it first.
    if body.contains("BucketAlreadyOwnedByYou") {
        return Ok(());
    }
    Err(Error::config(
        "minio.bucketName",
        format!(
            "bucket `{}` does not exist at {endpoint} and could not be created (HTTP {status}): {}",
            cfg.bucket_name,
            crate::redact::urls(body.trim())
        ),
    ))
}

/// An error and its causes, `: `-separated (reqwest's own text stops at the outermost one).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Where the store is, for messages: the endpoint URL of S3-compatible stores and private
/// Azure endpoints, the directory of `local`, the provider otherwise.
fn store_location(cfg: &MinioConfig) -> String {
    match cfg.cloud_provider {
        CloudProvider::Memory => "memory".to_string(),
        CloudProvider::Local => cfg.address.trim().to_string(),
        CloudProvider::Gcpnative => "Google Cloud Storage".to_string(),
        CloudProvider::Azure if cfg.address.trim().is_empty() => "Azure Blob Storage".to_string(),
        _ => cfg.endpoint_url(),
    }
}

/// Checks that the bucket of a GCS or Azure store exists (they are not created automatically).
async fn check_bucket(cfg: &MinioConfig, storage: &ObjectStorage) -> Result<()> {
    if matches!(
        storage.kind(),
        BackendKind::Memory | BackendKind::LocalFiles
    ) {
        return Ok(());
    }
    let root = storage.path("");
    let prefix = (!root.as_ref().is_empty()).then_some(&root);
    match storage.store().list_with_delimiter(prefix).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => Err(Error::config(
            "minio.bucketName",
            format!(
                "bucket `{}` does not exist; create it first (automatic creation covers S3-compatible stores only)",
                cfg.bucket_name
            ),
        )),
        Err(e) => Err(storage.map_err("list", "", e)),
    }
}

impl ObjectStorage {
    /// The object layout in a local directory (no user metadata: fences are marked by body).
    pub fn local_dir(dir: impl AsRef<std::path::Path>, root: &str) -> Result<Self> {
        ObjectStorage::new(
            Arc::new(local_fs(dir.as_ref())?),
            BackendKind::LocalFiles,
            Capabilities {
                user_metadata: false,
            },
            "",
            root,
        )
    }
}

fn local_fs(dir: &std::path::Path) -> Result<LocalFileSystem> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::config(
            "minio.address",
            format!("cannot create directory {}: {e}", dir.display()),
        )
    })?;
    Ok(LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| Error::config("minio.address", e.to_string()))?
        .with_automatic_cleanup(true))
}
