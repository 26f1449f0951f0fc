//! The system process (RFC 5905 §11): from all associations, pick the
//! truechimers, the survivors and the system peer; feed the combined offset
//! to the discipline; and keep what the server advertises (stratum,
//! reference, root delay and dispersion, leap), including falling back to
//! unsynchronized after a holdover without upstreams.

use std::net::{IpAddr, SocketAddr};

use crate::association::{Association, AssociationKind};
use crate::clock::VirtualClock;
use crate::discipline::{Adjustment, Discipline, DisciplineConfig, Measurement, Update};
use crate::exchange::{Sample, PHI};
use crate::leap::{majority_leap, LeapKind};
use crate::packet::{LeapIndicator, ReferenceId, Stratum};
use crate::responder::ServerState;
use crate::selection::{aged, cluster, combine, intersect, root_distance, Candidate, Intersection, Survivor};
use crate::time::{NtpDuration, NtpShort, NtpTimestamp};

/// MAXDIST: a server whose root distance exceeds this is not selectable.
pub const MAX_DISTANCE: f64 = 1.5;

/// Clock updates made with the newest sample of each server rather than
/// its lowest-delay one, so the frequency is learnt within a few polls.
pub const WARM_UP_UPDATES: u32 = 8;

/// How the system process behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemConfig {
    /// The clock discipline's settings.
    pub discipline: DisciplineConfig,
    /// After every upstream has been unusable this long, advertise
    /// unsynchronized (leap 3, stratum 0).
    pub holdover: NtpDuration,
    /// Precision exponent of our clock.
    pub precision: i8,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self { discipline: DisciplineConfig::default(), holdover: NtpDuration::from_seconds(3600), precision: -20 }
    }
}

/// Where each association stands after the last selection, as
/// `chronyc sources` and `ntpq -p` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectionState {
    /// Chosen: our time comes from it.
    SystemPeer,
    /// Survived selection and is combined with the system peer.
    Candidate,
    /// A truechimer pruned by the cluster algorithm.
    Outlier,
    /// Outside the interval a majority agrees on.
    Falseticker,
    /// Not considered, and why.
    Unfit(Unfit),
}

/// Why an association cannot be selected (RFC 5905 A.5.5.1, "fit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// No reply among the last eight polls.
    Unreachable,
    /// A kiss-o'-death told us to stop.
    Stopped,
    /// No sample yet.
    NoSample,
    /// It says it is unsynchronized, or its stratum is too high.
    Unsynchronized,
    /// Its root distance exceeds MAXDIST.
    TooFar,
    /// It is synchronized to us: selecting it would make a loop.
    Loop,
    /// A reference clock configured `noselect`.
    NoSelect,
}

/// One association as the system sees it: the reference ID we would
/// advertise if it became our system peer (from its address), and its state.
#[derive(Debug, Clone, Copy)]
pub struct PeerView<'a> {
    /// Our reference ID when synchronized to this server.
    pub reference_id: ReferenceId,
    /// The association.
    pub association: &'a Association,
}

/// What we are synchronized to, from the last clock update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synchronization {
    /// Index of the system peer among the associations
    /// ([`Synchronization::NO_PEER`] once it was removed).
    pub peer: usize,
    /// Our stratum: the system peer's plus one.
    pub stratum: Stratum,
    /// The leap indicator a majority of all configured upstreams announce
    /// (else no warning), as they announce it: whether it names a leap at
    /// the end of today is decided on UTC by `leap::LeapSchedule::follow`,
    /// which knows the leaps already taken.
    pub leap: LeapIndicator,
    /// Reference ID of the system peer.
    pub reference_id: ReferenceId,
    /// Root delay through the system peer.
    pub root_delay: NtpDuration,
    /// Root dispersion at the update.
    pub root_dispersion: NtpDuration,
    /// Raw time of the last clock update.
    pub updated_raw: NtpTimestamp,
    /// Disciplined time of the last clock update.
    pub reference_time: NtpTimestamp,
    /// The discipline's report of that update.
    pub update: Update,
}

impl Synchronization {
    /// [`Synchronization::peer`] of an update whose system peer has since
    /// been removed.
    pub const NO_PEER: usize = usize::MAX;
}

/// The system process's state.
#[derive(Debug, Clone)]
pub struct System {
    config: SystemConfig,
    discipline: Discipline,
    own_reference_ids: Vec<ReferenceId>,
    selection: Vec<SelectionState>,
    sync: Option<Synchronization>,
    /// Index of the current system peer, kept across updates.
    system_peer: Option<usize>,
    last_sample: Option<NtpTimestamp>,
    last_usable: Option<NtpTimestamp>,
    /// Upstreams configured that have no association (yet): a name that
    /// does not resolve. They count in the leap vote as "no leap".
    unassociated: usize,
}

impl System {
    /// A system that has not synchronized yet.
    #[must_use]
    pub fn new(config: SystemConfig) -> Self {
        Self {
            config,
            discipline: Discipline::new(config.discipline),
            own_reference_ids: Vec::new(),
            selection: Vec::new(),
            sync: None,
            system_peer: None,
            last_sample: None,
            last_usable: None,
            unassociated: 0,
        }
    }

    /// How many configured upstreams have no association (a server name
    /// not resolved yet): each counts as a vote for "no leap", as a
    /// configured upstream that is not kept does.
    pub fn set_unassociated(&mut self, count: usize) {
        self.unassociated = count;
    }

    /// Upstreams configured without an association, as last set.
    #[must_use]
    pub fn unassociated(&self) -> usize {
        self.unassociated
    }

    /// Forgets association `index`, which the caller removed from the list
    /// it hands to [`System::update`]: the indices above it move down by
    /// one. If it was the system peer, the clock keeps its last update (and
    /// runs on in holdover) until selection picks another; until then
    /// [`Synchronization::peer`] is [`Synchronization::NO_PEER`].
    pub fn remove(&mut self, index: usize) {
        if index < self.selection.len() {
            self.selection.remove(index);
        }
        let shift = |i: usize| match i.cmp(&index) {
            std::cmp::Ordering::Less => Some(i),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(i - 1),
        };
        self.system_peer = self.system_peer.and_then(shift);
        if let Some(sync) = &mut self.sync {
            sync.peer = shift(sync.peer).unwrap_or(Synchronization::NO_PEER);
        }
    }

    /// Reference IDs that mean "us" (our addresses): an upstream that
    /// reports one of them is synchronized to us and is not selected.
    pub fn set_own_reference_ids(&mut self, ids: Vec<ReferenceId>) {
        self.own_reference_ids = ids;
    }

    /// Each association's state after the last selection.
    #[must_use]
    pub fn selection(&self) -> &[SelectionState] {
        &self.selection
    }

    /// The last synchronization, if any.
    #[must_use]
    pub fn synchronization(&self) -> Option<&Synchronization> {
        self.sync.as_ref()
    }

    /// True until the discipline has made [`WARM_UP_UPDATES`] updates: the
    /// clock filters then hand on every new sample.
    #[must_use]
    pub fn warming_up(&self) -> bool {
        self.discipline.updates() < WARM_UP_UPDATES
    }

    /// The poll exponent the discipline asks associations to use.
    #[must_use]
    pub fn poll(&self) -> i8 {
        self.discipline.poll()
    }

    /// Runs selection at raw time `raw_now` and, when the system peer has a
    /// sample newer than the last one used, updates the clock. Offsets in
    /// the associations are server time minus raw time. Returns the
    /// synchronization when the clock was updated.
    pub fn update(
        &mut self,
        raw_now: NtpTimestamp,
        peers: &[PeerView<'_>],
        correction: &mut VirtualClock,
    ) -> Option<Synchronization> {
        // Offsets are server minus *raw* time, which moves at the raw
        // clock's frequency error. Samples of different ages are compared
        // and combined after being brought to a common instant at the
        // frequency the discipline has estimated: first `raw_now`, then, once
        // the system peer is known, the time of its sample.
        let slope = correction.frequency_ppm() * 1e-6;
        let fitness: Vec<Result<Survivor, Unfit>> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| self.fitness(raw_now, p, slope).map(|s| Survivor { index: i, ..s }))
            .collect();
        self.selection =
            fitness.iter().map(|f| f.map_or_else(SelectionState::Unfit, |_| SelectionState::Outlier)).collect();
        let fit: Vec<Survivor> = fitness.iter().filter_map(|f| f.ok()).collect();
        if fit.is_empty() {
            return None;
        }
        let candidates: Vec<Candidate> =
            fit.iter().map(|s| Candidate { offset: s.offset, root_distance: s.root_distance }).collect();
        let trusted: Vec<usize> = (fit.iter().enumerate())
            .filter(|(_, s)| matches!(peers[s.index].association.kind(), AssociationKind::Refclock { trust: true, .. }))
            .map(|(k, _)| k)
            .collect();
        let Some(Intersection { truechimers, .. }) = intersect_trusting(&candidates, &trusted) else {
            // No majority agrees: there is no telling which server is right,
            // so we are no longer synchronized (as chrony does).
            for survivor in &fit {
                self.selection[survivor.index] = SelectionState::Falseticker;
            }
            self.sync = None;
            return None;
        };
        self.last_usable = Some(raw_now);
        for (k, survivor) in fit.iter().enumerate() {
            if !truechimers.contains(&k) {
                self.selection[survivor.index] = SelectionState::Falseticker;
            }
        }
        let mut survivors = cluster(truechimers.iter().map(|&k| fit[k]).collect());
        // No clock hopping: the system peer stays while it survives and no
        // survivor has a lower stratum (RFC 5905 §11.2.3 keeps it likewise).
        let best_stratum = survivors.first()?.stratum;
        if let Some(k) = survivors.iter().position(|s| Some(s.index) == self.system_peer && s.stratum == best_stratum) {
            survivors.swap(0, k);
        }
        // A preferred reference clock that survived is the system peer.
        let preferred =
            |s: &Survivor| matches!(peers[s.index].association.kind(), AssociationKind::Refclock { prefer: true, .. });
        if let Some(k) = survivors.iter().position(preferred) {
            survivors.swap(0, k);
        }
        let peer = *survivors.first()?;
        let changed = self.system_peer.is_some_and(|was| was != peer.index);
        self.system_peer = Some(peer.index);
        let association = peers[peer.index].association;
        let output = association.output()?;
        if changed {
            self.discipline.system_peer_changed(output.distance);
        }
        let info = association.info()?;
        let back_to_peer_sample = (output.time - raw_now).mul_f64(slope);
        let at_peer_sample: Vec<Survivor> =
            survivors.iter().map(|s| Survivor { offset: s.offset + back_to_peer_sample, ..*s }).collect();
        let (offset, jitter) = combine(&at_peer_sample)?;
        for s in &survivors {
            self.selection[s.index] = SelectionState::Candidate;
        }
        self.selection[peer.index] = SelectionState::SystemPeer;

        if self.last_sample.is_some_and(|last| output.time - last <= NtpDuration::ZERO) {
            return None;
        }
        self.last_sample = Some(output.time);
        let measurement = Measurement { at: output.time, server_minus_raw: offset, distance: output.distance, jitter };
        let update = self.discipline.update(correction, raw_now, measurement);
        let root_delay = info.root_delay.to_duration() + output.delay;
        let root_dispersion = info.root_dispersion.to_duration()
            + output.dispersion
            + jitter
            + residual_error(&update)
            + (raw_now - output.time).max(NtpDuration::ZERO).mul_f64(PHI);
        // A leap is passed on only when the sources kept that announce it
        // are a majority of all the upstreams configured (one not kept, not
        // heard from yet, or whose name does not resolve yet counts as "no
        // leap"): one liar cannot insert a second, not even at start-up when
        // its reply is the first to arrive. Whether today is a month's last
        // day is the leap schedule's to decide, on UTC.
        let kept = survivors.iter().filter_map(|s| peers[s.index].association.info()).map(|i| i.leap);
        let configured = peers.len() + self.unassociated;
        let not_kept = std::iter::repeat_n(LeapIndicator::NoWarning, configured.saturating_sub(survivors.len()));
        let leap = majority_leap(kept.chain(not_kept)).map_or(LeapIndicator::NoWarning, LeapKind::indicator);
        let sync = Synchronization {
            peer: peer.index,
            stratum: Stratum(info.stratum.0.saturating_add(1)),
            leap,
            reference_id: peers[peer.index].reference_id,
            root_delay,
            root_dispersion,
            updated_raw: raw_now,
            reference_time: correction.time_at(raw_now),
            update,
        };
        self.sync = Some(sync);
        Some(sync)
    }

    /// Is this association selectable? If so, as what survivor.
    fn fitness(&self, raw_now: NtpTimestamp, peer: &PeerView<'_>, slope: f64) -> Result<Survivor, Unfit> {
        let association = peer.association;
        if association.stopped().is_some() {
            return Err(Unfit::Stopped);
        }
        if !association.is_reachable() {
            return Err(Unfit::Unreachable);
        }
        let (Some(output), Some(info)) = (association.output(), association.info()) else {
            return Err(Unfit::NoSample);
        };
        let refclock = matches!(association.kind(), AssociationKind::Refclock { .. });
        if let AssociationKind::Refclock { noselect: true, .. } = association.kind() {
            return Err(Unfit::NoSelect);
        }
        // A reference clock is stratum 0; a server says 0 only when it is not synchronized.
        let stratum_ok = info.stratum.is_synchronized() || (refclock && info.stratum.0 == 0);
        if info.leap == LeapIndicator::Unsynchronized || !stratum_ok || info.stratum.0 >= 15 {
            return Err(Unfit::Unsynchronized);
        }
        if self.own_reference_ids.contains(&info.reference_id) {
            return Err(Unfit::Loop);
        }
        let sample =
            Sample { offset: output.offset, delay: output.delay, dispersion: output.dispersion, time: output.time };
        let distance =
            aged(root_distance(&sample, info.root_delay, info.root_dispersion, output.jitter), raw_now - output.time);
        if distance.to_seconds_f64() > MAX_DISTANCE {
            return Err(Unfit::TooFar);
        }
        Ok(Survivor {
            index: 0,
            offset: output.offset + (raw_now - output.time).mul_f64(slope),
            root_distance: distance,
            jitter: output.jitter,
            stratum: info.stratum.0,
        })
    }

    /// What to advertise at raw time `raw_now`: the synchronization, or
    /// unsynchronized (leap 3, stratum 0) before the first update and after
    /// a holdover without any usable upstream.
    #[must_use]
    pub fn server_state(&self, raw_now: NtpTimestamp) -> ServerState {
        let held_over = self.last_usable.is_none_or(|last| raw_now - last > self.config.holdover);
        match self.sync {
            Some(sync) if !held_over => ServerState {
                leap: sync.leap,
                stratum: sync.stratum,
                precision: self.config.precision,
                root_delay: NtpShort::from_duration(sync.root_delay),
                root_dispersion: NtpShort::from_duration(sync.root_dispersion),
                reference_id: sync.reference_id,
                reference_time: sync.reference_time,
            },
            _ => unsynchronized(self.config.precision, self.sync.map_or(NtpTimestamp::ZERO, |s| s.reference_time)),
        }
    }
}

/// The intersection of `candidates`, or, when some are `trusted` (indices
/// into them), chrony's `trust`: the trusted ones are intersected among
/// themselves, and the others are truechimers when their offset lies in
/// the interval the trusted ones agree on.
fn intersect_trusting(candidates: &[Candidate], trusted: &[usize]) -> Option<Intersection> {
    if trusted.is_empty() {
        return intersect(candidates);
    }
    let among: Vec<Candidate> = trusted.iter().map(|&k| candidates[k]).collect();
    let agreed = intersect(&among)?;
    let truechimers = (0..candidates.len())
        .filter(|&k| match trusted.iter().position(|&t| t == k) {
            Some(j) => agreed.truechimers.contains(&j),
            None => (agreed.low..=agreed.high).contains(&candidates[k].offset),
        })
        .collect();
    Some(Intersection { truechimers, ..agreed })
}

/// The phase error left after an update: what is being slewed away, or
/// nothing after a step (RFC 5905 adds |offset| to the root dispersion;
/// a stepped offset is gone, not an error that remains).
fn residual_error(update: &Update) -> NtpDuration {
    match update.adjustment {
        Adjustment::Stepped(_) => NtpDuration::ZERO,
        Adjustment::Slewing(_) | Adjustment::Held(_) => update.offset.abs(),
    }
}

/// The state of a server that is not synchronized: leap 3, stratum 0, and
/// the largest root dispersion (MAXDISP, 16 s).
#[must_use]
pub fn unsynchronized(precision: i8, reference_time: NtpTimestamp) -> ServerState {
    ServerState {
        leap: LeapIndicator::Unsynchronized,
        stratum: Stratum::UNSPECIFIED,
        precision,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_duration(NtpDuration::from_seconds(16)),
        reference_id: ReferenceId::default(),
        reference_time,
    }
}

/// The reference IDs that mean "synchronized to us", for loop detection:
/// what a server polling us would advertise once we are its system peer.
///
/// `listening` are the addresses we serve on (an unspecified address means
/// every address of the host), `polling_from` the addresses our own polls
/// leave from. For each address we can be reached at, both the plain
/// address (what chrony and ntpd advertise, and ntpd-sim for a remote
/// upstream on port 123) and [`ReferenceId::of_address_and_port`] of it
/// with the listening port (what ntpd-sim advertises for an upstream on
/// another port or on its own host), so that servers sharing one address
/// on different ports are told apart. Addresses behind
/// a wildcard listener are known only as far as `polling_from` names them.
#[must_use]
pub fn own_reference_ids(listening: &[SocketAddr], polling_from: &[IpAddr]) -> Vec<ReferenceId> {
    let specified = |ip: &IpAddr| !ip.is_unspecified();
    // Only where we listen: an address our polls leave from but that we do
    // not serve on reaches another server (a neighbour on this host
    // serving that address), whose followers name it, not us.
    let mut ids: Vec<ReferenceId> = Vec::new();
    for listener in listening {
        let reachable: Vec<IpAddr> = if specified(&listener.ip()) {
            vec![listener.ip()]
        } else {
            // An IPv6 wildcard socket is usually dual-stack and serves IPv4
            // too; counting too many addresses as us only errs on the safe side.
            polling_from.iter().copied().filter(|ip| specified(ip) && (listener.is_ipv6() || ip.is_ipv4())).collect()
        };
        for ip in reachable {
            ids.push(ReferenceId::from_upstream(ip));
            ids.push(ReferenceId::of_address_and_port(SocketAddr::new(ip, listener.port())));
        }
    }
    ids.sort_unstable_by_key(|id| id.0);
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests;
