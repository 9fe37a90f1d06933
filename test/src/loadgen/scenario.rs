//! What a virtual user does: the scenarios, the endpoints they call (named the way locust
//! names them, ids as placeholders), and the weighted choice between scenarios that
//! locust's task weights make. Pure: no I/O here; `runner` executes the steps.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing a virtual user does, over and over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The course stress test: check out a random batch-initialised order. Orders are drawn
    /// with replacement, so as the run goes on more of them are already paid (answered 200
    /// "Order is already paid"); the report counts first-time checkouts apart.
    Checkout,
    /// `GET /stock/find/{id}` of a random batch-initialised item.
    FindStock,
    /// A shopper: create a user, add funds, create an order, add two random batch-initialised
    /// items, check out, find the order (which must then be paid).
    Mixed,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 3] = [Scenario::Checkout, Scenario::FindStock, Scenario::Mixed];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Checkout => "checkout",
            Scenario::FindStock => "find_stock",
            Scenario::Mixed => "mixed",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `NAME` or `NAME:WEIGHT` (or `NAME=WEIGHT`), as `--scenario` takes it.
pub fn parse_weighted(arg: &str) -> Result<(Scenario, u32), String> {
    let (name, weight) = match arg.split_once([':', '=']) {
        Some((n, w)) => (n, w.parse::<u32>().map_err(|_| format!("weight of {n:?} is not a whole number: {w:?}"))?),
        None => (arg, 1),
    };
    let names = Scenario::ALL.map(Scenario::name).join(", ");
    let s = Scenario::from_name(name).ok_or_else(|| format!("no scenario {name:?} (there are: {names})"))?;
    Ok((s, weight))
}

/// An endpoint as the reports name it: method and path with the ids as placeholders
/// (locust's `name=`), so that all checkouts share one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /orders/checkout/{order_id}`.
    Checkout,
    /// `GET /stock/find/{item_id}`.
    FindStock,
    /// `POST /payment/create_user`.
    CreateUser,
    /// `POST /payment/add_funds/{user_id}/{amount}`.
    AddFunds,
    /// `POST /orders/create/{user_id}`.
    CreateOrder,
    /// `POST /orders/addItem/{order_id}/{item_id}/{quantity}`.
    AddItem,
    /// `GET /orders/find/{order_id}`.
    FindOrder,
}

impl Endpoint {
    /// Every endpoint, in report order.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Checkout,
        Endpoint::FindStock,
        Endpoint::CreateUser,
        Endpoint::AddFunds,
        Endpoint::CreateOrder,
        Endpoint::AddItem,
        Endpoint::FindOrder,
    ];

    /// Position in [`Endpoint::ALL`] (the index of its statistics).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The report's name of the endpoint.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Checkout => "POST /orders/checkout/[order_id]",
            Endpoint::FindStock => "GET /stock/find/[item_id]",
            Endpoint::CreateUser => "POST /payment/create_user",
            Endpoint::AddFunds => "POST /payment/add_funds/[user_id]/[amount]",
            Endpoint::CreateOrder => "POST /orders/create/[user_id]",
            Endpoint::AddItem => "POST /orders/addItem/[order_id]/[item_id]/[quantity]",
            Endpoint::FindOrder => "GET /orders/find/[order_id]",
        }
    }

    /// Whether the request is a GET (otherwise a POST without a body).
    pub fn is_get(self) -> bool {
        matches!(self, Endpoint::FindStock | Endpoint::FindOrder)
    }
}

/// A choice among items by integer weights: `pick(r)` for `r` in `0..total()` returns each
/// item for exactly `weight` values of `r`. Items of weight 0 are never chosen.
#[derive(Clone, Debug)]
pub struct Weighted<T> {
    /// The items of non-zero weight.
    items: Vec<(T, u32)>,
    /// `cumulative[i]` is the sum of the weights of `items[..=i]`.
    cumulative: Vec<u64>,
}

impl<T> Weighted<T> {
    /// A choice among `pairs` (item, weight); an error if no weight is above 0.
    pub fn new(pairs: Vec<(T, u32)>) -> Result<Weighted<T>, String> {
        let items: Vec<(T, u32)> = pairs.into_iter().filter(|(_, w)| *w > 0).collect();
        if items.is_empty() {
            return Err("no scenario has a weight above 0".into());
        }
        let cumulative = items
            .iter()
            .scan(0u64, |sum, (_, w)| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        Ok(Weighted { items, cumulative })
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        *self.cumulative.last().expect("never empty")
    }

    /// The item that `r` (taken modulo the total) falls on.
    pub fn pick(&self, r: u64) -> &T {
        let r = r % self.total();
        // The first item whose cumulative weight is above r.
        let i = self.cumulative.partition_point(|&c| c <= r);
        &self.items[i].0
    }

    /// A random item, each with probability weight / total.
    pub fn pick_with(&self, rng: &mut impl Rng) -> &T {
        self.pick(rng.gen_range(0..self.total()))
    }

    /// The items and their weights (zero weights left out).
    pub fn items(&self) -> &[(T, u32)] {
        &self.items
    }
}

/// The batch-initialised key space the scenarios draw from, and what `--init` writes
/// (the course's sizes by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// Users "0".."users-1".
    pub users: u64,
    /// Items "0".."items-1".
    pub items: u64,
    /// Orders "0".."orders-1".
    pub orders: u64,
    /// Starting credit of each batch user.
    pub credit: u64,
    /// Starting stock of each batch item.
    pub stock: u64,
    /// Price of each batch item.
    pub price: u64,
}

/// Largest quantity the mixed scenario puts on an order line; with two lines an order costs
/// at most `2 * MIXED_MAX_QUANTITY * price`, which is what the scenario's user is given.
pub const MIXED_MAX_QUANTITY: u64 = 2;

impl Keys {
    /// The funds the mixed scenario adds: exactly what its largest possible order costs, so
    /// every one of its checkouts can succeed.
    pub fn mixed_funds(&self) -> u64 {
        2 * MIXED_MAX_QUANTITY * self.price.max(1)
    }

    /// The three batch_init calls, in the order the course runs them: users, items, orders.
    pub fn init_paths(&self) -> [String; 3] {
        let Keys { users, items, orders, credit, stock, price } = *self;
        [
            format!("/payment/batch_init/{users}/{credit}"),
            format!("/stock/batch_init/{items}/{stock}/{price}"),
            format!("/orders/batch_init/{orders}/{items}/{users}/{price}"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn weighted_choice_gives_each_item_its_weight() {
        let w = Weighted::new(vec![("a", 3), ("zero", 0), ("b", 1), ("c", 2)]).unwrap();
        assert_eq!(w.total(), 6);
        let picks: Vec<&str> = (0..6).map(|r| *w.pick(r)).collect();
        assert_eq!(picks, ["a", "a", "a", "b", "c", "c"]);
        assert_eq!(*w.pick(6), "a", "taken modulo the total");
        assert_eq!(w.items().len(), 3, "weight 0 is left out");
    }

    #[test]
    fn weighted_choice_needs_some_weight() {
        assert!(Weighted::new(vec![("a", 0)]).is_err());
        assert!(Weighted::<&str>::new(vec![]).is_err());
        let one = Weighted::new(vec![("only", 7)]).unwrap();
        assert!((0..20).all(|r| *one.pick(r) == "only"));
    }

    #[test]
    fn random_picks_follow_the_weights() {
        let w = Weighted::new(vec![(0usize, 1), (1, 3)]).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[*w.pick_with(&mut rng)] += 1;
        }
        let share = f64::from(counts[1]) / 40_000.0;
        assert!((0.73..0.77).contains(&share), "{share}");
    }

    #[test]
    fn parses_scenario_arguments() {
        assert_eq!(parse_weighted("checkout"), Ok((Scenario::Checkout, 1)));
        assert_eq!(parse_weighted("mixed:3"), Ok((Scenario::Mixed, 3)));
        assert_eq!(parse_weighted("find_stock=0"), Ok((Scenario::FindStock, 0)));
        assert!(parse_weighted("mixed:x").unwrap_err().contains("whole number"));
        assert!(parse_weighted("nope").unwrap_err().contains("checkout, find_stock, mixed"));
    }

    #[test]
    fn endpoints_index_their_position() {
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert!(Endpoint::FindOrder.is_get() && !Endpoint::Checkout.is_get());
    }

    #[test]
    fn init_paths_are_the_course_calls() {
        let k = Keys { users: 100_000, items: 100_000, orders: 100_000, credit: 1_000_000, stock: 1_000_000, price: 1 };
        assert_eq!(
            k.init_paths(),
            [
                "/payment/batch_init/100000/1000000",
                "/stock/batch_init/100000/1000000/1",
                "/orders/batch_init/100000/100000/100000/1",
            ]
        );
        assert_eq!(k.mixed_funds(), 4);
    }
}
