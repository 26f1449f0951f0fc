//! What the relay does to one datagram on one direction of the path: lose
//! it, or deliver it (perhaps twice) after a delay with jitter, sometimes
//! held back long enough to arrive after later ones.

use std::time::Duration;

use rand::Rng;

/// The impairment of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from [0, jitter] for each datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (the copy with a
    /// delay of its own).
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay` more,
    /// so that datagrams sent after it overtake it.
    pub reorder: f64,
    /// See `reorder`.
    pub reorder_delay: Duration,
}

impl Impairment {
    /// The delays after which copies of one datagram are delivered: none
    /// (lost), one, or two (duplicated).
    pub fn deliveries(&self, rng: &mut impl Rng) -> Vec<Duration> {
        if rng.gen_bool(self.loss.clamp(0.0, 1.0)) {
            return Vec::new();
        }
        let copies = if rng.gen_bool(self.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
        (0..copies).map(|_| self.one_delay(rng)).collect()
    }

    fn one_delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.mul_f64(rng.gen::<f64>());
        let held = if rng.gen_bool(self.reorder.clamp(0.0, 1.0)) { self.reorder_delay } else { Duration::ZERO };
        self.delay + jitter + held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn loss_duplication_and_delays_at_their_rates() {
        let impairment = Impairment {
            delay: Duration::from_millis(2),
            jitter: Duration::from_millis(1),
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.02,
            reorder_delay: Duration::from_millis(10),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (mut lost, mut doubled, mut held, mut sum) = (0, 0, 0, 0.0);
        let n = 100_000;
        for _ in 0..n {
            let copies = impairment.deliveries(&mut rng);
            lost += usize::from(copies.is_empty());
            doubled += usize::from(copies.len() == 2);
            for delay in copies {
                assert!(delay >= Duration::from_millis(2) && delay <= Duration::from_millis(13), "{delay:?}");
                held += usize::from(delay > Duration::from_millis(3));
                sum += delay.as_secs_f64();
            }
        }
        let rate = |count: usize| count as f64 / n as f64;
        assert!((rate(lost) - 0.1).abs() < 0.005, "loss {}", rate(lost));
        assert!((rate(doubled) - 0.045).abs() < 0.004, "duplicates {}", rate(doubled));
        assert!((rate(held) - 0.02).abs() < 0.003, "held back {}", rate(held));
        let mean = sum / (n - lost + doubled) as f64;
        assert!((mean - (0.0025 + 0.02 * 0.010)).abs() < 0.0001, "mean delay {mean}");
    }

    #[test]
    fn a_clean_path_delivers_once_at_the_delay() {
        let impairment = Impairment { delay: Duration::from_millis(3), ..Impairment::default() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            assert_eq!(impairment.deliveries(&mut rng), vec![Duration::from_millis(3)]);
        }
    }
}
