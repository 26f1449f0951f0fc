//! Reference clocks on the daemon's side: their drivers ([`drivers`],
//! tasks reading gpsd's SHM segment or chrony SOCK socket) and what the
//! upstream task keeps of each: readings in the raw clock's frame until
//! the next poll, the configured offset applied, PPS pulses given their
//! seconds by the locked refclock (or dropped: a PPS alone is not used).
//! The decoding, the median and the locking are `ntp_proto::refclock`'s.

pub mod drivers;

use std::path::PathBuf;

use ntp_proto::association::AssociationKind;
use ntp_proto::clock::DisciplinedClock;
use ntp_proto::exchange::Sample;
use ntp_proto::refclock::{lock_pulse, Reading, ReadingFilter, RefclockQuality};
use ntp_proto::NtpDuration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::config::refclock::{RefclockConfig, RefclockSource};
use drivers::{Device, DriverReading};

/// How recent the locked refclock's reading must be for a pulse, seconds.
const LOCK_AGE: f64 = 2.0;

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

    /// Takes a driver's reading of refclock `index`, brought into the raw
    /// frame of `clock` (reference minus raw time).
    pub fn take(&mut self, index: usize, reading: DriverReading, clock: &DisciplinedClock) {
        let Some(refclock) = self.refclocks.get(index) else { return };
        let local = clock.raw_at(reading.system);
        let configured = NtpDuration::from_seconds_f64(refclock.config.offset);
        let mut offset = reading.system + reading.offset - local + configured;
        let name = refclock.config.source.to_string();
        if reading.pulse || refclock.config.lock.is_some() {
            let seconds = refclock.config.lock.and_then(|lock| {
                let locked = self.refclocks.iter().find(|r| r.config.refid == lock)?;
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
