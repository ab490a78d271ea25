//! Figures rendered from saved metrics, each as PNG and SVG (plotters).
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

/// Viridis-like colour for `t` in [0, 1] (dark = small, bright = large, as the paper's Figure 4).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// One heat-map panel per `(title, h)`: rows = source class k, columns = target class l,
/// the value H_{k,l} printed in each cell; cells without a success show "x".
type Panel<'a> = (String, &'a [Vec<Option<f64>>]);

fn heatmap_chart<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, panels: &[Panel]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    let vmax = panels
        .iter()
        .flat_map(|p| p.1.iter().flatten().flatten())
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9);
    for (area, (title, h)) in root.split_evenly((1, panels.len())).into_iter().zip(panels) {
        let n = h.len() as i32;
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(30)
            .build_cartesian_2d(0..n, 0..n)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n as usize)
            .y_labels(n as usize)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|_| String::new())
            .x_desc("target class l")
            .y_desc("source class k")
            .draw()
            .map_err(err)?;
        for k in 0..n {
            for l in 0..n {
                let y = n - 1 - k; // row 0 on top
                let v = h[k as usize][l as usize];
                let fill = match v {
                    Some(v) => viridis(v / vmax),
                    None if k == l => RGBColor(255, 255, 255),
                    None => RGBColor(200, 200, 200),
                };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(l, y), (l + 1, y + 1)],
                        fill.filled(),
                    )))
                    .map_err(err)?;
                let text = match v {
                    Some(v) => format!("{v:.2}"),
                    None if k == l => String::new(),
                    None => "x".into(),
                };
                let color = if v.is_some_and(|v| v / vmax > 0.6) {
                    BLACK
                } else {
                    WHITE
                };
                let style = ("sans-serif", 11)
                    .into_font()
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let (px, py) = chart.backend_coord(&(l, y + 1));
                let (qx, qy) = chart.backend_coord(&(l + 1, y));
                area.draw(&Text::new(text, ((px + qx) / 2, (py + qy) / 2), style))
                    .map_err(err)?;
            }
        }
        for i in 0..n {
            let label = TextStyle::from(("sans-serif", 12).into_font())
                .pos(Pos::new(HPos::Center, VPos::Center));
            let (x0, y0) = chart.backend_coord(&(i, 0));
            let (x1, _) = chart.backend_coord(&(i + 1, 0));
            area.draw(&Text::new(
                i.to_string(),
                ((x0 + x1) / 2, y0 + 10),
                label.clone(),
            ))
            .map_err(err)?;
            let (cx, cy0) = chart.backend_coord(&(0, n - 1 - i));
            let (_, cy1) = chart.backend_coord(&(0, n - i));
            area.draw(&Text::new(i.to_string(), (cx - 10, (cy0 + cy1) / 2), label))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// Writes the robustness heat map(s) of H_{k,l} (eq. 4) to `stem.png` and `stem.svg`.
pub fn heatmap(stem: &Path, panels: &[Panel]) -> Result<()> {
    let size = (520 * panels.len() as u32, 540);
    heatmap_chart(
        BitMapBackend::new(&stem.with_extension("png"), size).into_drawing_area(),
        panels,
    )?;
    heatmap_chart(
        SVGBackend::new(&stem.with_extension("svg"), size).into_drawing_area(),
        panels,
    )
}

/// A Figure-5-style grid with columns original, adversarial, perturbation, target: one row
/// per `[original, adversarial, target]`, each a `[C, H, W]` image in [0, 1]; the perturbation
/// is shown as 0.5 + delta, amplified so its largest pixel spans the range. Written as PNG, every image upscaled `scale` times.
pub fn attack_grid(path: &Path, rows: &[[tch::Tensor; 3]], scale: u32) -> Result<()> {
    let Some(first) = rows.first() else {
        return Err(Error::Plot("no successful attack to show".into()));
    };
    let s = first[0].size();
    let (h, w) = (s[1] as u32, s[2] as u32);
    let (cw, ch, gap) = (w * scale, h * scale, 4);
    let mut img = image::RgbImage::from_pixel(
        4 * cw + 5 * gap,
        rows.len() as u32 * (ch + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for (r, row) in rows.iter().enumerate() {
        let [orig, adv, target] = row.each_ref().map(|t| t.to_device(tch::Device::Cpu));
        let (orig, adv, target) = (&orig, &adv, &target);
        let delta = adv - orig;
        let amp = 0.5 / delta.abs().max().double_value(&[]).max(1e-12);
        let pert = delta * amp + 0.5;
        for (col, t) in [orig, adv, &pert, target].into_iter().enumerate() {
            let t = (t.clamp(0.0, 1.0) * 255.0)
                .to_kind(tch::Kind::Uint8)
                .expand([3, h as i64, w as i64], false);
            let px: Vec<u8> = Vec::<u8>::try_from(t.permute([1, 2, 0]).contiguous().flatten(0, -1))
                .map_err(|e| Error::Plot(e.to_string()))?;
            for y in 0..ch {
                for x in 0..cw {
                    let i = (((y / scale) * w + x / scale) * 3) as usize;
                    let (ox, oy) = (gap + col as u32 * (cw + gap), gap + r as u32 * (ch + gap));
                    img.put_pixel(ox + x, oy + y, image::Rgb([px[i], px[i + 1], px[i + 2]]));
                }
            }
        }
    }
    img.save(path)
        .map_err(|e| Error::Plot(format!("{}: {e}", path.display())))
}

fn convergence_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[Curve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| Error::Plot(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    let pts = || curves.iter().flat_map(|c| c.1.iter());
    let x_max = pts().map(|p| p.0).fold(1.0, f64::max);
    let y_max = pts()
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((1.0..x_max * 1.2).log_scale(), 0.0..y_max.max(1e-3))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("attack budget (multiple of the audit's iterations)")
        .y_desc("RI on the convergence subset")
        .draw()
        .map_err(err)?;
    for (i, (label, pts)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = pts.iter().filter(|p| p.1.is_finite()).copied().collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Writes RI against the attack budget (the audit's convergence evidence: the ensemble, its
/// 8-bit form and each attack alone) to `stem.png` and `stem.svg`.
pub fn convergence(stem: &Path, method: &str, points: &[crate::audit::BudgetPoint]) -> Result<()> {
    let mut curves: Vec<Curve> = vec![
        (
            "ensemble".into(),
            points.iter().map(|p| (p.multiplier as f64, p.ri)).collect(),
        ),
        (
            "ensemble, 8 bits".into(),
            points
                .iter()
                .map(|p| (p.multiplier as f64, p.ri_8bit))
                .collect(),
        ),
    ];
    if let Some(first) = points.first() {
        for (j, (a, _)) in first.member_ri.iter().enumerate() {
            curves.push((
                format!("{} alone", a.name()),
                points
                    .iter()
                    .map(|p| (p.multiplier as f64, p.member_ri[j].1.unwrap_or(f64::NAN)))
                    .collect(),
            ));
        }
    }
    let title = format!("{method}: RI against attack budget");
    convergence_chart(
        BitMapBackend::new(&stem.with_extension("png"), (800, 600)).into_drawing_area(),
        &title,
        &curves,
    )?;
    convergence_chart(
        SVGBackend::new(&stem.with_extension("svg"), (800, 600)).into_drawing_area(),
        &title,
        &curves,
    )
}
