//! The checkers of a nemesis history: each reads the whole [`History`] and names every thing
//! in it that cannot have happened under the system's promises, with the operations
//! involved. A history is valid when no checker found anything.
//!
//! - `counter`: every read of a stock counter, and its final value, lies between what the
//!   acknowledged adds before it force and what the adds that may have applied allow;
//! - `failed-add`: no read or final value shows an add that was refused (4xx);
//! - `checkout`: the final credit and stock are what the paid orders say, a 200 checkout
//!   ends paid, a checkout refused every time ends unpaid, a paid order stays paid;
//! - `create`: every acknowledged create can be found afterwards;
//! - `unavailable`: no 5xx while a majority of the replicas of every service was up and the
//!   gateway was not under a fault.
//!
//! The checkers are linear in the history, up to a logarithm: a counter read is bounded by
//! binary searches over prefix sums of the item's adds.

use super::history::{Fault, History, Kind, Op, Outcome};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The name of the counter checker.
pub const COUNTER: &str = "counter";
/// The name of the checker of refused adds that were seen anyway.
pub const FAILED_ADD: &str = "failed-add";
/// The name of the checkout checker.
pub const CHECKOUT: &str = "checkout";
/// The name of the create checker.
pub const CREATE: &str = "create";
/// The name of the 5xx checker.
pub const UNAVAILABLE: &str = "unavailable";

/// The 5xx operations the `unavailable` checker reports one by one; the rest are summed up
/// in one more violation.
pub const MAX_UNAVAILABLE_REPORTED: usize = 20;

/// Op ids a violation lists besides its main operation (e.g. the latest acknowledged adds
/// before a stale read), so that a violation stays one readable record.
const MAX_RELATED_OPS: usize = 10;

/// One thing the history shows that the system promised could not happen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: &'static str,
    /// One line a person reads, naming the key and the values.
    pub what: String,
    /// The ids of the operations involved.
    pub ops: Vec<u64>,
}

/// What one checker found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Checked {
    /// The checker's name.
    pub checker: &'static str,
    /// What it found; empty when the history passed it.
    pub violations: Vec<Violation>,
}

/// Runs every checker on `h`, in the order `counter`, `failed-add`, `checkout`, `create`,
/// `unavailable`; one [`Checked`] each, even when it found nothing.
pub fn check(h: &History) -> Vec<Checked> {
    let (counter, failed_add) = check_counter(h);
    vec![counter, failed_add, check_checkout(h), check_create(h), check_unavailable(h)]
}

/// Whether no checker found anything.
pub fn valid(results: &[Checked]) -> bool {
    results.iter().all(|c| c.violations.is_empty())
}

/// One line with the violations of each checker and the verdict, e.g.
/// `counter=0 failed-add=0 checkout=0 create=0 unavailable=0 valid=true`; the last token is
/// always `valid=true` or `valid=false`.
pub fn summary_line(results: &[Checked]) -> String {
    let mut parts: Vec<String> = results.iter().map(|c| format!("{}={}", c.checker, c.violations.len())).collect();
    parts.push(format!("valid={}", valid(results)));
    parts.join(" ")
}

/// Collects violations of one checker.
struct Found {
    checker: &'static str,
    violations: Vec<Violation>,
}

impl Found {
    fn new(checker: &'static str) -> Found {
        Found { checker, violations: Vec::new() }
    }

    fn push(&mut self, what: String, ops: Vec<u64>) {
        self.violations.push(Violation { checker: self.checker, what, ops });
    }

    fn done(self) -> Checked {
        Checked { checker: self.checker, violations: self.violations }
    }
}

/// Amounts keyed by a time, sorted by it, with prefix sums: how many come before a time,
/// and their total, in one binary search.
struct Prefix {
    keys: Vec<u64>,
    ids: Vec<u64>,
    /// `sums[n]` is the total of the first `n` amounts.
    sums: Vec<i64>,
}

impl Prefix {
    /// From (time, op id, amount) triples in any order.
    fn new(mut v: Vec<(u64, u64, i64)>) -> Prefix {
        v.sort_unstable();
        let mut sums = Vec::with_capacity(v.len() + 1);
        sums.push(0);
        let mut total = 0;
        for &(_, _, amount) in &v {
            total += amount;
            sums.push(total);
        }
        Prefix { keys: v.iter().map(|t| t.0).collect(), ids: v.iter().map(|t| t.1).collect(), sums }
    }

    /// How many amounts have a time strictly before `t`, and their total.
    fn before(&self, t: u64) -> (usize, i64) {
        let n = self.keys.partition_point(|&k| k < t);
        (n, self.sums[n])
    }

    /// How many amounts there are, and their total.
    fn all(&self) -> (usize, i64) {
        (self.keys.len(), self.sums[self.keys.len()])
    }

    /// The ids of the last (latest) few of the first `n`.
    fn latest_ids(&self, n: usize) -> Vec<u64> {
        self.ids[n.saturating_sub(MAX_RELATED_OPS)..n].to_vec()
    }
}

/// The adds of one item, indexed for the bounds of a read.
struct Adds {
    /// Acknowledged adds by completion: they applied before anything that began later.
    ok: Prefix,
    /// Acknowledged and unanswered adds by invocation: they may have applied by anything
    /// that ended later.
    maybe: Prefix,
    /// Refused adds by invocation: they must never show.
    failed: Prefix,
}

impl Adds {
    fn new(adds: &[(&Op, i64)]) -> Adds {
        let (mut ok, mut maybe, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for &(op, amount) in adds {
            match op.outcome {
                Outcome::Ok => {
                    ok.push((op.completed_us, op.id, amount));
                    maybe.push((op.invoked_us, op.id, amount));
                }
                Outcome::Unknown => maybe.push((op.invoked_us, op.id, amount)),
                Outcome::Fail => failed.push((op.invoked_us, op.id, amount)),
            }
        }
        Adds { ok: Prefix::new(ok), maybe: Prefix::new(maybe), failed: Prefix::new(failed) }
    }
}

/// Where a counter value lies against its bounds.
enum Place {
    /// Within the bounds.
    Within,
    /// Below the lower bound.
    Below,
    /// Above the upper bound but within reach of refused adds.
    FailedAddSeen,
    /// Above the upper bound and beyond every refused add.
    Above,
}

fn place(v: i64, lower: i64, upper: i64, failed: i64) -> Place {
    if v < lower {
        Place::Below
    } else if v <= upper {
        Place::Within
    } else if v <= upper + failed {
        Place::FailedAddSeen
    } else {
        Place::Above
    }
}

/// The `counter` and `failed-add` checkers, which share their bounds.
///
/// Items in an order line are left to the checkout checker, as checkouts move their stock too.
/// Amounts are taken as positive, as `stock/add` requires.
fn check_counter(h: &History) -> (Checked, Checked) {
    let mut counter = Found::new(COUNTER);
    let mut failed_add = Found::new(FAILED_ADD);
    let checkout_items = h.setup.order_items();

    // Per item: its adds (with amount) and its reads (with the value read).
    type PerItem<'a> = (Vec<(&'a Op, i64)>, Vec<(&'a Op, Option<i64>)>);
    let mut by_item: BTreeMap<&str, PerItem> = BTreeMap::new();
    for op in &h.ops {
        match &op.kind {
            Kind::Add { item, amount } => by_item.entry(item).or_default().0.push((op, *amount)),
            Kind::Read { item, value } => by_item.entry(item).or_default().1.push((op, *value)),
            _ => {}
        }
    }

    for (item, (adds, reads)) in by_item {
        if checkout_items.contains(item) {
            continue;
        }
        let Some(start) = h.setup.items.get(item).map(|s| s.stock) else {
            let ops = adds.iter().map(|a| a.0.id).chain(reads.iter().map(|r| r.0.id)).take(MAX_RELATED_OPS);
            counter.push(format!("item {item}: adds or reads of an item missing from the setup"), ops.collect());
            continue;
        };
        let bounds = Adds::new(&adds);
        for &(read, value) in &reads {
            if read.outcome != Outcome::Ok {
                continue;
            }
            let Some(v) = value else {
                counter.push(format!("item {item}: read op {} answered 200 without a value", read.id), vec![read.id]);
                continue;
            };
            let (acked, acked_sum) = bounds.ok.before(read.invoked_us);
            let (maybe, maybe_sum) = bounds.maybe.before(read.completed_us);
            let (refused, refused_sum) = bounds.failed.before(read.completed_us);
            let (lower, upper) = (start + acked_sum, start + maybe_sum);
            let mut ops = vec![read.id];
            match place(v, lower, upper, refused_sum) {
                Place::Within => {}
                Place::Below => {
                    ops.extend(bounds.ok.latest_ids(acked));
                    counter.push(
                        format!(
                            "item {item}: read op {} saw {v}, below {lower} (start {start} plus {acked} acknowledged \
                             adds completed before it began): stale read or lost add",
                            read.id
                        ),
                        ops,
                    );
                }
                Place::FailedAddSeen => {
                    ops.extend(bounds.failed.latest_ids(refused));
                    failed_add.push(
                        format!(
                            "item {item}: read op {} saw {v}, above {upper} (start {start} plus {maybe} acknowledged \
                             or unanswered adds sent before it ended) but within reach of {refused} refused adds: \
                             failed add seen",
                            read.id
                        ),
                        ops,
                    );
                }
                Place::Above => counter.push(
                    format!(
                        "item {item}: read op {} saw {v}, above {upper} (start {start} plus {maybe} acknowledged or \
                         unanswered adds sent before it ended): add applied twice or a read of a value never written",
                        read.id
                    ),
                    ops,
                ),
            }
        }

        if adds.is_empty() {
            continue;
        }
        let (acked, acked_sum) = bounds.ok.all();
        let (maybe, maybe_sum) = bounds.maybe.all();
        let (refused, refused_sum) = bounds.failed.all();
        let (lower, upper) = (start + acked_sum, start + maybe_sum);
        let Some(v) = h.fin.stock.get(item).copied().flatten() else {
            counter.push(format!("item {item}: final value unreadable (expected {lower}..={upper})"), vec![]);
            continue;
        };
        match place(v, lower, upper, refused_sum) {
            Place::Within => {}
            Place::Below => counter.push(
                format!(
                    "item {item}: final stock {v}, below {lower} (start {start} plus {acked} acknowledged adds): \
                     lost add"
                ),
                bounds.ok.latest_ids(acked),
            ),
            Place::FailedAddSeen => failed_add.push(
                format!(
                    "item {item}: final stock {v}, above {upper} (start {start} plus {maybe} acknowledged or \
                     unanswered adds) but within reach of {refused} refused adds: failed add seen"
                ),
                bounds.failed.latest_ids(refused),
            ),
            Place::Above => counter.push(
                format!(
                    "item {item}: final stock {v}, above {upper} (start {start} plus {maybe} acknowledged or \
                     unanswered adds): add applied twice or a value never written"
                ),
                vec![],
            ),
        }
    }
    (counter.done(), failed_add.done())
}

/// `"between A and B"`, or `"A"` when both are the same.
fn range_text(lower: i64, upper: i64) -> String {
    if lower == upper {
        lower.to_string()
    } else {
        format!("between {lower} and {upper}")
    }
}

/// The `checkout` checker: final credit and stock against the paid orders, the paid state of
/// each checked-out order against its answers, and paid orders staying paid.
fn check_checkout(h: &History) -> Checked {
    let mut found = Found::new(CHECKOUT);
    let setup = &h.setup;
    let paid = |order: &str| h.fin.paid.get(order).copied().flatten();
    let paid_text = |p: Option<bool>| match p {
        Some(true) => "paid",
        Some(false) => "unpaid",
        None => "unreadable",
    };

    // The checkouts and the Ok reads of a paid order, per order; and the adds of checkout items.
    let checkout_items = setup.order_items();
    let mut checkouts: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut seen_paid: Vec<(&str, &Op)> = Vec::new();
    // Item to (sum of acknowledged adds, sum of unanswered adds, their ids).
    let mut adds: BTreeMap<&str, (i64, i64, Vec<u64>)> = BTreeMap::new();
    for op in &h.ops {
        match &op.kind {
            Kind::Checkout { order } => checkouts.entry(order).or_default().push(op),
            Kind::FindOrder { order, paid: Some(true) } if op.outcome == Outcome::Ok => seen_paid.push((order, op)),
            Kind::Add { item, amount } if checkout_items.contains(item.as_str()) => {
                let entry = adds.entry(item).or_default();
                match op.outcome {
                    Outcome::Ok => entry.0 += amount,
                    Outcome::Unknown => entry.1 += amount,
                    Outcome::Fail => continue,
                }
                entry.2.push(op.id);
            }
            _ => {}
        }
    }

    // Order costs, each user's orders, and the units of each item the paid orders took.
    let mut cost: BTreeMap<&str, i64> = BTreeMap::new();
    let mut orders_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut taken: BTreeMap<&str, i64> = BTreeMap::new();
    // Item to the quantities it has in order lines (for the "taken twice" wording).
    let mut quantities: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    // Item to the orders that have it in a line.
    let mut orders_with: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (order, spec) in &setup.orders {
        if !setup.users.contains_key(&spec.user) {
            found.push(format!("order {order}: its user {} is missing from the setup", spec.user), vec![]);
        }
        let mut c = 0;
        for (item, qty) in &spec.lines {
            match setup.items.get(item) {
                Some(start) => c += qty * start.price,
                None => found.push(format!("order {order}: its item {item} is missing from the setup"), vec![]),
            }
            quantities.entry(item).or_default().insert(*qty);
            let with = orders_with.entry(item).or_default();
            if with.last() != Some(&order.as_str()) {
                with.push(order);
            }
            if paid(order) == Some(true) {
                *taken.entry(item).or_default() += qty;
            }
        }
        cost.insert(order, c);
        orders_of.entry(&spec.user).or_default().push(order);
    }
    let checkout_ids = |orders: &[&str]| -> Vec<u64> {
        let ids = orders.iter().flat_map(|o| checkouts.get(o).into_iter().flatten().map(|op| op.id));
        ids.take(2 * MAX_RELATED_OPS).collect()
    };

    for (user, start) in &setup.users {
        let orders = orders_of.get(user.as_str()).map(Vec::as_slice).unwrap_or_default();
        let charged: i64 = orders.iter().filter(|o| paid(o) == Some(true)).map(|o| cost[o]).sum();
        let expected = start - charged;
        match h.fin.credit.get(user).copied().flatten() {
            None => {
                found.push(format!("user {user}: final credit unreadable (expected {expected})"), checkout_ids(orders))
            }
            Some(credit) if credit != expected => {
                let diff = expected - credit;
                let why = if diff > 0 && orders.iter().any(|o| cost[o] > 0 && diff % cost[o] == 0) {
                    "an order charged twice or a charge without a paid order"
                } else if diff > 0 {
                    "charged more than its paid orders cost"
                } else {
                    "a paid order not charged, or a charge refunded too many times"
                };
                found.push(
                    format!(
                        "user {user}: credit {credit}, expected {expected} (a difference of {}: {why})",
                        diff.abs()
                    ),
                    checkout_ids(orders),
                );
            }
            Some(_) => {}
        }
    }

    for item in &checkout_items {
        let Some(start) = setup.items.get(*item).map(|s| s.stock) else { continue };
        let (acked, unanswered, add_ids) = adds.get(item).cloned().unwrap_or_default();
        let lower = start - taken.get(item).copied().unwrap_or(0) + acked;
        let upper = lower + unanswered;
        let expected = range_text(lower, upper);
        let mut ops = checkout_ids(&orders_with[item]);
        ops.extend(add_ids.iter().take(MAX_RELATED_OPS));
        match h.fin.stock.get(*item).copied().flatten() {
            None => found.push(format!("item {item}: final stock unreadable (expected {expected})"), ops),
            Some(stock) if stock < lower => {
                let diff = lower - stock;
                let why = if quantities[item].iter().any(|&q| q > 0 && diff % q == 0) {
                    "an order's stock taken twice or stock taken without a paid order"
                } else {
                    "more stock taken than the paid orders bought"
                };
                found.push(
                    format!("item {item}: stock {stock}, expected {expected} (a difference of {diff}: {why})"),
                    ops,
                );
            }
            Some(stock) if stock > upper => found.push(
                format!(
                    "item {item}: stock {stock}, expected {expected} (a difference of {}: a paid order that took no \
                     stock, stock returned too many times, or a refused add applied)",
                    stock - upper
                ),
                ops,
            ),
            Some(_) => {}
        }
    }

    for (order, ops) in &checkouts {
        let ids: Vec<u64> = ops.iter().map(|op| op.id).collect();
        if !setup.orders.contains_key(*order) {
            found.push(format!("order {order}: checked out but missing from the setup"), ids);
            continue;
        }
        let p = paid(order);
        if let Some(ok) = ops.iter().find(|op| op.outcome == Outcome::Ok) {
            if p != Some(true) {
                found.push(
                    format!(
                        "order {order}: checkout op {} answered 200 but not paid (final state: {})",
                        ok.id,
                        paid_text(p)
                    ),
                    ids,
                );
            }
        } else if ops.iter().all(|op| op.outcome == Outcome::Fail) && p != Some(false) {
            found.push(
                format!(
                    "order {order}: all {} checkouts answered 400 but paid (final state: {})",
                    ops.len(),
                    paid_text(p)
                ),
                ids,
            );
        }
    }

    for (order, op) in seen_paid {
        let p = paid(order);
        if p != Some(true) {
            found.push(
                format!(
                    "order {order}: find op {} read it paid, but it ends {} (a paid order never becomes unpaid)",
                    op.id,
                    paid_text(p)
                ),
                vec![op.id],
            );
        }
    }
    found.done()
}

/// The `create` checker: every acknowledged create can be found after the heal phase.
fn check_create(h: &History) -> Checked {
    let mut found = Found::new(CREATE);
    for op in &h.ops {
        if op.outcome != Outcome::Ok {
            continue;
        }
        let (what, id, map) = match &op.kind {
            Kind::CreateUser { id: Some(id) } => ("user", id, &h.fin.users_found),
            Kind::CreateItem { id: Some(id) } => ("item", id, &h.fin.items_found),
            _ => continue,
        };
        if map.get(id) != Some(&true) {
            let state = if map.contains_key(id) { "not found" } else { "never looked up" };
            found.push(format!("acknowledged create of {what} {id} not found (op {}: {state})", op.id), vec![op.id]);
        }
    }
    found.done()
}

/// The `unavailable` checker: a 5xx is excused only by a fault on the gateway or by a
/// service with fewer than a majority of its replicas up during the operation (a replica
/// counts as down for the whole operation if any fault of it overlaps the operation).
fn check_unavailable(h: &History) -> Checked {
    let mut found = Found::new(UNAVAILABLE);
    let mut five_hundreds: Vec<&Op> = h.ops.iter().filter(|op| op.status.is_some_and(|s| s >= 500)).collect();
    if five_hundreds.is_empty() {
        return found.done();
    }
    five_hundreds.sort_by_key(|op| (op.invoked_us, op.id));
    let replicas = h.setup.replicas_per_service;
    if replicas == 0 {
        found.push("the setup names no replicas per service: 5xx cannot be checked".to_string(), vec![]);
        return found.done();
    }
    let majority = h.setup.majority();
    let balancer: Vec<&Fault> = h.faults.iter().filter(|f| f.role == "balancer").collect();
    let mut replica_faults: Vec<&Fault> =
        h.faults.iter().filter(|f| f.role == "replica" && f.service.is_some()).collect();
    replica_faults.sort_by_key(|f| f.start_us);

    let mut bad: Vec<(&Op, String)> = Vec::new();
    for op in five_hundreds {
        let (from, to) = (op.invoked_us, op.completed_us);
        if balancer.iter().any(|f| f.overlaps(from, to)) {
            continue;
        }
        let started = replica_faults.partition_point(|f| f.start_us <= to);
        let mut down: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for f in replica_faults[..started].iter().filter(|f| f.overlaps(from, to)) {
            down.entry(f.service.as_deref().unwrap_or_default()).or_default().insert(&f.target);
        }
        if down.values().any(|targets| replicas.saturating_sub(targets.len() as u32) < majority) {
            continue;
        }
        let down_text = if down.is_empty() {
            "nothing down".to_string()
        } else {
            let targets: Vec<&str> = down.values().flatten().copied().collect();
            format!("down: {}", targets.join(", "))
        };
        bad.push((op, down_text));
    }

    let rest = bad.split_off(bad.len().min(MAX_UNAVAILABLE_REPORTED));
    for (op, down_text) in bad {
        found.push(
            format!(
                "{} op {} answered {} over {}..{} us ({down_text}): 5xx while a majority of every service was up{}",
                op.kind.name(),
                op.id,
                op.status.unwrap_or_default(),
                op.invoked_us,
                op.completed_us,
                op.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            vec![op.id],
        );
    }
    if !rest.is_empty() {
        found.push(
            format!("... and {} more 5xx while a majority of every service was up", rest.len()),
            rest.iter().map(|(op, _)| op.id).collect(),
        );
    }
    found.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::history::{Final, ItemStart, OrderSpec, Setup};

    /// Builds histories by hand: the setup, operations (ids in order of creation), faults and
    /// final reads. Outcomes get their usual status: Ok 200, Fail 400, Unknown none.
    struct B {
        h: History,
    }

    impl B {
        fn new() -> B {
            let setup = Setup { replicas_per_service: 3, ..Setup::default() };
            B { h: History { setup, ops: vec![], faults: vec![], fin: Final::default() } }
        }

        fn item(&mut self, id: &str, stock: i64, price: i64) {
            self.h.setup.items.insert(id.into(), ItemStart { stock, price });
        }

        fn user(&mut self, id: &str, credit: i64) {
            self.h.setup.users.insert(id.into(), credit);
        }

        fn order(&mut self, id: &str, user: &str, lines: &[(&str, i64)]) {
            let lines = lines.iter().map(|(i, q)| (i.to_string(), *q)).collect();
            self.h.setup.orders.insert(id.into(), OrderSpec { user: user.into(), lines });
        }

        fn op(&mut self, t0: u64, t1: u64, outcome: Outcome, kind: Kind) -> u64 {
            let id = self.h.ops.len() as u64;
            let status = match outcome {
                Outcome::Ok => Some(200),
                Outcome::Fail => Some(400),
                Outcome::Unknown => None,
            };
            let process = id as u32 % 8;
            let detail = None;
            self.h.ops.push(Op {
                id,
                process,
                invoked_us: t0,
                completed_us: t1,
                outcome,
                status,
                attempts: 1,
                kind,
                detail,
            });
            id
        }

        fn add(&mut self, item: &str, amount: i64, t0: u64, t1: u64, outcome: Outcome) -> u64 {
            self.op(t0, t1, outcome, Kind::Add { item: item.into(), amount })
        }

        fn read(&mut self, item: &str, value: i64, t0: u64, t1: u64) -> u64 {
            self.op(t0, t1, Outcome::Ok, Kind::Read { item: item.into(), value: Some(value) })
        }

        fn checkout(&mut self, order: &str, t0: u64, t1: u64, outcome: Outcome) -> u64 {
            self.op(t0, t1, outcome, Kind::Checkout { order: order.into() })
        }

        fn find(&mut self, order: &str, paid: bool, t0: u64, t1: u64) -> u64 {
            self.op(t0, t1, Outcome::Ok, Kind::FindOrder { order: order.into(), paid: Some(paid) })
        }

        /// An Unknown operation answered with `status` (a 5xx).
        fn five_hundred(&mut self, status: u16, t0: u64, t1: u64) -> u64 {
            let id = self.op(t0, t1, Outcome::Unknown, Kind::CreateItem { id: None });
            self.h.ops[id as usize].status = Some(status);
            id
        }

        fn fault(&mut self, kind: &str, target: &str, t0: u64, t1: u64) {
            // "stock-replica-1" -> service "stock", role "replica".
            let mut parts = target.split('-');
            let (service, role) = (parts.next().unwrap(), parts.next().unwrap());
            let service = (role == "replica").then(|| service.to_string());
            let (kind, target, role) = (kind.into(), target.into(), role.into());
            self.h.faults.push(Fault { kind, target, service, role, start_us: t0, end_us: t1 });
        }

        fn stock(&mut self, item: &str, v: i64) {
            self.h.fin.stock.insert(item.into(), Some(v));
        }

        fn credit(&mut self, user: &str, v: i64) {
            self.h.fin.credit.insert(user.into(), Some(v));
        }

        fn paid(&mut self, order: &str, v: bool) {
            self.h.fin.paid.insert(order.into(), Some(v));
        }
    }

    /// The violations of one checker.
    fn of(results: &[Checked], checker: &str) -> Vec<Violation> {
        results.iter().find(|c| c.checker == checker).expect("checker ran").violations.clone()
    }

    /// Checks `h`, asserts that only `checker` found something and that it found `n` things,
    /// and returns them.
    fn only(h: &History, checker: &str, n: usize) -> Vec<Violation> {
        let results = check(h);
        for c in &results {
            if c.checker != checker {
                assert!(c.violations.is_empty(), "{} found {:?}", c.checker, c.violations);
            }
        }
        let found = of(&results, checker);
        assert_eq!(found.len(), n, "{checker} found {found:#?}");
        assert!(!valid(&results));
        found
    }

    /// One counter item `a` (stock 10) plus an Ok add of 5 over 0..10.
    fn one_add() -> B {
        let mut b = B::new();
        b.item("a", 10, 1);
        b.add("a", 5, 0, 10, Outcome::Ok);
        b
    }

    /// A history of everything going right, with every kind of concurrency the checkers allow.
    fn clean() -> B {
        let mut b = B::new();
        // Counter item a: two concurrent adds, then a read after both.
        b.item("a", 10, 1);
        b.add("a", 5, 0, 10, Outcome::Ok);
        b.add("a", 3, 5, 15, Outcome::Ok);
        b.read("a", 18, 20, 25);
        // A read concurrent with an add sees either value.
        b.add("a", 2, 30, 40, Outcome::Ok);
        b.read("a", 18, 35, 45);
        b.read("a", 20, 35, 45);
        // An unanswered add that applied (4) and one that did not (7); a refused add (100).
        b.add("a", 4, 50, 60, Outcome::Unknown);
        b.add("a", 7, 50, 1000, Outcome::Unknown);
        b.add("a", 100, 55, 58, Outcome::Fail);
        b.read("a", 24, 70, 80);
        b.stock("a", 24);
        // A read-only counter item.
        b.item("r", 7, 1);
        b.read("r", 7, 0, 5);

        // Checkouts: o1 (cost 7) paid with 200, o2 (cost 5) refused with 400 (u2 has 3),
        // o3 (cost 5) unanswered and applied.
        b.item("b", 2, 5);
        b.item("c", 10, 1);
        b.user("u1", 20);
        b.user("u2", 3);
        b.order("o1", "u1", &[("b", 1), ("c", 2)]);
        b.order("o2", "u2", &[("b", 1)]);
        b.order("o3", "u1", &[("b", 1)]);
        b.checkout("o1", 100, 150, Outcome::Ok);
        b.checkout("o2", 100, 150, Outcome::Fail);
        b.checkout("o2", 160, 170, Outcome::Fail);
        b.checkout("o3", 100, 5000, Outcome::Unknown);
        b.find("o1", true, 200, 210);
        // An add on a checkout item: one acknowledged, one unanswered that did not apply.
        b.add("c", 5, 100, 110, Outcome::Ok);
        b.add("c", 1, 100, 9000, Outcome::Unknown);
        b.paid("o1", true);
        b.paid("o2", false);
        b.paid("o3", true);
        b.credit("u1", 20 - 7 - 5);
        b.credit("u2", 3);
        b.stock("b", 0);
        b.stock("c", 10 - 2 + 5);

        // Creates, found afterwards (the unanswered one has no id).
        b.op(300, 310, Outcome::Ok, Kind::CreateUser { id: Some("u9".into()) });
        b.op(300, 310, Outcome::Ok, Kind::CreateItem { id: Some("i9".into()) });
        b.op(300, 9000, Outcome::Unknown, Kind::CreateUser { id: None });
        b.h.fin.users_found.insert("u9".into(), true);
        b.h.fin.items_found.insert("i9".into(), true);

        // 5xx excused: two of three stock replicas down; the gateway under a fault.
        b.fault("kill", "stock-replica-1", 400, 500);
        b.fault("pause", "stock-replica-2", 450, 600);
        b.five_hundred(503, 460, 470);
        b.fault("cut", "gateway-balancer-0", 700, 800);
        b.five_hundred(502, 790, 900);
        b
    }

    #[test]
    fn clean_history_passes_every_checker() {
        let results = check(&clean().h);
        let names: Vec<&str> = results.iter().map(|c| c.checker).collect();
        assert_eq!(names, [COUNTER, FAILED_ADD, CHECKOUT, CREATE, UNAVAILABLE]);
        for c in &results {
            assert!(c.violations.is_empty(), "{} found {:#?}", c.checker, c.violations);
        }
        assert!(valid(&results));
    }

    #[test]
    fn lost_add_is_reported_by_counter() {
        let mut b = one_add();
        let read = b.read("a", 10, 20, 30);
        b.stock("a", 10);
        let found = only(&b.h, COUNTER, 2);
        assert_eq!(found[0].ops, [read, 0]);
        assert!(found[0].what.contains("saw 10, below 15"), "{}", found[0].what);
        assert!(found[0].what.contains("stale read or lost add"));
        assert!(found[1].what.contains("final stock 10, below 15"), "{}", found[1].what);
    }

    #[test]
    fn unreadable_final_counter_value_is_reported_by_counter() {
        let mut b = one_add();
        b.h.fin.stock.insert("a".into(), None);
        let found = only(&b.h, COUNTER, 1);
        assert!(found[0].what.contains("final value unreadable"));
    }

    #[test]
    fn double_applied_add_is_reported_by_counter() {
        let mut b = one_add();
        let read = b.read("a", 20, 20, 30);
        b.stock("a", 15);
        let found = only(&b.h, COUNTER, 1);
        assert_eq!(found[0].ops, [read]);
        assert!(found[0].what.contains("saw 20, above 15"), "{}", found[0].what);
        assert!(found[0].what.contains("add applied twice"));
    }

    #[test]
    fn stale_read_is_reported_by_counter() {
        let mut b = one_add();
        let second = b.add("a", 5, 20, 30, Outcome::Ok);
        b.read("a", 20, 35, 40);
        // Both adds completed before this read began, and an earlier read saw 20.
        let stale = b.read("a", 15, 50, 60);
        b.stock("a", 20);
        let found = only(&b.h, COUNTER, 1);
        assert_eq!(found[0].ops, [stale, 0, second]);
        assert!(found[0].what.contains("saw 15, below 20"), "{}", found[0].what);
    }

    #[test]
    fn failed_add_seen_is_reported_by_failed_add() {
        let mut b = one_add();
        let refused = b.add("a", 3, 12, 14, Outcome::Fail);
        let read = b.read("a", 18, 20, 30);
        b.stock("a", 18);
        let found = only(&b.h, FAILED_ADD, 2);
        assert_eq!(found[0].ops, [read, refused]);
        assert!(found[0].what.contains("saw 18, above 15"), "{}", found[0].what);
        assert!(found[1].what.contains("final stock 18"), "{}", found[1].what);
        assert!(found.iter().all(|v| v.what.contains("failed add seen")));
    }

    #[test]
    fn read_above_every_failed_add_is_reported_by_counter() {
        let mut b = one_add();
        b.add("a", 3, 12, 14, Outcome::Fail);
        b.read("a", 19, 20, 30);
        b.stock("a", 15);
        only(&b.h, COUNTER, 1);
    }

    /// User u (credit 10), item b (stock 10, price 3), order o of one b checked out with
    /// `outcome`, ending with `paid`, credit and stock as given.
    fn one_checkout(outcome: Outcome, paid: bool, credit: i64, stock: i64) -> B {
        let mut b = B::new();
        b.item("b", 10, 3);
        b.user("u", 10);
        b.order("o", "u", &[("b", 1)]);
        b.checkout("o", 0, 10, outcome);
        b.paid("o", paid);
        b.credit("u", credit);
        b.stock("b", stock);
        b
    }

    #[test]
    fn consistent_checkouts_pass() {
        for (outcome, paid, credit, stock) in [
            (Outcome::Ok, true, 7, 9),
            (Outcome::Fail, false, 10, 10),
            (Outcome::Unknown, true, 7, 9),
            (Outcome::Unknown, false, 10, 10),
        ] {
            let results = check(&one_checkout(outcome, paid, credit, stock).h);
            assert!(valid(&results), "{outcome:?} paid={paid}: {results:#?}");
        }
    }

    #[test]
    fn double_paid_order_is_reported_by_checkout() {
        // Charged twice.
        let found = only(&one_checkout(Outcome::Ok, true, 4, 9).h, CHECKOUT, 1);
        assert_eq!(
            found[0].what,
            "user u: credit 4, expected 7 (a difference of 3: an order charged twice or a charge without a paid order)"
        );
        assert_eq!(found[0].ops, [0]);
        // Stock taken twice.
        let found = only(&one_checkout(Outcome::Ok, true, 7, 8).h, CHECKOUT, 1);
        assert!(found[0]
            .what
            .starts_with("item b: stock 8, expected 9 (a difference of 1: an order's stock taken twice"));
        // Charged although not paid.
        let found = only(&one_checkout(Outcome::Unknown, false, 7, 10).h, CHECKOUT, 1);
        assert!(found[0].what.contains("credit 7, expected 10"), "{}", found[0].what);
    }

    #[test]
    fn checkout_answered_200_but_unpaid_is_reported_by_checkout() {
        let found = only(&one_checkout(Outcome::Ok, false, 10, 10).h, CHECKOUT, 1);
        assert!(found[0].what.contains("answered 200 but not paid"), "{}", found[0].what);
    }

    #[test]
    fn checkout_answered_400_but_paid_is_reported_by_checkout() {
        let found = only(&one_checkout(Outcome::Fail, true, 7, 9).h, CHECKOUT, 1);
        assert!(found[0].what.contains("answered 400 but paid"), "{}", found[0].what);
    }

    #[test]
    fn paid_order_that_ends_unpaid_is_reported_by_checkout() {
        let mut b = one_checkout(Outcome::Unknown, false, 10, 10);
        let find = b.find("o", true, 20, 30);
        let found = only(&b.h, CHECKOUT, 1);
        assert_eq!(found[0].ops, [find]);
        assert!(found[0].what.contains("never becomes unpaid"), "{}", found[0].what);
    }

    #[test]
    fn checkout_item_with_adds_is_checked_against_a_range() {
        for (stock, ok) in [(13, true), (14, true), (12, false), (15, false)] {
            let mut b = one_checkout(Outcome::Ok, true, 7, stock);
            b.add("b", 4, 0, 10, Outcome::Ok);
            b.add("b", 1, 0, 10, Outcome::Unknown);
            let results = check(&b.h);
            assert_eq!(valid(&results), ok, "stock {stock}: {results:#?}");
            if !ok {
                assert_eq!(of(&results, CHECKOUT).len(), 1, "stock {stock}");
            }
        }
    }

    #[test]
    fn acknowledged_create_not_found_is_reported_by_create() {
        let mut b = B::new();
        let user = b.op(0, 10, Outcome::Ok, Kind::CreateUser { id: Some("u9".into()) });
        let item = b.op(0, 10, Outcome::Ok, Kind::CreateItem { id: Some("i9".into()) });
        b.h.fin.items_found.insert("i9".into(), false);
        let found = only(&b.h, CREATE, 2);
        assert!(found[0].what.starts_with("acknowledged create of user u9 not found"), "{}", found[0].what);
        assert_eq!(found[0].ops, [user]);
        assert!(found[1].what.starts_with("acknowledged create of item i9 not found"), "{}", found[1].what);
        assert_eq!(found[1].ops, [item]);
    }

    /// A fault as (kind, target, start, end).
    type FaultSpec = (&'static str, &'static str, u64, u64);

    #[test]
    fn five_hundred_is_reported_only_while_a_majority_of_every_service_was_up() {
        // (faults, whether the 503 over 100..200 is a violation)
        let cases: &[(&[FaultSpec], bool)] = &[
            (&[], true),
            // One of three stock replicas down leaves a majority up.
            (&[("kill", "stock-replica-1", 50, 150)], true),
            // The same replica twice is still one replica.
            (&[("kill", "stock-replica-1", 50, 120), ("pause", "stock-replica-1", 130, 250)], true),
            // Two of three stock replicas down: no majority.
            (&[("kill", "stock-replica-1", 50, 150), ("kill", "stock-replica-2", 180, 300)], false),
            (&[("kill", "stock-replica-1", 50, 150), ("cut", "stock-replica-2", 200, 300)], false),
            // Two replicas down, but of different services.
            (&[("kill", "stock-replica-1", 50, 150), ("kill", "payment-replica-2", 50, 150)], true),
            // Two stock replicas down, but not during the operation.
            (&[("kill", "stock-replica-1", 0, 99), ("kill", "stock-replica-2", 201, 300)], true),
            // A coordinator fault does not excuse a 5xx: nginx retries on the other one.
            (&[("pause", "order-coordinator-0", 0, 300)], true),
            // A gateway fault does.
            (&[("cut", "gateway-balancer-0", 150, 160)], false),
        ];
        for (faults, violation) in cases {
            let mut b = B::new();
            for (kind, target, t0, t1) in *faults {
                b.fault(kind, target, *t0, *t1);
            }
            let op = b.five_hundred(503, 100, 200);
            let results = check(&b.h);
            let found = of(&results, UNAVAILABLE);
            assert_eq!(!found.is_empty(), *violation, "{faults:?}: {found:#?}");
            assert_eq!(valid(&results), !violation, "{faults:?}");
            if *violation {
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].ops, [op]);
                assert!(found[0].what.contains("5xx while a majority of every service was up"));
            }
        }
    }

    #[test]
    fn many_five_hundreds_are_summed_up_after_the_first_twenty() {
        let mut b = B::new();
        for i in 0..25 {
            b.five_hundred(500, i * 10, i * 10 + 5);
        }
        let found = only(&b.h, UNAVAILABLE, MAX_UNAVAILABLE_REPORTED + 1);
        assert_eq!(found[0].ops, [0]);
        let last = found.last().unwrap();
        assert_eq!(last.what, "... and 5 more 5xx while a majority of every service was up");
        assert_eq!(last.ops, [20, 21, 22, 23, 24]);
    }

    #[test]
    fn summary_line_names_each_checker_and_ends_with_the_verdict() {
        assert_eq!(
            summary_line(&check(&clean().h)),
            "counter=0 failed-add=0 checkout=0 create=0 unavailable=0 valid=true"
        );
        let mut b = clean();
        b.read("a", 0, 2000, 2010);
        assert_eq!(summary_line(&check(&b.h)), "counter=1 failed-add=0 checkout=0 create=0 unavailable=0 valid=false");
    }

    #[test]
    fn history_round_trips_through_json() {
        let h = clean().h;
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn counter_checks_a_100k_op_history_quickly() {
        // Ten items; each op overlaps its neighbours. An add applies at its invocation and a
        // read sees the state at its invocation, so every read is possible; one in ten adds
        // is unanswered (and applied), one in ten refused.
        const OPS: u64 = 100_000;
        let mut b = B::new();
        let items: Vec<String> = (0..10).map(|i| format!("item-{i}")).collect();
        let mut value = vec![100i64; items.len()];
        for item in &items {
            b.item(item, 100, 1);
        }
        for i in 0..OPS {
            let k = (i % 10) as usize;
            let (t0, t1) = (i * 10, i * 10 + 35);
            if (i / 10) % 2 == 0 {
                let outcome = match (i / 20) % 10 {
                    0 => Outcome::Unknown,
                    1 => Outcome::Fail,
                    _ => Outcome::Ok,
                };
                if outcome != Outcome::Fail {
                    value[k] += 2;
                }
                b.add(&items[k], 2, t0, t1, outcome);
            } else {
                b.read(&items[k], value[k], t0, t1);
            }
        }
        for (item, v) in items.iter().zip(&value) {
            b.stock(item, *v);
        }
        let started = std::time::Instant::now();
        let results = check(&b.h);
        let took = started.elapsed();
        assert!(valid(&results), "{}", summary_line(&results));
        assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
        eprintln!("checked {OPS} ops in {took:?}");
    }
}
