//! Statistics logs (`serve --stats-dir DIR`): one line per clock update in
//! `loopstats` and one per upstream sample in `peerstats`, as NTPsec's files
//! of the same names hold, in a whitespace-separated format documented in
//! `docs/operations.md`. Each file is rotated at a size bound: `loopstats`
//! becomes `loopstats.1`, and so on, keeping [`KEEP`] old files.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ntp_proto::discipline::Adjustment;
use ntp_proto::system::Synchronization;
use ntp_proto::NtpDuration;
use tracing::warn;

use super::status::{Selection, UpstreamStatus};

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

/// One line of `loopstats`: a clock update. Written by [`StatsLog`] and
/// read back by `ntpd-sim plot`, both through this type.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopRecord {
    /// Unix time, seconds.
    pub time: f64,
    /// Phase error found, seconds.
    pub offset: f64,
    /// Correction frequency, ppm.
    pub frequency_ppm: f64,
    /// Discipline jitter, seconds.
    pub jitter: f64,
    /// Poll exponent asked for, log2 s.
    pub poll: i8,
    /// Stratum served after the update.
    pub stratum: u8,
    /// The system peer, by name.
    pub system_peer: String,
    /// What the update did: `step`, `slew` or `held`.
    pub adjustment: String,
}

impl LoopRecord {
    /// The clock update `sync` at `unix` time through system peer `peer`.
    #[must_use]
    pub fn new(unix: f64, sync: &Synchronization, peer: &str) -> Self {
        let u = sync.update;
        let adjustment = match u.adjustment {
            Adjustment::Stepped(_) => "step",
            Adjustment::Slewing(_) => "slew",
            Adjustment::Held(_) => "held",
        };
        Self {
            time: unix,
            offset: u.offset.to_seconds_f64(),
            frequency_ppm: u.frequency_ppm,
            jitter: u.jitter.to_seconds_f64(),
            poll: u.poll,
            stratum: sync.stratum.0,
            system_peer: peer.into(),
            adjustment: adjustment.into(),
        }
    }
}

impl fmt::Display for LoopRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.6} {:.9e} {:.6} {:.9e} {} {} {} {}",
            self.time,
            self.offset,
            self.frequency_ppm,
            self.jitter,
            self.poll,
            self.stratum,
            self.system_peer,
            self.adjustment
        )
    }
}

impl FromStr for LoopRecord {
    type Err = ();

    fn from_str(line: &str) -> Result<Self, ()> {
        let mut fields = line.split_whitespace();
        let mut next = || fields.next().ok_or(());
        Ok(Self {
            time: number(next()?)?,
            offset: number(next()?)?,
            frequency_ppm: number(next()?)?,
            jitter: number(next()?)?,
            poll: number(next()?)?,
            stratum: number(next()?)?,
            system_peer: next()?.into(),
            adjustment: next()?.into(),
        })
    }
}

/// One line of `peerstats`: a sample of one upstream, with its clock
/// filter's dispersion and jitter and its selection state after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    /// Unix time, seconds.
    pub time: f64,
    /// The upstream's name.
    pub upstream: String,
    /// Its offset from our clock, seconds.
    pub offset: f64,
    /// Round-trip delay, seconds.
    pub delay: f64,
    /// Filter dispersion, seconds (0 before the filter has output).
    pub dispersion: f64,
    /// Filter jitter, seconds (0 before the filter has output).
    pub jitter: f64,
    /// Its stratum (0 before it answered).
    pub stratum: u8,
    /// Reachability register (written in octal, as `ntpq` prints it).
    pub reach: u8,
    /// Where selection left it (kebab-case).
    pub state: String,
}

impl PeerRecord {
    /// A sample of `upstream` (as just published) at `unix` time: its
    /// offset from the served clock and its delay.
    #[must_use]
    pub fn new(unix: f64, upstream: &UpstreamStatus, offset: NtpDuration, delay: NtpDuration) -> Self {
        let seconds = |d: Option<NtpDuration>| d.map_or(0.0, NtpDuration::to_seconds_f64);
        let output = upstream.output;
        let state = Selection::of(upstream.selection, upstream.reach, upstream.stopped.is_some());
        Self {
            time: unix,
            upstream: upstream.name.clone(),
            offset: offset.to_seconds_f64(),
            delay: delay.to_seconds_f64(),
            dispersion: seconds(output.map(|o| o.dispersion)),
            jitter: seconds(output.map(|o| o.jitter)),
            stratum: upstream.info.map_or(0, |i| i.stratum.0),
            reach: upstream.reach,
            state: state.as_str().into(),
        }
    }
}

impl fmt::Display for PeerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.6} {} {:.9e} {:.9e} {:.9e} {:.9e} {} {:o} {}",
            self.time,
            self.upstream,
            self.offset,
            self.delay,
            self.dispersion,
            self.jitter,
            self.stratum,
            self.reach,
            self.state
        )
    }
}

impl FromStr for PeerRecord {
    type Err = ();

    fn from_str(line: &str) -> Result<Self, ()> {
        let mut fields = line.split_whitespace();
        let mut next = || fields.next().ok_or(());
        Ok(Self {
            time: number(next()?)?,
            upstream: next()?.into(),
            offset: number(next()?)?,
            delay: number(next()?)?,
            dispersion: number(next()?)?,
            jitter: number(next()?)?,
            stratum: number(next()?)?,
            reach: u8::from_str_radix(next()?, 8).map_err(drop)?,
            state: next()?.into(),
        })
    }
}

fn number<T: FromStr>(field: &str) -> Result<T, ()> {
    field.parse().map_err(drop)
}

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

    /// Appends a clock update to `loopstats`.
    pub fn clock_update(&mut self, record: &LoopRecord) {
        self.loops.append(&format!("{record}\n"));
    }

    /// Appends an upstream sample to `peerstats`.
    pub fn peer_sample(&mut self, record: &PeerRecord) {
        self.peers.append(&format!("{record}\n"));
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
    fn records_read_back_what_was_written() {
        let lp = LoopRecord {
            time: 1_800_000_000.25,
            offset: -1.5e-4,
            frequency_ppm: -19.75,
            jitter: 2e-6,
            poll: 4,
            stratum: 2,
            system_peer: "127.0.0.1:123".into(),
            adjustment: "slew".into(),
        };
        assert_eq!(lp.to_string().parse::<LoopRecord>(), Ok(lp.clone()));
        assert_eq!(lp.to_string().split_whitespace().count(), LOOPSTATS_HEADER.split_whitespace().count() - 1);
        let peer = PeerRecord {
            time: 1_800_000_000.5,
            upstream: "a:123".into(),
            offset: 3e-5,
            delay: 1e-4,
            dispersion: 1e-3,
            jitter: 5e-6,
            stratum: 1,
            reach: 0o377,
            state: "system-peer".into(),
        };
        let line = peer.to_string();
        assert!(line.contains(" 377 "), "{line}");
        assert_eq!(line.parse::<PeerRecord>(), Ok(peer));
        assert_eq!(line.split_whitespace().count(), PEERSTATS_HEADER.split_whitespace().count() - 1);
        assert_eq!("1 2 3".parse::<PeerRecord>(), Err(()));
    }

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
