//! Per-client rate limiting: a token bucket per client address in a
//! fixed-size, set-associative table, so memory stays flat however many
//! (possibly spoofed) sources send. A client over its rate gets a RATE
//! kiss-o'-death at most once per `kiss-interval`, and silence otherwise.
//!
//! Pure: every call is handed the time, as a monotonic instant.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How clients are rate limited (`[rate-limit]` in the config file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RateLimitConfig {
    /// Off by default, as in chrony.
    pub enabled: bool,
    /// Average seconds between requests a client may sustain.
    pub interval: f64,
    /// Requests a client may send back to back after a quiet spell.
    pub burst: u32,
    /// Clients remembered (rounded up to a multiple of 4); bounds memory at
    /// about 48 bytes a client per listening socket.
    pub table_size: usize,
    /// Least seconds between two RATE kisses to the same client.
    pub kiss_interval: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: false, interval: 1.0, burst: 8, table_size: 16_384, kiss_interval: 1.0 }
    }
}

/// The rate limiter's verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within its rate: serve.
    Allow,
    /// Over its rate: send a RATE kiss.
    Kiss,
    /// Over its rate and kissed recently: send nothing.
    Drop,
}

const WAYS: usize = 4;

/// One client's bucket. `key == 0` marks an empty slot (address keys are
/// stored with their top bit set, so no client has key 0).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    last_nanos: u64,
    last_kiss_nanos: Option<u64>,
    /// f64, not f32: exact for every burst up to 2^32 (f32 stops counting
    /// down from 2^25: x - 1.0 rounds back to x), and a slot is 48 bytes either way.
    tokens: f64,
}

/// Token buckets for the clients seen most recently.
#[derive(Debug)]
pub struct RateLimiter {
    slots: Box<[Slot]>,
    hasher: RandomState,
    epoch: Instant,
    refill_per_nano: f64,
    burst: f64,
    kiss_interval_nanos: u64,
}

impl RateLimiter {
    /// An empty table; `epoch` is any instant not after the first request.
    #[must_use]
    pub fn new(config: &RateLimitConfig, epoch: Instant) -> Self {
        let len = config.table_size.max(WAYS).div_ceil(WAYS) * WAYS;
        Self {
            slots: vec![Slot::default(); len].into_boxed_slice(),
            hasher: RandomState::new(),
            epoch,
            refill_per_nano: 1.0 / (config.interval.max(1e-9) * 1e9),
            burst: f64::from(config.burst.max(1)),
            kiss_interval_nanos: Duration::try_from_secs_f64(config.kiss_interval.max(0.0))
                .map_or(u64::MAX, |d| d.as_nanos().try_into().unwrap_or(u64::MAX)),
        }
    }

    /// Charges one request from `client` at `now`.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> RateVerdict {
        let now_nanos = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let key = client_key(client);
        let (refill_per_nano, burst, kiss_interval) = (self.refill_per_nano, self.burst, self.kiss_interval_nanos);
        let slot = self.slot_for(key, now_nanos);
        let elapsed = now_nanos.saturating_sub(slot.last_nanos) as f64;
        slot.tokens = (slot.tokens + elapsed * refill_per_nano).min(burst);
        slot.last_nanos = now_nanos;
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            return RateVerdict::Allow;
        }
        let may_kiss = slot.last_kiss_nanos.is_none_or(|last| now_nanos.saturating_sub(last) >= kiss_interval);
        if may_kiss {
            slot.last_kiss_nanos = Some(now_nanos);
            RateVerdict::Kiss
        } else {
            RateVerdict::Drop
        }
    }

    /// The client's slot, or a fresh one (full bucket) replacing the empty
    /// or least recently seen slot of its set.
    fn slot_for(&mut self, key: u128, now_nanos: u64) -> &mut Slot {
        let sets = self.slots.len() / WAYS;
        let set = (self.hasher.hash_one(key) as usize % sets) * WAYS;
        let ways = &mut self.slots[set..set + WAYS];
        let index = match ways.iter().position(|s| s.key == key) {
            Some(found) => found,
            None => {
                let victim = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| if s.key == 0 { 0 } else { s.last_nanos + 1 })
                    .map_or(0, |(i, _)| i);
                ways[victim] = Slot { key, last_nanos: now_nanos, last_kiss_nanos: None, tokens: self.burst };
                victim
            }
        };
        &mut ways[index]
    }
}

/// A client's identity for rate limiting: its IPv4 address, or the /64
/// prefix of its IPv6 address (one host commonly owns a whole /64).
fn client_key(client: IpAddr) -> u128 {
    const TAG: u128 = 1 << 127;
    match client.to_canonical() {
        IpAddr::V4(v4) => TAG | u128::from(v4.to_bits()),
        IpAddr::V6(v6) => TAG | (1 << 126) | (v6.to_bits() >> 64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(table_size: usize) -> (RateLimiter, Instant) {
        let config = RateLimitConfig { enabled: true, interval: 1.0, burst: 4, table_size, kiss_interval: 2.0 };
        let epoch = Instant::now();
        (RateLimiter::new(&config, epoch), epoch)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_one_kiss_then_silence_then_refill() {
        let (mut limiter, t0) = limiter(64);
        let client = ip("127.0.0.2");
        for _ in 0..4 {
            assert_eq!(limiter.check(client, t0), RateVerdict::Allow);
        }
        assert_eq!(limiter.check(client, t0), RateVerdict::Kiss);
        assert_eq!(limiter.check(client, t0 + Duration::from_millis(100)), RateVerdict::Drop);
        // One token back after a second; the kiss interval (2 s) not yet over.
        assert_eq!(limiter.check(client, t0 + Duration::from_millis(1200)), RateVerdict::Allow);
        assert_eq!(limiter.check(client, t0 + Duration::from_millis(1300)), RateVerdict::Drop);
        assert_eq!(limiter.check(client, t0 + Duration::from_millis(2300)), RateVerdict::Allow);
        assert_eq!(limiter.check(client, t0 + Duration::from_millis(2300)), RateVerdict::Kiss);
        // Other clients have buckets of their own.
        assert_eq!(limiter.check(ip("127.0.0.3"), t0 + Duration::from_millis(2300)), RateVerdict::Allow);
    }

    #[test]
    fn ipv6_hosts_in_one_64_share_a_bucket() {
        let (mut limiter, t0) = limiter(64);
        for host in 1..=4 {
            assert_eq!(limiter.check(ip(&format!("fd00::{host}")), t0), RateVerdict::Allow);
        }
        assert_eq!(limiter.check(ip("fd00::99"), t0), RateVerdict::Kiss);
        assert_eq!(limiter.check(ip("fd00:0:0:1::1"), t0), RateVerdict::Allow);
    }

    #[test]
    fn a_flood_of_sources_keeps_the_table_size() {
        let (mut limiter, t0) = limiter(1000);
        assert_eq!(limiter.slots.len(), 1000);
        for n in 0..200_000u32 {
            let _ = limiter.check(IpAddr::V4(n.into()), t0 + Duration::from_nanos(u64::from(n)));
        }
        assert_eq!(limiter.slots.len(), 1000);
        // A busy client seen a moment ago survives in its set... or is
        // replaced by a fresh bucket, which only ever errs towards serving.
        let client = ip("127.0.0.9");
        assert_eq!(limiter.check(client, t0 + Duration::from_secs(1)), RateVerdict::Allow);
    }
}
