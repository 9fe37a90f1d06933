//! Document versions: `(epoch, seq)`, ordered lexicographically.
//!
//! The epoch is the view's epoch at the write; seq counts writes to one key. A write
//! made under a newer view always wins over one made under an older view.

use serde::{Deserialize, Serialize};

/// The version of one stored document. `Version::ZERO` stands for "absent".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Epoch of the view the primary held when it made the write.
    pub epoch: u64,
    /// Per-key write counter.
    pub seq: u64,
}

impl Version {
    /// The version of a key that has never been written.
    pub const ZERO: Version = Version { epoch: 0, seq: 0 };

    /// The version a primary in `epoch` gives to the write that follows `self`.
    pub fn next(self, epoch: u64) -> Version {
        Version { epoch: epoch.max(self.epoch), seq: self.seq + 1 }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_always_higher() {
        let cases = [
            (Version::ZERO, 1, Version { epoch: 1, seq: 1 }),
            (Version { epoch: 1, seq: 7 }, 1, Version { epoch: 1, seq: 8 }),
            (Version { epoch: 1, seq: 7 }, 3, Version { epoch: 3, seq: 8 }),
            // A stale epoch never lowers the version.
            (Version { epoch: 4, seq: 2 }, 3, Version { epoch: 4, seq: 3 }),
        ];
        for (old, epoch, want) in cases {
            let got = old.next(epoch);
            assert_eq!(got, want);
            assert!(got > old);
        }
    }

    #[test]
    fn epoch_orders_before_seq() {
        assert!(Version { epoch: 2, seq: 0 } > Version { epoch: 1, seq: 99 });
    }
}
