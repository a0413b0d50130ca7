//! Go Woodpecker's published service-mode client (module `github.com/zilliztech/woodpecker`
//! v0.1.35, `woodpecker.NewClient` with `storage.type: service`) writes and reads through
//! three `woodpecker logstore` nodes of ours, with etcd for metadata and MinIO for sealed
//! segments.
//!
//! The Go side is `compat-tests/go/wp-service-client`, built here with the Go toolchain from
//! the Go module proxy (a warm build takes about 20 s, a cold one several minutes). It finds
//! the nodes through static seeds (SelectNodes; Go clients never gossip), writes entries that
//! roll into many small segments (so the client fences, completes and, through its auditor,
//! compacts them on our nodes), waits until every completed segment is Sealed, then reads
//! everything back from the earliest entry, sealed segments directly from MinIO in the layout
//! our compaction wrote, and checks every id, payload and property. It runs once with
//! synchronous writes (AddEntry) and once with 200 writes in flight (batched AddEntries).
//!
//! Needs MinIO and etcd (`eval "$(scripts/services start)"`), Go ≥ 1.25 on `PATH` or in
//! `/usr/local/go/bin`, and the `woodpecker` binary (see `compat_tests::woodpecker_bin`).
//! Without them it fails; it never skips.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Hang guard for a start or a client run; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(600);

use compat_tests::ports::free_addr;
use compat_tests::service_env as env;

use compat_tests::go_toolchain as go;

/// Builds the Go client program into `out` (the Go build cache keeps later builds fast).
async fn build_go_client(out: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/wp-service-client");
    let bin = out.join("wp-service-client");
    let status = tokio::time::timeout(
        HANG_GUARD,
        Command::new(go()?)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(&src)
            .status(),
    )
    .await
    .context("go build did not finish")??;
    if !status.success() {
        bail!("go build of {} failed: {status}", src.display());
    }
    Ok(bin)
}

struct Node {
    child: Child,
    service: SocketAddr,
}

async fn start_node(
    config: &Path,
    data: &Path,
    id: usize,
    service: SocketAddr,
    gossip: SocketAddr,
    seeds: &str,
) -> Result<Node> {
    let mut child = Command::new(compat_tests::woodpecker_bin()?)
        .arg("logstore")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--service-addr", &service.to_string()])
        .args(["--gossip-addr", &gossip.to_string()])
        .args(["--admin-addr", "127.0.0.1:0", "--seeds", seeds])
        .args(["--node-id", &format!("rs{id}"), "--az", &format!("az{id}")])
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
    Ok(Node { child, service })
}

/// Runs the Go client with `args`; returns its JSON summary.
async fn run_go_client(
    bin: &Path,
    work: &Path,
    common: &[String],
    args: &[&str],
) -> Result<serde_json::Value> {
    let log = work.join(format!("go-{}.log", args.join("_").replace(['-', ' '], "")));
    let stderr = std::fs::File::create(&log)?;
    let out = tokio::time::timeout(
        HANG_GUARD,
        Command::new(bin)
            .args(common)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the Go client did not finish")??;
    // The module logs to stdout too; the summary is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let summary: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("Go client printed no JSON summary: {last:?}"))?;
    if !out.status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "Go client failed ({}): {summary}\nlast lines of its log:\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_service_mode_client_writes_and_reads_through_our_logstores() -> Result<()> {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID");
    let secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY");
    let region = env("WOODPECKER_TEST_S3_REGION");
    let etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT");
    let work = tempfile::tempdir()?;
    let bin = build_go_client(work.path()).await?;

    let bucket = format!("wp-go-{}", rand::random::<u64>());
    let host_port = s3
        .trim_end_matches('/')
        .split_once("://")
        .map_or(s3.as_str(), |x| x.1);
    let (host, port) = host_port.rsplit_once(':').context("S3 endpoint port")?;
    let config = work.path().join("logstore.yaml");
    std::fs::write(
        &config,
        format!(
            "woodpecker:\n  storage:\n    type: service\n    rootPath: {unused}\n  logstore:\n    diskWatermarkPolicy:\n      enabled: false\nminio:\n  address: \"{host}\"\n  port: {port}\n  accessKeyID: \"{key}\"\n  secretAccessKey: \"{secret}\"\n  region: \"{region}\"\n  bucketName: {bucket}\n  createBucket: true\n  rootPath: files\n",
            unused = work.path().join("unused").display()
        ),
    )?;
    let services: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let gossips: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let seeds = gossips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let data = work.path().join(format!("node{i}"));
        nodes.push(start_node(&config, &data, i, services[i], gossips[i], &seeds).await?);
    }
    let common: Vec<String> = vec![
        "-etcd".into(),
        etcd,
        "-s3-endpoint".into(),
        s3.clone(),
        "-s3-access".into(),
        key,
        "-s3-secret".into(),
        secret,
        "-s3-region".into(),
        region,
        "-s3-bucket".into(),
        bucket,
        "-s3-root".into(),
        "files".into(),
        "-seeds".into(),
        nodes
            .iter()
            .map(|n| n.service.to_string())
            .collect::<Vec<_>>()
            .join(","),
        "-work".into(),
        work.path().display().to_string(),
    ];

    // Synchronous writes: one AddEntry per entry and replica.
    let sync = run_go_client(
        &bin,
        work.path(),
        &common,
        &["-entries", "300", "-in-flight", "1", "-segment-size", "16k"],
    )
    .await?;
    assert_eq!(sync["written"], 300, "{sync}");
    assert_eq!(sync["read"], 300, "{sync}");
    let segments = sync["segments"].as_i64().unwrap();
    assert!(segments >= 3, "the log rolled: {sync}");
    assert_eq!(sync["sealed"].as_i64().unwrap(), segments - 1, "{sync}");

    // 200 writes in flight: the client batches them into AddEntries streams.
    let batched = run_go_client(
        &bin,
        work.path(),
        &common,
        &[
            "-entries",
            "2000",
            "-in-flight",
            "200",
            "-segment-size",
            "200k",
        ],
    )
    .await?;
    assert_eq!(batched["written"], 2000, "{batched}");
    assert_eq!(batched["read"], 2000, "{batched}");
    let segments = batched["segments"].as_i64().unwrap();
    assert!(segments >= 3, "the log rolled: {batched}");
    assert_eq!(
        batched["sealed"].as_i64().unwrap(),
        segments - 1,
        "{batched}"
    );

    // A clean stop of every node.
    for n in &mut nodes {
        let pid = n.child.id().context("node pid")?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let status = tokio::time::timeout(HANG_GUARD, n.child.wait()).await??;
        assert!(status.success(), "node exited with {status}");
    }
    Ok(())
}
