//! Benchmark (not a test, not in CI) of one anti-entropy round's cost on a real cluster of
//! three stock replicas: with nothing divergent, and with 1% of the documents of one replica
//! altered behind the system's back, at 100k and 1M keys per replica.
//!
//! `cargo bench -p webshop-tests --bench antientropy` (release build; about two minutes).
//! `AE_BENCH_SIZES=100000` runs one size only.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use model::topology::Service;
use std::time::{Duration, Instant};
use store::log_engine::LogStore;
use store::{Expect, Put, Record, Store};
use support::{start, Node, TestCluster};

async fn post(c: &TestCluster, url: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(url)
        .header(model::wire::SECRET, c.secret())
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

async fn round(c: &TestCluster) -> (Duration, serde_json::Value) {
    let url = format!("http://{}/admin/anti-entropy", c.topology().stock.coordinators[0]);
    let t = Instant::now();
    let report = post(c, &url).await;
    (t.elapsed(), report)
}

fn line(what: &str, n: usize, took: Duration, r: &serde_json::Value) {
    println!(
        "{n:>9} keys  {what:<26} {:>8.1} ms  divergent buckets {:>3}  listed {:>3}  repaired {:>6}  complete {}",
        took.as_secs_f64() * 1000.0,
        r["divergent_buckets"].as_array().map_or(0, |b| b.len()),
        r["listed"].as_array().map_or(0, |b| b.len()),
        r["repaired"],
        r["complete"]
    );
}

async fn bench(n: usize) {
    let mut c = start(3).await;
    let t = Instant::now();
    post(&c, &format!("{}/stock/batch_init/{n}/100/1", c.gateway_url())).await;
    println!("{n:>9} keys  batch_init                 {:>8.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    for _ in 0..3 {
        let (took, r) = round(&c).await;
        line("nothing divergent", n, took, &r);
    }
    // Alter 1% of replica 2's documents while it is down: another stock, same version.
    c.kill(Node::Replica(Service::Stock, 2));
    {
        let store = LogStore::open(&c.data_dir(Service::Stock, 2).join("log")).unwrap();
        let keys: Vec<String> = (0..n).step_by(100).map(|i| i.to_string()).collect();
        for chunk in keys.chunks(10_000) {
            let puts = store
                .get_many(chunk)
                .await
                .unwrap()
                .into_iter()
                .flatten()
                .map(|r| {
                    let mut body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                    body["doc"]["balance"] = 7.into();
                    Put { expect: Expect::Exactly(r.version), record: Record::new(r.key, r.version, body.to_string()) }
                })
                .collect();
            store.write(puts).await.unwrap();
        }
    }
    c.start_again(Node::Replica(Service::Stock, 2)).await;
    let mut rounds = 0;
    let all = Instant::now();
    loop {
        let (took, r) = round(&c).await;
        rounds += 1;
        if r["divergent_buckets"].as_array().is_none_or(|b| b.is_empty()) {
            line("converged, next round", n, took, &r);
            break;
        }
        line("1% divergent", n, took, &r);
        assert!(rounds < 20, "no convergence");
    }
    println!("{n:>9} keys  1% divergent repaired in {} rounds, {:.1} s", rounds - 1, all.elapsed().as_secs_f64());
}

fn main() {
    let sizes: Vec<usize> = std::env::var("AE_BENCH_SIZES")
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("sizes")).collect())
        .unwrap_or_else(|_| vec![100_000, 1_000_000]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for n in sizes {
        rt.block_on(bench(n));
    }
}
