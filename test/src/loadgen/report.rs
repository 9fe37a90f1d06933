//! The numbers of a load test, as written to `--json` (serde types, the schema below) and as
//! printed at the end of a run.
//!
//! ```text
//! { "schema": 1, "machine": {...}, "settings": {...},
//!   "init": [ { "path", "status", "seconds" } ],
//!   "run": RUN, "ceiling": RUN | null, "ceiling_ratio": number | null }
//! RUN = { "target", "duration_s", "requests", "errors", "throughput", "iterations",
//!         "latency": LATENCY, "endpoints": [ { "name", "count", "ok", "errors", "throughput",
//!         "latency": LATENCY, "errors_by_kind": { "400": n, "timeout": n, ... },
//!         "checkouts": { "first_time", "already_paid", "rejected", "other" } | null } ],
//!         "timeline": [ { "t_s", "duration_s", "requests", "errors", "throughput",
//!         "first_time", "p50_ms", "p95_ms", "p99_ms", "max_ms", "by_endpoint": { name: n } } ],
//!         "connections_opened", "schedule_lag": LATENCY | null,
//!         "loadgen_cpu_s", "loadgen_cpu_util", "cluster": CLUSTER | null }
//! LATENCY = { "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms" }
//! ```
//!
//! Throughput is requests (or iterations) per second over the run's duration, which
//! includes the spawn ramp. An error is any answer outside 2xx, a transport failure or a
//! body that breaks the API's promise.

use super::procs::ClusterUsage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Version of the JSON layout, raised when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Where it ran.
    pub machine: Machine,
    /// What was asked for.
    pub settings: Settings,
    /// The batch_init calls of `--init`, in order (empty without it).
    pub init: Vec<InitCall>,
    /// The run against the target; `None` with `--ceiling-only`.
    pub run: Option<RunReport>,
    /// The same load against nginx answering directly (`--ceiling`).
    pub ceiling: Option<RunReport>,
    /// The run's throughput divided by the ceiling's, when both exist.
    pub ceiling_ratio: Option<f64>,
}

/// The machine the generator ran on (the cluster too, on loopback).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available to this process.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// MemTotal of /proc/meminfo, in MiB.
    pub memory_mib: u64,
}

impl Machine {
    /// This machine, as far as /proc tells.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_mib: memory_kib / 1024,
        }
    }
}

/// The settings of the run, as given.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// The target's base URL.
    pub host: String,
    /// Virtual users (connections).
    pub users: usize,
    /// Users started per second; 0 starts all at once.
    pub spawn_rate: f64,
    /// The run's length (s).
    pub run_time_s: f64,
    /// Open model: iterations started per second; `None` for the closed model.
    pub rate: Option<f64>,
    /// Closed model: wait between a user's iterations (s), min and max.
    pub wait_s: Option<(f64, f64)>,
    /// Scenario weights.
    pub scenarios: BTreeMap<String, u32>,
    /// Per-request timeout (s).
    pub timeout_s: f64,
    /// Bound on the requests sent.
    pub max_requests: u64,
    /// Seed of the users' random choices.
    pub seed: u64,
    /// The batch-initialised key space (and what `--init` wrote).
    pub keys: super::scenario::Keys,
}

/// One batch_init call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitCall {
    /// The path posted.
    pub path: String,
    /// Its status.
    pub status: u16,
    /// How long it took (s).
    pub seconds: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// What the checkouts answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutCounts {
    /// 200 "Checkout successful".
    pub first_time: u64,
    /// 200 "Order is already paid".
    pub already_paid: u64,
    /// 400.
    pub rejected: u64,
    /// Any other answer (another status, or another 200 body, e.g. the ceiling's).
    pub other: u64,
}

/// One endpoint over the whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Method and path with placeholders.
    pub name: String,
    /// Requests that got an answer or failed.
    pub count: u64,
    /// 2xx answers that passed their checks.
    pub ok: u64,
    /// The others.
    pub errors: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency of all its requests, failed ones included.
    pub latency: Latency,
    /// Errors by status code or failure (`connect`, `timeout`, `io`, `bad_body`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Checkout outcomes (the checkout endpoint only).
    pub checkouts: Option<CheckoutCounts>,
}

/// One interval of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    /// Its length (s).
    pub duration_s: f64,
    /// Requests completed in it.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Requests per second in it.
    pub throughput: f64,
    /// Checkouts in it that paid their order ("Checkout successful"); the rest of a checkout
    /// run's rate is mostly repeats of paid orders, which cost one read.
    #[serde(default)]
    pub first_time: u64,
    /// Median latency in it.
    pub p50_ms: f64,
    /// 95th percentile in it.
    pub p95_ms: f64,
    /// 99th percentile in it.
    pub p99_ms: f64,
    /// Largest latency in it.
    pub max_ms: f64,
    /// Requests per endpoint in it.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// One run (against the target, or the ceiling).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The base URL loaded.
    pub target: String,
    /// From the first user's start until the last request ended (s).
    pub duration_s: f64,
    /// Requests sent (answered or failed).
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Scenario iterations started.
    pub iterations: u64,
    /// Latency over all endpoints.
    pub latency: Latency,
    /// Per endpoint that saw requests.
    pub endpoints: Vec<EndpointReport>,
    /// Per interval.
    pub timeline: Vec<IntervalReport>,
    /// TCP connections opened (one per user, plus reconnects after the server closed one).
    pub connections_opened: u64,
    /// Open model: how late iterations started against their schedule; a large lag means
    /// the users could not keep up with the rate.
    pub schedule_lag: Option<Latency>,
    /// CPU seconds the generator used during the run.
    pub loadgen_cpu_s: f64,
    /// The generator's CPU use as a share of one core; near 1.0 the generator itself was
    /// the bottleneck.
    pub loadgen_cpu_util: f64,
    /// CPU and memory of the cluster's processes, when its manifest was found.
    pub cluster: Option<ClusterUsage>,
}

impl RunReport {
    /// The endpoint report called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointReport> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

fn fmt_latency(l: &Latency) -> String {
    format!("{:>8.2} {:>8.2} {:>8.2} {:>8.2}", l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms)
}

/// A run as a table: one line per endpoint and a total, then checkouts, errors and usage.
pub fn run_text(title: &str, r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{title}: {} — {:.1} s, {} requests, {:.0} req/s, {} errors, {} iterations, {} connections",
        r.target, r.duration_s, r.requests, r.throughput, r.errors, r.iterations, r.connections_opened
    );
    let _ = writeln!(
        s,
        "  {:<52} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "endpoint", "count", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for e in &r.endpoints {
        let _ = writeln!(
            s,
            "  {:<52} {:>9} {:>7} {:>9.1} {}",
            e.name,
            e.count,
            e.errors,
            e.throughput,
            fmt_latency(&e.latency)
        );
    }
    let _ = writeln!(
        s,
        "  {:<52} {:>9} {:>7} {:>9.1} {}",
        "total",
        r.requests,
        r.errors,
        r.throughput,
        fmt_latency(&r.latency)
    );
    for e in &r.endpoints {
        if let Some(c) = e.checkouts {
            let _ = writeln!(
                s,
                "  checkouts: {} first-time ({:.1}/s), {} already paid, {} rejected (400), {} other",
                c.first_time,
                super::stats::per_second(c.first_time, r.duration_s),
                c.already_paid,
                c.rejected,
                c.other
            );
        }
        if !e.errors_by_kind.is_empty() {
            let kinds: Vec<String> = e.errors_by_kind.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(s, "  errors of {}: {}", e.name, kinds.join(", "));
        }
    }
    if let Some(l) = &r.schedule_lag {
        let _ = writeln!(
            s,
            "  start lag behind the rate (ms): p50 {:.2}, p99 {:.2}, max {:.2}",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let _ =
        writeln!(s, "  load generator: {:.2} CPU s, {:.0}% of one core", r.loadgen_cpu_s, r.loadgen_cpu_util * 100.0);
    if let Some(c) = &r.cluster {
        s.push_str(&c.text(r.requests));
    }
    s
}

/// The whole report as text.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "machine: {} cores, {}, {} MiB", m.nproc, m.cpu_model, m.memory_mib);
    for c in &r.init {
        let _ = writeln!(s, "init: POST {} -> {} in {:.2} s", c.path, c.status, c.seconds);
    }
    if let Some(run) = &r.run {
        s.push_str(&run_text("run", run));
    }
    if let Some(c) = &r.ceiling {
        s.push_str(&run_text("ceiling (nginx answering directly)", c));
    }
    if let Some(ratio) = r.ceiling_ratio {
        let _ = writeln!(s, "throughput / gateway ceiling: {ratio:.4} ({:.2}%)", ratio * 100.0);
    }
    s
}
