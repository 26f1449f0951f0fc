//! ntp-clockwatch: watches CLOCK_REALTIME against CLOCK_MONOTONIC for a
//! while and reports every step (a jump of their difference) and every
//! time the real-time clock ran backwards. Run inside the test VM (see
//! tests/vm/) beside a daemon that disciplines the clock: after its first
//! step, time must never run backwards. Only reads clocks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// Watch the system clock for steps and backward runs.
#[derive(Debug, Parser)]
#[command(name = "ntp-clockwatch", version, about)]
struct Args {
    /// How long to watch, seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// A change of realtime minus monotonic larger than this between two
    /// readings is a step, seconds.
    #[arg(long, default_value_t = 0.001)]
    step: f64,
    /// Time between readings, seconds.
    #[arg(long, default_value_t = 0.001)]
    every: f64,
    /// Stop as soon as the real-time clock reads this Unix time (or after
    /// --seconds, whichever comes first): for a watch across a moment of
    /// the clock's own, such as a leap second's midnight.
    #[arg(long)]
    until: Option<f64>,
}

/// What one watch saw.
#[derive(Debug, Default)]
struct Watch {
    readings: u64,
    steps: Vec<f64>,
    /// Times realtime read less than the reading before, after the first step.
    backwards_after_first_step: u64,
    /// The largest such backward run, seconds.
    largest_backwards: f64,
}

impl Watch {
    fn take(&mut self, previous: (f64, f64), now: (f64, f64), step: f64) {
        self.readings += 1;
        let jump = (now.0 - now.1) - (previous.0 - previous.1);
        if jump.abs() > step {
            self.steps.push(jump);
        } else if now.0 < previous.0 && !self.steps.is_empty() {
            self.backwards_after_first_step += 1;
            self.largest_backwards = self.largest_backwards.max(previous.0 - now.0);
        }
    }
}

fn realtime() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Reading pairs whose monotonic readings, taken on both sides of the
/// real-time one, lie further apart than this were interrupted (a
/// preemption would look like a step and its undoing): read again.
const TIGHT_PAIR: f64 = 50e-6;

/// Real time and monotonic time (since `started`) read together: the
/// monotonic reading is the middle of two taken on either side.
fn reading(started: Instant) -> (f64, f64) {
    loop {
        let before = started.elapsed().as_secs_f64();
        let real = realtime();
        let after = started.elapsed().as_secs_f64();
        if after - before <= TIGHT_PAIR {
            return (real, (before + after) / 2.0);
        }
    }
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let mut watch = Watch::default();
    let mut previous = reading(started);
    while started.elapsed().as_secs_f64() < args.seconds && args.until.is_none_or(|until| previous.0 < until) {
        std::thread::sleep(Duration::from_secs_f64(args.every));
        let now = reading(started);
        watch.take(previous, now, args.step);
        previous = now;
    }
    let steps: Vec<String> = watch.steps.iter().map(|s| format!("{s:.6}")).collect();
    println!(
        "clockwatch readings={} steps={} step_sizes={} backwards_after_first_step={} largest_backwards={:.9}",
        watch.readings,
        watch.steps.len(),
        if steps.is_empty() { "-".to_string() } else { steps.join(",") },
        watch.backwards_after_first_step,
        watch.largest_backwards
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_counted_and_only_later_backward_runs() {
        let mut watch = Watch::default();
        watch.take((100.0, 1.0), (99.9998, 1.0001), 0.001);
        assert_eq!(watch.backwards_after_first_step, 0, "before the first step it is not counted");
        watch.take((100.0, 1.0), (3700.0, 1.001), 0.001);
        assert_eq!(watch.steps.len(), 1);
        watch.take((3700.0, 1.001), (3699.9999, 1.0015), 0.001);
        assert_eq!(watch.backwards_after_first_step, 1);
        assert!((watch.largest_backwards - 0.0001).abs() < 1e-9);
    }
}
