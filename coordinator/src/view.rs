//! The coordinator's copy of its service's membership view (docs/design.md §4.1), and the pure
//! rules around it: when a view reported by a replica is adopted, and which state a replica
//! has in a view.
//!
//! Coordinators do not decide views here; they learn them from replicas (at start, and from
//! every misdirected rejection) and route by the newest one they have seen. The cell also
//! keeps the last few changes of the view it holds ([`ViewChange`], described by the pure
//! [`describe_change`]) for the status page: a person watching a failover sees what changed
//! and when.

use model::wire::{MemberState, View};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};

/// How many view changes a coordinator keeps for its status page (the oldest go first).
pub const VIEW_HISTORY: usize = 10;

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

/// What happened to the replicas whose state differs between view `old` and view `new`, in
/// id order and joined by ", ": "evict replica 2", "add replica 2 as a learner", "promote
/// replica 2", "demote replica 0 to a learner", "add replica 1 as a member" (the last two
/// only across several epochs: single changes evict, add learners and promote). `None` when
/// no replica changed state (a view learned with only its epoch newer than ours).
pub fn describe_change(old: &View, new: &View) -> Option<String> {
    let mut ids: Vec<u32> =
        old.members.iter().chain(&old.learners).chain(&new.members).chain(&new.learners).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let changes: Vec<String> = ids
        .into_iter()
        .filter_map(|id| {
            use MemberState::{Evicted, Learner, Up};
            Some(match (member_state(old, id), member_state(new, id)) {
                (Up, Up) | (Learner, Learner) | (Evicted, Evicted) => return None,
                (Up | Learner, Evicted) => format!("evict replica {id}"),
                (Evicted, Learner) => format!("add replica {id} as a learner"),
                (Learner, Up) => format!("promote replica {id}"),
                (Evicted, Up) => format!("add replica {id} as a member"),
                (Up, Learner) => format!("demote replica {id} to a learner"),
            })
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// Where a view the coordinator took came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewSource {
    /// This coordinator's own Paxos round chose it.
    Chosen,
    /// A replica told it (its view at start or on a probe, a misdirected rejection, a Paxos
    /// answer naming a view already decided).
    Adopted,
}

/// One change of the view a coordinator routes by, as its status page lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The epoch of the view taken.
    pub epoch: u64,
    /// The epoch of the view it replaced (more than one below `epoch` when the coordinator
    /// learned of several changes at once).
    pub from_epoch: u64,
    /// What changed ([`describe_change`]), or "adopted epoch N from a replica" when no
    /// replica changed state (a chosen view always changes one; should it not, "epoch N, no
    /// replica changed state").
    pub what: String,
    /// Whether this coordinator chose it or adopted it from a replica.
    pub source: ViewSource,
    /// For a view this coordinator chose, the change it set out to make and why ("evict
    /// replica 2 (no answer)", "re-join replica 2"); the view chosen may be another
    /// coordinator's proposal, which `what` then tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the coordinator took it, in milliseconds since the Unix epoch (its clock).
    pub at_ms: u64,
}

impl ViewChange {
    /// The change from `old` to `new`, taken at `at_ms`; `chosen` is the change this
    /// coordinator's own round set out to make (`None`: adopted from a replica).
    pub fn new(old: &View, new: &View, chosen: Option<&str>, at_ms: u64) -> ViewChange {
        let what = describe_change(old, new).unwrap_or_else(|| match chosen {
            None => format!("adopted epoch {} from a replica", new.epoch),
            Some(_) => format!("epoch {}, no replica changed state", new.epoch),
        });
        ViewChange {
            epoch: new.epoch,
            from_epoch: old.epoch,
            what,
            source: if chosen.is_some() { ViewSource::Chosen } else { ViewSource::Adopted },
            reason: chosen.map(str::to_string),
            at_ms,
        }
    }
}

/// The view a coordinator currently routes by, shared by all its request handlers, and the
/// last [`VIEW_HISTORY`] changes of it.
pub struct ViewCell {
    /// The newest adopted view.
    view: RwLock<View>,
    /// Number of configured replicas (ids `0..replicas`), to refuse views naming others.
    replicas: u32,
    /// The last changes, oldest first; written under the view's write lock, so in the order
    /// the views were taken.
    history: Mutex<VecDeque<ViewChange>>,
}

impl ViewCell {
    /// A cell holding the initial view of `replicas` configured replicas.
    pub fn new(replicas: u32) -> ViewCell {
        ViewCell {
            view: RwLock::new(View::initial(replicas)),
            replicas,
            history: Mutex::new(VecDeque::with_capacity(VIEW_HISTORY)),
        }
    }

    /// The last changes of the view (at most [`VIEW_HISTORY`]), oldest first.
    pub fn changes(&self) -> Vec<ViewChange> {
        self.history.lock().unwrap().iter().cloned().collect()
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
        self.take(offered, None)
    }

    /// Offers a view this coordinator's own Paxos round chose while making the change `what`
    /// (kept with it in the history); returns whether the held view changed.
    pub fn offer_chosen(&self, chosen: View, what: &str) -> bool {
        self.take(chosen, Some(what))
    }

    fn take(&self, offered: View, chosen: Option<&str>) -> bool {
        let mut view = self.view.write().unwrap();
        match adopt(&view, &offered, self.replicas) {
            Ok(()) if *view == offered => false,
            Ok(()) => {
                let mut history = self.history.lock().unwrap();
                if history.len() == VIEW_HISTORY {
                    history.pop_front();
                }
                history.push_back(ViewChange::new(&view, &offered, chosen, model::side::now_ms()));
                drop(history);
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
    fn the_difference_between_two_views() {
        let cases = [
            (v(4, &[0, 1, 2], &[]), v(5, &[0, 1], &[]), Some("evict replica 2")),
            (v(5, &[0, 1], &[]), v(6, &[0, 1], &[2]), Some("add replica 2 as a learner")),
            (v(6, &[0, 1], &[2]), v(7, &[0, 1, 2], &[]), Some("promote replica 2")),
            (v(6, &[0, 1], &[2]), v(7, &[0, 1], &[]), Some("evict replica 2")),
            // Several epochs at once: the net change, replica by replica in id order.
            (v(1, &[0, 1, 2], &[]), v(5, &[0, 2], &[1]), Some("demote replica 1 to a learner")),
            (v(3, &[0, 1], &[]), v(9, &[1, 2], &[]), Some("evict replica 0, add replica 2 as a member")),
            (v(3, &[2, 0], &[1]), v(4, &[0, 2, 1], &[]), Some("promote replica 1")),
            // Only the epoch moved (evicted and re-joined in between), or nothing at all.
            (v(3, &[0, 1, 2], &[]), v(7, &[0, 1, 2], &[]), None),
            (v(3, &[0, 1], &[2]), v(3, &[1, 0], &[2]), None),
        ];
        for (old, new, want) in cases {
            assert_eq!(describe_change(&old, &new).as_deref(), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_change_says_where_the_view_came_from() {
        let adopted = ViewChange::new(&v(3, &[0, 1, 2], &[]), &v(7, &[0, 1, 2], &[]), None, 42);
        let want = ViewChange {
            epoch: 7,
            from_epoch: 3,
            what: "adopted epoch 7 from a replica".into(),
            source: ViewSource::Adopted,
            reason: None,
            at_ms: 42,
        };
        assert_eq!(adopted, want);
        let chosen =
            ViewChange::new(&v(3, &[0, 1, 2], &[]), &v(4, &[0, 1], &[]), Some("evict replica 2 (no answer)"), 9);
        assert_eq!((chosen.what.as_str(), chosen.source), ("evict replica 2", ViewSource::Chosen));
        assert_eq!(chosen.reason.as_deref(), Some("evict replica 2 (no answer)"));
        assert_eq!(
            serde_json::to_value(&chosen).unwrap(),
            serde_json::json!({"epoch": 4, "from_epoch": 3, "what": "evict replica 2", "source": "chosen",
                "reason": "evict replica 2 (no answer)", "at_ms": 9})
        );
        assert!(serde_json::to_value(&adopted).unwrap().get("reason").is_none(), "no reason on adopted views");
    }

    #[test]
    fn the_cell_keeps_the_last_changes_in_order() {
        let cell = ViewCell::new(3);
        assert!(cell.changes().is_empty());
        assert!(!cell.offer(View::initial(3)), "the same view is no change");
        assert!(cell.offer_chosen(v(2, &[0, 1], &[]), "evict replica 2"));
        assert!(cell.offer(v(3, &[0, 1], &[2])));
        assert!(!cell.offer(v(2, &[0, 1], &[])), "an older view is no change");
        let changes = cell.changes();
        let seen: Vec<(u64, &str, ViewSource)> = changes.iter().map(|c| (c.epoch, c.what.as_str(), c.source)).collect();
        assert_eq!(
            seen,
            vec![(2, "evict replica 2", ViewSource::Chosen), (3, "add replica 2 as a learner", ViewSource::Adopted)]
        );
        assert!(changes.iter().all(|c| c.at_ms > 0), "wall-clock times: {changes:?}");
        // Bounded: the oldest go first.
        for epoch in 4..30 {
            assert!(cell.offer(v(epoch, &[0, 1], &[])));
        }
        let epochs: Vec<u64> = cell.changes().iter().map(|c| c.epoch).collect();
        assert_eq!(epochs, (20..30).collect::<Vec<u64>>());
    }

    #[test]
    fn member_states() {
        let view = v(3, &[0, 2], &[1]);
        assert_eq!(member_state(&view, 0), MemberState::Up);
        assert_eq!(member_state(&view, 1), MemberState::Learner);
        assert_eq!(member_state(&View { learners: vec![], ..view }, 1), MemberState::Evicted);
    }
}
