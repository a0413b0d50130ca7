//! `__consumer_offsets` at the byte level, against a real engine and listener: it appears
//! (internal, 50 partitions, compacted) once offsets are written, every commit and deletion
//! is a record in Kafka's layout in the partition Kafka would choose, the offsets are stable
//! across a restart, and what would damage it is refused with Kafka's codes.
//!
//! The records are decoded here by hand from Kafka's published schema (`OffsetCommitKey`
//! v1, `OffsetCommitValue` v3), not with the broker's encoder.

mod support;

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, GroupId, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, create_partitions_request, delete_records_request,
    incremental_alter_configs_request, offset_commit_request, offset_delete_request,
};
use kafka_shim::offsets_topic::{OFFSETS_TOPIC, partition_for};
use support::*;

/// One record of the offsets topic, decoded: (offset, group, topic, partition, value), the
/// value `None` for a tombstone, else (offset, leader epoch, metadata, commit timestamp).
type Decoded = (i64, String, String, i32, Option<(i64, i32, String, i64)>);

fn string(b: &mut Bytes) -> String {
    let n = b.get_i16() as usize;
    String::from_utf8(b.split_to(n).to_vec()).expect("UTF-8")
}

fn decode(offset: i64, key: Option<Bytes>, value: Option<Bytes>) -> Decoded {
    let mut k = key.expect("a key");
    assert_eq!(k.get_i16(), 1, "key version");
    let (group, topic, partition) = (string(&mut k), string(&mut k), k.get_i32());
    assert!(!k.has_remaining());
    let value = value.map(|mut v| {
        assert_eq!(v.get_i16(), 3, "value version");
        let out = (v.get_i64(), v.get_i32(), string(&mut v), v.get_i64());
        assert!(!v.has_remaining());
        out
    });
    (offset, group, topic, partition, value)
}

/// Every record of partition `p` of the offsets topic from offset 0, and its high watermark.
async fn read_log(conn: &mut Conn, p: i32) -> Result<(i64, Vec<Decoded>)> {
    let mut req = fetch_req(OFFSETS_TOPIC, 0, 0);
    req.topics[0].partitions[0].partition = p;
    let resp: FetchResponse = conn.call(&req, 12).await?;
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let mut out = Vec::new();
    if let Some(records) = &part.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf)? {
            for r in set.records {
                out.push(decode(r.offset, r.key, r.value));
            }
        }
    }
    Ok((part.high_watermark, out))
}

fn commit(group: &str, topic: &str, offsets: &[(i32, i64, &str)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name(topic))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o, m)| {
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_leader_epoch(0)
                                .with_committed_metadata(Some(StrBytes::from_string(
                                    (*m).to_string(),
                                )))
                        })
                        .collect(),
                ),
        ])
}

async fn committed(conn: &mut Conn, req: &OffsetCommitRequest) -> Result<Vec<i16>> {
    let resp: OffsetCommitResponse = conn.call(req, 8).await?;
    Ok(resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect())
}

async fn all_topics(conn: &mut Conn) -> Result<MetadataResponse> {
    conn.call(&MetadataRequest::default().with_topics(None), 12)
        .await
}

#[tokio::test]
async fn commits_are_records_of_the_internal_topic_in_kafkas_format() -> Result<()> {
    let mut h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "t", 2, &[]).await?, 0);
    // Not there before any offset was written (Kafka makes it on first use).
    let meta = all_topics(&mut c).await?;
    assert!(
        !meta
            .topics
            .iter()
            .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == OFFSETS_TOPIC)),
        "{:?}",
        meta.topics
    );

    let (g1, g2) = ("group-one", "g2");
    assert_eq!(
        committed(&mut c, &commit(g1, "t", &[(0, 5, "m"), (1, 7, "")])).await?,
        [0, 0]
    );
    let meta = all_topics(&mut c).await?;
    let internal = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == OFFSETS_TOPIC))
        .expect("the offsets topic is listed");
    assert!(internal.is_internal);
    assert_eq!(internal.partitions.len(), 50);
    let user = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "t"))
        .expect("t");
    assert!(!user.is_internal);

    // Its configuration, as Kafka gives it.
    let described: DescribeConfigsResponse = c
        .call(
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC)),
            ]),
            4,
        )
        .await?;
    let policy = described.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "cleanup.policy")
        .and_then(|c| c.value.as_ref().map(|v| v.to_string()));
    assert_eq!(policy.as_deref(), Some("compact"));

    let p1 = partition_for(g1, 50);
    let (hwm, records) = read_log(&mut c, p1).await?;
    assert_eq!(hwm, 2);
    let t = |s: &str| s.to_string();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records
            .iter()
            .map(|(o, g, tp, p, v)| (
                *o,
                g.clone(),
                tp.clone(),
                *p,
                v.as_ref().map(|v| (v.0, v.1, v.2.clone()))
            ))
            .collect::<Vec<_>>(),
        [
            (0, t(g1), t("t"), 0, Some((5, 0, t("m")))),
            (1, t(g1), t("t"), 1, Some((7, 0, t("")))),
        ]
    );
    // The commit timestamp is a time of this commit (after the topic was made).
    let stamp = records[0].4.as_ref().map(|v| v.3).unwrap_or_default();
    assert!(stamp >= internal_created_ms(&h), "{stamp}");

    // Another group, in its own partition (when the hashes differ).
    assert_eq!(
        committed(&mut c, &commit(g2, "t", &[(0, 1, "x")])).await?,
        [0]
    );
    let p2 = partition_for(g2, 50);
    assert_ne!(p1, p2, "pick groups of different partitions");
    let (_, records2) = read_log(&mut c, p2).await?;
    assert_eq!(records2.len(), 1);
    assert_eq!((records2[0].1.as_str(), records2[0].3), (g2, 0));

    // A second commit, an OffsetDelete and a DeleteGroups: a value, then tombstones.
    assert_eq!(
        committed(&mut c, &commit(g1, "t", &[(0, 6, "n")])).await?,
        [0]
    );
    let delete: OffsetDeleteResponse = c
        .call(
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("group-one")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(name("t"))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(1),
                        ]),
                ]),
            0,
        )
        .await?;
    assert_eq!(delete.error_code, 0);
    assert_eq!(delete.topics[0].partitions[0].error_code, 0);
    let deleted: DeleteGroupsResponse = c
        .call(
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_static_str("group-one"))]),
            2,
        )
        .await?;
    assert_eq!(deleted.results[0].error_code, 0);
    let (hwm, records) = read_log(&mut c, p1).await?;
    assert_eq!(hwm, 5);
    assert_eq!(
        records[2..]
            .iter()
            .map(|(o, _, _, p, v)| (*o, *p, v.as_ref().map(|v| v.0)))
            .collect::<Vec<_>>(),
        [(2, 0, Some(6)), (3, 1, None), (4, 0, None)]
    );

    // What would damage it is refused, with Kafka's codes.
    refusals(&mut c).await?;

    // The records and their offsets survive a restart; commits go on after them.
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    let (hwm_again, again) = read_log(&mut c, p1).await?;
    assert_eq!((hwm_again, &again), (hwm, &records));
    assert_eq!(
        committed(&mut c, &commit(g1, "t", &[(1, 9, "")])).await?,
        [0]
    );
    let (hwm, records) = read_log(&mut c, p1).await?;
    assert_eq!(hwm, 6);
    assert_eq!(
        (
            records[5].0,
            records[5].3,
            records[5].4.as_ref().map(|v| v.0)
        ),
        (5, 1, Some(9))
    );
    h.stop().await
}

/// When the offsets topic was created (its record's creation time).
fn internal_created_ms(h: &Harness) -> i64 {
    h.broker
        .topics()
        .get(OFFSETS_TOPIC)
        .map(|t| t.created_ms)
        .unwrap_or(i64::MAX)
}

async fn refusals(c: &mut Conn) -> Result<()> {
    // Produce: INVALID_TOPIC_EXCEPTION (17), "Cannot append to internal topic".
    let (code, _) = produce(c, OFFSETS_TOPIC, batch(&["x"], None)).await?;
    assert_eq!(code, 17);
    // CreateTopics of its name: TOPIC_ALREADY_EXISTS (36).
    assert_eq!(create_topic(c, OFFSETS_TOPIC, 3, &[]).await?, 36);
    // DeleteRecords: INVALID_TOPIC_EXCEPTION, "Cannot delete records of internal topic".
    let resp: DeleteRecordsResponse = c
        .call(
            &DeleteRecordsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(name(OFFSETS_TOPIC))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(1),
                        ]),
                ]),
            2,
        )
        .await?;
    assert_eq!(resp.topics[0].partitions[0].error_code, 17);
    // DeleteTopics, CreatePartitions and AlterConfigs: refused here (see the module docs).
    let resp: DeleteTopicsResponse = c
        .call(
            &DeleteTopicsRequest::default()
                .with_topic_names(vec![name(OFFSETS_TOPIC)])
                .with_timeout_ms(5000),
            5,
        )
        .await?;
    assert_eq!(resp.responses[0].error_code, 17);
    let resp: CreatePartitionsResponse = c
        .call(
            &CreatePartitionsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name(OFFSETS_TOPIC))
                        .with_count(60),
                ]),
            3,
        )
        .await?;
    assert_eq!(resp.results[0].error_code, 17);
    let resp: IncrementalAlterConfigsResponse = c
        .call(
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str(OFFSETS_TOPIC))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("1000"))),
                    ]),
            ]),
            1,
        )
        .await?;
    assert_eq!(resp.responses[0].error_code, 42);
    // Still there, unchanged: 50 partitions.
    let meta = all_topics(c).await?;
    let internal = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == OFFSETS_TOPIC))
        .expect("still listed");
    assert_eq!(internal.partitions.len(), 50);
    Ok(())
}

/// Offsets of an Empty group past `offsets.retention.minutes` are deleted, and the log says
/// so with tombstones (waited for with long-polling fetches, bounded by a failure guard).
#[tokio::test]
async fn expired_offsets_become_tombstones() -> Result<()> {
    let config = BrokerConfig {
        groups: kafka_shim::groups::GroupSettings {
            offsets_retention: Some(Duration::from_millis(100)),
            ..Default::default()
        },
        ..BrokerConfig::default()
    };
    let h = Harness::start_with(config, ServerConfig::default()).await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "e", 1, &[]).await?, 0);
    let group = "expiring";
    assert_eq!(
        committed(&mut c, &commit(group, "e", &[(0, 4, "")])).await?,
        [0]
    );
    let p = partition_for(group, 50);
    // A failure guard, not a timing: at most 30 long polls.
    let mut polls = 0;
    let records = loop {
        let mut req = fetch_req(OFFSETS_TOPIC, 1, 2_000);
        req.topics[0].partitions[0].partition = p;
        let resp: FetchResponse = c.call(&req, 12).await?;
        if resp.responses[0].partitions[0]
            .records
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        {
            break read_log(&mut c, p).await?.1;
        }
        polls += 1;
        assert!(polls < 30, "no tombstone after the retention");
    };
    let kinds: Vec<(i64, i32, bool)> = records
        .iter()
        .map(|(o, _, _, p, v)| (*o, *p, v.is_none()))
        .collect();
    assert_eq!(kinds, [(0, 0, false), (1, 0, true)]);
    h.stop().await
}

/// Compaction: once most of a partition is superseded, the coordinator writes the offsets in
/// force again and moves the partition's start past everything they supersede; a reader from
/// the start then sees each offset in force once, and the committed offsets are unchanged.
#[tokio::test]
async fn a_superseded_partition_is_compacted_to_the_offsets_in_force() -> Result<()> {
    let mut h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "k", 2, &[]).await?, 0);
    let group = "compacting";
    for i in 0..30 {
        assert_eq!(
            committed(
                &mut c,
                &commit(group, "k", &[(0, i, "m"), (1, 100 + i, "")])
            )
            .await?,
            [0, 0]
        );
    }
    let p = partition_for(group, 50);
    let (hw, before) = read_log(&mut c, p).await?;
    assert_eq!((hw, before.len()), (60, 60));
    // Below the threshold nothing happens.
    assert_eq!(h.broker.groups().compact_offsets_log(100).await?, 0);
    assert_eq!(h.broker.groups().compact_offsets_log(0).await?, 1);
    let mut req = fetch_req(OFFSETS_TOPIC, 0, 0);
    req.topics[0].partitions[0].partition = p;
    let resp: FetchResponse = c.call(&req, 12).await?;
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.log_start_offset, 60, "the superseded records are gone");
    assert_eq!(part.error_code, 1, "offset 0 is now out of range");
    let mut req = fetch_req(OFFSETS_TOPIC, 60, 0);
    req.topics[0].partitions[0].partition = p;
    let resp: FetchResponse = c.call(&req, 12).await?;
    let part = &resp.responses[0].partitions[0];
    let mut after = Vec::new();
    if let Some(records) = &part.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf)? {
            for r in set.records {
                after.push(decode(r.offset, r.key, r.value));
            }
        }
    }
    let kept: Vec<(i64, i32, Option<i64>)> = after
        .iter()
        .map(|(o, _, _, partition, v)| (*o, *partition, v.as_ref().map(|v| v.0)))
        .collect();
    assert_eq!(kept, [(60, 0, Some(29)), (61, 1, Some(129))]);
    // Nothing to do a second time; the next commit lands after the snapshot.
    assert_eq!(h.broker.groups().compact_offsets_log(0).await?, 0);
    assert_eq!(
        committed(&mut c, &commit(group, "k", &[(0, 30, "")])).await?,
        [0]
    );
    // The start and the records survive a restart.
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    let mut req = fetch_req(OFFSETS_TOPIC, 60, 0);
    req.topics[0].partitions[0].partition = p;
    let resp: FetchResponse = c.call(&req, 12).await?;
    let part = &resp.responses[0].partitions[0];
    assert_eq!((part.log_start_offset, part.high_watermark), (60, 63));
    h.stop().await
}
