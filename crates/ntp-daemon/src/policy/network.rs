//! IP networks in CIDR notation (`127.0.0.0/8`, `::1/128`, or a bare
//! address for one host), as the access lists name them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use thiserror::Error;

/// An IPv4 or IPv6 network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

/// Why a string is not a network.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid network `{text}`: {reason} (expected e.g. 127.0.0.0/8, ::1/128 or 10.1.2.3)")]
pub struct NetworkParseError {
    text: String,
    reason: &'static str,
}

impl Network {
    /// The network of `address` with `prefix` bits; `None` if the prefix is
    /// longer than the address.
    #[must_use]
    pub fn new(address: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(address)).then_some(Self { address, prefix })
    }

    /// Prefix length in bits: the more, the more specific.
    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True if `address` lies in this network. IPv4 networks never contain
    /// IPv6 addresses (callers map IPv4-mapped addresses back first).
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u128::from(net.to_bits()) << 96, u128::from(ip.to_bits()) << 96, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(net.to_bits(), ip.to_bits(), self.prefix),
            _ => false,
        }
    }
}

fn max_prefix(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// True if the top `prefix` bits of two left-aligned 128-bit values agree.
fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

impl FromStr for Network {
    type Err = NetworkParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| NetworkParseError { text: text.to_string(), reason };
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| fail("not an IP address"))?;
        let prefix = match prefix {
            Some(prefix) => prefix.parse().map_err(|_| fail("prefix length is not a number"))?,
            None => max_prefix(address),
        };
        Self::new(address, prefix).ok_or_else(|| fail("prefix length longer than the address"))
    }
}

impl TryFrom<String> for Network {
    type Error = NetworkParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contains_by_prefix() {
        assert!(net("127.0.0.0/8").contains(ip("127.1.2.3")));
        assert!(!net("127.0.0.0/8").contains(ip("128.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert_eq!(net("::1").prefix(), 128);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "127.0.0.0/33", "::/129", "localhost", "10.0.0.0/x", "10.0.0/8"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        let err = "10.0.0.0/40".parse::<Network>().unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/40"), "{err}");
    }
}
