//! KIP-848 consumer groups (`group.protocol=consumer`, ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe) with two independent clients, librdkafka (confluent-kafka) and the
//! Apache Kafka Java client, and Kafka's `kafka-consumer-groups.sh`, each on a server of its
//! own with short consumer-protocol session timeouts (`--kafka-group-consumer-*` flags) so that
//! a killed member is fenced within seconds.
//!
//! The client programs are `clients/python/confluent_kip848.py` and
//! `clients/java/.../Kip848Clients.java`; they print `RESULT <json>` and exit 0 only when they
//! found nothing wrong (see `tests/clients.rs`).

// The wait for the tool to show the members polls the real system with pauses (a failure
// guard, no timing is asserted).
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{java_program, kafka_tool, python, run_with_input as run};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The consumer-protocol session timeout the servers here use: a SIGKILLed member is fenced
/// this long after its last heartbeat.
const SESSION_MS: &str = "4000";

async fn server() -> Result<Server> {
    Server::start_with(&[
        "--kafka-group-consumer-session-timeout-ms",
        SESSION_MS,
        "--kafka-group-consumer-heartbeat-interval-ms",
        "500",
    ])
    .await
}

/// Three members share six partitions evenly, a classic member is refused, the describe shows
/// them, a leaving member's partitions move, a killed member's partitions move after its
/// session, and a new member resumes after the commits.
fn check_share(v: &Value) -> Result<()> {
    let split = v["split"].as_array().context("split")?;
    ensure!(split.len() == 3, "split: {v}");
    let mut all: Vec<i64> = split
        .iter()
        .flat_map(|s| s.as_array().into_iter().flatten().filter_map(Value::as_i64))
        .collect();
    all.sort_unstable();
    ensure!(all == (0..6).collect::<Vec<_>>(), "split: {v}");
    ensure!(
        split
            .iter()
            .all(|s| s.as_array().is_some_and(|s| s.len() == 2)),
        "split: {v}"
    );
    ensure!(
        v["after_kill"] == json!([0, 1, 2, 3, 4, 5]),
        "after_kill: {v}"
    );
    ensure!(
        v["resumed"].as_array().is_some_and(|r| r.len() == 12),
        "resumed: {v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_kip848_members_share_leave_are_fenced_and_resume() -> Result<()> {
    let mut server = server().await?;
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["share", &server.bootstrap(), "ck848", "ck848-group"]);
    let v = run("confluent-kafka KIP-848 share", cmd, None)
        .await?
        .summary()?;
    check_share(&v)?;
    ensure!(
        v["classic_errors"] == json!(["INCONSISTENT_GROUP_PROTOCOL"]),
        "classic: {v}"
    );
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_kip848_members_share_leave_are_fenced_and_resume() -> Result<()> {
    let mut server = server().await?;
    let mut cmd = java_program(
        "woodpecker/compat/Kip848Clients.java",
        "woodpecker.compat.Kip848Clients",
    )?;
    cmd.args(["share", &server.bootstrap(), "java848", "java848-group"]);
    let v = run("java KIP-848 share", cmd, None).await?.summary()?;
    check_share(&v)?;
    ensure!(
        v["classic"] == "INCONSISTENT_GROUP_PROTOCOL",
        "classic: {v}"
    );
    ensure!(
        v["described"]["type"] == "Consumer" && v["described"]["state"] == "Stable",
        "described: {v}"
    );
    server.stop().await
}

/// A `member` of `confluent_kip848.py` in the background.
fn member(server: &Server, topic: &str, group: &str, name: &str) -> Result<Child> {
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["member", &server.bootstrap(), topic, group, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().context("starting a member")
}

/// `kafka-consumer-groups.sh --describe` shows a live consumer-protocol group (each partition
/// with a member's id, host and client id); after a server restart its committed offsets are
/// where a new member starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_group_offsets_survive_a_restart_and_the_tool_describes_the_group() -> Result<()> {
    let mut server = server().await?;
    let (topic, group) = ("tool848", "tool848-group");
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["commit", &server.bootstrap(), topic, group]);
    let v = run("confluent-kafka KIP-848 commit", cmd, None)
        .await?
        .summary()?;
    let committed: Vec<Value> = (0..6).map(|p| json!([p, 10])).collect();
    ensure!(v["committed"] == json!(committed), "committed: {v}");

    let mut members = vec![
        member(&server, topic, group, "d1")?,
        member(&server, topic, group, "d2")?,
    ];
    let describe = || -> Result<Command> {
        let mut cmd = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")?;
        cmd.args(["--bootstrap-server", &server.bootstrap()]).args([
            "--describe",
            "--group",
            group,
        ]);
        Ok(cmd)
    };
    // Until both members own their partitions (a failure guard, not a timing assertion).
    let mut last = String::new();
    let mut shown = false;
    for _ in 0..60 {
        let out = run("kafka-consumer-groups.sh --describe", describe()?, None).await?;
        out.ok()?;
        last = out.stdout.clone();
        let rows: Vec<&str> = last
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(group))
            .collect();
        let by = |client: &str| rows.iter().filter(|l| l.contains(client)).count();
        if rows.len() == 6 && by("compat-d1") == 3 && by("compat-d2") == 3 {
            ensure!(
                rows.iter()
                    .all(|l| l.contains("/127.0.0.1") && l.split_whitespace().nth(3) == Some("10")),
                "--describe: {last}"
            );
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        shown,
        "--describe never showed both members' partitions:\n{last}"
    );
    let state = run(
        "kafka-consumer-groups.sh --describe --state",
        {
            let mut cmd = describe()?;
            cmd.arg("--state");
            cmd
        },
        None,
    )
    .await?;
    state.ok()?;
    ensure!(
        state.stdout.contains("uniform") && state.stdout.contains("Stable"),
        "--describe --state: {}",
        state.stdout
    );
    for m in &mut members {
        m.kill().await.context("stopping a member")?;
    }

    server.restart().await?;
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["resume", &server.bootstrap(), topic, group]);
    let v = run("confluent-kafka KIP-848 resume", cmd, None)
        .await?
        .summary()?;
    ensure!(v["first"] == json!(committed), "after the restart: {v}");
    server.stop().await
}
