//! The launcher and the gateway config, run for real: nginx from the system, and echo nodes
//! (`cluster-echo-node`, started exactly like real nodes) standing in for the services.

use cluster::http::{self, Response};
use cluster::{Cluster, ClusterSpec, Manifest, ProcId, Role};
use model::topology::{Service, Topology};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ECHO_NODE: &str = env!("CARGO_BIN_EXE_cluster-echo-node");
const CLUSTER: &str = env!("CARGO_BIN_EXE_cluster");
/// Client timeout: every answer here is local and immediate.
const TIMEOUT: Duration = Duration::from_secs(5);

fn spec(dir: &Path, keep_dead: bool) -> ClusterSpec {
    let mut spec = ClusterSpec::local(1, 2, ECHO_NODE, dir).unwrap();
    spec.keep_dead = keep_dead;
    spec.engine = "memory".into();
    spec
}

fn gateway(c: &Cluster, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http::request(method, &c.topology().gateway, path, headers, TIMEOUT).unwrap()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{body}"))
}

#[test]
fn the_gateway_passes_public_prefixes_unchanged_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), false)).unwrap();

    for (method, path, service) in [
        ("GET", "/orders/find/abc", "order"),
        ("POST", "/orders/checkout/o%201", "order"),
        ("POST", "/payment/pay/u1/5", "payment"),
        ("GET", "/stock/find/item-7", "stock"),
    ] {
        let r = gateway(&c, method, path, &[]);
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
        assert_eq!(field(&r.body, "role"), "coordinator");
        assert_eq!(field(&r.body, "service"), service);
        assert_eq!(field(&r.body, "method"), method);
        assert_eq!(field(&r.body, "path"), path);
        let id = field(&r.body, "request_id");
        assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "request id {id}");
    }

    // A client's own request id (its idempotency key) is passed on; a secret a client
    // supplies never is.
    let r = gateway(&c, "POST", "/stock/tx/subtract/i/1/t", &[("X-Request-Id", "mine"), ("X-Webshop-Secret", "guess")]);
    assert_eq!(field(&r.body, "request_id"), "mine");
    assert_eq!(field(&r.body, "secret"), "absent");

    // Both coordinators of a service get requests.
    let ids: std::collections::BTreeSet<String> =
        (0..8).map(|_| field(&gateway(&c, "GET", "/payment/find_user/u", &[]).body, "id").to_string()).collect();
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["0", "1"]);

    for path in [
        "/internal/view",
        "/internal/replicate",
        "/admin/status",
        "/health",
        "/metrics",
        "/",
        "/orders",
        "/ordersx/find/1",
        "/orders/../internal/view",
        "/orders/%2e%2e/internal/view",
        "//internal/view",
        "/stock/../admin/status",
    ] {
        let r = gateway(&c, "GET", path, &[]);
        assert_eq!((r.status, r.body.as_str()), (404, "no such endpoint\n"), "{path} was routed: {r:?}");
    }
}

#[test]
fn the_manifest_lists_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), false)).unwrap();
    let m = Manifest::load(c.manifest_path()).unwrap();
    assert_eq!(m, c.manifest());
    assert_eq!(m.processes.len(), 3 * (1 + 2) + 1);
    let t = c.topology().clone();
    for s in Service::ALL {
        for (i, addr) in t.nodes(s).replicas.iter().enumerate() {
            assert_eq!(&m.get(ProcId::replica(s, i as u32)).unwrap().addr, addr);
        }
        for (i, addr) in t.nodes(s).coordinators.iter().enumerate() {
            assert_eq!(&m.get(ProcId::coordinator(s, i as u32)).unwrap().addr, addr);
        }
    }
    let gw = m.get(ProcId::balancer()).unwrap();
    assert_eq!((gw.role, gw.service.as_str(), gw.id, &gw.addr), (Role::Balancer, "gateway", 0, &t.gateway));
    for e in &m.processes {
        assert!(alive(e.pid), "{e:?} is not running");
        assert_eq!(c.pid(e.proc_id().unwrap()), Some(e.pid));
    }
    // Every node was started with the cluster's settings: its own address, from the
    // generated topology file.
    let r = http::get(&t.stock.replicas[0], "/x", TIMEOUT).unwrap();
    assert_eq!((field(&r.body, "role"), field(&r.body, "service"), field(&r.body, "id")), ("replica", "stock", "0"));
    assert_eq!(Topology::load(&c.work_dir().join("topology.toml")).unwrap(), t);
    assert_eq!(c.secret().len(), 32);
}

#[test]
fn a_killed_coordinator_is_skipped_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), false)).unwrap();
    let victim = ProcId::coordinator(Service::Order, 0);
    let old = c.pid(victim).unwrap();
    c.kill(victim).unwrap();
    assert!(!alive(old));
    // POSTs included: a refused connection is retried on the other coordinator.
    for i in 0..20 {
        let r = gateway(&c, "POST", &format!("/orders/addItem/o/i/{i}"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    wait_until("the coordinator is restarted", Duration::from_secs(10), || c.pid(victim).is_some());
    let new = c.pid(victim).unwrap();
    assert_ne!(new, old);
    c.wait_ready(victim, Duration::from_secs(10)).unwrap();
    let m = Manifest::load(c.manifest_path()).unwrap();
    assert_eq!(m.get(victim).unwrap().pid, new);
}

#[test]
fn keep_dead_leaves_a_killed_process_down_until_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), true)).unwrap();
    let victim = ProcId::replica(Service::Stock, 0);
    let addr = c.addr(victim).unwrap();
    let old = c.pid(victim).unwrap();
    c.kill(victim).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(c.pid(victim), None);
    assert!(http::get(&addr, "/health", TIMEOUT).is_err());
    assert!(c.kill(victim).is_err());
    c.start_again(victim).unwrap();
    let new = c.pid(victim).unwrap();
    assert_ne!(new, old);
    assert_eq!(http::get(&addr, "/health", TIMEOUT).unwrap().body, "ok");
    assert_eq!(Manifest::load(c.manifest_path()).unwrap().get(victim).unwrap().pid, new);
    assert!(c.start_again(victim).is_err(), "started twice");
}

#[test]
fn a_paused_process_answers_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), false)).unwrap();
    let p = ProcId::replica(Service::Payment, 0);
    let addr = c.addr(p).unwrap();
    c.pause(p).unwrap();
    let err = http::get(&addr, "/health", Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
    c.resume(p).unwrap();
    assert_eq!(http::get(&addr, "/health", TIMEOUT).unwrap().status, 200);
}

#[test]
fn dropping_the_cluster_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(spec(dir.path(), false)).unwrap();
    let pids: Vec<u32> = c.manifest().processes.iter().map(|e| e.pid).collect();
    let manifest = c.manifest_path().to_path_buf();
    // A paused process must die too.
    c.pause(ProcId::coordinator(Service::Stock, 1)).unwrap();
    drop(c);
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the cluster");
    }
    assert!(!manifest.exists());
}

#[test]
fn a_failed_start_names_the_process_and_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), false);
    s.node_exe = "/bin/false".into();
    let gateway = s.topology.gateway.clone();
    let err = format!("{:#}", Cluster::start(s).err().expect("a cluster of /bin/false started"));
    assert!(err.contains("exited") && err.contains("before it answered"), "{err}");
    // nginx was stopped: its port is free again.
    cluster::ports::ensure_free([&gateway]).unwrap();
}

#[test]
fn the_rendered_config_passes_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::local(3, 2, &mut cluster::ports::free_ports(16).unwrap().into_iter());
    let prefix = cluster::nginx::Prefix::write(&dir.path().join("nginx"), &t).unwrap();
    let out = Command::new(cluster::nginx::find().unwrap()).args(prefix.test_args()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A running `cluster up`.
struct Up {
    child: std::process::Child,
    manifest: std::path::PathBuf,
    /// The URL it printed.
    url: String,
    /// Holds the topology file's gateway port, which `--gateway-port` overrides.
    _taken: std::net::TcpListener,
}

impl Drop for Up {
    /// A test that fails half-way still ends the launcher (and so, by the parent-death
    /// signal, its children).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cluster up` with echo nodes in a scratch folder until it printed the gateway.
fn cluster_up(dir: &Path) -> Up {
    let ports = cluster::ports::free_ports(1 + 3 * 2).unwrap();
    // The topology's gateway port is taken on purpose: --gateway-port must override it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let t = Topology::local(1, 1, &mut std::iter::once(port).chain(ports[1..].iter().copied()));
    let topo = dir.join("topology.toml");
    std::fs::write(&topo, t.to_toml()).unwrap();
    let child = Command::new(CLUSTER)
        .args(["up", "--engine", "memory", "--gateway-port", &ports[0].to_string(), "--node-exe", ECHO_NODE])
        .arg("--topology")
        .arg(&topo)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = Up { child, manifest: dir.join("target/cluster/manifest.json"), url: String::new(), _taken: taken };
    let (tx, rx) = mpsc::channel();
    let stdout = up.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("cluster up printed no gateway");
        if let Some(url) = line.strip_prefix("gateway: ") {
            assert_eq!(url, format!("http://127.0.0.1:{}", ports[0]));
            up.url = url.to_string();
            return up;
        }
    }
}

#[test]
fn cluster_up_runs_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = cluster_up(dir.path());
    let m = Manifest::load(&up.manifest).unwrap();
    assert_eq!(m.processes.len(), 3 * 2 + 1);
    assert!(m.processes.iter().all(|e| alive(e.pid)));
    let gw = up.url.strip_prefix("http://").unwrap();
    assert_eq!(http::get(gw, "/stock/find/1", TIMEOUT).unwrap().status, 200);
    assert!(dir.path().join("target/cluster/nginx/nginx.conf").exists());

    unsafe { libc::kill(up.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "cluster up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for e in &m.processes {
        assert!(!alive(e.pid), "{e:?} outlived cluster up");
    }
    assert!(!up.manifest.exists());
}

#[test]
fn children_die_with_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = cluster_up(dir.path());
    let m = Manifest::load(&up.manifest).unwrap();
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    wait_until("every child died with the launcher", Duration::from_secs(5), || {
        m.processes.iter().all(|e| !alive(e.pid))
    });
}
