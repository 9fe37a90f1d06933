//! The two process roles the launcher starts, `replica` and `coordinator`: load the role's
//! settings from the `APP__*` environment, init logging, bind the listen address and run the
//! service until SIGTERM or Ctrl-C. The `cluster` binary and the test binary `webshop-node`
//! both dispatch here, so tests run exactly what `cluster up` runs.

use anyhow::{anyhow, Context};
use model::topology::{Service, Topology};
use net::settings::{CoordinatorSettings, ReplicaSettings};
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

/// How long the runtime waits for background tasks after the server stopped: long enough for
/// in-flight replication to finish, short enough that a stop never hangs the launcher.
pub const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A node role, the first argument of the node binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// A replica of `APP__SERVICE`.
    Replica,
    /// A coordinator of `APP__SERVICE`.
    Coordinator,
}

impl NodeRole {
    /// The argument that selects the role.
    pub fn arg(self) -> &'static str {
        match self {
            NodeRole::Replica => "replica",
            NodeRole::Coordinator => "coordinator",
        }
    }

    /// Parses the argument that selects the role.
    pub fn parse(arg: &str) -> Option<NodeRole> {
        [NodeRole::Replica, NodeRole::Coordinator].into_iter().find(|r| r.arg() == arg)
    }
}

/// A role's validated settings and the topology they name.
#[derive(Clone, Debug)]
pub enum Loaded {
    /// A replica.
    Replica(ReplicaSettings, Topology),
    /// A coordinator.
    Coordinator(CoordinatorSettings, Topology),
}

impl Loaded {
    /// Loads the settings of `role` from the environment (see `net::settings`).
    pub fn load(role: NodeRole) -> anyhow::Result<Loaded> {
        Ok(match role {
            NodeRole::Replica => {
                let (s, t) = ReplicaSettings::load()?;
                Loaded::Replica(s, t)
            }
            NodeRole::Coordinator => {
                let (s, t) = CoordinatorSettings::load()?;
                Loaded::Coordinator(s, t)
            }
        })
    }

    /// The process's service.
    pub fn service(&self) -> Service {
        match self {
            Loaded::Replica(s, _) => s.service,
            Loaded::Coordinator(s, _) => s.service,
        }
    }

    /// The process's name for logs: `stock-replica-1`.
    pub fn name(&self) -> String {
        match self {
            Loaded::Replica(s, _) => format!("{}-replica-{}", s.service, s.id),
            Loaded::Coordinator(s, _) => format!("{}-coordinator-{}", s.service, s.id),
        }
    }

    /// The address to bind.
    pub fn listen_addr(&self) -> String {
        match self {
            Loaded::Replica(s, t) => s.listen_addr(t),
            Loaded::Coordinator(s, t) => s.listen_addr(t),
        }
    }

    /// Binds the listen address.
    pub fn bind(&self) -> anyhow::Result<TcpListener> {
        let addr = self.listen_addr();
        TcpListener::bind(&addr).with_context(|| format!("{}: cannot listen on {addr}", self.name()))
    }
}

/// Completes on SIGTERM or Ctrl-C. SIGTERM is registered before this returns, so it is
/// never missed between the start of the server and the first poll.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => log::info!("Ctrl-C: shutting down"),
        }
    })
}

/// Runs a loaded role on `listener` until SIGTERM or Ctrl-C.
///
/// The runtime is a current-thread one: requests are served on the HTTP worker's own thread
/// (and so are the fan-out and the calls they make, see `replica::fanout::PeerLink`); this
/// runtime runs only the background tasks (leases, probes, anti-entropy, the accept loop's
/// bookkeeping), which need no thread pool. Fifteen nodes on two cores gained nothing from
/// pools of idle threads.
pub fn run(loaded: Loaded, listener: TcpListener) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let result = rt.block_on(async move {
        let shutdown = shutdown_signal()?;
        match loaded {
            Loaded::Replica(s, t) => match s.service {
                Service::Order => order::run(s, t, listener, shutdown).await,
                Service::Payment => ledger::run::<payment::Payment>(s, t, listener, shutdown).await,
                Service::Stock => ledger::run::<stock::Stock>(s, t, listener, shutdown).await,
            },
            Loaded::Coordinator(s, t) => coordinator::run(s, t, listener, shutdown).await,
        }
    });
    rt.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    result.context("server")
}

/// The role named by the first argument after the program name.
pub fn role_from_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<NodeRole> {
    let arg = args.nth(1).ok_or_else(|| anyhow!("missing role: replica or coordinator"))?;
    NodeRole::parse(&arg).ok_or_else(|| anyhow!("unknown role '{arg}': replica or coordinator"))
}

/// Runs `role`: load settings, init logging, bind, serve.
pub fn run_role(role: NodeRole) -> anyhow::Result<()> {
    let loaded = Loaded::load(role)?;
    net::logging::init(&loaded.name());
    let listener = loaded.bind()?;
    log::info!("listening on {}", loaded.listen_addr());
    run(loaded, listener)
}

/// The whole main of a node binary: `<exe> replica|coordinator`, configured by `APP__*`.
pub fn main() -> ExitCode {
    match role_from_args(std::env::args()).and_then(run_role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // On stderr rather than through the logger: bad settings fail before it exists.
            eprintln!("node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_roles() {
        assert_eq!(role_from_args(args(&["x", "replica"])).unwrap(), NodeRole::Replica);
        assert_eq!(role_from_args(args(&["x", "coordinator"])).unwrap(), NodeRole::Coordinator);
        assert!(role_from_args(args(&["x"])).is_err());
        assert!(role_from_args(args(&["x", "balancer"])).is_err());
    }
}
