//! The checkout attempts an order replica has under way, for its horizon report
//! ([`model::wire::Horizon`], docs/design.md §6.4): the ledgers drop a transaction record once
//! the watermark the reports give passes the record's write (and its attempt's start), so an
//! attempt must be counted here, by its start, from before any of its steps can reach a
//! participant until its end is durable.
//!
//! - A new attempt is counted ([`Unfinished::note`]) when its start is chosen, before its
//!   `in_flight` record is written.
//! - An attempt found in flight (by the resume pass after a view change, or by a driver that
//!   finishes another's attempt) is counted, by its recorded start, when found, before the
//!   driver sends any step.
//! - An attempt is no longer counted once its end record is written ([`Unfinished::end`]), or
//!   once its order is found not to hold it in flight (a driver that stopped and whose attempt
//!   another node finished, an order replaced by a batch_init; the `resume` worker's sweep).
//! - After its resume pass under a view, the replica counts only the orders it is primary of
//!   in that view ([`Unfinished::resumed`]): the others' primaries count theirs.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The attempts under way at one order replica.
#[derive(Debug, Default)]
pub struct Unfinished {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (start in Unix ms, order key) of each attempt under way.
    running: BTreeSet<(u64, String)>,
    /// The epoch of the last view whose resume pass finished (0 before the first).
    resumed: u64,
}

impl Unfinished {
    /// Counts an attempt at order `key` started at `start`: a new one, or one found in flight.
    pub fn note(&self, key: &str, start: u64) {
        self.inner.lock().unwrap().running.insert((start, key.to_string()));
    }

    /// The attempt at order `key` started at `start` has ended (or is not in flight).
    pub fn end(&self, key: &str, start: u64) {
        self.inner.lock().unwrap().running.remove(&(start, key.to_string()));
    }

    /// The resume pass under view `epoch` has counted every attempt in flight among the
    /// orders `mine` says this replica is primary of; attempts of other orders are no longer
    /// counted here.
    pub fn resumed(&self, epoch: u64, mine: impl Fn(&str) -> bool) {
        let mut i = self.inner.lock().unwrap();
        i.running.retain(|(_, key)| mine(key));
        i.resumed = epoch;
    }

    /// The epoch of the last finished resume pass, and the start of the oldest attempt under
    /// way, or `now_ms` if none is.
    pub fn report(&self, now_ms: u64) -> (u64, u64) {
        let i = self.inner.lock().unwrap();
        let oldest = i.running.first().map_or(now_ms, |(start, _)| (*start).min(now_ms));
        (i.resumed, oldest)
    }

    /// The epoch of the last finished resume pass (0 before the first).
    pub fn resumed_under(&self) -> u64 {
        self.inner.lock().unwrap().resumed
    }

    /// The attempts under way that started before `before_ms`.
    pub fn started_before(&self, before_ms: u64) -> Vec<(u64, String)> {
        let i = self.inner.lock().unwrap();
        i.running.range(..(before_ms, String::new())).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_attempt_under_way_holds_the_report_back_until_it_ends() {
        let u = Unfinished::default();
        assert_eq!(u.report(1_000), (0, 1_000));
        let (a, b) = (2_000, 3_000);
        u.note("a", a);
        u.note("b", b);
        u.note("c", 500);
        assert_eq!(u.report(4_000), (0, 500));
        u.end("c", 500);
        assert_eq!(u.report(4_000), (0, a));
        u.end("a", a);
        assert_eq!(u.report(5_000), (0, b));
        u.end("b", b);
        assert_eq!(u.report(6_000), (0, 6_000));
        assert_eq!(u.started_before(7_000), vec![]);
    }

    #[test]
    fn after_a_resume_pass_only_the_replicas_own_orders_count() {
        let u = Unfinished::default();
        u.note("mine", 100);
        u.note("theirs", 50);
        assert_eq!(u.started_before(101), vec![(50, "theirs".to_string()), (100, "mine".to_string())]);
        u.resumed(7, |k| k == "mine");
        assert_eq!(u.report(1_000), (7, 100));
        assert_eq!(u.resumed_under(), 7);
    }
}
