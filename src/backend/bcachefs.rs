//! bcachefs backend (Linux 6.12): the whole filesystem is mounted privately at
//! `/run/ephemeral-root/top` (the source is the colon-separated member list), and the root, the
//! snapshots location and the blank template are subvolumes at paths relative to the filesystem
//! root. Subvolumes are made and destroyed with `BCH_IOCTL_SUBVOLUME_CREATE/DESTROY`
//! ([`super::bcachefs_ioctl`]); they are found with readdir + `statx(STATX_SUBVOL)`: a directory
//! whose `stx_subvol` differs from its parent's is the root of a subvolume.
//!
//! # How an old root and its nested subvolumes are kept (the layout)
//!
//! Two facts of 6.12 decide it (both checked in the VM tests, see vm-tests/engine/):
//! a snapshot does not contain the subvolumes nested in its source (their entries are simply
//! absent), and a subvolume can be made read-only only when it is created (`SNAPSHOT_RO`); there
//! is no ioctl to flip it later. So a read-only old root can never have a subvolume placed inside
//! it (that fails with EROFS), and a writable staging copy cannot be sealed afterwards. Hence:
//!
//! ```text
//! <snapshots>/
//!   2026-11-22T00-48-03Z                 the old root: a read-only snapshot of the root
//!   2026-11-22T00-48-03Z.nested/         present only if the root had nested subvolumes: a plain
//!     var%2Flib%2Fmachines               directory of read-only snapshots, one per nested
//!     var%2Flib%2Fmachines%2Finner       subvolume, named by its path relative to the root with
//!                                        '%' -> "%25" and '/' -> "%2F" (flat, so that a nested
//!                                        subvolume inside another one needs no writable parent)
//! ```
//!
//! Keeping root `N`: read-only snapshot of the root as `.incomplete.N`; if there are nested
//! subvolumes, a directory `.incomplete.N.nested` receives a read-only snapshot of each; then
//! `.incomplete.N.nested` is renamed to `N.nested` and finally `.incomplete.N` to `N` (the commit:
//! `N` exists only when everything it needs exists). A `X.nested` whose `X` is not a committed old
//! root is an orphan from an interrupted run and is discarded like any `.incomplete.*`. Pruning `N`
//! renames `N` to `.deleting.N` first (uncommitted), then `N.nested` to `.deleting.N.nested`, then
//! deletes both. `list` reports the nested paths decoded from the `N.nested` entries;
//! `rd.ephemeral_root.restore=N` rebuilds the tree: a writable snapshot of `N`, then a writable
//! snapshot of each nested one placed at its path, parents first.
//!
//! # Freshness and "already kept"
//!
//! bcachefs 6.12 exposes no generation numbers, and a snapshot shares inodes (numbers, times) with
//! its source. A root is *fresh* when its directory is empty, or when it is the root we built last
//! from a template or an old root (recorded in `<snapshots>/.fresh-root` as subvolume id, birth time
//! and source) and its tree still matches that source entry by entry (names, inode numbers, modes,
//! owners; for non-directories also size, link count, mtime and ctime), nested subvolumes included.
//! A root is *already kept as N* (a run interrupted between keeping and moving it aside) when `N`
//! is the newest old root named after the root's start time and the same comparison holds. The
//! comparison stops at the first difference; it only runs in those two situations. When in doubt
//! the root is kept again, which is safe.
//!
//! The time a root began: from `.fresh-root` for roots we built (a snapshot's root directory has
//! its source's birth time), else the root directory's birth time (statx btime, which bcachefs
//! fills), else its ctime.
//!
//! # Deleting
//!
//! Only direct entries of the snapshots location whose names say they are ours, and only when they
//! are subvolume roots (or, for `*.nested`, plain directories holding only subvolume roots). Nested
//! subvolumes are destroyed deepest first; 6.12 may keep refusing a parent with ENOTEMPTY for a short
//! while after its children were destroyed, so ENOTEMPTY is retried with back-off for up to 30 s.

use super::bcachefs_ioctl as io;
use super::*;
use crate::config::Settings;
use crate::error::{Context, Error, Result};
use crate::fault;
use crate::mounts::{self, Mounted};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Suffix of the directory holding an old root's nested subvolumes.
pub const NESTED_SUFFIX: &str = ".nested";
/// `<snapshots>/.fresh-root`: what the last root we built was made from.
const FRESH_RECORD: &str = ".fresh-root";
/// How long to retry ENOTEMPTY from DESTROY (6.12 clears a child's back-reference late).
const ENOTEMPTY_RETRY: Duration = Duration::from_secs(30);

/// Open the bcachefs filesystem made of `members` (every member device).
pub fn open_backend(members: &[String], s: &Settings) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Bcachefs::open(
        members,
        &s.root,
        &s.snapshots,
        s.blank.as_deref(),
    )?))
}

pub struct Bcachefs {
    source: String,
    root: String,
    snapshots: String,
    blank: Option<String>,
    mount: Option<Mounted>,
    top: OwnedFd,
    dev: (u32, u32),
}

fn open_dir_beneath(base: impl AsFd, rel: &str) -> Result<OwnedFd, Errno> {
    let rel = rel.trim_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        base,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
}

fn split_parent(path: &str) -> (&str, &str) {
    let path = path.trim_matches('/');
    match path.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", path),
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

/// Directory entries except `.` and `..`, sorted.
fn entries(fd: &OwnedFd) -> Result<Vec<(String, rustix::fs::FileType)>, Errno> {
    let mut v = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        v.push((String::from_utf8_lossy(n).into_owned(), e.file_type()));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Encode a nested subvolume's relative path as one directory entry name.
pub fn encode_nested(path: &str) -> String {
    path.replace('%', "%25").replace('/', "%2F")
}

pub fn decode_nested(name: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = name;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("25") => out.push('%'),
            Some("2F") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    let ok = !out.is_empty()
        && out
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then_some(out)
}

/// A tree to compare or copy: a subvolume and the subvolumes nested in it (relative paths,
/// parents first).
struct Tree {
    main: OwnedFd,
    nested: Vec<(String, OwnedFd)>,
}

/// Old root `N`'s nested subvolumes live in `N.nested`.
fn store_name(old_root: &str) -> String {
    format!("{old_root}{NESTED_SUFFIX}")
}

/// Is `O_TMPFILE` refused with EROFS? (Read-only subvolume; no trace left either way.)
fn is_readonly(fd: &OwnedFd) -> bool {
    match rustix::fs::openat(
        fd,
        ".",
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(_) => false,
        Err(Errno::ROFS) => true,
        Err(e) => {
            log::debug!("O_TMPFILE probe for read-only: {e}");
            false
        }
    }
}

/// Destroy subvolume `name` in `dir`, retrying ENOTEMPTY with back-off (6.12 keeps a destroyed
/// child's back-reference until its asynchronous deletion ran).
fn destroy_retry(dir: &OwnedFd, name: &str, what: &str) -> Result<()> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(5);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match io::subvol_destroy(dir.as_fd(), name) {
            Ok(()) => {
                if tries > 1 {
                    log::info!(
                        "bcachefs refused to delete {what} with ENOTEMPTY for {} ms ({} attempts) while it finished deleting its child subvolumes",
                        start.elapsed().as_millis(),
                        tries
                    );
                }
                return Ok(());
            }
            Err(Errno::NOTEMPTY) if start.elapsed() < ENOTEMPTY_RETRY => {
                if tries == 1 {
                    log::debug!("delete {what}: ENOTEMPTY, retrying");
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                return Err(Error::sys(
                    format!(
                        "delete subvolume {what} (after {} attempts in {} ms)",
                        tries,
                        start.elapsed().as_millis()
                    ),
                    e,
                ))
            }
        }
    }
}

/// Compare two directory trees entry by entry (see the module documentation), not descending
/// into the relative paths in `skip` (nested subvolumes, compared on their own). `true`: the same.
fn same_dir_tree(a: &OwnedFd, b: &OwnedFd, skip: &BTreeSet<String>) -> Result<bool, Errno> {
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let (da, db) = if rel.is_empty() {
            (open_dir_beneath(a, ".")?, open_dir_beneath(b, ".")?)
        } else {
            match (open_dir_beneath(a, &rel), open_dir_beneath(b, &rel)) {
                (Ok(x), Ok(y)) => (x, y),
                _ => return Ok(false),
            }
        };
        let keep = |v: Vec<(String, rustix::fs::FileType)>| -> Vec<String> {
            v.into_iter()
                .map(|(n, _)| n)
                .filter(|n| !skip.contains(&join(&rel, n)))
                .collect()
        };
        let here = io::statx(&da, "")?.subvol;
        let na = keep(entries(&da)?);
        let nb = keep(entries(&db)?);
        if na != nb {
            return Ok(false);
        }
        for n in na {
            let (x, y) = match (io::statx(&da, &n), io::statx(&db, &n)) {
                (Ok(x), Ok(y)) => (x, y),
                _ => return Ok(false),
            };
            let same_id = x.ino == y.ino && x.mode == y.mode && x.uid == y.uid && x.gid == y.gid;
            if !same_id {
                return Ok(false);
            }
            if x.is_dir() {
                // A directory's own times change when a nested subvolume is placed in it; its
                // contents are compared instead.
                if x.subvol == here {
                    stack.push(join(&rel, &n));
                }
            } else if x.size != y.size
                || x.nlink != y.nlink
                || x.mtime != y.mtime
                || x.ctime != y.ctime
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn same_tree(a: &Tree, b: &Tree) -> Result<bool, Errno> {
    let pa: Vec<&String> = a.nested.iter().map(|(p, _)| p).collect();
    let pb: Vec<&String> = b.nested.iter().map(|(p, _)| p).collect();
    if pa != pb {
        return Ok(false);
    }
    let all: BTreeSet<String> = a.nested.iter().map(|(p, _)| p.clone()).collect();
    if !same_dir_tree(&a.main, &b.main, &all)? {
        return Ok(false);
    }
    for ((p, fa), (_, fb)) in a.nested.iter().zip(b.nested.iter()) {
        let prefix = format!("{p}/");
        let inner: BTreeSet<String> = all
            .iter()
            .filter_map(|q| q.strip_prefix(&prefix).map(str::to_string))
            .collect();
        if !same_dir_tree(fa, fb, &inner)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What `.fresh-root` says about the last root we built.
struct FreshRecord {
    subvol: u64,
    ino: u64,
    began: i64,
    source: RootSource,
}

impl Bcachefs {
    /// Mount the whole filesystem on a private directory. The caller has entered a private mount
    /// namespace.
    pub fn open(
        members: &[String],
        root: &str,
        snapshots: &str,
        blank: Option<&str>,
    ) -> Result<Bcachefs> {
        let source = members.join(":");
        let target = PathBuf::from(format!("{}/top", mounts::RUN_DIR));
        let mount = Mounted::mount(
            &source,
            &target,
            "bcachefs",
            rustix::mount::MountFlags::NOATIME,
            "",
        )
        .map_err(|e| match e.errno() {
            Some(22) => Error::Refused(format!(
                "cannot mount {source} as bcachefs (EINVAL); for a multi-device filesystem every member must be present (the kernel log says which is missing)"
            )),
            _ => e,
        })?;
        let top = rustix::fs::open(
            &target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open {}", target.display()))?;
        if !io::is_bcachefs(&top).ctx(|| "statfs the mounted filesystem")? {
            return Err(Error::Refused(format!(
                "{source} did not mount as bcachefs"
            )));
        }
        match io::statx(&top, "") {
            Ok(_) => {}
            Err(Errno::OPNOTSUPP) => {
                return Err(Error::Refused(format!(
                    "the kernel does not report bcachefs subvolumes through statx (STATX_SUBVOL, Linux 6.10+); cannot work safely on {source}"
                )))
            }
            Err(e) => return Err(Error::sys(format!("statx the top of {source}"), e)),
        }
        let mi = mounts::read_mountinfo()?;
        let me = mi
            .iter()
            .rev()
            .find(|m| Path::new(&m.mount_point) == target)
            .ok_or_else(|| Error::Other(format!("our mount of {source} is not in mountinfo")))?;
        let dev = (me.major, me.minor);
        Ok(Bcachefs {
            source,
            root: root.trim_matches('/').to_string(),
            snapshots: snapshots.trim_matches('/').to_string(),
            blank: blank.map(|b| b.trim_matches('/').to_string()),
            mount: Some(mount),
            top,
            dev,
        })
    }

    fn snaps_fd(&self) -> Result<OwnedFd> {
        open_dir_beneath(&self.top, &self.snapshots).ctx(|| {
            format!(
                "open snapshots location {} on {}",
                self.snapshots, self.source
            )
        })
    }

    /// statx of `rel` (relative to `base`) and whether it is a subvolume root: a directory in
    /// a different subvolume from its parent directory.
    fn subvol_root_at(&self, base: &OwnedFd, rel: &str) -> Result<Option<io::Info>, Errno> {
        let (parent, name) = split_parent(rel);
        let pfd = open_dir_beneath(base, parent)?;
        let p = io::statx(&pfd, "")?;
        let me = io::statx(&pfd, name)?;
        Ok((me.is_dir() && me.subvol != p.subvol).then_some(me))
    }

    /// Subvolumes nested in the subvolume whose root directory is `fd`: (relative path,
    /// subvolume id), parents before children. Walks every directory.
    fn nested(&self, fd: &OwnedFd, what: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let top = io::statx(fd, "").ctx(|| format!("statx {what}"))?;
        let mut stack = vec![(String::new(), top.subvol)];
        while let Some((rel, sub)) = stack.pop() {
            let d = open_dir_beneath(fd, &rel).ctx(|| format!("open {what}/{rel}"))?;
            let list = entries(&d).ctx(|| format!("read {what}/{rel}"))?;
            for (n, t) in list.into_iter().rev() {
                if !(t == rustix::fs::FileType::Directory || t == rustix::fs::FileType::Unknown) {
                    continue;
                }
                let st = match io::statx(&d, &n) {
                    Ok(s) => s,
                    Err(Errno::NOENT) => continue,
                    Err(e) => {
                        return Err(Error::sys(format!("statx {what}/{}", join(&rel, &n)), e))
                    }
                };
                if !st.is_dir() {
                    continue;
                }
                let r = join(&rel, &n);
                if st.subvol != sub {
                    out.push((r.clone(), st.subvol));
                }
                stack.push((r, st.subvol));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A live subvolume (root, blank template, new root) with its nested subvolumes.
    fn live_tree(&self, base: &OwnedFd, rel: &str, what: &str) -> Result<Tree> {
        let main = open_dir_beneath(base, rel).ctx(|| format!("open {what}"))?;
        let mut nested = Vec::new();
        for (p, id) in self.nested(&main, what)? {
            let fd = open_dir_beneath(&main, &p).ctx(|| format!("open {what}/{p}"))?;
            let got = io::statx(&fd, "").ctx(|| format!("statx {what}/{p}"))?;
            if got.subvol != id {
                return Err(Error::Refused(format!(
                    "{what}/{p} changed while we looked at it (subvolume {id} expected)"
                )));
            }
            nested.push((p, fd));
        }
        Ok(Tree { main, nested })
    }

    /// The nested subvolumes kept with old root `name` (decoded paths, sorted; entry names).
    fn store_entries(&self, snaps: &OwnedFd, name: &str) -> Result<Vec<(String, String)>> {
        let store = match open_dir_beneath(snaps, &store_name(name)) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(vec![]),
            Err(e) => {
                return Err(Error::sys(
                    format!("open {}/{}", self.snapshots, store_name(name)),
                    e,
                ))
            }
        };
        let mut v = Vec::new();
        for (n, _) in
            entries(&store).ctx(|| format!("read {}/{}", self.snapshots, store_name(name)))?
        {
            if let Some(p) = decode_nested(&n) {
                v.push((p, n));
            }
        }
        v.sort();
        Ok(v)
    }

    fn old_tree(&self, snaps: &OwnedFd, name: &str) -> Result<Tree> {
        let main = open_dir_beneath(snaps, name)
            .ctx(|| format!("open old root {}/{name}", self.snapshots))?;
        let mut nested = Vec::new();
        if let Ok(store) = open_dir_beneath(snaps, &store_name(name)) {
            for (p, n) in self.store_entries(snaps, name)? {
                let fd = open_dir_beneath(&store, &n)
                    .ctx(|| format!("open {}/{}/{n}", self.snapshots, store_name(name)))?;
                nested.push((p, fd));
            }
        }
        Ok(Tree { main, nested })
    }

    fn root_parent_and_base(&self) -> Result<(OwnedFd, String)> {
        let (parent, base) = split_parent(&self.root);
        let fd = open_dir_beneath(&self.top, parent).ctx(|| {
            format!(
                "open the directory holding root {} on {}",
                self.root, self.source
            )
        })?;
        Ok((fd, base.to_string()))
    }

    fn mount_path(&self) -> PathBuf {
        self.mount
            .as_ref()
            .map(|m| m.path.clone())
            .unwrap_or_default()
    }

    fn read_fresh_record(&self, snaps: &OwnedFd) -> Option<FreshRecord> {
        let f = rustix::fs::openat(
            snaps,
            FRESH_RECORD,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut buf = [0u8; 4096];
        let n = rustix::io::read(&f, &mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?.trim_end_matches('\n');
        let mut it = text.splitn(6, ' ');
        if it.next()? != "bcachefs1" {
            return None;
        }
        let subvol = it.next()?.parse().ok()?;
        let ino = it.next()?.parse().ok()?;
        let began = it.next()?.parse().ok()?;
        let source = match (it.next()?, it.next()) {
            ("empty", _) => RootSource::Empty,
            ("blank", Some(b)) => RootSource::Blank(b.to_string()),
            ("old", Some(o)) => RootSource::OldRoot(o.to_string()),
            _ => return None,
        };
        Some(FreshRecord {
            subvol,
            ino,
            began,
            source,
        })
    }

    fn write_fresh_record(&self, snaps: &OwnedFd, r: &FreshRecord) -> Result<()> {
        let src = match &r.source {
            RootSource::Empty => "empty".to_string(),
            RootSource::Blank(b) => format!("blank {b}"),
            RootSource::OldRoot(o) => format!("old {o}"),
        };
        let tmp = format!("{FRESH_RECORD}.tmp");
        let f = rustix::fs::openat(
            snaps,
            &tmp,
            OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .ctx(|| format!("write {}/{tmp}", self.snapshots))?;
        let line = format!("bcachefs1 {} {} {} {src}\n", r.subvol, r.ino, r.began);
        rustix::io::write(&f, line.as_bytes()).ctx(|| format!("write {}/{tmp}", self.snapshots))?;
        rustix::fs::renameat(snaps, &tmp, snaps, FRESH_RECORD)
            .ctx(|| format!("rename {}/{tmp}", self.snapshots))
    }

    /// The tree a root was built from, if it still exists.
    fn source_tree(&self, snaps: &OwnedFd, src: &RootSource) -> Result<Option<Tree>> {
        match src {
            RootSource::Empty => Ok(None),
            RootSource::Blank(b) => match self.subvol_root_at(&self.top, b) {
                Ok(Some(_)) => Ok(Some(self.live_tree(&self.top, b, b)?)),
                _ => Ok(None),
            },
            RootSource::OldRoot(o) => match self.subvol_root_at(snaps, o) {
                Ok(Some(_)) => Ok(Some(self.old_tree(snaps, o)?)),
                _ => Ok(None),
            },
        }
    }

    /// Snapshot `src` (with its nested subvolumes, writable) as `name` in `dst_dir`.
    fn clone_tree(&self, src: &Tree, dst_dir: &OwnedFd, name: &str, what: &str) -> Result<()> {
        io::snapshot(dst_dir.as_fd(), name, src.main.as_fd(), false)
            .ctx(|| format!("snapshot {what} as {}/{name}", self.snapshots))?;
        fault::point("new-root:created");
        if src.nested.is_empty() {
            return Ok(());
        }
        let dst =
            open_dir_beneath(dst_dir, name).ctx(|| format!("open {}/{name}", self.snapshots))?;
        for (p, fd) in &src.nested {
            let (parent, base) = split_parent(p);
            let pdir = open_dir_beneath(&dst, parent)
                .ctx(|| format!("open {}/{name}/{parent}", self.snapshots))?;
            // A snapshot has no entry where a nested subvolume was; remove an empty placeholder
            // directory should a kernel leave one.
            match rustix::fs::unlinkat(&pdir, base, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!("make room for nested {p} in {}/{name}", self.snapshots),
                        e,
                    ))
                }
            }
            io::snapshot(pdir.as_fd(), base, fd.as_fd(), false)
                .ctx(|| format!("snapshot nested {what}/{p} into {}/{name}", self.snapshots))?;
            fault::point("new-root:child");
        }
        Ok(())
    }

    /// A read-only snapshot of each nested subvolume of the root `tree`, in a new plain directory
    /// `store` of the snapshots location (named by [`encode_nested`]); nothing when there are none.
    /// `point`: the fault point after each snapshot.
    fn snapshot_nested_ro(
        &self,
        snaps: &OwnedFd,
        store: &str,
        tree: &Tree,
        point: Option<&'static str>,
    ) -> Result<()> {
        if tree.nested.is_empty() {
            return Ok(());
        }
        rustix::fs::mkdirat(snaps, store, Mode::from_raw_mode(0o755))
            .ctx(|| format!("create {}/{store}", self.snapshots))?;
        let sfd =
            open_dir_beneath(snaps, store).ctx(|| format!("open {}/{store}", self.snapshots))?;
        for (p, fd) in &tree.nested {
            let e = encode_nested(p);
            io::snapshot(sfd.as_fd(), &e, fd.as_fd(), true).ctx(|| {
                format!(
                    "read-only snapshot of nested {}/{p} as {}/{store}/{e}",
                    self.root, self.snapshots
                )
            })?;
            if let Some(pt) = point {
                fault::point(pt);
            }
        }
        Ok(())
    }

    /// Delete subvolume `name`, a direct entry of the snapshots location, with everything nested
    /// in it (deepest first).
    fn destroy_subvol_tree(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let s = io::statx(&snaps, "").ctx(|| format!("statx {}", self.snapshots))?;
        let info = match io::statx(&snaps, name) {
            Ok(i) => i,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("statx {}/{name}", self.snapshots), e)),
        };
        if !info.is_dir() || info.subvol == s.subvol || info.subvol == io::ROOT_SUBVOL {
            return Err(Error::Refused(format!(
                "{}/{name} is not a subvolume; refusing to delete it (remove it by hand if it is yours)",
                self.snapshots
            )));
        }
        let fd =
            open_dir_beneath(&snaps, name).ctx(|| format!("open {}/{name}", self.snapshots))?;
        let again = io::statx(&fd, "").ctx(|| "statx")?;
        if (again.ino, again.subvol) != (info.ino, info.subvol) {
            return Err(Error::Refused(format!(
                "{}/{name} changed while we looked at it; not deleting it",
                self.snapshots
            )));
        }
        let what = format!("{}/{name}", self.snapshots);
        let nested = self.nested(&fd, &what)?;
        fault::point("delete:writable");
        for (p, id) in nested.iter().rev() {
            let (parent, base) = split_parent(p);
            let pdir = open_dir_beneath(&fd, parent).ctx(|| format!("open {what}/{parent}"))?;
            let st = io::statx(&pdir, base).ctx(|| format!("statx {what}/{p}"))?;
            if st.subvol != *id {
                return Err(Error::Refused(format!(
                    "nested subvolume {id} ({what}/{p}) moved while deleting; stopping"
                )));
            }
            destroy_retry(&pdir, base, &format!("{what}/{p}"))?;
            fault::point("delete:child-deleted");
        }
        destroy_retry(&snaps, name, &what)?;
        fault::point("delete:deleted");
        Ok(())
    }

    /// Delete a nested-subvolume store (`*.nested`): a plain directory in the snapshots location
    /// holding only subvolume roots (read-only snapshots, which cannot hold subvolumes).
    fn destroy_store(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let s = io::statx(&snaps, "").ctx(|| format!("statx {}", self.snapshots))?;
        let what = format!("{}/{name}", self.snapshots);
        let st = match io::statx(&snaps, name) {
            Ok(i) => i,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("statx {what}"), e)),
        };
        if !st.is_dir() || st.subvol != s.subvol {
            return Err(Error::Refused(format!(
                "{what} is not a plain directory of kept nested subvolumes; refusing to delete it"
            )));
        }
        let store = open_dir_beneath(&snaps, name).ctx(|| format!("open {what}"))?;
        let list = entries(&store).ctx(|| format!("read {what}"))?;
        for (n, _) in &list {
            let e = io::statx(&store, n).ctx(|| format!("statx {what}/{n}"))?;
            if !e.is_dir() || e.subvol == s.subvol || decode_nested(n).is_none() {
                return Err(Error::Refused(format!(
                    "{what}/{n} is not a kept nested subvolume; refusing to delete {what} (remove it by hand if it is yours)"
                )));
            }
        }
        fault::point("delete:writable");
        for (n, _) in &list {
            destroy_retry(&store, n, &format!("{what}/{n}"))?;
            fault::point("delete:child-deleted");
        }
        match rustix::fs::unlinkat(&snaps, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::sys(format!("remove {what}"), e)),
        }
        fault::point("delete:deleted");
        Ok(())
    }

    /// Fill old roots, leftovers and retired entries from the snapshots location.
    fn scan_snapshots(&self, inv: &mut Inventory) -> Result<Option<OwnedFd>> {
        let snaps = match open_dir_beneath(&self.top, &self.snapshots) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR) => {
                return Err(Error::Refused(format!(
                    "snapshots location {} exists but is not a directory",
                    self.snapshots
                )))
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("open snapshots location {}", self.snapshots),
                    e,
                ))
            }
        };
        inv.snapshots_exists = true;
        let s_sub = io::statx(&snaps, "")
            .ctx(|| format!("statx {}", self.snapshots))?
            .subvol;
        let names: Vec<String> = entries(&snaps)
            .ctx(|| format!("read {}", self.snapshots))?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut stores = Vec::new();
        for n in &names {
            let (time, seq) = match classify_entry(n) {
                Entry::Leftover => {
                    inv.leftovers.push(n.clone());
                    continue;
                }
                Entry::Retired => {
                    inv.retired.push(n.clone());
                    continue;
                }
                Entry::Baseline => {
                    inv.baseline = true;
                    continue;
                }
                Entry::OldRoot(time, seq) => (time, seq),
                // bcachefs never moves roots, so `.kept.*` is not ours.
                Entry::Unsealed(_) | Entry::BadKept => continue,
                Entry::Other => {
                    if let Some(base) = n.strip_suffix(NESTED_SUFFIX) {
                        if crate::timefmt::parse_old_root_name(base).is_some() {
                            stores.push((n.clone(), base.to_string()));
                        }
                    }
                    continue;
                }
            };
            let Ok(st) = io::statx(&snaps, n) else {
                continue;
            };
            if !st.is_dir() || st.subvol == s_sub {
                continue;
            }
            let Ok(fd) = open_dir_beneath(&snaps, n) else {
                continue;
            };
            let nested = self
                .store_entries(&snaps, n)?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            inv.old_roots.push(OldRoot {
                pinned: pins::has(&snaps, n),
                name: n.clone(),
                time,
                seq,
                kept_at: None,
                readonly: is_readonly(&fd),
                nested,
            });
        }
        // A store whose old root is not committed is left over from an interrupted keep or prune.
        for (store, base) in stores {
            if !inv.old_roots.iter().any(|o| o.name == base) {
                inv.leftovers.push(store);
            }
        }
        Ok(Some(snaps))
    }
}

impl Backend for Bcachefs {
    fn inventory(&mut self) -> Result<Inventory> {
        let mut inv = Inventory {
            fs: format!("bcachefs {}", self.source),
            ..Default::default()
        };
        let snaps = self.scan_snapshots(&mut inv)?;
        let (pfd, base) = match self.root_parent_and_base() {
            Ok(x) => x,
            Err(_) => {
                inv.root_replacement_pending = inv
                    .retired
                    .iter()
                    .any(|n| n.starts_with(RETIRED_ROOT_PREFIX));
                return self.finish_inventory(inv);
            }
        };
        let rinfo = match self.subvol_root_at(&pfd, &base) {
            Ok(Some(i)) => Some(i),
            Ok(None) => {
                inv.refusals.push(format!(
                    "root {} on {} is not a subvolume; create it as one (e.g. `bcachefs subvolume create <top>/{}`)",
                    self.root, self.source, self.root
                ));
                None
            }
            Err(Errno::NOENT) => None,
            Err(e) => return Err(Error::sys(format!("statx root {}", self.root), e)),
        };
        if let Some(info) = rinfo {
            let tree = self.live_tree(&self.top, &self.root, &self.root)?;
            let mi = mounts::read_mountinfo()?;
            inv.root_mounted_at = mounts::mounted_below(&mi, self.dev.0, self.dev.1, &self.root)
                .map(|m| m.mount_point.clone());
            let empty = entries(&tree.main)
                .ctx(|| format!("read root {}", self.root))?
                .is_empty();
            let record = snaps
                .as_ref()
                .and_then(|s| self.read_fresh_record(s))
                .filter(|r| r.subvol == info.subvol && r.ino == info.ino);
            let began = match &record {
                Some(r) => r.began,
                None => info.btime.unwrap_or(info.ctime.0),
            };
            let mut fresh = empty;
            if !fresh {
                if let (Some(r), Some(s)) = (&record, &snaps) {
                    if let Some(src) = self.source_tree(s, &r.source)? {
                        fresh = same_tree(&tree, &src)
                            .ctx(|| format!("compare root {} with {}", self.root, r.source))?;
                    }
                }
            }
            let mut kept_as = None;
            if !fresh {
                if let (Some(o), Some(s)) = (
                    inv.old_roots
                        .iter()
                        .filter(|o| o.time == began)
                        .max_by_key(|o| o.seq),
                    &snaps,
                ) {
                    let old = self.old_tree(s, &o.name)?;
                    if same_tree(&tree, &old)
                        .ctx(|| format!("compare root {} with old root {}", self.root, o.name))?
                    {
                        kept_as = Some(o.name.clone());
                    }
                }
            }
            inv.root = Some(RootState {
                began,
                fresh,
                kept_as,
                nested: tree.nested.iter().map(|(p, _)| p.clone()).collect(),
                retire_as: format!("{RETIRED_ROOT_PREFIX}{}", info.subvol),
                describe: format!("{} (subvolume {})", self.root, info.subvol),
            });
        } else {
            inv.root_replacement_pending = inv
                .retired
                .iter()
                .any(|n| n.starts_with(RETIRED_ROOT_PREFIX));
        }
        self.finish_inventory(inv)
    }

    fn create_snapshots_location(&mut self) -> Result<()> {
        let (parent, base) = split_parent(&self.snapshots);
        let pfd = open_dir_beneath(&self.top, parent).ctx(|| {
            format!(
                "open the directory that should hold {} (create it first)",
                self.snapshots
            )
        })?;
        match io::subvol_create(pfd.as_fd(), base) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::sys(
                    format!("create snapshots subvolume {}", self.snapshots),
                    e,
                ))
            }
        }
        fault::point("snapshots-location:created");
        Ok(())
    }

    fn discard(&mut self, name: &str) -> Result<()> {
        let store_orphan = name
            .strip_suffix(NESTED_SUFFIX)
            .is_some_and(|b| crate::timefmt::parse_old_root_name(b).is_some());
        if name.starts_with(INCOMPLETE_PREFIX) && name.ends_with(NESTED_SUFFIX) {
            self.destroy_store(name)?;
        } else if store_orphan {
            let snaps = self.snaps_fd()?;
            let base = &name[..name.len() - NESTED_SUFFIX.len()];
            if matches!(self.subvol_root_at(&snaps, base), Ok(Some(_))) {
                return Err(Error::Refused(format!(
                    "{}/{name} belongs to old root {base}; not discarding it",
                    self.snapshots
                )));
            }
            self.destroy_store(name)?;
        } else if name.starts_with(INCOMPLETE_PREFIX) || name == NEW_ROOT {
            self.destroy_subvol_tree(name)?;
        } else {
            return Err(Error::Refused(format!(
                "{name} is not something an interrupted run leaves behind; not discarding it"
            )));
        }
        fault::point("discard:child-deleted");
        Ok(())
    }

    fn build_new_root(&mut self, src: &RootSource) -> Result<()> {
        let snaps = self.snaps_fd()?;
        match src {
            RootSource::Empty => {
                io::subvol_create(snaps.as_fd(), NEW_ROOT)
                    .ctx(|| format!("create empty subvolume {}/{NEW_ROOT}", self.snapshots))?;
                fault::point("new-root:created");
            }
            RootSource::Blank(b) => {
                if !matches!(self.subvol_root_at(&self.top, b), Ok(Some(_))) {
                    return Err(Error::Usage(format!(
                        "blank template {b} is missing or not a subvolume"
                    )));
                }
                let t = self.live_tree(&self.top, b, b)?;
                self.clone_tree(&t, &snaps, NEW_ROOT, b)?;
            }
            RootSource::OldRoot(n) => {
                let t = self.old_tree(&snaps, n)?;
                self.clone_tree(&t, &snaps, NEW_ROOT, &format!("{}/{n}", self.snapshots))?;
            }
        }
        fault::point("new-root:placeholders");
        let nr = open_dir_beneath(&snaps, NEW_ROOT)
            .ctx(|| format!("open {}/{NEW_ROOT}", self.snapshots))?;
        let st = io::statx(&nr, "").ctx(|| format!("statx {}/{NEW_ROOT}", self.snapshots))?;
        self.write_fresh_record(
            &snaps,
            &FreshRecord {
                subvol: st.subvol,
                ino: st.ino,
                began: crate::engine::now(),
                source: src.clone(),
            },
        )
    }

    fn keep_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let tree = self.live_tree(&self.top, &self.root, &self.root)?;
        let staging = format!("{INCOMPLETE_PREFIX}{name}");
        io::snapshot(snaps.as_fd(), &staging, tree.main.as_fd(), true).ctx(|| {
            format!(
                "read-only snapshot of root {} as {}/{staging}",
                self.root, self.snapshots
            )
        })?;
        fault::point("keep:staged");
        let store_staging = store_name(&staging);
        self.snapshot_nested_ro(&snaps, &store_staging, &tree, Some("keep:nested"))?;
        // Everything was created read-only; nothing to flip (6.12 cannot).
        fault::point("keep:readonly");
        if !tree.nested.is_empty() {
            rustix::fs::renameat_with(
                &snaps,
                &store_staging,
                &snaps,
                store_name(name),
                RenameFlags::NOREPLACE,
            )
            .ctx(|| {
                format!(
                    "rename {}/{store_staging} to {}",
                    self.snapshots,
                    store_name(name)
                )
            })?;
        }
        rustix::fs::renameat_with(&snaps, &staging, &snaps, name, RenameFlags::NOREPLACE)
            .ctx(|| format!("rename {}/{staging} to {name}", self.snapshots))?;
        fault::point("keep:committed");
        Ok(())
    }

    fn retire_root(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        let info = match self.subvol_root_at(&pfd, &base) {
            Ok(Some(i)) => i,
            _ => {
                return Err(Error::Refused(format!(
                    "root {} is not a subvolume; not moving it",
                    self.root
                )))
            }
        };
        let to = format!("{RETIRED_ROOT_PREFIX}{}", info.subvol);
        rustix::fs::renameat_with(&pfd, &base, &snaps, &to, RenameFlags::NOREPLACE)
            .ctx(|| format!("move root {} to {}/{to}", self.root, self.snapshots))?;
        fault::point("retire:moved");
        Ok(())
    }

    fn activate_new_root(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        rustix::fs::renameat_with(&snaps, NEW_ROOT, &pfd, &base, RenameFlags::NOREPLACE)
            .ctx(|| format!("move {}/{NEW_ROOT} to {}", self.snapshots, self.root))?;
        fault::point("activate:moved");
        Ok(())
    }

    fn delete_retired(&mut self, name: &str) -> Result<()> {
        if name == BASELINE {
            self.destroy_store(&store_name(BASELINE))?;
            return self.destroy_subvol_tree(BASELINE);
        }
        if !(name.starts_with(RETIRED_ROOT_PREFIX) || name.starts_with(DELETING_PREFIX)) {
            return Err(Error::Refused(format!(
                "{name} is not a retired root or a pruned old root"
            )));
        }
        if name.starts_with(DELETING_PREFIX) && name.ends_with(NESTED_SUFFIX) {
            return self.destroy_store(name);
        }
        if name.starts_with(DELETING_PREFIX) {
            // Its nested store, if the prune was interrupted before renaming it, is an orphan
            // (discarded as a leftover); one renamed already is deleted here.
            let store = store_name(name);
            self.destroy_store(&store)?;
        }
        self.destroy_subvol_tree(name)
    }

    fn delete_old_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let to = format!("{DELETING_PREFIX}{name}");
        rustix::fs::renameat_with(&snaps, name, &snaps, &to, RenameFlags::NOREPLACE)
            .ctx(|| format!("rename old root {}/{name} for deletion", self.snapshots))?;
        fault::point("delete-old:renamed");
        if let Err(e) = pins::forget(&snaps, &self.snapshots, name) {
            log::warn!("{e}");
        }
        let store = store_name(name);
        let store_to = store_name(&to);
        match rustix::fs::renameat_with(&snaps, &store, &snaps, &store_to, RenameFlags::NOREPLACE) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => {
                return Err(Error::sys(
                    format!("rename {}/{store} for deletion", self.snapshots),
                    e,
                ))
            }
        }
        self.destroy_store(&store_to)?;
        self.destroy_subvol_tree(&to)
    }

    fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()> {
        let snaps = self.snaps_fd()?;
        pins::set(&snaps, &self.snapshots, name, pinned)?;
        self.sync()
    }

    fn sync(&mut self) -> Result<()> {
        rustix::fs::syncfs(&self.top).ctx(|| format!("syncfs bcachefs {}", self.source))?;
        fault::point("sync:done");
        Ok(())
    }

    fn old_root_path(&mut self, name: &str) -> Result<PathBuf> {
        Ok(self.mount_path().join(&self.snapshots).join(name))
    }

    fn old_root_nested(&mut self, name: &str) -> Result<Vec<(String, PathBuf)>> {
        let snaps = self.snaps_fd()?;
        let store = self
            .mount_path()
            .join(&self.snapshots)
            .join(store_name(name));
        Ok(self
            .store_entries(&snaps, name)?
            .into_iter()
            .map(|(p, n)| (p, store.join(n)))
            .collect())
    }

    fn root_path(&mut self) -> Result<PathBuf> {
        Ok(self.mount_path().join(&self.root))
    }

    /// A read-only snapshot of the root as `.baseline`, and of each nested subvolume in
    /// `.baseline.nested/` (the layout of an old root), staged under `.incomplete.baseline*` and
    /// renamed into place after the old baseline is deleted (main first, so a crash leaves at worst
    /// a baseline without its nested part, and `.incomplete.*` leftovers that rollback discards).
    fn take_baseline(&mut self) -> Result<()> {
        self.create_snapshots_location()?;
        let snaps = self.snaps_fd()?;
        let staging = format!("{INCOMPLETE_PREFIX}baseline");
        let staging_store = store_name(&staging);
        self.destroy_store(&staging_store)?;
        self.destroy_subvol_tree(&staging)?;
        let tree = self.live_tree(&self.top, &self.root, &self.root)?;
        io::snapshot(snaps.as_fd(), &staging, tree.main.as_fd(), true).ctx(|| {
            format!(
                "read-only snapshot of root {} as {}/{staging}",
                self.root, self.snapshots
            )
        })?;
        self.snapshot_nested_ro(&snaps, &staging_store, &tree, None)?;
        self.destroy_store(&store_name(BASELINE))?;
        self.destroy_subvol_tree(BASELINE)?;
        rustix::fs::renameat_with(&snaps, &staging, &snaps, BASELINE, RenameFlags::NOREPLACE)
            .ctx(|| format!("rename {}/{staging} to {BASELINE}", self.snapshots))?;
        if !tree.nested.is_empty() {
            rustix::fs::renameat_with(
                &snaps,
                &staging_store,
                &snaps,
                store_name(BASELINE),
                RenameFlags::NOREPLACE,
            )
            .ctx(|| {
                format!(
                    "rename {}/{staging_store} to {}",
                    self.snapshots,
                    store_name(BASELINE)
                )
            })?;
        }
        self.sync()
    }

    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>> {
        if self.baseline_path()?.is_none() {
            return Ok(Vec::new());
        }
        self.old_root_nested(BASELINE)
    }

    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        let snaps = match open_dir_beneath(&self.top, &self.snapshots) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::sys(format!("open {}", self.snapshots), e)),
        };
        Ok(match self.subvol_root_at(&snaps, BASELINE) {
            Ok(Some(_)) => Some(self.mount_path().join(&self.snapshots).join(BASELINE)),
            _ => None,
        })
    }

    fn lock_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.top.as_fd()
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let m = self.mount.take();
        drop(self);
        match m {
            Some(m) => m.unmount(),
            None => Ok(()),
        }
    }
}

impl Bcachefs {
    fn finish_inventory(&self, mut inv: Inventory) -> Result<Inventory> {
        if let Some(b) = &self.blank {
            inv.blank_exists = Some(matches!(self.subvol_root_at(&self.top, b), Ok(Some(_))));
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_round_trip() {
        for p in ["var/lib/machines", "a%b/c", "x", "srv/inner/deep%2F"] {
            let e = encode_nested(p);
            assert!(!e.contains('/'), "{e}");
            assert_eq!(decode_nested(&e).as_deref(), Some(p));
        }
        assert_eq!(encode_nested("var/lib/machines"), "var%2Flib%2Fmachines");
        for bad in ["%", "%2", "%zz", "a%2F%2Fb", "%2Fa", "..", "a%2F.."] {
            assert_eq!(decode_nested(bad), None, "{bad}");
        }
    }

    #[test]
    fn parents() {
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("@root"), ("", "@root"));
        assert_eq!(split_parent("/x/@root/"), ("x", "@root"));
    }
}
