//! The log engine: every document in memory ([`super::mem::Docs`], as the memory engine keeps
//! them), made durable by an append-only log on disk, compacted into snapshots. The default
//! embedded engine; why, with the benchmark: docs/storage-engines.md.
//!
//! Durability follows docs/design.md §7.3: an acknowledged write survives the kill of any
//! process; power loss of the whole machine may lose the last sync interval.
//!
//! - **Write**: under the store's mutex, a call's puts are decided against memory, the ones
//!   that apply are appended to the current log segment as one frame ([`super::frame`]) in
//!   one `write(2)`, and only then stored in memory and counted in the digests. Bytes given to
//!   `write(2)` are in the kernel's page cache, which outlives the process, so the write
//!   survives a `kill -9` once `write` returns, and no reader sees a write a kill could undo.
//!   Everything happens on the caller's thread: no hand-off to a writer thread and back, no
//!   `fsync` on the write path. The log is written in the order the puts were decided, so
//!   replaying it in order rebuilds the same state.
//! - **Sync**: a syncer thread `fdatasync`s the segments written to, once [`SYNC_INTERVAL`]
//!   has passed since the first write not yet synced (group commit: one sync per interval
//!   however many writes it holds). A `put_meta` (Paxos and membership state, "durable before
//!   it is answered") is synced before it returns.
//! - **Segments and snapshots**: the log is a run of files `log-N`; once the current one
//!   exceeds [`SEGMENT_LIMIT`], writes go on in `log-(N+1)` and a background thread compacts
//!   everything before it into `snapshot-(N+1)`: it takes the records in memory a few
//!   hundred at a time, each time under the store's lock but only their shared handles,
//!   and encodes them into a temporary file, syncs it and the segments from `N+1` on
//!   (the snapshot may hold states written after the cut; an open replays those segments
//!   over it), renames it into place, syncs the directory, and only then deletes the files
//!   it replaces. It reads no file: reading the old snapshot and segments back cost the
//!   compaction several times more CPU, most of it in zeroing fresh memory for them
//!   (docs/performance.md, "Compaction from memory").
//! - **Open**: the newest snapshot is read (it was complete and synced before its rename,
//!   so a bad frame in it is corruption and fails the open), then every segment from its
//!   number on, in order. A segment's reading ends at its first incomplete or corrupt
//!   frame (a frame cut by a kill in the middle of its write); writes then go to a new
//!   segment. Files older than the snapshot (left by a kill during a compaction) are deleted.
//!   Every frame carries its file's number as its tag, so a frame found in another file
//!   is never applied.
//! - **Memory**: the whole data set is in memory (about 3× the documents' JSON; 100,000
//!   orders are about 50 MB), and reads never touch the disk. A compaction holds one frame
//!   of encoded records besides.
//! - **Failures**: a failed append is cut back off the segment and the call fails, with
//!   nothing changed; if it cannot be cut back, or a sync fails, the store refuses every
//!   later write (the node answers 500 and is evicted) rather than acknowledge what a replay
//!   could misread or a power loss could lose.

use super::frame::{entries, new_frame, push_doc, push_entry, read_log, seal, ENTRY_DOC, ENTRY_META, FRAME_HEAD};
use super::mem::Docs;
use super::{KeyVersion, Put, Record, Store, StoreError, StoreResult};
use async_trait::async_trait;
use model::digest::Digests;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest time an acknowledged write waits for the `fdatasync` that covers it: what a power
/// failure of the whole machine may lose (a process crash loses nothing: the log is in the
/// page cache). 100 ms, MongoDB's default journal commit interval.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Size past which the current segment is closed and compacted. A compaction writes the data
/// set once, from memory: 64 MiB keeps that to about one compaction a minute per replica at
/// full checkout load, and bounds what an open replays besides the snapshot.
pub const SEGMENT_LIMIT: u64 = 64 << 20;

/// Size of a snapshot frame (a snapshot is written in frames of about this size).
const SNAPSHOT_FRAME: usize = 1 << 20;

/// How many keys a compaction looks at per hold of the store's lock: it takes their records'
/// handles only ([`Docs::records_after`]) and encodes them after, so a write waits for a
/// compaction about as long as a lookup of this many keys (more if the thread is descheduled
/// while it holds the lock: docs/performance.md, "Compaction from memory").
const COMPACTION_CHUNK: usize = 256;

/// When the store syncs and compacts.
#[derive(Clone, Copy, Debug)]
pub struct LogPolicy {
    /// See [`SYNC_INTERVAL`].
    pub interval: Duration,
    /// See [`SEGMENT_LIMIT`].
    pub segment_limit: u64,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy { interval: SYNC_INTERVAL, segment_limit: SEGMENT_LIMIT }
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

const SEGMENT: &str = "log-";
const SNAPSHOT: &str = "snapshot-";
const TEMPORARY: &str = ".tmp";

fn file_name(prefix: &str, number: u64) -> String {
    // Zero-padded, so that names sort as numbers do.
    format!("{prefix}{number:020}")
}

/// The snapshots and segments in a store's folder, by number.
#[derive(Debug, Default)]
struct Files {
    snapshots: Vec<u64>,
    segments: Vec<u64>,
    temporary: Vec<PathBuf>,
}

fn list(dir: &Path) -> StoreResult<Files> {
    let mut files = Files::default();
    for entry in std::fs::read_dir(dir).map_err(StoreError::of)? {
        let entry = entry.map_err(StoreError::of)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMPORARY) {
            files.temporary.push(entry.path());
        } else if let Some(n) = name.strip_prefix(SNAPSHOT).and_then(|n| n.parse().ok()) {
            files.snapshots.push(n);
        } else if let Some(n) = name.strip_prefix(SEGMENT).and_then(|n| n.parse().ok()) {
            files.segments.push(n);
        }
    }
    files.snapshots.sort_unstable();
    files.segments.sort_unstable();
    Ok(files)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Deletes the snapshots and segments numbered below `number` (what snapshot `number`
/// holds). Best effort: a file left behind is skipped by every later read and deleted by
/// the next compaction or open.
fn remove_older(dir: &Path, files: &Files, number: u64) {
    for n in files.snapshots.iter().filter(|n| **n < number) {
        let _ = std::fs::remove_file(dir.join(file_name(SNAPSHOT, *n)));
    }
    for n in files.segments.iter().filter(|n| **n < number) {
        let _ = std::fs::remove_file(dir.join(file_name(SEGMENT, *n)));
    }
}

/// Gives `apply` every entry of the frames' payloads, in order.
fn apply_frames(frames: Vec<&[u8]>, apply: &mut impl FnMut(u8, &str, &[u8]) -> StoreResult<()>) -> StoreResult<()> {
    for frame in frames {
        for (kind, key, value) in entries(frame)? {
            apply(kind, key, value)?;
        }
    }
    Ok(())
}

/// Reads the newest snapshot and every segment from its number on (what an open replays),
/// and gives `apply` every entry (kind, key, value) in log order. Returns the snapshot's
/// number (0 if none) and the bytes of segments read.
fn replay(
    dir: &Path,
    files: &Files,
    mut apply: impl FnMut(u8, &str, &[u8]) -> StoreResult<()>,
) -> StoreResult<(u64, u64)> {
    let snapshot = files.snapshots.iter().copied().max().unwrap_or(0);
    if snapshot > 0 {
        let path = dir.join(file_name(SNAPSHOT, snapshot));
        let bytes = std::fs::read(&path).map_err(StoreError::of)?;
        let log = read_log(&bytes, snapshot);
        if log.torn > 0 || log.stale > 0 {
            return Err(StoreError(format!("snapshot {} is damaged; the store cannot be opened", path.display())));
        }
        apply_frames(log.frames, &mut apply)?;
    }
    let mut read = 0;
    for &n in files.segments.iter().filter(|n| **n >= snapshot) {
        let path = dir.join(file_name(SEGMENT, n));
        let bytes = std::fs::read(&path).map_err(StoreError::of)?;
        let log = read_log(&bytes, n);
        if log.torn > 0 || log.stale > 0 {
            // A kill in the middle of an append leaves the end of its frame out.
            log::warn!(
                "{}: {} bytes after the last complete frame (a write cut by a crash), {} frames of another file",
                path.display(),
                log.torn,
                log.stale
            );
        }
        apply_frames(log.frames, &mut apply)?;
        read += bytes.len() as u64;
    }
    Ok((snapshot, read))
}

/// Compacts the store into `snapshot-upto` from memory, then deletes the snapshot and the
/// segments before `upto` that it replaces. Writers go on meanwhile, in segment `upto` or
/// later: the records are taken from memory [`COMPACTION_CHUNK`] keys at a time, each time
/// under the store's lock ([`Docs::records_after`]), so the snapshot holds, per key, its
/// state at some moment after the cut: a state logged before the cut, or one logged in
/// segment `upto` or later. What makes that safe is the replay, not the chunks: an open
/// reads segment `upto` and later over the snapshot, in log order, which ends every key at
/// its last logged state, the one memory holds, whatever state the snapshot had (one write's
/// keys may sit in two chunks, one before and one after it). So those segments are synced
/// before the snapshot replaces anything: no power loss can then leave the snapshot with a
/// state whose frame is gone, nor take a frame the replay needs. Side records expired by
/// now are left out (one expired since is dropped again after an open). The meta values are
/// taken at a moment no `put_meta` is between its append and its update of memory
/// (`meta_turn`), so the snapshot has every meta value the replaced files hold.
///
/// A failed sync of those segments stops the store, as a failed sync of the syncer does.
fn compact(
    dir: &Path,
    upto: u64,
    inner: &Mutex<Inner>,
    meta_turn: &tokio::sync::Mutex<()>,
    syncer: &Syncer,
) -> StoreResult<()> {
    let started = Instant::now();
    let files = list(dir)?;
    let name = file_name(SNAPSHOT, upto);
    let temporary = dir.join(format!("{name}{TEMPORARY}"));
    let mut out = File::create(&temporary).map_err(StoreError::of)?;
    let metas = {
        let _turn = meta_turn.blocking_lock();
        inner.lock().unwrap().docs.metas()
    };
    let now = model::side::now_ms();
    let mut frame = new_frame();
    for (key, value) in &metas {
        push_entry(&mut frame, ENTRY_META, key, value);
    }
    let (mut documents, mut after, mut longest) = (0, None::<String>, Duration::ZERO);
    loop {
        // Under the lock, only the records' handles are taken: the encoding waits for no one.
        let (records, next) = {
            let inner = inner.lock().unwrap();
            let held = Instant::now();
            let taken = inner.docs.records_after(after.as_deref(), COMPACTION_CHUNK, now);
            longest = longest.max(held.elapsed());
            taken
        };
        documents += records.len();
        for r in &records {
            push_doc(&mut frame, r);
        }
        if frame.len() >= SNAPSHOT_FRAME || next.is_none() {
            seal(&mut frame, upto);
            out.write_all(&frame).map_err(StoreError::of)?;
            frame.truncate(FRAME_HEAD);
        }
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    out.sync_data().map_err(StoreError::of)?;
    let current = inner.lock().unwrap().log.number;
    for n in upto..=current {
        let synced = match File::open(dir.join(file_name(SEGMENT, n))) {
            Ok(segment) => segment.sync_data(),
            // Not created yet (a rotation that failed); no other process deletes these.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            // The kernel reports a failed write-back once: this sync may have taken the
            // error the syncer would have seen.
            syncer.check(Err(e), &format!("sync segment {n} for a compaction"));
            return Err(StoreError(format!("segment {n} could not be synced")));
        }
    }
    std::fs::rename(&temporary, dir.join(&name)).map_err(StoreError::of)?;
    sync_dir(dir).map_err(StoreError::of)?;
    // The snapshot is durable: what it replaces may go.
    remove_older(dir, &files, upto);
    log::info!(
        "{}: compacted into {name} ({documents} records; the store was held at most {} µs) in {} ms",
        dir.display(),
        longest.as_micros(),
        started.elapsed().as_millis()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The syncer
// ---------------------------------------------------------------------------------------------

/// Files written to and not yet synced, for the syncer thread.
#[derive(Default)]
struct Unsynced {
    files: Vec<Arc<File>>,
    /// The newest segment created since the folder's last sync: the folder needs a sync for
    /// it to survive a power loss.
    dir: Option<u64>,
    /// When the oldest unsynced write was made.
    since: Option<Instant>,
    closing: bool,
}

struct Syncer {
    unsynced: Mutex<Unsynced>,
    wake: Condvar,
    interval: Duration,
    dir: PathBuf,
    /// Set when a sync failed: what was acknowledged may not survive a power loss.
    failed: AtomicBool,
    /// The newest segment whose entry in the folder is synced (the folder was synced after
    /// it was created).
    dir_synced: std::sync::atomic::AtomicU64,
}

impl Syncer {
    /// Notes a write to `file` (and, with `created`, that segment `created` is new in the
    /// folder).
    fn wrote(&self, file: &Arc<File>, created: Option<u64>) {
        let mut u = self.unsynced.lock().unwrap();
        if !u.files.iter().any(|f| Arc::ptr_eq(f, file)) {
            u.files.push(file.clone());
        }
        u.dir = u.dir.max(created);
        if u.since.is_none() {
            u.since = Some(Instant::now());
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut u = self.unsynced.lock().unwrap();
        loop {
            let Some(since) = u.since else {
                if u.closing {
                    return;
                }
                u = self.wake.wait(u).unwrap();
                continue;
            };
            let due = since + self.interval;
            let now = Instant::now();
            if now < due && !u.closing {
                u = self.wake.wait_timeout(u, due - now).unwrap().0;
                continue;
            }
            let files = std::mem::take(&mut u.files);
            let dir = std::mem::take(&mut u.dir);
            u.since = None;
            drop(u);
            for f in files {
                self.check(f.sync_data(), "sync the log");
            }
            if let Some(number) = dir {
                self.sync_dir_upto(number);
            }
            u = self.unsynced.lock().unwrap();
        }
    }

    /// Syncs the folder, which then holds every segment up to `number` for good.
    fn sync_dir_upto(&self, number: u64) {
        let r = sync_dir(&self.dir);
        let ok = r.is_ok();
        self.check(r, "sync the folder");
        if ok {
            self.dir_synced.fetch_max(number, Ordering::SeqCst);
        }
    }

    fn check(&self, r: std::io::Result<()>, what: &str) {
        if let Err(e) = r {
            log::error!("{}: cannot {what} ({e}); the store refuses writes from now on", self.dir.display());
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    fn close(&self) {
        self.unsynced.lock().unwrap().closing = true;
        self.wake.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// The segment being appended to.
struct Segment {
    file: Arc<File>,
    number: u64,
    len: u64,
}

struct Inner {
    docs: Docs,
    log: Segment,
    /// Set when the log could not be put back in order after a failed append.
    poisoned: Option<String>,
    /// The running compaction, if any.
    compaction: Option<JoinHandle<()>>,
}

/// The log-backed store. See the module docs.
pub struct LogStore {
    /// Shared with the compaction thread, which encodes the snapshot from it.
    inner: Arc<Mutex<Inner>>,
    syncer: Arc<Syncer>,
    sync_thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    policy: LogPolicy,
    /// Held by a `put_meta` from its append to its update in memory (and by a compaction
    /// while it copies the meta values).
    meta_turn: Arc<tokio::sync::Mutex<()>>,
}

fn create_segment(dir: &Path, number: u64) -> StoreResult<Arc<File>> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(dir.join(file_name(SEGMENT, number)))
        .map_err(StoreError::of)?;
    Ok(Arc::new(file))
}

impl LogStore {
    /// Opens (or creates) the store in the folder `dir` with the default [`LogPolicy`].
    pub fn open(dir: &Path) -> StoreResult<LogStore> {
        LogStore::open_with(dir, LogPolicy::default())
    }

    /// Opens (or creates) the store in the folder `dir`: reads its snapshot and segments, then
    /// starts a new segment.
    pub fn open_with(dir: &Path, policy: LogPolicy) -> StoreResult<LogStore> {
        std::fs::create_dir_all(dir).map_err(StoreError::of)?;
        let files = list(dir)?;
        for t in &files.temporary {
            // A compaction cut short; its inputs are all still there.
            let _ = std::fs::remove_file(t);
        }
        let mut docs = Docs::default();
        let (snapshot, read) = replay(dir, &files, |kind, key, value| {
            match kind {
                ENTRY_DOC => docs.store(super::frame::decode(key, value)?),
                _ => docs.set_meta(key.to_string(), value.to_vec()),
            }
            Ok(())
        })?;
        remove_older(dir, &files, snapshot);
        let number = files.segments.last().map_or(snapshot, |n| n + 1).max(snapshot).max(1);
        let file = create_segment(dir, number)?;
        sync_dir(dir).map_err(StoreError::of)?;
        let syncer = Arc::new(Syncer {
            unsynced: Mutex::default(),
            wake: Condvar::new(),
            interval: policy.interval,
            dir: dir.to_path_buf(),
            failed: AtomicBool::new(false),
            dir_synced: std::sync::atomic::AtomicU64::new(number),
        });
        let s = syncer.clone();
        let sync_thread =
            std::thread::Builder::new().name("log-sync".into()).spawn(move || s.run()).map_err(StoreError::of)?;
        let store = LogStore {
            inner: Arc::new(Mutex::new(Inner {
                docs,
                log: Segment { file, number, len: 0 },
                poisoned: None,
                compaction: None,
            })),
            syncer,
            sync_thread: Some(sync_thread),
            dir: dir.to_path_buf(),
            policy,
            meta_turn: Arc::new(tokio::sync::Mutex::new(())),
        };
        if read > policy.segment_limit {
            store.start_compaction(&mut store.inner.lock().unwrap());
        }
        Ok(store)
    }

    /// The store's state, if it still takes writes.
    fn writable(&self) -> StoreResult<MutexGuard<'_, Inner>> {
        let inner = self.inner.lock().unwrap();
        if let Some(p) = &inner.poisoned {
            return Err(StoreError(p.clone()));
        }
        if self.syncer.failed.load(Ordering::SeqCst) {
            return Err(StoreError("the log could not be synced; the store refuses writes".into()));
        }
        Ok(inner)
    }

    /// Appends a sealed frame to the current segment; on failure cuts it back off (or
    /// poisons the store). Returns the file written, for a caller that syncs it.
    fn append(&self, inner: &mut Inner, frame: &mut [u8]) -> StoreResult<(Arc<File>, u64)> {
        seal(frame, inner.log.number);
        let (file, number) = (inner.log.file.clone(), inner.log.number);
        if let Err(e) = (&*file).write_all(frame) {
            let msg = match file.set_len(inner.log.len) {
                Ok(()) => format!("log: append failed: {e}"),
                Err(cut) => {
                    let msg = format!("log: append failed ({e}) and cannot be cut back ({cut}); store stopped");
                    inner.poisoned = Some(msg.clone());
                    msg
                }
            };
            log::error!("{}: {msg}", self.dir.display());
            return Err(StoreError(msg));
        }
        inner.log.len += frame.len() as u64;
        self.syncer.wrote(&file, None);
        if inner.log.len > self.policy.segment_limit {
            self.rotate(inner);
        }
        Ok((file, number))
    }

    /// Goes on in a new segment and compacts the closed ones.
    fn rotate(&self, inner: &mut Inner) {
        let number = inner.log.number + 1;
        match create_segment(&self.dir, number) {
            Ok(file) => {
                // The closed segment's last writes are already queued for the syncer.
                self.syncer.wrote(&file, Some(number));
                inner.log = Segment { file, number, len: 0 };
                self.start_compaction(inner);
            }
            // Writes stay in the current segment; the next append tries again.
            Err(e) => log::warn!("{}: cannot start a new log segment: {e}", self.dir.display()),
        }
    }

    /// Starts compacting the segments before the current one, unless a compaction runs
    /// (the next rotation starts one that covers these too).
    fn start_compaction(&self, inner: &mut Inner) {
        if inner.compaction.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let (dir, upto) = (self.dir.clone(), inner.log.number);
        let (shared, meta_turn, syncer) = (self.inner.clone(), self.meta_turn.clone(), self.syncer.clone());
        let spawned = std::thread::Builder::new().name("log-compact".into()).spawn(move || {
            if let Err(e) = compact(&dir, upto, &shared, &meta_turn, &syncer) {
                log::warn!("{}: compaction failed: {e}", dir.display());
            }
        });
        match spawned {
            Ok(handle) => inner.compaction = Some(handle),
            Err(e) => log::warn!("{}: cannot start a compaction: {e}", self.dir.display()),
        }
    }

    /// Waits for a running compaction (tests). Not from a task of a current-thread runtime
    /// while another task of it may be inside a `put_meta`: the compaction waits for that.
    pub fn wait_for_compaction(&self) {
        let running = self.inner.lock().unwrap().compaction.take();
        if let Some(c) = running {
            let _ = c.join();
        }
    }
}

impl Drop for LogStore {
    /// Syncs what is unsynced and waits for a running compaction, so the folder is complete
    /// and released when the store is dropped.
    fn drop(&mut self) {
        self.syncer.close();
        if let Some(t) = self.sync_thread.take() {
            let _ = t.join();
        }
        self.wait_for_compaction();
    }
}

#[async_trait]
impl Store for LogStore {
    fn engine(&self) -> &'static str {
        "log"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        Ok(self.inner.lock().unwrap().docs.get(key))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let inner = self.inner.lock().unwrap();
        Ok(keys.iter().map(|k| inner.docs.get(k)).collect())
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let mut inner = self.writable()?;
        let applied = inner.docs.decide(&puts);
        if !applied.contains(&true) {
            return Ok(applied);
        }
        let size: usize = puts
            .iter()
            .zip(&applied)
            .filter(|(_, a)| **a)
            .map(|(p, _)| 60 + p.record.key.len() + p.record.body.len())
            .sum();
        let mut frame = Vec::with_capacity(FRAME_HEAD + size);
        frame.resize(FRAME_HEAD, 0);
        for (put, _) in puts.iter().zip(&applied).filter(|(_, a)| **a) {
            push_doc(&mut frame, &put.record);
        }
        self.append(&mut inner, &mut frame)?;
        // Logged first: no reader sees a write a kill could take back.
        for (put, applies) in puts.into_iter().zip(&applied) {
            if *applies {
                inner.docs.store(put.record);
            }
        }
        Ok(applied)
    }

    async fn digests(&self) -> StoreResult<Digests> {
        Ok(self.inner.lock().unwrap().docs.digests())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        Ok(self.inner.lock().unwrap().docs.buckets(&[bucket]))
    }

    async fn buckets(&self, buckets: &[u8]) -> StoreResult<Vec<KeyVersion>> {
        Ok(self.inner.lock().unwrap().docs.buckets(buckets))
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        Ok(self.inner.lock().unwrap().docs.scan(after, limit))
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.inner.lock().unwrap().docs.meta(name))
    }

    /// Appends the value, syncs, and only then shows it to readers: no one acts on a value
    /// a power loss could take back. Meta writes take turns, so memory sees them in the
    /// order the log has them.
    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        let _turn = self.meta_turn.lock().await;
        let (file, number) = {
            let mut inner = self.writable()?;
            let mut frame = new_frame();
            push_entry(&mut frame, ENTRY_META, name, &value);
            self.append(&mut inner, &mut frame)?
        };
        // The frame is in `file` even if a rotation followed. A segment created since the
        // folder's last sync (a rotation moments ago) is not there for good until the folder
        // is synced too: without that, a power loss could take the segment, and the promise
        // in it, away after it was answered.
        let syncer = self.syncer.clone();
        let synced = tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            if syncer.dir_synced.load(Ordering::SeqCst) < number {
                sync_dir(&syncer.dir)?;
                syncer.dir_synced.fetch_max(number, Ordering::SeqCst);
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(StoreError::of)?;
        synced.map_err(StoreError::of)?;
        self.inner.lock().unwrap().docs.set_meta(name.to_string(), value);
        Ok(())
    }

    async fn prune_sides(&self, now_ms: u64, released_ms: u64) -> StoreResult<usize> {
        Ok(self.inner.lock().unwrap().docs.prune_sides(now_ms, released_ms))
    }

    fn stopped(&self) -> Option<String> {
        self.writable().err().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DynStore, Expect};
    use super::*;
    use crate::conformance::{self, digests_by_scan};
    use model::version::Version;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let path = dir.path().join(format!("s{i}"));
            async move { Arc::new(LogStore::open(&path).unwrap()) as DynStore }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run_reopen(|| {
            let path = dir.path().join("s");
            async move { Arc::new(LogStore::open(&path).unwrap()) as DynStore }
        })
        .await;
    }

    /// Small segments, so that a few writes rotate and compact.
    fn small() -> LogPolicy {
        LogPolicy { interval: SYNC_INTERVAL, segment_limit: 4096 }
    }

    /// A membership promise written into a segment created moments before (a rotation the
    /// syncer has not synced the folder for yet) is answered only once the folder holds that
    /// segment for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_promise_after_a_rotation_is_durable_with_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        // The syncer would wait an hour: only `put_meta` itself can sync the folder.
        let policy = LogPolicy { interval: Duration::from_secs(3600), segment_limit: 4096 };
        let store = LogStore::open_with(dir.path(), policy).unwrap();
        let first = store.inner.lock().unwrap().log.number;
        let mut seq = 1;
        while store.inner.lock().unwrap().log.number == first {
            store.write(vec![update("k", seq, &"x".repeat(512))]).await.unwrap();
            seq += 1;
        }
        let rotated = store.inner.lock().unwrap().log.number;
        assert!(store.syncer.dir_synced.load(Ordering::SeqCst) < rotated, "the syncer has not run");
        store.put_meta("paxos", b"promise".to_vec()).await.unwrap();
        assert!(store.syncer.dir_synced.load(Ordering::SeqCst) >= rotated, "the folder holds the new segment");
    }

    fn update(key: &str, seq: u64, body: &str) -> Put {
        let expect = Expect::Exactly(if seq == 1 { Version::ZERO } else { Version { epoch: 1, seq: seq - 1 } });
        Put { expect, record: Record::new(key.into(), Version { epoch: 1, seq }, body.into()) }
    }

    /// Copies the store's files as a kill would leave them (everything written is in the
    /// page cache, so a copy sees it).
    fn crash_copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    async fn assert_consistent(s: &LogStore) {
        assert!(s.digests().await.unwrap() == digests_by_scan(s).await);
    }

    #[tokio::test]
    async fn a_crash_copy_holds_every_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(&dir.path().join("s")).unwrap();
        for i in 0..50 {
            s.write(vec![update(&format!("k{i}"), 1, "one")]).await.unwrap();
        }
        s.write((0..50).map(|i| update(&format!("k{i}"), 2, "two")).collect()).await.unwrap();
        crash_copy(&dir.path().join("s"), &dir.path().join("c"));
        let c = LogStore::open(&dir.path().join("c")).unwrap();
        let all = c.scan(None, 1000).await.unwrap();
        assert_eq!(all.len(), 50);
        assert!(all.iter().all(|r| r.body == "two" && r.version.seq == 2));
        assert!(c.digests().await.unwrap() == s.digests().await.unwrap());
        assert_consistent(&c).await;
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_ignored_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(&dir.path().join("s")).unwrap();
        s.write(vec![update("a", 1, "kept")]).await.unwrap();
        s.write(vec![update("b", 1, "cut")]).await.unwrap();
        let crashed = dir.path().join("c");
        crash_copy(&dir.path().join("s"), &crashed);
        let segment = crashed.join(names(&crashed).pop().unwrap());
        let bytes = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &bytes[..bytes.len() - 3]).unwrap();
        let c = LogStore::open(&crashed).unwrap();
        assert_eq!(c.get("a").await.unwrap().unwrap().body, "kept");
        assert_eq!(c.get("b").await.unwrap(), None);
        // The next writes go to a new segment and survive the next open.
        c.write(vec![update("b", 1, "again")]).await.unwrap();
        drop(c);
        let c = LogStore::open(&crashed).unwrap();
        assert_eq!(c.get("b").await.unwrap().unwrap().body, "again");
        assert_consistent(&c).await;
    }

    #[tokio::test]
    async fn a_frame_found_in_another_file_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let s = LogStore::open(&path).unwrap();
        s.write(vec![update("a", 1, "one")]).await.unwrap();
        drop(s);
        // Segment 1's frames under the name of segment 7.
        std::fs::rename(path.join(file_name(SEGMENT, 1)), path.join(file_name(SEGMENT, 7))).unwrap();
        let s = LogStore::open(&path).unwrap();
        assert_eq!(s.get("a").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_the_newest_states_and_drops_the_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let s = LogStore::open_with(&path, small()).unwrap();
        s.put_meta("view", b"1".to_vec()).await.unwrap();
        for seq in 1..=30 {
            s.write((0..20).map(|k| update(&format!("k{k}"), seq, &format!("state {seq} of k{k}"))).collect())
                .await
                .unwrap();
            if seq == 15 {
                s.put_meta("view", b"2".to_vec()).await.unwrap();
            }
        }
        s.wait_for_compaction();
        let files = names(&path);
        let snapshots: Vec<_> = files.iter().filter(|n| n.starts_with(SNAPSHOT)).collect();
        assert_eq!(snapshots.len(), 1, "{files:?}");
        // Only segments from the snapshot's number on are left.
        let snap: u64 = snapshots[0].strip_prefix(SNAPSHOT).unwrap().parse().unwrap();
        assert!(snap > 1, "{files:?}");
        for n in files.iter().filter_map(|n| n.strip_prefix(SEGMENT)) {
            assert!(n.parse::<u64>().unwrap() >= snap, "{files:?}");
        }
        let root = s.digests().await.unwrap();
        drop(s);
        let s = LogStore::open_with(&path, small()).unwrap();
        assert!(s.digests().await.unwrap() == root);
        assert_consistent(&s).await;
        assert_eq!(s.get_meta("view").await.unwrap(), Some(b"2".to_vec()));
        for k in 0..20 {
            let r = s.get(&format!("k{k}")).await.unwrap().unwrap();
            assert_eq!((r.version.seq, r.body), (30, format!("state 30 of k{k}")));
        }
    }

    /// Cuts the log by hand: segment `number` takes the writes from here on, and no
    /// compaction starts.
    fn cut(s: &LogStore, path: &Path, number: u64) {
        let mut inner = s.inner.lock().unwrap();
        inner.log = Segment { file: create_segment(path, number).unwrap(), number, len: 0 };
    }

    /// Compacts by hand, on a thread of its own as a compaction runs.
    fn compact_now(s: &LogStore, path: &Path, upto: u64) {
        std::thread::scope(|t| t.spawn(|| compact(path, upto, &s.inner, &s.meta_turn, &s.syncer)).join().unwrap())
            .unwrap();
    }

    fn key(k: usize) -> String {
        format!("k{k:04}")
    }

    /// A compaction encodes memory, which may hold states written after its cut (in the
    /// segment it does not replace): an open replays that segment over the snapshot and ends
    /// every key at its last state, whether the snapshot holds that state, an older one, or a
    /// newer one than some of the frames replayed over it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_holding_writes_after_its_cut_opens_to_the_last_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        // Segments that never fill: this test cuts and compacts by hand. Enough keys for
        // several chunks.
        let keys = 4 * COMPACTION_CHUNK + 7;
        let s = LogStore::open_with(&path, LogPolicy { interval: SYNC_INTERVAL, segment_limit: u64::MAX }).unwrap();
        for seq in 1..=2 {
            s.write((0..keys).map(|k| update(&key(k), seq, &format!("{seq}"))).collect()).await.unwrap();
        }
        s.put_meta("view", b"before the cut".to_vec()).await.unwrap();
        cut(&s, &path, 2);
        // After the cut and before the snapshot is encoded: state 3 of every key, state 4 of
        // half of them (the snapshot holds 4, and the replay applies 3 and then 4 over it).
        s.write((0..keys).map(|k| update(&key(k), 3, "3")).collect()).await.unwrap();
        s.write((0..keys / 2).map(|k| update(&key(k), 4, "4")).collect()).await.unwrap();
        compact_now(&s, &path, 2);
        assert!(!names(&path).contains(&file_name(SEGMENT, 1)), "{:?}", names(&path));
        // After the snapshot: state 5 of a quarter of the keys, and a new meta value.
        s.write((0..keys / 4).map(|k| update(&key(k), 5, "5")).collect()).await.unwrap();
        s.put_meta("view", b"after the snapshot".to_vec()).await.unwrap();
        let root = s.digests().await.unwrap();
        // A kill now (every frame is in the page cache) and a clean close open the same.
        crash_copy(&path, &dir.path().join("c"));
        drop(s);
        for p in [path, dir.path().join("c")] {
            let s = LogStore::open(&p).unwrap();
            for k in 0..keys {
                let r = s.get(&key(k)).await.unwrap().unwrap();
                let last = if k < keys / 4 {
                    5
                } else if k < keys / 2 {
                    4
                } else {
                    3
                };
                assert_eq!((r.version.seq, r.body), (last, last.to_string()), "{} in {}", key(k), p.display());
            }
            assert_eq!(s.get_meta("view").await.unwrap(), Some(b"after the snapshot".to_vec()));
            assert!(s.digests().await.unwrap() == root);
            assert_consistent(&s).await;
        }
    }

    /// Writes made while a compaction takes memory apart chunk by chunk are all there after
    /// an open, whichever chunk they landed before or after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_made_while_a_compaction_runs_survive_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let keys = 40 * COMPACTION_CHUNK;
        let s = Arc::new(
            LogStore::open_with(&path, LogPolicy { interval: SYNC_INTERVAL, segment_limit: u64::MAX }).unwrap(),
        );
        s.write((0..keys).map(|k| update(&key(k), 1, "1")).collect()).await.unwrap();
        cut(&s, &path, 2);
        let done = Arc::new(AtomicBool::new(false));
        let compaction = {
            let (s, path, done) = (s.clone(), path.clone(), done.clone());
            std::thread::spawn(move || {
                compact(&path, 2, &s.inner, &s.meta_turn, &s.syncer).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        // Keys spread over the whole range, written again and again until the compaction ends.
        let mut seq = vec![1u64; keys];
        let mut rounds = 0;
        while !done.load(Ordering::SeqCst) || rounds == 0 {
            let batch: Vec<usize> = (0..keys).step_by(97).map(|k| (k + rounds) % keys).collect();
            s.write(batch.iter().map(|&k| update(&key(k), seq[k] + 1, &format!("{}", seq[k] + 1))).collect())
                .await
                .unwrap();
            batch.iter().for_each(|&k| seq[k] += 1);
            rounds += 1;
        }
        compaction.join().unwrap();
        assert!(names(&path).contains(&file_name(SNAPSHOT, 2)), "{:?}", names(&path));
        crash_copy(&path, &dir.path().join("c"));
        let c = LogStore::open(&dir.path().join("c")).unwrap();
        for (k, &want) in seq.iter().enumerate() {
            let r = c.get(&key(k)).await.unwrap().unwrap();
            assert_eq!((r.version.seq, r.body), (want, want.to_string()), "{} after {rounds} rounds", key(k));
        }
        assert!(c.digests().await.unwrap() == s.digests().await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_cut_short_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        // Three states of each key in segment 1, kept aside.
        let s = LogStore::open(&path).unwrap();
        for seq in 1..=3 {
            s.write((0..20).map(|k| update(&format!("k{k}"), seq, &"x".repeat(100))).collect()).await.unwrap();
        }
        drop(s);
        let first = std::fs::read(path.join(file_name(SEGMENT, 1))).unwrap();
        // Three more with small segments: compacted into a snapshot, segment 1 deleted.
        let s = LogStore::open_with(&path, small()).unwrap();
        for seq in 4..=6 {
            s.write((0..20).map(|k| update(&format!("k{k}"), seq, &"y".repeat(100))).collect()).await.unwrap();
        }
        s.wait_for_compaction();
        // One more rotation after that compaction: its compaction holds every state of the k
        // keys, which no segment left holds.
        s.write((0..20).map(|k| update(&format!("m{k}"), 1, &"z".repeat(100))).collect()).await.unwrap();
        s.wait_for_compaction();
        let root = s.digests().await.unwrap();
        drop(s);
        assert!(!path.join(file_name(SEGMENT, 1)).exists(), "{:?}", names(&path));
        // A kill after the snapshot's rename and before the deletions leaves segment 1, and
        // one in the middle of writing a snapshot leaves a temporary file.
        std::fs::write(path.join(file_name(SEGMENT, 1)), first).unwrap();
        std::fs::write(path.join(format!("{}{TEMPORARY}", file_name(SNAPSHOT, 99))), b"half a snap").unwrap();
        let s = LogStore::open_with(&path, small()).unwrap();
        assert!(s.digests().await.unwrap() == root);
        assert_eq!(s.get("k3").await.unwrap().unwrap().version.seq, 6);
        let files = names(&path);
        assert!(!files.iter().any(|n| n.ends_with(TEMPORARY) || *n == file_name(SEGMENT, 1)), "{files:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_snapshot_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let s = LogStore::open_with(&path, small()).unwrap();
        for seq in 1..=3 {
            s.write((0..20).map(|k| update(&format!("k{k}"), seq, &"x".repeat(100))).collect()).await.unwrap();
        }
        s.wait_for_compaction();
        drop(s);
        let snap = names(&path).into_iter().find(|n| n.starts_with(SNAPSHOT)).unwrap();
        let mut bytes = std::fs::read(path.join(&snap)).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(path.join(&snap), bytes).unwrap();
        let err = LogStore::open_with(&path, small()).err().expect("a damaged snapshot must not open");
        assert!(err.0.contains("damaged"), "{err}");
    }

    #[tokio::test]
    async fn a_refused_put_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let s = LogStore::open(&path).unwrap();
        s.write(vec![update("a", 1, "one")]).await.unwrap();
        let len = s.inner.lock().unwrap().log.len;
        assert_eq!(s.write(vec![update("a", 1, "again")]).await.unwrap(), vec![false]);
        assert_eq!(s.inner.lock().unwrap().log.len, len);
    }
}
