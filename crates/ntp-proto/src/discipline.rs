//! The clock discipline: steers a virtual clock's phase and frequency to
//! the time its servers agree on.
//!
//! Not the RFC 5905 §11.3 PLL/FLL, but a regression-based controller in the
//! manner of chrony, chosen because it converges in a few polls at any poll
//! interval and estimates frequency directly instead of integrating it
//! slowly (see docs/discipline.md).
//!
//! It works in the frame of the *raw* clock: the free-running local clock
//! before any correction. Each measurement is recorded as "server time minus
//! raw time" at a raw instant, which our own steps and slews do not change.
//! A weighted least-squares line through recent points gives the correction
//! the clock should have now (phase) and its rate (frequency), each point
//! weighed by its error bound as chrony does, so a reply that was held up
//! on one leg of its trip (its offset off by half the hold-up) barely
//! tilts the line; a runs test
//! on the residuals shortens the window when the points stop lying on a
//! line. The frequency is set at once; the phase error is slewed away over
//! a couple of update intervals at a bounded rate, or stepped when it is
//! beyond the step threshold at start-up (or for longer than the stepout).

use std::collections::VecDeque;

use crate::clock::VirtualClock;
use crate::time::{NtpDuration, NtpTimestamp};

/// How the discipline behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisciplineConfig {
    /// Phase errors beyond this are stepped, not slewed (default 128 ms).
    pub step_threshold: NtpDuration,
    /// Steps are allowed freely in the first this many updates (default 3).
    pub startup_updates: u32,
    /// After start-up, an error beyond the threshold must persist this long
    /// before it is stepped (default 300 s, as ntpd's stepout).
    pub stepout: NtpDuration,
    /// The fastest slew, as a fraction (default 10,000 ppm: 100 ms in 10 s;
    /// chrony allows 83,333 ppm, ntpd's kernel 500 ppm).
    pub max_slew_rate: f64,
    /// The largest frequency correction, in ppm (default 500).
    pub max_frequency_ppm: f64,
    /// Points kept for the regression (default 32).
    pub max_points: usize,
    /// A phase error is slewed away over this many update intervals.
    pub correction_ratio: f64,
    /// Poll exponent bounds (log2 s) for the adaptive poll interval.
    pub min_poll: i8,
    /// See `min_poll`.
    pub max_poll: i8,
    /// How well the starting frequency is known (ppm, one standard
    /// deviation), when it is: a drift file's. The first fits, through a
    /// few noisy points close together, then move the frequency only as
    /// far as their own uncertainty warrants, instead of re-learning it
    /// from scratch. `None` (the default): unknown, each fit is taken.
    pub frequency_known_ppm: Option<f64>,
}

impl Default for DisciplineConfig {
    fn default() -> Self {
        Self {
            step_threshold: NtpDuration::from_seconds_f64(0.128),
            startup_updates: 3,
            stepout: NtpDuration::from_seconds(300),
            max_slew_rate: 0.01,
            max_frequency_ppm: 500.0,
            max_points: 32,
            correction_ratio: 2.0,
            min_poll: 6,
            max_poll: 10,
            frequency_known_ppm: None,
        }
    }
}

/// What an update did to the clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    /// The clock was stepped by this much.
    Stepped(NtpDuration),
    /// A slew of this much was started (replacing any slew in progress).
    Slewing(NtpDuration),
    /// The error is beyond the step threshold but stepping is not yet
    /// allowed: nothing was done (a spike, or waiting out the stepout).
    Held(NtpDuration),
}

/// The result of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Update {
    /// What was done to the clock.
    pub adjustment: Adjustment,
    /// The phase error found: where the servers say the clock should be,
    /// minus where it was.
    pub offset: NtpDuration,
    /// The correction frequency now in force, in ppm.
    pub frequency_ppm: f64,
    /// RMS of the regression residuals: the measurement noise.
    pub jitter: NtpDuration,
    /// Points the regression used.
    pub points: usize,
    /// The poll exponent the discipline asks for.
    pub poll: i8,
}

/// One measurement handed to the discipline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The raw instant it was taken at.
    pub at: NtpTimestamp,
    /// The servers' time minus the raw clock at `at`.
    pub server_minus_raw: NtpDuration,
    /// Its error bound: half the round-trip delay plus the sample's own
    /// dispersion. An asymmetric hold-up of D moves the offset by up to
    /// D/2 and the bound by D/2, so points are weighed by it.
    pub distance: NtpDuration,
    /// The jitter the selection reported.
    pub jitter: NtpDuration,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    raw: NtpTimestamp,
    server_minus_raw: NtpDuration,
    /// The measurement's error bound, seconds.
    distance: f64,
}

/// The discipline's state.
#[derive(Debug, Clone)]
pub struct Discipline {
    config: DisciplineConfig,
    points: VecDeque<Point>,
    updates: u32,
    beyond_since: Option<NtpTimestamp>,
    last_update: Option<NtpTimestamp>,
    poll: i8,
    good_streak: u32,
}

/// Consecutive calm updates before the poll interval doubles.
const POLL_UP_STREAK: u32 = 8;
/// An error within this many jitters counts as calm (RFC 5905 PGATE).
const POLL_GATE: f64 = 4.0;

impl Discipline {
    /// A discipline that has seen nothing yet.
    #[must_use]
    pub fn new(config: DisciplineConfig) -> Self {
        Self {
            config,
            points: VecDeque::new(),
            updates: 0,
            beyond_since: None,
            last_update: None,
            poll: config.min_poll,
            good_streak: 0,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &DisciplineConfig {
        &self.config
    }

    /// The poll exponent currently asked for.
    #[must_use]
    pub fn poll(&self) -> i8 {
        self.poll
    }

    /// Updates done so far.
    #[must_use]
    pub fn updates(&self) -> u32 {
        self.updates
    }

    /// The measurements now come from another system peer, whose first
    /// has error bound `distance`. The points kept were weighed against
    /// the old peer's bounds, which say nothing of the new one's: none
    /// counts for more than the new peer's points do (their bounds are
    /// raised to at least `distance`), so the line turns to the new peer
    /// as it would without weights, instead of holding to the old peer's
    /// points (a LAN peer's 0.15 ms bounds would outweigh an internet
    /// one's 15 ms ones five thousand times) until they leave the window.
    pub fn system_peer_changed(&mut self, distance: NtpDuration) {
        let floor = distance.to_seconds_f64().max(0.0);
        for point in &mut self.points {
            point.distance = point.distance.max(floor);
        }
    }

    /// Takes one measurement and corrects `correction`, the map from raw
    /// to disciplined time; `raw_now` is the raw time now.
    pub fn update(&mut self, correction: &mut VirtualClock, raw_now: NtpTimestamp, measurement: Measurement) -> Update {
        let Measurement { at: measured_at, server_minus_raw, distance, jitter: sample_jitter } = measurement;
        let point = Point { raw: measured_at, server_minus_raw, distance: distance.to_seconds_f64().max(0.0) };
        let interval =
            self.last_update.map_or(NtpDuration::ONE_SECOND, |last| raw_now - last).max(NtpDuration::ONE_SECOND);
        self.last_update = Some(raw_now);
        self.updates += 1;

        // The sample on its own against the clock as it runs: one beyond the
        // step threshold is stepped or held before it can enter the
        // regression, where a single spike would tilt the frequency and,
        // through the runs test, cut the history short.
        let rate = correction.frequency_ppm() * 1e-6;
        let alone = server_minus_raw + NtpDuration::from_seconds_f64(rate * (raw_now - measured_at).to_seconds_f64())
            - correction.offset_at(raw_now);
        if alone.abs() > self.config.step_threshold {
            let adjustment = self.beyond_threshold(correction, raw_now, alone, point);
            self.adapt_poll(alone, sample_jitter.to_seconds_f64());
            return Update {
                adjustment,
                offset: alone,
                frequency_ppm: correction.frequency_ppm(),
                jitter: sample_jitter,
                points: self.points.len(),
                poll: self.poll,
            };
        }

        // Within the threshold on its own: any excursion beyond it is over.
        self.beyond_since = None;
        self.points.push_back(point);
        while self.points.len() > self.config.max_points {
            self.points.pop_front();
        }
        let fit = self.fit();

        if let Some(slope) = fit.slope {
            let limit = self.config.max_frequency_ppm;
            let target_ppm = (slope * 1e6).clamp(-limit, limit);
            // The slope's standard error, from the larger of the points'
            // scatter and the samples' jitter (three points can lie on a
            // line by chance).
            let noise = fit.residual_rms.max(sample_jitter.to_seconds_f64());
            let slope_error = if fit.sxx > 0.0 { noise / fit.sxx.sqrt() } else { f64::INFINITY };
            let gain = self.frequency_gain(slope_error);
            correction.adjust_frequency(raw_now, (target_ppm - correction.frequency_ppm()) * gain);
        }
        let newest = fit.reference;
        let elapsed = (raw_now - newest.raw).to_seconds_f64();
        let slope = fit.slope.unwrap_or(correction.frequency_ppm() * 1e-6);
        let target = newest.server_minus_raw + NtpDuration::from_seconds_f64(fit.intercept + slope * elapsed);
        let offset = target - correction.offset_at(raw_now);

        let adjustment = self.correct(correction, raw_now, offset, interval);
        let jitter = fit.residual_rms.max(sample_jitter.to_seconds_f64());
        self.adapt_poll(offset, jitter);
        Update {
            adjustment,
            offset,
            frequency_ppm: correction.frequency_ppm(),
            jitter: NtpDuration::from_seconds_f64(jitter),
            points: fit.points,
            poll: self.poll,
        }
    }

    /// An error beyond the step threshold: stepped at start-up or once it
    /// has lasted the stepout (the old points then described another
    /// timeline: `point` starts the new one), else held as a spike, its
    /// point kept out of the regression.
    fn beyond_threshold(
        &mut self,
        clock: &mut VirtualClock,
        now: NtpTimestamp,
        offset: NtpDuration,
        point: Point,
    ) -> Adjustment {
        let since = *self.beyond_since.get_or_insert(now);
        let startup = self.updates <= self.config.startup_updates;
        if startup || now - since >= self.config.stepout {
            clock.step(now, offset);
            self.beyond_since = None;
            self.points.clear();
            self.points.push_back(point);
            return Adjustment::Stepped(offset);
        }
        Adjustment::Held(offset)
    }

    fn correct(
        &mut self,
        clock: &mut VirtualClock,
        now: NtpTimestamp,
        offset: NtpDuration,
        interval: NtpDuration,
    ) -> Adjustment {
        if offset.abs() > self.config.step_threshold {
            // The sample alone was within the threshold but the line through
            // the points is not: trust neither, as for a spike.
            self.points.pop_back();
            return Adjustment::Held(offset);
        }
        let over = interval.mul_f64(self.config.correction_ratio);
        clock.slew(now, offset, over, self.config.max_slew_rate);
        Adjustment::Slewing(offset)
    }

    /// How far toward a fit's slope the frequency moves: all the way when
    /// the starting frequency was unknown; with a known one, by how much
    /// more certain the fit (its slope's standard error, `slope_error`) is
    /// than what was known.
    fn frequency_gain(&self, slope_error: f64) -> f64 {
        match self.config.frequency_known_ppm {
            None => 1.0,
            Some(known) => {
                let (known, fit) = ((known * 1e-6).powi(2), slope_error.powi(2));
                if known + fit > 0.0 {
                    known / (known + fit)
                } else {
                    1.0
                }
            }
        }
    }

    fn adapt_poll(&mut self, offset: NtpDuration, jitter: f64) {
        if offset.to_seconds_f64().abs() <= POLL_GATE * jitter.max(1e-6) {
            self.good_streak += 1;
            if self.good_streak >= POLL_UP_STREAK {
                self.poll = (self.poll + 1).min(self.config.max_poll);
                self.good_streak = 0;
            }
        } else {
            self.good_streak = 0;
            self.poll = (self.poll - 1).max(self.config.min_poll);
        }
    }

    /// Least squares through the points, shortened from the oldest end
    /// while the residuals' signs form too few runs to be noise.
    fn fit(&mut self) -> Fit {
        loop {
            let fit = line_fit(&self.points);
            if self.points.len() <= 3 || fit.runs >= min_runs(self.points.len()) {
                return fit;
            }
            self.points.pop_front();
        }
    }
}

struct Fit {
    reference: Point,
    /// Value of the line at the reference point, relative to it (seconds).
    intercept: f64,
    slope: Option<f64>,
    /// Weighted sum of squared distances of the points' raw times from
    /// their weighted mean (s²): the slope's standard error is the noise
    /// (of a point of weight 1) over its root.
    sxx: f64,
    residual_rms: f64,
    runs: usize,
    points: usize,
}

/// How much noisier than the best point a point counts, per spread of
/// error bound beyond the best one's (chrony's `SD_TO_DIST_RATIO`).
const NOISE_PER_SPREAD: f64 = 0.7;

/// Each point's weight in the fit, 1 for the one with the smallest error
/// bound: a point whose bound exceeds the smallest by k times their usual
/// spread (the mean's excess over the smallest, at most the smallest
/// itself) has a standard deviation 1 + 0.7·k times the best's, as in
/// chrony's `SST_DoNewRegression`. A reply held up 5 ms in a queue that
/// usually costs 0.3 ms counts some two hundred times less.
fn weights(points: &VecDeque<Point>) -> Vec<f64> {
    let best = points.iter().map(|p| p.distance).fold(f64::INFINITY, f64::min);
    let mean = points.iter().map(|p| p.distance).sum::<f64>() / points.len().max(1) as f64;
    let spread = mean - best;
    let spread = if spread > best || spread <= 0.0 { best } else { spread };
    points
        .iter()
        .map(|p| {
            if spread > 0.0 && spread.is_finite() {
                (1.0 + NOISE_PER_SPREAD * (p.distance - best) / spread).powi(-2)
            } else {
                1.0
            }
        })
        .collect()
}

/// Weighted least-squares line y = a + b·x (weights from [`weights`]) with
/// x, y taken relative to the newest point, so the arithmetic stays small
/// and exact enough in f64.
fn line_fit(points: &VecDeque<Point>) -> Fit {
    let Some(&reference) = points.back() else {
        return Fit {
            reference: Point { raw: NtpTimestamp::ZERO, server_minus_raw: NtpDuration::ZERO, distance: 0.0 },
            intercept: 0.0,
            slope: None,
            sxx: 0.0,
            residual_rms: 0.0,
            runs: 0,
            points: 0,
        };
    };
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            (
                (p.raw - reference.raw).to_seconds_f64(),
                (p.server_minus_raw - reference.server_minus_raw).to_seconds_f64(),
            )
        })
        .collect();
    let n = xy.len() as f64;
    if xy.len() < 3 {
        let points = xy.len();
        return Fit { reference, intercept: 0.0, slope: None, sxx: 0.0, residual_rms: 0.0, runs: points, points };
    }
    let w = weights(points);
    let total: f64 = w.iter().sum();
    let mean_x = xy.iter().zip(&w).map(|(p, w)| w * p.0).sum::<f64>() / total;
    let mean_y = xy.iter().zip(&w).map(|(p, w)| w * p.1).sum::<f64>() / total;
    let sxx: f64 = xy.iter().zip(&w).map(|(p, w)| w * (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = xy.iter().zip(&w).map(|(p, w)| w * (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = mean_y - slope * mean_x;
    let residuals: Vec<f64> = xy.iter().map(|p| p.1 - (intercept + slope * p.0)).collect();
    // The noise of a point of weight 1 (the best kind); the slope's standard
    // error is it over the root of `sxx`.
    let residual_rms = (residuals.iter().zip(&w).map(|(r, w)| w * r * r).sum::<f64>() / (n - 2.0).max(1.0)).sqrt();
    let runs = 1 + residuals.windows(2).filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0)).count();
    Fit { reference, intercept, slope: Some(slope), sxx, residual_rms, runs, points: xy.len() }
}

/// The fewest sign runs that `n` residuals of pure noise show, less two
/// standard deviations: fewer means the points are curving, not scattering.
fn min_runs(n: usize) -> usize {
    let n = n as f64;
    let expected = n / 2.0 + 1.0;
    let deviation = ((n - 1.0) / 4.0).sqrt();
    (expected - 2.0 * deviation).floor().max(2.0) as usize
}

#[cfg(test)]
mod tests;
