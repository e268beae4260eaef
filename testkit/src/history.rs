//! What a chaos run recorded: every operation the workload issued and what came back, the
//! faults injected, and the state read back after healing.
//!
//! A history is plain data. It is written as JSON next to every run and can be loaded again
//! ([`History::from_json`], [`History::load`]) so that a failing run is re-checked offline with
//! exactly the checkers that judged it.
//! 128-bit ids are written as 32 hex digits, digests as 16.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::errors::{HistoryError, Result};

/// Milliseconds since the run started.
pub type Ms = u64;

/// One operation the workload issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// The workload client that issued it; a client issues one operation at a time.
    pub client: u32,
    pub invoke: Ms,
    /// When the answer arrived; `None` when none did.
    pub complete: Option<Ms>,
    pub kind: OpKind,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpKind {
    Send {
        #[serde(with = "crate::serde_hex::u128")]
        conv: u128,
        shard: u32,
        #[serde(with = "crate::serde_hex::u128")]
        sender: u128,
        #[serde(with = "crate::serde_hex::u128")]
        client_msg_id: u128,
        body_crc: u32,
    },
    /// A read of seqs >= `from_seq` by `reader`; `member` says whether the reader is a member.
    Read {
        #[serde(with = "crate::serde_hex::u128")]
        conv: u128,
        shard: u32,
        #[serde(with = "crate::serde_hex::u128")]
        reader: u128,
        member: bool,
        from_seq: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A send was acknowledged with this seq; `duplicate` when the server recognised a retry.
    Sent { seq: u64, duplicate: bool },
    /// A read succeeded and saw these messages, in the order returned.
    ReadOk { messages: Vec<Seen> },
    /// A definite failure with its stable code (e.g. `NOT_MEMBER`, `UNAVAILABLE`): nothing
    /// happened.
    Failed { code: String },
    /// No answer in time: a send may or may not have happened.
    Timeout,
}

/// A message as a read (or the final log) returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Seen {
    pub seq: u64,
    #[serde(with = "crate::serde_hex::u128")]
    pub sender: u128,
    #[serde(with = "crate::serde_hex::u128")]
    pub client_msg_id: u128,
    pub body_crc: u32,
}

/// A fault injected during the run, e.g. `name: "dc-kill", target: "dc2"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub name: String,
    pub start: Ms,
    /// When the fault was healed; `None` if it never was.
    pub end: Option<Ms>,
    pub target: String,
    /// How the nodes the fault took down caught up once they were back, for faults that
    /// measure it (`dc-return-backlog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// How restarted nodes caught up with the writes they missed.
///
/// The backlog is what the workload got acknowledged while the nodes were down (from the
/// fault's start to the restart). Every datacenter holds one replica of every shard, so a
/// datacenter that comes back must receive at least all of it; the catch-up rate is the
/// backlog divided by the catch-up time (writes acknowledged during the catch-up itself are
/// not counted, so the rate is a lower bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
    /// When the nodes were started again.
    pub restarted: Ms,
    /// When the last of them had caught up (see `Cluster::wait_caught_up`); `None` if one
    /// never did within the bound.
    pub caught_up: Option<Ms>,
    /// Bytes of message bodies acknowledged while the nodes were down.
    pub backlog_bytes: u64,
    /// Sends acknowledged while the nodes were down.
    pub backlog_msgs: u64,
}

impl CatchUp {
    /// From the restart until the last restarted node had caught up.
    pub fn catch_up_ms(&self) -> Option<Ms> {
        self.caught_up.map(|t| t.saturating_sub(self.restarted))
    }

    /// The backlog divided by the catch-up time (see [`CatchUp`]).
    pub fn bytes_per_s(&self) -> Option<u64> {
        self.catch_up_ms()
            .map(|ms| self.backlog_bytes.saturating_mul(1000) / ms.max(1))
    }
}

/// The load the workload was held to.
///
/// Before the faults, writers send without any pause for `calibration_ms` and the bodies
/// acknowledged meanwhile are the cluster's measured capacity; after that every writer passes
/// one shared byte-rate gate set to `share_percent` of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub writers: u32,
    pub calibration_ms: Ms,
    /// Body bytes (and sends) acknowledged per second during the calibration.
    pub capacity_bytes_per_s: u64,
    pub capacity_msgs_per_s: u64,
    pub share_percent: u32,
    /// The gate's byte rate, and the send rate it means at the calibration's mean body size.
    pub rate_bytes_per_s: u64,
    pub rate_msgs_per_s: u64,
    /// What was acknowledged per second from the end of the calibration to the end of the
    /// workload, faults included.
    pub achieved_bytes_per_s: u64,
    pub achieved_msgs_per_s: u64,
}

/// The state after healing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// The complete log of every conversation, read linearizably from its leader, by conv id.
    #[serde(with = "crate::serde_hex::u128_keys")]
    pub logs: BTreeMap<u128, Vec<Seen>>,
    /// Per shard, each replica's digest of its state machine at its applied index.
    pub replicas: BTreeMap<u32, Vec<ReplicaDigest>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDigest {
    pub node: u64,
    pub applied_index: u64,
    #[serde(with = "crate::serde_hex::u64")]
    pub digest: u64,
}

/// Everything one chaos run recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub scenario: String,
    pub seed: u64,
    /// The calibrated load (histories written before calibration existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    pub faults: Vec<Fault>,
    pub ops: Vec<Op>,
    pub final_state: FinalState,
}

impl OpKind {
    pub fn conv(&self) -> u128 {
        match *self {
            OpKind::Send { conv, .. } | OpKind::Read { conv, .. } => conv,
        }
    }

    pub fn shard(&self) -> u32 {
        match *self {
            OpKind::Send { shard, .. } | OpKind::Read { shard, .. } => shard,
        }
    }

    pub fn is_send(&self) -> bool {
        matches!(self, OpKind::Send { .. })
    }
}

impl Outcome {
    /// Whether the operation definitely succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Sent { .. } | Outcome::ReadOk { .. })
    }
}

impl Op {
    /// When the operation is counted as having happened: its answer, or for an operation
    /// that never got one, its invocation (the only time the history knows).
    pub fn settled_at(&self) -> Ms {
        self.complete.unwrap_or(self.invoke)
    }

    /// The ack time of a successful send.
    pub fn ack_time(&self) -> Option<Ms> {
        match (&self.kind, &self.outcome) {
            (OpKind::Send { .. }, Outcome::Sent { .. }) => self.complete,
            _ => None,
        }
    }
}

impl Seen {
    /// Whether `other` is the same message, whatever its seq.
    pub fn same_message(&self, other: &Seen) -> bool {
        (self.sender, self.client_msg_id, self.body_crc)
            == (other.sender, other.client_msg_id, other.body_crc)
    }
}

impl History {
    /// Decodes a history written by [`History::to_json`].
    pub fn from_json(json: &str) -> Result<History> {
        serde_json::from_str(json).map_err(|source| HistoryError::Decode {
            what: "history",
            source,
        })
    }

    /// Encodes the history as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|source| HistoryError::Encode {
            what: "history",
            source,
        })
    }

    /// Loads a history from a JSON file: either a bare history or a report written by
    /// the chaos report (`bongsu_chaos::report::write_json`), whose `history` field holds it.
    pub fn load(path: &Path) -> Result<History> {
        let json = std::fs::read_to_string(path).map_err(|source| HistoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut value: serde_json::Value =
            serde_json::from_str(&json).map_err(|source| HistoryError::Decode {
                what: "history file",
                source,
            })?;
        let value = match value.get_mut("history") {
            Some(inner) => inner.take(),
            None => value,
        };
        serde_json::from_value(value).map_err(|source| HistoryError::Decode {
            what: "history",
            source,
        })
    }

    /// The time of the last thing the history knows of: an invocation, an answer, or a fault
    /// starting or healing.
    pub fn run_end(&self) -> Ms {
        let ops = self
            .ops
            .iter()
            .map(|op| op.complete.unwrap_or(0).max(op.invoke));
        let faults = self.faults.iter().map(|f| f.end.unwrap_or(0).max(f.start));
        ops.chain(faults).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn json_round_trip() {
        let h = clean_history();
        let json = h.to_json().expect("encode");
        assert_eq!(History::from_json(&json).expect("decode"), h);
    }

    #[test]
    fn json_round_trip_of_extreme_values() {
        let mut h = clean_history();
        let m = Seen {
            seq: u64::MAX,
            sender: u128::MAX,
            client_msg_id: 0,
            body_crc: u32::MAX,
        };
        h.final_state.logs.insert(u128::MAX, vec![m]);
        h.final_state.replicas.insert(
            u32::MAX,
            vec![ReplicaDigest {
                node: u64::MAX,
                applied_index: 0,
                digest: u64::MAX,
            }],
        );
        h.seed = u64::MAX;
        h.ops.push(send(
            99,
            0,
            u128::MAX,
            u32::MAX,
            u128::MAX,
            0,
            Outcome::Sent {
                seq: u64::MAX,
                duplicate: true,
            },
        ));
        h.faults.push(Fault {
            name: "partition".into(),
            start: 5,
            end: None,
            target: "dc1|dc2,dc3".into(),
            catch_up: None,
        });
        assert_eq!(
            History::from_json(&h.to_json().expect("encode")).expect("decode"),
            h
        );
    }

    #[test]
    fn load_and_catch_up_round_trip_and_may_be_absent() {
        let mut h = clean_history();
        h.load = Some(sample_load());
        h.faults[0].catch_up = Some(CatchUp {
            restarted: 3000,
            caught_up: Some(3500),
            backlog_bytes: 1_000_000,
            backlog_msgs: 100,
        });
        let json = h.to_json().expect("encode");
        assert_eq!(History::from_json(&json).expect("decode"), h);
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["load"]["rate_bytes_per_s"], 6_000_000);
        assert_eq!(v["faults"][0]["catch_up"]["backlog_bytes"], 1_000_000);

        // A history from before calibration and catch-up existed has neither field.
        let old = clean_history().to_json().expect("encode");
        assert!(!old.contains("\"load\"") && !old.contains("catch_up"));
        let back = History::from_json(&old).expect("decode");
        assert_eq!((back.load, back.faults[0].catch_up), (None, None));
    }

    #[test]
    fn catch_up_figures() {
        let c = CatchUp {
            restarted: 10_000,
            caught_up: Some(12_500),
            backlog_bytes: 50_000_000,
            backlog_msgs: 7000,
        };
        assert_eq!(c.catch_up_ms(), Some(2500));
        assert_eq!(c.bytes_per_s(), Some(20_000_000));
        let never = CatchUp {
            caught_up: None,
            ..c
        };
        assert_eq!((never.catch_up_ms(), never.bytes_per_s()), (None, None));
        let at_once = CatchUp {
            caught_up: Some(10_000),
            ..c
        };
        assert_eq!(at_once.catch_up_ms(), Some(0));
        assert_eq!(at_once.bytes_per_s(), Some(50_000_000_000));
    }

    #[test]
    fn ids_are_hex_strings() {
        let json = clean_history().to_json().expect("encode");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(
            v["ops"][0]["kind"]["conv"],
            "0a0a00000000000000000000000000aa"
        );
        assert_eq!(
            v["ops"][0]["kind"]["sender"],
            "000000000000000000000000000a11ce"
        );
        assert_eq!(
            v["ops"][0]["outcome"],
            serde_json::json!({"type": "sent", "seq": 1, "duplicate": false})
        );
        assert_eq!(
            v["ops"][3]["outcome"],
            serde_json::json!({"type": "timeout"})
        );
        assert!(v["final_state"]["logs"]["0a0a00000000000000000000000000aa"].is_array());
        assert_eq!(
            v["final_state"]["replicas"]["1"][0]["digest"],
            "00000000000000d1"
        );
    }

    #[test]
    fn decode_errors() {
        let json = clean_history().to_json().expect("encode");
        for (what, bad) in [
            (
                "an id that is not hex",
                json.replacen("000000000000000000000000000a11ce", "zz", 1),
            ),
            (
                "an id too long for 128 bits",
                json.replacen(
                    "000000000000000000000000000a11ce",
                    "1000000000000000000000000000a11ce",
                    1,
                ),
            ),
            (
                "an unknown outcome",
                json.replacen("\"timeout\"", "\"maybe\"", 1),
            ),
            ("truncated JSON", json[..json.len() / 2].to_owned()),
        ] {
            let err = History::from_json(&bad).expect_err(what);
            assert!(
                err.to_string().starts_with("decode history from JSON"),
                "{what}: {err}"
            );
        }
        // Short ids and a 0x prefix are accepted, for histories written by hand.
        let short = json.replacen("\"000000000000000000000000000a11ce\"", "\"0xa11ce\"", 1);
        assert_eq!(
            History::from_json(&short).expect("short ids decode"),
            clean_history()
        );
    }

    #[test]
    fn run_end_covers_ops_and_faults() {
        let mut h = clean_history();
        assert_eq!(h.run_end(), 3503);
        h.faults.push(Fault {
            name: "pause".into(),
            start: 3000,
            end: Some(9000),
            target: "n1".into(),
            catch_up: None,
        });
        assert_eq!(h.run_end(), 9000);
        h.ops
            .push(send(50, 9500, CONV_A, SHARD_A, ALICE, 50, Outcome::Timeout));
        assert_eq!(h.run_end(), 9500);
    }
}
