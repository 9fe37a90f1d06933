//! A primary's fan-out policy (docs/design.md §3.4): what it does once some peers did not
//! acknowledge the states it sent. The primary first acts on each refusal (it installs a newer
//! view a peer told it, and reports a silent peer to a coordinator, which re-probes it and
//! evicts it if it is gone), then asks [`after_refusals`] what comes next.

use model::wire::View;

/// Why a peer did not acknowledge a fan-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer holds newer states of some keys: the primary is behind.
    Newer,
    /// The peer holds a newer view: the states went out under a stale epoch.
    Stale,
    /// No acknowledgement: refused, timed out, or failed on the peer. The primary reports
    /// it to a coordinator as suspect before it decides.
    Silent,
}

/// What the primary does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRefusals {
    /// Send the states again (to every peer of the view then current): a peer told a newer
    /// view, or a silent peer is still in the view (the coordinator found it alive: it was
    /// only slow, and the states are idempotent).
    Resend,
    /// The write is replicated as it must be: every peer that did not acknowledge has left the
    /// view since.
    Done,
    /// A peer still in the view refused for good (a learner's refusal as newer): the write is
    /// unavailable.
    Unavailable,
}

/// Whether a peer's refusal as holding newer states is acknowledged data the primary must
/// catch up with before it decides the write again: only a full member's (of `sent`, the view
/// the states went out under). A learner's newer states may be a deposed primary's leftovers,
/// and learners do not refuse.
pub fn newer_counts(sent: &View, peer: u32) -> bool {
    sent.members.contains(&peer)
}

/// The next step once the refusals were acted on and no full member told newer states;
/// `now` is the view the primary serves by then, `failed` the peers that did not acknowledge.
pub fn after_refusals(now: &View, failed: &[(u32, Refusal)]) -> AfterRefusals {
    let gone = |id: &u32| !now.members.contains(id) && !now.learners.contains(id);
    let resend = failed.iter().any(|(id, r)| *r == Refusal::Stale || (*r == Refusal::Silent && !gone(id)));
    if resend {
        AfterRefusals::Resend
    } else if failed.iter().all(|(id, _)| gone(id)) {
        AfterRefusals::Done
    } else {
        AfterRefusals::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::AfterRefusals::*;
    use super::Refusal::*;
    use super::*;

    fn view(members: &[u32], learners: &[u32]) -> View {
        View { epoch: 2, members: members.to_vec(), learners: learners.to_vec() }
    }

    #[test]
    fn the_next_step_after_refusals() {
        // What happened, the view after the refusals were acted on, the refusals, the next step.
        type Case = (&'static str, View, &'static [(u32, Refusal)], AfterRefusals);
        let cases: &[Case] = &[
            ("a peer told a newer view", view(&[0, 1, 2], &[]), &[(1, Stale)], Resend),
            ("a silent peer the coordinator kept is only slow", view(&[0, 1, 2], &[]), &[(2, Silent)], Resend),
            ("a silent peer was evicted", view(&[0, 1], &[]), &[(2, Silent)], Done),
            ("a silent learner is still a learner", view(&[0, 1], &[2]), &[(2, Silent)], Resend),
            ("two silent peers, both evicted", view(&[0], &[]), &[(1, Silent), (2, Silent)], Done),
            ("one evicted, one kept", view(&[0, 1], &[]), &[(1, Silent), (2, Silent)], Resend),
            ("a learner refused as newer", view(&[0, 1], &[2]), &[(2, Newer)], Unavailable),
            ("a learner refused as newer and left", view(&[0, 1], &[]), &[(2, Newer)], Done),
            ("a stale view beside an evicted peer", view(&[0, 1], &[]), &[(1, Stale), (2, Silent)], Resend),
            ("nothing failed", view(&[0, 1, 2], &[]), &[], Done),
        ];
        for (what, now, failed, next) in cases {
            assert_eq!(after_refusals(now, failed), *next, "{what}");
        }
    }

    #[test]
    fn only_a_full_members_newer_states_count() {
        let sent = view(&[0, 1], &[2]);
        assert!(newer_counts(&sent, 1));
        assert!(!newer_counts(&sent, 2), "a learner's");
        assert!(!newer_counts(&sent, 3), "a stranger's");
    }
}
