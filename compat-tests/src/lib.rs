//! Support for the compatibility tests: starting `woodpecker serve` as a real process and
//! stopping it the way an operator would (SIGTERM), so that a restart on the same data
//! directory and the same port is what a client sees in production.
//!
//! The `woodpecker` binary is found through `WOODPECKER_BIN`, else next to the test binary
//! (`target/<profile>/woodpecker`, built by `cargo build -p woodpecker`; `scripts/test` builds
//! it before the tests run). A missing binary is an error, never a skipped test.

// The harness waits for real processes (brokers, Go programs, Milvus) in real time.
#![allow(clippy::disallowed_methods)]

pub mod clients;
pub mod milvus;
pub mod ports;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A test service variable (`WOODPECKER_TEST_*`, exported by `scripts/services start`); a
/// missing one fails the test with how to start the services, never skips it.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(scripts/services start)\"` first (or use scripts/test)")
    })
}

/// The Go toolchain the tests that build Go programs use: `go` on PATH, else
/// `/usr/local/go/bin/go`.
pub fn go_toolchain() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/local/go/bin")]) {
        let candidate = dir.join("go");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no Go toolchain found (go on PATH or /usr/local/go/bin/go); Go >= 1.25 is needed")
}

/// The `woodpecker` binary the tests run.
pub fn woodpecker_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WOODPECKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test binary")?;
    // target/<profile>/deps/<test> -> target/<profile>/woodpecker
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary has no target directory")?;
    let bin = profile_dir.join("woodpecker");
    if !bin.is_file() {
        bail!(
            "{} does not exist: run `cargo build -p woodpecker` first or set WOODPECKER_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Listener addresses to ask for (`None`: any free port on 127.0.0.1).
#[derive(Debug, Default, Clone, Copy)]
struct Addrs {
    kafka: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    milvus: Option<SocketAddr>,
}

/// A running `woodpecker serve`.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
    /// The Kafka listener.
    pub kafka_addr: SocketAddr,
    /// The Prometheus metrics endpoint.
    pub metrics_addr: SocketAddr,
    /// The Milvus WAL gRPC service.
    pub milvus_addr: SocketAddr,
}

impl Server {
    /// Starts a server on a fresh data directory with the embedded default.
    pub async fn start() -> Result<Server> {
        Self::start_with(&[]).await
    }

    /// Starts a server on a fresh data directory with extra `serve` arguments.
    pub async fn start_with(extra_args: &[&str]) -> Result<Server> {
        let temp = tempfile::tempdir().context("creating a data directory")?;
        let data_dir = temp.path().join("data");
        let mut server = Self::spawn(&data_dir, Addrs::default(), extra_args).await?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// Starts a server on `data_dir` (kept after the server stops).
    pub async fn start_in(data_dir: &Path, extra_args: &[&str]) -> Result<Server> {
        Self::spawn(data_dir, Addrs::default(), extra_args).await
    }

    async fn spawn(data_dir: &Path, addrs: Addrs, extra_args: &[&str]) -> Result<Server> {
        let bin = woodpecker_bin()?;
        let any =
            |a: Option<SocketAddr>| a.map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let kafka = any(addrs.kafka);
        let metrics = any(addrs.metrics);
        let milvus = any(addrs.milvus);
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--kafka-addr")
            .arg(&kafka)
            .arg("--metrics-addr")
            .arg(&metrics)
            .arg("--milvus-addr")
            .arg(&milvus)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut kafka_addr = None;
        let mut metrics_addr = None;
        let mut milvus_addr = None;
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("kafka listening on ") {
                    kafka_addr = Some(addr.trim().parse::<SocketAddr>()?);
                } else if let Some(addr) = line.strip_prefix("metrics listening on ") {
                    metrics_addr = Some(addr.trim().parse::<SocketAddr>()?);
                } else if let Some(addr) = line.strip_prefix("milvus wal listening on ") {
                    milvus_addr = Some(addr.trim().parse::<SocketAddr>()?);
                }
                if kafka_addr.is_some() && metrics_addr.is_some() && milvus_addr.is_some() {
                    return Ok::<_, anyhow::Error>(true);
                }
            }
            Ok(false)
        };
        let started = tokio::time::timeout(Duration::from_secs(120), ready)
            .await
            .context("woodpecker serve did not report its listeners within 120 s")??;
        if !started {
            let status = child.wait().await?;
            bail!("woodpecker serve exited before it was ready: {status}");
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            kafka_addr: kafka_addr.context("no kafka address")?,
            metrics_addr: metrics_addr.context("no metrics address")?,
            milvus_addr: milvus_addr.context("no milvus address")?,
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    /// The server process's id while it runs (for signals such as SIGSTOP and SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server with SIGTERM and waits for a clean exit (exit status 0).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().context("the server has no pid")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed: {status}");
        }
        let exit = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .context("woodpecker serve did not exit within 60 s of SIGTERM")??;
        if !exit.success() {
            bail!("woodpecker serve exited with {exit} after SIGTERM");
        }
        Ok(())
    }

    /// Stops the server (SIGTERM) and starts it again on the same data directory and the same
    /// addresses, so that connected clients reconnect to it.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or closed) and waits until
    /// it is gone.
    pub async fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // tokio sends SIGKILL.
        child.start_kill().context("killing the server")?;
        tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .context("woodpecker serve did not exit within 60 s of SIGKILL")??;
        Ok(())
    }

    /// Starts the server again on the same data directory and the same addresses, after
    /// [`stop`](Self::stop) or [`kill`](Self::kill).
    pub async fn start_again(&mut self) -> Result<()> {
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let mut last = None;
        // The port may linger for a moment after the old process exits.
        for _ in 0..50 {
            let addrs = Addrs {
                kafka: Some(self.kafka_addr),
                metrics: Some(self.metrics_addr),
                milvus: Some(self.milvus_addr),
            };
            match Self::spawn(&self.data_dir, addrs, &args).await {
                Ok(mut next) => {
                    self.child = next.child.take();
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    /// The metrics endpoint's text (GET /metrics).
    pub async fn metrics(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok(text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
