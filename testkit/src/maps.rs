//! The shard-map recorder: every shard map the nodes stream through `WatchShardMap`, kept by
//! version, so that a test can check every version a change went through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{ShardMap, WatchShardMapRequest};
use bongsu_proto::tls::{Role, Security};

use crate::cluster::wait::POLL;

/// Every shard map version some node delivered, as first delivered.
#[derive(Default)]
struct Recorded {
    versions: BTreeMap<u64, MapVersion>,
    /// The newest version each watched node delivered.
    latest: BTreeMap<u64, u64>,
    /// Two nodes that delivered different maps under one version.
    conflicts: Vec<String>,
    /// When a version newer than every one before was first delivered.
    last_change: Option<Instant>,
}

/// One version of the shard map and who delivered it.
#[derive(Debug, Clone)]
pub struct MapVersion {
    /// The map, with each shard's `leader_hint` cleared: that is each node's own view of
    /// leadership, not part of the replicated map.
    pub map: ShardMap,
    pub first_seen: Instant,
    pub seen_by: BTreeSet<u64>,
}

/// Records the shard maps that nodes stream through `WatchShardMap` (the current map, then
/// every change), until dropped. A node that applies several changes at once streams only
/// the last, so versions may be missing; watching several nodes fills most gaps.
pub struct MapRecorder {
    recorded: Arc<Mutex<Recorded>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MapRecorder {
    /// Watches the nodes `(id, internal API address)`.
    pub fn start(nodes: Vec<(u64, String)>) -> MapRecorder {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let tasks = nodes
            .into_iter()
            .map(|(id, addr)| tokio::spawn(watch_map(id, addr, recorded.clone())))
            .collect();
        MapRecorder { recorded, tasks }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().expect("map recorder lock")
    }

    /// Every version delivered so far, in order.
    pub fn versions(&self) -> BTreeMap<u64, MapVersion> {
        self.lock().versions.clone()
    }

    /// The newest version delivered so far.
    pub fn latest(&self) -> Option<MapVersion> {
        self.lock().versions.values().next_back().cloned()
    }

    /// The newest version each watched node delivered.
    pub fn latest_per_node(&self) -> BTreeMap<u64, u64> {
        self.lock().latest.clone()
    }

    /// How long ago the newest version was first delivered.
    pub fn since_last_change(&self) -> Option<Duration> {
        self.lock().last_change.map(|t| t.elapsed())
    }

    /// Versions two nodes delivered with different contents (should never happen).
    pub fn conflicts(&self) -> Vec<String> {
        self.lock().conflicts.clone()
    }

    /// Waits until each of `nodes` watched nodes has delivered its current map.
    pub async fn wait_started(&self, nodes: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.lock().latest.len() < nodes {
            if Instant::now() >= deadline {
                bail!(
                    "only nodes {:?} streamed a shard map within {timeout:?}",
                    self.latest_per_node().keys()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

impl Drop for MapRecorder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Streams node `id`'s shard maps into `recorded`, reconnecting whenever the stream ends.
async fn watch_map(id: u64, api_addr: String, recorded: Arc<Mutex<Recorded>>) {
    loop {
        // No request timeout: the stream lives as long as the test.
        if let Ok(ep) = Security::endpoint(&api_addr) {
            let mut api = NodeApiClient::new(crate::pki::gateway().channel(
                ep.connect_timeout(Duration::from_millis(300)),
                &Role::Node(id).server_name(),
            ));
            if let Ok(r) = api.watch_shard_map(WatchShardMapRequest {}).await {
                let mut stream = r.into_inner();
                while let Ok(Some(map)) = stream.message().await {
                    recorded.lock().expect("map recorder lock").record(id, map);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Recorded {
    /// Records a map node `id` delivered; a node that has not received the map yet (a
    /// newcomer) streams version 0, which is skipped.
    fn record(&mut self, id: u64, mut map: ShardMap) {
        if map.version == 0 {
            return;
        }
        for s in &mut map.shards {
            s.leader_hint = 0;
        }
        self.latest.insert(id, map.version);
        let newest = self.versions.keys().next_back().copied();
        let Some(v) = self.versions.get_mut(&map.version) else {
            let now = Instant::now();
            if newest.is_none_or(|n| map.version > n) {
                self.last_change = Some(now);
            }
            let version = MapVersion {
                first_seen: now,
                seen_by: BTreeSet::from([id]),
                map,
            };
            self.versions.insert(version.map.version, version);
            return;
        };
        v.seen_by.insert(id);
        if v.map != map {
            let first = v.seen_by.iter().next().copied().unwrap_or(0);
            let c = format!(
                "version {}: node {id} delivered {map:?}, node {first} {:?}",
                map.version, v.map
            );
            self.conflicts.push(c);
        }
    }
}

/// How many shards each registered node holds a replica of, as a voter or a learner.
pub fn replica_counts(map: &ShardMap) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = map.nodes.iter().map(|n| (n.node_id, 0)).collect();
    for s in &map.shards {
        let held: BTreeSet<u64> = s.voters.iter().chain(&s.learners).copied().collect();
        for id in held {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}
