//! Sending a batch of datagrams with one `sendmmsg` call, each to its own
//! destination and, on wildcard sockets, from a chosen local address.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use crate::control::{write_source, write_transmit_request, Control, CONTROL_WORDS};
use crate::sockaddr::to_sockaddr;
use crate::socket::MAX_DATAGRAM;

/// Replies queued for one `sendmmsg` call.
#[derive(Debug)]
pub struct SendBatch {
    data: Vec<[u8; MAX_DATAGRAM]>,
    lens: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    controls: Vec<Control>,
    control_lens: Vec<usize>,
    /// Whether each datagram still waits for its transmit timestamp.
    to_stamp: Vec<bool>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    queued: usize,
    /// Whether the last send took more than one `sendmmsg` call.
    split: bool,
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
            controls: vec![[0; CONTROL_WORDS]; capacity],
            control_lens: vec![0; capacity],
            to_stamp: vec![false; capacity],
            // SAFETY: as above; the pointers are set before every use.
            iovecs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            // SAFETY: as above.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            queued: 0,
            split: false,
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
    /// wildcard address); false if the batch is full. It waits for its
    /// transmit timestamp ([`SendBatch::to_stamp_mut`]).
    pub fn push(&mut self, destination: SocketAddr, source: Option<IpAddr>, payload: &[u8]) -> bool {
        self.queue(destination, source, payload, true)
    }

    /// [`SendBatch::push`] for a datagram that is sent as it is, never
    /// stamped: a kiss-o'-death (which keeps the client's timestamps) or an
    /// authenticated reply (sealed with its transmit time inside).
    pub fn push_final(&mut self, destination: SocketAddr, source: Option<IpAddr>, payload: &[u8]) -> bool {
        self.queue(destination, source, payload, false)
    }

    fn queue(&mut self, destination: SocketAddr, source: Option<IpAddr>, payload: &[u8], stamp: bool) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.queued;
        let len = payload.len().min(MAX_DATAGRAM);
        self.data[i][..len].copy_from_slice(&payload[..len]);
        self.lens[i] = len;
        self.name_lens[i] = to_sockaddr(destination, &mut self.names[i]);
        self.control_lens[i] = source.map_or(0, |source| write_source(source, &mut self.controls[i]));
        self.to_stamp[i] = stamp;
        self.queued += 1;
        true
    }

    /// Asks the kernel for the software transmit timestamp of the datagram
    /// queued last (an `SO_TIMESTAMPING` control message of its own), to be
    /// read from the socket's error queue after the send: only datagrams
    /// asked for get one, and only they are counted by the kernel's
    /// numbering ([`crate::enable_numbered_transmit_timestamps`]). Does
    /// nothing on an empty batch.
    pub fn ask_transmit_timestamp(&mut self) {
        if let Some(i) = self.queued.checked_sub(1) {
            self.control_lens[i] = write_transmit_request(&mut self.controls[i], self.control_lens[i]);
        }
    }

    /// The queued payloads that wait for their transmit timestamp (all but
    /// those of [`SendBatch::push_final`]), to stamp just before sending.
    pub fn to_stamp_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let queued = self.data.iter_mut().zip(&self.lens).zip(&self.to_stamp).take(self.queued);
        queued.filter(|(_, &stamp)| stamp).map(|((buf, &len), _)| &mut buf[..len])
    }

    /// Sends everything queued and empties the batch. Returns how many the
    /// kernel took; the rest (after an error such as a full buffer) are
    /// discarded, as UDP may.
    pub fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let count = std::mem::take(&mut self.queued);
        let mut sent = 0;
        self.split = false;
        while sent < count {
            self.split |= sent > 0;
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

    /// Whether the last [`SendBatch::send`] needed more than one
    /// `sendmmsg` call: a call came back short, with an error the next
    /// call may not report. Whatever the kernel counted for the datagram
    /// it stopped at (a transmit timestamp's number) is then unknown,
    /// even if every datagram was sent in the end.
    #[must_use]
    pub fn was_split(&self) -> bool {
        self.split
    }
}
