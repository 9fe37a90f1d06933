//! The order service: orders, addItem (which reads the item's price from stock) and the
//! checkout saga across payment and stock.
//!
//! Code map: `domain` (the document and its pure rules), `saga` (the checkout driver; its
//! decisions are `decide::saga`), `unfinished` (the attempts under way, for the horizon the
//! ledgers release their transaction records by), `clients` (payment and stock, at their
//! primaries), `routes` (what each request does).

pub mod clients;
pub mod domain;
pub mod routes;
pub mod saga;
pub mod unfinished;

use model::topology::{Service, Topology};
use net::client::{Batcher, ServiceClient};
use net::direct::Direct;
use net::settings::ReplicaSettings;
use routes::{OrderHandler, Orders};
use std::future::Future;
use std::sync::Arc;

/// Runs an order replica on `listener` until `shutdown` completes. At start, and whenever the
/// view it serves by changes (it may have become the primary of orders), it resumes every
/// checkout it finds in flight among the orders it is primary of, without waiting for a
/// request to touch them.
pub async fn run(
    settings: ReplicaSettings,
    topology: Topology,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let client = |s: Service| {
        let coordinators = ServiceClient::new(&topology.nodes(s).coordinators, &settings.secret, clients::CALL_TIMEOUT);
        let replicas = &topology.nodes(s).replicas;
        Direct::new(replicas, &settings.secret, clients::DIRECT_TIMEOUT, clients::PASS_OVER, Batcher::new(coordinators))
    };
    let remote = clients::Remote { payment: client(Service::Payment), stock: client(Service::Stock) };
    replica::server::run_replica(settings, topology.clone(), listener, shutdown, move |node| {
        let orders = Arc::new(Orders {
            table: replica::table::Table::new(node),
            remote,
            stalled: Default::default(),
            unfinished: Default::default(),
            resumed_epoch: Default::default(),
        });
        orders.start_resuming();
        Arc::new(OrderHandler(orders))
    })
    .await
}
