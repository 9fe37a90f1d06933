//! The topology: node counts and addresses per service, the single source for the local
//! launcher, the nginx config, the compose generator and the Kubernetes manifests.
//!
//! A replica's or coordinator's id is its index in its list.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The three services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Orders and the checkout saga.
    Order,
    /// User credit.
    Payment,
    /// Items, stock and prices.
    Stock,
}

impl Service {
    /// All services, in a fixed order.
    pub const ALL: [Service; 3] = [Service::Order, Service::Payment, Service::Stock];

    /// The service's name: `order`, `payment` or `stock`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Stock => "stock",
        }
    }

    /// The first path segment of its public API: `orders`, `payment` or `stock`.
    pub fn prefix(self) -> &'static str {
        match self {
            Service::Order => "orders",
            Service::Payment => "payment",
            Service::Stock => "stock",
        }
    }

    /// Parses a service name.
    pub fn parse(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The nodes of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNodes {
    /// Replica addresses (`host:port`), id = index.
    pub replicas: Vec<String>,
    /// Coordinator addresses (`host:port`), id = index.
    pub coordinators: Vec<String>,
}

/// The whole cluster's layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Where nginx listens (`host:port`).
    pub gateway: String,
    /// The order service.
    pub order: ServiceNodes,
    /// The payment service.
    pub payment: ServiceNodes,
    /// The stock service.
    pub stock: ServiceNodes,
}

/// A topology that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("topology: {0}")]
pub struct TopologyError(pub String);

impl Topology {
    /// Reads and validates a TOML topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError(format!("{}: {e}", path.display())))?;
        Topology::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let t: Topology = toml::from_str(text).map_err(|e| TopologyError(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// The TOML text of this topology.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("topology serializes")
    }

    /// The nodes of one service.
    pub fn nodes(&self, s: Service) -> &ServiceNodes {
        match s {
            Service::Order => &self.order,
            Service::Payment => &self.payment,
            Service::Stock => &self.stock,
        }
    }

    /// Every service has at least one replica and one coordinator, and no address is used
    /// twice.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let mut seen = std::collections::HashSet::new();
        seen.insert(self.gateway.clone());
        for s in Service::ALL {
            let n = self.nodes(s);
            if n.replicas.is_empty() || n.coordinators.is_empty() {
                return Err(TopologyError(format!("{s} needs at least one replica and one coordinator")));
            }
            for a in n.replicas.iter().chain(n.coordinators.iter()) {
                if !seen.insert(a.clone()) {
                    return Err(TopologyError(format!("address {a} is used twice")));
                }
            }
        }
        Ok(())
    }

    /// A loopback topology with `replicas` and `coordinators` per service and the gateway,
    /// taking ports from `ports` in order (gateway first, then per service replicas and
    /// coordinators).
    pub fn local(replicas: usize, coordinators: usize, ports: &mut dyn Iterator<Item = u16>) -> Topology {
        let mut next = || format!("127.0.0.1:{}", ports.next().expect("enough ports"));
        let gateway = next();
        let mut svc = || ServiceNodes {
            replicas: (0..replicas).map(|_| next()).collect(),
            coordinators: (0..coordinators).map(|_| next()).collect(),
        };
        let (order, payment, stock) = (svc(), svc(), svc());
        Topology { gateway, order, payment, stock }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_topology_round_trips() {
        let t = Topology::local(3, 2, &mut (9000..));
        assert_eq!(t.gateway, "127.0.0.1:9000");
        assert_eq!(t.stock.coordinators.len(), 2);
        t.validate().unwrap();
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
    }

    #[test]
    fn invalid_topologies_are_refused() {
        let mut t = Topology::local(1, 1, &mut (9000..));
        t.order.replicas.clear();
        assert!(t.validate().is_err());
        let mut t = Topology::local(1, 1, &mut (9000..));
        t.stock.coordinators[0] = t.gateway.clone();
        assert!(t.validate().is_err());
    }

    #[test]
    fn the_shipped_topology_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../env/topology.toml");
        let t = Topology::load(&path).unwrap();
        assert_eq!(t.gateway, "127.0.0.1:8000");
        for s in Service::ALL {
            assert_eq!((t.nodes(s).replicas.len(), t.nodes(s).coordinators.len()), (3, 2), "{s}");
        }
    }

    #[test]
    fn service_names() {
        for s in Service::ALL {
            assert_eq!(Service::parse(s.name()), Some(s));
        }
        assert_eq!(Service::Order.prefix(), "orders");
        assert_eq!(Service::parse("orders"), None);
    }
}
