//! The coordinator's copy of its service's membership view (DESIGN section 4), and the pure
//! rules around it: when a view reported by a replica is adopted, and which state a replica
//! has in a view.
//!
//! Coordinators do not decide views here; they learn them from replicas (at start, and from
//! every misdirected rejection) and route by the newest one they have seen.

use common::wire::{MemberState, View};
use std::sync::RwLock;

/// Why a reported view is not adopted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its epoch is older than the one we hold.
    Stale,
    /// It names a replica the topology does not configure: we could not route to it.
    UnknownReplica(u32),
    /// It has no full member, so no key would have a primary.
    Empty,
}

/// Decides whether `offered` replaces `current`, for a service with `replicas` configured
/// replicas (ids `0..replicas`). A view of the same epoch is accepted: views are decided once
/// per epoch, so it can only be the same view (or a harmless refresh of it).
pub fn adopt(current: &View, offered: &View, replicas: u32) -> Result<(), Refusal> {
    if offered.epoch < current.epoch {
        return Err(Refusal::Stale);
    }
    if let Some(&id) = offered.members.iter().chain(&offered.learners).find(|&&id| id >= replicas) {
        return Err(Refusal::UnknownReplica(id));
    }
    if offered.members.is_empty() {
        return Err(Refusal::Empty);
    }
    Ok(())
}

/// The state replica `id` has in `view`: a full member is `up`, a learner `learner`, anyone
/// else `evicted`.
pub fn member_state(view: &View, id: u32) -> MemberState {
    if view.members.contains(&id) {
        MemberState::Up
    } else if view.learners.contains(&id) {
        MemberState::Learner
    } else {
        MemberState::Evicted
    }
}

/// The view a coordinator currently routes by, shared by all its request handlers.
pub struct ViewCell {
    /// The newest adopted view.
    view: RwLock<View>,
    /// Number of configured replicas (ids `0..replicas`), to refuse views naming others.
    replicas: u32,
}

impl ViewCell {
    /// A cell holding the initial view of `replicas` configured replicas.
    pub fn new(replicas: u32) -> ViewCell {
        ViewCell { view: RwLock::new(View::initial(replicas)), replicas }
    }

    /// The current view.
    pub fn get(&self) -> View {
        self.view.read().unwrap().clone()
    }

    /// The epoch of the current view and the primary of `key` in it, read under one lock
    /// without copying the view (the per-request path).
    pub fn route(&self, key: &str) -> (u64, Option<u32>) {
        let view = self.view.read().unwrap();
        (view.epoch, view.primary(key))
    }

    /// Offers a view a replica reported; returns whether the held view changed.
    pub fn offer(&self, offered: View) -> bool {
        let mut view = self.view.write().unwrap();
        match adopt(&view, &offered, self.replicas) {
            Ok(()) if *view == offered => false,
            Ok(()) => {
                log::info!(
                    "adopted view epoch {} (was {}): members {:?}, learners {:?}",
                    offered.epoch,
                    view.epoch,
                    offered.members,
                    offered.learners
                );
                *view = offered;
                true
            }
            Err(Refusal::Stale) => {
                log::debug!("ignored view epoch {} older than ours ({})", offered.epoch, view.epoch);
                false
            }
            Err(why) => {
                log::warn!("refused view epoch {}: {why:?}", offered.epoch);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: u64, members: &[u32], learners: &[u32]) -> View {
        View { epoch, members: members.to_vec(), learners: learners.to_vec() }
    }

    #[test]
    fn adoption_rules() {
        let current = v(5, &[0, 1, 2], &[]);
        let cases = [
            (v(6, &[0, 2], &[]), Ok(())),
            (v(5, &[0, 1, 2], &[]), Ok(())),
            (v(9, &[0, 1], &[2]), Ok(())),
            (v(4, &[0, 1, 2], &[]), Err(Refusal::Stale)),
            (v(7, &[0, 3], &[]), Err(Refusal::UnknownReplica(3))),
            (v(7, &[0], &[5]), Err(Refusal::UnknownReplica(5))),
            (v(7, &[], &[0]), Err(Refusal::Empty)),
        ];
        for (offered, want) in cases {
            assert_eq!(adopt(&current, &offered, 3), want, "{offered:?}");
        }
    }

    #[test]
    fn cell_reports_changes_only() {
        let cell = ViewCell::new(3);
        assert_eq!(cell.get(), View::initial(3));
        assert!(!cell.offer(View::initial(3)), "same view is no change");
        assert!(cell.offer(v(2, &[1, 2], &[0])));
        assert!(!cell.offer(v(1, &[0, 1, 2], &[])), "older view is ignored");
        assert!(!cell.offer(v(3, &[7], &[])), "unknown replica is refused");
        assert_eq!(cell.get(), v(2, &[1, 2], &[0]));
        for key in ["a", "b", "42"] {
            assert_eq!(cell.route(key), (2, cell.get().primary(key)));
        }
    }

    #[test]
    fn member_states() {
        let view = v(3, &[0, 2], &[1]);
        assert_eq!(member_state(&view, 0), MemberState::Up);
        assert_eq!(member_state(&view, 1), MemberState::Learner);
        assert_eq!(member_state(&View { learners: vec![], ..view }, 1), MemberState::Evicted);
    }
}
