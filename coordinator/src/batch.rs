//! batch_init split by the coordinator (docs/design.md §3.1): the keys "0".."n-1" are
//! partitioned by their primary in the current view, each primary gets its share in one
//! request, and the answers are combined into one. Pure: no I/O here.

use crate::forward::ReplicaReply;
use model::wire::View;
use std::collections::BTreeMap;

/// The keys a batch_init of `n` writes: "0".."n-1".
pub fn batch_keys(n: u64) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Splits `keys` by their primary in `view`, in replica id order. An empty batch still goes
/// to one replica (the lowest full member), so the client gets the service's own answer.
/// `None` if the view has no full member.
pub fn partition(keys: Vec<String>, view: &View) -> Option<BTreeMap<u32, Vec<String>>> {
    let mut parts: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    if keys.is_empty() {
        parts.insert(*view.members.iter().min()?, Vec::new());
        return Some(parts);
    }
    for key in keys {
        parts.entry(view.primary(&key)?).or_default().push(key);
    }
    Some(parts)
}

/// How one primary's share of a batch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// The primary answered.
    Answered(ReplicaReply),
    /// The primary did not answer (or its keys could not be placed): why.
    Unavailable(String),
}

/// Combines the parts of a batch, in the order they are given: the first part that is not a
/// 200 decides (a 400 passes through as it is); if every part succeeded, the first answer is
/// the answer. `None` only for no parts at all.
pub fn combine(parts: Vec<Part>) -> Option<Part> {
    let first_failure = parts.iter().position(|p| !matches!(p, Part::Answered(r) if r.status == 200));
    let i = first_failure.unwrap_or(0);
    parts.into_iter().nth(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::placement::primary;

    #[test]
    fn every_key_goes_to_its_primary_once() {
        let view = View { epoch: 3, members: vec![0, 2], learners: vec![1] };
        let parts = partition(batch_keys(500), &view).unwrap();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![0, 2], "learners are never primary");
        let mut total = 0;
        for (id, keys) in &parts {
            for k in keys {
                assert_eq!(primary(k, &[0, 2]), Some(*id), "{k}");
            }
            total += keys.len();
        }
        assert_eq!(total, 500);
    }

    #[test]
    fn empty_batches_and_views() {
        let view = View { epoch: 1, members: vec![2, 1], learners: vec![] };
        assert_eq!(partition(vec![], &view).unwrap(), BTreeMap::from([(1, vec![])]));
        let empty = View { epoch: 1, members: vec![], learners: vec![0] };
        assert_eq!(partition(batch_keys(3), &empty), None);
        assert_eq!(partition(vec![], &empty), None);
        assert_eq!(batch_keys(3), vec!["0", "1", "2"]);
    }

    #[test]
    fn combining_answers() {
        let ok = |b: &str| Part::Answered(ReplicaReply::text(200, b));
        let bad = Part::Answered(ReplicaReply::text(400, "bad"));
        let down = Part::Unavailable("down".into());
        let cases = [
            (vec![ok("a"), ok("b")], Some(ok("a"))),
            (vec![ok("a"), bad.clone(), down.clone()], Some(bad.clone())),
            (vec![ok("a"), down.clone(), bad.clone()], Some(down.clone())),
            (vec![], None),
        ];
        for (parts, want) in cases {
            assert_eq!(combine(parts.clone()), want, "{parts:?}");
        }
    }
}
