#![deny(missing_docs)]
//! A picture of a Redwood job's attempts over time, in the style of Lithops' plot: one lane per
//! worker or node (grouped by region), one bar per attempt coloured by how it ended (requeued
//! attempts outlined), and below it the tasks done over time. SVG or PNG by the file's
//! extension, drawn with plotters. `redwood timeline` and `redwood::timeline` use it.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use redwood_core::inspect::StoredJob;
use redwood_core::raw::events::TaskRecord;
use redwood_core::{Error, ErrorKind, Result};

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1400, 900);
/// The bundled font for the pictures' text (DejaVu Sans; its licence is beside it in `assets/`).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const OK: RGBColor = RGBColor(46, 160, 67);
const FAILED: RGBColor = RGBColor(214, 39, 40);
const RETRIED: RGBColor = RGBColor(255, 127, 14);
const REQUEUED: RGBColor = RGBColor(148, 103, 189);

/// The lane an attempt ran in: its region (when the job had several), then its node or
/// executor, then its worker (`east · node-1/w3`, `local w2`).
pub fn lane(record: &TaskRecord) -> String {
    let mut lane = String::new();
    if let Some(region) = &record.region {
        lane.push_str(region);
        lane.push_str(" · ");
    }
    match (&record.node, record.worker) {
        (Some(node), Some(w)) => lane.push_str(&format!("{node}/w{w}")),
        (Some(node), None) => lane.push_str(node),
        (None, Some(w)) => lane.push_str(&format!(
            "{} w{w}",
            record.executor.as_deref().unwrap_or("worker")
        )),
        (None, None) => lane.push_str(record.executor.as_deref().unwrap_or("unknown")),
    }
    lane
}

/// Draws the job's timeline into `path` (`.svg` or `.png`).
pub fn render(job: &StoredJob, path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    // Text is measured (and, in bitmaps, drawn) with a font of our own: no system font is
    // assumed.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let drawn =
        match extension.as_deref() {
            Some("svg") => draw(SVGBackend::new(path, SIZE).into_drawing_area(), job)
                .map_err(|e| e.to_string()),
            Some("png") => draw(BitMapBackend::new(path, SIZE).into_drawing_area(), job)
                .map_err(|e| e.to_string()),
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "cannot tell the picture's format from `{}`: name it .svg or .png",
                        path.display()
                    ),
                ));
            }
        };
    drawn.map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("cannot draw {}: {e}", path.display()),
        )
    })
}

/// One bar: its lane, start and end in seconds since submission, and its colour.
struct Bar {
    lane: usize,
    start: f64,
    end: f64,
    colour: RGBColor,
    requeued: bool,
}

/// The lanes (sorted: region, then node or worker, then slot) and the bars of the job's
/// attempts. Attempts that overlap in one lane (the task slots of a Batch node) get a row
/// each, `node #2`, so no bar hides another.
fn bars(job: &StoredJob) -> (Vec<String>, Vec<Bar>, f64) {
    let origin_us = job.manifest.created_unix_ms.saturating_mul(1000);
    let seconds = |us: u64| us.saturating_sub(origin_us) as f64 / 1e6;
    let last = job
        .attempts
        .iter()
        .map(|r| seconds(r.finished_us))
        .fold(0.0f64, f64::max)
        .max(0.001);
    // Each attempt's lane, start and end, in order of start within a lane.
    let mut spans: Vec<(String, f64, f64, &TaskRecord)> = job
        .attempts
        .iter()
        .map(|r| {
            let end = seconds(r.finished_us);
            let start = r.started_us.map(seconds).unwrap_or(end);
            // A bar too short to see still shows.
            (lane(r), start, end.max(start + last / 250.0), r)
        })
        .collect();
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    // Greedy rows per lane: an attempt takes the first row free by its start.
    let mut rows: Vec<(String, usize, f64, f64, &TaskRecord)> = Vec::with_capacity(spans.len());
    let mut row_ends: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for (name, start, end, r) in spans {
        let ends = row_ends.entry(name.clone()).or_default();
        let row = match ends.iter().position(|&e| e <= start) {
            Some(i) => {
                ends[i] = end;
                i
            }
            None => {
                ends.push(end);
                ends.len() - 1
            }
        };
        rows.push((name, row, start, end, r));
    }
    let label = |name: &str, row: usize| {
        if row_ends.get(name).is_some_and(|e| e.len() > 1) {
            format!("{name} #{}", row + 1)
        } else {
            name.to_string()
        }
    };
    let mut lanes: Vec<String> = row_ends
        .iter()
        .flat_map(|(name, ends)| (0..ends.len()).map(|row| label(name, row)))
        .collect();
    lanes.sort();
    let bars = rows
        .iter()
        .map(|(name, row, start, end, r)| Bar {
            lane: lanes.binary_search(&label(name, *row)).unwrap_or(0),
            start: *start,
            end: *end,
            colour: match (r.ok, r.retried) {
                (true, _) => OK,
                (false, true) => RETRIED,
                (false, false) => FAILED,
            },
            requeued: r.requeues > 0,
        })
        .collect();
    (lanes, bars, last)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    job: &StoredJob,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (lanes, bars, last) = bars(job);
    let x_max = last * 1.02;
    let (upper, lower) = root.split_vertically(SIZE.1 * 62 / 100);
    let title = format!(
        "{} · {} · {} tasks: {} ok, {} failed{}",
        job.id(),
        job.manifest.spec.function,
        job.manifest.spec.task_count,
        job.succeeded,
        job.failed,
        if job.unfinished > 0 {
            format!(", {} unfinished", job.unfinished)
        } else {
            String::new()
        }
    );
    let lane_count = lanes.len().max(1);
    // One lane per unit of y, its label at the lane's middle: asked for as many labels as
    // lanes, plotters puts them on whole numbers.
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(180)
        .build_cartesian_2d(
            0f64..x_max,
            // Headroom above the top lane for the legend.
            -0.5f64..lane_count as f64 - 0.5 + (lane_count as f64 * 0.3).max(0.9),
        )?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels((lane_count * 2).min(80))
        .y_label_formatter(&|y| {
            let i = y.round();
            if i >= 0.0 && (y - i).abs() < 1e-6 {
                lanes.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("seconds since the job was submitted")
        .label_style(("sans-serif", 14))
        .draw()?;
    // Each bar inset from its lane's edges and outlined in white, so attempts one after
    // another in a lane stay apart.
    let rect = |b: &Bar, style: ShapeStyle| {
        let lane = b.lane as f64;
        Rectangle::new([(b.start, lane - 0.35), (b.end, lane + 0.35)], style)
    };
    for (colour, name) in [
        (OK, "succeeded"),
        (RETRIED, "failed, retried"),
        (FAILED, "failed"),
    ] {
        chart
            .draw_series(
                bars.iter()
                    .filter(|b| b.colour == colour)
                    .map(|b| rect(b, colour.mix(0.85).filled())),
            )?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }
    chart.draw_series(
        bars.iter()
            .filter(|b| b.end - b.start > x_max / 100.0)
            .map(|b| rect(b, WHITE.stroke_width(1))),
    )?;
    chart
        .draw_series(
            bars.iter()
                .filter(|b| b.requeued)
                .map(|b| rect(b, REQUEUED.stroke_width(3))),
        )?
        .label("requeued (node lost)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], REQUEUED.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;

    // Below: tasks done over time (final outcomes, by when their attempt ended).
    let origin_us = job.manifest.created_unix_ms.saturating_mul(1000);
    let mut ends: Vec<(f64, bool)> = job
        .attempts
        .iter()
        .filter(|r| !r.retried)
        .map(|r| (r.finished_us.saturating_sub(origin_us) as f64 / 1e6, r.ok))
        .collect();
    ends.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = job.manifest.spec.task_count.max(1) as f64;
    let mut done = vec![(0.0, 0.0)];
    let mut failed = vec![(0.0, 0.0)];
    let (mut ok_n, mut failed_n) = (0.0, 0.0);
    // Steps: each count holds until the next task ends.
    for (t, ok) in ends {
        let (series, n) = if ok {
            (&mut done, &mut ok_n)
        } else {
            (&mut failed, &mut failed_n)
        };
        series.push((t, *n));
        *n += 1.0;
        series.push((t, *n));
    }
    done.push((x_max, ok_n));
    failed.push((x_max, failed_n));
    let mut progress = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(180)
        .build_cartesian_2d(0f64..x_max, 0f64..total * 1.05)?;
    progress
        .configure_mesh()
        .x_desc("seconds since the job was submitted")
        .y_desc("tasks ended")
        .label_style(("sans-serif", 14))
        .draw()?;
    progress
        .draw_series(LineSeries::new(done, OK.stroke_width(2)))?
        .label("succeeded")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], OK.stroke_width(2)));
    if failed_n > 0.0 {
        progress
            .draw_series(LineSeries::new(failed, FAILED.stroke_width(2)))?
            .label("failed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], FAILED.stroke_width(2)));
    }
    progress
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
}
