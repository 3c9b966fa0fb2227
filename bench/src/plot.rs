//! SVG plots (plotters' SVG backend: no fonts or system libraries needed): the latency
//! percentile spectrum (HdrHistogram style, x = percentile on a log scale of `1/(1−p)`),
//! latency and delivered rate over time, and sweep curves with the model line.
//!
//! Log axes are drawn by plotting `log10(value)` on a linear axis and labelling ticks
//! with the value, which keeps every chart on one coordinate type.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;

use crate::timeline::Interval;

/// How an axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Linear.
    Linear,
    /// log10, labelled with the value.
    Log,
    /// `log10(1/(1−p))` of a quantile p, labelled as a percentile (90%, 99%, 99.9%…).
    Percentile,
}

impl Axis {
    fn map(self, v: f64) -> Option<f64> {
        match self {
            Axis::Linear => v.is_finite().then_some(v),
            Axis::Log => (v > 0.0 && v.is_finite()).then(|| v.log10()),
            Axis::Percentile => (0.0..1.0).contains(&v).then(|| (1.0 / (1.0 - v)).log10()),
        }
    }

    fn label(self, x: f64) -> String {
        match self {
            Axis::Linear => short(x),
            Axis::Log => short(sig2(10f64.powf(x))),
            Axis::Percentile => {
                if (x - x.round()).abs() > 1e-6 {
                    return String::new();
                }
                let p = 100.0 * (1.0 - 10f64.powf(-x.round()));
                let digits = (x.round() as usize).saturating_sub(2);
                format!("{p:.digits$}%")
            }
        }
    }
}

/// `v` rounded to two significant digits (log-axis ticks fall on 10^(k/5) and the like:
/// 1585 reads better as 1.6k).
fn sig2(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powf(v.log10().floor() - 1.0);
    (v / mag).round() * mag
}

/// A number in few characters (12k, 1.5M, 0.25).
fn short(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` in data units.
    pub points: Vec<(f64, f64)>,
    /// Dashed model line instead of measured points.
    pub model: bool,
}

/// A chart to draw.
pub struct Chart {
    /// Caption.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// X mapping.
    pub x_axis: Axis,
    /// Y mapping.
    pub y_axis: Axis,
    /// The lines.
    pub series: Vec<Series>,
    /// Horizontal reference lines `(name, y)`.
    pub hlines: Vec<(String, f64)>,
    /// Vertical markers at these x values, under one legend name (e.g. checkpoint
    /// triggers on a time axis).
    pub vlines: Option<(String, Vec<f64>)>,
}

fn bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// Draws `chart` into the SVG file `path`.
pub fn draw(chart: &Chart, path: &Path) -> Result<()> {
    let mapped: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter_map(|&(x, y)| Some((chart.x_axis.map(x)?, chart.y_axis.map(y)?)))
                .collect()
        })
        .collect();
    let hlines: Vec<(String, f64)> = chart
        .hlines
        .iter()
        .filter_map(|(n, y)| Some((n.clone(), chart.y_axis.map(*y)?)))
        .collect();
    let (x0, mut x1) = bounds(mapped.iter().flatten().map(|p| p.0));
    let (y0, y1) = bounds(
        mapped
            .iter()
            .flatten()
            .map(|p| p.1)
            .chain(hlines.iter().map(|h| h.1)),
    );
    let x0 = if chart.x_axis == Axis::Percentile {
        0.0
    } else {
        x0
    };
    if chart.x_axis == Axis::Percentile {
        x1 = x1.ceil().max(1.0);
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let err = |e: String| anyhow!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    let (xa, ya) = (chart.x_axis, chart.y_axis);
    let xf = move |v: &f64| xa.label(*v);
    let yf = move |v: &f64| ya.label(*v);
    let x_labels = if xa == Axis::Percentile {
        (x1 - x0).round() as usize + 1
    } else {
        10
    };
    c.configure_mesh()
        .x_desc(chart.x_desc.as_str())
        .y_desc(chart.y_desc.as_str())
        .x_labels(x_labels)
        .y_labels(10)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, (s, pts)) in chart.series.iter().zip(&mapped).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = if s.model {
            color.stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        c.draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(|e| err(e.to_string()))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if !s.model {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    for (name, y) in &hlines {
        let color = BLACK;
        c.draw_series(LineSeries::new(
            vec![(x0, *y), (x1, *y)],
            color.stroke_width(1),
        ))
        .map_err(|e| err(e.to_string()))?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some((name, xs)) = &chart.vlines {
        let color = RGBColor(230, 120, 0);
        let xs: Vec<f64> = xs
            .iter()
            .filter_map(|x| chart.x_axis.map(*x))
            .filter(|x| (x0..=x1).contains(x))
            .collect();
        let mut first = true;
        for x in xs {
            let s = c
                .draw_series(LineSeries::new(
                    vec![(x, y0), (x, y1)],
                    color.stroke_width(1),
                ))
                .map_err(|e| err(e.to_string()))?;
            if first {
                s.label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                first = false;
            }
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The percentile spectrum of one or more runs (`(name, points)` from
/// `stats::spectrum`).
pub fn spectrum(dir: &Path, title: &str, runs: Vec<(String, Vec<(f64, f64)>)>) -> Result<PathBuf> {
    let path = dir.join("latency-spectrum.svg");
    draw(
        &Chart {
            title: title.into(),
            x_desc: "percentile".into(),
            y_desc: "latency (us)".into(),
            x_axis: Axis::Percentile,
            y_axis: Axis::Log,
            series: runs
                .into_iter()
                .map(|(name, points)| Series {
                    name,
                    points,
                    model: false,
                })
                .collect(),
            hlines: Vec::new(),
            vlines: None,
        },
        &path,
    )?;
    Ok(path)
}

/// Latency (p50, p99, p99.9, max per second) and delivered rate over time, with a marker
/// at each checkpoint's trigger (`checkpoints_s`, seconds since the start).
pub fn timeline(
    dir: &Path,
    title: &str,
    rows: &[Interval],
    checkpoints_s: &[f64],
) -> Result<Vec<PathBuf>> {
    let lat = dir.join("latency-over-time.svg");
    let pick = |f: fn(&Interval) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.t_s, f(r))).collect()
    };
    let s = |name: &str, points| Series {
        name: name.into(),
        points,
        model: false,
    };
    draw(
        &Chart {
            title: format!("{title}: latency by due time (1 s intervals)"),
            x_desc: "seconds since start (warm-up included)".into(),
            y_desc: "latency (us)".into(),
            x_axis: Axis::Linear,
            y_axis: Axis::Log,
            series: vec![
                s("p50", pick(|r| r.p50_us)),
                s("p99", pick(|r| r.p99_us)),
                s("p99.9", pick(|r| r.p999_us)),
                s("max", pick(|r| r.max_us)),
            ],
            hlines: Vec::new(),
            vlines: (!checkpoints_s.is_empty())
                .then(|| ("checkpoint".to_string(), checkpoints_s.to_vec())),
        },
        &lat,
    )?;
    let rate = dir.join("rate-over-time.svg");
    draw(
        &Chart {
            title: format!("{title}: events reaching the sink per second"),
            x_desc: "seconds since start".into(),
            y_desc: "events/s".into(),
            x_axis: Axis::Linear,
            y_axis: Axis::Linear,
            series: vec![s("delivered", pick(|r| r.delivered_eps))],
            hlines: Vec::new(),
            vlines: None,
        },
        &rate,
    )?;
    Ok(vec![lat, rate])
}

/// Creates `dir` (and parents).
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(Axis::Percentile.label(1.0), "90%");
        assert_eq!(Axis::Percentile.label(2.0), "99%");
        assert_eq!(Axis::Percentile.label(3.0), "99.9%");
        assert_eq!(Axis::Percentile.label(5.0), "99.999%");
        assert_eq!(Axis::Percentile.label(1.5), "");
        assert_eq!(
            Axis::Percentile.map(0.99).map(|v| (v * 1e9).round()),
            Some(2e9)
        );
        assert_eq!(Axis::Log.map(0.0), None);
        assert_eq!(Axis::Log.label(3.2), "1.6k");
        assert_eq!(Axis::Log.label(6.0), "1M");
        assert_eq!(Axis::Linear.label(250_000.0), "250k");
    }

    #[test]
    fn draws_an_svg() {
        let dir = tempfile::tempdir().unwrap();
        let p = spectrum(
            dir.path(),
            "test",
            vec![("a".into(), vec![(0.0, 10.0), (0.9, 20.0), (0.999, 400.0)])],
        )
        .unwrap();
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("99.9%"),
            "{}",
            &svg[..200.min(svg.len())]
        );
    }
}
