//! Time as NTP sees it: timestamps, short-format values, signed durations,
//! and their conversions to the outside world.

mod convert;
mod timestamp;

pub use convert::{fraction_to_nanos, nanos_to_fraction, NTP_UNIX_OFFSET};
pub use timestamp::{NtpDuration, NtpShort, NtpTimestamp};
