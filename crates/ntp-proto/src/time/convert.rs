//! Every conversion between NTP time and the outside world's time types
//! (`chrono`, `SystemTime`, Unix seconds as `f64`) lives here, in one place.
//!
//! The era is not on the wire. Going from NTP to a calendar time, the era is
//! chosen either by the rule of RFC 4330 §3 (a timestamp with the top bit set
//! is in era 0, 1968–2036; one without it is in era 1, 2036–2104), or, with
//! the `_near` variants, as the one closest to a pivot the caller knows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use super::timestamp::{NtpDuration, NtpTimestamp};

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET: i64 = 2_208_988_800;

const ERA_SECONDS: i64 = 1 << 32;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Nanoseconds within a second to an NTP fraction, rounded to the nearest.
/// Exact in the sense that [`fraction_to_nanos`] gives the nanoseconds back.
#[must_use]
pub fn nanos_to_fraction(nanos: u32) -> u32 {
    let nanos = u64::from(nanos.min(999_999_999));
    (((nanos << 32) + NANOS_PER_SECOND / 2) / NANOS_PER_SECOND) as u32
}

/// An NTP fraction to nanoseconds within a second, rounded to the nearest.
#[must_use]
pub fn fraction_to_nanos(fraction: u32) -> u32 {
    let nanos = (u64::from(fraction) * NANOS_PER_SECOND + (1 << 31)) >> 32;
    // A fraction just under one second rounds to 1e9: keep it in the second.
    nanos.min(999_999_999) as u32
}

impl NtpTimestamp {
    /// From seconds and nanoseconds since the Unix epoch (any era).
    #[must_use]
    pub fn from_unix(seconds: i64, nanos: u32) -> Self {
        let ntp_seconds = seconds.wrapping_add(NTP_UNIX_OFFSET).rem_euclid(ERA_SECONDS);
        Self::from_parts(ntp_seconds as u32, nanos_to_fraction(nanos))
    }

    /// Seconds and nanoseconds since the Unix epoch, the era chosen by the
    /// RFC 4330 rule (1968–2104).
    #[must_use]
    pub fn to_unix(self) -> (i64, u32) {
        let era: i64 = if self.seconds() & 0x8000_0000 != 0 { 0 } else { 1 };
        self.unix_in_era(era)
    }

    /// Seconds and nanoseconds since the Unix epoch, the era chosen so the
    /// result lies within 68 years of `pivot`.
    #[must_use]
    pub fn to_unix_near(self, pivot: NtpTimestamp, pivot_unix_seconds: i64) -> (i64, u32) {
        let pivot_units = (i128::from(pivot_unix_seconds) << 32) + i128::from(pivot.fraction());
        let units = pivot_units + (self - pivot).wide();
        let seconds = (units >> 32) as i64;
        (seconds, fraction_to_nanos(units as u32))
    }

    fn unix_in_era(self, era: i64) -> (i64, u32) {
        let seconds = era * ERA_SECONDS + i64::from(self.seconds()) - NTP_UNIX_OFFSET;
        (seconds, fraction_to_nanos(self.fraction()))
    }

    /// From a `chrono` UTC time.
    #[must_use]
    pub fn from_datetime(time: DateTime<Utc>) -> Self {
        Self::from_unix(time.timestamp(), time.timestamp_subsec_nanos())
    }

    /// To a `chrono` UTC time, era by the RFC 4330 rule (1968–2104).
    #[must_use]
    pub fn to_datetime(self) -> DateTime<Utc> {
        let (seconds, nanos) = self.to_unix();
        DateTime::from_timestamp(seconds, nanos).unwrap_or_default()
    }

    /// From a `SystemTime` (times before 1970 included).
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Self::from_unix(since.as_secs() as i64, since.subsec_nanos()),
            Err(before) => {
                let before = before.duration();
                Self::from_unix(0, 0) - NtpDuration::from_nanos(before.as_nanos().min(i64::MAX as u128) as i64)
            }
        }
    }

    /// To a `SystemTime`, era by the RFC 4330 rule.
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        let (seconds, nanos) = self.to_unix();
        // The RFC 4330 range starts in 1968, before the Unix epoch.
        if seconds >= 0 {
            UNIX_EPOCH + Duration::new(seconds as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + Duration::from_nanos(u64::from(nanos))
        }
    }

    /// Seconds since the Unix epoch as a float, era by the RFC 4330 rule.
    /// Loses precision below about 0.2 µs at present-day values.
    #[must_use]
    pub fn to_unix_f64(self) -> f64 {
        let (seconds, nanos) = self.to_unix();
        seconds as f64 + f64::from(nanos) / 1e9
    }

    /// From seconds since the Unix epoch as a float.
    #[must_use]
    pub fn from_unix_f64(seconds: f64) -> Self {
        let whole = seconds.floor();
        let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0) as u32;
        Self::from_unix(whole as i64, nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn unix_epoch_is_ntp_seconds_2208988800() {
        let t = NtpTimestamp::from_unix(0, 0);
        assert_eq!(t.seconds(), 2_208_988_800);
        assert_eq!(t.to_unix(), (0, 0));
    }

    #[test]
    fn every_nanosecond_value_survives_the_fraction() {
        for nanos in (0..1_000_000_000u32).step_by(997).chain([999_999_999, 1, 0]) {
            assert_eq!(fraction_to_nanos(nanos_to_fraction(nanos)), nanos);
        }
    }

    #[test]
    fn datetime_round_trip_on_both_sides_of_2036() {
        for (y, mo, d, h, mi, s, ns) in [
            (2026, 11, 21, 4, 39, 42, 428_239_822),
            (2036, 2, 7, 6, 28, 15, 999_999_999),
            (2036, 2, 7, 6, 28, 16, 0),
            (2090, 9, 28, 3, 5, 30, 329_035_021),
            (1973, 12, 4, 5, 4, 54, 758_105_100),
        ] {
            let time = Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::nanoseconds(ns);
            let ntp = NtpTimestamp::from_datetime(time);
            assert_eq!(ntp.to_datetime(), time);
            assert_eq!(NtpTimestamp::from_system_time(ntp.to_system_time()), ntp);
        }
    }

    #[test]
    fn era_boundary_is_where_the_seconds_wrap() {
        let boundary = Utc.with_ymd_and_hms(2036, 2, 7, 6, 28, 16).unwrap();
        assert_eq!(NtpTimestamp::from_datetime(boundary), NtpTimestamp::ZERO);
    }

    #[test]
    fn pivot_chooses_the_nearest_era() {
        let pivot_time = Utc.with_ymd_and_hms(2110, 1, 1, 0, 0, 0).unwrap();
        let pivot = NtpTimestamp::from_datetime(pivot_time);
        let later = Utc.with_ymd_and_hms(2111, 6, 1, 0, 0, 0).unwrap();
        let (secs, _) = NtpTimestamp::from_datetime(later).to_unix_near(pivot, pivot_time.timestamp());
        assert_eq!(secs, later.timestamp());
    }

    #[test]
    fn unix_f64() {
        let t = NtpTimestamp::from_unix_f64(1_700_000_000.25);
        assert_eq!(t.to_unix(), (1_700_000_000, 250_000_000));
        assert_eq!(t.to_unix_f64(), 1_700_000_000.25);
    }
}
