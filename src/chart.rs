//! Charts as SVG and PNG (plotters; text drawn with the bundled DejaVu Sans, so no system font is
//! needed): Pareto charts of a benchmark (accuracy against throughput or size), and curves over
//! the encoder's layers on a log scale (sensitivity).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// How a point is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The uncompressed model.
    Baseline,
    /// The reference experiment's own methods (one-shot L1/random pruning, its quantizers, RMT).
    Reference,
    /// This tool's own methods (calibrated pruning, activation-aware low-rank, its quantizers).
    Tool,
}

#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Whether a larger x is better (throughput) or a smaller one (size).
    pub x_higher_is_better: bool,
    pub points: Vec<Point>,
}

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bundled font is a valid TrueType file; failure would show as missing text only.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Indices of the points no other point beats on both axes (higher y, better x), by x.
pub fn pareto_front(points: &[Point], x_higher_is_better: bool) -> Vec<usize> {
    let better_x = |a: f64, b: f64| if x_higher_is_better { a >= b } else { a <= b };
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let p = &points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, q)| j != i && q.y >= p.y && better_x(q.x, p.x) && (q.y > p.y || q.x != p.x))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x));
    front
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (xmin, xmax) = c
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let (ymin, ymax) = c
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.y), b.max(p.y)));
    let xpad = ((xmax - xmin) * 0.12).max(xmax.abs() * 0.05).max(1e-6);
    let ypad = ((ymax - ymin) * 0.12).max(0.005);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xmin - xpad).max(0.0)..xmax + xpad * 4.0,
            ymin - ypad * 4.0..ymax + ypad,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(err)?;

    let front = pareto_front(&c.points, c.x_higher_is_better);
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(DashedLineSeries::new(
            front.iter().map(|&i| (c.points[i].x, c.points[i].y)),
            6,
            4,
            grey.stroke_width(2),
        ))
        .map_err(err)?
        .label("Pareto front")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(2)));

    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(230, 120, 20);
    let kinds = [
        (Kind::Baseline, "baseline", BLACK),
        (Kind::Reference, "reference method", orange),
        (Kind::Tool, "onnx-compress methods", blue),
    ];
    for (kind, name, color) in kinds {
        let pts: Vec<&Point> = c.points.iter().filter(|p| p.kind == kind).collect();
        if pts.is_empty() {
            continue;
        }
        let style = color.filled();
        let series = chart.draw_series(pts.iter().map(|p| -> DynElement<DB, (f64, f64)> {
            match kind {
                Kind::Baseline => Cross::new((p.x, p.y), 8, color.stroke_width(3)).into_dyn(),
                Kind::Reference => TriangleMarker::new((p.x, p.y), 7, style).into_dyn(),
                Kind::Tool => Circle::new((p.x, p.y), 6, style).into_dyn(),
            }
        }));
        let series = series.map_err(err)?.label(name);
        match kind {
            Kind::Baseline => series.legend(move |(x, y)| Cross::new((x + 9, y), 6, color.stroke_width(3))),
            Kind::Reference => series.legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, color.filled())),
            Kind::Tool => series.legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled())),
        };
    }
    chart
        .draw_series(
            c.points
                .iter()
                .map(|p| Text::new(format!(" {}", p.label), (p.x, p.y), ("sans-serif", 13).into_font())),
        )
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Curves over the encoder's layers with y on a log scale (values at or below zero are drawn at
/// the smallest positive one).
#[derive(Debug, Clone)]
pub struct Lines {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Lines) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let all = || c.series.iter().flat_map(|(_, p)| p.iter());
    let floor = all().map(|p| p.1).filter(|&y| y > 0.0).fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 1e-6 };
    let (xmin, xmax) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let ymax = all().map(|p| p.1).fold(floor, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin - 0.3..xmax + 0.3, (floor / 2.0..ymax * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels((xmax - xmin).max(1.0) as usize + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in c.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x, y.max(floor))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// What [`write`] and [`write_lines`] draw.
enum Drawing<'a> {
    Pareto(&'a Chart),
    Lines(&'a Lines),
}

fn draw_any<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, d: &Drawing) -> Result<(), String> {
    match d {
        Drawing::Pareto(c) => draw(root, c),
        Drawing::Lines(c) => draw_lines(root, c),
    }
}

/// Writes `<stem>.svg` and `<stem>.png` in `dir`: each drawn in memory, then written as every
/// file is ([`crate::onnx::io::write_bytes`]: beside its final name, then renamed into place).
/// Each file written is added to `written` (on an error too: those before it).
fn write_files(d: &Drawing, dir: &Path, stem: &str, written: &mut Vec<std::path::PathBuf>) -> Result<(), String> {
    register_font();
    let (w, h) = (960u32, 640u32);
    let mut svg = String::new();
    draw_any(SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(), d)
        .map_err(|e| format!("{stem}.svg: {e}"))?;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw_any(BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area(), d)
        .map_err(|e| format!("{stem}.png: {e}"))?;
    let png = png_bytes(&rgb, (w, h)).map_err(|e| format!("{stem}.png: {e}"))?;
    for (ext, bytes) in [("svg", svg.as_bytes()), ("png", png.as_slice())] {
        let fin = dir.join(format!("{stem}.{ext}"));
        crate::onnx::io::write_bytes(&fin, bytes).map_err(|e| e.to_string())?;
        written.push(fin);
    }
    Ok(())
}

/// An RGB image (8 bits a channel, rows top down) as PNG.
fn png_bytes(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Writes `chart` as `<stem>.svg` and `<stem>.png` in `dir`, adding each to `written`.
pub fn write(chart: &Chart, dir: &Path, stem: &str, written: &mut Vec<std::path::PathBuf>) -> Result<(), String> {
    if chart.points.is_empty() {
        return Err(format!("chart '{stem}': no points"));
    }
    write_files(&Drawing::Pareto(chart), dir, stem, written)
}

/// Writes `lines` as `<stem>.svg` and `<stem>.png` in `dir`, adding each to `written`.
pub fn write_lines(lines: &Lines, dir: &Path, stem: &str, written: &mut Vec<std::path::PathBuf>) -> Result<(), String> {
    if lines.series.iter().all(|(_, p)| p.is_empty()) {
        return Err(format!("chart '{stem}': no points"));
    }
    write_files(&Drawing::Lines(lines), dir, stem, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64) -> Point {
        Point {
            label: format!("{x},{y}"),
            x,
            y,
            kind: Kind::Tool,
        }
    }

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let pts = vec![p(1.0, 0.9), p(2.0, 0.8), p(1.5, 0.7), p(3.0, 0.5), p(2.0, 0.85)];
        assert_eq!(pareto_front(&pts, true), vec![0, 4, 3]);
        // Smaller x better (size): (1.0, 0.9) dominates everything except nothing else is smaller.
        assert_eq!(pareto_front(&pts, false), vec![0]);
    }

    #[test]
    fn writes_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let chart = Chart {
            title: "t".into(),
            x_label: "samples/s".into(),
            y_label: "accuracy".into(),
            x_higher_is_better: true,
            points: vec![
                Point {
                    kind: Kind::Baseline,
                    ..p(100.0, 0.91)
                },
                Point {
                    kind: Kind::Reference,
                    ..p(130.0, 0.88)
                },
                p(180.0, 0.905),
            ],
        };
        let mut files = vec![];
        write(&chart, dir.path(), "pareto", &mut files).unwrap();
        assert_eq!(files.len(), 2);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("Pareto front") && svg.contains("180,0.905"));
        let png = std::fs::read(&files[1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(
            png.len() > 5_000,
            "a drawn chart, not an empty image: {} bytes",
            png.len()
        );
    }
}
