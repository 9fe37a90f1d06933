//! The in-memory engine: a sorted map behind a mutex. For tests; not durable.

use super::{check_same_version, condition_holds, KeyVersion, Put, Record, Store, StoreResult};
use crate::digest::{bucket_of, Digests};
use crate::version::Version;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    docs: BTreeMap<String, Record>,
    digests: Digests,
    meta: HashMap<String, Vec<u8>>,
}

/// In-memory store.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
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
        Ok(self.inner.lock().unwrap().docs.get(key).cloned())
    }

    async fn write(&self, puts: Vec<Put>) -> StoreResult<Vec<bool>> {
        let mut inner = self.inner.lock().unwrap();
        let inner = &mut *inner;
        let mut applied = Vec::with_capacity(puts.len());
        for put in puts {
            let stored = inner.docs.get(&put.record.key);
            let stored_version = stored.map(|r| r.version).unwrap_or(Version::ZERO);
            if let Some(s) = stored {
                check_same_version(s, &put.record);
            }
            if !condition_holds(put.expect, stored_version, put.record.version) {
                applied.push(false);
                continue;
            }
            let old_hash = stored.map(|r| r.hash);
            inner.digests.replace(&put.record.key, old_hash.as_ref(), &put.record.hash);
            inner.docs.insert(put.record.key.clone(), put.record);
            applied.push(true);
        }
        Ok(applied)
    }

    async fn digests(&self) -> StoreResult<Digests> {
        Ok(self.inner.lock().unwrap().digests.clone())
    }

    async fn bucket(&self, bucket: u8) -> StoreResult<Vec<KeyVersion>> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .docs
            .values()
            .filter(|r| bucket_of(&r.key) == bucket)
            .map(|r| KeyVersion { key: r.key.clone(), version: r.version, hash: r.hash })
            .collect())
    }

    async fn scan(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<Record>> {
        use std::ops::Bound;
        let inner = self.inner.lock().unwrap();
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_string()),
            None => Bound::Unbounded,
        };
        Ok(inner.docs.range((lower, Bound::Unbounded)).take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.inner.lock().unwrap().meta.get(name).cloned())
    }

    async fn put_meta(&self, name: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.lock().unwrap().meta.insert(name.to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run_all(|| async { std::sync::Arc::new(MemStore::new()) as super::super::DynStore })
            .await;
    }
}
