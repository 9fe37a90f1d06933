//! Calls to another service's primaries, made directly (docs/design.md §6.6): the order
//! service's saga steps go to the payment and stock primaries without the hop through their
//! coordinators.
//!
//! The caller learns the service's view from the replicas' rejections: every replica answers
//! a call that is not its key's, or that names an older epoch, with a 421 carrying its view
//! ([`crate::client`]'s coordinators do the same). With no view yet, a call goes to some
//! replica under epoch 0, older than every view, and its rejection brings the view. A call
//! goes to its key's primary in the newest view learned, under that view's epoch, so a
//! replica fences it exactly as it fences a coordinator's; a rejection with a newer view is
//! followed once.
//!
//! Anything else goes through the coordinators ([`Batcher`]), which follow views, re-probe
//! and evict: no primary in the view, a second rejection, a replica that could not be reached
//! or refused the call without applying it (recovering, no read lease, an answer this client
//! does not expect). A write whose outcome the replica left unknown (no answer in time, a
//! broken connection, its own failure: a 500, or a 503 for want of a quorum) is returned as
//! [`Unavailable`]: the caller knows a copy of it may still apply, and its retry goes through
//! the coordinators. A replica that did not answer, or not as expected, is passed over for
//! [`Direct::new`]'s `pass_over` while the coordinators deal with it. Only calls that may be
//! repeated go through here: each is keyed by what its path carries (a saga step's
//! transaction id), so the same call sent directly and then through a coordinator is applied
//! once.
//!
//! Concurrent calls to one primary travel together as one multi call
//! (`model::wire::MULTI_PATH`), as [`Batcher`]'s do to a coordinator.

use crate::batching::BatchQueue;
use crate::client::{Batcher, Unavailable};
use actix_web::web::Bytes;
use model::reply::Reply;
use model::routing::Method;
use model::wire::{MultiCall, View, EPOCH, MULTI_PATH, NO_LEASE, RECOVERING, STATUS_MISDIRECTED};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The epoch a call carries when the caller knows no view: older than every view (views
/// start at 1), so the replica that gets it answers with its view.
pub const NO_EPOCH: u64 = 0;

/// Multi calls in flight at once per replica. Two, as [`crate::client::BATCH_SENDERS`]: a
/// multi call is answered when its slowest call is, so a second one keeps a slow call (a
/// write waiting on a peer being evicted) from holding up the calls queued behind it; one
/// sender made about 5 % more first-time checkouts under load, within the spread of runs
/// (docs/performance.md, "The shorter checkout").
pub const SENDERS: usize = 2;

/// What a replica's answer to a direct call means to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reached {
    /// The answer to the call (a success or a business refusal).
    Answer,
    /// Not this replica's key, or an older epoch: its view, to follow.
    Misdirected(View),
    /// Refused before it was applied (recovering, no read lease, a status this client does
    /// not expect): the coordinators take it from here.
    Elsewhere,
    /// The replica's own failure, or no quorum for the write: it may have been applied.
    Unknown,
}

/// Classifies a replica's answer to a direct call: a success or a 400 is the answer, a 421
/// with a view is followed, a 503 that says the call was not applied (recovering, no read
/// lease) and any other status below 500 are left to the coordinators, and any other 5xx
/// leaves the outcome unknown.
pub fn reached(status: u16, cause: Option<&str>, body: &str) -> Reached {
    match status {
        200..=299 | 400 => Reached::Answer,
        STATUS_MISDIRECTED => match serde_json::from_str::<View>(body) {
            Ok(view) => Reached::Misdirected(view),
            Err(_) => Reached::Elsewhere,
        },
        503 if matches!(cause, Some(RECOVERING) | Some(NO_LEASE)) => Reached::Elsewhere,
        500..=599 => Reached::Unknown,
        _ => Reached::Elsewhere,
    }
}

/// Why a direct call got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// It was never delivered (the connection could not be made).
    NotSent(String),
    /// It may have been delivered (no answer in time, a broken connection, an unreadable
    /// answer).
    Unknown(String),
}

/// Whether `offered` should replace `held` as the view calls are routed by.
pub fn newer(held: Option<&View>, offered: &View) -> bool {
    held.is_none_or(|h| offered.epoch > h.epoch)
}

struct Pending {
    call: MultiCall,
    epoch: u64,
    done: oneshot::Sender<Result<Reply, NoAnswer>>,
}

/// Calls one service's primaries directly, and through its coordinators when it must.
pub struct Direct {
    /// One internal connection per replica (id = index).
    replicas: Vec<Arc<crate::rpc::Client>>,
    /// Calls waiting to go to each replica.
    queues: Vec<BatchQueue<Pending>>,
    /// The newest view learned.
    view: RwLock<Option<View>>,
    /// Until when each replica is passed over, after it did not answer.
    passed_over: Mutex<Vec<Option<Instant>>>,
    /// How long a replica that did not answer is passed over.
    pass_over: Duration,
    /// Longest wait for a direct answer.
    timeout: Duration,
    /// The replica a call without a view goes to next.
    next: AtomicUsize,
    /// The service's coordinators.
    fallback: Batcher,
}

impl Direct {
    /// Direct calls to the replicas at `replicas` (`host:port`, id = index), each answered
    /// within `timeout`, and through `fallback` when they cannot be made or answered; a
    /// replica that did not answer is passed over for `pass_over`.
    pub fn new(replicas: &[String], secret: &str, timeout: Duration, pass_over: Duration, fallback: Batcher) -> Direct {
        Direct {
            replicas: replicas.iter().map(|a| Arc::new(crate::rpc::Client::new(a, secret, true, timeout))).collect(),
            queues: replicas.iter().map(|_| BatchQueue::default()).collect(),
            view: RwLock::new(None),
            passed_over: Mutex::new(vec![None; replicas.len()]),
            pass_over,
            timeout,
            next: AtomicUsize::new(0),
            fallback,
        }
    }

    /// Makes a call keyed by `key`; its answer as [`crate::client::ServiceClient::call`]
    /// would give it. Only for calls that may be repeated (see the module's text). A write
    /// whose direct try left its outcome unknown is [`Unavailable`] (a read then goes
    /// through the coordinators at once).
    pub async fn call(&self, key: &str, method: Method, path: String) -> Result<Reply, Unavailable> {
        // One try by the view held, one more by the view its rejection brings.
        for _ in 0..2 {
            let Some((to, epoch)) = self.route(key) else { break };
            let unknown = match self.send(to, epoch, MultiCall { method, path: path.clone() }).await {
                Ok(a) => match reached(a.status, a.cause.as_deref(), &a.body) {
                    Reached::Answer => return Ok(a),
                    Reached::Misdirected(view) => {
                        self.learn(view);
                        continue;
                    }
                    Reached::Elsewhere => None,
                    Reached::Unknown => Some(format!("replica {to} answered {}: {}", a.status, a.body)),
                },
                Err(NoAnswer::NotSent(why)) => {
                    log::debug!("replica {to}: {why}");
                    None
                }
                Err(NoAnswer::Unknown(why)) => Some(format!("replica {to}: {why}")),
            };
            self.pass_over(to);
            match unknown {
                Some(why) if method == Method::Post => return Err(Unavailable(why)),
                _ => break,
            }
        }
        self.fallback.call(method, path).await
    }

    /// The replica to send a call for `key` to, and the epoch it carries: the key's primary
    /// in the view held; with no view, the next replica under [`NO_EPOCH`]. `None` when that
    /// replica is passed over (or the view names no primary).
    fn route(&self, key: &str) -> Option<(u32, u64)> {
        let (to, epoch) = match &*self.view.read().unwrap() {
            Some(view) => (view.primary(key)?, view.epoch),
            None => ((self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len().max(1)) as u32, NO_EPOCH),
        };
        let mut passed = self.passed_over.lock().unwrap();
        let slot = passed.get_mut(to as usize)?;
        match slot {
            Some(until) if Instant::now() < *until => None,
            _ => {
                *slot = None;
                Some((to, epoch))
            }
        }
    }

    fn learn(&self, offered: View) {
        let mut held = self.view.write().unwrap();
        if newer(held.as_ref(), &offered) {
            log::debug!("routing direct calls by view {}", offered.epoch);
            *held = Some(offered);
        }
    }

    fn pass_over(&self, to: u32) {
        if let Some(slot) = self.passed_over.lock().unwrap().get_mut(to as usize) {
            *slot = Some(Instant::now() + self.pass_over);
        }
    }

    /// Sends one call to replica `to` with the calls queued for it at the same time.
    async fn send(&self, to: u32, epoch: u64, call: MultiCall) -> Result<Reply, NoAnswer> {
        let (done, wait) = oneshot::channel();
        let queue = &self.queues[to as usize];
        queue
            .push(
                Pending { call, epoch, done },
                SENDERS,
                crate::client::MAX_BATCH_CALLS,
                |_| 1,
                || {
                    let (client, timeout) = (self.replicas[to as usize].clone(), self.timeout);
                    move |group| {
                        let client = client.clone();
                        async move { send_group(&client, timeout, group).await }
                    }
                },
            )
            .map_err(|_| NoAnswer::NotSent("direct sender stopped".to_string()))?;
        wait.await.map_err(|_| NoAnswer::Unknown("direct sender dropped the call".to_string()))?
    }
}

/// Sends a group of calls to one replica: the calls of each epoch together (one multi call,
/// or a plain request when alone).
async fn send_group(client: &crate::rpc::Client, timeout: Duration, group: Vec<Pending>) {
    let mut by_epoch: BTreeMap<u64, Vec<Pending>> = BTreeMap::new();
    for p in group {
        by_epoch.entry(p.epoch).or_default().push(p);
    }
    let sends = by_epoch.into_iter().map(|(epoch, mut calls)| async move {
        let epoch_header = (EPOCH.to_string(), epoch.to_string());
        if calls.len() == 1 {
            let p = calls.pop().expect("one call");
            let request = crate::rpc::Request {
                method: p.call.method,
                path: p.call.path,
                headers: vec![epoch_header],
                body: Bytes::new(),
            };
            let answer = client.call(&request, timeout).await.map_err(no_answer).map(|r| crate::answer::of_rpc(&r));
            let _ = p.done.send(answer);
            return;
        }
        let (calls, dones): (Vec<MultiCall>, Vec<_>) = calls.into_iter().map(|p| (p.call, p.done)).unzip();
        let request = crate::rpc::Request {
            method: Method::Post,
            path: MULTI_PATH.to_string(),
            headers: vec![epoch_header, ("content-type".to_string(), "application/json".to_string())],
            body: crate::client::multi_body(&calls),
        };
        let answers = match client.call(&request, timeout).await {
            Ok(r) => crate::answer::multi_answers(r.status, &r.body, dones.len()).map_err(NoAnswer::Unknown),
            Err(e) => Err(no_answer(e)),
        };
        match answers {
            Ok(answers) => {
                for (done, a) in dones.into_iter().zip(answers) {
                    let _ = done.send(Ok(a));
                }
            }
            Err(why) => dones.into_iter().for_each(|d| drop(d.send(Err(why.clone())))),
        }
    });
    futures::future::join_all(sends).await;
}

/// Whether a failed exchange may have been delivered.
fn no_answer(e: crate::rpc::Error) -> NoAnswer {
    match e {
        crate::rpc::Error::Connect(why) => NoAnswer::NotSent(why),
        other => NoAnswer::Unknown(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_answer_means() {
        let view = View { epoch: 3, members: vec![0, 2], learners: vec![1] };
        let view_json = serde_json::to_string(&view).unwrap();
        let cases = [
            (200, None, "applied", Reached::Answer),
            (400, None, "not enough credit", Reached::Answer),
            (421, None, view_json.as_str(), Reached::Misdirected(view.clone())),
            (421, None, "no view", Reached::Elsewhere),
            // Refused before anything was applied: the coordinators take the call.
            (503, Some(RECOVERING), "recovering", Reached::Elsewhere),
            (503, Some(NO_LEASE), "no read lease", Reached::Elsewhere),
            // Statuses this client does not expect (a replica that knows no such route, or
            // refuses this node's secret): the coordinators, not a retry here for ever.
            (403, None, "missing or wrong cluster secret", Reached::Elsewhere),
            (404, None, "no such endpoint", Reached::Elsewhere),
            // The replica's own failure, or a write it could not replicate: maybe applied.
            (500, None, "storage: disk full", Reached::Unknown),
            (503, Some("quorum"), "fan-out failed", Reached::Unknown),
        ];
        for (status, cause, body, want) in cases {
            assert_eq!(reached(status, cause, body), want, "{status} {cause:?} {body}");
        }
    }

    #[test]
    fn only_a_newer_view_replaces_the_one_held() {
        let v = |epoch| View { epoch, members: vec![0, 1, 2], learners: vec![] };
        assert!(newer(None, &v(1)));
        assert!(newer(Some(&v(1)), &v(2)));
        assert!(!newer(Some(&v(2)), &v(2)));
        // A deposed replica's older view (it answered "not primary" under it) is ignored.
        assert!(!newer(Some(&v(3)), &v(2)));
    }
}
