//! This engine's service-mode client (`storage.type: service`) through Go Woodpecker's own
//! LogStore server: three nodes of the published module's `cmd` (v0.1.35, `woodpecker server`),
//! built here from the Go module proxy, with etcd for metadata and MinIO. Go's server is only
//! run, as a judge of the wire protocol; nothing of it is part of this project.
//!
//! The client selects three of Go's nodes from static seeds (SelectNodes), writes entries in
//! segments that roll at 8 KiB (completing each on Go's nodes), reads
//! everything back, has Go's nodes compact the completed segments into MinIO, and reads
//! everything back again.
//!
//! Needs MinIO and etcd (`eval "$(scripts/services start)"`) and Go >= 1.25 on `PATH` or in
//! `/usr/local/go/bin` (a warm build takes seconds, a cold one several minutes). Without them
//! it fails; it never skips.

// Real processes answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::meta::SegmentState;
use tokio::process::{Child, Command};
use wal::clock::SystemClock;
use wal::config::Config;
use wal::engine::Engine;
use wal::message::{LogMessageId, WriteMessage};

/// Hang guard for the Go build; never a latency assertion.
const BUILD_GUARD: Duration = Duration::from_secs(3600);
/// Hang guard for a start, a write or a read.
const HANG_GUARD: Duration = Duration::from_secs(60);

use compat_tests::ports::free_addr;
use compat_tests::service_env as env;

use compat_tests::go_toolchain as go;

/// Builds Go Woodpecker's server command (`github.com/zilliztech/woodpecker/cmd`) at the
/// version `compat-tests/go/wp-service-client/go.mod` pins, into `out`.
async fn build_go_server(out: &Path) -> Result<PathBuf> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/wp-service-client");
    let bin = out.join("woodpecker-go");
    let status = tokio::time::timeout(
        BUILD_GUARD,
        Command::new(go()?)
            .args(["build", "-o"])
            .arg(&bin)
            .arg("github.com/zilliztech/woodpecker/cmd")
            .current_dir(&module)
            .status(),
    )
    .await
    .context("go build of the Go server hung")??;
    if !status.success() {
        bail!("go build of github.com/zilliztech/woodpecker/cmd failed: {status}");
    }
    Ok(bin)
}

/// Waits until something accepts connections on `addr` (Go's server prints no ready line
/// of its own).
async fn wait_listening(addr: SocketAddr, child: &mut Child) -> Result<()> {
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the Go server exited before it listened on {addr}: {status}");
        }
        if started.elapsed() > HANG_GUARD {
            bail!("the Go server did not listen on {addr} within {HANG_GUARD:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_service_client_writes_and_reads_through_go_logstore_servers() -> Result<()> {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID");
    let secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY");
    let region = env("WOODPECKER_TEST_S3_REGION");
    let etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT");
    let work = tempfile::tempdir()?;
    let bin = build_go_server(work.path()).await?;

    let id = rand::random::<u64>();
    let bucket = format!("wp-goserver-{id}");
    let host_port = s3
        .trim_end_matches('/')
        .split_once("://")
        .map_or(s3.as_str(), |x| x.1);
    let (host, port) = host_port.rsplit_once(':').context("S3 endpoint port")?;
    let minio = format!(
        "minio:\n  address: \"{host}\"\n  port: {port}\n  accessKeyID: \"{key}\"\n  secretAccessKey: \"{secret}\"\n  region: \"{region}\"\n  bucketName: {bucket}\n  createBucket: true\n  rootPath: files\n"
    );
    let etcd_host = etcd
        .trim_end_matches('/')
        .split_once("://")
        .map_or(etcd.as_str(), |x| x.1)
        .to_string();
    let services: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let gossips: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let service_seeds = services
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Go's server configuration, in the shape its own container start script writes.
    let go_config = work.path().join("go-server.yaml");
    std::fs::write(
        &go_config,
        format!(
            "woodpecker:\n  storage:\n    type: service\n    rootPath: {unused}\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: default-region-pool\n          seeds: [{service_seeds}]\nlog:\n  level: warn\n  stdout: true\netcd:\n  endpoints: [{etcd_host}]\n  rootPath: wp-goserver-{id}\n{minio}",
            unused = work.path().join("unused").display()
        ),
    )?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let seeds = gossips
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, g)| g.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut child = Command::new(&bin)
            .arg("server")
            .arg(format!("--node-name=go{i}"))
            .arg(format!("--service-port={}", services[i].port()))
            .arg(format!("--gossip-port={}", gossips[i].port()))
            .arg(format!("--advertise-service-addr={}", services[i]))
            .arg(format!("--advertise-gossip-addr={}", gossips[i]))
            .arg(format!(
                "--data-dir={}",
                work.path().join(format!("go{i}")).display()
            ))
            .arg(format!("--config={}", go_config.display()))
            .arg(format!(
                "--external-default-config={}",
                work.path().join("none-default.yaml").display()
            ))
            .arg(format!(
                "--external-user-config={}",
                work.path().join("none-user.yaml").display()
            ))
            .arg(format!("--seeds={seeds}"))
            .env("METRICS_PORT", free_addr().port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting Go's woodpecker server")?;
        wait_listening(services[i], &mut child).await?;
        nodes.push(child);
    }

    let client_yaml = format!(
        "woodpecker:\n  meta:\n    type: etcd\n    prefixMode: configured\n  storage:\n    type: service\n    rootPath: {data}\n  client:\n    segmentRollingPolicy:\n      maxSize: 8192\n    quorum:\n      quorumBufferPools:\n        - name: pool\n          seeds: [{service_seeds}]\n      quorumSelectStrategy:\n        replicas: 3\netcd:\n  endpoints: [\"{etcd}\"]\n  rootPath: wp-goserver-client-{id}\n{minio}",
        data = work.path().join("client").display(),
    );
    let engine = Engine::open(Config::from_yaml_str(&client_yaml)?, SystemClock::shared()).await?;
    let client = engine.client.clone();
    client.create_log("through-go").await?;
    let log = client.open_log("through-go").await?;

    // The first write waits until Go's nodes know each other (gossip) and a quorum of three
    // can be selected.
    let writer = log.open_writer().await?;
    let payload = |i: usize| format!("entry-{i}-{}", "g".repeat(150)).into_bytes();
    let mut ids = Vec::new();
    let started = Instant::now();
    while ids.is_empty() {
        match writer.write(WriteMessage::new(payload(0))).await {
            Ok(id) => ids.push(id),
            Err(e) if started.elapsed() < HANG_GUARD => {
                eprintln!("first write: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("no write acknowledged through Go's servers: {e}"),
        }
    }
    let acks: Vec<_> = (1..300)
        .map(|i| writer.write_async(WriteMessage::new(payload(i))))
        .collect();
    for ack in acks {
        ids.push(ack.await?);
    }
    writer.close().await?;
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "ids in write order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    // Segments roll at 8 KiB, but a roll waits while the seeds cannot name three nodes (Go's
    // gossip settling), so how many there are is not asserted: every one is completed by now
    // (the writer closed) and compacted below.
    let segments = log.segments().await?;
    eprintln!("{} entries in {} segment(s)", ids.len(), segments.len());

    let read_all = |what: &'static str| {
        let log = log.clone();
        let ids = ids.clone();
        async move {
            let mut reader = log.open_reader(LogMessageId::EARLIEST, None).await?;
            for (i, want) in ids.iter().enumerate() {
                let m = tokio::time::timeout(HANG_GUARD, reader.read_next())
                    .await
                    .with_context(|| format!("{what}: no entry {want} within {HANG_GUARD:?}"))??;
                assert_eq!(m.id, *want, "{what}");
                assert_eq!(m.payload.as_ref(), payload(i).as_slice(), "{what}: {want}");
            }
            reader.close().await?;
            Ok::<_, anyhow::Error>(())
        }
    };
    read_all("from Go's LogStores").await?;

    // Go's nodes compact the completed segments into MinIO (CompactSegment).
    let report = log.auditor().run_once().await?;
    let segments = log.segments().await?;
    let sealed = segments
        .values()
        .filter(|m| m.state == SegmentState::Sealed as i32)
        .count();
    assert_eq!(
        sealed,
        segments.len(),
        "every segment compacted by Go's nodes: {report:?}, {segments:?}"
    );
    read_all("after compaction").await?;

    engine.shutdown().await;
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}
