//! What a primary still owes its peers before it may answer from a document again
//! (`Node::ensure_replicated`, docs/design.md §4): the keys whose last write here is not
//! known to be on every peer (its fan-out failed, is under way, or was dropped), and, per
//! view, the documents inherited from an older view that it has already sent to every
//! member.
//!
//! The state of the node's replication work, kept apart from the rest of the node, in
//! memory only: a restarted node has no failed fan-out to remember (its writes went out or
//! were never answered), and it sends every inherited document again once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The keys a primary owes its peers.
#[derive(Default)]
pub struct Unsettled {
    /// Keys whose last write here was not acknowledged by every peer, by document.
    unreplicated: Mutex<HashMap<String, HashSet<String>>>,
    /// The documents whose state from an older epoch this node has sent to every member
    /// under the epoch it holds.
    settled: Mutex<(u64, HashSet<String>)>,
}

impl Unsettled {
    /// The fan-out of a write of `keys` ended: acknowledged by every peer (`ok`) or not. A
    /// write notes its keys as not acknowledged before it stores them, and as acknowledged
    /// once every peer did.
    pub fn fanned_out(&self, keys: impl IntoIterator<Item = String>, ok: bool) {
        let mut unreplicated = self.unreplicated.lock().unwrap();
        for k in keys {
            let doc = model::side::doc_of(&k);
            if ok {
                if let Some(owed) = unreplicated.get_mut(doc) {
                    owed.remove(&k);
                    if owed.is_empty() {
                        unreplicated.remove(doc);
                    }
                }
            } else {
                unreplicated.entry(doc.to_string()).or_default().insert(k);
            }
        }
    }

    /// The keys of document `doc` (itself and its side records, `model::side`) whose last
    /// write is not known to be on every peer.
    pub fn unreplicated_of(&self, doc: &str) -> Vec<String> {
        let unreplicated = self.unreplicated.lock().unwrap();
        unreplicated.get(doc).map(|owed| owed.iter().cloned().collect()).unwrap_or_default()
    }

    /// Whether document `doc`'s inherited state was sent to every member under `epoch`. A
    /// new epoch forgets every earlier one's.
    pub fn settled_in(&self, doc: &str, epoch: u64) -> bool {
        let mut settled = self.settled.lock().unwrap();
        if settled.0 != epoch {
            *settled = (epoch, HashSet::new());
        }
        settled.1.contains(doc)
    }

    /// Document `doc`'s inherited state was sent to every member under `epoch` (nothing is
    /// noted if the epoch held has moved on since).
    pub fn settle(&self, doc: &str, epoch: u64) {
        let mut settled = self.settled.lock().unwrap();
        if settled.0 == epoch {
            settled.1.insert(doc.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_owed_from_a_failed_fan_out_until_one_succeeds() {
        let u = Unsettled::default();
        let side = model::side::key("a", "t:1");
        u.fanned_out(["a".to_string(), side.clone(), "b".to_string()], false);
        let mut owed = u.unreplicated_of("a");
        owed.sort();
        assert_eq!(owed, ["a".to_string(), side.clone()]);
        assert_eq!(u.unreplicated_of("b"), ["b"]);
        assert!(u.unreplicated_of("c").is_empty());
        u.fanned_out([side], true);
        assert_eq!(u.unreplicated_of("a"), ["a"]);
        u.fanned_out(["a".to_string()], true);
        assert!(u.unreplicated_of("a").is_empty());
    }

    #[test]
    fn a_document_is_settled_only_under_the_epoch_it_was_settled_in() {
        let u = Unsettled::default();
        assert!(!u.settled_in("a", 2));
        u.settle("a", 2);
        assert!(u.settled_in("a", 2));
        assert!(!u.settled_in("b", 2));
        // A new epoch forgets the settled documents of the one before.
        assert!(!u.settled_in("a", 3));
        assert!(!u.settled_in("a", 2), "epoch 2's set is gone");
        // Settling under an epoch no longer held notes nothing.
        u.settle("a", 2);
        assert!(!u.settled_in("a", 3));
        u.settle("a", 3);
        assert!(u.settled_in("a", 3));
    }
}
