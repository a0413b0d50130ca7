//! The admin APIs (CreatePartitions, DeleteRecords, AlterConfigs, IncrementalAlterConfigs,
//! OffsetForLeaderEpoch, and cleanup.policy=compact refusing records without a key) through
//! independent clients: confluent-kafka's AdminClient (librdkafka), kafka-python's
//! KafkaAdminClient, and Kafka's own Java tools (`kafka-topics.sh`, `kafka-configs.sh`,
//! `kafka-delete-records.sh`, `kafka-get-offsets.sh`), each against a server of its own that
//! is restarted between the checks so that what was changed is seen to be durable. The
//! Python program is `clients/python/admin_clients.py`; the clients are found through the
//! variables `scripts/compat-tools env` prints, the Java tools through
//! `WOODPECKER_COMPAT_KAFKA_TOOLS_CP` (`scripts/kafka-tools classpath`).

use anyhow::{Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{java_program, kafka_tool, python, run};

/// The requests of `api` the server counted (its Prometheus metrics).
async fn requests(server: &Server, api: &str) -> Result<u64> {
    let text = server.metrics().await?;
    let prefix = format!("woodpecker_kafka_requests_total{{api=\"{api}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap_or(0)))
}

async fn admin_scenario(client: &str) -> Result<()> {
    let mut server = Server::start().await?;
    let topic = format!("admin-{client}");
    let mut cmd = python("admin_clients.py")?;
    cmd.args(["before", client, &server.bootstrap(), &topic]);
    let v = run(&format!("{client} admin (before)"), cmd)
        .await?
        .summary()?;
    ensure!(v["partitions"] == 3 && v["low_watermark"] == 4, "{v}");
    for api in [
        "CreatePartitions",
        "DeleteRecords",
        "IncrementalAlterConfigs",
        "AlterConfigs",
    ] {
        ensure!(
            requests(&server, api).await? > 0,
            "{client} sent no {api} request"
        );
    }
    if client == "confluent" {
        // librdkafka validated the position it was given with a leader epoch.
        ensure!(
            requests(&server, "OffsetForLeaderEpoch").await? > 0,
            "librdkafka sent no OffsetForLeaderEpoch request: {v}"
        );
    }
    server.restart().await?;
    let mut cmd = python("admin_clients.py")?;
    cmd.args(["after", client, &server.bootstrap(), &topic]);
    run(&format!("{client} admin (after restart)"), cmd)
        .await?
        .summary()?;
    server.stop().await
}

/// confluent-kafka (librdkafka): every admin check, and OffsetForLeaderEpoch validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin_apis_and_their_durability() -> Result<()> {
    admin_scenario("confluent").await
}

/// kafka-python: every admin check (it never validates positions against a broker whose
/// leader epoch does not change, so no OffsetForLeaderEpoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_admin_apis_and_their_durability() -> Result<()> {
    admin_scenario("kafka-python").await
}

/// The Java consumer (kafka-clients 3.9) validates a position given with a leader epoch
/// (`seek(tp, OffsetAndMetadata(offset, Optional.of(epoch), ""))`) by OffsetForLeaderEpoch
/// before it fetches (`BrokerChecks.java`, scenario `epoch`): at offset 6 of epoch 0 it reads
/// from 6; at offset 20 the broker's answer (epoch 0 ends at 10) makes it report a log
/// truncation to offset 10. The server counted the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_consumer_validates_positions_with_offset_for_leader_epoch() -> Result<()> {
    let mut server = Server::start().await?;
    let before = requests(&server, "OffsetForLeaderEpoch").await?;
    let mut cmd = java_program(
        "woodpecker/compat/BrokerChecks.java",
        "woodpecker.compat.BrokerChecks",
    )?;
    cmd.args(["epoch", &server.bootstrap(), "java-epochs"]);
    let v = run("BrokerChecks epoch", cmd).await?.summary()?;
    ensure!(v["first_from_6"] == 6, "{v}");
    ensure!(v["divergent_from_20"] == 10, "{v}");
    ensure!(v["divergent_epoch"] == 0, "{v}");
    let after = requests(&server, "OffsetForLeaderEpoch").await?;
    ensure!(
        after >= before + 2,
        "the Java consumer sent {} OffsetForLeaderEpoch requests, expected one per seek",
        after - before
    );
    server.stop().await
}

/// Kafka's Java tools: kafka-topics.sh --alter --partitions (CreatePartitions),
/// kafka-delete-records.sh (DeleteRecords), kafka-configs.sh --alter/--describe on a topic
/// (IncrementalAlterConfigs, DescribeConfigs) and on the broker (refused: static configs),
/// kafka-get-offsets.sh for the log start offset, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_java_tools_admin_commands() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let tool = |class: &str, args: &[&str]| -> Result<tokio::process::Command> {
        let mut cmd = kafka_tool(class)?;
        cmd.args(["--bootstrap-server", &bootstrap]).args(args);
        Ok(cmd)
    };
    let topics = "org.apache.kafka.tools.TopicCommand";
    let configs = "kafka.admin.ConfigCommand";
    let offsets = "org.apache.kafka.tools.GetOffsetShell";
    let t = "tools-admin";

    run(
        "kafka-topics.sh --create",
        tool(topics, &["--create", "--topic", t, "--partitions", "1"])?,
    )
    .await?
    .ok()?;
    let mut produce = kafka_tool("org.apache.kafka.tools.ProducerPerformance")?;
    produce
        .args(["--topic", t, "--num-records", "10", "--record-size", "10"])
        .args(["--throughput", "-1", "--producer-props"])
        .arg(format!("bootstrap.servers={bootstrap}"))
        .args(["acks=all", "linger.ms=0", "batch.size=1"]);
    run("kafka-producer-perf-test.sh", produce).await?.ok()?;

    // CreatePartitions.
    run(
        "kafka-topics.sh --alter --partitions 3",
        tool(topics, &["--alter", "--topic", t, "--partitions", "3"])?,
    )
    .await?
    .ok()?;
    let out = run(
        "kafka-topics.sh --alter --partitions 2",
        tool(topics, &["--alter", "--topic", t, "--partitions", "2"])?,
    )
    .await?
    .failed()?;
    ensure!(out.contains("InvalidPartitionsException"), "{out}");

    // DeleteRecords, then the log start offset.
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("offsets.json");
    std::fs::write(
        &json,
        format!(r#"{{"partitions":[{{"topic":"{t}","partition":0,"offset":4}}],"version":1}}"#),
    )?;
    let json = json.to_string_lossy().into_owned();
    let out = run(
        "kafka-delete-records.sh",
        tool(
            "org.apache.kafka.tools.DeleteRecordsCommand",
            &["--offset-json-file", &json],
        )?,
    )
    .await?;
    let out = out.ok()?;
    ensure!(out.contains("low_watermark: 4"), "{out}");
    let earliest = || {
        tool(
            offsets,
            &["--topic", t, "--partitions", "0", "--time", "-2"],
        )
    };
    let out = run("kafka-get-offsets.sh --time -2", earliest()?).await?;
    ensure!(out.ok()?.trim() == format!("{t}:0:4"), "{}", out.stdout);

    // Topic configs: set, describe, delete; an unknown key and a broker config are refused.
    let entity = ["--entity-type", "topics", "--entity-name", t];
    let mut args = entity.to_vec();
    args.extend([
        "--alter",
        "--add-config",
        "retention.ms=1234567,cleanup.policy=compact",
    ]);
    run(
        "kafka-configs.sh --alter --add-config",
        tool(configs, &args)?,
    )
    .await?
    .ok()?;
    let mut describe = entity.to_vec();
    describe.push("--describe");
    let out = run("kafka-configs.sh --describe", tool(configs, &describe)?).await?;
    let out = out.ok()?;
    ensure!(
        out.contains("retention.ms=1234567") && out.contains("cleanup.policy=compact"),
        "{out}"
    );
    let mut args = entity.to_vec();
    args.extend(["--alter", "--delete-config", "retention.ms"]);
    run(
        "kafka-configs.sh --alter --delete-config",
        tool(configs, &args)?,
    )
    .await?
    .ok()?;
    let out = run("kafka-configs.sh --describe", tool(configs, &describe)?).await?;
    let out = out.ok()?;
    ensure!(
        !out.contains("retention.ms=") && out.contains("cleanup.policy=compact"),
        "{out}"
    );
    let mut args = entity.to_vec();
    args.extend(["--alter", "--add-config", "no.such.config=1"]);
    let out = run("kafka-configs.sh unknown key", tool(configs, &args)?)
        .await?
        .failed()?;
    ensure!(out.contains("InvalidConfigurationException"), "{out}");
    let args = [
        "--entity-type",
        "brokers",
        "--entity-name",
        "0",
        "--alter",
        "--add-config",
        "log.retention.ms=1",
    ];
    let out = run("kafka-configs.sh broker config", tool(configs, &args)?)
        .await?
        .failed()?;
    ensure!(
        out.contains("InvalidRequestException")
            && out.contains("Cannot update these configs dynamically"),
        "{out}"
    );

    // Durable: partitions, log start offset and configs after a restart.
    server.restart().await?;
    let bootstrap = server.bootstrap();
    let tool = |class: &str, args: &[&str]| -> Result<tokio::process::Command> {
        let mut cmd = kafka_tool(class)?;
        cmd.args(["--bootstrap-server", &bootstrap]).args(args);
        Ok(cmd)
    };
    let out = run(
        "kafka-topics.sh --describe",
        tool(topics, &["--describe", "--topic", t])?,
    )
    .await?;
    ensure!(out.ok()?.contains("PartitionCount: 3"), "{}", out.stdout);
    let out = run(
        "kafka-get-offsets.sh --time -2",
        tool(
            offsets,
            &["--topic", t, "--partitions", "0", "--time", "-2"],
        )?,
    )
    .await?;
    ensure!(out.ok()?.trim() == format!("{t}:0:4"), "{}", out.stdout);
    let out = run("kafka-configs.sh --describe", tool(configs, &describe)?).await?;
    ensure!(
        out.ok()?.contains("cleanup.policy=compact"),
        "{}",
        out.stdout
    );
    server.stop().await
}
