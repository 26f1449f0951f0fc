//! The crate's only unsafe code: batched datagram I/O (recvmmsg/sendmmsg)
//! with kernel receive timestamps (SO_TIMESTAMPNS), through libc.
//!
//! The buffers own every array the kernel reads or writes; the pointers in
//! the message headers are rebuilt right before each call, so they always
//! point into live, correctly sized memory and nothing is self-referential.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// Largest datagram read whole; a longer one is reported truncated.
pub const MAX_DATAGRAM: usize = 1024;

/// Room for one SCM_TIMESTAMPNS control message, aligned for `cmsghdr`.
type Control = [u64; 8];

/// Turns on kernel receive timestamps (CLOCK_REALTIME, nanoseconds).
pub fn enable_receive_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
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
            controls: vec![[0; 8]; capacity],
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
        Datagram {
            payload: if truncated { &[] } else { &self.data[i][..len] },
            source: from_sockaddr(&self.names[i]),
            kernel_time: kernel_time(&header.msg_hdr),
        }
    }
}

/// The SCM_TIMESTAMPNS value of a received message, if the kernel gave one.
fn kernel_time(header: &libc::msghdr) -> Option<(i64, u32)> {
    // SAFETY: `header` was filled by recvmmsg: msg_control points at this
    // batch's control buffer and msg_controllen says how much of it the
    // kernel wrote, which is what the CMSG_* macros walk. Each cmsghdr lies
    // inside that buffer; the timespec is read unaligned from its data.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some((ts.tv_sec, ts.tv_nsec.clamp(0, 999_999_999) as u32));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Replies queued for one `sendmmsg` call.
#[derive(Debug)]
pub struct SendBatch {
    data: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
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

    /// Queues `payload` (cut to [`MAX_DATAGRAM`]) for `destination`; false
    /// if the batch is full.
    pub fn push(&mut self, destination: SocketAddr, payload: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.queued;
        let len = payload.len().min(MAX_DATAGRAM);
        self.data[i][..len].copy_from_slice(&payload[..len]);
        self.lens[i] = len;
        self.name_lens[i] = to_sockaddr(destination, &mut self.names[i]);
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
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
                header.msg_flags = 0;
            }
            // SAFETY: headers sent..count point at this batch's own names,
            // iovecs and payload buffers with their true lengths, all alive
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
        assert!(send.push(client.local_addr().unwrap(), &[7; 48]));
        assert!(send.push(client.local_addr().unwrap(), &[8; 48]));
        assert!(!send.push(client.local_addr().unwrap(), &[9; 48]));
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
