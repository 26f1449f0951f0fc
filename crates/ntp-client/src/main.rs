//! `ntp-query`: thin front end over the ntp-client library (see `docs/query.md`).

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ntp_client::cli::{self, Args};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the runtime")?;
    if let Some(every) = args.watch {
        let shutdown = runtime.block_on(async { shutdown_signal() })?;
        let mut stdout = std::io::stdout();
        runtime.block_on(cli::watch(&args, every, &mut stdout, shutdown)).context("write the report")?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = runtime.block_on(cli::run(&args));
    std::io::stdout().write_all(cli::render(&report, args.json).as_bytes()).context("write the report")?;
    Ok(ExitCode::from(report.exit_code()))
}

/// Completes on the first SIGINT or SIGTERM (in a container, ntp-query may
/// be process 1, which the kernel does not kill on a signal it ignores).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
