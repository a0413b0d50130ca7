//! Service mode's [`LogStoreCluster`]: LogStore nodes reached over gRPC, found from static
//! seeds (`woodpecker.client.quorum`, spec §7.1), as Go clients find them. Clients take no
//! part in the nodes' gossip: a seed answers `SelectNodes` from its own view of the cluster.
//!
//! * **Selection** (`select_quorum`): for the single-region strategies, a random pool, its
//!   seeds in random order, `SelectNodes(strategy, affinity, [{limit: replicas}])` on the
//!   first seed that answers; `cross-region` spreads the replicas over the pools (at least
//!   two), `custom` asks for one node per placement rule in the rule's pool. The answer must
//!   name `replicas` distinct nodes, none of them recently unreachable from this client
//!   unless it answers a probe now (the nodes' failure detector may not have dropped a
//!   killed node yet); otherwise the selection is
//!   retried with backoff (200 ms doubling to 2 s, on the client's clock) until
//!   [`SelectSettings::timeout`], and then fails with 4001 (retriable). The result is
//!   `QuorumInfo{id: 1, es = wq = replicas, aq = replicas/2 + 1, nodes, replicas}`.
//! * **The pool**: one [`GrpcLogStoreClient`] per endpoint, created on first use and kept;
//!   each drops its own connection after a transport failure (see [`super::grpc`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use proto::logstore as pb;
use proto::meta::{QuorumInfo, QuorumNode};
use rand::seq::{IndexedRandom, SliceRandom};

use super::error::ClientError;
use super::grpc::{GrpcLogStoreClient, RpcSettings, Tenant};
use super::store::{LogStoreClient, LogStoreCluster};
use crate::clock::ClockRef;
use crate::config::{AffinityMode, QuorumSection, QuorumStrategy};

/// How quorums are selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectSettings {
    /// How long one selection may keep retrying before it fails (Go retries for ever).
    pub timeout: Duration,
    /// The first pause between attempts (doubling to [`SelectSettings::max_backoff`]).
    pub backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
}

impl Default for SelectSettings {
    fn default() -> Self {
        SelectSettings {
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// A pool of seeds: a region.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pool {
    name: String,
    seeds: Vec<String>,
}

/// LogStore nodes over gRPC, found from static seeds.
#[derive(Debug)]
pub struct ServiceCluster {
    pools: Vec<Pool>,
    quorum: QuorumSection,
    replicas: usize,
    tenant: Tenant,
    rpc: RpcSettings,
    select: SelectSettings,
    clock: ClockRef,
    nodes: Mutex<HashMap<String, GrpcLogStoreClient>>,
}

fn select_failed(reason: String) -> ClientError {
    ClientError::SelectQuorumFailed { reason }
}

impl ServiceCluster {
    /// The cluster `quorum` describes, for the tenant of the client's `minio` section.
    /// Fails (naming the setting) without a seed, or for a replica count other than 3 or 5.
    pub fn new(
        quorum: &QuorumSection,
        tenant: Tenant,
        rpc: RpcSettings,
        select: SelectSettings,
        clock: ClockRef,
    ) -> Result<ServiceCluster, crate::config::ConfigError> {
        quorum.validate_for_service()?;
        let pools = quorum
            .quorum_buffer_pools
            .iter()
            .filter(|p| !p.seeds.is_empty())
            .map(|p| Pool {
                name: p.name.clone(),
                seeds: p.seeds.iter().map(|s| s.trim().to_string()).collect(),
            })
            .collect();
        Ok(ServiceCluster {
            pools,
            replicas: quorum.quorum_select_strategy.replicas as usize,
            quorum: quorum.clone(),
            tenant,
            rpc,
            select,
            clock,
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// The client of `endpoint`, from the pool.
    pub fn client(&self, endpoint: &str) -> GrpcLogStoreClient {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(endpoint.to_string())
            .or_insert_with(|| {
                GrpcLogStoreClient::new(
                    endpoint,
                    self.tenant.clone(),
                    self.rpc.clone(),
                    self.clock.clone(),
                )
            })
            .clone()
    }

    fn affinity(&self) -> pb::AffinityMode {
        match self.quorum.quorum_select_strategy.affinity_mode {
            AffinityMode::Soft => pb::AffinityMode::Soft,
            AffinityMode::Hard => pb::AffinityMode::Hard,
        }
    }

    /// `SelectNodes` on the seeds of `pool` in random order until one answers.
    async fn ask_pool(
        &self,
        pool: &Pool,
        strategy: pb::StrategyType,
        filters: Vec<pb::NodeFilter>,
    ) -> Result<Vec<pb::NodeMeta>, String> {
        let mut seeds = pool.seeds.clone();
        seeds.shuffle(&mut rand::rng());
        let mut last = format!("pool `{}` has no seed", pool.name);
        for seed in seeds {
            match self
                .client(&seed)
                .select_nodes(strategy, self.affinity(), filters.clone())
                .await
            {
                Ok(nodes) => return Ok(nodes),
                Err(e) => last = format!("seed {seed}: {e}"),
            }
        }
        Err(last)
    }

    /// One selection attempt.
    async fn attempt(&self) -> Result<Vec<pb::NodeMeta>, String> {
        let strategy = self.quorum.quorum_select_strategy.strategy;
        let n = self.replicas;
        let limit = |k: usize| i32::try_from(k).unwrap_or(i32::MAX);
        let nodes = match strategy {
            QuorumStrategy::CrossRegion => {
                if self.pools.len() < 2 {
                    return Err("cross-region selection needs at least two pools".into());
                }
                let mut pools = self.pools.clone();
                pools.shuffle(&mut rand::rng());
                let used = pools.len().min(n);
                let mut all = Vec::new();
                for (i, pool) in pools.iter().take(used).enumerate() {
                    let share = n / used + usize::from(i < n % used);
                    let filter = pb::NodeFilter {
                        limit: limit(share),
                        ..pb::NodeFilter::default()
                    };
                    all.extend(
                        self.ask_pool(pool, pb::StrategyType::Random, vec![filter])
                            .await?,
                    );
                }
                all
            }
            QuorumStrategy::Custom => {
                let rules = &self.quorum.quorum_select_strategy.custom_placement;
                if rules.is_empty() {
                    return Err("the custom strategy needs customPlacement rules".into());
                }
                let mut all: Vec<pb::NodeMeta> = Vec::new();
                for rule in rules.iter().take(n) {
                    let pool = self
                        .pools
                        .iter()
                        .find(|p| p.name == rule.region)
                        .ok_or_else(|| {
                            format!(
                                "placement `{}` names unknown pool `{}`",
                                rule.name, rule.region
                            )
                        })?;
                    let filter = pb::NodeFilter {
                        az: rule.az.clone(),
                        resource_group: rule.resource_group.clone(),
                        limit: limit(n),
                        ..pb::NodeFilter::default()
                    };
                    let found = self
                        .ask_pool(pool, pb::StrategyType::Custom, vec![filter])
                        .await?;
                    // One node per rule, never one already taken.
                    if let Some(node) = found
                        .into_iter()
                        .find(|f| all.iter().all(|a| a.endpoint != f.endpoint))
                    {
                        all.push(node);
                    }
                }
                all
            }
            other => {
                let pool = self
                    .pools
                    .choose(&mut rand::rng())
                    .ok_or_else(|| "no pool has seeds".to_string())?;
                let filter = pb::NodeFilter {
                    limit: limit(n),
                    ..pb::NodeFilter::default()
                };
                self.ask_pool(pool, other.wire(), vec![filter]).await?
            }
        };
        let mut seen = BTreeSet::new();
        let distinct: Vec<pb::NodeMeta> = nodes
            .into_iter()
            .filter(|m| !m.endpoint.is_empty() && seen.insert(m.endpoint.clone()))
            .collect();
        // A node this client saw fail lately (the seeds' failure detector may not have
        // dropped it yet) is used only if it answers a probe now.
        let mut down = Vec::new();
        for m in &distinct {
            let client = self.client(&m.endpoint);
            if client.is_down() && !client.probe().await {
                down.push(m.endpoint.as_str());
            }
        }
        if !down.is_empty() {
            return Err(format!(
                "selected node(s) {} failed recently",
                down.join(", ")
            ));
        }
        if distinct.len() < n {
            return Err(format!("{} node(s) selected, {n} needed", distinct.len()));
        }
        Ok(distinct.into_iter().take(n).collect())
    }

    fn quorum_info(&self, nodes: Vec<pb::NodeMeta>) -> QuorumInfo {
        let n = i32::try_from(nodes.len()).unwrap_or(i32::MAX);
        QuorumInfo {
            id: 1,
            es: n,
            wq: n,
            aq: n / 2 + 1,
            nodes: nodes.iter().map(|m| m.endpoint.clone()).collect(),
            replicas: nodes
                .into_iter()
                .map(|m| QuorumNode {
                    endpoint: m.endpoint,
                    node_id: m.node_id,
                    cluster_name: m.cluster_name,
                    region: m.region,
                    az: m.az,
                    resource_group: m.resource_group,
                    tags: m.tags,
                })
                .collect(),
        }
    }
}

#[async_trait]
impl LogStoreCluster for ServiceCluster {
    async fn select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        let started = self.clock.now_millis();
        let budget = u64::try_from(self.select.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pause = self.select.backoff;
        loop {
            match self.attempt().await {
                Ok(nodes) => return Ok(self.quorum_info(nodes)),
                Err(reason) => {
                    let spent = self.clock.now_millis().saturating_sub(started);
                    if spent >= budget {
                        return Err(select_failed(reason));
                    }
                    tracing::debug!(reason = %reason, "quorum selection failed; retrying");
                    self.clock.sleep(pause).await;
                    pause = (pause * 2).min(self.select.max_backoff);
                }
            }
        }
    }

    async fn try_select_quorum(&self) -> Result<QuorumInfo, ClientError> {
        self.attempt()
            .await
            .map(|nodes| self.quorum_info(nodes))
            .map_err(select_failed)
    }

    fn node(&self, endpoint: &str) -> Result<Arc<dyn LogStoreClient>, ClientError> {
        Ok(Arc::new(self.client(endpoint)))
    }

    /// Service-mode quorums only: a segment an embedded client wrote (quorum id ≤ 0,
    /// `127.0.0.1:59456`) lives on that client's own disk or object layout, not on these
    /// nodes (Go's #216 fell back to 127.0.0.1 here).
    fn resolve(&self, quorum: &QuorumInfo) -> Result<Vec<Arc<dyn LogStoreClient>>, ClientError> {
        if quorum.id <= 0 {
            return Err(ClientError::IncompatibleSegment {
                log: String::new(),
                segment: -1,
                reason: format!(
                    "it was written in embedded mode (quorum {} on {}), not on LogStore nodes",
                    quorum.id,
                    quorum.nodes.join(", ")
                ),
            });
        }
        quorum.nodes.iter().map(|e| self.node(e)).collect()
    }

    fn compacts(&self) -> bool {
        true
    }
}

impl QuorumStrategy {
    /// The `SelectNodes` strategy.
    fn wire(self) -> pb::StrategyType {
        match self {
            QuorumStrategy::Random => pb::StrategyType::Random,
            QuorumStrategy::SingleAzSingleRg => pb::StrategyType::SingleAzSingleRg,
            QuorumStrategy::SingleAzMultiRg => pb::StrategyType::SingleAzMultiRg,
            QuorumStrategy::MultiAzSingleRg => pb::StrategyType::MultiAzSingleRg,
            QuorumStrategy::MultiAzMultiRg => pb::StrategyType::MultiAzMultiRg,
            QuorumStrategy::CrossRegion => pb::StrategyType::CrossRegion,
            QuorumStrategy::Custom => pb::StrategyType::Custom,
            QuorumStrategy::RandomGroup => pb::StrategyType::RandomGroup,
        }
    }
}
