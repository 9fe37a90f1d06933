//! The replicated-document layer, written once and generic over a service's document type.
//!
//! A [`Table`] serializes all operations on a key (one async lock per key), keeps the
//! recent request ids of each document inside the document (bounded), each with its
//! request's fingerprint ([`crate::idempotency`]), so that a repeated request gets its first
//! answer and an id reused for another request is refused, applies a write as one atomic conditional put with the
//! next version, and hands the resulting state to the [`Node`] for fan-out before it
//! answers. Services supply only a pure decision: given the current document, what to
//! write and what to answer ([`Decision`]).

use crate::idempotency::{self, RequestKey, Seen, SeenRequest};
use crate::node::{Node, NodeError};
use crate::reply::Reply;
use crate::storage::{Expect, Put, Record};
use crate::version::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// How often a write decides again when a replicated state changed its document between
/// the read and the put. That happens only while a view change moves the key's primary here
/// (the previous primary's last states still arriving), so once or twice at most.
const CONFLICT_RETRIES: u32 = 3;

/// How many request ids a document remembers. A retry arrives within seconds of its first
/// try; 32 covers that even for a key written by many clients at once.
pub const RECENT_REQUESTS: usize = 32;

/// What a service document must be.
pub trait Doc: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Doc for T {}

/// A service's answer to a command, decided without I/O from the current document.
#[derive(Debug)]
pub enum Decision<D> {
    /// Store this document and answer this reply (remembered under the request id).
    Write(D, Reply),
    /// Answer without writing (reads, business rejections, no-ops).
    Answer(Reply),
}

/// What is stored: the service's document and its recent requests (id, fingerprint,
/// answer). Documents written before requests had fingerprints kept theirs under `recent`,
/// which is no longer read: those requests are forgotten, as if they had aged out.
#[derive(Serialize, Deserialize)]
struct Envelope<D> {
    doc: D,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    requests: VecDeque<SeenRequest>,
}

/// Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Per-key async locks; an entry lives only while someone holds or waits for it.
#[derive(Default)]
struct KeyLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a key's lock: every write to the key waits until it is dropped.
pub struct KeyGuard {
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<KeyLocks>,
}

impl KeyGuard {
    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap();
        // Release first, then drop the entry if nobody else holds a handle: new waiters
        // clone the handle under the map lock, which is held here, so this cannot race.
        let guard = self.guard.take();
        drop(guard);
        if let Some(entry) = map.get(&self.key) {
            if Arc::strong_count(entry) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

/// Errors of the replicated layer; every one of them is the system's failure, not the
/// client's.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The node could not store or replicate (see [`NodeError`]).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A stored document does not parse: corruption or a bug.
    #[error("corrupt document {0}: {1}")]
    Corrupt(String, String),
}

impl From<crate::storage::StoreError> for TableError {
    fn from(e: crate::storage::StoreError) -> Self {
        TableError::Node(NodeError::Store(e))
    }
}

/// Keys [`Table::replace_many`] writes per step: one fan-out request's worth.
pub const REPLACE_STEP: usize = crate::fanout::MAX_BATCH_RECORDS;

/// The replicated table of one service's documents.
pub struct Table<D> {
    node: Arc<Node>,
    locks: Arc<KeyLocks>,
    _doc: PhantomData<fn() -> D>,
}

impl<D: Doc> Table<D> {
    /// A table over the node's store.
    pub fn new(node: Arc<Node>) -> Table<D> {
        Table { node, locks: Arc::default(), _doc: PhantomData }
    }

    /// The node this table lives on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Takes the key's lock; writes through [`Table::write_locked`] while holding it.
    pub async fn lock(&self, key: &str) -> KeyGuard {
        let m = {
            let mut map = self.locks.map.lock().unwrap();
            map.entry(key.to_string()).or_default().clone()
        };
        let g = m.lock_owned().await;
        KeyGuard { key: key.to_string(), guard: Some(g), locks: self.locks.clone() }
    }

    /// The current document (no lock: reads see the last committed state).
    pub async fn read(&self, key: &str) -> Result<Option<D>, TableError> {
        Ok(self.load(key).await?.map(|(_, env)| env.doc))
    }

    /// What a request with `request` gets on this key ([`idempotency::check`] against the
    /// record the key's document keeps of the same id).
    pub async fn seen(&self, key: &str, request: &RequestKey) -> Result<Seen, TableError> {
        let loaded = self.load(key).await?;
        Ok(Self::seen_in(loaded.as_ref().map(|(_, env)| env), request))
    }

    fn seen_in(env: Option<&Envelope<D>>, request: &RequestKey) -> Seen {
        let stored = env.and_then(|env| env.requests.iter().find(|s| s.id == request.id));
        idempotency::check(request, stored)
    }

    /// Reads, decides and writes under the key's lock.
    pub async fn write<F>(&self, key: &str, request: Option<&RequestKey>, decide: F) -> Result<Reply, TableError>
    where
        F: Fn(Option<&D>) -> Decision<D>,
    {
        let g = self.lock(key).await;
        self.write_locked(&g, request, decide).await
    }

    /// Reads, decides and writes while the caller holds the key's lock.
    ///
    /// A repeat of a request seen before gets the first answer, and an id seen before with
    /// another request a refusal ([`idempotency::check`]); neither changes anything.
    /// Otherwise `decide` runs on the current document; a [`Decision::Write`] is stored with
    /// the next version as one conditional put, replicated, and only then answered.
    pub async fn write_locked<F>(
        &self,
        guard: &KeyGuard,
        request: Option<&RequestKey>,
        decide: F,
    ) -> Result<Reply, TableError>
    where
        F: Fn(Option<&D>) -> Decision<D>,
    {
        let key = guard.key();
        let mut attempt = 0;
        loop {
            let loaded = self.load(key).await?;
            if let Some(req) = request {
                match Self::seen_in(loaded.as_ref().map(|(_, env)| env), req) {
                    Seen::New => {}
                    Seen::Repeat(reply) => {
                        log::debug!("{key}: request {} seen before, answering its first reply", req.id);
                        return Ok(reply);
                    }
                    Seen::Reused(reply) => {
                        log::info!("{key}: request id {} reused for another request, refused", req.id);
                        return Ok(reply);
                    }
                }
            }
            let (old_version, mut requests) = match &loaded {
                Some((v, env)) => (*v, env.requests.clone()),
                None => (Version::ZERO, VecDeque::new()),
            };
            let decision = decide(loaded.as_ref().map(|(_, env)| &env.doc));
            let (doc, reply) = match decision {
                Decision::Answer(reply) => return Ok(reply),
                Decision::Write(doc, reply) => (doc, reply),
            };
            if let Some(req) = request {
                requests.push_back(SeenRequest {
                    id: req.id.clone(),
                    fingerprint: req.fingerprint.clone(),
                    reply: reply.clone(),
                    at: unix_ms(),
                });
                while requests.len() > RECENT_REQUESTS {
                    requests.pop_front();
                }
            }
            let body = serde_json::to_string(&Envelope { doc, requests }).expect("documents serialize");
            let version = old_version.next(self.node.epoch());
            let record = Record::new(key.to_string(), version, body);
            match self.node.write_primary(vec![Put { expect: Expect::Exactly(old_version), record }]).await {
                // A state replicated by the previous primary landed between the read and the
                // put (the view changed under the write): decide again on the newer state.
                Err(NodeError::Conflict(_)) if attempt < CONFLICT_RETRIES => {
                    log::info!("{key}: a replicated state landed during the write; deciding again");
                    attempt += 1;
                }
                result => {
                    result?;
                    log::debug!("{key}: request {:?} written as {version}", request.map(|r| &r.id));
                    return Ok(reply);
                }
            }
        }
    }

    /// Replaces many documents at once (batch_init), in key order and in steps of
    /// [`REPLACE_STEP`] keys: each step takes its keys' locks, writes them with their next
    /// versions in one storage call and one fan-out, and awaits that fan-out before the next
    /// step starts. The node's thread serves other requests between steps; in one step, a
    /// primary's share of a batch_init of 1,000,000 keys had held it for 3.8 s.
    pub async fn replace_many(&self, docs: Vec<(String, D)>) -> Result<(), TableError> {
        let mut docs = docs;
        docs.sort_by(|a, b| a.0.cmp(&b.0));
        docs.dedup_by(|a, b| a.0 == b.0);
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            let step: Vec<(String, D)> = docs.by_ref().take(REPLACE_STEP).collect();
            self.replace_step(step).await?;
            // A fan-out with no peer to wait for returns at once: let the others in anyway.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn replace_step(&self, docs: Vec<(String, D)>) -> Result<(), TableError> {
        let mut guards = Vec::with_capacity(docs.len());
        for (k, _) in &docs {
            guards.push(self.lock(k).await);
        }
        let keys: Vec<String> = docs.iter().map(|(k, _)| k.clone()).collect();
        let current = self.node.store().get_many(&keys).await?;
        let epoch = self.node.epoch();
        let puts = docs
            .into_iter()
            .zip(current)
            .map(|((key, doc), cur)| {
                let old = cur.map(|r| r.version).unwrap_or(Version::ZERO);
                let body =
                    serde_json::to_string(&Envelope { doc, requests: VecDeque::new() }).expect("documents serialize");
                Put { expect: Expect::Exactly(old), record: Record::new(key, old.next(epoch), body) }
            })
            .collect();
        self.node.write_primary(puts).await?;
        drop(guards);
        Ok(())
    }

    /// Up to `limit` documents with keys after `after`, in key order.
    pub async fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, D)>, TableError> {
        let recs = self.node.store().scan(after, limit).await?;
        recs.into_iter().map(|r| Ok((r.key.clone(), Self::decode(&r)?.doc))).collect()
    }

    async fn load(&self, key: &str) -> Result<Option<(Version, Envelope<D>)>, TableError> {
        self.node.ensure_replicated(key).await?;
        match self.node.store().get(key).await? {
            Some(r) => Ok(Some((r.version, Self::decode(&r)?))),
            None => Ok(None),
        }
    }

    fn decode(r: &Record) -> Result<Envelope<D>, TableError> {
        serde_json::from_str(&r.body).map_err(|e| TableError::Corrupt(r.key.clone(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemStore;

    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    struct Counter {
        n: i64,
    }

    fn table() -> Table<Counter> {
        Table::new(Arc::new(Node::standalone(Arc::new(MemStore::new()))))
    }

    fn add(by: i64) -> impl Fn(Option<&Counter>) -> Decision<Counter> {
        move |cur| {
            let n = cur.map(|c| c.n).unwrap_or(0) + by;
            Decision::Write(Counter { n }, Reply::ok_text(n.to_string()))
        }
    }

    /// The key of request `id` as a POST to `/t/k` (every test request is the same one).
    fn rq(id: &str) -> RequestKey {
        RequestKey::new(id, "POST", "/t/k")
    }

    #[tokio::test]
    async fn a_repeated_request_id_is_applied_once() {
        let t = table();
        assert_eq!(t.write("k", Some(&rq("r1")), add(5)).await.unwrap().body, "5");
        assert_eq!(t.write("k", Some(&rq("r2")), add(1)).await.unwrap().body, "6");
        // r1 again: the first answer, nothing applied.
        assert_eq!(t.write("k", Some(&rq("r1")), add(5)).await.unwrap().body, "5");
        assert_eq!(t.read("k").await.unwrap(), Some(Counter { n: 6 }));
        let rec = t.node().store().get("k").await.unwrap().unwrap();
        assert_eq!(rec.version, Version { epoch: 1, seq: 2 });
    }

    #[tokio::test]
    async fn a_request_id_reused_for_another_request_is_refused_and_changes_nothing() {
        let t = table();
        let add_funds = RequestKey::new("k1", "POST", "/payment/add_funds/u/10");
        let pay = RequestKey::new("k1", "POST", "/payment/pay/u/5");
        assert_eq!(t.write("u", Some(&add_funds), add(10)).await.unwrap().body, "10");
        let r = t.write("u", Some(&pay), add(-5)).await.unwrap();
        assert_eq!(r.status, idempotency::STATUS_KEY_REUSED, "{r:?}");
        assert_eq!(t.read("u").await.unwrap(), Some(Counter { n: 10 }));
        assert!(matches!(t.seen("u", &pay).await.unwrap(), Seen::Reused(_)));
        // The first request repeated still gets its first answer.
        assert_eq!(t.write("u", Some(&add_funds), add(10)).await.unwrap().body, "10");
        assert_eq!(t.read("u").await.unwrap(), Some(Counter { n: 10 }));
    }

    #[tokio::test]
    async fn recent_ids_are_bounded() {
        let t = table();
        for i in 0..(RECENT_REQUESTS + 5) {
            t.write("k", Some(&rq(&format!("r{i}"))), add(1)).await.unwrap();
        }
        // The oldest ids have been forgotten; the newest are remembered.
        let newest = rq(&format!("r{}", RECENT_REQUESTS + 4));
        assert_eq!(t.write("k", Some(&newest), add(100)).await.unwrap().body, (RECENT_REQUESTS + 5).to_string());
        let rec = t.node().store().get("k").await.unwrap().unwrap();
        let env: Envelope<Counter> = serde_json::from_str(&rec.body).unwrap();
        assert_eq!(env.requests.len(), RECENT_REQUESTS);
    }

    #[tokio::test]
    async fn answers_write_nothing() {
        let t = table();
        let r = t.write("k", Some(&rq("r1")), |_| Decision::Answer(Reply::bad("no"))).await.unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(t.node().store().get("k").await.unwrap(), None);
        // A rejected request id is not remembered: a retry is decided afresh.
        assert_eq!(t.write("k", Some(&rq("r1")), add(2)).await.unwrap().body, "2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_to_one_key_serialize() {
        let t = Arc::new(table());
        let mut hs = Vec::new();
        for i in 0..50 {
            let t = t.clone();
            hs.push(tokio::spawn(async move { t.write("k", Some(&rq(&format!("r{i}"))), add(1)).await.unwrap() }));
        }
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(t.read("k").await.unwrap(), Some(Counter { n: 50 }));
        assert!(t.locks.map.lock().unwrap().is_empty(), "lock entries are dropped when released");
    }

    #[tokio::test]
    async fn replace_many_bumps_versions() {
        let t = table();
        t.write("a", None, add(1)).await.unwrap();
        t.replace_many(vec![("a".into(), Counter { n: 10 }), ("b".into(), Counter { n: 20 })]).await.unwrap();
        assert_eq!(t.read("a").await.unwrap(), Some(Counter { n: 10 }));
        assert_eq!(t.read("b").await.unwrap(), Some(Counter { n: 20 }));
        let a = t.node().store().get("a").await.unwrap().unwrap();
        assert_eq!(a.version.seq, 2);
        let all = t.scan(None, 10).await.unwrap();
        assert_eq!(all.len(), 2);
    }

    #[tokio::test]
    async fn replace_many_lets_other_tasks_run_between_steps() {
        let t = Arc::new(table());
        let n = 2 * REPLACE_STEP + 1;
        let docs: Vec<(String, Counter)> = (0..n).map(|i| (format!("{i:06}"), Counter { n: i as i64 })).collect();
        // On this one-threaded runtime the watcher runs only while replace_many is suspended;
        // it notes how many documents are written each time.
        let watcher = tokio::spawn({
            let t = t.clone();
            async move {
                let mut seen = std::collections::BTreeSet::new();
                loop {
                    let written = t.scan(None, n + 1).await.unwrap().len();
                    seen.insert(written);
                    if written == n {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        t.replace_many(docs).await.unwrap();
        let seen = watcher.await.unwrap();
        assert!(
            seen.contains(&REPLACE_STEP) && seen.contains(&(2 * REPLACE_STEP)),
            "others ran between the steps, each step written whole: {seen:?}"
        );
        assert!(seen.iter().all(|w| w % REPLACE_STEP == 0 || *w == n), "{seen:?}");
        let all = t.scan(None, n + 1).await.unwrap();
        assert_eq!(all.len(), n);
        assert_eq!(all[n - 1], (format!("{:06}", n - 1), Counter { n: n as i64 - 1 }));
    }
}
