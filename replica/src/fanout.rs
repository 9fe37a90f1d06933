//! Fan-out of written states from a primary to one peer, batched: concurrent writes to one
//! peer share one request (and so one group commit on the peer), so throughput does not pay
//! one HTTP request and one fsync per write.
//!
//! Each peer has a queue and a sender task ([`SENDERS_PER_PEER`]). A sender takes every job waiting in the
//! queue (up to a cap), sends their records in one `/internal/replicate` call over the
//! peer's internal connection ([`net::rpc`]), and tells
//! every job the outcome. Batches to one peer may overtake each other; that is safe because
//! peers apply a state only if its version is higher than theirs.
//!
//! The request body is binary: one frame of the store's log format ([`store::frame`]),
//! tagged with the batch's epoch, holding a document entry per record. A write's records are
//! encoded once ([`Encoded`]) and the frame of a batch is their concatenation, whatever the
//! number of peers; the peer reads the records back with [`decode_batch`]. JSON cost a
//! record a hex encoding of its hash and an escaped copy of its body on the primary, and the
//! reverse on every peer.

use crate::node::ReplicateBatch;
use actix_web::web::Bytes;
use model::wire::EPOCH;
use net::batching::BatchQueue;
use std::sync::Arc;
use std::time::Duration;
use store::frame::{decode, entries, push_doc, read_frame, seal, ENTRY_DOC, FRAME_HEAD};
use store::Record;
use tokio::sync::oneshot;

/// The media type of a replicate request's body.
pub const BATCH_TYPE: &str = "application/octet-stream";
/// Where a peer takes a batch.
pub const REPLICATE_PATH: &str = "/internal/replicate";
/// The header that marks a replicate request as a page of a full copy ([`PeerLink::send_copy`]).
pub const COPY: &str = "x-webshop-copy";

/// Records encoded once as frame entries, to be sent to every peer.
#[derive(Debug)]
pub struct Encoded {
    records: usize,
    entries: Vec<u8>,
    /// The records' keys: a peer's refusal of some states ([`SendError::Newer`]) goes to the
    /// writes whose keys it names, not to every write its batch carried.
    keys: Vec<String>,
}

impl Encoded {
    /// Encodes `records` as document entries.
    pub fn new(records: &[Record]) -> Encoded {
        let mut entries = Vec::with_capacity(records.iter().map(|r| 60 + r.key.len() + r.body.len()).sum());
        for r in records {
            push_doc(&mut entries, r);
        }
        Encoded { records: records.len(), entries, keys: records.iter().map(|r| r.key.clone()).collect() }
    }
}

/// What one write of a batch learns from the batch's outcome: a refusal for newer states
/// concerns only the writes of the documents it names (with their side records); the others
/// were applied (or already held).
fn outcome_for(outcome: &Result<(), SendError>, records: &Encoded) -> Result<(), SendError> {
    match outcome {
        Err(SendError::Newer(newer)) => {
            // By document: a refused document comes with every side record the peer holds
            // beside it, also those this write did not carry.
            let mine: Vec<Record> = newer
                .iter()
                .filter(|r| records.keys.iter().any(|k| model::side::doc_of(k) == model::side::doc_of(&r.key)))
                .cloned()
                .collect();
            if mine.is_empty() {
                Ok(())
            } else {
                Err(SendError::Newer(mine))
            }
        }
        other => other.clone(),
    }
}

/// The body of a replicate request: one frame tagged `epoch` with the given entries.
pub(crate) fn batch_body<'a>(epoch: u64, parts: impl Iterator<Item = &'a Encoded> + Clone) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEAD + parts.clone().map(|p| p.entries.len()).sum::<usize>());
    frame.resize(FRAME_HEAD, 0);
    for p in parts {
        frame.extend_from_slice(&p.entries);
    }
    seal(&mut frame, epoch);
    frame
}

/// Reads a replicate request's body: exactly one intact frame of document entries (`copy`:
/// the request carried [`COPY`]).
pub fn decode_batch(body: &[u8], copy: bool) -> Result<ReplicateBatch, String> {
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
    Ok(ReplicateBatch { epoch, records, copy })
}

/// Requests in flight to one peer at once. One: the writes made while a batch is on its way
/// wait and go together in the next one, so under load a batch carries many states, and an
/// idle link still sends a lone write at once. Four senders cost more CPU and a longer tail
/// (docs/performance.md, "Speed work, second round", item 2).
pub const SENDERS_PER_PEER: usize = 1;
/// Most records in one request: bounds a request's size (about 0.5 KiB per record).
pub const MAX_BATCH_RECORDS: usize = 4096;

/// Why a peer did not acknowledge a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The peer holds a newer view: the batch's epoch is stale. Carries the peer's view.
    Stale(model::wire::View),
    /// The peer holds newer states of some of the keys (the sender is behind): those states.
    Newer(Vec<Record>),
    /// No acknowledgement: refused, timed out, or failed on the peer.
    Failed(String),
}

impl SendError {
    /// The refusal as the fan-out policy sees it (`decide::fanout`).
    pub fn refusal(&self) -> decide::fanout::Refusal {
        match self {
            SendError::Stale(_) => decide::fanout::Refusal::Stale,
            SendError::Newer(_) => decide::fanout::Refusal::Newer,
            SendError::Failed(_) => decide::fanout::Refusal::Silent,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Stale(v) => write!(f, "stale epoch (peer has view {})", v.epoch),
            SendError::Newer(r) => write!(f, "peer holds newer states of {} keys", r.len()),
            SendError::Failed(why) => f.write_str(why),
        }
    }
}

struct Job {
    epoch: u64,
    records: Arc<Encoded>,
    done: oneshot::Sender<Result<(), SendError>>,
}

/// Where and how one peer's batches are sent.
struct Target {
    peer: u32,
    /// The connection to the peer ([`net::rpc`]).
    rpc: net::rpc::Client,
    /// Longest wait for a batch's answer, connecting included.
    timeout: Duration,
}

/// The batching link to one peer. Its sender starts on the first send, on the runtime of the
/// task that sends ([`BatchQueue`]): the write handler's thread, with the link's own client.
pub struct PeerLink {
    target: Arc<Target>,
    queue: BatchQueue<Job>,
}

impl PeerLink {
    /// A link to the replica at `authority` (`host:port`), each batch answered within
    /// `timeout`; its sender starts on first use. The connection keeps Nagle's algorithm on
    /// (`crate::node`), and tells `standing` whether the peer accepts the secret.
    pub fn spawn(
        peer: u32,
        authority: &str,
        secret: &str,
        timeout: Duration,
        standing: &net::standing::SecretStanding,
    ) -> PeerLink {
        let rpc = net::rpc::Client::new(authority, secret, false, timeout).reporting_to(standing);
        PeerLink { target: Arc::new(Target { peer, rpc, timeout }), queue: BatchQueue::default() }
    }

    /// Sends a page of a full copy (states already acknowledged, streamed to a learner) on
    /// its own, outside the write batches, and waits for the peer's acknowledgement.
    pub async fn send_copy(&self, epoch: u64, records: &Encoded) -> Result<(), SendError> {
        send_batch(&self.target, epoch, batch_body(epoch, std::iter::once(records)), true).await
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
                    let target = self.target.clone();
                    move |group| {
                        let target = target.clone();
                        async move { send_group(&target, group).await }
                    }
                },
            )
            .map_err(|_| SendError::Failed("peer link closed".into()))?;
        wait.await.map_err(|_| SendError::Failed("peer link dropped the write".into()))?
    }
}

/// Sends a group, one request per epoch in it (a batch is fenced by one epoch, so states made
/// under different views never travel under the newer one's epoch).
async fn send_group(target: &Target, mut group: Vec<Job>) {
    group.sort_by_key(|j| j.epoch);
    while !group.is_empty() {
        let epoch = group[0].epoch;
        let split = group.iter().position(|j| j.epoch != epoch).unwrap_or(group.len());
        let rest = group.split_off(split);
        let body = batch_body(epoch, group.iter().map(|j| &*j.records));
        let outcome = send_batch(target, epoch, body, false).await;
        for job in group {
            let _ = job.done.send(outcome_for(&outcome, &job.records));
        }
        group = rest;
    }
}

/// Sends one batch and reads the peer's verdict. A `copy` (a full member's documents streamed
/// to a learner) is applied where newer and never refused for holding newer states: the
/// learner takes every new write while the copy is on its way.
async fn send_batch(target: &Target, epoch: u64, body: Vec<u8>, copy: bool) -> Result<(), SendError> {
    let peer = target.peer;
    let mut headers =
        vec![(EPOCH.to_string(), epoch.to_string()), ("content-type".to_string(), BATCH_TYPE.to_string())];
    if copy {
        headers.push((COPY.to_string(), "1".to_string()));
    }
    let request = net::rpc::Request {
        method: model::routing::Method::Post,
        path: REPLICATE_PATH.to_string(),
        headers,
        body: Bytes::from(body),
    };
    let answer = target
        .rpc
        .call(&request, target.timeout)
        .await
        .map_err(|e| SendError::Failed(format!("replica {peer}: {e}")))?;
    match answer.status {
        200..=299 => Ok(()),
        model::wire::STATUS_MISDIRECTED => match serde_json::from_slice(&answer.body) {
            Ok(view) => Err(SendError::Stale(view)),
            Err(e) => Err(SendError::Failed(format!("replica {peer}: misdirected without a view: {e}"))),
        },
        STATUS_HOLDS_NEWER => match serde_json::from_slice(&answer.body) {
            Ok(records) => Err(SendError::Newer(records)),
            Err(e) => Err(SendError::Failed(format!("replica {peer}: holds newer states, unreadable: {e}"))),
        },
        status => Err(SendError::Failed(format!("replica {peer} answered {status}"))),
    }
}

/// The status of a replicate request refused because the peer holds newer states of some of
/// its keys; the body lists them (JSON records).
pub const STATUS_HOLDS_NEWER: u16 = 409;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actix_web::{web, App, HttpRequest, HttpServer};
    use model::version::Version;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A refusal for newer states reaches only the writes of the keys it names; the others
    /// of the same batch were applied.
    #[test]
    fn a_refusal_for_newer_states_concerns_only_the_writes_of_its_keys() {
        let v = Version { epoch: 1, seq: 1 };
        let held = Record::new("b".into(), Version { epoch: 1, seq: 9 }, "{}".into());
        let outcome = Err(SendError::Newer(vec![held.clone()]));
        let a = Encoded::new(&[Record::new("a".into(), v, "{}".into())]);
        let ab = Encoded::new(&[Record::new("a".into(), v, "{}".into()), Record::new("b".into(), v, "{}".into())]);
        assert_eq!(outcome_for(&outcome, &a), Ok(()));
        assert_eq!(outcome_for(&outcome, &ab), Err(SendError::Newer(vec![held])));
        let failed = Err(SendError::Failed("timeout".into()));
        assert_eq!(outcome_for(&failed, &a), failed);
        assert_eq!(outcome_for(&Ok(()), &a), Ok(()));
    }

    /// A peer refusing a document sends the side records it holds beside it: those the write
    /// did not carry (a request record of a write the sender never saw) reach the write too,
    /// so that the sender takes them with the document (else a retry of that request finds
    /// no record at the sender and is applied a second time).
    #[test]
    fn a_refusal_carries_the_side_records_of_a_refused_document_the_write_did_not_send() {
        let v = Version { epoch: 1, seq: 1 };
        let newer = Version { epoch: 2, seq: 3 };
        let held = Record::new("a".into(), newer, "{}".into());
        let theirs = Record::new(model::side::key("a", "r:theirs"), newer, model::side::body(u64::MAX, "{}"));
        let other = Record::new(model::side::key("b", "r:x"), newer, model::side::body(u64::MAX, "{}"));
        let outcome = Err(SendError::Newer(vec![held.clone(), theirs.clone(), other]));
        let mine = Record::new(model::side::key("a", "r:mine"), v, model::side::body(u64::MAX, "{}"));
        let a = Encoded::new(&[Record::new("a".into(), v, "{}".into()), mine]);
        assert_eq!(outcome_for(&outcome, &a), Err(SendError::Newer(vec![held, theirs])));
    }

    /// A fake peer that counts requests and records, answering `status`.
    pub(crate) async fn peer(status: u16) -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        gated_peer(status, None).await
    }

    /// [`peer`], answering each request only once it takes a permit of `gate`, if given.
    pub(crate) async fn gated_peer(
        status: u16,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let c = counts.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            let (c, gate) = (c.clone(), gate.clone());
            App::new().route(
                net::rpc::RPC_PATH,
                web::get().to(move |req: HttpRequest, payload: web::Payload| {
                    let (c, gate) = (c.clone(), gate.clone());
                    async move {
                        net::rpc::serve(&req, payload, Default::default(), move |call| {
                            let (c, gate) = (c.clone(), gate.clone());
                            async move {
                                if let Some(g) = gate {
                                    g.acquire().await.unwrap().forget();
                                }
                                assert_eq!(call.path, REPLICATE_PATH);
                                let b = decode_batch(&call.body, false).unwrap();
                                c.0.fetch_add(1, Ordering::SeqCst);
                                c.1.fetch_add(b.records.len(), Ordering::SeqCst);
                                net::rpc::Response { status, headers: vec![], body: Bytes::new() }
                            }
                        })
                    }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        (addr.to_string(), counts)
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
        let batch = decode_batch(&body, false).unwrap();
        assert_eq!(batch.epoch, 9);
        assert_eq!(batch.records, [&a[..], &b[..]].concat());
        assert!(batch.records.iter().all(Record::hash_ok));
        // Cut, extended or altered bodies are refused.
        assert!(decode_batch(&body[..body.len() - 1], false).is_err());
        assert!(decode_batch(&[&body[..], b"x"].concat(), false).is_err());
        let mut bad = body.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(decode_batch(&bad, false).is_err());
        assert!(decode_batch(b"", false).is_err());
    }

    #[actix_web::test]
    async fn concurrent_writes_share_requests() {
        let (base, counts) = peer(200).await;
        let link = Arc::new(PeerLink::spawn(1, &base, "s", Duration::from_secs(5), &Default::default()));
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
        let link = PeerLink::spawn(1, &base, "s", Duration::from_secs(5), &Default::default());
        let err = link.send(1, recs(0)).await.unwrap_err();
        assert!(err.to_string().contains("500"), "{err}");
        // Nobody listens here: a refused connection is an error, not a hang.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let link = PeerLink::spawn(2, &dead.to_string(), "s", Duration::from_secs(5), &Default::default());
        assert!(link.send(1, recs(0)).await.is_err());
    }
}
