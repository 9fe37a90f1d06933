//! Typed settings of the two process roles, layered by the `config` crate: defaults, then
//! an optional file named by `APP_CONFIG_FILE`, then `APP__*` environment variables
//! (`APP__SERVICE=stock`, `APP__REPLICA__ID=1`, ...). Validated at start.

use config::{Config, Environment, File};
use model::topology::{Service, Topology};
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
    /// Folder of this replica's data (the embedded engines' files live here).
    pub data_dir: PathBuf,
    /// Storage engine: `log` (embedded, durable; the default), `memory` (tests) or `mongo` (a
    /// MongoDB server, see `mongo_uri`).
    pub engine: String,
    /// The MongoDB server of engine `mongo`, e.g. `mongodb://stock-mongo-0:27017/`; empty
    /// (the default) for the other engines, required for `mongo`. The replica keeps its data
    /// in its own database there, `webshop_<service>_<id>` (`store::mongo`).
    pub mongo_uri: String,
    /// The cluster secret every internal request carries.
    pub secret: String,
    /// HTTP worker threads (one per core on the small machines this targets).
    pub workers: usize,
    /// Whether this is the cluster's very first start: a replica without membership state
    /// then starts from the initial view and may vote at once. Otherwise a replica without
    /// state (an empty restart) must learn the view from the others before it votes. The
    /// launcher sets it only for a replica whose data folder did not exist.
    pub bootstrap: bool,
    /// Read lease in milliseconds: a primary serves reads only while a majority of the
    /// replicas granted it one this recently (`decide::lease`). Must stay under the fan-out
    /// timeout, so that a replica paused past it cannot still hold a lease when it is evicted.
    pub lease_ms: u64,
    /// How long a primary waits for a peer to acknowledge a fan-out before it suspects the
    /// peer, in milliseconds.
    pub fanout_timeout_ms: u64,
    /// How long a primary waits for a coordinator to settle a suspicion (re-probe, and an
    /// eviction by Paxos), in milliseconds.
    pub suspect_timeout_ms: u64,
    /// How long the record of a request id is kept beside the document it wrote, in
    /// milliseconds: a repeat within it gets the first answer (`replica::node::DEFAULT_REQUEST_TTL`
    /// says why 180 s).
    pub request_ttl_ms: u64,
    /// How often expired side records are dropped, in milliseconds.
    pub prune_interval_ms: u64,
    /// How often the replica checks that its store has not stopped for good, in milliseconds
    /// (docs/design.md §7.4).
    pub store_watch_ms: u64,
    /// The first pause between rounds of membership queries after an empty restart, in
    /// milliseconds; it doubles up to 20 times this.
    pub recovery_pause_ms: u64,
    /// Order replicas: how often checkouts whose driver stopped on a failure are resumed, in
    /// milliseconds.
    pub resume_retry_ms: u64,
    /// Payment and stock replicas: how often they ask the order replicas for the watermark
    /// below which their transaction records may go (docs/design.md §6.4), in milliseconds.
    pub horizon_interval_ms: u64,
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
    /// How long a re-probe of a replica (`/health`) may take before the replica counts as
    /// gone, in milliseconds.
    pub probe_timeout_ms: u64,
    /// How long a replica may take to answer a membership (Paxos) message, in milliseconds.
    /// A replica accepts a view that removes a member only after the read leases it granted
    /// that member ran out, so this must exceed the replicas' `lease_ms` by a good margin.
    pub paxos_timeout_ms: u64,
    /// How often the lowest-id live coordinator runs an anti-entropy round, in milliseconds.
    pub anti_entropy_interval_ms: u64,
    /// Most divergent buckets one anti-entropy round lists (of 256); the next round goes on
    /// with the next ones.
    pub anti_entropy_max_buckets: usize,
    /// Most documents one anti-entropy round repairs.
    pub anti_entropy_max_repairs: usize,
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
    if let Err(why) = crate::client::valid_secret(secret) {
        return Err(SettingsError(format!("{why} (APP__SECRET)")));
    }
    if workers == 0 {
        return Err(SettingsError("workers must be at least 1".into()));
    }
    Topology::load(topology).map_err(|e| SettingsError(e.to_string()))
}

/// HTTP worker threads of a node unless `APP__WORKERS` says otherwise: one. A cluster runs
/// 15 node processes on the 2-core machines it targets, so a second worker per process adds
/// only context switches and cross-thread wake-ups (docs/performance.md, "An experiment: one
/// HTTP worker per process"). A deployment with a core or more per process may raise it.
const DEFAULT_WORKERS: &str = "1";

impl ReplicaSettings {
    /// Loads and validates; returns the settings and the topology they name.
    pub fn load() -> Result<(ReplicaSettings, Topology), SettingsError> {
        let s: ReplicaSettings = load(&[
            ("topology", "env/topology.toml"),
            ("data_dir", "data"),
            ("engine", "log"),
            ("mongo_uri", ""),
            ("secret", ""),
            ("workers", DEFAULT_WORKERS),
            ("bootstrap", "false"),
            ("lease_ms", "1000"),
            ("fanout_timeout_ms", "2000"),
            ("suspect_timeout_ms", "5000"),
            ("request_ttl_ms", "180000"),
            ("prune_interval_ms", "5000"),
            ("store_watch_ms", "1000"),
            ("recovery_pause_ms", "100"),
            ("resume_retry_ms", "1000"),
            ("horizon_interval_ms", "1000"),
        ])?;
        let intervals = [
            ("prune_interval_ms", s.prune_interval_ms),
            ("store_watch_ms", s.store_watch_ms),
            ("recovery_pause_ms", s.recovery_pause_ms),
            ("resume_retry_ms", s.resume_retry_ms),
            ("horizon_interval_ms", s.horizon_interval_ms),
        ];
        if let Some((name, _)) = intervals.iter().find(|(_, ms)| *ms == 0) {
            return Err(SettingsError(format!("{name} must be positive")));
        }
        if s.lease_ms == 0 || s.lease_ms >= s.fanout_timeout_ms {
            return Err(SettingsError(format!(
                "lease_ms ({}) must be positive and under fanout_timeout_ms ({})",
                s.lease_ms, s.fanout_timeout_ms
            )));
        }
        let t = check_common(&s.topology, &s.secret, s.workers)?;
        if s.id as usize >= t.nodes(s.service).replicas.len() {
            return Err(SettingsError(format!("{} has no replica {}", s.service, s.id)));
        }
        if !["log", "memory", "mongo"].contains(&s.engine.as_str()) {
            return Err(SettingsError(format!("unknown engine '{}' (log, memory or mongo)", s.engine)));
        }
        if s.engine == "mongo" && s.mongo_uri.is_empty() {
            return Err(SettingsError("engine mongo needs the server's URI (APP__MONGO_URI)".into()));
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
            // A live replica answers /health in well under a millisecond.
            ("probe_timeout_ms", "500"),
            // A vote is one fsync, but accepting an eviction waits out a lease (1.1 s).
            ("paxos_timeout_ms", "3000"),
            ("anti_entropy_interval_ms", "10000"),
            // A bucket holds 1/256 of the keys: 64 buckets of a million keys are 250k
            // listed entries per replica, a few MB.
            ("anti_entropy_max_buckets", "64"),
            ("anti_entropy_max_repairs", "20000"),
        ])?;
        if s.anti_entropy_interval_ms == 0 || s.anti_entropy_max_buckets == 0 || s.probe_interval_ms == 0 {
            return Err(SettingsError(
                "anti_entropy_interval_ms, anti_entropy_max_buckets and probe_interval_ms must be positive".into(),
            ));
        }
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
