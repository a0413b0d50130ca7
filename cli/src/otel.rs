//! Logs and traces of the process: log lines on stderr (filtered by `RUST_LOG`) and, with
//! `--otlp-endpoint`, the engine's spans exported over OTLP/gRPC.
//!
//! The engine's spans (`telemetry::trace`) are DEBUG spans under one target. The log output
//! has its own filter (INFO by default) and never enables them; the exporter's layer enables
//! that target only (plus WARN and ERROR events, which become span events). Without an
//! endpoint no exporter layer exists, so the spans are disabled where they are created and
//! cost a level comparison.
//!
//! Sampling follows the OpenTelemetry environment: `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (for example `parentbased_traceidratio` and `0.01`); the default
//! keeps every trace. `OTEL_SERVICE_NAME` overrides the service name `woodpecker`. Spans are
//! batched and sent in the background; [`Tracing::shutdown`] sends what is left before exit.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The installed exporter, if any.
#[derive(Debug)]
pub(crate) struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Sends the spans still buffered and stops the exporter (waits for the collector at
    /// most the exporter's timeout).
    pub(crate) async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Blocking: the export runs on this runtime's other threads meanwhile.
            let done = wal::clock::blocking::run(wal::clock::blocking::Io::Write, move || {
                provider.shutdown()
            })
            .await;
            if let Ok(Err(e)) = done {
                eprintln!("woodpecker: warning: sending the last spans failed: {e}");
            }
        }
    }
}

/// Installs the log output and, with `otlp_endpoint`, the span exporter. Call it inside the
/// tokio runtime (the exporter's gRPC channel lives on it). By default `serve` and `logstore` log at INFO
/// and the other commands only warnings; `RUST_LOG` sets the filter.
pub(crate) fn init(serving: bool, otlp_endpoint: Option<&str>) -> anyhow::Result<Tracing> {
    let default = if serving {
        "info,wal=warn,storage=warn"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let Some(endpoint) = otlp_endpoint else {
        let _ = tracing_subscriber::registry().with(logs).try_init();
        return Ok(Tracing { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
    let mut resource = Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            telemetry::catalog::node_id(),
        ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("woodpecker");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("woodpecker"))
        .with_filter(
            Targets::new()
                .with_target(telemetry::trace::SPAN_TARGET, LevelFilter::DEBUG)
                .with_default(LevelFilter::WARN),
        );
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    telemetry::trace::set_exporting(true);
    Ok(Tracing {
        provider: Some(provider),
    })
}
