//! What an anti-entropy round found and did (docs/design.md §5.4): the report a coordinator
//! keeps of its last round, shows on its status page and answers the admin endpoint with. The
//! planning of a round is `decide::antientropy`; running one is `coordinator::antientropy`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one round found and did, as `/admin/status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoundReport {
    /// Why it ran: `interval` or `re-join of replica N`.
    pub reason: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
    /// The view epoch it ran under.
    pub epoch: u64,
    /// Replicas that answered, with their roots (hex).
    pub roots: BTreeMap<u32, String>,
    /// Replicas whose root differed from the majority's (all that answered when there was
    /// no majority root).
    pub differing_replicas: Vec<u32>,
    /// Divergent buckets found.
    pub divergent_buckets: Vec<u8>,
    /// Of those, the buckets listed this round (at most `anti_entropy_max_buckets`).
    pub listed: Vec<u8>,
    /// Divergent buckets left for the next round because they were being written (their
    /// digests changed between two readings).
    #[serde(default)]
    pub in_flux: Vec<u8>,
    /// Replicas of the view whose digests or listing did not come.
    pub unanswered: Vec<u32>,
    /// Documents repaired (states applied on a replica).
    pub repaired: usize,
    /// Repairs planned per replica.
    pub planned: BTreeMap<u32, usize>,
    /// Keys written during the round, left for the next one.
    pub deferred: usize,
    /// Per replica, the buckets of the deferred keys it was not known to hold the newest
    /// state of (`decide::antientropy::Deferred::unsettled`): not clean on it yet.
    #[serde(default)]
    pub unsettled: BTreeMap<u32, std::collections::BTreeSet<u8>>,
    /// Whether the round covered everything: every replica of the view answered, every
    /// divergent bucket was listed and every planned repair was sent.
    pub complete: bool,
}
