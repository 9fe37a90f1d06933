//! The webshop cluster's types, with no I/O: what the other crates agree on.
//!
//! - [`topology`]: the services, their replicas and coordinators (env/topology.toml);
//! - [`wire`]: views and the messages between processes; [`version`], [`digest`]: a
//!   document's version and the Merkle digests anti-entropy compares; [`record`]: a stored
//!   document;
//! - [`placement`]: which replica is a key's primary (rendezvous hashing);
//! - [`side`]: the keys of the records kept beside a document;
//! - [`routing`]: the public route table the coordinators route by, and minted ids;
//! - [`idempotency`]: scoped idempotency keys, their fingerprints and the replay rules;
//! - [`reply`]: a service's answer (status and body);
//! - [`antientropy`]: the report of an anti-entropy round;
//! - [`metrics`]: the catalogue of every metric the processes export;
//! - [`mongo_server`]: how a replica's MongoDB-compatible server is started.
//!
//! Everything here is plain data and pure functions: the crate depends on serde, blake3,
//! toml, uuid and thiserror only, so a tool such as `build_compose` can read the topology
//! without compiling a server. The layering is in docs/design.md §11.

pub mod antientropy;
pub mod digest;
pub mod idempotency;
pub mod metrics;
pub mod mongo_server;
pub mod placement;
pub mod record;
pub mod reply;
pub mod routing;
pub mod side;
pub mod topology;
pub mod version;
pub mod wire;

pub use reply::Reply;
pub use version::Version;
