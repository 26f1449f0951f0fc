//! The client half of a daemon as one sans-IO object: its upstream
//! associations, the system process and the disciplined clock they steer.
//!
//! The daemon drives it with sockets and timers, the simulator with a
//! discrete-event queue; both hand it the time and carry out what it asks
//! (when to poll whom). All times it is given and gives back are *raw*
//! clock times (see [`crate::clock::DisciplinedClock`]).

use crate::association::{Association, AssociationKind, PollConfig, ServerInfo};
use crate::clock::DisciplinedClock;
use crate::exchange::{validate_reply, ReplyError, Sample, Timestamps, PHI};
use crate::packet::{Header, LeapIndicator, ReferenceId, Stratum};
use crate::responder::ServerState;
use crate::system::{PeerView, SelectionState, Synchronization, System, SystemConfig};
use crate::time::{NtpDuration, NtpShort, NtpTimestamp};

/// What became of a reply.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub enum ReplyOutcome {
    /// The reply was refused (kiss, unsynchronized, bogus origin...).
    Rejected(ReplyError),
    /// The sample was taken; `Some` when it also updated the clock.
    Accepted(Option<Synchronization>),
}

/// The upstream side of a daemon.
///
/// Associations are numbered by their position: the one [`Synchronizer::add`]
/// returns stays valid until an association before it is removed, when
/// those after it move down by one (a caller that keeps its own list in
/// the same order removes the same position from it).
#[derive(Debug, Clone)]
pub struct Synchronizer {
    associations: Vec<(ReferenceId, Association)>,
    system: System,
    poll: PollConfig,
    precision: i8,
}

impl Synchronizer {
    /// One association per upstream, each named by the reference ID we
    /// advertise when it is our system peer; first polls due at `raw_now`.
    #[must_use]
    pub fn new(config: SystemConfig, poll: PollConfig, upstreams: &[ReferenceId], raw_now: NtpTimestamp) -> Self {
        Self {
            associations: upstreams.iter().map(|&id| (id, Association::new(poll, raw_now))).collect(),
            system: System::new(config),
            poll,
            precision: config.precision,
        }
    }

    /// Adds an association with the upstream we would advertise as `id`,
    /// its first poll (a burst) due at `raw_now`; returns its index, the
    /// last.
    pub fn add(&mut self, id: ReferenceId, raw_now: NtpTimestamp) -> usize {
        let mut association = Association::new(self.poll, raw_now);
        association.set_poll(self.system.poll());
        self.associations.push((id, association));
        self.associations.len() - 1
    }

    /// Adds a reference clock named `id` (what we advertise while it is our
    /// system peer: `GPS`, `PPS`), which takes its driver's readings every
    /// 2^`poll` s, first at `raw_now`; returns its index, the last.
    pub fn add_refclock(&mut self, id: ReferenceId, poll: i8, kind: AssociationKind, raw_now: NtpTimestamp) -> usize {
        self.associations.push((id, Association::refclock(poll, raw_now, kind)));
        self.associations.len() - 1
    }

    /// Removes association `index` (those after it move down by one); the
    /// system forgets it (see [`System::remove`]). False if there was none.
    pub fn remove(&mut self, index: usize) -> bool {
        if index >= self.associations.len() {
            return false;
        }
        self.associations.remove(index);
        self.system.remove(index);
        true
    }

    /// How many associations there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.associations.len()
    }

    /// True without any association.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.associations.is_empty()
    }

    /// How many configured upstreams have no association (names that do
    /// not resolve yet): they count in the leap vote as "no leap".
    pub fn set_unassociated(&mut self, count: usize) {
        self.system.set_unassociated(count);
    }

    /// Our own reference IDs, for loop detection.
    pub fn set_own_reference_ids(&mut self, ids: Vec<ReferenceId>) {
        self.system.set_own_reference_ids(ids);
    }

    /// The associations, in the order the upstreams were given.
    pub fn associations(&self) -> impl Iterator<Item = &Association> {
        self.associations.iter().map(|(_, a)| a)
    }

    /// The system process (selection states, last synchronization).
    #[must_use]
    pub fn system(&self) -> &System {
        &self.system
    }

    /// Each association's selection state, as of the last update.
    #[must_use]
    pub fn selection(&self, index: usize) -> Option<SelectionState> {
        self.system.selection().get(index).copied()
    }

    /// The association due next and when, if any is active.
    #[must_use]
    pub fn next_poll(&self) -> Option<(usize, NtpTimestamp)> {
        let mut due = self.associations.iter().enumerate().filter_map(|(i, (_, a))| a.next_poll().map(|at| (i, at)));
        let first = due.next()?;
        // Compared by wrapping difference, as NTP times must be.
        Some(due.fold(first, |best, next| if next.1 - best.1 < NtpDuration::ZERO { next } else { best }))
    }

    /// Records that a request went to upstream `index` at `raw_now`.
    pub fn poll_sent(&mut self, index: usize, raw_now: NtpTimestamp) {
        if let Some((_, association)) = self.associations.get_mut(index) {
            association.on_poll_sent(raw_now);
        }
    }

    /// Takes a reply of upstream `index` that answered our request but is
    /// unusable (kiss-o'-death, unsynchronized): kiss codes are obeyed.
    pub fn on_reply_error(&mut self, index: usize, reply: &Header, error: ReplyError) {
        if let Some((_, association)) = self.associations.get_mut(index) {
            association.on_reply_error(reply, error);
        }
    }

    /// Takes the reply of upstream `index` to the request whose transmit
    /// timestamp was `request_transmit`, with the exchange's timestamps and
    /// the raw time now.
    ///
    /// T1 and T4 must be read from the *raw* clock: then the offset is
    /// server minus raw time, and neither a step nor a slew between the two
    /// readings can corrupt the sample.
    pub fn on_reply(
        &mut self,
        index: usize,
        clock: &mut DisciplinedClock,
        raw_now: NtpTimestamp,
        reply: &Header,
        request_transmit: NtpTimestamp,
        timestamps: &Timestamps,
    ) -> ReplyOutcome {
        self.on_reply_measured_at(index, clock, raw_now, raw_now, reply, request_transmit, timestamps)
    }

    /// [`Synchronizer::on_reply`] for a sample measured earlier than the
    /// reply arrived, at raw time `measured_at`: an interleaved answer's
    /// timestamps are those of the exchange before (a poll interval ago),
    /// and the filter and the frequency fit must place it there.
    #[allow(clippy::too_many_arguments)]
    pub fn on_reply_measured_at(
        &mut self,
        index: usize,
        clock: &mut DisciplinedClock,
        raw_now: NtpTimestamp,
        measured_at: NtpTimestamp,
        reply: &Header,
        request_transmit: NtpTimestamp,
        timestamps: &Timestamps,
    ) -> ReplyOutcome {
        let warming_up = self.system.warming_up();
        let Some((_, association)) = self.associations.get_mut(index) else {
            return ReplyOutcome::Accepted(None);
        };
        if let Err(error) = validate_reply(reply, request_transmit) {
            association.on_reply_error(reply, error);
            return ReplyOutcome::Rejected(error);
        }
        let fresh = Sample::new(timestamps, reply.precision, self.precision);
        // A sample measured earlier has had that long to grow dispersion.
        let age = (raw_now - measured_at).max(NtpDuration::ZERO);
        let sample = Sample { time: measured_at, dispersion: fresh.dispersion + age.mul_f64(PHI), ..fresh };
        // Server minus raw time moves at the raw clock's frequency error,
        // which the correction's frequency estimates.
        let drift = clock.correction.frequency_ppm() * 1e-6;
        let _ = association.on_reply(raw_now, reply, sample, warming_up, drift);
        ReplyOutcome::Accepted(self.update_system(raw_now, clock))
    }

    /// Takes a reference clock's sample (offset reference minus raw time,
    /// taken at raw time `sample.time`), with the leap it announces and its
    /// precision exponent, at raw time `raw_now`: through the same filter,
    /// selection and discipline as a server's reply. The reference is
    /// stratum 0 with no root delay or dispersion of its own: its
    /// precision and the sample's dispersion are what it adds.
    pub fn on_refclock(
        &mut self,
        index: usize,
        clock: &mut DisciplinedClock,
        raw_now: NtpTimestamp,
        sample: Sample,
        leap: LeapIndicator,
        precision: i8,
    ) -> Option<Synchronization> {
        let warming_up = self.system.warming_up();
        let (id, association) = self.associations.get_mut(index)?;
        let info = ServerInfo {
            leap,
            stratum: Stratum::UNSPECIFIED,
            precision,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            reference_id: *id,
        };
        let drift = clock.correction.frequency_ppm() * 1e-6;
        let _ = association.on_sample(raw_now, info, sample, warming_up, drift);
        self.update_system(raw_now, clock)
    }

    fn update_system(&mut self, raw_now: NtpTimestamp, clock: &mut DisciplinedClock) -> Option<Synchronization> {
        let views: Vec<PeerView<'_>> =
            self.associations.iter().map(|(id, a)| PeerView { reference_id: *id, association: a }).collect();
        let sync = self.system.update(raw_now, &views, &mut clock.correction);
        let poll = self.system.poll();
        for (_, association) in &mut self.associations {
            association.set_poll(poll);
        }
        sync
    }

    /// What to advertise at raw time `raw_now`.
    #[must_use]
    pub fn server_state(&self, raw_now: NtpTimestamp) -> ServerState {
        self.system.server_state(raw_now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discipline::DisciplineConfig;
    use crate::packet::{LeapIndicator, Mode, Stratum};
    use crate::time::NtpShort;

    fn t(s: f64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000, 0) + NtpDuration::from_seconds_f64(s)
    }

    /// A client 300 s fast and 50 ppm fast, polling a perfect server over a
    /// symmetric 1 ms path, converges and advertises stratum 2.
    #[test]
    fn converges_from_five_minutes_off() {
        let config = SystemConfig {
            discipline: DisciplineConfig { min_poll: 0, max_poll: 2, ..DisciplineConfig::default() },
            ..SystemConfig::default()
        };
        let poll = PollConfig { min_poll: 0, max_poll: 2, iburst: true };
        let mut clock = DisciplinedClock::new(t(0.0), NtpDuration::from_seconds(300), 50.0);
        let refid = ReferenceId([127, 0, 0, 1]);
        let mut sync = Synchronizer::new(config, poll, &[refid], clock.raw_at(t(0.0)));
        let mut true_now = 0.0;
        for _ in 0..200 {
            let (index, due_raw) = sync.next_poll().unwrap();
            // Raw runs at 1 + 50 ppm: true time of the deadline.
            let raw_now = clock.raw_at(t(true_now));
            true_now += (due_raw - raw_now).to_seconds_f64().max(0.0) / (1.0 + 50e-6);
            let t1 = clock.raw_at(t(true_now));
            sync.poll_sent(index, t1);
            let nonce = NtpTimestamp::from_bits(0xdead_beef_0000_0001 ^ t1.to_bits());
            let server_time = t(true_now + 0.0005);
            let reply = Header {
                mode: Mode::Server,
                stratum: Stratum(1),
                leap: LeapIndicator::NoWarning,
                root_dispersion: NtpShort::from_seconds_f64(1e-5),
                origin: nonce,
                receive: server_time,
                transmit: server_time,
                ..Header::default()
            };
            true_now += 0.001;
            let t4 = clock.raw_at(t(true_now));
            let ts = Timestamps { t1, t2: server_time, t3: server_time, t4 };
            let raw_now = clock.raw_at(t(true_now));
            let outcome = sync.on_reply(index, &mut clock, raw_now, &reply, nonce, &ts);
            assert!(matches!(outcome, ReplyOutcome::Accepted(_)));
        }
        let error = (clock.time_at(t(true_now)) - t(true_now)).to_seconds_f64();
        assert!(error.abs() < 1e-5, "error {error}");
        let state = sync.server_state(clock.raw_at(t(true_now)));
        assert_eq!(state.stratum, Stratum(2));
        assert_eq!(state.reference_id, refid);
        assert_eq!(sync.selection(0), Some(SelectionState::SystemPeer));
    }

    /// Associations added and removed while it runs: a new one polls at
    /// once, numbering follows the list, and the remaining one still
    /// synchronizes the clock.
    #[test]
    fn associations_come_and_go_at_runtime() {
        let poll = PollConfig { min_poll: 0, max_poll: 2, iburst: true };
        let config = SystemConfig::default();
        let (a, b) = (ReferenceId([127, 0, 0, 1]), ReferenceId([127, 0, 0, 2]));
        let mut sync = Synchronizer::new(config, poll, &[], t(0.0));
        assert!(sync.is_empty() && sync.next_poll().is_none());
        assert_eq!(sync.add(a, t(1.0)), 0);
        assert_eq!(sync.add(b, t(2.0)), 1);
        assert_eq!(sync.len(), 2);
        assert_eq!(sync.next_poll(), Some((0, t(1.0))));
        assert!(sync.remove(0));
        assert!(!sync.remove(5));
        assert_eq!(sync.next_poll(), Some((0, t(2.0))), "b moved down to 0");
    }

    /// Refclocks with these errors (s) and kinds, each sampled every
    /// second for a minute, feeding a clock 0.3 s fast.
    fn run_refclocks(refclocks: &[(f64, AssociationKind)]) -> (Synchronizer, DisciplinedClock) {
        let config = SystemConfig {
            discipline: DisciplineConfig { min_poll: 0, max_poll: 0, ..DisciplineConfig::default() },
            ..SystemConfig::default()
        };
        let poll = PollConfig { min_poll: 0, max_poll: 0, iburst: true };
        let mut clock = DisciplinedClock::new(t(0.0), NtpDuration::from_seconds_f64(0.3), 0.0);
        let mut sync = Synchronizer::new(config, poll, &[], clock.raw_at(t(0.0)));
        for (i, (_, kind)) in refclocks.iter().enumerate() {
            let id = if i == 0 { ReferenceId::from_code("GPS") } else { ReferenceId::from_code(&format!("R{i}")) };
            sync.add_refclock(id.unwrap(), 0, *kind, clock.raw_at(t(0.0)));
        }
        for second in 0..60 {
            let now = t(f64::from(second));
            let raw_now = clock.raw_at(now);
            for (i, (error, _)) in refclocks.iter().enumerate() {
                sync.poll_sent(i, raw_now);
                let sample = Sample {
                    offset: now - raw_now + NtpDuration::from_seconds_f64(*error),
                    delay: NtpDuration::from_seconds_f64(1e-6),
                    dispersion: NtpDuration::from_seconds_f64(1e-4),
                    time: raw_now,
                };
                let _ = sync.on_refclock(i, &mut clock, raw_now, sample, LeapIndicator::NoWarning, -20);
            }
        }
        (sync, clock)
    }

    const PLAIN: AssociationKind = AssociationKind::Refclock { prefer: false, noselect: false, trust: false };

    /// Reference clocks make a stratum 1 with the refclock's refid; one
    /// of three that is 2 s wrong is voted out, a `noselect` one is never
    /// used.
    #[test]
    fn refclocks_make_a_stratum_one_and_a_wrong_one_is_a_falseticker() {
        let noselect = AssociationKind::Refclock { prefer: false, noselect: true, trust: false };
        let (sync, clock) = run_refclocks(&[(0.0, PLAIN), (0.00002, PLAIN), (2.0, PLAIN), (0.0, noselect)]);
        let now = t(60.0);
        let error = (clock.time_at(now) - now).to_seconds_f64();
        assert!(error.abs() < 1e-3, "error {error}");
        let state = sync.server_state(clock.raw_at(now));
        assert_eq!(state.stratum, Stratum(1));
        assert_eq!(state.reference_id, ReferenceId::from_code("GPS").unwrap());
        assert_eq!(sync.selection(2), Some(SelectionState::Falseticker));
        assert_eq!(sync.selection(3), Some(SelectionState::Unfit(crate::system::Unfit::NoSelect)));
    }

    /// A trusted refclock is not outvoted by two that agree otherwise: they
    /// are the falsetickers (chrony's `trust`).
    #[test]
    fn a_trusted_refclock_outvotes_a_majority() {
        let trusted = AssociationKind::Refclock { prefer: false, noselect: false, trust: true };
        let (sync, clock) = run_refclocks(&[(0.5, trusted), (0.0, PLAIN), (0.00002, PLAIN)]);
        let now = t(60.0);
        let error = (clock.time_at(now) - now).to_seconds_f64();
        assert!((error - 0.5).abs() < 1e-3, "follows the trusted one: error {error}");
        assert_eq!(sync.selection(0), Some(SelectionState::SystemPeer));
        assert_eq!(sync.selection(1), Some(SelectionState::Falseticker));
    }
}
