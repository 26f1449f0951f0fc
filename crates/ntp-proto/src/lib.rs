//! The NTP protocol core: RFC 5905 wire format, on-wire math and clock
//! algorithms, as pure code.
//!
//! This crate performs no I/O and never reads a clock. Every function that
//! needs the time is handed it, so the same code serves the daemon, the
//! deterministic simulator and fast tests (see `shared/STYLE.md`).
//!
//! # Layout
//! - [`time`]: NTP timestamps, the short format, signed durations and all
//!   conversions to `chrono`, `SystemTime` and `f64`.
//! - [`packet`]: the 48-byte header, extension fields and MAC; `decode`
//!   and `encode`.
//! - [`exchange`]: the four timestamps, offset and delay, a sample's
//!   dispersion, and the checks that make a reply usable.
//! - [`clock`]: the `Clock` trait and the virtual clock, a pure map from
//!   the underlying clock to a disciplined one.
//! - [`filter`]: the 8-stage clock filter of one server (RFC 5905 §10).
//! - [`discipline`]: the regression-based controller that steers a virtual
//!   clock's phase and frequency.
//! - [`selection`]: root distance, and the intersection, cluster and
//!   combine algorithms that pick which servers to trust.
//! - [`association`]: one upstream server: reachability, poll schedule,
//!   burst, kiss-o'-death handling and its clock filter (RFC 5905 §9, §13).
//! - [`system`]: the system process: selection, system peer, clock update
//!   and what the server advertises (RFC 5905 §11).
//! - [`synchronizer`]: the client half of a daemon as one sans-IO object
//!   (associations + system + disciplined clock), driven by the daemon's
//!   sockets or the simulator's event queue alike.
//! - [`nts`]: Network Time Security (RFC 8915): NTS-KE records, the NTS
//!   extension fields, the AEAD and the server's cookies.
//! - [`request`]: a client's request in flight and the one check of its
//!   reply (source, decode, NTS hook, origin, usable time), for the query
//!   tool, the daemon and the simulator alike.
//! - [`responder`]: the server's decision for one datagram (ignore, or
//!   reply with these bytes), in basic or interleaved mode.
//! - [`interleave`]: interleaved mode: the server's memory of the replies
//!   it sent and when they left, and the client's of its last exchange.
//! - [`refclock`]: reference clocks: the NTP shared-memory segment and
//!   chrony's SOCK datagram decoded, readings reduced to samples, PPS locking.
//! - [`leap`]: leap seconds: the `leap-seconds.list` file, the announcement
//!   window, the upstream vote, and stepped or smeared served time.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

pub mod association;
pub mod clock;
pub mod discipline;
pub mod exchange;
pub mod filter;
pub mod interleave;
pub mod leap;
pub mod nts;
pub mod packet;
pub mod refclock;
pub mod request;
pub mod responder;
pub mod selection;
pub mod synchronizer;
pub mod system;
pub mod time;

pub use exchange::{validate_reply, ReplyError, Sample, Timestamps};
pub use packet::{DecodeError, Header, Packet};
pub use time::{NtpDuration, NtpShort, NtpTimestamp};
