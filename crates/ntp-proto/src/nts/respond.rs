//! The server's decision for a request that carries NTS extension fields
//! (RFC 8915 §5.7): the authenticated reply with fresh cookies, an NTS NAK,
//! or nothing. Apart from the plain responder's fixed 48-byte fast path:
//! the shell sends a packet here only when it is longer than a header.

use super::cookie::{MasterKeys, COOKIE_LEN};
use super::ntp::{self, ServerCheck, NONCE_LEN};
use crate::packet::{DecodeError, KissCode, Packet};
use crate::responder::{kiss_reply, not_a_request, time_reply, Admission, IgnoreReason, ServerState};
use crate::NtpTimestamp;

/// The decision for one NTS request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum NtsResponse {
    /// Send nothing.
    Ignore(IgnoreReason),
    /// Send these bytes as they are (the transmit time is inside the
    /// authenticated data, so it was set before sealing). Never longer
    /// than the request.
    Reply {
        /// The whole reply.
        bytes: Vec<u8>,
        /// What kind of reply it is.
        kind: NtsReplyKind,
    },
}

/// What an NTS reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtsReplyKind {
    /// Authenticated time and fresh cookies.
    Time,
    /// The access policy's kiss-o'-death (unauthenticated, with the unique identifier).
    Kiss,
    /// An NTS NAK: the cookie did not open or the request did not verify.
    Nak,
}

/// A request for the NTS path, decoded once: the datagram (the
/// authenticator covers its bytes) and its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtsRequest<'a> {
    /// The datagram as received.
    pub bytes: &'a [u8],
    /// It decoded.
    pub packet: Packet,
}

impl<'a> NtsRequest<'a> {
    /// Decodes the datagram `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Self { bytes, packet: Packet::decode(bytes)? })
    }

    /// True if it carries NTS extension fields, so it is the NTS path's to
    /// answer; otherwise the plain responder answers it.
    #[must_use]
    pub fn has_nts_fields(&self) -> bool {
        ntp::has_nts_fields(&self.packet)
    }
}

/// Decides what to send back for the NTS request `request`, received at
/// `receive_time`. `transmit_time` gives T3 for an authenticated reply: it
/// is asked once, only for such a reply, after the request's cookie is
/// opened, the fresh cookies are sealed and the nonce is drawn, so only
/// the reply's own seal (T3 is inside what it authenticates) lies between
/// T3 and the send. The caller gives the time; the core never reads a clock.
/// `random` fills nonces (the shell passes a CSPRNG).
pub fn respond_nts(
    request: &NtsRequest<'_>,
    receive_time: NtpTimestamp,
    transmit_time: impl FnOnce() -> NtpTimestamp,
    state: &ServerState,
    admission: Admission,
    masters: &MasterKeys,
    random: &mut impl FnMut(&mut [u8]),
) -> NtsResponse {
    let NtsRequest { bytes: request, packet } = request;
    let header = packet.header;
    if let Some(reason) = not_a_request(&header) {
        return NtsResponse::Ignore(reason);
    }
    if admission == Admission::Drop {
        return NtsResponse::Ignore(IgnoreReason::Denied);
    }
    let not_nts = IgnoreReason::Malformed(DecodeError::MalformedExtension {
        offset: crate::packet::HEADER_LEN,
        reason: "not a well-formed NTS request",
    });
    match ntp::check_request(request, packet, masters, COOKIE_LEN) {
        ServerCheck::Drop => NtsResponse::Ignore(not_nts),
        ServerCheck::Nak { unique_id } => {
            let bytes = ntp::nak(&kiss_reply(&header, KissCode::NtsNak), &unique_id);
            NtsResponse::Reply { bytes, kind: NtsReplyKind::Nak }
        }
        ServerCheck::Authentic { unique_id, keys, cookies } => {
            if let Admission::Kiss(code) = admission {
                let bytes = ntp::nak(&kiss_reply(&header, code), &unique_id);
                return NtsResponse::Reply { bytes, kind: NtsReplyKind::Kiss };
            }
            let fresh = masters.make_cookies(&keys, cookies, &mut *random);
            let mut nonce = [0; NONCE_LEN];
            random(&mut nonce);
            let reply = crate::packet::Header { transmit: transmit_time(), ..time_reply(&header, receive_time, state) };
            let bytes = ntp::server_reply(&reply, &unique_id, &keys.s2c, &fresh, &nonce);
            NtsResponse::Reply { bytes, kind: NtsReplyKind::Time }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nts::aead::Key;
    use crate::nts::cookie::{MasterKey, COOKIE_NONCE_LEN};
    use crate::nts::ntp::{check_reply, ClientRequest, ReplyError, UNIQUE_ID_LEN};
    use crate::nts::{SessionKeys, KEY_LEN};
    use crate::packet::{Header, Mode, ReferenceId, Stratum};

    const STATE: ServerState = ServerState::primary(Stratum(1), -20, ReferenceId(*b"LOCL"), NtpTimestamp::ZERO);

    fn fill(bytes: &mut [u8]) {
        bytes.fill(0x5a);
    }

    #[test]
    fn authentic_requests_get_time_forged_ones_a_nak_that_the_client_reads() {
        let masters = MasterKeys::new(MasterKey { id: 1, key: Key([3; KEY_LEN]) });
        let session = SessionKeys { c2s: Key([1; KEY_LEN]), s2c: Key([2; KEY_LEN]) };
        let cookie = masters.make_cookie(&session, &[0; COOKIE_NONCE_LEN]);
        let header = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(42), ..Header::default() };
        let uid = [7; UNIQUE_ID_LEN];
        let request =
            ClientRequest { unique_id: &uid, cookie: &cookie, placeholders: 2, nonce: &[9; 16], c2s: &session.c2s }
                .encode(&header);
        let (receive, transmit) = (NtpTimestamp::from_bits(1 << 40), NtpTimestamp::from_bits(2 << 40));
        let answer = |request: &[u8], admission: Admission| {
            let request = NtsRequest::decode(request).unwrap();
            respond_nts(&request, receive, || transmit, &STATE, admission, &masters, &mut fill)
        };
        let NtsResponse::Reply { bytes, kind: NtsReplyKind::Time } = answer(&request, Admission::Serve) else {
            panic!("no time reply")
        };
        let reply = Packet::decode(&bytes).unwrap();
        assert_eq!(
            (reply.header.origin, reply.header.receive, reply.header.transmit),
            (header.transmit, receive, transmit)
        );
        assert_eq!(check_reply(&bytes, &reply, &uid, &session.s2c).unwrap().len(), 3);

        let wrong = ClientRequest {
            c2s: &Key([0; KEY_LEN]),
            unique_id: &uid,
            cookie: &cookie,
            placeholders: 0,
            nonce: &[9; 16],
        }
        .encode(&header);
        let NtsResponse::Reply { bytes, kind: NtsReplyKind::Nak } = answer(&wrong, Admission::Serve) else {
            panic!("no NAK")
        };
        let reply = Packet::decode(&bytes).unwrap();
        assert_eq!(check_reply(&bytes, &reply, &uid, &session.s2c), Err(ReplyError::Nak));

        let rate = answer(&request, Admission::Kiss(KissCode::Rate));
        assert!(matches!(rate, NtsResponse::Reply { kind: NtsReplyKind::Kiss, .. }));
        let dropped = answer(&request, Admission::Drop);
        assert_eq!(dropped, NtsResponse::Ignore(IgnoreReason::Denied));
        let plain = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(1), ..Header::default() }.encode();
        assert!(matches!(answer(&plain, Admission::Serve), NtsResponse::Ignore(IgnoreReason::Malformed(_))));
    }

    #[test]
    fn t3_is_asked_once_for_time_and_only_after_the_cookies_and_nonce_are_drawn() {
        let masters = MasterKeys::new(MasterKey { id: 1, key: Key([3; KEY_LEN]) });
        let session = SessionKeys { c2s: Key([1; KEY_LEN]), s2c: Key([2; KEY_LEN]) };
        let cookie = masters.make_cookie(&session, &[0; COOKIE_NONCE_LEN]);
        let header = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(42), ..Header::default() };
        let uid = [7; UNIQUE_ID_LEN];
        let request =
            ClientRequest { unique_id: &uid, cookie: &cookie, placeholders: 2, nonce: &[9; 16], c2s: &session.c2s }
                .encode(&header);
        let forged = ClientRequest {
            c2s: &Key([0; KEY_LEN]),
            ..ClientRequest { unique_id: &uid, cookie: &cookie, placeholders: 0, nonce: &[9; 16], c2s: &session.c2s }
        }
        .encode(&header);
        let request = NtsRequest::decode(&request).unwrap();
        let forged = NtsRequest::decode(&forged).unwrap();
        for (request, admission, asks) in [
            (&request, Admission::Serve, 1),
            (&forged, Admission::Serve, 0),
            (&request, Admission::Kiss(KissCode::Rate), 0),
            (&request, Admission::Drop, 0),
        ] {
            // Three cookies (one used, two placeholders) and a nonce: four draws before T3.
            let draws = std::cell::Cell::new(0);
            let mut random = |bytes: &mut [u8]| {
                draws.set(draws.get() + 1);
                bytes.fill(0x5a);
            };
            let asked = std::cell::Cell::new(0);
            let transmit = || {
                asked.set(asked.get() + 1);
                assert_eq!(draws.get(), 4, "T3 read before the cookies and the nonce were drawn");
                NtpTimestamp::from_bits(2 << 40)
            };
            let _ = respond_nts(
                request,
                NtpTimestamp::from_bits(1 << 40),
                transmit,
                &STATE,
                admission,
                &masters,
                &mut random,
            );
            assert_eq!(asked.get(), asks, "{admission:?}");
        }
    }
}
