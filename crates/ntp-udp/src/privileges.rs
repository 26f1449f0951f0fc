//! Dropping root after binding: `ntpd-sim serve --user NAME` binds its
//! sockets (port 123 needs root or CAP_NET_BIND_SERVICE), then becomes NAME
//! (its uid, its primary gid, no supplementary groups) for good, through
//! the libc calls below. A daemon that disciplines the system clock keeps
//! CAP_SYS_TIME, and only it, as chrony does.

use std::ffi::CString;

use thiserror::Error;

/// Why the privileges could not be dropped (the daemon then refuses to run).
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// No such user.
    #[error("no user named `{0}`")]
    NoSuchUser(String),
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Call {
        /// Which one.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// After dropping, root could be regained: refuse to go on.
    #[error("root privileges could be regained after switching to uid {0}")]
    NotDropped(u32),
}

/// The uid and primary gid of `user`.
pub fn lookup(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoSuchUser(user.into()))?;
    let mut entry: libc::passwd = unsafe_zeroed_passwd();
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: `name` is a NUL-terminated string, `entry` and `buffer` are
    // live and writable with the length given, `found` is a valid out
    // pointer; getpwnam_r writes only into them and points `found` at
    // `entry` or leaves it null.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found) };
    if rc != 0 {
        return Err(PrivilegeError::Call { call: "getpwnam_r", source: std::io::Error::from_raw_os_error(rc) });
    }
    if found.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.into()));
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: `passwd` is a plain C struct of integers and pointers, for
    // which all-zero (null pointers) is a valid value; it is only read
    // after getpwnam_r filled it.
    unsafe { std::mem::zeroed() }
}

/// What survives the drop to another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// No capability at all.
    Nothing,
    /// CAP_SYS_TIME (effective and permitted), to go on setting the clock.
    SysTime,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Leaves exactly CAP_SYS_TIME in the effective and permitted sets.
fn keep_only_sys_time() -> Result<(), PrivilegeError> {
    let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let bit = 1u32 << crate::kernel_clock::CAP_SYS_TIME;
    let data = [CapData { effective: bit, permitted: bit, inheritable: 0 }, CapData::default()];
    // SAFETY: `header` and `data` are live, properly laid out
    // (`__user_cap_header_struct` and two `__user_cap_data_struct` for
    // version 3); capset only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Call { call: "capset", source: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// Becomes `user` for good: no supplementary groups, its gid, its uid,
/// keeping what `keep` says; then checks that uid 0 cannot be regained.
/// Returns the uid and gid.
pub fn drop_to(user: &str, keep: Keep) -> Result<(u32, u32), PrivilegeError> {
    let (uid, gid) = lookup(user)?;
    let check = |call: &'static str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Call { call, source: std::io::Error::last_os_error() })
        }
    };
    // SAFETY: setgroups reads no memory with a count of 0; setgid, setuid
    // and prctl(PR_SET_KEEPCAPS) take plain integers. glibc applies the
    // id changes to every thread.
    unsafe {
        check("setgroups", libc::setgroups(0, std::ptr::null()))?;
        check("setgid", libc::setgid(gid))?;
        if keep == Keep::SysTime {
            check("prctl(PR_SET_KEEPCAPS)", libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        }
        check("setuid", libc::setuid(uid))?;
    }
    if keep == Keep::SysTime {
        keep_only_sys_time()?;
    }
    // SAFETY: as above, a plain integer argument.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(PrivilegeError::NotDropped(uid));
    }
    Ok((uid, gid))
}

/// The effective uid of this process.
#[must_use]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_users_up() {
        assert_eq!(lookup("root").unwrap(), (0, 0));
        assert!(matches!(lookup("no-such-user-here"), Err(PrivilegeError::NoSuchUser(_))));
        assert!(matches!(lookup("nul\0byte"), Err(PrivilegeError::NoSuchUser(_))));
    }
}
