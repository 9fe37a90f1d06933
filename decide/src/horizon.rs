//! The release watermark of the saga's transaction records (docs/design.md §6.4): from the
//! order replicas' horizon reports ([`model::wire::Horizon`]), a time W such that every
//! checkout attempt under way when the reports were made started at W or after. A ledger
//! replica drops a transaction record written before W (and of an attempt started before W)
//! once the grace period has passed since it learned W (a late copy of a step arrives within
//! it).
//!
//! Why a record written at time T is never dropped while its attempt A is under way: a
//! watermark above T (less the skew between clocks) comes from reports all made after T, and
//! A was counted by the replica driving it from before T (before its first step) by its
//! start, so such reports hold W back to A's start unless A had ended, or the orders moved to
//! another view's primaries:
//! - every full member of the newest view E reported under E after its resume pass under E:
//!   between them they are the primaries of every order, and each counts every attempt in
//!   flight among its orders (found by the pass, by its start, or begun since);
//! - the reports at E with no newer view accepted or committed come from a majority of the
//!   service's replicas. A view newer than E chosen later needs a majority that accepted it,
//!   so one of those reporters accepted it after its report: the new view's primaries begin
//!   their attempts after that report, so after its `oldest_ms`, less the clocks' skew.
//!
//! W is the smallest `oldest_ms` reported at E less [`CLOCK_MARGIN_MS`], twice the skew allowed
//! between the clocks of the cluster's hosts.

use model::wire::Horizon;

/// What the watermark keeps below the reported times, in ms: twice the largest difference
/// allowed between two hosts' clocks (5 s; hosts kept in step by NTP are within milliseconds).
pub const CLOCK_MARGIN_MS: u64 = 10_000;

/// The watermark the reports of an order service of `replicas` replicas allow, or why they
/// allow none (the ledgers then keep their records until a later round).
pub fn watermark(replicas: u32, reports: &[Horizon]) -> Result<u64, String> {
    let newest = reports.iter().map(|r| r.view.epoch).max().ok_or("no order replica answered")?;
    let at_newest: Vec<&Horizon> = reports.iter().filter(|r| r.view.epoch == newest).collect();
    let settled = at_newest.iter().filter(|r| !r.pending).count();
    if settled * 2 <= replicas as usize {
        return Err(format!("{settled} of {replicas} order replicas settled in view {newest}"));
    }
    let view = &at_newest[0].view;
    for member in &view.members {
        match at_newest.iter().find(|r| r.replica == *member) {
            None => return Err(format!("order replica {member}, a member of view {newest}, did not report")),
            Some(r) if r.resumed != newest => {
                return Err(format!("order replica {member} has not resumed its checkouts under view {newest}"))
            }
            Some(_) => {}
        }
    }
    let oldest = at_newest.iter().map(|r| r.oldest_ms).min().expect("a majority reported");
    Ok(oldest.saturating_sub(CLOCK_MARGIN_MS))
}

/// The watermarks a ledger replica learned and not yet applied: each is applied a grace
/// period after it was learned (a late copy of a step of a finished attempt arrives within
/// it).
#[derive(Debug)]
pub struct Releases {
    grace: std::time::Duration,
    /// Watermarks learned, rising, each with when it may be applied.
    waiting: std::collections::VecDeque<(u64, std::time::Instant)>,
}

impl Releases {
    /// No watermark learned yet; each one learned waits `grace`.
    pub fn new(grace: std::time::Duration) -> Releases {
        Releases { grace, waiting: Default::default() }
    }

    /// Notes watermark `w` learned at `now`; one not above the last learned adds nothing.
    pub fn learned(&mut self, w: u64, now: std::time::Instant) {
        if self.waiting.back().is_none_or(|(last, _)| w > *last) {
            self.waiting.push_back((w, now + self.grace));
        }
    }

    /// The highest watermark whose grace has passed at `now`, if one has since the last call.
    pub fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        let mut out = None;
        while let Some((w, at)) = self.waiting.front().copied() {
            if at > now {
                break;
            }
            self.waiting.pop_front();
            out = Some(w);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::wire::View;
    use std::time::{Duration, Instant};

    /// A watermark is applied only once its grace has passed since it was learned, and a
    /// lower one learned later adds nothing.
    #[test]
    fn a_watermark_is_applied_a_grace_period_after_it_was_learned() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Releases::new(s(10));
        r.learned(100, t0);
        r.learned(90, t0 + s(1));
        r.learned(200, t0 + s(5));
        assert_eq!(r.due(t0 + s(9)), None);
        assert_eq!(r.due(t0 + s(10)), Some(100));
        assert_eq!(r.due(t0 + s(12)), None);
        r.learned(300, t0 + s(13));
        assert_eq!(r.due(t0 + s(30)), Some(300), "the highest of those due");
        assert_eq!(r.due(t0 + s(40)), None);
    }

    fn report(replica: u32, epoch: u64, members: &[u32], resumed: u64, oldest_ms: u64) -> Horizon {
        let view = View { epoch, members: members.to_vec(), learners: vec![] };
        Horizon { replica, view, pending: false, resumed, oldest_ms }
    }

    #[test]
    fn the_watermark_is_the_oldest_report_less_the_margin() {
        let all = [0, 1, 2];
        let reports = [report(0, 3, &all, 3, 50_000), report(1, 3, &all, 3, 40_000), report(2, 3, &all, 3, 60_000)];
        assert_eq!(watermark(3, &reports), Ok(40_000 - CLOCK_MARGIN_MS));
        // Early times never wrap.
        assert_eq!(watermark(3, &[report(0, 3, &all, 3, 5), reports[1].clone(), reports[2].clone()]), Ok(0));
    }

    /// Each case: the reports, and whether they allow a watermark.
    #[test]
    fn a_watermark_needs_every_member_resumed_and_a_settled_majority() {
        let all = [0, 1, 2];
        let pending = |mut r: Horizon| {
            r.pending = true;
            r
        };
        let cases: Vec<(&str, Vec<Horizon>, bool)> = vec![
            ("every member", vec![report(0, 3, &all, 3, 9), report(1, 3, &all, 3, 9), report(2, 3, &all, 3, 9)], true),
            ("a member silent", vec![report(0, 3, &all, 3, 9), report(1, 3, &all, 3, 9)], false),
            (
                "a member not resumed",
                vec![report(0, 3, &all, 3, 9), report(1, 3, &all, 2, 9), report(2, 3, &all, 3, 9)],
                false,
            ),
            (
                "an evicted replica silent: the two members are a majority",
                vec![report(0, 4, &[0, 1], 4, 9), report(1, 4, &[0, 1], 4, 9)],
                true,
            ),
            (
                "an evicted replica behind: not counted, the members still a majority",
                vec![report(0, 4, &[0, 1], 4, 9), report(1, 4, &[0, 1], 4, 9), report(2, 3, &all, 3, 1)],
                true,
            ),
            (
                "a reporter behind the newest view: its member is missing from it",
                vec![report(0, 4, &all, 4, 9), report(1, 4, &all, 4, 9), report(2, 3, &all, 3, 9)],
                false,
            ),
            (
                "a view change under way at one of a bare majority",
                vec![report(0, 4, &[0, 1], 4, 9), pending(report(1, 4, &[0, 1], 4, 9))],
                false,
            ),
            (
                "a view change under way (or abandoned) at one of three: the other two settled",
                vec![report(0, 3, &all, 3, 9), report(1, 3, &all, 3, 9), pending(report(2, 3, &all, 3, 9))],
                true,
            ),
            ("one replica of three", vec![report(0, 5, &[0], 5, 9)], false),
            ("nobody", vec![], false),
        ];
        for (name, reports, ok) in cases {
            assert_eq!(watermark(3, &reports).is_ok(), ok, "{name}: {:?}", watermark(3, &reports));
        }
    }

    /// A report from a replica that is not a member (a learner, or one evicted but alive)
    /// still holds the watermark back by its time: it may be the one that takes part in the
    /// next view change. So does a member's with a view change under way.
    #[test]
    fn every_report_at_the_newest_view_holds_the_watermark_back() {
        let all = [0, 1, 2];
        let mut busy = report(2, 3, &all, 3, 1_000_000);
        busy.pending = true;
        busy.oldest_ms = 20_000;
        let reports = [report(0, 3, &all, 3, 90_000), report(1, 3, &all, 3, 80_000), busy];
        assert_eq!(watermark(3, &reports), Ok(20_000 - CLOCK_MARGIN_MS));
    }

    #[test]
    fn a_learners_report_holds_the_watermark_back() {
        let members = [0, 1];
        let reports =
            [report(0, 4, &members, 4, 90_000), report(1, 4, &members, 4, 80_000), report(2, 4, &members, 0, 30_000)];
        assert_eq!(watermark(3, &reports), Ok(30_000 - CLOCK_MARGIN_MS));
    }
}
