//! Support for the end-to-end tests: finding the project's binaries,
//! starting real processes (ours and peers such as chronyd) on free loopback
//! ports, and stopping exactly the processes a test started.
//!
//! The binaries are the ones `cargo test --workspace` builds for the
//! integration tests of `ntp-daemon`, `ntp-client` and `ntp-tools` (target/debug). A
//! missing peer (chronyd, ntplib, tshark) is a failure with a message, never
//! a silent skip: `.ci/run` installs them (see `shared/PEERS.md`).

pub mod chain;
pub mod gps;
pub mod leap;
pub mod netns;
pub mod nts;
pub mod peers;
pub mod process;
pub mod vm;

pub use process::{
    bin, free_tcp_port_on, free_udp_port, free_udp_port_on, log_field, ntp_query_entry, ntp_query_json, ntpd_sim_serve,
    ntpd_sim_status, require_root, udp_exchange, wait_for, Daemon, CLIENT_REQUEST,
};
