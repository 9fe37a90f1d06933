//! Per-document hashes and per-bucket digests (blake3).
//!
//! A document's hash covers its key, version and body. Keys fall into 256 buckets by the
//! first byte of `blake3(key)`; a bucket's digest is the XOR of its documents' hashes, so a
//! write updates it in O(1) (XOR out the old hash, XOR in the new one) and reading the root
//! never scans data.

use crate::version::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of anti-entropy buckets: one per value of the first hash byte.
pub const BUCKETS: usize = 256;

/// A 32-byte blake3 hash, shown and sent as hex.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Hex form, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses the 64-character hex form.
    pub fn from_hex(s: &str) -> Option<Hash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Hash(out))
    }

    fn xor(&mut self, other: &Hash) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a ^= b;
        }
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad hash hex"))
    }
}

/// The bucket a key falls in.
pub fn bucket_of(key: &str) -> u8 {
    blake3::hash(key.as_bytes()).as_bytes()[0]
}

/// The hash of one stored document: key, version and body, each length-prefixed so that
/// no two different triples hash the same input.
pub fn record_hash(key: &str, version: Version, body: &str) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.update(&version.epoch.to_le_bytes());
    h.update(&version.seq.to_le_bytes());
    h.update(&(body.len() as u64).to_le_bytes());
    h.update(body.as_bytes());
    Hash(*h.finalize().as_bytes())
}

/// The 256 bucket digests of one replica's data.
#[derive(Clone, PartialEq, Eq)]
pub struct Digests {
    buckets: Box<[Hash; BUCKETS]>,
}

impl Default for Digests {
    fn default() -> Self {
        Digests { buckets: Box::new([Hash::default(); BUCKETS]) }
    }
}

impl Digests {
    /// Accounts for a document replacing `old` (None if the key was absent) with `new`.
    pub fn replace(&mut self, key: &str, old: Option<&Hash>, new: &Hash) {
        self.replace_in(bucket_of(key), old, new);
    }

    /// [`Digests::replace`] for a key known to fall in `bucket`.
    pub fn replace_in(&mut self, bucket: u8, old: Option<&Hash>, new: &Hash) {
        let b = &mut self.buckets[bucket as usize];
        if let Some(old) = old {
            b.xor(old);
        }
        b.xor(new);
    }

    /// One bucket's digest.
    pub fn bucket(&self, i: u8) -> Hash {
        self.buckets[i as usize]
    }

    /// All bucket digests.
    pub fn buckets(&self) -> &[Hash; BUCKETS] {
        &self.buckets
    }

    /// The root: blake3 over the bucket digests in order (8 KiB of input, no data scan).
    pub fn root(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        for b in self.buckets.iter() {
            h.update(&b.0);
        }
        Hash(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = record_hash("k", Version { epoch: 1, seq: 2 }, "{}");
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex("zz"), None);
    }

    #[test]
    fn hash_depends_on_every_part() {
        let v = Version { epoch: 1, seq: 1 };
        let base = record_hash("a", v, "x");
        assert_ne!(base, record_hash("b", v, "x"));
        assert_ne!(base, record_hash("a", Version { epoch: 1, seq: 2 }, "x"));
        assert_ne!(base, record_hash("a", v, "y"));
        // Length prefixes keep the key/body boundary unambiguous.
        assert_ne!(record_hash("ab", v, "c"), record_hash("a", v, "bc"));
    }

    #[test]
    fn digests_are_order_independent_and_reversible() {
        let v1 = Version { epoch: 1, seq: 1 };
        let v2 = Version { epoch: 1, seq: 2 };
        let (ha, hb) = (record_hash("a", v1, "1"), record_hash("b", v1, "2"));
        let mut x = Digests::default();
        x.replace("a", None, &ha);
        x.replace("b", None, &hb);
        let mut y = Digests::default();
        y.replace("b", None, &hb);
        y.replace("a", None, &ha);
        assert_eq!(x.root(), y.root());

        // Replacing a document and replacing it back restores the digest.
        let ha2 = record_hash("a", v2, "3");
        let before = x.root();
        x.replace("a", Some(&ha), &ha2);
        assert_ne!(x.root(), before);
        x.replace("a", Some(&ha2), &ha);
        assert_eq!(x.root(), before);
    }
}
