//! Choosing among servers (RFC 5905 §11.2): root distance, the
//! intersection algorithm that votes out falsetickers, the cluster
//! algorithm that prunes outliers, and the combine algorithm.

use crate::exchange::{Sample, PHI};
use crate::time::{NtpDuration, NtpShort};

/// NMIN: the fewest survivors the cluster algorithm keeps (RFC 5905 §11.2.2).
pub const MIN_SURVIVORS: usize = 3;

/// One server's entry to the vote: its offset and the half-width of its
/// correctness interval, the root distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Server time minus local time.
    pub offset: NtpDuration,
    /// Root distance: the maximum error of that offset.
    pub root_distance: NtpDuration,
}

/// The result of the intersection algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intersection {
    /// Lower end of the interval on which a majority agrees.
    pub low: NtpDuration,
    /// Upper end of that interval.
    pub high: NtpDuration,
    /// Indices (into the candidates) of the truechimers: those whose offset
    /// lies in the interval. The others are falsetickers.
    pub truechimers: Vec<usize>,
}

/// Root distance λ (RFC 5905 §11.2, A.5.5.2): half the root delay plus
/// the root dispersion, accumulated with this hop's own delay, dispersion
/// and jitter. It bounds how wrong the server's time can be.
#[must_use]
pub fn root_distance(
    sample: &Sample,
    root_delay: NtpShort,
    root_dispersion: NtpShort,
    jitter: NtpDuration,
) -> NtpDuration {
    let delay = (root_delay.to_duration() + sample.delay).max(NtpDuration::from_seconds_f64(1e-6));
    delay.half() + root_dispersion.to_duration() + sample.dispersion + jitter
}

/// Root distance of a sample that is `age` old: dispersion grows at PHI.
#[must_use]
pub fn aged(distance: NtpDuration, age: NtpDuration) -> NtpDuration {
    distance + age.max(NtpDuration::ZERO).mul_f64(PHI)
}

/// The intersection algorithm (RFC 5905 §11.2.1, a variant of Marzullo's):
/// finds the smallest interval that contains points of the correctness
/// intervals of a majority of candidates, allowing for up to half of them
/// to be falsetickers. `None` when no majority agrees.
#[must_use]
pub fn intersect(candidates: &[Candidate]) -> Option<Intersection> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    // Endpoints typed -1 (lower), 0 (midpoint), +1 (upper), sorted by value.
    let mut edges: Vec<(NtpDuration, i32)> = Vec::with_capacity(3 * n);
    for c in candidates {
        let distance = c.root_distance.abs();
        edges.push((c.offset - distance, -1));
        edges.push((c.offset, 0));
        edges.push((c.offset + distance, 1));
    }
    edges.sort();
    let n_i32 = n as i32;
    for allow in 0..n_i32 {
        if 2 * allow >= n_i32 {
            break;
        }
        let (low, mut found) = scan(edges.iter(), n_i32 - allow, -1);
        let (high, found_high) = scan(edges.iter().rev(), n_i32 - allow, 1);
        found += found_high;
        if let (Some(low), Some(high)) = (low, high) {
            if found <= allow && low <= high {
                let truechimers = candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.offset >= low && c.offset <= high)
                    .map(|(i, _)| i)
                    .collect();
                return Some(Intersection { low, high, truechimers });
            }
        }
    }
    None
}

/// One sweep of the intersection algorithm: the first edge at which
/// `needed` intervals overlap, and how many midpoints were passed before.
fn scan<'a>(edges: impl Iterator<Item = &'a (NtpDuration, i32)>, needed: i32, sign: i32) -> (Option<NtpDuration>, i32) {
    let mut chime = 0;
    let mut found = 0;
    for &(value, kind) in edges {
        // Entering an interval counts +1, leaving it -1, in either direction.
        chime += kind * sign;
        if chime >= needed {
            return (Some(value), found);
        }
        if kind == 0 {
            found += 1;
        }
    }
    (None, found)
}

/// A survivor of the intersection, as the cluster and combine algorithms
/// see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Survivor {
    /// Index of the association this survivor stands for.
    pub index: usize,
    /// Offset.
    pub offset: NtpDuration,
    /// Root distance.
    pub root_distance: NtpDuration,
    /// The association's own (peer) jitter.
    pub jitter: NtpDuration,
    /// Stratum, which ranks survivors before root distance.
    pub stratum: u8,
}

/// The cluster algorithm (RFC 5905 §11.2.2): repeatedly discards the
/// survivor whose offset disagrees most with the others (largest selection
/// jitter), while that disagreement exceeds the best peer jitter and more
/// than [`MIN_SURVIVORS`] remain. Returns survivors best first (by stratum,
/// then root distance).
#[must_use]
pub fn cluster(mut survivors: Vec<Survivor>) -> Vec<Survivor> {
    survivors.sort_by_key(|s| (s.stratum, s.root_distance));
    while survivors.len() > MIN_SURVIVORS {
        let selection_jitter: Vec<f64> = survivors
            .iter()
            .map(|s| {
                let sum: f64 = survivors.iter().map(|o| (o.offset - s.offset).to_seconds_f64().powi(2)).sum();
                (sum / (survivors.len() - 1) as f64).sqrt()
            })
            .collect();
        let (worst, max_jitter) =
            selection_jitter
                .iter()
                .copied()
                .enumerate()
                .fold((0, f64::MIN), |best, (i, j)| if j > best.1 { (i, j) } else { best });
        let min_peer_jitter = survivors.iter().map(|s| s.jitter.to_seconds_f64()).fold(f64::MAX, f64::min);
        if max_jitter <= min_peer_jitter {
            break;
        }
        survivors.remove(worst);
    }
    survivors
}

/// The combine algorithm (RFC 5905 §11.2.3): the survivors' offsets
/// averaged with weights 1/root distance, and the system jitter (the RMS of
/// their differences from the first, the system peer, combined with its own
/// jitter). `None` for an empty list.
#[must_use]
pub fn combine(survivors: &[Survivor]) -> Option<(NtpDuration, NtpDuration)> {
    let peer = survivors.first()?;
    let mut weight_sum = 0.0;
    let mut offset_sum = 0.0;
    let mut jitter_sum = 0.0;
    for s in survivors {
        let weight = 1.0 / s.root_distance.to_seconds_f64().max(1e-9);
        weight_sum += weight;
        offset_sum += weight * s.offset.to_seconds_f64();
        jitter_sum += weight * (s.offset - peer.offset).to_seconds_f64().powi(2);
    }
    let offset = NtpDuration::from_seconds_f64(offset_sum / weight_sum);
    let selection_jitter = jitter_sum / weight_sum;
    let jitter = (selection_jitter + peer.jitter.to_seconds_f64().powi(2)).sqrt();
    Some((offset, NtpDuration::from_seconds_f64(jitter)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: f64, distance: f64) -> Candidate {
        Candidate {
            offset: NtpDuration::from_seconds_f64(offset),
            root_distance: NtpDuration::from_seconds_f64(distance),
        }
    }

    #[test]
    fn one_liar_among_three_is_voted_out() {
        let result = intersect(&[c(0.001, 0.01), c(10.0, 0.01), c(-0.002, 0.01)]).unwrap();
        assert_eq!(result.truechimers, vec![0, 2]);
        assert!(
            result.low <= NtpDuration::from_seconds_f64(-0.002) && result.high >= NtpDuration::from_seconds_f64(0.001)
        );
    }

    #[test]
    fn all_agree() {
        let result = intersect(&[c(0.0, 0.01), c(0.005, 0.01), c(-0.005, 0.01), c(0.001, 0.002)]).unwrap();
        assert_eq!(result.truechimers, vec![0, 1, 2, 3]);
        assert!(result.low < result.high);
    }

    #[test]
    fn no_majority_means_no_answer() {
        assert_eq!(intersect(&[c(0.0, 0.01), c(10.0, 0.01)]), None);
        assert_eq!(intersect(&[c(0.0, 0.01), c(10.0, 0.01), c(20.0, 0.01)]), None);
        assert_eq!(intersect(&[]), None);
    }

    #[test]
    fn a_single_server_is_its_own_majority() {
        assert_eq!(intersect(&[c(3.0, 0.1)]).unwrap().truechimers, vec![0]);
    }

    #[test]
    fn two_liars_against_three() {
        let result = intersect(&[c(0.0, 0.01), c(5.0, 0.01), c(0.002, 0.01), c(-7.0, 0.01), c(0.001, 0.01)]).unwrap();
        assert_eq!(result.truechimers, vec![0, 2, 4]);
    }

    fn s(index: usize, offset: f64, jitter: f64) -> Survivor {
        Survivor {
            index,
            offset: NtpDuration::from_seconds_f64(offset),
            root_distance: NtpDuration::from_seconds_f64(0.01),
            jitter: NtpDuration::from_seconds_f64(jitter),
            stratum: 1,
        }
    }

    #[test]
    fn cluster_prunes_the_outlier_but_keeps_three() {
        let kept = cluster(vec![s(0, 0.0, 1e-4), s(1, 1e-4, 1e-4), s(2, -1e-4, 1e-4), s(3, 0.008, 1e-4)]);
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|k| k.index != 3));
    }

    #[test]
    fn combine_weights_by_distance() {
        let mut near = s(0, 0.001, 0.0);
        near.root_distance = NtpDuration::from_seconds_f64(0.001);
        let far = s(1, 0.004, 0.0);
        let (offset, _) = combine(&[near, far]).unwrap();
        // Weights 1000 and 100: (1000*1 + 100*4)/1100 ms.
        assert!((offset.to_seconds_f64() - 1.4 / 1100.0 * 1000.0 * 1e-3).abs() < 1e-9);
    }
}
