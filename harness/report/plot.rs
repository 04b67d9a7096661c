//! `numbers.svg`: the numbers a run measured, drawn over the run, so that a release gate's cost is
//! seen at a glance: each fortio run's p50 and p99 inside and outside the mesh in the order they
//! were taken (the baseline's, then the candidate's), and each part's memory and CPU per pod at
//! each reading (idle, under load) of each pass. Drawn from run.json alone (the measurements and
//! their samples), with plotters' SVG backend (no font files: SVG text is the viewer's).

use plotters::{
    coord::Shift,
    prelude::{
        BLACK, BLUE, ChartBuilder, Color, DrawingArea, GREEN, IntoDrawingArea, LineSeries, MAGENTA, PathElement, RED,
        RGBColor, SVGBackend, SeriesLabelPosition, WHITE,
    },
};

use crate::evidence::Measurement;

use super::record::RunRecord;

/// The passes of a run that measured something, in run order: `baseline` and `candidate` of a
/// release gate, `checks` of any other run.
fn passes(record: &RunRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in record.results.iter().filter(|r| !r.verdict.measurements.is_empty()) {
        if !out.contains(&r.suite) {
            out.push(r.suite.clone());
        }
    }
    out
}

fn measurement<'a>(record: &'a RunRecord, suite: &str, metric: &str) -> Option<&'a Measurement> {
    record
        .results
        .iter()
        .filter(|r| r.suite == suite)
        .flat_map(|r| &r.verdict.measurements)
        .find(|m| m.metric == metric)
}

/// One line of a panel: its label, colour and points.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [RED, BLUE, GREEN, MAGENTA];

/// Each fortio run's p50 and p99 on each side, the passes one after the other.
fn latency_lines(record: &RunRecord, passes: &[String]) -> Vec<Line> {
    let series = ["latency.inside.p50", "latency.inside.p99", "latency.outside.p50", "latency.outside.p99"];
    series
        .iter()
        .zip(COLORS)
        .map(|(metric, color)| {
            let samples: Vec<f64> =
                passes.iter().filter_map(|p| measurement(record, p, metric)).flat_map(|m| m.samples.clone()).collect();
            let points = samples.iter().enumerate().map(|(i, v)| (i as f64 + 1.0, *v)).collect();
            Line { label: metric.trim_start_matches("latency.").replace('.', " "), color, points }
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

/// Each part's `quantity` (`memory`, `cpu`) per pod at each reading of each pass, scaled.
fn footprint_lines(record: &RunRecord, passes: &[String], quantity: &str, scale: f64) -> Vec<Line> {
    ["ztunnel", "istio-cni", "istiod", "gateway"]
        .iter()
        .zip(COLORS)
        .map(|(part, color)| {
            let mut points = Vec::new();
            for (i, (pass, reading)) in passes.iter().flat_map(|p| [(p, "idle"), (p, "load")]).enumerate() {
                if let Some(m) = measurement(record, pass, &format!("{part}.{quantity}.{reading}")) {
                    points.push((i as f64 + 1.0, m.value * scale));
                }
            }
            Line { label: part.to_string(), color, points }
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

/// Draws one panel; a drawing error leaves it blank (the SVG is a view of run.json, not evidence).
fn panel(area: &DrawingArea<SVGBackend, Shift>, title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) {
    let max_x = lines.iter().flat_map(|l| &l.points).map(|p| p.0).fold(1.0, f64::max);
    let max_y = lines.iter().flat_map(|l| &l.points).map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let Ok(mut chart) = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5..max_x + 0.5, 0.0..max_y)
    else {
        return;
    };
    let _ = chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw();
    for line in lines {
        let color = line.color;
        if let Ok(drawn) = chart.draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2))) {
            drawn.label(line.label.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    let _ = chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw();
}

/// `numbers.svg` of a run, or `None` when it measured nothing to draw.
pub fn numbers_svg(record: &RunRecord) -> Option<String> {
    let passes = passes(record);
    let latency = latency_lines(record, &passes);
    let memory = footprint_lines(record, &passes, "memory", 1.0 / (1024.0 * 1024.0));
    let cpu = footprint_lines(record, &passes, "cpu", 1000.0);
    let mut panels: Vec<(String, &str, &str, &[Line])> = Vec::new();
    let order = passes.join(", then ");
    if !latency.is_empty() {
        panels.push((format!("Latency of each fortio run ({order})"), "run", "ms", &latency));
    }
    let readings = passes.iter().map(|p| format!("{p} idle, {p} load")).collect::<Vec<_>>().join(", ");
    if !memory.is_empty() {
        panels.push((format!("Working set per pod ({readings})"), "reading", "MiB", &memory));
    }
    if !cpu.is_empty() {
        panels.push((format!("CPU per pod ({readings})"), "reading", "millicores", &cpu));
    }
    if panels.is_empty() {
        return None;
    }
    let mut svg = String::new();
    {
        let height = 320 * panels.len() as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        for ((title, x, y, lines), area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
            panel(&area, title, x, y, lines);
        }
        root.present().ok()?;
    }
    Some(svg)
}
