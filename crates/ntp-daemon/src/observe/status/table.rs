//! `ntpd-sim status` as text: the system's state as `chronyc tracking`
//! prints it, then a table of upstreams as `chronyc sources` does.

use std::fmt::Write as _;

use ntp_proto::exchange::log2_seconds;

use super::{Selection, SourceReport, StatusReport};
use ntp_plot::human_seconds;

/// The report as a person reads it.
#[must_use]
pub fn render(report: &StatusReport) -> String {
    let s = &report.system;
    let mut out = String::new();
    let seconds = |v: Option<f64>| v.map_or_else(|| "-".into(), human_seconds);
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<18}: {value}");
    };
    line("Synchronized", if s.synchronized { "yes".into() } else { "no".into() });
    line("Stratum", s.stratum.to_string());
    line("Reference ID", s.reference_id.clone());
    line("System peer", s.system_peer.clone().unwrap_or_else(|| "-".into()));
    line("Leap status", leap_status(s));
    line("Last offset", seconds(s.offset));
    line(
        "Frequency",
        format!("{:+.3} ppm correction ({:+.3} ppm relative to the host clock)", s.frequency_ppm, s.host_frequency_ppm),
    );
    line("Root delay", human_seconds(s.root_delay));
    line("Root dispersion", human_seconds(s.root_dispersion));
    line("Poll", s.poll.map_or_else(|| "-".into(), |p| format!("{p} ({} s)", log2_seconds(p))));
    line("Last update", s.since_update.map_or_else(|| "never".into(), |t| format!("{t:.1} s ago")));
    let c = &report.counters;
    line(
        "Requests",
        format!(
            "{} received, {} answered, {} kiss-o'-death, {} dropped",
            c.received,
            c.answered,
            c.kissed_rate + c.kissed_deny,
            c.dropped_malformed
                + c.dropped_not_request
                + c.dropped_zero_transmit
                + c.dropped_denied
                + c.dropped_rate_limited
        ),
    );
    if report.upstreams.is_empty() && report.sources.is_empty() {
        let _ = writeln!(out, "\nno upstreams: a primary server");
        return out;
    }
    if report.upstreams.is_empty() {
        let _ = writeln!(out, "\nno upstream address yet: the sources below are being resolved\n");
        out.push_str(&render_sources(&report.sources));
        return out;
    }
    let _ = writeln!(
        out,
        "\n  {:<24} {:>5} {:>3} {:>4} {:>11} {:>11} {:>11}  STATE",
        "UPSTREAM", "REACH", "ST", "POLL", "OFFSET", "DELAY", "JITTER"
    );
    for u in &report.upstreams {
        let _ = writeln!(
            out,
            "{} {:<24} {:>5o} {:>3} {:>4} {:>11} {:>11} {:>11}  {}",
            mark(u.state),
            u.pool.as_ref().map_or_else(|| u.name.clone(), |_| format!("{} (pool)", u.name)),
            u.reach,
            u.stratum.map_or_else(|| "-".into(), |s| s.to_string()),
            u.poll,
            seconds(u.offset),
            seconds(u.delay),
            seconds(u.jitter),
            match &u.mode {
                Some(mode) => format!("{}, xleave: {mode}", describe(u.state)),
                None => describe(u.state).to_string(),
            },
        );
    }
    let _ = writeln!(
        out,
        "\n* system peer, + candidate, - outlier, x falseticker, ? unreachable or unusable; \
         OFFSET: the upstream minus our clock"
    );
    if report.upstreams.iter().any(|u| u.pool.is_some()) || report.sources.iter().any(|s| s.addresses.is_empty()) {
        let _ = writeln!(out);
        out.push_str(&render_sources(&report.sources));
    }
    if !report.replacements.is_empty() {
        let _ = writeln!(out, "\n  REPLACED ADDRESS          SOURCE                   REASON           WHEN (UTC)");
        for r in &report.replacements {
            let _ = writeln!(out, "  {:<25} {:<24} {:<16} {}", r.address, r.source, r.reason, utc(r.unix_time));
        }
    }
    out
}

/// The sources, configured and added, with their addresses (what
/// `ntpd-sim sources list` prints, and `ntpd-sim status` under its table
/// when there is a pool or an unresolved name).
#[must_use]
pub fn render_sources(sources: &[SourceReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {:<28} {:<6} {:<7} {:>4}  ADDRESSES / RESOLUTION", "SOURCE", "KIND", "ORIGIN", "USED");
    for s in sources {
        let used = format!("{}/{}", s.addresses.len(), s.max_sources);
        let detail = match (&s.error, s.addresses.is_empty()) {
            (Some(error), _) => format!(
                "not resolved: {error} ({} failures; next try in {})",
                s.failures,
                s.next_resolution.map_or_else(|| "progress".into(), |t| format!("{t:.0} s"))
            ),
            (None, true) => "resolving".into(),
            (None, false) => s.addresses.join(" "),
        };
        let _ = writeln!(out, "  {:<28} {:<6} {:<7} {:>4}  {detail}", s.name, s.kind, s.origin, used);
    }
    if sources.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    out
}

/// Unix time as `YYYY-MM-DD HH:MM:SS`.
fn utc(unix: f64) -> String {
    let seconds = unix.max(0.0) as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The tally mark `ntpq -p` puts before a row.
fn mark(state: Selection) -> char {
    match state {
        Selection::SystemPeer => '*',
        Selection::Candidate => '+',
        Selection::Outlier => '-',
        Selection::Falseticker => 'x',
        Selection::Pending => ' ',
        _ => '?',
    }
}

fn describe(state: Selection) -> &'static str {
    match state {
        Selection::SystemPeer => "system peer",
        Selection::Candidate => "candidate",
        Selection::Outlier => "outlier",
        Selection::Falseticker => "falseticker",
        Selection::Unreachable => "unreachable",
        Selection::Stopped => "stopped by a kiss-o'-death",
        Selection::NoSample => "no sample yet",
        Selection::Unsynchronized => "unsynchronized",
        Selection::TooFar => "root distance too large",
        Selection::Loop => "synchronized to us (loop)",
        Selection::NoSelect => "noselect (shown, never used)",
        Selection::Pending => "not selected yet",
    }
}

/// The leap indicator sent, the leap pending and, loudly, a smear.
fn leap_status(s: &super::SystemReport) -> String {
    let l = &s.leap_second;
    let mut status = s.leap.clone();
    if let (Some(kind), Some(at)) = (&l.pending, l.pending_at_unix) {
        let midnight = chrono::DateTime::from_timestamp(at as i64, 0)
            .map_or_else(|| format!("{at} (Unix)"), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        let _ = write!(status, " (pending: {kind} before {midnight}, {})", l.mode);
    }
    if l.smearing {
        let _ = write!(status, "; SMEARING: served time is {} from UTC", ntp_plot::human_seconds(l.smear_offset));
    } else if let Some(window) = l.smear_window {
        let _ = write!(status, "; leaps smeared over {window} s");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::super::{LeapReport, SystemReport, UpstreamReport};
    use super::*;
    use crate::stats::Counts;

    fn upstream(name: &str, state: Selection) -> UpstreamReport {
        UpstreamReport {
            name: name.into(),
            address: name.into(),
            reach: 0o377,
            stratum: Some(1),
            reference_id: Some("LOCL".into()),
            poll: 2,
            offset: Some(-4e-6),
            delay: Some(2e-5),
            jitter: Some(1e-6),
            state,
            pool: None,
            origin: "config".into(),
            mode: None,
        }
    }

    #[test]
    fn tracking_lines_then_a_row_per_upstream_marked_as_ntpq_does() {
        let report = StatusReport {
            system: SystemReport {
                synchronized: true,
                stratum: 2,
                reference_id: "127.0.0.1".into(),
                leap: "none".into(),
                leap_second: LeapReport {
                    mode: "smear".into(),
                    smear_window: Some(86_400),
                    pending: Some("insert".into()),
                    pending_at_unix: Some(1_483_228_800.0),
                    smearing: true,
                    smear_offset: -0.25,
                },
                offset: Some(-9.8e-8),
                frequency_ppm: -50.1,
                host_frequency_ppm: -0.1,
                host_offset: 0.0,
                root_delay: 3.05e-5,
                root_dispersion: 4e-4,
                since_update: Some(1.0),
                poll: Some(2),
                precision: -24,
                system_peer: Some("a:1".into()),
            },
            upstreams: vec![
                upstream("a:1", Selection::SystemPeer),
                UpstreamReport { mode: Some("interleaved".into()), ..upstream("b:1", Selection::Falseticker) },
            ],
            counters: Counts { received: 7, answered: 5, dropped_malformed: 2, ..Counts::default() },
            sources: Vec::new(),
            replacements: Vec::new(),
        };
        let text = render(&report);
        assert!(text.contains("Stratum           : 2\n"), "{text}");
        assert!(text.contains("Last offset       : -98 ns\n"), "{text}");
        let smearing =
            "none (pending: insert before 2017-01-01 00:00:00 UTC, smear); SMEARING: served time is -250.000 ms from UTC";
        assert!(text.contains(smearing), "{text}");
        assert!(text.contains("7 received, 5 answered, 0 kiss-o'-death, 2 dropped"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(":1 ")).collect();
        assert!(rows[0].starts_with("* a:1") && rows[0].contains(" 377 ") && rows[0].ends_with("system peer"));
        assert!(rows[1].starts_with("x b:1") && rows[1].ends_with("falseticker, xleave: interleaved"), "{rows:?}");
    }

    fn source(name: &str, kind: &str, addresses: &[&str], error: Option<&str>) -> SourceReport {
        SourceReport {
            name: name.into(),
            kind: kind.into(),
            origin: "config".into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            max_sources: if kind == "pool" { 4 } else { 1 },
            failures: u32::from(error.is_some()) * 3,
            error: error.map(String::from),
            next_resolution: Some(4.0),
        }
    }

    #[test]
    fn pool_rows_are_marked_and_sources_and_replacements_follow_the_table() {
        let json = r#"{"system":{"synchronized":false,"stratum":0,"reference_id":"","leap":"unsynchronized","offset":null,
            "frequency_ppm":0.0,"host_frequency_ppm":0.0,"host_offset":0.0,"root_delay":0.0,"root_dispersion":16.0,
            "since_update":null,"poll":null,"precision":-24,"system_peer":null},"upstreams":[],"counters":{"received":0,
            "answered":0,"kissed_rate":0,"kissed_deny":0,"dropped_malformed":0,"dropped_not_request":0,
            "dropped_zero_transmit":0,"dropped_denied":0,"dropped_rate_limited":0,"send_errors":0}}"#;
        let mut report: StatusReport = serde_json::from_str(json).unwrap();
        report.sources = vec![source("late.test", "server", &[], Some("cannot resolve late.test"))];
        let text = render(&report);
        assert!(text.contains("no upstream address yet"), "{text}");
        assert!(
            text.contains("late.test")
                && text.contains("not resolved: cannot resolve late.test (3 failures; next try in 4 s)"),
            "{text}"
        );
        report.upstreams = vec![UpstreamReport {
            pool: Some("pool.test".into()),
            ..upstream("127.0.0.11:123", Selection::SystemPeer)
        }];
        report.sources = vec![source("pool.test", "pool", &["127.0.0.11:123"], None)];
        report.replacements = vec![super::super::ReplacementReport {
            source: "pool.test".into(),
            address: "127.0.0.12:123".into(),
            reason: "unreachable".into(),
            unix_time: 1_795_000_000.0,
        }];
        let text = render(&report);
        assert!(text.contains("* 127.0.0.11:123 (pool)"), "{text}");
        assert!(text.contains("pool.test                    pool   config   1/4  127.0.0.11:123"), "{text}");
        assert!(
            text.contains("127.0.0.12:123            pool.test                unreachable      2026-11-18 11:06:40"),
            "{text}"
        );
    }

    #[test]
    fn a_primary_server_has_no_table() {
        let json = r#"{"system":{"synchronized":true,"stratum":1,"reference_id":"LOCL","leap":"none","offset":null,
            "frequency_ppm":0.0,"host_frequency_ppm":0.0,"host_offset":0.0,"root_delay":0.0,"root_dispersion":0.0,"since_update":null,
            "poll":null,"precision":-24,"system_peer":null},"upstreams":[],"counters":{"received":0,"answered":0,
            "kissed_rate":0,"kissed_deny":0,"dropped_malformed":0,"dropped_not_request":0,"dropped_zero_transmit":0,
            "dropped_denied":0,"dropped_rate_limited":0,"send_errors":0}}"#;
        let report: StatusReport = serde_json::from_str(json).unwrap();
        let text = render(&report);
        assert!(text.contains("Last update       : never") && text.ends_with("no upstreams: a primary server\n"));
    }
}
