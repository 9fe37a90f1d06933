//! A replica's re-join (docs/design.md §4.6): whether a learner gets a full copy before the
//! anti-entropy rounds, and when the rounds have made it clean enough to be promoted.

use model::antientropy::RoundReport;
use std::collections::HashSet;

/// Whether a learner gets a full copy streamed from a full member before the rounds: when it
/// is empty (`empty`: its root is the empty store's), or differs from that member in more than
/// half of the `buckets` (`differing`; `None` when the member's digests did not come, which
/// counts as every bucket). Otherwise anti-entropy repairs the few that differ, which costs
/// less than copying everything.
pub fn needs_full_copy(empty: bool, differing: Option<usize>, buckets: usize) -> bool {
    empty || differing.unwrap_or(buckets) > buckets / 2
}

/// The buckets a re-join round found learner `id` clean in: those it listed, except the
/// buckets of keys written during the round whose newest state the learner was not known to
/// hold (deferred, `decide::antientropy::Deferred`: counted clean, the promoted replica
/// could serve a key whose state it lacks). `None` when the round disqualifies it: it did
/// not answer, or a repair was planned on it.
pub fn clean_buckets(report: &RoundReport, id: u32) -> Option<Vec<u8>> {
    if !report.roots.contains_key(&id) || report.unanswered.contains(&id) || report.planned.contains_key(&id) {
        return None;
    }
    let unsettled = report.unsettled.get(&id);
    Some(report.listed.iter().copied().filter(|b| !unsettled.is_some_and(|u| u.contains(b))).collect())
}

/// The promotion rule, over the rounds run for one learner's re-join: the learner is promoted
/// once rounds in a row have listed every divergent bucket and found it clean in each. Rounds
/// are capped (anti-entropy lists a bounded number of buckets per round), so the clean buckets
/// add up over rounds; a round that disqualifies the learner starts the count again. What the
/// learner holds beyond the full members' copies (states whose fan-out failed) is never
/// deleted, so its digest need not equal theirs; once it votes, the next rounds settle those
/// keys.
#[derive(Debug, Default)]
pub struct Promotion {
    clean: HashSet<u8>,
}

impl Promotion {
    /// Takes one round's report; true when learner `id` may be promoted now.
    pub fn after_round(&mut self, report: &RoundReport, id: u32) -> bool {
        let Some(found) = clean_buckets(report, id) else {
            self.clean.clear();
            return false;
        };
        self.clean.extend(found);
        for b in report.unsettled.get(&id).into_iter().flatten() {
            self.clean.remove(b);
        }
        report.divergent_buckets.iter().all(|b| self.clean.contains(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learner_gets_a_full_copy_when_empty_or_mostly_different() {
        let cases = [
            (true, Some(0), true, "empty"),
            (false, Some(0), false, "equal"),
            (false, Some(128), false, "half differs"),
            (false, Some(129), true, "more than half differs"),
            (false, None, true, "the source's digests did not come"),
        ];
        for (empty, differing, copy, what) in cases {
            assert_eq!(needs_full_copy(empty, differing, 256), copy, "{what}");
        }
    }

    #[test]
    fn the_buckets_a_round_finds_a_learner_clean_in() {
        let base = RoundReport {
            roots: [(0, String::new()), (2, String::new())].into(),
            listed: vec![3, 7, 9],
            ..Default::default()
        };
        let r = |f: fn(&mut RoundReport)| {
            let mut r = base.clone();
            f(&mut r);
            clean_buckets(&r, 2)
        };
        assert_eq!(r(|_| {}), Some(vec![3, 7, 9]), "every listed bucket");
        assert_eq!(r(|r| r.unsettled = [(2, [7].into())].into()), Some(vec![3, 9]), "a deferred key it lacks");
        assert_eq!(r(|r| r.unsettled = [(0, [7].into())].into()), Some(vec![3, 7, 9]), "another replica's");
        assert_eq!(r(|r| r.planned = [(2, 1)].into()), None, "a planned repair");
        assert_eq!(r(|r| r.unanswered = vec![2]), None, "its listing did not come");
        assert_eq!(
            r(|r| {
                r.roots.remove(&2);
            }),
            None,
            "its digests did not come"
        );
    }

    fn round(divergent: &[u8], listed: &[u8]) -> RoundReport {
        RoundReport {
            roots: [(0, String::new()), (2, String::new())].into(),
            divergent_buckets: divergent.to_vec(),
            listed: listed.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_learner_is_promoted_once_every_divergent_bucket_was_found_clean() {
        // Capped rounds: the clean buckets add up.
        let mut p = Promotion::default();
        assert!(!p.after_round(&round(&[1, 2, 3], &[1, 2]), 2));
        assert!(p.after_round(&round(&[1, 2, 3], &[3]), 2));
        // Nothing divergent: promoted after one round.
        assert!(Promotion::default().after_round(&round(&[], &[]), 2));
        // A planned repair starts the count again.
        let mut p = Promotion::default();
        assert!(!p.after_round(&round(&[1, 2], &[1]), 2));
        let mut repaired = round(&[1, 2], &[2]);
        repaired.planned = [(2, 5)].into();
        assert!(!p.after_round(&repaired, 2));
        assert!(!p.after_round(&round(&[1, 2], &[2]), 2), "bucket 1 was forgotten with the disqualified round");
        assert!(p.after_round(&round(&[1, 2], &[1]), 2));
        // A bucket unsettled in a later round is not clean any more.
        let mut p = Promotion::default();
        assert!(!p.after_round(&round(&[1, 2], &[1]), 2));
        let mut unsettled = round(&[1, 2], &[2]);
        unsettled.unsettled = [(2, [1].into())].into();
        assert!(!p.after_round(&unsettled, 2));
    }
}
