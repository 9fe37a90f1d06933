//! The prober (DESIGN section 4): the live coordinator with the lowest id probes the
//! replicas that are out of the view; one that answers is added as a learner by a committed
//! view (from then on it receives every write), catches up from a full member's copy
//! (a version-guarded stream: it keeps whatever is newer), and is promoted to full member by
//! a new view once its digest equals the member's.

use crate::state::Coordinator;
use common::paxos;
use std::sync::Arc;
use std::time::Duration;

/// How long a full member may take to stream its whole copy to a learner (100k documents
/// take about a second; a million about ten).
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the learner's digest is compared with the member's after the catch-up, and the
/// pause between comparisons: writes in flight during the comparison make the two differ
/// for a moment; a learner still different after that is caught up again next round.
const DIGEST_CHECKS: u32 = 10;
const DIGEST_PAUSE: Duration = Duration::from_millis(200);

impl Coordinator {
    /// Runs the prober until the process stops.
    pub async fn prober(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the first round comes one interval after start.
        tick.tick().await;
        loop {
            tick.tick().await;
            // After a pause, the first tick comes at once: every decision below starts from
            // fresh probes, never from what was known before the pause.
            if self.leads().await {
                self.probe_round().await;
            }
        }
    }

    /// Whether this is the live coordinator with the lowest id.
    async fn leads(&self) -> bool {
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

    async fn answers(&self, id: u32) -> bool {
        self.forwarder.get_internal(id, "/health", self.probe_timeout).await.is_ok_and(|r| r.status == 200)
    }

    /// Streams a full member's copy to learner `id`, then promotes it if the digests match.
    async fn catch_up(&self, id: u32) {
        let n = self.forwarder.replicas();
        for source in self.view.get().members {
            match self.forwarder.post_internal(source, &format!("/internal/push/{id}"), PUSH_TIMEOUT).await {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    log::warn!(
                        "replica {source} could not catch up replica {id}: {}",
                        String::from_utf8_lossy(&r.body)
                    );
                    continue;
                }
                Err(e) => {
                    log::warn!("replica {source} could not catch up replica {id}: {e}");
                    continue;
                }
            }
            for _ in 0..DIGEST_CHECKS {
                let (a, b) = (self.root_of(source).await, self.root_of(id).await);
                if a.is_some() && a == b {
                    match self.change_view(&format!("promote replica {id}"), |v| paxos::promote(v, id, n)).await {
                        Ok(v) if v.members.contains(&id) => log::info!("replica {id} is a full member again"),
                        Ok(_) => {}
                        Err(e) => log::warn!("promoting replica {id} failed: {e}"),
                    }
                    return;
                }
                tokio::time::sleep(DIGEST_PAUSE).await;
            }
            log::info!("replica {id} still differs from replica {source} after catching up; trying again later");
            return;
        }
    }

    async fn root_of(&self, id: u32) -> Option<String> {
        let r = self.forwarder.get_internal(id, "/internal/digest", self.probe_timeout).await.ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["root"].as_str().map(str::to_string)
    }
}
