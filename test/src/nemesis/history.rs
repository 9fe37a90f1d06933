//! The history of a nemesis run: every operation the clients sent, as they saw it (when it
//! was sent, when its answer came, how it ended), the faults that were injected and when,
//! what the run set up before it began, and the final reads after the heal phase. The
//! checkers (`check`) read nothing else, so a history written to JSON can be checked again
//! later, or checked by hand.
//!
//! Times are microseconds since the run began. An operation's interval runs from its first
//! send to its last answer (or to the moment the client gave up), so it covers every retry.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// A 2xx answer: the operation took effect.
    Ok,
    /// A definite refusal (4xx) that changed nothing.
    Fail,
    /// A timeout, a connection error or a 5xx: it may or may not have taken effect.
    Unknown,
}

/// One operation of a client, from its first send to its last answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// The client worker that sent it (a worker has one operation in flight at a time).
    pub process: u32,
    /// When the first attempt was sent, in microseconds since the run began.
    pub invoked_us: u64,
    /// When the last attempt's answer came (or the client gave up), in microseconds since
    /// the run began.
    pub completed_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The last HTTP status, if any answer came.
    pub status: Option<u16>,
    /// How many times it was sent; the retries of an unanswered operation reuse its
    /// idempotency key, so they apply it at most once.
    pub attempts: u32,
    /// What it was, with what it read.
    pub kind: Kind,
    /// The start of the last answer's body when it was not a 2xx (why it failed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What an operation did, and what it read when it read something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `stock/add`: add `amount` (> 0) units to `item`'s stock.
    Add {
        /// The item.
        item: String,
        /// Units added, above zero.
        amount: i64,
    },
    /// `stock/find`: read `item`'s stock.
    Read {
        /// The item.
        item: String,
        /// The stock read; `Some` when the outcome is [`Outcome::Ok`].
        value: Option<i64>,
    },
    /// `orders/checkout`: pay `order`. Ok is a 200 (paid), Fail a 400 (refused: not enough
    /// stock or credit).
    Checkout {
        /// The order.
        order: String,
    },
    /// `orders/find`: read whether `order` is paid.
    FindOrder {
        /// The order.
        order: String,
        /// Whether it was paid; `Some` when the outcome is [`Outcome::Ok`].
        paid: Option<bool>,
    },
    /// `payment/create_user`: create a user.
    CreateUser {
        /// The new user's id; `Some` when the outcome is [`Outcome::Ok`].
        id: Option<String>,
    },
    /// `stock/item/create`: create an item.
    CreateItem {
        /// The new item's id; `Some` when the outcome is [`Outcome::Ok`].
        id: Option<String>,
    },
}

impl Kind {
    /// A short name of the kind, for messages: `"add"`, `"read"`, `"checkout"`,
    /// `"find-order"`, `"create-user"` or `"create-item"`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Add { .. } => "add",
            Kind::Read { .. } => "read",
            Kind::Checkout { .. } => "checkout",
            Kind::FindOrder { .. } => "find-order",
            Kind::CreateUser { .. } => "create-user",
            Kind::CreateItem { .. } => "create-item",
        }
    }

    /// The item of an [`Kind::Add`] or a [`Kind::Read`].
    pub fn item(&self) -> Option<&str> {
        match self {
            Kind::Add { item, .. } | Kind::Read { item, .. } => Some(item),
            _ => None,
        }
    }

    /// The order of a [`Kind::Checkout`] or a [`Kind::FindOrder`].
    pub fn order(&self) -> Option<&str> {
        match self {
            Kind::Checkout { order } | Kind::FindOrder { order, .. } => Some(order),
            _ => None,
        }
    }
}

/// One fault of one process over an interval, for the 5xx checker and the chart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `"kill"`, `"pause"` or `"cut"` (network cut).
    pub kind: String,
    /// The process, e.g. `"stock-replica-1"`, `"order-coordinator-0"`, `"gateway-balancer-0"`.
    pub target: String,
    /// `"order"`, `"payment"` or `"stock"` for a replica; `None` for other roles.
    pub service: Option<String>,
    /// `"replica"`, `"coordinator"` or `"balancer"`.
    pub role: String,
    /// When the fault began, in microseconds since the run began.
    pub start_us: u64,
    /// When the fault was healed, in microseconds since the run began.
    pub end_us: u64,
}

impl Fault {
    /// Whether the fault's interval shares at least one instant with `[from_us, to_us]`
    /// (both ends included).
    pub fn overlaps(&self, from_us: u64, to_us: u64) -> bool {
        self.start_us <= to_us && from_us <= self.end_us
    }
}

/// What the checkers need to know besides the operations: what existed when the run began.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// Item id to its start stock and price (counter items and checkout items alike).
    pub items: BTreeMap<String, ItemStart>,
    /// User id to start credit.
    pub users: BTreeMap<String, i64>,
    /// Order id to its user and lines.
    pub orders: BTreeMap<String, OrderSpec>,
    /// Replicas of each service; a majority is `replicas_per_service / 2 + 1`.
    pub replicas_per_service: u32,
}

impl Setup {
    /// The replicas of a service that make a majority.
    pub fn majority(&self) -> u32 {
        self.replicas_per_service / 2 + 1
    }

    /// What an order costs: the sum of quantity times price over its lines. `None` if the
    /// order is unknown or names an item missing from [`Setup::items`].
    pub fn order_cost(&self, order: &str) -> Option<i64> {
        let spec = self.orders.get(order)?;
        spec.lines.iter().map(|(item, qty)| self.items.get(item).map(|s| qty * s.price)).sum()
    }

    /// The items that appear in some order line (the checkout items).
    pub fn order_items(&self) -> BTreeSet<&str> {
        self.orders.values().flat_map(|o| o.lines.iter().map(|(item, _)| item.as_str())).collect()
    }
}

/// An item as the run set it up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStart {
    /// Stock when the run began.
    pub stock: i64,
    /// Price of one unit.
    pub price: i64,
}

/// An order as the run set it up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    /// The user who pays it.
    pub user: String,
    /// Its lines: (item, quantity). The same item may appear on several lines.
    pub lines: Vec<(String, i64)>,
}

/// The final reads after the heal phase; `None` where the read got no answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    /// Item id to stock.
    pub stock: BTreeMap<String, Option<i64>>,
    /// User id to credit.
    pub credit: BTreeMap<String, Option<i64>>,
    /// Order id to whether it is paid.
    pub paid: BTreeMap<String, Option<bool>>,
    /// For each user id an acknowledged create returned: whether the user was found.
    pub users_found: BTreeMap<String, bool>,
    /// For each item id an acknowledged create returned: whether the item was found.
    pub items_found: BTreeMap<String, bool>,
}

/// Everything a run recorded: the input of the checkers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// What existed when the run began.
    pub setup: Setup,
    /// Every operation, in any order.
    pub ops: Vec<Op>,
    /// Every fault, in any order.
    pub faults: Vec<Fault>,
    /// The final reads after the heal phase.
    pub fin: Final,
}
