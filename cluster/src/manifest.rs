//! Which processes a cluster runs and `manifest.json`, the file that tells tools and tests
//! their pids: `{"processes":[{"role","service","id","addr","pid"}]}` (docs/design.md §8.1).

use model::topology::Service;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::Path;

/// What a process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a full copy of its service's data.
    Replica,
    /// Routes its service's requests to the replicas.
    Coordinator,
    /// nginx, the gateway.
    Balancer,
    /// A replica's separate storage server: MongoDB in the container deployments, SecantusDB
    /// under `cluster up --engine mongo` (one per replica, with the replica's service and id);
    /// with the embedded engines there is none.
    Store,
}

impl Role {
    /// The role's name as the manifest writes it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Replica => "replica",
            Role::Coordinator => "coordinator",
            Role::Balancer => "balancer",
            Role::Store => "store",
        }
    }
}

/// The manifest's service name of the gateway.
pub const GATEWAY: &str = "gateway";

/// One process of a cluster: its role, its service (none for the gateway) and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcId {
    /// What it does.
    pub role: Role,
    /// Its service; `None` for the gateway.
    pub service: Option<Service>,
    /// Its index in its list in the topology (0 for the gateway).
    pub id: u32,
}

impl ProcId {
    /// Replica `id` of `service`.
    pub fn replica(service: Service, id: u32) -> ProcId {
        ProcId { role: Role::Replica, service: Some(service), id }
    }

    /// Coordinator `id` of `service`.
    pub fn coordinator(service: Service, id: u32) -> ProcId {
        ProcId { role: Role::Coordinator, service: Some(service), id }
    }

    /// The storage server of replica `id` of `service` (engine `mongo`).
    pub fn store(service: Service, id: u32) -> ProcId {
        ProcId { role: Role::Store, service: Some(service), id }
    }

    /// The gateway (nginx).
    pub fn balancer() -> ProcId {
        ProcId { role: Role::Balancer, service: None, id: 0 }
    }

    /// The service name as the manifest writes it: `order`, `payment`, `stock` or `gateway`.
    pub fn service_name(&self) -> &'static str {
        self.service.map_or(GATEWAY, Service::name)
    }

    /// A name for files and log tags: `stock-replica-1`, `gateway-balancer-0`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}-{}", self.service_name(), self.role.name(), self.id)
    }
}

impl fmt::Display for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.service {
            Some(s) => write!(f, "{s} {} {}", self.role.name(), self.id),
            None => write!(f, "nginx ({} {})", GATEWAY, self.role.name()),
        }
    }
}

/// One process in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it does.
    pub role: Role,
    /// `order`, `payment`, `stock` or `gateway`.
    pub service: String,
    /// Its index in its list in the topology (0 for the gateway).
    pub id: u32,
    /// Where it listens (`host:port`).
    pub addr: String,
    /// Its current (or, if it is down, its last) pid.
    pub pid: u32,
}

impl Entry {
    /// The entry of process `p` at `addr` with `pid`.
    pub fn new(p: ProcId, addr: &str, pid: u32) -> Entry {
        Entry { role: p.role, service: p.service_name().to_string(), id: p.id, addr: addr.to_string(), pid }
    }

    /// Its name for people and tools: `stock-replica-1`, `gateway-balancer-0` (as
    /// [`ProcId::file_stem`]).
    pub fn name(&self) -> String {
        format!("{}-{}-{}", self.service, self.role.name(), self.id)
    }

    /// The process this entry names, if its service is one the manifest knows.
    pub fn proc_id(&self) -> Option<ProcId> {
        let service = match self.service.as_str() {
            GATEWAY => None,
            s => Some(Service::parse(s)?),
        };
        Some(ProcId { role: self.role, service, id: self.id })
    }
}

/// Every process of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The processes: the stores (engine `mongo`) first, then replicas, coordinators, and the
    /// gateway.
    pub processes: Vec<Entry>,
}

impl Manifest {
    /// The entry of process `p`.
    pub fn get(&self, p: ProcId) -> Option<&Entry> {
        self.processes.iter().find(|e| e.proc_id() == Some(p))
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> io::Result<Manifest> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes the manifest so that a reader never sees half a file: to a temporary file
    /// beside it, then renamed over it.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self).expect("manifest serializes"))?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let m = Manifest {
            processes: vec![
                Entry::new(ProcId::replica(Service::Stock, 1), "127.0.0.1:9301", 42),
                Entry::new(ProcId::coordinator(Service::Order, 0), "127.0.0.1:9110", 43),
                Entry::new(ProcId::balancer(), "127.0.0.1:8000", 44),
            ],
        };
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"processes": [
                {"role": "replica", "service": "stock", "id": 1, "addr": "127.0.0.1:9301", "pid": 42},
                {"role": "coordinator", "service": "order", "id": 0, "addr": "127.0.0.1:9110", "pid": 43},
                {"role": "balancer", "service": "gateway", "id": 0, "addr": "127.0.0.1:8000", "pid": 44},
            ]})
        );
        assert_eq!(serde_json::to_value(Role::Store).unwrap(), "store");
    }

    #[test]
    fn writes_loads_and_finds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let p = ProcId::coordinator(Service::Payment, 1);
        let m = Manifest { processes: vec![Entry::new(p, "127.0.0.1:1", 7), Entry::new(ProcId::balancer(), "x:2", 8)] };
        m.write(&path).unwrap();
        let back = Manifest::load(&path).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get(p).unwrap().pid, 7);
        assert_eq!(back.get(ProcId::balancer()).unwrap().pid, 8);
        assert!(back.get(ProcId::replica(Service::Payment, 1)).is_none());
        assert!(!dir.path().join("manifest.json.tmp").exists());
    }

    #[test]
    fn names() {
        let p = ProcId::replica(Service::Stock, 2);
        assert_eq!(p.to_string(), "stock replica 2");
        assert_eq!(p.file_stem(), "stock-replica-2");
        assert_eq!(ProcId::balancer().file_stem(), "gateway-balancer-0");
        assert_eq!(ProcId::balancer().to_string(), "nginx (gateway balancer)");
    }
}
