//! The Kafka tests' shared harness: a real engine on a temporary directory, a real TCP
//! listener, and requests encoded by the `kafka-protocol` crate's client side.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub use std::sync::Arc;
pub use std::time::Duration;

pub use anyhow::{Context, Result, bail};
pub use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use kafka_protocol::indexmap::IndexMap;
pub use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    create_topics_request, describe_configs_request, fetch_request, list_offsets_request,
    metadata_request, produce_request,
};
pub use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
pub use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
pub use kafka_shim::{Broker, BrokerConfig, Metrics, ServerConfig};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::TcpStream;
pub use tokio::sync::watch;
pub use wal::clock::SystemClock;
pub use wal::config::Config;
pub use wal::engine::Engine;

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub engine: Engine,
    pub broker: Arc<Broker>,
    pub addr: std::net::SocketAddr,
    pub stop: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<Result<(), kafka_shim::ShimError>>,
}

impl Harness {
    pub async fn start() -> Result<Harness> {
        Self::start_with(BrokerConfig::default(), ServerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig, server: ServerConfig) -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let yaml = format!(
            "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n",
            dir.path().join("data").display()
        );
        let engine = Engine::open(Config::from_yaml_str(&yaml)?, SystemClock::shared()).await?;
        let (broker, addr, stop, server) = Self::serve(&engine, config, server).await?;
        Ok(Harness {
            _dir: dir,
            engine,
            broker,
            addr,
            stop,
            server,
        })
    }

    /// A broker and listener over `engine`.
    async fn serve(
        engine: &Engine,
        mut config: BrokerConfig,
        server: ServerConfig,
    ) -> Result<(
        Arc<Broker>,
        std::net::SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), kafka_shim::ShimError>>,
    )> {
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
        Ok((broker, addr, stop, server))
    }

    /// Stops the broker and listener and starts new ones over the same engine (a restart
    /// of the Kafka front door: everything is read back from the log and metadata).
    pub async fn restart_broker(&mut self) -> Result<()> {
        let _ = self.stop.send(true);
        (&mut self.server).await??;
        self.broker.shutdown().await;
        let (broker, addr, stop, server) = Self::serve(
            &self.engine,
            BrokerConfig::default(),
            ServerConfig::default(),
        )
        .await?;
        (self.broker, self.addr, self.stop, self.server) = (broker, addr, stop, server);
        Ok(())
    }

    pub async fn connect(&self) -> Result<Conn> {
        Ok(Conn {
            stream: TcpStream::connect(self.addr).await?,
            next: 1,
        })
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.server.await??;
        self.broker.shutdown().await;
        self.engine.shutdown().await;
        Ok(())
    }
}

pub struct Conn {
    pub stream: TcpStream,
    pub next: i32,
}

impl Conn {
    /// Sends a request without reading; returns its correlation id.
    pub async fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32> {
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

    pub async fn send_raw(&mut self, body: &[u8]) -> Result<()> {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next response frame, or `None` when the server closed the connection.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>> {
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

    pub async fn read<R: Request>(&mut self, version: i16, corr: i32) -> Result<R::Response> {
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

    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let corr = self.send(req, version).await?;
        self.read::<R>(version, corr).await
    }

    pub async fn closed(&mut self) -> Result<bool> {
        Ok(self.read_frame().await?.is_none())
    }
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// An uncompressed batch of `values`, optionally idempotent.
pub fn batch(values: &[&str], producer: Option<(i64, i16, i32)>) -> Bytes {
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

pub fn produce_req(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
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
pub async fn produce(conn: &mut Conn, topic: &str, records: Bytes) -> Result<(i16, i64)> {
    let resp: ProduceResponse = conn.call(&produce_req(topic, 0, records, -1), 9).await?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

pub async fn create_topic(
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

pub async fn offsets(conn: &mut Conn, topic: &str, ts: i64) -> Result<(i16, i64)> {
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

pub fn fetch_req(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
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
pub async fn fetch(
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
