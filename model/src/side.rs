//! Side records: what a document's writes leave beside it, under keys of their own, so that a
//! hot document never grows with them.
//!
//! Two kinds live beside a document today: the record of each request id that wrote it (its
//! fingerprint and first answer, [`crate::idempotency`]) and the record of each saga
//! transaction that touched it (`ledger`). A side record:
//!
//! - is stored under `<document key> US <name>` ([`key`], US the ASCII unit separator); ids
//!   never hold control characters (the route table refuses them), so a side key names
//!   exactly one document;
//! - is placed with its document (rendezvous hashing of the document's key,
//!   [`crate::placement`]), so the document's primary holds it;
//! - is written in the same storage call as the document's new state, which every engine
//!   applies atomically, and travels in the same fan-out batch to the peers, in full copies to
//!   learners and through the same conditional puts (versions are the document's);
//! - is not counted in the bucket digests nor listed to anti-entropy: each replica drops it on
//!   its own once it expires ([`expired`], the expiry written by the primary into the record),
//!   so replicas that prune a moment apart do not look divergent;
//! - is never shown by a scan of the documents (`replica::table::Table::scan` skips them).

/// The separator between a document's key and a side record's name: the ASCII unit
/// separator (a control character, so never in an id; not NUL, which some stores refuse).
pub const SEP: char = '\u{1f}';

/// The key of side record `name` of document `doc`.
pub fn key(doc: &str, name: &str) -> String {
    let mut k = String::with_capacity(doc.len() + 1 + name.len());
    k.push_str(doc);
    k.push(SEP);
    k.push_str(name);
    k
}

/// Whether `key` is a side record's.
pub fn is_side(key: &str) -> bool {
    key.contains(SEP)
}

/// The document a key belongs to: itself for a document, its document for a side record.
pub fn doc_of(key: &str) -> &str {
    key.split(SEP).next().unwrap_or(key)
}

/// A side record's stored body: its expiry (Unix milliseconds), `:`, then its payload.
pub fn body(expires_ms: u64, payload: &str) -> String {
    format!("{expires_ms}:{payload}")
}

/// The expiry and payload of a side record's body; `None` if it is not one.
pub fn parse(body: &str) -> Option<(u64, &str)> {
    let (exp, payload) = body.split_once(':')?;
    Some((exp.parse().ok()?, payload))
}

/// Whether the side record stored under `key` with `body` has expired at `now_ms`. A body
/// that does not parse is not a side record's and never expires. A held record
/// ([`held`]) never expires by time.
pub fn expired(body: &str, now_ms: u64) -> bool {
    parse(body).is_some_and(|(exp, _)| exp < HELD && exp <= now_ms)
}

/// Where the expiries that are not times begin. An expiry from here on is a held record's
/// ([`held`]); `u64::MAX` is a record that never goes.
pub const HELD: u64 = 1 << 62;

/// The expiry of a record held until its service releases a time above `start_ms`: a saga
/// transaction's record (`ledger`, held from the later of its write and its attempt's
/// start), kept until the order service has said that every checkout attempt under way at
/// some time after it has finished (docs/design.md §6.4). Its value is `HELD + start_ms`, so
/// that the engines keep one index of expiries for both kinds.
pub fn held(start_ms: u64) -> u64 {
    HELD + start_ms.min(HELD - 1)
}

/// Whether a side record with expiry `exp` may be dropped at `now_ms`, once the records
/// held for starts before `released_ms` are released: a timed one that expired, or a held
/// one whose start is before `released_ms`.
pub fn prunable(exp: u64, now_ms: u64, released_ms: u64) -> bool {
    if exp < HELD {
        exp <= now_ms
    } else {
        exp != u64::MAX && exp - HELD < released_ms
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_keys_name_their_document() {
        let k = key("item-7", "r:abc");
        assert!(is_side(&k));
        assert_eq!(doc_of(&k), "item-7");
        assert!(!is_side("item-7"));
        assert_eq!(doc_of("item-7"), "item-7");
        // Sorted right after their document, before any other document.
        let mut keys = ["item-8".to_string(), k.clone(), "item-7".to_string(), key("item-7", "t:o#1")];
        keys.sort();
        assert_eq!(keys[0], "item-7");
        assert!(keys[1..3].iter().all(|k| doc_of(k) == "item-7"));
    }

    #[test]
    fn a_side_body_carries_its_expiry() {
        let b = body(1_000, "{\"a\":1}");
        assert_eq!(parse(&b), Some((1_000, "{\"a\":1}")));
        assert!(!expired(&b, 999));
        assert!(expired(&b, 1_000));
        assert!(!expired("{\"doc\":1}", u64::MAX), "a document body never expires");
        assert_eq!(parse("x:1"), None);
    }

    /// A held record goes only once its start is released, never by time; a timed one by
    /// time only; a record that never expires, never.
    #[test]
    fn held_records_go_when_released_and_timed_ones_when_expired() {
        let h = held(5_000);
        assert!(!expired(&body(h, "{}"), u64::MAX - 1), "a held record never expires by time");
        assert!(!prunable(h, HELD - 1, 5_000), "released before its start only");
        assert!(prunable(h, 0, 5_001));
        assert!(!prunable(1_000, 999, u64::MAX));
        assert!(prunable(1_000, 1_000, 0));
        assert!(!prunable(u64::MAX, HELD - 1, u64::MAX));
        assert!(held(u64::MAX) < u64::MAX && held(u64::MAX) <= i64::MAX as u64, "fits the engines' signed fields");
    }
}
