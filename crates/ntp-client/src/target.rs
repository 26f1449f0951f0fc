//! The `SERVER` argument: a host name or address with an optional port
//! (`host`, `host:123`, `192.0.2.1:123`, `::1`, `[::1]:123`), and its
//! resolution to every address of the wanted family.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

/// The NTP port.
pub const NTP_PORT: u16 = 123;

/// A server as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host part: an address or a name to resolve.
    pub host: Host,
    /// The UDP port.
    pub port: u16,
}

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal address.
    Address(IpAddr),
    /// A name for the resolver.
    Name(String),
}

/// Which address families to query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Both.
    #[default]
    Any,
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

impl Family {
    fn admits(self, address: &SocketAddr) -> bool {
        match self {
            Self::Any => true,
            Self::V4 => address.is_ipv4(),
            Self::V6 => address.is_ipv6(),
        }
    }
}

/// A `SERVER` argument that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetError {
    /// Nothing given.
    #[error("empty server name")]
    Empty,
    /// `[` without `]`, or something after `]` that is not `:port`.
    #[error("expected `[IPv6-address]` or `[IPv6-address]:port`")]
    Brackets,
    /// Something in brackets that is not an IPv6 address.
    #[error("`{0}` in brackets is not an IPv6 address")]
    NotIpv6(String),
    /// A port that is not a number from 1 to 65535.
    #[error("bad port `{0}`: expected a number from 1 to 65535")]
    Port(String),
    /// Characters no host name has.
    #[error("`{0}` is neither an IP address nor a host name")]
    Host(String),
}

/// A target that resolves to no address.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// The resolver failed.
    #[error("cannot resolve {name}: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Addresses exist, but none of the family asked for.
    #[error("{0} has no address of the requested family")]
    NoAddress(String),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, TargetError> {
        Self::parse_with_default_port(text, NTP_PORT)
    }
}

impl Target {
    /// Parses `text`, with `default_port` where it names none (4460 for an
    /// NTS-KE server).
    pub fn parse_with_default_port(text: &str, default_port: u16) -> Result<Self, TargetError> {
        if text.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or(TargetError::Brackets)?;
            let address: Ipv6Addr = inside.parse().map_err(|_| TargetError::NotIpv6(inside.to_string()))?;
            let port = match after {
                "" => default_port,
                _ => parse_port(after.strip_prefix(':').ok_or(TargetError::Brackets)?)?,
            };
            return Ok(Self { host: Host::Address(address.into()), port });
        }
        // Two colons or more: a bare IPv6 address, which cannot carry a port.
        if text.matches(':').count() > 1 {
            let address: Ipv6Addr = text.parse().map_err(|_| TargetError::Host(text.to_string()))?;
            return Ok(Self { host: Host::Address(address.into()), port: default_port });
        }
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (text, default_port),
        };
        Ok(Self { host: parse_host(host)?, port })
    }
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 && !text.starts_with('+') => Ok(port),
        _ => Err(TargetError::Port(text.to_string())),
    }
}

fn parse_host(text: &str) -> Result<Host, TargetError> {
    if text.is_empty() {
        return Err(TargetError::Empty);
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(Host::Address(address));
    }
    let plausible = text.len() <= 253
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !text.starts_with(['.', '-']);
    if plausible {
        Ok(Host::Name(text.to_string()))
    } else {
        Err(TargetError::Host(text.to_string()))
    }
}

impl Target {
    /// Every address of the target in `family`, in the resolver's order,
    /// without duplicates.
    pub async fn resolve(&self, family: Family) -> Result<Vec<SocketAddr>, ResolveError> {
        let found: Vec<SocketAddr> = match &self.host {
            Host::Address(address) => vec![SocketAddr::new(*address, self.port)],
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await
                .map_err(|source| ResolveError::Lookup { name: name.clone(), source })?
                .collect(),
        };
        let mut addresses: Vec<SocketAddr> = Vec::new();
        for address in found.into_iter().filter(|a| family.admits(a)) {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            return Err(ResolveError::NoAddress(self.to_string()));
        }
        Ok(addresses)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Address(address) => write!(f, "{}", SocketAddr::new(*address, self.port)),
            Host::Name(name) if self.port == NTP_PORT => f.write_str(name),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Target, TargetError> {
        text.parse()
    }

    fn address(text: &str, port: u16) -> Target {
        Target { host: Host::Address(text.parse().unwrap()), port }
    }

    #[test]
    fn addresses_and_ports() {
        assert_eq!(parse("127.0.0.1"), Ok(address("127.0.0.1", 123)));
        assert_eq!(parse("127.0.0.1:11123"), Ok(address("127.0.0.1", 11123)));
        assert_eq!(parse("::1"), Ok(address("::1", 123)));
        assert_eq!(parse("[::1]"), Ok(address("::1", 123)));
        assert_eq!(parse("[::1]:4123"), Ok(address("::1", 4123)));
        assert_eq!(parse("[fe80::1%2]:1").ok(), None, "zone ids are not taken");
        let named = parse("localhost:1234").unwrap();
        assert_eq!(named.host, Host::Name("localhost".into()));
        assert_eq!(named.port, 1234);
        assert_eq!(parse("time.example.org").unwrap().port, 123);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert_eq!(parse(""), Err(TargetError::Empty));
        assert_eq!(parse(":123"), Err(TargetError::Empty));
        assert_eq!(parse("[::1"), Err(TargetError::Brackets));
        assert_eq!(parse("[::1]123"), Err(TargetError::Brackets));
        assert_eq!(parse("[1.2.3.4]:5"), Err(TargetError::NotIpv6("1.2.3.4".into())));
        assert_eq!(parse("host:0"), Err(TargetError::Port("0".into())));
        assert_eq!(parse("host:99999"), Err(TargetError::Port("99999".into())));
        assert_eq!(parse("host:+5"), Err(TargetError::Port("+5".into())));
        assert_eq!(parse("host:"), Err(TargetError::Port(String::new())));
        assert_eq!(parse("bad host"), Err(TargetError::Host("bad host".into())));
        assert_eq!(parse("1:2:zz"), Err(TargetError::Host("1:2:zz".into())));
    }

    #[tokio::test]
    async fn resolution_filters_by_family() {
        let v4 = address("127.0.0.1", 5);
        assert_eq!(v4.resolve(Family::Any).await.unwrap(), vec!["127.0.0.1:5".parse().unwrap()]);
        assert!(matches!(v4.resolve(Family::V6).await, Err(ResolveError::NoAddress(_))));
        let localhost: Target = "localhost:7".parse().unwrap();
        let found = localhost.resolve(Family::V4).await.unwrap();
        assert!(found.iter().all(|a| a.is_ipv4() && a.ip().is_loopback() && a.port() == 7));
    }
}
