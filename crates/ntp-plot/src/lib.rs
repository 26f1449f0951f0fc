//! SVG plots of time series (offset, delay, jitter, frequency), shared by
//! the simulator and `ntpd-sim plot`: one line per series, coloured by
//! group, so a person sees at a glance whether clocks have converged.
//!
//! # Layout
//! - this file: [`Plot`], [`Series`], [`Scale`] and [`render_svg`].
//! - [`units`]: [`human_seconds`], the durations the reports and tables print.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod units;

pub use units::human_seconds;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use thiserror::Error;

/// One line on a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Label in the legend.
    pub name: String,
    /// Series of one group share a colour (e.g. "stratum 2").
    pub group: String,
    /// (x, y) points in order of x.
    pub points: Vec<(f64, f64)>,
}

/// How to draw the y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// log10 of |y|: offsets from minutes down to nanoseconds on one plot.
    LogAbs,
}

/// A plot to draw.
#[derive(Debug, Clone)]
pub struct Plot<'a> {
    /// Caption.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// Y scale.
    pub scale: Scale,
    /// The lines.
    pub series: &'a [Series],
    /// Groups in colour order, so that several plots colour alike; groups
    /// not listed follow in order of appearance.
    pub colours: &'a [String],
}

/// Drawing failed (only on internal plotting errors).
#[derive(Debug, Error)]
#[error("plotting failed: {0}")]
pub struct PlotError(String);

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The smallest |y| drawn on a log axis.
const LOG_FLOOR: f64 = 1e-9;

/// Renders the plot as an SVG document.
pub fn render_svg(plot: &Plot<'_>, width: u32, height: u32) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw(plot, &mut svg, width, height).map_err(PlotError)?;
    Ok(svg)
}

fn draw(plot: &Plot<'_>, out: &mut String, width: u32, height: u32) -> Result<(), String> {
    let root = SVGBackend::with_string(out, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let points = || plot.series.iter().flat_map(|s| s.points.iter().copied());
    let (x_min, x_max) = points().fold((f64::MAX, f64::MIN), |(lo, hi), (x, _)| (lo.min(x), hi.max(x)));
    let (x_min, x_max) = if x_min < x_max { (x_min, x_max) } else { (0.0, 1.0) };
    let listed: Vec<&str> = plot.colours.iter().map(String::as_str).collect();
    let groups: Vec<&str> = plot.series.iter().fold(listed, |mut groups, s| {
        if !groups.contains(&s.group.as_str()) {
            groups.push(s.group.as_str());
        }
        groups
    });
    let colour = |group: &str| PALETTE[groups.iter().position(|g| *g == group).unwrap_or(0) % PALETTE.len()];
    let mut chart = ChartBuilder::on(&root);
    chart.caption(plot.title, ("sans-serif", 22)).margin(12).x_label_area_size(40).y_label_area_size(80);
    match plot.scale {
        Scale::LogAbs => {
            let hi = points().map(|(_, y)| y.abs()).fold(LOG_FLOOR * 10.0, f64::max);
            let lo = points().map(|(_, y)| y.abs()).filter(|y| *y > 0.0).fold(hi, f64::min).max(LOG_FLOOR);
            let (lo, hi) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()));
            let mut chart = chart.build_cartesian_2d(x_min..x_max, (lo..hi).log_scale()).map_err(text)?;
            chart
                .configure_mesh()
                .x_desc(plot.x_label)
                .y_desc(plot.y_label)
                .y_label_formatter(&|y| format!("{y:.0e}"))
                .draw()
                .map_err(text)?;
            draw_lines(&mut chart, plot.series, &colour, |y| y.abs().max(lo))?;
        }
        Scale::Linear => {
            let (lo, hi) = points().fold((f64::MAX, f64::MIN), |(lo, hi), (_, y)| (lo.min(y), hi.max(y)));
            let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
            let pad = (hi - lo) * 0.05;
            let mut chart = chart.build_cartesian_2d(x_min..x_max, (lo - pad)..(hi + pad)).map_err(text)?;
            let span = hi - lo;
            chart
                .configure_mesh()
                .x_desc(plot.x_label)
                .y_desc(plot.y_label)
                .y_label_formatter(&|y| linear_label(*y, span))
                .draw()
                .map_err(text)?;
            draw_lines(&mut chart, plot.series, &colour, |y| y)?;
        }
    }
    root.present().map_err(text)?;
    Ok(())
}

/// Draws each series as a line (its y values through `y`), coloured by
/// group, with a legend entry for the first series of each group: the same
/// for a linear and a log axis.
fn draw_lines<'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Series],
    colour: &dyn Fn(&str) -> RGBColor,
    y: impl Fn(f64) -> f64,
) -> Result<(), String> {
    for (i, s) in series.iter().enumerate() {
        let c = colour(&s.group);
        let line = s.points.iter().map(|&(px, py)| (px, y(py)));
        let drawn = chart.draw_series(LineSeries::new(line, c.stroke_width(1))).map_err(text)?;
        if first_of_group(series, i) {
            drawn
                .label(s.group.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(text)?;
    Ok(())
}

/// A tick label with as many digits as the axis's span needs: small
/// spans (delays of microseconds) in scientific notation.
fn linear_label(y: f64, span: f64) -> String {
    if span < 1e-2 && y != 0.0 {
        format!("{y:.3e}")
    } else {
        let decimals = (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{y:.decimals$}")
    }
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

fn first_of_group(series: &[Series], i: usize) -> bool {
    !series[..i].iter().any(|s| s.group == series[i].group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_with_a_line_per_series() {
        let series = vec![
            Series {
                name: "a".into(),
                group: "stratum 2".into(),
                points: vec![(0.0, 300.0), (10.0, 1e-3), (20.0, 2e-6)],
            },
            Series {
                name: "b".into(),
                group: "stratum 3".into(),
                points: vec![(0.0, -5.0), (10.0, 1e-4), (20.0, -3e-6)],
            },
        ];
        let plot = Plot {
            title: "offset",
            x_label: "time (s)",
            y_label: "|offset| (s)",
            scale: Scale::LogAbs,
            series: &series,
            colours: &[],
        };
        let svg = render_svg(&plot, 800, 500).unwrap();
        assert!(svg.starts_with("<svg"));
        // Each group's colour: one line and one legend mark apiece.
        for colour in ["#1F77B4", "#FF7F0E"] {
            let lines = svg.lines().filter(|l| l.contains("<polyline") && l.contains(colour)).count();
            assert_eq!(lines, 2, "{colour}");
        }
        assert!(svg.contains("stratum 2") && svg.contains("stratum 3"));
        let linear = Plot { scale: Scale::Linear, ..plot };
        assert!(render_svg(&linear, 800, 500).unwrap().contains("<polyline"));
    }
}
