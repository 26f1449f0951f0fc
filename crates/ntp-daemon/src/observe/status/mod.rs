//! What `/status` serves and `ntpd-sim status` prints: the system's state
//! (as `chronyc tracking` shows it) and one row per upstream (as
//! `chronyc sources` or `ntpq -p`), built from the synchronizer's published
//! [`SyncStatus`], a clock snapshot and the server's counters.

mod table;

use ntp_proto::association::ServerInfo;
use ntp_proto::filter::FilterOutput;
use ntp_proto::leap::LeapMode;
use ntp_proto::packet::{KissCode, LeapIndicator};
use ntp_proto::system::{SelectionState, Synchronization, Unfit};
use ntp_proto::NtpTimestamp;
use serde::{Deserialize, Serialize};

use crate::clock::ClockSnapshot;
use crate::stats::Counts;

pub use table::{render, render_sources};

/// What the upstream side (`crate::sync`) publishes for its observers (the
/// demo's table, `/status`, `/metrics`). Offsets in it are in the *raw*
/// frame (server minus raw clock), as the synchronizer keeps them.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// The last clock update, if synchronized.
    pub last: Option<Synchronization>,
    /// One per upstream (association), in the order they were made.
    pub upstreams: Vec<UpstreamStatus>,
    /// The sources as configured or added: servers and pools, resolved or not.
    pub sources: Vec<SourceReport>,
    /// The latest addresses dropped by their source, oldest first.
    pub replacements: Vec<ReplacementReport>,
    /// Replacements since start, by source and reason.
    pub replacement_counts: Vec<(String, String, u64)>,
}

/// One configured or added source (`ntpd-sim sources list`, `/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// As configured or added.
    pub name: String,
    /// `server` or `pool`.
    pub kind: String,
    /// `config` or `runtime`.
    pub origin: String,
    /// The addresses it lends now.
    pub addresses: Vec<String>,
    /// How many it may lend (a pool's max-sources; 1 for a server).
    pub max_sources: usize,
    /// Failed resolutions in a row.
    pub failures: u32,
    /// What the resolver said last, while failing.
    pub error: Option<String>,
    /// Seconds until the name is resolved again (None: being resolved).
    pub next_resolution: Option<f64>,
}

/// An address a source dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacementReport {
    /// The source (a pool, or a server that followed its name).
    pub source: String,
    /// The address dropped.
    pub address: String,
    /// `unreachable`, `falseticker`, `refused-deny`, `refused-rstr` or `address-changed`.
    pub reason: String,
    /// When, Unix time (the host's clock).
    pub unix_time: f64,
}

/// One upstream as the synchronizer sees it.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    /// As configured (`host:port`); a pool member's address.
    pub name: String,
    /// The address polled; a reference clock's driver (`shm:0`, `sock:PATH`).
    pub address: String,
    /// The pool it came from, if it did.
    pub pool: Option<String>,
    /// `config` or `runtime` (added over the control socket).
    pub origin: &'static str,
    /// Reachability register, bit 0 the latest poll.
    pub reach: u8,
    /// Poll exponent in force, log2 s.
    pub poll: i8,
    /// What the server last said about itself (stratum, reference ID...).
    pub info: Option<ServerInfo>,
    /// The clock filter's output: offset (raw frame), delay, dispersion, jitter.
    pub output: Option<FilterOutput>,
    /// Where selection left it, once the system has run.
    pub selection: Option<SelectionState>,
    /// The kiss code that stopped polling it, if any.
    pub stopped: Option<KissCode>,
    /// With `xleave`: the mode of its last answer (`interleaved`, `basic`),
    /// or `asking` before the first.
    pub mode: Option<&'static str>,
}

/// The whole report (the JSON of `/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The system's state.
    pub system: SystemReport,
    /// One per upstream, in the order configured (none for a primary server).
    pub upstreams: Vec<UpstreamReport>,
    /// The serving side's counters since start-up.
    pub counters: Counts,
    /// The sources configured or added: servers and pools, resolved or not.
    #[serde(default)]
    pub sources: Vec<SourceReport>,
    /// The latest addresses dropped by their source, oldest first.
    #[serde(default)]
    pub replacements: Vec<ReplacementReport>,
}

/// The system's state. Times in seconds, frequencies in ppm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    /// Whether the time served is synchronized (leap not 3, stratum not 0).
    pub synchronized: bool,
    /// Stratum advertised (0 while unsynchronized).
    pub stratum: u8,
    /// Reference ID advertised, as text (an address, or a code such as LOCL).
    pub reference_id: String,
    /// Leap indicator advertised: none, insert, delete or unsynchronized.
    pub leap: String,
    /// The leap second pending or under way, and how leaps are served.
    #[serde(default)]
    pub leap_second: LeapReport,
    /// Phase error found at the last clock update: the upstreams' time
    /// minus ours (positive: we were behind; `chronyc tracking`'s "Last
    /// offset" has the opposite sign). None for a primary server or before
    /// the first update.
    pub offset: Option<f64>,
    /// Frequency of the discipline's correction, relative to the raw clock.
    pub frequency_ppm: f64,
    /// Rate of the served clock relative to the host's clock: the raw
    /// clock's configured drift plus the correction.
    pub host_frequency_ppm: f64,
    /// The served clock minus the host's clock, now. With no
    /// `--clock-offset`/`--clock-drift-ppm` and a primary that serves the
    /// host's clock, this is the server's true error, exactly, with no
    /// network in between: what tests judge a chain on one host by.
    pub host_offset: f64,
    /// Root delay advertised.
    pub root_delay: f64,
    /// Root dispersion advertised.
    pub root_dispersion: f64,
    /// Seconds since the last clock update, if there was one.
    pub since_update: Option<f64>,
    /// Poll exponent (log2 s) asked for at the last update.
    pub poll: Option<i8>,
    /// Precision advertised, log2 s.
    pub precision: i8,
    /// The upstream followed, by name.
    pub system_peer: Option<String>,
}

/// How leap seconds are served, and the one pending.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeapReport {
    /// `step` (at midnight, as the kernel) or `smear`.
    pub mode: String,
    /// The smear window, seconds, when smearing.
    pub smear_window: Option<u32>,
    /// The leap pending or under way: `insert` or `delete`.
    pub pending: Option<String>,
    /// Its midnight (00:00:00 UTC after it), Unix seconds.
    pub pending_at_unix: Option<f64>,
    /// True while a smear is partly applied: served time is not UTC.
    pub smearing: bool,
    /// Served time minus UTC: the part of a smear applied (zero when
    /// stepping, and outside the window).
    pub smear_offset: f64,
}

/// One upstream. Offsets are from the served clock: positive when the
/// upstream is ahead of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamReport {
    /// As configured; a pool member's address.
    pub name: String,
    /// The address polled.
    pub address: String,
    /// The pool it came from, if it did.
    #[serde(default)]
    pub pool: Option<String>,
    /// `config`, or `runtime` when added over the control socket.
    #[serde(default)]
    pub origin: String,
    /// Reachability register (bit 0 the latest poll; `ntpq` prints it in octal).
    pub reach: u8,
    /// Its stratum, once it answered.
    pub stratum: Option<u8>,
    /// Its reference ID, once it answered.
    pub reference_id: Option<String>,
    /// Poll exponent, log2 s.
    pub poll: i8,
    /// The clock filter's offset.
    pub offset: Option<f64>,
    /// The clock filter's round-trip delay.
    pub delay: Option<f64>,
    /// The clock filter's jitter.
    pub jitter: Option<f64>,
    /// Where selection left it.
    pub state: Selection,
    /// With `xleave`: the mode of its last answer (`interleaved`, `basic`),
    /// or `asking` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// An upstream's selection state, for people and machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Our time comes from it.
    SystemPeer,
    /// Survived selection, combined with the system peer.
    Candidate,
    /// A truechimer pruned by the cluster algorithm.
    Outlier,
    /// Outside the interval the majority agrees on.
    Falseticker,
    /// No reply among the last eight polls.
    Unreachable,
    /// Told us to stop (DENY, RSTR kiss).
    Stopped,
    /// Reachable, no usable sample yet.
    NoSample,
    /// Says it is unsynchronized, or its stratum is too high.
    Unsynchronized,
    /// Its root distance is too large.
    TooFar,
    /// Synchronized to us.
    Loop,
    /// A reference clock configured `noselect`.
    NoSelect,
    /// Not judged yet (no selection has run).
    Pending,
}

impl Selection {
    /// From the synchronizer's state (None before any selection ran).
    #[must_use]
    pub fn of(state: Option<SelectionState>, reach: u8, stopped: bool) -> Self {
        match state {
            Some(SelectionState::SystemPeer) => Self::SystemPeer,
            Some(SelectionState::Candidate) => Self::Candidate,
            Some(SelectionState::Outlier) => Self::Outlier,
            Some(SelectionState::Falseticker) => Self::Falseticker,
            Some(SelectionState::Unfit(Unfit::Unreachable)) => Self::Unreachable,
            Some(SelectionState::Unfit(Unfit::Stopped)) => Self::Stopped,
            Some(SelectionState::Unfit(Unfit::NoSample)) => Self::NoSample,
            Some(SelectionState::Unfit(Unfit::Unsynchronized)) => Self::Unsynchronized,
            Some(SelectionState::Unfit(Unfit::TooFar)) => Self::TooFar,
            Some(SelectionState::Unfit(Unfit::Loop)) => Self::Loop,
            Some(SelectionState::Unfit(Unfit::NoSelect)) => Self::NoSelect,
            None if stopped => Self::Stopped,
            None if reach == 0 => Self::Unreachable,
            None => Self::Pending,
        }
    }

    /// The kebab-case name (as in the JSON and the stats logs).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemPeer => "system-peer",
            Self::Candidate => "candidate",
            Self::Outlier => "outlier",
            Self::Falseticker => "falseticker",
            Self::Unreachable => "unreachable",
            Self::Stopped => "stopped",
            Self::NoSample => "no-sample",
            Self::Unsynchronized => "unsynchronized",
            Self::TooFar => "too-far",
            Self::Loop => "loop",
            Self::NoSelect => "no-select",
            Self::Pending => "pending",
        }
    }
}

/// The leap schedule of `snapshot` at `system_now`.
fn leap_report(snapshot: &ClockSnapshot, system_now: NtpTimestamp) -> LeapReport {
    let schedule = &snapshot.leap;
    let continuous = snapshot.continuous_at(system_now);
    let utc = continuous + schedule.measured_offset(continuous);
    let pending = schedule.pending();
    let (mode, smear_window) = match schedule.mode() {
        LeapMode::Step => ("step", None),
        LeapMode::Smear(smear) => ("smear", Some(smear.window())),
    };
    LeapReport {
        mode: mode.into(),
        smear_window,
        pending: pending.map(|leap| crate::leap::name(leap.kind).into()),
        pending_at_unix: pending.map(|leap| leap.at.to_unix_f64()),
        smearing: schedule.is_smearing(continuous),
        smear_offset: (schedule.served(continuous) - utc).to_seconds_f64(),
    }
}

/// The report at system time `system_now`.
#[must_use]
pub fn report(sync: &SyncStatus, snapshot: &ClockSnapshot, system_now: NtpTimestamp, counters: Counts) -> StatusReport {
    let state = snapshot.state;
    let clock = snapshot.clock;
    let raw_now = snapshot.raw_at(system_now);
    let last = sync.last.as_ref();
    let frequency_ppm = clock.correction.frequency_ppm();
    let system = SystemReport {
        synchronized: state.leap != LeapIndicator::Unsynchronized && state.stratum.0 != 0,
        stratum: state.stratum.0,
        reference_id: state.reference_id.display(state.stratum),
        leap: snapshot.advertised_at(system_now).leap.name().into(),
        leap_second: leap_report(snapshot, system_now),
        offset: last.map(|l| l.update.offset.to_seconds_f64()),
        frequency_ppm,
        host_frequency_ppm: (1.0 + clock.oscillator.frequency_ppm() * 1e-6) * (1.0 + frequency_ppm * 1e-6) * 1e6 - 1e6,
        host_offset: (snapshot.served_at(system_now) - system_now).to_seconds_f64(),
        root_delay: state.root_delay.to_seconds_f64(),
        root_dispersion: state.root_dispersion.to_seconds_f64(),
        since_update: last.map(|l| (raw_now - l.updated_raw).to_seconds_f64()),
        poll: last.map(|l| l.update.poll),
        precision: state.precision,
        system_peer: last.and_then(|l| sync.upstreams.get(l.peer)).map(|u| u.name.clone()),
    };
    let upstreams = (sync.upstreams.iter())
        .map(|u| {
            let output = u.output;
            UpstreamReport {
                name: u.name.clone(),
                address: u.address.clone(),
                pool: u.pool.clone(),
                origin: u.origin.into(),
                reach: u.reach,
                stratum: u.info.map(|i| i.stratum.0),
                reference_id: u.info.map(|i| i.reference_id.display(i.stratum)),
                poll: u.poll,
                // Server minus raw clock at the sample, less the correction
                // in force then: the upstream minus our served clock.
                offset: output.map(|o| (o.offset - clock.correction_at(o.time)).to_seconds_f64()),
                delay: output.map(|o| o.delay.to_seconds_f64()),
                jitter: output.map(|o| o.jitter.to_seconds_f64()),
                state: Selection::of(u.selection, u.reach, u.stopped.is_some()),
                mode: u.mode.map(str::to_string),
            }
        })
        .collect();
    StatusReport { system, upstreams, counters, sources: sync.sources.clone(), replacements: sync.replacements.clone() }
}
