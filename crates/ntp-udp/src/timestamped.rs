//! A UDP socket that tells when the kernel received each datagram
//! (`SO_TIMESTAMPNS`, read with `recvmsg`), so the client's receive time
//! (T4) does not include the scheduling delay before the process wakes up,
//! and when it sent one (`SO_TIMESTAMPING` software transmit timestamps,
//! read from the error queue), so T1 does not include the system call.
//!
//! This is the crate's only `unsafe`: the `sys` module below, a handful of
//! libc calls, each with its `SAFETY` reasoning. Where the platform has no
//! such timestamp, datagrams come with none and the caller reads its clock.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// A tokio UDP socket with kernel receive timestamps switched on.
#[derive(Debug)]
pub struct TimestampedSocket {
    socket: UdpSocket,
}

impl TimestampedSocket {
    /// Binds to `local` and asks the kernel for receive timestamps (failing
    /// that, it works without them).
    pub async fn bind(local: SocketAddr) -> io::Result<Self> {
        Ok(Self::from_tokio(UdpSocket::bind(local).await?))
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

    /// Wraps an already bound socket and asks for receive and transmit
    /// timestamps.
    pub fn from_tokio(socket: UdpSocket) -> Self {
        if let Err(error) = sys::enable_receive_timestamps(&socket) {
            tracing::debug!(%error, "no kernel receive timestamps; T4 is read after the wake-up");
        }
        if let Err(error) = sys::enable_transmit_timestamps(&socket) {
            tracing::debug!(%error, "no kernel transmit timestamps; T1 is read before the send");
        }
        Self { socket }
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
        loop {
            self.socket.writable().await?;
            let stamped = stamp();
            match self.socket.try_send_to(bytes, target) {
                Ok(sent) if sent == bytes.len() => return Ok(stamped),
                Ok(sent) => {
                    let message = format!("sent {sent} of {} bytes", bytes.len());
                    return Err(io::Error::new(io::ErrorKind::WriteZero, message));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits for the next datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        sys::recv(&self.socket, buf).await
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, size_of_val, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, RawFd};

    use ntp_proto::NtpTimestamp;
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::Datagram;

    pub fn enable_receive_timestamps(socket: &UdpSocket) -> io::Result<()> {
        set_option(socket, libc::SO_TIMESTAMPNS, 1)
    }

    pub fn enable_transmit_timestamps(socket: &UdpSocket) -> io::Result<()> {
        let flags =
            libc::SOF_TIMESTAMPING_TX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_TSONLY;
        set_option(socket, libc::SO_TIMESTAMPING, flags as libc::c_int)
    }

    fn set_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: the descriptor belongs to `socket`, which outlives the call;
        // the option value points to a live c_int and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn last_transmit_timestamp(socket: &UdpSocket) -> Option<NtpTimestamp> {
        let mut latest = None;
        // Each queued timestamp is one message; a few at most are pending.
        for _ in 0..8 {
            let mut scratch = [0u8; 64];
            match recvmsg(socket.as_raw_fd(), &mut scratch, libc::MSG_ERRQUEUE) {
                Ok(message) => latest = message.transmit.or(latest),
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
                    return Ok(Datagram { len: message.len, source, kernel_receive: message.receive });
                }
            }
        }
    }

    /// What one recvmsg gave.
    struct Message {
        len: usize,
        source: Option<SocketAddr>,
        receive: Option<NtpTimestamp>,
        transmit: Option<NtpTimestamp>,
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
        let (receive, transmit) = timestamps(&msg);
        Ok(Message { len: (received as usize).min(buf.len()), source: socket_addr(&source), receive, transmit })
    }

    /// The SCM_TIMESTAMPNS (receive) and SCM_TIMESTAMPING (transmit, on the
    /// error queue) timestamps of a message `recvmsg` filled in.
    fn timestamps(msg: &libc::msghdr) -> (Option<NtpTimestamp>, Option<NtpTimestamp>) {
        let (mut receive, mut transmit) = (None, None);
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return (None, None);
        }
        // SAFETY: `msg` was filled by a successful recvmsg, so its control
        // pointer and length describe initialized control messages;
        // CMSG_FIRSTHDR and CMSG_NXTHDR never step past msg_controllen and
        // return null at the end. The header is read in place (the buffer is
        // aligned for cmsghdr). The payload of SCM_TIMESTAMPNS is a
        // timespec, that of SCM_TIMESTAMPING three (software first), both
        // read unaligned and within the message's cmsg_len, checked first.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let header = &*cmsg;
                let payload = (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let fits = payload >= size_of::<libc::timespec>();
                if header.cmsg_level == libc::SOL_SOCKET && fits {
                    let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if header.cmsg_type == libc::SCM_TIMESTAMPNS {
                        receive = ntp_time(stamp);
                    } else if header.cmsg_type == libc::SCM_TIMESTAMPING {
                        transmit = ntp_time(stamp);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        (receive, transmit)
    }

    /// A kernel timespec as an NTP timestamp; `None` for the zero a
    /// timestamp slot holds when empty.
    fn ntp_time(stamp: libc::timespec) -> Option<NtpTimestamp> {
        let nanos = u32::try_from(stamp.tv_nsec).ok()?;
        if stamp.tv_sec == 0 && nanos == 0 {
            return None;
        }
        // time_t is 32 bits on some targets.
        #[allow(clippy::useless_conversion)]
        Some(NtpTimestamp::from_unix(i64::from(stamp.tv_sec), nanos))
    }

    fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in,
                // which is smaller than sockaddr_storage and less aligned.
                let v4 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6,
                // which is smaller than sockaddr_storage and less aligned.
                let v6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
                let port = u16::from_be(v6.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id)))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    use tokio::net::UdpSocket;

    use super::Datagram;

    pub fn enable_receive_timestamps(_socket: &UdpSocket) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "SO_TIMESTAMPNS is Linux-only here"))
    }

    pub fn enable_transmit_timestamps(_socket: &UdpSocket) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "SO_TIMESTAMPING is Linux-only here"))
    }

    pub fn last_transmit_timestamp(_socket: &UdpSocket) -> Option<ntp_proto::NtpTimestamp> {
        None
    }

    pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
        let (len, source) = socket.recv_from(buf).await?;
        Ok(Datagram { len, source, kernel_receive: None })
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
