//! The published Go Woodpecker client and this engine on one etcd and one bucket: a log created
//! by either side stays visible to both, whatever the order of connections.
//!
//! The Go side is `wp-compat` (compat-tests/clients/go-woodpecker), built against the pinned
//! module versions from the Go module proxy by `scripts/go-compat` (the first build takes
//! minutes; `scripts/test` builds them before the tests):
//!
//! * v0.1.29 and v0.1.13 (the line Milvus 2.6 embeds) write under the fixed prefix
//!   `woodpecker/`;
//! * v0.1.35 uses `<etcd.rootPath>/<woodpecker.meta.prefix>` on a store without legacy keys
//!   and `woodpecker/` on one with them; it runs here with Milvus's `by-dev` and `woodpecker`.
//!
//! Our side is the `woodpecker` command with its default `prefixMode: auto`. Every command of
//! either side is a new process, so each step is a fresh connection that chooses its prefix
//! again after the other side has written. Each test starts its own etcd (the Go clients
//! write at the root of the key space, so a shared etcd would mix tests) and uses its own
//! bucket on the MinIO of `scripts/services` (`WOODPECKER_TEST_S3_*`).
//!
//! Needs: the `woodpecker` binary (`cargo build -p woodpecker`), Debian's `etcd` on PATH or
//! in /usr/bin (`scripts/services install`), Go, and MinIO.

// Real processes answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use compat_tests::woodpecker_bin;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

fn required_env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!(
            "{name} is not set: this test needs MinIO; run `eval \"$(scripts/services start)\"` \
             first (scripts/test does)"
        )
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compat-tests sits in the workspace")
        .to_path_buf()
}

/// One etcd member of this test's own, on free ports, removed with its data when dropped.
struct PrivateEtcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn etcd_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    }) {
        return Ok(path);
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    ensure!(
        debian.is_file(),
        "no etcd binary on PATH or in /usr/bin: run `scripts/services install` (Debian's \
         etcd-server)"
    );
    Ok(debian)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateEtcd {
    async fn start() -> Result<PrivateEtcd> {
        let bin = etcd_bin()?;
        let mut last = None;
        // Free ports are only free until someone takes them; try a few pairs.
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let (client, peer) = (free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join("etcd.log"))?;
            let child = Command::new(&bin)
                .arg("--name")
                .arg("t")
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(format!("t={peer_url}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut etcd = PrivateEtcd {
                child,
                endpoint: format!("127.0.0.1:{client}"),
                _dir: dir,
            };
            match etcd.wait_healthy().await {
                Ok(()) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited with {status} before it was healthy");
            }
            if let Ok(mut s) = tokio::net::TcpStream::connect(&self.endpoint).await {
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").await?;
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                if text.contains("\"health\":\"true\"") {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("etcd at {} not healthy within 30 s", self.endpoint)
    }
}

/// The shared object store: MinIO from `scripts/services`, one fresh bucket per test.
struct Bucket {
    host: String,
    port: u16,
    access_key: String,
    secret_key: String,
    name: String,
}

impl Bucket {
    fn fresh(tag: &str) -> Result<Bucket> {
        let endpoint = required_env("WOODPECKER_TEST_S3_ENDPOINT")?;
        let hostport = endpoint
            .strip_prefix("http://")
            .context("WOODPECKER_TEST_S3_ENDPOINT is not an http:// URL")?
            .trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .context("WOODPECKER_TEST_S3_ENDPOINT has no port")?;
        Ok(Bucket {
            host: host.to_string(),
            port: port.parse()?,
            access_key: required_env("WOODPECKER_TEST_S3_ACCESS_KEY_ID")?,
            secret_key: required_env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY")?,
            name: format!("go-compat-{tag}-{:08x}", rand::random::<u32>()),
        })
    }
}

/// What a finished command printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// How long one command of either side may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long building a Go program may take (a cold build fetches and compiles the module and
/// its dependencies: minutes).
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

async fn run(what: &str, cmd: Command, stdin: Option<&[u8]>) -> Result<Output> {
    run_within(what, cmd, stdin, COMMAND_TIMEOUT).await
}

async fn run_within(
    what: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("no stdin")?;
        pipe.write_all(input).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish within {} s", limit.as_secs()))??;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The published Go client at one module version, pointed at the test's etcd and bucket.
struct Go {
    bin: PathBuf,
    version: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Go {
    /// `milvus`: set Milvus's `etcd.rootPath` (`by-dev`) and `woodpecker.meta.prefix`
    /// (`woodpecker`), which the releases with a configured prefix join.
    async fn new(version: &str, etcd: &PrivateEtcd, bucket: &Bucket, milvus: bool) -> Result<Go> {
        let script = repo_root().join("scripts/go-compat");
        let mut cmd = Command::new(&script);
        cmd.arg("path").arg(version);
        let built = run_within("scripts/go-compat path", cmd, None, BUILD_TIMEOUT).await?;
        ensure!(
            built.ok,
            "scripts/go-compat path {version} failed: {}",
            built.stderr
        );
        let bin = PathBuf::from(built.stdout.trim());
        let dir = tempfile::tempdir()?;
        let mut args = vec![
            "-data".to_string(),
            dir.path().display().to_string(),
            "-etcd".into(),
            etcd.endpoint.clone(),
            "-s3-endpoint".into(),
            format!("{}:{}", bucket.host, bucket.port),
            "-s3-access-key".into(),
            bucket.access_key.clone(),
            "-s3-secret-key".into(),
            bucket.secret_key.clone(),
            "-bucket".into(),
            bucket.name.clone(),
        ];
        if milvus {
            args.extend(
                ["-etcd-root-path", "by-dev", "-meta-prefix", "woodpecker"].map(String::from),
            );
        }
        let go = Go {
            bin,
            version: version.to_string(),
            args,
            _dir: dir,
        };
        let v = go.call(&["version"]).await?;
        ensure!(
            v["version"] == version,
            "wp-compat reports module {} for {version}",
            v["version"]
        );
        Ok(go)
    }

    /// Runs one command; the reply's JSON when it succeeded.
    async fn call(&self, args: &[&str]) -> Result<Value> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).args(args);
        let what = format!("Go Woodpecker {} {}", self.version, args.join(" "));
        let out = run(&what, cmd, None).await?;
        let line = out.stdout.lines().last().unwrap_or_default();
        let reply: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{what}: no JSON reply (stdout {:?}, stderr tail {:?})",
                out.stdout,
                tail(&out.stderr)
            )
        })?;
        ensure!(
            out.ok && reply["ok"] == true,
            "{what} failed: {} (stderr tail {:?})",
            reply["error"],
            tail(&out.stderr)
        );
        Ok(reply)
    }

    async fn list(&self) -> Result<BTreeSet<String>> {
        let reply = self.call(&["list"]).await?;
        strings(&reply["logs"])
    }

    async fn create(&self, log: &str) -> Result<()> {
        self.call(&["create", log]).await.map(drop)
    }

    async fn write(&self, log: &str, payloads: &[&str]) -> Result<()> {
        let mut args = vec!["write", log];
        args.extend_from_slice(payloads);
        self.call(&args).await.map(drop)
    }

    async fn read(&self, log: &str, count: usize) -> Result<Vec<String>> {
        let n = count.to_string();
        let reply = self.call(&["read", log, &n]).await?;
        reply["entries"]
            .as_array()
            .context("no entries")?
            .iter()
            .map(|e| {
                e["payload"]
                    .as_str()
                    .map(str::to_string)
                    .context("entry without payload")
            })
            .collect()
    }
}

fn strings(v: &Value) -> Result<BTreeSet<String>> {
    match v {
        Value::Null => Ok(BTreeSet::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).context("not a string"))
            .collect(),
        other => bail!("not a list: {other}"),
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The `woodpecker` command on the same etcd and bucket, with a Go `woodpecker.yaml`.
struct Ours {
    bin: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ours {
    /// `format`: the block format written (5 for Go v0.1.13 readers); `root_path`: the key
    /// prefix in the bucket (`files` like the Go side).
    fn new(etcd: &PrivateEtcd, bucket: &Bucket, format: u32, root_path: &str) -> Result<Ours> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("woodpecker.yaml");
        std::fs::write(
            &config,
            format!(
                "woodpecker:
  meta:
    type: etcd
    prefix: woodpecker
  storage:
    type: minio
    rootPath: {data}
  logstore:
    formatVersion: {format}
etcd:
  endpoints: [\"{etcd}\"]
  rootPath: by-dev
minio:
  address: {host}
  port: {port}
  accessKeyID: {access}
  secretAccessKey: {secret}
  useSSL: false
  bucketName: {bucket}
  createBucket: true
  rootPath: {root_path}
  cloudProvider: aws
",
                data = dir.path().join("data").display(),
                etcd = etcd.endpoint,
                host = bucket.host,
                port = bucket.port,
                access = bucket.access_key,
                secret = bucket.secret_key,
                bucket = bucket.name,
            ),
        )?;
        Ok(Ours {
            bin: woodpecker_bin()?,
            config,
            _dir: dir,
        })
    }

    /// Runs `woodpecker --config ... ARGS` with `prefixMode` overridden when given.
    async fn exec(
        &self,
        mode: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("WOODPECKER_CONFIG__WOODPECKER__META__PREFIXMODE");
        if let Some(mode) = mode {
            cmd.env("WOODPECKER_CONFIG__WOODPECKER__META__PREFIXMODE", mode);
        }
        run(&format!("woodpecker {}", args.join(" ")), cmd, stdin).await
    }

    async fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
        let out = self.exec(None, args, stdin).await?;
        ensure!(
            out.ok,
            "woodpecker {} failed: {}",
            args.join(" "),
            out.stderr.trim()
        );
        Ok(out.stdout)
    }

    async fn list(&self) -> Result<BTreeSet<String>> {
        Ok(self
            .ok(&["log", "list"], None)
            .await?
            .lines()
            .map(str::to_string)
            .collect())
    }

    async fn create(&self, log: &str) -> Result<()> {
        self.ok(&["log", "create", log], None).await.map(drop)
    }

    async fn write(&self, log: &str, payloads: &[&str]) -> Result<()> {
        let input: String = payloads.iter().map(|p| format!("{p}\n")).collect();
        self.ok(&["log", "write", log], Some(input.as_bytes()))
            .await
            .map(drop)
    }

    async fn read(&self, log: &str) -> Result<Vec<String>> {
        Ok(self
            .ok(&["log", "tail", log], None)
            .await?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The prefix `woodpecker meta prefix` reports in use.
    async fn prefix_in_use(&self) -> Result<String> {
        let out = self.ok(&["meta", "prefix"], None).await?;
        out.lines()
            .find_map(|l| l.strip_prefix("in use: "))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_string)
            .with_context(|| format!("no `in use:` line in {out:?}"))
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn format_for(version: &str) -> u32 {
    // v0.1.13 reads format 5 only (footer without LAC); later releases read both.
    if version == "v0.1.13" { 5 } else { 6 }
}

/// Empty etcd, Go connects first: it creates and writes a log; we see and read it, create our
/// own, and each side then appends to the other's log (taking over its writer).
async fn go_first_then_us(version: &str, milvus: bool, expect_prefix: &str) -> Result<()> {
    let etcd = PrivateEtcd::start().await?;
    let bucket = Bucket::fresh(&format!("gofirst-{}", version.replace('.', "")))?;
    let go = Go::new(version, &etcd, &bucket, milvus).await?;
    let ours = Ours::new(&etcd, &bucket, format_for(version), "files")?;

    go.create("from-go").await?;
    go.write("from-go", &["g0", "g1"]).await?;

    assert_eq!(ours.prefix_in_use().await?, expect_prefix);
    assert_eq!(ours.list().await?, set(&["from-go"]));
    assert_eq!(ours.read("from-go").await?, ["g0", "g1"]);
    ours.create("from-rs").await?;
    ours.write("from-rs", &["r0", "r1"]).await?;
    assert_eq!(ours.list().await?, set(&["from-go", "from-rs"]));

    assert_eq!(go.list().await?, set(&["from-go", "from-rs"]));
    assert_eq!(go.read("from-rs", 2).await?, ["r0", "r1"]);
    go.write("from-rs", &["g2"]).await?;
    ours.write("from-go", &["r2"]).await?;

    // Everyone reconnects once more: nothing moved.
    assert_eq!(ours.list().await?, set(&["from-go", "from-rs"]));
    assert_eq!(ours.read("from-rs").await?, ["r0", "r1", "g2"]);
    assert_eq!(ours.read("from-go").await?, ["g0", "g1", "r2"]);
    assert_eq!(go.list().await?, set(&["from-go", "from-rs"]));
    assert_eq!(go.read("from-go", 3).await?, ["g0", "g1", "r2"]);
    assert_eq!(go.read("from-rs", 3).await?, ["r0", "r1", "g2"]);
    assert_eq!(ours.prefix_in_use().await?, expect_prefix);
    Ok(())
}

/// Empty etcd, we connect first: our log is there for Go, Go's log for us, through reconnects
/// of both sides in turn.
async fn us_first_then_go(version: &str, milvus: bool) -> Result<()> {
    let etcd = PrivateEtcd::start().await?;
    let bucket = Bucket::fresh(&format!("rsfirst-{}", version.replace('.', "")))?;
    let ours = Ours::new(&etcd, &bucket, format_for(version), "files")?;
    // Nothing yet: the prefix every published Go release finds.
    assert_eq!(ours.prefix_in_use().await?, "woodpecker/");
    ours.create("from-rs").await?;
    ours.write("from-rs", &["r0"]).await?;

    let go = Go::new(version, &etcd, &bucket, milvus).await?;
    assert_eq!(go.list().await?, set(&["from-rs"]));
    assert_eq!(go.read("from-rs", 1).await?, ["r0"]);
    go.create("from-go").await?;
    go.write("from-go", &["g0"]).await?;

    // Our next connection, after Go has written: our log is still ours to see.
    assert_eq!(ours.list().await?, set(&["from-go", "from-rs"]));
    assert_eq!(ours.read("from-rs").await?, ["r0"]);
    assert_eq!(ours.read("from-go").await?, ["g0"]);
    ours.write("from-rs", &["r1"]).await?;
    go.write("from-rs", &["g1"]).await?;
    ours.write("from-go", &["r2"]).await?;

    assert_eq!(go.list().await?, set(&["from-go", "from-rs"]));
    assert_eq!(go.read("from-rs", 3).await?, ["r0", "r1", "g1"]);
    assert_eq!(go.read("from-go", 2).await?, ["g0", "r2"]);
    assert_eq!(ours.read("from-rs").await?, ["r0", "r1", "g1"]);
    assert_eq!(ours.read("from-go").await?, ["g0", "r2"]);
    assert_eq!(ours.prefix_in_use().await?, "woodpecker/");
    Ok(())
}

#[tokio::test]
async fn v0_1_29_first_then_us() -> Result<()> {
    go_first_then_us("v0.1.29", false, "woodpecker/").await
}

#[tokio::test]
async fn us_first_then_v0_1_29() -> Result<()> {
    us_first_then_go("v0.1.29", false).await
}

#[tokio::test]
async fn v0_1_13_first_then_us() -> Result<()> {
    go_first_then_us("v0.1.13", false, "woodpecker/").await
}

#[tokio::test]
async fn us_first_then_v0_1_13() -> Result<()> {
    us_first_then_go("v0.1.13", false).await
}

/// v0.1.35 on an empty etcd writes its configured prefix; we follow it there.
#[tokio::test]
async fn v0_1_35_first_then_us() -> Result<()> {
    go_first_then_us("v0.1.35", true, "by-dev/woodpecker/").await
}

/// v0.1.35 after us: it finds our keys under the legacy prefix and uses them.
#[tokio::test]
async fn us_first_then_v0_1_35() -> Result<()> {
    us_first_then_go("v0.1.35", true).await
}

/// A store we initialised under the configured prefix (woodpecker-rs before `auto`, or
/// `prefixMode: configured`) that an older Go client then writes under `woodpecker/`: `auto`
/// refuses to choose and says how, `meta prefix` shows both, and each explicit mode sees its
/// own logs (warning about the others). The Go client keeps seeing its log.
#[tokio::test]
async fn two_populated_prefixes_are_never_switched_silently() -> Result<()> {
    let etcd = PrivateEtcd::start().await?;
    let bucket = Bucket::fresh("conflict")?;
    // Log ids are allocated per prefix: both prefixes have a log 1, so the two sides keep their
    // segments under different bucket paths here (one path would have them share objects).
    let ours = Ours::new(&etcd, &bucket, 6, "files-old")?;
    let configured = Some("configured");
    let out = ours
        .exec(configured, &["log", "create", "old-rs"], None)
        .await?;
    ensure!(out.ok, "{}", out.stderr);
    let out = ours
        .exec(configured, &["log", "write", "old-rs"], Some(b"o0\n"))
        .await?;
    ensure!(out.ok, "{}", out.stderr);

    let go = Go::new("v0.1.29", &etcd, &bucket, false).await?;
    go.create("from-go").await?;
    go.write("from-go", &["g0"]).await?;

    // auto: a clear refusal naming both prefixes, their logs and the setting.
    let out = ours.exec(None, &["log", "list"], None).await?;
    assert!(!out.ok, "auto chose a prefix silently: {}", out.stdout);
    for needle in [
        "`woodpecker` (1 log: from-go)",
        "`by-dev/woodpecker` (1 log: old-rs)",
        "woodpecker.meta.prefixMode",
    ] {
        assert!(
            out.stderr.contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    }
    let out = ours.exec(None, &["meta", "prefix"], None).await?;
    assert!(!out.ok);
    assert!(out.stdout.contains("in use: none"), "{}", out.stdout);
    assert!(
        out.stdout.contains("legacy: woodpecker/ (1 log: from-go)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("configured: by-dev/woodpecker/ (1 log: old-rs)"),
        "{}",
        out.stdout
    );

    // Explicit modes: each sees its prefix's logs and warns about the other's.
    let out = ours
        .exec(configured, &["log", "tail", "old-rs"], None)
        .await?;
    ensure!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["o0"]);
    assert!(
        out.stderr.contains("woodpecker/` (1 log: from-go)"),
        "no warning about the hidden log: {}",
        out.stderr
    );
    let beside_go = Ours::new(&etcd, &bucket, 6, "files")?;
    let out = beside_go
        .exec(Some("legacy"), &["log", "tail", "from-go"], None)
        .await?;
    ensure!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["g0"]);
    assert!(
        out.stderr.contains("by-dev/woodpecker/` (1 log: old-rs)"),
        "no warning about the hidden log: {}",
        out.stderr
    );

    assert_eq!(go.list().await?, set(&["from-go"]));
    assert_eq!(go.read("from-go", 1).await?, ["g0"]);
    Ok(())
}
