//! Tests of retention: the dedup window, event pruning and the resume it refuses, the bound on
//! one entry, tombstones kept, and replicas that prune alike whatever their batches.

use bongsu_proto::model::{ClientMsgId, ConversationKind, DeviceId, MessageKind, UserId};
use bongsu_proto::ErrorCode;

use super::layout::{
    TAG_DEDUP, TAG_EVENT, TAG_MESSAGE, TAG_RETENTION, TAG_USER_CONV, TAG_USER_EVENT,
};
use super::retention::{EventsPruned, DEDUP_WINDOW_MS, PRUNE_MAX_DELETES};
use super::tests::{conv, create, members, view, Harness, ALICE, BOB, CAROL};
use super::*;
use crate::{Command, CommandResult, SmConfig};

/// A day and a bit after the epoch, so that windows can be counted back from it.
const T0: u64 = 1_700_000_000_000;

fn send_at(c: u8, sender: UserId, cmid: u128, at_ms: u64) -> Command {
    Command::Append(AppendMessage {
        conv_id: conv(c),
        sender,
        device: DeviceId::from_u128(1),
        client_msg_id: ClientMsgId::from_u128(cmid),
        kind: MessageKind::Text,
        body: format!("message {cmid}").into_bytes(),
        at_ms,
    })
}

fn prune(events_before: u64, now_ms: u64) -> Command {
    Command::Prune(Prune {
        events_before,
        now_ms,
    })
}

fn cursor(user: UserId, c: u8, seq: u64) -> Command {
    Command::MoveCursor(MoveCursor {
        user,
        conv_id: conv(c),
        seq,
    })
}

/// How many keys of the group's state carry `tag`.
fn count(h: &Harness, tag: u8) -> usize {
    h.state()
        .iter()
        .filter(|(k, _)| k.first() == Some(&tag))
        .count()
}

fn pruned(r: &CommandResult) -> (u32, u64, bool) {
    match r {
        CommandResult::Pruned {
            removed,
            events_from,
            more,
        } => (*removed, *events_from, *more),
        other => panic!("not a prune result: {other:?}"),
    }
}

#[tokio::test]
async fn a_resend_inside_the_dedup_window_returns_the_original_seq_and_after_it_is_stored_again() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    assert_eq!(
        h.run(send_at(1, ALICE, 7, T0)).await,
        CommandResult::Appended {
            seq: 1,
            duplicate: false
        }
    );
    // One millisecond before the window closes, a prune keeps the key...
    let r = h.run(prune(h.next_index, T0 + DEDUP_WINDOW_MS - 1)).await;
    assert_eq!(pruned(&r).0, 0, "{r:?}");
    assert_eq!(count(&h, TAG_DEDUP), 1);
    // ... and a resend still gets the original seq and stores nothing.
    assert_eq!(
        h.run(send_at(1, ALICE, 7, T0 + DEDUP_WINDOW_MS - 1)).await,
        CommandResult::Appended {
            seq: 1,
            duplicate: true
        }
    );
    assert_eq!(count(&h, TAG_MESSAGE), 1);

    // Once it has closed, the key and the event go (the message stays)...
    let r = h.run(prune(h.next_index, T0 + DEDUP_WINDOW_MS)).await;
    assert_eq!(pruned(&r).0, 2, "{r:?}");
    assert_eq!(count(&h, TAG_DEDUP), 0);
    assert_eq!(count(&h, TAG_EVENT), 0);
    assert_eq!(count(&h, TAG_MESSAGE), 1);
    // ... and the same id is a new message.
    assert_eq!(
        h.run(send_at(1, ALICE, 7, T0 + DEDUP_WINDOW_MS + 1)).await,
        CommandResult::Appended {
            seq: 2,
            duplicate: false
        }
    );
    // Pruning the first message's bookkeeping again never takes the new key: the new key is
    // the second message's, kept for its own window.
    let r = h.run(prune(h.next_index, T0 + DEDUP_WINDOW_MS + 2)).await;
    assert_eq!(pruned(&r).0, 0, "{r:?}");
    assert_eq!(
        h.run(send_at(1, ALICE, 7, T0 + DEDUP_WINDOW_MS + 3)).await,
        CommandResult::Appended {
            seq: 2,
            duplicate: true
        }
    );
}

#[tokio::test]
async fn a_message_inside_its_window_stops_the_prune_there() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await; // 1
    h.run(send_at(1, ALICE, 1, T0)).await; // 2
    h.run(cursor(BOB, 1, 1)).await; // 3: a user event
    h.run(send_at(1, ALICE, 2, T0 + DEDUP_WINDOW_MS / 2)).await; // 4
    h.run(cursor(BOB, 1, 2)).await; // 5
    let r = h.run(prune(6, T0 + DEDUP_WINDOW_MS)).await;
    // Message 1 (event and dedup key) and the cursor event at 3 went; message 2 is in its
    // window, so the prune stopped at its index, leaving the user event after it too.
    assert_eq!(pruned(&r), (3, 4, false));
    assert_eq!(view(&h.sm).events_from().unwrap(), 4);
    assert_eq!(count(&h, TAG_EVENT), 1);
    assert_eq!(count(&h, TAG_USER_EVENT), 1);
    assert_eq!(count(&h, TAG_DEDUP), 1);
    assert!(!view(&h.sm).prune_pending(6, T0 + DEDUP_WINDOW_MS).unwrap());
    assert!(view(&h.sm)
        .prune_pending(6, T0 + DEDUP_WINDOW_MS * 3 / 2)
        .unwrap());
    // Once its window has passed, the rest goes up to the cut-off.
    let r = h.run(prune(6, T0 + DEDUP_WINDOW_MS * 3 / 2)).await;
    assert_eq!(pruned(&r), (3, 6, false));
    assert_eq!(count(&h, TAG_EVENT) + count(&h, TAG_USER_EVENT), 0);
    assert_eq!(count(&h, TAG_DEDUP), 0);
    // Messages and cursors stay.
    assert_eq!(count(&h, TAG_MESSAGE), 2);
    assert_eq!(view(&h.sm).cursor(&BOB, &conv(1)).unwrap(), 2);
    assert!(!view(&h.sm).prune_pending(6, u64::MAX).unwrap());
}

#[tokio::test]
async fn a_resume_from_pruned_events_is_refused_and_one_from_kept_events_is_whole() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB, CAROL]))
        .await; // 1
    for i in 0..4 {
        h.run(send_at(1, ALICE, i, T0 + i as u64)).await; // 2..=5
    }
    h.run(members(1, ALICE, &[], &[CAROL])).await; // 6: a LEFT user event
    h.run(cursor(BOB, 1, 3)).await; // 7
    h.run(send_at(1, BOB, 9, T0 + 9)).await; // 8
    let before = view(&h.sm).resume_after(0, 100).unwrap().unwrap();
    assert_eq!(
        before.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6, 7, 8]
    );
    assert!(view(&h.sm)
        .prune_pending(5, T0 + DEDUP_WINDOW_MS + 9)
        .unwrap());

    let r = h.run(prune(5, T0 + DEDUP_WINDOW_MS + 9)).await; // 9
    assert_eq!(pruned(&r), (6, 5, false));
    let v = view(&h.sm);
    assert_eq!(v.events_from().unwrap(), 5);
    // From the last index below the watermark on, nothing is missing: the same events.
    assert_eq!(
        v.resume_after(4, 100).unwrap().unwrap(),
        before[3..].to_vec()
    );
    assert_eq!(
        v.resume_after(6, 100).unwrap().unwrap(),
        before[5..].to_vec()
    );
    // Any earlier position would skip events: refused, with where the kept events start.
    for after in [0, 1, 3] {
        assert_eq!(
            v.resume_after(after, 100).unwrap(),
            Err(EventsPruned {
                after_index: after,
                events_from: 5
            }),
            "after {after}"
        );
    }
}

#[tokio::test]
async fn one_entry_deletes_at_most_the_bound_and_says_more_is_left() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    // Two keys each (event and dedup key): a little over twice the bound.
    let messages = PRUNE_MAX_DELETES as u64 + 100;
    let sends = (0..messages)
        .map(|i| send_at(1, ALICE, i as u128, T0 + i))
        .collect();
    h.run_all(sends).await;
    let cut = h.next_index;
    let now = T0 + messages + DEDUP_WINDOW_MS;
    let mut total = 0;
    let mut entries = 0;
    loop {
        let (removed, events_from, more) = pruned(&h.run(prune(cut, now)).await);
        assert!(removed as usize <= PRUNE_MAX_DELETES, "{removed}");
        assert!(removed > 0 || !more);
        total += removed as u64;
        entries += 1;
        if !more {
            assert_eq!(events_from, cut);
            break;
        }
        assert!(events_from < cut);
        assert!(entries < 10, "the prune never finishes");
    }
    assert_eq!(total, 2 * messages);
    assert_eq!(entries, 3, "the bound, the bound, then the last 200 keys");
    assert_eq!(count(&h, TAG_DEDUP) + count(&h, TAG_EVENT), 0);
    assert_eq!(count(&h, TAG_MESSAGE), messages as usize);
}

#[tokio::test]
async fn an_invalid_or_empty_prune_changes_nothing() {
    let mut h = Harness::new(SmConfig::default());
    h.run(create(1, ConversationKind::Group, ALICE, &[BOB]))
        .await;
    h.run(send_at(1, ALICE, 1, T0)).await;
    h.run(cursor(BOB, 1, 1)).await;
    let state = h.state();
    // A cut-off past its own entry is refused (the entry is at index 4).
    let r = h.run(prune(5, T0 + DEDUP_WINDOW_MS)).await;
    match r {
        CommandResult::Rejected(r) => assert_eq!(r.code, ErrorCode::InvalidArgument),
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(h.state(), state);
    // A prune with nothing to do writes nothing either, not even the watermark.
    assert_eq!(
        pruned(&h.run(prune(0, T0 + DEDUP_WINDOW_MS)).await),
        (0, 0, false)
    );
    assert_eq!(h.state(), state);
    assert_eq!(count(&h, TAG_RETENTION), 0);
    // A cut-off at its own entry is fine: everything below it.
    assert_eq!(h.next_index, 6);
    let r = h.run(prune(6, T0 + DEDUP_WINDOW_MS)).await;
    assert_eq!(pruned(&r), (3, 6, false));
    let state = h.state();
    // Below the watermark, again nothing.
    assert_eq!(pruned(&h.run(prune(3, u64::MAX)).await), (0, 6, false));
    assert_eq!(h.state(), state);
}

#[tokio::test]
async fn tombstones_stay_and_still_stop_an_older_join() {
    let mut h = Harness::new(SmConfig::default());
    let deliver = |joined, version| {
        Command::UserConv(UserConv {
            user: BOB,
            conv_id: conv(1),
            joined,
            version,
        })
    };
    h.run(deliver(true, 10)).await;
    h.run(deliver(false, 20)).await;
    let r = h.run(prune(h.next_index, u64::MAX)).await;
    assert_eq!(pruned(&r).0, 2, "both user events: {r:?}");
    assert_eq!(count(&h, TAG_USER_CONV), 1, "the tombstone stays");
    // A late, older join (a redelivered outbox entry) does not bring the conversation back.
    assert_eq!(
        h.run(deliver(true, 10)).await,
        CommandResult::UserIndexed { changed: false }
    );
    assert!(view(&h.sm).user_conversations(&BOB).unwrap().is_empty());
}

/// The same entries, with prunes between appends, as one batch, one entry at a time, and in
/// odd-sized batches: every replica deletes the same keys. A prune reads what earlier entries
/// of its own batch wrote, so this fails if a scan looked at the store alone.
#[tokio::test]
async fn replicas_that_prune_the_same_log_have_equal_digests_whatever_their_batches() {
    let mut cmds = vec![create(1, ConversationKind::Group, ALICE, &[BOB, CAROL])];
    let mut at = T0;
    for round in 0..6u64 {
        for i in 0..50u64 {
            at += 60_000;
            cmds.push(send_at(1, ALICE, (round * 100 + i) as u128, at));
            if i % 10 == 0 {
                cmds.push(cursor(BOB, 1, round * 50 + i + 1));
            }
        }
        // A resend inside the window, which must dedup on every replica.
        cmds.push(send_at(1, ALICE, (round * 100) as u128, at));
        let index = cmds.len() as u64 + 1;
        cmds.push(prune(
            index,
            at + DEDUP_WINDOW_MS / 2 + round * 3_600_000 * 3,
        ));
    }
    cmds.push(members(1, ALICE, &[], &[CAROL]));
    let at_end = cmds.len() as u64 + 1;
    cmds.push(prune(at_end, u64::MAX));

    let mut one_batch = Harness::new(SmConfig::default());
    let results = one_batch.run_all(cmds.clone()).await;
    let mut one_by_one = Harness::new(SmConfig::default());
    let mut odd = Harness::new(SmConfig::default());
    let mut singles = Vec::new();
    for c in &cmds {
        singles.push(one_by_one.run(c.clone()).await);
    }
    let mut odd_results = Vec::new();
    for chunk in cmds.chunks(7) {
        odd_results.extend(odd.run_all(chunk.to_vec()).await);
    }
    assert_eq!(results, singles);
    assert_eq!(results, odd_results);
    let digest = one_batch.sm.digest().unwrap();
    assert_eq!(one_by_one.sm.digest().unwrap(), digest);
    assert_eq!(odd.sm.digest().unwrap(), digest);
    // The prunes did something, so equal digests say something.
    assert!(results
        .iter()
        .any(|r| matches!(r, CommandResult::Pruned { removed, .. } if *removed > 0)));
    assert_eq!(count(&one_batch, TAG_EVENT), 0);
    assert_eq!(count(&one_batch, TAG_DEDUP), 0);
    assert_eq!(count(&one_batch, TAG_MESSAGE), 300);
}
