//! Helpers of the whole-cluster tests: a small client of the public API through the gateway,
//! and the checks the scenarios share (totals over all users and items, every order either
//! fully applied or not at all).

pub mod loadgen;
pub mod nemesis;

use futures::stream::{self, StreamExt};
use serde_json::Value;
use std::time::Duration;

/// A reply: status and body.
#[derive(Clone, Debug)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Content-Type header, if any.
    pub content_type: Option<String>,
}

impl Resp {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A client of the public API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

/// Per-request bound of the test client: far above any healthy answer, so that a hung
/// request fails the test instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

impl Api {
    /// A client of the gateway (or any coordinator) at `base` (`http://host:port`).
    pub fn new(base: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(256)
            .build()
            .expect("http client");
        Api { base: base.trim_end_matches('/').to_string(), http }
    }

    /// Sends a request; `Err` only if no HTTP answer came at all.
    pub async fn try_send(&self, method: &str, path: &str, request_id: Option<&str>) -> Result<Resp, String> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok(Resp { status, body, content_type })
    }

    /// POST; panics if no answer came.
    pub async fn post(&self, path: &str) -> Resp {
        self.try_send("POST", path, None).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// GET; panics if no answer came.
    pub async fn get(&self, path: &str) -> Resp {
        self.try_send("GET", path, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST expecting 200 with a JSON body.
    pub async fn post_ok(&self, path: &str) -> Value {
        let r = self.post(path).await;
        assert_eq!(r.status, 200, "POST {path}: {}", r.body);
        r.json()
    }

    /// GET expecting 200 with a JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// An item's (stock, price).
    pub async fn item(&self, id: &str) -> (i64, i64) {
        let v = self.get_ok(&format!("/stock/find/{id}")).await;
        (v["stock"].as_i64().unwrap(), v["price"].as_i64().unwrap())
    }

    /// A user's credit.
    pub async fn credit(&self, id: &str) -> i64 {
        self.get_ok(&format!("/payment/find_user/{id}")).await["credit"].as_i64().unwrap()
    }

    /// An order as JSON.
    pub async fn order(&self, id: &str) -> Value {
        self.get_ok(&format!("/orders/find/{id}")).await
    }

    /// Sum of the credit of users `"0".."n-1"`, reading `parallel` at a time.
    pub async fn total_credit(&self, n: usize, parallel: usize) -> i64 {
        let sums: Vec<i64> = stream::iter(0..n)
            .map(|i| async move { self.credit(&i.to_string()).await })
            .buffer_unordered(parallel)
            .collect()
            .await;
        sums.into_iter().sum()
    }
}

/// Runs `n` jobs with at most `parallel` in flight, returning their results in order.
pub async fn run_parallel<T, F, Fut>(n: usize, parallel: usize, job: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out: Vec<(usize, T)> = stream::iter(0..n)
        .map(|i| {
            let f = job(i);
            async move { (i, f.await) }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// The course consistency scenario (docs/design.md §9.2) in its three steps, so that fault
/// scenarios can act between them: 1 item with stock 100, 1000 users with credit 1, 1000
/// orders of that item for a fixed spread of users; all checkouts fired with 100 in flight;
/// then stock 0 and total credit 900.
pub mod consistency {
    use super::{run_parallel, Api};

    /// Users in the scenario.
    pub const USERS: usize = 1000;
    /// Units of the item in stock, and so the checkouts that can succeed.
    pub const STOCK: usize = 100;

    /// What the setup created.
    #[derive(Clone, Debug)]
    pub struct Setup {
        /// The one item.
        pub item: String,
        /// The orders, one unit of the item each.
        pub orders: Vec<String>,
    }

    fn id_of(v: &serde_json::Value, field: &str) -> String {
        v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")).to_string()
    }

    /// Creates the users, the item and the orders.
    pub async fn setup(api: &Api) -> Setup {
        api.post_ok(&format!("/payment/batch_init/{USERS}/1")).await;
        let item = id_of(&api.post_ok("/stock/item/create/1").await, "item_id");
        assert_eq!(api.post(&format!("/stock/add/{item}/{STOCK}")).await.status, 200);
        let orders = run_parallel(1000, 32, |i| {
            let (api, item) = (api.clone(), item.clone());
            async move {
                // A fixed spread of users: some have several orders, most one.
                let user = (i * 7919 + 13) % USERS;
                let o = id_of(&api.post_ok(&format!("/orders/create/{user}")).await, "order_id");
                assert_eq!(api.post(&format!("/orders/addItem/{o}/{item}/1")).await.status, 200);
                o
            }
        })
        .await;
        Setup { item, orders }
    }

    /// Checks out every order, 100 in flight; the statuses in order.
    pub async fn checkouts(api: &Api, setup: &Setup) -> Vec<u16> {
        run_parallel(setup.orders.len(), 100, |i| {
            let (api, o) = (api.clone(), setup.orders[i].clone());
            async move { api.post(&format!("/orders/checkout/{o}")).await.status }
        })
        .await
    }

    /// Checks out every order (as [`checkouts`]) while `during` runs beside the checkouts (the
    /// faults of a scenario), then checks the course's promises: only 200 and 400 answers,
    /// exactly [`STOCK`] successes, stock 0 and total credit 900.
    pub async fn holds_while(api: &Api, setup: &Setup, during: impl std::future::Future<Output = ()>) {
        let all = tokio::spawn({
            let (api, setup) = (api.clone(), setup.clone());
            async move { checkouts(&api, &setup).await }
        });
        during.await;
        let statuses = all.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200 || *s == 400), "only 200 and 400 answers: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), STOCK);
        check_totals(api, setup).await;
    }

    /// Stock 0 and total credit 900 afterwards.
    pub async fn check_totals(api: &Api, setup: &Setup) {
        assert_eq!(api.item(&setup.item).await.0, 0);
        assert_eq!(api.total_credit(USERS, 32).await, (USERS - STOCK) as i64);
    }
}
