//! Figures rendered from saved metrics, each as PNG and SVG (plotters).
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

type Curve = (String, Vec<(f64, f64)>);

fn det_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[Curve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    let lo_x = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.0))
        .filter(|&f| f > 0.0)
        .fold(1.0, f64::min);
    let lo_y = 1e-4;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((lo_x.max(1e-8)..1.0).log_scale(), (lo_y..1.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("FMR (false match rate)")
        .y_desc("FNMR (false non-match rate)")
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.0 > 0.0)
            .map(|&(x, y)| (x, y.max(lo_y)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes the DET curves (FMR vs FNMR, log axes) to `stem.png` and `stem.svg`.
pub fn det(stem: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    det_chart(
        BitMapBackend::new(&stem.with_extension("png"), (800, 600)).into_drawing_area(),
        title,
        curves,
    )?;
    det_chart(
        SVGBackend::new(&stem.with_extension("svg"), (800, 600)).into_drawing_area(),
        title,
        curves,
    )
}
