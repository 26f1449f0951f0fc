//! The client's side of interleaved mode: what it keeps of the last
//! exchange answered, how it asks, and how it reads an answer in either
//! mode. Falls back by itself: a server that does not interleave (or no
//! longer holds the reply asked about) answers basic, and that answer is
//! an ordinary measurement.

use thiserror::Error;

use crate::exchange::Timestamps;
use crate::packet::{Header, Mode as PacketMode, Version};
use crate::time::{NtpDuration, NtpTimestamp};

/// Requests sent without an answer after which the client asks in basic
/// mode again, as chrony does: the server has likely forgotten the reply
/// an interleaved request would name.
pub const MAX_MISSED: u32 = 4;

/// The mode an answer came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// T3 was read by the server before its send: this exchange's times.
    Basic,
    /// T3 is when the server's previous reply really left: the previous
    /// exchange's times.
    Interleaved,
}

impl Mode {
    /// `basic` or `interleaved`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Interleaved => "interleaved",
        }
    }
}

/// Why an answer gives no timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InterleaveError {
    /// Its origin is neither of the request's nonces: not an answer to it
    /// (stale, duplicated, forged). Keep waiting.
    #[error("origin matches neither nonce of the request")]
    NotAnAnswer,
    /// An interleaved answer whose transmit time does not fit the exchange
    /// it completes: before that exchange's receive time, or later than the
    /// round trip allows. Its times are not used.
    #[error("interleaved transmit time inconsistent with the previous exchange")]
    Inconsistent,
}

/// The last exchange answered: what an interleaved answer completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Previous {
    t1: NtpTimestamp,
    t2: NtpTimestamp,
    t4: NtpTimestamp,
}

/// A request sent, with the nonces an answer's origin may echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterleavedRequest {
    /// The request (a client-mode header).
    pub header: Header,
    /// Its transmit field: a basic answer echoes it.
    pub basic: NtpTimestamp,
    /// Its receive field when it asks for interleaved mode: an interleaved
    /// answer echoes it.
    pub interleaved: Option<NtpTimestamp>,
}

/// An interleaved client's memory of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interleaved {
    previous: Option<Previous>,
    missed: u32,
}

impl Interleaved {
    /// A client that has not asked yet (its first request opens
    /// interleaved mode and is answered basic).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The next request, with `nonces` (random, non-zero, different) as
    /// its transmit and receive fields. Interleaved once an exchange has
    /// been answered and fewer than [`MAX_MISSED`] requests went unanswered
    /// since. Otherwise it opens interleaved mode: it names no reply (the
    /// receive nonce in the origin field too), so the answer is basic, but
    /// it reads as an interleaved client's request, and a server that keeps
    /// transmit times only for those (ntpd-sim) keeps this answer's, for
    /// the next request to ask about.
    #[must_use]
    pub fn request(&mut self, version: Version, nonces: [NtpTimestamp; 2]) -> InterleavedRequest {
        let [basic, interleaved] = nonces;
        let usable = basic != interleaved && !interleaved.is_zero();
        let asking = self.previous.filter(|_| self.missed < MAX_MISSED && usable);
        self.missed = self.missed.saturating_add(1);
        let (origin, receive) = match asking {
            Some(previous) => (previous.t2, interleaved),
            None if usable => (interleaved, interleaved),
            None => (NtpTimestamp::ZERO, NtpTimestamp::ZERO),
        };
        let header =
            Header { version, mode: PacketMode::Client, origin, receive, transmit: basic, ..Header::default() };
        InterleavedRequest { header, basic, interleaved: asking.map(|_| interleaved) }
    }

    /// Reads `reply` to `sent`, which left at `t1` and came back at `t4`
    /// (local clock, kernel timestamps where there are): the mode it came
    /// in and the four timestamps of the exchange it completes. The reply
    /// must otherwise be valid already (mode, synchronized, non-zero); this
    /// only matches the origin. Either way this exchange is kept for the
    /// next interleaved answer.
    pub fn complete(
        &mut self,
        sent: &InterleavedRequest,
        reply: &Header,
        t1: NtpTimestamp,
        t4: NtpTimestamp,
    ) -> Result<(Mode, Timestamps), InterleaveError> {
        let mode = if reply.origin == sent.basic {
            Mode::Basic
        } else if Some(reply.origin) == sent.interleaved {
            Mode::Interleaved
        } else {
            return Err(InterleaveError::NotAnAnswer);
        };
        let previous = self.previous;
        self.previous = Some(Previous { t1, t2: reply.receive, t4 });
        self.missed = 0;
        let timestamps = match (mode, previous) {
            (Mode::Basic, _) => Timestamps { t1, t2: reply.receive, t3: reply.transmit, t4 },
            (Mode::Interleaved, Some(p)) => Timestamps { t1: p.t1, t2: p.t2, t3: reply.transmit, t4: p.t4 },
            // An interleaved nonce is only sent with a previous exchange.
            (Mode::Interleaved, None) => return Err(InterleaveError::Inconsistent),
        };
        let serving = timestamps.t3 - timestamps.t2;
        if mode == Mode::Interleaved && (serving < NtpDuration::ZERO || serving > timestamps.t4 - timestamps.t1) {
            return Err(InterleaveError::Inconsistent);
        }
        Ok((mode, timestamps))
    }

    /// Whether the next request asks for interleaved mode.
    #[must_use]
    pub fn will_interleave(&self) -> bool {
        self.previous.is_some() && self.missed < MAX_MISSED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0) + NtpDuration::from_seconds_f64(seconds)
    }

    const NONCES: [[u64; 2]; 3] = [[11, 12], [21, 22], [31, 32]];

    fn nonces(n: usize) -> [NtpTimestamp; 2] {
        NONCES[n].map(NtpTimestamp::from_bits)
    }

    /// A server 1 s ahead that reads T3 5 µs before its reply really leaves.
    fn basic_reply(request: &Header, t2: NtpTimestamp, read_t3: NtpTimestamp) -> Header {
        Header { mode: PacketMode::Server, origin: request.transmit, receive: t2, transmit: read_t3, ..*request }
    }

    #[test]
    fn the_first_request_opens_then_interleaved_answers_complete_the_previous_exchange() {
        let mut client = Interleaved::new();
        assert!(!client.will_interleave());
        let first = client.request(Version::V4, nonces(0));
        // It names no reply, and reads as an interleaved client's: origin
        // and receive non-zero, receive unlike transmit.
        let [basic, receive_nonce] = nonces(0);
        assert_eq!(
            (first.header.origin, first.header.receive, first.header.transmit),
            (receive_nonce, receive_nonce, basic)
        );
        assert_eq!(first.interleaved, None, "only a basic answer is expected");
        // Client sends at 0, server (1 s ahead) receives at 1.000010, really
        // sends at 1.000020 but stamps 1.000015; client receives at 0.000030.
        let reply = basic_reply(&first.header, t(1.000_010), t(1.000_015));
        let (mode, basic) = client.complete(&first, &reply, t(0.0), t(0.000_030)).unwrap();
        assert_eq!(mode, Mode::Basic);
        assert!((basic.offset().to_seconds_f64() - 0.999_997_5).abs() < 1e-9, "{}", basic.offset());

        let second = client.request(Version::V4, nonces(1));
        assert_eq!(second.header.origin, t(1.000_010), "names the T2 it got");
        assert_eq!(second.header.receive, nonces(1)[1]);
        assert_eq!(second.header.transmit, nonces(1)[0]);
        // The server answers with the real transmit time of its first reply.
        let reply = Header {
            mode: PacketMode::Server,
            origin: second.header.receive,
            receive: t(2.000_010),
            transmit: t(1.000_020),
            ..second.header
        };
        let (mode, exact) = client.complete(&second, &reply, t(1.0), t(1.000_030)).unwrap();
        assert_eq!(mode, Mode::Interleaved);
        assert_eq!(exact, Timestamps { t1: t(0.0), t2: t(1.000_010), t3: t(1.000_020), t4: t(0.000_030) });
        assert!((exact.offset().to_seconds_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_server_that_does_not_interleave_gives_basic_measurements() {
        let mut client = Interleaved::new();
        for n in 0..3 {
            let sent = client.request(Version::V4, nonces(n));
            let start = n as f64;
            let reply = basic_reply(&sent.header, t(start + 1.000_010), t(start + 1.000_020));
            let (mode, _) = client.complete(&sent, &reply, t(start), t(start + 0.000_030)).unwrap();
            assert_eq!(mode, Mode::Basic);
            assert_eq!(sent.interleaved.is_some(), n > 0, "still asks");
        }
    }

    #[test]
    fn stale_and_inconsistent_answers_are_not_used() {
        let mut client = Interleaved::new();
        let first = client.request(Version::V4, nonces(0));
        let reply = basic_reply(&first.header, t(1.0), t(1.000_001));
        client.complete(&first, &reply, t(0.0), t(0.000_030)).unwrap();
        let second = client.request(Version::V4, nonces(1));
        // A replayed answer to the first request: neither nonce.
        assert_eq!(client.complete(&second, &reply, t(1.0), t(1.1)), Err(InterleaveError::NotAnAnswer));
        // An interleaved answer whose T3 is before the T2 it completes, or
        // later than the round trip allows.
        for t3 in [t(0.999), t(1.001)] {
            let mut client = client.clone();
            let bad = Header { origin: second.header.receive, receive: t(2.0), transmit: t3, ..reply };
            assert_eq!(client.complete(&second, &bad, t(1.0), t(1.1)), Err(InterleaveError::Inconsistent));
        }
    }

    #[test]
    fn after_missed_answers_it_asks_in_basic_mode_again() {
        let mut client = Interleaved::new();
        let first = client.request(Version::V4, nonces(0));
        let reply = basic_reply(&first.header, t(1.0), t(1.000_001));
        client.complete(&first, &reply, t(0.0), t(0.000_030)).unwrap();
        for _ in 0..MAX_MISSED {
            assert!(client.request(Version::V4, nonces(1)).interleaved.is_some());
        }
        assert_eq!(client.request(Version::V4, nonces(1)).interleaved, None);
        assert!(!client.will_interleave());
    }
}
