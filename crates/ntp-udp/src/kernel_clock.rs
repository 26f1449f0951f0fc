//! The kernel's clock discipline interface (`adjtimex`/`clock_adjtime` on
//! CLOCK_REALTIME) behind a safe API: reading it ([`read`], harmless
//! anywhere) and, through a [`KernelClock`] that only a process holding
//! CAP_SYS_TIME can open, writing it: the frequency (tick plus frequency
//! offset, as chrony sets it), a step (ADJ_SETOFFSET), and the status the
//! kernel reports (STA_UNSYNC, STA_INS/STA_DEL, maxerror, esterror). The
//! kernel's own PLL and FLL are switched off: the daemon's discipline
//! decides.

use std::io;

use thiserror::Error;

/// The nominal tick: microseconds per clock tick at USER_HZ (100 on Linux).
const NOMINAL_TICK_US: i64 = 10_000;
/// One microsecond of tick is this many ppm of frequency.
const PPM_PER_TICK_US: f64 = 1e6 / NOMINAL_TICK_US as f64;
/// `timex.freq` is in ppm scaled by 2^16.
const FREQ_SCALE: f64 = 65_536.0;
/// The largest frequency offset the kernel takes in `timex.freq` (ppm).
const MAX_FREQ_PPM: f64 = 500.0;
/// The widest total frequency the tick allows (ppm): ±10 %.
pub const MAX_TOTAL_PPM: f64 = 100_000.0;
/// The capability a process needs to set the clock.
pub const CAP_SYS_TIME: u32 = 25;

/// Status bits the daemon owns: it clears the kernel's PLL, FLL and PPS
/// modes and sets the rest as the discipline says.
const OWNED_STATUS: libc::c_int = libc::STA_PLL
    | libc::STA_PPSFREQ
    | libc::STA_PPSTIME
    | libc::STA_FLL
    | libc::STA_INS
    | libc::STA_DEL
    | libc::STA_UNSYNC
    | libc::STA_FREQHOLD;

/// What the kernel says about its clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelState {
    /// The total frequency correction, tick and frequency offset together,
    /// in ppm (positive: the clock is sped up).
    pub frequency_ppm: f64,
    /// The status word (STA_*).
    pub status: i32,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
    /// Estimated error, microseconds.
    pub esterror_us: i64,
    /// The clock state `adjtimex` returns (TIME_OK, TIME_INS, ..., TIME_ERROR).
    pub state: i32,
}

impl KernelState {
    /// Does the kernel consider the clock unsynchronized?
    #[must_use]
    pub fn unsynchronized(&self) -> bool {
        self.status & libc::STA_UNSYNC != 0
    }

    /// Is a leap second insertion (`Some(true)`) or deletion (`Some(false)`)
    /// armed?
    #[must_use]
    pub fn leap_armed(&self) -> Option<bool> {
        if self.status & libc::STA_INS != 0 {
            Some(true)
        } else if self.status & libc::STA_DEL != 0 {
            Some(false)
        } else {
            None
        }
    }
}

/// A leap second for the kernel to take at the end of the UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLeap {
    /// None pending.
    None,
    /// Insert one (STA_INS).
    Insert,
    /// Delete one (STA_DEL).
    Delete,
}

/// What the daemon tells the kernel about synchronization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelStatus {
    /// Synchronized: STA_UNSYNC cleared (the kernel then keeps the RTC).
    pub synchronized: bool,
    /// Maximum error (root distance), seconds.
    pub maxerror: f64,
    /// Estimated error (jitter), seconds.
    pub esterror: f64,
    /// The leap second to arm.
    pub leap: KernelLeap,
}

/// Why the system clock cannot be disciplined.
#[derive(Debug, Error)]
pub enum KernelClockError {
    /// The process lacks CAP_SYS_TIME.
    #[error("setting the system clock needs the CAP_SYS_TIME capability, which this process does not have (run as root, or grant it: AmbientCapabilities=CAP_SYS_TIME)")]
    NoCapability,
    /// A call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// Which one.
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: `timex` is a plain C struct of integers (and padding), for
    // which all-zero is a valid value: modes 0 asks for a read only.
    unsafe { std::mem::zeroed() }
}

fn adjtime(call: &'static str, timex: &mut libc::timex) -> Result<i32, KernelClockError> {
    // SAFETY: `timex` is a live, writable, fully initialised struct of the
    // layout the kernel expects; clock_adjtime reads and writes only it.
    let rc = unsafe { libc::clock_adjtime(libc::CLOCK_REALTIME, timex) };
    if rc < 0 {
        return Err(KernelClockError::Call { call, source: io::Error::last_os_error() });
    }
    Ok(rc)
}

fn state_of(timex: &libc::timex, state: i32) -> KernelState {
    KernelState {
        frequency_ppm: (timex.tick - NOMINAL_TICK_US) as f64 * PPM_PER_TICK_US + timex.freq as f64 / FREQ_SCALE,
        status: timex.status,
        maxerror_us: timex.maxerror,
        esterror_us: timex.esterror,
        state,
    }
}

/// Reads the kernel's clock state (modes 0: changes nothing, needs no
/// privilege).
pub fn read() -> Result<KernelState, KernelClockError> {
    let mut timex = zeroed_timex();
    let state = adjtime("clock_adjtime (read)", &mut timex)?;
    Ok(state_of(&timex, state))
}

/// Does this process hold `capability` in its effective set? Read from
/// `/proc/self/status` (`CapEff`).
#[must_use]
pub fn has_capability(capability: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    effective_capabilities(&status).is_some_and(|set| set & (1u64 << capability) != 0)
}

/// The `CapEff` mask of a `/proc/PID/status` text.
fn effective_capabilities(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The tick (µs) and `timex.freq` (scaled ppm) that make `ppm`: the tick
/// takes whole 100 ppm, the frequency offset the rest (within ±50 ppm).
fn tick_and_freq(ppm: f64) -> (i64, i64) {
    let ppm = ppm.clamp(-MAX_TOTAL_PPM, MAX_TOTAL_PPM);
    let tick = NOMINAL_TICK_US + (ppm / PPM_PER_TICK_US).round() as i64;
    let rest = (ppm - (tick - NOMINAL_TICK_US) as f64 * PPM_PER_TICK_US).clamp(-MAX_FREQ_PPM, MAX_FREQ_PPM);
    (tick, (rest * FREQ_SCALE).round() as i64)
}

/// The right to write the kernel's clock: only opened by a process with
/// CAP_SYS_TIME.
#[derive(Debug)]
pub struct KernelClock {
    _private: (),
}

impl KernelClock {
    /// Opens the clock for writing if this process may set it. Writes
    /// nothing.
    pub fn open() -> Result<Self, KernelClockError> {
        if !has_capability(CAP_SYS_TIME) {
            return Err(KernelClockError::NoCapability);
        }
        Ok(Self { _private: () })
    }

    /// Sets the total frequency correction (ppm, positive speeds the clock
    /// up), through the tick and the frequency offset.
    pub fn set_frequency(&self, ppm: f64) -> Result<(), KernelClockError> {
        let (tick, freq) = tick_and_freq(ppm);
        let mut timex = zeroed_timex();
        timex.modes = libc::ADJ_TICK | libc::ADJ_FREQUENCY;
        timex.tick = tick;
        timex.freq = freq;
        adjtime("clock_adjtime (ADJ_FREQUENCY)", &mut timex).map(drop)
    }

    /// Steps the clock by `seconds` (ADJ_SETOFFSET, nanosecond resolution).
    pub fn step(&self, seconds: f64) -> Result<(), KernelClockError> {
        let whole = seconds.floor();
        let mut nanos = ((seconds - whole) * 1e9).round() as i64;
        let mut whole = whole as i64;
        if nanos >= 1_000_000_000 {
            whole += 1;
            nanos -= 1_000_000_000;
        }
        let mut timex = zeroed_timex();
        timex.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
        timex.time.tv_sec = whole;
        timex.time.tv_usec = nanos;
        adjtime("clock_adjtime (ADJ_SETOFFSET)", &mut timex).map(drop)
    }

    /// Sets the status the kernel reports, switching its PLL and FLL off.
    pub fn set_status(&self, status: KernelStatus) -> Result<KernelState, KernelClockError> {
        let now = read()?;
        let mut bits = now.status & !OWNED_STATUS;
        if !status.synchronized {
            bits |= libc::STA_UNSYNC;
        }
        bits |= match status.leap {
            KernelLeap::None => 0,
            KernelLeap::Insert => libc::STA_INS,
            KernelLeap::Delete => libc::STA_DEL,
        };
        let micros = |s: f64| (s.max(0.0) * 1e6).min(16e6) as i64;
        let mut timex = zeroed_timex();
        timex.modes = libc::ADJ_STATUS | libc::ADJ_MAXERROR | libc::ADJ_ESTERROR;
        timex.status = bits;
        timex.maxerror = micros(status.maxerror);
        timex.esterror = micros(status.esterror);
        let state = adjtime("clock_adjtime (ADJ_STATUS)", &mut timex)?;
        Ok(state_of(&timex, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_splits_into_tick_and_offset() {
        assert_eq!(tick_and_freq(0.0), (10_000, 0));
        assert_eq!(tick_and_freq(100.0), (10_001, 0));
        assert_eq!(tick_and_freq(-130.5), (9_999, (-30.5 * FREQ_SCALE) as i64));
        assert_eq!(tick_and_freq(42.0), (10_000, 42 * 65_536));
        let (tick, _) = tick_and_freq(1e9);
        assert_eq!(tick, 11_000, "clamped to +10 %");
    }

    #[test]
    fn state_adds_tick_and_offset() {
        let mut timex = zeroed_timex();
        timex.tick = 10_001;
        timex.freq = -65_536 * 3;
        timex.status = libc::STA_UNSYNC | libc::STA_INS;
        let state = state_of(&timex, 0);
        assert!((state.frequency_ppm - 97.0).abs() < 1e-9);
        assert!(state.unsynchronized());
        assert_eq!(state.leap_armed(), Some(true));
    }

    #[test]
    fn capabilities_come_from_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000002000000\n";
        assert_eq!(effective_capabilities(status), Some(1 << CAP_SYS_TIME));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn reading_the_kernel_clock_changes_nothing_and_works_unprivileged() {
        let state = read().unwrap();
        assert!(state.frequency_ppm.abs() <= MAX_TOTAL_PPM);
    }
}
