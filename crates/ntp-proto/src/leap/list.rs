//! The IETF/IERS `leap-seconds.list` file: parse it, check its SHA-1 line
//! and expiry, emit one, and say what the leap state is at a given time.
//!
//! The format, as the IERS and NIST files and ntpd's reader have it:
//! - a data line is `<NTP seconds> <TAI − UTC>`, optionally followed by a
//!   `#` comment: from that UTC second on, TAI − UTC is that many seconds;
//! - `#$ <NTP seconds>` is the last update, `#@ <NTP seconds>` the expiry;
//! - `#h <five hex words>` is the SHA-1 of the data. The hash input is the
//!   decimal digits of the `#$` value, the `#@` value and both fields of
//!   every data line, concatenated in file order with nothing between them:
//!   no whitespace, no comments, no line ends. Each word is 32 bits of the
//!   digest, big-endian; published files drop a word's leading zeros, so a
//!   word has one to eight hex digits;
//! - any other line starting with `#` is a comment.

use core::fmt::Write as _;

use sha1::{Digest, Sha1};
use thiserror::Error;

use super::{is_first_of_month, seconds_near, Leap, LeapKind};
use crate::packet::LeapIndicator;
use crate::time::NtpTimestamp;

/// Times are kept below 2^40 s after 1900 (the year 36,000), so every sum
/// of them fits.
const MAX_SECONDS: u64 = 1 << 40;

/// One line of the table: from `start` on, TAI − UTC is `tai_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeapEntry {
    /// NTP seconds since 1900-01-01 (not wrapped into an era).
    pub start: u64,
    /// TAI − UTC in seconds from `start` on.
    pub tai_offset: i32,
}

/// A checked leap-second table: hash verified, entries in order, each leap
/// a one-second step at the start of a month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeapSecondsList {
    updated: u64,
    expires: u64,
    entries: Vec<LeapEntry>,
}

/// Why a leap-second file is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeapListError {
    /// A line is not part of the format, or a value is out of range.
    #[error("line {line}: {reason}")]
    Corrupt {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A required line (`#$`, `#@` or `#h`) is absent.
    #[error("no {0} line")]
    Missing(&'static str),
    /// The `#h` line does not match the data: the file was altered.
    #[error("hash mismatch: the file says {stated}, the data hashes to {computed}")]
    HashMismatch {
        /// The digest the `#h` line states, as 40 hex digits.
        stated: String,
        /// The digest of the data, as 40 hex digits.
        computed: String,
    },
    /// The `#@` expiry is not after the `#$` last update, or either is past
    /// the year 36,000 (2^40 s).
    #[error("expiry {expires} is not after last update {updated}, or out of range")]
    BadValidity {
        /// The `#$` value, NTP seconds since 1900.
        updated: u64,
        /// The `#@` value, NTP seconds since 1900.
        expires: u64,
    },
    /// The file lists no leap-second entries.
    #[error("no entries")]
    NoEntries,
    /// The table's entries contradict each other or the calendar.
    #[error("entry {index}: {reason}")]
    Inconsistent {
        /// 0-based index of the offending entry.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file's expiry has passed at the time it was checked.
    #[error("expired at NTP second {expires}, now {now}")]
    Expired {
        /// The `#@` value, NTP seconds since 1900.
        expires: u64,
        /// The time it was checked at, NTP seconds since 1900.
        now: i128,
    },
}

/// What the table says at one UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeapState {
    /// TAI − UTC now; `None` before the table's first entry.
    pub tai_offset: Option<i32>,
    /// The most recent leap at or before now, whose smear may still run.
    pub last: Option<Leap>,
    /// The first leap after now.
    pub next: Option<Leap>,
    /// What a primary server that steps for the leap announces now:
    /// the next leap's indicator during its last day, else no warning.
    pub indicator: LeapIndicator,
}

impl LeapSecondsList {
    /// A table from its parts, checked as a parsed file is (apart from the
    /// hash, which [`emit`](Self::emit) computes).
    ///
    /// # Errors
    /// [`LeapListError::BadValidity`], [`LeapListError::NoEntries`] or
    /// [`LeapListError::Inconsistent`].
    pub fn new(updated: u64, expires: u64, entries: Vec<LeapEntry>) -> Result<Self, LeapListError> {
        if expires <= updated || expires >= MAX_SECONDS {
            return Err(LeapListError::BadValidity { updated, expires });
        }
        check_entries(&entries)?;
        Ok(Self { updated, expires, entries })
    }

    /// Parses and checks a file: syntax, required lines, the SHA-1 line
    /// and the table's consistency. Expiry is a matter of the time: see
    /// [`check_current`](Self::check_current) and [`load`](Self::load).
    ///
    /// # Errors
    /// Every [`LeapListError`] except `Expired`.
    pub fn parse(text: &str) -> Result<Self, LeapListError> {
        let mut hasher = Sha1::new();
        let mut updated = None;
        let mut expires = None;
        let mut stated_hash = None;
        let mut entries = Vec::new();
        for (index, raw_line) in text.lines().enumerate() {
            let line = index + 1;
            let corrupt = |reason| LeapListError::Corrupt { line, reason };
            let content = raw_line.trim();
            if let Some(value) = content.strip_prefix("#$") {
                let digits = single_number(value).ok_or(corrupt("#$ wants one number"))?;
                set_once(&mut updated, parse_seconds(digits).ok_or(corrupt("#$ value out of range"))?)
                    .ok_or(corrupt("second #$ line"))?;
                hasher.update(digits);
            } else if let Some(value) = content.strip_prefix("#@") {
                let digits = single_number(value).ok_or(corrupt("#@ wants one number"))?;
                set_once(&mut expires, parse_seconds(digits).ok_or(corrupt("#@ value out of range"))?)
                    .ok_or(corrupt("second #@ line"))?;
                hasher.update(digits);
            } else if let Some(value) = content.strip_prefix("#h") {
                let words = parse_hash(value).ok_or(corrupt("#h wants five hex words"))?;
                set_once(&mut stated_hash, words).ok_or(corrupt("second #h line"))?;
            } else if content.is_empty() || content.starts_with('#') {
                continue;
            } else {
                let data = content.split('#').next().unwrap_or_default();
                let mut fields = data.split_ascii_whitespace();
                let (Some(start), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
                    return Err(corrupt("a data line wants two numbers"));
                };
                let start_seconds = parse_seconds(start).ok_or(corrupt("NTP time is not a number in range"))?;
                let tai_offset = parse_digits(offset)
                    .and_then(|value| i32::try_from(value).ok())
                    .ok_or(corrupt("TAI - UTC is not a number in range"))?;
                hasher.update(start);
                hasher.update(offset);
                entries.push(LeapEntry { start: start_seconds, tai_offset });
            }
        }
        let updated = updated.ok_or(LeapListError::Missing("#$ (last update)"))?;
        let expires = expires.ok_or(LeapListError::Missing("#@ (expiry)"))?;
        let stated = stated_hash.ok_or(LeapListError::Missing("#h (hash)"))?;
        let computed: [u8; 20] = hasher.finalize().into();
        if computed != stated {
            return Err(LeapListError::HashMismatch { stated: hex(&stated), computed: hex(&computed) });
        }
        Self::new(updated, expires, entries)
    }

    /// Parses a file and checks it has not expired at UTC `now`: what a
    /// daemon does at start.
    ///
    /// # Errors
    /// Any [`LeapListError`].
    pub fn load(text: &str, now: NtpTimestamp) -> Result<Self, LeapListError> {
        let list = Self::parse(text)?;
        list.check_current(now)?;
        Ok(list)
    }

    /// Whether the table may still be trusted at UTC `now`.
    ///
    /// # Errors
    /// [`LeapListError::Expired`] from the `#@` second on.
    pub fn check_current(&self, now: NtpTimestamp) -> Result<(), LeapListError> {
        let now = self.resolve(now);
        if now >= i128::from(self.expires) {
            return Err(LeapListError::Expired { expires: self.expires, now });
        }
        Ok(())
    }

    /// The leap state at UTC `now` (the served time of a stepping server):
    /// the offset in force, the last and next leap, and the indicator a
    /// primary announces.
    ///
    /// # Errors
    /// [`LeapListError::Expired`]: an expired table is not trusted.
    pub fn state_at(&self, now: NtpTimestamp) -> Result<LeapState, LeapListError> {
        self.check_current(now)?;
        let now_seconds = self.resolve(now);
        let passed = self.entries.partition_point(|entry| i128::from(entry.start) <= now_seconds);
        let tai_offset = passed.checked_sub(1).and_then(|index| self.entries.get(index)).map(|e| e.tai_offset);
        let last = passed.checked_sub(1).and_then(|index| self.leap_at(index));
        // Before the first entry, the first leap is the second entry.
        let next = self.leap_at(passed.max(1));
        let indicator = match next {
            Some(leap) if leap.announced_at(now) => leap.kind.indicator(),
            _ => LeapIndicator::NoWarning,
        };
        Ok(LeapState { tai_offset, last, next, indicator })
    }

    /// Every leap in the table, oldest first (the first entry, which only
    /// sets the initial offset, is not a leap).
    pub fn leaps(&self) -> impl Iterator<Item = Leap> + '_ {
        (1..self.entries.len()).filter_map(|index| self.leap_at(index))
    }

    /// The table's entries, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[LeapEntry] {
        &self.entries
    }

    /// The `#$` last update, NTP seconds since 1900.
    #[must_use]
    pub fn updated(&self) -> u64 {
        self.updated
    }

    /// The `#@` expiry, NTP seconds since 1900.
    #[must_use]
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The table as a minimal file in the same format, with its `#h` line:
    /// what tests write to make a leap file of their own.
    #[must_use]
    pub fn emit(&self) -> String {
        let mut hasher = Sha1::new();
        let mut text = String::from("# leap-seconds.list\n");
        let updated = self.updated.to_string();
        let expires = self.expires.to_string();
        hasher.update(&updated);
        hasher.update(&expires);
        let _ = writeln!(text, "#$\t{updated}\n#@\t{expires}");
        for entry in &self.entries {
            let start = entry.start.to_string();
            let offset = entry.tai_offset.to_string();
            hasher.update(&start);
            hasher.update(&offset);
            let _ = writeln!(text, "{start}\t{offset}");
        }
        let digest: [u8; 20] = hasher.finalize().into();
        let words: Vec<String> = digest.chunks(4).map(hex).collect();
        let _ = writeln!(text, "#h\t{}", words.join(" "));
        text
    }

    /// The leap that entry `index` starts, from the offset step before it.
    fn leap_at(&self, index: usize) -> Option<Leap> {
        let before = self.entries.get(index.checked_sub(1)?)?;
        let entry = self.entries.get(index)?;
        let kind = if entry.tai_offset > before.tai_offset { LeapKind::Insert } else { LeapKind::Delete };
        Some(Leap { at: NtpTimestamp::from_parts(entry.start as u32, 0), kind })
    }

    /// `now` in seconds since 1900, its era taken from the last update.
    fn resolve(&self, now: NtpTimestamp) -> i128 {
        seconds_near(now, self.updated)
    }
}

/// Entries strictly increasing, each at the start of a month, and each
/// after the first one second away from its predecessor's offset.
fn check_entries(entries: &[LeapEntry]) -> Result<(), LeapListError> {
    if entries.is_empty() {
        return Err(LeapListError::NoEntries);
    }
    for (index, entry) in entries.iter().enumerate() {
        let inconsistent = |reason| LeapListError::Inconsistent { index, reason };
        if entry.start >= MAX_SECONDS || !is_first_of_month(entry.start) {
            return Err(inconsistent("not 00:00:00 UTC of the first day of a month"));
        }
        if entry.tai_offset < 0 {
            return Err(inconsistent("TAI - UTC is negative"));
        }
        let Some(before) = index.checked_sub(1).and_then(|previous| entries.get(previous)) else {
            continue;
        };
        if entry.start <= before.start {
            return Err(inconsistent("not after the entry before it"));
        }
        if i64::from(entry.tai_offset).abs_diff(i64::from(before.tai_offset)) != 1 {
            return Err(inconsistent("TAI - UTC does not change by one second"));
        }
    }
    Ok(())
}

/// The one number on a `#$` or `#@` line.
fn single_number(value: &str) -> Option<&str> {
    let mut fields = value.split_ascii_whitespace();
    match (fields.next(), fields.next()) {
        (Some(number), None) if parse_digits(number).is_some() => Some(number),
        _ => None,
    }
}

/// NTP seconds since 1900, below [`MAX_SECONDS`].
fn parse_seconds(digits: &str) -> Option<u64> {
    parse_digits(digits).filter(|&value| value < MAX_SECONDS)
}

/// A non-empty run of ASCII decimal digits (no sign, unlike `str::parse`).
fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Five words of one to eight hex digits into the 20-byte digest.
fn parse_hash(value: &str) -> Option<[u8; 20]> {
    let mut digest = [0u8; 20];
    let mut words = value.split_ascii_whitespace();
    for chunk in digest.chunks_mut(4) {
        let word = words.next()?;
        if word.len() > 8 || !word.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        chunk.copy_from_slice(&u32::from_str_radix(word, 16).ok()?.to_be_bytes());
    }
    words.next().is_none().then_some(digest)
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, tai_offset: i32) -> LeapEntry {
        LeapEntry { start, tai_offset }
    }

    /// 2015-07-01, 2017-01-01 and 2018-07-01 (the last invented, a deletion).
    fn table() -> LeapSecondsList {
        let entries = vec![entry(3_644_697_600, 36), entry(3_692_217_600, 37), entry(3_739_392_000, 36)];
        LeapSecondsList::new(3_692_000_000, 3_800_000_000, entries).unwrap()
    }

    #[test]
    fn emit_then_parse_is_the_identity() {
        let list = table();
        assert_eq!(LeapSecondsList::parse(&list.emit()).unwrap(), list);
    }

    #[test]
    fn hash_words_may_drop_leading_zeros() {
        assert_eq!(parse_hash("1 0 a 00000000 ffffffff").unwrap()[..4], [0, 0, 0, 1]);
        assert!(parse_hash("1 2 3 4").is_none());
        assert!(parse_hash("1 2 3 4 5 6").is_none());
        assert!(parse_hash("1 2 3 4 123456789").is_none());
        assert!(parse_hash("1 2 3 4 -5").is_none());
    }

    #[test]
    fn a_changed_offset_fails_the_hash() {
        let text = table().emit().replace("3692217600\t37", "3692217600\t38");
        assert!(matches!(LeapSecondsList::parse(&text), Err(LeapListError::HashMismatch { .. })));
    }

    #[test]
    fn comments_and_whitespace_are_not_hashed() {
        let text = table().emit().replace("3692217600\t37", "  3692217600     37   # 1 Jan 2017");
        let text = text.replace("#$", "# a comment\n\n#$");
        assert_eq!(LeapSecondsList::parse(&text).unwrap(), table());
    }

    #[test]
    fn state_before_between_and_after_leaps() {
        let list = table();
        let at = |s: u32| list.state_at(NtpTimestamp::from_parts(s, 0)).unwrap();
        let before = at(3_692_217_600 - 86_401);
        assert_eq!((before.tai_offset, before.indicator), (Some(36), LeapIndicator::NoWarning));
        assert_eq!(before.next.unwrap().kind, LeapKind::Insert);
        let last_day = at(3_692_217_600 - 86_400);
        assert_eq!((last_day.tai_offset, last_day.indicator), (Some(36), LeapIndicator::Insert));
        let after = at(3_692_217_600);
        assert_eq!((after.tai_offset, after.indicator), (Some(37), LeapIndicator::NoWarning));
        assert_eq!(after.last.unwrap().at.seconds(), 3_692_217_600);
        assert_eq!(after.next.unwrap().kind, LeapKind::Delete);
        assert_eq!(at(3_739_392_000 - 1).indicator, LeapIndicator::Delete);
        let early = at(3_644_697_599);
        assert_eq!((early.tai_offset, early.last), (None, None));
        assert_eq!(early.next.map(|leap| leap.at.seconds()), Some(3_692_217_600));
    }

    #[test]
    fn expired_is_not_trusted() {
        let list = table();
        let expiry = NtpTimestamp::from_parts(3_800_000_000, 0);
        assert!(list.state_at(expiry - crate::time::NtpDuration::from_bits(1)).is_ok());
        assert_eq!(list.state_at(expiry), Err(LeapListError::Expired { expires: 3_800_000_000, now: 3_800_000_000 }));
        assert!(LeapSecondsList::load(&list.emit(), expiry).is_err());
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let two = |a, b| LeapSecondsList::new(1, 2, vec![entry(3_644_697_600, 36), entry(a, b)]);
        assert_eq!(
            two(3_692_217_600, 38).unwrap_err(),
            LeapListError::Inconsistent { index: 1, reason: "TAI - UTC does not change by one second" }
        );
        assert!(matches!(two(3_644_697_600, 37), Err(LeapListError::Inconsistent { index: 1, .. })));
        assert!(matches!(two(3_692_217_600 - 86_400, 37), Err(LeapListError::Inconsistent { index: 1, .. })));
        assert_eq!(LeapSecondsList::new(1, 2, vec![]), Err(LeapListError::NoEntries));
        assert!(matches!(
            LeapSecondsList::new(2, 2, vec![entry(3_644_697_600, 36)]),
            Err(LeapListError::BadValidity { .. })
        ));
        assert!(matches!(
            LeapSecondsList::new(1, 2, vec![entry(3_644_697_600, -1)]),
            Err(LeapListError::Inconsistent { .. })
        ));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = table().emit().replace("3692217600\t37", "3692217600\t+37");
        assert_eq!(
            LeapSecondsList::parse(&text),
            Err(LeapListError::Corrupt { line: 5, reason: "TAI - UTC is not a number in range" })
        );
        let text = table().emit().replace("#@", "#$");
        assert!(matches!(LeapSecondsList::parse(&text), Err(LeapListError::Corrupt { line: 3, .. })));
        let text: String = table().emit().lines().filter(|l| !l.starts_with("#h")).collect::<Vec<_>>().join("\n");
        assert_eq!(LeapSecondsList::parse(&text), Err(LeapListError::Missing("#h (hash)")));
    }
}
