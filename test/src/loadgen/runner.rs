//! Executing a run: every virtual user is a task on one thread (a current-thread tokio
//! runtime and a `LocalSet`), with its own keep-alive connection; users start at the spawn
//! rate and repeat weighted scenarios until the run time or the request bound is reached.
//!
//! Two models, as locust and wrk2 know them:
//! - closed (default): a user starts its next iteration when the last one ended (after an
//!   optional random wait), so the load adapts to the system's speed;
//! - open (`rate`): iterations are scheduled at a fixed rate over all users (user `i` takes
//!   the slots `i, i + users, i + 2 * users, ...`), so a slow system falls behind the
//!   schedule instead of being offered less; the lag is reported, and enough users are
//!   needed to keep the rate (each has one request in flight at a time).
//!
//! Everything shared between the users lives in one `Rc` (no locks, no atomics): they all run
//! on this thread.

use super::http::Conn;
use super::procs;
use super::report::RunReport;
use super::scenario::{Endpoint, Keys, Scenario, Weighted, MIXED_MAX_QUANTITY};
use super::stats::{classify_checkout, per_second, CheckoutOutcome, Failure, Recorder};
use cluster::manifest::Manifest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The base URL (for the report).
    pub target: String,
    /// Where the users connect.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Virtual users, one connection each.
    pub users: usize,
    /// Users started per second; 0 starts all at once.
    pub spawn_rate: f64,
    /// Length of the run, spawn ramp included.
    pub run_time: Duration,
    /// Open model: iterations started per second over all users.
    pub rate: Option<f64>,
    /// Closed model: a random wait between a user's iterations, in `[min, max]`.
    pub wait: Option<(Duration, Duration)>,
    /// The scenarios and their weights.
    pub scenarios: Weighted<Scenario>,
    /// Bound on one request (connecting included).
    pub timeout: Duration,
    /// Bound on the requests sent; the run stops when it is reached.
    pub max_requests: u64,
    /// Seed of the users' random choices (user `i` uses `seed + i`).
    pub seed: u64,
    /// The batch-initialised key space.
    pub keys: Keys,
    /// Length of one timeline interval.
    pub interval: Duration,
    /// Accept any 2xx body and make up ids (the gateway ceiling answers "ok" to everything).
    pub lenient: bool,
    /// The cluster's manifest, to measure its processes' CPU and memory.
    pub manifest: Option<PathBuf>,
    /// Print one line per interval on stderr.
    pub progress: bool,
}

/// State the users share.
struct Shared {
    /// The run's settings.
    spec: RunSpec,
    /// The counters.
    rec: RefCell<Recorder>,
    /// Requests sent so far (the bound counts these).
    sent: Cell<u64>,
    /// Iterations started.
    iterations: Cell<u64>,
    /// Connections the users opened (added when a user ends).
    opened: Cell<u64>,
    /// No new request starts after this.
    deadline: Instant,
    /// When the run started.
    start: Instant,
}

impl Shared {
    /// Takes one request from the budget: false once the run time or the request bound is
    /// reached.
    fn take_request(&self) -> bool {
        if self.sent.get() >= self.spec.max_requests || Instant::now() >= self.deadline {
            return false;
        }
        self.sent.set(self.sent.get() + 1);
        true
    }
}

/// What a step of a scenario came to.
enum Step<T> {
    /// The step succeeded with this value.
    Ok(T),
    /// It failed (recorded); the iteration is abandoned.
    Failed,
    /// The run is over.
    Stop,
}

/// A virtual user.
struct User {
    shared: Rc<Shared>,
    conn: Conn,
    rng: StdRng,
}

/// Takes the first string field `field` of a small JSON object.
fn json_str(body: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(field)?.as_str().map(str::to_string)
}

fn ok_status(status: u16) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Failure::Status(status))
    }
}

impl User {
    /// Sends one request, records it, and checks the answer with `check`.
    async fn call<T>(
        &mut self,
        ep: Endpoint,
        path: String,
        check: impl FnOnce(u16, &[u8]) -> Result<T, Failure>,
    ) -> Step<T> {
        if !self.shared.take_request() {
            return Step::Stop;
        }
        let t0 = Instant::now();
        let res = self.conn.send(ep.is_get(), path).await;
        let latency = t0.elapsed();
        let (outcome, value) = match res {
            Ok((status, body)) => {
                if ep == Endpoint::Checkout {
                    self.shared.rec.borrow_mut().record_checkout(classify_checkout(status, &body));
                }
                match check(status, &body) {
                    Ok(v) => (Ok(()), Some(v)),
                    Err(f) => (Err(f), None),
                }
            }
            Err(f) => (Err(f), None),
        };
        self.shared.rec.borrow_mut().record(ep, latency, outcome);
        match value {
            Some(v) => Step::Ok(v),
            None => Step::Failed,
        }
    }

    /// A 2xx answer whose body holds the string field `field` (made up when lenient).
    async fn call_id(&mut self, ep: Endpoint, path: String, field: &'static str) -> Step<String> {
        let lenient = self.shared.spec.lenient;
        self.call(ep, path, |status, body| {
            ok_status(status)?;
            if lenient {
                return Ok("0".to_string());
            }
            json_str(body, field).ok_or(Failure::BadBody)
        })
        .await
    }

    /// A 2xx answer.
    async fn call_ok(&mut self, ep: Endpoint, path: String) -> Step<()> {
        self.call(ep, path, |status, _| ok_status(status)).await
    }

    /// Runs one iteration of `s`; false when the run is over.
    async fn iterate(&mut self, s: Scenario) -> bool {
        let keys = self.shared.spec.keys;
        let lenient = self.shared.spec.lenient;
        match s {
            Scenario::Checkout => {
                let order = self.rng.gen_range(0..keys.orders.max(1));
                !matches!(self.call_ok(Endpoint::Checkout, format!("/orders/checkout/{order}")).await, Step::Stop)
            }
            Scenario::FindStock => {
                let item = self.rng.gen_range(0..keys.items.max(1));
                let step = self
                    .call(Endpoint::FindStock, format!("/stock/find/{item}"), |status, body| {
                        ok_status(status)?;
                        if lenient
                            || serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["stock"].is_i64())
                        {
                            Ok(())
                        } else {
                            Err(Failure::BadBody)
                        }
                    })
                    .await;
                !matches!(step, Step::Stop)
            }
            Scenario::Mixed => !matches!(self.mixed(keys, lenient).await, Step::Stop),
        }
    }

    /// The shopper: create user, add funds, create order, two items, checkout, find.
    async fn mixed(&mut self, keys: Keys, lenient: bool) -> Step<()> {
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Step::Ok(v) => v,
                    Step::Failed => return Step::Failed,
                    Step::Stop => return Step::Stop,
                }
            };
        }
        let user = step!(self.call_id(Endpoint::CreateUser, "/payment/create_user".into(), "user_id").await);
        let funds = keys.mixed_funds();
        step!(self.call_ok(Endpoint::AddFunds, format!("/payment/add_funds/{user}/{funds}")).await);
        let order = step!(self.call_id(Endpoint::CreateOrder, format!("/orders/create/{user}"), "order_id").await);
        for _ in 0..2 {
            let item = self.rng.gen_range(0..keys.items.max(1));
            let qty = self.rng.gen_range(1..=MIXED_MAX_QUANTITY);
            step!(self.call_ok(Endpoint::AddItem, format!("/orders/addItem/{order}/{item}/{qty}")).await);
        }
        // The user can pay for any order the scenario makes, and batch items hold plenty of
        // stock: this checkout must succeed now.
        step!(
            self.call(Endpoint::Checkout, format!("/orders/checkout/{order}"), |status, body| {
                ok_status(status)?;
                if lenient || classify_checkout(status, body) == CheckoutOutcome::FirstTime {
                    Ok(())
                } else {
                    Err(Failure::BadBody)
                }
            })
            .await
        );
        step!(
            self.call(Endpoint::FindOrder, format!("/orders/find/{order}"), |status, body| {
                ok_status(status)?;
                let paid = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["paid"] == true);
                if lenient || paid {
                    Ok(())
                } else {
                    Err(Failure::BadBody)
                }
            })
            .await
        );
        Step::Ok(())
    }
}

/// One user's life: wait for its start, then iterate until the run is over.
async fn user_loop(shared: Rc<Shared>, idx: usize) {
    let spec = &shared.spec;
    if spec.spawn_rate > 0.0 {
        let at = shared.start + Duration::from_secs_f64(idx as f64 / spec.spawn_rate);
        if at >= shared.deadline {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
    }
    let mut user = User {
        conn: Conn::new(spec.addr, &spec.host, spec.timeout),
        rng: StdRng::seed_from_u64(spec.seed.wrapping_add(idx as u64)),
        shared: shared.clone(),
    };
    let users = spec.users as u64;
    let mut slot = idx as u64;
    loop {
        if let Some(rate) = spec.rate {
            let at = shared.start + Duration::from_secs_f64(slot as f64 / rate);
            slot += users;
            if at >= shared.deadline {
                break;
            }
            let now = Instant::now();
            if now < at {
                tokio::time::sleep_until(at.into()).await;
            }
            shared.rec.borrow_mut().record_lag(Instant::now().saturating_duration_since(at));
        }
        shared.iterations.set(shared.iterations.get() + 1);
        let s = *spec.scenarios.pick_with(&mut user.rng);
        if !user.iterate(s).await {
            break;
        }
        if let Some((min, max)) = spec.wait {
            let w = if max > min { user.rng.gen_range(min..=max) } else { min };
            let until = (Instant::now() + w).min(shared.deadline);
            tokio::time::sleep_until(until.into()).await;
        }
        if Instant::now() >= shared.deadline {
            break;
        }
    }
    shared.opened.set(shared.opened.get() + user.conn.opened);
}

/// Runs `spec` on this thread (it builds its own runtime) and reports.
pub fn run(spec: RunSpec) -> anyhow::Result<RunReport> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let manifest = spec.manifest.as_ref().and_then(|p| Manifest::load(p).ok());
    let before = manifest.as_ref().map(procs::snapshot);
    let cpu0 = procs::thread_cpu_s();
    let start = Instant::now();
    let shared = Rc::new(Shared {
        rec: RefCell::new(Recorder::new(start)),
        sent: Cell::new(0),
        iterations: Cell::new(0),
        opened: Cell::new(0),
        deadline: start + spec.run_time,
        start,
        spec,
    });
    local.block_on(&rt, async {
        let users: Vec<_> =
            (0..shared.spec.users).map(|i| tokio::task::spawn_local(user_loop(shared.clone(), i))).collect();
        let ticker = tokio::task::spawn_local(tick(shared.clone()));
        for u in users {
            let _ = u.await;
        }
        ticker.abort();
    });
    // The aborted ticker holds a reference until its task is dropped with the set.
    drop(local);
    drop(rt);
    let end = Instant::now();
    let cpu_s = procs::thread_cpu_s() - cpu0;
    let cluster = match (manifest, before) {
        (Some(m), Some(b)) => Some(procs::usage(&b, &procs::snapshot(&m))),
        _ => None,
    };
    let shared = Rc::try_unwrap(shared).map_err(|_| anyhow::anyhow!("a user task outlived the run"))?;
    let mut rec = shared.rec.into_inner();
    // The last, partial interval (if anything happened in it).
    let last_t = rec.timeline_end();
    if end.saturating_duration_since(last_t) > Duration::from_millis(50) {
        rec.close_interval(end);
    }
    let secs = end.saturating_duration_since(start).as_secs_f64();
    let requests = rec.requests();
    let f = rec.finish(secs);
    let errors = f.endpoints.iter().map(|e| e.errors).sum();
    Ok(RunReport {
        target: shared.spec.target.clone(),
        duration_s: secs,
        requests,
        errors,
        throughput: per_second(requests, secs),
        iterations: shared.iterations.get(),
        latency: f.latency,
        endpoints: f.endpoints,
        timeline: f.timeline,
        connections_opened: shared.opened.get(),
        schedule_lag: f.lag,
        loadgen_cpu_s: cpu_s,
        loadgen_cpu_util: cpu_s / secs.max(1e-9),
        cluster,
    })
}

/// Closes a timeline interval every `interval` and prints it when asked to.
async fn tick(shared: Rc<Shared>) {
    let mut next = shared.start + shared.spec.interval;
    loop {
        tokio::time::sleep_until(next.into()).await;
        let line = {
            let mut rec = shared.rec.borrow_mut();
            let i = rec.close_interval(Instant::now());
            let mut line = format!(
                "{:>6.1} s  {:>9.0} req/s  {:>6} errors  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
                i.t_s, i.throughput, i.errors, i.p50_ms, i.p99_ms, i.max_ms
            );
            if i.first_time > 0 {
                line += &format!("  first-time {:>6.0}/s", super::stats::per_second(i.first_time, i.duration_s));
            }
            line
        };
        if shared.spec.progress {
            eprintln!("{line}");
        }
        next += shared.spec.interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_from_json_replies() {
        assert_eq!(json_str(br#"{"user_id":"abc"}"#, "user_id").as_deref(), Some("abc"));
        assert_eq!(json_str(br#"{"user_id":1}"#, "user_id"), None);
        assert_eq!(json_str(b"not json", "user_id"), None);
        assert!(ok_status(204).is_ok());
        assert_eq!(ok_status(400), Err(Failure::Status(400)));
    }
}
