//! What each node did across a leap second, from its time series: when it
//! announced the leap, how the second went by in its served time, and how
//! far and how fast that time moved against UTC, as a table.
//!
//! The nodes take the leap with the daemon's own `ntp_proto::leap::LeapSchedule`
//! (see the engine); this module only sums up what they recorded.

use std::fmt::Write as _;

use ntp_plot::human_seconds;
use ntp_proto::leap::{LeapKind, LeapMode};
use ntp_proto::packet::LeapIndicator;

use super::engine::Record;
use super::scenario::NodePlan;
use super::timeline::Timeline;

/// A served-time step between two records larger than this is a leap
/// second taken (or a clock step), not a rate.
const JUMP: f64 = 0.5;
/// A node this far from UTC without a jump has had a leap spread over
/// its served time: it is smearing, or following a smear.
const SPREAD: f64 = 0.25;

/// What one node did across the leap.
#[derive(Debug, Clone, PartialEq)]
pub struct LeapSummary {
    /// Node name.
    pub name: String,
    /// How it serves a leap.
    pub mode: LeapMode,
    /// First and last record time (s) at which it announced a leap.
    pub announced: Option<(f64, f64)>,
    /// Served time's steps between records beyond the rate: −1 s for an
    /// inserted second, +1 s for a deleted one. Counted from the first
    /// record within 1 ms of UTC, so a client's initial step is not one.
    pub jumps: Vec<f64>,
    /// Largest |offset from UTC| from that record on.
    pub max_offset: Option<f64>,
    /// Largest rate of served time against true time, jumps left out,
    /// from that record on, ppm.
    pub max_rate_ppm: Option<f64>,
}

impl LeapSummary {
    /// Sums up one node's series.
    #[must_use]
    pub fn new(plan: &NodePlan, series: &[Record]) -> Self {
        let announcing = |r: &&Record| matches!(r.leap, LeapIndicator::Insert | LeapIndicator::Delete);
        let first = series.iter().find(announcing);
        let announced = first.zip(series.iter().rev().find(announcing)).map(|(a, b)| (a.time, b.time));
        let from = series.iter().position(|r| r.offset.abs() < 1e-3);
        let after = from.map_or(&series[..0], |i| &series[i..]);
        let mut jumps = Vec::new();
        let mut max_rate: Option<f64> = None;
        for pair in after.windows(2) {
            let interval = pair[1].time - pair[0].time;
            let beyond = (pair[1].served - pair[0].served) - interval;
            if beyond.abs() > JUMP {
                jumps.push(beyond);
            } else if interval > 0.0 {
                max_rate = Some(max_rate.unwrap_or(0.0).max((beyond / interval).abs() * 1e6));
            }
        }
        let max_offset = from.map(|_| after.iter().fold(0.0f64, |m, r| m.max(r.offset.abs())));
        Self { name: plan.name.clone(), mode: plan.leap_mode, announced, jumps, max_offset, max_rate_ppm: max_rate }
    }
}

/// The leap table: per node, how it serves the leap, when it announced
/// it, how the second went by (`repeated` or `skipped` between two
/// records; `smeared` when its served time came 0.25 s or more from UTC
/// without a jump; `none`), and how far and how fast its served time
/// moved against UTC.
#[must_use]
pub fn table(timeline: &Timeline, summaries: &[LeapSummary]) -> String {
    let mut out = String::new();
    match timeline.leap {
        Some(leap) => {
            let kind = match leap.kind {
                LeapKind::Insert => "inserted",
                LeapKind::Delete => "deleted",
            };
            let at = leap.at.to_datetime().format("%Y-%m-%d %H:%M:%S");
            let second = timeline.leap_second().unwrap_or(0.0);
            let _ = writeln!(out, "leap second {kind} before {at} UTC, simulated second {second:.0}");
        }
        None => {
            let _ = writeln!(out, "no leap second (true UTC steps nowhere)");
        }
    }
    let _ = writeln!(
        out,
        "{:<16} {:>13} {:>29} {:>10} {:>12} {:>11}",
        "node", "serves", "announced (UTC)", "second", "max offset", "max rate"
    );
    for s in summaries {
        let mode = match s.mode {
            LeapMode::Step => "step".to_string(),
            LeapMode::Smear(smear) => format!("smear {} s", smear.window()),
        };
        let announced = s.announced.map_or_else(
            || "never".to_string(),
            |(from, to)| format!("{} - {}", timeline.clock(from), timeline.clock(to)),
        );
        let second = match s.jumps.as_slice() {
            [] if s.max_offset.is_some_and(|m| m >= SPREAD) => "smeared".to_string(),
            [] => "none".to_string(),
            [j] if (j + 1.0).abs() < 0.1 => "repeated".to_string(),
            [j] if (j - 1.0).abs() < 0.1 => "skipped".to_string(),
            jumps => format!("{} steps", jumps.len()),
        };
        let never = || "never".to_string();
        let _ = writeln!(
            out,
            "{:<16} {:>13} {:>29} {:>10} {:>12} {:>11}",
            s.name,
            mode,
            announced,
            second,
            s.max_offset.map_or_else(never, human_seconds),
            s.max_rate_ppm.map_or_else(never, |r| format!("{r:.1} ppm")),
        );
    }
    out
}
