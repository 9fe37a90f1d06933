//! Rendezvous hashing: which replica is a key's primary.
//!
//! Every configured replica gets the score `blake3(key || node_id)`; the replicas ordered
//! by descending score are the key's preference list, and the first member of the current
//! view in that order is the key's primary. Removing a replica moves only the keys it was
//! primary of.

/// Replica ids of one service, ordered by preference for `key` (highest score first).
pub fn preference(key: &str, replicas: &[u32]) -> Vec<u32> {
    let mut scored: Vec<([u8; 32], u32)> = replicas.iter().map(|&id| (score(key, id), id)).collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The key's primary among `members` (the view's full members), if any.
pub fn primary(key: &str, members: &[u32]) -> Option<u32> {
    // A side record is placed with its document (crate::side).
    let key = crate::side::doc_of(key);
    members.iter().copied().max_by(|&a, &b| score(key, a).cmp(&score(key, b)).then(b.cmp(&a)))
}

fn score(key: &str, id: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&id.to_le_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_is_first_member_of_preference() {
        for k in 0..200 {
            let key = k.to_string();
            let pref = preference(&key, &[0, 1, 2]);
            assert_eq!(primary(&key, &[0, 1, 2]), Some(pref[0]));
            // Without the first choice, the second one takes over.
            let rest: Vec<u32> = pref[1..].to_vec();
            assert_eq!(primary(&key, &rest), Some(pref[1]));
        }
    }

    #[test]
    fn keys_spread_over_replicas() {
        let mut counts = [0usize; 3];
        for k in 0..3000 {
            counts[primary(&k.to_string(), &[0, 1, 2]).unwrap() as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
    }

    #[test]
    fn removing_a_replica_moves_only_its_keys() {
        for k in 0..500 {
            let key = k.to_string();
            let before = primary(&key, &[0, 1, 2]).unwrap();
            let after = primary(&key, &[0, 2]).unwrap();
            if before != 1 {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn no_members_no_primary() {
        assert_eq!(primary("x", &[]), None);
    }
}
