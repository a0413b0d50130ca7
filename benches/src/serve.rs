//! A `woodpecker serve` child process for the benchmarks that drive the server from outside
//! (the Kafka shim and Milvus WAL benchmarks): started on free loopback ports, its listener
//! addresses read from the lines it prints, stopped with SIGTERM and a check of its exit.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long `woodpecker serve` may take to print its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the metrics line may lag behind the other listeners.
const METRICS_GRACE: Duration = Duration::from_secs(2);

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running `woodpecker serve`; killed when dropped without [`Serve::stop`].
#[derive(Debug)]
pub(crate) struct Serve {
    child: Child,
    /// The Kafka listener.
    pub(crate) kafka_addr: String,
    /// The Milvus WAL gRPC listener.
    pub(crate) milvus_addr: String,
    /// The metrics endpoint, when the server printed it.
    metrics_addr: Option<String>,
    log: PathBuf,
}

impl Serve {
    /// Starts `woodpecker serve` on `data_dir` with one partition per topic, every listener
    /// on a free loopback port, its stderr in `log`.
    pub(crate) fn start(woodpecker: &Path, data_dir: &Path, log: PathBuf) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(woodpecker)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--kafka-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--milvus-addr", "127.0.0.1:0"])
            .args(["--kafka-partitions", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with `cargo build --release -p woodpecker`, or \
                     give --woodpecker PATH)",
                    woodpecker.display()
                )
            })?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the ready lines, then keeps draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                for (prefix, kind) in [
                    ("kafka listening on ", Listener::Kafka),
                    ("milvus wal listening on ", Listener::Milvus),
                    ("metrics listening on ", Listener::Metrics),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((kind, addr.trim().to_owned()));
                    }
                }
            }
        });
        let mut server = Serve {
            child,
            kafka_addr: String::new(),
            milvus_addr: String::new(),
            metrics_addr: None,
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // The metrics line follows the others; it is only waited for a moment.
        let mut metrics_deadline = None;
        while server.kafka_addr.is_empty()
            || server.milvus_addr.is_empty()
            || server.metrics_addr.is_none()
        {
            let until = metrics_deadline.unwrap_or(deadline);
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok((Listener::Kafka, addr)) => server.kafka_addr = addr,
                Ok((Listener::Milvus, addr)) => server.milvus_addr = addr,
                Ok((Listener::Metrics, addr)) => server.metrics_addr = Some(addr),
                Err(_) if metrics_deadline.is_some() => break,
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    bail!(
                        "{} serve did not print its listeners ({}); its log:\n{}",
                        woodpecker.display(),
                        status.map_or_else(|| "timed out".to_owned(), |s| s.to_string()),
                        server.log_tail()
                    );
                }
            }
            if metrics_deadline.is_none()
                && !server.kafka_addr.is_empty()
                && !server.milvus_addr.is_empty()
            {
                metrics_deadline = Some(Instant::now() + METRICS_GRACE);
            }
        }
        Ok(server)
    }

    /// CPU time (user + system) the server used so far, from /proc (Linux, USER_HZ 100).
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }

    /// A metric of the endpoint (`GET /metrics`): `name{labels}` exactly, or `name` summed
    /// over its label sets.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        use std::io::Write as _;
        let addr = self.metrics_addr.as_ref()?;
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            conn,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                // `name` alone sums every label set; `name{labels}` picks one.
                let matches = key == name || key.split('{').next() == Some(name);
                matches.then(|| value.trim().parse().ok())?
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The last lines of the server's log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            bail!("could not send SIGTERM to the server (pid {pid})");
        }
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the server exited with {status} after SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            if t0.elapsed() > STOP_TIMEOUT {
                bail!(
                    "the server did not stop within {}s of SIGTERM (killed); its log:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Listener {
    Kafka,
    Milvus,
    Metrics,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }
}
