//! Reference clocks on the daemon's side: their drivers ([`drivers`],
//! tasks reading gpsd's SHM segment or chrony SOCK socket) and what the
//! upstream task keeps of each: readings in the raw clock's frame until
//! the next poll, the configured offset applied, PPS pulses given their
//! seconds by the locked refclock (or dropped: a PPS alone is not used).
//! The decoding, the median and the locking are `ntp_proto::refclock`'s.

pub mod drivers;

use std::path::PathBuf;

use crate::clock::ClockSnapshot;
use ntp_proto::association::AssociationKind;
use ntp_proto::exchange::Sample;
use ntp_proto::refclock::{lock_pulse, Reading, ReadingFilter, RefclockQuality};
use ntp_proto::{NtpDuration, NtpTimestamp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::config::refclock::{RefclockConfig, RefclockSource};
use drivers::{Device, DriverReading};

/// How recent the locked refclock's reading must be for a pulse, seconds.
const LOCK_AGE: f64 = 2.0;
/// A reading taken further than this from now (seconds, either way) is
/// stale: an SHM segment left valid by a writer that stopped long ago.
const MAX_READING_AGE: f64 = 4.0;

/// One reference clock.
#[derive(Debug)]
pub struct Refclock {
    /// As configured.
    pub config: RefclockConfig,
    filter: ReadingFilter,
    /// The newest reading taken (offset applied), for PPS locking.
    newest: Option<Reading>,
    /// Pulses dropped for want of a seconds source.
    pub unlocked: u64,
}

/// Every reference clock, and their driver tasks (stopped on drop).
#[derive(Debug, Default)]
pub struct Refclocks {
    /// In the order configured: association `i` of the synchronizer is `refclocks[i]`.
    pub refclocks: Vec<Refclock>,
    tasks: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Refclocks {
    /// Opens every device of `configs` (before privileges are dropped);
    /// a failure is kept, to be reported when the drivers start.
    #[must_use]
    pub fn open(configs: &[RefclockConfig]) -> Vec<std::io::Result<Device>> {
        configs.iter().map(|c| drivers::open(&c.source)).collect()
    }

    /// Starts a driver for each of `configs` on its device from `opened`
    /// ([`Refclocks::open`]; one not there is opened now); their readings
    /// arrive on the receiver returned. An SHM segment not attached is
    /// retried; a SOCK socket that cannot be bound is logged and that
    /// refclock stays silent.
    #[must_use]
    pub fn start(
        configs: &[RefclockConfig],
        opened: Vec<std::io::Result<Device>>,
    ) -> (Self, mpsc::Receiver<(usize, DriverReading)>) {
        let (tx, rx) = mpsc::channel(64);
        let mut refclocks = Self::default();
        let mut opened = opened.into_iter();
        for (index, config) in configs.iter().enumerate() {
            let device = opened.next().unwrap_or_else(|| drivers::open(&config.source));
            let source = config.source.to_string();
            let task = match (&config.source, device) {
                (RefclockSource::Shm(unit), Ok(Device::Shm(segment))) => {
                    Some(tokio::spawn(drivers::read_shm(*unit, Some(segment), index, tx.clone())))
                }
                (RefclockSource::Shm(unit), _) => Some(tokio::spawn(drivers::read_shm(*unit, None, index, tx.clone()))),
                (RefclockSource::Sock(path), Ok(Device::Sock(socket))) => {
                    match tokio::net::UnixDatagram::from_std(socket) {
                        Ok(socket) => {
                            refclocks.sockets.push(path.clone());
                            Some(tokio::spawn(drivers::read_sock(socket, index, tx.clone())))
                        }
                        Err(e) => {
                            error!(refclock = %source, error = %e, "cannot use the SOCK refclock socket");
                            None
                        }
                    }
                }
                (RefclockSource::Sock(_), Err(e)) => {
                    error!(refclock = %source, error = %e, "cannot bind the SOCK refclock socket");
                    None
                }
                (RefclockSource::Sock(_), Ok(_)) => None,
            };
            refclocks.tasks.extend(task);
            refclocks.refclocks.push(Refclock {
                config: config.clone(),
                filter: ReadingFilter::new(),
                newest: None,
                unlocked: 0,
            });
        }
        (refclocks, rx)
    }

    /// How many there are (the first associations of the synchronizer).
    #[must_use]
    pub fn len(&self) -> usize {
        self.refclocks.len()
    }

    /// True without any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.refclocks.is_empty()
    }

    /// The association kind of refclock `index`.
    #[must_use]
    pub fn kind(config: &RefclockConfig) -> AssociationKind {
        AssociationKind::Refclock { prefer: config.prefer, noselect: config.noselect, trust: config.trust }
    }

    /// Takes a driver's reading of refclock `index`, brought into the frame
    /// upstream samples are in (reference minus *measured* time: the raw
    /// clock shifted by the leaps taken, as `MeasuringClock` reads T1 and
    /// T4), so a refclock and the upstreams agree across a leap second; one
    /// taken more than [`MAX_READING_AGE`] from `system_now`, or within
    /// `near_leap` of a leap's midnight, is dropped.
    pub fn take(
        &mut self,
        index: usize,
        reading: DriverReading,
        snapshot: &ClockSnapshot,
        system_now: NtpTimestamp,
        near_leap: NtpDuration,
    ) {
        let Some(refclock) = self.refclocks.get(index) else { return };
        if (system_now - reading.system).to_seconds_f64().abs() > MAX_READING_AGE {
            debug!(refclock = %refclock.config.source, "stale reading not used");
            return;
        }
        if snapshot.leap.near_leap(snapshot.continuous_at(reading.system), near_leap) {
            debug!(refclock = %refclock.config.source, "reading within a second of a leap not used");
            return;
        }
        let local = snapshot.raw_at(reading.system);
        let configured = NtpDuration::from_seconds_f64(refclock.config.offset);
        let mut offset = reading.system + reading.offset - snapshot.measured_at(reading.system) + configured;
        let name = refclock.config.source.to_string();
        if reading.pulse || refclock.config.lock.is_some() {
            let seconds = refclock.config.lock.and_then(|lock| {
                let locked =
                    (self.refclocks.iter().enumerate()).find(|(j, r)| *j != index && r.config.refid == lock)?.1;
                locked.newest.filter(|n| (n.local - local).to_seconds_f64().abs() <= LOCK_AGE).map(|n| n.offset)
            });
            match seconds.and_then(|seconds| lock_pulse(offset, seconds)) {
                Some(locked) => offset = locked,
                None => {
                    debug!(refclock = %name, "PPS pulse without a seconds source in agreement: not used");
                    self.refclocks[index].unlocked += 1;
                    return;
                }
            }
        }
        let reading = Reading { local, offset, leap: reading.leap };
        let refclock = &mut self.refclocks[index];
        refclock.filter.push(reading);
        refclock.newest = Some(reading);
    }

    /// Refclock `index`'s sample of the readings since its last poll, the
    /// leap indicator it announced, and its precision exponent.
    pub fn sample(&mut self, index: usize) -> Option<(Sample, u8, i8)> {
        let refclock = self.refclocks.get_mut(index)?;
        let quality = RefclockQuality {
            delay: NtpDuration::from_seconds_f64(refclock.config.delay),
            precision: refclock.config.precision,
        };
        let precision = refclock.config.precision.log2().floor().clamp(-32.0, 0.0) as i8;
        refclock.filter.take(quality).map(|(sample, leap)| (sample, leap, precision))
    }
}

impl Drop for Refclocks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::refclock::RefclockSection;

    fn configs(dir: &std::path::Path, flags: &[&str]) -> Vec<RefclockConfig> {
        let sections: Vec<RefclockSection> =
            flags.iter().map(|f| f.replace("DIR", &dir.display().to_string()).parse().unwrap()).collect();
        crate::config::refclock::merge(&[], &sections).unwrap()
    }

    fn reading(system: NtpTimestamp, offset: f64, pulse: bool) -> DriverReading {
        DriverReading { system, offset: NtpDuration::from_seconds_f64(offset), pulse, leap: 0 }
    }

    /// Offsets applied, pulses locked to the NMEA seconds or dropped,
    /// stale readings dropped; the clock's raw frame is the system's here.
    #[tokio::test]
    async fn readings_are_corrected_locked_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let flags =
            ["sock:DIR/nmea,refid=NMEA,offset=0.1", "sock:DIR/pps,refid=PPS,lock=NMEA", "sock:DIR/alone,refid=PPS2"];
        let (mut refclocks, _readings) = Refclocks::start(&configs(dir.path(), &flags), Vec::new());
        let now = NtpTimestamp::from_unix(1_800_000_000, 0);
        let clock = snapshot(now);
        let quality = |r: &mut Refclocks, i: usize| r.sample(i).map(|(s, _, _)| s.offset.to_seconds_f64());

        refclocks.take(1, reading(now, 3.0002, true), &clock, now, NEAR);
        assert_eq!(quality(&mut refclocks, 1), None, "no NMEA yet: the pulse is not used");
        refclocks.take(0, reading(now, 1.9, false), &clock, now, NEAR);
        refclocks.take(1, reading(now, 3.0002, true), &clock, now, NEAR);
        let nmea = quality(&mut refclocks, 0).unwrap();
        assert!((nmea - 2.0).abs() < 1e-9, "offset applied: {nmea}");
        let pps = quality(&mut refclocks, 1).unwrap();
        assert!((pps - 2.0002).abs() < 1e-9, "the pulse's fraction, the NMEA's seconds: {pps}");
        refclocks.take(2, reading(now, 0.0002, true), &clock, now, NEAR);
        assert_eq!(quality(&mut refclocks, 2), None, "a PPS without a lock is never used");
        assert_eq!(refclocks.refclocks[2].unlocked, 1);

        let old = NtpTimestamp::from_unix(1_799_999_990, 0);
        refclocks.take(0, reading(old, 0.0, false), &clock, now, NEAR);
        assert_eq!(quality(&mut refclocks, 0), None, "a reading 10 s old is stale");
    }

    const NEAR: NtpDuration = NtpDuration::ONE_SECOND;

    fn snapshot(now: NtpTimestamp) -> ClockSnapshot {
        use ntp_proto::packet::{ReferenceId, Stratum};
        ClockSnapshot {
            kind: crate::clock::ClockKind::Virtual,
            clock: ntp_proto::clock::DisciplinedClock::new(now, NtpDuration::ZERO, 0.0),
            state: ntp_proto::responder::ServerState::primary(Stratum(1), -20, ReferenceId(*b"GPS\0"), now),
            leap: ntp_proto::leap::LeapSchedule::new(ntp_proto::leap::LeapMode::Step),
        }
    }

    /// Across a leap second a refclock's offsets stay in the frame the
    /// upstreams' are in (the raw clock shifted by the leap, as T1 and T4
    /// are read), and readings within a second of the leap are not used.
    #[tokio::test]
    async fn readings_follow_the_leap_as_upstream_samples_do() {
        use ntp_proto::leap::{Leap, LeapKind};
        let dir = tempfile::tempdir().unwrap();
        let (mut refclocks, _readings) =
            Refclocks::start(&configs(dir.path(), &["sock:DIR/gps,refid=GPS"]), Vec::new());
        let midnight = NtpTimestamp::from_unix(1_798_761_600, 0); // 2027-01-01
        let before = midnight - NtpDuration::from_seconds(3600);
        let mut clock = snapshot(before);
        let _ = clock.leap.expect(Some(Leap { at: midnight, kind: LeapKind::Insert }), before);
        let after = midnight + NtpDuration::from_seconds(10);
        let expected =
            |system| (system + NtpDuration::from_seconds_f64(0.25) - clock.measured_at(system)).to_seconds_f64();
        let (early, late) = (expected(before), expected(after));
        assert!(((early - late).abs() - 1.0).abs() < 1e-9, "the leap moves the measured frame by a second");
        for system in [before, after] {
            refclocks.take(0, reading(system, 0.25, false), &clock, system, NEAR);
            let offset = refclocks.sample(0).map(|(s, _, _)| s.offset.to_seconds_f64()).unwrap();
            assert!((offset - expected(system)).abs() < 1e-9, "{offset} vs {}", expected(system));
        }
        let at = midnight + NtpDuration::from_seconds_f64(0.5);
        refclocks.take(0, reading(at, 0.25, false), &clock, at, NEAR);
        assert!(refclocks.sample(0).is_none(), "half a second after the leap: not used");
    }
}
