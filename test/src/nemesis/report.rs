//! What a run tells: a summary a person reads in ten seconds (operations, faults, violations
//! per checker, valid or not; the last line `valid=true|false` with the violations' count),
//! the JSON report (the whole history with the findings: it can be checked again), and a PNG
//! timeline of throughput and latency with each fault drawn as a shaded interval.

use super::history::{Kind, Outcome as OpOutcome};
use super::Outcome;
use crate::loadgen::chart::{err, headroom, register_fonts, FONT};
use plotters::prelude::*;
use std::fmt::Write;
use std::path::Path;

/// The summary, ending with the `valid=` line.
pub fn summary(o: &Outcome) -> String {
    let h = &o.history;
    let mut s = String::new();
    let count = |f: &dyn Fn(&Kind) -> bool| h.ops.iter().filter(|op| f(&op.kind)).count();
    let by = |x: OpOutcome| h.ops.iter().filter(|op| op.outcome == x).count();
    let _ = writeln!(s, "nemesis: seed {}, {:.1} s of operations and faults", o.seed, o.run_s);
    let _ = writeln!(
        s,
        "operations: {} ({} ok, {} failed, {} unknown; {} retried): {} adds, {} counter reads, {} checkouts, {} order \
         reads, {} creates",
        h.ops.len(),
        by(OpOutcome::Ok),
        by(OpOutcome::Fail),
        by(OpOutcome::Unknown),
        h.ops.iter().filter(|op| op.attempts > 1).count(),
        count(&|k| matches!(k, Kind::Add { .. })),
        count(&|k| matches!(k, Kind::Read { .. })),
        count(&|k| matches!(k, Kind::Checkout { .. })),
        count(&|k| matches!(k, Kind::FindOrder { .. })),
        count(&|k| matches!(k, Kind::CreateUser { .. } | Kind::CreateItem { .. })),
    );
    // The kinds made (a container's cut is a `disconnect`), in a fixed order.
    let kinds: Vec<(&str, usize)> = ["kill", "pause", "cut", "disconnect"]
        .map(|k| (k, h.faults.iter().filter(|f| f.kind == k).count()))
        .into_iter()
        .filter(|(k, n)| *n > 0 || ["kill", "pause", "cut"].contains(k))
        .collect();
    let _ = writeln!(
        s,
        "faults: {} ({})",
        h.faults.len(),
        kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
    );
    let paid = h.fin.paid.values().filter(|p| **p == Some(true)).count();
    let _ = writeln!(s, "orders paid at the end: {paid} of {}", h.setup.orders.len());
    match o.convergence_s {
        Some(c) => {
            let _ = writeln!(s, "converged {c:.1} s after the heal began");
        }
        None => {
            let _ = writeln!(s, "did NOT converge after the heal");
        }
    }
    for c in &o.results {
        let _ = writeln!(s, "checker {:<12} {} violations", c.checker, c.violations.len());
        for v in c.violations.iter().take(10) {
            let _ = writeln!(s, "  {} (operations {:?})", v.what, v.ops);
        }
        if c.violations.len() > 10 {
            let _ = writeln!(s, "  ... and {} more (in the JSON report)", c.violations.len() - 10);
        }
    }
    let violations: usize = o.results.iter().map(|c| c.violations.len()).sum();
    let _ = writeln!(s, "valid={} violations={violations}", o.valid);
    s
}

/// Writes `nemesis.json` and `nemesis.png` into `dir`.
pub fn write(dir: &Path, o: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("nemesis.json"), serde_json::to_vec_pretty(o)?)?;
    draw(&dir.join("nemesis.png"), o)
}

/// Per one-second bucket of completion time: (second, ok ops, other ops, p50 ms, p99 ms).
fn buckets(o: &Outcome) -> Vec<(f64, f64, f64, f64, f64)> {
    let secs = o.history.ops.iter().map(|op| op.completed_us / 1_000_000).max().map_or(0, |m| m + 1) as usize;
    let mut per: Vec<(usize, usize, Vec<f64>)> = vec![(0, 0, Vec::new()); secs];
    for op in &o.history.ops {
        let b = &mut per[(op.completed_us / 1_000_000) as usize];
        if op.outcome == OpOutcome::Ok {
            b.0 += 1;
        } else {
            b.1 += 1;
        }
        b.2.push(op.completed_us.saturating_sub(op.invoked_us) as f64 / 1000.0);
    }
    per.into_iter()
        .enumerate()
        .map(|(t, (ok, other, mut lat))| {
            lat.sort_by(f64::total_cmp);
            let q = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
            (t as f64 + 0.5, ok as f64, other as f64, q(0.5), q(0.99))
        })
        .collect()
}

/// The timeline: operations per second (ok and not) on top, latency p50 and p99 below, each
/// fault a shaded interval (kills red, pauses blue, cuts orange) across both.
pub fn draw(path: &Path, o: &Outcome) -> anyhow::Result<()> {
    register_fonts();
    let b = buckets(o);
    let t_max = (b.len() as f64).max(o.run_s).max(1.0);
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "nemesis seed {}: {} operations, {} faults, valid={}",
        o.seed,
        o.history.ops.len(),
        o.history.faults.len(),
        o.valid
    );
    let root = root.titled(&title, (FONT, 22)).map_err(err)?;
    let (upper, lower) = root.split_vertically(380);
    let faults: Vec<(f64, f64, &str)> = o
        .history
        .faults
        .iter()
        .map(|f| (f.start_us as f64 / 1e6, (f.end_us.min(f.start_us + 600_000_000)) as f64 / 1e6, f.kind.as_str()))
        .collect();

    let ops: [Line; 2] = [
        ("ok", BLUE, b.iter().map(|x| (x.0, x.1)).collect()),
        ("refused or unknown", RED, b.iter().map(|x| (x.0, x.2)).collect()),
    ];
    let caption = "operations per second (shaded: kill red, pause blue, cut or disconnect orange)";
    panel(&upper, caption, "ops/s", t_max, &faults, &ops)?;
    let latency: [Line; 2] =
        [("p50", GREEN, b.iter().map(|x| (x.0, x.3)).collect()), ("p99", RED, b.iter().map(|x| (x.0, x.4)).collect())];
    let caption = "latency of the operations completed each second (with retries)";
    panel(&lower, caption, "latency (ms)", t_max, &faults, &latency)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A line of a panel: its name, colour and points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

/// One chart of the timeline: `lines` over time, each fault (start, end, kind) shaded.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    t_max: f64,
    faults: &[(f64, f64, &str)],
    lines: &[Line],
) -> anyhow::Result<()> {
    let y_max = headroom(lines.iter().flat_map(|l| l.2.iter().map(|p| p.1)).fold(0.0, f64::max));
    let mut c = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .caption(caption, (FONT, 18))
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    c.configure_mesh().x_desc("time (s)").y_desc(y_desc).label_style((FONT, 14)).draw().map_err(err)?;
    let shade = |kind: &str| match kind {
        "kill" => RED.mix(0.15),
        "pause" => BLUE.mix(0.12),
        _ => RGBColor(230, 140, 0).mix(0.15),
    };
    c.draw_series(faults.iter().map(|(a, z, k)| Rectangle::new([(*a, 0.0), (*z, y_max)], shade(k).filled())))
        .map_err(err)?;
    for (name, color, points) in lines {
        let color = *color;
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
