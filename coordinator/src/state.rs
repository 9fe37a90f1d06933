//! The state every request handler of a coordinator shares, and the two forwarding loops:
//! one key to its primary ([`Coordinator::forward_keyed`]) and a batch_init split over the
//! primaries ([`Coordinator::forward_batch`]). Both route by the current view, adopt the view a
//! misdirected rejection carries and retry with the same request id, a bounded number of times.

use crate::batch::{batch_keys, combine, partition, Part};
use crate::error::CoordError;
use crate::forward::{classify, Forwarder, Outcome, Outgoing, ReplicaReply, SendError, NO_LEASE_REASON};
use crate::view::ViewCell;
use actix_web::web::Bytes;
use model::routing::Route;
use model::topology::{Service, Topology};
use model::wire::{BatchKeys, View};
use net::metrics::{labels, Metrics};
use net::settings::CoordinatorSettings;
use std::time::Duration;

/// How many times a request rejected as misdirected is retried at the new primary. A view
/// change moves a key once; more than a few rejections in a row mean the replicas disagree
/// about the view, which waiting here will not fix.
pub const MISDIRECTED_RETRIES: u32 = 3;

/// Times a request refused by a primary without a read lease is asked again, and the pause
/// before each: 15 x 200 ms is three lease periods at the default `lease_ms` (1 s), by which
/// a view removing the primary has committed (its acceptors wait out one lease period) or
/// the primary holds its lease again.
const NO_LEASE_WAITS: u32 = 15;
const NO_LEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Pause before a retry whose rejection taught us no newer view (the replica is behind us):
/// long enough for it to learn the view, short against a client's patience.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Longest wait for a replica's view at start: a replica that is up answers in milliseconds;
/// one that is down must not hold up the coordinator (it keeps the initial view, and every
/// misdirected rejection teaches it the current one).
pub const STARTUP_VIEW_TIMEOUT: Duration = Duration::from_secs(1);

/// A public request, as the forwarding loops pass it on.
#[derive(Clone, Debug)]
pub struct Forward<'a> {
    /// The matched route's name (metrics and logs).
    pub route: &'static str,
    /// GET or POST.
    pub method: reqwest::Method,
    /// The original path and query, forwarded unchanged.
    pub path_and_query: &'a str,
    /// The gateway's request id (or one we generated).
    pub request_id: &'a str,
    /// The request body (public requests have none but it is passed on as it came).
    pub body: Bytes,
    /// The request's content type, if any.
    pub content_type: Option<&'a str>,
    /// Longest wait for the replica's answer.
    pub timeout: Duration,
}

/// How long the forwarding of a public request may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// An ordinary request.
    pub request: Duration,
    /// A checkout or batch_init.
    pub long: Duration,
}

/// One coordinator: what it routes for, what its handlers and workers share (the view, the
/// client to the replicas, the metrics), and each worker's own state: the routing's
/// timeouts, the view changes', the prober's, the anti-entropy's and the cluster page's.
pub struct Coordinator {
    /// The service it routes for.
    pub service: Service,
    /// Its id (index in the topology's coordinator list).
    pub id: u32,
    /// The cluster secret internal routes require.
    pub secret: String,
    /// Replica addresses (`host:port`), id = index.
    pub replica_addrs: Vec<String>,
    /// The view it routes by.
    pub view: ViewCell,
    /// The pooled client to the replicas.
    pub forwarder: Forwarder,
    /// This process's metrics.
    pub metrics: Metrics,
    /// Ends the internal connections it serves ([`net::rpc`]) when it shuts down.
    pub closing: net::rpc::Closing,
    /// How long the forwarding of a public request may take.
    pub timeouts: Timeouts,
    /// The view changes' state ([`crate::membership`]).
    pub changes: crate::membership::Changes,
    /// The `prober` worker's settings ([`crate::rejoin`]).
    pub prober: crate::rejoin::Probing,
    /// The `anti-entropy` worker's settings and state.
    pub anti_entropy: crate::antientropy::AntiEntropy,
    /// The other services' coordinators (`host:port`, id = index), in the order of
    /// [`Service::ALL`]: the cluster page ([`crate::overview`]) asks them for their status.
    pub other_services: Vec<(Service, Vec<String>)>,
    /// The pooled client of requests to other coordinators: this service's, to tell which
    /// leads (bounded by the probe timeout), and the other services', for the cluster page
    /// (bounded by [`crate::overview::PEER_TIMEOUT`]).
    pub peer_http: reqwest::Client,
}

impl Coordinator {
    /// A coordinator for `settings.service`, starting from the initial view of the topology's
    /// replicas.
    pub fn new(settings: &CoordinatorSettings, topology: &Topology) -> Coordinator {
        let replica_addrs = topology.nodes(settings.service).replicas.clone();
        Coordinator {
            service: settings.service,
            id: settings.id,
            secret: settings.secret.clone(),
            view: ViewCell::new(replica_addrs.len() as u32),
            forwarder: Forwarder::new(&replica_addrs, &settings.secret),
            replica_addrs,
            metrics: Metrics::new(),
            closing: Default::default(),
            timeouts: Timeouts {
                request: Duration::from_millis(settings.request_timeout_ms),
                long: Duration::from_millis(settings.long_timeout_ms),
            },
            changes: crate::membership::Changes::new(settings),
            prober: crate::rejoin::Probing::new(settings, topology),
            anti_entropy: crate::antientropy::AntiEntropy::new(settings),
            other_services: Service::ALL
                .into_iter()
                .filter(|s| *s != settings.service)
                .map(|s| (s, topology.nodes(s).coordinators.clone()))
                .collect(),
            peer_http: net::client::internal_http(crate::overview::PEER_TIMEOUT, &settings.secret),
        }
    }

    /// The timeout for a request on `route`.
    pub fn timeout_for(&self, route: &Route) -> Duration {
        // A checkout waits for its saga, a batch_init writes many keys (`Route::long`).
        if route.long {
            self.timeouts.long
        } else {
            self.timeouts.request
        }
    }

    /// Asks every replica for its view and adopts the newest; replicas that do not answer are
    /// skipped (the view stays if none does). Returns whether the view changed.
    pub async fn learn_view(&self) -> bool {
        let before = self.view.get().epoch;
        let asks = (0..self.forwarder.replicas()).map(|id| async move {
            (id, self.forwarder.get_internal(id, "/internal/view", STARTUP_VIEW_TIMEOUT).await)
        });
        for (id, result) in futures::future::join_all(asks).await {
            match result {
                Ok(r) if r.status == 200 => match serde_json::from_slice::<View>(&r.body) {
                    Ok(view) => {
                        self.view.offer(view);
                    }
                    Err(e) => log::warn!("replica {id} sent an unreadable view: {e}"),
                },
                Ok(r) => log::warn!("replica {id} answered {} for its view", r.status),
                Err(e) => log::info!("replica {id} did not tell its view: {e}"),
            }
        }
        let view = self.view.get();
        if view.epoch != before {
            log::info!(
                "routing by view epoch {}: members {:?}, learners {:?}",
                view.epoch,
                view.members,
                view.learners
            );
        }
        view.epoch != before
    }

    /// Forwards a request to the primary of `key`, sending `minted` as the minted key of a
    /// create call; follows misdirected rejections to the new primary.
    pub async fn forward_keyed(
        &self,
        req: &Forward<'_>,
        key: &str,
        minted: Option<&str>,
    ) -> Result<ReplicaReply, CoordError> {
        let mut retries = 0;
        let mut resent = false;
        let mut lease_waits = 0;
        loop {
            let (epoch, primary) = self.view.route(key);
            let primary = primary.ok_or(CoordError::NoPrimary)?;
            let out = self.outgoing(req, epoch, minted, req.body.clone(), req.content_type);
            let result = self.forwarder.send(primary, &out).await;
            let broken = matches!(result, Err(SendError::Broken(_)));
            match classify(result) {
                Outcome::Answer(reply) => return Ok(reply),
                Outcome::Unavailable(reason) if broken && !resent => {
                    // The connection broke under the request (a pooled connection the
                    // replica was closing, say): send it once more, with the same request
                    // id, which a replica that did get the first one answers from its log.
                    log::info!("{} {}: resending to replica {primary}: {reason}", req.request_id, req.route);
                    resent = true;
                }
                Outcome::Unavailable(reason) if reason == NO_LEASE_REASON && lease_waits < NO_LEASE_WAITS => {
                    // The primary's peers stopped granting it reads: a view removing it waits
                    // for its lease to run out (then routes the key elsewhere), or it lost
                    // them for a moment (and gets the lease back). Within a few lease periods
                    // one of the two holds: ask again under the newest view.
                    lease_waits += 1;
                    tokio::time::sleep(NO_LEASE_PAUSE).await;
                    self.learn_view().await;
                }
                Outcome::Unavailable(reason) => {
                    self.note_unavailable(primary, req, &reason);
                    // The primary may be out of a newer view: one adopted while the request
                    // was on its way (another request evicted it), one we have not heard of
                    // (ask the replicas), or one this failure leads to. Retry at the key's
                    // new primary with the same request id.
                    // Or it answers again (killed and restarted with its data, say): send
                    // the request to it again.
                    let moved = || self.view.route(key).1 != Some(primary);
                    if retries < MISDIRECTED_RETRIES
                        && (moved()
                            || self.learn_view().await
                            || self.evict_if_dead(primary).await
                            || self.answers(primary).await)
                    {
                        retries += 1;
                        continue;
                    }
                    return Err(CoordError::Unavailable { replica: primary, reason });
                }
                Outcome::Misdirected(offered) => {
                    if retries == MISDIRECTED_RETRIES {
                        log::warn!("{} {}: still misdirected after {retries} retries", req.request_id, req.route);
                        return Err(CoordError::Misdirected(retries));
                    }
                    retries += 1;
                    self.retry_after(req, offered).await;
                }
            }
        }
    }

    /// Forwards a batch_init of `n` keys: each primary gets the keys it owns, all at once.
    /// Keys rejected as misdirected are split again by the adopted view and resent.
    pub async fn forward_batch(&self, req: &Forward<'_>, n: u64) -> Result<ReplicaReply, CoordError> {
        // The keys still to send; `None` until the first round builds "0".."n-1".
        let mut pending: Option<Vec<String>> = None;
        let mut done = Vec::new();
        let mut retries = 0;
        loop {
            let view = self.view.get();
            let routed = view.clone();
            let keys = pending.take();
            // Building and hashing up to a million keys takes a while: off the request threads.
            let parts = tokio::task::spawn_blocking(move || partition(keys.unwrap_or_else(|| batch_keys(n)), &routed))
                .await
                .map_err(|e| CoordError::Internal(format!("batch partition: {e}")))?
                .ok_or(CoordError::NoPrimary)?;
            let sends = parts.into_iter().map(|(id, keys)| {
                let view = &view;
                async move {
                    let batch = BatchKeys { keys };
                    let body = Bytes::from(serde_json::to_vec(&batch).expect("keys serialize"));
                    let out = self.outgoing(req, view.epoch, None, body, Some("application/json"));
                    (id, batch.keys, classify(self.forwarder.send(id, &out).await))
                }
            });
            let mut misdirected = Vec::new();
            let mut newest: Option<View> = None;
            for (id, keys, outcome) in futures::future::join_all(sends).await {
                match outcome {
                    Outcome::Answer(reply) => done.push(Part::Answered(reply)),
                    Outcome::Unavailable(reason) => {
                        self.note_unavailable(id, req, &reason);
                        done.push(Part::Unavailable(format!("replica {id}: {reason}")));
                    }
                    Outcome::Misdirected(offered) => {
                        misdirected.extend(keys);
                        if newest.as_ref().is_none_or(|v| offered.epoch > v.epoch) {
                            newest = Some(offered);
                        }
                    }
                }
            }
            let Some(offered) = newest else { break };
            if retries == MISDIRECTED_RETRIES {
                log::warn!("{} {}: batch still misdirected after {retries} retries", req.request_id, req.route);
                done.push(Part::Unavailable(format!("keys still misdirected after {retries} retries")));
                break;
            }
            retries += 1;
            self.retry_after(req, offered).await;
            pending = Some(misdirected);
        }
        match combine(done) {
            Some(Part::Answered(reply)) => Ok(reply),
            Some(Part::Unavailable(reason)) => Err(CoordError::Batch(reason)),
            None => Err(CoordError::Internal("batch with no parts".into())),
        }
    }

    fn outgoing<'a>(
        &self,
        req: &'a Forward<'a>,
        epoch: u64,
        minted: Option<&'a str>,
        body: Bytes,
        content_type: Option<&'a str>,
    ) -> Outgoing<'a> {
        Outgoing {
            method: req.method.clone(),
            path_and_query: req.path_and_query,
            request_id: req.request_id,
            epoch,
            minted,
            body,
            content_type,
            timeout: req.timeout,
        }
    }

    /// Adopts the view a rejection carried, counts the retry, and waits a moment if the view
    /// taught us nothing new.
    async fn retry_after(&self, req: &Forward<'_>, offered: View) {
        self.metrics.inc("coordinator_retries_total", labels(&[("route", req.route), ("reason", "misdirected")]));
        log::debug!("{} {}: misdirected, retrying under epoch {}", req.request_id, req.route, offered.epoch);
        if !self.view.offer(offered) {
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }

    fn note_unavailable(&self, replica: u32, req: &Forward<'_>, reason: &str) {
        let id = replica.to_string();
        self.metrics.inc("coordinator_replica_unavailable_total", labels(&[("replica", &id)]));
        log::warn!("{} {}: replica {replica} unavailable: {reason}", req.request_id, req.route);
    }
}

/// A coordinator's settings for tests: short request timeouts, and the prober and
/// anti-entropy rounds out of the way (an hour apart).
#[cfg(test)]
pub(crate) fn test_settings(service: Service, id: u32) -> CoordinatorSettings {
    CoordinatorSettings {
        service,
        id,
        topology: "unused".into(),
        listen: None,
        secret: "s3cret".into(),
        workers: 1,
        request_timeout_ms: 100,
        long_timeout_ms: 100,
        probe_interval_ms: 3_600_000,
        probe_timeout_ms: 500,
        paxos_timeout_ms: 3000,
        anti_entropy_interval_ms: 3_600_000,
        anti_entropy_max_buckets: 64,
        anti_entropy_max_repairs: 20000,
    }
}
