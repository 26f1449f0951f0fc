//! The scenario's calendar: the UTC instant simulated second 0 stands for,
//! and the one real leap second its reference nodes learn of, with when it
//! falls (the next month's first midnight unless the scenario says).

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveTime, Timelike, Utc};
use ntp_proto::leap::{Leap, LeapKind};
use ntp_proto::{NtpDuration, NtpTimestamp};

/// Where the simulation starts when the scenario does not say:
/// 2026-01-01 00:00:00 UTC, any fixed instant making runs repeatable.
pub const DEFAULT_START_UNIX: i64 = 1_767_225_600;

/// When a scenario starts in UTC, and its real leap, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// UTC at simulated second 0.
    pub start: NtpTimestamp,
    /// The leap the scenario's `leap` events announce: what true UTC takes.
    pub leap: Option<Leap>,
}

/// A `leap` event as the timeline reads it.
#[derive(Debug, Clone, Copy)]
pub struct LeapEvent<'a> {
    /// Simulated second at which a reference learns of it.
    pub at: f64,
    /// Which way.
    pub kind: LeapKind,
    /// The midnight it completes at, RFC 3339, if given.
    pub leap_at: Option<&'a str>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self { start: NtpTimestamp::from_unix(DEFAULT_START_UNIX, 0), leap: None }
    }
}

impl Timeline {
    /// From `simulation.start` or `start-unix` and the `leap` events; the
    /// error names the key.
    pub fn new<'a>(
        start: Option<&str>,
        start_unix: Option<i64>,
        leaps: impl IntoIterator<Item = LeapEvent<'a>>,
    ) -> Result<Self, String> {
        let start = match (start, start_unix) {
            (Some(_), Some(_)) => return Err("simulation: give start or start-unix, not both".into()),
            (Some(text), None) => parse_utc("simulation.start", text)?,
            (None, Some(unix)) if (0..=4_000_000_000).contains(&unix) => NtpTimestamp::from_unix(unix, 0),
            (None, Some(unix)) => return Err(format!("simulation.start-unix: {unix} is not a time in 1970-2096")),
            (None, None) => NtpTimestamp::from_unix(DEFAULT_START_UNIX, 0),
        };
        let mut leap: Option<Leap> = None;
        for event in leaps {
            let key = format!("event at {} (leap)", event.at);
            let learnt = start + NtpDuration::from_seconds_f64(event.at);
            let at = match event.leap_at {
                Some(text) => {
                    let at = parse_utc(&format!("{key}: leap-at"), text)?;
                    if !is_month_start(at) {
                        return Err(format!("{key}: leap-at {text} is not 00:00:00 UTC of a month's first day"));
                    }
                    if at - learnt <= NtpDuration::ZERO {
                        return Err(format!("{key}: leap-at {text} has passed by the event's time"));
                    }
                    at
                }
                None => next_month_start(learnt),
            };
            let this = Leap { at, kind: event.kind };
            if leap.is_some_and(|other| other != this) {
                return Err(format!("{key}: a scenario has one real leap; this one differs from an earlier one"));
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
        let time = (self.start + NtpDuration::from_seconds_f64(seconds)).to_datetime();
        format!("{:02}-{:02} {:02}:{:02}:{:02}", time.month(), time.day(), time.hour(), time.minute(), time.second())
    }
}

/// An RFC 3339 time such as `2016-12-31T23:30:00Z`.
fn parse_utc(key: &str, text: &str) -> Result<NtpTimestamp, String> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) if (1970..2096).contains(&time.year()) => Ok(NtpTimestamp::from_datetime(time.with_timezone(&Utc))),
        Ok(_) => Err(format!("{key}: {text} is not in 1970-2095")),
        Err(err) => Err(format!("{key}: {text:?} is not an RFC 3339 time like 2016-12-31T23:30:00Z ({err})")),
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
        let err = parse_utc("simulation.start", "31/12/2016").unwrap_err();
        assert!(err.contains("simulation.start") && err.contains("RFC 3339"), "{err}");
    }
}
