//! The prober (docs/design.md §4.6): the live coordinator with the lowest id probes the
//! replicas that are out of the view; one that answers is added as a learner by a committed
//! view (from then on it receives every write), catches up (a full copy streamed from a
//! full member if it is empty or differs in most buckets, then anti-entropy rounds, see
//! `crate::antientropy`), and is promoted to full member by a new view once rounds have
//! listed every divergent bucket without finding anything to repair on it. The two choices
//! (full copy or not, promote or not) are `decide::rejoin`.

use crate::state::Coordinator;
use common::digest::{Digests, BUCKETS};
use common::paxos;
use decide::rejoin;
use std::time::Duration;

/// How long a full member may take to stream its whole copy to a learner (100k documents
/// take about a second; a million about ten).
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

impl Coordinator {
    /// One round of the `prober` worker (every `probe_interval_ms`, the first one interval
    /// after the start): the lowest-id live coordinator probes and re-joins the replicas out
    /// of the view, the others learn the current view.
    pub async fn prober_round(&self) {
        // After a pause, the next round comes at once: every decision below starts from
        // fresh probes, never from what was known before the pause.
        if self.leads().await {
            self.probe_round().await;
        } else {
            // Every coordinator learns a newer view within an interval, with or without
            // requests to learn it from (its status page tells the current view).
            self.learn_view().await;
        }
    }

    /// Whether this is the live coordinator with the lowest id.
    pub(crate) async fn leads(&self) -> bool {
        let http = reqwest::Client::new();
        for addr in self.coordinator_addrs.iter().take(self.id as usize) {
            let r = http.get(format!("http://{addr}/health")).timeout(self.probe_timeout).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return false;
            }
        }
        true
    }

    async fn probe_round(&self) {
        self.learn_view().await;
        let n = self.forwarder.replicas();
        for id in 0..n {
            let view = self.view.get();
            if view.members.contains(&id) {
                continue;
            }
            if !view.learners.contains(&id) {
                if !self.answers(id).await {
                    continue;
                }
                let added = self.change_view(&format!("re-join replica {id}"), |v| paxos::add_learner(v, id, n)).await;
                match added {
                    Ok(v) if v.learners.contains(&id) => self
                        .metrics
                        .inc("coordinator_rejoins_total", common::metrics::labels(&[("replica", &id.to_string())])),
                    Ok(_) => continue,
                    Err(e) => {
                        log::warn!("adding replica {id} as a learner failed: {e}");
                        continue;
                    }
                }
            }
            self.catch_up(id).await;
        }
    }

    /// Anti-entropy rounds a catch-up may take before the learner is left for the next
    /// probe: one to repair, then enough clean rounds to list all 256 buckets under the cap,
    /// and one spare for a write racing a round.
    fn catch_up_rounds(&self) -> usize {
        2 + BUCKETS.div_ceil(self.anti_entropy.max_buckets)
    }

    /// Whether replica `id` answers `/health` within the probe timeout.
    pub(crate) async fn answers(&self, id: u32) -> bool {
        self.forwarder.get_internal(id, "/health", self.probe_timeout).await.is_ok_and(|r| r.status == 200)
    }

    /// Brings learner `id` up to date, then promotes it: a learner that is empty or differs
    /// from the majority's copy in most buckets first gets a full copy streamed from a full
    /// member; then anti-entropy rounds repair what still differs, and once rounds have
    /// listed every divergent bucket without planning a repair on it, it becomes a full member.
    async fn catch_up(&self, id: u32) {
        let n = self.forwarder.replicas();
        let Some(source) = self.view.get().members.first().copied() else {
            return;
        };
        let Some((root, buckets)) = self.digests_of(id, None, self.probe_timeout).await else {
            return;
        };
        let theirs = self.digests_of(source, None, self.probe_timeout).await;
        let differing = theirs.map(|(_, theirs)| buckets.iter().zip(&theirs).filter(|(a, b)| a != b).count());
        if rejoin::needs_full_copy(root == Digests::default().root(), differing, BUCKETS) {
            match self.forwarder.post_internal(source, &format!("/internal/push/{id}"), PUSH_TIMEOUT).await {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    log::warn!("replica {source} could not copy to replica {id}: {}", String::from_utf8_lossy(&r.body));
                    return;
                }
                Err(e) => {
                    log::warn!("replica {source} could not copy to replica {id}: {e}");
                    return;
                }
            }
        }
        let mut promotion = rejoin::Promotion::default();
        for _ in 0..self.catch_up_rounds() {
            let report = self.anti_entropy_round(&format!("re-join of replica {id}")).await;
            if promotion.after_round(&report, id) {
                match self.change_view(&format!("promote replica {id}"), |v| paxos::promote(v, id, n)).await {
                    Ok(v) if v.members.contains(&id) => log::info!("replica {id} is a full member again"),
                    Ok(_) => {}
                    Err(e) => log::warn!("promoting replica {id} failed: {e}"),
                }
                return;
            }
        }
        log::info!(
            "replica {id} still differs after {} anti-entropy rounds; trying again later",
            self.catch_up_rounds()
        );
    }
}
