//! Hostile but fair clients, byte by byte: every reproducer reported against the listener
//! (a 19-byte frame that aborted the process, a topic of two billion partitions, a flood of
//! idle connections, a stored topic record no broker could serve), thousands of mutated
//! frames of every request kind, and after each, a client that produces and consumes
//! normally on the same server.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

mod support;

use std::sync::atomic::Ordering;

use kafka_protocol::messages::{
    DescribeGroupsRequest, FindCoordinatorRequest, JoinGroupRequest, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, join_group_request,
    offset_commit_request, sync_group_request,
};
use support::*;

/// Produces two records to partition 0 of `topic` and reads them back from `from`.
async fn produce_and_consume(h: &Harness, topic: &str) -> Result<()> {
    let mut c = h.connect().await?;
    let created = create_topic(&mut c, topic, 1, &[]).await?;
    assert!(created == 0 || created == 36, "creating {topic}: {created}");
    let (err, base) = produce(&mut c, topic, batch(&["after", "abuse"], None)).await?;
    assert_eq!(err, 0, "produce to {topic}");
    let (err, _, records) = fetch(&mut c, topic, base, 1000).await?;
    assert_eq!(err, 0, "fetch from {topic}");
    let values: Vec<&str> = records.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["after", "abuse"], "records of {topic}");
    Ok(())
}

/// A small deterministic generator, so that a failing frame can be found again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The body (header and request, without the size) of `req` at `version`.
fn encoded<R: kafka_protocol::protocol::Request>(req: &R, version: i16) -> Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    let mut b = BytesMut::new();
    header.encode(&mut b, R::header_version(version))?;
    req.encode(&mut b, version)?;
    Ok(b.to_vec())
}

/// Valid requests of most kinds, in old and new versions, to mutate.
fn valid_frames() -> Result<Vec<Vec<u8>>> {
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("m"))),
    ]));
    let join = JoinGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(s("g")))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(1000)
        .with_member_id(s(""))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"\x00\x01\x00\x00\x00\x01\x00\x01m")),
        ]);
    let sync = SyncGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(s("g")))
        .with_member_id(s("member"))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s("member"))
                .with_assignment(Bytes::from_static(b"\x00\x01")),
        ]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(s("g")))
        .with_member_id(s(""))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name("m"))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(0),
                ]),
        ]);
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("created-by-mutation"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let describe_configs = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("m")),
    ]);
    Ok(vec![
        encoded(&metadata, 4)?,
        encoded(&metadata, 9)?,
        encoded(&metadata, 12)?,
        encoded(&produce_req("m", 0, batch(&["x"], None), 1), 9)?,
        encoded(&produce_req("m", 0, batch(&["x"], None), 1), 7)?,
        encoded(&fetch_req("m", 0, 0), 12)?,
        encoded(&fetch_req("m", 0, 0), 4)?,
        encoded(&join, 9)?,
        encoded(&join, 4)?,
        encoded(&sync, 5)?,
        encoded(&commit, 8)?,
        encoded(&commit, 2)?,
        encoded(&OffsetFetchRequest::default(), 8)?,
        encoded(&create, 7)?,
        encoded(&create, 4)?,
        encoded(&describe_configs, 4)?,
        encoded(
            &DescribeGroupsRequest::default()
                .with_groups(vec![kafka_protocol::messages::GroupId(s("g"))]),
            5,
        )?,
        encoded(&ListGroupsRequest::default(), 4)?,
        encoded(&FindCoordinatorRequest::default().with_key(s("g")), 3)?,
        encoded(&ApiVersionsRequest::default(), 3)?,
    ])
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() -> Result<()> {
    let h = Harness::start().await?;
    // The reported frame (19 bytes with its size): Metadata v4 claiming 0x7fffffff topics.
    let mut c = h.connect().await?;
    c.stream
        .write_all(b"\x00\x00\x00\x0f\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff\x00")
        .await?;
    assert!(c.closed().await?, "the connection is closed");
    produce_and_consume(&h, "after-the-frame").await?;

    // The same claim in every width a request can make it.
    let claims: Vec<(&str, Vec<u8>)> = vec![
        ("metadata v12, compact count 2^32-2", {
            b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f".to_vec()
        }),
        ("join group v9, a 4 GiB compact group id", {
            b"\x00\x0b\x00\x09\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f".to_vec()
        }),
        ("header v2 with 2^28 tagged fields", {
            b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x80\x80\x80\x80\x01".to_vec()
        }),
        ("join group v5, protocol metadata of 2 GiB", {
            let mut b = BytesMut::new();
            b.put_slice(b"\x00\x0b\x00\x05\x00\x00\x00\x01\xff\xff");
            b.put_slice(
                b"\x00\x01g\x00\x00\x17\x70\x00\x00\x03\xe8\x00\x00\xff\xff\x00\x08consumer",
            );
            b.put_i32(1);
            b.put_slice(b"\x00\x05range");
            b.put_i32(0x7fff_fff0);
            b.to_vec()
        }),
        ("produce v9 with 2^31-1 partitions", {
            let mut b = BytesMut::new();
            b.put_slice(
                b"\x00\x00\x00\x09\x00\x00\x00\x01\xff\xff\x00\x00\x00\x01\x00\x00\x03\xe8",
            );
            b.put_slice(b"\x02\x02t\xff\xff\xff\xff\x07");
            b.to_vec()
        }),
    ];
    for (what, body) in claims {
        let mut c = h.connect().await?;
        c.send_raw(&body).await?;
        assert!(c.closed().await?, "{what}: the connection is closed");
    }
    produce_and_consume(&h, "after-the-claims").await?;

    // Thousands of mutated valid requests of many kinds, one connection each. The server
    // answers or closes the connection; it must never go away.
    let frames = valid_frames()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..150 {
        for frame in &frames {
            let mut bytes = frame.clone();
            for _ in 0..1 + rng.next() % 3 {
                // Mutate the body, not the prefix: key, version and correlation id are
                // covered by the tests of the listener.
                let at = 8 + (rng.next() as usize) % (bytes.len() - 8);
                bytes[at] = match rng.next() % 4 {
                    0 => 0xff,
                    1 => 0x7f,
                    2 => 0x00,
                    _ => rng.next() as u8,
                };
            }
            let mut c = h
                .connect()
                .await
                .with_context(|| format!("round {round}"))?;
            // The server may already have closed it (a refused connection): no matter.
            let _ = c.send_raw(&bytes).await;
        }
    }
    produce_and_consume(&h, "after-the-mutations").await?;
    assert!(h.broker.metrics().protocol_errors.load(Ordering::Relaxed) >= 6);
    h.stop().await
}

#[tokio::test]
async fn create_topics_has_kafkas_limits() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    let one = |name_: &str, partitions: i32, rf: i16| {
        create_topics_request::CreatableTopic::default()
            .with_name(name(name_))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
    };
    let create = async |c: &mut Conn, topics: Vec<create_topics_request::CreatableTopic>| {
        let resp: CreateTopicsResponse = c
            .call(&CreateTopicsRequest::default().with_topics(topics), 7)
            .await?;
        Ok::<_, anyhow::Error>(
            resp.topics
                .into_iter()
                .map(|t| (t.error_code, t.error_message.map(|m| m.to_string())))
                .collect::<Vec<_>>(),
        )
    };
    // The reported request, and one just over the limit: refused whole, as Kafka's
    // controller refuses an operation of more than 10,000 records.
    for partitions in [i32::MAX, 10_000] {
        let r = create(&mut c, vec![one("huge", partitions, 1), one("small", 1, 1)]).await?;
        for (code, message) in r {
            assert_eq!(code, 44, "POLICY_VIOLATION for {partitions}");
            assert_eq!(
                message.as_deref(),
                Some("Unable to perform excessively large batch operation.")
            );
        }
    }
    let r = create(&mut c, vec![one("zero", 0, 1)]).await?;
    assert_eq!(r[0].0, 37, "INVALID_PARTITIONS: {r:?}");
    let r = create(&mut c, vec![one("negative", -7, 1)]).await?;
    assert_eq!(r[0].0, 37, "INVALID_PARTITIONS: {r:?}");
    let r = create(&mut c, vec![one("rf-zero", 1, 0)]).await?;
    assert_eq!(r[0].0, 38, "INVALID_REPLICATION_FACTOR: {r:?}");
    let mut assigned = one("assigned", 3, -1);
    assigned.assignments = vec![
        create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(0)]),
    ];
    let r = create(&mut c, vec![assigned]).await?;
    assert_eq!(r[0].0, 42, "INVALID_REQUEST: {r:?}");
    // Nothing was created.
    let meta: MetadataResponse = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    assert!(meta.topics.is_empty(), "{:?}", meta.topics);

    // The largest topic one request may create is served, described and deleted quickly.
    let r = create(&mut c, vec![one("wide", 9_999, 1)]).await?;
    assert_eq!(r[0].0, 0, "{r:?}");
    let meta: MetadataResponse = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    assert_eq!(meta.topics[0].partitions.len(), 9_999);
    produce_and_consume(&h, "wide").await?;
    let del: DeleteTopicsResponse = c
        .call(
            &DeleteTopicsRequest::default().with_topic_names(vec![name("wide")]),
            5,
        )
        .await?;
    assert_eq!(del.responses[0].error_code, 0);
    assert!(!h.engine.client.log_exists("kafka:wide:0").await?);
    h.stop().await
}

#[tokio::test]
async fn a_stored_topic_of_too_many_partitions_is_not_served_but_deletable() -> Result<()> {
    let mut h = Harness::start().await?;
    // What a broker without the limit stored for CreateTopics(num_partitions=2^31-1).
    let key = format!("{}/kafka/topics/huge", h.engine.meta.keys().prefix());
    let record = format!(
        r#"{{"name":"huge","id":"{}","partitions":2147483647,"configs":{{}},"created_ms":1}}"#,
        uuid_like()
    );
    h.engine
        .meta
        .kv()
        .put(&key, Bytes::from(record), None)
        .await?;
    h.restart_broker().await?;

    let mut c = h.connect().await?;
    let meta: MetadataResponse = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    assert!(meta.topics.is_empty(), "not served: {:?}", meta.topics);
    // Asked for by name, with auto-creation on: still not served, not re-created.
    let named = MetadataRequest::default()
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("huge"))),
        ]))
        .with_allow_auto_topic_creation(true);
    let meta: MetadataResponse = c.call(&named, 12).await?;
    assert_eq!(meta.topics.len(), 1);
    assert_ne!(meta.topics[0].error_code, 0);
    assert!(meta.topics[0].partitions.is_empty());
    produce_and_consume(&h, "neighbour").await?;

    let del: DeleteTopicsResponse = c
        .call(
            &DeleteTopicsRequest::default().with_topic_names(vec![name("huge")]),
            5,
        )
        .await?;
    assert_eq!(del.responses[0].error_code, 0, "{:?}", del.responses[0]);
    assert!(h.engine.meta.kv().get(&key).await?.is_none());
    // The name is free again.
    assert_eq!(create_topic(&mut c, "huge", 2, &[]).await?, 0);
    h.stop().await
}

fn uuid_like() -> &'static str {
    "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"
}

#[tokio::test]
async fn idle_connections_give_way_to_clients_at_the_limit() -> Result<()> {
    let h = Harness::start_with(
        BrokerConfig::default(),
        ServerConfig {
            max_connections: 32,
            evict_idle_after: Duration::from_millis(200),
            ..ServerConfig::default()
        },
    )
    .await?;
    // A consumer long-polling: a request in flight, never closed to make room.
    let mut polling = h.connect().await?;
    assert_eq!(create_topic(&mut polling, "flood", 1, &[]).await?, 0);
    let corr = polling.send(&fetch_req("flood", 0, 8_000), 12).await?;

    // 200 connections that send nothing, held open; then a normal client.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(h.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        produce_and_consume(&h, "flood").await?;
    }
    let metrics = h.broker.metrics();
    assert!(metrics.connections_evicted.load(Ordering::Relaxed) > 0);
    // The long poll was answered with the records produced meanwhile, not cut off.
    let resp: FetchResponse = polling.read::<FetchRequest>(12, corr).await?;
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    drop(idle);
    h.stop().await
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_closed_even_mid_request() -> Result<()> {
    let h = Harness::start_with(
        BrokerConfig::default(),
        ServerConfig {
            idle_timeout: Duration::from_secs(2),
            ..ServerConfig::default()
        },
    )
    .await?;
    // Silent after connecting.
    let mut silent = h.connect().await?;
    // Half a request, then nothing (a slow-loris client).
    let mut partial = h.connect().await?;
    partial.stream.write_all(&[0, 0, 0, 40, 0, 3, 0]).await?;
    assert!(silent.closed().await?);
    assert!(partial.closed().await?);
    // A client that keeps talking is not closed.
    let mut busy = h.connect().await?;
    for _ in 0..6 {
        let _: MetadataResponse = busy.call(&MetadataRequest::default(), 12).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    h.stop().await
}
