//! The conformance suite every storage engine passes.
//!
//! `run_all` takes a factory of fresh, empty stores and checks the contract of [`Store`]:
//! conditional puts, version ordering, digests kept in step with the data, bucket listings,
//! ordered scans, meta values, and atomicity of concurrent compare-and-set writers.
//! Engines call it from their own tests; durability across a reopen is checked by
//! [`run_reopen`] for engines that persist.

use super::{DynStore, Expect, Put, Record, Store};
use model::digest::{bucket_of, Digests};
use model::version::Version;
use std::future::Future;

fn v(epoch: u64, seq: u64) -> Version {
    Version { epoch, seq }
}

fn rec(key: &str, version: Version, body: &str) -> Record {
    Record::new(key.to_string(), version, body.to_string())
}

fn put(expect: Expect, r: Record) -> Put {
    Put { expect, record: r }
}

/// Digests recomputed from a full scan: what the incrementally kept digests must equal.
pub async fn digests_by_scan(store: &dyn Store) -> Digests {
    let mut d = Digests::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 1000).await.unwrap();
        if page.is_empty() {
            return d;
        }
        for r in page.iter().filter(|r| !model::side::is_side(&r.key)) {
            d.replace(&r.key, None, &r.hash);
        }
        after = Some(page.last().unwrap().key.clone());
    }
}

/// Runs every conformance check, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynStore>,
{
    conditional_puts(make().await).await;
    replicated_states(make().await).await;
    digests_follow_writes(make().await).await;
    buckets_and_scans(make().await).await;
    meta_values(make().await).await;
    concurrent_compare_and_set(make().await).await;
    side_records(make().await).await;
    groups_apply_whole(make().await).await;
}

/// A put and the `Beside` puts after it apply together or not at all.
async fn groups_apply_whole(s: DynStore) {
    let side = |seq, body: &str| rec(&model::side::key("d", "r:x"), v(1, seq), &model::side::body(u64::MAX, body));
    let got = s
        .write(vec![
            put(Expect::Exactly(Version::ZERO), rec("d", v(1, 1), "1")),
            put(Expect::Beside(Version::ZERO), side(1, "a")),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![true, true]);
    // The document's condition fails: its side record is not written either.
    let other = rec(&model::side::key("d", "r:y"), v(1, 2), &model::side::body(u64::MAX, "b"));
    let got = s
        .write(vec![
            put(Expect::Exactly(v(1, 7)), rec("d", v(1, 2), "2")),
            put(Expect::Beside(Version::ZERO), other.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![false, false]);
    assert_eq!(s.get(&other.key).await.unwrap(), None);
    // The side record's condition fails: the document is not written either; a group after
    // it is decided on its own.
    let got = s
        .write(vec![
            put(Expect::Exactly(v(1, 1)), rec("d", v(1, 2), "2")),
            put(Expect::Beside(Version::ZERO), side(2, "c")),
            put(Expect::Exactly(Version::ZERO), rec("e", v(1, 1), "e")),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![false, false, true]);
    assert_eq!(s.get("d").await.unwrap().unwrap().body, "1");
    assert_eq!(s.get(&side(1, "a").key).await.unwrap(), Some(side(1, "a")));
}

/// Side records (model::side) are written with their document in one call, found by key and
/// by scans, never counted in the digests nor listed in a bucket, and dropped once expired.
async fn side_records(s: DynStore) {
    use model::side;
    let doc = rec("d", v(1, 1), r#"{"n":1}"#);
    let live = rec(&side::key("d", "r:a"), v(1, 1), &side::body(2_000, r#"{"x":1}"#));
    let old = rec(&side::key("d", "r:b"), v(1, 1), &side::body(1_000, r#"{"x":2}"#));
    let got = s
        .write(vec![
            put(Expect::Exactly(Version::ZERO), doc.clone()),
            put(Expect::Older, live.clone()),
            put(Expect::Older, old.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![true, true, true]);
    assert_eq!(s.get(&live.key).await.unwrap(), Some(live.clone()));
    let mut only_doc = Digests::default();
    only_doc.replace("d", None, &doc.hash);
    assert!(s.digests().await.unwrap() == only_doc, "side records are not in the digests");
    let listed = s.bucket(bucket_of("d")).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), vec!["d"]);
    for b in [bucket_of(&live.key), bucket_of(&old.key)] {
        assert!(s.bucket(b).await.unwrap().iter().all(|k| !side::is_side(&k.key)));
    }
    assert_eq!(s.scan(None, 10).await.unwrap().len(), 3, "scans show side records");
    assert_eq!(s.prune_sides(999, 0).await.unwrap(), 0);
    assert_eq!(s.prune_sides(1_500, 0).await.unwrap(), 1);
    assert_eq!(s.get(&old.key).await.unwrap(), None);
    assert_eq!(s.get(&live.key).await.unwrap(), Some(live.clone()));
    assert!(s.digests().await.unwrap() == only_doc);
    assert_eq!(s.prune_sides(2_000, 0).await.unwrap(), 1);
    assert_eq!(s.scan(None, 10).await.unwrap(), vec![doc.clone()]);
    // Held records go once their start is released, whatever the time; one that never
    // expires stays.
    let held = |name: &str, start: u64| rec(&side::key("d", name), v(1, 1), &side::body(side::held(start), "{}"));
    let never = rec(&side::key("d", "t:never"), v(1, 1), &side::body(u64::MAX, "{}"));
    let puts = [held("t:a", 1_000), held("t:b", 2_000), never.clone()].map(|r| put(Expect::Older, r));
    assert_eq!(s.write(puts.to_vec()).await.unwrap(), vec![true; 3]);
    assert_eq!(s.prune_sides(side::HELD - 1, 1_000).await.unwrap(), 0, "none released, none timed out");
    assert_eq!(s.prune_sides(0, 1_001).await.unwrap(), 1);
    assert_eq!(s.get(&side::key("d", "t:a")).await.unwrap(), None);
    assert_eq!(s.prune_sides(0, side::HELD).await.unwrap(), 1);
    assert_eq!(s.scan(None, 10).await.unwrap(), vec![doc, never]);
}

async fn conditional_puts(s: DynStore) {
    assert_eq!(s.get("a").await.unwrap(), None);
    let r1 = rec("a", v(1, 1), r#"{"n":1}"#);
    assert_eq!(s.write(vec![put(Expect::Exactly(Version::ZERO), r1.clone())]).await.unwrap(), vec![true]);
    assert_eq!(s.get("a").await.unwrap(), Some(r1.clone()));
    // Creating again fails: the key is no longer absent.
    let r1b = rec("a", v(1, 1), r#"{"n":9}"#);
    assert_eq!(s.write(vec![put(Expect::Exactly(Version::ZERO), r1b)]).await.unwrap(), vec![false]);
    // A put expecting a stale version fails and changes nothing.
    let r2 = rec("a", v(1, 2), r#"{"n":2}"#);
    assert_eq!(s.write(vec![put(Expect::Exactly(v(1, 5)), r2.clone())]).await.unwrap(), vec![false]);
    assert_eq!(s.get("a").await.unwrap(), Some(r1));
    assert_eq!(s.write(vec![put(Expect::Exactly(v(1, 1)), r2.clone())]).await.unwrap(), vec![true]);
    assert_eq!(s.get("a").await.unwrap(), Some(r2.clone()));
    // Several puts in one call are decided one by one.
    let got = s
        .write(vec![
            put(Expect::Exactly(v(1, 2)), rec("a", v(1, 3), "3")),
            put(Expect::Exactly(v(1, 2)), rec("b", v(1, 1), "x")),
            put(Expect::Exactly(Version::ZERO), rec("c", v(1, 1), "y")),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![true, false, true]);
    let many = s.get_many(&["c".into(), "zz".into(), "a".into()]).await.unwrap();
    assert_eq!(many[0].as_ref().unwrap().body, "y");
    assert_eq!(many[1], None);
    assert_eq!(many[2].as_ref().unwrap().version, v(1, 3));
    assert!(many[2].as_ref().unwrap().hash_ok());
}

async fn replicated_states(s: DynStore) {
    let r = rec("k", v(2, 5), "five");
    assert_eq!(s.write(vec![put(Expect::Older, r.clone())]).await.unwrap(), vec![true]);
    // Same version, lower seq, lower epoch: all refused.
    let refused = vec![
        put(Expect::Older, rec("k", v(2, 5), "five")),
        put(Expect::Older, rec("k", v(2, 4), "four")),
        put(Expect::Older, rec("k", v(1, 9), "old epoch")),
    ];
    assert_eq!(s.write(refused).await.unwrap(), vec![false, false, false]);
    assert_eq!(s.get("k").await.unwrap(), Some(r));
    let newer = rec("k", v(3, 1), "newer epoch");
    assert_eq!(s.write(vec![put(Expect::Older, newer.clone())]).await.unwrap(), vec![true]);
    assert_eq!(s.get("k").await.unwrap(), Some(newer));
}

async fn digests_follow_writes(s: DynStore) {
    let empty = s.digests().await.unwrap();
    assert_eq!(empty.root(), Digests::default().root());
    let mut puts = Vec::new();
    for i in 0..300 {
        puts.push(put(Expect::Exactly(Version::ZERO), rec(&i.to_string(), v(1, 1), "a")));
    }
    s.write(puts).await.unwrap();
    for i in (0..300).step_by(3) {
        s.write(vec![put(Expect::Exactly(v(1, 1)), rec(&i.to_string(), v(1, 2), "b"))]).await.unwrap();
    }
    // A refused put leaves the digests alone.
    s.write(vec![put(Expect::Older, rec("5", v(1, 1), "stale"))]).await.unwrap();
    let kept = s.digests().await.unwrap();
    assert!(kept == digests_by_scan(&*s).await, "incremental digests differ from a full scan");
    assert_ne!(kept.root(), empty.root());
}

async fn buckets_and_scans(s: DynStore) {
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i:03}")).collect();
    s.write(keys.iter().map(|k| put(Expect::Older, rec(k, v(1, 1), k))).collect()).await.unwrap();
    let b = bucket_of(&keys[0]);
    let listed = s.bucket(b).await.unwrap();
    let want: Vec<&String> = keys.iter().filter(|k| bucket_of(k) == b).collect();
    assert_eq!(listed.len(), want.len());
    for kv in &listed {
        assert_eq!(bucket_of(&kv.key), b);
        let r = s.get(&kv.key).await.unwrap().unwrap();
        assert_eq!((kv.version, kv.hash), (r.version, r.hash));
    }
    // Scans are in key order and page without gaps or repeats.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.scan(after.as_deref(), 37).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 37);
        after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|r| r.key));
    }
    assert_eq!(seen, keys);
}

async fn meta_values(s: DynStore) {
    assert_eq!(s.get_meta("view").await.unwrap(), None);
    s.put_meta("view", b"one".to_vec()).await.unwrap();
    s.put_meta("view", b"two".to_vec()).await.unwrap();
    s.put_meta("other", b"x".to_vec()).await.unwrap();
    assert_eq!(s.get_meta("view").await.unwrap(), Some(b"two".to_vec()));
    // Meta values are not documents.
    assert_eq!(s.scan(None, 10).await.unwrap(), vec![]);
}

/// Many tasks increment one counter by compare-and-set; with atomic conditional puts no
/// increment is lost and none is applied twice.
async fn concurrent_compare_and_set(s: DynStore) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut done = 0;
            while done < EACH {
                let cur = s.get("ctr").await.unwrap();
                let (ver, n) = match &cur {
                    Some(r) => (r.version, r.body.parse::<u64>().unwrap()),
                    None => (Version::ZERO, 0),
                };
                let next = rec("ctr", ver.next(1), &(n + 1).to_string());
                if s.write(vec![put(Expect::Exactly(ver), next)]).await.unwrap()[0] {
                    done += 1;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let r = s.get("ctr").await.unwrap().unwrap();
    assert_eq!(r.body, (TASKS * EACH).to_string());
    assert_eq!(r.version, v(1, TASKS * EACH));
}

/// For durable engines: what was written before `reopen` is there after it, digests too.
/// `open` opens the engine at the same place each time it is called.
pub async fn run_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynStore>,
{
    let s = open().await;
    let puts = (0..500).map(|i| put(Expect::Older, rec(&format!("k{i}"), v(1, 1), "body"))).collect();
    s.write(puts).await.unwrap();
    s.write(vec![put(Expect::Exactly(v(1, 1)), rec("k7", v(1, 2), "changed"))]).await.unwrap();
    s.put_meta("view", b"7".to_vec()).await.unwrap();
    let root = s.digests().await.unwrap().root();
    drop(s);
    let s = open().await;
    assert_eq!(s.get("k7").await.unwrap().unwrap().body, "changed");
    assert_eq!(s.scan(None, 10_000).await.unwrap().len(), 500);
    assert_eq!(s.get_meta("view").await.unwrap(), Some(b"7".to_vec()));
    assert_eq!(s.digests().await.unwrap().root(), root);
}
