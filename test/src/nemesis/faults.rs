//! Faults: a schedule drawn from the seed before the run (pure: the same seed, run time,
//! settings and processes give the same schedule), and the injector that carries it out on
//! the processes of a [`Deployment`] (local processes or containers, which says how each
//! fault is made):
//!
//! - `kill`: the process dies and is restarted. The fault lasts until the new process
//!   answers (or [`KILL_BOUND`]).
//! - `pause`: stopped for the planned time, then resumed.
//! - `cut`: one replica cut off for the planned time: from a coordinator of its service (the
//!   coordinators' fault hooks; needs the cluster secret, and a build with `fault-hooks`), or
//!   for a container from the whole network (recorded as `disconnect`).
//!
//! A fault occupies its service (the gateway is a service of its own here) from its start
//! to its planned end, and at most `max_down` faults occupy one service at a time, so that by
//! default a majority of every service's replicas stays up. Every fault ends before the run
//! does; [`Injector::heal`] ends any that is still on (a pause, a cut) when the run stops
//! early.

use cluster::manifest::{Entry, Manifest, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::deployment::{retried, Deployment};
use super::history::Fault;

/// Longest a killed process may take to answer again before its fault is closed anyway.
pub const KILL_BOUND: Duration = Duration::from_secs(60);

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL (the launcher restarts the process).
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// A coordinator cut off from one replica.
    Cut,
}

impl FaultKind {
    /// The name the history uses.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Cut => "cut",
        }
    }
}

/// The relative weights of the fault kinds (0 leaves a kind out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of `kill`.
    pub kill: u32,
    /// Weight of `pause`.
    pub pause: u32,
    /// Weight of `cut`.
    pub cut: u32,
}

impl Mix {
    /// Parses `kill,pause,cut` or weighted `kill=2,pause=1`.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut mix = Mix { kill: 0, pause: 0, cut: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (n, w.parse::<u32>().map_err(|_| format!("not a weight: {part:?}"))?),
                None => (part, 1),
            };
            match name {
                "kill" => mix.kill = weight,
                "pause" => mix.pause = weight,
                "cut" => mix.cut = weight,
                _ => return Err(format!("unknown fault {name:?} (kill, pause, cut)")),
            }
        }
        Ok(mix)
    }

    fn total(&self) -> u32 {
        self.kill + self.pause + self.cut
    }
}

/// A process faults may hit, as the manifest names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `stock-replica-1`, `order-coordinator-0`, `gateway-balancer-0`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// `order`, `payment`, `stock` or `gateway`.
    pub service: String,
    /// Its id within its role and service.
    pub id: u32,
}

impl Target {
    /// The processes of `manifest` faults may hit: replicas, coordinators and the gateway
    /// (not the storage servers of `--engine mongo`), in manifest order.
    pub fn of(manifest: &Manifest) -> Vec<Target> {
        manifest
            .processes
            .iter()
            .filter(|e| matches!(e.role, Role::Replica | Role::Coordinator | Role::Balancer))
            .map(|e| Target { name: e.name(), role: e.role, service: e.service.clone(), id: e.id })
            .collect()
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    /// When it starts, from the run's start.
    pub at: Duration,
    /// What it does.
    pub kind: FaultKind,
    /// The process (for a cut: the replica cut off).
    pub target: String,
    /// For a cut: the coordinator cut off from the replica.
    pub from: Option<String>,
    /// How long a pause or cut lasts; for a kill, the time its service is kept free of
    /// other faults (the restart and the re-join).
    pub hold: Duration,
}

/// The schedule's settings.
#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    /// The run's length: every fault ends before it.
    pub run: Duration,
    /// Mean time between the starts of two faults (exponentially distributed gaps).
    pub interval: Duration,
    /// The kinds' weights.
    pub mix: Mix,
    /// Faults that may occupy one service at a time.
    pub max_down: usize,
}

/// Time a kill keeps its service free of other faults: the launcher's restart, the start,
/// and the re-join as a learner and its promotion.
const KILL_HOLD: Duration = Duration::from_secs(8);
/// Time a fault on a replica keeps its service free of other faults after it ends: a paused,
/// cut or killed replica is evicted, and re-joins as a learner and is promoted only a few
/// seconds after it answers again (an eviction may even commit after the fault ended). A
/// second fault in that window could take a majority of the view's members down while a
/// majority of the processes is up.
const REJOIN_MARGIN: Duration = Duration::from_secs(8);
/// Bounds of a pause's and a cut's length.
const HOLD_MIN: Duration = Duration::from_millis(500);
const HOLD_MAX: Duration = Duration::from_secs(8);

/// The faults for `spec` on `targets`, drawn from `seed`, in start order.
pub fn schedule(seed: u64, spec: &ScheduleSpec, targets: &[Target]) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
    let mut planned: Vec<Planned> = Vec::new();
    if spec.mix.total() == 0 || targets.is_empty() || spec.interval.is_zero() {
        return planned;
    }
    let mean = spec.interval.as_secs_f64();
    let mut t = 0.0;
    loop {
        // Exponential gaps (a Poisson process of faults), at least 100 ms apart.
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        t += (-u.ln() * mean).max(0.1);
        let at = Duration::from_secs_f64(t);
        if at >= spec.run {
            return planned;
        }
        let mut pick = rng.gen_range(0..spec.mix.total());
        let kind = if pick < spec.mix.kill {
            FaultKind::Kill
        } else {
            pick -= spec.mix.kill;
            if pick < spec.mix.pause {
                FaultKind::Pause
            } else {
                FaultKind::Cut
            }
        };
        let hold = match kind {
            FaultKind::Kill => KILL_HOLD,
            _ => Duration::from_secs_f64(rng.gen_range(HOLD_MIN.as_secs_f64()..HOLD_MAX.as_secs_f64())),
        };
        // Ends before the run does.
        let hold = hold.min(spec.run - at);
        let candidates: Vec<&Target> = targets
            .iter()
            .filter(|t| match kind {
                FaultKind::Cut => t.role == Role::Replica,
                _ => true,
            })
            .filter(|t| busy(&planned, targets, &t.service, at, at + occupation(kind, t.role, hold)) < spec.max_down)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let target = candidates[rng.gen_range(0..candidates.len())];
        let from = match kind {
            FaultKind::Cut => {
                let coordinators: Vec<&Target> =
                    targets.iter().filter(|t| t.role == Role::Coordinator && t.service == target.service).collect();
                if coordinators.is_empty() {
                    continue;
                }
                Some(coordinators[rng.gen_range(0..coordinators.len())].name.clone())
            }
            _ => None,
        };
        planned.push(Planned { at, kind, target: target.name.clone(), from, hold });
    }
}

/// How long a fault of `kind` on a process of `role` lasting `hold` keeps its service from
/// other faults: its length, and for a replica (a cut hits a replica) the re-join after it.
fn occupation(kind: FaultKind, role: Role, hold: Duration) -> Duration {
    if role == Role::Replica || kind == FaultKind::Cut {
        hold + REJOIN_MARGIN
    } else {
        hold
    }
}

/// How many planned faults occupy `service` at some time in `[from, to]`.
fn busy(planned: &[Planned], targets: &[Target], service: &str, from: Duration, to: Duration) -> usize {
    planned
        .iter()
        .filter_map(|p| {
            let t = targets.iter().find(|t| t.name == p.target && t.service == service)?;
            Some(p.at..=p.at + occupation(p.kind, t.role, p.hold))
        })
        .filter(|span| *span.start() <= to && from <= *span.end())
        .count()
}

/// Carries out a schedule and records what it did.
pub struct Injector {
    deployment: Deployment,
    /// The cluster secret, for cuts by fault hook.
    secret: Option<String>,
    started: Instant,
    /// The faults carried out so far (an end of `u64::MAX`: still on).
    pub done: Arc<Mutex<Vec<Fault>>>,
    /// Pauses and cuts still on, for [`Injector::heal`].
    open: Arc<Mutex<Vec<Open>>>,
    http: reqwest::Client,
}

#[derive(Clone, Debug, PartialEq)]
enum Open {
    Paused(Entry),
    Cut { from: Entry, target: Entry },
}

impl Injector {
    /// An injector on the processes of `deployment`; times count from `started`.
    pub fn new(deployment: Deployment, secret: Option<String>, started: Instant) -> Injector {
        Injector {
            deployment,
            secret,
            started,
            done: Arc::default(),
            open: Arc::default(),
            http: reqwest::Client::new(),
        }
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    async fn entry(&self, name: &str) -> anyhow::Result<Entry> {
        let m = self.deployment.manifest().await?;
        m.processes.into_iter().find(|e| e.name() == name).ok_or_else(|| anyhow::anyhow!("the cluster has no {name}"))
    }

    /// Runs `plan` (in start order) until its end or until `stop` returns true.
    pub async fn run(&self, plan: &[Planned], stop: impl Fn() -> bool) {
        let mut running = Vec::new();
        for p in plan {
            let wait = p.at.saturating_sub(self.started.elapsed());
            tokio::time::sleep(wait).await;
            if stop() {
                break;
            }
            match self.start(p).await {
                Ok(task) => running.push(task),
                Err(e) => log::warn!("nemesis: {} of {} not made: {e:#}", p.kind.name(), p.target),
            }
        }
        for t in running {
            let _ = t.await;
        }
    }

    /// Starts fault `p`; the task ends it.
    async fn start(&self, p: &Planned) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let target = self.entry(&p.target).await?;
        let from = match p.kind {
            FaultKind::Cut => Some(self.entry(p.from.as_deref().unwrap_or_default()).await?),
            _ => None,
        };
        let kind = match p.kind {
            FaultKind::Cut => self.deployment.cut_name(),
            k => k.name(),
        };
        log::info!("nemesis: {kind} {} for {:?}", p.target, p.hold);
        // Made first, recorded once made: a fault that could not be made is no fault.
        let start_us = self.now_us();
        match (p.kind, &from) {
            (FaultKind::Kill, _) => self.deployment.kill(&target).await?,
            (FaultKind::Pause, _) => self.deployment.pause(&target).await?,
            (FaultKind::Cut, Some(from)) => {
                self.deployment.cut(&self.http, self.secret.as_deref(), from, &target).await?
            }
            (FaultKind::Cut, None) => unreachable!("a cut has its coordinator"),
        }
        let index = {
            let mut done = self.done.lock().unwrap();
            done.push(Fault {
                kind: kind.into(),
                target: p.target.clone(),
                service: matches!(target.role, Role::Replica).then(|| target.service.clone()),
                role: target.role.name().into(),
                start_us,
                end_us: u64::MAX,
            });
            done.len() - 1
        };
        let (done, open, started, hold) = (self.done.clone(), self.open.clone(), self.started, p.hold);
        let (deployment, http, secret) = (self.deployment.clone(), self.http.clone(), self.secret.clone());
        // A replica is down until it is a full member again (evicted, it re-joins and is
        // promoted a few seconds after it answers): the fault lasts until then.
        let member = (target.role == Role::Replica).then(|| (target.service.clone(), target.id));
        let close = move |deployment: Deployment, done: Arc<Mutex<Vec<Fault>>>| async move {
            if let Some((service, id)) = member {
                full_member(&deployment, &service, id).await;
            }
            done.lock().unwrap()[index].end_us = started.elapsed().as_micros() as u64;
        };
        let it = match (p.kind, from) {
            (FaultKind::Kill, _) => {
                return Ok(tokio::spawn(async move {
                    deployment.restart(&target, KILL_BOUND).await;
                    back_up(&deployment, &target).await;
                    close(deployment, done).await;
                }))
            }
            (FaultKind::Pause, _) => Open::Paused(target),
            (FaultKind::Cut, from) => Open::Cut { from: from.expect("a cut has its coordinator"), target },
        };
        open.lock().unwrap().push(it.clone());
        Ok(tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if take(&open, &it) {
                end(&deployment, &http, secret.as_deref(), &it).await;
            }
            close(deployment, done).await;
        }))
    }

    /// Ends every pause and cut still on (a run stopped early); kills end by themselves.
    pub async fn heal(&self) {
        let open: Vec<Open> = std::mem::take(&mut *self.open.lock().unwrap());
        for o in &open {
            end(&self.deployment, &self.http, self.secret.as_deref(), o).await;
        }
        let now = self.now_us();
        for f in self.done.lock().unwrap().iter_mut().filter(|f| f.end_us == u64::MAX && f.kind != "kill") {
            f.end_us = now;
        }
    }
}

/// Ends a pause or a cut, trying again when that fails ([`retried`]).
async fn end(deployment: &Deployment, http: &reqwest::Client, secret: Option<&str>, o: &Open) {
    match o {
        Open::Paused(e) => retried(&format!("resuming {}", e.name()), || deployment.resume(e)).await,
        Open::Cut { from, target } => deployment.heal_cut(http, secret, from, target).await,
    }
}

/// Removes `it` from the open faults; whether it was there (else a heal ended it already).
fn take(open: &Mutex<Vec<Open>>, it: &Open) -> bool {
    let mut open = open.lock().unwrap();
    match open.iter().position(|o| o == it) {
        Some(i) => {
            open.remove(i);
            true
        }
        None => false,
    }
}

/// Waits until a coordinator of `service` shows replica `id` a full member of its view, at
/// most [`KILL_BOUND`].
async fn full_member(deployment: &Deployment, service: &str, id: u32) {
    let http = reqwest::Client::new();
    let start = Instant::now();
    while start.elapsed() < KILL_BOUND {
        let coordinators: Vec<String> = deployment
            .manifest()
            .await
            .map(|m| {
                m.processes
                    .into_iter()
                    .filter(|e| e.role == Role::Coordinator && e.service == service)
                    .map(|e| e.addr)
                    .collect()
            })
            .unwrap_or_default();
        for addr in coordinators {
            let r = http.get(format!("http://{addr}/admin/status")).timeout(Duration::from_secs(2)).send().await;
            if let Ok(v) = async { r?.json::<serde_json::Value>().await }.await {
                if v["members"][id as usize]["state"] == "up" {
                    return;
                }
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log::warn!("nemesis: {service} replica {id} not a full member again within {KILL_BOUND:?}");
}

/// Waits until killed process `old` runs again (another pid: the launcher restarted it, or
/// the nemesis started its container) and accepts connections, at most [`KILL_BOUND`].
async fn back_up(deployment: &Deployment, old: &Entry) {
    let start = Instant::now();
    let name = old.name();
    while start.elapsed() < KILL_BOUND {
        let up = deployment.manifest().await.ok().and_then(|m| m.processes.into_iter().find(|e| e.name() == name));
        if let Some(e) = up.filter(|e| e.pid != old.pid && e.pid != 0) {
            if tokio::net::TcpStream::connect(&e.addr).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log::warn!("nemesis: {name} not back within {KILL_BOUND:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        let mut t = Vec::new();
        for service in ["order", "payment", "stock"] {
            for id in 0..3 {
                t.push(Target {
                    name: format!("{service}-replica-{id}"),
                    role: Role::Replica,
                    service: service.into(),
                    id,
                });
            }
            for id in 0..2 {
                let name = format!("{service}-coordinator-{id}");
                t.push(Target { name, role: Role::Coordinator, service: service.into(), id });
            }
        }
        t.push(Target { name: "gateway-balancer-0".into(), role: Role::Balancer, service: "gateway".into(), id: 0 });
        t
    }

    fn spec(max_down: usize) -> ScheduleSpec {
        ScheduleSpec {
            run: Duration::from_secs(600),
            interval: Duration::from_secs(2),
            mix: Mix { kill: 1, pause: 1, cut: 1 },
            max_down,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let t = targets();
        assert_eq!(schedule(7, &spec(1), &t), schedule(7, &spec(1), &t));
        assert_ne!(schedule(7, &spec(1), &t), schedule(8, &spec(1), &t));
    }

    #[test]
    fn faults_never_overlap_in_one_service_beyond_the_bound_and_end_within_the_run() {
        let t = targets();
        for max_down in [1, 2] {
            let plan = schedule(3, &spec(max_down), &t);
            assert!(plan.len() > 60, "faults every few seconds over 600 s: {}", plan.len());
            for p in &plan {
                assert!(p.at + p.hold <= Duration::from_secs(600));
                let service = &t.iter().find(|x| x.name == p.target).unwrap().service;
                let overlapping = plan
                    .iter()
                    .filter(|q| {
                        let target = t.iter().find(|x| x.name == q.target).unwrap();
                        &target.service == service
                            && q.at <= p.at
                            && p.at <= q.at + occupation(q.kind, target.role, q.hold)
                    })
                    .count();
                assert!(overlapping <= max_down, "{p:?}: {overlapping} faults in {service} at once");
            }
        }
    }

    #[test]
    fn the_mix_chooses_the_kinds_and_cuts_pair_a_replica_with_a_coordinator_of_its_service() {
        let t = targets();
        let only = |mix: &str| {
            let s = ScheduleSpec { mix: Mix::parse(mix).unwrap(), ..spec(1) };
            schedule(1, &s, &t)
        };
        assert!(only("pause").iter().all(|p| p.kind == FaultKind::Pause && p.from.is_none()));
        let run = spec(1).run;
        assert!(only("kill").iter().all(|p| p.kind == FaultKind::Kill && p.hold == KILL_HOLD.min(run - p.at)));
        for p in only("cut") {
            let from = p.from.expect("a coordinator");
            assert!(p.target.contains("-replica-"));
            assert_eq!(p.target.split('-').next(), from.split('-').next(), "{from} and {}", p.target);
        }
        let mixed = only("kill=1,pause=3");
        let pauses = mixed.iter().filter(|p| p.kind == FaultKind::Pause).count();
        assert!(pauses > mixed.len() / 2, "{pauses} of {}", mixed.len());
        assert!(Mix::parse("kill,nap").is_err());
        assert!(only("").is_empty());
    }
}
