//! The embedded durable engine, on redb (a copy-on-write B-tree with checksummed commits,
//! pure Rust). Chosen with the benchmark in `common/benches/engines.rs`; the numbers and
//! the reasons are in `docs/storage-engines.md`.
//!
//! Writes go through one writer thread that drains every queued `write` call into a single
//! redb transaction and commits it with one fsync (group commit): a write is durable when its
//! call returns, and concurrent writers share the sync. The writer is the only thread that
//! writes, so a condition checked inside its transaction cannot race another write. Bucket
//! digests live in memory, are computed once at open by a scan, and are updated by the
//! writer after each commit.

use super::{check_same_version, condition_holds, KeyVersion, Put, Record, Store, StoreError, StoreResult};
use crate::digest::{bucket_of, Digests, Hash};
use crate::version::Version;
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Most write calls folded into one transaction; bounds a commit's latency under load.
const MAX_GROUP: usize = 4096;

enum Job {
    Docs(Vec<Put>, oneshot::Sender<StoreResult<Vec<bool>>>),
    Meta(String, Vec<u8>, oneshot::Sender<StoreResult<()>>),
}

/// The redb-backed store.
pub struct RedbStore {
    db: Arc<Database>,
    digests: Arc<Mutex<Digests>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Closes the job queue and waits for the writer to finish its last commit, so the file
    /// is released when the store is dropped.
    fn drop(&mut self) {
        self.jobs.lock().unwrap().take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + r.body.len());
    out.extend_from_slice(&r.version.epoch.to_le_bytes());
    out.extend_from_slice(&r.version.seq.to_le_bytes());
    out.extend_from_slice(&r.hash.0);
    out.extend_from_slice(r.body.as_bytes());
    out
}

fn decode_head(v: &[u8]) -> StoreResult<(Version, Hash)> {
    if v.len() < 48 {
        return Err(StoreError("short record".into()));
    }
    let epoch = u64::from_le_bytes(v[0..8].try_into().unwrap());
    let seq = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let mut h = [0u8; 32];
    h.copy_from_slice(&v[16..48]);
    Ok((Version { epoch, seq }, Hash(h)))
}

fn decode(key: &str, v: &[u8]) -> StoreResult<Record> {
    let (version, hash) = decode_head(v)?;
    let body = String::from_utf8(v[48..].to_vec()).map_err(StoreError::of)?;
    Ok(Record { key: key.to_string(), version, hash, body })
}

impl RedbStore {
    /// Opens (or creates) the store in the file `path`.
    pub fn open(path: &Path) -> StoreResult<RedbStore> {
        let db = Database::create(path).map_err(StoreError::of)?;
        {
            let tx = db.begin_write().map_err(StoreError::of)?;
            tx.open_table(DOCS).map_err(StoreError::of)?;
            tx.open_table(META).map_err(StoreError::of)?;
            tx.commit().map_err(StoreError::of)?;
        }
        let mut digests = Digests::default();
        {
            let tx = db.begin_read().map_err(StoreError::of)?;
            let t = tx.open_table(DOCS).map_err(StoreError::of)?;
            for item in t.iter().map_err(StoreError::of)? {
                let (k, v) = item.map_err(StoreError::of)?;
                let (_, hash) = decode_head(v.value())?;
                digests.replace(k.value(), None, &hash);
            }
        }
        let db = Arc::new(db);
        let digests = Arc::new(Mutex::new(digests));
        let (tx, rx) = mpsc::channel();
        let (wdb, wdig) = (db.clone(), digests.clone());
        let writer = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || writer(wdb, wdig, rx))
            .map_err(StoreError::of)?;
        Ok(RedbStore { db, digests, jobs: Mutex::new(Some(tx)), writer: Some(writer) })
    }

    fn submit(&self, job: Job) -> StoreResult<()> {
        match self.jobs.lock().unwrap().as_ref() {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError("writer thread stopped".into())),
            None => Err(StoreError("store closed".into())),
        }
    }
}

/// The writer loop: one transaction per drained group of jobs.
fn writer(db: Arc<Database>, digests: Arc<Mutex<Digests>>, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let mut changes: Vec<(String, Option<Hash>, Hash)> = Vec::new();
        let result = commit_group(&db, &group, &mut changes);
        match result {
            Ok(outcomes) => {
                {
                    let mut d = digests.lock().unwrap();
                    for (k, old, new) in &changes {
                        d.replace(k, old.as_ref(), new);
                    }
                }
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    match job {
                        Job::Docs(_, tx) => {
                            let _ = tx.send(Ok(outcome));
                        }
                        Job::Meta(_, _, tx) => {
                            let _ = tx.send(Ok(()));
                        }
                    }
                }
            }
            Err(e) => {
                log::warn!("redb commit failed: {e}");
                for job in group {
                    match job {
                        Job::Docs(_, tx) => {
                            let _ = tx.send(Err(StoreError(e.0.clone())));
                        }
                        Job::Meta(_, _, tx) => {
                            let _ = tx.send(Err(StoreError(e.0.clone())));
                        }
                    }
                }
            }
        }
    }
}

fn commit_group(
    db: &Database,
    group: &[Job],
    changes: &mut Vec<(String, Option<Hash>, Hash)>,
) -> StoreResult<Vec<Vec<bool>>> {
    let tx = db.begin_write().map_err(StoreError::of)?;
    let mut outcomes = Vec::with_capacity(group.len());
    {
        let mut docs = tx.open_table(DOCS).map_err(StoreError::of)?;
        let mut meta = tx.open_table(META).map_err(StoreError::of)?;
        for job in group {
            match job {
                Job::Docs(puts, _) => {
                    let mut applied = Vec::with_capacity(puts.len());
                    for put in puts {
                        let r = &put.record;
                        let stored = match docs.get(r.key.as_str()).map_err(StoreError::of)? {
                            Some(v) => Some(decode(&r.key, v.value())?),
                            None => None,
                        };
                        if let Some(s) = &stored {
                            check_same_version(s, r);
                        }
                        let stored_version = stored.as_ref().map(|s| s.version).unwrap_or(Version::ZERO);
                        if !condition_holds(put.expect, stored_version, r.version) {
                            applied.push(false);
                            continue;
                        }
                        docs.insert(r.key.as_str(), encode(r).as_slice()).map_err(StoreError::of)?;
                        changes.push((r.key.clone(), stored.map(|s| s.hash), r.hash));
                        applied.push(true);
                    }
                    outcomes.push(applied);
                }
                Job::Meta(name, value, _) => {
                    meta.insert(name.as_str(), value.as_slice()).map_err(StoreError::of)?;
                    outcomes.push(Vec::new());
                }
            }
        }
    }
    tx.commit().map_err(StoreError::of)?;
    Ok(outcomes)
}

#[async_trait]
impl Store for RedbStore {
    fn engine(&self) -> &'static str {
        "redb"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        match t.get(key).map_err(StoreError::of)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(match t.get(key.as_str()).map_err(StoreError::of)? {
                Some(v) => Some(decode(key, v.value())?),
                None => None,
            });
        }
        Ok(out)
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Docs(puts, tx))?;
        rx.await.map_err(|_| StoreError("writer thread stopped".into()))?
    }

    async fn digests(&self) -> StoreResult<Digests> {
        Ok(self.digests.lock().unwrap().clone())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(StoreError::of)? {
            let (k, v) = item.map_err(StoreError::of)?;
            if bucket_of(k.value()) == bucket {
                let (version, hash) = decode_head(v.value())?;
                out.push(KeyVersion { key: k.value().to_string(), version, hash });
            }
        }
        Ok(out)
    }

    async fn buckets(&self, buckets: &[u8]) -> StoreResult<Vec<KeyVersion>> {
        let mut wanted = [false; crate::digest::BUCKETS];
        for b in buckets {
            wanted[*b as usize] = true;
        }
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(StoreError::of)? {
            let (k, v) = item.map_err(StoreError::of)?;
            if wanted[bucket_of(k.value()) as usize] {
                let (version, hash) = decode_head(v.value())?;
                out.push(KeyVersion { key: k.value().to_string(), version, hash });
            }
        }
        Ok(out)
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        use std::ops::Bound;
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in t.range::<&str>((lower, Bound::Unbounded)).map_err(StoreError::of)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(StoreError::of)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(META).map_err(StoreError::of)?;
        Ok(t.get(name).map_err(StoreError::of)?.map(|v| v.value().to_vec()))
    }

    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Meta(name.to_string(), value, tx))?;
        rx.await.map_err(|_| StoreError("writer thread stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conformance, DynStore};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("s{i}.redb"));
            async move { Arc::new(RedbStore::open(&path).unwrap()) as DynStore }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        conformance::run_reopen(|| {
            let path = path.clone();
            async move { Arc::new(RedbStore::open(&path).unwrap()) as DynStore }
        })
        .await;
    }
}
