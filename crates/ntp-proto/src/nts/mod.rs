//! Network Time Security (RFC 8915), the protocol without the I/O: NTS-KE
//! records, the NTS extension fields of NTP packets, the AEAD that protects
//! them and the server's cookies. Randomness (nonces, unique identifiers,
//! keys) is passed in, so everything here is deterministic.
//!
//! # Layout
//! - [`ke`]: NTS-KE records (§4): codec, the client's request, reading a
//!   response, the server's response.
//! - [`aead`]: AEAD_AES_SIV_CMAC_256 seal and open with one direction's key.
//! - [`cookie`]: the server's cookies, the session keys sealed under a
//!   rotating master key.
//! - [`ntp`]: the NTS extension fields (§5): building and checking an
//!   authenticated request and reply, and the NTS NAK.
//! - [`respond`]: the server's decision for a request carrying NTS fields.

pub mod aead;
pub mod cookie;
pub mod ke;
pub mod ntp;
pub mod respond;

/// NTS-KE's ALPN protocol name.
pub const ALPN: &[u8] = b"ntske/1";
/// The TLS exporter label that derives the session keys (§5.1).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-network-time-security";
/// The default NTS-KE TCP port.
pub const DEFAULT_KE_PORT: u16 = 4460;
/// Next Protocol ID of NTPv4.
pub const NEXT_PROTOCOL_NTPV4: u16 = 0;
/// AEAD algorithm ID of AEAD_AES_SIV_CMAC_256 (RFC 5297), the one required.
pub const AEAD_AES_SIV_CMAC_256: u16 = 15;

pub use aead::{Key, KEY_LEN};

/// The TLS exporter context of one direction's key (§5.1): the protocol ID,
/// the AEAD algorithm ID, then 0 for client-to-server, 1 for server-to-client.
#[must_use]
pub fn exporter_context(server_to_client: bool) -> [u8; 5] {
    let [p0, p1] = NEXT_PROTOCOL_NTPV4.to_be_bytes();
    let [a0, a1] = AEAD_AES_SIV_CMAC_256.to_be_bytes();
    [p0, p1, a0, a1, u8::from(server_to_client)]
}

/// The two keys of a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Client to server.
    pub c2s: Key,
    /// Server to client.
    pub s2c: Key,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log.
        f.write_str("SessionKeys(..)")
    }
}
