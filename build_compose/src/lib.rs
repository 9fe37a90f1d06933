//! Generates the container deployments from the topology in env/ (docs/design.md §2.5): the
//! docker compose file with its configs, and the Kubernetes (minikube) manifests in k8s/.
//!
//! The topology gives the node counts per service and each node's port; the generator
//! replaces the loopback hosts by the names the nodes have in the deployment and renders the
//! gateway's nginx config through the `gateway` crate (container mode). Every replica runs
//! the `mongo` engine on a MongoDB server of its own.
//!
//! - docker compose ([`compose_files`]): one container per replica, per replica's MongoDB
//!   (with its volume) and per coordinator, and nginx publishing the gateway's port. The
//!   nodes read `deploy/compose/topology.toml` (their container names as hosts); nginx reads
//!   `deploy/compose/nginx.conf`. The cluster secret comes from `WEBSHOP_SECRET`.
//! - Kubernetes ([`k8s_files`]): per service a StatefulSet of replicas (stable names
//!   `<service>-replica-<ordinal>` behind a headless Service, the ordinal is the replica's id),
//!   each pod with its MongoDB as a native sidecar on a persistent volume; one Deployment and
//!   Service per coordinator (a coordinator's id is its place in the topology, so each has its
//!   own); nginx as a Deployment behind a NodePort Service; the configs in a ConfigMap. Not
//!   the Secret: the operator creates it before the pods start, so `kubectl apply -f k8s/`
//!   never replaces it under running pods (which read it once, at start).
//!
//! - Prometheus ([`prometheus_config`]): a scrape config of every replica and coordinator of
//!   a topology (`/metrics`, the catalogue in `net::metrics`), each target labelled with
//!   its service, role and id. Written for the compose deployment
//!   (`deploy/compose/prometheus.yml`, container names as hosts) and for the local processes
//!   of `cluster up` ([`LOCAL_PROMETHEUS`], the topology's own addresses); a test renders
//!   one for its own cluster. The Grafana dashboard that reads it (deploy/grafana/) is
//!   written by hand; a test checks its queries against the catalogue.
//!
//! Output is plain text built here (no YAML library): every value that is not a plain word
//! is written as a JSON string, which YAML reads as the same string.

use gateway::{BalancerOptions, Mode};
use model::topology::{Service, ServiceNodes, Topology};
use std::path::PathBuf;

/// The image every node runs, built by the repository's Dockerfile (`cluster replica` and
/// `cluster coordinator`).
pub const NODE_IMAGE: &str = "webshop-node:latest";

/// MongoDB server image of each replica: 7.0 is a supported release line with transactions
/// on a single-node replica set and `mongosh` in the image (used by the health checks).
pub const MONGO_IMAGE: &str = "mongo:7.0";

/// The gateway's image: the official nginx on Debian, which has `curl` for its health check.
pub const NGINX_IMAGE: &str = "nginx:1.27";

/// The port MongoDB listens on in its container (its default).
pub const MONGO_PORT: u16 = 27017;

/// The replica-set name every MongoDB server runs under: transactions need a replica set,
/// so each server is a replica set of one (initiated by its health check).
pub const MONGO_REPLSET: &str = "rs0";

/// Where the nodes find the topology inside their container.
pub const TOPOLOGY_PATH: &str = "/etc/webshop/topology.toml";

/// The compose configs' folder, relative to the compose file.
pub const COMPOSE_CONFIG_DIR: &str = "deploy/compose";

/// The environment variable docker compose takes the cluster secret from.
pub const SECRET_ENV: &str = "WEBSHOP_SECRET";

/// The NodePort minikube publishes the gateway on (`minikube service gateway` finds it too);
/// in the range Kubernetes reserves for node ports (30000-32767).
pub const GATEWAY_NODE_PORT: u16 = 30800;

/// Persistent volume of each replica's MongoDB in Kubernetes: far above what the benchmark
/// stores (a few hundred MB for a million keys), small enough for minikube's default disk.
pub const K8S_VOLUME_SIZE: &str = "1Gi";

/// Health check timing (compose and Kubernetes): a node answers `/health` in a millisecond,
/// so a check every 5 s with a 3 s timeout notices a dead node quickly without load; a few
/// failures in a row before it counts as unhealthy ride out a busy moment.
pub const HEALTH_INTERVAL_S: u32 = 5;
/// See [`HEALTH_INTERVAL_S`].
pub const HEALTH_TIMEOUT_S: u32 = 3;
/// See [`HEALTH_INTERVAL_S`].
pub const HEALTH_RETRIES: u32 = 5;
/// Grace for a start (a replica opening its store, MongoDB initiating its replica set).
pub const HEALTH_START_PERIOD_S: u32 = 20;

/// A topology the generator cannot deploy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GenError(pub String);

/// The port of `host:port`.
pub fn port_of(addr: &str) -> Result<u16, GenError> {
    let (_, port) = addr.rsplit_once(':').ok_or_else(|| GenError(format!("address '{addr}' has no port")))?;
    port.parse().map_err(|_| GenError(format!("address '{addr}': '{port}' is not a port")))
}

/// A node's name in the deployments: `order-replica-0`, `stock-coordinator-1`.
pub fn node_name(s: Service, role: &str, id: usize) -> String {
    format!("{}-{role}-{id}", s.name())
}

/// The MongoDB container of a replica in compose: `order-mongo-0`.
pub fn mongo_name(s: Service, id: usize) -> String {
    format!("{}-mongo-{id}", s.name())
}

/// A YAML scalar for any string (a JSON string, which YAML reads as is).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A YAML flow list of strings.
fn list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "))
}

/// `t` with every node's host replaced by `host(service, role, id)` (ports kept); the
/// gateway stays as it is (the nodes never call it).
fn renamed(t: &Topology, host: impl Fn(Service, &str, usize) -> String) -> Result<Topology, GenError> {
    t.validate().map_err(|e| GenError(e.to_string()))?;
    let nodes = |s: Service| -> Result<ServiceNodes, GenError> {
        let n = t.nodes(s);
        let map = |role: &str, addrs: &[String]| -> Result<Vec<String>, GenError> {
            addrs.iter().enumerate().map(|(i, a)| Ok(format!("{}:{}", host(s, role, i), port_of(a)?))).collect()
        };
        Ok(ServiceNodes { replicas: map("replica", &n.replicas)?, coordinators: map("coordinator", &n.coordinators)? })
    };
    Ok(Topology {
        gateway: t.gateway.clone(),
        order: nodes(Service::Order)?,
        payment: nodes(Service::Payment)?,
        stock: nodes(Service::Stock)?,
    })
}

/// The topology the compose containers read: hosts are container names.
pub fn compose_topology(t: &Topology) -> Result<Topology, GenError> {
    renamed(t, node_name)
}

/// The topology the Kubernetes pods read: replicas by their StatefulSet pod's stable name
/// (`order-replica-0.order-replica`), all on the port of the service's first replica (the
/// pods of one StatefulSet share one template); coordinators by their Service's name.
pub fn k8s_topology(t: &Topology) -> Result<Topology, GenError> {
    let mut k = renamed(t, |s, role, i| match role {
        "replica" => format!("{}.{}", node_name(s, role, i), replica_set_name(s)),
        _ => node_name(s, role, i),
    })?;
    for s in Service::ALL {
        let port = port_of(&t.nodes(s).replicas[0])?;
        let n = match s {
            Service::Order => &mut k.order,
            Service::Payment => &mut k.payment,
            Service::Stock => &mut k.stock,
        };
        for a in n.replicas.iter_mut() {
            let (host, _) = a.rsplit_once(':').expect("renamed addresses have a port");
            *a = format!("{host}:{port}");
        }
    }
    Ok(k)
}

/// The StatefulSet (and headless Service) of a service's replicas: `order-replica`.
pub fn replica_set_name(s: Service) -> String {
    format!("{}-replica", s.name())
}

/// The gateway's nginx config in a container, listening on the topology's gateway port and
/// proxying to `t`'s coordinator addresses.
pub fn nginx_conf(t: &Topology, gateway_port: u16) -> String {
    gateway::render(t, &BalancerOptions { listen: format!("0.0.0.0:{gateway_port}"), mode: Mode::Container })
}

/// The header of every generated file.
fn header(comment: &str, what: &str) -> String {
    format!(
        "{comment} {what}\n{comment} Generated by `cargo run --release -p build_compose` from env/topology.toml: do not edit;\n\
         {comment} change the topology or build_compose/src/lib.rs and generate again (a test checks it).\n"
    )
}

/// The MongoDB health check script: initiates the server's one-member replica set on the
/// first run, then is healthy once the server is the writable primary.
fn mongo_check_script() -> String {
    format!(
        "try {{ rs.status() }} catch (e) {{ rs.initiate({{_id: \"{MONGO_REPLSET}\", members: [{{_id: 0, host: \
         \"localhost:{MONGO_PORT}\"}}]}}) }}; quit(db.hello().isWritablePrimary ? 0 : 1)"
    )
}

/// The URI a replica reaches its own MongoDB server with (one host: a direct connection,
/// so the replica-set member name `localhost` need not resolve from the replica).
fn mongo_uri(host: &str) -> String {
    format!("mongodb://{host}:{MONGO_PORT}/?directConnection=true")
}

/// The two compose files made from one topology. They have the same services, dependencies,
/// ports, settings and limits (one function writes both, so they cannot drift apart); they
/// differ only in their images, in how a store starts, and in where the gateway is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `docker-compose.yml` at the repository root, for users who can pull images: `mongo:7.0`
    /// (its replica set of one initiated by a one-shot job), `nginx:1.27`, and the node image
    /// built from the repository's Dockerfile. The gateway is published on every interface.
    Published,
    /// [`LOCAL_COMPOSE`], which `scripts/compose.sh` runs: the images scripts/images.sh builds
    /// without a registry ([`LOCAL_NODE_IMAGE`], [`LOCAL_STORE_IMAGE`] running SecantusDB,
    /// [`LOCAL_GATEWAY_IMAGE`]). The gateway is published on loopback only, on
    /// `WEBSHOP_GATEWAY_PORT` (default the topology's gateway port).
    Local,
}

/// The local compose file, relative to the repository root (beside the configs it mounts).
pub const LOCAL_COMPOSE: &str = "deploy/compose/docker-compose.local.yml";
/// The node image scripts/images.sh builds: its base and the node binary built on the host.
pub const LOCAL_NODE_IMAGE: &str = "webshop-node:local";
/// The store image scripts/images.sh builds: its base and SecantusDB (`secantusd-rs`).
pub const LOCAL_STORE_IMAGE: &str = "webshop-store:local";
/// The gateway image scripts/images.sh builds: its base running Debian's nginx.
pub const LOCAL_GATEWAY_IMAGE: &str = "webshop-gateway:local";
/// The variable that moves the local deployment's gateway to another host port.
pub const GATEWAY_PORT_ENV: &str = "WEBSHOP_GATEWAY_PORT";

/// MongoDB's WiredTiger cache per store (GB): its default, half the memory minus 1 GB,
/// counts the whole machine's memory in each of nine containers; the benchmark's data is a
/// few hundred megabytes per service.
pub const MONGO_CACHE_GB: &str = "0.25";

/// Resources per container: (reserved memory, memory limit, CPUs). A node holds its request
/// records and connections (tens of MiB under the benchmark, README); a store its cache
/// ([`MONGO_CACHE_GB`]) and its working set; nginx little. Each may use up to one core.
pub const NODE_RESOURCES: (&str, &str, &str) = ("128m", "1g", "1.0");
/// See [`NODE_RESOURCES`].
pub const STORE_RESOURCES: (&str, &str, &str) = ("256m", "1g", "1.0");
/// See [`NODE_RESOURCES`].
pub const GATEWAY_RESOURCES: (&str, &str, &str) = ("32m", "256m", "1.0");

/// A service's resource lines.
fn resources((reserved, limit, cpus): (&str, &str, &str)) -> String {
    format!("    mem_reservation: {reserved}\n    mem_limit: {limit}\n    cpus: {cpus}\n")
}

/// The one-shot job that initiates a published store's replica set of one: it retries until
/// the server answers and is the writable primary, then exits; the replica starts after it.
/// The store itself has no periodic health check (a `mongosh` every few seconds in nine
/// containers for the whole run).
fn mongo_init_name(s: Service, id: usize) -> String {
    format!("{}-init", mongo_name(s, id))
}

/// The compose file of `flavor` for the compose topology `ct` ([`compose_topology`]) with the
/// gateway on `gateway_port`. `config` is the configs' folder as the file names it (`.` when
/// the file is in it); `context` the node image's build context (published only).
fn compose_file(
    ct: &Topology,
    gateway_port: u16,
    flavor: Flavor,
    config: &str,
    context: &str,
) -> Result<String, GenError> {
    let health = |test: String| {
        format!(
            "    healthcheck:\n      test: {test}\n      interval: {HEALTH_INTERVAL_S}s\n      timeout: {HEALTH_TIMEOUT_S}s\n      \
             retries: {HEALTH_RETRIES}\n      start_period: {HEALTH_START_PERIOD_S}s\n"
        )
    };
    let node_health = |port: u16| {
        health(list(&["CMD", "curl", "-fsS", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/health")]))
    };
    let node_image = match flavor {
        Flavor::Published => format!("    build: {}\n    image: {NODE_IMAGE}\n", q(context)),
        Flavor::Local => format!("    image: {LOCAL_NODE_IMAGE}\n"),
    };
    let secret = format!("${{{SECRET_ENV}:?set {SECRET_ENV} to the cluster secret (README, Docker compose)}}");
    let mut out = match flavor {
        Flavor::Published => {
            header("#", "docker compose deployment of the webshop cluster (README, \"Docker compose\").")
                + &format!(
                    "# Run: export {SECRET_ENV}=$(openssl rand -hex 16); docker compose up --build\n\
                     # The gateway is then on http://localhost:{gateway_port}.\n"
                )
        }
        Flavor::Local => {
            header(
                "#",
                "docker compose deployment on images built here without a registry (README, \"Docker compose\").",
            ) + &format!(
                "# Run: scripts/compose.sh up (builds the images with scripts/images.sh, sets {SECRET_ENV}).\n\
                     # The gateway is then on http://127.0.0.1:{gateway_port} (or ${GATEWAY_PORT_ENV}).\n"
            )
        }
    };
    out.push_str("\nservices:\n");
    let mut volumes = Vec::new();
    for s in Service::ALL {
        let n = ct.nodes(s);
        for (i, addr) in n.replicas.iter().enumerate() {
            let (name, mongo, port) = (node_name(s, "replica", i), mongo_name(s, i), port_of(addr)?);
            volumes.push(mongo.clone());
            let store_ready = match flavor {
                Flavor::Published => {
                    let cmd = [
                        "mongod",
                        "--replSet",
                        MONGO_REPLSET,
                        "--bind_ip_all",
                        "--wiredTigerCacheSizeGB",
                        MONGO_CACHE_GB,
                    ];
                    out.push_str(&format!(
                        "  {mongo}:\n    image: {MONGO_IMAGE}\n    command: {}\n    restart: unless-stopped\n    volumes:\n      - \"{mongo}:/data/db\"\n{}",
                        list(&cmd),
                        resources(STORE_RESOURCES),
                    ));
                    let init = mongo_init_name(s, i);
                    let check = format!(
                        "until mongosh --quiet --host {mongo}:{MONGO_PORT} --eval {}; do sleep 1; done",
                        shell_quote(&mongo_check_script())
                    );
                    out.push_str(&format!(
                        "  {init}:\n    image: {MONGO_IMAGE}\n    command: {}\n    restart: \"no\"\n    depends_on:\n      - {mongo}\n",
                        list(&["bash", "-c", &check]),
                    ));
                    format!("      {mongo}:\n        condition: service_started\n      {init}:\n        condition: service_completed_successfully\n")
                }
                Flavor::Local => {
                    let args: Vec<String> =
                        model::mongo_server::server_args("0.0.0.0", MONGO_PORT, std::path::Path::new("/data/db"))
                            .into_iter()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    out.push_str(&format!(
                        "  {mongo}:\n    image: {LOCAL_STORE_IMAGE}\n    command: {}\n    restart: unless-stopped\n    volumes:\n      - \"{mongo}:/data/db\"\n{}",
                        list(&args),
                        resources(STORE_RESOURCES),
                    ));
                    // Accepting connections is being ready: SecantusDB listens once its store is
                    // open. Bash's /dev/tcp, as the image has no MongoDB shell.
                    out.push_str(&health(list(&[
                        "CMD",
                        "bash",
                        "-c",
                        &format!("exec 3<>/dev/tcp/127.0.0.1/{MONGO_PORT}"),
                    ])));
                    format!("      {mongo}:\n        condition: service_healthy\n")
                }
            };
            out.push_str(&format!(
                "  {name}:\n{node_image}    command: [\"replica\"]\n    restart: unless-stopped\n    \
                 environment:\n      APP__SERVICE: {svc}\n      APP__ID: \"{i}\"\n      APP__TOPOLOGY: {TOPOLOGY_PATH}\n      \
                 APP__LISTEN: \"0.0.0.0:{port}\"\n      APP__ENGINE: mongo\n      APP__MONGO_URI: {uri}\n      \
                 APP__BOOTSTRAP: \"true\"\n      APP__SECRET: {sec}\n      RUST_LOG: info\n    volumes:\n      \
                 - \"{config}/topology.toml:{TOPOLOGY_PATH}:ro\"\n{res}    depends_on:\n{store_ready}",
                svc = s.name(),
                uri = q(&mongo_uri(&mongo)),
                sec = q(&secret),
                res = resources(NODE_RESOURCES),
            ));
            out.push_str(&node_health(port));
        }
        for (i, addr) in n.coordinators.iter().enumerate() {
            let (name, port) = (node_name(s, "coordinator", i), port_of(addr)?);
            out.push_str(&format!(
                "  {name}:\n{node_image}    command: [\"coordinator\"]\n    restart: unless-stopped\n    \
                 environment:\n      APP__SERVICE: {svc}\n      APP__ID: \"{i}\"\n      APP__TOPOLOGY: {TOPOLOGY_PATH}\n      \
                 APP__LISTEN: \"0.0.0.0:{port}\"\n      APP__SECRET: {sec}\n      RUST_LOG: info\n    volumes:\n      \
                 - \"{config}/topology.toml:{TOPOLOGY_PATH}:ro\"\n{res}    depends_on:\n",
                svc = s.name(),
                sec = q(&secret),
                res = resources(NODE_RESOURCES),
            ));
            for r in 0..n.replicas.len() {
                out.push_str(&format!("      {}:\n        condition: service_healthy\n", node_name(s, "replica", r)));
            }
            out.push_str(&node_health(port));
        }
    }
    let (gateway_image, published) = match flavor {
        Flavor::Published => (NGINX_IMAGE, format!("{gateway_port}:{gateway_port}")),
        Flavor::Local => {
            (LOCAL_GATEWAY_IMAGE, format!("127.0.0.1:${{{GATEWAY_PORT_ENV}:-{gateway_port}}}:{gateway_port}"))
        }
    };
    out.push_str(&format!(
        "  gateway:\n    image: {gateway_image}\n    entrypoint: {entry}\n    restart: unless-stopped\n    ports:\n      - {published}\n    \
         volumes:\n      - \"{config}/nginx.conf:/etc/nginx/nginx.conf:ro\"\n      - \"{config}/gateway.sh:{GATEWAY_SCRIPT_PATH}:ro\"\n\
         {res}    depends_on:\n",
        entry = list(&["sh", GATEWAY_SCRIPT_PATH]),
        published = q(&published),
        res = resources(GATEWAY_RESOURCES),
    ));
    for s in Service::ALL {
        for c in 0..ct.nodes(s).coordinators.len() {
            out.push_str(&format!("      {}:\n        condition: service_healthy\n", node_name(s, "coordinator", c)));
        }
    }
    // Any HTTP answer (nginx's own 404 for `/`) means it is up; curl fails only without one.
    out.push_str(&health(list(&[
        "CMD",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{gateway_port}/"),
    ])));
    out.push_str("\nvolumes:\n");
    for v in volumes {
        out.push_str(&format!("  {v}: {{}}\n"));
    }
    Ok(out)
}

/// Where the gateway container finds [`gateway_script`].
pub const GATEWAY_SCRIPT_PATH: &str = "/etc/webshop/gateway.sh";

/// How often the gateway looks the coordinators' names up again (seconds).
pub const GATEWAY_RESOLVE_INTERVAL_S: u32 = 2;

/// The gateway container's entry point: nginx resolves the upstream servers' names once, when
/// it loads its config, so a coordinator container recreated with another address would
/// never be used again (nginx keeps trying the old one; seen here, test
/// `a_recreated_coordinator_with_a_new_address_is_used_by_the_gateway`). Open-source nginx
/// before 1.27.3 cannot re-resolve an upstream by itself, so this script runs nginx, looks
/// the coordinators' names up every [`GATEWAY_RESOLVE_INTERVAL_S`] seconds through the
/// container's resolver (Docker's DNS), and reloads nginx (gracefully: open connections
/// finish on the old workers) when an address changed.
///
/// A stopped container's name does not resolve at all, and nginx refuses a config with a
/// name it cannot resolve. So a name that does not resolve keeps its last known address, in
/// `/etc/hosts` (which the lookups bypass: they run against the file as Docker wrote it):
/// with one coordinator of a service stopped, a recreated other one is still taken up (the
/// script used to wait for every name to resolve, and so never reloaded in that case: the
/// test above failed when the stop came within a lookup interval of the recreation).
/// Kubernetes needs none of this: its Services keep their addresses.
pub fn gateway_script(ct: &Topology) -> String {
    let mut names: Vec<String> = Vec::new();
    for s in Service::ALL {
        for a in &ct.nodes(s).coordinators {
            names.push(a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| a.clone()));
        }
    }
    header("#", "The gateway container's entry point: nginx, reloaded when a coordinator's address changes.")
        + &format!(
            r#"# nginx resolves upstream names only when it loads its config (build_compose: gateway_script).
names="{names}"
# /etc/hosts as Docker wrote it; the script adds the last known address of every coordinator
# whose name does not resolve now (a stopped container), so that nginx can still load its config.
base=$(cat /etc/hosts)
# "name address" per coordinator, looked up in Docker's DNS (just "name" if it does not resolve).
lookup() {{
    printf '%s\n' "$base" > /etc/hosts
    for n in $names; do
        echo "$n $(getent hosts "$n" | head -n 1 | cut -d' ' -f1)"
    done
}}
# Every name with its address now, or the last one it had ($1: the last table, $2: now).
known() {{
    printf '%s\n%s\n' "$1" "$2" | awk 'NF == 2 {{ a[$1] = $2 }} END {{ for (n in a) print n, a[n] }}' | sort
}}
# "address name" lines for /etc/hosts: the names that do not resolve now ($1: known, $2: now).
pins() {{
    printf '%s\n' "$2" | awk -v known="$1" 'BEGIN {{ n = split(known, l, "\n"); for (i = 1; i <= n; i++) {{ split(l[i], f, " "); a[f[1]] = f[2] }} }} NF == 1 && ($1 in a) {{ print a[$1], $1 }}'
}}
last=$(known "" "$(lookup)")
nginx -g 'daemon off;' &
pid=$!
trap 'kill -QUIT $pid 2>/dev/null; wait $pid; exit 0' TERM INT QUIT
while kill -0 $pid 2>/dev/null; do
    sleep {GATEWAY_RESOLVE_INTERVAL_S}
    now=$(lookup)
    next=$(known "$last" "$now")
    {{ printf '%s\n' "$base"; pins "$next" "$now"; }} > /etc/hosts
    if [ "$next" != "$last" ] && [ "$(printf '%s\n' "$next" | grep -c .)" -eq {count} ]; then
        echo "gateway: a coordinator's address changed; reloading nginx" >&2
        nginx -s reload && last=$next
    fi
done
wait $pid
"#,
            names = names.join(" "),
            count = names.len(),
        )
}

/// A word for `sh -c`: in single quotes, each single quote written as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The files of the compose deployments, paths relative to the published compose file's
/// folder: the published file (named `compose_name`), [`LOCAL_COMPOSE`], the configs both
/// mount, and the deployment's Prometheus scrape config. `context` is the node image's build context (the repository root) as the published
/// file names it: `.` when the file is at the root.
pub fn compose_files(t: &Topology, compose_name: &str, context: &str) -> Result<Vec<(PathBuf, String)>, GenError> {
    let ct = compose_topology(t)?;
    let gateway_port = port_of(&t.gateway)?;
    let published = compose_file(&ct, gateway_port, Flavor::Published, &format!("./{COMPOSE_CONFIG_DIR}"), context)?;
    let local = compose_file(&ct, gateway_port, Flavor::Local, ".", context)?;
    let topo = header("#", "The topology the compose containers read (hosts are container names).") + &ct.to_toml();
    let nginx = header("#", "The gateway's nginx config in docker compose.") + &nginx_conf(&ct, gateway_port);
    let prometheus = header("#", "Prometheus scrape config of the compose deployment (hosts are container names).")
        + "# Run a Prometheus on the deployment's network (`docker network ls`: <project>_default), e.g.\n\
           #   docker run --network webshop_default -p 127.0.0.1:9090:9090 \\\n\
           #     -v \"$PWD/deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro\" prom/prometheus\n"
        + &prometheus_config(&ct)?;
    Ok(vec![
        (PathBuf::from(compose_name), published),
        (PathBuf::from(LOCAL_COMPOSE), local),
        (PathBuf::from(COMPOSE_CONFIG_DIR).join("topology.toml"), topo),
        (PathBuf::from(COMPOSE_CONFIG_DIR).join("nginx.conf"), nginx),
        (PathBuf::from(COMPOSE_CONFIG_DIR).join("gateway.sh"), gateway_script(&ct)),
        (PathBuf::from(COMPOSE_CONFIG_DIR).join("prometheus.yml"), prometheus),
    ])
}

/// The Prometheus job every node is scraped under (the `job` label of its series).
pub const PROMETHEUS_JOB: &str = "webshop";

/// How often Prometheus scrapes each node (seconds): a node renders its metrics in well
/// under a millisecond, and 5 s gives a rate over a minute a dozen points.
pub const SCRAPE_INTERVAL_S: u32 = 5;

/// How long Prometheus waits for a node's metrics (seconds), below the interval (Prometheus
/// requires it): a node that does not answer within it counts as down (`up == 0`).
pub const SCRAPE_TIMEOUT_S: u32 = 4;

/// The local processes' scrape config, relative to the repository root.
pub const LOCAL_PROMETHEUS: &str = "deploy/prometheus/prometheus.local.yml";

/// A Prometheus config that scrapes `/metrics` of every replica and coordinator of `t`, at
/// the addresses `t` gives, every [`SCRAPE_INTERVAL_S`] seconds under job
/// [`PROMETHEUS_JOB`]. Each node is a target of its own, labelled `service` (`order`, ...),
/// `role` (`replica` or `coordinator`) and `id` (its id in the topology), so that queries
/// group by service and role without parsing addresses; Prometheus adds `instance` (the
/// address) and `job`. The gateway (nginx) exports no metrics and is not scraped. Pure: no
/// header, nothing read or written (the files add a header; a test renders one for the
/// cluster it started).
pub fn prometheus_config(t: &Topology) -> Result<String, GenError> {
    t.validate().map_err(|e| GenError(e.to_string()))?;
    let mut out = format!(
        "global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n  scrape_timeout: {SCRAPE_TIMEOUT_S}s\n\n\
         scrape_configs:\n  - job_name: {PROMETHEUS_JOB}\n    metrics_path: /metrics\n    scheme: http\n    static_configs:\n"
    );
    for s in Service::ALL {
        let n = t.nodes(s);
        for (role, addrs) in [("replica", &n.replicas), ("coordinator", &n.coordinators)] {
            for (id, addr) in addrs.iter().enumerate() {
                port_of(addr)?;
                out.push_str(&format!(
                    "      - targets: [{}]\n        labels:\n          service: {}\n          role: {role}\n          id: \"{id}\"\n",
                    q(addr),
                    s.name(),
                ));
            }
        }
    }
    Ok(out)
}

/// The scrape config of the local processes (`cluster up` on `t`, loopback addresses), as
/// [`LOCAL_PROMETHEUS`] relative to the repository root, with its header.
pub fn local_prometheus_file(t: &Topology) -> Result<(PathBuf, String), GenError> {
    let text = header("#", "Prometheus scrape config of the local processes (`cluster up`, env/topology.toml).")
        + &format!(
            "# Run, from the repository root, while the cluster runs (Debian's package: prometheus):\n\
             #   prometheus --config.file={LOCAL_PROMETHEUS} --storage.tsdb.path=target/prometheus \\\n\
             #     --web.listen-address=127.0.0.1:9090\n\
             # then import deploy/grafana/webshop.json into a Grafana that reads it.\n"
        )
        + &prometheus_config(t)?;
    Ok((PathBuf::from(LOCAL_PROMETHEUS), text))
}

/// Indents every line of `text` by `n` spaces (a block scalar's content).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("{pad}{l}\n") }).collect()
}

/// A Kubernetes probe on `/health` of `port`, waiting `delay_s` after the container starts.
fn http_probe(kind: &str, port: u16, indent_n: usize, delay_s: u32) -> String {
    let pad = " ".repeat(indent_n);
    format!(
        "{pad}{kind}:\n{pad}  httpGet:\n{pad}    path: /health\n{pad}    port: {port}\n{pad}  initialDelaySeconds: {delay_s}\n\
         {pad}  periodSeconds: {HEALTH_INTERVAL_S}\n{pad}  timeoutSeconds: {HEALTH_TIMEOUT_S}\n{pad}  failureThreshold: {HEALTH_RETRIES}\n"
    )
}

/// A Kubernetes liveness probe: the container is restarted only when its port stops
/// accepting connections for a while. Not `/health`: a replica that restarted without its
/// data answers it with 503 until it has re-joined, and must not be restarted for that.
fn tcp_liveness(port: u16, indent_n: usize) -> String {
    let pad = " ".repeat(indent_n);
    format!(
        "{pad}livenessProbe:\n{pad}  tcpSocket:\n{pad}    port: {port}\n{pad}  initialDelaySeconds: {HEALTH_START_PERIOD_S}\n\
         {pad}  periodSeconds: {HEALTH_INTERVAL_S}\n{pad}  timeoutSeconds: {HEALTH_TIMEOUT_S}\n{pad}  failureThreshold: {HEALTH_RETRIES}\n"
    )
}

/// The secret and common environment of a node container.
fn k8s_node_env(s: Service, port: u16) -> String {
    format!(
        "            - name: APP__SERVICE\n              value: {svc}\n            - name: APP__TOPOLOGY\n              \
         value: {TOPOLOGY_PATH}\n            - name: APP__LISTEN\n              value: \"0.0.0.0:{port}\"\n            \
         - name: APP__SECRET\n              valueFrom:\n                secretKeyRef:\n                  name: webshop-secret\n                  \
         key: secret\n            - name: RUST_LOG\n              value: info\n",
        svc = s.name()
    )
}

/// A Kubernetes container's `resources` (10 spaces in): the memory compose reserves as the
/// request, its limit as the limit, [`K8S_CPU_REQUEST`] and the compose CPUs as the limit.
fn k8s_resources((reserved, limit, cpus): (&str, &str, &str)) -> String {
    let mem = |m: &str| format!("{}Mi", mebibytes(m));
    format!(
        "          resources:\n            requests:\n              memory: {}\n              cpu: {K8S_CPU_REQUEST}\n            \
         limits:\n              memory: {}\n              cpu: {}\n",
        mem(reserved),
        mem(limit),
        q(cpus)
    )
}

/// MiB in a compose memory size (`128m`, `1g`).
fn mebibytes(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.len() - 1);
    let n: u64 = n.parse().expect("a compose memory size");
    match unit {
        "m" => n,
        "g" => n * 1024,
        _ => panic!("unknown unit in {size}"),
    }
}

/// The CPU each pod's container requests: small, so that the 25 containers of the default
/// topology and minikube's own pods fit on 2 CPUs (each may use a whole one, as in compose).
pub const K8S_CPU_REQUEST: &str = "25m";

/// The memory all pods of topology `t` request (MiB): what the minikube node needs free.
pub fn k8s_memory_requested(t: &Topology) -> u64 {
    let (replicas, coordinators) = Service::ALL
        .iter()
        .fold((0, 0), |(r, c), s| (r + t.nodes(*s).replicas.len() as u64, c + t.nodes(*s).coordinators.len() as u64));
    replicas * (mebibytes(NODE_RESOURCES.0) + mebibytes(STORE_RESOURCES.0))
        + coordinators * mebibytes(NODE_RESOURCES.0)
        + mebibytes(GATEWAY_RESOURCES.0)
}

/// How to start minikube for topology `t` and where the Secret comes from, for the header of
/// the manifests: the pods' memory requests plus 2 GiB for Kubernetes itself, rounded up to
/// whole GiB, on 2 CPUs.
pub fn k8s_start_comment(t: &Topology) -> String {
    let requested = k8s_memory_requested(t);
    let gib = (requested + 2048).div_ceil(1024);
    format!(
        "# Start minikube with room for the pods' requests ({} MiB of memory):\n\
         #   minikube start --cpus 2 --memory {gib}g\n\
         # The Secret `webshop-secret` is not in these files: create it before applying them (pods\n\
         # read it once, at start, and wait for it), and never apply it from here:\n\
         #   kubectl create secret generic webshop-secret --from-literal=secret=$(openssl rand -hex 16)\n",
        requested
    )
}

/// The config volume of a node pod (the topology from the ConfigMap).
const K8S_TOPOLOGY_MOUNT: &str = "          volumeMounts:\n            - name: config\n              mountPath: /etc/webshop/topology.toml\n              subPath: topology.toml\n";
const K8S_CONFIG_VOLUME: &str =
    "      volumes:\n        - name: config\n          configMap:\n            name: webshop-config\n";

/// The Kubernetes manifests, paths relative to the repository root (`k8s/...`), in the order
/// `kubectl apply -f k8s/` applies them (by file name).
pub fn k8s_files(t: &Topology) -> Result<Vec<(PathBuf, String)>, GenError> {
    let kt = k8s_topology(t)?;
    let gateway_port = port_of(&t.gateway)?;
    let dir = PathBuf::from("k8s");
    let mut files = Vec::new();

    let config = header("#", "The nodes' topology (hosts are pod and Service names) and the gateway's nginx config.")
        + &k8s_start_comment(t)
        + "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: webshop-config\ndata:\n  topology.toml: |\n"
        + &indent(&kt.to_toml(), 4)
        + "  nginx.conf: |\n"
        + &indent(&nginx_conf(&kt, gateway_port), 4);
    files.push((dir.join("01-config.yaml"), config));

    for s in Service::ALL {
        let n = kt.nodes(s);
        let set = replica_set_name(s);
        let rport = port_of(&n.replicas[0])?;
        let mut y = header("#", &format!("The {s} service: its replicas (each with its MongoDB) and coordinators."));
        // Headless: stable DNS names for the pods; published before they are ready, since the
        // replicas must reach each other to become ready.
        y.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {set}\nspec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  \
             selector:\n    app: {set}\n  ports:\n    - name: http\n      port: {rport}\n---\n"
        ));
        y.push_str(&format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {set}\nspec:\n  serviceName: {set}\n  replicas: {count}\n  \
             podManagementPolicy: Parallel\n  selector:\n    matchLabels:\n      app: {set}\n  template:\n    metadata:\n      labels:\n        \
             app: {set}\n    spec:\n      initContainers:\n        # The replica's MongoDB, a native sidecar: started (and its replica set of one\n        \
             # initiated) before the replica, stopped after it, on the pod's own volume.\n        - name: mongo\n          \
             image: {MONGO_IMAGE}\n          restartPolicy: Always\n          args: {args}\n{store_res}          ports:\n            - containerPort: {MONGO_PORT}\n          \
             volumeMounts:\n            - name: data\n              mountPath: /data/db\n          startupProbe:\n            exec:\n              \
             command: {check}\n            periodSeconds: {HEALTH_INTERVAL_S}\n            timeoutSeconds: {HEALTH_TIMEOUT_S}\n            \
             failureThreshold: 30\n      containers:\n        - name: replica\n          image: {NODE_IMAGE}\n          imagePullPolicy: IfNotPresent\n          \
             # The pod's ordinal (order-replica-2 -> 2) is the replica's id.\n          command: {cmd}\n{node_res}          ports:\n            - containerPort: {rport}\n          \
             env:\n{env}            - name: APP__ENGINE\n              value: mongo\n            - name: APP__MONGO_URI\n              value: {uri}\n            \
             - name: APP__BOOTSTRAP\n              value: \"true\"\n{mount}{ready}{live}{vols}  volumeClaimTemplates:\n    - metadata:\n        name: data\n      \
             spec:\n        accessModes: [\"ReadWriteOnce\"]\n        resources:\n          requests:\n            storage: {K8S_VOLUME_SIZE}\n",
            count = n.replicas.len(),
            args = list(&["--replSet", MONGO_REPLSET, "--bind_ip", "127.0.0.1", "--wiredTigerCacheSizeGB", MONGO_CACHE_GB]),
            node_res = k8s_resources(NODE_RESOURCES),
            store_res = k8s_resources(STORE_RESOURCES),
            check = list(&["mongosh", "--quiet", "--eval", &mongo_check_script()]),
            cmd = list(&["/bin/sh", "-c", "export APP__ID=\"${HOSTNAME##*-}\"; exec cluster replica"]),
            env = k8s_node_env(s, rport),
            uri = q(&mongo_uri("127.0.0.1")),
            mount = K8S_TOPOLOGY_MOUNT,
            ready = http_probe("readinessProbe", rport, 10, 0),
            live = tcp_liveness(rport, 10),
            vols = K8S_CONFIG_VOLUME,
        ));
        for (i, addr) in n.coordinators.iter().enumerate() {
            let (name, port) = (node_name(s, "coordinator", i), port_of(addr)?);
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n    - name: http\n      \
                 port: {port}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      \
                 app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n        - name: coordinator\n          \
                 image: {NODE_IMAGE}\n          imagePullPolicy: IfNotPresent\n          args: [\"coordinator\"]\n{res}          ports:\n            - containerPort: {port}\n          \
                 env:\n{env}            - name: APP__ID\n              value: \"{i}\"\n{mount}{ready}{live}{vols}",
                env = k8s_node_env(s, port),
                res = k8s_resources(NODE_RESOURCES),
                mount = K8S_TOPOLOGY_MOUNT,
                ready = http_probe("readinessProbe", port, 10, 0),
                live = tcp_liveness(port, 10),
                vols = K8S_CONFIG_VOLUME,
            ));
        }
        files.push((dir.join(format!("10-{s}.yaml")), y));
    }

    let gateway = header("#", "The gateway: nginx in front of the coordinators, published on a NodePort.")
        + &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gateway\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: gateway\n  \
             template:\n    metadata:\n      labels:\n        app: gateway\n    spec:\n      containers:\n        - name: nginx\n          image: {NGINX_IMAGE}\n{res}          \
             ports:\n            - containerPort: {gateway_port}\n          volumeMounts:\n            - name: config\n              mountPath: /etc/nginx/nginx.conf\n              \
             subPath: nginx.conf\n          readinessProbe:\n            tcpSocket:\n              port: {gateway_port}\n            periodSeconds: {HEALTH_INTERVAL_S}\n          \
             livenessProbe:\n            tcpSocket:\n              port: {gateway_port}\n            periodSeconds: {HEALTH_INTERVAL_S}\n            \
             failureThreshold: {HEALTH_RETRIES}\n{K8S_CONFIG_VOLUME}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: gateway\nspec:\n  type: NodePort\n  \
             selector:\n    app: gateway\n  ports:\n    - name: http\n      port: {gateway_port}\n      targetPort: {gateway_port}\n      nodePort: {GATEWAY_NODE_PORT}\n",
            res = k8s_resources(GATEWAY_RESOURCES),
        );
    files.push((dir.join("20-gateway.yaml"), gateway));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(replicas: usize, coordinators: usize) -> Topology {
        Topology::local(replicas, coordinators, &mut (9000..))
    }

    fn count(text: &str, needle: &str) -> usize {
        text.matches(needle).count()
    }

    /// The service names of a compose file, in order.
    fn services(compose: &str) -> Vec<&str> {
        let body = compose.split_once("\nservices:\n").unwrap().1.split_once("\nvolumes:\n").unwrap().0;
        body.lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .map(|l| l.trim().trim_end_matches(':'))
            .collect()
    }

    #[test]
    fn compose_has_one_container_per_node_and_mongo_per_replica() {
        for (r, c) in [(1, 1), (3, 2), (5, 3)] {
            let files = compose_files(&topo(r, c), "docker-compose.yml", ".").unwrap();
            let (published, local) = (&files[0].1, &files[1].1);
            assert_eq!(files[1].0, PathBuf::from(LOCAL_COMPOSE));
            for compose in [published, local] {
                assert_eq!(count(compose, "command: [\"replica\"]"), 3 * r);
                assert_eq!(count(compose, "command: [\"coordinator\"]"), 3 * c);
                assert_eq!(count(compose, "restart: unless-stopped"), 3 * (2 * r + c) + 1);
                assert_eq!(
                    count(compose, "mem_limit:"),
                    3 * (2 * r + c) + 1,
                    "every long-running container is limited"
                );
                assert!(compose.contains(&format!("\n  {}: {{}}\n", mongo_name(Service::Stock, r - 1))));
            }
            assert_eq!(count(published, &format!("image: {MONGO_IMAGE}")), 2 * 3 * r, "a store and its init job");
            assert_eq!(count(published, "condition: service_completed_successfully"), 3 * r);
            assert_eq!(count(published, "mongosh"), 3 * r, "only the one-shot init jobs run mongosh");
            assert_eq!(count(published, "healthcheck:"), 3 * (r + c) + 1);
            assert_eq!(count(local, &format!("image: {LOCAL_STORE_IMAGE}")), 3 * r);
            assert_eq!(count(local, "healthcheck:"), 3 * (2 * r + c) + 1);
            assert!(!local.contains("build:") && !local.contains("mongo:") && !local.contains("nginx:"));
            let t = Topology::parse(
                files[2].1.split_once("\ngateway").map(|(_, b)| format!("gateway{b}")).unwrap().as_str(),
            )
            .unwrap();
            assert_eq!(t.stock.replicas.len(), r);
            assert_eq!(t.order.coordinators[c - 1], format!("order-coordinator-{}:{}", c - 1, 9000 + r + c));
        }
    }

    #[test]
    fn the_published_and_local_compose_files_run_the_same_services() {
        let files = compose_files(&topo(3, 2), "docker-compose.yml", ".").unwrap();
        let published: Vec<&str> = services(&files[0].1).into_iter().filter(|n| !n.ends_with("-init")).collect();
        assert_eq!(published, services(&files[1].1));
        assert_eq!(published.len(), 3 * (3 + 3 + 2) + 1);
        // The same environment, word for word, for every node.
        let env =
            |c: &str| c.lines().filter(|l| l.trim_start().starts_with("APP__")).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(env(&files[0].1), env(&files[1].1));
        // The local gateway is on loopback only.
        assert!(files[1].1.contains(&format!("- \"127.0.0.1:${{{GATEWAY_PORT_ENV}:-9000}}:9000\"")), "{}", files[1].1);
    }

    #[test]
    fn a_shell_word_keeps_single_quotes() {
        assert_eq!(shell_quote("a 'b' c"), r"'a '\''b'\'' c'");
    }

    #[test]
    fn k8s_names_replicas_by_stable_pod_names() {
        let t = k8s_topology(&topo(3, 2)).unwrap();
        assert_eq!(t.payment.replicas[2], format!("payment-replica-2.payment-replica:{}", 9000 + 5 + 1));
        assert_eq!(t.payment.coordinators[1], format!("payment-coordinator-1:{}", 9000 + 5 + 5));
        let files = k8s_files(&topo(3, 2)).unwrap();
        let order = &files.iter().find(|(p, _)| p.ends_with("10-order.yaml")).unwrap().1;
        assert!(order.contains("kind: StatefulSet") && order.contains("replicas: 3"));
        assert_eq!(count(order, "kind: Deployment"), 2);
        assert_eq!(count(order, "volumeClaimTemplates"), 1);
    }

    #[test]
    fn k8s_holds_no_secret_and_limits_every_container() {
        let files = k8s_files(&topo(3, 2)).unwrap();
        let all: String = files.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(count(&all, "kind: Secret"), 0, "applying k8s/ must never replace the secret");
        assert_eq!(count(&all, "secretKeyRef:"), 3 + 3 * 2, "a replica template and two coordinators per service");
        // A store and a replica per StatefulSet, each coordinator, the gateway.
        assert_eq!(count(&all, "resources:\n            requests:"), 3 * 2 + 3 * 2 + 1);
        assert_eq!(count(&all, "limits:\n              memory: 1024Mi"), 3 * 2 + 3 * 2);
        assert_eq!(count(&all, &format!("\"--wiredTigerCacheSizeGB\", \"{MONGO_CACHE_GB}\"")), 3);
        assert!(all.contains("kubectl create secret generic webshop-secret"));
    }

    #[test]
    fn minikube_gets_the_memory_the_pods_request() {
        // 9 replicas (128 MiB) with their stores (256 MiB), 6 coordinators (128 MiB), nginx (32 MiB).
        assert_eq!(k8s_memory_requested(&topo(3, 2)), 9 * 384 + 6 * 128 + 32);
        assert!(k8s_start_comment(&topo(3, 2)).contains("minikube start --cpus 2 --memory 7g"));
        assert_eq!(mebibytes("1g"), 1024);
        assert_eq!(mebibytes("32m"), 32);
    }

    #[test]
    fn prometheus_scrapes_every_node_with_its_labels() {
        let t = topo(3, 2);
        let config = prometheus_config(&t).unwrap();
        assert_eq!(count(&config, "- targets: ["), 3 * (3 + 2));
        assert_eq!(count(&config, "role: replica\n"), 3 * 3);
        assert_eq!(count(&config, "role: coordinator\n"), 3 * 2);
        assert_eq!(count(&config, "job_name: "), 1);
        assert!(config.contains(&format!("job_name: {PROMETHEUS_JOB}\n")));
        assert!(config.contains(&format!("scrape_interval: {SCRAPE_INTERVAL_S}s\n")));
        for s in Service::ALL {
            for (role, addrs) in [("replica", &t.nodes(s).replicas), ("coordinator", &t.nodes(s).coordinators)] {
                for (id, addr) in addrs.iter().enumerate() {
                    let target = format!(
                        "- targets: [\"{addr}\"]\n        labels:\n          service: {s}\n          role: {role}\n          id: \"{id}\"\n"
                    );
                    assert!(config.contains(&target), "{target} in {config}");
                }
            }
        }
        assert!(!config.contains(&t.gateway), "nginx has no metrics");
        // The compose deployment's: container names as hosts, the ports of the topology.
        let files = compose_files(&t, "docker-compose.yml", ".").unwrap();
        let compose = &files.iter().find(|(p, _)| p.ends_with("prometheus.yml")).unwrap().1;
        let body = prometheus_config(&compose_topology(&t).unwrap()).unwrap();
        assert!(compose.ends_with(&body) && !body.contains("127.0.0.1"));
        assert!(body.contains(&format!("\"stock-coordinator-1:{}\"", port_of(&t.stock.coordinators[1]).unwrap())));
        let (path, local) = local_prometheus_file(&t).unwrap();
        assert_eq!(path, PathBuf::from(LOCAL_PROMETHEUS));
        assert!(local.ends_with(&config) && local.starts_with("# "));
    }

    #[test]
    fn bad_addresses_are_clear_errors() {
        let mut t = topo(1, 1);
        t.order.replicas[0] = "no-port".into();
        assert!(compose_files(&t, "x.yml", ".").unwrap_err().0.contains("no-port"));
        t.order.replicas[0] = "h:99999".into();
        assert!(k8s_files(&t).unwrap_err().0.contains("not a port"));
        assert!(prometheus_config(&t).unwrap_err().0.contains("not a port"));
    }
}
