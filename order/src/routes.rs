//! The order service's routes: what each parsed request does.

use crate::clients::Remote;
use crate::domain::{batch_order, Order};
use crate::saga::{drive, Mode};
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

/// How many finished checkouts a round of the `forget` worker tells at once: their calls to
/// one participant primary travel together (`net::direct`), so a round of a busy second
/// is a few exchanges per primary rather than one per transaction.
const FORGET_PARALLELISM: usize = 512;

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
    /// Checkout attempts (order, transaction) finished since the last round of
    /// [`Orders::forget_round`] (every `forget_interval_ms`), which tells their participants
    /// to forget the transaction.
    pub finished: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Finished checkout attempts whose participants were not all told to forget the
    /// transaction: told again by the next round of [`Orders::resume_round`] (every
    /// `resume_retry_ms`), until all of them were.
    pub unforgotten: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// The epoch of the view the last resume pass ran under (0 before the first).
    pub resumed_epoch: std::sync::atomic::AtomicU64,
}

/// The routes, over shared state (saga tasks outlive the request that started them).
pub struct OrderHandler(pub Arc<Orders>);

impl Orders {
    /// Drives the order's in-flight saga, if any, to its end (the caller holds the lock).
    /// A driver that finishes the attempt has its participants told to forget its transaction.
    async fn finish_in_flight(self: &Arc<Self>, guard: &replica::table::KeyGuard) -> Result<(), HandlerError> {
        if self.table.read(guard.key()).await?.is_some_and(|o| o.in_flight()) {
            let result = drive(&self.table, guard, &self.remote, None, Mode::Resume).await;
            self.note_outcome(guard.key(), result.as_ref().map(|(_, finished)| finished.clone()).ok());
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

    /// Starts the `forget` worker: a round every `forget_interval_ms` ([`Orders::forget_round`]).
    pub fn start_forgetting(self: &Arc<Self>) {
        let node = self.table.node();
        let name = format!("{} replica {} forget", node.service, node.me);
        node.workers().spawn_on(name, Schedule::every(node.timings().forget), self.clone(), |orders| async move {
            orders.forget_round().await;
            Next::Again
        });
    }

    /// One round of the `forget` worker: tells the participants of every checkout attempt
    /// finished since the last round to forget its transaction. Deferred to a round, the
    /// calls of many checkouts go together, instead of a few calls of their own after each
    /// one. Those not all told are told again on the `resume` worker's slower cadence.
    pub async fn forget_round(self: Arc<Self>) {
        let finished: Vec<(String, String)> = self.finished.lock().unwrap().drain().collect();
        self.forget_all(finished).await;
    }

    /// Tells the participants of these finished attempts to forget their transactions,
    /// [`FORGET_PARALLELISM`] attempts at a time.
    async fn forget_all(&self, attempts: Vec<(String, String)>) {
        for chunk in attempts.chunks(FORGET_PARALLELISM) {
            futures::future::join_all(chunk.iter().map(|(key, tx)| self.forget(key, tx))).await;
        }
    }

    /// One round of the `resume` worker. On the first round and after every change of the
    /// node's view (a view change, a promotion: it may have become the primary of orders whose
    /// previous primary was paused or cut off mid-checkout), resumes the checkouts in flight
    /// among the orders this node is primary of; a view change during the pass triggers one
    /// more round. Then resumes the checkouts whose driver stopped on a failure, and tells
    /// participants again to forget the transactions of finished attempts.
    pub async fn resume_round(self: Arc<Self>) {
        let epoch = self.table.node().epoch();
        let before = self.resumed_epoch.swap(epoch, std::sync::atomic::Ordering::SeqCst);
        if before != epoch {
            if before != 0 {
                log::info!("view {epoch} installed: resuming checkouts in flight among my orders");
            }
            self.clone().resume_all().await;
        }
        let stalled: Vec<String> = self.stalled.lock().unwrap().drain().collect();
        if !stalled.is_empty() {
            log::info!("resuming {} checkouts whose driver stopped on a failure", stalled.len());
            self.clone().resume(stalled).await;
        }
        let unforgotten: Vec<(String, String)> = self.unforgotten.lock().unwrap().drain().collect();
        self.forget_all(unforgotten).await;
    }

    /// Notes the outcome of a checkout driver: one that failed with its checkout still in
    /// flight is retried later; one that finished has its participants told to forget the
    /// transaction by the next round of the `forget` worker (the client's answer does not
    /// wait for it).
    /// `finished`: `None` if the driver failed, else the transaction of the attempt it
    /// finished, if any.
    pub fn note_outcome(self: &Arc<Self>, key: &str, finished: Option<Option<String>>) {
        match finished {
            None => {
                self.stalled.lock().unwrap().insert(key.to_string());
            }
            Some(Some(tx)) => {
                self.finished.lock().unwrap().insert((key.to_string(), tx));
            }
            Some(None) => {}
        }
    }

    /// Tells the participants of the order's finished checkout attempt to forget its
    /// transaction; notes it to try again if not all of them could be told.
    async fn forget(&self, key: &str, tx: &str) {
        // Read on the order's primary only (a read elsewhere is misdirected). An order whose
        // primary changed in between is left: its participants keep the transaction's records
        // (a leak of a few records, never a wrong answer).
        if !self.table.node().is_primary(key) {
            log::info!("{key}: no longer its primary; its participants are not told to forget");
            return;
        }
        let order = match self.table.read(key).await {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(e) => {
                log::warn!("{key}: reading the order to forget its transaction failed: {e}");
                self.unforgotten.lock().unwrap().insert((key.to_string(), tx.to_string()));
                return;
            }
        };
        if !crate::saga::forget_finished(key, tx, &order, &self.remote).await {
            self.unforgotten.lock().unwrap().insert((key.to_string(), tx.to_string()));
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

    /// Resumes every checkout found in flight among the orders this node is primary of.
    pub async fn resume_all(self: Arc<Self>) {
        let mut after: Option<String> = None;
        let mut resumed = 0usize;
        loop {
            let page = match self.table.scan(after.as_deref(), 1000).await {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("scanning orders to resume failed: {e}");
                    return;
                }
            };
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let node = self.table.node().clone();
            let todo: Vec<String> =
                page.into_iter().filter(|(k, o)| o.in_flight() && node.is_primary(k)).map(|(k, _)| k).collect();
            resumed += todo.len();
            self.clone().resume(todo).await;
        }
        if resumed > 0 {
            log::info!("resumed {resumed} checkouts found in flight");
        }
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
                    let result = drive(&orders.table, &g, &orders.remote, rid.as_ref(), Mode::Checkout).await;
                    orders.note_outcome(&key, result.as_ref().map(|(_, finished)| finished.clone()).ok());
                    result.map(|(reply, _)| reply)
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
}
