//! The public route table, and the parsing of a request path into a route and its
//! arguments.
//!
//! Coordinators use it to find the key a request is routed by (docs/design.md §3.1); replicas
//! use the same parse to dispatch, so both hops agree on the key byte for byte. Numbers are
//! checked here, at the edge: a malformed, negative or overflowing number is a 400 before
//! anything is forwarded.

use crate::topology::Service;

/// HTTP method of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET: a read.
    Get,
    /// POST: a write (or a batch).
    Post,
}

impl Method {
    /// The method's name in HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One path segment after the service prefix.
#[derive(Clone, Copy, Debug)]
pub enum Seg {
    /// A fixed word.
    Lit(&'static str),
    /// An opaque id (percent-decoded).
    Id,
    /// A non-negative i64.
    Int,
}

/// Where a route's routing key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The argument at this index (counting only Id/Int segments).
    Arg(usize),
    /// The coordinator mints a new id (create calls).
    Mint,
    /// batch_init: the argument at this index is the number of keys "0".."n-1".
    Batch(usize),
}

/// A route of a service's API. Stock and payment share their route names (`credit`,
/// `debit`, `tx_debit`, `tx_compensate`): both are ledgers of one balance per key.
#[derive(Debug)]
pub struct Route {
    /// The route's name, for logs, metrics and [`Command::route_name`].
    pub name: &'static str,
    /// Its method.
    pub method: Method,
    /// Segments after the service prefix.
    pub segs: &'static [Seg],
    /// Where the routing key comes from.
    pub key: KeySource,
    /// Internal routes (saga steps) require the cluster secret even at the coordinator.
    pub internal: bool,
    /// Whether the coordinator waits the long timeout for it: a checkout waits for its saga, a
    /// batch_init writes many keys.
    pub long: bool,
    /// The command a request of this route asks for, from its arguments (in path order, of
    /// the kinds `segs` says: the table is the one place that reads arguments by position).
    pub command: fn(&[Arg]) -> Command,
}

use KeySource::*;
use Method::*;
use Seg::*;

const fn r(
    name: &'static str,
    method: Method,
    segs: &'static [Seg],
    key: KeySource,
    command: fn(&[Arg]) -> Command,
) -> Route {
    let long = matches!(key, Batch(_));
    Route { name, method, segs, key, internal: false, long, command }
}

const fn internal(name: &'static str, segs: &'static [Seg], key: KeySource, command: fn(&[Arg]) -> Command) -> Route {
    Route { name, method: Post, segs, key, internal: true, long: false, command }
}

/// The id argument at `i` of a route's arguments (a table bug if it is not one).
fn id(a: &[Arg], i: usize) -> String {
    match &a[i] {
        Arg::Id(s) => s.clone(),
        Arg::Int(_) => panic!("argument {i} is not an id"),
    }
}

/// The number argument at `i`.
fn int(a: &[Arg], i: usize) -> i64 {
    match &a[i] {
        Arg::Int(n) => *n,
        Arg::Id(_) => panic!("argument {i} is not a number"),
    }
}

use LedgerCommand as L;
use OrderCommand as O;

// The command builders the two ledgers share: their paths differ, their arguments do not.
fn find(a: &[Arg]) -> Command {
    Command::Ledger(L::Find { key: id(a, 0) })
}
fn credit(a: &[Arg]) -> Command {
    Command::Ledger(L::Credit { key: id(a, 0), amount: int(a, 1) })
}
fn debit(a: &[Arg]) -> Command {
    Command::Ledger(L::Debit { key: id(a, 0), amount: int(a, 1) })
}
fn tx_debit(a: &[Arg]) -> Command {
    Command::Ledger(L::TxDebit { key: id(a, 0), amount: int(a, 1), tx: id(a, 2) })
}

// The saga's undo is the same route in both ledgers.
const TX_COMPENSATE: Route = internal("tx_compensate", &[Lit("tx"), Lit("compensate"), Id, Id], Arg(0), |a| {
    Command::Ledger(L::TxCompensate { key: id(a, 0), tx: id(a, 1) })
});

static STOCK: &[Route] = &[
    r("create", Post, &[Lit("item"), Lit("create"), Int], Mint, |a| {
        Command::Ledger(L::Create { price: Some(int(a, 0)) })
    }),
    r("find", Get, &[Lit("find"), Id], Arg(0), find),
    r("credit", Post, &[Lit("add"), Id, Int], Arg(0), credit),
    r("debit", Post, &[Lit("subtract"), Id, Int], Arg(0), debit),
    r("batch_init", Post, &[Lit("batch_init"), Int, Int, Int], Batch(0), |a| {
        Command::Ledger(L::BatchInit { n: int(a, 0), balance: int(a, 1), price: Some(int(a, 2)) })
    }),
    internal("tx_debit", &[Lit("tx"), Lit("subtract"), Id, Int, Id], Arg(0), tx_debit),
    TX_COMPENSATE,
];

static PAYMENT: &[Route] = &[
    r("create", Post, &[Lit("create_user")], Mint, |_| Command::Ledger(L::Create { price: None })),
    r("find", Get, &[Lit("find_user"), Id], Arg(0), find),
    r("credit", Post, &[Lit("add_funds"), Id, Int], Arg(0), credit),
    r("debit", Post, &[Lit("pay"), Id, Int], Arg(0), debit),
    r("batch_init", Post, &[Lit("batch_init"), Int, Int], Batch(0), |a| {
        Command::Ledger(L::BatchInit { n: int(a, 0), balance: int(a, 1), price: None })
    }),
    internal("tx_debit", &[Lit("tx"), Lit("pay"), Id, Int, Id], Arg(0), tx_debit),
    TX_COMPENSATE,
];

static ORDER: &[Route] = &[
    r("create", Post, &[Lit("create"), Id], Mint, |a| Command::Order(O::Create { user: id(a, 0) })),
    r("find", Get, &[Lit("find"), Id], Arg(0), |a| Command::Order(O::Find { order: id(a, 0) })),
    r("add_item", Post, &[Lit("addItem"), Id, Id, Int], Arg(0), |a| {
        Command::Order(O::AddItem { order: id(a, 0), item: id(a, 1), quantity: int(a, 2) })
    }),
    Route {
        long: true,
        ..r("checkout", Post, &[Lit("checkout"), Id], Arg(0), |a| Command::Order(O::Checkout { order: id(a, 0) }))
    },
    r("batch_init", Post, &[Lit("batch_init"), Int, Int, Int, Int], Batch(0), |a| {
        Command::Order(O::BatchInit { n: int(a, 0), n_items: int(a, 1), n_users: int(a, 2), item_price: int(a, 3) })
    }),
];

/// What a request asks a service to do, with named fields. The route table resolves every
/// request into one ([`Target::command`]); the services' handlers match on it, and a client
/// of another service builds its path from one ([`Command::path`]). Adding an endpoint: a
/// variant here, its row in the table, and the handler's arm (docs/design.md §11.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stock or payment: both are ledgers of one balance per key.
    Ledger(LedgerCommand),
    /// The order service.
    Order(OrderCommand),
}

/// A command of a ledger service (stock: items and their stock; payment: users and their
/// credit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerCommand {
    /// Creates a document with a minted key: an item with its `price`, a user (`None`).
    Create { price: Option<i64> },
    /// Reads a document.
    Find { key: String },
    /// Adds to the balance (stock added, funds added).
    Credit { key: String, amount: i64 },
    /// Takes from the balance (stock subtracted, a payment).
    Debit { key: String, amount: i64 },
    /// Writes documents "0".."n-1", each with `balance` (and an item's `price`).
    BatchInit { n: i64, balance: i64, price: Option<i64> },
    /// A saga step: a debit under transaction `tx`, at most once.
    TxDebit { key: String, amount: i64, tx: String },
    /// Undoes transaction `tx` (or fences it if it never arrived).
    TxCompensate { key: String, tx: String },
}

/// A command of the order service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// Creates an order of `user` with a minted key.
    Create { user: String },
    /// Reads an order (finishing a checkout in flight first).
    Find { order: String },
    /// Adds `quantity` of `item` to the order.
    AddItem { order: String, item: String, quantity: i64 },
    /// Checks the order out: the saga.
    Checkout { order: String },
    /// Writes orders "0".."n-1" of random users and items.
    BatchInit { n: i64, n_items: i64, n_users: i64, item_price: i64 },
}

impl Command {
    /// The key the command is routed by: the document it names (a create's key is minted, a
    /// batch_init's are many).
    pub fn key(&self) -> Option<&str> {
        match self {
            Command::Ledger(
                L::Find { key }
                | L::Credit { key, .. }
                | L::Debit { key, .. }
                | L::TxDebit { key, .. }
                | L::TxCompensate { key, .. },
            ) => Some(key),
            Command::Order(O::Find { order } | O::AddItem { order, .. } | O::Checkout { order }) => Some(order),
            Command::Ledger(L::Create { .. } | L::BatchInit { .. })
            | Command::Order(O::Create { .. } | O::BatchInit { .. }) => None,
        }
    }

    /// The name of the route that carries it.
    pub fn route_name(&self) -> &'static str {
        match self {
            Command::Ledger(c) => match c {
                L::Create { .. } => "create",
                L::Find { .. } => "find",
                L::Credit { .. } => "credit",
                L::Debit { .. } => "debit",
                L::BatchInit { .. } => "batch_init",
                L::TxDebit { .. } => "tx_debit",
                L::TxCompensate { .. } => "tx_compensate",
            },
            Command::Order(c) => match c {
                O::Create { .. } => "create",
                O::Find { .. } => "find",
                O::AddItem { .. } => "add_item",
                O::Checkout { .. } => "checkout",
                O::BatchInit { .. } => "batch_init",
            },
        }
    }

    /// Its arguments in path order (what [`Route::command`] reads back).
    fn args(&self) -> Vec<Arg> {
        let i = |s: &String| Arg::Id(s.clone());
        let n = |v: &i64| Arg::Int(*v);
        match self {
            Command::Ledger(c) => match c {
                L::Create { price } => price.iter().map(n).collect(),
                L::Find { key } => vec![i(key)],
                L::Credit { key, amount } | L::Debit { key, amount } => vec![i(key), n(amount)],
                L::BatchInit { n: count, balance, price } => {
                    [n(count), n(balance)].into_iter().chain(price.iter().map(n)).collect()
                }
                L::TxDebit { key, amount, tx } => vec![i(key), n(amount), i(tx)],
                L::TxCompensate { key, tx } => vec![i(key), i(tx)],
            },
            Command::Order(c) => match c {
                O::Create { user } => vec![i(user)],
                O::Find { order } | O::Checkout { order } => vec![i(order)],
                O::AddItem { order, item, quantity } => vec![i(order), i(item), n(quantity)],
                O::BatchInit { n: count, n_items, n_users, item_price } => {
                    vec![n(count), n(n_items), n(n_users), n(item_price)]
                }
            },
        }
    }

    /// The method and path that ask `service` for this command (`/payment/tx/pay/u1/5/o%231`),
    /// rendered from the route table; `None` if the service has no such route.
    pub fn path(&self, service: Service) -> Option<(Method, String)> {
        let route = routes(service).iter().find(|r| r.name == self.route_name())?;
        let mut args = self.args().into_iter();
        let mut path = format!("/{}", service.prefix());
        for seg in route.segs {
            path.push('/');
            match seg {
                Lit(l) => path.push_str(l),
                Id => match args.next() {
                    Some(Arg::Id(s)) => path.push_str(&percent_encode(&s)),
                    _ => return None,
                },
                Int => match args.next() {
                    Some(Arg::Int(v)) => path.push_str(&v.to_string()),
                    _ => return None,
                },
            }
        }
        args.next().is_none().then_some((route.method, path))
    }
}

/// Largest n a batch_init accepts: bounds the memory one request can ask for.
pub const MAX_BATCH: i64 = 1_000_000;

/// The routes of a service.
pub fn routes(s: Service) -> &'static [Route] {
    match s {
        Service::Order => ORDER,
        Service::Payment => PAYMENT,
        Service::Stock => STOCK,
    }
}

/// A parsed argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An id.
    Id(String),
    /// A number.
    Int(i64),
}

/// A request matched to its route.
#[derive(Debug)]
pub struct Target {
    /// The matched route.
    pub route: &'static Route,
    /// Its Id/Int arguments in path order.
    pub args: Vec<Arg>,
}

impl Target {
    /// The command the request asks for.
    pub fn command(&self) -> Command {
        (self.route.command)(&self.args)
    }

    /// The id argument at `i` (panics if the route has no id there: a table bug).
    pub fn id(&self, i: usize) -> &str {
        match &self.args[i] {
            Arg::Id(s) => s,
            Arg::Int(_) => panic!("route {} argument {i} is not an id", self.route.name),
        }
    }

    /// The number argument at `i`.
    pub fn int(&self, i: usize) -> i64 {
        match &self.args[i] {
            Arg::Int(n) => *n,
            Arg::Id(_) => panic!("route {} argument {i} is not a number", self.route.name),
        }
    }

    /// The routing key, for routes keyed by an argument.
    pub fn key(&self) -> Option<&str> {
        match self.route.key {
            Arg(i) => Some(self.id(i)),
            _ => None,
        }
    }
}

/// Why a path does not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No route has this shape: 404.
    NotFound,
    /// The shape matches but the method does not: 405.
    MethodNotAllowed,
    /// An argument is malformed: 400 with this text.
    Bad(String),
}

/// Parses a non-negative i64 as the API accepts it: decimal digits only.
pub fn parse_int(s: &str) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a non-negative integer: '{s}'"));
    }
    s.parse::<i64>().map_err(|_| format!("number out of range: '{s}'"))
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a path segment: everything but unreserved characters is escaped.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Most segments a route has after the service prefix.
const MAX_SEGS: usize = 5;

// Every route fits the segment array `resolve` splits a path into.
const _: () = {
    let tables = [STOCK, PAYMENT, ORDER];
    let mut t = 0;
    while t < tables.len() {
        let mut r = 0;
        while r < tables[t].len() {
            assert!(tables[t][r].segs.len() <= MAX_SEGS);
            r += 1;
        }
        t += 1;
    }
};

/// Matches `path` (e.g. `/stock/add/42/5`) against the service's routes: segment by
/// segment, literals compared as strings. Every public request (at the coordinator and
/// again at the replica) goes through here, so the path is split into an array on the
/// stack, not a vector.
pub fn resolve(service: Service, method: Method, path: &str) -> Result<Target, RouteError> {
    let mut split = path.strip_prefix('/').unwrap_or(path).split('/');
    if split.next() != Some(service.prefix()) {
        return Err(RouteError::NotFound);
    }
    let mut segs = [""; MAX_SEGS];
    let mut n = 0;
    for p in split {
        if n == MAX_SEGS {
            // Longer than every route.
            return Err(RouteError::NotFound);
        }
        segs[n] = p;
        n += 1;
    }
    let parts = &segs[..n];
    let mut wrong_method = false;
    for route in routes(service) {
        if route.segs.len() != parts.len() {
            continue;
        }
        let shape_matches = route.segs.iter().zip(parts).all(|(seg, p)| match seg {
            Lit(l) => l == p,
            Id | Int => !p.is_empty(),
        });
        if !shape_matches {
            continue;
        }
        if route.method != method {
            wrong_method = true;
            continue;
        }
        let mut args = Vec::with_capacity(route.segs.len());
        for (seg, p) in route.segs.iter().zip(parts) {
            match seg {
                Lit(_) => {}
                // Ids never hold control characters: a document's side records are keyed by
                // its id and one (crate::side).
                Id => args.push(Arg::Id(
                    percent_decode(p)
                        .filter(|id| !id.chars().any(char::is_control))
                        .ok_or_else(|| RouteError::Bad(format!("malformed id: '{p}'")))?,
                )),
                Int => args.push(Arg::Int(parse_int(p).map_err(RouteError::Bad)?)),
            }
        }
        let target = Target { route, args };
        if let Batch(i) = route.key {
            let n = target.int(i);
            if n > MAX_BATCH {
                return Err(RouteError::Bad(format!("batch too large: {n} (at most {MAX_BATCH})")));
            }
        }
        return Ok(target);
    }
    Err(if wrong_method { RouteError::MethodNotAllowed } else { RouteError::NotFound })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let cases = [
            ("0", Ok(0)),
            ("42", Ok(42)),
            ("9223372036854775807", Ok(i64::MAX)),
            ("9223372036854775808", Err(())),
            ("-1", Err(())),
            ("+1", Err(())),
            ("1.5", Err(())),
            ("abc", Err(())),
            ("", Err(())),
            (" 1", Err(())),
        ];
        for (s, want) in cases {
            assert_eq!(parse_int(s).map_err(|_| ()), want, "{s:?}");
        }
    }

    #[test]
    fn keys_of_public_routes() {
        let t = resolve(Service::Stock, Method::Post, "/stock/add/item-1/5").unwrap();
        assert_eq!((t.route.name, t.key(), t.int(1)), ("credit", Some("item-1"), 5));
        let t = resolve(Service::Order, Method::Post, "/orders/addItem/o1/i2/3").unwrap();
        assert_eq!((t.route.name, t.key(), t.id(1), t.int(2)), ("add_item", Some("o1"), "i2", 3));
        let t = resolve(Service::Payment, Method::Post, "/payment/create_user").unwrap();
        assert_eq!((t.route.name, t.route.key), ("create", KeySource::Mint));
        let t = resolve(Service::Order, Method::Post, "/orders/batch_init/10/5/5/1").unwrap();
        assert_eq!(t.route.key, KeySource::Batch(0));
        assert_eq!(t.int(0), 10);
    }

    #[test]
    fn ids_with_control_characters_are_refused() {
        for bad in ["a%00b", "a%0Ab", "%7F", "x%1F"] {
            let path = format!("/stock/find/{bad}");
            assert!(matches!(resolve(Service::Stock, Method::Get, &path), Err(RouteError::Bad(_))), "{path}");
        }
        assert!(resolve(Service::Stock, Method::Get, "/stock/find/a%20b").is_ok());
    }

    #[test]
    fn ids_are_percent_decoded() {
        let t = resolve(Service::Stock, Method::Get, "/stock/find/a%20b%23c").unwrap();
        assert_eq!(t.key(), Some("a b#c"));
        assert_eq!(percent_decode(&percent_encode("o1#2 x/y")).unwrap(), "o1#2 x/y");
        assert!(matches!(resolve(Service::Stock, Method::Get, "/stock/find/%zz"), Err(RouteError::Bad(_))));
    }

    #[test]
    fn rejections() {
        use RouteError::*;
        let cases: &[(Service, Method, &str, RouteError)] = &[
            (Service::Stock, Method::Post, "/stock/add/x/-3", Bad("not a non-negative integer: '-3'".into())),
            (Service::Stock, Method::Post, "/stock/add/x/1e3", Bad("not a non-negative integer: '1e3'".into())),
            (
                Service::Stock,
                Method::Post,
                "/stock/add/x/99999999999999999999",
                Bad("number out of range: '99999999999999999999'".into()),
            ),
            (Service::Stock, Method::Post, "/stock/nothing/x", NotFound),
            (Service::Stock, Method::Post, "/stock/add/x", NotFound),
            (Service::Stock, Method::Post, "/stock/add//1", NotFound),
            (Service::Stock, Method::Post, "/stock/add/x/1/", NotFound),
            (Service::Stock, Method::Post, "/stock/tx/subtract/i/2/o/extra", NotFound),
            (Service::Stock, Method::Post, "/stock/a/b/c/d/e/f/g/h", NotFound),
            (Service::Stock, Method::Get, "/stock", NotFound),
            (Service::Stock, Method::Get, "/stock/", NotFound),
            (Service::Stock, Method::Post, "stock/find/x", MethodNotAllowed),
            (Service::Stock, Method::Get, "//stock/find/x", NotFound),
            (Service::Stock, Method::Post, "/payment/pay/x/1", NotFound),
            (Service::Stock, Method::Post, "/stock/find/x", MethodNotAllowed),
            (
                Service::Payment,
                Method::Post,
                "/payment/batch_init/1000001/1",
                Bad("batch too large: 1000001 (at most 1000000)".into()),
            ),
        ];
        for (s, m, p, want) in cases {
            assert_eq!(resolve(*s, *m, p).unwrap_err(), *want, "{p}");
        }
    }

    /// Every route's command renders back to a path that resolves to the same route and
    /// command: the table, the commands and their paths agree.
    #[test]
    fn every_command_renders_its_own_path() {
        for service in [Service::Stock, Service::Payment, Service::Order] {
            for route in routes(service) {
                let args: Vec<Arg> = route
                    .segs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, seg)| match seg {
                        Lit(_) => None,
                        Id => Some(Arg::Id(format!("id {i}/#"))),
                        Int => Some(Arg::Int(i as i64 + 7)),
                    })
                    .collect();
                let command = (route.command)(&args);
                assert_eq!(command.route_name(), route.name, "{service:?} {}", route.name);
                let (method, path) = command.path(service).expect("renders");
                assert_eq!(method, route.method);
                let back = resolve(service, method, &path).expect("resolves");
                assert_eq!(command.key(), back.key(), "{path}: the command's key is the route's");
                assert_eq!((back.route.name, back.command()), (route.name, command), "{path}");
            }
        }
        assert_eq!(
            Command::Ledger(LedgerCommand::TxDebit { key: "u1".into(), amount: 5, tx: "o#1".into() })
                .path(Service::Payment),
            Some((Post, "/payment/tx/pay/u1/5/o%231".to_string()))
        );
        assert_eq!(Command::Order(OrderCommand::Checkout { order: "o".into() }).path(Service::Stock), None);
    }

    /// The coordinators guard `/{service}/tx/` with the secret: every internal route is there,
    /// and only internal routes are.
    #[test]
    fn internal_routes_are_the_ones_under_tx() {
        for service in [Service::Stock, Service::Payment, Service::Order] {
            for route in routes(service) {
                let under_tx = matches!(route.segs.first(), Some(Lit("tx")));
                assert_eq!(route.internal, under_tx, "{service:?} {}", route.name);
            }
        }
    }

    #[test]
    fn checkouts_and_batch_inits_get_the_long_timeout() {
        for service in [Service::Stock, Service::Payment, Service::Order] {
            for route in routes(service) {
                assert_eq!(route.long, ["checkout", "batch_init"].contains(&route.name), "{}", route.name);
            }
        }
    }

    #[test]
    fn internal_routes_are_marked() {
        let t = resolve(Service::Stock, Method::Post, "/stock/tx/subtract/i/2/o%231").unwrap();
        assert!(t.route.internal);
        assert_eq!(t.id(2), "o#1");
        for s in Service::ALL {
            for r in routes(s) {
                assert_eq!(r.internal, r.name.starts_with("tx_"), "{}", r.name);
            }
        }
    }
}

/// The id a coordinator mints for a create call: a uuid in the v4 format whose 122 free
/// bits come from `blake3(service, request_id)`. A retried create carries the same request
/// id, so it gets the same id, lands on the same document and is answered from that
/// document's dedup record instead of creating a second object. Request ids are unique
/// (nginx's `$request_id` is 128 random bits), so minted ids are as unique as random uuids.
pub fn mint_key(service: Service, request_id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(service.name().as_bytes());
    h.update(&[0]);
    h.update(request_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize().as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

#[cfg(test)]
mod mint_tests {
    use super::*;

    #[test]
    fn minted_ids_are_v4_uuids_stable_per_request() {
        let a = mint_key(Service::Stock, "req-1");
        assert_eq!(a, mint_key(Service::Stock, "req-1"));
        assert_ne!(a, mint_key(Service::Stock, "req-2"));
        assert_ne!(a, mint_key(Service::Payment, "req-1"));
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
    }
}
