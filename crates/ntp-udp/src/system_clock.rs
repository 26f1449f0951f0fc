//! The host's real-time clock (CLOCK_REALTIME) as an `ntp_proto` clock, and
//! the measurement of its precision that goes into every sample's error.

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
    /// The clock's precision as a log2 exponent, measured the way ntpd does:
    /// the smallest step between two consecutive readings, rounded up to a
    /// power of two. Bounded to 2^-30..1 s.
    #[must_use]
    pub fn precision(&self) -> i8 {
        let mut smallest = Duration::MAX;
        let mut last = SystemTime::now();
        for _ in 0..100 {
            let now = SystemTime::now();
            if let Ok(step) = now.duration_since(last) {
                if !step.is_zero() {
                    smallest = smallest.min(step);
                }
            }
            last = now;
        }
        precision_exponent(smallest)
    }
}

/// The least exponent `e` with `2^e >= step`, within -30..=0.
fn precision_exponent(step: Duration) -> i8 {
    let seconds = step.as_secs_f64();
    if seconds >= 1.0 {
        return 0;
    }
    let exponent = seconds.log2().ceil().max(-30.0);
    exponent as i8
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
    fn system_clock_is_near_system_time() {
        let ours = SystemClock.now().to_unix_f64();
        let theirs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((ours - theirs).abs() < 1.0);
    }
}
