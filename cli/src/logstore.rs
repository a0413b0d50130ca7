//! `woodpecker logstore`: one service-mode LogStore node (spec §7).
//!
//! It serves `woodpecker.proto.logstore.LogStore` over gRPC on `--service-addr` (TLS with
//! `--tls-cert`/`--tls-key`), keeps active segments under the data directory and compacts
//! completed ones into the object storage of the `minio:` section (bucket and root path come
//! from each client request), gossips with the nodes of `--seeds` on `--gossip-addr`, and
//! answers admin and metrics HTTP on `--admin-addr`. When ready it prints
//! `logstore listening on HOST:PORT` (and the admin and gossip addresses) on stdout. SIGTERM
//! or Ctrl-C stops it cleanly: appends are refused, in-flight requests finish, every segment
//! processor flushes and closes, the journals are checkpointed; exit status 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use proto::logstore::NodeMeta;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use wal::clock::{ClockRef, SystemClock};
use wal::config::Config;
use wal::logstore::SyncPolicy;
use wal::service::{
    GossipSettings, LogStoreNode, LogStoreService, MaintenanceSettings, Membership, NodeSettings,
    SelectionPolicy, TenantSettings,
};

/// Options of `woodpecker logstore`.
#[derive(Debug, Args)]
pub(crate) struct LogstoreArgs {
    /// Address the gRPC service listens on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:18080")]
    service_addr: SocketAddr,
    /// The gRPC address other nodes and clients are given (NodeMeta.endpoint, what quorums
    /// record) [default: --service-addr].
    #[arg(long, value_name = "HOST:PORT")]
    advertise_service_addr: Option<String>,
    /// UDP address of the gossip between nodes; without it the node knows only itself.
    #[arg(long, value_name = "HOST:PORT")]
    gossip_addr: Option<SocketAddr>,
    /// The gossip address other nodes reach this one at [default: --gossip-addr].
    #[arg(long, value_name = "HOST:PORT")]
    advertise_gossip_addr: Option<SocketAddr>,
    /// Gossip addresses of other nodes to join through, comma-separated.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Availability zone of this node.
    #[arg(long, default_value = "default")]
    az: String,
    /// Resource group of this node.
    #[arg(long, default_value = "default")]
    resource_group: String,
    /// Region of this node (the quorum buffer pool clients name).
    #[arg(long, default_value = "default")]
    region: String,
    /// Cluster name: nodes gossip only within one.
    #[arg(long, default_value = "woodpecker")]
    cluster_name: String,
    /// This node's id [default: the advertised service address].
    #[arg(long)]
    node_id: Option<String>,
    /// Address of the admin and metrics HTTP endpoint (/metrics, /healthz, /admin/...).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9091")]
    admin_addr: SocketAddr,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// What the node is built from the configuration file.
fn node_settings(config: &Config) -> NodeSettings {
    let ls = &config.woodpecker.logstore;
    let mut sync = SyncPolicy::from(&ls.segment_sync_policy);
    // Service mode syncs as soon as a flush is possible (`maxIntervalForService`).
    sync.max_interval_local =
        Duration::from_millis(ls.segment_sync_policy.max_interval_for_service.max(1));
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    NodeSettings {
        tenants: TenantSettings {
            data_dir: std::path::PathBuf::from(config.woodpecker.storage.root_path.trim()),
            minio: config.minio.clone(),
            sync_policy: sync,
            compaction_max_bytes: size(ls.segment_compaction_policy.max_bytes),
        },
        read_max_bytes: size(ls.segment_read_policy.max_batch_size),
        maintenance: MaintenanceSettings {
            cleanup_interval: Duration::from_secs(ls.processor_cleanup_policy.cleanup_interval),
            max_idle: Duration::from_secs(ls.processor_cleanup_policy.max_idle_time),
            ..MaintenanceSettings::default()
        },
        selection: SelectionPolicy::default(),
        disk_watermark: ls.disk_watermark_policy,
    }
}

pub(crate) async fn run(config: Config, args: LogstoreArgs) -> anyhow::Result<()> {
    let clock: ClockRef = SystemClock::shared();
    telemetry::catalog::set_build_info(env!("CARGO_PKG_VERSION"));
    let settings = node_settings(&config);
    settings
        .tenants
        .sync_policy
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid setting: {e}"))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            // Both rustls providers are linked in (object storage and etcd pull them in), so
            // rustls cannot pick one by itself; an error means one was installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("cannot read --tls-key {}", key.display()))?;
            Some(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)))
        }
        _ => None,
    };
    let listener = TcpListener::bind(args.service_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--service-addr)", args.service_addr))?;
    let service_addr = listener.local_addr()?;
    let endpoint = match &args.advertise_service_addr {
        Some(a) => a.clone(),
        None if service_addr.ip().is_unspecified() => bail!(
            "--service-addr {service_addr} listens on every interface: give --advertise-service-addr HOST:PORT"
        ),
        None => service_addr.to_string(),
    };
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-addr)", args.admin_addr))?;
    let admin_addr = admin.local_addr()?;
    let me = NodeMeta {
        node_id: args.node_id.clone().unwrap_or_else(|| endpoint.clone()),
        resource_group: args.resource_group.clone(),
        az: args.az.clone(),
        endpoint: endpoint.clone(),
        region: args.region.clone(),
        cluster_name: args.cluster_name.clone(),
        tags: [("role".to_string(), "logstore".to_string())].into(),
        ..NodeMeta::default()
    };
    let membership = match args.gossip_addr {
        Some(listen) => {
            let advertise = args.advertise_gossip_addr.unwrap_or(listen);
            if advertise.ip().is_unspecified() {
                bail!(
                    "--gossip-addr {listen} listens on every interface: give --advertise-gossip-addr HOST:PORT"
                );
            }
            Membership::join(
                me,
                GossipSettings {
                    listen,
                    advertise,
                    seeds: args.seeds.clone(),
                    cluster: args.cluster_name.clone(),
                    interval: Duration::from_millis(200),
                    dead_node_grace: Duration::from_secs(3_600),
                },
                clock.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot start gossip (--gossip-addr): {e}"))?
        }
        None => {
            if !args.seeds.is_empty() {
                bail!("--seeds needs --gossip-addr");
            }
            Membership::solo(me, clock.clone())
        }
    };
    let membership = Arc::new(membership);
    membership.start_load_reports(Duration::from_secs(10));
    let data_dir = settings.tenants.data_dir.clone();
    let node = LogStoreNode::open(settings, membership.clone(), clock)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the LogStore in {}: {e}", data_dir.display()))?;
    let maintenance = node.spawn_maintenance();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .trace_fn(telemetry::trace::grpc::server_span);
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .context("invalid --tls-cert / --tls-key")?;
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut grpc_stop = stop_rx.clone();
    let grpc = tokio::spawn(
        builder
            .add_service(LogStoreService::new(node.clone()).into_server())
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            }),
    );
    let admin_task = tokio::spawn(wal::service::admin::serve_admin(
        admin,
        node.clone(),
        stop_rx,
    ));
    // A closed stdout (the launcher stopped reading) must not take the node down.
    let say = |line: String| {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let stopped = crate::serve::stop_signals()?;
    say(format!("logstore listening on {service_addr}"));
    say(format!("admin listening on {admin_addr}"));
    if let Some(g) = args.gossip_addr {
        say(format!("gossip listening on {g}"));
    }
    eprintln!(
        "woodpecker: LogStore node {} serving {endpoint}; data in {}",
        membership.me().node_id,
        data_dir.display()
    );
    stopped.await;
    eprintln!("woodpecker: shutting down");
    node.begin_stop();
    let _ = stop_tx.send(true);
    match grpc.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("woodpecker: the gRPC server failed: {e}"),
        Err(e) => eprintln!("woodpecker: the gRPC server failed: {e}"),
    }
    let _ = admin_task.await;
    maintenance.abort();
    node.close().await;
    membership.shutdown().await;
    Ok(())
}
