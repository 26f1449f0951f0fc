//! A UDP socket that tells when the kernel received each datagram
//! (`SO_TIMESTAMPNS`, read with `recvmsg`), so the client's receive time
//! (T4) does not include the scheduling delay before the process wakes up,
//! and when it sent one (`SO_TIMESTAMPING` software transmit timestamps,
//! read from the error queue), so T1 does not include the system call.
//!
//! Where the kernel gives no such timestamp, datagrams come with none and
//! the caller reads its clock.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use ntp_proto::NtpTimestamp;
use tokio::net::UdpSocket;

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes written into the buffer (a longer datagram is truncated).
    pub len: usize,
    /// Who sent it.
    pub source: SocketAddr,
    /// When the kernel received it, on the system clock (CLOCK_REALTIME),
    /// if the platform said.
    pub kernel_receive: Option<NtpTimestamp>,
}

/// A UDP socket with kernel receive and transmit timestamps switched on,
/// sent from and read by tokio tasks.
///
/// It joins tokio's reactor (an epoll set) only when it first waits for a
/// datagram, not when it is bound: a socket in an epoll set has a waiter
/// on it for good, and on loopback the kernel wakes that waiter between
/// the request's transmit timestamp and the server's receive timestamp
/// (the send buffer is freed in the loopback driver), which lengthens the
/// request's leg by a microsecond and reads as half that in offset. A
/// socket used for one exchange (as `ntp-query` uses them) sends before it
/// joins, so its T1 is as honest as its T4.
#[derive(Debug)]
pub struct TimestampedSocket {
    socket: std::net::UdpSocket,
    /// The same socket (a duplicate descriptor) in tokio's reactor, from
    /// the first wait on.
    registered: OnceLock<UdpSocket>,
}

impl TimestampedSocket {
    /// Binds to `local` and asks the kernel for receive timestamps (failing
    /// that, it works without them).
    pub async fn bind(local: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        Ok(Self::from_std(socket))
    }

    /// Binds an ephemeral port on the wildcard address of `peer`'s family,
    /// the socket a client uses to talk to `peer`.
    pub async fn bind_for(peer: SocketAddr) -> io::Result<Self> {
        let local = match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        Self::bind(local).await
    }

    /// Wraps an already bound, non-blocking socket and asks for receive
    /// and transmit timestamps.
    pub fn from_std(socket: std::net::UdpSocket) -> Self {
        if let Err(error) = crate::socket::enable_receive_timestamps(&socket) {
            tracing::debug!(%error, "no kernel receive timestamps; T4 is read after the wake-up");
        }
        if let Err(error) = crate::socket::enable_transmit_timestamps(&socket) {
            tracing::debug!(%error, "no kernel transmit timestamps; T1 is read before the send");
        }
        Self { socket, registered: OnceLock::new() }
    }

    /// The kernel's timestamp (system clock) of the latest datagram this
    /// socket sent whose timestamp has come back, if the platform gives
    /// them. Does not wait: call it once the reply is in, by when the
    /// timestamp has long been queued. Older timestamps still queued are
    /// skipped, so compare the result with the time of the send.
    pub fn last_transmit_timestamp(&self) -> Option<NtpTimestamp> {
        sys::last_transmit_timestamp(&self.socket)
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket in tokio's reactor, joining it now if it has not yet.
    fn registered(&self) -> io::Result<&UdpSocket> {
        if let Some(registered) = self.registered.get() {
            return Ok(registered);
        }
        let joined = UdpSocket::from_std(self.socket.try_clone()?)?;
        // Two tasks joining at once: the loser's duplicate leaves the
        // reactor as it is dropped.
        Ok(self.registered.get_or_init(|| joined))
    }

    /// Sends one datagram to `target`, calling `stamp` immediately before
    /// the system call (once the socket is known to be writable), so a
    /// transmit timestamp read there does not include waiting for the
    /// reactor. Returns what `stamp` returned.
    pub async fn send_to_stamped<T>(
        &self,
        bytes: &[u8],
        target: SocketAddr,
        mut stamp: impl FnMut() -> T,
    ) -> io::Result<T> {
        let whole = |sent: usize, stamped: T| {
            if sent == bytes.len() {
                Ok(stamped)
            } else {
                let message = format!("sent {sent} of {} bytes", bytes.len());
                Err(io::Error::new(io::ErrorKind::WriteZero, message))
            }
        };
        if self.registered.get().is_none() {
            // Not in the reactor yet: nothing waits on the socket.
            let stamped = stamp();
            match self.socket.send_to(bytes, target) {
                Ok(sent) => return whole(sent, stamped),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {} // wait below
                Err(error) => return Err(error),
            }
        }
        let socket = self.registered()?;
        loop {
            socket.writable().await?;
            let stamped = stamp();
            match socket.try_send_to(bytes, target) {
                Ok(sent) => return whole(sent, stamped),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits for the next datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        sys::recv(self.registered()?, buf).await
    }
}

/// The system calls under [`TimestampedSocket`]: one `recvmsg` for data
/// and for the error queue alike.
mod sys {
    use std::io;
    use std::mem::{size_of, size_of_val, zeroed};
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, RawFd};

    use ntp_proto::NtpTimestamp;
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::Datagram;
    use crate::control::{self, Ancillary};
    use crate::sockaddr::from_sockaddr;

    pub fn last_transmit_timestamp(socket: &std::net::UdpSocket) -> Option<NtpTimestamp> {
        let mut latest = None;
        // Each queued timestamp is one message; a few at most are pending.
        for _ in 0..8 {
            let mut scratch = [0u8; 64];
            match recvmsg(socket.as_raw_fd(), &mut scratch, libc::MSG_ERRQUEUE) {
                Ok(message) => latest = message.ancillary.transmit.or(latest),
                Err(_) => break,
            }
        }
        latest
    }

    pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
        loop {
            socket.readable().await?;
            // `try_io` clears the readiness when recvmsg says it would block.
            match socket.try_io(Interest::READABLE, || recvmsg(socket.as_raw_fd(), buf, 0)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
                Ok(message) => {
                    let source = message.source.ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "datagram from an unknown address family")
                    })?;
                    return Ok(Datagram { len: message.len, source, kernel_receive: message.ancillary.receive });
                }
            }
        }
    }

    /// What one recvmsg gave.
    struct Message {
        len: usize,
        source: Option<SocketAddr>,
        ancillary: Ancillary,
    }

    fn recvmsg(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Message> {
        // Room for the timestamp control messages (and an extended error
        // on the error queue), aligned for cmsghdr.
        let mut control = [0u64; 40];
        // SAFETY: sockaddr_storage is a plain C struct for which all zeroes is valid.
        let mut source: libc::sockaddr_storage = unsafe { zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: msghdr is a plain C struct for which all zeroes is valid
        // (null pointers, zero lengths); the fields that matter are set below.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut source as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` refers to a live local (or to `buf`)
        // whose size is the length given beside it; the kernel writes within
        // those bounds only. MSG_DONTWAIT: never block (tokio's socket is
        // non-blocking anyway, and the error queue is polled).
        let received = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_DONTWAIT) };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let ancillary = control::read(&msg);
        Ok(Message { len: (received as usize).min(buf.len()), source: from_sockaddr(&source), ancillary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_carry_their_source_and_a_kernel_timestamp() {
        let receiver = TimestampedSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = NtpTimestamp::from_system_time(std::time::SystemTime::now());
        sender.send_to(b"hello", receiver.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 3];
        let datagram = receiver.recv(&mut buf).await.unwrap();
        let after = NtpTimestamp::from_system_time(std::time::SystemTime::now());
        assert_eq!(datagram.len, 3, "truncated to the buffer");
        assert_eq!(&buf, b"hel");
        assert_eq!(datagram.source, sender.local_addr().unwrap());
        if cfg!(target_os = "linux") {
            let stamp = datagram.kernel_receive.expect("Linux gives a receive timestamp");
            assert!(stamp - before >= ntp_proto::NtpDuration::ZERO && after - stamp >= ntp_proto::NtpDuration::ZERO);
        }
    }

    #[tokio::test]
    async fn sent_datagrams_come_back_with_a_kernel_transmit_timestamp() {
        let sender = TimestampedSocket::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(sender.last_transmit_timestamp(), None, "nothing sent yet");
        let before = sender
            .send_to_stamped(b"ping", receiver.local_addr().unwrap(), || {
                NtpTimestamp::from_system_time(std::time::SystemTime::now())
            })
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        receiver.recv_from(&mut buf).unwrap();
        let after = NtpTimestamp::from_system_time(std::time::SystemTime::now());
        if cfg!(target_os = "linux") {
            let stamp = sender.last_transmit_timestamp().expect("Linux gives a transmit timestamp");
            assert!(stamp - before >= ntp_proto::NtpDuration::ZERO && after - stamp >= ntp_proto::NtpDuration::ZERO);
            assert_eq!(sender.last_transmit_timestamp(), None, "the queue was drained");
        }
    }
}
