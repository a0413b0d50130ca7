//! Which LogStore nodes exist: server-to-server gossip with
//! [chitchat](https://crates.io/crates/chitchat) (scuttlebutt anti-entropy over UDP, phi-accrual
//! failure detection), seeded from `--seeds` gossip addresses (spec §7.1).
//!
//! Each node publishes its [`NodeMeta`] (node id, gRPC endpoint, region, zone, resource group,
//! tags, load) under one key as base64 protobuf, as the Go server gossips protobuf bytes; a
//! node is selectable while the failure detector holds it live and its meta decodes. The view
//! answers SelectNodes. Clients never gossip: they call SelectNodes on static seeds.
//!
//! Why chitchat (over `foca` and `memberlist` from crates.io): it is maintained by Quickwit and
//! runs their production clusters, is small, runs on tokio with its own UDP transport, and
//! its versioned key-value state per node is exactly a changing `NodeMeta` (load, status tags);
//! `foca` would need our own transport, timers and metadata dissemination, and `memberlist`
//! (a port of hashicorp's design, not wire-compatible with the Go fork) brings a much larger
//! dependency tree. A mixed Go/Rust server cluster is therefore not possible; clients do not
//! notice.
//!
//! Load follows the Go definition: an EWMA (weight 0.5 on the newest sample) of the larger of
//! CPU busy and IO-wait fractions, raised to a memory penalty above 85 % used, sampled every
//! `report_interval` from `/proc`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use base64::Engine as _;
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use prost::Message as _;
use proto::logstore::NodeMeta;
use stopper::Stopper;

use crate::clock::ClockRef;

/// The key a node's `NodeMeta` is published under.
const META_KEY: &str = "wp.node_meta";

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// Address to bind the UDP socket to.
    pub listen: SocketAddr,
    /// Address other nodes reach this one at (defaults to `listen`).
    pub advertise: SocketAddr,
    /// Gossip addresses of other nodes (`host:port`; names are resolved and re-resolved).
    pub seeds: Vec<String>,
    /// Nodes gossip only with the same cluster name.
    pub cluster: String,
    /// Rounds per second are `1 / interval` (Go: 200 ms).
    pub interval: Duration,
    /// How long a dead node is remembered before it is forgotten.
    pub dead_node_grace: Duration,
}

/// A node's view of the cluster. See the module docs.
pub struct Membership {
    me: Arc<StdMutex<NodeMeta>>,
    gossip: Option<ChitchatHandle>,
    clock: ClockRef,
    stop: Stopper,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &*self.me.lock().unwrap_or_else(|p| p.into_inner()))
            .field(
                "gossip",
                &self.gossip.as_ref().map(|g| g.chitchat_id().clone()),
            )
            .finish()
    }
}

fn encode_meta(m: &NodeMeta) -> String {
    base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec())
}

fn decode_meta(s: &str) -> Option<NodeMeta> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    NodeMeta::decode(bytes.as_slice()).ok()
}

impl Membership {
    /// A membership of one: this node only (no gossip).
    pub fn solo(me: NodeMeta, clock: ClockRef) -> Membership {
        Membership {
            me: Arc::new(StdMutex::new(me)),
            gossip: None,
            clock,
            stop: Stopper::default(),
        }
    }

    /// Joins the gossip cluster through `settings.seeds` and publishes `me`.
    pub async fn join(
        me: NodeMeta,
        settings: GossipSettings,
        clock: ClockRef,
    ) -> Result<Membership, String> {
        let generation = clock.now_millis();
        let id = ChitchatId::new(me.node_id.clone(), generation, settings.advertise);
        let config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: settings.cluster.clone(),
            gossip_interval: settings.interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                dead_node_grace_period: settings.dead_node_grace,
                initial_interval: settings.interval * 5,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(|state: &chitchat::NodeState| {
                state.get(META_KEY).and_then(decode_meta).is_some()
            })),
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let mut me = me;
        me.last_update = i64::try_from(clock.now_millis()).unwrap_or(i64::MAX);
        let handle = chitchat::spawn_chitchat(
            config,
            vec![(META_KEY.to_string(), encode_meta(&me))],
            &UdpTransport,
        )
        .await
        .map_err(|e| format!("gossip on {}: {e}", settings.listen))?;
        Ok(Membership {
            me: Arc::new(StdMutex::new(me)),
            gossip: Some(handle),
            clock,
            stop: Stopper::default(),
        })
    }

    /// This node's meta as published.
    pub fn me(&self) -> NodeMeta {
        self.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes this node's meta and publishes it (bumping `version` and `last_update`).
    pub async fn update(&self, f: impl FnOnce(&mut NodeMeta)) {
        let meta = {
            let mut me = self.me.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut me);
            me.version += 1;
            me.last_update = i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX);
            me.clone()
        };
        if let Some(g) = &self.gossip {
            let value = encode_meta(&meta);
            g.with_chitchat(|c| c.self_node_state().set(META_KEY, value.clone()))
                .await;
        }
    }

    /// The live nodes (this one included), sorted by node id.
    pub(crate) async fn live_nodes(&self) -> Vec<NodeMeta> {
        let mut nodes = match &self.gossip {
            None => vec![self.me()],
            Some(g) => {
                g.with_chitchat(|c| {
                    let live: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                    live.iter()
                        .filter_map(|id| c.node_state(id))
                        .filter_map(|s| s.get(META_KEY).and_then(decode_meta))
                        .collect::<Vec<_>>()
                })
                .await
            }
        };
        if !nodes.iter().any(|n| n.node_id == self.me().node_id) {
            nodes.push(self.me());
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes.dedup_by(|a, b| a.node_id == b.node_id);
        nodes
    }

    /// Starts sampling this node's load every `interval` and publishing it.
    pub fn start_load_reports(self: &Arc<Self>, interval: Duration) {
        let this = Arc::downgrade(self);
        let stop = self.stop.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut sampler = LoadSampler::default();
            loop {
                let load = sampler.sample();
                let Some(m) = this.upgrade() else { return };
                let now = i64::try_from(clock.now_millis()).unwrap_or(i64::MAX);
                if let Some(load) = load {
                    m.update(|me| {
                        me.load_factor = load;
                        me.load_updated_at = now;
                    })
                    .await;
                }
                drop(m);
                tokio::select! {
                    () = clock.sleep(interval) => {}
                    () = stop.stopped() => return,
                }
            }
        });
    }

    /// Leaves the cluster: stops gossiping (peers see the node dead after their failure
    /// detector's delay) and stops load reports.
    pub async fn shutdown(&self) {
        self.stop.stop();
        if let Some(g) = &self.gossip {
            let _ = g.initiate_shutdown();
        }
    }
}

/// A one-shot stop signal shared by background tasks.
mod stopper {
    use std::sync::Arc;
    use tokio::sync::watch;

    #[derive(Debug, Clone)]
    pub(super) struct Stopper(Arc<watch::Sender<bool>>);

    impl Default for Stopper {
        fn default() -> Self {
            Stopper(Arc::new(watch::channel(false).0))
        }
    }

    impl Stopper {
        pub(super) fn stop(&self) {
            self.0.send_replace(true);
        }

        pub(super) async fn stopped(&self) {
            let mut rx = self.0.subscribe();
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Samples `/proc/stat` and `/proc/meminfo` (see the module docs).
#[derive(Debug, Default)]
struct LoadSampler {
    prev: Option<CpuTimes>,
    ewma: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    total: u64,
    idle: u64,
    iowait: u64,
}

fn read_cpu() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total = v.iter().take(8).sum();
    Some(CpuTimes {
        total,
        idle: *v.get(3)?,
        iowait: *v.get(4)?,
    })
}

fn read_mem_ratio() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| 1.0 - available / total)
}

/// The raw load of one sample: the larger of CPU and IO-wait, or the memory penalty above
/// the 0.85 soft threshold when larger.
fn raw_load(cpu: f64, iowait: f64, mem: f64) -> f64 {
    const SOFT: f64 = 0.85;
    let mut load = cpu.max(iowait);
    if mem > SOFT {
        load = load.max((mem - SOFT) / (1.0 - SOFT));
    }
    load.clamp(0.0, 1.0)
}

impl LoadSampler {
    fn sample(&mut self) -> Option<f64> {
        let now = read_cpu()?;
        let prev = self.prev.replace(now)?;
        let total = now.total.saturating_sub(prev.total) as f64;
        if total <= 0.0 {
            return self.ewma;
        }
        let idle = now.idle.saturating_sub(prev.idle) as f64;
        let iowait = now.iowait.saturating_sub(prev.iowait) as f64;
        let cpu = 1.0 - (idle + iowait) / total;
        let raw = raw_load(cpu, iowait / total, read_mem_ratio().unwrap_or(0.0));
        let e = match self.ewma {
            None => raw,
            Some(old) => 0.5 * raw + 0.5 * old,
        };
        self.ewma = Some(e);
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_load_takes_the_worst_signal() {
        assert_eq!(raw_load(0.2, 0.5, 0.5), 0.5);
        assert_eq!(raw_load(0.9, 0.1, 0.0), 0.9);
        // Memory at 92.5 % is half-way from the soft threshold to full.
        assert!((raw_load(0.1, 0.0, 0.925) - 0.5).abs() < 1e-9);
        assert_eq!(raw_load(2.0, 0.0, 0.0), 1.0);
    }

    #[test]
    fn meta_round_trips_through_its_gossip_value() {
        let m = NodeMeta {
            node_id: "n1".into(),
            endpoint: "127.0.0.1:18080".into(),
            az: "az1".into(),
            resource_group: "rg".into(),
            region: "r".into(),
            load_factor: 0.25,
            tags: [("role".to_string(), "logstore".to_string())].into(),
            ..NodeMeta::default()
        };
        assert_eq!(decode_meta(&encode_meta(&m)), Some(m));
        assert_eq!(decode_meta("not base64!"), None);
    }
}
