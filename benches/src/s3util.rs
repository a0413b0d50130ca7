//! Where the S3-compatible server of the probe is, and a raw `object_store` client for it.
//!
//! Settings come from the same environment variables as the tests (see [`S3Settings::from_env`]),
//! which `scripts/services start` prints. The client is built by the storage layer (which also
//! creates the bucket) with retries off and no decorators, so the probe measures the backend
//! itself.

use std::fmt;
use std::sync::Arc;

use anyhow::Context as _;
use object_store::ObjectStore;
use storage::config::{CloudProvider, MinioConfig};
use storage::object::retry::RetryPolicy;
use storage::object::{BuildOptions, build_object_storage};

/// Environment variable names shared with the test suite.
pub const ENV_ENDPOINT: &str = "WOODPECKER_TEST_S3_ENDPOINT";
/// Access key id for [`ENV_ENDPOINT`].
pub const ENV_ACCESS_KEY_ID: &str = "WOODPECKER_TEST_S3_ACCESS_KEY_ID";
/// Secret access key for [`ENV_ENDPOINT`].
pub const ENV_SECRET_ACCESS_KEY: &str = "WOODPECKER_TEST_S3_SECRET_ACCESS_KEY";
/// Signing region (MinIO accepts `us-east-1`).
pub const ENV_REGION: &str = "WOODPECKER_TEST_S3_REGION";
/// Name of the server behind the endpoint (`minio`, `moto`, ...), for reports only.
pub const ENV_SERVER: &str = "WOODPECKER_TEST_S3_SERVER";

/// Where an S3-compatible server is and how to talk to it.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://127.0.0.1:9000`; path-style requests are used.
    pub endpoint: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Signing region.
    pub region: String,
    /// Bucket to use.
    pub bucket: String,
    /// Server name for reports (`minio`), from [`ENV_SERVER`] when known.
    pub server: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("server", &self.server)
            .finish()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl S3Settings {
    /// Settings from `WOODPECKER_TEST_S3_ENDPOINT`, `..._ACCESS_KEY_ID`,
    /// `..._SECRET_ACCESS_KEY`, `..._REGION` (default `us-east-1`) and `..._SERVER`.
    /// `Ok(None)` when no endpoint is set; an error when the endpoint is set without keys.
    pub fn from_env(bucket: &str) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = env_nonempty(ENV_ENDPOINT) else {
            return Ok(None);
        };
        let access_key_id = env_nonempty(ENV_ACCESS_KEY_ID)
            .with_context(|| format!("{ENV_ENDPOINT} is set but {ENV_ACCESS_KEY_ID} is not"))?;
        let secret_access_key = env_nonempty(ENV_SECRET_ACCESS_KEY)
            .with_context(|| format!("{ENV_ENDPOINT} is set but {ENV_SECRET_ACCESS_KEY} is not"))?;
        Ok(Some(Self {
            endpoint,
            access_key_id,
            secret_access_key,
            region: env_nonempty(ENV_REGION).unwrap_or_else(|| "us-east-1".to_owned()),
            bucket: bucket.to_owned(),
            server: env_nonempty(ENV_SERVER),
        }))
    }

    /// A raw client for the bucket (created when missing): path-style, no retries (a probe must
    /// see failures, not hide them in its latencies), generous timeouts.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let cfg = MinioConfig {
            address: self.endpoint.clone(),
            port: 0,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            region: self.region.clone(),
            bucket_name: self.bucket.clone(),
            root_path: String::new(),
            cloud_provider: CloudProvider::Aws,
            create_bucket: true,
            request_timeout_ms: 300_000,
            ..MinioConfig::default()
        };
        let opts = BuildOptions {
            retry: Some(RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            }),
            ..BuildOptions::default()
        };
        let built = build_object_storage(&cfg, opts)
            .await
            .with_context(|| format!("connecting to {} bucket {}", self.endpoint, self.bucket))?;
        Ok(Arc::clone(built.storage.store()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let settings = S3Settings {
            endpoint: "http://127.0.0.1:9000".into(),
            access_key_id: "id".into(),
            secret_access_key: "very-secret".into(),
            region: "us-east-1".into(),
            bucket: "b".into(),
            server: None,
        };
        assert!(!format!("{settings:?}").contains("very-secret"));
    }
}
