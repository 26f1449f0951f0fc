//! Leap seconds as pure code: what the next leap is, when to announce it,
//! how a majority of upstreams may announce one, and what time a server
//! serves across it (stepping or smearing).
//!
//! Nothing here reads a clock or a file: the daemon hands in the file's text
//! and the time. Two time scales appear, and every function says which one
//! it takes:
//! - *UTC*: what a server that applies leaps serves, as an NTP timestamp.
//!   It cannot name 23:59:60, and it is what the leap table is indexed by.
//! - *raw*: the server's own continuous clock, which never steps for a leap.
//!   It equals UTC before a leap and differs from it by the leap's
//!   [`LeapKind::correction`] once the leap is done. [`LeapMode`] maps raw
//!   to served time; once [`LeapMode::settled_from`] has passed,
//!   [`LeapSchedule::settle`] adds the correction to the leaps taken and
//!   forgets the leap (no clock is ever stepped for it).
//!
//! # Layout
//! - `list`: the IETF/IERS `leap-seconds.list` file: parse, check the
//!   SHA-1 line and the expiry, emit, and the leap state at a time.
//! - `vote`: the leap indicator a majority of the selected sources agree on.
//! - `mode`: served time across a leap, stepped like the kernel or smeared
//!   linearly noon to noon, and the leap indicator each mode announces.
//! - `schedule`: the leap a server is taking and the ones it has taken,
//!   and what they do to the time it serves and the time it measures.

mod list;
mod mode;
mod schedule;
mod vote;

pub use list::{LeapEntry, LeapListError, LeapSecondsList, LeapState};
pub use mode::{LeapMode, LeapSmear, SmearError, MAX_SMEAR_SECONDS, MIN_SMEAR_SECONDS};
pub use schedule::{Expectation, LeapSchedule};
pub use vote::majority_leap;

use chrono::{Datelike, Days, NaiveDate};

use crate::packet::LeapIndicator;
use crate::time::{NtpDuration, NtpTimestamp};

/// Seconds in a UTC day without a leap.
pub const SECONDS_PER_DAY: u32 = 86_400;

/// Which way a leap second goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeapKind {
    /// 23:59:60 is inserted: the last minute of the day has 61 seconds.
    Insert,
    /// 23:59:59 is deleted: the last minute of the day has 59 seconds.
    Delete,
}

impl LeapKind {
    /// The leap indicator that announces this leap (RFC 5905 §7.3).
    #[must_use]
    pub const fn indicator(self) -> LeapIndicator {
        match self {
            Self::Insert => LeapIndicator::Insert,
            Self::Delete => LeapIndicator::Delete,
        }
    }

    /// From a leap indicator; `None` for "no warning" and "unsynchronized".
    #[must_use]
    pub const fn from_indicator(indicator: LeapIndicator) -> Option<Self> {
        match indicator {
            LeapIndicator::Insert => Some(Self::Insert),
            LeapIndicator::Delete => Some(Self::Delete),
            LeapIndicator::NoWarning | LeapIndicator::Unsynchronized => None,
        }
    }

    /// What UTC minus raw time is once the leap is done: one second less
    /// for an insertion (UTC counted a second twice), one more for a
    /// deletion.
    #[must_use]
    pub const fn correction(self) -> NtpDuration {
        match self {
            Self::Insert => NtpDuration::from_seconds(-1),
            Self::Delete => NtpDuration::ONE_SECOND,
        }
    }
}

/// One leap second: its kind and the UTC midnight at which it completes,
/// 00:00:00 of the first day of a month (the file's "NTP time" of the
/// entry, the first second with the new TAI − UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Leap {
    /// 00:00:00 UTC right after the leap, as an NTP timestamp.
    pub at: NtpTimestamp,
    /// Insertion or deletion.
    pub kind: LeapKind,
}

impl Leap {
    /// The leap an upstream's indicator refers to when read at UTC `now`:
    /// the one at the midnight that ends today, if today is the last day of
    /// a month (ITU-R TF.460 puts leaps only there). `None` on any other
    /// day, so an indicator set early or late is not taken as a leap.
    #[must_use]
    pub fn ending_today(now: NtpTimestamp, kind: LeapKind) -> Option<Self> {
        let today = now.seconds() / SECONDS_PER_DAY;
        let midnight = today.checked_add(1)?.checked_mul(SECONDS_PER_DAY)?;
        let at = NtpTimestamp::from_parts(midnight, 0);
        let midnight_1900 = u64::from(midnight) + era_of(now) * (1 << 32);
        is_first_of_month(midnight_1900).then_some(Self { at, kind })
    }

    /// Whether a stepping server announces this leap when its UTC reads
    /// `utc`: from 00:00:00 of the last day before the leap until the leap
    /// (RFC 5905 §7.3: the bits warn of a leap at the end of the day).
    /// Served UTC stays in that day through an inserted second, so the
    /// bits stay set until the leap is done.
    #[must_use]
    pub fn announced_at(self, utc: NtpTimestamp) -> bool {
        let until = self.at - utc;
        until > NtpDuration::ZERO && until <= NtpDuration::from_seconds(i64::from(SECONDS_PER_DAY))
    }
}

/// Seconds since 1900 (any era) of a timestamp taken to lie within 68
/// years of `pivot`, a time the caller knows the era of.
fn seconds_near(time: NtpTimestamp, pivot: u64) -> i128 {
    let pivot_time = NtpTimestamp::from_parts(pivot as u32, 0);
    let units = (i128::from(pivot) << 32) + (time - pivot_time).wide();
    units >> 32
}

/// The era of a timestamp by the RFC 4330 rule used elsewhere (1968–2104).
fn era_of(time: NtpTimestamp) -> u64 {
    u64::from(time.seconds() & 0x8000_0000 == 0)
}

/// True when `seconds` since 1900 is 00:00:00 UTC of a month's first day.
fn is_first_of_month(seconds: u64) -> bool {
    if seconds % u64::from(SECONDS_PER_DAY) != 0 {
        return false;
    }
    let days = seconds / u64::from(SECONDS_PER_DAY);
    NaiveDate::from_ymd_opt(1900, 1, 1)
        .and_then(|epoch| epoch.checked_add_days(Days::new(days)))
        .is_some_and(|date| date.day() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2017-01-01 00:00:00 UTC, right after the leap that took TAI − UTC
    /// from 36 to 37 s.
    const JAN_2017: u32 = 3_692_217_600;

    #[test]
    fn first_of_month() {
        assert!(is_first_of_month(u64::from(JAN_2017)));
        assert!(!is_first_of_month(u64::from(JAN_2017 - SECONDS_PER_DAY)));
        assert!(!is_first_of_month(u64::from(JAN_2017 + 1)));
        assert!(!is_first_of_month(u64::MAX));
    }

    #[test]
    fn upstream_indicator_counts_only_on_the_last_day_of_a_month() {
        let dec_31_noon = NtpTimestamp::from_parts(JAN_2017 - 43_200, 0);
        let leap = Leap::ending_today(dec_31_noon, LeapKind::Insert);
        assert_eq!(leap, Some(Leap { at: NtpTimestamp::from_parts(JAN_2017, 0), kind: LeapKind::Insert }));
        let dec_30_noon = NtpTimestamp::from_parts(JAN_2017 - 43_200 - SECONDS_PER_DAY, 0);
        assert_eq!(Leap::ending_today(dec_30_noon, LeapKind::Insert), None);
        assert_eq!(Leap::ending_today(NtpTimestamp::from_parts(u32::MAX, 0), LeapKind::Insert), None);
    }

    #[test]
    fn announced_during_the_last_day_only() {
        let leap = Leap { at: NtpTimestamp::from_parts(JAN_2017, 0), kind: LeapKind::Insert };
        let at = |s: u32, f: u32| leap.announced_at(NtpTimestamp::from_parts(s, f));
        assert!(!at(JAN_2017 - SECONDS_PER_DAY - 1, u32::MAX));
        assert!(at(JAN_2017 - SECONDS_PER_DAY, 0));
        assert!(at(JAN_2017 - 1, u32::MAX));
        assert!(!at(JAN_2017, 0));
    }

    #[test]
    fn seconds_near_resolves_the_era() {
        assert_eq!(seconds_near(NtpTimestamp::from_parts(5, 0), u64::from(u32::MAX)), (1 << 32) + 5);
        assert_eq!(seconds_near(NtpTimestamp::from_parts(JAN_2017, 7), 3_960_835_200), i128::from(JAN_2017));
    }
}
