//! ntp-sim: NTP hierarchies in simulated time (`ntpd-sim simulate`),
//! driven through the daemon's own `ntp-proto` code by a discrete-event
//! scheduler. No sockets, no tokio, no clock but the simulated one: the
//! same seed gives the same bytes.
//!
//! # Layout
//! - this file: [`run_file`] and [`run`], a scenario from file to
//!   [`Outcome`] (and, with `--out`, the files of [`report`] and the plot).
//! - [`scenario`]: reads and expands the scenario file.
//! - [`engine`]: the discrete-event simulation of nodes and links.
//! - [`timeline`]: the UTC instant the scenario starts at and its real
//!   leap second.
//! - [`leap`]: what each node did across the leap, as a table.
//! - [`report`]: per-node summaries, the table, the CSV time series; the
//!   SVG comes from `ntp-plot`.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod engine;
pub mod leap;
pub mod report;
pub mod scenario;
pub mod timeline;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use engine::{Record, Simulation};
use leap::LeapSummary;
use ntp_plot::{render_svg, Plot, PlotError, Scale, Series};
use ntp_proto::leap::LeapMode;
use report::NodeSummary;
use scenario::{Scenario, ScenarioError};

/// Nodes of one stratum drawn on the plot at most.
const MAX_LINES_PER_GROUP: usize = 12;

/// How to run a scenario, beyond the file.
#[derive(Debug, Clone, Default)]
pub struct SimulateOptions {
    /// Overrides `simulation.seed`.
    pub seed: Option<u64>,
    /// Overrides `simulation.duration`, seconds.
    pub duration: Option<f64>,
    /// Where to write summary.txt, series/*.csv and offset.svg.
    pub out: Option<PathBuf>,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One summary per node.
    pub summaries: Vec<NodeSummary>,
    /// What each node did across the leap (empty without leap events).
    pub leap: Vec<LeapSummary>,
    /// The summary table as printed (and the leap table after it, if any).
    pub table: String,
    /// Each node's name and time series.
    pub series: Vec<(String, Vec<Record>)>,
    /// Events processed.
    pub events: u64,
    /// Wall-clock time taken.
    pub wall: Duration,
}

/// Why a simulation failed.
#[derive(Debug, Error)]
pub enum SimulateError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// What was being written.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The plot failed.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Parses a duration: seconds, or a number with `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => return Err(format!("unknown unit in {text:?}: use s, m, h or d")),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(format!("{text:?} is not a positive duration")),
    }
}

/// Runs the scenario file at `path`.
pub fn run_file(path: &Path, options: &SimulateOptions) -> Result<Outcome, SimulateError> {
    let scenario = Scenario::load(path)?;
    run(&scenario, options)
}

/// Runs a scenario and writes its outputs if asked.
pub fn run(scenario: &Scenario, options: &SimulateOptions) -> Result<Outcome, SimulateError> {
    let seed = options.seed.unwrap_or(scenario.simulation.seed);
    let duration = options.duration.unwrap_or(scenario.simulation.duration);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let plans = scenario::expand(scenario, &mut rng)?;
    let mut simulation = Simulation::new(scenario, plans, duration, rng);

    let bar = progress_bar(options.progress, duration);
    let started = Instant::now();
    simulation.run(|done| bar.set_position(done as u64));
    bar.finish_and_clear();
    let wall = started.elapsed();

    let summaries: Vec<NodeSummary> =
        simulation.results().map(|(plan, series)| NodeSummary::new(plan, series)).collect();
    let title = scenario.simulation.title.clone().unwrap_or_else(|| "simulation".to_string());
    let mut table = report::table(&format!("{title} (seed {seed}, {duration} s simulated)"), &summaries, None);
    let leap: Vec<LeapSummary> = if scenario.has_leap_events() {
        simulation.results().map(|(plan, series)| LeapSummary::new(plan, series)).collect()
    } else {
        Vec::new()
    };
    if !leap.is_empty() {
        table.push('\n');
        table.push_str(&leap::table(&scenario.timeline, &leap));
    }
    if let Some(dir) = &options.out {
        write_outputs(dir, scenario, &simulation, &title, &table)?;
    }
    let series = simulation.results().map(|(plan, series)| (plan.name.clone(), series.to_vec())).collect();
    Ok(Outcome { summaries, leap, table, series, events: simulation.processed, wall })
}

fn progress_bar(wanted: bool, duration: f64) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(duration as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} simulated s  eta {eta}") {
        bar.set_style(style);
    }
    bar
}

fn write_outputs(
    dir: &Path,
    scenario: &Scenario,
    simulation: &Simulation<'_>,
    title: &str,
    table: &str,
) -> Result<(), SimulateError> {
    let fail = |path: &Path| {
        let path = path.display().to_string();
        move |source| SimulateError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    std::fs::write(dir.join("summary.txt"), table).map_err(fail(&dir.join("summary.txt")))?;
    let leaps = scenario.has_leap_events();
    // With a leap, time is drawn in hours from its midnight and the offset
    // from UTC on a linear axis, where the smear's half second shows.
    let leap_at = scenario.timeline.leap_second().filter(|_| leaps);
    let x = |time: f64| leap_at.map_or(time, |at| (time - at) / 3600.0);
    let mut lines: Vec<Series> = Vec::new();
    for (plan, series) in simulation.results() {
        report::write_series(dir, plan, series, leaps).map_err(fail(&dir.join("series")))?;
        let mut group = match series.last().map_or(0, |r| r.stratum) {
            0 => "unsynchronized".to_string(),
            s => format!("stratum {s}"),
        };
        if let LeapMode::Smear(smear) = plan.leap_mode {
            group.push_str(&format!(", smearing {} s", smear.window()));
        }
        if lines.iter().filter(|l| l.group == group).count() < MAX_LINES_PER_GROUP {
            let points = series.iter().map(|r| (x(r.time), r.offset)).collect();
            lines.push(Series { name: plan.name.clone(), group, points });
        }
    }
    lines.sort_by(|a, b| a.group.cmp(&b.group));
    let (plot_title, x_label, y_label, scale) = if leaps {
        (
            format!("{title}: offset from UTC"),
            if leap_at.is_some() { "hours from the leap (UTC midnight)" } else { "simulated time (s)" },
            "served time − UTC (s)",
            Scale::Linear,
        )
    } else {
        (
            format!("{title}: |offset| from true time"),
            "simulated time (s)",
            "|offset| (s), log scale: dips are zero crossings",
            Scale::LogAbs,
        )
    };
    let plot = Plot { title: &plot_title, x_label, y_label, scale, series: &lines, colours: &[] };
    let svg = render_svg(&plot, 1000, 600)?;
    std::fs::write(dir.join("offset.svg"), svg).map_err(fail(&dir.join("offset.svg")))?;
    Ok(())
}
