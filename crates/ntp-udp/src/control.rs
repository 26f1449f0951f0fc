//! Ancillary data: reading the receive timestamp and destination address
//! the kernel attaches to a datagram, and writing the source address a
//! reply should leave from.

use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Room for the control messages we ask for (a receive timestamp and a
/// destination address), aligned for `cmsghdr`.
pub(super) type Control = [u64; 16];

/// The receive timestamp (SCM_TIMESTAMPNS) and the local destination
/// address (IP_PKTINFO / IPV6_PKTINFO) of a received message, where given.
pub(super) fn control_messages(header: &libc::msghdr) -> (Option<(i64, u32)>, Option<IpAddr>) {
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

/// Writes an IP_PKTINFO (IPv4) or IPV6_PKTINFO control message asking the
/// kernel to send from `source`; returns its length.
pub(super) fn write_source(source: IpAddr, control: &mut Control) -> usize {
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
