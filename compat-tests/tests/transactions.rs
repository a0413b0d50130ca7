//! Transactions (exactly-once) against `woodpecker serve`, judged by clients nobody here
//! wrote: the Java client (transactional producer, `read_committed` consumer,
//! `sendOffsetsToTransaction`), confluent-kafka (librdkafka) and Kafka's own
//! `kafka-transactions.sh` (`org.apache.kafka.tools.TransactionsCommand`); and a
//! consume-transform-produce loop killed with SIGKILL in the middle of a transaction, the
//! client once and the server once, checked for exactly-once output.
//!
//! The clients come from `scripts/compat-tools` (`WOODPECKER_COMPAT_PYTHON`,
//! `WOODPECKER_COMPAT_JAVA`, `WOODPECKER_COMPAT_JAVA_CP`) and Kafka's tools from
//! `scripts/kafka-tools` (`WOODPECKER_COMPAT_KAFKA_TOOLS_CP`, the output of
//! `scripts/kafka-tools classpath`); `scripts/test` sets all of them. A missing variable fails
//! the test; nothing is skipped. The client programs are
//! `compat-tests/clients/java/.../TxnClients.java` and
//! `compat-tests/clients/python/confluent_transactions.py`.

use std::process::Stdio;

use anyhow::{Context, Result, anyhow, ensure};
use compat_tests::Server;
use compat_tests::clients::{CLIENT_TIMEOUT, ClientRun, java_program, kafka_tool, python};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The Java transaction clients (`clients/java`, `TxnClients`).
fn java_txn() -> Result<Command> {
    java_program(
        "woodpecker/compat/TxnClients.java",
        "woodpecker.compat.TxnClients",
    )
}

/// `kafka-transactions.sh` from Kafka's tool jars.
fn kafka_transactions(bootstrap: &str) -> Result<Command> {
    let mut cmd = kafka_tool("org.apache.kafka.tools.TransactionsCommand")?;
    cmd.args(["--bootstrap-server", bootstrap]);
    Ok(cmd)
}

/// A client process whose stdout is watched line by line while it runs.
struct Live {
    what: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl Live {
    fn spawn(what: &str, mut cmd: Command) -> Result<Live> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let mut out = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        let mut err = child.stderr.take().context("no stderr pipe")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Ok(Live {
            what: what.to_string(),
            child,
            lines,
            stdout: String::new(),
            stderr,
        })
    }

    /// Waits for a line equal to `wanted` (the client is then exactly at that point: it
    /// prints and flushes before it goes on).
    async fn wait_for(&mut self, wanted: &str) -> Result<()> {
        let found = tokio::time::timeout(CLIENT_TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                self.stdout.push_str(&line);
                self.stdout.push('\n');
                if line == wanted {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        ensure!(
            found,
            "{} never printed {wanted:?}; stdout so far:\n{}",
            self.what,
            self.stdout
        );
        Ok(())
    }

    /// SIGKILL.
    async fn kill(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        eprintln!("--- {} killed; its stdout:\n{}", self.what, self.stdout);
        Ok(())
    }

    /// Waits for the client to end on its own.
    async fn finish(mut self) -> Result<ClientRun> {
        let status = tokio::time::timeout(CLIENT_TIMEOUT, async {
            while let Some(line) = self.lines.recv().await {
                self.stdout.push_str(&line);
                self.stdout.push('\n');
            }
            self.child.wait().await
        })
        .await
        .map_err(|_| anyhow!("{} did not finish within {CLIENT_TIMEOUT:?}", self.what))??;
        let run = ClientRun {
            what: self.what,
            status,
            stdout: self.stdout,
            stderr: self.stderr.await?,
        };
        eprintln!(
            "--- {}: {}\n{}\n{}",
            run.what,
            run.status,
            run.stdout.trim_end(),
            run.stderr_tail()
        );
        Ok(run)
    }
}

async fn run(what: &str, cmd: Command) -> Result<ClientRun> {
    Live::spawn(what, cmd)?.finish().await
}

/// The Java client: committed and aborted transactions through `read_committed` and
/// `read_uncommitted` consumers, a consume-transform-produce pass with
/// `sendOffsetsToTransaction`, and zombie fencing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_transactions_read_committed_and_offsets_in_transactions() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 400;
    let mut cmd = java_txn()?;
    cmd.args(["txn", &server.bootstrap(), "jt-in", "jt-out", "jt-group"])
        .arg(n.to_string());
    let v = run("java txn", cmd).await?.summary()?;
    // Every fourth transaction of ten records was aborted.
    ensure!(
        v["committed_written"] == 300 && v["aborted_written"] == 100,
        "{v}"
    );
    ensure!(v["read_committed"] == 300, "{v}");
    ensure!(v["read_uncommitted"] == n, "{v}");
    ensure!(v["out_read_committed"] == 300, "{v}");
    ensure!(v["fenced"] == "ProducerFencedException", "{v}");
    server.stop().await
}

/// confluent-kafka (librdkafka): the same, through a second, independent client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_transactions_read_committed_and_offsets_in_transactions() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 400;
    let mut cmd = python("confluent_transactions.py")?;
    cmd.args(["txn", &server.bootstrap(), "ck-in", "ck-out", "ck-group"])
        .arg(n.to_string());
    let v = run("confluent-kafka txn", cmd).await?.summary()?;
    ensure!(
        v["committed_written"] == 300 && v["aborted_written"] == 100,
        "{v}"
    );
    ensure!(v["read_committed"] == 300, "{v}");
    ensure!(v["read_uncommitted"] == n, "{v}");
    ensure!(v["out_read_committed"] == 300, "{v}");
    ensure!(v["fenced"] == "_FENCED", "{v}");
    server.stop().await
}

/// The input of the exactly-once loops: `n` records in committed transactions.
async fn fill(server: &Server, topic: &str, n: usize) -> Result<()> {
    let mut cmd = java_txn()?;
    cmd.args(["fill", &server.bootstrap(), topic])
        .arg(n.to_string());
    run("java fill", cmd).await?.summary()?;
    Ok(())
}

/// The loop, pausing `pause_ms` inside each transaction from the `pause_from`th on.
fn ctp(server: &Server, pause_ms: u64, pause_from: u32) -> Result<Command> {
    let mut cmd = java_txn()?;
    cmd.args([
        "ctp",
        &server.bootstrap(),
        "eos-in",
        "eos-out",
        "eos-group",
        "eos-loop",
    ])
    .arg(EOS_INPUT.to_string())
    .arg(pause_ms.to_string())
    .arg(pause_from.to_string());
    Ok(cmd)
}

const EOS_INPUT: usize = 3000;

/// Every input record is in the output exactly once, read with `read_committed`.
async fn verify_exactly_once(server: &Server) -> Result<()> {
    let mut cmd = java_txn()?;
    cmd.args(["verify", &server.bootstrap(), "eos-out"])
        .arg(EOS_INPUT.to_string());
    let v = run("java verify", cmd).await?.summary()?;
    ensure!(v["distinct"] == EOS_INPUT, "{v}");
    Ok(())
}

/// A consume-transform-produce loop is killed with SIGKILL in the middle of a transaction
/// (its records sent and acknowledged, its offsets added, the commit not sent), twice; the
/// next instance of the loop (same transactional id) fences it, which aborts what it left
/// open, and resumes from the group's committed offsets. The output holds every input once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_killed_mid_transaction_leaves_exactly_once_output() -> Result<()> {
    let mut server = Server::start().await?;
    fill(&server, "eos-in", EOS_INPUT).await?;
    // Two transactions commit, the third is open when the loop dies; then a second instance
    // dies in its second transaction.
    for (round, at) in [(1, 3), (2, 2)] {
        let mut live = Live::spawn(&format!("java ctp #{round}"), ctp(&server, 60_000, at)?)?;
        live.wait_for(&format!("IN_TXN {at}")).await?;
        live.kill().await?;
    }
    let v = run("java ctp (to the end)", ctp(&server, 0, 0)?)
        .await?
        .summary()?;
    eprintln!("last loop: {v}");
    verify_exactly_once(&server).await?;
    // The killed loops' transactions were aborted, and their records are in the log: the
    // aborted ones are what read_committed must have skipped.
    let mut describe = kafka_transactions(&server.bootstrap())?;
    describe.args(["describe", "--transactional-id", "eos-loop"]);
    let out = run("kafka-transactions.sh describe", describe).await?;
    ensure!(
        out.ok()?.contains("CompleteCommit"),
        "eos-loop: {}",
        out.stdout
    );
    server.stop().await
}

/// The server is killed with SIGKILL while a transaction of the loop is open (records
/// durable, offsets added, commit not yet sent) and started again; the same loop carries on
/// (its commit reaches the restarted server, or fails and is aborted and redone) and the
/// output holds every input once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_transaction_leaves_exactly_once_output() -> Result<()> {
    let mut server = Server::start_with(&["--kafka-transaction-check-ms", "500"]).await?;
    fill(&server, "eos-in", EOS_INPUT).await?;
    let mut live = Live::spawn("java ctp", ctp(&server, 1500, 0)?)?;
    live.wait_for("IN_TXN 2").await?;
    server.kill().await?;
    server.start_again().await?;
    live.wait_for("IN_TXN 4").await?;
    server.kill().await?;
    server.start_again().await?;
    let v = live.finish().await?.summary()?;
    eprintln!("loop: {v}");
    verify_exactly_once(&server).await?;
    server.stop().await
}

/// Kafka's `kafka-transactions.sh`: list, describe, describe-producers and find-hanging
/// against transactions left in each state by the Java client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_tool_lists_and_describes() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let mut cmd = java_txn()?;
    cmd.args(["txn", &bootstrap, "kt-in", "kt-out", "kt-group", "40"]);
    run("java txn", cmd).await?.summary()?;

    let tool = |args: &[&str]| -> Result<Command> {
        let mut cmd = kafka_transactions(&bootstrap)?;
        cmd.args(args);
        Ok(cmd)
    };
    let listed = run("kafka-transactions.sh list", tool(&["list"])?).await?;
    let listed = listed.ok()?;
    // TransactionalId, Coordinator, ProducerId, TransactionState.
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let state_of = |id: &str| {
        rows.iter()
            .find(|r| r.first() == Some(&id))
            .and_then(|r| r.get(3).copied())
    };
    ensure!(
        // Four transactions of ten, the fourth aborted; the loop's producer was fenced by a
        // new one, which began nothing.
        state_of("java-txn-writer") == Some("CompleteAbort")
            && state_of("java-txn-ctp") == Some("Empty"),
        "kafka-transactions.sh list:\n{listed}"
    );

    let described = run(
        "kafka-transactions.sh describe",
        tool(&["describe", "--transactional-id", "java-txn-writer"])?,
    )
    .await?;
    let described = described.ok()?;
    ensure!(
        described.contains("java-txn-writer") && described.contains("CompleteAbort"),
        "kafka-transactions.sh describe:\n{described}"
    );
    let missing = run(
        "kafka-transactions.sh describe (unknown)",
        tool(&["describe", "--transactional-id", "nobody"])?,
    )
    .await?;
    ensure!(
        !missing.status.success(),
        "describing an unknown transactional id succeeded:\n{}",
        missing.stdout
    );

    let producers = run(
        "kafka-transactions.sh describe-producers",
        tool(&["describe-producers", "--topic", "kt-in", "--partition", "0"])?,
    )
    .await?;
    let producers = producers.ok()?;
    // ProducerId, ProducerEpoch, LatestCoordinatorEpoch, LastSequence, LastTimestamp,
    // CurrentTransactionStartOffset: the writer's 20 records on partition 0, none open.
    let writer = producers
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.len() == 6 && r[3] == "19")
        .with_context(|| format!("no producer with last sequence 19:\n{producers}"))?;
    ensure!(writer[2] == "0" && writer[5] == "None", "{producers}");

    let hanging = run(
        "kafka-transactions.sh find-hanging",
        tool(&["find-hanging", "--broker-id", "0"])?,
    )
    .await?;
    let hanging = hanging.ok()?;
    ensure!(
        hanging.lines().skip(1).all(|l| l.trim().is_empty()),
        "hanging transactions reported:\n{hanging}"
    );
    server.stop().await
}
