//! The order service's routes: what each parsed request does.

use crate::clients::Remote;
use crate::domain::{batch_order, Order};
use crate::saga::{drive, Mode};
use crate::unfinished::Unfinished;
use async_trait::async_trait;
use model::idempotency::RequestKey;
use model::reply::Reply;
use model::routing::{Command, OrderCommand};
use net::worker::{Next, Schedule, Trigger};
use rand::Rng;
use replica::server::{Handler, HandlerError, RequestCtx};
use replica::table::{Decision, Table};
use serde_json::json;
use std::sync::Arc;

/// How many orders are resumed at once after a start: enough to overlap their network
/// waits, few enough not to flood the other services while they may be recovering too.
const RESUME_PARALLELISM: usize = 16;

/// How old an attempt counted as unfinished must be before the `resume` worker's sweep checks
/// that its order still holds it in flight (its driver ends it as soon as it ends it).
const SWEEP_AFTER_MS: u64 = 5_000;

/// How long the sweep waits for an order's lock: one held longer has a driver at work, which
/// ends the attempt itself.
const SWEEP_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The order service's state shared by its handlers and background tasks.
pub struct Orders {
    /// The order documents.
    pub table: Table<Order>,
    /// The payment and stock services.
    pub remote: Remote,
    /// Orders whose checkout driver stopped on a failure (a write not replicated, a view
    /// change under it) with the checkout still in flight: retried by the next round of
    /// [`Orders::resume_round`] (every `resume_retry_ms`).
    pub stalled: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The checkout attempts under way here, for the horizon report (docs/design.md §6.4).
    pub unfinished: Unfinished,
    /// The epoch of the view the last resume pass ran under (0 before the first).
    pub resumed_epoch: std::sync::atomic::AtomicU64,
}

/// The routes, over shared state (saga tasks outlive the request that started them).
pub struct OrderHandler(pub Arc<Orders>);

impl Orders {
    /// Drives the order's in-flight saga, if any, to its end (the caller holds the lock).
    async fn finish_in_flight(self: &Arc<Self>, guard: &replica::table::KeyGuard) -> Result<(), HandlerError> {
        if self.table.read(guard.key()).await?.is_some_and(|o| o.in_flight()) {
            let result = drive(&self.table, guard, &self.unfinished, &self.remote, None, Mode::Resume).await;
            self.note_outcome(guard.key(), result.is_ok());
            result?;
        }
        Ok(())
    }

    async fn add_item(
        self: &Arc<Self>,
        key: &str,
        item: &str,
        qty: i64,
        rid: Option<&RequestKey>,
    ) -> Result<Reply, HandlerError> {
        match self.table.read(key).await? {
            None => return Ok(Reply::bad("order not found")),
            Some(o) if o.paid => return Ok(Reply::bad("order already paid")),
            Some(_) => {}
        }
        let price = match self.remote.price(item).await.map_err(|e| HandlerError::Dependency(e.to_string()))? {
            Ok(p) => p,
            Err(text) => return Ok(Reply::bad(text)),
        };
        let guard = self.table.lock(key).await;
        self.finish_in_flight(&guard).await?;
        let reply = self
            .table
            .write_locked(&guard, rid, |cur| match cur {
                None => Decision::Answer(Reply::bad("order not found")),
                Some(o) => match o.add_item(item, qty, price) {
                    Ok(next) => {
                        let text = format!("Item: {item} added to: {key} price updated to: {}", next.total_cost);
                        Decision::Write(next, Reply::ok_text(text))
                    }
                    Err(msg) => Decision::Answer(Reply::bad(msg)),
                },
            })
            .await?;
        Ok(reply)
    }

    /// Starts the `resume` worker: a round at start, after every change of the node's view
    /// and every `resume_retry_ms` ([`Orders::resume_round`]).
    pub fn start_resuming(self: &Arc<Self>) {
        let node = self.table.node();
        let name = format!("{} replica {} resume", node.service, node.me);
        let schedule = Schedule::every(node.timings().resume_retry).or_when(Trigger::Changed(node.views()));
        node.workers().spawn_on(name, schedule, self.clone(), |orders| async move {
            orders.resume_round().await;
            Next::Again
        });
    }

    /// One round of the `resume` worker. On the first round and after every change of the
    /// node's view (a view change, a promotion: it may have become the primary of orders whose
    /// previous primary was paused or cut off mid-checkout), resumes the checkouts in flight
    /// among the orders this node is primary of; a view change during the pass triggers one
    /// more round, and a pass cut short by a failed scan is run again in the next. Then
    /// resumes the checkouts whose driver stopped on a failure, and sweeps the attempts
    /// counted as unfinished whose orders no longer hold them.
    pub async fn resume_round(self: Arc<Self>) {
        let epoch = self.table.node().epoch();
        let before = self.resumed_epoch.swap(epoch, std::sync::atomic::Ordering::SeqCst);
        if before != epoch {
            if before != 0 {
                log::info!("view {epoch} installed: resuming checkouts in flight among my orders");
            }
            if self.clone().resume_all().await {
                let node = self.table.node().clone();
                self.unfinished.resumed(epoch, |k| node.is_primary(k));
            } else {
                self.resumed_epoch.store(0, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let stalled: Vec<String> = self.stalled.lock().unwrap().drain().collect();
        if !stalled.is_empty() {
            log::info!("resuming {} checkouts whose driver stopped on a failure", stalled.len());
            self.clone().resume(stalled).await;
        }
        self.sweep().await;
    }

    /// Looks again at the attempts counted as unfinished that started more than
    /// [`SWEEP_AFTER_MS`] ago:
    /// - one of an order this node is not primary of is no longer counted once this node has
    ///   resumed under its current view (the order's primary counts it);
    /// - one whose order no longer holds it in flight is no longer counted (a driver that
    ///   stopped on a failure and whose attempt another node finished, an order replaced by a
    ///   batch_init);
    /// - one whose order still holds it in flight with no driver at work (a find or addItem
    ///   whose request was cancelled mid-drive) is resumed with the stalled checkouts.
    ///
    /// Each order is read under its lock, so that no driver is between counting an attempt
    /// and recording it in flight; an order whose lock is held (a driver is at work) is left
    /// for a later round.
    async fn sweep(&self) {
        let node = self.table.node();
        for (started, key) in self.unfinished.started_before(model::side::now_ms().saturating_sub(SWEEP_AFTER_MS)) {
            if !node.is_primary(&key) {
                if self.unfinished.resumed_under() == node.epoch() {
                    self.unfinished.end(&key, started);
                }
                continue;
            }
            let Ok(_guard) = tokio::time::timeout(SWEEP_LOCK_WAIT, self.table.lock(&key)).await else { continue };
            match self.table.read(&key).await {
                Ok(order) => {
                    let holds =
                        order.is_some_and(|o| o.in_flight() && o.checkout.is_some_and(|c| c.started() == started));
                    if holds {
                        self.stalled.lock().unwrap().insert(key);
                    } else {
                        log::info!("{key}: its attempt started at {started} is no longer in flight; not counted");
                        self.unfinished.end(&key, started);
                    }
                }
                Err(e) => log::warn!("{key}: reading the order to sweep its attempt failed: {e}"),
            }
        }
    }

    /// Notes the outcome of a checkout driver: one that failed with its checkout still in
    /// flight is retried later.
    pub fn note_outcome(self: &Arc<Self>, key: &str, ok: bool) {
        if !ok {
            self.stalled.lock().unwrap().insert(key.to_string());
        }
    }

    /// Resumes the checkouts in flight among `keys` that this node is primary of.
    async fn resume(self: Arc<Self>, keys: Vec<String>) {
        let node = self.table.node().clone();
        let mine: Vec<String> = keys.into_iter().filter(|k| node.is_primary(k)).collect();
        for chunk in mine.chunks(RESUME_PARALLELISM) {
            let runs = chunk.iter().map(|key| {
                let me = self.clone();
                async move {
                    let g = me.table.lock(key).await;
                    if let Err(e) = me.finish_in_flight(&g).await {
                        log::warn!("resuming checkout of {key} failed: {e}");
                    }
                }
            });
            futures::future::join_all(runs).await;
        }
    }

    /// Resumes every checkout found in flight among the orders this node is primary of, and
    /// counts each as unfinished when found; whether the scan went through every order.
    pub async fn resume_all(self: Arc<Self>) -> bool {
        let mut after: Option<String> = None;
        let mut resumed = 0usize;
        loop {
            let page = match self.table.scan(after.as_deref(), 1000).await {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("scanning orders to resume failed: {e}");
                    return false;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let node = self.table.node().clone();
            let mut todo = Vec::new();
            for (key, order) in page {
                if let Some(c) = order.checkout.as_ref().filter(|_| order.in_flight() && node.is_primary(&key)) {
                    self.unfinished.note(&key, c.started());
                    todo.push(key);
                }
            }
            resumed += todo.len();
            self.clone().resume(todo).await;
        }
        if resumed > 0 {
            log::info!("resumed {resumed} checkouts found in flight");
        }
        true
    }
}

#[async_trait]
impl Handler for OrderHandler {
    async fn handle(&self, command: Command, ctx: RequestCtx) -> Result<Reply, HandlerError> {
        let Command::Order(command) = command else {
            return Err(HandlerError::WrongService(format!("{command:?}")));
        };
        // The order's key: the dispatcher's (the command's own, or a minted one).
        let key = ctx.key.clone().expect("dispatcher sets the key");
        let rid = ctx.request.clone();
        let orders = &self.0;
        match command {
            OrderCommand::Find { .. } => {
                let mut order = orders.table.read(&key).await?;
                if order.as_ref().is_some_and(Order::in_flight) {
                    // A read never shows a checkout half done: wait for (or finish) it.
                    let g = orders.table.lock(&key).await;
                    orders.finish_in_flight(&g).await?;
                    order = orders.table.read(&key).await?;
                }
                Ok(match order {
                    Some(o) => o.find_reply(&key),
                    None => Reply::bad("order not found"),
                })
            }
            OrderCommand::Create { user } => {
                let order = Order::new(&user);
                let reply = Reply::ok_json(&json!({ "order_id": key }));
                Ok(orders
                    .table
                    .write(&key, rid.as_ref(), |cur| match cur {
                        Some(_) => Decision::Answer(reply.clone()),
                        None => Decision::Write(order.clone(), reply.clone()),
                    })
                    .await?)
            }
            OrderCommand::AddItem { item, quantity, .. } => orders.add_item(&key, &item, quantity, rid.as_ref()).await,
            OrderCommand::Checkout { .. } => {
                // The saga runs in its own task: a client that goes away does not cut it
                // short between two steps.
                let orders = orders.clone();
                let task = tokio::spawn(async move {
                    let g = orders.table.lock(&key).await;
                    let result =
                        drive(&orders.table, &g, &orders.unfinished, &orders.remote, rid.as_ref(), Mode::Checkout)
                            .await;
                    orders.note_outcome(&key, result.is_ok());
                    result
                });
                task.await.map_err(|e| HandlerError::Dependency(format!("checkout task: {e}")))?
            }
            OrderCommand::BatchInit { .. } => {
                Err(HandlerError::WrongService("a batch_init reached the single-key handler".into()))
            }
        }
    }

    async fn batch_init(&self, command: Command, keys: Vec<String>) -> Result<Reply, HandlerError> {
        let Command::Order(OrderCommand::BatchInit { n, n_items, n_users, item_price: price }) = command else {
            return Err(HandlerError::WrongService(format!("{command:?} is not the order batch_init")));
        };
        if n_items == 0 || n_users == 0 {
            return Ok(Reply::bad("batch_init needs at least one item and one user"));
        }
        let docs: Result<Vec<(String, Order)>, String> = {
            let mut rng = rand::thread_rng();
            keys.into_iter()
                .map(|k| {
                    let (u, a, b) = (rng.gen_range(0..n_users), rng.gen_range(0..n_items), rng.gen_range(0..n_items));
                    batch_order(u as u64, a as u64, b as u64, price).map(|o| (k, o))
                })
                .collect()
        };
        let docs = match docs {
            Ok(d) => d,
            Err(msg) => return Ok(Reply::bad(msg)),
        };
        self.0.table.replace_many(docs).await?;
        Ok(Reply::ok_json(&json!({ "msg": format!("Batch init for {n} orders successful") })))
    }

    fn horizon(&self) -> Option<(u64, u64)> {
        Some(self.0.unfinished.report(model::side::now_ms()))
    }
}
