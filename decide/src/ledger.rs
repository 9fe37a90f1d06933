//! The ledger's rules, without I/O: a non-negative balance per key (an item's stock, a user's
//! credit), credited and debited, and debited or compensated at most once per saga
//! transaction, decided from the document and the transaction's record beside it. The
//! service that applies them (routes, the table's atomic write of document and record) is
//! `ledger`.

use model::reply::Reply;
use serde::{Deserialize, Serialize};

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

/// When transaction `tx`'s checkout attempt started (Unix ms, the order primary's clock): a
/// transaction id is `order_id#attempt.start-random` (`order::domain::tx_id`). `None` for an
/// id without a start.
pub fn tx_started(tx: &str) -> Option<u64> {
    let (_, attempt) = tx.rsplit_once('#')?;
    let (_, nonce) = attempt.split_once('.')?;
    let (start, _) = nonce.split_once('-')?;
    start.parse().ok()
}

/// The expiry of transaction `tx`'s record written at `now_ms` ([`model::side`]): held until
/// the order service releases a time after both the write and the attempt's start
/// (docs/design.md §6.4). Holding it from the write, not only from the start, keeps it from a
/// watermark computed before the write: one attempt may be found in flight, and its steps sent,
/// long after it started.
pub fn tx_expiry(tx: &str, now_ms: u64) -> u64 {
    model::side::held(tx_started(tx).unwrap_or(0).max(now_ms))
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
    TxEntry { state, amount, at: now }
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

/// The outcome of a saga step's decision.
#[derive(Debug, PartialEq)]
pub enum TxDecision<X> {
    /// Store this document and this record of the transaction, and answer.
    Write(Account<X>, TxEntry, Reply),
    /// Answer without writing.
    Answer(Reply),
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
            d => panic!("expected a write, got {d:?}"),
        }
    }

    fn answered(d: TxDecision<()>) -> Reply {
        match d {
            TxDecision::Answer(r) => r,
            d => panic!("expected an answer, got {d:?}"),
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
        assert_eq!(ce, TxEntry { state: TxState::Compensated, amount: 0, at: 100 });
        let late = answered(debit_tx(&c, Some(&ce), 4, 101, "no"));
        assert_eq!((late.status, late.body.as_str()), (400, "transaction was compensated"));
    }

    /// A transaction id names its attempt's start; its record is held until a time after
    /// both the start and the write is released (an id without a start, or with one that
    /// does not parse: after the write).
    #[test]
    fn a_record_is_held_from_its_write_or_its_attempts_start_whichever_is_later() {
        assert_eq!(tx_started("3f2a-9c#2.1733580000123-0a1b2c3d4e5f6071"), Some(1_733_580_000_123));
        assert_eq!(tx_expiry("o#1.1000-ff", 900), model::side::held(1_000), "a start ahead of this clock");
        assert_eq!(tx_expiry("o#1.1000-ff", 5_000), model::side::held(5_000), "an attempt resumed late");
        for tx in ["o#1", "o#1.ff", "o#1.x-ff", "o.1-2", "o#1.-ff"] {
            assert_eq!((tx, tx_started(tx)), (tx, None));
            assert_eq!(tx_expiry(tx, 7), model::side::held(7));
        }
    }
}
