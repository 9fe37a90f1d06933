//! `loadgen`, the load generator: locust-style virtual users (users, spawn rate, weighted
//! scenarios, run time, or a fixed iteration rate) that drive the public API over one
//! HTTP/1.1 keep-alive connection each, all on one thread, so that one core generates
//! tens of thousands of requests per second and the other cores stay with the cluster.
//!
//! - `cli`: the command line; `scenario`: what users do (pure); `runner`: the users;
//! - `http`: a user's connection; `stats`: histograms and the timeline;
//! - `report`: the JSON layout and the text summary; `chart`: the PNG;
//! - `ceiling`: nginx answering directly, the gateway's bound; `procs`: the cluster's CPU.
//!
//! The README's "Load tests" section and docs/performance.md show how it is used.

pub mod ceiling;
pub mod chart;
pub mod cli;
pub mod http;
pub mod procs;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;

use anyhow::{anyhow, Context};
use report::{InitCall, Machine, Report, RunReport, Settings};
use runner::RunSpec;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bound on one batch_init call: 100k keys are meant to take at most 5 s; a debug build
/// on a busy machine may take many times that.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(100);

/// `host:port` and the socket address of an `http://host[:port]` URL.
pub fn resolve(url: &str) -> anyhow::Result<(String, SocketAddr)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("--host must be an http:// URL: {url}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(anyhow!("no host in {url}"));
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port} resolves to nothing"))?;
    Ok((authority.to_string(), addr))
}

/// Posts the three batch_init calls of `keys`, in order, timing each.
pub fn init(addr: SocketAddr, host: &str, keys: &scenario::Keys) -> anyhow::Result<Vec<InitCall>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut conn = http::Conn::new(addr, host, INIT_TIMEOUT);
        let mut calls = Vec::new();
        for path in keys.init_paths() {
            let t0 = Instant::now();
            let (status, body) =
                conn.send(false, path.clone()).await.map_err(|f| anyhow!("POST {path}: {}", f.key()))?;
            let seconds = t0.elapsed().as_secs_f64();
            if status != 200 {
                return Err(anyhow!("POST {path}: {status} {}", String::from_utf8_lossy(&body)));
            }
            calls.push(InitCall { path, status, seconds });
        }
        Ok(calls)
    })
}

fn spec(
    args: &cli::Args,
    seed: u64,
    target: String,
    host: String,
    addr: SocketAddr,
    lenient: bool,
) -> anyhow::Result<RunSpec> {
    Ok(RunSpec {
        target,
        addr,
        host,
        users: args.users,
        spawn_rate: args.spawn_rate,
        run_time: args.run_time,
        rate: args.rate,
        wait: args.wait,
        scenarios: args.validate().map_err(|e| anyhow!(e))?,
        timeout: args.timeout,
        max_requests: args.max_requests,
        seed,
        keys: args.keys(),
        interval: args.interval,
        lenient,
        manifest: (!lenient && args.manifest.exists()).then(|| args.manifest.clone()),
        progress: !args.quiet,
    })
}

/// Everything `loadgen` does apart from printing: init, the run, the ceiling, and the JSON
/// and chart files.
pub fn run(args: &cli::Args) -> anyhow::Result<Report> {
    let scenarios = args.validate().map_err(|e| anyhow!(e))?;
    let seed = args.seed();
    let settings = Settings {
        host: args.host.clone(),
        users: args.users,
        spawn_rate: args.spawn_rate,
        run_time_s: args.run_time.as_secs_f64(),
        rate: args.rate,
        wait_s: args.wait.map(|(a, b)| (a.as_secs_f64(), b.as_secs_f64())),
        scenarios: scenarios.items().iter().map(|(s, w)| (s.name().to_string(), *w)).collect(),
        timeout_s: args.timeout.as_secs_f64(),
        max_requests: args.max_requests,
        seed,
        keys: args.keys(),
    };
    let mut report = Report {
        schema: report::SCHEMA,
        machine: Machine::detect(),
        settings,
        init: vec![],
        run: None,
        ceiling: None,
        ceiling_ratio: None,
    };
    if !args.ceiling_only {
        let (host, addr) = resolve(&args.host)?;
        if args.init {
            if !args.quiet {
                eprintln!("init: the three batch_init calls");
            }
            report.init = init(addr, &host, &args.keys())?;
        }
        if !args.quiet {
            eprintln!("run: {} users against {} for {:?}", args.users, args.host, args.run_time);
        }
        report.run = Some(runner::run(spec(args, seed, args.host.clone(), host, addr, false)?)?);
    }
    if args.ceiling || args.ceiling_only {
        let c = ceiling::Ceiling::start()?;
        if !args.quiet {
            eprintln!("ceiling: the same load against nginx answering directly at {}", c.url());
        }
        let mut s = spec(args, seed, c.url(), c.addr.to_string(), c.addr, true)?;
        s.run_time = args.ceiling_time.unwrap_or(args.run_time);
        report.ceiling = Some(runner::run(s)?);
    }
    if let (Some(r), Some(c)) = (&report.run, &report.ceiling) {
        if c.throughput > 0.0 {
            report.ceiling_ratio = Some(r.throughput / c.throughput);
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        let (title, run): (String, &RunReport) = match (&report.run, &report.ceiling) {
            (Some(r), _) => (chart_title(&report, r), r),
            (None, Some(c)) => (format!("gateway ceiling: {}", chart_title(&report, c)), c),
            (None, None) => return Err(anyhow!("nothing ran to chart")),
        };
        chart::draw(path, &title, run)?;
    }
    Ok(report)
}

fn chart_title(report: &Report, run: &RunReport) -> String {
    let s = &report.settings;
    let scenarios: Vec<String> = s.scenarios.iter().map(|(n, w)| format!("{n}:{w}")).collect();
    let model = match s.rate {
        Some(r) => format!("{r:.0} iterations/s"),
        None => format!("{} users", s.users),
    };
    format!(
        "{} — {}, {model}, {} cores ({} requests, {} errors)",
        run.target,
        scenarios.join(" "),
        report.machine.nproc,
        run.requests,
        run.errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_urls() {
        let (host, addr) = resolve("http://127.0.0.1:8000").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("127.0.0.1:8000", 8000));
        let (host, addr) = resolve("http://127.0.0.1/").unwrap();
        assert_eq!((host.as_str(), addr.port()), ("127.0.0.1", 80));
        assert!(resolve("https://127.0.0.1").is_err());
        assert!(resolve("http://").is_err());
    }
}
