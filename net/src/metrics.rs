//! The process's metrics, rendered in Prometheus's text exposition format at `/metrics`:
//! labelled counters and latency histograms, and the process's own CPU time, memory and file
//! descriptors. One [`Metrics`] per process, passed explicitly.
//!
//! The registry is tikv's `prometheus` crate; this module adds the [`CATALOGUE`], the one
//! list of every metric the project exports (name, help text, kind, label names), so that
//! what a call site counts, what `/metrics` says about it and what the dashboard in
//! deploy/grafana/ queries come from one place. The call sites name a metric and its labels
//! (`metrics.inc("coordinator_requests_total", labels(&[("route", r), ("status", s)]))`);
//! a name or a set of label names the catalogue does not have is a programming error: it
//! panics in a debug build (every test would find it) and, in a release build, counts
//! nothing and is logged once (a node keeps serving over a metric it cannot count).
//!
//! Counting is on every request's path: a map lookup by name, the label values put in the
//! catalogue's order on the stack, then the crate's lookup of the series by its values (a
//! hash and a read lock); nothing is allocated once a series exists.

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

pub use model::metrics::{Kind, MetricDef, BOUNDS, CATALOGUE, MAX_LABELS, PROCESS_METRICS};

/// The content type of [`Metrics::render`]'s text (Prometheus's text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The labels of one count, as the call site names them: borrowed, so that counting
/// allocates nothing. Made by [`labels`], used within the statement that counts.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a>(&'a [(&'a str, &'a str)]);

/// The labels `pairs` (name, value) of one count: `labels(&[("route", r), ("status", s)])`.
/// The names must be the metric's label names in the catalogue, in any order; values are
/// any text (the text format escapes them).
pub fn labels<'a>(pairs: &'a [(&'a str, &'a str)]) -> Labels<'a> {
    Labels(pairs)
}

/// A registered metric.
enum Family {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
}

/// A metric of the catalogue with its registered family.
struct Entry {
    def: &'static MetricDef,
    family: Family,
}

/// A process's metrics: every metric of the [`CATALOGUE`] and, on Linux, the process
/// metrics, in one `prometheus::Registry` of its own (not the crate's global one, so that
/// tests running several nodes in one process keep them apart).
pub struct Metrics {
    registry: Registry,
    /// The catalogue's metrics by name.
    entries: HashMap<&'static str, Entry>,
    /// The misuses already logged (release builds log each once).
    logged: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric of the catalogue (no series yet) and the process metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let mut entries = HashMap::with_capacity(CATALOGUE.len());
        for def in CATALOGUE {
            let family = match def.kind {
                Kind::Counter => {
                    let v = IntCounterVec::new(Opts::new(def.name, def.help), def.labels).expect("a valid counter");
                    registry.register(Box::new(v.clone())).expect("catalogue names are unique");
                    Family::Counter(v)
                }
                Kind::Histogram => {
                    let opts = HistogramOpts::new(def.name, def.help).buckets(BOUNDS.to_vec());
                    let v = HistogramVec::new(opts, def.labels).expect("a valid histogram");
                    registry.register(Box::new(v.clone())).expect("catalogue names are unique");
                    Family::Histogram(v)
                }
            };
            entries.insert(def.name, Entry { def, family });
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process metrics are registered once");
        Metrics { registry, entries, logged: Mutex::new(HashSet::new()) }
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: Labels<'_>, by: u64) {
        if let Some((Family::Counter(v), vals, n)) = self.lookup(name, Kind::Counter, labels) {
            // The number of values was checked against the catalogue: this cannot fail.
            if let Ok(c) = v.get_metric_with_label_values(&vals[..n]) {
                c.inc_by(by);
            }
        }
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &str, labels: Labels<'_>) {
        self.add(name, labels, 1);
    }

    /// Records one observation of a duration.
    pub fn observe(&self, name: &str, labels: Labels<'_>, d: Duration) {
        if let Some((Family::Histogram(v), vals, n)) = self.lookup(name, Kind::Histogram, labels) {
            if let Ok(h) = v.get_metric_with_label_values(&vals[..n]) {
                h.observe(d.as_secs_f64());
            }
        }
    }

    /// A counter's current value (tests and status pages); 0 for a series never counted
    /// (which this does not create: it reads the collected series instead of asking the
    /// family for one).
    pub fn counter(&self, name: &str, labels: &Labels<'_>) -> u64 {
        let Some((Family::Counter(v), ..)) = self.lookup(name, Kind::Counter, *labels) else {
            return 0;
        };
        let wanted = |m: &prometheus::proto::Metric| {
            let pairs = m.get_label();
            pairs.len() == labels.0.len()
                && pairs.iter().all(|p| labels.0.iter().any(|(k, val)| *k == p.name() && *val == p.value()))
        };
        v.collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .find(|m| wanted(m))
            .map_or(0, |m| m.get_counter().get_value() as u64)
    }

    /// The text exposition of every metric with a series and of the process metrics, each
    /// with its `# HELP` and `# TYPE` lines ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            log::error!("rendering the metrics: {e}");
        }
        out
    }

    /// Metric `name`'s family, if it is of kind `kind`, with the values of `labels` in the
    /// catalogue's order (the first `n` of the array). `None` for a misuse: an unknown
    /// name, another kind, other label names.
    fn lookup<'l>(
        &self,
        name: &str,
        kind: Kind,
        labels: Labels<'l>,
    ) -> Option<(&Family, [&'l str; MAX_LABELS], usize)> {
        let Some(entry) = self.entries.get(name) else {
            self.misuse(format!("{name} is not in the metrics catalogue"));
            return None;
        };
        if entry.def.kind != kind {
            self.misuse(format!("{name} is a {:?}, not a {kind:?}", entry.def.kind));
            return None;
        }
        let names = entry.def.labels;
        let mut vals = [""; MAX_LABELS];
        let complete = labels.0.len() == names.len()
            && names.iter().zip(vals.iter_mut()).all(|(n, slot)| match labels.0.iter().find(|(k, _)| k == n) {
                Some((_, v)) => {
                    *slot = v;
                    true
                }
                None => false,
            });
        if !complete {
            let given: Vec<&str> = labels.0.iter().map(|(k, _)| *k).collect();
            self.misuse(format!("{name} has the labels {names:?}, counted with {given:?}"));
            return None;
        }
        Some((&entry.family, vals, names.len()))
    }

    /// A programming error at a call site: panics in a debug build; in a release build logs
    /// it (once per message) and the count is dropped.
    fn misuse(&self, what: String) {
        debug_assert!(false, "metrics: {what}");
        if self.logged.lock().unwrap_or_else(|e| e.into_inner()).insert(what.clone()) {
            log::error!("metrics: {what} (not counted; fix the call site or net::metrics::CATALOGUE)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> &'static MetricDef {
        CATALOGUE.iter().find(|d| d.name == name).unwrap()
    }

    #[test]
    fn renders_counters_and_histograms_with_help_and_type() {
        let m = Metrics::new();
        m.inc("replica_requests_total", labels(&[("route", "find"), ("status", "200")]));
        m.inc("replica_requests_total", labels(&[("route", "find"), ("status", "200")]));
        m.add("replicate_batches_total", labels(&[]), 3);
        m.observe("replica_request_seconds", labels(&[("route", "find")]), Duration::from_millis(3));
        let text = m.render();
        let help = def("replica_requests_total").help;
        assert!(text.contains(&format!("# HELP replica_requests_total {help}\n")), "{text}");
        assert!(text.contains("# TYPE replica_requests_total counter\n"), "{text}");
        assert!(text.contains("\nreplica_requests_total{route=\"find\",status=\"200\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE replicate_batches_total counter\nreplicate_batches_total 3\n"), "{text}");
        assert!(text.contains("# TYPE replica_request_seconds histogram\n"), "{text}");
        assert!(text.contains("replica_request_seconds_bucket{route=\"find\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("replica_request_seconds_bucket{route=\"find\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("replica_request_seconds_bucket{route=\"find\",le=\"30\"} 1\n"), "{text}");
        assert!(text.contains("replica_request_seconds_bucket{route=\"find\",le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains("replica_request_seconds_sum{route=\"find\"} 0.003\n"), "{text}");
        assert!(text.contains("replica_request_seconds_count{route=\"find\"} 1\n"), "{text}");
        assert_eq!(text.matches("replica_request_seconds_bucket{").count(), BOUNDS.len() + 1);
        // A metric never counted into shows no series (nor HELP and TYPE lines).
        assert!(!text.contains("coordinator_requests_total"), "{text}");
        assert_eq!(m.counter("replica_requests_total", &labels(&[("route", "find"), ("status", "200")])), 2);
        assert_eq!(m.counter("replicate_batches_total", &labels(&[])), 3);
        // Asking for a series that was never counted does not make one.
        assert_eq!(m.counter("replica_requests_total", &labels(&[("route", "find"), ("status", "500")])), 0);
        assert!(!m.render().contains("status=\"500\""));
    }

    #[test]
    fn every_metric_counted_has_help_and_type() {
        let m = Metrics::new();
        for d in CATALOGUE {
            let vals: Vec<(&str, &str)> = d.labels.iter().map(|l| (*l, "x")).collect();
            match d.kind {
                Kind::Counter => m.inc(d.name, labels(&vals)),
                Kind::Histogram => m.observe(d.name, labels(&vals), Duration::from_micros(1)),
            }
        }
        let text = m.render();
        for d in CATALOGUE {
            let kind = match d.kind {
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            assert!(text.contains(&format!("# HELP {} {}\n", d.name, d.help)), "{}: {text}", d.name);
            assert!(text.contains(&format!("# TYPE {} {kind}\n", d.name)), "{}: {text}", d.name);
        }
        // Every sample line belongs to a family announced by HELP and TYPE lines before it.
        let mut announced = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
                assert!(announced.contains(name) || announced.contains(family), "{line} has no TYPE line before it");
            }
        }
    }

    #[test]
    fn label_values_are_escaped_and_labels_may_come_in_any_order() {
        let m = Metrics::new();
        m.inc("coordinator_view_changes_total", labels(&[("change", "a \"b\" c\\d\ne")]));
        let text = m.render();
        assert!(text.contains("coordinator_view_changes_total{change=\"a \\\"b\\\" c\\\\d\\ne\"} 1\n"), "{text}");
        // The text format lists label names sorted; the call may give them in any order.
        m.inc("coordinator_retries_total", labels(&[("route", "checkout"), ("reason", "misdirected")]));
        m.inc("coordinator_retries_total", labels(&[("reason", "misdirected"), ("route", "checkout")]));
        let text = m.render();
        assert!(text.contains("coordinator_retries_total{reason=\"misdirected\",route=\"checkout\"} 2\n"), "{text}");
        assert_eq!(
            m.counter("coordinator_retries_total", &labels(&[("reason", "misdirected"), ("route", "checkout")])),
            2
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_exported_on_linux() {
        let text = Metrics::new().render();
        for name in PROCESS_METRICS {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(rss > 1e6, "a test process holds more than a megabyte: {rss}");
    }

    /// The metric names that `src`'s call sites count: the string literal after `.inc(`,
    /// `.add(` or `.observe(`.
    fn counted_names(src: &str) -> Vec<String> {
        let mut names = Vec::new();
        for call in [".inc(", ".add(", ".observe("] {
            for (at, _) in src.match_indices(call) {
                let rest = src[at + call.len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    names.push(lit[..lit.find('"').unwrap()].to_string());
                }
            }
        }
        names
    }

    fn rust_sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("net/src/metrics.rs") {
                out.push(path);
            }
        }
    }

    /// The catalogue is the list of what the code counts: every name a call site counts is
    /// in it (a missing one would panic in debug builds, and count nothing in release), and
    /// every metric in it is counted somewhere.
    #[test]
    fn the_catalogue_lists_exactly_what_the_sources_count() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        // Every crate of the workspace but the tests' (whose sources call other things
        // `.add(`).
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() && !dir.ends_with("test") {
                rust_sources(&dir.join("src"), &mut files);
            }
        }
        let mut counted = HashSet::new();
        for f in &files {
            for name in counted_names(&std::fs::read_to_string(f).unwrap()) {
                assert!(CATALOGUE.iter().any(|d| d.name == name), "{}: {name} is not in the catalogue", f.display());
                counted.insert(name);
            }
        }
        for d in CATALOGUE {
            assert!(counted.contains(d.name), "{} is in the catalogue but counted nowhere", d.name);
        }
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not in the metrics catalogue")]
    fn an_unknown_name_panics_in_a_debug_build() {
        Metrics::new().inc("no_such_total", labels(&[]));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "has the labels")]
    fn other_label_names_panic_in_a_debug_build() {
        Metrics::new().inc("replica_requests_total", labels(&[("route", "find")]));
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn a_misuse_counts_nothing_in_a_release_build() {
        let m = Metrics::new();
        m.inc("no_such_total", labels(&[]));
        m.inc("no_such_total", labels(&[]));
        m.inc("replica_requests_total", labels(&[("route", "find")]));
        m.observe("replica_requests_total", labels(&[("route", "find")]), Duration::ZERO);
        assert!(!m.render().contains("no_such") && !m.render().contains("replica_requests_total{"));
        assert_eq!(m.logged.lock().unwrap().len(), 3, "each misuse logged once");
    }
}
