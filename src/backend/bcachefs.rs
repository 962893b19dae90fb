//! bcachefs backend (Linux 6.12 and the out-of-tree module): the whole filesystem is mounted
//! privately at `/run/ephemeral-root/top` (the source is the colon-separated member list), and the
//! root, the snapshots location and the blank template are subvolumes at paths relative to the
//! filesystem root. Subvolumes are made and destroyed with `BCH_IOCTL_SUBVOLUME_CREATE/DESTROY`
//! ([`super::bcachefs_ioctl`]); they are found with readdir + `statx(STATX_SUBVOL)`: a directory
//! whose `stx_subvol` differs from its parent's is the root of a subvolume.
//!
//! # Keeping a root
//!
//! `rollback` moves the root, whole, into the snapshots location as `.kept.<name>` (a rename: its
//! nested subvolumes travel with it). Two facts of 6.12 decide how it is sealed afterwards (both
//! checked in the VM tests; docs/kernel-interfaces.md#bcachefs-nested, #bcachefs-readonly): a
//! snapshot does not contain the subvolumes nested in its source
//! (their entries are simply absent), and a subvolume can be made read-only only when it is
//! created (`SNAPSHOT_RO`); there is no ioctl to flip it later. So an old root is a read-only
//! *snapshot* of the kept root, and its nested subvolumes are kept beside it:
//!
//! ```text
//! <snapshots>/
//!   2026-11-22T00-48-03Z                 the old root: a read-only snapshot of the kept root
//!   2026-11-22T00-48-03Z.nested/         present only if the root had nested subvolumes: a plain
//!     var%2Flib%2Fmachines               directory of read-only snapshots, one per nested
//!     var%2Flib%2Fmachines%2Finner       subvolume, named by its path relative to the root with
//!                                        '%' -> "%25" and '/' -> "%2F" (flat, so that a nested
//!                                        subvolume inside another one needs no writable parent)
//! ```
//!
//! Sealing `.kept.N` as `N` (`finish`): a read-only snapshot of it as `.incomplete.N` and of each
//! nested subvolume into `.incomplete.N.nested/`, then the store is renamed to `N.nested` and
//! `.incomplete.N` to `N` (the commit: `N` exists only when everything it needs exists), then the
//! writable original is renamed to `.retired-root.kept-<id>` and deleted. A crash between the
//! commit and that rename leaves both `.kept.N` and `N`: [`Fs::is_sealed_copy`] then compares the
//! two trees (a snapshot shares inode numbers with its source) and the protocol deletes the
//! original instead of keeping it twice. Audit copies are made read-only directly (`.incomplete.N`
//! + store, renamed to `.kept.N`), and sealing them is a rename.
//!
//! A store is renamed together with its owner: before it when the new name is one that counts
//! (an old root, `.kept.*`), after it when the new name is on its way out (`.deleting.*`), so an
//! owner never appears under a name that counts without its parts; an orphan store is discarded.
//!
//! # Freshness and when a root began
//!
//! bcachefs exposes no generation numbers, and a snapshot shares inodes (numbers, times) with its
//! source. A root is *fresh* when its directory is empty, or when it is a root we built from a
//! template or an old root (recorded in `<snapshots>/.fresh-root` by subvolume id and inode) and
//! its tree still matches that source entry by entry (names, inode numbers, modes, owners; for
//! non-directories also size, link count, mtime and ctime), nested subvolumes included.
//!
//! The time a root began is read back, never taken from the clock of the run that names it: the
//! record's time for roots we built from a snapshot (a snapshot's root directory has its source's
//! birth time; the record is written once, when the root is built, and kept while the root is
//! live), else the root directory's birth time (statx btime), else its ctime.
//!
//! # Deleting
//!
//! Only direct entries of the snapshots location, only when they are subvolume roots (or, for
//! stores, plain directories holding only subvolume roots). Nested subvolumes are destroyed
//! deepest first; 6.12 may keep refusing a parent with ENOTEMPTY for a short while after its
//! children were destroyed, so ENOTEMPTY is retried with back-off for up to 30 s (in `finish`,
//! after boot; never on the boot path unless `finish` did not run).

use super::bcachefs_ioctl as io;
use super::dirs::{self, join_os, open_dir_beneath, pins, record, split_os, Built, Top};
#[cfg(feature = "tools")]
use super::Browse;
use super::{Facts, Fs, RawEntry, RootFacts, RootSource};
use crate::config::Settings;
use crate::error::{Context, Error, Result};
use crate::fault::{self, Point};
use crate::layout::{self, split_parent, BASELINE};
use crate::mounts;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
#[cfg(feature = "tools")]
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long to retry ENOTEMPTY from DESTROY (6.12 clears a child's back-reference late; fixed
/// upstream in 6.15: docs/kernel-interfaces.md#bcachefs-enotempty).
const ENOTEMPTY_RETRY: Duration = Duration::from_secs(30);

pub fn open(members: &[String], s: &Settings, now: i64) -> Result<Box<dyn super::Backend>> {
    Ok(Box::new(Bcachefs::open(members, s, now)?))
}

pub struct Bcachefs {
    t: Top,
    now: i64,
}

fn esc(p: &OsStr) -> String {
    crate::escape::name(p)
}

/// Encode a nested subvolume's relative path as one directory entry name.
pub fn encode_nested(path: &OsStr) -> OsString {
    let mut v = Vec::with_capacity(path.len());
    for &b in path.as_bytes() {
        match b {
            b'%' => v.extend_from_slice(b"%25"),
            b'/' => v.extend_from_slice(b"%2F"),
            b => v.push(b),
        }
    }
    OsString::from_vec(v)
}

pub fn decode_nested(name: &OsStr) -> Option<OsString> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match b.get(i + 1..i + 3) {
                Some(b"25") => out.push(b'%'),
                Some(b"2F") => out.push(b'/'),
                _ => return None,
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let ok = !out.is_empty()
        && out
            .split(|&c| c == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..");
    ok.then(|| OsString::from_vec(out))
}

/// A tree to compare or copy: a subvolume and the subvolumes nested in it (relative paths,
/// parents first).
struct Tree {
    main: OwnedFd,
    nested: Vec<(OsString, OwnedFd)>,
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
fn destroy_retry(dir: &OwnedFd, name: &OsStr, what: &str) -> Result<()> {
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
fn same_dir_tree(a: &OwnedFd, b: &OwnedFd, skip: &BTreeSet<OsString>) -> Result<bool, Errno> {
    let mut stack = vec![OsString::new()];
    while let Some(rel) = stack.pop() {
        let (da, db) = match (open_dir_beneath(a, &rel), open_dir_beneath(b, &rel)) {
            (Ok(x), Ok(y)) => (x, y),
            _ => return Ok(false),
        };
        let keep = |v: Vec<(OsString, FileType)>| -> Vec<OsString> {
            v.into_iter()
                .map(|(n, _)| n)
                .filter(|n| !skip.contains(&join_os(&rel, n)))
                .collect()
        };
        let here = io::statx(&da, "")?.subvol;
        let na = keep(dirs::entries(&da)?);
        let nb = keep(dirs::entries(&db)?);
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
                    stack.push(join_os(&rel, &n));
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
    let pa: Vec<&OsString> = a.nested.iter().map(|(p, _)| p).collect();
    let pb: Vec<&OsString> = b.nested.iter().map(|(p, _)| p).collect();
    if pa != pb {
        return Ok(false);
    }
    let all: BTreeSet<OsString> = a.nested.iter().map(|(p, _)| p.clone()).collect();
    if !same_dir_tree(&a.main, &b.main, &all)? {
        return Ok(false);
    }
    for ((p, fa), (_, fb)) in a.nested.iter().zip(b.nested.iter()) {
        let mut prefix = p.as_bytes().to_vec();
        prefix.push(b'/');
        let inner: BTreeSet<OsString> = all
            .iter()
            .filter_map(|q| {
                q.as_bytes()
                    .strip_prefix(prefix.as_slice())
                    .map(|r| OsString::from_vec(r.to_vec()))
            })
            .collect();
        if !same_dir_tree(fa, fb, &inner)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn record_key(subvol: u64, ino: u64) -> String {
    format!("bch:{subvol}:{ino}")
}

impl Bcachefs {
    /// Mount the whole filesystem on a private directory. The caller has entered a private mount
    /// namespace.
    pub fn open(members: &[String], s: &Settings, now: i64) -> Result<Bcachefs> {
        let source = members.join(":");
        let t = Top::mount(
            &source,
            "bcachefs",
            "",
            || {
                format!(
            "cannot mount {source} as bcachefs (EINVAL); for a multi-device filesystem every member must be present (the kernel log says which is missing)"
        )
            },
            s,
        )?;
        if !io::is_bcachefs(&t.fd).ctx(|| "statfs the mounted filesystem")? {
            return Err(Error::Refused(format!(
                "{source} did not mount as bcachefs"
            )));
        }
        match io::statx(&t.fd, "") {
            Ok(_) => {}
            Err(Errno::OPNOTSUPP) => {
                return Err(Error::Refused(format!(
                    "the kernel does not report bcachefs subvolumes through statx (STATX_SUBVOL, Linux 6.10+); cannot work safely on {source}"
                )))
            }
            Err(e) => return Err(Error::sys(format!("statx the top of {source}"), e)),
        }
        Ok(Bcachefs { t, now })
    }

    fn snaps_fd(&self) -> Result<OwnedFd> {
        self.t.snaps_fd()
    }

    /// Is `rel` (below the top) a subvolume?
    fn is_subvolume(&self, rel: &str) -> bool {
        matches!(self.subvol_root_at(&self.t.fd, rel), Ok(Some(_)))
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
    fn nested(&self, fd: &OwnedFd, what: &str) -> Result<Vec<(OsString, u64)>> {
        let mut out = Vec::new();
        let top = io::statx(fd, "").ctx(|| format!("statx {what}"))?;
        let mut stack = vec![(OsString::new(), top.subvol)];
        while let Some((rel, sub)) = stack.pop() {
            let d = open_dir_beneath(fd, &rel).ctx(|| format!("open {what}/{}", esc(&rel)))?;
            let list = dirs::entries(&d).ctx(|| format!("read {what}/{}", esc(&rel)))?;
            for (n, t) in list.into_iter().rev() {
                if !(t == FileType::Directory || t == FileType::Unknown) {
                    continue;
                }
                let st = match io::statx(&d, &n) {
                    Ok(s) => s,
                    Err(Errno::NOENT) => continue,
                    Err(e) => {
                        return Err(Error::sys(
                            format!("statx {what}/{}", esc(&join_os(&rel, &n))),
                            e,
                        ))
                    }
                };
                if !st.is_dir() {
                    continue;
                }
                let r = join_os(&rel, &n);
                if st.subvol != sub {
                    out.push((r.clone(), st.subvol));
                }
                stack.push((r, st.subvol));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A live subvolume (root, blank template, a `.kept.*` entry) with its nested subvolumes.
    fn live_tree(&self, base: &OwnedFd, rel: &str, what: &str) -> Result<Tree> {
        let main = open_dir_beneath(base, rel).ctx(|| format!("open {what}"))?;
        let mut nested = Vec::new();
        for (p, id) in self.nested(&main, what)? {
            let fd = open_dir_beneath(&main, &p).ctx(|| format!("open {what}/{}", esc(&p)))?;
            let got = io::statx(&fd, "").ctx(|| format!("statx {what}/{}", esc(&p)))?;
            if got.subvol != id {
                return Err(Error::Refused(format!(
                    "{what}/{} changed while we looked at it (subvolume {id} expected)",
                    esc(&p)
                )));
            }
            nested.push((p, fd));
        }
        Ok(Tree { main, nested })
    }

    /// The nested subvolumes kept beside entry `name` (decoded paths, sorted; entry names).
    fn store_entries(&self, snaps: &OwnedFd, name: &str) -> Result<Vec<(OsString, OsString)>> {
        let sname = layout::store(name);
        let store = match open_dir_beneath(snaps, &sname) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(vec![]),
            Err(e) => return Err(Error::sys(format!("open {}/{sname}", self.t.snapshots), e)),
        };
        let mut v = Vec::new();
        for (n, _) in dirs::entries(&store).ctx(|| format!("read {}/{sname}", self.t.snapshots))? {
            if let Some(p) = decode_nested(&n) {
                v.push((p, n));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Does entry `name` keep its nested subvolumes beside it (a store), or inside (a moved root)?
    fn has_store(&self, snaps: &OwnedFd, name: &str) -> bool {
        open_dir_beneath(snaps, layout::store(name)).is_ok()
    }

    /// Entry `name` of the snapshots location as a tree: nested subvolumes from its store if it
    /// has one, else from inside it.
    fn entry_tree(&self, snaps: &OwnedFd, name: &str) -> Result<Tree> {
        let what = format!("{}/{name}", self.t.snapshots);
        if !self.has_store(snaps, name) {
            return self.live_tree(snaps, name, &what);
        }
        let main = open_dir_beneath(snaps, name).ctx(|| format!("open {what}"))?;
        let sname = layout::store(name);
        let store =
            open_dir_beneath(snaps, &sname).ctx(|| format!("open {}/{sname}", self.t.snapshots))?;
        let mut nested = Vec::new();
        for (p, n) in self.store_entries(snaps, name)? {
            let fd = open_dir_beneath(&store, &n)
                .ctx(|| format!("open {}/{sname}/{}", self.t.snapshots, esc(&n)))?;
            nested.push((p, fd));
        }
        Ok(Tree { main, nested })
    }

    /// The root's statx, when it is a subvolume root.
    fn root_info(&self) -> Result<Option<io::Info>> {
        let (pfd, base) = match self.t.root_parent_and_base() {
            Ok(x) => x,
            Err(_) => return Ok(None),
        };
        match self.subvol_root_at(&pfd, &base) {
            Ok(i) => Ok(i),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::sys(format!("statx root {}", self.t.root), e)),
        }
    }

    /// The tree a root was built from, if it still exists.
    fn source_tree(&self, snaps: &OwnedFd, src: &RootSource) -> Result<Option<Tree>> {
        match src {
            RootSource::Empty => Ok(None),
            RootSource::Blank(b) => match self.subvol_root_at(&self.t.fd, b) {
                Ok(Some(_)) => Ok(Some(self.live_tree(&self.t.fd, b, b)?)),
                _ => Ok(None),
            },
            RootSource::OldRoot(o) => match self.subvol_root_at(snaps, o) {
                Ok(Some(_)) => Ok(Some(self.entry_tree(snaps, o)?)),
                _ => Ok(None),
            },
        }
    }

    /// Snapshot `src` (with its nested subvolumes, writable) as `name` in `dst_dir`.
    fn clone_tree(&self, src: &Tree, dst_dir: &OwnedFd, name: &str, what: &str) -> Result<()> {
        io::snapshot(dst_dir.as_fd(), name, src.main.as_fd(), false)
            .ctx(|| format!("snapshot {what} as {}/{name}", self.t.snapshots))?;
        fault::point(Point::NewRootCreated);
        if src.nested.is_empty() {
            return Ok(());
        }
        let dst =
            open_dir_beneath(dst_dir, name).ctx(|| format!("open {}/{name}", self.t.snapshots))?;
        for (p, fd) in &src.nested {
            let (parent, base) = split_os(p);
            let pdir = open_dir_beneath(&dst, parent)
                .ctx(|| format!("open {}/{name}/{}", self.t.snapshots, esc(parent)))?;
            // A snapshot has no entry where a nested subvolume was; remove an empty placeholder
            // directory should a kernel leave one.
            match rustix::fs::unlinkat(&pdir, base, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!(
                            "make room for nested {} in {}/{name}",
                            esc(p),
                            self.t.snapshots
                        ),
                        e,
                    ))
                }
            }
            io::snapshot(pdir.as_fd(), base, fd.as_fd(), false).ctx(|| {
                format!(
                    "snapshot nested {what}/{} into {}/{name}",
                    esc(p),
                    self.t.snapshots
                )
            })?;
            fault::point(Point::NewRootChild);
        }
        Ok(())
    }

    /// A read-only snapshot of `tree` as `name`, and of each of its nested subvolumes in a new
    /// plain directory `name.nested` (named by [`encode_nested`]; none when there are none).
    fn snapshot_ro(
        &self,
        snaps: &OwnedFd,
        name: &str,
        tree: &Tree,
        what: &str,
        points: (Point, Point),
    ) -> Result<()> {
        io::snapshot(snaps.as_fd(), name, tree.main.as_fd(), true).ctx(|| {
            format!(
                "read-only snapshot of {what} as {}/{name}",
                self.t.snapshots
            )
        })?;
        fault::point(points.0);
        if tree.nested.is_empty() {
            return Ok(());
        }
        let store = layout::store(name);
        rustix::fs::mkdirat(snaps, &store, Mode::from_raw_mode(0o755))
            .ctx(|| format!("create {}/{store}", self.t.snapshots))?;
        let sfd =
            open_dir_beneath(snaps, &store).ctx(|| format!("open {}/{store}", self.t.snapshots))?;
        for (p, fd) in &tree.nested {
            let e = encode_nested(p);
            io::snapshot(sfd.as_fd(), &e, fd.as_fd(), true).ctx(|| {
                format!(
                    "read-only snapshot of nested {what}/{} as {}/{store}/{}",
                    esc(p),
                    self.t.snapshots,
                    esc(&e)
                )
            })?;
            fault::point(points.1);
        }
        Ok(())
    }

    /// Delete subvolume `name`, a direct entry of the snapshots location, with everything nested
    /// in it (deepest first).
    fn destroy_subvol_tree(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let s = io::statx(&snaps, "").ctx(|| format!("statx {}", self.t.snapshots))?;
        let info = match io::statx(&snaps, name) {
            Ok(i) => i,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("statx {}/{name}", self.t.snapshots), e)),
        };
        if !info.is_dir() || info.subvol == s.subvol || info.subvol == io::ROOT_SUBVOL {
            return Err(Error::Refused(format!(
                "{}/{name} is not a subvolume; refusing to delete it (remove it by hand if it is yours)",
                self.t.snapshots
            )));
        }
        let fd =
            open_dir_beneath(&snaps, name).ctx(|| format!("open {}/{name}", self.t.snapshots))?;
        let again = io::statx(&fd, "").ctx(|| "statx")?;
        if (again.ino, again.subvol) != (info.ino, info.subvol) {
            return Err(Error::Refused(format!(
                "{}/{name} changed while we looked at it; not deleting it",
                self.t.snapshots
            )));
        }
        let what = format!("{}/{name}", self.t.snapshots);
        let nested = self.nested(&fd, &what)?;
        fault::point(Point::DeleteWritable);
        for (p, id) in nested.iter().rev() {
            let (parent, base) = split_os(p);
            let pdir =
                open_dir_beneath(&fd, parent).ctx(|| format!("open {what}/{}", esc(parent)))?;
            let st = io::statx(&pdir, base).ctx(|| format!("statx {what}/{}", esc(p)))?;
            if st.subvol != *id {
                return Err(Error::Refused(format!(
                    "nested subvolume {id} ({what}/{}) moved while deleting; stopping",
                    esc(p)
                )));
            }
            destroy_retry(&pdir, base, &format!("{what}/{}", esc(p)))?;
            fault::point(Point::DeleteChildDeleted);
        }
        destroy_retry(&snaps, OsStr::new(name), &what)?;
        fault::point(Point::DeleteDeleted);
        Ok(())
    }

    /// Delete a nested-subvolume store (`*.nested`): a plain directory in the snapshots location
    /// holding only subvolume roots (read-only snapshots, which cannot hold subvolumes).
    fn destroy_store(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let s = io::statx(&snaps, "").ctx(|| format!("statx {}", self.t.snapshots))?;
        let what = format!("{}/{name}", self.t.snapshots);
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
        let list = dirs::entries(&store).ctx(|| format!("read {what}"))?;
        for (n, _) in &list {
            let e = io::statx(&store, n).ctx(|| format!("statx {what}/{}", esc(n)))?;
            if !e.is_dir() || e.subvol == s.subvol || decode_nested(n).is_none() {
                return Err(Error::Refused(format!(
                    "{what}/{} is not a kept nested subvolume; refusing to delete {what} (remove it by hand if it is yours)",
                    esc(n)
                )));
            }
        }
        fault::point(Point::DeleteWritable);
        for (n, _) in &list {
            destroy_retry(&store, n, &format!("{what}/{}", esc(n)))?;
            fault::point(Point::DeleteChildDeleted);
        }
        match rustix::fs::unlinkat(&snaps, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::sys(format!("remove {what}"), e)),
        }
        fault::point(Point::DeleteDeleted);
        Ok(())
    }

    /// Rename entry `from` to `to` in the snapshots location, with its store (see the module
    /// documentation for the order).
    fn rename_with_store(&self, snaps: &OwnedFd, from: &str, to: &str) -> Result<()> {
        let (sf, st) = (layout::store(from), layout::store(to));
        let store = self.has_store(snaps, from);
        let main = |s: &Self| s.t.rename(snaps, from, to);
        let part = |s: &Self| s.t.rename(snaps, &sf, &st);
        if !store {
            return main(self);
        }
        if layout::is_doomed(to) {
            main(self)?;
            fault::point(Point::RenameStore);
            part(self)
        } else {
            part(self)?;
            fault::point(Point::RenameStore);
            main(self)
        }
    }
}

impl Fs for Bcachefs {
    dirs::top_fs!("bcachefs");

    fn entries(&mut self) -> Result<Vec<RawEntry>> {
        let snaps = self.snaps_fd()?;
        let s_sub = io::statx(&snaps, "")
            .ctx(|| format!("statx {}", self.t.snapshots))?
            .subvol;
        let names = dirs::entries(&snaps).ctx(|| format!("read {}", self.t.snapshots))?;
        let mut out = Vec::new();
        for (name, _) in &names {
            let mut facts = Facts::default();
            match io::statx(&snaps, name) {
                Ok(st) if st.mode & 0o170000 == 0o100000 => facts.file = true,
                Ok(st) if st.is_dir() && st.subvol != s_sub => {
                    facts.tree = true;
                    facts.id = st.subvol.to_string();
                    if let Ok(fd) = open_dir_beneath(&snaps, name) {
                        facts.readonly = is_readonly(&fd);
                    }
                }
                Ok(st) if st.is_dir() => {
                    // A store holds only subvolume roots with encoded names; `.pins` is a dir.
                    facts.dir = true;
                    if let Ok(fd) = open_dir_beneath(&snaps, name) {
                        if let Ok(list) = dirs::entries(&fd) {
                            let ok = !list.is_empty()
                                && list.iter().all(|(n, _)| {
                                    decode_nested(n).is_some()
                                        && io::statx(&fd, n)
                                            .is_ok_and(|e| e.is_dir() && e.subvol != s_sub)
                                });
                            facts.store = ok;
                            if ok {
                                facts.nested =
                                    list.iter().filter_map(|(n, _)| decode_nested(n)).collect();
                                facts.nested.sort();
                                facts.readonly = list.iter().all(|(n, _)| {
                                    open_dir_beneath(&fd, n).is_ok_and(|f| is_readonly(&f))
                                });
                            }
                        }
                    }
                }
                _ => {}
            }
            out.push(RawEntry {
                name: name.clone(),
                facts,
            });
        }
        // An entry's nested subvolumes are those of its store (old roots, baselines, audit copies)
        // and its read-only state includes them; a moved root keeps them inside (not listed here:
        // finding them means walking the whole tree).
        let stores: Vec<(OsString, Vec<OsString>, bool)> = out
            .iter()
            .filter(|e| e.facts.store)
            .map(|e| (e.name.clone(), e.facts.nested.clone(), e.facts.readonly))
            .collect();
        for e in out.iter_mut() {
            let Some(n) = e.name.to_str() else { continue };
            if let Some((_, nested, ro)) = stores
                .iter()
                .find(|(s, _, _)| *s == OsString::from(layout::store(n)))
            {
                e.facts.nested = nested.clone();
                e.facts.readonly &= *ro;
            }
            let pin = match layout::classify(&e.name) {
                layout::Class::Kept { name, .. } => Some(name),
                layout::Class::OldRoot { .. } => Some(n.to_string()),
                _ => None,
            };
            e.facts.pinned = pin.is_some_and(|p| pins::has(&snaps, &p));
        }
        Ok(out)
    }

    fn root(&mut self) -> Result<Option<RootFacts>> {
        let Some(info) = self.root_info()? else {
            return Ok(None);
        };
        let main = open_dir_beneath(&self.t.fd, &self.t.root)
            .ctx(|| format!("open root {}", self.t.root))?;
        let mi = mounts::read_mountinfo()?;
        let mounted_at = mounts::mounted_below(&mi, self.t.dev.0, self.t.dev.1, &self.t.root)
            .map(|m| m.mount_point.clone());
        let empty = dirs::is_empty_dir(&main).ctx(|| format!("read root {}", self.t.root))?;
        let snaps = open_dir_beneath(&self.t.fd, &self.t.snapshots).ok();
        let built = snaps
            .as_ref()
            .map(|s| record::read(s))
            .unwrap_or_default()
            .into_iter()
            .find(|b| b.key == record_key(info.subvol, info.ino));
        let began = match &built {
            Some(b) => b.began,
            None => info.btime.unwrap_or(info.ctime.0),
        };
        let mut fresh = empty;
        if !fresh {
            if let (Some(b), Some(s)) = (&built, &snaps) {
                if let Some(src) = self.source_tree(s, &b.source)? {
                    let tree = self.live_tree(&self.t.fd, &self.t.root, &self.t.root)?;
                    fresh = same_tree(&tree, &src)
                        .ctx(|| format!("compare root {} with {}", self.t.root, b.source))?;
                }
            }
        }
        Ok(Some(RootFacts {
            began,
            fresh,
            id: info.subvol.to_string(),
            describe: format!("{} (subvolume {})", self.t.root, info.subvol),
            mounted_at,
        }))
    }

    fn refusals(&mut self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        if let Ok((pfd, base)) = self.t.root_parent_and_base() {
            if let Ok(me) = io::statx(&pfd, &base) {
                if self.subvol_root_at(&pfd, &base).ok().flatten().is_none() && me.is_dir() {
                    v.push(format!(
                        "root {} on {} is not a subvolume; create it as one (e.g. `bcachefs subvolume create <top>/{}`)",
                        self.t.root, self.t.source, self.t.root
                    ));
                }
            }
        }
        Ok(v)
    }

    fn root_unchanged_since_copy(&mut self, copy: &str) -> Result<bool> {
        let snaps = self.snaps_fd()?;
        let root = self.live_tree(&self.t.fd, &self.t.root, &self.t.root)?;
        let old = self.entry_tree(&snaps, copy)?;
        same_tree(&root, &old).ctx(|| format!("compare root {} with {copy}", self.t.root))
    }

    fn is_sealed_copy(&mut self, kept: &str, old: &str) -> Result<bool> {
        let snaps = self.snaps_fd()?;
        let a = self.entry_tree(&snaps, kept)?;
        let b = self.entry_tree(&snaps, old)?;
        same_tree(&a, &b).ctx(|| format!("compare {}/{kept} with {old}", self.t.snapshots))
    }

    fn create_snapshots_location(&mut self) -> Result<()> {
        self.t
            .create_snapshots_location(|d, n| io::subvol_create(d, n))
    }

    fn build(&mut self, name: &str, src: &RootSource) -> Result<()> {
        let snaps = self.snaps_fd()?;
        match src {
            RootSource::Empty => {
                io::subvol_create(snaps.as_fd(), name)
                    .ctx(|| format!("create empty subvolume {}/{name}", self.t.snapshots))?;
                fault::point(Point::NewRootCreated);
                // Fresh by being empty; it began at its own birth time.
                return Ok(());
            }
            RootSource::Blank(b) => {
                if !matches!(self.subvol_root_at(&self.t.fd, b), Ok(Some(_))) {
                    return Err(Error::Usage(format!(
                        "blank template {b} is missing or not a subvolume"
                    )));
                }
                let t = self.live_tree(&self.t.fd, b, b)?;
                self.clone_tree(&t, &snaps, name, b)?;
            }
            RootSource::OldRoot(n) => {
                let t = self.entry_tree(&snaps, n)?;
                self.clone_tree(&t, &snaps, name, &format!("{}/{n}", self.t.snapshots))?;
            }
        }
        // A snapshot's root directory carries its source's birth time: record when this root
        // began (this command's one clock reading), keeping the live root's own line.
        let st = io::statx(&snaps, name).ctx(|| format!("statx {}/{name}", self.t.snapshots))?;
        let current = self.root_info()?.map(|i| record_key(i.subvol, i.ino));
        let new = Built {
            key: record_key(st.subvol, st.ino),
            began: self.now,
            source: src.clone(),
        };
        record::add(
            &snaps,
            &self.t.snapshots,
            |b| Some(&b.key) == current.as_ref(),
            new,
        )
    }

    fn copy_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let tree = self.live_tree(&self.t.fd, &self.t.root, &self.t.root)?;
        self.snapshot_ro(
            &snaps,
            name,
            &tree,
            &format!("root {}", self.t.root),
            (Point::CopyStaged, Point::CopyNested),
        )
    }

    fn move_root(&mut self, to: &str) -> Result<()> {
        let (pfd, base) = self.t.root_parent_and_base()?;
        if self.subvol_root_at(&pfd, &base).ok().flatten().is_none() {
            return Err(Error::Refused(format!(
                "root {} is not a subvolume; not moving it",
                self.t.root
            )));
        }
        self.t.move_root(to)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        self.rename_with_store(&snaps, from, to)?;
        fault::point(Point::RenameDone);
        Ok(())
    }

    fn seal(&mut self, kept: &str, to: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let fd = match open_dir_beneath(&snaps, kept) {
            Ok(fd) => fd,
            // Already sealed by an earlier, interrupted run.
            Err(Errno::NOENT) if open_dir_beneath(&snaps, to).is_ok() => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}/{kept}", self.t.snapshots), e)),
        };
        if is_readonly(&fd) {
            // An audit copy: read-only since it was made, with its store beside it.
            self.rename_with_store(&snaps, kept, to)?;
            fault::point(Point::SealCommitted);
            return Ok(());
        }
        let staging = layout::incomplete(to);
        self.destroy_store(&layout::store(&staging))?;
        self.destroy_subvol_tree(&staging)?;
        let what = format!("{}/{kept}", self.t.snapshots);
        let tree = self.live_tree(&snaps, kept, &what)?;
        self.snapshot_ro(
            &snaps,
            &staging,
            &tree,
            &what,
            (Point::SealCopied, Point::SealCopied),
        )?;
        drop(tree);
        // Commit: the store first, then the old root itself.
        self.rename_with_store(&snaps, &staging, to)?;
        fault::point(Point::SealCommitted);
        // The writable original goes.
        let id = io::statx(&fd, "").ctx(|| format!("statx {what}"))?.subvol;
        let doomed = layout::retired_root(&format!("kept-{id}"));
        self.t.rename(&snaps, kept, &doomed)?;
        self.destroy_subvol_tree(&doomed)
    }

    fn destroy(&mut self, name: &str) -> Result<()> {
        if let layout::Class::Store { .. } = layout::classify(OsStr::new(name)) {
            return self.destroy_store(name);
        }
        // The parts first: a crash in between leaves the (doomed) owner, deleted next time.
        self.destroy_store(&layout::store(name))?;
        self.destroy_subvol_tree(name)
    }

    fn sync(&mut self) -> Result<()> {
        rustix::fs::syncfs(&self.t.fd).ctx(|| format!("syncfs bcachefs {}", self.t.source))?;
        Ok(())
    }

    /// A read-only snapshot of the root as `.baseline`, and of each nested subvolume in
    /// `.baseline.nested/` (the layout of an old root), staged under `.incomplete.baseline*` and
    /// renamed into place after the old baseline is deleted (a crash in between leaves no
    /// baseline, and `.incomplete.*` leftovers that the next run discards).
    fn take_baseline(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let staging = layout::BASELINE_STAGING;
        self.destroy_store(&layout::store(&staging))?;
        self.destroy_subvol_tree(&staging)?;
        let tree = self.live_tree(&self.t.fd, &self.t.root, &self.t.root)?;
        self.snapshot_ro(
            &snaps,
            &staging,
            &tree,
            &format!("root {}", self.t.root),
            (Point::BaselineStaged, Point::BaselineStaged),
        )?;
        self.destroy_store(&layout::store(BASELINE))?;
        self.destroy_subvol_tree(BASELINE)?;
        self.rename_with_store(&snaps, &staging, BASELINE)?;
        Ok(())
    }
}

#[cfg(feature = "tools")]
impl Browse for Bcachefs {
    dirs::top_paths!();

    fn entry_nested(&mut self, name: &str) -> Result<Vec<(String, PathBuf)>> {
        let snaps = self.snaps_fd()?;
        let store = self.t.entry_path(&layout::store(name));
        Ok(self
            .store_entries(&snaps, name)?
            .into_iter()
            .map(|(p, n)| (p.to_string_lossy().into_owned(), store.join(n)))
            .collect())
    }

    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        let snaps = match open_dir_beneath(&self.t.fd, &self.t.snapshots) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::sys(format!("open {}", self.t.snapshots), e)),
        };
        Ok(match self.subvol_root_at(&snaps, BASELINE) {
            Ok(Some(_)) => Some(self.t.entry_path(BASELINE)),
            _ => None,
        })
    }

    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>> {
        if self.baseline_path()?.is_none() {
            return Ok(Vec::new());
        }
        self.entry_nested(BASELINE)
    }

    fn changed_since_baseline(&mut self) -> Result<Option<super::Changed>> {
        Ok(None)
    }

    fn exclusive_bytes(&mut self, _name: &str) -> Result<Option<(u64, bool)>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_round_trip() {
        for p in ["var/lib/machines", "a%b/c", "x", "srv/inner/deep%2F"] {
            let e = encode_nested(OsStr::new(p));
            assert!(!e.as_bytes().contains(&b'/'), "{e:?}");
            assert_eq!(decode_nested(&e).as_deref(), Some(OsStr::new(p)));
        }
        let raw = OsStr::from_bytes(b"v\xffar/lib");
        assert_eq!(decode_nested(&encode_nested(raw)).as_deref(), Some(raw));
        assert_eq!(
            encode_nested(OsStr::new("var/lib/machines")),
            "var%2Flib%2Fmachines"
        );
        for bad in ["%", "%2", "%zz", "a%2F%2Fb", "%2Fa", "..", "a%2F.."] {
            assert_eq!(decode_nested(OsStr::new(bad)), None, "{bad}");
        }
    }
}
