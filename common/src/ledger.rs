//! The ledger services, written once: stock and payment both keep one non-negative balance
//! per key (an item's stock, a user's credit) that can be credited, debited, and debited or
//! compensated as a step of a checkout saga. A service supplies a [`LedgerKind`]: its extra
//! fields, texts and reply shapes; everything else (rules, routes, the saga participant's
//! transaction records) is here.
//!
//! Saga steps carry a transaction id (`order_id#attempt`). Each document records every
//! transaction that touched it as `applied`, `refused` or `compensated`, in a side record of
//! its own beside the document (`t:<tx>`, [`crate::side`]), checked and written in the same
//! atomic write as the balance, so a hot document never grows with them: a repeated step is
//! answered as the first time without applying twice, a compensation adds back exactly what
//! was taken, and a step arriving after its compensation (or after a compensation of a step
//! never seen, which records `compensated`) or after its own refusal is refused.
//!
//! A record is kept until its saga is known finished: once the order's final state is
//! durable, its driver tells each participant to forget the transaction (`tx/forget`), and
//! the record is then dropped after a grace period (the node's request TTL, which outlasts
//! any retry path that could still deliver a late copy of a step), never by its age alone.

use crate::reply::Reply;
use crate::routing::Target;
use crate::server::{Handler, HandlerError, RequestCtx};
use crate::table::{Decision, Doc, SideWrite, Table};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a transaction did to a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// The debit was applied.
    Applied,
    /// The debit was refused (not enough balance); a late copy of it is refused again.
    Refused,
    /// The debit was undone, or refused in advance by a compensation that came first.
    Compensated,
}

/// One transaction's record beside a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxEntry {
    /// Applied, refused or compensated.
    pub state: TxState,
    /// How much the debit took (0 if it took nothing).
    pub amount: i64,
    /// Unix seconds when recorded (for people reading it).
    pub at: u64,
    /// The saga is known finished: the record goes after a grace period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
}

/// A ledger document: the balance and the service's extra fields. Documents written before
/// the transaction records moved beside them kept them inside (`txs`), no longer read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account<X> {
    /// Stock of an item, credit of a user.
    pub balance: i64,
    /// Service-specific fields (an item's price).
    pub extra: X,
}

/// The name of transaction `tx`'s side record.
pub fn tx_record(tx: &str) -> String {
    format!("t:{tx}")
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

fn entry(state: TxState, amount: i64, now: u64) -> TxEntry {
    TxEntry { state, amount, at: now, forgotten: false }
}

/// A saga step: debit under transaction `tx`'s record `rec`, at most once. A refusal is
/// recorded too, so that every copy of the step gets the same answer.
pub fn debit_tx<X: Clone>(
    doc: &Account<X>,
    rec: Option<&TxEntry>,
    amount: i64,
    now: u64,
    insufficient: &str,
) -> TxDecision<X> {
    match rec.map(|e| e.state) {
        Some(TxState::Applied) => TxDecision::Answer(Reply::ok_text("already applied")),
        Some(TxState::Refused) => TxDecision::Answer(Reply::bad(insufficient)),
        Some(TxState::Compensated) => TxDecision::Answer(Reply::bad("transaction was compensated")),
        None => match debit(doc, amount, insufficient) {
            Err(msg) => TxDecision::Write(doc.clone(), entry(TxState::Refused, 0, now), Reply::bad(msg)),
            Ok(next) => TxDecision::Write(next, entry(TxState::Applied, amount, now), Reply::ok_text("applied")),
        },
    }
}

/// A saga compensation: undo the transaction if it was applied; record it as compensated
/// either way (a step that never arrived is refused when it does), unless it was refused.
pub fn compensate_tx<X: Clone>(doc: &Account<X>, rec: Option<&TxEntry>, now: u64) -> TxDecision<X> {
    match rec {
        Some(e) if e.state == TxState::Compensated => TxDecision::Answer(Reply::ok_text("already compensated")),
        Some(e) if e.state == TxState::Refused => TxDecision::Answer(Reply::ok_text("refused: nothing to compensate")),
        Some(e) => {
            // Adding back what this transaction took cannot overflow unless credits since
            // then brought the balance near i64::MAX; saturate rather than fail a rollback.
            let next = Account { balance: doc.balance.saturating_add(e.amount), ..doc.clone() };
            TxDecision::Write(next, entry(TxState::Compensated, e.amount, now), Reply::ok_text("compensated"))
        }
        None => TxDecision::Write(doc.clone(), entry(TxState::Compensated, 0, now), Reply::ok_text("compensated")),
    }
}

/// The transaction's saga is finished: its record is marked forgotten (and then dropped after
/// the grace period). A transaction never seen here has nothing to forget: no step of it was
/// ever sent (a finished saga compensated every step that may have been).
pub fn forget_tx<X: Clone>(doc: &Account<X>, rec: Option<&TxEntry>) -> TxDecision<X> {
    match rec {
        Some(e) if !e.forgotten => {
            TxDecision::Write(doc.clone(), TxEntry { forgotten: true, ..e.clone() }, Reply::ok_text("forgotten"))
        }
        _ => TxDecision::Answer(Reply::ok_text("nothing to forget")),
    }
}

/// The outcome of a saga step's decision.
#[derive(Debug, PartialEq)]
pub enum TxDecision<X> {
    /// Store this document and this record of the transaction, and answer.
    Write(Account<X>, TxEntry, Reply),
    /// Answer without writing.
    Answer(Reply),
}

impl<X> TxDecision<X> {
    /// As the table's decision on the document, the record written beside it under `tx`; a
    /// forgotten record expires `grace_ms` from `now_ms`, any other never.
    pub fn into_decision(self, tx: &str, now_ms: u64, grace_ms: u64) -> Decision<Account<X>> {
        match self {
            TxDecision::Answer(r) => Decision::Answer(r),
            TxDecision::Write(doc, e, r) => {
                let expires = if e.forgotten { now_ms.saturating_add(grace_ms) } else { u64::MAX };
                let payload = serde_json::to_string(&e).expect("records serialize");
                Decision::WriteWith(doc, vec![SideWrite { name: tx_record(tx), payload, expires }], r)
            }
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

    /// A saga step on `key` under transaction `tx`: `step` decides on the document, its
    /// record of the transaction and the time (Unix seconds), and the record goes beside the
    /// document in the same write; `missing` answers for a key that does not exist. A
    /// forgotten record is kept for the node's request TTL (any retry path delivers a late
    /// copy of a step within it).
    async fn tx_step(
        &self,
        key: &str,
        tx: &str,
        missing: impl Fn() -> Decision<Account<K::Extra>>,
        step: impl Fn(&Account<K::Extra>, Option<&TxEntry>, u64) -> TxDecision<K::Extra>,
    ) -> Result<Reply, crate::table::TableError> {
        let now_ms = crate::side::now_ms();
        let grace = self.table.node().request_ttl().as_millis() as u64;
        self.table
            .write_with_side(key, &tx_record(tx), |cur, rec| match cur {
                None => missing(),
                Some(doc) => step(doc, parse_entry(rec).as_ref(), now_ms / 1000).into_decision(tx, now_ms, grace),
            })
            .await
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
                        None => Decision::Write(Account { balance: 0, extra: extra.clone() }, K::create_reply(&key)),
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
                let amount = t.int(1);
                self.tx_step(
                    &key,
                    t.id(2),
                    || not_found(K::NOT_FOUND),
                    |doc, rec, now| debit_tx(doc, rec, amount, now, K::INSUFFICIENT),
                )
                .await?
            }
            // Nothing was ever taken from a key that does not exist.
            "tx_compensate" => {
                self.tx_step(&key, t.id(1), || Decision::Answer(Reply::ok_text("nothing to compensate")), compensate_tx)
                    .await?
            }
            "tx_forget" => {
                self.tx_step(
                    &key,
                    t.id(1),
                    || Decision::Answer(Reply::ok_text("nothing to forget")),
                    |doc, rec, _| forget_tx(doc, rec),
                )
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
        Account { balance, extra: () }
    }

    fn written(d: TxDecision<()>) -> (Account<()>, TxEntry, Reply) {
        match d {
            TxDecision::Write(a, e, r) => (a, e, r),
            TxDecision::Answer(r) => panic!("expected a write, got {r:?}"),
        }
    }

    fn answered(d: TxDecision<()>) -> Reply {
        match d {
            TxDecision::Answer(r) => r,
            TxDecision::Write(a, e, _) => panic!("expected an answer, got a write {a:?} {e:?}"),
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
        let (a, e, r) = written(debit_tx(&acct(10), None, 4, 100, "no"));
        assert_eq!((a.balance, e.state, e.amount, r.status), (6, TxState::Applied, 4, 200));
        let again = answered(debit_tx(&a, Some(&e), 4, 101, "no"));
        assert_eq!((again.status, again.body.as_str()), (200, "already applied"));
    }

    /// A refused step is recorded, so that a late copy of it is refused too even if the
    /// balance has grown since (before, a refusal recorded nothing, and a reordered copy of
    /// the step could still be applied after the saga had decided not to compensate it).
    #[test]
    fn a_refused_step_stays_refused() {
        let (a, e, r) = written(debit_tx(&acct(3), None, 4, 100, "not enough"));
        assert_eq!((r.status, r.body.as_str()), (400, "not enough"));
        assert_eq!((a.balance, e.state, e.amount), (3, TxState::Refused, 0));
        let richer = acct(100);
        let late = answered(debit_tx(&richer, Some(&e), 4, 101, "not enough"));
        assert_eq!(late.status, 400);
        // Its compensation changes nothing.
        let c = answered(compensate_tx(&richer, Some(&e), 102));
        assert_eq!(c.status, 200);
    }

    #[test]
    fn compensation_adds_back_exactly_once() {
        let (a, e, _) = written(debit_tx(&acct(10), None, 4, 100, "no"));
        let (c, ce, _) = written(compensate_tx(&a, Some(&e), 101));
        assert_eq!((c.balance, ce.state, ce.amount), (10, TxState::Compensated, 4));
        let again = answered(compensate_tx(&c, Some(&ce), 102));
        assert_eq!(again.status, 200);
        // A late repeat of the step is refused once it was compensated.
        assert_eq!(answered(debit_tx(&c, Some(&ce), 4, 103, "no")).status, 400);
    }

    #[test]
    fn a_compensation_before_its_step_fences_the_step() {
        let (c, ce, _) = written(compensate_tx(&acct(10), None, 100));
        assert_eq!(c.balance, 10);
        assert_eq!(ce, TxEntry { state: TxState::Compensated, amount: 0, at: 100, forgotten: false });
        let late = answered(debit_tx(&c, Some(&ce), 4, 101, "no"));
        assert_eq!((late.status, late.body.as_str()), (400, "transaction was compensated"));
    }

    /// A record stays until its saga is known finished, then for the grace period; never
    /// dropped by its age alone.
    #[test]
    fn a_record_expires_only_once_its_saga_is_forgotten() {
        let (a, e, r) = written(debit_tx(&acct(10), None, 4, 100, "no"));
        match TxDecision::Write(a.clone(), e.clone(), r).into_decision("o#1", 5_000, 1_000) {
            Decision::WriteWith(_, sides, _) => {
                assert_eq!((sides[0].name.as_str(), sides[0].expires), ("t:o#1", u64::MAX));
            }
            d => panic!("{d:?}"),
        }
        let (_, fe, _) = written(forget_tx(&a, Some(&e)));
        assert!(fe.forgotten);
        assert_eq!((fe.state, fe.amount), (TxState::Applied, 4));
        match TxDecision::Write(a.clone(), fe.clone(), Reply::ok_text("")).into_decision("o#1", 5_000, 1_000) {
            Decision::WriteWith(_, sides, _) => assert_eq!(sides[0].expires, 6_000),
            d => panic!("{d:?}"),
        }
        // Forgotten twice, or never seen: nothing to write.
        assert_eq!(answered(forget_tx(&a, Some(&fe))).status, 200);
        assert_eq!(answered(forget_tx(&a, None)).status, 200);
        // A forgotten record still answers a late copy of the step.
        assert_eq!(answered(debit_tx(&a, Some(&fe), 4, 101, "no")).body, "already applied");
    }
}
