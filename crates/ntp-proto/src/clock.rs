//! Clocks: the trait every clock implements, and the virtual clock, a
//! mapping from an underlying clock to a disciplined one.
//!
//! The virtual clock is how many daemons share one host without touching its
//! clock: each one's time is the underlying (system) time plus an offset that
//! changes at a rate of its own. It is pure arithmetic: it is handed the
//! underlying time and never reads it.

use crate::time::{NtpDuration, NtpTimestamp};

/// Anything that tells the time. Implemented by the system clock and the
/// daemon's disciplined clock (in `ntp-daemon`) and by manual clocks in tests.
pub trait Clock {
    /// The current time of this clock.
    fn now(&self) -> NtpTimestamp;

    /// This clock's reading at the moment the host's system clock read
    /// `system`. Kernel packet timestamps are system time; a virtual clock
    /// maps them into its own. The system clock itself is the identity.
    fn at_system_time(&self, system: NtpTimestamp) -> NtpTimestamp {
        system
    }
}

/// A clock whose time is set by hand, for tests and simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManualClock(pub NtpTimestamp);

impl Clock for ManualClock {
    fn now(&self) -> NtpTimestamp {
        self.0
    }
}

/// The virtual clock: a piecewise-linear map from underlying time to
/// virtual time.
///
/// From the last change (the *base*), virtual time advances at
/// `1 + frequency` times the underlying rate, plus `slew_rate` until the
/// slew's end. Steps and frequency changes rebase the map, so what was
/// already served never changes; slews are bounded in rate, so with
/// `|frequency| + |slew_rate| < 1` time served never goes backwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VirtualClock {
    base_underlying: NtpTimestamp,
    base_virtual: NtpTimestamp,
    frequency: f64,
    slew_rate: f64,
    slew_duration: NtpDuration,
}

impl VirtualClock {
    /// A clock that reads `offset` ahead of the underlying clock at
    /// `underlying_now` and runs `frequency_ppm` parts per million fast.
    #[must_use]
    pub fn new(underlying_now: NtpTimestamp, offset: NtpDuration, frequency_ppm: f64) -> Self {
        Self {
            base_underlying: underlying_now,
            base_virtual: underlying_now + offset,
            frequency: frequency_ppm * 1e-6,
            slew_rate: 0.0,
            slew_duration: NtpDuration::ZERO,
        }
    }

    /// The virtual time at a given underlying time (which may lie before the
    /// base, as a kernel receive timestamp can).
    #[must_use]
    pub fn time_at(&self, underlying: NtpTimestamp) -> NtpTimestamp {
        let elapsed = underlying - self.base_underlying;
        let slewing = elapsed.min(self.slew_duration);
        self.base_virtual + elapsed + elapsed.mul_f64(self.frequency) + slewing.mul_f64(self.slew_rate)
    }

    /// The underlying time at which this clock reads `virtual_time`: the
    /// inverse of [`Self::time_at`] (the map is increasing while
    /// `|frequency| + |slew_rate| < 1`). How a daemon that disciplines the
    /// system clock itself finds its raw clock from the system time.
    #[must_use]
    pub fn underlying_at(&self, virtual_time: NtpTimestamp) -> NtpTimestamp {
        let y = (virtual_time - self.base_virtual).to_seconds_f64();
        let slewing = 1.0 + self.frequency + self.slew_rate;
        let slew_seconds = self.slew_duration.to_seconds_f64();
        let slew_end = slew_seconds * slewing;
        let elapsed = if y <= slew_end { y / slewing } else { slew_seconds + (y - slew_end) / (1.0 + self.frequency) };
        self.base_underlying + NtpDuration::from_seconds_f64(elapsed)
    }

    /// The clock's rate against the underlying clock at `underlying`, as a
    /// fraction: the frequency, plus the slew while it lasts.
    #[must_use]
    pub fn rate_at(&self, underlying: NtpTimestamp) -> f64 {
        let slewing = underlying - self.base_underlying < self.slew_duration;
        self.frequency + if slewing { self.slew_rate } else { 0.0 }
    }

    /// The underlying time the slew in progress ends at, if one is.
    #[must_use]
    pub fn slew_end(&self) -> Option<NtpTimestamp> {
        (self.slew_rate != 0.0 && self.slew_duration > NtpDuration::ZERO)
            .then(|| self.base_underlying + self.slew_duration)
    }

    /// Virtual minus underlying time at `underlying`.
    #[must_use]
    pub fn offset_at(&self, underlying: NtpTimestamp) -> NtpDuration {
        self.time_at(underlying) - underlying
    }

    /// The rate error against the underlying clock, in ppm, without any slew.
    #[must_use]
    pub fn frequency_ppm(&self) -> f64 {
        self.frequency * 1e6
    }

    /// The correction still to be slewed at `underlying`.
    #[must_use]
    pub fn remaining_slew(&self, underlying: NtpTimestamp) -> NtpDuration {
        let elapsed = (underlying - self.base_underlying).max(NtpDuration::ZERO);
        (self.slew_duration - elapsed).max(NtpDuration::ZERO).mul_f64(self.slew_rate)
    }

    fn rebase(&mut self, underlying_now: NtpTimestamp) {
        let remaining = self.remaining_slew(underlying_now);
        self.base_virtual = self.time_at(underlying_now);
        self.base_underlying = underlying_now;
        if self.slew_rate != 0.0 && remaining != NtpDuration::ZERO {
            self.slew_duration = remaining.mul_f64(1.0 / self.slew_rate);
        } else {
            self.slew_rate = 0.0;
            self.slew_duration = NtpDuration::ZERO;
        }
    }

    /// Jumps the clock by `correction` at once, cancelling any slew.
    pub fn step(&mut self, underlying_now: NtpTimestamp, correction: NtpDuration) {
        self.rebase(underlying_now);
        self.base_virtual += correction;
        self.slew_rate = 0.0;
        self.slew_duration = NtpDuration::ZERO;
    }

    /// Replaces any slew in progress with one that corrects by `correction`
    /// over at least `min_duration` and at a rate of at most `max_rate`
    /// (fractional, e.g. 500e-6), so time never jumps and never runs
    /// backwards.
    pub fn slew(
        &mut self,
        underlying_now: NtpTimestamp,
        correction: NtpDuration,
        min_duration: NtpDuration,
        max_rate: f64,
    ) {
        self.rebase(underlying_now);
        let seconds = correction.to_seconds_f64();
        let duration = (seconds.abs() / max_rate).max(min_duration.to_seconds_f64());
        if duration <= 0.0 || seconds == 0.0 {
            self.slew_rate = 0.0;
            self.slew_duration = NtpDuration::ZERO;
            return;
        }
        self.slew_rate = seconds / duration;
        self.slew_duration = NtpDuration::from_seconds_f64(duration);
    }

    /// Changes the frequency by `delta_ppm` from `underlying_now` on.
    pub fn adjust_frequency(&mut self, underlying_now: NtpTimestamp, delta_ppm: f64) {
        self.rebase(underlying_now);
        self.frequency += delta_ppm * 1e-6;
    }
}

/// A daemon's two clocks in one: the *raw* clock, the system clock plus the
/// error the daemon was started with (the stand-in for an imperfect
/// oscillator, never changed), and the *correction* the discipline applies on
/// top of it. Served time is `correction(raw(system))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisciplinedClock {
    /// System time to raw time: the simulated oscillator error.
    pub oscillator: VirtualClock,
    /// Raw time to served time: the discipline's work.
    pub correction: VirtualClock,
}

impl DisciplinedClock {
    /// A clock `offset` ahead of the system clock at `system_now`, running
    /// `drift_ppm` fast, with no correction yet.
    #[must_use]
    pub fn new(system_now: NtpTimestamp, offset: NtpDuration, drift_ppm: f64) -> Self {
        let oscillator = VirtualClock::new(system_now, offset, drift_ppm);
        let correction = VirtualClock::new(oscillator.time_at(system_now), NtpDuration::ZERO, 0.0);
        Self { oscillator, correction }
    }

    /// Raw time at a system time.
    #[must_use]
    pub fn raw_at(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.oscillator.time_at(system)
    }

    /// Served time at a system time.
    #[must_use]
    pub fn time_at(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.correction.time_at(self.oscillator.time_at(system))
    }

    /// Served minus raw time at a raw time: the correction in force.
    #[must_use]
    pub fn correction_at(&self, raw: NtpTimestamp) -> NtpDuration {
        self.correction.offset_at(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix_f64(1_800_000_000.0) + NtpDuration::from_seconds_f64(seconds)
    }

    fn secs(d: NtpDuration) -> f64 {
        d.to_seconds_f64()
    }

    #[test]
    fn underlying_at_inverts_time_at_through_a_slew_and_after() {
        let mut clock = VirtualClock::new(t(0.0), NtpDuration::from_seconds(3600), -100.0);
        clock.slew(t(10.0), NtpDuration::from_seconds_f64(0.004), NtpDuration::from_seconds(8), 0.01);
        assert!((clock.rate_at(t(12.0)) - (-100e-6 + 0.0005)).abs() < 1e-9);
        assert!((clock.rate_at(t(30.0)) - -100e-6).abs() < 1e-12);
        assert!((secs(clock.slew_end().unwrap() - t(18.0))).abs() < 1e-9);
        for at in [5.0, 10.0, 13.0, 18.0, 25.0, 1000.0] {
            let back = clock.underlying_at(clock.time_at(t(at)));
            assert!(secs(back - t(at)).abs() < 1e-9, "at {at}: {}", secs(back - t(at)));
        }
    }

    #[test]
    fn disciplined_clock_composes_oscillator_and_correction() {
        let mut clock = DisciplinedClock::new(t(0.0), NtpDuration::from_seconds(5), 10.0);
        assert!((secs(clock.time_at(t(100.0)) - t(100.0)) - 5.001).abs() < 1e-9);
        let raw = clock.raw_at(t(100.0));
        clock.correction.step(raw, NtpDuration::from_seconds_f64(-5.001));
        assert!(secs(clock.time_at(t(100.0)) - t(100.0)).abs() < 1e-9);
        assert!((secs(clock.correction_at(raw)) + 5.001).abs() < 1e-9);
    }

    #[test]
    fn offset_and_drift_accumulate() {
        let clock = VirtualClock::new(t(0.0), NtpDuration::from_seconds(300), 50.0);
        assert!((secs(clock.offset_at(t(0.0))) - 300.0).abs() < 1e-9);
        assert!((secs(clock.offset_at(t(1000.0))) - 300.05).abs() < 1e-9);
    }

    #[test]
    fn step_and_frequency_change_keep_the_past() {
        let mut clock = VirtualClock::new(t(0.0), NtpDuration::ZERO, 100.0);
        clock.adjust_frequency(t(100.0), -100.0);
        assert!((secs(clock.offset_at(t(100.0))) - 0.01).abs() < 1e-9);
        assert!((secs(clock.offset_at(t(200.0))) - 0.01).abs() < 1e-9);
        clock.step(t(200.0), NtpDuration::from_seconds_f64(-0.01));
        assert!(secs(clock.offset_at(t(300.0))).abs() < 1e-9);
    }

    #[test]
    fn slew_is_bounded_and_monotonic() {
        let mut clock = VirtualClock::new(t(0.0), NtpDuration::ZERO, 0.0);
        // Take back 10 ms at no more than 500 ppm: 20 s.
        clock.slew(t(0.0), NtpDuration::from_seconds_f64(-0.01), NtpDuration::ZERO, 500e-6);
        let mut last = clock.time_at(t(0.0));
        for step in 1..=300 {
            let now = clock.time_at(t(f64::from(step) * 0.1));
            assert!(now - last > NtpDuration::ZERO, "time never runs backwards");
            last = now;
        }
        assert!((secs(clock.offset_at(t(10.0))) + 0.005).abs() < 1e-9);
        assert!((secs(clock.offset_at(t(25.0))) + 0.01).abs() < 1e-9);
        assert!((secs(clock.remaining_slew(t(10.0))) + 0.005).abs() < 1e-9);
    }

    #[test]
    fn rebase_mid_slew_keeps_the_remaining_correction() {
        let mut clock = VirtualClock::new(t(0.0), NtpDuration::ZERO, 0.0);
        clock.slew(t(0.0), NtpDuration::from_seconds_f64(0.002), NtpDuration::ZERO, 1e-4);
        clock.adjust_frequency(t(10.0), 0.0);
        assert!((secs(clock.offset_at(t(10.0))) - 0.001).abs() < 1e-9);
        assert!((secs(clock.offset_at(t(40.0))) - 0.002).abs() < 1e-9);
    }
}
