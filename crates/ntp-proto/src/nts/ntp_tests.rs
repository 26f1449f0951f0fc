//! Tests of the NTS extension fields: a full request/reply cycle between
//! the two sides, tampering, expiry, replay and garbage.

use proptest::prelude::*;

use super::*;
use crate::nts::cookie::{MasterKey, COOKIE_LEN, COOKIE_NONCE_LEN};
use crate::nts::KEY_LEN;
use crate::packet::{Mode, ReferenceId, Stratum};
use crate::NtpTimestamp;

fn session() -> SessionKeys {
    SessionKeys { c2s: Key([1; KEY_LEN]), s2c: Key([2; KEY_LEN]) }
}

fn masters() -> MasterKeys {
    MasterKeys::new(MasterKey { id: 7, key: Key([3; KEY_LEN]) })
}

fn request(placeholders: usize, masters: &MasterKeys) -> Vec<u8> {
    let cookie = masters.make_cookie(&session(), &[4; COOKIE_NONCE_LEN]);
    let header = Header { mode: Mode::Client, transmit: NtpTimestamp::from_bits(99), ..Header::default() };
    ClientRequest {
        unique_id: &[5; UNIQUE_ID_LEN],
        cookie: &cookie,
        placeholders,
        nonce: &[6; NONCE_LEN],
        c2s: &session().c2s,
    }
    .encode(&header)
}

fn serve(bytes: &[u8], masters: &MasterKeys) -> Vec<u8> {
    let packet = Packet::decode(bytes).unwrap();
    assert!(has_nts_fields(&packet));
    let reply_header = Header { mode: Mode::Server, origin: packet.header.transmit, ..Header::default() };
    match check_request(bytes, &packet, masters, COOKIE_LEN) {
        ServerCheck::Authentic { unique_id, keys, cookies } => {
            let fresh: Vec<_> =
                (0..cookies).map(|i| masters.make_cookie(&keys, &[i as u8; COOKIE_NONCE_LEN])).collect();
            server_reply(&reply_header, &unique_id, &keys.s2c, &fresh, &[8; NONCE_LEN])
        }
        ServerCheck::Nak { unique_id } => {
            let kiss = Header { stratum: Stratum(0), reference_id: ReferenceId(*b"NTSN"), ..reply_header };
            nak(&kiss, &unique_id)
        }
        ServerCheck::Drop => Vec::new(),
    }
}

fn client_check(reply: &[u8]) -> Result<Vec<Vec<u8>>, ReplyError> {
    check_reply(reply, &Packet::decode(reply).unwrap(), &[5; UNIQUE_ID_LEN], &session().s2c)
}

#[test]
fn an_authenticated_cycle_returns_one_cookie_per_field_and_no_amplification() {
    let masters = masters();
    for placeholders in [0, 1, 3, 7] {
        let request = request(placeholders, &masters);
        let reply = serve(&request, &masters);
        assert_eq!(reply.len(), request.len(), "reply as long as the request");
        let cookies = client_check(&reply).unwrap();
        assert_eq!(cookies.len(), placeholders + 1);
        assert!(cookies.iter().all(|c| masters.open_cookie(c) == Some(session())));
    }
}

#[test]
fn tampering_with_the_request_gets_a_nak_or_a_drop_never_a_reply() {
    let masters = masters();
    let good = request(1, &masters);
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x10;
        let Ok(packet) = Packet::decode(&bad) else { continue };
        assert!(
            !matches!(check_request(&bad, &packet, &masters, COOKIE_LEN), ServerCheck::Authentic { .. }),
            "byte {i}"
        );
    }
}

#[test]
fn an_expired_cookie_gets_a_nak_the_client_recognises() {
    let mut masters = masters();
    let request = request(0, &masters);
    masters.rotate(MasterKey { id: 8, key: Key([9; KEY_LEN]) });
    masters.rotate(MasterKey { id: 9, key: Key([10; KEY_LEN]) });
    let reply = serve(&request, &masters);
    assert_eq!(client_check(&reply), Err(ReplyError::Nak));
}

#[test]
fn the_client_refuses_unauthenticated_forged_and_foreign_replies() {
    let masters = masters();
    let reply = serve(&request(0, &masters), &masters);
    // Strip the authenticator: unauthenticated.
    let mut packet = Packet::decode(&reply).unwrap();
    packet.trailer.extensions.pop();
    assert_eq!(client_check(&packet.encode()), Err(ReplyError::Unauthenticated));
    // A changed timestamp breaks the tag.
    let mut forged = reply.clone();
    forged[40] ^= 1;
    assert_eq!(client_check(&forged), Err(ReplyError::Unauthenticated));
    // A replayed reply to another request (another unique identifier).
    let other = check_reply(&reply, &Packet::decode(&reply).unwrap(), &[6; UNIQUE_ID_LEN], &session().s2c);
    assert_eq!(other, Err(ReplyError::WrongUniqueId));
    // A plain reply.
    let plain = Header { mode: Mode::Server, ..Header::default() }.encode();
    assert_eq!(client_check(&plain), Err(ReplyError::WrongUniqueId));
}

#[test]
fn requests_without_the_mandatory_fields_are_dropped() {
    let masters = masters();
    let mut packet = Packet::decode(&request(0, &masters)).unwrap();
    packet.trailer.extensions.remove(1); // the cookie
    let bytes = packet.encode();
    assert!(matches!(check_request(&bytes, &packet, &masters, COOKIE_LEN), ServerCheck::Drop));
    let plain = Header { mode: Mode::Client, ..Header::default() }.encode();
    let packet = Packet::decode(&plain).unwrap();
    assert!(!has_nts_fields(&packet));
    assert!(matches!(check_request(&plain, &packet, &masters, COOKIE_LEN), ServerCheck::Drop));
}

proptest! {
    #[test]
    fn checks_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), flip in 0usize..400) {
        let masters = masters();
        let mut bytes = request(1, &masters);
        bytes.truncate(48);
        bytes.extend_from_slice(&tail);
        if let Ok(packet) = Packet::decode(&bytes) {
            let _ = check_request(&bytes, &packet, &masters, COOKIE_LEN);
            let _ = check_reply(&bytes, &packet, &[5; UNIQUE_ID_LEN], &session().s2c);
        }
        let mut good = request(2, &masters);
        let at = flip % good.len();
        good[at] = good[at].wrapping_add(tail.first().copied().unwrap_or(1));
        if let Ok(packet) = Packet::decode(&good) {
            let _ = check_request(&good, &packet, &masters, COOKIE_LEN);
        }
    }
}
