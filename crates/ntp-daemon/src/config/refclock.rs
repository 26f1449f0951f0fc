//! `[[refclock]]` tables and `--refclock` flags: the reference clocks a
//! stratum 1 takes its time from (gpsd's SHM segment or chrony SOCK
//! socket), checked into [`RefclockConfig`]s. The keys are chrony's
//! `refclock` options, spelled kebab-case.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ntp_proto::packet::ReferenceId;
use serde::Deserialize;

use super::ConfigError;

/// The driver: where the samples come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// The NTP shared-memory segment `unit` (key 0x4e545030 + unit).
    Shm,
    /// chrony's SOCK protocol on the Unix datagram socket `path`.
    Sock,
}

/// One `[[refclock]]` table, or one `--refclock` flag, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RefclockSection {
    /// `shm` or `sock`.
    pub driver: Option<Driver>,
    /// SHM unit (0-255).
    pub unit: Option<u8>,
    /// SOCK: the socket the daemon binds (gpsd sends to `/run/chrony.DEVICE.sock`).
    pub path: Option<PathBuf>,
    /// Reference ID advertised while it is the system peer (default `GPS`).
    pub refid: Option<String>,
    /// Seconds added to every sample (positive: the reference reports late).
    pub offset: Option<f64>,
    /// Delay credited to the samples, seconds (default 1e-9).
    pub delay: Option<f64>,
    /// Precision of the reference, seconds (default 1e-6).
    pub precision: Option<f64>,
    /// Poll: readings are reduced to one sample every 2^poll s (default 4).
    pub poll: Option<i8>,
    /// Chosen as system peer whenever it survives selection.
    pub prefer: Option<bool>,
    /// Shown but never selected.
    pub noselect: Option<bool>,
    /// Always true: voted out only by other trusted sources.
    pub trust: Option<bool>,
    /// A PPS: its samples give only the fraction of a second, the seconds
    /// come from the reference clock of this refid.
    pub lock: Option<String>,
}

/// A reference clock, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RefclockConfig {
    /// Where its samples come from.
    pub source: RefclockSource,
    /// Advertised while it is the system peer.
    pub refid: ReferenceId,
    /// Added to every sample, seconds.
    pub offset: f64,
    /// Delay of its samples, seconds.
    pub delay: f64,
    /// Precision, seconds.
    pub precision: f64,
    /// Log2 seconds between samples handed to the synchronizer.
    pub poll: i8,
    /// Preferred.
    pub prefer: bool,
    /// Never selected.
    pub noselect: bool,
    /// Trusted (chrony's `trust`).
    pub trust: bool,
    /// The refid of the reference clock a PPS takes its seconds from.
    pub lock: Option<ReferenceId>,
}

/// A driver and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefclockSource {
    /// SHM unit.
    Shm(u8),
    /// SOCK socket path.
    Sock(PathBuf),
}

impl fmt::Display for RefclockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shm(unit) => write!(f, "shm:{unit}"),
            Self::Sock(path) => write!(f, "sock:{}", path.display()),
        }
    }
}

/// Default `poll`: chrony's.
pub const DEFAULT_POLL: i8 = 4;
/// Default `precision`, seconds.
pub const DEFAULT_PRECISION: f64 = 1e-6;
/// Default `delay`, seconds: chrony's.
pub const DEFAULT_DELAY: f64 = 1e-9;

/// `--refclock shm:UNIT[,KEY=VALUE...]` or `sock:PATH[,KEY=VALUE...]`,
/// the keys those of a `[[refclock]]` table (`prefer`, `noselect` and `trust` alone).
impl FromStr for RefclockSection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let mut section = match head.split_once(':') {
            Some(("shm", unit)) => Self {
                driver: Some(Driver::Shm),
                unit: Some(unit.parse().map_err(|_| format!("`{unit}` is not an SHM unit 0-255"))?),
                ..Self::default()
            },
            Some(("sock", path)) if !path.is_empty() => {
                Self { driver: Some(Driver::Sock), path: Some(path.into()), ..Self::default() }
            }
            _ => return Err(format!("`{head}` is not shm:UNIT or sock:PATH")),
        };
        for option in parts {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            let number = |value: &str| value.parse::<f64>().map_err(|_| format!("{key}: `{value}` is not a number"));
            match key {
                "refid" => section.refid = Some(value.into()),
                "lock" => section.lock = Some(value.into()),
                "offset" => section.offset = Some(number(value)?),
                "delay" => section.delay = Some(number(value)?),
                "precision" => section.precision = Some(number(value)?),
                "poll" => section.poll = Some(value.parse().map_err(|_| format!("poll: `{value}` is not log2 s"))?),
                "prefer" => section.prefer = Some(true),
                "noselect" => section.noselect = Some(true),
                "trust" => section.trust = Some(true),
                _ => return Err(format!("unknown refclock option `{key}`")),
            }
        }
        Ok(section)
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid { key: "refclock", reason }
}

impl RefclockSection {
    /// Checks one table.
    pub fn check(&self) -> Result<RefclockConfig, ConfigError> {
        let source = match (self.driver, self.unit, &self.path) {
            (Some(Driver::Shm), Some(unit), None) => RefclockSource::Shm(unit),
            (Some(Driver::Sock), None, Some(path)) => RefclockSource::Sock(path.clone()),
            (None, ..) => return Err(invalid("`driver` is missing (shm or sock)".into())),
            (Some(Driver::Shm), ..) => return Err(invalid("driver shm takes `unit` and no `path`".into())),
            (Some(Driver::Sock), ..) => return Err(invalid("driver sock takes `path` and no `unit`".into())),
        };
        let code = |text: &str| {
            ReferenceId::from_code(text).ok_or_else(|| invalid(format!("refid `{text}` is not 1-4 ASCII characters")))
        };
        let refid = code(self.refid.as_deref().unwrap_or("GPS"))?;
        let lock = self.lock.as_deref().map(code).transpose()?;
        let seconds = |value: Option<f64>, default: f64, name: &str, range: std::ops::RangeInclusive<f64>| {
            let value = value.unwrap_or(default);
            if value.is_finite() && range.contains(&value) {
                Ok(value)
            } else {
                Err(invalid(format!("{source}: {name} {value} is not within {range:?} s")))
            }
        };
        let offset = seconds(self.offset, 0.0, "offset", -10.0..=10.0)?;
        let delay = seconds(self.delay, DEFAULT_DELAY, "delay", 0.0..=1.0)?;
        let precision = seconds(self.precision, DEFAULT_PRECISION, "precision", 1e-9..=1.0)?;
        let poll = self.poll.unwrap_or(DEFAULT_POLL);
        if !(-4..=10).contains(&poll) {
            return Err(invalid(format!("{source}: poll {poll} is not within -4..=10")));
        }
        let (prefer, noselect) = (self.prefer.unwrap_or(false), self.noselect.unwrap_or(false));
        let trust = self.trust.unwrap_or(false);
        Ok(RefclockConfig { source, refid, offset, delay, precision, poll, prefer, noselect, trust, lock })
    }
}

/// The flags' reference clocks if any were given, else the file's; each
/// checked, no device and no refid given twice (two readers of one SHM
/// unit steal each other's samples; a second socket on one path unlinks
/// the first's), and each `lock` naming another's refid, one that locks to
/// nothing itself (a chain or a cycle of locks never gets its seconds).
pub fn merge(file: &[RefclockSection], flags: &[RefclockSection]) -> Result<Vec<RefclockConfig>, ConfigError> {
    let chosen = if flags.is_empty() { file } else { flags };
    let refclocks: Vec<RefclockConfig> = chosen.iter().map(RefclockSection::check).collect::<Result<_, _>>()?;
    for (i, refclock) in refclocks.iter().enumerate() {
        let earlier = &refclocks[..i];
        if earlier.iter().any(|other| other.source == refclock.source) {
            return Err(invalid(format!("{}: the same device is given twice", refclock.source)));
        }
        if earlier.iter().any(|other| other.refid == refclock.refid) {
            let refid = refclock.refid.display(ntp_proto::packet::Stratum(1));
            return Err(invalid(format!("{}: refid {refid} is another refclock's already", refclock.source)));
        }
        if let Some(lock) = refclock.lock {
            let target = refclocks.iter().enumerate().find(|(j, other)| *j != i && other.refid == lock);
            match target {
                None => return Err(invalid(format!("{}: lock names no other refclock's refid", refclock.source))),
                Some((_, target)) if target.lock.is_some() => {
                    return Err(invalid(format!("{}: lock names a refclock that is locked itself", refclock.source)));
                }
                Some(_) => {}
            }
        }
    }
    Ok(refclocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    #[test]
    fn a_device_or_refid_given_twice_and_chained_locks_are_refused() {
        let refuse = |flags: &[&str], expected: &str| {
            let sections: Vec<RefclockSection> = flags.iter().map(|f| f.parse().unwrap()).collect();
            let error = merge(&[], &sections).unwrap_err().to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
        };
        refuse(&["shm:0,refid=GPS", "shm:0,refid=GPS2"], "same device");
        refuse(&["sock:/run/a.sock,refid=A", "sock:/run/a.sock,refid=B"], "same device");
        refuse(&["shm:0,refid=GPS", "shm:1,refid=GPS"], "another refclock's");
        refuse(&["sock:/run/p.sock,refid=PPS,lock=PPS"], "no other");
        refuse(&["shm:0,refid=A,lock=B", "shm:1,refid=B,lock=A"], "locked itself");
        let fine: Vec<RefclockSection> =
            ["shm:0,refid=GPS", "sock:/run/p.sock,refid=PPS,lock=GPS"].iter().map(|f| f.parse().unwrap()).collect();
        assert_eq!(merge(&[], &fine).unwrap().len(), 2);
    }

    #[test]
    fn tables_parse_and_a_typo_is_refused_by_name() {
        let file = FileConfig::parse(
            "[[refclock]]\ndriver = \"shm\"\nunit = 0\nrefid = \"GPS\"\noffset = 0.05\ndelay = 0.2\nnoselect = true\n\
             [[refclock]]\ndriver = \"sock\"\npath = \"/run/chrony.ttyS0.sock\"\nrefid = \"PPS\"\nlock = \"GPS\"\nprefer = true\n",
        )
        .unwrap();
        let refclocks = merge(&file.refclock, &[]).unwrap();
        assert_eq!(refclocks.len(), 2);
        assert_eq!(refclocks[0].source, RefclockSource::Shm(0));
        assert_eq!((refclocks[0].offset, refclocks[0].delay, refclocks[0].noselect), (0.05, 0.2, true));
        assert_eq!(refclocks[1].lock, ReferenceId::from_code("GPS"));
        let err = FileConfig::parse("[[refclock]]\ndriver = \"shm\"\nunit = 0\nofset = 0.1\n").unwrap_err();
        assert!(err.contains("ofset"), "{err}");
        let err = FileConfig::parse("[[refclock]]\ndriver = \"gps\"\n").unwrap_err();
        assert!(err.contains("gps"), "{err}");
    }

    #[test]
    fn flags_parse_with_options_and_beat_the_file() {
        let flag: RefclockSection = "shm:2,refid=NMEA,offset=-0.1,poll=0,prefer,trust".parse().unwrap();
        let file: RefclockSection = "sock:/tmp/x.sock".parse().unwrap();
        let merged = merge(std::slice::from_ref(&file), std::slice::from_ref(&flag)).unwrap();
        assert_eq!(merged.len(), 1);
        let r = &merged[0];
        assert_eq!((r.source.to_string(), r.offset, r.poll, r.prefer), ("shm:2".to_string(), -0.1, 0, true));
        assert!(r.trust);
        assert_eq!(merge(&[file], &[]).unwrap()[0].source.to_string(), "sock:/tmp/x.sock");
        assert!("shm:x".parse::<RefclockSection>().is_err());
        assert!("gps:0".parse::<RefclockSection>().is_err());
        assert!("shm:0,colour=red".parse::<RefclockSection>().unwrap_err().contains("colour"));
    }

    #[test]
    fn values_are_checked() {
        let check = |text: &str| text.parse::<RefclockSection>().unwrap().check();
        assert!(check("shm:0,offset=11").is_err());
        assert!(check("shm:0,delay=-1").is_err());
        assert!(check("shm:0,precision=0").is_err());
        assert!(check("shm:0,poll=11").is_err());
        assert!(check("shm:0,refid=TOOLONG").is_err());
        assert!(merge(&["shm:1,lock=NMEA".parse().unwrap()], &[]).is_err(), "a lock on nothing");
        let shm_with_path = RefclockSection { path: Some("/x".into()), ..RefclockSection::default() };
        assert!(RefclockSection { driver: Some(Driver::Shm), unit: Some(0), ..shm_with_path }.check().is_err());
    }
}
