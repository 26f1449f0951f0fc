//! One client/server exchange: the four timestamps, the on-wire offset and
//! delay (RFC 5905 §8), a sample's dispersion, and what makes a reply one a
//! client may use.

use thiserror::Error;

use crate::packet::{Header, KissCode, LeapIndicator, Mode, Stratum};
use crate::time::{NtpDuration, NtpTimestamp};

/// PHI: the frequency tolerance the RFC assumes of any clock, 15 ppm
/// (RFC 5905 §7.2), which makes dispersion grow with time.
pub const PHI: f64 = 15e-6;

/// The four timestamps of an exchange.
///
/// T1 and T4 are read from the client's clock, T2 and T3 from the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamps {
    /// T1: client transmit time.
    pub t1: NtpTimestamp,
    /// T2: server receive time.
    pub t2: NtpTimestamp,
    /// T3: server transmit time.
    pub t3: NtpTimestamp,
    /// T4: client receive time.
    pub t4: NtpTimestamp,
}

impl Timestamps {
    /// `offset = ((T2 - T1) + (T3 - T4)) / 2`: how far the server's clock is
    /// ahead of the client's. Computed on the 32.32 values in 128-bit
    /// arithmetic, so nothing is lost and nothing overflows.
    #[must_use]
    pub fn offset(&self) -> NtpDuration {
        let sum = (self.t2 - self.t1).wide() + (self.t3 - self.t4).wide();
        NtpDuration::from_wide(sum.div_euclid(2))
    }

    /// `delay = (T4 - T1) - (T3 - T2)`: the round trip, less the time the
    /// server held the request.
    #[must_use]
    pub fn delay(&self) -> NtpDuration {
        NtpDuration::from_wide((self.t4 - self.t1).wide() - (self.t3 - self.t2).wide())
    }
}

/// 2^exponent seconds, for precision and poll exponents.
#[must_use]
pub fn log2_seconds(exponent: i8) -> f64 {
    2f64.powi(i32::from(exponent))
}

/// A measurement taken from one exchange, as the clock filter takes it
/// (RFC 5905 §8 and A.5.1.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Server clock minus local clock.
    pub offset: NtpDuration,
    /// Round-trip delay, at least the local precision.
    pub delay: NtpDuration,
    /// Error bound of this sample when taken: both precisions plus PHI
    /// times the round trip.
    pub dispersion: NtpDuration,
    /// Local time at which the sample was taken (T4).
    pub time: NtpTimestamp,
}

impl Sample {
    /// The sample from an exchange, given the server's and local precision
    /// exponents.
    #[must_use]
    pub fn new(timestamps: &Timestamps, server_precision: i8, local_precision: i8) -> Self {
        let precision = log2_seconds(local_precision);
        let round_trip = (timestamps.t4 - timestamps.t1).to_seconds_f64().max(0.0);
        let dispersion = log2_seconds(server_precision) + precision + PHI * round_trip;
        let delay = timestamps.delay().max(NtpDuration::from_seconds_f64(precision));
        Self {
            offset: timestamps.offset(),
            delay,
            dispersion: NtpDuration::from_seconds_f64(dispersion),
            time: timestamps.t4,
        }
    }
}

/// Why a well-formed reply cannot be used as a time sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// Not a server-mode packet.
    #[error("not a server reply (mode {0:?})")]
    WrongMode(Mode),
    /// The origin timestamp is not the transmit timestamp of our request:
    /// a stale, duplicated or forged reply.
    #[error("origin timestamp does not match the request (bogus or replayed reply)")]
    OriginMismatch,
    /// A kiss-o'-death.
    #[error("kiss-o'-death {0}")]
    Kiss(KissCode),
    /// The server says it is not synchronized.
    #[error("server unsynchronized (leap {leap:?}, stratum {stratum})")]
    Unsynchronized {
        /// The leap indicator it sent.
        leap: LeapIndicator,
        /// The stratum it sent.
        stratum: u8,
    },
    /// The server's receive or transmit timestamp is zero.
    #[error("server sent a zero {0} timestamp")]
    ZeroTimestamp(&'static str),
}

impl ReplyError {
    /// A human-readable advice for a kiss code, as RFC 5905 §7.4 prescribes.
    #[must_use]
    pub fn kiss_advice(&self) -> Option<&'static str> {
        match self {
            Self::Kiss(KissCode::Rate) => Some("server asks to poll less often"),
            Self::Kiss(KissCode::Deny | KissCode::Restrict) => Some("server refuses service: stop querying it"),
            Self::Kiss(KissCode::NtsNak) => Some("NTS cookie rejected: redo the key exchange"),
            _ => None,
        }
    }
}

/// Checks that `reply` answers the request whose transmit timestamp was
/// `request_transmit` and carries time a client may use. The origin check
/// comes first, so a forged kiss-o'-death cannot silence a server.
pub fn validate_reply(reply: &Header, request_transmit: NtpTimestamp) -> Result<(), ReplyError> {
    if reply.mode != Mode::Server {
        return Err(ReplyError::WrongMode(reply.mode));
    }
    if reply.origin != request_transmit || request_transmit.is_zero() {
        return Err(ReplyError::OriginMismatch);
    }
    if reply.stratum == Stratum::UNSPECIFIED && is_kiss_code(reply.reference_id.0) {
        return Err(ReplyError::Kiss(KissCode::from_bytes(reply.reference_id.0)));
    }
    if reply.leap == LeapIndicator::Unsynchronized || !reply.stratum.is_synchronized() {
        return Err(ReplyError::Unsynchronized { leap: reply.leap, stratum: reply.stratum.0 });
    }
    if reply.receive.is_zero() {
        return Err(ReplyError::ZeroTimestamp("receive"));
    }
    if reply.transmit.is_zero() {
        return Err(ReplyError::ZeroTimestamp("transmit"));
    }
    Ok(())
}

/// A stratum 0 reference ID is a kiss code when it is four printable ASCII
/// letters. An unsynchronized server such as chronyd also sends stratum 0,
/// but with a zero reference ID and leap 3: that is not a kiss.
fn is_kiss_code(bytes: [u8; 4]) -> bool {
    bytes.iter().all(u8::is_ascii_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ReferenceId;
    use chrono::{TimeZone, Utc};

    fn at(h: u32, m: u32, s: u32) -> NtpTimestamp {
        NtpTimestamp::from_datetime(Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap())
    }

    #[test]
    fn worked_example_five_minutes_and_two_seconds() {
        // Client sends at 10:00:00, server receives at 10:05:01 and replies at
        // 10:05:02, client receives at 10:00:03.
        let ts = Timestamps { t1: at(10, 0, 0), t2: at(10, 5, 1), t3: at(10, 5, 2), t4: at(10, 0, 3) };
        assert_eq!(ts.offset(), NtpDuration::from_seconds(300));
        assert_eq!(ts.delay(), NtpDuration::from_seconds(2));
    }

    #[test]
    fn worked_example_across_the_2036_era_boundary() {
        // The era rolls over at 2036-02-07 06:28:16 UTC. Put the client just
        // before it and the server's timestamps after it, and the reverse.
        let boundary = Utc.with_ymd_and_hms(2036, 2, 7, 6, 28, 16).unwrap();
        for client_start in [boundary - chrono::Duration::seconds(2), boundary - chrono::Duration::seconds(301)] {
            let t = |s: i64| NtpTimestamp::from_datetime(client_start + chrono::Duration::seconds(s));
            let ts = Timestamps { t1: t(0), t2: t(301), t3: t(302), t4: t(3) };
            assert_eq!(ts.offset(), NtpDuration::from_seconds(300));
            assert_eq!(ts.delay(), NtpDuration::from_seconds(2));
        }
    }

    #[test]
    fn math_is_exact_at_sub_nanosecond_scale() {
        let base = at(12, 0, 0);
        let ts = Timestamps {
            t1: base,
            t2: base + NtpDuration::from_bits(3),
            t3: base + NtpDuration::from_bits(4),
            t4: base + NtpDuration::from_bits(2),
        };
        // ((3 - 0) + (4 - 2)) / 2 = 2.5 units, floored to 2; delay = 2 - 1 = 1.
        assert_eq!(ts.offset(), NtpDuration::from_bits(2));
        assert_eq!(ts.delay(), NtpDuration::from_bits(1));
    }

    #[test]
    fn sample_dispersion_is_precisions_plus_phi_times_round_trip() {
        let base = at(12, 0, 0);
        let ts = Timestamps { t1: base, t2: base, t3: base, t4: base + NtpDuration::from_seconds(2) };
        let sample = Sample::new(&ts, -20, -20);
        let expected = 2.0 * 2f64.powi(-20) + PHI * 2.0;
        assert!((sample.dispersion.to_seconds_f64() - expected).abs() < 1e-9);
        assert_eq!(sample.delay, NtpDuration::from_seconds(2));
    }

    fn good_reply(origin: NtpTimestamp) -> Header {
        Header {
            mode: Mode::Server,
            stratum: Stratum(1),
            origin,
            receive: at(1, 0, 0),
            transmit: at(1, 0, 0),
            ..Header::default()
        }
    }

    #[test]
    fn reply_validation() {
        let nonce = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
        assert_eq!(validate_reply(&good_reply(nonce), nonce), Ok(()));
        assert_eq!(validate_reply(&good_reply(nonce), NtpTimestamp::from_bits(1)), Err(ReplyError::OriginMismatch));
        let kiss = Header { stratum: Stratum(0), reference_id: ReferenceId(*b"RATE"), ..good_reply(nonce) };
        assert_eq!(validate_reply(&kiss, nonce), Err(ReplyError::Kiss(KissCode::Rate)));
        let unsync = Header { leap: LeapIndicator::Unsynchronized, ..good_reply(nonce) };
        assert!(matches!(validate_reply(&unsync, nonce), Err(ReplyError::Unsynchronized { .. })));
        let stratum16 = Header { stratum: Stratum(16), ..good_reply(nonce) };
        assert!(matches!(validate_reply(&stratum16, nonce), Err(ReplyError::Unsynchronized { stratum: 16, .. })));
        // chronyd before it is synchronized: leap 3, stratum 0, reference ID 0.
        let chrony_unsync = Header {
            leap: LeapIndicator::Unsynchronized,
            stratum: Stratum(0),
            reference_id: ReferenceId([0; 4]),
            ..good_reply(nonce)
        };
        assert!(matches!(validate_reply(&chrony_unsync, nonce), Err(ReplyError::Unsynchronized { stratum: 0, .. })));
        let zero = Header { transmit: NtpTimestamp::ZERO, ..good_reply(nonce) };
        assert_eq!(validate_reply(&zero, nonce), Err(ReplyError::ZeroTimestamp("transmit")));
        let client = Header { mode: Mode::Client, ..good_reply(nonce) };
        assert_eq!(validate_reply(&client, nonce), Err(ReplyError::WrongMode(Mode::Client)));
        // A forged kiss with the wrong origin is not believed.
        let forged = Header { origin: NtpTimestamp::from_bits(9), ..kiss };
        assert_eq!(validate_reply(&forged, nonce), Err(ReplyError::OriginMismatch));
    }
}
