//! `ntpd-sim`: thin front end over the ntp-server library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use ntp_server::cli::{Cli, Command};
use ntp_server::simulate::{self, SimulateOptions};
use ntp_server::{daemon, demo, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = ServeConfig::from_args(&args).context("configuration")?;
            // --log-level, then RUST_LOG, then the file's log-level, then info.
            let directive = (args.log_level.clone())
                .or_else(|| std::env::var("RUST_LOG").ok())
                .or_else(|| config.log_level.clone())
                .unwrap_or_else(|| "info".into());
            init_logging(&directive)?;
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
            runtime.block_on(async {
                let shutdown = daemon::shutdown_signal()?;
                daemon::run(config, shutdown).await
            })?;
        }
        Command::Demo(args) => {
            init_logging(&args.log_level)?;
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
            let converged = runtime.block_on(demo::run(&args))?;
            if !converged {
                std::process::exit(1);
            }
        }
        Command::Simulate(args) => {
            let options =
                SimulateOptions { seed: args.seed, duration: args.duration, out: args.out.clone(), progress: true };
            let outcome = simulate::run_file(&args.scenario, &options)?;
            print!("{}", outcome.table);
            if let Some(dir) = &args.out {
                println!("wrote {0}/summary.txt, {0}/series/*.csv and {0}/offset.svg", dir.display());
            }
            let rate = outcome.events as f64 / outcome.wall.as_secs_f64().max(1e-9);
            eprintln!(
                "{} events in {:.3} s of wall time ({rate:.0} events/s)",
                outcome.events,
                outcome.wall.as_secs_f64()
            );
        }
    }
    Ok(())
}

fn init_logging(directive: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(directive).with_context(|| format!("log level `{directive}`"))?;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    Ok(())
}
