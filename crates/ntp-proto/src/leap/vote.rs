//! The leap a client takes from its upstreams: the one that more than half
//! of the selected sources announce, so that a single liar among three
//! cannot insert (or delete) a second.

use super::LeapKind;
use crate::packet::LeapIndicator;

/// The leap announced by a strict majority of `indicators`, the leap
/// indicators of the sources the selection algorithm kept (RFC 5905 §11.2;
/// ntpd and chrony vote the same way).
///
/// Every source counts toward the total, whatever it says, so two of four
/// is not a majority, and a source that is unsynchronized (which selection
/// should not have kept) is a vote for no leap. No sources, no leap.
#[must_use]
pub fn majority_leap<I>(indicators: I) -> Option<LeapKind>
where
    I: IntoIterator<Item = LeapIndicator>,
{
    let (mut total, mut insert, mut delete) = (0usize, 0usize, 0usize);
    for indicator in indicators {
        total += 1;
        match LeapKind::from_indicator(indicator) {
            Some(LeapKind::Insert) => insert += 1,
            Some(LeapKind::Delete) => delete += 1,
            None => {}
        }
    }
    let majority = |votes: usize| votes > total / 2;
    if majority(insert) {
        Some(LeapKind::Insert)
    } else if majority(delete) {
        Some(LeapKind::Delete)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LeapIndicator::{Delete, Insert, NoWarning, Unsynchronized};

    #[test]
    fn one_liar_among_three_is_ignored() {
        assert_eq!(majority_leap([Insert, NoWarning, NoWarning]), None);
        assert_eq!(majority_leap([NoWarning, Delete, NoWarning]), None);
        assert_eq!(majority_leap([Insert, Insert, NoWarning]), Some(LeapKind::Insert));
    }

    #[test]
    fn a_majority_is_more_than_half() {
        assert_eq!(majority_leap([Insert, Insert, NoWarning, NoWarning]), None);
        assert_eq!(majority_leap([Insert, Insert, Insert, NoWarning]), Some(LeapKind::Insert));
        assert_eq!(majority_leap([Insert, NoWarning]), None);
        assert_eq!(majority_leap([Delete]), Some(LeapKind::Delete));
        assert_eq!(majority_leap([]), None);
    }

    #[test]
    fn split_and_unsynchronized_votes_announce_nothing() {
        assert_eq!(majority_leap([Insert, Delete, Insert, Delete]), None);
        assert_eq!(majority_leap([Insert, Unsynchronized]), None);
        assert_eq!(majority_leap([Delete, Delete, Insert]), Some(LeapKind::Delete));
    }
}
