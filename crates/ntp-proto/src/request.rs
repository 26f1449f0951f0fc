//! A client's request in flight, and the one check of what comes back
//! (RFC 5905 §8): from the server asked, decodable, authenticated where the
//! request was (the NTS hook), an answer to this request (server mode, the
//! origin echoing our transmit timestamp), and carrying usable time.
//!
//! `ntp-client`'s exchange (and so `ntp-query` and the daemon's upstreams)
//! and the simulator's engine all judge replies through [`SentRequest`].

use std::convert::Infallible;

use thiserror::Error;

use crate::exchange::{validate_reply, ReplyError};
use crate::packet::{DecodeError, Header, Packet};
use crate::time::NtpTimestamp;

/// A request sent to the server at address `A` (a socket address, or the
/// simulator's node index), waiting for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRequest<A> {
    /// Where it went: a reply from anywhere else is not an answer.
    pub server: A,
    /// Its transmit timestamp, which an answer's origin echoes (a random
    /// nonce, so the request reveals nothing of the local clock).
    pub transmit: NtpTimestamp,
    /// For an interleaved request, its receive field (another nonce),
    /// which an interleaved answer's origin echoes instead
    /// ([`crate::interleave`]).
    pub interleaved: Option<NtpTimestamp>,
}

/// Why a datagram is not the usable answer to a [`SentRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal<A, E> {
    /// It came from another address.
    #[error("reply came from another address")]
    WrongSource(A),
    /// It is not an NTP packet.
    #[error("undecodable reply: {0}")]
    Decode(DecodeError),
    /// The authentication the request asked for failed (NTS).
    #[error("unauthenticated reply: {0}")]
    Unauthenticated(E),
    /// It does not answer this request (wrong mode, origin not our
    /// transmit timestamp): stale, duplicated or forged. Keep waiting.
    #[error("bogus reply: {0}")]
    Bogus(ReplyError),
    /// It answers this request, but with no time to use (a kiss-o'-death,
    /// an unsynchronized server, a zero timestamp). The exchange is over.
    #[error("{error}")]
    Unusable {
        /// The reply, for its kiss code, stratum and the like.
        reply: Box<Header>,
        /// What makes it unusable.
        error: ReplyError,
    },
}

impl<A, E> Refusal<A, E> {
    /// True if the datagram was the server's answer, so waiting on is
    /// pointless; every other refusal is ignored like a forged packet.
    #[must_use]
    pub fn is_answer(&self) -> bool {
        matches!(self, Self::Unusable { .. })
    }
}

impl<A: PartialEq> SentRequest<A> {
    /// Judges `bytes` from `source` as the answer to a plain request.
    pub fn accept(&self, source: A, bytes: &[u8]) -> Result<Header, Refusal<A, Infallible>> {
        self.accept_with(source, bytes, None::<fn(&[u8], &Packet) -> Result<(), Infallible>>)
    }

    /// Judges `bytes` from `source` as the answer to this request. With
    /// `verify` (an authenticated request: NTS checks the unique identifier
    /// and the authenticator), the datagram is also decoded whole and
    /// handed to it before the header is judged.
    pub fn accept_with<E>(
        &self,
        source: A,
        bytes: &[u8],
        verify: Option<impl FnOnce(&[u8], &Packet) -> Result<(), E>>,
    ) -> Result<Header, Refusal<A, E>> {
        if source != self.server {
            return Err(Refusal::WrongSource(source));
        }
        let reply = Header::decode(bytes).map_err(Refusal::Decode)?;
        if let Some(verify) = verify {
            let packet = Packet::decode(bytes).map_err(Refusal::Decode)?;
            verify(bytes, &packet).map_err(Refusal::Unauthenticated)?;
        }
        let echoed = match self.interleaved {
            Some(nonce) if reply.origin == nonce => nonce,
            _ => self.transmit,
        };
        match validate_reply(&reply, echoed) {
            Ok(()) => Ok(reply),
            Err(error @ (ReplyError::OriginMismatch | ReplyError::WrongMode(_))) => Err(Refusal::Bogus(error)),
            Err(error) => Err(Refusal::Unusable { reply: Box::new(reply), error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{KissCode, Mode, ReferenceId, Stratum};

    const NONCE: NtpTimestamp = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
    const SENT: SentRequest<u8> = SentRequest { server: 1, transmit: NONCE, interleaved: None };

    fn answer() -> Header {
        Header {
            mode: Mode::Server,
            stratum: Stratum(2),
            reference_id: ReferenceId(*b"GPS\0"),
            origin: NONCE,
            receive: NtpTimestamp::from_bits(5 << 32),
            transmit: NtpTimestamp::from_bits(6 << 32),
            ..Header::default()
        }
    }

    #[test]
    fn an_answer_from_the_server_is_accepted() {
        assert_eq!(SENT.accept(1, &answer().encode()), Ok(answer()));
    }

    #[test]
    fn strangers_garbage_and_forgeries_are_ignored_but_a_kiss_is_an_answer() {
        assert_eq!(SENT.accept(2, &answer().encode()), Err(Refusal::WrongSource(2)));
        assert!(matches!(SENT.accept(1, &[0x24; 10]), Err(Refusal::Decode(_))));
        let forged = Header { origin: NtpTimestamp::from_bits(7), ..answer() };
        assert_eq!(SENT.accept(1, &forged.encode()), Err(Refusal::Bogus(ReplyError::OriginMismatch)));
        let kiss = Header { stratum: Stratum::UNSPECIFIED, reference_id: ReferenceId(*b"RATE"), ..answer() };
        let refusal = SENT.accept(1, &kiss.encode()).unwrap_err();
        assert!(refusal.is_answer());
        assert_eq!(refusal, Refusal::Unusable { reply: Box::new(kiss), error: ReplyError::Kiss(KissCode::Rate) });
    }

    #[test]
    fn the_verification_runs_before_the_header_is_judged() {
        let forged = Header { origin: NtpTimestamp::from_bits(7), ..answer() };
        let refused = SENT.accept_with(1, &forged.encode(), Some(|_: &[u8], _: &Packet| Err("no authenticator")));
        assert_eq!(refused, Err(Refusal::Unauthenticated("no authenticator")));
        let verified = SENT.accept_with(
            1,
            &answer().encode(),
            Some(|bytes: &[u8], packet: &Packet| {
                assert_eq!(bytes.len(), 48);
                assert_eq!(packet.header, answer());
                Ok::<(), &str>(())
            }),
        );
        assert_eq!(verified, Ok(answer()));
    }
}
