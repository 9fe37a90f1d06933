//! The ledger services, written once: stock and payment both keep one non-negative balance
//! per key (an item's stock, a user's credit) that can be credited, debited, and debited or
//! compensated as a step of a checkout saga. A service supplies a [`LedgerKind`]: its extra
//! fields, texts and reply shapes; everything else (rules, routes, the saga participant's
//! transaction records) is here.
//!
//! Saga steps carry a transaction id (`order_id#attempt`). Each document records the
//! transactions that touched it as `applied` or `compensated`, checked and updated in the
//! same atomic write as the balance: a repeated step is answered without applying twice, a
//! compensation adds back exactly what was taken, and a step arriving after its compensation
//! (or a compensation of a step never seen, which records `compensated`) is refused.
//! Records are dropped [`TX_HORIZON_SECS`] after they were written.

use crate::reply::Reply;
use crate::routing::Target;
use crate::server::{Handler, HandlerError, RequestCtx};
use crate::table::{Decision, Doc, Table};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a transaction record is kept. A saga retries a step until it gets an answer,
/// and resumes in-flight checkouts when an order node comes back; an hour covers any
/// outage this system is meant to ride out, while bounding the records a hot key keeps.
pub const TX_HORIZON_SECS: u64 = 3600;

/// What a transaction did to a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// The debit was applied.
    Applied,
    /// The debit was undone, or refused in advance by a compensation that came first.
    Compensated,
}

/// One transaction record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEntry {
    /// Applied or compensated.
    pub state: TxState,
    /// How much the debit took (0 for a compensation that came first).
    pub amount: i64,
    /// Unix seconds when recorded, for dropping it after the horizon.
    pub at: u64,
}

/// A ledger document: the balance, the service's extra fields, the transaction records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account<X> {
    /// Stock of an item, credit of a user.
    pub balance: i64,
    /// Service-specific fields (an item's price).
    pub extra: X,
    /// Recent saga transactions by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub txs: BTreeMap<String, TxEntry>,
}

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
    /// The extra fields of a created document, from the create route's arguments.
    fn created(target: &Target) -> Self::Extra;
    /// The reply to a create.
    fn create_reply(key: &str) -> Reply;
    /// The reply to a find.
    fn find_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The reply to a credit.
    fn credit_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The reply to a debit.
    fn debit_reply(key: &str, doc: &Account<Self::Extra>) -> Reply;
    /// The document every key of a batch_init gets, from the route's arguments.
    fn batch_doc(target: &Target) -> Account<Self::Extra>;
}

/// Drops records older than the horizon.
fn prune(txs: &mut BTreeMap<String, TxEntry>, now: u64) {
    txs.retain(|_, e| e.at + TX_HORIZON_SECS >= now);
}

/// Adds `amount` to the balance; 400 on overflow.
pub fn credit<X: Clone>(doc: &Account<X>, amount: i64) -> Result<Account<X>, String> {
    let balance =
        doc.balance.checked_add(amount).ok_or_else(|| "amount too large: balance would overflow".to_string())?;
    Ok(Account { balance, ..doc.clone() })
}

/// Takes `amount` from the balance; refused with `insufficient` if it is not there.
pub fn debit<X: Clone>(doc: &Account<X>, amount: i64, insufficient: &str) -> Result<Account<X>, String> {
    if doc.balance < amount {
        return Err(insufficient.to_string());
    }
    Ok(Account { balance: doc.balance - amount, ..doc.clone() })
}

/// A saga step: debit under transaction `tx`, at most once.
pub fn debit_tx<X: Clone>(doc: &Account<X>, tx: &str, amount: i64, now: u64, insufficient: &str) -> TxDecision<X> {
    match doc.txs.get(tx).map(|e| e.state) {
        Some(TxState::Applied) => TxDecision::Answer(Reply::ok_text("already applied")),
        Some(TxState::Compensated) => TxDecision::Answer(Reply::bad("transaction was compensated")),
        None => match debit(doc, amount, insufficient) {
            Err(msg) => TxDecision::Answer(Reply::bad(msg)),
            Ok(mut next) => {
                prune(&mut next.txs, now);
                next.txs.insert(tx.to_string(), TxEntry { state: TxState::Applied, amount, at: now });
                TxDecision::Write(next, Reply::ok_text("applied"))
            }
        },
    }
}

/// A saga compensation: undo `tx` if it was applied; record it as compensated either way.
pub fn compensate_tx<X: Clone>(doc: &Account<X>, tx: &str, now: u64) -> TxDecision<X> {
    let mut next = doc.clone();
    prune(&mut next.txs, now);
    match doc.txs.get(tx) {
        Some(e) if e.state == TxState::Compensated => TxDecision::Answer(Reply::ok_text("already compensated")),
        Some(e) => {
            // Adding back what this transaction took cannot overflow unless credits since
            // then brought the balance near i64::MAX; saturate rather than fail a rollback.
            next.balance = doc.balance.saturating_add(e.amount);
            next.txs.insert(tx.to_string(), TxEntry { state: TxState::Compensated, amount: e.amount, at: now });
            TxDecision::Write(next, Reply::ok_text("compensated"))
        }
        None => {
            next.txs.insert(tx.to_string(), TxEntry { state: TxState::Compensated, amount: 0, at: now });
            TxDecision::Write(next, Reply::ok_text("compensated"))
        }
    }
}

/// The outcome of a saga step's decision.
#[derive(Debug, PartialEq)]
pub enum TxDecision<X> {
    /// Store this document and answer.
    Write(Account<X>, Reply),
    /// Answer without writing.
    Answer(Reply),
}

impl<X> From<TxDecision<X>> for Decision<Account<X>> {
    fn from(d: TxDecision<X>) -> Self {
        match d {
            TxDecision::Write(doc, r) => Decision::Write(doc, r),
            TxDecision::Answer(r) => Decision::Answer(r),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The routes of a ledger service.
pub struct LedgerHandler<K: LedgerKind> {
    table: Table<Account<K::Extra>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: LedgerKind> LedgerHandler<K> {
    /// A handler over the node's table.
    pub fn new(node: Arc<crate::node::Node>) -> LedgerHandler<K> {
        LedgerHandler { table: Table::new(node), _kind: std::marker::PhantomData }
    }
}

fn not_found<X>(msg: &str) -> Decision<X> {
    Decision::Answer(Reply::bad(msg))
}

#[async_trait]
impl<K: LedgerKind> Handler for LedgerHandler<K> {
    async fn handle(&self, t: Target, ctx: RequestCtx) -> Result<Reply, HandlerError> {
        let key = ctx.key.clone().expect("dispatcher sets the key");
        let rid = ctx.request.as_ref();
        let reply = match t.route.name {
            "find" => match self.table.read(&key).await? {
                Some(doc) => K::find_reply(&key, &doc),
                None => Reply::bad(K::NOT_FOUND),
            },
            "create" => {
                let extra = K::created(&t);
                self.table
                    .write(&key, rid, |cur| match cur {
                        // A minted key is fresh; finding it means this is a retry whose
                        // request id was forgotten: answer as the create did.
                        Some(_) => Decision::Answer(K::create_reply(&key)),
                        None => Decision::Write(
                            Account { balance: 0, extra: extra.clone(), txs: BTreeMap::new() },
                            K::create_reply(&key),
                        ),
                    })
                    .await?
            }
            "credit" => {
                let amount = t.int(1);
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
            "debit" => {
                let amount = t.int(1);
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
            "tx_debit" => {
                let (amount, tx) = (t.int(1), t.id(2).to_string());
                let now = unix_now();
                self.table
                    .write(&key, None, |cur| match cur {
                        None => not_found(K::NOT_FOUND),
                        Some(doc) => debit_tx(doc, &tx, amount, now, K::INSUFFICIENT).into(),
                    })
                    .await?
            }
            "tx_compensate" => {
                let tx = t.id(1).to_string();
                let now = unix_now();
                self.table
                    .write(&key, None, |cur| match cur {
                        // Nothing was ever taken from a key that does not exist.
                        None => Decision::Answer(Reply::ok_text("nothing to compensate")),
                        Some(doc) => compensate_tx(doc, &tx, now).into(),
                    })
                    .await?
            }
            other => unreachable!("ledger route {other} is not dispatched here"),
        };
        Ok(reply)
    }

    async fn batch_init(&self, t: Target, keys: Vec<String>) -> Result<Reply, HandlerError> {
        let doc = K::batch_doc(&t);
        self.table.replace_many(keys.into_iter().map(|k| (k, doc.clone())).collect()).await?;
        // This primary wrote its share; the reply speaks for the whole batch, whose other
        // shares the coordinator sent to the other primaries.
        Ok(Reply::ok_json(
            &serde_json::json!({ "msg": format!("Batch init for {} {} successful", t.int(0), K::PLURAL) }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(balance: i64) -> Account<()> {
        Account { balance, extra: (), txs: BTreeMap::new() }
    }

    fn written(d: TxDecision<()>) -> Account<()> {
        match d {
            TxDecision::Write(a, r) => {
                assert_eq!(r.status, 200);
                a
            }
            TxDecision::Answer(r) => panic!("expected a write, got {r:?}"),
        }
    }

    fn answered(d: TxDecision<()>) -> Reply {
        match d {
            TxDecision::Answer(r) => r,
            TxDecision::Write(a, _) => panic!("expected an answer, got a write {a:?}"),
        }
    }

    #[test]
    fn credit_and_debit() {
        assert_eq!(credit(&acct(5), 3).unwrap().balance, 8);
        assert!(credit(&acct(i64::MAX), 1).is_err());
        assert_eq!(debit(&acct(5), 5, "no").unwrap().balance, 0);
        assert_eq!(debit(&acct(5), 6, "no"), Err("no".to_string()));
    }

    #[test]
    fn a_step_applies_once() {
        let a = written(debit_tx(&acct(10), "o#1", 4, 100, "no"));
        assert_eq!(a.balance, 6);
        let again = answered(debit_tx(&a, "o#1", 4, 101, "no"));
        assert_eq!((again.status, again.body.as_str()), (200, "already applied"));
    }

    #[test]
    fn insufficient_balance_is_refused_and_records_nothing() {
        let r = answered(debit_tx(&acct(3), "o#1", 4, 100, "not enough"));
        assert_eq!((r.status, r.body.as_str()), (400, "not enough"));
    }

    #[test]
    fn compensation_adds_back_exactly_once() {
        let a = written(debit_tx(&acct(10), "o#1", 4, 100, "no"));
        let c = written(compensate_tx(&a, "o#1", 101));
        assert_eq!(c.balance, 10);
        assert_eq!(c.txs["o#1"].state, TxState::Compensated);
        let again = answered(compensate_tx(&c, "o#1", 102));
        assert_eq!(again.status, 200);
        // A late repeat of the step is refused once it was compensated.
        assert_eq!(answered(debit_tx(&c, "o#1", 4, 103, "no")).status, 400);
    }

    #[test]
    fn a_compensation_before_its_step_fences_the_step() {
        let c = written(compensate_tx(&acct(10), "o#2", 100));
        assert_eq!(c.balance, 10);
        assert_eq!(c.txs["o#2"], TxEntry { state: TxState::Compensated, amount: 0, at: 100 });
        let late = answered(debit_tx(&c, "o#2", 4, 101, "no"));
        assert_eq!((late.status, late.body.as_str()), (400, "transaction was compensated"));
    }

    #[test]
    fn records_are_dropped_after_the_horizon() {
        let a = written(debit_tx(&acct(10), "old", 1, 100, "no"));
        let b = written(debit_tx(&a, "new", 1, 100 + TX_HORIZON_SECS + 1, "no"));
        assert!(!b.txs.contains_key("old"));
        assert!(b.txs.contains_key("new"));
        assert_eq!(b.balance, 8);
    }
}
