//! The daemon seen from outside: what it serves over HTTP and what it
//! writes to disk, read from the counters, the clock and the published
//! [`status::SyncStatus`] without touching the serving fast path.
//!
//! - [`status`]: the status report (`/status`, `ntpd-sim status`) and the
//!   [`status::SyncStatus`] the upstream side publishes.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`http`]: the HTTP server of `/status` and `/metrics`, and its client.
//! - [`statslog`]: `loopstats` and `peerstats` files, rotated.
//! - [`statsplot`]: `ntpd-sim plot`, those files drawn with `ntp-plot`.

pub mod http;
pub mod metrics;
pub mod statslog;
pub mod statsplot;
pub mod status;
