//! The example configurations in `deployments/config` parse and validate.

use storage::config::{CloudProvider, ConditionWriteMode, StorageType};
use wal::config::Config;

fn load(name: &str) -> Config {
    let path = format!(
        "{}/../deployments/config/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Config::from_yaml_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn minio_example() {
    let cfg = load("woodpecker.minio.yaml");
    assert_eq!(cfg.woodpecker.storage.kind, StorageType::Minio);
    assert_eq!(
        cfg.woodpecker.logstore.fence_policy.condition_write,
        ConditionWriteMode::Auto
    );
    assert_eq!(cfg.minio.cloud_provider, CloudProvider::Aws);
    assert_eq!(cfg.minio.endpoint_url(), "http://127.0.0.1:9000");
}

#[test]
fn local_example() {
    let cfg = load("woodpecker.local.yaml");
    assert_eq!(cfg.woodpecker.storage.kind, StorageType::Local);
    assert_eq!(cfg.woodpecker.storage.root_path, "./data");
}
