//! Changing the service's view (docs/design.md §4.2): one Paxos proposer per change, run over
//! the replicas as acceptors with the pure protocol of `decide::paxos`. A view is routed by
//! only after a majority accepted it, and every replica is told the decision.

use crate::error::CoordError;
use crate::forward::SendError;
use crate::state::Coordinator;
use decide::paxos::{self, next_ballot, Ballot, Proposer, ProposerStep, Request};
use futures::stream::{FuturesUnordered, StreamExt};
use model::wire::View;
use std::future::Future;
use std::time::Duration;

/// Rounds one change may take before it gives up (each lost to a competing proposal or
/// short of a majority); the caller may try again later.
const MAX_ROUNDS: u32 = 8;
/// Pause after a lost round, times the round number, so two dueling coordinators drift apart.
const ROUND_BACKOFF: Duration = Duration::from_millis(30);

/// How one round ended.
enum Round {
    Chosen(View),
    Retry(Ballot),
    Adopt(View),
    NoQuorum,
}

/// The state of the view changes a coordinator proposes.
pub struct Changes {
    /// The highest ballot this coordinator has used or seen; held while it changes the view,
    /// so its own changes run one at a time.
    ballot: tokio::sync::Mutex<Ballot>,
    /// How long a replica may take to answer a Paxos message (setting `paxos_timeout_ms`).
    pub paxos_timeout: Duration,
}

impl Changes {
    /// No ballot used or seen yet.
    pub fn new(settings: &net::settings::CoordinatorSettings) -> Changes {
        Changes {
            ballot: tokio::sync::Mutex::new(Ballot::ZERO),
            paxos_timeout: Duration::from_millis(settings.paxos_timeout_ms),
        }
    }
}

impl Coordinator {
    /// Changes the view with `change` (from `decide::paxos`: evict, add_learner, promote),
    /// applied to the newest view; `change` returning `None` means there is nothing to do
    /// (already done, or not allowed). Returns the view routed by afterwards.
    pub async fn change_view(&self, what: &str, change: impl Fn(&View) -> Option<View>) -> Result<View, CoordError> {
        let mut seen = self.changes.ballot.lock().await;
        let n = self.forwarder.replicas();
        for round in 1..=MAX_ROUNDS {
            let base = self.view.get();
            let Some(proposal) = change(&base) else {
                return Ok(base);
            };
            let ballot = next_ballot(*seen, self.id);
            *seen = ballot;
            let mut proposer = Proposer::new(base.epoch + 1, ballot, proposal, n)
                .map_err(|e| CoordError::Internal(format!("invalid proposal for {what}: {e:?}")))?;
            match self.round(&mut proposer, &base).await {
                Round::Chosen(view) => {
                    self.metrics.inc("coordinator_view_changes_total", net::metrics::labels(&[("change", what)]));
                    log::info!(
                        "{what}: view {} chosen: members {:?}, learners {:?}",
                        view.epoch,
                        view.members,
                        view.learners
                    );
                    self.commit(&view).await;
                    self.view.offer_chosen(view.clone(), what);
                    // A round may choose another proposer's view (one a majority had already
                    // accepted): then this change is still to be made, on top of it.
                    if done_by(&view, &change) {
                        return Ok(view);
                    }
                    log::info!("{what}: the view chosen was another proposal; proposing again on top of it");
                }
                Round::Adopt(view) => {
                    self.view.offer(view);
                }
                Round::Retry(higher) => {
                    *seen = (*seen).max(higher);
                    tokio::time::sleep(ROUND_BACKOFF * round).await;
                }
                Round::NoQuorum => {
                    log::warn!("{what}: round {round} reached no majority");
                    tokio::time::sleep(ROUND_BACKOFF * round).await;
                }
            }
        }
        Err(CoordError::Internal(format!("{what}: no view decided after {MAX_ROUNDS} rounds")))
    }

    /// Re-probes replica `id` after a failure was seen; if it does not answer either, evicts
    /// it by a committed view. Returns whether `id` is out of the view afterwards. A view
    /// keeps a majority of the replicas: an eviction below that is not made (docs/design.md §4.1),
    /// and writes then fail with 503 instead.
    pub async fn evict_if_dead(&self, id: u32) -> bool {
        if !self.view.get().members.contains(&id) && !self.view.get().learners.contains(&id) {
            return true;
        }
        if self.answers(id).await {
            return false;
        }
        let n = self.forwarder.replicas();
        match self.change_view(&format!("evict replica {id} (no answer)"), |v| paxos::evict(v, id, n)).await {
            Ok(view) => {
                let out = !view.members.contains(&id) && !view.learners.contains(&id);
                if out {
                    self.metrics
                        .inc("coordinator_evictions_total", net::metrics::labels(&[("replica", &id.to_string())]));
                }
                out
            }
            Err(e) => {
                log::warn!("evicting replica {id} failed: {e}");
                false
            }
        }
    }

    /// Sends `request` to every replica at once; the replies as they come, by replica. A
    /// replica that does not answer only delays the end of the stream, not the replies
    /// before it, so a round is decided by the first majority of answers.
    fn broadcast<'a>(
        &'a self,
        request: &'a Request,
    ) -> FuturesUnordered<impl Future<Output = (u32, Result<paxos::Reply, SendError>)> + 'a> {
        (0..self.forwarder.replicas())
            .map(|id| async move { (id, self.forwarder.paxos(id, request, self.changes.paxos_timeout).await) })
            .collect()
    }

    /// Tells every replica that `view` was chosen; returns once a majority acknowledged (or
    /// all answered), leaving the sends to slow replicas running in the background.
    async fn commit(&self, view: &View) {
        let n = self.forwarder.replicas();
        let request = Request::Commit { view: view.clone() };
        let (tx, mut rx) = tokio::sync::mpsc::channel(n as usize);
        for id in 0..n {
            let (forwarder, request, tx) = (self.forwarder.clone(), request.clone(), tx.clone());
            let timeout = self.changes.paxos_timeout;
            tokio::spawn(async move {
                let _ = tx.send(forwarder.paxos(id, &request, timeout).await.is_ok()).await;
            });
        }
        drop(tx);
        let mut acked = 0;
        while let Some(ok) = rx.recv().await {
            acked += usize::from(ok);
            if acked >= paxos::majority(n) {
                break;
            }
        }
    }

    /// One proposer round: prepare, then accept.
    async fn round(&self, p: &mut Proposer, base: &View) -> Round {
        for phase in [Phase::Prepare, Phase::Accept] {
            let request = p.request();
            let mut moved_on = false;
            let mut replies = self.broadcast(&request);
            while let Some((id, reply)) = replies.next().await {
                let Ok(reply) = reply else { continue };
                let mut step = phase.feed(p, id, &reply);
                if let ProposerStep::CatchUp(r) = step {
                    // The replica missed the view the proposal builds on: tell it, ask again.
                    let _ = self
                        .forwarder
                        .paxos(r, &Request::Commit { view: base.clone() }, self.changes.paxos_timeout)
                        .await;
                    step = match self.forwarder.paxos(r, &request, self.changes.paxos_timeout).await {
                        Ok(reply) => phase.feed(p, r, &reply),
                        Err(_) => ProposerStep::Wait,
                    };
                }
                match step {
                    ProposerStep::Wait | ProposerStep::CatchUp(_) => {}
                    ProposerStep::SendAccept(_) => {
                        moved_on = true;
                        break;
                    }
                    ProposerStep::Chosen(view) => return Round::Chosen(view),
                    ProposerStep::Retry { higher_than } => return Round::Retry(higher_than),
                    ProposerStep::Adopt(view) => return Round::Adopt(view),
                }
            }
            if !moved_on {
                return Round::NoQuorum;
            }
        }
        Round::NoQuorum
    }
}

/// Whether a chosen `view` carries the change (`change` finds nothing left to do on it): a
/// round that chose another proposer's view, accepted by a majority before, did not make it.
fn done_by(view: &View, change: impl Fn(&View) -> Option<View>) -> bool {
    change(view).is_none()
}

/// The two phases of a round.
#[derive(Clone, Copy)]
enum Phase {
    Prepare,
    Accept,
}

impl Phase {
    fn feed(self, p: &mut Proposer, from: u32, reply: &paxos::Reply) -> ProposerStep {
        match self {
            Phase::Prepare => p.on_promise(from, reply),
            Phase::Accept => p.on_accepted(from, reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_done_only_by_a_chosen_view_that_carries_it() {
        let base = View { epoch: 4, members: vec![0, 1, 2, 3, 4], learners: vec![] };
        let evict_2 = |v: &View| paxos::evict(v, 2, 5);
        let ours = evict_2(&base).unwrap();
        assert!(done_by(&ours, evict_2), "our own proposal");
        // Another coordinator's proposal, accepted by a majority first, evicted replica 1.
        let theirs = paxos::evict(&base, 1, 5).unwrap();
        assert!(!done_by(&theirs, evict_2), "replica 2 is still a member: propose again");
        // Another proposal that did the same change.
        assert!(done_by(&View { epoch: 6, ..ours.clone() }, evict_2));
    }
}
