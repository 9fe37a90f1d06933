//! The embedded durable engine, on redb (a copy-on-write B-tree with checksummed commits,
//! pure Rust). Chosen with the benchmark in `store/benches/engines.rs`; the numbers and
//! the reasons are in `docs/storage-engines.md`.
//!
//! Writes go through one writer thread that drains every queued `write` call into one group.
//! The writer is the only thread that writes, so a condition it checks cannot race another
//! write. Bucket digests live in memory, are computed once at open by a scan, and are updated
//! by the writer before it answers.
//!
//! Durability follows docs/design.md §7.3: an acknowledged write survives the kill of any
//! process; power loss of the whole machine may lose the last sync interval.
//!
//! - A group's puts are checked against the newest stored versions: earlier puts of the same
//!   group, then the **overlay** (an in-memory `BTreeMap` of the documents written since the
//!   last checkpoint, in their stored encoding), then redb. The puts that applied are
//!   appended, as their final records, to a write-ahead log next to the redb file
//!   (`<file>.wal`) in one `write` call, without a sync; then they are put in the overlay and
//!   counted in the digests, and the callers are answered. No redb transaction per group.
//!   Bytes given to `write(2)` are in the kernel's page cache, which outlives the process:
//!   the log is what makes the group survive a `kill -9`. It is written first, so no reader
//!   sees a write a kill could undo.
//! - A **checkpoint** writes the whole overlay to redb in one transaction, with a new log
//!   generation, committed with `Durability::Immediate` (one `fdatasync`); then it empties the
//!   overlay and truncates the log. It runs once [`SYNC_INTERVAL`] has passed since the first
//!   write not yet checkpointed; when a group would grow the log past [`LOG_LIMIT`] (bulk
//!   writes: that group goes into the checkpoint's transaction instead of the log); for every
//!   group holding a `put_meta` (Paxos and membership state stays "durable before it is
//!   answered": meta values never wait in the overlay, they are written by the checkpoint
//!   that answers them); and when the store is dropped. `LOG_LIMIT` also bounds the overlay:
//!   it holds at most the log's records, fewer when keys repeat.
//! - The checkpoint runs on the writer thread, so no write changes the overlay while it runs
//!   (writes arriving meanwhile queue and form the next group). An entry leaves the overlay
//!   only after the commit that put it in redb: a reader finds the newest version in the
//!   overlay before and during the commit, and in redb after it, never an older one.
//! - Reads: `get` and `get_many` look in the overlay, then in redb. `bucket`, `buckets` and
//!   `scan` copy the overlay entries they need and begin a redb read transaction under the
//!   overlay's lock (one consistent view), then merge the two in key order, the overlay's
//!   entry replacing redb's.
//! - Each checkpoint stores a new log generation in redb, and every frame carries the
//!   generation it was written under. At open, the complete frames of the current generation
//!   are replayed into redb in order and committed durably, the log is truncated, and only
//!   then are the digests computed. A frame cut by a kill in the middle of its write fails
//!   its length or checksum and ends the replay; frames of an older generation (left by a
//!   kill between a checkpoint's commit and the truncation, or by a truncation lost in a
//!   power failure) are already in redb and are skipped, so a replay never takes a key back.
//!
//! redb only sees durable commits (one per checkpoint), which write each changed page once
//! per interval rather than once per group. The file does not shrink for it: the engines
//! benchmark's 100k-document store is 129 MB after its run, as with a `None` commit per group.
//!
//! Log frames are those of [`super::frame`], tagged with the generation.

use super::frame::{
    decode, decode_head, encode, entries, new_frame, push_entry, read_log, seal, ENTRY_DOC, FRAME_HEAD,
};
use super::{check_same_state, condition_holds, KeyVersion, Put, Record, Store, StoreError, StoreResult};
use async_trait::async_trait;
use model::digest::{bucket_of, Digests, Hash};
use model::version::Version;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const DOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("docs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The log generation (key [`GEN_KEY`]), advanced by every durable commit.
const WAL: TableDefinition<&str, u64> = TableDefinition::new("wal");
const GEN_KEY: &str = "generation";

/// Most write calls folded into one group; bounds a group's latency under load.
const MAX_GROUP: usize = 4096;

/// Longest time a logged group waits for the checkpoint that covers it: what a power
/// failure of the whole machine may lose (a process crash loses nothing: the log is in the
/// page cache). 100 ms, MongoDB's default journal commit interval. Each checkpoint is one
/// redb commit and one `fdatasync` per replica, and with nine replicas on two cores they
/// were the largest cost left (docs/performance.md, "Speed work, second round", item 7).
/// Longer intervals widen the power-loss window for less and less.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Largest log before a checkpoint: a group whose frame would grow the log past it is
/// checkpointed (with the overlay) instead of logged. 4 MiB is about 10,000 documents, so
/// such a group pays less than one sync per 10,000 writes, and logging it would only write
/// it twice; it also bounds what a replay reads at open and the overlay's memory (the
/// overlay holds at most the log's records).
pub const LOG_LIMIT: u64 = 4 << 20;

/// When the writer checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    /// See [`SYNC_INTERVAL`]. `Duration::ZERO`: every group is checkpointed and nothing is
    /// logged (one redb commit and `fdatasync` per group, as before the log; for comparisons).
    pub interval: Duration,
    /// See [`LOG_LIMIT`].
    pub log_limit: u64,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy { interval: SYNC_INTERVAL, log_limit: LOG_LIMIT }
    }
}

enum Job {
    Docs(Vec<Put>, oneshot::Sender<StoreResult<Vec<bool>>>),
    Meta(String, Vec<u8>, oneshot::Sender<StoreResult<()>>),
}

/// The redb-backed store.
pub struct RedbStore {
    db: Arc<Database>,
    digests: Arc<Mutex<Digests>>,
    overlay: Arc<Overlay>,
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

// ---------------------------------------------------------------------------------------------
// The write-ahead log
// ---------------------------------------------------------------------------------------------

/// The log file of the store in `path`.
pub fn log_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
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
                if model::side::is_side(k.value()) {
                    continue;
                }
                let (_, hash) = decode_head(v.value())?;
                digests.replace(k.value(), None, &hash);
            }
        }
        let db = Arc::new(db);
        let digests = Arc::new(Mutex::new(digests));
        let (tx, rx) = mpsc::channel();
        let overlay = Arc::new(Overlay::default());
        let w = Writer {
            db: db.clone(),
            digests: digests.clone(),
            overlay: overlay.clone(),
            wal,
            policy,
            unsynced_since: None,
            poisoned: None,
        };
        let writer =
            std::thread::Builder::new().name("redb-writer".into()).spawn(move || w.run(rx)).map_err(StoreError::of)?;
        Ok(RedbStore { db, digests, overlay, jobs: Mutex::new(Some(tx)), writer: Some(writer) })
    }

    fn submit(&self, job: Job) -> StoreResult<()> {
        match self.jobs.lock().unwrap().as_ref() {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError("writer thread stopped".into())),
            None => Err(StoreError("store closed".into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The overlay
// ---------------------------------------------------------------------------------------------

/// The documents written since the last checkpoint: key → stored encoding (see [`encode`]),
/// in key order. Only the writer changes it; every entry is newer than redb's copy of its key.
type Overlay = RwLock<BTreeMap<String, Vec<u8>>>;

/// Overlay entries copied out for a merged read: (key, stored encoding), in key order.
type Entries = Vec<(String, Vec<u8>)>;

/// redb's document table, read-only.
type DocsTable = redb::ReadOnlyTable<&'static str, &'static [u8]>;

// ---------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------

struct Writer {
    db: Arc<Database>,
    digests: Arc<Mutex<Digests>>,
    overlay: Arc<Overlay>,
    wal: Wal,
    policy: SyncPolicy,
    /// When the oldest write not yet checkpointed was logged.
    unsynced_since: Option<Instant>,
    /// Set when the log could not be put back in order after a failure: every later write
    /// fails rather than be acknowledged with a log a replay would misread.
    poisoned: Option<String>,
}

/// (key, previous hash, new hash) of each applied put, for the digests.
type Changes = Vec<(String, Option<Hash>, Hash)>;

/// What a group decided before anything is written: the answers, the digest changes, the
/// documents to store (in order; a key may repeat) and the meta values.
#[derive(Default)]
struct Decided {
    outcomes: Vec<Vec<bool>>,
    changes: Changes,
    docs: Vec<(String, Vec<u8>)>,
    metas: Vec<(String, Vec<u8>)>,
}

impl Writer {
    /// Decides each drained group against the overlay and redb, logs it and puts it in the
    /// overlay; checkpoints when one is due.
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
                            self.checkpoint_logged();
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
            let result = match &self.poisoned {
                Some(p) => Err(StoreError(p.clone())),
                None => self.decide(&group).and_then(|d| self.apply(d)),
            };
            self.answer(group, result);
            if self.unsynced_since.is_some_and(|t| t.elapsed() >= self.policy.interval) {
                self.checkpoint_logged();
            }
        }
        if self.unsynced_since.is_some() {
            self.checkpoint_logged();
        }
    }

    fn answer(&self, group: Vec<Job>, result: StoreResult<Decided>) {
        match result {
            Ok(decided) => {
                for (job, outcome) in group.into_iter().zip(decided.outcomes) {
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
                log::warn!("redb write failed: {e}");
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

    /// Checks every put's condition against what is stored (earlier puts of the group, then
    /// the overlay, then redb), without writing anything.
    fn decide(&self, group: &[Job]) -> StoreResult<Decided> {
        let mut d = Decided::default();
        // Keys written by earlier puts of this group: index into `d.docs`.
        let mut in_group: HashMap<&str, usize> = HashMap::new();
        let overlay = self.overlay.read().unwrap();
        let mut redb: Option<DocsTable> = None;
        for job in group {
            match job {
                Job::Docs(puts, _) => {
                    let mut applied = vec![false; puts.len()];
                    // A group of puts (super::groups) applies whole or not at all; its puts
                    // are of distinct keys, so they are decided against what was there before.
                    for group in super::groups(puts.iter().map(|p| p.expect)) {
                        let mut heads = Vec::with_capacity(group.len());
                        let mut all = true;
                        for put in &puts[group.clone()] {
                            let r = &put.record;
                            let head = if let Some(&i) = in_group.get(r.key.as_str()) {
                                Some(decode_head(&d.docs[i].1)?)
                            } else if let Some(v) = overlay.get(&r.key) {
                                Some(decode_head(v)?)
                            } else {
                                let t = match &redb {
                                    Some(t) => t,
                                    None => {
                                        let tx = self.db.begin_read().map_err(StoreError::of)?;
                                        redb.insert(tx.open_table(DOCS).map_err(StoreError::of)?)
                                    }
                                };
                                match t.get(r.key.as_str()).map_err(StoreError::of)? {
                                    Some(v) => Some(decode_head(v.value())?),
                                    None => None,
                                }
                            };
                            if let Some((version, hash)) = &head {
                                check_same_state(&r.key, *version, hash, r);
                            }
                            let stored_version = head.map(|h| h.0).unwrap_or(Version::ZERO);
                            all &= condition_holds(put.expect, stored_version, r.version);
                            heads.push(head);
                        }
                        if !all {
                            continue;
                        }
                        for (i, head) in group.zip(heads) {
                            let r = &puts[i].record;
                            in_group.insert(&r.key, d.docs.len());
                            d.docs.push((r.key.clone(), encode(r)));
                            d.changes.push((r.key.clone(), head.map(|h| h.1), r.hash));
                            applied[i] = true;
                        }
                    }
                    d.outcomes.push(applied);
                }
                Job::Meta(name, value, _) => {
                    d.metas.push((name.clone(), value.clone()));
                    d.outcomes.push(Vec::new());
                }
            }
        }
        Ok(d)
    }

    /// Makes a decided group survive a kill, visible, and counted in the digests, before it
    /// is answered: logged and put in the overlay, or (meta values, a group that would grow
    /// the log past its limit, a zero interval, a failed append) checkpointed with it.
    fn apply(&mut self, d: Decided) -> StoreResult<Decided> {
        if !d.metas.is_empty()
            || self.policy.interval.is_zero()
            || self.wal.len + (FRAME_HEAD + d.docs.iter().map(|(k, v)| 9 + k.len() + v.len()).sum::<usize>()) as u64
                > self.policy.log_limit
        {
            self.checkpoint(&d.docs, &d.metas)?;
            self.count(&d.changes);
            return Ok(d);
        }
        if d.docs.is_empty() {
            // Every put was refused: nothing to log.
            return Ok(d);
        }
        let mut frame = new_frame();
        for (key, value) in &d.docs {
            push_entry(&mut frame, ENTRY_DOC, key, value);
        }
        seal(&mut frame, self.wal.generation);
        let before = self.wal.len;
        if let Err(e) = self.wal.append(&frame) {
            // A partial frame would end every later replay: take it out, then make this group
            // durable by a checkpoint instead.
            log::warn!("write-ahead log: append failed ({e}); checkpointing the group");
            self.cut_back(before)?;
            self.checkpoint(&d.docs, &d.metas)?;
            self.count(&d.changes);
            return Ok(d);
        }
        // Logged first: no reader sees a write a kill could take back.
        {
            let mut overlay = self.overlay.write().unwrap();
            for (key, value) in &d.docs {
                overlay.insert(key.clone(), value.clone());
            }
        }
        self.count(&d.changes);
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(d)
    }

    fn count(&self, changes: &Changes) {
        let mut digests = self.digests.lock().unwrap();
        // Side records are not counted in the digests (model::side).
        for (k, old, new) in changes.iter().filter(|(k, _, _)| !model::side::is_side(k)) {
            digests.replace(k, old.as_ref(), new);
        }
    }

    /// A checkpoint of what is logged (the interval, drop).
    fn checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint(&[], &[]) {
            // The log and the overlay still hold every write; the next group or interval retries.
            log::warn!("redb checkpoint failed: {e}");
        }
    }

    /// Writes the overlay, then `docs` and `metas` (not logged), to redb in one durable
    /// commit (`Durability::Immediate`) under a new log generation; then empties the
    /// overlay and truncates the log, whose frames are now all in redb, and stale.
    ///
    /// Runs on the writer thread, so no write can change the overlay meanwhile; readers find
    /// each entry in the overlay until the commit is done and in redb after it, and an entry
    /// leaves the overlay only once redb's copy is visible.
    fn checkpoint(&mut self, docs: &[(String, Vec<u8>)], metas: &[(String, Vec<u8>)]) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(StoreError::of)?;
        {
            let mut t = tx.open_table(DOCS).map_err(StoreError::of)?;
            for (key, value) in self.overlay.read().unwrap().iter() {
                t.insert(key.as_str(), value.as_slice()).map_err(StoreError::of)?;
            }
            for (key, value) in docs {
                t.insert(key.as_str(), value.as_slice()).map_err(StoreError::of)?;
            }
            let mut m = tx.open_table(META).map_err(StoreError::of)?;
            for (name, value) in metas {
                m.insert(name.as_str(), value.as_slice()).map_err(StoreError::of)?;
            }
        }
        let next = next_generation(&tx, self.wal.generation)?;
        tx.commit().map_err(StoreError::of)?;
        self.wal.generation = next;
        self.unsynced_since = None;
        self.overlay.write().unwrap().clear();
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

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Walks redb's documents from `lower` merged, in key order, with `over` (overlay entries
/// from `lower` on, in key order, which replace redb's entries of the same key); stops when
/// `emit` returns false.
fn merged(
    t: &DocsTable,
    lower: std::ops::Bound<&str>,
    over: &[(String, Vec<u8>)],
    mut emit: impl FnMut(&str, &[u8]) -> StoreResult<bool>,
) -> StoreResult<()> {
    let mut o = over.iter().peekable();
    for item in t.range::<&str>((lower, std::ops::Bound::Unbounded)).map_err(StoreError::of)? {
        let (k, v) = item.map_err(StoreError::of)?;
        let k = k.value();
        while let Some((ok, ov)) = o.next_if(|(ok, _)| ok.as_str() < k) {
            if !emit(ok, ov)? {
                return Ok(());
            }
        }
        if let Some((ok, ov)) = o.next_if(|(ok, _)| ok == k) {
            if !emit(ok, ov)? {
                return Ok(());
            }
            continue;
        }
        if !emit(k, v.value())? {
            return Ok(());
        }
    }
    for (ok, ov) in o {
        if !emit(ok, ov)? {
            break;
        }
    }
    Ok(())
}

impl RedbStore {
    /// The overlay entries `pick` selects (from `lower` on, in key order) and a redb read
    /// transaction, taken together under the overlay's lock: one consistent view, since an
    /// entry leaves the overlay only after the checkpoint that wrote it to redb.
    fn view(
        &self,
        lower: std::ops::Bound<&str>,
        mut pick: impl FnMut(&str) -> bool,
        limit: usize,
    ) -> StoreResult<(Entries, DocsTable)> {
        let overlay = self.overlay.read().unwrap();
        let over = overlay
            .range::<str, _>((lower, std::ops::Bound::Unbounded))
            .filter(|(k, _)| pick(k))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        drop(overlay);
        Ok((over, tx.open_table(DOCS).map_err(StoreError::of)?))
    }

    fn keys_in(&self, wanted: &[bool; model::digest::BUCKETS]) -> StoreResult<Vec<KeyVersion>> {
        // Side records are in no bucket (model::side).
        let want = |k: &str| !model::side::is_side(k) && wanted[bucket_of(k) as usize];
        let (over, t) = self.view(std::ops::Bound::Unbounded, want, usize::MAX)?;
        let mut out = Vec::new();
        merged(&t, std::ops::Bound::Unbounded, &over, |k, v| {
            if want(k) {
                let (version, hash) = decode_head(v)?;
                out.push(KeyVersion { key: k.to_string(), version, hash });
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

#[async_trait]
impl Store for RedbStore {
    fn engine(&self) -> &'static str {
        "redb"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        if let Some(v) = self.overlay.read().unwrap().get(key) {
            return Ok(Some(decode(key, v)?));
        }
        // Not in the overlay: redb holds the newest version (a checkpoint since the look
        // may have written a newer one there, never an older one).
        let tx = self.db.begin_read().map_err(StoreError::of)?;
        let t = tx.open_table(DOCS).map_err(StoreError::of)?;
        match t.get(key).map_err(StoreError::of)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = false;
        {
            let overlay = self.overlay.read().unwrap();
            for key in keys {
                let found = match overlay.get(key) {
                    Some(v) => Some(decode(key, v)?),
                    None => None,
                };
                missing |= found.is_none();
                out.push(found);
            }
        }
        if missing {
            let tx = self.db.begin_read().map_err(StoreError::of)?;
            let t = tx.open_table(DOCS).map_err(StoreError::of)?;
            for (key, slot) in keys.iter().zip(out.iter_mut()) {
                if slot.is_none() {
                    if let Some(v) = t.get(key.as_str()).map_err(StoreError::of)? {
                        *slot = Some(decode(key, v.value())?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the expired side records from redb, and those still in the overlay from redb
    /// too, in a transaction of its own; only then drops the latter from the overlay. So a
    /// reader never falls through an expired overlay entry to an older, live copy in redb (an
    /// undone request record over its original). A checkpoint racing the prune may write an
    /// expired entry back, which the next prune deletes: an expired side record is never
    /// read again, and a write-ahead log replay that brings one back is likewise harmless.
    async fn prune_sides(&self, now_ms: u64, released_ms: u64) -> StoreResult<usize> {
        let expired = move |key: &str, value: &[u8]| {
            model::side::is_side(key)
                && std::str::from_utf8(value.get(48..).unwrap_or_default()).is_ok_and(|b| {
                    model::side::parse(b).is_some_and(|(exp, _)| model::side::prunable(exp, now_ms, released_ms))
                })
        };
        let in_overlay: Vec<String> =
            self.overlay.read().unwrap().iter().filter(|(k, v)| expired(k, v)).map(|(k, _)| k.clone()).collect();
        let db = self.db.clone();
        let also = in_overlay.clone();
        let prune = move || -> StoreResult<std::collections::HashSet<String>> {
            let tx = db.begin_write().map_err(StoreError::of)?;
            let mut gone: std::collections::HashSet<String> = also.into_iter().collect();
            {
                let mut t = tx.open_table(DOCS).map_err(StoreError::of)?;
                for item in t.iter().map_err(StoreError::of)? {
                    let (k, v) = item.map_err(StoreError::of)?;
                    if expired(k.value(), v.value()) {
                        gone.insert(k.value().to_string());
                    }
                }
                for key in &gone {
                    t.remove(key.as_str()).map_err(StoreError::of)?;
                }
            }
            tx.commit().map_err(StoreError::of)?;
            Ok(gone)
        };
        let gone = tokio::task::spawn_blocking(prune).await.map_err(StoreError::of)??;
        let mut overlay = self.overlay.write().unwrap();
        for key in &in_overlay {
            if overlay.get(key).is_some_and(|v| expired(key, v)) {
                overlay.remove(key);
            }
        }
        Ok(gone.len())
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
        let mut wanted = [false; model::digest::BUCKETS];
        wanted[bucket as usize] = true;
        self.keys_in(&wanted)
    }

    async fn buckets(&self, buckets: &[u8]) -> StoreResult<Vec<KeyVersion>> {
        let mut wanted = [false; model::digest::BUCKETS];
        for b in buckets {
            wanted[*b as usize] = true;
        }
        self.keys_in(&wanted)
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let (over, t) = self.view(lower, |_| true, limit)?;
        let mut out = Vec::new();
        merged(&t, lower, &over, |k, v| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push(decode(k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        // Meta values never wait in the overlay: they are checkpointed before they are answered.
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

    /// Acknowledged writes are only in the log and the overlay until a checkpoint; a
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

    /// The version of `key` in a redb file opened directly, without the log.
    fn version_without_log(path: &Path, key: &str) -> Option<Version> {
        let db = Database::create(path).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(DOCS).unwrap();
        let v = t.get(key).unwrap().map(|v| decode_head(v.value()).unwrap().0);
        v
    }

    fn update(key: &str, seq: u64, body: &str) -> Put {
        Put { expect: Expect::Exactly(Version { epoch: 1, seq: seq - 1 }), record: rec(key, seq, body) }
    }

    /// A key written again after a checkpoint: the overlay's newer version wins over redb's,
    /// survives a crash through the log, and is what the next checkpoint writes. Puts of one
    /// group see each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overwritten_key_keeps_its_newest_version_through_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        s.write(vec![create(rec("k", 1, "v1"))]).await.unwrap();
        s.put_meta("checkpoint", b"1".to_vec()).await.unwrap();
        let bare = dir.path().join("bare1.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(version_without_log(&bare, "k").map(|v| v.seq), Some(1));

        assert_eq!(s.write(vec![update("k", 2, "v2")]).await.unwrap(), vec![true]);
        // redb still holds v1; every read sees v2.
        let bare = dir.path().join("bare2.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(version_without_log(&bare, "k").map(|v| v.seq), Some(1));
        assert_eq!(s.get("k").await.unwrap().unwrap().body, "v2");
        assert_eq!(s.get_many(&["k".into()]).await.unwrap()[0].as_ref().unwrap().body, "v2");
        assert_eq!(s.scan(None, 10).await.unwrap()[0].body, "v2");
        assert_eq!(s.bucket(bucket_of("k")).await.unwrap()[0].version.seq, 2);
        // The condition is checked against the overlay: a put expecting v1 is refused.
        assert_eq!(s.write(vec![update("k", 2, "stale")]).await.unwrap(), vec![false]);
        let crashed = dir.path().join("crashed2.redb");
        crash_copy(&path, &crashed);
        assert_eq!(RedbStore::open(&crashed).unwrap().get("k").await.unwrap().unwrap().body, "v2");

        s.put_meta("checkpoint", b"2".to_vec()).await.unwrap();
        assert_eq!(s.get("k").await.unwrap().unwrap().body, "v2");
        let bare = dir.path().join("bare3.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(version_without_log(&bare, "k").map(|v| v.seq), Some(2));

        // Two puts of one key in one call: the second sees the first.
        assert_eq!(s.write(vec![update("k", 3, "v3"), update("k", 4, "v4")]).await.unwrap(), vec![true, true]);
        assert_eq!(s.get("k").await.unwrap().unwrap().body, "v4");
        assert_digests_match_scan(&s).await;
        let crashed = dir.path().join("crashed4.redb");
        crash_copy(&path, &crashed);
        let r = RedbStore::open(&crashed).unwrap();
        assert_eq!(r.get("k").await.unwrap().unwrap().body, "v4");
        assert_digests_match_scan(&r).await;
    }

    /// Scans and bucket listings merge the overlay with redb: every acknowledged write is
    /// listed once, with its newest version, in key order, also across pages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scans_and_buckets_see_overlay_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let s = RedbStore::open_with(&path, never_on_interval()).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..40 {
            let r = rec(&format!("k{i:02}"), 1, "checkpointed");
            model.insert(r.key.clone(), r.clone());
            s.write(vec![create(r)]).await.unwrap();
        }
        s.put_meta("checkpoint", b"1".to_vec()).await.unwrap();
        // In the overlay only: updates of every third key, new keys between, before and after.
        for i in (0..40).step_by(3) {
            let r = rec(&format!("k{i:02}"), 2, "updated");
            model.insert(r.key.clone(), r.clone());
            assert_eq!(s.write(vec![update(&r.key, 2, &r.body)]).await.unwrap(), vec![true]);
        }
        for key in ["a", "k05x", "k17x", "k39x", "z"] {
            let r = rec(key, 1, "new");
            model.insert(r.key.clone(), r.clone());
            s.write(vec![create(r)]).await.unwrap();
        }
        let bare = dir.path().join("bare.redb");
        std::fs::copy(&path, &bare).unwrap();
        assert_eq!(docs_without_log(&bare).len(), 40, "the overlay writes must not be in redb yet");

        let want: Vec<Record> = model.values().cloned().collect();
        assert_eq!(s.scan(None, 1000).await.unwrap(), want);
        for page in [1, 4, 7] {
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let p = s.scan(after.as_deref(), page).await.unwrap();
                if p.is_empty() {
                    break;
                }
                assert!(p.len() <= page);
                after = Some(p.last().unwrap().key.clone());
                got.extend(p);
            }
            assert_eq!(got, want, "pages of {page}");
        }
        assert_eq!(s.scan(Some("k05"), 3).await.unwrap(), want[7..10].to_vec());
        let kv = |r: &Record| KeyVersion { key: r.key.clone(), version: r.version, hash: r.hash };
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(s.buckets(&all).await.unwrap(), want.iter().map(kv).collect::<Vec<_>>());
        for b in model.keys().map(|k| bucket_of(k)) {
            let want_b: Vec<KeyVersion> = want.iter().filter(|r| bucket_of(&r.key) == b).map(kv).collect();
            assert_eq!(s.bucket(b).await.unwrap(), want_b, "bucket {b}");
            assert_eq!(s.buckets(&[b]).await.unwrap(), want_b, "buckets [{b}]");
        }
        assert_digests_match_scan(&s).await;
    }

    /// Checkpoints run often (a small log limit) while writers update keys and readers read
    /// them: no read ever returns a version older than one already acknowledged or already
    /// read, whether it happens before, during or after a checkpoint.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_never_go_back_across_checkpoints() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let policy = SyncPolicy { interval: Duration::from_millis(2), log_limit: 1000 };
        let s = Arc::new(RedbStore::open_with(&path, policy).unwrap());
        const KEYS: usize = 4;
        const ROUNDS: u64 = 150;
        let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key{i}")).collect());
        let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
        let done = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for i in 0..KEYS {
            let (s, keys, acked) = (s.clone(), keys.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for seq in 1..=ROUNDS {
                    let before = if seq == 1 { Version::ZERO } else { Version { epoch: 1, seq: seq - 1 } };
                    let put = Put { expect: Expect::Exactly(before), record: rec(&keys[i], seq, &"x".repeat(100)) };
                    assert_eq!(s.write(vec![put]).await.unwrap(), vec![true]);
                    acked[i].store(seq, Ordering::SeqCst);
                }
            }));
        }
        let mut readers = Vec::new();
        for reader in 0..2 {
            let (s, keys, acked, done) = (s.clone(), keys.clone(), acked.clone(), done.clone());
            readers.push(tokio::spawn(async move {
                let mut seen = [0u64; KEYS];
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let floor: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                    let got: Vec<u64> = match reads % 4 {
                        0 => {
                            let mut v = Vec::new();
                            for k in keys.iter() {
                                v.push(s.get(k).await.unwrap().map_or(0, |r| r.version.seq));
                            }
                            v
                        }
                        1 => s
                            .get_many(&keys)
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| r.as_ref().map_or(0, |r| r.version.seq))
                            .collect(),
                        2 => {
                            let all = s.scan(None, 100).await.unwrap();
                            keys.iter().map(|k| all.iter().find(|r| &r.key == k).map_or(0, |r| r.version.seq)).collect()
                        }
                        _ => {
                            let b: Vec<u8> = keys.iter().map(|k| bucket_of(k)).collect();
                            let all = s.buckets(&b).await.unwrap();
                            keys.iter().map(|k| all.iter().find(|r| &r.key == k).map_or(0, |r| r.version.seq)).collect()
                        }
                    };
                    for i in 0..KEYS {
                        let low = floor[i].max(seen[i]);
                        assert!(
                            got[i] >= low,
                            "reader {reader}, read {reads}: {} at seq {} after {low}",
                            keys[i],
                            got[i]
                        );
                        seen[i] = got[i];
                    }
                    reads += 1;
                    if reads.is_multiple_of(8) {
                        tokio::task::yield_now().await;
                    }
                }
                reads
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        for r in readers {
            assert!(r.await.unwrap() > 0);
        }
        for k in keys.iter() {
            assert_eq!(s.get(k).await.unwrap().unwrap().version.seq, ROUNDS);
        }
        assert_digests_match_scan(&s).await;
    }
}
