//! Membership scenarios: views changed by Paxos across real replica processes.

mod support;

use model::topology::Service;
use model::wire::{View, SECRET};
use support::{start, Node};
use webshop_tests::{run_parallel, Api};

async fn admin(c: &support::TestCluster, s: Service, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", c.topology().nodes(s).coordinators[0]))
        .header(SECRET, c.secret())
        .send()
        .await
        .unwrap()
}

async fn replica_view(c: &support::TestCluster, s: Service, id: usize) -> View {
    serde_json::from_value(c.replica_json(s, id, "/internal/view").await).unwrap()
}

/// A replica evicted by a committed view gets no more writes: it can then die without
/// stopping them, every replica learns the view, and the other coordinator follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_replica_is_out_of_the_write_path() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    let item = api.post_ok("/stock/item/create/1").await["item_id"].as_str().unwrap().to_string();

    // Without the secret the view cannot be changed.
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/view/evict/2", c.topology().stock.coordinators[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(replica_view(&c, Service::Stock, 0).await.epoch, 1);

    let r = admin(&c, Service::Stock, "/admin/view/evict/2").await;
    assert_eq!(r.status(), 200);
    let view: View = r.json().await.unwrap();
    assert_eq!((view.epoch, view.members.clone()), (2, vec![0, 1]));
    // The change is answered once a majority has the commit; the last replica gets it a
    // moment later (its send goes on in the background), so it is waited for.
    for id in 0..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = replica_view(&c, Service::Stock, id).await;
        while seen != view && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            seen = replica_view(&c, Service::Stock, id).await;
        }
        assert_eq!(seen, view, "replica {id} learned the view");
    }
    // A majority must stay: evicting a second replica is refused (the view stays).
    let r = admin(&c, Service::Stock, "/admin/view/evict/1").await;
    assert_eq!(r.json::<View>().await.unwrap(), view);

    c.kill(Node::Replica(Service::Stock, 2));
    // Both coordinators (nginx alternates) route writes by the new view.
    let statuses = run_parallel(100, 16, |_| {
        let (api, item) = (api.clone(), item.clone());
        async move { api.post(&format!("/stock/add/{item}/1")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(api.item(&item).await.0, 100);
    assert_eq!(c.root(Service::Stock, 0).await, c.root(Service::Stock, 1).await);
}

/// A replica killed without warning is evicted on the first failure that involves it: a
/// coordinator that cannot reach it as a primary, or a primary whose fan-out it does not
/// acknowledge, re-probes it and has it evicted by a committed view; every write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_evicted_and_writes_go_on() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    let items: Vec<String> = run_parallel(30, 8, |_| {
        let api = api.clone();
        async move { api.post_ok("/stock/item/create/1").await["item_id"].as_str().unwrap().to_string() }
    })
    .await;
    c.kill(Node::Replica(Service::Stock, 1));
    let statuses = run_parallel(items.len(), 8, |i| {
        let (api, item) = (api.clone(), items[i].clone());
        async move { api.post(&format!("/stock/add/{item}/1")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for item in &items {
        assert_eq!(api.item(item).await.0, 1, "item {item}");
    }
    for id in [0, 2] {
        let v = replica_view(&c, Service::Stock, id).await;
        assert_eq!((v.epoch, v.members.clone()), (2, vec![0, 2]), "replica {id}");
    }
    assert_eq!(c.root(Service::Stock, 0).await, c.root(Service::Stock, 2).await);
}

/// A killed replica that comes back is probed, re-joins as a learner, catches up, and is a
/// full member with the same data as the others within 30 s, without anyone's help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_rejoins_on_its_own() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/stock/batch_init/200/10/1").await;
    c.kill(Node::Replica(Service::Stock, 1));
    let killed = std::time::Instant::now();
    // Writes go on; the first one that needs replica 1 has it evicted.
    let statuses = run_parallel(200, 16, |i| {
        let api = api.clone();
        async move { api.post(&format!("/stock/add/{i}/1")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    println!("first 200 writes done {:?} after the kill", killed.elapsed());
    assert_eq!(replica_view(&c, Service::Stock, 0).await.members, vec![0, 2]);

    c.start_again(Node::Replica(Service::Stock, 1)).await;
    let took = c.wait_all_members(Service::Stock, std::time::Duration::from_secs(30)).await;
    println!("replica 1 a full member again {took:?} after its restart");
    c.assert_replicas_equal(Service::Stock).await;
    for i in (0..200).step_by(17) {
        assert_eq!(api.item(&i.to_string()).await.0, 11);
    }
}

/// A replica restarted with an empty store serves nothing while it is a full member without
/// data: the first request routed to it gets it evicted, the request is answered by the new
/// primary, and it re-joins with the others' data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_empty_rejoins_with_the_data() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/stock/batch_init/100/7/1").await;
    c.kill(Node::Replica(Service::Stock, 2));
    std::fs::remove_dir_all(c.data_dir(Service::Stock, 2)).unwrap();
    c.start_again(Node::Replica(Service::Stock, 2)).await;
    // Every item reads right, those whose primary was replica 2 included.
    for i in 0..100 {
        assert_eq!(api.item(&i.to_string()).await, (7, 1), "item {i}");
    }
    c.wait_all_members(Service::Stock, std::time::Duration::from_secs(30)).await;
    c.assert_replicas_equal(Service::Stock).await;
}

/// A replica paused (SIGSTOP) past the eviction timeout while writes go on is evicted;
/// resumed, it serves no stale read (its lease ran out while it was stopped), learns the
/// newer view, re-joins and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_is_evicted_and_rejoins_after_resume() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/stock/batch_init/60/5/1").await;
    c.pause(Node::Replica(Service::Stock, 0));
    let paused = std::time::Instant::now();
    let statuses = run_parallel(60, 16, |i| {
        let api = api.clone();
        async move { api.post(&format!("/stock/add/{i}/1")).await.status }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    println!("60 writes done {:?} after the pause", paused.elapsed());
    assert!(!replica_view(&c, Service::Stock, 1).await.members.contains(&0));
    c.resume(Node::Replica(Service::Stock, 0));
    let resumed = std::time::Instant::now();
    // Every read right after the resume shows the writes made while it was stopped.
    for i in 0..60 {
        assert_eq!(api.item(&i.to_string()).await.0, 6, "item {i}");
    }
    let took = c.wait_all_members(Service::Stock, std::time::Duration::from_secs(30)).await;
    println!("replica 0 a full member again {:?} after its resume", resumed.elapsed().max(took));
    c.assert_replicas_equal(Service::Stock).await;
}

/// A coordinator that gets no requests still learns a new view within a few seconds, so its
/// status page tells the current view. Before, coordinator 1 went on reporting an evicted
/// replica as up for as long as no request passed through it (seen for more than 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_traffic_learns_a_new_view() {
    let c = start(3).await;
    let r = admin(&c, Service::Stock, "/admin/view/evict/2").await;
    assert_eq!(r.status(), 200);
    let view: View = r.json().await.unwrap();
    assert_eq!(view.epoch, 2);
    // Nothing is sent to coordinator 1 but its own background work.
    let start = std::time::Instant::now();
    loop {
        let status = c.coordinator_status(Service::Stock, 1).await;
        let epoch = status["epoch"].as_u64().unwrap();
        if epoch >= view.epoch {
            println!("coordinator 1 learned epoch {epoch} after {:?}", start.elapsed());
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "coordinator 1 still at {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A node started with another secret than its peers (a Kubernetes Secret replaced after some
/// pods started reads so) logs that its peers refuse it and reports itself unhealthy, so that
/// no orchestrator counts it ready; started again with the cluster's secret, it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_secret_its_peers_refuse_says_so_and_is_not_healthy() {
    let mut c = start(3).await;
    for n in [Node::Coordinator(Service::Stock, 1), Node::Replica(Service::Stock, 2)] {
        let addr = c.addr(n);
        c.kill(n);
        let (mut cmd, log) = c.node_command_with_secret(n, "another-secret");
        let mut child = cmd.spawn().expect("node starts");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let (status, body) = loop {
            let r = http.get(format!("http://{addr}/health")).send().await;
            if let Ok(r) = r {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == 503 {
                    break (status, body);
                }
            }
            assert!(std::time::Instant::now() < deadline, "{n:?} with another secret still healthy after 30 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(status, 503);
        assert!(body.contains("the cluster secret is refused by"), "{n:?}: {body}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("refused this process's cluster secret"), "{n:?} did not log it:\n{logged}");
        child.kill().unwrap();
        child.wait().unwrap();
        c.start_again(n).await;
        let r = http.get(format!("http://{addr}/health")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{n:?} with the cluster's secret");
    }
}
