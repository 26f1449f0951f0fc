//! Receiving a batch of datagrams with one `recvmmsg` call, each with its
//! source, kernel receive timestamp and local destination address.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use ntp_proto::NtpTimestamp;

use crate::control::{self, Control, CONTROL_WORDS};
use crate::sockaddr::from_sockaddr;
use crate::socket::MAX_DATAGRAM;

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
    /// When the kernel received it, on the system clock (CLOCK_REALTIME).
    pub kernel_receive: Option<NtpTimestamp>,
    /// The local address it was sent to, if asked for with
    /// [`crate::enable_destination_info`].
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
            controls: vec![[0; CONTROL_WORDS]; capacity],
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
        let ancillary = control::read(&header.msg_hdr);
        Datagram {
            payload: if truncated { &[] } else { &self.data[i][..len] },
            source: from_sockaddr(&self.names[i]),
            kernel_receive: ancillary.receive,
            local: ancillary.local,
        }
    }
}
