//! Read leases (docs/design.md §4.4): a primary serves reads only while a majority of the
//! replicas (itself included) has recently promised not to help depose it.
//!
//! Every replica is both a holder and a grantor:
//!
//! - As a holder it pings its peers a few times per lease period. A peer's answer is a
//!   grant; the holder counts it from the moment it *sent* the ping, so its lease ends no
//!   later than the grantor's promise does. It holds a lease while grants from enough peers
//!   to make a majority with itself are younger than the lease.
//! - As a grantor it refuses to accept a view that removes a full member until every grant
//!   it gave that member has run out (plus a margin for clock rate drift), and from that
//!   moment gives that member no more grants, until it learns a committed view of that epoch
//!   or later (which either keeps the member or tells it, through the next ping, that it is
//!   out), or until [`Leases::withhold_limit`] has passed since it last accepted such a view
//!   (the proposal then never committed: its coordinator died mid-change and the member may
//!   well be alive; withholding for ever would leave its keys unreadable). A later
//!   acceptance of that removal, by whichever proposer, waits out the grants given since,
//!   as every acceptance does. A replica accepting a view that removes itself stops counting
//!   its own vote, within the same bound.
//!
//! So a view that deposes a primary is chosen only after a majority of acceptors waited out
//! their grants, and any majority of grants the old primary still counts overlaps that
//! majority: the old primary's lease has run out before a new primary can serve a write it
//! would not show. All times are on the monotonic clock ([`Instant`]), which keeps running
//! while a process is stopped.
//!
//! [`Leases`] is the pure bookkeeping; `node` sends the pings and does the waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lease state of one replica.
#[derive(Debug, Clone)]
pub struct Leases {
    me: u32,
    replicas: u32,
    lease: Duration,
    /// As holder: the send time of the youngest grant from each peer.
    held: HashMap<u32, Instant>,
    /// As grantor: when this replica last granted each peer.
    given: HashMap<u32, Instant>,
    /// As grantor: replicas refused grants until a committed view of this epoch or later,
    /// with when the refusal began (it ends after [`Leases::withhold_limit`]). May hold `me`:
    /// then this replica does not count its own vote.
    withheld: HashMap<u32, (u64, Instant)>,
}

impl Leases {
    /// Lease state of replica `me` in a service of `replicas` configured replicas.
    pub fn new(me: u32, replicas: u32, lease: Duration) -> Leases {
        Leases { me, replicas, lease, held: HashMap::new(), given: HashMap::new(), withheld: HashMap::new() }
    }

    /// The lease period.
    pub fn period(&self) -> Duration {
        self.lease
    }

    /// How long a grantor keeps its promise past the grant: the lease plus a tenth for clock
    /// rate differences between processes.
    pub fn promise(&self) -> Duration {
        self.lease + self.lease / 10
    }

    /// How long grants stay withheld for a removal that is not committed: ten lease periods,
    /// far longer than a proposal takes to commit once its acceptors have waited out their
    /// grants (one promise, [`Leases::promise`], then a Paxos round).
    pub fn withhold_limit(&self) -> Duration {
        self.lease * 10
    }

    /// Whether grants to `id` are withheld at `now`.
    fn withholds(&self, id: u32, now: Instant) -> bool {
        self.withheld.get(&id).is_some_and(|(_, since)| now.saturating_duration_since(*since) < self.withhold_limit())
    }

    /// Whether the replica may serve reads at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        let own = usize::from(!self.withholds(self.me, now));
        let fresh = self.held.values().filter(|sent| now.saturating_duration_since(**sent) < self.lease).count();
        own + fresh >= crate::paxos::majority(self.replicas)
    }

    /// Records a grant from `peer` for a ping sent at `sent`.
    pub fn granted_by(&mut self, peer: u32, sent: Instant) {
        let t = self.held.entry(peer).or_insert(sent);
        if sent > *t {
            *t = sent;
        }
    }

    /// Answers a ping from `peer` at `now`: true (and remembered) if the peer may have the
    /// grant, false while it is withheld.
    pub fn grant(&mut self, peer: u32, now: Instant) -> bool {
        if self.withholds(peer, now) {
            return false;
        }
        if self.withheld.remove(&peer).is_some() {
            log::warn!("replica {}: granting replica {peer} again: the view removing it did not commit", self.me);
        }
        self.given.insert(peer, now);
        true
    }

    /// Before accepting a view of `epoch` that removes the full members `removed`: stops
    /// granting them and says how long to wait, from `now`, until the grants already given
    /// have run out.
    pub fn withhold(&mut self, removed: &[u32], epoch: u64, now: Instant) -> Duration {
        let mut wait = Duration::ZERO;
        for &id in removed {
            let e = self.withheld.entry(id).or_insert((epoch, now));
            *e = (e.0.max(epoch), now);
            if let Some(given) = self.given.get(&id) {
                wait = wait.max((*given + self.promise()).saturating_duration_since(now));
            }
        }
        wait
    }

    /// A view of `epoch` is committed: grants withheld for that epoch or earlier resume.
    pub fn committed(&mut self, epoch: u64) {
        self.withheld.retain(|_, (e, _)| *e > epoch);
    }
}

/// The full members of `old` that `new` no longer has as full members.
pub fn removed_members(old: &[u32], new: &[u32]) -> Vec<u32> {
    old.iter().filter(|id| !new.contains(id)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_single_replica_always_holds_its_lease() {
        let l = Leases::new(0, 1, L);
        assert!(l.holds(Instant::now()));
    }

    #[test]
    fn holding_needs_fresh_grants_from_a_majority_with_itself() {
        let t0 = Instant::now();
        // (replicas, grant ages in ms, holds)
        let cases: &[(u32, &[u64], bool)] = &[
            (3, &[], false),
            (3, &[10], true),
            (3, &[999], true),
            (3, &[1000], false),
            (3, &[1500, 200], true),
            (5, &[100], false),
            (5, &[100, 900], true),
            (5, &[100, 1200], false),
        ];
        for (i, (n, ages, want)) in cases.iter().enumerate() {
            let now = t0 + ms(5000);
            let mut l = Leases::new(0, *n, L);
            for (peer, age) in ages.iter().enumerate() {
                l.granted_by(peer as u32 + 1, now - ms(*age));
            }
            assert_eq!(l.holds(now), *want, "case {i}: {n} replicas, ages {ages:?}");
        }
    }

    #[test]
    fn an_older_grant_arriving_late_does_not_shorten_or_extend_the_lease() {
        let t0 = Instant::now();
        let mut l = Leases::new(0, 3, L);
        l.granted_by(1, t0 + ms(500));
        l.granted_by(1, t0); // a reply to an earlier ping, delivered late
        assert!(l.holds(t0 + ms(1400)));
        assert!(!l.holds(t0 + ms(1500)));
    }

    #[test]
    fn a_replica_that_accepted_its_own_removal_stops_counting_itself() {
        let t0 = Instant::now();
        let mut l = Leases::new(0, 3, L);
        l.granted_by(1, t0);
        assert!(l.holds(t0));
        assert_eq!(l.withhold(&[0], 7, t0), Duration::ZERO);
        assert!(!l.holds(t0), "one grant alone is not a majority of three");
        l.granted_by(2, t0);
        assert!(l.holds(t0));
        l.committed(7);
        l.granted_by(2, t0 - ms(2000));
        assert!(l.holds(t0));
    }

    #[test]
    fn a_grantor_waits_out_its_promise_before_accepting_a_removal() {
        let t0 = Instant::now();
        let mut l = Leases::new(1, 3, L);
        assert!(l.grant(0, t0));
        // (now in ms after the grant, expected wait in ms)
        for (at, wait) in [(0, 1100), (300, 800), (1100, 0), (5000, 0)] {
            let mut l = l.clone();
            assert_eq!(l.withhold(&[0], 4, t0 + ms(at)), ms(wait), "at {at} ms");
        }
        // A member never granted needs no wait.
        assert_eq!(l.withhold(&[2], 4, t0), Duration::ZERO);
    }

    #[test]
    fn withheld_grants_resume_only_with_a_commit_of_that_epoch_or_later() {
        let t0 = Instant::now();
        let mut l = Leases::new(1, 3, L);
        l.withhold(&[0], 5, t0);
        assert!(!l.grant(0, t0));
        assert!(l.grant(2, t0), "only the removed member is refused");
        l.committed(4);
        assert!(!l.grant(0, t0), "an older commit says nothing about epoch 5");
        l.withhold(&[0], 6, t0);
        l.committed(5);
        assert!(!l.grant(0, t0), "a later proposal still withholds");
        l.committed(6);
        assert!(l.grant(0, t0));
    }

    /// A removal that never commits (its proposer died, the member is alive) withholds
    /// grants for a bounded time only: before, the member's keys answered 503 for ever.
    #[test]
    fn withheld_grants_resume_when_the_removal_does_not_commit_in_time() {
        let t0 = Instant::now();
        let mut l = Leases::new(1, 3, L);
        let limit = l.withhold_limit();
        l.withhold(&[0, 1], 5, t0);
        assert!(!l.grant(0, t0 + limit - ms(1)));
        assert!(!l.holds(t0 + limit - ms(1)), "its own vote withheld too, and no grants");
        assert!(l.grant(0, t0 + limit));
        l.granted_by(2, t0 + limit);
        assert!(l.holds(t0 + limit + ms(1)), "its own vote counts again");
        // Accepting the removal again withholds again, from then on.
        l.withhold(&[0], 6, t0 + limit + ms(5));
        assert!(!l.grant(0, t0 + limit + ms(10)));
    }

    #[test]
    fn any_majority_of_grants_overlaps_any_majority_that_waited() {
        // Holder 0 of 3 replicas holds its lease through a grant from 1 at t0. Replicas 1
        // and 2 then accept a view removing 0: 1 must wait until its promise ran out, and by
        // then 0's lease, counted from the earlier send time, has run out too.
        let t0 = Instant::now();
        let sent = t0 - ms(3);
        let mut holder = Leases::new(0, 3, L);
        let mut g1 = Leases::new(1, 3, L);
        assert!(g1.grant(0, t0));
        holder.granted_by(1, sent);
        let accept_at = t0 + ms(200);
        let wait = g1.withhold(&[0], 2, accept_at);
        assert!(holder.holds(accept_at));
        assert!(!holder.holds(accept_at + wait), "the holder's lease outlived the grantor's promise");
        assert!(!g1.grant(0, accept_at + wait), "no fresh grant during the change");
    }

    #[test]
    fn removed_members_are_those_no_longer_full_members() {
        assert_eq!(removed_members(&[0, 1, 2], &[1, 2]), vec![0]);
        assert_eq!(removed_members(&[0, 1, 2], &[0, 1, 2]), Vec::<u32>::new());
        assert_eq!(removed_members(&[1, 2], &[0, 1, 2]), Vec::<u32>::new());
        assert_eq!(removed_members(&[0, 1, 2], &[2]), vec![0, 1]);
    }
}
