//! Decisions without I/O: what a process does next, given what it knows.
//!
//! - [`paxos`]: the view protocol's acceptor and proposer rules, and the view changes
//!   (eviction, learners, promotion);
//! - [`lease`]: the read leases a primary holds from a majority, and the grants it gives;
//! - [`ledger`]: the ledger services' rules: credit, debit, and a saga step or compensation
//!   applied at most once per transaction;
//! - [`horizon`]: the watermark below which the ledgers' transaction records may go;
//! - [`batch`]: how many queued items go out together;
//! - [`fanout`]: what a primary does when peers did not acknowledge its fan-out;
//! - [`rejoin`]: a learner's full copy and its promotion;
//! - [`antientropy`]: planning an anti-entropy round from the replicas' digests (the buckets
//!   in flux, the repairs to make);
//! - [`saga`]: the checkout saga's next step: start, finish, roll forward or compensate.
//!
//! Every function takes what it needs as arguments, time included (an `Instant` or
//! milliseconds), and returns what to do; the callers in `replica` and `coordinator` do the
//! I/O. So each rule is tested with tables of cases, without a cluster. The layering is in
//! docs/design.md §11.

pub mod antientropy;
pub mod batch;
pub mod fanout;
pub mod horizon;
pub mod lease;
pub mod ledger;
pub mod paxos;
pub mod rejoin;
pub mod saga;
