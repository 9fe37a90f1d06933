//! Starts a whole cluster as child processes of this one and keeps it running: every replica
//! and coordinator of every service (the node binary re-executed with its role) and nginx;
//! with the `mongo` engine also one MongoDB-compatible server (SecantusDB) per replica, role
//! `store`, started and ready before the replicas that use it.
//!
//! [`Cluster::start`] starts everything, waits until every process answers, writes the
//! manifest and hands back a handle that restarts a process that dies (like a compose
//! restart policy), lets tests kill, pause and resume processes, and stops everything when
//! it is dropped. `cluster up` and the whole-cluster tests both go through here.
//!
//! No orphans: every child runs in its own process group (a kill reaches everything it
//! started) and gets SIGKILL from the kernel when the launcher dies (`PR_SET_PDEATHSIG`).
//! That signal follows the *thread* that forked the child, so all children are forked by one
//! spawner thread that lives exactly as long as the [`Cluster`].

use crate::http;
use crate::manifest::{Entry, Manifest, ProcId, Role};
use crate::nginx::Prefix;
use crate::ports;
use crate::roles::NodeRole;
use anyhow::{anyhow, bail, Context};
use model::topology::{Service, Topology};
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest wait for every process to answer after a start: a replica opening a large store
/// on a busy 2-core machine takes seconds; a process that never answers is a failed start.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two rounds of readiness checks: short against the startup time of a process
/// (about 100 ms), long enough not to compete with the processes for the CPU.
pub const READY_POLL: Duration = Duration::from_millis(100);

/// Longest wait for one `/health` answer: a healthy process answers in a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the supervisor looks for children that exited.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_millis(100);

/// Delay before the first restart of a process that died: about what compose takes.
pub const RESTART_DELAY_MIN: Duration = Duration::from_millis(200);

/// Upper bound of the doubling restart delay of a process that keeps dying at once: it stays
/// restarted soon after a fix, without a crash loop eating the CPU.
pub const RESTART_DELAY_MAX: Duration = Duration::from_secs(5);

/// A process that ran this long before it died is restarted after [`RESTART_DELAY_MIN`]
/// again: its death was not a crash loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How long [`Cluster::shutdown`] lets processes stop on SIGTERM before it kills them: a
/// replica finishes its in-flight writes in well under a second.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The setting that marks a replica's first start in a new cluster (`ReplicaSettings::bootstrap`).
const BOOTSTRAP: &str = "APP__BOOTSTRAP";

/// The file in the cluster's folder that holds the cluster secret while it runs (mode 0600):
/// `cluster admin` reads it.
pub const SECRET_FILE: &str = "secret";

/// The storage engines a replica can run (`APP__ENGINE`).
pub const ENGINES: [&str; 3] = ["log", "memory", "mongo"];

/// Engines the replicas ran before and no longer do, with the file their data is in: a data
/// folder that holds one is refused rather than taken for an empty one (its replicas would
/// start a new, empty cluster beside the old data). `redb` left the product on 2026-12-07
/// (docs/storage-engines.md); it stays a candidate of the engines benchmark.
const RETIRED_ENGINES: [(&str, &str); 1] = [("redb", "store.redb")];

/// The engine whose replicas each get their own MongoDB-compatible server process.
pub const MONGO: &str = "mongo";

/// The folder of a replica's MongoDB server's data, inside the replica's data folder: the
/// server's files then count as the replica's data ([`engine_data`]).
pub const MONGO_DATA: &str = "mongo";

/// Where the data a replica keeps with `engine` lies in its folder `dir`: the embedded
/// engines' own file or folder, the MongoDB server's folder, nothing for `memory`.
fn engine_data(engine: &str, dir: &Path) -> Option<PathBuf> {
    if engine == MONGO {
        return Some(dir.join(MONGO_DATA));
    }
    store::data_path(engine, dir)
}

/// Whether the replica folders `dirs` of one service start a new cluster with `engine`: none
/// holds data of it. Only then do its replicas start from the initial view ([`BOOTSTRAP`]); a
/// replica without data among replicas with data has lost its state and must learn the view
/// from them. A folder that holds another engine's data and none of `engine`'s is refused:
/// started on it, every replica would wait, without state, for a view none can give (the
/// cluster would answer 503 for ever).
fn new_cluster(engine: &str, dirs: &[PathBuf]) -> anyhow::Result<bool> {
    if engine_data(engine, Path::new("")).is_none() {
        // The memory engine keeps nothing: every start is a new cluster.
        return Ok(true);
    }
    let mut any = false;
    for dir in dirs {
        if engine_data(engine, dir).is_some_and(|p| p.exists()) {
            any = true;
            continue;
        }
        for (retired, file) in RETIRED_ENGINES {
            let found = dir.join(file);
            if found.exists() {
                bail!(
                    "{} holds data of the '{retired}' engine ({}), which this version no longer \
                     runs: choose another --data-dir (or remove this one) for a new cluster, or run \
                     a version from before 2026-12-07 to use it",
                    dir.display(),
                    found.display()
                );
            }
        }
        for other in ENGINES.iter().filter(|&&e| e != engine) {
            if let Some(found) = engine_data(other, dir).filter(|p| p.exists()) {
                bail!(
                    "{} holds data of the '{other}' engine ({}), not of '{engine}': start with \
                     --engine {other} to use it, or choose another --data-dir (or remove this one) \
                     for a new cluster",
                    dir.display(),
                    found.display()
                );
            }
        }
    }
    Ok(!any)
}

/// Where the children's stdout and stderr go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The launcher's own stdout and stderr (`cluster up`: one merged log, every line tagged
    /// with its process by `net::logging`).
    Inherit,
    /// One file per process, `<work_dir>/logs/<service>-<role>-<id>.log`, appended to across
    /// restarts (tests: the test's output stays readable, and a failed start quotes the log).
    Files,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Node counts and addresses; every address must be free on this machine.
    pub topology: Topology,
    /// Folder of the cluster's files: `topology.toml` (what the nodes read), `nginx/`
    /// (prefix), `logs/` and `manifest.json`.
    pub work_dir: PathBuf,
    /// Parent folder of the replicas' data: `<data_dir>/<service>-<id>`.
    pub data_dir: PathBuf,
    /// Storage engine of the replicas: `log`, `memory` or `mongo` (one SecantusDB server per
    /// replica, on a free loopback port, data in `<data_dir>/<service>-<id>/mongo`).
    pub engine: String,
    /// The binary that runs a node role (`<exe> replica|coordinator`, configured by `APP__*`).
    pub node_exe: PathBuf,
    /// Leave a process that died down instead of restarting it.
    pub keep_dead: bool,
    /// Where the children's output goes.
    pub output: Output,
    /// More environment for every node (e.g. `APP__REQUEST_TIMEOUT_MS`, `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// A cluster of `replicas` replicas and `coordinators` coordinators per service on free
    /// loopback ports, with its files and data under `work_dir`: durable store, restarts on,
    /// logs to files.
    pub fn local(
        replicas: usize,
        coordinators: usize,
        node_exe: impl Into<PathBuf>,
        work_dir: impl Into<PathBuf>,
    ) -> io::Result<ClusterSpec> {
        let ports = ports::free_ports(1 + Service::ALL.len() * (replicas + coordinators))?;
        let work_dir = work_dir.into();
        Ok(ClusterSpec {
            topology: Topology::local(replicas, coordinators, &mut ports.into_iter()),
            data_dir: work_dir.join("data"),
            work_dir,
            engine: "log".into(),
            node_exe: node_exe.into(),
            keep_dead: false,
            output: Output::Files,
            env: vec![],
        })
    }
}

/// How to start one process.
#[derive(Clone, Debug)]
struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    /// Its output file, if output goes to files.
    log: Option<PathBuf>,
}

impl Launch {
    fn command(&self) -> io::Result<Command> {
        let mut c = Command::new(&self.program);
        c.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null());
        if let Some(path) = &self.log {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            c.stdout(f.try_clone()?).stderr(f);
        }
        let launcher = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls; it allocates nothing.
        unsafe {
            c.pre_exec(move || child_setup(launcher));
        }
        Ok(c)
    }
}

/// In the child before exec: its own process group, and SIGKILL when the launcher dies.
fn child_setup(launcher: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls without pointers.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The launcher may have died before the line above; then nobody would signal us.
        if libc::getppid() != launcher {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Sends `sig` to the process group of `pid` (each child leads its own group).
fn signal_group(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory effects.
    if unsafe { libc::kill(-(pid as libc::pid_t), sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// The one thread that forks children (see the module doc for why one thread).
struct Spawner {
    tx: Option<mpsc::Sender<SpawnJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    fn new() -> io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let thread = std::thread::Builder::new().name("cluster-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        })?;
        Ok(Spawner { tx: Some(tx), thread: Some(thread) })
    }

    fn spawn(&self, cmd: Command) -> io::Result<Child> {
        let gone = || io::Error::other("the spawner thread is gone");
        let (reply, answer) = mpsc::channel();
        self.tx.as_ref().ok_or_else(gone)?.send((cmd, reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One supervised process.
struct Proc {
    id: ProcId,
    addr: String,
    launch: Launch,
    /// The running child; `None` while it is down.
    child: Option<Child>,
    /// Current or last pid.
    pid: u32,
    started: Instant,
    /// Delay before the next restart.
    delay: Duration,
    /// When to restart it, if it is down and will be restarted.
    restart_at: Option<Instant>,
}

impl Proc {
    fn start(&mut self, spawner: &Spawner) -> io::Result<()> {
        let child = spawner.spawn(self.launch.command()?)?;
        // Bootstrapping is for the very first start only.
        self.launch.env.retain(|(k, _)| k != BOOTSTRAP);
        self.pid = child.id();
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// If the child exited, reaps it and plans its restart unless `keep_dead`.
    fn reap(&mut self, keep_dead: bool) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.mark_exited(status, keep_dead);
        Some(status)
    }

    fn mark_exited(&mut self, status: ExitStatus, keep_dead: bool) {
        self.child = None;
        let now = Instant::now();
        if now.duration_since(self.started) >= STABLE_AFTER {
            self.delay = RESTART_DELAY_MIN;
        }
        if keep_dead {
            log::info!("{} (pid {}) exited: {status}; left down", self.id, self.pid);
        } else {
            log::info!("{} (pid {}) exited: {status}; restarting in {:?}", self.id, self.pid, self.delay);
            self.restart_at = Some(now + self.delay);
            self.delay = (self.delay * 2).min(RESTART_DELAY_MAX);
        }
    }
}

/// What the supervisor thread and the handle share.
struct Shared {
    procs: Mutex<Vec<Proc>>,
    stopping: AtomicBool,
    spawner: Spawner,
    manifest_path: PathBuf,
    keep_dead: bool,
}

impl Shared {
    fn procs(&self) -> MutexGuard<'_, Vec<Proc>> {
        // A panic while holding the lock leaves the list itself consistent.
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_manifest(&self, procs: &[Proc]) {
        let m = manifest_of(procs);
        if let Err(e) = m.write(&self.manifest_path) {
            log::warn!("writing {}: {e}", self.manifest_path.display());
        }
    }
}

fn manifest_of(procs: &[Proc]) -> Manifest {
    Manifest { processes: procs.iter().map(|p| Entry::new(p.id, &p.addr, p.pid)).collect() }
}

/// Restarts children that died, until the cluster stops.
fn supervise(shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(SUPERVISE_INTERVAL);
        let mut procs = shared.procs();
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut changed = false;
        for p in procs.iter_mut() {
            p.reap(shared.keep_dead);
            if p.child.is_none() && p.restart_at.is_some_and(|t| t <= Instant::now()) {
                match p.start(&shared.spawner) {
                    Ok(()) => {
                        log::info!("restarted {} (pid {})", p.id, p.pid);
                        changed = true;
                    }
                    Err(e) => {
                        log::warn!("restarting {} failed: {e}; trying again in {:?}", p.id, p.delay);
                        p.restart_at = Some(Instant::now() + p.delay);
                    }
                }
            }
        }
        if changed {
            shared.write_manifest(&procs);
        }
    }
}

/// Whether `addr` answers as `role` should when it is ready: nodes with 200 on `/health`,
/// or a replica that restarted without its data with its 503 `recovering` (it is up, and
/// waits to be evicted and re-joined); nginx with any HTTP answer (it routes nothing of its
/// own, so `/` is its 404).
fn probe(role: Role, addr: &str) -> Result<(), String> {
    if role == Role::Store {
        // A MongoDB server speaks no HTTP: ready once it accepts connections.
        let a: std::net::SocketAddr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
        return std::net::TcpStream::connect_timeout(&a, PROBE_TIMEOUT).map(drop).map_err(|e| format!("connect: {e}"));
    }
    let path = if role == Role::Balancer { "/" } else { "/health" };
    match http::get(addr, path, PROBE_TIMEOUT) {
        Ok(r) if role == Role::Balancer || r.status == 200 => Ok(()),
        Ok(r)
            if role == Role::Replica
                && r.status == 503
                && r.header(model::wire::UNAVAILABLE_CAUSE) == Some(model::wire::RECOVERING) =>
        {
            Ok(())
        }
        Ok(r) => Err(format!("GET {path} answered {}", r.status)),
        Err(e) => Err(format!("GET {path}: {e}")),
    }
}

/// The last `n` lines of a log file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lines of a child's log quoted when it fails to start.
const LOG_LINES_QUOTED: usize = 20;

/// How to start every process of `spec`: the stores (engine `mongo`), then replicas, then
/// coordinators, then nginx.
fn plan(
    spec: &ClusterSpec,
    topology_path: &Path,
    data_dir: &Path,
    logs: Option<&Path>,
    secret: &str,
    (nginx_exe, nginx): (PathBuf, &Prefix),
) -> anyhow::Result<Vec<(ProcId, String, Launch)>> {
    let t = &spec.topology;
    let log_of = |p: ProcId| logs.map(|dir| dir.join(format!("{}.log", p.file_stem())));
    let replica_dir = |s: Service, id: usize| data_dir.join(format!("{s}-{id}"));
    let mut launches = Vec::new();
    // Engine mongo: each replica's server, on a free loopback port.
    let mut mongo_uris = std::collections::HashMap::new();
    if spec.engine == MONGO {
        let program = store::mongo::find_server()?;
        let n: usize = Service::ALL.iter().map(|&s| t.nodes(s).replicas.len()).sum();
        let mut ports = ports::free_ports(n)?.into_iter();
        for s in Service::ALL {
            for id in 0..t.nodes(s).replicas.len() as u32 {
                let p = ProcId::store(s, id);
                let port = ports.next().expect("one port per replica");
                let data = replica_dir(s, id as usize).join(MONGO_DATA);
                let args = store::mongo::server_args("127.0.0.1", port, &data);
                let launch = Launch { program: program.clone(), args, env: vec![], log: log_of(p) };
                mongo_uris.insert((s, id), format!("mongodb://127.0.0.1:{port}/"));
                launches.push((p, format!("127.0.0.1:{port}"), launch));
            }
        }
    }
    let mut new_clusters = std::collections::HashMap::new();
    for s in Service::ALL {
        let dirs: Vec<PathBuf> = (0..t.nodes(s).replicas.len()).map(|id| replica_dir(s, id)).collect();
        new_clusters.insert(s, new_cluster(&spec.engine, &dirs)?);
    }
    for role in [NodeRole::Replica, NodeRole::Coordinator] {
        for s in Service::ALL {
            let n = t.nodes(s);
            let addrs = if role == NodeRole::Replica { &n.replicas } else { &n.coordinators };
            for (id, addr) in addrs.iter().enumerate() {
                let id = id as u32;
                let p = match role {
                    NodeRole::Replica => ProcId::replica(s, id),
                    NodeRole::Coordinator => ProcId::coordinator(s, id),
                };
                // What net::settings reads.
                let mut env = vec![
                    ("APP__SERVICE".to_string(), s.name().to_string()),
                    ("APP__ID".into(), id.to_string()),
                    ("APP__TOPOLOGY".into(), topology_path.display().to_string()),
                    ("APP__SECRET".into(), secret.to_string()),
                ];
                if role == NodeRole::Replica {
                    let dir = replica_dir(s, id as usize);
                    // The replicas of a new cluster may start from the initial view. Only their
                    // first start says so (see `Proc::start`): restarted empty later, a replica
                    // must learn the view first.
                    if new_clusters[&s] {
                        env.push((BOOTSTRAP.into(), "true".into()));
                    }
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                    env.push(("APP__DATA_DIR".into(), dir.display().to_string()));
                    env.push(("APP__ENGINE".into(), spec.engine.clone()));
                    if let Some(uri) = mongo_uris.get(&(s, id)) {
                        env.push(("APP__MONGO_URI".into(), uri.clone()));
                    }
                }
                env.extend(spec.env.iter().cloned());
                let launch =
                    Launch { program: spec.node_exe.clone(), args: vec![role.arg().into()], env, log: log_of(p) };
                launches.push((p, addr.clone(), launch));
            }
        }
    }
    let balancer = ProcId::balancer();
    let launch = Launch { program: nginx_exe, args: nginx.args(), env: vec![], log: log_of(balancer) };
    launches.push((balancer, t.gateway.clone(), launch));
    Ok(launches)
}

/// A running cluster. Dropping it kills every process.
pub struct Cluster {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    topology: Topology,
    secret: String,
    work_dir: PathBuf,
    nginx: Prefix,
    stopped: bool,
}

impl Cluster {
    /// Starts nginx and every node of `spec`, waits until all answer (at most
    /// [`STARTUP_DEADLINE`]), writes the manifest and starts the supervisor. On failure
    /// everything started so far is stopped and the error names the process that failed.
    pub fn start(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        let nginx_exe = crate::nginx::find()?;
        spec.topology.validate()?;
        if !ENGINES.contains(&spec.engine.as_str()) {
            bail!("unknown engine '{}' ({})", spec.engine, ENGINES.join(", "));
        }
        let t = &spec.topology;
        ports::ensure_free(std::iter::once(&t.gateway).chain(Service::ALL.iter().flat_map(|&s| {
            let n = t.nodes(s);
            n.replicas.iter().chain(n.coordinators.iter())
        })))?;

        let work_dir = std::path::absolute(&spec.work_dir)?;
        let data_dir = std::path::absolute(&spec.data_dir)?;
        let logs = (spec.output == Output::Files).then(|| work_dir.join("logs"));
        for dir in std::iter::once(&work_dir).chain(&logs) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let manifest_path = work_dir.join("manifest.json");
        // A manifest left by an earlier run names processes that are gone.
        let _ = std::fs::remove_file(&manifest_path);
        let topology_path = work_dir.join("topology.toml");
        std::fs::write(&topology_path, spec.topology.to_toml())
            .with_context(|| format!("writing {}", topology_path.display()))?;
        let nginx = Prefix::write(&work_dir.join("nginx"), &spec.topology)?;
        let secret = uuid::Uuid::new_v4().simple().to_string();

        let launches = plan(&spec, &topology_path, &data_dir, logs.as_deref(), &secret, (nginx_exe, &nginx))?;

        let shared = Arc::new(Shared {
            procs: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            spawner: Spawner::new()?,
            manifest_path,
            keep_dead: spec.keep_dead,
        });
        // From here on, dropping `cluster` (an early return) stops what was started.
        let mut cluster = Cluster {
            shared,
            supervisor: None,
            topology: spec.topology.clone(),
            secret,
            work_dir,
            nginx,
            stopped: false,
        };
        // A new secret each start, kept where `cluster admin` finds it, readable by this user
        // only; written once `cluster` exists, so that a failed start removes it too.
        let secret_path = cluster.work_dir.join(SECRET_FILE);
        write_private(&secret_path, &cluster.secret).with_context(|| format!("writing {}", secret_path.display()))?;
        let ids: Vec<ProcId> = launches.iter().map(|(p, ..)| *p).collect();
        let stores: Vec<ProcId> = ids.iter().copied().filter(|p| p.role == Role::Store).collect();
        for (id, addr, launch) in launches {
            // A replica opening its store fails if the server does not answer yet.
            if id.role != Role::Store && !stores.is_empty() && cluster.shared.procs().len() == stores.len() {
                cluster.wait_ready_all(&stores, STARTUP_DEADLINE)?;
            }
            let mut p = Proc {
                id,
                addr,
                launch,
                child: None,
                pid: 0,
                started: Instant::now(),
                delay: RESTART_DELAY_MIN,
                restart_at: None,
            };
            p.start(&cluster.shared.spawner).with_context(|| format!("starting {id}"))?;
            log::debug!("started {id} (pid {})", p.pid);
            cluster.shared.procs().push(p);
        }
        cluster.wait_ready_all(&ids, STARTUP_DEADLINE)?;
        cluster.shared.write_manifest(&cluster.shared.procs());
        let shared = cluster.shared.clone();
        cluster.supervisor =
            Some(std::thread::Builder::new().name("cluster-supervisor".into()).spawn(move || supervise(shared))?);
        Ok(cluster)
    }

    /// The gateway's base URL, `http://host:port`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.topology.gateway)
    }

    /// The topology the cluster runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The cluster secret every internal request carries.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The cluster's folder (topology, nginx prefix, logs, manifest).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Path of `manifest.json`.
    pub fn manifest_path(&self) -> &Path {
        &self.shared.manifest_path
    }

    /// nginx's own error log.
    pub fn nginx_error_log(&self) -> PathBuf {
        self.nginx.error_log()
    }

    /// The address a process listens on.
    pub fn addr(&self, p: ProcId) -> Option<String> {
        self.shared.procs().iter().find(|x| x.id == p).map(|x| x.addr.clone())
    }

    /// The output file of a process, if output goes to files.
    pub fn log_path(&self, p: ProcId) -> Option<PathBuf> {
        self.shared.procs().iter().find(|x| x.id == p).and_then(|x| x.launch.log.clone())
    }

    /// The pid of a process, if it is running.
    pub fn pid(&self, p: ProcId) -> Option<u32> {
        self.shared.procs().iter().find(|x| x.id == p && x.child.is_some()).map(|x| x.pid)
    }

    /// Every process with its current (or last) pid, as in `manifest.json`.
    pub fn manifest(&self) -> Manifest {
        manifest_of(&self.shared.procs())
    }

    fn with_proc<T>(&self, p: ProcId, f: impl FnOnce(&mut Proc) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut procs = self.shared.procs();
        let proc = procs.iter_mut().find(|x| x.id == p).ok_or_else(|| anyhow!("the cluster has no {p}"))?;
        f(proc)
    }

    fn signal(&self, p: ProcId, sig: libc::c_int, what: &str) -> anyhow::Result<()> {
        self.with_proc(p, |x| {
            if x.child.is_none() {
                bail!("cannot {what} {p}: it is not running");
            }
            signal_group(x.pid, sig).with_context(|| format!("{what} {p} (pid {})", x.pid))?;
            log::info!("{what}: {p} (pid {})", x.pid);
            Ok(())
        })
    }

    /// Kills a process with SIGKILL and returns once it is gone. Unless the cluster keeps
    /// dead processes down, the supervisor restarts it like any process that died.
    pub fn kill(&self, p: ProcId) -> anyhow::Result<()> {
        self.with_proc(p, |x| {
            let Some(child) = x.child.as_mut() else { bail!("cannot kill {p}: it is not running") };
            signal_group(x.pid, libc::SIGKILL).with_context(|| format!("killing {p} (pid {})", x.pid))?;
            let status = child.wait()?;
            log::info!("killed {p} (pid {})", x.pid);
            x.mark_exited(status, self.shared.keep_dead);
            Ok(())
        })
    }

    /// Stops a process with SIGSTOP: it holds its connections and answers nothing.
    pub fn pause(&self, p: ProcId) -> anyhow::Result<()> {
        self.signal(p, libc::SIGSTOP, "pause")
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&self, p: ProcId) -> anyhow::Result<()> {
        self.signal(p, libc::SIGCONT, "resume")
    }

    /// Starts a process that is down (killed, or died with `keep_dead`) again, now, and
    /// waits until it answers.
    pub fn start_again(&self, p: ProcId) -> anyhow::Result<()> {
        {
            let mut procs = self.shared.procs();
            let x = procs.iter_mut().find(|x| x.id == p).ok_or_else(|| anyhow!("the cluster has no {p}"))?;
            x.reap(self.shared.keep_dead);
            if x.child.is_some() {
                bail!("{p} is already running (pid {})", x.pid);
            }
            x.start(&self.shared.spawner).with_context(|| format!("starting {p}"))?;
            log::info!("started {p} again (pid {})", x.pid);
            self.shared.write_manifest(&procs);
        }
        self.wait_ready(p, STARTUP_DEADLINE)
    }

    /// Waits until a process answers, at most `timeout`.
    pub fn wait_ready(&self, p: ProcId, timeout: Duration) -> anyhow::Result<()> {
        self.wait_ready_all(&[p], timeout)
    }

    fn wait_ready_all(&self, ids: &[ProcId], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<(ProcId, String, String)> = Vec::new();
        for &p in ids {
            let addr = self.addr(p).ok_or_else(|| anyhow!("the cluster has no {p}"))?;
            pending.push((p, addr, "no answer yet".into()));
        }
        loop {
            {
                let mut procs = self.shared.procs();
                for (p, ..) in &pending {
                    let x = procs.iter_mut().find(|x| x.id == *p).expect("pending processes exist");
                    let status = x.reap(self.shared.keep_dead);
                    if x.child.is_none() {
                        let how = status.map_or("is down".to_string(), |s| format!("exited ({s})"));
                        bail!("{p} {how} before it answered{}", self.log_hint(x));
                    }
                }
            }
            pending.retain_mut(|(p, addr, err)| match probe(p.role, addr) {
                Ok(()) => false,
                Err(e) => {
                    *err = e;
                    true
                }
            });
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let which: Vec<String> = pending.iter().map(|(p, addr, err)| format!("{p} at {addr}: {err}")).collect();
                bail!("not ready after {timeout:?}: {}", which.join("; "));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// Where to look when a process failed: its output, and nginx's error log.
    fn log_hint(&self, x: &Proc) -> String {
        let mut hint = String::new();
        let mut quote = |path: &Path| {
            let lines = tail(path, LOG_LINES_QUOTED);
            hint.push_str(&format!("; see {}", path.display()));
            if !lines.is_empty() {
                hint.push_str(&format!(":\n{lines}"));
            }
        };
        if let Some(log) = &x.launch.log {
            quote(log);
        }
        if x.id.role == Role::Balancer {
            quote(&self.nginx.error_log());
        }
        hint
    }

    /// Stops every process: SIGTERM, then SIGKILL for whatever still runs after `grace`;
    /// waits for all of them and removes the manifest.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
        let mut procs = self.shared.procs();
        if !grace.is_zero() {
            for p in procs.iter().filter(|p| p.child.is_some()) {
                let _ = signal_group(p.pid, libc::SIGTERM);
                // A paused process acts on SIGTERM only once it runs again.
                let _ = signal_group(p.pid, libc::SIGCONT);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                for p in procs.iter_mut() {
                    if p.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                        p.child = None;
                    }
                }
                if procs.iter().all(|p| p.child.is_none()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for p in procs.iter_mut() {
            if let Some(mut child) = p.child.take() {
                if !grace.is_zero() {
                    log::warn!("{} (pid {}) did not stop within {grace:?}: killing it", p.id, p.pid);
                }
                let _ = signal_group(p.pid, libc::SIGKILL);
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.shared.manifest_path);
        // Only this run's secret: another launcher started from the same folder since (with
        // another topology) keeps its own.
        let secret_path = self.work_dir.join(SECRET_FILE);
        if std::fs::read_to_string(&secret_path).is_ok_and(|s| s.trim() == self.secret) {
            let _ = std::fs::remove_file(&secret_path);
        }
    }
}

/// Writes `text` to a new file at `path` that only this user may read or write (mode 0600,
/// set when the file is created, so it is never readable by others; an older file is
/// replaced, not rewritten in place, in case it had wider permissions).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn proc() -> Proc {
        Proc {
            id: ProcId::replica(Service::Stock, 0),
            addr: "127.0.0.1:1".into(),
            launch: Launch { program: "/bin/true".into(), args: vec![], env: vec![], log: None },
            child: None,
            pid: 1,
            started: Instant::now(),
            delay: RESTART_DELAY_MIN,
            restart_at: None,
        }
    }

    fn planned_delay(p: &Proc) -> Duration {
        p.restart_at.expect("a restart is planned").duration_since(Instant::now())
    }

    #[test]
    fn a_crash_loop_backs_off_and_a_stable_run_resets_the_delay() {
        let killed = ExitStatus::from_raw(9);
        let mut p = proc();
        let mut seen = vec![];
        for _ in 0..7 {
            p.started = Instant::now();
            p.mark_exited(killed, false);
            seen.push(planned_delay(&p));
        }
        // Each delay is planned from now, so it is at most the nominal one.
        let nominal = [200, 400, 800, 1600, 3200, 5000, 5000].map(Duration::from_millis);
        for (got, want) in seen.iter().zip(nominal) {
            assert!(*got <= want && want - *got < Duration::from_millis(50), "{seen:?}");
        }
        p.started = Instant::now() - STABLE_AFTER;
        p.mark_exited(killed, false);
        assert!(planned_delay(&p) <= RESTART_DELAY_MIN);
    }

    #[test]
    fn keep_dead_plans_no_restart() {
        let mut p = proc();
        p.mark_exited(ExitStatus::from_raw(0), true);
        assert_eq!(p.restart_at, None);
    }

    #[test]
    fn a_new_cluster_is_one_whose_replicas_hold_no_data_of_the_engine() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("order-{i}"))).collect();
        // No folders yet, or folders with nothing of an engine in them.
        assert!(new_cluster("log", &dirs).unwrap());
        std::fs::create_dir_all(&dirs[0]).unwrap();
        std::fs::write(dirs[0].join("notes.txt"), "x").unwrap();
        assert!(new_cluster("log", &dirs).unwrap());
        // One replica with data: none of them bootstraps (the empty ones lost their state).
        std::fs::create_dir_all(dirs[1].join("log")).unwrap();
        assert!(!new_cluster("log", &dirs).unwrap());
        // The memory engine keeps nothing: always new.
        assert!(new_cluster("memory", &dirs).unwrap());
        // A MongoDB server's folder is its replica's data.
        let other = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| other.path().join(format!("order-{i}"))).collect();
        assert!(new_cluster("mongo", &dirs).unwrap());
        std::fs::create_dir_all(dirs[2].join(MONGO_DATA)).unwrap();
        assert!(!new_cluster("mongo", &dirs).unwrap());
    }

    #[test]
    fn another_engines_data_is_refused_with_the_way_out() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("stock-{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d.join(MONGO_DATA)).unwrap();
        }
        let e = new_cluster("log", &dirs).unwrap_err().to_string();
        assert!(e.contains("'mongo' engine") && e.contains("--engine mongo") && e.contains("stock-0"), "{e}");
        // Its own engine uses it; memory ignores it.
        assert!(!new_cluster("mongo", &dirs).unwrap());
        assert!(new_cluster("memory", &dirs).unwrap());
    }

    #[test]
    fn a_retired_engines_data_is_refused_not_taken_for_an_empty_folder() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("stock-{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("store.redb"), "x").unwrap();
        }
        for engine in ["log", "mongo"] {
            let e = new_cluster(engine, &dirs).unwrap_err().to_string();
            assert!(e.contains("'redb' engine") && e.contains("no longer") && e.contains("stock-0"), "{engine}: {e}");
        }
        assert!(new_cluster("memory", &dirs).unwrap());
    }

    #[test]
    fn a_cluster_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Cluster>();
    }
}
