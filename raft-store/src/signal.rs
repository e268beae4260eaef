//! A per-node signal naming the groups whose state machine flagged work for the node, so that
//! the node looks only at those instead of scanning every group. The engine sets it (after a
//! flagged apply batch, after a snapshot install); what the flag means is the state machine's
//! business: the messaging machine flags a batch that added outbox entries (see
//! [`crate::apply`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::GroupId;

/// Which groups on this node have work for the node beyond their own state. A batch whose
/// apply called `Overlay::signal` marks its group once written, and
/// so does every snapshot install (the installed state may hold such work); whoever does the
/// work clears the mark when none is left. Groups never marked are never looked at, so idle
/// groups stay idle.
#[derive(Default)]
pub struct GroupSignal {
    dirty: Mutex<BTreeSet<GroupId>>,
    notify: tokio::sync::Notify,
}

impl GroupSignal {
    pub fn mark(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("group signal lock poisoned")
            .insert(group);
        // Stores a permit when nobody waits, so a mark between two waits is not missed.
        self.notify.notify_one();
    }

    /// Marks the group again without waking the waiter: for a group whose work someone else
    /// (its leader) does, so that it is looked at on the next periodic recheck instead of in
    /// a busy loop.
    pub fn keep(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("group signal lock poisoned")
            .insert(group);
    }

    pub fn clear(&self, group: GroupId) {
        self.dirty
            .lock()
            .expect("group signal lock poisoned")
            .remove(&group);
    }

    pub fn dirty(&self) -> Vec<GroupId> {
        self.dirty
            .lock()
            .expect("group signal lock poisoned")
            .iter()
            .copied()
            .collect()
    }

    /// Waits for the next mark.
    pub async fn marked(&self) {
        self.notify.notified().await
    }
}
