//! Virtual-time tests of the system process: several upstreams, one liar,
//! loops, holdover.

use super::*;
use crate::association::PollConfig;
use crate::packet::{Header, Mode};

fn t(s: f64) -> NtpTimestamp {
    NtpTimestamp::from_unix(1_800_000_000, 0) + NtpDuration::from_seconds_f64(s)
}

fn secs(s: f64) -> NtpDuration {
    NtpDuration::from_seconds_f64(s)
}

fn reply(stratum: u8, reference_id: [u8; 4]) -> Header {
    Header {
        mode: Mode::Server,
        stratum: Stratum(stratum),
        reference_id: ReferenceId(reference_id),
        root_delay: NtpShort::from_seconds_f64(1e-4),
        root_dispersion: NtpShort::from_seconds_f64(1e-4),
        ..Header::default()
    }
}

/// Upstreams whose time is true time plus `lies[i]`; our raw clock is
/// `start_offset` ahead of true time. Polls every second for `seconds`.
fn run(
    lies: &[f64],
    start_offset: f64,
    seconds: u32,
    config: SystemConfig,
) -> (System, VirtualClock, Vec<Association>) {
    let quiet = vec![LeapIndicator::NoWarning; lies.len()];
    run_from(t(0.0), lies, &quiet, start_offset, seconds, config)
}

/// As [`run`], from true time `start`, upstream `i` announcing `leaps[i]`.
fn run_from(
    start: NtpTimestamp,
    lies: &[f64],
    leaps: &[LeapIndicator],
    start_offset: f64,
    seconds: u32,
    config: SystemConfig,
) -> (System, VirtualClock, Vec<Association>) {
    run_with(System::new(config), start, lies, leaps, start_offset, seconds)
}

/// As [`run_from`], with a system set up by the caller.
fn run_with(
    mut system: System,
    start: NtpTimestamp,
    lies: &[f64],
    leaps: &[LeapIndicator],
    start_offset: f64,
    seconds: u32,
) -> (System, VirtualClock, Vec<Association>) {
    let poll = PollConfig { min_poll: 0, max_poll: 0, iburst: false };
    let mut associations: Vec<Association> = lies.iter().map(|_| Association::new(poll, start)).collect();
    let mut correction = VirtualClock::new(start, NtpDuration::ZERO, 0.0);
    for s in 0..seconds {
        let true_time = start + secs(f64::from(s));
        let raw = true_time + secs(start_offset);
        for (i, lie) in lies.iter().enumerate() {
            associations[i].on_poll_sent(raw);
            let sample =
                Sample { offset: (true_time + secs(*lie)) - raw, delay: secs(2e-4), dispersion: secs(1e-6), time: raw };
            let header = Header { leap: leaps[i], ..reply(1, *b"GPS\0") };
            let _ = associations[i].on_reply(raw, &header, sample, false, 0.0);
        }
        let views: Vec<PeerView<'_>> = associations
            .iter()
            .enumerate()
            .map(|(i, a)| PeerView { reference_id: ReferenceId([127, 0, 0, i as u8 + 1]), association: a })
            .collect();
        let _ = system.update(raw, &views, &mut correction);
    }
    (system, correction, associations)
}

fn config() -> SystemConfig {
    SystemConfig {
        discipline: DisciplineConfig { min_poll: 0, max_poll: 0, ..DisciplineConfig::default() },
        ..SystemConfig::default()
    }
}

#[test]
fn a_lying_server_is_voted_out_and_the_clock_follows_the_majority() {
    let (system, correction, _) = run(&[0.0, 10.0, 0.0002], 5.0, 30, config());
    assert_eq!(system.selection()[1], SelectionState::Falseticker);
    assert!(matches!(system.selection()[0], SelectionState::SystemPeer | SelectionState::Candidate));
    let raw = t(30.0) + secs(5.0);
    let error = (correction.time_at(raw) - t(30.0)).to_seconds_f64();
    assert!(error.abs() < 5e-4, "clock follows the truechimers, error {error}");
    let state = system.server_state(raw);
    assert_eq!(state.stratum, Stratum(2));
    assert_eq!(state.leap, LeapIndicator::NoWarning);
}

#[test]
fn advertises_stratum_plus_one_and_the_peer_address() {
    // Five minutes off: stepped at once, and a step leaves no error to
    // advertise as root dispersion (once the filter's eight stages are full,
    // the empty ones no longer count 16 s each).
    let (system, _, _) = run(&[0.0], 300.0, 10, config());
    let state = system.server_state(t(10.0) + secs(300.0));
    assert!(state.root_dispersion.to_seconds_f64() < 0.01, "{:?}", state.root_dispersion);
    assert_eq!(state.stratum, Stratum(2));
    assert_eq!(state.reference_id, ReferenceId([127, 0, 0, 1]));
    assert!(state.root_delay.to_seconds_f64() >= 3e-4);
}

#[test]
fn unsynchronized_before_the_first_update_and_after_the_holdover() {
    let system = System::new(config());
    assert_eq!(system.server_state(t(0.0)).leap, LeapIndicator::Unsynchronized);
    assert_eq!(system.server_state(t(0.0)).stratum, Stratum(0));
    let cfg = SystemConfig { holdover: secs(60.0), ..config() };
    let (system, _, _) = run(&[0.0], 0.0, 5, cfg);
    assert_eq!(system.server_state(t(30.0)).stratum, Stratum(2), "still within the holdover");
    assert_eq!(system.server_state(t(100.0)).leap, LeapIndicator::Unsynchronized);
}

#[test]
fn an_upstream_synchronized_to_us_is_a_loop() {
    let mut system = System::new(config());
    system.set_own_reference_ids(vec![ReferenceId(*b"GPS\0")]);
    let mut association = Association::new(PollConfig { min_poll: 0, max_poll: 0, iburst: false }, t(0.0));
    association.on_poll_sent(t(0.0));
    let sample = Sample { offset: NtpDuration::ZERO, delay: secs(1e-4), dispersion: secs(1e-6), time: t(0.0) };
    let _ = association.on_reply(t(0.0), &reply(2, *b"GPS\0"), sample, false, 0.0);
    let mut correction = VirtualClock::new(t(0.0), NtpDuration::ZERO, 0.0);
    let views = [PeerView { reference_id: ReferenceId([127, 0, 0, 9]), association: &association }];
    assert!(system.update(t(0.0), &views, &mut correction).is_none());
    assert_eq!(system.selection()[0], SelectionState::Unfit(Unfit::Loop));
}

#[test]
fn two_servers_that_disagree_leave_us_unsynchronized() {
    let (system, _, _) = run(&[0.0, 300.0], 0.0, 10, config());
    assert_eq!(system.selection(), [SelectionState::Falseticker, SelectionState::Falseticker]);
    assert_eq!(system.server_state(t(10.0)).leap, LeapIndicator::Unsynchronized);
}

#[test]
fn the_system_peer_does_not_hop_between_equals() {
    let poll = PollConfig { min_poll: 0, max_poll: 0, iburst: false };
    let mut associations = [Association::new(poll, t(0.0)), Association::new(poll, t(0.0))];
    let mut system = System::new(config());
    let mut correction = VirtualClock::new(t(0.0), NtpDuration::ZERO, 0.0);
    let mut peers_seen = Vec::new();
    for s in 0..40 {
        let now = t(f64::from(s));
        for (i, association) in associations.iter_mut().enumerate() {
            association.on_poll_sent(now);
            // Alternately the better one: delays swap every second.
            let delay = if (s + i as u32) % 2 == 0 { 1e-4 } else { 3e-4 };
            let sample = Sample { offset: NtpDuration::ZERO, delay: secs(delay), dispersion: secs(1e-6), time: now };
            let _ = association.on_reply(now, &reply(1, *b"GPS\0"), sample, false, 0.0);
        }
        let views: Vec<PeerView<'_>> = associations
            .iter()
            .enumerate()
            .map(|(i, a)| PeerView { reference_id: ReferenceId([127, 0, 0, i as u8 + 1]), association: a })
            .collect();
        if let Some(sync) = system.update(now, &views, &mut correction) {
            peers_seen.push(sync.peer);
        }
    }
    assert!(peers_seen.len() > 10);
    assert!(peers_seen.windows(2).all(|w| w[0] == w[1]), "one system peer throughout: {peers_seen:?}");
}

fn socket(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn servers_sharing_one_address_on_other_ports_are_not_us() {
    // Three tiers on 127.0.0.1: we are the third, on port 17223.
    let own = own_reference_ids(&[socket("127.0.0.1:17223")], &["127.0.0.1".parse().unwrap()]);
    // Our upstream (port 17222) is synchronized to the first tier (17221).
    let upstream_refid = ReferenceId::of_upstream(socket("127.0.0.1:17221"));
    assert!(!own.contains(&upstream_refid), "a neighbour on the same address is not a loop");
    // A server polling us on our port advertises us: that is a loop.
    assert!(own.contains(&ReferenceId::of_upstream(socket("127.0.0.1:17223"))));
    // So is one that names only our address, as chrony and ntpd do.
    assert!(own.contains(&ReferenceId([127, 0, 0, 1])));
}

#[test]
fn an_address_our_polls_leave_from_but_we_do_not_serve_on_is_not_us() {
    // We serve on 10.0.0.4 only; our polls leave from the host's first
    // address, 10.0.0.1, where a neighbour serves: its followers name it.
    let own = own_reference_ids(&[socket("10.0.0.4:123")], &["10.0.0.1".parse().unwrap()]);
    assert!(!own.contains(&ReferenceId([10, 0, 0, 1])), "{own:?}");
    assert!(own.contains(&ReferenceId([10, 0, 0, 4])), "{own:?}");
    // A wildcard listener beside it is us wherever our polls leave from.
    let both = own_reference_ids(&[socket("0.0.0.0:123"), socket("10.0.0.4:1234")], &["10.0.0.1".parse().unwrap()]);
    assert!(both.contains(&ReferenceId([10, 0, 0, 1])) && both.contains(&ReferenceId([10, 0, 0, 4])), "{both:?}");
    // A specific IPv6 listener is us by its address's hash, and only it.
    let v6 = own_reference_ids(&[socket("[2001:db8::4]:123")], &["2001:db8::1".parse().unwrap()]);
    assert!(v6.contains(&ReferenceId::of_upstream(socket("[2001:db8::4]:123"))), "{v6:?}");
    assert!(!v6.contains(&ReferenceId::of_upstream(socket("[2001:db8::1]:123"))), "{v6:?}");
}

#[test]
fn a_wildcard_listener_is_us_at_every_address_our_polls_leave_from() {
    // `--port` binds one dual-stack [::] socket where it can.
    let dual = own_reference_ids(&[socket("[::]:12300")], &["127.0.0.5".parse().unwrap()]);
    assert!(dual.contains(&ReferenceId::of_address_and_port(socket("127.0.0.5:12300"))), "{dual:?}");
    let own = own_reference_ids(&[socket("0.0.0.0:12300"), socket("[::]:12300")], &["127.0.0.5".parse().unwrap()]);
    assert!(own.contains(&ReferenceId::of_upstream(socket("127.0.0.5:12300"))));
    assert!(own.contains(&ReferenceId([127, 0, 0, 5])));
    assert!(!own.contains(&ReferenceId([0, 0, 0, 0])), "the unspecified address is nobody");
    assert_eq!(own.len(), 2, "{own:?}");
    // On port 123 too: the plain address (a chrony that follows us names us
    // so) and the hash (an ntpd-sim on this host that follows us).
    let on_123 = own_reference_ids(&[socket("192.0.2.1:123")], &[]);
    assert_eq!(on_123.len(), 2, "{on_123:?}");
    assert!(on_123.contains(&ReferenceId([192, 0, 2, 1])));
    assert!(on_123.contains(&ReferenceId::of_address_and_port(socket("192.0.2.1:123"))));
}

/// The leap indicator advertised after 20 s of three upstreams announcing
/// `leaps`, starting at `start`.
/// Two of three announcing a leap is a majority of the associations, but
/// not of the upstreams configured when two more names do not resolve yet.
#[test]
fn an_unresolved_upstream_still_votes_no_leap() {
    use LeapIndicator::{Insert, NoWarning};
    let last_day = NtpTimestamp::from_parts(3_692_217_600 - 43_200, 0);
    let mut system = System::new(config());
    system.set_unassociated(2);
    let lies = [0.0, 0.0001, -0.0001];
    let (system, _, _) = run_with(system, last_day, &lies, &[Insert, Insert, NoWarning], 0.0, 20);
    assert_eq!(system.server_state(last_day + secs(20.0)).leap, NoWarning);
    assert_eq!(system.unassociated(), 2);
}

/// Removing an association renumbers the ones after it; removing the
/// system peer keeps the last update (holdover) but names no peer.
#[test]
fn removing_an_association_renumbers_the_rest() {
    let (mut system, _, _) = run(&[0.0, 0.0001, -0.0001], 0.0, 20, config());
    let peer = system.synchronization().unwrap().peer;
    let states = system.selection().to_vec();
    let other = (0..3).find(|&i| i != peer).unwrap();
    system.remove(other);
    assert_eq!(system.selection().len(), 2);
    let expected_peer = if other < peer { peer - 1 } else { peer };
    assert_eq!(system.synchronization().unwrap().peer, expected_peer);
    assert_eq!(system.selection()[expected_peer], states[peer]);
    system.remove(expected_peer);
    assert_eq!(system.synchronization().unwrap().peer, Synchronization::NO_PEER);
    assert!(system.server_state(t(21.0)).stratum.is_synchronized(), "holdover, not unsynchronized");
}

fn leap_passed_on(start: NtpTimestamp, leaps: [LeapIndicator; 3]) -> LeapIndicator {
    let (system, _, _) = run_from(start, &[0.0, 0.0001, -0.0001], &leaps, 0.0, 20, config());
    system.server_state(start + secs(20.0)).leap
}

#[test]
fn a_leap_is_passed_on_only_when_a_majority_of_the_upstreams_announces_it() {
    use LeapIndicator::{Delete, Insert, NoWarning};
    // 2016-12-31 12:00 UTC, the day of a real leap: NTP 3692217600 - 12 h.
    let last_day = NtpTimestamp::from_parts(3_692_217_600 - 43_200, 0);
    assert_eq!(leap_passed_on(last_day, [Insert, NoWarning, NoWarning]), NoWarning, "one liar among three");
    assert_eq!(leap_passed_on(last_day, [Insert, Insert, NoWarning]), Insert, "two of three");
    assert_eq!(leap_passed_on(last_day, [Insert, Delete, NoWarning]), NoWarning, "no majority for either");
    assert_eq!(leap_passed_on(last_day, [Delete, Delete, Delete]), Delete);
    // Passed on as announced on any day: `LeapSchedule::follow` reads it as
    // a leap only on a month's last day, on UTC (leap::schedule's tests).
    let mid_month = last_day - secs(15.0 * 86_400.0);
    assert_eq!(leap_passed_on(mid_month, [Insert, Insert, Insert]), Insert);
}
