//! `woodpecker serve` with `storage.type: service`: the Kafka listener over a cluster of three
//! `woodpecker logstore` nodes (every entry replicated to the three, acknowledged at two),
//! etcd for metadata and MinIO. librdkafka (the version Milvus bundles) produces 200 records
//! (the client rolls segments at 8 KiB, about 22 KiB in all), and a consumer reads every one
//! back in order.
//!
//! Needs MinIO and etcd (`eval "$(scripts/services start)"`) and the `woodpecker` binary (see
//! `compat_tests::woodpecker_bin`). Without them it fails; it never skips.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use compat_tests::Server;
use compat_tests::milvus::{ConsumerVariant, DeliverPolicy, Opener, Scanner};
use compat_tests::ports::free_addr;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Hang guard for a start or a read; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

use compat_tests::service_env as env;

/// Starts one `woodpecker logstore` node and waits until it serves.
async fn start_node(
    config: &Path,
    data: &Path,
    id: usize,
    service: SocketAddr,
    gossip: SocketAddr,
    seeds: &str,
) -> Result<Child> {
    let mut child = Command::new(compat_tests::woodpecker_bin()?)
        .arg("logstore")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--service-addr", &service.to_string()])
        .args(["--gossip-addr", &gossip.to_string()])
        .args(["--admin-addr", "127.0.0.1:0", "--seeds", seeds])
        .args(["--node-id", &format!("n{id}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawn woodpecker logstore")?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(HANG_GUARD, lines.next_line())
        .await
        .context("the node did not start")??
        .unwrap_or_default();
    if first != format!("logstore listening on {service}") {
        bail!("unexpected first line {first:?}");
    }
    // Keep draining stdout so the node never writes into a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_kafka_listener_over_a_logstore_cluster() -> Result<()> {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID");
    let secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY");
    let region = env("WOODPECKER_TEST_S3_REGION");
    let etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT");
    let work = tempfile::tempdir()?;
    let id = rand::random::<u64>();
    let bucket = format!("wp-serve-svc-{id}");
    let host_port = s3
        .trim_end_matches('/')
        .split_once("://")
        .map_or(s3.as_str(), |x| x.1);
    let (host, port) = host_port.rsplit_once(':').context("S3 endpoint port")?;
    let minio = format!(
        "minio:\n  address: \"{host}\"\n  port: {port}\n  accessKeyID: \"{key}\"\n  secretAccessKey: \"{secret}\"\n  region: \"{region}\"\n  bucketName: {bucket}\n  createBucket: true\n  rootPath: files\n"
    );
    let node_config = work.path().join("logstore.yaml");
    std::fs::write(
        &node_config,
        format!(
            "woodpecker:\n  storage:\n    type: service\n    rootPath: {unused}\n  logstore:\n    diskWatermarkPolicy:\n      enabled: false\n{minio}",
            unused = work.path().join("unused").display()
        ),
    )?;
    let services: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let gossips: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let gossip_seeds = gossips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let data = work.path().join(format!("node{i}"));
        nodes.push(
            start_node(
                &node_config,
                &data,
                i,
                services[i],
                gossips[i],
                &gossip_seeds,
            )
            .await?,
        );
    }
    let seeds = services
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let serve_config = work.path().join("serve.yaml");
    std::fs::write(
        &serve_config,
        format!(
            "woodpecker:\n  meta:\n    type: etcd\n    prefixMode: configured\n  storage:\n    type: service\n  client:\n    segmentRollingPolicy:\n      maxSize: 8192\n    quorum:\n      quorumBufferPools:\n        - name: pool\n          seeds: [{seeds}]\n      quorumSelectStrategy:\n        replicas: 3\netcd:\n  endpoints: [\"{etcd}\"]\n  rootPath: wp-serve-svc-{id}\n{minio}"
        ),
    )?;
    let config_arg = serve_config.display().to_string();
    let mut server = Server::start_with(&["--config", &config_arg]).await?;
    let bootstrap = server.bootstrap();

    let topic = "replicated";
    let opener = Opener::new(&bootstrap)?;
    let mut ids = Vec::new();
    for i in 0..200 {
        let payload = format!("record-{i}-{}", "r".repeat(100));
        ids.push(
            opener
                .append::<&str, &[u8]>(topic, payload.as_bytes(), &[])
                .await?,
        );
    }
    opener.close()?;
    assert_eq!(ids, (0..200).collect::<Vec<i64>>(), "offsets in order");

    let mut scanner = Scanner::new(
        &bootstrap,
        "replicated_reader",
        topic,
        DeliverPolicy::All,
        ConsumerVariant::NoCommitEarliest,
    )?;
    for i in 0..200i64 {
        let m = scanner
            .next(HANG_GUARD)
            .await?
            .with_context(|| format!("no record {i} within {HANG_GUARD:?}"))?;
        assert_eq!(m.id, i);
        let want = format!("record-{i}-{}", "r".repeat(100));
        assert_eq!(m.payload.as_deref(), Some(want.as_bytes()), "record {i}");
    }
    scanner.close().await?;
    server.stop().await?;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
