//! `ntpd-sim serve` as a whole: bind the configured addresses, set up the
//! virtual clock (a primary server's, or one disciplined from upstreams),
//! log one start-up line, serve until SIGINT or SIGTERM; with `--http`, also
//! `/status` and `/metrics`, with `--stats-dir`, statistics logs.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ntp_proto::clock::DisciplinedClock;
use ntp_proto::leap::{LeapMode, LeapSchedule};
use ntp_proto::responder::ServerState;
use ntp_proto::system::unsynchronized;
use ntp_proto::{NtpDuration, NtpTimestamp};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use ntp_udp::measure_precision;
use ntp_udp::privileges::{self, PrivilegeError};

use crate::clock::{ClockKind, ClockSnapshot, SharedClock};
use crate::config::{Listen, ServeConfig};
use crate::control;
use crate::leap::LeapSource;
use crate::nts::{self, NtsConfig, NtsKeys};
use crate::observe::http;
use crate::observe::metrics::Observed;
use crate::observe::statslog::{StatsLog, DEFAULT_MAX_BYTES};
use crate::observe::status::SyncStatus;
use crate::serve::{ServeError, Server};
use crate::stats::Counts;
use crate::sync;
use crate::system_clock::{SystemClock, SystemClockError};

/// How often a primary server's reference time is brought up to date, so
/// the root dispersion it advertises stays that of a fresh reference.
pub const REFERENCE_REFRESH: Duration = Duration::from_secs(8);

/// Why the daemon could not run.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Binding the listening addresses failed.
    #[error("{0}")]
    Bind(std::io::Error),
    /// Serving failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The control socket could not be made.
    #[error("control socket {path}: {error}")]
    Control {
        /// Its path.
        path: std::path::PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// `--user` was given and could not be become.
    #[error("cannot drop privileges: {0}")]
    Privileges(#[from] PrivilegeError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The HTTP address could not be bound.
    #[error("cannot listen for HTTP on {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    /// NTS could not be set up (certificate, key, NTS-KE address).
    #[error("NTS: {0}")]
    Nts(#[from] nts::NtsSetupError),
    /// The statistics directory could not be opened.
    #[error("statistics directory {0}: {1}")]
    StatsDir(std::path::PathBuf, std::io::Error),
    /// `--clock system` cannot be had (not in the test VM, another daemon,
    /// no CAP_SYS_TIME, a bad drift file).
    #[error("system clock: {0}")]
    SystemClock(#[from] SystemClockError),
    /// The leap-seconds file could not be read at all.
    #[error("leap file {0}: {1}")]
    LeapFile(std::path::PathBuf, std::io::Error),
    /// A SOCK reference clock's socket could not be bound (an SHM segment
    /// that cannot be attached yet is retried instead: gpsd may make it).
    #[error("refclock {0}: {1}")]
    Refclock(String, std::io::Error),
}

/// The clock and state of a primary server: a raw clock of the system clock
/// plus the configured offset and drift, no correction yet, advertising the configured stratum and
/// reference ID, synchronised now.
#[must_use]
pub fn primary_snapshot(config: &ServeConfig, precision: i8) -> ClockSnapshot {
    let system_now = SharedClock::system_now();
    let clock =
        DisciplinedClock::new(system_now, NtpDuration::from_seconds_f64(config.clock_offset), config.clock_drift_ppm);
    let state = ServerState::primary(config.stratum, precision, config.reference_id, clock.time_at(system_now));
    ClockSnapshot { kind: ClockKind::Virtual, clock, state, leap: LeapSchedule::new(config.leap_mode) }
}

/// Binds what `listen` names.
pub fn bind(listen: &Listen) -> Result<Vec<UdpSocket>, DaemonError> {
    match listen {
        Listen::Addresses(addresses) => ntp_udp::bind_all(addresses),
        Listen::EveryAddress(port) => ntp_udp::bind_every_address(*port),
    }
    .map_err(DaemonError::Bind)
}

/// Asks for a receive buffer of `bytes` on each socket, and says what was
/// granted: at debug level if all of it, at info level, with the remedy, if
/// less. Call it while the process may still force the size past
/// `rmem_max` (before dropping root): [`run`] does, and so must callers of
/// [`run_on`] that bind their own sockets.
pub fn size_receive_buffers(sockets: &[UdpSocket], bytes: usize) {
    for socket in sockets {
        let address = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
        match ntp_udp::set_receive_buffer(socket, bytes) {
            Ok(granted) if granted >= bytes => tracing::debug!(%address, granted, "receive buffer"),
            Ok(granted) => info!(
                %address,
                asked = bytes,
                granted,
                "receive buffer capped by net.core.rmem_max (raise it, or start with CAP_NET_ADMIN)"
            ),
            Err(e) => info!(%address, error = %e, "receive buffer left at the kernel's default"),
        }
    }
}

/// The clock a daemon starts with: a primary server's (synchronized at
/// once to its own clock), or, with upstreams, an unsynchronized one (leap
/// 3, stratum 0) until the first clock update.
#[must_use]
pub fn initial_snapshot(config: &ServeConfig, precision: i8) -> ClockSnapshot {
    let primary = ClockSnapshot { kind: config.clock.kind, ..primary_snapshot(config, precision) };
    if config.sync.is_primary() {
        primary
    } else {
        ClockSnapshot { state: unsynchronized(precision, NtpTimestamp::ZERO), ..primary }
    }
}

/// Runs the daemon until `shutdown` completes; returns the final counters.
pub async fn run(mut config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<Counts, DaemonError> {
    // The system clock is taken (or refused) before anything else starts.
    let kernel = match config.clock.kind {
        ClockKind::System => Some(SystemClock::start(&config.clock)?),
        ClockKind::Virtual => None,
    };
    config.sync.frequency_known_ppm = kernel.as_ref().and_then(SystemClock::frequency_known_ppm);
    let sockets = bind(&config.listen)?;
    size_receive_buffers(&sockets, config.receive_buffer);
    // Root's SHM units (0600) and /run's SOCK sockets, before root is gone.
    let refclocks = crate::refclock::Refclocks::open(&config.sync.refclocks);
    for (refclock, opened) in config.sync.refclocks.iter().zip(&refclocks) {
        if let (crate::config::refclock::RefclockSource::Sock(_), Err(e)) = (&refclock.source, opened) {
            return Err(DaemonError::Refclock(
                refclock.source.to_string(),
                std::io::Error::new(e.kind(), e.to_string()),
            ));
        }
    }
    if let Some(user) = &config.user {
        let keep = if kernel.is_some() { privileges::Keep::SysTime } else { privileges::Keep::Nothing };
        let (uid, gid) = privileges::drop_to(user, keep)?;
        info!(user, uid, gid, kept_cap_sys_time = kernel.is_some(), "privileges dropped after binding");
    }
    let clock = Arc::new(SharedClock::new(initial_snapshot(&config, measure_precision())));
    let (status, _) = watch::channel(SyncStatus::default());
    run_with(sockets, config, clock, status, kernel, refclocks, shutdown).await
}

/// Runs the daemon on sockets the caller bound, with a clock the caller
/// can watch (the demo and tests do), until `shutdown` completes.
pub async fn run_on(
    sockets: Vec<UdpSocket>,
    config: ServeConfig,
    clock: Arc<SharedClock>,
    status: watch::Sender<SyncStatus>,
    shutdown: impl Future<Output = ()>,
) -> Result<Counts, DaemonError> {
    run_with(sockets, config, clock, status, None, Vec::new(), shutdown).await
}

/// [`run_on`], with the system clock to discipline when `--clock system`
/// and the reference clocks' devices opened already.
async fn run_with(
    sockets: Vec<UdpSocket>,
    config: ServeConfig,
    clock: Arc<SharedClock>,
    status: watch::Sender<SyncStatus>,
    kernel: Option<SystemClock>,
    refclocks: Vec<std::io::Result<crate::refclock::drivers::Device>>,
    shutdown: impl Future<Output = ()>,
) -> Result<Counts, DaemonError> {
    let local: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let addresses: Vec<String> = local.iter().map(ToString::to_string).collect();
    let state = clock.snapshot().state;
    info!(
        addresses = %addresses.join(" "),
        stratum = state.stratum.0,
        refid = %state.reference_id.display(state.stratum),
        upstreams = %config.sync.upstreams.join(" "),
        pools = %config.sync.pools.join(" "),
        refclocks = %config.sync.refclocks.iter().map(|r| r.source.to_string()).collect::<Vec<_>>().join(" "),
        precision = state.precision,
        clock_offset = config.clock_offset,
        clock_drift_ppm = config.clock_drift_ppm,
        clock = ?config.clock.kind,
        "serving NTP"
    );
    let http_listener = match config.http {
        Some(address) => Some(bind_http(address)?),
        None => None,
    };
    let stats_log = match &config.stats_dir {
        Some(dir) => Some(StatsLog::open(dir, DEFAULT_MAX_BYTES).map_err(|e| DaemonError::StatsDir(dir.clone(), e))?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let observe = status.subscribe();
    let mut leaps = match &config.leap_file {
        Some(path) => LeapSource::load(path, clock.now()).map_err(|e| DaemonError::LeapFile(path.clone(), e))?,
        None => LeapSource::upstreams_only(),
    };
    // The file's leap is in the schedule before the first request is answered.
    leaps.refresh(&clock, None);
    if let LeapMode::Smear(smear) = config.leap_mode {
        info!(window = smear.window(), "leap seconds are smeared: clients must not mix this server with stepping ones");
        if smear.window() > ntp_proto::leap::SECONDS_PER_DAY && !config.sync.is_primary() && !leaps.has_current_file() {
            warn!(
                window = smear.window(),
                "the leap file is not usable: the upstreams announce a leap only on its last day, after a smear this long has begun, and served time will jump to join it"
            );
        }
        if smear.window() < FOLLOWABLE_SMEAR {
            warn!(
                window = smear.window(),
                "a smear this short runs faster than the 500 ppm a client slews at: clients will lag it"
            );
        }
    }
    let background = if config.sync.is_primary() {
        tokio::spawn(refresh_reference(Arc::clone(&clock), leaps, stopped.clone()))
    } else {
        // The control socket, for a daemon with sources to change.
        let control = control::start(config.control.as_ref()).map_err(|e| {
            let path = config.control.as_ref().map(|c| c.socket.clone()).unwrap_or_default();
            DaemonError::Control { path, error: e }
        })?;
        let calls = control.map(|socket| {
            let (calls, incoming) = mpsc::channel(8);
            tokio::spawn(socket.serve(calls, wait_for_stop(stopped.clone())));
            incoming
        });
        let until_stopped = wait_for_stop(stopped.clone());
        let (clock, sync_config) = (Arc::clone(&clock), config.sync.clone());
        let reports = sync::Reports { status, stats_log };
        let handles = sync::Handles { refclocks, control: calls, kernel };
        tokio::spawn(sync::run(clock, sync_config, local.clone(), leaps, reports, handles, until_stopped))
    };
    let started = config
        .nts
        .as_ref()
        .map(|nts| start_nts(nts, &local, stopped.clone()))
        .transpose()
        .and_then(|nts| Ok(Server::start_with_nts(sockets, &config.policy, Arc::clone(&clock), nts)?));
    let server = match started {
        Ok(server) => server,
        Err(error) => {
            let _ = stop.send(true);
            let _ = background.await;
            return Err(error);
        }
    };
    let http_task = http_listener.map(|listener| {
        let observed = Observed { clock, status: observe, stats: Arc::clone(server.stats()) };
        tokio::spawn(http::serve(listener, observed, wait_for_stop(stopped)))
    });
    shutdown.await;
    let stats = tokio::task::spawn_blocking(move || server.stop()).await;
    let _ = stop.send(true);
    let _ = background.await;
    if let Some(task) = http_task {
        let _ = task.await;
    }
    let counts = stats.map_err(|e| ServeError::Thread(e.to_string()))??.read();
    info!(
        received = counts.received,
        answered = counts.answered,
        kissed = counts.kissed_rate + counts.kissed_deny,
        "stopped"
    );
    Ok(counts)
}

/// Loads the certificate, binds NTS-KE and starts it and the key rotation;
/// the serving threads get the keys.
fn start_nts(
    config: &NtsConfig,
    local: &[SocketAddr],
    stopped: watch::Receiver<bool>,
) -> Result<Arc<NtsKeys>, DaemonError> {
    let tls = nts::tls_config(&config.cert, &config.key)?;
    let listener = bind_tcp(config.listen).map_err(|e| nts::NtsSetupError::Bind(config.listen, e))?;
    let keys = Arc::new(NtsKeys::new());
    let served = local.first().map_or(crate::config::DEFAULT_PORT, SocketAddr::port);
    let ntp_port = config.ntp_port.unwrap_or(served);
    tokio::spawn(nts::serve_ke(listener, tls, Arc::clone(&keys), ntp_port, wait_for_stop(stopped.clone())));
    tokio::spawn(Arc::clone(&keys).rotate_every(nts::KEY_ROTATION, wait_for_stop(stopped)));
    Ok(keys)
}

/// Binds the HTTP address now, so a bad one stops the daemon at start-up.
fn bind_http(address: SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    let fail = |e| DaemonError::Http(address, e);
    let listener = bind_tcp(address).map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    info!(address = %bound, "serving /status and /metrics over HTTP");
    Ok(listener)
}

/// Binds a TCP address synchronously (HTTP, NTS-KE), so that an address in
/// use stops the daemon at start-up rather than in a task later.
fn bind_tcp(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// A primary server keeps its reference time fresh, so the root dispersion
/// it advertises stays that of a reference just read, and takes leaps from
/// its leap file to the second.
async fn refresh_reference(clock: Arc<SharedClock>, mut leaps: LeapSource, stopped: watch::Receiver<bool>) {
    let every = if leaps.has_file() { LEAP_REFRESH } else { REFERENCE_REFRESH };
    let mut ticks = tokio::time::interval(every);
    let stop = wait_for_stop(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {
                let now = clock.continuous_now();
                clock.update(|snapshot| snapshot.state.reference_time = now);
                leaps.refresh(&clock, None);
            }
        }
    }
}

/// The shortest smear a client slewing at most 500 ppm follows: one second
/// over 2,000.
const FOLLOWABLE_SMEAR: u32 = 2_000;

/// How often a primary server with a leap file looks at it.
const LEAP_REFRESH: Duration = Duration::from_secs(1);

pub(crate) async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// Completes on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, DaemonError> {
    let stop = ntp_udp::signal::stop_signal().map_err(DaemonError::Signals)?;
    Ok(async move {
        let signal = stop.await;
        info!("{}: shutting down", signal.name());
    })
}
