//! Anti-entropy scenarios: replicas that diverge (a store altered behind the system's back,
//! a replica paused past its eviction while writes go on) are found by their digests and
//! repaired, until every replica reports one root.

mod support;

use model::topology::Service;
use std::time::{Duration, Instant};
use store::log_engine::LogStore;
use store::{Expect, Put, Record, Store};
use support::{start, Node, TestCluster};
use webshop_tests::{run_parallel, Api};

/// Waits until every replica of `s` reports the same root and is a full member, at most
/// `within`; returns how long it took.
async fn wait_one_root(c: &TestCluster, s: Service, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let roots = c.roots(s).await;
        if roots.iter().all(|r| *r == roots[0]) {
            c.wait_all_members(s, within.saturating_sub(start.elapsed())).await;
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{s}: replicas still differ after {within:?}: {roots:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A replica's store is altered while it is down: one document gets other content under its
/// own version (as a corrupted or hand-edited copy would), one goes back to an older version
/// (a restored backup). Restarted, the replica is a full member with wrong data; an
/// anti-entropy round finds the divergent buckets and gives it the majority's documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_altered_behind_the_systems_back_is_repaired() {
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok("/stock/batch_init/200/10/1").await;
    for i in 0..20 {
        assert_eq!(api.post(&format!("/stock/add/{i}/5")).await.status, 200);
    }
    let victim = 1;
    c.kill(Node::Replica(Service::Stock, victim));
    {
        let store = LogStore::open(&c.data_dir(Service::Stock, victim).join("log")).unwrap();
        // The same document with another stock, stored under `version`.
        let alter = |r: Record, version, stock: i64| {
            let mut body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["doc"]["balance"] = stock.into();
            Put { expect: Expect::Exactly(r.version), record: Record::new(r.key, version, body.to_string()) }
        };
        let same_version = store.get("3").await.unwrap().unwrap();
        let older = store.get("4").await.unwrap().unwrap();
        let older_version = model::version::Version { epoch: older.version.epoch, seq: older.version.seq - 1 };
        let altered = vec![alter(same_version.clone(), same_version.version, 999), alter(older, older_version, 10)];
        assert_eq!(store.write(altered).await.unwrap(), vec![true, true]);
    }
    c.start_again(Node::Replica(Service::Stock, victim)).await;
    let roots = c.roots(Service::Stock).await;
    assert_ne!(roots[victim as usize], roots[0], "the alteration changes the replica's root");

    let took = wait_one_root(&c, Service::Stock, Duration::from_secs(60)).await;
    println!("one root {took:?} after the altered replica restarted");
    for i in 0..200 {
        let want = if i < 20 { 15 } else { 10 };
        assert_eq!(api.item(&i.to_string()).await.0, want, "item {i}");
    }
    let status = c.coordinator_status(Service::Stock, 0).await;
    let round = &status["anti_entropy"];
    assert!(round.is_object(), "the leading coordinator shows its last round: {status}");
}

/// A replica paused past its eviction while adds go on, then resumed while they still go on:
/// it re-joins, anti-entropy repairs what it missed, and within 60 s of the adds stopping
/// every replica reports one root, holding every acknowledged add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_eviction_converges_after_resume() {
    const ITEMS: usize = 40;
    let mut c = start(3).await;
    let api = Api::new(&c.gateway_url());
    api.post_ok(&format!("/stock/batch_init/{ITEMS}/0/1")).await;
    let adds = |n: usize| {
        let api = api.clone();
        tokio::spawn(async move {
            run_parallel(n, 8, |i| {
                let api = api.clone();
                async move { api.post(&format!("/stock/add/{}/1", i % ITEMS)).await.status }
            })
            .await
        })
    };
    c.pause(Node::Replica(Service::Stock, 2));
    let during_pause = adds(400).await.unwrap();
    // Evicted by now: the adds to its keys waited for that.
    c.resume(Node::Replica(Service::Stock, 2));
    let after_resume = adds(400).await.unwrap();
    let stopped = Instant::now();
    assert!(during_pause.iter().chain(&after_resume).all(|s| *s == 200), "every add answered 200");

    wait_one_root(&c, Service::Stock, Duration::from_secs(60)).await;
    println!("one root {:?} after the adds stopped", stopped.elapsed());
    for i in 0..ITEMS {
        assert_eq!(api.item(&i.to_string()).await.0, 20, "item {i}");
    }
}
