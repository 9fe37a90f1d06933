//! Whether this process's peers accept its cluster secret.
//!
//! Every process reads the secret once, at start. If two were started with different secrets
//! (a Kubernetes Secret replaced after some pods started, a compose variable changed between
//! two `up`s), each refuses the other's internal requests with 403, and nothing else would
//! tell: `/health` answers 200 and the orchestrator reports every pod ready. So the clients
//! that talk to peers report every peer's verdict here ([`SecretStanding::accepted_by`],
//! [`SecretStanding::refused_by`]); a refusal is logged as an error, and a process that at
//! least one peer refuses and none accepts reports itself unhealthy ([`SecretStanding::refusal`],
//! read by `/health`) until a peer accepts it. A process refused by one peer but accepted by
//! others stays healthy (the refusing peer is the odd one out, and is itself refused by the
//! rest), and logs the refusal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The peers' latest verdicts on this process's secret. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct SecretStanding(Arc<Mutex<Verdicts>>);

/// Per peer (`host:port`), whether its latest answer accepted the secret.
#[derive(Debug, Default, PartialEq)]
struct Verdicts(BTreeMap<String, bool>);

impl Verdicts {
    /// Records a verdict; returns whether it changed the peer's.
    fn record(&mut self, peer: &str, accepted: bool) -> bool {
        self.0.insert(peer.to_string(), accepted) != Some(accepted)
    }

    /// Why this process is not healthy, if some peer refuses its secret and none accepts it.
    fn refusal(&self) -> Option<String> {
        if self.0.values().any(|a| *a) {
            return None;
        }
        let refusing: Vec<&str> = self.0.iter().filter(|(_, a)| !**a).map(|(p, _)| p.as_str()).collect();
        (!refusing.is_empty()).then(|| {
            format!(
                "the cluster secret is refused by {} and accepted by no peer: this process was started \
                 with another secret than its peers",
                refusing.join(", ")
            )
        })
    }
}

impl SecretStanding {
    /// `peer` accepted the secret (answered anything but 403 to a request carrying it).
    pub fn accepted_by(&self, peer: &str) {
        if self.0.lock().unwrap().record(peer, true) {
            log::debug!("{peer} accepts the cluster secret");
        }
    }

    /// `peer` refused the secret (403). Logged as an error when its verdict changes.
    pub fn refused_by(&self, peer: &str) {
        if self.0.lock().unwrap().record(peer, false) {
            log::error!(
                "{peer} refused this process's cluster secret (403): the two were started with different \
                 secrets, and no internal request between them succeeds; start both with the same secret"
            );
        }
    }

    /// Records the verdict an answer with `status` carries.
    pub fn answered(&self, peer: &str, status: u16) {
        if status == 403 {
            self.refused_by(peer)
        } else {
            self.accepted_by(peer)
        }
    }

    /// Why this process must not report itself healthy: some peer refuses its secret and no
    /// peer accepts it.
    pub fn refusal(&self) -> Option<String> {
        self.0.lock().unwrap().refusal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_unhealthy_only_when_refused_and_accepted_by_none() {
        // (verdicts in order, unhealthy after them)
        let cases: &[(&[(&str, bool)], bool)] = &[
            (&[], false),
            (&[("a", true)], false),
            (&[("a", false)], true),
            (&[("a", false), ("b", false)], true),
            (&[("a", false), ("b", true)], false),
            (&[("a", true), ("b", false)], false),
            // The latest verdict of a peer counts: refused, then accepted after a restart.
            (&[("a", false), ("a", true)], false),
            (&[("a", true), ("a", false)], true),
            (&[("a", true), ("b", false), ("a", false)], true),
        ];
        for (verdicts, unhealthy) in cases {
            let s = SecretStanding::default();
            for (peer, accepted) in *verdicts {
                s.answered(peer, if *accepted { 200 } else { 403 });
            }
            assert_eq!(s.refusal().is_some(), *unhealthy, "{verdicts:?}");
        }
    }

    #[test]
    fn the_refusal_names_the_refusing_peers() {
        let s = SecretStanding::default();
        s.refused_by("10.0.0.2:9100");
        s.refused_by("10.0.0.1:9100");
        let why = s.refusal().unwrap();
        assert!(why.contains("refused by 10.0.0.1:9100, 10.0.0.2:9100"), "{why}");
    }

    #[test]
    fn only_a_changed_verdict_is_news() {
        let mut v = Verdicts::default();
        assert!(v.record("a", false));
        assert!(!v.record("a", false));
        assert!(v.record("a", true));
        assert!(!v.record("a", true));
    }

    #[test]
    fn clones_share_the_verdicts() {
        let s = SecretStanding::default();
        s.clone().refused_by("a");
        assert!(s.refusal().is_some());
    }
}
