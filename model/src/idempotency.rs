//! Idempotency keys: what a request id may look like, what it names, and what a repeat of it
//! gets. Pure rules, no I/O; the replicated layer (`replica::table`) stores what they decide.
//!
//! A request id (the client's `X-Request-Id`, or the gateway's own when the client sends
//! none) names one request, as the idempotency keys of payment APIs do:
//!
//! - it is 1 to [`MAX_KEY_LEN`] characters of `A-Z a-z 0-9 - _ . :` ([`validate`]); any
//!   other is refused with a 400 before anything is routed;
//! - it is remembered with a [`fingerprint`] of the request it came with (service, method and
//!   path; the path carries the service's prefix and every argument, and the public API has
//!   no request bodies);
//! - a repeat of the same request gets the first answer and changes nothing
//!   ([`Seen::Repeat`]); the same id with another request is refused with
//!   [`STATUS_KEY_REUSED`] and changes nothing ([`Seen::Reused`]).

use crate::reply::Reply;
use serde::{Deserialize, Serialize};

/// Longest request id accepted.
pub const MAX_KEY_LEN: usize = 128;

/// The status of a request whose id was first used with another request: 422, as the IETF
/// draft on the `Idempotency-Key` header answers a key reused with another payload.
pub const STATUS_KEY_REUSED: u16 = 422;

/// Whether `id` may be used as a request id; the 400's text when not.
pub fn validate(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty() || id.len() > MAX_KEY_LEN || !id.chars().all(ok_char) {
        return Err(format!(
            "invalid X-Request-Id: must be 1 to {MAX_KEY_LEN} characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"
        ));
    }
    Ok(())
}

/// What a request id is remembered with: blake3 of the request's method and path (which
/// starts with its service's prefix), as 32 hex digits.
pub fn fingerprint(method: &str, path: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// A request id together with the fingerprint of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    /// The request id.
    pub id: String,
    /// [`fingerprint`] of the request.
    pub fingerprint: String,
}

impl RequestKey {
    /// The key of request `method path` sent with id `id`.
    pub fn new(id: &str, method: &str, path: &str) -> RequestKey {
        RequestKey { id: id.to_string(), fingerprint: fingerprint(method, path) }
    }
}

/// What is stored of a request that was applied: its id, its fingerprint, its answer and
/// when it was answered (Unix milliseconds, the primary's clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// The request id.
    pub id: String,
    /// The request's fingerprint.
    #[serde(rename = "fp")]
    pub fingerprint: String,
    /// The first answer.
    pub reply: Reply,
    /// When it was written, Unix milliseconds.
    #[serde(default)]
    pub at: u64,
}

/// What to do with a request, given what is remembered under its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: decide and apply it.
    New,
    /// The same request again: answer the first answer, apply nothing.
    Repeat(Reply),
    /// The id was first used with another request: refuse, apply nothing.
    Reused(Reply),
}

/// Decides what a request with `key` gets, given the stored record of its id (if any).
pub fn check(key: &RequestKey, stored: Option<&SeenRequest>) -> Seen {
    match stored {
        None => Seen::New,
        Some(s) if s.fingerprint == key.fingerprint => Seen::Repeat(s.reply.clone()),
        Some(_) => Seen::Reused(reused_reply(&key.id)),
    }
}

/// The refusal of an id first used with another request.
pub fn reused_reply(id: &str) -> Reply {
    Reply::text(STATUS_KEY_REUSED, format!("X-Request-Id '{id}' was already used for a different request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_a_length_limit_and_a_character_set() {
        let long_ok = "a".repeat(MAX_KEY_LEN);
        let too_long = "a".repeat(MAX_KEY_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("k1", true),
            ("0123456789abcdef0123456789abcdef", true), // nginx's $request_id
            ("3f1c2b9e-8a7d-4c1e-9b2a-5d6e7f8a9b0c", true), // a uuid
            ("order_1.retry:2", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            ("has space", false),
            ("slash/", false),
            ("quote\"", false),
            ("naïve", false),
            ("tab\t", false),
            ("percent%20", false),
        ];
        for (id, ok) in cases {
            assert_eq!(validate(id).is_ok(), *ok, "{id:?}");
        }
        assert!(validate("a b").unwrap_err().contains("invalid X-Request-Id"));
    }

    #[test]
    fn the_fingerprint_tells_method_service_and_arguments_apart() {
        let base = fingerprint("POST", "/payment/add_funds/u/10");
        assert_eq!(base, fingerprint("POST", "/payment/add_funds/u/10"));
        assert_eq!(base.len(), 32);
        for (m, p) in [
            ("POST", "/payment/pay/u/10"),
            ("POST", "/payment/add_funds/u/11"),
            ("POST", "/payment/add_funds/v/10"),
            ("GET", "/payment/add_funds/u/10"),
            ("POST", "/stock/add_funds/u/10"),
        ] {
            assert_ne!(base, fingerprint(m, p), "{m} {p}");
        }
    }

    #[test]
    fn a_repeat_gets_the_first_answer_and_another_request_is_refused() {
        let first = RequestKey::new("k1", "POST", "/payment/add_funds/u/10");
        let stored = SeenRequest {
            id: "k1".into(),
            fingerprint: first.fingerprint.clone(),
            reply: Reply::ok_text("done"),
            at: 1,
        };
        assert_eq!(check(&first, None), Seen::New);
        assert_eq!(check(&first, Some(&stored)), Seen::Repeat(Reply::ok_text("done")));
        let other = RequestKey::new("k1", "POST", "/payment/pay/u/5");
        match check(&other, Some(&stored)) {
            Seen::Reused(r) => {
                assert_eq!(r.status, STATUS_KEY_REUSED);
                assert!(r.body.contains("k1"), "{}", r.body);
            }
            s => panic!("{s:?}"),
        }
    }
}
