//! `ntpd-sim`: thin front end over the ntp-daemon library (and ntp-sim).

use std::io::IsTerminal;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use ntp_daemon::cli::{Cli, Command, SourcesAction};
use ntp_daemon::config::validate;
use ntp_daemon::control::{self, Request};
use ntp_daemon::observe::status::{self, StatusReport};
use ntp_daemon::observe::{http, statsplot};
use ntp_daemon::{daemon, demo, ServeConfig};
use ntp_sim::SimulateOptions;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = ServeConfig::load(args.config.as_deref(), &args.overrides()).context("configuration")?;
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
            let outcome = ntp_sim::run_file(&args.scenario, &options)?;
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
        Command::Status(args) => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
            let body = runtime
                .block_on(http::get(args.http, "/status"))
                .with_context(|| format!("no status from {} (is ntpd-sim serving --http there?)", args.http))?;
            if args.json {
                print!("{body}");
            } else {
                let report: StatusReport = serde_json::from_str(&body).context("the /status JSON")?;
                print!("{}", status::render(&report));
            }
        }
        Command::Sources(args) => {
            let request = match args.action {
                SourcesAction::List => Request::List,
                SourcesAction::Add { name, pool } => Request::Add { name, pool },
                SourcesAction::Remove { name } => Request::Remove { name },
            };
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
            let path = &args.control_socket;
            let response = runtime.block_on(control::request(path, &request)).with_context(|| {
                format!("no answer on {} (is ntpd-sim serving with that --control-socket?)", path.display())
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&response).context("JSON")?);
            } else {
                if request != Request::List || !response.ok {
                    println!("{}", response.message);
                }
                if response.ok {
                    print!("{}", status::render_sources(&response.sources));
                }
            }
            if !response.ok {
                std::process::exit(1);
            }
        }
        Command::Plot(args) => {
            let verdict = statsplot::plot_dir(&args.stats_dir, &args.out).context("plot")?;
            println!("wrote {}: {verdict}", args.out.display());
        }
        Command::Validate(args) => {
            let problems = validate::validate_file(&args.config)?;
            for problem in &problems {
                println!("{}: {problem}", args.config.display());
            }
            if !problems.is_empty() {
                println!("{}: {} problem(s)", args.config.display(), problems.len());
                std::process::exit(1);
            }
            println!("{}: no problems", args.config.display());
        }
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "ntpd-sim", &mut script);
            write_stdout(&script)?;
        }
        Command::Man(args) => match &args.out_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
                clap_mangen::generate_to(Cli::command(), dir).context("man pages")?;
                println!("wrote ntpd-sim.1 and ntpd-sim-<subcommand>.1 into {}", dir.display());
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(Cli::command()).render(&mut page).context("man page")?;
                write_stdout(&page)?;
            }
        },
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("stdout"),
    }
}

fn init_logging(directive: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(directive).with_context(|| format!("log level `{directive}`"))?;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    Ok(())
}
