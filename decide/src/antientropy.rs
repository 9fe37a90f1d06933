//! Anti-entropy planning (docs/design.md §5.2): digests in, repair plan out. Pure: the
//! coordinator's round (`coordinator/src/antientropy.rs`) gathers the inputs from the
//! replicas and carries the plan out.
//!
//! A round compares the replicas' 256 bucket digests. Only full members of the view vote:
//! the root a majority of them hold names the consistent copy. Buckets in which a replica
//! differs from that copy (or, without a majority, in which any two replicas differ) are
//! listed key by key, and per key:
//!
//! - a key written on any replica since the round began waits for the next round (its
//!   fan-out may still be under way);
//! - the voters' highest version wins; between voters holding it with different contents
//!   (a document altered behind the system's back) the content most of them hold wins;
//! - every replica with a lower version, or that version with other content, gets the
//!   winner's state, applied only if the replica still holds what it listed (a write racing
//!   the repair wins); a missing key is version zero, and repair never deletes;
//! - a key no voter holds is left alone, and so is a learner's copy newer than every voter's:
//!   a learner outvotes nothing.

use model::digest::{Hash, BUCKETS};
use model::version::Version;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One replica's entry for a key in a bucket listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its version on that replica.
    pub version: Version,
    /// Its record hash on that replica.
    pub hash: Hash,
    /// Written on that replica since the round began.
    pub fresh: bool,
}

/// One repair: copy `from`'s state of `key` (at `version`, with `hash`) to each target,
/// applied only if the target still holds the version it listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The key.
    pub key: String,
    /// A voter holding the winning state.
    pub from: u32,
    /// The winning version.
    pub version: Version,
    /// The winning state's hash.
    pub hash: Hash,
    /// (replica, the version it listed; zero when it lacks the key).
    pub to: Vec<(u32, Version)>,
}

/// The root held by a majority of the voters, if any.
pub fn majority_root(roots: &[(u32, Hash)], voters: &[u32]) -> Option<Hash> {
    let mut counts: HashMap<Hash, usize> = HashMap::new();
    for (id, root) in roots {
        if voters.contains(id) {
            *counts.entry(*root).or_default() += 1;
        }
    }
    counts.into_iter().find(|(_, n)| *n > voters.len() / 2).map(|(h, _)| h)
}

/// The buckets a round must list: where a replica differs from the majority's copy, or,
/// when there is none, where any two replicas differ. `digests` are the replicas' bucket
/// digests (all `BUCKETS` of them) with their roots.
pub fn divergent_buckets(digests: &[(u32, Hash, Vec<Hash>)], voters: &[u32]) -> Vec<u8> {
    let roots: Vec<(u32, Hash)> = digests.iter().map(|(id, root, _)| (*id, *root)).collect();
    let reference = majority_root(&roots, voters)
        .and_then(|root| digests.iter().find(|(id, r, _)| *r == root && voters.contains(id)))
        .map(|(_, _, b)| b);
    (0..BUCKETS)
        .filter(|&b| match reference {
            Some(reference) => digests.iter().any(|(_, _, d)| d[b] != reference[b]),
            None => digests.iter().any(|(_, _, d)| d[b] != digests[0].2[b]),
        })
        .map(|b| b as u8)
        .collect()
}

/// Of the `divergent` buckets, those whose digest changed on some replica between two
/// readings a moment apart (`before`, `now`; a replica missing from either is not
/// compared): a write to them was under way, and their difference may be nothing but its
/// fan-out still travelling. A bucket that truly diverged and is not being written keeps
/// its digests, and is not in flux.
pub fn in_flux(divergent: &[u8], before: &[(u32, Hash, Vec<Hash>)], now: &[(u32, Hash, Vec<Hash>)]) -> Vec<u8> {
    divergent
        .iter()
        .copied()
        .filter(|&b| {
            before
                .iter()
                .any(|(id, _, d1)| now.iter().any(|(id2, _, d2)| id == id2 && d1[b as usize] != d2[b as usize]))
        })
        .collect()
}

/// A key left for the next round because it was written during this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// The key.
    pub key: String,
    /// The replicas whose entry differs from the newest one listed (or that lack the key):
    /// not known to hold its state yet. A learner among them is not yet clean.
    pub unsettled: Vec<u32>,
}

/// The repairs for listed buckets. `listings` holds every listed replica's entries (voters
/// and learners); returns the repairs and the keys left for the next round because they were
/// written during this one.
pub fn plan(listings: &[(u32, Vec<Entry>)], voters: &[u32]) -> (Vec<Repair>, Vec<Deferred>) {
    // key -> replica -> entry
    let mut keys: BTreeMap<&str, HashMap<u32, &Entry>> = BTreeMap::new();
    for (id, entries) in listings {
        for e in entries {
            keys.entry(e.key.as_str()).or_default().insert(*id, e);
        }
    }
    let mut repairs = Vec::new();
    let mut deferred = Vec::new();
    for (key, held) in keys {
        if held.values().any(|e| e.fresh) {
            let newest = held.values().max_by_key(|e| e.version).map(|e| (e.version, e.hash));
            let unsettled = listings
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| held.get(id).map(|e| (e.version, e.hash)) != newest)
                .collect();
            deferred.push(Deferred { key: key.to_string(), unsettled });
            continue;
        }
        let mut voting: Vec<(u32, &Entry)> =
            held.iter().filter(|(id, _)| voters.contains(id)).map(|(id, e)| (*id, *e)).collect();
        let Some(best) = voting.iter().map(|(_, e)| e.version).max() else {
            continue;
        };
        voting.retain(|(_, e)| e.version == best);
        // The content most voters hold at the best version; ties go to the lowest replica id.
        voting.sort_by_key(|(id, _)| *id);
        let mut counts: Vec<(Hash, usize, u32)> = Vec::new();
        for (id, e) in &voting {
            match counts.iter_mut().find(|(h, _, _)| *h == e.hash) {
                Some(c) => c.1 += 1,
                None => counts.push((e.hash, 1, *id)),
            }
        }
        let (hash, _, from) = counts.iter().max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2))).copied().unwrap();
        let to: Vec<(u32, Version)> = listings
            .iter()
            .map(|(id, _)| (*id, held.get(id)))
            .filter_map(|(id, e)| match e {
                None => Some((id, Version::ZERO)),
                Some(e) if e.version < best || (e.version == best && e.hash != hash) => Some((id, e.version)),
                Some(_) => None,
            })
            .collect();
        if !to.is_empty() {
            repairs.push(Repair { key: key.to_string(), from, version: best, hash, to });
        }
    }
    (repairs, deferred)
}

/// Of the buckets `flux` found in flux this round, those left for the next round: each bucket
/// at most `max_rounds` interval rounds in a row, so that a divergence in a bucket written all
/// the time is still listed. `rounds` counts, per bucket, the rounds in a row it was left; a
/// bucket not left is counted from 0 again.
pub fn left_in_flux(flux: &[u8], rounds: &mut [u8; BUCKETS], max_rounds: u8) -> Vec<u8> {
    let mut left = Vec::new();
    for (b, n) in rounds.iter_mut().enumerate() {
        let bucket = b as u8;
        if flux.contains(&bucket) && *n < max_rounds {
            *n += 1;
            left.push(bucket);
        } else {
            *n = 0;
        }
    }
    left
}

/// The divergent buckets a round lists, at most `cap`, round-robin by bucket number: from the
/// first at or after `cursor`, wrapping around. Returns them and the cursor of the next round
/// (the bucket after the last one listed).
pub fn buckets_to_list(divergent: &[u8], cursor: usize, cap: usize) -> (Vec<u8>, usize) {
    let listed: Vec<u8> = divergent
        .iter()
        .filter(|b| usize::from(**b) >= cursor)
        .chain(divergent.iter().filter(|b| usize::from(**b) < cursor))
        .take(cap)
        .copied()
        .collect();
    let next = listed.last().map_or(0, |b| (usize::from(*b) + 1) % BUCKETS);
    (listed, next)
}

/// The repairs a round sends within its budget of `max` documents applied (a repair to
/// several replicas counts once per replica): those that fit, in order, and whether any was
/// left out (the round is then not complete).
pub fn within_budget(mut repairs: Vec<Repair>, max: usize) -> (Vec<Repair>, bool) {
    let planned: usize = repairs.iter().map(|r| r.to.len()).sum();
    if planned <= max {
        return (repairs, false);
    }
    let mut budget = max;
    repairs.retain(|r| {
        let keep = r.to.len() <= budget;
        budget = budget.saturating_sub(r.to.len());
        keep
    });
    (repairs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash {
        Hash([n; 32])
    }

    fn v(epoch: u64, seq: u64) -> Version {
        Version { epoch, seq }
    }

    fn e(key: &str, version: Version, hash: u8) -> Entry {
        Entry { key: key.into(), version, hash: h(hash), fresh: false }
    }

    fn digests(id: u32, buckets: &[(usize, u8)]) -> (u32, Hash, Vec<Hash>) {
        let mut d = vec![Hash::default(); BUCKETS];
        for (b, x) in buckets {
            d[*b] = h(*x);
        }
        let mut root = [0u8; 32];
        for (i, b) in d.iter().enumerate() {
            root[i % 32] ^= b.0[0].wrapping_add(i as u8);
        }
        (id, Hash(root), d)
    }

    #[test]
    fn majority_roots() {
        let voters = [0, 1, 2];
        type Roots<'a> = &'a [(u32, u8)];
        let cases: &[(Roots, Option<u8>)] = &[
            (&[(0, 1), (1, 1), (2, 1)], Some(1)),
            (&[(0, 1), (1, 1), (2, 2)], Some(1)),
            (&[(0, 1), (1, 2), (2, 3)], None),
            (&[(0, 1), (1, 2)], None),
            (&[(0, 1), (1, 1)], Some(1)),
            // A learner's root does not count.
            (&[(0, 1), (1, 2), (3, 2)], None),
        ];
        for (roots, want) in cases {
            let roots: Vec<(u32, Hash)> = roots.iter().map(|(id, x)| (*id, h(*x))).collect();
            assert_eq!(majority_root(&roots, &voters), want.map(h), "{roots:?}");
        }
    }

    #[test]
    fn buckets_written_between_two_readings_are_in_flux() {
        // Bucket 3 diverged on replica 2 and nothing writes it; bucket 5 differs because a
        // write's fan-out was on its way (replica 1 got it between the readings); bucket 7
        // keeps being written on every replica; replica 9 answered only the first reading.
        let before = [
            digests(0, &[(3, 1), (5, 2), (7, 1)]),
            digests(1, &[(3, 1), (5, 1), (7, 1)]),
            digests(2, &[(3, 9), (5, 2), (7, 1)]),
            digests(9, &[(3, 4), (5, 2), (7, 1)]),
        ];
        let now = [
            digests(0, &[(3, 1), (5, 2), (7, 3)]),
            digests(1, &[(3, 1), (5, 2), (7, 3)]),
            digests(2, &[(3, 9), (5, 2), (7, 3)]),
        ];
        let divergent = divergent_buckets(&before, &[0, 1, 2]);
        assert_eq!(divergent, vec![3, 5]);
        assert_eq!(in_flux(&divergent, &before, &now), vec![5]);
        assert_eq!(in_flux(&[3, 5, 7], &before, &now), vec![5, 7]);
        assert!(in_flux(&[3, 5, 7], &before, &before).is_empty());
    }

    #[test]
    fn equal_digests_list_nothing() {
        let d = [digests(0, &[(3, 1)]), digests(1, &[(3, 1)]), digests(2, &[(3, 1)])];
        assert!(divergent_buckets(&d, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn the_buckets_where_anyone_differs_from_the_majority_are_listed() {
        let d = [digests(0, &[(3, 1), (9, 4)]), digests(1, &[(3, 1), (9, 4)]), digests(2, &[(3, 2), (200, 7)])];
        assert_eq!(divergent_buckets(&d, &[0, 1, 2]), vec![3, 9, 200]);
        // Without a majority, every bucket where any two differ.
        let d = [digests(0, &[(1, 1)]), digests(1, &[(2, 1)]), digests(2, &[(3, 1)])];
        assert_eq!(divergent_buckets(&d, &[0, 1, 2]), vec![1, 2, 3]);
        // A learner that differs is listed against the voters' copy.
        let d = [digests(0, &[(5, 1)]), digests(1, &[(5, 1)]), digests(7, &[])];
        assert_eq!(divergent_buckets(&d, &[0, 1]), vec![5]);
    }

    /// An expected repair: key, source, version, targets.
    type Want<'a> = (&'a str, u32, Version, Vec<(u32, Version)>);
    /// (listings, voters, expected repairs, deferred keys with their unsettled replicas)
    type Case = (Vec<(u32, Vec<Entry>)>, Vec<u32>, Vec<Want<'static>>, Vec<(&'static str, Vec<u32>)>);

    #[test]
    fn repair_plans() {
        let z = Version::ZERO;
        let cases: Vec<(&str, Case)> = vec![
            (
                "a replica behind gets the newest version",
                (
                    vec![(0, vec![e("k", v(1, 5), 5)]), (1, vec![e("k", v(1, 5), 5)]), (2, vec![e("k", v(1, 3), 3)])],
                    vec![0, 1, 2],
                    vec![("k", 0, v(1, 5), vec![(2, v(1, 3))])],
                    vec![],
                ),
            ),
            (
                "a missing key is version zero",
                (
                    vec![(0, vec![e("k", v(1, 1), 1)]), (1, vec![]), (2, vec![e("k", v(1, 1), 1)])],
                    vec![0, 1, 2],
                    vec![("k", 0, v(1, 1), vec![(1, z)])],
                    vec![],
                ),
            ),
            (
                "the higher version wins even against a majority",
                (
                    vec![(0, vec![e("k", v(1, 1), 1)]), (1, vec![e("k", v(1, 1), 1)]), (2, vec![e("k", v(2, 2), 2)])],
                    vec![0, 1, 2],
                    vec![("k", 2, v(2, 2), vec![(0, v(1, 1)), (1, v(1, 1))])],
                    vec![],
                ),
            ),
            (
                "same version, altered content: the content most voters hold wins",
                (
                    vec![(0, vec![e("k", v(1, 4), 9)]), (1, vec![e("k", v(1, 4), 4)]), (2, vec![e("k", v(1, 4), 4)])],
                    vec![0, 1, 2],
                    vec![("k", 1, v(1, 4), vec![(0, v(1, 4))])],
                    vec![],
                ),
            ),
            (
                "a tie between two contents goes to the lower replica id",
                (
                    vec![(0, vec![e("k", v(1, 4), 9)]), (1, vec![e("k", v(1, 4), 4)])],
                    vec![0, 1],
                    vec![("k", 0, v(1, 4), vec![(1, v(1, 4))])],
                    vec![],
                ),
            ),
            (
                "a key written during the round waits",
                (
                    vec![
                        (0, vec![Entry { fresh: true, ..e("k", v(1, 6), 6) }, e("j", v(1, 2), 2)]),
                        (1, vec![e("k", v(1, 5), 5), e("j", v(1, 1), 1)]),
                    ],
                    vec![0, 1],
                    vec![("j", 0, v(1, 2), vec![(1, v(1, 1))])],
                    vec![("k", vec![1])],
                ),
            ),
            (
                "a key written during the round: a learner behind on it is unsettled",
                (
                    vec![
                        (0, vec![Entry { fresh: true, ..e("k", v(1, 6), 6) }]),
                        (1, vec![Entry { fresh: true, ..e("k", v(1, 6), 6) }]),
                        (2, vec![e("k", v(1, 3), 3)]),
                        (3, vec![]),
                    ],
                    vec![0, 1],
                    vec![],
                    vec![("k", vec![2, 3])],
                ),
            ),
            (
                "a key written during the round that every replica holds alike settles nobody",
                (
                    vec![
                        (0, vec![Entry { fresh: true, ..e("k", v(1, 6), 6) }]),
                        (2, vec![Entry { fresh: true, ..e("k", v(1, 6), 6) }]),
                    ],
                    vec![0],
                    vec![],
                    vec![("k", vec![])],
                ),
            ),
            (
                "a learner is repaired from the voters and outvotes nothing",
                (
                    vec![
                        (0, vec![e("k", v(1, 2), 2), e("j", v(1, 1), 1)]),
                        (1, vec![e("k", v(1, 2), 2), e("j", v(1, 1), 1)]),
                        (2, vec![e("k", v(1, 1), 1), e("j", v(1, 7), 7), e("orphan", v(1, 1), 1)]),
                    ],
                    vec![0, 1],
                    vec![("k", 0, v(1, 2), vec![(2, v(1, 1))])],
                    vec![],
                ),
            ),
            (
                "an empty learner gets everything",
                (
                    vec![
                        (0, vec![e("a", v(1, 1), 1), e("b", v(2, 3), 3)]),
                        (1, vec![e("a", v(1, 1), 1), e("b", v(2, 3), 3)]),
                        (2, vec![]),
                    ],
                    vec![0, 1],
                    vec![("a", 0, v(1, 1), vec![(2, z)]), ("b", 0, v(2, 3), vec![(2, z)])],
                    vec![],
                ),
            ),
            (
                "equal everywhere: nothing to do",
                (vec![(0, vec![e("k", v(1, 1), 1)]), (1, vec![e("k", v(1, 1), 1)])], vec![0, 1], vec![], vec![]),
            ),
        ];
        for (name, (listings, voters, want, deferred)) in cases {
            let (repairs, d) = plan(&listings, &voters);
            let got: Vec<Want> = repairs.iter().map(|r| (r.key.as_str(), r.from, r.version, r.to.clone())).collect();
            assert_eq!(got, want, "{name}");
            let d: Vec<(&str, Vec<u32>)> = d.iter().map(|d| (d.key.as_str(), d.unsettled.clone())).collect();
            assert_eq!(d, deferred, "{name}");
        }
    }

    #[test]
    fn a_bucket_is_left_in_flux_at_most_max_rounds_in_a_row() {
        let mut rounds = [0u8; BUCKETS];
        // Bucket 5 is in flux every round, bucket 9 once.
        assert_eq!(left_in_flux(&[5, 9], &mut rounds, 2), vec![5, 9]);
        assert_eq!(left_in_flux(&[5], &mut rounds, 2), vec![5]);
        assert_eq!(left_in_flux(&[5], &mut rounds, 2), Vec::<u8>::new(), "listed after 2 rounds left");
        assert_eq!(rounds[5], 0, "and counted from 0 again");
        assert_eq!(left_in_flux(&[5, 9], &mut rounds, 2), vec![5, 9]);
        assert_eq!(left_in_flux(&[], &mut rounds, 2), Vec::<u8>::new());
        assert_eq!((rounds[5], rounds[9]), (0, 0));
    }

    #[test]
    fn capped_rounds_list_buckets_round_robin() {
        // Divergent buckets, cursor, cap; the buckets listed and the next cursor.
        type Case = (&'static [u8], usize, usize, &'static [u8], usize);
        let cases: &[Case] = &[
            (&[1, 4, 9], 0, 64, &[1, 4, 9], 10),
            (&[1, 4, 9], 0, 2, &[1, 4], 5),
            (&[1, 4, 9], 5, 2, &[9, 1], 2),
            (&[1, 4, 9], 10, 2, &[1, 4], 5),
            (&[255], 0, 1, &[255], 0),
            (&[], 7, 3, &[], 0),
        ];
        for (divergent, cursor, cap, listed, next) in cases {
            assert_eq!(
                buckets_to_list(divergent, *cursor, *cap),
                (listed.to_vec(), *next),
                "{divergent:?} from {cursor}"
            );
        }
    }

    #[test]
    fn a_round_sends_the_repairs_that_fit_its_budget() {
        let repair = |key: &str, targets: u32| Repair {
            key: key.into(),
            from: 0,
            version: Version { epoch: 1, seq: 1 },
            hash: Hash([0; 32]),
            to: (1..=targets).map(|t| (t, Version { epoch: 0, seq: 0 })).collect(),
        };
        let keys = |rs: &[Repair]| rs.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
        let all = vec![repair("a", 2), repair("b", 1), repair("c", 2)];
        let (kept, cut) = within_budget(all.clone(), 5);
        assert_eq!((keys(&kept), cut), (vec!["a".to_string(), "b".into(), "c".into()], false));
        let (kept, cut) = within_budget(all.clone(), 3);
        assert_eq!((keys(&kept), cut), (vec!["a".to_string(), "b".into()], true));
        let (kept, cut) = within_budget(all, 1);
        assert_eq!((keys(&kept), cut), (Vec::<String>::new(), true), "a repair that does not fit ends the budget");
    }
}
