//! The internal topic `__consumer_offsets` judged by independent clients: confluent-kafka
//! (librdkafka; `clients/python/offsets_topic.py`, which decodes the records itself from
//! Kafka's schema) and Kafka's own Java tools (`kafka-consumer-groups.sh` to commit,
//! `kafka-topics.sh --list` with and without `--exclude-internal`, `--describe`, `--create`,
//! and `kafka-console-consumer.sh` with Kafka's `OffsetsMessageFormatter`, which parses every
//! record as Kafka's coordinator wrote it), against `woodpecker serve`.

use anyhow::{Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{kafka_tool, python, run};

/// The partition of `__consumer_offsets` Kafka places `group` in: `abs(hashCode) % 50`
/// with Java's `String.hashCode` (and `abs(Integer.MIN_VALUE)` as 0).
fn partition_for(group: &str) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
    if h == i32::MIN { 0 } else { h.abs() % 50 }
}

/// confluent-kafka: a consumer's commits read back from the partition Kafka would choose,
/// decoded from Kafka's schema; tombstones after DeleteGroups; the topic described as
/// internal and compacted; produce, create and delete-records refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_reads_commits_from_the_offsets_topic() -> Result<()> {
    let mut server = Server::start().await?;
    let mut cmd = python("offsets_topic.py")?;
    cmd.args(["offsets", &server.bootstrap(), "ot-confluent", "ot-group"]);
    let v = run("offsets_topic.py", cmd).await?.summary()?;
    ensure!(v["is_internal"] == true, "{v}");
    ensure!(v["partitions"] == 50, "{v}");
    ensure!(v["cleanup_policy"] == "compact", "{v}");
    ensure!(v["partition"] == partition_for("ot-group"), "{v}");
    ensure!(v["commits"].as_array().is_some_and(|c| c.len() == 2), "{v}");
    ensure!(
        v["produce"] == serde_json::json!(["TOPIC_EXCEPTION"]),
        "{v}"
    );
    ensure!(v["create"] == "TOPIC_ALREADY_EXISTS", "{v}");
    server.stop().await
}

/// Kafka's Java tools: the topic listed (and hidden by `--exclude-internal`), described
/// with 50 partitions and its configuration, its creation refused, and two commits of
/// `kafka-consumer-groups.sh --reset-offsets` read back by the console consumer with Kafka's
/// offsets formatter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_java_tools_list_describe_and_read_the_offsets_topic() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let tool = |class: &str, args: &[&str]| -> Result<tokio::process::Command> {
        let mut cmd = kafka_tool(class)?;
        cmd.args(["--bootstrap-server", &bootstrap]).args(args);
        Ok(cmd)
    };
    let topics = "org.apache.kafka.tools.TopicCommand";
    let groups = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
    let (t, group) = ("ot-java", "ot-java-group");
    run(
        "kafka-topics.sh --create",
        tool(topics, &["--create", "--topic", t, "--partitions", "1"])?,
    )
    .await?
    .ok()?;
    let mut produce = kafka_tool("org.apache.kafka.tools.ProducerPerformance")?;
    produce
        .args(["--topic", t, "--num-records", "20", "--record-size", "10"])
        .args(["--throughput", "-1", "--producer-props"])
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args(["acks=all", "linger.ms=0"]);
    run("kafka-producer-perf-test.sh", produce).await?.ok()?;
    // Offsets committed through the Admin client (OffsetCommit).
    let reset = |to: &'static str| {
        tool(
            groups,
            &[
                "--group",
                group,
                "--topic",
                &format!("{t}:0"),
                "--reset-offsets",
                "--to-offset",
                to,
                "--execute",
            ],
        )
    };
    run("kafka-consumer-groups.sh --reset-offsets 2", reset("2")?)
        .await?
        .ok()?;

    let listed = run("kafka-topics.sh --list", tool(topics, &["--list"])?)
        .await?
        .ok()?
        .to_owned();
    ensure!(
        listed.lines().any(|l| l.trim() == "__consumer_offsets"),
        "{listed}"
    );
    let listed = run(
        "kafka-topics.sh --list --exclude-internal",
        tool(topics, &["--list", "--exclude-internal"])?,
    )
    .await?
    .ok()?
    .to_owned();
    ensure!(
        !listed.contains("__consumer_offsets") && listed.lines().any(|l| l.trim() == t),
        "{listed}"
    );
    let described = run(
        "kafka-topics.sh --describe",
        tool(topics, &["--describe", "--topic", "__consumer_offsets"])?,
    )
    .await?
    .ok()?
    .to_owned();
    ensure!(
        described.contains("PartitionCount: 50") && described.contains("cleanup.policy=compact"),
        "{described}"
    );
    let out = run(
        "kafka-topics.sh --create __consumer_offsets",
        tool(
            topics,
            &[
                "--create",
                "--topic",
                "__consumer_offsets",
                "--partitions",
                "1",
            ],
        )?,
    )
    .await?
    .failed()?;
    ensure!(out.contains("TopicExistsException"), "{out}");

    // A second commit of the same partition, then the records through Kafka's formatter.
    run("kafka-consumer-groups.sh --reset-offsets 5", reset("5")?)
        .await?
        .ok()?;
    let p = partition_for(group).to_string();
    let mut consume = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer")?;
    consume
        .args([
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "__consumer_offsets",
        ])
        .args(["--partition", &p, "--offset", "earliest"])
        .args(["--max-messages", "2", "--timeout-ms", "60000"])
        .args([
            "--formatter",
            "org.apache.kafka.tools.consumer.OffsetsMessageFormatter",
        ])
        .args(["--consumer-property", "exclude.internal.topics=false"]);
    let text = run("kafka-console-consumer.sh (offsets formatter)", consume)
        .await?
        .ok()?
        .to_owned();
    // The formatter (kafka-tools 3.9) writes its JSON documents without a separator.
    let needle = format!("\"group\":\"{group}\"");
    let records: Vec<&str> = text.split("}}}").filter(|r| r.contains(&needle)).collect();
    ensure!(records.len() == 2, "{text}");
    let key = format!(
        "\"key\":{{\"version\":1,\"data\":{{{needle},\"topic\":\"{t}\",\"partition\":0}}}}"
    );
    ensure!(
        records
            .iter()
            .all(|r| r.contains(&key) && r.contains("\"value\":{\"version\":3")),
        "{text}"
    );
    ensure!(
        records[0].contains("\"offset\":2,") && records[1].contains("\"offset\":5,"),
        "{text}"
    );
    server.stop().await
}
