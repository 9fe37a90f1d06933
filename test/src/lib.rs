//! Helpers of the whole-cluster tests: a small client of the public API through the gateway,
//! and the checks the scenarios share (totals over all users and items, every order either
//! fully applied or not at all).

pub mod loadgen;

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
