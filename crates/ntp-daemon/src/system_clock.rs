//! `--clock system`: the host's clock disciplined through the kernel. The
//! discipline keeps working on its correction (raw time to disciplined
//! time, see [`crate::clock`]); this module makes the kernel's clock follow
//! it: the correction's rate (frequency plus any slew) becomes the kernel's
//! frequency on top of the one it had at start (chrony's way of slewing:
//! a temporary frequency offset, so time never runs backwards), the
//! discipline's steps become ADJ_SETOFFSET, and what the daemon advertises
//! becomes STA_UNSYNC, maxerror, esterror and the leap flags.
//!
//! What stops a start before anything is written: outside the project's
//! test VM without `--allow-host-clock`, another NTP daemon running without
//! `--force` (chronyd and its kind by process name; another `ntpd-sim
//! --clock system` by the lock it holds, [`LOCK_PATH`]), no CAP_SYS_TIME,
//! an unreadable drift file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ntp_proto::clock::VirtualClock;
use ntp_proto::leap::{LeapKind, LeapSchedule};
use ntp_proto::packet::LeapIndicator;
use ntp_proto::responder::ServerState;
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::kernel_clock::{self, KernelClock, KernelClockError, KernelLeap, KernelStatus};
use ntp_udp::lock_file::{LockError, LockFile};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::config::ClockConfig;

/// Set (to `1`) only by the init of the project's test VM (tests/vm/):
/// there the system clock may be disciplined without `--allow-host-clock`.
pub const TEST_VM_ENV: &str = "NTPD_SIM_TEST_VM";

/// The daemons that discipline the clock and would fight us over it, as
/// `/proc/PID/comm` names them (15 characters at most).
const OTHER_DAEMONS: [&str; 4] = ["chronyd", "ntpd", "systemd-timesyn", "ntpd-rs"];

/// The file every `ntpd-sim --clock system` holds an exclusive `flock` on
/// while it disciplines the clock (and writes its pid into): a second one
/// is refused. The kernel drops the lock when the holder's descriptor
/// closes, so it dies with the process, however that ends. A virtual-clock
/// ntpd-sim never takes it. In a systemd unit running as a user,
/// `RuntimeDirectory=ntpd-sim` makes the directory writable.
pub const LOCK_PATH: &str = "/run/ntpd-sim/system-clock.lock";

/// How well a drift file's frequency is taken to be known (ppm): what a
/// machine's oscillator wanders by between runs (temperature, age).
pub const DRIFT_FILE_KNOWN_PPM: f64 = 5.0;

/// The drift file is rewritten at most this often (and at shutdown).
const DRIFT_SAVE_EVERY: Duration = Duration::from_secs(10);

/// Why the system clock cannot be disciplined; the daemon does not start.
#[derive(Debug, Error)]
pub enum SystemClockError {
    /// Outside the test VM, without the operator's opt-in.
    #[error(
        "--clock system would set this host's clock: refused outside the project's test VM ({TEST_VM_ENV} unset); \
         give --allow-host-clock (or allow-host = true under [clock]) to discipline this host's clock for real"
    )]
    NotAllowed,
    /// Another NTP daemon runs.
    #[error("{0} is running and disciplines this clock too: stop it first, or give --force")]
    OtherDaemon(String),
    /// Another `ntpd-sim --clock system` holds the lock.
    #[error(
        "another ntpd-sim disciplines this clock ({}holds {path}): stop it first, or give --force",
        pid.map_or(String::new(), |pid| format!("pid {pid} "))
    )]
    AlreadyDisciplined {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    #[error(
        "cannot take the lock {path} that keeps a second ntpd-sim off this clock: {reason} \
         (its directory must be writable: RuntimeDirectory=ntpd-sim in a systemd unit), or give --force"
    )]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The kernel refused (no CAP_SYS_TIME, or a call failed).
    #[error(transparent)]
    Kernel(#[from] KernelClockError),
    /// The drift file exists but cannot be used.
    #[error("drift file {path}: {reason}")]
    DriftFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The first NTP daemon other than us found running, by its process name.
#[must_use]
pub fn other_daemon_running() -> Option<String> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        let comm = comm.trim();
        OTHER_DAEMONS.contains(&comm).then(|| comm.to_string())
    })
}

/// Reads a drift file: one number, the kernel frequency in ppm. `None`
/// when the file does not exist yet.
pub fn read_drift(path: &Path) -> Result<Option<f64>, SystemClockError> {
    let fail = |reason: String| SystemClockError::DriftFile { path: path.into(), reason };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<f64>() {
        Ok(ppm) if ppm.is_finite() && ppm.abs() <= kernel_clock::MAX_TOTAL_PPM => Ok(Some(ppm)),
        _ => Err(fail(format!("`{first}` is not a frequency in ppm"))),
    }
}

/// Writes a drift file atomically: a temporary file beside it, renamed
/// over it, so a crash leaves the old value or the new, never half.
pub fn write_drift(path: &Path, ppm: f64) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, format!("{ppm:.6}\n"))?;
    std::fs::rename(&temporary, path)
}

/// The leap flag for the kernel: armed on the leap's last day, so the
/// kernel takes it at that midnight (UTC).
#[must_use]
pub fn kernel_leap(schedule: &LeapSchedule, utc: NtpTimestamp) -> KernelLeap {
    match schedule.pending() {
        Some(leap) if leap.announced_at(utc) => match leap.kind {
            LeapKind::Insert => KernelLeap::Insert,
            LeapKind::Delete => KernelLeap::Delete,
        },
        _ => KernelLeap::None,
    }
}

/// The lock at `path`: taken, or with `force` gone without (warned),
/// else the reason as an error.
fn take_lock(path: &Path, force: bool) -> Result<Option<LockFile>, SystemClockError> {
    let error = match LockFile::try_take(path) {
        Ok(lock) => return Ok(Some(lock)),
        Err(LockError::Held(pid)) => SystemClockError::AlreadyDisciplined { path: path.into(), pid },
        Err(LockError::Io(e)) => SystemClockError::Lock { path: path.into(), reason: e.to_string() },
    };
    if !force {
        return Err(error);
    }
    warn!(%error, "forced to discipline the clock anyway");
    Ok(None)
}

/// The guard: the system clock only inside the test VM (`vm_flag`, the
/// value of [`TEST_VM_ENV`], is `1`) or with the operator's opt-in.
fn allowed(vm_flag: Option<&str>, allow_host: bool) -> Result<(), SystemClockError> {
    if vm_flag == Some("1") || allow_host {
        Ok(())
    } else {
        Err(SystemClockError::NotAllowed)
    }
}

/// The kernel clock, following the discipline's correction.
#[derive(Debug)]
pub struct SystemClock {
    kernel: KernelClock,
    /// The kernel frequency at start (from the drift file, else as found):
    /// the raw clock's rate, which the correction's frequency is added to.
    base_ppm: f64,
    written_ppm: f64,
    drift_file: Option<PathBuf>,
    saved: Option<(Instant, f64)>,
    from_drift_file: bool,
    /// A failed write was warned of: later ones are logged at debug.
    drift_warned: bool,
    /// Held while we discipline the clock (none when forced past it).
    _lock: Option<LockFile>,
}

impl SystemClock {
    /// Takes the kernel clock, or says why not (before writing anything):
    /// the guard, another daemon, the capability, another ntpd-sim (the
    /// lock at [`LOCK_PATH`]), the drift file. Then
    /// switches the kernel's PLL off, sets the drift file's frequency and
    /// marks the clock unsynchronized until the first update.
    pub fn start(config: &ClockConfig) -> Result<Self, SystemClockError> {
        allowed(std::env::var(TEST_VM_ENV).ok().as_deref(), config.allow_host)?;
        if let Some(name) = other_daemon_running() {
            if !config.force {
                return Err(SystemClockError::OtherDaemon(name));
            }
            warn!(daemon = %name, "another NTP daemon is running: forced to discipline the clock anyway");
        }
        let kernel = KernelClock::open()?;
        let lock = take_lock(Path::new(LOCK_PATH), config.force)?;
        let drift = config.drift_file.as_deref().map(read_drift).transpose()?.flatten();
        let found = kernel_clock::read()?;
        let base_ppm = drift.unwrap_or(found.frequency_ppm);
        kernel.set_frequency(base_ppm)?;
        kernel.set_status(KernelStatus {
            synchronized: false,
            maxerror: 16.0,
            esterror: 16.0,
            leap: KernelLeap::None,
        })?;
        info!(
            frequency_ppm = base_ppm,
            kernel_frequency_ppm = found.frequency_ppm,
            from_drift_file = drift.is_some(),
            "disciplining the system clock (kernel PLL off)"
        );
        Ok(Self {
            kernel,
            base_ppm,
            written_ppm: base_ppm,
            drift_file: config.drift_file.clone(),
            saved: None,
            from_drift_file: drift.is_some(),
            drift_warned: false,
            _lock: lock,
        })
    }

    /// How well the starting frequency is known, for the discipline: a
    /// drift file's to [`DRIFT_FILE_KNOWN_PPM`]; without one, not at all
    /// (each fit taken whole, as for the virtual clock: taking the kernel's
    /// frequency as known to 100 ppm was tried in the test VM and learned
    /// no better within 50 s).
    #[must_use]
    pub fn frequency_known_ppm(&self) -> Option<f64> {
        self.from_drift_file.then_some(DRIFT_FILE_KNOWN_PPM)
    }

    /// The kernel frequency the correction asks for at raw time `raw_now`.
    fn frequency_for(&self, correction: &VirtualClock, raw_now: NtpTimestamp) -> f64 {
        self.base_ppm + correction.rate_at(raw_now) * 1e6
    }

    /// Makes the kernel follow `correction` at raw time `raw_now`: steps it
    /// by `step` first, if the discipline stepped, then sets the frequency
    /// (with the slew in progress) when it changed.
    pub fn follow(
        &mut self,
        correction: &VirtualClock,
        raw_now: NtpTimestamp,
        step: Option<NtpDuration>,
    ) -> Result<(), KernelClockError> {
        if let Some(step) = step {
            self.kernel.step(step.to_seconds_f64())?;
        }
        let ppm = self.frequency_for(correction, raw_now);
        if (ppm - self.written_ppm).abs() > 1e-6 {
            self.kernel.set_frequency(ppm)?;
            self.written_ppm = ppm;
        }
        Ok(())
    }

    /// The raw time the slew in progress ends at, when the kernel's
    /// frequency must come back to the correction's own.
    #[must_use]
    pub fn next_change(correction: &VirtualClock) -> Option<NtpTimestamp> {
        correction.slew_end()
    }

    /// Tells the kernel what the daemon advertises: synchronized or not,
    /// the root distance as maxerror, `jitter` as esterror, and the leap to
    /// take at midnight.
    pub fn report(&self, state: &ServerState, jitter: NtpDuration, leap: KernelLeap) -> Result<(), KernelClockError> {
        let synchronized = state.leap != LeapIndicator::Unsynchronized && state.stratum.0 != 0;
        let maxerror = state.root_delay.to_seconds_f64() / 2.0 + state.root_dispersion.to_seconds_f64();
        let status = KernelStatus { synchronized, maxerror, esterror: jitter.to_seconds_f64(), leap };
        self.kernel.set_status(status).map(drop)
    }

    /// At shutdown: the frequency without any slew in progress (else the
    /// clock would go on running at the slew's rate), the clock marked
    /// unsynchronized (nobody steers it now), the drift file written.
    pub fn finish(&mut self, correction: &VirtualClock) {
        let ppm = self.base_ppm + correction.frequency_ppm();
        let status = KernelStatus { synchronized: false, maxerror: 16.0, esterror: 16.0, leap: KernelLeap::None };
        if let Err(error) = self.kernel.set_frequency(ppm).and_then(|()| self.kernel.set_status(status).map(drop)) {
            warn!(%error, "cannot leave the kernel clock free-running at the learned frequency");
        }
        self.save_drift(correction, true);
    }

    /// Saves the learned frequency (the correction's, on the base) to the
    /// drift file, at most every ten seconds unless `now_anyway`.
    pub fn save_drift(&mut self, correction: &VirtualClock, now_anyway: bool) {
        let Some(path) = self.drift_file.clone() else { return };
        let ppm = self.base_ppm + correction.frequency_ppm();
        let recent = self.saved.is_some_and(|(at, _)| at.elapsed() < DRIFT_SAVE_EVERY);
        let same = self.saved.is_some_and(|(_, saved)| (saved - ppm).abs() < 1e-3);
        if same || (recent && !now_anyway) {
            return;
        }
        match write_drift(&path, ppm) {
            Ok(()) => self.saved = Some((Instant::now(), ppm)),
            Err(error) if self.drift_warned => debug!(path = %path.display(), %error, "cannot write the drift file"),
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot write the drift file (said once)");
                self.drift_warned = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::leap::{Leap, LeapMode};

    #[test]
    fn the_drift_file_round_trips_atomically_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drift");
        assert_eq!(read_drift(&path).unwrap(), None, "not written yet");
        write_drift(&path, -98.765_432).unwrap();
        assert_eq!(read_drift(&path).unwrap(), Some(-98.765_432));
        assert!(!dir.path().join("drift.tmp").exists(), "the temporary file was renamed");
        std::fs::write(&path, "fast\n").unwrap();
        let error = read_drift(&path).unwrap_err().to_string();
        assert!(error.contains("not a frequency"), "{error}");
    }

    #[test]
    fn the_kernel_is_told_of_a_leap_on_its_last_day_only() {
        let at = NtpTimestamp::from_unix_f64(1_861_920_000.0); // 2029-01-01 00:00:00 UTC
        let mut schedule = LeapSchedule::new(LeapMode::Step);
        let before = at - NtpDuration::from_seconds(3 * 86_400);
        let last_day = at - NtpDuration::from_seconds(3_600);
        let _ = schedule.expect(Some(Leap { at, kind: LeapKind::Insert }), before);
        assert_eq!(kernel_leap(&schedule, before), KernelLeap::None);
        assert_eq!(kernel_leap(&schedule, last_day), KernelLeap::Insert);
        assert_eq!(kernel_leap(&LeapSchedule::new(LeapMode::Step), last_day), KernelLeap::None);
    }

    #[test]
    fn a_second_system_clock_daemon_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ntpd-sim").join("system-clock.lock");
        let first = take_lock(&path, false).unwrap();
        assert!(first.is_some());
        let refused = take_lock(&path, false).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(refused.contains(&format!("pid {pid} holds")) && refused.contains("--force"), "{refused}");
        assert!(take_lock(&path, true).unwrap().is_none(), "forced: started without the lock");
        drop(first);
        assert!(take_lock(&path, false).unwrap().is_some(), "free again once the holder is gone");
    }

    #[test]
    fn outside_the_vm_the_system_clock_needs_the_operators_opt_in() {
        assert!(matches!(allowed(None, false), Err(SystemClockError::NotAllowed)));
        assert!(matches!(allowed(Some("0"), false), Err(SystemClockError::NotAllowed)));
        assert!(allowed(Some("1"), false).is_ok());
        assert!(allowed(None, true).is_ok());
        let message = SystemClockError::NotAllowed.to_string();
        assert!(message.contains("--allow-host-clock"), "{message}");
    }
}
