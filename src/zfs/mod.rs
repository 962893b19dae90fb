//! ZFS backend plumbing: the packed nvlist format and the `/dev/zfs` ioctl interface.
//!
//! Nothing here runs `zfs`/`zpool` or links libzfs; the initrd binary talks to the kernel module
//! directly. The rollback flow built on top of these calls is in `crate::backend::zfs`; the
//! interface itself is described in docs/kernel-interfaces.md (ZFS).

pub mod ioctl;
pub mod nvlist;

#[cfg(test)]
mod tests_libnvpair;
