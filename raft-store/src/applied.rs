//! A group's applied state: the last applied log id and membership, under `sm` tag `00`
//! ([`keys::TAG_APPLIED`]), written in the same atomic batch as the state it describes, so
//! after a crash the state is a consistent prefix of the log.

use openraft::StoredMembership;
use serde::{Deserialize, Serialize};

use crate::codec::decode;
use crate::errors::Result;
use crate::keys::{self, CF_SM};
use crate::store::Store;
use crate::{GroupId, LogId, NodeId, NodeInfo};

/// The last applied log id and membership, written in the same batch as the state they
/// describe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
}

/// The group's applied state as stored; the default before anything was applied.
pub(crate) fn read(store: &Store, group: GroupId) -> Result<AppliedState> {
    let key = keys::applied_key(group);
    Ok(match store.get(group, CF_SM, &key)? {
        None => AppliedState::default(),
        Some(v) => decode(group, &key, "applied state", &v)?,
    })
}
