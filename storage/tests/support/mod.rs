//! Backends for the storage tests.
//!
//! The S3 backend is the server `scripts/test` starts (MinIO), described by
//! `WOODPECKER_TEST_S3_*` variables. A test that needs it fails, loudly, when they are missing.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use storage::config::{CloudProvider, MinioConfig};
use storage::object::metrics::StoreCounters;
use storage::object::retry::RetryPolicy;
use storage::object::{BuildOptions, ObjectStorage, build_object_storage};

/// The bucket every S3 test shares; each test works under its own random root.
pub const TEST_BUCKET: &str = "woodpecker-test";

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the S3-compatible server that `scripts/test` starts \
             (or run `eval \"$(scripts/services start)\"` first)"
        )
    })
}

/// Which S3 server the environment points at (`minio` or `moto`).
pub fn s3_server() -> String {
    required("WOODPECKER_TEST_S3_ENDPOINT");
    std::env::var("WOODPECKER_TEST_S3_SERVER").unwrap_or_else(|_| "minio".into())
}

/// The `minio:` section for the test server.
pub fn s3_config(root: &str) -> MinioConfig {
    MinioConfig {
        address: required("WOODPECKER_TEST_S3_ENDPOINT"),
        port: 0,
        access_key_id: required("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: required("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
        region: std::env::var("WOODPECKER_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        bucket_name: TEST_BUCKET.into(),
        root_path: root.into(),
        cloud_provider: CloudProvider::Aws,
        ..MinioConfig::default()
    }
}

/// A fresh random root prefix.
pub fn fresh_root(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Storage on the test S3 server under a fresh root.
pub async fn s3(root: &str) -> ObjectStorage {
    build_object_storage(&s3_config(root), BuildOptions::default())
        .await
        .expect("build S3 storage")
        .storage
}

/// Storage on the test S3 server with its own HTTP client, counters and retry policy.
pub async fn s3_with(
    root: &str,
    counters: Option<Arc<StoreCounters>>,
    retry: RetryPolicy,
) -> ObjectStorage {
    let opts = BuildOptions {
        retry: Some(retry),
        counters,
        ..BuildOptions::default()
    };
    build_object_storage(&s3_config(root), opts)
        .await
        .expect("build S3 storage")
        .storage
}

/// Local files under a temporary directory (kept alive by the returned guard).
pub fn local(root: &str) -> (ObjectStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = ObjectStorage::local_dir(dir.path(), root).expect("local storage");
    (storage, dir)
}

/// Process memory.
pub fn memory(root: &str) -> ObjectStorage {
    ObjectStorage::in_memory(root).expect("memory storage")
}
