//! `ntp-query`: thin front end over the ntp-client library (see `docs/query.md`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ntp_client::cli::{self, Args};

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the runtime")?;
    if let Some(every) = args.watch {
        // In a container ntp-query may be process 1, which the kernel does
        // not kill on a signal it ignores: stop on SIGINT and SIGTERM.
        let stop = runtime.block_on(async { ntp_udp::signal::stop_signal() }).context("install the signal handlers")?;
        let shutdown = async move {
            stop.await;
        };
        let mut stdout = std::io::stdout();
        unless_closed(runtime.block_on(cli::watch(&args, every, &mut stdout, shutdown)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = runtime.block_on(cli::run(&args));
    unless_closed(std::io::stdout().write_all(cli::render(&report, args.json).as_bytes()))?;
    Ok(ExitCode::from(report.exit_code()))
}

/// A reader that went away (`ntp-query -w 1 | head`) ends the output
/// quietly, as it ends `cat` or `ping`; any other write error is one.
fn unless_closed(written: std::io::Result<()>) -> anyhow::Result<()> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("write the report"),
    }
}
