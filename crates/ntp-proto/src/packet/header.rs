//! The fixed 48-byte NTP header (RFC 5905 §7.3, figure 8): field offsets as
//! named ranges, a typed representation, and its decode and encode.

use core::ops::Range;

use super::fields::{LeapIndicator, Mode, ReferenceId, Stratum, Version};
use super::DecodeError;
use crate::time::{NtpShort, NtpTimestamp};

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 48;

// Byte offsets of the fields within the header.
const FLAGS: usize = 0;
const STRATUM: usize = 1;
const POLL: usize = 2;
const PRECISION: usize = 3;
const ROOT_DELAY: Range<usize> = 4..8;
const ROOT_DISPERSION: Range<usize> = 8..12;
const REFERENCE_ID: Range<usize> = 12..16;
const REFERENCE: Range<usize> = 16..24;
const ORIGIN: Range<usize> = 24..32;
const RECEIVE: Range<usize> = 32..40;
/// Where the transmit timestamp sits, so a server can write it into an
/// already-encoded reply at the last moment before sending.
pub const TRANSMIT: Range<usize> = 40..48;

/// Every field of the 48-byte header, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Leap indicator.
    pub leap: LeapIndicator,
    /// Protocol version (3 or 4).
    pub version: Version,
    /// Association mode.
    pub mode: Mode,
    /// Stratum.
    pub stratum: Stratum,
    /// Poll exponent: log2 of the poll interval in seconds.
    pub poll: i8,
    /// Precision exponent: log2 of the clock's precision in seconds.
    pub precision: i8,
    /// Round-trip delay to the primary reference.
    pub root_delay: NtpShort,
    /// Dispersion (error bound) relative to the primary reference.
    pub root_dispersion: NtpShort,
    /// Reference ID.
    pub reference_id: ReferenceId,
    /// When the sender's clock was last set or corrected.
    pub reference: NtpTimestamp,
    /// T1: the client's transmit time, as echoed by the server.
    pub origin: NtpTimestamp,
    /// T2: when the request arrived at the server.
    pub receive: NtpTimestamp,
    /// T3: when the packet left its sender.
    pub transmit: NtpTimestamp,
}

impl Default for Header {
    fn default() -> Self {
        Self {
            leap: LeapIndicator::NoWarning,
            version: Version::V4,
            mode: Mode::Client,
            stratum: Stratum::UNSPECIFIED,
            poll: 0,
            precision: 0,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id: ReferenceId::default(),
            reference: NtpTimestamp::ZERO,
            origin: NtpTimestamp::ZERO,
            receive: NtpTimestamp::ZERO,
            transmit: NtpTimestamp::ZERO,
        }
    }
}

impl Header {
    /// Decodes the first 48 bytes of `bytes`; bytes after them are ignored
    /// here (see [`super::Packet::decode`] for extension fields).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::TooShort { len: bytes.len() });
        };
        let flags = header[FLAGS];
        let version_bits = (flags >> 3) & 0b111;
        let version = Version::from_bits(version_bits).ok_or(DecodeError::UnsupportedVersion(version_bits))?;
        Ok(Self {
            leap: LeapIndicator::from_bits(flags >> 6),
            version,
            mode: Mode::from_bits(flags),
            stratum: Stratum(header[STRATUM]),
            poll: header[POLL] as i8,
            precision: header[PRECISION] as i8,
            root_delay: NtpShort::from_bits(read_u32(header, ROOT_DELAY)),
            root_dispersion: NtpShort::from_bits(read_u32(header, ROOT_DISPERSION)),
            reference_id: ReferenceId(read_array(header, REFERENCE_ID)),
            reference: read_timestamp(header, REFERENCE),
            origin: read_timestamp(header, ORIGIN),
            receive: read_timestamp(header, RECEIVE),
            transmit: read_timestamp(header, TRANSMIT),
        })
    }

    /// Encodes into exactly 48 bytes. Cannot fail.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[FLAGS] = (self.leap.to_bits() << 6) | (self.version.to_bits() << 3) | self.mode.to_bits();
        out[STRATUM] = self.stratum.0;
        out[POLL] = self.poll as u8;
        out[PRECISION] = self.precision as u8;
        out[ROOT_DELAY].copy_from_slice(&self.root_delay.to_bits().to_be_bytes());
        out[ROOT_DISPERSION].copy_from_slice(&self.root_dispersion.to_bits().to_be_bytes());
        out[REFERENCE_ID].copy_from_slice(&self.reference_id.0);
        out[REFERENCE].copy_from_slice(&self.reference.to_bits().to_be_bytes());
        out[ORIGIN].copy_from_slice(&self.origin.to_bits().to_be_bytes());
        out[RECEIVE].copy_from_slice(&self.receive.to_bits().to_be_bytes());
        out[TRANSMIT].copy_from_slice(&self.transmit.to_bits().to_be_bytes());
        out
    }
}

/// Writes a transmit timestamp into an encoded packet (at least 48 bytes),
/// for stamping T3 as late as possible. Shorter buffers are left untouched.
pub fn write_transmit(packet: &mut [u8], transmit: NtpTimestamp) {
    if let Some(field) = packet.get_mut(TRANSMIT) {
        field.copy_from_slice(&transmit.to_bits().to_be_bytes());
    }
}

fn read_array<const N: usize>(header: &[u8; HEADER_LEN], range: Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[range]);
    out
}

fn read_u32(header: &[u8; HEADER_LEN], range: Range<usize>) -> u32 {
    u32::from_be_bytes(read_array(header, range))
}

fn read_timestamp(header: &[u8; HEADER_LEN], range: Range<usize>) -> NtpTimestamp {
    NtpTimestamp::from_bits(u64::from_be_bytes(read_array(header, range)))
}
