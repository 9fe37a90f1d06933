//! The compose deployment for a test: `scripts/compose.sh up` under a project of the test's
//! own, with the gateway on a free loopback port and a fresh secret, on the node image of
//! the release build (`scripts/images.sh` builds `target/release/cluster`, a no-op when
//! scripts/test.sh built it already; `WEBSHOP_NODE_BINARY` names another). Not the tests'
//! debug build: in containers on two cores, with a MongoDB-compatible store under every
//! replica, its checkouts in the course scenario outlast nginx's proxy timeout. dropping it runs `down` (containers, network, volumes).
//! The nodes are reached from the host at their container addresses on the project's network.
#![allow(dead_code)]

use model::topology::{Service, Topology};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The project name of the tests' deployment (one at a time: the `cluster` test group).
const PROJECT: &str = "webshoptest";

/// A running compose deployment.
pub struct ComposeCluster {
    root: PathBuf,
    port: u16,
    secret: String,
    topology: Topology,
    http: reqwest::Client,
}

/// Whether this machine can run the container tests: a Docker engine that answers. Without
/// one they are skipped with a message, except in CI, where they must run.
pub fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the container tests: no Docker engine answers `docker info`"
        );
        eprintln!("skipped: no Docker engine answers `docker info` (the container tests need one)");
    }
    ok
}

impl ComposeCluster {
    /// Builds the images and starts every container, returning once the gateway serves.
    pub async fn up() -> ComposeCluster {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let secret = format!("test-{}", uuid::Uuid::new_v4().simple());
        let topology = Topology::load(&root.join("deploy/compose/topology.toml")).expect("compose topology");
        let c = ComposeCluster { root, port, secret, topology, http: reqwest::Client::new() };
        // A deployment an earlier run left behind (a test killed before its drop).
        c.script(&["down"]);
        let started = Instant::now();
        let out = c.script(&["up"]);
        assert!(out.status.success(), "compose up failed:\n{}", c.explain(&out));
        eprintln!("compose up: {:.1} s to a served request", started.elapsed().as_secs_f64());
        c
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        // The environment of a shell, not of the test: cargo and nextest set variables (for
        // the test binary) that made the release build in scripts/images.sh rebuild every
        // crate (4 minutes) instead of finding it up to date.
        let kept = std::env::vars().filter(|(k, _)| {
            matches!(
                k.as_str(),
                "PATH" | "HOME" | "USER" | "LANG" | "TMPDIR" | "DOCKER_HOST" | "SECANTUSD" | "DEBIAN_MIRROR"
            ) || k.starts_with("WEBSHOP_")
                || k.starts_with("XDG_")
                || k.starts_with("RUSTUP_")
        });
        Command::new(self.root.join("scripts/compose.sh"))
            .args(args)
            .env_clear()
            .envs(kept)
            .env("WEBSHOP_COMPOSE_PROJECT", PROJECT)
            .env("WEBSHOP_GATEWAY_PORT", self.port.to_string())
            .env("WEBSHOP_SECRET", &self.secret)
            .output()
            .expect("scripts/compose.sh runs")
    }

    fn explain(&self, out: &std::process::Output) -> String {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// `docker-compose ARGS` on the deployment (`kill`, `pause`, `unpause`, `start`, `ps`).
    pub fn compose(&self, args: &[&str]) {
        let mut all = vec!["compose"];
        all.extend_from_slice(args);
        let out = self.script(&all);
        assert!(out.status.success(), "compose {args:?}:\n{}", self.explain(&out));
    }

    /// The gateway's URL.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The compose topology (hosts are service names).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The cluster secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The compose project's name.
    pub fn project(&self) -> &'static str {
        PROJECT
    }

    /// The project's network, as docker names it.
    pub fn network(&self) -> String {
        format!("{PROJECT}_default")
    }

    /// The container of a compose service (empty when it has none).
    pub fn container(&self, service: &str) -> String {
        let out = self.script(&["compose", "ps", "-q", service]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker ARGS`, which must succeed.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(args).output().expect("docker runs");
        assert!(out.status.success(), "docker {args:?}:\n{}", self.explain(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A node's address on the project's network (`ip:port`), as the host reaches it; `None`
    /// while its container has none (stopped, or disconnected).
    pub fn addr(&self, node: &str) -> Option<String> {
        let prefix = format!("{node}:");
        let port = Service::ALL
            .iter()
            .flat_map(|s| {
                let n = self.topology.nodes(*s);
                n.replicas.iter().chain(&n.coordinators)
            })
            .find_map(|a| a.strip_prefix(&prefix))?
            .to_string();
        let id = self.container(node);
        if id.is_empty() {
            return None;
        }
        let format =
            format!("{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}", self.network());
        let out = Command::new("docker").args(["inspect", "-f", &format, &id]).output().ok()?;
        let ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!ip.is_empty()).then(|| format!("{ip}:{port}"))
    }

    /// GETs an internal endpoint of a node (with the secret) as JSON; `None` without an answer.
    pub async fn internal(&self, node: &str, path: &str) -> Option<serde_json::Value> {
        let addr = self.addr(node)?;
        let r = self
            .http
            .get(format!("http://{addr}{path}"))
            .header(model::wire::SECRET, &self.secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// A replica's compose service name.
    pub fn replica(s: Service, id: usize) -> String {
        format!("{s}-replica-{id}")
    }

    /// Waits until every replica of `s` is a full member of the newest view the replicas hold
    /// and all hold one digest root, at most `within`; returns how long it took.
    pub async fn wait_converged(&self, s: Service, within: Duration) -> Duration {
        let start = Instant::now();
        let n = self.topology.nodes(s).replicas.len();
        loop {
            let mut newest: Option<model::wire::View> = None;
            let mut roots = Vec::new();
            for id in 0..n {
                let name = Self::replica(s, id);
                if let Some(v) = self.internal(&name, "/internal/view").await {
                    if let Ok(v) = serde_json::from_value::<model::wire::View>(v) {
                        if newest.as_ref().is_none_or(|w| v.epoch > w.epoch) {
                            newest = Some(v);
                        }
                    }
                }
                roots.push(
                    self.internal(&name, "/internal/digest").await.and_then(|d| d["root"].as_str().map(String::from)),
                );
            }
            let members = newest.as_ref().is_some_and(|v| v.members.len() == n);
            let one_root = roots.iter().all(|r| r.is_some() && *r == roots[0]);
            if members && one_root {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{s}: not every replica a full member with one root after {within:?}: view {newest:?}, roots {roots:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines of every container's log, for a failure's report.
    fn logs(&self) -> String {
        let out = self.script(&["compose", "logs", "--no-color", "--tail", "40"]);
        self.explain(&out)
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- container logs ---\n{}", self.logs());
        }
        if std::env::var_os("WEBSHOP_KEEP_TEST_DIR").is_some() {
            eprintln!("compose project {PROJECT} kept running (scripts/compose.sh down with WEBSHOP_COMPOSE_PROJECT={PROJECT})");
            return;
        }
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("compose down failed:\n{}", self.explain(&out));
        }
    }
}
