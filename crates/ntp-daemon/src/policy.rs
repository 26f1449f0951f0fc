//! The server's access policy: who is served, kissed or ignored. Access
//! lists of networks, then a per-client rate limit. Pure logic, handed the
//! time; the serving loop asks it once per datagram.

mod network;
mod rate_limit;

use std::net::IpAddr;
use std::time::Instant;

use ntp_proto::packet::KissCode;
use ntp_proto::responder::Admission;
use serde::Deserialize;

pub use network::{Network, NetworkParseError};
pub use rate_limit::{RateLimitConfig, RateLimiter, RateVerdict};

/// What a denied client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyAction {
    /// A DENY kiss-o'-death, telling a well-behaved client to stop.
    #[default]
    Kiss,
    /// Nothing at all.
    Drop,
}

/// Access lists (`[access]` in the config file). With both lists empty
/// (the default) everyone is served. Otherwise the most specific network
/// that contains the client decides (deny wins a tie); a client in no
/// listed network is served only if the allow list is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AccessConfig {
    /// Networks to serve.
    pub allow: Vec<Network>,
    /// Networks to refuse.
    pub deny: Vec<Network>,
    /// What refused clients get.
    pub deny_action: DenyAction,
}

impl AccessConfig {
    /// True if `client` may be served.
    #[must_use]
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        let best = |list: &[Network]| list.iter().filter(|n| n.contains(client)).map(|n| i16::from(n.prefix())).max();
        match (best(&self.allow), best(&self.deny)) {
            (None, None) => self.allow.is_empty(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(allow), Some(deny)) => allow > deny,
        }
    }
}

/// Access lists and rate limiter together: one per serving thread, so the
/// rate-limit table needs no lock (a client is counted per socket it uses).
#[derive(Debug)]
pub struct Policy {
    access: AccessConfig,
    rate_limiter: Option<RateLimiter>,
}

impl Policy {
    /// A policy from its configuration; `epoch` is any instant not after
    /// the first request.
    #[must_use]
    pub fn new(access: AccessConfig, rate_limit: &RateLimitConfig, epoch: Instant) -> Self {
        let rate_limiter = rate_limit.enabled.then(|| RateLimiter::new(rate_limit, epoch));
        Self { access, rate_limiter }
    }

    /// How to treat a datagram from `client` arriving at `now`.
    pub fn admit(&mut self, client: IpAddr, now: Instant) -> Decision {
        if !self.access.allows(client) {
            return match self.access.deny_action {
                DenyAction::Kiss => Decision::DenyKiss,
                DenyAction::Drop => Decision::DenyDrop,
            };
        }
        match self.rate_limiter.as_mut().map(|limiter| limiter.check(client, now)) {
            None | Some(RateVerdict::Allow) => Decision::Serve,
            Some(RateVerdict::Kiss) => Decision::RateKiss,
            Some(RateVerdict::Drop) => Decision::RateDrop,
        }
    }
}

/// The policy's verdict on one client, with its cause (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve time.
    Serve,
    /// Refused by the access lists: DENY kiss.
    DenyKiss,
    /// Refused by the access lists: silence.
    DenyDrop,
    /// Over its rate: RATE kiss.
    RateKiss,
    /// Over its rate, kissed recently: silence.
    RateDrop,
}

impl Decision {
    /// What the responder is told.
    #[must_use]
    pub fn admission(self) -> Admission {
        match self {
            Self::Serve => Admission::Serve,
            Self::DenyKiss => Admission::Kiss(KissCode::Deny),
            Self::RateKiss => Admission::Kiss(KissCode::Rate),
            Self::DenyDrop | Self::RateDrop => Admission::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn open_by_default() {
        let mut policy = Policy::new(AccessConfig::default(), &RateLimitConfig::default(), Instant::now());
        for _ in 0..1000 {
            assert_eq!(policy.admit(ip("127.0.0.1"), Instant::now()).admission(), Admission::Serve);
        }
    }

    #[test]
    fn most_specific_network_decides() {
        let access = AccessConfig {
            allow: nets(&["127.0.0.0/8", "127.0.0.7"]),
            deny: nets(&["127.0.0.0/24"]),
            deny_action: DenyAction::Kiss,
        };
        assert!(access.allows(ip("127.0.1.1")));
        assert!(!access.allows(ip("127.0.0.1")));
        assert!(access.allows(ip("127.0.0.7")));
        assert!(!access.allows(ip("10.0.0.1")), "not listed while an allow list exists");
        assert!(!access.allows(ip("::1")));
        assert!(access.allows(ip("::ffff:127.0.1.1")), "IPv4-mapped addresses are IPv4");
        let deny_only = AccessConfig { deny: nets(&["127.0.0.2"]), ..AccessConfig::default() };
        assert!(deny_only.allows(ip("127.0.0.1")));
        assert!(!deny_only.allows(ip("127.0.0.2")));
    }

    #[test]
    fn deny_action_picks_kiss_or_silence() {
        let deny = nets(&["127.0.0.0/8"]);
        let now = Instant::now();
        let mut kiss = Policy::new(AccessConfig { deny: deny.clone(), ..Default::default() }, &Default::default(), now);
        assert_eq!(kiss.admit(ip("127.0.0.1"), now).admission(), Admission::Kiss(KissCode::Deny));
        let access = AccessConfig { deny, deny_action: DenyAction::Drop, ..Default::default() };
        let mut silent = Policy::new(access, &Default::default(), now);
        assert_eq!(silent.admit(ip("127.0.0.1"), now).admission(), Admission::Drop);
    }

    #[test]
    fn rate_limit_kisses_with_rate() {
        let now = Instant::now();
        let rate = RateLimitConfig { enabled: true, burst: 1, ..Default::default() };
        let mut policy = Policy::new(AccessConfig::default(), &rate, now);
        assert_eq!(policy.admit(ip("127.0.0.1"), now), Decision::Serve);
        assert_eq!(policy.admit(ip("127.0.0.1"), now).admission(), Admission::Kiss(KissCode::Rate));
        assert_eq!(policy.admit(ip("127.0.0.1"), now), Decision::RateDrop);
    }
}
