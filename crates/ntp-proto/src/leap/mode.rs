//! Served time across a leap: the server's continuous raw clock mapped to
//! the time it serves, by stepping like the Linux kernel or by smearing the
//! second linearly over a window centred on the leap.
//!
//! All functions take raw time (see the module above): the server's clock
//! that kept counting through the leap. Before a leap raw equals UTC.

use thiserror::Error;

use super::{Leap, LeapKind};
use crate::packet::LeapIndicator;
use crate::time::{NtpDuration, NtpTimestamp};

/// The shortest smear window, in seconds (a deletion's window in raw time
/// is one second shorter and must not be empty).
pub const MIN_SMEAR_SECONDS: u32 = 2;
/// The longest smear window, in seconds: 14 days, so that the window, half
/// of it each side of the leap, never reaches another month's end.
pub const MAX_SMEAR_SECONDS: u32 = 14 * 86_400;

/// How a server serves time across a leap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeapMode {
    /// Step at midnight, as the Linux kernel does with `STA_INS`/`STA_DEL`.
    /// An inserted second repeats 23:59:59 (served time steps back one
    /// second at raw midnight); a deleted second skips 23:59:59 (served
    /// time jumps from 23:59:58.999… to 00:00:00). The leap is announced
    /// during the last day, through the repeated second.
    Step,
    /// Spread the second over a window centred on the leap; never announce
    /// it (clients of a smearing server must not apply the leap again).
    Smear(LeapSmear),
}

/// A linear smear whose window, in served (and true) UTC, runs from
/// `window / 2` before the leap's midnight to `window / 2` after it: noon
/// to noon for the 86,400 s window Google's public NTP and AWS use.
///
/// Outside the window smeared time equals true UTC. Inside it, served time
/// advances `window` seconds while raw time advances `window + 1` (insert)
/// or `window − 1` (delete) SI seconds, at one constant rate: slow by
/// 1/(window + 1) or fast by 1/(window − 1), 11.574 ppm either way for
/// 24 h. Each smeared second is `1 + 1/window` SI seconds long for an
/// insertion, as Google describes its smear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeapSmear {
    window: u32,
}

/// Why a smear window is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a leap smear window must be {MIN_SMEAR_SECONDS} to {MAX_SMEAR_SECONDS} seconds, not {0}")]
pub struct SmearError(pub u32);

impl LeapSmear {
    /// A smear over `window_seconds` (e.g. 86,400, from `--leap-smear`).
    ///
    /// # Errors
    /// [`SmearError`] outside [`MIN_SMEAR_SECONDS`]..=[`MAX_SMEAR_SECONDS`].
    pub const fn new(window_seconds: u32) -> Result<Self, SmearError> {
        if window_seconds < MIN_SMEAR_SECONDS || window_seconds > MAX_SMEAR_SECONDS {
            return Err(SmearError(window_seconds));
        }
        Ok(Self { window: window_seconds })
    }

    /// The window's length in served seconds.
    #[must_use]
    pub const fn window(self) -> u32 {
        self.window
    }

    /// Where the window starts in raw time, and how long it lasts in raw
    /// time.
    fn span(self, leap: Leap) -> (NtpTimestamp, NtpDuration) {
        let half = NtpDuration::from_bits(i64::from(self.window) << 31);
        let raw_seconds = match leap.kind {
            LeapKind::Insert => i64::from(self.window) + 1,
            LeapKind::Delete => i64::from(self.window) - 1,
        };
        (leap.at - half, NtpDuration::from_seconds(raw_seconds))
    }

    /// The smear's offset at raw time `raw`: zero before the window, the
    /// leap's full correction after it, linear between, rounded toward
    /// zero so that served time never runs backward.
    fn offset(self, leap: Leap, raw: NtpTimestamp) -> NtpDuration {
        let (start, length) = self.span(leap);
        let elapsed = raw - start;
        if elapsed <= NtpDuration::ZERO {
            return NtpDuration::ZERO;
        }
        if elapsed >= length {
            return leap.kind.correction();
        }
        let magnitude = elapsed.wide() * NtpDuration::ONE_SECOND.wide() / length.wide();
        let magnitude = NtpDuration::from_wide(magnitude);
        match leap.kind {
            LeapKind::Insert => -magnitude,
            LeapKind::Delete => magnitude,
        }
    }
}

impl LeapMode {
    /// Served minus raw time at raw time `raw`.
    #[must_use]
    pub fn offset(self, leap: Leap, raw: NtpTimestamp) -> NtpDuration {
        match self {
            Self::Step => {
                let since = raw - leap.at;
                let stepped = match leap.kind {
                    LeapKind::Insert => since >= NtpDuration::ZERO,
                    LeapKind::Delete => since >= -NtpDuration::ONE_SECOND,
                };
                if stepped {
                    leap.kind.correction()
                } else {
                    NtpDuration::ZERO
                }
            }
            Self::Smear(smear) => smear.offset(leap, raw),
        }
    }

    /// The time served at raw time `raw`.
    ///
    /// Stepping through the 2016-12-31 insertion, a client reading every
    /// half second sees 23:59:59.0, 23:59:59.5, 23:59:59.0, 23:59:59.5,
    /// 00:00:00.0; through a deletion 23:59:58.0, 23:59:58.5, 00:00:00.0.
    #[must_use]
    pub fn served_time(self, leap: Leap, raw: NtpTimestamp) -> NtpTimestamp {
        raw + self.offset(leap, raw)
    }

    /// The leap indicator a server in this mode sends at raw time `raw`:
    /// a stepping server announces the leap while its served time is in
    /// the leap's last day; a smearing server never does.
    #[must_use]
    pub fn indicator(self, leap: Leap, raw: NtpTimestamp) -> LeapIndicator {
        match self {
            Self::Step if leap.announced_at(self.served_time(leap, raw)) => leap.kind.indicator(),
            Self::Step | Self::Smear(_) => LeapIndicator::NoWarning,
        }
    }

    /// The raw time from which served time is raw plus the leap's full
    /// correction for good: from then on the leap may be settled (see
    /// `LeapSchedule::settle`), its correction counted among the leaps taken.
    #[must_use]
    pub fn settled_from(self, leap: Leap) -> NtpTimestamp {
        match (self, leap.kind) {
            (Self::Step, LeapKind::Insert) => leap.at + NtpDuration::ONE_SECOND,
            (Self::Step, LeapKind::Delete) => leap.at - NtpDuration::ONE_SECOND,
            (Self::Smear(smear), _) => {
                let (start, length) = smear.span(leap);
                start + length
            }
        }
    }

    /// The raw time from which the leap may change served time, and a
    /// leap scheduled is no longer withdrawn: the day's last second for a
    /// step, the window's start for a smear.
    #[must_use]
    pub fn begins_at(self, leap: Leap) -> NtpTimestamp {
        match self {
            Self::Step => leap.at - NtpDuration::ONE_SECOND,
            Self::Smear(smear) => smear.span(leap).0,
        }
    }

    /// True while a smear is partly applied at raw time `raw`: what
    /// `/status` shows so that an operator sees served time is not UTC.
    #[must_use]
    pub fn is_smearing(self, leap: Leap, raw: NtpTimestamp) -> bool {
        match self {
            Self::Step => false,
            Self::Smear(smear) => {
                let (start, length) = smear.span(leap);
                let elapsed = raw - start;
                elapsed > NtpDuration::ZERO && elapsed < length
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_2017: u32 = 3_692_217_600;

    fn leap(kind: LeapKind) -> Leap {
        Leap { at: NtpTimestamp::from_parts(JAN_2017, 0), kind }
    }

    /// Raw time `seconds` from the leap's midnight.
    fn raw(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(JAN_2017, 0) + NtpDuration::from_seconds_f64(seconds)
    }

    /// Served time as seconds from the leap's midnight.
    fn served(mode: LeapMode, kind: LeapKind, seconds: f64) -> f64 {
        (mode.served_time(leap(kind), raw(seconds)) - raw(0.0)).to_seconds_f64()
    }

    #[test]
    fn step_repeats_23_59_59_for_an_insertion() {
        let seen: Vec<f64> = [-1.0, -0.5, 0.0, 0.5, 1.0].map(|t| served(LeapMode::Step, LeapKind::Insert, t)).into();
        assert_eq!(seen, [-1.0, -0.5, -1.0, -0.5, 0.0]);
        let insert = leap(LeapKind::Insert);
        assert_eq!(LeapMode::Step.indicator(insert, raw(0.5)), LeapIndicator::Insert);
        assert_eq!(LeapMode::Step.indicator(insert, raw(1.0)), LeapIndicator::NoWarning);
        assert_eq!(LeapMode::Step.indicator(insert, raw(-86_400.0)), LeapIndicator::Insert);
        assert_eq!(LeapMode::Step.indicator(insert, raw(-86_400.5)), LeapIndicator::NoWarning);
        assert_eq!(LeapMode::Step.settled_from(insert), raw(1.0));
    }

    #[test]
    fn step_skips_23_59_59_for_a_deletion() {
        let seen: Vec<f64> = [-2.0, -1.5, -1.0, -0.5, 0.0].map(|t| served(LeapMode::Step, LeapKind::Delete, t)).into();
        assert_eq!(seen, [-2.0, -1.5, 0.0, 0.5, 1.0]);
        let delete = leap(LeapKind::Delete);
        assert_eq!(LeapMode::Step.indicator(delete, raw(-1.5)), LeapIndicator::Delete);
        assert_eq!(LeapMode::Step.indicator(delete, raw(-1.0)), LeapIndicator::NoWarning);
        assert_eq!(LeapMode::Step.settled_from(delete), raw(-1.0));
    }

    #[test]
    fn smear_runs_noon_to_noon_and_never_announces() {
        let smear = LeapMode::Smear(LeapSmear::new(86_400).unwrap());
        let insert = leap(LeapKind::Insert);
        assert_eq!(served(smear, LeapKind::Insert, -43_200.0), -43_200.0);
        assert_eq!(smear.served_time(insert, raw(43_201.0)), raw(43_200.0));
        assert_eq!(smear.settled_from(insert), raw(43_201.0));
        // At raw midnight, half of the window's 86,401 SI seconds have not
        // quite passed: served time is just under half a second behind.
        let at_midnight = served(smear, LeapKind::Insert, 0.0);
        assert!((at_midnight + 43_200.0 / 86_401.0).abs() < 1e-9, "{at_midnight}");
        assert_eq!(smear.indicator(insert, raw(-10.0)), LeapIndicator::NoWarning);
        assert!(smear.is_smearing(insert, raw(0.0)));
        assert!(!smear.is_smearing(insert, raw(-43_200.0)));
        assert!(!smear.is_smearing(insert, raw(43_201.0)));
        let delete = leap(LeapKind::Delete);
        assert_eq!(smear.served_time(delete, raw(43_199.0)), raw(43_200.0));
        assert!(!LeapMode::Step.is_smearing(insert, raw(0.0)));
    }

    #[test]
    fn smear_window_bounds() {
        assert_eq!(LeapSmear::new(1), Err(SmearError(1)));
        assert_eq!(LeapSmear::new(MAX_SMEAR_SECONDS + 1), Err(SmearError(MAX_SMEAR_SECONDS + 1)));
        assert_eq!(LeapSmear::new(MIN_SMEAR_SECONDS).map(LeapSmear::window), Ok(2));
    }
}
