//! btrfs: the top level (subvolid=5) mounted privately, subvolume ioctls.
//!
//! The root is kept by *moving* it into the snapshots location (a rename: nested subvolumes
//! travel with it) and sealed later by setting the read-only flag on it and every subvolume nested
//! in it, children first, then renaming it to its old-root name. Deletions are by subvolume id,
//! after proving through the root tree's back references that the victim is a direct entry of the
//! snapshots location.

use super::btrfs_ioctl as io;
use super::dirs::{self, join_os, open_dir_beneath, pins, record, split_os, Built, Top};
#[cfg(feature = "tools")]
use super::Browse;
use super::{Facts, Fs, RawEntry, RootFacts, RootSource};
use crate::config::Settings;
use crate::error::{Context, Error, Result};
use crate::fault::{self, Point};
use crate::layout::{self, BASELINE};
use crate::mounts;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
#[cfg(feature = "tools")]
use std::path::PathBuf;

#[cfg(feature = "tools")]
#[path = "btrfs_inspect.rs"]
pub mod inspect;

pub struct Btrfs {
    t: Top,
}

pub fn open(members: &[String], s: &Settings, _now: i64) -> Result<Box<dyn super::Backend>> {
    Ok(Box::new(Btrfs::open(members, s)?))
}

fn is_subvol_root(fd: impl AsFd) -> Result<bool, Errno> {
    let st = rustix::fs::fstat(fd)?;
    Ok(st.st_ino == io::FIRST_FREE_OBJECTID && (st.st_mode & 0o170000) == 0o040000)
}

fn uuid_zero(u: &[u8; 16]) -> bool {
    u.iter().all(|&b| b == 0)
}

fn hex(u: &[u8]) -> String {
    u.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `.fresh-root` key of a subvolume: its uuid and generation (any change bumps the latter).
fn record_key(info: &io::SubvolInfo) -> String {
    format!("btrfs:{}:{}", hex(&info.uuid), info.generation)
}

/// Is any of `nested` (paths relative to the victim) strictly below `rel` ("" = the victim)?
fn has_nested_below(rel: &OsStr, nested: &[(OsString, u64)]) -> bool {
    nested.iter().any(|(p, _)| {
        let (p, r) = (p.as_bytes(), rel.as_bytes());
        if r.is_empty() {
            !p.is_empty()
        } else {
            p.len() > r.len() + 1 && p.starts_with(r) && p[r.len()] == b'/'
        }
    })
}

fn lossy(p: &OsStr) -> String {
    crate::escape::name(p)
}

impl Btrfs {
    /// Mount the top level of the filesystem on a private directory. The caller has entered a
    /// private mount namespace.
    pub fn open(members: &[String], s: &Settings) -> Result<Btrfs> {
        let device = &members[0];
        if members.len() > 1 {
            if let Ok(ctl) = rustix::fs::open(
                "/dev/btrfs-control",
                OFlags::RDWR | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                for m in members {
                    if let Err(e) = io::scan_dev(ctl.as_fd(), m) {
                        log::warn!("could not register btrfs member {m}: {e}");
                    }
                }
            }
        }
        let t = Top::mount(
            device,
            "btrfs",
            "subvolid=5",
            || {
                format!(
            "cannot mount {device} as btrfs (EINVAL); is it a complete btrfs filesystem? for a multi-device filesystem all members must be present"
        )
            },
            s,
        )?;
        if !io::is_btrfs(&t.fd).ctx(|| "statfs top level")? {
            return Err(Error::Refused(format!("{device} did not mount as btrfs")));
        }
        // Root items (generation numbers) are updated only at transaction commit. If the
        // filesystem is mounted elsewhere too (after boot; tests), recent writes may not be
        // committed yet: commit, so "unchanged since created/copied" is decided on real data. In
        // the initrd nothing else has it mounted and this commit is skipped.
        if t.mounted_elsewhere {
            io::sync(t.fd.as_fd()).ctx(|| format!("commit btrfs transaction on {device}"))?;
        }
        Ok(Btrfs { t })
    }

    fn snaps_fd(&self) -> Result<OwnedFd> {
        self.t.snaps_fd()
    }

    /// Is `rel` (below the top) a subvolume?
    fn is_subvolume(&self, rel: &str) -> bool {
        open_dir_beneath(&self.t.fd, rel).is_ok_and(|fd| is_subvol_root(&fd).unwrap_or(false))
    }

    fn root_fd(&self) -> Result<Option<OwnedFd>> {
        match open_dir_beneath(&self.t.fd, &self.t.root) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::XDEV) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(Error::Refused(format!(
                "root path {} escapes the filesystem, contains a symlink or is not a directory; name a subvolume relative to the top level, e.g. @root",
                self.t.root
            ))),
            Err(e) => Err(Error::sys(
                format!("open root {} on {}", self.t.root, self.t.source),
                e,
            )),
        }
    }

    /// Nested subvolumes of subvolume `id`: (relative path, id), parents before children.
    fn nested(&self, id: u64) -> Result<Vec<(OsString, u64)>> {
        let mut out = Vec::new();
        let mut stack = vec![(OsString::new(), id)];
        while let Some((prefix, pid)) = stack.pop() {
            let mut kids = io::child_refs(self.t.fd.as_fd(), pid).ctx(|| {
                format!(
                    "list child subvolumes of subvolume {pid} on {}",
                    self.t.source
                )
            })?;
            kids.sort_by(|a, b| a.2.cmp(&b.2));
            for (cid, dirid, name) in kids.into_iter().rev() {
                let dir = match io::ino_lookup(self.t.fd.as_fd(), pid, dirid) {
                    Ok(d) => d,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(Error::sys(format!("INO_LOOKUP in subvolume {pid}"), e)),
                };
                // `dir` is the directory's path with a trailing '/' (empty at the top).
                let mut rel = prefix.as_bytes().to_vec();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(dir.as_bytes());
                rel.extend_from_slice(name.as_bytes());
                let rel = OsString::from_vec(rel);
                out.push((rel.clone(), cid));
                stack.push((rel, cid));
            }
        }
        // Depth-first pre-order: a child comes after its parent.
        Ok(out)
    }

    /// Prove that `name` is a direct entry of the snapshots location (a subvolume whose back
    /// reference leads to that directory), then delete it and everything nested in it, children
    /// first.
    fn destroy_in_snapshots(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let s_sub = io::subvol_info(snaps.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}", self.t.snapshots))?
            .id;
        let s_ino = rustix::fs::fstat(&snaps).ctx(|| "fstat")?.st_ino;
        let fd = match open_dir_beneath(&snaps, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}/{name}", self.t.snapshots), e)),
        };
        if !is_subvol_root(&fd).ctx(|| "fstat")? {
            return Err(Error::Refused(format!(
                "{}/{name} is not a subvolume; refusing to delete it (remove it by hand if it is yours)",
                self.t.snapshots
            )));
        }
        let info = io::subvol_info(fd.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{name}", self.t.snapshots))?;
        let proven = io::parent_ref(self.t.fd.as_fd(), info.id)
            .ctx(|| format!("look up the parent of subvolume {}", info.id))?
            .is_some_and(|(p, dirid, n)| p == s_sub && dirid == s_ino && n == OsStr::new(name));
        if !proven {
            return Err(Error::Refused(format!(
                "subvolume {} ({}/{name}) is not proven to be inside the snapshots location; not deleting it",
                info.id, self.t.snapshots
            )));
        }
        let nested = self.nested(info.id)?;
        // Parents must be writable for their children to be unlinked; leaves are deleted as they
        // are (each flag change is a transaction commit, the slowest part of pruning).
        let parents: Vec<OsString> = std::iter::once(OsString::new())
            .chain(nested.iter().map(|(p, _)| p.clone()))
            .filter(|r| has_nested_below(r, &nested))
            .map(|r| join_os(OsStr::new(name), &r))
            .collect();
        for rel in &parents {
            let f = open_dir_beneath(&snaps, rel)
                .ctx(|| format!("open {}/{}", self.t.snapshots, lossy(rel)))?;
            let flags = io::get_flags(f.as_fd())
                .ctx(|| format!("get flags of {}/{}", self.t.snapshots, lossy(rel)))?;
            if flags & io::SUBVOL_RDONLY != 0 {
                io::set_flags(f.as_fd(), flags & !io::SUBVOL_RDONLY).ctx(|| {
                    format!(
                        "make {}/{} writable for deletion",
                        self.t.snapshots,
                        lossy(rel)
                    )
                })?;
            }
        }
        fault::point(Point::DeleteWritable);
        for (rel, id) in nested.iter().rev() {
            // Each child's back reference must lead into the victim tree we enumerated.
            let parent_ok = io::parent_ref(self.t.fd.as_fd(), *id)
                .ctx(|| format!("look up the parent of subvolume {id}"))?
                .is_some_and(|(p, _, _)| p == info.id || nested.iter().any(|(_, n)| *n == p));
            if !parent_ok {
                return Err(Error::Refused(format!(
                    "nested subvolume {id} ({}/{name}/{}) moved while deleting; stopping",
                    self.t.snapshots,
                    lossy(rel)
                )));
            }
            io::snap_destroy_by_id(snaps.as_fd(), *id).ctx(|| {
                format!(
                    "delete nested subvolume {}/{name}/{} (id {id})",
                    self.t.snapshots,
                    lossy(rel)
                )
            })?;
            fault::point(Point::DeleteChildDeleted);
        }
        io::snap_destroy_by_id(snaps.as_fd(), info.id).ctx(|| {
            format!(
                "delete subvolume {}/{name} (id {})",
                self.t.snapshots, info.id
            )
        })?;
        fault::point(Point::DeleteDeleted);
        Ok(())
    }

    /// Snapshot `src` (with its nested subvolumes, recursively) into `dst_dir/name`, writable.
    /// Nested snapshots replace the empty placeholder directories a btrfs snapshot leaves.
    fn clone_tree(
        &self,
        src: &OwnedFd,
        src_desc: &str,
        dst_dir: &OwnedFd,
        name: &str,
        points: (Point, Point),
    ) -> Result<()> {
        let src_info =
            io::subvol_info(src.as_fd()).ctx(|| format!("GET_SUBVOL_INFO {src_desc}"))?;
        io::snap_create(dst_dir.as_fd(), src.as_fd(), OsStr::new(name), false)
            .ctx(|| format!("snapshot {src_desc} as {}/{name}", self.t.snapshots))?;
        fault::point(points.0);
        let nested = self.nested(src_info.id)?;
        if nested.is_empty() {
            return Ok(());
        }
        let dst =
            open_dir_beneath(dst_dir, name).ctx(|| format!("open {}/{name}", self.t.snapshots))?;
        for (rel, id) in &nested {
            let child =
                open_dir_beneath(src, rel).ctx(|| format!("open {src_desc}/{}", lossy(rel)))?;
            let cinfo = io::subvol_info(child.as_fd())
                .ctx(|| format!("GET_SUBVOL_INFO {src_desc}/{}", lossy(rel)))?;
            if cinfo.id != *id {
                return Err(Error::Refused(format!(
                    "{src_desc}/{} is not subvolume {id} (something is mounted over it?)",
                    lossy(rel)
                )));
            }
            let (parent, base) = split_os(rel);
            let pdir = open_dir_beneath(&dst, parent)
                .ctx(|| format!("open {}/{name}/{}", self.t.snapshots, lossy(parent)))?;
            match rustix::fs::unlinkat(&pdir, base, rustix::fs::AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!(
                            "remove placeholder {}/{name}/{}",
                            self.t.snapshots,
                            lossy(rel)
                        ),
                        e,
                    ))
                }
            }
            io::snap_create(pdir.as_fd(), child.as_fd(), base, false).ctx(|| {
                format!(
                    "snapshot nested {src_desc}/{} into {}/{name}",
                    lossy(rel),
                    self.t.snapshots
                )
            })?;
            fault::point(points.1);
        }
        Ok(())
    }

    /// Make `<snapshots>/<rel>` and every subvolume nested in it read-only, children first (once a
    /// parent is read-only nothing below it may change its entries). Already read-only ones are
    /// left alone, so this is safe to repeat after a crash.
    fn make_tree_readonly(&self, snaps: &OwnedFd, rel: &str) -> Result<()> {
        let top =
            open_dir_beneath(snaps, rel).ctx(|| format!("open {}/{rel}", self.t.snapshots))?;
        let info = io::subvol_info(top.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{rel}", self.t.snapshots))?;
        let nested = self.nested(info.id)?;
        let paths = nested
            .iter()
            .rev()
            .map(|(p, _)| join_os(OsStr::new(rel), p))
            .chain(std::iter::once(OsString::from(rel)));
        for path in paths {
            let f = open_dir_beneath(snaps, &path)
                .ctx(|| format!("open {}/{}", self.t.snapshots, lossy(&path)))?;
            let flags = io::get_flags(f.as_fd())
                .ctx(|| format!("get flags of {}/{}", self.t.snapshots, lossy(&path)))?;
            if flags & io::SUBVOL_RDONLY == 0 {
                io::set_flags(f.as_fd(), flags | io::SUBVOL_RDONLY)
                    .ctx(|| format!("make {}/{} read-only", self.t.snapshots, lossy(&path)))?;
            }
        }
        Ok(())
    }

    /// Every subvolume of the tree at `fd` (subvolume `id`) is read-only.
    fn tree_readonly(&self, fd: &OwnedFd, nested: &[(OsString, u64)]) -> bool {
        let ro = |f: &OwnedFd| io::get_flags(f.as_fd()).is_ok_and(|x| x & io::SUBVOL_RDONLY != 0);
        ro(fd)
            && nested
                .iter()
                .all(|(p, _)| open_dir_beneath(fd, p).is_ok_and(|f| ro(&f)))
    }

    fn root_info(&self) -> Result<Option<(OwnedFd, io::SubvolInfo)>> {
        let Some(fd) = self.root_fd()? else {
            return Ok(None);
        };
        if !is_subvol_root(&fd).ctx(|| "fstat root")? {
            return Err(Error::Refused(format!(
                "root {} on {} is a plain directory, not a subvolume; create it with `btrfs subvolume create`",
                self.t.root, self.t.source
            )));
        }
        let info =
            io::subvol_info(fd.as_fd()).ctx(|| format!("GET_SUBVOL_INFO {}", self.t.root))?;
        Ok(Some((fd, info)))
    }
}

impl Fs for Btrfs {
    dirs::top_fs!("btrfs on");

    fn entries(&mut self) -> Result<Vec<RawEntry>> {
        let snaps = self.snaps_fd()?;
        let mut out = Vec::new();
        for (name, _) in dirs::entries(&snaps).ctx(|| format!("read {}", self.t.snapshots))? {
            let mut facts = Facts::default();
            let st = rustix::fs::statat(&snaps, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            match st {
                Ok(st) if st.st_mode & 0o170000 == 0o100000 => facts.file = true,
                Ok(st) if st.st_mode & 0o170000 == 0o040000 => {
                    if let Ok(fd) = open_dir_beneath(&snaps, &name) {
                        if is_subvol_root(&fd).unwrap_or(false) {
                            let info = io::subvol_info(fd.as_fd()).ctx(|| {
                                format!("GET_SUBVOL_INFO {}/{}", self.t.snapshots, lossy(&name))
                            })?;
                            let nested = self.nested(info.id)?;
                            facts.tree = true;
                            facts.readonly = self.tree_readonly(&fd, &nested);
                            facts.nested = nested.into_iter().map(|(p, _)| p).collect();
                            facts.id = info.id.to_string();
                        } else {
                            facts.dir = true;
                        }
                    }
                }
                _ => {}
            }
            if let Some(n) = name.to_str() {
                let old = crate::layout::classify(&name);
                let pin_name = match &old {
                    layout::Class::Kept { name, .. } => Some(name.as_str()),
                    layout::Class::OldRoot { .. } => Some(n),
                    _ => None,
                };
                facts.pinned = pin_name.is_some_and(|p| pins::has(&snaps, p));
            }
            out.push(RawEntry { name, facts });
        }
        Ok(out)
    }

    fn root(&mut self) -> Result<Option<RootFacts>> {
        let Some((fd, info)) = self.root_info()? else {
            return Ok(None);
        };
        let nested = self.nested(info.id)?;
        let mi = mounts::read_mountinfo()?;
        let by_path = mounts::mounted_below(&mi, self.t.dev.0, self.t.dev.1, &self.t.root);
        let by_id = mi
            .iter()
            .filter(|m| (m.major, m.minor) == self.t.dev)
            .find(|m| {
                m.super_opt("subvolid")
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|id| id == info.id || nested.iter().any(|(_, n)| *n == id))
            });
        // Nothing to keep: an empty root (whatever its generation: reading it may update atimes),
        // or a snapshot (blank template, restored old root) that no transaction touched since it
        // was made, or the root we built and recorded, unchanged since. A plain subvolume can be
        // created *and filled* within one transaction, so for those the generation alone proves
        // nothing.
        let recorded = self
            .snaps_fd()
            .ok()
            .map(|s| record::read(&s))
            .unwrap_or_default();
        let fresh = dirs::is_empty_dir(&fd).ctx(|| format!("read root {}", self.t.root))?
            || (info.generation == info.otransid && !uuid_zero(&info.parent_uuid))
            || recorded.iter().any(|b| b.key == record_key(&info));
        Ok(Some(RootFacts {
            began: info.otime,
            fresh,
            id: info.id.to_string(),
            describe: format!("{} (subvolume {})", self.t.root, info.id),
            mounted_at: by_path.or(by_id).map(|m| m.mount_point.clone()),
        }))
    }

    fn refusals(&mut self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        if let Some((_, info)) = self.root_info()? {
            if io::default_subvol(self.t.fd.as_fd()).ctx(|| "read the default subvolume")?
                == info.id
            {
                v.push(format!(
                    "root {} is the default subvolume of {}, which btrfs cannot delete; run `btrfs subvolume set-default 5 <mountpoint>` and mount the root with subvol={}",
                    self.t.root, self.t.source, self.t.root
                ));
            }
        }
        Ok(v)
    }

    fn root_unchanged_since_copy(&mut self, copy: &str) -> Result<bool> {
        let Some((_, root)) = self.root_info()? else {
            return Ok(false);
        };
        let snaps = self.snaps_fd()?;
        let Ok(fd) = open_dir_beneath(&snaps, copy) else {
            return Ok(false);
        };
        let c = io::subvol_info(fd.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{copy}", self.t.snapshots))?;
        // The copy is a snapshot of the root taken after the root's last change.
        Ok(!uuid_zero(&root.uuid) && c.parent_uuid == root.uuid && c.otransid >= root.generation)
    }

    fn is_sealed_copy(&mut self, _kept: &str, _old: &str) -> Result<bool> {
        // Sealing is in place (flags, then one rename): `.kept.N` and `N` never both come from one
        // root, so they are two different roots.
        Ok(false)
    }

    fn create_snapshots_location(&mut self) -> Result<()> {
        self.t.create_snapshots_location(io::subvol_create)
    }

    fn build(&mut self, name: &str, src: &RootSource) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let points = (Point::NewRootCreated, Point::NewRootChild);
        match src {
            RootSource::Empty => {
                io::subvol_create(snaps.as_fd(), OsStr::new(name))
                    .ctx(|| format!("create empty subvolume {}/{name}", self.t.snapshots))?;
                fault::point(Point::NewRootCreated);
                // Empty: fresh by being empty; it began when it was created (its otime).
                return Ok(());
            }
            RootSource::Blank(b) => {
                let fd =
                    open_dir_beneath(&self.t.fd, b).ctx(|| format!("open blank template {b}"))?;
                self.clone_tree(&fd, b, &snaps, name, points)?;
            }
            RootSource::OldRoot(n) => {
                let fd = open_dir_beneath(&snaps, n)
                    .ctx(|| format!("open old root {}/{n}", self.t.snapshots))?;
                self.clone_tree(
                    &fd,
                    &format!("{}/{n}", self.t.snapshots),
                    &snaps,
                    name,
                    points,
                )?;
            }
        }
        // Assembling nested subvolumes changed the new root after its snapshot was taken:
        // commit, and record its generation so the next run knows nothing has touched it.
        io::sync(self.t.fd.as_fd())
            .ctx(|| format!("commit btrfs transaction on {}", self.t.source))?;
        let nr =
            open_dir_beneath(&snaps, name).ctx(|| format!("open {}/{name}", self.t.snapshots))?;
        let info = io::subvol_info(nr.as_fd()).ctx(|| "GET_SUBVOL_INFO new root")?;
        let current = self
            .root_info()?
            .map(|(_, i)| format!("btrfs:{}:", hex(&i.uuid)));
        let new = Built {
            key: record_key(&info),
            began: info.otime,
            source: src.clone(),
        };
        record::add(
            &snaps,
            &self.t.snapshots,
            |b| current.as_ref().is_some_and(|u| b.key.starts_with(u)),
            new,
        )
    }

    fn copy_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let root = open_dir_beneath(&self.t.fd, &self.t.root)
            .ctx(|| format!("open root {}", self.t.root))?;
        self.clone_tree(
            &root,
            &self.t.root,
            &snaps,
            name,
            (Point::CopyStaged, Point::CopyNested),
        )
    }

    fn move_root(&mut self, to: &str) -> Result<()> {
        self.t.move_root(to)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.t.rename(&self.snaps_fd()?, from, to)?;
        fault::point(Point::RenameDone);
        Ok(())
    }

    fn seal(&mut self, kept: &str, to: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        match open_dir_beneath(&snaps, kept) {
            Ok(_) => {}
            // Already sealed by an earlier, interrupted run.
            Err(Errno::NOENT) if open_dir_beneath(&snaps, to).is_ok() => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}/{kept}", self.t.snapshots), e)),
        }
        self.make_tree_readonly(&snaps, kept)?;
        fault::point(Point::SealReadonly);
        self.t.rename(&snaps, kept, to)?;
        fault::point(Point::SealCommitted);
        Ok(())
    }

    fn destroy(&mut self, name: &str) -> Result<()> {
        self.destroy_in_snapshots(name)
    }

    fn sync(&mut self) -> Result<()> {
        io::sync(self.t.fd.as_fd())
            .ctx(|| format!("commit btrfs transaction on {}", self.t.source))?;
        Ok(())
    }

    /// A read-only snapshot of the root (and its nested subvolumes) as `.baseline`, built as
    /// `.incomplete.baseline` and swapped in with `RENAME_EXCHANGE`.
    fn take_baseline(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let staging = layout::BASELINE_STAGING;
        // A leftover from an interrupted run.
        self.destroy_in_snapshots(staging)?;
        let root = open_dir_beneath(&self.t.fd, &self.t.root)
            .ctx(|| format!("open root {} on {}", self.t.root, self.t.source))?;
        self.clone_tree(
            &root,
            &self.t.root,
            &snaps,
            &staging,
            (Point::BaselineStaged, Point::BaselineStaged),
        )?;
        self.make_tree_readonly(&snaps, &staging)?;
        match rustix::fs::renameat_with(&snaps, staging, &snaps, BASELINE, RenameFlags::EXCHANGE) {
            Ok(()) => self.destroy_in_snapshots(&staging)?,
            Err(Errno::NOENT) => self.t.rename(&snaps, &staging, BASELINE)?,
            Err(e) => {
                return Err(Error::sys(
                    format!("swap {}/{staging} with {BASELINE}", self.t.snapshots),
                    e,
                ))
            }
        }
        Ok(())
    }
}

#[cfg(feature = "tools")]
impl Browse for Btrfs {
    dirs::top_paths!();

    fn entry_nested(&mut self, _name: &str) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }

    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        let Ok(snaps) = self.snaps_fd() else {
            return Ok(None);
        };
        Ok(match open_dir_beneath(&snaps, BASELINE) {
            Ok(fd) if is_subvol_root(&fd).unwrap_or(false) => Some(self.t.entry_path(BASELINE)),
            _ => None,
        })
    }

    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }

    #[cfg(feature = "tools")]
    fn changed_since_baseline(&mut self) -> Result<Option<super::Changed>> {
        self.baseline_changes()
    }

    #[cfg(not(feature = "tools"))]
    fn changed_since_baseline(&mut self) -> Result<Option<super::Changed>> {
        Ok(None)
    }

    #[cfg(feature = "tools")]
    fn exclusive_bytes(&mut self, name: &str) -> Result<Option<(u64, bool)>> {
        let snaps = self.snaps_fd()?;
        let fd =
            open_dir_beneath(&snaps, name).ctx(|| format!("open {}/{name}", self.t.snapshots))?;
        let id = io::subvol_info(fd.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{name}", self.t.snapshots))?
            .id;
        inspect::qgroup_exclusive(fd.as_fd(), id).ctx(|| "read btrfs quota groups")
    }

    #[cfg(not(feature = "tools"))]
    fn exclusive_bytes(&mut self, _name: &str) -> Result<Option<(u64, bool)>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parents_of_nested_subvolumes_are_made_writable() {
        let nested: Vec<(OsString, u64)> = ["var/lib/machines", "var/lib/machines/inner", "srv"]
            .iter()
            .enumerate()
            .map(|(i, p)| (OsString::from(p), 300 + i as u64))
            .collect();
        for (rel, want) in [
            ("", true),
            ("var/lib/machines", true),
            ("var/lib/machines/inner", false),
            ("srv", false),
            ("var/lib/mach", false),
            ("var", true),
        ] {
            assert_eq!(has_nested_below(OsStr::new(rel), &nested), want, "{rel}");
        }
        assert!(!has_nested_below(OsStr::new(""), &[]));
        assert_eq!(
            split_os(OsStr::new("a/b/c")),
            (OsStr::new("a/b"), OsStr::new("c"))
        );
        assert_eq!(split_os(OsStr::new("c")), (OsStr::new(""), OsStr::new("c")));
    }
}
