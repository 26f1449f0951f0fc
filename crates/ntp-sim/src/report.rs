//! What a simulation run says: a summary per node (stratum, settling
//! times, error after convergence, frequency) as a table, and each node's
//! time series as CSV.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use ntp_plot::human_seconds;

use super::engine::Record;
use super::scenario::NodePlan;

/// One node's results.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Stratum advertised at the end (0: unsynchronized).
    pub stratum: u8,
    /// Seconds after which it stayed within 1 ms of true time.
    pub within_1ms: Option<f64>,
    /// Seconds after which it stayed within 100 µs of true time.
    pub within_100us: Option<f64>,
    /// RMS offset after it came within 1 ms, seconds.
    pub rms_after: Option<f64>,
    /// Largest |offset| after it came within 1 ms, seconds.
    pub max_after: Option<f64>,
    /// Frequency error of its clock at the end, ppm.
    pub final_frequency_ppm: f64,
}

impl NodeSummary {
    /// Summarizes one node's series.
    #[must_use]
    pub fn new(plan: &NodePlan, series: &[Record]) -> Self {
        let within_1ms = settled(series, 1e-3);
        let after: Vec<f64> =
            within_1ms.map(|t| series.iter().filter(|r| r.time >= t).map(|r| r.offset).collect()).unwrap_or_default();
        let rms_after =
            (!after.is_empty()).then(|| (after.iter().map(|o| o * o).sum::<f64>() / after.len() as f64).sqrt());
        let max_after = (!after.is_empty()).then(|| after.iter().fold(0.0f64, |m, o| m.max(o.abs())));
        let last = series.last();
        Self {
            name: plan.name.clone(),
            stratum: last.map_or(0, |r| r.stratum),
            within_1ms,
            within_100us: settled(series, 1e-4),
            rms_after,
            max_after,
            final_frequency_ppm: last.map_or(0.0, |r| r.frequency_ppm),
        }
    }
}

/// The time of the first record from which every later one is within
/// `bound` of true time; `None` if the last one is not.
fn settled(series: &[Record], bound: f64) -> Option<f64> {
    let last_outside = series.iter().rposition(|r| r.offset.abs() >= bound);
    match last_outside {
        None => series.first().map(|r| r.time),
        Some(i) => series.get(i + 1).map(|r| r.time),
    }
}

/// The summary as a table a person reads at a glance. With many nodes,
/// groups of more than `max_rows` nodes are folded into a line of
/// aggregates.
#[must_use]
pub fn table(title: &str, summaries: &[NodeSummary], events_per_second: Option<f64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "node", "stratum", "≤1 ms after", "≤100 µs after", "RMS after", "max after", "freq error"
    );
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or_else(|| "never".to_string(), f);
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<16} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
            s.name,
            s.stratum,
            opt(s.within_1ms, |t| format!("{t:.0} s")),
            opt(s.within_100us, |t| format!("{t:.0} s")),
            opt(s.rms_after, human_seconds),
            opt(s.max_after, human_seconds),
            format!("{:+.3} ppm", s.final_frequency_ppm),
        );
    }
    if let Some(rate) = events_per_second {
        let _ = writeln!(out, "({rate:.0} events per second of wall time)");
    }
    out
}

/// Writes `<dir>/series/<node>.csv`: time, offset, frequency, stratum,
/// and with `leap` the leap indicator advertised (`none`, `insert`,
/// `delete`, `unsynchronized`).
pub fn write_series(dir: &Path, plan: &NodePlan, series: &[Record], leap: bool) -> io::Result<()> {
    let dir = dir.join("series");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::with_capacity(series.len() * 56);
    text.push_str(if leap {
        "time_s,offset_s,frequency_ppm,stratum,leap\n"
    } else {
        "time_s,offset_s,frequency_ppm,stratum\n"
    });
    for r in series {
        let _ = write!(text, "{:.3},{:.9e},{:.6},{}", r.time, r.offset, r.frequency_ppm, r.stratum);
        if leap {
            let _ = write!(text, ",{}", r.leap.name());
        }
        text.push('\n');
    }
    std::fs::write(dir.join(format!("{}.csv", plan.name)), text)
}
