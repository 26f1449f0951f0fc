//! Chains as users start them: every server on 127.0.0.1, told apart by
//! its port only, started in any order; timing loops caught all the same;
//! a middle tier restarted with a wrong clock. Judged from outside by
//! `ntp-query` (the host's clock is true time here), by `/status`, and by a
//! chronyd below the chain.

use std::time::{Duration, Instant};

use ntp_e2e::chain::{is_synced, offset, query, refid_of, serve, wait_synced, ChronyClient};
use ntp_e2e::peers::ChronyServer;
use ntp_e2e::{free_udp_port_on, ntpd_sim_status, wait_for, Daemon};
use serde_json::Value;

const IP: &str = "127.0.0.1";
const POLL: [&str; 4] = ["--min-poll", "0", "--max-poll", "2"];

/// How each tier's clock starts: stratum 1 is the host's clock, the others
/// are wrong on purpose (steps of minutes and seconds, drifts).
const CLOCKS: [&[&str]; 5] = [
    &[],
    &["--clock-offset", "300", "--clock-drift-ppm", "50"],
    &["--clock-offset", "-120", "--clock-drift-ppm", "-30"],
    &["--clock-offset", "5"],
    &["--clock-offset", "-2", "--clock-drift-ppm", "20"],
];

#[derive(Debug, Clone, Copy)]
enum Order {
    TopFirst,
    BottomFirst,
    AllAtOnce,
}

/// A five-tier chain on one address: tier i on `ports[i]`, following tier
/// i - 1, with `--http` on `http[i]`.
struct Chain {
    ports: Vec<u16>,
    http: Vec<String>,
    daemons: Vec<Option<Daemon>>,
}

impl Chain {
    fn new() -> Self {
        let ports = (0..5).map(|_| free_udp_port_on(IP)).collect();
        let http = (0..5).map(|_| format!("{IP}:{}", ntp_e2e::free_tcp_port_on(IP))).collect();
        Self { ports, http, daemons: (0..5).map(|_| None).collect() }
    }

    fn target(&self, tier: usize) -> String {
        format!("{IP}:{}", self.ports[tier])
    }

    /// Starts tier `tier` with its clock `clock` (its normal one: `CLOCKS`).
    fn start(&mut self, tier: usize, clock: &[&str]) {
        let upstream = if tier > 0 { vec!["--upstream".to_string(), self.target(tier - 1)] } else { Vec::new() };
        let mut args: Vec<&str> = clock.to_vec();
        args.extend(upstream.iter().map(String::as_str));
        if tier > 0 {
            args.extend_from_slice(&POLL);
        }
        args.extend_from_slice(&["--http", &self.http[tier]]);
        self.daemons[tier] = Some(serve(IP, self.ports[tier], &args));
    }

    fn start_all(&mut self, order: Order) {
        let tiers: Vec<usize> = match order {
            Order::TopFirst | Order::AllAtOnce => (0..5).collect(),
            Order::BottomFirst => (0..5).rev().collect(),
        };
        for tier in tiers {
            self.start(tier, CLOCKS[tier]);
            if !matches!(order, Order::AllAtOnce) {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }

    /// Stops tier `tier` and returns what it logged.
    fn stop(&mut self, tier: usize) -> String {
        let (status, output) = self.daemons[tier].take().expect("tier running").stop();
        assert!(status.success(), "tier {tier} exit: {status}\n{output}");
        output
    }
}

/// Every tier at its stratum within 1 ms of true time, within 60 s of the
/// first start, each naming its upstream's address and port; a chronyd
/// below the last tier is stratum 6.
fn converges(order: Order) {
    // One five-tier chain and a chronyd at a time: three at once on a
    // 2-core machine would measure the machine, not the chain.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut chain = Chain::new();
    let started = Instant::now();
    chain.start_all(order);
    for tier in 0..5 {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        let entry = wait_synced(&chain.target(tier), tier as u64 + 1, 1e-3, left);
        eprintln!("{order:?}: stratum {} within 1 ms at {:.1} s: {entry}", tier + 1, started.elapsed().as_secs_f64());
    }
    assert!(started.elapsed() < Duration::from_secs(60), "{order:?}: the whole chain in under a minute");
    for tier in 1..5 {
        let refid = query(&chain.target(tier), 1)["refid"].clone();
        assert_eq!(refid, refid_of(&chain.target(tier - 1)), "{order:?}: refid of stratum {}", tier + 1);
    }
    let chronyd = ChronyClient::follow(IP, chain.ports[4]);
    let seconds = chronyd.wait_stratum(6, Duration::from_secs(40));
    assert!(seconds.abs() < 1e-3, "{order:?}: chronyd's offset from stratum 5: {seconds} s");
}

#[test]
fn a_one_address_chain_started_top_first_synchronizes_every_tier() {
    converges(Order::TopFirst);
}

#[test]
fn a_one_address_chain_started_bottom_first_synchronizes_every_tier() {
    converges(Order::BottomFirst);
}

#[test]
fn a_one_address_chain_started_all_at_once_synchronizes_every_tier() {
    converges(Order::AllAtOnce);
}

/// Leap and stratum of `target` from `ntp-query`: is it serving as synchronized?
fn claims_sync(target: &str) -> bool {
    let entry = query(target, 1);
    entry["leap"].as_str().is_some_and(|leap| leap != "unsynchronized") && entry["stratum"].as_u64().unwrap_or(0) > 0
}

fn upstream_states(http: &str) -> Vec<Value> {
    ntpd_sim_status(http)
        .map(|s| s["upstreams"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
        .iter()
        .map(|u| u["state"].clone())
        .collect()
}

/// A follows P and B; B follows only A. A must see that B is synchronized
/// to it and never select it; once P is gone and the holdovers have run
/// out, neither may go on claiming synchronization on the other.
/// With `a_on_every_address`, A listens with `--port` (the wildcard
/// address), as the compose chain's servers do.
fn a_pair_does_not_hold_itself_up(ips: [&str; 3], a_on_every_address: bool) {
    let ports: Vec<u16> = ips.iter().map(|ip| free_udp_port_on(ip)).collect();
    let target = |i: usize| format!("{}:{}", ips[i], ports[i]);
    let http: Vec<String> = (1..3).map(|i| format!("{}:{}", ips[i], ntp_e2e::free_tcp_port_on(ips[i]))).collect();
    let fast = ["--min-poll", "0", "--max-poll", "0", "--holdover", "5"];
    let primary = serve(ips[0], ports[0], &[]);
    let (p, b) = (target(0), target(2));
    let mut a_args = vec!["--upstream", &p, "--upstream", &b, "--http", &http[0], "--clock-offset", "2"];
    a_args.extend_from_slice(&fast);
    let a = if a_on_every_address {
        let port = ports[1].to_string();
        let mut all = vec!["serve", "--port", &port, "--log-level", "info"];
        all.extend_from_slice(&a_args);
        Daemon::spawn(ntp_e2e::bin("ntpd-sim"), &all)
    } else {
        serve(ips[1], ports[1], &a_args)
    };
    let a_target = target(1);
    let mut b_args = vec!["--upstream", &a_target, "--http", &http[1], "--clock-offset", "-3"];
    b_args.extend_from_slice(&fast);
    let b_daemon = serve(ips[2], ports[2], &b_args);

    wait_synced(&target(1), 2, 1e-3, Duration::from_secs(30));
    wait_synced(&target(2), 3, 1e-3, Duration::from_secs(30));
    let states = wait_for(Duration::from_secs(10), || {
        let states = upstream_states(&http[0]);
        (states.len() == 2 && states[1] == "loop").then_some(states)
    })
    .unwrap_or_else(|| panic!("A does not see B as a loop: {:?}", ntpd_sim_status(&http[0])));
    assert_eq!(states[0], "system-peer", "A follows P: {states:?}");

    let (status, _) = primary.stop();
    assert!(status.success());
    let lost = Instant::now();
    // A: P unreachable after eight polls, then its holdover; then B's holdover.
    wait_for(Duration::from_secs(45), || (!claims_sync(&target(1)) && !claims_sync(&target(2))).then_some(()))
        .unwrap_or_else(|| panic!("still synchronized: A {} B {}", query(&target(1), 1), query(&target(2), 1)));
    eprintln!("{ips:?}: both unsynchronized {:.1} s after P stopped", lost.elapsed().as_secs_f64());
    let quiet_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < quiet_until {
        assert!(!claims_sync(&target(1)), "A synchronized again without P: {}", query(&target(1), 1));
        assert!(!claims_sync(&target(2)), "B synchronized again without P: {}", query(&target(2), 1));
        std::thread::sleep(Duration::from_millis(250));
    }
    for daemon in [a, b_daemon] {
        let (status, output) = daemon.stop();
        assert!(status.success());
        assert!(output.contains("now unsynchronized"), "{output}");
    }
}

#[test]
fn a_server_and_its_client_on_one_address_do_not_hold_each_other_up() {
    a_pair_does_not_hold_itself_up([IP, IP, IP], false);
}

#[test]
fn a_server_on_every_address_and_its_client_do_not_hold_each_other_up() {
    a_pair_does_not_hold_itself_up([IP, IP, IP], true);
}

#[test]
fn a_server_and_its_client_on_separate_addresses_do_not_hold_each_other_up() {
    a_pair_does_not_hold_itself_up(["127.0.0.41", "127.0.0.42", "127.0.0.43"], false);
}

#[test]
fn a_ring_of_three_with_no_reference_never_claims_synchronization() {
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port_on(IP)).collect();
    let target = |i: usize| format!("{IP}:{}", ports[i]);
    let _ring: Vec<Daemon> = (0..3)
        .map(|i| {
            let upstream = target((i + 1) % 3);
            serve(IP, ports[i], &["--upstream", &upstream, "--min-poll", "0", "--max-poll", "0"])
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while Instant::now() < until {
        for i in 0..3 {
            let entry = query(&target(i), 1);
            answered += usize::from(entry["leap"].is_string());
            assert!(!claims_sync(&target(i)), "member {i} of a ring claims synchronization: {entry}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answered > 0, "the ring's members answer (as unsynchronized)");
}

/// A follows P and C, B follows A, C follows B: a ring of three that the
/// reference ID (one hop) cannot see. Once P stops, the members follow
/// each other with strata climbing by one a poll until, at stratum 16,
/// all are unsynchronized; then they stay so.
#[test]
fn a_ring_of_three_that_loses_its_reference_ends_unsynchronized() {
    let ports: Vec<u16> = (0..4).map(|_| free_udp_port_on(IP)).collect();
    let target = |i: usize| format!("{IP}:{}", ports[i]);
    let fast = ["--min-poll", "0", "--max-poll", "0", "--holdover", "5"];
    let primary = serve(IP, ports[0], &[]);
    let upstreams = [vec![target(0), target(3)], vec![target(1)], vec![target(2)]];
    let _ring: Vec<Daemon> = upstreams
        .iter()
        .enumerate()
        .map(|(i, ups)| {
            let mut args: Vec<&str> = ups.iter().flat_map(|u| ["--upstream", u.as_str()]).collect();
            args.extend_from_slice(&fast);
            serve(IP, ports[i + 1], &args)
        })
        .collect();
    for member in 1..4 {
        wait_synced(&target(member), member as u64 + 1, 1e-3, Duration::from_secs(40));
    }
    let (status, _) = primary.stop();
    assert!(status.success());
    let lost = Instant::now();
    wait_for(Duration::from_secs(90), || (1..4).all(|m| !claims_sync(&target(m))).then_some(())).unwrap_or_else(|| {
        panic!("the ring still claims synchronization: {:?}", (1..4).map(|m| query(&target(m), 1)).collect::<Vec<_>>())
    });
    eprintln!("the ring fell unsynchronized {:.1} s after its reference stopped", lost.elapsed().as_secs_f64());
    let quiet_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < quiet_until {
        for member in 1..4 {
            assert!(!claims_sync(&target(member)), "member {member} synchronized again: {}", query(&target(member), 1));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Tier 3 of a running chain restarted with its clock 5 s wrong: tiers 4
/// and 5 must not follow the wrong clock (they step only once, at their
/// own start), and are synchronized to the restarted tier within 60 s.
#[test]
fn a_middle_tier_restarted_5_s_wrong_is_followed_without_a_step_below() {
    let mut chain = Chain::new();
    chain.start_all(Order::TopFirst);
    for tier in 0..5 {
        wait_synced(&chain.target(tier), tier as u64 + 1, 1e-3, Duration::from_secs(60));
    }
    let below = [chain.target(3), chain.target(4)];
    let watch = |worst: &mut [f64; 2]| {
        for (w, target) in worst.iter_mut().zip(&below) {
            if let Some(o) = offset(&query(target, 1)) {
                *w = w.max(o.abs());
            }
        }
    };
    let mut worst = [0.0f64; 2];
    let log = chain.stop(2);
    assert_eq!(log.matches("clock stepped").count(), 1, "tier 3 stepped once, at its start:\n{log}");
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    chain.start(2, &["--clock-offset", "5"]);
    // Back: tier 3 at stratum 3 within 1 ms, tiers 4 and 5 updated from it since.
    let resynced = wait_for(Duration::from_secs(60), || {
        watch(&mut worst);
        let tier3 = is_synced(&query(&chain.target(2), 1), 3, 1e-3);
        let fresh = |tier: usize| {
            ntpd_sim_status(&chain.http[tier]).is_some_and(|s| {
                let since = s["system"]["since_update"].as_f64().unwrap_or(f64::MAX);
                s["system"]["synchronized"] == true && since < restarted.elapsed().as_secs_f64() - 1.0
            })
        };
        (tier3 && fresh(3) && fresh(4)).then(|| restarted.elapsed())
    })
    .unwrap_or_else(|| {
        panic!("not resynchronized: {:?} {:?}", ntpd_sim_status(&chain.http[3]), ntpd_sim_status(&chain.http[4]))
    });
    eprintln!("tiers 4 and 5 updated from the restarted tier 3 after {:.1} s", resynced.as_secs_f64());
    let steady = Instant::now() + Duration::from_secs(5);
    while Instant::now() < steady {
        watch(&mut worst);
    }
    eprintln!("worst |offset| of tiers 4 and 5 through the restart: {worst:?}");
    assert!(worst.iter().all(|&w| w < 1e-3), "tiers below never followed the 5 s error: {worst:?}");
    for tier in [3, 4] {
        let log = chain.stop(tier);
        assert_eq!(log.matches("clock stepped").count(), 1, "tier {} stepped only at its start:\n{log}", tier + 1);
    }
}

/// chronyd on the same address, above and below: as an upstream (its own
/// local stratum 1) it is followed; as a client of ours that we also poll,
/// its reference ID (our address, as chrony writes it) reads as the loop it
/// is, and we keep following the real reference.
#[test]
fn chronyd_above_is_followed_and_chronyd_below_is_never_taken_for_an_upstream() {
    let (p_port, b_port, c_port) = (free_udp_port_on(IP), free_udp_port_on(IP), free_udp_port_on(IP));
    let http = format!("{IP}:{}", ntp_e2e::free_tcp_port_on(IP));
    let above = ChronyServer::start(p_port, Some(1));
    let (p, c) = (format!("{IP}:{p_port}"), format!("{IP}:{c_port}"));
    let _b =
        serve(IP, b_port, &["--upstream", &p, "--upstream", &c, "--http", &http, "--min-poll", "0", "--max-poll", "0"]);
    let _below =
        ChronyServer::start_with(c_port, |_| format!("server {IP} port {b_port} iburst minpoll 0 maxpoll 0\n"));
    wait_synced(&format!("{IP}:{b_port}"), 2, 1e-3, Duration::from_secs(30));
    // chronyd below follows us at stratum 3, naming us by our address.
    let chrony = wait_for(Duration::from_secs(30), || {
        let entry = query(&c, 1);
        is_synced(&entry, 3, 1e-3).then_some(entry)
    })
    .unwrap_or_else(|| panic!("chronyd below is not stratum 3: {}", query(&c, 1)));
    assert_eq!(chrony["refid"], IP, "chrony names its upstream by address: {chrony}");
    let states = wait_for(Duration::from_secs(10), || {
        let states = upstream_states(&http);
        (states.len() == 2 && states[1] == "loop").then_some(states)
    })
    .unwrap_or_else(|| panic!("chronyd below not seen as a loop: {:?}", ntpd_sim_status(&http)));
    assert_eq!(states[0], "system-peer", "chronyd above is the system peer: {states:?}");
    drop(above);
}

/// A chain below a server on port 123 of our own address (the host's usual
/// time server on 127.0.0.1): the tier that follows it must not advertise
/// 127.0.0.1, or the tier below would take it for a loop.
#[test]
fn a_chain_below_port_123_of_our_own_address_synchronizes() {
    ntp_e2e::require_root();
    let (p2, p3) = (free_udp_port_on(IP), free_udp_port_on(IP));
    let _top = serve(IP, 123, &[]);
    let top = format!("{IP}:123");
    let _second = serve(IP, p2, &["--upstream", IP, "--min-poll", "0", "--max-poll", "1", "--clock-offset", "3"]);
    let second = format!("{IP}:{p2}");
    let _third = serve(IP, p3, &["--upstream", &second, "--min-poll", "0", "--max-poll", "1", "--clock-offset", "-4"]);
    wait_synced(&top, 1, 1e-3, Duration::from_secs(10));
    let entry = wait_synced(&second, 2, 1e-3, Duration::from_secs(30));
    assert_eq!(entry["refid"], refid_of(&top), "named by address and port, not 127.0.0.1: {entry}");
    wait_synced(&format!("{IP}:{p3}"), 3, 1e-3, Duration::from_secs(30));
}
