//! Where the nemesis's faults land, and how each is made:
//!
//! - [`Deployment::Processes`]: a cluster of local processes (`cluster up`, a test's launcher),
//!   named with their pids in the launcher's `manifest.json`. A kill is SIGKILL (the launcher
//!   restarts the process), a pause SIGSTOP then SIGCONT, a cut a coordinator's fault hook
//!   (needs the cluster secret and a build with `fault-hooks`).
//! - [`Deployment::Containers`]: a docker compose deployment (`scripts/compose.sh up`), its
//!   containers found by the compose project's labels and reached at their addresses on the
//!   project's network. A kill is `docker kill` then `docker start` (compose's restart policy
//!   leaves a container killed by hand down; the nemesis plays the policy), a pause `docker
//!   pause` then `docker unpause`, a cut a real partition: the replica's container
//!   disconnected from the network (`docker network disconnect`), then connected again
//!   under its service name.
//!
//! Both describe their processes as a [`Manifest`] (for containers: the containers' host
//! pids and addresses, read again at every call, since a restarted container has a new pid).

use cluster::manifest::{Entry, Manifest, Role};
use model::topology::{Service, Topology};
use std::path::PathBuf;

/// A compose deployment's label naming its project.
const PROJECT_LABEL: &str = "com.docker.compose.project";
/// A compose deployment's label naming a container's service.
const SERVICE_LABEL: &str = "com.docker.compose.service";
/// The port a store listens on in its container (MongoDB's).
const STORE_PORT: u16 = 27017;

/// The cluster the faults hit.
#[derive(Clone, Debug)]
pub enum Deployment {
    /// Local processes, as the launcher's manifest names them.
    Processes {
        /// The launcher's `manifest.json`.
        manifest: PathBuf,
    },
    /// The containers of a docker compose project.
    Containers {
        /// The compose project's name (`scripts/compose.sh`: `WEBSHOP_COMPOSE_PROJECT`,
        /// default `webshop`).
        project: String,
        /// The topology the containers read (hosts are compose service names): the ports.
        topology: Topology,
    },
}

impl Deployment {
    /// The processes now: pids and addresses.
    pub async fn manifest(&self) -> anyhow::Result<Manifest> {
        match self {
            Deployment::Processes { manifest } => Ok(Manifest::load(manifest)?),
            Deployment::Containers { project, topology } => {
                let ids = docker(&["ps", "-a", "-q", "--filter", &format!("label={PROJECT_LABEL}={project}")]).await?;
                let ids: Vec<&str> = ids.split_whitespace().collect();
                anyhow::ensure!(!ids.is_empty(), "compose project {project} has no containers (scripts/compose.sh up)");
                let mut args = vec!["inspect"];
                args.extend(&ids);
                let inspected: serde_json::Value = serde_json::from_str(&docker(&args).await?)?;
                let network = self.network();
                let mut processes = Vec::new();
                for c in inspected.as_array().into_iter().flatten() {
                    let service = c["Config"]["Labels"][SERVICE_LABEL].as_str().unwrap_or_default();
                    let Some((role, svc, id)) = parse_service(service) else { continue };
                    let Some(port) = port_of(topology, role, svc, id) else { continue };
                    let ip = c["NetworkSettings"]["Networks"][&network]["IPAddress"].as_str().unwrap_or_default();
                    processes.push(Entry {
                        role,
                        service: svc.map_or(cluster::manifest::GATEWAY, Service::name).to_string(),
                        id,
                        addr: format!("{ip}:{port}"),
                        pid: c["State"]["Pid"].as_u64().unwrap_or(0) as u32,
                    });
                }
                processes.sort_by_key(|e| (role_order(e.role), e.service.clone(), e.id));
                Ok(Manifest { processes })
            }
        }
    }

    /// The fault kind a cut is in the history: a coordinator's fault hook, or a container
    /// disconnected from the network.
    pub fn cut_name(&self) -> &'static str {
        match self {
            Deployment::Processes { .. } => "cut",
            Deployment::Containers { .. } => "disconnect",
        }
    }

    /// Whether cuts need the cluster secret (the coordinators' fault hooks do).
    pub fn cuts_need_the_secret(&self) -> bool {
        matches!(self, Deployment::Processes { .. })
    }

    /// Kills process `e`. A process is restarted by its launcher; a container by
    /// [`Deployment::restart`], which the fault's task calls.
    pub async fn kill(&self, e: &Entry) -> anyhow::Result<()> {
        match self {
            Deployment::Processes { .. } => signal(e.pid, libc::SIGKILL),
            Deployment::Containers { .. } => docker(&["kill", &self.container(e).await?]).await.map(drop),
        }
    }

    /// Starts killed process `e` again where nothing else does (a container: compose's
    /// restart policy leaves one killed by hand down), trying until it starts or `within`
    /// has passed.
    pub async fn restart(&self, e: &Entry, within: std::time::Duration) {
        let Deployment::Containers { .. } = self else { return };
        let start = std::time::Instant::now();
        loop {
            let started = match self.container(e).await {
                Ok(c) => docker(&["start", &c]).await.map(drop),
                Err(err) => Err(err),
            };
            match started {
                Ok(()) => return,
                Err(err) if start.elapsed() >= within => {
                    log::error!("nemesis: {} not started again: {err:#}", e.name());
                    return;
                }
                Err(err) => log::warn!("nemesis: starting {} again: {err:#}", e.name()),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Pauses process `e`. A container whose `docker pause` failed is unpaused again, in case
    /// the engine paused it anyway.
    pub async fn pause(&self, e: &Entry) -> anyhow::Result<()> {
        match self {
            Deployment::Processes { .. } => signal(e.pid, libc::SIGSTOP),
            Deployment::Containers { .. } => {
                let c = self.container(e).await?;
                let paused = docker(&["pause", &c]).await.map(drop);
                if paused.is_err() {
                    let _ = docker(&["unpause", &c]).await;
                }
                paused
            }
        }
    }

    /// Resumes paused process `e`.
    pub async fn resume(&self, e: &Entry) -> anyhow::Result<()> {
        match self {
            Deployment::Processes { .. } => signal(e.pid, libc::SIGCONT),
            Deployment::Containers { .. } => docker(&["unpause", &self.container(e).await?]).await.map(drop),
        }
    }

    /// Cuts replica `target` off: from coordinator `from` (its fault hook, with `secret`), or,
    /// for a container, from the whole network.
    pub async fn cut(
        &self,
        http: &reqwest::Client,
        secret: Option<&str>,
        from: &Entry,
        target: &Entry,
    ) -> anyhow::Result<()> {
        match self {
            Deployment::Processes { .. } => fault_hook(http, secret, from, "cut", target).await,
            Deployment::Containers { .. } => {
                let c = self.container(target).await?;
                let cut = docker(&["network", "disconnect", &self.network(), &c]).await.map(drop);
                if cut.is_err() {
                    // The engine may have disconnected it anyway.
                    let _ = self.connect(target, &c).await;
                }
                cut
            }
        }
    }

    /// Ends a cut [`Deployment::cut`] made, trying up to [`END_TRIES`] times a second apart.
    pub async fn heal_cut(&self, http: &reqwest::Client, secret: Option<&str>, from: &Entry, target: &Entry) {
        let what = format!("healing the cut of {}", target.name());
        retried(&what, || async {
            match self {
                Deployment::Processes { .. } => fault_hook(http, secret, from, "heal", target).await,
                Deployment::Containers { .. } => self.connect(target, &self.container(target).await?).await,
            }
        })
        .await
    }

    /// Connects container `c` of process `target` to the project's network again, under its
    /// service name, which the other containers resolve.
    async fn connect(&self, target: &Entry, c: &str) -> anyhow::Result<()> {
        let alias = compose_service(target);
        match docker(&["network", "connect", "--alias", &alias, &self.network(), c]).await {
            // An earlier try that timed out may have connected it.
            Err(e) if e.to_string().contains("already exists") => Ok(()),
            other => other.map(drop),
        }
    }

    fn network(&self) -> String {
        match self {
            Deployment::Processes { .. } => String::new(),
            Deployment::Containers { project, .. } => format!("{project}_default"),
        }
    }

    /// The container of process `e`.
    async fn container(&self, e: &Entry) -> anyhow::Result<String> {
        let Deployment::Containers { project, .. } = self else { anyhow::bail!("not a container deployment") };
        let service = compose_service(e);
        let out = docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label={PROJECT_LABEL}={project}"),
            "--filter",
            &format!("label={SERVICE_LABEL}={service}"),
        ])
        .await?;
        out.split_whitespace().next().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no container for {service}"))
    }
}

/// The compose service of process `e` (build_compose's names).
fn compose_service(e: &Entry) -> String {
    match e.role {
        Role::Balancer => "gateway".to_string(),
        Role::Store => format!("{}-mongo-{}", e.service, e.id),
        role => format!("{}-{}-{}", e.service, role.name(), e.id),
    }
}

/// The process a compose service runs: `order-replica-0`, `stock-coordinator-1`,
/// `payment-mongo-2` (its store), `gateway`; `None` for anything else (the one-shot jobs).
fn parse_service(name: &str) -> Option<(Role, Option<Service>, u32)> {
    if name == "gateway" {
        return Some((Role::Balancer, None, 0));
    }
    let (rest, id) = name.rsplit_once('-')?;
    let id: u32 = id.parse().ok()?;
    let (service, role) = rest.split_once('-')?;
    let role = match role {
        "replica" => Role::Replica,
        "coordinator" => Role::Coordinator,
        "mongo" => Role::Store,
        _ => return None,
    };
    Some((role, Some(Service::parse(service)?), id))
}

/// The port process (`role`, `service`, `id`) listens on in its container.
fn port_of(t: &Topology, role: Role, service: Option<Service>, id: u32) -> Option<u16> {
    let addr = match (role, service) {
        (Role::Balancer, _) => &t.gateway,
        (Role::Store, _) => return Some(STORE_PORT),
        (Role::Replica, Some(s)) => t.nodes(s).replicas.get(id as usize)?,
        (Role::Coordinator, Some(s)) => t.nodes(s).coordinators.get(id as usize)?,
        _ => return None,
    };
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The launcher's manifest order: stores, replicas, coordinators, the gateway.
fn role_order(r: Role) -> u8 {
    match r {
        Role::Store => 0,
        Role::Replica => 1,
        Role::Coordinator => 2,
        Role::Balancer => 3,
    }
}

/// Tries at ending a pause or a cut: a process left paused or cut off would make the rest
/// of the run another one than its history says.
pub const END_TRIES: u32 = 5;

/// Runs `f` until it succeeds, at most [`END_TRIES`] times a second apart; a failure is
/// logged as a warning, the last one as an error.
pub async fn retried<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for attempt in 1..=END_TRIES {
        match f().await {
            Ok(()) => return,
            Err(e) if attempt == END_TRIES => log::error!("nemesis: {what}: gave up: {e:#}"),
            Err(e) => log::warn!("nemesis: {what}: {e:#}"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A coordinator's fault hook: `action` (`cut` or `heal`) its link to replica `target`.
async fn fault_hook(
    http: &reqwest::Client,
    secret: Option<&str>,
    from: &Entry,
    action: &str,
    target: &Entry,
) -> anyhow::Result<()> {
    let secret = secret.ok_or_else(|| anyhow::anyhow!("a fault hook needs the cluster secret"))?;
    let url = format!("http://{}/internal/fault/{action}/{}", from.addr, target.id);
    let r = http.post(&url).header(model::wire::SECRET, secret).send().await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {} (a build without fault-hooks?)", r.status());
    Ok(())
}

/// Longest a docker command may take (a stuck engine must not stall the run).
const DOCKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `docker ARGS`; its output, or why it failed (killed after [`DOCKER_TIMEOUT`]).
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let run = tokio::process::Command::new("docker").args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(DOCKER_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("docker {}: no answer within {DOCKER_TIMEOUT:?}", args.join(" ")))??;
    anyhow::ensure!(out.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a pid read from the launcher's manifest and a valid signal.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    anyhow::ensure!(r == 0, "signal {sig} to pid {pid}: {}", std::io::Error::last_os_error());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_services_name_the_processes_and_back() {
        let cases = [
            ("order-replica-0", Some((Role::Replica, Some(Service::Order), 0))),
            ("stock-coordinator-1", Some((Role::Coordinator, Some(Service::Stock), 1))),
            ("payment-mongo-2", Some((Role::Store, Some(Service::Payment), 2))),
            ("gateway", Some((Role::Balancer, None, 0))),
            ("payment-mongo-2-init", None),
            ("order-replica-x", None),
            ("cart-replica-0", None),
        ];
        for (name, want) in cases {
            let got = parse_service(name);
            assert_eq!(got, want, "{name}");
            if let Some((role, service, id)) = got {
                let e = Entry {
                    role,
                    service: service.map_or(cluster::manifest::GATEWAY, Service::name).into(),
                    id,
                    addr: String::new(),
                    pid: 0,
                };
                assert_eq!(compose_service(&e), name);
            }
        }
    }

    #[test]
    fn container_ports_come_from_the_compose_topology() {
        let t = Topology::local(3, 2, &mut (9000..));
        let port = |a: &str| a.rsplit_once(':').unwrap().1.parse::<u16>().ok();
        assert_eq!(port_of(&t, Role::Replica, Some(Service::Order), 2), port(&t.order.replicas[2]));
        assert_eq!(port_of(&t, Role::Coordinator, Some(Service::Stock), 1), port(&t.stock.coordinators[1]));
        assert_eq!(port_of(&t, Role::Balancer, None, 0), port(&t.gateway));
        assert_ne!(port(&t.order.replicas[2]), port(&t.stock.coordinators[1]));
        assert_eq!(port_of(&t, Role::Store, Some(Service::Stock), 1), Some(STORE_PORT));
        assert_eq!(port_of(&t, Role::Replica, Some(Service::Order), 3), None);
    }
}
