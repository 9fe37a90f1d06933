//! The clients: the set-up before the run, the operation mix each client worker draws from
//! its own seeded generator, the sending of one operation (with retries of an unanswered
//! write under the same idempotency key), and the final reads after the heal phase.
//!
//! Workloads, on small key sets so that faults hit keys under contention:
//! - *counter*: `stock/add` of 1 to 3 units and `stock/find` on a few items created for the
//!   run (their stock moves only by these adds);
//! - *checkout*: users, items and orders made by the batch_init calls, with too little stock
//!   and credit for every order, checked out at random (again, and while a checkout of the
//!   same order may be under way elsewhere), and `orders/find`;
//! - *create*: `payment/create_user` and `stock/item/create`, whose answered ids must exist.

use super::history::{Final, ItemStart, Kind, Op, OrderSpec, Outcome, Setup};
use crate::loadgen::http::Conn;
use crate::loadgen::stats::Failure;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The sizes of the set-up.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Items of the counter workload.
    pub counter_items: usize,
    /// Items, users and orders of the checkout workload.
    pub items: usize,
    /// Users of the checkout workload.
    pub users: usize,
    /// Orders of the checkout workload.
    pub orders: usize,
    /// Stock of each checkout item.
    pub stock: i64,
    /// Credit of each user.
    pub credit: i64,
}

impl Default for Sizes {
    /// 4 counter items; 40 orders of 2 units each over 10 items of stock 6 (80 units asked,
    /// 60 there) and 8 users of credit 8 (5 orders of cost 2 each asked per user, 4 paid at
    /// most): some checkouts must fail, for stock or for credit.
    fn default() -> Sizes {
        Sizes { counter_items: 4, items: 10, users: 8, orders: 40, stock: 6, credit: 8 }
    }
}

/// Price of every item.
const PRICE: i64 = 1;
/// Sends of one write at most (the first and the retries under the same key).
const MAX_ATTEMPTS: u32 = 5;
/// First pause before a retry; doubles each time.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The gateway, as the clients reach it.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// Its socket address.
    pub addr: SocketAddr,
    /// Its `host:port` for the Host header.
    pub host: String,
    /// Bound on one request.
    pub timeout: Duration,
}

impl Gateway {
    fn conn(&self) -> Conn {
        Conn::new(self.addr, &self.host, self.timeout)
    }
}

/// One answer: status and body, or why none came.
type Answer = Result<(u16, Value), Failure>;

async fn call(conn: &mut Conn, get: bool, path: String, key: Option<&str>) -> Answer {
    let (status, body) = conn.send_keyed(get, path, key).await?;
    // A body that is not JSON (the text of an error) is kept as a JSON string.
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    Ok((status, value))
}

/// The body of a 200 answer.
fn ok_body(answer: &Answer) -> Option<&Value> {
    match answer {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

/// The first 200 characters of an answer's body, for the history.
fn detail_of(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().take(200).collect()
}

/// A call that must succeed (the set-up and the final reads are made without faults).
async fn must(conn: &mut Conn, get: bool, path: String) -> anyhow::Result<Value> {
    match call(conn, get, path.clone(), None).await {
        Ok((200, v)) => Ok(v),
        Ok((s, v)) => anyhow::bail!("{path}: {s} {v}"),
        Err(e) => anyhow::bail!("{path}: {e:?}"),
    }
}

/// Creates what the run works on and reads it back: the counter items, then the checkout
/// workload's items, users and orders (batch_init), with every order's lines.
pub async fn set_up(gw: &Gateway, sizes: &Sizes, replicas_per_service: u32) -> anyhow::Result<Setup> {
    let mut conn = gw.conn();
    let mut setup = Setup { replicas_per_service, ..Setup::default() };
    must(&mut conn, false, format!("/stock/batch_init/{}/{}/{PRICE}", sizes.items, sizes.stock)).await?;
    must(&mut conn, false, format!("/payment/batch_init/{}/{}", sizes.users, sizes.credit)).await?;
    must(&mut conn, false, format!("/orders/batch_init/{}/{}/{}/{PRICE}", sizes.orders, sizes.items, sizes.users))
        .await?;
    for i in 0..sizes.items {
        setup.items.insert(i.to_string(), ItemStart { stock: sizes.stock, price: PRICE });
    }
    for u in 0..sizes.users {
        setup.users.insert(u.to_string(), sizes.credit);
    }
    for o in 0..sizes.orders {
        let v = must(&mut conn, true, format!("/orders/find/{o}")).await?;
        let user = v["user_id"].as_str().unwrap_or_default().to_string();
        let lines = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| Some((l.get(0)?.as_str()?.to_string(), l.get(1)?.as_i64()?)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        anyhow::ensure!(!lines.is_empty(), "order {o} has no lines: {v}");
        setup.orders.insert(o.to_string(), OrderSpec { user, lines });
    }
    for _ in 0..sizes.counter_items {
        let v = must(&mut conn, false, format!("/stock/item/create/{PRICE}")).await?;
        let id = v["item_id"].as_str().ok_or_else(|| anyhow::anyhow!("no item_id in {v}"))?.to_string();
        setup.items.insert(id, ItemStart { stock: 0, price: PRICE });
    }
    Ok(setup)
}

/// The counter items of a set-up: those in no order.
pub fn counter_items(setup: &Setup) -> Vec<String> {
    let in_orders = setup.order_items();
    setup.items.keys().filter(|i| !in_orders.contains(i.as_str())).cloned().collect()
}

/// What a worker does next, drawn from its generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// An add to a counter item.
    Add(String, i64),
    /// A read of a counter item.
    Read(String),
    /// A checkout.
    Checkout(String),
    /// A read of an order.
    FindOrder(String),
    /// A user created.
    CreateUser,
    /// An item created.
    CreateItem,
}

/// The mix: 35 % adds, 25 % counter reads, 20 % checkouts, 10 % order reads, 5 % each create.
pub fn draw(rng: &mut StdRng, counters: &[String], orders: &[String]) -> Next {
    let r = rng.gen_range(0..100);
    let pick = |rng: &mut StdRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
    match r {
        0..35 if !counters.is_empty() => Next::Add(pick(rng, counters), rng.gen_range(1..=3)),
        35..60 if !counters.is_empty() => Next::Read(pick(rng, counters)),
        60..80 if !orders.is_empty() => Next::Checkout(pick(rng, orders)),
        80..90 if !orders.is_empty() => Next::FindOrder(pick(rng, orders)),
        90..95 => Next::CreateUser,
        _ => Next::CreateItem,
    }
}

/// A worker's generator: from the run's seed and the worker's number only.
pub fn worker_rng(seed: u64, worker: u32) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(worker))
}

/// How an answer ends an operation.
pub fn outcome_of(answer: &Answer) -> Outcome {
    match answer {
        Ok((s, _)) if (200..300).contains(s) => Outcome::Ok,
        Ok((s, _)) if (400..500).contains(s) => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// The status of an answer, if one came.
fn status_of(answer: &Answer) -> Option<u16> {
    match answer {
        Ok((s, _)) => Some(*s),
        Err(Failure::Status(s)) => Some(*s),
        Err(_) => None,
    }
}

/// What every worker of a run shares.
pub struct Shared {
    /// The gateway.
    pub gw: Gateway,
    /// The run's seed.
    pub seed: u64,
    /// What the run set up.
    pub setup: Setup,
    /// The run's start (times in the history count from it).
    pub started: Instant,
    /// When workers stop starting operations.
    pub deadline: Instant,
    /// Operations per worker at most.
    pub max_ops: usize,
    /// The next operation id.
    pub ids: std::cell::Cell<u64>,
}

/// Runs worker `worker` until the deadline or its operation bound; returns its operations.
pub async fn worker(shared: std::rc::Rc<Shared>, worker: u32) -> Vec<Op> {
    let Shared { gw, seed, setup, started, deadline, max_ops, ids } = &*shared;
    let (seed, started, deadline, max_ops) = (*seed, *started, *deadline, *max_ops);
    let mut rng = worker_rng(seed, worker);
    let counters = counter_items(setup);
    let orders: Vec<String> = setup.orders.keys().cloned().collect();
    let mut conn = gw.conn();
    let mut ops = Vec::new();
    let us = |t: Instant| t.duration_since(started).as_micros() as u64;
    let mut seq = 0u64;
    while Instant::now() < deadline && ops.len() < max_ops {
        let next = draw(&mut rng, &counters, &orders);
        seq += 1;
        let key = format!("nemesis-{seed}-{worker}-{seq}");
        let invoked = Instant::now();
        let (kind, answer, attempts) = match next {
            Next::Add(item, amount) => {
                let path = format!("/stock/add/{item}/{amount}");
                let (a, n) = retried(&mut conn, path, &key, deadline).await;
                (Kind::Add { item, amount }, a, n)
            }
            Next::Read(item) => {
                let a = call(&mut conn, true, format!("/stock/find/{item}"), None).await;
                let value = ok_body(&a).and_then(|v| v["stock"].as_i64());
                (Kind::Read { item, value }, a, 1)
            }
            Next::Checkout(order) => {
                let (a, n) = retried(&mut conn, format!("/orders/checkout/{order}"), &key, deadline).await;
                (Kind::Checkout { order }, a, n)
            }
            Next::FindOrder(order) => {
                let a = call(&mut conn, true, format!("/orders/find/{order}"), None).await;
                let paid = ok_body(&a).and_then(|v| v["paid"].as_bool());
                (Kind::FindOrder { order, paid }, a, 1)
            }
            Next::CreateUser => {
                let a = call(&mut conn, false, "/payment/create_user".into(), Some(&key)).await;
                let id = ok_body(&a).and_then(|v| v["user_id"].as_str().map(String::from));
                (Kind::CreateUser { id }, a, 1)
            }
            Next::CreateItem => {
                let a = call(&mut conn, false, format!("/stock/item/create/{PRICE}"), Some(&key)).await;
                let id = ok_body(&a).and_then(|v| v["item_id"].as_str().map(String::from));
                (Kind::CreateItem { id }, a, 1)
            }
        };
        let id = ids.get();
        ids.set(id + 1);
        let detail = match &answer {
            Ok((s, v)) if !(200..300).contains(s) => Some(detail_of(v)),
            Err(e) => Some(format!("{e:?}")),
            _ => None,
        };
        ops.push(Op {
            id,
            process: worker,
            invoked_us: us(invoked),
            completed_us: us(Instant::now()),
            outcome: outcome_of(&answer),
            status: status_of(&answer),
            attempts,
            kind,
            detail,
        });
    }
    ops
}

/// Sends a write with key `key` until it gets a definite answer (2xx or 4xx), at most
/// [`MAX_ATTEMPTS`] times, pausing longer after each unanswered one; the last answer and the
/// number of sends. Retries stop at `deadline` plus the pauses' bound, so a run ends.
async fn retried(conn: &mut Conn, path: String, key: &str, deadline: Instant) -> (Answer, u32) {
    let mut pause = RETRY_PAUSE;
    let mut n = 0;
    loop {
        n += 1;
        let a = call(conn, false, path.clone(), Some(key)).await;
        if outcome_of(&a) != Outcome::Unknown || n >= MAX_ATTEMPTS {
            return (a, n);
        }
        if Instant::now() > deadline + Duration::from_secs(30) {
            return (a, n);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// The final reads after the heal phase: every item's stock, every user's credit, every
/// order's state, and whether each created id is found.
pub async fn final_reads(gw: &Gateway, setup: &Setup, ops: &[Op]) -> Final {
    let mut conn = gw.conn();
    let mut fin = Final::default();
    for item in setup.items.keys() {
        let v = call(&mut conn, true, format!("/stock/find/{item}"), None).await;
        fin.stock.insert(item.clone(), ok_body(&v).and_then(|v| v["stock"].as_i64()));
    }
    for user in setup.users.keys() {
        let v = call(&mut conn, true, format!("/payment/find_user/{user}"), None).await;
        fin.credit.insert(user.clone(), ok_body(&v).and_then(|v| v["credit"].as_i64()));
    }
    for order in setup.orders.keys() {
        let v = call(&mut conn, true, format!("/orders/find/{order}"), None).await;
        fin.paid.insert(order.clone(), ok_body(&v).and_then(|v| v["paid"].as_bool()));
    }
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let (path, id, found) = match &op.kind {
            Kind::CreateUser { id: Some(id) } => (format!("/payment/find_user/{id}"), id, &mut fin.users_found),
            Kind::CreateItem { id: Some(id) } => (format!("/stock/find/{id}"), id, &mut fin.items_found),
            _ => continue,
        };
        let answer = call(&mut conn, true, path, None).await;
        found.insert(id.clone(), ok_body(&answer).is_some());
    }
    fin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_draws_the_same_operations_from_the_same_seed() {
        let counters = vec!["c0".to_string(), "c1".to_string()];
        let orders: Vec<String> = (0..5).map(|o| o.to_string()).collect();
        let run = |seed, worker| {
            let mut rng = worker_rng(seed, worker);
            (0..200).map(|_| draw(&mut rng, &counters, &orders)).collect::<Vec<_>>()
        };
        assert_eq!(run(1, 0), run(1, 0));
        assert_ne!(run(1, 0), run(1, 1));
        assert_ne!(run(1, 0), run(2, 0));
        let ops = run(1, 0);
        assert!(ops.iter().any(|n| matches!(n, Next::Add(..))));
        assert!(ops.iter().any(|n| matches!(n, Next::Checkout(..))));
        assert!(ops.iter().any(|n| matches!(n, Next::CreateUser)));
    }

    #[test]
    fn answers_end_operations_as_ok_fail_or_unknown() {
        assert_eq!(outcome_of(&Ok((200, Value::Null))), Outcome::Ok);
        assert_eq!(outcome_of(&Ok((400, Value::Null))), Outcome::Fail);
        assert_eq!(outcome_of(&Ok((422, Value::Null))), Outcome::Fail);
        assert_eq!(outcome_of(&Ok((503, Value::Null))), Outcome::Unknown);
        assert_eq!(outcome_of(&Err(Failure::Timeout)), Outcome::Unknown);
        assert_eq!(outcome_of(&Err(Failure::Connect)), Outcome::Unknown);
    }
}
