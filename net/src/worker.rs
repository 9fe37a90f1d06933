//! One shape for every background loop of a node (docs/design.md §11.3): the replica's lease
//! heartbeat, pruning, store watch and recovery, the order service's resume, the coordinator's
//! prober and anti-entropy.
//!
//! A worker is a name, a [`Schedule`] and a round (an async closure). [`Workers::spawn`]
//! runs the round when the schedule says (every interval, and whenever its [`Trigger`]
//! fires), until the process stops or the round says it is [`Next::Done`]. Every worker of a
//! process is started from one [`Workers`], and [`Workers::stop`] ends them together: a worker
//! waiting for its next round ends at once, one in the middle of a round has the round
//! dropped at its next await point. The nodes call it once their server has stopped answering
//! (a round dropped in the middle of a write must not have requests answered after it), so no
//! loop outlives the server it belongs to, and a test that stops a node in-process leaves
//! nothing running behind it.
//!
//! A round that fails logs it and returns [`Next::Again`]: the loop never ends on an error.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// What a round tells its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run again when the schedule says.
    Again,
    /// Run again after this pause instead of the interval (a backoff), or sooner if the
    /// trigger fires.
    After(Duration),
    /// The worker's job is done: end the loop.
    Done,
}

/// What else starts a round besides the interval.
pub enum Trigger {
    /// A notification (`notify_one` keeps one for a worker that is busy when it comes).
    Notify(Arc<Notify>),
    /// A change of a watched value, e.g. the epoch of the node's view.
    Changed(watch::Receiver<u64>),
}

impl Trigger {
    /// Completes when the trigger fires; never, once its sender is gone.
    async fn fired(&mut self) {
        match self {
            Trigger::Notify(n) => n.notified().await,
            Trigger::Changed(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

/// When a worker's rounds run.
pub struct Schedule {
    every: Duration,
    first: Duration,
    trigger: Option<Trigger>,
}

impl Schedule {
    /// A round every `every`, measured from the start of one round to the start of the next
    /// (a round longer than that is followed by the next at once), the first at once.
    pub fn every(every: Duration) -> Schedule {
        Schedule { every, first: Duration::ZERO, trigger: None }
    }

    /// The first round one interval after the start, not at once.
    pub fn after_one_interval(mut self) -> Schedule {
        self.first = self.every;
        self
    }

    /// Also a round whenever `trigger` fires; the interval then counts from that round.
    pub fn or_when(mut self, trigger: Trigger) -> Schedule {
        self.trigger = Some(trigger);
        self
    }
}

/// The background loops of one process, stopped together.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stop: StopSignal,
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
}

/// The stop flag the loops watch.
struct StopSignal(watch::Sender<bool>);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(watch::Sender::new(false))
    }
}

/// Completes once `stop` is set (at once if it is already).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // `wait_for` fails only when the sender is gone, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Workers {
        Workers::default()
    }

    /// Starts worker `name`: `round` runs as `schedule` says until [`Workers::stop`] or until
    /// a round returns [`Next::Done`]. Must be called within a Tokio runtime. A worker
    /// spawned after `stop` ends at once.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, schedule: Schedule, mut round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Next> + Send,
    {
        let name = name.into();
        let mut stop = self.inner.stop.0.subscribe();
        let Schedule { every, first, mut trigger } = schedule;
        let label = name.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + first, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut pause: Option<Duration> = None;
            loop {
                let by_tick = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    _ = tick.tick(), if pause.is_none() => true,
                    _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => false,
                    _ = async { match trigger.as_mut() { Some(t) => t.fired().await, None => std::future::pending().await } } => false,
                };
                let next = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    next = round() => next,
                };
                match next {
                    Next::Done => break,
                    Next::Again => pause = None,
                    Next::After(d) => pause = Some(d),
                }
                if !by_tick || pause.is_some() {
                    // A round the interval did not start (a trigger, the end of a backoff), or
                    // one followed by a backoff: the next interval round is a whole interval
                    // after this one.
                    tick.reset();
                }
            }
            log::debug!("worker {label} ended");
        });
        let mut tasks = self.inner.tasks.lock().unwrap();
        tasks.retain(|(_, t)| !t.is_finished());
        tasks.push((name, task));
    }

    /// [`Workers::spawn`] with a context (a node, a coordinator) that each round gets a clone
    /// of: `workers.spawn_on("prune", schedule, node.clone(), |n| async move { ... })`.
    pub fn spawn_on<T, F, Fut>(&self, name: impl Into<String>, schedule: Schedule, ctx: T, mut round: F)
    where
        T: Clone + Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = Next> + Send,
    {
        self.spawn(name, schedule, move || round(ctx.clone()))
    }

    /// Whether [`Workers::stop`] was called.
    pub fn stopping(&self) -> bool {
        *self.inner.stop.0.borrow()
    }

    /// Stops every worker and waits up to `grace` for them to end; those still running then
    /// are aborted and named in the log. Returns how many ended within the grace.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.inner.stop.0.send_replace(true);
        let tasks: Vec<(String, JoinHandle<()>)> = std::mem::take(&mut *self.inner.tasks.lock().unwrap());
        let deadline = Instant::now() + grace;
        let mut ended = 0;
        for (name, mut task) in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(_) => ended += 1,
                Err(_) => {
                    log::warn!("worker {name} did not end within {grace:?} of the stop; aborted");
                    task.abort();
                }
            }
        }
        ended
    }

    /// How many workers are running.
    pub fn running(&self) -> usize {
        self.inner.tasks.lock().unwrap().iter().filter(|(_, t)| !t.is_finished()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    fn counter() -> (Arc<AtomicU32>, impl FnMut() -> std::future::Ready<Next> + Send + 'static) {
        let n = Arc::new(AtomicU32::new(0));
        let c = n.clone();
        (n, move || {
            c.fetch_add(1, SeqCst);
            std::future::ready(Next::Again)
        })
    }

    /// Time is paused in these tests (`start_paused`): sleeps advance it without waiting.
    #[tokio::test(start_paused = true)]
    async fn rounds_run_every_interval_the_first_at_once() {
        let w = Workers::new();
        let (n, round) = counter();
        w.spawn("count", Schedule::every(Duration::from_secs(1)), round);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(SeqCst), 1, "the first round runs at once");
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(n.load(SeqCst), 3, "then one per second");
    }

    #[tokio::test(start_paused = true)]
    async fn after_one_interval_waits_for_the_first_round() {
        let w = Workers::new();
        let (n, round) = counter();
        w.spawn("count", Schedule::every(Duration::from_secs(1)).after_one_interval(), round);
        tokio::time::sleep(Duration::from_millis(990)).await;
        assert_eq!(n.load(SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(n.load(SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_runs_a_round_before_the_interval() {
        let w = Workers::new();
        let (n, round) = counter();
        let notify = Arc::new(Notify::new());
        let schedule =
            Schedule::every(Duration::from_secs(60)).after_one_interval().or_when(Trigger::Notify(notify.clone()));
        w.spawn("count", schedule, round);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(SeqCst), 0);
        notify.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(SeqCst), 1);
        let (tx, rx) = watch::channel(1u64);
        let (m, round) = counter();
        w.spawn(
            "epochs",
            Schedule::every(Duration::from_secs(60)).after_one_interval().or_when(Trigger::Changed(rx)),
            round,
        );
        tx.send_replace(2);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(m.load(SeqCst), 1, "a changed value triggers a round");
        drop(tx);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(m.load(SeqCst), 1, "a gone sender triggers nothing (no busy loop)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_replaces_the_interval_and_done_ends_the_worker() {
        let w = Workers::new();
        let times = Arc::new(Mutex::new(Vec::new()));
        let t = times.clone();
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        w.spawn("backoff", Schedule::every(Duration::from_secs(60)), move || {
            t.lock().unwrap().push(start.elapsed().as_millis());
            let next = if t.lock().unwrap().len() == 4 { Next::Done } else { Next::After(pause) };
            pause *= 2;
            std::future::ready(next)
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*times.lock().unwrap(), vec![0, 100, 300, 700]);
        assert_eq!(w.running(), 0);
    }

    /// After a backoff the interval counts from the round that ended it (a review found the
    /// round after `After(5 s)` then `Again` came at once instead of a second later).
    #[tokio::test(start_paused = true)]
    async fn the_interval_counts_from_the_round_after_a_backoff() {
        let w = Workers::new();
        let times = Arc::new(Mutex::new(Vec::new()));
        let t = times.clone();
        let start = Instant::now();
        w.spawn("after-then-again", Schedule::every(Duration::from_secs(1)), move || {
            let mut t = t.lock().unwrap();
            t.push(start.elapsed().as_millis());
            std::future::ready(if t.len() == 1 { Next::After(Duration::from_secs(5)) } else { Next::Again })
        });
        tokio::time::sleep(Duration::from_millis(7_500)).await;
        assert_eq!(*times.lock().unwrap(), vec![0, 5_000, 6_000, 7_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_waiting_and_running_rounds() {
        let w = Workers::new();
        let (n, round) = counter();
        w.spawn("idle", Schedule::every(Duration::from_secs(3600)), round);
        w.spawn("busy", Schedule::every(Duration::from_secs(1)), || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Next::Again
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(w.running(), 2);
        assert_eq!(w.stop(Duration::from_secs(1)).await, 2, "both end within the grace");
        assert_eq!(w.running(), 0);
        assert_eq!(n.load(SeqCst), 1);
        let (late, round) = counter();
        w.spawn("late", Schedule::every(Duration::from_secs(1)), round);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(late.load(SeqCst), 0, "a worker spawned after the stop never runs");
        assert!(w.stopping());
    }
}
