//! The report's chart (PNG): worker nodes, worker CPU and Pending pods over the replayed day,
//! one line per rule set and baseline, so an operator looks instead of reads.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Sample, Trace};

/// The font the labels are drawn with (Debian's fonts-dejavu-core, scripts/setup.sh).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

type Panel = (&'static str, fn(&Sample) -> f64);

const PANELS: [Panel; 3] = [
    ("worker nodes (billed)", |s| s.nodes as f64),
    ("worker CPU %", |s| s.cpu * 100.0),
    ("app pods Pending", |s| s.pending as f64),
];

fn load_font() -> Result<(), String> {
    let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core)"))?;
    // Registered once per process; plotters keeps a 'static reference.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT}: not a font"))
}

/// Draws `traces` into `path` under `title`.
pub fn draw(path: &Path, title: &str, traces: &[Trace]) -> Result<(), String> {
    static FONT_ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    FONT_ONCE.get_or_init(load_font).clone()?;
    let err = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1400, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
    let hours = |f: fn(f64, f64) -> f64, start| {
        traces.iter().flat_map(|t| t.samples.iter().map(|s| s.hour)).fold(start, f)
    };
    let x = hours(f64::min, f64::MAX)..hours(f64::max, f64::MIN);
    for (area, (label, value)) in root.split_evenly((PANELS.len(), 1)).iter().zip(PANELS) {
        let top = traces.iter().flat_map(|t| t.samples.iter().map(value)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(label, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(x.clone(), 0.0..top)
            .map_err(err)?;
        chart.configure_mesh().x_desc("hour of the day").draw().map_err(err)?;
        for (i, trace) in traces.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = trace.samples.iter().map(|s| (s.hour, value(s)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(trace.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
