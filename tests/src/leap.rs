//! Leap seconds for the tests: a leap-seconds.list the test writes (with a
//! valid SHA-1 line, made by `LeapSecondsList::emit`) listing an insertion
//! at [`LEAP_AT`], the `--clock-offset` that puts a virtual clock just
//! before it, and a reading of the time a server serves.

use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ntp_proto::leap::{LeapEntry, LeapSecondsList};
use ntp_proto::packet::{Header, LeapIndicator};

use crate::CLIENT_REQUEST;

/// 2027-01-01 00:00:00 UTC in NTP seconds: the leap of the test's file.
pub const LEAP_AT: u64 = 4_007_750_400;
/// NTP seconds at the Unix epoch.
pub const NTP_TO_UNIX: u64 = 2_208_988_800;

/// [`LEAP_AT`] as Unix seconds.
#[must_use]
pub fn leap_unix() -> f64 {
    (LEAP_AT - NTP_TO_UNIX) as f64
}

/// Writes into `dir` a file announcing an insertion at [`LEAP_AT`] (TAI -
/// UTC 37 -> 38), valid from `updated` to `expires` (NTP seconds); returns
/// its path.
pub fn leap_file(dir: &std::path::Path, updated: u64, expires: u64) -> String {
    write_leap_file(dir, 38, updated, expires, &format!("leap-seconds-{expires}.list"))
}

/// The file `name` in `dir` whose leap at [`LEAP_AT`] takes TAI - UTC from
/// 37 to `tai_offset`, valid from `updated` to `expires`.
fn write_leap_file(dir: &std::path::Path, tai_offset: i32, updated: u64, expires: u64, name: &str) -> String {
    let entries = vec![LeapEntry { start: 3_692_217_600, tai_offset: 37 }, LeapEntry { start: LEAP_AT, tai_offset }];
    let list = LeapSecondsList::new(updated, expires, entries).expect("a consistent table");
    let path = dir.join(name);
    std::fs::write(&path, list.emit()).expect("write the leap file");
    path.to_string_lossy().into_owned()
}

/// The expiry of a current file: 150 days after the leap, or after the
/// host's today if that is later (a follower loads it at the host's time,
/// before it steps to the leap's day).
fn current_expiry() -> u64 {
    LEAP_AT.max(host_unix() as u64 + NTP_TO_UNIX) + 150 * 86_400
}

/// A file valid from 200 days before the leap to [`current_expiry`].
pub fn current_leap_file(dir: &std::path::Path) -> String {
    leap_file(dir, LEAP_AT - 200 * 86_400, current_expiry())
}

/// Like [`current_leap_file`], but the leap at [`LEAP_AT`] deletes a second
/// (TAI - UTC 37 -> 36), which no real leap has done yet.
pub fn deletion_leap_file(dir: &std::path::Path) -> String {
    write_leap_file(dir, 36, LEAP_AT - 200 * 86_400, current_expiry(), "leap-seconds-deletion.list")
}

/// The `--clock-offset` that puts a virtual clock `before` seconds ahead of
/// the leap's midnight.
#[must_use]
pub fn offset_to(before: f64) -> String {
    format!("{}", leap_unix() - before - host_unix())
}

/// The host's clock, Unix seconds.
#[must_use]
pub fn host_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// What one exchange with a server said.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// The host's clock halfway through the exchange, Unix seconds.
    pub host: f64,
    /// The server's transmit timestamp (T3), Unix seconds.
    pub served: f64,
    /// Its leap indicator.
    pub leap: LeapIndicator,
    /// How long the exchange took on the host's clock, s: `host` is within
    /// half of it of the moment `served` was read.
    pub round_trip: f64,
}

impl Reading {
    /// Served minus host time: the server's clock error as the host sees it.
    #[must_use]
    pub fn offset(&self) -> f64 {
        self.served - self.host
    }

    /// Served time relative to the leap's midnight, seconds.
    #[must_use]
    pub fn from_midnight(&self) -> f64 {
        self.served - leap_unix()
    }
}

/// Reads `ip:port` once from a fresh socket; `None` if no reply came in 300 ms.
pub fn read_server(ip: &str, port: u16) -> Option<Reading> {
    let socket = UdpSocket::bind((ip, 0)).ok()?;
    socket.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let sent = host_unix();
    socket.send_to(&CLIENT_REQUEST, (ip, port)).ok()?;
    let mut buf = [0u8; 1024];
    let len = socket.recv(&mut buf).ok()?;
    let back = host_unix();
    let header = Header::decode(&buf[..len]).ok()?;
    let served = header.transmit.to_unix_f64();
    Some(Reading { host: (sent + back) / 2.0, served, leap: header.leap, round_trip: back - sent })
}

/// The readings whose exchange took under 5 ms: those whose offset is
/// exact to within 2.5 ms on a loaded machine.
#[must_use]
pub fn prompt(readings: &[Reading]) -> Vec<Reading> {
    readings.iter().filter(|r| r.round_trip < 0.005).copied().collect()
}

/// Reads `ip:port` every `every` for `span`.
pub fn watch_server(ip: &str, port: u16, every: Duration, span: Duration) -> Vec<Reading> {
    let start = std::time::Instant::now();
    let mut readings = Vec::new();
    while start.elapsed() < span {
        readings.extend(read_server(ip, port));
        std::thread::sleep(every);
    }
    readings
}
