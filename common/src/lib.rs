//! Shared pieces of the webshop cluster.
//!
//! Everything here is used by more than one binary: the storage trait and its engines,
//! the replicated-document layer ([`table`]) that every service builds on, digests and
//! placement, the topology and settings, the public route table the coordinators route
//! by, and the small HTTP helpers the processes share.

pub mod antientropy;
pub mod balancer;
pub mod batching;
pub mod client;
pub mod digest;
pub mod endpoint;
pub mod fanout;
pub mod idempotency;
pub mod lease;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod placement;
pub mod reply;
pub mod routing;
pub mod rpc;
pub mod server;
pub mod settings;
pub mod side;
pub mod standing;
pub mod storage;
pub mod table;
pub mod topology;
pub mod version;
pub mod wire;

pub use reply::Reply;
pub use version::Version;
