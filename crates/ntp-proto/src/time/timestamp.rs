//! NTP time values: the 64-bit timestamp, the 32-bit short format and the
//! signed duration between two timestamps (RFC 5905 §6).

use core::fmt;
use core::ops::{Add, AddAssign, Neg, Sub, SubAssign};

/// One second in [`NtpDuration`] units (2^-32 s).
const ONE_SECOND: i64 = 1 << 32;

/// A 64-bit NTP timestamp: 32 bits of seconds and 32 bits of fraction since
/// the start of the current era (era 0 began 1900-01-01 00:00:00 UTC).
///
/// The era number is not on the wire, so a timestamp alone is ambiguous;
/// differences between timestamps wrap (see [`Sub`]) and are right across the
/// 2036 era boundary as long as the two are less than 68 years apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    /// The all-zero timestamp, which RFC 5905 reserves for "unknown".
    pub const ZERO: Self = Self(0);

    /// From the raw 32.32 fixed-point bits, as on the wire.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw 32.32 fixed-point bits, as on the wire.
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// From the seconds and fraction words.
    #[must_use]
    pub const fn from_parts(seconds: u32, fraction: u32) -> Self {
        Self(((seconds as u64) << 32) | fraction as u64)
    }

    /// Whole seconds within the era.
    #[must_use]
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction of a second in units of 2^-32 s.
    #[must_use]
    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// True for the reserved all-zero value.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpTimestamp({:08x}.{:08x})", self.seconds(), self.fraction())
    }
}

impl Sub for NtpTimestamp {
    type Output = NtpDuration;

    /// The signed difference `self - rhs`, computed with wrapping arithmetic
    /// so that it is right across an era boundary (RFC 5905 §6).
    fn sub(self, rhs: Self) -> NtpDuration {
        NtpDuration(self.0.wrapping_sub(rhs.0) as i64)
    }
}

impl Add<NtpDuration> for NtpTimestamp {
    type Output = Self;

    fn add(self, rhs: NtpDuration) -> Self {
        Self(self.0.wrapping_add(rhs.0 as u64))
    }
}

impl AddAssign<NtpDuration> for NtpTimestamp {
    fn add_assign(&mut self, rhs: NtpDuration) {
        *self = *self + rhs;
    }
}

impl Sub<NtpDuration> for NtpTimestamp {
    type Output = Self;

    fn sub(self, rhs: NtpDuration) -> Self {
        Self(self.0.wrapping_sub(rhs.0 as u64))
    }
}

/// A signed span of time in units of 2^-32 s (about 233 ps), the resolution
/// of the NTP timestamp. Covers ±68 years.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpDuration(i64);

impl NtpDuration {
    /// Zero length.
    pub const ZERO: Self = Self(0);
    /// The largest representable duration.
    pub const MAX: Self = Self(i64::MAX);
    /// The most negative representable duration.
    pub const MIN: Self = Self(i64::MIN);
    /// One second.
    pub const ONE_SECOND: Self = Self(ONE_SECOND);

    /// From raw units of 2^-32 s.
    #[must_use]
    pub const fn from_bits(bits: i64) -> Self {
        Self(bits)
    }

    /// Raw units of 2^-32 s.
    #[must_use]
    pub const fn to_bits(self) -> i64 {
        self.0
    }

    /// From whole seconds (saturating at ±68 years).
    #[must_use]
    pub const fn from_seconds(seconds: i64) -> Self {
        Self(seconds.saturating_mul(ONE_SECOND))
    }

    /// From nanoseconds, rounded to the nearest unit (saturating).
    #[must_use]
    pub fn from_nanos(nanos: i64) -> Self {
        let units = (i128::from(nanos) << 32) as f64 / 1e9;
        Self::saturate_f64(units.round())
    }

    /// Nanoseconds, rounded to the nearest.
    #[must_use]
    pub fn as_nanos(self) -> i64 {
        let nanos = i128::from(self.0) * 1_000_000_000;
        let rounded = (nanos + (1 << 31)) >> 32;
        rounded as i64
    }

    /// From seconds as a float (saturating; NaN gives zero).
    #[must_use]
    pub fn from_seconds_f64(seconds: f64) -> Self {
        Self::saturate_f64((seconds * ONE_SECOND as f64).round())
    }

    /// Seconds as a float.
    #[must_use]
    pub fn to_seconds_f64(self) -> f64 {
        self.0 as f64 / ONE_SECOND as f64
    }

    /// The absolute value (saturating for `MIN`).
    #[must_use]
    pub const fn abs(self) -> Self {
        Self(self.0.saturating_abs())
    }

    /// Half of the span, rounded toward negative infinity.
    #[must_use]
    pub const fn half(self) -> Self {
        Self(self.0 >> 1)
    }

    /// Multiplies by a factor, saturating.
    #[must_use]
    pub fn mul_f64(self, factor: f64) -> Self {
        Self::saturate_f64((self.0 as f64 * factor).round())
    }

    /// Saturating addition.
    #[must_use]
    pub const fn saturating_add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }

    /// Saturating subtraction.
    #[must_use]
    pub const fn saturating_sub(self, rhs: Self) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }

    /// The span as a wide integer, for sums that must not overflow.
    pub(crate) const fn wide(self) -> i128 {
        self.0 as i128
    }

    /// Back from a wide integer, saturating.
    pub(crate) fn from_wide(value: i128) -> Self {
        Self(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }

    fn saturate_f64(units: f64) -> Self {
        // `as` saturates floats to the integer range and maps NaN to 0.
        Self(units as i64)
    }
}

impl fmt::Debug for NtpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpDuration({:.9}s)", self.to_seconds_f64())
    }
}

impl fmt::Display for NtpDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+.9}s", self.to_seconds_f64())
    }
}

impl Add for NtpDuration {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        self.saturating_add(rhs)
    }
}

impl AddAssign for NtpDuration {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl Sub for NtpDuration {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        self.saturating_sub(rhs)
    }
}

impl SubAssign for NtpDuration {
    fn sub_assign(&mut self, rhs: Self) {
        *self = *self - rhs;
    }
}

impl Neg for NtpDuration {
    type Output = Self;
    fn neg(self) -> Self {
        Self(self.0.saturating_neg())
    }
}

/// The 32-bit NTP short format: unsigned 16.16 fixed-point seconds, used for
/// root delay and root dispersion.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpShort(u32);

impl NtpShort {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// The largest value, just under 65536 s.
    pub const MAX: Self = Self(u32::MAX);

    /// From the raw 16.16 bits, as on the wire.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw 16.16 bits, as on the wire.
    #[must_use]
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// As a duration (exact).
    #[must_use]
    pub const fn to_duration(self) -> NtpDuration {
        NtpDuration((self.0 as i64) << 16)
    }

    /// From a duration, rounded up to the next 2^-16 s so that an error
    /// bound is never understated; negative values give zero, values past
    /// the range saturate.
    #[must_use]
    pub fn from_duration(duration: NtpDuration) -> Self {
        let bits = duration.0;
        if bits <= 0 {
            return Self(0);
        }
        let short = (bits + 0xffff) >> 16;
        Self(u32::try_from(short).unwrap_or(u32::MAX))
    }

    /// Seconds as a float.
    #[must_use]
    pub fn to_seconds_f64(self) -> f64 {
        f64::from(self.0) / 65536.0
    }

    /// From seconds as a float (rounded up, clamped to the range).
    #[must_use]
    pub fn from_seconds_f64(seconds: f64) -> Self {
        Self::from_duration(NtpDuration::from_seconds_f64(seconds))
    }
}

impl fmt::Debug for NtpShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NtpShort({:.6}s)", self.to_seconds_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_wraps_across_the_era_boundary() {
        let before = NtpTimestamp::from_parts(u32::MAX, 0); // 2036-02-07 06:28:15
        let after = NtpTimestamp::from_parts(1, 0); // two seconds later, era 1
        assert_eq!(after - before, NtpDuration::from_seconds(2));
        assert_eq!(before - after, NtpDuration::from_seconds(-2));
        assert_eq!(before + NtpDuration::from_seconds(2), after);
    }

    #[test]
    fn nanos_round_trip() {
        for nanos in [0, 1, 2, 999_999_999, -1, -999_999_999, 123_456_789_012] {
            assert_eq!(NtpDuration::from_nanos(nanos).as_nanos(), nanos);
        }
    }

    #[test]
    fn short_format_rounds_up_and_saturates() {
        assert_eq!(NtpShort::from_duration(NtpDuration::from_bits(1)).to_bits(), 1);
        assert_eq!(NtpShort::from_duration(-NtpDuration::ONE_SECOND), NtpShort::ZERO);
        assert_eq!(NtpShort::from_duration(NtpDuration::from_seconds(70_000)), NtpShort::MAX);
        assert_eq!(NtpShort::from_bits(0x0001_8000).to_seconds_f64(), 1.5);
        assert_eq!(NtpShort::from_seconds_f64(1.5).to_duration(), NtpDuration::from_seconds_f64(1.5));
    }

    #[test]
    fn f64_seconds() {
        assert_eq!(NtpDuration::from_seconds_f64(-0.5).to_bits(), -(1 << 31));
        assert_eq!(NtpDuration::from_seconds_f64(f64::NAN), NtpDuration::ZERO);
        assert_eq!(NtpDuration::from_seconds_f64(1e30), NtpDuration::MAX);
    }
}
