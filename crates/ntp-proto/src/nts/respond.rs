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
    /// Send these bytes as they are (unauthenticated: no time in them).
    /// Never longer than the request.
    Reply {
        /// The whole reply.
        bytes: Vec<u8>,
        /// What kind of reply it is.
        kind: NtsReplyKind,
    },
    /// Authenticated time and fresh cookies, made but for the seal, which
    /// covers T3: [`Unsealed::seal`] it with the transmit time read just
    /// before, when everything else of the batch is done.
    Time(Unsealed),
}

/// What an unauthenticated NTS reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtsReplyKind {
    /// The access policy's kiss-o'-death (with the unique identifier).
    Kiss,
    /// An NTS NAK: the cookie did not open or the request did not verify.
    Nak,
}

/// An authenticated reply made but for its transmit time and its seal:
/// the costly work (the request's cookie opened, the fresh cookies sealed,
/// the nonce drawn) is done, and what is left between reading T3 and the
/// send is the one AES-SIV seal of the reply itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Unsealed {
    header: crate::packet::Header,
    unique_id: Vec<u8>,
    s2c: super::aead::Key,
    cookies: Vec<Vec<u8>>,
    nonce: [u8; NONCE_LEN],
}

impl Unsealed {
    /// The reply, with `transmit` as its T3, sealed under the session's
    /// S2C key. Never longer than the request.
    #[must_use]
    pub fn seal(self, transmit: NtpTimestamp) -> Vec<u8> {
        let header = crate::packet::Header { transmit, ..self.header };
        ntp::server_reply(&header, &self.unique_id, &self.s2c, &self.cookies, &self.nonce)
    }
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed").field("header", &self.header).field("cookies", &self.cookies.len()).finish()
    }
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
/// `receive_time`: an authenticated reply comes back [`Unsealed`], for the
/// shell to seal with T3 once the rest of its work is done. `random`
/// fills nonces (the shell passes a CSPRNG).
pub fn respond_nts(
    request: &NtsRequest<'_>,
    receive_time: NtpTimestamp,
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
            let cookies = masters.make_cookies(&keys, cookies, &mut *random);
            let mut nonce = [0; NONCE_LEN];
            random(&mut nonce);
            let header = time_reply(&header, receive_time, state);
            NtsResponse::Time(Unsealed { header, unique_id, s2c: keys.s2c, cookies, nonce })
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
            respond_nts(&request, receive, &STATE, admission, &masters, &mut fill)
        };
        let NtsResponse::Time(unsealed) = answer(&request, Admission::Serve) else { panic!("no time reply") };
        let bytes = unsealed.seal(transmit);
        assert!(bytes.len() <= request.len(), "a reply is never longer than its request");
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
}
