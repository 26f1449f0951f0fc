//! Leap seconds in a scenario: the UTC instant the simulation starts at,
//! the one real leap its reference nodes learn of (and when it falls), and
//! what each node did across it, as a table.
//!
//! The nodes take the leap with the daemon's own `ntp_proto::leap::LeapSchedule`
//! (see the engine); this module only reads the scenario's times and sums up
//! the time series.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Timelike, Utc};
use ntp_plot::human_seconds;
use ntp_proto::leap::{Leap, LeapKind, LeapMode};
use ntp_proto::packet::LeapIndicator;
use ntp_proto::NtpTimestamp;

use super::engine::Record;
use super::scenario::{Action, LeapChoice, NodePlan, Scenario, ScenarioError};

/// Where the simulation starts when the scenario does not say:
/// 2026-01-01 00:00:00 UTC, any fixed instant making runs repeatable.
pub const DEFAULT_START_UNIX: i64 = 1_767_225_600;

/// A served-time step between two records larger than this is a leap
/// second taken (or a clock step), not a rate.
const JUMP: f64 = 0.5;

/// The scenario's calendar: when it starts, and the real leap, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// UTC at simulated second 0.
    pub start: NtpTimestamp,
    /// The leap the scenario's `leap` events announce: what true UTC takes.
    pub leap: Option<Leap>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self { start: NtpTimestamp::from_unix(DEFAULT_START_UNIX, 0), leap: None }
    }
}

impl Timeline {
    /// Reads `simulation.start` / `start-unix` and the `leap` events.
    pub fn of(scenario: &Scenario) -> Result<Self, ScenarioError> {
        let s = &scenario.simulation;
        let start = match (&s.start, s.start_unix) {
            (Some(_), Some(_)) => return invalid("simulation: give start or start-unix, not both"),
            (Some(text), None) => parse_utc("simulation.start", text)?,
            (None, Some(unix)) if (0..=4_000_000_000).contains(&unix) => NtpTimestamp::from_unix(unix, 0),
            (None, Some(unix)) => return invalid(format!("simulation.start-unix: {unix} is not a time in 1970-2096")),
            (None, None) => NtpTimestamp::from_unix(DEFAULT_START_UNIX, 0),
        };
        let mut leap: Option<Leap> = None;
        for event in scenario.events.iter().filter(|e| e.action == Action::Leap) {
            let key = format!("event at {} (leap)", event.at);
            let kind = match event.kind {
                Some(LeapChoice::Insert) => LeapKind::Insert,
                Some(LeapChoice::Delete) => LeapKind::Delete,
                _ => return invalid(format!("{key}: kind must be \"insert\" or \"delete\"")),
            };
            let learnt = start + ntp_proto::NtpDuration::from_seconds_f64(event.at);
            let at = match &event.leap_at {
                Some(text) => {
                    let at = parse_utc(&format!("{key}: leap-at"), text)?;
                    if !is_month_start(at) {
                        return invalid(format!("{key}: leap-at {text} is not 00:00:00 UTC of a month's first day"));
                    }
                    if at - learnt <= ntp_proto::NtpDuration::ZERO {
                        return invalid(format!("{key}: leap-at {text} has passed by the event's time"));
                    }
                    at
                }
                None => next_month_start(learnt),
            };
            let this = Leap { at, kind };
            if leap.is_some_and(|other| other != this) {
                return invalid(format!("{key}: a scenario has one real leap; this one differs from an earlier one"));
            }
            leap = Some(this);
        }
        Ok(Self { start, leap })
    }

    /// The leap's midnight as simulated seconds.
    #[must_use]
    pub fn leap_second(&self) -> Option<f64> {
        self.leap.map(|leap| (leap.at - self.start).to_seconds_f64())
    }

    /// A simulated second as `MM-DD HH:MM:SS` UTC (true time).
    #[must_use]
    pub fn clock(&self, seconds: f64) -> String {
        let time = (self.start + ntp_proto::NtpDuration::from_seconds_f64(seconds)).to_datetime();
        format!("{:02}-{:02} {:02}:{:02}:{:02}", time.month(), time.day(), time.hour(), time.minute(), time.second())
    }
}

fn invalid<T>(message: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(message.into()))
}

/// An RFC 3339 time such as `2016-12-31T23:30:00Z`.
fn parse_utc(key: &str, text: &str) -> Result<NtpTimestamp, ScenarioError> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) if (1970..2096).contains(&time.year()) => Ok(NtpTimestamp::from_datetime(time.with_timezone(&Utc))),
        Ok(_) => invalid(format!("{key}: {text} is not in 1970-2095")),
        Err(err) => invalid(format!("{key}: {text:?} is not an RFC 3339 time like 2016-12-31T23:30:00Z ({err})")),
    }
}

fn is_month_start(at: NtpTimestamp) -> bool {
    let time = at.to_datetime();
    time.day() == 1 && time.time() == NaiveTime::MIN
}

/// 00:00:00 UTC of the first day of the month after the one `after` is in.
fn next_month_start(after: NtpTimestamp) -> NtpTimestamp {
    let date = after.to_datetime().date_naive();
    let first =
        NaiveDate::from_ymd_opt(date.year(), date.month(), 1).and_then(|d| d.checked_add_months(Months::new(1)));
    first.map_or(after, |d| NtpTimestamp::from_datetime(d.and_time(NaiveTime::MIN).and_utc()))
}

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
        let announced = series.iter().filter(|r| matches!(r.leap, LeapIndicator::Insert | LeapIndicator::Delete));
        let announced = announced.clone().next().zip(announced.last()).map(|(a, b)| (a.time, b.time));
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
/// it, the second it took, and how far and how fast its served time
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
            let _ = writeln!(out, "leap second {kind} before {at} UTC, simulated second {:.0}", leap_second(timeline));
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

fn leap_second(timeline: &Timeline) -> f64 {
    timeline.leap_second().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_month_start_is_the_leap_midnight() {
        let dec_31 = NtpTimestamp::from_unix(1_483_227_000, 0); // 2016-12-31 23:30:00
        assert_eq!(next_month_start(dec_31), NtpTimestamp::from_unix(1_483_228_800, 0));
        assert!(is_month_start(NtpTimestamp::from_unix(1_483_228_800, 0)));
        assert!(!is_month_start(dec_31));
        let june = parse_utc("t", "2016-06-30T22:00:00Z").unwrap();
        assert_eq!(next_month_start(june).to_datetime().to_rfc3339(), "2016-07-01T00:00:00+00:00");
    }

    #[test]
    fn times_that_are_not_rfc_3339_are_named() {
        let err = parse_utc("simulation.start", "31/12/2016").unwrap_err().to_string();
        assert!(err.contains("simulation.start") && err.contains("RFC 3339"), "{err}");
    }
}
