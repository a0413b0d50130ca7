//! What a writer's close leaves behind, in the simulation (deterministic: no real time).

use std::time::Duration;

use sim::Plan;
use sim::plan::MessageFaults;
use sim::run::{simulate, world};
use wal::client::LogStoreCluster;
use wal::clock::blocking::Inline;
use wal::message::WriteMessage;

/// A cluster of three replicas where every request is slow (up to 400 ms, none lost): the ack
/// quorum is two, so entries are acknowledged before the slowest replica has them. A close
/// gives that replica time to catch up before it completes the segment, so every replica
/// serves the whole segment afterwards.
fn slow_replicas(seed: u64) -> Plan {
    let mut plan = Plan::healthy(seed);
    plan.messages = MessageFaults {
        lose_request: 0.0,
        lose_reply: 0.0,
        delay: 0.8,
        max_delay: Duration::from_millis(400),
    };
    plan
}

#[test]
fn a_closing_writer_leaves_every_slow_replica_holding_the_whole_segment() {
    for seed in 1..=4 {
        let plan = slow_replicas(seed);
        let served = simulate(Inline::immediate(), async move {
            let w = world(&plan).await.unwrap();
            w.client.create_log("close").await.unwrap();
            let log = w.client.open_log("close").await.unwrap();
            let writer = log.open_writer().await.unwrap();
            let pending: Vec<_> = (0..60)
                .map(|i| writer.write_async(WriteMessage::new(format!("e{i}").into_bytes())))
                .collect();
            for p in pending {
                p.await.unwrap();
            }
            writer.close().await.unwrap();
            let segments = log.segments().await.unwrap();
            assert_eq!(segments.len(), 1, "seed {seed}: one segment");
            let (id, meta) = segments.iter().next().unwrap();
            assert_eq!(meta.last_entry_id, 59, "seed {seed}");
            let mut served = Vec::new();
            for node in &meta.quorum.as_ref().unwrap().nodes {
                let client = w.cluster.node(node).unwrap();
                served.push(
                    client
                        .get_segment_last_add_confirmed(log.log_id(), *id)
                        .await
                        .unwrap(),
                );
            }
            served
        })
        .unwrap();
        assert_eq!(
            served,
            [59, 59, 59],
            "seed {seed}: what each replica serves"
        );
    }
}
