//! The server's decision for one datagram: ignore it, or reply with these
//! 48 bytes (RFC 5905 §9.2, "fast_xmit"), in basic mode or, to a client
//! that asks, in interleaved mode ([`crate::interleave`]). Pure: the caller
//! hands in the receive time, its own synchronisation state and its memory
//! of replies sent, and stamps the transmit time into a basic reply as late
//! as it can (see [`crate::packet::write_transmit`]).

use crate::exchange::PHI;
use crate::packet::{DecodeError, Header, KissCode, LeapIndicator, Mode, ReferenceId, Stratum, HEADER_LEN};
use crate::time::{NtpDuration, NtpShort, NtpTimestamp};

/// What the server advertises about its own synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// Leap indicator (`Unsynchronized` until the clock is set).
    pub leap: LeapIndicator,
    /// Our stratum (the system peer's + 1, or the configured one of a primary).
    pub stratum: Stratum,
    /// Precision exponent of the clock the timestamps come from.
    pub precision: i8,
    /// Round-trip delay to the primary reference.
    pub root_delay: NtpShort,
    /// Root dispersion at the time of the last update.
    pub root_dispersion: NtpShort,
    /// What we are synchronized to.
    pub reference_id: ReferenceId,
    /// When the clock was last updated.
    pub reference_time: NtpTimestamp,
}

impl ServerState {
    /// A server that is its own reference (a primary, or a local clock
    /// configured at some stratum): synchronized, no leap warning, nothing
    /// between it and its reference (root delay and dispersion zero).
    #[must_use]
    pub const fn primary(
        stratum: Stratum,
        precision: i8,
        reference_id: ReferenceId,
        reference_time: NtpTimestamp,
    ) -> Self {
        Self {
            leap: LeapIndicator::NoWarning,
            stratum,
            precision,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id,
            reference_time,
        }
    }
}

/// How the server's access policy treats the sender, decided by the shell
/// (access lists, rate limits) before the packet is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve time.
    Serve,
    /// Answer with this kiss-o'-death and no time.
    Kiss(KissCode),
    /// Answer nothing.
    Drop,
}

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Not a packet: too short, a version other than 3 or 4, a malformed
    /// extension field.
    Malformed(DecodeError),
    /// Not a client request (mode 3); control (6) and private (7) queries,
    /// the classic amplification vectors, land here.
    NotARequest(Mode),
    /// A request whose transmit timestamp is zero, which a reply could not
    /// be matched to.
    ZeroTransmit,
    /// The access policy said to drop it.
    Denied,
}

/// What a reply is, which says how it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Time in basic mode: the transmit timestamp is still to be stamped,
    /// right before the send.
    Basic,
    /// Time in basic mode to a client that asks for interleaved mode, when
    /// the reply its request names is not known (its first interleaved
    /// request, or one whose reply was forgotten): stamped like a basic
    /// reply, and its real transmit time is what the client's next request
    /// will ask for.
    BasicToInterleaved,
    /// Time in interleaved mode: the transmit field holds when the previous
    /// reply to this client left. Sent as it is.
    Interleaved,
    /// A kiss-o'-death, which keeps the client's timestamps. Sent as it is.
    Kiss,
}

impl ReplyKind {
    /// Whether the transmit timestamp is still to be written.
    #[must_use]
    pub fn to_stamp(self) -> bool {
        matches!(self, Self::Basic | Self::BasicToInterleaved)
    }

    /// Whether the client's next request may name this reply, so the
    /// server keeps when it really left: a reply to a client in interleaved
    /// mode. Only these need the kernel's transmit timestamp, which costs
    /// a basic server more than the whole rest of a reply.
    #[must_use]
    pub fn to_remember(self) -> bool {
        matches!(self, Self::BasicToInterleaved | Self::Interleaved)
    }
}

/// The decision for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Response {
    /// Send nothing.
    Ignore(IgnoreReason),
    /// Send these bytes (after stamping the transmit time, for a basic
    /// reply); never longer than the request (a request is at least 48
    /// bytes).
    Reply {
        /// The encoded reply.
        bytes: [u8; HEADER_LEN],
        /// Basic, interleaved or a kiss.
        kind: ReplyKind,
    },
}

/// Decides what to send back for `request`, received at `receive_time` by
/// the server's clock, in basic mode.
pub fn respond(request: &[u8], receive_time: NtpTimestamp, state: &ServerState, admission: Admission) -> Response {
    respond_interleaved(request, receive_time, state, admission, |_| None)
}

/// [`respond`], answering an interleaved request in interleaved mode when
/// `transmit_of` knows when the reply it names (by the receive timestamp
/// that reply carried, the request's origin) left; in basic mode otherwise.
/// `transmit_of` is asked only for an interleaved request that is served.
pub fn respond_interleaved(
    request: &[u8],
    receive_time: NtpTimestamp,
    state: &ServerState,
    admission: Admission,
    transmit_of: impl FnOnce(NtpTimestamp) -> Option<NtpTimestamp>,
) -> Response {
    let header = match crate::packet::Packet::decode(request) {
        Ok(packet) => packet.header,
        Err(err) => return Response::Ignore(IgnoreReason::Malformed(err)),
    };
    if let Some(reason) = not_a_request(&header) {
        return Response::Ignore(reason);
    }
    let (reply, kind) = match admission {
        Admission::Drop => return Response::Ignore(IgnoreReason::Denied),
        Admission::Kiss(code) => (kiss_reply(&header, code), ReplyKind::Kiss),
        Admission::Serve => {
            let reply = time_reply(&header, receive_time, state);
            if !asks_interleaved(&header) {
                (reply, ReplyKind::Basic)
            } else if let Some(transmit) = transmit_of(header.origin) {
                (Header { origin: header.receive, transmit, ..reply }, ReplyKind::Interleaved)
            } else {
                (reply, ReplyKind::BasicToInterleaved)
            }
        }
    };
    Response::Reply { bytes: reply.encode(), kind }
}

/// An interleaved request names the reply it completes by its origin and
/// carries two different nonces in its receive and transmit fields (a
/// basic client leaves origin or receive zero, or the two fields equal).
fn asks_interleaved(request: &Header) -> bool {
    !request.origin.is_zero() && !request.receive.is_zero() && request.receive != request.transmit
}

/// Why a decoded packet is no request to answer, if it is not: not a
/// client (mode 3) packet, or a zero transmit timestamp (nothing to echo as
/// the origin). The plain and the NTS responder both ask.
pub(crate) fn not_a_request(header: &Header) -> Option<IgnoreReason> {
    if header.mode != Mode::Client {
        return Some(IgnoreReason::NotARequest(header.mode));
    }
    header.transmit.is_zero().then_some(IgnoreReason::ZeroTransmit)
}

/// A normal reply: our time and our synchronisation state. Root dispersion
/// grows at PHI from the last update (RFC 5905 §9.2).
pub(crate) fn time_reply(request: &Header, receive_time: NtpTimestamp, state: &ServerState) -> Header {
    let since_update = (receive_time - state.reference_time).max(NtpDuration::ZERO);
    let grown = if state.leap == LeapIndicator::Unsynchronized {
        state.root_dispersion
    } else {
        NtpShort::from_duration(state.root_dispersion.to_duration() + since_update.mul_f64(PHI))
    };
    Header {
        leap: state.leap,
        version: request.version,
        mode: Mode::Server,
        stratum: state.stratum,
        poll: request.poll,
        precision: state.precision,
        root_delay: state.root_delay,
        root_dispersion: grown,
        reference_id: state.reference_id,
        reference: state.reference_time,
        origin: request.transmit,
        receive: receive_time,
        transmit: receive_time,
    }
}

/// A kiss-o'-death: stratum 0 and the code in the reference ID. It carries
/// none of our time: every timestamp echoes the client's own.
pub(crate) fn kiss_reply(request: &Header, code: KissCode) -> Header {
    Header {
        leap: LeapIndicator::Unsynchronized,
        version: request.version,
        mode: Mode::Server,
        stratum: Stratum::UNSPECIFIED,
        poll: request.poll,
        precision: 0,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: ReferenceId::from_kiss(code),
        reference: NtpTimestamp::ZERO,
        origin: request.transmit,
        receive: request.transmit,
        transmit: request.transmit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Packet, Version};

    fn state() -> ServerState {
        ServerState {
            leap: LeapIndicator::NoWarning,
            stratum: Stratum(2),
            precision: -24,
            root_delay: NtpShort::from_seconds_f64(0.001),
            root_dispersion: NtpShort::from_seconds_f64(0.002),
            reference_id: ReferenceId([10, 0, 0, 1]),
            reference_time: NtpTimestamp::from_unix(1_800_000_000, 0),
        }
    }

    fn request(version: u8, mode: u8) -> Vec<u8> {
        let mut bytes = vec![0u8; 48];
        bytes[0] = (version << 3) | mode;
        bytes[2] = 6;
        bytes[40..48].copy_from_slice(&0x66c6_4ffa_543b_a39fu64.to_be_bytes());
        bytes
    }

    fn decode_reply(response: Response) -> Header {
        match response {
            Response::Reply { bytes, .. } => Header::decode(&bytes).unwrap(),
            Response::Ignore(reason) => panic!("ignored: {reason:?}"),
        }
    }

    #[test]
    fn answers_a_client_in_its_version() {
        let t2 = NtpTimestamp::from_unix(1_800_000_100, 0);
        for version in [3, 4] {
            let reply = decode_reply(respond(&request(version, 3), t2, &state(), Admission::Serve));
            assert_eq!(reply.version.to_bits(), version);
            assert_eq!(reply.mode, Mode::Server);
            assert_eq!(reply.origin, NtpTimestamp::from_bits(0x66c6_4ffa_543b_a39f));
            assert_eq!(reply.receive, t2);
            assert_eq!(reply.poll, 6);
            assert_eq!(reply.stratum, Stratum(2));
            assert_eq!(reply.reference, state().reference_time);
            // 2 ms + 100 s * 15 ppm = 3.5 ms.
            assert!((reply.root_dispersion.to_seconds_f64() - 0.0035).abs() < 1e-4);
        }
    }

    #[test]
    fn ignores_everything_that_is_not_a_client_request() {
        let t2 = NtpTimestamp::from_unix(1_800_000_100, 0);
        for mode in [0, 1, 2, 4, 5, 6, 7] {
            let r = respond(&request(4, mode), t2, &state(), Admission::Serve);
            assert_eq!(r, Response::Ignore(IgnoreReason::NotARequest(Mode::from_bits(mode))));
        }
        for version in [0, 1, 2, 5, 6, 7] {
            let r = respond(&request(version, 3), t2, &state(), Admission::Serve);
            assert!(matches!(r, Response::Ignore(IgnoreReason::Malformed(DecodeError::UnsupportedVersion(_)))));
        }
        let short = respond(&request(4, 3)[..47], t2, &state(), Admission::Serve);
        assert!(matches!(short, Response::Ignore(IgnoreReason::Malformed(DecodeError::TooShort { len: 47 }))));
        let mut zero = request(4, 3);
        zero[40..48].fill(0);
        assert_eq!(respond(&zero, t2, &state(), Admission::Serve), Response::Ignore(IgnoreReason::ZeroTransmit));
        assert_eq!(respond(&request(4, 3), t2, &state(), Admission::Drop), Response::Ignore(IgnoreReason::Denied));
    }

    #[test]
    fn kiss_carries_the_code_and_none_of_our_time() {
        let t2 = NtpTimestamp::from_unix(1_800_000_100, 0);
        let reply = decode_reply(respond(&request(4, 3), t2, &state(), Admission::Kiss(KissCode::Rate)));
        assert_eq!(reply.stratum, Stratum(0));
        assert_eq!(reply.reference_id, ReferenceId(*b"RATE"));
        assert_eq!(reply.receive, reply.origin);
        assert_eq!(reply.transmit, reply.origin);
    }

    #[test]
    fn an_interleaved_request_gets_the_previous_transmit_time_if_known() {
        let t2 = NtpTimestamp::from_unix(1_800_000_100, 0);
        let earlier = NtpTimestamp::from_unix(1_800_000_036, 5);
        let mut bytes = request(4, 3);
        bytes[24..32].copy_from_slice(&0x1111u64.to_be_bytes()); // origin: the T2 it got
        bytes[32..40].copy_from_slice(&0x2222u64.to_be_bytes()); // receive: its interleaved nonce
        let mut asked = None;
        let known = |origin| {
            asked = Some(origin);
            Some(earlier)
        };
        let response = respond_interleaved(&bytes, t2, &state(), Admission::Serve, known);
        assert_eq!(asked, Some(NtpTimestamp::from_bits(0x1111)));
        assert!(matches!(response, Response::Reply { kind: ReplyKind::Interleaved, .. }));
        let reply = decode_reply(response);
        assert_eq!(reply.origin, NtpTimestamp::from_bits(0x2222), "echoes the interleaved nonce");
        assert_eq!((reply.receive, reply.transmit), (t2, earlier));

        // Unknown: a basic reply, echoing the transmit nonce, whose own
        // transmit time is to be remembered for the next request.
        let response = respond_interleaved(&bytes, t2, &state(), Admission::Serve, |_| None);
        assert!(matches!(response, Response::Reply { kind: ReplyKind::BasicToInterleaved, .. }));
        assert_eq!(decode_reply(response).origin, NtpTimestamp::from_bits(0x66c6_4ffa_543b_a39f));

        // Basic requests (receive zero, or receive equal to transmit) are
        // never looked up, and a kiss stays a kiss.
        for receive in [0, 0x66c6_4ffa_543b_a39f_u64] {
            bytes[32..40].copy_from_slice(&receive.to_be_bytes());
            let response = respond_interleaved(&bytes, t2, &state(), Admission::Serve, |_| panic!("looked up"));
            assert!(matches!(response, Response::Reply { kind: ReplyKind::Basic, .. }));
        }
        bytes[32..40].copy_from_slice(&0x2222u64.to_be_bytes());
        let kiss = Admission::Kiss(KissCode::Rate);
        let response = respond_interleaved(&bytes, t2, &state(), kiss, |_| panic!("looked up"));
        assert!(matches!(response, Response::Reply { kind: ReplyKind::Kiss, .. }));
    }

    #[test]
    fn a_request_with_extensions_gets_a_48_byte_reply() {
        let mut bytes = request(4, 3);
        bytes.extend_from_slice(&[0x01, 0x04, 0x00, 0x20]);
        bytes.extend_from_slice(&[0; 28]);
        assert!(Packet::decode(&bytes).is_ok());
        let reply = decode_reply(respond(&bytes, NtpTimestamp::from_unix(1, 0), &state(), Admission::Serve));
        assert_eq!(reply.version, Version::V4);
    }
}
