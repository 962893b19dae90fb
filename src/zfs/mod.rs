//! ZFS backend plumbing: the packed nvlist format and the `/dev/zfs` ioctl interface.
//!
//! Nothing here runs `zfs`/`zpool` or links libzfs; the initrd binary talks to the kernel module
//! directly. See `DESIGN-zfs.md` for the rollback flow built on top of these calls.

// The protocol layer wraps more of the interface than the backend uses today (rollback, XDR).
#![allow(dead_code)]

pub mod ioctl;
pub mod nvlist;

#[cfg(test)]
mod tests_libnvpair;
