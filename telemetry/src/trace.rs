//! Spans: where they are and how their context crosses processes.
//!
//! The engine's spans (a Kafka request, an append, a flush, an fsync, an object PUT) are
//! `tracing` spans at DEBUG level under the target [`SPAN_TARGET`]. The binary's log output
//! filters at INFO by default, so without an exporter these spans are disabled at their call
//! sites: creating one costs a comparison with the global maximum level and nothing is
//! recorded. When the binary installs an OpenTelemetry exporter it enables this target for the
//! exporter's layer only, calls [`set_exporting`], and the spans become OpenTelemetry spans.
//!
//! Span names: [`KAFKA_REQUEST`], [`APPEND`], [`FLUSH`], [`FSYNC`], [`OBJECT_PUT`],
//! [`GRPC_SERVE`].

/// The `tracing` target of every engine span.
pub const SPAN_TARGET: &str = "woodpecker::span";
/// One Kafka request, from its frame to its response being ready.
pub const KAFKA_REQUEST: &str = "kafka.request";
/// One append, from the writer taking it to its acknowledgement.
pub const APPEND: &str = "wal.append";
/// One block made durable by a segment processor.
pub const FLUSH: &str = "logstore.flush";
/// One durable write of a local file.
pub const FSYNC: &str = "storage.fsync";
/// One object PUT (a block, a footer, a fence), retries included.
pub const OBJECT_PUT: &str = "object.put";
/// One gRPC call served (a LogStore RPC, a Milvus WAL call), a child of the caller's span
/// when the request carries trace context.
pub const GRPC_SERVE: &str = "grpc.serve";

use std::sync::atomic::{AtomicBool, Ordering};

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Records that the binary installed an OpenTelemetry exporter and a propagator.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Release);
}

/// Whether spans are exported (so context is worth propagating).
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Trace context in gRPC metadata (W3C `traceparent` / `tracestate`, through the globally
/// installed propagator).
///
/// A client adds [`PropagateContext`] as its interceptor
/// (`LogStoreClient::with_interceptor(channel, PropagateContext)`), so every request carries
/// the context of the span it was made in; a server makes its handler's span a child of the
/// caller's with [`follow_remote_parent`]. Both do nothing unless an exporter is installed
/// ([`exporting`]).
pub mod grpc {
    use opentelemetry::Context;
    use opentelemetry::propagation::{Extractor, Injector};
    use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    struct Inject<'a>(&'a mut MetadataMap);

    impl Injector for Inject<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value),
            ) {
                self.0.insert(k, v);
            }
        }
    }

    struct Extract<'a>(&'a MetadataMap);

    impl Extractor for Extract<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }

        fn keys(&self) -> Vec<&str> {
            self.0
                .keys()
                .filter_map(|k| match k {
                    KeyRef::Ascii(k) => Some(k.as_str()),
                    KeyRef::Binary(_) => None,
                })
                .collect()
        }
    }

    /// Writes the context of `span` into `metadata`.
    pub fn inject(span: &Span, metadata: &mut MetadataMap) {
        if !super::exporting() {
            return;
        }
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut Inject(metadata));
        });
    }

    /// The caller's context carried in `metadata` (empty when none).
    pub fn extract(metadata: &MetadataMap) -> Context {
        if !super::exporting() {
            return Context::new();
        }
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(metadata)))
    }

    /// Makes `span` a child of the caller's span carried in `metadata`. Call it before the
    /// span is first entered.
    pub fn follow_remote_parent(span: &Span, metadata: &MetadataMap) {
        if !super::exporting() {
            return;
        }
        let _ = span.set_parent(extract(metadata));
    }

    /// The span of one served gRPC call, for tonic's `Server::trace_fn`: named
    /// [`GRPC_SERVE`](super::GRPC_SERVE) with the method path as `rpc`, and a child of the
    /// caller's span when the request's headers carry trace context. Disabled (and nothing
    /// is read) unless an exporter is installed.
    pub fn server_span(request: &tonic::codegen::http::Request<()>) -> Span {
        let span = tracing::debug_span!(
            target: super::SPAN_TARGET,
            "grpc.serve",
            rpc = request.uri().path()
        );
        if super::exporting() && !span.is_disabled() {
            let metadata = MetadataMap::from_headers(request.headers().clone());
            follow_remote_parent(&span, &metadata);
        }
        span
    }

    /// A tonic client interceptor that sends the current span's context with every request.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct PropagateContext;

    impl tonic::service::Interceptor for PropagateContext {
        fn call(
            &mut self,
            mut request: tonic::Request<()>,
        ) -> Result<tonic::Request<()>, tonic::Status> {
            inject(&Span::current(), request.metadata_mut());
            Ok(request)
        }
    }
}
