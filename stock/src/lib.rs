//! The stock service: one ledger document per item, its balance the item's stock, plus
//! the item's price. The rules and routes are the shared ledger's ([`ledger`]);
//! this crate supplies the item's fields and reply shapes. A stock replica runs as
//! `ledger::run::<Stock>`.

use ledger::{Account, LedgerKind};
use model::reply::Reply;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// An item's fields besides its stock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Price per unit.
    pub price: i64,
}

/// The stock ledger.
pub struct Stock;

impl LedgerKind for Stock {
    type Extra = ItemInfo;
    const PLURAL: &'static str = "items";
    const NOT_FOUND: &'static str = "item not found";
    const INSUFFICIENT: &'static str = "not enough stock";

    fn created(price: Option<i64>) -> ItemInfo {
        // The stock route table always gives one.
        ItemInfo { price: price.unwrap_or_default() }
    }

    fn create_reply(key: &str) -> Reply {
        Reply::ok_json(&json!({ "item_id": key }))
    }

    fn find_reply(_key: &str, doc: &Account<ItemInfo>) -> Reply {
        Reply::ok_json(&json!({ "stock": doc.balance, "price": doc.extra.price }))
    }

    fn credit_reply(key: &str, doc: &Account<ItemInfo>) -> Reply {
        Reply::ok_text(format!("Item: {key} stock updated to: {}", doc.balance))
    }

    fn debit_reply(key: &str, doc: &Account<ItemInfo>) -> Reply {
        Reply::ok_text(format!("Item: {key} stock updated to: {}", doc.balance))
    }

    fn batch_doc(balance: i64, price: Option<i64>) -> Account<ItemInfo> {
        Account { balance, extra: ItemInfo { price: price.unwrap_or_default() } }
    }
}
