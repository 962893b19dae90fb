//! The `/dev/zfs` ioctl interface: `zfs_cmd_t`, the request numbers, and safe wrappers for the
//! operations ephemeral-root needs.
//!
//! Facts are described, with their upstream sources, in docs/kernel-interfaces.md (#zfs-calling,
//! #zfs-cmd, #zfs-numbers, #zfs-version) and were re-checked against openzfs/zfs tags
//! zfs-2.2.0 … zfs-2.4.4 (include/sys/zfs_ioctl.h, include/sys/fs/zfs.h, module/zfs/zfs_ioctl.c,
//! lib/libzfs_core/libzfs_core.c). Offsets were compiled from the real headers of every release
//! tag from 2.2.0 to 2.4.4: all agree with [`ZfsCmd`] **except zfs-2.3.1**, whose `zfs_cmd_t` is
//! 13760 bytes (zinject_record_t grew; 2.3.2 restored the old size with a union). That is why
//! [`check_module_version`] refuses 2.3.1.
//!
//! Calling convention (Linux): `ioctl(fd, ZFS_IOC_xxx, &zfs_cmd_t)` with the plain enum value as
//! the request. The kernel copies the whole struct in and back out, also on error.
//!
//! `unsafe` is confined to the `rustix::ioctl::Ioctl` impl for `ZfsIoctl` and to [`Zfs::call`].
//!
//! Each DSL-modifying ioctl (create, clone, rename, destroy, set, snapshot) returns only after its
//! transaction group has synced (`dsl_sync_task` waits, even when interrupted), so a completed call
//! is on disk.
#![allow(unsafe_code)]

use std::fmt;
use std::mem::{align_of, offset_of, size_of};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::nvlist::{NvError, NvList, Value};

// ---------------------------------------------------------------------------- request numbers

#[cfg(test)]
/// `ZFS_IOC_FIRST` on Linux (`'Z' << 8`); requests are `ZFS_IOC_FIRST + index`.
pub const ZFS_IOC_FIRST: u16 = 0x5a00;
pub const ZFS_IOC_OBJSET_STATS: u16 = 0x5a12;
pub const ZFS_IOC_DATASET_LIST_NEXT: u16 = 0x5a14;
pub const ZFS_IOC_SNAPSHOT_LIST_NEXT: u16 = 0x5a15;
pub const ZFS_IOC_SET_PROP: u16 = 0x5a16;
pub const ZFS_IOC_CREATE: u16 = 0x5a17;
pub const ZFS_IOC_DESTROY: u16 = 0x5a18;
#[cfg(test)]
pub const ZFS_IOC_ROLLBACK: u16 = 0x5a19;
pub const ZFS_IOC_RENAME: u16 = 0x5a1a;
pub const ZFS_IOC_PROMOTE: u16 = 0x5a22;
pub const ZFS_IOC_SNAPSHOT: u16 = 0x5a23;
pub const ZFS_IOC_INHERIT_PROP: u16 = 0x5a2b;
pub const ZFS_IOC_DESTROY_SNAPS: u16 = 0x5a3b;
pub const ZFS_IOC_CLONE: u16 = 0x5a42;
pub const ZFS_IOC_POOL_SYNC: u16 = 0x5a47;

/// `dmu_objset_type_t`.
pub const DMU_OST_ZFS: u32 = 2;

/// `ZFS_MAX_DATASET_NAME_LEN`: a full name must be shorter than this.
pub const MAX_DATASET_NAME_LEN: usize = 256;

/// lzc's minimum output buffer.
const MIN_DST: usize = 128 * 1024;
/// Never grow an output buffer beyond this (the kernel's own src limit is of this order).
const MAX_DST: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------- zfs_cmd_t

/// `dmu_objset_stats_t` (288 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DmuObjsetStats {
    pub dds_num_clones: u64,
    pub dds_creation_txg: u64,
    pub dds_guid: u64,
    /// `dmu_objset_type_t` (a C enum).
    pub dds_type: u32,
    pub dds_is_snapshot: u8,
    pub dds_inconsistent: u8,
    pub dds_redacted: u8,
    pub dds_origin: [u8; MAX_DATASET_NAME_LEN],
    /// Present from 2.3.3 on; padding before (docs/kernel-interfaces.md#zfs-cmd).
    pub dds_flags: u8,
}

/// `zfs_cmd_t` (13744 bytes, align 8), identical in 2.2.0–2.2.11, 2.3.0, 2.3.2–2.3.9 and
/// 2.4.0–2.4.4. Pointer fields are `u64` on every architecture. Structures the tool never uses
/// (`zfs_share_t`, `drr_begin`, `zinject_record_t`, `zfs_stat_t`) are opaque `u64` arrays of the
/// right size, which also gives them the right alignment.
#[repr(C)]
pub struct ZfsCmd {
    pub zc_name: [u8; 4096],
    pub zc_nvlist_src: u64,
    pub zc_nvlist_src_size: u64,
    pub zc_nvlist_dst: u64,
    pub zc_nvlist_dst_size: u64,
    /// `boolean_t`.
    pub zc_nvlist_dst_filled: u32,
    pub zc_pad2: u32,
    pub zc_history: u64,
    pub zc_value: [u8; 8192],
    pub zc_string: [u8; 256],
    pub zc_guid: u64,
    pub zc_nvlist_conf: u64,
    pub zc_nvlist_conf_size: u64,
    pub zc_cookie: u64,
    pub zc_objset_type: u64,
    pub zc_perm_action: u64,
    pub zc_history_len: u64,
    pub zc_history_offset: u64,
    pub zc_obj: u64,
    pub zc_iflags: u64,
    pub zc_share: [u64; 4],
    pub zc_objset_stats: DmuObjsetStats,
    pub zc_begin_record: [u64; 38],
    pub zc_inject_record: [u64; 44],
    pub zc_defer_destroy: u32,
    pub zc_flags: u32,
    pub zc_action_handle: u64,
    pub zc_cleanup_fd: i32,
    pub zc_simple: u8,
    pub zc_pad: [u8; 3],
    pub zc_sendobj: u64,
    pub zc_fromobj: u64,
    pub zc_createtxg: u64,
    pub zc_stat: [u64; 5],
    pub zc_zoneid: u64,
}

const _: () = {
    assert!(size_of::<DmuObjsetStats>() == 288);
    assert!(offset_of!(DmuObjsetStats, dds_creation_txg) == 8);
    assert!(offset_of!(DmuObjsetStats, dds_guid) == 16);
    assert!(offset_of!(DmuObjsetStats, dds_type) == 24);
    assert!(offset_of!(DmuObjsetStats, dds_is_snapshot) == 28);
    assert!(offset_of!(DmuObjsetStats, dds_inconsistent) == 29);
    assert!(offset_of!(DmuObjsetStats, dds_redacted) == 30);
    assert!(offset_of!(DmuObjsetStats, dds_origin) == 31);
    assert!(offset_of!(DmuObjsetStats, dds_flags) == 287);

    assert!(size_of::<ZfsCmd>() == 13744);
    assert!(align_of::<ZfsCmd>() == 8);
    assert!(offset_of!(ZfsCmd, zc_name) == 0);
    assert!(offset_of!(ZfsCmd, zc_nvlist_src) == 4096);
    assert!(offset_of!(ZfsCmd, zc_nvlist_src_size) == 4104);
    assert!(offset_of!(ZfsCmd, zc_nvlist_dst) == 4112);
    assert!(offset_of!(ZfsCmd, zc_nvlist_dst_size) == 4120);
    assert!(offset_of!(ZfsCmd, zc_nvlist_dst_filled) == 4128);
    assert!(offset_of!(ZfsCmd, zc_pad2) == 4132);
    assert!(offset_of!(ZfsCmd, zc_history) == 4136);
    assert!(offset_of!(ZfsCmd, zc_value) == 4144);
    assert!(offset_of!(ZfsCmd, zc_string) == 12336);
    assert!(offset_of!(ZfsCmd, zc_guid) == 12592);
    assert!(offset_of!(ZfsCmd, zc_nvlist_conf) == 12600);
    assert!(offset_of!(ZfsCmd, zc_nvlist_conf_size) == 12608);
    assert!(offset_of!(ZfsCmd, zc_cookie) == 12616);
    assert!(offset_of!(ZfsCmd, zc_objset_type) == 12624);
    assert!(offset_of!(ZfsCmd, zc_perm_action) == 12632);
    assert!(offset_of!(ZfsCmd, zc_history_len) == 12640);
    assert!(offset_of!(ZfsCmd, zc_history_offset) == 12648);
    assert!(offset_of!(ZfsCmd, zc_obj) == 12656);
    assert!(offset_of!(ZfsCmd, zc_iflags) == 12664);
    assert!(offset_of!(ZfsCmd, zc_share) == 12672);
    assert!(offset_of!(ZfsCmd, zc_objset_stats) == 12704);
    assert!(offset_of!(ZfsCmd, zc_begin_record) == 12992);
    assert!(offset_of!(ZfsCmd, zc_inject_record) == 13296);
    assert!(offset_of!(ZfsCmd, zc_defer_destroy) == 13648);
    assert!(offset_of!(ZfsCmd, zc_flags) == 13652);
    assert!(offset_of!(ZfsCmd, zc_action_handle) == 13656);
    assert!(offset_of!(ZfsCmd, zc_cleanup_fd) == 13664);
    assert!(offset_of!(ZfsCmd, zc_simple) == 13668);
    assert!(offset_of!(ZfsCmd, zc_pad) == 13669);
    assert!(offset_of!(ZfsCmd, zc_sendobj) == 13672);
    assert!(offset_of!(ZfsCmd, zc_fromobj) == 13680);
    assert!(offset_of!(ZfsCmd, zc_createtxg) == 13688);
    assert!(offset_of!(ZfsCmd, zc_stat) == 13696);
    assert!(offset_of!(ZfsCmd, zc_zoneid) == 13736);
};

impl ZfsCmd {
    /// An all-zero command, on the heap (it is 13.4 KiB).
    pub fn new() -> Box<ZfsCmd> {
        Box::new(ZfsCmd {
            zc_name: [0; 4096],
            zc_nvlist_src: 0,
            zc_nvlist_src_size: 0,
            zc_nvlist_dst: 0,
            zc_nvlist_dst_size: 0,
            zc_nvlist_dst_filled: 0,
            zc_pad2: 0,
            zc_history: 0,
            zc_value: [0; 8192],
            zc_string: [0; 256],
            zc_guid: 0,
            zc_nvlist_conf: 0,
            zc_nvlist_conf_size: 0,
            zc_cookie: 0,
            zc_objset_type: 0,
            zc_perm_action: 0,
            zc_history_len: 0,
            zc_history_offset: 0,
            zc_obj: 0,
            zc_iflags: 0,
            zc_share: [0; 4],
            zc_objset_stats: DmuObjsetStats {
                dds_num_clones: 0,
                dds_creation_txg: 0,
                dds_guid: 0,
                dds_type: 0,
                dds_is_snapshot: 0,
                dds_inconsistent: 0,
                dds_redacted: 0,
                dds_origin: [0; MAX_DATASET_NAME_LEN],
                dds_flags: 0,
            },
            zc_begin_record: [0; 38],
            zc_inject_record: [0; 44],
            zc_defer_destroy: 0,
            zc_flags: 0,
            zc_action_handle: 0,
            zc_cleanup_fd: 0,
            zc_simple: 0,
            zc_pad: [0; 3],
            zc_sendobj: 0,
            zc_fromobj: 0,
            zc_createtxg: 0,
            zc_stat: [0; 5],
            zc_zoneid: 0,
        })
    }

    /// `zc_name` up to its first NUL.
    pub fn name(&self) -> String {
        cstr_field(&self.zc_name)
    }
}

fn cstr_field(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Copy `s` into a fixed C string field (NUL-terminated, rest zeroed).
fn put_cstr(field: &mut [u8], s: &str, limit: usize) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty name");
    }
    if s.as_bytes().contains(&0) {
        return Err("name contains a NUL byte");
    }
    if s.len() >= limit.min(field.len()) {
        return Err("name too long (ZFS names must be shorter than 256 bytes)");
    }
    field.fill(0);
    field[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------- errors

/// The operation an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ObjsetStats,
    ListChildren,
    ListSnapshots,
    Snapshot,
    #[cfg(test)]
    Rollback,
    Create,
    Clone,
    Rename,
    Destroy,
    DestroySnaps,
    SetProps,
    InheritProp,
    PoolSync,
    Promote,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::ObjsetStats => "read properties of",
            Op::ListChildren => "list children of",
            Op::ListSnapshots => "list snapshots of",
            Op::Snapshot => "snapshot",
            #[cfg(test)]
            Op::Rollback => "roll back",
            Op::Create => "create",
            Op::Clone => "clone",
            Op::Rename => "rename",
            Op::Destroy => "destroy",
            Op::DestroySnaps => "destroy snapshots",
            Op::SetProps => "set properties on",
            Op::InheritProp => "clear property on",
            Op::PoolSync => "sync pool",
            Op::Promote => "promote",
        })
    }
}

/// ZFS-specific error numbers (`zfs_errno_t`, from 1024; append-only: 2.3 adds 1049–1051, 2.4
/// adds 1052; unknown ones print as "ZFS error N"; docs/kernel-interfaces.md#zfs-calling).
const ZFS_ERRNO_NAMES: &[&str] = &[
    "ZFS_ERR_CHECKPOINT_EXISTS",
    "ZFS_ERR_DISCARDING_CHECKPOINT",
    "ZFS_ERR_NO_CHECKPOINT",
    "ZFS_ERR_DEVRM_IN_PROGRESS",
    "ZFS_ERR_VDEV_TOO_BIG",
    "ZFS_ERR_IOC_CMD_UNAVAIL: the loaded zfs module does not know this request",
    "ZFS_ERR_IOC_ARG_UNAVAIL: the zfs module rejected an argument name",
    "ZFS_ERR_IOC_ARG_REQUIRED: the zfs module wants an argument that was not sent",
    "ZFS_ERR_IOC_ARG_BADTYPE: the zfs module rejected an argument type",
    "ZFS_ERR_WRONG_PARENT",
    "ZFS_ERR_FROM_IVSET_GUID_MISSING",
    "ZFS_ERR_FROM_IVSET_GUID_MISMATCH",
    "ZFS_ERR_SPILL_BLOCK_FLAG_MISSING",
    "ZFS_ERR_UNKNOWN_SEND_STREAM_FEATURE",
    "ZFS_ERR_EXPORT_IN_PROGRESS",
    "ZFS_ERR_BOOKMARK_SOURCE_NOT_ANCESTOR",
    "ZFS_ERR_STREAM_TRUNCATED",
    "ZFS_ERR_STREAM_LARGE_BLOCK_MISMATCH",
    "ZFS_ERR_RESILVER_IN_PROGRESS",
    "ZFS_ERR_REBUILD_IN_PROGRESS",
    "ZFS_ERR_BADPROP: invalid property value",
    "ZFS_ERR_VDEV_NOTSUP",
    "ZFS_ERR_NOT_USER_NAMESPACE",
    "ZFS_ERR_RESUME_EXISTS",
    "ZFS_ERR_CRYPTO_NOTSUP",
];

/// A description of `errno` for operation `op`, with the ZFS-specific meaning where there is one.
pub fn describe_errno(op: Op, errno: i32) -> String {
    let e = Errno::from_raw_os_error(errno);
    let specific = match (op, e) {
        #[cfg(test)]
        (Op::Rollback, Errno::EXIST) => {
            Some("the target is not the most recent snapshot (or a newer bookmark exists)")
        }
        #[cfg(test)]
        (Op::Rollback, Errno::SRCH) => Some("no such snapshot, or the dataset has no snapshots"),
        #[cfg(test)]
        (Op::Rollback, Errno::AGAIN) => Some("the snapshot is too new; retry after a pool sync"),
        (Op::Destroy, Errno::BUSY) => Some("dataset is busy (mounted, held, or has snapshots)"),
        (Op::Destroy, Errno::EXIST) => Some("dataset has children or clones"),
        (Op::DestroySnaps, Errno::EXIST) => Some("snapshot has clones"),
        (Op::DestroySnaps, Errno::BUSY) => Some("snapshot has user holds"),
        (Op::Snapshot, Errno::XDEV) => {
            Some("snapshots must be in the named pool, at most one per filesystem")
        }
        (Op::Promote, Errno::EXIST) => {
            Some("a snapshot of the clone has the same name as one of the origin's")
        }
        (Op::Rename, Errno::XDEV) => Some("cannot move a snapshot to another filesystem"),
        (Op::Create | Op::Clone | Op::Rename | Op::Snapshot, Errno::EXIST) => {
            Some("target already exists")
        }
        (Op::Create | Op::Clone | Op::Rename, Errno::NOENT) => {
            Some("parent dataset does not exist")
        }
        (_, Errno::NOENT) => Some("dataset does not exist"),
        (_, Errno::ACCESS) => Some("permission denied (encryption key not loaded, or not root)"),
        (_, Errno::ROFS) => Some("pool or dataset is read-only"),
        _ => None,
    };
    if let Some(s) = specific {
        return format!("{s} (errno {errno})");
    }
    if (1024..1024 + ZFS_ERRNO_NAMES.len() as i32).contains(&errno) {
        return format!(
            "{} (errno {errno})",
            ZFS_ERRNO_NAMES[(errno - 1024) as usize]
        );
    }
    if errno >= 1024 {
        return format!("ZFS error {errno}");
    }
    format!("{e}")
}

fn describe_failures(failures: &[(String, i32)], op: Op) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|(n, e)| format!("{n}: {}", describe_errno(op, *e)))
        .collect();
    format!(" [{}]", parts.join("; "))
}

/// Errors from the ZFS layer. Every variant names the operation and the dataset.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error("cannot open /dev/zfs: {0} (is the zfs kernel module loaded and the pool imported?)")]
    Open(Errno),
    #[error("cannot {op} {name}: {}{}", describe_errno(*.op, *.errno), describe_failures(.failures, *.op))]
    Ioctl {
        op: Op,
        name: String,
        /// The raw errno, which may be a ZFS-specific code (≥ 1024).
        errno: i32,
        /// Per-item errors the kernel reported (snapshot or property name → errno).
        failures: Vec<(String, i32)>,
    },
    #[error("cannot {op} {name:?}: {reason}")]
    InvalidArgument {
        op: Op,
        name: String,
        reason: String,
    },
    #[error("cannot {op} {name}: unreadable reply from the zfs module: {source}")]
    Reply {
        op: Op,
        name: String,
        #[source]
        source: NvError,
    },
    #[error("cannot read {path}: {source} (is the zfs kernel module loaded?)")]
    VersionUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "OpenZFS kernel module version {found:?} is not supported: this build knows the ioctl \
         layout of OpenZFS {SUPPORTED_VERSIONS}"
    )]
    UnsupportedVersion { found: String },
}

impl ZfsError {
    /// The raw errno of a failed ioctl.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ZfsError::Ioctl { errno, .. } => Some(*errno),
            ZfsError::Open(e) => Some(e.raw_os_error()),
            _ => None,
        }
    }

    pub fn is(&self, e: Errno) -> bool {
        self.errno() == Some(e.raw_os_error())
    }

    pub fn is_not_found(&self) -> bool {
        self.is(Errno::NOENT)
    }
}

fn invalid(op: Op, name: &str, reason: impl Into<String>) -> ZfsError {
    ZfsError::InvalidArgument {
        op,
        name: name.to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------- version check

pub const MODULE_VERSION_PATH: &str = "/sys/module/zfs/version";
pub const SUPPORTED_VERSIONS: &str = "2.2.x, 2.3.x except 2.3.1, and 2.4.x";

/// `major.minor.patch` of the loaded module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModuleVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl fmt::Display for ModuleVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parse the leading `X.Y.Z` of a module version string such as `2.3.2-2~bpo12+2`, `2.3.9-1`,
/// `2.4.4-1`, `zfs-2.2.7-1` or `2.3.99-364_g1e7f1a4ac`.
pub fn parse_module_version(s: &str) -> Option<ModuleVersion> {
    let s = s.trim();
    let s = s
        .strip_prefix("zfs-")
        .or_else(|| s.strip_prefix('v'))
        .unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let mut it = s[..end].split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(ModuleVersion {
        major,
        minor,
        patch,
    })
}

/// Whether this code knows the `zfs_cmd_t` layout and request numbers of `v`.
///
/// Verified by compiling `offsetof`/`sizeof`/request-number probes against the headers of every
/// release tag 2.2.0–2.2.11, 2.3.0–2.3.9 and 2.4.0–2.4.4: all identical except 2.3.1 (13760-byte
/// `zfs_cmd_t`, an ABI break reverted in 2.3.2). Later patch releases of these series are accepted:
/// OpenZFS keeps `zfs_cmd_t` fixed within a series (2.4 adds a `_Static_assert` on its size) and
/// only appends to the request enum. `x.y.99` versions are development snapshots and are refused.
pub fn is_supported(v: ModuleVersion) -> bool {
    v.major == 2 && (2..=4).contains(&v.minor) && v.patch < 99 && !(v.minor == 3 && v.patch == 1)
}

/// Check a version string (the contents of `/sys/module/zfs/version`).
pub fn check_module_version_str(s: &str) -> Result<ModuleVersion, ZfsError> {
    match parse_module_version(s) {
        Some(v) if is_supported(v) => Ok(v),
        _ => Err(ZfsError::UnsupportedVersion {
            found: s.trim().to_string(),
        }),
    }
}

/// Read `/sys/module/zfs/version` and refuse module versions whose ioctl ABI is not verified.
pub fn check_module_version() -> Result<ModuleVersion, ZfsError> {
    let s = std::fs::read_to_string(MODULE_VERSION_PATH).map_err(|source| {
        ZfsError::VersionUnreadable {
            path: MODULE_VERSION_PATH.to_string(),
            source,
        }
    })?;
    check_module_version_str(&s)
}

// ---------------------------------------------------------------------------- requests

/// Everything that goes into one ioctl, built without touching the kernel (so it can be tested).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub op: Op,
    pub ioc: u16,
    /// `zc_name`.
    pub name: String,
    /// `zc_value` (rename target, inherited property name).
    pub value: Option<String>,
    /// Input nvlist; new-style requests always send one (possibly empty).
    pub input: Option<NvList>,
    pub cookie: u64,
    pub objset_type: u64,
    pub simple: bool,
    pub defer_destroy: bool,
    /// Give the kernel an output buffer.
    pub want_output: bool,
}

impl Request {
    fn new(op: Op, ioc: u16, name: &str) -> Request {
        Request {
            op,
            ioc,
            name: name.to_string(),
            value: None,
            input: None,
            cookie: 0,
            objset_type: 0,
            simple: false,
            defer_destroy: false,
            want_output: false,
        }
    }

    /// Fill a zeroed `zfs_cmd_t` from this request, pointing at `src` and `dst`.
    /// The pointers stay valid only while `src` and `dst` are borrowed.
    pub fn fill(&self, zc: &mut ZfsCmd, src: &[u8], dst: &mut [u8]) -> Result<(), ZfsError> {
        put_cstr(&mut zc.zc_name, &self.name, MAX_DATASET_NAME_LEN)
            .map_err(|r| invalid(self.op, &self.name, r))?;
        if let Some(v) = &self.value {
            put_cstr(&mut zc.zc_value, v, MAX_DATASET_NAME_LEN)
                .map_err(|r| invalid(self.op, v, r))?;
        }
        if !src.is_empty() {
            zc.zc_nvlist_src = src.as_ptr() as usize as u64;
            zc.zc_nvlist_src_size = src.len() as u64;
        }
        if !dst.is_empty() {
            zc.zc_nvlist_dst = dst.as_mut_ptr() as usize as u64;
            zc.zc_nvlist_dst_size = dst.len() as u64;
        }
        zc.zc_nvlist_dst_filled = 0;
        zc.zc_cookie = self.cookie;
        zc.zc_objset_type = self.objset_type;
        zc.zc_simple = self.simple as u8;
        zc.zc_defer_destroy = self.defer_destroy as u32;
        Ok(())
    }
}

/// The pool part of a dataset or snapshot name.
pub fn pool_of(name: &str) -> &str {
    let end = name.find(['/', '@', '#']).unwrap_or(name.len());
    &name[..end]
}

fn check_name(op: Op, name: &str, snapshot: bool) -> Result<(), ZfsError> {
    let mut scratch = [0u8; MAX_DATASET_NAME_LEN];
    put_cstr(&mut scratch, name, MAX_DATASET_NAME_LEN).map_err(|r| invalid(op, name, r))?;
    if name.contains('@') != snapshot {
        let why = if snapshot {
            "not a snapshot name (needs '@')"
        } else {
            "must not be a snapshot"
        };
        return Err(invalid(op, name, why));
    }
    if name.contains('%') {
        return Err(invalid(op, name, "names with '%' are reserved"));
    }
    Ok(())
}

fn snaps_nvlist(op: Op, snaps: &[&str]) -> Result<(String, NvList), ZfsError> {
    let first = snaps
        .first()
        .ok_or_else(|| invalid(op, "", "no snapshots given"))?;
    let pool = pool_of(first).to_string();
    let mut l = NvList::new();
    for s in snaps {
        check_name(op, s, true)?;
        if pool_of(s) != pool {
            return Err(invalid(op, s, format!("not in pool {pool}")));
        }
        l.insert(*s, Value::Boolean);
    }
    Ok((pool, l))
}

/// `ZFS_IOC_SNAPSHOT`: zc_name = pool; `{"snaps": {fs@snap: BOOLEAN…}, "props"?: {user props}}`.
/// At most one snapshot per filesystem; all or none are created.
pub fn snapshot_request(snaps: &[&str], user_props: &[(&str, &str)]) -> Result<Request, ZfsError> {
    let (pool, snaps) = snaps_nvlist(Op::Snapshot, snaps)?;
    let mut input = NvList::new().with("snaps", Value::NvList(snaps));
    if !user_props.is_empty() {
        let mut p = NvList::new();
        for (k, v) in user_props {
            if !k.contains(':') {
                return Err(invalid(
                    Op::Snapshot,
                    k,
                    "snapshot properties must be user properties",
                ));
            }
            p.insert(*k, Value::String(v.to_string()));
        }
        input.insert("props", Value::NvList(p));
    }
    let mut r = Request::new(Op::Snapshot, ZFS_IOC_SNAPSHOT, &pool);
    r.input = Some(input);
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_DESTROY_SNAPS`: zc_name = pool; `{"snaps": {…}, "defer"?: BOOLEAN}`. Missing
/// snapshots are ignored by the kernel.
pub fn destroy_snaps_request(snaps: &[&str], defer: bool) -> Result<Request, ZfsError> {
    let (pool, snaps) = snaps_nvlist(Op::DestroySnaps, snaps)?;
    let mut input = NvList::new().with("snaps", Value::NvList(snaps));
    if defer {
        input.insert("defer", Value::Boolean);
    }
    let mut r = Request::new(Op::DestroySnaps, ZFS_IOC_DESTROY_SNAPS, &pool);
    r.input = Some(input);
    r.want_output = true;
    Ok(r)
}

#[cfg(test)]
/// `ZFS_IOC_ROLLBACK`: zc_name = filesystem; `{"target"?: fs@snap}`. Needs an output buffer: a
/// successful rollback returns `{"target": …}`.
pub fn rollback_request(fs: &str, target: Option<&str>) -> Result<Request, ZfsError> {
    check_name(Op::Rollback, fs, false)?;
    let mut input = NvList::new();
    if let Some(t) = target {
        check_name(Op::Rollback, t, true)?;
        if !t.starts_with(fs) || t.as_bytes().get(fs.len()) != Some(&b'@') {
            return Err(invalid(Op::Rollback, t, format!("not a snapshot of {fs}")));
        }
        input.insert("target", Value::String(t.to_string()));
    }
    let mut r = Request::new(Op::Rollback, ZFS_IOC_ROLLBACK, fs);
    r.input = Some(input);
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_CREATE`: zc_name = new dataset; `{"type": int32 2, "props"?: {…}}`.
pub fn create_request(name: &str, props: &NvList) -> Result<Request, ZfsError> {
    check_name(Op::Create, name, false)?;
    let mut input = NvList::new().with("type", Value::Int32(DMU_OST_ZFS as i32));
    if !props.is_empty() {
        input.insert("props", Value::NvList(props.clone()));
    }
    let mut r = Request::new(Op::Create, ZFS_IOC_CREATE, name);
    r.input = Some(input);
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_CLONE`: zc_name = new filesystem; `{"origin": fs@snap, "props"?: {…}}`.
pub fn clone_request(name: &str, origin: &str, props: &NvList) -> Result<Request, ZfsError> {
    check_name(Op::Clone, name, false)?;
    check_name(Op::Clone, origin, true)?;
    if pool_of(name) != pool_of(origin) {
        return Err(invalid(
            Op::Clone,
            name,
            format!("origin {origin} is in another pool"),
        ));
    }
    let mut input = NvList::new().with("origin", Value::String(origin.to_string()));
    if !props.is_empty() {
        input.insert("props", Value::NvList(props.clone()));
    }
    let mut r = Request::new(Op::Clone, ZFS_IOC_CLONE, name);
    r.input = Some(input);
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_RENAME` (legacy): zc_name = old, zc_value = new, zc_cookie = 0 (not recursive).
/// Filesystem renames are atomic and may move a dataset to another parent in the same pool.
pub fn rename_request(from: &str, to: &str) -> Result<Request, ZfsError> {
    let snap = from.contains('@');
    check_name(Op::Rename, from, snap)?;
    check_name(Op::Rename, to, snap)?;
    if pool_of(from) != pool_of(to) {
        return Err(invalid(
            Op::Rename,
            from,
            format!("cannot rename to another pool ({to})"),
        ));
    }
    let mut r = Request::new(Op::Rename, ZFS_IOC_RENAME, from);
    r.value = Some(to.to_string());
    r.objset_type = DMU_OST_ZFS as u64;
    Ok(r)
}

/// `ZFS_IOC_DESTROY` (legacy): one dataset, no recursion. A filesystem must be unmounted and
/// have no snapshots or children. `defer` applies to snapshots only.
pub fn destroy_request(name: &str, defer: bool) -> Result<Request, ZfsError> {
    check_name(Op::Destroy, name, name.contains('@'))?;
    let mut r = Request::new(Op::Destroy, ZFS_IOC_DESTROY, name);
    r.defer_destroy = defer;
    r.objset_type = DMU_OST_ZFS as u64;
    Ok(r)
}

/// `ZFS_IOC_SET_PROP` (legacy): zc_name = dataset, src = `{prop: value}` where value is a
/// `uint64` for numeric and index properties (`readonly`: 0/1, `canmount`: 0 off/1 on/2 noauto),
/// a string for string properties (`mountpoint`) and user properties (`module:name`).
/// zc_cookie = 0 means a local (not received) value. The kernel returns `{prop: int32 errno}`
/// for properties that failed.
pub fn set_props_request(name: &str, props: &NvList) -> Result<Request, ZfsError> {
    check_name(Op::SetProps, name, name.contains('@'))?;
    if props.is_empty() {
        return Err(invalid(Op::SetProps, name, "no properties given"));
    }
    let mut r = Request::new(Op::SetProps, ZFS_IOC_SET_PROP, name);
    r.input = Some(props.clone());
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_INHERIT_PROP` (legacy): zc_name = dataset, zc_value = property; removes a local
/// value (for user properties: deletes it). Used to unpin.
pub fn inherit_prop_request(name: &str, prop: &str) -> Result<Request, ZfsError> {
    check_name(Op::InheritProp, name, name.contains('@'))?;
    let mut r = Request::new(Op::InheritProp, ZFS_IOC_INHERIT_PROP, name);
    r.value = Some(prop.to_string());
    Ok(r)
}

/// `ZFS_IOC_POOL_SYNC`: zc_name = pool; `{"force": boolean_value}` (required key).
pub fn pool_sync_request(pool: &str, force: bool) -> Result<Request, ZfsError> {
    if pool.contains(['/', '@']) {
        return Err(invalid(Op::PoolSync, pool, "not a pool name"));
    }
    let mut r = Request::new(Op::PoolSync, ZFS_IOC_POOL_SYNC, pool);
    r.input = Some(NvList::new().with("force", Value::BooleanValue(force)));
    r.want_output = true;
    Ok(r)
}

/// `ZFS_IOC_PROMOTE` (legacy): zc_name = clone. The clone takes over its origin snapshot (and
/// the origin's earlier snapshots); the former origin becomes a clone of it. On a snapshot name
/// conflict the kernel fails with EEXIST and names the conflicting snapshot in `zc_string`.
pub fn promote_request(clone: &str) -> Result<Request, ZfsError> {
    check_name(Op::Promote, clone, false)?;
    let mut r = Request::new(Op::Promote, ZFS_IOC_PROMOTE, clone);
    r.objset_type = DMU_OST_ZFS as u64;
    Ok(r)
}

/// `ZFS_IOC_OBJSET_STATS` (legacy) with a property list.
pub fn objset_stats_request(name: &str) -> Result<Request, ZfsError> {
    check_name(Op::ObjsetStats, name, name.contains('@'))?;
    let mut r = Request::new(Op::ObjsetStats, ZFS_IOC_OBJSET_STATS, name);
    r.want_output = true;
    Ok(r)
}

// ---------------------------------------------------------------------------- replies

/// The "fast" statistics the kernel puts in `zc_objset_stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastStats {
    pub num_clones: u64,
    pub creation_txg: u64,
    pub guid: u64,
    /// `dmu_objset_type_t`: [`DMU_OST_ZFS`] for a filesystem (3 is a volume).
    pub objset_type: u32,
    pub is_snapshot: bool,
    pub inconsistent: bool,
    /// Origin snapshot of a clone, empty otherwise.
    pub origin: String,
}

impl From<&DmuObjsetStats> for FastStats {
    fn from(d: &DmuObjsetStats) -> FastStats {
        FastStats {
            num_clones: d.dds_num_clones,
            creation_txg: d.dds_creation_txg,
            guid: d.dds_guid,
            objset_type: d.dds_type,
            is_snapshot: d.dds_is_snapshot != 0,
            inconsistent: d.dds_inconsistent != 0,
            origin: cstr_field(&d.dds_origin),
        }
    }
}

/// One entry of the properties list: `{"value": uint64|string, "source"?: string}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropEntry<'a> {
    pub value: &'a Value,
    /// Dataset the value was set on (== the dataset itself when set locally), `"$recvd"` for
    /// received values, `""` for a default, absent for statistics.
    pub source: Option<&'a str>,
}

/// `zfs_keystatus_t`.
pub const KEYSTATUS_NONE: u64 = 0;
pub const KEYSTATUS_UNAVAILABLE: u64 = 1;
pub const KEYSTATUS_AVAILABLE: u64 = 2;
/// `enum zio_encrypt`: 2 = off. Unencrypted datasets do not report `encryption` at all.
pub const ZIO_CRYPT_OFF: u64 = 2;
/// `zfs_canmount_type_t`.
pub const CANMOUNT_OFF: u64 = 0;
pub const CANMOUNT_ON: u64 = 1;
pub const CANMOUNT_NOAUTO: u64 = 2;

/// The user property that pins an old root.
pub const PINNED_PROP: &str = "ephemeral-root:pinned";

/// Result of `ZFS_IOC_OBJSET_STATS`: fast stats plus the property list.
///
/// The kernel reports only properties that are set somewhere (locally, inherited, received) and
/// computed statistics; a property at its default value is usually absent, and the accessors
/// below return the default then.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetStats {
    pub name: String,
    pub fast: FastStats,
    pub props: NvList,
}

impl DatasetStats {
    pub fn prop(&self, name: &str) -> Option<PropEntry<'_>> {
        let entry = self.props.get_nvlist(name)?;
        Some(PropEntry {
            value: entry.get("value")?,
            source: entry.get_str("source"),
        })
    }
    pub fn prop_u64(&self, name: &str) -> Option<u64> {
        self.prop(name).and_then(|p| p.value.as_u64())
    }
    pub fn prop_str(&self, name: &str) -> Option<&str> {
        self.prop(name).and_then(|p| p.value.as_str())
    }
    /// Whether the property is set on this dataset itself.
    pub fn is_local(&self, name: &str) -> bool {
        self.prop(name).and_then(|p| p.source) == Some(self.name.as_str())
    }
    pub fn readonly(&self) -> bool {
        self.prop_u64("readonly") == Some(1)
    }
    /// `canmount` (default on).
    pub fn canmount(&self) -> u64 {
        self.prop_u64("canmount").unwrap_or(CANMOUNT_ON)
    }
    #[cfg(test)]
    /// The raw `mountpoint` value and where it was set; `None` = default (`/<dataset>`).
    /// An inherited value is the ancestor's; libzfs appends the relative path to it.
    pub fn mountpoint(&self) -> Option<(&str, Option<&str>)> {
        let p = self.prop("mountpoint")?;
        Some((p.value.as_str()?, p.source))
    }
    /// `encryption` as `enum zio_encrypt` ([`ZIO_CRYPT_OFF`] when unencrypted).
    pub fn encryption(&self) -> u64 {
        self.prop_u64("encryption").unwrap_or(ZIO_CRYPT_OFF)
    }
    pub fn is_encrypted(&self) -> bool {
        self.encryption() != ZIO_CRYPT_OFF && self.encryption() != 0
    }
    /// `keystatus`: [`KEYSTATUS_NONE`] for unencrypted datasets.
    pub fn keystatus(&self) -> u64 {
        self.prop_u64("keystatus").unwrap_or(KEYSTATUS_NONE)
    }
    /// Encrypted and the key is not loaded: the dataset cannot be mounted or written.
    pub fn key_missing(&self) -> bool {
        self.is_encrypted() && self.keystatus() != KEYSTATUS_AVAILABLE
    }
    pub fn encryption_root(&self) -> Option<&str> {
        self.prop_str("encryptionroot")
    }
    /// `creation`, seconds since the epoch.
    pub fn creation(&self) -> Option<u64> {
        self.prop_u64("creation")
    }
    #[cfg(test)]
    pub fn createtxg(&self) -> u64 {
        self.prop_u64("createtxg").unwrap_or(self.fast.creation_txg)
    }
    #[cfg(test)]
    /// The value of `ephemeral-root:pinned`, if set (locally or inherited).
    pub fn pinned(&self) -> Option<&str> {
        self.prop_str(PINNED_PROP)
    }
    /// Properties set locally on this dataset, as a `{prop: value}` list suitable for
    /// `ZFS_IOC_CREATE`'s "props" or `ZFS_IOC_SET_PROP`.
    pub fn local_props(&self) -> NvList {
        let mut out = NvList::new();
        for (name, _) in self.props.pairs() {
            if let Some(p) = self.prop(name) {
                if p.source == Some(self.name.as_str()) {
                    out.insert(name.clone(), p.value.clone());
                }
            }
        }
        out
    }
}

/// One child from `ZFS_IOC_DATASET_LIST_NEXT` or snapshot from `ZFS_IOC_SNAPSHOT_LIST_NEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub name: String,
    pub fast: FastStats,
}

/// `{name: int32 errno}` lists of failed items (snapshot, destroy, set, create outputs).
pub fn failures_of(out: &NvList) -> Vec<(String, i32)> {
    out.pairs()
        .iter()
        .filter_map(|(n, v)| match v {
            Value::Int32(e) => Some((n.clone(), *e)),
            _ => None,
        })
        .collect()
}

/// Sort snapshots by creation txg (the kernel returns them in hash order). Snapshots created in
/// the same transaction group (an atomic multi-snapshot) keep name order.
pub fn sort_snapshots(v: &mut [ListEntry]) {
    v.sort_by(|a, b| {
        a.fast
            .creation_txg
            .cmp(&b.fast.creation_txg)
            .then(a.name.cmp(&b.name))
    });
}

// ---------------------------------------------------------------------------- the handle

/// Our `Ioctl` implementation: runtime request number, argument = `*mut zfs_cmd_t`.
struct ZfsIoctl<'a> {
    request: rustix::ioctl::Opcode,
    cmd: &'a mut ZfsCmd,
}

// SAFETY: the ZFS ioctls read and write exactly one `zfs_cmd_t` (13744 bytes for the verified
// module versions) through the pointer; `IS_MUTATING` is true because the kernel writes the struct
// back; there is no output beyond the return value.
unsafe impl rustix::ioctl::Ioctl for ZfsIoctl<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> rustix::ioctl::Opcode {
        self.request
    }
    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        (self.cmd as *mut ZfsCmd).cast()
    }
    // SAFETY (of the signature): nothing is read through the pointer; the kernel already wrote
    // the reply into `cmd`, which the caller still borrows.
    unsafe fn output_from_ptr(
        _: rustix::ioctl::IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// What came back from one ioctl.
pub struct Reply {
    pub cmd: Box<ZfsCmd>,
    /// The output nvlist, if the kernel wrote one that fit.
    pub output: Option<NvList>,
}

/// An open `/dev/zfs`.
pub struct Zfs {
    fd: OwnedFd,
}

impl rustix::fd::AsFd for Zfs {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Zfs {
    /// Open `/dev/zfs`. Call [`check_module_version`] first.
    pub fn open() -> Result<Zfs, ZfsError> {
        let fd = rustix::fs::open("/dev/zfs", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(ZfsError::Open)?;
        Ok(Zfs { fd })
    }

    /// One raw ioctl.
    fn call(&self, ioc: u16, zc: &mut ZfsCmd) -> Result<(), Errno> {
        let request = rustix::ioctl::Opcode::from(ioc);
        // SAFETY: `zc` is a valid, exclusively borrowed `zfs_cmd_t` with the layout checked by
        // the const assertions above; the caller (`execute`) set `zc_nvlist_src`/`_dst` either to
        // 0 or to buffers it keeps alive and unaliased for the duration of this call, with the
        // sizes in `*_size`, and the kernel writes at most `zc_nvlist_dst_size` bytes to dst.
        // Module versions with a different `zfs_cmd_t` size are refused by
        // `check_module_version` before the engine opens /dev/zfs.
        unsafe { rustix::ioctl::ioctl(self.fd.as_fd(), ZfsIoctl { request, cmd: zc }) }
    }

    /// Run a request: pack the input, give an output buffer of `max(2·input, 128 KiB)`, and
    /// retry with a bigger one on ENOMEM as libzfs_core does (the kernel reports the size it
    /// needs in `zc_nvlist_dst_size`).
    ///
    /// A retry repeats the whole request. That is what lzc does too; with a 128 KiB buffer it
    /// only happens for property lists of `OBJSET_STATS`, never for the small outputs of the
    /// modifying requests.
    pub fn execute(&self, req: &Request) -> Result<Reply, ZfsError> {
        let src = match &req.input {
            Some(l) => l
                .to_native()
                .map_err(|e| invalid(req.op, &req.name, e.to_string()))?,
            None => Vec::new(),
        };
        let mut cap = if req.want_output {
            MIN_DST.max(2 * src.len())
        } else {
            0
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut dst = vec![0u8; cap];
            let mut zc = ZfsCmd::new();
            req.fill(&mut zc, &src, &mut dst)?;
            let res = self.call(req.ioc, &mut zc);
            let needed = zc.zc_nvlist_dst_size as usize;
            // put_nvlist sets "filled" even when the list did not fit; only trust what fit.
            let output = if zc.zc_nvlist_dst_filled != 0 && cap > 0 && needed <= cap {
                Some(
                    NvList::from_native(&dst[..needed]).map_err(|source| ZfsError::Reply {
                        op: req.op,
                        name: req.name.clone(),
                        source,
                    })?,
                )
            } else {
                None
            };
            match res {
                Ok(()) => return Ok(Reply { cmd: zc, output }),
                Err(Errno::NOMEM) if req.want_output && attempts < 8 && cap < MAX_DST => {
                    cap = needed.max(cap).saturating_mul(2).min(MAX_DST);
                }
                Err(e) => {
                    return Err(ZfsError::Ioctl {
                        op: req.op,
                        name: req.name.clone(),
                        errno: e.raw_os_error(),
                        failures: output.as_ref().map(failures_of).unwrap_or_default(),
                    })
                }
            }
        }
    }

    /// Stats and properties of a dataset or snapshot; `None` if it does not exist.
    pub fn objset_stats(&self, name: &str) -> Result<Option<DatasetStats>, ZfsError> {
        let req = objset_stats_request(name)?;
        match self.execute(&req) {
            Ok(r) => Ok(Some(DatasetStats {
                name: name.to_string(),
                fast: FastStats::from(&r.cmd.zc_objset_stats),
                props: r.output.unwrap_or_default(),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, name: &str) -> Result<bool, ZfsError> {
        let mut req = objset_stats_request(name)?;
        req.simple = true;
        req.want_output = false;
        match self.execute(&req) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Direct children of a filesystem (full names, fast stats only), in the kernel's order.
    /// A parent that does not exist lists as empty (the kernel maps ENOENT to end-of-list):
    /// check [`exists`](Self::exists) first where that matters.
    pub fn list_children(&self, parent: &str) -> Result<Vec<ListEntry>, ZfsError> {
        check_name(Op::ListChildren, parent, false)?;
        let mut req = Request::new(Op::ListChildren, ZFS_IOC_DATASET_LIST_NEXT, parent);
        req.simple = true;
        self.list_loop(req)
    }

    /// Snapshots of a filesystem sorted by creation txg (oldest first). `min_txg`/`max_txg`
    /// filter by creation txg, inclusive (0 = no bound).
    pub fn list_snapshots(
        &self,
        fs: &str,
        min_txg: u64,
        max_txg: u64,
    ) -> Result<Vec<ListEntry>, ZfsError> {
        check_name(Op::ListSnapshots, fs, false)?;
        let mut req = Request::new(Op::ListSnapshots, ZFS_IOC_SNAPSHOT_LIST_NEXT, fs);
        req.simple = true;
        if min_txg != 0 || max_txg != 0 {
            req.input = Some(snapshot_range(min_txg, max_txg));
        }
        let mut v = self.list_loop(req)?;
        sort_snapshots(&mut v);
        Ok(v)
    }

    /// The LIST_NEXT cursor protocol: same zc_name every call, carry zc_cookie, ESRCH = end.
    fn list_loop(&self, mut req: Request) -> Result<Vec<ListEntry>, ZfsError> {
        let mut out = Vec::new();
        loop {
            match self.execute(&req) {
                Ok(r) => {
                    out.push(ListEntry {
                        name: r.cmd.name(),
                        fast: FastStats::from(&r.cmd.zc_objset_stats),
                    });
                    req.cookie = r.cmd.zc_cookie;
                }
                Err(e) if e.is(Errno::SRCH) => return Ok(out),
                Err(e) => return Err(e),
            }
            if out.len() > 1_000_000 {
                return Err(invalid(req.op, &req.name, "more than a million entries"));
            }
        }
    }

    /// Create snapshots atomically (one per filesystem, all in one pool).
    pub fn snapshot(&self, snaps: &[&str], user_props: &[(&str, &str)]) -> Result<(), ZfsError> {
        self.execute(&snapshot_request(snaps, user_props)?)
            .map(|_| ())
    }

    /// Create a filesystem with properties (`{prop: value}`).
    pub fn create(&self, name: &str, props: &NvList) -> Result<(), ZfsError> {
        self.execute(&create_request(name, props)?).map(|_| ())
    }

    /// Clone `origin` (a snapshot) as filesystem `name`.
    pub fn clone_snapshot(&self, name: &str, origin: &str, props: &NvList) -> Result<(), ZfsError> {
        self.execute(&clone_request(name, origin, props)?)
            .map(|_| ())
    }

    /// Rename a filesystem (atomic; may change its parent within the pool) or a snapshot
    /// (within its filesystem). The filesystem should not be mounted.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), ZfsError> {
        self.execute(&rename_request(from, to)?).map(|_| ())
    }

    /// Destroy one dataset or snapshot (no recursion).
    pub fn destroy(&self, name: &str, defer: bool) -> Result<(), ZfsError> {
        self.execute(&destroy_request(name, defer)?).map(|_| ())
    }

    /// Destroy snapshots of one pool in one transaction; missing ones are ignored.
    pub fn destroy_snaps(&self, snaps: &[&str], defer: bool) -> Result<(), ZfsError> {
        self.execute(&destroy_snaps_request(snaps, defer)?)
            .map(|_| ())
    }

    /// Set local property values.
    pub fn set_props(&self, name: &str, props: &NvList) -> Result<(), ZfsError> {
        self.execute(&set_props_request(name, props)?).map(|_| ())
    }

    /// Remove a local property value (user properties disappear).
    pub fn inherit_prop(&self, name: &str, prop: &str) -> Result<(), ZfsError> {
        self.execute(&inherit_prop_request(name, prop)?).map(|_| ())
    }

    /// Promote a clone (see [`promote_request`]).
    pub fn promote(&self, clone: &str) -> Result<(), ZfsError> {
        self.execute(&promote_request(clone)?).map(|_| ())
    }

    /// Wait until everything so far is on disk (`force` also rewrites the labels).
    pub fn pool_sync(&self, pool: &str, force: bool) -> Result<(), ZfsError> {
        self.execute(&pool_sync_request(pool, force)?).map(|_| ())
    }
}

/// `{"snap_iter_min_txg": u64, "snap_iter_max_txg": u64}` for SNAPSHOT_LIST_NEXT.
pub fn snapshot_range(min_txg: u64, max_txg: u64) -> NvList {
    let mut l = NvList::new();
    if min_txg != 0 {
        l.insert("snap_iter_min_txg", Value::Uint64(min_txg));
    }
    if max_txg != 0 {
        l.insert("snap_iter_max_txg", Value::Uint64(max_txg));
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_enum() {
        // ZFS_IOC_FIRST + position in zfs_ioc_t (include/sys/fs/zfs.h, 2.2.0–2.4.4).
        assert_eq!(ZFS_IOC_OBJSET_STATS, ZFS_IOC_FIRST + 0x12);
        assert_eq!(ZFS_IOC_SET_PROP, ZFS_IOC_FIRST + 0x16);
        assert_eq!(ZFS_IOC_INHERIT_PROP, ZFS_IOC_FIRST + 0x2b);
        assert_eq!(ZFS_IOC_POOL_SYNC, ZFS_IOC_FIRST + 0x47);
    }

    #[test]
    fn zfs_cmd_is_zeroed_and_sized() {
        let zc = ZfsCmd::new();
        assert_eq!(size_of_val(&*zc), 13744);
        assert!(zc.zc_name.iter().all(|&b| b == 0));
        assert_eq!(zc.name(), "");
    }

    #[test]
    fn versions() {
        for ok in [
            "2.3.2-2~bpo12+2",
            "2.3.9-1",
            "2.2.0",
            "2.2.7-1\n",
            "2.4.4-1",
            "zfs-2.4.0-1",
            "2.3.0",
        ] {
            assert!(check_module_version_str(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2.3.1-1",
            "2.1.15-1",
            "2.5.0-1",
            "2.3.99-364_g1e7f1a4ac",
            "0.8.6",
            "",
            "garbage",
            "3.0.0",
        ] {
            let e = check_module_version_str(bad).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("2.2.x, 2.3.x except 2.3.1, and 2.4.x"),
                "{msg}"
            );
        }
        assert_eq!(
            parse_module_version("2.3.2-2~bpo12+2"),
            Some(ModuleVersion {
                major: 2,
                minor: 3,
                patch: 2
            })
        );
    }

    #[test]
    fn rename_fills_name_and_value() {
        let req = rename_request(
            "rpool/local/root",
            "rpool/local/old-roots/2026-11-22T00-48-03Z",
        )
        .unwrap();
        let mut zc = ZfsCmd::new();
        req.fill(&mut zc, &[], &mut []).unwrap();
        assert_eq!(zc.name(), "rpool/local/root");
        assert_eq!(
            cstr_field(&zc.zc_value),
            "rpool/local/old-roots/2026-11-22T00-48-03Z"
        );
        assert_eq!(zc.zc_cookie, 0);
        assert_eq!(zc.zc_nvlist_src, 0);
        assert_eq!(zc.zc_nvlist_dst, 0);
        assert_eq!(req.ioc, 0x5a1a);
        assert!(rename_request("a/b", "c/d").is_err(), "cross-pool");
        assert!(
            rename_request("a/b@x", "a/c@y").is_ok(),
            "snapshot rename is checked by the kernel"
        );
        assert!(rename_request("a/b", "a/c@y").is_err());
    }

    #[test]
    fn fill_sets_buffers_and_flags() {
        let req = destroy_request("tank/a@s", true).unwrap();
        let src = [1u8, 2, 3];
        let mut dst = [0u8; 16];
        let mut zc = ZfsCmd::new();
        req.fill(&mut zc, &src, &mut dst).unwrap();
        assert_eq!(zc.zc_defer_destroy, 1);
        assert_eq!(zc.zc_nvlist_src, src.as_ptr() as usize as u64);
        assert_eq!(zc.zc_nvlist_src_size, 3);
        assert_eq!(zc.zc_nvlist_dst_size, 16);
        assert_eq!(zc.zc_objset_type, 2);
        let mut l = objset_stats_request("tank/a").unwrap();
        l.simple = true;
        let mut zc = ZfsCmd::new();
        l.fill(&mut zc, &[], &mut []).unwrap();
        assert_eq!(zc.zc_simple, 1);
    }

    #[test]
    fn name_checks() {
        let long = format!("tank/{}", "x".repeat(251));
        assert_eq!(long.len(), 256);
        assert!(destroy_request(&long, false).is_err());
        assert!(destroy_request(&long[..255], false).is_ok());
        assert!(create_request("tank/a@b", &NvList::new()).is_err());
        assert!(create_request("tank/a%b", &NvList::new()).is_err());
        assert!(create_request("", &NvList::new()).is_err());
        assert!(create_request("tank/a\0b", &NvList::new()).is_err());
        assert!(snapshot_request(&["tank/a@x", "other/b@x"], &[]).is_err());
        assert!(snapshot_request(&[], &[]).is_err());
        assert!(snapshot_request(&["tank/a"], &[]).is_err());
        assert!(snapshot_request(&["tank/a@x"], &[("readonly", "on")]).is_err());
        assert!(rollback_request("tank/a", Some("tank/ab@x")).is_err());
        assert!(rollback_request("tank/a", Some("tank/a@x")).is_ok());
        assert!(clone_request("tank/a", "other/b@x", &NvList::new()).is_err());
        assert!(pool_sync_request("tank/a", false).is_err());
        assert_eq!(pool_of("rpool/local/root@blank"), "rpool");
        assert_eq!(pool_of("rpool@x"), "rpool");
        assert_eq!(pool_of("rpool"), "rpool");
    }

    #[test]
    fn request_shapes() {
        let r =
            snapshot_request(&["rpool/local/root@x"], &[("ephemeral-root:began", "123")]).unwrap();
        assert_eq!((r.ioc, r.name.as_str()), (0x5a23, "rpool"));
        let input = r.input.unwrap();
        assert_eq!(
            input.get_nvlist("snaps").unwrap().get("rpool/local/root@x"),
            Some(&Value::Boolean)
        );
        assert_eq!(
            input
                .get_nvlist("props")
                .unwrap()
                .get_str("ephemeral-root:began"),
            Some("123")
        );

        let r = rollback_request("rpool/local/root", None).unwrap();
        assert!(r.want_output, "a successful rollback writes an output list");
        assert_eq!(
            r.input,
            Some(NvList::new()),
            "always send a list, even empty"
        );

        let r = create_request("rpool/local/root", &NvList::new()).unwrap();
        assert_eq!(r.input.as_ref().unwrap().get_i32("type"), Some(2));
        assert!(r.input.as_ref().unwrap().get("props").is_none());

        let r = destroy_snaps_request(&["rpool/a@1", "rpool/b@2"], false).unwrap();
        assert_eq!((r.ioc, r.name.as_str()), (0x5a3b, "rpool"));
        assert_eq!(
            r.input.as_ref().unwrap().get_nvlist("snaps").unwrap().len(),
            2
        );
        assert!(r.input.as_ref().unwrap().get("defer").is_none());

        let r = pool_sync_request("rpool", false).unwrap();
        assert_eq!(
            r.input.unwrap().get("force"),
            Some(&Value::BooleanValue(false))
        );

        let r = inherit_prop_request("rpool/x", PINNED_PROP).unwrap();
        assert_eq!((r.ioc, r.value.as_deref()), (0x5a2b, Some(PINNED_PROP)));
    }

    #[test]
    fn snapshots_sort_by_txg() {
        let e = |n: &str, txg| ListEntry {
            name: n.into(),
            fast: FastStats {
                num_clones: 0,
                creation_txg: txg,
                guid: 0,
                objset_type: 2,
                is_snapshot: true,
                inconsistent: false,
                origin: String::new(),
            },
        };
        let mut v = vec![
            e("p/f@c", 30),
            e("p/f@a", 10),
            e("p/f@z", 20),
            e("p/f@b", 20),
        ];
        sort_snapshots(&mut v);
        let names: Vec<_> = v.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["p/f@a", "p/f@b", "p/f@z", "p/f@c"]);
    }

    #[test]
    fn error_messages_name_op_and_dataset() {
        let e = ZfsError::Ioctl {
            op: Op::Destroy,
            name: "rpool/x".into(),
            errno: Errno::BUSY.raw_os_error(),
            failures: vec![],
        };
        assert_eq!(
            e.to_string(),
            "cannot destroy rpool/x: dataset is busy (mounted, held, or has snapshots) (errno 16)"
        );
        let e = ZfsError::Ioctl {
            op: Op::DestroySnaps,
            name: "rpool".into(),
            errno: 17,
            failures: vec![("rpool/a@x".into(), 17)],
        };
        assert!(
            e.to_string().contains("rpool/a@x: snapshot has clones"),
            "{e}"
        );
        let e = ZfsError::Ioctl {
            op: Op::Create,
            name: "p/x".into(),
            errno: 1030,
            failures: vec![],
        };
        assert!(e.to_string().contains("ZFS_ERR_IOC_ARG_UNAVAIL"), "{e}");
        let e = ZfsError::Ioctl {
            op: Op::ObjsetStats,
            name: "p/x".into(),
            errno: 5,
            failures: vec![],
        };
        assert!(
            e.to_string().starts_with("cannot read properties of p/x: "),
            "{e}"
        );
        assert!(!e.is_not_found());
    }
}
