//! What `ntp-query` reports: one entry per address queried, and which of
//! them agree (the RFC 5905 §11.2.1 intersection algorithm). Serialized as
//! the JSON of `docs/query.md`; the table is in [`table`].

pub mod table;

use std::net::SocketAddr;

use chrono::SecondsFormat;
use ntp_proto::exchange::log2_seconds;
use ntp_proto::packet::{Header, KissCode};
use ntp_proto::selection::{self, Candidate};
use ntp_proto::ReplyError;
use serde::Serialize;

use crate::exchange::ExchangeError;
use crate::query::Estimate;

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per address (or per server that did not resolve).
    pub servers: Vec<ServerReport>,
    /// Which servers agree; `null` with fewer than two usable answers.
    pub agreement: Option<Agreement>,
}

/// One address's answer. Times are in seconds. Fields the server did not
/// give (no reply, or no address) are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerReport {
    /// The `SERVER` argument as given.
    pub server: String,
    /// The address queried (`ip:port`), `None` if resolution failed.
    pub address: Option<String>,
    /// Stratum.
    pub stratum: Option<u8>,
    /// Reference ID as the RFC reads it for the stratum: a text code or an
    /// IPv4 address (or the hash of an IPv6 one).
    pub refid: Option<String>,
    /// Leap indicator: "none", "insert", "delete" or "unsynchronized".
    pub leap: Option<&'static str>,
    /// Protocol version of the reply.
    pub version: Option<u8>,
    /// The reply's poll interval, 2^poll seconds.
    pub poll: Option<f64>,
    /// The server clock's precision, 2^precision seconds.
    pub precision: Option<f64>,
    /// Root delay.
    pub root_delay: Option<f64>,
    /// Root dispersion.
    pub root_dispersion: Option<f64>,
    /// When the server's clock was last set or corrected (its reference
    /// timestamp), RFC 3339 UTC; `None` if it never was (a zero timestamp).
    pub reference_time: Option<String>,
    /// Server time minus local time, from the lowest-delay sample.
    pub offset: Option<f64>,
    /// Round-trip delay of that sample.
    pub delay: Option<f64>,
    /// RMS of the other samples' offsets about it.
    pub jitter: Option<f64>,
    /// Root distance: the error bound used in the agreement vote.
    pub root_distance: Option<f64>,
    /// The server's transmit timestamp (T3) of that sample, RFC 3339 UTC.
    pub server_time: Option<String>,
    /// Exchanges that gave a usable sample.
    pub samples: usize,
    /// The kiss-o'-death code, if the server sent one. With no `error`, it
    /// is a RATE that cut the burst short after `samples` good answers.
    pub kiss: Option<String>,
    /// Why this server's answer is not usable, `None` if it is.
    pub error: Option<String>,
    /// With `--nts`: whether the answer was NTS-authenticated (absent
    /// without `--nts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    /// With `--interleaved`: `interleaved` if the samples reduced came in
    /// interleaved mode, `basic` if the server answered in basic mode only
    /// (absent without `--interleaved`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip)]
    candidate: Option<Candidate>,
}

/// The outcome of the intersection algorithm among the usable answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Whether a majority agrees at all.
    pub majority: bool,
    /// Lower end of the offset interval the majority agrees on.
    pub low: Option<f64>,
    /// Upper end of that interval.
    pub high: Option<f64>,
    /// Addresses whose offset lies in the interval.
    pub truechimers: Vec<String>,
    /// Addresses outside it.
    pub falsetickers: Vec<String>,
}

impl ServerReport {
    fn empty(server: &str, address: Option<SocketAddr>) -> Self {
        Self { server: server.to_string(), address: address.map(|a| a.to_string()), ..Self::default() }
    }

    /// A server whose name gave no address.
    #[must_use]
    pub fn unresolved(server: &str, error: &dyn std::error::Error) -> Self {
        Self { error: Some(error.to_string()), ..Self::empty(server, None) }
    }

    /// The result of querying `address`.
    #[must_use]
    pub fn new(server: &str, address: SocketAddr, result: &Result<Estimate, ExchangeError>) -> Self {
        let mut report = Self::empty(server, Some(address));
        match result {
            Ok(estimate) => {
                report.describe_header(&estimate.reply);
                let distance = selection::root_distance(
                    &estimate.sample,
                    estimate.reply.root_delay,
                    estimate.reply.root_dispersion,
                    estimate.jitter,
                );
                report.offset = Some(estimate.sample.offset.to_seconds_f64());
                report.delay = Some(estimate.sample.delay.to_seconds_f64());
                report.jitter = Some(estimate.jitter.to_seconds_f64());
                report.root_distance = Some(distance.to_seconds_f64());
                report.server_time =
                    Some(estimate.reply.transmit.to_datetime().to_rfc3339_opts(SecondsFormat::Micros, true));
                report.samples = estimate.samples;
                if estimate.rate_limited {
                    report.kiss = Some(KissCode::Rate.to_string());
                }
                report.candidate = Some(Candidate { offset: estimate.sample.offset, root_distance: distance });
            }
            Err(ExchangeError::Rejected { reply, error }) => {
                report.describe_header(reply);
                let (kiss, message) = rejection(reply, error);
                report.kiss = kiss.map(|code| code.to_string());
                report.error = Some(message);
            }
            Err(other) => report.error = Some(other.to_string()),
        }
        report
    }

    fn describe_header(&mut self, reply: &Header) {
        self.stratum = Some(reply.stratum.0);
        self.refid = Some(reply.reference_id.display(reply.stratum));
        self.leap = Some(reply.leap.name());
        self.version = Some(reply.version.to_bits());
        self.poll = Some(log2_seconds(reply.poll));
        self.precision = Some(log2_seconds(reply.precision));
        self.root_delay = Some(reply.root_delay.to_seconds_f64());
        self.root_dispersion = Some(reply.root_dispersion.to_seconds_f64());
        self.reference_time = (!reply.reference.is_zero())
            .then(|| reply.reference.to_datetime().to_rfc3339_opts(SecondsFormat::Micros, true));
    }
}

/// The kiss code (if it is one) and the message for a reply that answered
/// but carries no usable time. (`validate_reply` tells a kiss from chrony's
/// unsynchronized stratum 0 with a zero reference ID.)
fn rejection(reply: &Header, error: &ReplyError) -> (Option<KissCode>, String) {
    match error {
        ReplyError::Kiss(code) => match error.kiss_advice() {
            Some(advice) => (Some(*code), format!("kiss-o'-death {code}: {advice}")),
            None => (Some(*code), format!("kiss-o'-death {code}")),
        },
        ReplyError::Unsynchronized { .. } => {
            (None, format!("server unsynchronized (leap {}, stratum {})", reply.leap.to_bits(), reply.stratum.0))
        }
        other => (None, other.to_string()),
    }
}

impl Report {
    /// Gathers the per-address results and votes on them when two or more
    /// are usable.
    #[must_use]
    pub fn new(servers: Vec<ServerReport>) -> Self {
        let usable: Vec<(&ServerReport, Candidate)> = servers.iter().filter_map(|s| Some((s, s.candidate?))).collect();
        let agreement = (usable.len() >= 2).then(|| agreement(&usable));
        Self { servers, agreement }
    }

    /// 0 when every server gave a usable answer, 1 otherwise.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        u8::from(self.servers.iter().any(|s| s.error.is_some()))
    }
}

fn agreement(usable: &[(&ServerReport, Candidate)]) -> Agreement {
    let candidates: Vec<Candidate> = usable.iter().map(|(_, c)| *c).collect();
    let name = |i: usize| usable[i].0.address.clone().unwrap_or_default();
    match selection::intersect(&candidates) {
        Some(found) => Agreement {
            majority: true,
            low: Some(found.low.to_seconds_f64()),
            high: Some(found.high.to_seconds_f64()),
            truechimers: found.truechimers.iter().map(|&i| name(i)).collect(),
            falsetickers: (0..usable.len()).filter(|i| !found.truechimers.contains(i)).map(name).collect(),
        },
        None => Agreement { majority: false, low: None, high: None, truechimers: vec![], falsetickers: vec![] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntp_proto::packet::{LeapIndicator, ReferenceId, Stratum};

    fn rejected(stratum: u8, refid: [u8; 4], leap: LeapIndicator) -> ServerReport {
        let reply = Header {
            mode: ntp_proto::packet::Mode::Server,
            stratum: Stratum(stratum),
            reference_id: ReferenceId(refid),
            leap,
            origin: ntp_proto::NtpTimestamp::from_bits(1),
            ..Header::default()
        };
        let error = ntp_proto::validate_reply(&reply, reply.origin).expect_err("rejected");
        let error = ExchangeError::Rejected { reply: Box::new(reply), error };
        ServerReport::new("s", "127.0.0.1:123".parse().unwrap(), &Err(error))
    }

    #[test]
    fn kiss_codes_and_unsynchronized_servers_are_told_apart() {
        let rate = rejected(0, *b"RATE", LeapIndicator::Unsynchronized);
        assert_eq!(rate.kiss.as_deref(), Some("RATE"));
        assert_eq!(rate.error.as_deref(), Some("kiss-o'-death RATE: server asks to poll less often"));
        let init = rejected(0, *b"INIT", LeapIndicator::Unsynchronized);
        assert_eq!(init.kiss.as_deref(), Some("INIT"));
        // chrony without a source: stratum 0, leap 3, reference ID zero.
        let unsynchronized = rejected(0, [0; 4], LeapIndicator::Unsynchronized);
        assert_eq!(unsynchronized.kiss, None);
        assert_eq!(unsynchronized.error.as_deref(), Some("server unsynchronized (leap 3, stratum 0)"));
        assert_eq!(unsynchronized.leap, Some("unsynchronized"));
        assert_eq!(unsynchronized.offset, None);
    }

    #[test]
    fn no_vote_below_two_usable_answers_and_no_majority_is_said() {
        let usable = |offset: f64| ServerReport {
            candidate: Some(Candidate {
                offset: ntp_proto::NtpDuration::from_seconds_f64(offset),
                root_distance: ntp_proto::NtpDuration::from_seconds_f64(0.01),
            }),
            ..ServerReport::empty("s", Some("127.0.0.1:1".parse().unwrap()))
        };
        assert_eq!(Report::new(vec![usable(0.0)]).agreement, None);
        let split = Report::new(vec![usable(0.0), usable(5.0)]).agreement.unwrap();
        assert!(!split.majority && split.truechimers.is_empty() && split.low.is_none());
        assert_eq!(Report::new(vec![usable(0.0), usable(0.001)]).exit_code(), 0);
    }
}
