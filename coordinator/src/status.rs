//! `/admin/status` as JSON: the view this coordinator routes by, each replica's state,
//! digest root and lag, the last anti-entropy round and the recent view changes, for tools
//! and for the other coordinators, which assemble the cluster page from it
//! ([`crate::overview`]). Readable without the secret: it shows no data, only membership and
//! hashes.
//!
//! A replica's lag is how far its data is from the others': keys have their own primaries
//! (rendezvous hashing), so there is no single primary for a replica to be behind, but there
//! is a majority, bucket by bucket, of the 256 digests the replicas keep ([`lag_buckets`]).

use crate::antientropy::RoundReport;
use crate::state::Coordinator;
use crate::view::{member_state, ViewChange};
use model::digest::BUCKETS;
use model::topology::Service;
use model::wire::MemberState;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest wait for a replica's digests: the page must come back even when a replica
/// hangs, and a healthy replica answers from memory in milliseconds.
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The status of one coordinator's service. Fields added after the first version have
/// defaults, so a status from a coordinator of an older build still reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The service.
    pub service: Service,
    /// This coordinator's id.
    pub coordinator: u32,
    /// The epoch of the view it routes by.
    pub epoch: u64,
    /// Its clock when it answered, in milliseconds since the Unix epoch: the times below are
    /// on that clock, so a page built from several coordinators' answers tells "12 s ago"
    /// from each answer's own `now_ms`.
    #[serde(default)]
    pub now_ms: u64,
    /// Every configured replica, in id order.
    pub members: Vec<MemberStatus>,
    /// The last anti-entropy round this coordinator ran (`null` before its first, and on
    /// coordinators that do not lead).
    pub anti_entropy: Option<RoundReport>,
    /// The last changes of the view this coordinator routes by (made by it or adopted from a
    /// replica), oldest first, at most [`crate::view::VIEW_HISTORY`].
    #[serde(default)]
    pub view_changes: Vec<ViewChange>,
}

/// One replica as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Replica id.
    pub id: u32,
    /// Its address (`host:port`).
    pub addr: String,
    /// Its state in the view.
    pub state: MemberState,
    /// Its digest root (hex), or `None` if it did not answer.
    pub root: Option<String>,
    /// In how many of the 256 digest buckets it differs from the majority of the replicas
    /// that answered ([`lag_buckets`]); `None` if it did not answer or no majority exists.
    #[serde(default)]
    pub lag_buckets: Option<u32>,
}

/// The reply of a replica's `GET /internal/digest?buckets=true`.
#[derive(Deserialize)]
struct Digest {
    /// The root over its buckets, hex.
    root: String,
    /// The 256 bucket digests, hex.
    #[serde(default)]
    buckets: Option<Vec<String>>,
}

/// Collects the status: the current view, every replica's digests (asked concurrently) and
/// the lags they give, the last anti-entropy round and the recent view changes.
pub async fn gather(c: &Coordinator) -> Status {
    let view = c.view.get();
    let asks = (0..c.replica_addrs.len() as u32).map(|id| async move {
        match c.forwarder.get_internal(id, "/internal/digest?buckets=true", DIGEST_TIMEOUT).await {
            Ok(r) if r.status == 200 => serde_json::from_slice::<Digest>(&r.body).ok(),
            _ => None,
        }
    });
    let (roots, buckets): (Vec<Option<String>>, Vec<Option<Vec<String>>>) = futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|d| match d {
            Some(d) => (Some(d.root), d.buckets.filter(|b| b.len() == BUCKETS)),
            None => (None, None),
        })
        .unzip();
    let lags = lag_buckets(&buckets);
    let members = c
        .replica_addrs
        .iter()
        .zip(roots.into_iter().zip(lags))
        .enumerate()
        .map(|(id, (addr, (root, lag)))| {
            let id = id as u32;
            MemberStatus { id, addr: addr.clone(), state: member_state(&view, id), root, lag_buckets: lag }
        })
        .collect();
    let anti_entropy = c.anti_entropy.last_round();
    Status {
        service: c.service,
        coordinator: c.id,
        epoch: view.epoch,
        now_ms: model::side::now_ms(),
        members,
        anti_entropy,
        view_changes: c.view.changes(),
    }
}

/// Per replica (`None`: it did not answer), in how many buckets its digests differ from the
/// per-bucket majority of the replicas that answered: the digest more than half of them
/// hold. Every lag is `None` when some bucket has no such majority (two replicas that
/// differ, or readings of unequal lengths): there is then nothing to be behind.
pub fn lag_buckets<H: PartialEq>(digests: &[Option<Vec<H>>]) -> Vec<Option<u32>> {
    let answered: Vec<&Vec<H>> = digests.iter().flatten().collect();
    let none = || vec![None; digests.len()];
    let Some(len) = answered.first().map(|d| d.len()) else {
        return none();
    };
    if answered.iter().any(|d| d.len() != len) {
        return none();
    }
    let mut majority: Vec<&H> = Vec::with_capacity(len);
    for b in 0..len {
        let holders = |h: &H| answered.iter().filter(|d| d[b] == *h).count();
        match answered.iter().map(|d| &d[b]).find(|h| 2 * holders(h) > answered.len()) {
            Some(h) => majority.push(h),
            None => return none(),
        }
    }
    digests
        .iter()
        .map(|d| d.as_ref().map(|d| d.iter().zip(&majority).filter(|(h, m)| h != *m).count() as u32))
        .collect()
}

/// The representations of the admin pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON, the default (tools, and the other coordinators).
    Json,
    /// The cluster page for a browser.
    Html,
    /// The cluster page as a terminal table.
    Text,
}

impl Format {
    /// The representation asked for: `?format=json|html|text` if given, else HTML when the
    /// `Accept` header names `text/html` (a browser), else JSON.
    pub fn of(accept: Option<&str>, query: &str) -> Format {
        let asked = query.split('&').find_map(|p| match p.strip_prefix("format=")? {
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            "text" => Some(Format::Text),
            _ => None,
        });
        match asked {
            Some(f) => f,
            None if accept.is_some_and(|a| a.contains("text/html")) => Format::Html,
            None => Format::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ViewSource;

    /// A status of two replicas as JSON tools read it.
    #[test]
    fn json_shape() {
        let status = Status {
            service: Service::Stock,
            coordinator: 1,
            epoch: 7,
            now_ms: 1_000_000,
            members: vec![
                MemberStatus {
                    id: 0,
                    addr: "a:1".into(),
                    state: MemberState::Up,
                    root: Some("ab12".into()),
                    lag_buckets: Some(0),
                },
                MemberStatus { id: 1, addr: "<b>".into(), state: MemberState::Evicted, root: None, lag_buckets: None },
            ],
            anti_entropy: None,
            view_changes: vec![ViewChange {
                epoch: 7,
                from_epoch: 6,
                what: "evict replica 1".into(),
                source: ViewSource::Adopted,
                reason: None,
                at_ms: 990_000,
            }],
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": "stock", "coordinator": 1, "epoch": 7, "now_ms": 1_000_000, "members": [
                {"id": 0, "addr": "a:1", "state": "up", "root": "ab12", "lag_buckets": 0},
                {"id": 1, "addr": "<b>", "state": "evicted", "root": null, "lag_buckets": null},
            ], "anti_entropy": null, "view_changes": [
                {"epoch": 7, "from_epoch": 6, "what": "evict replica 1", "source": "adopted", "at_ms": 990_000},
            ]})
        );
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status);
    }

    /// A status from a coordinator of a build before lags, times and view changes still reads.
    #[test]
    fn an_older_status_reads() {
        let old = serde_json::json!({"service": "order", "coordinator": 0, "epoch": 3, "members": [
            {"id": 0, "addr": "a:1", "state": "up", "root": "ab12"}], "anti_entropy": null});
        let s: Status = serde_json::from_value(old).unwrap();
        assert_eq!((s.now_ms, s.members[0].lag_buckets, s.view_changes.len()), (0, None, 0));
    }

    #[test]
    fn lag_is_counted_against_the_majority_bucket_by_bucket() {
        let d = |buckets: &str| Some(buckets.chars().collect::<Vec<char>>());
        /// A case's name, the replicas' readings (a char per bucket) and the lags wanted.
        type Case = (&'static str, Vec<Option<Vec<char>>>, Vec<Option<u32>>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("all agree", vec![d("abcd"), d("abcd"), d("abcd")], vec![Some(0), Some(0), Some(0)]),
            ("one behind in two buckets", vec![d("abcd"), d("abxy"), d("abcd")], vec![Some(0), Some(2), Some(0)]),
            // The majority is per bucket: each replica is out-voted in a different bucket.
            ("each differs somewhere", vec![d("xbcd"), d("aycd"), d("abzd")], vec![Some(1), Some(1), Some(1)]),
            ("one did not answer", vec![d("abcd"), None, d("abcd")], vec![Some(0), None, Some(0)]),
            ("two that differ have no majority", vec![d("abcd"), None, d("abcx")], vec![None, None, None]),
            ("a three-way split has none", vec![d("abcx"), d("abcy"), d("abcz")], vec![None, None, None]),
            ("a lone answer is the majority", vec![None, d("abcd"), None], vec![None, Some(0), None]),
            ("nobody answered", vec![None, None, None], vec![None, None, None]),
            ("unequal readings", vec![d("abcd"), d("abc"), d("abcd")], vec![None, None, None]),
            ("five replicas, two behind", vec![d("ab"), d("ab"), d("xb"), d("ab"), d("xy")],
                vec![Some(0), Some(0), Some(1), Some(0), Some(2)]),
            ("two of four are no majority", vec![d("ab"), d("ab"), d("xb"), d("xb")], vec![None, None, None, None]),
            ("no replicas", vec![], vec![]),
        ];
        for (name, digests, want) in cases {
            assert_eq!(lag_buckets(&digests), want, "{name}");
        }
    }

    #[test]
    fn the_format_asked_for() {
        let cases = [
            (Some("text/html,application/xhtml+xml"), "", Format::Html),
            (None, "x=1&format=html", Format::Html),
            (None, "format=text", Format::Text),
            (Some("text/html"), "format=text", Format::Text),
            (Some("text/html"), "format=json", Format::Json),
            (Some("application/json"), "format=json", Format::Json),
            (Some("*/*"), "", Format::Json),
            (None, "format=yaml", Format::Json),
            (None, "", Format::Json),
        ];
        for (accept, query, want) in cases {
            assert_eq!(Format::of(accept, query), want, "{accept:?} {query}");
        }
    }
}
