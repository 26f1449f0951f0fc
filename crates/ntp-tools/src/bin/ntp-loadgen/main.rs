//! `ntp-loadgen`: load generator for NTP servers (closed loop, or open loop
//! at a fixed rate), validating every reply, and a trivial batching UDP
//! responder to measure what the generator and the kernel can do at best.
//! Used by `bench/server.sh`; see `docs/performance.md`.
//!
//! # Layout
//! - `generator`: the load itself, over `ntp_udp` batches, and the check
//!   of every reply's origin.
//! - `bad`: the datagrams of a mixed load that a server must drop.
//! - `nts`: `ntp-loadgen nts`, NTS-protected load after one NTS-KE.
//! - `responder`: the trivial responder, a floor for comparisons.
//! - `report`: what a run counted, as one line.

mod bad;
mod generator;
mod nts;
mod report;
mod responder;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Load generator and trivial responder for NTP server benchmarks.
#[derive(Debug, Parser)]
#[command(name = "ntp-loadgen", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send valid client requests and report responses/s and latency.
    Run(RunArgs),
    /// Load an NTS server with authenticated requests (closed loop).
    Nts(nts::NtsArgs),
    /// Answer every 48-byte datagram with a minimal mode 4 reply (no policy,
    /// no validation): the ceiling to compare a real server against.
    Respond {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// How to load the server.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The server's address.
    #[arg(long)]
    pub server: SocketAddr,
    /// Client sockets (each its own source port).
    #[arg(long, default_value_t = 4)]
    pub sockets: usize,
    /// Closed loop: requests in flight per socket.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Open loop instead: requests per second in total, paced evenly.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// NTP version of the requests (3 or 4).
    #[arg(long, default_value_t = 4)]
    pub version: u8,
    /// Offset of the server's clock from ours, seconds; replies whose
    /// transmit time is further than --tolerance from it count as invalid.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub expect_offset: f64,
    /// See --expect-offset.
    #[arg(long, default_value_t = 0.5)]
    pub tolerance: f64,
    /// Bad datagrams (no reply due) sent per valid request, 0 to 1, mixed in.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Receive buffer asked for on each client socket, bytes (forced past
    /// net.core.rmem_max when run as root), so replies that arrive while
    /// the generator is off its CPU wait rather than being dropped.
    #[arg(long, default_value_t = ntp_udp::RECEIVE_BUFFER)]
    pub receive_buffer: usize,
    /// A label for the report line.
    #[arg(long, default_value = "server")]
    pub label: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            anyhow::ensure!(
                args.sockets > 0 && (1..=65536).contains(&args.window),
                "--sockets >= 1, --window 1..=65536"
            );
            anyhow::ensure!(matches!(args.version, 3 | 4), "--version is 3 or 4");
            anyhow::ensure!((0.0..=1.0).contains(&args.bad_ratio), "--bad-ratio is 0 to 1");
            let tally = generator::run(&args)?;
            println!("{}", report::line(&args, &tally, Duration::from_secs_f64(args.duration)));
            anyhow::ensure!(tally.valid > 0, "no valid replies from {}", args.server);
        }
        Command::Nts(args) => nts::run(&args)?,
        Command::Respond { listen } => responder::run(listen)?,
    }
    Ok(())
}
