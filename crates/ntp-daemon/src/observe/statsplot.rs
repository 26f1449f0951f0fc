//! `ntpd-sim plot`: a statistics directory (`loopstats`, `peerstats` and
//! their rotated files) drawn as ntpviz draws NTPsec's: offset, delay,
//! jitter and frequency over time, for the clock and per upstream, with the
//! simulator's plotting code (`ntp-plot`). The lines are read back through
//! the record types the daemon writes them with ([`LoopRecord`], [`PeerRecord`]). The output is one HTML page
//! or one SVG with the four plots stacked, headed by a convergence verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use ntp_plot::{human_seconds, render_svg, Plot, PlotError, Scale, Series};

use super::statslog::{rotated, LoopRecord, PeerRecord, KEEP, LOOPSTATS, PEERSTATS};

/// Width and height of one plot.
const SIZE: (u32, u32) = (1000, 420);
/// The clock counts as converged when its last [`SETTLED_UPDATES`] offsets
/// are all within this.
pub const CONVERGED: f64 = 1e-3;
/// See [`CONVERGED`].
pub const SETTLED_UPDATES: usize = 5;

/// Why the plot could not be made.
#[derive(Debug, Error)]
pub enum StatsPlotError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A line is not in the documented format.
    #[error("{path}:{line}: not a {kind} line: {text}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// loopstats or peerstats.
        kind: &'static str,
        /// The line.
        text: String,
    },
    /// Nothing to draw.
    #[error("no statistics in {0} (is it a serve --stats-dir of a daemon with upstreams?)")]
    Empty(PathBuf),
    /// Drawing failed.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// What a statistics directory holds.
#[derive(Debug, Clone, Default)]
pub struct Statistics {
    /// Clock updates, oldest first.
    pub loops: Vec<LoopRecord>,
    /// Upstream samples, oldest first.
    pub peers: Vec<PeerRecord>,
}

impl Statistics {
    /// Reads every (rotated and current) file of `dir`, oldest first.
    pub fn read(dir: &Path) -> Result<Self, StatsPlotError> {
        let mut stats = Self::default();
        for (path, line, text) in lines(dir, LOOPSTATS)? {
            let record = text.parse().map_err(|()| parse_error(path, line, "loopstats", &text))?;
            stats.loops.push(record);
        }
        for (path, line, text) in lines(dir, PEERSTATS)? {
            let record = text.parse().map_err(|()| parse_error(path, line, "peerstats", &text))?;
            stats.peers.push(record);
        }
        if stats.loops.is_empty() && stats.peers.is_empty() {
            return Err(StatsPlotError::Empty(dir.into()));
        }
        Ok(stats)
    }

    /// A one-line verdict: has the clock converged?
    #[must_use]
    pub fn verdict(&self) -> String {
        let tail = &self.loops[self.loops.len().saturating_sub(SETTLED_UPDATES)..];
        let worst = tail.iter().map(|r| r.offset.abs()).fold(0.0, f64::max);
        let span = self.span();
        if tail.len() < SETTLED_UPDATES {
            format!("not converged yet: {} clock updates in {span:.0} s", self.loops.len())
        } else if worst < CONVERGED {
            format!(
                "converged: the last {SETTLED_UPDATES} clock offsets are within {} (under {}), {span:.0} s of statistics",
                human_seconds(worst),
                human_seconds(CONVERGED)
            )
        } else {
            format!("NOT converged: one of the last {SETTLED_UPDATES} clock offsets is {}", human_seconds(worst))
        }
    }

    fn start(&self) -> f64 {
        let first = self.loops.first().map(|r| r.time).into_iter().chain(self.peers.first().map(|r| r.time));
        first.fold(f64::MAX, f64::min)
    }

    fn span(&self) -> f64 {
        let last = self.loops.last().map(|r| r.time).into_iter().chain(self.peers.last().map(|r| r.time));
        last.fold(f64::MIN, f64::max) - self.start()
    }

    /// The four plots' series: offset, delay, jitter, frequency.
    #[must_use]
    pub fn series(&self) -> [(&'static str, &'static str, Scale, Vec<Series>); 4] {
        let t0 = self.start();
        let clock = |name: &str, f: &dyn Fn(&LoopRecord) -> f64| Series {
            name: name.into(),
            group: "clock".into(),
            points: self.loops.iter().map(|r| (r.time - t0, f(r))).collect(),
        };
        let mut per_upstream: BTreeMap<&str, Vec<&PeerRecord>> = BTreeMap::new();
        for record in &self.peers {
            per_upstream.entry(&record.upstream).or_default().push(record);
        }
        let upstreams = |f: &dyn Fn(&PeerRecord) -> f64| -> Vec<Series> {
            (per_upstream.iter())
                .map(|(name, records)| Series {
                    name: (*name).into(),
                    group: (*name).into(),
                    points: records.iter().map(|r| (r.time - t0, f(r))).collect(),
                })
                .collect()
        };
        let with_clock = |clock: Series, mut rest: Vec<Series>| {
            rest.insert(0, clock);
            rest.retain(|s| !s.points.is_empty());
            rest
        };
        [
            (
                "offset",
                "|offset| (s)",
                Scale::LogAbs,
                with_clock(clock("clock", &|r| r.offset), upstreams(&|r| r.offset)),
            ),
            ("delay", "delay (s)", Scale::Linear, upstreams(&|r| r.delay)),
            (
                "jitter",
                "jitter (s)",
                Scale::LogAbs,
                with_clock(clock("clock", &|r| r.jitter), upstreams(&|r| r.jitter)),
            ),
            (
                "frequency",
                "frequency correction (ppm)",
                Scale::Linear,
                with_clock(clock("clock", &|r| r.frequency_ppm), vec![]),
            ),
        ]
    }

    /// The plots as SVG documents, each captioned.
    pub fn render(&self) -> Result<Vec<(String, String)>, PlotError> {
        let mut colours = vec!["clock".to_string()];
        for record in &self.peers {
            if !colours.contains(&record.upstream) {
                colours.push(record.upstream.clone());
            }
        }
        colours[1..].sort();
        let mut out = Vec::new();
        for (what, y_label, scale, series) in self.series() {
            if series.is_empty() {
                continue;
            }
            let title = match what {
                "offset" => "offset: clock (phase error at each update) and upstreams (minus our clock)".to_string(),
                "delay" => "round-trip delay per upstream".to_string(),
                "jitter" => "jitter: clock (discipline) and upstreams (clock filter)".to_string(),
                _ => "frequency correction of the clock".to_string(),
            };
            let plot = Plot {
                title: &title,
                x_label: "time since the first record (s)",
                y_label,
                scale,
                series: &series,
                colours: &colours,
            };
            out.push((title.clone(), render_svg(&plot, SIZE.0, SIZE.1)?));
        }
        Ok(out)
    }
}

/// Draws `dir` into `out`: HTML if it ends in `.html`/`.htm`, else SVG.
pub fn plot_dir(dir: &Path, out: &Path) -> Result<String, StatsPlotError> {
    let stats = Statistics::read(dir)?;
    let plots = stats.render()?;
    let verdict = stats.verdict();
    let html = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let document = if html { page(dir, &verdict, &plots) } else { stacked(&verdict, &plots) };
    std::fs::write(out, document).map_err(|e| StatsPlotError::Io(out.into(), e))?;
    Ok(verdict)
}

fn page(dir: &Path, verdict: &str, plots: &[(String, String)]) -> String {
    let mut html =
        String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ntpd-sim statistics</title>");
    html.push_str("<style>body{font-family:sans-serif;margin:2em} figure{margin:1em 0}</style></head><body>\n");
    let _ = writeln!(html, "<h1>ntpd-sim statistics: {}</h1>", escape(&dir.display().to_string()));
    let _ = writeln!(html, "<p><strong>{}</strong></p>", escape(verdict));
    for (title, svg) in plots {
        let _ = writeln!(html, "<figure><figcaption>{}</figcaption>\n{svg}\n</figure>", escape(title));
    }
    html.push_str("</body></html>\n");
    html
}

/// One SVG: a verdict line over the plots, each a nested `<svg>`.
fn stacked(verdict: &str, plots: &[(String, String)]) -> String {
    let header = 40;
    let height = header + SIZE.1 * plots.len() as u32;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"12\" y=\"26\" font-family=\"sans-serif\" font-size=\"18\" font-weight=\"bold\">{}</text>\n",
        escape(verdict),
        w = SIZE.0,
    );
    for (i, (_, plot)) in plots.iter().enumerate() {
        let y = header + SIZE.1 * i as u32;
        let body = plot.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").trim_start();
        let _ = writeln!(svg, "{}", body.replacen("<svg ", &format!("<svg x=\"0\" y=\"{y}\" "), 1));
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

type Line = (PathBuf, usize, String);

/// The data lines of `base` and its rotated files, oldest file first.
fn lines(dir: &Path, base: &str) -> Result<Vec<Line>, StatsPlotError> {
    let current = dir.join(base);
    let mut paths: Vec<PathBuf> = (1..=KEEP).rev().map(|k| rotated(&current, k)).collect();
    paths.push(current);
    let mut out = Vec::new();
    for path in paths.into_iter().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(&path).map_err(|e| StatsPlotError::Io(path.clone(), e))?;
        for (i, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() || line_text.starts_with('#') {
                continue;
            }
            out.push((path.clone(), i + 1, line_text.to_string()));
        }
    }
    Ok(out)
}

fn parse_error(path: PathBuf, line: usize, kind: &'static str, text: &str) -> StatsPlotError {
    StatsPlotError::Parse { path, line, kind, text: text.into() }
}
