//! `ntpd-sim demo`: a stratum 1 -> 2 -> 3 chain of real daemons in one
//! process, on loopback, with deliberately wrong clocks: stratum 2 starts
//! five minutes fast, stratum 3 starts 1.5 s slow and runs 40 ppm fast. A
//! table refreshed every second shows each server's stratum, its offset from
//! true time (the host clock) and its state, until all are within 1 ms.
//!
//! All three listen on 127.0.0.1, each on a port of its own, as a user
//! would start them: reference IDs name the upstream's address and port
//! (docs/chain.md), so loop detection tells them apart.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntp_proto::discipline::Adjustment;
use thiserror::Error;
use tokio::sync::watch;

use ntp_plot::human_seconds;
use ntp_udp::measure_precision;

use crate::cli::DemoArgs;
use crate::clock::SharedClock;
use crate::config::{ClockSection, ConfigError, ControlSection, Overrides, ServeConfig, ServerSection, SyncSection};
use crate::daemon::{self, initial_snapshot, DaemonError};
use crate::observe::status::SyncStatus;

/// The chain: name, address, clock offset (s), drift (ppm).
const TIERS: [(&str, &str, f64, f64); 3] = [
    ("stratum 1", "127.0.0.1", 0.0, 0.0),
    ("stratum 2", "127.0.0.1", 300.0, 0.0),
    ("stratum 3", "127.0.0.1", -1.5, 40.0),
];
/// Within this of true time counts as converged...
const CONVERGED: f64 = 1e-3;
/// ...for this many consecutive refreshes.
const CONVERGED_FOR: u32 = 5;

/// Why the demo could not run.
#[derive(Debug, Error)]
pub enum DemoError {
    /// A loopback address could not be bound.
    #[error("cannot bind {0}: {1} (the demo needs three UDP ports on loopback)")]
    Bind(String, std::io::Error),
    /// A daemon's configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

struct Tier {
    name: &'static str,
    address: SocketAddr,
    clock: Arc<SharedClock>,
    status: watch::Receiver<SyncStatus>,
}

/// Runs the demo; `Ok(true)` when the chain converged.
pub async fn run(args: &DemoArgs) -> Result<bool, DemoError> {
    let (stop, stopped) = watch::channel(false);
    let precision = measure_precision();
    let mut tiers: Vec<Tier> = Vec::new();
    let mut tasks = Vec::new();
    for (name, ip, offset, drift) in TIERS {
        let socket = UdpSocket::bind((ip, 0)).map_err(|e| DemoError::Bind(ip.to_string(), e))?;
        let address = socket.local_addr().map_err(|e| DemoError::Bind(ip.to_string(), e))?;
        let serve = Overrides {
            server: ServerSection {
                listen: vec![address],
                clock_offset: Some(offset),
                clock_drift_ppm: Some(drift),
                ..ServerSection::default()
            },
            sync: SyncSection {
                upstreams: tiers.last().map(|up: &Tier| vec![up.address.to_string()]).unwrap_or_default(),
                min_poll: Some(0),
                max_poll: Some(2),
                ..SyncSection::default()
            },
            // Three daemons in one process: none takes the control socket.
            control: ControlSection { enabled: Some(false), ..ControlSection::default() },
            clock: ClockSection::default(),
            refclocks: Vec::new(),
        };
        let config = ServeConfig::load(None, &serve)?;
        let clock = Arc::new(SharedClock::new(initial_snapshot(&config, precision)));
        let (status, status_rx) = watch::channel(SyncStatus::default());
        let shutdown = daemon::wait_for_stop(stopped.clone());
        let task_clock = Arc::clone(&clock);
        daemon::size_receive_buffers(std::slice::from_ref(&socket), config.receive_buffer);
        tasks.push(tokio::spawn(
            async move { daemon::run_on(vec![socket], config, task_clock, status, shutdown).await },
        ));
        tiers.push(Tier { name, address, clock, status: status_rx });
    }

    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut calm = 0;
    let mut converged = false;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            _ = &mut interrupt => break,
            _ = ticks.tick() => {}
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (table, worst) = render(&tiers, elapsed);
        let mut out = std::io::stdout().lock();
        if terminal {
            // Redraw in place: cursor home, clear screen.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = write!(out, "{table}");
        let _ = out.flush();
        calm = if worst < CONVERGED { calm + 1 } else { 0 };
        if calm >= CONVERGED_FOR && !converged {
            converged = true;
            let _ = writeln!(out, "converged: every clock within 1 ms of true time after {elapsed:.0} s");
            if !args.keep_running {
                break;
            }
        }
        if !converged && elapsed > args.timeout {
            let _ = writeln!(out, "not converged after {:.0} s", args.timeout);
            break;
        }
    }
    let _ = stop.send(true);
    for task in tasks {
        if let Ok(Err(error)) = task.await {
            log_daemon_error(&error);
        }
    }
    Ok(converged)
}

fn log_daemon_error(error: &DaemonError) {
    tracing::error!(%error, "a demo daemon failed");
}

/// The table, and the largest |offset| from true time among the tiers.
fn render(tiers: &[Tier], elapsed: f64) -> (String, f64) {
    let mut out = String::new();
    let _ =
        writeln!(out, "ntpd-sim demo: a stratum 1 -> 2 -> 3 chain on loopback, {elapsed:.0} s in (Ctrl-C to stop)\n");
    let _ = writeln!(
        out,
        "{:<10} {:<17} {:>7} {:>18} {:>11}  state",
        "server", "address", "stratum", "offset from true", "freq (ppm)"
    );
    let mut worst: f64 = 0.0;
    for tier in tiers {
        let snapshot = tier.clock.snapshot();
        let system = SharedClock::system_now();
        let offset = (snapshot.served_at(system) - system).to_seconds_f64();
        worst = worst.max(offset.abs());
        let frequency = snapshot.clock.oscillator.frequency_ppm() + snapshot.clock.correction.frequency_ppm();
        let state = tier_state(tier, snapshot.state.stratum.0);
        let _ = writeln!(
            out,
            "{:<10} {:<17} {:>7} {:>18} {:>+11.3}  {}",
            tier.name,
            tier.address.to_string(),
            snapshot.state.stratum.0,
            human_seconds(offset),
            frequency,
            state
        );
    }
    let _ = writeln!(out, "\noffset: the server's clock minus this host's clock; freq: its rate error now.");
    (out, worst)
}

fn tier_state(tier: &Tier, stratum: u8) -> String {
    let status = tier.status.borrow();
    if status.upstreams.is_empty() {
        return "primary (reference clock: this host)".into();
    }
    match status.last {
        None => "unsynchronized: polling its upstream".into(),
        Some(sync) => {
            let action = match sync.update.adjustment {
                Adjustment::Stepped(by) => {
                    format!("stepped {}", human_seconds(by.to_seconds_f64()))
                }
                Adjustment::Slewing(by) => {
                    format!("slewing {}", human_seconds(by.to_seconds_f64()))
                }
                Adjustment::Held(by) => {
                    format!("holding a spike of {}", human_seconds(by.to_seconds_f64()))
                }
            };
            format!("synchronized at stratum {stratum}, last update: {action}")
        }
    }
}
