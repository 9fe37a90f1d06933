//! One replica node's place in its service: who it is, the view it holds, its store, and
//! the fan-out of written states to its peers.
//!
//! The primary of a key applies a write locally as a conditional put, then sends the
//! resulting state (record with version) to every other full member and learner of the view
//! and answers only after all of them acknowledged. Peers apply a state only if its version
//! is higher than what they hold.

use crate::fanout::{Encoded, PeerLink, SendError, MAX_BATCH_RECORDS};
use crate::health::Health;
pub use crate::membership::{Membership, Misdirected};
use decide::fanout::{self, AfterRefusals};
use decide::lease::Leases;
use decide::paxos::{self, AcceptorState};
use model::topology::Service;
use model::version::Version;
use model::wire::View;
use net::worker::{Next, Schedule, Workers};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::{DynStore, Expect, Put, Record, StoreError};

/// A node's timeouts and its workers' intervals; the replica settings of the same names
/// (`fanout_timeout_ms`, `suspect_timeout_ms`, `lease_ms`, ...) set them, and the defaults
/// are theirs.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long a primary waits for a peer's acknowledgement of one fan-out request (at most
    /// `MAX_BATCH_RECORDS` states): a healthy peer parses and group-commits one in a few
    /// milliseconds, so 2 s means the peer is down, paused or starved.
    pub fanout: Duration,
    /// How long a primary waits for a coordinator to settle a suspicion: a re-probe (0.5 s)
    /// and, if the peer is gone, a Paxos round (the acceptors first wait out the read leases
    /// they granted it: 1.1 s).
    pub suspect: Duration,
    /// The read lease (`decide::lease`): well under the time it takes to evict a replica that
    /// stopped answering (a fan-out timeout plus a re-probe).
    pub lease: Duration,
    /// How long the record of a request id is kept beside the document it wrote
    /// ([`DEFAULT_REQUEST_TTL`]).
    pub request_ttl: Duration,
    /// How often expired side records are dropped from the store.
    pub prune: Duration,
    /// How often the store is checked for having stopped for good (fail-stop,
    /// docs/design.md §7.4).
    pub store_watch: Duration,
    /// The first pause between rounds of membership queries after an empty restart; it
    /// doubles after each round that learns nothing, to at most [`RECOVERY_MAX_PAUSES`] times
    /// this.
    pub recovery_pause: Duration,
    /// How often the order service resumes checkouts whose driver stopped on a failure.
    pub resume_retry: Duration,
    /// How often a ledger replica asks the order replicas for the watermark below which its
    /// transaction records may go.
    pub horizon: Duration,
}

impl Timings {
    /// A replica's timeouts, as its settings give them.
    pub fn of(settings: &net::settings::ReplicaSettings) -> Timings {
        let ms = std::time::Duration::from_millis;
        Timings {
            fanout: ms(settings.fanout_timeout_ms),
            suspect: ms(settings.suspect_timeout_ms),
            lease: ms(settings.lease_ms),
            request_ttl: ms(settings.request_ttl_ms),
            prune: ms(settings.prune_interval_ms),
            store_watch: ms(settings.store_watch_ms),
            recovery_pause: ms(settings.recovery_pause_ms),
            resume_retry: ms(settings.resume_retry_ms),
            horizon: ms(settings.horizon_interval_ms),
        }
    }
}

/// How long a request id's record is kept by default: longer than any retry path of the
/// cluster can deliver a repeat. nginx retries a request on the other coordinator once
/// (`proxy_next_upstream_tries 2`) after at most `proxy_read_timeout` (65 s), and each
/// coordinator retries a write at the key's new primary within its own long timeout (60 s),
/// so a repeat arrives within about 130 s of the first try; 180 s leaves a margin. A client
/// that retries later with its own key needs a longer setting (`request_ttl_ms`).
pub const DEFAULT_REQUEST_TTL: Duration = Duration::from_secs(180);

/// How often [`Node::ensure_replicated`] sends a key's state again after taking a peer's
/// newer one in its place.
const CONFLICT_RESENDS: u32 = 2;

/// The meta value a replica writes to find out whether its store takes writes again.
const STORE_PROBE: &str = "store-probe";

/// The size of that value.
const STORE_PROBE_BYTES: usize = 64 << 10;

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            fanout: Duration::from_secs(2),
            suspect: Duration::from_secs(5),
            lease: Duration::from_secs(1),
            request_ttl: DEFAULT_REQUEST_TTL,
            prune: Duration::from_secs(5),
            store_watch: Duration::from_secs(1),
            recovery_pause: Duration::from_millis(100),
            resume_retry: Duration::from_secs(1),
            horizon: Duration::from_secs(1),
        }
    }
}

/// How often a fan-out is sent, again under a newer view a peer reported or again to a peer
/// that was only slow, before the write fails. One replica killed and restarted at once
/// brings three views in a second (its eviction, its re-join as a learner, its promotion),
/// and the nemesis saw a fan-out meet all three (seed 20261202: 'peers did not acknowledge
/// after 3 tries'); eight covers two such restarts, and still ends a write that meets a view
/// change after every send.
const STALE_RESENDS: usize = 8;

/// The longest pause between rounds of membership queries after an empty restart, in
/// [`Timings::recovery_pause`]s (2 s by default): the others may all be restarting too.
pub const RECOVERY_MAX_PAUSES: u32 = 20;

/// The state of the `recovery` worker between its rounds.
struct Recovering {
    /// The replies so far (made in the first round, which reads how many replicas there are).
    recovery: Option<paxos::Recovery>,
    /// The pause after the next round that learns nothing.
    pause: Duration,
}

/// Why a node could not complete a write.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node's own store failed: its own failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A conditional put found another version than the one read under the key's lock:
    /// another writer touched the key, which the view protocol is there to prevent.
    #[error("write conflict on {0}")]
    Conflict(String),
    /// The write could not reach the replicas it must reach before it is acknowledged.
    #[error("replication unavailable: {0}")]
    Unavailable(String),
    /// The request was not for this node: stale epoch or not the key's primary.
    #[error("misdirected: {}", .0.reason)]
    Misdirected(Misdirected),
    /// A peer holds newer states of keys than the ones it was sent (the sender is behind:
    /// restarted from older data, or deposed): the states it holds. Not acknowledged.
    #[error("a peer holds newer states of {} keys", .0.len())]
    Newer(Vec<Record>),
}

/// Whether a peer holding `held` must refuse `sent` as older: it holds a higher version, or
/// another state under the same version (two primaries wrote in one epoch: a bug, logged).
pub fn holds_newer(held: &Record, sent: &Record) -> bool {
    store::check_same_version(held, sent);
    held.version > sent.version || (held.version == sent.version && held.hash != sent.hash)
}

/// How a node takes a peer's newer state `newer` of a key in place of what it holds (`held`)
/// after the peer refused its own ([`NodeError::Newer`]): `None` where it holds that very state,
/// or a newer one (written here after the refused states were read: a reader's resend of a
/// stale state raced a write, and the refusal answers the stale state); else the put's
/// condition, replacing what it holds even under the same version (its own state, never
/// acknowledged, which `Older` would not replace).
pub fn adoption(held: Option<&Record>, newer: &Record) -> Option<Expect> {
    match held {
        None => Some(Expect::Exactly(model::version::Version::ZERO)),
        Some(h) if h.version > newer.version => None,
        Some(h) if h.version == newer.version && h.hash == newer.hash => None,
        Some(h) => Some(Expect::Exactly(h.version)),
    }
}

/// A batch of replicated states, as a primary sends it to a peer (on the wire: see
/// [`crate::fanout`]).
#[derive(Clone, Debug)]
pub struct ReplicateBatch {
    /// The sender's view epoch; peers refuse older epochs.
    pub epoch: u64,
    /// The states, each with its version.
    pub records: Vec<Record>,
    /// A page of a full copy to a learner ([`crate::fanout::PeerLink::send_copy`]): newer
    /// states held are no reason to refuse it.
    pub copy: bool,
}

/// One replica node.
pub struct Node {
    /// This replica's id (its index in the topology's replica list).
    pub me: u32,
    /// The service it belongs to.
    pub service: Service,
    store: DynStore,
    /// The view it serves by, its acceptor state, and whether it started empty.
    membership: Membership,
    /// Batching links to the other replicas, by id.
    links: HashMap<u32, PeerLink>,
    /// The other replicas' base URLs, by id (membership queries).
    peer_urls: HashMap<u32, String>,
    /// Client for membership queries, lease pings and suspicions to peers and coordinators;
    /// it carries the cluster secret ([`net::client::internal_builder`]).
    http: reqwest::Client,
    /// This service's coordinators (`http://host:port`), told about peers that fail.
    coordinators: Vec<String>,
    /// Read-lease bookkeeping (`decide::lease`).
    leases: std::sync::Mutex<Leases>,
    /// The anti-entropy rounds open here, and the keys written since each began.
    rounds: crate::rounds::Rounds,
    /// What this node owes its peers before answering from a document again: keys whose
    /// last write is not yet acknowledged by every peer, and inherited documents already sent
    /// (`ensure_replicated`).
    unsettled: crate::unsettled::Unsettled,
    /// The node's timeouts and intervals.
    timings: Timings,
    /// The node's background loops ([`Node::start_workers`], and the service's own).
    workers: Workers,
    /// Whether its store takes writes and its peers accept its secret.
    health: Health,
    /// Held side records ([`model::side::held`]) with a start before this (Unix ms) may go:
    /// raised by the service ([`Node::release`]), used by the `prune` worker.
    released: std::sync::atomic::AtomicU64,
}

impl Node {
    /// A node with its peers' addresses (`id → http://host:port`; its own entry is ignored)
    /// and its acceptor state as loaded from its store (the view it serves by is the state's
    /// committed view). The fan-out senders start on the first write (see `PeerLink`).
    pub fn new(
        me: u32,
        service: Service,
        store: DynStore,
        peers: HashMap<u32, String>,
        secret: String,
        acceptor: AcceptorState,
        timings: Timings,
    ) -> Node {
        let http = net::client::internal_http(timings.fanout, &secret);
        let peer_urls: HashMap<u32, String> =
            peers.iter().filter(|(id, _)| **id != me).map(|(i, u)| (*i, u.clone())).collect();
        // The fan-out has a connection of its own to each peer (`net::rpc`), opened and
        // driven on the thread that runs the write handlers, the other client's on the runtime
        // of the background tasks (leases, Paxos, reports).
        // It keeps Nagle's algorithm on: the small wait it adds before a batch's last segment
        // lets more writes join the next batch, for more checkouts/s at less CPU each
        // (docs/performance.md, second round item 8 and third round).
        let health = Health::new(format!("{service} replica {me}"));
        let links = peers
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, base)| {
                let authority = base.trim_start_matches("http://");
                (id, PeerLink::spawn(id, authority, &secret, timings.fanout, health.standing()))
            })
            .collect();
        let leases = Leases::new(me, acceptor.replicas, timings.lease);
        Node {
            me,
            service,
            store,
            membership: Membership::new(me, acceptor),
            links,
            peer_urls,
            http,
            coordinators: Vec::new(),
            leases: std::sync::Mutex::new(leases),
            unsettled: Default::default(),
            timings,
            workers: Workers::new(),
            rounds: Default::default(),
            health,
            released: Default::default(),
        }
    }

    /// Why this node must not report itself healthy because its peers refuse its secret
    /// ([`net::standing`]).
    pub fn secret_refusal(&self) -> Option<String> {
        self.health.secret_refusal()
    }

    /// Records the verdict on this node's secret in an answer from `base` (`http://host:port`).
    fn answered(&self, base: &str, status: reqwest::StatusCode) {
        self.health.answered(base, status.as_u16());
    }

    /// The same node, reporting failed peers to these coordinators (`host:port`).
    pub fn with_coordinators(mut self, addrs: &[String]) -> Node {
        self.coordinators = addrs.iter().map(|a| format!("http://{a}")).collect();
        self
    }

    /// Whether this node may serve reads now: a majority of the replicas (itself included)
    /// promised within the lease not to help depose it (`decide::lease`).
    pub fn has_lease(&self) -> bool {
        self.leases.lock().unwrap().holds(std::time::Instant::now())
    }

    /// Whether this node may serve reads, renewing the lease first if it ran out (after a
    /// pause or a restart, the next heartbeat may be a while away).
    pub async fn ensure_lease(&self) -> bool {
        if self.has_lease() {
            return true;
        }
        self.renew_lease().await;
        self.has_lease()
    }

    /// Answers a lease ping from `peer`: this node's view if the grant is given, `None`
    /// while it is withheld because this node accepted a view removing the peer.
    pub fn grant_lease(&self, peer: u32) -> Option<View> {
        // The view is read after granting: a holder that installs it cannot be deposed
        // by any view this node accepted before the grant.
        let granted = self.leases.lock().unwrap().grant(peer, std::time::Instant::now());
        granted.then(|| self.view())
    }

    /// One round of lease pings to every peer: a peer that grants is counted from the send
    /// time, and a newer view it reports is served by before the grant counts.
    async fn renew_lease(&self) {
        let period = self.leases.lock().unwrap().period();
        let pings = self.peer_urls.iter().map(|(id, base)| async move {
            let sent = std::time::Instant::now();
            let r = self.http.get(format!("{base}/internal/lease/{}", self.me)).timeout(period / 2).send().await;
            let Ok(r) = r else { return };
            self.answered(base, r.status());
            if !r.status().is_success() {
                return;
            }
            if let Ok(view) = r.json::<View>().await {
                self.install(&view);
                self.leases.lock().unwrap().granted_by(*id, sent);
            }
        });
        futures::future::join_all(pings).await;
    }

    /// Starts the replica's own workers ([`net::worker`]), which run until
    /// [`Workers::stop`]: in a service of several replicas, `leases` (renews the read lease
    /// four times per lease period) and, after an empty restart, `recovery` (learns the view
    /// from the others, then ends); in every replica, `prune` (drops expired side records)
    /// and `store-watch` (calls `on_stopped` once the store stopped for good).
    pub fn start_workers(self: &Arc<Self>, recovering: bool, on_stopped: fn(&Node, &str)) {
        let t = self.timings;
        let name = |what: &str| format!("{} replica {} {what}", self.service, self.me);
        let w = &self.workers;
        // A single replica needs no lease and has nobody to learn a view from.
        if !self.peer_urls.is_empty() {
            let period = self.leases.lock().unwrap().period();
            w.spawn_on(name("leases"), Schedule::every(period / 4), self.clone(), |n| async move {
                n.renew_lease().await;
                Next::Again
            });
            if recovering {
                let recovery =
                    Arc::new(tokio::sync::Mutex::new(Recovering { recovery: None, pause: t.recovery_pause }));
                log::info!("{} replica {}: started without membership state; asking the others", self.service, self.me);
                w.spawn_on(name("recovery"), Schedule::every(t.recovery_pause), self.clone(), move |n| {
                    let recovery = recovery.clone();
                    async move { n.recovery_round(&mut *recovery.lock().await).await }
                });
            }
        }
        w.spawn_on(name("prune"), Schedule::every(t.prune), self.clone(), |n| async move {
            n.prune_round().await;
            Next::Again
        });
        w.spawn_on(name("store-watch"), Schedule::every(t.store_watch).after_one_interval(), self.clone(), move |n| {
            if let Some(why) = n.store().stopped() {
                on_stopped(&n, &why);
            }
            std::future::ready(Next::Again)
        });
    }

    /// The node's workers: those of [`Node::start_workers`] and the service's own (the order
    /// service's resume), stopped together when the replica stops.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// The node's timeouts and intervals.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Notes the outcome of a write to the store: a failure makes the node report itself
    /// unhealthy ([`Node::store_health`]) until a write succeeds again.
    fn noted<T>(&self, result: store::StoreResult<T>) -> store::StoreResult<T> {
        self.health.noted(result)
    }

    /// Whether the store takes writes (docs/design.md §7.4: storage failure is fail-stop). After
    /// a failed write, a small durable write (a meta value) is tried first: a replica whose
    /// store cannot write reports itself unhealthy, so the coordinators' re-probe confirms
    /// its eviction and the service writes on the others; once the store takes writes again,
    /// it is healthy and re-joins.
    pub async fn store_health(&self) -> Result<(), String> {
        if !self.health.store_failed() {
            return Ok(());
        }
        // Larger than the writes that failed are likely to be: a few bytes still fit where a
        // document no longer does (the last page of a full file system).
        let probe = vec![0u8; STORE_PROBE_BYTES];
        self.noted(self.store.put_meta(STORE_PROBE, probe).await).map_err(|e| e.to_string())
    }

    /// Lets the held side records with a start before `before_ms` go at the next round of
    /// the `prune` worker (a lower value than one given before changes nothing).
    pub fn release(&self, before_ms: u64) {
        self.released.fetch_max(before_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The start before which held side records may go ([`Node::release`]).
    pub fn released(&self) -> u64 {
        self.released.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What this replica tells a ledger replica that asks for the horizon of the checkouts
    /// ([`model::wire::Horizon`]), given its service's `resumed` epoch and `oldest_ms`.
    /// `view` is the view it serves by (which it may have learned from a peer, not only from
    /// its acceptor); `pending` says that its acceptor committed or accepted a newer one.
    pub async fn horizon(&self, resumed: u64, oldest_ms: u64) -> model::wire::Horizon {
        let acceptor = self.membership.acceptor().await;
        let view = self.view();
        let newer = |epoch: u64| epoch > view.epoch;
        let pending =
            newer(acceptor.committed.epoch) || acceptor.accepted.as_ref().is_some_and(|(_, v)| newer(v.epoch));
        model::wire::Horizon { replica: self.me, view, pending, resumed, oldest_ms }
    }

    /// Drops expired and released side records ([`model::side`]): one round of the `prune`
    /// worker, every [`Timings::prune`].
    async fn prune_round(&self) {
        match self.store.prune_sides(model::side::now_ms(), self.released()).await {
            Ok(0) => {}
            Ok(n) => log::debug!("{} replica {}: dropped {n} expired side records", self.service, self.me),
            Err(e) => log::warn!("{} replica {}: dropping expired side records failed: {e}", self.service, self.me),
        }
    }

    /// Marks the node as started without membership state (see `needs_rejoin`).
    pub fn started_empty(self) -> Node {
        self.membership.started_empty();
        self
    }

    /// Whether the node is a full member that lost its data (an empty restart): it must be
    /// evicted and re-join as a learner before it serves ([`Membership::needs_rejoin`]).
    pub fn needs_rejoin(&self) -> bool {
        self.membership.needs_rejoin()
    }

    /// Streams every stored document to replica `target` (a learner catching up), in
    /// batches under the current epoch; the target applies each only if it is newer than
    /// what it holds. Returns how many documents were sent.
    pub async fn push_to(&self, target: u32) -> Result<usize, NodeError> {
        let link = self.links.get(&target).ok_or_else(|| NodeError::Unavailable(format!("no replica {target}")))?;
        let mut after: Option<String> = None;
        let mut sent = 0;
        loop {
            let page = self.store.scan(after.as_deref(), MAX_BATCH_RECORDS).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            sent += page.len();
            link.send_copy(self.epoch(), &Encoded::new(&page))
                .await
                .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        }
        Ok(sent)
    }

    /// A single-replica node with no peers (unit tests).
    pub fn standalone(store: DynStore) -> Node {
        Node::new(
            0,
            Service::Stock,
            store,
            HashMap::new(),
            String::new(),
            AcceptorState::initial(1),
            Timings::default(),
        )
    }

    /// The node's store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.membership.view()
    }

    /// The current view's epoch.
    pub fn epoch(&self) -> u64 {
        self.membership.epoch()
    }

    /// Whether this node is the key's primary in its view.
    pub fn is_primary(&self, key: &str) -> bool {
        self.membership.is_primary(key)
    }

    /// Accepts a request for `key` routed under `epoch` only if the epoch is not older than
    /// ours and we are the key's primary.
    pub fn check_routed(&self, key: &str, epoch: Option<u64>) -> Result<(), Misdirected> {
        self.membership.check_routed(key, epoch)
    }

    /// Applies puts as the keys' primary, then fans the new states out; returns when every
    /// peer acknowledged.
    pub async fn write_primary(&self, puts: Vec<Put>) -> Result<(), NodeError> {
        let records: Vec<Record> = puts.iter().map(|p| p.record.clone()).collect();
        // Only the primary of the view a version names writes it, and it checks before its
        // own store takes the state: a node that computed a version under a view in which it
        // is not (or no longer) the key's primary (a saga driver or request in flight across
        // a view change) would otherwise store a second state under a version the primary
        // writes too. Refused, its caller decides again under the current view. Side records
        // are checked too: one written without its document (`Decision::WriteSides`) is
        // fenced by nothing else.
        let view = self.primary_view_of(&records)?;
        if records.iter().any(|r| r.version.epoch != view.epoch) {
            return Err(NodeError::Misdirected(Misdirected { view, reason: "a version of another view" }));
        }
        self.note_written(records.iter().map(|r| r.key.as_str()));
        // Owed to the peers from before the store holds them until every peer acknowledged:
        // a reader that comes during the fan-out sends them itself before it answers from
        // them (`ensure_replicated`), and a write dropped mid-way (its caller gone) leaves
        // them owed. Else such a reader would show a state that a crash of this node could
        // still lose, and a retry of a dropped write would be answered from its record.
        self.unsettled.fanned_out(records.iter().map(|r| r.key.clone()), false);
        let applied = self.noted(self.store.write(puts).await)?;
        let Some(i) = applied.iter().position(|a| !a) else {
            return self.fan_out_written(records).await;
        };
        // A group that was applied goes out even so (a write of several groups, applied or
        // not each on its own: a step of `Table::replace_many`): stored here, it must reach
        // the peers like any other. In a write of one group, nothing was applied.
        let conflict = records[i].key.clone();
        let written: Vec<Record> = records.into_iter().zip(applied).filter(|(_, a)| *a).map(|(r, _)| r).collect();
        if !written.is_empty() {
            self.fan_out_written(written).await?;
        }
        Err(NodeError::Conflict(conflict))
    }

    /// Fans out states this primary stored, and notes whether they reached every peer.
    async fn fan_out_written(&self, records: Vec<Record>) -> Result<(), NodeError> {
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let result = self.fan_out(records).await;
        self.unsettled.fanned_out(keys, result.is_ok());
        result
    }

    /// How long a request id's record is kept beside its document.
    pub fn request_ttl(&self) -> Duration {
        self.timings.request_ttl
    }

    /// Makes sure the stored state of document `key` (and of the side records its writes left,
    /// [`model::side`]) is on every peer before it is read or decided on again: a write whose
    /// fan-out failed, is still under way (for a reader that does not hold the key's lock) or
    /// was dropped is in this node's store but maybe not on its peers, and must be neither
    /// shown nor answered from a request record (a retry of it with the same request id would
    /// otherwise be acknowledged unreplicated) until it is. Sends the current state of every
    /// such record again.
    ///
    /// Likewise a document whose stored version is from an older epoch: this node may have
    /// it from a fan-out of the previous primary that reached only some members (and its
    /// client may never have been answered). Before it is answered from, or written over,
    /// it is sent with its side records to every member under the current view, once per
    /// view. Else a retry answered here from its request record, or a write on top of it,
    /// would be acknowledged while a member that may be the next primary lacks it.
    ///
    /// `stored` is the version of the document the caller read. Returns whether anything was
    /// sent (the stored state may then have changed: a peer's newer one taken in its place).
    pub async fn ensure_replicated(&self, key: &str, stored: Option<Version>) -> Result<bool, NodeError> {
        let mut keys = self.unsettled.unreplicated_of(key);
        let epoch = self.epoch();
        let inherited = stored.is_some_and(|v| v.epoch < epoch)
            && !self.unsettled.settled_in(key, epoch)
            && !self.view().peers_of(self.me).is_empty();
        if inherited {
            keys.push(key.to_string());
            keys.extend(self.sides_of(key).await?.into_iter().map(|r| r.key));
        }
        if keys.is_empty() {
            return Ok(false);
        }
        // Routine for a reader that came during a write's fan-out; a failed fan-out was
        // logged where it failed.
        if inherited {
            log::info!(
                "{} replica {}: sending {key} to every member: its state is from an older view",
                self.service,
                self.me
            );
        } else {
            log::debug!(
                "{} replica {}: sending {key} to every member: not yet acknowledged by all",
                self.service,
                self.me
            );
        }
        let mut adopted = 0;
        loop {
            let records: Vec<Record> = self.store.get_many(&keys).await?.into_iter().flatten().collect();
            if records.is_empty() {
                break;
            }
            match self.fan_out(records).await {
                Ok(()) => break,
                // A peer held newer states, now taken here in place of ours: send those, so
                // that every member has what is read or decided on next. Not the reader's
                // failure.
                Err(NodeError::Conflict(k)) if adopted < CONFLICT_RESENDS => {
                    adopted += 1;
                    log::info!("{} replica {}: took a peer's newer state of {k}; sending it", self.service, self.me);
                }
                Err(e) => return Err(e),
            }
        }
        self.unsettled.fanned_out(keys, true);
        if inherited {
            self.unsettled.settle(key, epoch);
        }
        Ok(true)
    }

    /// The side records ([`model::side`]) stored beside document `doc`: they sort right after
    /// it, before any other document.
    pub async fn sides_of(&self, doc: &str) -> Result<Vec<Record>, NodeError> {
        const PAGE: usize = 256;
        let prefix = model::side::key(doc, "");
        let mut out = Vec::new();
        let mut after = prefix.clone();
        loop {
            let page = self.store.scan(Some(&after), PAGE).await?;
            let n = page.len();
            let mine: Vec<Record> = page.into_iter().take_while(|r| r.key.starts_with(&prefix)).collect();
            let more = mine.len() == n && n == PAGE;
            if let Some(last) = mine.last() {
                after = last.key.clone();
            }
            out.extend(mine);
            if !more {
                return Ok(out);
            }
        }
    }

    /// Sends states to every peer of the view and waits for all acknowledgements.
    ///
    /// A peer that holds a newer view refuses the batch as stale: the node then serves by that
    /// view and sends again under it, if it is still the primary of every key (else the write
    /// is misdirected and the coordinator retries it at the new primary). A peer that does
    /// not acknowledge is reported to a coordinator, which evicts it by a committed view if a
    /// re-probe confirms it is gone; the write then counts as replicated once every peer that
    /// failed is out of the view (the remaining members all acknowledged).
    async fn fan_out(&self, records: Vec<Record>) -> Result<(), NodeError> {
        // A bulk write (batch_init) travels in several requests of bounded size.
        let chunks: Vec<Arc<Encoded>> = records.chunks(MAX_BATCH_RECORDS).map(|c| Arc::new(Encoded::new(c))).collect();
        for _ in 0..STALE_RESENDS {
            // Only a key's primary in the view the states travel under may send them: a
            // node deposed since it wrote them would have them acknowledged by peers that
            // already took newer states from the new primary (and so ignore these).
            let view = self.primary_view_of(&records)?;
            let peers = view.peers_of(self.me);
            if peers.is_empty() {
                return Ok(());
            }
            let failed = self.send_all(&view, &peers, &chunks).await;
            if failed.is_empty() {
                return Ok(());
            }
            // Act on each refusal, then decide (`decide::fanout`).
            let mut newer = Vec::new();
            let mut refusals = Vec::with_capacity(failed.len());
            for (id, why) in &failed {
                refusals.push((*id, why.refusal()));
                match why {
                    SendError::Newer(records) if fanout::newer_counts(&view, *id) => {
                        log::warn!("{} replica {}: replica {id} holds newer states", self.service, self.me);
                        newer.extend(records.iter().cloned());
                    }
                    SendError::Newer(_) => {
                        log::warn!(
                            "{} replica {}: learner {id} refused states as older; ignored",
                            self.service,
                            self.me
                        );
                    }
                    SendError::Stale(newer) => self.install(newer),
                    SendError::Failed(why) => {
                        log::warn!("{} replica {}: no acknowledgement from replica {id}: {why}", self.service, self.me);
                        if let Some(view) = self.suspect(*id).await {
                            self.install(&view);
                        }
                    }
                }
            }
            if !newer.is_empty() {
                // Behind: catch up first, then the write is decided again.
                return self.adopt_newer(newer, &records).await;
            }
            let now = self.primary_view_of(&records)?;
            match fanout::after_refusals(&now, &refusals) {
                AfterRefusals::Resend => {}
                AfterRefusals::Done => return Ok(()),
                AfterRefusals::Unavailable => {
                    let names: Vec<String> = failed.iter().map(|(id, why)| format!("replica {id}: {why}")).collect();
                    return Err(NodeError::Unavailable(names.join("; ")));
                }
            }
        }
        Err(NodeError::Unavailable(format!(
            "peers did not acknowledge after {STALE_RESENDS} tries, or the view kept changing"
        )))
    }

    /// The current view, if this node is the primary of every record's key in it.
    fn primary_view_of(&self, records: &[Record]) -> Result<View, NodeError> {
        let view = self.view();
        if records.iter().any(|r| view.primary(&r.key) != Some(self.me)) {
            return Err(NodeError::Misdirected(Misdirected { view, reason: "not primary after a view change" }));
        }
        Ok(view)
    }

    /// Sends every chunk to every peer; the peers that did not acknowledge, with why.
    async fn send_all(&self, view: &View, peers: &[u32], chunks: &[Arc<Encoded>]) -> Vec<(u32, SendError)> {
        let sends = peers.iter().map(|&id| async move {
            let Some(link) = self.links.get(&id) else {
                return Err((id, SendError::Failed("no address".into())));
            };
            // One chunk after the other: sent at once, the last chunks of a bulk write would
            // wait behind the first in the peer's writer and time out on a busy machine.
            for c in chunks {
                link.send(view.epoch, c.clone()).await.map_err(|e| (id, e))?;
            }
            Ok(())
        });
        futures::future::join_all(sends).await.into_iter().filter_map(Result::err).collect()
    }

    /// Reports a peer that did not acknowledge to a coordinator of this service (the first
    /// that answers); returns the view the coordinator routes by afterwards.
    async fn suspect(&self, peer: u32) -> Option<View> {
        for base in &self.coordinators {
            let r =
                self.http.post(format!("{base}/internal/suspect/{peer}")).timeout(self.timings.suspect).send().await;
            if let Ok(r) = &r {
                self.answered(base, r.status());
            }
            match r {
                Ok(r) if r.status().is_success() => return r.json::<View>().await.ok(),
                Ok(r) => log::warn!("coordinator {base} answered {} to a suspicion", r.status()),
                Err(e) => log::warn!("coordinator {base}: {e}"),
            }
        }
        None
    }

    /// Handles one membership message (docs/design.md §4.2): decides on a copy of the acceptor
    /// state, persists it before answering if it changed, and serves by a newly committed
    /// view from then on. Messages are handled one at a time.
    pub async fn handle_paxos(&self, request: &paxos::Request) -> Result<paxos::Reply, StoreError> {
        if let paxos::Request::Accept { epoch, view, .. } = request {
            // Accepting may help depose a member: first let the read leases it granted
            // that member run out (`decide::lease`), without holding the acceptor.
            let current = self.view();
            let removed = decide::lease::removed_members(&current.members, &view.members);
            if *epoch > current.epoch && !removed.is_empty() {
                let wait = self.leases.lock().unwrap().withhold(&removed, *epoch, std::time::Instant::now());
                if !wait.is_zero() {
                    log::info!(
                        "{} replica {}: view {epoch} removes {removed:?}: waiting {wait:?} for their read leases",
                        self.service,
                        self.me
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let mut state = self.membership.acceptor().await;
        let mut next = state.clone();
        let (reply, changed) = next.handle(request);
        if let paxos::Reply::Invalid { reason } = &reply {
            log::error!("refused a membership request no correct coordinator sends: {reason}");
        }
        if changed {
            self.store.put_meta(paxos::META_KEY, next.encode()).await?;
            self.install(&next.committed);
            *state = next;
        }
        Ok(reply)
    }

    /// Serves by `view` if it is newer than the current one.
    fn install(&self, view: &View) {
        if self.membership.install(view, |epoch| self.leases.lock().unwrap().committed(epoch)) {
            log::info!(
                "{} replica {}: view {} committed: members {:?}, learners {:?}",
                self.service,
                self.me,
                view.epoch,
                view.members,
                view.learners
            );
        }
    }

    /// Tells every change of the view this node serves by (its epoch): a node that may have
    /// become the primary of keys acts on what it finds among them (the order service resumes
    /// the checkouts in flight).
    pub fn views(&self) -> tokio::sync::watch::Receiver<u64> {
        self.membership.views()
    }

    /// Whether this replica may vote in membership decisions (false after an empty restart
    /// until it has learned the view from the others).
    pub async fn votes(&self) -> bool {
        self.membership.acceptor().await.votes()
    }

    /// After an empty restart: asks the other replicas for their committed view, one round of
    /// the `recovery` worker. Once enough voting replicas answered, learns the view (and may
    /// vote again) and the worker is done; otherwise the next round comes after a pause that
    /// doubles each time.
    async fn recovery_round(&self, r: &mut Recovering) -> Next {
        let me = self;
        let replicas = self.membership.acceptor().await.replicas;
        let recovery = r.recovery.get_or_insert_with(|| paxos::Recovery::new(self.me, replicas));
        let asks = me.peer_urls.iter().map(|(id, base)| async move {
            let r = me.http.post(format!("{base}/internal/paxos")).json(&paxos::Request::Query).send().await;
            if let Ok(r) = &r {
                me.answered(base, r.status());
            }
            match r {
                Ok(r) if r.status().is_success() => r.json::<paxos::Reply>().await.ok().map(|reply| (*id, reply)),
                _ => None,
            }
        });
        for (id, reply) in futures::future::join_all(asks).await.into_iter().flatten() {
            if let Some(view) = recovery.on_report(id, &reply) {
                let mut state = self.membership.acceptor().await;
                let mut next = state.clone();
                if next.learned(view.clone()) {
                    if let Err(e) = self.store.put_meta(paxos::META_KEY, next.encode()).await {
                        log::warn!("persisting the learned view failed: {e}");
                        break;
                    }
                    self.install(&next.committed);
                    *state = next;
                }
                log::info!("{} replica {}: learned view {} from the others", self.service, self.me, view.epoch);
                return Next::Done;
            }
        }
        let pause = r.pause;
        r.pause = (pause * 2).min(self.timings.recovery_pause * RECOVERY_MAX_PAUSES);
        Next::After(pause)
    }

    /// Remembers that `keys` were written, for every open anti-entropy round.
    fn note_written<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        self.rounds.note_written(keys);
    }

    /// Opens anti-entropy round `round` here ([`crate::rounds::Rounds::begin`]).
    pub fn begin_round(&self, round: u64) {
        self.rounds.begin(round, std::time::Instant::now());
    }

    /// Closes anti-entropy round `round`.
    pub fn end_round(&self, round: u64) {
        self.rounds.end(round);
    }

    /// The entries of `buckets` for round `round`, each marked fresh if written since the
    /// round began here (every key is fresh for a round not open here).
    pub async fn list_buckets(&self, round: u64, buckets: &[u8]) -> Result<Vec<decide::antientropy::Entry>, NodeError> {
        let listed = self.store.buckets(buckets).await?;
        let fresh = self.rounds.fresh(round, listed.iter().map(|kv| kv.key.as_str()));
        Ok(listed
            .into_iter()
            .zip(fresh)
            .map(|(kv, fresh)| decide::antientropy::Entry { fresh, key: kv.key, version: kv.version, hash: kv.hash })
            .collect())
    }

    /// The documents stored under `keys`, each followed by its side records (which
    /// anti-entropy carries along with a repaired document; they are in no bucket).
    pub async fn fetch(&self, keys: &[String]) -> Result<Vec<Record>, NodeError> {
        let mut out = Vec::new();
        for record in self.store.get_many(keys).await?.into_iter().flatten() {
            let key = record.key.clone();
            out.push(record);
            if !model::side::is_side(&key) {
                out.extend(self.sides_of(&key).await?);
            }
        }
        Ok(out)
    }

    /// Applies anti-entropy repairs: each record only if this replica still holds the
    /// version it listed (zero: still lacks the key). Returns how many were applied.
    /// Side records come with version zero listed: applied only where missing.
    pub async fn repair(&self, repairs: Vec<(Record, model::version::Version)>) -> Result<usize, NodeError> {
        let docs: Vec<bool> = repairs.iter().map(|(r, _)| !model::side::is_side(&r.key)).collect();
        let puts =
            repairs.into_iter().map(|(record, listed)| Put { expect: Expect::Exactly(listed), record }).collect();
        let applied = self.store.write(puts).await?;
        Ok(applied.iter().zip(docs).filter(|(a, doc)| **a && *doc).count())
    }

    /// Applies states sent by a primary: each only if its version is higher than ours.
    pub async fn apply_replicated(&self, batch: ReplicateBatch) -> Result<usize, NodeError> {
        self.refuse_older_than(batch.epoch, "stale epoch")?;
        if log::log_enabled!(log::Level::Debug) {
            for r in &batch.records {
                log::debug!("replicated state of {} at {} under epoch {}", r.key, r.version, batch.epoch);
            }
        }
        self.note_written(batch.records.iter().map(|r| r.key.as_str()));
        // A state older than the one held here is not acknowledged: its sender wrote over a
        // state it never saw (it restarted from older data, or was deposed), and its client
        // must not be told the write is durable. Neither are the side records its write left
        // (a request record of a write that did not happen must not answer a retry). The
        // same state again (a resend, or a repair that came first) is acknowledged, and the
        // rest of the batch is applied. A full copy is never refused.
        // Only a full member refuses: a learner may hold a deposed primary's never acknowledged
        // state (written while it was paused, say), which a new primary must not take for
        // acknowledged data; anti-entropy repairs a learner's copy before its promotion.
        let judges = !batch.copy && self.view().members.contains(&self.me);
        let mut refused: Vec<Record> = Vec::new();
        if judges {
            let docs: Vec<&Record> = batch.records.iter().filter(|r| !model::side::is_side(&r.key)).collect();
            let keys: Vec<String> = docs.iter().map(|r| r.key.clone()).collect();
            let held = self.store.get_many(&keys).await?;
            refused = docs.iter().zip(held).filter_map(|(sent, held)| held.filter(|h| holds_newer(h, sent))).collect();
        }
        let refused_keys: std::collections::HashSet<String> = refused.iter().map(|r| r.key.clone()).collect();
        let puts: Vec<Put> = batch
            .records
            .into_iter()
            .filter(|r| !refused_keys.contains(model::side::doc_of(&r.key)))
            .map(|record| Put { expect: Expect::Older, record })
            .collect();
        let applied = self.noted(self.store.write(puts.clone()).await)?;
        // Acknowledge only if no newer view was installed while the states were written: a
        // newer view may make this node a primary whose first writes read the documents
        // before these states landed, and such an acknowledged state would be lost. Refused,
        // the sender finds it is no longer the keys' primary and the write is retried there.
        self.refuse_older_than(batch.epoch, "view changed during the write")?;
        // A newer state that landed between the check and the write (a repair). Read only if
        // some state was not applied: in the usual batch every one is.
        // Documents only: a side record held under a newer version (rewritten or undone
        // since) stays, and is no reason to refuse.
        let skipped: Vec<&Record> = puts
            .iter()
            .zip(&applied)
            .filter(|(p, a)| !**a && !model::side::is_side(&p.record.key))
            .map(|(p, _)| &p.record)
            .collect();
        if judges && !skipped.is_empty() {
            let keys: Vec<String> = skipped.iter().map(|r| r.key.clone()).collect();
            let held = self.store.get_many(&keys).await?;
            refused.extend(skipped.iter().zip(held).filter_map(|(sent, held)| held.filter(|h| holds_newer(h, sent))));
        }
        if !refused.is_empty() {
            log::warn!(
                "{} replica {}: refusing {} states older than the ones held (first: {})",
                self.service,
                self.me,
                refused.len(),
                refused[0].key
            );
            // With the side records of the documents held: the sender takes them along, so a
            // retry of a request those states applied finds its record there.
            let mut with_sides = Vec::with_capacity(refused.len());
            for doc in refused {
                let sides = self.sides_of(&doc.key).await?;
                with_sides.push(doc);
                with_sides.extend(sides);
            }
            return Err(NodeError::Newer(with_sides));
        }
        Ok(applied.iter().filter(|a| **a).count())
    }

    /// Takes the newer states a peer refused a fan-out with ([`NodeError::Newer`]) in place of
    /// this node's own, never acknowledged, states of those keys: the write is then decided
    /// again on them ([`NodeError::Conflict`]). States from a newer epoch than this node's view
    /// mean it was deposed: it stops (the write is unavailable here, and the coordinator looks
    /// for the new view) instead of writing on.
    ///
    /// The side records the refused write left here beside those documents (`sent`: the
    /// write's records) are expired at once, in the same storage call: the write did not
    /// happen, so its request records must not answer a retry as if it had.
    async fn adopt_newer(&self, newer: Vec<Record>, sent: &[Record]) -> Result<(), NodeError> {
        let epoch = self.epoch();
        let first = newer.first().map(|r| r.key.clone()).unwrap_or_default();
        log::warn!(
            "{} replica {}: a peer holds newer states of {} keys (first: {first}); taking them",
            self.service,
            self.me,
            newer.len()
        );
        let deposed = newer.iter().any(|r| r.version.epoch > epoch);
        // A document is taken where this node's own state of it is older than the peer's (or
        // the same version with other content: its own, never acknowledged); never over a
        // state written here since the refused states were read (a reader's stale resend
        // raced a write), and the side records of a document not taken stay as they are.
        let keys: Vec<String> = newer.iter().map(|r| r.key.clone()).collect();
        let held = self.store.get_many(&keys).await?;
        let taken_docs: std::collections::HashSet<&str> = newer
            .iter()
            .zip(&held)
            .filter(|(n, h)| !model::side::is_side(&n.key) && adoption(h.as_ref(), n).is_some())
            .map(|(n, _)| n.key.as_str())
            .collect();
        let taken: std::collections::HashSet<&str> =
            newer.iter().filter(|r| taken_docs.contains(model::side::doc_of(&r.key))).map(|r| r.key.as_str()).collect();
        let undone: Vec<Put> = sent
            .iter()
            .filter(|r| {
                model::side::is_side(&r.key)
                    && taken_docs.contains(model::side::doc_of(&r.key))
                    && !taken.contains(r.key.as_str())
            })
            .map(|r| {
                let payload = model::side::parse(&r.body).map(|(_, p)| p).unwrap_or_default();
                let record = Record::new(r.key.clone(), r.version.next(epoch), model::side::body(0, payload));
                Put { expect: Expect::Exactly(r.version), record }
            })
            .collect();
        let adopted = newer.iter().zip(held).filter(|(record, _)| taken.contains(record.key.as_str())).filter_map(
            |(record, held)| adoption(held.as_ref(), record).map(|expect| Put { expect, record: record.clone() }),
        );
        let puts = adopted.chain(undone).collect();
        self.store.write(puts).await?;
        if deposed {
            return Err(NodeError::Unavailable(format!(
                "a peer holds states of a newer epoch than this node's view ({epoch}): deposed"
            )));
        }
        Err(NodeError::Conflict(first))
    }

    /// A misdirected rejection, with the current view, if that view is newer than `epoch`.
    fn refuse_older_than(&self, epoch: u64, reason: &'static str) -> Result<(), NodeError> {
        self.membership.refuse_older_than(epoch, reason).map_err(NodeError::Misdirected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::version::Version;
    use std::sync::atomic::AtomicUsize;
    use store::mem::MemStore;

    fn rec(key: &str, epoch: u64, seq: u64, body: &str) -> Record {
        Record::new(key.into(), Version { epoch, seq }, body.into())
    }

    /// Replica 0 of a service of two, over an in-memory store, whose peer acknowledges every
    /// fan-out and counts the batches and states it got.
    async fn with_a_peer(service: Service) -> (Node, Arc<(AtomicUsize, AtomicUsize)>) {
        with_a_gated_peer(service, None).await
    }

    /// [`with_a_peer`], whose peer acknowledges each fan-out only once it takes a permit of
    /// `gate`, if given.
    async fn with_a_gated_peer(
        service: Service,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (Node, Arc<(AtomicUsize, AtomicUsize)>) {
        let (addr, counts) = crate::fanout::tests::gated_peer(200, gate).await;
        let node = Node::new(
            0,
            service,
            Arc::new(MemStore::new()),
            HashMap::from([(1, format!("http://{addr}"))]),
            String::new(),
            AcceptorState::initial(2),
            Timings::default(),
        );
        (node, counts)
    }

    #[test]
    fn a_peer_refuses_only_states_older_than_or_different_from_what_it_holds() {
        let cases = [
            // (held, sent, refused)
            (rec("k", 1, 5, "a"), rec("k", 1, 6, "b"), false),
            (rec("k", 1, 5, "a"), rec("k", 1, 5, "a"), false),
            (rec("k", 1, 9, "a"), rec("k", 1, 6, "b"), true),
            (rec("k", 2, 1, "a"), rec("k", 1, 6, "b"), true),
            (rec("k", 1, 5, "a"), rec("k", 1, 5, "b"), true),
            (rec("k", 1, 9, "a"), rec("k", 2, 1, "b"), false),
        ];
        for (held, sent, refused) in cases {
            assert_eq!(holds_newer(&held, &sent), refused, "held {} sent {}", held.version, sent.version);
        }
    }

    /// A learner never refuses a state as older: what it holds may be a deposed primary's
    /// never acknowledged write, which a primary it refused would take for acknowledged data.
    #[tokio::test]
    async fn a_learner_never_refuses_a_state_as_older() {
        let node = Node::standalone(Arc::new(MemStore::new()));
        let view = node.view();
        let epoch = view.epoch;
        let leftover = rec("a", epoch, 9, "{\"n\":9}");
        let put = Put { expect: Expect::Older, record: leftover.clone() };
        node.store().write(vec![put]).await.unwrap();
        // This node is a learner in a newer view.
        node.install(&View { epoch: epoch + 1, members: vec![1], learners: vec![0] });
        let sent = rec("a", epoch, 6, "{\"n\":6}");
        let batch = ReplicateBatch { epoch: epoch + 1, records: vec![sent], copy: false };
        assert_eq!(node.apply_replicated(batch).await.unwrap(), 0);
        assert_eq!(node.store().get("a").await.unwrap(), Some(leftover));
    }

    /// A state from an older view is sent, with its side records, to every member before the
    /// primary answers from it or writes over it (the previous primary's fan-out may have
    /// reached only this node), once per view.
    #[actix_web::test]
    async fn a_state_from_an_older_view_is_sent_to_every_member_once_per_view() {
        let (addr, counts) = crate::fanout::tests::peer(200).await;
        let peers = HashMap::from([(1, format!("http://{addr}"))]);
        let node = Node::new(
            0,
            Service::Stock,
            Arc::new(MemStore::new()),
            peers,
            String::new(),
            AcceptorState::initial(2),
            Timings::default(),
        );
        let view = node.view();
        let key = (0..).map(|i| format!("k{i}")).find(|k| view.primary(k) == Some(0)).unwrap();
        let old = Version { epoch: view.epoch - 1, seq: 5 };
        let doc = Record::new(key.clone(), old, "{}".into());
        let request = Record::new(model::side::key(&key, "r:x"), old, model::side::body(u64::MAX, "{}"));
        let puts = [doc, request].map(|record| Put { expect: Expect::Older, record }).to_vec();
        node.store().write(puts).await.unwrap();
        let records = || counts.1.load(std::sync::atomic::Ordering::SeqCst);

        assert!(node.ensure_replicated(&key, Some(old)).await.unwrap());
        assert_eq!(records(), 2, "the document and its request record");
        assert!(!node.ensure_replicated(&key, Some(old)).await.unwrap(), "once per view");
        // A state of the current view was written (and fanned out) by this primary.
        let current = Version { epoch: view.epoch, seq: 6 };
        assert!(!node.ensure_replicated(&key, Some(current)).await.unwrap());
        // A newer view: sent again.
        node.install(&View { epoch: view.epoch + 1, ..view.clone() });
        assert!(node.ensure_replicated(&key, Some(old)).await.unwrap());
        assert_eq!(records(), 4);
    }

    /// A primary whose write a peer refused takes the peer's state in place of its own, even
    /// one under the same version (two states under one version: `Older` would not replace
    /// it, and every later read and write of the key failed), and expires the request
    /// records its refused write left.
    #[tokio::test]
    async fn a_refused_primary_takes_the_peers_state_and_undoes_its_records() {
        let node = Node::standalone(Arc::new(MemStore::new()));
        let epoch = node.epoch();
        let mine = rec("a", epoch, 6, "{\"n\":1}");
        let my_request = rec(&model::side::key("a", "r:x"), epoch, 6, &model::side::body(u64::MAX, "{}"));
        let puts = vec![
            Put { expect: Expect::Exactly(model::version::Version::ZERO), record: mine.clone() },
            Put { expect: Expect::Beside(model::version::Version::ZERO), record: my_request.clone() },
        ];
        assert_eq!(node.store().write(puts).await.unwrap(), vec![true, true]);
        let theirs = rec("a", epoch, 6, "{\"n\":2}");
        match node.adopt_newer(vec![theirs.clone()], &[mine, my_request.clone()]).await {
            Err(NodeError::Conflict(k)) => assert_eq!(k, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(node.store().get("a").await.unwrap(), Some(theirs));
        let undone = node.store().get(&my_request.key).await.unwrap().unwrap();
        assert!(model::side::expired(&undone.body, 1), "{undone:?}");
        assert!(undone.version > my_request.version);
    }

    #[test]
    fn a_peers_newer_state_is_taken_only_over_an_older_or_conflicting_own_state() {
        let zero = model::version::Version::ZERO;
        let theirs = rec("a", 2, 5, "{\"n\":5}");
        let v = |e, s| model::version::Version { epoch: e, seq: s };
        let cases = [
            ("nothing held", None, Some(Expect::Exactly(zero))),
            ("an older state", Some(rec("a", 2, 4, "{}")), Some(Expect::Exactly(v(2, 4)))),
            ("its own state under the same version", Some(rec("a", 2, 5, "{\"n\":9}")), Some(Expect::Exactly(v(2, 5)))),
            ("that very state", Some(theirs.clone()), None),
            ("a newer state written since", Some(rec("a", 3, 6, "{}")), None),
        ];
        for (name, held, want) in cases {
            assert_eq!(adoption(held.as_ref(), &theirs), want, "{name}");
        }
    }

    /// A node writes a version only as the key's primary in the view the version names,
    /// and checks before its own store takes it. The nemesis (seed 20261202, with cuts) saw
    /// a replica deposed by a view change store its saga's next state under that view's
    /// epoch, beside the new primary's state under the same version ('two different states
    /// at version 7.22'), after which every request for the order answered 503.
    #[tokio::test]
    async fn only_the_primary_of_the_versions_view_writes_it() {
        let (node, _counts) = with_a_peer(Service::Order).await;
        let view = node.view();
        let theirs = (0..).map(|i| format!("k{i}")).find(|k| view.primary(k) == Some(1)).unwrap();
        let mine = (0..).map(|i| format!("k{i}")).find(|k| view.primary(k) == Some(0)).unwrap();
        let put = |key: &str, epoch| Put {
            expect: Expect::Exactly(model::version::Version::ZERO),
            record: rec(key, epoch, 1, "{}"),
        };
        let refused = node.write_primary(vec![put(&theirs, view.epoch)]).await;
        assert!(matches!(refused, Err(NodeError::Misdirected(_))), "{refused:?}");
        assert_eq!(node.store().get(&theirs).await.unwrap(), None, "not stored");
        let stale = node.write_primary(vec![put(&mine, view.epoch - 1)]).await;
        assert!(matches!(stale, Err(NodeError::Misdirected(_))), "a version of an older view: {stale:?}");
        assert_eq!(node.store().get(&mine).await.unwrap(), None);
        node.write_primary(vec![put(&mine, view.epoch)]).await.unwrap();
        assert!(node.store().get(&mine).await.unwrap().is_some());
        // A side record written alone, under a version of an older view, is refused as well
        // (before, side records were not checked, and one written without its document was
        // not fenced at all).
        let side = model::side::key(&mine, "t:o#1");
        let stale = node.write_primary(vec![put(&side, view.epoch - 1)]).await;
        assert!(matches!(stale, Err(NodeError::Misdirected(_))), "a side record of an older view: {stale:?}");
        assert_eq!(node.store().get(&side).await.unwrap(), None);
    }

    /// A write of several groups (each applied or not on its own, as a step of
    /// `Table::replace_many` writes its documents) of which one conflicts still sends the
    /// groups that were applied: they are in this node's store, and must reach the peers
    /// like any write. Before, the conflict returned at once and left them on the primary
    /// alone, unreplicated and not owed to the peers (found in review).
    #[tokio::test]
    async fn a_write_whose_one_group_conflicts_still_sends_the_groups_applied() {
        let (node, counts) = with_a_peer(Service::Stock).await;
        let view = node.view();
        let mut mine = (0..).map(|i| format!("k{i}")).filter(|k| view.primary(k) == Some(0));
        let (held, fresh) = (mine.next().unwrap(), mine.next().unwrap());
        let zero = model::version::Version::ZERO;
        let put = |key: &str, seq| Put { expect: Expect::Exactly(zero), record: rec(key, view.epoch, seq, "{}") };
        node.store().write(vec![put(&held, 1)]).await.unwrap();
        match node.write_primary(vec![put(&fresh, 1), put(&held, 2)]).await {
            Err(NodeError::Conflict(k)) => assert_eq!(k, held),
            other => panic!("{other:?}"),
        }
        assert!(node.store().get(&fresh).await.unwrap().is_some());
        assert_eq!(counts.1.load(std::sync::atomic::Ordering::SeqCst), 1, "the applied group went out");
    }

    /// A write's keys are owed to the peers from before the store holds them until every
    /// peer acknowledged. Before, they were noted only when a fan-out failed: a reader that
    /// came while the fan-out was under way answered from a state a crash could still lose,
    /// and a write dropped mid-way (its caller gone) left a state on this node alone that
    /// nothing owed the peers, which a retry of the same request would have been answered
    /// from (found in review).
    #[tokio::test]
    async fn a_write_is_owed_to_the_peers_until_they_acknowledge_even_if_it_is_dropped() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (node, counts) = with_a_gated_peer(Service::Stock, Some(gate.clone())).await;
        let node = Arc::new(node);
        let view = node.view();
        let key = (0..).map(|i| format!("k{i}")).find(|k| view.primary(k) == Some(0)).unwrap();
        let record = rec(&key, view.epoch, 1, "{}");
        let put = Put { expect: Expect::Exactly(model::version::Version::ZERO), record: record.clone() };
        let writer = node.clone();
        let write = tokio::spawn(async move { writer.write_primary(vec![put]).await });
        // The peer holds its acknowledgement back: the write waits in its fan-out.
        while node.store().get(&key).await.unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        assert_eq!(node.unsettled.unreplicated_of(&key), std::slice::from_ref(&key), "owed during the fan-out");
        write.abort();
        assert!(write.await.unwrap_err().is_cancelled());
        assert_eq!(
            node.unsettled.unreplicated_of(&key),
            std::slice::from_ref(&key),
            "still owed once the write is dropped"
        );
        // A reader sends it to the peer, and answers from it once acknowledged.
        gate.add_permits(16);
        assert!(node.ensure_replicated(&key, Some(record.version)).await.unwrap(), "sent before it is answered from");
        assert!(node.unsettled.unreplicated_of(&key).is_empty());
        assert!(counts.1.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }

    /// A refusal that answers a stale send (a reader sent the state it read before a write
    /// of this primary replaced it) never takes the primary back over that newer, written
    /// state: nemesis seed 20261202 saw the primary serve a stock without an acknowledged add,
    /// and write the next version a second time with other content, after a reader's resend
    /// of an inherited state was refused with the state the write had been based on.
    #[tokio::test]
    async fn a_refusal_of_a_stale_send_does_not_take_the_primary_back_over_a_newer_write() {
        let node = Node::standalone(Arc::new(MemStore::new()));
        let epoch = node.epoch();
        let stale = rec("a", epoch - 1, 4, "{\"n\":4}");
        let peers = rec("a", epoch - 1, 5, "{\"n\":5}");
        let written = rec("a", epoch, 6, "{\"n\":8}");
        let request = rec(&model::side::key("a", "r:w"), epoch, 6, &model::side::body(u64::MAX, "{}"));
        let old_request = rec(&model::side::key("a", "r:old"), epoch - 1, 4, &model::side::body(u64::MAX, "{}"));
        let puts = vec![
            Put { expect: Expect::Exactly(model::version::Version::ZERO), record: written.clone() },
            Put { expect: Expect::Beside(model::version::Version::ZERO), record: request.clone() },
            Put { expect: Expect::Beside(model::version::Version::ZERO), record: old_request.clone() },
        ];
        assert_eq!(node.store().write(puts).await.unwrap(), vec![true, true, true]);
        // The reader had read `stale` with its side record; the peer refused it holding `peers`.
        let theirs_side = rec(&model::side::key("a", "r:theirs"), epoch - 1, 5, &model::side::body(u64::MAX, "{}"));
        let _ = node.adopt_newer(vec![peers, theirs_side.clone()], &[stale, old_request.clone()]).await;
        assert_eq!(node.store().get("a").await.unwrap(), Some(written), "the newer write stays");
        assert_eq!(node.store().get(&request.key).await.unwrap(), Some(request));
        assert_eq!(node.store().get(&old_request.key).await.unwrap(), Some(old_request), "not undone");
        assert_eq!(node.store().get(&theirs_side.key).await.unwrap(), None, "a record of a write it does not hold");
    }

    /// A peer judges documents only: a side record it holds under a newer version than the
    /// one sent (a request record rewritten, or undone, since) is kept and the batch is
    /// acknowledged. The nemesis (seed 20261202) saw such refusals loop until the primary
    /// answered reads of an item with 503 and its final read failed.
    #[tokio::test]
    async fn a_newer_side_record_held_by_a_peer_is_no_reason_to_refuse() {
        let node = Node::standalone(Arc::new(MemStore::new()));
        let epoch = node.epoch();
        let side = model::side::key("a", "r:x");
        let held = rec(&side, epoch, 7, &model::side::body(0, "{}"));
        node.store().write(vec![Put { expect: Expect::Older, record: held.clone() }]).await.unwrap();
        let doc = rec("a", epoch, 6, "{}");
        let sent_side = rec(&side, epoch, 6, &model::side::body(u64::MAX, "{}"));
        let batch = ReplicateBatch { epoch, records: vec![doc.clone(), sent_side], copy: false };
        assert_eq!(node.apply_replicated(batch).await.unwrap(), 1, "the document applied");
        assert_eq!(node.store().get(&side).await.unwrap(), Some(held), "the newer side record kept");
        assert_eq!(node.store().get("a").await.unwrap(), Some(doc));
    }

    /// A peer holding a newer state of a key does not acknowledge an older one (the sender
    /// restarted from older data), and says which state it holds; the same state again is
    /// acknowledged, and a page of a full copy is never refused.
    #[tokio::test]
    async fn a_state_older_than_the_one_held_is_not_acknowledged() {
        let node = Node::standalone(Arc::new(MemStore::new()));
        let epoch = node.epoch();
        let batch = |records: Vec<Record>, copy: bool| ReplicateBatch { epoch, records, copy };
        let newest = rec("a", epoch, 9, "{\"n\":9}");
        assert_eq!(node.apply_replicated(batch(vec![newest.clone()], false)).await.unwrap(), 1);
        // The same state again: acknowledged, nothing applied.
        assert_eq!(node.apply_replicated(batch(vec![newest.clone()], false)).await.unwrap(), 0);
        // An older state beside a new key: the new key is applied, the batch refused with
        // the state held.
        let older = rec("a", epoch, 6, "{\"n\":6}");
        // The older state's request record goes with it: not applied either.
        let its_request = rec(&model::side::key("a", "r:x"), epoch, 6, &model::side::body(u64::MAX, "{}"));
        let b = rec("b", epoch, 1, "{}");
        match node.apply_replicated(batch(vec![older.clone(), its_request.clone(), b], false)).await {
            Err(NodeError::Newer(held)) => assert_eq!(held, vec![newest.clone()]),
            other => panic!("{other:?}"),
        }
        assert_eq!(node.store().get("a").await.unwrap(), Some(newest.clone()));
        assert_eq!(node.store().get(&its_request.key).await.unwrap(), None);
        assert!(node.store().get("b").await.unwrap().is_some());
        // A copy page with the older state: acknowledged, nothing applied.
        assert_eq!(node.apply_replicated(batch(vec![older], true)).await.unwrap(), 0);
        assert_eq!(node.store().get("a").await.unwrap(), Some(newest));
    }
}
