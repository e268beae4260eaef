//! The cluster tests' harness: the test kit's cluster (`bongsu_testkit::cluster`) running this
//! package's `bongsu-node-chaos`, and the node's placement rules applied to recorded shard
//! maps (the kit does not depend on the node's code; these tests do).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{ensure, Result};
use bongsu_node::placement::{check, from_map, NodeDesc, ShardReplicas};
use bongsu_proto::internal::ShardMap;

pub use bongsu_testkit::cluster::{shard_group, Cluster, Spec, META_GROUP};
pub use bongsu_testkit::maps::{replica_counts, MapRecorder, MapVersion};

/// The nodes' log filter in cluster tests.
const LOG_FILTER: &str = "info,openraft=warn,h2=warn,tower=warn";

/// A node binary built with these tests, or `BONGSU_NODE_BIN` to run the tests against
/// another build of the node (an older release, say, to show that a test fails there).
pub fn node_bin(built: &str) -> PathBuf {
    std::env::var_os("BONGSU_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(built))
}

/// `dcs` datacenters of `nodes_per_dc` nodes running `bongsu-node-chaos` (failpoints and
/// fault rules armed), 8 shards of 3 replicas.
pub fn spec(dcs: u8, nodes_per_dc: u8) -> Spec {
    Spec::new(dcs, nodes_per_dc)
        .binary(node_bin(env!("CARGO_BIN_EXE_bongsu-node-chaos")))
        .log_filter(LOG_FILTER)
}

/// `spec` running the plain `bongsu-node`, the binary `make run` and operators run.
pub fn plain(spec: Spec) -> Spec {
    spec.binary(node_bin(env!("CARGO_BIN_EXE_bongsu-node")))
}

/// The shard map as `placement::check` takes it.
pub fn placement_input(map: &ShardMap) -> Result<(Vec<NodeDesc>, Vec<ShardReplicas>)> {
    from_map(map).map_err(anyhow::Error::msg)
}

/// `placement::check` on every recorded version, as one line per violation; also every
/// version whose shard count is not `shards`.
pub fn placement_violations(
    versions: &BTreeMap<u64, MapVersion>,
    shards: u32,
    replicas: u32,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (version, v) in versions {
        if v.map.shard_count != shards || v.map.shards.len() != shards as usize {
            out.push(format!(
                "version {version}: {} shards listed, shard_count {}",
                v.map.shards.len(),
                v.map.shard_count
            ));
        }
        let (nodes, shard_list) = placement_input(&v.map)?;
        out.extend(
            check(&nodes, &shard_list, replicas)
                .into_iter()
                .map(|x| format!("version {version}: {x}")),
        );
    }
    Ok(out)
}

/// What a test learns from the map versions its nodes streamed from `first` to `last`, once
/// the placement rules held in every version and no two nodes streamed different maps under
/// one version (both checked here, failing the test otherwise).
pub struct MapHistory {
    /// The versions from `first` on that some node streamed.
    pub seen: BTreeSet<u64>,
    /// The versions in `first..=last` that no node streamed.
    pub missed: Vec<u64>,
    /// How many versions list a learner (a move in flight).
    pub with_learners: usize,
}

pub fn judge_maps(
    maps: &MapRecorder,
    first: u64,
    last: u64,
    shards: u32,
    replicas: u32,
) -> Result<MapHistory> {
    let versions = maps.versions();
    let violations = placement_violations(&versions, shards, replicas)?;
    ensure!(
        violations.is_empty(),
        "placement broken:\n{}",
        violations.join("\n")
    );
    let conflicts = maps.conflicts();
    ensure!(
        conflicts.is_empty(),
        "nodes streamed different maps under one version:\n{}",
        conflicts.join("\n")
    );
    let seen: BTreeSet<u64> = versions.range(first..).map(|(v, _)| *v).collect();
    let missed = (first..=last).filter(|v| !seen.contains(v)).collect();
    let with_learners = versions
        .values()
        .filter(|v| v.map.shards.iter().any(|s| !s.learners.is_empty()))
        .count();
    Ok(MapHistory {
        seen,
        missed,
        with_learners,
    })
}
