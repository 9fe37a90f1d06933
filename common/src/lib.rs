//! The replica runtime every service builds on, and the settings of both node roles.
//!
//! - [`table`]: the replicated-document layer: typed documents, conditional writes, request
//!   records, reads under a lease;
//! - [`node`]: one replica: its writes and their fan-out, leases, membership messages,
//!   repairs, anti-entropy endpoints and its workers;
//! - [`membership`]: the view a replica serves by, its acceptor state, its empty start;
//! - [`health`]: whether its store takes writes and its peers accept its secret;
//! - [`fanout`]: the batching link that carries a primary's writes to one peer;
//! - [`rounds`]: the anti-entropy rounds open on a replica and the keys written since;
//! - [`unsettled`]: what a primary owes its peers before it answers from a document again;
//! - [`server`]: the replica's HTTP and internal endpoints, and `run_replica`;
//! - [`ledger`]: the ledger service stock and payment share;
//! - [`settings`]: the typed settings of a replica and of a coordinator.
//!
//! The types, pure decisions, storage engines and transport it builds on are the crates
//! `model`, `decide`, `store` and `net`, re-exported below under the paths they had when they
//! lived here (docs/design.md §11.5).

pub mod fanout;
pub mod health;
pub mod ledger;
pub mod membership;
pub mod node;
pub mod rounds;
pub mod server;
pub mod settings;
pub mod table;
pub mod unsettled;

// Moved to `model` (docs/design.md §11.5, step 2), `decide` (step 4), `store` (step 5) and
// `net` (step 6); re-exported so that paths stay while the crates are split.
pub use decide::{antientropy, lease, paxos};
pub use model::{digest, idempotency, placement, reply, routing, side, topology, version, wire};
pub use net::{answer, batching, client, direct, endpoint, logging, metrics, rpc, standing, worker};
pub use store as storage;

pub use reply::Reply;
pub use version::Version;
