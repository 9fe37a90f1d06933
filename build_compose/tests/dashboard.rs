//! The Grafana dashboard (deploy/grafana/webshop.json, written by hand) cannot drift from the
//! code: every metric its queries name is one the nodes export (`model::metrics::CATALOGUE`,
//! the process metrics, or Prometheus's own `up`), every label it groups, matches or names
//! in a legend is one those series carry (their own labels, or the target labels of
//! `build_compose::prometheus_config`), and every metric of the catalogue is on it. The file
//! is also checked for what an import needs: a schema version, the Prometheus datasource as
//! a variable used by every panel, unique panel ids, panels that do not overlap.
//! (The whole-cluster test `metrics_scraped_by_prometheus` runs every query on a real
//! Prometheus.)

use build_compose::PROMETHEUS_JOB;
use model::metrics::{Kind, CATALOGUE, PROCESS_METRICS};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The labels Prometheus and the scrape config put on every series.
const TARGET_LABELS: &[&str] = &["job", "instance", "service", "role", "id"];

/// PromQL's keywords that are not names: binary operators, modifiers, and the aggregation
/// operators (which a grouping clause may separate from their `(`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The clauses whose parenthesised list names labels.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/webshop.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// What a PromQL expression names: its metrics and the labels it matches or groups by.
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Reads the names out of a PromQL expression (enough of PromQL for dashboards): string
/// literals and range selectors are skipped; an identifier is a label inside `{...}` or a
/// grouping clause's `(...)`, a function when `(` follows, a keyword or aggregation
/// operator, or else a metric.
fn names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Names::default();
    let (mut in_matchers, mut in_grouping) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '[' => i += chars[i..].iter().position(|&c| c == ']').expect("a range ends") + 1,
            '{' => {
                in_matchers = true;
                i += 1;
            }
            '}' => {
                in_matchers = false;
                i += 1;
            }
            ')' => {
                in_grouping = false;
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if in_matchers || in_grouping {
                    out.labels.insert(word);
                } else if GROUPING.contains(&word.as_str()) {
                    assert_eq!(next, Some(&'('), "{expr}: {word} without a label list");
                    in_grouping = true;
                    i += chars[i..].iter().position(|&c| c == '(').unwrap() + 1;
                } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    out.metrics.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The label names of series `metric` (a catalogue metric or a histogram's series, a process
/// metric, `up`), besides the target labels; `None` for a series the nodes do not export.
fn labels_of(metric: &str) -> Option<Vec<&'static str>> {
    if metric == "up" || PROCESS_METRICS.contains(&metric) {
        return Some(Vec::new());
    }
    if let Some(d) = CATALOGUE.iter().find(|d| d.name == metric && d.kind == Kind::Counter) {
        return Some(d.labels.to_vec());
    }
    for (suffix, extra) in [("_bucket", Some("le")), ("_sum", None), ("_count", None)] {
        if let Some(base) = metric.strip_suffix(suffix) {
            if let Some(d) = CATALOGUE.iter().find(|d| d.name == base && d.kind == Kind::Histogram) {
                return Some(d.labels.iter().copied().chain(extra).collect());
            }
        }
    }
    None
}

#[test]
fn the_parser_reads_names_out_of_promql() {
    let n = names(
        "histogram_quantile(0.99, sum by (service, le) (rate(a_seconds_bucket{job=\"x\", status=~\"5..\"}[$__rate_interval]))) / on(id) b_total",
    );
    assert_eq!(n.metrics.into_iter().collect::<Vec<_>>(), ["a_seconds_bucket", "b_total"]);
    assert_eq!(n.labels.into_iter().collect::<Vec<_>>(), ["id", "job", "le", "service", "status"]);
}

#[test]
fn every_query_names_exported_metrics_and_their_labels() {
    let d = dashboard();
    let mut shown = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            queries += 1;
            let n = names(expr);
            assert!(!n.metrics.is_empty(), "{title}: {expr} names no metric");
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for m in &n.metrics {
                let own = labels_of(m).unwrap_or_else(|| {
                    panic!("{title}: {m} is not exported (not in model::metrics::CATALOGUE nor a process metric)")
                });
                allowed.extend(own);
                shown.insert(
                    ["_bucket", "_sum", "_count"].iter().find_map(|s| m.strip_suffix(s)).unwrap_or(m).to_string(),
                );
            }
            for l in &n.labels {
                assert!(allowed.contains(l.as_str()), "{title}: {expr} uses label {l}, which its series do not have");
            }
            // Every series is the project's job.
            assert!(expr.contains(&format!("job=\"{PROMETHEUS_JOB}\"")), "{title}: {expr} is not limited to the job");
            let legend = t["legendFormat"].as_str().unwrap_or("");
            for part in legend.split("{{").skip(1) {
                let l = part.split("}}").next().unwrap().trim();
                assert!(allowed.contains(l), "{title}: legend {legend} names {l}, which its series do not have");
            }
        }
    }
    assert!(queries > 10, "{queries} queries");
    for d in CATALOGUE {
        assert!(shown.contains(d.name), "{} is exported but on no panel of the dashboard", d.name);
    }
}

#[test]
fn the_dashboard_is_importable() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30), "schemaVersion");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()) && d["uid"].is_string());
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars.iter().find(|v| v["type"] == "datasource").expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("a title");
        assert!(ids.insert(p["id"].as_u64().expect("an id")), "{title}: id used twice");
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}: not on the datasource variable");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}: a query not on the datasource variable");
            assert!(t["refId"].is_string(), "{title}: a query without refId");
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], ds_ref.as_str(), "variable {}", v["name"]);
    }
}
