//! The Kafka listener: framing, version negotiation, pipelining and shutdown.
//!
//! Every request is a 4-byte big-endian length and that many bytes. Requests of one
//! connection are read and started in order; for Produce the offsets are assigned and the
//! writes issued before the next request is read, so an idempotent producer's five in-flight
//! batches land in the order it sent them. The slow part of each request (waiting for
//! durability, a long-polling Fetch, a JoinGroup) runs concurrently, and responses are
//! written strictly in request order. A Produce with acks=0 gets no response.
//!
//! What a real broker does with bad input, the listener does too:
//! * ApiVersions of a version newer than served: a v0 response with UNSUPPORTED_VERSION (35)
//!   and the served ranges (KIP-511).
//! * An unknown API key, an API or version not served, a body that does not decode, a frame
//!   larger than `max_frame_bytes` or a negative length: the connection is closed (Kafka's
//!   `InvalidRequestException` / `InvalidReceiveException` behaviour); other connections are
//!   not affected.
//! * Record-level problems (bad CRC, oversized batch) are answered per partition by Produce.
//!
//! A listener has a security protocol ([`Listener`]): TLS is negotiated first on SSL and
//! SASL_SSL listeners (the principal of a verified client certificate becomes the
//! session's), and on SASL listeners the connection authenticates
//! ([`crate::security::sasl`]) before any request other than ApiVersions reaches the
//! broker. Every request carries the connection's [`Session`]: its principal, its address
//! and the listener's advertised address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ResponseHeader, api_versions_response,
};
use kafka_protocol::protocol::Encodable;
use std::time::Instant;
use telemetry::Stopwatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;
use wal::clock::{ClockRef, SystemClock};

use crate::broker::{Broker, Reply};
use crate::codec::{self, Body, Prefix};
use crate::error::{KafkaCode, ShimError};
use crate::metrics::Metrics;
use crate::security::sasl::{Authenticator, FAILED_AUTHENTICATION_DELAY, Step};
use crate::security::{ANONYMOUS, SaslMechanism, SecurityProtocol, Session, tls};

/// The API versions this broker serves: (key, min, max). Produce advertises min 0 for old
/// librdkafka feature probing (KAFKA-18659); versions 0-2 cannot be decoded and close the
/// connection, as Kafka 4 does.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 0),
];

fn served(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Settings of the listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once. At the limit, a new connection takes the place of the
    /// connection idle the longest (no request in progress for at least
    /// `evict_idle_after`); when there is none, the new connection is closed.
    pub max_connections: usize,
    /// How long a connection must have been idle to be closed for a new one at the limit.
    pub evict_idle_after: Duration,
    /// A connection with no request in progress and none received for this long is closed
    /// (Kafka's `connections.max.idle.ms`, 10 minutes). A request sent a byte at a time
    /// does not count as activity until it is whole.
    pub idle_timeout: Duration,
    /// The largest request frame (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Requests of one connection in progress at once.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// The listener's time: idle connections, the pause after a failed accept or login.
    pub clock: ClockRef,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            evict_idle_after: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            max_frame_bytes: 100 * 1024 * 1024,
            max_in_flight: 64,
            shutdown_grace: Duration::from_secs(10),
            clock: SystemClock::shared(),
        }
    }
}

/// The ApiVersions response body for `version` (errors use v0, KIP-511).
fn api_versions(error: KafkaCode) -> ApiVersionsResponse {
    let keys = SERVED
        .iter()
        .map(|(k, min, max)| {
            api_versions_response::ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(keys)
}

/// What a listener is: its name, security protocol and advertised address, with what its
/// protocol needs (a TLS configuration, the enabled SASL mechanisms).
#[derive(Clone)]
pub struct Listener {
    /// Its name (`PLAINTEXT`, `SASL_SSL`, or any name of `listeners`).
    pub name: String,
    /// Its security protocol.
    pub protocol: SecurityProtocol,
    /// The host Metadata and FindCoordinator give clients of this listener.
    pub advertised_host: String,
    /// The port Metadata and FindCoordinator give clients of this listener.
    pub advertised_port: i32,
    /// The TLS configuration (SSL and SASL_SSL).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The SASL mechanisms enabled (SASL_PLAINTEXT and SASL_SSL).
    pub sasl_mechanisms: Vec<SaslMechanism>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("advertised_host", &self.advertised_host)
            .field("advertised_port", &self.advertised_port)
            .field("tls", &self.tls.is_some())
            .field("sasl_mechanisms", &self.sasl_mechanisms)
            .finish()
    }
}

impl Listener {
    /// A PLAINTEXT listener advertised as `host:port`.
    pub fn plaintext(advertised_host: &str, advertised_port: i32) -> Listener {
        Listener {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            advertised_host: advertised_host.into(),
            advertised_port,
            tls: None,
            sasl_mechanisms: Vec::new(),
        }
    }

    /// Checks that the protocol has what it needs.
    fn check(&self) -> Result<(), ShimError> {
        let problem = if self.protocol.tls() && self.tls.is_none() {
            Some("a TLS listener without a certificate")
        } else if self.protocol.sasl() && self.sasl_mechanisms.is_empty() {
            Some("a SASL listener without mechanisms")
        } else {
            None
        };
        match problem {
            Some(p) => Err(ShimError::Malformed {
                api: format!("listener {}", self.name),
                detail: p.into(),
            }),
            None => Ok(()),
        }
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves Kafka clients on `listener` (PLAINTEXT, advertised as the broker's configured
/// address) until `shutdown` turns true, then stops accepting, lets every connection
/// finish its in-flight requests (up to the grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ShimError> {
    let session = broker.default_session();
    let security = Listener::plaintext(&session.advertised_host, session.advertised_port);
    serve_listener(listener, security, broker, config, shutdown).await
}

/// Serves Kafka clients on `listener` with the security of `security`, as [`serve`] does.
pub async fn serve_listener(
    listener: TcpListener,
    security: Listener,
    broker: Arc<Broker>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ShimError> {
    security.check()?;
    let security = Arc::new(security);
    let registry = Arc::new(Registry::default());
    let mut refusals = Refusals::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        config.clock.sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let metrics = broker.metrics().clone();
                let Some(state) = registry.admit(&config, &metrics) else {
                    metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    refusals.count(config.max_connections, config.clock.now());
                    drop(stream);
                    continue;
                };
                metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                metrics.connections.fetch_add(1, Ordering::Relaxed);
                let broker = broker.clone();
                let config = config.clone();
                let shutdown = shutdown.clone();
                let registry = registry.clone();
                let security = security.clone();
                connections.spawn(async move {
                    let result =
                        secured(stream, peer, &security, broker.clone(), &config, shutdown, &state).await;
                    registry.leave(state.id);
                    match result {
                        Ok(()) => {}
                        // The client went away (reset, broken pipe): nothing to report.
                        Err(ShimError::Io { source, .. }) => {
                            tracing::debug!(%peer, error = %source, "connection lost");
                        }
                        Err(e) => {
                            broker.metrics().protocol_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(%peer, error = %e, "connection closed");
                        }
                    }
                    broker.metrics().connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after the shutdown grace period; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

/// What the listener knows of one connection: enough to pick one to close at the limit.
#[derive(Debug)]
struct ConnState {
    id: u64,
    /// When the last whole request arrived or the last response went out.
    last_active: Mutex<Instant>,
    /// Requests received and not yet answered.
    in_flight: AtomicUsize,
    /// Told when the listener closes this connection to admit another.
    evicted: Notify,
    clock: ClockRef,
}

impl ConnState {
    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = self.clock.now();
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| *self.last_active.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Admits a new connection: below the limit, or in place of the connection idle the
    /// longest if it has been idle long enough. `None`: refused.
    fn admit(&self, config: &ServerConfig, metrics: &Metrics) -> Option<Arc<ConnState>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= config.max_connections {
            let now = config.clock.now();
            let idlest = open
                .values()
                .filter_map(|c| c.idle_since().map(|t| (t, c.id)))
                .filter(|(t, _)| now.duration_since(*t) >= config.evict_idle_after)
                .min()
                .map(|(_, id)| id)?;
            let victim = open.remove(&idlest)?;
            victim.evicted.notify_one();
            metrics.connections_evicted.fetch_add(1, Ordering::Relaxed);
        }
        let state = Arc::new(ConnState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            last_active: Mutex::new(config.clock.now()),
            in_flight: AtomicUsize::new(0),
            evicted: Notify::new(),
            clock: config.clock.clone(),
        });
        open.insert(state.id, state.clone());
        Some(state)
    }

    fn leave(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Refused connections, reported at most once per interval (a flood of them must not
/// become a flood of log lines).
#[derive(Debug, Default)]
struct Refusals {
    since_report: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn count(&mut self, max: usize, now: Instant) {
        self.since_report += 1;
        if self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= Self::EVERY)
        {
            tracing::warn!(
                refused = self.since_report,
                max,
                "connection limit reached with no idle connection to close; refusing new connections"
            );
            self.since_report = 0;
            self.last_report = Some(now);
        }
    }
}

/// A request in progress: its correlation id, response header version and result.
struct InFlight {
    correlation_id: i32,
    header_version: i16,
    timing: RequestTiming,
    reply: BoxFuture<'static, Reply>,
}

/// A connection through its listener's security: TLS first, then SASL, then requests.
async fn secured(
    stream: TcpStream,
    peer: SocketAddr,
    security: &Listener,
    broker: Arc<Broker>,
    config: &ServerConfig,
    shutdown: watch::Receiver<bool>,
    state: &Arc<ConnState>,
) -> Result<(), ShimError> {
    stream.set_nodelay(true).map_err(|source| ShimError::Io {
        context: format!("setting TCP_NODELAY ({peer})"),
        source,
    })?;
    let session = Session {
        principal: ANONYMOUS.to_string(),
        host: peer.ip().to_string(),
        listener: security.name.clone(),
        advertised_host: security.advertised_host.clone(),
        advertised_port: security.advertised_port,
        throttle: Default::default(),
    };
    match &security.tls {
        Some(tls_config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_config.clone());
            let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                .await
                .map_err(|_| ShimError::Authentication("TLS handshake timed out".into()))?
                .map_err(|e| ShimError::Authentication(format!("TLS handshake failed: {e}")))?;
            let mut session = session;
            if let Some(principal) = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(tls::principal_of)
            {
                session.principal = principal;
            }
            authenticated(
                stream, peer, security, session, broker, config, shutdown, state,
            )
            .await
        }
        None => {
            authenticated(
                stream, peer, security, session, broker, config, shutdown, state,
            )
            .await
        }
    }
}

/// SASL authentication on a SASL listener (nothing on others), then the connection's
/// requests.
#[allow(clippy::too_many_arguments)]
async fn authenticated<S>(
    mut stream: S,
    peer: SocketAddr,
    security: &Listener,
    mut session: Session,
    broker: Arc<Broker>,
    config: &ServerConfig,
    shutdown: watch::Receiver<bool>,
    state: &Arc<ConnState>,
) -> Result<(), ShimError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if security.protocol.sasl() {
        let authenticator = Authenticator::new(
            security.sasl_mechanisms.clone(),
            broker.credentials().clone(),
        );
        let exchange = sasl_exchange(&mut stream, peer, authenticator, &broker, config);
        match tokio::time::timeout(config.idle_timeout, exchange).await {
            Ok(Ok(Some(principal))) => session.principal = principal,
            // Closed by the client, or refused: the reason is logged where it is known.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ShimError::Authentication(
                    "no SASL authentication within connections.max.idle.ms".into(),
                ));
            }
        }
        tracing::debug!(%peer, principal = %session.principal, listener = %security.name, "authenticated");
    }
    connection(
        stream,
        peer,
        Arc::new(session),
        broker,
        config,
        shutdown,
        state,
    )
    .await
}

/// Writes one response (a header of `header_version` and `body`) or, with no header
/// version, one unframed SASL token.
async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    correlation_id: i32,
    header_version: Option<i16>,
    body: &[u8],
) -> Result<(), ShimError> {
    let mut out = BytesMut::new();
    out.put_i32(0);
    if let Some(v) = header_version {
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, v)
            .map_err(|e| ShimError::Encode(e.to_string()))?;
    }
    out.extend_from_slice(body);
    let len = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&len.to_be_bytes());
    stream
        .write_all(&out)
        .await
        .map_err(|source| ShimError::Io {
            context: "writing a SASL response".into(),
            source,
        })?;
    stream.flush().await.map_err(|source| ShimError::Io {
        context: "writing a SASL response".into(),
        source,
    })
}

/// The SASL exchange of a connection, one request at a time, as Kafka's
/// `SaslServerAuthenticator` runs it: ApiVersions and SaslHandshake first, then
/// SaslAuthenticate requests (or unframed tokens after a v0 handshake). The principal, or
/// `None` when the connection is to be closed.
async fn sasl_exchange<S>(
    stream: &mut S,
    peer: SocketAddr,
    mut auth: Authenticator,
    broker: &Broker,
    config: &ServerConfig,
) -> Result<Option<String>, ShimError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut last_correlation = 0;
    loop {
        let step = if auth.expects_raw_token() {
            let token = match read_token(stream, config.max_frame_bytes).await {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.into_shim(peer)),
            };
            auth.raw_token(token).await?
        } else {
            let frame = match read_request(stream, config.max_frame_bytes).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.into_shim(peer)),
            };
            let prefix = Prefix::read(&frame)?;
            last_correlation = prefix.correlation_id;
            if prefix.key == ApiKey::ApiVersions as i16 && !auth.in_exchange() {
                broker.metrics().request(ApiKey::ApiVersions);
                let (min, max) = served(ApiKey::ApiVersions).expect("ApiVersions is served");
                let body = if (min..=max).contains(&prefix.version) {
                    let mut body = BytesMut::new();
                    api_versions(KafkaCode::None)
                        .encode(&mut body, prefix.version)
                        .map_err(|e| ShimError::Encode(e.to_string()))?;
                    body
                } else {
                    encode_v0(&api_versions(KafkaCode::UnsupportedVersion))?
                };
                // ApiVersions responses always have a v0 header.
                write_frame(stream, prefix.correlation_id, Some(0), &body).await?;
                continue;
            }
            let key = ApiKey::try_from(prefix.key).ok();
            let in_range = key
                .and_then(served)
                .is_some_and(|(min, max)| (min..=max).contains(&prefix.version));
            if !matches!(
                key,
                Some(ApiKey::SaslHandshake) | Some(ApiKey::SaslAuthenticate)
            ) || !in_range
            {
                tracing::info!(%peer, api_key = prefix.key, version = prefix.version,
                    "request before SASL authentication: closing the connection");
                return Ok(None);
            }
            let request = codec::decode(frame)?;
            let header_version = request.key.response_header_version(request.version);
            broker.metrics().request(request.key);
            match request.body {
                Body::SaslHandshake(req) => auth.handshake(req, request.version, header_version)?,
                Body::SaslAuthenticate(req) => {
                    auth.authenticate(req, request.version, header_version)
                        .await?
                }
                _ => return Ok(None),
            }
        };
        match step {
            Step::Reply {
                header_version,
                body,
            } => write_frame(stream, last_correlation, header_version, &body).await?,
            Step::Authenticated {
                header_version,
                body,
                principal,
            } => {
                write_frame(stream, last_correlation, header_version, &body).await?;
                return Ok(Some(principal));
            }
            Step::Fail {
                reply,
                delay,
                reason,
            } => {
                tracing::info!(%peer, %reason, "SASL authentication failed: closing the connection");
                if delay {
                    config.clock.sleep(FAILED_AUTHENTICATION_DELAY).await;
                }
                if let Some((header_version, body)) = reply {
                    write_frame(stream, last_correlation, Some(header_version), &body).await?;
                }
                return Ok(None);
            }
        }
    }
}

/// Reads one unframed SASL token: a 4-byte size and that many bytes (which may be few).
async fn read_token(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    max_frame_bytes: usize,
) -> Result<Option<bytes::Bytes>, ReadError> {
    let mut len_buf = [0u8; 4];
    match rd.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 0 || len as usize > max_frame_bytes {
        return Err(ReadError::Size(len, max_frame_bytes));
    }
    let mut token = vec![0u8; len as usize];
    rd.read_exact(&mut token).await.map_err(ReadError::Io)?;
    Ok(Some(token.into()))
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    session: Arc<Session>,
    broker: Arc<Broker>,
    config: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
    state: &Arc<ConnState>,
) -> Result<(), ShimError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let io = move |context: &str| {
        let context = format!("{context} ({peer})");
        move |source| ShimError::Io { context, source }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<InFlight>(config.max_in_flight.max(1));
    // The waiting parts of the requests in flight run here, together, and their responses go
    // out in request order as each one and every one before it is done: no task per request,
    // and the wake-up that completes a request (a high watermark moving, a fetch finding
    // data) reaches the task that writes its response directly.
    let max_in_flight = config.max_in_flight.max(1);
    let writer_state = state.clone();
    let metrics = broker.metrics().clone();
    let mut writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        let mut pending = FuturesOrdered::new();
        let mut open = true;
        loop {
            let (correlation_id, header_version, reply) = tokio::select! {
                req = rx.recv(), if open && pending.len() < max_in_flight => {
                    match req {
                        Some(req) => {
                            let InFlight { correlation_id, header_version, timing, reply } = req;
                            let metrics = metrics.clone();
                            pending.push_back(async move {
                                let reply = AssertUnwindSafe(reply.instrument(timing.span.clone()))
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(ShimError::Encode("a request's handler panicked".into()))
                                    });
                                metrics.request_done(timing.api, timing.started);
                                (correlation_id, header_version, reply)
                            });
                        }
                        None => open = false,
                    }
                    continue;
                }
                Some(done) = pending.next(), if !pending.is_empty() => done,
                else => break,
            };
            writer_state.in_flight.fetch_sub(1, Ordering::AcqRel);
            writer_state.touch();
            let Some(body) = reply? else { continue };
            out.clear();
            out.put_i32(0);
            ResponseHeader::default()
                .with_correlation_id(correlation_id)
                .encode(&mut out, header_version)
                .map_err(|e| ShimError::Encode(e.to_string()))?;
            out.extend_from_slice(&body);
            let len = (out.len() - 4) as i32;
            out[0..4].copy_from_slice(&len.to_be_bytes());
            wr.write_all(&out).await.map_err(io("writing a response"))?;
        }
        let _ = wr.shutdown().await;
        Ok::<_, ShimError>(())
    });
    let read_result = async {
        loop {
            // A throttled client (KIP-219) is not read from until its throttle time is
            // over: what it sends meanwhile waits in its socket.
            if !throttled(&session, config, &mut shutdown).await {
                return Ok(Ended::Closed);
            }
            // One whole request, however long the client takes to send it, unless the
            // connection is closed meanwhile: by shutdown, to admit another at the limit,
            // or for having been idle (no request in progress) for `idle_timeout`.
            let read = read_request(&mut rd, config.max_frame_bytes);
            tokio::pin!(read);
            let frame = loop {
                let idle_deadline = state
                    .idle_since()
                    .map(|t| t + config.idle_timeout)
                    .unwrap_or_else(|| config.clock.now() + config.idle_timeout);
                tokio::select! {
                    r = &mut read => break r,
                    _ = shutdown.changed() => return Ok(Ended::Closed),
                    _ = state.evicted.notified() => {
                        tracing::debug!(%peer, "closing an idle connection to admit a new one");
                        return Ok(Ended::Closed);
                    }
                    _ = config.clock.sleep_until(idle_deadline) => {
                        if state.idle_since().is_some_and(|t| config.clock.elapsed(t) >= config.idle_timeout) {
                            tracing::debug!(%peer, "closing a connection idle for connections.max.idle.ms");
                            return Ok(Ended::Closed);
                        }
                    }
                }
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                // A clean close between requests.
                Ok(None) => return Ok(Ended::PeerClosed),
                Err(e) => return Err(e.into_shim(peer)),
            };
            // A request read while the connection was being throttled waits too.
            if !throttled(&session, config, &mut shutdown).await {
                return Ok(Ended::Closed);
            }
            state.in_flight.fetch_add(1, Ordering::AcqRel);
            state.touch();
            let prefix = Prefix::read(&frame)?;
            let timing = RequestTiming::start(&prefix);
            if prefix.key == ApiKey::ApiVersions as i16 {
                // Answered here, not by the broker: counted here.
                broker.metrics().request(ApiKey::ApiVersions);
                let (min, max) = served(ApiKey::ApiVersions).expect("ApiVersions is served");
                if !(min..=max).contains(&prefix.version) {
                    // KIP-511: answer in v0 with the ranges we serve.
                    let body = encode_v0(&api_versions(KafkaCode::UnsupportedVersion))?;
                    let done = Box::pin(async move { Ok(Some(body)) });
                    send(&tx, prefix.correlation_id, 0, timing, done).await?;
                    continue;
                }
            }
            let served_range = ApiKey::try_from(prefix.key).ok().and_then(served);
            match served_range {
                Some((min, max)) if (min..=max).contains(&prefix.version) => {}
                Some((min, max)) => {
                    return Err(ShimError::Malformed {
                        api: format!("api key {} v{}", prefix.key, prefix.version),
                        detail: format!("served versions are {min}..={max}"),
                    });
                }
                None => {
                    return Err(ShimError::Malformed {
                        api: format!("api key {} v{}", prefix.key, prefix.version),
                        detail: "this API is not served".into(),
                    });
                }
            }
            let request = codec::decode(frame)?;
            let header_version = request.key.response_header_version(request.version);
            if let Body::ApiVersions(_) = request.body {
                // The body (client name and version, v3+) is informational.
                tracing::debug!(%peer, client = ?request.header.client_id, "api versions");
                let resp = api_versions(KafkaCode::None);
                let mut body = BytesMut::new();
                resp.encode(&mut body, request.version)
                    .map_err(|e| ShimError::Encode(e.to_string()))?;
                let done = Box::pin(async move { Ok(Some(body)) });
                send(&tx, prefix.correlation_id, header_version, timing, done).await?;
                continue;
            }
            let rest = broker
                .handle(&session, request)
                .instrument(timing.span.clone())
                .await?;
            send(&tx, prefix.correlation_id, header_version, timing, rest).await?;
        }
    }
    .await;
    drop(tx);
    if let Ok(Ended::PeerClosed) = read_result {
        // Nobody is left to read the responses: stop waiting for them (a long poll would
        // hold the connection's slot for its whole wait). Writes already issued by Produce
        // complete on their own.
        writer.abort();
        return Ok(());
    }
    // Let the writer send what is in flight (also on an error, for earlier requests), for
    // at most the shutdown grace period.
    let written = match tokio::time::timeout(config.shutdown_grace, &mut writer).await {
        Ok(joined) => {
            joined.map_err(|e| ShimError::Encode(format!("connection writer failed: {e}")))?
        }
        Err(_) => {
            writer.abort();
            Ok(())
        }
    };
    read_result?;
    written
}

/// Waits until the connection's throttle time (if any) is over; `false` when shutdown
/// came first.
async fn throttled(
    session: &Session,
    config: &ServerConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let Some(until) = session.throttle.until() else {
        return true;
    };
    if until <= config.clock.now() {
        return true;
    }
    tokio::select! {
        () = config.clock.sleep_until(until) => true,
        _ = shutdown.changed() => false,
    }
}

/// How a connection's reading ended without an error.
enum Ended {
    /// The client closed its end.
    PeerClosed,
    /// The listener closed it: shutdown, eviction at the limit, or idleness.
    Closed,
}

/// Why a request could not be read.
enum ReadError {
    Io(std::io::Error),
    Size(i32, usize),
}

impl ReadError {
    fn into_shim(self, peer: SocketAddr) -> ShimError {
        match self {
            ReadError::Io(source) => ShimError::Io {
                context: format!("reading a request ({peer})"),
                source,
            },
            ReadError::Size(len, max) => ShimError::Malformed {
                api: "frame".into(),
                detail: format!(
                    "request size {len} is outside 8..={max} (socket.request.max.bytes)"
                ),
            },
        }
    }
}

/// Reads one request frame: its 4-byte size, then that many bytes, growing the buffer as
/// they arrive (a size prefix alone reserves nothing, so memory follows what a client
/// sent, not what it announced). `None` at a clean end of stream between requests.
async fn read_request(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    max_frame_bytes: usize,
) -> Result<Option<bytes::Bytes>, ReadError> {
    const STEP: usize = 64 * 1024;
    let mut len_buf = [0u8; 4];
    match rd.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let len = i32::from_be_bytes(len_buf);
    if len < 8 || len as usize > max_frame_bytes {
        return Err(ReadError::Size(len, max_frame_bytes));
    }
    let len = len as usize;
    let mut frame = BytesMut::with_capacity(len.min(STEP));
    while frame.len() < len {
        let want = (len - frame.len()).min(STEP);
        frame.reserve(want);
        let mut chunk = (&mut *rd).take(want as u64);
        match chunk.read_buf(&mut frame).await {
            Ok(0) => return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(Some(frame.freeze()))
}

/// What measuring a request needs: its API key, when its frame was read, and its
/// `kafka.request` span (disabled, and free, unless spans are exported). The span ends, and
/// the latency is recorded, when the response is ready to be written.
struct RequestTiming {
    api: i16,
    started: Stopwatch,
    span: tracing::Span,
}

impl RequestTiming {
    fn start(prefix: &Prefix) -> Self {
        let api = prefix.key;
        RequestTiming {
            api,
            started: Stopwatch::start(),
            span: tracing::debug_span!(
                target: telemetry::trace::SPAN_TARGET,
                "kafka.request",
                api = ApiKey::try_from(api).map_or("unknown", api_name),
                api_key = api,
                api_version = prefix.version,
                correlation_id = prefix.correlation_id,
            ),
        }
    }
}

/// The Kafka name of an API key, for span fields.
fn api_name(key: ApiKey) -> &'static str {
    crate::metrics::api_label(key)
}

async fn send(
    tx: &mpsc::Sender<InFlight>,
    correlation_id: i32,
    header_version: i16,
    timing: RequestTiming,
    reply: BoxFuture<'static, Reply>,
) -> Result<(), ShimError> {
    tx.send(InFlight {
        correlation_id,
        header_version,
        timing,
        reply,
    })
    .await
    .map_err(|_| ShimError::Io {
        context: "the connection's writer stopped".into(),
        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    })
}

fn encode_v0(resp: &ApiVersionsResponse) -> Result<BytesMut, ShimError> {
    let mut body = BytesMut::new();
    resp.encode(&mut body, 0)
        .map_err(|e| ShimError::Encode(e.to_string()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest version of each API an Apache Kafka 3.9 broker advertises (the request
    /// schemas of 3.9.0). Clients pick request versions, and some (kafka-python) the broker
    /// version they assume, from these.
    const KAFKA_3_9_MAX: &[(ApiKey, i16)] = &[
        (ApiKey::Produce, 11),
        (ApiKey::Fetch, 17),
        (ApiKey::ListOffsets, 9),
        (ApiKey::Metadata, 12),
        (ApiKey::OffsetCommit, 9),
        (ApiKey::OffsetFetch, 9),
        (ApiKey::FindCoordinator, 6),
        (ApiKey::JoinGroup, 9),
        (ApiKey::Heartbeat, 4),
        (ApiKey::LeaveGroup, 5),
        (ApiKey::SyncGroup, 5),
        (ApiKey::DescribeGroups, 5),
        (ApiKey::ListGroups, 5),
        (ApiKey::SaslHandshake, 1),
        (ApiKey::ApiVersions, 4),
        (ApiKey::CreateTopics, 7),
        (ApiKey::DeleteTopics, 6),
        (ApiKey::DeleteRecords, 2),
        (ApiKey::InitProducerId, 5),
        (ApiKey::OffsetForLeaderEpoch, 4),
        (ApiKey::AddPartitionsToTxn, 5),
        (ApiKey::AddOffsetsToTxn, 4),
        (ApiKey::EndTxn, 4),
        (ApiKey::TxnOffsetCommit, 4),
        (ApiKey::DescribeAcls, 3),
        (ApiKey::CreateAcls, 3),
        (ApiKey::DeleteAcls, 3),
        (ApiKey::DescribeConfigs, 4),
        (ApiKey::AlterConfigs, 2),
        (ApiKey::SaslAuthenticate, 2),
        (ApiKey::CreatePartitions, 3),
        (ApiKey::DeleteGroups, 2),
        (ApiKey::IncrementalAlterConfigs, 1),
        (ApiKey::OffsetDelete, 0),
        (ApiKey::DescribeClientQuotas, 1),
        (ApiKey::AlterClientQuotas, 1),
        (ApiKey::DescribeUserScramCredentials, 0),
        (ApiKey::AlterUserScramCredentials, 0),
        (ApiKey::DescribeCluster, 1),
        (ApiKey::DescribeProducers, 0),
        (ApiKey::DescribeTransactions, 0),
        (ApiKey::ListTransactions, 1),
        (ApiKey::ConsumerGroupHeartbeat, 0),
        (ApiKey::ConsumerGroupDescribe, 0),
    ];

    /// APIs served above Kafka 3.9's highest version, and why. ConsumerGroupHeartbeat v1
    /// (Kafka 4.0: the client makes up its member id, KIP-1082; topic regexes) is what
    /// librdkafka 2.12 and Kafka 4 clients need for `group.protocol=consumer`: they do not
    /// speak v0.
    const ABOVE_KAFKA_3_9: &[(ApiKey, i16)] = &[(ApiKey::ConsumerGroupHeartbeat, 1)];

    #[test]
    fn every_served_api_goes_as_high_as_kafka_3_9() {
        for (key, _, max) in SERVED {
            let kafka = KAFKA_3_9_MAX
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key:?} is not an API of Kafka 3.9"));
            let expected = ABOVE_KAFKA_3_9
                .iter()
                .find(|(k, _)| k == key)
                .map_or(kafka.1, |(_, v)| *v);
            assert_eq!(*max, expected, "{key:?}");
        }
    }

    #[test]
    fn every_served_range_is_decodable() {
        for (key, min, max) in SERVED {
            let (lo, hi) =
                codec::decodable_versions(*key).unwrap_or_else(|| panic!("{key:?} is not decoded"));
            assert!(*max <= hi, "{key:?}");
            // Produce advertises 0 but decodes from 3.
            if *key != ApiKey::Produce {
                assert!(*min >= lo, "{key:?}");
            }
        }
    }

    #[test]
    fn api_versions_encode_without_tagged_fields_at_defaults() {
        let resp = api_versions(KafkaCode::None);
        for v in 0..=4 {
            let mut b = BytesMut::new();
            resp.encode(&mut b, v).unwrap();
            if v >= 3 {
                // The last byte is the tagged-field count: zero.
                assert_eq!(*b.last().unwrap(), 0, "v{v}");
            }
        }
    }
}
