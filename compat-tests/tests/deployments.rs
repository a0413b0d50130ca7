//! `deployments/` as an operator runs it, minus the containers (no container engine runs
//! here):
//!
//! * the server of `deployments/docker-compose.yaml` is started with the compose file's own
//!   command, flags and environment variable names and the config file it mounts, against
//!   the test services' etcd and MinIO (`eval "$(scripts/services start)"`) instead of the
//!   compose services, and with its `--otlp-endpoint` pointed at an OTLP/gRPC collector in
//!   this test; it must answer `woodpecker health`, carry a Kafka produce and consume, export
//!   the spans of a Kafka request, an append, a flush and an object PUT, and serve every
//!   metric the Grafana dashboard queries;
//! * the compose file's three LogStore nodes are started the same way (their commands, the
//!   config file they mount, their environment; loopback addresses for theirs, seeds mapped
//!   along), and must find each other by gossip, carry appends, a completion, a compaction
//!   into MinIO and a read from a LogStore gRPC client, serve `/healthz` and their metrics
//!   (Go Woodpecker's LogStore operation metrics among them), export `grpc.serve` spans, and
//!   stop cleanly on SIGTERM;
//! * a server on the embedded default (local disk) serves the local-disk metrics and exports
//!   fsync spans;
//! * every `woodpecker` flag that the Dockerfile, the compose file and the Helm chart use
//!   exists in this build, the LogStore nodes' included (off by default in the chart, in a
//!   profile in the compose file: the files' server keeps its segments in MinIO).
//!
//! Without the services the first test fails (it never skips).

// Real processes answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use compat_tests::woodpecker_bin;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use proto::logstore::log_store_client::LogStoreClient;
use proto::logstore::{
    AddEntriesRequest, AddEntryState, AffinityMode, CompactSegmentRequest, CompleteSegmentRequest,
    GetBatchEntriesAdvRequest, LogEntry, NodeFilter, SelectNodesRequest, StrategyType,
};
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_yaml_ng::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deployments() -> PathBuf {
    repo().join("deployments")
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!(
            "{name} is not set: run `eval \"$(scripts/services start)\"` first (or scripts/test)"
        )
    })
}

fn yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut v: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    v.apply_merge()?;
    Ok(v)
}

fn strings(v: &Value) -> Result<Vec<String>> {
    v.as_sequence()
        .context("not a list")?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .context("not a string in a list")
        })
        .collect()
}

// --- an OTLP/gRPC collector --------------------------------------------------------------

/// Span names received, by service name.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            let names = spans.entry(service).or_default();
            for ss in rs.scope_spans {
                names.extend(ss.spans.into_iter().map(|s| s.name));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok(addr)
    }

    fn names(&self) -> BTreeSet<String> {
        self.spans
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    fn services(&self) -> Vec<String> {
        self.spans.lock().unwrap().keys().cloned().collect()
    }
}

// --- a server process ----------------------------------------------------------------------

struct Serve {
    child: Child,
    kafka: SocketAddr,
    metrics: SocketAddr,
}

impl Serve {
    async fn start(args: &[String], envs: &[(String, String)]) -> Result<Serve> {
        let bin = woodpecker_bin()?;
        let mut child = Command::new(&bin)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {args:?}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (mut kafka, mut metrics) = (None, None);
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("kafka listening on ") {
                    kafka = Some(a.trim().parse()?);
                } else if let Some(a) = line.strip_prefix("metrics listening on ") {
                    metrics = Some(a.trim().parse()?);
                }
                if kafka.is_some() && metrics.is_some() {
                    return anyhow::Ok(());
                }
            }
            bail!("woodpecker serve exited before it was ready")
        };
        tokio::time::timeout(Duration::from_secs(120), ready)
            .await
            .context("woodpecker serve did not report its listeners within 120 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Serve {
            child,
            kafka: kafka.context("no kafka address")?,
            metrics: metrics.context("no metrics address")?,
        })
    }

    async fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect(self.metrics).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok(text)
    }

    /// SIGTERM, and a clean exit (which also sends the last spans).
    async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().context("no pid")?;
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?
            .success();
        ensure!(ok, "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("serve did not stop within 60 s of SIGTERM")??;
        ensure!(exit.success(), "serve exited with {exit}");
        Ok(())
    }
}

/// Produces `n` records to `topic` and reads them back from the start.
async fn produce_and_consume(bootstrap: &str, topic: &str, n: usize) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()?;
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let payload = format!("record {i} {}", "x".repeat(600));
            let key = i.to_string();
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .partition(0)
                            .key(&key)
                            .payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
            }
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r?;
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut seen = 0usize;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen < n {
            ensure!(
                std::time::Instant::now() < deadline,
                "read {seen} of {n} records within 60 s"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(500)) {
                let m = m?;
                let want = format!("record {seen} ");
                let payload = m.payload().context("no payload")?;
                ensure!(
                    payload.starts_with(want.as_bytes()),
                    "{topic}: record {seen} is {:?}",
                    String::from_utf8_lossy(&payload[..payload.len().min(20)])
                );
                seen += 1;
            }
        }
        Ok(())
    })
    .await?
}

// --- the dashboard -------------------------------------------------------------------------

/// The metric names of every panel query of the dashboard, by panel title.
fn dashboard_metrics() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let path = deployments().join("grafana/dashboards/woodpecker.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut out = BTreeMap::new();
    for panel in dash["panels"].as_array().context("no panels")? {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        let mut names = BTreeSet::new();
        for target in panel["targets"]
            .as_array()
            .context("a panel without targets")?
        {
            let expr = target["expr"].as_str().context("a target without expr")?;
            names.extend(metric_names(expr));
        }
        ensure!(
            !names.is_empty(),
            "panel `{title}` queries no woodpecker metric"
        );
        out.insert(title, names);
    }
    ensure!(out.len() >= 10, "only {} panels", out.len());
    Ok(out)
}

/// `woodpecker_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("woodpecker_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Sample names in a scrape that have at least one sample.
fn sampled(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

// --- the compose file ----------------------------------------------------------------------

/// The command of the compose server `service` (`woodpecker`, or `woodpecker-service`, which
/// writes through the LogStore nodes), with what the test must change: the config path to the
/// repository's file, the data dir to a temporary one, listeners to port 0 on loopback, the
/// advertised address dropped (it defaults to the listener), and the OTLP endpoint to
/// `otlp`. Fails on any flag it does not know how to map, so that a new flag in the compose
/// file is looked at here.
fn compose_serve(
    service: &str,
    otlp: SocketAddr,
    data_dir: &Path,
) -> Result<(Vec<String>, Vec<String>)> {
    let compose = yaml(&deployments().join("docker-compose.yaml"))?;
    let service = &compose["services"][service];
    let command = strings(&service["command"])?;
    let mounts: BTreeMap<String, String> = strings(&service["volumes"])?
        .iter()
        .filter_map(|v| {
            let mut parts = v.split(':');
            Some((parts.nth(1)?.to_string(), v.split(':').next()?.to_string()))
        })
        .collect();
    let env_names: Vec<String> = service["environment"]
        .as_mapping()
        .context("environment is not a map")?
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let mut args = Vec::new();
    let mut it = command.iter();
    let sub = it.next().context("empty command")?;
    ensure!(sub == "serve", "the compose server runs `{sub}`");
    args.push(sub.clone());
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} has no value"))?;
        match flag.as_str() {
            "--config" => {
                let host = mounts
                    .get(value)
                    .with_context(|| format!("{value} is not mounted"))?;
                let file = deployments().join(host);
                ensure!(file.is_file(), "{} does not exist", file.display());
                args.extend([flag.clone(), file.display().to_string()]);
            }
            "--data-dir" => args.extend([flag.clone(), data_dir.display().to_string()]),
            "--kafka-addr" | "--metrics-addr" | "--milvus-addr" => {
                args.extend([flag.clone(), "127.0.0.1:0".into()]);
            }
            "--advertised-kafka-addr" => {}
            "--otlp-endpoint" => args.extend([flag.clone(), format!("http://{otlp}")]),
            other => bail!("the compose server's flag {other} is not mapped by this test"),
        }
    }
    Ok((args, env_names))
}

/// Values for the compose server's environment: the test services' etcd and MinIO, a bucket
/// and an etcd root of this run. Every name the compose file sets must be here or passed on
/// as it is.
fn service_env(names: &[String], run: &str) -> Result<Vec<(String, String)>> {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT")?;
    let host_port = s3
        .trim_end_matches('/')
        .rsplit("://")
        .next()
        .unwrap_or(&s3)
        .to_string();
    let (host, port) = host_port
        .rsplit_once(':')
        .context("S3 endpoint without port")?;
    let etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT")?;
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    values.insert("WOODPECKER_CONFIG__ETCD__ENDPOINTS", etcd);
    values.insert("WOODPECKER_CONFIG__MINIO__ADDRESS", host.to_string());
    values.insert("WOODPECKER_CONFIG__MINIO__PORT", port.to_string());
    values.insert(
        "WOODPECKER_CONFIG__MINIO__ACCESSKEYID",
        env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?,
    );
    values.insert(
        "WOODPECKER_CONFIG__MINIO__SECRETACCESSKEY",
        env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
    );
    values.insert("WOODPECKER_CONFIG__MINIO__BUCKETNAME", format!("wp-{run}"));
    // Replaced below by the root of this run.
    values.insert("WOODPECKER_CONFIG__ETCD__ROOTPATH", format!("wp-{run}"));
    values.insert("RUST_LOG", "info".into());
    let mut out = Vec::new();
    for name in names {
        let v = values.get(name.as_str()).with_context(|| {
            format!("the compose server's variable {name} is not mapped by this test")
        })?;
        out.push((name.clone(), v.clone()));
    }
    // Keys of this run only, not the shared root of the test etcd.
    out.push((
        "WOODPECKER_CONFIG__WOODPECKER__META__PREFIXMODE".into(),
        "configured".into(),
    ));
    out.push((
        "WOODPECKER_CONFIG__ETCD__ROOTPATH".into(),
        format!("wp-{run}"),
    ));
    out.push((
        "WOODPECKER_CONFIG__MINIO__REGION".into(),
        env("WOODPECKER_TEST_S3_REGION")?,
    ));
    Ok(out)
}

// --- the compose file's LogStore nodes -----------------------------------------------------

/// A free UDP port on loopback (gossip addresses must be known before the nodes start, since
/// each is another's seed).
fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One LogStore service of the compose file, mapped onto this machine.
struct ComposedNode {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// The compose file's LogStore services (command `logstore`) as processes here: the config
/// file to the repository's file, data dirs under `data_root`, gRPC and admin listeners to
/// port 0 on loopback, gossip to free loopback ports, each seed (an advertised gossip address
/// of another service) to that service's loopback port, the OTLP endpoint to `otlp`. The
/// file's own consistency is checked on the way: a node advertises its own service name and
/// its own fixed IP, its node id is its name, and its seeds are the other nodes. Fails on any
/// flag it does not know how to map.
fn compose_logstores(otlp: SocketAddr, data_root: &Path, run: &str) -> Result<Vec<ComposedNode>> {
    let compose = yaml(&deployments().join("docker-compose.yaml"))?;
    let services = compose["services"].as_mapping().context("no services")?;
    let mut nodes: Vec<(String, &Value)> = services
        .iter()
        .filter(|(_, svc)| {
            strings(&svc["command"])
                .is_ok_and(|c| c.first().map(String::as_str) == Some("logstore"))
        })
        .map(|(k, svc)| (k.as_str().unwrap_or("?").to_string(), svc))
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    ensure!(
        nodes.len() == 3,
        "three LogStore services, not {}",
        nodes.len()
    );
    // Advertised gossip address (fixed IP of the compose network) -> loopback address here.
    let mut gossip: BTreeMap<String, String> = BTreeMap::new();
    for (name, svc) in &nodes {
        let ip = svc["networks"]["default"]["ipv4_address"]
            .as_str()
            .with_context(|| format!("{name} has no fixed address"))?;
        let command = strings(&svc["command"])?;
        let port = command
            .iter()
            .position(|a| a == "--gossip-addr")
            .and_then(|i| command.get(i + 1))
            .and_then(|a| a.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .with_context(|| format!("{name} has no --gossip-addr"))?;
        gossip.insert(
            format!("{ip}:{port}"),
            format!("127.0.0.1:{}", free_udp_port()?),
        );
    }
    let mut out = Vec::new();
    for (name, svc) in &nodes {
        let command = strings(&svc["command"])?;
        let mounts: BTreeMap<String, String> = strings(&svc["volumes"])?
            .iter()
            .filter_map(|v| {
                let mut parts = v.split(':');
                let host = parts.next()?.to_string();
                Some((parts.next()?.to_string(), host))
            })
            .collect();
        let ip = svc["networks"]["default"]["ipv4_address"]
            .as_str()
            .unwrap_or_default();
        let mut args = vec!["logstore".to_string()];
        let mut own_gossip = None;
        let mut it = command.iter().skip(1);
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .with_context(|| format!("{name}: {flag} has no value"))?;
            match flag.as_str() {
                "--config" => {
                    let host = mounts
                        .get(value)
                        .with_context(|| format!("{name}: {value} is not mounted"))?;
                    let file = deployments().join(host);
                    ensure!(file.is_file(), "{} does not exist", file.display());
                    args.extend([flag.clone(), file.display().to_string()]);
                }
                "--data-dir" => {
                    args.extend([flag.clone(), data_root.join(name).display().to_string()]);
                }
                "--service-addr" | "--admin-addr" => {
                    args.extend([flag.clone(), "127.0.0.1:0".into()]);
                }
                "--advertise-service-addr" => ensure!(
                    value.split(':').next() == Some(name.as_str()),
                    "{name} advertises {value}"
                ),
                "--gossip-addr" => {
                    let port = value.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
                    let here = gossip
                        .get(&format!("{ip}:{port}"))
                        .context("gossip address")?;
                    own_gossip = Some(format!("{ip}:{port}"));
                    args.extend([flag.clone(), here.clone()]);
                }
                "--advertise-gossip-addr" => ensure!(
                    Some(value) == own_gossip.as_ref(),
                    "{name} advertises gossip at {value}, not its own {own_gossip:?}"
                ),
                "--seeds" => {
                    let mut seeds = Vec::new();
                    for seed in value.split(',') {
                        let here = gossip
                            .get(seed)
                            .with_context(|| format!("{name}: seed {seed} is no LogStore"))?;
                        seeds.push(here.clone());
                    }
                    ensure!(seeds.len() == 2, "{name} seeds {value}");
                    args.extend([flag.clone(), seeds.join(",")]);
                }
                "--node-id" => {
                    ensure!(value == name, "{name} has node id {value}");
                    args.extend([flag.clone(), value.clone()]);
                }
                "--otlp-endpoint" => args.extend([flag.clone(), format!("http://{otlp}")]),
                other => bail!("the compose LogStore flag {other} is not mapped by this test"),
            }
        }
        let env = svc["environment"]
            .as_mapping()
            .context("environment is not a map")?;
        let mut names = Vec::new();
        let mut envs = Vec::new();
        for (k, v) in env {
            let k = k.as_str().context("variable name")?.to_string();
            if k == "NODE_NAME" {
                let v = v.as_str().context("NODE_NAME")?;
                ensure!(v == name, "{name} has NODE_NAME {v}");
                envs.push((k, v.to_string()));
            } else {
                names.push(k);
            }
        }
        envs.extend(service_env(&names, run)?);
        // A neighbour filling the test machine's disk must not throttle the appends (the
        // watermark has its own tests); in a deployment the default policy stays.
        envs.push((
            "WOODPECKER_CONFIG__WOODPECKER__LOGSTORE__DISKWATERMARKPOLICY__ENABLED".into(),
            "false".into(),
        ));
        out.push(ComposedNode {
            name: name.clone(),
            args,
            envs,
        });
    }
    Ok(out)
}

/// A running `woodpecker logstore`.
struct LogStoreProc {
    name: String,
    child: Child,
    service: SocketAddr,
    admin: SocketAddr,
}

impl LogStoreProc {
    async fn start(node: &ComposedNode) -> Result<LogStoreProc> {
        let bin = woodpecker_bin()?;
        let mut child = Command::new(&bin)
            .args(&node.args)
            .envs(node.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {:?}", bin.display(), node.args))?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (mut service, mut admin) = (None, None);
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("logstore listening on ") {
                    service = Some(a.trim().parse()?);
                } else if let Some(a) = line.strip_prefix("admin listening on ") {
                    admin = Some(a.trim().parse()?);
                }
                if service.is_some() && admin.is_some() {
                    return anyhow::Ok(());
                }
            }
            bail!("woodpecker logstore exited before it was ready")
        };
        tokio::time::timeout(Duration::from_secs(120), ready)
            .await
            .with_context(|| {
                format!("{} did not report its listeners within 120 s", node.name)
            })??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LogStoreProc {
            name: node.name.clone(),
            child,
            service: service.context("no service address")?,
            admin: admin.context("no admin address")?,
        })
    }

    async fn client(&self) -> Result<LogStoreClient<tonic::transport::Channel>> {
        Ok(LogStoreClient::connect(format!("http://{}", self.service)).await?)
    }

    async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().context("no pid")?;
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?
            .success();
        ensure!(ok, "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .with_context(|| format!("{} did not stop within 60 s of SIGTERM", self.name))??;
        ensure!(exit.success(), "{} exited with {exit}", self.name);
        Ok(())
    }
}

/// GET `path` on `addr` (HTTP/1.1, one request per connection).
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

/// Appends entries `0..n` of segment 0 of `log` on `c`: every id must come back `Synced`.
async fn append_all(
    c: &mut LogStoreClient<tonic::transport::Channel>,
    bucket: &str,
    root: &str,
    log: i64,
    n: i64,
) -> Result<()> {
    let entries = (0..n)
        .map(|id| LogEntry {
            seg_id: 0,
            entry_id: id,
            values: Bytes::from(format!("entry {id} {}", "x".repeat(100))),
        })
        .collect();
    let mut stream = c
        .add_entries(AddEntriesRequest {
            bucket_name: bucket.into(),
            root_path: root.into(),
            log_id: log,
            entries,
        })
        .await?
        .into_inner();
    let mut synced = Vec::new();
    while let Some(frame) = stream.message().await? {
        let code = frame.status.as_ref().map_or(0, |s| s.code);
        ensure!(code == 0, "append failed: {frame:?}");
        if frame.state == AddEntryState::Synced as i32 {
            synced.extend(frame.entry_id);
        }
    }
    ensure!(synced == (0..n).collect::<Vec<_>>(), "synced {synced:?}");
    Ok(())
}

/// The compose file's three LogStore nodes: they form a cluster, carry a segment's life
/// (appends on all three, completion, compaction into MinIO, a read) and serve their metrics.
/// Returns their scrapes.
async fn run_composed_logstores(otlp: SocketAddr, run: &str) -> Result<String> {
    let temp = tempfile::tempdir()?;
    let specs = compose_logstores(otlp, temp.path(), run)?;
    let mut nodes = Vec::new();
    for spec in &specs {
        nodes.push(LogStoreProc::start(spec).await?);
    }
    // Gossip: every node comes to see all three (a bounded wait for that event).
    for node in &nodes {
        let mut c = node.client().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = c
                .select_nodes(SelectNodesRequest {
                    strategy: StrategyType::Random as i32,
                    affinity_mode: AffinityMode::Soft as i32,
                    filters: vec![NodeFilter {
                        limit: 3,
                        ..NodeFilter::default()
                    }],
                })
                .await?
                .into_inner();
            if r.total_count == 3 {
                let ids: BTreeSet<String> = r.nodes.iter().map(|n| n.node_id.clone()).collect();
                let want: BTreeSet<String> = specs.iter().map(|s| s.name.clone()).collect();
                ensure!(ids == want, "{} sees {ids:?}", node.name);
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{} sees {} nodes after 60 s",
                node.name,
                r.total_count
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A segment's life on the quorum of three: the bucket is the one the composed server made.
    let (bucket, root, log) = (format!("wp-{run}"), "logstore", 7);
    for node in &nodes {
        append_all(&mut node.client().await?, &bucket, root, log, 10).await?;
    }
    let mut c = nodes[0].client().await?;
    let done = c
        .complete_segment(CompleteSegmentRequest {
            bucket_name: bucket.clone(),
            root_path: root.into(),
            log_id: log,
            segment_id: 0,
            last_add_confirmed: 9,
        })
        .await?
        .into_inner();
    ensure!(done.last_entry_id == 9, "complete: {done:?}");
    let compacted = c
        .compact_segment(CompactSegmentRequest {
            bucket_name: bucket.clone(),
            root_path: root.into(),
            log_id: log,
            segment_id: 0,
        })
        .await?
        .into_inner();
    ensure!(
        compacted.status.as_ref().map(|s| s.code) == Some(0),
        "compact: {compacted:?}"
    );
    let read = c
        .get_batch_entries_adv(GetBatchEntriesAdvRequest {
            bucket_name: bucket.clone(),
            root_path: root.into(),
            log_id: log,
            segment_id: 0,
            from_entry_id: 0,
            max_entries: 100,
            last_read_state: None,
        })
        .await?
        .into_inner();
    let got: Vec<i64> = read
        .result
        .iter()
        .flat_map(|r| r.entries.iter().map(|e| e.entry_id))
        .collect();
    ensure!(
        got == (0..10).collect::<Vec<_>>(),
        "read {got:?}: {:?}",
        read.status
    );

    let mut scrapes = String::new();
    for node in &nodes {
        let healthz = http_get(node.admin, "/healthz").await?;
        ensure!(
            healthz.starts_with("HTTP/1.1 200"),
            "{}: {healthz}",
            node.name
        );
        let scrape = http_get(node.admin, "/metrics").await?;
        let ns = format!("log_ns=\"{bucket}/{root}\",log_id=\"{log}\"");
        for line in [
            "woodpecker_logstore_live_nodes 3".to_string(),
            format!(
                "woodpecker_server_logstore_operations_total{{node_id=\"{}\",{ns},operation=\"add_entry_batch\",status=\"success\"}} 1",
                node.name
            ),
            format!(
                "woodpecker_server_logstore_operation_latency_count{{node_id=\"{}\",{ns},operation=\"add_entry_batch\",status=\"success\"}} 1",
                node.name
            ),
            "woodpecker_server_file_flush_latency_bucket{".to_string(),
        ] {
            ensure!(
                scrape.contains(&line),
                "{}: no {line} in\n{scrape}",
                node.name
            );
        }
        scrapes.push_str(&scrape);
    }
    ensure!(
        scrapes.contains("operation=\"compact_segment\",status=\"success\"} 1"),
        "no compaction counted"
    );

    // The compose file's service-mode server, its seeds (the nodes' service names) mapped to
    // the nodes here: Kafka records go through the quorum of three.
    let tenant = serve_through_the_nodes(otlp, run, &nodes).await?;
    for node in &nodes {
        let scrape = http_get(node.admin, "/metrics").await?;
        // Each node labels its flushes with the server's tenant, not its own empty namespace.
        let line = format!(
            "woodpecker_server_file_flush_latency_count{{node_id=\"{}\",log_ns=\"{tenant}\",",
            node.name
        );
        ensure!(
            scrape.contains(&line),
            "{}: no {line} in\n{scrape}",
            node.name
        );
        scrapes.push_str(&scrape);
    }
    for node in nodes {
        node.stop().await?;
    }
    Ok(scrapes)
}

/// Runs the compose file's `woodpecker-service` (its config file: `storage.type: service`,
/// seeds `logstore-N:18080`) against `nodes`, produces and consumes through it, and stops it.
/// Returns the tenant (`<bucket>/<rootPath>`) it wrote as.
async fn serve_through_the_nodes(
    otlp: SocketAddr,
    run: &str,
    nodes: &[LogStoreProc],
) -> Result<String> {
    let temp = tempfile::tempdir()?;
    let (args, env_names) = compose_serve("woodpecker-service", otlp, &temp.path().join("data"))?;
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .context("the service-mode server has no --config")?;
    let config = yaml(Path::new(config))?;
    ensure!(
        config["woodpecker"]["storage"]["type"].as_str() == Some("service"),
        "the service-mode server's config is not storage.type: service"
    );
    let mut seeds = Vec::new();
    for pool in config["woodpecker"]["client"]["quorum"]["quorumBufferPools"]
        .as_sequence()
        .context("no quorumBufferPools")?
    {
        for seed in strings(&pool["seeds"])? {
            let (name, _) = seed.split_once(':').context("seed without port")?;
            let node = nodes
                .iter()
                .find(|n| n.name == name)
                .with_context(|| format!("seed {seed} is no compose LogStore node"))?;
            seeds.push(node.service.to_string());
        }
    }
    ensure!(seeds.len() == 3, "seeds {seeds:?}");
    let mut envs = service_env(&env_names, run)?;
    envs.push((
        "WOODPECKER_CONFIG__WOODPECKER__CLIENT__QUORUM__QUORUMBUFFERPOOLS".into(),
        format!("[{{name: compose, seeds: [{}]}}]", seeds.join(", ")),
    ));
    let serve = Serve::start(&args, &envs).await?;
    produce_and_consume(&serve.kafka.to_string(), &format!("service-{run}"), 100).await?;
    serve.stop().await?;
    let root = config["minio"]["rootPath"].as_str().unwrap_or("files");
    Ok(format!("wp-{run}/{root}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composed_processes_serve_kafka_logstore_rpcs_metrics_and_traces() -> Result<()> {
    let run = format!("{:x}", rand::random::<u32>());
    let dashboard = dashboard_metrics()?;
    let collector = Collector::default();
    let otlp = collector.start().await?;
    let mut scrapes = String::new();

    // The compose server: etcd + MinIO.
    let temp = tempfile::tempdir()?;
    let (args, env_names) = compose_serve("woodpecker", otlp, &temp.path().join("data"))?;
    let envs = service_env(&env_names, &run)?;
    let serve = Serve::start(&args, &envs).await?;
    let health = std::process::Command::new(woodpecker_bin()?)
        .args(["health", "--addr", &serve.metrics.to_string()])
        .output()?;
    ensure!(
        health.status.success(),
        "woodpecker health: {}",
        String::from_utf8_lossy(&health.stderr)
    );
    let healthz = serve.get("/healthz").await?;
    ensure!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    produce_and_consume(&serve.kafka.to_string(), &format!("compose-{run}"), 300).await?;
    let scrape = serve.get("/metrics").await?;
    for line in [
        "woodpecker_server_object_storage_operations_total{",
        "operation=\"condition_put_object\",status=\"success\"}",
        "woodpecker_client_append_latency_bucket{",
        "woodpecker_kafka_request_latency_seconds_count{api=\"Produce\"}",
    ] {
        ensure!(scrape.contains(line), "no {line} in\n{scrape}");
    }
    scrapes.push_str(&scrape);
    serve.stop().await?;

    // The compose file's LogStore nodes, in the bucket that server made.
    scrapes.push_str(&run_composed_logstores(otlp, &run).await?);

    // The embedded default (local disk): the local-disk metrics.
    let local = tempfile::tempdir()?;
    let args: Vec<String> = [
        "serve",
        "--data-dir",
        &local.path().display().to_string(),
        "--kafka-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--milvus-addr",
        "127.0.0.1:0",
        "--otlp-endpoint",
        &format!("http://{otlp}"),
    ]
    .map(str::to_string)
    .to_vec();
    let serve = Serve::start(&args, &[]).await?;
    produce_and_consume(&serve.kafka.to_string(), &format!("local-{run}"), 300).await?;
    let scrape = serve.get("/metrics").await?;
    ensure!(
        scrape.contains("woodpecker_server_fsync_latency_seconds_count{"),
        "{scrape}"
    );
    scrapes.push_str(&scrape);
    serve.stop().await?;

    // Every panel's metrics were served, with samples.
    let served = sampled(&scrapes);
    let mut missing = Vec::new();
    for (panel, names) in &dashboard {
        for name in names {
            if !served.contains(name) {
                missing.push(format!("{panel}: {name}"));
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "dashboard queries the server does not serve:\n{}",
        missing.join("\n")
    );

    // Both servers exported their spans before exiting.
    let spans = collector.names();
    for name in [
        "kafka.request",
        "wal.append",
        "logstore.flush",
        "object.put",
        "storage.fsync",
        "grpc.serve",
    ] {
        ensure!(spans.contains(name), "no `{name}` span in {spans:?}");
    }
    ensure!(
        collector
            .services()
            .iter()
            .any(|s| s.contains("woodpecker")),
        "service names {:?}",
        collector.services()
    );
    Ok(())
}

// --- flags used by the deployment files ----------------------------------------------------

/// The `--flags` of `woodpecker <sub> --help`, or `None` when this build has no `sub`.
fn flags_of(sub: &str) -> Result<Option<BTreeSet<String>>> {
    let out = std::process::Command::new(woodpecker_bin()?)
        .args([sub, "--help"])
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(Some(
        help.split_whitespace()
            .filter(|w| w.starts_with("--"))
            .map(|w| {
                w.trim_end_matches([',', '.'])
                    .split(['=', '['])
                    .next()
                    .unwrap_or(w)
                    .to_string()
            })
            .collect(),
    ))
}

/// `--flag` words of `args` (`--flag=value` counts as `--flag`).
fn flags_in<'a>(args: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

#[test]
fn every_flag_the_deployment_files_use_exists() -> Result<()> {
    let mut uses: Vec<(String, String, BTreeSet<String>)> = Vec::new();

    // Dockerfile: CMD (serve) and HEALTHCHECK (health).
    let dockerfile = std::fs::read_to_string(deployments().join("Dockerfile"))?;
    for line in dockerfile.lines() {
        let json = line
            .trim()
            .strip_prefix("CMD ")
            .map(str::trim)
            .filter(|j| j.starts_with('['));
        if let Some(json) = json {
            let words: Vec<String> = serde_json::from_str(json)?;
            let (sub, rest) = match words.first().map(String::as_str) {
                Some("woodpecker") => (words[1].clone(), &words[2..]),
                Some(s) => (s.to_string(), &words[1..]),
                None => bail!("empty CMD"),
            };
            uses.push((
                "Dockerfile".into(),
                sub,
                flags_in(rest.iter().map(String::as_str)),
            ));
        }
    }
    ensure!(
        uses.iter().any(|(_, s, _)| s == "serve") && uses.iter().any(|(_, s, _)| s == "health"),
        "the Dockerfile runs serve and checks health: {uses:?}"
    );

    // Compose: every service running the image.
    let compose = yaml(&deployments().join("docker-compose.yaml"))?;
    let mut gated = Vec::new();
    for (name, service) in compose["services"].as_mapping().context("no services")? {
        let name = name.as_str().unwrap_or("?").to_string();
        if service["image"].as_str() != Some("woodpecker-rs:latest") {
            continue;
        }
        let command = strings(&service["command"])?;
        let sub = command.first().context("empty command")?.clone();
        if sub == "logstore" {
            gated.push(name.clone());
            let profiles = strings(&service["profiles"]).unwrap_or_default();
            ensure!(
                profiles == ["service-mode"],
                "compose service {name} runs a LogStore outside the service-mode profile (the compose server does not need them)"
            );
        }
        if let Ok(test) = strings(&service["healthcheck"]["test"])
            && test.get(1).map(String::as_str) == Some("woodpecker")
        {
            uses.push((
                format!("compose {name} healthcheck"),
                test[2].clone(),
                flags_in(test[3..].iter().map(String::as_str)),
            ));
        }
        uses.push((
            format!("compose {name}"),
            sub,
            flags_in(command[1..].iter().map(String::as_str)),
        ));
    }
    ensure!(gated.len() == 3, "three LogStore services: {gated:?}");

    // Helm: the args of each template's container.
    let templates = deployments().join("helm/woodpecker/templates");
    for (file, sub) in [("serve.yaml", "serve"), ("logstore.yaml", "logstore")] {
        let text = std::fs::read_to_string(templates.join(file))?;
        let args = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|f| format!("--{f}"))
            .collect::<Vec<_>>();
        ensure!(!args.is_empty(), "{file} passes no flags");
        uses.push((
            format!("helm {file}"),
            sub.into(),
            flags_in(args.iter().map(String::as_str)),
        ));
    }
    let values = yaml(&deployments().join("helm/woodpecker/values.yaml"))?;
    ensure!(
        values["logstore"]["enabled"].as_bool() == Some(false),
        "the chart's LogStores must be off by default (its default config does not use them)"
    );

    for (place, sub, flags) in &uses {
        let known = flags_of(sub)?
            .with_context(|| format!("{place}: this build has no `woodpecker {sub}`"))?;
        let unknown: Vec<_> = flags.difference(&known).collect();
        ensure!(
            unknown.is_empty(),
            "{place}: `woodpecker {sub}` has no {unknown:?} (it has {known:?})"
        );
    }
    Ok(())
}

#[test]
fn dashboard_queries_name_metrics() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(woodpecker_a_bucket{job=~\"$job\"}[1m]))) / xwoodpecker_b + woodpecker_c",
    );
    assert_eq!(
        names,
        ["woodpecker_a_bucket", "woodpecker_c"]
            .map(str::to_string)
            .into()
    );
    let served = sampled(
        "# HELP woodpecker_x x\n# TYPE woodpecker_x counter\nwoodpecker_y{a=\"1\"} 2\nwoodpecker_z 1\n",
    );
    assert_eq!(
        served,
        ["woodpecker_y", "woodpecker_z"].map(str::to_string).into()
    );
}
