//! The replicated-document layer, written once and generic over a service's document type.
//!
//! A [`Table`] serializes all operations on a key (one async lock per key), keeps a record of
//! each request id that wrote a document beside it (a side record, [`model::side`], kept for
//! the node's request TTL however hot the document), with the request's fingerprint
//! ([`model::idempotency`]), so that a repeated request gets its first answer and an id
//! reused for another request is refused, applies a write as one atomic conditional put with the
//! next version, and hands the resulting state to the [`Node`] for fan-out before it
//! answers. Services supply only a pure decision: given the current document, what to
//! write and what to answer ([`Decision`]).

use crate::node::{Node, NodeError};
use model::idempotency::{self, RequestKey, Seen, SeenRequest};
use model::reply::Reply;
use model::side;
use model::version::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use store::{Expect, Put, Record};
use tokio::sync::OwnedMutexGuard;

/// How often a write decides again when a replicated state changed its document between
/// the read and the put. That happens only while a view change moves the key's primary here
/// (the previous primary's last states still arriving), so once or twice at most.
const CONFLICT_RETRIES: u32 = 3;

/// What a service document must be.
pub trait Doc: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Doc for T {}

/// A service's answer to a command, decided without I/O from the current document.
#[derive(Debug)]
pub enum Decision<D> {
    /// Store this document and answer this reply (remembered under the request id).
    Write(D, Reply),
    /// [`Decision::Write`], and store side records beside the document in the same write
    /// ([`model::side`]: a saga transaction's record).
    WriteWith(D, Vec<SideWrite>, Reply),
    /// Store only these side records, the document unchanged, and answer.
    WriteSides(Vec<SideWrite>, Reply),
    /// Answer without writing (reads, business rejections, no-ops).
    Answer(Reply),
}

/// A side record a decision writes beside its document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideWrite {
    /// Its name (`model::side::key` of the document and this name is its key).
    pub name: String,
    /// What it holds.
    pub payload: String,
    /// When it expires (Unix milliseconds; `u64::MAX`: kept until rewritten).
    pub expires: u64,
}

/// What is stored under a document's key: the service's document. Documents written before
/// request records moved beside them kept theirs inside (`recent`, `requests`), which is no
/// longer read: those requests are forgotten, as if they had aged out.
#[derive(Serialize, Deserialize)]
struct Envelope<D> {
    doc: D,
}

/// The name of the side record of request id `id`.
fn request_record(id: &str) -> String {
    format!("r:{id}")
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

impl From<store::StoreError> for TableError {
    fn from(e: store::StoreError) -> Self {
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
        self.load(key).await?;
        self.seen_replicated(key, request).await
    }

    /// [`Table::seen`] once the key's last write is known replicated.
    async fn seen_replicated(&self, key: &str, request: &RequestKey) -> Result<Seen, TableError> {
        Ok(self.seen_with_version(key, request).await?.0)
    }

    /// [`Table::seen_replicated`], and the stored version of the request's record (zero if
    /// none), which a new record replaces.
    async fn seen_with_version(&self, key: &str, request: &RequestKey) -> Result<(Seen, Version), TableError> {
        let name = request_record(&request.id);
        let (payload, version) = self.side_record(key, &name).await?;
        let stored = match payload {
            None => None,
            Some(p) => Some(
                serde_json::from_str::<SeenRequest>(&p)
                    .map_err(|e| TableError::Corrupt(side::key(key, &name), e.to_string()))?,
            ),
        };
        Ok((idempotency::check(request, stored.as_ref()), version))
    }

    /// The payload of document `key`'s side record `name` (`None` if it has none, or it
    /// expired: an expired record, or one undone because its write was refused by a peer,
    /// is as good as gone) and its stored version (zero if none).
    async fn side_record(&self, key: &str, name: &str) -> Result<(Option<String>, Version), TableError> {
        Ok(match self.node.store().get(&side::key(key, name)).await? {
            None => (None, Version::ZERO),
            Some(r) if side::expired(&r.body, side::now_ms()) => (None, r.version),
            Some(r) => (side::parse(&r.body).map(|(_, p)| p.to_string()), r.version),
        })
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
        self.write_inner(guard, request, None, |doc, _| decide(doc)).await
    }

    /// Reads, decides and writes under the key's lock, giving `decide` the payload of the
    /// document's side record `side` too (`None` if it has none, or it expired).
    pub async fn write_with_side<F>(&self, key: &str, side: &str, decide: F) -> Result<Reply, TableError>
    where
        F: Fn(Option<&D>, Option<&str>) -> Decision<D>,
    {
        let g = self.lock(key).await;
        self.write_inner(&g, None, Some(side), decide).await
    }

    async fn write_inner<F>(
        &self,
        guard: &KeyGuard,
        request: Option<&RequestKey>,
        side_name: Option<&str>,
        decide: F,
    ) -> Result<Reply, TableError>
    where
        F: Fn(Option<&D>, Option<&str>) -> Decision<D>,
    {
        let key = guard.key();
        let mut attempt = 0;
        loop {
            let loaded = self.load(key).await?;
            // The stored versions of the side records this write may replace.
            let mut replaced: HashMap<String, Version> = HashMap::new();
            let side_payload = match side_name {
                None => None,
                Some(name) => {
                    let (payload, version) = self.side_record(key, name).await?;
                    replaced.insert(name.to_string(), version);
                    payload
                }
            };
            if let Some(req) = request {
                let (seen, version) = self.seen_with_version(key, req).await?;
                replaced.insert(request_record(&req.id), version);
                match seen {
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
            let old_version = loaded.as_ref().map(|(v, _)| *v).unwrap_or(Version::ZERO);
            let decision = decide(loaded.as_ref().map(|(_, env)| &env.doc), side_payload.as_deref());
            let (doc, sides, reply) = match decision {
                Decision::Answer(reply) => return Ok(reply),
                Decision::Write(doc, reply) => (Some(doc), Vec::new(), reply),
                Decision::WriteWith(doc, sides, reply) => (Some(doc), sides, reply),
                Decision::WriteSides(sides, reply) => (None, sides, reply),
            };
            let mut puts = Vec::new();
            // The document's new state, unless only side records are written.
            let version = match doc {
                Some(doc) => {
                    let body = serde_json::to_string(&Envelope { doc }).expect("documents serialize");
                    let version = old_version.next(self.node.epoch());
                    puts.push(Put {
                        expect: Expect::Exactly(old_version),
                        record: Record::new(key.to_string(), version, body),
                    });
                    version
                }
                None => Version::ZERO,
            };
            // Side records go beside the document, in the same storage call (applied with it
            // or not at all: Expect::Beside; without the document, with each other) and the
            // same fan-out. Each replaces the version read above and takes a version above
            // both it and the document's new one.
            let epoch = self.node.epoch();
            let beside = |name: &str, body: String, first: bool| {
                let prev = replaced.get(name).copied().unwrap_or(Version::ZERO);
                let v = version.max(prev.next(epoch));
                // Without the document, the first side record starts the group (the same
                // condition, as `Exactly`): every storage call then starts a group of its own,
                // and an engine that writes several calls in one transaction (MongoDB's
                // writer) never joins it to the call before it.
                let expect = if first { Expect::Exactly(prev) } else { Expect::Beside(prev) };
                Put { expect, record: Record::new(side::key(key, name), v, body) }
            };
            for w in sides {
                puts.push(beside(&w.name, side::body(w.expires, &w.payload), puts.is_empty()));
            }
            if let Some(req) = request {
                // The request's record.
                let now = side::now_ms();
                let seen = SeenRequest {
                    id: req.id.clone(),
                    fingerprint: req.fingerprint.clone(),
                    reply: reply.clone(),
                    at: now,
                };
                let expires = now + self.node.request_ttl().as_millis() as u64;
                let body = side::body(expires, &serde_json::to_string(&seen).expect("records serialize"));
                puts.push(beside(&request_record(&req.id), body, puts.is_empty()));
            }
            match self.node.write_primary(puts).await {
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
                let body = serde_json::to_string(&Envelope { doc }).expect("documents serialize");
                Put { expect: Expect::Exactly(old), record: Record::new(key, old.next(epoch), body) }
            })
            .collect();
        self.node.write_primary(puts).await?;
        drop(guards);
        Ok(())
    }

    /// Up to `limit` documents with keys after `after`, in key order.
    /// Side records are skipped: a page may hold fewer than `limit` documents, and is empty
    /// only at the end.
    pub async fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, D)>, TableError> {
        let mut after = after.map(str::to_string);
        loop {
            let recs = self.node.store().scan(after.as_deref(), limit).await?;
            let Some(last) = recs.last() else { return Ok(Vec::new()) };
            after = Some(last.key.clone());
            let docs: Vec<(String, D)> = recs
                .into_iter()
                .filter(|r| !side::is_side(&r.key))
                .map(|r| Ok((r.key.clone(), Self::decode(&r)?.doc)))
                .collect::<Result<_, TableError>>()?;
            if !docs.is_empty() {
                return Ok(docs);
            }
        }
    }

    /// The document as stored, once its state is known to be on every member
    /// ([`Node::ensure_replicated`]).
    async fn load(&self, key: &str) -> Result<Option<(Version, Envelope<D>)>, TableError> {
        let mut stored = self.node.store().get(key).await?;
        if self.node.ensure_replicated(key, stored.as_ref().map(|r| r.version)).await? {
            stored = self.node.store().get(key).await?;
        }
        match stored {
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
    use store::mem::MemStore;

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

    /// A write of side records only leaves the document's state and version as they were,
    /// and the side record reads back (a side-only write costs one small record).
    #[tokio::test]
    async fn a_side_only_write_leaves_the_document() {
        let t = table();
        t.write("k", None, add(5)).await.unwrap();
        let before = t.node().store().get("k").await.unwrap().unwrap();
        let side = |text: &str| SideWrite { name: "t:x".into(), payload: text.into(), expires: u64::MAX };
        let first = side("one");
        t.write_with_side("k", "t:x", |_, _| Decision::WriteSides(vec![first.clone()], Reply::ok_text("ok")))
            .await
            .unwrap();
        let second = side("two");
        let seen = std::sync::Mutex::new(None);
        t.write_with_side("k", "t:x", |_, rec| {
            *seen.lock().unwrap() = rec.map(str::to_string);
            Decision::WriteSides(vec![second.clone()], Reply::ok_text("ok"))
        })
        .await
        .unwrap();
        assert_eq!(seen.into_inner().unwrap().as_deref(), Some("one"));
        let after = t.node().store().get("k").await.unwrap().unwrap();
        assert_eq!((after.version, after.body), (before.version, before.body));
        let rec = t.node().store().get(&side::key("k", "t:x")).await.unwrap().unwrap();
        assert!(rec.body.ends_with("two"), "{}", rec.body);
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

    /// A retry after many other writes to the same document is still a repeat (before, a
    /// document remembered its last 32 ids, and the 33rd write made the first id new again),
    /// and the document does not grow with the requests that wrote it: each request's record
    /// is beside it, under its own key, until it expires.
    #[tokio::test]
    async fn a_retry_after_many_writes_to_a_hot_key_is_still_a_repeat() {
        let t = table();
        t.write("k", Some(&rq("r0")), add(1)).await.unwrap();
        for i in 1..=100 {
            t.write("k", Some(&rq(&format!("r{i}"))), add(1)).await.unwrap();
        }
        assert_eq!(t.write("k", Some(&rq("r0")), add(1)).await.unwrap().body, "1", "r0's first answer");
        assert_eq!(t.read("k").await.unwrap(), Some(Counter { n: 101 }));
        let body = t.node().store().get("k").await.unwrap().unwrap().body;
        assert_eq!(body, r#"{"doc":{"n":101}}"#, "the document holds the document only");
        // The records are beside the document, and out of its digests.
        assert_eq!(t.node().sides_of("k").await.unwrap().len(), 101);
        assert_eq!(t.scan(None, 10).await.unwrap(), vec![("k".to_string(), Counter { n: 101 })]);
        // Expired, a record is dropped and its id is new again.
        let ttl = t.node().request_ttl().as_millis() as u64;
        let dropped = t.node().store().prune_sides(side::now_ms() + ttl + 1, 0).await.unwrap();
        assert_eq!(dropped, 101);
        assert!(matches!(t.seen("k", &rq("r0")).await.unwrap(), Seen::New));
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
