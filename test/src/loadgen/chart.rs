//! The PNG chart of a run: throughput (requests per second; errors and, in a checkout run,
//! first-time checkouts apart) over time on top,
//! latency percentiles (p50, p95, p99) over time below, one point per timeline interval.
//! Drawn with plotters' bitmap backend and DejaVu Sans embedded in the binary (the `dejavu`
//! crate), so it needs no system font package.

use super::report::{IntervalReport, RunReport};
use super::stats::per_second;
use anyhow::anyhow;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// A line of the latency chart: its name, colour and points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// Size of the picture in pixels.
const SIZE: (u32, u32) = (1200, 800);
/// The font family name the chart asks for (registered from the embedded DejaVu Sans).
pub(crate) const FONT: &str = "sans-serif";

static FONTS: Once = Once::new();

pub(crate) fn register_fonts() {
    FONTS.call_once(|| {
        // The bytes are DejaVu Sans, a valid TrueType font: registration cannot fail.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub(crate) fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// Rounds a chart's upper bound up so that the top line does not touch the frame.
pub(crate) fn headroom(max: f64) -> f64 {
    if max <= 0.0 {
        1.0
    } else {
        max * 1.1
    }
}

/// Draws `run` to `path` (PNG), titled `title`.
pub fn draw(path: &Path, title: &str, run: &RunReport) -> anyhow::Result<()> {
    register_fonts();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 22)).map_err(err)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2 - 20);
    // A last interval much shorter than the others (the run's tail) is a noisy point: the
    // JSON keeps it, the chart leaves it out.
    let full = run.timeline.first().map_or(0.0, |i| i.duration_s) * 0.5;
    let timeline: Vec<&IntervalReport> = run.timeline.iter().filter(|i| i.duration_s >= full).collect();
    let t_max = run.timeline.last().map_or(1.0, |i| i.t_s).max(run.duration_s).max(1e-3);

    let tput: Vec<(f64, f64)> = timeline.iter().map(|i| (i.t_s, i.throughput)).collect();
    let errs: Vec<(f64, f64)> = run.timeline.iter().map(|i| (i.t_s, per_second(i.errors, i.duration_s))).collect();
    let y_max = headroom(tput.iter().map(|p| p.1).fold(0.0, f64::max));
    let mut c = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .caption(format!("throughput: {:.0} requests/s over the run", run.throughput), (FONT, 18))
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    c.configure_mesh().x_desc("time (s)").y_desc("requests/s").label_style((FONT, 14)).draw().map_err(err)?;
    c.draw_series(LineSeries::new(tput, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("requests/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    c.draw_series(LineSeries::new(errs, RED.stroke_width(2)))
        .map_err(err)?
        .label("errors/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    if timeline.iter().any(|i| i.first_time > 0) {
        let first: Vec<(f64, f64)> = timeline.iter().map(|i| (i.t_s, per_second(i.first_time, i.duration_s))).collect();
        let teal = RGBColor(0, 150, 150);
        c.draw_series(LineSeries::new(first, teal.stroke_width(2)))
            .map_err(err)?
            .label("first-time checkouts/s")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], teal.stroke_width(2)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let series: [Series; 3] = [
        ("p50", GREEN, timeline.iter().map(|i| (i.t_s, i.p50_ms)).collect()),
        ("p95", RGBColor(230, 140, 0), timeline.iter().map(|i| (i.t_s, i.p95_ms)).collect()),
        ("p99", RED, timeline.iter().map(|i| (i.t_s, i.p99_ms)).collect()),
    ];
    let l_max = headroom(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0, f64::max));
    let mut c = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .caption(
            format!(
                "latency over the run: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                run.latency.p50_ms, run.latency.p95_ms, run.latency.p99_ms, run.latency.max_ms
            ),
            (FONT, 18),
        )
        .build_cartesian_2d(0f64..t_max, 0f64..l_max)
        .map_err(err)?;
    c.configure_mesh().x_desc("time (s)").y_desc("latency (ms)").label_style((FONT, 14)).draw().map_err(err)?;
    for (name, color, points) in series {
        c.draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
