//! Account state machine tests on a real RocksDB.

use bongsu_proto::model::{DeviceId, UserId};
use bongsu_proto::ErrorCode;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::messaging::CommandResult;
use crate::{Command, Entry, SmConfig, StateMachineStore, Store, StoreOptions};

struct H {
    _dir: tempfile::TempDir,
    sm: StateMachineStore,
    index: u64,
}

impl H {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let sm = store.state_machine(5, SmConfig::default());
        Self {
            _dir: dir,
            sm,
            index: 0,
        }
    }

    async fn run(&mut self, c: AccountCommand) -> CommandResult {
        self.index += 1;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Command::Account(c)),
        };
        self.sm.apply(vec![e]).await.unwrap().pop().unwrap()
    }

    fn view(&self) -> AccountView {
        AccountView::new(self.sm.view_store(), 5)
    }
}

fn code(r: CommandResult) -> ErrorCode {
    match r {
        CommandResult::Rejected(r) => r.code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const ALICE: UserId = UserId([0xa1; 16]);
const BOB: UserId = UserId([0xb0; 16]);
const PHONE: DeviceId = DeviceId([1; 16]);
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

#[tokio::test]
async fn handles_are_claimed_once_and_normalized() {
    let mut h = H::new();
    let claim = |handle: &str, user| AccountCommand::ClaimHandle {
        handle: handle.into(),
        user_id: user,
    };
    assert_eq!(
        h.run(claim("Minji", ALICE)).await,
        CommandResult::Account { user_id: ALICE }
    );
    assert_eq!(
        h.run(claim("minji", ALICE)).await,
        CommandResult::Account { user_id: ALICE },
        "a retry"
    );
    assert_eq!(
        code(h.run(claim("MINJI", BOB)).await),
        ErrorCode::HandleTaken
    );
    assert_eq!(
        code(h.run(claim("no spaces", BOB)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(h.view().handle_owner("minji").unwrap(), Some(ALICE));
    assert_eq!(h.view().handle_owner("nobody").unwrap(), None);
    assert_ne!(handle_key("minji"), handle_key("minji2"));
}

#[tokio::test]
async fn devices_sign_in_rotate_and_revoke() {
    let mut h = H::new();
    let add = |hash: [u8; 32]| AccountCommand::AddDevice {
        user_id: ALICE,
        device_id: PHONE,
        name: "phone".into(),
        kind: DeviceKind::Phone,
        refresh_hash: hash,
        at_ms: 1,
    };
    assert_eq!(code(h.run(add([1; 32])).await), ErrorCode::UnknownUser);
    let create = AccountCommand::CreateAccount {
        user_id: ALICE,
        handle: "minji".into(),
        password_hash: HASH.into(),
        at_ms: 1,
    };
    assert_eq!(
        h.run(create.clone()).await,
        CommandResult::Account { user_id: ALICE }
    );
    assert_eq!(
        h.run(create).await,
        CommandResult::Account { user_id: ALICE },
        "a retry"
    );
    let plain = AccountCommand::CreateAccount {
        user_id: BOB,
        handle: "bob".into(),
        password_hash: "hunter2".into(),
        at_ms: 1,
    };
    assert_eq!(
        code(h.run(plain).await),
        ErrorCode::InvalidArgument,
        "only hashes are stored"
    );

    h.run(add([1; 32])).await;
    assert_eq!(
        h.run(add([1; 32])).await,
        CommandResult::Account { user_id: ALICE },
        "a retried sign-in"
    );
    let rotate = |old: [u8; 32], new: [u8; 32]| AccountCommand::RotateRefresh {
        user_id: ALICE,
        device_id: PHONE,
        old_hash: old,
        new_hash: new,
    };
    assert_eq!(
        h.run(rotate([1; 32], [2; 32])).await,
        CommandResult::Account { user_id: ALICE }
    );
    assert_eq!(
        h.run(rotate([1; 32], [2; 32])).await,
        CommandResult::Account { user_id: ALICE },
        "a retried rotation"
    );
    assert_eq!(
        code(h.run(rotate([1; 32], [3; 32])).await),
        ErrorCode::Unauthenticated,
        "a replayed refresh token"
    );
    h.run(AccountCommand::RevokeDevice {
        user_id: ALICE,
        device_id: PHONE,
    })
    .await;
    assert_eq!(
        code(h.run(rotate([2; 32], [4; 32])).await),
        ErrorCode::Unauthenticated,
        "a revoked device"
    );
    let devices = h.view().devices(&ALICE).unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].1.revoked);
    assert_eq!(h.view().account(&ALICE).unwrap().unwrap().handle, "minji");
}
