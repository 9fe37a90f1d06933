//! The replica runtime every service builds on.
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
//! - [`server`]: the replica's HTTP and internal endpoints, and `run_replica`.
//!
//! The types, pure decisions, storage engines and transport it builds on are the crates
//! `model`, `decide`, `store` and `net`; the ledger service on top of it is the crate `ledger`
//! (docs/design.md §11).

pub mod fanout;
pub mod health;
pub mod membership;
pub mod node;
pub mod rounds;
pub mod server;
pub mod table;
pub mod unsettled;
