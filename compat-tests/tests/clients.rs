//! General Kafka clients against `woodpecker serve`: confluent-kafka (librdkafka), kafka-python,
//! the Apache Kafka Java client, franz-go (built from `clients/franz-go` with the Go toolchain)
//! and kcat, each run as a subprocess on a server of its own.
//!
//! The clients are installed by `scripts/compat-tools install` and found through the variables
//! `scripts/compat-tools env` prints (`scripts/test` does both):
//! `WOODPECKER_COMPAT_PYTHON`, `WOODPECKER_COMPAT_JAVA`, `WOODPECKER_COMPAT_JAVA_CP` and
//! `WOODPECKER_COMPAT_KCAT`. A missing variable fails the test; nothing is skipped.
//!
//! The client programs live in `compat-tests/clients/`. Each prints one line
//! `RESULT <json>` with what it observed and the failures it found, and exits 0 only when it
//! found none; the tests here check the exit status, that list, and the key figures.

use std::process::Stdio;

use anyhow::{Context, Result, anyhow, ensure};
use compat_tests::Server;
use compat_tests::clients::{
    CLIENT_TIMEOUT, ClientRun, clients_dir, java_program, python, required_env,
    run_with_input as run,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The Java client program (`clients/java`, `KafkaClients`).
fn java() -> Result<Command> {
    java_program(
        "woodpecker/compat/KafkaClients.java",
        "woodpecker.compat.KafkaClients",
    )
}

fn kcat() -> Result<Command> {
    Ok(Command::new(required_env("WOODPECKER_COMPAT_KCAT")?))
}

fn as_i64(v: &Value, what: &str) -> Result<i64> {
    v.as_i64()
        .ok_or_else(|| anyhow!("{what}: expected a number, got {v}"))
}

/// confluent-kafka: idempotent zstd producer with keys and headers, to a topic created by the
/// AdminClient and to an auto-created one; a group consumer reads everything back and commits;
/// a second consumer of the group reads only what was produced after the commit; AdminClient
/// list_topics, describe_cluster, describe_configs, list/describe groups, group offsets and
/// list_offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_idempotent_zstd_roundtrip_and_group() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 500;
    let mut cmd = python("confluent_clients.py")?;
    cmd.args([
        "roundtrip",
        &server.bootstrap(),
        "ck-created",
        "ck-auto",
        "ck-group",
    ])
    .arg(n.to_string());
    let v = run("confluent-kafka roundtrip", cmd, None)
        .await?
        .summary()?;
    ensure!(
        as_i64(&v["delivered"], "delivered")? == n + n / 10,
        "delivered: {}",
        v["delivered"]
    );
    ensure!(
        v["partitions_created"] == 3,
        "partitions of ck-created: {v}"
    );
    ensure!(
        v["roundtrip_mismatches"] == 0 && v["after_commit_mismatches"] == 0,
        "{v}"
    );
    // The second consumer saw the sentinels only: one per partition, at the old end offsets.
    let seen = v["consumer2_seen"].as_object().context("consumer2_seen")?;
    for (tp, records) in seen {
        let records = records.as_array().context("consumer2_seen entry")?;
        ensure!(records.len() == 1, "consumer 2 read {records:?} from {tp}");
        let (topic, partition) = tp.rsplit_once('/').context("topic/partition")?;
        let end = &v["watermarks"][topic][partition][1];
        ensure!(
            records[0][0] == *end,
            "consumer 2 started {tp} at {}, the committed offset was {end}",
            records[0][0]
        );
    }
    server.stop().await
}

/// confluent-kafka, one topic per codec (none, gzip, snappy, lz4, zstd): records in large
/// batches read back with fetch limits far below one batch, and from the middle of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_codecs_fetch_limits_and_mid_batch_offsets() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 300;
    let mut cmd = python("confluent_clients.py")?;
    cmd.args(["codecs", &server.bootstrap(), "codec"])
        .arg(n.to_string());
    let v = run("confluent-kafka codecs", cmd, None).await?.summary()?;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        ensure!(
            v[format!("{codec}_watermarks")] == serde_json::json!([0, n]),
            "{codec}: {v}"
        );
        ensure!(v[format!("{codec}_mismatches")] == 0, "{codec}: {v}");
    }
    server.stop().await
}

/// kafka-python: gzip producer with explicit timestamps, group consumer with commit, then
/// committed(), end_offsets(), beginning_offsets() and offsets_for_times().
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_gzip_group_and_offset_queries() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 200;
    let mut cmd = python("kafka_python_clients.py")?;
    cmd.args(["roundtrip", &server.bootstrap(), "kp-topic", "kp-group"])
        .arg(n.to_string());
    let v = run("kafka-python roundtrip", cmd, None).await?.summary()?;
    // The version ranges are Kafka 3.9's, and kafka-python sees it.
    ensure!(
        v["broker_version"] == serde_json::json!([3, 9]),
        "kafka-python inferred {}",
        v["broker_version"]
    );
    for p in ["0", "1"] {
        ensure!(v["end_offsets"][p] == n / 2, "end_offsets: {v}");
        ensure!(v["beginning_offsets"][p] == 0, "beginning_offsets: {v}");
        ensure!(v["committed"][p] == n / 2, "committed: {v}");
        ensure!(
            v["offsets_for_times"]["zero"][p][0] == 0,
            "offsets_for_times: {v}"
        );
        ensure!(
            v["offsets_for_times"]["past_end"][p].is_null(),
            "offsets_for_times: {v}"
        );
    }
    server.stop().await
}

/// The Java client: AdminClient describeCluster and createTopics (4 partitions); two classic
/// group members split the partitions; one leaves and the other takes them all over and keeps
/// consuming; committed offsets equal the end offsets. Eager rebalances (range assignor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_group_rebalance() -> Result<()> {
    java_group("range").await
}

/// The same with incremental rebalances (cooperative-sticky assignor), as Kafka Streams and
/// most current Java applications use them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_group_cooperative_rebalance() -> Result<()> {
    java_group("cooperative-sticky").await
}

async fn java_group(assignor: &str) -> Result<()> {
    let mut server = Server::start().await?;
    let per_phase = 200;
    let mut cmd = java()?;
    cmd.args(["group", &server.bootstrap(), "java-topic", "java-group"])
        .arg(per_phase.to_string())
        .arg(assignor);
    let v = run(&format!("java group ({assignor})"), cmd, None)
        .await?
        .summary()?;
    let c1 = v["split_c1"].as_array().context("split_c1")?;
    let c2 = v["split_c2"].as_array().context("split_c2")?;
    ensure!(
        !c1.is_empty() && !c2.is_empty() && c1.len() + c2.len() == 4,
        "split: {c1:?} / {c2:?}"
    );
    ensure!(
        v["after_leave_c1"] == serde_json::json!([0, 1, 2, 3]),
        "after c2 left, c1 owned {}",
        v["after_leave_c1"]
    );
    ensure!(v["phase2_by_c1"] == per_phase, "phase 2: {v}");
    ensure!(
        v["consumed_total"] == 2 * per_phase,
        "consumed {} of {}",
        v["consumed_total"],
        2 * per_phase
    );
    // The Java consumer fetches in sessions (KIP-227): after the first full fetch, requests
    // name only what changed.
    ensure!(
        incremental_fetches(&server).await? > 0,
        "no fetch was incremental"
    );
    server.stop().await
}

/// Fetch requests the server answered within an open fetch session.
async fn incremental_fetches(server: &Server) -> Result<u64> {
    let scrape = server.metrics().await?;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix("woodpecker_kafka_incremental_fetches_total "))
        .with_context(|| format!("no incremental-fetch counter in\n{scrape}"))?
        .trim()
        .parse::<u64>()
        .context("incremental-fetch counter")
}

/// franz-go, a Go client independent of librdkafka and the Java client: idempotent produce
/// and a group consumer over three partitions, fetching by topic id (Fetch v13+) in fetch
/// sessions (KIP-227) while a second phase is produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn franz_go_fetch_sessions_topic_ids_and_group() -> Result<()> {
    let build = tempfile::tempdir()?;
    let bin = build.path().join("franz-go");
    let status = tokio::time::timeout(
        CLIENT_TIMEOUT,
        Command::new(compat_tests::go_toolchain()?)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(clients_dir().join("franz-go"))
            .status(),
    )
    .await
    .context("go build of the franz-go client hung")??;
    ensure!(
        status.success(),
        "go build of clients/franz-go failed: {status}"
    );
    let mut server = Server::start().await?;
    let per_phase = 500;
    let mut cmd = Command::new(&bin);
    cmd.args([&server.bootstrap(), "franz-topic", "franz-group"])
        .arg(per_phase.to_string());
    let v = run("franz-go", cmd, None).await?.summary()?;
    ensure!(v["consumed"] == 2 * per_phase, "consumed: {v}");
    ensure!(v["partitions"] == 3, "partitions: {v}");
    ensure!(
        incremental_fetches(&server).await? > 0,
        "no fetch was incremental"
    );
    server.stop().await
}

/// kcat: metadata listing (-L, JSON), produce (-P, keyed) and consume to the end (-C -e).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_metadata_and_roundtrip() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();

    // Metadata of an empty server: the broker, advertised at the address we dialled.
    let mut cmd = kcat()?;
    cmd.args(["-L", "-J", "-b", &bootstrap]);
    let listing = run("kcat -L", cmd, None).await?;
    let md: Value = serde_json::from_str(listing.ok()?.trim())
        .with_context(|| format!("kcat -L -J output: {}", listing.stdout))?;
    let brokers = md["brokers"].as_array().context("brokers")?;
    ensure!(
        brokers.len() == 1 && brokers[0]["name"] == bootstrap.as_str(),
        "kcat -L brokers: {brokers:?}, expected one at {bootstrap}"
    );

    // Produce three keyed messages to partition 0 of an auto-created topic.
    let mut cmd = kcat()?;
    cmd.args([
        "-P",
        "-b",
        &bootstrap,
        "-t",
        "kcat-topic",
        "-p",
        "0",
        "-K",
        ":",
    ]);
    run(
        "kcat -P",
        cmd,
        Some(b"k1:v1\nk2:v2\nk3:hello world\n".as_slice()),
    )
    .await?
    .ok()?;

    let mut cmd = kcat()?;
    cmd.args([
        "-C",
        "-b",
        &bootstrap,
        "-t",
        "kcat-topic",
        "-o",
        "beginning",
    ])
    .args(["-e", "-q", "-f", "%p/%o %k=%s\\n"]);
    let consumed = run("kcat -C", cmd, None).await?;
    ensure!(
        consumed.ok()? == "0/0 k1=v1\n0/1 k2=v2\n0/2 k3=hello world\n",
        "kcat -C read {:?}",
        consumed.stdout
    );

    let mut cmd = kcat()?;
    cmd.args(["-L", "-J", "-b", &bootstrap, "-t", "kcat-topic"]);
    let listing = run("kcat -L -t", cmd, None).await?;
    let md: Value = serde_json::from_str(listing.ok()?.trim())
        .with_context(|| format!("kcat -L -J output: {}", listing.stdout))?;
    let topic = md["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic"] == "kcat-topic"))
        .with_context(|| format!("kcat-topic missing from {md}"))?;
    let partitions = topic["partitions"].as_array().context("partitions")?;
    ensure!(
        !partitions.is_empty() && topic.get("error").is_none(),
        "kcat-topic: {topic}"
    );
    for p in partitions {
        ensure!(
            p["leader"] == brokers[0]["id"],
            "partition without the broker as leader: {p}"
        );
    }
    server.stop().await
}

/// Restart survival: topic, watermarks and group offsets outlive a SIGTERM restart, and a fresh
/// idempotent producer continues at the old end offsets, which is where the group resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_topics_offsets_and_group_commits() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 100;
    let mut cmd = python("confluent_clients.py")?;
    cmd.args([
        "restart-before",
        &server.bootstrap(),
        "restart-topic",
        "restart-group",
    ])
    .arg(n.to_string());
    let before = run("confluent-kafka before restart", cmd, None)
        .await?
        .summary()?;
    for p in ["0", "1"] {
        ensure!(
            before["watermarks"][p] == serde_json::json!([0, n / 2]),
            "before: {before}"
        );
        ensure!(before["committed"][p] == n / 2, "before: {before}");
    }

    let bootstrap = server.bootstrap();
    server.restart().await?;
    ensure!(
        server.bootstrap() == bootstrap,
        "the restart moved the listener"
    );

    let mut cmd = python("confluent_clients.py")?;
    cmd.args([
        "restart-after",
        &server.bootstrap(),
        "restart-topic",
        "restart-group",
    ])
    .arg(n.to_string())
    .arg(before.to_string());
    let after = run("confluent-kafka after restart", cmd, None)
        .await?
        .summary()?;
    for p in ["0", "1"] {
        ensure!(after["committed_final"][p] == n, "after: {after}");
    }
    server.stop().await
}

/// An idempotent producer that lives across a restart: the records it sends after the server
/// came back continue its sequence and land once, right after the ones it sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_a_live_idempotent_producer() -> Result<()> {
    let mut server = Server::start().await?;
    let n = 100;
    let what = "confluent-kafka live producer";
    let mut cmd = python("confluent_clients.py")?;
    cmd.args(["live-producer", &server.bootstrap(), "live-topic"])
        .arg(n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.map(|_| text)
    });
    let mut lines = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
    let mut stdout = String::new();
    // Until the producer has sent its first records and waits.
    let paused = tokio::time::timeout(CLIENT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            stdout.push_str(&line);
            stdout.push('\n');
            if line == "PAUSED" {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .map_err(|_| anyhow!("{what} did not pause within {CLIENT_TIMEOUT:?}"))??;
    if paused {
        server.restart().await?;
        // The producer may have ended already, on an error it reports below.
        let _ = stdin.write_all(b"go\n").await;
    }
    drop(stdin);
    let finished = tokio::time::timeout(CLIENT_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        child.wait().await
    })
    .await
    .map_err(|_| anyhow!("{what} did not finish within {CLIENT_TIMEOUT:?}; killed"))??;
    let run = ClientRun {
        what: what.to_string(),
        status: finished,
        stdout,
        stderr: stderr.await??,
    };
    eprintln!(
        "--- {what}: {}\n{}\n{}",
        run.status,
        run.stdout.trim_end(),
        run.stderr.trim_end()
    );
    ensure!(
        paused,
        "{what} never paused:\n{}\n{}",
        run.stdout,
        run.stderr_tail()
    );
    let v = run.summary()?;
    ensure!(v["watermarks"] == serde_json::json!([0, 2 * n]), "{v}");
    server.stop().await
}

/// confluent-kafka, KIP-345: each of two static members (group.instance.id) in turn, the
/// group's leader among them, is restarted within its session timeout: it gets its partitions
/// back and the other member sees no rebalance; the AdminClient's group description names each
/// member's instance id, client id and host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_static_member_restart_without_rebalance() -> Result<()> {
    let mut server = Server::start().await?;
    let mut cmd = python("confluent_groups.py")?;
    cmd.args([
        "static",
        &server.bootstrap(),
        "ck-static",
        "ck-static-group",
    ]);
    let v = run("confluent-kafka static membership", cmd, None)
        .await?
        .summary()?;
    check_static_restarts(&v)?;
    server.stop().await
}

/// The Java consumer (classic protocol), the same KIP-345 scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_static_member_restart_without_rebalance() -> Result<()> {
    let mut server = Server::start().await?;
    let mut cmd = java()?;
    cmd.args([
        "static",
        &server.bootstrap(),
        "java-static",
        "java-static-group",
    ]);
    let v = run("java static membership", cmd, None).await?.summary()?;
    check_static_restarts(&v)?;
    server.stop().await
}

/// Both static members were restarted, each got what its instance had, the other saw nothing.
fn check_static_restarts(v: &Value) -> Result<()> {
    let restarts = v["restarts"].as_array().context("restarts")?;
    ensure!(restarts.len() == 2, "restarts: {v}");
    for r in restarts {
        ensure!(
            r["had"] == r["got"] && r["had"].as_array().is_some_and(|p| !p.is_empty()),
            "restart: {r}"
        );
        ensure!(
            r["other_new_events"].as_array().is_some_and(Vec::is_empty),
            "restart: {r}"
        );
    }
    Ok(())
}

/// confluent-kafka and kafka-python against a server started with
/// `--kafka-group-min-session-timeout-ms`: a session timeout below it is
/// INVALID_SESSION_TIMEOUT, one at it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_and_kafka_python_session_timeout_bounds() -> Result<()> {
    let min_ms = "7000";
    let mut server = Server::start_with(&["--kafka-group-min-session-timeout-ms", min_ms]).await?;
    let mut cmd = python("confluent_groups.py")?;
    cmd.args([
        "session-bounds",
        &server.bootstrap(),
        "ck-bounds",
        "ck-bounds-group",
        min_ms,
    ]);
    let v = run("confluent-kafka session bounds", cmd, None)
        .await?
        .summary()?;
    ensure!(v["ok_partitions"] == serde_json::json!([0]), "{v}");
    // kafka-python, on the same server.
    let mut cmd = python("kafka_python_groups.py")?;
    cmd.args([
        "session-bounds",
        &server.bootstrap(),
        "kp-bounds",
        "kp-bounds-group",
        min_ms,
    ]);
    let v = run("kafka-python session bounds", cmd, None)
        .await?
        .summary()?;
    ensure!(v["ok_partitions"] == serde_json::json!([0]), "{v}");
    server.stop().await
}

/// kafka-python's admin client, then Kafka's `kafka-consumer-groups.sh`, on one group:
/// ListGroups state and type filters (v5), DescribeGroups member client id and host,
/// OffsetDelete refused for a subscribed topic (GROUP_SUBSCRIBED_TO_TOPIC) and done for
/// others and once the group is Empty; the tool deletes the last offset and lists the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_and_consumer_groups_tool_offset_delete_and_list_filters() -> Result<()> {
    let mut server = Server::start().await?;
    let group = "kp-admin-group";
    let mut cmd = python("kafka_python_groups.py")?;
    cmd.args(["offsets", &server.bootstrap(), group]);
    let v = run("kafka-python group offsets", cmd, None)
        .await?
        .summary()?;
    ensure!(v["left"] == serde_json::json!({"kp-sub/1": 4}), "{v}");

    let tool = |args: &[&str]| -> Result<Command> {
        let mut cmd = compat_tests::clients::kafka_tool(
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        )?;
        cmd.args(["--bootstrap-server", &server.bootstrap()])
            .args(args);
        Ok(cmd)
    };
    let deleted = run(
        "kafka-consumer-groups.sh --delete-offsets",
        tool(&["--delete-offsets", "--group", group, "--topic", "kp-sub"])?,
        None,
    )
    .await?;
    deleted.ok()?;
    // The tool prints its rows without line breaks between them: read the table as words.
    let words: Vec<&str> = deleted.stdout.split_whitespace().collect();
    let table = words
        .iter()
        .position(|w| *w == "STATUS")
        .map(|i| &words[i + 1..])
        .context("no table in the --delete-offsets output")?;
    ensure!(
        table == ["kp-sub", "0", "Successful", "kp-sub", "1", "Successful"],
        "--delete-offsets: {}",
        deleted.stdout
    );
    ensure!(
        !deleted.stdout.contains("Error"),
        "--delete-offsets: {}",
        deleted.stdout
    );
    let listed = run(
        "kafka-consumer-groups.sh --list --state Empty",
        tool(&["--list", "--state", "Empty"])?,
        None,
    )
    .await?;
    listed.ok()?;
    ensure!(
        listed
            .stdout
            .lines()
            .any(|l| l.contains(group) && l.contains("Empty")),
        "--list --state Empty: {}",
        listed.stdout
    );
    server.stop().await
}
