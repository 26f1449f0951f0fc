//! Virtual-time tests of the discipline: an oscillator that starts wrong and
//! drifts, measured with noise, must be brought to true time.

use super::*;
use crate::clock::VirtualClock;

/// A deterministic noise source (a linear congruential generator) giving
/// values uniform in ±amplitude.
struct Noise(u64);

impl Noise {
    fn next(&mut self, amplitude: f64) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amplitude
    }
}

fn t0() -> NtpTimestamp {
    NtpTimestamp::from_unix(1_800_000_000, 0)
}

fn secs(s: f64) -> NtpDuration {
    NtpDuration::from_seconds_f64(s)
}

struct Run {
    oscillator: VirtualClock,
    correction: VirtualClock,
    discipline: Discipline,
    noise: Noise,
}

impl Run {
    fn new(offset: f64, drift_ppm: f64, config: DisciplineConfig) -> Self {
        Self {
            oscillator: VirtualClock::new(t0(), secs(offset), drift_ppm),
            correction: VirtualClock::new(t0(), NtpDuration::ZERO, 0.0),
            discipline: Discipline::new(config),
            noise: Noise(7),
        }
    }

    /// Disciplined time minus true time at true time `at` (seconds from t0).
    fn error(&self, at: f64) -> f64 {
        let true_time = t0() + secs(at);
        (self.correction.time_at(self.oscillator.time_at(true_time)) - true_time).to_seconds_f64()
    }

    /// One measurement at true time `at` with ±`noise` seconds of error.
    fn measure(&mut self, at: f64, noise: f64) -> Update {
        let true_time = t0() + secs(at);
        let raw = self.oscillator.time_at(true_time);
        let server_minus_raw = (true_time - raw) + secs(self.noise.next(noise));
        let measurement =
            Measurement { at: raw, server_minus_raw, distance: NtpDuration::ZERO, jitter: secs(noise / 2.0) };
        self.discipline.update(&mut self.correction, raw, measurement)
    }

    /// A measurement at true time `at` of exactly `server_minus_raw`.
    fn measure_as(&mut self, at: f64, server_minus_raw: NtpDuration) -> Update {
        let raw = self.oscillator.time_at(t0() + secs(at));
        let measurement =
            Measurement { at: raw, server_minus_raw, distance: NtpDuration::ZERO, jitter: NtpDuration::ZERO };
        self.discipline.update(&mut self.correction, raw, measurement)
    }
}

fn config(min_poll: i8, max_poll: i8) -> DisciplineConfig {
    DisciplineConfig { min_poll, max_poll, ..DisciplineConfig::default() }
}

#[test]
fn five_minutes_off_is_stepped_at_once() {
    let mut run = Run::new(300.0, 0.0, config(0, 0));
    let update = run.measure(0.0, 0.0);
    assert!(matches!(update.adjustment, Adjustment::Stepped(d) if (d.to_seconds_f64() + 300.0).abs() < 1e-6));
    assert!(run.error(0.0).abs() < 1e-6);
}

#[test]
fn small_offsets_are_slewed_and_time_never_runs_backwards() {
    let mut run = Run::new(0.05, 0.0, config(0, 0));
    let update = run.measure(0.0, 0.0);
    assert!(matches!(update.adjustment, Adjustment::Slewing(_)));
    let mut last = run.correction.time_at(run.oscillator.time_at(t0()));
    for ms in 1..=200_000 {
        let true_time = t0() + secs(f64::from(ms) * 1e-3);
        let now = run.correction.time_at(run.oscillator.time_at(true_time));
        assert!(now - last > NtpDuration::ZERO, "time went backwards at {ms} ms");
        last = now;
        if ms % 1000 == 0 {
            let _ = run.measure(f64::from(ms) * 1e-3, 0.0);
        }
    }
    assert!(run.error(200.0).abs() < 1e-5, "error {}", run.error(200.0));
}

#[test]
fn drift_is_learnt_and_noise_averaged() {
    // 100 ms off, 100 ppm fast, ±100 µs of noise, polled every second:
    // chrony's own simulation stress case.
    let mut run = Run::new(0.1, 100.0, config(0, 0));
    let mut worst_after = 0.0f64;
    let mut within_1ms = None;
    for s in 0..600 {
        let update = run.measure(f64::from(s), 100e-6);
        let error = run.error(f64::from(s) + 0.5).abs();
        if within_1ms.is_none() && error < 1e-3 {
            within_1ms = Some(s);
        }
        if s >= 120 {
            worst_after = worst_after.max(error);
            assert!((update.frequency_ppm + 100.0).abs() < 5.0, "frequency {}", update.frequency_ppm);
        }
    }
    eprintln!("within 1 ms after {within_1ms:?} s, worst after 120 s {worst_after}");
    assert!(within_1ms.is_some_and(|s| s < 60), "within 1 ms after {within_1ms:?} s");
    assert!(worst_after < 100e-6, "worst error after convergence {worst_after}");
}

#[test]
fn a_single_spike_is_held_not_stepped() {
    let mut run = Run::new(0.0, 0.0, config(0, 0));
    for s in 0..20 {
        let _ = run.measure(f64::from(s), 0.0);
    }
    let update = run.measure_as(20.0, secs(5.0));
    assert!(matches!(update.adjustment, Adjustment::Held(_)));
    assert!(run.error(20.0).abs() < 1e-6);
    let update = run.measure(21.0, 0.0);
    assert!(matches!(update.adjustment, Adjustment::Slewing(_)));
}

#[test]
fn held_spikes_leave_the_frequency_and_the_history_alone() {
    let mut run = Run::new(0.0, 20.0, config(0, 0));
    for s in 0..60 {
        let _ = run.measure(f64::from(s), 0.0);
    }
    let learned = run.measure(60.0, 0.0).frequency_ppm;
    for s in 61..64 {
        let update = run.measure_as(f64::from(s), secs(1.0));
        assert!(matches!(update.adjustment, Adjustment::Held(_)), "{update:?}");
        assert!((update.frequency_ppm - learned).abs() < 0.01, "a spike moved the frequency: {update:?}");
    }
    let update = run.measure(64.0, 0.0);
    assert!(matches!(update.adjustment, Adjustment::Slewing(_)));
    assert!(update.points > 10, "the history was cut short: {update:?}");
    assert!((update.frequency_ppm - learned).abs() < 0.5, "{update:?} after {learned}");
    assert!(run.error(64.0).abs() < 1e-4, "error {}", run.error(64.0));
}

#[test]
fn a_persistent_jump_is_stepped_after_the_stepout() {
    let cfg = DisciplineConfig { stepout: secs(10.0), ..config(0, 0) };
    let mut run = Run::new(0.0, 0.0, cfg);
    for s in 0..10 {
        let _ = run.measure(f64::from(s), 0.0);
    }
    let mut stepped_at = None;
    for s in 10..30 {
        let update = run.measure_as(f64::from(s), secs(2.0));
        if matches!(update.adjustment, Adjustment::Stepped(_)) {
            stepped_at = Some(s);
            break;
        }
    }
    assert_eq!(stepped_at, Some(20));
}

#[test]
fn poll_interval_grows_when_calm() {
    let mut run = Run::new(0.0, 0.0, config(0, 4));
    let mut at = 0.0;
    let mut poll = 0;
    for _ in 0..60 {
        poll = run.measure(at, 1e-6).poll;
        at += 2f64.powi(i32::from(poll));
    }
    assert_eq!(poll, 4);
}

/// The largest frequency correction over the first `seconds` of polls
/// every second, with ±300 µs of noise (a loaded VM's), from a clock
/// already right in phase and frequency.
fn largest_frequency_early(config: DisciplineConfig, seconds: u32) -> f64 {
    let mut run = Run::new(0.0, 0.0, config);
    (0..seconds).map(|at| run.measure(f64::from(at), 300e-6).frequency_ppm.abs()).fold(0.0, f64::max)
}

#[test]
fn a_known_frequency_is_not_relearned_from_the_first_noisy_points() {
    let unknown = largest_frequency_early(config(0, 0), 30);
    let known = largest_frequency_early(DisciplineConfig { frequency_known_ppm: Some(2.0), ..config(0, 0) }, 30);
    assert!(unknown > 20.0, "the fits of a few close points swing: {unknown} ppm");
    assert!(known < unknown / 4.0 && known < 10.0, "known {known} ppm, unknown {unknown} ppm");
}

#[test]
fn a_known_frequency_that_is_wrong_is_still_corrected() {
    let mut run = Run::new(0.0, 20.0, DisciplineConfig { frequency_known_ppm: Some(2.0), ..config(0, 0) });
    let mut last = None;
    for at in 0..600 {
        last = Some(run.measure(f64::from(at), 100e-6));
    }
    let frequency = last.map_or(0.0, |u| u.frequency_ppm);
    assert!((frequency + 20.0).abs() < 3.0, "frequency {frequency} ppm");
    assert!(run.error(600.0).abs() < 1e-3, "error {}", run.error(600.0));
}

#[test]
fn a_broad_prior_still_learns_a_large_frequency_error_within_two_minutes() {
    let mut run = Run::new(0.0, 100.0, DisciplineConfig { frequency_known_ppm: Some(100.0), ..config(0, 0) });
    let mut last = None;
    for at in 0..120 {
        last = Some(run.measure(f64::from(at), 300e-6));
    }
    let frequency = last.map_or(0.0, |u| u.frequency_ppm);
    assert!((frequency + 100.0).abs() < 5.0, "frequency {frequency} ppm");
    assert!(run.error(120.0).abs() < 1e-3, "error {}", run.error(120.0));
}

/// The worst frequency error from 20 s to 60 s of polls every second on
/// a clock 100 ppm fast, as the test VM's TCG replies come: ±100 µs of
/// noise, and one reply in six held up 1-6 ms on its way back, which puts
/// its offset half the hold-up low and its error bound half of it high.
/// With `weighed`, the discipline is told each reply's error bound.
fn worst_frequency_with_held_up_replies(weighed: bool) -> f64 {
    let mut run = Run::new(0.0, 100.0, config(0, 0));
    let mut worst = 0.0f64;
    for at in 0..60 {
        let true_time = t0() + secs(f64::from(at));
        let raw = run.oscillator.time_at(true_time);
        let held_up = if run.noise.next(1.0) > 2.0 / 3.0 { 3.5e-3 + run.noise.next(2.5e-3) } else { 0.0 };
        let server_minus_raw = (true_time - raw) + secs(run.noise.next(100e-6) - held_up / 2.0);
        let distance = if weighed { secs((300e-6 + held_up) / 2.0) } else { NtpDuration::ZERO };
        let measurement = Measurement { at: raw, server_minus_raw, distance, jitter: secs(50e-6) };
        let update = run.discipline.update(&mut run.correction, raw, measurement);
        if at >= 20 {
            worst = worst.max((update.frequency_ppm + 100.0).abs());
        }
    }
    worst
}

#[test]
fn replies_held_up_on_one_leg_barely_tilt_the_frequency() {
    let weighed = worst_frequency_with_held_up_replies(true);
    let unweighed = worst_frequency_with_held_up_replies(false);
    eprintln!("worst frequency error 20-60 s: {weighed:.2} ppm weighed by error bound, {unweighed:.2} ppm not");
    assert!(weighed < 5.0 && weighed < unweighed / 3.0, "weighed {weighed} ppm, unweighed {unweighed} ppm");
}

#[test]
fn after_a_change_of_system_peer_the_old_points_do_not_outweigh_the_new() {
    // Thirty updates from a LAN peer (0.15 ms bounds), then the system
    // peer becomes an internet one (15 ms bounds) whose time is 2 ms off
    // the first's. Without re-basing, its points weigh 2e-4 of the old
    // ones and the fit holds to the old line; re-based, all count alike.
    let mut discipline = Discipline::new(config(0, 0));
    let mut correction = VirtualClock::new(t0(), NtpDuration::ZERO, 0.0);
    for at in 0..30 {
        let raw = t0() + secs(f64::from(at));
        let measurement =
            Measurement { at: raw, server_minus_raw: secs(0.0), distance: secs(150e-6), jitter: secs(10e-6) };
        let _ = discipline.update(&mut correction, raw, measurement);
    }
    let lan = discipline.points.len();
    assert!(lan >= 3, "{lan} points kept");
    discipline.system_peer_changed(secs(15e-3));
    assert!(discipline.points.iter().all(|p| (p.distance - 15e-3).abs() < 1e-9));
    let raw = t0() + secs(30.0);
    let new_bound = secs(15e-3).to_seconds_f64();
    discipline.points.push_back(Point { raw, server_minus_raw: secs(2e-3), distance: new_bound });
    let weights = weights(&discipline.points);
    assert!(weights.iter().all(|&w| (w - 1.0).abs() < 1e-12), "{weights:?}");
}
