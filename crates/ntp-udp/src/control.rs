//! Ancillary data: reading the receive and transmit timestamps and the
//! destination address the kernel attaches to a message, and writing the
//! source address a reply should leave from.

use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ntp_proto::NtpTimestamp;

/// Room for the control messages a received datagram carries, aligned for
/// `cmsghdr`: its receive timestamp twice (SCM_TIMESTAMPNS, 32 bytes, and,
/// on a socket that also takes transmit timestamps, SCM_TIMESTAMPING, 64)
/// and its destination address (IPV6_PKTINFO, 40): 136 bytes, which a
/// 128-byte buffer cut short, dropping the address a reply must leave from.
pub(crate) type Control = [u64; CONTROL_WORDS];
/// The size of [`Control`], in `u64`s.
pub(crate) const CONTROL_WORDS: usize = 32;

/// Room for what comes with a transmit timestamp on the error queue (the
/// timestamps, in two forms, and the extended error that carries the
/// datagram's id), aligned for `cmsghdr`.
pub(crate) type ErrorControl = [u64; 32];

/// What the kernel attached to one received message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ancillary {
    /// When it arrived (SCM_TIMESTAMPNS), on CLOCK_REALTIME.
    pub receive: Option<NtpTimestamp>,
    /// When a datagram we sent left (SCM_TIMESTAMPING, on the error queue).
    pub transmit: Option<NtpTimestamp>,
    /// The local address it was sent to (IP_PKTINFO / IPV6_PKTINFO).
    pub local: Option<IpAddr>,
    /// Which datagram a transmit timestamp is of: the socket's count of
    /// datagrams sent before it (SOF_TIMESTAMPING_OPT_ID, in the extended
    /// error beside the timestamp).
    pub transmit_id: Option<u32>,
}

/// Walks the control messages of a message that `recvmsg` or `recvmmsg`
/// filled in. Where the control data was cut short (MSG_CTRUNC), the
/// messages that arrived whole are still read: the kernel copies what fits,
/// and a message whose `cmsg_len` runs past what was copied is skipped.
pub(crate) fn read(header: &libc::msghdr) -> Ancillary {
    let mut found = Ancillary::default();
    // msg_controllen is a size_t on glibc, a socklen_t on musl.
    #[allow(clippy::unnecessary_cast)]
    let end = header.msg_control as usize + header.msg_controllen as usize;
    // SAFETY: `header` was filled by a successful recvmsg/recvmmsg, so its
    // control pointer and length describe the control messages the kernel
    // wrote; CMSG_FIRSTHDR and CMSG_NXTHDR never step past msg_controllen
    // and return null at the end. Each header is read in place (the buffer
    // is aligned for cmsghdr); a payload is read, unaligned, only if the
    // message's cmsg_len says it holds the whole value and that length ends
    // within what the kernel copied (a truncated last message claims its
    // full length).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if cmsg as usize + c.cmsg_len as usize > end {
                break;
            }
            let payload = (c.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                // SCM_TIMESTAMPING carries three timespecs, software first.
                (libc::SOL_SOCKET, kind @ (libc::SCM_TIMESTAMPNS | libc::SCM_TIMESTAMPING))
                    if payload >= size_of::<libc::timespec>() =>
                {
                    let stamp = ntp_time(std::ptr::read_unaligned(data.cast()));
                    if kind == libc::SCM_TIMESTAMPNS {
                        found.receive = stamp;
                    } else {
                        found.transmit = stamp;
                    }
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if payload >= size_of::<libc::in_pktinfo>() => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    found.local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if payload >= size_of::<libc::in6_pktinfo>() => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    found.local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                // A transmit timestamp's extended error: ENOMSG from the
                // timestamping origin, the datagram's id in ee_data.
                (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
                    if payload >= size_of::<libc::sock_extended_err>() =>
                {
                    let error: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                    if error.ee_errno == libc::ENOMSG as u32 && error.ee_origin == libc::SO_EE_ORIGIN_TIMESTAMPING {
                        found.transmit_id = Some(error.ee_data);
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    found
}

/// A kernel timespec as an NTP timestamp; `None` for the zero a
/// timestamp slot holds when empty, or a nanosecond count out of range.
fn ntp_time(stamp: libc::timespec) -> Option<NtpTimestamp> {
    let nanos = u32::try_from(stamp.tv_nsec).ok().filter(|&n| n < 1_000_000_000)?;
    if stamp.tv_sec == 0 && nanos == 0 {
        return None;
    }
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    Some(NtpTimestamp::from_unix(i64::from(stamp.tv_sec), nanos))
}

/// Writes an IP_PKTINFO (IPv4) or IPV6_PKTINFO control message asking the
/// kernel to send from `source`; returns its length.
pub(crate) fn write_source(source: IpAddr, control: &mut Control) -> usize {
    *control = [0; CONTROL_WORDS];
    // SAFETY: a msghdr whose control buffer is `control` (256 bytes, aligned
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

/// Appends, at byte `offset` of `control` (the length of what is written
/// there already, a multiple of the `cmsghdr` alignment), an SO_TIMESTAMPING
/// control message asking the kernel for this one datagram's software
/// transmit timestamp; returns the new length. The socket must report
/// software timestamps ([`crate::enable_numbered_transmit_timestamps`]).
pub(crate) fn write_transmit_request(control: &mut Control, offset: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<u32>() as u32) } as usize;
    assert!(offset % size_of::<u64>() == 0 && offset + space <= size_of::<Control>(), "control buffer overflow");
    // SAFETY: a msghdr whose control buffer starts `offset` bytes into
    // `control` (8-byte aligned, asserted above) with the room left after
    // it lets CMSG_FIRSTHDR find a header at that start; the header and its
    // four bytes of data (CMSG_SPACE, asserted to fit) stay in the buffer.
    unsafe {
        let mut header: libc::msghdr = MaybeUninit::zeroed().assume_init();
        header.msg_control = control.as_mut_ptr().cast::<u8>().add(offset).cast();
        header.msg_controllen = (size_of::<Control>() - offset) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SO_TIMESTAMPING;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>(), libc::SOF_TIMESTAMPING_TX_SOFTWARE);
    }
    offset + space
}
