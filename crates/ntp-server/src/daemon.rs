//! `ntpd-sim serve` as a whole: bind the configured addresses, set up the
//! virtual clock as a primary server, log one start-up line, serve until
//! SIGINT or SIGTERM.

use std::future::Future;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use ntp_proto::clock::DisciplinedClock;
use ntp_proto::packet::LeapIndicator;
use ntp_proto::responder::ServerState;
use ntp_proto::{NtpDuration, NtpShort};
use thiserror::Error;
use tracing::info;

use crate::clock::{measure_precision, ClockSnapshot, SharedClock};
use crate::config::{Listen, ServeConfig};
use crate::serve::{self, ServeError};
use crate::stats::Counts;
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

/// Runs the daemon until `shutdown` completes; returns the final counters.
pub async fn run(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<Counts, DaemonError> {
    let sockets = bind(&config.listen)?;
    let addresses: Vec<String> = sockets.iter().filter_map(|s| s.local_addr().ok()).map(|a| a.to_string()).collect();
    let clock = Arc::new(SharedClock::new(primary_snapshot(&config, measure_precision())));
    let state = clock.snapshot().state;
    info!(
        addresses = %addresses.join(" "),
        stratum = state.stratum.0,
        refid = %state.reference_id.display(state.stratum),
        precision = state.precision,
        clock_offset = config.clock_offset,
        clock_drift_ppm = config.clock_drift_ppm,
        "serving NTP"
    );
    let refresh = {
        let clock = Arc::clone(&clock);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFERENCE_REFRESH);
            loop {
                ticks.tick().await;
                let now = clock.now();
                clock.update(|snapshot| snapshot.state.reference_time = now);
            }
        })
    };
    let stats = serve::run(sockets, config.policy, clock, shutdown).await;
    refresh.abort();
    let counts = stats?.read();
    info!(
        received = counts.received,
        answered = counts.answered,
        kissed = counts.kissed_rate + counts.kissed_deny,
        "stopped"
    );
    Ok(counts)
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
