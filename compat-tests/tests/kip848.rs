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
use tokio::process::Child;

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

/// Where a background member's standard error goes (shown when the test fails).
fn member_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("kip848-{}-member-{name}.log", std::process::id()))
}

/// The background members' logs, for a failure's message.
fn member_logs(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(member_log(n)).unwrap_or_default();
            format!("--- member {n} (standard error):\n{text}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A member in the background: `confluent_kip848.py member` (librdkafka) or
/// `Kip848Clients member` (Java).
fn member(server: &Server, java: bool, topic: &str, group: &str, name: &str) -> Result<Child> {
    let mut cmd = if java {
        java_program(
            "woodpecker/compat/Kip848Clients.java",
            "woodpecker.compat.Kip848Clients",
        )?
    } else {
        python("confluent_kip848.py")?
    };
    let log = std::fs::File::create(member_log(name))?;
    cmd.args(["member", &server.bootstrap(), topic, group, name])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn().context("starting a member")
}

/// Runs `kafka-consumer-groups.sh --describe --group GROUP` until `done` accepts its rows
/// (the lines of the group); a failure guard bounds the wait, no timing is asserted.
async fn describe_until(
    server: &Server,
    group: &str,
    what: &str,
    done: impl Fn(&[&str]) -> bool,
) -> Result<()> {
    let mut last = String::new();
    for _ in 0..120 {
        let mut cmd = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")?;
        cmd.args(["--bootstrap-server", &server.bootstrap()]).args([
            "--describe",
            "--group",
            group,
        ]);
        let out = run("kafka-consumer-groups.sh --describe", cmd, None).await?;
        out.ok()?;
        last = out.stdout.clone();
        let rows: Vec<&str> = last
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(group))
            .collect();
        if done(&rows) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("--describe never showed {what}:\n{last}")
}

/// A librdkafka member and a Java member share a group; `kafka-consumer-groups.sh --describe`
/// shows it live (each partition with a member's id, host and client id, the assignor and the
/// state). Both members survive a server restart (they are told UNKNOWN_MEMBER_ID and rejoin)
/// and consume what is produced after it; after another restart a new member starts at the
/// committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_mixed_clients_the_tool_describes_the_group_and_restarts() -> Result<()> {
    let mut server = server().await?;
    let (topic, group) = ("tool848", "tool848-group");
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["commit", &server.bootstrap(), topic, group]);
    let v = run("confluent-kafka KIP-848 commit", cmd, None)
        .await?
        .summary()?;
    let at =
        |offset: i64| -> Value { json!((0..6).map(|p| json!([p, offset])).collect::<Vec<_>>()) };
    ensure!(v["committed"] == at(10), "committed: {v}");

    let mut members = vec![
        member(&server, false, topic, group, "rd")?,
        member(&server, true, topic, group, "java")?,
    ];
    // Each member owns three partitions; the committed offset is 10 everywhere.
    let shared_at = |offset: &'static str| {
        move |rows: &[&str]| {
            let by = |client: &str| rows.iter().filter(|l| l.contains(client)).count();
            rows.len() == 6
                && by("compat-rd") == 3
                && by("compat-java") == 3
                && rows.iter().all(|l| {
                    l.contains("/127.0.0.1") && l.split_whitespace().nth(3) == Some(offset)
                })
        }
    };
    describe_until(&server, group, "both members' partitions", shared_at("10"))
        .await
        .map_err(|e| e.context(member_logs(&["rd", "java"])))?;
    let mut cmd = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")?;
    cmd.args(["--bootstrap-server", &server.bootstrap()]).args([
        "--describe",
        "--group",
        group,
        "--state",
    ]);
    let state = run("kafka-consumer-groups.sh --describe --state", cmd, None).await?;
    state.ok()?;
    ensure!(
        state.stdout.contains("uniform") && state.stdout.contains("Stable"),
        "--describe --state: {}",
        state.stdout
    );

    // Membership is in memory: after a restart both members are unknown and rejoin, and
    // consume (and commit) what is produced then.
    server.restart().await?;
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["produce", &server.bootstrap(), topic]);
    run("confluent-kafka produce", cmd, None).await?.ok()?;
    describe_until(
        &server,
        group,
        "both members back, past the new records",
        shared_at("11"),
    )
    .await
    .map_err(|e| e.context(member_logs(&["rd", "java"])))?;
    for m in &mut members {
        m.kill().await.context("stopping a member")?;
    }

    server.restart().await?;
    let mut cmd = python("confluent_kip848.py")?;
    cmd.args(["resume", &server.bootstrap(), topic, group]);
    let v = run("confluent-kafka KIP-848 resume", cmd, None)
        .await?
        .summary()?;
    ensure!(v["first"] == at(11), "after the restart: {v}");
    for name in ["rd", "java"] {
        let _ = std::fs::remove_file(member_log(name));
    }
    server.stop().await
}
