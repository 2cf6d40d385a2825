//! Extended attributes by path, without following a final symlink
//! (`llistxattr`, `lgetxattr`, `lsetxattr`), and on open files
//! (`fsetxattr`). nix does not wrap these; each call is a thin, checked
//! libc call.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Values are at most 64 KiB (XATTR_SIZE_MAX); lists too (XATTR_LIST_MAX).
const XATTR_MAX: usize = 64 << 10;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// All xattrs of `path` (not following a final symlink), sorted by name.
/// A file system without xattr support yields none.
pub fn list(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    // A file system without xattrs has none; any other failure is an error.
    let failed = || {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        }
    };
    // Most files have no xattrs: ask for the list's size first, so that
    // they cost one call and no buffer (zeroing 64 KiB per entry was a
    // tenth of an unchanged re-capture's CPU).
    // SAFETY: `c` is NUL-terminated; a null buffer of size 0 asks for the size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return if n == 0 { Ok(Vec::new()) } else { failed() };
    }
    let mut names = vec![0u8; XATTR_MAX];
    // SAFETY: `c` is NUL-terminated; `names` is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return failed();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    let mut value = vec![0u8; XATTR_MAX];
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        // SAFETY: both strings are NUL-terminated; `value` is writable for its length.
        let v = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if v < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODATA) {
                continue; // removed meanwhile
            }
            return Err(e);
        }
        out.push((name.to_vec(), value[..v as usize].to_vec()));
    }
    out.sort();
    Ok(out)
}

/// Sets one xattr on `path` without following a final symlink.
pub fn set_path(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: the strings are NUL-terminated and `value` is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets one xattr on an open file or directory.
pub fn set_fd(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: the fd is open, the name NUL-terminated, `value` readable for its length.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
