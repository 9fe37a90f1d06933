//! `cluster admin`: an operator's actions on a cluster that `cluster up` (or the launcher's
//! [`crate::Cluster::start`]) runs, without digging for addresses or the secret.
//!
//! The launcher writes the topology it runs (`topology.toml`, with the gateway port it was
//! given) and the cluster secret (`secret`, mode 0600, a new one each start) into its folder
//! (`target/cluster` by default). `cluster admin` reads both from there, asks one coordinator
//! of a service and tries the next when one does not answer, and prints what the cluster
//! said in a few lines. The HTTP calls are the coordinators' admin endpoints (README,
//! "Operations"); the decisions (which coordinators, how to say the answer) are pure
//! functions, unit-tested here.

use crate::http::{self, Response};
use crate::launcher::SECRET_FILE;
use anyhow::{bail, Context};
use coordinator::antientropy::RoundReport;
use model::topology::{Service, Topology};
use model::wire::{View, SECRET};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait for the status page: it asks every replica, each with a one-second bound.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a view change: the coordinator tries up to 8 Paxos rounds of two phases,
/// each phase bounded by `paxos_timeout_ms` (3 s), so up to 48 s when replicas hang. Waiting
/// less would send the change to the next coordinator while the first one still makes it.
const VIEW_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for an anti-entropy round that repairs (bounded by its repair budget).
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print every service's members, states, roots, lag, last anti-entropy round and recent
    /// view changes (the status page as text).
    Status,
    /// Take a replica out of its service's view now (its keys move to the others). A
    /// replica that still answers is then re-admitted by the prober as every evicted one is:
    /// as a learner, caught up, promoted; so this forces a re-join.
    Evict(Service, u32),
    /// Run an anti-entropy round now, on one service or on every service.
    AntiEntropy(Option<Service>),
}

/// The running cluster as its launcher left it: topology and secret.
#[derive(Clone, Debug)]
pub struct Running {
    /// The topology it runs.
    pub topology: Topology,
    /// The cluster secret.
    pub secret: String,
}

impl Running {
    /// Reads the topology and the secret from the launcher's folder `work_dir`.
    pub fn load(work_dir: &Path) -> anyhow::Result<Running> {
        let not_running = || {
            format!("is a cluster running with its files in {}? (`cluster up` writes them there)", work_dir.display())
        };
        let topology_path = work_dir.join("topology.toml");
        let topology = Topology::load(&topology_path).with_context(not_running)?;
        let secret_path: PathBuf = work_dir.join(SECRET_FILE);
        let secret = std::fs::read_to_string(&secret_path)
            .with_context(|| format!("reading {}", secret_path.display()))
            .with_context(not_running)?
            .trim()
            .to_string();
        Ok(Running { topology, secret })
    }
}

/// One HTTP call for an action: to which coordinators, what request, how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The service the call is about (its answer is said under its name).
    pub service: Service,
    /// Whose coordinators are asked, first to last until one answers: the service's own, or
    /// for the status page (which any coordinator gathers) every service's, order's first.
    pub asked: Vec<Service>,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Whether the request carries the cluster secret (the changes do; the status does not).
    pub secret: bool,
    /// Bound on each attempt.
    pub timeout: Duration,
}

/// The calls `action` makes, in order.
pub fn calls(action: &Action) -> Vec<Call> {
    let call = |service, method, path: String, secret, timeout| Call {
        service,
        asked: vec![service],
        method,
        path,
        secret,
        timeout,
    };
    match *action {
        // Any coordinator gathers the whole cluster's status.
        Action::Status => vec![Call {
            asked: Service::ALL.to_vec(),
            ..call(Service::Order, "GET", "/admin/cluster?format=text".into(), false, STATUS_TIMEOUT)
        }],
        Action::Evict(s, id) => vec![call(s, "POST", format!("/admin/view/evict/{id}"), true, VIEW_TIMEOUT)],
        Action::AntiEntropy(one) => one
            .map(|s| vec![s])
            .unwrap_or(Service::ALL.to_vec())
            .into_iter()
            .map(|s| call(s, "POST", "/admin/anti-entropy".into(), true, ROUND_TIMEOUT))
            .collect(),
    }
}

/// Whether an answer ends the attempts: anything but a 5xx (a coordinator that failed, e.g.
/// one cut off from its replicas, leaves the call to the next one).
pub fn is_final(status: u16) -> bool {
    status < 500
}

/// Sends `call` to the coordinators `coordinators` in turn and returns the first final answer
/// ([`is_final`]); a coordinator that cannot be reached or fails is skipped. Fails, naming
/// each one's error, when none answers.
pub fn send(call: &Call, coordinators: &[String], secret: &str) -> anyhow::Result<Response> {
    let headers: Vec<(&str, &str)> = if call.secret { vec![(SECRET, secret)] } else { vec![] };
    let mut errors = Vec::new();
    let mut refused = 0;
    for addr in coordinators {
        match http::request(call.method, addr, &call.path, &headers, call.timeout) {
            Ok(r) if is_final(r.status) => return Ok(r),
            Ok(r) => errors.push(format!("{addr}: {} {}", r.status, r.body.trim())),
            Err(e) => {
                refused += usize::from(e.kind() == std::io::ErrorKind::ConnectionRefused);
                errors.push(format!("{addr}: {e}"))
            }
        }
    }
    let hint = if refused == coordinators.len() { "; is the cluster running?" } else { "" };
    let whose = call.asked.iter().map(|s| s.name()).collect::<Vec<_>>().join(" or ");
    bail!("no {whose} coordinator answered {} {} ({}){hint}", call.method, call.path, errors.join("; "))
}

/// What a person reads for one call's answer: the status text as it came, a view or a
/// round report in a line or two. A refusal (any status but 200) is an error that says what
/// the coordinator said.
pub fn describe(action: &Action, call: &Call, r: &Response) -> anyhow::Result<String> {
    if r.status != 200 {
        bail!("{} {} answered {}: {}", call.service, call.path, r.status, r.body.trim());
    }
    Ok(match action {
        Action::Status => r.body.clone(),
        Action::Evict(_, id) => {
            let view: View = serde_json::from_str(&r.body).with_context(|| format!("a view, not {}", r.body))?;
            // The coordinator answers the view it routes by, also when it made no change.
            if view.members.contains(id) || view.learners.contains(id) {
                bail!(
                    "{}: replica {id} is still in the view ({}): an eviction that would leave fewer \
                     than a majority of the replicas as full members is not made",
                    call.service,
                    describe_view(&view)
                );
            }
            format!("{}: {}\n", call.service, describe_view(&view))
        }
        Action::AntiEntropy(_) => {
            let report: RoundReport =
                serde_json::from_str(&r.body).with_context(|| format!("a round report, not {}", r.body))?;
            format!("{}: {}\n", call.service, describe_round(&report))
        }
    })
}

/// A view in words: `view 5: members 0, 1; learners 2`.
pub fn describe_view(v: &View) -> String {
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    format!("view {}: members {}; learners {}", v.epoch, list(&v.members), list(&v.learners))
}

/// A round report in words.
pub fn describe_round(r: &RoundReport) -> String {
    let differing = if r.differing_replicas.is_empty() {
        "all replicas agree".to_string()
    } else {
        format!("replicas {:?} differed", r.differing_replicas)
    };
    format!(
        "{} round in {} ms under view {}: {differing}; {} divergent buckets, {} documents repaired{}",
        if r.complete { "complete" } else { "partial" },
        r.took_ms,
        r.epoch,
        r.divergent_buckets.len(),
        r.repaired,
        if r.unanswered.is_empty() { String::new() } else { format!("; replicas {:?} did not answer", r.unanswered) }
    )
}

/// What an action printed, and what failed of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The answers, in words, one service after the other.
    pub out: String,
    /// The calls that failed, each in a line (the others still ran).
    pub errors: Vec<String>,
}

/// Runs `action` against the cluster whose launcher folder is `work_dir`. Fails before any
/// call when there is no cluster there or the replica is not in the topology; otherwise runs
/// every call and reports each failure.
pub fn run(work_dir: &Path, action: &Action) -> anyhow::Result<Report> {
    let running = Running::load(work_dir)?;
    if let Action::Evict(s, id) = *action {
        let n = running.topology.nodes(s).replicas.len();
        if id as usize >= n {
            bail!("{s} has replicas 0 to {} (the topology in {})", n.saturating_sub(1), work_dir.display());
        }
    }
    let mut report = Report::default();
    for call in calls(action) {
        let coordinators: Vec<String> =
            call.asked.iter().flat_map(|&s| running.topology.nodes(s).coordinators.iter().cloned()).collect();
        match send(&call, &coordinators, &running.secret).and_then(|r| describe(action, &call, &r)) {
            Ok(text) => report.out.push_str(&text),
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: vec![], body: body.into() }
    }

    #[test]
    fn each_action_asks_the_right_coordinators_with_or_without_the_secret() {
        let status = calls(&Action::Status);
        assert_eq!(status.len(), 1);
        assert_eq!(
            (status[0].method, status[0].path.as_str(), status[0].secret),
            ("GET", "/admin/cluster?format=text", false)
        );

        assert_eq!(status[0].asked, Service::ALL.to_vec(), "any coordinator gathers the page");

        let evict = calls(&Action::Evict(Service::Stock, 2));
        assert_eq!(evict.len(), 1);
        assert_eq!((evict[0].service, evict[0].asked.as_slice()), (Service::Stock, &[Service::Stock][..]));
        assert_eq!((evict[0].method, evict[0].path.as_str(), evict[0].secret), ("POST", "/admin/view/evict/2", true));

        let all = calls(&Action::AntiEntropy(None));
        assert_eq!(all.iter().map(|c| c.service).collect::<Vec<_>>(), Service::ALL.to_vec());
        assert!(all.iter().all(|c| c.secret && c.method == "POST" && c.path == "/admin/anti-entropy"));
        let one = calls(&Action::AntiEntropy(Some(Service::Payment)));
        assert_eq!(one.iter().map(|c| c.service).collect::<Vec<_>>(), vec![Service::Payment]);
    }

    #[test]
    fn answers_are_said_in_words_and_refusals_are_errors() {
        let evict = Action::Evict(Service::Order, 2);
        let call = &calls(&evict)[0];
        let view = r#"{"epoch":5,"members":[0,1],"learners":[]}"#;
        assert_eq!(
            describe(&evict, call, &response(200, view)).unwrap(),
            "order: view 5: members 0, 1; learners none\n"
        );
        let kept = describe(&evict, call, &response(200, r#"{"epoch":5,"members":[0,1,2],"learners":[]}"#));
        let kept = format!("{}", kept.unwrap_err());
        assert!(kept.contains("replica 2 is still in the view"), "a refused eviction is an error: {kept}");
        let refused = describe(&evict, call, &response(403, "missing or wrong cluster secret")).unwrap_err();
        assert!(format!("{refused}").contains("403: missing or wrong cluster secret"), "{refused}");
        assert!(describe(&evict, call, &response(200, "not json")).is_err());

        let status = Action::Status;
        assert_eq!(
            describe(&status, &calls(&status)[0], &response(200, "order\n  0 up\n")).unwrap(),
            "order\n  0 up\n"
        );
    }

    #[test]
    fn a_round_report_in_words() {
        let mut r: RoundReport = serde_json::from_value(serde_json::json!({
            "reason": "requested", "started_ms": 1, "took_ms": 12, "epoch": 3, "roots": {},
            "differing_replicas": [], "divergent_buckets": [], "listed": [], "unanswered": [],
            "repaired": 0, "planned": {}, "deferred": 0, "complete": true
        }))
        .unwrap();
        assert_eq!(
            describe_round(&r),
            "complete round in 12 ms under view 3: all replicas agree; 0 divergent buckets, 0 documents repaired"
        );
        r.complete = false;
        r.differing_replicas = vec![2];
        r.divergent_buckets = vec![4, 9];
        r.repaired = 3;
        r.unanswered = vec![1];
        assert_eq!(
            describe_round(&r),
            "partial round in 12 ms under view 3: replicas [2] differed; 2 divergent buckets, 3 documents repaired; \
             replicas [1] did not answer"
        );
    }

    #[test]
    fn a_folder_without_a_running_cluster_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", Running::load(dir.path()).unwrap_err());
        assert!(err.contains("is a cluster running"), "{err}");
    }

    #[test]
    fn no_coordinator_answering_names_each_one() {
        // Ports that refuse: bound, then closed.
        let addrs: Vec<String> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string())
            .collect();
        let call = &calls(&Action::Evict(Service::Stock, 0))[0];
        let err = format!("{}", send(call, &addrs, "s").unwrap_err());
        assert!(err.starts_with("no stock coordinator answered POST /admin/view/evict/0"), "{err}");
        assert!(addrs.iter().all(|a| err.contains(a.as_str())), "{err}");
        assert!(err.ends_with("is the cluster running?"), "{err}");
    }

    #[test]
    fn a_failed_coordinator_leaves_the_call_to_the_next() {
        assert!(is_final(200) && is_final(400) && is_final(403) && is_final(404));
        assert!(!is_final(500) && !is_final(503));
        // Two stand-in coordinators: the first fails, the second answers.
        let serve = |status: &'static str| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap().to_string();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let body = r#"{"epoch":3,"members":[0,1],"learners":[]}"#;
                let _ =
                    write!(c, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            });
            addr
        };
        let addrs = vec![serve("503 Service Unavailable"), serve("200 OK")];
        let call = &calls(&Action::Evict(Service::Stock, 2))[0];
        let r = send(call, &addrs, "s").unwrap();
        assert_eq!(r.status, 200, "the second coordinator's answer");
    }
}
