//! An exclusive advisory lock on a file (`flock(LOCK_EX | LOCK_NB)`), held
//! for as long as the [`LockFile`] lives: the kernel drops it when the
//! descriptor closes, so it dies with the process however that ends (a
//! crash or SIGKILL leaves no stale lock, unlike a pid file). The holder
//! writes its pid into the file so a refused process can name it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A held lock; dropped, it is released.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; the pid it wrote, when readable.
    Held(Option<u32>),
    /// The file could not be opened or locked.
    Io(io::Error),
}

impl LockFile {
    /// Takes the lock on `path` (created mode 0644 if missing, with its
    /// directory) without waiting, and writes our pid into it.
    pub fn try_take(path: &Path) -> Result<Self, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(LockError::Io)?;
        }
        let opened = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o644).open(path);
        let mut file = match opened {
            Ok(file) => file,
            // Not ours to write (another user's daemon made it): a lock
            // taken on it read-only still tells whether it is held.
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                let Ok(file) = File::open(path) else { return Err(LockError::Io(error)) };
                // SAFETY: as below.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                let held = rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
                return Err(if held { LockError::Held(read_pid(file)) } else { LockError::Io(error) });
            }
            Err(error) => return Err(LockError::Io(error)),
        };
        // SAFETY: flock takes a descriptor we own (open for the whole call)
        // and flags; it touches no memory of ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held(read_pid(file)));
            }
            return Err(LockError::Io(error));
        }
        // Ours now: the pid of the holder, for whoever is refused next.
        file.set_len(0).map_err(LockError::Io)?;
        file.rewind().map_err(LockError::Io)?;
        writeln!(file, "{}", std::process::id()).map_err(LockError::Io)?;
        Ok(Self { _file: file })
    }
}

/// The pid a holder wrote, if the file holds one.
fn read_pid(mut file: File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("ntp-udp-lock-test-{}", std::process::id()));
        let path = dir.join("sub").join("lock");
        let first = LockFile::try_take(&path).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts as another process's would.
        match LockFile::try_take(&path) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("taken twice: {other:?}"),
        }
        drop(first);
        assert!(LockFile::try_take(&path).is_ok(), "released when dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
