//! The TOML config file (strict: an unknown key is an error naming it) and
//! its merge with the command line's [`Overrides`] into the settings the
//! daemon runs with. An annotated example is `config/ntpd-sim.toml`.
//!
//! The command line fills [`Overrides`], plain data of the file's own
//! sections; nothing here knows the CLI. [`validate`] reports every problem
//! of a file at once.

pub mod clock;
pub mod refclock;
pub mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ntp_proto::leap::{LeapMode, LeapSmear, SECONDS_PER_DAY};
use ntp_proto::packet::{ReferenceId, Stratum};
use ntp_proto::system::SystemConfig;
use serde::Deserialize;
use thiserror::Error;

pub use self::clock::{ClockChoice, ClockConfig, ClockSection};
use crate::nts::NtsConfig;
use crate::policy::{AccessConfig, RateLimitConfig};
use crate::serve::PolicyConfig;
use crate::sources::{Kind, Spec};
use refclock::{RefclockConfig, RefclockSection};

/// The NTP port.
pub const DEFAULT_PORT: u16 = 123;
/// Where NTS-KE listens unless told: every IPv4 address, port 4460.
pub const DEFAULT_NTS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), ntp_proto::nts::DEFAULT_KE_PORT);

/// The address `--http` takes when given without one: loopback only.
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:9123";

/// Smallest and largest `receive-buffer` accepted, bytes.
pub const MIN_RECEIVE_BUFFER: usize = 4096;
/// See [`MIN_RECEIVE_BUFFER`]: just under 1 GiB, the most Linux grants
/// (it doubles the figure into an int), far beyond any useful queue.
pub const MAX_RECEIVE_BUFFER: usize = (i32::MAX / 2) as usize;

/// Longest `interval` and `kiss-interval` of `[rate-limit]`: a day.
pub const MAX_RATE_SECONDS: f64 = 86_400.0;
/// Shortest `interval` of `[rate-limit]`: a microsecond (a million
/// requests a second from one client; chrony's floor is 2^-19 s).
pub const MIN_RATE_INTERVAL: f64 = 1e-6;
/// Most clients `[rate-limit]` may remember: 16 Mi, some 800 MB a socket.
pub const MAX_RATE_TABLE: usize = 1 << 24;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FileConfig {
    /// `[server]`.
    pub server: ServerSection,
    /// `[access]`.
    pub access: AccessConfig,
    /// `[rate-limit]`.
    pub rate_limit: RateLimitConfig,
    /// `[sync]`.
    pub sync: SyncSection,
    /// `[control]`.
    pub control: ControlSection,
    /// `[clock]`.
    pub clock: ClockSection,
    /// `[[refclock]]`: reference clocks.
    pub refclock: Vec<RefclockSection>,
}

/// What the command line sets: keys of the file's `[server]` and `[sync]`,
/// each overriding the file's value when given (a list when not empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `[server]` keys.
    pub server: ServerSection,
    /// `[sync]` keys.
    pub sync: SyncSection,
    /// `[control]` keys.
    pub control: ControlSection,
    /// `[clock]` keys.
    pub clock: ClockSection,
    /// `--refclock`: replace the file's `[[refclock]]` tables when given.
    pub refclocks: Vec<RefclockSection>,
}

/// `[control]`: the control socket `ntpd-sim sources` talks to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ControlSection {
    /// Path of the Unix domain socket.
    pub socket: Option<PathBuf>,
    /// False: no control socket at all.
    pub enabled: Option<bool>,
}

/// Where the control socket is unless told: under the run directory.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ntpd-sim/control.sock";

/// Upstreams a pool contributes unless told (chrony's `maxsources`).
pub const DEFAULT_MAX_SOURCES: usize = 4;
/// Most upstreams one pool may contribute.
pub const MAX_MAX_SOURCES: usize = 16;

/// The control socket, once the file and the flags are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// The socket's path.
    pub socket: PathBuf,
    /// True when the path is the default one: then a socket that cannot be
    /// made is logged and the daemon runs without it (a path given on
    /// purpose that cannot be used stops the start).
    pub default_path: bool,
}

/// `[sync]`: the upstreams this server synchronizes to, and how.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SyncSection {
    /// Upstream servers, `HOST[:PORT]`.
    pub upstreams: Vec<String>,
    /// Pools, `NAME[:PORT]`: every address the name resolves to is a candidate.
    pub pools: Vec<String>,
    /// Upstreams each pool contributes at most.
    pub max_sources: Option<usize>,
    /// Shortest poll interval, log2 seconds.
    pub min_poll: Option<i8>,
    /// Longest poll interval, log2 seconds.
    pub max_poll: Option<i8>,
    /// Step threshold, seconds.
    pub step_threshold: Option<f64>,
    /// Holdover, seconds.
    pub holdover: Option<f64>,
    /// CA certificates (PEM) trusted for `nts://` upstreams.
    pub nts_ca_file: Option<PathBuf>,
}

/// How an upstream is polled, read from how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind<'a> {
    /// `HOST[:PORT]`: plain NTP, port 123 by default.
    Ntp(&'a str),
    /// `nts://HOST[:PORT]`: NTS (RFC 8915); the `HOST[:PORT]` of its
    /// NTS-KE server, port 4460 by default.
    Nts(&'a str),
}

impl<'a> UpstreamKind<'a> {
    /// The scheme that marks an NTS upstream.
    pub const NTS_SCHEME: &'static str = crate::sources::NTS_SCHEME;

    /// The kind of upstream `spec` names.
    #[must_use]
    pub fn of(spec: &'a str) -> Self {
        match spec.strip_prefix(Self::NTS_SCHEME) {
            Some(key_exchange) => Self::Nts(key_exchange),
            None => Self::Ntp(spec),
        }
    }
}

/// Is `text` something a source can be: a name, then options ([`Spec::parse`])?
/// (A bad name is refused at once rather than retried for ever.)
pub fn check_name(text: &str, kind: Kind) -> Result<(), String> {
    let spec = Spec::parse(text, kind)?;
    let name = spec.name.as_str();
    match (UpstreamKind::of(name), kind) {
        (UpstreamKind::Nts(key_exchange), Kind::Server) => {
            ntp_client::target::Target::parse_with_default_port(key_exchange, ntp_proto::nts::DEFAULT_KE_PORT).map(drop)
        }
        (UpstreamKind::Nts(_), Kind::Pool) => return Err(format!("`{name}`: pools are plain NTP")),
        (UpstreamKind::Ntp(host), _) => host.parse::<ntp_client::target::Target>().map(drop),
    }
    .map_err(|e| format!("`{name}`: {e}"))
}

/// How the daemon synchronizes to upstreams (empty: a primary server).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Upstream servers, `HOST[:PORT]`.
    pub upstreams: Vec<String>,
    /// Pools, `NAME[:PORT]`.
    pub pools: Vec<String>,
    /// Upstreams each pool contributes at most (default 4).
    pub max_sources: usize,
    /// Shortest poll interval, log2 seconds (default 6).
    pub min_poll: i8,
    /// Longest poll interval, log2 seconds (default 10).
    pub max_poll: i8,
    /// Step threshold, seconds (default 0.128).
    pub step_threshold: f64,
    /// Seconds without a usable upstream before going unsynchronized
    /// (default 3600).
    pub holdover: f64,
    /// CA certificates (PEM) trusted for `nts://` upstreams (default: the
    /// built-in Mozilla roots).
    pub nts_ca_file: Option<PathBuf>,
    /// How well the starting frequency is known (ppm), when a drift file
    /// gave it; set by the daemon, not by the file.
    pub frequency_known_ppm: Option<f64>,
    /// Reference clocks (gpsd's SHM segment or SOCK socket).
    pub refclocks: Vec<RefclockConfig>,
}

impl Default for SyncConfig {
    /// The discipline's and the system process's own defaults (`ntp-proto`).
    fn default() -> Self {
        let system = SystemConfig::default();
        Self {
            upstreams: Vec::new(),
            pools: Vec::new(),
            max_sources: DEFAULT_MAX_SOURCES,
            min_poll: system.discipline.min_poll,
            max_poll: system.discipline.max_poll,
            step_threshold: system.discipline.step_threshold.to_seconds_f64(),
            holdover: system.holdover.to_seconds_f64(),
            nts_ca_file: None,
            frequency_known_ppm: None,
            refclocks: Vec::new(),
        }
    }
}

impl SyncConfig {
    fn merge(file: SyncSection, args: &SyncSection) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let upstreams = if args.upstreams.is_empty() { file.upstreams } else { args.upstreams.clone() };
        let min_poll = args.min_poll.or(file.min_poll).unwrap_or(defaults.min_poll);
        let max_poll = args.max_poll.or(file.max_poll).unwrap_or(defaults.max_poll.max(min_poll));
        let polls = (-4..=17).contains(&min_poll) && (-4..=17).contains(&max_poll) && min_poll <= max_poll;
        ensure(polls, "sync.min-poll", || {
            format!("min-poll {min_poll} and max-poll {max_poll} must be in -4..=17, min <= max")
        })?;
        let step_threshold = args.step_threshold.or(file.step_threshold).unwrap_or(defaults.step_threshold);
        ensure(step_threshold.is_finite() && step_threshold > 0.0, "sync.step-threshold", || {
            format!("{step_threshold} is not a positive number of seconds")
        })?;
        let holdover = args.holdover.or(file.holdover).unwrap_or(defaults.holdover);
        ensure(holdover.is_finite() && holdover > 0.0, "sync.holdover", || {
            format!("{holdover} is not a positive number of seconds")
        })?;
        if let Some(bad) = upstreams.iter().find(|u| u.trim().is_empty()) {
            return Err(invalid("sync.upstreams", format!("`{bad}` is not HOST[:PORT]")));
        }
        for upstream in &upstreams {
            check_name(upstream, Kind::Server).map_err(|reason| invalid("sync.upstreams", reason))?;
        }
        let pools = if args.pools.is_empty() { file.pools } else { args.pools.clone() };
        for pool in &pools {
            check_name(pool, Kind::Pool).map_err(|reason| invalid("sync.pools", reason))?;
        }
        let max_sources = args.max_sources.or(file.max_sources).unwrap_or(DEFAULT_MAX_SOURCES);
        ensure((1..=MAX_MAX_SOURCES).contains(&max_sources), "sync.max-sources", || {
            format!("{max_sources} is not 1-{MAX_MAX_SOURCES}")
        })?;
        let nts_ca_file = args.nts_ca_file.clone().or(file.nts_ca_file);
        Ok(Self {
            upstreams,
            pools,
            max_sources,
            min_poll,
            max_poll,
            step_threshold,
            holdover,
            nts_ca_file,
            frequency_known_ppm: None,
            refclocks: Vec::new(),
        })
    }

    /// True when there is nothing to synchronize to: a primary server on
    /// its host's clock (a reference clock is something to synchronize to).
    #[must_use]
    pub fn is_primary(&self) -> bool {
        self.upstreams.is_empty() && self.pools.is_empty() && self.refclocks.is_empty()
    }
}

impl ControlConfig {
    fn merge(file: ControlSection, args: &ControlSection) -> Option<Self> {
        if args.enabled.or(file.enabled) == Some(false) {
            return None;
        }
        match args.socket.clone().or(file.socket) {
            Some(socket) => Some(Self { socket, default_path: false }),
            None => Some(Self { socket: DEFAULT_CONTROL_SOCKET.into(), default_path: true }),
        }
    }
}

/// `[server]`: where to listen and what to advertise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServerSection {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Port on every address, when `listen` is empty.
    pub port: Option<u16>,
    /// Stratum as a primary server.
    pub stratum: Option<u8>,
    /// Reference ID as a primary server.
    pub refid: Option<String>,
    /// Initial offset of the virtual clock, seconds.
    pub clock_offset: Option<f64>,
    /// Frequency error of the virtual clock, ppm.
    pub clock_drift_ppm: Option<f64>,
    /// Log level or filter.
    pub log_level: Option<String>,
    /// Address for `/status` and `/metrics` over HTTP.
    pub http: Option<SocketAddr>,
    /// Directory for the statistics logs.
    pub stats_dir: Option<PathBuf>,
    /// The leap-seconds.list leaps are taken from (else the upstreams' majority).
    pub leap_file: Option<PathBuf>,
    /// Smear each leap over a window of this many seconds instead of
    /// stepping (clients of a smearing server must all be on smearing servers).
    pub leap_smear: Option<u32>,
    /// User to become after binding (when started as root).
    pub user: Option<String>,
    /// Receive buffer asked for on each socket, bytes.
    pub receive_buffer: Option<usize>,
    /// NTS: the certificate chain (PEM).
    pub nts_cert: Option<PathBuf>,
    /// NTS: its private key (PEM).
    pub nts_key: Option<PathBuf>,
    /// NTS: where NTS-KE listens.
    pub nts_listen: Option<SocketAddr>,
    /// NTS: the NTP port NTS-KE tells clients to use (default: the one served on).
    pub nts_ntp_port: Option<u16>,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// These addresses.
    Addresses(Vec<SocketAddr>),
    /// This port on every address.
    EveryAddress(u16),
}

/// Everything `ntpd-sim serve` runs with, after merging file and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: Listen,
    /// Stratum advertised (a primary server).
    pub stratum: Stratum,
    /// Reference ID advertised.
    pub reference_id: ReferenceId,
    /// Initial offset of the virtual clock from the system clock, seconds.
    pub clock_offset: f64,
    /// Frequency error of the virtual clock, ppm.
    pub clock_drift_ppm: f64,
    /// Log filter given by flag or file, if any (the binary puts `RUST_LOG`
    /// between the two).
    pub log_level: Option<String>,
    /// User to become once the sockets are bound, if any.
    pub user: Option<String>,
    /// Receive buffer asked for on each socket, bytes (set while the
    /// daemon still has its privileges, so root may exceed `rmem_max`).
    pub receive_buffer: usize,
    /// Access lists and rate limit.
    pub policy: PolicyConfig,
    /// Upstreams and the discipline's settings.
    pub sync: SyncConfig,
    /// Where to serve `/status` and `/metrics` (None: no HTTP).
    pub http: Option<SocketAddr>,
    /// Where to write `loopstats` and `peerstats` (None: nowhere).
    pub stats_dir: Option<PathBuf>,
    /// The leap-seconds.list leaps are taken from (None: the upstreams'
    /// majority, or no leaps for a primary).
    pub leap_file: Option<PathBuf>,
    /// How leaps are served: stepped at midnight, or smeared.
    pub leap_mode: LeapMode,
    /// NTS (None: plain NTP only).
    pub nts: Option<NtsConfig>,
    /// The control socket (None: none).
    pub control: Option<ControlConfig>,
    /// Which clock is served and disciplined.
    pub clock: ClockConfig,
}

/// Why the configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key; the
    /// message names the key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, with the line and the key.
        message: String,
    },
    /// A value out of range.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key as in the file, `section.key`, or the section alone
        /// (`rate-limit`) when the problem is a combination of its keys.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    /// Parses config text; the error message names the offending key.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }
}

impl ServeConfig {
    /// Loads the config file (if any) and applies the overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(file, overrides)
    }

    /// Overrides beat the file; what neither gives takes its default.
    pub fn merge(file: FileConfig, overrides: &Overrides) -> Result<Self, ConfigError> {
        let server = file.server;
        let args = &overrides.server;
        let listen = listen(args, &server)?;
        let stratum = args.stratum.or(server.stratum).unwrap_or(1);
        ensure((1..=15).contains(&stratum), "server.stratum", || format!("{stratum} is not 1-15"))?;
        let refid = args.refid.clone().or_else(|| server.refid.clone()).unwrap_or_else(|| "LOCL".into());
        let reference_id = ReferenceId::from_code(&refid)
            .ok_or_else(|| invalid("server.refid", format!("`{refid}` is not 1-4 ASCII characters")))?;
        let clock_offset = args.clock_offset.or(server.clock_offset).unwrap_or(0.0);
        ensure(clock_offset.is_finite() && clock_offset.abs() <= 1e9, "server.clock-offset", || {
            format!("{clock_offset} is not a sensible number of seconds")
        })?;
        let clock_drift_ppm = args.clock_drift_ppm.or(server.clock_drift_ppm).unwrap_or(0.0);
        ensure(clock_drift_ppm.is_finite() && clock_drift_ppm.abs() < 100_000.0, "server.clock-drift-ppm", || {
            format!("{clock_drift_ppm} is not within ±100000 ppm")
        })?;
        let receive_buffer = args.receive_buffer.or(server.receive_buffer).unwrap_or(ntp_udp::RECEIVE_BUFFER);
        ensure((MIN_RECEIVE_BUFFER..=MAX_RECEIVE_BUFFER).contains(&receive_buffer), "server.receive-buffer", || {
            format!("{receive_buffer} is not {MIN_RECEIVE_BUFFER}-{MAX_RECEIVE_BUFFER} bytes")
        })?;
        let nts = nts(args, &server)?;
        check_rate_limit(&file.rate_limit)?;
        let leap_file = args.leap_file.clone().or(server.leap_file);
        let mut sync = SyncConfig::merge(file.sync, &overrides.sync)?;
        sync.refclocks = refclock::merge(&file.refclock, &overrides.refclocks)?;
        let leap_mode = leap_mode(args.leap_smear.or(server.leap_smear), leap_file.is_some(), !sync.is_primary())?;
        let simulated_error = clock_offset != 0.0 || clock_drift_ppm != 0.0;
        let smeared = matches!(leap_mode, LeapMode::Smear(_));
        let clock = ClockConfig::merge(file.clock, &overrides.clock, simulated_error, sync.is_primary(), smeared)?;
        Ok(Self {
            listen,
            stratum: Stratum(stratum),
            reference_id,
            clock_offset,
            clock_drift_ppm,
            log_level: args.log_level.clone().or(server.log_level),
            user: args.user.clone().or(server.user),
            receive_buffer,
            policy: PolicyConfig { access: file.access, rate_limit: file.rate_limit },
            sync,
            http: args.http.or(server.http),
            stats_dir: args.stats_dir.clone().or(server.stats_dir),
            leap_file,
            leap_mode,
            nts,
            control: ControlConfig::merge(file.control, &overrides.control),
            clock,
        })
    }
}

/// How leaps are served: stepped, or smeared over `smear` seconds. A smear
/// starts half its window before the leap, and upstreams announce a leap
/// only from the start of its last day, so a smear over more than a day
/// needs a leap file on a server with upstreams.
fn leap_mode(smear: Option<u32>, leap_file: bool, upstreams: bool) -> Result<LeapMode, ConfigError> {
    let Some(window) = smear else { return Ok(LeapMode::Step) };
    let smear = LeapSmear::new(window).map_err(|e| invalid("server.leap-smear", e.to_string()))?;
    ensure(leap_file || !upstreams || window <= SECONDS_PER_DAY, "server.leap-smear", || {
        format!(
            "a smear of {window} s starts {} s before the leap; upstreams announce a leap only on its last day, \
             so it could be learned after the smear began: give leap-file too, or at most {SECONDS_PER_DAY}",
            window / 2
        )
    })?;
    Ok(LeapMode::Smear(smear))
}

/// Where to listen: the flags' addresses or port, else the file's.
fn listen(args: &ServerSection, file: &ServerSection) -> Result<Listen, ConfigError> {
    if !args.listen.is_empty() {
        Ok(Listen::Addresses(args.listen.clone()))
    } else if let Some(port) = args.port {
        Ok(Listen::EveryAddress(port))
    } else if !file.listen.is_empty() {
        ensure(file.port.is_none(), "server.port", || "give either listen or port, not both".into())?;
        Ok(Listen::Addresses(file.listen.clone()))
    } else {
        Ok(Listen::EveryAddress(file.port.unwrap_or(DEFAULT_PORT)))
    }
}

/// NTS, if both a certificate and its key are given (a listening address
/// alone is an error too).
fn nts(args: &ServerSection, file: &ServerSection) -> Result<Option<NtsConfig>, ConfigError> {
    let listen = args.nts_listen.or(file.nts_listen);
    let ntp_port = args.nts_ntp_port.or(file.nts_ntp_port);
    ensure(ntp_port != Some(0), "server.nts-ntp-port", || "the NTP port must be 1-65535".into())?;
    match (args.nts_cert.clone().or(file.nts_cert.clone()), args.nts_key.clone().or(file.nts_key.clone())) {
        (Some(cert), Some(key)) => {
            Ok(Some(NtsConfig { cert, key, listen: listen.unwrap_or(DEFAULT_NTS_LISTEN), ntp_port }))
        }
        (None, None) if listen.is_none() && ntp_port.is_none() => Ok(None),
        (None, None) => {
            Err(invalid("server.nts-cert", "nts-listen and nts-ntp-port need NTS: give nts-cert and nts-key".into()))
        }
        _ => Err(invalid("server.nts-cert", "NTS needs both nts-cert and nts-key".into())),
    }
}

/// `[rate-limit]`'s values, when it is enabled.
fn check_rate_limit(rate: &RateLimitConfig) -> Result<(), ConfigError> {
    if !rate.enabled {
        return Ok(());
    }
    let seconds = |value: f64, least: f64| value.is_finite() && value >= least && value <= MAX_RATE_SECONDS;
    ensure(seconds(rate.interval, MIN_RATE_INTERVAL) && seconds(rate.kiss_interval, 0.0), "rate-limit", || {
        format!("interval must be {MIN_RATE_INTERVAL}-{MAX_RATE_SECONDS} s and kiss-interval 0-{MAX_RATE_SECONDS} s")
    })?;
    ensure(rate.burst != 0 && (1..=MAX_RATE_TABLE).contains(&rate.table_size), "rate-limit", || {
        format!("burst must be at least 1 and table-size 1-{MAX_RATE_TABLE}")
    })
}

/// `Ok` if `ok`, else the error of `key` with `reason()`.
fn ensure(ok: bool, key: &'static str, reason: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, reason()))
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenyAction;

    const EXAMPLE: &str = include_str!("../../../../config/ntpd-sim.toml");

    #[test]
    fn the_annotated_example_parses() {
        let file = FileConfig::parse(EXAMPLE).unwrap();
        let config = ServeConfig::merge(file, &Overrides::default()).unwrap();
        assert_eq!(config.stratum, Stratum(1));
        assert_eq!(config.reference_id, ReferenceId(*b"LOCL"));
    }

    #[test]
    fn nts_needs_both_certificate_and_key_and_flags_override_the_file() {
        let file = FileConfig::parse(
            "[server]\nnts-cert = \"a.crt\"\nnts-key = \"a.key\"\n[sync]\nnts-ca-file = \"ca.crt\"\n",
        )
        .unwrap();
        let config = ServeConfig::merge(file.clone(), &Overrides::default()).unwrap();
        let nts = config.nts.unwrap();
        assert_eq!((nts.cert, nts.key, nts.listen), ("a.crt".into(), "a.key".into(), DEFAULT_NTS_LISTEN));
        assert_eq!(config.sync.nts_ca_file, Some("ca.crt".into()));
        let listen: SocketAddr = "127.0.0.1:4461".parse().unwrap();
        let args = Overrides {
            server: ServerSection { nts_listen: Some(listen), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(ServeConfig::merge(file, &args).unwrap().nts.unwrap().listen, listen);
        let half = FileConfig::parse("[server]\nnts-cert = \"a.crt\"\n").unwrap();
        let err = ServeConfig::merge(half, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nts-key"), "{err}");
        assert_eq!(ServeConfig::merge(FileConfig::default(), &Overrides::default()).unwrap().nts, None);
    }

    #[test]
    fn the_advertised_ntp_port_comes_from_the_file_or_the_flag_and_needs_nts() {
        let file =
            FileConfig::parse("[server]\nnts-cert = \"a.crt\"\nnts-key = \"a.key\"\nnts-ntp-port = 1230\n").unwrap();
        assert_eq!(ServeConfig::merge(file.clone(), &Overrides::default()).unwrap().nts.unwrap().ntp_port, Some(1230));
        let args = Overrides {
            server: ServerSection { nts_ntp_port: Some(4123), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(ServeConfig::merge(file, &args).unwrap().nts.unwrap().ntp_port, Some(4123));
        let alone = FileConfig::parse("[server]\nnts-ntp-port = 1230\n").unwrap();
        let err = ServeConfig::merge(alone, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nts-ntp-port need NTS"), "{err}");
        let zero =
            FileConfig::parse("[server]\nnts-cert = \"a.crt\"\nnts-key = \"a.key\"\nnts-ntp-port = 0\n").unwrap();
        let err = ServeConfig::merge(zero, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nts-ntp-port"), "{err}");
    }

    #[test]
    fn a_typo_is_rejected_with_the_key_named() {
        let err = FileConfig::parse("[server]\nstratun = 2\n").unwrap_err();
        assert!(err.contains("stratun"), "{err}");
        let err = FileConfig::parse("[rate-limit]\nburts = 2\n").unwrap_err();
        assert!(err.contains("burts"), "{err}");
        let err = FileConfig::parse("[acces]\n").unwrap_err();
        assert!(err.contains("acces"), "{err}");
        let err = FileConfig::parse("[access]\ndeny = [\"10.0.0.0/99\"]\n").unwrap_err();
        assert!(err.contains("10.0.0.0/99"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse(
            "[server]\nlisten = [\"127.0.0.1:1234\"]\nstratum = 3\nrefid = \"GPS\"\nclock-offset = 1.5\n\
             [access]\ndeny-action = \"drop\"\ndeny = [\"10.0.0.0/8\"]\n[rate-limit]\nenabled = true\nburst = 2\n",
        )
        .unwrap();
        let merged = ServeConfig::merge(file.clone(), &Overrides::default()).unwrap();
        assert_eq!(merged.listen, Listen::Addresses(vec!["127.0.0.1:1234".parse().unwrap()]));
        assert_eq!((merged.stratum, merged.clock_offset), (Stratum(3), 1.5));
        assert_eq!(merged.policy.access.deny_action, DenyAction::Drop);
        assert_eq!(merged.policy.rate_limit.burst, 2);
        let args = Overrides {
            server: ServerSection {
                port: Some(12300),
                stratum: Some(2),
                clock_offset: Some(-3.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = ServeConfig::merge(file, &args).unwrap();
        assert_eq!(merged.listen, Listen::EveryAddress(12300));
        assert_eq!((merged.stratum, merged.clock_offset), (Stratum(2), -3.0));
    }

    #[test]
    fn sync_settings_merge_and_are_checked() {
        let file = FileConfig::parse("[sync]\nupstreams = [\"a:1\", \"b\"]\nmin-poll = 0\nmax-poll = 2\n").unwrap();
        let merged = ServeConfig::merge(file.clone(), &Overrides::default()).unwrap();
        assert_eq!(merged.sync.upstreams, ["a:1", "b"]);
        assert_eq!((merged.sync.min_poll, merged.sync.max_poll), (0, 2));
        let args = Overrides {
            sync: SyncSection { upstreams: vec!["c:3".into()], step_threshold: Some(1.0), ..Default::default() },
            ..Default::default()
        };
        let merged = ServeConfig::merge(file, &args).unwrap();
        assert_eq!(merged.sync.upstreams, ["c:3"]);
        assert_eq!(merged.sync.step_threshold, 1.0);
        let err = FileConfig::parse("[sync]\nupstream = [\"a\"]\n").unwrap_err();
        assert!(err.contains("upstream"), "{err}");
        let bad = Overrides {
            sync: SyncSection { min_poll: Some(5), max_poll: Some(2), ..Default::default() },
            ..Default::default()
        };
        assert!(ServeConfig::merge(FileConfig::default(), &bad).is_err());
    }

    #[test]
    fn values_out_of_range_are_refused() {
        for args in [
            Overrides { server: ServerSection { stratum: Some(16), ..Default::default() }, ..Default::default() },
            Overrides {
                server: ServerSection { refid: Some("TOOLONG".into()), ..Default::default() },
                ..Default::default()
            },
            Overrides {
                server: ServerSection { clock_offset: Some(f64::NAN), ..Default::default() },
                ..Default::default()
            },
            Overrides {
                server: ServerSection { receive_buffer: Some(MIN_RECEIVE_BUFFER - 1), ..Default::default() },
                ..Default::default()
            },
            Overrides {
                server: ServerSection { receive_buffer: Some(MAX_RECEIVE_BUFFER + 1), ..Default::default() },
                ..Default::default()
            },
        ] {
            assert!(ServeConfig::merge(FileConfig::default(), &args).is_err(), "{args:?}");
        }
        for rate_limit in [
            "interval = 0.0",
            "interval = 1e-7",
            "interval = nan",
            "kiss-interval = inf",
            "kiss-interval = -1.0",
            "burst = 0",
            "table-size = 0",
            "table-size = 1000000000000",
        ] {
            let file = FileConfig::parse(&format!("[rate-limit]\nenabled = true\n{rate_limit}\n")).unwrap();
            assert!(ServeConfig::merge(file, &Overrides::default()).is_err(), "{rate_limit}");
        }
        let defaults = ServeConfig::merge(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(defaults.listen, Listen::EveryAddress(DEFAULT_PORT));
        assert_eq!(defaults.receive_buffer, ntp_udp::RECEIVE_BUFFER);
    }

    #[test]
    fn pools_max_sources_and_the_control_socket_merge_and_are_checked() {
        let file = FileConfig::parse(
            "[sync]\npools = [\"pool.example:1234\"]\nmax-sources = 6\n[control]\nsocket = \"/tmp/c.sock\"\n",
        )
        .unwrap();
        let merged = ServeConfig::merge(file.clone(), &Overrides::default()).unwrap();
        assert_eq!(
            (merged.sync.pools.as_slice(), merged.sync.max_sources),
            (&["pool.example:1234".to_string()][..], 6)
        );
        assert!(!merged.sync.is_primary());
        assert_eq!(merged.control, Some(ControlConfig { socket: "/tmp/c.sock".into(), default_path: false }));
        let off =
            Overrides { control: ControlSection { enabled: Some(false), ..Default::default() }, ..Default::default() };
        assert_eq!(ServeConfig::merge(file, &off).unwrap().control, None);
        let defaults = ServeConfig::merge(FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(defaults.sync.max_sources, DEFAULT_MAX_SOURCES);
        assert_eq!(defaults.control.map(|c| c.default_path), Some(true));
        for bad in ["[sync]\nmax-sources = 0\n", "[sync]\nmax-sources = 17\n", "[sync]\npools = [\"nts://x\"]\n"] {
            let file = FileConfig::parse(bad).unwrap();
            let err = ServeConfig::merge(file, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("sync."), "{bad}: {err}");
        }
        let err = FileConfig::parse("[control]\nsockt = \"x\"\n").unwrap_err();
        assert!(err.contains("sockt"), "{err}");
    }

    #[test]
    fn an_upstream_is_nts_by_its_scheme() {
        assert_eq!(UpstreamKind::of("nts://time.example:4461"), UpstreamKind::Nts("time.example:4461"));
        assert_eq!(UpstreamKind::of("time.example"), UpstreamKind::Ntp("time.example"));
        assert_eq!(UpstreamKind::of("[::1]:123"), UpstreamKind::Ntp("[::1]:123"));
    }

    #[test]
    fn every_invalid_key_names_its_section() {
        let server = |server: ServerSection| Overrides { server, ..Default::default() };
        for overrides in [
            server(ServerSection { stratum: Some(16), ..Default::default() }),
            server(ServerSection { refid: Some("TOOLONG".into()), ..Default::default() }),
            server(ServerSection { clock_offset: Some(f64::NAN), ..Default::default() }),
            server(ServerSection { clock_drift_ppm: Some(1e6), ..Default::default() }),
            server(ServerSection { receive_buffer: Some(1), ..Default::default() }),
            server(ServerSection { nts_cert: Some("a.crt".into()), ..Default::default() }),
            Overrides { sync: SyncSection { holdover: Some(-1.0), ..Default::default() }, ..Default::default() },
        ] {
            let Err(ConfigError::Invalid { key, .. }) = ServeConfig::merge(FileConfig::default(), &overrides) else {
                panic!("{overrides:?} is refused");
            };
            let (section, name) = key.split_once('.').unwrap_or((key, ""));
            assert!(["server", "sync"].contains(&section) && !name.is_empty(), "{key}");
        }
        let file = FileConfig::parse("[rate-limit]\nenabled = true\nburst = 0\n").unwrap();
        let err = ServeConfig::merge(file, &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { key: "rate-limit", .. }), "{err}");
    }

    #[test]
    fn the_receive_buffer_comes_from_the_file_or_the_flag() {
        let file = FileConfig::parse("[server]\nreceive-buffer = 65536\n").unwrap();
        assert_eq!(ServeConfig::merge(file.clone(), &Overrides::default()).unwrap().receive_buffer, 65536);
        let args = Overrides {
            server: ServerSection { receive_buffer: Some(1 << 24), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(ServeConfig::merge(file, &args).unwrap().receive_buffer, 1 << 24);
    }
}
