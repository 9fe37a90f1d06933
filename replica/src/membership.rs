//! What a replica knows of its service's membership (docs/design.md §4): the view it serves
//! by, its Paxos acceptor state, who is told when the view changes, and whether it started
//! without its data. The membership messages themselves are handled by
//! [`crate::node::Node::handle_paxos`] and the `recovery` worker, which persist the acceptor
//! state through the node's store before they install what it committed here.

use decide::paxos::AcceptorState;
use model::wire::View;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::RwLock;

/// Why a request was not for this node (a 421 carrying the view).
#[derive(Debug, Clone)]
pub struct Misdirected {
    /// This node's current view.
    pub view: View,
    /// Short explanation for logs.
    pub reason: &'static str,
}

/// One replica's membership state.
pub struct Membership {
    /// This replica's id.
    me: u32,
    /// The committed view this node serves by (a copy of `acceptor.committed`, readable
    /// without waiting for the acceptor's lock).
    view: RwLock<View>,
    /// This replica's Paxos acceptor state, persisted before every reply that depends on it.
    acceptor: tokio::sync::Mutex<AcceptorState>,
    /// The epoch of the view served by, for those who act when it changes
    /// ([`Membership::views`]).
    epochs: tokio::sync::watch::Sender<u64>,
    /// Set when the node started without membership state (its store was empty or lost)
    /// in a service of several replicas; cleared once it is not a full member of its view.
    /// While it is a full member in this state it has none of the data it should hold, so it
    /// serves nothing and reports itself unhealthy until it is evicted and re-joins.
    empty_start: AtomicBool,
}

impl Membership {
    /// Replica `me`'s membership, serving by the committed view of its acceptor state.
    pub fn new(me: u32, acceptor: AcceptorState) -> Membership {
        let view = acceptor.committed.clone();
        Membership {
            me,
            epochs: tokio::sync::watch::Sender::new(view.epoch),
            view: RwLock::new(view),
            acceptor: tokio::sync::Mutex::new(acceptor),
            empty_start: AtomicBool::new(false),
        }
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view.read().unwrap().clone()
    }

    /// The current view's epoch.
    pub fn epoch(&self) -> u64 {
        self.view.read().unwrap().epoch
    }

    /// Whether this node is the key's primary in its view.
    pub fn is_primary(&self, key: &str) -> bool {
        self.view.read().unwrap().primary(key) == Some(self.me)
    }

    /// Accepts a request for `key` routed under `epoch` only if the epoch is not older than
    /// ours and we are the key's primary.
    pub fn check_routed(&self, key: &str, epoch: Option<u64>) -> Result<(), Misdirected> {
        let view = self.view.read().unwrap();
        if epoch.is_some_and(|e| e < view.epoch) {
            return Err(Misdirected { view: view.clone(), reason: "stale epoch" });
        }
        if view.primary(key) != Some(self.me) {
            return Err(Misdirected { view: view.clone(), reason: "not primary" });
        }
        Ok(())
    }

    /// A misdirected rejection, with the current view, if that view is newer than `epoch`.
    pub fn refuse_older_than(&self, epoch: u64, reason: &'static str) -> Result<(), Misdirected> {
        let view = self.view.read().unwrap();
        if epoch < view.epoch {
            return Err(Misdirected { view: view.clone(), reason });
        }
        Ok(())
    }

    /// Serves by `view` if it is newer than the current one; returns whether it is.
    /// `committed` is told the view's epoch first, whether newer or not, while the view is
    /// held: the read leases learn of every committed view before anyone serves by it.
    pub fn install(&self, view: &View, committed: impl FnOnce(u64)) -> bool {
        let mut cur = self.view.write().unwrap();
        committed(view.epoch);
        if view.epoch <= cur.epoch {
            return false;
        }
        *cur = view.clone();
        self.epochs.send_replace(view.epoch);
        true
    }

    /// Tells every change of the view this node serves by (its epoch).
    pub fn views(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    /// The acceptor state, held until the guard drops: membership messages are handled one
    /// at a time.
    pub async fn acceptor(&self) -> tokio::sync::MutexGuard<'_, AcceptorState> {
        self.acceptor.lock().await
    }

    /// Marks the node as started without membership state (see [`Membership::needs_rejoin`]).
    pub fn started_empty(&self) {
        self.empty_start.store(true, SeqCst);
    }

    /// Whether the node is a full member that lost its data (an empty restart): it must be
    /// evicted and re-join as a learner before it serves. Once it is not a full member, it
    /// never needs to again.
    pub fn needs_rejoin(&self) -> bool {
        if !self.empty_start.load(SeqCst) {
            return false;
        }
        if self.view.read().unwrap().members.contains(&self.me) {
            return true;
        }
        self.empty_start.store(false, SeqCst);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(epoch: u64, members: &[u32], learners: &[u32]) -> View {
        View { epoch, members: members.to_vec(), learners: learners.to_vec() }
    }

    #[test]
    fn only_a_newer_view_is_served_by_and_told() {
        let m = Membership::new(0, AcceptorState::initial(3));
        let first = m.epoch();
        let mut views = m.views();
        let cases = [
            // (epoch offered, installed, epoch served by after)
            (first, false, first),
            (first + 2, true, first + 2),
            (first + 1, false, first + 2),
            (first + 2, false, first + 2),
            (first + 3, true, first + 3),
        ];
        for (epoch, installed, after) in cases {
            let mut told = None;
            assert_eq!(m.install(&view(epoch, &[0, 1], &[2]), |e| told = Some(e)), installed, "epoch {epoch}");
            assert_eq!(told, Some(epoch), "the leases hear of every committed view");
            assert_eq!(m.epoch(), after);
            assert_eq!(views.has_changed().unwrap(), installed, "epoch {epoch}");
            views.mark_unchanged();
        }
        assert_eq!(m.view().members, vec![0, 1]);
    }

    #[test]
    fn a_request_is_for_this_node_only_under_a_current_epoch_at_its_primary() {
        let m = Membership::new(0, AcceptorState::initial(1));
        let epoch = m.epoch();
        m.install(&view(epoch + 1, &[0], &[]), |_| {});
        let cases = [
            // (epoch routed under, accepted, reason)
            (None, true, ""),
            (Some(epoch + 1), true, ""),
            (Some(epoch + 5), true, ""),
            (Some(epoch), false, "stale epoch"),
        ];
        for (routed, accepted, reason) in cases {
            match m.check_routed("k", routed) {
                Ok(()) => assert!(accepted, "{routed:?}"),
                Err(e) => assert_eq!((accepted, e.reason, e.view.epoch), (false, reason, epoch + 1)),
            }
        }
        let other = Membership::new(1, AcceptorState::initial(1));
        assert_eq!(other.check_routed("k", None).unwrap_err().reason, "not primary");
        assert!(m.refuse_older_than(epoch, "old").is_err());
        assert!(m.refuse_older_than(epoch + 1, "old").is_ok());
    }

    #[test]
    fn an_empty_start_needs_a_rejoin_only_while_a_full_member() {
        let m = Membership::new(0, AcceptorState::initial(3));
        assert!(!m.needs_rejoin(), "a node that kept its state");
        m.started_empty();
        assert!(m.needs_rejoin(), "a full member without its data");
        let epoch = m.epoch();
        m.install(&view(epoch + 1, &[1, 2], &[0]), |_| {});
        assert!(!m.needs_rejoin(), "evicted, it re-joins as a learner");
        m.install(&view(epoch + 2, &[0, 1, 2], &[]), |_| {});
        assert!(!m.needs_rejoin(), "promoted after its catch-up, it holds the data");
    }
}
