//! Node selection for SelectNodes (spec §7.1): pure functions over a snapshot of the live
//! nodes' [`NodeMeta`], with the randomness passed in, so every strategy is testable.
//!
//! A filter narrows candidates by availability zone and resource group (an exact name, or a
//! regular expression when the text holds regex characters, matched against the whole name),
//! by tags (exact match of every tag) and always drops nodes tagged
//! `status=decommissioning|decommissioned`. Strategies then pick up to `limit` nodes (0: no
//! limit):
//!
//! | strategy | picks |
//! |---|---|
//! | `RANDOM`, `CUSTOM`, `CROSS_REGION` | from every candidate (cross-region spreading is the client's job: it sends one filter per region) |
//! | `SINGLE_AZ_SINGLE_RG` | one zone, one group in it, nodes of that group |
//! | `SINGLE_AZ_MULTI_RG` | one zone, then one node from each of up to `limit` groups in it |
//! | `MULTI_AZ_SINGLE_RG` | one group, then one node from each of up to `limit` zones in it |
//! | `MULTI_AZ_MULTI_RG` | up to `limit` zones, one node from one group of each |
//! | `RANDOM_GROUP` | candidates sorted by node id cut into groups of `limit`; one group at random (few overlapping quorums) |
//!
//! Picking among nodes prefers low load: with load-aware selection a node's weight is
//! `1 - load` (at least 0.01), a load older than the TTL counts as 0.5, and when no load is
//! known the pick is uniform. The zone-then-group strategies first try a few random zones (or
//! groups) and then fall back to an exhaustive search, so they find nodes whenever any match.
//!
//! With `SOFT` affinity a filter nothing matches yields no nodes; with `HARD` it is an error.

use std::collections::BTreeMap;

use proto::logstore::{AffinityMode, NodeFilter, NodeMeta, StrategyType};
use rand::Rng;
use rand::seq::SliceRandom;

/// Selection settings (`logstore.nodeSelectionPolicy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectionPolicy {
    /// Prefer low-load nodes (`loadAwareEnabled`, default on).
    pub load_aware: bool,
    /// A load report older than this counts as unknown (`loadTTL`, 30 s).
    pub load_ttl_ms: i64,
}

impl Default for SelectionPolicy {
    fn default() -> Self {
        SelectionPolicy {
            load_aware: true,
            load_ttl_ms: 30_000,
        }
    }
}

/// The load assumed for a node without a fresh report.
const UNKNOWN_LOAD: f64 = 0.5;
/// The smallest weight: even a saturated node stays selectable, so a quorum can form.
const MIN_WEIGHT: f64 = 0.01;
/// Random zone (or group) attempts before the exhaustive search.
const RANDOM_ATTEMPTS: usize = 5;

/// Characters that make an AZ or resource-group filter a regular expression.
const REGEX_CHARS: &[char] = &[
    '*', '+', '?', '[', ']', '(', ')', '{', '}', '^', '$', '|', '\\',
];

/// A name filter: empty (anything), exact, or an anchored regular expression.
enum NameMatch {
    Any,
    Exact(String),
    Regex(regex::Regex),
    /// An invalid expression: matches nothing.
    Nothing,
}

impl NameMatch {
    fn new(pattern: &str) -> NameMatch {
        if pattern.is_empty() {
            NameMatch::Any
        } else if pattern.contains(REGEX_CHARS) {
            match regex::Regex::new(&format!("^(?:{pattern})$")) {
                Ok(r) => NameMatch::Regex(r),
                Err(_) => NameMatch::Nothing,
            }
        } else {
            NameMatch::Exact(pattern.to_string())
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            NameMatch::Any => true,
            NameMatch::Exact(e) => e == name,
            NameMatch::Regex(r) => r.is_match(name),
            NameMatch::Nothing => false,
        }
    }
}

/// Whether a node is leaving the cluster (never selected).
pub(crate) fn is_decommissioning(n: &NodeMeta) -> bool {
    matches!(
        n.tags.get("status").map(String::as_str),
        Some("decommissioning" | "decommissioned")
    )
}

/// The candidates of one filter, indexed both ways: zone → group → nodes and group → zone →
/// nodes (sorted maps, so that only the random source decides).
struct Index<'a> {
    by_az: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a NodeMeta>>>,
    by_rg: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a NodeMeta>>>,
}

impl<'a> Index<'a> {
    fn new(nodes: &'a [NodeMeta], filter: &NodeFilter) -> Index<'a> {
        let az = NameMatch::new(&filter.az);
        let rg = NameMatch::new(&filter.resource_group);
        let mut by_az: BTreeMap<&str, BTreeMap<&str, Vec<&NodeMeta>>> = BTreeMap::new();
        let mut by_rg: BTreeMap<&str, BTreeMap<&str, Vec<&NodeMeta>>> = BTreeMap::new();
        for n in nodes {
            let tags_ok = filter.tags.iter().all(|(k, v)| n.tags.get(k) == Some(v));
            if !tags_ok
                || is_decommissioning(n)
                || !az.matches(&n.az)
                || !rg.matches(&n.resource_group)
            {
                continue;
            }
            by_az
                .entry(n.az.as_str())
                .or_default()
                .entry(n.resource_group.as_str())
                .or_default()
                .push(n);
            by_rg
                .entry(n.resource_group.as_str())
                .or_default()
                .entry(n.az.as_str())
                .or_default()
                .push(n);
        }
        Index { by_az, by_rg }
    }

    fn all(&self) -> Vec<&'a NodeMeta> {
        self.by_az
            .values()
            .flat_map(|rgs| rgs.values().flatten().copied())
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.by_az.is_empty()
    }
}

/// Picks nodes for one SelectNodes request: each filter is answered with `strategy` and the
/// answers are concatenated. Errors (HARD affinity only): a filter nothing matched.
pub fn select_nodes<R: Rng + ?Sized>(
    nodes: &[NodeMeta],
    strategy: StrategyType,
    affinity: AffinityMode,
    filters: &[NodeFilter],
    policy: &SelectionPolicy,
    now_ms: i64,
    rng: &mut R,
) -> Result<Vec<NodeMeta>, String> {
    let mut out = Vec::new();
    for filter in filters {
        let picked = select_one(nodes, strategy, filter, policy, now_ms, rng);
        if picked.is_empty() && affinity == AffinityMode::Hard {
            return Err(format!(
                "no node matches the filter (az `{}`, resource group `{}`, {} tags) with strategy {}",
                filter.az,
                filter.resource_group,
                filter.tags.len(),
                strategy.as_str_name()
            ));
        }
        out.extend(picked.into_iter().cloned());
    }
    Ok(out)
}

fn select_one<'a, R: Rng + ?Sized>(
    nodes: &'a [NodeMeta],
    strategy: StrategyType,
    filter: &NodeFilter,
    policy: &SelectionPolicy,
    now_ms: i64,
    rng: &mut R,
) -> Vec<&'a NodeMeta> {
    let index = Index::new(nodes, filter);
    if index.is_empty() {
        return Vec::new();
    }
    let limit = usize::try_from(filter.limit).unwrap_or(0);
    let pick = Picker { policy, now_ms };
    match strategy {
        StrategyType::Random | StrategyType::Custom | StrategyType::CrossRegion => {
            pick.nodes(index.all(), limit, rng)
        }
        StrategyType::SingleAzSingleRg => single_az_single_rg(&index, limit, &pick, rng),
        StrategyType::SingleAzMultiRg => one_per_inner_group(&index.by_az, limit, &pick, rng),
        StrategyType::MultiAzSingleRg => one_per_inner_group(&index.by_rg, limit, &pick, rng),
        StrategyType::MultiAzMultiRg => multi_az_multi_rg(&index, limit, &pick, rng),
        StrategyType::RandomGroup => random_group(index.all(), limit, &pick, rng),
    }
}

/// One zone, one group in it, up to `limit` nodes of that group.
fn single_az_single_rg<'a, R: Rng + ?Sized>(
    index: &Index<'a>,
    limit: usize,
    pick: &Picker<'_>,
    rng: &mut R,
) -> Vec<&'a NodeMeta> {
    // Every (zone, group) in the index has at least one node, so a random zone and a random
    // group in it always succeed; the exhaustive search of the Go version is not needed.
    let azs: Vec<_> = index.by_az.values().collect();
    let rgs = azs[rng.random_range(0..azs.len())];
    let groups: Vec<_> = rgs.values().collect();
    let nodes = groups[rng.random_range(0..groups.len())];
    pick.nodes(nodes.clone(), limit, rng)
}

/// `outer` → `inner` → nodes: one outer key at random, then one node from each of up to
/// `limit` inner keys (SINGLE_AZ_MULTI_RG over zones, MULTI_AZ_SINGLE_RG over groups).
fn one_per_inner_group<'a, R: Rng + ?Sized>(
    outer: &BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a NodeMeta>>>,
    limit: usize,
    pick: &Picker<'_>,
    rng: &mut R,
) -> Vec<&'a NodeMeta> {
    let keys: Vec<_> = outer.values().collect();
    for _ in 0..RANDOM_ATTEMPTS.min(keys.len() * 2) {
        let inner = keys[rng.random_range(0..keys.len())];
        let mut groups: Vec<&Vec<&NodeMeta>> = inner.values().collect();
        groups.shuffle(rng);
        let take = if limit == 0 {
            groups.len()
        } else {
            limit.min(groups.len())
        };
        let picked: Vec<&NodeMeta> = groups[..take]
            .iter()
            .filter_map(|g| pick.one((*g).clone(), rng))
            .collect();
        if !picked.is_empty() {
            return picked;
        }
    }
    // Exhaustive: one node from every inner group of every outer key.
    let all: Vec<&NodeMeta> = outer
        .values()
        .flat_map(|inner| inner.values())
        .filter_map(|g| pick.one(g.clone(), rng))
        .collect();
    pick.nodes(all, limit, rng)
}

/// Up to `limit` zones, one group of each, one node of that group.
fn multi_az_multi_rg<'a, R: Rng + ?Sized>(
    index: &Index<'a>,
    limit: usize,
    pick: &Picker<'_>,
    rng: &mut R,
) -> Vec<&'a NodeMeta> {
    let mut zones: Vec<_> = index.by_az.values().collect();
    zones.shuffle(rng);
    let take = if limit == 0 {
        zones.len()
    } else {
        limit.min(zones.len())
    };
    zones[..take]
        .iter()
        .filter_map(|rgs| {
            let groups: Vec<_> = rgs.values().collect();
            let g = groups[rng.random_range(0..groups.len())];
            pick.one(g.clone(), rng)
        })
        .collect()
}

/// Candidates sorted by node id, cut into groups of `limit`; one group at random, a short
/// last group filled from the others.
fn random_group<'a, R: Rng + ?Sized>(
    mut all: Vec<&'a NodeMeta>,
    limit: usize,
    pick: &Picker<'_>,
    rng: &mut R,
) -> Vec<&'a NodeMeta> {
    if limit == 0 || limit >= all.len() {
        return all;
    }
    all.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let groups = (all.len() / limit).max(1);
    let start = rng.random_range(0..groups) * limit;
    let end = start + limit;
    if end <= all.len() {
        return all[start..end].to_vec();
    }
    let mut selected = all[start..].to_vec();
    let rest = all[..start].to_vec();
    let need = limit - selected.len();
    selected.extend(pick.nodes(rest, need, rng));
    selected
}

/// Picks among nodes, preferring low load (see the module docs).
struct Picker<'p> {
    policy: &'p SelectionPolicy,
    now_ms: i64,
}

impl Picker<'_> {
    fn load(&self, n: &NodeMeta) -> Option<f64> {
        if n.load_updated_at <= 0 {
            return None;
        }
        let age = self.now_ms - n.load_updated_at;
        if age < 0 || age > self.policy.load_ttl_ms {
            return None;
        }
        Some(n.load_factor.clamp(0.0, 1.0))
    }

    fn one<'a, R: Rng + ?Sized>(
        &self,
        nodes: Vec<&'a NodeMeta>,
        rng: &mut R,
    ) -> Option<&'a NodeMeta> {
        self.nodes(nodes, 1, rng).into_iter().next()
    }

    /// Up to `limit` distinct nodes (0: all of them).
    fn nodes<'a, R: Rng + ?Sized>(
        &self,
        mut nodes: Vec<&'a NodeMeta>,
        limit: usize,
        rng: &mut R,
    ) -> Vec<&'a NodeMeta> {
        let limit = if limit == 0 {
            nodes.len()
        } else {
            limit.min(nodes.len())
        };
        let loads: Vec<Option<f64>> = nodes.iter().map(|n| self.load(n)).collect();
        if !self.policy.load_aware || loads.iter().all(Option::is_none) {
            nodes.shuffle(rng);
            nodes.truncate(limit);
            return nodes;
        }
        let mut weights: Vec<f64> = loads
            .iter()
            .map(|l| (1.0 - l.unwrap_or(UNKNOWN_LOAD)).max(MIN_WEIGHT))
            .collect();
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let total: f64 = weights.iter().sum();
            let mut r = rng.random::<f64>() * total;
            let mut chosen = weights.len() - 1;
            for (i, w) in weights.iter().enumerate() {
                if r < *w {
                    chosen = i;
                    break;
                }
                r -= w;
            }
            out.push(nodes.swap_remove(chosen));
            weights.swap_remove(chosen);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::{BTreeSet, HashMap};

    fn node(id: &str, az: &str, rg: &str) -> NodeMeta {
        NodeMeta {
            node_id: id.into(),
            az: az.into(),
            resource_group: rg.into(),
            endpoint: format!("{id}:18080"),
            ..NodeMeta::default()
        }
    }

    /// 2 zones × 2 groups × 2 nodes, plus a decommissioning node.
    fn cluster() -> Vec<NodeMeta> {
        let mut v = Vec::new();
        for az in ["az1", "az2"] {
            for rg in ["rg1", "rg2"] {
                for i in 0..2 {
                    v.push(node(&format!("{az}-{rg}-{i}"), az, rg));
                }
            }
        }
        let mut leaving = node("leaving", "az1", "rg1");
        leaving
            .tags
            .insert("status".into(), "decommissioning".into());
        v.push(leaving);
        v
    }

    fn filter(limit: i32) -> NodeFilter {
        NodeFilter {
            limit,
            ..NodeFilter::default()
        }
    }

    fn run(strategy: StrategyType, f: &NodeFilter, seed: u64) -> Vec<NodeMeta> {
        let mut rng = StdRng::seed_from_u64(seed);
        select_nodes(
            &cluster(),
            strategy,
            AffinityMode::Soft,
            std::slice::from_ref(f),
            &SelectionPolicy::default(),
            0,
            &mut rng,
        )
        .unwrap()
    }

    fn distinct(v: &[NodeMeta]) -> bool {
        v.iter().map(|n| &n.node_id).collect::<BTreeSet<_>>().len() == v.len()
    }

    #[test]
    fn every_strategy_honours_limit_distinctness_and_decommissioning() {
        use StrategyType::*;
        for s in [
            Random,
            SingleAzSingleRg,
            SingleAzMultiRg,
            MultiAzSingleRg,
            MultiAzMultiRg,
            CrossRegion,
            Custom,
            RandomGroup,
        ] {
            for seed in 0..50 {
                let got = run(s, &filter(2), seed);
                assert!(!got.is_empty() && got.len() <= 2, "{s:?} {got:?}");
                assert!(distinct(&got), "{s:?}");
                assert!(got.iter().all(|n| n.node_id != "leaving"), "{s:?}");
            }
        }
    }

    #[test]
    fn strategies_spread_or_pack_as_named() {
        for seed in 0..100 {
            let azs = |v: &[NodeMeta]| v.iter().map(|n| n.az.clone()).collect::<BTreeSet<_>>();
            let rgs = |v: &[NodeMeta]| {
                v.iter()
                    .map(|n| n.resource_group.clone())
                    .collect::<BTreeSet<_>>()
            };
            let v = run(StrategyType::SingleAzSingleRg, &filter(2), seed);
            assert_eq!((azs(&v).len(), rgs(&v).len(), v.len()), (1, 1, 2));
            let v = run(StrategyType::SingleAzMultiRg, &filter(2), seed);
            assert_eq!((azs(&v).len(), rgs(&v).len()), (1, 2));
            let v = run(StrategyType::MultiAzSingleRg, &filter(2), seed);
            assert_eq!((azs(&v).len(), rgs(&v).len()), (2, 1));
            let v = run(StrategyType::MultiAzMultiRg, &filter(2), seed);
            assert_eq!(azs(&v).len(), 2);
            // Random takes from every candidate: 8 live nodes, limit 3.
            assert_eq!(run(StrategyType::Random, &filter(3), seed).len(), 3);
            // Limit 0 means every candidate.
            assert_eq!(run(StrategyType::Random, &filter(0), seed).len(), 8);
        }
    }

    #[test]
    fn random_group_returns_fixed_groups_of_sorted_ids() {
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            let mut ids: Vec<String> = run(StrategyType::RandomGroup, &filter(3), seed)
                .into_iter()
                .map(|n| n.node_id)
                .collect();
            ids.sort();
            seen.insert(ids);
        }
        // 8 candidates in groups of 3: two full groups; the sorted order makes them fixed.
        let expected: BTreeSet<Vec<String>> = [
            vec!["az1-rg1-0", "az1-rg1-1", "az1-rg2-0"],
            vec!["az1-rg2-1", "az2-rg1-0", "az2-rg1-1"],
        ]
        .into_iter()
        .map(|g| g.into_iter().map(String::from).collect())
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn filters_match_names_regexes_and_tags() {
        let f = NodeFilter {
            az: "az2".into(),
            limit: 0,
            ..NodeFilter::default()
        };
        assert!(
            run(StrategyType::Random, &f, 1)
                .iter()
                .all(|n| n.az == "az2")
        );
        let f = NodeFilter {
            resource_group: "rg[2]".into(),
            limit: 0,
            ..NodeFilter::default()
        };
        let v = run(StrategyType::Random, &f, 1);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|n| n.resource_group == "rg2"));
        // Anchored: `rg` alone as a regex (with a meta character) does not match `rg1`.
        let f = NodeFilter {
            resource_group: "r(g)".into(),
            ..NodeFilter::default()
        };
        assert!(run(StrategyType::Random, &f, 1).is_empty());
        // Tags: every tag must match.
        let mut nodes = cluster();
        nodes[0].tags.insert("disk".into(), "ssd".into());
        let f = NodeFilter {
            tags: [("disk".to_string(), "ssd".to_string())].into(),
            ..NodeFilter::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let v = select_nodes(
            &nodes,
            StrategyType::Random,
            AffinityMode::Soft,
            &[f],
            &SelectionPolicy::default(),
            0,
            &mut rng,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].node_id, nodes[0].node_id);
    }

    #[test]
    fn hard_affinity_refuses_what_soft_affinity_answers_empty() {
        let f = NodeFilter {
            az: "nowhere".into(),
            limit: 3,
            ..NodeFilter::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        for s in [StrategyType::Random, StrategyType::SingleAzSingleRg] {
            let soft = select_nodes(
                &cluster(),
                s,
                AffinityMode::Soft,
                std::slice::from_ref(&f),
                &SelectionPolicy::default(),
                0,
                &mut rng,
            )
            .unwrap();
            assert!(soft.is_empty());
            let hard = select_nodes(
                &cluster(),
                s,
                AffinityMode::Hard,
                std::slice::from_ref(&f),
                &SelectionPolicy::default(),
                0,
                &mut rng,
            );
            assert!(hard.unwrap_err().contains("nowhere"));
        }
    }

    #[test]
    fn load_aware_selection_prefers_idle_nodes() {
        let now = 1_000_000;
        let mut nodes: Vec<NodeMeta> = (0..3).map(|i| node(&format!("n{i}"), "az", "rg")).collect();
        for (n, load) in nodes.iter_mut().zip([0.99, 0.99, 0.0]) {
            n.load_factor = load;
            n.load_updated_at = now - 1_000;
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..1_000 {
            let v = select_nodes(
                &nodes,
                StrategyType::Random,
                AffinityMode::Soft,
                &[filter(1)],
                &SelectionPolicy::default(),
                now,
                &mut rng,
            )
            .unwrap();
            *counts.entry(v[0].node_id.clone()).or_default() += 1;
        }
        assert!(counts["n2"] > 900, "{counts:?}");
        // A stale report counts as unknown: all three equally likely.
        let stale = now + 60_000;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..3_000 {
            let v = select_nodes(
                &nodes,
                StrategyType::Random,
                AffinityMode::Soft,
                &[filter(1)],
                &SelectionPolicy::default(),
                stale,
                &mut rng,
            )
            .unwrap();
            *counts.entry(v[0].node_id.clone()).or_default() += 1;
        }
        assert!(counts.values().all(|c| *c > 800), "{counts:?}");
    }
}
