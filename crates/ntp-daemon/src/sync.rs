//! The daemon's upstream side: one task that drives the sans-IO
//! [`Synchronizer`] with real sockets and timers. It polls each upstream when
//! the synchronizer says so (each exchange in a task of its own, so a silent
//! server delays nobody), hands back what came of it, and publishes the
//! corrected clock and what to advertise into the [`SharedClock`] that the
//! serving threads read.
//!
//! Which upstreams there are is the [`SourceSet`]'s decision: this task
//! resolves the names it asks for (each in a task of its own, through the
//! system resolver), makes and drops associations as it says, and takes the
//! control socket's requests. Until a name resolves the daemon serves
//! unsynchronized, as before its first clock update.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ntp_client::target::{Family, Target, TargetError};
use ntp_client::{exchange, exchange_interleaved, ExchangeError, ExchangeOptions, InterleavedSession, Measurement};
use ntp_proto::association::PollConfig;
use ntp_proto::discipline::{Adjustment, DisciplineConfig};
use ntp_proto::exchange::log2_seconds;
use ntp_proto::interleave::ExchangeMode;
use ntp_proto::packet::{ReferenceId, Version};
use ntp_proto::responder::ServerState;
use ntp_proto::synchronizer::{ReplyOutcome, Synchronizer};
use ntp_proto::system::{own_reference_ids, Synchronization, SystemConfig};
use ntp_proto::{NtpDuration, NtpTimestamp};
use ntp_udp::TimestampedSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::clock::{MeasuringClock, SharedClock};
use crate::config::{check_name, SyncConfig, UpstreamKind};
use crate::control::{Call, Request, Response};
use crate::leap::LeapSource;
use crate::observe::statslog::{LoopRecord, PeerRecord, StatsLog};
use crate::observe::status::{ReplacementReport, SourceReport, SyncStatus, UpstreamStatus};
use crate::refclock::Refclocks;
use crate::sources::policy::Health;
use crate::sources::set::{Change, MemberId, ResolveLog, SourceId, SourceSet};
use crate::sources::{Kind, Origin, Spec};
use crate::system_clock::{kernel_leap, SystemClock};
use crate::upstream_nts::NtsUpstream;

/// How often the advertised state is refreshed between clock updates, so
/// the holdover is noticed without a reply to trigger it; sources are
/// judged as often.
const STATE_REFRESH: Duration = Duration::from_secs(1);
/// Replies this close to a leap's midnight are not used: the exchange may
/// straddle our step or the upstream's.
const NEAR_LEAP: NtpDuration = NtpDuration::ONE_SECOND;
/// Corrections larger than this are logged at info level.
const LARGE_CORRECTION: f64 = 1e-3;

/// One upstream address being polled: an association of the synchronizer.
#[derive(Debug)]
pub struct Upstream {
    /// The source set's name for it.
    id: MemberId,
    /// As configured (`host:port`), or the address for a pool member.
    pub name: String,
    /// The address polled.
    pub address: SocketAddr,
    /// The pool it came from.
    pool: Option<String>,
    origin: Origin,
    nts: Option<Arc<NtsUpstream>>,
    /// With `xleave`: what the interleaved exchanges with it share.
    interleaved: Option<Arc<InterleavedSession>>,
    /// The mode its last answer came in.
    last_mode: Option<ExchangeMode>,
    polls: u32,
    in_flight: bool,
}

/// What one resolution found: addresses, and for an NTS server the
/// key-exchange session that named its address.
type Resolution = Result<(Vec<SocketAddr>, Option<Arc<NtsUpstream>>), String>;

/// Resolves `HOST[:PORT]` (port 123 by default; `[v6]:port` for IPv6) to
/// every address, in the resolver's order.
pub async fn resolve(upstream: &str) -> Result<Vec<SocketAddr>, String> {
    let target: Target = upstream.parse().map_err(|e: TargetError| e.to_string())?;
    target.resolve(Family::Any).await.map_err(|e| e.to_string())
}

/// What `spec` resolves to now; for an `nts://` server, NTS-KE runs too.
async fn resolve_spec(spec: Spec, ca_file: Option<std::path::PathBuf>) -> Resolution {
    match UpstreamKind::of(&spec.name) {
        UpstreamKind::Nts(key_exchange) => {
            let (nts, address) = NtsUpstream::start(&spec.name, key_exchange, ca_file.as_deref()).await?;
            Ok((vec![address], Some(Arc::new(nts))))
        }
        UpstreamKind::Ntp(host) => Ok((resolve(host).await?, None)),
    }
}

/// The system process's settings from the daemon's.
#[must_use]
pub fn system_config(config: &SyncConfig, precision: i8) -> (SystemConfig, PollConfig) {
    let discipline = DisciplineConfig {
        step_threshold: NtpDuration::from_seconds_f64(config.step_threshold),
        min_poll: config.min_poll,
        max_poll: config.max_poll,
        frequency_known_ppm: config.frequency_known_ppm,
        ..DisciplineConfig::default()
    };
    let system = SystemConfig { discipline, holdover: NtpDuration::from_seconds_f64(config.holdover), precision };
    let poll = PollConfig { min_poll: config.min_poll, max_poll: config.max_poll, iburst: true };
    (system, poll)
}

/// Everything the upstream task owns.
struct Upstreams {
    clock: Arc<SharedClock>,
    sync: Synchronizer,
    upstreams: Vec<Upstream>,
    set: SourceSet,
    listening: Vec<SocketAddr>,
    started: Instant,
    nts_ca_file: Option<std::path::PathBuf>,
    /// NTS sessions from resolutions, until their address is polled.
    nts_found: Vec<(SourceId, Arc<NtsUpstream>)>,
    /// The reference clocks: the synchronizer's first associations, so
    /// upstream `i` is association `refclocks.len() + i`.
    refclocks: Refclocks,
    /// The kernel clock, with `--clock system`.
    kernel: Option<SystemClock>,
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

/// What the upstream task is handed besides its config: the refclocks'
/// devices, opened while the daemon had its privileges, and the control
/// socket's requests.
#[derive(Debug, Default)]
pub struct Handles {
    /// [`Refclocks::open`] of the config's refclocks (empty: opened by the task).
    pub refclocks: Vec<std::io::Result<crate::refclock::drivers::Device>>,
    /// The control socket's calls, if it has one.
    pub control: Option<mpsc::Receiver<Call>>,
    /// The kernel clock, with `--clock system`: it follows the discipline.
    pub kernel: Option<SystemClock>,
}

/// Polls the sources of `config` (and those added over the control
/// socket), reads its reference clocks, and
/// disciplines `clock` until `shutdown` completes. `listening` are the
/// addresses this server serves on, for loop detection; `leaps` says
/// whether a leap file decides leaps instead of the upstreams. With
/// `kernel` (`--clock system`) the system clock follows the discipline.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    clock: Arc<SharedClock>,
    config: SyncConfig,
    listening: Vec<SocketAddr>,
    mut leaps: LeapSource,
    reports: Reports,
    handles: Handles,
    shutdown: impl Future<Output = ()>,
) {
    let Reports { status, mut stats_log } = reports;
    let Handles { refclocks: devices, mut control, kernel } = handles;
    let precision = clock.snapshot().state.precision;
    let (system, poll) = system_config(&config, precision);
    let raw_now = clock.raw_now();
    let mut set = SourceSet::new(config.max_sources);
    let specs =
        (config.upstreams.iter().map(|n| (n, Kind::Server))).chain(config.pools.iter().map(|n| (n, Kind::Pool)));
    for (text, kind) in specs {
        // Checked when the config was read.
        let spec = match Spec::parse(text, kind) {
            Ok(spec) => spec,
            Err(error) => {
                warn!(%error, "source not used");
                continue;
            }
        };
        if let Err(error) = set.add(spec, Origin::Config, Duration::ZERO) {
            warn!(%error, "source given twice: once is enough");
        }
    }
    let (refclocks, mut readings) = Refclocks::start(&config.refclocks, devices);
    let mut up = Upstreams {
        clock: Arc::clone(&clock),
        sync: Synchronizer::new(system, poll, &[], raw_now),
        upstreams: Vec::new(),
        set,
        listening,
        started: Instant::now(),
        nts_ca_file: config.nts_ca_file.clone(),
        nts_found: Vec::new(),
        refclocks,
        kernel,
    };
    for refclock in &config.refclocks {
        let kind = Refclocks::kind(refclock);
        let index = up.sync.add_refclock(refclock.refid, refclock.poll, kind, raw_now);
        info!(refclock = %refclock.source, refid = %refclock.refid.display(ntp_proto::packet::Stratum(1)), association = index, "reading a reference clock");
    }
    up.sync.set_unassociated(up.set.unresolved());
    up.publish(&status);

    let options = ExchangeOptions { version: Version::V4, timeout: Duration::from_secs(2), local_precision: precision };
    let (results, mut replies) = mpsc::channel::<(MemberId, Result<Measurement, ExchangeError>)>(64);
    let (resolved_tx, mut resolved) = mpsc::channel::<(SourceId, Resolution)>(16);
    let mut refresh = tokio::time::interval(STATE_REFRESH);
    tokio::pin!(shutdown);

    loop {
        for (id, spec) in up.set.due(up.now()) {
            let (tx, ca_file) = (resolved_tx.clone(), up.nts_ca_file.clone());
            tokio::spawn(async move {
                let _ = tx.send((id, resolve_spec(spec, ca_file).await)).await;
            });
        }
        let raw_now = clock.raw_now();
        // The kernel's frequency follows the correction: a slew that ended
        // since the last turn of the loop is taken out here.
        let slew_wait = match up.kernel.as_mut() {
            Some(kernel) => follow_slew(kernel, &clock, raw_now),
            None => Duration::from_secs(3600),
        };
        let poll_wait = up.sync.next_poll().map_or(Duration::from_secs(3600), |(_, due)| until(due, raw_now));
        let resolve_wait = up.set.next_due().map_or(Duration::from_secs(3600), |at| at.saturating_sub(up.now()));
        let control_call = async {
            match control.as_mut() {
                Some(calls) => calls.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(slew_wait), if up.kernel.is_some() => {}
            () = tokio::time::sleep(poll_wait.min(resolve_wait)) => {
                up.poll_due(&options, &results, stats_log.as_mut());
            }
            Some((index, reading)) = readings.recv() => {
                up.refclocks.take(index, reading, &clock.snapshot(), SharedClock::system_now(), NEAR_LEAP);
            }
            Some((member, result)) = replies.recv() => {
                if let Some(index) = up.index_of(member) {
                    up.upstreams[index].in_flight = false;
                    if let Ok(measurement) = &result {
                        up.upstreams[index].last_mode = Some(measurement.mode);
                    }
                    let peers = Peers { upstreams: &up.upstreams, refclocks: &up.refclocks };
                    handle(&clock, &mut up.sync, peers, index, result, stats_log.as_mut(), up.kernel.as_mut());
                    leaps.refresh(&clock, Some(clock.snapshot().state.leap));
                    up.judge();
                    up.publish(&status);
                }
            }
            Some((source, result)) = resolved.recv() => {
                up.resolved(source, result);
                up.publish(&status);
            }
            call = control_call => match call {
                Some((request, answer)) => {
                    let response = up.control(request);
                    let _ = answer.send(response);
                    up.publish(&status);
                }
                None => control = None,
            },
            _ = refresh.tick() => {
                let raw_now = clock.raw_now();
                let state = up.sync.server_state(raw_now);
                let was = clock.snapshot().state;
                clock.update(|s| s.state = state);
                leaps.refresh(&clock, Some(state.leap));
                if let Some(kernel) = &up.kernel {
                    let jitter = up.sync.system().synchronization().map_or(NtpDuration::ZERO, |s| s.update.jitter);
                    let leap = kernel_leap(&clock.snapshot().leap, SharedClock::system_now());
                    if let Err(error) = kernel.report(&state, jitter, leap) {
                        error!(%error, "cannot tell the kernel the clock's status");
                    }
                }
                log_if_unsynchronized(&was, &state);
                up.judge();
                up.publish(&status);
            }
        }
    }
    if let Some(kernel) = up.kernel.as_mut() {
        kernel.finish(&clock.snapshot().clock.correction);
    }
}

/// Makes the kernel clock follow a clock update (`update`, if the
/// discipline made one): the step it took, the frequency and slew of
/// `correction`; and keeps the drift file.
fn follow_update(
    kernel: &mut SystemClock,
    correction: &ntp_proto::clock::VirtualClock,
    raw_now: NtpTimestamp,
    update: Option<&Synchronization>,
) {
    let step = update.and_then(|u| match u.update.adjustment {
        Adjustment::Stepped(by) => Some(by),
        _ => None,
    });
    if let Err(error) = kernel.follow(correction, raw_now, step) {
        error!(%error, "cannot adjust the system clock");
    }
    kernel.save_drift(correction, false);
}

/// Sets the kernel's frequency to the correction's rate now (a no-op
/// unless a slew began or ended); how long until the slew in progress ends.
fn follow_slew(kernel: &mut SystemClock, clock: &SharedClock, raw_now: NtpTimestamp) -> Duration {
    let correction = clock.snapshot().clock.correction;
    if let Err(error) = kernel.follow(&correction, raw_now, None) {
        error!(%error, "cannot set the kernel's frequency");
    }
    SystemClock::next_change(&correction)
        .filter(|end| *end - raw_now > NtpDuration::ZERO)
        .map_or(Duration::from_secs(3600), |end| until(end, raw_now))
}

impl Upstreams {
    /// Monotonic time since the task started, as the source set counts it.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn index_of(&self, member: MemberId) -> Option<usize> {
        self.upstreams.iter().position(|u| u.id == member)
    }

    /// Sends the polls that are due, each exchange in a task of its own.
    fn poll_due(
        &mut self,
        options: &ExchangeOptions,
        results: &mpsc::Sender<(MemberId, Result<Measurement, ExchangeError>)>,
        mut stats_log: Option<&mut StatsLog>,
    ) {
        let raw_now = self.clock.raw_now();
        while let Some((index, due)) = self.sync.next_poll() {
            if until(due, raw_now) > Duration::ZERO {
                break;
            }
            self.sync.poll_sent(index, raw_now);
            let Some(upstream_index) = index.checked_sub(self.refclocks.len()) else {
                self.poll_refclock(index, raw_now, stats_log.as_deref_mut());
                continue;
            };
            let poll = self.sync.associations().nth(index).map_or(0, |a| a.poll());
            let upstream = &mut self.upstreams[upstream_index];
            upstream.polls = upstream.polls.saturating_add(1);
            if upstream.in_flight {
                continue;
            }
            upstream.in_flight = true;
            let (address, clock, results) = (upstream.address, Arc::clone(&self.clock), results.clone());
            let (nts, interleaved, member) = (upstream.nts.clone(), upstream.interleaved.clone(), upstream.id);
            let options = ExchangeOptions { timeout: options.timeout.min(poll_interval(poll)), ..*options };
            tokio::spawn(async move {
                // A socket of its own for each exchange, as chronyd's client
                // has: a new source port every poll (a forged reply must
                // guess it), and a request sent before the socket joins the
                // reactor, so no waiter is woken between T1 and the
                // server's T2 (see TimestampedSocket).
                let socket = match TimestampedSocket::bind_for(address).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        // Not an answer gone missing: say so where it is seen.
                        warn!(%address, %error, "cannot open a socket to poll it");
                        let _ = results.send((member, Err(ExchangeError::Io(error)))).await;
                        return;
                    }
                };
                let clock = MeasuringClock(&clock);
                let result = match (nts, interleaved) {
                    (Some(nts), _) => nts.exchange(&socket, address, &clock, &options).await,
                    (None, Some(session)) => exchange_interleaved(&socket, address, &clock, &options, &session).await,
                    (None, None) => exchange(&socket, address, &clock, &options).await,
                };
                let _ = results.send((member, result)).await;
            });
        }
    }

    /// Hands refclock `index` the readings since its last poll, as a
    /// sample through the synchronizer; logs it as a peer sample.
    fn poll_refclock(&mut self, index: usize, raw_now: NtpTimestamp, stats_log: Option<&mut StatsLog>) {
        let Some((sample, leap, precision)) = self.refclocks.sample(index) else { return };
        let snapshot = **self.clock.snapshot();
        let mut disciplined = snapshot.clock;
        let correction_before = disciplined.correction_at(sample.time);
        let was_synchronized = self.sync.system().synchronization().is_some();
        let leap = ntp_proto::packet::LeapIndicator::from_bits(leap);
        let update = self.sync.on_refclock(index, &mut disciplined, raw_now, sample, leap, precision);
        let state = self.sync.server_state(raw_now);
        let was = self.clock.snapshot().state;
        if let Some(kernel) = self.kernel.as_mut() {
            follow_update(kernel, &disciplined.correction, raw_now, update.as_ref());
        }
        self.clock.update(|s| {
            s.clock.correction = disciplined.correction;
            s.state = state;
        });
        log_if_unsynchronized(&was, &state);
        if let (Some(log), Some(refclock)) = (stats_log, self.refclocks.refclocks.get(index)) {
            let unix = SharedClock::system_now().to_unix_f64();
            let source = refclock.config.source.to_string();
            let row = peer_status(&self.sync, index, source.clone(), source.clone(), None, "config");
            log.peer_sample(&PeerRecord::new(unix, &row, sample.offset - correction_before, sample.delay));
            if let Some(update) = &update {
                log.clock_update(&LoopRecord::new(unix, update, &source));
            }
        }
        if let Some(update) = update {
            log_update(&update, was_synchronized, index);
        }
    }

    /// Takes what DNS said of source `id`.
    fn resolved(&mut self, id: SourceId, result: Resolution) {
        let name = self.set.sources().iter().find(|s| s.id == id).map(|s| s.spec.name.clone()).unwrap_or_default();
        let result = result.map(|(addresses, nts)| {
            if let Some(nts) = nts {
                self.nts_found.retain(|(source, _)| *source != id);
                self.nts_found.push((id, nts));
            }
            addresses
        });
        let listening = self.listening.clone();
        let is_own = move |address: &SocketAddr| is_own(&listening, address);
        let (changes, log) = self.set.resolved(id, self.now(), result, &is_own);
        match log {
            Some(ResolveLog::FirstFailure { error, retry_in }) => warn!(
                source = %name, %error, retry_in_s = retry_in.as_secs(),
                "name does not resolve (yet): retrying with back-off, quietly"
            ),
            Some(ResolveLog::Again { error, failures, retry_in }) => {
                debug!(source = %name, %error, failures, retry_in_s = retry_in.as_secs(), "name still does not resolve");
            }
            Some(ResolveLog::Resolved { addresses, failures }) if failures > 0 => {
                info!(source = %name, addresses, failures, "name resolves now");
            }
            Some(ResolveLog::Resolved { addresses, .. }) => debug!(source = %name, addresses, "name resolved"),
            None => {}
        }
        self.apply(changes);
    }

    /// Judges every association by the source policy; carries out what it says.
    fn judge(&mut self) {
        let health = |member: MemberId| {
            let index = self.upstreams.iter().position(|u| u.id == member)?;
            let association = self.sync.associations().nth(index + self.refclocks.len())?;
            Some(Health {
                reach: association.reach(),
                polls: self.upstreams[index].polls,
                poll: association.poll(),
                selection: self.sync.selection(index + self.refclocks.len()),
                stopped: association.stopped(),
            })
        };
        let changes = self.set.judge(self.now(), &health);
        self.apply(changes);
    }

    /// Makes and drops associations.
    fn apply(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match change {
                Change::Remove { member, reason } => {
                    if let Some(index) = self.index_of(member) {
                        let upstream = self.upstreams.remove(index);
                        let _ = self.sync.remove(index + self.refclocks.len());
                        let (name, address) = (&upstream.name, upstream.address);
                        match (&upstream.pool, reason) {
                            (Some(pool), Some(reason)) => {
                                let reason = reason.as_str();
                                info!(%pool, %address, reason, "pool member dropped: asking DNS for another");
                            }
                            (None, Some(reason)) => {
                                info!(upstream = %name, %address, reason = reason.as_str(), "address no longer polled")
                            }
                            (_, None) => info!(upstream = %name, %address, "address no longer polled: source removed"),
                        }
                    }
                }
                Change::Add { source, member, address } => self.add(source, member, address),
            }
        }
        let polling_from: Vec<IpAddr> = self.upstreams.iter().filter_map(|u| source_address(u.address)).collect();
        self.sync.set_own_reference_ids(own_reference_ids(&self.listening, &polling_from));
        self.sync.set_unassociated(self.set.unresolved());
    }

    fn add(&mut self, source: SourceId, member: MemberId, address: SocketAddr) {
        let Some(spec) = self.set.sources().iter().find(|s| s.id == source) else { return };
        let (spec, origin) = (spec.spec.clone(), spec.origin);
        let nts = self.nts_found.iter().find(|(id, _)| *id == source).map(|(_, nts)| Arc::clone(nts));
        let id = ReferenceId::of_upstream_from(address, source_address(address));
        let index = self.sync.add(id, self.clock.raw_now());
        let (name, pool) = match spec.kind {
            Kind::Server => (spec.name.clone(), None),
            Kind::Pool => (address.to_string(), Some(spec.name.clone())),
        };
        info!(source = %spec.name, %address, association = index, "polling");
        self.upstreams.push(Upstream {
            id: member,
            name,
            address,
            pool,
            origin,
            nts,
            interleaved: spec.xleave.then(|| Arc::new(InterleavedSession::new())),
            last_mode: None,
            polls: 0,
            in_flight: false,
        });
    }

    /// Carries out one control-socket request.
    fn control(&mut self, request: Request) -> Response {
        let done = match request {
            Request::List => Ok("sources".to_string()),
            Request::Add { name, pool } => {
                let kind = if pool { Kind::Pool } else { Kind::Server };
                check_name(&name, kind).and_then(|()| Spec::parse(&name, kind)).and_then(|spec| {
                    self.set.add(spec, Origin::Runtime, self.now()).map_err(|e| e.to_string())?;
                    self.sync.set_unassociated(self.set.unresolved());
                    info!(source = %name, kind = kind.as_str(), "source added over the control socket");
                    Ok(format!("added {} {name}", kind.as_str()))
                })
            }
            Request::Remove { name } => match self.set.remove(&name) {
                Ok(changes) => {
                    let known: Vec<SourceId> = self.set.sources().iter().map(|s| s.id).collect();
                    self.nts_found.retain(|(id, _)| known.contains(id));
                    info!(source = %name, "source removed over the control socket");
                    self.apply(changes);
                    self.sync.set_unassociated(self.set.unresolved());
                    Ok(format!("removed {name}"))
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match done {
            Ok(message) => Response { ok: true, message, sources: self.source_reports() },
            Err(message) => Response::error(message),
        }
    }

    fn source_reports(&self) -> Vec<SourceReport> {
        let now = self.now();
        (self.set.sources().iter())
            .map(|s| SourceReport {
                name: s.spec.name.clone(),
                kind: s.spec.kind.as_str().into(),
                origin: s.origin.as_str().into(),
                addresses: s.members.iter().map(|m| m.address.to_string()).collect(),
                max_sources: s.max,
                failures: s.failures,
                error: s.error.clone(),
                next_resolution: s.next_resolution.map(|at| at.saturating_sub(now).as_secs_f64()),
            })
            .collect()
    }

    fn publish(&self, status: &watch::Sender<SyncStatus>) {
        let refclocks = self.refclocks.refclocks.iter().enumerate().map(|(i, r)| {
            let source = r.config.source.to_string();
            peer_status(&self.sync, i, source.clone(), source, None, "config")
        });
        let offset = self.refclocks.len();
        let upstreams = self.upstreams.iter().enumerate().map(|(i, u)| upstream_status(&self.sync, u, i + offset));
        let rows = refclocks.chain(upstreams).collect();
        let (now, unix_now) = (self.now(), SharedClock::system_now().to_unix_f64());
        let replacements = (self.set.replacements())
            .map(|r| ReplacementReport {
                source: r.source.clone(),
                address: r.address.to_string(),
                reason: r.reason.as_str().into(),
                unix_time: unix_now - now.saturating_sub(r.at).as_secs_f64(),
            })
            .collect();
        let counts =
            self.set.replacement_counts().iter().map(|(s, r, n)| (s.clone(), r.as_str().to_string(), *n)).collect();
        status.send_replace(SyncStatus {
            last: self.sync.system().synchronization().copied(),
            upstreams: rows,
            sources: self.source_reports(),
            replacements,
            replacement_counts: counts,
        });
    }
}

/// Is `address` this daemon itself: one of its listening addresses, or a
/// local address on the port of a wildcard listener?
fn is_own(listening: &[SocketAddr], address: &SocketAddr) -> bool {
    listening.iter().any(|l| {
        l.port() == address.port()
            && (l.ip() == address.ip()
                || (l.ip().is_unspecified()
                    && (l.is_ipv6() || address.is_ipv4())
                    && std::net::UdpSocket::bind((address.ip(), 0)).is_ok()))
    })
}

/// The associations: the refclocks, then the upstreams.
#[derive(Clone, Copy)]
struct Peers<'a> {
    upstreams: &'a [Upstream],
    refclocks: &'a Refclocks,
}

impl Peers<'_> {
    /// The name of association `index`, for the logs.
    fn name(&self, index: usize) -> String {
        match index.checked_sub(self.refclocks.len()) {
            Some(i) => self.upstreams.get(i).map_or_else(|| "-".to_string(), |u| u.name.clone()),
            None => {
                self.refclocks.refclocks.get(index).map_or_else(|| "-".to_string(), |r| r.config.source.to_string())
            }
        }
    }
}

/// Takes what came of one exchange with upstream `upstream_index`.
fn handle(
    clock: &SharedClock,
    sync: &mut Synchronizer,
    peers: Peers<'_>,
    upstream_index: usize,
    result: Result<Measurement, ExchangeError>,
    stats_log: Option<&mut StatsLog>,
    kernel: Option<&mut SystemClock>,
) {
    let upstream = &peers.upstreams[upstream_index];
    let index = upstream_index + peers.refclocks.len();
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
    let raw_now = snapshot.raw_at(system_now);
    let was_synchronized = sync.system().synchronization().is_some();
    let reply = measurement.reply;
    // An interleaved answer completes the previous exchange: its sample
    // is as old as that exchange, and so is the correction it is read by.
    let measured_at = raw_now - measurement.age;
    let correction_before = disciplined.correction_at(measured_at);
    let sent = measurement.request_transmit;
    let timestamps = &measurement.timestamps;
    let outcome = sync.on_reply_measured_at(index, &mut disciplined, raw_now, measured_at, &reply, sent, timestamps);
    let state = sync.server_state(raw_now);
    let was = clock.snapshot().state;
    if let Some(kernel) = kernel {
        let update = match &outcome {
            ReplyOutcome::Accepted(update) => update.as_ref(),
            ReplyOutcome::Rejected(_) => None,
        };
        follow_update(kernel, &disciplined.correction, raw_now, update);
    }
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
            log.clock_update(&LoopRecord::new(unix, &update, &peers.name(update.peer)));
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

/// How upstream `upstream`, association `index`, stands in `sync`.
fn upstream_status(sync: &Synchronizer, upstream: &Upstream, index: usize) -> UpstreamStatus {
    let (name, address, pool) = (upstream.name.clone(), upstream.address.to_string(), upstream.pool.clone());
    let mode = upstream.interleaved.as_ref().map(|_| upstream.last_mode.map_or("asking", ExchangeMode::as_str));
    UpstreamStatus { mode, ..peer_status(sync, index, name, address, pool, upstream.origin.as_str()) }
}

/// How association `index` (an upstream or a refclock) stands in `sync`.
fn peer_status(
    sync: &Synchronizer,
    index: usize,
    name: String,
    address: String,
    pool: Option<String>,
    origin: &'static str,
) -> UpstreamStatus {
    let association = sync.associations().nth(index);
    UpstreamStatus {
        name,
        address,
        pool,
        origin,
        reach: association.map_or(0, |a| a.reach()),
        poll: association.map_or(0, |a| a.poll()),
        info: association.and_then(|a| a.info()),
        output: association.and_then(|a| a.output()),
        selection: sync.selection(index),
        stopped: association.and_then(|a| a.stopped()),
        mode: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_addresses_are_those_we_listen_on_and_local_ones_behind_a_wildcard() {
        let listening: Vec<SocketAddr> = vec!["127.0.0.2:12300".parse().unwrap(), "0.0.0.0:4123".parse().unwrap()];
        let own = |text: &str| is_own(&listening, &text.parse().unwrap());
        assert!(own("127.0.0.2:12300"));
        assert!(!own("127.0.0.3:12300"), "another address on the same port is another server");
        assert!(!own("127.0.0.2:123"), "another port is another server");
        assert!(own("127.0.0.9:4123"), "loopback is ours behind the wildcard");
        assert!(!own("192.0.2.1:4123"), "TEST-NET-1 is nobody's address here");
    }
}
