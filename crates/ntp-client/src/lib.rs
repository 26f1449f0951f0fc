//! The NTP client: one validated exchange with a server, a burst of them
//! reduced to one estimate, and the `ntp-query` tool built on top. Sockets
//! and the host clock come from `ntp-udp`.
//!
//! # Layout
//! - [`exchange`]: one request and its reply over an
//!   `ntp_udp::TimestampedSocket`, read against a given clock,
//!   validated, and turned into a [`Measurement`]. The daemon reuses it to
//!   poll its upstreams.
//! - [`interleaved`]: the memory of one server that interleaved exchanges
//!   share (the previous exchange, the nonces in flight).
//! - [`nts`]: NTS-KE over TLS 1.3 (RFC 8915 §4) and the session (keys,
//!   cookies) that NTS-protected exchanges use.
//! - [`query`]: a burst of exchanges with one address, reduced as the
//!   RFC 5905 clock filter does (lowest delay wins, jitter from the rest).
//! - [`target`]: the `SERVER` argument (`host`, `host:port`, `[v6]:port`)
//!   and its resolution to addresses.
//! - [`report`]: per-address results, the agreement between servers
//!   (RFC 5905 intersection), and their table and JSON forms.
//! - [`cli`]: `ntp-query`'s arguments and its library entry point, [`cli::run`].

#![forbid(unsafe_code)]

pub mod cli;
pub mod exchange;
pub mod interleaved;
pub mod nts;
pub mod query;
pub mod report;
pub mod target;

pub use exchange::{exchange, exchange_interleaved, ExchangeError, ExchangeOptions, Measurement};
pub use interleaved::InterleavedSession;
pub use query::{query, query_interleaved, query_nts, Estimate, QueryOptions};
