//! A GPS for the reference clock tests: an NMEA "receiver" (a small
//! Python TCP server writing RMC, GGA and ZDA at the top of every second
//! of the host's clock, optionally a deliberate offset off it, silenced
//! on request) and a real gpsd reading it (`-N -n`, no service), which
//! writes the NTP SHM segments as it does for any GPS.
//!
//! gpsd's SHM keys are host-global, and gpsd as root attaches units 0-7
//! whichever device it reads: the tests using it take [`serial`] first,
//! and [`ShmCleanup`] removes the segments that did not exist before.
//! gpsd 3.22 serves time only from serial, USB, TCP and similar sources
//! (a pseudo-terminal is its test harness's and gets no time service),
//! and opens chrony SOCK sockets only for serial, USB and PPS devices: hence
//! the receiver is on TCP, and SOCK samples are sent by [`SockSender`]
//! with exactly the datagram gpsd sends. gpsd's own SOCK samples need
//! kernel PPS edges: `tests/tests/vm_pps.rs` makes them in the test VM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ntp_proto::refclock::shm::SHM_KEY_BASE;
use ntp_proto::refclock::sock::{encode, SockSample};
use ntp_proto::{NtpDuration, NtpTimestamp};

use crate::peers::require;
use crate::process::{free_tcp_port_on, Daemon};

/// The NMEA receiver: `nmea_receiver.py PORT OFFSET SILENCE_FILE` (also
/// run by `bench/refclock.sh`).
const RECEIVER: &str = include_str!("../nmea_receiver.py");

static GPSD: Mutex<()> = Mutex::new(());

/// One gpsd test at a time (SHM keys are the host's).
pub fn serial() -> MutexGuard<'static, ()> {
    GPSD.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The SysV shared-memory keys that exist now.
fn shm_keys() -> Vec<i64> {
    let output = Command::new("ipcs").arg("-m").output().expect("run ipcs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|k| k.strip_prefix("0x"))
        .filter_map(|k| i64::from_str_radix(k, 16).ok())
        .collect()
}

/// Removes, when dropped, the NTP SHM segments (and gpsd's own export
/// segment, "GPSD") that did not exist when it was made.
#[derive(Debug)]
pub struct ShmCleanup {
    before: Vec<i64>,
}

impl ShmCleanup {
    /// Notes the segments that exist now.
    #[must_use]
    pub fn new() -> Self {
        Self { before: shm_keys() }
    }
}

impl Default for ShmCleanup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ShmCleanup {
    fn drop(&mut self) {
        let ntp = i64::from(SHM_KEY_BASE)..i64::from(SHM_KEY_BASE) + 256;
        for key in shm_keys() {
            if !self.before.contains(&key) && (ntp.contains(&key) || key == 0x4750_5344) {
                let _ = Command::new("ipcrm").args(["-M", &format!("{key:#x}")]).status();
            }
        }
    }
}

/// The NMEA receiver, its time `offset` seconds off the host's clock
/// (sent at the top of each second of the host's clock, stamped with
/// that second plus `offset`, to the hundredth: -0.05 is a receiver
/// whose NMEA arrives 50 ms late).
#[derive(Debug)]
pub struct Receiver {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    silence: PathBuf,
    _process: Daemon,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Starts sending at the next second.
    pub fn start(offset: f64) -> Self {
        let python = require("python3");
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("nmea.py");
        std::fs::write(&script, RECEIVER).expect("write nmea.py");
        let silence = dir.path().join("silence");
        let args =
            [script.to_str().unwrap_or_default(), "0", &offset.to_string(), silence.to_str().unwrap_or_default()];
        let process = Daemon::spawn(python, &args);
        let line = process.wait_for_line("listening", Duration::from_secs(10)).expect("the NMEA receiver started");
        let port = line.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("its port");
        Self { port, silence, _process: process, _dir: dir }
    }

    /// Stops sending (the GPS lost its fix, or its cable).
    pub fn silence(&self) {
        std::fs::write(&self.silence, b"").expect("write the silence file");
    }
}

/// A gpsd reading `devices`; killed by its pid when dropped.
#[derive(Debug)]
pub struct Gpsd {
    /// Its process.
    pub process: Daemon,
    _dir: tempfile::TempDir,
}

impl Gpsd {
    /// `gpsd -N -n` on each receiver (`tcp://127.0.0.1:PORT`), in that
    /// order: as root it writes the first one's time to SHM unit 0, the
    /// second's to unit 1. Its control socket is in a temporary directory,
    /// its clients' port a free one on loopback.
    pub fn start(receivers: &[&Receiver]) -> Self {
        // As root gpsd writes units 0 and 1, which the tests read.
        crate::process::require_root();
        let gpsd = require("gpsd");
        let dir = tempfile::tempdir().expect("temp dir");
        let control = dir.path().join("gpsd.sock");
        let port = free_tcp_port_on("127.0.0.1").to_string();
        let mut args = vec!["-N".to_string(), "-n".into(), "-D".into(), "3".into(), "-S".into(), port, "-F".into()];
        args.push(control.to_string_lossy().into_owned());
        args.extend(receivers.iter().map(|r| format!("tcp://127.0.0.1:{}", r.port)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Daemon::spawn(gpsd, &args);
        Self { process, _dir: dir }
    }
}

/// Sends chrony SOCK datagrams, exactly as gpsd does, to `paths`.
#[derive(Debug)]
pub struct SockSender {
    socket: std::os::unix::net::UnixDatagram,
    paths: Vec<PathBuf>,
}

impl SockSender {
    /// A sender to each of `paths` (every sample goes to all).
    pub fn new(paths: &[&Path]) -> Self {
        let socket = std::os::unix::net::UnixDatagram::unbound().expect("a datagram socket");
        Self { socket, paths: paths.iter().map(|p| p.to_path_buf()).collect() }
    }

    /// One sample taken now: reference minus system clock `offset`;
    /// `pulse` for a PPS edge. Errors (no one bound yet) are ignored, as
    /// gpsd ignores them.
    pub fn send(&self, offset: f64, pulse: bool) {
        let now = NtpTimestamp::from_system_time(std::time::SystemTime::now());
        let sample = SockSample { system: now, offset: NtpDuration::from_seconds_f64(offset), pulse, leap: 0 };
        for path in &self.paths {
            let _ = self.socket.send_to(&encode(&sample), path);
        }
    }
}
