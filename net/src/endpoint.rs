//! Base URLs parsed once per peer.
//!
//! reqwest sends to a [`Url`]. Formatting `http://{addr}{path}` and letting reqwest parse it
//! for every request re-parses the whole URL, host included: the `url` crate runs even an IP
//! address through IDNA processing (`idna::uts46::to_ascii`) before it recognises it, which
//! showed in the coordinators' profile. An [`Endpoint`] parses `http://{addr}` once; the URL of
//! one request is a clone with its path and query set, which parses only those.

use reqwest::Url;

/// A peer's base URL (`http://host:port/`), parsed once.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The parsed base, or why `addr` is not a usable address (reported by every request, as a
    /// request to a malformed URL was before endpoints were parsed once).
    base: Result<Url, String>,
}

impl Endpoint {
    /// The endpoint of the node at `addr` (`host:port`).
    pub fn new(addr: &str) -> Endpoint {
        let base = match Url::parse(&format!("http://{addr}")) {
            Ok(url) if url.path() == "/" && url.query().is_none() && url.fragment().is_none() && url.has_host() => {
                Ok(url)
            }
            Ok(_) => Err(format!("address {addr} is not host:port")),
            Err(e) => Err(format!("address {addr}: {e}")),
        };
        Endpoint { base }
    }

    /// The URL of `path_and_query` (beginning with `/`, as an HTTP request target does) at this
    /// endpoint: the same URL as parsing `http://{addr}{path_and_query}` would give.
    pub fn url(&self, path_and_query: &str) -> Result<Url, String> {
        let mut url = self.base.clone()?;
        let (target, fragment) = match path_and_query.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (path_and_query, None),
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        url.set_path(path);
        if query.is_some() {
            url.set_query(query);
        }
        if fragment.is_some() {
            url.set_fragment(fragment);
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_url_as_parsing_the_whole_string() {
        let targets = [
            "/",
            "/stock/find/42",
            "/stock/find/a%20b%23c",
            "/stock/tx/subtract/i/2/o%231",
            "/orders/addItem/o1/i2/3",
            "/stock/find/x?",
            "/stock/find/x?a=1&b=%20c",
            "/internal/digest?round=7&buckets=true",
            "/stock/find/x#frag",
            "/stock/find/x?q#frag",
            "/stock/find/é",
            "/stock/find/a b",
            "/stock/find/%zz",
            "/stock/find/{x}|^`",
            "/stock/find/a\\b",
            "/stock/./find/../find/x",
            "/stock//find",
            "/payment/create_user",
        ];
        for addr in ["127.0.0.1:19300", "localhost:8000", "stock-replica-0:8000", "[::1]:9000"] {
            let e = Endpoint::new(addr);
            for t in targets {
                let want = Url::parse(&format!("http://{addr}{t}")).unwrap();
                assert_eq!(e.url(t).unwrap().as_str(), want.as_str(), "{addr} {t}");
            }
        }
    }

    #[test]
    fn malformed_addresses_fail_every_request() {
        for addr in ["127.0.0.1:99999", "host:1/prefix", "host:1?q", "", "a b:1"] {
            let e = Endpoint::new(addr);
            let err = e.url("/health").unwrap_err();
            assert!(err.contains(addr), "{addr}: {err}");
        }
    }
}
