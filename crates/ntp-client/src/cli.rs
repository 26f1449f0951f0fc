//! `ntp-query`'s command line (clap derive) and its library entry point:
//! resolve every `SERVER`, query every address at once, and report.

use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ntp_proto::packet::Version;
use tracing::Instrument;

use crate::exchange::ExchangeOptions;
use crate::nts::{key_exchange, tls_config};
use crate::query::{query, QueryOptions};
use crate::query::{query_interleaved, query_nts};
use crate::report::{table, Report, ServerReport};
use crate::target::{Family, Host, Target, TargetError, NTP_PORT};
use ntp_proto::nts::DEFAULT_KE_PORT;
use ntp_udp::SystemClock;
use std::net::IpAddr;

/// Measure the offset and delay of NTP servers (a one-shot client, like
/// `ntpdate -q`, `sntp` or `chronyd -Q`). Nothing is changed on this host.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ntp-query",
    version,
    after_help = "Exit status: 0 when every server gave a usable answer, 1 when some did not, 2 for usage errors.\n\
                  See docs/query.md for the output and the JSON schema."
)]
pub struct Args {
    /// Servers to query: a host name, IPv4 or IPv6 address, optionally with
    /// a port (`host:123`, `192.0.2.1:123`, `[::1]:123`). A name is queried
    /// at every address it resolves to.
    /// With `--nts`, SERVER names the NTS-KE server (default port 4460)
    /// and the NTP server and port come from the key exchange.
    #[arg(value_name = "SERVER", required = true, value_parser = check_target)]
    pub servers: Vec<String>,

    /// Use Network Time Security (RFC 8915): NTS-KE over TLS 1.3 with each
    /// SERVER, then authenticated NTP; unauthenticated replies are refused.
    #[arg(long)]
    pub nts: bool,

    /// Trust the CA certificates in this PEM file for NTS-KE instead of
    /// the built-in (Mozilla) root store.
    #[arg(long, value_name = "FILE", requires = "nts")]
    pub ca_file: Option<PathBuf>,

    /// Only IPv4 addresses.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6 addresses.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Requests per address; the one with the lowest delay is used, the
    /// others give the jitter.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub samples: u32,

    /// Seconds between the requests to one address (iburst spaces them 2 s
    /// apart; a CLI need not wait that long).
    #[arg(short = 'i', long, value_name = "SECONDS", default_value = "0.25", value_parser = parse_interval)]
    pub interval: Duration,

    /// Seconds to wait for each reply.
    #[arg(short = 't', long, value_name = "SECONDS", default_value = "2", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// NTP version of the requests.
    #[arg(long = "ntp-version", value_name = "3|4", default_value_t = 4,
          value_parser = clap::value_parser!(u8).range(3..=4))]
    pub ntp_version: u8,

    /// Interleaved mode: ask each server, from the second request on, for
    /// when its previous reply really left (the kernel's transmit
    /// timestamp), as chronyd's `xleave` does; one request more than
    /// --samples is sent, in sequence. A server that does not interleave
    /// answers in basic mode, and those answers are used.
    #[arg(short = 'x', long, conflicts_with = "nts")]
    pub interleaved: bool,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Query again every SECONDS until interrupted (SIGINT or SIGTERM),
    /// printing each report under a line with the time; exit 0 then.
    #[arg(short = 'w', long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub watch: Option<Duration>,
}

fn check_target(text: &str) -> Result<String, TargetError> {
    text.parse::<Target>().map(|_| text.to_owned())
}

fn parse_seconds(text: &str, minimum: f64) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !seconds.is_finite() || seconds < minimum || seconds > 3600.0 {
        return Err(format!("{seconds} is out of range ({minimum} to 3600 seconds)"));
    }
    if seconds == 0.0 && minimum > 0.0 {
        return Err("must be more than 0".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_seconds(text, 0.001)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_seconds(text, 0.0)
}

impl Args {
    fn family(&self) -> Family {
        match (self.ipv4, self.ipv6) {
            (true, _) => Family::V4,
            (_, true) => Family::V6,
            _ => Family::Any,
        }
    }

    fn query_options(&self, local_precision: i8) -> QueryOptions {
        let version = if self.ntp_version == 3 { Version::V3 } else { Version::V4 };
        QueryOptions {
            samples: self.samples,
            interval: self.interval,
            exchange: ExchangeOptions { version, timeout: self.timeout, local_precision },
        }
    }
}

/// Queries every address of every server concurrently (a silent one delays
/// no other) and gathers the report, in the order the servers were given.
pub async fn run(args: &Args) -> Report {
    let clock = SystemClock;
    let options = args.query_options(clock.precision());
    let family = args.family();
    let interleaved = args.interleaved;
    let tls = match args.nts.then(|| tls_config(args.ca_file.as_deref())).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            return Report::new(args.servers.iter().map(|server| ServerReport::unresolved(server, &error)).collect())
        }
    };
    let per_server: Vec<_> = args
        .servers
        .iter()
        .map(|text| {
            let default_port = if tls.is_some() { DEFAULT_KE_PORT } else { NTP_PORT };
            let target = Target::parse_with_default_port(text, default_port);
            let (tls, text) = (tls.clone(), text.clone());
            tokio::spawn(async move {
                let target = match target {
                    Ok(target) => target,
                    Err(error) => return vec![ServerReport::unresolved(&text, &error)],
                };
                match tls {
                    None => query_server(target, family, clock, options, interleaved).await,
                    Some(tls) => query_nts_server(target, tls, family, clock, options).await,
                }
            })
        })
        .collect();
    let mut servers = Vec::new();
    for (handle, target) in per_server.into_iter().zip(&args.servers) {
        match handle.await {
            Ok(reports) => servers.extend(reports),
            Err(error) => servers.push(ServerReport::unresolved(target, &error)),
        }
    }
    Report::new(servers)
}

/// NTS-KE with `target`, then a burst of NTS-protected exchanges with the
/// NTP server and port it named, every address of it.
async fn query_nts_server(
    target: Target,
    tls: Arc<rustls::ClientConfig>,
    family: Family,
    clock: SystemClock,
    options: QueryOptions,
) -> Vec<ServerReport> {
    let name = target.to_string();
    let host = match &target.host {
        Host::Address(address) => address.to_string(),
        Host::Name(name) => name.clone(),
    };
    let timeout = options.exchange.timeout.max(Duration::from_secs(5));
    let exchange = match key_exchange(&host, target.port, tls, timeout).await {
        Ok(exchange) => exchange,
        Err(error) => return vec![ServerReport::unresolved(&name, &error)],
    };
    let ntp = match exchange.ntp_host.parse::<IpAddr>() {
        Ok(address) => Target { host: Host::Address(address), port: exchange.ntp_port },
        Err(_) => Target { host: Host::Name(exchange.ntp_host.clone()), port: exchange.ntp_port },
    };
    let addresses = match ntp.resolve(family).await {
        Ok(addresses) => addresses,
        Err(error) => return vec![ServerReport::unresolved(&name, &error)],
    };
    // One session per address would need one NTS-KE each; the cookies of
    // one key exchange are for the server it named, so use its first address.
    let address = addresses[0];
    let span = tracing::debug_span!("nts-query", server = %name, %address);
    let result = query_nts(address, clock, options, exchange.session).instrument(span).await;
    let mut report = ServerReport::new(&name, address, &result);
    report.authenticated = Some(result.as_ref().is_ok_and(|estimate| estimate.authenticated));
    vec![report]
}

async fn query_server(
    target: Target,
    family: Family,
    clock: SystemClock,
    options: QueryOptions,
    interleaved: bool,
) -> Vec<ServerReport> {
    let name = target.to_string();
    let addresses = match target.resolve(family).await {
        Ok(addresses) => addresses,
        Err(error) => return vec![ServerReport::unresolved(&name, &error)],
    };
    let queries: Vec<_> = addresses
        .iter()
        .map(|&address| {
            let span = tracing::debug_span!("query", server = %name, %address);
            let queried = async move {
                if interleaved {
                    query_interleaved(address, clock, options).await
                } else {
                    query(address, clock, options).await
                }
            };
            (address, tokio::spawn(queried.instrument(span)))
        })
        .collect();
    let mut reports = Vec::new();
    for (address, handle) in queries {
        let result = handle.await.unwrap_or_else(|error| Err(std::io::Error::other(error.to_string()).into()));
        let mut report = ServerReport::new(&name, address, &result);
        if interleaved {
            report.mode = result.ok().map(|e| if e.interleaved { "interleaved" } else { "basic" });
        }
        reports.push(report);
    }
    reports
}

/// `--watch`: a report every `every` (the first at once) written to `out`,
/// each under a line with the time it was started, until `shutdown`
/// completes. A round that overruns `every` delays the next, never
/// overlaps it.
pub async fn watch(
    args: &Args,
    every: Duration,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = ticks.tick() => {}
        }
        let started =
            chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).format("%Y-%m-%d %H:%M:%S UTC");
        let report = tokio::select! {
            () = &mut shutdown => return Ok(()),
            report = run(args) => report,
        };
        writeln!(out, "{started}")?;
        out.write_all(render(&report, args.json).as_bytes())?;
        writeln!(out)?;
        out.flush()?;
    }
}

/// The report as the user asked for it: a table, or JSON.
#[must_use]
pub fn render(report: &Report, json: bool) -> String {
    if json {
        // A struct of strings, numbers and options always serializes.
        serde_json::to_string_pretty(report).map_or_else(|e| format!("{{\"error\": \"{e}\"}}"), |s| s + "\n")
    } else {
        table::render(report)
    }
}
