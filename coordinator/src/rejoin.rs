//! The prober (docs/design.md §4.6): the live coordinator with the lowest id probes the
//! replicas that are out of the view; one that answers is added as a learner by a committed
//! view (from then on it receives every write), catches up (a full copy streamed from a
//! full member if it is empty or differs in most buckets, then anti-entropy rounds, see
//! `crate::antientropy`), and is promoted to full member by a new view once rounds have
//! listed every divergent bucket without finding anything to repair on it. The two choices
//! (full copy or not, promote or not) are `decide::rejoin`.

use crate::state::Coordinator;
use decide::paxos;
use decide::rejoin;
use model::digest::{Digests, BUCKETS};
use model::topology::Topology;
use net::settings::CoordinatorSettings;
use std::time::Duration;

/// How long a full member may take to stream its whole copy to a learner (100k documents
/// take about a second; a million about ten).
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// The `prober` worker's settings.
pub struct Probing {
    /// This service's coordinators (`host:port`, id = index): the live one with the lowest
    /// id runs the prober.
    pub coordinators: Vec<String>,
    /// How often the prober looks at evicted replicas (setting `probe_interval_ms`).
    pub interval: Duration,
    /// How long a re-probe of a replica may take (setting `probe_timeout_ms`).
    pub timeout: Duration,
}

impl Probing {
    /// The settings of the prober of `settings.service`'s coordinators.
    pub fn new(settings: &CoordinatorSettings, topology: &Topology) -> Probing {
        Probing {
            coordinators: topology.nodes(settings.service).coordinators.clone(),
            interval: Duration::from_millis(settings.probe_interval_ms),
            timeout: Duration::from_millis(settings.probe_timeout_ms),
        }
    }
}

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
        for addr in self.prober.coordinators.iter().take(self.id as usize) {
            let r = self.peer_http.get(format!("http://{addr}/health")).timeout(self.prober.timeout).send().await;
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
                        .inc("coordinator_rejoins_total", net::metrics::labels(&[("replica", &id.to_string())])),
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
        self.forwarder.get_internal(id, "/health", self.prober.timeout).await.is_ok_and(|r| r.status == 200)
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
        let Some((root, buckets)) = self.digests_of(id, None, self.prober.timeout).await else {
            return;
        };
        let theirs = self.digests_of(source, None, self.prober.timeout).await;
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

#[cfg(test)]
mod tests {
    use crate::state::{test_settings, Coordinator};
    use model::topology::{Service, Topology};

    /// Restores an environment variable when dropped.
    struct Env(&'static str, Option<String>);

    impl Env {
        fn set(name: &'static str, value: &str) -> Env {
            let before = std::env::var(name).ok();
            // Safety: read by no other thread of this test while it runs (nextest runs each
            // test in a process of its own; `cargo test` runs them one at a time in CI's
            // fallback).
            unsafe { std::env::set_var(name, value) };
            Env(name, before)
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            match &self.1 {
                Some(v) => unsafe { std::env::set_var(self.0, v) },
                None => unsafe { std::env::remove_var(self.0) },
            }
        }
    }

    /// Which coordinator leads is asked of the others directly, never through a proxy the
    /// environment names (one there would make a coordinator think the one before it dead,
    /// and both would lead).
    #[actix_web::test]
    async fn a_proxy_in_the_environment_does_not_decide_who_leads() {
        let _proxy = Env::set("HTTP_PROXY", "http://127.0.0.1:9");
        let _lower = Env::set("http_proxy", "http://127.0.0.1:9");
        // Coordinator 0, alive: it answers its health check.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().route("/health", actix_web::web::get().to(|| async { "ok" }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let topology = Topology::local(1, 2, &mut (1..));
        let mut second = Coordinator::new(&test_settings(Service::Stock, 1), &topology);
        second.prober.coordinators = vec![addr, "127.0.0.1:1".into()];
        assert!(!second.leads().await, "coordinator 0 answers: coordinator 1 does not lead");
        handle.stop(false).await;
    }
}
