//! Typed settings of the two process roles, layered by the `config` crate: defaults, then
//! an optional file named by `APP_CONFIG_FILE`, then `APP__*` environment variables
//! (`APP__SERVICE=stock`, `APP__REPLICA__ID=1`, ...). Validated at start.

use crate::topology::{Service, Topology};
use config::{Config, Environment, File};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::PathBuf;

/// Settings of a replica process.
#[derive(Clone, Debug, Deserialize)]
pub struct ReplicaSettings {
    /// Which service this replica serves.
    pub service: Service,
    /// This replica's id: its index in the topology's replica list.
    pub id: u32,
    /// Path of the topology file.
    pub topology: PathBuf,
    /// Address to bind; defaults to this replica's topology address (containers bind
    /// `0.0.0.0:port` while peers reach them by name).
    pub listen: Option<String>,
    /// Folder of this replica's data (the embedded engine's file lives here).
    pub data_dir: PathBuf,
    /// Storage engine: `redb` (embedded, durable; the default) or `memory` (tests).
    pub engine: String,
    /// The cluster secret every internal request carries.
    pub secret: String,
    /// HTTP worker threads (one per core on the small machines this targets).
    pub workers: usize,
    /// Whether this is the cluster's very first start: a replica without membership state
    /// then starts from the initial view and may vote at once. Otherwise a replica without
    /// state (an empty restart) must learn the view from the others before it votes. The
    /// launcher sets it only for a replica whose data folder did not exist.
    pub bootstrap: bool,
    /// Read lease in milliseconds: a primary serves reads only while it heard from a majority
    /// of the replicas this recently. Must stay well under the time an unresponsive replica
    /// takes to be evicted (a 2 s fan-out timeout plus a re-probe).
    pub lease_ms: u64,
}

/// Settings of a coordinator process.
#[derive(Clone, Debug, Deserialize)]
pub struct CoordinatorSettings {
    /// Which service this coordinator routes for.
    pub service: Service,
    /// This coordinator's id: its index in the topology's coordinator list.
    pub id: u32,
    /// Path of the topology file.
    pub topology: PathBuf,
    /// Address to bind; defaults to this coordinator's topology address.
    pub listen: Option<String>,
    /// The cluster secret.
    pub secret: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Longest wait for a replica's answer to an ordinary request, in milliseconds.
    pub request_timeout_ms: u64,
    /// Longest wait for a checkout or batch_init, in milliseconds: a checkout waits for its
    /// saga, which retries its steps while another service is unavailable.
    pub long_timeout_ms: u64,
    /// How often the prober (run by the lowest-id live coordinator) probes evicted replicas
    /// and re-joins those that answer, in milliseconds.
    pub probe_interval_ms: u64,
}

/// A settings error, reported at start.
#[derive(Debug, thiserror::Error)]
#[error("settings: {0}")]
pub struct SettingsError(pub String);

fn load<T: DeserializeOwned>(defaults: &[(&str, &str)]) -> Result<T, SettingsError> {
    let e = |e: config::ConfigError| SettingsError(e.to_string());
    let mut b = Config::builder();
    for (k, v) in defaults {
        b = b.set_default(*k, *v).map_err(e)?;
    }
    if let Ok(file) = std::env::var("APP_CONFIG_FILE") {
        b = b.add_source(File::with_name(&file));
    }
    b = b.add_source(Environment::with_prefix("APP").prefix_separator("__").separator("__"));
    b.build().map_err(e)?.try_deserialize().map_err(e)
}

fn check_common(topology: &std::path::Path, secret: &str, workers: usize) -> Result<Topology, SettingsError> {
    if secret.is_empty() {
        return Err(SettingsError("the cluster secret (APP__SECRET) is empty".into()));
    }
    if workers == 0 {
        return Err(SettingsError("workers must be at least 1".into()));
    }
    Topology::load(topology).map_err(|e| SettingsError(e.to_string()))
}

/// HTTP worker threads of a node unless `APP__WORKERS` says otherwise: one. A cluster runs
/// 15 node processes on the 2-core machines it targets, so a second worker per process adds
/// no parallelism, only context switches and cross-thread wake-ups: measured on the 3x3x2
/// topology, one worker gave 20-45 % more checkouts/s for 10-25 % less CPU per checkout
/// (docs/performance.md). A deployment with a core or more per process may raise it.
const DEFAULT_WORKERS: &str = "1";

impl ReplicaSettings {
    /// Loads and validates; returns the settings and the topology they name.
    pub fn load() -> Result<(ReplicaSettings, Topology), SettingsError> {
        let s: ReplicaSettings = load(&[
            ("topology", "env/topology.toml"),
            ("data_dir", "target/cluster/data"),
            ("engine", "redb"),
            ("secret", ""),
            ("workers", DEFAULT_WORKERS),
            ("bootstrap", "false"),
            ("lease_ms", "1000"),
        ])?;
        let t = check_common(&s.topology, &s.secret, s.workers)?;
        if s.id as usize >= t.nodes(s.service).replicas.len() {
            return Err(SettingsError(format!("{} has no replica {}", s.service, s.id)));
        }
        if !["redb", "memory"].contains(&s.engine.as_str()) {
            return Err(SettingsError(format!("unknown engine '{}' (redb or memory)", s.engine)));
        }
        Ok((s, t))
    }

    /// The address to bind.
    pub fn listen_addr(&self, t: &Topology) -> String {
        self.listen.clone().unwrap_or_else(|| t.nodes(self.service).replicas[self.id as usize].clone())
    }
}

impl CoordinatorSettings {
    /// Loads and validates; returns the settings and the topology they name.
    pub fn load() -> Result<(CoordinatorSettings, Topology), SettingsError> {
        let s: CoordinatorSettings = load(&[
            ("topology", "env/topology.toml"),
            ("secret", ""),
            ("workers", DEFAULT_WORKERS),
            // Far above a healthy replica's answer time (well under 10 ms), short enough that
            // a hung replica does not hold a client for long.
            ("request_timeout_ms", "5000"),
            // A checkout retries saga steps while a dependency is briefly unavailable.
            ("long_timeout_ms", "60000"),
            // A killed replica is back within a few seconds of its restart; probing once a
            // second costs one tiny request per evicted replica.
            ("probe_interval_ms", "1000"),
        ])?;
        let t = check_common(&s.topology, &s.secret, s.workers)?;
        if s.id as usize >= t.nodes(s.service).coordinators.len() {
            return Err(SettingsError(format!("{} has no coordinator {}", s.service, s.id)));
        }
        Ok((s, t))
    }

    /// The address to bind.
    pub fn listen_addr(&self, t: &Topology) -> String {
        self.listen.clone().unwrap_or_else(|| t.nodes(self.service).coordinators[self.id as usize].clone())
    }
}
