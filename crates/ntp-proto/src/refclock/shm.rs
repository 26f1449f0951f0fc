//! The NTP shared-memory segment (`struct shmTime`, ntpd's driver 28) that
//! gpsd and other GPS daemons write: its layout, and reading it so that a
//! write in progress is never used.
//!
//! Pure: the segment is reached through [`SharedMemory`], which `ntp-udp`
//! implements over a real SysV segment and tests over plain bytes. The
//! procedure is ntpd's and chrony's: in mode 1, the writer increments
//! `count` before and after each write, so a copy taken between two equal
//! reads of `count` is whole; `valid` is cleared once the sample is taken,
//! so it is used once.

use thiserror::Error;

use crate::time::NtpTimestamp;

/// The key of unit 0 ("NTP0"); unit N is this plus N.
pub const SHM_KEY_BASE: i32 = 0x4e54_5030;
/// `sizeof(struct shmTime)` on a 64-bit Linux (`time_t` of 8 bytes).
pub const SHM_SIZE: usize = 96;

/// Byte offsets of `struct shmTime`'s fields (native endianness; `time_t`
/// 8 bytes and 8-aligned, so 4 bytes of padding follow the first `USec`).
pub mod field {
    /// `int mode`: 0 (no handshake) or 1 (count handshake).
    pub const MODE: usize = 0;
    /// `volatile int count`.
    pub const COUNT: usize = 4;
    /// `time_t clockTimeStampSec`: the reference's time.
    pub const CLOCK_SEC: usize = 8;
    /// `int clockTimeStampUSec`.
    pub const CLOCK_USEC: usize = 16;
    /// `time_t receiveTimeStampSec`: the system clock's time then.
    pub const RECEIVE_SEC: usize = 24;
    /// `int receiveTimeStampUSec`.
    pub const RECEIVE_USEC: usize = 32;
    /// `int leap`: NTP's leap indicator.
    pub const LEAP: usize = 36;
    /// `int precision`: log2 seconds.
    pub const PRECISION: usize = 40;
    /// `int nsamples`.
    pub const NSAMPLES: usize = 44;
    /// `volatile int valid`.
    pub const VALID: usize = 48;
    /// `unsigned clockTimeStampNSec`.
    pub const CLOCK_NSEC: usize = 52;
    /// `unsigned receiveTimeStampNSec`.
    pub const RECEIVE_NSEC: usize = 56;
}

/// Access to one segment. Implementations read and write the shared bytes
/// as they are at the moment of the call (volatile), nothing cached.
pub trait SharedMemory {
    /// The 4-byte `int` at `offset`.
    fn load_i32(&self, offset: usize) -> i32;
    /// Copies the whole segment.
    fn copy(&self) -> [u8; SHM_SIZE];
    /// Writes the 4-byte `int` at `offset`.
    fn store_i32(&self, offset: usize, value: i32);
}

/// One sample read from the segment: the reference's time and the system
/// clock's time when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmSample {
    /// `clockTimeStamp`: what the reference said.
    pub reference: NtpTimestamp,
    /// `receiveTimeStamp`: the system clock at that instant.
    pub system: NtpTimestamp,
    /// The leap indicator field (0-3).
    pub leap: u8,
    /// Precision, log2 seconds.
    pub precision: i8,
}

/// Why there is no sample to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ShmError {
    /// `valid` is 0: nothing new since the last read.
    #[error("no new sample")]
    NotValid,
    /// `count` moved during the copy: the writer was at work.
    #[error("segment written during the read (count {before} then {after})")]
    Torn {
        /// `count` before the copy.
        before: i32,
        /// `count` after it.
        after: i32,
    },
    /// A mode other than 0 and 1.
    #[error("unknown mode {0}")]
    BadMode(i32),
    /// Microseconds or nanoseconds out of range.
    #[error("timestamp fields out of range")]
    BadTime,
}

/// Takes the segment's sample, if there is a whole, new one; clears
/// `valid` when it was set (as ntpd and chrony do), so each is used once.
/// A torn read leaves `valid` alone: the writer will finish and the next
/// read takes it.
pub fn read(memory: &impl SharedMemory) -> Result<ShmSample, ShmError> {
    let before = memory.load_i32(field::COUNT);
    let bytes = memory.copy();
    let after = memory.load_i32(field::COUNT);
    if get_i32(&bytes, field::VALID) == 0 {
        return Err(ShmError::NotValid);
    }
    if get_i32(&bytes, field::MODE) == 1 && (before != after || get_i32(&bytes, field::COUNT) != before) {
        return Err(ShmError::Torn { before, after });
    }
    let parsed = parse(&bytes);
    memory.store_i32(field::VALID, 0);
    parsed
}

/// Parses a copy of the segment (no handshake: see [`read`]).
pub fn parse(bytes: &[u8; SHM_SIZE]) -> Result<ShmSample, ShmError> {
    if get_i32(bytes, field::VALID) == 0 {
        return Err(ShmError::NotValid);
    }
    let mode = get_i32(bytes, field::MODE);
    if mode != 0 && mode != 1 {
        return Err(ShmError::BadMode(mode));
    }
    let reference = timestamp(bytes, field::CLOCK_SEC, field::CLOCK_USEC, field::CLOCK_NSEC)?;
    let system = timestamp(bytes, field::RECEIVE_SEC, field::RECEIVE_USEC, field::RECEIVE_NSEC)?;
    let leap = (get_i32(bytes, field::LEAP) & 3) as u8;
    let precision = get_i32(bytes, field::PRECISION).clamp(-32, 0) as i8;
    Ok(ShmSample { reference, system, leap, precision })
}

/// Writes `sample` into `bytes` as a mode-1 writer does (count bumped
/// by two, valid set): for tests and simulated writers.
pub fn emit(bytes: &mut [u8; SHM_SIZE], sample: &ShmSample) {
    let count = get_i32(bytes, field::COUNT).wrapping_add(2);
    let (clock_sec, clock_nsec) = sample.reference.to_unix();
    let (receive_sec, receive_nsec) = sample.system.to_unix();
    put(bytes, field::MODE, &1i32.to_ne_bytes());
    put(bytes, field::COUNT, &count.to_ne_bytes());
    put(bytes, field::CLOCK_SEC, &clock_sec.to_ne_bytes());
    put(bytes, field::CLOCK_USEC, &((clock_nsec / 1000) as i32).to_ne_bytes());
    put(bytes, field::RECEIVE_SEC, &receive_sec.to_ne_bytes());
    put(bytes, field::RECEIVE_USEC, &((receive_nsec / 1000) as i32).to_ne_bytes());
    put(bytes, field::LEAP, &i32::from(sample.leap).to_ne_bytes());
    put(bytes, field::PRECISION, &i32::from(sample.precision).to_ne_bytes());
    put(bytes, field::CLOCK_NSEC, &clock_nsec.to_ne_bytes());
    put(bytes, field::RECEIVE_NSEC, &receive_nsec.to_ne_bytes());
    put(bytes, field::VALID, &1i32.to_ne_bytes());
}

/// Seconds, microseconds and nanoseconds into a timestamp: the
/// nanoseconds when they agree with the microseconds (a writer that
/// knows them), else the microseconds, as ntpd decides.
fn timestamp(bytes: &[u8; SHM_SIZE], sec: usize, usec: usize, nsec: usize) -> Result<NtpTimestamp, ShmError> {
    let seconds = get_i64(bytes, sec);
    let micros = get_i32(bytes, usec);
    let nanos = get_i32(bytes, nsec) as u32;
    if !(0..1_000_000).contains(&micros) {
        return Err(ShmError::BadTime);
    }
    let nanos = if nanos < 1_000_000_000 && nanos / 1000 == micros as u32 { nanos } else { micros as u32 * 1000 };
    Ok(NtpTimestamp::from_unix(seconds, nanos))
}

fn get_i32(bytes: &[u8; SHM_SIZE], offset: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    i32::from_ne_bytes(word)
}

fn get_i64(bytes: &[u8; SHM_SIZE], offset: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    i64::from_ne_bytes(word)
}

fn put(bytes: &mut [u8; SHM_SIZE], offset: usize, value: &[u8]) {
    bytes[offset..offset + value.len()].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    /// A writer's work on the bytes, done in the middle of a read.
    type Writer = fn(&mut [u8; SHM_SIZE]);

    /// A segment in plain memory; `during_copy` runs between the first
    /// read of `count` and the copy, as a writer would.
    struct Fake {
        bytes: RefCell<[u8; SHM_SIZE]>,
        during_copy: Cell<Option<Writer>>,
    }

    impl Fake {
        fn new(bytes: [u8; SHM_SIZE]) -> Self {
            Self { bytes: RefCell::new(bytes), during_copy: Cell::new(None) }
        }
    }

    impl SharedMemory for Fake {
        fn load_i32(&self, offset: usize) -> i32 {
            get_i32(&self.bytes.borrow(), offset)
        }
        fn copy(&self) -> [u8; SHM_SIZE] {
            if let Some(write) = self.during_copy.take() {
                write(&mut self.bytes.borrow_mut());
            }
            *self.bytes.borrow()
        }
        fn store_i32(&self, offset: usize, value: i32) {
            put(&mut self.bytes.borrow_mut(), offset, &value.to_ne_bytes());
        }
    }

    fn sample() -> ShmSample {
        ShmSample {
            reference: NtpTimestamp::from_unix(1_800_000_000, 0),
            system: NtpTimestamp::from_unix(1_800_000_000, 80_123_456),
            leap: 0,
            precision: -1,
        }
    }

    fn written() -> [u8; SHM_SIZE] {
        let mut bytes = [0u8; SHM_SIZE];
        emit(&mut bytes, &sample());
        bytes
    }

    #[test]
    fn a_whole_sample_is_read_once_and_valid_cleared() {
        let segment = Fake::new(written());
        assert_eq!(read(&segment), Ok(sample()));
        assert_eq!(segment.load_i32(field::VALID), 0);
        assert_eq!(read(&segment), Err(ShmError::NotValid), "used once");
    }

    #[test]
    fn a_count_that_moves_during_the_copy_is_a_torn_read_and_valid_stays() {
        let segment = Fake::new(written());
        segment.during_copy.set(Some(|bytes| {
            let count = get_i32(bytes, field::COUNT);
            put(bytes, field::COUNT, &(count + 1).to_ne_bytes());
            put(bytes, field::CLOCK_SEC, &7i64.to_ne_bytes());
        }));
        assert!(matches!(read(&segment), Err(ShmError::Torn { .. })));
        assert_eq!(segment.load_i32(field::VALID), 1, "the writer's finished sample is taken next time");
    }

    #[test]
    fn a_half_written_segment_is_torn_even_if_count_is_back_after() {
        // The copy saw an odd count (writer between its two increments).
        let segment = Fake::new(written());
        segment.during_copy.set(Some(|bytes| {
            let count = get_i32(bytes, field::COUNT);
            put(bytes, field::COUNT, &(count + 1).to_ne_bytes());
        }));
        // count after equals the copy's count, but not the one before.
        assert!(matches!(read(&segment), Err(ShmError::Torn { .. })));
    }

    #[test]
    fn mode_zero_has_no_handshake() {
        let mut bytes = written();
        put(&mut bytes, field::MODE, &0i32.to_ne_bytes());
        let segment = Fake::new(bytes);
        segment.during_copy.set(Some(|bytes| put(bytes, field::COUNT, &99i32.to_ne_bytes())));
        assert_eq!(read(&segment).map(|s| s.reference), Ok(sample().reference));
    }

    #[test]
    fn invalid_flags_and_fields_are_refused() {
        let mut bytes = written();
        put(&mut bytes, field::VALID, &0i32.to_ne_bytes());
        assert_eq!(parse(&bytes), Err(ShmError::NotValid));
        let mut bytes = written();
        put(&mut bytes, field::MODE, &2i32.to_ne_bytes());
        assert_eq!(parse(&bytes), Err(ShmError::BadMode(2)));
        let mut bytes = written();
        put(&mut bytes, field::CLOCK_USEC, &1_000_000i32.to_ne_bytes());
        assert_eq!(parse(&bytes), Err(ShmError::BadTime));
    }

    #[test]
    fn microseconds_win_when_the_nanoseconds_disagree() {
        let mut bytes = written();
        put(&mut bytes, field::RECEIVE_NSEC, &5u32.to_ne_bytes());
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.system, NtpTimestamp::from_unix(1_800_000_000, 80_123_000));
        assert_eq!(parse(&written()).unwrap().system, sample().system, "nanoseconds kept when they agree");
    }
}
