//! The small header fields of RFC 5905 §7.3 as types: leap indicator,
//! version, mode, stratum, reference ID and kiss-o'-death codes.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use md5::{Digest, Md5};

/// Leap indicator (2 bits): a warning of an impending leap second, or that
/// the sender's clock is unsynchronized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LeapIndicator {
    /// No warning.
    #[default]
    NoWarning,
    /// The last minute of the day has 61 seconds.
    Insert,
    /// The last minute of the day has 59 seconds.
    Delete,
    /// Clock unsynchronized (alarm condition).
    Unsynchronized,
}

impl LeapIndicator {
    /// How reports name it: "none", "insert", "delete" or "unsynchronized".
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoWarning => "none",
            Self::Insert => "insert",
            Self::Delete => "delete",
            Self::Unsynchronized => "unsynchronized",
        }
    }

    /// From the 2-bit wire value (upper bits ignored): a total function.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::NoWarning,
            1 => Self::Insert,
            2 => Self::Delete,
            _ => Self::Unsynchronized,
        }
    }

    /// The 2-bit wire value.
    #[must_use]
    pub const fn to_bits(self) -> u8 {
        self as u8
    }
}

/// Protocol version. Only versions 3 (RFC 1305) and 4 (RFC 5905) are spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// NTPv3.
    V3 = 3,
    /// NTPv4.
    #[default]
    V4 = 4,
}

impl Version {
    /// From the 3-bit wire value; `None` for versions this crate does not speak.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            _ => None,
        }
    }

    /// The 3-bit wire value.
    #[must_use]
    pub const fn to_bits(self) -> u8 {
        self as u8
    }
}

/// Association mode (3 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 0: reserved.
    Reserved,
    /// 1: symmetric active.
    SymmetricActive,
    /// 2: symmetric passive.
    SymmetricPassive,
    /// 3: client.
    Client,
    /// 4: server.
    Server,
    /// 5: broadcast.
    Broadcast,
    /// 6: NTP control message (ntpq).
    Control,
    /// 7: reserved for private use (ntpdc).
    Private,
}

impl Mode {
    /// From the 3-bit wire value (upper bits ignored): a total function.
    #[must_use]
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b111 {
            0 => Self::Reserved,
            1 => Self::SymmetricActive,
            2 => Self::SymmetricPassive,
            3 => Self::Client,
            4 => Self::Server,
            5 => Self::Broadcast,
            6 => Self::Control,
            _ => Self::Private,
        }
    }

    /// The 3-bit wire value.
    #[must_use]
    pub const fn to_bits(self) -> u8 {
        self as u8
    }
}

/// Stratum (8 bits): 0 unspecified or kiss-o'-death, 1 primary, 2–15
/// secondary, 16 unsynchronized, 17–255 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stratum(pub u8);

impl Stratum {
    /// Stratum 0: a kiss-o'-death or an unspecified stratum.
    pub const UNSPECIFIED: Self = Self(0);
    /// Stratum 1: a primary server with a reference clock.
    pub const PRIMARY: Self = Self(1);
    /// Stratum 16: unsynchronized (MAXSTRAT).
    pub const UNSYNCHRONIZED: Self = Self(16);

    /// True for stratum 0, where the reference ID may hold a kiss code.
    #[must_use]
    pub const fn is_unspecified(self) -> bool {
        self.0 == 0
    }

    /// True for 1..=15, a stratum a client may synchronize to.
    #[must_use]
    pub const fn is_synchronized(self) -> bool {
        self.0 >= 1 && self.0 < 16
    }
}

/// A kiss-o'-death code (RFC 5905 §7.4), carried in the reference ID of a
/// stratum 0 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KissCode {
    /// RATE: the client polls too often; it must reduce its rate.
    Rate,
    /// DENY: access denied by the server; stop.
    Deny,
    /// RSTR: access restricted by the server; stop.
    Restrict,
    /// NTSN: NTS negative acknowledgement (RFC 8915 §5.7).
    NtsNak,
    /// Any other code, kept as its four bytes.
    Other([u8; 4]),
}

impl KissCode {
    /// From the four reference-ID bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        match &bytes {
            b"RATE" => Self::Rate,
            b"DENY" => Self::Deny,
            b"RSTR" => Self::Restrict,
            b"NTSN" => Self::NtsNak,
            _ => Self::Other(bytes),
        }
    }

    /// The four bytes for the reference ID.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 4] {
        match self {
            Self::Rate => *b"RATE",
            Self::Deny => *b"DENY",
            Self::Restrict => *b"RSTR",
            Self::NtsNak => *b"NTSN",
            Self::Other(bytes) => bytes,
        }
    }

    /// True for codes after which a client must stop using the server.
    #[must_use]
    pub const fn is_stop(self) -> bool {
        matches!(self, Self::Deny | Self::Restrict)
    }
}

impl fmt::Display for KissCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ascii_code(self.to_bytes()))
    }
}

/// The NTP port (RFC 5905 §7.2).
pub const NTP_PORT: u16 = 123;

/// The 32-bit reference ID (RFC 5905 §7.3): what the sender is synchronized
/// to. Its meaning depends on the stratum, see [`ReferenceId::interpret`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReferenceId(pub [u8; 4]);

/// What a reference ID says, once read in the light of the stratum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceIdMeaning {
    /// Stratum 0: a kiss-o'-death code.
    Kiss(KissCode),
    /// Stratum 1: a four-character ASCII code of the reference clock (GPS, LOCL, ...).
    Source(String),
    /// Stratum 2+: the IPv4 address of the upstream, or the first four bytes
    /// of the MD5 hash of its IPv6 address (indistinguishable on the wire).
    Address(Ipv4Addr),
}

impl ReferenceId {
    /// From a text code of up to four ASCII characters (`GPS`, `LOCL`),
    /// padded with zero bytes; `None` if it is longer or not ASCII.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        if code.len() > 4 || !code.is_ascii() || code.is_empty() {
            return None;
        }
        let mut bytes = [0u8; 4];
        bytes[..code.len()].copy_from_slice(code.as_bytes());
        Some(Self(bytes))
    }

    /// The reference ID of a server synchronized to `upstream`: its IPv4
    /// address, or for IPv6 the first four octets of the MD5 hash of the
    /// address (RFC 5905 §7.3).
    #[must_use]
    pub fn from_upstream(upstream: IpAddr) -> Self {
        match upstream {
            IpAddr::V4(v4) => Self(v4.octets()),
            IpAddr::V6(v6) => Self::from_ipv6(v6),
        }
    }

    /// The reference ID of a server synchronized to the upstream at
    /// `upstream` (address and port), when nothing says where its polls
    /// leave from: [`of_upstream_from`](Self::of_upstream_from) with no
    /// source address.
    #[must_use]
    pub fn of_upstream(upstream: SocketAddr) -> Self {
        Self::of_upstream_from(upstream, None)
    }

    /// The reference ID of a server synchronized to the upstream at
    /// `upstream`, which it polls from the local address `source`. On the
    /// NTP port, 123, of another host it is
    /// [`from_upstream`](Self::from_upstream) of the address, as RFC 5905
    /// says. Elsewhere the address alone does not name the server: a chain
    /// of daemons on 127.0.0.1 with one port each would all share one
    /// reference ID, and each would take its upstream's for its own; and an
    /// upstream on this host (a loopback address, or one we reach from
    /// that very address) has our address too, whatever runs on its port
    /// 123. Then it is [`of_address_and_port`](Self::of_address_and_port).
    #[must_use]
    pub fn of_upstream_from(upstream: SocketAddr, source: Option<IpAddr>) -> Self {
        let on_this_host = upstream.ip().is_loopback() || source == Some(upstream.ip());
        if upstream.port() == NTP_PORT && !on_this_host {
            return Self::from_upstream(upstream.ip());
        }
        Self::of_address_and_port(upstream)
    }

    /// The first four octets of the MD5 of the address's octets (4 or 16)
    /// followed by the port in network byte order, whatever the port: the
    /// same kind of value RFC 5905 uses for IPv6 upstreams, as opaque to
    /// other peers; also one of the values that mean "us" in loop detection.
    #[must_use]
    pub fn of_address_and_port(upstream: SocketAddr) -> Self {
        let mut hasher = Md5::new();
        match upstream.ip() {
            IpAddr::V4(v4) => hasher.update(v4.octets()),
            IpAddr::V6(v6) => hasher.update(v6.octets()),
        }
        hasher.update(upstream.port().to_be_bytes());
        Self::from_digest(&hasher.finalize())
    }

    fn from_ipv6(address: Ipv6Addr) -> Self {
        Self::from_digest(&Md5::digest(address.octets()))
    }

    fn from_digest(digest: &[u8]) -> Self {
        Self([digest[0], digest[1], digest[2], digest[3]])
    }

    /// A kiss code as a reference ID.
    #[must_use]
    pub const fn from_kiss(code: KissCode) -> Self {
        Self(code.to_bytes())
    }

    /// The value as the RFC defines it for the given stratum.
    #[must_use]
    pub fn interpret(self, stratum: Stratum) -> ReferenceIdMeaning {
        match stratum.0 {
            0 => ReferenceIdMeaning::Kiss(KissCode::from_bytes(self.0)),
            // A primary whose code is not text (chrony's local reference
            // sends 127.127.1.1) is shown as the address it spells, as ntpq does.
            1 if !is_text_code(self.0) => ReferenceIdMeaning::Address(Ipv4Addr::from(self.0)),
            1 => ReferenceIdMeaning::Source(ascii_code(self.0)),
            _ => ReferenceIdMeaning::Address(Ipv4Addr::from(self.0)),
        }
    }

    /// Human-readable text for the given stratum: a code or a dotted address.
    #[must_use]
    pub fn display(self, stratum: Stratum) -> String {
        match self.interpret(stratum) {
            ReferenceIdMeaning::Kiss(code) => code.to_string(),
            ReferenceIdMeaning::Source(code) => code,
            ReferenceIdMeaning::Address(address) => address.to_string(),
        }
    }
}

impl fmt::Debug for ReferenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReferenceId({:02x}{:02x}{:02x}{:02x})", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Whether a stratum-1 reference ID is a text code: printable ASCII, then
/// only NULs.
fn is_text_code(bytes: [u8; 4]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].iter().all(|&b| b.is_ascii_graphic() || b == b' ')
}

/// A four-byte code as text: trailing NULs dropped, anything that is not
/// printable ASCII shown as `.` so nothing hostile reaches a terminal.
fn ascii_code(bytes: [u8; 4]) -> String {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_and_three_bit_fields_are_total() {
        for bits in 0..=255u8 {
            assert_eq!(LeapIndicator::from_bits(bits).to_bits(), bits & 3);
            assert_eq!(Mode::from_bits(bits).to_bits(), bits & 7);
        }
        assert_eq!(Version::from_bits(2), None);
        assert_eq!(Version::from_bits(4), Some(Version::V4));
    }

    #[test]
    fn reference_id_meaning_follows_the_stratum() {
        let rate = ReferenceId(*b"RATE");
        assert_eq!(rate.interpret(Stratum(0)), ReferenceIdMeaning::Kiss(KissCode::Rate));
        assert_eq!(ReferenceId::from_code("GPS").map(|r| r.display(Stratum(1))).as_deref(), Some("GPS"));
        assert_eq!(ReferenceId([127, 127, 1, 1]).display(Stratum(2)), "127.127.1.1");
        assert_eq!(ReferenceId(*b"\x1bX\0\0").display(Stratum(1)), "27.88.0.0");
        assert_eq!(ReferenceId([0x7f, 0x7f, 1, 1]).display(Stratum(1)), "127.127.1.1");
        assert_eq!(ReferenceId(*b"LOCL").display(Stratum(1)), "LOCL");
        assert!(ReferenceId::from_code("TOOLONG").is_none());
    }

    #[test]
    fn ipv6_reference_id_is_the_md5_prefix() {
        // MD5 of the 16 bytes of ::1 is cf404dc806178c245b5b4fe2531e6d8c.
        let id = ReferenceId::from_upstream("::1".parse().unwrap());
        assert_eq!(id.0, [0xcf, 0x40, 0x4d, 0xc8]);
    }

    #[test]
    fn on_port_123_the_reference_id_is_the_address_elsewhere_address_and_port() {
        let on_123: SocketAddr = "192.0.2.7:123".parse().unwrap();
        assert_eq!(ReferenceId::of_upstream(on_123).0, [192, 0, 2, 7]);
        let v6_on_123: SocketAddr = "[2001:db8::1]:123".parse().unwrap();
        assert_eq!(ReferenceId::of_upstream(v6_on_123), ReferenceId::from_upstream("2001:db8::1".parse().unwrap()));
        // An upstream on this host names a server only with its port:
        // hashed on 123 too, loopback or reached from its own address.
        let loopback_123: SocketAddr = "127.0.0.1:123".parse().unwrap();
        assert_ne!(ReferenceId::of_upstream(loopback_123), ReferenceId([127, 0, 0, 1]));
        let own = "192.0.2.7".parse().ok();
        assert_eq!(ReferenceId::of_upstream_from(on_123, own), ReferenceId::of_address_and_port(on_123));
        let other = "192.0.2.8".parse().ok();
        assert_eq!(ReferenceId::of_upstream_from(on_123, other), ReferenceId([192, 0, 2, 7]));
        // MD5 of 7f 00 00 01 43 55 (127.0.0.1, port 17237) starts 1cbbf72d,
        // computed independently with Python's hashlib.
        let one_address = |port: u16| ReferenceId::of_upstream(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(one_address(17237).0, [0x1c, 0xbb, 0xf7, 0x2d]);
        assert_ne!(one_address(17221), one_address(17222));
        assert_ne!(one_address(17221), ReferenceId([127, 0, 0, 1]));
    }

    #[test]
    fn kiss_codes_are_values() {
        assert!(KissCode::from_bytes(*b"DENY").is_stop());
        assert!(KissCode::from_bytes(*b"RSTR").is_stop());
        assert!(!KissCode::from_bytes(*b"RATE").is_stop());
        assert_eq!(KissCode::from_bytes(*b"XYZW"), KissCode::Other(*b"XYZW"));
    }
}
