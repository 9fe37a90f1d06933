//! Membership views decided by single-decree Paxos per epoch (docs/design.md §4.2), as pure
//! decision logic: no I/O, no async, no clocks. Callers feed it messages and act on what it
//! returns; timeouts are theirs.
//!
//! # Roles
//!
//! Every configured replica of a service is an acceptor and keeps one [`AcceptorState`]:
//! the committed view (the highest epoch it knows decided) and its vote in the one open
//! instance, the epoch `committed.epoch + 1`. A coordinator that wants a new view (an
//! eviction, a learner, a promotion, built with [`evict`], [`add_learner`] and [`promote`]
//! from the committed view it routes by) runs one [`Proposer`] round:
//!
//! 1. send [`Request::Prepare`] to every replica and feed each reply to
//!    [`Proposer::on_promise`];
//! 2. on [`ProposerStep::SendAccept`], send [`Request::Accept`] with that view (its own
//!    proposal, or the value a previous round may already have chosen) to every replica and
//!    feed the replies to [`Proposer::on_accepted`];
//! 3. on [`ProposerStep::Chosen`], send [`Request::Commit`] to every replica and only then
//!    route by the view: a view is used only after a majority accepted it.
//!
//! [`ProposerStep::Retry`] means a higher ballot is in play: start a new round with
//! [`next_ballot`]. [`ProposerStep::Adopt`] means the epoch is already decided: route by that
//! view and, if the change is still wanted, propose it again on top of it.
//! [`ProposerStep::CatchUp`] means a replica has not learned the view the proposal builds
//! on: send it `Commit` of that view, then the same request again.
//!
//! # Persistence contract
//!
//! A promise or an accept that is forgotten can let two views be chosen for one epoch, so
//! the replica persists its state before it answers. Every `on_*` method returns the reply
//! and whether the state changed; when it did, the caller writes [`AcceptorState::encode`]
//! with `Store::put_meta(META_KEY, ..)` (durable when it returns) and only then sends the
//! reply. If the write fails it sends no reply and keeps the old state, so the safe pattern
//! is to decide on a clone and swap it in after the write:
//!
//! ```ignore
//! let mut next = state.clone();  // state: guard of the replica's tokio Mutex
//! let (reply, changed) = next.handle(&request);
//! if changed {
//!     store.put_meta(paxos::META_KEY, next.encode()).await?; // no reply if this fails
//! }
//! *state = next;
//! reply
//! ```
//!
//! Requests are handled one at a time (an async lock held across the write), so no reply is
//! ever based on a state that is not yet durable.
//!
//! # Restarting with an empty store
//!
//! A replica whose store holds no acceptor state may have voted before it lost its state;
//! voting again could break a promise it no longer remembers. It starts as
//! [`AcceptorState::fresh_empty`] (applies commits, never votes), asks the other replicas
//! with [`Request::Query`], and feeds the answers to a [`Recovery`]. Once enough voting
//! replicas answered, [`AcceptorState::learned`] lets it vote again, but only in instances
//! it cannot have voted in before it lost its state (see [`AcceptorState::abstain_through`]).
//! Only the very first start of a cluster uses [`AcceptorState::initial`].

use model::wire::View;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Name under which a replica persists its [`AcceptorState`] with `Store::put_meta`. A
/// replica's store belongs to one service, so one name per store is enough.
pub const META_KEY: &str = "paxos.acceptor";

/// How many replicas out of `replicas` form a majority. Any two majorities share a replica,
/// which is what makes a chosen view visible to every later round.
pub fn majority(replicas: u32) -> usize {
    replicas as usize / 2 + 1
}

/// A Paxos ballot: rounds are ordered by counter, then by coordinator id, so two
/// coordinators never use the same ballot and any ballot can be outbid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Round counter; raised past every ballot seen in a refusal.
    pub counter: u64,
    /// Id of the coordinator that owns the ballot; breaks ties between equal counters.
    pub coordinator: u32,
}

impl Ballot {
    /// Lower than every ballot a proposer uses (their counters start at 1).
    pub const ZERO: Ballot = Ballot { counter: 0, coordinator: 0 };

    /// A ballot.
    pub fn new(counter: u64, coordinator: u32) -> Ballot {
        Ballot { counter, coordinator }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.counter, self.coordinator)
    }
}

/// The ballot coordinator `me` uses after seeing `seen` (its own last ballot, or the one a
/// refusal named): strictly higher than `seen`, and owned by `me`.
pub fn next_ballot(seen: Ballot, me: u32) -> Ballot {
    Ballot { counter: seen.counter + 1, coordinator: me }
}

/// Why a view is not acceptable for a service of a given number of replicas.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidView {
    /// A proposal's view does not carry the epoch of the instance it is proposed for.
    #[error("view has epoch {got}, the instance is epoch {expected}")]
    WrongEpoch {
        /// The instance's epoch.
        expected: u64,
        /// The view's epoch.
        got: u64,
    },
    /// The view names a replica that is not configured.
    #[error("view names replica {id}, but only {replicas} are configured")]
    UnknownReplica {
        /// The unknown id.
        id: u32,
        /// Number of configured replicas (ids `0..replicas`).
        replicas: u32,
    },
    /// A replica appears twice (in one list, or as both member and learner).
    #[error("view names replica {0} twice")]
    Duplicate(u32),
    /// Fewer full members than a majority of the configured replicas: the design (docs/design.md §4.1) keeps a
    /// majority as full members so that an acknowledged write is on a majority.
    #[error("view has {members} full members, at least {needed} are needed")]
    TooFewMembers {
        /// Full members in the view.
        members: usize,
        /// A majority of the configured replicas.
        needed: usize,
    },
}

/// Checks that `view` is a view a service of `replicas` configured replicas may use: every id
/// configured and named once, and at least a majority of them full members.
pub fn validate(view: &View, replicas: u32) -> Result<(), InvalidView> {
    let mut seen = BTreeSet::new();
    for &id in view.members.iter().chain(&view.learners) {
        if id >= replicas {
            return Err(InvalidView::UnknownReplica { id, replicas });
        }
        if !seen.insert(id) {
            return Err(InvalidView::Duplicate(id));
        }
    }
    let needed = majority(replicas);
    if view.members.len() < needed {
        return Err(InvalidView::TooFewMembers { members: view.members.len(), needed });
    }
    Ok(())
}

/// Whether [`validate`] accepts `view`.
pub fn is_valid(view: &View, replicas: u32) -> bool {
    validate(view, replicas).is_ok()
}

/// `list` without `id`.
fn without(list: &[u32], id: u32) -> Vec<u32> {
    list.iter().copied().filter(|&x| x != id).collect()
}

/// `list` with `id`, kept sorted so that two coordinators building the same change build
/// equal views.
fn with(list: &[u32], id: u32) -> Vec<u32> {
    let mut out = list.to_vec();
    if let Err(at) = out.binary_search(&id) {
        out.insert(at, id);
    }
    out
}

/// The view that follows `view` without replica `id` (a full member or a learner). `None`
/// if `id` is not in the view, or if removing it would leave fewer full members than a
/// majority of the `replicas` configured: then the service refuses writes instead.
pub fn evict(view: &View, id: u32, replicas: u32) -> Option<View> {
    if !view.members.contains(&id) && !view.learners.contains(&id) {
        return None;
    }
    let next =
        View { epoch: view.epoch + 1, members: without(&view.members, id), learners: without(&view.learners, id) };
    validate(&next, replicas).ok().map(|()| next)
}

/// The view that follows `view` with the evicted replica `id` added as a learner (it
/// receives every write while it catches up). `None` if `id` is not configured or is
/// already in the view.
pub fn add_learner(view: &View, id: u32, replicas: u32) -> Option<View> {
    if view.members.contains(&id) || view.learners.contains(&id) {
        return None;
    }
    let next = View { epoch: view.epoch + 1, members: view.members.clone(), learners: with(&view.learners, id) };
    validate(&next, replicas).ok().map(|()| next)
}

/// The view that follows `view` with learner `id` promoted to full member (it caught up).
/// `None` if `id` is not a learner of the view.
pub fn promote(view: &View, id: u32, replicas: u32) -> Option<View> {
    if !view.learners.contains(&id) {
        return None;
    }
    let next = View { epoch: view.epoch + 1, members: with(&view.members, id), learners: without(&view.learners, id) };
    validate(&next, replicas).ok().map(|()| next)
}

/// A request from a coordinator (or a recovering replica) to a replica's acceptor. Each
/// variant lists the [`Reply`] variants it is answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Phase 1: asks for a promise to ignore lower ballots in `epoch`'s instance.
    /// Answered by `Promise`, `Nack`, `Stale`, `Behind` or `Abstain`.
    Prepare {
        /// The instance: the epoch of the view being decided.
        epoch: u64,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 2: asks the acceptor to accept `view` under `ballot`.
    /// Answered by `Accepted`, `Nack`, `Stale`, `Behind`, `Abstain` or `Invalid`.
    Accept {
        /// The instance: the epoch of the view being decided.
        epoch: u64,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The proposed view; its epoch is `epoch`.
        view: View,
    },
    /// Tells the acceptor that `view` was chosen. Answered by `Ack` or `Invalid`.
    Commit {
        /// The chosen view.
        view: View,
    },
    /// Asks for the acceptor's committed view: a recovering replica (see [`Recovery`]), or a
    /// coordinator learning the view. Answered by `Report`.
    Query,
}

/// An acceptor's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answers `Prepare`: the acceptor promised `ballot` and reports what it accepted in this
    /// instance, so the proposer can carry on a value that may already be chosen.
    Promise {
        /// The instance.
        epoch: u64,
        /// The ballot promised.
        ballot: Ballot,
        /// The highest-ballot view the acceptor accepted in this instance, if any.
        accepted: Option<(Ballot, View)>,
    },
    /// Answers `Accept`: the acceptor accepted the view under `ballot`.
    Accepted {
        /// The instance.
        epoch: u64,
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// Answers `Prepare` or `Accept`: refused, the acceptor promised `promised`, which is not
    /// lower than the request's ballot.
    Nack {
        /// The acceptor's promised ballot.
        promised: Ballot,
    },
    /// Answers `Prepare` or `Accept` for an epoch that is already decided.
    Stale {
        /// The acceptor's committed view, of that epoch or later.
        committed: View,
    },
    /// Answers `Prepare` or `Accept` for an epoch past the acceptor's open instance: it has
    /// not learned the view before it, so it cannot vote on what follows.
    Behind {
        /// The acceptor's committed view.
        committed: View,
    },
    /// Answers `Prepare` or `Accept`: the acceptor lost its state and does not vote in this
    /// instance (see [`AcceptorState::abstain_through`]); count it as no vote.
    Abstain {
        /// The acceptor's committed view.
        committed: View,
    },
    /// Answers `Commit`.
    Ack {
        /// The acceptor's committed epoch after the commit.
        epoch: u64,
    },
    /// Answers `Query`.
    Report {
        /// The acceptor's committed view.
        committed: View,
        /// Whether the acceptor votes in its open instance; a recovering replica learns only
        /// from voting ones (their committed view never went backwards).
        voting: bool,
    },
    /// Answers a request no correct coordinator sends (a malformed view, two views for one
    /// ballot or one epoch); nothing was changed. Worth a loud log line.
    Invalid {
        /// What was wrong.
        reason: String,
    },
}

/// A replica's durable Paxos state (persisted under [`META_KEY`] before any reply that
/// follows a change; see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorState {
    /// Number of configured replicas of the service, to validate views.
    pub replicas: u32,
    /// The highest-epoch view this replica knows was chosen. The open instance is
    /// `committed.epoch + 1`; anything older is answered `Stale`.
    pub committed: View,
    /// The highest ballot promised in the open instance.
    pub promised: Option<Ballot>,
    /// The highest-ballot view accepted in the open instance.
    pub accepted: Option<(Ballot, View)>,
    /// False from a restart with an empty store until [`AcceptorState::learned`]: the replica
    /// may have voted before and forgotten it.
    pub can_vote: bool,
    /// After an empty restart, the replica does not vote in instances up to this epoch.
    ///
    /// Why two epochs past the learned view `C`: before losing its state, the replica can
    /// have committed at most `C + 1` (a commit of `C + 2` needs a majority that accepted in
    /// instance `C + 2`, so a majority that committed `C + 1`, and one of them would have
    /// reported it), so it voted at most in instance `C + 2`. Voting in those instances
    /// again could contradict a promise it forgot; from `C + 3` on it never voted.
    #[serde(default)]
    pub abstain_through: u64,
}

impl AcceptorState {
    /// The state of a replica of a brand-new cluster: the initial view committed, no vote
    /// cast, free to vote.
    pub fn initial(replicas: u32) -> AcceptorState {
        AcceptorState {
            replicas,
            committed: View::initial(replicas),
            promised: None,
            accepted: None,
            can_vote: true,
            abstain_through: 0,
        }
    }

    /// The state of a replica that restarted with no persisted acceptor state in an existing
    /// cluster: it applies commits but does not vote until [`AcceptorState::learned`].
    pub fn fresh_empty(replicas: u32) -> AcceptorState {
        AcceptorState { can_vote: false, ..AcceptorState::initial(replicas) }
    }

    /// The state stored under [`META_KEY`], or `None` if the bytes are unreadable; treat that
    /// like no state at all: an empty restart.
    pub fn decode(bytes: &[u8]) -> Option<AcceptorState> {
        serde_json::from_slice(bytes).ok()
    }

    /// The bytes to store under [`META_KEY`].
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("acceptor state serializes")
    }

    /// The open instance: the epoch this acceptor votes on.
    pub fn instance(&self) -> u64 {
        self.committed.epoch + 1
    }

    /// Whether this acceptor votes in its open instance.
    pub fn votes(&self) -> bool {
        self.can_vote && self.instance() > self.abstain_through
    }

    /// Handles any request; returns the reply and whether the state changed (persist it
    /// before replying).
    pub fn handle(&mut self, request: &Request) -> (Reply, bool) {
        match request {
            Request::Prepare { epoch, ballot } => self.on_prepare(*epoch, *ballot),
            Request::Accept { epoch, ballot, view } => self.on_accept(*epoch, *ballot, view.clone()),
            Request::Commit { view } => self.on_commit(view.clone()),
            Request::Query => (self.on_query(), false),
        }
    }

    /// The refusal a vote request for `epoch` gets before its ballot is even looked at.
    fn refuse(&self, epoch: u64) -> Option<Reply> {
        if epoch <= self.committed.epoch {
            Some(Reply::Stale { committed: self.committed.clone() })
        } else if epoch > self.instance() {
            Some(Reply::Behind { committed: self.committed.clone() })
        } else if !self.votes() {
            Some(Reply::Abstain { committed: self.committed.clone() })
        } else {
            None
        }
    }

    /// Phase 1: promises `ballot` if it is higher than every ballot promised so far.
    ///
    /// Strictly higher, not equal: each acceptor promises a ballot once, so only one
    /// proposer can gather a majority of promises for it. That keeps a coordinator that
    /// restarted and reused a ballot from proposing a second value under it.
    pub fn on_prepare(&mut self, epoch: u64, ballot: Ballot) -> (Reply, bool) {
        if let Some(refusal) = self.refuse(epoch) {
            return (refusal, false);
        }
        if let Some(promised) = self.promised.filter(|&p| ballot <= p) {
            return (Reply::Nack { promised }, false);
        }
        self.promised = Some(ballot);
        (Reply::Promise { epoch, ballot, accepted: self.accepted.clone() }, true)
    }

    /// Phase 2: accepts `view` under `ballot` unless a higher ballot was promised.
    pub fn on_accept(&mut self, epoch: u64, ballot: Ballot, view: View) -> (Reply, bool) {
        if let Some(refusal) = self.refuse(epoch) {
            return (refusal, false);
        }
        if view.epoch != epoch {
            let reason = InvalidView::WrongEpoch { expected: epoch, got: view.epoch }.to_string();
            return (Reply::Invalid { reason }, false);
        }
        if let Err(e) = validate(&view, self.replicas) {
            return (Reply::Invalid { reason: e.to_string() }, false);
        }
        if let Some(promised) = self.promised.filter(|&p| ballot < p) {
            return (Reply::Nack { promised }, false);
        }
        if let Some((b, v)) = &self.accepted {
            if *b == ballot && *v != view {
                // One ballot, one proposer, one value: a second value means a bug upstream.
                let reason = format!("ballot {ballot} already carries another view for epoch {epoch}");
                return (Reply::Invalid { reason }, false);
            }
        }
        let before = (self.promised, self.accepted.clone());
        self.promised = Some(ballot);
        self.accepted = Some((ballot, view));
        let changed = before != (self.promised, self.accepted.clone());
        (Reply::Accepted { epoch, ballot }, changed)
    }

    /// Learns a chosen view. A higher epoch replaces the committed view and closes the
    /// instance (its promise and vote no longer matter: the epoch is decided).
    pub fn on_commit(&mut self, view: View) -> (Reply, bool) {
        if let Err(e) = validate(&view, self.replicas) {
            return (Reply::Invalid { reason: e.to_string() }, false);
        }
        if view.epoch == self.committed.epoch && view != self.committed {
            let reason = format!("a different view was committed for epoch {}", view.epoch);
            return (Reply::Invalid { reason }, false);
        }
        if view.epoch <= self.committed.epoch {
            return (Reply::Ack { epoch: self.committed.epoch }, false);
        }
        self.committed = view;
        self.promised = None;
        self.accepted = None;
        (Reply::Ack { epoch: self.committed.epoch }, true)
    }

    /// Answers a [`Request::Query`].
    pub fn on_query(&self) -> Reply {
        Reply::Report { committed: self.committed.clone(), voting: self.votes() }
    }

    /// Ends an empty restart: `view` is what a [`Recovery`] returned (the highest committed
    /// view among enough voting replicas other than this one, each asked after the restart).
    /// The replica adopts it if newer and votes again from epoch `view.epoch + 3` on (see
    /// [`AcceptorState::abstain_through`]). Returns whether the state changed; a replica
    /// that can already vote ignores it.
    pub fn learned(&mut self, view: View) -> bool {
        if self.can_vote {
            return false;
        }
        self.can_vote = true;
        self.abstain_through = view.epoch + 2;
        if view.epoch > self.committed.epoch {
            self.committed = view;
            self.promised = None;
            self.accepted = None;
        }
        true
    }
}

/// A replica's recovery after an empty restart: collects [`Reply::Report`]s to its
/// [`Request::Query`] and says when it has learned enough to vote again.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The recovering replica.
    me: u32,
    /// Number of configured replicas.
    replicas: u32,
    /// Committed views reported by voting replicas, by replica.
    reports: BTreeMap<u32, View>,
}

impl Recovery {
    /// A recovery for replica `me` of `replicas`.
    pub fn new(me: u32, replicas: u32) -> Recovery {
        Recovery { me, replicas, reports: BTreeMap::new() }
    }

    /// How many other voting replicas must report: enough that they share a replica with
    /// every majority that contains `me` (`replicas - majority + 1` of the others), so a
    /// view this replica committed or voted on before its restart is visible to them.
    pub fn needed(&self) -> usize {
        self.replicas as usize - majority(self.replicas) + 1
    }

    /// Feeds the reply of replica `from`. Returns the view to pass to
    /// [`AcceptorState::learned`] once enough distinct voting replicas other than `me`
    /// reported; other replies, duplicates and non-voting reporters do not count.
    pub fn on_report(&mut self, from: u32, reply: &Reply) -> Option<View> {
        if let Reply::Report { committed, voting: true } = reply {
            if from != self.me && from < self.replicas {
                self.reports.insert(from, committed.clone());
            }
        }
        if self.reports.len() < self.needed() {
            return None;
        }
        self.reports.values().max_by_key(|v| v.epoch).cloned()
    }
}

/// What a [`Proposer`] asks its caller to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposerStep {
    /// Nothing yet: wait for more replies (or time out and retry with a higher ballot).
    Wait,
    /// A majority promised: send `Accept` with this view to every replica.
    SendAccept(View),
    /// A majority accepted: the view is decided. Send `Commit` to every replica, then use it.
    /// Ends the round.
    Chosen(View),
    /// A higher ballot was promised: start a new round with a ballot from
    /// [`next_ballot`]`(higher_than, me)`. Ends the round.
    Retry {
        /// The ballot that outbid this round.
        higher_than: Ballot,
    },
    /// The epoch is already decided: adopt this committed view (of that epoch or later).
    /// Ends the round.
    Adopt(View),
    /// This replica has not learned the view the proposal builds on: send it `Commit` of
    /// that view, then the current request again.
    CatchUp(u32),
}

/// One coordinator's round for one epoch: one ballot, one proposed view. Feed it only the
/// replies to its own requests (as HTTP responses are); a new ballot is a new `Proposer`.
#[derive(Clone, Debug)]
pub struct Proposer {
    /// The instance: the epoch of the view being decided.
    epoch: u64,
    /// This round's ballot.
    ballot: Ballot,
    /// The view this coordinator wants.
    proposal: View,
    /// Number of configured replicas.
    replicas: u32,
    /// Promises received, by replica, with what each had accepted.
    promises: BTreeMap<u32, Option<(Ballot, View)>>,
    /// The view sent in `Accept`, once a majority promised.
    value: Option<View>,
    /// Replicas that accepted `value`.
    accepted: BTreeSet<u32>,
    /// Whether the round ended (Chosen, Retry or Adopt was returned).
    done: bool,
}

impl Proposer {
    /// A round proposing `proposal` for `epoch` under `ballot`, over `replicas` configured
    /// replicas. Refuses a proposal that does not carry `epoch` or is not a valid view.
    pub fn new(epoch: u64, ballot: Ballot, proposal: View, replicas: u32) -> Result<Proposer, InvalidView> {
        if proposal.epoch != epoch {
            return Err(InvalidView::WrongEpoch { expected: epoch, got: proposal.epoch });
        }
        validate(&proposal, replicas)?;
        Ok(Proposer {
            epoch,
            ballot,
            proposal,
            replicas,
            promises: BTreeMap::new(),
            value: None,
            accepted: BTreeSet::new(),
            done: false,
        })
    }

    /// The round's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The round's ballot.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// The view this coordinator proposed.
    pub fn proposal(&self) -> &View {
        &self.proposal
    }

    /// The view sent in `Accept`, once a majority promised.
    pub fn value(&self) -> Option<&View> {
        self.value.as_ref()
    }

    /// The request the round is at: `Prepare` until a majority promised, then `Accept`.
    /// What to send again to a replica after [`ProposerStep::CatchUp`].
    pub fn request(&self) -> Request {
        match &self.value {
            None => Request::Prepare { epoch: self.epoch, ballot: self.ballot },
            Some(view) => Request::Accept { epoch: self.epoch, ballot: self.ballot, view: view.clone() },
        }
    }

    /// Whether the round ended; later replies are ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self, step: ProposerStep) -> ProposerStep {
        self.done = true;
        step
    }

    /// The replies every phase reacts to alike: the epoch decided, or a replica behind.
    fn common(&mut self, from: u32, reply: &Reply) -> Option<ProposerStep> {
        match reply {
            Reply::Stale { committed } if committed.epoch >= self.epoch => {
                Some(self.finish(ProposerStep::Adopt(committed.clone())))
            }
            Reply::Behind { .. } => Some(ProposerStep::CatchUp(from)),
            _ => None,
        }
    }

    /// Feeds replica `from`'s reply to this round's `Prepare`.
    pub fn on_promise(&mut self, from: u32, reply: &Reply) -> ProposerStep {
        // Once Accept is out, phase-1 replies cannot change anything: late promises add
        // nothing, and a late refusal does not stop the accepts already sent.
        if self.done || from >= self.replicas || self.value.is_some() {
            return ProposerStep::Wait;
        }
        if let Some(step) = self.common(from, reply) {
            return step;
        }
        match reply {
            Reply::Promise { epoch, ballot, accepted } if *epoch == self.epoch && *ballot == self.ballot => {
                self.promises.entry(from).or_insert_with(|| accepted.clone());
                if self.promises.len() < majority(self.replicas) {
                    return ProposerStep::Wait;
                }
                // The classic rule: a view accepted under the highest ballot among the
                // promises may have been chosen, so it is the only safe value to propose.
                let value = self
                    .promises
                    .values()
                    .flatten()
                    .max_by_key(|(b, _)| *b)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| self.proposal.clone());
                self.value = Some(value.clone());
                ProposerStep::SendAccept(value)
            }
            // Our own ballot comes back refused only from a replica that promised it already:
            // a duplicate of our Prepare if it is among our promises (ignore), else a
            // previous incarnation of this coordinator used the ballot (outbid it).
            Reply::Nack { promised }
                if *promised > self.ballot || (*promised == self.ballot && !self.promises.contains_key(&from)) =>
            {
                self.finish(ProposerStep::Retry { higher_than: *promised })
            }
            _ => ProposerStep::Wait,
        }
    }

    /// Feeds replica `from`'s reply to this round's `Accept`.
    pub fn on_accepted(&mut self, from: u32, reply: &Reply) -> ProposerStep {
        if self.done || from >= self.replicas || self.value.is_none() {
            return ProposerStep::Wait;
        }
        if let Some(step) = self.common(from, reply) {
            return step;
        }
        match reply {
            Reply::Accepted { epoch, ballot } if *epoch == self.epoch && *ballot == self.ballot => {
                self.accepted.insert(from);
                if self.accepted.len() < majority(self.replicas) {
                    return ProposerStep::Wait;
                }
                let value = self.value.clone().expect("accept phase has a value");
                self.finish(ProposerStep::Chosen(value))
            }
            Reply::Nack { promised } if *promised > self.ballot => {
                self.finish(ProposerStep::Retry { higher_than: *promised })
            }
            _ => ProposerStep::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(counter: u64, coordinator: u32) -> Ballot {
        Ballot::new(counter, coordinator)
    }

    fn view(epoch: u64, members: &[u32], learners: &[u32]) -> View {
        View { epoch, members: members.to_vec(), learners: learners.to_vec() }
    }

    /// An acceptor of three replicas that committed the all-members view of `epoch`.
    fn acceptor(epoch: u64, promised: Option<Ballot>, accepted: Option<(Ballot, View)>) -> AcceptorState {
        AcceptorState { committed: view(epoch, &[0, 1, 2], &[]), promised, accepted, ..AcceptorState::initial(3) }
    }

    /// Replies compare equal, except that any two `Invalid` do (their reasons are prose).
    fn same(got: &Reply, want: &Reply) -> bool {
        match (got, want) {
            (Reply::Invalid { .. }, Reply::Invalid { .. }) => true,
            _ => got == want,
        }
    }

    fn invalid() -> Reply {
        Reply::Invalid { reason: String::new() }
    }

    #[test]
    fn ballots_order_by_counter_then_coordinator() {
        assert!(b(2, 0) > b(1, 9));
        assert!(b(1, 2) > b(1, 1));
        assert_eq!(next_ballot(Ballot::ZERO, 2), b(1, 2));
        assert_eq!(next_ballot(b(5, 7), 2), b(6, 2));
        assert!(next_ballot(b(5, 7), 2) > b(5, 7), "a retry outbids the ballot that refused it");
        assert_eq!(b(3, 1).to_string(), "3.1");
    }

    #[test]
    fn acceptor_table() {
        let va = view(2, &[0, 1], &[]);
        let vb = view(2, &[1, 2], &[]);
        let v1 = view(1, &[0, 1, 2], &[]);
        let v3 = view(3, &[0, 1, 2], &[]);
        let prepare = |ballot| Request::Prepare { epoch: 2, ballot };
        let accept = |ballot, view: &View| Request::Accept { epoch: 2, ballot, view: view.clone() };
        let promise = |ballot, accepted| Reply::Promise { epoch: 2, ballot, accepted };
        let accepted = |ballot| Reply::Accepted { epoch: 2, ballot };
        // (case, state, request, reply, changed, (promised, accepted, committed epoch) after)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            AcceptorState,
            Request,
            Reply,
            bool,
            (Option<Ballot>, Option<(Ballot, View)>, u64),
        )> = vec![
            (
                "first prepare is promised",
                acceptor(1, None, None),
                prepare(b(1, 0)),
                promise(b(1, 0), None),
                true,
                (Some(b(1, 0)), None, 1),
            ),
            (
                "a higher prepare is promised and learns the accepted view",
                acceptor(1, Some(b(1, 0)), Some((b(1, 0), va.clone()))),
                prepare(b(2, 1)),
                promise(b(2, 1), Some((b(1, 0), va.clone()))),
                true,
                (Some(b(2, 1)), Some((b(1, 0), va.clone())), 1),
            ),
            (
                "a lower prepare is refused",
                acceptor(1, Some(b(2, 1)), None),
                prepare(b(1, 5)),
                Reply::Nack { promised: b(2, 1) },
                false,
                (Some(b(2, 1)), None, 1),
            ),
            (
                "an equal prepare is refused: a ballot is promised once",
                acceptor(1, Some(b(2, 1)), None),
                prepare(b(2, 1)),
                Reply::Nack { promised: b(2, 1) },
                false,
                (Some(b(2, 1)), None, 1),
            ),
            (
                "same counter, higher coordinator is promised",
                acceptor(1, Some(b(2, 1)), None),
                prepare(b(2, 2)),
                promise(b(2, 2), None),
                true,
                (Some(b(2, 2)), None, 1),
            ),
            (
                "prepare for the committed epoch is stale",
                acceptor(2, None, None),
                prepare(b(9, 0)),
                Reply::Stale { committed: view(2, &[0, 1, 2], &[]) },
                false,
                (None, None, 2),
            ),
            (
                "prepare for an older epoch is stale",
                acceptor(3, Some(b(1, 0)), None),
                prepare(b(9, 0)),
                Reply::Stale { committed: v3.clone() },
                false,
                (Some(b(1, 0)), None, 3),
            ),
            (
                "prepare past the open instance: behind",
                acceptor(1, None, None),
                Request::Prepare { epoch: 3, ballot: b(1, 0) },
                Reply::Behind { committed: v1.clone() },
                false,
                (None, None, 1),
            ),
            (
                "an empty restart abstains from prepare",
                AcceptorState::fresh_empty(3),
                prepare(b(1, 0)),
                Reply::Abstain { committed: v1.clone() },
                false,
                (None, None, 1),
            ),
            (
                "accept without a promise is accepted",
                acceptor(1, None, None),
                accept(b(1, 0), &va),
                accepted(b(1, 0)),
                true,
                (Some(b(1, 0)), Some((b(1, 0), va.clone())), 1),
            ),
            (
                "accept at the promised ballot is accepted",
                acceptor(1, Some(b(1, 0)), None),
                accept(b(1, 0), &va),
                accepted(b(1, 0)),
                true,
                (Some(b(1, 0)), Some((b(1, 0), va.clone())), 1),
            ),
            (
                "accept below the promise is refused",
                acceptor(1, Some(b(2, 1)), None),
                accept(b(1, 0), &va),
                Reply::Nack { promised: b(2, 1) },
                false,
                (Some(b(2, 1)), None, 1),
            ),
            (
                "a repeated accept changes nothing",
                acceptor(1, Some(b(1, 0)), Some((b(1, 0), va.clone()))),
                accept(b(1, 0), &va),
                accepted(b(1, 0)),
                false,
                (Some(b(1, 0)), Some((b(1, 0), va.clone())), 1),
            ),
            (
                "a higher ballot replaces the accepted view",
                acceptor(1, Some(b(1, 0)), Some((b(1, 0), va.clone()))),
                accept(b(2, 1), &vb),
                accepted(b(2, 1)),
                true,
                (Some(b(2, 1)), Some((b(2, 1), vb.clone())), 1),
            ),
            (
                "a second view under one ballot is refused",
                acceptor(1, Some(b(1, 0)), Some((b(1, 0), va.clone()))),
                accept(b(1, 0), &vb),
                invalid(),
                false,
                (Some(b(1, 0)), Some((b(1, 0), va.clone())), 1),
            ),
            (
                "a view of another epoch is refused",
                acceptor(1, None, None),
                accept(b(1, 0), &v3),
                invalid(),
                false,
                (None, None, 1),
            ),
            (
                "a view without a majority of full members is refused",
                acceptor(1, None, None),
                accept(b(1, 0), &view(2, &[0], &[1, 2])),
                invalid(),
                false,
                (None, None, 1),
            ),
            (
                "accept for the committed epoch is stale",
                acceptor(2, None, None),
                accept(b(1, 0), &va),
                Reply::Stale { committed: view(2, &[0, 1, 2], &[]) },
                false,
                (None, None, 2),
            ),
            (
                "accept past the open instance: behind",
                acceptor(1, None, None),
                Request::Accept { epoch: 3, ballot: b(1, 0), view: v3.clone() },
                Reply::Behind { committed: v1.clone() },
                false,
                (None, None, 1),
            ),
            (
                "an empty restart abstains from accept",
                AcceptorState::fresh_empty(3),
                accept(b(1, 0), &va),
                Reply::Abstain { committed: v1.clone() },
                false,
                (None, None, 1),
            ),
            (
                "commit of the open instance closes it",
                acceptor(1, Some(b(2, 1)), Some((b(2, 1), vb.clone()))),
                Request::Commit { view: vb.clone() },
                Reply::Ack { epoch: 2 },
                true,
                (None, None, 2),
            ),
            (
                "commit may skip epochs",
                acceptor(1, Some(b(2, 1)), None),
                Request::Commit { view: view(4, &[0, 1], &[]) },
                Reply::Ack { epoch: 4 },
                true,
                (None, None, 4),
            ),
            (
                "a repeated commit changes nothing",
                acceptor(3, None, None),
                Request::Commit { view: v3.clone() },
                Reply::Ack { epoch: 3 },
                false,
                (None, None, 3),
            ),
            (
                "an older commit changes nothing",
                acceptor(3, Some(b(1, 0)), None),
                Request::Commit { view: va.clone() },
                Reply::Ack { epoch: 3 },
                false,
                (Some(b(1, 0)), None, 3),
            ),
            (
                "a different view for the committed epoch is refused",
                acceptor(2, None, None),
                Request::Commit { view: va.clone() },
                invalid(),
                false,
                (None, None, 2),
            ),
            (
                "an invalid committed view is refused",
                acceptor(1, None, None),
                Request::Commit { view: view(2, &[0, 7], &[]) },
                invalid(),
                false,
                (None, None, 1),
            ),
            (
                "query reports the committed view",
                acceptor(1, Some(b(1, 0)), None),
                Request::Query,
                Reply::Report { committed: v1.clone(), voting: true },
                false,
                (Some(b(1, 0)), None, 1),
            ),
            (
                "an empty restart reports it does not vote",
                AcceptorState::fresh_empty(3),
                Request::Query,
                Reply::Report { committed: v1.clone(), voting: false },
                false,
                (None, None, 1),
            ),
        ];
        for (case, mut state, request, want, want_changed, (promised, accepted, committed)) in cases {
            let before = state.clone();
            let (reply, changed) = state.handle(&request);
            assert!(same(&reply, &want), "{case}: got {reply:?}, want {want:?}");
            assert_eq!(changed, want_changed, "{case}: changed");
            // The persistence flag is exact: set if and only if the state differs.
            assert_eq!(changed, state != before, "{case}: changed flag vs state");
            assert_eq!(
                (state.promised, state.accepted, state.committed.epoch),
                (promised, accepted, committed),
                "{case}"
            );
        }
    }

    #[test]
    fn empty_restart_votes_only_after_learning() {
        let mut s = AcceptorState::fresh_empty(3);
        assert!(!s.votes());
        assert_eq!(s.on_prepare(2, b(1, 0)).0, Reply::Abstain { committed: View::initial(3) });
        // It still learns commits (coordinators learn views from it), but keeps abstaining.
        assert_eq!(s.on_commit(view(2, &[0, 1], &[2])), (Reply::Ack { epoch: 2 }, true));
        assert!(matches!(s.on_prepare(3, b(1, 0)), (Reply::Abstain { .. }, false)));
        assert_eq!(s.on_query(), Reply::Report { committed: view(2, &[0, 1], &[2]), voting: false });

        // The others report epoch 4 committed: it may have voted up to instance 6 before.
        assert!(s.learned(view(4, &[0, 1, 2], &[])));
        assert_eq!((s.committed.epoch, s.can_vote, s.abstain_through), (4, true, 6));
        assert!(!s.learned(view(9, &[0, 1, 2], &[])), "learning again is a no-op");
        for epoch in [5, 6] {
            assert!(matches!(s.on_prepare(epoch, b(1, 0)), (Reply::Abstain { .. }, false)), "abstains in {epoch}");
            assert!(matches!(s.on_accept(epoch, b(1, 0), view(epoch, &[0, 1, 2], &[])), (Reply::Abstain { .. }, _)));
            assert!(s.on_commit(view(epoch, &[0, 1, 2], &[])).1);
        }
        assert!(s.votes());
        assert_eq!(s.on_prepare(7, b(1, 0)), (Reply::Promise { epoch: 7, ballot: b(1, 0), accepted: None }, true));
    }

    #[test]
    fn learning_an_older_view_keeps_the_committed_one() {
        let mut s = AcceptorState::fresh_empty(3);
        s.on_commit(view(5, &[0, 1, 2], &[]));
        assert!(s.learned(view(3, &[0, 1], &[])));
        // Before its restart it voted at most in instance 5 (3 + 2); instance 6 is new to it.
        assert_eq!((s.committed.epoch, s.abstain_through), (5, 5));
        assert!(s.votes());
    }

    #[test]
    fn recovery_needs_enough_voting_others() {
        for (replicas, needed) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (7, 4)] {
            assert_eq!(Recovery::new(0, replicas).needed(), needed, "{replicas} replicas");
        }
        let report = |epoch, voting| Reply::Report { committed: view(epoch, &[0, 1, 2], &[]), voting };
        let mut r = Recovery::new(0, 3);
        let steps = [
            (0, report(7, true), None, "its own report does not count"),
            (1, report(9, false), None, "a non-voting replica does not count"),
            (1, Reply::Ack { epoch: 3 }, None, "other replies do not count"),
            (5, report(9, true), None, "an unknown replica does not count"),
            (1, report(3, true), None, "one of two"),
            (1, report(3, true), None, "a duplicate counts once"),
            (2, report(5, true), Some(view(5, &[0, 1, 2], &[])), "two: the highest view"),
        ];
        for (from, reply, want, case) in steps {
            assert_eq!(r.on_report(from, &reply), want, "{case}");
        }
    }

    #[test]
    fn validation_table() {
        let cases = [
            (View::initial(3), 3, Ok(())),
            (view(2, &[0, 1], &[2]), 3, Ok(())),
            (view(2, &[0, 3], &[]), 3, Err(InvalidView::UnknownReplica { id: 3, replicas: 3 })),
            (view(2, &[0, 1], &[5]), 3, Err(InvalidView::UnknownReplica { id: 5, replicas: 3 })),
            (view(2, &[0, 0, 1], &[]), 3, Err(InvalidView::Duplicate(0))),
            (view(2, &[0, 1], &[1]), 3, Err(InvalidView::Duplicate(1))),
            (view(2, &[0], &[1, 2]), 3, Err(InvalidView::TooFewMembers { members: 1, needed: 2 })),
            (view(2, &[0, 1], &[2, 3]), 4, Err(InvalidView::TooFewMembers { members: 2, needed: 3 })),
            (view(2, &[2, 3, 4], &[]), 5, Ok(())),
        ];
        for (v, replicas, want) in cases {
            assert_eq!(validate(&v, replicas), want, "{v:?} of {replicas}");
            assert_eq!(is_valid(&v, replicas), want.is_ok());
        }
    }

    #[test]
    fn helpers_keep_a_majority_of_full_members() {
        let all3 = View::initial(3);
        let all5 = View::initial(5);
        let cases: Vec<(&str, Option<View>, Option<View>)> = vec![
            ("evict a member", evict(&all3, 2, 3), Some(view(2, &[0, 1], &[]))),
            ("evict below a majority", evict(&view(2, &[0, 1], &[]), 1, 3), None),
            ("evict a learner", evict(&view(3, &[0, 1], &[2]), 2, 3), Some(view(4, &[0, 1], &[]))),
            ("evict a replica not in the view", evict(&view(2, &[0, 1], &[]), 2, 3), None),
            ("evict 2 of 5", evict(&view(2, &[1, 2, 3, 4], &[]), 1, 5), Some(view(3, &[2, 3, 4], &[]))),
            ("evict 3 of 5", evict(&view(3, &[2, 3, 4], &[]), 2, 5), None),
            ("evict one of 5", evict(&all5, 0, 5), Some(view(2, &[1, 2, 3, 4], &[]))),
            (
                "add an evicted replica as learner",
                add_learner(&view(2, &[0, 1], &[]), 2, 3),
                Some(view(3, &[0, 1], &[2])),
            ),
            ("learners stay sorted", add_learner(&view(3, &[2, 3, 4], &[1]), 0, 5), Some(view(4, &[2, 3, 4], &[0, 1]))),
            ("add a member as learner", add_learner(&all3, 1, 3), None),
            ("add a learner twice", add_learner(&view(3, &[0, 1], &[2]), 2, 3), None),
            ("add an unknown replica", add_learner(&view(2, &[0, 1], &[]), 3, 3), None),
            ("promote a learner", promote(&view(3, &[0, 1], &[2]), 2, 3), Some(view(4, &[0, 1, 2], &[]))),
            ("members stay sorted", promote(&view(3, &[1, 2], &[0]), 0, 3), Some(view(4, &[0, 1, 2], &[]))),
            ("promote a non-learner", promote(&view(2, &[0, 1], &[]), 2, 3), None),
            ("promote a member", promote(&all3, 0, 3), None),
        ];
        for (case, got, want) in cases {
            assert_eq!(got, want, "{case}");
        }
        // Whatever a helper builds is a valid view one epoch on: from all members, from a bare
        // majority, and from a bare majority with the others learning.
        for replicas in 1..=5u32 {
            let (majority, rest): (Vec<u32>, Vec<u32>) = (0..replicas).partition(|&id| id <= replicas / 2);
            let starts = [View::initial(replicas), view(7, &majority, &[]), view(9, &majority, &rest)];
            for v in starts {
                assert!(is_valid(&v, replicas), "{v:?}");
                for id in 0..replicas + 1 {
                    let next = [evict(&v, id, replicas), add_learner(&v, id, replicas), promote(&v, id, replicas)];
                    for next in next.into_iter().flatten() {
                        assert_eq!(next.epoch, v.epoch + 1);
                        assert!(is_valid(&next, replicas), "{next:?} of {replicas}");
                    }
                }
            }
        }
    }

    /// A reply to a Prepare (`P`) or an Accept (`A`) fed to a proposer.
    #[derive(Clone, Copy)]
    enum Phase {
        P,
        A,
    }

    #[test]
    fn proposer_table() {
        use Phase::{A, P};
        use ProposerStep::*;
        let me = b(3, 2);
        let own = view(2, &[0, 2], &[]);
        let va = view(2, &[0, 1], &[]);
        let vb = view(2, &[1, 2], &[]);
        let promise = |accepted: Option<(Ballot, View)>| Reply::Promise { epoch: 2, ballot: me, accepted };
        let none = promise(None);
        let ok = Reply::Accepted { epoch: 2, ballot: me };
        let committed = view(2, &[0, 1], &[]);
        let own5 = view(2, &[0, 2, 4], &[1]);
        // (case, replicas, [(phase, from, reply, step)]); the proposal is `own` (`own5` for 5)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, u32, Vec<(Phase, u32, Reply, ProposerStep)>)> = vec![
            (
                "a majority of empty promises proposes its own view",
                3,
                vec![(P, 0, none.clone(), Wait), (P, 2, none.clone(), SendAccept(own.clone()))],
            ),
            (
                "a duplicate promise counts once",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                ],
            ),
            (
                "a previously accepted view is proposed again",
                3,
                vec![(P, 0, none.clone(), Wait), (P, 1, promise(Some((b(1, 0), va.clone()))), SendAccept(va.clone()))],
            ),
            (
                "the accepted view with the highest ballot wins",
                3,
                vec![
                    (P, 0, promise(Some((b(2, 1), vb.clone()))), Wait),
                    (P, 1, promise(Some((b(1, 0), va.clone()))), SendAccept(vb.clone())),
                ],
            ),
            (
                "five replicas need three promises",
                5,
                vec![
                    (P, 4, none.clone(), Wait),
                    (P, 1, none.clone(), Wait),
                    (P, 3, none.clone(), SendAccept(own5.clone())),
                ],
            ),
            (
                "a majority of accepts chooses; duplicates count once; then the round is over",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                    (P, 2, none.clone(), Wait),
                    (A, 0, ok.clone(), Wait),
                    (A, 0, ok.clone(), Wait),
                    (A, 2, ok.clone(), Chosen(own.clone())),
                    (A, 1, ok.clone(), Wait),
                ],
            ),
            (
                "a refused prepare retries above the promise",
                3,
                vec![
                    (P, 0, Reply::Nack { promised: b(5, 1) }, Retry { higher_than: b(5, 1) }),
                    (P, 1, none.clone(), Wait),
                ],
            ),
            (
                "our own ballot refused by a replica that promised it is a duplicate",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 0, Reply::Nack { promised: me }, Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                ],
            ),
            (
                "our own ballot refused by another replica was used before: outbid it",
                3,
                vec![(P, 0, none.clone(), Wait), (P, 1, Reply::Nack { promised: me }, Retry { higher_than: me })],
            ),
            (
                "a refused accept retries",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                    (A, 0, ok.clone(), Wait),
                    (A, 1, Reply::Nack { promised: b(9, 0) }, Retry { higher_than: b(9, 0) }),
                    (A, 2, ok.clone(), Wait),
                ],
            ),
            (
                "a late refusal of the prepare does not stop the accepts",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                    (P, 2, Reply::Nack { promised: b(9, 0) }, Wait),
                    (A, 0, ok.clone(), Wait),
                    (A, 1, ok.clone(), Chosen(own.clone())),
                ],
            ),
            (
                "a stale reply adopts the committed view",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 1, Reply::Stale { committed: committed.clone() }, Adopt(committed.clone())),
                ],
            ),
            (
                "a stale reply in phase 2 adopts too",
                3,
                vec![
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                    (A, 2, Reply::Stale { committed: view(4, &[0, 1], &[]) }, Adopt(view(4, &[0, 1], &[]))),
                ],
            ),
            (
                "a replica behind is caught up, then counts",
                3,
                vec![
                    (P, 1, Reply::Behind { committed: View::initial(3) }, CatchUp(1)),
                    (P, 0, none.clone(), Wait),
                    (P, 1, none.clone(), SendAccept(own.clone())),
                    (A, 2, Reply::Behind { committed: View::initial(3) }, CatchUp(2)),
                ],
            ),
            (
                "an abstaining replica is no vote",
                3,
                vec![
                    (P, 0, Reply::Abstain { committed: View::initial(3) }, Wait),
                    (P, 1, none.clone(), Wait),
                    (P, 2, none.clone(), SendAccept(own.clone())),
                ],
            ),
            (
                "replies of another epoch or ballot, or of unknown replicas, do not count",
                3,
                vec![
                    (P, 0, Reply::Promise { epoch: 3, ballot: me, accepted: None }, Wait),
                    (P, 1, Reply::Promise { epoch: 2, ballot: b(1, 0), accepted: None }, Wait),
                    (P, 7, none.clone(), Wait),
                    (P, 2, none.clone(), Wait),
                    (A, 2, ok.clone(), Wait),
                    (A, 0, Reply::Accepted { epoch: 2, ballot: b(1, 0) }, Wait),
                ],
            ),
            (
                "an older stale reply is ignored",
                3,
                vec![(P, 0, Reply::Stale { committed: View::initial(3) }, Wait), (P, 1, none.clone(), Wait)],
            ),
        ];
        for (case, replicas, steps) in cases {
            let proposal = if replicas == 5 { own5.clone() } else { own.clone() };
            let mut p = Proposer::new(2, me, proposal, replicas).unwrap();
            for (i, (phase, from, reply, want)) in steps.into_iter().enumerate() {
                let got = match phase {
                    P => p.on_promise(from, &reply),
                    A => p.on_accepted(from, &reply),
                };
                assert_eq!(got, want, "{case}: step {i}");
            }
        }
    }

    #[test]
    fn proposer_refuses_bad_proposals() {
        assert_eq!(
            Proposer::new(3, b(1, 0), view(2, &[0, 1], &[]), 3).unwrap_err(),
            InvalidView::WrongEpoch { expected: 3, got: 2 }
        );
        assert_eq!(
            Proposer::new(2, b(1, 0), view(2, &[0], &[]), 3).unwrap_err(),
            InvalidView::TooFewMembers { members: 1, needed: 2 }
        );
        let p = Proposer::new(2, b(1, 0), view(2, &[0, 1], &[]), 3).unwrap();
        assert_eq!(p.request(), Request::Prepare { epoch: 2, ballot: b(1, 0) });
        assert_eq!((p.epoch(), p.ballot(), p.value(), p.is_done()), (2, b(1, 0), None, false));
    }

    #[test]
    fn wire_format() {
        let prepare = Request::Prepare { epoch: 2, ballot: b(1, 0) };
        assert_eq!(
            serde_json::to_value(&prepare).unwrap(),
            serde_json::json!({"type": "prepare", "epoch": 2, "ballot": {"counter": 1, "coordinator": 0}})
        );
        let requests = [
            prepare,
            Request::Accept { epoch: 2, ballot: b(1, 0), view: view(2, &[0, 1], &[]) },
            Request::Commit { view: view(2, &[0, 1], &[]) },
            Request::Query,
        ];
        for r in requests {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r, "{json}");
        }
        let replies = [
            Reply::Promise { epoch: 2, ballot: b(1, 0), accepted: Some((b(1, 0), view(2, &[0, 1], &[2]))) },
            Reply::Promise { epoch: 2, ballot: b(1, 0), accepted: None },
            Reply::Accepted { epoch: 2, ballot: b(1, 0) },
            Reply::Nack { promised: b(4, 1) },
            Reply::Stale { committed: View::initial(3) },
            Reply::Behind { committed: View::initial(3) },
            Reply::Abstain { committed: View::initial(3) },
            Reply::Ack { epoch: 2 },
            Reply::Report { committed: View::initial(3), voting: true },
            Reply::Invalid { reason: "no".into() },
        ];
        for r in replies {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), r, "{json}");
        }
        let state = acceptor(4, Some(b(2, 1)), Some((b(2, 1), view(5, &[0, 1], &[]))));
        assert_eq!(AcceptorState::decode(&state.encode()), Some(state));
        // A state written before `abstain_through` existed still loads.
        let old = br#"{"replicas":3,"committed":{"epoch":1,"members":[0,1,2]},"promised":null,"accepted":null,"can_vote":true}"#;
        assert_eq!(AcceptorState::decode(old), Some(AcceptorState::initial(3)));
        assert_eq!(AcceptorState::decode(b"not json"), None);
    }

    /// Delivers `request` to replica `to` and returns its reply.
    fn ask(replicas: &mut [AcceptorState], to: u32, request: &Request) -> Reply {
        replicas[to as usize].handle(request).0
    }

    /// The interleaving of the brief: A prepares on two replicas, B outbids it on all three,
    /// A's accept is refused, A retries higher and must carry B's view on.
    #[test]
    fn two_coordinators_scripted() {
        let mut rs = vec![AcceptorState::initial(3); 3];
        let va = evict(&View::initial(3), 2, 3).unwrap();
        let vb = evict(&View::initial(3), 0, 3).unwrap();
        let mut a = Proposer::new(2, b(1, 0), va.clone(), 3).unwrap();
        let mut bp = Proposer::new(2, b(1, 1), vb.clone(), 3).unwrap();

        assert_eq!(a.on_promise(0, &ask(&mut rs, 0, &a.request())), ProposerStep::Wait);
        assert_eq!(a.on_promise(1, &ask(&mut rs, 1, &a.request())), ProposerStep::SendAccept(va.clone()));
        for r in 0..3 {
            let step = bp.on_promise(r, &ask(&mut rs, r, &bp.request()));
            assert_eq!(step, if r == 1 { ProposerStep::SendAccept(vb.clone()) } else { ProposerStep::Wait });
        }
        // A's accept reaches replica 0, which promised B meanwhile.
        assert_eq!(a.on_accepted(0, &ask(&mut rs, 0, &a.request())), ProposerStep::Retry { higher_than: b(1, 1) });
        // B's accept reaches replica 2 only, then B goes quiet (say, it crashed).
        assert_eq!(bp.on_accepted(2, &ask(&mut rs, 2, &bp.request())), ProposerStep::Wait);

        // A retries higher; its quorum {1, 2} includes replica 2, which accepted B's view.
        let mut a2 = Proposer::new(2, next_ballot(b(1, 1), 0), va.clone(), 3).unwrap();
        assert_eq!(a2.on_promise(1, &ask(&mut rs, 1, &a2.request())), ProposerStep::Wait);
        assert_eq!(a2.on_promise(2, &ask(&mut rs, 2, &a2.request())), ProposerStep::SendAccept(vb.clone()));
        assert_eq!(a2.on_accepted(0, &ask(&mut rs, 0, &a2.request())), ProposerStep::Wait);
        assert_eq!(a2.on_accepted(1, &ask(&mut rs, 1, &a2.request())), ProposerStep::Chosen(vb.clone()));
        // B wakes up: its accept is refused now; a retry of B finds the chosen view too.
        assert_eq!(bp.on_accepted(1, &ask(&mut rs, 1, &bp.request())), ProposerStep::Retry { higher_than: b(2, 0) });
        for r in 0..3 {
            ask(&mut rs, r, &Request::Commit { view: vb.clone() });
        }
        let mut b2 = Proposer::new(2, next_ballot(b(2, 0), 1), vb.clone(), 3).unwrap();
        assert_eq!(b2.on_promise(0, &ask(&mut rs, 0, &b2.request())), ProposerStep::Adopt(vb.clone()));
    }

    /// Why a replica that restarted empty abstains through two epochs past the learned view:
    /// with one epoch only, this schedule chooses two views for epoch 3.
    fn amnesia_script(margin: u64) -> Vec<View> {
        let (a, x, y) = (0u32, 1u32, 2u32);
        let mut rs = vec![AcceptorState::initial(3); 3];
        let v2 = evict(&View::initial(3), 2, 3).unwrap();
        let w = add_learner(&v2, 2, 3).unwrap();
        let w2 = view(3, &[0, 1, 2], &[]);
        let mut chosen = vec![];

        // Epoch 2 is chosen by {a, x}; only a hears the commit.
        let mut p1 = Proposer::new(2, b(1, 0), v2.clone(), 3).unwrap();
        for r in [a, x] {
            p1.on_promise(r, &ask(&mut rs, r, &p1.request()));
        }
        for r in [a, x] {
            p1.on_accepted(r, &ask(&mut rs, r, &p1.request()));
        }
        ask(&mut rs, a, &Request::Commit { view: v2.clone() });
        // A coordinator prepares epoch 3 with a high ballot; a promises it.
        let mut p = Proposer::new(3, b(5, 0), w.clone(), 3).unwrap();
        assert_eq!(p.on_promise(a, &ask(&mut rs, a, &p.request())), ProposerStep::Wait);

        // a loses its disk, learns epoch 1 from x and y, and hears the commit of 2 again.
        rs[a as usize] = AcceptorState::fresh_empty(3);
        let mut rec = Recovery::new(a, 3);
        let learned = [x, y].into_iter().find_map(|r| rec.on_report(r, &ask(&mut rs, r, &Request::Query))).unwrap();
        rs[a as usize].learned(learned.clone());
        rs[a as usize].abstain_through = learned.epoch + margin;
        for r in [a, x, y] {
            ask(&mut rs, r, &Request::Commit { view: v2.clone() });
        }

        // Another coordinator, with a lower ballot, asks a and x.
        let mut q = Proposer::new(3, b(1, 1), w2.clone(), 3).unwrap();
        q.on_promise(a, &ask(&mut rs, a, &q.request()));
        if let ProposerStep::SendAccept(_) = q.on_promise(x, &ask(&mut rs, x, &q.request())) {
            q.on_accepted(a, &ask(&mut rs, a, &q.request()));
            if let ProposerStep::Chosen(v) = q.on_accepted(x, &ask(&mut rs, x, &q.request())) {
                chosen.push(v);
            }
        }
        // The first coordinator completes its quorum with y and gets x and y to accept.
        if let ProposerStep::SendAccept(_) = p.on_promise(y, &ask(&mut rs, y, &p.request())) {
            p.on_accepted(x, &ask(&mut rs, x, &p.request()));
            if let ProposerStep::Chosen(v) = p.on_accepted(y, &ask(&mut rs, y, &p.request())) {
                chosen.push(v);
            }
        }
        chosen
    }

    #[test]
    fn empty_restart_abstains_two_epochs_past_the_learned_view() {
        let unsafe_margin = amnesia_script(1);
        assert_eq!(unsafe_margin.len(), 2, "the schedule breaks a margin of one epoch");
        assert_ne!(unsafe_margin[0], unsafe_margin[1]);
        assert_eq!(amnesia_script(2), vec![add_learner(&evict(&View::initial(3), 2, 3).unwrap(), 2, 3).unwrap()]);
    }

    // ---- Simulation: coordinators and replicas over a lossy, reordering network ----

    /// xorshift64*: a tiny seeded generator, so every schedule replays from its seed.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng((seed.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn permille(&mut self, p: u64) -> bool {
            self.next() % 1000 < p
        }
    }

    /// Who sent a request, and so receives its reply.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Client {
        Coordinator(usize),
        /// A replica recovering from an empty restart, querying the others.
        Replica(u32),
    }

    /// A request to a replica, or its reply on the way back.
    #[derive(Clone, Debug)]
    struct Msg {
        client: Client,
        /// The client's incarnation when it sent the request: a restarted process never
        /// receives the replies to its previous life's requests (they were HTTP responses).
        incarnation: u64,
        /// The coordinator's round (epoch, ballot) the request belongs to.
        round: Option<(u64, Ballot)>,
        replica: u32,
        request: Request,
        /// `None` on the way to the replica.
        reply: Option<Reply>,
    }

    /// Fault rates, per mille of simulation steps (drop and dup: of deliveries).
    #[derive(Clone, Copy)]
    struct Faults {
        drop: u64,
        dup: u64,
        /// A coordinator gives up on its round and starts over with a higher ballot.
        timeout: u64,
        /// A coordinator restarts: forgets its ballots (and may reuse one) and relearns the
        /// view from a random replica.
        restart: u64,
        /// A replica loses its store and recovers through `Recovery`.
        wipe: u64,
        max_wipes: u32,
        /// Epochs taken off the abstain margin after an empty restart (0: the real rule);
        /// only to show the simulation catches an unsafe margin.
        weaken: u64,
    }

    struct Coordinator {
        me: u32,
        incarnation: u64,
        /// The committed view it proposes changes to.
        base: View,
        /// Highest ballot used or seen refused, for `next_ballot`.
        highest: Ballot,
        round: Option<Proposer>,
    }

    struct World {
        n: u32,
        max_epoch: u64,
        faults: Faults,
        rng: Rng,
        replicas: Vec<AcceptorState>,
        incarnations: Vec<u64>,
        recoveries: Vec<Option<Recovery>>,
        wipes: u32,
        coordinators: Vec<Coordinator>,
        net: Vec<Msg>,
        /// Oracle: who accepted what under each (epoch, ballot).
        votes: BTreeMap<(u64, Ballot), (View, BTreeSet<u32>)>,
        /// Oracle: the view a majority accepted, per epoch. Agreement: never two.
        chosen: BTreeMap<u64, View>,
    }

    impl World {
        fn new(seed: u64, n: u32, coordinators: usize, max_epoch: u64, faults: Faults) -> World {
            let mut w = World {
                n,
                max_epoch,
                faults,
                rng: Rng::new(seed),
                replicas: vec![AcceptorState::initial(n); n as usize],
                incarnations: vec![0; n as usize],
                recoveries: vec![None; n as usize],
                wipes: 0,
                coordinators: (0..coordinators)
                    .map(|c| Coordinator {
                        me: c as u32,
                        incarnation: 0,
                        base: View::initial(n),
                        highest: Ballot::ZERO,
                        round: None,
                    })
                    .collect(),
                net: vec![],
                votes: BTreeMap::new(),
                chosen: BTreeMap::new(),
            };
            for c in 0..coordinators {
                w.start_round(c);
            }
            w
        }

        fn send(&mut self, client: Client, replica: u32, request: Request) {
            let (incarnation, round) = match client {
                Client::Coordinator(c) => {
                    let co = &self.coordinators[c];
                    (co.incarnation, co.round.as_ref().map(|p| (p.epoch(), p.ballot())))
                }
                Client::Replica(r) => (self.incarnations[r as usize], None),
            };
            self.net.push(Msg { client, incarnation, round, replica, request, reply: None });
        }

        fn broadcast(&mut self, c: usize, request: Request) {
            for r in 0..self.n {
                self.send(Client::Coordinator(c), r, request.clone());
            }
        }

        /// A new round on the coordinator's base: a random change, a higher ballot.
        fn start_round(&mut self, c: usize) {
            let (n, base) = (self.n, self.coordinators[c].base.clone());
            if base.epoch >= self.max_epoch {
                self.coordinators[c].round = None;
                return;
            }
            let options: Vec<View> = (0..n)
                .flat_map(|id| [evict(&base, id, n), add_learner(&base, id, n), promote(&base, id, n)])
                .flatten()
                .collect();
            let proposal = options[self.rng.below(options.len())].clone();
            let co = &mut self.coordinators[c];
            co.highest = next_ballot(co.highest, co.me);
            co.round = Some(Proposer::new(base.epoch + 1, co.highest, proposal, n).expect("helpers build valid views"));
            self.broadcast(c, self.coordinators[c].round.as_ref().unwrap().request());
        }

        fn record_vote(&mut self, epoch: u64, ballot: Ballot, view: &View, r: u32) -> Result<(), String> {
            let (v, voters) = self.votes.entry((epoch, ballot)).or_insert_with(|| (view.clone(), BTreeSet::new()));
            if v != view {
                return Err(format!("epoch {epoch} ballot {ballot}: accepted both {v:?} and {view:?}"));
            }
            voters.insert(r);
            if voters.len() >= majority(self.n) {
                match self.chosen.get(&epoch) {
                    Some(c) if c != view => {
                        return Err(format!("AGREEMENT: epoch {epoch} chose {c:?} and then {view:?}"))
                    }
                    Some(_) => {}
                    None => {
                        self.chosen.insert(epoch, view.clone());
                    }
                }
            }
            Ok(())
        }

        /// Whatever a replica committed was chosen.
        fn check_committed(&self, r: u32) -> Result<(), String> {
            let c = &self.replicas[r as usize].committed;
            if c.epoch > 1 && self.chosen.get(&c.epoch) != Some(c) {
                return Err(format!("replica {r} committed {c:?}, chosen was {:?}", self.chosen.get(&c.epoch)));
            }
            Ok(())
        }

        fn deliver(&mut self, msg: Msg) -> Result<(), String> {
            let r = msg.replica;
            let Some(reply) = msg.reply.clone() else {
                let (reply, _changed) = self.replicas[r as usize].handle(&msg.request);
                if let Reply::Invalid { reason } = &reply {
                    return Err(format!("replica {r} refused {:?}: {reason}", msg.request));
                }
                if let (Request::Accept { epoch, ballot, view }, Reply::Accepted { .. }) = (&msg.request, &reply) {
                    self.record_vote(*epoch, *ballot, view, r)?;
                }
                self.check_committed(r)?;
                self.net.push(Msg { reply: Some(reply), ..msg });
                return Ok(());
            };
            match msg.client {
                Client::Coordinator(c) => {
                    let co = &mut self.coordinators[c];
                    let Some(p) = co.round.as_mut() else { return Ok(()) };
                    if msg.incarnation != co.incarnation || msg.round != Some((p.epoch(), p.ballot())) {
                        return Ok(());
                    }
                    let step = match msg.request {
                        Request::Prepare { .. } => p.on_promise(r, &reply),
                        Request::Accept { .. } => p.on_accepted(r, &reply),
                        _ => ProposerStep::Wait,
                    };
                    self.on_step(c, step)
                }
                Client::Replica(a) => {
                    if msg.incarnation != self.incarnations[a as usize] {
                        return Ok(());
                    }
                    let learned = self.recoveries[a as usize].as_mut().and_then(|rec| rec.on_report(r, &reply));
                    if let Some(view) = learned {
                        self.recoveries[a as usize] = None;
                        let s = &mut self.replicas[a as usize];
                        s.learned(view.clone());
                        s.abstain_through = view.epoch + 2 - self.faults.weaken;
                        self.check_committed(a)?;
                    }
                    Ok(())
                }
            }
        }

        fn on_step(&mut self, c: usize, step: ProposerStep) -> Result<(), String> {
            match step {
                ProposerStep::Wait => {}
                ProposerStep::SendAccept(_) => {
                    let request = self.coordinators[c].round.as_ref().unwrap().request();
                    self.broadcast(c, request);
                }
                ProposerStep::Chosen(v) => {
                    if self.chosen.get(&v.epoch) != Some(&v) {
                        return Err(format!("coordinator {c} told {v:?} was chosen; oracle: {:?}", self.chosen));
                    }
                    self.broadcast(c, Request::Commit { view: v.clone() });
                    self.coordinators[c].base = v;
                    self.start_round(c);
                }
                ProposerStep::Adopt(v) => {
                    if self.chosen.get(&v.epoch) != Some(&v) {
                        return Err(format!("coordinator {c} adopted {v:?}; oracle: {:?}", self.chosen));
                    }
                    if v.epoch > self.coordinators[c].base.epoch {
                        self.coordinators[c].base = v;
                    }
                    self.start_round(c);
                }
                ProposerStep::Retry { higher_than } => {
                    let co = &mut self.coordinators[c];
                    co.highest = co.highest.max(higher_than);
                    self.start_round(c);
                }
                ProposerStep::CatchUp(r) => {
                    let base = self.coordinators[c].base.clone();
                    let request = self.coordinators[c].round.as_ref().unwrap().request();
                    self.send(Client::Coordinator(c), r, Request::Commit { view: base });
                    self.send(Client::Coordinator(c), r, request);
                }
            }
            Ok(())
        }

        /// One step of the schedule; false once nothing can happen any more.
        fn step(&mut self) -> Result<bool, String> {
            let f = self.faults;
            let dice = self.rng.next() % 1000;
            if dice < f.timeout || self.net.is_empty() {
                let active: Vec<usize> =
                    (0..self.coordinators.len()).filter(|&c| self.coordinators[c].round.is_some()).collect();
                if active.is_empty() {
                    return Ok(!self.net.is_empty());
                }
                let c = active[self.rng.below(active.len())];
                self.start_round(c);
            } else if dice < f.timeout + f.restart {
                let c = self.rng.below(self.coordinators.len());
                let from = self.rng.below(self.n as usize);
                let co = &mut self.coordinators[c];
                co.incarnation += 1;
                co.highest = Ballot::ZERO;
                co.base = self.replicas[from].committed.clone();
                self.start_round(c);
            } else if dice < f.timeout + f.restart + f.wipe && self.wipes < f.max_wipes {
                let a = self.rng.below(self.n as usize) as u32;
                self.wipes += 1;
                self.replicas[a as usize] = AcceptorState::fresh_empty(self.n);
                self.incarnations[a as usize] += 1;
                self.recoveries[a as usize] = Some(Recovery::new(a, self.n));
                for r in (0..self.n).filter(|&r| r != a) {
                    self.send(Client::Replica(a), r, Request::Query);
                }
            } else if dice < f.timeout + f.restart + f.wipe + 20 {
                // A recovering replica asks again (its queries or their answers may be lost).
                let a = self.rng.below(self.n as usize) as u32;
                if self.recoveries[a as usize].is_some() {
                    for r in (0..self.n).filter(|&r| r != a) {
                        self.send(Client::Replica(a), r, Request::Query);
                    }
                }
            } else {
                let i = self.rng.below(self.net.len());
                let msg = self.net.swap_remove(i);
                if self.rng.permille(f.drop) {
                    return Ok(true);
                }
                if self.rng.permille(f.dup) {
                    self.net.push(msg.clone());
                }
                self.deliver(msg)?;
            }
            Ok(true)
        }
    }

    /// Runs `seeds` schedules; panics with the seed of the first that breaks agreement.
    /// Returns how many epochs were decided over all runs (the runs must make progress, or
    /// agreement would hold trivially).
    fn explore(n: u32, coordinators: usize, max_epoch: u64, faults: Faults, seeds: u64, steps: usize) -> u64 {
        let mut decided = 0;
        for seed in 0..seeds {
            let mut w = World::new(seed, n, coordinators, max_epoch, faults);
            for _ in 0..steps {
                match w.step() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => panic!("seed {seed} ({n} replicas, {coordinators} coordinators): {e}"),
                }
            }
            decided += w.chosen.len() as u64;
        }
        decided
    }

    /// Like `explore`, but returns the first violation instead of panicking.
    fn find_violation(n: u32, coordinators: usize, max_epoch: u64, faults: Faults, seeds: u64) -> Option<String> {
        (0..seeds).find_map(|seed| {
            let mut w = World::new(seed, n, coordinators, max_epoch, faults);
            (0..3000).find_map(|_| match w.step() {
                Ok(_) => None,
                Err(e) => Some(format!("seed {seed}: {e}")),
            })
        })
    }

    /// One instance (epoch 2), dueling coordinators, reordering and timeouts only.
    const DUEL: Faults = Faults { timeout: 30, ..NO_FAULTS };
    /// Loss, duplication, timeouts and coordinators restarting (and reusing ballots).
    const LOSSY: Faults = Faults { drop: 100, dup: 100, timeout: 30, restart: 20, ..NO_FAULTS };
    /// As `LOSSY`, plus up to three replicas restarting with an empty store.
    const WIPES: Faults = Faults { drop: 50, dup: 50, timeout: 30, restart: 10, wipe: 5, max_wipes: 3, weaken: 0 };
    const NO_FAULTS: Faults = Faults { drop: 0, dup: 0, timeout: 0, restart: 0, wipe: 0, max_wipes: 0, weaken: 0 };

    #[test]
    fn simulated_duel_three_replicas() {
        assert_eq!(explore(3, 2, 2, DUEL, 2000, 2000), 2000, "every run decides its one epoch");
    }

    #[test]
    fn simulated_duel_five_replicas() {
        assert_eq!(explore(5, 2, 2, DUEL, 2000, 2000), 2000, "every run decides its one epoch");
    }

    #[test]
    fn simulated_lossy_three_replicas_two_coordinators() {
        assert!(explore(3, 2, 5, LOSSY, 1000, 3000) > 3000, "most runs decide their 4 epochs");
    }

    #[test]
    fn simulated_lossy_three_replicas_three_coordinators() {
        assert!(explore(3, 3, 5, LOSSY, 1000, 3000) > 3000, "most runs decide their 4 epochs");
    }

    #[test]
    fn simulated_lossy_five_replicas() {
        assert!(explore(5, 3, 5, LOSSY, 1000, 3000) > 1000, "runs decide more than one epoch on average");
    }

    #[test]
    fn simulated_empty_restarts_three_replicas() {
        assert!(explore(3, 2, 6, WIPES, 1000, 3000) > 3000, "runs decide 3 of 5 epochs on average");
    }

    #[test]
    fn simulated_empty_restarts_five_replicas() {
        assert!(explore(5, 3, 6, WIPES, 1000, 3000) > 1000, "runs decide more than one epoch on average");
    }

    #[test]
    fn simulation_catches_an_unsafe_abstain_margin() {
        // Mutation check: with replicas voting right after they learned, the same schedules
        // break agreement, so the passing runs above are not passing by luck.
        let faults = Faults { wipe: 20, weaken: 2, ..WIPES };
        assert!(find_violation(3, 2, 6, faults, 3000).is_some(), "no violation found with margin 0");
    }
}
