//! Where the CPU goes: CPU time and resident memory of the cluster's processes (by the pids
//! in the launcher's `manifest.json`, read from /proc before and after a run), and the
//! generator's own CPU time, so that a report says how much CPU each role spent per request
//! and whether the generator itself was the bottleneck.

use cluster::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Instant;

/// One process's use during a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// `service-role-id`, e.g. `order-replica-0`, `gateway-balancer-0`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// CPU seconds (user + system) during the run.
    pub cpu_s: f64,
    /// Average cores it kept busy.
    pub cpu_util: f64,
    /// Resident memory at the end (MiB).
    pub rss_mib: f64,
}

/// The cluster's use during a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterUsage {
    /// Per process found both before and after.
    pub processes: Vec<ProcessUsage>,
    /// CPU seconds of all of them.
    pub cpu_s: f64,
    /// Average cores all of them kept busy.
    pub cpu_util: f64,
    /// Their resident memory at the end (MiB).
    pub rss_mib: f64,
}

impl ClusterUsage {
    /// As text, with the CPU per request of `requests`.
    pub fn text(&self, requests: u64) -> String {
        let mut s = String::new();
        let per_req = |cpu_s: f64| if requests > 0 { cpu_s * 1e6 / requests as f64 } else { 0.0 };
        let _ = writeln!(
            s,
            "  cluster: {:.1} CPU s ({:.2} cores busy, {:.0} µs CPU per request), {:.0} MiB resident",
            self.cpu_s,
            self.cpu_util,
            per_req(self.cpu_s),
            self.rss_mib
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "    {:<24} {:>7.2} CPU s {:>5.2} cores {:>7.1} µs/req {:>7.1} MiB",
                p.name,
                p.cpu_s,
                p.cpu_util,
                per_req(p.cpu_s),
                p.rss_mib
            );
        }
        s
    }
}

/// One process at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcSample {
    /// Its name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

/// Every process of a manifest at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// The processes that could be read.
    pub procs: Vec<ProcSample>,
}

/// The processes of `m` now (those whose /proc entry is gone are left out).
pub fn snapshot(m: &Manifest) -> Snapshot {
    let procs = m
        .processes
        .iter()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", e.pid)).ok()?;
            let status = std::fs::read_to_string(format!("/proc/{}/status", e.pid)).ok()?;
            Some(ProcSample {
                name: e.name(),
                pid: e.pid,
                cpu_ticks: parse_stat_ticks(&stat)?,
                rss_kib: parse_rss_kib(&status)?,
            })
        })
        .collect();
    Snapshot { at: Instant::now(), procs }
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its closing one.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th field from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a /proc/PID/status text, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The use between two snapshots (processes present in both with the same pid; a process
/// restarted in between is left out).
pub fn usage(before: &Snapshot, after: &Snapshot) -> ClusterUsage {
    usage_with(before, after, ticks_per_second())
}

fn usage_with(before: &Snapshot, after: &Snapshot, hz: f64) -> ClusterUsage {
    let secs = after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-9);
    let processes: Vec<ProcessUsage> = after
        .procs
        .iter()
        .filter_map(|a| {
            let b = before.procs.iter().find(|b| b.pid == a.pid && b.name == a.name)?;
            let cpu_s = a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / hz;
            Some(ProcessUsage {
                name: a.name.clone(),
                pid: a.pid,
                cpu_s,
                cpu_util: cpu_s / secs,
                rss_mib: a.rss_kib as f64 / 1024.0,
            })
        })
        .collect();
    let cpu_s = processes.iter().map(|p| p.cpu_s).sum();
    ClusterUsage {
        cpu_util: cpu_s / secs,
        cpu_s,
        rss_mib: after.procs.iter().map(|p| p.rss_kib as f64 / 1024.0).sum(),
        processes,
    }
}

/// CPU seconds (user + system) the calling thread has used. The generator does all its work
/// on one thread, so this is its cost, apart from whatever else the process runs.
pub fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (webshop node) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 9 0 100 \
                    1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let status = "Name:\tnode\nVmPeak:\t  200 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(51200));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn usage_is_the_difference_of_two_snapshots() {
        let t0 = Instant::now();
        let p = |name: &str, pid, ticks, rss| ProcSample { name: name.into(), pid, cpu_ticks: ticks, rss_kib: rss };
        let before = Snapshot { at: t0, procs: vec![p("a", 1, 100, 1024), p("b", 2, 0, 1024), p("c", 3, 0, 0)] };
        let after = Snapshot {
            at: t0 + Duration::from_secs(2),
            // b was restarted (new pid): left out of CPU, counted in memory.
            procs: vec![p("a", 1, 300, 2048), p("b", 9, 50, 1024)],
        };
        let u = usage_with(&before, &after, 100.0);
        assert_eq!(u.processes.len(), 1);
        assert_eq!(u.processes[0].cpu_s, 2.0);
        assert_eq!(u.processes[0].cpu_util, 1.0);
        assert_eq!(u.cpu_s, 2.0);
        assert_eq!(u.rss_mib, 3.0);
        assert!(u.text(1000).contains("2000 µs CPU per request"));
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        let a = thread_cpu_s();
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(30);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_s() > a);
    }
}
