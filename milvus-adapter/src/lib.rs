//! Milvus 2.6's WAL contract as a gRPC service (`woodpecker.milvus.v1.MilvusWal`) over the
//! engine.
//!
//! Milvus 2.6 keeps each physical channel (pchannel) in one WAL behind its `walimpls`
//! interface. This crate serves that interface; the Go package in `milvus-adapter/go`
//! implements `walimpls` as a client of it, so a Milvus built with that package keeps its WAL
//! here. What it owns:
//!
//! * **pchannels and terms** ([`Adapter`]): a pchannel is the engine log of the same name
//!   (created on first open, as Milvus's own Woodpecker WAL does). A read-write open carries
//!   the streaming coordinator's term; the term is durable in the metadata store (etcd or the
//!   embedded store, so it survives restarts and is shared by every server on one etcd),
//!   replaced only by compare-and-swap and only upwards. A lower term is refused; an equal or
//!   higher one takes the pchannel's writer over and fences every older session, whose
//!   appends then fail with [`ErrorReason::Fenced`](proto::milvus::ErrorReason) (Milvus's
//!   `walimpls.ErrFenced`).
//! * **appends**: a bidirectional stream per session, one result per message, in order, each
//!   sent once the message is durable, carrying its id.
//! * **message ids**: the engine's (segment, entry) ids, which Milvus stores in Woodpecker's
//!   encoding: standard base64 of the protobuf `LogMessageIdData{segId = 1, entryId = 2}`
//!   (the service's `MessageId` has the same field numbers, so it encodes to the same
//!   bytes). One durable id per message; ids only grow, across terms and restarts.
//! * **reads**: a server stream per reader with Milvus's four deliver policies (all, latest,
//!   start from an id, start after an id), waiting at the tail until the client cancels.
//! * **truncation**: through the engine's truncation point, so that the auditor marks the
//!   segments before it and collects them after the retention TTL. Milvus reads from its
//!   checkpoint after truncating at it, so the id itself stays readable.
//! * **errors** ([`error`]): typed gRPC statuses whose details carry an `ErrorDetail`.
//!
//! It never touches storage or logs except through the engine's client ([`wal::client`]),
//! and keeps no state that a restart needs besides the term records.

pub mod error;
mod service;
mod session;
mod terms;

use std::future::Future;

use proto::milvus::milvus_wal_server::MilvusWalServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use error::{AdapterError, detail_of};
pub use service::{MilvusWalService, from_proto, to_proto};
pub use session::{Access, Adapter, AdapterConfig, Start};

/// Serves `adapter` on `listener` until `stop` resolves, then shuts the adapter down (streams
/// end, sessions close: writers flushed and their segments completed) and returns once every
/// call has finished.
pub async fn serve(
    listener: TcpListener,
    adapter: Adapter,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max = adapter.config().max_message_bytes;
    let service = MilvusWalServer::new(MilvusWalService::new(adapter.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let shutdown = {
        let adapter = adapter.clone();
        async move {
            stop.await;
            adapter.shutdown().await;
        }
    };
    Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    // Sessions opened while the last calls finished.
    adapter.shutdown().await;
    Ok(())
}
