//! The ledger services, written once: stock and payment both keep one non-negative balance
//! per key (an item's stock, a user's credit) that can be credited, debited, and debited or
//! compensated as a step of a checkout saga. A service supplies a [`LedgerKind`]: its extra
//! fields, texts and reply shapes; everything else (rules, routes, the saga participant's
//! transaction records) is here.
//!
//! Saga steps carry a transaction id (`order_id#attempt.nonce`). Each document records every
//! transaction that touched it as `applied`, `refused` or `compensated`, in a side record of
//! its own beside the document (`t:<tx>`, [`model::side`]), checked and written in the same
//! atomic write as the balance, so a hot document never grows with them: a repeated step is
//! answered as the first time without applying twice, a compensation adds back exactly what
//! was taken, and a step arriving after its compensation (or after a compensation of a step
//! never seen, which records `compensated`) or after its own refusal is refused.
//!
//! A record is kept until its saga is known finished, never dropped by its age alone: it is
//! held until the order service has said that every attempt under way at some time after the
//! record's write (and after its attempt's start, which the transaction id names) is finished
//! (the watermark, [`release`]); it is dropped a grace period after this replica learned that
//! (the node's request TTL, which outlasts any retry path that could still deliver a late copy
//! of a step). docs/design.md §6.4.

pub mod release;

use async_trait::async_trait;
use model::reply::Reply;
use model::routing::{Command, LedgerCommand};
use replica::server::{Handler, HandlerError, RequestCtx};
use replica::table::{Decision, Doc, SideWrite, Table};
use std::sync::Arc;

// The rules themselves (what a step, a compensation and a forget do) are `decide::ledger`.
pub use decide::ledger::{
    compensate_tx, credit, debit, debit_tx, tx_expiry, tx_record, Account, TxDecision, TxEntry, TxState,
};

/// What distinguishes one ledger service from the other.
pub trait LedgerKind: Send + Sync + 'static {
    /// Extra fields of a document.
    type Extra: Doc + std::fmt::Debug + PartialEq;
    /// What the documents are, in the plural (`items`, `users`), for replies.
    const PLURAL: &'static str;
    /// Text of the 400 for an unknown key.
    const NOT_FOUND: &'static str;
    /// Text of the 400 for a debit larger than the balance.
    const INSUFFICIENT: &'static str;
    /// The extra fields of a created document (an item's `price`; a user has none).
    fn created(price: Option<i64>) -> Self::Extra;
    /// The reply to a create.
    fn create_reply(key: &str) -> Reply;
    /// The reply to a find.
    fn find_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The reply to a credit.
    fn credit_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The reply to a debit.
    fn debit_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The document every key of a batch_init gets: the `balance` (and an item's `price`).
    fn batch_doc(balance: i64, price: Option<i64>) -> Account<Self::Extra>;
}

/// A saga step's decision as the table's decision on the document, the record written beside
/// it under `tx` at `now_ms`, held until released ([`tx_expiry`]).
pub fn into_decision<X>(d: TxDecision<X>, tx: &str, now_ms: u64) -> Decision<Account<X>> {
    match d {
        TxDecision::Answer(r) => Decision::Answer(r),
        TxDecision::Write(doc, e, r) => {
            let payload = serde_json::to_string(&e).expect("records serialize");
            let expires = tx_expiry(tx, now_ms);
            Decision::WriteWith(doc, vec![SideWrite { name: tx_record(tx), payload, expires }], r)
        }
    }
}

/// A transaction record as stored beside a document (`None`: unreadable, as if absent; logged).
fn parse_entry(payload: Option<&str>) -> Option<TxEntry> {
    let p = payload?;
    match serde_json::from_str(p) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("unreadable transaction record {p:?}: {e}");
            None
        }
    }
}

/// Runs a replica of ledger service `K` (`settings.service`) on `listener` until `shutdown`
/// completes.
pub async fn run<K: LedgerKind>(
    settings: net::settings::ReplicaSettings,
    topology: model::topology::Topology,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let orders = topology.order.replicas.clone();
    let secret = settings.secret.clone();
    replica::server::run_replica(settings, topology, listener, shutdown, move |node| {
        release::start_releasing(&node, orders, &secret);
        Arc::new(LedgerHandler::<K>::new(node))
    })
    .await
}

/// The routes of a ledger service.
pub struct LedgerHandler<K: LedgerKind> {
    table: Table<Account<K::Extra>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: LedgerKind> LedgerHandler<K> {
    /// A handler over the node's table.
    pub fn new(node: Arc<replica::node::Node>) -> LedgerHandler<K> {
        LedgerHandler { table: Table::new(node), _kind: std::marker::PhantomData }
    }

    /// A saga step on `key` under transaction `tx`: `step` decides on the document, its
    /// record of the transaction and the time (Unix seconds), and the record goes beside the
    /// document in the same write; `missing` answers for a key that does not exist.
    async fn tx_step(
        &self,
        key: &str,
        tx: &str,
        missing: impl Fn() -> Decision<Account<K::Extra>>,
        step: impl Fn(&Account<K::Extra>, Option<&TxEntry>, u64) -> TxDecision<K::Extra>,
    ) -> Result<Reply, replica::table::TableError> {
        let now_ms = model::side::now_ms();
        self.table
            .write_with_side(key, &tx_record(tx), |cur, rec| match cur {
                None => missing(),
                Some(doc) => into_decision(step(doc, parse_entry(rec).as_ref(), now_ms / 1000), tx, now_ms),
            })
            .await
    }
}

fn not_found<X>(msg: &str) -> Decision<X> {
    Decision::Answer(Reply::bad(msg))
}

#[async_trait]
impl<K: LedgerKind> Handler for LedgerHandler<K> {
    async fn handle(&self, command: Command, ctx: RequestCtx) -> Result<Reply, HandlerError> {
        let Command::Ledger(command) = command else {
            return Err(HandlerError::WrongService(format!("{command:?}")));
        };
        // The document's key: the dispatcher's (the command's own, or a minted one).
        let key = ctx.key.clone().expect("dispatcher sets the key");
        let rid = ctx.request.as_ref();
        let reply = match command {
            LedgerCommand::Find { .. } => match self.table.read(&key).await? {
                Some(doc) => K::find_reply(&key, &doc),
                None => Reply::bad(K::NOT_FOUND),
            },
            LedgerCommand::Create { price } => {
                let extra = K::created(price);
                self.table
                    .write(&key, rid, |cur| match cur {
                        // A minted key is fresh; finding it means this is a retry whose
                        // request id was forgotten: answer as the create did.
                        Some(_) => Decision::Answer(K::create_reply(&key)),
                        None => Decision::Write(Account { balance: 0, extra: extra.clone() }, K::create_reply(&key)),
                    })
                    .await?
            }
            LedgerCommand::Credit { amount, .. } => {
                self.table
                    .write(&key, rid, |cur| match cur {
                        None => not_found(K::NOT_FOUND),
                        Some(doc) => match credit(doc, amount) {
                            Ok(next) => {
                                let r = K::credit_reply(&key, &next);
                                Decision::Write(next, r)
                            }
                            Err(msg) => Decision::Answer(Reply::bad(msg)),
                        },
                    })
                    .await?
            }
            LedgerCommand::Debit { amount, .. } => {
                self.table
                    .write(&key, rid, |cur| match cur {
                        None => not_found(K::NOT_FOUND),
                        Some(doc) => match debit(doc, amount, K::INSUFFICIENT) {
                            Ok(next) => {
                                let r = K::debit_reply(&key, &next);
                                Decision::Write(next, r)
                            }
                            Err(msg) => Decision::Answer(Reply::bad(msg)),
                        },
                    })
                    .await?
            }
            LedgerCommand::TxDebit { amount, tx, .. } => {
                self.tx_step(
                    &key,
                    &tx,
                    || not_found(K::NOT_FOUND),
                    |doc, rec, now| debit_tx(doc, rec, amount, now, K::INSUFFICIENT),
                )
                .await?
            }
            // Nothing was ever taken from a key that does not exist.
            LedgerCommand::TxCompensate { tx, .. } => {
                self.tx_step(&key, &tx, || Decision::Answer(Reply::ok_text("nothing to compensate")), compensate_tx)
                    .await?
            }
            LedgerCommand::BatchInit { .. } => {
                return Err(HandlerError::WrongService("a batch_init reached the single-key handler".into()))
            }
        };
        Ok(reply)
    }

    async fn batch_init(&self, command: Command, keys: Vec<String>) -> Result<Reply, HandlerError> {
        let Command::Ledger(LedgerCommand::BatchInit { n, balance, price }) = command else {
            return Err(HandlerError::WrongService(format!("{command:?} is not a ledger's batch_init")));
        };
        let doc = K::batch_doc(balance, price);
        self.table.replace_many(keys.into_iter().map(|k| (k, doc.clone())).collect()).await?;
        // This primary wrote its share; the reply speaks for the whole batch, whose other
        // shares the coordinator sent to the other primaries.
        Ok(Reply::ok_json(&serde_json::json!({ "msg": format!("Batch init for {n} {} successful", K::PLURAL) })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's record is held until released: never dropped by its age alone.
    #[test]
    fn a_record_is_held_until_released() {
        let doc = Account { balance: 6, extra: () };
        let applied = TxEntry { state: TxState::Applied, amount: 4, at: 100 };
        for (tx, expires) in [("o#1.5000-ab", model::side::held(5_000)), ("o#1", model::side::held(4_000))] {
            let step = TxDecision::Write(doc.clone(), applied.clone(), Reply::ok_text(""));
            match into_decision(step, tx, 4_000) {
                Decision::WriteWith(_, sides, _) => {
                    assert_eq!((sides[0].name.as_str(), sides[0].expires), (format!("t:{tx}").as_str(), expires));
                }
                d => panic!("{d:?}"),
            }
        }
        let answer = into_decision(TxDecision::<()>::Answer(Reply::ok_text("x")), "o#1", 4_000);
        assert!(matches!(answer, Decision::Answer(r) if r.body == "x"), "an answer writes nothing");
    }
}
