//! The order's document and its pure rules: adding items, and the checkout saga's states.
//!
//! Checkout state lives in the order document, so every transition is a fenced, replicated
//! write and whichever node is the order's primary next can resume from it.

pub use decide::saga::Phase;
use model::reply::Reply;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The current (or last) checkout attempt: one record before its steps are sent, one at its
/// end, and one more before the first compensation of an attempt that fails (docs/design.md
/// §6.1). Its steps are the order's user and total and its lines, which
/// do not change while it is in flight (addItem finishes an attempt in flight first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The attempt's start (Unix ms, the primary's clock that started it), `-`, and 64 bits
    /// drawn at random; part of its transaction id ([`tx_id`]). The start tells the
    /// participants until when to hold the transaction's records (docs/design.md §6.4). The
    /// random bits keep apart an order re-created under the same id (a batch_init run
    /// again), which numbers its attempts from 1 again: its transactions must not be taken
    /// for the earlier order's, whose records the participants may still hold. Empty in
    /// records written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    /// Where the attempt stands.
    pub phase: Phase,
    /// Why the attempt is failing or failed (the client's 400 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The user it is for (checked at checkout, not at create).
    pub user_id: String,
    /// Item lines: item id and quantity, one line per item.
    pub items: Vec<(String, i64)>,
    /// Sum of price × quantity over the lines, at the prices when they were added.
    pub total_cost: i64,
    /// Whether checkout completed.
    pub paid: bool,
    /// The last checkout attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Checkout>,
}

impl Order {
    /// A new, empty order for `user_id`.
    pub fn new(user_id: &str) -> Order {
        Order { user_id: user_id.to_string(), items: vec![], total_cost: 0, paid: false, checkout: None }
    }

    /// The phase of the last attempt, if any.
    pub fn phase(&self) -> Option<Phase> {
        self.checkout.as_ref().map(|c| c.phase)
    }

    /// Whether a saga is under way (and must be driven to its end before anything else
    /// happens to the order).
    pub fn in_flight(&self) -> bool {
        self.phase().is_some_and(Phase::under_way)
    }

    /// The `find` reply.
    pub fn find_reply(&self, order_id: &str) -> Reply {
        Reply::ok_json(&json!({
            "order_id": order_id,
            "paid": self.paid,
            "items": self.items,
            "user_id": self.user_id,
            "total_cost": self.total_cost,
        }))
    }

    /// Adds `quantity` of an item at `price`: an item already in the order gets its quantity
    /// added to its line. Refused on a paid order and on overflow.
    pub fn add_item(&self, item_id: &str, quantity: i64, price: i64) -> Result<Order, String> {
        if self.paid {
            return Err("order already paid".into());
        }
        let overflow = || "order total would overflow".to_string();
        let cost = price.checked_mul(quantity).ok_or_else(overflow)?;
        let total_cost = self.total_cost.checked_add(cost).ok_or_else(overflow)?;
        let mut next = self.clone();
        next.total_cost = total_cost;
        match next.items.iter_mut().find(|(id, _)| id == item_id) {
            Some(line) => line.1 = line.1.checked_add(quantity).ok_or_else(overflow)?,
            None => next.items.push((item_id.to_string(), quantity)),
        }
        Ok(next)
    }

    /// The order with a new checkout attempt in flight, its transaction made unique by
    /// `nonce`.
    pub fn start_attempt(&self, nonce: &str) -> Order {
        let attempt = self.checkout.as_ref().map(|c| c.attempt).unwrap_or(0) + 1;
        self.with(Checkout { attempt, nonce: nonce.to_string(), phase: Phase::InFlight, reason: None })
    }

    /// The order with its attempt finished: paid.
    pub fn paid(&self) -> Order {
        let c = self.checkout.clone().expect("a checkout is under way");
        Order { paid: true, ..self.with(Checkout { phase: Phase::Paid, ..c }) }
    }

    /// The order with its attempt compensating, for `reason`.
    pub fn compensating(&self, reason: &str) -> Order {
        let c = self.checkout.clone().expect("a checkout is under way");
        self.with(Checkout { phase: Phase::Compensating, reason: Some(reason.to_string()), ..c })
    }

    /// The order with its attempt finished: failed (its steps undone), for the reason it
    /// was compensated for.
    pub fn failed(&self) -> Order {
        let c = self.checkout.clone().expect("a checkout is under way");
        self.with(Checkout { phase: Phase::Failed, ..c })
    }

    /// Why the last attempt is failing or failed (the client's 400 text).
    pub fn failure(&self) -> String {
        self.checkout.as_ref().and_then(|c| c.reason.clone()).unwrap_or_else(|| "checkout failed".into())
    }

    fn with(&self, c: Checkout) -> Order {
        Order { checkout: Some(c), ..self.clone() }
    }
}

impl Checkout {
    /// The attempt's transaction id, for order `order_id`.
    pub fn tx(&self, order_id: &str) -> String {
        tx_id(order_id, self.attempt, &self.nonce)
    }

    /// When the attempt started (Unix ms), from its nonce; 0 for a nonce without a start.
    pub fn started(&self) -> u64 {
        decide::ledger::tx_started(&self.tx("")).unwrap_or(0)
    }
}

/// The transaction id of an order's checkout attempt: `order_id#attempt.nonce` (the nonce
/// `start-random`, [`Checkout::nonce`]; `decide::ledger::tx_started` reads the start back), or
/// `order_id#attempt` for an attempt recorded without a nonce.
pub fn tx_id(order_id: &str, attempt: u32, nonce: &str) -> String {
    if nonce.is_empty() {
        format!("{order_id}#{attempt}")
    } else {
        format!("{order_id}#{attempt}.{nonce}")
    }
}

/// A batch_init order: two random items (one line of quantity 2 when both draws are the same
/// item, so that one transaction per item and line holds), quantity 1 each, for `user`.
pub fn batch_order(user: u64, item_a: u64, item_b: u64, item_price: i64) -> Result<Order, String> {
    let mut o = Order::new(&user.to_string());
    o = o.add_item(&item_a.to_string(), 1, item_price)?;
    o = o.add_item(&item_b.to_string(), 1, item_price)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_items_merges_lines_and_sums_cost() {
        let o =
            Order::new("u").add_item("a", 2, 10).unwrap().add_item("b", 1, 5).unwrap().add_item("a", 3, 10).unwrap();
        assert_eq!(o.items, vec![("a".to_string(), 5), ("b".to_string(), 1)]);
        assert_eq!(o.total_cost, 55);
    }

    #[test]
    fn adding_to_a_paid_order_or_overflowing_is_refused() {
        let mut o = Order::new("u");
        o.paid = true;
        assert_eq!(o.add_item("a", 1, 1), Err("order already paid".into()));
        let o = Order::new("u");
        assert!(o.add_item("a", i64::MAX, 2).is_err());
        let o = o.add_item("a", 1, i64::MAX).unwrap();
        assert!(o.add_item("b", 1, 1).is_err());
        assert!(o.add_item("a", i64::MAX, 0).is_err(), "quantity overflow");
    }

    #[test]
    fn attempts_and_phases() {
        let o = Order::new("u").add_item("a", 1, 3).unwrap();
        assert!(!o.in_flight());
        let o = o.start_attempt("");
        assert_eq!(o.checkout.as_ref().unwrap().attempt, 1);
        assert!(o.in_flight());
        let compensating = o.compensating("not enough stock");
        assert!(compensating.in_flight() && !compensating.paid, "a compensation is finished first too");
        assert_eq!(compensating.phase(), Some(Phase::Compensating));
        let failed = compensating.failed();
        assert!(!failed.in_flight());
        assert!(!failed.paid);
        assert_eq!(failed.checkout.as_ref().unwrap().reason.as_deref(), Some("not enough stock"));
        // A new attempt after a failure has a new transaction id and no reason.
        let again = failed.start_attempt("");
        assert_eq!(again.checkout.as_ref().unwrap().attempt, 2);
        assert_eq!(again.checkout.as_ref().unwrap().reason, None);
        let paid = again.paid();
        assert!(paid.paid && !paid.in_flight());
        assert_eq!(paid.phase(), Some(Phase::Paid));
    }

    /// Orders written mid-saga by the saga before one in-flight record replaced `paying` and
    /// `reserving` read as in flight or compensating (an `undo` list is ignored), and a
    /// driver finishes them.
    #[test]
    fn an_order_recorded_mid_saga_by_the_earlier_saga_is_read() {
        let old = |phase: &str| {
            format!(
                r#"{{"user_id":"u","items":[["a",1]],"total_cost":3,"paid":false,
                "checkout":{{"attempt":2,"phase":"{phase}","undo":{{"items":["a"],"refund":true}},"reason":"x"}}}}"#
            )
        };
        for (phase, want) in
            [("paying", Phase::InFlight), ("reserving", Phase::InFlight), ("compensating", Phase::Compensating)]
        {
            let o: Order = serde_json::from_str(&old(phase)).unwrap();
            assert_eq!((o.phase(), o.checkout.as_ref().unwrap().attempt), (Some(want), 2), "{phase}");
        }
    }

    #[test]
    fn batch_orders_cost_two_prices() {
        let o = batch_order(7, 1, 2, 5).unwrap();
        assert_eq!((o.user_id.as_str(), o.total_cost, o.items.len()), ("7", 10, 2));
        let same = batch_order(7, 3, 3, 5).unwrap();
        assert_eq!(same.items, vec![("3".to_string(), 2)]);
        assert_eq!(same.total_cost, 10);
    }

    #[test]
    fn tx_ids() {
        assert_eq!(tx_id("o1", 2, ""), "o1#2");
        assert_eq!(tx_id("o1", 2, "9f3a"), "o1#2.9f3a");
        let c = Checkout { attempt: 3, nonce: "1733580000123-9f3a".into(), phase: Phase::InFlight, reason: None };
        assert_eq!((c.tx("o1").as_str(), c.started()), ("o1#3.1733580000123-9f3a", 1_733_580_000_123));
        assert_eq!(Checkout { nonce: "9f3a".into(), ..c }.started(), 0, "no start: held back to 0");
        let o = Order::new("u").start_attempt("9f3a");
        assert_eq!(o.checkout.unwrap().tx("o1"), "o1#1.9f3a");
    }
}
