//! `ntp-relay`: a UDP relay that puts a bad network between an NTP client
//! and a server (delay, jitter, asymmetry, loss, duplication, reordering),
//! for tests of real processes where no netem is available. See
//! `docs/security.md` and `tests/tests/impairment.rs`.

mod impairment;
mod relay;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::impairment::Impairment;
use crate::relay::RelayConfig;

/// Relays UDP datagrams between clients and one server through an impaired path.
#[derive(Debug, Parser)]
#[command(name = "ntp-relay", about)]
struct Cli {
    /// Address clients send to (replies leave from it).
    #[arg(long)]
    listen: SocketAddr,
    /// The server datagrams are relayed to.
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way delay in both directions, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Extra delay client -> server, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_out: f64,
    /// Extra delay server -> client, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_back: f64,
    /// Extra delay drawn uniformly from [0, JITTER] per datagram, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    jitter: f64,
    /// Probability of losing a datagram, each direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability of delivering a datagram twice, each direction.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Probability of holding a datagram back by --reorder-delay so later ones overtake it.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// See --reorder, milliseconds.
    #[arg(long, default_value_t = 5.0)]
    reorder_delay: f64,
    /// Seed of the random decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a line per NTP exchange relayed to FILE: Unix time, then the
    /// seconds the request and the reply really spent in the relay.
    #[arg(long, value_name = "FILE")]
    exchange_log: Option<std::path::PathBuf>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn millis(ms: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(ms.is_finite() && ms >= 0.0, "delays are milliseconds >= 0, not {ms}");
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_env_filter(cli.log_level.as_str()).with_writer(std::io::stderr).init();
    for p in [cli.loss, cli.duplicate, cli.reorder] {
        anyhow::ensure!((0.0..=1.0).contains(&p), "probabilities are in [0, 1], not {p}");
    }
    let base = Impairment {
        delay: millis(cli.delay)?,
        jitter: millis(cli.jitter)?,
        loss: cli.loss,
        duplicate: cli.duplicate,
        reorder: cli.reorder,
        reorder_delay: millis(cli.reorder_delay)?,
    };
    let config = RelayConfig {
        listen: cli.listen,
        upstream: cli.upstream,
        out: Impairment { delay: base.delay + millis(cli.delay_out)?, ..base },
        back: Impairment { delay: base.delay + millis(cli.delay_back)?, ..base },
        seed: cli.seed,
        exchange_log: cli.exchange_log,
    };
    relay::run(&config)?;
    Ok(())
}
