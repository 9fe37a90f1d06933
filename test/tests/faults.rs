//! Fault scenarios on three replicas per service: processes killed (-9) or paused (SIGSTOP)
//! while requests run, and a coordinator cut off from one replica only. They run one at a
//! time (the `cluster` test group) and each reads as: fault, load, then what must hold.

mod support;

use model::topology::Service;
use model::wire::View;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::adds::{adds, assert_adds_kept, reached, tally, Add};
use support::{start, Node};
use webshop_tests::{run_parallel, Api};

/// A cluster of three replicas per service with `items` stock items "0".."items-1" (stock 0,
/// price 1), and a client of its gateway.
async fn with_items(items: usize) -> (support::TestCluster, Api) {
    let c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok(&format!("/stock/batch_init/{items}/0/1")).await;
    (c, api)
}

/// kill -9 the primary of a third of the items while adds to every item run: no
/// acknowledged add is lost, on any replica, and any excess comes from adds whose answer the
/// client never saw. Prints the time from the kill to the first write answered on a key the
/// killed replica was primary of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_during_concurrent_adds_loses_no_acknowledged_add() {
    const ITEMS: usize = 30;
    const ADDS: usize = 900;
    let (mut c, api) = with_items(ITEMS).await;
    let victim = 1;
    let owned: Vec<usize> = (0..ITEMS).filter(|i| View::initial(3).primary(&i.to_string()) == Some(victim)).collect();
    assert!(!owned.is_empty());

    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (api, done) = (api.clone(), done.clone());
        async move { adds(&api, ADDS, ITEMS, done).await }
    });
    reached(&done, ADDS / 4).await;
    c.kill(Node::Replica(Service::Stock, victim));
    let killed = Instant::now();
    let results = load.await.unwrap();

    let first = results
        .iter()
        .filter(|a| a.sent > killed && owned.contains(&a.item) && a.status == Ok(200))
        .map(|a| a.done - killed)
        .min()
        .expect("writes to the killed primary's keys were answered after the kill");
    println!("first write on a key of the killed primary answered {first:?} after the kill");
    let (acked, unknown) = tally(&results, ITEMS);
    println!("unanswered adds: {}", results.iter().filter(|a| a.status != Ok(200)).count());
    assert!(results.iter().all(|a| !matches!(a.status, Ok(s) if s >= 500)), "a 5xx answered an add");

    c.start_again(Node::Replica(Service::Stock, victim)).await;
    c.wait_all_members(Service::Stock, Duration::from_secs(30)).await;
    c.assert_replicas_equal(Service::Stock).await;
    assert_adds_kept(&api, &acked, &unknown).await;
}

/// One coordinator of stock is cut off from one replica only (the test-only fault hook):
/// it evicts that replica while the other coordinator still reaches it, so for a while the
/// two disagree. Adds through both coordinators: none lost, none doubled; healed, the
/// replica re-joins with the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cut_off_from_one_replica_loses_and_doubles_nothing() {
    const ITEMS: usize = 30;
    const ADDS: usize = 600;
    let c = start(3).await;
    let coordinators: Vec<Api> =
        c.topology().stock.coordinators.iter().map(|a| Api::new(&format!("http://{a}"))).collect();
    coordinators[0].post_ok(&format!("/stock/batch_init/{ITEMS}/0/1")).await;
    let cut = 2;
    assert_eq!(c.coordinator_post(Service::Stock, 0, &format!("/internal/fault/cut/{cut}")).await, 200);

    // Half the adds go to each coordinator.
    let done = Arc::new(AtomicUsize::new(0));
    let halves =
        futures::future::join_all(coordinators.iter().map(|api| adds(api, ADDS / 2, ITEMS, done.clone()))).await;
    let results: Vec<Add> = halves.into_iter().flatten().collect();
    assert!(results.iter().all(|a| a.status == Ok(200)), "every add is answered 200 with one replica cut off");
    let (acked, unknown) = tally(&results, ITEMS);

    // The cut-off coordinator evicted the replica; the other follows the committed view.
    let status = c.coordinator_status(Service::Stock, 0).await;
    let state = |s: &serde_json::Value| s["members"][cut as usize]["state"].as_str().unwrap().to_string();
    assert_eq!(state(&status), "evicted", "{status}");
    assert_eq!(c.coordinator_post(Service::Stock, 0, &format!("/internal/fault/heal/{cut}")).await, 200);
    c.wait_all_members(Service::Stock, Duration::from_secs(30)).await;
    c.assert_replicas_equal(Service::Stock).await;
    for api in &coordinators {
        assert_adds_kept(api, &acked, &unknown).await;
    }
    let sum: i64 = acked.iter().sum();
    assert_eq!(sum, results.iter().map(|a| a.amount).sum::<i64>());
}

/// The course consistency scenario while one replica of every service is dead and one order
/// coordinator is paused for 8 s as the checkouts start: still exactly 100 successes, stock
/// 0, credit 900, no 5xx; afterwards every replica is back, a full member, and equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_holds_with_a_replica_of_each_service_dead_and_a_coordinator_paused() {
    consistency_with_faults("log").await;
}

/// [`the_consistency_scenario_holds_with_a_replica_of_each_service_dead_and_a_coordinator_paused`]
/// on the MongoDB engine (one SecantusDB server per replica): the same promises as on the
/// embedded engine, no 5xx included. Passed 3 of 3 runs with the debug build and 1 of 1 with
/// the release build on 2026-12-06 (before, in earlier sessions: 89 and 110 checkouts
/// answered 5xx with the release build, fixed since by the coordinator's retries of a
/// primary that answers its re-probe and of reads refused for want of a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consistency_scenario_holds_on_mongo_with_a_replica_of_each_service_dead_and_a_coordinator_paused() {
    consistency_with_faults("mongo").await;
}

async fn consistency_with_faults(engine: &str) {
    let mut c = support::start_on(3, engine).await;
    let api = Api::new(&c.gateway_url());
    let setup = webshop_tests::consistency::setup(&api).await;
    for s in Service::ALL {
        c.kill(Node::Replica(s, 2));
    }
    c.pause(Node::Coordinator(Service::Order, 0));
    let paused = Instant::now();
    let resume = async {
        tokio::time::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed())).await;
        c.resume(Node::Coordinator(Service::Order, 0));
    };
    webshop_tests::consistency::holds_while(&api, &setup, resume).await;

    for s in Service::ALL {
        c.start_again(Node::Replica(s, 2)).await;
    }
    for s in Service::ALL {
        c.wait_all_members(s, Duration::from_secs(30)).await;
        c.assert_replicas_equal(s).await;
    }
}

/// A stock replica is killed and started again from a copy of its data folder taken 100 adds
/// earlier (a restored backup, a disk that lost recent writes), without leaving the view. Its
/// peers hold newer states of the items it is primary of; they must refuse its writes over
/// the older states instead of acknowledging them, and it must catch up and decide again.
/// Before, all 120 adds were acknowledged and anti-entropy then replaced the restarted
/// primary's writes with its peers' newer states: 9 acknowledged units lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_from_older_data_acknowledges_no_write_it_lost() {
    const ITEMS: usize = 20;
    let (mut c, api) = with_items(ITEMS).await;
    let victim = 1;
    let owned: Vec<usize> = (0..ITEMS).filter(|i| View::initial(3).primary(&i.to_string()) == Some(victim)).collect();
    assert!(!owned.is_empty());
    let data = c.data_dir(Service::Stock, victim);
    let copy = data.with_file_name("stock-1-copy");
    let cp = std::process::Command::new("cp").arg("-a").arg(&data).arg(&copy).status().unwrap();
    assert!(cp.success());

    let first = adds(&api, 100, ITEMS, Arc::new(AtomicUsize::new(0))).await;
    assert!(first.iter().all(|a| a.status == Ok(200)), "every add before the restart is acknowledged");
    c.kill(Node::Replica(Service::Stock, victim));
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&copy, &data).unwrap();
    c.start_again(Node::Replica(Service::Stock, victim)).await;

    // One add to each item the restarted replica is primary of, then 20 more over all items.
    let second = run_parallel(owned.len(), 4, |i| {
        let (api, item) = (api.clone(), owned[i]);
        async move { Add::send(&api, item, 1).await }
    })
    .await;
    let third = adds(&api, 20, ITEMS, Arc::new(AtomicUsize::new(0))).await;
    let results: Vec<Add> = first.into_iter().chain(second).chain(third).collect();
    let (acked, unknown) = tally(&results, ITEMS);
    println!("unanswered adds: {}", results.iter().filter(|a| a.status != Ok(200)).count());

    // The restarted replica's other stale copies are repaired by anti-entropy: one round now.
    assert_eq!(c.coordinator_post(Service::Stock, 0, "/admin/anti-entropy").await, 200);
    c.wait_all_members(Service::Stock, Duration::from_secs(30)).await;
    c.assert_replicas_equal(Service::Stock).await;
    assert_adds_kept(&api, &acked, &unknown).await;
}

/// Checkouts in flight when their order's primary is paused past the eviction timeout, with
/// both order coordinators killed so that nobody retries for the client: the replicas that
/// become the orders' primaries finish them, without any order endpoint being called. Every
/// order is one unit of the one item for one credit, so the checkouts are settled once the
/// credit spent equals the stock taken (a checkout that paid and has no stock yet is the
/// difference). Before, those checkouts stayed half done until a request touched the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_in_flight_on_a_deposed_primary_are_finished_without_a_request() {
    use webshop_tests::consistency::{STOCK, USERS};
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    let setup = webshop_tests::consistency::setup(&api).await;

    // Checkouts, 100 in flight, until told to stop sending new ones.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (api, orders, stop, done) = (api.clone(), setup.orders.clone(), stop.clone(), done.clone());
        async move {
            run_parallel(orders.len(), 100, |i| {
                let (api, o, stop, done) = (api.clone(), orders[i].clone(), stop.clone(), done.clone());
                async move {
                    if !stop.load(Ordering::SeqCst) {
                        let _ = api.try_send("POST", &format!("/orders/checkout/{o}"), None).await;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
        }
    });
    reached(&done, 150).await;
    let victim = Node::Replica(Service::Order, 0);
    c.pause(victim);
    stop.store(true, Ordering::SeqCst);
    for id in 0..2 {
        c.kill(Node::Coordinator(Service::Order, id));
    }
    for id in 0..2 {
        c.start_again(Node::Coordinator(Service::Order, id)).await;
    }
    load.await.unwrap();

    // Without any order request: the credit spent and the stock taken meet.
    let start = Instant::now();
    let (mut spent, mut taken);
    loop {
        spent = USERS as i64 - api.total_credit(USERS, 32).await;
        taken = STOCK as i64 - api.item(&setup.item).await.0;
        if spent == taken {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "credit spent {spent}, stock taken {taken}: checkouts left half done"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("settled {:?} after the pause: {taken} checkouts paid", start.elapsed());
    c.resume(victim);
    // Now the orders may be read (through a coordinator: nginx still counts both as failed
    // for a few seconds after their kill): as many are paid as were charged.
    let orders = Api::new(&format!("http://{}", c.topology().order.coordinators[0]));
    let paid = run_parallel(setup.orders.len(), 32, |i| {
        let (orders, o) = (orders.clone(), setup.orders[i].clone());
        async move { orders.order(&o).await["paid"].as_bool().unwrap() }
    })
    .await;
    assert_eq!(paid.iter().filter(|p| **p).count() as i64, taken);
    assert_eq!(STOCK as i64 - api.item(&setup.item).await.0, taken);
    assert_eq!(USERS as i64 - api.total_credit(USERS, 32).await, taken);
}

/// A tmpfs mounted over a folder for the length of a test (lazily unmounted when dropped:
/// the replica still has its files open).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` over `dir`; `Err` says why it could not (no root, no mount).
    fn mount(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file `filler` until no byte is left.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.flush();
    path
}

/// A stock replica whose store cannot write (its data folder on a full 3 MiB tmpfs): the
/// replica reports itself unhealthy, is evicted, and the service keeps writing on the others;
/// with space again, it re-joins with the same data. Before, every add to the items it held
/// answered 500 or 503 for as long as the disk was full, and it stayed up in every view
/// because `/health` ignored the store. Skips, saying why, where a tmpfs cannot be mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_store_cannot_write_is_evicted_and_rejoins_when_it_can() {
    const ITEMS: usize = 30;
    let (mut c, api) = with_items(ITEMS).await;
    let victim = 2;
    c.kill(Node::Replica(Service::Stock, victim));
    // Its data moves onto a tmpfs mounted over its folder; it starts again on it, a full
    // member with all its data.
    let data = c.data_dir(Service::Stock, victim);
    let aside = data.with_file_name("stock-2-aside");
    std::fs::rename(&data, &aside).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let _tmpfs = match Tmpfs::mount(&data, "3m") {
        Ok(t) => t,
        Err(why) => {
            println!("skipped: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let cp = std::process::Command::new("cp").arg("-a").arg(aside.join(".")).arg(&data).status().unwrap();
    assert!(cp.success());
    c.start_again(Node::Replica(Service::Stock, victim)).await;
    c.wait_all_members(Service::Stock, Duration::from_secs(30)).await;
    assert_eq!(api.post("/stock/add/0/1").await.status, 200);
    let status = c.coordinator_status(Service::Stock, 0).await;
    assert_eq!(status["members"][victim as usize]["state"], "up", "{status}");
    let filler = fill(&data);

    let results = adds(&api, 300, ITEMS, Arc::new(AtomicUsize::new(0))).await;
    let failed: Vec<String> =
        results.iter().filter(|a| a.status != Ok(200)).map(|a| format!("item {}: {:?}", a.item, a.status)).collect();
    assert!(
        failed.is_empty(),
        "{} of 300 adds not answered 200 while one replica's disk is full, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let (mut acked, unknown) = tally(&results, ITEMS);
    acked[0] += 1;
    let status = c.coordinator_status(Service::Stock, 0).await;
    assert_eq!(status["members"][victim as usize]["state"], "evicted", "{status}");

    std::fs::remove_file(filler).unwrap();
    c.wait_all_members(Service::Stock, Duration::from_secs(30)).await;
    c.assert_replicas_equal(Service::Stock).await;
    assert_adds_kept(&api, &acked, &unknown).await;
}
