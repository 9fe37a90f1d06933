//! Which embedded durable engine backs a replica: a benchmark of the webshop's write pattern.
//!
//! Candidates, all behind the same [`Store`] trait and all passing the same conformance suite
//! (checked at the start of every run):
//!
//! - `redb`: our [`RedbStore`], exactly as the replicas use it (one writer thread, every queued
//!   `write` call folded into one group; each group appended to a write-ahead log and kept in
//!   an in-memory overlay, which a checkpoint writes to redb in one durable commit per sync
//!   interval; see its module docs).
//!   `ENGINES_REDB_SYNC_MS=0` gives the behaviour before the log: one fsync per group.
//! - `fjall`: fjall 2.x (an LSM tree with a journal) behind the same group-commit writer: one
//!   write batch per drained group, committed with `PersistMode::SyncAll`.
//! - `log`: our [`LogStore`], exactly as the replicas use it (every document in memory, each
//!   `write` call appended to the current log segment on the caller's thread, the segments
//!   synced every 100 ms and compacted into snapshots in the background; see its module
//!   docs). The default engine since it was measured here and in the whole cluster.
//!
//! Phases per engine, on a fresh temporary directory:
//!
//! 1. bulk load (batch_init): `get_many` of N fresh uuid keys, then one `write` of N puts;
//! 2. conditional puts: W tokio tasks, each repeatedly reads one of its own keys and writes
//!    its next version with `Expect::Exactly(current)`; durable when `write` returns; for W in
//!    1, 16, 64 (group commit is what makes W > 1 cheap);
//! 3. point reads: `get` of random loaded keys, with the same task counts;
//! 4. reopen: drop the store and time opening it again (recovery plus the digest scan);
//! 5. kill -9: a child process (this binary again) writes conditional puts from 16 tasks to
//!    the same store and prints every acknowledged one; it is killed with SIGKILL mid-work,
//!    the store is reopened (timed: the crash recovery) and every acknowledged write must be
//!    there, with digests equal to a full scan. This is the design's failure model (any
//!    process killed at any time); it does not simulate power loss.
//!
//! Besides ops/s and p50/p99 latency, each phase reports KB/op: the bytes the process caused
//! to be written to storage (`write_bytes` of /proc/self/io) per operation, i.e. the write
//! amplification, which depends far less on the other load of a shared machine than timings.
//!
//! Every run is bounded in count and time. Sizes come from the environment:
//!
//! | variable           | default    | meaning                                       |
//! |--------------------|------------|-----------------------------------------------|
//! | `ENGINES_BULK`     | 100000     | documents in the bulk load                    |
//! | `ENGINES_WRITES`   | 20000      | most conditional puts per task count          |
//! | `ENGINES_READS`    | 200000     | most point reads per task count               |
//! | `ENGINES_SECS`     | 10         | most seconds per task count (writes, reads)   |
//! | `ENGINES_TASKS`    | 1,16,64    | concurrent tasks                              |
//! | `ENGINES_ONLY`     | redb,fjall,log | engines to run                            |
//! | `ENGINES_CHECK`    | 1          | run the conformance suite first (0: skip)     |
//! | `ENGINES_KILL_MS`  | 1000       | the crash child runs this long (0: no crash test) |
//! | `ENGINES_DIR`      | temp dir   | where the temporary directories are made      |
//! | `ENGINES_REDB_SYNC_MS` | 20     | redb's sync interval (`SyncPolicy::interval`; 0: a sync per group) |
//!
//! `cargo bench -p store --features redb-engine --bench engines`; a quick run (< 1 minute):
//! `ENGINES_BULK=10000 ENGINES_WRITES=2000 ENGINES_READS=20000 ENGINES_SECS=2 cargo bench -p store --features redb-engine --bench engines`.
//! Results and the decision: docs/storage-engines.md.

use async_trait::async_trait;
use model::digest::{bucket_of, Digests, Hash};
use model::Version;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use store::frame::{decode, decode_head, encode};
use store::log_engine::LogStore;
use store::redb_engine::{RedbStore, SyncPolicy, SYNC_INTERVAL};
use store::{
    check_same_version, condition_holds, conformance, DynStore, Expect, KeyVersion, Put, Record, Store, StoreError,
    StoreResult,
};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------------
// Shared group-commit writer (the same shape as RedbStore's, for the other candidates)
// ---------------------------------------------------------------------------------------------

/// Most write calls folded into one group, as in `RedbStore`.
const MAX_GROUP: usize = 4096;

enum Job {
    Docs(Vec<Put>, oneshot::Sender<StoreResult<Vec<bool>>>),
    Meta(String, Vec<u8>, oneshot::Sender<StoreResult<()>>),
}

/// Commits one drained group durably; returns per job the applied flags (empty for meta).
type CommitFn = Box<dyn FnMut(&[Job]) -> StoreResult<Vec<Vec<bool>>> + Send>;

/// One writer thread that drains every queued job into one group and commits it at once.
struct GroupWriter {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupWriter {
    fn start(name: &str, mut commit: CommitFn) -> StoreResult<GroupWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(j) => group.push(j),
                            Err(_) => break,
                        }
                    }
                    let result = commit(&group);
                    for (i, job) in group.into_iter().enumerate() {
                        match (job, &result) {
                            (Job::Docs(_, tx), Ok(outcomes)) => {
                                let _ = tx.send(Ok(outcomes[i].clone()));
                            }
                            (Job::Meta(_, _, tx), Ok(_)) => {
                                let _ = tx.send(Ok(()));
                            }
                            (Job::Docs(_, tx), Err(e)) => {
                                let _ = tx.send(Err(StoreError(e.0.clone())));
                            }
                            (Job::Meta(_, _, tx), Err(e)) => {
                                let _ = tx.send(Err(StoreError(e.0.clone())));
                            }
                        }
                    }
                }
            })
            .map_err(StoreError::of)?;
        Ok(GroupWriter { jobs: Mutex::new(Some(tx)), thread: Some(thread) })
    }

    fn submit(&self, job: Job) -> StoreResult<()> {
        match self.jobs.lock().unwrap().as_ref() {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError("writer thread stopped".into())),
            None => Err(StoreError("store closed".into())),
        }
    }

    async fn docs(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Docs(puts, tx))?;
        rx.await.map_err(|_| StoreError("writer thread stopped".into()))?
    }

    async fn meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Meta(name.to_string(), value, tx))?;
        rx.await.map_err(|_| StoreError("writer thread stopped".into()))?
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        self.jobs.lock().unwrap().take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Decides one put against the stored record; on success returns the digest change.
fn decide(put: &Put, stored: Option<&Record>) -> Option<(String, Option<Hash>, Hash)> {
    let r = &put.record;
    if let Some(s) = stored {
        check_same_version(s, r);
    }
    let stored_version = stored.map(|s| s.version).unwrap_or(Version::ZERO);
    if !condition_holds(put.expect, stored_version, r.version) {
        return None;
    }
    Some((r.key.clone(), stored.map(|s| s.hash), r.hash))
}

// ---------------------------------------------------------------------------------------------
// fjall behind the group-commit writer
// ---------------------------------------------------------------------------------------------

/// fjall 2.x: a keyspace with a `docs` and a `meta` partition; writes through [`GroupWriter`],
/// one batch per group, committed with `PersistMode::SyncAll` (one fsync of the journal).
struct FjallStore {
    writer: GroupWriter,
    docs: fjall::PartitionHandle,
    meta: fjall::PartitionHandle,
    digests: Arc<Mutex<Digests>>,
    _keyspace: fjall::Keyspace,
}

impl FjallStore {
    fn open(dir: &Path) -> StoreResult<FjallStore> {
        // The same 1 GiB cache redb opens with by default.
        let keyspace = fjall::Config::new(dir).cache_size(1 << 30).open().map_err(StoreError::of)?;
        let opts = fjall::PartitionCreateOptions::default;
        let docs = keyspace.open_partition("docs", opts()).map_err(StoreError::of)?;
        let meta = keyspace.open_partition("meta", opts()).map_err(StoreError::of)?;
        let mut digests = Digests::default();
        for kv in docs.iter() {
            let (k, v) = kv.map_err(StoreError::of)?;
            let key = std::str::from_utf8(&k).map_err(StoreError::of)?;
            digests.replace(key, None, &decode_head(&v)?.1);
        }
        let digests = Arc::new(Mutex::new(digests));
        let (ks, wdocs, wmeta, wdig) = (keyspace.clone(), docs.clone(), meta.clone(), digests.clone());
        let commit: CommitFn = Box::new(move |group: &[Job]| {
            let mut batch = ks.batch().durability(Some(fjall::PersistMode::SyncAll));
            // Puts earlier in the group are not in the tree yet: later puts must see them.
            let mut pending: HashMap<String, Record> = HashMap::new();
            let mut changes = Vec::new();
            let mut outcomes = Vec::with_capacity(group.len());
            for job in group {
                match job {
                    Job::Docs(puts, _) => {
                        let mut applied = Vec::with_capacity(puts.len());
                        for put in puts {
                            let key = put.record.key.as_str();
                            let stored = match pending.get(key) {
                                Some(r) => Some(r.clone()),
                                None => match wdocs.get(key).map_err(StoreError::of)? {
                                    Some(v) => Some(decode(key, &v)?),
                                    None => None,
                                },
                            };
                            match decide(put, stored.as_ref()) {
                                Some(change) => {
                                    batch.insert(&wdocs, key, encode(&put.record));
                                    pending.insert(key.to_string(), put.record.clone());
                                    changes.push(change);
                                    applied.push(true);
                                }
                                None => applied.push(false),
                            }
                        }
                        outcomes.push(applied);
                    }
                    Job::Meta(name, value, _) => {
                        batch.insert(&wmeta, name.as_str(), value.as_slice());
                        outcomes.push(Vec::new());
                    }
                }
            }
            batch.commit().map_err(StoreError::of)?;
            let mut d = wdig.lock().unwrap();
            for (k, old, new) in &changes {
                d.replace(k, old.as_ref(), new);
            }
            Ok(outcomes)
        });
        let writer = GroupWriter::start("fjall-writer", commit)?;
        Ok(FjallStore { writer, docs, meta, digests, _keyspace: keyspace })
    }
}

#[async_trait]
impl Store for FjallStore {
    fn engine(&self) -> &'static str {
        "fjall"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        match self.docs.get(key).map_err(StoreError::of)? {
            Some(v) => Ok(Some(decode(key, &v)?)),
            None => Ok(None),
        }
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        self.writer.docs(puts).await
    }

    async fn digests(&self) -> StoreResult<Digests> {
        Ok(self.digests.lock().unwrap().clone())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        let mut out = Vec::new();
        for kv in self.docs.iter() {
            let (k, v) = kv.map_err(StoreError::of)?;
            let key = std::str::from_utf8(&k).map_err(StoreError::of)?;
            if bucket_of(key) == bucket {
                let (version, hash) = decode_head(&v)?;
                out.push(KeyVersion { key: key.to_string(), version, hash });
            }
        }
        Ok(out)
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.docs.range::<String, _>((lower, Bound::Unbounded)).take(limit) {
            let (k, v) = kv.map_err(StoreError::of)?;
            let key = std::str::from_utf8(&k).map_err(StoreError::of)?;
            out.push(decode(key, &v)?);
        }
        Ok(out)
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.meta.get(name).map_err(StoreError::of)?.map(|v| v.to_vec()))
    }

    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        self.writer.meta(name, value).await
    }

    /// The benchmark's workload writes no side records.
    async fn prune_sides(&self, _now_ms: u64, _released_ms: u64) -> StoreResult<usize> {
        Ok(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------------------------

/// xorshift64*: cheap, seeded per task, no dependency.
struct Rng(u64);

impl Rng {
    /// Seeded through splitmix64, so nearby seeds give unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn uuid(&mut self) -> String {
        let hi = self.next() as u128;
        uuid::Uuid::from_u128((hi << 64) | self.next() as u128).to_string()
    }
}

/// An order-like document as the table layer stores it (a document and its recent request
/// ids), 200 to 400 bytes of JSON.
fn body(rng: &mut Rng) -> String {
    let items: Vec<serde_json::Value> =
        (0..1 + rng.below(4)).map(|_| serde_json::json!([rng.uuid(), 1 + rng.below(9)])).collect();
    let recent: Vec<String> = (0..1 + rng.below(3)).map(|_| rng.uuid()).collect();
    let doc = serde_json::json!({
        "doc": {"user_id": rng.uuid(), "paid": rng.below(2) == 1, "items": items, "total_cost": rng.below(100_000)},
        "recent": recent,
    });
    doc.to_string()
}

type OpenFn = Box<dyn Fn(&Path) -> StoreResult<DynStore>>;

fn opener(engine: &str) -> OpenFn {
    match engine {
        "redb" => Box::new(|dir: &Path| {
            std::fs::create_dir_all(dir).map_err(StoreError::of)?;
            let ms = env_or("ENGINES_REDB_SYNC_MS", SYNC_INTERVAL.as_millis() as u64);
            let policy = SyncPolicy { interval: Duration::from_millis(ms), ..SyncPolicy::default() };
            Ok(Arc::new(RedbStore::open_with(&dir.join("store.redb"), policy)?) as DynStore)
        }),
        "fjall" => Box::new(|dir: &Path| Ok(Arc::new(FjallStore::open(dir)?) as DynStore)),
        "log" => Box::new(|dir: &Path| Ok(Arc::new(LogStore::open(&dir.join("log"))?) as DynStore)),
        other => panic!("unknown engine '{other}' (redb, fjall, log)"),
    }
}

struct Config {
    bulk: usize,
    writes: usize,
    reads: usize,
    secs: f64,
    tasks: Vec<usize>,
    engines: Vec<String>,
    check: bool,
    kill_ms: u64,
    dir: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        Err(_) => default,
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Config {
    fn from_env() -> Config {
        Config {
            bulk: env_or("ENGINES_BULK", 100_000),
            writes: env_or("ENGINES_WRITES", 20_000),
            reads: env_or("ENGINES_READS", 200_000),
            secs: env_or("ENGINES_SECS", 10.0),
            tasks: list("ENGINES_TASKS", "1,16,64").iter().map(|s| s.parse().expect("ENGINES_TASKS")).collect(),
            engines: list("ENGINES_ONLY", "redb,fjall,log"),
            check: env_or("ENGINES_CHECK", 1u8) != 0,
            kill_ms: env_or("ENGINES_KILL_MS", 1000),
            dir: std::env::var_os("ENGINES_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir),
        }
    }
}

/// One measured phase.
struct Row {
    engine: String,
    phase: &'static str,
    tasks: usize,
    ops: usize,
    secs: f64,
    lat_us: Vec<u32>,
    /// Bytes the process sent to storage during the phase (`write_bytes` of /proc/self/io).
    disk_written: Option<u64>,
    /// CPU seconds the whole process used during the phase (all threads).
    cpu: Option<f64>,
}

impl Row {
    fn pct(&self, q: f64) -> String {
        if self.lat_us.is_empty() {
            return "-".into();
        }
        let i = ((self.lat_us.len() - 1) as f64 * q).round() as usize;
        format!("{:.3}", self.lat_us[i] as f64 / 1000.0)
    }

    fn print(&self) {
        let kb_per_op = match self.disk_written {
            Some(b) if self.ops > 0 => format!("{:.2}", b as f64 / 1024.0 / self.ops as f64),
            _ => "-".into(),
        };
        let cpu_us_per_op = match self.cpu {
            Some(c) if self.ops > 0 => format!("{:.1}", c * 1e6 / self.ops as f64),
            _ => "-".into(),
        };
        println!(
            "{:<6} {:<10} {:>5} {:>8} {:>7.2} {:>10.0} {:>9} {:>9} {:>9} {:>9}",
            self.engine,
            self.phase,
            self.tasks,
            self.ops,
            self.secs,
            self.ops as f64 / self.secs,
            self.pct(0.50),
            self.pct(0.99),
            kb_per_op,
            cpu_us_per_op,
        );
    }
}

/// Runs `tasks` concurrent tasks of `op` until `max` operations or `secs` have passed;
/// returns (ops, elapsed seconds, sorted latencies in µs).
async fn drive<F, Fut>(tasks: usize, max: usize, secs: f64, op: F) -> (usize, f64, Vec<u32>)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (op, issued) = (op.clone(), issued.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while issued.fetch_add(1, Ordering::Relaxed) < max && Instant::now() < deadline {
                let t0 = Instant::now();
                op(t, i).await;
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("bench task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len(), secs, all)
}

/// Bytes this process has caused to be written to storage so far (Linux), to compare write
/// amplification: it is far less noisy than the timings on a shared machine.
fn io_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok())
}

fn io_since(before: Option<u64>) -> Option<u64> {
    Some(io_written()?.saturating_sub(before?))
}

/// CPU seconds (user + system, all threads) this process has used so far (Linux; the
/// kernel's clock tick is 100 Hz, so phases shorter than ~1 s are coarse).
fn cpu_used() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn cpu_since(before: Option<f64>) -> Option<f64> {
    Some(cpu_used()? - before?)
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The conformance suite (and the reopen check) against `engine`, as its unit tests would.
async fn check(engine: &str, cfg: &Config) {
    let open = opener(engine);
    let dir = tempfile::tempdir_in(&cfg.dir).expect("temp dir");
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let d = dir.path().join(format!("c{}", n.fetch_add(1, Ordering::SeqCst)));
        std::future::ready(open(&d).expect("open"))
    })
    .await;
    let same = dir.path().join("reopen");
    conformance::run_reopen(|| std::future::ready(open(&same).expect("open"))).await;
}

struct Summary {
    engine: String,
    doc_bytes: f64,
    bulk_secs: f64,
    reopen_secs: f64,
    disk: u64,
}

async fn bench(engine: &str, dir: &Path, cfg: &Config, rows: &mut Vec<Row>) -> Summary {
    let open = opener(engine);
    let store = open(dir).expect("open");
    let mut rng = Rng::new(42);

    // 1. Bulk load, as batch_init does it: read the current versions, then one write call.
    let keys: Arc<Vec<String>> = Arc::new((0..cfg.bulk).map(|_| rng.uuid()).collect());
    let bodies: Vec<String> = (0..cfg.bulk).map(|_| body(&mut rng)).collect();
    let doc_bytes = bodies.iter().map(|b| b.len()).sum::<usize>() as f64 / cfg.bulk.max(1) as f64;
    let (t0, io0, cpu0) = (Instant::now(), io_written(), cpu_used());
    let current = store.get_many(&keys).await.expect("get_many");
    let puts: Vec<Put> = keys
        .iter()
        .zip(bodies)
        .zip(current)
        .map(|((k, b), cur)| {
            let old = cur.map(|r| r.version).unwrap_or(Version::ZERO);
            Put { expect: Expect::Exactly(old), record: Record::new(k.clone(), old.next(1), b) }
        })
        .collect();
    let applied = store.write(puts).await.expect("bulk write");
    assert!(applied.iter().all(|a| *a), "bulk load: a put was refused");
    let bulk_secs = t0.elapsed().as_secs_f64();
    rows.push(Row {
        engine: engine.into(),
        phase: "bulk load",
        tasks: 1,
        ops: cfg.bulk,
        secs: bulk_secs,
        lat_us: vec![],
        disk_written: io_since(io0),
        cpu: cpu_since(cpu0),
    });
    rows.last().unwrap().print();

    // 2. Conditional puts: read the current version, write the next one; each task has its
    // own keys (the table layer serializes writers of one key with a lock anyway).
    for &tasks in &cfg.tasks {
        assert!(cfg.bulk >= tasks, "ENGINES_BULK must be at least the task count");
        let (s, k, io0, cpu0) = (store.clone(), keys.clone(), io_written(), cpu_used());
        let (ops, secs, lat_us) = drive(tasks, cfg.writes, cfg.secs, move |t, i| {
            let (s, k) = (s.clone(), k.clone());
            async move {
                let mut rng = Rng::new(((t as u64) << 32) ^ i ^ 0xABCD);
                // Task t owns the keys whose index is t modulo the task count.
                let idx = t + tasks * rng.below((k.len() - t).div_ceil(tasks));
                let cur = s.get(&k[idx]).await.expect("get").expect("loaded key");
                let next = Record::new(k[idx].clone(), cur.version.next(1), body(&mut rng));
                let ok =
                    s.write(vec![Put { expect: Expect::Exactly(cur.version), record: next }]).await.expect("write");
                assert!(ok[0], "conditional put refused without a competing writer");
            }
        })
        .await;
        let (disk_written, cpu) = (io_since(io0), cpu_since(cpu0));
        rows.push(Row { engine: engine.into(), phase: "cond. put", tasks, ops, secs, lat_us, disk_written, cpu });
        rows.last().unwrap().print();
    }

    // 3. Point reads of random loaded keys.
    for &tasks in &cfg.tasks {
        let (s, k, io0, cpu0) = (store.clone(), keys.clone(), io_written(), cpu_used());
        let (ops, secs, lat_us) = drive(tasks, cfg.reads, cfg.secs, move |t, i| {
            let (s, k) = (s.clone(), k.clone());
            async move {
                let mut rng = Rng::new(((t as u64) << 40) ^ i ^ 0x1234);
                let r = s.get(&k[rng.below(k.len())]).await.expect("get");
                assert!(r.is_some(), "loaded key missing");
            }
        })
        .await;
        let (disk_written, cpu) = (io_since(io0), cpu_since(cpu0));
        rows.push(Row { engine: engine.into(), phase: "point get", tasks, ops, secs, lat_us, disk_written, cpu });
        rows.last().unwrap().print();
    }

    // 4. Reopen: recovery plus the digest scan a replica does at start.
    let root = store.digests().await.expect("digests").root();
    drop(store);
    let t0 = Instant::now();
    let store = open(dir).expect("reopen");
    let reopen_secs = t0.elapsed().as_secs_f64();
    assert_eq!(store.digests().await.expect("digests").root(), root, "digests differ after reopen");
    let disk = disk_bytes(dir);
    drop(store);
    Summary { engine: engine.into(), doc_bytes, bulk_secs, reopen_secs, disk }
}

/// Tasks of the killed child: enough to keep every group of the writer full.
const CHILD_TASKS: usize = 16;

/// The child of the crash test: opens `dir`, then writes conditional puts from
/// [`CHILD_TASKS`] tasks until it is killed, printing `key seq` for every acknowledged put.
async fn child(engine: &str, dir: &Path) {
    let store = opener(engine)(dir).expect("child: open");
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 10_000).await.expect("child: scan");
        match page.last() {
            Some(r) => after = Some(r.key.clone()),
            None => break,
        }
        keys.extend(page.into_iter().map(|r| r.key));
    }
    assert!(keys.len() >= CHILD_TASKS, "child: too few keys");
    let keys = Arc::new(keys);
    println!("ready");
    let mut handles = Vec::new();
    for t in 0..CHILD_TASKS {
        let (s, k) = (store.clone(), keys.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(t as u64 ^ 0xC0FFEE);
            loop {
                let idx = t + CHILD_TASKS * rng.below((k.len() - t).div_ceil(CHILD_TASKS));
                let cur = s.get(&k[idx]).await.expect("child: get").expect("child: key");
                let next = Record::new(k[idx].clone(), cur.version.next(1), body(&mut rng));
                let seq = next.version.seq;
                let ok = s.write(vec![Put { expect: Expect::Exactly(cur.version), record: next }]).await;
                if ok.expect("child: write")[0] {
                    // Printed only once the write is acknowledged, i.e. durable.
                    println!("{} {seq}", k[idx]);
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

/// What the crash test found.
struct Crash {
    /// Acknowledged writes the child printed before it died.
    acked: usize,
    /// Keys whose stored version is older than the last acknowledged one.
    lost: usize,
    recover_secs: f64,
    digests_ok: bool,
}

/// Kills (SIGKILL) a child that is writing to `dir` in the middle of its work, reopens the
/// store, and checks that every acknowledged write is there and the digests match a scan.
fn crash(rt: &tokio::runtime::Runtime, engine: &str, dir: &Path, kill_after: Duration) -> Crash {
    use std::io::BufRead;
    let exe = std::env::current_exe().expect("current exe");
    let mut proc = std::process::Command::new(exe)
        .env("ENGINES_CHILD", engine)
        .env("ENGINES_CHILD_DIR", dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the crash child");
    let mut lines = std::io::BufReader::new(proc.stdout.take().expect("child stdout")).lines();
    match lines.next() {
        Some(Ok(l)) if l == "ready" => {}
        other => panic!("crash child did not start: {other:?}"),
    }
    let reader = std::thread::spawn(move || {
        let (mut acked, mut total) = (HashMap::<String, u64>::new(), 0usize);
        for line in lines.map_while(Result::ok) {
            // The last line may be cut by the kill: keep only whole ones.
            if let Some((k, seq)) = line.split_once(' ').and_then(|(k, v)| Some((k, v.parse::<u64>().ok()?))) {
                let e = acked.entry(k.to_string()).or_default();
                *e = (*e).max(seq);
                total += 1;
            }
        }
        (acked, total)
    });
    std::thread::sleep(kill_after);
    proc.kill().expect("kill the crash child");
    proc.wait().expect("reap the crash child");
    let (acked, total) = reader.join().expect("reader");
    let (t0, open) = (Instant::now(), opener(engine));
    let store = open(dir).expect("open after the kill");
    let recover_secs = t0.elapsed().as_secs_f64();
    rt.block_on(async {
        let mut lost = 0;
        for (k, seq) in &acked {
            match store.get(k).await.expect("get") {
                Some(r) if r.version.seq >= *seq => {}
                _ => lost += 1,
            }
        }
        let digests_ok = store.digests().await.expect("digests") == conformance::digests_by_scan(&*store).await;
        Crash { acked: total, lost, recover_secs, digests_ok }
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{cores} cores, {cpu}")
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let (Ok(engine), Some(dir)) = (std::env::var("ENGINES_CHILD"), std::env::var_os("ENGINES_CHILD_DIR")) {
        rt.block_on(child(&engine, Path::new(&dir)));
        return;
    }
    let cfg = Config::from_env();
    println!("engines benchmark: {}; data in {}", machine(), cfg.dir.display());
    println!(
        "bulk {} docs; per task count: at most {} puts / {} gets / {} s; tasks {:?}",
        cfg.bulk, cfg.writes, cfg.reads, cfg.secs, cfg.tasks
    );
    if cfg.check {
        for e in &cfg.engines {
            let t0 = Instant::now();
            rt.block_on(check(e, &cfg));
            println!("conformance: {e} passes ({:.1} s)", t0.elapsed().as_secs_f64());
        }
    }
    println!();
    println!(
        "{:<6} {:<10} {:>5} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "engine", "phase", "tasks", "ops", "secs", "ops/s", "p50 ms", "p99 ms", "KB/op", "CPU us/op"
    );
    let mut rows = Vec::new();
    let mut sums = Vec::new();
    for e in &cfg.engines {
        let tmp = tempfile::tempdir_in(&cfg.dir).expect("temp dir");
        let dir = tmp.path().join(e);
        let sum = rt.block_on(bench(e, &dir, &cfg, &mut rows));
        let crashed = (cfg.kill_ms > 0).then(|| crash(&rt, e, &dir, Duration::from_millis(cfg.kill_ms)));
        sums.push((sum, crashed));
    }
    println!();
    println!(
        "{:<6} {:>9} {:>8} {:>9} {:>8} | {:>11} {:>6} {:>10} {:>8}",
        "engine", "doc bytes", "bulk s", "reopen s", "disk MB", "kill: acked", "lost", "recover s", "digests"
    );
    for (s, c) in &sums {
        let killed = match c {
            Some(c) => format!(
                "{:>11} {:>6} {:>10.3} {:>8}",
                c.acked,
                c.lost,
                c.recover_secs,
                if c.digests_ok { "ok" } else { "DIFFER" }
            ),
            None => "(ENGINES_KILL_MS=0: no crash test)".into(),
        };
        println!(
            "{:<6} {:>9.0} {:>8.2} {:>9.3} {:>8.1} | {killed}",
            s.engine,
            s.doc_bytes,
            s.bulk_secs,
            s.reopen_secs,
            s.disk as f64 / (1 << 20) as f64
        );
    }
}
