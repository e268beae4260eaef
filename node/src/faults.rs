//! Network fault rules for chaos tests in portable mode (datacenters as loopback address
//! groups, where the kernel cannot partition them): the node's own Raft transport and
//! liveness pings drop or delay traffic to and from a datacenter. Rules are only accepted by
//! `bongsu-node-chaos` (a process that armed its failpoints); elsewhere the set is always
//! empty and every check is a read of an empty list.

use std::sync::RwLock;
use std::time::Duration;

use bongsu_proto::internal::FaultRule;
use bongsu_proto::ErrorCode;

use crate::errors::{NodeError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    To,
    From,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drop,
    Delay(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub dc: String,
    pub direction: Direction,
    pub action: Action,
}

impl TryFrom<&FaultRule> for Rule {
    type Error = NodeError;

    fn try_from(r: &FaultRule) -> Result<Self> {
        let bad = |what: String| NodeError::rejected(ErrorCode::InvalidArgument, what);
        if r.dc.is_empty() {
            return Err(bad("rule: dc missing".into()));
        }
        let direction = match r.direction.as_str() {
            "to" => Direction::To,
            "from" => Direction::From,
            "both" | "" => Direction::Both,
            d => {
                return Err(bad(format!(
                    "rule: direction {d:?} is not to, from or both"
                )))
            }
        };
        let action = match r.action.as_str() {
            "drop" => Action::Drop,
            "delay" => Action::Delay(Duration::from_millis(r.delay_ms)),
            a => return Err(bad(format!("rule: action {a:?} is not drop or delay"))),
        };
        Ok(Rule {
            dc: r.dc.clone(),
            direction,
            action,
        })
    }
}

/// The node's current rules.
#[derive(Default)]
pub struct Faults {
    rules: RwLock<Vec<Rule>>,
}

impl Faults {
    pub fn set(&self, rules: &[FaultRule]) -> Result<()> {
        if !bongsu_raft_store::failpoints::armed() {
            return Err(NodeError::rejected(
                ErrorCode::FailedPrecondition,
                "fault rules are off in this binary (only bongsu-node-chaos has them)",
            ));
        }
        let parsed = rules
            .iter()
            .map(Rule::try_from)
            .collect::<Result<Vec<_>>>()?;
        *self.rules.write().expect("faults lock poisoned") = parsed;
        Ok(())
    }

    /// No rules: the common case, checked before anything else is looked up.
    pub fn is_empty(&self) -> bool {
        self.rules.read().expect("faults lock poisoned").is_empty()
    }

    fn action(&self, dc: &str, outgoing: bool) -> Option<Action> {
        let rules = self.rules.read().expect("faults lock poisoned");
        rules
            .iter()
            .find(|r| {
                r.dc == dc
                    && match r.direction {
                        Direction::Both => true,
                        Direction::To => outgoing,
                        Direction::From => !outgoing,
                    }
            })
            .map(|r| r.action)
    }

    /// Applies the rules to a message to (`outgoing`) or from a node in `dc`: `false` means
    /// drop it; a delay is slept here.
    pub async fn pass(&self, dc: &str, outgoing: bool) -> bool {
        match self.action(dc, outgoing) {
            None => true,
            Some(Action::Drop) => false,
            Some(Action::Delay(d)) => {
                tokio::time::sleep(d).await;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_clear_errors() {
        let r = |dc: &str, direction: &str, action: &str| FaultRule {
            dc: dc.into(),
            direction: direction.into(),
            action: action.into(),
            delay_ms: 5,
        };
        assert_eq!(
            Rule::try_from(&r("dc2", "to", "drop")).unwrap().direction,
            Direction::To
        );
        assert_eq!(
            Rule::try_from(&r("dc2", "", "delay")).unwrap().action,
            Action::Delay(Duration::from_millis(5))
        );
        for bad in [
            r("", "to", "drop"),
            r("dc1", "up", "drop"),
            r("dc1", "to", "explode"),
        ] {
            assert_eq!(
                Rule::try_from(&bad).unwrap_err().code(),
                ErrorCode::InvalidArgument
            );
        }
    }

    #[tokio::test]
    async fn directions_apply_to_the_right_traffic() {
        let f = Faults::default();
        *f.rules.write().unwrap() = vec![Rule {
            dc: "dc2".into(),
            direction: Direction::To,
            action: Action::Drop,
        }];
        assert!(!f.pass("dc2", true).await);
        assert!(f.pass("dc2", false).await);
        assert!(f.pass("dc3", true).await);
    }
}
