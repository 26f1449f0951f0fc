//! `/metrics`: the server's counters and the clock's and upstreams' state in
//! the Prometheus (OpenMetrics) text format, through `prometheus-client`.
//! Nothing is stored twice: a collector reads the serving threads' atomic
//! counters and the synchronizer's published status at each scrape, so the
//! serving fast path gains no lock and no work.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::status::{self, Selection, StatusReport, SyncStatus};
use crate::clock::SharedClock;
use crate::stats::Stats;

/// What the HTTP side observes of a running daemon.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The served clock.
    pub clock: Arc<SharedClock>,
    /// The upstream side's status (stays at its default for a primary server).
    pub status: watch::Receiver<SyncStatus>,
    /// The serving threads' counters.
    pub stats: Arc<Stats>,
}

impl Observed {
    /// The status report now.
    #[must_use]
    pub fn report(&self) -> StatusReport {
        let sync = self.status.borrow().clone();
        status::report(&sync, &self.clock.snapshot(), SharedClock::system_now(), self.stats.read())
    }
}

/// A registry with the daemon's metrics, all named `ntp_*`.
#[must_use]
pub fn registry(observed: Observed) -> Registry {
    let mut registry = Registry::with_prefix("ntp");
    registry.register_collector(Box::new(DaemonCollector(observed)));
    registry
}

/// Encodes the registry in the text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[derive(Debug)]
struct DaemonCollector(Observed);

type Labels = Vec<(&'static str, String)>;

impl Collector for DaemonCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = self.0.report();
        let c = report.counters;
        counter(&mut encoder, "requests_received", "Datagrams received on the NTP sockets", &[(vec![], c.received)])?;
        counter(&mut encoder, "requests_answered", "Requests answered with time", &[(vec![], c.answered)])?;
        let interleaved = &[(vec![], c.answered_interleaved)];
        counter(&mut encoder, "requests_answered_interleaved", "Of those, answered in interleaved mode", interleaved)?;
        let reason = |r: &str| vec![("reason", r.to_string())];
        counter(
            &mut encoder,
            "requests_dropped",
            "Datagrams dropped without a reply, by reason",
            &[
                (reason("malformed"), c.dropped_malformed),
                (reason("wrong_mode"), c.dropped_not_request),
                (reason("zero_transmit"), c.dropped_zero_transmit),
                (reason("denied"), c.dropped_denied),
                (reason("rate_limited"), c.dropped_rate_limited),
            ],
        )?;
        let code = |k: &str| vec![("code", k.to_string())];
        counter(
            &mut encoder,
            "kiss_of_death_sent",
            "Kiss-o'-death replies sent, by code",
            &[(code("RATE"), c.kissed_rate), (code("DENY"), c.kissed_deny)],
        )?;
        counter(&mut encoder, "send_errors", "Replies the kernel would not take", &[(vec![], c.send_errors)])?;

        let s = &report.system;
        let one = |v: f64| [(vec![], v)];
        gauge(
            &mut encoder,
            "clock_synchronized",
            "1 when the time served is synchronized",
            &one(flag(s.synchronized)),
        )?;
        gauge(&mut encoder, "clock_stratum", "Stratum advertised (0: unsynchronized)", &one(f64::from(s.stratum)))?;
        if let Some(offset) = s.offset {
            gauge(&mut encoder, "clock_offset_seconds", "Phase error at the last clock update", &one(offset))?;
        }
        gauge(&mut encoder, "clock_frequency_ppm", "Frequency correction in force, ppm", &one(s.frequency_ppm))?;
        gauge(&mut encoder, "clock_root_delay_seconds", "Root delay advertised", &one(s.root_delay))?;
        gauge(&mut encoder, "clock_root_dispersion_seconds", "Root dispersion advertised", &one(s.root_dispersion))?;
        if let Some(age) = s.since_update {
            gauge(&mut encoder, "clock_seconds_since_update", "Seconds since the last clock update", &one(age))?;
        }
        let leap = &s.leap_second;
        let pending = match leap.pending.as_deref() {
            Some("insert") => 1.0,
            Some("delete") => -1.0,
            _ => 0.0,
        };
        gauge(&mut encoder, "leap_pending", "Leap second pending: 1 insert, -1 delete, 0 none", &one(pending))?;
        gauge(
            &mut encoder,
            "leap_smearing",
            "1 while a leap smear is applied: served time is not UTC",
            &one(flag(leap.smearing)),
        )?;
        gauge(
            &mut encoder,
            "leap_smear_offset_seconds",
            "Served time minus UTC from a smear",
            &one(leap.smear_offset),
        )?;

        let per = |f: &dyn Fn(&status::UpstreamReport) -> Option<f64>| -> Vec<(Labels, f64)> {
            (report.upstreams.iter()).filter_map(|u| f(u).map(|v| (vec![("upstream", u.name.clone())], v))).collect()
        };
        gauge(&mut encoder, "upstream_offset_seconds", "Upstream minus our clock (clock filter)", &per(&|u| u.offset))?;
        gauge(&mut encoder, "upstream_delay_seconds", "Round-trip delay (clock filter)", &per(&|u| u.delay))?;
        gauge(&mut encoder, "upstream_jitter_seconds", "Jitter (clock filter)", &per(&|u| u.jitter))?;
        gauge(
            &mut encoder,
            "upstream_reachable",
            "1 if any of the last 8 polls was answered",
            &per(&|u| Some(flag(u.reach != 0))),
        )?;
        gauge(
            &mut encoder,
            "upstream_reach",
            "Reachability register (bit 0: latest poll)",
            &per(&|u| Some(f64::from(u.reach))),
        )?;
        gauge(
            &mut encoder,
            "upstream_stratum",
            "Stratum the upstream advertises",
            &per(&|u| u.stratum.map(f64::from)),
        )?;
        gauge(
            &mut encoder,
            "upstream_system_peer",
            "1 for the upstream our time comes from",
            &per(&|u| Some(flag(u.state == Selection::SystemPeer))),
        )?;
        gauge(
            &mut encoder,
            "upstream_falseticker",
            "1 for an upstream voted out as a falseticker",
            &per(&|u| Some(flag(u.state == Selection::Falseticker))),
        )?;
        let from_pool: Vec<(Labels, f64)> = (report.upstreams.iter())
            .filter_map(|u| u.pool.as_ref().map(|p| (vec![("upstream", u.name.clone()), ("pool", p.clone())], 1.0)))
            .collect();
        gauge(&mut encoder, "upstream_from_pool", "1 for an upstream a pool lent, labelled with the pool", &from_pool)?;
        let source = |s: &status::SourceReport| vec![("source", s.name.clone()), ("kind", s.kind.clone())];
        let addresses: Vec<(Labels, f64)> =
            report.sources.iter().map(|s| (source(s), s.addresses.len() as f64)).collect();
        gauge(&mut encoder, "source_addresses", "Addresses a source (server or pool) lends now", &addresses)?;
        let failures: Vec<(Labels, f64)> = report.sources.iter().map(|s| (source(s), f64::from(s.failures))).collect();
        gauge(&mut encoder, "source_resolution_failures", "Failed resolutions of its name in a row", &failures)?;
        let replaced: Vec<(Labels, u64)> = (self.0.status.borrow().replacement_counts.iter())
            .map(|(s, r, n)| (vec![("source", s.clone()), ("reason", r.clone())], *n))
            .collect();
        if !replaced.is_empty() {
            counter(&mut encoder, "source_replacements", "Addresses a source dropped, by reason", &replaced)?;
        }
        Ok(())
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, values, ConstCounter::new)
}

/// A gauge with no values (e.g. no upstream yet) is left out altogether.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    if values.is_empty() {
        return Ok(());
    }
    family(encoder, name, help, MetricType::Gauge, values, ConstGauge::new)
}

/// One metric: a single unlabelled value as a plain sample, otherwise one
/// sample per label set.
fn family<T: Copy, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(Labels, T)],
    metric: impl Fn(T) -> M,
) -> Result<(), std::fmt::Error> {
    let mut descriptor = encoder.encode_descriptor(name, help, None, kind)?;
    if let [(labels, value)] = values {
        if labels.is_empty() {
            return metric(*value).encode(descriptor);
        }
    }
    for (labels, value) in values {
        metric(*value).encode(descriptor.encode_family(labels)?)?;
    }
    Ok(())
}
