//! Wire types and header names of the internal protocol.
//!
//! Public requests keep their paths on every hop (gateway → coordinator → replica); what the
//! internal hops add travels in the headers below. Internal-only endpoints live under
//! `/internal/` and, like every request a replica accepts, require the cluster secret.

use serde::{Deserialize, Serialize};

/// The gateway's request id, passed on every hop; writes are deduplicated by it.
pub const REQUEST_ID: &str = "x-request-id";
/// The cluster secret; replicas and internal endpoints refuse requests without it.
pub const SECRET: &str = "x-webshop-secret";
/// The view epoch the coordinator routed by; replicas reject older epochs.
pub const EPOCH: &str = "x-webshop-epoch";
/// The key a coordinator minted for a create call.
pub const MINTED_KEY: &str = "x-webshop-key";
/// Set on a 503 that is not the answering node's own failure (a dependency or the quorum
/// is unavailable); such an answer never evicts the node that gave it.
pub const UNAVAILABLE_CAUSE: &str = "x-webshop-unavailable";

/// The `UNAVAILABLE_CAUSE` of a replica that lost its data while a full member: unlike the
/// other causes this is the replica's own failure, and it gets the replica evicted.
pub const RECOVERING: &str = "recovering";

/// The `UNAVAILABLE_CAUSE` of a replica that may not serve reads because it has not heard
/// from a majority within its read lease (`decide::lease`): it may have been deposed, so the
/// coordinator asks the replicas for a newer view before giving up.
pub const NO_LEASE: &str = "lease";

/// Status a replica answers when it is not the key's primary in its view, or the request's
/// epoch is older than its own: distinct from every business and failure status, and never
/// a reason to evict. The body is the replica's current [`View`].
pub const STATUS_MISDIRECTED: u16 = 421;

/// Path of a multi call, on coordinators and replicas alike: several keyed requests of one
/// service in one exchange, each answered as if it had come alone (see [`MultiCall`]).
pub const MULTI_PATH: &str = "/internal/multi";

/// One request of a multi call: a route of the service's table keyed by an argument, with
/// everything in its path (the saga's steps and reads are). The body of a multi call is a
/// JSON list of them; the answer, a list of [`crate::reply::Reply`] in the same order, each what
/// the single request's response would have said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiCall {
    /// GET or POST.
    pub method: crate::routing::Method,
    /// The path, as a single request would have it (`/stock/tx/subtract/i/1/o%231`).
    pub path: String,
}

/// State of one replica in a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Full member: votes, receives every write, may be primary.
    Up,
    /// Receives every write while catching up; not primary, does not vote in anti-entropy.
    Learner,
    /// Out of the view; probed for re-join.
    Evicted,
}

/// A membership view of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Monotonic view number; every forwarded request and fan-out carries it.
    pub epoch: u64,
    /// Full members (replica ids).
    pub members: Vec<u32>,
    /// Learners (replica ids).
    #[serde(default)]
    pub learners: Vec<u32>,
}

impl View {
    /// The view every service starts from: epoch 1, all configured replicas full members.
    pub fn initial(replicas: u32) -> View {
        View { epoch: 1, members: (0..replicas).collect(), learners: vec![] }
    }

    /// The key's primary in this view.
    pub fn primary(&self, key: &str) -> Option<u32> {
        crate::placement::primary(key, &self.members)
    }

    /// Every node a primary fans a write out to: full members and learners but `me`.
    pub fn peers_of(&self, me: u32) -> Vec<u32> {
        self.members.iter().chain(self.learners.iter()).copied().filter(|&id| id != me).collect()
    }
}

/// Body of a batch_init forwarded by a coordinator to one primary: the keys it owns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchKeys {
    /// The keys this primary writes.
    pub keys: Vec<String>,
}

/// How long a server keeps an idle keep-alive connection open. Longer than
/// [`CLIENT_POOL_IDLE`], so that a client never reuses a connection the server is closing at
/// that moment (which fails a request that may have been sent: the race every pooled HTTP
/// client has with a server's idle timeout).
pub const SERVER_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(75);

/// How long the processes' HTTP clients keep an idle pooled connection; see
/// [`SERVER_KEEP_ALIVE`].
pub const CLIENT_POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Body of `/internal/ae/list`.
#[derive(Serialize, Deserialize)]
pub struct ListRequest {
    /// The round (opened by `/internal/digest?round=`).
    pub round: u64,
    /// The buckets to list.
    pub buckets: Vec<u8>,
}

/// Path of an order replica's horizon report ([`Horizon`]), which the ledger replicas poll to
/// release their transaction records (docs/design.md §6.4).
pub const HORIZON_PATH: &str = "/internal/horizon";

/// What an order replica says about the checkout attempts of the orders it is primary of:
/// the view it serves by, and the start (Unix ms, its own clock) of the oldest attempt not yet
/// finished. `decide::horizon` turns the reports of a majority into a watermark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    /// The reporting replica.
    pub replica: u32,
    /// The view it serves by.
    pub view: View,
    /// Whether its acceptor has accepted or committed a view newer than `view`: a view change
    /// is under way.
    pub pending: bool,
    /// The epoch of the last view under which it finished looking for the checkouts in flight
    /// among its orders (0 before the first).
    pub resumed: u64,
    /// The start of its oldest attempt not yet finished, or the time now if it has none.
    pub oldest_ms: u64,
}
