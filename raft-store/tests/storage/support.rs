//! Builders of entries and commands shared by the storage tests.

use bongsu_proto::model::{ClientMsgId, ConvId, DeviceId, MessageKind, UserId};
use bongsu_raft_store::messaging::{AppendMessage, MessagingView};
use bongsu_raft_store::{Command, Entry, StateMachineStore};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

pub fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub fn append_cmd(conv: u128, sender: u128, cmid: u128, body: &[u8]) -> Command {
    Command::Append(AppendMessage {
        conv_id: ConvId::from_u128(conv),
        sender: UserId::from_u128(sender),
        device: DeviceId::from_u128(1),
        client_msg_id: ClientMsgId::from_u128(cmid),
        kind: MessageKind::Text,
        body: body.to_vec(),
        at_ms: 1_700_000_000_000,
    })
}

/// The messaging state of the group `sm` applies to.
pub fn view(sm: &StateMachineStore) -> MessagingView {
    MessagingView::new(sm.view_store(), sm.group())
}

pub fn entry(term: u64, index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(cmd),
    }
}

/// Entries 1..=n of a group, each an append with a body naming its group and index.
pub fn entries(group: u64, n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|i| {
            entry(
                1,
                i,
                append_cmd(
                    group as u128,
                    7,
                    i as u128,
                    format!("g{group} i{i}").as_bytes(),
                ),
            )
        })
        .collect()
}
