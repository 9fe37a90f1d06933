//! Storage: one trait, several engines, one conformance suite.
//!
//! A store keeps [`Record`]s (key, version, hash, body) and the bucket [`Digests`] of what it
//! holds, updated in the same write as the record. Every write is a conditional put
//! ([`Put`]), atomic per record, and durable when `write` returns in the sense of
//! docs/design.md §7.3: it survives the kill of any process, while a power loss of the whole machine
//! may lose the last short sync interval. That is what the replicated layer needs for "the
//! primary applies a write as one atomic conditional update" and "replicas apply a state only
//! if its version is higher".
//!
//! Engines: [`mem::MemStore`] (tests), [`log_engine::LogStore`] (embedded, durable, the
//! default for local runs), [`mongo::MongoStore`] (MongoDB, one database per replica: the
//! container deployments, and `cluster up --engine mongo`). Every engine passes
//! [`conformance`]. `redb_engine` (the embedded engine before the log engine) is only a
//! benchmark candidate now, behind the feature `redb-engine`.

pub mod conformance;
pub mod frame;
pub mod log_engine;
pub mod mem;
pub mod mongo;
/// Not a replica engine since 2026-12-07: kept as a candidate of the engines benchmark
/// (`cargo bench -p store --features redb-engine --bench engines`), compiled only with that
/// feature.
#[cfg(feature = "redb-engine")]
pub mod redb_engine;

use async_trait::async_trait;
use model::digest::{Digests, Hash};
use model::version::Version;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use model::record::Record;

/// The condition a put is applied under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Apply only if the stored version equals this one (`Version::ZERO`: the key is absent).
    Exactly(Version),
    /// Apply only if the stored version is lower than the record's (a replicated state).
    Older,
    /// Apply only if the stored version equals this one, and only together with the put
    /// before it in the same call: a side record written with its document
    /// ([`model::side`]). A put and the `Beside` puts that follow it form a group that
    /// applies whole or not at all.
    Beside(Version),
}

/// The groups of a call's puts, given their conditions in order ([`Expect::Beside`]): each
/// put not `Beside` starts one, and the `Beside` puts after it join it. A leading `Beside`
/// put is a group of its own.
pub fn groups(expects: impl IntoIterator<Item = Expect>) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, e) in expects.into_iter().enumerate() {
        match (e, out.last_mut()) {
            (Expect::Beside(_), Some(g)) => g.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The groups ([`groups`]) of several storage calls written together, as an engine that
/// merges calls (MongoDB's writer) sees their puts: one list, the calls' puts one after the
/// other. A call's first put starts a group whatever its condition, so no call ever joins the
/// group of the call before it, and a group never spans two calls.
pub fn groups_of_calls<'a>(calls: impl IntoIterator<Item = &'a [Put]>) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for puts in calls {
        out.extend(groups(puts.iter().map(|p| p.expect)).into_iter().map(|g| g.start + start..g.end + start));
        start += puts.len();
    }
    out
}

/// Cuts `groups` (consecutive, as [`groups_of_calls`] gives them) into transactions of at most
/// `max` puts each, never inside a group: a transaction ends before the group that would take
/// it past `max` (a group larger than `max` is a transaction of its own). Each transaction is
/// the range of groups it holds.
pub fn transactions(groups: &[std::ops::Range<usize>], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut first = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > first && g.end - groups[first].start > max {
            out.push(first..i);
            first = i;
        }
    }
    if first < groups.len() {
        out.push(first..groups.len());
    }
    out
}

/// A conditional put.
#[derive(Clone, Debug)]
pub struct Put {
    /// The condition.
    pub expect: Expect,
    /// The record to store.
    pub record: Record,
}

/// A key's version and hash, without its body (what anti-entropy compares).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    /// The key.
    pub key: String,
    /// Its stored version.
    pub version: Version,
    /// Its stored hash.
    pub hash: Hash,
}

/// A storage failure: the node's own failure (a 500, and a reason to evict it).
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    /// Wraps any displayable error.
    pub fn of(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The storage trait every engine implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The engine's name, for logs and status.
    fn engine(&self) -> &'static str;

    /// The record stored under `key`.
    async fn get(&self, key: &str) -> StoreResult<Option<Record>>;

    /// The records stored under `keys`, in the same order.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Applies each put whose condition holds, each atomically with its digest update, and
    /// every group of puts ([`groups`], [`Expect::Beside`]) whole or not at all; returns per
    /// put whether it was applied. Durable when it returns (survives the kill of
    /// any process; see the module docs): engines group-commit concurrent calls, and may sync
    /// to the disk on a short interval rather than per call.
    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>>;

    /// The bucket digests (kept up to date by every write; never scans data).
    async fn digests(&self) -> StoreResult<Digests>;

    /// Keys, versions and hashes of one bucket.
    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>>;

    /// Keys, versions and hashes of several buckets (anti-entropy lists the divergent ones).
    /// Engines that cannot find a bucket's keys without a scan override this to scan once.
    async fn buckets(&self, buckets: &[u8]) -> StoreResult<Vec<KeyVersion>> {
        let mut out = Vec::new();
        for b in buckets {
            out.extend(self.bucket(*b).await?);
        }
        Ok(out)
    }

    /// Up to `limit` records with keys greater than `after`, in key order (dumps, scans).
    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>>;

    /// A small named value outside the documents (membership and Paxos state); durable.
    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Stores a named value; durable when it returns. An engine that syncs documents on an
    /// interval syncs a meta write before answering it (Paxos promises and accepts: rare).
    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()>;

    /// Drops the side records ([`model::side`]) that may go at `now_ms` with the held ones
    /// released before `released_ms` ([`model::side::prunable`]); returns how many. Side
    /// records are stored by `write` like documents, but never counted in the digests nor
    /// listed by `bucket`/`buckets`. Dropping need not be durable: a side record a restart
    /// brings back may still go, and is dropped again.
    async fn prune_sides(&self, now_ms: u64, released_ms: u64) -> StoreResult<usize>;

    /// Why the store refuses every write from now on, if it does (the log engine after a
    /// failed sync, or an append it could not cut back): the process must stop, so that a
    /// restart opens the store again from what is on disk. `None` for an engine whose
    /// failures pass (a full disk, a server restarting).
    fn stopped(&self) -> Option<String> {
        None
    }
}

/// A shared handle to any engine.
pub type DynStore = Arc<dyn Store>;

/// Whether a put's condition holds against the currently stored version.
pub fn condition_holds(expect: Expect, stored: Version, new: Version) -> bool {
    match expect {
        Expect::Exactly(v) | Expect::Beside(v) => stored == v,
        Expect::Older => stored < new,
    }
}

/// Logs loudly when a replicated state arrives with the version of a different stored state:
/// two states under one version means two primaries wrote in one epoch, which is a bug.
pub fn check_same_version(stored: &Record, incoming: &Record) {
    check_same_state(&stored.key, stored.version, &stored.hash, incoming);
}

/// [`check_same_version`] for a stored state known by its version and hash.
pub fn check_same_state(key: &str, version: Version, hash: &Hash, incoming: &Record) {
    if version == incoming.version && *hash != incoming.hash {
        log::error!(
            "BUG: key {key} has two different states at version {version} (stored {hash:?}, incoming {:?})",
            incoming.hash
        );
    }
}

/// The folder in a replica's data folder that holds the `log` engine's data.
const LOG_DIR: &str = "log";

/// Where an embedded engine keeps its data inside a replica's data folder ([`open_engine`]
/// creates it on the first start): `log` the folder `log`. `memory` and `mongo` keep nothing
/// there (None).
pub fn data_path(engine: &str, data_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    match engine {
        "log" => Some(data_dir.join(LOG_DIR)),
        _ => None,
    }
}

/// Opens the engine a replica's settings name: `log` (the folder `log` in `data_dir`, created
/// with its parents if missing), `memory`, or `mongo` (the database `database` on the server at `mongo_uri`; `data_dir` is
/// not used).
pub async fn open_engine(
    engine: &str,
    data_dir: &std::path::Path,
    mongo_uri: &str,
    database: &str,
) -> StoreResult<DynStore> {
    match engine {
        "memory" => Ok(Arc::new(mem::MemStore::new())),
        "log" => Ok(Arc::new(log_engine::LogStore::open(&data_dir.join(LOG_DIR))?)),
        "mongo" if mongo_uri.is_empty() => Err(StoreError("engine 'mongo' needs a MongoDB URI".into())),
        "mongo" => mongo::MongoStore::open_as_owner(mongo_uri, database).await,
        other => Err(StoreError(format!("unknown engine '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let v = |e, s| Version { epoch: e, seq: s };
        let cases = [
            (Expect::Exactly(Version::ZERO), Version::ZERO, v(1, 1), true),
            (Expect::Exactly(Version::ZERO), v(1, 1), v(1, 2), false),
            (Expect::Exactly(v(1, 1)), v(1, 1), v(1, 2), true),
            (Expect::Older, v(1, 1), v(1, 2), true),
            (Expect::Older, v(1, 2), v(1, 2), false),
            (Expect::Older, v(2, 1), v(1, 9), false),
            (Expect::Older, Version::ZERO, v(1, 1), true),
        ];
        for (expect, stored, new, want) in cases {
            assert_eq!(condition_holds(expect, stored, new), want, "{expect:?} {stored} {new}");
        }
    }

    #[test]
    fn a_put_and_the_beside_puts_after_it_form_a_group() {
        let v = Version::ZERO;
        let (x, o, b) = (Expect::Exactly(v), Expect::Older, Expect::Beside(v));
        let cases: &[(&[Expect], &[std::ops::Range<usize>])] = &[
            (&[], &[]),
            (&[x], &[0..1, 1..1][..1]),
            (&[x, b, b], &[0..3, 3..3][..1]),
            (&[x, b, o, x, b], &[0..2, 2..3, 3..5]),
            (&[b, x], &[0..1, 1..2]),
        ];
        for (expects, want) in cases {
            assert_eq!(groups(expects.iter().copied()), want.to_vec(), "{expects:?}");
        }
    }

    /// A call merged with the call before it (MongoDB's writer) starts a group of its own
    /// even when its first put is `Beside`: it neither joins nor is joined by another call.
    #[test]
    fn a_call_written_with_others_joins_no_group_of_theirs() {
        let (x, b) = (Expect::Exactly(Version::ZERO), Expect::Beside(Version::ZERO));
        let put = |expect| Put { expect, record: Record::new("k".into(), Version::ZERO, String::new()) };
        // The calls' conditions, and the groups as (start, end) pairs.
        type Case = (Vec<Vec<Expect>>, Vec<(usize, usize)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![vec![x, b], vec![b, b]], vec![(0, 2), (2, 4)]),
            (vec![vec![b], vec![b], vec![x, b]], vec![(0, 1), (1, 2), (2, 4)]),
            (vec![vec![], vec![x], vec![]], vec![(0, 1)]),
        ];
        for (calls, want) in cases {
            let puts: Vec<Vec<Put>> = calls.iter().map(|c| c.iter().copied().map(put).collect()).collect();
            let got: Vec<(usize, usize)> =
                groups_of_calls(puts.iter().map(Vec::as_slice)).into_iter().map(|g| (g.start, g.end)).collect();
            assert_eq!(got, want, "{calls:?}");
        }
    }

    /// Transactions of a merged write hold whole groups, at most `max` puts unless one group
    /// alone is larger.
    #[test]
    fn a_transaction_never_cuts_a_group() {
        // Groups as (start, end) pairs, the limit, and the transactions as ranges of groups.
        type Case = (Vec<(usize, usize)>, usize, Vec<(usize, usize)>);
        let cases: Vec<Case> = vec![
            (vec![], 3, vec![]),
            (vec![(0, 1), (1, 2), (2, 3)], 3, vec![(0, 3)]),
            (vec![(0, 1), (1, 2), (2, 3), (3, 4)], 3, vec![(0, 3), (3, 4)]),
            // A group of two that would end at put 4: the first transaction ends before it.
            (vec![(0, 2), (2, 4), (4, 5)], 3, vec![(0, 1), (1, 3)]),
            // A group larger than the limit: alone.
            (vec![(0, 1), (1, 6), (6, 7)], 3, vec![(0, 1), (1, 2), (2, 3)]),
        ];
        for (groups, max, want) in cases {
            let ranges: Vec<std::ops::Range<usize>> = groups.iter().map(|&(a, b)| a..b).collect();
            let got: Vec<(usize, usize)> = transactions(&ranges, max).into_iter().map(|t| (t.start, t.end)).collect();
            assert_eq!(got, want, "{groups:?} max {max}");
        }
    }

    #[tokio::test]
    async fn the_embedded_engine_creates_its_data_path_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = data_path("log", dir.path()).expect("the embedded engine keeps data in the folder");
        assert!(!path.exists());
        let store = open_engine("log", dir.path(), "", "").await.unwrap();
        assert!(path.exists(), "{} after open", path.display());
        drop(store);
        assert!(open_engine("redb", dir.path(), "", "").await.is_err(), "redb left the product");
        assert_eq!(data_path("memory", std::path::Path::new("/x")), None);
        assert_eq!(data_path("mongo", std::path::Path::new("/x")), None);
    }
}
