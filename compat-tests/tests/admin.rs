//! The admin APIs (CreatePartitions, DeleteRecords, AlterConfigs, IncrementalAlterConfigs,
//! OffsetForLeaderEpoch, and cleanup.policy=compact refusing records without a key) through
//! two independent clients, confluent-kafka's AdminClient (librdkafka) and kafka-python's
//! KafkaAdminClient, each against a server of its own that is restarted between the checks
//! so that what was changed is seen to be durable. The client program is
//! `clients/python/admin_clients.py`; it is found through the variables
//! `scripts/compat-tools env` prints.

use anyhow::{Result, ensure};
use compat_tests::Server;
use compat_tests::clients::{python, run};

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
