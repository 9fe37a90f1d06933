//! Membership views decided by single-decree Paxos per epoch (DESIGN section 4), as pure
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
//! let mut next = state.clone();                  // state: the replica's Mutex guard
//! let (reply, changed) = next.handle(&request);
//! if changed {
//!     store.put_meta(paxos::META_KEY, next.encode()).await?; // no reply if this fails
//! }
//! *state = next;
//! reply
//! ```
//!
//! Requests are handled one at a time (the lock is held across the write), so no reply is
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

use crate::wire::View;
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
    /// Fewer full members than a majority of the configured replicas: DESIGN keeps a
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
    /// Asks for the acceptor's committed view (a recovering replica, see [`Recovery`]).
    /// Answered by `Report`.
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

    /// The state stored under [`META_KEY`], or `None` if absent or unreadable.
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
