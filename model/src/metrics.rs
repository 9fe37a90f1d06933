//! The catalogue of every metric the project exports: name, help text, kind and label names
//! ([`CATALOGUE`]), and the process metrics. The registry that counts them is
//! `net::metrics`; the Grafana dashboard and the Prometheus files `build_compose` writes
//! are checked against this list.

/// Histogram bucket bounds in seconds: from sub-millisecond hops to multi-second sagas.
pub const BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// What a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up (from 0 when the process starts); name ends in `_total`.
    Counter,
    /// Durations in seconds, counted into the buckets of [`BOUNDS`]; name ends in `_seconds`.
    Histogram,
}

/// One metric of the [`CATALOGUE`].
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// The metric's name (a histogram's series add `_bucket`, `_sum` and `_count`).
    pub name: &'static str,
    /// Its `# HELP` text: what it counts, and in which unit.
    pub help: &'static str,
    /// Counter or histogram.
    pub kind: Kind,
    /// Its label names, in the order the call sites give them (the text format lists them
    /// sorted by name).
    pub labels: &'static [&'static str],
}

const fn counter(name: &'static str, labels: &'static [&'static str], help: &'static str) -> MetricDef {
    MetricDef { name, help, kind: Kind::Counter, labels }
}

const fn histogram(name: &'static str, labels: &'static [&'static str], help: &'static str) -> MetricDef {
    MetricDef { name, help, kind: Kind::Histogram, labels }
}

/// Every metric the project counts: replicas count the `replica_*`, `replicate*` and
/// `repaired_*` ones (replica/src/server.rs), coordinators the `coordinator_*` and
/// `anti_entropy_*` ones (coordinator/src). A series appears at `/metrics` once it has been
/// counted into (so a replica shows none of a coordinator's). A test checks that every name
/// counted in those sources is here and that every one here is counted somewhere.
pub const CATALOGUE: &[MetricDef] = &[
    // Replicas.
    counter(
        "replica_requests_total",
        &["route", "status"],
        "Keyed requests this replica answered (alone or as a call of a multi request), by route and HTTP status; a count of requests.",
    ),
    histogram(
        "replica_request_seconds",
        &["route"],
        "Time this replica took to answer a keyed request, from routing it to its answer, by route; in seconds.",
    ),
    counter(
        "replica_multi_requests_total",
        &[],
        "Multi requests (POST /internal/multi, over HTTP or an internal connection) this replica received; a count of requests.",
    ),
    counter(
        "replica_multi_calls_total",
        &[],
        "Calls carried by the multi requests this replica received (over replica_multi_requests_total: calls per multi request); a count of calls.",
    ),
    counter(
        "replicate_batches_total",
        &[],
        "Fan-out batches (POST /internal/replicate) this replica received from primaries and decoded; a count of batches.",
    ),
    counter(
        "replicated_states_total",
        &["applied"],
        "States (documents and side records) in the fan-out batches this replica took without error: applied=\"true\" those it wrote, applied=\"false\" those it skipped as not newer than what it held; a count of states.",
    ),
    counter(
        "repaired_documents_total",
        &[],
        "Documents this replica wrote from anti-entropy repairs (states it lacked or held older); a count of documents.",
    ),
    // Coordinators.
    counter(
        "coordinator_requests_total",
        &["route", "status"],
        "Requests this coordinator routed and answered (public ones through the gateway and internal keyed ones), by route and HTTP status of the answer; a count of requests.",
    ),
    histogram(
        "coordinator_request_seconds",
        &["route"],
        "Time this coordinator took to route a request, forward it to the key's primary (with any retries) and have the answer, by route (route=\"multi\": a whole multi request); in seconds.",
    ),
    counter(
        "coordinator_multi_calls_total",
        &[],
        "Calls carried by the multi requests (POST /internal/multi) this coordinator answered; a count of calls.",
    ),
    counter(
        "coordinator_retries_total",
        &["route", "reason"],
        "Requests this coordinator sent again because a replica refused them, by route and reason (reason=\"misdirected\": not the key's primary under the replica's view); a count of retries.",
    ),
    counter(
        "coordinator_replica_unavailable_total",
        &["replica"],
        "Sends from this coordinator to a replica that got no answer (refused or broken connection, timeout, no lease), by replica id; a count of failed sends.",
    ),
    counter(
        "coordinator_view_changes_total",
        &["change"],
        "View changes this coordinator proposed and saw chosen by Paxos, by change (\"evict replica 2 (no answer)\", \"re-join replica 2\", \"promote replica 2\", ...); a count of views.",
    ),
    counter(
        "coordinator_evictions_total",
        &["replica"],
        "Replicas this coordinator evicted from the view after a failure and an unanswered probe, by replica id; a count of evictions.",
    ),
    counter(
        "coordinator_rejoins_total",
        &["replica"],
        "Replicas this coordinator re-admitted to the view as learners once they answered again, by replica id; a count of re-joins.",
    ),
    counter(
        "anti_entropy_rounds_total",
        &[],
        "Anti-entropy rounds this coordinator ran (periodic ones while it leads, and those after a re-join or asked for); a count of rounds.",
    ),
    counter(
        "anti_entropy_divergent_buckets_total",
        &[],
        "Digest buckets in which replicas differed, summed over this coordinator's anti-entropy rounds; a count of buckets.",
    ),
    counter(
        "anti_entropy_repaired_documents_total",
        &[],
        "Document states this coordinator's anti-entropy rounds wrote on replicas that lacked them; a count of documents.",
    ),
];

/// The process metrics every `net::metrics::Metrics` exports on Linux (the crate's process collector,
/// read from /proc at each scrape): CPU time (user and system, whole seconds), resident and
/// virtual memory, open and maximum file descriptors, start time, threads.
pub const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
];

/// The most labels a metric of the [`CATALOGUE`] has (a count puts their values on the stack).
pub const MAX_LABELS: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Prometheus's name rules: `[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, without the colon
    /// (reserved for recording rules) here; labels `[a-zA-Z_][a-zA-Z0-9_]*`, not `__...`.
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn the_catalogue_follows_prometheus_naming() {
        let mut seen = HashSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.name), "{} is in the catalogue twice", d.name);
            assert!(valid_name(d.name), "{}: not a valid metric name", d.name);
            assert!(!PROCESS_METRICS.contains(&d.name), "{}: a process metric's name", d.name);
            match d.kind {
                Kind::Counter => assert!(d.name.ends_with("_total"), "counter {} must end in _total", d.name),
                Kind::Histogram => {
                    assert!(d.name.ends_with("_seconds"), "histogram {} of durations must end in _seconds", d.name);
                    assert!(!d.labels.contains(&"le"), "{}: `le` is the histogram's own label", d.name);
                }
            }
            assert!(d.labels.len() <= MAX_LABELS, "{}: more than {MAX_LABELS} labels", d.name);
            let mut labels = HashSet::new();
            for l in d.labels {
                assert!(valid_name(l) && !l.starts_with("__"), "{}: label {l} is not a valid label name", d.name);
                assert!(labels.insert(l), "{}: label {l} twice", d.name);
            }
            assert!(d.help.ends_with('.') && d.help.len() > 40, "{}: say what it counts, in which unit", d.name);
            let unit = match d.kind {
                Kind::Counter => "; a count of ",
                Kind::Histogram => "; in seconds.",
            };
            assert!(d.help.contains(unit), "{}: the help names the unit ({unit})", d.name);
        }
        for name in PROCESS_METRICS {
            assert!(valid_name(name), "{name}");
        }
    }
}
