//! Raw btrfs ioctls (magic 0x94): argument structs, request numbers and thin safe wrappers.
//! Numbers and layouts: linux/btrfs.h, described in docs/kernel-interfaces.md#btrfs-numbers and
//! #btrfs-structs (encoding: #ioctl-encoding). Request
//! numbers are computed from direction, type, number and argument size (`_IOW`/`_IOR`/`_IOWR`),
//! the way the header defines them. All `unsafe` for btrfs lives in this file.
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, NoArg, Opcode, Updater};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub const BTRFS_SUPER_MAGIC: u32 = 0x9123_683E;
pub const FS_TREE_OBJECTID: u64 = 5;
pub const FIRST_FREE_OBJECTID: u64 = 256;
pub const ROOT_TREE_OBJECTID: u64 = 1;
pub const ROOT_TREE_DIR_OBJECTID: u64 = 6;
pub const ROOT_BACKREF_KEY: u32 = 144;
pub const ROOT_REF_KEY: u32 = 156;
pub const DIR_ITEM_KEY: u32 = 84;
/// ioctl flag bit for read-only (SNAP_CREATE_V2, SUBVOL_{GET,SET}FLAGS).
pub const SUBVOL_RDONLY: u64 = 1 << 1;
pub const SUBVOL_SPEC_BY_ID: u64 = 1 << 4;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
// linux/btrfs.h: _IOW(BTRFS_IOCTL_MAGIC, 4, struct btrfs_ioctl_vol_args) and so on.
const SCAN_DEV: Opcode = opcode::write::<VolArgs>(BTRFS_IOCTL_MAGIC, 4);
const SYNC: Opcode = opcode::none(BTRFS_IOCTL_MAGIC, 8);
/// `_IOWR(0x94, 17, struct btrfs_ioctl_search_args_v2)`: the size in the number is the key and
/// the buffer size (112 bytes); the buffer follows them.
const TREE_SEARCH_V2: Opcode = opcode::read_write::<SearchArgsV2Head>(BTRFS_IOCTL_MAGIC, 17);
const INO_LOOKUP: Opcode = opcode::read_write::<InoLookupArgs>(BTRFS_IOCTL_MAGIC, 18);
const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23);
const SUBVOL_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 24);
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(BTRFS_IOCTL_MAGIC, 25);
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(BTRFS_IOCTL_MAGIC, 26);
const GET_SUBVOL_INFO: Opcode = opcode::read::<SubvolInfoArgs>(BTRFS_IOCTL_MAGIC, 60);
const SNAP_DESTROY_V2: Opcode = opcode::write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 63);

#[repr(C)]
pub struct VolArgs {
    pub fd: i64,
    pub name: [u8; 4088],
}

#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    pub unused: [u64; 4],
    /// Union with `devid` / `subvolid` (u64 at the same offset).
    pub name: [u8; 4040],
}

#[repr(C)]
pub struct InoLookupArgs {
    pub treeid: u64,
    pub objectid: u64,
    pub name: [u8; 4080],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SearchKey {
    pub tree_id: u64,
    pub min_objectid: u64,
    pub max_objectid: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub min_transid: u64,
    pub max_transid: u64,
    pub min_type: u32,
    pub max_type: u32,
    pub nr_items: u32,
    pub unused: u32,
    pub unused1: u64,
    pub unused2: u64,
    pub unused3: u64,
    pub unused4: u64,
}

/// The fixed part of `struct btrfs_ioctl_search_args_v2` (for the ioctl number).
#[repr(C)]
pub struct SearchArgsV2Head {
    pub key: SearchKey,
    pub buf_size: u64,
}

/// Buffer of a TREE_SEARCH_V2 batch: 64 KiB, 16 times the v1 buffer, so a search through many
/// changed leaves costs a sixteenth of the ioctl round trips.
const SEARCH_V2_BUF: usize = 64 * 1024;

#[repr(C)]
pub struct SearchArgsV2 {
    pub key: SearchKey,
    pub buf_size: u64,
    pub buf: [u8; SEARCH_V2_BUF],
}

const _: () = assert!(std::mem::offset_of!(SearchArgsV2, buf) == 112);
const _: () = assert!(std::mem::size_of::<SearchArgsV2Head>() == 112);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub sec: u64,
    pub nsec: u32,
    pub pad: u32,
}

#[repr(C)]
pub struct SubvolInfoArgs {
    pub treeid: u64,
    pub name: [u8; 256],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
    pub reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<SearchKey>() == 104);
const _: () = assert!(std::mem::size_of::<SubvolInfoArgs>() == 504);
const _: () = assert!(std::mem::offset_of!(SubvolInfoArgs, otime) == 392);
const _: () = assert!(std::mem::offset_of!(VolArgsV2, name) == 56);

fn zeroed_v2() -> Box<VolArgsV2> {
    Box::new(VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name: [0; 4040],
    })
}

/// Copy a single path component into a fixed name buffer (NUL-terminated).
fn put_name(dst: &mut [u8], name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= dst.len() || b.contains(&0) || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

fn c_str(buf: &[u8]) -> OsString {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    OsString::from_vec(buf[..end].to_vec())
}

/// Snapshot the subvolume whose root directory is `src` (6.12 refuses any other directory with
/// EINVAL), as `name` inside directory `dst_dir` (docs/kernel-interfaces.md#btrfs-snap-create).
pub fn snap_create(
    dst_dir: BorrowedFd,
    src: BorrowedFd,
    name: &OsStr,
    readonly: bool,
) -> Result<(), Errno> {
    let mut a = zeroed_v2();
    a.fd = i64::from(src.as_raw_fd());
    a.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    put_name(&mut a.name, name)?;
    // SAFETY: SNAP_CREATE_V2 reads a 4096-byte btrfs_ioctl_vol_args_v2, which VolArgsV2 is
    // (size asserted above); the pointer is to the boxed struct, which outlives the call.
    unsafe { ioctl(dst_dir, Updater::<SNAP_CREATE_V2, VolArgsV2>::new(&mut *a)) }
}

/// Create an empty subvolume `name` inside directory `dir`.
/// (docs/kernel-interfaces.md#btrfs-subvol-create)
pub fn subvol_create(dir: BorrowedFd, name: &OsStr) -> Result<(), Errno> {
    let mut a = zeroed_v2();
    put_name(&mut a.name, name)?;
    // SAFETY: as for snap_create; SUBVOL_CREATE_V2 only reads the struct.
    unsafe { ioctl(dir, Updater::<SUBVOL_CREATE_V2, VolArgsV2>::new(&mut *a)) }
}

/// Delete the subvolume with id `subvolid`; `fd` is any directory on the filesystem not inside it.
/// (docs/kernel-interfaces.md#btrfs-snap-destroy)
pub fn snap_destroy_by_id(fd: BorrowedFd, subvolid: u64) -> Result<(), Errno> {
    let mut a = zeroed_v2();
    a.flags = SUBVOL_SPEC_BY_ID;
    a.name[..8].copy_from_slice(&subvolid.to_ne_bytes());
    // SAFETY: SNAP_DESTROY_V2 reads a 4096-byte vol_args_v2; with SPEC_BY_ID the kernel reads
    // the u64 subvolid at offset 56, which we wrote in native byte order.
    unsafe { ioctl(fd, Updater::<SNAP_DESTROY_V2, VolArgsV2>::new(&mut *a)) }
}

/// Read the ioctl flags (bit 1 = read-only) of the subvolume whose root directory is `fd`.
/// (docs/kernel-interfaces.md#btrfs-subvol-flags: setting them commits a transaction)
pub fn get_flags(fd: BorrowedFd) -> Result<u64, Errno> {
    let mut v: u64 = 0;
    // SAFETY: SUBVOL_GETFLAGS writes one u64; `v` is a valid, exclusively borrowed u64.
    unsafe { ioctl(fd, Updater::<SUBVOL_GETFLAGS, u64>::new(&mut v))? };
    Ok(v)
}

pub fn set_flags(fd: BorrowedFd, flags: u64) -> Result<(), Errno> {
    let mut v = flags;
    // SAFETY: SUBVOL_SETFLAGS reads one u64 through the pointer to `v`, which lives across the call.
    unsafe { ioctl(fd, Updater::<SUBVOL_SETFLAGS, u64>::new(&mut v)) }
}

/// Commit the current transaction (makes deletions and renames durable).
/// (docs/kernel-interfaces.md#btrfs-sync)
pub fn sync(fd: BorrowedFd) -> Result<(), Errno> {
    // SAFETY: BTRFS_IOC_SYNC takes no argument.
    unsafe { ioctl(fd, NoArg::<SYNC>::new()) }
}

/// Register a device with the btrfs module (multi-device filesystems). `ctl` is /dev/btrfs-control.
/// (docs/kernel-interfaces.md#btrfs-scan-dev)
pub fn scan_dev(ctl: BorrowedFd, dev: &str) -> Result<(), Errno> {
    let mut a = Box::new(VolArgs {
        fd: 0,
        name: [0; 4088],
    });
    let b = dev.as_bytes();
    if b.len() >= a.name.len() || b.contains(&0) {
        return Err(Errno::INVAL);
    }
    a.name[..b.len()].copy_from_slice(b);
    // SAFETY: SCAN_DEV reads a 4096-byte btrfs_ioctl_vol_args, which VolArgs is.
    unsafe { ioctl(ctl, Updater::<SCAN_DEV, VolArgs>::new(&mut *a)) }
}

/// Information about the subvolume containing `fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubvolInfo {
    pub id: u64,
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub readonly: bool,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    /// Creation time (Unix seconds).
    pub otime: i64,
}

/// (docs/kernel-interfaces.md#btrfs-subvol-info)
pub fn subvol_info(fd: BorrowedFd) -> Result<SubvolInfo, Errno> {
    let zero_ts = Timespec {
        sec: 0,
        nsec: 0,
        pad: 0,
    };
    let mut a = Box::new(SubvolInfoArgs {
        treeid: 0,
        name: [0; 256],
        parent_id: 0,
        dirid: 0,
        generation: 0,
        flags: 0,
        uuid: [0; 16],
        parent_uuid: [0; 16],
        received_uuid: [0; 16],
        ctransid: 0,
        otransid: 0,
        stransid: 0,
        rtransid: 0,
        ctime: zero_ts,
        otime: zero_ts,
        stime: zero_ts,
        rtime: zero_ts,
        reserved: [0; 8],
    });
    // SAFETY: GET_SUBVOL_INFO writes a 504-byte btrfs_ioctl_get_subvol_info_args, which
    // SubvolInfoArgs is (size asserted); the box is exclusively borrowed for the call.
    unsafe { ioctl(fd, Updater::<GET_SUBVOL_INFO, SubvolInfoArgs>::new(&mut *a))? };
    Ok(SubvolInfo {
        id: a.treeid,
        parent_id: a.parent_id,
        dirid: a.dirid,
        generation: a.generation,
        // On-disk root_item flags: bit 0 is read-only.
        readonly: a.flags & 1 != 0,
        uuid: a.uuid,
        parent_uuid: a.parent_uuid,
        ctransid: a.ctransid,
        otransid: a.otransid,
        otime: a.otime.sec as i64,
    })
}

/// Path of directory inode `objectid` inside subvolume `treeid`, relative to that subvolume's
/// root, with a trailing '/' (empty for the root directory itself).
/// (docs/kernel-interfaces.md#btrfs-ino-lookup)
pub fn ino_lookup(fd: BorrowedFd, treeid: u64, objectid: u64) -> Result<OsString, Errno> {
    let mut a = Box::new(InoLookupArgs {
        treeid,
        objectid,
        name: [0; 4080],
    });
    // SAFETY: INO_LOOKUP reads/writes a 4096-byte btrfs_ioctl_ino_lookup_args (size asserted).
    unsafe { ioctl(fd, Updater::<INO_LOOKUP, InoLookupArgs>::new(&mut *a))? };
    Ok(c_str(&a.name))
}

/// One item returned by TREE_SEARCH (of the objectid and type that were asked for).
#[derive(Debug, Clone)]
pub struct Item {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The `btrfs_ioctl_search_header` at `off` in a TREE_SEARCH result buffer:
/// (objectid, offset, type, item length). Bounds-checked; items are unaligned.
fn search_header(buf: &[u8], off: usize) -> Result<(u64, u64, u32, usize), Errno> {
    let h = buf.get(off..off + 32).ok_or(Errno::IO)?;
    let rd = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&h[r]);
        u64::from_le_bytes(b)
    };
    Ok((
        rd(8..16),
        rd(16..24),
        rd(24..28) as u32,
        rd(28..32) as usize,
    ))
}

/// All items with keys between (objectid, typ, 0) and (objectid, typ, MAX) in tree `tree_id`.
pub fn search(fd: BorrowedFd, tree_id: u64, objectid: u64, typ: u32) -> Result<Vec<Item>, Errno> {
    let mut out = Vec::new();
    search_since(
        fd,
        tree_id,
        (objectid, typ, 0),
        (objectid, typ, u64::MAX),
        0,
        |it| {
            if it.key.0 == objectid && it.key.1 == typ {
                out.push(Item {
                    offset: it.key.2,
                    data: it.data.to_vec(),
                });
            }
        },
    )?;
    Ok(out)
}

#[cfg(feature = "tools")]
/// Item type of an inode item (`BTRFS_INODE_ITEM_KEY`).
pub const INODE_ITEM_KEY: u32 = 1;
#[cfg(feature = "tools")]
/// Item type of an inode's name in a directory (`BTRFS_INODE_REF_KEY`; offset: the directory).
pub const INODE_REF_KEY: u32 = 12;
#[cfg(feature = "tools")]
/// Highest inode number a file tree uses (`BTRFS_LAST_FREE_OBJECTID`, -256).
pub const LAST_FREE_OBJECTID: u64 = (-256i64) as u64;
#[cfg(feature = "tools")]
/// The quota tree (`BTRFS_QUOTA_TREE_OBJECTID`) and its per-qgroup usage items.
pub const QUOTA_TREE_OBJECTID: u64 = 8;
#[cfg(feature = "tools")]
pub const QGROUP_INFO_KEY: u32 = 242;

/// A compound btrfs key: (objectid, type, offset), ordered in that order.
pub type Key = (u64, u32, u64);

/// One item of a [`search_since`] batch: its key and its data.
pub struct RawItem<'a> {
    pub key: Key,
    pub data: &'a [u8],
}

fn next_key(k: Key) -> Option<Key> {
    if k.2 < u64::MAX {
        Some((k.0, k.1, k.2 + 1))
    } else if k.1 < u8::MAX as u32 {
        Some((k.0, k.1 + 1, 0))
    } else if k.0 < u64::MAX {
        Some((k.0 + 1, 0, 0))
    } else {
        None
    }
}

/// Every item of tree `tree_id` with a key in the compound range `min..=max` that lives in a tree
/// block written in transaction `min_transid` or later (the `btrfs subvolume find-new` search).
/// The kernel filters by tree-block generation, so a block rewritten for one changed item also
/// yields its unchanged neighbours: callers check per-item generations themselves.
/// (docs/kernel-interfaces.md#btrfs-tree-search)
pub fn search_since(
    fd: BorrowedFd,
    tree_id: u64,
    min: Key,
    max: Key,
    min_transid: u64,
    f: impl FnMut(RawItem<'_>),
) -> Result<(), Errno> {
    Searcher::new().search(fd, tree_id, min, max, min_transid, f)
}

/// The one TREE_SEARCH loop: TREE_SEARCH_V2 with a 64 KiB buffer, reusable across searches (the
/// `diff` change listing makes many).
pub struct Searcher {
    a: Box<SearchArgsV2>,
}

impl Searcher {
    pub fn new() -> Searcher {
        Searcher {
            a: Box::new(SearchArgsV2 {
                key: SearchKey::default(),
                buf_size: 0,
                buf: [0; SEARCH_V2_BUF],
            }),
        }
    }

    /// [`search_since`] in 64 KiB batches.
    pub fn search(
        &mut self,
        fd: BorrowedFd,
        tree_id: u64,
        min: Key,
        max: Key,
        min_transid: u64,
        f: impl FnMut(RawItem<'_>),
    ) -> Result<(), Errno> {
        self.search_batches(fd, tree_id, min, max, min_transid, usize::MAX, f)
    }

    /// [`Searcher::search`], but at most `batches` ioctls (a lookup of one inode's few items
    /// needs one; asking again only to hear "no more" would double its cost).
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(feature = "tools"), allow(dead_code))]
    pub fn search_batches(
        &mut self,
        fd: BorrowedFd,
        tree_id: u64,
        min: Key,
        max: Key,
        min_transid: u64,
        batches: usize,
        mut f: impl FnMut(RawItem<'_>),
    ) -> Result<(), Errno> {
        let a = &mut self.a;
        let mut calls = 0;
        let mut cur = min;
        loop {
            a.key = SearchKey {
                tree_id,
                min_objectid: cur.0,
                max_objectid: max.0,
                min_type: cur.1,
                max_type: max.1,
                min_offset: cur.2,
                max_offset: max.2,
                min_transid,
                max_transid: u64::MAX,
                nr_items: u32::MAX,
                ..SearchKey::default()
            };
            a.buf_size = SEARCH_V2_BUF as u64;
            // SAFETY: TREE_SEARCH_V2 reads the key and buf_size and fills at most buf_size bytes
            // of the buffer that follows them in SearchArgsV2 (offset asserted); parsing below
            // is bounds-checked.
            unsafe { ioctl(fd, Updater::<TREE_SEARCH_V2, SearchArgsV2>::new(&mut **a))? };
            calls += 1;
            let n = a.key.nr_items as usize;
            if n == 0 {
                return Ok(());
            }
            let mut off = 0usize;
            let mut last = cur;
            for _ in 0..n {
                let (oid, ioff, ityp, len) = search_header(&a.buf, off)?;
                let data = a.buf.get(off + 32..off + 32 + len).ok_or(Errno::IO)?;
                off += 32 + len;
                last = (oid, ityp, ioff);
                f(RawItem { key: last, data });
            }
            match next_key(last) {
                Some(k) if k <= max && calls < batches => cur = k,
                _ => return Ok(()),
            }
        }
    }
}

/// The first name in a `btrfs_inode_ref` item (index u64, name_len u16, name): an inode's name in
/// the directory that is the item's key offset.
#[cfg(feature = "tools")]
pub fn parse_inode_ref_name(data: &[u8]) -> Option<&[u8]> {
    let len = u16::from_le_bytes(data.get(8..10)?.try_into().ok()?) as usize;
    data.get(10..10 + len)
}

/// Parse a `btrfs_root_ref` item: (dirid, name).
/// (docs/kernel-interfaces.md#btrfs-tree-items)
pub fn parse_root_ref(data: &[u8]) -> Option<(u64, OsString)> {
    let dirid = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
    let name_len = u16::from_le_bytes(data.get(16..18)?.try_into().ok()?) as usize;
    let name = data.get(18..18 + name_len)?;
    Some((dirid, OsString::from_vec(name.to_vec())))
}

/// The id of the default subvolume (what a mount without subvol= gets).
pub fn default_subvol(fd: BorrowedFd) -> Result<u64, Errno> {
    for it in search(fd, ROOT_TREE_OBJECTID, ROOT_TREE_DIR_OBJECTID, DIR_ITEM_KEY)? {
        // btrfs_dir_item (packed, 30 bytes): location.objectid u64 @0, ..., name_len u16 @27, name @30
        let d = &it.data;
        let mut p = 0usize;
        while p + 30 <= d.len() {
            let oid = u64::from_le_bytes(d[p..p + 8].try_into().map_err(|_| Errno::IO)?);
            let data_len =
                u16::from_le_bytes(d[p + 25..p + 27].try_into().map_err(|_| Errno::IO)?) as usize;
            let name_len =
                u16::from_le_bytes(d[p + 27..p + 29].try_into().map_err(|_| Errno::IO)?) as usize;
            if d.get(p + 30..p + 30 + name_len) == Some(b"default".as_slice()) {
                return Ok(oid);
            }
            p += 30 + name_len + data_len;
        }
    }
    Ok(FS_TREE_OBJECTID)
}

/// Child subvolumes of subvolume `parent`: (child id, dirid in parent, name).
pub fn child_refs(fd: BorrowedFd, parent: u64) -> Result<Vec<(u64, u64, OsString)>, Errno> {
    let mut v = Vec::new();
    for it in search(fd, ROOT_TREE_OBJECTID, parent, ROOT_REF_KEY)? {
        if let Some((dirid, name)) = parse_root_ref(&it.data) {
            v.push((it.offset, dirid, name));
        }
    }
    Ok(v)
}

/// Parent of subvolume `id`: (parent id, dirid, name), or None for the top level / deleted ones.
pub fn parent_ref(fd: BorrowedFd, id: u64) -> Result<Option<(u64, u64, OsString)>, Errno> {
    let items = search(fd, ROOT_TREE_OBJECTID, id, ROOT_BACKREF_KEY)?;
    Ok(items
        .into_iter()
        .find_map(|it| parse_root_ref(&it.data).map(|(dirid, name)| (it.offset, dirid, name))))
}

/// Whether `fd` (any file on the filesystem) is on btrfs.
pub fn is_btrfs(fd: impl AsFd) -> Result<bool, Errno> {
    let st = rustix::fs::fstatfs(fd)?;
    Ok(st.f_type as u32 == BTRFS_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ref_parsing() {
        let mut d = vec![];
        d.extend_from_slice(&300u64.to_le_bytes());
        d.extend_from_slice(&7u64.to_le_bytes());
        d.extend_from_slice(&5u16.to_le_bytes());
        d.extend_from_slice(b"@root");
        assert_eq!(parse_root_ref(&d), Some((300, OsString::from("@root"))));
        assert_eq!(parse_root_ref(&d[..20]), None);
    }

    #[test]
    fn request_numbers_match_linux_btrfs_h() {
        // The values the kernel header yields on x86_64 (and every architecture with the
        // generic _IOC layout).
        for (got, want) in [
            (SCAN_DEV, 0x5000_9404u32),
            (SYNC, 0x0000_9408),
            (TREE_SEARCH_V2, 0xc070_9411),
            (INO_LOOKUP, 0xd000_9412),
            (SNAP_CREATE_V2, 0x5000_9417),
            (SUBVOL_CREATE_V2, 0x5000_9418),
            (SUBVOL_GETFLAGS, 0x8008_9419),
            (SUBVOL_SETFLAGS, 0x4008_941a),
            (GET_SUBVOL_INFO, 0x81f8_943c),
            (SNAP_DESTROY_V2, 0x5000_943f),
        ] {
            assert_eq!(got as u32, want, "{got:#x}");
        }
    }

    #[test]
    fn keys_advance_in_compound_order() {
        assert_eq!(next_key((5, 1, 7)), Some((5, 1, 8)));
        assert_eq!(next_key((5, 1, u64::MAX)), Some((5, 2, 0)));
        assert_eq!(next_key((5, 255, u64::MAX)), Some((6, 0, 0)));
        assert_eq!(next_key((u64::MAX, 255, u64::MAX)), None);
    }

    #[test]
    fn names_are_single_components() {
        let mut buf = [0u8; 16];
        let n = |s: &str| OsStr::new(s).to_os_string();
        assert!(put_name(&mut buf, &n("a/b")).is_err());
        assert!(put_name(&mut buf, &n("")).is_err());
        assert!(put_name(&mut buf, &n("0123456789abcdef")).is_err());
        assert!(put_name(&mut buf, OsStr::from_bytes(b"\xff\xfe")).is_ok());
        assert_eq!(c_str(&buf), OsStr::from_bytes(b"\xff\xfe"));
        assert!(put_name(&mut buf, &n("ok")).is_ok());
        assert_eq!(c_str(&buf), "ok");
    }
}
