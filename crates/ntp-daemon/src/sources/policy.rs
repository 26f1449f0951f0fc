//! When a pool member has failed for good, which addresses a pool may lend,
//! and how long to wait before asking DNS again. Pure functions of what
//! they are handed, time included.

use std::net::SocketAddr;
use std::time::Duration;

use ntp_proto::packet::KissCode;
use ntp_proto::system::{SelectionState, Unfit};

/// A member that answered none of this many polls in a row is unreachable
/// (the reachability register's eight bits all clear).
pub const UNREACHABLE_POLLS: u32 = 8;
/// A member that stays a falseticker for this many poll intervals is replaced.
pub const FALSETICKER_POLLS: u32 = 8;
/// An address a pool dropped is not lent again for this long.
pub const REJECTED_FOR: Duration = Duration::from_secs(3600);
/// A name that resolves is resolved again this often (a pool then finds
/// addresses that were added; chrony's `refresh` is two weeks).
pub const REFRESH: Duration = Duration::from_secs(3600);
/// First wait before asking DNS again after a failure (then doubling).
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at a name that does not resolve:
/// once DNS answers again, the daemon knows within this.
pub const RETRY_MAX: Duration = Duration::from_secs(32);
/// Longest wait between two resolutions of a pool that resolves but has
/// too few usable addresses to fill its `max-sources`.
pub const SHORT_MAX: Duration = Duration::from_secs(600);

/// Why a source's address was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No answer to [`UNREACHABLE_POLLS`] polls in a row.
    Unreachable,
    /// A falseticker for [`FALSETICKER_POLLS`] poll intervals.
    Falseticker,
    /// It sent a DENY or RSTR kiss-o'-death.
    Refused(KissCode),
    /// It stayed synchronized to us (a timing loop) for
    /// [`FALSETICKER_POLLS`] poll intervals.
    Loop,
    /// Its name now resolves to another address (after it went unreachable).
    AddressChanged,
}

impl Reason {
    /// The kebab-case name, as `/status` and `/metrics` give it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Falseticker => "falseticker",
            Self::Refused(KissCode::Restrict) => "refused-rstr",
            Self::Refused(_) => "refused-deny",
            Self::Loop => "loop",
            Self::AddressChanged => "address-changed",
        }
    }
}

/// What the synchronizer says of one association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Reachability register, bit 0 the latest poll.
    pub reach: u8,
    /// Polls sent to this address since its association was made.
    pub polls: u32,
    /// Poll exponent in force, log2 s.
    pub poll: i8,
    /// Where selection left it.
    pub selection: Option<SelectionState>,
    /// The kiss code that stopped it, if any.
    pub stopped: Option<KissCode>,
}

/// The memory a judgement needs: since when a member has been a falseticker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watch {
    bad_since: Option<(Reason, Duration)>,
}

impl Watch {
    /// Has this member failed for good at `now`? A DENY or RSTR at once;
    /// unreachable once [`UNREACHABLE_POLLS`] polls in a row went
    /// unanswered; a falseticker (or synchronized to us, a loop) once it
    /// stayed one for [`FALSETICKER_POLLS`] poll intervals without a break.
    pub fn judge(&mut self, now: Duration, health: &Health) -> Option<Reason> {
        if let Some(code) = health.stopped.filter(|code| code.is_stop()) {
            return Some(Reason::Refused(code));
        }
        if health.reach == 0 && health.polls >= UNREACHABLE_POLLS {
            return Some(Reason::Unreachable);
        }
        let bad = match health.selection {
            Some(SelectionState::Falseticker) => Reason::Falseticker,
            Some(SelectionState::Unfit(Unfit::Loop)) => Reason::Loop,
            _ => {
                self.bad_since = None;
                return None;
            }
        };
        let since = match self.bad_since {
            Some((reason, since)) if reason == bad => since,
            _ => self.bad_since.insert((bad, now)).1,
        };
        let interval = Duration::from_secs_f64(2f64.powi(i32::from(health.poll.max(0))));
        (now.saturating_sub(since) >= interval * FALSETICKER_POLLS).then_some(bad)
    }
}

/// The wait before attempt `attempt + 1` at a name that failed `attempt`
/// times in a row (1 s, 2 s, 4 s, ... up to `max`).
#[must_use]
pub fn back_off(attempt: u32, first: Duration, max: Duration) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    doubled.min(max)
}

/// Up to `need` of `resolved`, in the resolver's order, none of them
/// `excluded` (in use already, our own, dropped lately) and none twice.
#[must_use]
pub fn pick(resolved: &[SocketAddr], need: usize, excluded: impl Fn(&SocketAddr) -> bool) -> Vec<SocketAddr> {
    let mut picked: Vec<SocketAddr> = Vec::new();
    for address in resolved {
        if picked.len() == need {
            break;
        }
        if !excluded(address) && !picked.contains(address) {
            picked.push(*address);
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Health {
        Health { reach: 0xff, polls: 20, poll: 1, selection: Some(SelectionState::Candidate), stopped: None }
    }

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn a_kiss_to_stop_is_final_at_once_rate_is_not() {
        let mut watch = Watch::default();
        let denied = Health { stopped: Some(KissCode::Deny), ..healthy() };
        assert_eq!(watch.judge(s(0), &denied), Some(Reason::Refused(KissCode::Deny)));
        let rstr = Health { stopped: Some(KissCode::Restrict), ..healthy() };
        assert_eq!(watch.judge(s(0), &rstr).map(Reason::as_str), Some("refused-rstr"));
        assert_eq!(watch.judge(s(0), &Health { stopped: Some(KissCode::Rate), ..healthy() }), None);
    }

    #[test]
    fn unreachable_after_eight_silent_polls_not_before() {
        let mut watch = Watch::default();
        let new = Health { reach: 0, polls: 7, selection: None, ..healthy() };
        assert_eq!(watch.judge(s(0), &new), None, "seven polls: still starting");
        assert_eq!(watch.judge(s(0), &Health { polls: 8, ..new }), Some(Reason::Unreachable));
        assert_eq!(watch.judge(s(0), &Health { reach: 0b1000_0000, polls: 100, ..new }), None);
    }

    #[test]
    fn a_falseticker_is_replaced_only_when_it_stays_one() {
        let mut watch = Watch::default();
        let liar = Health { selection: Some(SelectionState::Falseticker), ..healthy() };
        // Poll 1 (2 s): eight intervals are 16 s.
        assert_eq!(watch.judge(s(100), &liar), None);
        assert_eq!(watch.judge(s(115), &liar), None);
        assert_eq!(watch.judge(s(116), &liar), Some(Reason::Falseticker));
        // A break resets the count.
        let mut watch = Watch::default();
        assert_eq!(watch.judge(s(100), &liar), None);
        assert_eq!(watch.judge(s(110), &healthy()), None);
        assert_eq!(watch.judge(s(120), &liar), None);
        assert_eq!(watch.judge(s(135), &liar), None);
        assert_eq!(watch.judge(s(136), &liar), Some(Reason::Falseticker));
    }

    #[test]
    fn a_member_synchronized_to_us_is_replaced_when_it_stays_so() {
        let mut watch = Watch::default();
        let looped = Health { selection: Some(SelectionState::Unfit(Unfit::Loop)), ..healthy() };
        let liar = Health { selection: Some(SelectionState::Falseticker), ..healthy() };
        assert_eq!(watch.judge(s(0), &looped), None);
        assert_eq!(watch.judge(s(10), &liar), None, "another failure starts its own count");
        assert_eq!(watch.judge(s(20), &looped), None);
        assert_eq!(watch.judge(s(36), &looped).map(Reason::as_str), Some("loop"));
    }

    #[test]
    fn back_off_doubles_up_to_its_ceiling() {
        let waits: Vec<u64> = (1..=8).map(|n| back_off(n, RETRY_FIRST, RETRY_MAX).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(back_off(u32::MAX, RETRY_FIRST, RETRY_MAX), RETRY_MAX);
    }

    #[test]
    fn pick_skips_the_excluded_and_duplicates_in_resolver_order() {
        let a = |last: u8| SocketAddr::from(([127, 0, 0, last], 123));
        let resolved = [a(1), a(2), a(2), a(3), a(4), a(5)];
        assert_eq!(pick(&resolved, 3, |x| *x == a(1)), [a(2), a(3), a(4)]);
        assert_eq!(pick(&resolved, 10, |_| false), [a(1), a(2), a(3), a(4), a(5)]);
        assert!(pick(&resolved, 0, |_| false).is_empty());
    }
}
