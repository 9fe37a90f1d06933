//! What counting a request costs: the per-request metric calls of a coordinator and of a
//! replica, on one thread and on two at once (a node's actix workers on the 2-core machine),
//! and rendering `/metrics`. Uses only the API the call sites use (`Metrics::new`, `inc`,
//! `add`, `observe`, `render`, `labels`), so the same file builds against an older
//! `common::metrics` too (the module was there before it moved to `net`): copy it into that tree to compare the two.
//!
//! `cargo bench -p net --bench metrics`; `METRICS_BENCH_N` sets the requests per
//! measurement (default 1,000,000). Prints ns per request and µs per render.

use net::metrics::{labels, Metrics};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Route names of the kind the coordinators count under.
const ROUTES: [&str; 10] =
    ["create", "find", "add", "subtract", "pay", "add_funds", "checkout", "addItem", "batch_init", "multi"];
const STATUSES: [&str; 2] = ["200", "400"];

/// A coordinator's calls for one answered request (coordinator/src/routes.rs, `counted`).
fn coordinator_request(m: &Metrics, i: usize) {
    let route = ROUTES[i % ROUTES.len()];
    let status = STATUSES[(i / ROUTES.len()) % STATUSES.len()];
    m.inc("coordinator_requests_total", labels(&[("route", route), ("status", status)]));
    m.observe("coordinator_request_seconds", labels(&[("route", route)]), Duration::from_micros((i % 5000) as u64));
}

/// A replica's calls for one fan-out batch of two states (replica/src/server.rs).
fn replica_batch(m: &Metrics) {
    m.inc("replicate_batches_total", labels(&[]));
    m.add("replicated_states_total", labels(&[("applied", "true")]), 2);
    m.add("replicated_states_total", labels(&[("applied", "false")]), 0);
}

/// ns per call of `f` over `n` calls on each of `threads` threads sharing one registry.
fn per_call(threads: usize, n: usize, f: fn(&Metrics, usize)) -> f64 {
    let m = Arc::new(Metrics::new());
    (0..1000).for_each(|i| f(&m, i)); // every series exists, as in a warm node
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || (0..n).for_each(|i| f(&m, i)))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n: usize = std::env::var("METRICS_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    for threads in [1, 2] {
        let c = per_call(threads, n, coordinator_request);
        let r = per_call(threads, n, |m, _| replica_batch(m));
        println!("{threads} thread(s): coordinator request {c:.0} ns, replica batch {r:.0} ns (wall time per call per thread)");
    }
    let m = Metrics::new();
    (0..ROUTES.len() * STATUSES.len() * 3).for_each(|i| coordinator_request(&m, i));
    let renders = 2000;
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..renders {
        bytes += m.render().len();
    }
    println!(
        "render: {:.1} µs for {} bytes ({} route x status series, their histograms, process metrics if any)",
        start.elapsed().as_secs_f64() * 1e6 / renders as f64,
        bytes / renders,
        ROUTES.len() * STATUSES.len()
    );
}
