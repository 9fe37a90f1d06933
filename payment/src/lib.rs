//! The payment service: one ledger document per user, its balance the user's credit. The
//! rules and routes are the shared ledger's ([`ledger`]); this crate supplies the
//! reply shapes. A payment replica runs as `ledger::run::<Payment>`.

use ledger::{Account, LedgerKind};
use model::reply::Reply;
use serde_json::json;

/// The payment ledger. Users have no fields besides their credit.
pub struct Payment;

impl LedgerKind for Payment {
    type Extra = ();
    const PLURAL: &'static str = "users";
    const NOT_FOUND: &'static str = "user not found";
    const INSUFFICIENT: &'static str = "not enough credit";

    fn created(_price: Option<i64>) {}

    fn create_reply(key: &str) -> Reply {
        Reply::ok_json(&json!({ "user_id": key }))
    }

    fn find_reply(key: &str, doc: &Account<()>) -> Reply {
        Reply::ok_json(&json!({ "user_id": key, "credit": doc.balance }))
    }

    fn credit_reply(_key: &str, _doc: &Account<()>) -> Reply {
        Reply::ok_json(&json!({ "done": true }))
    }

    fn debit_reply(key: &str, doc: &Account<()>) -> Reply {
        Reply::ok_text(format!("User: {key} credit updated to: {}", doc.balance))
    }

    fn batch_doc(balance: i64, _price: Option<i64>) -> Account<()> {
        Account { balance, extra: () }
    }
}
