//! The gRPC face of the [`Adapter`]: the `MilvusWal` service's calls and streams.
//!
//! * **Append** runs two halves per stream. The inbound half reads requests, takes a
//!   bytes-in-flight permit per message (so a client that writes faster than the log is
//!   durable is held back by HTTP/2 flow control, not by a growing queue) and issues each
//!   message to the session's writer in arrival order. The outbound half receives each
//!   message's outcome from the engine, puts the outcomes back into send order (an append
//!   refused at once may be answered before earlier ones are durable), decides what a lost
//!   writer means (fenced, or reopened), and sends the results in batches.
//! * **Read** runs one task per stream that owns an engine reader: it sends whatever is ready
//!   in one response (up to [`AdapterConfig::read_batch_messages`] and about
//!   [`AdapterConfig::read_batch_bytes`]), waits at the tail, and stops when the client goes
//!   away (the reader is closed and its record removed) or the server shuts down (the stream
//!   ends with UNAVAILABLE).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, Stream};
use proto::milvus::milvus_wal_server::MilvusWal;
use proto::milvus::{
    AccessMode, AppendRequest, AppendResponse, AppendResult, CloseRequest, CloseResponse,
    DeliverPolicy, MessageId, OpenRequest, OpenResponse, ReadMessage, ReadRequest, ReadResponse,
    TruncateRequest, TruncateResponse, append_result, deliver_policy,
};
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};
use wal::message::{LogMessageId, WriteMessage};

use crate::error::AdapterError;
use crate::session::{Access, Adapter, AdapterConfig, Appended, Session, Start};

/// Results per append response at most.
const MAX_RESULTS_PER_RESPONSE: usize = 1024;

/// The `MilvusWal` service over an [`Adapter`].
#[derive(Debug, Clone)]
pub struct MilvusWalService {
    adapter: Adapter,
}

impl MilvusWalService {
    /// The service of `adapter`.
    pub fn new(adapter: Adapter) -> Self {
        MilvusWalService { adapter }
    }
}

/// A message id of the service as the engine's.
pub fn from_proto(id: &MessageId) -> LogMessageId {
    LogMessageId::new(id.segment_id, id.entry_id)
}

/// An engine message id as the service's.
pub fn to_proto(id: LogMessageId) -> MessageId {
    MessageId {
        segment_id: id.segment_id,
        entry_id: id.entry_id,
    }
}

fn start_of(policy: Option<DeliverPolicy>) -> Result<Start, AdapterError> {
    let missing = || AdapterError::InvalidArgument("the read has no deliver policy".into());
    let policy = policy.and_then(|p| p.policy).ok_or_else(missing)?;
    Ok(match policy {
        deliver_policy::Policy::All(_) => Start::All,
        deliver_policy::Policy::Latest(_) => Start::Latest,
        deliver_policy::Policy::StartFrom(id) => Start::From(from_proto(&id)),
        deliver_policy::Policy::StartAfter(id) => Start::After(from_proto(&id)),
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MilvusWal for MilvusWalService {
    async fn open(&self, request: Request<OpenRequest>) -> Result<Response<OpenResponse>, Status> {
        let req = request.into_inner();
        let access = match AccessMode::try_from(req.access_mode) {
            Ok(AccessMode::ReadWrite) => Access::ReadWrite,
            Ok(AccessMode::ReadOnly) => Access::ReadOnly,
            _ => {
                return Err(AdapterError::InvalidArgument(format!(
                    "access mode {} is neither read-write nor read-only",
                    req.access_mode
                ))
                .into());
            }
        };
        let (session_id, term) = self.adapter.open(&req.pchannel, req.term, access).await?;
        Ok(Response::new(OpenResponse { session_id, term }))
    }

    type AppendStream = BoxStream<AppendResponse>;

    async fn append(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            AdapterError::InvalidArgument("the append stream ended before naming a session".into())
        })?;
        if first.session_id == 0 {
            return Err(AdapterError::InvalidArgument(
                "the first append request must name a session".into(),
            )
            .into());
        }
        let session = self.adapter.session(first.session_id)?;
        session.attach();
        let (tx, rx) = mpsc::unbounded_channel();
        let adapter = self.adapter.clone();
        tokio::spawn(take_appends(
            adapter.clone(),
            session.clone(),
            first,
            inbound,
            tx,
        ));
        Ok(Response::new(Box::pin(answer_appends(session, rx))))
    }

    type ReadStream = BoxStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        let start = start_of(req.policy)?;
        let reader = self
            .adapter
            .open_reader(&req.pchannel, &req.name, start)
            .await?;
        let config = self.adapter.config();
        let ahead = match usize::try_from(req.read_ahead) {
            Ok(0) | Err(_) => config.default_read_ahead,
            Ok(n) => n,
        }
        .clamp(1, 1024);
        let (tx, rx) = mpsc::channel(ahead);
        tokio::spawn(serve_read(
            reader,
            tx,
            self.adapter.shutdown_token(),
            config.clone(),
        ));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn truncate(
        &self,
        request: Request<TruncateRequest>,
    ) -> Result<Response<TruncateResponse>, Status> {
        let req = request.into_inner();
        let id = req.id.ok_or_else(|| {
            AdapterError::InvalidArgument("the truncation has no message id".into())
        })?;
        self.adapter
            .truncate(req.session_id, from_proto(&id))
            .await?;
        Ok(Response::new(TruncateResponse {}))
    }

    async fn close(
        &self,
        request: Request<CloseRequest>,
    ) -> Result<Response<CloseResponse>, Status> {
        self.adapter.close(request.into_inner().session_id).await?;
        Ok(Response::new(CloseResponse {}))
    }
}

/// What the inbound half tells the outbound half.
enum Event {
    /// The outcome of the message with this sequence number.
    Outcome(u64, Appended),
    /// End the stream with this status once every message before `at` is answered.
    End { at: u64, status: Status },
}

/// The inbound half of an append stream (see the module docs).
async fn take_appends(
    adapter: Adapter,
    session: Arc<Session>,
    first: AppendRequest,
    mut inbound: Streaming<AppendRequest>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let config = adapter.config();
    let cap = config
        .append_bytes_in_flight
        .clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(cap));
    let shutdown = adapter.shutdown_token();
    let mut seq = 0u64;
    let mut next = Some(first);
    'stream: loop {
        let req = match next.take() {
            Some(req) => req,
            None => {
                let received = tokio::select! {
                    r = inbound.message() => r,
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Event::End { at: seq, status: AdapterError::ShuttingDown.to_status() });
                        break;
                    }
                };
                match received {
                    Ok(Some(req)) => req,
                    // Half-closed: the stream ends after the last result.
                    Ok(None) => break,
                    // The client went away or broke the stream; nobody reads the results.
                    Err(_) => break,
                }
            }
        };
        if req.session_id != 0 && req.session_id != session.id {
            let status = AdapterError::InvalidArgument(format!(
                "an append stream of session {} named session {}",
                session.id, req.session_id
            ))
            .to_status();
            let _ = tx.send(Event::End { at: seq, status });
            break;
        }
        for m in req.messages {
            let size = m.payload.len()
                + m.properties
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            let wanted = u32::try_from(size.clamp(1, cap)).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                p = permits.clone().acquire_many_owned(wanted) => match p {
                    Ok(p) => p,
                    Err(_) => break 'stream,
                },
                () = shutdown.cancelled() => {
                    let _ = tx.send(Event::End { at: seq, status: AdapterError::ShuttingDown.to_status() });
                    break 'stream;
                }
            };
            let msg = WriteMessage {
                payload: m.payload,
                properties: m.properties,
            };
            let tx = tx.clone();
            let this = seq;
            seq += 1;
            session.append(msg, move |outcome| {
                drop(permit);
                let _ = tx.send(Event::Outcome(this, outcome));
            });
        }
    }
    session.detach(adapter.now_millis());
}

/// The outbound half of an append stream: outcomes back in send order, lost writers
/// resolved, results sent in batches.
struct Answers {
    session: Arc<Session>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// The sequence number of the next result to send.
    next: u64,
    /// Results that arrived before an earlier one.
    ready: BTreeMap<u64, AppendResult>,
    end: Option<(u64, Status)>,
    finished: bool,
}

impl Answers {
    async fn absorb(&mut self, event: Event) {
        match event {
            Event::Outcome(seq, outcome) => {
                let result = match outcome {
                    Appended::Id(id) => {
                        self.session.acked(id);
                        append_result::Result::Id(to_proto(id))
                    }
                    Appended::Failed(e) => append_result::Result::Error(e.detail()),
                    Appended::Lost { generation, error } => append_result::Result::Error(
                        self.session.resolve_lost(generation, error).await.detail(),
                    ),
                };
                self.ready.insert(
                    seq,
                    AppendResult {
                        result: Some(result),
                    },
                );
            }
            Event::End { at, status } => {
                if self.end.is_none() {
                    self.end = Some((at, status));
                }
            }
        }
    }

    /// The next response, or `None` when the stream is over.
    async fn next_response(&mut self) -> Option<Result<AppendResponse, Status>> {
        loop {
            if self.finished {
                return None;
            }
            if self.ready.contains_key(&self.next) {
                let first_sequence = self.next;
                let mut results = Vec::new();
                while results.len() < MAX_RESULTS_PER_RESPONSE {
                    let Some(r) = self.ready.remove(&self.next) else {
                        break;
                    };
                    results.push(r);
                    self.next += 1;
                }
                return Some(Ok(AppendResponse {
                    first_sequence,
                    results,
                }));
            }
            if self.end.as_ref().is_some_and(|(at, _)| *at <= self.next) {
                self.finished = true;
                return self.end.take().map(|(_, status)| Err(status));
            }
            // Every sender gone: the inbound half ended and every outcome arrived.
            let event = self.rx.recv().await?;
            self.absorb(event).await;
            while let Ok(event) = self.rx.try_recv() {
                self.absorb(event).await;
            }
        }
    }
}

fn answer_appends(
    session: Arc<Session>,
    rx: mpsc::UnboundedReceiver<Event>,
) -> impl Stream<Item = Result<AppendResponse, Status>> + Send + 'static {
    let answers = Answers {
        session,
        rx,
        next: 0,
        ready: BTreeMap::new(),
        end: None,
        finished: false,
    };
    futures::stream::unfold(answers, |mut answers| async move {
        let response = answers.next_response().await?;
        Some((response, answers))
    })
}

/// One read stream's task (see the module docs).
async fn serve_read(
    mut reader: wal::client::LogReader,
    tx: mpsc::Sender<Result<ReadResponse, Status>>,
    shutdown: tokio_util::sync::CancellationToken,
    config: AdapterConfig,
) {
    loop {
        let first = tokio::select! {
            () = tx.closed() => break,
            () = shutdown.cancelled() => {
                let _ = tx.try_send(Err(AdapterError::ShuttingDown.to_status()));
                break;
            }
            r = reader.read_next() => r,
        };
        let mut failure = None;
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        match first {
            Ok(m) => {
                bytes += m.payload.len();
                messages.push(m);
            }
            Err(e) => failure = Some(e),
        }
        // Whatever else is ready goes into the same response; `read_next` is cancel-safe,
        // so giving up on one that is not ready loses nothing.
        while failure.is_none()
            && messages.len() < config.read_batch_messages.max(1)
            && bytes < config.read_batch_bytes
        {
            match reader.read_next().now_or_never() {
                Some(Ok(m)) => {
                    bytes += m.payload.len();
                    messages.push(m);
                }
                Some(Err(e)) => failure = Some(e),
                None => break,
            }
        }
        if !messages.is_empty() {
            let response = ReadResponse {
                messages: messages
                    .into_iter()
                    .map(|m| ReadMessage {
                        id: Some(to_proto(m.id)),
                        payload: m.payload,
                        properties: m.properties,
                    })
                    .collect(),
            };
            let sent = tokio::select! {
                r = tx.send(Ok(response)) => r.is_ok(),
                () = shutdown.cancelled() => {
                    let _ = tx.try_send(Err(AdapterError::ShuttingDown.to_status()));
                    false
                }
            };
            if !sent {
                break;
            }
        }
        if let Some(e) = failure {
            tracing::warn!(log = reader.log_name(), reader = reader.name(), error = %e, "read failed");
            let _ = tx.send(Err(AdapterError::from(e).to_status())).await;
            break;
        }
    }
    let name = reader.name().to_string();
    if let Err(e) = reader.close().await {
        tracing::debug!(reader = %name, error = %e, "closing a reader failed");
    }
}
