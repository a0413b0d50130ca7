//! The listener and broker at the byte level: a real engine on a temporary directory, a real
//! TCP listener, and requests encoded by the `kafka-protocol` crate's client side. Bad input
//! must get the answer a Kafka broker gives and leave the server healthy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    create_topics_request, describe_configs_request, fetch_request, list_offsets_request,
    metadata_request, produce_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_shim::{Broker, BrokerConfig, Metrics, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use wal::clock::SystemClock;
use wal::config::Config;
use wal::engine::Engine;

struct Harness {
    _dir: tempfile::TempDir,
    engine: Engine,
    broker: Arc<Broker>,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), kafka_shim::ShimError>>,
}

impl Harness {
    async fn start() -> Result<Harness> {
        Self::start_with(BrokerConfig::default(), ServerConfig::default()).await
    }

    async fn start_with(mut config: BrokerConfig, server: ServerConfig) -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let yaml = format!(
            "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n",
            dir.path().join("data").display()
        );
        let engine = Engine::open(Config::from_yaml_str(&yaml)?, SystemClock::shared()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.advertised_port = i32::from(addr.port());
        let broker = Broker::open(
            engine.client.clone(),
            engine.meta.kv().clone(),
            engine.meta.keys().prefix(),
            config,
            Arc::new(Metrics::default()),
        )
        .await?;
        let (stop, rx) = watch::channel(false);
        let server = tokio::spawn(kafka_shim::serve(listener, broker.clone(), server, rx));
        Ok(Harness {
            _dir: dir,
            engine,
            broker,
            addr,
            stop,
            server,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        Ok(Conn {
            stream: TcpStream::connect(self.addr).await?,
            next: 1,
        })
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.server.await??;
        self.broker.shutdown().await;
        self.engine.shutdown().await;
        Ok(())
    }
}

struct Conn {
    stream: TcpStream,
    next: i32,
}

impl Conn {
    /// Sends a request without reading; returns its correlation id.
    async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
        let corr = self.next;
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        req.encode(&mut body, version)?;
        self.send_raw(&body).await?;
        Ok(corr)
    }

    async fn send_raw(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next response frame, or `None` when the server closed the connection.
    async fn read_frame(&mut self) -> Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read_exact(&mut len))
            .await
            .context("no response within 30 s")?;
        match read {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).await?;
        Ok(Some(Bytes::from(buf)))
    }

    async fn read<R: Request>(&mut self, version: i16, corr: i32) -> Result<R::Response> {
        let mut frame = self.read_frame().await?.context("connection closed")?;
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        if header.correlation_id != corr {
            bail!(
                "response to {} arrived, expected {corr}",
                header.correlation_id
            );
        }
        R::Response::decode(&mut frame, version)
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let corr = self.send(req, version).await?;
        self.read::<R>(version, corr).await
    }

    async fn closed(&mut self) -> Result<bool> {
        Ok(self.read_frame().await?.is_none())
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// An uncompressed batch of `values`, optionally idempotent.
fn batch(values: &[&str], producer: Option<(i64, i16, i32)>) -> Bytes {
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: offset minus sequence is the same for every record (the first
            // record of a non-idempotent batch has sequence -1).
            sequence: if seq < 0 {
                i as i32 - 1
            } else {
                seq + i as i32
            },
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a batch");
    buf.freeze()
}

fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

/// (error code, base offset) of a one-partition produce.
async fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> Result<(i16, i64)> {
    let resp: ProduceResponse = conn.call(&produce_req(topic, 0, records, -1), 9).await?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

async fn create_topic(
    conn: &mut Conn,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<i16> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_value(Some(StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ]);
    let resp: CreateTopicsResponse = conn.call(&req, 7).await?;
    Ok(resp.topics[0].error_code)
}

async fn offsets(conn: &mut Conn, topic: &str, ts: i64) -> Result<(i16, i64)> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(ts),
                ]),
        ]);
    let resp: ListOffsetsResponse = conn.call(&req, 7).await?;
    let p = &resp.topics[0].partitions[0];
    Ok((p.error_code, p.offset))
}

fn fetch_req(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_isolation_level(1)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1024 * 1024),
                ]),
        ])
}

/// (error, high watermark, record offsets and values) of a one-partition fetch.
async fn fetch(
    conn: &mut Conn,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> Result<(i16, i64, Vec<(i64, String)>)> {
    let resp: FetchResponse = conn
        .call(&fetch_req(topic, offset, max_wait_ms), 12)
        .await?;
    let p = &resp.responses[0].partitions[0];
    let mut out = Vec::new();
    if let Some(records) = &p.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf)? {
            for r in set.records {
                let v = r
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                out.push((r.offset, v));
            }
        }
    }
    Ok((p.error_code, p.high_watermark, out))
}

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
            .any(|k| k.api_key == ApiKey::EndTxn as i16)
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
    let h = Harness::start().await?;
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
    let waiting = tokio::spawn(async move { fetch(&mut poller, "f", 5, 20_000).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
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
        create_topic(&mut c, "t1", 1, &[("cleanup.policy", "compact")]).await?,
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
