//! The daemon's upstream side: one task that drives the sans-IO
//! [`Synchronizer`] with real sockets and timers. It polls each upstream when
//! the synchronizer says so (each exchange in a task of its own, so a silent
//! server delays nobody), hands back what came of it, and publishes the
//! corrected clock and what to advertise into the [`SharedClock`] that the
//! serving threads read.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ntp_client::target::{Family, Target, TargetError};
use ntp_client::{exchange, ExchangeError, ExchangeOptions, Measurement};
use ntp_proto::association::PollConfig;
use ntp_proto::discipline::{Adjustment, DisciplineConfig};
use ntp_proto::exchange::log2_seconds;
use ntp_proto::packet::{ReferenceId, Version};
use ntp_proto::responder::ServerState;
use ntp_proto::synchronizer::{ReplyOutcome, Synchronizer};
use ntp_proto::system::{own_reference_ids, Synchronization, SystemConfig};
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::TimestampedSocket;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::{MeasuringClock, SharedClock};
use crate::config::{SyncConfig, UpstreamKind};
use crate::leap::LeapSource;
use crate::observe::statslog::{LoopRecord, PeerRecord, StatsLog};
use crate::observe::status::{SyncStatus, UpstreamStatus};
use crate::upstream_nts::NtsUpstream;

/// How often the advertised state is refreshed between clock updates, so
/// the holdover is noticed without a reply to trigger it.
const STATE_REFRESH: Duration = Duration::from_secs(1);
/// Replies this close to a leap's midnight are not used: the exchange may
/// straddle our step or the upstream's.
const NEAR_LEAP: NtpDuration = NtpDuration::ONE_SECOND;
/// Corrections larger than this are logged at info level.
const LARGE_CORRECTION: f64 = 1e-3;

/// Why the upstream side could not start.
#[derive(Debug, Error)]
pub enum SyncError {
    /// An upstream name did not resolve.
    #[error("upstream {upstream}: {reason}")]
    Resolve {
        /// As configured.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// A client socket could not be opened.
    #[error("socket for upstream {0}: {1}")]
    Socket(SocketAddr, std::io::Error),
}

/// One resolved upstream.
#[derive(Debug)]
pub struct Upstream {
    /// As configured (`host:port`).
    pub name: String,
    /// The address polled.
    pub address: SocketAddr,
    socket: Arc<TimestampedSocket>,
    nts: Option<Arc<NtsUpstream>>,
}

/// Resolves `HOST[:PORT]` (port 123 by default; `[v6]:port` for IPv6) to
/// its first address.
pub async fn resolve(upstream: &str) -> Result<SocketAddr, SyncError> {
    let fail = |reason: String| SyncError::Resolve { upstream: upstream.to_string(), reason };
    let target: Target = upstream.parse().map_err(|e: TargetError| fail(e.to_string()))?;
    let addresses = target.resolve(Family::Any).await.map_err(|e| fail(e.to_string()))?;
    addresses.into_iter().next().ok_or_else(|| fail("no address".into()))
}

/// Resolves every upstream and opens its client socket.
pub async fn connect(config: &SyncConfig) -> Result<Vec<Upstream>, SyncError> {
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for name in &config.upstreams {
        let (address, nts) = match UpstreamKind::of(name) {
            UpstreamKind::Nts(key_exchange) => {
                let (nts, address) = NtsUpstream::start(name, key_exchange, config.nts_ca_file.as_deref())
                    .await
                    .map_err(|reason| SyncError::Resolve { upstream: name.clone(), reason })?;
                (address, Some(Arc::new(nts)))
            }
            UpstreamKind::Ntp(host) => (resolve(host).await?, None),
        };
        let socket = TimestampedSocket::bind_for(address).await.map_err(|e| SyncError::Socket(address, e))?;
        upstreams.push(Upstream { name: name.clone(), address, socket: Arc::new(socket), nts });
    }
    Ok(upstreams)
}

/// The system process's settings from the daemon's.
#[must_use]
pub fn system_config(config: &SyncConfig, precision: i8) -> (SystemConfig, PollConfig) {
    let discipline = DisciplineConfig {
        step_threshold: NtpDuration::from_seconds_f64(config.step_threshold),
        min_poll: config.min_poll,
        max_poll: config.max_poll,
        ..DisciplineConfig::default()
    };
    let system = SystemConfig { discipline, holdover: NtpDuration::from_seconds_f64(config.holdover), precision };
    let poll = PollConfig { min_poll: config.min_poll, max_poll: config.max_poll, iburst: true };
    (system, poll)
}

/// Where the upstream side reports what it does: the status its observers
/// read, and the statistics log, if any.
#[derive(Debug)]
pub struct Reports {
    /// What `/status`, `/metrics` and the demo read.
    pub status: watch::Sender<SyncStatus>,
    /// `peerstats` and `loopstats`, when asked for.
    pub stats_log: Option<StatsLog>,
}

/// Polls `upstreams` and disciplines `clock` until `shutdown` completes.
/// `listening` are the addresses this server serves on, for loop detection;
/// `leaps` says whether a leap file decides leaps instead of the upstreams.
pub async fn run(
    clock: Arc<SharedClock>,
    upstreams: Vec<Upstream>,
    config: SyncConfig,
    listening: Vec<SocketAddr>,
    mut leaps: LeapSource,
    reports: Reports,
    shutdown: impl Future<Output = ()>,
) {
    let Reports { status, mut stats_log } = reports;
    let precision = clock.snapshot().state.precision;
    let (system, poll) = system_config(&config, precision);
    let sources: Vec<Option<IpAddr>> = upstreams.iter().map(|u| source_address(u.address)).collect();
    let ids: Vec<ReferenceId> =
        upstreams.iter().zip(&sources).map(|(u, &source)| ReferenceId::of_upstream_from(u.address, source)).collect();
    let raw_now = clock.raw_now();
    let mut sync = Synchronizer::new(system, poll, &ids, raw_now);
    let polling_from: Vec<IpAddr> = sources.into_iter().flatten().collect();
    sync.set_own_reference_ids(own_reference_ids(&listening, &polling_from));
    publish_status(&status, &sync, &upstreams);

    let options = ExchangeOptions { version: Version::V4, timeout: Duration::from_secs(2), local_precision: precision };
    let (results, mut replies) =
        mpsc::channel::<(usize, Result<Measurement, ExchangeError>)>(upstreams.len().max(1) * 2);
    let mut in_flight = vec![false; upstreams.len()];
    let mut refresh = tokio::time::interval(STATE_REFRESH);
    tokio::pin!(shutdown);

    loop {
        let raw_now = clock.raw_now();
        let wait = sync.next_poll().map_or(Duration::from_secs(3600), |(_, due)| until(due, raw_now));
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {
                let raw_now = clock.raw_now();
                while let Some((index, due)) = sync.next_poll() {
                    if until(due, raw_now) > Duration::ZERO {
                        break;
                    }
                    sync.poll_sent(index, raw_now);
                    if in_flight[index] {
                        continue;
                    }
                    in_flight[index] = true;
                    let (socket, address, clock, results) =
                        (Arc::clone(&upstreams[index].socket), upstreams[index].address, Arc::clone(&clock), results.clone());
                    let nts = upstreams[index].nts.clone();
                    let timeout = options.timeout.min(poll_interval(sync.associations().nth(index).map_or(0, |a| a.poll())));
                    let options = ExchangeOptions { timeout, ..options };
                    tokio::spawn(async move {
                        let result = match nts {
                            None => exchange(&socket, address, &MeasuringClock(&clock), &options).await,
                            Some(nts) => nts.exchange(&socket, address, &MeasuringClock(&clock), &options).await,
                        };
                        let _ = results.send((index, result)).await;
                    });
                }
            }
            Some((index, result)) = replies.recv() => {
                in_flight[index] = false;
                handle(&clock, &mut sync, &upstreams, index, result, stats_log.as_mut());
                leaps.refresh(&clock, Some(clock.snapshot().state.leap));
                publish_status(&status, &sync, &upstreams);
            }
            _ = refresh.tick() => {
                let raw_now = clock.raw_now();
                let state = sync.server_state(raw_now);
                let was = clock.snapshot().state;
                clock.update(|s| s.state = state);
                leaps.refresh(&clock, Some(state.leap));
                log_if_unsynchronized(&was, &state);
                publish_status(&status, &sync, &upstreams);
            }
        }
    }
}

/// Takes what came of one exchange.
fn handle(
    clock: &SharedClock,
    sync: &mut Synchronizer,
    upstreams: &[Upstream],
    index: usize,
    result: Result<Measurement, ExchangeError>,
    stats_log: Option<&mut StatsLog>,
) {
    let upstream = &upstreams[index];
    let measurement = match result {
        Ok(measurement) => measurement,
        Err(ExchangeError::Rejected { reply, error }) => {
            if let Some(advice) = error.kiss_advice() {
                warn!(upstream = %upstream.name, %error, advice, "upstream refused");
            } else {
                info!(upstream = %upstream.name, %error, "upstream answered without usable time");
            }
            sync.on_reply_error(index, &reply, error);
            return;
        }
        Err(error) => {
            debug!(upstream = %upstream.name, %error, "no usable reply");
            return;
        }
    };
    let snapshot = **clock.snapshot();
    let system_now = SharedClock::system_now();
    if snapshot.leap.near_leap(snapshot.continuous_at(system_now), NEAR_LEAP) {
        // Our step or the upstream's may fall inside the exchange.
        debug!(upstream = %upstream.name, "reply within a second of a leap not used");
        return;
    }
    let mut disciplined = snapshot.clock;
    let raw_now = disciplined.raw_at(system_now);
    let was_synchronized = sync.system().synchronization().is_some();
    let reply = measurement.reply;
    let correction_before = disciplined.correction_at(raw_now);
    let sent = measurement.request_transmit;
    let outcome = sync.on_reply(index, &mut disciplined, raw_now, &reply, sent, &measurement.timestamps);
    let state = sync.server_state(raw_now);
    let was = clock.snapshot().state;
    clock.update(|s| {
        s.clock.correction = disciplined.correction;
        s.state = state;
    });
    log_if_unsynchronized(&was, &state);
    if let (Some(log), ReplyOutcome::Accepted(update)) = (stats_log, outcome) {
        let unix = SharedClock::system_now().to_unix_f64();
        let offset = measurement.timestamps.offset() - correction_before;
        let row = upstream_status(sync, upstream, index);
        log.peer_sample(&PeerRecord::new(unix, &row, offset, measurement.timestamps.delay()));
        if let Some(update) = update {
            let peer = upstreams.get(update.peer).map_or("-", |u| u.name.as_str());
            log.clock_update(&LoopRecord::new(unix, &update, peer));
        }
    }
    match outcome {
        ReplyOutcome::Accepted(Some(update)) => log_update(&update, was_synchronized, index),
        ReplyOutcome::Accepted(None) => {}
        ReplyOutcome::Rejected(error) => debug!(upstream = %upstream.name, %error, "reply rejected"),
    }
}

/// The local address the kernel picks to reach `upstream`: where our polls
/// leave from, and so an address a server polling us may know us by. The
/// polling sockets are bound to the wildcard address and never connected,
/// so their own `local_addr` says nothing; a throwaway socket connected to
/// the upstream (no datagram is sent) asks the routing table instead.
fn source_address(upstream: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(upstream).ok()?;
    probe.local_addr().ok().map(|local| local.ip()).filter(|ip| !ip.is_unspecified())
}

/// Says so when what we advertise turns unsynchronized, whichever event
/// (a reply or the periodic refresh) noticed the holdover had run out.
fn log_if_unsynchronized(was: &ServerState, now: &ServerState) {
    if was.stratum.0 != 0 && now.stratum.0 == 0 {
        warn!("no usable upstream for longer than the holdover: now unsynchronized");
    }
}

fn log_update(update: &Synchronization, was_synchronized: bool, index: usize) {
    let u = update.update;
    let offset = u.offset.to_seconds_f64();
    let peer = update.peer;
    match u.adjustment {
        Adjustment::Stepped(by) => {
            warn!(step = %by, stratum = update.stratum.0, system_peer = peer, "clock stepped");
        }
        Adjustment::Held(by) => warn!(offset = %by, "offset beyond the step threshold held as a spike"),
        Adjustment::Slewing(_) if offset.abs() > LARGE_CORRECTION => {
            info!(offset = %u.offset, frequency_ppm = u.frequency_ppm, "slewing a large correction");
        }
        Adjustment::Slewing(_) => {
            debug!(offset = %u.offset, frequency_ppm = u.frequency_ppm, jitter = %u.jitter, poll = u.poll, "clock updated");
        }
    }
    if !was_synchronized {
        info!(stratum = update.stratum.0, system_peer = peer, upstream = index, "synchronized");
    }
}

fn publish_status(status: &watch::Sender<SyncStatus>, sync: &Synchronizer, upstreams: &[Upstream]) {
    let rows = upstreams.iter().enumerate().map(|(i, u)| upstream_status(sync, u, i)).collect();
    status.send_replace(SyncStatus { last: sync.system().synchronization().copied(), upstreams: rows });
}

/// How upstream `index` (`upstream`) stands in `sync`.
fn upstream_status(sync: &Synchronizer, upstream: &Upstream, index: usize) -> UpstreamStatus {
    let association = sync.associations().nth(index);
    UpstreamStatus {
        name: upstream.name.clone(),
        address: upstream.address,
        reach: association.map_or(0, |a| a.reach()),
        poll: association.map_or(0, |a| a.poll()),
        info: association.and_then(|a| a.info()),
        output: association.and_then(|a| a.output()),
        selection: sync.selection(index),
        stopped: association.and_then(|a| a.stopped()),
    }
}

/// How long until raw time `due` (raw time runs within parts per million
/// of system time, so the difference is a duration on either).
fn until(due: NtpTimestamp, raw_now: NtpTimestamp) -> Duration {
    Duration::from_secs_f64((due - raw_now).to_seconds_f64().max(0.0))
}

fn poll_interval(poll: i8) -> Duration {
    Duration::from_secs_f64(log2_seconds(poll).max(0.5))
}
