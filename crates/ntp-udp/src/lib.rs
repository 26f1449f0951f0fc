//! ntp-udp: where NTP meets the operating system. Timestamped UDP sockets
//! (kernel receive and transmit timestamps, the error queue), batched
//! datagram I/O (recvmmsg/sendmmsg) with destination addresses, the host's
//! real-time clock and its precision, and dropping root after binding.
//! The daemon, `ntp-query` and `ntp-loadgen` all talk to the kernel through
//! it, as quinn does through quinn-udp.
//!
//! This is the workspace's only crate with `unsafe` code: libc calls, each
//! with its `SAFETY` reasoning. Every control message is read only after
//! its `cmsg_len` says the payload fits.
//!
//! # Layout
//! - [`socket`]: socket options (timestamps, pktinfo, buffer sizing) through
//!   one `setsockopt` wrapper, and `poll` for readiness.
//! - `sockaddr` (private): `SocketAddr` to and from `sockaddr_storage`.
//! - `control` (private): the control-message walk (timestamps, pktinfo)
//!   and writing the source address of a reply.
//! - [`recv`] and [`send`]: a batch of datagrams in one `recvmmsg` or
//!   `sendmmsg` call, for the serving threads and the load generator.
//! - [`errqueue`]: a serving socket's transmit timestamps, numbered by
//!   datagram, read in batches from the error queue.
//! - [`bind`]: binding listening addresses and readying a serving socket.
//! - [`timestamped`]: a tokio socket whose datagrams carry kernel receive
//!   timestamps and whose sends report kernel transmit timestamps, for one
//!   exchange at a time (the query tool, the daemon's upstreams).
//! - [`system_clock`]: [`SystemClock`], CLOCK_REALTIME as an
//!   `ntp_proto::clock::Clock`, and the one measurement of its precision.
//! - [`kernel_clock`]: the kernel's clock discipline (`clock_adjtime`):
//!   read by anyone, written (frequency, step, status, leap flags) only
//!   through a handle a process with CAP_SYS_TIME can open.
//! - [`lock_file`]: an exclusive `flock` on a file, released when the
//!   process ends however it ends (one `--clock system` daemon at a time).
//! - [`shm`]: the SysV shared-memory segment of an NTP SHM reference
//!   clock (gpsd's), attached and read with volatile loads.
//! - [`privileges`]: becoming an unprivileged user after binding.
//! - [`signal`]: the future that ends at SIGINT or SIGTERM.

// The workspace denies unsafe code; this crate is where it is allowed.
#![allow(unsafe_code)]
#![warn(missing_docs)]

mod control;
mod sockaddr;

pub mod bind;
pub mod errqueue;
pub mod kernel_clock;
pub mod lock_file;
pub mod privileges;
pub mod recv;
pub mod send;
pub mod shm;
pub mod signal;
pub mod socket;
pub mod system_clock;
pub mod timestamped;

pub use bind::{bind_all, bind_every_address, prepare, READ_TIMEOUT, RECEIVE_BUFFER};
pub use errqueue::{disable_transmit_timestamps, enable_numbered_transmit_timestamps, TransmitQueue, TransmitStamp};
pub use recv::{Datagram, RecvBatch};
pub use send::SendBatch;
pub use socket::{
    enable_destination_info, enable_receive_timestamps, enable_transmit_timestamps, set_receive_buffer, wait_readable,
    MAX_DATAGRAM,
};
pub use system_clock::{measure_precision, SystemClock};
pub use timestamped::TimestampedSocket;
