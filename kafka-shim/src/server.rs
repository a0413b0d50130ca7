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

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ResponseHeader, api_versions_response,
};
use kafka_protocol::protocol::{Encodable, decode_request_header_from_buffer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::{Broker, Reply};
use crate::error::{KafkaCode, ShimError};

/// The API versions this broker serves: (key, min, max). Produce advertises min 0 for old
/// librdkafka feature probing (KAFKA-18659); versions 0-2 cannot be decoded and close the
/// connection, as Kafka 4 does.
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
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
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// The largest request frame (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Requests of one connection in progress at once.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_frame_bytes: 100 * 1024 * 1024,
            max_in_flight: 64,
            shutdown_grace: Duration::from_secs(10),
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

/// Serves Kafka clients on `listener` until `shutdown` turns true, then stops accepting,
/// lets every connection finish its in-flight requests (up to the grace period) and
/// returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ShimError> {
    let limit = Arc::new(Semaphore::new(config.max_connections));
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
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let metrics = broker.metrics().clone();
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, max = config.max_connections, "connection limit reached; closing the new connection");
                    drop(stream);
                    continue;
                };
                metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                metrics.connections.fetch_add(1, Ordering::Relaxed);
                let broker = broker.clone();
                let config = config.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    match connection(stream, peer, broker.clone(), &config, shutdown).await {
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

/// A request in progress: its correlation id, response header version and result.
struct InFlight {
    correlation_id: i32,
    header_version: i16,
    reply: BoxFuture<'static, Reply>,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: &ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ShimError> {
    let io = move |context: &str| {
        let context = format!("{context} ({peer})");
        move |source| ShimError::Io { context, source }
    };
    stream
        .set_nodelay(true)
        .map_err(io("setting TCP_NODELAY"))?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<InFlight>(config.max_in_flight.max(1));
    // The waiting parts of the requests in flight run here, together, and their responses go
    // out in request order as each one and every one before it is done: no task per request,
    // and the wake-up that completes a request (a high watermark moving, a fetch finding
    // data) reaches the task that writes its response directly.
    let max_in_flight = config.max_in_flight.max(1);
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        let mut pending = FuturesOrdered::new();
        let mut open = true;
        loop {
            let (correlation_id, header_version, reply) = tokio::select! {
                req = rx.recv(), if open && pending.len() < max_in_flight => {
                    match req {
                        Some(req) => {
                            let InFlight { correlation_id, header_version, reply } = req;
                            pending.push_back(async move {
                                let reply = AssertUnwindSafe(reply)
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|_| {
                                        Err(ShimError::Encode("a request's handler panicked".into()))
                                    });
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
            let mut len_buf = [0u8; 4];
            tokio::select! {
                r = rd.read_exact(&mut len_buf) => {
                    if let Err(e) = r {
                        // A clean close between requests.
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            return Ok(());
                        }
                        return Err(ShimError::Io { context: format!("reading a request ({peer})"), source: e });
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
            let len = i32::from_be_bytes(len_buf);
            if len < 8 || len as usize > config.max_frame_bytes {
                return Err(ShimError::Malformed {
                    api: "frame".into(),
                    detail: format!(
                        "request size {len} is outside 8..={} (socket.request.max.bytes)",
                        config.max_frame_bytes
                    ),
                });
            }
            let mut frame = BytesMut::zeroed(len as usize);
            rd.read_exact(&mut frame)
                .await
                .map_err(|e| ShimError::Io { context: format!("reading a request ({peer})"), source: e })?;
            let mut frame = frame.freeze();
            let key_raw = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let key = ApiKey::try_from(key_raw).map_err(|_| ShimError::Malformed {
                api: format!("api key {key_raw}"),
                detail: "unknown API key".into(),
            })?;
            let Some((min, max)) = served(key) else {
                return Err(ShimError::Malformed {
                    api: format!("{key:?} v{version}"),
                    detail: "this API is not served".into(),
                });
            };
            if key == ApiKey::ApiVersions {
                // Answered here, not by the broker: counted here.
                broker.metrics().request(key);
            }
            if key == ApiKey::ApiVersions && !(min..=max).contains(&version) {
                // KIP-511: answer in v0 with the ranges we serve.
                let body = encode_v0(&api_versions(KafkaCode::UnsupportedVersion))?;
                let done = Box::pin(async move { Ok(Some(body)) });
                send(&tx, correlation_id, 0, done).await?;
                continue;
            }
            let decodable = key.valid_versions();
            if !(min..=max).contains(&version) || version < decodable.min || version > decodable.max {
                return Err(ShimError::Malformed {
                    api: format!("{key:?} v{version}"),
                    detail: format!("served versions are {min}..={max}"),
                });
            }
            let header = decode_request_header_from_buffer(&mut frame).map_err(|e| ShimError::Malformed {
                api: format!("{key:?} v{version}"),
                detail: format!("request header: {e}"),
            })?;
            let header_version = key.response_header_version(version);
            if key == ApiKey::ApiVersions {
                // The body (client name and version, v3+) is informational.
                tracing::debug!(%peer, client = ?header.client_id, "api versions");
                let resp = api_versions(KafkaCode::None);
                let mut body = BytesMut::new();
                resp.encode(&mut body, version)
                    .map_err(|e| ShimError::Encode(e.to_string()))?;
                let done = Box::pin(async move { Ok(Some(body)) });
                send(&tx, correlation_id, header_version, done).await?;
                continue;
            }
            let rest = broker.handle(key, version, frame).await?;
            send(&tx, correlation_id, header_version, rest).await?;
        }
    }
    .await;
    drop(tx);
    // Let the writer send what is in flight (also on an error, for earlier requests).
    let written = writer
        .await
        .map_err(|e| ShimError::Encode(format!("connection writer failed: {e}")))?;
    read_result?;
    written
}

async fn send(
    tx: &mpsc::Sender<InFlight>,
    correlation_id: i32,
    header_version: i16,
    reply: BoxFuture<'static, Reply>,
) -> Result<(), ShimError> {
    tx.send(InFlight {
        correlation_id,
        header_version,
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

    #[test]
    fn every_served_range_is_decodable() {
        for (key, min, max) in SERVED {
            let valid = key.valid_versions();
            assert!(*max <= valid.max, "{key:?}");
            // Produce advertises 0 but decodes from 3.
            if *key != ApiKey::Produce {
                assert!(*min >= valid.min, "{key:?}");
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
