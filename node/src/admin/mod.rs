//! The admin API: cluster init and join, status, membership, and the node-to-node calls
//! (meta proposals, outbox deliveries, leader transfer). The gRPC service is here; what it
//! does lives with its concern: [`init`] (bootstrap), [`status`] (status, readiness,
//! safe-to-stop), [`membership`] (drain and remove).

mod init;
mod membership;
mod status;

use std::sync::Arc;

use bongsu_proto::internal::admin_server::Admin;
use bongsu_proto::internal::*;
use bongsu_proto::ErrorCode;
use bongsu_raft_store::meta::{MetaCommand, NodeState};
use tonic::{Request, Response, Status};

use crate::cluster::identity;
use crate::errors::{NodeError, Result};
use crate::node::Node;

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let version = self.node.init_cluster(req.into_inner()).await?;
        Ok(Response::new(InitReply {
            shard_map_version: version,
        }))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        // A node registers (and re-registers its addresses) only under its own id.
        let claimed = req.get_ref().node.as_ref().map_or(0, |n| n.node_id);
        crate::links::check_claim(&req, claimed)?;
        let req = req.into_inner();
        let id = req
            .node
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("node: missing"))?;
        if id.node_id == 0 || id.dc.is_empty() || id.raft_addr.is_empty() {
            return Err(NodeError::rejected(
                ErrorCode::InvalidArgument,
                "node: needs node_id, dc and raft_addr",
            )
            .into());
        }
        let cluster_id = self.node.admit_join(&req).await?;
        let version = self
            .node
            .propose_meta(MetaCommand::RegisterNode(init::record(id)))
            .await?;
        Ok(Response::new(JoinReply {
            shard_map_version: version,
            cluster_id: cluster_id.to_be_bytes().to_vec(),
        }))
    }

    async fn adopt(&self, req: Request<AdoptRequest>) -> Result<Response<AdoptReply>, Status> {
        let cluster_id = crate::identity::id16(&req.into_inner().cluster_id, "cluster_id")?;
        self.node.adopt(cluster_id)?;
        Ok(Response::new(AdoptReply {}))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(self.node.status()))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderReply>, Status> {
        let r = req.into_inner();
        let leader = self.node.transfer_leader(r.group, r.to_node).await?;
        Ok(Response::new(TransferLeaderReply { leader }))
    }

    async fn move_replica(
        &self,
        req: Request<MoveReplicaRequest>,
    ) -> Result<Response<MoveReplicaReply>, Status> {
        let r = req.into_inner();
        let voters = self
            .node
            .move_replica(r.group, r.from_node, r.to_node)
            .await?;
        Ok(Response::new(MoveReplicaReply { voters }))
    }

    async fn prune(&self, req: Request<PruneRequest>) -> Result<Response<PruneReply>, Status> {
        let r = req.into_inner();
        let (removed, events_from, more) =
            crate::retention::prune_once(&self.node, r.group, r.events_before).await?;
        Ok(Response::new(PruneReply {
            removed,
            events_from,
            more,
        }))
    }

    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignReply>, Status> {
        let r = req.into_inner();
        self.node
            .campaign(r.group, std::time::Duration::from_millis(r.delay_ms))?;
        Ok(Response::new(CampaignReply {}))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        let node_id = req.into_inner().node_id;
        self.node.check_drain(node_id)?;
        self.node
            .propose_meta(MetaCommand::SetNodeState {
                node_id,
                state: NodeState::Draining,
            })
            .await?;
        Ok(Response::new(DrainReply {
            state: NodeState::Draining.as_str().into(),
        }))
    }

    async fn remove(&self, req: Request<RemoveRequest>) -> Result<Response<RemoveReply>, Status> {
        let node_id = req.into_inner().node_id;
        self.node.remove_node(node_id).await?;
        Ok(Response::new(RemoveReply {}))
    }

    async fn safe_to_stop(
        &self,
        req: Request<SafeToStopRequest>,
    ) -> Result<Response<SafeToStopReply>, Status> {
        Ok(Response::new(self.node.safe_to_stop(&req.into_inner())?))
    }

    async fn ready(&self, _: Request<ReadyRequest>) -> Result<Response<ReadyReply>, Status> {
        Ok(Response::new(self.node.ready().await))
    }

    async fn group_digests(
        &self,
        _: Request<GroupDigestsRequest>,
    ) -> Result<Response<GroupDigestsReply>, Status> {
        let mut groups = Vec::new();
        for h in self.node.groups() {
            let (applied_index, digest) = h.sm.digest().map_err(NodeError::from)?;
            let last_log_index = h.raft.metrics().borrow().last_log_index.unwrap_or(0);
            groups.push(GroupDigest {
                group: h.group,
                applied_index,
                digest,
                last_log_index,
            });
        }
        Ok(Response::new(GroupDigestsReply {
            node_id: self.node.id(),
            groups,
        }))
    }

    async fn set_failpoint(
        &self,
        req: Request<SetFailpointRequest>,
    ) -> Result<Response<SetFailpointReply>, Status> {
        let r = req.into_inner();
        bongsu_raft_store::failpoints::set(&r.name, r.enabled)
            .map_err(|e| NodeError::rejected(ErrorCode::FailedPrecondition, e))?;
        tracing::warn!(failpoint = %r.name, enabled = r.enabled, "failpoint switched");
        Ok(Response::new(SetFailpointReply {}))
    }

    async fn set_faults(
        &self,
        req: Request<SetFaultsRequest>,
    ) -> Result<Response<SetFaultsReply>, Status> {
        let r = req.into_inner();
        self.node.faults.set(&r.rules)?;
        tracing::warn!(rules = r.rules.len(), "network fault rules replaced");
        Ok(Response::new(SetFaultsReply {}))
    }

    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<NodeIdentity>, Status> {
        Ok(Response::new(identity(&self.node)))
    }

    async fn meta_propose(
        &self,
        req: Request<MetaProposeRequest>,
    ) -> Result<Response<MetaProposeReply>, Status> {
        let cmd: MetaCommand = postcard::from_bytes(&req.into_inner().command).map_err(|e| {
            NodeError::rejected(ErrorCode::InvalidArgument, format!("command: {e}"))
        })?;
        let version = self.node.propose_meta(cmd).await?;
        Ok(Response::new(MetaProposeReply { version }))
    }

    async fn deliver(
        &self,
        req: Request<DeliverRequest>,
    ) -> Result<Response<DeliverReply>, Status> {
        let req = req.into_inner();
        let bad = |e: bongsu_proto::ModelError| NodeError::rejected(e.code, e.to_string());
        let changes = req
            .deliveries
            .iter()
            .map(|d| {
                Ok(crate::outbox::UserConvChange {
                    user: bongsu_proto::model::UserId::try_from(d.user.as_slice()).map_err(bad)?,
                    conv: bongsu_proto::model::ConvId::try_from(d.conv_id.as_slice())
                        .map_err(bad)?,
                    joined: d.joined,
                    version: d.version,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.node.apply_deliveries(req.shard, &changes).await?;
        Ok(Response::new(DeliverReply {}))
    }
}
