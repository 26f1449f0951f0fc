//! ntp-server: the `ntpd-sim` daemon as a library. It serves NTP over UDP
//! from a virtual clock (the host clock plus an offset and a frequency error
//! of its own, never written back), with access lists and rate limits.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive); `serve`'s flags in `ServeArgs`.
//! - [`config`]: the strict TOML file and its merge with the flags.
//! - [`clock`]: the shared virtual clock ([`clock::SharedClock`]) replies are
//!   built from, swapped lock-free; the interface a discipline drives.
//! - [`policy`]: access lists and per-client rate limiting, pure logic.
//! - [`udp`]: batched socket I/O with kernel receive timestamps; unsafe
//!   code (libc calls), in `udp::sys`.
//! - [`privileges`]: becoming an unprivileged user after binding; the only
//!   other unsafe code.
//! - [`serve`]: the serving threads; [`serve::run`] serves on sockets the
//!   caller bound (tests bind `127.0.0.1:0`) until a shutdown future ends.
//! - [`nts`]: NTS (RFC 8915) on the server: rotating cookie keys and the
//!   NTS-KE listener (TLS 1.3); NTS requests are answered by the serving threads.
//! - [`latency`]: measures the send latency that the serving threads add
//!   to T3, so the transmit timestamp is when the reply really leaves.
//! - [`stats`]: lock-free counters of what was received, answered, dropped.
//! - [`sync`]: the upstream side: polls upstreams through `ntp-client`,
//!   drives `ntp_proto::synchronizer`, publishes the disciplined clock.
//! - [`upstream_nts`]: an `nts://` upstream: NTS-KE, then NTS-protected polls.
//! - [`daemon`]: `ntpd-sim serve` end to end: bind, start-up log, signals.
//! - [`status`]: the status report (`/status`, `ntpd-sim status`).
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`http`]: the HTTP server of `/status` and `/metrics`, and its client.
//! - [`statslog`]: `loopstats` and `peerstats` files, rotated.
//! - [`statsplot`]: `ntpd-sim plot`, those files drawn with [`plot`].
//! - [`validate`]: `ntpd-sim validate`, every problem of a config file.
//! - [`demo`]: `ntpd-sim demo`, a stratum 1 -> 2 -> 3 chain in one process.
//! - [`simulate`]: `ntpd-sim simulate`, NTP hierarchies in simulated time
//!   through the same `ntp-proto` code the daemon runs.
//! - [`plot`]: SVG plots of time series, for the simulator and for
//!   statistics logs.
//!
//! Deciding what to answer is not done here: [`ntp_proto::responder`] does
//! it, this crate carries the decision out.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod nts;
pub mod plot;
pub mod policy;
pub mod privileges;
pub mod serve;
pub mod simulate;
pub mod stats;
pub mod statslog;
pub mod statsplot;
pub mod status;
pub mod sync;
pub mod udp;
pub mod upstream_nts;
pub mod validate;

pub use clock::{ClockSnapshot, SharedClock};
pub use config::ServeConfig;
pub use serve::{run, PolicyConfig, Server};
