//! The `ntpd-sim` command line (clap derive). `serve`'s flags fill the
//! plain [`Overrides`] of the config file; see `docs/server.md`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::refclock::RefclockSection;
use crate::config::{
    ClockChoice, ClockSection, ControlSection, Overrides, ServerSection, SyncSection, DEFAULT_CONTROL_SOCKET,
    DEFAULT_HTTP_ADDRESS,
};

/// ntpd-sim: an NTP daemon on a virtual clock.
#[derive(Debug, Parser)]
#[command(name = "ntpd-sim", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve time over UDP (NTPv3 and v4 clients); with --upstream, also
    /// synchronize to upstream servers and serve as their stratum + 1.
    Serve(Box<ServeArgs>),
    /// Start a stratum 1 -> 2 -> 3 chain in this process, on loopback, with
    /// deliberately wrong clocks, and watch it converge.
    Demo(DemoArgs),
    /// Run a scenario (see config/scenarios/) in simulated time with the
    /// daemon's own algorithms: a summary table, CSV time series, an SVG plot.
    Simulate(SimulateArgs),
    /// Show a running daemon's state and upstreams (from its --http address),
    /// as `chronyc tracking` and `chronyc sources` do.
    Status(StatusArgs),
    /// Draw a statistics directory (serve --stats-dir) as SVG or HTML:
    /// offset, delay, jitter and frequency over time.
    Plot(PlotArgs),
    /// List, add or remove a running daemon's upstreams over its control
    /// socket, as `chronyc sources`, `add server` and `delete` do.
    Sources(SourcesArgs),
    /// Check a config file: report every problem with its key and line;
    /// exit 1 if there is any.
    Validate(ValidateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) of ntpd-sim, or write one per subcommand.
    Man(ManArgs),
}

/// Arguments of `ntpd-sim man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write ntpd-sim.1 and ntpd-sim-SUBCOMMAND.1 into this directory
    /// instead of printing ntpd-sim.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Arguments of `ntpd-sim status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The daemon's HTTP address (its serve --http).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_HTTP_ADDRESS)]
    pub http: SocketAddr,
    /// Print the JSON of /status instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ntpd-sim sources`.
#[derive(Debug, Clone, Args)]
pub struct SourcesArgs {
    /// The daemon's control socket (its serve --control-socket).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET, global = true)]
    pub control_socket: PathBuf,
    /// Print the daemon's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: SourcesAction,
}

/// `ntpd-sim sources` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SourcesAction {
    /// Every source: configured and added servers and pools, with the
    /// addresses in use and, for names, how resolution stands.
    List,
    /// Add a server (HOST[:PORT]) or, with --pool, a pool; until the
    /// daemon stops (the config file is not changed).
    Add {
        /// HOST[:PORT], or nts://HOST[:PORT] for a server.
        name: String,
        /// A pool: every address the name resolves to is a candidate.
        #[arg(long)]
        pool: bool,
    },
    /// Remove a server or pool by the name it was configured or added as
    /// (a pool's addresses go with it).
    Remove {
        /// As `sources list` shows it.
        name: String,
    },
}

/// Arguments of `ntpd-sim plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// The statistics directory (with loopstats and peerstats).
    #[arg(long, value_name = "DIR")]
    pub stats_dir: PathBuf,
    /// Output file: .html (a page with every plot) or .svg (the plots stacked).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `ntpd-sim validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The config file to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Arguments of `ntpd-sim completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `ntpd-sim demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep running (and refreshing the table) after convergence, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Give up (exit 1) if the chain has not converged after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub timeout: f64,
    /// Log level of the three daemons (their steps and warnings).
    #[arg(long, value_name = "LEVEL", default_value = "error")]
    pub log_level: String,
}

/// Arguments of `ntpd-sim simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The scenario file (TOML).
    #[arg(value_name = "SCENARIO.toml")]
    pub scenario: PathBuf,
    /// Seed of every random draw (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated time to run: seconds, or with a unit: 90s, 30m, 24h, 2d.
    #[arg(long, value_name = "DURATION", value_parser = ntp_sim::parse_duration)]
    pub duration: Option<f64>,
    /// Write summary.txt, series/<node>.csv and offset.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Arguments of `ntpd-sim serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (see config/ntpd-sim.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:12300 or [::1]:12300; repeatable.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Listen on this port on every address (default 123) instead of --listen.
    #[arg(long, conflicts_with = "listen")]
    pub port: Option<u16>,
    /// Stratum advertised as a primary server (1-15, default 1).
    #[arg(long)]
    pub stratum: Option<u8>,
    /// Reference ID advertised as a primary server: up to 4 ASCII characters (default LOCL).
    #[arg(long, value_name = "CODE")]
    pub refid: Option<String>,
    /// Start the virtual clock this many seconds off the system clock (signed, fractional).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub clock_offset: Option<f64>,
    /// Frequency error of the virtual clock in parts per million (signed).
    #[arg(long, value_name = "PPM", allow_negative_numbers = true)]
    pub clock_drift_ppm: Option<f64>,
    /// Log level or filter (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Upstream server to synchronize to, HOST[:PORT] (port 123 by default),
    /// or nts://HOST[:PORT] for NTS (the NTS-KE server, port 4460 by
    /// default); repeatable. With upstreams this server serves as their stratum + 1.
    #[arg(long = "upstream", value_name = "HOST[:PORT]")]
    pub upstreams: Vec<String>,
    /// Pool to take upstreams from, NAME[:PORT]: every address the name
    /// resolves to is a candidate, up to --max-sources are used, and one
    /// that stays unreachable, is a falseticker or refuses us (DENY, RSTR)
    /// is replaced by another; repeatable.
    #[arg(long = "pool", value_name = "NAME[:PORT]")]
    pub pools: Vec<String>,
    /// Reference clock to synchronize to: shm:UNIT (the NTP shared-memory
    /// segment gpsd writes) or sock:PATH (a chrony SOCK socket this daemon
    /// binds, gpsd sends to /run/chrony.DEVICE.sock), with options after
    /// commas: refid=GPS, offset=SECONDS, delay=SECONDS, precision=SECONDS,
    /// poll=LOG2S, prefer, noselect, trust, lock=REFID (a PPS); repeatable.
    /// It makes this server stratum 1. See docs/refclock.md.
    #[arg(long = "refclock", value_name = "shm:UNIT|sock:PATH[,OPTION...]")]
    pub refclocks: Vec<RefclockSection>,
    /// Upstreams each pool contributes at most (1-16, default 4).
    #[arg(long, value_name = "N")]
    pub max_sources: Option<usize>,
    /// CA certificates (PEM) trusted for nts:// upstreams (default: the
    /// built-in Mozilla roots).
    #[arg(long, value_name = "FILE")]
    pub nts_ca_file: Option<PathBuf>,
    /// Shortest poll interval, log2 seconds (default 6 = 64 s; 0 = 1 s).
    #[arg(long, value_name = "LOG2S", allow_negative_numbers = true)]
    pub min_poll: Option<i8>,
    /// Longest poll interval, log2 seconds (default 10 = 1024 s).
    #[arg(long, value_name = "LOG2S", allow_negative_numbers = true)]
    pub max_poll: Option<i8>,
    /// Offsets beyond this are stepped rather than slewed, at start-up (and
    /// after persisting for the stepout), in seconds (default 0.128).
    #[arg(long, value_name = "SECONDS")]
    pub step_threshold: Option<f64>,
    /// Seconds without any usable upstream before advertising itself
    /// unsynchronized (default 3600).
    #[arg(long, value_name = "SECONDS")]
    pub holdover: Option<f64>,
    /// Serve /status (JSON) and /metrics (Prometheus) over HTTP on this
    /// address; without a value 127.0.0.1:9123. Off unless given.
    #[arg(long, value_name = "ADDR:PORT", num_args = 0..=1, default_missing_value = DEFAULT_HTTP_ADDRESS)]
    pub http: Option<SocketAddr>,
    /// Write statistics logs (loopstats: one line per clock update;
    /// peerstats: one per upstream sample) into this directory, rotated.
    #[arg(long, value_name = "DIR")]
    pub stats_dir: Option<PathBuf>,
    /// The IETF/NIST leap-seconds.list to take leaps from (e.g.
    /// /usr/share/zoneinfo/leap-seconds.list): a primary announces from it,
    /// and with upstreams it decides instead of their majority. An expired
    /// or corrupt file is reported and not used.
    #[arg(long, value_name = "FILE")]
    pub leap_file: Option<PathBuf>,
    /// Smear each leap second linearly over this many seconds centred on
    /// it (86400: noon to noon, as Google's public NTP) instead of stepping
    /// at midnight; a smearing server never announces the leap. Do not mix
    /// smearing and stepping servers under one client.
    #[arg(long, value_name = "SECONDS")]
    pub leap_smear: Option<u32>,
    /// Once the sockets are bound, become this user (uid, gid, no
    /// supplementary groups) for good; for a start as root on port 123.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Receive buffer to ask for on each socket, in bytes (default 4 MiB):
    /// room for requests that arrive while the server is kept off its CPU.
    /// Above net.core.rmem_max only when started with CAP_NET_ADMIN (root).
    #[arg(long, value_name = "BYTES")]
    pub receive_buffer: Option<usize>,
    /// Serve NTS (RFC 8915) with this certificate chain (PEM); needs --nts-key.
    #[arg(long, value_name = "FILE", requires = "nts_key")]
    pub nts_cert: Option<PathBuf>,
    /// The private key (PEM) of --nts-cert.
    #[arg(long, value_name = "FILE", requires = "nts_cert")]
    pub nts_key: Option<PathBuf>,
    /// Where NTS-KE listens (TCP; default 0.0.0.0:4460).
    #[arg(long, value_name = "ADDR:PORT")]
    pub nts_listen: Option<SocketAddr>,
    /// The NTP port NTS-KE sends clients to (default: the port of the
    /// first --listen address), for a server reached through a
    /// port-forwarding NAT or relay.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub nts_ntp_port: Option<u16>,
    /// The control socket for `ntpd-sim sources` (Unix domain, mode 0600;
    /// default /run/ntpd-sim/control.sock); a daemon with upstreams or pools only.
    #[arg(long, value_name = "PATH", conflicts_with = "no_control_socket")]
    pub control_socket: Option<PathBuf>,
    /// No control socket.
    #[arg(long)]
    pub no_control_socket: bool,
    /// The clock to serve and discipline: `virtual` (default: the host's
    /// clock is only read) or `system` (the host's clock itself, through
    /// the kernel; needs CAP_SYS_TIME; see docs/system-clock.md).
    #[arg(long, value_enum, value_name = "KIND")]
    pub clock: Option<ClockChoice>,
    /// With --clock system: keep the frequency learned in this file
    /// (written atomically, read at start so a restart does not re-learn it).
    #[arg(long, value_name = "FILE")]
    pub drift_file: Option<PathBuf>,
    /// With --clock system: start even if chronyd, ntpd,
    /// systemd-timesyncd or another ntpd-sim --clock system is running
    /// (they would fight over the clock).
    #[arg(long)]
    pub force: bool,
    /// With --clock system: really discipline this host's clock. Without it
    /// the system clock is refused outside the project's test VM.
    #[arg(long)]
    pub allow_host_clock: bool,
}

impl ServeArgs {
    /// What the flags set, as overrides of the config file's keys.
    #[must_use]
    pub fn overrides(&self) -> Overrides {
        Overrides {
            server: ServerSection {
                listen: self.listen.clone(),
                port: self.port,
                stratum: self.stratum,
                refid: self.refid.clone(),
                clock_offset: self.clock_offset,
                clock_drift_ppm: self.clock_drift_ppm,
                log_level: self.log_level.clone(),
                http: self.http,
                stats_dir: self.stats_dir.clone(),
                leap_file: self.leap_file.clone(),
                leap_smear: self.leap_smear,
                user: self.user.clone(),
                receive_buffer: self.receive_buffer,
                nts_cert: self.nts_cert.clone(),
                nts_key: self.nts_key.clone(),
                nts_listen: self.nts_listen,
                nts_ntp_port: self.nts_ntp_port,
            },
            sync: SyncSection {
                upstreams: self.upstreams.clone(),
                pools: self.pools.clone(),
                max_sources: self.max_sources,
                min_poll: self.min_poll,
                max_poll: self.max_poll,
                step_threshold: self.step_threshold,
                holdover: self.holdover,
                nts_ca_file: self.nts_ca_file.clone(),
            },
            control: ControlSection {
                socket: self.control_socket.clone(),
                enabled: self.no_control_socket.then_some(false),
            },
            clock: ClockSection {
                kind: self.clock,
                drift_file: self.drift_file.clone(),
                force: self.force.then_some(true),
                allow_host: self.allow_host_clock.then_some(true),
            },
            refclocks: self.refclocks.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "ntpd-sim",
            "serve",
            "--listen",
            "127.0.0.1:12300",
            "--listen",
            "[::1]:12300",
            "--clock-offset",
            "-2.5",
            "--clock-drift-ppm",
            "-10",
            "--refid",
            "GPS",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert_eq!(args.listen.len(), 2);
        assert_eq!(args.clock_offset, Some(-2.5));
        assert_eq!(args.clock_drift_ppm, Some(-10.0));
        assert_eq!(args.refid.as_deref(), Some("GPS"));
        assert!(Cli::try_parse_from(["ntpd-sim", "serve", "--port", "1", "--listen", "127.0.0.1:1"]).is_err());
    }
}
