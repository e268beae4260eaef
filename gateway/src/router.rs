//! Routing to shard leaders: the shard map (watched on any node), leader hints, lazily
//! connected channels, and one retry loop that every node call goes through.
//!
//! The gateway keeps nothing durable here (ARCHITECTURE.md invariant 3): the map is re-learned from
//! any node after a restart, and hints are only hints. Retrying is safe because every write the
//! gateway sends is idempotent (client message ids, conversation ids chosen by the client,
//! refresh rotations that accept their own retry).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    write_request, GetAccountReply, GetAccountRequest, ResolveHandleRequest, ShardMap,
    WatchShardMapRequest, WriteReply, WriteRequest,
};
use bongsu_proto::model::{handle_key, shard_of, UserId};
use bongsu_proto::tls::{Role, Security};
use bongsu_proto::ErrorCode;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::config::Config;
use crate::errors::{ApiError, Result, CODE_KEY};

use bongsu_proto::model::LEADER_ADDR_KEY;
/// A node that does not answer a TCP connect this fast is treated as down; another replica
/// is tried within the same request deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// First and largest pause between attempts of one call.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Largest inbound message from a node (a page of 1000 messages of 64 KiB fits).
const MAX_DECODE: usize = 128 * 1024 * 1024;

/// The shard map as the gateway uses it: the raw map plus lookups built once per version.
#[derive(Debug, Default)]
pub struct MapView {
    pub map: ShardMap,
    addr_of: HashMap<u64, String>,
    dc_of: HashMap<u64, String>,
    shards: HashMap<u32, usize>,
}

impl MapView {
    fn new(map: ShardMap) -> Self {
        let addr_of = map
            .nodes
            .iter()
            .filter(|n| !n.api_addr.is_empty())
            .map(|n| (n.node_id, n.api_addr.clone()))
            .collect();
        let dc_of = map
            .nodes
            .iter()
            .map(|n| (n.node_id, n.dc.clone()))
            .collect();
        let shards = map
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.shard, i))
            .collect();
        MapView {
            map,
            addr_of,
            dc_of,
            shards,
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.map.shard_count
    }

    /// Api addresses to try for a write or linearizable read on `shard`: the map's leader hint
    /// first, then the other voters.
    fn leader_candidates(&self, shard: u32) -> Vec<String> {
        let Some(entry) = self.shards.get(&shard).map(|&i| &self.map.shards[i]) else {
            return Vec::new();
        };
        let mut ids = Vec::with_capacity(entry.voters.len() + 1);
        if entry.leader_hint != 0 {
            ids.push(entry.leader_hint);
        }
        ids.extend(
            entry
                .voters
                .iter()
                .copied()
                .filter(|&v| v != entry.leader_hint),
        );
        ids.iter()
            .filter_map(|id| self.addr_of.get(id).cloned())
            .collect()
    }

    /// Api addresses of every replica of `shard` (voters and learners), those in `dc` first:
    /// any replica can stream a shard's applied entries.
    pub fn replicas(&self, shard: u32, dc: &str) -> Vec<String> {
        let Some(entry) = self.shards.get(&shard).map(|&i| &self.map.shards[i]) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entry
            .voters
            .iter()
            .chain(entry.learners.iter())
            .copied()
            .collect();
        ids.sort_by_key(|id| self.dc_of.get(id).map(String::as_str) != Some(dc));
        ids.dedup();
        ids.iter()
            .filter_map(|id| self.addr_of.get(id).cloned())
            .collect()
    }

    fn all_addrs(&self) -> Vec<String> {
        self.addr_of.values().cloned().collect()
    }
}

/// Finds shard leaders and reaches them.
pub struct Router {
    config: Config,
    map: watch::Receiver<Arc<MapView>>,
    /// The last address that answered as leader of a shard, or that a node named as leader.
    hints: Mutex<HashMap<u32, String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Mutual TLS to the nodes, as a gateway (ARCHITECTURE.md invariant 12).
    security: Security,
}

impl Router {
    /// Starts watching the shard map in the background and returns at once.
    pub fn start(config: Config, security: Security) -> Arc<Router> {
        let (tx, rx) = watch::channel(Arc::new(MapView::default()));
        let router = Arc::new(Router {
            config,
            security,
            map: rx,
            hints: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
        });
        tokio::spawn(watch_map(Arc::downgrade(&router), tx));
        router
    }

    /// The newest shard map (empty until the first one arrives).
    pub fn map(&self) -> Arc<MapView> {
        self.map.borrow().clone()
    }

    /// Changes of the shard map, for those that derive state from it (signing keys).
    pub fn watch(&self) -> watch::Receiver<Arc<MapView>> {
        self.map.clone()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms.max(1))
    }

    /// The shard count, waiting (within the request deadline) for the first shard map.
    pub async fn shard_count(&self) -> Result<u32> {
        let count = self.map().shard_count();
        if count > 0 {
            return Ok(count);
        }
        let mut rx = self.map.clone();
        let waited = tokio::time::timeout(self.request_timeout(), async {
            rx.wait_for(|m| m.shard_count() > 0)
                .await
                .map(|m| m.shard_count())
        })
        .await;
        match waited {
            Ok(Ok(n)) => Ok(n),
            _ => Err(ApiError::unavailable("the shard map is not known yet")),
        }
    }

    /// The shard that owns a conversation, a user, or a handle key.
    pub async fn shard(&self, id: &[u8; 16]) -> Result<u32> {
        Ok(shard_of(id, self.shard_count().await?))
    }

    /// A client for one node address; the channel connects on first use and reconnects by
    /// itself, so it is cached for the life of the gateway.
    pub fn client(&self, addr: &str) -> Result<NodeApiClient<Channel>> {
        let mut channels = self.channels.lock().expect("channel cache lock poisoned");
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let ep = Security::endpoint(addr)
                    .map_err(|e| ApiError::unavailable(format!("bad node address {addr}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = self.security.channel(ep, &Role::any_node());
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(NodeApiClient::new(channel).max_decoding_message_size(MAX_DECODE))
    }

    fn hint(&self, shard: u32) -> Option<String> {
        self.hints
            .lock()
            .expect("hint lock poisoned")
            .get(&shard)
            .cloned()
    }

    fn set_hint(&self, shard: u32, addr: Option<&str>) {
        let mut hints = self.hints.lock().expect("hint lock poisoned");
        match addr {
            Some(a) => hints.insert(shard, a.to_string()),
            None => hints.remove(&shard),
        };
    }

    /// Calls the leader of `shard` with `op`, retrying on `NOT_LEADER`, `UNAVAILABLE` and
    /// transport errors (with exponential backoff and jitter) until the request deadline.
    /// Any other error is the answer and is returned as is.
    pub async fn call<T, F, Fut>(&self, shard: u32, op: F) -> Result<T>
    where
        F: Fn(NodeApiClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.request_timeout();
        let mut backoff = BACKOFF_MIN;
        let mut attempt = 0usize;
        let mut last_err = ApiError::unavailable(format!("no node of shard {shard} is known"));
        let mut named: Option<String> = None;
        let mut redirected = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::unavailable(format!(
                    "shard {shard} did not answer in time: {}",
                    last_err.message
                )));
            }
            let addr = match named.take().or_else(|| self.hint(shard)) {
                Some(a) => Some(a),
                None => {
                    let c = self.map().leader_candidates(shard);
                    (!c.is_empty()).then(|| c[attempt % c.len()].clone())
                }
            };
            attempt += 1;
            if let Some(addr) = addr {
                // One hung node must not use the whole deadline: give each attempt a share.
                let per_try = (deadline - now).min(self.request_timeout() / 2 + BACKOFF_MAX);
                let res = match self.client(&addr) {
                    Ok(client) => match tokio::time::timeout(per_try, op(client)).await {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded("node attempt timed out")),
                    },
                    Err(e) => Err(tonic::Status::unavailable(e.message)),
                };
                match res {
                    Ok(reply) => {
                        if self.hint(shard).as_deref() != Some(addr.as_str()) {
                            self.set_hint(shard, Some(&addr));
                        }
                        return Ok(reply.into_inner());
                    }
                    Err(status) => {
                        let leader = leader_addr(&status);
                        let err = ApiError::from(status);
                        match err.code {
                            ErrorCode::NotLeader => {
                                self.set_hint(shard, None);
                                if let Some(l) = leader.filter(|l| *l != addr) {
                                    tracing::debug!(shard, from = %addr, to = %l, "not leader");
                                    named = Some(l);
                                    // A named leader is tried at once, but two nodes with
                                    // stale views must not bounce a request in a tight loop.
                                    if !redirected {
                                        redirected = true;
                                        last_err = err;
                                        continue;
                                    }
                                }
                            }
                            ErrorCode::Unavailable => {
                                if self.hint(shard).as_deref() == Some(addr.as_str()) {
                                    self.set_hint(shard, None);
                                }
                            }
                            _ => return Err(err),
                        }
                        tracing::debug!(shard, node = %addr, error = %err, "retrying");
                        redirected = false;
                        last_err = err;
                    }
                }
            } else {
                // No map yet: wait for it, or for the deadline.
                let mut rx = self.map.clone();
                let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
                continue;
            }
            let pause = jitter(backoff).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Typed calls used by more than one part of the gateway, each routed by the id that
/// decides its shard.
impl Router {
    /// Applies one write command on the shard of `key` (a conversation, a user, or a handle
    /// key).
    pub async fn write(&self, key: &[u8; 16], cmd: write_request::Command) -> Result<WriteReply> {
        let shard = self.shard(key).await?;
        let req = WriteRequest { command: Some(cmd) };
        self.call(shard, |mut c| {
            let req = req.clone();
            async move { c.write(req).await }
        })
        .await
    }

    /// The account of `user`, or `None` when there is none.
    pub async fn account(&self, user: &UserId) -> Result<Option<GetAccountReply>> {
        let shard = self.shard(&user.0).await?;
        let req = GetAccountRequest {
            user_id: user.0.to_vec(),
        };
        let reply = self
            .call(shard, |mut c| {
                let req = req.clone();
                async move { c.get_account(req).await }
            })
            .await?;
        Ok(reply.found.then_some(reply))
    }

    /// Who owns a normalized handle. A claim that was never confirmed (its sign-up did not
    /// finish) belongs to nobody yet: looking people up must not return an account that may
    /// not exist.
    pub async fn resolve_handle(&self, handle: &str) -> Result<Option<UserId>> {
        let shard = self.shard(&handle_key(handle)).await?;
        let req = ResolveHandleRequest {
            handle: handle.to_string(),
        };
        let reply = self
            .call(shard, |mut c| {
                let req = req.clone();
                async move { c.resolve_handle(req).await }
            })
            .await?;
        if reply.user_id.is_empty() || !reply.confirmed {
            return Ok(None);
        }
        UserId::try_from(reply.user_id.as_slice())
            .map(Some)
            .map_err(|e| ApiError::unavailable(format!("a node sent a bad user id: {e}")))
    }
}

/// A random pause between half and all of `d`, so that gateways retrying after the same
/// failure do not arrive together.
pub fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

fn leader_addr(s: &tonic::Status) -> Option<String> {
    let is_not_leader = s
        .metadata()
        .get(CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c == ErrorCode::NotLeader.as_str());
    if !is_not_leader {
        return None;
    }
    s.metadata()
        .get(LEADER_ADDR_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

/// Keeps one WatchShardMap stream open on some node and publishes every map; when the stream
/// fails, moves to the next known node. Ends when the router is dropped.
async fn watch_map(router: std::sync::Weak<Router>, tx: watch::Sender<Arc<MapView>>) {
    let mut next = 0usize;
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(r) = router.upgrade() else { return };
        // Configured nodes first, then every node the map has taught us about.
        let mut addrs = r.config.nodes.clone();
        for a in tx.borrow().all_addrs() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.is_empty() {
            tracing::error!("no node addresses configured");
            return;
        }
        let addr = addrs[next % addrs.len()].clone();
        next += 1;
        let client = r.client(&addr);
        drop(r);
        let stream = match client {
            Ok(mut c) => c.watch_shard_map(WatchShardMapRequest {}).await,
            Err(e) => Err(tonic::Status::unavailable(e.message)),
        };
        match stream {
            Ok(resp) => {
                let mut s = resp.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(map)) => {
                            backoff = BACKOFF_MIN;
                            tracing::debug!(node = %addr, version = map.version, "shard map");
                            if tx.send(Arc::new(MapView::new(map))).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::info!(node = %addr, "shard map stream ended");
                            break;
                        }
                        Err(e) => {
                            tracing::info!(node = %addr, error = %e, "shard map stream failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(node = %addr, error = %e, "cannot watch the shard map"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use bongsu_proto::internal::{NodeEntry, ShardEntry};

    use super::*;

    fn node(id: u64, dc: &str) -> NodeEntry {
        NodeEntry {
            node_id: id,
            dc: dc.to_string(),
            api_addr: format!("10.0.0.{id}:1"),
            ..Default::default()
        }
    }

    fn view() -> MapView {
        MapView::new(ShardMap {
            version: 1,
            shard_count: 2,
            nodes: vec![
                node(1, "dc1"),
                node(2, "dc2"),
                node(3, "dc3"),
                node(4, "dc2"),
            ],
            shards: vec![ShardEntry {
                shard: 1,
                voters: vec![1, 2, 3],
                learners: vec![4],
                leader_hint: 3,
            }],
            signing_keys: vec![],
        })
    }

    #[test]
    fn the_leader_hint_comes_first_then_the_other_voters() {
        let v = view();
        assert_eq!(
            v.leader_candidates(1),
            vec!["10.0.0.3:1", "10.0.0.1:1", "10.0.0.2:1"]
        );
        assert!(v.leader_candidates(0).is_empty());
    }

    #[test]
    fn replicas_in_the_own_datacenter_come_first() {
        let v = view();
        let r = v.replicas(1, "dc2");
        assert_eq!(&r[..2], &["10.0.0.2:1", "10.0.0.4:1"]);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn the_leader_address_is_read_only_from_not_leader() {
        let mut s = tonic::Status::unavailable("x");
        s.metadata_mut()
            .insert(CODE_KEY, "NOT_LEADER".parse().expect("ascii"));
        s.metadata_mut()
            .insert(LEADER_ADDR_KEY, "10.0.0.9:1".parse().expect("ascii"));
        assert_eq!(leader_addr(&s).as_deref(), Some("10.0.0.9:1"));
        let mut s = tonic::Status::unavailable("x");
        s.metadata_mut()
            .insert(LEADER_ADDR_KEY, "10.0.0.9:1".parse().expect("ascii"));
        assert_eq!(leader_addr(&s), None);
    }
}
