//! The clock filter (RFC 5905 §10): an 8-stage shift register of recent
//! samples from one server that prefers the one with the lowest delay, on
//! the grounds that it suffered the least queueing and so the least error.

use crate::exchange::{Sample, PHI};
use crate::time::{NtpDuration, NtpTimestamp};

/// NSTAGE: samples the filter remembers.
pub const STAGES: usize = 8;

/// MAXDISP: the dispersion of an empty stage, 16 s.
const MAX_DISPERSION: f64 = 16.0;

/// What the filter makes of its samples: the server's offset, delay,
/// dispersion and jitter (RFC 5905 §10, "peer variables").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterOutput {
    /// Offset of the chosen (lowest-delay) sample.
    pub offset: NtpDuration,
    /// Delay of the chosen sample.
    pub delay: NtpDuration,
    /// Weighted sum of the stages' dispersions, the older weighted less.
    pub dispersion: NtpDuration,
    /// RMS of the other samples' offsets about the chosen one.
    pub jitter: NtpDuration,
    /// When the chosen sample was taken.
    pub time: NtpTimestamp,
    /// The chosen sample's own error bound: half its delay plus its own
    /// dispersion (not the register's, which counts empty stages as
    /// 16 s). The discipline weighs its points by it.
    pub distance: NtpDuration,
}

/// The clock filter of one association.
#[derive(Debug, Clone, Default)]
pub struct ClockFilter {
    stages: Vec<Sample>,
    /// When the stages' dispersions were last aged.
    updated: Option<NtpTimestamp>,
    /// The time of the last sample handed on, so none is used twice.
    last_used: Option<NtpTimestamp>,
    output: Option<FilterOutput>,
}

impl ClockFilter {
    /// An empty filter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The last output, if any.
    #[must_use]
    pub fn output(&self) -> Option<FilterOutput> {
        self.output
    }

    /// Samples currently held, newest first.
    #[must_use]
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// True when no sample is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Forgets every sample (after the server was found unreachable or
    /// stepped).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Shifts `sample` in at `now` and re-evaluates. Returns the new output
    /// when the lowest-delay sample is newer than the last one handed on,
    /// and `None` when the new sample does not improve on what was used.
    ///
    /// With `warming_up`, the newest sample is handed on instead: before the
    /// clock is synchronized, "anything goes" (RFC 5905 A.5.2), and a fresh
    /// point at every poll lets the discipline learn the frequency in a
    /// few polls rather than waiting for low-delay samples.
    ///
    /// `drift` is how fast offsets in the caller's frame change by
    /// themselves (seconds per second): in the daemon's raw frame, the
    /// frequency error of the raw clock as estimated. The jitter compares
    /// samples after bringing them to one instant at that rate, so a
    /// drifting frame is not mistaken for a noisy server.
    pub fn add(&mut self, sample: Sample, now: NtpTimestamp, warming_up: bool, drift: f64) -> Option<FilterOutput> {
        self.age(now);
        self.stages.insert(0, sample);
        self.stages.truncate(STAGES);

        // Prefer the sample with the smallest error bound: half its delay
        // plus its dispersion, which grows at PHI with age. Low delay wins
        // among recent samples; a low-delay sample that has grown old gives
        // way to a fresh one instead of pinning the filter to the past.
        let mut by_delay: Vec<&Sample> = self.stages.iter().collect();
        by_delay.sort_by_key(|s| s.delay.half() + s.dispersion);
        let best = if warming_up { sample } else { *by_delay[0] };

        // Dispersion: Σ εi / 2^(i+1), empty stages counting MAXDISP.
        let mut dispersion = 0.0;
        for i in 0..STAGES {
            let stage = by_delay.get(i).map_or(MAX_DISPERSION, |s| s.dispersion.to_seconds_f64().min(MAX_DISPERSION));
            dispersion += stage / f64::from(1u32 << (i + 1));
        }
        let others = by_delay.len().saturating_sub(1).max(1) as f64;
        let sum: f64 = by_delay
            .iter()
            .filter(|s| s.time != best.time)
            .map(|s| (s.offset + (best.time - s.time).mul_f64(drift) - best.offset).to_seconds_f64().powi(2))
            .sum();
        let jitter = (sum / others).sqrt();

        let dispersion = NtpDuration::from_seconds_f64(dispersion);
        let jitter = NtpDuration::from_seconds_f64(jitter);
        if self.last_used.is_some_and(|used| best.time - used <= NtpDuration::ZERO) {
            // The sample is not used, but dispersion and jitter still follow
            // the register (RFC 5905 A.5.2 sets them before this check).
            if let Some(output) = &mut self.output {
                output.dispersion = dispersion;
                output.jitter = jitter;
            }
            return None;
        }
        self.last_used = Some(best.time);
        let output = FilterOutput {
            offset: best.offset,
            delay: best.delay,
            dispersion,
            jitter,
            time: best.time,
            distance: best.delay.half() + best.dispersion,
        };
        self.output = Some(output);
        Some(output)
    }

    /// Grows every stage's dispersion at PHI for the time since the last
    /// update, as RFC 5905 A.5.2 does on each shift.
    fn age(&mut self, now: NtpTimestamp) {
        if let Some(updated) = self.updated {
            let grown = (now - updated).max(NtpDuration::ZERO).mul_f64(PHI);
            for stage in &mut self.stages {
                stage.dispersion += grown;
            }
        }
        self.updated = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, offset_us: f64, delay_us: f64) -> Sample {
        Sample {
            offset: NtpDuration::from_seconds_f64(offset_us * 1e-6),
            delay: NtpDuration::from_seconds_f64(delay_us * 1e-6),
            dispersion: NtpDuration::from_seconds_f64(1e-6),
            time: NtpTimestamp::from_unix(1_800_000_000 + at, 0),
        }
    }

    fn now(at: i64) -> NtpTimestamp {
        NtpTimestamp::from_unix(1_800_000_000 + at, 0)
    }

    #[test]
    fn prefers_the_lowest_delay_sample() {
        let mut filter = ClockFilter::new();
        assert!(filter.add(sample(0, 100.0, 500.0), now(0), false, 0.0).is_some());
        let out = filter.add(sample(1, 10.0, 50.0), now(1), false, 0.0).unwrap();
        assert!((out.offset.to_seconds_f64() - 10e-6).abs() < 1e-9);
        // A later, slower sample does not displace it and is not used.
        assert_eq!(filter.add(sample(2, 900.0, 5000.0), now(2), false, 0.0), None);
        assert!((filter.output().unwrap().offset.to_seconds_f64() - 10e-6).abs() < 1e-9);
    }

    #[test]
    fn jitter_is_the_rms_about_the_chosen_sample() {
        let mut filter = ClockFilter::new();
        filter.add(sample(0, 0.0, 10.0), now(0), false, 0.0);
        filter.add(sample(1, 30.0, 200.0), now(1), false, 0.0);
        filter.add(sample(2, -40.0, 300.0), now(2), false, 0.0);
        let out = filter.output().unwrap();
        let expected = ((30e-6f64.powi(2) + 40e-6f64.powi(2)) / 2.0).sqrt();
        assert!((out.jitter.to_seconds_f64() - expected).abs() < 1e-9);
    }

    #[test]
    fn an_old_low_delay_sample_gives_way_to_a_fresh_one() {
        let mut filter = ClockFilter::new();
        filter.add(sample(0, 0.0, 50.0), now(0), false, 0.0);
        // 64 s later the first sample's dispersion has grown by ~1 ms.
        let out = filter.add(sample(64, 7.0, 500.0), now(64), false, 0.0).unwrap();
        assert!((out.offset.to_seconds_f64() - 7e-6).abs() < 1e-9);
    }

    #[test]
    fn a_drifting_frame_is_not_jitter() {
        // Offsets that grow at 50 ppm, exactly: no jitter once the drift is known.
        let mut filter = ClockFilter::new();
        let mut out = None;
        for i in 0..8 {
            out = filter.add(sample(i, 50.0 * i as f64, 100.0), now(i), true, 50e-6);
        }
        assert!(out.unwrap().jitter.to_seconds_f64() < 1e-9);
        let mut naive = ClockFilter::new();
        for i in 0..8 {
            out = naive.add(sample(i, 50.0 * i as f64, 100.0), now(i), true, 0.0);
        }
        assert!(out.unwrap().jitter.to_seconds_f64() > 100e-6);
    }

    #[test]
    fn keeps_eight_stages_and_dispersion_shrinks_as_it_fills() {
        let mut filter = ClockFilter::new();
        let mut last = f64::MAX;
        for i in 0..12 {
            let out = filter.add(sample(i, 0.0, 100.0 - i as f64), now(i), false, 0.0).unwrap();
            assert!(out.dispersion.to_seconds_f64() <= last + 1e-12);
            last = out.dispersion.to_seconds_f64();
        }
        assert_eq!(filter.len(), STAGES);
        assert!(last < 1e-3);
    }
}
