//! The service-mode systems of the side-by-side comparison: three LogStore nodes on
//! loopback (this engine's `woodpecker logstore`, or Go Woodpecker's own `woodpecker server`
//! built by `scripts/peers/go-woodpecker-service`), one writer with three replicas (write
//! quorum 3, ack quorum 2), metadata in etcd and compacted segments in MinIO, from the test
//! services' variables.
//!
//! The writer is this engine's `storage.type: service` client (in process, measured by the
//! comparison's own loop) or Go's published service-mode client (`wp-service-bench`, which
//! prints the same JSON as the embedded Go peer). Go's server is only run, as a peer.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;

use crate::serve::tail;

/// Whose LogStore nodes (or whose client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Side {
    /// This engine.
    Rs,
    /// Go Woodpecker.
    Go,
}

/// How long a node may take to listen.
const START_GUARD: Duration = Duration::from_secs(120);

fn env(k: &str) -> anyhow::Result<String> {
    std::env::var(k)
        .with_context(|| format!("{k} is not set (the service systems need MinIO and etcd)"))
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// `host`, `port` of an `http://host:port` endpoint.
fn host_port(endpoint: &str) -> anyhow::Result<(String, String)> {
    let rest = endpoint
        .trim_end_matches('/')
        .split_once("://")
        .map_or(endpoint, |x| x.1);
    let (h, p) = rest
        .rsplit_once(':')
        .with_context(|| format!("endpoint `{endpoint}` has no port"))?;
    Ok((h.to_owned(), p.to_owned()))
}

/// The `minio:` section both sides' nodes and clients share (one bucket per cluster).
fn minio_section(bucket: &str) -> anyhow::Result<String> {
    let (host, port) = host_port(&env("WOODPECKER_TEST_S3_ENDPOINT")?)?;
    Ok(format!(
        "minio:\n  address: \"{host}\"\n  port: {port}\n  useSSL: false\n  accessKeyID: \"{ak}\"\n  secretAccessKey: \"{sk}\"\n  region: \"{region}\"\n  bucketName: {bucket}\n  createBucket: true\n  rootPath: files\n",
        ak = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?,
        sk = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
        region = std::env::var("WOODPECKER_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
    ))
}

/// Three LogStore nodes; killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// Whose nodes.
    pub side: Side,
    /// Their gRPC addresses (the clients' static seeds).
    pub seeds: Vec<SocketAddr>,
    /// The bucket their compacted segments go to.
    pub bucket: String,
    /// The etcd prefix of every client run on these nodes: LogStores key segments by log id
    /// and segment id, so all their clients share one metadata namespace (a second namespace
    /// would hand out log 1 again and meet the first one's finalized segments).
    pub meta_root: String,
    children: Vec<Child>,
}

impl Cluster {
    /// Starts three nodes with everything under `dir`: this engine's (`woodpecker`, the
    /// binary) or Go's (`go_server`).
    pub fn start(
        side: Side,
        dir: &Path,
        woodpecker: &Path,
        go_server: Option<&Path>,
    ) -> anyhow::Result<Cluster> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bucket = format!("compare-svc-{}", &id[..12]);
        let services = (0..3)
            .map(|_| free_tcp())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let gossips = (0..3)
            .map(|_| free_udp())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let minio = minio_section(&bucket)?;
        let config = dir.join("logstore.yaml");
        let text = match side {
            // A neighbour filling the shared machine's disk must not throttle the appends.
            Side::Rs => format!(
                "woodpecker:\n  storage:\n    type: service\n    rootPath: {unused}\n  logstore:\n    diskWatermarkPolicy:\n      enabled: false\n{minio}",
                unused = dir.join("unused").display()
            ),
            // Go's server configuration, in the shape its own container start script writes.
            Side::Go => {
                let (etcd_host, etcd_port) = host_port(&env("WOODPECKER_TEST_ETCD_ENDPOINT")?)?;
                let seeds = services
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "woodpecker:\n  storage:\n    type: service\n    rootPath: {unused}\n  client:\n    quorum:\n      quorumBufferPools:\n        - name: default-region-pool\n          seeds: [{seeds}]\nlog:\n  level: warn\n  stdout: true\netcd:\n  endpoints: [{etcd_host}:{etcd_port}]\n  rootPath: compare-goserver-{id}\n{minio}",
                    unused = dir.join("unused").display()
                )
            }
        };
        std::fs::write(&config, text)?;
        let mut cluster = Cluster {
            side,
            seeds: services.clone(),
            bucket,
            meta_root: format!("compare-svc-client-{id}"),
            children: Vec::new(),
        };
        for i in 0..3 {
            let peers = gossips
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, g)| g.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let data = dir.join(format!("node{i}"));
            let log = std::fs::File::create(dir.join(format!("node{i}.log")))?;
            let mut cmd = match side {
                Side::Rs => {
                    let mut c = Command::new(woodpecker);
                    c.arg("logstore")
                        .arg("--config")
                        .arg(&config)
                        .arg("--data-dir")
                        .arg(&data)
                        .args(["--service-addr", &services[i].to_string()])
                        .args(["--gossip-addr", &gossips[i].to_string()])
                        .args(["--admin-addr", "127.0.0.1:0"])
                        .args(["--seeds", &peers])
                        .args(["--node-id", &format!("n{i}")])
                        .env("RUST_LOG", "warn");
                    c
                }
                Side::Go => {
                    let bin = go_server.context("no Go LogStore server binary")?;
                    let mut c = Command::new(bin);
                    c.arg("server")
                        .arg(format!("--node-name=go{i}"))
                        .arg(format!("--service-port={}", services[i].port()))
                        .arg(format!("--gossip-port={}", gossips[i].port()))
                        .arg(format!("--advertise-service-addr={}", services[i]))
                        .arg(format!("--advertise-gossip-addr={}", gossips[i]))
                        .arg(format!("--data-dir={}", data.display()))
                        .arg(format!("--config={}", config.display()))
                        .arg(format!(
                            "--external-default-config={}",
                            dir.join("none-default.yaml").display()
                        ))
                        .arg(format!(
                            "--external-user-config={}",
                            dir.join("none-user.yaml").display()
                        ))
                        .arg(format!("--seeds={peers}"))
                        .env("METRICS_PORT", free_tcp()?.port().to_string());
                    c
                }
            };
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            let child = cmd
                .spawn()
                .with_context(|| format!("starting LogStore node {i} ({side:?})"))?;
            cluster.children.push(child);
            cluster.wait_listening(i, dir)?;
        }
        Ok(cluster)
    }

    /// Waits until node `i` accepts connections on its gRPC address.
    fn wait_listening(&mut self, i: usize, dir: &Path) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            if TcpStream::connect(self.seeds[i]).is_ok() {
                return Ok(());
            }
            let exited = self.children[i].try_wait()?;
            if exited.is_some() || t0.elapsed() > START_GUARD {
                let log =
                    std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap_or_default();
                bail!(
                    "LogStore node {i} ({:?}) {} on {}; its log:\n{}",
                    self.side,
                    match exited {
                        Some(st) => format!("exited ({st}) before it listened"),
                        None => format!("did not listen within {START_GUARD:?}"),
                    },
                    self.seeds[i],
                    tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC addresses, comma separated.
    pub fn seed_list(&self) -> String {
        self.seeds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// This engine's client configuration against these nodes: `storage.type: service`,
    /// three replicas (wq 3, aq 2), segments rolling as the Go peer's (256 MiB).
    pub fn rs_client_yaml(&self, dir: &Path) -> anyhow::Result<String> {
        Ok(format!(
            "woodpecker:\n  meta:\n    type: etcd\n    prefixMode: configured\n  storage:\n    type: service\n    rootPath: {data}\n  client:\n    segmentRollingPolicy:\n      maxSize: 268435456\n    quorum:\n      quorumBufferPools:\n        - name: pool\n          seeds: [{seeds}]\n      quorumSelectStrategy:\n        replicas: 3\netcd:\n  endpoints: [\"{etcd}\"]\n  rootPath: {root}\n{minio}",
            data = dir.join("client").display(),
            seeds = self.seed_list().replace(',', ", "),
            etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT")?,
            root = self.meta_root,
            minio = minio_section(&self.bucket)?,
        ))
    }

    /// The `wp-service-bench` command against these nodes (entry size, count and window
    /// are the caller's).
    pub fn go_client_command(&self, bench: &Path, work: &Path) -> anyhow::Result<Command> {
        let mut cmd = Command::new(bench);
        cmd.args(["-etcd", &env("WOODPECKER_TEST_ETCD_ENDPOINT")?])
            .args(["-s3-endpoint", &env("WOODPECKER_TEST_S3_ENDPOINT")?])
            .args(["-s3-access-key", &env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?])
            .args([
                "-s3-secret-key",
                &env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
            ])
            .args(["-s3-bucket", &self.bucket])
            .args(["-seeds", &self.seed_list()])
            .args(["-etcd-root", &self.meta_root])
            .arg("-work")
            .arg(work);
        if let Ok(r) = std::env::var("WOODPECKER_TEST_S3_REGION") {
            cmd.args(["-s3-region", &r]);
        }
        Ok(cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where `scripts/peers/go-woodpecker-service path` put Go's server and wp-service-bench.
pub fn go_binaries(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let server = dir.join("woodpecker-server");
    let bench = dir.join("wp-service-bench");
    if !server.is_file() || !bench.is_file() {
        return Err(anyhow!(
            "{} lacks woodpecker-server or wp-service-bench",
            dir.display()
        ));
    }
    Ok((server, bench))
}
