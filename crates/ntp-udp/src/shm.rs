//! The SysV shared-memory segment of an NTP SHM reference clock (gpsd's
//! `NTP0`...), attached with `shmget`/`shmat` and read with volatile
//! loads: [`ShmSegment`] implements `ntp_proto::refclock::shm::SharedMemory`,
//! where the handshake and the parsing live.

use std::io;
use std::ptr::NonNull;

use ntp_proto::refclock::shm::{SharedMemory, SHM_SIZE};

/// An attached segment, detached on drop.
#[derive(Debug)]
pub struct ShmSegment {
    id: i32,
    base: NonNull<u8>,
}

// SAFETY: the segment is plain shared memory, touched only through
// volatile loads and stores of aligned words; another process writes it
// concurrently anyway, which the count handshake is there for.
unsafe impl Send for ShmSegment {}
// SAFETY: as for Send: no reference into the memory is ever handed out.
unsafe impl Sync for ShmSegment {}

impl ShmSegment {
    /// Attaches the segment of `key`, creating it with permissions `mode`
    /// (chrony's: 0600 for units 0 and 1, 0666 above) if it does not exist.
    pub fn attach(key: i32, mode: u32) -> io::Result<Self> {
        let flags = libc::IPC_CREAT | (mode & 0o777) as i32;
        // SAFETY: shmget takes plain integers.
        let id = unsafe { libc::shmget(key, SHM_SIZE, flags) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: attaching a segment of at least SHM_SIZE bytes (shmget
        // refuses an existing smaller one) anywhere the kernel chooses.
        let base = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if base as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::other("shmat returned null"))?;
        Ok(Self { id, base })
    }

    /// Marks the segment for removal (it goes once every process has
    /// detached): for whoever created it, tests among them.
    pub fn remove(&self) -> io::Result<()> {
        // SAFETY: IPC_RMID takes no buffer.
        if unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes `bytes` over the segment (for tests standing in for a writer).
    pub fn write_all(&self, bytes: &[u8; SHM_SIZE]) {
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: i < SHM_SIZE, within the attached segment.
            unsafe { self.base.as_ptr().add(i).write_volatile(*byte) };
        }
    }

    fn word(&self, offset: usize) -> *mut i32 {
        assert!(offset % 4 == 0 && offset + 4 <= SHM_SIZE, "an aligned int of the segment");
        // SAFETY: in bounds (checked above); shmat returns page-aligned memory.
        unsafe { self.base.as_ptr().add(offset).cast::<i32>() }
    }
}

impl SharedMemory for ShmSegment {
    fn load_i32(&self, offset: usize) -> i32 {
        // SAFETY: an aligned int within the segment (see `word`).
        unsafe { self.word(offset).read_volatile() }
    }

    fn copy(&self) -> [u8; SHM_SIZE] {
        let mut bytes = [0u8; SHM_SIZE];
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: i < SHM_SIZE, within the attached segment.
            *byte = unsafe { self.base.as_ptr().add(i).read_volatile() };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        bytes
    }

    fn store_i32(&self, offset: usize, value: i32) {
        // SAFETY: an aligned int within the segment (see `word`).
        unsafe { self.word(offset).write_volatile(value) }
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: detaching what attach attached, once.
        unsafe { libc::shmdt(self.base.as_ptr().cast()) };
    }
}

#[cfg(test)]
mod tests {
    use ntp_proto::refclock::shm::{self, field, ShmError, ShmSample, SHM_KEY_BASE};
    use ntp_proto::NtpTimestamp;

    use super::*;

    /// A segment of our own (a unit far above gpsd's), written by the test
    /// as a mode-1 writer, read through the real attach.
    #[test]
    fn reads_a_segment_written_by_another_attachment_then_removes_it() {
        let key = SHM_KEY_BASE + 90 + (std::process::id() % 1000) as i32;
        let writer = ShmSegment::attach(key, 0o600).unwrap();
        let reader = ShmSegment::attach(key, 0o600).unwrap();
        writer.remove().unwrap();
        assert_eq!(shm::read(&reader), Err(ShmError::NotValid), "a new segment is zeroed");
        let sample = ShmSample {
            reference: NtpTimestamp::from_unix(1_800_000_000, 0),
            system: NtpTimestamp::from_unix(1_800_000_000, 1_500),
            leap: 0,
            precision: -10,
        };
        let mut bytes = [0u8; SHM_SIZE];
        shm::emit(&mut bytes, &sample);
        writer.write_all(&bytes);
        assert_eq!(shm::read(&reader), Ok(sample));
        assert_eq!(writer.load_i32(field::VALID), 0, "the reader cleared valid");
    }

    /// A writer thread hammering a real segment as gpsd writes it (valid
    /// cleared, count bumped, the fields word by word, count bumped, valid
    /// set) while this thread reads: every sample taken is whole (its two
    /// timestamps belong to one write), whatever the interleaving.
    #[test]
    fn concurrent_writes_are_never_read_torn() {
        let key = SHM_KEY_BASE + 1100 + (std::process::id() % 1000) as i32;
        let writer = std::sync::Arc::new(ShmSegment::attach(key, 0o600).unwrap());
        let reader = ShmSegment::attach(key, 0o600).unwrap();
        writer.remove().unwrap();
        // gpsd's segment is in mode 1 from its first write. A segment still
        // in mode 0 (no count handshake, by the protocol's definition) read
        // during its very first write can mix old and new fields: that is
        // mode 0, not a torn mode-1 read.
        writer.store_i32(field::MODE, 1);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (writer, stop) = (std::sync::Arc::clone(&writer), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut k: u32 = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k = k.wrapping_add(1);
                    let sample = ShmSample {
                        reference: NtpTimestamp::from_unix(1_800_000_000 + i64::from(k), (k % 1000) * 1000),
                        system: NtpTimestamp::from_unix(1_800_000_000 + i64::from(k), (k % 1000) * 1000 + 500_000_000),
                        leap: 0,
                        precision: -20,
                    };
                    let mut bytes = [0u8; SHM_SIZE];
                    shm::emit(&mut bytes, &sample);
                    let count = writer.load_i32(field::COUNT);
                    writer.store_i32(field::VALID, 0);
                    writer.store_i32(field::COUNT, count.wrapping_add(1));
                    // `valid` sits among the fields: it is set last, as a
                    // writer does (set here in the middle, the half-written
                    // sample after it would look valid under an odd count).
                    for offset in (field::CLOCK_SEC..field::RECEIVE_NSEC + 4).step_by(4).filter(|&o| o != field::VALID)
                    {
                        let word = i32::from_ne_bytes(bytes[offset..offset + 4].try_into().unwrap());
                        writer.store_i32(offset, word);
                    }
                    writer.store_i32(field::MODE, 1);
                    writer.store_i32(field::COUNT, count.wrapping_add(2));
                    writer.store_i32(field::VALID, 1);
                    // Long enough, now and then, for a whole read.
                    if k % 4 == 0 {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    }
                }
            })
        };
        let (mut whole, mut torn) = (0, 0);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < until {
            match shm::read(&reader) {
                Ok(sample) => {
                    whole += 1;
                    let apart = (sample.system - sample.reference).as_nanos();
                    assert_eq!(apart, 500_000_000, "a torn sample was used: {sample:?}");
                }
                Err(ShmError::Torn { .. }) => torn += 1,
                Err(ShmError::NotValid) => {}
                Err(other) => panic!("{other}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        thread.join().unwrap();
        assert!(whole > 0, "no sample read (torn {torn})");
        eprintln!("{whole} whole samples read, {torn} torn reads refused");
    }
}
