//! Statistics logs (`serve --stats-dir DIR`): one line per clock update in
//! `loopstats` and one per upstream sample in `peerstats`, as NTPsec's files
//! of the same names hold, in a whitespace-separated format documented in
//! `docs/operations.md`. Each file is rotated at a size bound: `loopstats`
//! becomes `loopstats.1`, and so on, keeping [`KEEP`] old files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ntp_proto::discipline::Adjustment;
use ntp_proto::synchronizer::Synchronizer;
use ntp_proto::system::Synchronization;
use ntp_proto::NtpDuration;
use tracing::warn;

use super::status::Selection;

/// The clock updates file.
pub const LOOPSTATS: &str = "loopstats";
/// The upstream samples file.
pub const PEERSTATS: &str = "peerstats";
/// Rotated files kept besides the current one.
pub const KEEP: usize = 3;
/// A file is rotated before it grows past this many bytes.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;

/// The column header of `loopstats`.
pub const LOOPSTATS_HEADER: &str = "# unix_time offset_s frequency_ppm jitter_s poll stratum system_peer adjustment";
/// The column header of `peerstats`.
pub const PEERSTATS_HEADER: &str = "# unix_time upstream offset_s delay_s dispersion_s jitter_s stratum reach state";

/// Both statistics files of one daemon.
#[derive(Debug)]
pub struct StatsLog {
    loops: RotatingFile,
    peers: RotatingFile,
}

impl StatsLog {
    /// Creates `dir` if needed and opens (appends to) both files.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            loops: RotatingFile::open(dir.join(LOOPSTATS), LOOPSTATS_HEADER, max_bytes)?,
            peers: RotatingFile::open(dir.join(PEERSTATS), PEERSTATS_HEADER, max_bytes)?,
        })
    }

    /// A clock update at `unix` time through system peer `peer`.
    pub fn clock_update(&mut self, unix: f64, sync: &Synchronization, peer: &str) {
        let u = sync.update;
        let adjustment = match u.adjustment {
            Adjustment::Stepped(_) => "step",
            Adjustment::Slewing(_) => "slew",
            Adjustment::Held(_) => "held",
        };
        let line = format!(
            "{unix:.6} {:.9e} {:.6} {:.9e} {} {} {peer} {adjustment}\n",
            u.offset.to_seconds_f64(),
            u.frequency_ppm,
            u.jitter.to_seconds_f64(),
            u.poll,
            sync.stratum.0,
        );
        self.loops.append(&line);
    }

    /// A sample of upstream `index` named `name`: its offset from the
    /// served clock and its delay, with the filter's dispersion and jitter
    /// and the selection state after it was taken.
    pub fn peer_sample(
        &mut self,
        unix: f64,
        name: &str,
        offset: NtpDuration,
        delay: NtpDuration,
        sync: &Synchronizer,
        index: usize,
    ) {
        let Some(association) = sync.associations().nth(index) else { return };
        let output = association.output();
        let seconds = |d: Option<NtpDuration>| d.map_or(0.0, NtpDuration::to_seconds_f64);
        let stratum = association.info().map_or(0, |i| i.stratum.0);
        let state = Selection::of(sync.selection(index), association.reach(), association.stopped().is_some());
        let line = format!(
            "{unix:.6} {name} {:.9e} {:.9e} {:.9e} {:.9e} {stratum} {:o} {}\n",
            offset.to_seconds_f64(),
            delay.to_seconds_f64(),
            seconds(output.map(|o| o.dispersion)),
            seconds(output.map(|o| o.jitter)),
            association.reach(),
            state.as_str(),
        );
        self.peers.append(&line);
    }
}

/// An append-only file that is rotated at a size bound.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    header: &'static str,
    file: File,
    written: u64,
    max_bytes: u64,
    failed: bool,
}

impl RotatingFile {
    fn open(path: PathBuf, header: &'static str, max_bytes: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut written = file.metadata()?.len();
        if written == 0 {
            file.write_all(format!("{header}\n").as_bytes())?;
            written = header.len() as u64 + 1;
        }
        Ok(Self { path, header, file, written, max_bytes, failed: false })
    }

    fn append(&mut self, line: &str) {
        let result = self.rotate_if_full(line.len() as u64).and_then(|()| self.file.write_all(line.as_bytes()));
        match result {
            Ok(()) => {
                self.written += line.len() as u64;
                self.failed = false;
            }
            Err(error) if !self.failed => {
                warn!(path = %self.path.display(), %error, "cannot write statistics");
                self.failed = true;
            }
            Err(_) => {}
        }
    }

    /// `name.2` -> `name.3`, `name.1` -> `name.2`, `name` -> `name.1`, then a fresh `name`.
    fn rotate_if_full(&mut self, adding: u64) -> io::Result<()> {
        if self.written + adding <= self.max_bytes {
            return Ok(());
        }
        for k in (1..KEEP).rev() {
            let from = rotated(&self.path, k);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, k + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        *self = Self::open(self.path.clone(), self.header, self.max_bytes)?;
        Ok(())
    }
}

/// The `k`th rotated file of `path` (`loopstats.1` is the newest).
#[must_use]
pub fn rotated(path: &Path, k: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_at_the_bound_and_keep_three() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peerstats");
        let mut file = RotatingFile::open(path.clone(), PEERSTATS_HEADER, 200).unwrap();
        for i in 0..100 {
            file.append(&format!("{i:040}\n"));
        }
        for k in 1..=KEEP {
            let text = std::fs::read_to_string(rotated(&path, k)).unwrap();
            assert!(text.starts_with(PEERSTATS_HEADER) && text.len() <= 200, "{k}: {text}");
        }
        assert!(!rotated(&path, KEEP + 1).exists());
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 200 && current.trim_end().ends_with(&format!("{:040}", 99)));
    }
}
