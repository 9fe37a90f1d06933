//! The command line of `loadgen`, named after locust's options where locust has one
//! (`--host`, `-u/--users`, `-r/--spawn-rate`, `-t/--run-time`), and its validation into
//! run settings.

use super::scenario::{parse_weighted, Keys, Scenario, Weighted};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Longest request timeout accepted: below the histograms' bound (`stats::HIST_MAX_US`),
/// and far above the gateway's own 65 s.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100);

/// A load generator for the webshop's public API: virtual users on keep-alive connections
/// running weighted scenarios for a bounded time and number of requests.
#[derive(Clone, Debug, Parser)]
#[command(name = "loadgen", version, about)]
pub struct Args {
    /// Base URL of the target (the gateway).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub host: String,
    /// Virtual users: each has one keep-alive connection and one request in flight.
    #[arg(short = 'u', long, default_value_t = 64)]
    pub users: usize,
    /// Users started per second (0: all at once).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    pub spawn_rate: f64,
    /// Length of the run, spawn ramp included: `30`, `30s`, `2m`, `1h`.
    #[arg(short = 't', long, default_value = "30s", value_parser = parse_duration)]
    pub run_time: Duration,
    /// Open model: start this many scenario iterations per second over all users, instead
    /// of each user starting its next one when the last ended.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed model: wait between a user's iterations, `SECS` or `MIN,MAX` (locust's
    /// `between`); none by default.
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<(Duration, Duration)>,
    /// A scenario and its weight, `NAME[:WEIGHT]`, repeatable: checkout (random
    /// batch-initialised orders), find_stock, mixed (a shopper's whole journey).
    #[arg(short = 's', long = "scenario", value_parser = parse_weighted, default_value = "checkout")]
    pub scenarios: Vec<(Scenario, u32)>,
    /// Run the course's three batch_init calls before the load (timed and reported).
    #[arg(long)]
    pub init: bool,
    /// Batch users "0".."N-1" (what --init writes and the scenarios draw from).
    #[arg(long, default_value_t = 100_000)]
    pub batch_users: u64,
    /// Batch items "0".."N-1".
    #[arg(long, default_value_t = 100_000)]
    pub batch_items: u64,
    /// Batch orders "0".."N-1".
    #[arg(long, default_value_t = 100_000)]
    pub batch_orders: u64,
    /// Starting credit of each batch user.
    #[arg(long, default_value_t = 1_000_000)]
    pub credit: u64,
    /// Starting stock of each batch item.
    #[arg(long, default_value_t = 1_000_000)]
    pub stock: u64,
    /// Price of each batch item.
    #[arg(long, default_value_t = 1)]
    pub price: u64,
    /// Bound on one request, in seconds (connecting included).
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Bound on the requests of one run: the run stops when it is reached.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_requests: u64,
    /// Seed of the users' random choices (default: a new one each run, so that a second run
    /// does not repeat the first one's orders; the report records it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Length of a timeline interval (a point of the chart), in seconds.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,
    /// Also load nginx answering directly (no upstream) with the same settings, and print
    /// the ratio of the two throughputs.
    #[arg(long)]
    pub ceiling: bool,
    /// Only measure the gateway ceiling (no target needed).
    #[arg(long)]
    pub ceiling_only: bool,
    /// Run time of the ceiling run (default: the run time).
    #[arg(long, value_parser = parse_duration)]
    pub ceiling_time: Option<Duration>,
    /// The cluster's manifest, to report its processes' CPU and memory.
    #[arg(long, default_value = "target/cluster/manifest.json")]
    pub manifest: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the throughput and latency chart here (PNG).
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// No progress line per interval.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Exit with status 0 even if some requests failed (by default, like locust, any
    /// failure makes the exit status 1).
    #[arg(long)]
    pub allow_errors: bool,
}

/// Parses `30`, `30s`, `1.5s`, `250ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `SECS` or `MIN,MAX`.
pub fn parse_wait(s: &str) -> Result<(Duration, Duration), String> {
    match s.split_once(',') {
        Some((a, b)) => {
            let (a, b) = (parse_duration(a)?, parse_duration(b)?);
            if b < a {
                return Err(format!("wait {s:?}: MAX is below MIN"));
            }
            Ok((a, b))
        }
        None => parse_duration(s).map(|d| (d, d)),
    }
}

impl Args {
    /// The seed: the one given, else one from the clock.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            t.as_nanos() as u64
        })
    }

    /// The key space of the batch calls.
    pub fn keys(&self) -> Keys {
        Keys {
            users: self.batch_users,
            items: self.batch_items,
            orders: self.batch_orders,
            credit: self.credit,
            stock: self.stock,
            price: self.price,
        }
    }

    /// The scenario choice; an error for settings that cannot run.
    pub fn validate(&self) -> Result<Weighted<Scenario>, String> {
        if self.users == 0 {
            return Err("--users must be at least 1".into());
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(format!("--timeout must be above 0 and at most {} s", MAX_TIMEOUT.as_secs()));
        }
        if self.interval < Duration::from_millis(100) {
            return Err("--interval must be at least 0.1 s".into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be above 0".into());
            }
            if self.wait.is_some() {
                return Err("--wait belongs to the closed model; --rate sets the pace itself".into());
            }
        }
        if !(self.spawn_rate >= 0.0 && self.spawn_rate.is_finite()) {
            return Err("--spawn-rate must be 0 or above".into());
        }
        if self.batch_items == 0 || self.batch_orders == 0 || self.batch_users == 0 {
            return Err("--batch-users, --batch-items and --batch-orders must be at least 1".into());
        }
        Weighted::new(self.scenarios.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("3d").is_err());
        assert_eq!(parse_wait("1"), Ok((Duration::from_secs(1), Duration::from_secs(1))));
        assert_eq!(parse_wait("0.5,2"), Ok((Duration::from_millis(500), Duration::from_secs(2))));
        assert!(parse_wait("2,1").is_err());
    }

    #[test]
    fn validates_settings() {
        let a = Args::parse_from(["loadgen", "-u", "8", "-s", "checkout:3", "-s", "mixed"]);
        let w = a.validate().unwrap();
        assert_eq!(w.total(), 4);
        assert_eq!(a.keys().init_paths()[0], "/payment/batch_init/100000/1000000");
        assert!(Args::parse_from(["loadgen", "-u", "0"]).validate().is_err());
        assert!(Args::parse_from(["loadgen", "--rate", "100", "--wait", "1"]).validate().is_err());
        assert!(Args::parse_from(["loadgen", "-s", "checkout:0"]).validate().is_err());
        assert!(Args::parse_from(["loadgen", "--timeout", "1000"]).validate().is_err());
    }
}
