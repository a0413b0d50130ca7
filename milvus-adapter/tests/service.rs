//! The Milvus WAL service over gRPC, in process: a real engine (local disk and the embedded
//! metadata store, or MinIO and etcd), the adapter served on a TCP port, and tonic's client.
//! What the Go package's tests cannot see from outside is checked here: the order and shape
//! of append results, every refusal of bad input, in-process fencing and its durability
//! across a restart, reader records removed when a client goes away, shutdown, session
//! expiry, a writer taken over outside the adapter, and truncated segments collected from
//! object storage.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use milvus_adapter::{Adapter, AdapterConfig, detail_of};
use proto::meta::SegmentState;
use proto::milvus::milvus_wal_client::MilvusWalClient;
use proto::milvus::{
    AccessMode, AppendRequest, AppendResponse, CloseRequest, DeliverPolicy, ErrorReason, Message,
    MessageId, OpenRequest, ReadRequest, ReadResponse, TruncateRequest, append_result,
    deliver_policy,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use wal::clock::SystemClock;
use wal::config::Config;
use wal::engine::Engine;
use wal::logstore::Backend;
use wal::message::{LogMessageId, WriteMessage};
use wal::meta::MetadataProvider;

type Client = MilvusWalClient<Channel>;

/// An engine and the adapter served on a port.
struct Served {
    engine: Arc<Engine>,
    adapter: Adapter,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Served {
    async fn start(config: Config, adapter_config: AdapterConfig) -> Result<Served> {
        let engine = Arc::new(Engine::open(config, SystemClock::shared()).await?);
        let adapter = Adapter::new(
            engine.client.clone(),
            engine.meta.kv().clone(),
            engine.meta.keys().prefix(),
            SystemClock::shared(),
            adapter_config,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(milvus_adapter::serve(listener, adapter.clone(), async {
            let _ = stopped.await;
        }));
        Ok(Served {
            engine,
            adapter,
            addr,
            stop: Some(stop),
            server: Some(server),
        })
    }

    async fn client(&self) -> Result<Client> {
        Ok(MilvusWalClient::connect(format!("http://{}", self.addr)).await?)
    }

    /// Stops the server (streams end, sessions close) and the engine.
    async fn stop(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(60), server)
                .await
                .context("the server did not stop within 60 s")???;
        }
        self.engine.shutdown().await;
        Ok(())
    }
}

fn local_config(dir: &std::path::Path, extra: &str) -> Result<Config> {
    let yaml = format!(
        "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n{extra}",
        dir.display()
    );
    Ok(Config::from_yaml_str(&yaml)?)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test needs MinIO and etcd; run `eval \"$(scripts/services start)\"`")
    })
}

/// etcd metadata and MinIO segments, in a fresh etcd root and a fresh bucket.
fn stack_config(dir: &std::path::Path, extra: &str) -> Result<Config> {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let (ssl, host_port) = match s3.trim_end_matches('/').split_once("://") {
        Some((scheme, rest)) => (scheme == "https", rest.to_string()),
        None => (false, s3.clone()),
    };
    let (host, port) = host_port
        .rsplit_once(':')
        .context("no port in the S3 endpoint")?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let yaml = format!(
        "woodpecker:
  meta:
    type: etcd
  storage:
    type: minio
    rootPath: {data}
{extra}etcd:
  endpoints: [\"{etcd}\"]
  rootPath: wp-milvus-{id}
minio:
  address: \"{host}\"
  port: {port}
  useSSL: {ssl}
  accessKeyID: \"{key}\"
  secretAccessKey: \"{secret}\"
  region: \"{region}\"
  bucketName: wp-milvus-{id}
  createBucket: true
  rootPath: files
",
        data = dir.display(),
        etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT"),
        key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
        region = env("WOODPECKER_TEST_S3_REGION"),
    );
    Ok(Config::from_yaml_str(&yaml)?)
}

fn reason(status: &Status) -> ErrorReason {
    detail_of(status).map_or(ErrorReason::Unspecified, |d| d.reason())
}

async fn open(
    client: &mut Client,
    pchannel: &str,
    term: i64,
    mode: AccessMode,
) -> Result<u64, Status> {
    client
        .open(OpenRequest {
            pchannel: pchannel.into(),
            term,
            access_mode: mode as i32,
        })
        .await
        .map(|r| r.into_inner().session_id)
}

async fn open_rw(client: &mut Client, pchannel: &str, term: i64) -> Result<u64> {
    Ok(open(client, pchannel, term, AccessMode::ReadWrite).await?)
}

fn message(payload: &[u8], i: usize) -> Message {
    Message {
        payload: Bytes::copy_from_slice(payload),
        properties: BTreeMap::from([("i".to_string(), i.to_string())]),
    }
}

/// One append stream of a session.
struct Appends {
    tx: mpsc::UnboundedSender<AppendRequest>,
    rx: Streaming<AppendResponse>,
    next: u64,
}

type Outcome = Result<LogMessageId, ErrorReason>;

impl Appends {
    async fn start(client: &mut Client, session: u64) -> Result<Appends, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(AppendRequest {
            session_id: session,
            messages: vec![],
        });
        let stream = tokio_stream(rx);
        let rx = client.append(stream).await?.into_inner();
        Ok(Appends { tx, rx, next: 0 })
    }

    fn send(&self, messages: Vec<Message>) {
        let _ = self.tx.send(AppendRequest {
            session_id: 0,
            messages,
        });
    }

    /// The next `n` results, in order (checking their sequence numbers).
    async fn results(&mut self, n: usize) -> Result<Vec<Outcome>> {
        let mut out = Vec::new();
        while out.len() < n {
            let resp = tokio::time::timeout(Duration::from_secs(60), self.rx.message())
                .await
                .context("no append result within 60 s")??
                .context("the append stream ended")?;
            assert_eq!(resp.first_sequence, self.next, "results in order");
            self.next += resp.results.len() as u64;
            for r in resp.results {
                out.push(match r.result.context("a result without an outcome")? {
                    append_result::Result::Id(id) => Ok(milvus_adapter::from_proto(&id)),
                    append_result::Result::Error(e) => Err(e.reason()),
                });
            }
        }
        assert_eq!(out.len(), n, "more results than messages");
        Ok(out)
    }

    async fn append_one(&mut self, payload: &[u8], i: usize) -> Result<Outcome> {
        self.send(vec![message(payload, i)]);
        Ok(self.results(1).await?.remove(0))
    }
}

fn tokio_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn policy(p: deliver_policy::Policy) -> Option<DeliverPolicy> {
    Some(DeliverPolicy { policy: Some(p) })
}

fn all() -> Option<DeliverPolicy> {
    policy(deliver_policy::Policy::All(deliver_policy::All {}))
}

fn from(id: LogMessageId) -> Option<DeliverPolicy> {
    policy(deliver_policy::Policy::StartFrom(milvus_adapter::to_proto(
        id,
    )))
}

async fn read(
    client: &mut Client,
    pchannel: &str,
    name: &str,
    policy: Option<DeliverPolicy>,
) -> Result<Streaming<ReadResponse>, Status> {
    client
        .read(ReadRequest {
            pchannel: pchannel.into(),
            name: name.into(),
            policy,
            read_ahead: 0,
        })
        .await
        .map(|r| r.into_inner())
}

/// The next `n` messages of a read stream: (id, payload).
async fn read_n(
    stream: &mut Streaming<ReadResponse>,
    n: usize,
) -> Result<Vec<(LogMessageId, Bytes)>> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .context("no read response within 60 s")??
            .context("the read stream ended")?;
        for m in resp.messages {
            let id = m.id.context("a message without an id")?;
            out.push((milvus_adapter::from_proto(&id), m.payload));
        }
    }
    Ok(out)
}

/// Waits (polling every 100 ms, up to a minute) until the condition holds; the condition
/// is an expression of the test body, so it may await and use `?`.
macro_rules! eventually {
    ($what:expr, $cond:expr) => {{
        let mut held = false;
        for _ in 0..600 {
            if $cond {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !held {
            bail!("{} did not happen within a minute", $what);
        }
    }};
}

#[tokio::test]
async fn appends_are_answered_in_order_and_a_bad_message_only_fails_itself() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut served = Served::start(local_config(dir.path(), "")?, AdapterConfig::default()).await?;
    let mut client = served.client().await?;
    let session = open_rw(&mut client, "order", 1).await?;
    let mut appends = Appends::start(&mut client, session).await?;
    // 500 messages pipelined in requests of 50; message 137 is empty (no payload, no
    // properties), which the engine refuses.
    for chunk in 0..10 {
        let batch = (0..50)
            .map(|k| {
                let i = chunk * 50 + k;
                if i == 137 {
                    Message::default()
                } else {
                    message(format!("m{i}").as_bytes(), i)
                }
            })
            .collect();
        appends.send(batch);
    }
    let results = appends.results(500).await?;
    let mut last = None;
    for (i, r) in results.iter().enumerate() {
        if i == 137 {
            assert_eq!(*r, Err(ErrorReason::InvalidArgument));
            continue;
        }
        let id = r.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert!(last < Some(id), "ids grow in send order");
        last = Some(id);
    }
    // Read back: 499 messages, in id order, each the one sent at its position.
    let mut stream = read(&mut client, "order", "check", all()).await?;
    let got = read_n(&mut stream, 499).await?;
    let sent: Vec<_> = results.iter().filter_map(|r| r.ok()).collect();
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), sent);
    let expected: Vec<String> = (0..500)
        .filter(|i| *i != 137)
        .map(|i| format!("m{i}"))
        .collect();
    for ((_, payload), want) in got.iter().zip(&expected) {
        assert_eq!(payload.as_ref(), want.as_bytes());
    }
    drop(appends);
    served.stop().await
}

#[tokio::test]
async fn bad_input_is_refused_with_its_reason_and_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut served = Served::start(local_config(dir.path(), "")?, AdapterConfig::default()).await?;
    let mut client = served.client().await?;

    for (pchannel, term, mode) in [
        ("", 1, AccessMode::ReadWrite),
        ("a/b", 1, AccessMode::ReadWrite),
        ("a\nb", 1, AccessMode::ReadOnly),
        ("ok", -1, AccessMode::ReadWrite),
        ("ok", 1, AccessMode::Unspecified),
    ] {
        let e = open(&mut client, pchannel, term, mode).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::InvalidArgument,
            "{pchannel:?} {term} {mode:?}: {e}"
        );
        assert_eq!(reason(&e), ErrorReason::InvalidArgument);
    }
    // None of them created a log or a term.
    assert!(served.engine.client.list_logs().await?.is_empty());

    // Unknown sessions.
    let e = Appends::start(&mut client, 12345)
        .await
        .err()
        .context("an unknown session")?;
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::NotFound, ErrorReason::NotFound)
    );
    let e = Appends::start(&mut client, 0)
        .await
        .err()
        .context("no session")?;
    assert_eq!(reason(&e), ErrorReason::InvalidArgument);
    let e = client
        .close(CloseRequest { session_id: 12345 })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), ErrorReason::NotFound);

    // Reads: an unknown pchannel, no policy, a negative id.
    let e = read(&mut client, "nowhere", "r", all()).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::NotFound, ErrorReason::NotFound)
    );
    let session = open_rw(&mut client, "p", 1).await?;
    let e = read(&mut client, "p", "r", None).await.unwrap_err();
    assert_eq!(reason(&e), ErrorReason::InvalidArgument);
    let e = read(&mut client, "p", "r", from(LogMessageId::new(-1, 0)))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), ErrorReason::InvalidArgument);

    // Truncations: no id, an id the pchannel does not hold.
    let mut appends = Appends::start(&mut client, session).await?;
    let id = appends.append_one(b"x", 0).await?.expect("appended");
    for bad in [
        None,
        Some(MessageId {
            segment_id: id.segment_id,
            entry_id: id.entry_id + 1,
        }),
        Some(MessageId {
            segment_id: 9,
            entry_id: 0,
        }),
    ] {
        let e = client
            .truncate(TruncateRequest {
                session_id: session,
                id: bad,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&e), ErrorReason::InvalidArgument, "{bad:?}: {e}");
    }
    assert_eq!(
        served
            .engine
            .client
            .open_log("p")
            .await?
            .truncation_point()
            .await?,
        None
    );

    // A stream that names another session ends, after the results of what came before.
    appends.send(vec![message(b"y", 1)]);
    let _ = appends.tx.send(AppendRequest {
        session_id: session + 1,
        messages: vec![message(b"z", 2)],
    });
    assert!(appends.results(1).await?[0].is_ok());
    let e = appends.rx.message().await.unwrap_err();
    assert_eq!(reason(&e), ErrorReason::InvalidArgument);
    let mut stream = read(&mut client, "p", "r", all()).await?;
    assert_eq!(read_n(&mut stream, 2).await?.len(), 2, "x and y, not z");
    served.stop().await
}

#[tokio::test]
async fn newer_opens_fence_older_sessions_and_terms_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = local_config(dir.path(), "")?;
    let mut served = Served::start(config.clone(), AdapterConfig::default()).await?;
    let mut client = served.client().await?;

    let a = open_rw(&mut client, "t", 1).await?;
    let mut appends_a = Appends::start(&mut client, a).await?;
    let first = appends_a.append_one(b"a", 0).await?.expect("term 1 writes");

    let b = open_rw(&mut client, "t", 2).await?;
    assert_eq!(
        appends_a.append_one(b"a2", 1).await?,
        Err(ErrorReason::Fenced)
    );
    let e = client
        .truncate(TruncateRequest {
            session_id: a,
            id: Some(milvus_adapter::to_proto(first)),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), ErrorReason::Fenced);

    let e = open(&mut client, "t", 1, AccessMode::ReadWrite)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::FailedPrecondition, ErrorReason::StaleTerm)
    );
    assert_eq!(detail_of(&e).map(|d| d.term), Some(2));

    let mut appends_b = Appends::start(&mut client, b).await?;
    let second = appends_b.append_one(b"b", 2).await?.expect("term 2 writes");
    assert!(first < second);
    // The same term again, later: the earlier open of term 2 is fenced.
    let c = open_rw(&mut client, "t", 2).await?;
    assert_eq!(
        appends_b.append_one(b"b2", 3).await?,
        Err(ErrorReason::Fenced)
    );
    let mut appends_c = Appends::start(&mut client, c).await?;
    let third = appends_c
        .append_one(b"c", 4)
        .await?
        .expect("the latest open writes");
    assert!(second < third);
    // A read-only open of any term fences nobody.
    open(&mut client, "t", 0, AccessMode::ReadOnly).await?;
    assert!(appends_c.append_one(b"c2", 5).await?.is_ok());
    drop((appends_a, appends_b, appends_c));
    served.stop().await?;
    drop(served);

    // Restarted: the term is durable.
    let mut served = Served::start(config, AdapterConfig::default()).await?;
    let mut client = served.client().await?;
    let e = open(&mut client, "t", 1, AccessMode::ReadWrite)
        .await
        .unwrap_err();
    assert_eq!(reason(&e), ErrorReason::StaleTerm);
    let d = open_rw(&mut client, "t", 3).await?;
    let mut appends_d = Appends::start(&mut client, d).await?;
    let fourth = appends_d.append_one(b"d", 6).await?.expect("term 3 writes");
    assert!(third < fourth);
    let mut stream = read(&mut client, "t", "all", all()).await?;
    let payloads: Vec<_> = read_n(&mut stream, 5)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        payloads,
        ["a", "b", "c", "c2", "d"].map(|s| Bytes::from_static(s.as_bytes()))
    );
    drop(appends_d);
    served.stop().await
}

#[tokio::test]
async fn a_reader_is_closed_when_its_client_goes_away_and_streams_end_at_shutdown() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut served = Served::start(local_config(dir.path(), "")?, AdapterConfig::default()).await?;
    let mut client = served.client().await?;
    let session = open_rw(&mut client, "r", 1).await?;
    let mut appends = Appends::start(&mut client, session).await?;
    appends.append_one(b"one", 0).await?.expect("appended");
    let log = served.engine.client.open_log("r").await?;

    // A reader waiting at the tail, then its client goes away: the server closes the reader
    // and removes its record.
    let mut stream = read(&mut client, "r", "gone", all()).await?;
    read_n(&mut stream, 1).await?;
    assert_eq!(
        served
            .engine
            .meta
            .get_reader_temp_infos(log.log_id())
            .await?
            .len(),
        1
    );
    drop(stream);
    eventually!(
        "the reader's record removed",
        served
            .engine
            .meta
            .get_reader_temp_infos(log.log_id())
            .await?
            .is_empty()
    );

    // Shutdown ends a waiting read with UNAVAILABLE, ends the append stream, and closes the
    // session's writer: its segment is completed.
    let mut waiting = read(&mut client, "r", "waiting", all()).await?;
    read_n(&mut waiting, 1).await?;
    let engine = served.engine.clone();
    served.stop().await?;
    let e = waiting.message().await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::Unavailable, ErrorReason::Unavailable)
    );
    let end = appends.rx.message().await;
    assert!(
        matches!(&end, Ok(None))
            || end
                .as_ref()
                .is_err_and(|e| reason(e) == ErrorReason::Unavailable),
        "{end:?}"
    );
    let segments = log.segments().await?;
    assert!(
        segments
            .values()
            .all(|s| s.state == SegmentState::Completed as i32),
        "{segments:?}"
    );
    drop(engine);
    Ok(())
}

#[tokio::test]
async fn an_abandoned_session_expires_and_its_writer_closes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = AdapterConfig {
        session_ttl: Duration::from_millis(300),
        ..AdapterConfig::default()
    };
    let mut served = Served::start(local_config(dir.path(), "")?, config).await?;
    let mut client = served.client().await?;
    let session = open_rw(&mut client, "e", 1).await?;
    let mut appends = Appends::start(&mut client, session).await?;
    appends.append_one(b"x", 0).await?.expect("appended");
    // While a stream is attached the session lives, however long it is idle.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(served.adapter.session_count(), 1);
    drop(appends);
    eventually!("the session expired", served.adapter.session_count() == 0);
    // The sweep takes the session out, then closes its writer: the segment is completed
    // once that close is done.
    let log = served.engine.client.open_log("e").await?;
    eventually!(
        "the expired session's writer completing its segment",
        log.segments()
            .await?
            .values()
            .all(|s| s.state == SegmentState::Completed as i32)
    );
    let e = Appends::start(&mut client, session)
        .await
        .err()
        .context("an expired session")?;
    assert_eq!(reason(&e), ErrorReason::NotFound);
    served.stop().await
}

#[tokio::test]
async fn a_writer_taken_over_outside_the_adapter_is_taken_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut served = Served::start(local_config(dir.path(), "")?, AdapterConfig::default()).await?;
    let mut client = served.client().await?;
    let session = open_rw(&mut client, "x", 1).await?;
    let mut appends = Appends::start(&mut client, session).await?;
    appends.append_one(b"mine", 0).await?.expect("appended");

    // Something else opens the log's writer (fencing the session's) and writes.
    let outside = served
        .engine
        .client
        .open_log("x")
        .await?
        .open_writer()
        .await?;
    outside.write(WriteMessage::new(&b"theirs"[..])).await?;

    // The session still holds the term: its next append fails as retriable while it takes
    // its writer back, then appends go on; the outside writer is fenced.
    assert_eq!(
        appends.append_one(b"retry", 1).await?,
        Err(ErrorReason::Unavailable)
    );
    appends
        .append_one(b"again", 2)
        .await?
        .expect("the session writes again");
    let e = outside
        .write(WriteMessage::new(&b"late"[..]))
        .await
        .unwrap_err();
    assert!(e.is_writer_lost(), "{e}");
    let mut stream = read(&mut client, "x", "all", all()).await?;
    let payloads: Vec<_> = read_n(&mut stream, 3)
        .await?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        payloads,
        ["mine", "theirs", "again"].map(|s| Bytes::from_static(s.as_bytes()))
    );
    drop(appends);
    served.stop().await
}

#[tokio::test]
async fn truncated_segments_are_collected_from_object_storage() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let extra = "  client:
    segmentRollingPolicy:
      maxSize: 4096
    auditor:
      maxInterval: 1
  logstore:
    retentionPolicy:
      ttl: 0
";
    let mut served =
        Served::start(stack_config(dir.path(), extra)?, AdapterConfig::default()).await?;
    let mut client = served.client().await?;
    let session = open_rw(&mut client, "gc", 1).await?;
    let mut appends = Appends::start(&mut client, session).await?;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            appends
                .append_one(&[i as u8; 1024], i)
                .await?
                .expect("appended"),
        );
    }
    let cut = ids[20];
    assert!(cut.segment_id >= 2, "several segments: {cut}");
    let log = served.engine.client.open_log("gc").await?;
    let Backend::Object(storage) = served
        .engine
        .logstore
        .as_ref()
        .expect("an engine on object storage has its LogStore in process")
        .backend()
    else {
        bail!("not on object storage");
    };
    let objects = |seg: i64| {
        let storage = storage.clone();
        let prefix = format!("{}/{seg}/", log.log_id());
        async move { Ok::<_, anyhow::Error>(storage.list(&prefix).await?.len()) }
    };
    assert!(objects(0).await? > 0, "segment 0 is stored");

    client
        .truncate(TruncateRequest {
            session_id: session,
            id: Some(milvus_adapter::to_proto(cut)),
        })
        .await?;
    // The engine's point is the message before the cut: the cut stays readable.
    let point = log.truncation_point().await?.context("truncated")?;
    assert!(point < cut && ids.contains(&point), "{point}");
    let mut stream = read(&mut client, "gc", "from-cut", from(cut)).await?;
    assert_eq!(
        read_n(&mut stream, 10)
            .await?
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        ids[20..]
    );
    let e = read(&mut client, "gc", "before", from(ids[2]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (Code::OutOfRange, ErrorReason::Truncated)
    );

    // The session's auditor marks and collects every segment before the one holding the
    // engine's point (the cut's, or the one before it when the cut opens a segment),
    // objects and metadata alike.
    assert!(point.segment_id >= 1);
    for seg in 0..point.segment_id {
        eventually!(
            format!("segment {seg} collected"),
            objects(seg).await? == 0 && !log.segments().await?.contains_key(&seg)
        );
    }
    for seg in [point.segment_id, cut.segment_id] {
        assert!(objects(seg).await? > 0, "segment {seg} is kept");
    }
    drop(appends);
    served.stop().await
}
