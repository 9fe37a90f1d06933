//! The `release` worker of a ledger replica (docs/design.md §6.4): every
//! `horizon_interval_ms` it asks every order replica for its horizon report, turns a
//! majority's reports into a watermark ([`decide::horizon::watermark`]), and a grace period
//! (the request TTL) after learning one lets the `prune` worker drop the transaction records
//! held from before it ([`replica::node::Node::release`]).
//!
//! Each replica asks on its own, primary or not: the records are dropped by each replica from
//! its own store, with no replicated write, as expired request records are.

use decide::horizon::{watermark, Releases};
use model::wire::{Horizon, HORIZON_PATH};
use net::worker::{Next, Schedule};
use replica::node::Node;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an order replica may take to answer: it answers from memory.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

struct Releaser {
    node: Arc<Node>,
    /// The order replicas (`host:port`).
    orders: Vec<String>,
    http: reqwest::Client,
    releases: Mutex<Releases>,
}

/// Starts the node's `release` worker, which asks the order replicas `orders` (`host:port`).
pub fn start_releasing(node: &Arc<Node>, orders: Vec<String>, secret: &str) {
    let releaser = Arc::new(Releaser {
        node: node.clone(),
        orders,
        http: net::client::internal_http(ASK_TIMEOUT, secret),
        releases: Mutex::new(Releases::new(node.request_ttl())),
    });
    let name = format!("{} replica {} release", node.service, node.me);
    let schedule = Schedule::every(node.timings().horizon);
    node.workers().spawn_on(name, schedule, releaser, |r| async move {
        r.round().await;
        Next::Again
    });
}

impl Releaser {
    async fn round(&self) {
        let asks = self.orders.iter().map(|addr| self.ask(addr));
        let reports: Vec<Horizon> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        let now = Instant::now();
        let mut releases = self.releases.lock().unwrap();
        match watermark(self.orders.len() as u32, &reports) {
            Ok(w) => releases.learned(w, now),
            Err(why) => log::debug!("{} replica {}: no watermark this round: {why}", self.node.service, self.node.me),
        }
        if let Some(w) = releases.due(now) {
            self.node.release(w);
        }
    }

    /// One order replica's report; `None` if it did not give one.
    async fn ask(&self, addr: &str) -> Option<Horizon> {
        let answer = self.http.get(format!("http://{addr}{HORIZON_PATH}")).send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }
}
