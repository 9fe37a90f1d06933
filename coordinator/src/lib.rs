//! The coordinator (work in progress).

use common::settings::CoordinatorSettings;
use common::topology::Topology;
use std::future::Future;

/// Runs a coordinator on `listener` until `shutdown` completes.
pub async fn run(
    settings: CoordinatorSettings,
    topology: Topology,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (settings, topology, listener, shutdown);
    unimplemented!("coordinator")
}
