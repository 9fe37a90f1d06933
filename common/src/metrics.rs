//! A small Prometheus registry: labelled counters and latency histograms, rendered in the
//! text exposition format at `/metrics`. One per process, passed explicitly.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds: from sub-millisecond hops to multi-second sagas.
const BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Hist {
    counts: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

/// A process's metrics: per metric name, the series by their label text. Nested maps (not
/// one map keyed by both) so that counting into an existing series allocates nothing for
/// the name: every request counts into a few.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    hists: Mutex<BTreeMap<String, BTreeMap<String, Hist>>>,
}

/// Formats labels as Prometheus expects: `a="x",b="y"`. Built in one string: called for
/// every request.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let len = pairs.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(len);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            if c == '\\' || c == '"' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out
}

/// The series of metric `name` in `map`, created on first use.
fn series<'a, T>(map: &'a mut BTreeMap<String, BTreeMap<String, T>>, name: &str) -> &'a mut BTreeMap<String, T> {
    if !map.contains_key(name) {
        map.insert(name.to_string(), BTreeMap::new());
    }
    map.get_mut(name).expect("inserted above")
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &str, labels: String, by: u64) {
        *series(&mut self.counters.lock().unwrap(), name).entry(labels).or_default() += by;
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &str, labels: String) {
        self.add(name, labels, 1);
    }

    /// Records one observation of a duration.
    pub fn observe(&self, name: &str, labels: String, d: Duration) {
        let secs = d.as_secs_f64();
        let mut hists = self.hists.lock().unwrap();
        let h = series(&mut hists, name).entry(labels).or_default();
        for (i, b) in BOUNDS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// A counter's current value (tests and status pages).
    pub fn counter(&self, name: &str, labels: &str) -> u64 {
        self.counters.lock().unwrap().get(name).and_then(|s| s.get(labels)).copied().unwrap_or(0)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last = String::new();
        let counters = self.counters.lock().unwrap();
        for (name, l, v) in counters.iter().flat_map(|(n, s)| s.iter().map(move |(l, v)| (n, l, v))) {
            if *name != last {
                out.push_str(&format!("# TYPE {name} counter\n"));
                last = name.clone();
            }
            out.push_str(&format!("{name}{{{l}}} {v}\n"));
        }
        let hists = self.hists.lock().unwrap();
        for (name, l, h) in hists.iter().flat_map(|(n, s)| s.iter().map(move |(l, h)| (n, l, h))) {
            if *name != last {
                out.push_str(&format!("# TYPE {name} histogram\n"));
                last = name.clone();
            }
            let sep = if l.is_empty() { "" } else { "," };
            for (i, b) in BOUNDS.iter().enumerate() {
                out.push_str(&format!("{name}_bucket{{{l}{sep}le=\"{b}\"}} {}\n", h.counts[i]));
            }
            out.push_str(&format!("{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}\n", h.count));
            out.push_str(&format!("{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}\n", h.sum, h.count));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.inc("requests_total", labels(&[("route", "find"), ("status", "200")]));
        m.inc("requests_total", labels(&[("route", "find"), ("status", "200")]));
        m.observe("request_seconds", labels(&[("route", "find")]), Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("requests_total{route=\"find\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("request_seconds_bucket{route=\"find\",le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("request_seconds_bucket{route=\"find\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("request_seconds_count{route=\"find\"} 1"), "{text}");
        assert_eq!(m.counter("requests_total", "route=\"find\",status=\"200\""), 2);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[]), "");
        assert_eq!(labels(&[("a", "x")]), "a=\"x\"");
        assert_eq!(labels(&[("a", "x\"y\\z"), ("b", "")]), "a=\"x\\\"y\\\\z\",b=\"\"");
    }
}
