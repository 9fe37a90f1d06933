//! The stock service: one ledger document per item, its balance the item's stock, plus
//! the item's price. The rules and routes are the shared ledger's ([`ledger`]);
//! this crate supplies the item's fields and reply shapes.

use ledger::{Account, LedgerHandler, LedgerKind};
use model::reply::Reply;
use model::topology::Topology;
use net::settings::ReplicaSettings;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

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

/// Runs a stock replica on `listener` until `shutdown` completes.
pub async fn run(
    settings: ReplicaSettings,
    topology: Topology,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    replica::server::run_replica(settings, topology, listener, shutdown, |node| {
        Arc::new(LedgerHandler::<Stock>::new(node))
    })
    .await
}
