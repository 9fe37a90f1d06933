//! The MongoDB engine, through the `mongodb` crate: one database per replica
//! (`webshop_<service>_<id>`, [`database_name`]), for the container deployments (docker
//! compose, Kubernetes), where each replica has its own MongoDB server.
//!
//! Layout of a replica's database:
//! - `docs`: one document per record, `{_id: key, epoch, seq, hash, bucket, body}`: the
//!   version, the blake3 hash and the anti-entropy bucket live in the record's own document.
//!   An index on `bucket` serves [`Store::bucket`] without scanning the collection.
//! - `digests`: one document, `{_id: "buckets", d: binary}`: the 256 bucket digests of 32
//!   bytes each, in bucket order (8 KiB). A write reads it in its transaction and replaces it
//!   on the condition that it still holds what was read: one small read and one small write
//!   per transaction, however many buckets the write touched (SecantusDB, the test server, is
//!   slow at many-field updates and per-document operations).
//! - `meta`: the named values of [`Store::put_meta`], `{_id: name, value: binary}`.
//! - Side records (`model::side`) are documents of `docs` too, with bucket -1 (never listed
//!   to anti-entropy, never counted in the digests) and their expiry in `exp`, which
//!   [`Store::prune_sides`] deletes by.
//!
//! Every write is a multi-document transaction that changes the records and the digests of
//! their buckets together: a reader (and a crash) sees both or neither. Writes go through one
//! writer task per store that folds every queued `write` call into one transaction (at most
//! [`MAX_TXN_PUTS`] puts each, cut only between groups; each call's groups stay its own,
//! [`super::groups_of_calls`]), like the redb engine's group commit. Inside the transaction
//! the writer reads the stored versions of the keys (one query), decides each put's condition
//! against them in order, then writes what changed in a constant number of commands,
//! whatever the group's size: one `delete_many` of the replaced documents, each matched on
//! its key *and the exact version read* (fewer deleted than expected means another writer got
//! there first), one `insert_many` of the new documents (a key inserted by someone else in
//! between hits the unique `_id`), and one conditional replace of the digests document. The transaction's
//! snapshot and MongoDB's write-conflict detection make the decision and the write one atomic
//! step: on any such conflict the transaction is aborted and the whole group is decided again
//! on fresh reads
//! ([`MAX_ATTEMPTS`]). No read-modify-write outside a transaction ever decides a put.
//!
//! Durability: the commit uses write concern `j: true`, so a write is in the server's
//! journal when `write` returns; concurrent `write` calls share that journal sync. SecantusDB
//! honours `j: true` with a synced log only when started with `--sync-on-commit`, which
//! [`server_args`] always passes.
//!
//! Transactions need a replica set: a real MongoDB runs as a single-node replica set
//! (`--replSet`, see docker-compose.yml and k8s/); SecantusDB, the MongoDB-compatible test
//! server the tests and `cluster up --engine mongo` start, advertises itself as one. The
//! store checks this when it opens. A URI naming one host connects directly to it
//! (`directConnection=true` unless the URI says otherwise), so the server's advertised
//! replica-set member names need not resolve from the replica.
//!
//! Versions are stored as `i64`: an epoch or seq above `i64::MAX` is refused with an error
//! (a counter of writes to one key never gets there).

use super::{check_same_version, condition_holds, DynStore, KeyVersion, Put, Record, Store, StoreError, StoreResult};
use async_trait::async_trait;
use futures::TryStreamExt;
use model::digest::{bucket_of, Digests, Hash, BUCKETS};
use model::topology::Service;
use model::version::Version;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Document};
use mongodb::error::{ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ClientOptions, WriteConcern};
use mongodb::{Client, ClientSession, Collection, IndexModel};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use model::mongo_server::{server_args, SERVER_CACHE, SERVER_PROGRAM};

/// Most puts decided and written in one transaction: large enough that a burst of concurrent
/// writes (or a bulk `batch_init` write) costs few commits, small enough that a transaction
/// stays far below MongoDB's limits on its size (16 MB of changes) and lifetime (60 s).
pub const MAX_TXN_PUTS: usize = 1000;

/// Attempts at one group of puts whose transaction was aborted by a conflict or a transient
/// error. The replica is the only writer of its database, so a conflict means another
/// process briefly wrote to it (e.g. a replaced container still stopping); more than a few in
/// a row means something is wrong, and the write fails as the node's own failure.
pub const MAX_ATTEMPTS: u32 = 5;

/// Pause before the second attempt at a group; doubled for each further one.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Attempts at a commit whose result is unknown (a network error after it was sent):
/// committing again is safe and is how the driver's own convenient API handles it.
pub const COMMIT_ATTEMPTS: u32 = 3;

/// How long an operation waits for the server to be reachable (the URI's
/// `serverSelectionTimeoutMS` wins): well below the coordinators' request timeout (5 s), so
/// a replica whose server is down answers with its own failure instead of hanging, and long
/// enough to ride out a server restart.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// Server error codes that mean "another write got there first": the group is decided again.
const DUPLICATE_KEY: i32 = 11000;
const WRITE_CONFLICT: i32 = 112;

/// The database of replica `id` of `service`: one per replica. Every deployment also gives each
/// replica a server of its own (`cluster up --engine mongo`, compose, Kubernetes), which
/// [`MongoStore::open_as_owner`] counts on; the database name keeps two replicas apart if
/// they were ever pointed at one server.
pub fn database_name(service: Service, id: u32) -> String {
    format!("webshop_{}_{}", service.name(), id)
}

/// A write call waiting for the writer.
struct Job {
    puts: Vec<Put>,
    reply: oneshot::Sender<StoreResult<Vec<bool>>>,
}

/// The collections of one replica's database.
#[derive(Clone)]
struct Colls {
    client: Client,
    docs: Collection<Document>,
    digests: Collection<Document>,
    meta: Collection<Document>,
}

/// The MongoDB-backed store.
pub struct MongoStore {
    colls: Colls,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Why a transaction attempt failed.
enum TxnError {
    /// Another writer changed a document the group read: decide the group again.
    Conflict,
    /// A driver or server error.
    Mongo(mongodb::error::Error),
}

impl From<mongodb::error::Error> for TxnError {
    fn from(e: mongodb::error::Error) -> TxnError {
        if is_conflict(&e) {
            TxnError::Conflict
        } else {
            TxnError::Mongo(e)
        }
    }
}

/// Whether a server error says that the transaction lost a race and may be run again.
fn is_conflict(e: &mongodb::error::Error) -> bool {
    if e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return true;
    }
    let codes: Vec<i32> = match e.kind.as_ref() {
        ErrorKind::Command(c) => vec![c.code],
        ErrorKind::Write(WriteFailure::WriteError(w)) => vec![w.code],
        ErrorKind::InsertMany(m) => m.write_errors.iter().flatten().map(|w| w.code).collect(),
        _ => vec![],
    };
    codes.iter().any(|c| *c == DUPLICATE_KEY || *c == WRITE_CONFLICT)
}

fn to_i64(n: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError(format!("{what} {n} does not fit the mongo engine's i64")))
}

fn binary(bytes: &[u8]) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() }
}

fn record_doc(r: &Record) -> StoreResult<Document> {
    let side = model::side::is_side(&r.key);
    let mut d = doc! {
        "_id": &r.key,
        "epoch": to_i64(r.version.epoch, "epoch")?,
        "seq": to_i64(r.version.seq, "seq")?,
        "hash": binary(&r.hash.0),
        // A side record is in no bucket: never listed to anti-entropy.
        "bucket": if side { SIDE_BUCKET } else { bucket_of(&r.key) as i32 },
        "body": &r.body,
    };
    if side {
        let exp = model::side::parse(&r.body).map(|(exp, _)| exp).unwrap_or(u64::MAX);
        d.insert("exp", i64::try_from(exp).unwrap_or(i64::MAX));
    }
    Ok(d)
}

/// The `bucket` field of a side record (`model::side`): no bucket.
const SIDE_BUCKET: i32 = -1;

fn bad(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("mongo document {key}: {e}"))
}

fn head_of(d: &Document) -> StoreResult<(String, Version, Hash)> {
    let key = d.get_str("_id").map_err(|e| bad("?", e))?.to_string();
    let epoch = d.get_i64("epoch").map_err(|e| bad(&key, e))?;
    let seq = d.get_i64("seq").map_err(|e| bad(&key, e))?;
    let bytes = d.get_binary_generic("hash").map_err(|e| bad(&key, e))?;
    let hash = Hash(bytes.as_slice().try_into().map_err(|_| bad(&key, "hash is not 32 bytes"))?);
    Ok((key, Version { epoch: epoch as u64, seq: seq as u64 }, hash))
}

fn record_of(d: &Document) -> StoreResult<Record> {
    let (key, version, hash) = head_of(d)?;
    let body = d.get_str("body").map_err(|e| bad(&key, e))?.to_string();
    Ok(Record { key, version, hash, body })
}

/// The projection of a record's head (what anti-entropy compares).
fn head_projection() -> Document {
    doc! { "epoch": 1, "seq": 1, "hash": 1 }
}

/// The `_id` of the one document in `digests`.
const DIGESTS_ID: &str = "buckets";

/// The bucket digests as the digests document holds them.
fn digest_bytes(d: &Digests) -> Vec<u8> {
    d.buckets().iter().flat_map(|h| h.0).collect()
}

/// The digests in a digests document (`None`: no document yet, every bucket empty).
fn digests_of(d: Option<&Document>) -> StoreResult<Digests> {
    let mut out = Digests::default();
    let Some(d) = d else { return Ok(out) };
    let bytes = d.get_binary_generic("d").map_err(|e| bad("digests", e))?;
    if bytes.len() != 32 * BUCKETS {
        return Err(bad("digests", format!("{} bytes, not {}", bytes.len(), 32 * BUCKETS)));
    }
    for (b, chunk) in bytes.chunks(32).enumerate() {
        let h = Hash(chunk.try_into().expect("32-byte chunks"));
        if h != Hash::default() {
            out.replace(&bucket_keys()[b], None, &h);
        }
    }
    Ok(out)
}

fn xor(a: &mut Hash, b: &Hash) {
    for (x, y) in a.0.iter_mut().zip(b.0.iter()) {
        *x ^= y;
    }
}

/// One key per bucket. [`Digests`] is built by accounting documents into buckets by key;
/// XOR-ing a stored bucket digest in under its bucket's key rebuilds it without a data scan.
fn bucket_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys: Vec<Option<String>> = vec![None; BUCKETS];
        let mut missing = BUCKETS;
        let mut i = 0u64;
        while missing > 0 {
            let k = format!("bucket-key-{i}");
            let slot = &mut keys[bucket_of(&k) as usize];
            if slot.is_none() {
                *slot = Some(k);
                missing -= 1;
            }
            i += 1;
        }
        keys.into_iter().map(|k| k.expect("every bucket has a key")).collect()
    })
}

impl MongoStore {
    /// Connects to the server at `uri` and opens (creating what is missing) the database
    /// `database`. Fails if the server cannot run transactions.
    pub async fn open(uri: &str, database: &str) -> StoreResult<MongoStore> {
        let mut options = ClientOptions::parse(uri).await.map_err(StoreError::of)?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        if options.direct_connection.is_none() && options.hosts.len() == 1 {
            options.direct_connection = Some(true);
        }
        options.app_name.get_or_insert_with(|| database.to_string());
        let client = Client::with_options(options).map_err(StoreError::of)?;
        let db = client.database(database);
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(|e| StoreError(format!("{uri}: {e}")))?;
        if !hello.contains_key("setName") && hello.get_str("msg") != Ok("isdbgrid") {
            return Err(StoreError(format!(
                "the MongoDB server at {uri} cannot run transactions: run it as a replica set (--replSet)"
            )));
        }
        let colls = Colls {
            docs: db.collection("docs"),
            digests: db.collection("digests"),
            meta: db.collection("meta"),
            client,
        };
        colls
            .docs
            .create_index(IndexModel::builder().keys(doc! { "bucket": 1 }).build())
            .await
            .map_err(StoreError::of)?;
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(colls.clone(), rx));
        Ok(MongoStore { colls, jobs })
    }

    /// [`MongoStore::open`] as a shared handle.
    pub async fn open_dyn(uri: &str, database: &str) -> StoreResult<DynStore> {
        Ok(Arc::new(MongoStore::open(uri, database).await?))
    }

    /// [`MongoStore::open_dyn`] for the replica that owns the server at `uri` (its own, in
    /// every deployment: one server per replica), which first aborts every transaction left
    /// open on the server (`killAllSessions`). A replica killed in the middle of a transaction
    /// leaves it open there, holding its writes' locks, always on the digests document,
    /// until the server's transaction lifetime ends (60 s in MongoDB; 57 s measured on
    /// SecantusDB): until then every write of the restarted replica conflicts, its peers'
    /// fan-out to it times out and the writes they carry are answered 503. Any other writer
    /// still on the server (none, in a deployment) sees its transaction aborted as a
    /// transient error and decides it again.
    pub async fn open_as_owner(uri: &str, database: &str) -> StoreResult<DynStore> {
        let store = MongoStore::open(uri, database).await?;
        store
            .colls
            .client
            .database("admin")
            .run_command(doc! { "killAllSessions": [] })
            .await
            .map_err(|e| StoreError(format!("{uri}: ending the sessions left open: {e}")))?;
        Ok(Arc::new(store))
    }
}

/// The writer: one transaction per group of queued puts (see the module doc).
async fn writer(colls: Colls, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let jobs = decide::batch::take_queued(first, || rx.try_recv().ok(), MAX_TXN_PUTS, |j| j.puts.len());
        let puts: Vec<&Put> = jobs.iter().flat_map(|j| j.puts.iter()).collect();
        // Each call's groups stay its own, and no transaction cuts a group.
        let groups = super::groups_of_calls(jobs.iter().map(|j| j.puts.as_slice()));
        let mut outcomes: Vec<bool> = Vec::with_capacity(puts.len());
        // The index of the first put of a transaction that failed, and why.
        let mut failure: Option<(usize, StoreError)> = None;
        for tx in super::transactions(&groups, MAX_TXN_PUTS) {
            let (first, end) = (groups[tx.start].start, groups[tx.end - 1].end);
            let in_tx: Vec<std::ops::Range<usize>> =
                groups[tx].iter().map(|g| g.start - first..g.end - first).collect();
            match write_group(&colls, &puts[first..end], &in_tx).await {
                Ok(o) => outcomes.extend(o),
                Err(e) => {
                    log::warn!("mongo write of {} puts failed: {e}", end - first);
                    failure = Some((first, e));
                    break;
                }
            }
        }
        let mut start = 0;
        for job in jobs {
            let end = start + job.puts.len();
            let result = match &failure {
                // A job with a put in the failed transaction or after it learns of the failure.
                Some((failed, e)) if end > *failed => Err(StoreError(e.0.clone())),
                _ => Ok(outcomes[start..end].to_vec()),
            };
            let _ = job.reply.send(result);
            start = end;
        }
    }
}

/// Decides and writes the puts of one transaction, made of whole `groups` (ranges of `puts`),
/// again while it loses races.
async fn write_group(colls: &Colls, puts: &[&Put], groups: &[std::ops::Range<usize>]) -> StoreResult<Vec<bool>> {
    let mut session = colls.client.start_session().await.map_err(StoreError::of)?;
    let mut backoff = RETRY_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        session
            .start_transaction()
            .write_concern(WriteConcern::builder().journal(true).build())
            .await
            .map_err(StoreError::of)?;
        match attempt_group(colls, &mut session, puts, groups).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(e) => {
                let _ = session.abort_transaction().await;
                match e {
                    TxnError::Conflict if attempt < MAX_ATTEMPTS => {
                        log::debug!("mongo write conflict (attempt {attempt}); deciding the group again");
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    TxnError::Conflict => {
                        return Err(StoreError(format!(
                            "mongo write conflicts persisted after {MAX_ATTEMPTS} attempts"
                        )))
                    }
                    TxnError::Mongo(e) => return Err(StoreError::of(e)),
                }
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// One attempt: read the stored heads, decide every put in order, write, commit.
async fn attempt_group(
    colls: &Colls,
    session: &mut ClientSession,
    puts: &[&Put],
    groups: &[std::ops::Range<usize>],
) -> Result<Vec<bool>, TxnError> {
    let mut keys: Vec<&str> = puts.iter().map(|p| p.record.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    // The stored state of every key, as this transaction's snapshot sees it.
    let mut stored: HashMap<String, Record> = HashMap::with_capacity(keys.len());
    let mut cursor = colls.docs.find(doc! { "_id": { "$in": &keys } }).session(&mut *session).await?;
    while let Some(d) = cursor.next(&mut *session).await.transpose()? {
        let r = record_of(&d).map_err(|e| TxnError::Mongo(mongodb::error::Error::custom(e.0)))?;
        stored.insert(r.key.clone(), r);
    }
    // The version each key had when read (the write's filter) and its state after the group.
    let read: HashMap<String, Version> = stored.iter().map(|(k, r)| (k.clone(), r.version)).collect();
    let mut changed: Vec<String> = Vec::new();
    let mut deltas: HashMap<u8, Hash> = HashMap::new();
    let mut outcomes = vec![false; puts.len()];
    // A group of puts (super::groups_of_calls) applies whole or not at all; its puts are of
    // distinct keys, so they are decided against what was there before.
    for group in groups.iter().cloned() {
        let all = puts[group.clone()].iter().all(|put| {
            let r = &put.record;
            let now = stored.get(&r.key);
            if let Some(s) = now {
                check_same_version(s, r);
            }
            condition_holds(put.expect, now.map_or(Version::ZERO, |s| s.version), r.version)
        });
        if !all {
            continue;
        }
        for i in group {
            let r = &puts[i].record;
            // Side records are not counted in the digests (model::side).
            if !model::side::is_side(&r.key) {
                let delta = deltas.entry(bucket_of(&r.key)).or_default();
                if let Some(s) = stored.get(&r.key) {
                    xor(delta, &s.hash);
                }
                xor(delta, &r.hash);
            }
            if !changed.contains(&r.key) {
                changed.push(r.key.clone());
            }
            stored.insert(r.key.clone(), r.clone());
            outcomes[i] = true;
        }
    }
    let encode = |r: &Record| record_doc(r).map_err(|e| TxnError::Mongo(mongodb::error::Error::custom(e.0)));
    let mut replaced = Vec::new();
    let mut inserts = Vec::with_capacity(changed.len());
    for key in &changed {
        inserts.push(encode(&stored[key])?);
        if let Some(v) = read.get(key) {
            // Read from i64 fields, so they fit.
            replaced.push(doc! { "_id": key, "epoch": v.epoch as i64, "seq": v.seq as i64 });
        }
    }
    if !replaced.is_empty() {
        let expected = replaced.len() as u64;
        let res = colls.docs.delete_many(doc! { "$or": replaced }).session(&mut *session).await?;
        if res.deleted_count != expected {
            return Err(TxnError::Conflict);
        }
    }
    if !inserts.is_empty() {
        colls.docs.insert_many(inserts).session(&mut *session).await?;
    }
    if !deltas.is_empty() {
        // The digests as this transaction sees them, with the group's changes; written back
        // only if the document still holds what was read.
        let old = colls.digests.find_one(doc! { "_id": DIGESTS_ID }).session(&mut *session).await?;
        let mut digests = digests_of(old.as_ref()).map_err(|e| TxnError::Mongo(mongodb::error::Error::custom(e.0)))?;
        for (bucket, delta) in &deltas {
            digests.replace(&bucket_keys()[*bucket as usize], None, delta);
        }
        let new = doc! { "_id": DIGESTS_ID, "d": binary(&digest_bytes(&digests)) };
        match old {
            None => {
                colls.digests.insert_one(new).session(&mut *session).await?;
            }
            Some(old) => {
                let res = colls.digests.replace_one(old, new).session(&mut *session).await?;
                if res.matched_count != 1 {
                    return Err(TxnError::Conflict);
                }
            }
        }
    }
    let mut tries = 0;
    loop {
        match session.commit_transaction().await {
            Err(e) if e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) && tries + 1 < COMMIT_ATTEMPTS => tries += 1,
            // A commit that failed for certain (e.g. a conflict at commit) is decided again.
            Err(e) => return Err(e.into()),
            Ok(()) => return Ok(outcomes),
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    fn engine(&self) -> &'static str {
        "mongo"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        let d = self.colls.docs.find_one(doc! { "_id": key }).await.map_err(StoreError::of)?;
        d.as_ref().map(record_of).transpose()
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let docs: Vec<Document> = self
            .colls
            .docs
            .find(doc! { "_id": { "$in": keys } })
            .await
            .map_err(StoreError::of)?
            .try_collect()
            .await
            .map_err(StoreError::of)?;
        let mut found: HashMap<String, Record> = HashMap::with_capacity(docs.len());
        for d in &docs {
            let r = record_of(d)?;
            found.insert(r.key.clone(), r);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { puts, reply }).map_err(|_| StoreError("mongo writer stopped".into()))?;
        answer.await.map_err(|_| StoreError("mongo writer stopped".into()))?
    }

    async fn digests(&self) -> StoreResult<Digests> {
        let d = self.colls.digests.find_one(doc! { "_id": DIGESTS_ID }).await.map_err(StoreError::of)?;
        digests_of(d.as_ref())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        let docs: Vec<Document> = self
            .colls
            .docs
            .find(doc! { "bucket": bucket as i32 })
            .projection(head_projection())
            .await
            .map_err(StoreError::of)?
            .try_collect()
            .await
            .map_err(StoreError::of)?;
        docs.iter()
            .map(|d| {
                let (key, version, hash) = head_of(d)?;
                Ok(KeyVersion { key, version, hash })
            })
            .collect()
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        // `_id` strings compare by their UTF-8 bytes, as Rust's `str` does.
        let filter = match after {
            Some(a) => doc! { "_id": { "$gt": a } },
            None => doc! {},
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let docs: Vec<Document> = self
            .colls
            .docs
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await
            .map_err(StoreError::of)?
            .try_collect()
            .await
            .map_err(StoreError::of)?;
        docs.iter().map(record_of).collect()
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let d = self.colls.meta.find_one(doc! { "_id": name }).await.map_err(StoreError::of)?;
        match d {
            None => Ok(None),
            Some(d) => Ok(Some(d.get_binary_generic("value").map_err(|e| bad(name, e))?.clone())),
        }
    }

    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        self.colls
            .meta
            .replace_one(doc! { "_id": name }, doc! { "_id": name, "value": binary(&value) })
            .upsert(true)
            .write_concern(WriteConcern::builder().journal(true).build())
            .await
            .map_err(StoreError::of)?;
        Ok(())
    }

    /// One `delete_many` of the side records whose `exp` has passed, or is a held record's
    /// released ([`model::side::prunable`]). It races no write that matters: a side record
    /// is written once per name and version, one that expired is never read again, and one
    /// released is never written again.
    async fn prune_sides(&self, now_ms: u64, released_ms: u64) -> StoreResult<usize> {
        use model::side::HELD;
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let now = signed(now_ms.min(HELD - 1));
        let (held, released) = (signed(HELD), signed(HELD + released_ms.min(HELD - 1)));
        let filter = doc! { "$or": [
            { "exp": { "$lte": now } },
            { "exp": { "$gte": held, "$lt": released } },
        ] };
        let res = self.colls.docs.delete_many(filter).await.map_err(StoreError::of)?;
        Ok(res.deleted_count as usize)
    }
}

/// The variable that names the MongoDB-compatible server program to run, for tests and
/// `cluster up --engine mongo` (default [`SERVER_PROGRAM`] on PATH).
pub const SERVER_ENV: &str = "SECANTUSD";

/// The server program to run: `$SECANTUSD`, else [`SERVER_PROGRAM`] found on PATH; an error
/// that says how to install it otherwise.
pub fn find_server() -> StoreResult<std::path::PathBuf> {
    let name = std::env::var(SERVER_ENV).unwrap_or_else(|_| SERVER_PROGRAM.into());
    let candidate = std::path::PathBuf::from(&name);
    let found = if candidate.components().count() > 1 {
        Some(candidate).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(&name)).find(|p| p.is_file()))
    };
    found.ok_or_else(|| {
        StoreError(format!(
            "the MongoDB-compatible server '{name}' was not found: install it with \
             'cargo install secantus-mdb --version 0.5.3-beta.196 --locked --ignore-rust-version' \
             (scripts/install-deps.sh does), or name another with {SERVER_ENV}=PATH"
        ))
    })
}

/// A SecantusDB server ([`SERVER_PROGRAM`]) for tests, on a free loopback port, with its data in
/// a temporary folder; killed when dropped. It is GPL software: it runs as a separate
/// process and is never linked.
#[cfg(test)]
pub(crate) mod test_server {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Longest wait for the server to accept connections (a Python start on a busy machine).
    const START_DEADLINE: Duration = Duration::from_secs(60);

    /// A running test server.
    pub struct TestServer {
        child: Option<Child>,
        /// The port it listens on.
        pub port: u16,
        /// Its data folder.
        pub data: PathBuf,
        _dir: Option<tempfile::TempDir>,
    }

    impl TestServer {
        /// Starts a server with its data in a new temporary folder.
        pub fn start() -> TestServer {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let mut s = TestServer::start_at(&data);
            s._dir = Some(dir);
            s
        }

        /// Starts a server on the data in `data`.
        pub fn start_at(data: &Path) -> TestServer {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let exe = super::find_server().unwrap_or_else(|e| panic!("{e}"));
            let exe = exe.display().to_string();
            let child = Command::new(&exe)
                .args(super::server_args("127.0.0.1", port, data))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
            let s = TestServer { child: Some(child), port, data: data.to_path_buf(), _dir: None };
            let deadline = Instant::now() + START_DEADLINE;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "{exe} did not listen on port {port} within {START_DEADLINE:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            s
        }

        /// The URI of the server.
        pub fn uri(&self) -> String {
            format!("mongodb://127.0.0.1:{}/", self.port)
        }

        /// Kills the server with SIGKILL and waits for it; the data stays.
        pub fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conformance, Expect};
    use super::test_server::TestServer;
    use super::*;

    fn v(epoch: u64, seq: u64) -> Version {
        Version { epoch, seq }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let server = TestServer::start();
        let n = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let uri = server.uri();
            async move { MongoStore::open_dyn(&uri, &format!("conformance_{i}")).await.unwrap() }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_reopen() {
        let server = TestServer::start();
        conformance::run_reopen(|| {
            let uri = server.uri();
            async move { MongoStore::open_dyn(&uri, "reopen").await.unwrap() }
        })
        .await;
    }

    /// An acknowledged write survives a SIGKILL of the server (it is in the journal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_a_killed_server() {
        let mut server = TestServer::start();
        let s = MongoStore::open_dyn(&server.uri(), "killed").await.unwrap();
        let puts =
            (0..50).map(|i| Put { expect: Expect::Older, record: Record::new(format!("k{i}"), v(1, 1), "b".into()) });
        assert!(s.write(puts.collect()).await.unwrap().iter().all(|a| *a));
        s.put_meta("view", b"v".to_vec()).await.unwrap();
        let root = s.digests().await.unwrap().root();
        drop(s);
        server.kill();
        let data = server.data.clone();
        let again = TestServer::start_at(&data);
        let s = MongoStore::open_dyn(&again.uri(), "killed").await.unwrap();
        assert_eq!(s.scan(None, 100).await.unwrap().len(), 50);
        assert_eq!(s.get_meta("view").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.digests().await.unwrap().root(), root);
        drop(server);
    }

    /// A replica killed in the middle of a transaction left it open on its server (here: a
    /// session forgotten with its transaction under way, having written the digests document,
    /// which every write's transaction writes); started again, it writes at once. Before, every
    /// write of the new process conflicted with the open transaction until the server's
    /// transaction lifetime ended (57 s on SecantusDB), and failed after its attempts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_left_open_by_a_killed_replica_does_not_block_its_restart() {
        let server = TestServer::start();
        let put = |k: &str, seq| Put { expect: Expect::Older, record: Record::new(k.into(), v(1, seq), "b".into()) };
        let first = MongoStore::open_dyn(&server.uri(), "crashed").await.unwrap();
        assert_eq!(first.write(vec![put("a", 1)]).await.unwrap(), vec![true]);
        drop(first);
        let killed = Client::with_uri_str(format!("{}?directConnection=true", server.uri())).await.unwrap();
        let mut session = killed.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        let digests: Collection<Document> = killed.database("crashed").collection("digests");
        digests
            .update_one(doc! { "_id": DIGESTS_ID }, doc! { "$set": { "x": 1 } })
            .session(&mut session)
            .await
            .unwrap();
        // Neither committed nor aborted: the process is gone.
        std::mem::forget(session);

        let again = MongoStore::open_as_owner(&server.uri(), "crashed").await.unwrap();
        let wrote = tokio::time::timeout(Duration::from_secs(10), again.write(vec![put("b", 1)])).await;
        assert_eq!(wrote.expect("written within 10 s").unwrap(), vec![true]);
        assert!(again.get("b").await.unwrap().is_some());
        drop(killed);
    }

    /// Several stores writing one database (which a replica never does) still apply each
    /// compare-and-set exactly once: conflicts abort a transaction and it is decided again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_database() {
        let server = TestServer::start();
        let a = MongoStore::open_dyn(&server.uri(), "shared").await.unwrap();
        let b = MongoStore::open_dyn(&server.uri(), "shared").await.unwrap();
        let mut tasks = Vec::new();
        for s in [a.clone(), b.clone(), a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                let mut done = 0;
                while done < 10 {
                    let cur = s.get("ctr").await.unwrap();
                    let (ver, n) = cur.map_or((Version::ZERO, 0), |r| (r.version, r.body.parse::<u64>().unwrap()));
                    let next = Record::new("ctr".into(), ver.next(1), (n + 1).to_string());
                    if s.write(vec![Put { expect: Expect::Exactly(ver), record: next }]).await.unwrap()[0] {
                        done += 1;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(a.get("ctr").await.unwrap().unwrap().body, "40");
        assert!(a.digests().await.unwrap() == conformance::digests_by_scan(&*b).await);
    }

    #[test]
    fn every_bucket_has_a_key() {
        let keys = bucket_keys();
        assert_eq!(keys.len(), BUCKETS);
        for (b, k) in keys.iter().enumerate() {
            assert_eq!(bucket_of(k) as usize, b);
        }
    }

    #[test]
    fn digests_round_trip() {
        let mut d = Digests::default();
        d.replace("k", None, &model::digest::record_hash("k", v(1, 2), "x"));
        d.replace("other", None, &model::digest::record_hash("other", v(1, 1), "y"));
        let doc = doc! { "_id": DIGESTS_ID, "d": binary(&digest_bytes(&d)) };
        assert!(digests_of(Some(&doc)).unwrap() == d);
        assert!(digests_of(None).unwrap() == Digests::default());
    }

    #[test]
    fn database_per_replica() {
        assert_eq!(database_name(Service::Stock, 2), "webshop_stock_2");
    }
}
