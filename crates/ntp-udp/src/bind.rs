//! Binding the listening addresses and readying a socket for a serving
//! thread (kernel receive timestamps, destination addresses, a read
//! timeout to notice shutdown).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::socket::{enable_destination_info, enable_receive_timestamps};

/// How long a serving thread blocks in one receive before it looks at the
/// shutdown flag again.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Receive buffer asked for unless configured: room for some ten thousand
/// queued requests on loopback (each costs about 830 bytes of buffer), so
/// a serving thread kept off its core for tens of milliseconds loses none.
/// Without CAP_NET_ADMIN the kernel caps it at `net.core.rmem_max`. Kernel
/// memory, used only while requests wait; not the process's RSS.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Makes a bound socket ready for a serving thread: kernel receive
/// timestamps on, destination addresses reported if it is bound to a
/// wildcard address (so replies leave from the address the client asked),
/// and a read timeout so the thread notices shutdown. The receive buffer is
/// the binder's business ([`crate::set_receive_buffer`]), done while it may still
/// have the privilege to exceed `rmem_max`.
pub fn prepare(socket: &UdpSocket) -> io::Result<()> {
    enable_receive_timestamps(socket)?;
    let local = socket.local_addr()?;
    if local.ip().is_unspecified() {
        enable_destination_info(socket, local.is_ipv6())?;
    }
    socket.set_read_timeout(Some(READ_TIMEOUT))
}

/// Binds each address.
pub fn bind_all(addresses: &[SocketAddr]) -> io::Result<Vec<UdpSocket>> {
    addresses
        .iter()
        .map(|address| {
            UdpSocket::bind(address).map_err(|e| io::Error::new(e.kind(), format!("cannot bind {address}: {e}")))
        })
        .collect()
}

/// Binds `port` on every address: `[::]` (which on Linux also takes IPv4
/// unless `net.ipv6.bindv6only` is set) and `0.0.0.0` unless the first
/// already covers it, or IPv4 alone on a host without IPv6.
pub fn bind_every_address(port: u16) -> io::Result<Vec<UdpSocket>> {
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut sockets = Vec::new();
    match UdpSocket::bind(any6) {
        Ok(socket) => sockets.push(socket),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
        Err(_) => {} // no IPv6 on this host
    }
    // With a dual-stack [::] socket on the same port, binding 0.0.0.0 fails
    // with "address in use" (or, with port 0, picks another port): IPv4 is
    // then served through [::] already.
    if port != 0 || sockets.is_empty() {
        match UdpSocket::bind(any4) {
            Ok(socket) => sockets.push(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && !sockets.is_empty() => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot bind {any4}: {e}"))),
        }
    }
    Ok(sockets)
}
