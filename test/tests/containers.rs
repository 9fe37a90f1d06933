//! The docker compose deployment, for real: every replica, store, coordinator and the gateway
//! in a container of its own on the project's network (scripts/compose.sh, on images built
//! here without a registry), killed, paused, crashed and cut off. They run one at a time (the
//! `cluster` test group); without a Docker engine they are skipped, except in CI.

mod support;

use model::topology::Service;
use model::wire::View;
use std::process::Command;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::adds::{adds, assert_adds_kept, reached, tally, Add};
use support::compose::{docker_available, ComposeCluster};
use webshop_tests::{consistency, Api};

/// How long every service has to be back to all members with one root after a fault ends.
const CONVERGE: Duration = Duration::from_secs(60);

/// The course's consistency scenario through the containerised gateway: exactly 100 checkouts
/// succeed, stock 0, credit 900. Then again while one replica container of each service is
/// killed (`docker kill`: a manual stop, which Docker's restart policy leaves stopped) and one
/// order coordinator container is paused for 8 s; then the killed ones are started and every
/// service is back to all members with one root within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_course_scenario_holds_in_containers_also_with_replicas_killed_and_a_coordinator_paused() {
    if !docker_available() {
        return;
    }
    let c = ComposeCluster::up().await;
    let api = Api::new(&c.gateway_url());
    let started = Instant::now();
    consistency::holds_while(&api, &consistency::setup(&api).await, async {}).await;
    eprintln!("course scenario in containers: {:.1} s", started.elapsed().as_secs_f64());

    let killed: Vec<String> = Service::ALL.iter().map(|s| ComposeCluster::replica(*s, 2)).collect();
    let faults = async {
        let mut args = vec!["kill"];
        args.extend(killed.iter().map(String::as_str));
        c.compose(&args);
        c.compose(&["pause", "order-coordinator-0"]);
        tokio::time::sleep(Duration::from_secs(8)).await;
        c.compose(&["unpause", "order-coordinator-0"]);
    };
    consistency::holds_while(&api, &consistency::setup(&api).await, faults).await;

    let mut args = vec!["start"];
    args.extend(killed.iter().map(String::as_str));
    c.compose(&args);
    let restarted = Instant::now();
    for s in Service::ALL {
        c.wait_converged(s, CONVERGE.saturating_sub(restarted.elapsed())).await;
    }
    eprintln!("all members with one root {:.1} s after the killed replicas started", restarted.elapsed().as_secs_f64());
}

/// `n` adds over `items` stock items, `fault` started once a fifth of them are answered;
/// returns every add with its answer, having checked that none was answered with a 5xx (a
/// majority of every service stays up under each fault here).
async fn adds_during(
    api: &Api,
    what: &str,
    n: usize,
    items: usize,
    fault: impl std::future::Future<Output = ()>,
) -> Vec<Add> {
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (api, done) = (api.clone(), done.clone());
        async move { adds(&api, n, items, done).await }
    });
    reached(&done, n / 5).await;
    let start = Instant::now();
    fault.await;
    let results = load.await.unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter(|a| matches!(a.status, Ok(s) if s >= 500))
        .map(|a| {
            format!("{:?} after the fault began: {:?} {}", a.done.saturating_duration_since(start), a.status, a.body)
        })
        .collect();
    assert!(failed.is_empty(), "{what}: {} adds answered with a 5xx: {failed:#?}", failed.len());
    results
}

/// The host pid of a container's main process.
fn main_pid(c: &ComposeCluster, service: &str) -> i32 {
    c.docker(&["inspect", "-f", "{{.State.Pid}}", &c.container(service)]).parse().expect("a pid")
}

/// Faults a container deployment must ride out with nothing acknowledged lost, each under
/// concurrent adds, checked after each (every item between its acknowledged adds and those
/// plus the unanswered ones, all replicas back as full members with one root):
/// - a real network partition: a stock replica's container disconnected from the project's
///   network (`docker network disconnect`) until the others evicted it, then reconnected:
///   it is re-admitted;
/// - a store container killed under its replica, then started again: the service keeps
///   answering adds meanwhile, and the replica recovers;
/// - a replica crashed (its process killed with SIGKILL from the host, not `docker kill`):
///   compose's restart policy brings it back by itself. Prints the time from the crash to the
///   first answered write on a key the crashed replica was primary of.
///
/// No add is answered with a 5xx under any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_store_kills_and_crashes_in_containers_lose_no_acknowledged_write() {
    if !docker_available() {
        return;
    }
    const ITEMS: usize = 30;
    const ADDS: usize = 1500;
    let c = ComposeCluster::up().await;
    let api = Api::new(&c.gateway_url());
    api.post_ok(&format!("/stock/batch_init/{ITEMS}/0/1")).await;
    let mut all: Vec<Add> = Vec::new();
    let check = |all: &[Add]| {
        let (acked, unknown) = tally(all, ITEMS);
        let api = api.clone();
        async move { assert_adds_kept(&api, &acked, &unknown).await }
    };

    // A network partition of stock replica 0.
    let victim = ComposeCluster::replica(Service::Stock, 0);
    let container = c.container(&victim);
    let evicted_by_peers = || async {
        for id in 1..3 {
            let peer = c.internal(&ComposeCluster::replica(Service::Stock, id), "/internal/view").await;
            if let Some(v) = peer.and_then(|v| serde_json::from_value::<View>(v).ok()) {
                if v.members.len() == 2 && v.members.iter().all(|m| *m != 0) {
                    return true;
                }
            }
        }
        false
    };
    let partition = async {
        c.docker(&["network", "disconnect", &c.network(), &container]);
        let cut = Instant::now();
        while !evicted_by_peers().await {
            assert!(cut.elapsed() < CONVERGE, "{victim} not evicted {CONVERGE:?} after its partition");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("{victim} evicted {:.1} s after its partition", cut.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.docker(&["network", "connect", "--alias", &victim, &c.network(), &container]);
    };
    all.extend(adds_during(&api, "a partition", ADDS, ITEMS, partition).await);
    let healed = c.wait_converged(Service::Stock, CONVERGE).await;
    eprintln!("{victim} re-admitted with one root {:.1} s after reconnecting", healed.as_secs_f64());
    check(&all).await;

    // A store killed under stock replica 1, started again after 5 s.
    let store = "stock-mongo-1";
    let store_fault = async {
        c.compose(&["kill", store]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        c.compose(&["start", store]);
    };
    let killed_at = Instant::now();
    let results = adds_during(&api, "a store killed", ADDS, ITEMS, store_fault).await;
    let served = results.iter().filter(|a| a.sent > killed_at && a.status == Ok(200)).count();
    assert!(served > 0, "no add answered while {store} was down");
    all.extend(results);
    c.wait_converged(Service::Stock, CONVERGE).await;
    check(&all).await;

    // A crash of stock replica 2's process: the restart policy brings it back.
    let crashed = ComposeCluster::replica(Service::Stock, 2);
    let owned: Vec<usize> = (0..ITEMS).filter(|i| View::initial(3).primary(&i.to_string()) == Some(2)).collect();
    let pid = main_pid(&c, &crashed);
    let mut crash_at = Instant::now();
    let crash = async {
        crash_at = Instant::now();
        let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill runs");
        assert!(killed.success(), "kill -9 {pid} ({crashed})");
    };
    // No 5xx: before, 37 of 1,500 adds were answered 503 ("replica 0: timed out") 16-21 s
    // after the crash. The killed process had left a transaction open on its store, which
    // blocked every write of the restarted replica (on the digests document) until the
    // server ended it; the fan-out to it timed out meanwhile. A replica now ends the
    // sessions left open on its own server when it opens its store.
    let results = adds_during(&api, "a crash", ADDS, ITEMS, crash).await;
    if let Some(first) = results
        .iter()
        .filter(|a| a.sent > crash_at && owned.contains(&a.item) && a.status == Ok(200))
        .map(|a| a.done - crash_at)
        .min()
    {
        eprintln!("first write on a key of the crashed primary answered {first:?} after the crash");
    }
    all.extend(results);
    c.wait_converged(Service::Stock, CONVERGE).await;
    assert_ne!(main_pid(&c, &crashed), pid, "{crashed} was restarted by its restart policy");
    check(&all).await;
}

/// nginx resolves its upstream servers' names once, when it loads its config: a coordinator
/// container recreated with another address was never used again (nginx kept trying the old
/// one; with the other coordinator of the service stopped, every request of that service
/// failed with 502). The gateway's entry point now reloads nginx when an address changes.
///
/// The other coordinator is stopped first: a stopped container's name does not resolve, and
/// the entry point used to reload only once every name resolved, so it never took the new
/// address up (CI at e5618d5 failed here when the stop came within a lookup interval of the
/// recreation; stopped first, it failed every time). Names that do not resolve now keep their
/// last address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_coordinator_with_a_new_address_is_used_by_the_gateway() {
    if !docker_available() {
        return;
    }
    let c = ComposeCluster::up().await;
    let api = Api::new(&c.gateway_url());
    let old = c.addr("order-coordinator-0").expect("an address");
    let other = c.addr("order-coordinator-1").expect("an address");
    c.compose(&["stop", "order-coordinator-1"]);
    c.compose(&["rm", "-s", "-f", "order-coordinator-0"]);
    // Other containers take the two freed addresses, so the recreated one gets a new one (and
    // not the stopped coordinator's, which nginx would still reach under the other name).
    let _fillers: Vec<Removed> = (0..2)
        .map(|_| {
            Removed(c.docker(&[
                "run",
                "-d",
                "--rm",
                "--network",
                &c.network(),
                "--entrypoint",
                "sleep",
                "webshop-gateway:local",
                "300",
            ]))
        })
        .collect();
    c.compose(&["up", "-d", "--no-deps", "order-coordinator-0"]);
    let new = c.addr("order-coordinator-0").expect("an address");
    let ip = |a: &str| a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default();
    assert!(
        ip(&new) != ip(&old) && ip(&new) != ip(&other),
        "the recreated coordinator got an old address ({new}; were {old}, {other}); the test shows nothing"
    );
    let since = Instant::now();
    loop {
        let r = api.post("/orders/create/someone").await;
        if r.status == 200 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the gateway still does not reach order-coordinator-0 at its new address {new} (was {old}): {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("the gateway used the new address {:.1} s after the recreation", since.elapsed().as_secs_f64());
}

/// A container of a test's own, removed when dropped, also when the test fails: one left
/// attached to the compose network keeps `compose down` from removing the network.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// The nemesis in container mode, for 60 s with a fixed seed: replica, coordinator and gateway
/// containers killed (`docker kill`, then started as a crash's restart would be), paused
/// (`docker pause`) and replicas disconnected from the network, under the counter, checkout and
/// create workloads; every checker holds (nothing acknowledged lost or applied twice, no 5xx
/// while a majority of each service was up, every service converged after the heal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nemesis_finds_nothing_in_containers() {
    if !docker_available() {
        return;
    }
    let c = ComposeCluster::up().await;
    let deployment = webshop_tests::nemesis::deployment::Deployment::Containers {
        project: c.project().to_string(),
        topology: c.topology().clone(),
    };
    let mut opts = webshop_tests::nemesis::Options::new(&c.gateway_url(), deployment, None);
    opts.seed = 17;
    opts.run_time = Duration::from_secs(60);
    let outcome = tokio::task::spawn_blocking(move || webshop_tests::nemesis::run(&opts)).await.unwrap().unwrap();
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nemesis-containers");
    webshop_tests::nemesis::report::write(&report, &outcome).unwrap();
    eprintln!("report and timeline in {}", report.display());
    let summary = webshop_tests::nemesis::report::summary(&outcome);
    eprintln!("{summary}");
    let kinds: std::collections::BTreeSet<&str> = outcome.history.faults.iter().map(|f| f.kind.as_str()).collect();
    assert!(kinds.contains("disconnect") && kinds.contains("kill") && kinds.contains("pause"), "{kinds:?}");
    assert!(outcome.valid, "{summary}");
}
