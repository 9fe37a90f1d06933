//! A client for calling another service through its coordinators: round robin, and the
//! next coordinator on a connection error. Never through nginx, never to replicas. Calls
//! travel on one internal connection per coordinator ([`crate::rpc`]).
//!
//! [`Batcher`] sends concurrent calls together as one multi call (`/internal/multi`).

use crate::batching::BatchQueue;
use actix_web::web::Bytes;
use model::reply::Reply;
use model::routing::Method;
use model::wire::{MultiCall, MULTI_PATH, REQUEST_ID, SECRET};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The service could not give an answer: every coordinator refused the connection, the call
/// timed out, or the service answered with a 5xx. The outcome of a write is then unknown.
#[derive(Debug, thiserror::Error)]
#[error("service unavailable: {0}")]
pub struct Unavailable(pub String);

/// The settings of every HTTP client for the cluster's internal hops (a node's peers,
/// another service's coordinators, the replicas behind a coordinator). They are reached
/// directly: no proxy, plain HTTP/1.1, no redirects followed (no internal endpoint
/// redirects, and an answer that does is the peer's answer, not a reason to go elsewhere),
/// Nagle's algorithm off; idle connections are dropped before the servers' keep-alive ends
/// (`model::wire::CLIENT_POOL_IDLE`). Every request carries the cluster secret
/// (`model::wire::SECRET`), added here once rather than by each call; the settings check
/// that it is a valid header value ([`valid_secret`]), so a process never starts with one
/// that is not.
/// (The fan-out and the coordinators' forwarding use [`crate::rpc`] connections instead.)
pub fn internal_builder(secret: &str) -> reqwest::ClientBuilder {
    let mut value = reqwest::header::HeaderValue::from_str(secret).expect("the settings check the secret");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::HeaderName::from_static(SECRET), value)]);
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(model::wire::CLIENT_POOL_IDLE)
        .tcp_nodelay(true)
        .no_proxy()
        .http1_only()
}

/// An HTTP client for the cluster's internal hops ([`internal_builder`]), each request
/// bounded by `timeout`.
pub fn internal_http(timeout: Duration, secret: &str) -> reqwest::Client {
    internal_builder(secret).timeout(timeout).pool_max_idle_per_host(64).build().expect("http client")
}

/// Why `secret` cannot be the cluster secret, if it cannot: it travels as a header value on
/// every internal request (and in the handshake of [`crate::rpc`]), so it must be non-empty
/// visible ASCII (a space inside is allowed, a line break or a control character is not).
pub fn valid_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("the cluster secret is empty".into());
    }
    if secret.starts_with(' ') || secret.ends_with(' ') {
        return Err("the cluster secret starts or ends with a space, which HTTP drops".into());
    }
    match secret.bytes().find(|b| !(b' '..=b'~').contains(b)) {
        Some(b) => Err(format!("the cluster secret holds the byte {b:#04x}: only visible ASCII and spaces may")),
        None => Ok(()),
    }
}

/// The innermost cause of an error, which says what happened (refused, reset, ...); the
/// outer ones of a hop's error only say which layer saw it.
pub fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Calls one service through its coordinators.
pub struct ServiceClient {
    /// `host:port` per coordinator, for messages.
    addrs: Vec<String>,
    /// One internal connection per coordinator ([`crate::rpc`]).
    rpc: Vec<crate::rpc::Client>,
    next: AtomicUsize,
    timeout: Duration,
}

impl ServiceClient {
    /// A client of the coordinators at `addrs` (`host:port`), with a per-call timeout.
    pub fn new(addrs: &[String], secret: &str, timeout: Duration) -> ServiceClient {
        ServiceClient {
            addrs: addrs.to_vec(),
            rpc: addrs.iter().map(|a| crate::rpc::Client::new(a, secret, true, timeout)).collect(),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Sends several keyed requests as one multi call: one answer per call, in order, each as
    /// [`ServiceClient::call`] would have returned it. Tries the coordinators in turn while
    /// connections are refused; if the multi call itself fails, every call is unavailable.
    pub async fn multi(&self, calls: &[MultiCall]) -> Vec<Result<Reply, Unavailable>> {
        match self.multi_exchange(calls).await {
            Ok(answers) => answers.into_iter().map(answer_of).collect(),
            Err(why) => calls.iter().map(|_| Err(Unavailable(why.clone()))).collect(),
        }
    }

    async fn multi_exchange(&self, calls: &[MultiCall]) -> Result<Vec<Reply>, String> {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        let (addr, r) = self.exchange(Method::Post, MULTI_PATH, headers, multi_body(calls)).await?;
        // Read from the bytes as they came: the list is JSON, not an answer's text.
        crate::answer::multi_answers(r.status, &r.body, calls.len()).map_err(|why| format!("{addr}: {why}"))
    }

    /// Sends one request. Tries the coordinators in turn while connections are refused;
    /// a timeout or a 5xx is returned as [`Unavailable`] at once (the caller decides whether
    /// the call is safe to repeat).
    pub async fn call(&self, method: Method, path: &str, request_id: Option<&str>) -> Result<Reply, Unavailable> {
        let headers = request_id.map(|id| vec![(REQUEST_ID.to_string(), id.to_string())]).unwrap_or_default();
        let (addr, r) = self.exchange(method, path, headers, Bytes::new()).await.map_err(Unavailable)?;
        let answer = crate::answer::of_rpc(&r);
        if answer.status >= 500 {
            return Err(Unavailable(format!("{addr} answered {}: {}", answer.status, answer.body)));
        }
        Ok(answer)
    }

    /// One exchange with the next coordinator in turn (the one after it while connections are
    /// refused), over its internal connection: the coordinator that answered and its
    /// response. An error names the coordinator.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<(&str, crate::rpc::Response), String> {
        let request = crate::rpc::Request { method, path: path.to_string(), headers, body };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = String::from("no coordinators");
        for i in 0..self.addrs.len() {
            let at = (start + i) % self.addrs.len();
            let addr = self.addrs[at].as_str();
            match self.rpc[at].call(&request, self.timeout).await {
                Ok(r) => return Ok((addr, r)),
                Err(e @ crate::rpc::Error::Connect(_)) => last = format!("{addr}: {e}"),
                Err(e) => return Err(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

/// The body of a multi call (`MULTI_PATH`) carrying `calls`.
pub(crate) fn multi_body(calls: &[MultiCall]) -> Bytes {
    Bytes::from(serde_json::to_vec(calls).expect("calls serialize"))
}

/// One answer of a multi call as [`ServiceClient::call`] returns an answer: a 5xx is
/// [`Unavailable`].
fn answer_of(a: Reply) -> Result<Reply, Unavailable> {
    if a.status >= 500 {
        return Err(Unavailable(format!("answered {}: {}", a.status, a.body)));
    }
    Ok(a)
}

/// Calls in flight at once per [`Batcher`]. Two: while one multi call is on its way the
/// next calls gather for the other, so under load each exchange carries many calls, and a
/// slow call (a primary being evicted) holds up at most half of them.
pub const BATCH_SENDERS: usize = 2;

/// Most calls in one multi call (the coordinators accept up to 256).
pub const MAX_BATCH_CALLS: usize = 128;

struct Pending {
    call: MultiCall,
    done: oneshot::Sender<Result<Reply, Unavailable>>,
}

/// Calls one service through its coordinators, sending calls made at the same time as one
/// multi call: under load, many saga steps share one exchange with a coordinator and one
/// with each primary. A call that finds a sender idle goes alone, as a plain request. The
/// senders start on the first call, on the runtime of the calling task ([`BatchQueue`]).
pub struct Batcher {
    client: Arc<ServiceClient>,
    queue: BatchQueue<Pending>,
}

impl Batcher {
    /// A batcher over `client`.
    pub fn new(client: ServiceClient) -> Batcher {
        Batcher { client: Arc::new(client), queue: BatchQueue::default() }
    }

    /// The plain client underneath (for calls that should not wait for company).
    pub fn client(&self) -> &ServiceClient {
        &self.client
    }

    /// Makes one call; its answer as [`ServiceClient::call`] would give it (no request id:
    /// calls that go through a batcher are deduplicated by what their path carries).
    pub async fn call(&self, method: Method, path: String) -> Result<Reply, Unavailable> {
        let (done, wait) = oneshot::channel();
        let pending = Pending { call: MultiCall { method, path }, done };
        self.queue
            .push(
                pending,
                BATCH_SENDERS,
                MAX_BATCH_CALLS,
                |_| 1,
                || {
                    let client = self.client.clone();
                    move |group| {
                        let client = client.clone();
                        async move { send_group(&client, group).await }
                    }
                },
            )
            .map_err(|_| Unavailable("batcher stopped".into()))?;
        wait.await.map_err(|_| Unavailable("batcher dropped the call".into()))?
    }
}

async fn send_group(client: &ServiceClient, mut group: Vec<Pending>) {
    if group.len() == 1 {
        let p = group.pop().expect("one call");
        let _ = p.done.send(client.call(p.call.method, &p.call.path, None).await);
        return;
    }
    let (calls, dones): (Vec<MultiCall>, Vec<_>) = group.into_iter().map(|p| (p.call, p.done)).unzip();
    for (done, answer) in dones.into_iter().zip(client.multi(&calls).await) {
        let _ = done.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_secret_must_be_a_header_value() {
        for (secret, ok) in [
            ("s3cret", true),
            ("a secret with spaces", true),
            ("~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", true),
            ("", false),
            (" leading", false),
            ("trailing ", false),
            ("line\r\nx-other: injected", false),
            ("tab\there", false),
            ("geheimnis-ä", false),
        ] {
            assert_eq!(valid_secret(secret).is_ok(), ok, "{secret:?}: {:?}", valid_secret(secret));
        }
    }

    #[tokio::test]
    async fn every_internal_request_carries_the_secret() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before its request's head ended");
                    head.extend_from_slice(&buf[..n]);
                }
                conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await.unwrap();
                heads.push(String::from_utf8(head).unwrap().to_lowercase());
            }
            heads
        });
        let http = internal_http(Duration::from_secs(5), "s3cret");
        assert_eq!(http.get(format!("http://{addr}/internal/view")).send().await.unwrap().status(), 204);
        let other = internal_builder("an0ther").build().unwrap();
        assert_eq!(other.post(format!("http://{addr}/internal/paxos")).send().await.unwrap().status(), 204);
        let heads = server.await.unwrap();
        assert!(heads[0].contains(&format!("\r\n{SECRET}: s3cret\r\n")), "{}", heads[0]);
        assert!(heads[1].contains(&format!("\r\n{SECRET}: an0ther\r\n")), "{}", heads[1]);
    }
}
