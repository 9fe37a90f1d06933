//! `/admin/status`: the view this coordinator routes by and each replica's state and digest
//! root, as JSON for tools and as an HTML page for a person. Readable without the secret:
//! it shows no data, only membership and hashes.

use crate::antientropy::RoundReport;
use crate::state::Coordinator;
use crate::view::member_state;
use common::topology::Service;
use common::wire::MemberState;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest wait for a replica's digest root: the page must come back even when a replica
/// hangs, and a healthy replica answers from memory in milliseconds.
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Seconds after which the HTML page reloads itself, so a person watching a failover sees it.
pub const HTML_REFRESH_SECS: u32 = 5;

/// The status of one coordinator's service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The service.
    pub service: Service,
    /// This coordinator's id.
    pub coordinator: u32,
    /// The epoch of the view it routes by.
    pub epoch: u64,
    /// Every configured replica, in id order.
    pub members: Vec<MemberStatus>,
    /// The last anti-entropy round this coordinator ran (`null` before its first, and on
    /// coordinators that do not lead).
    pub anti_entropy: Option<RoundReport>,
}

/// One replica as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Replica id.
    pub id: u32,
    /// Its address (`host:port`).
    pub addr: String,
    /// Its state in the view.
    pub state: MemberState,
    /// Its digest root (hex), or `None` if it did not answer.
    pub root: Option<String>,
}

/// The reply of a replica's `GET /internal/digest`.
#[derive(Deserialize)]
struct Digest {
    /// The root over its buckets, hex.
    root: String,
}

/// Collects the status: the current view, and every replica's digest root, asked concurrently.
pub async fn gather(c: &Coordinator) -> Status {
    let view = c.view.get();
    let asks = c.replica_addrs.iter().enumerate().map(|(id, addr)| {
        let view = &view;
        async move {
            let id = id as u32;
            let root = match c.forwarder.get_internal(id, "/internal/digest", DIGEST_TIMEOUT).await {
                Ok(r) if r.status == 200 => serde_json::from_slice::<Digest>(&r.body).ok().map(|d| d.root),
                _ => None,
            };
            MemberStatus { id, addr: addr.clone(), state: member_state(view, id), root }
        }
    });
    let members = futures::future::join_all(asks).await;
    let anti_entropy = c.last_round.lock().unwrap().clone();
    Status { service: c.service, coordinator: c.id, epoch: view.epoch, members, anti_entropy }
}

/// Whether the client asked for the HTML page: `Accept: text/html` or `?format=html`.
pub fn wants_html(accept: Option<&str>, query: &str) -> bool {
    accept.is_some_and(|a| a.contains("text/html")) || query.split('&').any(|p| p == "format=html")
}

/// The status as a small self-contained HTML page.
pub fn render_html(s: &Status) -> String {
    let title = format!("{} coordinator {}", s.service, s.coordinator);
    let mut rows = String::new();
    for m in &s.members {
        let state = match m.state {
            MemberState::Up => "up",
            MemberState::Learner => "learner",
            MemberState::Evicted => "evicted",
        };
        let root = m.root.as_deref().map(escape).unwrap_or_else(|| "<em>no answer</em>".into());
        rows.push_str(&format!(
            "<tr class=\"{state}\"><td>{}</td><td>{}</td><td>{state}</td><td><code>{root}</code></td></tr>\n",
            m.id,
            escape(&m.addr)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"{HTML_REFRESH_SECS}\"><title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}\
         .up{{background:#e8f6e8}}.learner{{background:#fdf6dc}}.evicted{{background:#f9e0e0}}\
         </style></head>\n<body><h1>{title}</h1>\n<p>View epoch <b>{}</b></p>\n\
         <table><tr><th>replica</th><th>address</th><th>state</th><th>digest root</th></tr>\n{rows}</table>\n\
         <h2>Last anti-entropy round</h2>\n{}</body></html>\n",
        s.epoch,
        round_html(s.anti_entropy.as_ref())
    )
}

fn round_html(r: Option<&RoundReport>) -> String {
    let Some(r) = r else {
        return "<p>none yet on this coordinator</p>\n".into();
    };
    format!(
        "<p>{} ({}): started at {} ms since the epoch, took {} ms, under view {}; replicas differing: {:?}; \
         divergent buckets: {} ({} listed, {} in flux); documents repaired: {}; left for the next round: {}</p>\n",
        escape(&r.reason),
        if r.complete { "complete" } else { "partial" },
        r.started_ms,
        r.took_ms,
        r.epoch,
        r.differing_replicas,
        r.divergent_buckets.len(),
        r.listed.len(),
        r.in_flux.len(),
        r.repaired,
        r.deferred
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            service: Service::Stock,
            coordinator: 1,
            epoch: 7,
            members: vec![
                MemberStatus { id: 0, addr: "a:1".into(), state: MemberState::Up, root: Some("ab12".into()) },
                MemberStatus { id: 1, addr: "<b>".into(), state: MemberState::Evicted, root: None },
            ],
            anti_entropy: None,
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(status()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": "stock", "coordinator": 1, "epoch": 7, "members": [
                {"id": 0, "addr": "a:1", "state": "up", "root": "ab12"},
                {"id": 1, "addr": "<b>", "state": "evicted", "root": null},
            ], "anti_entropy": null})
        );
    }

    #[test]
    fn html_page() {
        let page = render_html(&status());
        assert!(page.contains("<title>stock coordinator 1</title>"), "{page}");
        assert!(page.contains("<td>evicted</td>") && page.contains("ab12") && page.contains("no answer"), "{page}");
        assert!(page.contains("&lt;b&gt;") && !page.contains("<b></td>"), "addresses are escaped: {page}");
    }

    #[test]
    fn html_is_asked_for() {
        assert!(wants_html(Some("text/html,application/xhtml+xml"), ""));
        assert!(wants_html(None, "x=1&format=html"));
        assert!(!wants_html(Some("application/json"), "format=json"));
        assert!(!wants_html(None, ""));
    }
}
