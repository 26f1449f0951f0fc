//! The host's real-time clock (CLOCK_REALTIME) as an `ntp_proto` clock, and
//! the measurement of its precision that goes into every sample's error and
//! into what a server advertises. Read only, never set.

use std::time::{Duration, SystemTime};

use ntp_proto::clock::Clock;
use ntp_proto::NtpTimestamp;

/// The system clock, read through `SystemTime::now` (CLOCK_REALTIME). Kernel
/// receive timestamps are on the same clock, so `at_system_time` is the
/// identity (the trait's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NtpTimestamp {
        NtpTimestamp::from_system_time(SystemTime::now())
    }
}

impl SystemClock {
    /// The clock's precision as a log2 exponent: [`measure_precision`].
    #[must_use]
    pub fn precision(&self) -> i8 {
        measure_precision()
    }
}

/// The precision exponent of the system clock as this process reads it:
/// log2 of the larger of its resolution (the smallest step seen between two
/// readings) and the cost of one reading, as ntpd and chrony measure it at
/// start-up. Typically -23 to -20 on Linux with a vDSO clock. The one
/// measurement the daemon and the query tool both use.
#[must_use]
pub fn measure_precision() -> i8 {
    const READS: u32 = 1_000;
    let mut smallest_step = Duration::MAX;
    let started = std::time::Instant::now();
    let mut last = SystemTime::now();
    for _ in 0..READS {
        let now = SystemTime::now();
        if let Ok(step) = now.duration_since(last) {
            if step > Duration::ZERO {
                smallest_step = smallest_step.min(step);
            }
        }
        last = now;
    }
    let per_read = started.elapsed() / READS;
    precision_exponent(smallest_step.min(Duration::from_secs(1)).max(per_read))
}

/// The exponent `p` with 2^p the smallest power of two not below `interval`,
/// within the range a header can carry sensibly (-32..=0).
#[must_use]
pub fn precision_exponent(interval: Duration) -> i8 {
    let seconds = interval.as_secs_f64().max(f64::MIN_POSITIVE);
    seconds.log2().ceil().clamp(-32.0, 0.0) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_rounds_up_to_a_power_of_two() {
        assert_eq!(precision_exponent(Duration::from_nanos(25)), -25);
        assert_eq!(precision_exponent(Duration::from_nanos(1)), -29);
        assert_eq!(precision_exponent(Duration::from_secs(3)), 0);
        assert_eq!(precision_exponent(Duration::MAX), 0);
        let measured = SystemClock.precision();
        assert!((-30..=0).contains(&measured));
    }

    #[test]
    fn precision_is_a_plausible_power_of_two() {
        assert_eq!(precision_exponent(Duration::from_nanos(50)), -24);
        assert_eq!(precision_exponent(Duration::from_micros(1)), -19);
        assert_eq!(precision_exponent(Duration::from_secs(3)), 0);
        let measured = measure_precision();
        assert!((-32..=-6).contains(&measured), "measured {measured}");
    }

    #[test]
    fn system_clock_is_near_system_time() {
        let ours = SystemClock.now().to_unix_f64();
        let theirs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((ours - theirs).abs() < 1.0);
    }
}
