//! A TEST DOUBLE of a service-mode LogStore node: a tonic server of
//! `woodpecker.proto.logstore.LogStore` on a loopback port over an in-process
//! [`LogStore`] on local files, with faults a test can switch on (a replica that stops
//! answering after `Buffered`, fence replies that fail, appends refused). It is not the
//! project's LogStore server (`wal::service`), only enough of the protocol to drive the
//! service-mode client against real gRPC, real storage and real process-like failures
//! (the server task aborted: every connection drops, as when a process is killed).
//!
//! A node runs in the test process ([`FakeNode`], where faults can be switched on) or as a
//! child process of the test binary ([`FakeProcess`], which a test kills with SIGKILL and
//! starts again on the same port and directory).
//!
//! SelectNodes answers the endpoints the test lists as live in a members file (one
//! `host:port` per line), up to the filter's limit.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use proto::logstore as pb;
use proto::logstore::log_store_server::{LogStore as LogStoreRpc, LogStoreServer};
use proto::meta::{SegmentMetadata, SegmentState};
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use wal::clock::ClockRef;
use wal::logstore::{Backend, CleanScope, FormatVersion, LogStore, ReadEnd, SyncPolicy};

/// Faults a test switches on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// AddEntries answers `Buffered`, then nothing (Go #359's silent replica).
    pub(crate) silent_appends: bool,
    /// AddEntries answers a `Failed` frame with this code.
    pub(crate) refuse_appends: Option<i32>,
    /// FenceSegment answers this failure code.
    pub(crate) fail_fence: Option<i32>,
}

/// The file listing the nodes SelectNodes offers (shared by every node of a test cluster).
pub(crate) type Membership = Arc<PathBuf>;

/// Lists `live` as the nodes SelectNodes offers.
pub(crate) fn set_members(members: &Path, live: &[String]) {
    let tmp = members.with_extension("tmp");
    std::fs::write(&tmp, live.join("\n")).unwrap();
    std::fs::rename(&tmp, members).unwrap();
}

struct Service {
    store: Arc<LogStore>,
    faults: Arc<Mutex<Faults>>,
    members: Membership,
}

fn ok() -> pb::Status {
    pb::Status::default()
}

fn failure(e: &wal::logstore::LogStoreError) -> pb::Status {
    pb::Status {
        code: e.code(),
        reason: e.to_string(),
        retriable: e.is_retriable(),
        ..pb::Status::default()
    }
}

type Frames = BoxStream<'static, Result<pb::AddEntriesResponse, Status>>;

#[tonic::async_trait]
impl LogStoreRpc for Service {
    type AddEntryStream = BoxStream<'static, Result<pb::AddEntryResponse, Status>>;
    type AddEntriesStream = Frames;

    async fn add_entry(
        &self,
        _: Request<pb::AddEntryRequest>,
    ) -> Result<Response<Self::AddEntryStream>, Status> {
        Err(Status::unimplemented(
            "the test double serves AddEntries only",
        ))
    }

    async fn add_entries(
        &self,
        request: Request<pb::AddEntriesRequest>,
    ) -> Result<Response<Frames>, Status> {
        let r = request.into_inner();
        let faults = self.faults.lock().unwrap().clone();
        let ids: Vec<i64> = r.entries.iter().map(|e| e.entry_id).collect();
        let frame = |state: pb::AddEntryState, ids: Vec<i64>, status: pb::Status| {
            Ok(pb::AddEntriesResponse {
                status: Some(status),
                entry_id: ids,
                state: state as i32,
            })
        };
        if let Some(code) = faults.refuse_appends {
            let status = pb::Status {
                code,
                reason: "refused by the test".into(),
                ..pb::Status::default()
            };
            let first = ids.first().copied().unwrap_or(-1);
            return Ok(Response::new(
                futures::stream::iter([frame(pb::AddEntryState::Failed, vec![first], status)])
                    .boxed(),
            ));
        }
        if faults.silent_appends {
            let buffered = frame(pb::AddEntryState::Buffered, ids, ok());
            return Ok(Response::new(
                futures::stream::iter([buffered])
                    .chain(futures::stream::pending())
                    .boxed(),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut admitted = 0;
        let mut refused = None;
        for e in r.entries {
            let p = match self.store.processor(r.log_id, e.seg_id).await {
                Ok(p) => p,
                Err(err) => {
                    refused = Some((e.entry_id, err));
                    break;
                }
            };
            let tx = tx.clone();
            let id = e.entry_id;
            match p
                .add_entry_with(id, e.values, move || {
                    Box::new(move |r| {
                        let _ = tx.send((id, r));
                    })
                })
                .await
            {
                Ok(()) => admitted += 1,
                Err(err) => {
                    refused = Some((id, err));
                    break;
                }
            }
        }
        drop(tx);
        if admitted == 0 {
            let (id, err) = refused.expect("an entry");
            return Ok(Response::new(
                futures::stream::iter([frame(pb::AddEntryState::Failed, vec![id], failure(&err))])
                    .boxed(),
            ));
        }
        let first = frame(pb::AddEntryState::Buffered, ids, ok());
        let synced = futures::stream::unfold((rx, admitted), move |(mut rx, left)| async move {
            if left == 0 {
                return None;
            }
            let item = match rx.recv().await {
                Some((id, Ok(_))) => frame(pb::AddEntryState::Synced, vec![id], ok()),
                Some((id, Err(e))) => frame(pb::AddEntryState::Failed, vec![id], failure(&e)),
                None => return None,
            };
            Some((item, (rx, left - 1)))
        });
        let tail = refused.map(|(id, e)| frame(pb::AddEntryState::Failed, vec![id], failure(&e)));
        Ok(Response::new(
            futures::stream::iter([first])
                .chain(synced)
                .chain(futures::stream::iter(tail))
                .boxed(),
        ))
    }

    async fn get_batch_entries_adv(
        &self,
        request: Request<pb::GetBatchEntriesAdvRequest>,
    ) -> Result<Response<pb::GetBatchEntriesAdvResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .store
            .read_batch(
                r.log_id,
                r.segment_id,
                r.from_entry_id,
                usize::try_from(r.max_entries).unwrap_or(1),
                2 << 20,
            )
            .await;
        let resp = match out {
            Ok(b) if b.entries.is_empty() => pb::GetBatchEntriesAdvResponse {
                status: Some(pb::Status {
                    code: if b.end == ReadEnd::Eof { 2310 } else { 8102 },
                    reason: "nothing here".into(),
                    retriable: b.end != ReadEnd::Eof,
                    ..pb::Status::default()
                }),
                result: None,
            },
            Ok(b) => pb::GetBatchEntriesAdvResponse {
                status: Some(ok()),
                result: Some(pb::BatchReadResult {
                    entries: b
                        .entries
                        .into_iter()
                        .map(|(entry_id, values)| pb::LogEntry {
                            seg_id: r.segment_id,
                            entry_id,
                            values,
                        })
                        .collect(),
                    last_read_state: None,
                }),
            },
            Err(e) => pb::GetBatchEntriesAdvResponse {
                status: Some(failure(&e)),
                result: None,
            },
        };
        Ok(Response::new(resp))
    }

    async fn fence_segment(
        &self,
        request: Request<pb::FenceSegmentRequest>,
    ) -> Result<Response<pb::FenceSegmentResponse>, Status> {
        let r = request.into_inner();
        if let Some(code) = self.faults.lock().unwrap().fail_fence {
            return Ok(Response::new(pb::FenceSegmentResponse {
                status: Some(pb::Status {
                    code,
                    reason: "fence refused by the test".into(),
                    ..pb::Status::default()
                }),
                last_entry_id: 0,
            }));
        }
        let out = self.store.fence_segment(r.log_id, r.segment_id).await;
        Ok(Response::new(pb::FenceSegmentResponse {
            status: Some(out.as_ref().map_or_else(failure, |_| ok())),
            last_entry_id: out.unwrap_or(0),
        }))
    }

    async fn complete_segment(
        &self,
        request: Request<pb::CompleteSegmentRequest>,
    ) -> Result<Response<pb::CompleteSegmentResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .store
            .complete_segment(r.log_id, r.segment_id, r.last_add_confirmed)
            .await;
        Ok(Response::new(pb::CompleteSegmentResponse {
            status: Some(out.as_ref().map_or_else(failure, |_| ok())),
            last_entry_id: out.unwrap_or(0),
        }))
    }

    async fn compact_segment(
        &self,
        request: Request<pb::CompactSegmentRequest>,
    ) -> Result<Response<pb::CompactSegmentResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .store
            .compact_segment(r.log_id, r.segment_id, 2 << 20)
            .await;
        Ok(Response::new(pb::CompactSegmentResponse {
            status: Some(out.as_ref().map_or_else(failure, |_| ok())),
            metadata: out.ok().map(|c| SegmentMetadata {
                seg_no: r.segment_id,
                state: SegmentState::Sealed as i32,
                last_entry_id: c.last_entry_id,
                size: c.size as i64,
                ..SegmentMetadata::default()
            }),
        }))
    }

    async fn notify_segment_compacted(
        &self,
        _: Request<pb::NotifySegmentCompactedRequest>,
    ) -> Result<Response<pb::NotifySegmentCompactedResponse>, Status> {
        Err(Status::unimplemented("not in the test double"))
    }

    async fn get_segment_last_add_confirmed(
        &self,
        request: Request<pb::GetSegmentLastAddConfirmedRequest>,
    ) -> Result<Response<pb::GetSegmentLastAddConfirmedResponse>, Status> {
        let r = request.into_inner();
        let out = self
            .store
            .segment_last_entry_id(r.log_id, r.segment_id)
            .await;
        let resp = match out {
            Ok(-1) => pb::GetSegmentLastAddConfirmedResponse {
                status: Some(pb::Status {
                    code: 2311,
                    reason: "no block".into(),
                    ..pb::Status::default()
                }),
                last_entry_id: -1,
            },
            Ok(last) => pb::GetSegmentLastAddConfirmedResponse {
                status: Some(ok()),
                last_entry_id: last,
            },
            Err(e) => pb::GetSegmentLastAddConfirmedResponse {
                status: Some(failure(&e)),
                last_entry_id: -1,
            },
        };
        Ok(Response::new(resp))
    }

    async fn get_segment_block_count(
        &self,
        request: Request<pb::GetSegmentBlockCountRequest>,
    ) -> Result<Response<pb::GetSegmentBlockCountResponse>, Status> {
        let r = request.into_inner();
        let out = self.store.block_count(r.log_id, r.segment_id).await;
        Ok(Response::new(pb::GetSegmentBlockCountResponse {
            status: Some(out.as_ref().map_or_else(failure, |_| ok())),
            block_count: out.map_or(0, |n| n as i64),
        }))
    }

    async fn update_last_add_confirmed(
        &self,
        _: Request<pb::UpdateLastAddConfirmedRequest>,
    ) -> Result<Response<pb::UpdateLastAddConfirmedResponse>, Status> {
        Ok(Response::new(pb::UpdateLastAddConfirmedResponse {
            status: Some(ok()),
        }))
    }

    async fn clean_segment(
        &self,
        request: Request<pb::CleanSegmentRequest>,
    ) -> Result<Response<pb::CleanSegmentResponse>, Status> {
        let r = request.into_inner();
        let scope = CleanScope::from_flag(r.flag).unwrap_or(CleanScope::All);
        let out = self
            .store
            .clean_segment(r.log_id, r.segment_id, scope)
            .await;
        Ok(Response::new(pb::CleanSegmentResponse {
            status: Some(out.as_ref().map_or_else(failure, |_| ok())),
        }))
    }

    async fn mark_log_deleted(
        &self,
        _: Request<pb::MarkLogDeletedRequest>,
    ) -> Result<Response<pb::MarkLogDeletedResponse>, Status> {
        Err(Status::unimplemented("not in the test double"))
    }

    async fn mark_instance_deleted(
        &self,
        _: Request<pb::MarkInstanceDeletedRequest>,
    ) -> Result<Response<pb::MarkInstanceDeletedResponse>, Status> {
        Err(Status::unimplemented("not in the test double"))
    }

    async fn select_nodes(
        &self,
        request: Request<pb::SelectNodesRequest>,
    ) -> Result<Response<pb::SelectNodesResponse>, Status> {
        let r = request.into_inner();
        let limit = r.filters.first().map_or(0, |f| f.limit.max(0) as usize);
        let members: Vec<String> = std::fs::read_to_string(self.members.as_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let nodes: Vec<pb::NodeMeta> = members
            .into_iter()
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|endpoint| pb::NodeMeta {
                node_id: endpoint.clone(),
                endpoint,
                ..pb::NodeMeta::default()
            })
            .collect();
        Ok(Response::new(pb::SelectNodesResponse {
            status: Some(ok()),
            total_count: nodes.len() as i32,
            nodes,
        }))
    }
}

/// One node of a test cluster: its data directory survives restarts.
pub(crate) struct FakeNode {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
    pub(crate) faults: Arc<Mutex<Faults>>,
    members: Membership,
    clock: ClockRef,
    store: Option<Arc<LogStore>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

fn open_store(dir: &Path, clock: ClockRef) -> Arc<LogStore> {
    let policy = SyncPolicy {
        max_flush_size: 1,
        ..SyncPolicy::default()
    };
    Arc::new(LogStore::new(Backend::local(dir, ""), policy, FormatVersion::V6, clock).unwrap())
}

impl FakeNode {
    /// Starts a node on a free loopback port with its data in `dir`.
    pub(crate) async fn start(dir: PathBuf, members: Membership, clock: ClockRef) -> FakeNode {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let mut node = FakeNode {
            addr,
            dir,
            faults: Arc::default(),
            members,
            clock,
            store: None,
            server: None,
        };
        node.serve(incoming);
        node
    }

    /// `host:port`.
    pub(crate) fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The node's LogStore (while it runs).
    pub(crate) fn store(&self) -> &Arc<LogStore> {
        self.store.as_ref().expect("running")
    }

    fn serve(&mut self, incoming: TcpIncoming) {
        let store = open_store(&self.dir, self.clock.clone());
        let service = Service {
            store: store.clone(),
            faults: self.faults.clone(),
            members: self.members.clone(),
        };
        self.store = Some(store);
        self.server = Some(tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(LogStoreServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        }));
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// The environment of a child node: its data directory, port and members file.
pub(crate) const CHILD_DIR: &str = "WOODPECKER_FAKE_NODE_DIR";
const CHILD_PORT: &str = "WOODPECKER_FAKE_NODE_PORT";
const CHILD_MEMBERS: &str = "WOODPECKER_FAKE_NODE_MEMBERS";

/// The body of a child node process: serves until killed. Returns at once when this process
/// is not a child node.
pub(crate) fn run_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let port: u16 = std::env::var(CHILD_PORT).unwrap().parse().unwrap();
    let members = PathBuf::from(std::env::var(CHILD_MEMBERS).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let incoming = TcpIncoming::bind(addr).unwrap();
        let addr = incoming.local_addr().unwrap();
        let clock = wal::clock::SystemClock::shared();
        let store = open_store(Path::new(&dir), clock);
        let service = Service {
            store,
            faults: Arc::default(),
            members: Arc::new(members),
        };
        println!("FAKE-NODE-READY {addr}");
        use std::io::Write as _;
        std::io::stdout().flush().unwrap();
        let _ = Server::builder()
            .add_service(LogStoreServer::new(service))
            .serve_with_incoming(incoming)
            .await;
    });
}

/// A node in a child process of the test binary.
pub(crate) struct FakeProcess {
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
    members: Membership,
    test_name: &'static str,
    child: Option<std::process::Child>,
}

impl FakeProcess {
    /// Starts a child node on `port` (0: any free one), its data in `dir`. `test_name` is
    /// the ignored test of the calling binary that calls [`run_child`].
    pub(crate) fn spawn(dir: PathBuf, members: Membership, test_name: &'static str) -> FakeProcess {
        let mut p = FakeProcess {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            members,
            test_name,
            child: None,
        };
        p.start(0);
        p
    }

    fn start(&mut self, port: u16) {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        // A port just freed by a killed child may take a moment to be bound again.
        for _ in 0..200 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    self.test_name,
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, &self.dir)
                .env(CHILD_PORT, port.to_string())
                .env(CHILD_MEMBERS, self.members.as_path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            // The harness prints `test <name> ... ` before the child's own line.
            let ready = lines.find_map(|l| {
                l.ok().and_then(|l| {
                    l.split_once("FAKE-NODE-READY ")
                        .map(|(_, addr)| addr.trim().to_string())
                })
            });
            match ready {
                Some(addr) => {
                    self.addr = addr.parse().unwrap();
                    self.child = Some(child);
                    return;
                }
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
            }
        }
        panic!("the child node did not start on port {port}");
    }

    /// `host:port`.
    pub(crate) fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.start(self.addr.port());
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
