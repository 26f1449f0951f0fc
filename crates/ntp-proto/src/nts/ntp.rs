//! The NTS extension fields of NTP packets (RFC 8915 §5): unique
//! identifier, cookie, cookie placeholder, and the authenticator that seals
//! everything before it (and the new cookies inside it). Both sides: the
//! client's request and its check of the reply, the server's check of a
//! request and its reply or NTS NAK.

use thiserror::Error;

use super::aead::{Key, TAG_LEN};
use super::cookie::MasterKeys;
use super::SessionKeys;
use crate::packet::{decode_field, ExtensionField, Header, KissCode, Packet, HEADER_LEN};

/// Extension field types (RFC 8915 §5.7, IANA).
pub mod field_type {
    /// Unique Identifier.
    pub const UNIQUE_IDENTIFIER: u16 = 0x0104;
    /// NTS Cookie.
    pub const COOKIE: u16 = 0x0204;
    /// NTS Cookie Placeholder.
    pub const COOKIE_PLACEHOLDER: u16 = 0x0304;
    /// NTS Authenticator and Encrypted Extension Fields.
    pub const AUTHENTICATOR: u16 = 0x0404;
}

/// Length of the unique identifiers this implementation sends (§5.3: at least 32).
pub const UNIQUE_ID_LEN: usize = 32;
/// Length of the AEAD nonces this implementation sends.
pub const NONCE_LEN: usize = 16;
/// The most cookies a server hands back in one reply.
pub const MAX_COOKIES_PER_REPLY: usize = 8;

/// Whether a packet carries NTS extension fields at all (the server's
/// cheap test that sends a request down the NTS path).
#[must_use]
pub fn has_nts_fields(packet: &Packet) -> bool {
    packet.trailer.extensions.iter().any(|f| f.field_type == field_type::UNIQUE_IDENTIFIER)
}

fn field(field_type: u16, value: &[u8]) -> ExtensionField {
    let mut value = value.to_vec();
    value.resize(value.len().next_multiple_of(4), 0);
    ExtensionField { field_type, value }
}

/// The authenticator field's value (§5.6): nonce and ciphertext lengths,
/// then each padded to a multiple of 4.
fn authenticator(nonce: &[u8], ciphertext: &[u8]) -> ExtensionField {
    let mut value = Vec::with_capacity(4 + nonce.len() + ciphertext.len() + 6);
    value.extend_from_slice(&u16::try_from(nonce.len()).unwrap_or(u16::MAX).to_be_bytes());
    value.extend_from_slice(&u16::try_from(ciphertext.len()).unwrap_or(u16::MAX).to_be_bytes());
    value.extend_from_slice(nonce);
    value.resize(value.len().next_multiple_of(4), 0);
    value.extend_from_slice(ciphertext);
    value.resize(value.len().next_multiple_of(4), 0);
    ExtensionField { field_type: field_type::AUTHENTICATOR, value }
}

/// Reads an authenticator's value into (nonce, ciphertext).
fn read_authenticator(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let nonce_len = usize::from(u16::from_be_bytes([*value.first()?, *value.get(1)?]));
    let ciphertext_len = usize::from(u16::from_be_bytes([*value.get(2)?, *value.get(3)?]));
    let nonce = value.get(4..4 + nonce_len)?;
    let start = 4 + nonce_len.next_multiple_of(4);
    let ciphertext = value.get(start..start + ciphertext_len)?;
    Some((nonce, ciphertext))
}

/// Walks extension fields packed in a plaintext (no MAC guessing here),
/// with the packet decoder's own field rules.
fn fields_in(mut bytes: &[u8]) -> Option<Vec<ExtensionField>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let (field, len) = decode_field(bytes, 0).ok()?;
        fields.push(field);
        bytes = &bytes[len..];
    }
    Some(fields)
}

/// Seals: the bytes so far are the associated data, the authenticator is appended.
fn seal_onto(packet: &mut Vec<u8>, key: &Key, nonce: &[u8], plaintext: &[u8]) {
    let ciphertext = key.seal(nonce, packet, plaintext);
    let mut tail = Packet::new(Header::default());
    tail.trailer.extensions.push(authenticator(nonce, &ciphertext));
    tail.trailer.encode_into(packet);
}

/// What a client needs to send one NTS request.
#[derive(Debug)]
pub struct ClientRequest<'a> {
    /// Fresh random bytes, echoed by the server.
    pub unique_id: &'a [u8; UNIQUE_ID_LEN],
    /// One cookie from the NTS-KE (or an earlier reply), used once.
    pub cookie: &'a [u8],
    /// How many more cookies to ask for (one comes back anyway).
    pub placeholders: usize,
    /// A fresh random nonce.
    pub nonce: &'a [u8; NONCE_LEN],
    /// The client-to-server key.
    pub c2s: &'a Key,
}

impl ClientRequest<'_> {
    /// The whole datagram: header, unique identifier, cookie, placeholders, authenticator.
    #[must_use]
    pub fn encode(&self, header: &Header) -> Vec<u8> {
        let mut packet = Packet::new(*header);
        let fields = &mut packet.trailer.extensions;
        fields.push(field(field_type::UNIQUE_IDENTIFIER, self.unique_id));
        fields.push(field(field_type::COOKIE, self.cookie));
        for _ in 0..self.placeholders {
            fields.push(field(field_type::COOKIE_PLACEHOLDER, &vec![0; self.cookie.len()]));
        }
        let mut bytes = packet.encode();
        seal_onto(&mut bytes, self.c2s, self.nonce, &[]);
        bytes
    }
}

/// Why a reply to an NTS request is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// The server could not authenticate our request (an NTS NAK carrying
    /// our unique identifier): the cookies are stale, redo NTS-KE.
    #[error("NTS NAK: the server could not authenticate the request")]
    Nak,
    /// No unique identifier, or not ours: not the reply to this request.
    #[error("reply does not carry this request's unique identifier")]
    WrongUniqueId,
    /// No authenticator, or one that does not verify.
    #[error("reply is not authenticated")]
    Unauthenticated,
}

/// Checks a reply to an NTS request; on success, the new cookies it
/// carried. `bytes` must already decode as `packet`.
pub fn check_reply(
    bytes: &[u8],
    packet: &Packet,
    unique_id: &[u8; UNIQUE_ID_LEN],
    s2c: &Key,
) -> Result<Vec<Vec<u8>>, ReplyError> {
    let mut offset = HEADER_LEN;
    let mut id_seen = false;
    for ef in &packet.trailer.extensions {
        match ef.field_type {
            field_type::UNIQUE_IDENTIFIER => {
                if ef.value != unique_id[..] {
                    return Err(ReplyError::WrongUniqueId);
                }
                id_seen = true;
            }
            field_type::AUTHENTICATOR if id_seen => {
                let (nonce, ciphertext) = read_authenticator(&ef.value).ok_or(ReplyError::Unauthenticated)?;
                let associated = bytes.get(..offset).ok_or(ReplyError::Unauthenticated)?;
                let plaintext = s2c.open(nonce, associated, ciphertext).ok_or(ReplyError::Unauthenticated)?;
                let inner = fields_in(&plaintext).ok_or(ReplyError::Unauthenticated)?;
                return Ok(inner.into_iter().filter(|f| f.field_type == field_type::COOKIE).map(|f| f.value).collect());
            }
            _ => {}
        }
        offset += ef.wire_len();
    }
    if !id_seen {
        return Err(ReplyError::WrongUniqueId);
    }
    if packet.header.stratum.0 == 0 && KissCode::from_bytes(packet.header.reference_id.0) == KissCode::NtsNak {
        return Err(ReplyError::Nak);
    }
    Err(ReplyError::Unauthenticated)
}

/// The server's reading of an NTS request (§5.7).
#[derive(Debug)]
pub enum ServerCheck {
    /// Authenticated: answer with [`server_reply`].
    Authentic {
        /// The unique identifier to echo.
        unique_id: Vec<u8>,
        /// The session keys from the cookie.
        keys: SessionKeys,
        /// How many cookies to send back (1 + placeholders, at most
        /// [`MAX_COOKIES_PER_REPLY`], and no more than fit in the request's size).
        cookies: usize,
    },
    /// The cookie did not open or the authenticator did not verify: answer
    /// with an NTS NAK carrying this unique identifier.
    Nak {
        /// The unique identifier to echo.
        unique_id: Vec<u8>,
    },
    /// Not a well-formed NTS request (no unique identifier, no or two
    /// cookies, no authenticator): drop it.
    Drop,
}

/// Checks the NTS fields of a request (`bytes`, decoded as `packet`).
#[must_use]
pub fn check_request(bytes: &[u8], packet: &Packet, masters: &MasterKeys, cookie_len: usize) -> ServerCheck {
    let mut unique_id = None;
    let mut cookie = None;
    let mut placeholders = 0usize;
    let mut offset = HEADER_LEN;
    for ef in &packet.trailer.extensions {
        match ef.field_type {
            field_type::UNIQUE_IDENTIFIER if unique_id.is_none() && ef.value.len() >= UNIQUE_ID_LEN => {
                unique_id = Some(&ef.value);
            }
            field_type::COOKIE if cookie.is_none() => cookie = Some(&ef.value),
            field_type::COOKIE_PLACEHOLDER => placeholders += 1,
            field_type::AUTHENTICATOR => {
                let (Some(unique_id), Some(cookie)) = (unique_id, cookie) else { return ServerCheck::Drop };
                let nak = || ServerCheck::Nak { unique_id: unique_id.clone() };
                let Some(keys) = masters.open_cookie(cookie) else { return nak() };
                let Some((nonce, ciphertext)) = read_authenticator(&ef.value) else { return ServerCheck::Drop };
                if nonce.len() < NONCE_LEN {
                    return ServerCheck::Drop;
                }
                let Some(associated) = bytes.get(..offset) else { return ServerCheck::Drop };
                if keys.c2s.open(nonce, associated, ciphertext).is_none() {
                    return nak();
                }
                // The reply is the header, the unique identifier and an
                // authenticator holding the cookies; keep it within the
                // request's length (§5.7, no amplification).
                let mut cookies = (1 + placeholders).min(MAX_COOKIES_PER_REPLY);
                while cookies > 1 && reply_len(unique_id.len(), cookies, cookie_len) > bytes.len() {
                    cookies -= 1;
                }
                return ServerCheck::Authentic { unique_id: unique_id.clone(), keys, cookies };
            }
            _ => {}
        }
        offset += ef.wire_len();
    }
    ServerCheck::Drop
}

fn reply_len(unique_id_len: usize, cookies: usize, cookie_len: usize) -> usize {
    let plaintext = cookies * (4 + cookie_len);
    HEADER_LEN + 4 + unique_id_len + 4 + 4 + NONCE_LEN + plaintext + TAG_LEN
}

/// The server's authenticated reply: `header` (transmit time already set:
/// it is authenticated), the unique identifier, and `cookies` sealed under
/// the S2C key.
#[must_use]
pub fn server_reply(header: &Header, unique_id: &[u8], s2c: &Key, cookies: &[Vec<u8>], nonce: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new(*header);
    packet.trailer.extensions.push(field(field_type::UNIQUE_IDENTIFIER, unique_id));
    let mut bytes = packet.encode();
    let mut plaintext = Packet::new(Header::default());
    plaintext.trailer.extensions.extend(cookies.iter().map(|c| field(field_type::COOKIE, c)));
    let mut inner = Vec::new();
    plaintext.trailer.encode_into(&mut inner);
    seal_onto(&mut bytes, s2c, nonce, &inner);
    bytes
}

/// An NTS NAK (§5.7): a kiss-o'-death NTSN header with the unique identifier.
#[must_use]
pub fn nak(kiss_header: &Header, unique_id: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new(*kiss_header);
    packet.trailer.extensions.push(field(field_type::UNIQUE_IDENTIFIER, unique_id));
    packet.encode()
}

#[cfg(test)]
#[path = "ntp_tests.rs"]
mod tests;
