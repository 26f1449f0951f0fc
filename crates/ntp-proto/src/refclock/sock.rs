//! chrony's SOCK reference clock protocol: the datagram gpsd sends to
//! `/run/chrony.DEVICE.sock` (its PPS edges with the seconds joined: whole
//! offsets, `pulse` 0); other drivers may send bare pulses (`pulse` 1).
//!
//! ```c
//! struct sock_sample {
//!     struct timeval tv;  /* the system clock at the sample */
//!     double offset;      /* reference minus system clock, seconds */
//!     int pulse;          /* 1: a PPS pulse, only the fraction counts */
//!     int leap;           /* NTP's leap indicator */
//!     int _pad;
//!     int magic;          /* 0x534f434b, "SOCK" */
//! };
//! ```
//! Native endianness, 40 bytes on a 64-bit Linux. Anything else is refused
//! with a reason, never a panic.

use thiserror::Error;

use crate::time::{NtpDuration, NtpTimestamp};

/// `sizeof(struct sock_sample)` with an 8-byte `time_t` and `suseconds_t`.
pub const SOCK_SAMPLE_SIZE: usize = 40;
/// The `magic` field.
pub const SOCK_MAGIC: i32 = 0x534f_434b;

const TV_SEC: usize = 0;
const TV_USEC: usize = 8;
const OFFSET: usize = 16;
const PULSE: usize = 24;
const LEAP: usize = 28;
const MAGIC: usize = 36;

/// One sample as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SockSample {
    /// The system clock at the sample (`tv`).
    pub system: NtpTimestamp,
    /// Reference minus system clock.
    pub offset: NtpDuration,
    /// A PPS pulse: only the offset's fraction of a second means anything.
    pub pulse: bool,
    /// Leap indicator (0-3).
    pub leap: u8,
}

/// Why a datagram is not a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SockError {
    /// Not 40 bytes.
    #[error("{0} bytes, not {SOCK_SAMPLE_SIZE}")]
    Size(usize),
    /// The magic number is wrong.
    #[error("bad magic {0:#x}")]
    Magic(i32),
    /// `tv_usec` out of range, or the offset not a finite number of
    /// seconds within a day.
    #[error("time or offset out of range")]
    Range,
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<SockSample, SockError> {
    let bytes: &[u8; SOCK_SAMPLE_SIZE] = datagram.try_into().map_err(|_| SockError::Size(datagram.len()))?;
    let magic = i32::from_ne_bytes(word(bytes, MAGIC));
    if magic != SOCK_MAGIC {
        return Err(SockError::Magic(magic));
    }
    let seconds = i64::from_ne_bytes(long(bytes, TV_SEC));
    let micros = i64::from_ne_bytes(long(bytes, TV_USEC));
    let offset = f64::from_ne_bytes(long(bytes, OFFSET));
    if !(0..1_000_000).contains(&micros) || !offset.is_finite() || offset.abs() > 86_400.0 {
        return Err(SockError::Range);
    }
    Ok(SockSample {
        system: NtpTimestamp::from_unix(seconds, micros as u32 * 1000),
        offset: NtpDuration::from_seconds_f64(offset),
        pulse: i32::from_ne_bytes(word(bytes, PULSE)) != 0,
        leap: (i32::from_ne_bytes(word(bytes, LEAP)) & 3) as u8,
    })
}

/// Encodes a sample as gpsd does (for tests and simulated senders).
#[must_use]
pub fn encode(sample: &SockSample) -> [u8; SOCK_SAMPLE_SIZE] {
    let mut bytes = [0u8; SOCK_SAMPLE_SIZE];
    let (seconds, nanos) = sample.system.to_unix();
    bytes[TV_SEC..TV_SEC + 8].copy_from_slice(&seconds.to_ne_bytes());
    bytes[TV_USEC..TV_USEC + 8].copy_from_slice(&i64::from(nanos / 1000).to_ne_bytes());
    bytes[OFFSET..OFFSET + 8].copy_from_slice(&sample.offset.to_seconds_f64().to_ne_bytes());
    bytes[PULSE..PULSE + 4].copy_from_slice(&i32::from(sample.pulse).to_ne_bytes());
    bytes[LEAP..LEAP + 4].copy_from_slice(&i32::from(sample.leap).to_ne_bytes());
    bytes[MAGIC..MAGIC + 4].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
    bytes
}

fn word(bytes: &[u8; SOCK_SAMPLE_SIZE], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    w
}

fn long(bytes: &[u8; SOCK_SAMPLE_SIZE], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    w
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn gpsd_sample() -> SockSample {
        SockSample {
            system: NtpTimestamp::from_unix(1_800_000_000, 250_000_000),
            offset: NtpDuration::from_seconds_f64(-0.25),
            pulse: false,
            leap: 0,
        }
    }

    #[test]
    fn round_trips_and_checks_size_and_magic() {
        let bytes = encode(&gpsd_sample());
        assert_eq!(decode(&bytes), Ok(gpsd_sample()));
        assert_eq!(decode(&bytes[..39]), Err(SockError::Size(39)));
        let mut bad = bytes;
        bad[MAGIC] ^= 1;
        assert!(matches!(decode(&bad), Err(SockError::Magic(_))));
        let mut nan = bytes;
        nan[OFFSET..OFFSET + 8].copy_from_slice(&f64::NAN.to_ne_bytes());
        assert_eq!(decode(&nan), Err(SockError::Range));
    }

    proptest! {
        #[test]
        fn any_datagram_decodes_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_forty_bytes_with_the_magic_decode_or_are_refused(bytes in proptest::array::uniform32(any::<u8>()), tail in any::<u64>()) {
            let mut datagram = [0u8; SOCK_SAMPLE_SIZE];
            datagram[..32].copy_from_slice(&bytes);
            datagram[32..].copy_from_slice(&tail.to_ne_bytes());
            datagram[MAGIC..].copy_from_slice(&SOCK_MAGIC.to_ne_bytes());
            if let Ok(sample) = decode(&datagram) {
                prop_assert!(sample.offset.to_seconds_f64().abs() <= 86_400.0 + 1.0);
                let again = decode(&encode(&sample)).unwrap();
                prop_assert_eq!(again.pulse, sample.pulse);
            }
        }
    }
}
