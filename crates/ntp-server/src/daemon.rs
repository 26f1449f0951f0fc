//! `ntpd-sim serve` as a whole: bind the configured addresses, set up the
//! virtual clock (a primary server's, or one disciplined from upstreams),
//! log one start-up line, serve until SIGINT or SIGTERM.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ntp_proto::clock::DisciplinedClock;
use ntp_proto::packet::LeapIndicator;
use ntp_proto::responder::ServerState;
use ntp_proto::system::unsynchronized;
use ntp_proto::{NtpDuration, NtpShort, NtpTimestamp};
use thiserror::Error;
use tokio::sync::watch;
use tracing::info;

use crate::clock::{measure_precision, ClockSnapshot, SharedClock};
use crate::config::{Listen, ServeConfig};
use crate::privileges::{self, PrivilegeError};
use crate::serve::{self, ServeError};
use crate::stats::Counts;
use crate::sync::{self, SyncError, SyncStatus};
use crate::udp;

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
    /// The upstreams could not be set up.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// `--user` was given and could not be become.
    #[error("cannot drop privileges: {0}")]
    Privileges(#[from] PrivilegeError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The clock and state of a primary server: a raw clock of the system clock
/// plus the configured offset and drift, no correction yet, advertising the configured stratum and
/// reference ID, synchronised now.
#[must_use]
pub fn primary_snapshot(config: &ServeConfig, precision: i8) -> ClockSnapshot {
    let system_now = SharedClock::system_now();
    let clock =
        DisciplinedClock::new(system_now, NtpDuration::from_seconds_f64(config.clock_offset), config.clock_drift_ppm);
    let state = ServerState {
        leap: LeapIndicator::NoWarning,
        stratum: config.stratum,
        precision,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        reference_id: config.reference_id,
        reference_time: clock.time_at(system_now),
    };
    ClockSnapshot { clock, state }
}

/// Binds what `listen` names.
pub fn bind(listen: &Listen) -> Result<Vec<UdpSocket>, DaemonError> {
    match listen {
        Listen::Addresses(addresses) => udp::bind_all(addresses),
        Listen::EveryAddress(port) => udp::bind_every_address(*port),
    }
    .map_err(DaemonError::Bind)
}

/// The clock a daemon starts with: a primary server's (synchronized at
/// once to its own clock), or, with upstreams, an unsynchronized one (leap
/// 3, stratum 0) until the first clock update.
#[must_use]
pub fn initial_snapshot(config: &ServeConfig, precision: i8) -> ClockSnapshot {
    let primary = primary_snapshot(config, precision);
    if config.sync.upstreams.is_empty() {
        primary
    } else {
        ClockSnapshot { state: unsynchronized(precision, NtpTimestamp::ZERO), ..primary }
    }
}

/// Runs the daemon until `shutdown` completes; returns the final counters.
pub async fn run(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<Counts, DaemonError> {
    let sockets = bind(&config.listen)?;
    if let Some(user) = &config.user {
        let (uid, gid) = privileges::drop_to(user)?;
        info!(user, uid, gid, "privileges dropped after binding");
    }
    let clock = Arc::new(SharedClock::new(initial_snapshot(&config, measure_precision())));
    let (status, _) = watch::channel(SyncStatus::default());
    run_on(sockets, config, clock, status, shutdown).await
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
    let local: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
    let addresses: Vec<String> = local.iter().map(ToString::to_string).collect();
    let state = clock.snapshot().state;
    info!(
        addresses = %addresses.join(" "),
        stratum = state.stratum.0,
        refid = %state.reference_id.display(state.stratum),
        upstreams = %config.sync.upstreams.join(" "),
        precision = state.precision,
        clock_offset = config.clock_offset,
        clock_drift_ppm = config.clock_drift_ppm,
        "serving NTP"
    );
    let (stop, stopped) = watch::channel(false);
    let background = if config.sync.upstreams.is_empty() {
        tokio::spawn(refresh_reference(Arc::clone(&clock), stopped))
    } else {
        let upstreams = sync::connect(&config.sync).await?;
        let own: Vec<IpAddr> = local.iter().map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()).collect();
        let until_stopped = wait_for_stop(stopped);
        tokio::spawn(sync::run(Arc::clone(&clock), upstreams, config.sync.clone(), own, status, until_stopped))
    };
    let stats = serve::run(sockets, config.policy, clock, shutdown).await;
    let _ = stop.send(true);
    let _ = background.await;
    let counts = stats?.read();
    info!(
        received = counts.received,
        answered = counts.answered,
        kissed = counts.kissed_rate + counts.kissed_deny,
        "stopped"
    );
    Ok(counts)
}

/// A primary server keeps its reference time fresh, so the root dispersion
/// it advertises stays that of a reference just read.
async fn refresh_reference(clock: Arc<SharedClock>, stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(REFERENCE_REFRESH);
    let stop = wait_for_stop(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {
                let now = clock.now();
                clock.update(|snapshot| snapshot.state.reference_time = now);
            }
        }
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// Completes on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT: shutting down"),
            _ = terminate.recv() => info!("SIGTERM: shutting down"),
        }
    })
}
