//! Socket options through one `setsockopt` wrapper: kernel receive and
//! transmit timestamps, destination addresses (pktinfo), the receive
//! buffer's size; and `poll`, to wait for any of several sockets.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// Largest datagram read whole; a longer one is reported truncated.
pub const MAX_DATAGRAM: usize = 1024;

/// Turns on kernel receive timestamps (CLOCK_REALTIME, nanoseconds).
pub fn enable_receive_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Turns on software transmit timestamps (SO_TIMESTAMPING), which come
/// back on the socket's error queue once a datagram has left.
pub fn enable_transmit_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    let flags =
        libc::SOF_TIMESTAMPING_TX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags as libc::c_int)
}

/// Asks the kernel to tell which local address each datagram was sent to
/// (IP_PKTINFO, and IPV6_RECVPKTINFO on IPv6 sockets), so that a socket
/// bound to a wildcard address can answer from the address the client
/// asked. Fails only if neither option could be set.
pub fn enable_destination_info(socket: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // On a dual-stack IPv6 socket, IPv4 datagrams report IP_PKTINFO.
    let v4 = set_int_option(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    if !ipv6 {
        return v4;
    }
    set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1).or(v4)
}

/// Asks for a receive buffer of `bytes`, so bursts wait in the queue
/// instead of being lost, and returns the size granted (in the same terms:
/// Linux doubles the figure for its bookkeeping, and reports the double).
/// With CAP_NET_ADMIN (root) the size is forced past `net.core.rmem_max`
/// (SO_RCVBUFFORCE); without, the kernel caps it there.
pub fn set_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    }
    let granted = get_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    Ok(usize::try_from(granted / 2).unwrap_or(0))
}

fn get_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `length` are live locals; `length` tells the kernel
    // it may write at most one c_int into `value`, and it updates `length`.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut length) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; the
    // kernel only reads that many bytes. A bad fd or option is an error return.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&value as *const libc::c_int).cast(), size_of::<libc::c_int>() as u32)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until one of `sockets` is readable or `timeout` passes; returns
/// whether any is.
pub fn wait_readable(sockets: &[impl AsFd], timeout: Duration) -> io::Result<bool> {
    let mut fds: Vec<libc::pollfd> =
        sockets.iter().map(|s| libc::pollfd { fd: s.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structures that
    // the kernel may write `revents` into.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
    match rc {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RecvBatch, SendBatch};
    use std::net::UdpSocket;

    #[test]
    fn batches_round_trip_with_kernel_timestamps() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        enable_receive_timestamps(&server).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for n in 0..3u8 {
            client.send_to(&[n; 48], server.local_addr().unwrap()).unwrap();
        }
        client.send_to(&[9; 2000], server.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(8);
        let mut got = Vec::new();
        while got.len() < 4 {
            assert!(wait_readable(std::slice::from_ref(&server), Duration::from_secs(2)).unwrap());
            batch.recv(&server, true).unwrap();
            got.extend(batch.iter().map(|d| (d.payload.to_vec(), d.source, d.kernel_receive)));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for (n, (payload, source, time)) in got.iter().take(3).enumerate() {
            assert_eq!(payload, &vec![n as u8; 48]);
            assert_eq!(*source, Some(client.local_addr().unwrap()));
            assert!((time.unwrap().to_unix_f64() as i64 - now).abs() <= 2);
        }
        assert!(got[3].0.is_empty(), "truncated datagram comes back empty");

        let mut send = SendBatch::new(2);
        assert!(send.push(client.local_addr().unwrap(), None, &[7; 48]));
        assert!(send.push(client.local_addr().unwrap(), None, &[8; 48]));
        assert!(!send.push(client.local_addr().unwrap(), None, &[9; 48]));
        for payload in send.to_stamp_mut() {
            payload[0] = 1;
        }
        assert_eq!(send.send(&server).unwrap(), 2);
        assert!(send.is_empty());
        let mut buf = [0u8; 100];
        let (len, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!((len, buf[0], buf[1]), (48, 1, 7));
    }

    #[test]
    fn a_serving_socket_with_every_timestamp_still_learns_the_address_asked() {
        // Receive timestamps in two forms (SO_TIMESTAMPNS, and
        // SO_TIMESTAMPING reporting software stamps) and an IPv6 pktinfo:
        // more than 128 bytes of control data.
        let Ok(server) = UdpSocket::bind("[::]:0") else { return }; // no IPv6 on this host
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        enable_receive_timestamps(&server).unwrap();
        enable_destination_info(&server, true).unwrap();
        crate::enable_numbered_transmit_timestamps(&server).unwrap();
        let Ok(client) = UdpSocket::bind("[::1]:0") else { return };
        client.send_to(&[1; 48], ("::1", server.local_addr().unwrap().port())).unwrap();
        let mut batch = RecvBatch::new(4);
        batch.recv(&server, true).unwrap();
        let datagram = batch.iter().next().unwrap();
        assert_eq!(datagram.local, Some("::1".parse().unwrap()), "pktinfo kept");
        assert!(datagram.kernel_receive.is_some(), "receive timestamp kept");
    }

    #[test]
    fn a_wildcard_socket_answers_from_the_address_asked() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        enable_destination_info(&server, false).unwrap();
        let port = server.local_addr().unwrap().port();
        // Any 127/8 address is local; a connected client only accepts
        // replies from the address it sent to.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.connect(("127.0.0.2", port)).unwrap();
        client.send(&[1; 48]).unwrap();
        let mut batch = RecvBatch::new(4);
        batch.recv(&server, true).unwrap();
        let datagram = batch.iter().next().unwrap();
        assert_eq!(datagram.local, Some("127.0.0.2".parse().unwrap()));
        let mut send = SendBatch::new(1);
        assert!(send.push(datagram.source.unwrap(), datagram.local, &[2; 48]));
        assert_eq!(send.send(&server).unwrap(), 1);
        let mut buf = [0u8; 64];
        assert_eq!(client.recv(&mut buf).unwrap(), 48, "the reply came from 127.0.0.2");
    }
}
