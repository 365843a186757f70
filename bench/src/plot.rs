//! Scaling plots: a figure against N for ours and the baseline, as an SVG next to the
//! JSON results, so a reader can look instead of read.
//!
//! Text is drawn with DejaVu Sans (Debian's `fonts-dejavu-core`, which `.ci/run`
//! installs); without it the plot is skipped with a message saying so.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font once; `Err` says why there is none.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT)
                .map_err(|e| format!("{FONT}: {e} (install fonts-dejavu-core to get plots)"))?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a usable font"))
        })
        .clone()
}

/// One line of a plot.
pub(crate) struct Series<'a> {
    pub(crate) label: &'a str,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Writes `file` (SVG): each series as a line with points, against `x_desc` (N).
pub(crate) fn scaling(
    file: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    if let Err(why) = font() {
        println!("plot {} skipped: {why}", file.display());
        return Ok(());
    }
    let points = series.iter().flat_map(|s| s.points.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE) * 1.2;
    let root = SVGBackend::new(file, (720, 420)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))?
                .label(s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("drawing {}", file.display()))?;
    println!("plot written to {}", file.display());
    Ok(())
}
