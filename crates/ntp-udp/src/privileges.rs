//! Dropping root after binding: `ntpd-sim serve --user NAME` binds its
//! sockets (port 123 needs root or CAP_NET_BIND_SERVICE), then becomes NAME
//! (its uid, its primary gid, no supplementary groups) for good, through
//! the libc calls below.

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

/// Becomes `user` for good: no supplementary groups, its gid, its uid; then
/// checks that uid 0 cannot be regained. Returns the uid and gid.
pub fn drop_to(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let (uid, gid) = lookup(user)?;
    let check = |call: &'static str, rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Call { call, source: std::io::Error::last_os_error() })
        }
    };
    // SAFETY: setgroups reads no memory with a count of 0; setgid and
    // setuid take plain integers. glibc applies each to every thread.
    unsafe {
        check("setgroups", libc::setgroups(0, std::ptr::null()))?;
        check("setgid", libc::setgid(gid))?;
        check("setuid", libc::setuid(uid))?;
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
