//! A stored document as every replica and the coordinators' anti-entropy carry it: key,
//! version, body and their hash.

use crate::digest::{record_hash, Hash};
use crate::version::Version;
use serde::{Deserialize, Serialize};

/// One stored document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The document's key (item, user or order id).
    pub key: String,
    /// Its version.
    pub version: Version,
    /// blake3 of (key, version, body); see [`record_hash`].
    pub hash: Hash,
    /// The document, serialized as JSON.
    pub body: String,
}

impl Record {
    /// A record with its hash computed.
    pub fn new(key: String, version: Version, body: String) -> Record {
        let hash = record_hash(&key, version, &body);
        Record { key, version, hash, body }
    }

    /// Whether the stored hash matches the content (false means corruption).
    pub fn hash_ok(&self) -> bool {
        self.hash == record_hash(&self.key, self.version, &self.body)
    }
}
