//! The ntpd-sim daemon.
//!
//! # Layout
//! - [`simulate`]: deterministic simulation of NTP hierarchies with the
//!   daemon's own algorithms.
//! - [`plot`]: SVG plots of time series.

pub mod plot;
pub mod simulate;
