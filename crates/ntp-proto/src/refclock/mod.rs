//! Reference clocks: the stratum 0 a primary server takes its time from
//! (a GPS receiver read by gpsd). What the drivers deliver is decoded in
//! [`shm`] and [`sock`]; here the readings between two polls are reduced
//! to one sample for the association (a median, as chrony's refclock
//! filter does), and a PPS pulse, which knows only where a second begins,
//! is given its seconds by another reference clock ([`lock_pulse`]).
//!
//! Pure: readings arrive with the local time they were taken at, in
//! whatever frame the caller uses (the daemon's raw clock).

pub mod shm;
pub mod sock;

use crate::exchange::Sample;
use crate::time::{NtpDuration, NtpTimestamp};

/// One reading of a reference clock: reference minus local time, at a
/// local time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Local time of the reading.
    pub local: NtpTimestamp,
    /// Reference minus local time.
    pub offset: NtpDuration,
    /// Leap indicator the reference announced (0-3).
    pub leap: u8,
}

/// How a reference clock's samples are qualified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefclockQuality {
    /// The delay the samples are credited with (chrony's `delay`): its
    /// half counts in the root distance, as a network path's does.
    pub delay: NtpDuration,
    /// The reference's precision, seconds: each sample's dispersion.
    pub precision: f64,
}

/// The readings taken since the last poll, reduced to one sample at each:
/// their median, over at least the last [`MEDIAN_WINDOW`] readings (those
/// of earlier polls too, when a poll has fewer), so that one late reading
/// (gpsd descheduled) is not a sample even at a poll of a second.
#[derive(Debug, Clone, Default)]
pub struct ReadingFilter {
    readings: Vec<Reading>,
    /// Readings since the last poll.
    fresh: usize,
}

/// Readings kept between two polls at most (a poll of 2^6 s at 1 Hz).
pub const MAX_READINGS: usize = 64;
/// The fewest readings a median is taken over, when there are as many.
pub const MEDIAN_WINDOW: usize = 5;

impl ReadingFilter {
    /// An empty filter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a reading; the oldest goes when [`MAX_READINGS`] are held.
    pub fn push(&mut self, reading: Reading) {
        if self.readings.len() == MAX_READINGS {
            self.readings.remove(0);
        }
        self.readings.push(reading);
        self.fresh = (self.fresh + 1).min(MAX_READINGS);
    }

    /// How many readings came since the last poll.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fresh
    }

    /// True when no reading came since the last poll.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fresh == 0
    }

    /// The newest reading, if any.
    #[must_use]
    pub fn newest(&self) -> Option<Reading> {
        self.readings.last().copied()
    }

    /// The sample at a poll, and the leap its reading announced; `None`
    /// when no reading came since the last poll. The median reading's
    /// offset and time (over the readings since the last poll, at least
    /// the last [`MEDIAN_WINDOW`]); its dispersion the precision plus the
    /// readings' standard deviation about the median.
    pub fn take(&mut self, quality: RefclockQuality) -> Option<(Sample, u8)> {
        if self.fresh == 0 {
            return None;
        }
        let window = self.fresh.max(MEDIAN_WINDOW).min(self.readings.len());
        let mut sorted = self.readings[self.readings.len() - window..].to_vec();
        sorted.sort_by_key(|r| r.offset);
        let median = sorted[sorted.len() / 2];
        let spread = if sorted.len() > 1 {
            let sum: f64 = sorted.iter().map(|r| (r.offset - median.offset).to_seconds_f64().powi(2)).sum();
            (sum / (sorted.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        let keep = self.readings.len().saturating_sub(MEDIAN_WINDOW - 1);
        self.readings.drain(..keep);
        self.fresh = 0;
        let sample = Sample {
            offset: median.offset,
            delay: quality.delay,
            dispersion: NtpDuration::from_seconds_f64(quality.precision + spread),
            time: median.local,
        };
        Some((sample, median.leap))
    }
}

/// How far from a whole second a pulse and its seconds source may
/// disagree and still be locked (chrony refuses beyond 0.4 s likewise).
pub const LOCK_LIMIT: f64 = 0.4;

/// Gives a PPS pulse its whole seconds from another reference clock
/// (chrony's `lock`): `pulse` is the pulse's offset (only its fraction
/// of a second counts), `seconds` the locked source's offset near the
/// same instant. `None` when they do not agree on where the second is.
#[must_use]
pub fn lock_pulse(pulse: NtpDuration, seconds: NtpDuration) -> Option<NtpDuration> {
    let pulse = pulse.to_seconds_f64();
    let fraction = pulse - pulse.round();
    let seconds = seconds.to_seconds_f64();
    let whole = (seconds - fraction).round();
    let locked = fraction + whole;
    ((seconds - locked).abs() <= LOCK_LIMIT).then(|| NtpDuration::from_seconds_f64(locked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: u32, offset: f64) -> Reading {
        Reading {
            local: NtpTimestamp::from_parts(3_900_000_000 + at, 0),
            offset: NtpDuration::from_seconds_f64(offset),
            leap: 0,
        }
    }

    const QUALITY: RefclockQuality = RefclockQuality { delay: NtpDuration::ZERO, precision: 1e-3 };

    #[test]
    fn one_late_reading_at_a_poll_of_one_second_is_outvoted_by_the_last_ones() {
        let mut filter = ReadingFilter::new();
        for at in 0..4 {
            filter.push(reading(at, 0.0005));
            assert!(filter.take(QUALITY).is_some());
        }
        filter.push(reading(4, 0.015));
        let (sample, _) = filter.take(QUALITY).unwrap();
        assert!((sample.offset.to_seconds_f64() - 0.0005).abs() < 1e-9, "{sample:?}");
        assert!(filter.take(QUALITY).is_none(), "nothing new: no sample");
    }

    #[test]
    fn the_median_reading_is_the_sample_and_the_filter_empties() {
        let mut filter = ReadingFilter::new();
        assert!(filter.take(QUALITY).is_none());
        for (at, offset) in [(0, 0.010), (1, 0.011), (2, 0.500), (3, 0.009), (4, 0.012)] {
            filter.push(reading(at, offset));
        }
        let (sample, _) = filter.take(QUALITY).unwrap();
        assert!((sample.offset.to_seconds_f64() - 0.011).abs() < 1e-9, "an outlier does not move the median");
        assert_eq!(sample.time, reading(1, 0.0).local);
        assert!(sample.dispersion.to_seconds_f64() > 1e-3, "the spread counts");
        assert!(filter.is_empty());
    }

    #[test]
    fn at_most_max_readings_are_kept() {
        let mut filter = ReadingFilter::new();
        for at in 0..100 {
            filter.push(reading(at, f64::from(at)));
        }
        assert_eq!(filter.len(), MAX_READINGS);
        assert_eq!(filter.newest().map(|r| r.offset), Some(NtpDuration::from_seconds(99)));
    }

    #[test]
    fn a_pulse_takes_its_seconds_from_the_locked_source() {
        let d = NtpDuration::from_seconds_f64;
        // NMEA says 2 s and 80 ms late-ish; the pulse knows -0.0003 of a second.
        let locked = lock_pulse(d(-0.0003), d(2.08)).unwrap().to_seconds_f64();
        assert!((locked - 1.9997).abs() < 1e-9, "{locked}");
        // A pulse given as a whole offset keeps only its fraction.
        let locked = lock_pulse(d(5.0002), d(0.05)).unwrap().to_seconds_f64();
        assert!((locked - 0.0002).abs() < 1e-9, "{locked}");
        // Half a second apart: no telling which second.
        assert_eq!(lock_pulse(d(0.0), d(0.45)), None);
    }
}
