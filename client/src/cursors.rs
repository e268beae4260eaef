//! Where a device is in each conversation, and the rule that keeps a resumed stream free of
//! duplicates.
//!
//! The server promises gap-free and duplicate-free delivery per conversation within one
//! Subscribe stream, and resumes after the cursors a device names. Across a reconnect to
//! another gateway, the SDK keeps its own promise on top: a message is handed to the
//! application only if its seq is past the last one handed over for its conversation, and a
//! jump past the next seq is reported so the gap can be filled from History.

use std::collections::BTreeMap;

use bongsu_proto::model::ConvId;

/// What to do with a message that arrived on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next one: hand it over.
    Deliver,
    /// Seen already (seq at or below the cursor): drop it.
    Duplicate,
    /// Messages `from..=to` are missing before it: fetch them first, then hand this one over.
    Gap { from: u64, to: u64 },
}

/// The last seq handed over per conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursors {
    last: BTreeMap<ConvId, u64>,
}

impl Cursors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from known positions (a saved state, or "now" from the conversation list).
    pub fn from_positions(positions: impl IntoIterator<Item = (ConvId, u64)>) -> Self {
        let mut c = Cursors::new();
        for (conv, seq) in positions {
            c.advance(conv, seq);
        }
        c
    }

    /// The last seq handed over in `conv`, if any position is known for it.
    pub fn get(&self, conv: &ConvId) -> Option<u64> {
        self.last.get(conv).copied()
    }

    /// Judges a message with `seq` in `conv` without recording it.
    ///
    /// A conversation without a known position accepts whatever comes first: the server
    /// decides where a stream starts for conversations the device did not name.
    pub fn judge(&self, conv: &ConvId, seq: u64) -> Verdict {
        match self.last.get(conv) {
            Some(&last) if seq <= last => Verdict::Duplicate,
            Some(&last) if seq > last + 1 => Verdict::Gap {
                from: last + 1,
                to: seq - 1,
            },
            _ => Verdict::Deliver,
        }
    }

    /// Records that everything up to `seq` in `conv` was handed over; never moves back.
    pub fn advance(&mut self, conv: ConvId, seq: u64) {
        let e = self.last.entry(conv).or_insert(seq);
        *e = (*e).max(seq);
    }

    /// Forgets a conversation the device left.
    pub fn remove(&mut self, conv: &ConvId) {
        self.last.remove(conv);
    }

    /// Every known position, for a Subscribe or Sync request.
    pub fn positions(&self) -> impl Iterator<Item = (ConvId, u64)> + '_ {
        self.last.iter().map(|(c, s)| (*c, *s))
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(n: u128) -> ConvId {
        ConvId::from_u128(n)
    }

    #[test]
    fn judges_each_arrival_against_the_cursor() {
        // (conversation, seq, verdict): a replay after a reconnect repeats 2 and 3.
        let arrivals = [
            (1, 1, Verdict::Deliver),
            (1, 2, Verdict::Deliver),
            (2, 7, Verdict::Deliver),
            (1, 3, Verdict::Deliver),
            (1, 2, Verdict::Duplicate),
            (1, 3, Verdict::Duplicate),
            (1, 4, Verdict::Deliver),
            (2, 7, Verdict::Duplicate),
            (2, 10, Verdict::Gap { from: 8, to: 9 }),
            (1, 5, Verdict::Deliver),
        ];
        let mut c = Cursors::new();
        let mut delivered = Vec::new();
        for (i, (cv, seq, want)) in arrivals.into_iter().enumerate() {
            let got = c.judge(&conv(cv), seq);
            assert_eq!(got, want, "arrival {i}");
            if got == Verdict::Deliver {
                c.advance(conv(cv), seq);
                delivered.push((cv, seq));
            }
        }
        assert_eq!(
            delivered,
            vec![(1, 1), (1, 2), (2, 7), (1, 3), (1, 4), (1, 5)]
        );
        assert_eq!(c.get(&conv(1)), Some(5));
        assert_eq!(c.get(&conv(2)), Some(7));
    }

    #[test]
    fn positions_never_move_back_and_can_be_forgotten() {
        let mut c = Cursors::from_positions([(conv(1), 9), (conv(1), 4), (conv(2), 0)]);
        assert_eq!(c.get(&conv(1)), Some(9));
        c.advance(conv(1), 3);
        assert_eq!(c.get(&conv(1)), Some(9));
        assert_eq!(c.judge(&conv(2), 1), Verdict::Deliver);
        assert_eq!(c.judge(&conv(2), 3), Verdict::Gap { from: 1, to: 2 });
        c.remove(&conv(2));
        assert_eq!(c.positions().collect::<Vec<_>>(), vec![(conv(1), 9)]);
        assert_eq!(c.len(), 1);
    }
}
