//! Storage failing under the Kafka listener, for real: a full disk (the data directory on a
//! small tmpfs that is then enlarged) and damaged blocks in the segment files. Requests go
//! over TCP, encoded by the `kafka-protocol` crate's client side.
//!
//! Mounting a tmpfs needs root (`scripts/test` runs as root in CI); without it the disk-full
//! case says so on stderr and passes without running. As root, a failed mount fails it.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    create_topics_request, fetch_request, produce_request,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_shim::partition::ReopenBackoff;
use kafka_shim::{Broker, BrokerConfig, KafkaCode, Metrics, ServerConfig};
use proto::meta::SegmentState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use wal::clock::SystemClock;
use wal::config::Config;
use wal::engine::Engine;

/// Hang guard for one response; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) when this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipped: mounting a tmpfs to fill needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root: {status}");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the file system `size` (the disk has room again).
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount failed: {status}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

struct Harness {
    engine: Engine,
    broker: Arc<Broker>,
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), kafka_shim::ShimError>>,
}

impl Harness {
    async fn start(data: &Path) -> Result<Harness> {
        let yaml = format!(
            "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n",
            data.display()
        );
        let engine = Engine::open(Config::from_yaml_str(&yaml)?, SystemClock::shared()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = BrokerConfig {
            advertised_port: i32::from(addr.port()),
            ..BrokerConfig::default()
        };
        let broker = Broker::open(
            engine.client.clone(),
            engine.meta.kv().clone(),
            engine.meta.keys().prefix(),
            config,
            Arc::new(Metrics::default()),
        )
        .await?;
        let (stop, rx) = watch::channel(false);
        let server = tokio::spawn(kafka_shim::serve(
            listener,
            broker.clone(),
            ServerConfig::default(),
            rx,
        ));
        Ok(Harness {
            engine,
            broker,
            addr,
            stop,
            server,
        })
    }

    /// [`start`](Self::start) on a data directory a stopped harness used: its connection
    /// tasks may hold the embedded metadata store a moment longer.
    async fn restart(data: &Path) -> Result<Harness> {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            match Harness::start(data).await {
                Ok(h) => return Ok(h),
                Err(e)
                    if e.to_string().contains("in use")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
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
    async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let corr = self.next;
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("storage-faults-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        req.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;

        let mut len = [0u8; 4];
        tokio::time::timeout(HANG_GUARD, self.stream.read_exact(&mut len))
            .await
            .context("no response in time")??;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).await?;
        let mut frame = Bytes::from(buf);
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        ensure!(header.correlation_id == corr, "response out of order");
        R::Response::decode(&mut frame, version)
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A batch of `count` records `seq-<first + i>` padded to `size` bytes each.
fn batch(first: u64, count: usize, size: usize) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut value = format!("seq-{:010}-", first + i as u64).into_bytes();
            value.resize(size.max(value.len()), b'.');
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::from(value)),
                headers: IndexMap::new(),
            }
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

async fn create_topic(conn: &mut Conn, topic: &str) -> Result<()> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]);
    let resp: CreateTopicsResponse = conn.call(&req, 7).await?;
    ensure!(resp.topics[0].error_code == 0, "create: {resp:?}");
    Ok(())
}

/// (error code, base offset) of a one-partition produce with acks=all.
async fn produce(
    conn: &mut Conn,
    topic: &str,
    records: Bytes,
    timeout_ms: i32,
) -> Result<(i16, i64)> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp: ProduceResponse = conn.call(&req, 9).await?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

/// (error, high watermark, (offset, value prefix) of each record) of a one-partition fetch.
async fn fetch(
    conn: &mut Conn,
    topic: &str,
    offset: i64,
) -> Result<(i16, i64, Vec<(i64, String)>)> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(16 << 20)
        .with_isolation_level(1)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(4 << 20),
                ]),
        ]);
    let resp: FetchResponse = conn.call(&req, 12).await?;
    let p = &resp.responses[0].partitions[0];
    let mut out = Vec::new();
    if let Some(records) = &p.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf)? {
            for r in set.records {
                let v = r.value.unwrap_or_default();
                let head = String::from_utf8_lossy(&v[..v.len().min(15)]).into_owned();
                out.push((r.offset, head));
            }
        }
    }
    Ok((p.error_code, p.high_watermark, out))
}

/// Every record from `from` to the high watermark; fails on a partition error.
async fn fetch_all(conn: &mut Conn, topic: &str, from: i64) -> Result<Vec<(i64, String)>> {
    let mut all = Vec::new();
    let mut next = from;
    loop {
        let (err, hwm, records) = fetch(conn, topic, next).await?;
        ensure!(err == 0, "fetch at {next}: error {err}");
        if next >= hwm {
            return Ok(all);
        }
        let last = records
            .last()
            .map(|r| r.0)
            .context("no records below the hwm")?;
        all.extend(records.into_iter().filter(|r| r.0 >= next));
        next = last + 1;
    }
}

/// The data directories of the segments of `log` (a `data.log` beside them or not).
fn segment_dirs(data: &Path, log_id: i64) -> Vec<PathBuf> {
    let dir = data.join("files").join(log_id.to_string());
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_storage_error_and_writes_resume_once_there_is_room() -> Result<()> {
    let Some(fs) = Tmpfs::mount("6m") else {
        return Ok(());
    };
    let data = fs.path().join("data");
    let h = Harness::start(&data).await?;
    let mut conn = h.connect().await?;
    create_topic(&mut conn, "full").await?;

    // Fill the disk: 96 KiB and 640 KiB batches, so that blocks go both through the journal
    // and straight to their segment file, until a produce fails.
    let mut acked: Vec<(i64, u64, usize)> = Vec::new(); // (base offset, first seq, records)
    let mut seq = 0u64;
    let mut refused = None;
    for i in 0..200 {
        let (count, size) = if i % 2 == 0 {
            (3, 32 << 10)
        } else {
            (5, 128 << 10)
        };
        let (err, base) = produce(&mut conn, "full", batch(seq, count, size), 10_000).await?;
        if err != 0 {
            refused = Some(err);
            break;
        }
        acked.push((base, seq, count));
        seq += count as u64;
    }
    // Not a timeout: the storage failure itself, as Kafka answers a failed log directory.
    assert_eq!(
        refused,
        Some(KafkaCode::KafkaStorageError.code()),
        "the disk never filled, or the failure came back as another code"
    );
    assert!(!acked.is_empty(), "nothing fitted on the disk");

    // While the disk stays full, every attempt fails the same way, fast (the hang guard of
    // `call` bounds it) and spaced out by the reopen backoff; none leaves a segment behind.
    for _ in 0..4 {
        tokio::time::sleep(ReopenBackoff::MAX + Duration::from_millis(100)).await;
        let (err, _) = produce(&mut conn, "full", batch(seq, 3, 32 << 10), 10_000).await?;
        assert_eq!(err, KafkaCode::KafkaStorageError.code());
    }
    let log = h.engine.client.open_log("kafka:full:0").await?;
    let segments = log.segments().await?;
    for (id, meta) in &segments {
        assert!(
            meta.state == SegmentState::Active as i32 || meta.last_entry_id >= 0,
            "segment {id} was completed empty: {meta:?}"
        );
    }
    assert!(
        segments.len() <= 3,
        "failed attempts left segments: {:?}",
        segments.keys().collect::<Vec<_>>()
    );
    let dirs = segment_dirs(&data, log.log_id());
    assert!(
        dirs.len() <= segments.len() + 1,
        "segment directories without metadata: {dirs:?}"
    );

    // Room again: the partition reopens by itself and takes writes.
    fs.resize("64m");
    let mut resumed = None;
    for _ in 0..100 {
        let (err, base) = produce(&mut conn, "full", batch(seq, 3, 32 << 10), 10_000).await?;
        if err == 0 {
            resumed = Some(base);
            break;
        }
        assert_eq!(err, KafkaCode::KafkaStorageError.code());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = resumed.context("writes did not resume once the disk had room")?;
    acked.push((base, seq, 3));
    seq += 3;
    for _ in 0..5 {
        let (err, base) = produce(&mut conn, "full", batch(seq, 5, 128 << 10), 10_000).await?;
        assert_eq!(err, 0);
        acked.push((base, seq, 5));
        seq += 5;
    }

    // Everything acknowledged is there, at the offsets it was acknowledged with.
    let all = fetch_all(&mut conn, "full", 0).await?;
    for (base, first, count) in &acked {
        for i in 0..*count {
            let offset = base + i as i64;
            let want = format!("seq-{:010}", first + i as u64);
            let got = all.iter().find(|r| r.0 == offset).map(|r| &r.1[..14]);
            assert_eq!(got, Some(&want[..]), "offset {offset}");
        }
    }
    let segments = log.segments().await?;
    for (id, meta) in &segments {
        assert!(
            meta.state == SegmentState::Active as i32 || meta.last_entry_id >= 0,
            "segment {id} was completed empty: {meta:?}"
        );
    }
    drop(conn);
    h.stop().await?;
    drop(fs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_not_decided_in_time_is_request_timed_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let h = Harness::start(&dir.path().join("data")).await?;
    let mut conn = h.connect().await?;
    create_topic(&mut conn, "slow").await?;
    let (err, _) = produce(&mut conn, "slow", batch(0, 1, 10), 10_000).await?;
    assert_eq!(err, 0);
    let topic = h.broker.topics().get("slow").context("no topic")?;
    let p = h
        .broker
        .partition(&topic, 0)
        .await
        .map_err(|c| anyhow::anyhow!("{c:?}"))?;
    let (_, hwm) = p.offsets();
    // Nothing will ever make offset hwm + 5 durable: the wait ends at the request's timeout.
    assert_eq!(
        p.wait_acknowledged(hwm + 5, 50).await,
        Err(KafkaCode::RequestTimedOut)
    );
    assert_eq!(p.wait_acknowledged(hwm - 1, 50).await, Ok(()));
    drop(conn);
    h.stop().await?;
    Ok(())
}

/// Damages the stored record whose value starts with `needle` in segment 0 of log 1.
fn damage(data: &Path, needle: &str) {
    let path = data.join("files/1/0/data.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} in {}", path.display()));
    bytes[at + 3] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

fn offsets(records: &[(i64, String)]) -> Vec<i64> {
    records.iter().map(|r| r.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_is_corrupt_message_and_the_partition_serves_the_rest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let h = Harness::start(&data).await?;
    let mut conn = h.connect().await?;
    create_topic(&mut conn, "dmg").await?;
    // One batch per request, each durable before the next: a block each.
    for i in 0..30 {
        let (err, base) = produce(&mut conn, "dmg", batch(i, 1, 40), 10_000).await?;
        assert_eq!((err, base), (0, i as i64));
    }
    drop(conn);
    h.stop().await?;
    damage(&data, "seq-0000000015");

    // The partition opens (it used to stay offline, warning twice a second) and takes writes.
    let h = Harness::restart(&data).await?;
    let mut conn = h.connect().await?;
    let (err, base) = produce(&mut conn, "dmg", batch(30, 1, 40), 10_000).await?;
    assert_eq!((err, base), (0, 30));
    // A fetch before the damaged block stops short of it; one at it is CORRUPT_MESSAGE, every
    // time; one after it goes on.
    let (err, _, records) = fetch(&mut conn, "dmg", 0).await?;
    assert_eq!(err, 0);
    assert_eq!(offsets(&records), (0..15).collect::<Vec<_>>());
    for _ in 0..2 {
        let (err, hwm, records) = fetch(&mut conn, "dmg", 15).await?;
        assert_eq!(err, KafkaCode::CorruptMessage.code());
        assert_eq!(hwm, 31);
        assert!(records.is_empty());
    }
    let after = fetch_all(&mut conn, "dmg", 16).await?;
    assert_eq!(offsets(&after), (16..31).collect::<Vec<_>>());
    assert_eq!(&after[0].1[..14], "seq-0000000016");
    drop(conn);
    h.stop().await?;

    // Repaired: the damaged block's offsets become a gap consumers go past.
    let yaml = format!(
        "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n",
        data.display()
    );
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let engine = loop {
        match Engine::open(Config::from_yaml_str(&yaml)?, SystemClock::shared()).await {
            Ok(engine) => break engine,
            Err(e)
                if e.to_string().contains("in use") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let repaired = engine
        .logstore
        .as_ref()
        .expect("an embedded engine has its LogStore in process")
        .repair_segment(1, 0, |_, _| {
            wal::message::WriteMessage::lost("damaged in a test")
                .encode()
                .unwrap()
                .to_vec()
        })
        .await?
        .context("nothing repaired")?;
    assert_eq!(repaired.replaced.len(), 1);
    engine.shutdown().await;
    drop(engine);
    let h = Harness::restart(&data).await?;
    let mut conn = h.connect().await?;
    let all = fetch_all(&mut conn, "dmg", 0).await?;
    let mut expected: Vec<i64> = (0..31).collect();
    expected.retain(|o| *o != 15);
    assert_eq!(offsets(&all), expected);
    let (err, _, records) = fetch(&mut conn, "dmg", 15).await?;
    assert_eq!(err, 0);
    assert_eq!(records.first().map(|r| r.0), Some(16));
    drop(conn);
    h.stop().await?;
    Ok(())
}
