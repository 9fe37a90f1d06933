//! Fan-out of written states from a primary to one peer, batched: concurrent writes to one
//! peer share one request (and so one group commit on the peer), so throughput does not pay
//! one HTTP request and one fsync per write.
//!
//! Each peer has a queue and a sender task ([`SENDERS_PER_PEER`]). A sender takes every job waiting in the
//! queue (up to a cap), sends their records in one `/internal/replicate` request, and tells
//! every job the outcome. Batches to one peer may overtake each other; that is safe because
//! peers apply a state only if its version is higher than theirs.
//!
//! The request body is binary: one frame of the store's log format ([`crate::storage::frame`]),
//! tagged with the batch's epoch, holding a document entry per record. A write's records are
//! encoded once ([`Encoded`]) and the frame of a batch is their concatenation, whatever the
//! number of peers; the peer reads the records back with [`decode_batch`]. JSON cost a
//! record a hex encoding of its hash and an escaped copy of its body on the primary, and the
//! reverse on every peer.

use crate::batching::BatchQueue;
use crate::node::ReplicateBatch;
use crate::storage::frame::{decode, entries, push_doc, read_frame, seal, ENTRY_DOC, FRAME_HEAD};
use crate::storage::Record;
use crate::wire::{EPOCH, SECRET};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The media type of a replicate request's body.
pub const BATCH_TYPE: &str = "application/octet-stream";

/// Records encoded once as frame entries, to be sent to every peer.
#[derive(Debug)]
pub struct Encoded {
    records: usize,
    entries: Vec<u8>,
}

impl Encoded {
    /// Encodes `records` as document entries.
    pub fn new(records: &[Record]) -> Encoded {
        let mut entries = Vec::with_capacity(records.iter().map(|r| 60 + r.key.len() + r.body.len()).sum());
        for r in records {
            push_doc(&mut entries, r);
        }
        Encoded { records: records.len(), entries }
    }
}

/// The body of a replicate request: one frame tagged `epoch` with the given entries.
fn batch_body<'a>(epoch: u64, parts: impl Iterator<Item = &'a Encoded> + Clone) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEAD + parts.clone().map(|p| p.entries.len()).sum::<usize>());
    frame.resize(FRAME_HEAD, 0);
    for p in parts {
        frame.extend_from_slice(&p.entries);
    }
    seal(&mut frame, epoch);
    frame
}

/// Reads a replicate request's body: exactly one intact frame of document entries.
pub fn decode_batch(body: &[u8]) -> Result<ReplicateBatch, String> {
    let (epoch, payload, rest) = read_frame(body).ok_or("not an intact frame")?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame", rest.len()));
    }
    let mut records = Vec::new();
    for (kind, key, value) in entries(payload).map_err(|e| e.to_string())? {
        if kind != ENTRY_DOC {
            return Err(format!("entry of kind {kind} in a batch"));
        }
        records.push(decode(key, value).map_err(|e| e.to_string())?);
    }
    Ok(ReplicateBatch { epoch, records })
}

/// Requests in flight to one peer at once. One: the writes made while a batch is on its way
/// wait and go together in the next one, so under load a batch carries many states, and an
/// idle link still sends a lone write at once. Measured with 64 checkout connections (3
/// replicas per service): one sender took 3.6 ms of cluster CPU per checkout and a p99 of
/// 371 ms, four senders 3.9–4.2 ms and 566–762 ms (their batches were mostly of one state).
pub const SENDERS_PER_PEER: usize = 1;
/// Most records in one request: bounds a request's size (about 0.5 KiB per record).
pub const MAX_BATCH_RECORDS: usize = 4096;

/// Why a peer did not acknowledge a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The peer holds a newer view: the batch's epoch is stale. Carries the peer's view.
    Stale(crate::wire::View),
    /// No acknowledgement: refused, timed out, or failed on the peer.
    Failed(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Stale(v) => write!(f, "stale epoch (peer has view {})", v.epoch),
            SendError::Failed(why) => f.write_str(why),
        }
    }
}

struct Job {
    epoch: u64,
    records: Arc<Encoded>,
    done: oneshot::Sender<Result<(), SendError>>,
}

/// The batching link to one peer. Its sender starts on the first send, on the runtime of the
/// task that sends ([`BatchQueue`]): the write handler's thread, with the link's own client.
pub struct PeerLink {
    peer: u32,
    /// Parsed once, not by reqwest for every batch (which re-parses the host, IDNA included).
    url: Arc<Result<reqwest::Url, String>>,
    http: reqwest::Client,
    secret: Arc<str>,
    queue: BatchQueue<Job>,
}

impl PeerLink {
    /// A link to the replica at `base` (`http://host:port`); its sender starts on first use.
    pub fn spawn(peer: u32, base: String, http: reqwest::Client, secret: String) -> PeerLink {
        let url = Arc::new(reqwest::Url::parse(&format!("{base}/internal/replicate")).map_err(|e| e.to_string()));
        PeerLink { peer, url, http, secret: secret.into(), queue: BatchQueue::default() }
    }

    /// Sends states made under `epoch` and waits for the peer's acknowledgement.
    pub async fn send(&self, epoch: u64, records: Arc<Encoded>) -> Result<(), SendError> {
        let (done, wait) = oneshot::channel();
        let job = Job { epoch, records, done };
        self.queue
            .push(
                job,
                SENDERS_PER_PEER,
                MAX_BATCH_RECORDS,
                |j| j.records.records,
                || {
                    let (peer, url, http, secret) =
                        (self.peer, self.url.clone(), self.http.clone(), self.secret.clone());
                    move |group| {
                        let (url, http, secret) = (url.clone(), http.clone(), secret.clone());
                        async move { send_group(peer, &http, &url, &secret, group).await }
                    }
                },
            )
            .map_err(|_| SendError::Failed("peer link closed".into()))?;
        wait.await.map_err(|_| SendError::Failed("peer link dropped the write".into()))?
    }
}

/// Sends a group, one request per epoch in it (a batch is fenced by one epoch, so states made
/// under different views never travel under the newer one's epoch).
async fn send_group(
    peer: u32,
    http: &reqwest::Client,
    url: &Result<reqwest::Url, String>,
    secret: &str,
    mut group: Vec<Job>,
) {
    group.sort_by_key(|j| j.epoch);
    while !group.is_empty() {
        let epoch = group[0].epoch;
        let split = group.iter().position(|j| j.epoch != epoch).unwrap_or(group.len());
        let rest = group.split_off(split);
        let body = batch_body(epoch, group.iter().map(|j| &*j.records));
        let outcome = match url {
            Ok(url) => send_batch(peer, http, url, secret, epoch, body).await,
            Err(e) => Err(SendError::Failed(format!("replica {peer}: bad address: {e}"))),
        };
        for job in group {
            let _ = job.done.send(outcome.clone());
        }
        group = rest;
    }
}

/// Sends one batch and reads the peer's verdict.
async fn send_batch(
    peer: u32,
    http: &reqwest::Client,
    url: &reqwest::Url,
    secret: &str,
    epoch: u64,
    body: Vec<u8>,
) -> Result<(), SendError> {
    let request = http
        .post(url.clone())
        .header(SECRET, secret)
        .header(EPOCH, epoch)
        .header(reqwest::header::CONTENT_TYPE, BATCH_TYPE)
        .body(body);
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().as_u16() == crate::wire::STATUS_MISDIRECTED => match r.json().await {
            Ok(view) => Err(SendError::Stale(view)),
            Err(e) => Err(SendError::Failed(format!("replica {peer}: misdirected without a view: {e}"))),
        },
        Ok(r) => Err(SendError::Failed(format!("replica {peer} answered {}", r.status()))),
        Err(e) => Err(SendError::Failed(format!("replica {peer}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;
    use actix_web::{web, App, HttpResponse, HttpServer};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake peer that counts requests and records, answering `status`.
    async fn peer(status: u16) -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let c = counts.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let c = c.clone();
            App::new().app_data(web::PayloadConfig::new(1 << 26)).route(
                "/internal/replicate",
                web::post().to(move |b: web::Bytes| {
                    let c = c.clone();
                    async move {
                        let b = decode_batch(&b).unwrap();
                        c.0.fetch_add(1, Ordering::SeqCst);
                        c.1.fetch_add(b.records.len(), Ordering::SeqCst);
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
                    }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        (format!("http://{addr}"), counts)
    }

    fn recs(i: usize) -> Arc<Encoded> {
        Arc::new(Encoded::new(&[Record::new(format!("k{i}"), Version { epoch: 1, seq: 1 }, "{}".into())]))
    }

    #[test]
    fn a_batch_reads_back_as_its_records() {
        let v = |seq| Version { epoch: 3, seq };
        let a = [Record::new("a".into(), v(1), r#"{"x":"\"quoted\""}"#.into())];
        let b = [Record::new("b".into(), v(2), "{}".into()), Record::new("c".into(), v(7), "[1]".into())];
        let body = batch_body(9, [Encoded::new(&a), Encoded::new(&b)].iter());
        let batch = decode_batch(&body).unwrap();
        assert_eq!(batch.epoch, 9);
        assert_eq!(batch.records, [&a[..], &b[..]].concat());
        assert!(batch.records.iter().all(Record::hash_ok));
        // Cut, extended or altered bodies are refused.
        assert!(decode_batch(&body[..body.len() - 1]).is_err());
        assert!(decode_batch(&[&body[..], b"x"].concat()).is_err());
        let mut bad = body.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_batch(&bad).is_err());
        assert!(decode_batch(b"").is_err());
    }

    #[actix_web::test]
    async fn concurrent_writes_share_requests() {
        let (base, counts) = peer(200).await;
        let link = Arc::new(PeerLink::spawn(1, base, reqwest::Client::new(), "s".into()));
        let sends = (0..200).map(|i| {
            let link = link.clone();
            async move { link.send(1, recs(i)).await }
        });
        let results = futures::future::join_all(sends).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(counts.1.load(Ordering::SeqCst), 200, "every record arrived");
        let requests = counts.0.load(Ordering::SeqCst);
        assert!(requests < 200, "200 concurrent writes took {requests} requests");
    }

    #[actix_web::test]
    async fn a_failing_peer_fails_every_waiting_write() {
        let (base, _) = peer(500).await;
        let link = PeerLink::spawn(1, base, reqwest::Client::new(), "s".into());
        let err = link.send(1, recs(0)).await.unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
        // Nobody listens here: a refused connection is an error, not a hang.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let link = PeerLink::spawn(2, format!("http://{dead}"), reqwest::Client::new(), "s".into());
        assert!(link.send(1, recs(0)).await.is_err());
    }
}
