//! `woodpecker serve`: the engine, the Kafka listener, the Milvus WAL gRPC service and the
//! metrics endpoint in one process.
//!
//! On start it prints `kafka listening on HOST:PORT`, `milvus wal listening on HOST:PORT` and
//! `metrics listening on HOST:PORT` to stdout (with the real ports when port 0 was asked
//! for). SIGTERM or Ctrl-C stops it cleanly: no new connections, in-flight requests finish,
//! Milvus read and append streams end, every partition's and every Milvus session's writer
//! is closed (its data flushed and its segment completed), then the engine; exit status 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kafka_shim::groups::GroupSettings;
use kafka_shim::security::acl::AuthorizerConfig;
use kafka_shim::security::config::{SecurityConfig, parse_properties};
use kafka_shim::security::tls;
use kafka_shim::topics::TopicDefaults;
use kafka_shim::txn::TxnSettings;
use kafka_shim::{Broker, BrokerConfig, Listener, Metrics, ServerConfig};
use milvus_adapter::{Adapter, AdapterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wal::clock::SystemClock;

use crate::engine::Engine;

/// Options of `woodpecker serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address of the Kafka listener.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    kafka_addr: SocketAddr,
    /// The address clients are told to connect to (Kafka's advertised.listeners)
    /// [default: the listener's address].
    #[arg(long, value_name = "HOST:PORT")]
    advertised_kafka_addr: Option<String>,
    /// Address of the Milvus WAL gRPC service (woodpecker.milvus.v1.MilvusWal).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9096")]
    milvus_addr: SocketAddr,
    /// Seconds a Milvus session lives without an append stream and without a call (its
    /// client is presumed gone; its writer is closed).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    milvus_session_ttl_secs: u64,
    /// Address of the Prometheus metrics endpoint (GET /metrics).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9095")]
    metrics_addr: SocketAddr,
    /// This broker's node id.
    #[arg(long, default_value_t = 0)]
    node_id: i32,
    /// Partitions of a topic created automatically (num.partitions).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    kafka_partitions: i32,
    /// Do not create unknown topics on Metadata requests (auto.create.topics.enable=false).
    #[arg(long)]
    no_auto_create_topics: bool,
    /// Default retention.ms of topics (-1: keep forever).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000, allow_negative_numbers = true)]
    kafka_retention_ms: i64,
    /// Default retention.bytes per partition (-1: no limit).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    kafka_retention_bytes: i64,
    /// Default max.message.bytes: the largest record batch accepted.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    kafka_max_message_bytes: i64,
    /// How often retention runs, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    retention_check_secs: u64,
    /// MiB of recent record batches kept in memory per partition, so that consumers at the
    /// tail are served without reading the log back.
    #[arg(long, default_value_t = 16)]
    kafka_tail_cache_mib: usize,
    /// Maximum simultaneous Kafka connections. At the limit, a new connection takes the
    /// place of the one idle the longest (idle for at least 2 s); without one, it is closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Close Kafka connections idle this long (connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    kafka_connections_max_idle_ms: u64,
    /// The longest transaction timeout a producer may ask for (transaction.max.timeout.ms);
    /// more is INVALID_TRANSACTION_TIMEOUT.
    #[arg(long, default_value_t = 900_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_transaction_max_timeout_ms: u64,
    /// How often open transactions are checked against their timeout and aborted when past
    /// it (transaction.abort.timed.out.transaction.cleanup.interval.ms).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    kafka_transaction_check_ms: u64,
    /// The smallest session timeout a consumer-group member may ask for
    /// (group.min.session.timeout.ms); less is INVALID_SESSION_TIMEOUT.
    #[arg(long, default_value_t = 6_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_group_min_session_timeout_ms: u64,
    /// The largest session timeout a consumer-group member may ask for
    /// (group.max.session.timeout.ms); more is INVALID_SESSION_TIMEOUT.
    #[arg(long, default_value_t = 1_800_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_group_max_session_timeout_ms: u64,
    /// The session timeout of members of consumer-protocol groups (KIP-848,
    /// group.consumer.session.timeout.ms): a member silent this long is fenced.
    #[arg(long, default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_group_consumer_session_timeout_ms: u64,
    /// How often members of consumer-protocol groups are told to heartbeat (KIP-848,
    /// group.consumer.heartbeat.interval.ms); must be below the session timeout.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_group_consumer_heartbeat_interval_ms: u64,
    /// The most members a consumer-protocol group may have (group.consumer.max.size);
    /// one more is GROUP_MAX_SIZE_REACHED.
    #[arg(long, default_value_t = i32::MAX as u64, value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64))]
    kafka_group_consumer_max_size: u64,
    /// Kafka security settings in a Java-properties file, with Kafka's own keys:
    /// `listeners`, `advertised.listeners`, `listener.security.protocol.map`, `ssl.*`,
    /// `sasl.enabled.mechanisms`, `authorizer.class.name`, `super.users`,
    /// `allow.everyone.if.no.acl.found` (see the README's security section). Its
    /// `listeners` replace --kafka-addr and --advertised-kafka-addr.
    #[arg(long, value_name = "FILE")]
    kafka_security_config: Option<std::path::PathBuf>,
    /// A SCRAM user created at start when it has no credentials yet (SCRAM-SHA-256 and
    /// SCRAM-SHA-512; PLAIN checks the same), its password from the environment variable
    /// WOODPECKER_KAFKA_ADMIN_PASSWORD or --kafka-admin-password-file. Existing credentials
    /// are kept.
    #[arg(long, value_name = "USER")]
    kafka_admin_user: Option<String>,
    /// A file holding the password of --kafka-admin-user (one line).
    #[arg(long, value_name = "FILE", requires = "kafka_admin_user")]
    kafka_admin_password_file: Option<std::path::PathBuf>,
}

/// The environment variable with the password of --kafka-admin-user.
const ADMIN_PASSWORD_ENV: &str = "WOODPECKER_KAFKA_ADMIN_PASSWORD";

/// The Kafka listeners to serve: bound sockets and what each one is.
struct Listeners {
    bound: Vec<(TcpListener, Listener)>,
    authorizer: Option<AuthorizerConfig>,
    /// `advertised.listeners` as DescribeConfigs reports it.
    advertised: String,
}

async fn bind_listeners(args: &ServeArgs) -> anyhow::Result<Listeners> {
    let Some(path) = &args.kafka_security_config else {
        let listener = TcpListener::bind(args.kafka_addr)
            .await
            .with_context(|| format!("cannot listen on {} (--kafka-addr)", args.kafka_addr))?;
        let kafka_addr = listener.local_addr()?;
        let (host, port) = match &args.advertised_kafka_addr {
            Some(a) => split_host_port(a)?,
            None if kafka_addr.ip().is_unspecified() => bail!(
                "--kafka-addr {kafka_addr} listens on every interface: give --advertised-kafka-addr HOST:PORT"
            ),
            None => (kafka_addr.ip().to_string(), i32::from(kafka_addr.port())),
        };
        return Ok(Listeners {
            advertised: format!("PLAINTEXT://{host}:{port}"),
            bound: vec![(listener, Listener::plaintext(&host, port))],
            authorizer: None,
        });
    };
    if args.advertised_kafka_addr.is_some() {
        bail!(
            "--advertised-kafka-addr and --kafka-security-config: give advertised.listeners in the file"
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} (--kafka-security-config)", path.display()))?;
    let security = parse_properties(&text)
        .and_then(|p| SecurityConfig::from_properties(&p))
        .with_context(|| format!("{} (--kafka-security-config)", path.display()))?;
    let mut bound = Vec::new();
    let mut advertised = Vec::new();
    for spec in &security.listeners {
        let host = if spec.host.is_empty() {
            "0.0.0.0"
        } else {
            spec.host.as_str()
        };
        let socket = TcpListener::bind((host, spec.port))
            .await
            .with_context(|| {
                format!(
                    "listener {}: cannot listen on {host}:{}",
                    spec.name, spec.port
                )
            })?;
        let local = socket.local_addr()?;
        let (adv_host, adv_port) = match &spec.advertised {
            Some((h, p)) => (h.clone(), i32::from(*p)),
            None if local.ip().is_unspecified() => bail!(
                "listener {} listens on every interface: give it in advertised.listeners",
                spec.name
            ),
            None => (local.ip().to_string(), i32::from(local.port())),
        };
        let tls = match &spec.tls {
            Some(files) => {
                Some(tls::server_config(files).with_context(|| format!("listener {}", spec.name))?)
            }
            None => None,
        };
        advertised.push(format!("{}://{adv_host}:{adv_port}", spec.name));
        bound.push((
            socket,
            Listener {
                name: spec.name.clone(),
                protocol: spec.protocol,
                advertised_host: adv_host,
                advertised_port: adv_port,
                tls,
                sasl_mechanisms: spec.sasl_mechanisms.clone(),
            },
        ));
    }
    Ok(Listeners {
        bound,
        authorizer: security.authorizer,
        advertised: advertised.join(","),
    })
}

fn split_host_port(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("`{addr}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("`{addr}`: the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        bail!("`{addr}` is not a reachable HOST:PORT");
    }
    Ok((host.to_string(), i32::from(port)))
}

pub(crate) async fn run(engine: &Engine, args: ServeArgs) -> anyhow::Result<()> {
    if args.kafka_group_min_session_timeout_ms > args.kafka_group_max_session_timeout_ms {
        bail!(
            "--kafka-group-min-session-timeout-ms ({}) is above --kafka-group-max-session-timeout-ms ({})",
            args.kafka_group_min_session_timeout_ms,
            args.kafka_group_max_session_timeout_ms
        );
    }
    if args.kafka_group_consumer_heartbeat_interval_ms
        >= args.kafka_group_consumer_session_timeout_ms
    {
        bail!(
            "--kafka-group-consumer-heartbeat-interval-ms ({}) must be below --kafka-group-consumer-session-timeout-ms ({})",
            args.kafka_group_consumer_heartbeat_interval_ms,
            args.kafka_group_consumer_session_timeout_ms
        );
    }
    let admin = match &args.kafka_admin_user {
        Some(user) => {
            let password = match &args.kafka_admin_password_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("cannot read {} (--kafka-admin-password-file)", path.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => std::env::var(ADMIN_PASSWORD_ENV).with_context(|| {
                    format!(
                        "--kafka-admin-user {user}: give its password in {ADMIN_PASSWORD_ENV} or --kafka-admin-password-file"
                    )
                })?,
            };
            if user.is_empty() || password.is_empty() {
                bail!("--kafka-admin-user: the user and its password must not be empty");
            }
            Some((user.clone(), password))
        }
        None => None,
    };
    let listeners = bind_listeners(&args).await?;
    let kafka_addr = listeners.bound[0].0.local_addr()?;
    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--metrics-addr)", args.metrics_addr))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let milvus_listener = TcpListener::bind(args.milvus_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--milvus-addr)", args.milvus_addr))?;
    let milvus_addr = milvus_listener.local_addr()?;
    let first = &listeners.bound[0].1;
    let mut config = BrokerConfig {
        node_id: args.node_id,
        advertised_host: first.advertised_host.clone(),
        advertised_port: first.advertised_port,
        authorizer: listeners.authorizer.clone(),
        advertised_listeners: Some(listeners.advertised.clone()),
        auto_create_topics: !args.no_auto_create_topics,
        topic_defaults: TopicDefaults {
            partitions: args.kafka_partitions,
            retention_ms: args.kafka_retention_ms,
            retention_bytes: args.kafka_retention_bytes,
            max_message_bytes: args.kafka_max_message_bytes,
        },
        retention_check_interval: Duration::from_secs(args.retention_check_secs),
        tail_cache_bytes: args.kafka_tail_cache_mib.saturating_mul(1024 * 1024),
        transactions: TxnSettings {
            max_timeout: Duration::from_millis(args.kafka_transaction_max_timeout_ms),
            abort_check_interval: Duration::from_millis(args.kafka_transaction_check_ms),
            ..TxnSettings::default()
        },
        ..BrokerConfig::default()
    };
    config.groups = GroupSettings {
        min_session_timeout: Duration::from_millis(args.kafka_group_min_session_timeout_ms),
        max_session_timeout: Duration::from_millis(args.kafka_group_max_session_timeout_ms),
        consumer_session_timeout: Duration::from_millis(
            args.kafka_group_consumer_session_timeout_ms,
        ),
        consumer_heartbeat_interval: Duration::from_millis(
            args.kafka_group_consumer_heartbeat_interval_ms,
        ),
        consumer_max_size: usize::try_from(args.kafka_group_consumer_max_size)
            .unwrap_or(usize::MAX),
        ..GroupSettings::default()
    };
    let metrics = Arc::new(Metrics::default());
    telemetry::catalog::set_build_info(env!("CARGO_PKG_VERSION"));
    let broker = Broker::open(
        engine.client.clone(),
        engine.meta.kv().clone(),
        engine.meta.keys().prefix(),
        config,
        metrics.clone(),
    )
    .await
    .context("starting the Kafka broker")?;
    if let Some((user, password)) = &admin {
        broker
            .credentials()
            .ensure(user, password)
            .await
            .with_context(|| format!("creating the credentials of --kafka-admin-user {user}"))?;
    }
    let retention = broker.spawn_retention();
    let transaction_timeouts = broker.spawn_transaction_timeouts();
    let (stop_tx, stop_rx) = watch::channel(false);
    let server_config = ServerConfig {
        max_connections: args.max_connections as usize,
        idle_timeout: Duration::from_millis(args.kafka_connections_max_idle_ms),
        ..ServerConfig::default()
    };
    let mut addresses = Vec::new();
    let mut servers = Vec::new();
    for (socket, listener) in listeners.bound {
        addresses.push((
            listener.name.clone(),
            listener.protocol,
            socket.local_addr()?,
        ));
        servers.push(tokio::spawn(kafka_shim::serve_listener(
            socket,
            listener,
            broker.clone(),
            server_config.clone(),
            stop_rx.clone(),
        )));
    }
    let adapter = Adapter::new(
        engine.client.clone(),
        engine.meta.kv().clone(),
        engine.meta.keys().prefix(),
        SystemClock::shared(),
        AdapterConfig {
            session_ttl: Duration::from_secs(args.milvus_session_ttl_secs),
            ..AdapterConfig::default()
        },
    );
    let milvus = {
        let mut stop = stop_rx.clone();
        tokio::spawn(milvus_adapter::serve(
            milvus_listener,
            adapter,
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        ))
    };
    let metrics_task = tokio::spawn(serve_metrics(metrics_listener, metrics, stop_rx));
    let stopped = stop_signals()?;
    println!("kafka listening on {kafka_addr}");
    for (name, protocol, addr) in &addresses {
        println!(
            "kafka listener {name} ({}) listening on {addr}",
            protocol.name()
        );
    }
    println!("milvus wal listening on {milvus_addr}");
    println!("metrics listening on {metrics_addr}");
    eprintln!(
        "woodpecker: serving Kafka on {kafka_addr} (cluster {}), the Milvus WAL on {milvus_addr}, metrics on http://{metrics_addr}/metrics; data in {}",
        broker.cluster_id(),
        engine.data_root.display()
    );
    eprintln!(
        "woodpecker: {}",
        crate::meta::describe(engine.meta.prefix_choice(), engine.meta.keys().prefix())
    );
    stopped.await;
    eprintln!("woodpecker: shutting down");
    let _ = stop_tx.send(true);
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("woodpecker: the Kafka listener failed: {e}"),
            Err(e) => eprintln!("woodpecker: the Kafka listener failed: {e}"),
        }
    }
    match milvus.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("woodpecker: the Milvus WAL service failed: {e}"),
        Err(e) => eprintln!("woodpecker: the Milvus WAL service failed: {e}"),
    }
    retention.abort();
    transaction_timeouts.abort();
    let _ = metrics_task.await;
    broker.shutdown().await;
    Ok(())
}

/// Installs the SIGTERM and SIGINT (Ctrl-C) handlers at once and returns the wait for either.
/// Callers install them before they print their ready lines: a launcher that signals as soon
/// as it reads them must find the handler in place (before, such a SIGTERM could kill the
/// process outright instead of stopping it cleanly).
pub(crate) fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// A minimal HTTP/1.1 endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz`;
/// every response closes its connection.
async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            // Read the request head (bounded).
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
                ("GET", "/metrics") => {
                    let mut text = metrics.render();
                    telemetry::catalog::render(&mut text);
                    ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text)
                }
                ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET\n".to_string(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        assert_eq!(
            split_host_port("kafka.example:9092").unwrap(),
            ("kafka.example".to_string(), 9092)
        );
        assert_eq!(
            split_host_port("[::1]:19092").unwrap(),
            ("::1".to_string(), 19092)
        );
        assert!(split_host_port("nohost").is_err());
        assert!(split_host_port("h:0").is_err());
        assert!(split_host_port(":9092").is_err());
    }
}
