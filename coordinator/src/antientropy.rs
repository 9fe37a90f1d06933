//! Anti-entropy rounds (docs/design.md §5.2), run by the service's lowest-id live coordinator
//! every `anti_entropy_interval_ms` and right after a replica re-joins: compare the
//! replicas' bucket digests, list the divergent buckets, and repair per key as
//! `decide::antientropy::plan` decides. A round with nothing divergent reads no document:
//! only the digests every replica keeps up to date with its writes.
//!
//! Under write load the digests of the replicas differ in many buckets only because some
//! writes' fan-out is still on its way, and listing those buckets from every replica cost a
//! round up to half a second of CPU on two cores and the cluster's p99 a spike every 10 s,
//! to repair nothing (docs/performance.md). So an interval round that finds divergent
//! buckets reads the digests again [`FLUX_WAIT`] later and leaves the buckets whose digests
//! changed in between ([`decide::antientropy::in_flux`]) for the next round; a bucket left
//! [`MAX_FLUX_ROUNDS`] rounds in a row is listed anyway, so a divergence in a bucket that is
//! written all the time is still repaired. Rounds after a re-join, and those an operator
//! asks for, list every divergent bucket at once.

use crate::state::Coordinator;
use decide::antientropy::{
    buckets_to_list, divergent_buckets, in_flux, left_in_flux, majority_root, plan, within_budget, Entry, Repair,
};
use model::digest::{Hash, BUCKETS};
use model::record::Record;
use model::version::Version;
use net::metrics::labels;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use model::antientropy::RoundReport;

/// Longest wait for a replica's answer within a round (a listing of many buckets on a large
/// store scans it once: seconds at a million keys).
const ROUND_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Times a round learns a newer view that a replica tells and reads the digests again,
/// before it gives up repairing (the view keeps changing).
const STALE_VIEW_RETRIES: usize = 2;

/// Records per fetch or repair request.
const CHUNK: usize = 1000;

/// The reason of the periodic rounds (the only ones that leave buckets in flux).
const INTERVAL: &str = "interval";

/// Time between the two readings of the digests that tell buckets in flux: well above a
/// fan-out's round trip under load, so that a difference made by writes on their way shows
/// as a change.
const FLUX_WAIT: Duration = Duration::from_millis(250);

/// Interval rounds in a row a divergent bucket may be left in flux before it is listed
/// anyway (a minute at the default interval).
const MAX_FLUX_ROUNDS: u8 = 6;

/// The `anti-entropy` worker's settings and state: one coordinator field, used by its rounds
/// (and by a catch-up after a re-join) only.
pub struct AntiEntropy {
    /// How often rounds run (setting `anti_entropy_interval_ms`).
    pub interval: Duration,
    /// Most divergent buckets one round lists (setting `anti_entropy_max_buckets`).
    pub max_buckets: usize,
    /// Most documents one round repairs (setting `anti_entropy_max_repairs`).
    pub max_repairs: usize,
    /// Held while a round runs: rounds run one at a time.
    round_lock: tokio::sync::Mutex<()>,
    /// The bucket number from which the next capped round lists.
    bucket_cursor: std::sync::Mutex<usize>,
    /// Per bucket, the interval rounds in a row that found it divergent but in flux and left
    /// it ([`left_in_flux`]).
    flux_rounds: std::sync::Mutex<[u8; BUCKETS]>,
    /// What the last round found and did.
    last_round: std::sync::Mutex<Option<RoundReport>>,
}

impl AntiEntropy {
    /// The worker's state before its first round, with the coordinator's settings.
    pub fn new(settings: &net::settings::CoordinatorSettings) -> AntiEntropy {
        AntiEntropy {
            interval: Duration::from_millis(settings.anti_entropy_interval_ms),
            max_buckets: settings.anti_entropy_max_buckets,
            max_repairs: settings.anti_entropy_max_repairs,
            round_lock: tokio::sync::Mutex::new(()),
            bucket_cursor: std::sync::Mutex::new(0),
            flux_rounds: std::sync::Mutex::new([0; BUCKETS]),
            last_round: Default::default(),
        }
    }

    /// What the last round found and did, if one ran.
    pub fn last_round(&self) -> Option<RoundReport> {
        self.last_round.lock().unwrap().clone()
    }

    /// The buckets of `divergent` this round lists, at most `max_buckets` of them, going on
    /// round-robin from the bucket after the last one the previous capped round listed.
    fn next_to_list(&self, divergent: &[u8]) -> Vec<u8> {
        let mut cursor = self.bucket_cursor.lock().unwrap();
        let (listed, next) = buckets_to_list(divergent, *cursor, self.max_buckets.min(divergent.len()));
        *cursor = next;
        listed
    }
}

/// One replica's `/internal/digest?buckets=true` answer.
#[derive(serde::Deserialize)]
struct Digests {
    root: String,
    buckets: Vec<String>,
    /// The replica's view epoch.
    #[serde(default)]
    epoch: u64,
}

/// One replica's digests as a round uses them: id, root, buckets, and the epoch of the view
/// it serves by.
type Reading = (u32, Hash, Vec<Hash>, u64);

/// Whether a round's voters, taken from a view of epoch `view_epoch`, may be out of date:
/// some replica that answered serves by a newer view (members evicted or promoted since;
/// an evicted member's copy must not vote, nor a newly promoted one be left out).
pub fn votes_with_stale_view(view_epoch: u64, readings: &[Reading]) -> bool {
    readings.iter().any(|r| r.3 > view_epoch)
}

impl Coordinator {
    /// Replica `id`'s root and 256 bucket digests (`None` if it did not answer them);
    /// `round` opens that anti-entropy round on the replica.
    pub(crate) async fn digests_of(&self, id: u32, round: Option<u64>, timeout: Duration) -> Option<(Hash, Vec<Hash>)> {
        self.reading_of(id, round, timeout).await.map(|(_, root, buckets, _)| (root, buckets))
    }

    /// Replica `id`'s digests with the epoch of its view ([`Reading`]).
    async fn reading_of(&self, id: u32, round: Option<u64>, timeout: Duration) -> Option<Reading> {
        let path = match round {
            Some(r) => format!("/internal/digest?round={r}&buckets=true"),
            None => "/internal/digest?buckets=true".to_string(),
        };
        let r = self.forwarder.get_internal(id, &path, timeout).await.ok().filter(|r| r.status == 200)?;
        let d: Digests = serde_json::from_slice(&r.body).ok()?;
        let buckets: Option<Vec<Hash>> = d.buckets.iter().map(|h| Hash::from_hex(h)).collect();
        match (Hash::from_hex(&d.root), buckets) {
            (Some(root), Some(b)) if b.len() == BUCKETS => Some((id, root, b, d.epoch)),
            _ => {
                log::warn!("replica {id} sent unreadable digests");
                None
            }
        }
    }

    /// One round of the `anti-entropy` worker (every `anti_entropy_interval_ms`, the first one
    /// interval after the start): a round, if this is the lowest-id live coordinator.
    pub async fn anti_entropy_tick(&self) {
        if self.leads().await {
            self.anti_entropy_round(INTERVAL).await;
        }
    }

    /// One anti-entropy round over the current view's members and learners.
    pub async fn anti_entropy_round(&self, reason: &str) -> RoundReport {
        let _one_at_a_time = self.anti_entropy.round_lock.lock().await;
        let started = Instant::now();
        let round_id = uuid::Uuid::new_v4().as_u64_pair().0;
        // The voters are the members of the view the replicas serve by: a replica telling a
        // newer view than this coordinator's sends it to learn that view and read again.
        let mut view = self.view.get();
        let mut readings = self.readings(&view, round_id).await;
        for _ in 0..STALE_VIEW_RETRIES {
            if !votes_with_stale_view(view.epoch, &readings) {
                break;
            }
            self.learn_view().await;
            view = self.view.get();
            readings = self.readings(&view, round_id).await;
        }
        let stale = votes_with_stale_view(view.epoch, &readings);
        let voters = view.members.clone();
        let targets: Vec<u32> = view.members.iter().chain(&view.learners).copied().collect();
        let mut report = RoundReport {
            reason: reason.to_string(),
            started_ms: model::side::now_ms(),
            epoch: view.epoch,
            ..RoundReport::default()
        };
        let mut digests: Vec<(u32, Hash, Vec<Hash>)> = Vec::new();
        for (id, root, buckets, _) in readings {
            report.roots.insert(id, root.to_hex());
            digests.push((id, root, buckets));
        }
        let answered: Vec<u32> = digests.iter().map(|(id, _, _)| *id).collect();
        let roots: Vec<(u32, Hash)> = digests.iter().map(|(id, r, _)| (*id, *r)).collect();
        let majority = majority_root(&roots, &voters);
        report.differing_replicas = roots.iter().filter(|(_, r)| Some(*r) != majority).map(|(id, _)| *id).collect();
        report.divergent_buckets = divergent_buckets(&digests, &voters);

        report.unanswered = targets.iter().filter(|id| !answered.contains(id)).copied().collect();
        let mut complete = report.unanswered.is_empty() && !stale;
        let mut to_list = report.divergent_buckets.clone();
        if reason == INTERVAL {
            report.in_flux = self.leave_in_flux(&mut to_list, &digests).await;
            complete &= report.in_flux.is_empty();
        }
        if stale {
            log::warn!("anti-entropy ({reason}): the view kept changing; nothing repaired this round");
        } else if !to_list.is_empty() && answered.iter().any(|id| voters.contains(id)) {
            complete &= self.repair_round(round_id, &answered, &voters, &to_list, &mut report).await;
        }
        report.complete = complete;
        for &id in &answered {
            let _ =
                self.forwarder.post_internal(id, &format!("/internal/ae/end/{round_id}"), self.prober.timeout).await;
        }
        report.took_ms = started.elapsed().as_millis() as u64;

        self.metrics.inc("anti_entropy_rounds_total", labels(&[]));
        self.metrics.add("anti_entropy_divergent_buckets_total", labels(&[]), report.divergent_buckets.len() as u64);
        self.metrics.add("anti_entropy_repaired_documents_total", labels(&[]), report.repaired as u64);
        if report.divergent_buckets.is_empty() {
            log::debug!("anti-entropy ({reason}): replicas {answered:?} agree; {} ms", report.took_ms);
        } else {
            log::info!(
                "anti-entropy ({reason}): replicas {:?} differ in {} buckets ({} listed, {} in flux); repaired {} \
                 documents, {} left for the next round; {} ms",
                report.differing_replicas,
                report.divergent_buckets.len(),
                report.listed.len(),
                report.in_flux.len(),
                report.repaired,
                report.deferred,
                report.took_ms
            );
        }
        *self.anti_entropy.last_round.lock().unwrap() = Some(report.clone());
        report
    }

    /// The digests of the members and learners of `view` that answered; `round` opens that
    /// anti-entropy round on each.
    async fn readings(&self, view: &model::wire::View, round: u64) -> Vec<Reading> {
        let asks =
            view.members.iter().chain(&view.learners).map(|&id| self.reading_of(id, Some(round), ROUND_CALL_TIMEOUT));
        futures::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// Reads the digests of the replicas in `first` again after [`FLUX_WAIT`] and takes the
    /// buckets in flux out of `divergent` (unless left [`MAX_FLUX_ROUNDS`] rounds in a row
    /// already); returns the buckets taken out.
    async fn leave_in_flux(&self, divergent: &mut Vec<u8>, first: &[(u32, Hash, Vec<Hash>)]) -> Vec<u8> {
        let flux = if divergent.is_empty() {
            Vec::new()
        } else {
            tokio::time::sleep(FLUX_WAIT).await;
            let asks = first
                .iter()
                .map(|(id, _, _)| async move { (*id, self.digests_of(*id, None, ROUND_CALL_TIMEOUT).await) });
            let again: Vec<(u32, Hash, Vec<Hash>)> = futures::future::join_all(asks)
                .await
                .into_iter()
                .filter_map(|(id, d)| d.map(|(root, buckets)| (id, root, buckets)))
                .collect();
            in_flux(divergent, first, &again)
        };
        let left = left_in_flux(&flux, &mut self.anti_entropy.flux_rounds.lock().unwrap(), MAX_FLUX_ROUNDS);
        divergent.retain(|b| !left.contains(b));
        left
    }

    /// Lists `divergent` buckets (up to the cap, the next ones each round), plans and sends
    /// the repairs. Returns whether everything planned was done.
    async fn repair_round(
        &self,
        round_id: u64,
        answered: &[u32],
        voters: &[u32],
        divergent: &[u8],
        report: &mut RoundReport,
    ) -> bool {
        let listed = self.anti_entropy.next_to_list(divergent);
        let mut complete = listed.len() == divergent.len();
        report.listed = listed.clone();

        let body = serde_json::to_vec(&model::wire::ListRequest { round: round_id, buckets: listed }).unwrap();
        let asks =
            answered.iter().map(|&id| {
                let body = body.clone();
                async move {
                    (id, self.forwarder.post_internal_json(id, "/internal/ae/list", body, ROUND_CALL_TIMEOUT).await)
                }
            });
        let mut listings: Vec<(u32, Vec<Entry>)> = Vec::new();
        for (id, r) in futures::future::join_all(asks).await {
            match r.ok().filter(|r| r.status == 200).and_then(|r| serde_json::from_slice::<Vec<Entry>>(&r.body).ok()) {
                Some(entries) => listings.push((id, entries)),
                None => {
                    report.unanswered.push(id);
                    complete = false;
                }
            }
        }
        let (repairs, deferred) = plan(&listings, voters);
        report.deferred = deferred.len();
        for d in &deferred {
            for id in &d.unsettled {
                report.unsettled.entry(*id).or_default().insert(model::digest::bucket_of(&d.key));
            }
        }
        for r in &repairs {
            for (to, _) in &r.to {
                *report.planned.entry(*to).or_default() += 1;
            }
        }
        let (repairs, cut) = within_budget(repairs, self.anti_entropy.max_repairs);
        complete &= !cut;
        let (repaired, all_sent) = self.send_repairs(repairs).await;
        report.repaired = repaired;
        complete && all_sent
    }

    /// Fetches each repair's state from its source and applies it on its targets. Returns
    /// the documents applied and whether every request succeeded.
    async fn send_repairs(&self, repairs: Vec<Repair>) -> (usize, bool) {
        let mut all_sent = true;
        let mut by_source: HashMap<u32, Vec<&Repair>> = HashMap::new();
        for r in &repairs {
            by_source.entry(r.from).or_default().push(r);
        }
        // target -> (state, the version the target listed)
        let mut outgoing: HashMap<u32, Vec<(Record, Version)>> = HashMap::new();
        for (source, rs) in by_source {
            for chunk in rs.chunks(CHUNK) {
                let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
                let body = serde_json::to_vec(&keys).unwrap();
                let fetched =
                    self.forwarder.post_internal_json(source, "/internal/ae/fetch", body, ROUND_CALL_TIMEOUT).await;
                let Some(records) = fetched
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_slice::<Vec<Record>>(&r.body).ok())
                else {
                    all_sent = false;
                    continue;
                };
                // Each document comes with its side records (model::side), which go along
                // to the targets that lack them (version zero: applied only where missing).
                let mut sides: HashMap<&str, Vec<&Record>> = HashMap::new();
                for rec in records.iter().filter(|r| model::side::is_side(&r.key) && r.hash_ok()) {
                    sides.entry(model::side::doc_of(&rec.key)).or_default().push(rec);
                }
                let records: HashMap<&str, &Record> = records.iter().map(|r| (r.key.as_str(), r)).collect();
                for r in chunk {
                    // The source may have moved on since it listed the key: the next round
                    // repairs from its newer state.
                    match records.get(r.key.as_str()) {
                        Some(rec) if rec.version == r.version && rec.hash == r.hash && rec.hash_ok() => {
                            for (to, listed) in &r.to {
                                let out = outgoing.entry(*to).or_default();
                                out.push(((*rec).clone(), *listed));
                                for side in sides.get(r.key.as_str()).into_iter().flatten() {
                                    out.push(((*side).clone(), Version::ZERO));
                                }
                            }
                        }
                        _ => all_sent = false,
                    }
                }
            }
        }
        let mut repaired = 0;
        for (target, items) in outgoing {
            for chunk in items.chunks(CHUNK) {
                let body = serde_json::to_vec(chunk).unwrap();
                let r =
                    self.forwarder.post_internal_json(target, "/internal/ae/repair", body, ROUND_CALL_TIMEOUT).await;
                match r
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
                {
                    Some(v) => repaired += v["applied"].as_u64().unwrap_or(0) as usize,
                    None => all_sent = false,
                }
            }
        }
        (repaired, all_sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anti_entropy(max_buckets: usize) -> AntiEntropy {
        let settings = crate::state::test_settings(model::topology::Service::Stock, 0);
        AntiEntropy { max_buckets, ..AntiEntropy::new(&settings) }
    }

    /// Capped rounds list the divergent buckets in turns, each round going on where the one
    /// before stopped, so a bucket is never left out for good.
    #[test]
    fn capped_rounds_take_the_divergent_buckets_in_turns() {
        let ae = anti_entropy(2);
        assert_eq!(ae.next_to_list(&[1, 5, 9]), [1, 5]);
        assert_eq!(ae.next_to_list(&[1, 5, 9]), [9, 1]);
        assert_eq!(ae.next_to_list(&[1, 5, 9]), [5, 9]);
        // Fewer divergent buckets than the cap: all of them.
        assert_eq!(ae.next_to_list(&[7]), [7]);
        assert!(ae.next_to_list(&[]).is_empty());
    }

    fn reading(id: u32, epoch: u64) -> Reading {
        (id, Hash::default(), vec![Hash::default(); BUCKETS], epoch)
    }

    #[test]
    fn a_round_votes_with_a_stale_view_when_a_replica_serves_by_a_newer_one() {
        assert!(!votes_with_stale_view(5, &[reading(0, 5), reading(1, 5)]));
        assert!(!votes_with_stale_view(5, &[reading(0, 4), reading(1, 5)]), "a replica behind learns it later");
        assert!(votes_with_stale_view(5, &[reading(0, 5), reading(1, 6)]));
        assert!(!votes_with_stale_view(5, &[]));
    }
}
