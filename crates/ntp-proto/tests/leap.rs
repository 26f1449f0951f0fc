//! Known answers for the leap-second core, against the real
//! `leap-seconds.list` that Debian 12's tzdata 2025b ships at
//! `/usr/share/zoneinfo/leap-seconds.list` (the IERS file updated through
//! Bulletin C 69, expiring 2026-06-28), copied byte for byte to
//! `tests/data/leap-seconds.list`.

use ntp_proto::leap::{Leap, LeapEntry, LeapKind, LeapListError, LeapMode, LeapSecondsList, LeapSmear};
use ntp_proto::packet::LeapIndicator;
use ntp_proto::{NtpDuration, NtpTimestamp};
use sha1::{Digest, Sha1};

const REAL_FILE: &str = include_str!("data/leap-seconds.list");
/// `#$` and `#@` of the real file: 2025-07-10 and 2026-06-28.
const UPDATED: u64 = 3_960_835_200;
const EXPIRES: u64 = 3_991_593_600;
/// 2017-01-01 00:00:00 UTC: TAI − UTC went from 36 to 37 s.
const JAN_2017: u32 = 3_692_217_600;

fn at(seconds: u32) -> NtpTimestamp {
    NtpTimestamp::from_parts(seconds, 0)
}

fn real() -> LeapSecondsList {
    LeapSecondsList::parse(REAL_FILE).unwrap()
}

#[test]
fn the_real_file_parses() {
    let list = real();
    assert_eq!((list.updated(), list.expires()), (UPDATED, EXPIRES));
    let entries = list.entries();
    assert_eq!(entries.len(), 28);
    assert_eq!(entries[0], LeapEntry { start: 2_272_060_800, tai_offset: 10 });
    assert_eq!(entries[27], LeapEntry { start: u64::from(JAN_2017), tai_offset: 37 });
    let leaps: Vec<Leap> = list.leaps().collect();
    assert_eq!(leaps.len(), 27);
    assert!(leaps.iter().all(|leap| leap.kind == LeapKind::Insert));
    assert_eq!(leaps[0].at, at(2_287_785_600)); // 1972-07-01
}

/// The rule, spelled out independently of the parser: SHA-1 over the
/// decimal digits of `#$`, `#@` and every data line's two fields, in file
/// order, nothing between them; the `#h` words are the digest big-endian.
#[test]
fn the_hash_rule_matches_the_real_file() {
    let mut digits = String::new();
    for line in REAL_FILE.lines() {
        let data = match line.strip_prefix("#$").or_else(|| line.strip_prefix("#@")) {
            Some(value) => value,
            None if line.starts_with(|c: char| c.is_ascii_digit()) => line.split('#').next().unwrap(),
            None => continue,
        };
        digits.extend(data.chars().filter(char::is_ascii_digit));
    }
    assert!(digits.starts_with("39608352003991593600227206080010228778560011"));
    let digest = Sha1::digest(digits.as_bytes());
    let words: Vec<String> =
        digest.chunks(4).map(|w| format!("{:x}", u32::from_be_bytes(w.try_into().unwrap()))).collect();
    assert_eq!(words.join(" "), "49db2447 571e5e1b 2f002a53 9c8da8e4 39b8e49e");
    assert!(REAL_FILE.contains(&format!("#h\t{}", words.join(" "))));
}

#[test]
fn an_altered_real_file_is_refused() {
    let altered = REAL_FILE.replace("3692217600      37", "3692217600      38");
    assert_ne!(altered, REAL_FILE);
    assert!(matches!(LeapSecondsList::parse(&altered), Err(LeapListError::HashMismatch { .. })));
    let moved = REAL_FILE.replace("3692217600", "3692304000");
    assert!(matches!(LeapSecondsList::parse(&moved), Err(LeapListError::HashMismatch { .. })));
    let truncated = &REAL_FILE[..REAL_FILE.find("#h").unwrap()];
    assert_eq!(LeapSecondsList::parse(truncated), Err(LeapListError::Missing("#h (hash)")));
    // Comments are not hashed: editing one leaves the file valid.
    let commented = REAL_FILE.replace("# 1 Jan 2017", "# New Year 2017");
    assert_eq!(LeapSecondsList::parse(&commented), Ok(real()));
}

#[test]
fn the_real_file_expires_on_28_june_2026() {
    let list = real();
    assert!(LeapSecondsList::load(REAL_FILE, at(EXPIRES as u32 - 1)).is_ok());
    let expired = LeapSecondsList::load(REAL_FILE, at(EXPIRES as u32));
    assert_eq!(expired, Err(LeapListError::Expired { expires: EXPIRES, now: i128::from(EXPIRES) }));
    assert!(list.state_at(at(EXPIRES as u32 + 86_400)).is_err());
    let message = expired.unwrap_err().to_string();
    assert!(message.contains("expired"), "{message}");
}

#[test]
fn the_2016_leap_is_announced_on_31_december_only() {
    let list = real();
    let state = |seconds: u32| list.state_at(at(seconds)).unwrap();
    let dec_30_end = state(JAN_2017 - 86_401);
    assert_eq!((dec_30_end.indicator, dec_30_end.tai_offset), (LeapIndicator::NoWarning, Some(36)));
    assert_eq!(dec_30_end.next, Some(Leap { at: at(JAN_2017), kind: LeapKind::Insert }));
    assert_eq!(state(JAN_2017 - 86_400).indicator, LeapIndicator::Insert);
    assert_eq!(state(JAN_2017 - 1).indicator, LeapIndicator::Insert);
    let after = state(JAN_2017);
    assert_eq!((after.indicator, after.tai_offset, after.next), (LeapIndicator::NoWarning, Some(37), None));
    assert_eq!(after.last, Some(Leap { at: at(JAN_2017), kind: LeapKind::Insert }));
    let in_2026 = state(EXPIRES as u32 - 1);
    assert_eq!((in_2026.tai_offset, in_2026.next), (Some(37), None));
    let in_1971 = state(2_272_060_799);
    assert_eq!((in_1971.tai_offset, in_1971.next.map(|leap| leap.at)), (None, Some(at(2_287_785_600))));
}

/// What a client reading a stepping server every quarter second sees
/// through the 2016 leap, and the leap indicator beside each reading.
#[test]
fn reading_a_stepping_server_through_the_2016_leap() {
    let leap = real().state_at(at(JAN_2017 - 3600)).unwrap().next.unwrap();
    let quarter = NtpDuration::from_seconds_f64(0.25);
    let mut raw = at(JAN_2017 - 1);
    let mut seen = Vec::new();
    for _ in 0..12 {
        let served = LeapMode::Step.served_time(leap, raw);
        let clock = served.to_datetime().format("%H:%M:%S%.3f").to_string();
        seen.push(format!("{clock} {}", LeapMode::Step.indicator(leap, raw).name()));
        raw += quarter;
    }
    #[rustfmt::skip]
    let expected = [
        "23:59:59.000 insert", "23:59:59.250 insert", "23:59:59.500 insert", "23:59:59.750 insert",
        "23:59:59.000 insert", "23:59:59.250 insert", "23:59:59.500 insert", "23:59:59.750 insert",
        "00:00:00.000 none", "00:00:00.250 none", "00:00:00.500 none", "00:00:00.750 none",
    ];
    assert_eq!(seen, expected);
}

/// A 24 h smear of the 2016 leap: noon to noon UTC, 11.574 ppm slow, half
/// a second behind at midnight, and never announced.
#[test]
fn smearing_the_2016_leap() {
    let leap = Leap { at: at(JAN_2017), kind: LeapKind::Insert };
    let smear = LeapMode::Smear(LeapSmear::new(86_400).unwrap());
    let noon_before = at(JAN_2017 - 43_200);
    assert_eq!(smear.served_time(leap, noon_before), noon_before);
    let hour = NtpDuration::from_seconds(3600);
    let served_hour = smear.served_time(leap, noon_before + hour) - smear.served_time(leap, noon_before);
    let rate = (hour - served_hour).to_seconds_f64() / 3600.0;
    assert!((rate - 1.0 / 86_401.0).abs() < 1e-12, "{rate}");
    assert!((rate * 1e6 - 11.574).abs() < 0.001);
    let behind = (smear.served_time(leap, at(JAN_2017)) - at(JAN_2017)).to_seconds_f64();
    assert!((behind + 0.5).abs() < 1e-5, "{behind}");
    // Smeared and stepping servers agree again from noon UTC on 1 January.
    let noon_after_raw = smear.settled_from(leap);
    assert_eq!(smear.served_time(leap, noon_after_raw), at(JAN_2017 + 43_200));
    assert_eq!(smear.served_time(leap, noon_after_raw), LeapMode::Step.served_time(leap, noon_after_raw));
    assert_eq!(smear.indicator(leap, at(JAN_2017 - 1)), LeapIndicator::NoWarning);
}
