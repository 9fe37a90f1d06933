//! The nemesis: randomized faults against a running cluster, a recorded history of every
//! operation, and checkers that prove the history possible under the system's promises
//! (the Jepsen way: clients record what they invoked and what came back, a nemesis injects
//! faults on a random schedule, a checker reads the history afterwards).
//!
//! A run: set up the workloads' keys (`workload::set_up`); start the client workers and the
//! fault schedule drawn from the seed (`faults`); at the run time's end stop both and heal
//! (end every pause and cut, wait for every service to report all members up with one
//! digest root); read the final state (`workload::final_reads`); check the history
//! (`check`); write the report (`report`). `--seed N` replays the same fault schedule and the
//! same operation mix (the timing of a real cluster is not replayed).
//!
//! - `history`: what a run records; `check`: the checkers (pure);
//! - `faults`: the schedule (pure) and the injector; `deployment`: how faults are made on
//!   local processes or on containers; `workload`: the clients;
//! - `report`: the summary, the JSON report and the PNG timeline.

pub mod check;
pub mod deployment;
pub mod faults;
pub mod history;
pub mod report;
pub mod workload;

use anyhow::Context;
use cluster::manifest::Role;
use deployment::Deployment;
use faults::{Injector, Mix, ScheduleSpec, Target};
use history::History;
use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gateway, `http://host:port`.
    pub host: String,
    /// The processes faults hit.
    pub deployment: Deployment,
    /// The cluster secret (for cuts by fault hook; without it they are left out).
    pub secret: Option<String>,
    /// Seeds the fault schedule and every worker's operation mix.
    pub seed: u64,
    /// How long operations and faults run (then the heal phase).
    pub run_time: Duration,
    /// Client workers (each has one operation in flight at a time).
    pub clients: u32,
    /// Operations at most (all workers together).
    pub max_ops: usize,
    /// Mean time between faults; zero: no faults.
    pub fault_interval: Duration,
    /// The fault kinds' weights.
    pub mix: Mix,
    /// Faults that may occupy one service at a time.
    pub max_down: usize,
    /// Longest wait in the heal phase for every service to converge.
    pub heal_timeout: Duration,
    /// Bound on one request.
    pub request_timeout: Duration,
    /// Where the report goes (`nemesis.json`, `nemesis.png`); `None`: nowhere.
    pub out: Option<PathBuf>,
    /// The sizes of the set-up.
    pub sizes: workload::Sizes,
}

impl Options {
    /// Defaults for `host` and `deployment`: 60 s, 8 clients, a fault every 4 s on average,
    /// kills, pauses and cuts (cuts by fault hook only when `secret` is given), one fault per
    /// service at a time.
    pub fn new(host: &str, deployment: Deployment, secret: Option<String>) -> Options {
        let cut = u32::from(secret.is_some() || !deployment.cuts_need_the_secret());
        Options {
            host: host.to_string(),
            deployment,
            secret,
            seed: 1,
            run_time: Duration::from_secs(60),
            clients: 8,
            max_ops: 1_000_000,
            fault_interval: Duration::from_secs(4),
            mix: Mix { kill: 1, pause: 1, cut },
            max_down: 1,
            heal_timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(20),
            out: None,
            sizes: workload::Sizes::default(),
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The faults planned from the seed.
    pub planned: Vec<faults::Planned>,
    /// The history.
    pub history: History,
    /// Every checker's findings.
    pub results: Vec<check::Checked>,
    /// Whether every checker holds.
    pub valid: bool,
    /// Time from the heal phase's start until every service had all members up with one
    /// root (`None` if not within the heal timeout).
    pub convergence_s: Option<f64>,
    /// The run's length (operations and faults), seconds.
    pub run_s: f64,
}

/// Runs the nemesis (on its own single-threaded runtime, like the load generator).
pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run_async(opts))
}

async fn run_async(opts: &Options) -> anyhow::Result<Outcome> {
    let (host, addr) = crate::loadgen::resolve(&opts.host)?;
    let gw = workload::Gateway { addr, host, timeout: opts.request_timeout };
    let manifest = opts.deployment.manifest().await.context("finding the cluster's processes")?;
    let targets = Target::of(&manifest);
    let replicas = manifest.processes.iter().filter(|e| e.role == Role::Replica && e.service == "stock").count() as u32;
    let mut mix = opts.mix;
    if opts.secret.is_none() && opts.deployment.cuts_need_the_secret() {
        mix.cut = 0;
    }
    let spec = ScheduleSpec { run: opts.run_time, interval: opts.fault_interval, mix, max_down: opts.max_down };
    let planned = if opts.fault_interval.is_zero() { Vec::new() } else { faults::schedule(opts.seed, &spec, &targets) };

    let setup = workload::set_up(&gw, &opts.sizes, replicas).await.context("set-up")?;
    let started = Instant::now();
    let deadline = started + opts.run_time;
    let shared = Rc::new(workload::Shared {
        gw: gw.clone(),
        seed: opts.seed,
        setup,
        started,
        deadline,
        max_ops: opts.max_ops.div_ceil(opts.clients.max(1) as usize),
        ids: Cell::new(0),
    });
    let workers: Vec<_> =
        (0..opts.clients).map(|w| tokio::task::spawn_local(workload::worker(shared.clone(), w))).collect();
    let injector = Injector::new(opts.deployment.clone(), opts.secret.clone(), started);
    injector.run(&planned, || Instant::now() >= deadline).await;
    let mut ops = Vec::new();
    for w in workers {
        ops.extend(w.await?);
    }
    let run_s = started.elapsed().as_secs_f64();
    injector.heal().await;
    let heal_start = Instant::now();
    let converged = converge(&opts.deployment, opts.heal_timeout).await;
    let convergence_s = converged.then(|| heal_start.elapsed().as_secs_f64());
    let fin = workload::final_reads(&gw, &shared.setup, &ops).await;
    let faults = injector.done.lock().unwrap().clone();
    let history = History { setup: shared.setup.clone(), ops, faults, fin };
    let mut results = check::check(&history);
    if !converged {
        results.push(check::Checked {
            checker: "convergence",
            violations: vec![check::Violation {
                checker: "convergence",
                what: format!(
                    "not every service had all members up with one root {:?} after the heal",
                    opts.heal_timeout
                ),
                ops: vec![],
            }],
        });
    }
    let valid = check::valid(&results);
    Ok(Outcome { seed: opts.seed, planned, history, results, valid, convergence_s, run_s })
}

/// Waits until, for every service, a coordinator reports every replica a full member with
/// one digest root, at most `within`; whether it came.
async fn converge(deployment: &Deployment, within: Duration) -> bool {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let services = ["order", "payment", "stock"];
    while start.elapsed() < within {
        // Read again each time: a restarted container may have another address.
        let Ok(manifest) = deployment.manifest().await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let mut all = true;
        for s in services {
            let mut ok = false;
            for c in manifest.processes.iter().filter(|e| e.role == Role::Coordinator && e.service == s) {
                let r =
                    http.get(format!("http://{}/admin/status", c.addr)).timeout(Duration::from_secs(3)).send().await;
                let Ok(v) = async { r?.json::<serde_json::Value>().await }.await else {
                    continue;
                };
                ok = converged(&v);
                break;
            }
            all &= ok;
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Whether a coordinator's `/admin/status` shows every replica up with one root.
pub fn converged(status: &serde_json::Value) -> bool {
    let Some(members) = status["members"].as_array() else {
        return false;
    };
    let roots: Vec<Option<&str>> = members.iter().map(|m| m["root"].as_str()).collect();
    !members.is_empty()
        && members.iter().all(|m| m["state"] == "up")
        && roots.iter().all(|r| r.is_some() && *r == roots[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_converged_when_every_replica_is_up_with_one_root() {
        let m = |state: &str, root: Option<&str>| json!({ "id": 0, "addr": "a", "state": state, "root": root });
        let status = |members: Vec<serde_json::Value>| json!({ "members": members });
        assert!(converged(&status(vec![m("up", Some("r")), m("up", Some("r"))])));
        assert!(!converged(&status(vec![m("up", Some("r")), m("learner", Some("r"))])));
        assert!(!converged(&status(vec![m("up", Some("r")), m("up", Some("s"))])));
        assert!(!converged(&status(vec![m("up", Some("r")), m("up", None)])));
        assert!(!converged(&status(vec![])));
        assert!(!converged(&json!({})));
    }
}
