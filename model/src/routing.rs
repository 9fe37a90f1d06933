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
    /// Name the replica dispatches on.
    pub name: &'static str,
    /// Its method.
    pub method: Method,
    /// Segments after the service prefix.
    pub segs: &'static [Seg],
    /// Where the routing key comes from.
    pub key: KeySource,
    /// Internal routes (saga steps) require the cluster secret even at the coordinator.
    pub internal: bool,
}

use KeySource::*;
use Method::*;
use Seg::*;

const fn r(name: &'static str, method: Method, segs: &'static [Seg], key: KeySource) -> Route {
    Route { name, method, segs, key, internal: false }
}

const fn internal(name: &'static str, segs: &'static [Seg], key: KeySource) -> Route {
    Route { name, method: Post, segs, key, internal: true }
}

static STOCK: &[Route] = &[
    r("create", Post, &[Lit("item"), Lit("create"), Int], Mint),
    r("find", Get, &[Lit("find"), Id], Arg(0)),
    r("credit", Post, &[Lit("add"), Id, Int], Arg(0)),
    r("debit", Post, &[Lit("subtract"), Id, Int], Arg(0)),
    r("batch_init", Post, &[Lit("batch_init"), Int, Int, Int], Batch(0)),
    internal("tx_debit", &[Lit("tx"), Lit("subtract"), Id, Int, Id], Arg(0)),
    internal("tx_compensate", &[Lit("tx"), Lit("compensate"), Id, Id], Arg(0)),
    internal("tx_forget", &[Lit("tx"), Lit("forget"), Id, Id], Arg(0)),
];

static PAYMENT: &[Route] = &[
    r("create", Post, &[Lit("create_user")], Mint),
    r("find", Get, &[Lit("find_user"), Id], Arg(0)),
    r("credit", Post, &[Lit("add_funds"), Id, Int], Arg(0)),
    r("debit", Post, &[Lit("pay"), Id, Int], Arg(0)),
    r("batch_init", Post, &[Lit("batch_init"), Int, Int], Batch(0)),
    internal("tx_debit", &[Lit("tx"), Lit("pay"), Id, Int, Id], Arg(0)),
    internal("tx_compensate", &[Lit("tx"), Lit("compensate"), Id, Id], Arg(0)),
    internal("tx_forget", &[Lit("tx"), Lit("forget"), Id, Id], Arg(0)),
];

static ORDER: &[Route] = &[
    r("create", Post, &[Lit("create"), Id], Mint),
    r("find", Get, &[Lit("find"), Id], Arg(0)),
    r("add_item", Post, &[Lit("addItem"), Id, Id, Int], Arg(0)),
    r("checkout", Post, &[Lit("checkout"), Id], Arg(0)),
    r("batch_init", Post, &[Lit("batch_init"), Int, Int, Int, Int], Batch(0)),
];

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
