//! Durations as people read them: seconds in the unit that reads best.

/// Seconds in the unit that reads best (s, ms, µs, ns).
#[must_use]
pub fn human_seconds(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1.0 || magnitude == 0.0 {
        format!("{value:.3} s")
    } else if magnitude >= 1e-3 {
        format!("{:.3} ms", value * 1e3)
    } else if magnitude >= 1e-6 {
        format!("{:.1} µs", value * 1e6)
    } else {
        format!("{:.0} ns", value * 1e9)
    }
}
