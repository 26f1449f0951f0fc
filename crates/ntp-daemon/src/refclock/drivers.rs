//! The reference clock drivers, one task each: the SHM segment read four
//! times a second, the SOCK socket's datagrams as they come. Each sends
//! what it read, as reference minus system time at a system time, to the
//! upstream task; bad input is logged at debug and dropped. The devices
//! are opened first ([`open`]), while the daemon still has the privileges
//! root's SHM units and `/run` need, as chrony opens them.

use std::path::Path;
use std::time::Duration;

use crate::config::refclock::RefclockSource;

use ntp_proto::refclock::shm::{self, ShmError, SHM_KEY_BASE};
use ntp_proto::refclock::sock;
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::shm::ShmSegment;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How often the SHM segment is looked at (gpsd writes it once a second).
pub const SHM_READ_INTERVAL: Duration = Duration::from_millis(250);

/// One reading as a driver delivers it, in the system clock's frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriverReading {
    /// The system clock at the reading.
    pub system: NtpTimestamp,
    /// Reference minus system clock.
    pub offset: NtpDuration,
    /// A PPS pulse: only the fraction of a second counts.
    pub pulse: bool,
    /// Leap indicator (0-3).
    pub leap: u8,
}

/// Where readings go: the refclock's index and what it read.
pub type Readings = mpsc::Sender<(usize, DriverReading)>;

/// The permissions chrony gives a segment it creates: units 0 and 1 are
/// root's (0600), the others anyone's (0666).
#[must_use]
pub fn shm_mode(unit: u8) -> u32 {
    if unit < 2 {
        0o600
    } else {
        0o666
    }
}

/// A reference clock's device, opened.
#[derive(Debug)]
pub enum Device {
    /// An attached SHM segment.
    Shm(ShmSegment),
    /// A bound SOCK socket.
    Sock(std::os::unix::net::UnixDatagram),
}

/// Opens `source`: attaches the SHM segment (created, as chrony does,
/// with [`shm_mode`] if gpsd has not made it yet), or binds the SOCK
/// socket (a stale one is replaced, as chrony does).
pub fn open(source: &RefclockSource) -> std::io::Result<Device> {
    match source {
        RefclockSource::Shm(unit) => {
            ShmSegment::attach(SHM_KEY_BASE + i32::from(*unit), shm_mode(*unit)).map(Device::Shm)
        }
        RefclockSource::Sock(path) => bind_sock(path).map(Device::Sock),
    }
}

/// Reads SHM `unit` (attached already, or else attached here, retried
/// every 10 s) until `readings` closes.
pub async fn read_shm(unit: u8, segment: Option<ShmSegment>, index: usize, readings: Readings) {
    let key = SHM_KEY_BASE + i32::from(unit);
    let segment = match segment {
        Some(segment) => segment,
        None => loop {
            match ShmSegment::attach(key, shm_mode(unit)) {
                Ok(segment) => break segment,
                Err(error) => {
                    warn!(unit, %error, "cannot attach the SHM segment: retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        },
    };
    let mut interval = tokio::time::interval(SHM_READ_INTERVAL);
    loop {
        interval.tick().await;
        let reading = match shm::read(&segment) {
            Ok(sample) => DriverReading {
                system: sample.system,
                offset: sample.reference - sample.system,
                pulse: false,
                leap: sample.leap,
            },
            Err(ShmError::NotValid) => continue,
            Err(error) => {
                debug!(unit, %error, "SHM sample not used");
                continue;
            }
        };
        if readings.send((index, reading)).await.is_err() {
            return;
        }
    }
}

/// Binds the SOCK socket at `path`, non-blocking (a stale one is
/// replaced, as chrony does), for [`read_sock`].
pub fn bind_sock(path: &Path) -> std::io::Result<std::os::unix::net::UnixDatagram> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        std::fs::remove_file(path)?;
    }
    let socket = std::os::unix::net::UnixDatagram::bind(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Receives chrony SOCK datagrams on `socket` until `readings` closes.
pub async fn read_sock(socket: tokio::net::UnixDatagram, index: usize, readings: Readings) {
    let mut buffer = [0u8; 256];
    loop {
        let length = match socket.recv(&mut buffer).await {
            Ok(length) => length,
            Err(error) => {
                warn!(%error, "SOCK refclock socket failed");
                return;
            }
        };
        match sock::decode(&buffer[..length]) {
            Ok(sample) => {
                let reading = DriverReading {
                    system: sample.system,
                    offset: sample.offset,
                    pulse: sample.pulse,
                    leap: sample.leap,
                };
                if readings.send((index, reading)).await.is_err() {
                    return;
                }
            }
            Err(error) => debug!(%error, "SOCK datagram dropped"),
        }
    }
}
