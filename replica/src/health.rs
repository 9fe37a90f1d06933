//! Whether a replica may report itself healthy, beside its membership: its store takes writes
//! (docs/design.md §7.4, storage failure is fail-stop) and its peers accept its cluster secret
//! ([`net::standing`]). [`crate::node::Node::store_health`] probes a store that failed.

use net::standing::SecretStanding;
use std::sync::Mutex;

/// A replica's health state.
pub struct Health {
    /// Who logs a store failure (`stock replica 0`).
    who: String,
    /// The last failure of a write to the store, until a write succeeds again.
    store_failure: Mutex<Option<String>>,
    /// Whether the peers and coordinators accept this node's secret, as every answer to it
    /// tells.
    standing: SecretStanding,
}

impl Health {
    /// A healthy state, whose store failures `who` logs.
    pub fn new(who: String) -> Health {
        Health { who, store_failure: Mutex::default(), standing: SecretStanding::default() }
    }

    /// Notes the outcome of a write to the store: a failure makes the store unhealthy
    /// ([`Health::store_failed`]) until a write succeeds again. The first failure is logged.
    pub fn noted<T, E: std::fmt::Display>(&self, result: Result<T, E>) -> Result<T, E> {
        let mut failure = self.store_failure.lock().unwrap();
        match &result {
            Ok(_) => *failure = None,
            Err(e) => {
                if failure.is_none() {
                    log::error!("{}: the store failed a write: {e}", self.who);
                }
                *failure = Some(e.to_string());
            }
        }
        result
    }

    /// Whether the last write to the store failed.
    pub fn store_failed(&self) -> bool {
        self.store_failure.lock().unwrap().is_some()
    }

    /// The verdicts of the peers on this node's secret, shared with its fan-out links.
    pub fn standing(&self) -> &SecretStanding {
        &self.standing
    }

    /// Why this node must not report itself healthy because its peers refuse its secret.
    pub fn secret_refusal(&self) -> Option<String> {
        self.standing.refusal()
    }

    /// Records the verdict on this node's secret in an answer from `base` (`http://host:port`).
    pub fn answered(&self, base: &str, status: u16) {
        self.standing.answered(base.trim_start_matches("http://"), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_store_unhealthy_until_a_write_succeeds() {
        let h = Health::new("stock replica 0".into());
        let steps: [(Result<(), &str>, bool); 4] =
            [(Ok(()), false), (Err("disk full"), true), (Err("disk full"), true), (Ok(()), false)];
        for (result, failed) in steps {
            assert_eq!(h.noted(result), result);
            assert_eq!(h.store_failed(), failed, "after {result:?}");
        }
    }

    #[test]
    fn a_secret_refused_by_every_peer_that_answered_is_unhealthy() {
        let h = Health::new("stock replica 0".into());
        assert_eq!(h.secret_refusal(), None);
        h.answered("http://127.0.0.1:1", 403);
        assert!(h.secret_refusal().is_some());
        h.answered("http://127.0.0.1:2", 200);
        assert_eq!(h.secret_refusal(), None, "accepted by another peer");
    }
}
