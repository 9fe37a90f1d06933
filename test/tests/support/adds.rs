//! A counter workload for fault scenarios: concurrent `stock/add`s whose answers are kept,
//! and the check that every item holds its acknowledged adds and at most those plus the
//! unanswered ones.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webshop_tests::{run_parallel, Api};

/// What became of one add: the item, the amount, the answer (or why none came), when it
/// was sent and when the answer came.
pub struct Add {
    pub item: usize,
    pub amount: i64,
    pub status: Result<u16, String>,
    pub sent: Instant,
    pub done: Instant,
    /// The body of an answer other than 200 (empty otherwise, and without an answer).
    pub body: String,
}

impl Add {
    /// Sends one add of `amount` to `item` and keeps what came back.
    pub async fn send(api: &Api, item: usize, amount: i64) -> Add {
        let sent = Instant::now();
        let answer = api.try_send("POST", &format!("/stock/add/{item}/{amount}"), None).await;
        let body = match &answer {
            Ok(r) if r.status != 200 => r.body.clone(),
            _ => String::new(),
        };
        Add { item, amount, status: answer.map(|r| r.status), sent, done: Instant::now(), body }
    }
}

/// Fires `n` adds of 1 to 5 units over `items` items through `api`, 16 at a time, counting
/// finished ones in `done`.
pub async fn adds(api: &Api, n: usize, items: usize, done: Arc<AtomicUsize>) -> Vec<Add> {
    run_parallel(n, 16, |i| {
        let (api, done) = (api.clone(), done.clone());
        async move {
            let add = Add::send(&api, i % items, (i % 5) as i64 + 1).await;
            done.fetch_add(1, Ordering::SeqCst);
            add
        }
    })
    .await
}

/// Per item: units acknowledged (200) and units whose answer the client never saw (no
/// answer, or a 5xx). Panics on a 4xx: adding to an existing item is never refused.
pub fn tally(adds: &[Add], items: usize) -> (Vec<i64>, Vec<i64>) {
    let (mut acked, mut unknown) = (vec![0; items], vec![0; items]);
    for a in adds {
        match a.status {
            Ok(200) => acked[a.item] += a.amount,
            Ok(s) if (400..500).contains(&s) => panic!("add to item {} refused with {s}", a.item),
            _ => unknown[a.item] += a.amount,
        }
    }
    (acked, unknown)
}

/// Waits until `n` is at least `at`.
pub async fn reached(n: &AtomicUsize, at: usize) {
    while n.load(Ordering::SeqCst) < at {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every item holds at least the acknowledged adds and at most those plus the adds whose
/// answer was not seen.
pub async fn assert_adds_kept(api: &Api, acked: &[i64], unknown: &[i64]) {
    for (item, (a, u)) in acked.iter().zip(unknown).enumerate() {
        let stock = api.item(&item.to_string()).await.0;
        assert!(*a <= stock && stock <= a + u, "item {item}: stock {stock}, acknowledged {a}, unanswered {u}");
    }
}
