//! Trace context crosses a real gRPC call: a tonic client with [`PropagateContext`] and a
//! tonic server that calls [`follow_remote_parent`] and opens [`server_span`] for each call,
//! over loopback TCP. The service is the
//! OTLP trace service from `opentelemetry-proto` (a real generated tonic service, standing in
//! for the LogStore service, which uses the same helpers); the spans are read back from the
//! OpenTelemetry SDK's in-memory exporter.
//!
//! One test function: the propagator, the exporting flag and the tracing subscriber are
//! process-wide.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry::global;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use telemetry::trace::grpc::{PropagateContext, follow_remote_parent, server_span};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Records whether each call carried a `traceparent` and runs its handler in a span that
/// follows the caller.
#[derive(Default, Clone)]
struct Service {
    traceparents: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.traceparents.lock().unwrap().push(traceparent);
        let span = tracing::info_span!("server.handle");
        follow_remote_parent(&span, request.metadata());
        async { tracing::info!("handled") }.instrument(span).await;
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve(service: Service) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .trace_fn(server_span)
            .add_service(TraceServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(addr)
}

#[tokio::test]
async fn a_server_span_is_the_child_of_the_calling_span_across_grpc() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber)?;

    let service = Service::default();
    let addr = serve(service.clone()).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = TraceServiceClient::with_interceptor(channel, PropagateContext);

    // Off (no exporter installed as far as the helpers know): nothing is sent.
    client
        .export(ExportTraceServiceRequest::default())
        .instrument(tracing::info_span!("client.untraced"))
        .await?;
    assert_eq!(service.traceparents.lock().unwrap()[0], None);

    // On.
    global::set_text_map_propagator(TraceContextPropagator::new());
    telemetry::trace::set_exporting(true);
    client
        .export(ExportTraceServiceRequest::default())
        .instrument(tracing::info_span!("client.call"))
        .await?;
    let sent = service.traceparents.lock().unwrap()[1].clone();
    let sent = sent.expect("the traced call carried no traceparent");

    provider.force_flush()?;
    let spans = exporter.get_finished_spans()?;
    let find = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let client_span = *find("client.call").first().expect("no client span");
    let servers = find("server.handle");
    assert_eq!(servers.len(), 2, "{spans:#?}");
    let (untraced, traced) = (servers[0], servers[1]);
    // The traced call's server span continues the client's trace, under the client span.
    assert_eq!(
        traced.span_context.trace_id(),
        client_span.span_context.trace_id()
    );
    assert_eq!(traced.parent_span_id, client_span.span_context.span_id());
    assert_ne!(traced.parent_span_id, SpanId::INVALID);
    // So does the span tonic opens for the call through `server_span` (as the LogStore
    // node's and the Milvus WAL service's servers do), named after the method.
    let calls = find("grpc.serve");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    assert_eq!(
        calls[1].span_context.trace_id(),
        client_span.span_context.trace_id()
    );
    assert_eq!(calls[1].parent_span_id, client_span.span_context.span_id());
    assert!(
        calls[1].attributes.iter().any(|kv| kv.key.as_str() == "rpc"
            && kv.value.as_str() == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        "{:?}",
        calls[1].attributes
    );
    // What went over the wire is that client span's W3C traceparent.
    assert_eq!(
        sent,
        format!(
            "00-{}-{}-01",
            client_span.span_context.trace_id(),
            client_span.span_context.span_id()
        )
    );
    // The untraced call's server span started a trace of its own.
    let untraced_client = *find("client.untraced").first().expect("no span");
    assert_ne!(
        untraced.span_context.trace_id(),
        untraced_client.span_context.trace_id()
    );
    assert_ne!(untraced.span_context.trace_id(), TraceId::INVALID);
    Ok(())
}
