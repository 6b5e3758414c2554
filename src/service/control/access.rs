//! Why the control socket cannot be opened, for `concertctl`'s message:
//! the socket's own group and mode, or the directory on the way that is
//! closed, read from the files themselves rather than assumed (the group
//! is the service user's, `concertd` only under the shipped units).

use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What stands between the caller and `socket`, whose connect(2) failed
/// with EACCES, and what to do about it.
pub fn denied(socket: &Path) -> String {
    // A directory that cannot be searched hides the socket itself.
    let (what, path, bit) = match closed_directory(socket) {
        Some(dir) => ("the directory", dir, (0o010, "x")),
        None => ("the socket", socket.to_path_buf(), (0o020, "w")),
    };
    let m = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return format!("cannot read the owner and group of {}: {e}", path.display()),
    };
    let group = group_name(m.gid());
    let remedy = if m.mode() & bit.0 == 0 {
        format!(
            "its mode lets no group in: its owner may open it to group {group} \
             (chmod g+{} {})",
            bit.1,
            path.display()
        )
    } else if in_group(m.gid()) {
        format!("you are in group {group}, which may open it, yet denied: ask its owner why")
    } else {
        format!(
            "members of group {group} may open it: add yourself to it \
             (usermod -aG {group} $USER, then log in again) or run concertctl as a member"
        )
    };
    format!(
        "{what} {} is {}'s, group {group}, mode {:04o}: {remedy}",
        path.display(),
        user_name(m.uid()),
        m.mode() & 0o7777,
    )
}

/// The first directory on the socket's path that the caller may not
/// search, if any.
fn closed_directory(socket: &Path) -> Option<std::path::PathBuf> {
    let mut ancestors: Vec<&Path> = socket.ancestors().skip(1).collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .filter(|d| !d.as_os_str().is_empty())
        .find(|d| {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: access(2) on a NUL-terminated path; the real ids are
            // the caller's, which is what matters here.
            unsafe { libc::access(c.as_ptr(), libc::X_OK) != 0 }
        })
        .map(Path::to_path_buf)
}

/// The process's groups, the effective one included.
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid(2) cannot fail; getgroups(2) first with 0 for the
    // count, then into a buffer of that size.
    unsafe {
        if libc::getegid() == gid {
            return true;
        }
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n <= 0 {
            return false;
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        n > 0 && groups[..n as usize].contains(&gid)
    }
}

/// A group's name, or its number when the group database has none.
fn group_name(gid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed `group` is a valid out-parameter (null pointers,
    // zero id) that getgrgid_r overwrites.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into `grp` and `buf`, both ours and sized
    // as told; `found` is null or points at `grp`.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || grp.gr_name.is_null() {
        return gid.to_string();
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
    unsafe { CStr::from_ptr(grp.gr_name) }
        .to_string_lossy()
        .into_owned()
}

/// A user's name, or its number when the user database has none.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as for `group_name`, with getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as for `group_name`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pw.pw_name.is_null() {
        return uid.to_string();
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}
