//! The order service (work in progress).

use common::settings::ReplicaSettings;
use common::topology::Topology;
use std::future::Future;

/// Runs a order replica on `listener` until `shutdown` completes.
pub async fn run(
    settings: ReplicaSettings,
    topology: Topology,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (settings, topology, listener, shutdown);
    unimplemented!("order replica")
}
