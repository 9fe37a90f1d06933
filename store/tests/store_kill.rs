//! docs/design.md §7.3: "an acknowledged write survives the kill of any process". The embedded
//! engines acknowledge a write once it is in a log file, without a sync: the log engine
//! (`log`) syncs its segments on an interval and compacts them in the background; the redb
//! engine (a benchmark candidate only, with the feature `redb-engine`) keeps the write in an
//! in-memory overlay and writes redb (durably) only on an interval. These tests kill a real writer with SIGKILL and check that every acknowledged
//! write is there after a reopen.
//!
//! The test binary runs itself as the child: `child_writer` does nothing unless
//! `STORE_KILL_CHILD_DIR` is set.

use model::Version;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::conformance::digests_by_scan;
use store::log_engine::{LogPolicy, LogStore};
#[cfg(feature = "redb-engine")]
use store::redb_engine::{log_path, RedbStore, SyncPolicy};
use store::{DynStore, Expect, Put, Record};

const DIR_VAR: &str = "STORE_KILL_CHILD_DIR";
const MODE_VAR: &str = "STORE_KILL_CHILD_MODE";
const ENGINE_VAR: &str = "STORE_KILL_CHILD_ENGINE";
/// Tasks writing in the child.
const TASKS: usize = 8;
/// Writes per task in the `acked` mode.
const EACH: u64 = 40;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Opens `engine` (`log` or `redb`) in `dir`. Not `busy`: nothing is synced on an interval
/// (an hour), so only what a kill leaves in the page cache can bring a write back. `busy`:
/// the default sync interval; the log engine with small segments, so that it rotates and
/// compacts while it is killed.
fn open(engine: &str, dir: &Path, busy: bool) -> DynStore {
    let hour = Duration::from_secs(3600);
    match engine {
        "log" => {
            let policy = if busy {
                LogPolicy { segment_limit: 64 << 10, ..LogPolicy::default() }
            } else {
                LogPolicy { interval: hour, ..LogPolicy::default() }
            };
            Arc::new(LogStore::open_with(&dir.join("log"), policy).unwrap())
        }
        #[cfg(feature = "redb-engine")]
        "redb" => {
            let policy =
                if busy { SyncPolicy::default() } else { SyncPolicy { interval: hour, ..SyncPolicy::default() } };
            Arc::new(RedbStore::open_with(&dir.join("store.redb"), policy).unwrap())
        }
        other => panic!("no engine '{other}' in this build"),
    }
}

/// The child: opens the store and writes from [`TASKS`] tasks, printing `acked key seq`
/// after each write returned. Mode `acked`: [`EACH`] writes per task, then `done` and a wait
/// for the kill. Mode `busy`: writing until killed. See [`open`] for the sync policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else { return };
    let busy = std::env::var(MODE_VAR).as_deref() == Ok("busy");
    let engine = std::env::var(ENGINE_VAR).unwrap();
    let store = open(&engine, Path::new(&dir), busy);
    say("ready");
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while busy || n < EACH {
                // Each task creates a key and then updates it twice, by compare-and-set.
                let key = format!("t{t}-{}", n / 3);
                let (expect, seq) = match n % 3 {
                    0 => (Version::ZERO, 1),
                    s => (Version { epoch: 1, seq: s }, s + 1),
                };
                let r = Record::new(key.clone(), Version { epoch: 1, seq }, format!("{{\"n\":{n}}}"));
                let ok = s.write(vec![Put { expect: Expect::Exactly(expect), record: r }]).await.unwrap();
                assert_eq!(ok, vec![true]);
                say(&format!("acked {key} {seq}"));
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    say("done");
    // Killed long before; bounded so that a parent that fails cannot leave it behind.
    std::thread::sleep(Duration::from_secs(120));
}

/// Runs the child on `dir`, kills it with SIGKILL once `until` says so, and returns the
/// highest acknowledged seq per key.
fn run_and_kill(engine: &str, dir: &Path, mode: &str, until: impl Fn(&str, Instant) -> bool) -> HashMap<String, u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(MODE_VAR, mode)
        .env(ENGINE_VAR, engine)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = HashMap::new();
    let mut started = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints "test child_writer ... " in front of the child's first line.
        if line.ends_with("ready") {
            started = Some(Instant::now());
        }
        if let Some(rest) = line.strip_prefix("acked ") {
            let (k, seq) = rest.split_once(' ').unwrap();
            let e = acked.entry(k.to_string()).or_insert(0);
            *e = seq.parse::<u64>().unwrap().max(*e);
        }
        if let Some(t0) = started {
            if until(line.trim_start_matches("test child_writer ... "), t0) {
                break;
            }
        }
    }
    // std's Child::kill is SIGKILL on unix: no destructor, no final commit.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die by the kill");
    acked
}

/// Reopens the store and counts the acknowledged writes that are missing.
async fn missing_after_reopen(engine: &str, dir: &Path, acked: &HashMap<String, u64>) -> usize {
    let store = open(engine, dir, true);
    let mut missing = 0;
    for (k, seq) in acked {
        match store.get(k).await.unwrap() {
            Some(r) if r.version.seq >= *seq => assert!(r.hash_ok()),
            _ => missing += 1,
        }
    }
    assert!(store.digests().await.unwrap() == digests_by_scan(&*store).await, "digests differ from a scan");
    missing
}

/// Runs `engine`'s child in `mode` and kills it: in `acked` mode once it has written
/// everything (every write must have been acknowledged), in `busy` mode in the middle of its
/// work. `before_reopen` looks at the files the kill left; then every acknowledged write must
/// be there after a reopen.
async fn acknowledged_writes_survive(engine: &str, mode: &str, before_reopen: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let acked = if mode == "acked" {
        let acked = run_and_kill(engine, dir.path(), mode, |line, _| line == "done");
        assert_eq!(acked.len() as u64, (TASKS as u64) * EACH.div_ceil(3));
        acked
    } else {
        let acked = run_and_kill(engine, dir.path(), mode, |_, t0| t0.elapsed() > Duration::from_millis(700));
        assert!(!acked.is_empty());
        acked
    };
    before_reopen(dir.path());
    let missing = missing_after_reopen(engine, dir.path(), &acked).await;
    assert_eq!(missing, 0, "{missing} of {} acknowledged keys lost or older after kill -9", acked.len());
}

/// Every write is acknowledged before the kill and none has been synced to redb's file: only
/// the log brings them back.
#[cfg(feature = "redb-engine")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive("redb", "acked", |dir| {
        let log = std::fs::metadata(log_path(&dir.join("store.redb"))).unwrap().len();
        assert!(log > 0, "the acknowledged writes are in the log, waiting for a durable commit");
    })
    .await;
}

/// The same under the default sync policy, killed in the middle of its work.
#[cfg(feature = "redb-engine")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_acknowledged_writes_survive_kill_9_mid_work() {
    acknowledged_writes_survive("redb", "busy", |_| {}).await;
}

/// The log engine, with nothing synced before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive("log", "acked", |_| {}).await;
}

/// The log engine killed in the middle of its work, with segments small enough that it
/// rotates and compacts all along (the kill may cut a compaction short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_acknowledged_writes_survive_kill_9_while_compacting() {
    acknowledged_writes_survive("log", "busy", |dir| {
        let snapshots = std::fs::read_dir(dir.join("log"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snapshot-"))
            .count();
        assert!(snapshots > 0, "the child compacted before it was killed");
    })
    .await;
}
