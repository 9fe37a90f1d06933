//! The local launcher: runs a topology as processes on this machine, for `cluster up` (the
//! main way to run the webshop) and for the whole-cluster tests.
//!
//! - [`launcher`]: [`Cluster::start`] starts nginx and every node, waits until they answer,
//!   restarts those that die, and kills them all when dropped; tests kill, pause and resume
//!   single processes through it.
//! - [`roles`]: what a node process runs (`<exe> replica|coordinator`), shared by the
//!   `cluster` binary and the test binary `webshop-node`.
//! - [`cli`]: the `cluster` command line.
//! - [`admin`]: `cluster admin`, an operator's actions on a running cluster.
//! - [`manifest`]: `manifest.json`, the pid of every process, for tools and tests.
//! - [`nginx`], [`ports`], [`http`]: the gateway's prefix and command line, free ports, and a
//!   minimal HTTP client for readiness checks.

pub mod admin;
pub mod cli;
pub mod http;
pub mod launcher;
pub mod manifest;
pub mod nginx;
pub mod ports;
pub mod roles;

pub use launcher::{Cluster, ClusterSpec, Output};
pub use manifest::{Manifest, ProcId, Role};
