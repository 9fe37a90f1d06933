//! Counting what comes back: per endpoint an HdrHistogram of latencies, answers by status,
//! transport failures, checkout outcomes; and a timeline of fixed intervals (throughput and
//! latency percentiles per interval) for the chart. One `Recorder` per run, owned by the
//! run's single thread, so recording a request is a few histogram increments, no lock.

use super::report::{CheckoutCounts, EndpointReport, IntervalReport, Latency};
use super::scenario::Endpoint;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Largest latency the histograms hold, in microseconds: above the longest request timeout
/// allowed (`cli::MAX_TIMEOUT`); a larger value is recorded as this.
pub const HIST_MAX_US: u64 = 120_000_000;
/// Significant digits of the whole-run histograms: 0.1% resolution (what HdrHistogram users
/// normally pick; wrk2 uses the same).
const SIGFIG: u8 = 3;
/// Significant digits of the per-interval histograms: 1% is plenty for a chart, and they are
/// ten times smaller.
const INTERVAL_SIGFIG: u8 = 2;

/// The checkout reply of an order checked out now (the order service's `saga::SUCCESS`).
pub const CHECKOUT_SUCCESS: &[u8] = b"Checkout successful";
/// The checkout reply of an order that was already paid (`saga::ALREADY_PAID`).
pub const CHECKOUT_ALREADY_PAID: &[u8] = b"Order is already paid";

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// An HTTP answer outside 2xx.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection failed or closed before the answer was complete.
    Io,
    /// A 2xx answer whose body is not what the API promises (e.g. no id in a create reply,
    /// or an order that is not paid right after its successful checkout).
    BadBody,
}

impl Failure {
    /// The key the reports count it under: the status code, or the failure's name.
    pub fn key(self) -> String {
        match self {
            Failure::Status(s) => s.to_string(),
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Io => "io".into(),
            Failure::BadBody => "bad_body".into(),
        }
    }
}

/// What a checkout's answer says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// 200 "Checkout successful": the order was paid by this request.
    FirstTime,
    /// 200 "Order is already paid": an earlier checkout had paid it; nothing charged.
    AlreadyPaid,
    /// 400: refused (not enough stock or credit, unknown order or user).
    Rejected,
    /// Anything else: another status, or a 200 with another body.
    Other,
}

/// Classifies a checkout's answer.
pub fn classify_checkout(status: u16, body: &[u8]) -> CheckoutOutcome {
    match status {
        200 if body.starts_with(CHECKOUT_SUCCESS) => CheckoutOutcome::FirstTime,
        200 if body.starts_with(CHECKOUT_ALREADY_PAID) => CheckoutOutcome::AlreadyPaid,
        400 => CheckoutOutcome::Rejected,
        _ => CheckoutOutcome::Other,
    }
}

impl CheckoutCounts {
    /// Counts one outcome.
    pub fn add(&mut self, o: CheckoutOutcome) {
        match o {
            CheckoutOutcome::FirstTime => self.first_time += 1,
            CheckoutOutcome::AlreadyPaid => self.already_paid += 1,
            CheckoutOutcome::Rejected => self.rejected += 1,
            CheckoutOutcome::Other => self.other += 1,
        }
    }
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig).expect("valid histogram bounds")
}

/// Percentiles of a histogram of microseconds, in milliseconds; all zero when it is empty.
pub fn latency_of(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// `count` over `secs` seconds (0 for an empty span).
pub fn per_second(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// What one endpoint has seen.
struct EndpointStats {
    /// Every latency of the run (µs).
    hist: Histogram<u64>,
    /// Latencies of the current interval (µs).
    interval_hist: Histogram<u64>,
    /// 2xx answers that passed their checks.
    ok: u64,
    /// Failures by kind (few distinct kinds: a linear scan is the fastest lookup).
    failures: Vec<(Failure, u64)>,
    /// Outcomes of checkouts (only the checkout endpoint counts any).
    checkouts: CheckoutCounts,
    /// Requests of the current interval.
    interval_count: u64,
}

impl EndpointStats {
    fn new() -> EndpointStats {
        EndpointStats {
            hist: histogram(SIGFIG),
            interval_hist: histogram(INTERVAL_SIGFIG),
            ok: 0,
            failures: Vec::new(),
            checkouts: CheckoutCounts::default(),
            interval_count: 0,
        }
    }

    fn errors(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

/// The run's counters and timeline.
pub struct Recorder {
    /// Indexed by [`Endpoint::index`].
    endpoints: Vec<EndpointStats>,
    /// Latencies of the current interval over all endpoints (µs).
    interval_all: Histogram<u64>,
    /// Failures of the current interval.
    interval_errors: u64,
    /// First-time checkouts of the current interval.
    interval_first_time: u64,
    /// When the run (and its first interval) started.
    start: Instant,
    /// When the current interval started.
    interval_start: Instant,
    /// The closed intervals.
    timeline: Vec<IntervalReport>,
    /// Open model: how late each iteration started against its schedule (µs).
    lag: Histogram<u64>,
}

impl Recorder {
    /// An empty recorder whose run starts at `start`.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            endpoints: Endpoint::ALL.iter().map(|_| EndpointStats::new()).collect(),
            interval_all: histogram(INTERVAL_SIGFIG),
            interval_errors: 0,
            interval_first_time: 0,
            start,
            interval_start: start,
            timeline: Vec::new(),
            lag: histogram(SIGFIG),
        }
    }

    /// Records one request to `ep` that took `latency` and ended as `result`.
    pub fn record(&mut self, ep: Endpoint, latency: Duration, result: Result<(), Failure>) {
        let us = (latency.as_micros() as u64).clamp(1, HIST_MAX_US);
        let s = &mut self.endpoints[ep.index()];
        s.hist.saturating_record(us);
        s.interval_hist.saturating_record(us);
        s.interval_count += 1;
        self.interval_all.saturating_record(us);
        match result {
            Ok(()) => s.ok += 1,
            Err(f) => {
                self.interval_errors += 1;
                match s.failures.iter_mut().find(|(k, _)| *k == f) {
                    Some((_, n)) => *n += 1,
                    None => s.failures.push((f, 1)),
                }
            }
        }
    }

    /// Counts a checkout's outcome (besides its [`Recorder::record`]).
    pub fn record_checkout(&mut self, o: CheckoutOutcome) {
        self.endpoints[Endpoint::Checkout.index()].checkouts.add(o);
        if o == CheckoutOutcome::FirstTime {
            self.interval_first_time += 1;
        }
    }

    /// Records how late (open model) an iteration started.
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record((lag.as_micros() as u64).clamp(1, HIST_MAX_US));
    }

    /// Closes the current interval at `now` and starts the next; returns the closed one.
    pub fn close_interval(&mut self, now: Instant) -> &IntervalReport {
        let duration = now.saturating_duration_since(self.interval_start).as_secs_f64();
        let lat = latency_of(&self.interval_all);
        let mut by_endpoint = BTreeMap::new();
        let mut requests = 0;
        for (e, s) in Endpoint::ALL.iter().zip(&mut self.endpoints) {
            if s.interval_count > 0 {
                by_endpoint.insert(e.label().to_string(), s.interval_count);
            }
            requests += s.interval_count;
            s.interval_count = 0;
            s.interval_hist.reset();
        }
        self.timeline.push(IntervalReport {
            t_s: now.saturating_duration_since(self.start).as_secs_f64(),
            duration_s: duration,
            requests,
            errors: self.interval_errors,
            throughput: per_second(requests, duration),
            first_time: self.interval_first_time,
            p50_ms: lat.p50_ms,
            p95_ms: lat.p95_ms,
            p99_ms: lat.p99_ms,
            max_ms: lat.max_ms,
            by_endpoint,
        });
        self.interval_all.reset();
        self.interval_errors = 0;
        self.interval_first_time = 0;
        self.interval_start = now;
        self.timeline.last().expect("just pushed")
    }

    /// When the current (open) interval started.
    pub fn timeline_end(&self) -> Instant {
        self.interval_start
    }

    /// Requests recorded so far.
    pub fn requests(&self) -> u64 {
        self.endpoints.iter().map(|s| s.hist.len()).sum()
    }

    /// The per-endpoint reports (endpoints that saw requests), the latency over all of them,
    /// the timeline and the open model's lag, for a run of `secs` seconds.
    pub fn finish(self, secs: f64) -> Finished {
        let mut all = histogram(SIGFIG);
        let mut endpoints = Vec::new();
        for (e, s) in Endpoint::ALL.iter().zip(&self.endpoints) {
            if s.hist.is_empty() {
                continue;
            }
            all.add(&s.hist).expect("same bounds");
            let count = s.hist.len();
            endpoints.push(EndpointReport {
                name: e.label().to_string(),
                count,
                ok: s.ok,
                errors: s.errors(),
                throughput: per_second(count, secs),
                latency: latency_of(&s.hist),
                errors_by_kind: s.failures.iter().map(|(f, n)| (f.key(), *n)).collect(),
                checkouts: (*e == Endpoint::Checkout).then_some(s.checkouts),
            });
        }
        Finished {
            latency: latency_of(&all),
            endpoints,
            timeline: self.timeline,
            lag: (!self.lag.is_empty()).then(|| latency_of(&self.lag)),
        }
    }
}

/// A recorder's summary.
pub struct Finished {
    /// Over all endpoints.
    pub latency: Latency,
    /// Per endpoint that saw a request.
    pub endpoints: Vec<EndpointReport>,
    /// The intervals.
    pub timeline: Vec<IntervalReport>,
    /// Open model: how late iterations started; `None` in the closed model.
    pub lag: Option<Latency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.002 + 1e-9
    }

    #[test]
    fn latency_summary_of_a_known_distribution() {
        let mut h = histogram(SIGFIG);
        // 1 ms .. 100 ms, one each.
        for ms in 1..=100u64 {
            h.record(ms * 1000).unwrap();
        }
        let l = latency_of(&h);
        assert!(close(l.p50_ms, 50.0), "{l:?}");
        assert!(close(l.p95_ms, 95.0), "{l:?}");
        assert!(close(l.p99_ms, 99.0), "{l:?}");
        assert!(close(l.max_ms, 100.0), "{l:?}");
        assert!(close(l.mean_ms, 50.5), "{l:?}");
        assert_eq!(latency_of(&histogram(SIGFIG)), Latency::default(), "empty is all zero");
    }

    #[test]
    fn classifies_checkout_answers() {
        assert_eq!(classify_checkout(200, b"Checkout successful"), CheckoutOutcome::FirstTime);
        assert_eq!(classify_checkout(200, b"Order is already paid"), CheckoutOutcome::AlreadyPaid);
        assert_eq!(classify_checkout(400, b"not enough stock"), CheckoutOutcome::Rejected);
        assert_eq!(classify_checkout(200, b"{\"ok\":true}"), CheckoutOutcome::Other);
        assert_eq!(classify_checkout(503, b""), CheckoutOutcome::Other);
    }

    #[test]
    fn recorder_counts_per_endpoint_and_interval() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0);
        let ms = Duration::from_millis;
        r.record(Endpoint::Checkout, ms(2), Ok(()));
        r.record_checkout(CheckoutOutcome::FirstTime);
        r.record(Endpoint::Checkout, ms(4), Err(Failure::Status(400)));
        r.record_checkout(CheckoutOutcome::Rejected);
        r.record(Endpoint::FindStock, ms(1), Ok(()));
        let first = r.close_interval(t0 + Duration::from_secs(1)).clone();
        assert_eq!((first.requests, first.errors), (3, 1));
        assert!(close(first.throughput, 3.0));
        assert_eq!(first.by_endpoint["POST /orders/checkout/[order_id]"], 2);
        assert_eq!(first.first_time, 1, "the rejected checkout is not first-time");
        r.record(Endpoint::FindStock, ms(1), Err(Failure::Timeout));
        r.record(Endpoint::FindStock, ms(1), Err(Failure::Timeout));
        let second = r.close_interval(t0 + Duration::from_millis(1500)).clone();
        assert_eq!((second.requests, second.errors), (2, 2));
        assert!(close(second.throughput, 4.0), "2 in half a second");
        assert!(close(second.t_s, 1.5));
        assert_eq!(second.first_time, 0, "counted per interval");
        assert_eq!(r.requests(), 5);

        let f = r.finish(2.0);
        assert_eq!(f.endpoints.len(), 2, "endpoints without requests are left out");
        let c = &f.endpoints[0];
        assert_eq!((c.count, c.ok, c.errors), (2, 1, 1));
        assert_eq!(c.errors_by_kind, BTreeMap::from([("400".to_string(), 1)]));
        let co = c.checkouts.unwrap();
        assert_eq!((co.first_time, co.already_paid, co.rejected, co.other), (1, 0, 1, 0));
        let s = &f.endpoints[1];
        assert_eq!(s.errors_by_kind, BTreeMap::from([("timeout".to_string(), 2)]));
        assert!(s.checkouts.is_none());
        assert!(close(s.throughput, 1.5));
        assert!(close(f.latency.max_ms, 4.0));
        assert_eq!(f.timeline.len(), 2);
        assert!(f.lag.is_none());
    }

    #[test]
    fn latencies_beyond_the_bound_are_clamped() {
        let mut r = Recorder::new(Instant::now());
        r.record(Endpoint::FindStock, Duration::from_secs(1000), Ok(()));
        r.record(Endpoint::FindStock, Duration::ZERO, Ok(()));
        let f = r.finish(1.0);
        assert!(f.endpoints[0].latency.max_ms <= HIST_MAX_US as f64 / 1000.0 * 1.001);
    }
}
