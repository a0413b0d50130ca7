//! Running the external client programs of `compat-tests/clients/` as subprocesses: finding
//! them through the variables `scripts/compat-tools env` prints, and reading the one
//! `RESULT <json>` line each prints (what it observed and the failures it found).
//!
//! A missing variable fails the test with how to install the clients; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A failure guard for one client run, not a performance bound.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// How to get the clients a test needs.
pub const INSTALL_HINT: &str = "run `scripts/compat-tools install && eval \"$(scripts/compat-tools env)\"` \
     and `export WOODPECKER_COMPAT_KAFKA_TOOLS_CP=$(scripts/kafka-tools classpath)` before \
     `cargo test` (scripts/test does this)";

/// A variable `scripts/compat-tools env` exports; an error saying how to set it when unset.
pub fn required_env(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => bail!("{name} is not set: {INSTALL_HINT}"),
    }
}

/// `compat-tests/clients`.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// A Python client script from `clients/python`, run by the compat venv's interpreter.
pub fn python(script: &str) -> Result<Command> {
    let interpreter = required_env("WOODPECKER_COMPAT_PYTHON")?;
    let dir = clients_dir().join("python");
    let mut cmd = Command::new(interpreter);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        // No __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    Ok(cmd)
}

/// One of Kafka's Java tools (a class of the Maven jars `scripts/kafka-tools` fetches), as
/// its `bin/kafka-*.sh` script would run it.
pub fn kafka_tool(class: &str) -> Result<Command> {
    let mut cmd = Command::new(required_env("WOODPECKER_COMPAT_JAVA")?);
    cmd.arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg(required_env("WOODPECKER_COMPAT_KAFKA_TOOLS_CP")?)
        .arg(class);
    Ok(cmd)
}

/// One of the Java client programs of `clients/java` (`main`: its source path below
/// `src/main/java`, `class`: its class name), after checking that the compiled classes on
/// `WOODPECKER_COMPAT_JAVA_CP` were built from the current source.
pub fn java_program(main: &str, class: &str) -> Result<Command> {
    let launcher = required_env("WOODPECKER_COMPAT_JAVA")?;
    let classpath = required_env("WOODPECKER_COMPAT_JAVA_CP")?;
    let source = clients_dir().join("java/src/main/java").join(main);
    let source_text =
        std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
    // scripts/compat-tools puts a copy of the source it compiled beside the classes.
    let compiled = classpath
        .split(':')
        .map(|entry| Path::new(entry).join(main))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "WOODPECKER_COMPAT_JAVA_CP has no compiled {main} ({classpath}): {INSTALL_HINT}"
            )
        })?;
    if std::fs::read(&compiled)? != source_text {
        bail!(
            "the compiled Java clients ({}) were not built from the current {}: {INSTALL_HINT}",
            compiled.display(),
            source.display()
        );
    }
    let mut cmd = Command::new(launcher);
    cmd.arg("-cp").arg(classpath).arg(class);
    Ok(cmd)
}

/// What a client run printed.
#[derive(Debug)]
pub struct ClientRun {
    /// What ran (for messages).
    pub what: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ClientRun {
    /// Standard output when the run exited 0; else an error with what it printed.
    pub fn ok(&self) -> Result<&str> {
        if !self.status.success() {
            bail!(
                "{} failed ({})\nstdout:\n{}\nstderr (tail):\n{}",
                self.what,
                self.status,
                self.stdout,
                self.stderr_tail()
            );
        }
        Ok(&self.stdout)
    }

    /// Standard output and error together when the run failed; an error when it exited 0.
    pub fn failed(&self) -> Result<String> {
        if self.status.success() {
            bail!(
                "{} succeeded, a failure was expected:\n{}",
                self.what,
                self.stdout
            );
        }
        Ok(format!("{}\n{}", self.stdout, self.stderr))
    }

    /// The last 40 lines of standard error.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The `RESULT` summary; an error naming the failures unless the run succeeded with none.
    pub fn summary(&self) -> Result<Value> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| {
                anyhow!(
                    "{} ({}) printed no RESULT line\nstdout:\n{}\nstderr (tail):\n{}",
                    self.what,
                    self.status,
                    self.stdout,
                    self.stderr_tail()
                )
            })?;
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: parsing its RESULT line {line}", self.what))?;
        let failures = v["failures"].as_array().cloned().unwrap_or_default();
        if !self.status.success() || !failures.is_empty() {
            let list: Vec<String> = failures
                .iter()
                .map(|f| format!("  - {}", f.as_str().unwrap_or_default()))
                .collect();
            bail!(
                "{} failed ({}):\n{}\nsummary: {}\nstderr (tail):\n{}",
                self.what,
                self.status,
                list.join("\n"),
                line,
                self.stderr_tail()
            );
        }
        Ok(v)
    }
}

/// Runs `cmd` to its end (killed after [`CLIENT_TIMEOUT`]) with no input.
pub async fn run(what: &str, cmd: Command) -> Result<ClientRun> {
    run_with_input(what, cmd, None).await
}

/// Runs `cmd` to its end (killed after [`CLIENT_TIMEOUT`]), feeding it `stdin`.
pub async fn run_with_input(
    what: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
) -> Result<ClientRun> {
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
        let mut pipe = child.stdin.take().context("no stdin pipe")?;
        pipe.write_all(input).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {CLIENT_TIMEOUT:?}; killed"))??;
    let run = ClientRun {
        what: what.to_string(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown by the test harness when the test fails.
    eprintln!(
        "--- {what}: {}\n{}\n{}",
        run.status,
        run.stdout.trim_end(),
        run.stderr.trim_end()
    );
    Ok(run)
}
