//! Raw bcachefs (Linux 6.12) subvolume ioctls: `BCH_IOCTL_SUBVOLUME_CREATE` / `_DESTROY` with
//! `struct bch_ioctl_subvolume` (docs/kernel-interfaces.md, bcachefs), and `statx` with
//! `STATX_SUBVOL`. All `unsafe` for bcachefs lives in this file.
//!
//! Paths handed to the kernel are resolved relative to `dirfd` (user_path_at / user_path_create in
//! fs/bcachefs/fs-ioctl.c), for both the new subvolume and the snapshot source. We always pass a
//! single path component for the destination (relative to an `openat2(RESOLVE_BENEATH)`-opened
//! directory) and a `/proc/self/fd/N` path for a snapshot source, so every path names exactly the
//! directory we opened and checked.

#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use rustix::fs::{AtFlags, StatxFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Setter};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// statfs f_type of a mounted bcachefs.
pub const BCACHEFS_SUPER_MAGIC: u32 = 0xca45_1a4e;
/// `STATX_SUBVOL` (Linux 6.10+): fills `stx_subvol`.
pub const STATX_SUBVOL: u32 = 0x8000;
/// Subvolume id of the filesystem root (`BCACHEFS_ROOT_SUBVOL`).
pub const ROOT_SUBVOL: u64 = 1;

const BCH_IOCTL_MAGIC: u8 = 0xbc;
// fs/bcachefs/bcachefs_ioctl.h: _IOW(0xbc, 16, struct bch_ioctl_subvolume), _IOW(0xbc, 17, …).
const SUBVOLUME_CREATE: Opcode = opcode::write::<IoctlSubvolume>(BCH_IOCTL_MAGIC, 16);
const SUBVOLUME_DESTROY: Opcode = opcode::write::<IoctlSubvolume>(BCH_IOCTL_MAGIC, 17);
const SUBVOL_SNAPSHOT_CREATE: u32 = 1 << 0;
const SUBVOL_SNAPSHOT_RO: u32 = 1 << 1;

/// `struct bch_ioctl_subvolume` (32 bytes).
#[repr(C)]
struct IoctlSubvolume {
    flags: u32,
    dirfd: u32,
    mode: u16,
    pad: [u16; 3],
    dst_ptr: u64,
    src_ptr: u64,
}

const _: () = assert!(std::mem::size_of::<IoctlSubvolume>() == 32);
const _: () = assert!(std::mem::offset_of!(IoctlSubvolume, dst_ptr) == 16);
const _: () = assert!(std::mem::offset_of!(IoctlSubvolume, src_ptr) == 24);

/// A single path component (no '/', not "." or "..", no NUL) as a C string.
fn component(name: &OsStr) -> Result<CString, Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    CString::new(b).map_err(|_| Errno::INVAL)
}

fn subvol_ioctl(
    dir: BorrowedFd,
    op_destroy: bool,
    flags: u32,
    dst: &CString,
    src: Option<&CString>,
) -> Result<(), Errno> {
    let a = IoctlSubvolume {
        flags,
        dirfd: dir.as_raw_fd() as u32,
        mode: 0o755,
        pad: [0; 3],
        dst_ptr: dst.as_ptr() as u64,
        src_ptr: src.map(|s| s.as_ptr() as u64).unwrap_or(0),
    };
    if op_destroy {
        // SAFETY: BCH_IOCTL_SUBVOLUME_DESTROY is _IOW with a 32-byte bch_ioctl_subvolume, which
        // IoctlSubvolume is (size and offsets asserted above). The kernel only reads the struct
        // and the NUL-terminated string `dst_ptr` points to; `a` and `dst` outlive the call.
        unsafe { ioctl(dir, Setter::<SUBVOLUME_DESTROY, IoctlSubvolume>::new(a)) }
    } else {
        // SAFETY: as above for BCH_IOCTL_SUBVOLUME_CREATE; `src_ptr` is 0 or points to the
        // NUL-terminated `src`, which outlives the call.
        unsafe { ioctl(dir, Setter::<SUBVOLUME_CREATE, IoctlSubvolume>::new(a)) }
    }
}

/// Create an empty subvolume `name` in directory `dir`.
pub fn subvol_create(dir: BorrowedFd, name: impl AsRef<OsStr>) -> Result<(), Errno> {
    let dst = component(name.as_ref())?;
    subvol_ioctl(dir, false, 0, &dst, None)
}

/// Snapshot the subvolume whose root directory is `src` as `name` in directory `dir`.
pub fn snapshot(
    dir: BorrowedFd,
    name: impl AsRef<OsStr>,
    src: BorrowedFd,
    readonly: bool,
) -> Result<(), Errno> {
    let dst = component(name.as_ref())?;
    let srcpath =
        CString::new(format!("/proc/self/fd/{}", src.as_raw_fd())).map_err(|_| Errno::INVAL)?;
    let flags = SUBVOL_SNAPSHOT_CREATE | if readonly { SUBVOL_SNAPSHOT_RO } else { 0 };
    subvol_ioctl(dir, false, flags, &dst, Some(&srcpath))
}

/// Destroy subvolume `name` (a direct entry of `dir`). ENOTEMPTY while it has child subvolumes
/// (or, in 6.12, for a while after they were destroyed).
/// (docs/kernel-interfaces.md#bcachefs-subvol-destroy, #bcachefs-enotempty)
pub fn subvol_destroy(dir: BorrowedFd, name: impl AsRef<OsStr>) -> Result<(), Errno> {
    let dst = component(name.as_ref())?;
    subvol_ioctl(dir, true, 0, &dst, None)
}

/// What we need from statx: identity, subvolume, times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub subvol: u64,
    /// Birth time (seconds), when the filesystem reports it.
    pub btime: Option<i64>,
    pub ctime: (i64, u32),
    pub mtime: (i64, u32),
}

impl Info {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }
}

/// statx of `name` in `dir` (not following symlinks); `name` "" means `dir` itself.
/// Fails with EOPNOTSUPP when the kernel does not report the subvolume.
/// (docs/kernel-interfaces.md#bcachefs-statx)
pub fn statx(dir: impl AsFd, name: impl AsRef<OsStr>) -> Result<Info, Errno> {
    let name = name.as_ref();
    let flags = if name.is_empty() {
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let mask =
        StatxFlags::BASIC_STATS | StatxFlags::BTIME | StatxFlags::from_bits_retain(STATX_SUBVOL);
    let st = rustix::fs::statx(dir, name, flags, mask)?;
    if st.stx_mask & STATX_SUBVOL == 0 {
        return Err(Errno::OPNOTSUPP);
    }
    Ok(Info {
        ino: st.stx_ino,
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        nlink: st.stx_nlink,
        subvol: st.stx_subvol,
        btime: (st.stx_mask & StatxFlags::BTIME.bits() != 0).then_some(st.stx_btime.tv_sec),
        ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
        mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
    })
}

pub fn is_bcachefs(fd: impl AsFd) -> Result<bool, Errno> {
    let s = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(s.f_type as u32 == BCACHEFS_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(component(OsStr::new("a")).is_ok());
        assert!(component(OsStr::new(".incomplete.x")).is_ok());
        assert!(component(OsStr::from_bytes(b"\xff")).is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(component(OsStr::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_numbers() {
        // _IOW(0xbc, 16/17, 32 bytes)
        assert_eq!(SUBVOLUME_CREATE as u32, 1 << 30 | 32 << 16 | 0xbc << 8 | 16);
        assert_eq!(
            SUBVOLUME_DESTROY as u32,
            1 << 30 | 32 << 16 | 0xbc << 8 | 17
        );
    }
}
