//! The daemon's clock: a virtual clock over the host's system clock, shared
//! lock-free between the serving threads and (later) the discipline.
//!
//! Replies are built from a [`ClockSnapshot`]: the daemon's clock (a
//! [`DisciplinedClock`]: the raw clock, system time plus the configured
//! offset and drift, under the discipline's correction), the leap it is
//! taking (a [`LeapSchedule`]) and what the server advertises about its
//! synchronisation.
//!
//! The snapshot is swapped as a whole (arc-swap), so a serving thread reads
//! a consistent one without taking a lock, and the discipline changes it
//! with [`SharedClock::update`]. The host's clock is only ever read.
//!
//! Five readings of time, each with its use:
//! - *system*: the host's clock, read and never written;
//! - *raw*: system time plus the configured error; the discipline's
//!   correction maps it on, and its intervals are the discipline's;
//! - *continuous*: the disciplined clock, which never steps for a leap;
//! - *served*: continuous time through the leap schedule (stepped or
//!   smeared): what clients get;
//! - *measured*: raw time shifted by the leaps as an upstream that steps
//!   sees them: what T1 and T4 of the exchanges with upstreams are read from.

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use ntp_proto::clock::{Clock, DisciplinedClock};
use ntp_proto::leap::LeapSchedule;
use ntp_proto::responder::ServerState;
use ntp_proto::NtpTimestamp;
use ntp_udp::SystemClock;

/// What replies are built from: the virtual clock and what we advertise,
/// swapped atomically so the fast path takes no lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSnapshot {
    /// Maps system time to raw time (the error the daemon was started
    /// with) and raw time to served time (the discipline's correction).
    pub clock: DisciplinedClock,
    /// Stratum, reference ID, root delay and dispersion, reference time
    /// (continuous), leap (as decided: the schedule says what is sent).
    pub state: ServerState,
    /// The leap pending or under way, and the leaps taken.
    pub leap: LeapSchedule,
}

impl ClockSnapshot {
    /// Continuous time at a system time: the disciplined clock.
    #[must_use]
    pub fn continuous_at(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.clock.time_at(system)
    }

    /// Served time at a system time: what T2 and T3 carry.
    #[must_use]
    pub fn served_at(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.leap.served(self.clock.time_at(system))
    }

    /// Measured time at a system time: the raw clock shifted by the leaps
    /// as upstreams that step see them (T1 and T4 of our exchanges).
    #[must_use]
    pub fn measured_at(&self, system: NtpTimestamp) -> NtpTimestamp {
        let continuous = self.clock.time_at(system);
        self.clock.raw_at(system) + self.leap.measured_offset(continuous)
    }

    /// What replies advertise at a system time: the state, with the leap
    /// indicator the schedule announces and the reference time as served.
    #[must_use]
    pub fn advertised_at(&self, system: NtpTimestamp) -> ServerState {
        self.leap.advertised(self.state, self.clock.time_at(system))
    }
}

/// The server's clock, shared by every serving thread and the discipline.
#[derive(Debug)]
pub struct SharedClock {
    snapshot: ArcSwap<ClockSnapshot>,
    /// Serialises writers only; readers never touch it.
    writer: Mutex<()>,
}

impl SharedClock {
    /// A clock starting from `snapshot`.
    #[must_use]
    pub fn new(snapshot: ClockSnapshot) -> Self {
        Self { snapshot: ArcSwap::from_pointee(snapshot), writer: Mutex::new(()) }
    }

    /// The current clock and state; cheap, lock-free, and consistent.
    pub fn snapshot(&self) -> Guard<Arc<ClockSnapshot>> {
        self.snapshot.load()
    }

    /// The host's clock (CLOCK_REALTIME), read and never written.
    #[must_use]
    pub fn system_now() -> NtpTimestamp {
        SystemClock.now()
    }

    /// The server's time now (what it serves).
    #[must_use]
    pub fn now(&self) -> NtpTimestamp {
        self.snapshot().served_at(Self::system_now())
    }

    /// The disciplined clock now, before the leap schedule.
    #[must_use]
    pub fn continuous_now(&self) -> NtpTimestamp {
        self.snapshot().continuous_at(Self::system_now())
    }

    /// The raw clock now: system time plus the oscillator error, before any
    /// correction. What a discipline measures its upstreams against.
    #[must_use]
    pub fn raw_now(&self) -> NtpTimestamp {
        self.snapshot().clock.raw_at(Self::system_now())
    }

    /// Copy, modify, store: how the discipline steps or slews the clock and
    /// changes what is advertised. Writers take turns; readers see the old
    /// snapshot or the new one, never a mix.
    pub fn update(&self, f: impl FnOnce(&mut ClockSnapshot)) {
        let _turn = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = **self.snapshot.load();
        f(&mut next);
        self.snapshot.store(Arc::new(next));
    }
}

/// The clock exchanges with upstreams read T1 and T4 from (see
/// `ntp_proto::synchronizer`): the raw clock under a [`SharedClock`], the
/// system clock plus the error the daemon was started with, before any
/// correction, shifted by the leaps as the upstreams step for them (see
/// [`ClockSnapshot::measured_at`]).
#[derive(Debug, Clone, Copy)]
pub struct MeasuringClock<'a>(pub &'a SharedClock);

impl Clock for MeasuringClock<'_> {
    fn now(&self) -> NtpTimestamp {
        self.at_system_time(SharedClock::system_now())
    }

    fn at_system_time(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.0.snapshot().measured_at(system)
    }
}

impl Clock for SharedClock {
    fn now(&self) -> NtpTimestamp {
        SharedClock::now(self)
    }

    fn at_system_time(&self, system: NtpTimestamp) -> NtpTimestamp {
        self.snapshot().served_at(system)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::packet::{ReferenceId, Stratum};
    use ntp_proto::NtpDuration;

    fn snapshot(offset: f64) -> ClockSnapshot {
        ClockSnapshot {
            clock: DisciplinedClock::new(SharedClock::system_now(), NtpDuration::from_seconds_f64(offset), 0.0),
            state: ServerState::primary(Stratum(1), -20, ReferenceId(*b"LOCL"), NtpTimestamp::ZERO),
            leap: LeapSchedule::new(ntp_proto::leap::LeapMode::Step),
        }
    }

    #[test]
    fn virtual_time_is_system_time_plus_the_offset() {
        let clock = SharedClock::new(snapshot(300.0));
        let offset = (clock.now() - SharedClock::system_now()).to_seconds_f64();
        assert!((offset - 300.0).abs() < 0.1, "offset {offset}");
        let system = SharedClock::system_now();
        assert_eq!(clock.at_system_time(system) - system, NtpDuration::from_seconds(300));
    }

    #[test]
    fn update_swaps_clock_and_state_together() {
        let clock = SharedClock::new(snapshot(0.0));
        clock.update(|s| {
            let raw = s.clock.raw_at(SharedClock::system_now());
            s.clock.correction.step(raw, NtpDuration::from_seconds(-5));
            s.state.stratum = Stratum(3);
        });
        let now = clock.snapshot();
        assert_eq!(now.state.stratum, Stratum(3));
        let system = SharedClock::system_now();
        let offset = (now.clock.time_at(system) - system).to_seconds_f64();
        assert!((offset + 5.0).abs() < 0.1, "offset {offset}");
        assert!((clock.raw_now() - SharedClock::system_now()).to_seconds_f64().abs() < 0.1, "raw clock untouched");
    }
}
