//! Who may call what on a node's three ports (ARCHITECTURE.md invariant 12).
//!
//! Every port speaks mutual TLS ([`bongsu_proto::tls`]); these policies then decide by the
//! role the caller's certificate names. The handlers check what a role alone cannot: that a
//! node sends Raft traffic and joins only under its own id (`transport::server`,
//! `admin::membership`).

use bongsu_proto::tls::{Credentials, Role, Security};

use crate::config::NodeConfig;
use crate::errors::{NodeError, Result};

pub const RAFT_SERVICE: &str = "bongsu.internal.v1.RaftTransport";
pub const API_SERVICE: &str = "bongsu.internal.v1.NodeApi";
pub const ADMIN_SERVICE: &str = "bongsu.internal.v1.Admin";

/// Admin calls only nodes make on each other: registering, adopting into a new cluster,
/// campaigning on a leader's behalf, proposing meta commands through the meta leader, and
/// delivering outbox events.
const NODE_ONLY: &[&str] = &["Join", "Adopt", "Campaign", "MetaPropose", "Deliver"];
/// Admin calls both nodes and operators make.
const SHARED: &[&str] = &["Status", "Hello", "TransferLeader", "MoveReplica"];
/// Admin calls only an operator makes.
const OPERATOR_ONLY: &[&str] = &[
    "Init",
    "Drain",
    "Remove",
    "SafeToStop",
    "Ready",
    "GroupDigests",
    "SetFailpoint",
    "SetFaults",
    "Prune",
];

/// The credentials (or the plain text) the node's config asks for.
pub fn security(cfg: &NodeConfig) -> Result<Security> {
    match &cfg.tls.dir {
        Some(dir) => Credentials::load(dir, Some(Role::Node(cfg.node_id)))
            .map(Security::Mutual)
            .map_err(|e| NodeError::Config {
                field: "tls.dir",
                reason: e.to_string(),
            }),
        None if cfg.tls.insecure_plaintext => {
            tracing::warn!("INSECURE: plain text on every port, callers unauthenticated (tls.insecure_plaintext; a local development cluster only)");
            Ok(Security::Plaintext)
        }
        None => Err(NodeError::Config {
            field: "tls.dir",
            reason: "required".into(),
        }),
    }
}

fn split(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

/// Whether `role` may call `path` (`/package.Service/Method`) on any of a node's ports.
pub fn allowed(path: &str, role: &Role) -> bool {
    let Some((service, method)) = split(path) else {
        return false;
    };
    match (service, role) {
        (RAFT_SERVICE, Role::Node(_)) => true,
        // Gateways serve users; nothing else writes messages or reads conversations.
        (API_SERVICE, Role::Gateway) => true,
        (ADMIN_SERVICE, Role::Node(_)) => NODE_ONLY.contains(&method) || SHARED.contains(&method),
        (ADMIN_SERVICE, Role::Operator) => {
            OPERATOR_ONLY.contains(&method) || SHARED.contains(&method)
        }
        _ => false,
    }
}

/// The node id a request's peer proved, if it is a node; `Ok(None)` on a plain-text
/// development cluster, which knows no identities.
pub fn peer_node<T>(req: &tonic::Request<T>) -> std::result::Result<Option<u64>, tonic::Status> {
    match bongsu_proto::tls::peer(req) {
        Some(p) => match p.role {
            None => Ok(None),
            Some(Role::Node(id)) => Ok(Some(id)),
            Some(other) => Err(NodeError::Rejected {
                code: bongsu_proto::ErrorCode::PermissionDenied,
                reason: format!("{other} is not a node"),
            }
            .into()),
        },
        None => Err(NodeError::Rejected {
            code: bongsu_proto::ErrorCode::Unauthenticated,
            reason: "the server does not know who is calling".into(),
        }
        .into()),
    }
}

/// Refuses a request whose node-certified peer claims to be another node.
pub fn check_claim<T>(
    req: &tonic::Request<T>,
    claimed: u64,
) -> std::result::Result<(), tonic::Status> {
    match peer_node(req)? {
        Some(id) if id != claimed => Err(check_claim_status(id, claimed)),
        _ => Ok(()),
    }
}

/// The refusal of a node (`peer`, as its certificate names it) speaking as another.
pub fn check_claim_status(peer: u64, claimed: u64) -> tonic::Status {
    NodeError::Rejected {
        code: bongsu_proto::ErrorCode::PermissionDenied,
        reason: format!("the caller's certificate names node {peer}, not node {claimed}"),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(service: &str, method: &str) -> String {
        format!("/{service}/{method}")
    }

    #[test]
    fn each_role_reaches_only_its_calls() {
        let node = Role::Node(2);
        for m in ["Exchange", "Ping"] {
            assert!(allowed(&path(RAFT_SERVICE, m), &node));
            assert!(!allowed(&path(RAFT_SERVICE, m), &Role::Gateway));
            assert!(!allowed(&path(RAFT_SERVICE, m), &Role::Operator));
        }
        for m in ["Write", "Read", "WatchShardMap", "GetAccount"] {
            assert!(allowed(&path(API_SERVICE, m), &Role::Gateway));
            assert!(!allowed(&path(API_SERVICE, m), &Role::Operator), "{m}");
            assert!(!allowed(&path(API_SERVICE, m), &node), "{m}");
        }
        for m in NODE_ONLY {
            assert!(allowed(&path(ADMIN_SERVICE, m), &node));
            assert!(!allowed(&path(ADMIN_SERVICE, m), &Role::Operator), "{m}");
            assert!(!allowed(&path(ADMIN_SERVICE, m), &Role::Gateway), "{m}");
        }
        for m in OPERATOR_ONLY {
            assert!(allowed(&path(ADMIN_SERVICE, m), &Role::Operator));
            assert!(!allowed(&path(ADMIN_SERVICE, m), &node), "{m}");
            assert!(!allowed(&path(ADMIN_SERVICE, m), &Role::Gateway), "{m}");
        }
        assert!(!allowed(
            "/bongsu.internal.v1.Admin/Unknown",
            &Role::Operator
        ));
        assert!(!allowed("garbage", &node));
    }
}
