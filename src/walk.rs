//! The one directory walker (`diff`, `status`, `baseline` comparisons, btrfs change listing):
//! iterative, with a bounded number of open file descriptors whatever the depth, never following
//! a symlink or entering another mount, names as bytes, and trouble in one branch reported as a
//! value while the walk goes on.
//!
//! How it works:
//! - A stack of frames, one per directory being listed, each holding the names it has left to
//!   look at (read in one go when the directory is entered). No recursion: a 30,000-level chain
//!   costs heap, not stack.
//! - Only the deepest [`Options::fd_window`] frames keep their directory open (plus the caller's
//!   root, and one descriptor for a moment while a child is checked). When the walk climbs back
//!   to a frame whose descriptor was closed and that still has names left, it reopens it from the
//!   deepest ancestor that is still open, one component at a time, with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS)`,
//!   and checks that each reopened directory is the same one (device and inode) it listed before.
//!   A directory that was replaced meanwhile is reported as [`Problem::Replaced`] and its rest is
//!   not listed.
//! - Entries are looked at with `statx(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT)` relative to their
//!   directory's descriptor. An entry on another mount than the root (by mount id; a bind-mounted
//!   file too) is reported as [`Event::Mount`] and not entered. Directories are entered with the
//!   same `openat2` flags and the same identity check against the `statx` result.
//! - Entries deeper than [`Options::max_depth`] levels below the root are not listed: the
//!   directory that holds them is reported as [`Problem::TooDeep`] ([`MAX_DEPTH`] by default).
//! - A directory that cannot be opened or read (`EACCES`, I/O error) is reported as a problem; an
//!   entry that vanished between reading its directory and looking at it as
//!   [`Problem::Vanished`]. Only a root that cannot be read fails the walk.
//!
//! Without `openat2` (Linux < 5.6), directories are opened with `O_NOFOLLOW | O_DIRECTORY` one
//! component at a time and the identity check catches a mount crossed by a race; without
//! `STATX_MNT_ID` (Linux < 5.8), mount points are recognised by `STATX_ATTR_MOUNT_ROOT` only.
//!
//! The walker holds no global state, so several can walk separate subtrees in parallel, each with
//! its own bounded window of descriptors.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]
// Parts of the API (depth, name, skip_subtree, …) are for callers that are being moved onto it
// (restore).
#![allow(dead_code)]

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Entries deeper than this many levels below the walked root are not listed (their directory is
/// reported as [`Problem::TooDeep`]). Deep enough for any real system (the kernel's `PATH_MAX` is
/// 4096 bytes, so nothing this deep can even be named by a path), bounded so that a hostile chain
/// costs a known amount of memory.
pub const MAX_DEPTH: usize = 4096;

/// Directory descriptors a walker keeps open at most (besides the caller's root and one for a
/// moment while entering a child).
pub const FD_WINDOW: usize = 32;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// The parts of `lstat` the callers look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// 0 for directories.
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// Bytes allocated on disk (`st_blocks` × 512): less than `size` for sparse files.
    pub allocated: u64,
}

impl Meta {
    /// A `Meta` of `kind` and `size` with every other field zero (unit tests of the classifiers).
    #[cfg(test)]
    pub fn of(kind: Kind, size: u64) -> Meta {
        Meta {
            kind,
            size,
            allocated: 0,
            dev: 0,
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    pub fn from_statx(st: &Statx) -> Meta {
        let mode = st.stx_mode as u32;
        let kind = Kind::from_mode(mode);
        Meta {
            kind,
            size: if kind == Kind::Dir { 0 } else { st.stx_size },
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor) as u64,
            ino: st.stx_ino,
            mode,
            uid: st.stx_uid,
            gid: st.stx_gid,
            mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec as i64),
            ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec as i64),
            allocated: st.stx_blocks.saturating_mul(512),
        }
    }
}

/// One entry. `path` is the caller's prefix followed by `/name` for each level below the root
/// (`/var/lib/x` with an empty prefix).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub path: &'a [u8],
    /// Levels below the root (its children are at depth 1).
    pub depth: usize,
    pub meta: Meta,
    /// For directories: no entries at all (false when unknown, e.g. unreadable).
    pub empty_dir: bool,
    /// For symlinks (with [`Options::read_links`]): the link text.
    pub link: Option<&'a [u8]>,
}

impl Entry<'_> {
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => self.path,
        }
    }
    pub fn path_os(&self) -> &OsStr {
        OsStr::from_bytes(self.path)
    }
}

/// Why part of the tree was not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A directory with entries deeper than the limit (the number): they are not listed.
    TooDeep(usize),
    /// A directory that could not be opened or read: permission denied.
    Denied,
    /// Gone between reading its directory and looking at it.
    Vanished,
    /// A directory replaced by another one (or by a symlink or file) while being walked: the rest
    /// of it is not listed.
    Replaced,
    /// Any other error opening, reading or looking at it.
    Io(Errno),
}

impl Problem {
    /// For messages: "gave up on PATH: {describe}".
    pub fn describe(&self) -> String {
        match self {
            Problem::TooDeep(n) => {
                format!("more than {n} levels deep; what is below is not listed")
            }
            Problem::Denied => "permission denied; what is below is not listed".into(),
            Problem::Vanished => "vanished while being listed".into(),
            Problem::Replaced => "replaced while being listed; what is below is not listed".into(),
            Problem::Io(e) => format!(
                "{}; what is below is not listed",
                std::io::Error::from_raw_os_error(e.raw_os_error())
            ),
        }
    }
    pub fn from_errno(e: Errno) -> Problem {
        match e {
            Errno::NOENT => Problem::Vanished,
            Errno::ACCESS | Errno::PERM => Problem::Denied,
            Errno::NOTDIR | Errno::LOOP | Errno::XDEV => Problem::Replaced,
            e => Problem::Io(e),
        }
    }
}

/// What the walk found next.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Entry(Entry<'a>),
    /// A mount point below the root (a mounted directory or a bind-mounted file): not listed and
    /// not entered.
    Mount(&'a [u8]),
    /// Part of the tree that could not be listed; the walk goes on with the rest.
    Problem(&'a [u8], Problem),
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Skip (silently) entries on another device than the root, e.g. nested btrfs subvolumes
    /// (which are not mounts, so the walk enters them otherwise).
    pub same_dev: bool,
    /// Read the text of symlinks.
    pub read_links: bool,
    /// List names of each directory in byte order (otherwise in the order the filesystem returns
    /// them, which is faster).
    pub sorted: bool,
    /// Enter mounts below the root as if they were part of it. Only for trees this program
    /// mounted itself in its private mount namespace (the ZFS backend mounts a root's child
    /// datasets over their directories); never for a tree others can mount into.
    pub cross_mounts: bool,
    pub max_depth: usize,
    /// Directories this many levels below the root are reported without being opened or read
    /// (their `empty_dir` is false): the caller walks them itself, e.g. several at once. Unlimited
    /// by default.
    pub leaf_depth: usize,
    /// At least 2.
    pub fd_window: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            same_dev: false,
            read_links: true,
            sorted: false,
            cross_mounts: false,
            max_depth: MAX_DEPTH,
            leaf_depth: usize::MAX,
            fd_window: FD_WINDOW,
        }
    }
}

/// The names left in one directory, in one buffer.
#[derive(Default)]
struct Names {
    buf: Vec<u8>,
    ends: Vec<usize>,
    next: usize,
}

impl Names {
    fn push(&mut self, n: &[u8]) {
        self.buf.extend_from_slice(n);
        self.ends.push(self.buf.len());
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    fn take_next(&mut self) -> Option<usize> {
        (self.next < self.len()).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn give_up(&mut self) {
        self.next = self.len();
    }
    /// Empty again, keeping the memory (a walker reuses the lists of directories it has left).
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.next = 0;
    }
    fn sort(&mut self) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_unstable_by(|&a, &b| self.get(a).cmp(self.get(b)));
        let mut n = Names::default();
        for i in idx {
            n.push(self.get(i));
        }
        *self = n;
    }
}

const DIRBUF: usize = 32 * 1024;

/// Read every name of directory `fd` (without `.` and `..`) into `out`, through `buf`.
fn read_names_into(fd: BorrowedFd, buf: &mut Vec<u8>, out: &mut Names) -> Result<(), Errno> {
    if buf.capacity() < DIRBUF {
        buf.reserve(DIRBUF);
    }
    let mut it = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
    while let Some(e) = it.next() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n);
        }
    }
    Ok(())
}

/// Every name in directory `fd` (without `.` and `..`), as bytes, in the filesystem's order (from
/// the start, wherever the descriptor's position was).
pub fn read_names(fd: impl AsFd) -> Result<Vec<Vec<u8>>, Errno> {
    rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(0))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut n = Names::default();
    read_names_into(fd.as_fd(), &mut buf, &mut n)?;
    Ok((0..n.len()).map(|i| n.get(i).to_vec()).collect())
}

/// Whether directory `fd` has no entries (reads at most one buffer).
pub fn is_empty_dir(fd: impl AsFd) -> Result<bool, Errno> {
    rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(0))?;
    let mut buf: [MaybeUninit<u8>; 2048] = [MaybeUninit::uninit(); 2048];
    let mut it = rustix::fs::RawDir::new(fd, &mut buf);
    while let Some(e) = it.next() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

fn resolve(xdev: bool) -> ResolveFlags {
    let r = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    if xdev {
        r
    } else {
        r | ResolveFlags::NO_XDEV
    }
}

/// `openat2` of a relative path without symlinks, mounts or `..`, retried on `EAGAIN`; `None` when
/// the kernel has no `openat2`.
fn openat2_beneath(
    dir: BorrowedFd,
    rel: &[u8],
    flags: OFlags,
    xdev: bool,
) -> Option<Result<OwnedFd, Errno>> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    for _ in 0..8 {
        match rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve(xdev)) {
            Err(Errno::AGAIN) => continue,
            Err(Errno::NOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                return None;
            }
            r => return Some(r),
        }
    }
    Some(Err(Errno::AGAIN))
}

/// Open directory `name` (one component) in `dir` without following a symlink or entering a mount.
pub fn open_dir(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    open_dir_x(dir.as_fd(), name, false)
}

/// [`open_dir`]; with `xdev`, a directory that is a mount point is entered.
fn open_dir_x(dir: BorrowedFd, name: &[u8], xdev: bool) -> Result<OwnedFd, Errno> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    match openat2_beneath(dir, name, DIR_FLAGS, xdev) {
        Some(r) => r,
        None => rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()),
    }
}

/// Open directory `rel` (a relative path of any length: `a/b/c`) below `dir` without following
/// symlinks, entering mounts or climbing out with `..`. An empty `rel` (or `.`) reopens `dir`.
pub fn open_dir_beneath(dir: impl AsFd, rel: &[u8]) -> Result<OwnedFd, Errno> {
    open_dir_beneath_x(dir.as_fd(), rel, false)
}

/// [`open_dir_beneath`], but mounts on the way are entered (see [`open_dir_crossing`]).
pub fn open_dir_beneath_crossing(dir: impl AsFd, rel: &[u8]) -> Result<OwnedFd, Errno> {
    open_dir_beneath_x(dir.as_fd(), rel, true)
}

fn open_dir_beneath_x(dir: BorrowedFd, rel: &[u8], xdev: bool) -> Result<OwnedFd, Errno> {
    const CHUNK: usize = 3800;
    let comps: Vec<&[u8]> = rel
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(Errno::INVAL);
    }
    let mut cur: Option<OwnedFd> = None;
    let mut i = 0;
    if comps.is_empty() {
        return rustix::fs::openat(dir, ".", DIR_FLAGS, Mode::empty());
    }
    while i < comps.len() {
        let at = cur.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
        // As many components as fit in one path for openat2.
        let mut chunk: Vec<u8> = Vec::new();
        let mut j = i;
        while j < comps.len() && (chunk.is_empty() || chunk.len() + 1 + comps[j].len() <= CHUNK) {
            if !chunk.is_empty() {
                chunk.push(b'/');
            }
            chunk.extend_from_slice(comps[j]);
            j += 1;
        }
        let fd = match openat2_beneath(at, &chunk, DIR_FLAGS, xdev) {
            Some(r) => r?,
            None => {
                // One component at a time with O_NOFOLLOW.
                let mut fd = open_dir_x(at, comps[i], xdev)?;
                for c in &comps[i + 1..j] {
                    fd = open_dir_x(fd.as_fd(), c, xdev)?;
                }
                fd
            }
        };
        cur = Some(fd);
        i = j;
    }
    cur.ok_or(Errno::INVAL)
}

const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::MNT_ID);

fn statx_at(dir: BorrowedFd, name: &[u8]) -> Result<Statx, Errno> {
    rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        STATX_MASK,
    )
}

fn statx_fd(fd: BorrowedFd) -> Result<Statx, Errno> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        STATX_MASK,
    )
}

fn mnt_id(st: &Statx) -> Option<u64> {
    (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// `lstat` of `name` (one component) in `dir`, not following a symlink or triggering an
/// automount: `Ok(None)` if it does not exist.
pub fn meta_at(dir: impl AsFd, name: &[u8]) -> Result<Option<Meta>, Errno> {
    match statx_at(dir.as_fd(), name) {
        Ok(st) => Ok(Some(Meta::from_statx(&st))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `lstat` of `dir` itself.
pub fn meta_of(dir: impl AsFd) -> Result<Meta, Errno> {
    Ok(Meta::from_statx(&statx_fd(dir.as_fd())?))
}

/// [`open_dir`], but a directory that is a mount point is entered (for trees of our own
/// private mounts, e.g. a ZFS baseline with its child datasets mounted over their directories).
pub fn open_dir_crossing(dir: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    open_dir_x(dir.as_fd(), name, true)
}

/// `lstat` of relative path `rel` below `dir` (parents opened as by [`open_dir_beneath`]; `.` is
/// `dir` itself): `Ok(None)` if it does not exist (any more).
pub fn meta_beneath(dir: impl AsFd, rel: &[u8]) -> Result<Option<Meta>, Errno> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    if name.is_empty() || name == b".." {
        return Err(Errno::INVAL);
    }
    let pfd = match open_dir_beneath(dir, parent) {
        Ok(f) => f,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e),
    };
    meta_at(&pfd, name)
}

/// One entry at relative path `rel` below `dir` (parents opened as by [`open_dir_beneath`]), as
/// the walker would report it: its `lstat` and, for a directory, whether it is empty. `Ok(None)`
/// if it does not exist (any more).
pub fn stat_beneath(dir: impl AsFd, rel: &[u8]) -> Result<Option<(Meta, bool)>, Errno> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    if name.is_empty() || name == b".." {
        return Err(Errno::INVAL);
    }
    let pfd = match open_dir_beneath(dir, parent) {
        Ok(f) => f,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = match statx_at(pfd.as_fd(), name) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = Meta::from_statx(&st);
    let empty = meta.kind == Kind::Dir
        && match open_dir(&pfd, name) {
            Ok(fd) => is_empty_dir(&fd)?,
            Err(_) => false,
        };
    Ok(Some((meta, empty)))
}

/// The text of symlink `rel` below `dir` (parents opened as by [`open_dir_beneath`]).
pub fn readlink_beneath(dir: impl AsFd, rel: &[u8]) -> Result<Vec<u8>, Errno> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let pfd = open_dir_beneath(dir, parent)?;
    Ok(rustix::fs::readlinkat(&pfd, name, Vec::new())?.into_bytes())
}

/// The descriptor of frame `i` (the root's for frame 0), if open.
fn fd_of<'a>(root: BorrowedFd<'a>, frames: &'a [Frame], i: usize) -> Option<BorrowedFd<'a>> {
    if i == 0 {
        Some(root)
    } else {
        frames[i].fd.as_ref().map(|f| f.as_fd())
    }
}

struct Frame {
    names: Names,
    /// `None` for the root (the caller's descriptor) and for frames outside the window.
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    /// Length of the walker's path while this directory is the one being listed.
    path_len: usize,
}

/// What one step found, without borrowing the walker.
enum Step {
    Entry {
        meta: Meta,
        depth: usize,
        empty_dir: bool,
        link: bool,
    },
    Mount,
    /// A problem with the path that is `path_len` bytes long.
    Problem(usize, Problem),
    Again,
}

/// A walk below one directory. Use as `while let Some(ev) = w.next() { … }`.
pub struct Walker<'r> {
    root: BorrowedFd<'r>,
    opts: Options,
    root_dev: u64,
    root_mnt: Option<u64>,
    frames: Vec<Frame>,
    path: Vec<u8>,
    /// Cut the path back to this length before the next step (the last entry was not entered).
    trunc: Option<usize>,
    link: Vec<u8>,
    /// A problem with the current path, reported by the next call.
    pending: Option<Problem>,
    last_pushed: bool,
    open: usize,
    max_open: usize,
    first_open: usize,
    dirbuf: Vec<u8>,
    /// The root had no entries when it was read.
    root_empty: bool,
    /// Name lists of directories already left, kept for the next ones: no allocation per
    /// directory (musl's allocator returns small freed blocks to the kernel, and gets them back
    /// with a page fault each).
    spare: Vec<Names>,
}

/// The memory a finished walk leaves for the next one on the same thread (several walks in a row:
/// no allocating and freeing per walk, which musl's allocator turns into `mmap`/`munmap` and page
/// faults).
#[derive(Default)]
pub struct Scratch {
    dirbuf: Vec<u8>,
    spare: Vec<Names>,
    frames: Vec<Frame>,
    path: Vec<u8>,
}

impl<'r> Walker<'r> {
    /// Walk below `root` (not reported itself). Fails only if `root` cannot be read.
    pub fn new(root: BorrowedFd<'r>, prefix: &[u8], opts: Options) -> Result<Walker<'r>, Errno> {
        Walker::with_scratch(root, prefix, opts, Scratch::default())
    }

    /// [`Walker::new`], reusing what an earlier walk left ([`Walker::into_scratch`]).
    pub fn with_scratch(
        root: BorrowedFd<'r>,
        prefix: &[u8],
        opts: Options,
        scratch: Scratch,
    ) -> Result<Walker<'r>, Errno> {
        let Scratch {
            dirbuf,
            mut spare,
            mut frames,
            mut path,
        } = scratch;
        frames.clear();
        path.clear();
        path.extend_from_slice(prefix);
        let st = statx_fd(root)?;
        let meta = Meta::from_statx(&st);
        let mut names = spare.pop().unwrap_or_default();
        let mut w = Walker {
            root,
            opts: Options {
                fd_window: opts.fd_window.max(2),
                ..opts
            },
            root_dev: meta.dev,
            root_mnt: mnt_id(&st),
            frames,
            path,
            trunc: None,
            link: Vec::new(),
            pending: None,
            last_pushed: false,
            open: 0,
            max_open: 0,
            first_open: 1,
            dirbuf,
            root_empty: false,
            spare,
        };
        // From the start, wherever the caller's descriptor was.
        rustix::fs::seek(root, rustix::fs::SeekFrom::Start(0))?;
        read_names_into(root, &mut w.dirbuf, &mut names)?;
        w.root_empty = names.is_empty();
        if w.opts.sorted {
            names.sort();
        }
        w.frames.push(Frame {
            names,
            fd: None,
            dev: meta.dev,
            ino: meta.ino,
            path_len: prefix.len(),
        });
        Ok(w)
    }

    /// What this walk leaves for the next one ([`Walker::with_scratch`]); its descriptors are
    /// closed.
    pub fn into_scratch(mut self) -> Scratch {
        while !self.frames.is_empty() {
            self.pop();
        }
        Scratch {
            dirbuf: self.dirbuf,
            spare: self.spare,
            frames: self.frames,
            path: self.path,
        }
    }

    /// Whether the root had no entries when the walk began (what `empty_dir` says of others).
    pub fn root_is_empty(&self) -> bool {
        self.root_empty
    }

    /// The most directory descriptors this walker has held open at once (tests).
    pub fn max_open_fds(&self) -> usize {
        self.max_open
    }

    /// Do not list what is below the directory just returned.
    pub fn skip_subtree(&mut self) {
        if self.last_pushed {
            self.pop();
            self.last_pushed = false;
        }
    }

    /// The next entry, mount point or problem; `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Event<'_>> {
        self.last_pushed = false;
        if let Some(p) = self.pending.take() {
            return Some(Event::Problem(&self.path, p));
        }
        if let Some(t) = self.trunc.take() {
            self.path.truncate(t);
        }
        loop {
            match self.step()? {
                Step::Again => continue,
                Step::Entry {
                    meta,
                    depth,
                    empty_dir,
                    link,
                } => {
                    return Some(Event::Entry(Entry {
                        path: &self.path,
                        depth,
                        meta,
                        empty_dir,
                        link: link.then_some(self.link.as_slice()),
                    }))
                }
                Step::Mount => return Some(Event::Mount(&self.path)),
                Step::Problem(len, p) => return Some(Event::Problem(&self.path[..len], p)),
            }
        }
    }

    /// Keep a name list for the next directory.
    fn recycle(&mut self, mut names: Names) {
        names.clear();
        self.spare.push(names);
    }

    fn pop(&mut self) {
        if let Some(f) = self.frames.pop() {
            if f.fd.is_some() {
                self.open -= 1;
            }
            self.recycle(f.names);
        }
        if let Some(parent) = self.frames.last() {
            self.path.truncate(parent.path_len);
        }
        self.first_open = self.first_open.min(self.frames.len().max(1));
    }

    fn note_open(&mut self) {
        self.open += 1;
        self.max_open = self.max_open.max(self.open);
    }

    /// Close the shallowest open descriptors until at most `limit` are open.
    fn enforce_window(&mut self, limit: usize) {
        let mut i = self.first_open.max(1);
        while self.open > limit && i < self.frames.len() {
            if self.frames[i].fd.take().is_some() {
                self.open -= 1;
            }
            i += 1;
        }
        self.first_open = i;
    }

    /// Make sure frame `top` has an open descriptor, reopening it (and the frames between it and
    /// the deepest open ancestor, keeping those inside the window) if needed. On failure, gives up
    /// on the frame that failed and everything below it, and returns the problem.
    fn ensure_fd(&mut self, top: usize) -> Result<(), (usize, Problem)> {
        if top == 0 || self.frames[top].fd.is_some() {
            return Ok(());
        }
        let mut j = top - 1;
        while j > 0 && self.frames[j].fd.is_none() {
            j -= 1;
        }
        let mut tmp: Option<OwnedFd> = None;
        for k in j + 1..=top {
            let start = self.frames[k - 1].path_len + 1;
            let end = self.frames[k].path_len;
            let opened = {
                let parent = match &tmp {
                    Some(f) => Some(f.as_fd()),
                    None => fd_of(self.root, &self.frames, k - 1),
                };
                match parent {
                    Some(p) => open_dir_x(p, &self.path[start..end], self.opts.cross_mounts),
                    None => Err(Errno::BADF),
                }
            };
            let checked = opened.and_then(|fd| {
                let st = statx_fd(fd.as_fd())?;
                let m = Meta::from_statx(&st);
                if (m.dev, m.ino) == (self.frames[k].dev, self.frames[k].ino) {
                    Ok(fd)
                } else {
                    Err(Errno::XDEV)
                }
            });
            match checked {
                Ok(fd) => {
                    if top - k < self.opts.fd_window {
                        self.first_open = self.first_open.min(k);
                        self.enforce_window(self.opts.fd_window - 1);
                        self.frames[k].fd = Some(fd);
                        self.note_open();
                        tmp = None;
                    } else {
                        tmp = Some(fd);
                    }
                }
                Err(e) => {
                    for f in &mut self.frames[k..=top] {
                        f.names.give_up();
                        if f.fd.take().is_some() {
                            self.open -= 1;
                        }
                    }
                    let p = match Problem::from_errno(e) {
                        // It was listed a moment ago: gone or swapped, the rest is not listed.
                        Problem::Vanished => Problem::Replaced,
                        p => p,
                    };
                    return Err((self.frames[k].path_len, p));
                }
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Option<Step> {
        let top = self.frames.len().checked_sub(1)?;
        let Some(ni) = self.frames[top].names.take_next() else {
            self.pop();
            return (!self.frames.is_empty()).then_some(Step::Again);
        };
        if let Err((len, p)) = self.ensure_fd(top) {
            return Some(Step::Problem(len, p));
        }
        let depth = top + 1;
        let parent_len = self.path.len();
        {
            let name = self.frames[top].names.get(ni);
            self.path.push(b'/');
            self.path.extend_from_slice(name);
        }
        // From here on the path is the child's; cut it back unless the child becomes a frame.
        self.trunc = Some(parent_len);
        let name_at = parent_len + 1;
        let Some(dir) = fd_of(self.root, &self.frames, top) else {
            return Some(Step::Problem(self.path.len(), Problem::Io(Errno::BADF)));
        };
        let st = match statx_at(dir, &self.path[name_at..]) {
            Ok(st) => st,
            Err(e) => return Some(Step::Problem(self.path.len(), Problem::from_errno(e))),
        };
        if !self.opts.cross_mounts
            && (mnt_id(&st).zip(self.root_mnt).is_some_and(|(a, b)| a != b)
                || (st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
                    && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)))
        {
            return Some(Step::Mount);
        }
        let meta = Meta::from_statx(&st);
        if self.opts.same_dev && meta.dev != self.root_dev {
            return Some(Step::Again);
        }
        let entry = |empty_dir: bool, link: bool| Step::Entry {
            meta,
            depth,
            empty_dir,
            link,
        };
        match meta.kind {
            Kind::Symlink if self.opts.read_links => {
                let buf = std::mem::take(&mut self.link);
                match rustix::fs::readlinkat(dir, &self.path[name_at..], buf) {
                    Ok(t) => {
                        self.link = t.into_bytes();
                        Some(entry(false, true))
                    }
                    Err(Errno::NOENT) => Some(Step::Problem(self.path.len(), Problem::Vanished)),
                    Err(_) => Some(entry(false, false)),
                }
            }
            Kind::Dir if depth >= self.opts.leaf_depth => Some(entry(false, false)),
            Kind::Dir => {
                let fd = match open_dir_x(dir, &self.path[name_at..], self.opts.cross_mounts) {
                    Ok(fd) => fd,
                    Err(Errno::XDEV) => return Some(Step::Mount),
                    Err(e) => {
                        let p = Problem::from_errno(e);
                        if matches!(p, Problem::Denied | Problem::Io(_)) {
                            self.pending = Some(p);
                            return Some(entry(false, false));
                        }
                        return Some(Step::Problem(self.path.len(), p));
                    }
                };
                match statx_fd(fd.as_fd()) {
                    Ok(s)
                        if (
                            rustix::fs::makedev(s.stx_dev_major, s.stx_dev_minor) as u64,
                            s.stx_ino,
                        ) == (meta.dev, meta.ino) => {}
                    _ => return Some(Step::Problem(self.path.len(), Problem::Replaced)),
                }
                let mut names = self.spare.pop().unwrap_or_default();
                if let Err(e) = read_names_into(fd.as_fd(), &mut self.dirbuf, &mut names) {
                    self.recycle(names);
                    self.pending = Some(Problem::from_errno(e));
                    return Some(entry(false, false));
                }
                if names.is_empty() {
                    self.recycle(names);
                    return Some(entry(true, false));
                }
                if depth >= self.opts.max_depth {
                    self.recycle(names);
                    self.pending = Some(Problem::TooDeep(self.opts.max_depth));
                    return Some(entry(false, false));
                }
                if self.opts.sorted {
                    names.sort();
                }
                self.enforce_window(self.opts.fd_window - 1);
                self.frames.push(Frame {
                    names,
                    fd: Some(fd),
                    dev: meta.dev,
                    ino: meta.ino,
                    path_len: self.path.len(),
                });
                self.note_open();
                self.trunc = None;
                self.last_pushed = true;
                Some(entry(false, false))
            }
            _ => Some(entry(false, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("er-walk-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn fd(&self) -> OwnedFd {
            rustix::fs::open(&self.0, DIR_FLAGS, Mode::empty()).unwrap()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            // Deep chains cannot be removed by path: remove them through descriptors.
            remove_tree(&self.0);
        }
    }

    /// Remove a tree of any depth (iteratively, through descriptors).
    fn remove_tree(p: &Path) {
        let Ok(root) = rustix::fs::open(p, DIR_FLAGS, Mode::empty()) else {
            return;
        };
        let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![];
        let mut cur = root;
        loop {
            let names = read_names(&cur).unwrap();
            let mut descended = false;
            for n in names {
                match open_dir(&cur, &n) {
                    Ok(fd) => {
                        stack.push((cur, n));
                        cur = fd;
                        descended = true;
                        break;
                    }
                    Err(_) => rustix::fs::unlinkat(&cur, n.as_slice(), AtFlags::empty()).unwrap(),
                }
            }
            if descended {
                continue;
            }
            match stack.pop() {
                Some((parent, n)) => {
                    drop(cur);
                    rustix::fs::unlinkat(&parent, n.as_slice(), AtFlags::REMOVEDIR).unwrap();
                    cur = parent;
                }
                None => break,
            }
        }
        let _ = std::fs::remove_dir(p);
    }

    /// A chain `d/d/d/…` `n` levels deep with a file at the bottom, made through descriptors.
    fn chain(root: &OwnedFd, n: usize, name: &str) {
        let mut cur = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..n {
            rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)).unwrap();
            cur = open_dir(&cur, name.as_bytes()).unwrap();
        }
        let f = rustix::fs::openat(
            &cur,
            "leaf",
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        drop(f);
    }

    /// Everything a walk reports: path → description.
    fn collect(root: &OwnedFd, opts: Options) -> (BTreeMap<Vec<u8>, String>, usize) {
        let (out, max, _) = collect_with(root, opts, Scratch::default());
        (out, max)
    }

    fn collect_with(
        root: &OwnedFd,
        opts: Options,
        scratch: Scratch,
    ) -> (BTreeMap<Vec<u8>, String>, usize, Scratch) {
        let mut w = Walker::with_scratch(root.as_fd(), b"", opts, scratch).unwrap();
        let mut out = BTreeMap::new();
        while let Some(ev) = w.next() {
            let (p, d) = match ev {
                Event::Entry(e) => (
                    e.path.to_vec(),
                    format!(
                        "{:?}{}{}",
                        e.meta.kind,
                        if e.empty_dir { " empty" } else { "" },
                        e.link
                            .map(|l| format!(" -> {}", crate::escape::escape(l)))
                            .unwrap_or_default()
                    ),
                ),
                Event::Mount(p) => (p.to_vec(), "mount".into()),
                Event::Problem(p, pr) => ([p, b" !"].concat(), format!("problem {pr:?}")),
            };
            assert!(out.insert(p.clone(), d).is_none(), "twice: {p:?}");
        }
        let max = w.max_open_fds();
        (out, max, w.into_scratch())
    }

    #[test]
    fn a_walk_reusing_another_walks_scratch_sees_the_same() {
        // a deep tree (frames, name lists, a long path left behind), then a wide one, then the deep
        // one again, each with what the walk before it left
        let deep = TempDir::new("scratch-deep");
        chain(&deep.fd(), 40, "d");
        let wide = TempDir::new("scratch-wide");
        for i in 0..300 {
            std::fs::create_dir_all(wide.0.join(format!("w{i}/x"))).unwrap();
        }
        std::fs::write(wide.0.join("w7/x/f"), "x").unwrap();
        let opts = || Options {
            fd_window: 4,
            ..Default::default()
        };
        let (want_deep, _) = collect(&deep.fd(), opts());
        let (want_wide, _) = collect(&wide.fd(), opts());
        let (got, _, s) = collect_with(&deep.fd(), opts(), Scratch::default());
        assert_eq!(got, want_deep);
        let (got, _, s) = collect_with(&wide.fd(), opts(), s);
        assert_eq!(got, want_wide);
        assert_eq!(got.len(), 601);
        let (got, max_open, _) = collect_with(&deep.fd(), opts(), s);
        assert_eq!(got, want_deep);
        assert!(max_open <= 4, "{max_open}");
    }

    #[test]
    fn small_tree_with_odd_names() {
        let t = TempDir::new("small");
        let r = &t.0;
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::write(r.join("a/b/f"), "x").unwrap();
        std::fs::write(r.join(OsStr::from_bytes(b"bad\xff\nname")), "y").unwrap();
        symlink("/etc/passwd", r.join("a/link")).unwrap();
        symlink("a", r.join("dirlink")).unwrap();
        let (got, _) = collect(&t.fd(), Options::default());
        let want: BTreeMap<Vec<u8>, String> = [
            (&b"/a"[..], "Dir"),
            (b"/a/b", "Dir"),
            (b"/a/b/f", "File"),
            (b"/a/link", "Symlink -> /etc/passwd"),
            (b"/dirlink", "Symlink -> a"),
            (b"/empty", "Dir empty"),
            (b"/bad\xff\nname", "File"),
        ]
        .into_iter()
        .map(|(p, d)| (p.to_vec(), d.to_string()))
        .collect();
        assert_eq!(got, want);
        // Sorted option gives byte order; skip_subtree leaves out what is below.
        let fd = t.fd();
        let mut w = Walker::new(
            fd.as_fd(),
            b"/pre",
            Options {
                sorted: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut seen = vec![];
        while let Some(ev) = w.next() {
            if let Event::Entry(e) = ev {
                seen.push(e.path.to_vec());
                if e.path == b"/pre/a" {
                    w.skip_subtree();
                }
            }
        }
        let want: Vec<&[u8]> = vec![
            b"/pre/a",
            b"/pre/bad\xff\nname",
            b"/pre/dirlink",
            b"/pre/empty",
        ];
        assert_eq!(seen, want);
    }

    #[test]
    fn leaf_depth_reports_directories_without_reading_them() {
        let t = TempDir::new("leaf");
        std::fs::create_dir_all(t.0.join("a/b/c")).unwrap();
        std::fs::write(t.0.join("a/b/c/f"), "x").unwrap();
        std::fs::write(t.0.join("a/f"), "x").unwrap();
        std::fs::create_dir(t.0.join("a/empty")).unwrap();
        let fd = t.fd();
        let opts = Options {
            sorted: true,
            leaf_depth: 2,
            ..Default::default()
        };
        let mut w = Walker::new(fd.as_fd(), b"", opts).unwrap();
        assert!(!w.root_is_empty());
        let mut seen = vec![];
        while let Some(ev) = w.next() {
            if let Event::Entry(e) = ev {
                seen.push((String::from_utf8_lossy(e.path).into_owned(), e.empty_dir));
            }
        }
        // /a/b and /a/empty are at depth 2: listed, not entered, emptiness unknown (false).
        let want = [
            ("/a", false),
            ("/a/b", false),
            ("/a/empty", false),
            ("/a/f", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(p, e)| (p.to_string(), *e)).collect();
        assert_eq!(seen, want);
        // Their own walk reads them; an empty one says so.
        let empty = std::fs::File::open(t.0.join("a/empty")).unwrap();
        let w = Walker::new(empty.as_fd(), b"/a/empty", Options::default()).unwrap();
        assert!(w.root_is_empty());
    }

    #[test]
    fn deep_chain_uses_a_bounded_window_of_descriptors() {
        let t = TempDir::new("deep");
        let root = t.fd();
        chain(&root, 3000, "d");
        // A side branch halfway down, found after climbing back through closed frames.
        let opts = Options {
            fd_window: 8,
            ..Default::default()
        };
        let (got, max_open) = collect(&root, opts);
        assert_eq!(got.len(), 3001, "3000 directories and the leaf");
        assert!(max_open <= 8, "{max_open} descriptors open at once");
        let leaf: Vec<u8> = [b"/d".repeat(3000), b"/leaf".to_vec()].concat();
        assert_eq!(got.get(&leaf).map(String::as_str), Some("File"));
    }

    #[test]
    fn climbing_back_reopens_closed_frames() {
        // A chain where every level also has a file after the subdirectory (sorted: "d" < "z"),
        // so each frame is needed again after its subtree was walked with a window of 3.
        let t = TempDir::new("reopen");
        let root = t.fd();
        let mut cur = rustix::fs::openat(&root, ".", DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..200 {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            drop(
                rustix::fs::openat(&cur, "z", OFlags::CREATE | OFlags::WRONLY, Mode::empty())
                    .unwrap(),
            );
            cur = open_dir(&cur, b"d").unwrap();
        }
        let opts = Options {
            fd_window: 3,
            sorted: true,
            ..Default::default()
        };
        let (got, max_open) = collect(&root, opts);
        assert_eq!(got.len(), 400);
        assert!(max_open <= 3, "{max_open}");
        for i in 0..200 {
            let p = [b"/d".repeat(i), b"/z".to_vec()].concat();
            assert_eq!(got.get(&p).map(String::as_str), Some("File"), "level {i}");
        }
    }

    #[test]
    fn too_deep_is_a_problem_not_a_failure() {
        let t = TempDir::new("toodeep");
        let root = t.fd();
        chain(&root, 50, "d");
        std::fs::write(t.0.join("beside"), "x").unwrap();
        let opts = Options {
            max_depth: 20,
            ..Default::default()
        };
        let (got, _) = collect(&root, opts);
        let at = [b"/d".repeat(20), b" !".to_vec()].concat();
        assert_eq!(
            got.get(&at).map(String::as_str),
            Some("problem TooDeep(20)"),
            "{:?}",
            got.keys().map(|k| k.len()).max()
        );
        assert!(got.contains_key(&b"/beside"[..]));
        assert!(
            got.keys().all(|k| k.len() <= 40 + 2),
            "nothing below the limit"
        );
        assert_eq!(
            got.len(),
            20 + 1 + 1,
            "20 levels, the problem, /beside: {got:?}"
        );
    }

    #[test]
    fn replaced_directory_while_walking_is_reported() {
        // Walk with a window of 2; after descending, swap an ancestor for another directory: the
        // reopen notices that the directory is not the one listed before.
        let t = TempDir::new("swap");
        let root = t.fd();
        chain(&root, 10, "d");
        std::fs::write(t.0.join("d/d/zz"), "x").unwrap();
        let mut w = Walker::new(
            root.as_fd(),
            b"",
            Options {
                fd_window: 2,
                sorted: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut events = vec![];
        let mut swapped = false;
        while let Some(ev) = w.next() {
            if let Event::Entry(e) = &ev {
                if e.depth == 8 && !swapped {
                    std::fs::rename(t.0.join("d/d"), t.0.join("moved")).unwrap();
                    std::fs::create_dir(t.0.join("d/d")).unwrap();
                    swapped = true;
                }
            }
            events.push(match ev {
                Event::Problem(p, pr) => format!("{}: {pr:?}", crate::escape::escape(p)),
                Event::Entry(e) => crate::escape::escape(e.path),
                Event::Mount(p) => format!("mount {}", crate::escape::escape(p)),
            });
        }
        assert!(
            events.iter().any(|e| e.ends_with(": Replaced")),
            "{events:#?}"
        );
        assert!(!events.iter().any(|e| e == "/d/d/zz"), "{events:#?}");
    }

    /// In a private mount namespace (a thread of its own): a tmpfs mounted below the root is
    /// reported as a mount and not entered; with `cross_mounts` it is walked. Needs root.
    #[test]
    fn mounts_are_not_entered_unless_asked() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("*** SKIPPED *** mounts_are_not_entered_unless_asked needs root");
            assert!(std::env::var("CI").is_err(), "CI runs tests as root");
            return;
        }
        let t = TempDir::new("mounts");
        let dir = t.0.clone();
        std::fs::create_dir_all(dir.join("m")).unwrap();
        std::fs::write(dir.join("plain"), "x").unwrap();
        std::fs::write(dir.join("file-target"), "x").unwrap();
        let got = std::thread::spawn(move || {
            crate::mounts::enter_private_namespace().unwrap();
            rustix::mount::mount(
                "tmpfs",
                dir.join("m"),
                "tmpfs",
                rustix::mount::MountFlags::empty(),
                None,
            )
            .unwrap();
            std::fs::write(dir.join("m/inside"), "y").unwrap();
            std::fs::write(dir.join("bound"), "").unwrap();
            rustix::mount::mount_bind(dir.join("file-target"), dir.join("bound")).unwrap();
            let fd = rustix::fs::open(&dir, DIR_FLAGS, Mode::empty()).unwrap();
            let plain = collect(
                &fd,
                Options {
                    sorted: true,
                    ..Default::default()
                },
            )
            .0;
            let crossing = collect(
                &fd,
                Options {
                    cross_mounts: true,
                    ..Default::default()
                },
            )
            .0;
            (plain, crossing)
        })
        .join()
        .unwrap();
        let (plain, crossing) = got;
        assert_eq!(
            plain.get(&b"/m"[..]).map(String::as_str),
            Some("mount"),
            "{plain:?}"
        );
        assert_eq!(
            plain.get(&b"/bound"[..]).map(String::as_str),
            Some("mount"),
            "{plain:?}"
        );
        assert!(!plain.contains_key(&b"/m/inside"[..]), "{plain:?}");
        assert_eq!(
            crossing.get(&b"/m/inside"[..]).map(String::as_str),
            Some("File"),
            "{crossing:?}"
        );
    }

    #[test]
    fn beneath_helpers() {
        let t = TempDir::new("beneath");
        let root = t.fd();
        std::fs::create_dir_all(t.0.join("a/b")).unwrap();
        std::fs::write(t.0.join("a/b/f"), "xyz").unwrap();
        symlink("b", t.0.join("a/lnk")).unwrap();
        symlink("/", t.0.join("a/abs")).unwrap();
        assert!(open_dir_beneath(&root, b"a/b").is_ok());
        assert!(open_dir_beneath(&root, b"/a//b/").is_ok());
        assert!(open_dir_beneath(&root, b"").is_ok());
        assert!(matches!(
            open_dir_beneath(&root, b"a/lnk").err(),
            Some(Errno::LOOP | Errno::NOTDIR)
        ));
        assert!(open_dir_beneath(&root, b"a/abs/etc").is_err());
        assert_eq!(open_dir_beneath(&root, b"a/../a").err(), Some(Errno::INVAL));
        let (m, _) = stat_beneath(&root, b"a/b/f").unwrap().unwrap();
        assert_eq!((m.kind, m.size), (Kind::File, 3));
        assert!(
            stat_beneath(&root, b"a/lnk/f").unwrap().is_none()
                || stat_beneath(&root, b"a/lnk/f").is_err()
        );
        assert_eq!(stat_beneath(&root, b"a/nope").unwrap(), None);
        let (m, empty) = stat_beneath(&root, b"a/b").unwrap().unwrap();
        assert_eq!((m.kind, empty), (Kind::Dir, false));
        assert_eq!(readlink_beneath(&root, b"a/lnk").unwrap(), b"b");
        // A deep path longer than PATH_MAX, opened in chunks.
        chain(&root, 1500, "dd");
        let deep = b"dd/".repeat(1500);
        assert!(deep.len() > 4096);
        assert!(stat_beneath(&root, &[deep.as_slice(), b"leaf"].concat())
            .unwrap()
            .is_some());
        assert_eq!(
            open_dir(&root, b"a/b").err(),
            Some(Errno::INVAL),
            "one component only"
        );
    }

    /// What std::fs sees, recursively (the reference).
    fn reference(dir: &Path, prefix: &[u8], out: &mut BTreeMap<Vec<u8>, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = [prefix, b"/", e.file_name().as_bytes()].concat();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let d = if m.is_dir() {
                let empty = std::fs::read_dir(e.path()).unwrap().next().is_none();
                reference(&e.path(), &p, out);
                format!("Dir{}", if empty { " empty" } else { "" })
            } else if m.file_type().is_symlink() {
                let l = std::fs::read_link(e.path()).unwrap();
                format!(
                    "Symlink -> {}",
                    crate::escape::escape(l.as_os_str().as_bytes())
                )
            } else {
                "File".into()
            };
            out.insert(p, d);
        }
    }

    #[test]
    fn property_random_trees_match_std_fs() {
        let t = TempDir::new("prop");
        let mut case = 0;
        crate::testrand::run("walk random trees", 20, |rng| {
            case += 1;
            let top = t.0.join(format!("c{case}"));
            std::fs::create_dir(&top).unwrap();
            // Random tree: up to 60 entries, names of random bytes (no NUL or '/').
            let mut dirs = vec![top.clone()];
            for _ in 0..rng.below(60) {
                let parent = rng.pick(&dirs).clone();
                let mut name: Vec<u8> = rng
                    .bytes(12)
                    .into_iter()
                    .filter(|b| *b != 0 && *b != b'/')
                    .collect();
                if name.is_empty() || name == b"." || name == b".." {
                    name = b"n".to_vec();
                }
                let p = parent.join(OsStr::from_bytes(&name));
                if p.symlink_metadata().is_ok() {
                    continue;
                }
                match rng.below(3) {
                    0 => {
                        std::fs::create_dir(&p).unwrap();
                        dirs.push(p);
                    }
                    1 => std::fs::write(&p, rng.bytes(10)).unwrap(),
                    _ => {
                        let mut target = b"t".to_vec();
                        target.extend(rng.bytes(20).into_iter().filter(|b| *b != 0));
                        symlink(OsStr::from_bytes(&target), &p).unwrap()
                    }
                }
            }
            let mut want = BTreeMap::new();
            reference(&top, b"", &mut want);
            let fd = rustix::fs::open(&top, DIR_FLAGS, Mode::empty()).unwrap();
            let opts = Options {
                fd_window: 2 + rng.below(3),
                sorted: rng.chance(2),
                ..Default::default()
            };
            let (got, max_open) = collect(&fd, opts);
            assert_eq!(got, want);
            assert!(max_open <= opts.fd_window);
        });
    }
}
