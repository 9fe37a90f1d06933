//! The in-memory engine: [`Docs`] behind a mutex. For tests; not durable. [`Docs`] is also
//! what the log engine keeps in memory (`super::log_engine`): that engine is this one plus a
//! log on disk.

use super::{check_same_state, condition_holds, KeyVersion, Put, Record, Store, StoreResult};
use async_trait::async_trait;
use model::digest::{bucket_of, Digests, Hash};
use model::version::Version;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A stored record and the bucket of its key (so bucket listings hash nothing).
struct Entry {
    /// Shared, so that a compaction takes the records under the lock and encodes them after.
    record: Arc<Record>,
    bucket: u8,
    /// A side record's expiry (`model::side`): not in the digests, dropped once expired.
    expires: Option<u64>,
}

/// The expiry of a side record stored under `key` (None for a document). A side body that
/// does not parse never expires.
fn expiry_of(record: &Record) -> Option<u64> {
    model::side::is_side(&record.key).then(|| model::side::parse(&record.body).map(|(exp, _)| exp).unwrap_or(u64::MAX))
}

/// Documents, their bucket digests and the meta values, all in memory. Documents are found
/// by hash (a write looks its key up twice, and a sorted map of 100,000 keys cost every
/// lookup about 17 key comparisons, each a likely cache miss); the keys are also kept in
/// order, for scans. Side records (`model::side`) are kept like documents but left out of
/// the digests and bucket listings, and indexed by expiry; no document is ever removed.
#[derive(Default)]
pub(super) struct Docs {
    map: HashMap<String, Entry>,
    order: BTreeSet<String>,
    digests: Digests,
    meta: HashMap<String, Vec<u8>>,
    /// Side records by expiry.
    expiring: BTreeSet<(u64, String)>,
}

impl Docs {
    /// Which of `puts` apply, in order, without changing anything: each put is checked
    /// against the stored version, or against the put of the same key before it that
    /// applied.
    pub(super) fn decide(&self, puts: &[Put]) -> Vec<bool> {
        let mut earlier: HashMap<&str, (Version, Hash)> = HashMap::new();
        let mut out = vec![false; puts.len()];
        for group in super::groups(puts.iter().map(|p| p.expect)) {
            let holds: Vec<bool> = puts[group.clone()]
                .iter()
                .map(|put| {
                    let r = &put.record;
                    let stored = earlier
                        .get(r.key.as_str())
                        .copied()
                        .or_else(|| self.map.get(&r.key).map(|e| (e.record.version, e.record.hash)));
                    if let Some((version, hash)) = &stored {
                        check_same_state(&r.key, *version, hash, r);
                    }
                    condition_holds(put.expect, stored.map(|s| s.0).unwrap_or(Version::ZERO), r.version)
                })
                .collect();
            if holds.iter().all(|h| *h) {
                for i in group {
                    earlier.insert(&puts[i].record.key, (puts[i].record.version, puts[i].record.hash));
                    out[i] = true;
                }
            }
        }
        out
    }

    /// Stores a record (decided to apply, or replayed) and counts a document in the digests
    /// (a side record in the expiry index instead).
    pub(super) fn store(&mut self, record: Record) {
        let expires = expiry_of(&record);
        if let Some(e) = self.map.get_mut(&record.key) {
            match (e.expires, expires) {
                (None, None) => self.digests.replace_in(e.bucket, Some(&e.record.hash), &record.hash),
                (Some(old), Some(new)) => {
                    self.expiring.remove(&(old, record.key.clone()));
                    self.expiring.insert((new, record.key.clone()));
                    e.expires = Some(new);
                }
                // A key is a side record's or a document's by its form (model::side).
                _ => unreachable!("a key changed between document and side record"),
            }
            e.record = Arc::new(record);
            return;
        }
        let bucket = bucket_of(&record.key);
        match expires {
            None => self.digests.replace_in(bucket, None, &record.hash),
            Some(exp) => {
                self.expiring.insert((exp, record.key.clone()));
            }
        }
        self.order.insert(record.key.clone());
        self.map.insert(record.key.clone(), Entry { record: Arc::new(record), bucket, expires });
    }

    /// Drops the side records that may go at `now_ms` with the held ones released before
    /// `released_ms` ([`model::side::prunable`]); how many.
    pub(super) fn prune_sides(&mut self, now_ms: u64, released_ms: u64) -> usize {
        use model::side::HELD;
        let bound = |exp: u64| (exp, String::new());
        let timed = ..bound(now_ms.min(HELD - 1) + 1);
        let held = bound(HELD)..bound(HELD + released_ms.min(HELD - 1));
        let gone: Vec<(u64, String)> = self.expiring.range(timed).chain(self.expiring.range(held)).cloned().collect();
        for entry in &gone {
            self.expiring.remove(entry);
            self.map.remove(&entry.1);
            self.order.remove(&entry.1);
        }
        gone.len()
    }

    pub(super) fn get(&self, key: &str) -> Option<Record> {
        self.map.get(key).map(|e| Record::clone(&e.record))
    }

    pub(super) fn digests(&self) -> Digests {
        self.digests.clone()
    }

    /// Keys, versions and hashes of the documents in `buckets`, in key order.
    pub(super) fn buckets(&self, buckets: &[u8]) -> Vec<KeyVersion> {
        let mut wanted = [false; model::digest::BUCKETS];
        for b in buckets {
            wanted[*b as usize] = true;
        }
        let mut out: Vec<KeyVersion> = self
            .map
            .values()
            .filter(|e| wanted[e.bucket as usize] && e.expires.is_none())
            .map(|e| KeyVersion { key: e.record.key.clone(), version: e.record.version, hash: e.record.hash })
            .collect();
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Up to `limit` keys greater than `after`, in order.
    fn keys_after<'a>(&'a self, after: Option<&str>, limit: usize) -> impl Iterator<Item = &'a String> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.order.range::<str, _>((lower, Bound::Unbounded)).take(limit)
    }

    /// Up to `limit` records with keys greater than `after`, in key order.
    pub(super) fn scan(&self, after: Option<&str>, limit: usize) -> Vec<Record> {
        self.keys_after(after, limit).map(|k| Record::clone(&self.map[k].record)).collect()
    }

    /// The records of the (at most) `count` keys after `after`, in key order, leaving out
    /// side records expired at `now_ms`; and the last key looked at, if any key may be left.
    pub(super) fn records_after(
        &self,
        after: Option<&str>,
        count: usize,
        now_ms: u64,
    ) -> (Vec<Arc<Record>>, Option<String>) {
        let keys: Vec<&String> = self.keys_after(after, count).collect();
        let records = keys
            .iter()
            .map(|k| &self.map[*k])
            .filter(|e| e.expires.is_none_or(|at| at > now_ms))
            .map(|e| e.record.clone())
            .collect();
        let next = if keys.len() == count { keys.last().map(|k| k.to_string()) } else { None };
        (records, next)
    }

    /// Every meta value, by name in order.
    pub(super) fn metas(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_unstable();
        out
    }

    pub(super) fn meta(&self, name: &str) -> Option<Vec<u8>> {
        self.meta.get(name).cloned()
    }

    pub(super) fn set_meta(&mut self, name: String, value: Vec<u8>) {
        self.meta.insert(name, value);
    }
}

/// In-memory store.
#[derive(Default)]
pub struct MemStore {
    docs: Mutex<Docs>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

#[async_trait]
impl Store for MemStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Record>> {
        Ok(self.docs.lock().unwrap().get(key))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Record>>> {
        let docs = self.docs.lock().unwrap();
        Ok(keys.iter().map(|k| docs.get(k)).collect())
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let mut docs = self.docs.lock().unwrap();
        let applied = docs.decide(&puts);
        for (put, applies) in puts.into_iter().zip(&applied) {
            if *applies {
                docs.store(put.record);
            }
        }
        Ok(applied)
    }

    async fn digests(&self) -> StoreResult<Digests> {
        Ok(self.docs.lock().unwrap().digests())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        Ok(self.docs.lock().unwrap().buckets(&[bucket]))
    }

    async fn buckets(&self, buckets: &[u8]) -> StoreResult<Vec<KeyVersion>> {
        Ok(self.docs.lock().unwrap().buckets(buckets))
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        Ok(self.docs.lock().unwrap().scan(after, limit))
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.docs.lock().unwrap().meta(name))
    }

    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        self.docs.lock().unwrap().set_meta(name.to_string(), value);
        Ok(())
    }

    async fn prune_sides(&self, now_ms: u64, released_ms: u64) -> StoreResult<usize> {
        Ok(self.docs.lock().unwrap().prune_sides(now_ms, released_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::conformance::run_all(|| async { std::sync::Arc::new(MemStore::new()) as crate::DynStore }).await;
    }

    fn put(expect: super::super::Expect, key: &str, seq: u64, body: &str) -> Put {
        Put { expect, record: Record::new(key.into(), Version { epoch: 1, seq }, body.into()) }
    }

    /// A compaction's chunks: `count` keys each, the cursor going on after the last key looked
    /// at (an expired side record, left out, included), to the end.
    #[test]
    fn a_compaction_takes_every_live_record_once_in_chunks() {
        let mut docs = Docs::default();
        let rec = |key: String, body: String| Record::new(key, Version { epoch: 1, seq: 1 }, body);
        docs.store(rec("a".into(), "doc a".into()));
        docs.store(rec(model::side::key("a", "t:1"), model::side::body(u64::MAX, "kept")));
        docs.store(rec(model::side::key("a", "t:2"), model::side::body(1_000, "expired")));
        docs.store(rec("b".into(), "doc b".into()));
        docs.store(rec("c".into(), "doc c".into()));
        let (t1, t2) = (model::side::key("a", "t:1"), model::side::key("a", "t:2"));
        let keys = |(records, next): (Vec<Arc<Record>>, Option<String>)| {
            (records.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), next)
        };
        assert_eq!(keys(docs.records_after(None, 2, 2_000)), (vec!["a".to_string(), t1.clone()], Some(t1.clone())));
        assert_eq!(keys(docs.records_after(Some(&t1), 2, 2_000)), (vec!["b".to_string()], Some("b".to_string())));
        assert_eq!(keys(docs.records_after(Some("b"), 2, 2_000)), (vec!["c".to_string()], None));
        // A cursor on a key gone since (pruned) goes on after it.
        assert_eq!(
            keys(docs.records_after(Some(&t2), 2, 2_000)),
            (vec!["b".to_string(), "c".to_string()], Some("c".to_string()))
        );
        assert_eq!(keys(docs.records_after(Some("c"), 2, 2_000)), (vec![], None));
        // Before its expiry, the expired record too.
        assert_eq!(docs.records_after(None, 100, 999).0.len(), 5);
    }

    #[test]
    fn a_put_is_decided_against_the_earlier_put_of_its_key() {
        use super::super::Expect::{Exactly, Older};
        let mut docs = Docs::default();
        docs.store(put(Older, "a", 1, "one").record);
        let v = |seq| Version { epoch: 1, seq };
        let puts = [
            put(Exactly(v(1)), "a", 2, "two"),
            // Sees "a" at 2 (the put before), not the stored 1.
            put(Exactly(v(1)), "a", 3, "no"),
            put(Exactly(v(2)), "a", 3, "three"),
            put(Older, "b", 1, "b"),
            put(Older, "b", 1, "b again"),
        ];
        assert_eq!(docs.decide(&puts), vec![true, false, true, true, false]);
        // Deciding changed nothing.
        assert_eq!(docs.get("a").unwrap().body, "one");
        assert_eq!(docs.get("b"), None);
    }
}
