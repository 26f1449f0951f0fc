//! ntp-daemon: the `ntpd-sim` daemon as a library. It serves NTP over UDP
//! from a virtual clock (the host clock plus an offset and a frequency error
//! of its own, never written back) or, opt-in (`--clock system`), from the
//! host's clock disciplined through the kernel, with access lists and rate
//! limits, and synchronizes to upstreams. Sockets, the host clock and privileges come
//! from `ntp-udp`.
//!
//! # Layout
//! - [`cli`]: the command line (clap derive); `serve`'s flags fill
//!   [`config::Overrides`].
//! - [`config`]: the strict TOML file, its merge with the overrides, and
//!   `ntpd-sim validate` ([`config::validate`]).
//! - [`clock`]: the shared virtual clock ([`clock::SharedClock`]) replies are
//!   built from, swapped lock-free; the interface a discipline drives.
//! - [`leap`]: where leap seconds are learned (`--leap-file`, else the
//!   upstreams' majority) and handed to the clock's leap schedule.
//! - [`policy`]: access lists and per-client rate limiting, pure logic.
//! - [`serve`]: the serving threads; [`serve::run`] serves on sockets the
//!   caller bound (tests bind `127.0.0.1:0`) until a shutdown future ends.
//! - [`sent`]: a serving thread's replies matched with the kernel's
//!   transmit timestamps: the interleaved table and the send latency that
//!   basic replies' T3 is moved on by.
//! - [`stats`]: lock-free counters of what was received, answered, dropped.
//! - [`nts`]: NTS (RFC 8915) on the server: rotating cookie keys and the
//!   NTS-KE listener (TLS 1.3); NTS requests are answered by the serving threads.
//! - [`sources`]: which sources there are and how the set changes (pools,
//!   names retried until they resolve, members replaced), pure logic
//!   handed the time and DNS's answers.
//! - [`control`]: the control socket (Unix domain, owner-only) that
//!   `ntpd-sim sources` uses to list, add and remove sources.
//! - [`system_clock`]: `--clock system`: the kernel's clock made to follow
//!   the discipline's correction (frequency, slews, steps, status, leap
//!   flags, the drift file), and the checks before it is taken.
//! - [`sync`]: the upstream side: polls upstreams through `ntp-client`,
//!   drives `ntp_proto::synchronizer`, publishes the disciplined clock.
//! - [`refclock`]: reference clocks (gpsd's SHM segment, chrony SOCK
//!   sockets): driver tasks, readings kept until their poll, PPS locking.
//! - [`upstream_nts`]: an `nts://` upstream: NTS-KE, then NTS-protected polls.
//! - [`observe`]: the operations side: `/status`, `/metrics`, the HTTP
//!   server, statistics logs and `ntpd-sim plot`.
//! - [`daemon`]: `ntpd-sim serve` end to end: bind, start-up log, signals.
//! - [`demo`]: `ntpd-sim demo`, a stratum 1 -> 2 -> 3 chain in one process.
//!
//! `ntpd-sim simulate` is the `ntp-sim` crate. Deciding what to answer is
//! not done here: [`ntp_proto::responder`] does it, this crate carries the
//! decision out.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod leap;
pub mod nts;
pub mod observe;
pub mod policy;
pub mod refclock;
pub mod sent;
pub mod serve;
pub mod sources;
pub mod stats;
pub mod sync;
pub mod system_clock;
pub mod upstream_nts;

pub use clock::{ClockSnapshot, SharedClock};
pub use config::ServeConfig;
pub use serve::{run, PolicyConfig, Server};
