//! The hop from a coordinator to one replica: sending a request, and the one classification
//! of what came back ([`classify`]).
//!
//! Forwarded public requests and multi calls travel on one connection per replica
//! ([`net::rpc`], [`Forwarder::send`]): an HTTP/1.1 exchange per request cost both ends
//! more than twice the CPU of a message on a shared connection (docs/performance.md, fifth
//! round). The other calls (internal endpoints, probes, membership) are rare and keep
//! reqwest.
//!
//! The classification is pure so that eviction (docs/design.md §4.5) can hook into it later:
//! an [`Outcome::Unavailable`] is the only outcome that may ever lead to evicting a replica;
//! an answer (including a business 400) and a misdirected rejection never do.

use actix_web::web::Bytes;
use model::reply::Reply;
use model::routing::Method;
use model::wire::{View, EPOCH, MINTED_KEY, NO_LEASE, RECOVERING, REQUEST_ID, STATUS_MISDIRECTED, UNAVAILABLE_CAUSE};
use net::client::root_cause;
use net::endpoint::Endpoint;
use net::rpc;
use net::standing::SecretStanding;
use reqwest::header::CONTENT_TYPE;
use std::time::Duration;

/// Idle keep-alive connections kept per replica by the HTTP client of the rare internal
/// calls (probes, membership, anti-entropy); forwarded requests use [`net::rpc`].
pub const POOL_IDLE_PER_HOST: usize = 256;

/// Longest wait for a TCP connection to a replica: replicas sit on the same network, so a
/// connection that takes longer than this is to a host that is gone.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A replica's complete answer, body read: the one answer type ([`Reply`]) as the
/// coordinator relays it, its body bytes and content type passed on unchanged (not parsed
/// or copied into text on the way to the client). Made from a [`Reply`] and read back into
/// one by the two conversions below; no other answer type is converted to or from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReply {
    /// HTTP status.
    pub status: u16,
    /// Its `Content-Type`, passed on to the client unchanged.
    pub content_type: Option<String>,
    /// Its `x-webshop-unavailable` marker (a 503 that is not the replica's own failure).
    pub unavailable_cause: Option<String>,
    /// The body, copied as bytes.
    pub body: Bytes,
}

impl ReplicaReply {
    /// A plain-text reply (tests, and answers the coordinator makes up itself).
    pub fn text(status: u16, body: impl Into<String>) -> ReplicaReply {
        ReplicaReply::from(Reply::text(status, body))
    }

    /// As the one answer type (a body that is not UTF-8 is read lossily).
    pub fn into_reply(self) -> Reply {
        Reply {
            json: Reply::is_json(self.content_type.as_deref()),
            cause: self.unavailable_cause,
            ..Reply::text(self.status, String::from_utf8_lossy(&self.body).into_owned())
        }
    }

    /// An internal call's answer read as a replica's reply.
    pub fn of_rpc(r: rpc::Response) -> ReplicaReply {
        ReplicaReply {
            status: r.status,
            content_type: r.header(CONTENT_TYPE.as_str()).map(str::to_string),
            unavailable_cause: r.header(UNAVAILABLE_CAUSE).map(str::to_string),
            body: r.body,
        }
    }

    /// As the client gets it over HTTP: status, content type and body unchanged. A status
    /// that is no valid code is sent as a 502.
    pub fn http(&self) -> actix_web::HttpResponse {
        use actix_web::http::StatusCode;
        let mut b =
            actix_web::HttpResponse::build(StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY));
        if let Some(ct) = &self.content_type {
            b.insert_header((actix_web::http::header::CONTENT_TYPE, ct.as_str()));
        }
        if let Some(cause) = &self.unavailable_cause {
            b.insert_header((UNAVAILABLE_CAUSE, cause.as_str()));
        }
        b.body(self.body.clone())
    }

    /// As the answer of an internal call: the same status, headers and body.
    pub fn into_rpc(self) -> rpc::Response {
        let mut headers = Vec::new();
        if let Some(ct) = self.content_type {
            headers.push((CONTENT_TYPE.as_str().to_string(), ct));
        }
        if let Some(cause) = self.unavailable_cause {
            headers.push((UNAVAILABLE_CAUSE.to_string(), cause));
        }
        rpc::Response { status: self.status, headers, body: self.body }
    }
}

impl From<Reply> for ReplicaReply {
    fn from(r: Reply) -> ReplicaReply {
        ReplicaReply {
            status: r.status,
            content_type: Some(r.content_type().to_string()),
            unavailable_cause: r.cause,
            body: Bytes::from(r.body),
        }
    }
}

/// Why no answer came back from a replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No answer within the request's timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made (refused, unreachable).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke, or the answer could not be read.
    #[error("{0}")]
    Broken(String),
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> SendError {
        if e.is_timeout() {
            SendError::Timeout
        } else if e.is_connect() {
            SendError::Connect(root_cause(&e))
        } else {
            SendError::Broken(root_cause(&e))
        }
    }
}

/// What the coordinator does with the result of one forwarded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Pass this answer on to the client: success, business rejection, or a failure the
    /// replica reported itself.
    Answer(ReplicaReply),
    /// The replica is not the key's primary (or our epoch is stale): adopt its view and retry.
    Misdirected(View),
    /// The replica did not answer: the client gets a 503. The one outcome eviction may act on.
    Unavailable(String),
}

/// The reason [`classify`] gives a primary's refusal for want of a read lease.
pub const NO_LEASE_REASON: &str = "replica holds no read lease";

/// Classifies the result of forwarding a request to a replica.
pub fn classify(result: Result<ReplicaReply, SendError>) -> Outcome {
    match result {
        Err(e) => Outcome::Unavailable(e.to_string()),
        Ok(r) if r.status == STATUS_MISDIRECTED => match serde_json::from_slice::<View>(&r.body) {
            Ok(view) => Outcome::Misdirected(view),
            // Only a replica speaking another protocol answers this: not a usable answer.
            Err(e) => Outcome::Unavailable(format!("misdirected reply without a view: {e}")),
        },
        // A replica that lost its data answers nothing useful until it has re-joined.
        Ok(r) if r.status == 503 && r.unavailable_cause.as_deref() == Some(RECOVERING) => {
            Outcome::Unavailable("replica is recovering its data".into())
        }
        // A replica without a read lease may have been deposed: look for a newer view.
        Ok(r) if r.status == 503 && r.unavailable_cause.as_deref() == Some(NO_LEASE) => {
            Outcome::Unavailable(NO_LEASE_REASON.into())
        }
        // The replica's own failure (its store cannot write, a corrupt document): not an
        // answer about the request. The coordinator re-probes it and evicts it if it no
        // longer reports healthy (a store that fails stops it from doing so), then retries
        // at the key's new primary with the same request id.
        Ok(r) if r.status == 500 => Outcome::Unavailable(format!(
            "replica failed: {}",
            String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
        )),
        Ok(r) => Outcome::Answer(r),
    }
}

/// One request to send to a replica.
#[derive(Clone, Debug)]
pub struct Outgoing<'a> {
    /// GET or POST.
    pub method: reqwest::Method,
    /// The original path and query, unchanged.
    pub path_and_query: &'a str,
    /// The gateway's request id.
    pub request_id: &'a str,
    /// The epoch of the view the request was routed by.
    pub epoch: u64,
    /// The key minted for a create call.
    pub minted: Option<&'a str>,
    /// The body to send.
    pub body: Bytes,
    /// The body's content type, if any.
    pub content_type: Option<&'a str>,
    /// Longest wait for the answer.
    pub timeout: Duration,
}

/// Sends requests to the service's replicas over pooled clients (cheap to clone: the clones
/// share the pools).
#[derive(Clone)]
pub struct Forwarder {
    /// The connection to each replica that carries forwarded requests ([`Forwarder::send`],
    /// [`net::rpc`]): many requests in flight on one connection, answers in any order.
    /// It is used only from request handlers. A connection's tasks run on the runtime of the
    /// task that opened it; connections opened by background work (the view asked at start,
    /// probes, anti-entropy rounds) would run on the process's multi-thread runtime, and
    /// every forwarded request on them would cross threads twice (seen as ~13 % of a
    /// coordinator's CPU on its tokio threads when this hop used a shared HTTP pool). Kept
    /// apart, with one HTTP worker (the default) every forwarded request stays on the
    /// worker's thread.
    rpc: std::sync::Arc<Vec<net::rpc::Client>>,
    /// The pooled client of everything else: internal calls, probes, membership.
    http: reqwest::Client,
    /// Base URL (`http://host:port`) per replica id, parsed once.
    bases: Vec<Endpoint>,
    /// Whether the replicas accept this coordinator's secret.
    standing: SecretStanding,
    /// Replicas this coordinator is cut off from by the test-only fault hook: every send to
    /// them fails as a refused connection would.
    #[cfg(feature = "fault-hooks")]
    pub cut: std::sync::Arc<std::sync::RwLock<std::collections::HashSet<u32>>>,
}

impl Forwarder {
    /// A forwarder to the replicas at `addrs` (`host:port`, id = index).
    pub fn new(addrs: &[String], secret: &str) -> Forwarder {
        let standing = SecretStanding::default();
        let http = net::client::internal_builder(secret)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("http client");
        Forwarder {
            rpc: std::sync::Arc::new(
                addrs
                    .iter()
                    .map(|a| net::rpc::Client::new(a, secret, true, CONNECT_TIMEOUT).reporting_to(&standing))
                    .collect(),
            ),
            http,
            bases: addrs.iter().map(|a| Endpoint::new(a)).collect(),
            standing,
            #[cfg(feature = "fault-hooks")]
            cut: Default::default(),
        }
    }

    /// Why this coordinator must not report itself healthy because the replicas refuse its
    /// secret ([`net::standing`]).
    pub fn secret_refusal(&self) -> Option<String> {
        self.standing.refusal()
    }

    /// Number of configured replicas.
    pub fn replicas(&self) -> u32 {
        self.bases.len() as u32
    }

    /// Forwards a request to replica `id` and reads its whole answer, within `out.timeout`.
    /// The path and query go out exactly as they came in, so the replica parses the same key
    /// the coordinator routed by.
    pub async fn send(&self, id: u32, out: &Outgoing<'_>) -> Result<ReplicaReply, SendError> {
        let rpc = &self.rpc[self.reachable(id)?];
        let method = match out.method {
            reqwest::Method::GET => Method::Get,
            reqwest::Method::POST => Method::Post,
            ref m => return Err(SendError::Broken(format!("method {m} is not forwarded"))),
        };
        let mut headers =
            vec![(REQUEST_ID.to_string(), out.request_id.to_string()), (EPOCH.to_string(), out.epoch.to_string())];
        if let Some(key) = out.minted {
            headers.push((MINTED_KEY.to_string(), key.to_string()));
        }
        if let Some(ct) = out.content_type {
            headers.push((CONTENT_TYPE.as_str().to_string(), ct.to_string()));
        }
        let request = rpc::Request { method, path: out.path_and_query.to_string(), headers, body: out.body.clone() };
        match rpc.call(&request, out.timeout).await {
            Ok(r) => Ok(ReplicaReply::of_rpc(r)),
            Err(rpc::Error::Timeout(_)) => Err(SendError::Timeout),
            Err(rpc::Error::Connect(why)) => Err(SendError::Connect(why)),
            Err(rpc::Error::Closed(why)) => Err(SendError::Broken(why)),
        }
    }

    /// Calls an internal GET endpoint (`/internal/view`, `/internal/digest`) of replica `id`.
    pub async fn get_internal(&self, id: u32, path: &str, timeout: Duration) -> Result<ReplicaReply, SendError> {
        let url = self.url(id, path)?;
        let resp = self.http.get(url).timeout(timeout).send().await?;
        self.read(resp, path != "/health").await
    }

    /// Calls an internal POST endpoint (`/internal/push/..`) of replica `id`.
    pub async fn post_internal(&self, id: u32, path: &str, timeout: Duration) -> Result<ReplicaReply, SendError> {
        let url = self.url(id, path)?;
        let resp = self.http.post(url).timeout(timeout).send().await?;
        self.read(resp, true).await
    }

    /// Calls an internal POST endpoint of replica `id` with a JSON body.
    pub async fn post_internal_json(
        &self,
        id: u32,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<ReplicaReply, SendError> {
        let url = self.url(id, path)?;
        let resp =
            self.http.post(url).timeout(timeout).header(CONTENT_TYPE, "application/json").body(body).send().await?;
        self.read(resp, true).await
    }

    /// Sends a membership message to replica `id` and reads its reply.
    pub async fn paxos(
        &self,
        id: u32,
        request: &decide::paxos::Request,
        timeout: Duration,
    ) -> Result<decide::paxos::Reply, SendError> {
        let url = self.url(id, "/internal/paxos")?;
        let resp = self.http.post(url).timeout(timeout).json(request).send().await?;
        let r = self.read(resp, true).await?;
        if r.status != 200 {
            return Err(SendError::Connect(format!("replica {id} answered {} to a membership message", r.status)));
        }
        serde_json::from_slice(&r.body).map_err(|e| SendError::Connect(format!("replica {id}: unreadable reply: {e}")))
    }

    /// Whether replica `id` may be sent to: it exists, and (in builds with fault hooks) this
    /// coordinator is not cut off from it.
    fn reachable(&self, id: u32) -> Result<usize, SendError> {
        #[cfg(feature = "fault-hooks")]
        if self.cut.read().unwrap().contains(&id) {
            return Err(SendError::Connect(format!("replica {id} is cut off by a fault hook")));
        }
        if id >= self.replicas() {
            return Err(SendError::Connect(format!("no replica {id}")));
        }
        Ok(id as usize)
    }

    /// The URL of `path_and_query` at replica `id`. A malformed address fails the request as
    /// reqwest's parse of the whole URL did (not a connection failure).
    fn url(&self, id: u32, path_and_query: &str) -> Result<reqwest::Url, SendError> {
        self.bases[self.reachable(id)?].url(path_and_query).map_err(SendError::Broken)
    }

    /// Reads a replica's answer; `guarded` when the path needs the secret, so that the
    /// answer tells whether the replica accepts it.
    async fn read(&self, resp: reqwest::Response, guarded: bool) -> Result<ReplicaReply, SendError> {
        if guarded {
            let url = resp.url();
            let peer = format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(80));
            self.standing.answered(&peer, resp.status().as_u16());
        }
        read(resp).await
    }
}

async fn read(resp: reqwest::Response) -> Result<ReplicaReply, SendError> {
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = resp.status().as_u16();
    let content_type = header(CONTENT_TYPE.as_str());
    let unavailable_cause = header(UNAVAILABLE_CAUSE);
    let body = resp.bytes().await?;
    Ok(ReplicaReply { status, content_type, unavailable_cause, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> ReplicaReply {
        ReplicaReply { status, content_type: None, unavailable_cause: None, body: Bytes::from(body.to_string()) }
    }

    #[test]
    fn classification() {
        let view = View { epoch: 4, members: vec![0, 2], learners: vec![1] };
        let view_json = serde_json::to_string(&view).unwrap();
        let answers = [200, 400, 403, 404, 503];
        for status in answers {
            let r = reply(status, "x");
            assert_eq!(classify(Ok(r.clone())), Outcome::Answer(r), "{status}");
        }
        // A replica's own failure is re-probed, not passed on.
        assert_eq!(
            classify(Ok(reply(500, "storage: disk full"))),
            Outcome::Unavailable("replica failed: storage: disk full".into())
        );
        assert_eq!(classify(Ok(reply(421, &view_json))), Outcome::Misdirected(view));
        assert!(matches!(classify(Ok(reply(421, "not a view"))), Outcome::Unavailable(_)));
        for e in [SendError::Timeout, SendError::Connect("refused".into()), SendError::Broken("reset".into())] {
            assert_eq!(classify(Err(e.clone())), Outcome::Unavailable(e.to_string()));
        }
        // A replica's own 503 with a cause that a newer view may cure is not an answer.
        for (cause, answer) in [(RECOVERING, false), (NO_LEASE, false), ("quorum", true), ("dependency", true)] {
            let r = ReplicaReply { unavailable_cause: Some(cause.into()), ..reply(503, "x") };
            assert_eq!(classify(Ok(r.clone())) == Outcome::Answer(r), answer, "{cause}");
        }
    }
}
