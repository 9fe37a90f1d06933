//! Addresses for a local cluster: free loopback ports for test clusters, and the check that
//! a topology's addresses are free before anything is started.

use anyhow::{anyhow, Context};
use rand::Rng;
use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;

/// Lowest port handed to test clusters: above the ports a developer's machine commonly runs
/// services on, and above those of the shipped topology (8000, 9100-9311), so a test cluster
/// and `cluster up` can run side by side.
pub const TEST_PORT_LOW: u16 = 20000;

/// Upper end (exclusive) of test ports when the kernel's ephemeral range cannot be read: the
/// start of Linux's default range.
const DEFAULT_EPHEMERAL_START: u16 = 32768;

/// Random picks tried per requested port before giving up: the range holds over ten
/// thousand ports, so failing this often means the range is nearly full.
const TRIES_PER_PORT: usize = 100;

/// Ports this process has handed out: two clusters started at once by parallel tests in one
/// process never get the same port, even after the first one's listeners were released.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range, from which outgoing connections take
/// their local port.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// `n` distinct loopback ports that are free now, for the processes of a test cluster to bind.
///
/// They are taken below the kernel's ephemeral range: a port from that range (what binding
/// port 0 gives) can be taken by any outgoing connection while its process is down, and a
/// process restarted in a fault test could then not bind its address again.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let high = ephemeral_start();
    if high <= TEST_PORT_LOW {
        return Err(io::Error::other(format!("no ports between {TEST_PORT_LOW} and the ephemeral range ({high})")));
    }
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut rng = rand::thread_rng();
    // Held until all are found, so they are distinct and really were free.
    let mut held: Vec<(u16, TcpListener)> = Vec::new();
    for _ in 0..n * TRIES_PER_PORT {
        if held.len() == n {
            break;
        }
        let port = rng.gen_range(TEST_PORT_LOW..high);
        if handed_out.contains(&port) || held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, l));
        }
    }
    if held.len() < n {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("found only {} of {n} free ports", held.len())));
    }
    let ports: Vec<u16> = held.into_iter().map(|(p, _)| p).collect();
    handed_out.extend(&ports);
    Ok(ports)
}

/// `addr` (`host:port`) with its port replaced.
pub fn with_port(addr: &str, port: u16) -> anyhow::Result<String> {
    let (host, _) = addr.rsplit_once(':').ok_or_else(|| anyhow!("address '{addr}' has no port"))?;
    Ok(format!("{host}:{port}"))
}

/// Fails unless every address can be bound on this machine right now: a process left over
/// from an earlier run would otherwise answer the readiness checks in place of the new one.
pub fn ensure_free<'a>(addrs: impl IntoIterator<Item = &'a String>) -> anyhow::Result<()> {
    for addr in addrs {
        match TcpListener::bind(addr.as_str()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(anyhow!("address {addr} is already in use (is another cluster still running?)"))
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot listen on {addr}: the local launcher runs every node on this machine")
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(20).unwrap();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 20);
        assert!(ports.iter().all(|&p| (TEST_PORT_LOW..ephemeral_start()).contains(&p)));
        let again = free_ports(20).unwrap();
        assert!(again.iter().all(|p| !ports.contains(p)), "a port was handed out twice");
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        ensure_free(&addrs).unwrap();
    }

    #[test]
    fn a_taken_address_is_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let err = ensure_free([&addr]).unwrap_err().to_string();
        assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    }

    #[test]
    fn replaces_the_port() {
        assert_eq!(with_port("127.0.0.1:8000", 8080).unwrap(), "127.0.0.1:8080");
        assert_eq!(with_port("gateway:80", 81).unwrap(), "gateway:81");
        assert!(with_port("nohost", 1).is_err());
    }
}
