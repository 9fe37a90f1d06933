//! The embedded durable engine, on redb (a copy-on-write B-tree with checksummed commits,
//! pure Rust). Chosen with the benchmark in `common/benches/engines.rs`; the numbers and
//! the reasons are in `docs/storage-engines.md`.
//!
//! Writes go through one writer thread that drains every queued `write` call into a single
//! redb transaction (group commit). The writer is the only thread that writes, so a condition
//! checked inside its transaction cannot race another write. Bucket digests live in memory,
//! are computed once at open by a scan, and are updated by the writer after each commit.
//!
//! Durability follows DESIGN section 7: an acknowledged write survives the kill of any
//! process; power loss of the whole machine may lose the last sync interval.
//!
//! - A group's puts that applied are appended, as their final records, to a write-ahead log
//!   next to the redb file (`<file>.wal`) in one `write` call, without a sync, and the
//!   transaction is then committed with redb's `Durability::None`: visible to every later
//!   read at once, its pages written to the file, but the header that points to them only in
//!   redb's memory (redb 2.6), so a kill takes the commit back. Bytes given to `write(2)` are
//!   in the kernel's page cache, which outlives the process: the log is what makes the group
//!   survive a `kill -9`. It is written first, so no reader sees a write a kill could undo;
//!   the callers are answered after both.
//! - A durable commit (`Durability::Immediate`, one `fdatasync` covering every group since the
//!   last one) runs once [`SYNC_INTERVAL`] has passed since the first group that is not yet
//!   synced, when a group would grow the log past [`LOG_LIMIT`] (bulk writes: that group is
//!   committed durably instead of logged), for every group holding a `put_meta` (Paxos and
//!   membership state stays "durable before it is answered"), and when the store is dropped.
//!   After it the log is truncated.
//! - Each durable commit also stores a new log generation in redb, and every frame carries
//!   the generation it was written under. At open, the complete frames of the current
//!   generation are replayed into redb in order and committed durably, the log is truncated,
//!   and only then are the digests computed. A frame cut by a kill in the middle of its write
//!   fails its length or checksum and ends the replay; frames of an older generation (left by
//!   a kill between a durable commit and the truncation, or by a truncation lost in a power
//!   failure) are already in redb and are skipped, so a replay never takes a key back.
//!
//! redb only frees pages in durable commits, and pages freed by `None` commits only in the
//! second durable commit after them; with a durable commit every [`SYNC_INTERVAL`] about two
//! intervals of written pages wait to be reused. redb grows its file by doubling, so that can
//! cost one more doubling (the engines benchmark's 100k-document store: 129 MB where a sync
//! per group keeps 65 MB, the same after 30 s of sustained writes; without any durable commit
//! the file grows by every page each commit writes).
//!
//! Log frame: `u32` payload length, `u64` generation, 16 bytes of blake3 over the length,
//! generation and payload, then the payload: entries of `u8` kind (doc or meta), `u32` key
//! length, key, `u32` value length, value (a doc's value is its stored encoding). All
//! integers little-endian.

use super::{check_same_version, condition_holds, KeyVersion, Put, Record, Store, StoreError, StoreResult};
use crate::digest::{bucket_of, Digests, Hash};
use crate::version::Version;
use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The log generation (key [`GEN_KEY`]), advanced by every durable commit.
const WAL: TableDefinition<&str, u64> = TableDefinition::new("wal");
const GEN_KEY: &str = "generation";

/// Most write calls folded into one transaction; bounds a commit's latency under load.
const MAX_GROUP: usize = 4096;

/// Longest time a logged group waits for the durable commit that covers it: what a power
/// failure of the whole machine may lose. 20 ms is a handful of checkouts at the cluster's
/// measured rates (200–400/s) and caps a busy store at about 50 `fdatasync`s a second, where
/// it did one per group (up to a few thousand a second in the engines benchmark, ~4 per
/// checkout across the cluster); it also bounds the pages redb cannot reuse yet (see the
/// module docs). Shorter intervals sync more often for little gain, longer ones grow the
/// file and the power-loss window: docs/storage-engines.md.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// Largest log before a durable commit: a group whose frame would grow the log past it is
/// committed durably instead of logged. 4 MiB is about 10,000 documents, so such a group
/// pays less than one sync per 10,000 writes, and logging it would only write it twice;
/// it also bounds what a replay reads at open.
pub const LOG_LIMIT: u64 = 4 << 20;

/// When the writer makes its commits durable.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    /// See [`SYNC_INTERVAL`]. `Duration::ZERO`: every group is committed durably and nothing
    /// is logged (one `fdatasync` per group, as before the log; for comparisons).
    pub interval: Duration,
    /// See [`LOG_LIMIT`].
    pub log_limit: u64,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy { interval: SYNC_INTERVAL, log_limit: LOG_LIMIT }
    }
}

const ENTRY_DOC: u8 = 1;
const ENTRY_META: u8 = 2;
/// Frame header: payload length (4), generation (8), checksum (16).
const FRAME_HEAD: usize = 28;

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
    /// Closes the job queue and waits for the writer to make everything durable and truncate
    /// the log, so the file is released, and clean, when the store is dropped.
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

// ---------------------------------------------------------------------------------------------
// The write-ahead log
// ---------------------------------------------------------------------------------------------

/// The log file of the store in `path`.
pub fn log_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// A frame being built: header space first, entries appended, header filled by [`seal`].
fn new_frame() -> Vec<u8> {
    vec![0u8; FRAME_HEAD]
}

fn push_entry(frame: &mut Vec<u8>, kind: u8, key: &str, value: &[u8]) {
    frame.push(kind);
    frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
    frame.extend_from_slice(key.as_bytes());
    frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
    frame.extend_from_slice(value);
}

fn checksum(head: &[u8], payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Fills in the header of a frame built with [`new_frame`] and [`push_entry`].
fn seal(frame: &mut [u8], generation: u64) {
    let len = (frame.len() - FRAME_HEAD) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..12].copy_from_slice(&generation.to_le_bytes());
    let sum = checksum(&frame[0..12], &frame[FRAME_HEAD..]);
    frame[12..FRAME_HEAD].copy_from_slice(&sum);
}

/// What [`read_log`] found.
struct LogContents<'a> {
    /// Payloads of the complete frames of the wanted generation, in log order.
    frames: Vec<&'a [u8]>,
    /// Complete frames of other generations (already in redb).
    stale: usize,
    /// Bytes after the last complete frame (a frame cut by a kill, or garbage).
    torn: usize,
}

/// Splits a log into frames; the first incomplete or corrupt frame ends it.
fn read_log(bytes: &[u8], generation: u64) -> LogContents<'_> {
    let mut out = LogContents { frames: Vec::new(), stale: 0, torn: 0 };
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEAD {
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        if rest.len() - FRAME_HEAD < len {
            break;
        }
        let payload = &rest[FRAME_HEAD..FRAME_HEAD + len];
        if checksum(&rest[0..12], payload) != rest[12..FRAME_HEAD] {
            break;
        }
        if u64::from_le_bytes(rest[4..12].try_into().unwrap()) == generation {
            out.frames.push(payload);
        } else {
            out.stale += 1;
        }
        at += FRAME_HEAD + len;
    }
    out.torn = bytes.len() - at;
    out
}

/// The entries of a frame's payload: (kind, key, value).
fn entries(mut p: &[u8]) -> StoreResult<Vec<(u8, &str, &[u8])>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> StoreResult<&'a [u8]> {
        if p.len() < n {
            return Err(StoreError("write-ahead log: a checksummed frame is malformed".into()));
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let kind = take(&mut p, 1)?[0];
        let klen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
        let key = std::str::from_utf8(take(&mut p, klen)?).map_err(StoreError::of)?;
        let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
        let value = take(&mut p, vlen)?;
        if kind != ENTRY_DOC && kind != ENTRY_META {
            return Err(StoreError(format!("write-ahead log: unknown entry kind {kind}")));
        }
        out.push((kind, key, value));
    }
    Ok(out)
}

/// The open log: appended to by the writer, truncated after each durable commit.
struct Wal {
    file: File,
    /// Bytes in the file (appends go to the end: the file is opened for appending).
    len: u64,
    /// The generation of the last durable commit, carried by every frame written since.
    generation: u64,
}

impl Wal {
    fn append(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.file.write_all(frame)?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Cuts the log back to `len` bytes (0 after a durable commit).
    fn cut(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }
}

/// Stores the next generation in `tx` (to be committed durably) and returns it.
fn next_generation(tx: &WriteTransaction, current: u64) -> StoreResult<u64> {
    let mut t = tx.open_table(WAL).map_err(StoreError::of)?;
    t.insert(GEN_KEY, current + 1).map_err(StoreError::of)?;
    Ok(current + 1)
}

/// Replays the current generation's frames of `bytes` into redb and commits durably;
/// returns the new generation.
fn replay(db: &Database, bytes: &[u8], path: &Path) -> StoreResult<u64> {
    let tx = db.begin_write().map_err(StoreError::of)?;
    let generation = {
        let t = tx.open_table(WAL).map_err(StoreError::of)?;
        let g = t.get(GEN_KEY).map_err(StoreError::of)?.map(|v| v.value()).unwrap_or(0);
        g
    };
    let log = read_log(bytes, generation);
    let mut applied = 0;
    {
        let mut docs = tx.open_table(DOCS).map_err(StoreError::of)?;
        let mut meta = tx.open_table(META).map_err(StoreError::of)?;
        for payload in &log.frames {
            for (kind, key, value) in entries(payload)? {
                if kind == ENTRY_DOC {
                    decode_head(value)?;
                    docs.insert(key, value).map_err(StoreError::of)?;
                } else {
                    meta.insert(key, value).map_err(StoreError::of)?;
                }
                applied += 1;
            }
        }
    }
    let next = next_generation(&tx, generation)?;
    tx.commit().map_err(StoreError::of)?;
    if !bytes.is_empty() {
        log::info!(
            "{}: replayed {} log frames ({applied} entries) of generation {generation}; skipped {} \
             frames of older generations and {} bytes of a cut frame",
            path.display(),
            log.frames.len(),
            log.stale,
            log.torn
        );
    }
    Ok(next)
}

impl RedbStore {
    /// Opens (or creates) the store in the file `path`, with its log next to it, syncing by
    /// the default [`SyncPolicy`].
    pub fn open(path: &Path) -> StoreResult<RedbStore> {
        RedbStore::open_with(path, SyncPolicy::default())
    }

    /// Opens (or creates) the store in the file `path`: replays its log, then computes the
    /// digests.
    pub fn open_with(path: &Path, policy: SyncPolicy) -> StoreResult<RedbStore> {
        let db = Database::create(path).map_err(StoreError::of)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(log_path(path))
            .map_err(StoreError::of)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(StoreError::of)?;
        let generation = replay(&db, &bytes, path)?;
        drop(bytes);
        let mut wal = Wal { file, len: 0, generation };
        wal.cut(0).map_err(StoreError::of)?;
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
        let w = Writer { db: db.clone(), digests: digests.clone(), wal, policy, unsynced_since: None, poisoned: None };
        let writer =
            std::thread::Builder::new().name("redb-writer".into()).spawn(move || w.run(rx)).map_err(StoreError::of)?;
        Ok(RedbStore { db, digests, jobs: Mutex::new(Some(tx)), writer: Some(writer) })
    }

    fn submit(&self, job: Job) -> StoreResult<()> {
        match self.jobs.lock().unwrap().as_ref() {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError("writer thread stopped".into())),
            None => Err(StoreError("store closed".into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------

struct Writer {
    db: Arc<Database>,
    digests: Arc<Mutex<Digests>>,
    wal: Wal,
    policy: SyncPolicy,
    /// When the oldest group not yet covered by a durable commit was committed.
    unsynced_since: Option<Instant>,
    /// Set when the log could not be put back in order after a failure: every later write
    /// fails rather than be acknowledged with a log a replay would misread.
    poisoned: Option<String>,
}

/// (key, previous hash, new hash) of each applied put, for the digests.
type Changes = Vec<(String, Option<Hash>, Hash)>;

impl Writer {
    /// One transaction per drained group of jobs; a durable commit when one is due.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        loop {
            let first = match self.unsynced_since {
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
                Some(t) => {
                    let wait = (t + self.policy.interval).saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            let mut changes = Changes::new();
            let result = match &self.poisoned {
                Some(p) => Err(StoreError(p.clone())),
                None => self.commit_group(&group, &mut changes),
            };
            self.answer(group, result, &changes);
        }
        if self.unsynced_since.is_some() {
            self.sync();
        }
    }

    fn answer(&self, group: Vec<Job>, result: StoreResult<Vec<Vec<bool>>>, changes: &Changes) {
        match result {
            Ok(outcomes) => {
                {
                    let mut d = self.digests.lock().unwrap();
                    for (k, old, new) in changes {
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

    /// A durable commit of everything committed so far, then the log is truncated.
    fn sync(&mut self) {
        let result = self.db.begin_write().map_err(StoreError::of).and_then(|tx| self.commit_durably(tx));
        if let Err(e) = result {
            // The log still holds every unsynced group; the next group or interval retries.
            log::warn!("redb durable commit failed: {e}");
        }
    }

    /// Commits `tx` with `Durability::Immediate` under a new log generation, then truncates
    /// the log (whose frames are now all in redb, and stale).
    fn commit_durably(&mut self, tx: WriteTransaction) -> StoreResult<()> {
        let next = next_generation(&tx, self.wal.generation)?;
        tx.commit().map_err(StoreError::of)?;
        self.wal.generation = next;
        self.unsynced_since = None;
        if self.wal.len == 0 {
            return Ok(());
        }
        if let Err(e) = self.wal.cut(0) {
            // Harmless for a replay (its frames carry an older generation), but the log
            // keeps growing until a later truncation succeeds.
            log::warn!("write-ahead log: truncation failed: {e}");
        }
        Ok(())
    }

    fn commit_group(&mut self, group: &[Job], changes: &mut Changes) -> StoreResult<Vec<Vec<bool>>> {
        let mut tx = self.db.begin_write().map_err(StoreError::of)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut frame = new_frame();
        let mut has_meta = false;
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
                            let value = encode(r);
                            docs.insert(r.key.as_str(), value.as_slice()).map_err(StoreError::of)?;
                            push_entry(&mut frame, ENTRY_DOC, &r.key, &value);
                            changes.push((r.key.clone(), stored.map(|s| s.hash), r.hash));
                            applied.push(true);
                        }
                        outcomes.push(applied);
                    }
                    Job::Meta(name, value, _) => {
                        meta.insert(name.as_str(), value.as_slice()).map_err(StoreError::of)?;
                        has_meta = true;
                        outcomes.push(Vec::new());
                    }
                }
            }
        }
        if has_meta
            || self.policy.interval.is_zero()
            || self.unsynced_since.is_some_and(|t| t.elapsed() >= self.policy.interval)
            || self.wal.len + frame.len() as u64 > self.policy.log_limit
        {
            self.commit_durably(tx)?;
            return Ok(outcomes);
        }
        if frame.len() == FRAME_HEAD {
            // Every put was refused: nothing to log or commit.
            tx.abort().map_err(StoreError::of)?;
            return Ok(outcomes);
        }
        seal(&mut frame, self.wal.generation);
        let before = self.wal.len;
        if let Err(e) = self.wal.append(&frame) {
            // A partial frame would end every later replay: take it out, then make this group
            // durable the old way.
            log::warn!("write-ahead log: append failed ({e}); committing the group durably");
            self.cut_back(before)?;
            self.commit_durably(tx)?;
            return Ok(outcomes);
        }
        tx.set_durability(Durability::None);
        if let Err(e) = tx.commit() {
            // The group is logged but not applied: a replay must not apply it.
            self.cut_back(before)?;
            return Err(StoreError::of(e));
        }
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(outcomes)
    }

    /// Cuts the log back to `len` bytes after a failure; poisons the store if it cannot.
    fn cut_back(&mut self, len: u64) -> StoreResult<()> {
        self.wal.cut(len).map_err(|e| {
            let msg = format!("write-ahead log cannot be cut back after a failure ({e}); store stopped");
            log::error!("{msg}");
            self.poisoned = Some(msg.clone());
            StoreError(msg)
        })
    }
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
    use super::super::{conformance, DynStore, Expect};
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

    /// No durable commit unless a meta write or the log limit asks for one.
    fn never_on_interval() -> SyncPolicy {
        SyncPolicy { interval: Duration::from_secs(3600), ..SyncPolicy::default() }
    }

    fn rec(key: &str, seq: u64, body: &str) -> Record {
        Record::new(key.to_string(), Version { epoch: 1, seq }, body.to_string())
    }

    fn create(r: Record) -> Put {
        Put { expect: Expect::Exactly(Version::ZERO), record: r }
    }

    /// What a `kill -9` of the process would leave at this moment: the redb file and the log
    /// as they are in the page cache, copied to `to` (the store stays open and idle).
    fn crash_copy(from: &Path, to: &Path) {
        std::fs::copy(from, to).unwrap();
        std::fs::copy(log_path(from), log_path(to)).unwrap();
    }

    /// The documents of a redb file opened directly, without the log.
    fn docs_without_log(path: &Path) -> Vec<String> {
        let db = Database::create(path).unwrap();
        let tx = db.begin_read().unwrap();
        let t = match tx.open_table(DOCS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Vec::new(),
            Err(e) => panic!("{e}"),
        };
        t.iter().unwrap().map(|e| e.unwrap().0.value().to_string()).collect()
    }

    fn log_len(path: &Path) -> u64 {
        std::fs::metadata(log_path(path)).unwrap().len()
    }

    async fn assert_digests_match_scan(s: &RedbStore) {
        assert!(s.digests().await.unwrap() == conformance::digests_by_scan(s).await, "digests differ from a scan");
    }

    /// Acknowledged writes are only in the log and redb's memory until a durable commit; a
    /// crash copy has none of them in the redb file, and the replay at open brings back all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_restores_acknowledged_writes_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = Arc::new(RedbStore::open_with(&path, never_on_interval()).unwrap());
        s.write((0..100).map(|i| create(rec(&format!("bulk{i}"), 1, "b"))).collect()).await.unwrap();
        // Concurrent single writes: several groups, several frames.
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let k = format!("t{t}-{i}");
                    assert_eq!(s.write(vec![create(rec(&k, 1, "x"))]).await.unwrap(), vec![true]);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // An update of a logged record, and a refused put (not logged).
        let up = Put { expect: Expect::Exactly(Version { epoch: 1, seq: 1 }), record: rec("bulk7", 2, "updated") };
        assert_eq!(s.write(vec![up, create(rec("bulk8", 1, "refused"))]).await.unwrap(), vec![true, false]);
        assert!(log_len(&path) > 0);
        let root = s.digests().await.unwrap().root();

        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed);
        let bare = dir.path().join("bare.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(docs_without_log(&bare), Vec::<String>::new(), "the writes must not have been synced to redb");

        let r = RedbStore::open(&crashed).unwrap();
        assert_eq!(r.scan(None, 10_000).await.unwrap().len(), 300);
        assert_eq!(r.get("bulk7").await.unwrap().unwrap().body, "updated");
        assert_eq!(r.get("bulk8").await.unwrap().unwrap().body, "b");
        assert_eq!(r.get("t7-24").await.unwrap().unwrap().body, "x");
        assert_eq!(r.digests().await.unwrap().root(), root);
        assert_digests_match_scan(&r).await;
        // The replay was committed durably and the log emptied.
        assert_eq!(log_len(&crashed), 0);
        drop(r);
        assert_eq!(docs_without_log(&crashed).len(), 300);
    }

    /// A frame cut by the kill (or corrupted) ends the replay; the frames before it count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_last_frame_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        s.write((0..10).map(|i| create(rec(&format!("a{i}"), 1, "first"))).collect()).await.unwrap();
        let first = log_len(&path);
        s.write((0..10).map(|i| create(rec(&format!("b{i}"), 1, "second"))).collect()).await.unwrap();
        s.write(vec![create(rec("c", 1, "third"))]).await.unwrap();
        let second_end = first + (log_len(&path) - first) / 2;
        let full = std::fs::read(log_path(&path)).unwrap();

        for (name, log) in [
            // Cut in the middle of the second frame (a kill during its write).
            ("cut", full[..second_end as usize].to_vec()),
            // The second frame's last byte flipped: its checksum fails; the valid third frame
            // after it is not replayed either (the log is read up to the first bad frame).
            ("corrupt", {
                let mut l = full.clone();
                let second_len = u32::from_le_bytes(l[first as usize..first as usize + 4].try_into().unwrap());
                l[first as usize + FRAME_HEAD + second_len as usize - 1] ^= 0xff;
                l
            }),
        ] {
            let crashed = dir.path().join(format!("{name}.redb"));
            crash_copy(&path, &crashed);
            std::fs::write(log_path(&crashed), log).unwrap();
            let r = RedbStore::open(&crashed).unwrap();
            let keys: Vec<String> = r.scan(None, 100).await.unwrap().into_iter().map(|r| r.key).collect();
            let want: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
            assert_eq!(keys, want, "{name}");
            assert_digests_match_scan(&r).await;
        }
        // The uncut log replays all three.
        let crashed = dir.path().join("whole.redb");
        crash_copy(&path, &crashed);
        let r = RedbStore::open(&crashed).unwrap();
        assert_eq!(r.scan(None, 100).await.unwrap().len(), 21);
    }

    /// A log left from before a durable commit (a kill between the commit and the truncation)
    /// holds frames of an older generation: they must not take a key back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_of_an_older_generation_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        s.write(vec![create(rec("k", 1, "old"))]).await.unwrap();
        let old_log = std::fs::read(log_path(&path)).unwrap();
        assert!(!old_log.is_empty());
        let up = Put { expect: Expect::Exactly(Version { epoch: 1, seq: 1 }), record: rec("k", 2, "new") };
        s.write(vec![up]).await.unwrap();
        // A meta write commits durably and truncates the log.
        s.put_meta("view", b"1".to_vec()).await.unwrap();
        assert_eq!(log_len(&path), 0);
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed);
        std::fs::write(log_path(&crashed), &old_log).unwrap();
        let r = RedbStore::open(&crashed).unwrap();
        assert_eq!(r.get("k").await.unwrap().unwrap().body, "new");
        assert_digests_match_scan(&r).await;
    }

    /// A meta write is durable when it returns, and so is everything written before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_meta_write_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        s.write(vec![create(rec("k", 1, "x"))]).await.unwrap();
        s.put_meta("promise", b"7".to_vec()).await.unwrap();
        assert_eq!(log_len(&path), 0);
        let bare = dir.path().join("bare.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(docs_without_log(&bare), vec!["k".to_string()]);
        let db = Database::create(&bare).unwrap();
        let tx = db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(meta.get("promise").unwrap().unwrap().value(), b"7");
    }

    /// The interval's durable commit runs while the store is idle and empties the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_interval_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let policy = SyncPolicy { interval: Duration::from_millis(20), ..SyncPolicy::default() };
        let s = RedbStore::open_with(&path, policy).unwrap();
        s.write(vec![create(rec("k", 1, "x"))]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_len(&path) > 0 {
            assert!(Instant::now() < deadline, "no durable commit within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let bare = dir.path().join("bare.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(docs_without_log(&bare), vec!["k".to_string()]);
    }

    /// A group that would grow the log past its limit is committed durably instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_larger_than_the_log_limit_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let policy = SyncPolicy { log_limit: 4096, ..never_on_interval() };
        let s = RedbStore::open_with(&path, policy).unwrap();
        s.write(vec![create(rec("small", 1, "x"))]).await.unwrap();
        assert!(log_len(&path) > 0);
        s.write((0..100).map(|i| create(rec(&format!("big{i}"), 1, &"y".repeat(100)))).collect()).await.unwrap();
        assert_eq!(log_len(&path), 0);
        let bare = dir.path().join("bare.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(docs_without_log(&bare).len(), 101);
    }

    /// Dropping the store commits durably and empties the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        s.write(vec![create(rec("k", 1, "x"))]).await.unwrap();
        assert!(log_len(&path) > 0);
        drop(s);
        assert_eq!(log_len(&path), 0);
        assert_eq!(docs_without_log(&path), vec!["k".to_string()]);
    }

    /// redb frees pages only in durable commits: with one every interval the file stays
    /// small under many small commits rewriting the same keys (without any it grows by every
    /// page each commit writes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_file_does_not_grow_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open(&path).unwrap();
        const KEYS: u64 = 500;
        s.write((0..KEYS).map(|i| create(rec(&format!("k{i}"), 1, &"z".repeat(300)))).collect()).await.unwrap();
        for round in 1..=10u64 {
            for i in 0..KEYS {
                let up = Put {
                    expect: Expect::Exactly(Version { epoch: 1, seq: round }),
                    record: rec(&format!("k{i}"), round + 1, &"z".repeat(300)),
                };
                assert_eq!(s.write(vec![up]).await.unwrap(), vec![true]);
            }
        }
        drop(s);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 8 << 20, "file grew to {size} bytes");
    }
}
