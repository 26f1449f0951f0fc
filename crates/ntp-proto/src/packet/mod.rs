//! The NTP packet on the wire: decode checks the length once and returns a
//! typed error; encode cannot fail and gives back the bytes decode read.

mod extension;
mod fields;
mod header;

use thiserror::Error;

pub(crate) use extension::decode_field;
pub use extension::{ExtensionField, Mac, Trailer};
pub use fields::{KissCode, LeapIndicator, Mode, ReferenceId, ReferenceIdMeaning, Stratum, Version, NTP_PORT};
pub use header::{write_transmit, Header, HEADER_LEN};

/// Why a datagram is not an NTP packet this crate can read.
///
/// These are wire-level faults only. What a well-formed reply *means* (a
/// kiss code, a mismatched origin, an unsynchronized server) is judged
/// elsewhere, see [`crate::exchange::ReplyError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer than the 48 bytes of the fixed header.
    #[error("packet too short: {len} bytes, the NTP header needs 48")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// A version other than 3 or 4.
    #[error("unsupported NTP version {0} (only 3 and 4 are spoken)")]
    UnsupportedVersion(u8),
    /// An extension field that does not fit the packet.
    #[error("malformed extension field at byte {offset}: {reason}")]
    MalformedExtension {
        /// Byte offset of the field in the packet.
        offset: usize,
        /// What was wrong with it.
        reason: &'static str,
    },
}

/// A whole NTP packet: the header, then extension fields and a MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The fixed 48-byte header.
    pub header: Header,
    /// Extension fields and MAC after the header (empty for plain packets,
    /// and then it does not allocate).
    pub trailer: Trailer,
}

impl Packet {
    /// A packet with only a header.
    #[must_use]
    pub fn new(header: Header) -> Self {
        Self { header, trailer: Trailer::default() }
    }

    /// Decodes a datagram. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header = Header::decode(bytes)?;
        let trailer = Trailer::decode(bytes.get(HEADER_LEN..).unwrap_or_default(), HEADER_LEN)?;
        Ok(Self { header, trailer })
    }

    /// Encodes to the wire form. Cannot fail.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(&self.header.encode());
        self.trailer.encode_into(&mut out);
        out
    }

    /// Length of the wire form.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.trailer.wire_len()
    }
}

#[cfg(test)]
mod tests;
