//! Starting a cluster for a test: real processes on free loopback ports, files and data in a
//! temporary folder that is removed with the cluster, logs quoted when a start fails.

pub mod adds;
pub mod compose;

use cluster::launcher::{Cluster, ClusterSpec};
use cluster::manifest::ProcId;
use model::topology::{Service, Topology};
use std::sync::Arc;

/// A process of the cluster, as the scenarios name it.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Node {
    /// A service's replica.
    Replica(Service, u32),
    /// A service's coordinator.
    Coordinator(Service, u32),
}

impl Node {
    fn proc_id(self) -> ProcId {
        match self {
            Node::Replica(s, i) => ProcId::replica(s, i),
            Node::Coordinator(s, i) => ProcId::coordinator(s, i),
        }
    }
}

/// A running cluster and its temporary folder; dropping it stops every process.
pub struct TestCluster {
    cluster: Arc<Cluster>,
    /// The cluster's folder.
    path: std::path::PathBuf,
    /// Removes the folder when the cluster is dropped (`None` when it is kept).
    _dir: Option<tempfile::TempDir>,
}

/// Starts a cluster with `replicas` replicas and 2 coordinators per service, on the durable
/// engine, with dead processes kept down (the scenarios restart them themselves).
#[allow(dead_code)]
pub async fn start(replicas: usize) -> TestCluster {
    start_on(replicas, "log").await
}

/// [`start`] on the storage engine `engine` (`log`, `memory`, or `mongo`: one SecantusDB
/// server per replica, which must be installed: scripts/install-deps.sh).
#[allow(dead_code)]
pub async fn start_on(replicas: usize, engine: &str) -> TestCluster {
    start_with(replicas, engine, true).await
}

/// [`start_on`], with processes that die restarted by the launcher unless `keep_dead` (as
/// `cluster up` and compose's restart policy do: the nemesis kills and lets them come back).
#[allow(dead_code)]
pub async fn start_with(replicas: usize, engine: &str, keep_dead: bool) -> TestCluster {
    start_spec(replicas, engine, keep_dead, &[]).await
}

/// [`start`] with settings of every node process given as `APP__*` variables.
#[allow(dead_code)]
pub async fn start_tuned(replicas: usize, settings: &[(&str, &str)]) -> TestCluster {
    start_spec(replicas, "log", true, settings).await
}

async fn start_spec(replicas: usize, engine: &str, keep_dead: bool, settings: &[(&str, &str)]) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let engine = engine.to_string();
    let env: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cluster = tokio::task::spawn_blocking(move || {
        let mut spec = ClusterSpec::local(replicas, 2, env!("CARGO_BIN_EXE_webshop-node"), path).expect("free ports");
        spec.keep_dead = keep_dead;
        spec.engine = engine;
        spec.env = env;
        Cluster::start(spec)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"));
    let path = dir.path().to_path_buf();
    // WEBSHOP_KEEP_TEST_DIR keeps the folder (and the processes' logs in it) after the test.
    let dir = match std::env::var_os("WEBSHOP_KEEP_TEST_DIR") {
        Some(_) => {
            eprintln!("cluster folder kept: {}", dir.keep().display());
            None
        }
        None => Some(dir),
    };
    TestCluster { cluster: Arc::new(cluster), path, _dir: dir }
}

#[allow(dead_code)]
impl TestCluster {
    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        self.cluster.gateway_url()
    }

    /// The cluster's topology.
    pub fn topology(&self) -> &Topology {
        self.cluster.topology()
    }

    /// Every process with its pid, as in `manifest.json`.
    pub fn manifest(&self) -> cluster::manifest::Manifest {
        self.cluster.manifest()
    }

    /// The launcher's folder (topology, secret, manifest, logs), where `cluster admin` looks.
    pub fn work_dir(&self) -> std::path::PathBuf {
        self.cluster.work_dir().to_path_buf()
    }

    /// The launcher's `manifest.json` (pids of every process).
    pub fn manifest_path(&self) -> std::path::PathBuf {
        self.cluster.manifest_path().to_path_buf()
    }

    /// The cluster secret.
    pub fn secret(&self) -> &str {
        self.cluster.secret()
    }

    /// GETs an internal endpoint of a replica (with the cluster secret) as JSON.
    pub async fn replica_json(&self, s: Service, id: usize, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.topology().nodes(s).replicas[id]))
            .header(model::wire::SECRET, self.secret())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{s} replica {id} {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{s} replica {id} {path}: {e}"))
    }

    /// Where node `n` listens (`host:port`).
    pub fn addr(&self, n: Node) -> String {
        self.cluster.addr(n.proc_id()).unwrap_or_else(|| panic!("the cluster has no {n:?}"))
    }

    /// The command that starts node `n` as the launcher does, but with `secret` as its
    /// cluster secret; its output goes to `<cluster folder>/logs/<name>.other-secret.log`
    /// (returned).
    pub fn node_command_with_secret(&self, n: Node, secret: &str) -> (std::process::Command, std::path::PathBuf) {
        let (s, id, role) = match n {
            Node::Replica(s, id) => (s, id, "replica"),
            Node::Coordinator(s, id) => (s, id, "coordinator"),
        };
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_webshop-node"));
        c.arg(role)
            .env("APP__SERVICE", s.name())
            .env("APP__ID", id.to_string())
            .env("APP__TOPOLOGY", self.path.join("topology.toml"))
            .env("APP__SECRET", secret);
        if let Node::Replica(..) = n {
            c.env("APP__DATA_DIR", self.data_dir(s, id)).env("APP__ENGINE", "log");
        }
        let log = self.path.join("logs").join(format!("{s}-{role}-{id}.other-secret.log"));
        let f = std::fs::File::create(&log).expect("log file");
        c.stdout(f.try_clone().expect("log file")).stderr(f);
        (c, log)
    }

    /// A replica's data folder.
    pub fn data_dir(&self, s: Service, id: u32) -> std::path::PathBuf {
        self.path.join("data").join(format!("{s}-{id}"))
    }

    /// Waits until every replica of `s` is a full member of the newest view the replicas
    /// hold (a replica just restarted may still tell an older one), at most `within`;
    /// returns how long it took.
    pub async fn wait_all_members(&self, s: Service, within: std::time::Duration) -> std::time::Duration {
        let start = std::time::Instant::now();
        let n = self.topology().nodes(s).replicas.len();
        let http = reqwest::Client::new();
        loop {
            let mut newest: Option<model::wire::View> = None;
            for addr in &self.topology().nodes(s).replicas {
                let r = http
                    .get(format!("http://{addr}/internal/view"))
                    .header(model::wire::SECRET, self.secret())
                    .timeout(std::time::Duration::from_secs(1))
                    .send()
                    .await;
                if let Ok(v) = async { r?.json::<model::wire::View>().await }.await {
                    if newest.as_ref().is_none_or(|w| v.epoch > w.epoch) {
                        newest = Some(v);
                    }
                }
            }
            if newest.as_ref().is_some_and(|v| v.members.len() == n) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{s}: not every replica is a full member after {within:?}: {newest:?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// POSTs an internal path (with the cluster secret) to a coordinator; the status.
    pub async fn coordinator_post(&self, s: Service, id: usize, path: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("http://{}{path}", self.topology().nodes(s).coordinators[id]))
            .header(model::wire::SECRET, self.secret())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{s} coordinator {id} {path}: {e}"))
            .status()
            .as_u16()
    }

    /// A coordinator's `/admin/status` as JSON.
    pub async fn coordinator_status(&self, s: Service, id: usize) -> serde_json::Value {
        reqwest::get(format!("http://{}/admin/status", self.topology().nodes(s).coordinators[id]))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{s} coordinator {id} status: {e}"))
            .json()
            .await
            .unwrap()
    }

    /// A replica's digest root (hex).
    pub async fn root(&self, s: Service, id: usize) -> String {
        self.replica_json(s, id, "/internal/digest").await["root"].as_str().unwrap().to_string()
    }

    /// Every replica's digest root (hex), in id order, asked concurrently.
    pub async fn roots(&self, s: Service) -> Vec<String> {
        futures::future::join_all((0..self.topology().nodes(s).replicas.len()).map(|id| self.root(s, id))).await
    }

    /// Every replica of `s` holds the same data (one digest root).
    pub async fn assert_replicas_equal(&self, s: Service) {
        let roots = self.roots(s).await;
        assert!(roots.iter().all(|r| *r == roots[0]), "{s} replicas differ: {roots:?}");
    }

    /// Kills a process with SIGKILL.
    pub fn kill(&mut self, n: Node) {
        self.cluster.kill(n.proc_id()).unwrap_or_else(|e| panic!("kill {n:?}: {e:#}"));
    }

    /// Starts a killed process again and waits until it answers.
    pub async fn start_again(&mut self, n: Node) {
        let c = self.cluster.clone();
        tokio::task::spawn_blocking(move || c.start_again(n.proc_id()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("start {n:?} again: {e:#}"));
    }

    /// Pauses a process with SIGSTOP.
    pub fn pause(&mut self, n: Node) {
        self.cluster.pause(n.proc_id()).unwrap_or_else(|e| panic!("pause {n:?}: {e:#}"));
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&mut self, n: Node) {
        self.cluster.resume(n.proc_id()).unwrap_or_else(|e| panic!("resume {n:?}: {e:#}"));
    }
}
