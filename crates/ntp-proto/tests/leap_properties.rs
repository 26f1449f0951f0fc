//! Property tests for the leap-second core: the parser never panics and
//! round-trips what it emits; stepped served time moves only by the leap's
//! one second; smeared served time never runs backward, never jumps, and
//! lands on exactly one second; the vote needs a strict majority.

use ntp_proto::leap::{
    majority_leap, Leap, LeapEntry, LeapKind, LeapListError, LeapMode, LeapSecondsList, LeapSmear, MAX_SMEAR_SECONDS,
    MIN_SMEAR_SECONDS,
};
use ntp_proto::packet::LeapIndicator;
use ntp_proto::{NtpDuration, NtpTimestamp};
use proptest::prelude::*;
use sha1::{Digest, Sha1};

const REAL_FILE: &str = include_str!("data/leap-seconds.list");
const JAN_2017: u32 = 3_692_217_600;
const SECOND: i64 = 1 << 32;

fn kind() -> impl Strategy<Value = LeapKind> {
    prop_oneof![Just(LeapKind::Insert), Just(LeapKind::Delete)]
}

fn indicator() -> impl Strategy<Value = LeapIndicator> {
    (0u8..4).prop_map(LeapIndicator::from_bits)
}

fn leap(kind: LeapKind) -> Leap {
    Leap { at: NtpTimestamp::from_parts(JAN_2017, 0), kind }
}

/// A raw time within `seconds` of the leap, to the 2^-32 s unit.
fn raw_near(seconds: i64) -> impl Strategy<Value = NtpTimestamp> {
    (-seconds * SECOND..=seconds * SECOND)
        .prop_map(|units| NtpTimestamp::from_parts(JAN_2017, 0) + NtpDuration::from_bits(units))
}

/// Lines made of the format's own pieces, so that the parser's deeper
/// branches are reached, not only its first rejection.
fn plausible_file() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("#$".to_string()),
        Just("#@".to_string()),
        Just("#h".to_string()),
        Just("#".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\n".to_string()),
        "[0-9]{1,12}",
        "[0-9a-f]{1,9}",
        "[-+]?[0-9]{1,25}",
        Just("3692217600 37".to_string()),
        Just("\u{fe0f}".to_string()),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
}

/// A valid table: months from 1972 on, each offset one from the last,
/// spanning under 50 years so every time in it is within 68 years of the
/// last update (the era rule the table resolves `now` by).
fn table() -> impl Strategy<Value = LeapSecondsList> {
    (prop::collection::vec((1u32..20, any::<bool>()), 1..30), 0u64..1_000_000, 1u64..100_000_000).prop_map(
        |(steps, updated_after, validity)| {
            let mut entries = Vec::new();
            let (mut year, mut month, mut offset) = (1972i32, 1u32, 10i32);
            for (index, (months, insert)) in steps.into_iter().enumerate() {
                if index > 0 {
                    month += months;
                    year += ((month - 1) / 12) as i32;
                    month = (month - 1) % 12 + 1;
                    // TAI - UTC is never negative: from zero, only insert.
                    offset += if insert || offset == 0 { 1 } else { -1 };
                }
                let date = chrono::NaiveDate::from_ymd_opt(year, month, 1).unwrap();
                let start = (date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp() + 2_208_988_800) as u64;
                entries.push(LeapEntry { start, tai_offset: offset });
            }
            let updated = entries.last().unwrap().start + updated_after;
            LeapSecondsList::new(updated, updated + validity, entries).unwrap()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn parse_never_panics_on_any_text(text in any::<String>()) {
        let _ = LeapSecondsList::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_plausible_text(text in plausible_file(), now in any::<u64>()) {
        if let Ok(list) = LeapSecondsList::parse(&text) {
            let _ = list.state_at(NtpTimestamp::from_bits(now));
        }
    }

    #[test]
    fn a_hash_valid_file_of_arbitrary_numbers_never_panics(
        numbers in prop::collection::vec(("[0-9]{1,14}", "[0-9]{1,11}"), 0..8),
        updated in "[0-9]{1,14}",
        expires in "[0-9]{1,14}",
        now in any::<u64>(),
    ) {
        let mut text = format!("#$ {updated}\n#@ {expires}\n");
        let mut digits = format!("{updated}{expires}");
        for (start, offset) in &numbers {
            text.push_str(&format!("{start} {offset} # comment\n"));
            digits.push_str(start);
            digits.push_str(offset);
        }
        let digest = Sha1::digest(digits.as_bytes());
        let words: Vec<String> = digest.chunks(4).map(|word| format!("{:x}", u32::from_be_bytes([word[0], word[1], word[2], word[3]]))).collect();
        text.push_str(&format!("#h {}\n", words.join(" ")));
        match LeapSecondsList::parse(&text) {
            Ok(list) => {
                prop_assert_eq!(list.entries().len(), numbers.len());
                let _ = list.state_at(NtpTimestamp::from_bits(now));
            }
            Err(error) => {
                let mismatch = matches!(error, LeapListError::HashMismatch { .. });
                prop_assert!(!mismatch, "{}", error);
            }
        }
    }

    #[test]
    fn an_edited_real_file_is_refused_or_unchanged(position in 0..REAL_FILE.len(), byte in any::<u8>()) {
        let mut bytes = REAL_FILE.as_bytes().to_vec();
        bytes[position] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(list) = LeapSecondsList::parse(&text) {
                // Only comments, whitespace or hash-word case changed.
                prop_assert_eq!(list, LeapSecondsList::parse(REAL_FILE).unwrap());
            }
        }
    }

    #[test]
    fn emit_then_parse_is_the_identity(list in table()) {
        prop_assert_eq!(LeapSecondsList::parse(&list.emit()), Ok(list));
    }

    #[test]
    fn announced_exactly_during_the_leaps_last_day(list in table(), day_part in 0u32..86_400) {
        for leap in list.leaps() {
            let last_day = NtpTimestamp::from_parts(leap.at.seconds().wrapping_sub(86_400 - day_part), 0);
            if let Ok(state) = list.state_at(last_day) {
                prop_assert_eq!(state.indicator, leap.kind.indicator());
                prop_assert_eq!(state.next, Some(leap));
            }
            if let Ok(state) = list.state_at(leap.at) {
                prop_assert_eq!(state.last, Some(leap));
                prop_assert_ne!(state.next, Some(leap));
            }
        }
    }

    #[test]
    fn stepping_moves_served_time_only_by_the_leap(kind in kind(), a in raw_near(5), b in raw_near(5)) {
        let (early, late) = if (b - a) >= NtpDuration::ZERO { (a, b) } else { (b, a) };
        let leap = leap(kind);
        let served = |raw| LeapMode::Step.served_time(leap, raw);
        let offset = LeapMode::Step.offset(leap, late);
        prop_assert!(offset == NtpDuration::ZERO || offset == kind.correction());
        // The served interval is the raw one, less or plus the second when
        // the leap falls between the two readings.
        let served_span = served(late) - served(early);
        let raw_span = late - early;
        let crossed = served_span != raw_span;
        prop_assert!(!crossed || served_span == raw_span + kind.correction());
        if kind == LeapKind::Delete {
            prop_assert!(served_span >= raw_span);
            // 23:59:59 is never served.
            let skipped = served(early) - NtpTimestamp::from_parts(JAN_2017 - 1, 0);
            prop_assert!(skipped < NtpDuration::ZERO || skipped >= NtpDuration::ONE_SECOND);
        }
        prop_assert_eq!(LeapMode::Step.offset(leap, LeapMode::Step.settled_from(leap)), kind.correction());
    }

    #[test]
    fn smearing_never_runs_backward_or_jumps(
        kind in kind(),
        window in MIN_SMEAR_SECONDS..=MAX_SMEAR_SECONDS,
        start in raw_near(i64::from(MAX_SMEAR_SECONDS)),
        step in 0i64..(1000 * SECOND),
    ) {
        let smear = LeapMode::Smear(LeapSmear::new(window).unwrap());
        let leap = leap(kind);
        let later = start + NtpDuration::from_bits(step);
        let served_step = smear.served_time(leap, later) - smear.served_time(leap, start);
        let step = NtpDuration::from_bits(step);
        prop_assert!(served_step >= NtpDuration::ZERO);
        // Within one unit of the ideal linear rate: slow by 1/(window + 1)
        // for an insertion, fast by 1/(window - 1) for a deletion.
        let raw_window = match kind {
            LeapKind::Insert => i128::from(window) + 1,
            LeapKind::Delete => i128::from(window) - 1,
        };
        let drift = (served_step - step).to_bits().unsigned_abs();
        let most = step.to_bits() as i128 / raw_window + 1;
        prop_assert!(i128::from(drift) <= most, "drift {} most {}", drift, most);
        prop_assert_eq!(smear.indicator(leap, start), LeapIndicator::NoWarning);
    }

    #[test]
    fn smearing_is_zero_before_and_one_second_after(
        kind in kind(),
        window in MIN_SMEAR_SECONDS..=MAX_SMEAR_SECONDS,
        beyond in 1i64..(30 * 86_400 * SECOND),
    ) {
        let smear = LeapMode::Smear(LeapSmear::new(window).unwrap());
        let leap = leap(kind);
        let half = NtpDuration::from_bits(i64::from(window) << 31);
        let before = leap.at - half - NtpDuration::from_bits(beyond);
        prop_assert_eq!(smear.offset(leap, before), NtpDuration::ZERO);
        let after = smear.settled_from(leap) + NtpDuration::from_bits(beyond);
        prop_assert_eq!(smear.offset(leap, after), kind.correction());
        // Outside the window smeared and stepping servers serve one time.
        prop_assert_eq!(smear.served_time(leap, after), LeapMode::Step.served_time(leap, after));
        prop_assert_eq!(smear.served_time(leap, before), LeapMode::Step.served_time(leap, before));
        // In served time the window is centred on the leap's midnight.
        prop_assert_eq!(smear.served_time(leap, smear.settled_from(leap)), leap.at + half);
    }

    #[test]
    fn the_vote_needs_a_strict_majority(votes in prop::collection::vec(indicator(), 0..12), seed in any::<u64>()) {
        let result = majority_leap(votes.iter().copied());
        if let Some(kind) = result {
            let agreeing = votes.iter().filter(|&&vote| vote == kind.indicator()).count();
            prop_assert!(agreeing * 2 > votes.len());
        }
        let mut shuffled = votes.clone();
        let rotate = if shuffled.is_empty() { 0 } else { (seed as usize) % shuffled.len() };
        shuffled.rotate_left(rotate);
        shuffled.reverse();
        prop_assert_eq!(majority_leap(shuffled), result);
        // One more source saying "no leap" never creates one.
        let mut more = votes.clone();
        more.push(LeapIndicator::NoWarning);
        prop_assert!(majority_leap(more).is_none() || result.is_some());
    }

    #[test]
    fn a_single_liar_among_honest_sources_is_ignored(honest in 2usize..10, lie in indicator()) {
        let mut votes = vec![LeapIndicator::NoWarning; honest];
        votes.push(lie);
        prop_assert_eq!(majority_leap(votes), None);
    }
}
