//! `ntpd-sim`: thin front end over the ntp-server library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use ntp_server::cli::{Cli, Command};
use ntp_server::{daemon, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    let config = ServeConfig::from_args(&args).context("configuration")?;
    // --log-level, then RUST_LOG, then the file's log-level, then info.
    let directive = (args.log_level.clone())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or_else(|| config.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(&directive).with_context(|| format!("log level `{directive}`"))?;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = daemon::shutdown_signal()?;
        daemon::run(config, shutdown).await
    })?;
    Ok(())
}
