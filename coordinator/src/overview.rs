//! The whole cluster on one page, from any coordinator: `GET /admin/cluster` (and
//! `GET /admin/status` asked for by a browser or as text) gathers this coordinator's own
//! status ([`crate::status::gather`]) and each other service's `/admin/status` JSON, asked of
//! that service's coordinators in turn until one answers ([`gather_cluster`]), and answers it
//! as JSON ([`ClusterStatus`]), as an HTML page a person reads and that refreshes itself
//! ([`render_html`]), or as a terminal table ([`render_text`], what a command line prints
//! as is). A service that no coordinator answers for is shown as such, with the errors,
//! rather than failing the page.
//!
//! The other coordinators are asked for JSON only, which they answer from their own service
//! alone: assembling the page never recurses.

use crate::antientropy::RoundReport;
use crate::state::Coordinator;
use crate::status::{gather, Status};
use crate::view::{ViewChange, ViewSource};
use model::topology::Service;
use model::wire::MemberState;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Duration;

/// Longest wait for one coordinator of another service: above its own wait for a hung
/// replica's digests ([`crate::status::DIGEST_TIMEOUT`]), so a service with a replica down
/// still shows, and short enough that a hung coordinator leaves the page prompt.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// Seconds after which the HTML page reloads itself, so a person watching a failover sees it.
pub const HTML_REFRESH_SECS: u32 = 5;

/// Hex digits of a digest root the page and the table show (the page has the whole root in
/// the cell's title).
pub const ROOT_PREFIX: usize = 12;

/// Every service's status, in the order order, payment, stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// One entry per service.
    pub services: Vec<ServiceStatus>,
}

/// One service on the cluster page: its status as one of its coordinators answered it, or
/// why none did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: Service,
    /// The status its first answering coordinator gave (`null` when none answered).
    pub status: Option<Status>,
    /// Why no coordinator answered: one error per coordinator asked (`null` when one did).
    pub error: Option<String>,
}

/// Gathers the cluster's status: this coordinator's own, and the other services' asked
/// concurrently, each of its coordinators in id order until one answers.
pub async fn gather_cluster(c: &Coordinator) -> ClusterStatus {
    let asks = Service::ALL.into_iter().map(|s| async move {
        if s == c.service {
            return ServiceStatus { service: s, status: Some(gather(c).await), error: None };
        }
        let addrs = c.other_services.iter().find(|(o, _)| *o == s).map(|(_, a)| a.as_slice()).unwrap_or_default();
        match ask_service(&c.peer_http, s, addrs).await {
            Ok(status) => ServiceStatus { service: s, status: Some(status), error: None },
            Err(e) => ServiceStatus { service: s, status: None, error: Some(e) },
        }
    });
    ClusterStatus { services: futures::future::join_all(asks).await }
}

/// Asks `service`'s coordinators at `addrs` for their status in turn; the first status, or
/// every coordinator's error.
async fn ask_service(http: &reqwest::Client, service: Service, addrs: &[String]) -> Result<Status, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        match ask(http, addr).await {
            Ok(s) if s.service == service => return Ok(s),
            Ok(s) => errors.push(format!("{addr}: answered for {}", s.service)),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    if errors.is_empty() {
        return Err("no coordinator configured".into());
    }
    Err(format!("no coordinator answered ({})", errors.join("; ")))
}

/// One coordinator's `/admin/status` JSON.
async fn ask(http: &reqwest::Client, addr: &str) -> Result<Status, String> {
    let why = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer within {} s", PEER_TIMEOUT.as_secs())
        } else {
            net::client::root_cause(&e)
        }
    };
    let r = http
        .get(format!("http://{addr}/admin/status"))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(why)?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    r.json::<Status>().await.map_err(|e| format!("unreadable status: {}", why(e)))
}

/// How long ago something happened, `ms` milliseconds before, as a person says it: "just
/// now", "12 s ago", "3 min ago", "2 h ago", "4 d ago" (rounded down).
pub fn ago(ms: u64) -> String {
    match ms / 1000 {
        0 => "just now".into(),
        s @ 1..=59 => format!("{s} s ago"),
        s @ 60..=3599 => format!("{} min ago", s / 60),
        s @ 3600..=86_399 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// A duration of `ms` milliseconds: "35 ms" below a second, "1.2 s" from there.
pub fn took(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The text of a member's state.
fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Up => "up",
        MemberState::Learner => "learner",
        MemberState::Evicted => "evicted",
    }
}

/// The first [`ROOT_PREFIX`] hex digits of a root.
fn root_prefix(root: &str) -> &str {
    root.get(..ROOT_PREFIX).unwrap_or(root)
}

/// A service's state in a few words and how it looks: "ok" when every replica is up with
/// one root, "warn" otherwise, "bad" ("unreachable") when no coordinator answered.
fn verdict(s: Option<&Status>) -> (&'static str, String) {
    let Some(s) = s else {
        return ("bad", "unreachable".into());
    };
    let n = s.members.len();
    let up = s.members.iter().filter(|m| m.state == MemberState::Up).count();
    let roots: Vec<&str> = s.members.iter().filter_map(|m| m.root.as_deref()).collect();
    let one_root = roots.len() == n && roots.windows(2).all(|w| w[0] == w[1]);
    let roots_say = if one_root {
        "one root".to_string()
    } else if roots.len() < n {
        format!("{} not answering", n - roots.len())
    } else {
        "roots differ".to_string()
    };
    (if up == n && one_root { "ok" } else { "warn" }, format!("{up} of {n} up, {roots_say}"))
}

/// The clock a status's times are read against: its own `now_ms`, or `fallback` for a
/// status from a build without it.
fn clock(s: &Status, fallback: u64) -> u64 {
    if s.now_ms > 0 {
        s.now_ms
    } else {
        fallback
    }
}

/// The last anti-entropy round in a sentence, times relative to `now`; `coordinator` is
/// the one that answered (rounds run on the service's lowest-id live coordinator only).
fn round_sentence(r: Option<&RoundReport>, now: u64, coordinator: u32) -> String {
    let Some(r) = r else {
        return format!(
            "none on coordinator {coordinator} yet (rounds run on the service's lowest-id live coordinator)"
        );
    };
    let mut s = format!(
        "{} ({}), took {}, under view {}, {}: ",
        ago(now.saturating_sub(r.started_ms)),
        r.reason,
        took(r.took_ms),
        r.epoch,
        if r.complete { "complete" } else { "partial" }
    );
    if r.divergent_buckets.is_empty() {
        s.push_str("the replicas agree");
    } else {
        let _ = write!(
            s,
            "{} divergent buckets ({} listed, {} in flux), {} documents repaired, {} left for the next round",
            r.divergent_buckets.len(),
            r.listed.len(),
            r.in_flux.len(),
            r.repaired,
            r.deferred
        );
    }
    if !r.differing_replicas.is_empty() {
        let _ = write!(s, "; replicas differing: {}", ids(&r.differing_replicas));
    }
    if !r.unanswered.is_empty() {
        let _ = write!(s, "; no answer from replicas {}", ids(&r.unanswered));
    }
    s
}

fn ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// A view change's details after its description: the epoch (or the epochs it spans), who
/// made it, and why when that says more than the description.
fn change_details(c: &ViewChange, coordinator: u32) -> String {
    let epochs = if c.from_epoch.saturating_add(1) < c.epoch {
        format!("epochs {} to {}", c.from_epoch, c.epoch)
    } else {
        format!("epoch {}", c.epoch)
    };
    match (c.source, &c.reason) {
        (ViewSource::Chosen, Some(reason)) if *reason != c.what => {
            format!("{epochs}, by coordinator {coordinator}: {reason}")
        }
        (ViewSource::Chosen, _) => format!("{epochs}, by coordinator {coordinator}"),
        (ViewSource::Adopted, _) if c.what.starts_with("adopted") => epochs,
        (ViewSource::Adopted, _) => format!("{epochs}, learned from a replica"),
    }
}

/// The recent view changes as the page and the table both say them, newest first: when (as a
/// person reads it), what, and the details ([`change_details`]).
fn change_lines(s: &Status, now: u64) -> Vec<(String, &str, String)> {
    s.view_changes
        .iter()
        .rev()
        .map(|c| (ago(now.saturating_sub(c.at_ms)), c.what.as_str(), change_details(c, s.coordinator)))
        .collect()
}

/// What the page and the table say when there is no view change to show.
fn no_changes(s: &Status) -> String {
    format!("none since coordinator {} started", s.coordinator)
}

/// The cluster as a self-contained HTML page (inline CSS, no scripts, no external
/// resources) that reloads itself every [`HTML_REFRESH_SECS`]: a section per service with
/// its members (state, root, lag), the last anti-entropy round and the recent view changes.
/// `me` is the service and id of the coordinator that made it; `now_ms` its clock, for
/// statuses that carry none.
pub fn render_html(cluster: &ClusterStatus, me: (Service, u32), now_ms: u64) -> String {
    let mut body = String::new();
    for svc in &cluster.services {
        let (class, summary) = verdict(svc.status.as_ref());
        let name = svc.service.name();
        let _ = write!(
            body,
            "<section class=\"service\" id=\"{name}\" data-service=\"{name}\">\n<h2>{name} \
             <span class=\"badge {class}\">{}</span>",
            escape(&summary)
        );
        let Some(s) = &svc.status else {
            let _ = write!(
                body,
                "</h2>\n<p class=\"error\">{}</p>\n</section>\n",
                escape(svc.error.as_deref().unwrap_or("no answer"))
            );
            continue;
        };
        let now = clock(s, now_ms);
        let _ = write!(
            body,
            "<span class=\"meta\">view epoch {} &middot; as coordinator {} sees it</span></h2>\n\
             <table>\n<thead><tr><th>replica</th><th>address</th><th>state</th><th>digest root</th>\
             <th title=\"buckets (of 256) in which its digest differs from the majority's\">lag</th></tr></thead>\n<tbody>\n",
            s.epoch, s.coordinator
        );
        for m in &s.members {
            let state = state_name(m.state);
            let root = match &m.root {
                Some(r) => format!("<code class=\"root\" title=\"{}\">{}</code>", escape(r), escape(root_prefix(r))),
                None => "<span class=\"muted\">no answer</span>".into(),
            };
            let lag = match m.lag_buckets {
                Some(0) => "<span class=\"muted\">0</span>".to_string(),
                Some(n) => format!("<b class=\"lagging\">{n} bucket{}</b>", if n == 1 { "" } else { "s" }),
                None => {
                    "<span class=\"muted\" title=\"no digests from it, or no majority to compare with\">&ndash;</span>"
                        .into()
                }
            };
            let _ = writeln!(
                body,
                "<tr class=\"member\" data-replica=\"{}\" data-state=\"{state}\"><td>{}</td><td><code>{}</code></td>\
                 <td><span class=\"state {state}\">{state}</span></td><td>{root}</td><td>{lag}</td></tr>",
                m.id,
                m.id,
                escape(&m.addr)
            );
        }
        let _ = write!(
            body,
            "</tbody></table>\n<h3>Last anti-entropy round</h3>\n<p class=\"round\">{}</p>\n<h3>Recent view changes</h3>\n",
            escape(&round_sentence(s.anti_entropy.as_ref(), now, s.coordinator))
        );
        let changes = change_lines(s, now);
        if changes.is_empty() {
            let _ = writeln!(body, "<p class=\"muted\">{}</p>", no_changes(s));
        } else {
            body.push_str("<ul class=\"changes\">\n");
            for (when, what, details) in changes {
                let _ = writeln!(
                    body,
                    "<li><span class=\"when\">{when}</span>: {} <span class=\"muted\">({})</span></li>",
                    escape(what),
                    escape(&details)
                );
            }
            body.push_str("</ul>\n");
        }
        body.push_str("</section>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{HTML_REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>webshop cluster status</title>\n<style>{CSS}</style></head>\n<body>\n\
         <header><h1>Webshop cluster</h1><p>as {} coordinator {} sees it &middot; refreshes every {HTML_REFRESH_SECS} s \
         &middot; <a href=\"/admin/cluster\">JSON</a> &middot; <a href=\"/admin/cluster?format=text\">text</a></p></header>\n\
         <main>\n{body}</main>\n</body></html>\n",
        me.0, me.1
    )
}

/// The page's style: system fonts, a card per service, states as coloured pills.
const CSS: &str = "\
body{margin:0;background:#f3f4f6;color:#1f2328;font:14px/1.45 system-ui,-apple-system,'Segoe UI',\
'DejaVu Sans',sans-serif}\
header{background:#24292f;color:#fff;padding:14px 24px}\
header h1{margin:0;font-size:20px;font-weight:600}\
header p{margin:2px 0 0;color:#c9d1d9;font-size:13px}\
header a{color:#9ecbff}\
main{padding:16px 24px;max-width:1100px}\
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 18px 14px;margin:0 0 16px}\
h2{margin:2px 0 10px;font-size:18px}\
h2 .meta{font-weight:400;color:#59636e;font-size:13px;margin-left:10px}\
h3{margin:14px 0 4px;font-size:13px;color:#424a53;text-transform:uppercase;letter-spacing:.04em}\
.badge{display:inline-block;margin-left:8px;padding:1px 10px;border-radius:10px;font-size:12px;font-weight:600;\
vertical-align:2px}\
.ok{background:#dafbe1;color:#116329}.warn{background:#fff8c5;color:#7d4e00}.bad{background:#ffebe9;color:#a40e26}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eaeef2}\
th{color:#59636e;font-size:12px;font-weight:600}\
tr:last-child td{border-bottom:0}\
code{font:12.5px ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace}\
.state{display:inline-block;min-width:52px;text-align:center;padding:1px 8px;border-radius:10px;font-size:12px;\
font-weight:600}\
.state.up{background:#dafbe1;color:#116329}.state.learner{background:#fff8c5;color:#7d4e00}\
.state.evicted{background:#ffebe9;color:#a40e26}\
.lagging{color:#9a6700}.muted{color:#6e7781}.error{color:#a40e26}\
p{margin:4px 0}ul{margin:4px 0;padding-left:20px}li{margin:2px 0}.when{font-weight:600}";

/// The cluster as a terminal table: per service a header line, a line per member (id,
/// address, state, lag, root prefix), the last anti-entropy round and the recent view
/// changes, newest first. `now_ms` is the clock for statuses that carry none.
pub fn render_text(cluster: &ClusterStatus, now_ms: u64) -> String {
    let mut out = String::new();
    for svc in &cluster.services {
        let (_, summary) = verdict(svc.status.as_ref());
        let Some(s) = &svc.status else {
            let _ = writeln!(out, "{}: {}", svc.service, svc.error.as_deref().unwrap_or("no answer"));
            out.push('\n');
            continue;
        };
        let now = clock(s, now_ms);
        let _ = writeln!(out, "{}: view epoch {}, {summary} (coordinator {})", svc.service, s.epoch, s.coordinator);
        let width = s.members.iter().map(|m| m.addr.len()).max().unwrap_or(0).max("address".len());
        let _ = writeln!(out, "  {:<3} {:<width$}  {:<8} {:>4}  root", "id", "address", "state", "lag");
        for m in &s.members {
            let lag = m.lag_buckets.map_or("-".to_string(), |n| n.to_string());
            let root = m.root.as_deref().map_or("(no answer)", root_prefix);
            let _ = writeln!(out, "  {:<3} {:<width$}  {:<8} {lag:>4}  {root}", m.id, m.addr, state_name(m.state));
        }
        let _ = writeln!(out, "  anti-entropy: {}", round_sentence(s.anti_entropy.as_ref(), now, s.coordinator));
        let changes = change_lines(s, now);
        if changes.is_empty() {
            let _ = writeln!(out, "  view changes: {}", no_changes(s));
        } else {
            out.push_str("  view changes:\n");
            for (when, what, details) in changes {
                let _ = writeln!(out, "    {when}: {what} ({details})");
            }
        }
        out.push('\n');
    }
    out
}

/// `s` with the characters HTML gives a meaning escaped, for text and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;

    #[test]
    fn ago_as_a_person_says_it() {
        let cases = [
            (0, "just now"),
            (999, "just now"),
            (1_000, "1 s ago"),
            (12_400, "12 s ago"),
            (59_999, "59 s ago"),
            (60_000, "1 min ago"),
            (3 * 60_000 + 59_000, "3 min ago"),
            (3_599_999, "59 min ago"),
            (3_600_000, "1 h ago"),
            (2 * 3_600_000 + 1, "2 h ago"),
            (86_399_999, "23 h ago"),
            (86_400_000, "1 d ago"),
            (4 * 86_400_000 + 5, "4 d ago"),
        ];
        for (ms, want) in cases {
            assert_eq!(ago(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn durations() {
        let cases = [(0, "0 ms"), (35, "35 ms"), (999, "999 ms"), (1000, "1.0 s"), (1250, "1.2 s"), (61_000, "61.0 s")];
        for (ms, want) in cases {
            assert_eq!(took(ms), want);
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    fn member(id: u32, state: MemberState, root: Option<&str>, lag: Option<u32>) -> MemberStatus {
        MemberStatus { id, addr: format!("127.0.0.1:910{id}"), state, root: root.map(str::to_string), lag_buckets: lag }
    }

    /// Order with a replica evicted and re-joining, payment unreachable, stock in agreement.
    fn cluster() -> ClusterStatus {
        let root = "ab".repeat(32);
        let order = Status {
            service: Service::Order,
            coordinator: 0,
            epoch: 5,
            now_ms: NOW,
            members: vec![
                member(0, MemberState::Up, Some(&root), Some(0)),
                member(1, MemberState::Up, Some(&root), Some(0)),
                member(2, MemberState::Learner, Some(&"cd".repeat(32)), Some(3)),
            ],
            anti_entropy: Some(RoundReport {
                reason: "re-join of replica 2".into(),
                started_ms: NOW - 12_000,
                took_ms: 35,
                epoch: 5,
                divergent_buckets: vec![1, 2, 3],
                listed: vec![1, 2, 3],
                repaired: 4,
                differing_replicas: vec![2],
                complete: true,
                ..RoundReport::default()
            }),
            view_changes: vec![
                ViewChange {
                    epoch: 4,
                    from_epoch: 3,
                    what: "evict replica 2".into(),
                    source: ViewSource::Chosen,
                    reason: Some("evict replica 2 (no answer)".into()),
                    at_ms: NOW - 180_000,
                },
                ViewChange {
                    epoch: 5,
                    from_epoch: 4,
                    what: "add replica 2 as a learner".into(),
                    source: ViewSource::Adopted,
                    reason: None,
                    at_ms: NOW - 20_000,
                },
            ],
        };
        let stock = Status {
            service: Service::Stock,
            coordinator: 1,
            epoch: 1,
            // A status from a build without a clock: read against the page's.
            now_ms: 0,
            members: (0..3).map(|id| member(id, MemberState::Up, Some("<ef>"), Some(0))).collect(),
            anti_entropy: None,
            view_changes: vec![],
        };
        ClusterStatus {
            services: vec![
                ServiceStatus { service: Service::Order, status: Some(order), error: None },
                ServiceStatus {
                    service: Service::Payment,
                    status: None,
                    error: Some("no coordinator answered (127.0.0.1:9210: connection refused)".into()),
                },
                ServiceStatus { service: Service::Stock, status: Some(stock), error: None },
            ],
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(cluster()).unwrap();
        let services = v["services"].as_array().unwrap();
        let names: Vec<&str> = services.iter().map(|s| s["service"].as_str().unwrap()).collect();
        assert_eq!(names, ["order", "payment", "stock"]);
        assert_eq!(services[0]["status"]["epoch"], 5);
        assert_eq!(services[0]["error"], serde_json::Value::Null);
        assert_eq!(services[1]["status"], serde_json::Value::Null);
        assert!(services[1]["error"].as_str().unwrap().contains("connection refused"));
        assert_eq!(serde_json::from_value::<ClusterStatus>(v).unwrap(), cluster());
    }

    #[test]
    fn html_page() {
        let page = render_html(&cluster(), (Service::Order, 0), NOW + 3_000);
        let has = |s: &str| assert!(page.contains(s), "{s} in:\n{page}");
        has("<meta http-equiv=\"refresh\" content=\"5\">");
        has("<title>webshop cluster status</title>");
        has("as order coordinator 0 sees it");
        for name in ["order", "payment", "stock"] {
            has(&format!("<section class=\"service\" id=\"{name}\" data-service=\"{name}\">"));
        }
        // Members: state, root shortened with the whole of it in the title, lag.
        has("<tr class=\"member\" data-replica=\"2\" data-state=\"learner\">");
        has("<span class=\"state learner\">learner</span>");
        has(&format!("<code class=\"root\" title=\"{}\">abababababab</code>", "ab".repeat(32)));
        has("<b class=\"lagging\">3 buckets</b>");
        has("<span class=\"badge warn\">2 of 3 up, roots differ</span>");
        // Times relative to each status's own clock.
        has("12 s ago (re-join of replica 2), took 35 ms, under view 5, complete: 3 divergent buckets");
        has(
            "<span class=\"when\">3 min ago</span>: evict replica 2 <span class=\"muted\">(epoch 4, by coordinator 0: \
             evict replica 2 (no answer))</span>",
        );
        has(
            "<span class=\"when\">20 s ago</span>: add replica 2 as a learner <span class=\"muted\">(epoch 5, learned \
             from a replica)</span>",
        );
        assert!(page.find("20 s ago").unwrap() < page.find("3 min ago").unwrap(), "newest first");
        // An unreachable service says why; a service in agreement says so.
        has("<span class=\"badge bad\">unreachable</span>");
        has("127.0.0.1:9210: connection refused");
        has("<span class=\"badge ok\">3 of 3 up, one root</span>");
        has("none on coordinator 1 yet");
        has("none since coordinator 1 started");
        // Escaped, self-contained.
        has("title=\"&lt;ef&gt;\"");
        assert!(!page.contains("<ef>"), "escaped: {page}");
        assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "{page}");
    }

    #[test]
    fn text_table() {
        let text = render_text(&cluster(), NOW + 3_000);
        let want = "\
order: view epoch 5, 2 of 3 up, roots differ (coordinator 0)
  id  address         state     lag  root
  0   127.0.0.1:9100  up          0  abababababab
  1   127.0.0.1:9101  up          0  abababababab
  2   127.0.0.1:9102  learner     3  cdcdcdcdcdcd
  anti-entropy: 12 s ago (re-join of replica 2), took 35 ms, under view 5, complete: 3 divergent buckets (3 \
listed, 0 in flux), 4 documents repaired, 0 left for the next round; replicas differing: 2
  view changes:
    20 s ago: add replica 2 as a learner (epoch 5, learned from a replica)
    3 min ago: evict replica 2 (epoch 4, by coordinator 0: evict replica 2 (no answer))

payment: no coordinator answered (127.0.0.1:9210: connection refused)

stock: view epoch 1, 3 of 3 up, one root (coordinator 1)
  id  address         state     lag  root
  0   127.0.0.1:9100  up          0  <ef>
  1   127.0.0.1:9101  up          0  <ef>
  2   127.0.0.1:9102  up          0  <ef>
  anti-entropy: none on coordinator 1 yet (rounds run on the service's lowest-id live coordinator)
  view changes: none since coordinator 1 started

";
        assert_eq!(text, want, "got:\n{text}");
    }

    #[test]
    fn the_details_of_a_change() {
        let c = ViewChange {
            epoch: 7,
            from_epoch: 1,
            what: "adopted epoch 7 from a replica".into(),
            source: ViewSource::Adopted,
            reason: None,
            at_ms: 0,
        };
        assert_eq!(change_details(&c, 0), "epochs 1 to 7");
        let c = ViewChange { what: "evict replica 1".into(), ..c };
        assert_eq!(change_details(&c, 0), "epochs 1 to 7, learned from a replica");
        let c = ViewChange { from_epoch: 6, source: ViewSource::Chosen, reason: Some("evict replica 1".into()), ..c };
        assert_eq!(change_details(&c, 2), "epoch 7, by coordinator 2", "a reason that says nothing more");
        let c = ViewChange { reason: Some("evict replica 1 (no answer)".into()), ..c };
        assert_eq!(change_details(&c, 2), "epoch 7, by coordinator 2: evict replica 1 (no answer)");
    }
}
