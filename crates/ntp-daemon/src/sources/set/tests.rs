//! The source set handed DNS answers and association health by hand.

use std::net::SocketAddr;
use std::time::Duration;

use ntp_proto::packet::KissCode;
use ntp_proto::system::SelectionState;

use super::*;

fn a(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], 12300))
}

fn s(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn pool(name: &str) -> Spec {
    Spec { name: name.into(), kind: Kind::Pool, xleave: false }
}

fn server(name: &str) -> Spec {
    Spec { name: name.into(), kind: Kind::Server, xleave: false }
}

fn not_own(_: &SocketAddr) -> bool {
    false
}

fn added(changes: &[Change]) -> Vec<SocketAddr> {
    changes.iter().filter_map(|c| if let Change::Add { address, .. } = c { Some(*address) } else { None }).collect()
}

fn healthy() -> Health {
    Health { reach: 0xff, polls: 20, poll: 0, selection: Some(SelectionState::Candidate), stopped: None }
}

#[test]
fn a_pool_of_six_lends_four_never_our_own() {
    let mut set = SourceSet::new(4);
    let id = set.add(pool("pool.test"), Origin::Config, s(0)).unwrap();
    assert_eq!(set.due(s(0)), [(id, pool("pool.test"))]);
    assert!(set.due(s(0)).is_empty(), "in flight");
    let six: Vec<SocketAddr> = (1..=6).map(a).collect();
    let own = |x: &SocketAddr| *x == a(2);
    let (changes, log) = set.resolved(id, s(0), Ok(six), &own);
    assert_eq!(added(&changes), [a(1), a(3), a(4), a(5)]);
    assert_eq!(log, Some(ResolveLog::Resolved { addresses: 6, failures: 0 }));
    // A server whose only address the pool lends already has none of its own.
    let other = set.add(server("same.test"), Origin::Runtime, s(1)).unwrap();
    let _ = set.due(s(1));
    let (changes, _) = set.resolved(other, s(1), Ok(vec![a(1)]), &not_own);
    assert!(changes.is_empty());
    assert!(set.sources()[1].error.as_deref().is_some_and(|e| e.contains("in use")));
    assert!(set.remove("same.test").unwrap().is_empty());
    assert_eq!(set.next_due(), Some(REFRESH), "full: resolved again at the refresh");
    assert_eq!(set.unresolved(), 0);
}

#[test]
fn a_failed_member_is_replaced_by_a_fresh_address_not_itself() {
    let mut set = SourceSet::new(4);
    let id = set.add(pool("pool.test"), Origin::Config, s(0)).unwrap();
    let _ = set.due(s(0));
    let six: Vec<SocketAddr> = (1..=6).map(a).collect();
    let (changes, _) = set.resolved(id, s(0), Ok(six.clone()), &not_own);
    let members: Vec<(MemberId, SocketAddr)> = changes
        .iter()
        .filter_map(|c| if let Change::Add { member, address, .. } = c { Some((*member, *address)) } else { None })
        .collect();
    let (dead, dead_address) = members[1];
    let (liar, liar_address) = members[2];
    let health = |m: MemberId| {
        Some(if m == dead {
            Health { reach: 0, ..healthy() }
        } else if m == liar {
            Health { selection: Some(SelectionState::Falseticker), ..healthy() }
        } else {
            healthy()
        })
    };
    let removed = set.judge(s(10), &health);
    assert_eq!(
        removed,
        [Change::Remove { member: dead, reason: Some(Reason::Unreachable) }],
        "the liar is not replaced yet"
    );
    assert_eq!(set.due(s(10)).len(), 1, "a replacement is asked for at once");
    let (changes, _) = set.resolved(id, s(10), Ok(six.clone()), &not_own);
    assert_eq!(added(&changes), [a(5)], "never an address in use, never the dropped one");
    let removed = set.judge(s(18), &health);
    assert_eq!(
        removed,
        [Change::Remove { member: liar, reason: Some(Reason::Falseticker) }],
        "a falseticker for eight polls"
    );
    let _ = set.due(s(18));
    let (changes, _) = set.resolved(id, s(18), Ok(six), &not_own);
    assert_eq!(added(&changes), [a(6)]);
    let reasons: Vec<(SocketAddr, &str)> = set.replacements().map(|r| (r.address, r.reason.as_str())).collect();
    assert_eq!(reasons, [(dead_address, "unreachable"), (liar_address, "falseticker")]);
    assert_eq!(set.replacement_counts().len(), 2);
}

#[test]
fn a_refusing_member_is_dropped_at_once_and_the_pool_waits_when_short() {
    let mut set = SourceSet::new(2);
    let id = set.add(pool("p"), Origin::Config, s(0)).unwrap();
    let _ = set.due(s(0));
    let (changes, _) = set.resolved(id, s(0), Ok(vec![a(1), a(2)]), &not_own);
    let Change::Add { member: first, .. } = changes[0] else { panic!() };
    let health =
        |m: MemberId| Some(if m == first { Health { stopped: Some(KissCode::Deny), ..healthy() } } else { healthy() });
    assert_eq!(
        set.judge(s(1), &health),
        [Change::Remove { member: first, reason: Some(Reason::Refused(KissCode::Deny)) }]
    );
    let _ = set.due(s(1));
    let (changes, _) = set.resolved(id, s(1), Ok(vec![a(1), a(2)]), &not_own);
    assert!(changes.is_empty(), "the only other address is in use already");
    assert_eq!(set.next_due(), Some(s(2)), "short: asked again soon, with back-off");
}

#[test]
fn a_name_that_does_not_resolve_is_retried_with_back_off_and_logged_once() {
    let mut set = SourceSet::new(4);
    let id = set.add(server("later.test:123"), Origin::Config, s(0)).unwrap();
    assert_eq!(set.unresolved(), 1, "it counts as configured all the same");
    let mut now = s(0);
    let mut logs = Vec::new();
    for _ in 0..7 {
        assert_eq!(set.due(now).len(), 1, "due at {now:?}");
        let (changes, log) = set.resolved(id, now, Err("no such name".into()), &not_own);
        assert!(changes.is_empty());
        logs.push(log.unwrap());
        now = set.next_due().unwrap();
    }
    assert!(matches!(logs[0], ResolveLog::FirstFailure { .. }));
    assert!(logs[1..].iter().all(|l| matches!(l, ResolveLog::Again { .. })));
    assert_eq!(now, s(1 + 2 + 4 + 8 + 16 + 32 + 32));
    let _ = set.due(now);
    let (changes, log) = set.resolved(id, now, Ok(vec![a(9)]), &not_own);
    assert_eq!(added(&changes), [a(9)]);
    assert_eq!(log, Some(ResolveLog::Resolved { addresses: 1, failures: 7 }));
    assert_eq!(set.unresolved(), 0);
    assert!(set.sources()[0].error.is_none());
}

#[test]
fn an_unreachable_server_follows_its_name_to_a_new_address() {
    let mut set = SourceSet::new(4);
    let id = set.add(server("moving.test"), Origin::Config, s(0)).unwrap();
    let _ = set.due(s(0));
    let (changes, _) = set.resolved(id, s(0), Ok(vec![a(1)]), &not_own);
    let Change::Add { member, .. } = changes[0] else { panic!() };
    let down = |_: MemberId| Some(Health { reach: 0, ..healthy() });
    assert!(set.judge(s(20), &down).is_empty(), "a server is not dropped, its name is resolved again");
    assert_eq!(set.due(s(20)).len(), 1);
    let (changes, _) = set.resolved(id, s(20), Ok(vec![a(1)]), &not_own);
    assert!(changes.is_empty(), "same address: kept");
    assert!(set.judge(s(21), &down).is_empty());
    assert_eq!(set.next_due(), Some(s(22)), "then with back-off");
    let _ = set.due(s(22));
    let (changes, _) = set.resolved(id, s(22), Ok(vec![a(2)]), &not_own);
    assert_eq!(changes[0], Change::Remove { member, reason: Some(Reason::AddressChanged) });
    assert!(
        matches!(changes[1], Change::Add { source, member: new, address } if source == id && new != member && address == a(2))
    );
    assert_eq!(set.replacements().next().map(|r| r.reason), Some(Reason::AddressChanged));
    // A healthy server with a changed name stays where it is.
    let (changes, _) = set.resolved(id, s(30), Ok(vec![a(3)]), &not_own);
    assert!(changes.is_empty());
}

#[test]
fn runtime_sources_are_added_once_and_removed_with_their_members() {
    let mut set = SourceSet::new(3);
    let id = set.add(pool("p"), Origin::Runtime, s(0)).unwrap();
    assert_eq!(set.add(pool("p"), Origin::Runtime, s(0)), Err(SetError::Duplicate("p".into())));
    let _ = set.due(s(0));
    let (changes, _) = set.resolved(id, s(0), Ok(vec![a(1), a(2)]), &not_own);
    assert_eq!(changes.len(), 2);
    let removed = set.remove("p").unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(set.remove("p"), Err(SetError::Unknown("p".into())));
    assert_eq!(set.resolved(id, s(1), Ok(vec![a(3)]), &not_own), (vec![], None), "an answer for a removed source");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One step of a run: DNS answers for a source with some of eight
    /// addresses (or fails), or every member is judged with some health.
    #[derive(Debug, Clone)]
    enum Step {
        Answer { source: usize, addresses: Vec<u8>, fails: bool },
        Judge { reach: u8, polls: u32, falseticker: bool, denied: bool, seconds: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize, proptest::collection::vec(1..=8u8, 0..10), any::<bool>())
                .prop_map(|(source, addresses, fails)| Step::Answer { source, addresses, fails }),
            (any::<u8>(), 0..20u32, any::<bool>(), any::<bool>(), 0..30u64).prop_map(
                |(reach, polls, falseticker, denied, seconds)| Step::Judge {
                    reach,
                    polls,
                    falseticker,
                    denied,
                    seconds
                }
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever DNS says and however the members fare: no address is
        /// lent twice, our own address never, no source lends more than it
        /// may, and the changes handed out add exactly the members it holds.
        #[test]
        fn the_set_never_lends_an_address_twice_nor_our_own(steps in proptest::collection::vec(step(), 1..60)) {
            let mut set = SourceSet::new(3);
            let ids = [
                set.add(pool("a"), Origin::Config, s(0)).unwrap(),
                set.add(pool("b"), Origin::Config, s(0)).unwrap(),
                set.add(server("c"), Origin::Config, s(0)).unwrap(),
            ];
            let own = |x: &SocketAddr| *x == a(4);
            let mut polled: Vec<MemberId> = Vec::new();
            let mut now = s(0);
            for step in steps {
                let changes = match step {
                    Step::Answer { source, addresses, fails } => {
                        let _ = set.due(now + s(100_000));
                        let result = if fails { Err("down".to_string()) } else { Ok(addresses.into_iter().map(a).collect()) };
                        set.resolved(ids[source], now, result, &own).0
                    }
                    Step::Judge { reach, polls, falseticker, denied, seconds } => {
                        now += s(seconds);
                        let health = Health {
                            reach,
                            polls,
                            poll: 0,
                            selection: Some(if falseticker { SelectionState::Falseticker } else { SelectionState::Candidate }),
                            stopped: denied.then_some(KissCode::Deny),
                        };
                        set.judge(now, &|_| Some(health))
                    }
                };
                for change in changes {
                    match change {
                        Change::Add { member, .. } => {
                            prop_assert!(!polled.contains(&member));
                            polled.push(member);
                        }
                        Change::Remove { member, .. } => {
                            prop_assert!(polled.contains(&member));
                            polled.retain(|m| *m != member);
                        }
                    }
                }
                let mut lent: Vec<SocketAddr> = Vec::new();
                let mut held: Vec<MemberId> = Vec::new();
                for source in set.sources() {
                    prop_assert!(source.members.len() <= source.max);
                    for member in &source.members {
                        prop_assert!(!own(&member.address));
                        prop_assert!(!lent.contains(&member.address), "{} lent twice", member.address);
                        lent.push(member.address);
                        held.push(member.id);
                    }
                }
                held.sort_unstable();
                let mut expected = polled.clone();
                expected.sort_unstable();
                prop_assert_eq!(held, expected);
            }
        }
    }
}
