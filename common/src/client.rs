//! A client for calling another service through its coordinators: round robin, and the
//! next coordinator on a connection error. Never through nginx, never to replicas.

use crate::endpoint::Endpoint;
use crate::routing::Method;
use crate::wire::{REQUEST_ID, SECRET};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A service's answer: a status below 500 (success or business rejection) and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// The service could not give an answer: every coordinator refused the connection, the call
/// timed out, or the service answered with a 5xx. The outcome of a write is then unknown.
#[derive(Debug, thiserror::Error)]
#[error("service unavailable: {0}")]
pub struct Unavailable(pub String);

/// Calls one service through its coordinators.
pub struct ServiceClient {
    /// `http://host:port` per coordinator, for messages.
    bases: Vec<String>,
    /// The same, parsed once.
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    http: reqwest::Client,
    secret: String,
}

impl ServiceClient {
    /// A client of the coordinators at `addrs` (`host:port`), with a per-call timeout.
    pub fn new(addrs: &[String], secret: &str, timeout: Duration) -> ServiceClient {
        // Coordinators are reached directly: no proxy, plain HTTP/1.1.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(crate::wire::CLIENT_POOL_IDLE)
            .tcp_nodelay(true)
            .no_proxy()
            .http1_only()
            .build()
            .expect("http client");
        ServiceClient {
            bases: addrs.iter().map(|a| format!("http://{a}")).collect(),
            endpoints: addrs.iter().map(|a| Endpoint::new(a)).collect(),
            next: AtomicUsize::new(0),
            http,
            secret: secret.to_string(),
        }
    }

    /// Sends one request. Tries the coordinators in turn while connections are refused;
    /// a timeout or a 5xx is returned as [`Unavailable`] at once (the caller decides whether
    /// the call is safe to repeat).
    pub async fn call(&self, method: Method, path: &str, request_id: Option<&str>) -> Result<Answer, Unavailable> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = String::from("no coordinators");
        for i in 0..self.bases.len() {
            let at = (start + i) % self.bases.len();
            let base = &self.bases[at];
            let url = self.endpoints[at].url(path).map_err(|e| Unavailable(format!("{base}: {e}")))?;
            let mut req = match method {
                Method::Get => self.http.get(url),
                Method::Post => self.http.post(url),
            };
            req = req.header(SECRET, &self.secret);
            if let Some(id) = request_id {
                req = req.header(REQUEST_ID, id);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.map_err(|e| Unavailable(format!("{base}: {e}")))?;
                    if status >= 500 {
                        return Err(Unavailable(format!("{base} answered {status}: {body}")));
                    }
                    return Ok(Answer { status, body });
                }
                Err(e) if e.is_connect() => {
                    last = format!("{base}: {e}");
                    continue;
                }
                Err(e) => return Err(Unavailable(format!("{base}: {e}"))),
            }
        }
        Err(Unavailable(last))
    }
}
