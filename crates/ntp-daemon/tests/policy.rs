//! Property tests of the serving policy: the network parser of the access
//! lists on any text, the access decision, and the rate limiter's promises
//! (never panics on any configuration the config file accepts, tables up to
//! 4,096 clients, or any sequence of sources and times; a token bucket's
//! bound per bucket; kisses spaced; a client within its rate always served,
//! however many others flood).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ntp_daemon::policy::{AccessConfig, Network, RateLimitConfig, RateLimiter, RateVerdict};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|bits| IpAddr::V4(Ipv4Addr::from(bits))),
        any::<u128>().prop_map(|bits| IpAddr::V6(Ipv6Addr::from(bits))),
    ]
}

/// The network of `address` with a prefix length valid for it.
fn network() -> impl Strategy<Value = Network> {
    (address(), any::<u8>()).prop_map(|(address, prefix)| {
        let bits = if address.is_ipv4() { 33 } else { 129 };
        Network::new(address, prefix % bits).expect("prefix within the address")
    })
}

/// An address as 128 bits, left-aligned, and its length.
fn bits(address: IpAddr) -> (u128, u32) {
    match address {
        IpAddr::V4(v4) => (u128::from(v4.to_bits()) << 96, 32),
        IpAddr::V6(v6) => (v6.to_bits(), 128),
    }
}

/// Whether the first `prefix` bits agree, one bit at a time.
fn same_leading_bits(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let ((a, a_len), (b, b_len)) = (bits(a), bits(b));
    a_len == b_len && (0..u32::from(prefix)).all(|i| (a >> (127 - i)) & 1 == (b >> (127 - i)) & 1)
}

/// The rate limiter's bucket of `client`: its IPv4 address (an IPv4-mapped
/// one counts as IPv4), or the /64 of its IPv6 address.
fn bucket(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() >> 64 << 64)),
        v4 => v4,
    }
}

fn config(interval: f64, burst: u32, table_size: usize, kiss_interval: f64) -> RateLimitConfig {
    RateLimitConfig { enabled: true, interval, burst, table_size, kiss_interval }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_text_parses_or_is_refused_and_a_network_round_trips(text in ".{0,60}", net in network()) {
        if let Ok(parsed) = text.parse::<Network>() {
            prop_assert_eq!(parsed.to_string().parse::<Network>().ok(), Some(parsed));
        }
        prop_assert_eq!(net.to_string().parse::<Network>().ok(), Some(net));
    }

    #[test]
    fn text_shaped_like_a_network_never_panics(
        address in "[0-9a-fA-F:.]{0,45}",
        slash in prop_oneof![Just(""), Just("/"), Just("//")],
        prefix in "[-+0-9]{0,5}",
    ) {
        let text = format!("{address}{slash}{prefix}");
        if let Err(e) = text.parse::<Network>() {
            prop_assert!(e.to_string().contains(&text), "the error names the text: {}", e);
        }
    }

    #[test]
    fn a_network_contains_exactly_the_addresses_that_share_its_prefix(
        net in network(),
        other in address(),
        flip in any::<u8>(),
    ) {
        let (address, prefix): (IpAddr, u8) = {
            let text = net.to_string();
            let (a, p) = text.split_once('/').expect("address/prefix");
            (a.parse().expect("address"), p.parse().expect("prefix"))
        };
        prop_assert!(net.contains(address));
        prop_assert_eq!(net.contains(other), same_leading_bits(address, other, prefix));
        // The same address with one bit flipped: inside if that bit is past the prefix.
        let (raw, len) = bits(address);
        let bit = u32::from(flip) % len;
        let flipped = raw ^ (1u128 << (127 - bit));
        let neighbour = if len == 32 {
            IpAddr::V4(Ipv4Addr::from((flipped >> 96) as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(flipped))
        };
        prop_assert_eq!(net.contains(neighbour), bit >= u32::from(prefix));
    }

    #[test]
    fn the_most_specific_entry_decides_and_mapped_addresses_count_as_ipv4(
        allow in prop::collection::vec(network(), 0..6),
        deny in prop::collection::vec(network(), 0..6),
        v4 in any::<u32>(),
    ) {
        let client = IpAddr::V4(Ipv4Addr::from(v4));
        let mut access = AccessConfig { allow, deny, ..AccessConfig::default() };
        let mapped = IpAddr::V6(Ipv4Addr::from(v4).to_ipv6_mapped());
        prop_assert_eq!(access.allows(client), access.allows(mapped));
        // A host entry outranks every shorter one; deny wins a tie.
        access.allow.push(Network::new(client, 32).expect("host"));
        prop_assert!(access.allows(client) && access.allows(mapped));
        access.deny.push(Network::new(client, 32).expect("host"));
        prop_assert!(!access.allows(client) && !access.allows(mapped));
    }

    #[test]
    fn any_accepted_configuration_and_traffic_is_handled(
        interval in 1e-6f64..86_400.0,
        burst in 1u32..=u32::MAX,
        table_size in 1usize..4096,
        kiss_interval in prop_oneof![Just(0.0), 0.0f64..86_400.0, Just(86_400.0)],
        traffic in prop::collection::vec((address(), 0u64..10_000_000_000), 1..400),
    ) {
        let epoch = Instant::now();
        let mut limiter = RateLimiter::new(&config(interval, burst, table_size, kiss_interval), epoch);
        let mut elapsed = Duration::ZERO;
        // Per bucket: when it last asked, and whether it was ever kissed.
        let mut seen: HashMap<IpAddr, (Duration, bool)> = HashMap::new();
        for (client, step) in traffic {
            elapsed += Duration::from_nanos(step);
            let verdict = limiter.check(client, epoch + elapsed);
            let key = bucket(client);
            match seen.get(&key) {
                // Whether remembered or forgotten (the table is full), a
                // bucket starts full and a token comes back each interval.
                None => prop_assert_eq!(verdict, RateVerdict::Allow, "a new client is served"),
                Some(&(last, _)) if (elapsed - last).as_secs_f64() >= interval * 1.001 => {
                    prop_assert_eq!(verdict, RateVerdict::Allow, "a token came back after an interval");
                }
                Some(&(_, kissed)) => {
                    prop_assert!(verdict != RateVerdict::Drop || kissed, "silence only after a kiss");
                }
            }
            let kissed = seen.get(&key).is_some_and(|&(_, kissed)| kissed) || verdict == RateVerdict::Kiss;
            seen.insert(key, (elapsed, kissed));
        }
    }

    #[test]
    fn each_bucket_serves_at_most_its_burst_plus_its_rate_and_kisses_spaced(
        interval in 0.001f64..10.0,
        burst in 1u32..20,
        kiss_interval in 0.0f64..10.0,
        (v4_a, v4_b) in (any::<u32>(), any::<u32>()),
        (v6_a, v6_b, host) in (any::<u128>(), any::<u128>(), any::<u64>()),
        // Gaps of up to an interval: the clients are over their rate much of the time.
        traffic in prop::collection::vec((0usize..6, 0.0f64..1.0), 1..600),
    ) {
        // Six clients in at most four buckets (so they always fit the
        // table and none is forgotten): an IPv4 address and its IPv4-mapped
        // form share one, two hosts of one IPv6 /64 share another.
        let clients = [
            IpAddr::V4(Ipv4Addr::from(v4_a)),
            IpAddr::V6(Ipv4Addr::from(v4_a).to_ipv6_mapped()),
            IpAddr::V6(Ipv6Addr::from(v6_a)),
            IpAddr::V6(Ipv6Addr::from(v6_a >> 64 << 64 | u128::from(host))),
            IpAddr::V4(Ipv4Addr::from(v4_b)),
            IpAddr::V6(Ipv6Addr::from(v6_b)),
        ];
        let epoch = Instant::now();
        let mut limiter = RateLimiter::new(&config(interval, burst, 4, kiss_interval), epoch);
        let mut elapsed = Duration::ZERO;
        // Per bucket: requests served, and the time of its last kiss.
        let mut buckets: Vec<(IpAddr, u64, Option<Duration>)> = Vec::new();
        for (index, gap) in traffic {
            let client = clients[index];
            elapsed += Duration::from_secs_f64(gap * interval);
            let verdict = limiter.check(client, epoch + elapsed);
            let key = bucket(client);
            let position = buckets.iter().position(|(k, _, _)| *k == key).unwrap_or_else(|| {
                buckets.push((key, 0, None));
                buckets.len() - 1
            });
            let (_, served, last_kiss) = &mut buckets[position];
            match verdict {
                RateVerdict::Allow => *served += 1,
                RateVerdict::Kiss => {
                    if let Some(last) = *last_kiss {
                        prop_assert!((elapsed - last).as_secs_f64() >= kiss_interval - 1e-6);
                    }
                    *last_kiss = Some(elapsed);
                }
                RateVerdict::Drop => prop_assert!(last_kiss.is_some(), "silence only after a kiss"),
            }
        }
        // The bucket starts full and refills one token an interval (the
        // slack covers floating-point rounding).
        let bound = (f64::from(burst) + elapsed.as_secs_f64() / interval + 1e-6).floor();
        for (key, served, _) in buckets {
            prop_assert!((served as f64) <= bound, "{} served {} > {}", key, served, bound);
        }
    }

    #[test]
    fn a_client_within_its_rate_is_always_served_whatever_the_flood(
        interval in 0.001f64..10.0,
        burst in 1u32..8,
        table_size in 4usize..64,
        flood in prop::collection::vec(prop::collection::vec(address(), 0..50), 1..40),
    ) {
        let epoch = Instant::now();
        let mut limiter = RateLimiter::new(&config(interval, burst, table_size, 1.0), epoch);
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        // A little slower than the rate, so rounding cannot starve it.
        let period = Duration::from_secs_f64(interval * 1.01);
        for (round, others) in flood.iter().enumerate() {
            let start = epoch + period * u32::try_from(round).expect("few rounds");
            for (i, other) in others.iter().enumerate() {
                if other.to_canonical() != client {
                    let _ = limiter.check(*other, start + Duration::from_nanos(i as u64));
                }
            }
            let at = start + Duration::from_nanos(others.len() as u64);
            prop_assert_eq!(limiter.check(client, at), RateVerdict::Allow, "round {}", round);
        }
    }
}
