//! A real Prometheus scrapes a local cluster with the scrape config build_compose generates
//! for the cluster's topology: every replica and coordinator is up and exports its process
//! metrics, requests sent through the gateway show up as latency histograms, and every query
//! of the Grafana dashboard (deploy/grafana/webshop.json) runs. Needs the `prometheus` binary
//! (Debian's package, scripts/install-deps.sh); without it the test is skipped with a
//! message, except in CI, where it must run. In the nextest group `cluster` (a whole cluster).

mod support;

use model::topology::{Service, Topology};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::start;
use webshop_tests::Api;

/// How long Prometheus gets to show what the test waits for: a scrape every 5 s, and a
/// 2-core machine busy with a dozen processes.
const DEADLINE: Duration = Duration::from_secs(90);

/// A Prometheus process, killed (and reaped) when dropped, also when the test panics.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Starts `binary` on config `config`, its data and log in `dir`, on a free loopback port.
    fn start(binary: &str, config: &Path, dir: &Path) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Prometheus { child, url: format!("http://127.0.0.1:{port}"), log }
    }

    /// Its log so far (for a failure's message).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test if Prometheus has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
    }

    /// The answer of an instant query: the result's samples as (labels, value). `Err` for an
    /// answer that is not a success (the error Prometheus gives).
    async fn query(
        &self,
        http: &reqwest::Client,
        expr: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, String)>, String> {
        let r = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("{expr}: {e}"))?;
        let v: Value = r.json().await.map_err(|e| format!("{expr}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("{expr}: {v}"));
        }
        let samples = v["data"]["result"].as_array().cloned().unwrap_or_default();
        Ok(samples
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                (labels, s["value"][1].as_str().unwrap_or("").to_string())
            })
            .collect())
    }

    /// Polls `expr` until `done` accepts its samples, at most until the [`DEADLINE`] from
    /// `since`; the last samples (or error) are in the failure's message.
    async fn wait_for(
        &mut self,
        http: &reqwest::Client,
        since: Instant,
        expr: &str,
        done: impl Fn(&[(BTreeMap<String, String>, String)]) -> bool,
    ) {
        loop {
            self.assert_running();
            let answer = self.query(http, expr).await;
            if answer.as_deref().is_ok_and(&done) {
                return;
            }
            assert!(
                since.elapsed() < DEADLINE,
                "{expr} after {DEADLINE:?}: {answer:?}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `prometheus` binary on the PATH, or `None` (the test is skipped; in CI it fails).
fn prometheus_binary() -> Option<&'static str> {
    let found = Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Prometheus test: no `prometheus` on the PATH");
        eprintln!(
            "skipped: no `prometheus` binary on the PATH (apt-get install prometheus, or scripts/install-deps.sh test)"
        );
        return None;
    }
    Some("prometheus")
}

/// Every node of `t` as the scrape config labels it: (service, role, id).
fn nodes(t: &Topology) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for s in Service::ALL {
        for (role, addrs) in [("replica", &t.nodes(s).replicas), ("coordinator", &t.nodes(s).coordinators)] {
            for id in 0..addrs.len() {
                out.insert((s.name().to_string(), role.to_string(), id.to_string()));
            }
        }
    }
    out
}

/// The (service, role, id) labels of samples.
fn labelled(samples: &[(BTreeMap<String, String>, String)]) -> BTreeSet<(String, String, String)> {
    samples
        .iter()
        .map(|(l, _)| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            (get("service"), get("role"), get("id"))
        })
        .collect()
}

/// The dashboard's queries, with its variables set as Grafana would for "all services".
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/webshop.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$service", ".*"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_by_prometheus() {
    let Some(binary) = prometheus_binary() else { return };
    let c = start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, build_compose::prometheus_config(c.topology()).unwrap()).unwrap();
    let mut prom = Prometheus::start(binary, &config, dir.path());
    let started = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();

    // A few requests through the gateway: counted by the payment coordinators and replica.
    let api = Api::new(&c.gateway_url());
    for _ in 0..5 {
        let user = api.post_ok("/payment/create_user").await;
        api.get_ok(&format!("/payment/find_user/{}", user["user_id"].as_str().unwrap())).await;
    }

    // Every replica and coordinator scraped, up, with its process metrics.
    let all = nodes(c.topology());
    let up = |s: &[(BTreeMap<String, String>, String)]| labelled(s) == all && s.iter().all(|(_, v)| v == "1");
    prom.wait_for(&http, started, "up{job=\"webshop\"}", up).await;
    let rss = |s: &[(BTreeMap<String, String>, String)]| {
        labelled(s) == all && s.iter().all(|(_, v)| v.parse::<f64>().is_ok_and(|b| b > 1e6))
    };
    prom.wait_for(&http, started, "process_resident_memory_bytes{job=\"webshop\"}", rss).await;
    eprintln!(
        "prometheus: {} targets up with their process metrics after {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );

    // The requests' latency histograms, at the coordinators and at the replica.
    for (role, route) in [("coordinator", "create"), ("replica", "create"), ("coordinator", "find")] {
        let expr = format!(
            "sum by (le) ({role}_request_seconds_bucket{{job=\"webshop\", service=\"payment\", role=\"{role}\", route=\"{route}\"}})"
        );
        // A bucket per bound and +Inf, which holds every request (a resend would add one).
        let counted = |s: &[(BTreeMap<String, String>, String)]| {
            s.len() == net::metrics::BOUNDS.len() + 1
                && s.iter().any(|(l, v)| {
                    l.get("le").map(String::as_str) == Some("+Inf") && v.parse::<f64>().is_ok_and(|n| n >= 5.0)
                })
        };
        prom.wait_for(&http, started, &expr, counted).await;
    }

    // Every query of the dashboard runs; its requests panel has the payment routes once
    // there are two scrapes to take a rate from.
    for q in dashboard_queries() {
        prom.query(&http, &q).await.unwrap_or_else(|e| panic!("a dashboard query fails: {e}"));
    }
    let rate = dashboard_queries()
        .into_iter()
        .find(|q| q.starts_with("sum by (service, route) (rate(coordinator_requests_total"))
        .unwrap();
    prom.wait_for(&http, started, &rate, |s| {
        s.iter().any(|(l, _)| {
            l.get("service").map(String::as_str) == Some("payment")
                && l.get("route").map(String::as_str) == Some("create")
        })
    })
    .await;
    eprintln!("prometheus: histograms and dashboard queries answered after {:.1} s", started.elapsed().as_secs_f64());
}
