//! What a load run counted, and the one-line report with responses/s and
//! latency percentiles.

use std::time::Duration;

use crate::RunArgs;

/// Counts of a load run (measurement window only).
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub sent: u64,
    /// Bad datagrams sent alongside (`--bad-ratio`).
    pub bad_sent: u64,
    /// Replies that matched an outstanding request and had sane timestamps.
    pub valid: u64,
    /// Replies that did not (wrong origin, mode, version or time).
    pub invalid: u64,
    /// Requests that got no reply within a second.
    pub lost: u64,
    /// Round-trip times of valid replies, nanoseconds.
    pub latencies: Vec<u32>,
}

/// `label rate=… responses/s, …` with latency percentiles in microseconds.
pub fn line(args: &RunArgs, tally: &Tally, duration: Duration) -> String {
    let mut latencies = tally.latencies.clone();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    let mode = match args.rate {
        Some(rate) => format!("open-loop {rate:.0}/s"),
        None => format!("closed-loop {}x{}", args.sockets, args.window),
    };
    format!(
        "{label}: {mode}: {rps:.0} responses/s, sent {sent}, bad {bad}, valid {valid}, invalid {invalid}, lost {lost}, \
         latency us p50 {p50:.1} p90 {p90:.1} p99 {p99:.1} p99.9 {p999:.1} max {max:.1}",
        label = args.label,
        rps = tally.valid as f64 / duration.as_secs_f64(),
        sent = tally.sent,
        bad = tally.bad_sent,
        valid = tally.valid,
        invalid = tally.invalid,
        lost = tally.lost,
        p50 = pct(0.5),
        p90 = pct(0.9),
        p99 = pct(0.99),
        p999 = pct(0.999),
        max = pct(1.0),
    )
}
