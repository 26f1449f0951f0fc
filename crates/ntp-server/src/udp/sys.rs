//! The crate's only unsafe code: batched datagram I/O (recvmmsg/sendmmsg)
//! with kernel receive timestamps (SO_TIMESTAMPNS), through libc.
//!
//! The buffers own every array the kernel reads or writes; the pointers in
//! the message headers are rebuilt right before each call, so they always
//! point into live, correctly sized memory and nothing is self-referential.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// Largest datagram read whole; a longer one is reported truncated.
pub const MAX_DATAGRAM: usize = 1024;

/// Room for the control messages we ask for (a receive timestamp and a
/// destination address), aligned for `cmsghdr`.
type Control = [u64; 16];

/// Turns on kernel receive timestamps (CLOCK_REALTIME, nanoseconds).
pub fn enable_receive_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
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

/// Asks for a receive buffer of `bytes` (the kernel caps it at
/// `net.core.rmem_max`), so bursts wait in the queue instead of being lost.
pub fn set_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
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

/// A batch of datagrams received by one `recvmmsg` call.
#[derive(Debug)]
pub struct RecvBatch {
    data: Vec<[u8; MAX_DATAGRAM]>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
}

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The payload; empty if the datagram was longer than [`MAX_DATAGRAM`].
    pub payload: &'a [u8],
    /// Who sent it (`None` for an address family we do not speak).
    pub source: Option<SocketAddr>,
    /// When the kernel received it: Unix seconds and nanoseconds, CLOCK_REALTIME.
    pub kernel_time: Option<(i64, u32)>,
    /// The local address it was sent to, if asked for with
    /// [`enable_destination_info`].
    pub local: Option<IpAddr>,
}

impl RecvBatch {
    /// Buffers for up to `capacity` datagrams per call.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            data: vec![[0; MAX_DATAGRAM]; capacity],
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            controls: vec![[0; 16]; capacity],
            // SAFETY: as above; the pointers are set before every use.
            iovecs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            // SAFETY: as above.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            received: 0,
        }
    }

    /// Receives what is queued, up to the capacity. With `block` it waits
    /// for the first datagram (bounded by the socket's read timeout, after
    /// which it returns `WouldBlock`); without, it returns at once.
    pub fn recv(&mut self, socket: &impl AsRawFd, block: bool) -> io::Result<usize> {
        self.received = 0;
        for i in 0..self.headers.len() {
            self.iovecs[i] = libc::iovec { iov_base: self.data[i].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = size_of::<Control>() as _;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        let flags = if block { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
        // SAFETY: every header points at this batch's own name, iovec and
        // control buffers with their true sizes, and each iovec at a
        // MAX_DATAGRAM-byte buffer; all outlive the call. The count passed is
        // the headers' length.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = rc as usize;
        Ok(self.received)
    }

    /// The datagrams of the last `recv`.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> {
        (0..self.received).map(|i| self.datagram(i))
    }

    fn datagram(&self, i: usize) -> Datagram<'_> {
        let header = &self.headers[i];
        let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let len = (header.msg_len as usize).min(MAX_DATAGRAM);
        let (kernel_time, local) = control_messages(&header.msg_hdr);
        Datagram {
            payload: if truncated { &[] } else { &self.data[i][..len] },
            source: from_sockaddr(&self.names[i]),
            kernel_time,
            local,
        }
    }
}

/// The receive timestamp (SCM_TIMESTAMPNS) and the local destination
/// address (IP_PKTINFO / IPV6_PKTINFO) of a received message, where given.
fn control_messages(header: &libc::msghdr) -> (Option<(i64, u32)>, Option<IpAddr>) {
    let (mut time, mut local) = (None, None);
    // SAFETY: `header` was filled by recvmmsg: msg_control points at this
    // batch's control buffer and msg_controllen says how much of it the
    // kernel wrote, which is what the CMSG_* macros walk. Each cmsghdr lies
    // inside that buffer, its data as long as its type says; the values are
    // read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    time = Some((ts.tv_sec, ts.tv_nsec.clamp(0, 999_999_999) as u32));
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    (time, local)
}

/// Replies queued for one `sendmmsg` call.
#[derive(Debug)]
pub struct SendBatch {
    data: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    controls: Vec<Control>,
    control_lens: Vec<usize>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    queued: usize,
}

impl SendBatch {
    /// Room for `capacity` datagrams.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            data: vec![[0; MAX_DATAGRAM]; capacity],
            lens: vec![0; capacity],
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            names: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            name_lens: vec![0; capacity],
            controls: vec![[0; 16]; capacity],
            control_lens: vec![0; capacity],
            // SAFETY: as above; the pointers are set before every use.
            iovecs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            // SAFETY: as above.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            queued: 0,
        }
    }

    /// Number of datagrams queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True if nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// True if no more datagrams fit.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.queued == self.data.len()
    }

    /// Queues `payload` (cut to [`MAX_DATAGRAM`]) for `destination`, sent
    /// from the local address `source` if given (for sockets bound to a
    /// wildcard address); false if the batch is full.
    pub fn push(&mut self, destination: SocketAddr, source: Option<IpAddr>, payload: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.queued;
        let len = payload.len().min(MAX_DATAGRAM);
        self.data[i][..len].copy_from_slice(&payload[..len]);
        self.lens[i] = len;
        self.name_lens[i] = to_sockaddr(destination, &mut self.names[i]);
        self.control_lens[i] = source.map_or(0, |source| write_source(source, &mut self.controls[i]));
        self.queued += 1;
        true
    }

    /// The queued payloads, to stamp them (e.g. the transmit time) just
    /// before sending.
    pub fn payloads_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.data.iter_mut().zip(&self.lens).take(self.queued).map(|(buf, &len)| &mut buf[..len])
    }

    /// Sends everything queued and empties the batch. Returns how many the
    /// kernel took; the rest (after an error such as a full buffer) are
    /// discarded, as UDP may.
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let count = std::mem::take(&mut self.queued);
        let mut sent = 0;
        while sent < count {
            for i in sent..count {
                self.iovecs[i] = libc::iovec { iov_base: self.data[i].as_mut_ptr().cast(), iov_len: self.lens[i] };
                let header = &mut self.headers[i].msg_hdr;
                header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                header.msg_namelen = self.name_lens[i];
                header.msg_iov = &mut self.iovecs[i];
                header.msg_iovlen = 1;
                header.msg_control =
                    if self.control_lens[i] == 0 { std::ptr::null_mut() } else { self.controls[i].as_mut_ptr().cast() };
                header.msg_controllen = self.control_lens[i] as _;
                header.msg_flags = 0;
            }
            // SAFETY: headers sent..count point at this batch's own names,
            // iovecs, control messages and payload buffers with their true
            // lengths, all alive
            // for the call; the count passed stays within the headers.
            let rc = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), self.headers[sent..].as_mut_ptr(), (count - sent) as libc::c_uint, 0)
            };
            if rc <= 0 {
                let err = io::Error::last_os_error();
                if sent == 0 {
                    return Err(err);
                }
                break;
            }
            sent += rc as usize;
        }
        Ok(sent)
    }
}

/// Writes an IP_PKTINFO (IPv4) or IPV6_PKTINFO control message asking the
/// kernel to send from `source`; returns its length.
fn write_source(source: IpAddr, control: &mut Control) -> usize {
    *control = [0; 16];
    // SAFETY: a msghdr whose control buffer is `control` (128 bytes, aligned
    // for cmsghdr) lets CMSG_FIRSTHDR find the first header at its start;
    // CMSG_SPACE of either pktinfo (32 or 40 bytes) fits, so the header and
    // its data written below (unaligned) stay inside the buffer.
    unsafe {
        let mut header: libc::msghdr = MaybeUninit::zeroed().assume_init();
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = size_of::<Control>() as _;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        let data = libc::CMSG_DATA(cmsg);
        match source {
            IpAddr::V4(v4) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(v4).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast(), info);
                libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize
            }
            IpAddr::V6(v6) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: v6.octets() }, ipi6_ifindex: 0 };
                std::ptr::write_unaligned(data.cast(), info);
                libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize
            }
        }
    }
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // fits in (and is less aligned than) sockaddr_storage.
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which
            // fits in (and is less aligned than) sockaddr_storage.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

fn to_sockaddr(address: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match address {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in fits in (and is less aligned than)
            // sockaddr_storage, and every field is written below.
            let sin: &mut libc::sockaddr_in = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 fits in (and is less aligned than)
            // sockaddr_storage, and every field is written below.
            let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            sin6.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            got.extend(batch.iter().map(|d| (d.payload.to_vec(), d.source, d.kernel_time)));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for (n, (payload, source, time)) in got.iter().take(3).enumerate() {
            assert_eq!(payload, &vec![n as u8; 48]);
            assert_eq!(*source, Some(client.local_addr().unwrap()));
            assert!((time.unwrap().0 - now).abs() <= 2);
        }
        assert!(got[3].0.is_empty(), "truncated datagram comes back empty");

        let mut send = SendBatch::new(2);
        assert!(send.push(client.local_addr().unwrap(), None, &[7; 48]));
        assert!(send.push(client.local_addr().unwrap(), None, &[8; 48]));
        assert!(!send.push(client.local_addr().unwrap(), None, &[9; 48]));
        for payload in send.payloads_mut() {
            payload[0] = 1;
        }
        assert_eq!(send.send(&server).unwrap(), 2);
        assert!(send.is_empty());
        let mut buf = [0u8; 100];
        let (len, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!((len, buf[0], buf[1]), (48, 1, 7));
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

    #[test]
    fn ipv6_addresses_survive_the_conversion() {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        for address in ["[::1]:123", "127.0.0.1:5", "[fe80::1%2]:9"] {
            let address: SocketAddr = address.parse().unwrap();
            to_sockaddr(address, &mut storage);
            assert_eq!(from_sockaddr(&storage), Some(address));
        }
    }
}
