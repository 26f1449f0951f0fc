//! The kernel's transmit timestamps of a serving socket's replies, read in
//! batches from its error queue: interleaved mode hands a client the real
//! time its previous reply left, and basic replies are stamped with a
//! send latency measured on the socket itself.
//!
//! Only the datagrams that ask get one (a control message of their own):
//! a timestamp costs the kernel more than the rest of a reply, so a server
//! asks for those of interleaved clients and for a sample of the others.
//! Each timestamp names its datagram by the socket's count of datagrams
//! that asked before it (SOF_TIMESTAMPING_OPT_ID), so the caller, which
//! numbers them the same way, knows which reply it belongs to. With
//! SOF_TIMESTAMPING_OPT_TSONLY the kernel queues the timestamp alone, not
//! a copy of the datagram.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::AsRawFd;

use ntp_proto::NtpTimestamp;

use crate::control::{self, ErrorControl};
use crate::socket::set_int_option;

/// The kernel's software transmit timestamp of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmitStamp {
    /// How many datagrams the socket had sent before this one, counted
    /// since [`enable_numbered_transmit_timestamps`] (wrapping at 2^32).
    pub id: u32,
    /// When it left, on the system clock (CLOCK_REALTIME).
    pub sent: NtpTimestamp,
}

/// Makes the socket report software transmit timestamps numbered by
/// datagram, for the datagrams that ask for one
/// ([`crate::SendBatch::ask_transmit_timestamp`]), and starts the numbering
/// again at 0: with it on already, it is switched off first, which is how
/// the kernel is told to restart the count (after a send error left it
/// unclear how many datagrams were counted). The kernel counts only the
/// datagrams that ask; a server that asks for a few of its replies pays
/// for those only. Timestamps still queued keep their old numbers: drain
/// them first.
pub fn enable_numbered_transmit_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let mut plain = libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    // Reporting software timestamps would also report each receive
    // timestamp a second time (SCM_TIMESTAMPING beside SCM_TIMESTAMPNS);
    // OPT_RX_FILTER (Linux 6.12) says not to, where the kernel knows it.
    let filtered = plain | libc::SOF_TIMESTAMPING_OPT_RX_FILTER;
    if set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, filtered as libc::c_int).is_ok() {
        plain = filtered;
    } else {
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, plain as libc::c_int)?;
    }
    let numbered = plain | libc::SOF_TIMESTAMPING_OPT_ID;
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, numbered as libc::c_int)
}

/// Switches transmit timestamps off (after numbering them failed half way,
/// so none is queued that nobody reads).
pub fn disable_transmit_timestamps(socket: &impl AsRawFd) -> io::Result<()> {
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPING, 0)
}

/// Buffers to read up to a batch of transmit timestamps in one
/// `recvmmsg(MSG_ERRQUEUE)` call.
#[derive(Debug)]
pub struct TransmitQueue {
    scratch: Vec<[u8; 64]>,
    controls: Vec<ErrorControl>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside the headers and iovecs point only into
// this queue's own buffers and are rewritten before every call, so the
// queue may move to another thread (a serving thread is built, then sent
// to run).
unsafe impl Send for TransmitQueue {}

impl TransmitQueue {
    /// Room for `capacity` timestamps per call.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            scratch: vec![[0; 64]; capacity],
            controls: vec![[0; 32]; capacity],
            // SAFETY: all-zero bytes are a valid value of these plain C
            // structs; the pointers are set before every use.
            iovecs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
            // SAFETY: as above.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; capacity],
        }
    }

    /// Takes every timestamp queued on `socket` without waiting, appending
    /// them to `out` in the order they were queued; returns how many.
    /// Messages on the queue that are no transmit timestamp (an ICMP error
    /// reported there) are taken too and left out.
    pub fn drain(&mut self, socket: &impl AsRawFd, out: &mut Vec<TransmitStamp>) -> io::Result<usize> {
        let before = out.len();
        loop {
            let received = self.receive(socket)?;
            for header in &self.headers[..received] {
                let ancillary = control::read(&header.msg_hdr);
                if let (Some(id), Some(sent)) = (ancillary.transmit_id, ancillary.transmit) {
                    out.push(TransmitStamp { id, sent });
                }
            }
            if received < self.headers.len() {
                return Ok(out.len() - before);
            }
        }
    }

    fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        for i in 0..self.headers.len() {
            self.iovecs[i] = libc::iovec { iov_base: self.scratch[i].as_mut_ptr().cast(), iov_len: 64 };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = std::ptr::null_mut();
            header.msg_namelen = 0;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = size_of::<ErrorControl>() as _;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at this queue's own iovec and control
        // buffer with their true sizes (no name), each iovec at a 64-byte
        // scratch buffer; all outlive the call, and the count passed is the
        // headers' length. MSG_DONTWAIT: an empty queue returns EAGAIN.
        let rc = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error),
            };
        }
        Ok(rc as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SendBatch;
    use std::net::UdpSocket;
    use std::time::SystemTime;

    fn now() -> NtpTimestamp {
        NtpTimestamp::from_system_time(SystemTime::now())
    }

    #[test]
    fn every_datagram_that_asks_comes_back_numbered_with_its_time() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        enable_numbered_transmit_timestamps(&server).unwrap();
        let mut queue = TransmitQueue::new(4);
        let mut stamps = Vec::new();
        assert_eq!(queue.drain(&server, &mut stamps).unwrap(), 0, "nothing sent yet");

        // Ten datagrams, every other one asking; one more sent alone that
        // does not ask: only the five are stamped, numbered 0 to 4.
        let before = now();
        let mut batch = SendBatch::new(16);
        for n in 0..10u8 {
            assert!(batch.push(to, None, &[n; 48]));
            if n % 2 == 0 {
                batch.ask_transmit_timestamp();
            }
        }
        assert_eq!(batch.send(&server).unwrap(), 10);
        server.send_to(&[10; 48], to).unwrap();
        let after = now();
        // Loopback stamps a datagram as it is handed to the device, within
        // the send call; more than the queue takes in one call.
        assert_eq!(queue.drain(&server, &mut stamps).unwrap(), 5);
        let ids: Vec<u32> = stamps.iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..5).collect::<Vec<_>>());
        for stamp in &stamps {
            assert!(stamp.sent - before >= ntp_proto::NtpDuration::ZERO, "{stamp:?}");
            assert!(after - stamp.sent >= ntp_proto::NtpDuration::ZERO, "{stamp:?}");
        }
        assert!(stamps.windows(2).all(|w| w[1].sent - w[0].sent >= ntp_proto::NtpDuration::ZERO));
        let mut got = [0u8; 48];
        for n in 0..11u8 {
            client.recv(&mut got).unwrap();
            assert_eq!(got[0], n, "every datagram arrives, stamped or not");
        }

        // Asking with a source address too (both control messages), from
        // a wildcard socket; then enabling again restarts the count.
        let wildcard = UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_numbered_transmit_timestamps(&wildcard).unwrap();
        let mut batch = SendBatch::new(2);
        assert!(batch.push(to, Some("127.0.0.1".parse().unwrap()), &[11; 48]));
        batch.ask_transmit_timestamp();
        assert_eq!(batch.send(&wildcard).unwrap(), 1);
        stamps.clear();
        queue.drain(&wildcard, &mut stamps).unwrap();
        assert_eq!(stamps.iter().map(|s| s.id).collect::<Vec<_>>(), vec![0]);
        enable_numbered_transmit_timestamps(&server).unwrap();
        assert!(batch.push(to, None, &[12; 48]));
        batch.ask_transmit_timestamp();
        batch.send(&server).unwrap();
        stamps.clear();
        queue.drain(&server, &mut stamps).unwrap();
        assert_eq!(stamps.iter().map(|s| s.id).collect::<Vec<_>>(), vec![0]);
    }
}
