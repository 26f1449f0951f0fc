//! The human form of a [`Report`]: one row per address, times in units a
//! person reads at a glance, then a line on which servers agree.

use std::fmt::Write;

use super::{Report, ServerReport};

/// Renders the report as a table.
#[must_use]
pub fn render(report: &Report) -> String {
    let named = report.servers.iter().any(|s| s.address.as_deref() != Some(s.server.as_str()));
    let mut rows: Vec<Vec<String>> = vec![header(named)];
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    for server in &report.servers {
        let mut row = Vec::new();
        if named {
            row.push(server.server.clone());
        }
        row.push(server.address.clone().unwrap_or_else(|| "-".into()));
        row.push(opt(server.stratum));
        row.push(server.refid.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| "-".into()));
        row.push(server.leap.map_or("-".into(), leap_code));
        row.push(opt(server.version));
        row.push(server.poll.map_or("-".into(), |p| format!("{p}s")));
        row.push(server.precision.map_or("-".into(), |p| format!("2^{}", p.log2().round())));
        row.push(server.offset.map_or("-".into(), |v| duration(v, true)));
        row.push(server.delay.map_or("-".into(), |v| duration(v, false)));
        row.push(server.jitter.map_or("-".into(), |v| duration(v, false)));
        row.push(server.root_delay.map_or("-".into(), |v| duration(v, false)));
        row.push(server.root_dispersion.map_or("-".into(), |v| duration(v, false)));
        row.push(server.server_time.as_deref().map_or("-".into(), |t| t.replace('T', " ").replace('Z', "")));
        rows.push(row);
        if server.authenticated == Some(true) {
            notes.push(format!("{}: NTS authenticated ({} samples)", label(server), server.samples));
        }
        match (server.mode, &server.error) {
            (Some("interleaved"), None) => {
                notes.push(format!("{}: interleaved mode ({} samples)", label(server), server.samples));
            }
            (Some(mode), None) => {
                notes.push(format!("{}: the server answered in {mode} mode only", label(server)));
            }
            _ => {}
        }
        if let Some(error) = &server.error {
            errors.push(format!("{}: {error}", label(server)));
        } else if let Some(kiss) = &server.kiss {
            let samples = server.samples;
            errors.push(format!(
                "{}: kiss-o'-death {kiss} after {samples} sample(s): use a longer --interval",
                label(server)
            ));
        }
    }
    let mut out = String::new();
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let left: Vec<bool> =
        rows[0].iter().map(|h| matches!(h.as_str(), "SERVER" | "ADDRESS" | "REFID" | "SERVER TIME (UTC)")).collect();
    for row in &rows {
        let mut line = String::new();
        for ((cell, width), left) in row.iter().zip(&widths).zip(&left) {
            if *left {
                let _ = write!(line, "{cell:<width$}  ");
            } else {
                let _ = write!(line, "{cell:>width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for note in notes {
        out.push_str(&note);
        out.push('\n');
    }
    for error in errors {
        out.push_str(&error);
        out.push('\n');
    }
    if let Some(agreement) = &report.agreement {
        let total = agreement.truechimers.len() + agreement.falsetickers.len();
        match (agreement.low, agreement.high) {
            (Some(low), Some(high)) if agreement.majority => {
                let _ = writeln!(
                    out,
                    "agreement: {} of {total} agree on an offset in [{}, {}]",
                    agreement.truechimers.len(),
                    duration(low, true),
                    duration(high, true)
                );
                if !agreement.falsetickers.is_empty() {
                    let _ = writeln!(out, "falsetickers: {}", agreement.falsetickers.join(", "));
                }
            }
            _ => {
                let _ = writeln!(out, "agreement: no majority of the {total} usable servers agrees");
            }
        }
    }
    out
}

fn header(named: bool) -> Vec<String> {
    let mut columns = vec![];
    if named {
        columns.push("SERVER");
    }
    columns.extend([
        "ADDRESS",
        "ST",
        "REFID",
        "LI",
        "V",
        "POLL",
        "PREC",
        "OFFSET",
        "DELAY",
        "JITTER",
        "ROOTDELAY",
        "ROOTDISP",
        "SERVER TIME (UTC)",
    ]);
    columns.into_iter().map(String::from).collect()
}

fn label(server: &ServerReport) -> String {
    match &server.address {
        Some(address) if *address != server.server => format!("{} ({address})", server.server),
        Some(address) => address.clone(),
        None => server.server.clone(),
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

fn leap_code(leap: &str) -> String {
    match leap {
        "none" => "0",
        "insert" => "1",
        "delete" => "2",
        _ => "3",
    }
    .into()
}

/// Seconds in the unit that suits them: µs, ms or s.
#[must_use]
pub fn duration(seconds: f64, signed: bool) -> String {
    let magnitude = seconds.abs();
    let (value, unit, decimals) = if magnitude < 1e-3 {
        (seconds * 1e6, "µs", 1)
    } else if magnitude < 1.0 {
        (seconds * 1e3, "ms", 3)
    } else {
        (seconds, "s", 6)
    };
    if signed {
        format!("{value:+.decimals$}{unit}")
    } else {
        format!("{value:.decimals$}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(duration(-0.0000031, true), "-3.1µs");
        assert_eq!(duration(0.0123456, false), "12.346ms");
        assert_eq!(duration(300.0000125, true), "+300.000013s");
    }
}
