//! The listener and broker at the byte level: a real engine on a temporary directory, a real
//! TCP listener, and requests encoded by the `kafka-protocol` crate's client side. Bad input
//! must get the answer a Kafka broker gives and leave the server healthy.

mod support;

use support::*;

#[tokio::test]
async fn api_versions_are_negotiated_and_newer_ones_downgraded() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    let resp: ApiVersionsResponse = c
        .call(
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
            3,
        )
        .await?;
    assert_eq!(resp.error_code, 0);
    let produce = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .context("Produce advertised")?;
    assert_eq!((produce.min_version, produce.max_version), (0, 11));
    assert!(
        resp.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16)
    );
    // Nothing this broker does not serve is advertised.
    assert!(
        !resp
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::WriteTxnMarkers as i16)
    );

    // ApiVersions v9: a v0 body with UNSUPPORTED_VERSION and the ranges, then the
    // connection keeps working.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(9);
    raw.put_i32(77);
    raw.put_i16(-1); // null client id
    raw.put_u8(0); // tagged fields
    c.send_raw(&raw).await?;
    let mut frame = c.read_frame().await?.context("a downgrade reply")?;
    assert_eq!(frame.get_i32(), 77);
    let v0 = ApiVersionsResponse::decode(&mut frame, 0)?;
    assert_eq!(v0.error_code, 35);
    assert!(!v0.api_keys.is_empty());
    let again: ApiVersionsResponse = c.call(&ApiVersionsRequest::default(), 0).await?;
    assert_eq!(again.error_code, 0);
    h.stop().await
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() -> Result<()> {
    let h = Harness::start_with(
        BrokerConfig::default(),
        ServerConfig {
            max_frame_bytes: 1024 * 1024,
            ..ServerConfig::default()
        },
    )
    .await?;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown api key", {
            let mut b = BytesMut::new();
            b.put_i16(999);
            b.put_i16(0);
            b.put_i32(1);
            b.put_i16(-1);
            b.to_vec()
        }),
        ("unserved version", {
            let mut b = BytesMut::new();
            b.put_i16(ApiKey::Fetch as i16);
            b.put_i16(99);
            b.put_i32(1);
            b.put_i16(-1);
            b.to_vec()
        }),
        ("produce v1 (removed message format)", {
            let mut b = BytesMut::new();
            b.put_i16(ApiKey::Produce as i16);
            b.put_i16(1);
            b.put_i32(1);
            b.put_i16(-1);
            b.to_vec()
        }),
        ("garbage body", {
            let mut b = BytesMut::new();
            b.put_i16(ApiKey::Metadata as i16);
            b.put_i16(9);
            b.put_i32(1);
            b.put_slice(&[0xff; 3]);
            b.to_vec()
        }),
        ("too short", vec![0, 3]),
    ];
    for (what, body) in cases {
        let mut c = h.connect().await?;
        c.send_raw(&body).await?;
        assert!(c.closed().await?, "{what}: the connection must be closed");
    }
    // A frame larger than the limit, and a negative length.
    for len in [2 * 1024 * 1024i32, -5] {
        let mut c = h.connect().await?;
        c.stream.write_all(&len.to_be_bytes()).await?;
        assert!(c.closed().await?, "length {len}");
    }
    // The server is healthy.
    let mut c = h.connect().await?;
    let resp: MetadataResponse = c.call(&MetadataRequest::default(), 9).await?;
    assert_eq!(resp.brokers.len(), 1);
    assert!(
        h.broker
            .metrics()
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 7
    );
    h.stop().await
}

#[tokio::test]
async fn produce_checks_batches_and_changes_nothing_on_bad_input() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(
        create_topic(&mut c, "t", 1, &[("max.message.bytes", "2000")]).await?,
        0
    );

    // Bad CRC.
    let good = batch(&["a", "b"], None);
    let mut bad = BytesMut::from(&good[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(produce(&mut c, "t", bad.freeze()).await?.0, 2); // CORRUPT_MESSAGE
    // Truncated batch.
    assert_eq!(
        produce(&mut c, "t", good.slice(..good.len() - 3)).await?.0,
        2
    );
    // Larger than max.message.bytes.
    let big = "x".repeat(3000);
    assert_eq!(produce(&mut c, "t", batch(&[&big], None)).await?.0, 10); // MESSAGE_TOO_LARGE
    // Unknown topic and partition.
    assert_eq!(produce(&mut c, "nope", good.clone()).await?.0, 3);
    let resp: ProduceResponse = c.call(&produce_req("t", 7, good.clone(), -1), 9).await?;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 3);
    // Nothing was stored.
    assert_eq!(offsets(&mut c, "t", -1).await?, (0, 0));

    assert_eq!(produce(&mut c, "t", good.clone()).await?, (0, 0));
    assert_eq!(produce(&mut c, "t", batch(&["c"], None)).await?, (0, 2));
    assert_eq!(offsets(&mut c, "t", -1).await?, (0, 3));
    assert_eq!(offsets(&mut c, "t", -2).await?, (0, 0));
    let (err, hwm, records) = fetch(&mut c, "t", 0, 100).await?;
    assert_eq!((err, hwm), (0, 3));
    assert_eq!(
        records,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );
    h.stop().await
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_pipelined_responses_keep_their_order() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "p", 1, &[]).await?, 0);
    c.send(&produce_req("p", 0, batch(&["zero"], None), 0), 9)
        .await?;
    let mut corrs = Vec::new();
    for i in 0..20 {
        let v = format!("v{i}");
        corrs.push(
            c.send(&produce_req("p", 0, batch(&[&v], None), -1), 9)
                .await?,
        );
    }
    let mut last = -1;
    for corr in corrs {
        // `read` checks that this correlation id is the next one.
        let resp = c.read::<ProduceRequest>(9, corr).await?;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert!(p.base_offset > last);
        last = p.base_offset;
    }
    // The acks=0 record was written first.
    let (_, hwm, records) = fetch(&mut c, "p", 0, 100).await?;
    assert_eq!(hwm, 21);
    assert_eq!(records[0], (0, "zero".to_string()));
    h.stop().await
}

#[tokio::test]
async fn idempotent_retries_are_stored_once() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "idem", 1, &[]).await?, 0);
    let init: InitProducerIdResponse = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
            4,
        )
        .await?;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let first = batch(&["a", "b", "c"], Some((pid, 0, 0)));
    assert_eq!(produce(&mut c, "idem", first.clone()).await?, (0, 0));
    // The retry of the same batch: success with the original offset, nothing stored.
    assert_eq!(produce(&mut c, "idem", first).await?, (0, 0));
    assert_eq!(offsets(&mut c, "idem", -1).await?.1, 3);
    assert_eq!(
        produce(&mut c, "idem", batch(&["d"], Some((pid, 0, 3)))).await?,
        (0, 3)
    );
    // A gap, an unknown producer and an old epoch.
    assert_eq!(
        produce(&mut c, "idem", batch(&["x"], Some((pid, 0, 9))))
            .await?
            .0,
        45
    );
    assert_eq!(
        produce(&mut c, "idem", batch(&["x"], Some((pid + 1000, 0, 5))))
            .await?
            .0,
        59
    );
    // Epoch bump (KIP-360) keeps the id; the old epoch is fenced.
    let bumped: InitProducerIdResponse = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(pid.into())
                .with_producer_epoch(0),
            4,
        )
        .await?;
    assert_eq!(
        (
            bumped.error_code,
            bumped.producer_id.0,
            bumped.producer_epoch
        ),
        (0, pid, 1)
    );
    assert_eq!(
        produce(&mut c, "idem", batch(&["e"], Some((pid, 1, 0)))).await?,
        (0, 4)
    );
    assert_eq!(
        produce(&mut c, "idem", batch(&["x"], Some((pid, 0, 4))))
            .await?
            .0,
        47
    );
    let (_, hwm, records) = fetch(&mut c, "idem", 0, 100).await?;
    assert_eq!(hwm, 5);
    let values: Vec<&str> = records.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, ["a", "b", "c", "d", "e"]);
    h.stop().await
}

#[tokio::test]
async fn fetch_returns_whole_batches_and_long_polls() -> Result<()> {
    // The broker's clock never moves: a long poll can only be answered by an append.
    let clock = wal::clock::ManualClock::new(1_700_000_000_000);
    let h = Harness::start_with(
        BrokerConfig::default().with_clock(clock.shared()),
        ServerConfig::default(),
    )
    .await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "f", 1, &[]).await?, 0);
    produce(&mut c, "f", batch(&["0", "1", "2", "3", "4"], None)).await?;
    // Mid-batch: the whole batch comes back; the client skips the earlier records.
    let (err, hwm, records) = fetch(&mut c, "f", 3, 100).await?;
    assert_eq!((err, hwm), (0, 5));
    assert_eq!(records.first().map(|r| r.0), Some(0));
    assert_eq!(records.len(), 5);
    // Beyond the end: OFFSET_OUT_OF_RANGE.
    assert_eq!(fetch(&mut c, "f", 99, 100).await?.0, 1);
    // At the end, a long poll is answered by the next append.
    let mut poller = h.connect().await?;
    let sleeping = clock.sleepers();
    let waiting = tokio::spawn(async move { fetch(&mut poller, "f", 5, 20_000).await });
    // The fetch is parked once it sleeps towards its deadline.
    clock.wait_for_sleepers(sleeping + 1).await;
    produce(&mut c, "f", batch(&["5"], None)).await?;
    let (err, hwm, records) = waiting.await??;
    assert_eq!((err, hwm), (0, 6));
    assert_eq!(records, vec![(5, "5".to_string())]);
    // Timestamps: the record at or after a time.
    assert_eq!(offsets(&mut c, "f", 1_700_000_000_000).await?, (0, 0));
    // Inside a batch: the record, not the batch.
    assert_eq!(offsets(&mut c, "f", 1_700_000_000_003).await?, (0, 3));
    // The latest timestamp (-3): the record that carries it.
    assert_eq!(offsets(&mut c, "f", -3).await?, (0, 4));
    assert_eq!(offsets(&mut c, "f", 1_800_000_000_000).await?.1, -1);
    h.stop().await
}

#[tokio::test]
async fn topics_are_created_checked_described_and_deleted() -> Result<()> {
    let h = Harness::start_with(
        BrokerConfig {
            auto_create_topics: true,
            ..BrokerConfig::default()
        },
        ServerConfig::default(),
    )
    .await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "bad/name", 1, &[]).await?, 17);
    assert_eq!(create_topic(&mut c, "t1", 0, &[]).await?, 37);
    assert_eq!(
        create_topic(&mut c, "t1", 1, &[("cleanup.policy", "compress")]).await?,
        40
    );
    assert_eq!(
        create_topic(&mut c, "t1", 1, &[("no.such", "1")]).await?,
        40
    );
    let rf3 = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(name("t1"))
            .with_num_partitions(1)
            .with_replication_factor(3),
    ]);
    let resp: CreateTopicsResponse = c.call(&rf3, 7).await?;
    assert_eq!(resp.topics[0].error_code, 38);
    // validate_only creates nothing.
    let dry = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name("dry"))
                .with_num_partitions(2)
                .with_replication_factor(-1),
        ]);
    let resp: CreateTopicsResponse = c.call(&dry, 7).await?;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(
        create_topic(&mut c, "t1", 3, &[("retention.ms", "1000")]).await?,
        0
    );
    assert_eq!(create_topic(&mut c, "t1", 3, &[]).await?, 36);

    let meta = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("t1"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("dry"))),
        ]));
    let resp: MetadataResponse = c.call(&meta, 12).await?;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 3);
    assert_eq!(resp.topics[0].partitions[0].leader_epoch, 0);
    assert!(!resp.topics[0].topic_id.is_nil());
    assert_eq!(resp.topics[1].error_code, 3);
    assert!(resp.cluster_id.is_some());

    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t1")),
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("0")),
    ]);
    let resp: DescribeConfigsResponse = c.call(&describe, 4).await?;
    let topic = &resp.results[0];
    assert_eq!(topic.error_code, 0);
    let retention = topic
        .configs
        .iter()
        .find(|e| e.name.as_str() == "retention.ms")
        .context("retention.ms")?;
    assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("1000"));
    assert_eq!(retention.config_source, 1);
    assert!(
        topic
            .configs
            .iter()
            .any(|e| e.name.as_str() == "cleanup.policy")
    );
    assert!(!resp.results[1].configs.is_empty());

    produce(&mut c, "t1", batch(&["gone"], None)).await?;
    let del = DeleteTopicsRequest::default().with_topic_names(vec![name("t1"), name("never")]);
    let resp: DeleteTopicsResponse = c.call(&del, 5).await?;
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(resp.responses[1].error_code, 3);
    // Re-created under the same name, it starts empty.
    assert_eq!(create_topic(&mut c, "t1", 1, &[]).await?, 0);
    assert_eq!(offsets(&mut c, "t1", -1).await?, (0, 0));
    h.stop().await
}

#[tokio::test]
async fn retention_removes_old_batches_but_keeps_the_offsets() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(
        create_topic(&mut c, "r", 1, &[("retention.ms", "1")]).await?,
        0
    );
    for i in 0..5 {
        produce(&mut c, "r", batch(&[&format!("{i}")], None)).await?;
    }
    // The batches carry 2023 timestamps: all are past retention, the newest is kept.
    h.broker.apply_retention().await;
    assert_eq!(offsets(&mut c, "r", -2).await?, (0, 4));
    assert_eq!(offsets(&mut c, "r", -1).await?, (0, 5));
    assert_eq!(fetch(&mut c, "r", 0, 100).await?.0, 1);
    let (_, _, records) = fetch(&mut c, "r", 4, 100).await?;
    assert_eq!(records, vec![(4, "4".to_string())]);
    h.stop().await
}

/// A batch of one record whose value is `size` bytes.
fn big_batch(size: usize) -> Bytes {
    let value = "v".repeat(size);
    batch(&[value.as_str()], None)
}

#[tokio::test]
async fn fetch_keeps_to_the_request_and_partition_byte_limits() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "limits", 3, &[]).await?, 0);
    for partition in 0..3 {
        let req = produce_req("limits", partition, big_batch(600 * 1024), -1);
        let resp: ProduceResponse = c.call(&req, 9).await?;
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    }
    let req_for = |max_bytes: i32, partition_max_bytes: i32| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(1)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(name("limits"))
                    .with_partitions(
                        (0..3)
                            .map(|p| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(0)
                                    .with_partition_max_bytes(partition_max_bytes)
                            })
                            .collect(),
                    ),
            ])
    };
    let sizes = |resp: &FetchResponse| -> Vec<usize> {
        resp.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .collect()
    };
    // 1 MiB for the response: the first 600 KiB batch, not the second (it would not fit).
    let resp: FetchResponse = c.call(&req_for(1024 * 1024, 1024 * 1024), 12).await?;
    let got = sizes(&resp);
    assert!(got[0] > 600 * 1024 && got[1] == 0 && got[2] == 0, "{got:?}");
    // A response limit smaller than one batch: the first batch still comes back whole
    // (KIP-74), and nothing else.
    let resp: FetchResponse = c.call(&req_for(100 * 1024, 1024 * 1024), 12).await?;
    let got = sizes(&resp);
    assert!(got[0] > 600 * 1024 && got[1] == 0 && got[2] == 0, "{got:?}");
    // Room for everything in the response, 100 KiB per partition: only the first partition's
    // first batch, which KIP-74 lets through whole.
    let resp: FetchResponse = c.call(&req_for(50 * 1024 * 1024, 100 * 1024), 12).await?;
    let got = sizes(&resp);
    assert!(got[0] > 600 * 1024 && got[1] == 0 && got[2] == 0, "{got:?}");
    // Room for all three.
    let resp: FetchResponse = c.call(&req_for(50 * 1024 * 1024, 1024 * 1024), 12).await?;
    assert!(sizes(&resp).iter().all(|&s| s > 600 * 1024));
    h.stop().await
}

/// A Fetch v17 request for `parts` (partition, fetch offset) of the topic with id `id`.
fn session_fetch(
    id: uuid::Uuid,
    session: (i32, i32),
    parts: &[(i32, i64)],
    max_wait_ms: i32,
) -> FetchRequest {
    let topics = if parts.is_empty() {
        Vec::new()
    } else {
        vec![
            fetch_request::FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, offset)| {
                            fetch_request::FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1024 * 1024)
                        })
                        .collect(),
                ),
        ]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_session_id(session.0)
        .with_session_epoch(session.1)
        .with_topics(topics)
}

/// (partition, error, whether records came) of every partition a response lists.
fn listed(resp: &FetchResponse) -> Vec<(i32, i16, bool)> {
    resp.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
            (p.partition_index, p.error_code, records)
        })
        .collect()
}

#[tokio::test]
async fn fetch_sessions_list_only_partitions_with_news_and_v13_names_topics_by_id() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "sess", 2, &[]).await?, 0);
    let resp: ProduceResponse = c
        .call(&produce_req("sess", 0, batch(&["a"], None), -1), 9)
        .await?;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let meta = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name("sess"))),
    ]));
    let resp: MetadataResponse = c.call(&meta, 12).await?;
    let id = resp.topics[0].topic_id;
    assert!(!id.is_nil());

    // Epoch 0 opens a session and answers everything, naming the topic by id.
    let resp: FetchResponse = c
        .call(&session_fetch(id, (0, 0), &[(0, 0), (1, 0)], 0), 17)
        .await?;
    assert_eq!(resp.error_code, 0);
    let session = resp.session_id;
    assert_ne!(session, 0);
    assert_eq!(resp.responses.len(), 1);
    assert_eq!(resp.responses[0].topic_id, id);
    assert_eq!(listed(&resp), vec![(0, 0, true), (1, 0, false)]);

    // Epoch 1 moves partition 0 past its record: nothing is new, nothing is listed.
    let resp: FetchResponse = c
        .call(&session_fetch(id, (session, 1), &[(0, 1)], 0), 17)
        .await?;
    assert_eq!((resp.error_code, resp.session_id), (0, session));
    assert_eq!(listed(&resp), vec![]);

    // A record on partition 1, and a long poll naming nothing: only partition 1 comes back.
    let mut poller = h.connect().await?;
    let waiting = tokio::spawn(async move {
        poller
            .call::<FetchRequest>(&session_fetch(id, (session, 2), &[], 20_000), 17)
            .await
    });
    let resp: ProduceResponse = c
        .call(&produce_req("sess", 1, batch(&["b"], None), -1), 9)
        .await?;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let resp = waiting.await??;
    assert_eq!(resp.error_code, 0);
    assert_eq!(listed(&resp), vec![(1, 0, true)]);
    let mut epoch = 3;

    // Replaying an epoch, or naming a session that is not open: top-level errors, session 0.
    let resp: FetchResponse = c.call(&session_fetch(id, (session, 1), &[], 0), 17).await?;
    assert_eq!((resp.error_code, resp.session_id), (71, 0));
    let resp: FetchResponse = c
        .call(&session_fetch(id, (session.wrapping_add(1), 1), &[], 0), 17)
        .await?;
    assert_eq!(resp.error_code, 70);
    // The session still works at the epoch it expects.
    let resp: FetchResponse = c
        .call(&session_fetch(id, (session, epoch), &[(1, 1)], 0), 17)
        .await?;
    assert_eq!((resp.error_code, resp.session_id), (0, session));
    epoch += 1;
    // A topic-id session used with names (v12) is refused.
    let by_name = fetch_req("sess", 0, 0)
        .with_session_id(session)
        .with_session_epoch(epoch);
    let resp: FetchResponse = c.call(&by_name, 12).await?;
    assert_eq!(resp.error_code, 106);

    // Forgetting partition 0 and adding it back at offset 0 lists it again with its record.
    let mut forget = session_fetch(id, (session, epoch), &[], 0);
    forget.forgotten_topics_data = vec![
        fetch_request::ForgottenTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![0]),
    ];
    let resp: FetchResponse = c.call(&forget, 17).await?;
    assert_eq!(resp.error_code, 0);
    epoch += 1;
    let resp: FetchResponse = c
        .call(&session_fetch(id, (session, epoch), &[(0, 0)], 0), 17)
        .await?;
    assert_eq!(listed(&resp), vec![(0, 0, true)]);

    // Without a session: an unknown topic id, and a leader epoch from the future.
    let unknown = uuid::Uuid::new_v4();
    let resp: FetchResponse = c
        .call(&session_fetch(unknown, (0, -1), &[(0, 0)], 0), 17)
        .await?;
    assert_eq!(resp.session_id, 0);
    assert_eq!(resp.responses[0].topic_id, unknown);
    assert_eq!(listed(&resp), vec![(0, 100, false)]);
    let mut future = session_fetch(id, (0, -1), &[(0, 0)], 0);
    future.topics[0].partitions[0].current_leader_epoch = 1;
    let resp: FetchResponse = c.call(&future, 17).await?;
    assert_eq!(listed(&resp), vec![(0, 75, false)]);
    h.stop().await
}

/// `compression.type` naming a codec: batches are stored (and fetched) in that codec with
/// their records unchanged, whatever the producer sent; `uncompressed` decompresses; zstd
/// is refused to Produce before v7; `producer` keeps batches as sent.
#[tokio::test]
async fn topics_with_a_compression_type_store_batches_in_that_codec() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    for (topic, codec) in [("c-gzip", 1), ("c-snappy", 2), ("c-lz4", 3), ("c-zstd", 4)] {
        let kind = ["uncompressed", "gzip", "snappy", "lz4", "zstd"][codec as usize];
        assert_eq!(
            create_topic(&mut c, topic, 1, &[("compression.type", kind)]).await?,
            0
        );
        assert_eq!(
            produce(&mut c, topic, batch(&["a", "b"], None)).await?,
            (0, 0)
        );
        let resp: FetchResponse = c.call(&fetch_req(topic, 0, 100), 12).await?;
        let records = resp.responses[0].partitions[0]
            .records
            .clone()
            .expect("records");
        let header = kafka_shim::batch::read_header(&records)?;
        assert_eq!(header.compression(), codec, "{topic}");
        // The records are those produced (read through the uncompressed form: the test
        // client's decoder has no codecs).
        let mut plain = kafka_shim::batch::recompress(&records, 0, 1 << 20)?;
        let mut values = Vec::new();
        for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut plain)? {
            for r in set.records {
                values.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
            }
        }
        assert_eq!(
            values,
            vec![(0, b"a".to_vec()), (1, b"b".to_vec())],
            "{topic}"
        );
    }
    // A zstd topic refuses Produce v6 (zstd needs v7+).
    let resp: ProduceResponse = c
        .call(&produce_req("c-zstd", 0, batch(&["c"], None), -1), 6)
        .await?;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 76);
    // A gzip batch into an `uncompressed` topic is stored uncompressed.
    assert_eq!(
        create_topic(&mut c, "c-none", 1, &[("compression.type", "uncompressed")]).await?,
        0
    );
    let gzip = kafka_shim::batch::recompress(&batch(&["z"], None), 1, 1 << 20)?;
    assert_eq!(produce(&mut c, "c-none", gzip).await?, (0, 0));
    let resp: FetchResponse = c.call(&fetch_req("c-none", 0, 100), 12).await?;
    let records = resp.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert_eq!(kafka_shim::batch::read_header(&records)?.compression(), 0);
    assert_eq!(
        create_topic(&mut c, "c-bad", 1, &[("compression.type", "brotli")]).await?,
        40
    );
    h.stop().await
}

/// OffsetForLeaderEpoch v0 and v1, which the `kafka-protocol` crate cannot write: the frames
/// are built by hand as a client of those versions sends them, and the answers read by hand
/// (v0 has no leader epoch, neither has a throttle time).
#[tokio::test]
async fn offset_for_leader_epoch_v0_and_v1_are_served() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "epochs", 1, &[]).await?, 0);
    let (code, _) = produce(&mut c, "epochs", batch(&["a", "b", "c"], None)).await?;
    assert_eq!(code, 0);
    for version in [0i16, 1] {
        let mut req = BytesMut::new();
        req.put_i16(ApiKey::OffsetForLeaderEpoch as i16);
        req.put_i16(version);
        req.put_i32(77);
        req.put_i16(-1);
        req.put_i32(2); // topics
        req.put_i16(6);
        req.put_slice(b"epochs");
        req.put_i32(2); // partitions
        req.put_i32(0);
        req.put_i32(0); // epoch 0: ends at the high watermark
        req.put_i32(5);
        req.put_i32(0); // no such partition
        req.put_i16(7);
        req.put_slice(b"missing");
        req.put_i32(1);
        req.put_i32(0);
        req.put_i32(0);
        c.send_raw(&req).await?;
        let mut frame = c.read_frame().await?.context("connection closed")?;
        assert_eq!(frame.get_i32(), 77, "v{version}: correlation id");
        let mut answers = Vec::new();
        for _ in 0..frame.get_i32() {
            let len = frame.get_i16() as usize;
            let topic = String::from_utf8(frame.split_to(len).to_vec())?;
            for _ in 0..frame.get_i32() {
                let code = frame.get_i16();
                let partition = frame.get_i32();
                let epoch = if version >= 1 { frame.get_i32() } else { -9 };
                let end = frame.get_i64();
                answers.push((topic.clone(), partition, code, epoch, end));
            }
        }
        assert!(!frame.has_remaining(), "v{version}: trailing bytes");
        let epoch = if version >= 1 { 0 } else { -9 };
        let none = if version >= 1 { -1 } else { -9 };
        assert_eq!(
            answers,
            [
                ("epochs".to_string(), 0, 0, epoch, 3),
                ("epochs".to_string(), 5, 3, none, -1),
                ("missing".to_string(), 0, 3, none, -1),
            ],
            "v{version}"
        );
    }
    // A v0 frame claiming two billion topics closes only its connection.
    let mut bad = BytesMut::new();
    bad.put_i16(ApiKey::OffsetForLeaderEpoch as i16);
    bad.put_i16(0);
    bad.put_i32(1);
    bad.put_i16(-1);
    bad.put_i32(i32::MAX);
    c.send_raw(&bad).await?;
    assert!(c.closed().await?);
    let mut c = h.connect().await?;
    let resp: MetadataResponse = c.call(&MetadataRequest::default(), 9).await?;
    assert_eq!(resp.brokers.len(), 1);
    h.stop().await
}
