//! Account state machine tests on a real RocksDB.

use bongsu_proto::model::{DeviceId, UserId};
use bongsu_proto::ErrorCode;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::{Command, CommandResult, Entry, SmConfig, StateMachineStore, Store, StoreOptions};

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
        at_ms: 1,
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
    assert_eq!(
        code(
            h.run(AccountCommand::ConfirmHandle {
                handle: "no spaces".into(),
                user_id: BOB,
            })
            .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(h.view().handle_owner("minji").unwrap(), Some(ALICE));
    assert_eq!(h.view().handle_owner("nobody").unwrap(), None);
    assert_ne!(handle_key("minji"), handle_key("minji2"));
}

/// One step of a claim scenario on the handle "minji", and what must follow.
struct Step {
    what: &'static str,
    cmd: AccountCommand,
    /// `None`: accepted for the command's user; `Some(code)`: refused with it.
    refused: Option<ErrorCode>,
    /// The claim after the step.
    then: Option<HandleRecord>,
}

fn claim(user: UserId, at_ms: u64) -> AccountCommand {
    AccountCommand::ClaimHandle {
        handle: "Minji".into(),
        user_id: user,
        at_ms,
    }
}

fn confirm(user: UserId) -> AccountCommand {
    AccountCommand::ConfirmHandle {
        handle: "MINJI".into(),
        user_id: user,
    }
}

fn rec(user_id: UserId, claimed_at_ms: u64, confirmed: bool) -> Option<HandleRecord> {
    Some(HandleRecord {
        user_id,
        claimed_at_ms,
        confirmed,
    })
}

const T0: u64 = 1_700_000_000_000;
const LATER: u64 = T0 + CLAIM_GRACE_MS + 1;

#[tokio::test]
async fn unconfirmed_claims_are_taken_over_only_after_the_grace_period() {
    let scenarios: Vec<(&str, Vec<Step>)> = vec![
        (
            "a claim, a retry, a rival within the grace period",
            vec![
                Step {
                    what: "first claim",
                    cmd: claim(ALICE, T0),
                    refused: None,
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "the same user again keeps the first time",
                    cmd: claim(ALICE, T0 + 5_000),
                    refused: None,
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "another user within the grace period",
                    cmd: claim(BOB, T0 + CLAIM_GRACE_MS),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "a stamp before the claim (a leader's clock behind)",
                    cmd: claim(BOB, T0 - CLAIM_GRACE_MS * 2),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(ALICE, T0, false),
                },
            ],
        ),
        (
            "an unconfirmed claim after the grace period",
            vec![
                Step {
                    what: "first claim",
                    cmd: claim(ALICE, T0),
                    refused: None,
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "another user takes it over",
                    cmd: claim(BOB, LATER),
                    refused: None,
                    then: rec(BOB, LATER, false),
                },
                Step {
                    what: "the displaced user's late confirmation",
                    cmd: confirm(ALICE),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(BOB, LATER, false),
                },
                Step {
                    what: "the displaced user cannot take it back within the new grace",
                    cmd: claim(ALICE, LATER + 1),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(BOB, LATER, false),
                },
                Step {
                    what: "the new owner confirms",
                    cmd: confirm(BOB),
                    refused: None,
                    then: rec(BOB, LATER, true),
                },
            ],
        ),
        (
            "a confirmed claim is never taken over",
            vec![
                Step {
                    what: "first claim",
                    cmd: claim(ALICE, T0),
                    refused: None,
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "confirmed",
                    cmd: confirm(ALICE),
                    refused: None,
                    then: rec(ALICE, T0, true),
                },
                Step {
                    what: "a retried confirmation",
                    cmd: confirm(ALICE),
                    refused: None,
                    then: rec(ALICE, T0, true),
                },
                Step {
                    what: "another user long after",
                    cmd: claim(BOB, T0 + 100 * CLAIM_GRACE_MS),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(ALICE, T0, true),
                },
                Step {
                    what: "a retried claim by the owner does not unconfirm",
                    cmd: claim(ALICE, LATER),
                    refused: None,
                    then: rec(ALICE, T0, true),
                },
            ],
        ),
        (
            "a confirmation by anyone but the owner",
            vec![
                Step {
                    what: "nobody holds the handle",
                    cmd: confirm(BOB),
                    refused: Some(ErrorCode::FailedPrecondition),
                    then: None,
                },
                Step {
                    what: "first claim",
                    cmd: claim(ALICE, T0),
                    refused: None,
                    then: rec(ALICE, T0, false),
                },
                Step {
                    what: "another user's confirmation",
                    cmd: confirm(BOB),
                    refused: Some(ErrorCode::HandleTaken),
                    then: rec(ALICE, T0, false),
                },
            ],
        ),
    ];
    for (scenario, steps) in scenarios {
        let mut h = H::new();
        for step in steps {
            let user = match &step.cmd {
                AccountCommand::ClaimHandle { user_id, .. }
                | AccountCommand::ConfirmHandle { user_id, .. } => *user_id,
                other => panic!("not a handle command: {other:?}"),
            };
            let got = h.run(step.cmd).await;
            match step.refused {
                None => assert_eq!(
                    got,
                    CommandResult::Account { user_id: user },
                    "{scenario}: {}",
                    step.what
                ),
                Some(c) => assert_eq!(code(got), c, "{scenario}: {}", step.what),
            }
            assert_eq!(
                h.view().handle("minji").unwrap(),
                step.then,
                "{scenario}: {} leaves",
                step.what
            );
        }
    }
}

#[test]
fn a_handle_stored_in_the_old_format_is_corrupt_not_a_panic() {
    // Before claims carried a time and a confirmation, the value was the bare user id.
    let old = crate::codec::encode(&ALICE);
    let got = crate::codec::decode::<HandleRecord>(5, b"k", "handle", &old);
    assert!(
        matches!(got, Err(crate::errors::StoreError::Corrupt { .. })),
        "{got:?}"
    );
}

#[test]
fn a_device_stored_before_the_reuse_window_is_corrupt_not_a_panic() {
    // Before a device kept its spent refresh token, the record ended at `revoked`. There is no
    // migration: such a record is refused by name, like the handle format above.
    let old = crate::codec::encode(&("phone", DeviceKind::Phone, 1u64, [1u8; 32], false));
    let got = crate::codec::decode::<DeviceRecord>(5, b"k", "device", &old);
    assert!(
        matches!(got, Err(crate::errors::StoreError::Corrupt { .. })),
        "{got:?}"
    );
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
    assert_eq!(
        h.run(rotate([1; 32], [2; 32], T0)).await,
        CommandResult::Account { user_id: ALICE }
    );
    assert_eq!(
        h.run(rotate([1; 32], [2; 32], T0)).await,
        CommandResult::Account { user_id: ALICE },
        "a retried rotation"
    );
    assert_eq!(
        code(
            h.run(rotate([1; 32], [3; 32], T0 + REFRESH_REUSE_MS + 1))
                .await
        ),
        ErrorCode::Unauthenticated,
        "a refresh token replayed after the reuse window"
    );
    h.run(AccountCommand::RevokeDevice {
        user_id: ALICE,
        device_id: PHONE,
    })
    .await;
    assert_eq!(
        code(h.run(rotate([2; 32], [4; 32], T0)).await),
        ErrorCode::Unauthenticated,
        "a revoked device"
    );
    let devices = h.view().devices(&ALICE).unwrap();
    assert_eq!(devices.len(), 1);
    assert!(devices[0].1.revoked);
    assert_eq!(h.view().account(&ALICE).unwrap().unwrap().handle, "minji");
}

fn rotate(old: [u8; 32], new: [u8; 32], at_ms: u64) -> AccountCommand {
    AccountCommand::RotateRefresh {
        user_id: ALICE,
        device_id: PHONE,
        old_hash: old,
        new_hash: new,
        at_ms,
    }
}

/// One step of a refresh scenario on ALICE's phone, signed in with token hash `[1; 32]`.
struct Rot {
    what: &'static str,
    cmd: AccountCommand,
    accepted: bool,
    /// The current hash and the spent one still allowed once, after the step.
    then: ([u8; 32], Option<PreviousRefresh>),
}

fn spent(hash: u8, rotated_at_ms: u64) -> Option<PreviousRefresh> {
    Some(PreviousRefresh {
        hash: [hash; 32],
        rotated_at_ms,
    })
}

#[tokio::test]
async fn a_spent_refresh_token_is_accepted_once_within_the_reuse_window() {
    let ok = |what, cmd, then| Rot {
        what,
        cmd,
        accepted: true,
        then,
    };
    let refused = |what, cmd, then| Rot {
        what,
        cmd,
        accepted: false,
        then,
    };
    let revoke = AccountCommand::RevokeDevice {
        user_id: ALICE,
        device_id: PHONE,
    };
    let edge = T0 + REFRESH_REUSE_MS;
    let scenarios: Vec<(&str, Vec<Rot>)> = vec![
        (
            "the current token",
            vec![
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "a gateway's retry of the same rotation changes nothing",
                    rotate([1; 32], [2; 32], T0 + 5),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "the new token rotates in turn",
                    rotate([2; 32], [3; 32], T0 + 10),
                    ([3; 32], spent(2, T0 + 10)),
                ),
            ],
        ),
        (
            "the spent token within the window (the reply was lost)",
            vec![
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "the spent token, at the window's last millisecond",
                    rotate([1; 32], [3; 32], edge),
                    ([3; 32], None),
                ),
                refused(
                    "the token the lost reply carried is dead",
                    rotate([2; 32], [4; 32], edge),
                    ([3; 32], None),
                ),
                ok(
                    "a gateway's retry of the second rotation changes nothing",
                    rotate([1; 32], [3; 32], edge),
                    ([3; 32], None),
                ),
                refused(
                    "the spent token a third time: its second chance is used",
                    rotate([1; 32], [5; 32], edge),
                    ([3; 32], None),
                ),
                refused(
                    "a late retry of the first rotation does not kill the live token",
                    rotate([1; 32], [2; 32], edge),
                    ([3; 32], None),
                ),
                ok(
                    "the live token rotates",
                    rotate([3; 32], [6; 32], edge + 1),
                    ([6; 32], spent(3, edge + 1)),
                ),
            ],
        ),
        (
            "the spent token with a stamp before its rotation (a leader's clock behind)",
            vec![
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "counts as no time passed",
                    rotate([1; 32], [3; 32], T0 - 2 * REFRESH_REUSE_MS),
                    ([3; 32], None),
                ),
            ],
        ),
        (
            "the spent token after the window",
            vec![
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                refused(
                    "one millisecond too late",
                    rotate([1; 32], [3; 32], edge + 1),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "the current token still works",
                    rotate([2; 32], [3; 32], edge + 2),
                    ([3; 32], spent(2, edge + 2)),
                ),
            ],
        ),
        (
            "a token that is neither current nor just spent",
            vec![
                refused(
                    "unknown, before any rotation",
                    rotate([9; 32], [2; 32], T0),
                    ([1; 32], None),
                ),
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                refused(
                    "unknown",
                    rotate([9; 32], [3; 32], T0 + 1),
                    ([2; 32], spent(1, T0)),
                ),
                ok(
                    "rotates again",
                    rotate([2; 32], [3; 32], T0 + 2),
                    ([3; 32], spent(2, T0 + 2)),
                ),
                refused(
                    "two rotations old, within the window",
                    rotate([1; 32], [4; 32], T0 + 3),
                    ([3; 32], spent(2, T0 + 2)),
                ),
            ],
        ),
        (
            "a revoked device",
            vec![
                ok(
                    "rotates",
                    rotate([1; 32], [2; 32], T0),
                    ([2; 32], spent(1, T0)),
                ),
                ok("signed out", revoke.clone(), ([2; 32], spent(1, T0))),
                refused(
                    "the current token",
                    rotate([2; 32], [3; 32], T0 + 1),
                    ([2; 32], spent(1, T0)),
                ),
                refused(
                    "the spent token within the window",
                    rotate([1; 32], [3; 32], T0 + 1),
                    ([2; 32], spent(1, T0)),
                ),
                refused(
                    "a retry of a rotation that applied",
                    rotate([1; 32], [2; 32], T0 + 1),
                    ([2; 32], spent(1, T0)),
                ),
            ],
        ),
    ];
    for (scenario, steps) in scenarios {
        let mut h = H::new();
        h.run(AccountCommand::CreateAccount {
            user_id: ALICE,
            handle: "minji".into(),
            password_hash: HASH.into(),
            at_ms: 1,
        })
        .await;
        h.run(AccountCommand::AddDevice {
            user_id: ALICE,
            device_id: PHONE,
            name: "phone".into(),
            kind: DeviceKind::Phone,
            refresh_hash: [1; 32],
            at_ms: 1,
        })
        .await;
        for step in steps {
            let before = h.view().device(&ALICE, &PHONE).unwrap().unwrap();
            let got = h.run(step.cmd).await;
            let after = h.view().device(&ALICE, &PHONE).unwrap().unwrap();
            if step.accepted {
                assert_eq!(
                    got,
                    CommandResult::Account { user_id: ALICE },
                    "{scenario}: {}",
                    step.what
                );
            } else {
                assert_eq!(
                    code(got),
                    ErrorCode::Unauthenticated,
                    "{scenario}: {}",
                    step.what
                );
                assert_eq!(
                    after, before,
                    "{scenario}: {} changed the device",
                    step.what
                );
            }
            assert_eq!(
                (after.refresh_hash, after.previous_refresh),
                step.then,
                "{scenario}: {} leaves",
                step.what
            );
        }
    }
}
