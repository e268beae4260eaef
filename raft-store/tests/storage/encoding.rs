//! The bytes of every command and result kind, pinned: log entries and forwarded proposals
//! carry them, so moving a type between modules must not change a single byte.

use bongsu_proto::model::{ClientMsgId, ConvId, ConversationKind, DeviceId, MessageKind, UserId};
use bongsu_proto::ErrorCode;
use bongsu_raft_store::accounts::{AccountCommand, DeviceKind};
use bongsu_raft_store::codec::{current_to_legacy, encode, legacy_to_current};
use bongsu_raft_store::messaging::{
    AppendMessage, ChangeMembers, CreateConversation, MoveCursor, OutboxDone, Prune, UserConv,
};
use bongsu_raft_store::meta::{MetaCommand, NodeState};
use bongsu_raft_store::version::VALUE_FORMAT;
use bongsu_raft_store::{Command, CommandResult, Rejection};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn u(n: u128) -> UserId {
    UserId::from_u128(n)
}

fn c(n: u128) -> ConvId {
    ConvId::from_u128(n)
}

fn commands() -> Vec<(&'static str, Command)> {
    vec![
        (
            "create",
            Command::CreateConversation(CreateConversation {
                conv_id: c(1),
                kind: ConversationKind::Group,
                creator: u(2),
                members: vec![u(3), u(4)],
                at_ms: 1_700_000_000_000,
            }),
        ),
        (
            "change members",
            Command::ChangeMembers(ChangeMembers {
                conv_id: c(1),
                actor: u(2),
                add: vec![u(5)],
                remove: vec![u(3)],
                at_ms: 1_700_000_000_001,
            }),
        ),
        (
            "append",
            Command::Append(AppendMessage {
                conv_id: c(1),
                sender: u(2),
                device: DeviceId::from_u128(6),
                client_msg_id: ClientMsgId::from_u128(7),
                kind: MessageKind::Text,
                body: b"hi".to_vec(),
                at_ms: 1_700_000_000_002,
            }),
        ),
        (
            "move cursor",
            Command::MoveCursor(MoveCursor {
                user: u(2),
                conv_id: c(1),
                seq: 9,
            }),
        ),
        (
            "meta",
            Command::Meta(MetaCommand::SetNodeState {
                node_id: 3,
                state: NodeState::Draining,
            }),
        ),
        (
            "meta record incarnation",
            Command::Meta(MetaCommand::RecordIncarnation {
                node_id: 3,
                incarnation: 0x0102,
                cluster_id: 0xc1,
                adopt_cluster: false,
                admitted: true,
            }),
        ),
        (
            "meta set cluster version",
            Command::Meta(MetaCommand::SetClusterVersion { version: 2 }),
        ),
        (
            "account",
            Command::Account(AccountCommand::AddDevice {
                user_id: u(2),
                device_id: DeviceId::from_u128(6),
                name: "phone".into(),
                kind: DeviceKind::Phone,
                refresh_hash: [8; 32],
                at_ms: 1_700_000_000_003,
            }),
        ),
        (
            "user conv",
            Command::UserConv(UserConv {
                user: u(2),
                conv_id: c(1),
                joined: true,
                version: 11,
            }),
        ),
        (
            "outbox done",
            Command::OutboxDone(OutboxDone {
                delivered: vec![(11, u(2)), (12, u(3))],
            }),
        ),
        (
            "prune",
            Command::Prune(Prune {
                events_before: 300,
                now_ms: 1_700_000_000_004,
            }),
        ),
    ]
}

fn results() -> Vec<(&'static str, CommandResult)> {
    vec![
        (
            "created",
            CommandResult::Created {
                conv_id: c(1),
                existed: true,
            },
        ),
        (
            "members changed",
            CommandResult::MembersChanged { member_count: 3 },
        ),
        (
            "appended",
            CommandResult::Appended {
                seq: 4,
                duplicate: false,
            },
        ),
        ("cursor moved", CommandResult::CursorMoved { seq: 5 }),
        ("account", CommandResult::Account { user_id: u(2) }),
        ("user indexed", CommandResult::UserIndexed { changed: true }),
        (
            "outbox cleared",
            CommandResult::OutboxCleared { removed: 2 },
        ),
        ("map changed", CommandResult::MapChanged { version: 6 }),
        (
            "rejected",
            CommandResult::Rejected(Rejection {
                code: ErrorCode::NotMember,
                reason: "no".into(),
            }),
        ),
        ("empty", CommandResult::Empty),
        (
            "pruned",
            CommandResult::Pruned {
                removed: 1024,
                events_from: 300,
                more: true,
            },
        ),
    ]
}

/// Encoded with `codec::encode` (postcard and its CRC) while every messaging command was a
/// variant with fields of its own, before each got its own type in `messaging::command`.
/// `prune` was added later, at the end (variant 8: the ninth command), and the meta command
/// `SetClusterVersion` (meta variant 7).
const PINNED_COMMANDS: [(&str, &str); 11] = [
    ("create", "0000000000000000000000000000000001010000000000000000000000000000000202000000000000000000000000000000030000000000000000000000000000000480d095ffbc319a5bfa72"),
    ("change members", "0100000000000000000000000000000001000000000000000000000000000000020100000000000000000000000000000005010000000000000000000000000000000381d095ffbc3120511d2f"),
    ("append", "02000000000000000000000000000000010000000000000000000000000000000200000000000000000000000000000006000000000000000000000000000000070002686982d095ffbc31d54a1477"),
    ("move cursor", "03000000000000000000000000000000020000000000000000000000000000000109167de449"),
    ("meta", "0402030170ff88f1"),
    ("meta record incarnation", "0406038202c1010001c963eedd"),
    ("meta set cluster version", "04070225860759"),
    ("account", "050300000000000000000000000000000002000000000000000000000000000000060570686f6e6500080808080808080808080808080808080808080808080808080808080808080883d095ffbc3155fc2cac"),
    ("user conv", "060000000000000000000000000000000200000000000000000000000000000001010b4ba9903e"),
    ("outbox done", "07020b000000000000000000000000000000020c00000000000000000000000000000003ae966be9"),
    ("prune", "08ac0284d095ffbc313eb8d016"),
];

const PINNED_RESULTS: [(&str, &str); 11] = [
    ("created", "0000000000000000000000000000000001019ace0709"),
    ("members changed", "01030472cbc1"),
    ("appended", "02040078c8a998"),
    ("cursor moved", "0305b3b59e1a"),
    ("account", "04000000000000000000000000000000025eb7e954"),
    ("user indexed", "05012cd6a94b"),
    ("outbox cleared", "060255d48df9"),
    ("map changed", "07060d21fbe7"),
    ("rejected", "0800026e6f5252a5d3"),
    ("empty", "092957deab"),
    ("pruned", "0a8008ac0201a8ec58f1"),
];

/// The pins are release 1's stored bytes (postcard and its CRC). This release stores the same
/// postcard behind a format byte (ARCHITECTURE.md invariant 11); converted back, it must be
/// exactly the pinned bytes, so a value of release 1 and of this one mean the same.
fn assert_pinned<T: serde::Serialize>(cases: Vec<(&'static str, T)>, pinned: &[(&str, &str)]) {
    let got: Vec<(&str, String)> = cases
        .into_iter()
        .map(|(name, value)| {
            let stored = encode(&value);
            assert_eq!(stored[0], VALUE_FORMAT, "{name}");
            let legacy = current_to_legacy(&stored).expect("this release's value converts");
            assert_eq!(
                legacy_to_current(&legacy).as_deref(),
                Some(&stored[..]),
                "{name}"
            );
            (name, hex(&legacy))
        })
        .collect();
    let want: Vec<(&str, String)> = pinned
        .iter()
        .map(|(name, h)| (*name, h.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn commands_encode_as_pinned() {
    assert_pinned(commands(), &PINNED_COMMANDS);
}

#[test]
fn results_encode_as_pinned() {
    assert_pinned(results(), &PINNED_RESULTS);
}
