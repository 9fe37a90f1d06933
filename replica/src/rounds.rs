//! A replica's side of anti-entropy rounds (docs/design.md §5): which rounds are open here,
//! and which keys were written since each began. A key written during a round may differ
//! between replicas only because a write is on its way, so a round's listing marks it fresh
//! and the coordinator leaves it out of the round's repairs (`decide::antientropy`).
//!
//! The state of the node's repair work, kept apart from the rest of the node: the write
//! path notes keys here ([`Rounds::note_written`]); the anti-entropy endpoints open, list
//! and close rounds.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an anti-entropy round may stay open on a replica before it is dropped (its
/// coordinator died mid-round).
pub const ROUND_MAX_AGE: Duration = Duration::from_secs(300);

/// The anti-entropy rounds open on this replica.
#[derive(Default)]
pub struct Rounds {
    /// Per open round: when it began here, and the keys written since.
    open: Mutex<HashMap<u64, (Instant, HashSet<String>)>>,
}

impl Rounds {
    /// Opens round `round` at `now`: keys written from now on are fresh in it. Rounds open
    /// for longer than [`ROUND_MAX_AGE`] are dropped. Opening a round already open keeps it
    /// as it was.
    pub fn begin(&self, round: u64, now: Instant) {
        let mut open = self.open.lock().unwrap();
        open.retain(|_, (began, _)| now.saturating_duration_since(*began) < ROUND_MAX_AGE);
        open.entry(round).or_insert_with(|| (now, HashSet::new()));
    }

    /// Closes round `round`.
    pub fn end(&self, round: u64) {
        self.open.lock().unwrap().remove(&round);
    }

    /// Notes that `keys` were written (or are being written) here.
    pub fn note_written<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        let mut open = self.open.lock().unwrap();
        if open.is_empty() {
            return;
        }
        let keys: Vec<&str> = keys.collect();
        for (_, written) in open.values_mut() {
            written.extend(keys.iter().map(|k| k.to_string()));
        }
    }

    /// Which of `keys` are fresh in round `round`: written since it began here, or every
    /// one of them for a round not open here (a replica that did not see it begin cannot
    /// tell what was written since).
    pub fn fresh<'a>(&self, round: u64, keys: impl Iterator<Item = &'a str>) -> Vec<bool> {
        let open = self.open.lock().unwrap();
        let written = open.get(&round).map(|(_, w)| w);
        keys.map(|k| written.is_none_or(|w| w.contains(k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_fresh_in_the_rounds_open_when_it_was_written() {
        let r = Rounds::default();
        let t0 = Instant::now();
        r.note_written(["before"].into_iter());
        r.begin(1, t0);
        r.note_written(["a"].into_iter());
        r.begin(2, t0);
        // Opening round 1 again keeps what it noted.
        r.begin(1, t0);
        r.note_written(["b"].into_iter());
        let keys = ["before", "a", "b", "other"];
        assert_eq!(r.fresh(1, keys.into_iter()), [false, true, true, false]);
        assert_eq!(r.fresh(2, keys.into_iter()), [false, false, true, false]);
        // A round not open here: every key is fresh.
        assert_eq!(r.fresh(3, keys.into_iter()), [true; 4]);
        r.end(1);
        assert_eq!(r.fresh(1, keys.into_iter()), [true; 4]);
        assert_eq!(r.fresh(2, keys.into_iter()), [false, false, true, false]);
    }

    #[test]
    fn a_round_left_open_is_dropped_when_it_is_too_old() {
        let r = Rounds::default();
        let t0 = Instant::now();
        r.begin(1, t0);
        r.begin(2, t0 + ROUND_MAX_AGE / 2);
        // Round 1 is as old as the limit when round 3 begins: dropped; round 2 is not.
        r.begin(3, t0 + ROUND_MAX_AGE);
        r.note_written(["k"].into_iter());
        assert_eq!(r.fresh(1, ["k", "x"].into_iter()), [true, true], "round 1 no longer open");
        assert_eq!(r.fresh(2, ["k", "x"].into_iter()), [true, false]);
        assert_eq!(r.fresh(3, ["k", "x"].into_iter()), [true, false]);
    }
}
