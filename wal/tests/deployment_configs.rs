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

#[test]
fn service_example_writes_through_the_compose_files_three_nodes() {
    let cfg = load("woodpecker.service.yaml");
    assert_eq!(cfg.woodpecker.storage.kind, StorageType::Service);
    let quorum = &cfg.woodpecker.client.quorum;
    quorum.validate_for_service().unwrap();
    assert_eq!(quorum.quorum_select_strategy.replicas, 3);
    let seeds: Vec<&str> = quorum
        .quorum_buffer_pools
        .iter()
        .flat_map(|p| p.seeds.iter().map(String::as_str))
        .collect();
    assert_eq!(
        seeds,
        ["logstore-1:18080", "logstore-2:18080", "logstore-3:18080"]
    );
    // The seeds are the compose file's LogStore services and their gRPC port.
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!(
            "{}/../deployments/docker-compose.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    for seed in seeds {
        let (service, port) = seed.split_once(':').unwrap();
        let command = compose["services"][service]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no compose service {service}"));
        let args: Vec<&str> = command.iter().filter_map(|v| v.as_str()).collect();
        let at = args
            .iter()
            .position(|a| *a == "--advertise-service-addr")
            .unwrap_or_else(|| panic!("{service} advertises no service address"));
        assert_eq!(args[at + 1], format!("{service}:{port}"));
    }
}
