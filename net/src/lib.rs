//! What a node process needs besides its own logic: how it talks to other nodes and how it
//! runs.
//!
//! - [`rpc`]: internal calls over one WebSocket connection per pair of nodes;
//! - [`answer`]: the one answer type (`model::reply::Reply`) to and from the forms it travels in;
//! - [`client`]: HTTP clients of the nodes and of another service's coordinators,
//!   [`direct`]: calls to another service's primaries by the views their rejections carry,
//!   and [`batching`]: queues whose items go out together;
//! - [`standing`]: whether the peers accept this node's cluster secret;
//! - [`endpoint`]: addresses and URLs of nodes;
//! - [`metrics`]: the registry every process counts into (the catalogue is `model::metrics`);
//! - [`logging`]: the processes' log setup;
//! - [`worker`]: one shape for every background loop, stopped with the process;
//! - [`server`]: serving HTTP, the secret guard, `/health` and `/metrics`;
//! - [`settings`]: the typed settings of a replica and of a coordinator.
//!
//! It depends on `model` and `decide` only; the replica runtime (`replica`) and the
//! coordinator build on it. The layering is in docs/design.md §11.

pub mod answer;
pub mod batching;
pub mod client;
pub mod direct;
pub mod endpoint;
pub mod logging;
pub mod metrics;
pub mod rpc;
pub mod server;
pub mod settings;
pub mod standing;
pub mod worker;
