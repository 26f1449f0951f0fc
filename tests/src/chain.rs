//! Stratum chains of real `ntpd-sim serve` processes, judged from outside:
//! by `ntp-query` (whose clock, the host's, is true time on one host) and by
//! a chronyd below the chain.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ntp_proto::packet::{ReferenceId, Stratum};
use serde_json::Value;

use crate::peers::require;
use crate::process::{bin, ntp_query_entry, wait_for, Daemon};

/// `ntpd-sim serve` on `ip:port` with `args`, logging at info.
pub fn serve(ip: &str, port: u16, args: &[&str]) -> Daemon {
    let listen = format!("{ip}:{port}");
    let mut all = vec!["serve", "--listen", &listen, "--log-level", "info"];
    all.extend_from_slice(args);
    Daemon::spawn(bin("ntpd-sim"), &all)
}

/// `ntp-query --json` of one server with `samples` samples: its entry in `servers`.
pub fn query(target: &str, samples: u32) -> Value {
    ntp_query_entry(&["-n", &samples.to_string(), "-i", "0.05", "-t", "1", target])
}

/// The offset an `ntp-query` entry reports, if it measured one.
pub fn offset(entry: &Value) -> Option<f64> {
    entry["offset"].as_f64()
}

/// The stratum an `ntp-query` entry reports.
pub fn stratum(entry: &Value) -> Option<u64> {
    entry["stratum"].as_u64()
}

/// The reference ID, as `ntp-query` and `/status` print it, of a server
/// synchronized to the upstream at `target` (`ip:port`): the address on
/// port 123, a hash of address and port elsewhere (docs/chain.md).
pub fn refid_of(target: &str) -> String {
    let address = target.parse().unwrap_or_else(|_| panic!("not ip:port: {target}"));
    ReferenceId::of_upstream(address).display(Stratum(2))
}

/// Is `entry` a synchronized answer at `expected` stratum within `bound` of true time?
pub fn is_synced(entry: &Value, expected: u64, bound: f64) -> bool {
    entry["error"].is_null() && stratum(entry) == Some(expected) && offset(entry).is_some_and(|o| o.abs() < bound)
}

/// Waits until `target` answers at `expected` stratum within `bound` of true time.
pub fn wait_synced(target: &str, expected: u64, bound: f64, timeout: Duration) -> Value {
    wait_for(timeout, || {
        let entry = query(target, 1);
        is_synced(&entry, expected, bound).then_some(entry)
    })
    .unwrap_or_else(|| panic!("{target} not at stratum {expected} within {bound} s: {}", query(target, 1)))
}

/// One line of chronyd's measurements log: an exchange as chrony read it,
/// at nanosecond resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ChronyMeasurement {
    /// The source's address.
    pub source: String,
    /// Offset of the source, seconds.
    pub offset: f64,
    /// Round-trip delay ("Peer del."), seconds.
    pub delay: f64,
    /// Whether the exchange was interleaved (`4I`, not `4B`).
    pub interleaved: bool,
    /// Where chrony's transmit and receive timestamps came from (`K K`:
    /// both the kernel's).
    pub timestamps: String,
}

impl ChronyMeasurement {
    /// A data line (`2026-12-03 14:24:11 127.0.0.1 N 1 111 ... 4I K K`);
    /// `None` for headers and rules.
    pub fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 19 || !fields[0].starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let mode = fields[fields.len() - 3];
        Some(Self {
            source: fields[2].to_string(),
            offset: fields[11].parse().ok()?,
            delay: fields[12].parse().ok()?,
            interleaved: mode.ends_with('I'),
            timestamps: format!("{} {}", fields[fields.len() - 2], fields[fields.len() - 1]),
        })
    }
}

/// A chronyd (`-x`: it never touches the clock) following one server as a
/// long-running client, read with `chronyc tracking`; killed when dropped.
#[derive(Debug)]
pub struct ChronyClient {
    socket: String,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl ChronyClient {
    /// Starts chronyd polling `ip:port` every 1-4 s.
    pub fn follow(ip: &str, port: u16) -> Self {
        Self::follow_with(ip, port, "iburst minpoll 0 maxpoll 2")
    }

    /// Starts chronyd polling `ip:port` with these `server` options
    /// (`xleave minpoll -2 maxpoll -2`, say). Every exchange is logged to
    /// its measurements log ([`ChronyClient::measurements`]).
    pub fn follow_with(ip: &str, port: u16, options: &str) -> Self {
        let chronyd = require("chronyd");
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("chrony.conf");
        let at = |name: &str| Path::new(dir.path()).join(name).display().to_string();
        // Commands over a Unix socket in the (owner-only) temp dir: no
        // command port, and `ntpdata` is allowed there only.
        let socket = at("chronyd.sock");
        // chronyd disables a command socket in a directory others can enter.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod the temp dir");
        std::fs::write(
            &conf,
            format!(
                "server {ip} port {port} {options}\nport 0\ncmdport 0\n\
                 bindcmdaddress {socket}\npidfile {}\ndriftfile {}\nlogdir {}\nlog measurements\n",
                at("chronyd.pid"),
                at("drift"),
                dir.path().display()
            ),
        )
        .expect("write chrony.conf");
        let conf = conf.to_string_lossy().into_owned();
        let daemon = Daemon::spawn(chronyd, &["-x", "-d", "-u", "root", "-f", &conf]);
        Self { socket, daemon, _dir: dir }
    }

    /// `chronyc tracking`'s output, or empty if chronyc could not run.
    pub fn tracking(&self) -> String {
        self.chronyc(&["tracking"])
    }

    /// `chronyc ntpdata` of the source `ip`: the leap status of its last
    /// reply (`Normal`, `Insert second`, ...) and the offset chronyd
    /// measured of it (nanosecond resolution), once it has one.
    pub fn ntpdata(&self, ip: &str) -> Option<(String, f64)> {
        let text = self.chronyc(&["ntpdata", ip]);
        let field = |name: &str| {
            text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim())
        };
        let offset = field("Offset")?.split_whitespace().next()?.parse().ok()?;
        Some((field("Leap status")?.to_string(), offset))
    }

    /// What chronyd has logged so far.
    pub fn log(&self) -> String {
        self.daemon.output()
    }

    /// Every exchange chronyd has logged so far, oldest first.
    pub fn measurements(&self) -> Vec<ChronyMeasurement> {
        let text = std::fs::read_to_string(self._dir.path().join("measurements.log")).unwrap_or_default();
        text.lines().filter_map(ChronyMeasurement::parse).collect()
    }

    fn chronyc(&self, args: &[&str]) -> String {
        let output = Command::new(require("chronyc")).args(["-h", &self.socket]).args(args).output();
        output
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_default()
    }

    /// Waits until chronyd says it is synchronized at `stratum` (leap
    /// normal) and returns its offset from its source ("System time").
    pub fn wait_stratum(&self, stratum: u8, timeout: Duration) -> f64 {
        let wanted = format!("Stratum         : {stratum}\n");
        let tracking = wait_for(timeout, || {
            let text = self.tracking();
            (text.contains(&wanted) && text.contains("Leap status     : Normal")).then_some(text)
        })
        .unwrap_or_else(|| panic!("chronyd not at stratum {stratum}: {}", self.tracking()));
        eprintln!("{tracking}");
        let line = tracking.lines().find(|l| l.starts_with("System time")).expect("System time line");
        line.split(':').nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).expect("seconds")
    }
}
