//! The nemesis: randomized faults against a running cluster, a recorded history of every
//! operation, and checkers that prove the history possible under the system's promises.

pub mod check;
pub mod history;
