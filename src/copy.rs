//! The copy engine of `restore` and `persist`: copy a file or a tree from a source directory (an
//! old root, or the live root as seen through the backend's private mount) to a destination,
//! keeping everything, never following a symlink, never crossing into a mount on the destination
//! side, staged under a temporary name, made durable with one `syncfs` and renamed into place. The
//! rules it follows are in `docs/path-safety.md` (each with the test that checks it); in short:
//!
//! - Source: resolved below the source directory with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`: `..` and symlinks in the path are refused. Below it, every directory is
//!   opened one component at a time the same way; symlinks are copied as symlinks.
//! - Destination: every component is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//!   from a descriptor taken before anything else; a symlink anywhere in the destination path is
//!   refused. Missing parents are created (when asked) with `mkdirat` on the descriptor just
//!   resolved, as root with mode 0700, and get the source's owner, mode and times once the copy is
//!   in place.
//! - The copy is built under a hidden temporary name next to the destination (`.<name>
//!   .ephemeral-root-restore.<boot>.<pid>.<start>`, root-owned, mode 0700/0600 while it is built),
//!   written without one `fsync` per file, made durable with one `syncfs`, and renamed into place
//!   (then the directory is `fsync`ed). Inside the copy nothing crosses a mount
//!   (`RESOLVE_NO_XDEV`).
//! - An existing destination is refused unless `force`; even then, one of another kind (file,
//!   directory, symlink, special file) is refused unless `replace_type`, and a destination that is
//!   a mount point or holds one (checked in `/proc/self/mountinfo` and by comparing the mount id of
//!   every entry, `statx(STATX_MNT_ID)`) is refused before anything is touched. The replaced tree is
//!   exchanged out (`RENAME_EXCHANGE`), made root-only, and removed without crossing a mount.
//! - [`merge_into`] (`persist --merge`) copies only what the destination lacks, each missing
//!   entry staged the same way and renamed into place with `RENAME_NOREPLACE` after one `syncfs`;
//!   nothing that exists is replaced or changed, differences are reported as conflicts.
//! - Traversal is iterative with at most [`FD_WINDOW`] directory descriptors per tree, whatever
//!   the depth.
//! - Preserved: content (reflink where possible, otherwise only the data extents, so sparse files
//!   keep their holes), mode, owner, access and modification times (ns), symlinks, hard links inside
//!   the copied tree, FIFOs and device nodes, extended attributes (`user.*`, `security.*`,
//!   `trusted.*`, POSIX ACLs). Not copied unless `keep_privileges`: setuid/setgid bits of
//!   non-directories and file capabilities (`security.capability`); the summary lists what was
//!   stripped. An attribute the destination refuses is reported, not fatal. Sockets are skipped.
//! - SIGINT, SIGTERM and SIGHUP during the copy remove the partial copy; a later copy into the
//!   same directory removes partial copies it can prove are its own (see [`stale_proof`]).
//! - Names are bytes end to end; messages escape them and cut long paths.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use crate::error::{Context, Error, Result};
use crate::mounts::MountInfo;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, SeekFrom, Statx, StatxFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Directory descriptors a traversal keeps open per tree (the deepest levels; shallower ones are
/// reopened from the deepest open ancestor when the walk climbs back to them).
pub const FD_WINDOW: usize = 32;

/// Longest relative path handed to one `openat2` when reopening (below `PATH_MAX`).
const CHUNK: usize = 3000;

// ------------------------------------------------------------------------------------------------
// Showing names

use crate::escape::{cut, escape as esc};

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn join(parts: &[OsString]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(p.as_bytes());
    }
    v
}

// ------------------------------------------------------------------------------------------------
// What a restore did

/// What a restore copied.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Of `bytes`, how many were reflinked (shared with the source, no data written).
    pub reflinked: u64,
    /// Extended attributes the destination refused: (path, name, error), shown.
    pub xattr_failures: Vec<(String, String, String)>,
    pub skipped: Vec<String>,
    /// Privileges not restored (without `--keep-privileges`), shown.
    pub stripped: Vec<String>,
    /// Partial copies of earlier, interrupted restores that were removed.
    pub stale_removed: Vec<String>,
}

impl Summary {
    pub fn add(&mut self, o: Summary) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.links += o.links;
        self.bytes += o.bytes;
        self.reflinked += o.reflinked;
        self.xattr_failures.extend(o.xattr_failures);
        self.skipped.extend(o.skipped);
        self.stripped.extend(o.stripped);
        self.stale_removed.extend(o.stale_removed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    pub force: bool,
    pub replace_type: bool,
    pub keep_privileges: bool,
    pub create_parents: bool,
}

pub struct Dest<'a> {
    pub base: BorrowedFd<'a>,
    /// Components of the parent directory, below `base`.
    pub parent: Vec<OsString>,
    pub name: OsString,
    /// For messages and mountinfo: absolute when known.
    pub abs: Vec<u8>,
}

impl Dest<'_> {
    pub fn child(&self, sub: &[u8]) -> Dest<'_> {
        let mut parent = self.parent.clone();
        parent.push(self.name.clone());
        let mut comps: Vec<OsString> = sub
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(|c| OsString::from_vec(c.to_vec()))
            .collect();
        let name = comps.pop().unwrap_or_default();
        parent.extend(comps);
        let mut abs = self.abs.clone();
        abs.push(b'/');
        abs.extend_from_slice(sub);
        Dest {
            base: self.base,
            parent,
            name,
            abs,
        }
    }
}

/// Split a destination path into components (no `..`).
pub fn dest_components(p: &[u8]) -> Result<Vec<OsString>> {
    let mut v = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Usage(format!(
                    "destination {}: `..` is not allowed; name the destination directly",
                    cut(p)
                )))
            }
            c => v.push(OsString::from_vec(c.to_vec())),
        }
    }
    if v.is_empty() {
        return Err(Error::Usage(format!(
            "destination \"{}\" has no file name",
            cut(p)
        )));
    }
    Ok(v)
}

// ------------------------------------------------------------------------------------------------
// Opening directories without following symlinks, with a bounded number of descriptors

const SRC_HOW: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
/// Inside the copy and inside a tree being checked or removed: never into another mount.
const DST_HOW: ResolveFlags = SRC_HOW.union(ResolveFlags::NO_XDEV);

/// `RESOLVE_NO_SYMLINKS` covers the last component too (`ELOOP`); `O_NOFOLLOW` is left out on
/// purpose, because with `O_DIRECTORY` it turns a symlink into `ENOTDIR`.
fn open_dir_at(dir: BorrowedFd<'_>, rel: &OsStr, how: ResolveFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )
}

fn sx(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
}

fn sx_fd(fd: BorrowedFd<'_>) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
}

type Id = (u32, u32, u64);

fn id_of(st: &Statx) -> Id {
    (st.stx_dev_major, st.stx_dev_minor, st.stx_ino)
}

/// A path of directories from `root` down to the current one. Only the deepest [`FD_WINDOW`]
/// levels (and those reopened since) keep a descriptor; a level without one is reopened from the
/// deepest open ancestor with `openat2(how)` and must be the same directory (device and inode)
/// it was when entered.
struct DirPath<'r> {
    root: BorrowedFd<'r>,
    how: ResolveFlags,
    names: Vec<OsString>,
    fds: Vec<Option<OwnedFd>>,
    ids: Vec<Id>,
}

impl<'r> DirPath<'r> {
    fn new(root: BorrowedFd<'r>, how: ResolveFlags) -> DirPath<'r> {
        DirPath {
            root,
            how,
            names: Vec::new(),
            fds: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn depth(&self) -> usize {
        self.names.len()
    }

    /// Enter `name` below the current directory, already opened as `fd`.
    fn push(&mut self, name: OsString, fd: OwnedFd) -> rustix::io::Result<()> {
        let id = id_of(&sx_fd(fd.as_fd())?);
        self.names.push(name);
        self.fds.push(Some(fd));
        self.ids.push(id);
        let n = self.fds.len();
        if n > FD_WINDOW {
            self.fds[n - 1 - FD_WINDOW] = None;
        }
        Ok(())
    }

    /// Leave the current directory. If its parent's descriptor was closed, get it back through
    /// `..` of the one being left, accepted only if it is the same directory (device and inode)
    /// that was entered; otherwise it is reopened by path when needed. So climbing costs O(1)
    /// per level, whatever the depth.
    fn pop(&mut self) {
        let child = self.fds.pop().flatten();
        self.names.pop();
        self.ids.pop();
        let d = self.fds.len();
        if d == 0 || self.fds[d - 1].is_some() {
            return;
        }
        let Some(c) = child else { return };
        if let Ok(p) = rustix::fs::openat(
            &c,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            if sx_fd(p.as_fd()).map(|st| id_of(&st)).ok() == Some(self.ids[d - 1]) {
                self.fds[d - 1] = Some(p);
            }
        }
    }

    fn base(&self, level: usize) -> BorrowedFd<'_> {
        if level == 0 {
            return self.root;
        }
        match &self.fds[level - 1] {
            Some(f) => f.as_fd(),
            None => self.root,
        }
    }

    /// Make sure the current directory has a descriptor (reopening it if needed).
    fn ready(&mut self) -> rustix::io::Result<()> {
        let d = self.fds.len();
        if d > 0 && self.fds[d - 1].is_none() {
            self.reopen()?;
        }
        Ok(())
    }

    /// The current directory (the root when nothing was entered), after [`DirPath::ready`].
    fn fd(&self) -> rustix::io::Result<BorrowedFd<'_>> {
        match self.fds.last() {
            None => Ok(self.root),
            Some(Some(f)) => Ok(f.as_fd()),
            Some(None) => Err(Errno::BADF),
        }
    }

    /// The current directory, reopened if needed.
    fn cur(&mut self) -> rustix::io::Result<BorrowedFd<'_>> {
        self.ready()?;
        self.fd()
    }

    fn reopen(&mut self) -> rustix::io::Result<()> {
        let d = self.fds.len();
        let from = (0..d)
            .rev()
            .find(|&i| self.fds[i].is_some())
            .map_or(0, |i| i + 1);
        let keep_from = d.saturating_sub(FD_WINDOW).max(from);
        let mut i = from;
        // Levels that will not be kept: skip through them with multi-component paths.
        let mut chunk_fd: Option<OwnedFd> = None;
        while i < keep_from {
            let start = i;
            let mut rel: Vec<u8> = Vec::new();
            while i < keep_from && (rel.is_empty() || rel.len() + 1 + self.names[i].len() <= CHUNK)
            {
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(self.names[i].as_bytes());
                i += 1;
            }
            let f = {
                let base = match &chunk_fd {
                    Some(f) => f.as_fd(),
                    None => self.base(start),
                };
                open_dir_at(base, os(&rel), self.how)?
            };
            if id_of(&sx_fd(f.as_fd())?) != self.ids[i - 1] {
                return Err(Errno::STALE);
            }
            chunk_fd = Some(f);
        }
        while i < d {
            let f = {
                let base = match &chunk_fd {
                    Some(f) => f.as_fd(),
                    None => self.base(i),
                };
                open_dir_at(base, &self.names[i], self.how)?
            };
            if id_of(&sx_fd(f.as_fd())?) != self.ids[i] {
                return Err(Errno::STALE);
            }
            chunk_fd = None;
            self.fds[i] = Some(f);
            i += 1;
        }
        Ok(())
    }
}

/// `lstat` of `rel` (a relative path, bytes) below `base`, its directories opened without
/// following a symlink or climbing out (mounts are crossed, as on the source side of a copy):
/// `Ok(None)` when it does not exist.
pub fn lstat_beneath(base: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<Option<Statx>> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let pdir = match open_dir_at(
        base,
        os(if parent.is_empty() { b"." } else { parent }),
        SRC_HOW,
    ) {
        Ok(d) => d,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e),
    };
    match sx(pdir.as_fd(), os(name)) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Open directory `rel` below `base` as the source side of a copy does (no symlink, no `..`).
pub fn open_dir_beneath(base: BorrowedFd<'_>, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    open_dir_at(base, os(if rel.is_empty() { b"." } else { rel }), SRC_HOW)
}

/// Open `comps` below `root` (several components per `openat2`, none a symlink).
fn open_path(
    root: BorrowedFd<'_>,
    comps: &[OsString],
    how: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    let mut i = 0;
    if comps.is_empty() {
        return open_dir_at(root, os(b"."), how);
    }
    while i < comps.len() {
        let mut rel: Vec<u8> = Vec::new();
        while i < comps.len() && (rel.is_empty() || rel.len() + 1 + comps[i].len() <= CHUNK) {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(comps[i].as_bytes());
            i += 1;
        }
        let f = {
            let base = match &cur {
                Some(f) => f.as_fd(),
                None => root,
            };
            open_dir_at(base, os(&rel), how)?
        };
        cur = Some(f);
    }
    cur.ok_or(Errno::NOENT)
}

fn read_names(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<OsString>> {
    let mut v = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(v)
}

// ------------------------------------------------------------------------------------------------
// Interruption (SIGINT, SIGTERM, SIGHUP)

use crate::signals as interrupt;

fn check_interrupt() -> Result<()> {
    match interrupt::caught() {
        Some(s) => Err(Error::Other(format!("interrupted by {s}"))),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------------
// Partial copies: naming and proving they are ours

const TMP_MARK: &[u8] = b".ephemeral-root-restore.";

/// Who made a temporary copy: boot (first 8 hex digits of the boot id), PID, and the process's
/// start time (clock ticks after boot), which tell a live restore from a dead one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creator {
    pub boot: String,
    pub pid: u32,
    pub start: u64,
}

fn boot8() -> Option<String> {
    let h: String = crate::clock::boot_id().chars().take(8).collect();
    (h.len() == 8).then_some(h)
}

/// Field 22 of `/proc/PID/stat` (the start time), read after the last `)` (the command name
/// may hold anything).
pub fn stat_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn proc_start(pid: u32) -> Option<u64> {
    stat_start(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn me() -> Option<Creator> {
    let pid = std::process::id();
    Some(Creator {
        boot: boot8()?,
        pid,
        start: proc_start(pid)?,
    })
}

fn tmp_name(dname: &[u8], c: &Creator) -> OsString {
    let mut v = vec![b'.'];
    v.extend_from_slice(&dname[..dname.len().min(64)]);
    v.extend_from_slice(TMP_MARK);
    v.extend_from_slice(format!("{}.{}.{}", c.boot, c.pid, c.start).as_bytes());
    OsString::from_vec(v)
}

/// The creator named in a temporary name, if it is one.
pub fn parse_tmp_name(n: &[u8]) -> Option<Creator> {
    if n.first() != Some(&b'.') {
        return None;
    }
    let at = n.windows(TMP_MARK.len()).rposition(|w| w == TMP_MARK)?;
    let tail = std::str::from_utf8(&n[at + TMP_MARK.len()..]).ok()?;
    let mut it = tail.split('.');
    let boot = it.next()?;
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    if it.next().is_some() || boot.len() != 8 || !boot.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Creator {
        boot: boot.to_string(),
        pid,
        start,
    })
}

/// Why `st` (an entry named like one of our partial copies, made by `c`) may be removed, or why
/// not. Proof needs all of: owned by root; the mode we create partial copies with (directory 0700,
/// file 0600, or a symlink); and its creator gone — made in an earlier boot, or no process with
/// that PID and start time exists now (`now`: this boot and the start time of that PID, if any).
pub fn stale_proof(
    uid: u32,
    mode: u32,
    c: &Creator,
    this_boot: &str,
    start_of_pid: Option<u64>,
) -> std::result::Result<(), &'static str> {
    if uid != 0 {
        return Err("it is not owned by root");
    }
    let ok_mode = match mode & 0o170000 {
        0o040000 => mode & 0o7777 == 0o700,
        0o100000 => mode & 0o7777 == 0o600,
        0o120000 => true,
        _ => false,
    };
    if !ok_mode {
        return Err("its mode is not the one partial copies are made with");
    }
    if c.boot == this_boot && start_of_pid == Some(c.start) {
        return Err("the restore that made it is still running");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Walking one tree (mount check, removal), bounded descriptors

#[derive(Debug)]
enum Stop {
    /// An entry on another mount than the tree: its path below the tree.
    Mount(Vec<u8>),
    Io(String, Errno),
    Interrupted,
}

/// Visit every entry below directory `name` in `parent`, depth first, never entering another
/// mount (the tree's mount id is `mnt`). `leaf` is called for non-directories and `leave` for
/// directories after their contents; both get the directory descriptor and the name.
fn walk_tree(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    mnt: u64,
    interruptible: bool,
    leaf: &mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> rustix::io::Result<()>,
    leave: &mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> rustix::io::Result<()>,
) -> std::result::Result<(), Stop> {
    let mut path = DirPath::new(parent, DST_HOW);
    let here = |p: &DirPath, n: Option<&OsStr>| {
        let mut v = join(&p.names);
        if let Some(n) = n {
            v.push(b'/');
            v.extend_from_slice(n.as_bytes());
        }
        v
    };
    let top = open_dir_at(parent, name, DST_HOW).map_err(|e| match e {
        Errno::XDEV => Stop::Mount(name.as_bytes().to_vec()),
        e => Stop::Io(cut(name.as_bytes()), e),
    })?;
    let mut todo: Vec<Vec<OsString>> = Vec::new();
    let names = read_names(top.as_fd()).map_err(|e| Stop::Io(cut(name.as_bytes()), e))?;
    path.push(name.to_os_string(), top)
        .map_err(|e| Stop::Io(cut(name.as_bytes()), e))?;
    todo.push(names);
    while let Some(names) = todo.last_mut() {
        if interruptible && interrupt::caught().is_some() {
            return Err(Stop::Interrupted);
        }
        match names.pop() {
            Some(n) => {
                if let Err(e) = path.ready() {
                    return Err(Stop::Io(cut(&here(&path, None)), e));
                }
                let cur = path.fd().map_err(|e| Stop::Io(String::new(), e))?;
                let st = match sx(cur, &n) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(Stop::Io(cut(&here(&path, Some(&n))), e)),
                };
                if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
                    return Err(Stop::Io(
                        "this kernel does not report mount ids (Linux 5.8 or later is needed)"
                            .into(),
                        Errno::NOSYS,
                    ));
                }
                if st.stx_mnt_id != mnt {
                    return Err(Stop::Mount(here(&path, Some(&n))));
                }
                if st.stx_mode as u32 & 0o170000 == 0o040000 {
                    let fd = match open_dir_at(cur, &n, DST_HOW) {
                        Ok(fd) => fd,
                        Err(Errno::XDEV) => return Err(Stop::Mount(here(&path, Some(&n)))),
                        Err(e) => return Err(Stop::Io(cut(&here(&path, Some(&n))), e)),
                    };
                    let kids = read_names(fd.as_fd())
                        .map_err(|e| Stop::Io(cut(&here(&path, Some(&n))), e))?;
                    path.push(n, fd)
                        .map_err(|e| Stop::Io(cut(&here(&path, None)), e))?;
                    todo.push(kids);
                } else {
                    leaf(cur, &n).map_err(|e| Stop::Io(cut(&here(&path, Some(&n))), e))?;
                }
            }
            None => {
                todo.pop();
                let n = path.names.last().cloned().unwrap_or_default();
                path.pop();
                if let Err(e) = path.ready() {
                    return Err(Stop::Io(cut(&here(&path, Some(&n))), e));
                }
                let cur = path.fd().map_err(|e| Stop::Io(String::new(), e))?;
                if let Err(e) = leave(cur, &n) {
                    return Err(Stop::Io(cut(&here(&path, Some(&n))), e));
                }
            }
        }
    }
    Ok(())
}

/// The mount id of `fd`, or an error saying the kernel is too old to prove what we need.
fn mount_id(fd: BorrowedFd<'_>, what: &str) -> Result<u64> {
    let st = sx_fd(fd).ctx(|| format!("statx {what}"))?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(Error::Refused(format!(
            "this kernel does not report mount ids (Linux 5.8 or later is needed), so restore cannot prove {what} holds no mount; not replacing anything"
        )));
    }
    Ok(st.stx_mnt_id)
}

/// Refuse (before anything is touched) if `name` in `pdir` is a mount point or holds one.
fn check_no_mounts(
    pdir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Statx,
    abs: &[u8],
    mountinfo: &[MountInfo],
) -> Result<()> {
    let pm = mount_id(pdir, "the destination's directory")?;
    let shown = cut(abs);
    if st.stx_mnt_id != pm {
        return Err(Error::Refused(format!(
            "{shown} is a mount point; restore does not replace mounts (unmount it first, or restore with --to elsewhere and copy what you need)"
        )));
    }
    let want = String::from_utf8_lossy(abs).into_owned();
    if let Some(m) = mountinfo.iter().find(|m| {
        m.mount_point == want
            || m.mount_point
                .starts_with(&format!("{}/", want.trim_end_matches('/')))
    }) {
        return Err(Error::Refused(format!(
            "{shown} holds a mount point ({} from {}); restore --force does not replace a tree that holds mounts, so the mounted data stays safe: unmount it first, or restore with --to elsewhere and copy what you need",
            cut(m.mount_point.as_bytes()),
            cut(m.source.as_bytes())
        )));
    }
    if st.stx_mode as u32 & 0o170000 != 0o040000 {
        return Ok(());
    }
    // Every entry below, with the shared walker (src/walk.rs): it reports a mount (by mount id,
    // a bind-mounted file too) instead of entering it. Whatever it cannot look at is a tree we
    // cannot prove free of mounts.
    let holds = |at: &[u8]| {
        Error::Refused(format!(
            "{shown} holds a mount point at {}; restore --force does not replace a tree that holds mounts, so the mounted data stays safe: unmount it first, or restore with --to elsewhere and copy what you need",
            cut(at)
        ))
    };
    let top = match open_dir_at(pdir, name, DST_HOW) {
        Ok(fd) => fd,
        Err(Errno::XDEV) => return Err(holds(name.as_bytes())),
        Err(e) => return Err(Error::sys(format!("open {shown}"), e)),
    };
    let opts = crate::walk::Options {
        read_links: false,
        max_depth: usize::MAX,
        ..Default::default()
    };
    let prefix = name.as_bytes();
    let mut w = crate::walk::Walker::new(top.as_fd(), prefix, opts)
        .map_err(|e| Error::sys(format!("read {shown}"), e))?;
    let mut n = 0u32;
    while let Some(ev) = w.next() {
        n = n.wrapping_add(1);
        if n % 1024 == 0 {
            check_interrupt()?;
        }
        match ev {
            crate::walk::Event::Entry(_) => {}
            crate::walk::Event::Mount(at) => return Err(holds(at)),
            crate::walk::Event::Problem(_, crate::walk::Problem::Vanished) => {}
            crate::walk::Event::Problem(at, why) => {
                return Err(Error::Refused(format!(
                    "cannot check {} for mount points ({}), so {shown} is not replaced",
                    cut(at),
                    why.describe()
                )))
            }
        }
    }
    Ok(())
}

/// Remove `name` in `pdir` and everything below it, never crossing into another mount: an entry
/// on another mount stops the removal (the rest stays, and the error says where).
fn remove_tree(
    pdir: BorrowedFd<'_>,
    name: &OsStr,
    interruptible: bool,
) -> std::result::Result<(), Stop> {
    let mnt = match sx_fd(pdir) {
        Ok(st) if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 => st.stx_mnt_id,
        Ok(_) => {
            return Err(Stop::Io(
                "this kernel does not report mount ids (Linux 5.8 or later is needed)".into(),
                Errno::NOSYS,
            ))
        }
        Err(e) => return Err(Stop::Io("the directory".into(), e)),
    };
    let st = match sx(pdir, name) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Stop::Io(cut(name.as_bytes()), e)),
    };
    if st.stx_mnt_id != mnt {
        return Err(Stop::Mount(name.as_bytes().to_vec()));
    }
    if st.stx_mode as u32 & 0o170000 != 0o040000 {
        return rustix::fs::unlinkat(pdir, name, AtFlags::empty())
            .map_err(|e| Stop::Io(cut(name.as_bytes()), e));
    }
    walk_tree(
        pdir,
        name,
        mnt,
        interruptible,
        &mut |d, n| match rustix::fs::unlinkat(d, n, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        },
        &mut |d, n| match rustix::fs::unlinkat(d, n, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        },
    )
}

fn removal_error(what: &str, where_: &str, s: Stop) -> Error {
    match s {
        Stop::Mount(p) => Error::Refused(format!(
            "stopped removing {what} at {where_}/{}: it is a mount point, and removal never crosses into another mount; the rest is left at {where_}",
            cut(&p)
        )),
        Stop::Interrupted => Error::Other(format!(
            "interrupted while removing {what}; the rest is left at {where_} (the next restore there removes it)"
        )),
        Stop::Io(p, e) => Error::sys(format!("remove {what} ({where_}, at {p})"), e),
    }
}

// ------------------------------------------------------------------------------------------------
// Copying

/// Where extended attributes are read or written: an open file, or a name in a directory
/// (symlinks and special files, which cannot be opened for I/O), through `/proc/self/fd`.
enum XTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl XTarget<'_> {
    fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> OsString {
        use std::os::fd::AsRawFd;
        let mut v = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        v.extend_from_slice(name.as_bytes());
        OsString::from_vec(v)
    }
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XTarget::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XTarget::At(d, n) => rustix::fs::llistxattr(Self::proc_path(*d, n), buf),
        }
    }
    fn get(&self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            XTarget::At(d, n) => rustix::fs::lgetxattr(Self::proc_path(*d, n), name, buf),
        }
    }
    fn set(&self, name: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        let f = rustix::fs::XattrFlags::empty();
        match self {
            XTarget::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, f),
            XTarget::At(d, n) => rustix::fs::lsetxattr(Self::proc_path(*d, n), name, value, f),
        }
    }
}

fn ts(t: &rustix::fs::StatxTimestamp) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: t.tv_sec as _,
        tv_nsec: t.tv_nsec as _,
    }
}

fn times_of(st: &Statx) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: ts(&st.stx_atime),
        last_modification: ts(&st.stx_mtime),
    }
}

fn owner(st: &Statx) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw(st.stx_uid)),
        Some(rustix::fs::Gid::from_raw(st.stx_gid)),
    )
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

fn kind_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFDIR => "a directory",
        S_IFREG => "a file",
        S_IFLNK => "a symlink",
        0o140000 => "a socket",
        0o010000 => "a FIFO",
        0o020000 => "a character device",
        0o060000 => "a block device",
        _ => "a special file",
    }
}

struct Copier<'a> {
    opts: &'a Opts,
    summary: Summary,
    /// (dev, ino) of multiply linked files already copied → (arena node of its directory, name).
    links: HashMap<Id, (usize, OsString)>,
    /// Directories of the copy: (parent node, name); node 0 is the copy itself (the temporary
    /// name). One entry per directory, so hard-link bookkeeping costs no path per file.
    arena: Vec<(usize, OsString)>,
    buf: Vec<u8>,
    val: Vec<u8>,
}

/// For messages: the source path of an entry.
struct Here<'a> {
    prefix: &'a str,
    dirs: &'a [OsString],
    name: &'a OsStr,
}

impl Here<'_> {
    /// One error for "`what` this entry failed" (one copy of the formatting code for all).
    #[inline(never)]
    fn err(&self, what: &str, e: impl Into<std::io::Error>) -> Error {
        Error::sys(format!("{what} {}", self.show()), e)
    }

    fn show(&self) -> String {
        let mut v = Vec::new();
        for d in self.dirs.iter().skip(1) {
            v.push(b'/');
            v.extend_from_slice(d.as_bytes());
        }
        if !self.name.is_empty() {
            v.push(b'/');
            v.extend_from_slice(self.name.as_bytes());
        }
        format!("{}{}", self.prefix, cut(&v))
    }
}

impl<'a> Copier<'a> {
    /// Forget the tree copied last (hard links are only found inside one copied tree).
    fn next_tree(&mut self) {
        self.links.clear();
        self.arena.clear();
    }

    fn new(opts: &'a Opts) -> Copier<'a> {
        Copier {
            opts,
            summary: Summary::default(),
            links: HashMap::new(),
            arena: Vec::new(),
            buf: vec![0; 1 << 20],
            val: vec![0; 65536],
        }
    }

    fn mode_of(&mut self, st: &Statx, here: &Here) -> Mode {
        let mut m = st.stx_mode as u32 & 0o7777;
        let kind = st.stx_mode as u32 & S_IFMT;
        if kind != S_IFDIR && m & 0o6000 != 0 && !self.opts.keep_privileges {
            let what = match m & 0o6000 {
                0o4000 => "setuid bit",
                0o2000 => "setgid bit",
                _ => "setuid and setgid bits",
            };
            self.summary
                .stripped
                .push(format!("{what} of {}", here.show()));
            m &= !0o6000;
        }
        Mode::from_raw_mode(m as _)
    }

    fn xattrs(&mut self, src: XTarget, dst: XTarget, here: &Here) -> Result<()> {
        let n = match src.list(&mut self.buf) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(()),
            Err(e) => {
                return Err(Error::sys(
                    format!("list extended attributes of {}", here.show()),
                    e,
                ))
            }
        };
        let names: Vec<OsString> = self.buf[..n]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect();
        for name in names {
            if name.as_bytes() == b"security.capability" && !self.opts.keep_privileges {
                self.summary
                    .stripped
                    .push(format!("file capabilities of {}", here.show()));
                continue;
            }
            let len = match src.get(&name, &mut self.val) {
                Ok(l) => l,
                Err(Errno::NODATA) => continue,
                Err(Errno::RANGE) => {
                    // Larger than our buffer: size it and read again.
                    let want = src.get(&name, &mut []).unwrap_or(0);
                    self.val.resize(want.max(self.val.len()), 0);
                    src.get(&name, &mut self.val).ctx(|| {
                        format!(
                            "read extended attribute {} of {}",
                            esc(name.as_bytes()),
                            here.show()
                        )
                    })?
                }
                Err(e) => {
                    return Err(Error::sys(
                        format!(
                            "read extended attribute {} of {}",
                            esc(name.as_bytes()),
                            here.show()
                        ),
                        e,
                    ))
                }
            };
            if let Err(e) = dst.set(&name, &self.val[..len]) {
                self.summary.xattr_failures.push((
                    here.show(),
                    esc(name.as_bytes()),
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Copy `len` bytes at `off` from `src` to the same offset in `dst`.
    fn copy_range(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        mut off: u64,
        end: u64,
        here: &Here,
    ) -> Result<()> {
        let mut fallback = false;
        while off < end {
            check_interrupt()?;
            let want = (end - off).min(64 << 20) as usize;
            if !fallback {
                let (mut a, mut b) = (off, off);
                match rustix::fs::copy_file_range(src, Some(&mut a), dst, Some(&mut b), want) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        off += n as u64;
                        continue;
                    }
                    Err(
                        Errno::XDEV
                        | Errno::INVAL
                        | Errno::OPNOTSUPP
                        | Errno::NOSYS
                        | Errno::BADF
                        | Errno::PERM,
                    ) => fallback = true,
                    Err(e) => return Err(Error::sys(format!("copy {}", here.show()), e)),
                }
            }
            let want = want.min(self.buf.len());
            let n = rustix::io::pread(src, &mut self.buf[..want], off)
                .map_err(|e| here.err("read", e))?;
            if n == 0 {
                return Ok(());
            }
            let mut w = 0;
            while w < n {
                w += rustix::io::pwrite(dst, &self.buf[w..n], off + w as u64)
                    .map_err(|e| here.err("write the copy of", e))?;
            }
            off += n as u64;
        }
        Ok(())
    }

    /// File content: a reflink where the filesystem can, otherwise only the data extents
    /// (`SEEK_DATA`/`SEEK_HOLE`), so holes stay holes.
    fn copy_data(&mut self, src: &OwnedFd, dst: &OwnedFd, size: u64, here: &Here) -> Result<u64> {
        if size > 0 && rustix::fs::ioctl_ficlone(dst, src).is_ok() {
            self.summary.reflinked += size;
            return Ok(size);
        }
        let mut off = 0u64;
        while off < size {
            check_interrupt()?;
            let data = match rustix::fs::seek(src, SeekFrom::Data(off)) {
                Ok(d) => d,
                Err(Errno::NXIO) => break,
                Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                    self.copy_range(src, dst, off, size, here)?;
                    break;
                }
                Err(e) => return Err(Error::sys(format!("find data in {}", here.show()), e)),
            };
            let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
                Ok(h) => h.min(size),
                Err(_) => size,
            };
            self.copy_range(src, dst, data, hole, here)?;
            off = hole;
        }
        rustix::fs::ftruncate(dst, size).map_err(|e| here.err("set the size of the copy of", e))?;
        Ok(size)
    }

    /// The path of arena node `node` below the destination's directory (starting with the
    /// temporary name).
    fn node_path(&self, mut node: usize) -> Vec<OsString> {
        let mut v = Vec::new();
        while let Some((parent, name)) = self.arena.get(node) {
            v.push(name.clone());
            node = *parent;
        }
        v.reverse();
        v
    }

    /// Copy the non-directory `name` (lstat `st`) from `sdir` to `dname` in `ddir`, which is arena
    /// node `node` (for hard links).
    #[allow(clippy::too_many_arguments)]
    fn copy_leaf(
        &mut self,
        sdir: BorrowedFd<'_>,
        name: &OsStr,
        ddir: BorrowedFd<'_>,
        dname: &OsStr,
        st: &Statx,
        pdir: BorrowedFd<'_>,
        node: usize,
        here: &Here,
    ) -> Result<()> {
        fault_point("restore:copying");
        let (uid, gid) = owner(st);
        let kind = st.stx_mode as u32 & S_IFMT;
        match kind {
            S_IFREG => {
                let id = id_of(st);
                if st.stx_nlink > 1 {
                    if let Some((fnode, fname)) = self.links.get(&id) {
                        let fname = fname.clone();
                        let fdirs = self.node_path(*fnode);
                        let fdir = open_path(pdir, &fdirs, DST_HOW)
                            .map_err(|e| here.err("open the directory of the first copy of", e))?;
                        rustix::fs::linkat(&fdir, &fname, ddir, dname, AtFlags::empty())
                            .map_err(|e| here.err("hard-link", e))?;
                        self.summary.links += 1;
                        return Ok(());
                    }
                    self.links.insert(id, (node, dname.to_os_string()));
                }
                let src = rustix::fs::openat(
                    sdir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| here.err("open", e))?;
                let dst = rustix::fs::openat(
                    ddir,
                    dname,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| here.err("create the copy of", e))?;
                let n = self.copy_data(&src, &dst, st.stx_size, here)?;
                rustix::fs::fchown(&dst, uid, gid).map_err(|e| here.err("chown the copy of", e))?;
                let mode = self.mode_of(st, here);
                rustix::fs::fchmod(&dst, mode).map_err(|e| here.err("chmod the copy of", e))?;
                self.xattrs(XTarget::Fd(src.as_fd()), XTarget::Fd(dst.as_fd()), here)?;
                rustix::fs::futimens(&dst, &times_of(st))
                    .map_err(|e| here.err("set times of the copy of", e))?;
                self.summary.files += 1;
                self.summary.bytes += n;
            }
            S_IFDIR => return Err(Error::Other("copy_leaf called for a directory".into())),
            0o140000 => {
                self.summary
                    .skipped
                    .push(format!("{} (socket)", here.show()));
            }
            _ => {
                if kind == S_IFLNK {
                    let target = rustix::fs::readlinkat(sdir, name, Vec::new())
                        .map_err(|e| here.err("read symlink", e))?;
                    rustix::fs::symlinkat(target.as_c_str(), ddir, dname)
                        .map_err(|e| here.err("create the copy of symlink", e))?;
                } else {
                    let ft = rustix::fs::FileType::from_raw_mode(st.stx_mode as _);
                    let dev = rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor);
                    rustix::fs::mknodat(ddir, dname, ft, Mode::from_raw_mode(0o600), dev)
                        .map_err(|e| here.err("create the copy of special file", e))?;
                }
                rustix::fs::chownat(ddir, dname, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| here.err("chown the copy of", e))?;
                if kind != S_IFLNK {
                    // After chown, which may clear setuid/setgid bits. The entry is one this
                    // process just created in a directory only root can enter, not a symlink.
                    let mode = self.mode_of(st, here);
                    rustix::fs::chmodat(ddir, dname, mode, AtFlags::empty())
                        .map_err(|e| here.err("chmod the copy of", e))?;
                }
                self.xattrs(XTarget::At(sdir, name), XTarget::At(ddir, dname), here)?;
                rustix::fs::utimensat(ddir, dname, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| here.err("set times of the copy of", e))?;
                self.summary.files += 1;
            }
        }
        Ok(())
    }

    fn finish_dir(
        &mut self,
        s: BorrowedFd<'_>,
        d: BorrowedFd<'_>,
        st: &Statx,
        here: &Here,
    ) -> Result<()> {
        let (uid, gid) = owner(st);
        rustix::fs::fchown(d, uid, gid).map_err(|e| here.err("chown the copy of", e))?;
        let mode = self.mode_of(st, here);
        rustix::fs::fchmod(d, mode).map_err(|e| here.err("chmod the copy of", e))?;
        self.xattrs(XTarget::Fd(s), XTarget::Fd(d), here)?;
        rustix::fs::futimens(d, &times_of(st))
            .map_err(|e| here.err("set times of the copy of", e))?;
        self.summary.dirs += 1;
        Ok(())
    }

    /// Copy `sname` in `sdir` (lstat `st`) to `tmp` in `pdir`: depth first, iteratively, with a
    /// bounded number of descriptors on each side and nothing proportional to the depth per entry.
    fn copy_tree(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        st: &Statx,
        pdir: BorrowedFd<'_>,
        tmp: &OsStr,
        prefix: &str,
    ) -> Result<()> {
        let root_here = Here {
            prefix,
            dirs: &[],
            name: OsStr::new(""),
        };
        if st.stx_mode as u32 & S_IFMT != S_IFDIR {
            return self.copy_leaf(sdir, sname, pdir, tmp, st, pdir, usize::MAX, &root_here);
        }
        rustix::fs::mkdirat(pdir, tmp, Mode::from_raw_mode(0o700))
            .map_err(|e| root_here.err("create the copy of", e))?;
        let s0 = open_dir_at(sdir, sname, SRC_HOW).map_err(|e| root_here.err("open", e))?;
        let d0 =
            open_dir_at(pdir, tmp, DST_HOW).map_err(|e| root_here.err("open the copy of", e))?;
        let mut src = DirPath::new(sdir, SRC_HOW);
        let mut dst = DirPath::new(pdir, DST_HOW);
        let names = read_names(s0.as_fd()).map_err(|e| root_here.err("read directory", e))?;
        src.push(sname.to_os_string(), s0)
            .map_err(|e| root_here.err("stat", e))?;
        dst.push(tmp.to_os_string(), d0)
            .map_err(|e| root_here.err("stat the copy of", e))?;
        self.arena.push((usize::MAX, tmp.to_os_string()));
        // (names left to copy, lstat of the source directory, arena node of the copy)
        let mut frames: Vec<(Vec<OsString>, Statx, usize)> = vec![(names, *st, 0)];
        let reopen = |e: Errno, which: &str| match e {
            Errno::STALE => Error::Other(format!(
                "a directory of the {which} was replaced while restoring; nothing was put in place"
            )),
            e => Error::sys(format!("reopen a directory of the {which}"), e),
        };
        while let Some((names, _, node)) = frames.last_mut() {
            check_interrupt()?;
            let node = *node;
            match names.pop() {
                Some(n) => {
                    src.ready().map_err(|e| reopen(e, "old root"))?;
                    dst.ready().map_err(|e| reopen(e, "copy"))?;
                    let sfd = src.fd().map_err(|e| reopen(e, "old root"))?;
                    let dfd = dst.fd().map_err(|e| reopen(e, "copy"))?;
                    let here = Here {
                        prefix,
                        dirs: &src.names,
                        name: &n,
                    };
                    let cst = sx(sfd, &n).map_err(|e| here.err("lstat", e))?;
                    if cst.stx_mode as u32 & S_IFMT != S_IFDIR {
                        self.copy_leaf(sfd, &n, dfd, &n, &cst, pdir, node, &here)?;
                        continue;
                    }
                    let s = open_dir_at(sfd, &n, SRC_HOW).map_err(|e| here.err("open", e))?;
                    let kids = read_names(s.as_fd()).map_err(|e| here.err("read directory", e))?;
                    rustix::fs::mkdirat(dfd, &n, Mode::from_raw_mode(0o700))
                        .map_err(|e| here.err("create the copy of", e))?;
                    let d = open_dir_at(dfd, &n, DST_HOW)
                        .map_err(|e| here.err("open the copy of", e))?;
                    let show = |names: &[OsString]| {
                        Here {
                            prefix,
                            dirs: names,
                            name: &n,
                        }
                        .show()
                    };
                    if let Err(e) = src.push(n.clone(), s) {
                        return Err(Error::sys(format!("stat {}", show(&src.names)), e));
                    }
                    if let Err(e) = dst.push(n.clone(), d) {
                        return Err(Error::sys(
                            format!("stat the copy of {}", show(&src.names)),
                            e,
                        ));
                    }
                    self.arena.push((node, n));
                    frames.push((kids, cst, self.arena.len() - 1));
                }
                None => {
                    let Some((_, dir_st, _)) = frames.pop() else {
                        break;
                    };
                    src.ready().map_err(|e| reopen(e, "old root"))?;
                    dst.ready().map_err(|e| reopen(e, "copy"))?;
                    let sfd = src.fd().map_err(|e| reopen(e, "old root"))?;
                    let dfd = dst.fd().map_err(|e| reopen(e, "copy"))?;
                    let here = Here {
                        prefix,
                        dirs: &src.names,
                        name: OsStr::new(""),
                    };
                    self.finish_dir(sfd, dfd, &dir_st, &here)?;
                    src.pop();
                    dst.pop();
                }
            }
        }
        Ok(())
    }
}

#[cfg(feature = "fault-injection")]
fn fault_point(name: &str) {
    crate::fault::restore_point(name)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn fault_point(_name: &str) {}

// ------------------------------------------------------------------------------------------------
// The destination's directory

/// The destination's directory, opened one component at a time from `dest.base` without
/// following symlinks; missing directories are created (mode 0700, root) when `create` is given
/// (the old root and the path of the destination's directory inside it, to copy metadata from
/// later).
struct Parent<'a> {
    path: DirPath<'a>,
    /// Levels this run created (index into the path), with the old root's matching directory.
    created: Vec<(usize, Option<Statx>)>,
}

fn open_parent<'a>(dest: &Dest<'a>, create: Option<(&OwnedFd, &[u8])>) -> Result<Parent<'a>> {
    let mut path = DirPath::new(dest.base, SRC_HOW);
    let mut created = Vec::new();
    for (i, c) in dest.parent.iter().enumerate() {
        let shown = || {
            let mut v = if dest.abs.first() == Some(&b'/') {
                vec![b'/']
            } else {
                Vec::new()
            };
            v.extend(join(&dest.parent[..=i]));
            cut(&v)
        };
        let cur = path.cur().ctx(|| format!("reopen {}", shown()))?;
        let fd = match open_dir_at(cur, c, SRC_HOW) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                return Err(Error::Refused(format!(
                    "destination {}: {} is a symlink; restore never writes through a symlink (name the real directory with --to)",
                    cut(&dest.abs),
                    shown()
                )))
            }
            Err(Errno::NOTDIR) => {
                return Err(Error::Refused(format!(
                    "destination {}: {} is not a directory",
                    cut(&dest.abs),
                    shown()
                )))
            }
            Err(Errno::NOENT) if create.is_some() => {
                match rustix::fs::mkdirat(cur, c, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {
                        let meta = create.and_then(|(base, rel_parent)| {
                            let mut rel: Vec<u8> = rel_parent
                                .split(|&b| b == b'/')
                                .take(i + 1)
                                .collect::<Vec<_>>()
                                .join(&b'/');
                            if rel.is_empty() {
                                rel.push(b'.');
                            }
                            let f = open_dir_at(base.as_fd(), os(&rel), SRC_HOW).ok()?;
                            sx_fd(f.as_fd()).ok()
                        });
                        created.push((i, meta));
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(Error::sys(format!("create {}", shown()), e)),
                }
                match open_dir_at(cur, c, SRC_HOW) {
                    Ok(fd) => fd,
                    Err(Errno::LOOP) => {
                        return Err(Error::Refused(format!(
                            "destination {}: {} became a symlink while it was being created; refused",
                            cut(&dest.abs),
                            shown()
                        )))
                    }
                    Err(e) => return Err(Error::sys(format!("open {}", shown()), e)),
                }
            }
            Err(Errno::NOENT) => {
                return Err(Error::Usage(format!(
                    "destination directory {} does not exist (create it first)",
                    shown()
                )))
            }
            Err(e) => return Err(Error::sys(format!("open {}", shown()), e)),
        };
        path.push(c.clone(), fd)
            .ctx(|| format!("stat {}", shown()))?;
    }
    Ok(Parent { path, created })
}

impl Parent<'_> {
    /// Give the directories this run created the owner, mode and times of the old root's.
    fn finish(&mut self) -> Result<()> {
        while let Some((i, meta)) = self.created.pop() {
            while self.path.depth() > i + 1 {
                self.path.pop();
            }
            let fd = self
                .path
                .cur()
                .ctx(|| "reopen a created parent directory")?;
            match meta {
                Some(st) => {
                    let (u, g) = owner(&st);
                    rustix::fs::fchown(fd, u, g).ctx(|| "chown a created parent directory")?;
                    rustix::fs::fchmod(fd, Mode::from_raw_mode((st.stx_mode as u32 & 0o7777) as _))
                        .ctx(|| "chmod a created parent directory")?;
                    rustix::fs::futimens(fd, &times_of(&st))
                        .ctx(|| "set times of a created parent directory")?;
                }
                None => {
                    rustix::fs::fchmod(fd, Mode::from_raw_mode(0o755))
                        .ctx(|| "chmod a created parent directory")?;
                }
            }
        }
        Ok(())
    }

    /// Remove the directories this run created, if they are still empty.
    fn undo(&mut self) {
        while let Some((i, _)) = self.created.pop() {
            while self.path.depth() > i + 1 {
                self.path.pop();
            }
            let name = self.path.names.last().cloned().unwrap_or_default();
            self.path.pop();
            if let Ok(fd) = self.path.cur() {
                let _ = rustix::fs::unlinkat(fd, &name, AtFlags::REMOVEDIR);
            }
        }
    }
}

/// Remove partial copies in `pdir` that are provably left by an interrupted restore.
fn remove_stale(pdir: BorrowedFd<'_>, abs_dir: &[u8], sum: &mut Summary) {
    let Ok(names) = read_names(pdir) else { return };
    let this_boot = boot8();
    for n in names {
        let Some(c) = parse_tmp_name(n.as_bytes()) else {
            continue;
        };
        let shown = {
            let mut v = abs_dir.to_vec();
            v.push(b'/');
            v.extend_from_slice(n.as_bytes());
            cut(&v)
        };
        let Ok(st) = sx(pdir, &n) else { continue };
        let proof = match &this_boot {
            None => Err("the boot id cannot be read"),
            Some(b) => stale_proof(st.stx_uid, st.stx_mode as u32, &c, b, proc_start(c.pid)),
        };
        match proof {
            Ok(()) => match remove_tree(pdir, &n, false) {
                Ok(()) => {
                    log::info!("removed {shown}, a partial copy left by an interrupted restore");
                    sum.stale_removed.push(shown);
                }
                Err(e) => log::warn!(
                    "{}",
                    removal_error("a partial copy left by an interrupted restore", &shown, e)
                ),
            },
            Err(why) => log::warn!(
                "{shown} looks like a partial copy left by an interrupted restore, but {why}; not touching it (remove it yourself if it is not needed)"
            ),
        }
    }
}

fn same_kind(a: u32, b: u32) -> bool {
    a & S_IFMT == b & S_IFMT
}

/// Where a copy comes from, for messages.
#[derive(Debug, Clone, Copy)]
pub enum Src<'a> {
    /// An old root, by name (`restore`).
    OldRoot(&'a str),
    /// The live root, read through the backend's private mount (`persist`).
    Root,
}

impl Src<'_> {
    /// `in old root NAME`, `on the root`.
    fn where_(&self) -> String {
        match self {
            Src::OldRoot(n) => format!("in old root {n}"),
            Src::Root => "on the root".into(),
        }
    }
    /// What the copy is called in messages about an interruption.
    fn verb(&self) -> (&'static str, &'static str) {
        match self {
            Src::OldRoot(_) => ("restore", "restored"),
            Src::Root => ("persist", "copied"),
        }
    }
    /// The prefix of source paths in messages (`NAME:/var/lib/x`, or the path alone).
    fn prefix(&self, shown_src: &str) -> String {
        match self {
            Src::OldRoot(n) => format!("{n}:{shown_src}"),
            Src::Root => shown_src.to_string(),
        }
    }
}

/// The source's directory and the entry in it: `rel` below `base`, opened without following a
/// symlink or climbing out (the errors say so in one line).
fn open_source(base: &OwnedFd, src: Src, rel: &[u8]) -> Result<(OwnedFd, Vec<u8>, Statx)> {
    let shown_src = format!("/{}", cut(rel));
    let w = src.where_();
    let (rel_parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let escape_error = |e: Errno| {
        match e {
        Errno::LOOP => Error::Refused(format!(
            "{shown_src} {w} goes through a symlink; name the real path (symlinks in PATH are refused so the copy cannot leave its source)"
        )),
        Errno::XDEV => Error::Refused(format!("{shown_src} escapes its source ({w}); refused")),
        Errno::NOENT => Error::Usage(match src {
            Src::OldRoot(old) => format!(
                "{shown_src} does not exist in old root {old}; `ephemeral-root diff {old}` shows what it holds"
            ),
            Src::Root => format!("{shown_src} does not exist on the root"),
        }),
        e => Error::sys(format!("open {shown_src} {w}"), e),
    }
    };
    let sdir = open_dir_at(
        base.as_fd(),
        os(if rel_parent.is_empty() {
            b"."
        } else {
            rel_parent
        }),
        SRC_HOW,
    )
    .map_err(escape_error)?;
    let st = sx(sdir.as_fd(), os(name)).map_err(escape_error)?;
    Ok((sdir, name.to_vec(), st))
}

/// Copy `rel` from the tree open at `base` (an old root, or the root) to `dest`.
pub fn copy_into(
    base: &OwnedFd,
    src: Src,
    rel: &[u8],
    dest: &Dest<'_>,
    opts: &Opts,
    mountinfo: &[MountInfo],
) -> Result<Summary> {
    let shown_src = format!("/{}", cut(rel));
    let rel_parent = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &b""[..],
    };
    let (sdir, name, st) = open_source(base, src, rel)?;
    let name = &name[..];
    let prefix = src.prefix(&shown_src);
    let (cmd, done) = src.verb();
    let w = src.where_();

    let create = opts.create_parents.then_some((base, rel_parent));
    let mut parent = open_parent(dest, create)?;
    let result = (|| -> Result<Summary> {
        let pdir = parent
            .path
            .cur()
            .ctx(|| "reopen the destination's directory")?;
        let abs_dir = match dest.abs.iter().rposition(|&b| b == b'/') {
            Some(i) => dest.abs[..i].to_vec(),
            None => b".".to_vec(),
        };
        let dname = dest.name.as_os_str();
        let shown_dest = cut(&dest.abs);
        let existing = match sx(pdir, dname) {
            Ok(e) => Some(e),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(Error::sys(format!("lstat {shown_dest}"), e)),
        };
        if let Some(ex) = &existing {
            if !opts.force {
                return Err(Error::Refused(match src {
                    Src::OldRoot(_) => format!(
                        "{shown_dest} exists; not overwriting it (pass --force to replace it, or --to another path)"
                    ),
                    Src::Root => format!(
                        "{shown_dest} exists; not overwriting it (`ephemeral-root persist --merge` copies only what is missing)"
                    ),
                }));
            }
            if !same_kind(ex.stx_mode as u32, st.stx_mode as u32) && !opts.replace_type {
                return Err(Error::Refused(format!(
                    "{shown_dest} is {} and {shown_src} {w} is {}; not replacing one kind with another even with --force (pass --replace-type if that is what you want)",
                    kind_name(ex.stx_mode as u32),
                    kind_name(st.stx_mode as u32)
                )));
            }
            check_no_mounts(pdir, dname, ex, &dest.abs, mountinfo)?;
        }
        // Every check passed: from here on things are written. First, partial copies of
        // earlier, killed restores (only those provably ours).
        let mut sum = Summary::default();
        remove_stale(pdir, &abs_dir, &mut sum);
        let creator = me().ok_or_else(|| {
            Error::Other("cannot read this process's start time or the boot id from /proc".into())
        })?;
        let tmp = tmp_name(dname.as_bytes(), &creator);
        let mut c = Copier::new(opts);
        if let Err(e) = c.copy_tree(sdir.as_fd(), os(name), &st, pdir, &tmp, &prefix) {
            let cleanup = remove_tree(pdir, &tmp, false);
            let e = match (interrupt::caught(), cleanup) {
                (Some(s), Ok(())) => Error::Other(format!(
                    "{cmd} interrupted by {s}: the partial copy was removed; nothing was {done} to {shown_dest}"
                )),
                (_, Ok(())) => e,
                (_, Err(stop)) => {
                    log::error!("{e}");
                    removal_error("the partial copy", &cut(&tmp_abs(&abs_dir, &tmp)), stop)
                }
            };
            return Err(e);
        }
        fault_point("restore:copied");
        check_interrupt().map_err(|_| {
            let _ = remove_tree(pdir, &tmp, false);
            Error::Other(format!(
                "{cmd} interrupted by {}: the partial copy was removed; nothing was {done} to {shown_dest}",
                interrupt::caught().map(|s| s.to_string()).unwrap_or_default()
            ))
        })?;
        // One sync for everything written, before the copy gets its name.
        rustix::fs::syncfs(pdir).ctx(|| format!("syncfs the filesystem of {shown_dest}"))?;
        let committed = match &existing {
            None => rustix::fs::renameat_with(pdir, &tmp, pdir, dname, RenameFlags::NOREPLACE),
            Some(ex) => match sx(pdir, dname) {
                Ok(now)
                    if id_of(&now) == id_of(ex)
                        && same_kind(now.stx_mode as u32, ex.stx_mode as u32) =>
                {
                    if ex.stx_mode as u32 & S_IFMT == S_IFDIR
                        || st.stx_mode as u32 & S_IFMT == S_IFDIR
                    {
                        rustix::fs::renameat_with(pdir, &tmp, pdir, dname, RenameFlags::EXCHANGE)
                    } else {
                        rustix::fs::renameat(pdir, &tmp, pdir, dname)
                    }
                }
                _ => Err(Errno::EXIST),
            },
        };
        if let Err(e) = committed {
            let _ = remove_tree(pdir, &tmp, false);
            return Err(match e {
                Errno::EXIST | Errno::NOTEMPTY => Error::Refused(format!(
                    "{shown_dest} appeared or changed while copying; nothing was put in place (run again to replace it)"
                )),
                Errno::BUSY => Error::Refused(format!(
                    "{shown_dest} became busy (a mount point?) while copying; nothing was put in place"
                )),
                e => Error::sys(format!("rename the copy into place as {shown_dest}"), e),
            });
        }
        let _ = rustix::fs::fsync(pdir);
        // With RENAME_EXCHANGE the replaced tree now has the temporary name: make it root-only
        // (nobody can move things into it while it is removed, and a leftover is provably ours),
        // then remove it without crossing mounts.
        if let Ok(old_st) = sx(pdir, &tmp) {
            if old_st.stx_mode as u32 & S_IFMT == S_IFDIR {
                if let Ok(fd) = open_dir_at(pdir, &tmp, DST_HOW) {
                    let _ = rustix::fs::fchown(
                        &fd,
                        Some(rustix::fs::Uid::ROOT),
                        Some(rustix::fs::Gid::ROOT),
                    );
                    let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
                }
            }
            if let Err(stop) = remove_tree(pdir, &tmp, true) {
                let e = removal_error(
                    &format!("the replaced {shown_dest}"),
                    &cut(&tmp_abs(&abs_dir, &tmp)),
                    stop,
                );
                log::warn!("{done} {shown_dest}, but: {e}");
            }
        }
        c.summary.add(sum);
        Ok(c.summary)
    })();
    match &result {
        Ok(_) => parent.finish()?,
        Err(_) => parent.undo(),
    }
    result
}

// ------------------------------------------------------------------------------------------------
// Merging: copy only what the destination lacks

/// What [`merge_into`] did.
#[derive(Debug, Default)]
pub struct Merged {
    /// What was copied (every missing entry with everything below it).
    pub copied: Summary,
    /// Missing entries copied (each with everything below it).
    pub added: u64,
    /// Entries present on both sides with the same content, left as they are.
    pub same: u64,
    /// Entries present on both sides that differ, left as they are: (shown path, how).
    pub conflicts: Vec<(String, String)>,
}

/// How the non-directory entries `a` (source) and `b` (destination) differ, if they do: kind;
/// size and content for files (read and compared, never trusted to size and times); target for
/// symlinks; device number for devices. Owner, mode, times and extended attributes are not
/// compared.
fn leaf_difference(
    sdir: BorrowedFd<'_>,
    a: &Statx,
    ddir: BorrowedFd<'_>,
    b: &Statx,
    name: &OsStr,
    buf: &mut Vec<u8>,
) -> rustix::io::Result<Option<String>> {
    let (ka, kb) = (a.stx_mode as u32 & S_IFMT, b.stx_mode as u32 & S_IFMT);
    if ka != kb {
        return Ok(Some(format!(
            "{} on the source, {} in the destination",
            kind_name(ka),
            kind_name(kb)
        )));
    }
    match ka {
        S_IFDIR => Ok(None),
        S_IFREG => {
            if a.stx_size != b.stx_size {
                return Ok(Some(format!(
                    "different size ({} bytes on the source, {} in the destination)",
                    a.stx_size, b.stx_size
                )));
            }
            let open = |d: BorrowedFd<'_>| {
                rustix::fs::openat(
                    d,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let (fa, fb) = (open(sdir)?, open(ddir)?);
            const HALF: usize = 1 << 19;
            buf.resize(2 * HALF, 0);
            let (ba, bb) = buf.split_at_mut(HALF);
            let mut off = 0u64;
            loop {
                if interrupt::caught().is_some() {
                    return Err(Errno::INTR);
                }
                let n = rustix::io::pread(&fa, &mut ba[..], off)?;
                if n == 0 {
                    // Grown on the destination side meanwhile?
                    let m = rustix::io::pread(&fb, &mut bb[..1], off)?;
                    return Ok((m != 0).then(|| "different content".to_string()));
                }
                let mut got = 0;
                while got < n {
                    let m = rustix::io::pread(&fb, &mut bb[got..n], off + got as u64)?;
                    if m == 0 {
                        return Ok(Some("different content".into()));
                    }
                    got += m;
                }
                if ba[..n] != bb[..n] {
                    return Ok(Some("different content".into()));
                }
                off += n as u64;
            }
        }
        S_IFLNK => {
            let ta = rustix::fs::readlinkat(sdir, name, Vec::new())?;
            let tb = rustix::fs::readlinkat(ddir, name, Vec::new())?;
            Ok((ta != tb).then(|| {
                format!(
                    "symlink to {} on the source, to {} in the destination",
                    cut(ta.as_bytes()),
                    cut(tb.as_bytes())
                )
            }))
        }
        _ => Ok(
            ((a.stx_rdev_major, a.stx_rdev_minor) != (b.stx_rdev_major, b.stx_rdev_minor))
                .then(|| "different device number".to_string()),
        ),
    }
}

/// `persist --merge`: copy into the existing `dest` whatever `rel` (below `base`) holds that
/// `dest` lacks, and nothing else.
///
/// - A missing entry is copied whole (with everything below it, kept as [`copy_into`] keeps it)
///   under a temporary name in its destination directory; after the walk, one `syncfs`, then each
///   copy gets its name with `RENAME_NOREPLACE` (an entry that appeared meanwhile is a conflict,
///   and the copy is removed).
/// - A directory present on both sides is merged the same way, recursively; its own owner, mode,
///   times and attributes are left as the destination has them.
/// - Nothing present in the destination is replaced, changed or removed. A non-directory present
///   on both sides is compared ([`leaf_difference`]): the same content counts as `same`, any
///   difference (kind, content, symlink target, device number) is a conflict, listed and left.
/// - The destination side never crosses a mount: a mount point in the destination is a conflict
///   and is not entered.
/// - On an error or a signal, every copy made so far that has not got its name is removed;
///   renames done before it stay (each is complete).
///
/// Hard links are kept inside each missing subtree copied; links between separately copied
/// entries become separate files. If `dest` does not exist, this is [`copy_into`].
pub fn merge_into(
    base: &OwnedFd,
    src: Src,
    rel: &[u8],
    dest: &Dest<'_>,
    opts: &Opts,
    mountinfo: &[MountInfo],
) -> Result<Merged> {
    let shown_src = format!("/{}", cut(rel));
    let (sdir, name, st) = open_source(base, src, rel)?;
    let shown_dest = cut(&dest.abs);
    let (cmd, done) = src.verb();
    let mut parent = open_parent(dest, None)?;
    let pdir = parent
        .path
        .cur()
        .ctx(|| "reopen the destination's directory")?;
    let dname = dest.name.as_os_str();
    let ex = match sx(pdir, dname) {
        Ok(e) => e,
        Err(Errno::NOENT) => {
            drop(parent);
            let copied = copy_into(base, src, rel, dest, opts, mountinfo)?;
            return Ok(Merged {
                copied,
                added: 1,
                ..Default::default()
            });
        }
        Err(e) => return Err(Error::sys(format!("lstat {shown_dest}"), e)),
    };
    let pm = mount_id(pdir, "the destination's directory")?;
    if ex.stx_mnt_id != pm {
        return Err(Error::Refused(format!(
            "{shown_dest} is a mount point; merging never writes across a mount (unmount it first)"
        )));
    }
    let mut out = Merged::default();
    let mut buf = Vec::new();
    if ex.stx_mode as u32 & S_IFMT != S_IFDIR || st.stx_mode as u32 & S_IFMT != S_IFDIR {
        match leaf_difference(sdir.as_fd(), &st, pdir, &ex, os(&name), &mut buf) {
            Ok(None) => out.same += 1,
            Ok(Some(d)) => out.conflicts.push((shown_src, d)),
            Err(e) => {
                return Err(Error::sys(
                    format!("compare {shown_src} with {shown_dest}"),
                    e,
                ))
            }
        }
        return Ok(out);
    }
    let creator = me().ok_or_else(|| {
        Error::Other("cannot read this process's start time or the boot id from /proc".into())
    })?;
    let s0 = open_dir_at(sdir.as_fd(), os(&name), SRC_HOW)
        .map_err(|e| Error::sys(format!("open {shown_src}"), e))?;
    let d0 = open_dir_at(pdir, dname, DST_HOW)
        .map_err(|e| Error::sys(format!("open {shown_dest}"), e))?;
    let mut srcp = DirPath::new(sdir.as_fd(), SRC_HOW);
    let mut dstp = DirPath::new(pdir, DST_HOW);
    let names = read_names(s0.as_fd()).map_err(|e| Error::sys(format!("read {shown_src}"), e))?;
    srcp.push(OsString::from_vec(name.clone()), s0)
        .map_err(|e| Error::sys(format!("stat {shown_src}"), e))?;
    dstp.push(dname.to_os_string(), d0)
        .map_err(|e| Error::sys(format!("stat {shown_dest}"), e))?;
    let mut frames: Vec<Vec<OsString>> = vec![names];
    // Copies waiting for their names: (directory below `pdir`, temporary name, name).
    let mut staged: Vec<(Vec<OsString>, OsString, OsString)> = Vec::new();
    let mut c = Copier::new(opts);
    let abs_dir = match dest.abs.iter().rposition(|&b| b == b'/') {
        Some(i) => dest.abs[..i].to_vec(),
        None => b".".to_vec(),
    };
    // Where an entry is, for messages: the source path below `rel`.
    let shown = |dirs: &[OsString], n: &OsStr| {
        let mut v = vec![b'/'];
        v.extend_from_slice(rel);
        for d in dirs.iter().skip(1) {
            v.push(b'/');
            v.extend_from_slice(d.as_bytes());
        }
        v.push(b'/');
        v.extend_from_slice(n.as_bytes());
        cut(&v)
    };
    let reopen = |e: Errno| {
        match e {
        Errno::STALE => Error::Other(format!(
            "a directory of {shown_src} or {shown_dest} was replaced while merging; nothing more was put in place"
        )),
        e => Error::sys("reopen a directory while merging", e),
    }
    };
    let mut stale_checked: std::collections::HashSet<Vec<OsString>> = Default::default();
    let walked = (|| -> Result<()> {
        while let Some(names) = frames.last_mut() {
            check_interrupt()?;
            match names.pop() {
                Some(n) => {
                    srcp.ready().map_err(reopen)?;
                    dstp.ready().map_err(reopen)?;
                    let sfd = srcp.fd().map_err(reopen)?;
                    let dfd = dstp.fd().map_err(reopen)?;
                    let sst = match sx(sfd, &n) {
                        Ok(s) => s,
                        Err(Errno::NOENT) => continue,
                        Err(e) => {
                            return Err(Error::sys(format!("lstat {}", shown(&srcp.names, &n)), e))
                        }
                    };
                    let dst = match sx(dfd, &n) {
                        Ok(d) => Some(d),
                        Err(Errno::NOENT) => None,
                        Err(e) => {
                            return Err(Error::sys(
                                format!("lstat the store's copy of {}", shown(&srcp.names, &n)),
                                e,
                            ))
                        }
                    };
                    let Some(dst) = dst else {
                        if stale_checked.insert(dstp.names.clone()) {
                            let mut here = abs_dir.clone();
                            for d in &dstp.names {
                                here.push(b'/');
                                here.extend_from_slice(d.as_bytes());
                            }
                            remove_stale(dfd, &here, &mut out.copied);
                        }
                        let tmp = tmp_name(n.as_bytes(), &creator);
                        c.next_tree();
                        let prefix = shown(&srcp.names, &n);
                        // Recorded before the copy, so a failure removes the partial copy too.
                        staged.push((dstp.names.clone(), tmp.clone(), n.clone()));
                        c.copy_tree(sfd, &n, &sst, dfd, &tmp, &prefix)?;
                        out.added += 1;
                        continue;
                    };
                    if dst.stx_mnt_id != pm {
                        out.conflicts.push((
                            shown(&srcp.names, &n),
                            "a mount point in the destination (not entered)".into(),
                        ));
                        continue;
                    }
                    let both_dirs = sst.stx_mode as u32 & S_IFMT == S_IFDIR
                        && dst.stx_mode as u32 & S_IFMT == S_IFDIR;
                    if !both_dirs {
                        match leaf_difference(sfd, &sst, dfd, &dst, &n, &mut buf) {
                            Ok(None) => out.same += 1,
                            Ok(Some(d)) => out.conflicts.push((shown(&srcp.names, &n), d)),
                            Err(Errno::INTR) => check_interrupt()?,
                            Err(Errno::NOENT) => {}
                            Err(e) => {
                                return Err(Error::sys(
                                    format!("compare {}", shown(&srcp.names, &n)),
                                    e,
                                ))
                            }
                        }
                        continue;
                    }
                    let here = shown(&srcp.names, &n);
                    let s = open_dir_at(sfd, &n, SRC_HOW)
                        .map_err(|e| Error::sys(format!("open {here}"), e))?;
                    let d = match open_dir_at(dfd, &n, DST_HOW) {
                        Ok(d) => d,
                        Err(Errno::XDEV) => {
                            out.conflicts.push((
                                here,
                                "a mount point in the destination (not entered)".into(),
                            ));
                            continue;
                        }
                        Err(e) => {
                            return Err(Error::sys(format!("open the store's copy of {here}"), e))
                        }
                    };
                    let kids =
                        read_names(s.as_fd()).map_err(|e| Error::sys(format!("read {here}"), e))?;
                    srcp.push(n.clone(), s)
                        .map_err(|e| Error::sys(format!("stat {here}"), e))?;
                    dstp.push(n, d)
                        .map_err(|e| Error::sys(format!("stat the store's copy of {here}"), e))?;
                    frames.push(kids);
                }
                None => {
                    frames.pop();
                    srcp.pop();
                    dstp.pop();
                }
            }
        }
        Ok(())
    })();
    // Remove every staged copy that has not got its name (after a failure: all of them).
    let discard = |staged: &[(Vec<OsString>, OsString, OsString)]| {
        for (dirs, tmp, _) in staged {
            if let Ok(d) = open_path(pdir, dirs, DST_HOW) {
                if let Err(stop) = remove_tree(d.as_fd(), tmp, false) {
                    log::error!(
                        "{}",
                        removal_error("a partial copy", &cut(tmp.as_bytes()), stop)
                    );
                }
            }
        }
    };
    if let Err(e) = walked.and_then(|()| check_interrupt()) {
        discard(&staged);
        return Err(match interrupt::caught() {
            Some(s) => Error::Other(format!(
                "{cmd} --merge interrupted by {s}: the partial copies were removed; nothing was {done} to {shown_dest}"
            )),
            None => e,
        });
    }
    fault_point("restore:copied");
    if let Err(e) = rustix::fs::syncfs(pdir) {
        discard(&staged);
        return Err(Error::sys(
            format!("syncfs the filesystem of {shown_dest}"),
            e,
        ));
    }
    let mut renamed_dirs: std::collections::HashSet<Vec<OsString>> = Default::default();
    for (i, (dirs, tmp, n)) in staged.iter().enumerate() {
        let d = match open_path(pdir, dirs, DST_HOW) {
            Ok(d) => d,
            Err(e) => {
                discard(&staged[i..]);
                return Err(Error::sys("reopen a directory of the destination", e));
            }
        };
        match rustix::fs::renameat_with(&d, tmp, &d, n, RenameFlags::NOREPLACE) {
            Ok(()) => {
                renamed_dirs.insert(dirs.clone());
            }
            Err(Errno::EXIST) => {
                let _ = remove_tree(d.as_fd(), tmp, false);
                let mut v = dirs.clone();
                v.push(n.clone());
                out.conflicts.push((
                    format!("{}/{}", shown_dest, cut(&join(&v[1..]))),
                    "appeared in the destination while copying (the copy was discarded)".into(),
                ));
            }
            Err(e) => {
                discard(&staged[i..]);
                return Err(Error::sys(
                    format!("rename a copy into place in {shown_dest}"),
                    e,
                ));
            }
        }
    }
    for dirs in renamed_dirs {
        if let Ok(d) = open_path(pdir, &dirs, DST_HOW) {
            let _ = rustix::fs::fsync(&d);
        }
    }
    out.copied.add(c.summary);
    Ok(out)
}

fn tmp_abs(abs_dir: &[u8], tmp: &OsStr) -> Vec<u8> {
    let mut v = abs_dir.to_vec();
    v.push(b'/');
    v.extend_from_slice(tmp.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_and_proof_of_staleness() {
        let c = Creator {
            boot: "0123abcd".into(),
            pid: 4242,
            start: 987654,
        };
        let long = vec![b'x'; 255];
        for dname in [&b"app"[..], b"a\nb\xff", &long] {
            let t = tmp_name(dname, &c);
            assert!(t.len() <= 255, "{}", t.len());
            assert_eq!(parse_tmp_name(t.as_bytes()), Some(c.clone()));
        }
        for bad in [
            &b"app"[..],
            b".app.ephemeral-root-restore.4242",
            b".app.ephemeral-root-restore.0123abcd.4242",
            b".app.ephemeral-root-restore.0123abcd.x.1",
            b".app.ephemeral-root-restore.0123abcz.1.1",
            b".app.ephemeral-root-restore.0123abcd.1.1.1",
            b"app.ephemeral-root-restore.0123abcd.1.1",
        ] {
            assert_eq!(parse_tmp_name(bad), None, "{}", esc(bad));
        }
        let dir = 0o040700;
        assert_eq!(stale_proof(0, dir, &c, "0123abcd", None), Ok(()));
        assert_eq!(stale_proof(0, dir, &c, "0123abcd", Some(1)), Ok(()));
        assert_eq!(stale_proof(0, dir, &c, "ffffffff", Some(987654)), Ok(()));
        assert_eq!(stale_proof(0, 0o100600, &c, "0123abcd", None), Ok(()));
        assert_eq!(stale_proof(0, 0o120777, &c, "0123abcd", None), Ok(()));
        assert!(stale_proof(0, dir, &c, "0123abcd", Some(987654)).is_err());
        assert!(stale_proof(1000, dir, &c, "0123abcd", None).is_err());
        assert!(stale_proof(0, 0o040755, &c, "0123abcd", None).is_err());
        assert!(stale_proof(0, 0o100644, &c, "0123abcd", None).is_err());
        assert!(stale_proof(0, 0o010600, &c, "0123abcd", None).is_err());
    }

    #[test]
    fn process_start_time() {
        let s =
            "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(stat_start(s), Some(987654));
        let mine = proc_start(std::process::id());
        assert!(mine.is_some());
    }
}
