//! The leap a server is taking, and what it does to its two readings of
//! time: the time it serves, and the time it measures its upstreams with.
//!
//! A [`LeapSchedule`] is handed the server's *continuous* clock (its
//! disciplined clock, which never steps for a leap) and keeps the sum of
//! the leaps it has taken, so that continuous time plus that sum is the
//! *raw* time of [`LeapMode`] (UTC before the pending leap). Nothing here
//! steps a clock: a leap is a change of mapping, so no sample an
//! association holds and no interval the discipline measures is disturbed.
//!
//! - **Served time** follows the mode: stepped as the kernel does, or
//!   smeared.
//! - **Measured time** (T1 and T4 of the exchanges with upstreams) is
//!   stepped at midnight whatever the mode, as the upstreams' time is:
//!   offsets stay continuous across the leap, and the discipline keeps
//!   following the upstreams' UTC while a smearing server serves its smear
//!   on top.

use super::{Leap, LeapKind, LeapMode};
use crate::packet::LeapIndicator;
use crate::responder::ServerState;
use crate::time::{NtpDuration, NtpTimestamp};

/// The pending leap, if any, and the leaps already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeapSchedule {
    mode: LeapMode,
    /// UTC minus continuous time from the leaps already taken and settled.
    taken: NtpDuration,
    pending: Option<Leap>,
    /// The last leap settled, for [`LeapSchedule::near_leap`]: a deletion
    /// settles at the very instant measured time steps.
    settled: Option<Leap>,
}

/// What [`LeapSchedule::expect`] did with the leap it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Nothing changed.
    Unchanged,
    /// This leap is now pending.
    Scheduled(Leap),
    /// The pending leap was withdrawn before it began.
    Withdrawn(Leap),
    /// The pending leap has begun (or is under way) and stays, whatever the
    /// source now says.
    Committed(Leap),
    /// This leap is now pending but its smear window had already begun:
    /// served time joins the smear where it stands, a jump of `jump`.
    ScheduledLate {
        /// The leap.
        leap: Leap,
        /// Served time after minus before.
        jump: NtpDuration,
    },
}

impl LeapSchedule {
    /// No leap pending or taken, serving in `mode`.
    #[must_use]
    pub const fn new(mode: LeapMode) -> Self {
        Self { mode, taken: NtpDuration::ZERO, pending: None, settled: None }
    }

    /// How leaps are served.
    #[must_use]
    pub const fn mode(&self) -> LeapMode {
        self.mode
    }

    /// The leap to come or under way.
    #[must_use]
    pub const fn pending(&self) -> Option<Leap> {
        self.pending
    }

    /// UTC minus continuous time from the leaps taken and settled.
    #[must_use]
    pub const fn taken(&self) -> NtpDuration {
        self.taken
    }

    /// UTC as it stands before the pending leap: continuous time plus the
    /// leaps taken (the *raw* time [`LeapMode`] is handed).
    #[must_use]
    pub fn unleaped(&self, continuous: NtpTimestamp) -> NtpTimestamp {
        continuous + self.taken
    }

    /// The time served at continuous time `continuous`.
    #[must_use]
    pub fn served(&self, continuous: NtpTimestamp) -> NtpTimestamp {
        let raw = self.unleaped(continuous);
        self.pending.map_or(raw, |leap| self.mode.served_time(leap, raw))
    }

    /// What measured time differs from continuous time by at `continuous`:
    /// the leaps taken, and the pending one stepped at its midnight as an
    /// upstream that applies leaps steps (whatever our own mode).
    #[must_use]
    pub fn measured_offset(&self, continuous: NtpTimestamp) -> NtpDuration {
        let raw = self.unleaped(continuous);
        self.taken + self.pending.map_or(NtpDuration::ZERO, |leap| LeapMode::Step.offset(leap, raw))
    }

    /// The leap indicator to send at `continuous`, for a synchronized
    /// server: the pending leap while the mode announces it.
    #[must_use]
    pub fn indicator(&self, continuous: NtpTimestamp) -> LeapIndicator {
        let raw = self.unleaped(continuous);
        self.pending.map_or(LeapIndicator::NoWarning, |leap| self.mode.indicator(leap, raw))
    }

    /// True while a smear is partly applied: served time is not UTC.
    #[must_use]
    pub fn is_smearing(&self, continuous: NtpTimestamp) -> bool {
        let raw = self.unleaped(continuous);
        self.pending.is_some_and(|leap| self.mode.is_smearing(leap, raw))
    }

    /// True within `margin` plus a second either side of the midnight of
    /// the pending leap, or of the one last settled: an exchange then may
    /// straddle our step or the upstream's, and is not to be trusted.
    #[must_use]
    pub fn near_leap(&self, continuous: NtpTimestamp, margin: NtpDuration) -> bool {
        let reach = margin + NtpDuration::ONE_SECOND;
        let near = |leap: Leap, raw: NtpTimestamp| {
            let since = raw - leap.at;
            since > -reach && since < reach
        };
        let raw = self.unleaped(continuous);
        // A settled leap is in `taken`: its midnight is where UTC was before it.
        let settled = self.settled.is_some_and(|leap| near(leap, raw - leap.kind.correction()));
        settled || self.pending.is_some_and(|leap| near(leap, raw))
    }

    /// Takes the leap the upstreams' majority or the leap file expects at
    /// `continuous` (`None`: no leap). Until the pending leap begins to
    /// change served time it follows what it is handed, a withdrawal
    /// included; from then on it stays until [`settle`](Self::settle). A
    /// leap whose midnight has passed is never scheduled.
    pub fn expect(&mut self, leap: Option<Leap>, continuous: NtpTimestamp) -> Expectation {
        let raw = self.unleaped(continuous);
        if let Some(pending) = self.pending {
            if raw - self.mode.begins_at(pending) >= NtpDuration::ZERO {
                return if leap == Some(pending) { Expectation::Unchanged } else { Expectation::Committed(pending) };
            }
        }
        let leap = leap.filter(|leap| leap.at - raw > NtpDuration::ZERO);
        if leap == self.pending {
            return Expectation::Unchanged;
        }
        let before = self.served(continuous);
        let withdrawn = self.pending;
        self.pending = leap;
        match (leap, withdrawn) {
            (Some(leap), _) => {
                let jump = self.served(continuous) - before;
                if jump == NtpDuration::ZERO {
                    Expectation::Scheduled(leap)
                } else {
                    Expectation::ScheduledLate { leap, jump }
                }
            }
            (None, Some(withdrawn)) => Expectation::Withdrawn(withdrawn),
            (None, None) => Expectation::Unchanged,
        }
    }

    /// Schedules the leap an upstream majority announces: `announced` is
    /// the indicator the system process passed on (see
    /// `system::System`), read as the leap at the end of today, if today
    /// (in UTC, the leaps taken counted) is a month's last day.
    /// `Unsynchronized` is no news: a server that lost its upstreams for a
    /// while keeps the leap it was told of.
    pub fn follow(&mut self, announced: LeapIndicator, continuous: NtpTimestamp) -> Expectation {
        if announced == LeapIndicator::Unsynchronized {
            return Expectation::Unchanged;
        }
        let today = self.unleaped(continuous);
        let leap = LeapKind::from_indicator(announced).and_then(|kind| Leap::ending_today(today, kind));
        self.expect(leap, continuous)
    }

    /// What to advertise at `continuous` given what the system process (or
    /// a primary's configuration) says: the leap indicator this schedule
    /// announces, unless unsynchronized, and the reference time as served.
    #[must_use]
    pub fn advertised(&self, state: ServerState, continuous: NtpTimestamp) -> ServerState {
        let leap = match state.leap {
            LeapIndicator::Unsynchronized => LeapIndicator::Unsynchronized,
            _ => self.indicator(continuous),
        };
        ServerState { leap, reference_time: self.served(state.reference_time), ..state }
    }

    /// Once the pending leap is fully applied at `continuous`, adds it to
    /// the leaps taken and forgets it; served and measured time do not
    /// change. Returns the leap settled.
    pub fn settle(&mut self, continuous: NtpTimestamp) -> Option<Leap> {
        let leap = self.pending?;
        if self.unleaped(continuous) - self.mode.settled_from(leap) < NtpDuration::ZERO {
            return None;
        }
        self.taken += leap.kind.correction();
        self.pending = None;
        self.settled = Some(leap);
        Some(leap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leap::{LeapKind, LeapSmear};

    const JAN_2017: u32 = 3_692_217_600;

    fn at(seconds: f64) -> NtpTimestamp {
        NtpTimestamp::from_parts(JAN_2017, 0) + NtpDuration::from_seconds_f64(seconds)
    }

    fn insert() -> Leap {
        Leap { at: at(0.0), kind: LeapKind::Insert }
    }

    fn secs(d: NtpDuration) -> f64 {
        d.to_seconds_f64()
    }

    #[test]
    fn a_step_is_served_and_measured_at_midnight_then_settled() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        assert_eq!(schedule.expect(Some(insert()), at(-10.0)), Expectation::Scheduled(insert()));
        assert_eq!(schedule.indicator(at(-10.0)), LeapIndicator::Insert);
        assert_eq!(schedule.served(at(-0.5)), at(-0.5));
        assert_eq!(schedule.served(at(0.5)), at(-0.5), "23:59:59 served twice");
        assert_eq!(schedule.indicator(at(0.5)), LeapIndicator::Insert, "through the repeated second");
        assert_eq!(secs(schedule.measured_offset(at(-0.5))), 0.0);
        assert_eq!(secs(schedule.measured_offset(at(0.0))), -1.0, "measured as the upstreams step");
        assert_eq!(schedule.settle(at(0.5)), None);
        assert_eq!(schedule.settle(at(1.0)), Some(insert()));
        assert_eq!(schedule.served(at(1.0)), at(0.0), "settling changes nothing served");
        assert_eq!(secs(schedule.measured_offset(at(1.0))), -1.0, "nor measured");
        assert_eq!(schedule.indicator(at(1.0)), LeapIndicator::NoWarning);
        assert_eq!(schedule.pending(), None);
    }

    #[test]
    fn a_leap_is_withdrawn_until_it_begins_then_kept() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        schedule.expect(Some(insert()), at(-100.0));
        assert_eq!(schedule.expect(None, at(-50.0)), Expectation::Withdrawn(insert()));
        schedule.expect(Some(insert()), at(-40.0));
        assert_eq!(schedule.expect(None, at(-0.5)), Expectation::Committed(insert()));
        assert_eq!(schedule.pending(), Some(insert()));
        assert_eq!(schedule.expect(None, at(0.0)), Expectation::Committed(insert()));
    }

    #[test]
    fn a_past_midnight_is_never_scheduled() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        assert_eq!(schedule.expect(Some(insert()), at(0.0)), Expectation::Unchanged);
        assert_eq!(schedule.pending(), None);
    }

    #[test]
    fn a_smear_serves_slow_but_measures_a_step() {
        let smear = LeapMode::Smear(LeapSmear::new(100).unwrap());
        let mut schedule = LeapSchedule::new(smear);
        assert_eq!(schedule.expect(Some(insert()), at(-60.0)), Expectation::Scheduled(insert()));
        assert_eq!(schedule.indicator(at(-60.0)), LeapIndicator::NoWarning, "a smearing server never announces");
        assert!(!schedule.is_smearing(at(-50.0)));
        assert!(schedule.is_smearing(at(0.0)));
        let behind = secs(schedule.served(at(0.0)) - at(0.0));
        assert!((behind + 50.0 / 101.0).abs() < 1e-9, "{behind}");
        assert_eq!(secs(schedule.measured_offset(at(0.0))), -1.0);
        assert_eq!(schedule.expect(None, at(-10.0)), Expectation::Committed(insert()));
        assert_eq!(schedule.settle(at(50.0)), None);
        assert_eq!(schedule.settle(at(51.0)), Some(insert()));
        assert_eq!(schedule.served(at(51.0)), at(50.0));
        assert!(!schedule.is_smearing(at(51.0)));
    }

    #[test]
    fn a_smear_learned_late_says_how_far_served_time_jumps() {
        let smear = LeapMode::Smear(LeapSmear::new(100).unwrap());
        let mut schedule = LeapSchedule::new(smear);
        match schedule.expect(Some(insert()), at(-25.0)) {
            Expectation::ScheduledLate { jump, .. } => assert!((secs(jump) + 25.0 / 101.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_upstreams_indicator_is_followed_on_a_last_day_only() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        let day_before = at(-86_400.0 - 10.0);
        assert_eq!(schedule.follow(LeapIndicator::Insert, day_before), Expectation::Unchanged);
        assert_eq!(schedule.follow(LeapIndicator::Insert, at(-10.0)), Expectation::Scheduled(insert()));
        let state = ServerState::primary(
            crate::packet::Stratum(2),
            -20,
            crate::packet::ReferenceId::from_code("LOCL").unwrap(),
            at(-20.0),
        );
        let advertised = schedule.advertised(state, at(-10.0));
        assert_eq!(advertised.leap, LeapIndicator::Insert);
        let unsynchronized = ServerState { leap: LeapIndicator::Unsynchronized, ..state };
        assert_eq!(schedule.advertised(unsynchronized, at(-10.0)).leap, LeapIndicator::Unsynchronized);
        assert_eq!(schedule.advertised(state, at(2.0)).reference_time, at(-20.0));
    }

    #[test]
    fn an_unsynchronized_spell_keeps_the_leap_and_a_day_is_read_in_utc() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        schedule.follow(LeapIndicator::Insert, at(-100.0));
        assert_eq!(schedule.follow(LeapIndicator::Unsynchronized, at(-50.0)), Expectation::Unchanged);
        assert_eq!(schedule.pending(), Some(insert()));
        assert_eq!(schedule.follow(LeapIndicator::NoWarning, at(-40.0)), Expectation::Withdrawn(insert()));
        // Two leaps taken: continuous time runs two seconds ahead of UTC, and
        // reads the next day at UTC 23:59:58; the day is still the last one.
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        let earlier = Leap { at: at(-184.0 * 86_400.0), kind: LeapKind::Insert };
        for leap in [Leap { at: at(-365.0 * 86_400.0), ..earlier }, earlier] {
            schedule.expect(Some(leap), leap.at - NtpDuration::from_seconds(10) - schedule.taken());
            schedule.settle(leap.at + NtpDuration::from_seconds(5) - schedule.taken());
        }
        assert_eq!(secs(schedule.taken()), -2.0);
        let continuous = |utc: f64| at(utc) + NtpDuration::from_seconds(2);
        assert_eq!(schedule.follow(LeapIndicator::Insert, continuous(-10.0)), Expectation::Scheduled(insert()));
        assert_eq!(schedule.follow(LeapIndicator::Insert, continuous(-1.5)), Expectation::Unchanged);
        assert_eq!(schedule.served(continuous(0.5)), at(-0.5), "23:59:59 served twice, in UTC");
    }

    #[test]
    fn the_guard_holds_across_a_deletion_settled_at_its_step() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        let delete = Leap { at: at(0.0), kind: LeapKind::Delete };
        schedule.expect(Some(delete), at(-10.0));
        assert_eq!(schedule.settle(at(-0.99)), Some(delete));
        // Continuous -0.99 is UTC +0.01 now; a second and a half later:
        assert!(schedule.near_leap(at(0.5), NtpDuration::ZERO));
        assert!(!schedule.near_leap(at(1.5), NtpDuration::ZERO));
    }

    #[test]
    fn leaps_taken_accumulate() {
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        schedule.expect(Some(insert()), at(-5.0));
        schedule.settle(at(2.0));
        // Continuous time now runs a second ahead of UTC: the next leap,
        // six months on, is at UTC midnight, a second later continuous.
        let next = Leap { at: at(181.0 * 86_400.0), kind: LeapKind::Delete };
        schedule.expect(Some(next), at(181.0 * 86_400.0 - 10.0));
        assert_eq!(schedule.served(at(181.0 * 86_400.0 - 0.5)), at(181.0 * 86_400.0 - 1.5));
        assert_eq!(schedule.served(at(181.0 * 86_400.0)), at(181.0 * 86_400.0), "23:59:59 skipped");
        assert!(schedule.near_leap(at(181.0 * 86_400.0 + 1.0), NtpDuration::ZERO));
        assert!(!schedule.near_leap(at(181.0 * 86_400.0 + 3.0), NtpDuration::from_seconds(1)));
        assert_eq!(schedule.settle(at(181.0 * 86_400.0 + 1.0)), Some(next));
        assert_eq!(secs(schedule.taken()), 0.0);
    }
}
