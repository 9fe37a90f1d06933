//! The coordinator: one per service instance (order, payment or stock), between nginx and
//! the service's replicas (docs/design.md §2.2, §3.3 and §4).
//!
//! It checks every public request against the route table, finds the request's routing key
//! (an argument, a freshly minted id, or a batch_init's keys "0".."n-1"), and forwards it to
//! the key's primary in the current view, following misdirected rejections to the new
//! primary with the same request id. Replicas' answers pass through unchanged.
//!
//! Code map:
//! - [`routes`]: the HTTP surface, registered by [`routes::configure`].
//! - [`state`]: the shared [`state::Coordinator`] and the forwarding loops.
//! - [`forward`]: one hop to a replica, and [`forward::classify`], the one classification of
//!   its result (the hook for eviction).
//! - [`multi`]: multi calls, several keyed requests in one exchange, grouped by primary.
//! - [`batch`]: splitting a batch_init by primary and combining the answers (pure).
//! - [`view`]: the view the coordinator routes by, when a reported view is adopted, and the
//!   recent changes of it (the description of a change is pure).
//! - [`membership`]: changing the view by Paxos over the replicas; eviction of a replica
//!   that does not answer.
//! - [`rejoin`]: the prober, which re-joins evicted replicas that answer again.
//! - [`antientropy`]: rounds comparing the replicas' digests and repairing what differs.
//! - [`status`]: `/admin/status` as JSON: this service's view, members, digest roots and
//!   lags (the lag computation is pure), last anti-entropy round and recent view changes.
//! - [`overview`]: `/admin/cluster`, every service's status from any coordinator, as JSON,
//!   an HTML page for a person (also `/admin/status` from a browser) and a terminal table.
//! - [`error`]: failures to answer and their statuses.

pub mod antientropy;
pub mod batch;
pub mod error;
pub mod forward;
pub mod membership;
pub mod multi;
pub mod overview;
pub mod rejoin;
pub mod routes;
pub mod state;
pub mod status;
pub mod view;

use model::topology::Topology;
use net::settings::CoordinatorSettings;
use net::worker::{Next, Schedule, Workers};
use state::Coordinator;
use std::future::Future;

/// Runs a coordinator on `listener` until `shutdown` completes: learns the current view from
/// the replicas (keeping the initial view if none answers), starts the prober, then serves.
pub async fn run(
    settings: CoordinatorSettings,
    topology: Topology,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let coordinator = Coordinator::new(&settings, &topology);
    coordinator.learn_view().await;
    log::info!(
        "{} coordinator {} serving on {} for replicas {:?}",
        settings.service,
        settings.id,
        listener.local_addr()?,
        coordinator.replica_addrs
    );
    let app = actix_web::web::Data::new(coordinator);
    let workers = Workers::new();
    let me = app.clone().into_inner();
    let name = |what: &str| format!("{} coordinator {} {what}", settings.service, settings.id);
    let every = |d| Schedule::every(d).after_one_interval();
    workers.spawn_on(name("prober"), every(me.prober.interval), me.clone(), |c| async move {
        c.prober_round().await;
        Next::Again
    });
    workers.spawn_on(name("anti-entropy"), every(me.anti_entropy.interval), me, |c| async move {
        c.anti_entropy_tick().await;
        Next::Again
    });
    // Internal connections end first: open, they would hold the graceful stop until its
    // timeout.
    let closing = app.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let served = net::server::serve(listener, settings.workers, routes::configure(app), shutdown).await;
    // The workers end once the server answers nothing more (as on a replica).
    workers.stop(net::server::WORKERS_GRACE).await;
    served
}

/// Completes on Ctrl-C or SIGTERM: the shutdown of a process run by a terminal, the local
/// launcher, docker or Kubernetes.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    log::info!("shutting down");
}
