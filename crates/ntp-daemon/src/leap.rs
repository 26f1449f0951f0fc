//! Where the daemon learns of a leap second, and how it hands it to the
//! shared clock's [`LeapSchedule`](ntp_proto::leap::LeapSchedule), which
//! applies it to served and measured time (see `crate::clock`).
//!
//! A `--leap-file` decides when given and current: a primary announces
//! from it, and a server with upstreams follows it rather than their
//! majority (as chrony's `leapsectz` does). Without one, a server with
//! upstreams follows the leap its system process passed on: the majority
//! of all configured upstreams, only on a month's last day.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ntp_proto::leap::{Expectation, Leap, LeapKind, LeapSecondsList};
use ntp_proto::packet::LeapIndicator;
use ntp_proto::NtpTimestamp;
use tracing::{debug, info, warn};

use crate::clock::SharedClock;

/// Seconds from the NTP era's start (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_SECONDS: u64 = 2_208_988_800;

/// What the daemon knows of leaps beyond its upstreams: the leap file, if
/// one was given, and its table while it is trusted. The file is read
/// again whenever it changes on disk (tzdata replaces it twice a year).
#[derive(Debug, Default)]
pub struct LeapSource {
    path: Option<PathBuf>,
    modified: Option<SystemTime>,
    list: Option<LeapSecondsList>,
}

impl LeapSource {
    /// No file: leaps come from the upstreams' majority (or, for a
    /// primary, never).
    #[must_use]
    pub fn upstreams_only() -> Self {
        Self::default()
    }

    /// Reads and checks `path` at our time `now`. A file that cannot be
    /// read is an error (a wrong path is a typo to fix); one that is
    /// corrupt or expired is reported and not used, as RFC 8633 asks of a
    /// server's leap information, until it changes.
    ///
    /// # Errors
    /// The file could not be read.
    pub fn load(path: &Path, now: NtpTimestamp) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let list = check(path, &text, now, "leap file loaded");
        Ok(Self { path: Some(path.to_path_buf()), modified, list })
    }

    /// True when a leap file was given (trusted or not).
    #[must_use]
    pub fn has_file(&self) -> bool {
        self.path.is_some()
    }

    /// True while a trusted file decides.
    #[must_use]
    pub fn has_current_file(&self) -> bool {
        self.list.is_some()
    }

    /// Reads the file again if it changed on disk since it was read.
    fn reread_if_changed(&mut self, now: NtpTimestamp) {
        let Some(path) = &self.path else { return };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == self.modified {
            return;
        }
        self.modified = modified;
        match std::fs::read_to_string(path) {
            Ok(text) => self.list = check(path, &text, now, "leap file reloaded"),
            Err(error) => warn!(file = %path.display(), %error, "leap file unreadable: keeping what was read before"),
        }
    }

    /// Brings the clock's schedule up to date: the leap the file lists, or
    /// the one `announced` by the upstreams' majority (`None` for a
    /// primary); and a leap fully applied is settled. Call it every second
    /// and after each clock update.
    pub fn refresh(&mut self, clock: &SharedClock, announced: Option<LeapIndicator>) {
        self.reread_if_changed(clock.now());
        let system = SharedClock::system_now();
        let mut expired = None;
        let mut outcome = (Expectation::Unchanged, None);
        clock.update(|snapshot| {
            let continuous = snapshot.continuous_at(system);
            let from_file = self.list.as_ref().map(|list| list.state_at(snapshot.leap.unleaped(continuous)));
            let expectation = match from_file {
                Some(Ok(state)) => snapshot.leap.expect(state.next, continuous),
                unusable => {
                    expired = unusable.and_then(Result::err);
                    follow(&mut snapshot.leap, announced, continuous)
                }
            };
            outcome = (expectation, snapshot.leap.settle(continuous));
        });
        if let Some(error) = expired {
            self.list = None;
            let file = self.path.clone().unwrap_or_default();
            warn!(
                file = %file.display(),
                %error,
                "the leap file is no longer current: no leap is taken from it until it is replaced"
            );
        }
        report(outcome.0, outcome.1);
    }
}

/// The table in `text` if it is to be trusted at `now`, said so with
/// `loaded`; else reported.
fn check(path: &Path, text: &str, now: NtpTimestamp, loaded: &str) -> Option<LeapSecondsList> {
    match LeapSecondsList::load(text, now) {
        Ok(list) => {
            let next = list.state_at(now).ok().and_then(|state| state.next);
            info!(
                file = %path.display(),
                expires_unix = list.expires().saturating_sub(NTP_TO_UNIX_SECONDS),
                next_leap_unix = ?next.map(|leap| leap.at.to_unix_f64()),
                next_leap = ?next.map(|leap| leap.kind),
                "{loaded}"
            );
            Some(list)
        }
        Err(error) => {
            warn!(file = %path.display(), %error, "leap file not used");
            None
        }
    }
}

fn follow(
    schedule: &mut ntp_proto::leap::LeapSchedule,
    announced: Option<LeapIndicator>,
    continuous: NtpTimestamp,
) -> Expectation {
    match announced {
        Some(indicator) => schedule.follow(indicator, continuous),
        None => schedule.expect(None, continuous),
    }
}

fn report(expectation: Expectation, settled: Option<Leap>) {
    match expectation {
        Expectation::Unchanged => {}
        Expectation::Scheduled(leap) => {
            info!(leap = name(leap.kind), at_unix = leap.at.to_unix_f64(), "leap second scheduled");
        }
        Expectation::ScheduledLate { leap, jump } => warn!(
            leap = name(leap.kind),
            at_unix = leap.at.to_unix_f64(),
            jump = %jump,
            "leap second learned after it began to change served time: served time joins it where it stands"
        ),
        Expectation::Withdrawn(leap) => {
            warn!(leap = name(leap.kind), at_unix = leap.at.to_unix_f64(), "leap second withdrawn");
        }
        Expectation::Committed(leap) => debug!(leap = name(leap.kind), "leap under way: kept whatever is announced"),
    }
    if let Some(leap) = settled {
        let done = match leap.kind {
            LeapKind::Insert => "leap second inserted",
            LeapKind::Delete => "leap second deleted",
        };
        info!(at_unix = leap.at.to_unix_f64(), "{done}");
    }
}

/// How a leap is named in logs and `/status`.
#[must_use]
pub const fn name(kind: LeapKind) -> &'static str {
    match kind {
        LeapKind::Insert => "insert",
        LeapKind::Delete => "delete",
    }
}
