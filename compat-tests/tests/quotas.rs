//! Client quotas (DescribeClientQuotas, AlterClientQuotas, and their enforcement) through
//! independent clients: Kafka's own `kafka-configs.sh` (the Java Admin's
//! `alterClientQuotas` / `describeClientQuotas`) sets, lists, refuses and deletes them, and
//! they survive a restart; the Java producer (`kafka-producer-perf-test.sh` and its
//! `produce-throttle-time-max` metric) and librdkafka (confluent-kafka's `throttle_cb` and
//! the `throttle` window of its statistics, `clients/python/confluent_quotas.py`) are
//! throttled under a small quota and not without one; the server's throttle counters agree.
//!
//! The tests assert on throttle signals and counts, never on how long anything took.

use anyhow::{Context, Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{kafka_tool, python, run};
use serde_json::Value;

const CONFIGS: &str = "kafka.admin.ConfigCommand";

/// `kafka-configs.sh --bootstrap-server <server> <args>`.
fn configs(bootstrap: &str, args: &[&str]) -> Result<tokio::process::Command> {
    let mut cmd = kafka_tool(CONFIGS)?;
    cmd.args(["--bootstrap-server", bootstrap]).args(args);
    Ok(cmd)
}

/// A counter of the server's metrics, by its full sample name.
async fn counter(server: &Server, sample: &str) -> Result<u64> {
    let text = server.metrics().await?;
    let prefix = format!("{sample} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .with_context(|| format!("no {sample} in the metrics:\n{text}"))?
        .trim()
        .parse()
        .with_context(|| format!("{sample} is not a number"))
}

/// kafka-configs.sh: quotas of users, clients and user/client pairs, named and default, are
/// added, described (with the SCRAM users' listing that shares `--describe --entity-type
/// users`), kept across a restart, refused when Kafka refuses them or when this broker could
/// not enforce them, and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_configs_alters_and_describes_client_quotas() -> Result<()> {
    let mut server = Server::start().await?;
    // The same address after a restart.
    let bootstrap = server.bootstrap();
    let alter = |args: &[&str]| -> Result<tokio::process::Command> {
        let mut all = args.to_vec();
        all.push("--alter");
        configs(&bootstrap, &all)
    };
    run(
        "kafka-configs.sh --alter users alice",
        alter(&[
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
        ])?,
    )
    .await?
    .ok()?;
    run(
        "kafka-configs.sh --alter users default",
        alter(&[
            "--entity-type",
            "users",
            "--entity-default",
            "--add-config",
            "producer_byte_rate=4096",
        ])?,
    )
    .await?
    .ok()?;
    run(
        "kafka-configs.sh --alter clients app",
        alter(&[
            "--entity-type",
            "clients",
            "--entity-name",
            "app",
            "--add-config",
            "consumer_byte_rate=8192",
        ])?,
    )
    .await?
    .ok()?;
    run(
        "kafka-configs.sh --alter users alice clients app",
        alter(&[
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--entity-type",
            "clients",
            "--entity-name",
            "app",
            "--add-config",
            "producer_byte_rate=512",
        ])?,
    )
    .await?
    .ok()?;
    // A SCRAM user: `--describe --entity-type users` lists its credential beside the quotas.
    run(
        "kafka-configs.sh --alter users bob SCRAM",
        alter(&[
            "--entity-type",
            "users",
            "--entity-name",
            "bob",
            "--add-config",
            "SCRAM-SHA-256=[iterations=8192,password=bob-secret]",
        ])?,
    )
    .await?
    .ok()?;

    let describe_users = || {
        configs(&bootstrap, &["--describe", "--entity-type", "users"])
            .map(|c| run("kafka-configs.sh --describe --entity-type users", c))
    };
    let check_users = |out: &str| -> Result<()> {
        ensure!(
            out.contains("Quota configs for user-principal 'alice' are")
                && out.contains("producer_byte_rate=1024.0")
                && out.contains("consumer_byte_rate=2048.0"),
            "{out}"
        );
        ensure!(
            out.contains(
                "Quota configs for the default user-principal are producer_byte_rate=4096.0"
            ),
            "{out}"
        );
        ensure!(
            out.contains("SCRAM credential configs for user-principal 'bob' are SCRAM-SHA-256=iterations=8192"),
            "{out}"
        );
        // The user/client pair is not an entity of users alone.
        ensure!(!out.contains("512.0"), "{out}");
        Ok(())
    };
    let out = describe_users()?.await?;
    check_users(out.ok()?)?;
    let out = run(
        "kafka-configs.sh --describe --entity-type clients",
        configs(&bootstrap, &["--describe", "--entity-type", "clients"])?,
    )
    .await?;
    let out = out.ok()?;
    ensure!(
        out.contains("Quota configs for client-id 'app' are consumer_byte_rate=8192.0"),
        "{out}"
    );
    ensure!(!out.contains("1024.0") && !out.contains("4096.0"), "{out}");
    let pair = [
        "--describe",
        "--entity-type",
        "users",
        "--entity-name",
        "alice",
        "--entity-type",
        "clients",
        "--entity-name",
        "app",
    ];
    let out = run(
        "kafka-configs.sh --describe users alice clients app",
        configs(&bootstrap, &pair)?,
    )
    .await?;
    let out = out.ok()?;
    ensure!(
        out.contains(
            "Quota configs for user-principal 'alice', client-id 'app' are producer_byte_rate=512.0"
        ),
        "{out}"
    );

    // What Kafka refuses, and what this broker cannot enforce, changes nothing.
    let refused = [
        ("unknown key", "no_such_quota=1"),
        ("a fraction of a byte", "producer_byte_rate=1.5"),
        ("request_percentage", "request_percentage=50"),
        ("controller_mutation_rate", "controller_mutation_rate=10"),
    ];
    for (what, config) in refused {
        let out = run(
            &format!("kafka-configs.sh --alter ({what})"),
            alter(&[
                "--entity-type",
                "users",
                "--entity-name",
                "carol",
                "--add-config",
                config,
            ])?,
        )
        .await?
        .failed()?;
        // kafka-configs.sh refuses unknown keys itself; the broker answers the rest.
        ensure!(
            out.contains("InvalidRequestException")
                || out.contains("Only quota and SCRAM credential configs can be added"),
            "{what}: {out}"
        );
    }
    let out = run(
        "kafka-configs.sh --alter ips",
        alter(&[
            "--entity-type",
            "ips",
            "--entity-name",
            "127.0.0.1",
            "--add-config",
            "connection_creation_rate=10",
        ])?,
    )
    .await?
    .failed()?;
    ensure!(out.contains("InvalidRequestException"), "{out}");
    let out = run(
        "kafka-configs.sh --describe users carol",
        configs(
            &bootstrap,
            &[
                "--describe",
                "--entity-type",
                "users",
                "--entity-name",
                "carol",
            ],
        )?,
    )
    .await?;
    ensure!(!out.ok()?.contains("Quota configs"), "{}", out.stdout);

    // Durable: the same answers after a restart.
    server.restart().await?;
    let out = describe_users()?.await?;
    check_users(out.ok()?)?;

    // Deleting a key leaves the others; deleting the last one removes the entity.
    run(
        "kafka-configs.sh --alter --delete-config",
        alter(&[
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--delete-config",
            "producer_byte_rate",
        ])?,
    )
    .await?
    .ok()?;
    run(
        "kafka-configs.sh --alter --delete-config default",
        alter(&[
            "--entity-type",
            "users",
            "--entity-default",
            "--delete-config",
            "producer_byte_rate",
        ])?,
    )
    .await?
    .ok()?;
    let out = describe_users()?.await?;
    let out = out.ok()?;
    ensure!(
        out.contains("Quota configs for user-principal 'alice' are consumer_byte_rate=2048.0")
            && !out.contains("producer_byte_rate=1024.0")
            && !out.contains("default user-principal"),
        "{out}"
    );
    server.stop().await
}

/// The largest value of a Java producer metric `name` that `--print-metrics` printed, for
/// the producer of `client_id`.
fn java_metric(out: &str, name: &str, client_id: &str) -> Result<f64> {
    let key = format!("producer-metrics:{name}:{{client-id={client_id}}}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&key))
        .with_context(|| format!("no {key} in:\n{out}"))?;
    let value = line.rsplit(':').next().unwrap_or("").trim();
    value
        .parse::<f64>()
        .with_context(|| format!("{key} is {value}"))
}

/// Runs `kafka-producer-perf-test.sh` as `client_id`: what it printed.
async fn java_produce(server: &Server, topic: &str, client_id: &str) -> Result<String> {
    let mut produce = kafka_tool("org.apache.kafka.tools.ProducerPerformance")?;
    produce
        .args([
            "--topic",
            topic,
            "--num-records",
            "150",
            "--record-size",
            "1000",
        ])
        .args(["--throughput", "-1", "--print-metrics", "--producer-props"])
        .arg(format!("bootstrap.servers={}", server.bootstrap()))
        .arg(format!("client.id={client_id}"))
        .args(["acks=all", "linger.ms=5"]);
    Ok(run(
        &format!("kafka-producer-perf-test.sh as {client_id}"),
        produce,
    )
    .await?
    .ok()?
    .to_string())
}

/// librdkafka's producer as `client_id`: its RESULT.
async fn confluent(server: &Server, scenario: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = python("confluent_quotas.py")?;
    cmd.args([scenario, &server.bootstrap()]).args(args);
    run(&format!("confluent_quotas.py {scenario} {args:?}"), cmd)
        .await?
        .summary()
}

/// A small producer quota on one client id throttles the Java producer and librdkafka's
/// producer of that client id (throttle times in their metrics and callbacks, the server's
/// throttle counters), and not their twins of another client id; every record is delivered
/// either way. A small consumer quota throttles librdkafka's consumer, which still reads
/// every record (a throttled fetch is answered empty, and asked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_rate_quotas_throttle_java_and_librdkafka_clients() -> Result<()> {
    let mut server = Server::start().await?;
    // The same address after a restart.
    let bootstrap = server.bootstrap();
    let topic = "quota-t";
    run("kafka-topics.sh --create", {
        let mut c = kafka_tool("org.apache.kafka.tools.TopicCommand")?;
        c.args(["--bootstrap-server", &server.bootstrap()]).args([
            "--create",
            "--topic",
            topic,
            "--partitions",
            "1",
        ]);
        c
    })
    .await?
    .ok()?;
    // 150 records of 1000 bytes against 10 KB/s measured over 10 s or more: over the
    // quota once about 100 KB went through.
    for client in ["slow-java", "slow-rdkafka"] {
        run(
            &format!("kafka-configs.sh --alter clients {client}"),
            configs(
                &bootstrap,
                &[
                    "--alter",
                    "--entity-type",
                    "clients",
                    "--entity-name",
                    client,
                    "--add-config",
                    "producer_byte_rate=10240",
                ],
            )?,
        )
        .await?
        .ok()?;
    }
    let produce_throttled = "woodpecker_kafka_quota_throttled_responses_total{quota=\"produce\"}";

    // Without a quota: no throttle time at all.
    let out = java_produce(&server, topic, "free-java").await?;
    let free_max = java_metric(&out, "produce-throttle-time-max", "free-java")?;
    ensure!(
        free_max <= 0.0 || free_max.is_nan(),
        "throttled without a quota: {free_max}\n{out}"
    );
    let v = confluent(&server, "produce", &[topic, "free-rdkafka", "150", "1000"]).await?;
    ensure!(
        v["delivered"] == 150 && v["throttle_events"] == 0 && v["stats_throttle_max"] == 0,
        "{v}"
    );
    ensure!(counter(&server, produce_throttled).await? == 0);

    // Under the quota: throttled, and every record delivered all the same.
    let out = java_produce(&server, topic, "slow-java").await?;
    let max = java_metric(&out, "produce-throttle-time-max", "slow-java")?;
    let avg = java_metric(&out, "produce-throttle-time-avg", "slow-java")?;
    ensure!(max > 0.0 && avg > 0.0, "max {max}, avg {avg}\n{out}");
    ensure!(out.contains("150 records sent"), "{out}");
    let after_java = counter(&server, produce_throttled).await?;
    ensure!(
        after_java > 0,
        "the server counted no throttled produce response"
    );
    let v = confluent(&server, "produce", &[topic, "slow-rdkafka", "150", "1000"]).await?;
    ensure!(v["delivered"] == 150, "{v}");
    ensure!(
        v["throttle_events"].as_u64().is_some_and(|n| n > 0)
            && v["stats_throttle_max"].as_u64().is_some_and(|n| n > 0),
        "{v}"
    );
    ensure!(counter(&server, produce_throttled).await? > after_java);

    // The consumer quota: 600 records (about 600 KB) are in the topic; at 50 KB/s one
    // response may carry about 500 KB (what the window can pay back), and the rest is
    // throttled until the first sample leaves the window.
    run(
        "kafka-configs.sh --alter clients slow-reader",
        configs(
            &bootstrap,
            &[
                "--alter",
                "--entity-type",
                "clients",
                "--entity-name",
                "slow-reader",
                "--add-config",
                "consumer_byte_rate=51200",
            ],
        )?,
    )
    .await?
    .ok()?;
    let v = confluent(&server, "consume", &[topic, "free-reader", "600"]).await?;
    ensure!(v["consumed"] == 600 && v["throttle_events"] == 0, "{v}");
    let v = confluent(&server, "consume", &[topic, "slow-reader", "600"]).await?;
    ensure!(
        v["consumed"] == 600 && v["throttle_events"].as_u64().is_some_and(|n| n > 0),
        "{v}"
    );
    let fetch_throttled = "woodpecker_kafka_quota_throttled_responses_total{quota=\"fetch\"}";
    ensure!(counter(&server, fetch_throttled).await? > 0);
    server.stop().await
}
