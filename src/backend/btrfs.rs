//! btrfs backend: mounts the top level (subvolid=5) privately and works with subvolume ioctls.
//! Deletions are by subvolume id, after proving through the root tree's back references that the
//! victim sits in the snapshots location (where only the retired root and our own old roots live).

use super::btrfs_ioctl as io;
use super::*;
use crate::error::{Context, Error, Result};
use crate::fault;
use crate::mounts::{self, Mounted};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use std::path::{Path, PathBuf};

#[path = "btrfs_inspect.rs"]
pub mod inspect;

pub struct Btrfs {
    device: String,
    root: String,
    snapshots: String,
    blank: Option<String>,
    mount: Option<Mounted>,
    top: OwnedFd,
    /// major:minor of the filesystem as mountinfo shows it.
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

fn is_subvol_root(fd: impl AsFd) -> Result<bool, Errno> {
    let st = rustix::fs::fstat(fd)?;
    Ok(st.st_ino == io::FIRST_FREE_OBJECTID && (st.st_mode & 0o170000) == 0o040000)
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", path),
    }
}

fn dir_is_empty(fd: &OwnedFd) -> Result<bool> {
    let dir = rustix::fs::Dir::read_from(fd).ctx(|| "read the root directory")?;
    for e in dir {
        let e = e.ctx(|| "read the root directory")?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

fn uuid_zero(u: &[u8; 16]) -> bool {
    u.iter().all(|&b| b == 0)
}

/// Is any of `nested` (paths relative to the victim) strictly below `rel` ("" = the victim)?
fn has_nested_below(rel: &str, nested: &[(String, u64)]) -> bool {
    nested.iter().any(|(p, _)| is_below(p, rel))
}

impl Btrfs {
    /// Mount the top level of `device` on a private directory. The caller has entered a private
    /// mount namespace.
    pub fn open(
        device: &str,
        members: &[String],
        root: &str,
        snapshots: &str,
        blank: Option<&str>,
    ) -> Result<Btrfs> {
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
        let target = PathBuf::from(format!("{}/top", mounts::RUN_DIR));
        let mount = Mounted::mount(
            device,
            &target,
            "btrfs",
            rustix::mount::MountFlags::NOATIME,
            "subvolid=5",
        )
        .map_err(|e| match e.errno() {
            Some(n) if n == libc_einval() => Error::Refused(format!(
                "cannot mount {device} as btrfs (EINVAL); is it a complete btrfs filesystem? for a multi-device filesystem all members must be present"
            )),
            _ => e,
        })?;
        let top = open_dir_beneath(rustix::fs::CWD, &target.to_string_lossy())
            .or_else(|_| {
                rustix::fs::open(
                    &target,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            })
            .ctx(|| format!("open {}", target.display()))?;
        if !io::is_btrfs(&top).ctx(|| "statfs top level")? {
            return Err(Error::Refused(format!("{device} did not mount as btrfs")));
        }
        // Root items (generation numbers) are updated only at transaction commit. If the
        // filesystem is mounted elsewhere too (after boot; tests), recent writes may not be
        // committed yet: commit now so "unchanged since created/kept" is decided on real data.
        io::sync(top.as_fd()).ctx(|| format!("commit btrfs transaction on {device}"))?;
        let mi = mounts::read_mountinfo()?;
        let me = mi
            .iter()
            .rev()
            .find(|m| Path::new(&m.mount_point) == target)
            .ok_or_else(|| Error::Other(format!("our mount of {device} is not in mountinfo")))?;
        let dev = (me.major, me.minor);
        Ok(Btrfs {
            device: device.to_string(),
            root: root.to_string(),
            snapshots: snapshots.to_string(),
            blank: blank.map(str::to_string),
            mount: Some(mount),
            top,
            dev,
        })
    }

    fn snaps_fd(&self) -> Result<OwnedFd> {
        open_dir_beneath(&self.top, &self.snapshots).ctx(|| {
            format!(
                "open snapshots location {} on {}",
                self.snapshots, self.device
            )
        })
    }

    /// The subvolume id containing directory `fd`, and the directory's inode number: together
    /// they identify "this directory" in root back-references.
    fn dir_identity(&self, fd: impl AsFd) -> Result<(u64, u64)> {
        let info = io::subvol_info(fd.as_fd()).ctx(|| "GET_SUBVOL_INFO")?;
        let st = rustix::fs::fstat(fd).ctx(|| "fstat")?;
        Ok((info.id, st.st_ino))
    }

    /// Nested subvolumes of subvolume `id`: (relative path, id), parents before children.
    fn nested(&self, id: u64) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), id)];
        while let Some((prefix, pid)) = stack.pop() {
            let mut kids = io::child_refs(self.top.as_fd(), pid).ctx(|| {
                format!(
                    "list child subvolumes of subvolume {pid} on {}",
                    self.device
                )
            })?;
            kids.sort_by(|a, b| a.2.cmp(&b.2));
            for (cid, dirid, name) in kids.into_iter().rev() {
                let dir = match io::ino_lookup(self.top.as_fd(), pid, dirid) {
                    Ok(d) => d,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(Error::sys(format!("INO_LOOKUP in subvolume {pid}"), e)),
                };
                let rel = format!("{prefix}{dir}{name}");
                out.push((rel.clone(), cid));
                stack.push((format!("{rel}/"), cid));
            }
        }
        // Stack order is depth-first pre-order already: a child is pushed after its parent.
        Ok(out)
    }

    /// Prove that subvolume `id` is a direct entry of the snapshots location, then delete it and
    /// everything nested in it, children first.
    fn destroy_in_snapshots(&self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (s_sub, s_ino) = self.dir_identity(&snaps)?;
        let fd = match open_dir_beneath(&snaps, name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}/{name}", self.snapshots), e)),
        };
        if !is_subvol_root(&fd).ctx(|| "fstat")? {
            return Err(Error::Refused(format!(
                "{}/{name} is not a subvolume; refusing to delete it (remove it by hand if it is yours)",
                self.snapshots
            )));
        }
        let info = io::subvol_info(fd.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{name}", self.snapshots))?;
        let proven = io::parent_ref(self.top.as_fd(), info.id)
            .ctx(|| format!("look up the parent of subvolume {}", info.id))?
            .is_some_and(|(p, dirid, n)| p == s_sub && dirid == s_ino && n == name);
        if !proven {
            return Err(Error::Refused(format!(
                "subvolume {} ({}/{name}) is not proven to be inside the snapshots location; not deleting it",
                info.id, self.snapshots
            )));
        }
        let nested = self.nested(info.id)?;
        // Parents must be writable for their children to be unlinked; leaves are deleted as they
        // are (each flag change is a transaction commit, the slowest part of pruning).
        let parents: Vec<String> = std::iter::once(String::new())
            .chain(nested.iter().map(|(p, _)| p.clone()))
            .filter(|r| has_nested_below(r, &nested))
            .map(|r| {
                if r.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}/{r}")
                }
            })
            .collect();
        for rel in &parents {
            let f =
                open_dir_beneath(&snaps, rel).ctx(|| format!("open {}/{rel}", self.snapshots))?;
            let flags = io::get_flags(f.as_fd())
                .ctx(|| format!("get flags of {}/{rel}", self.snapshots))?;
            if flags & io::SUBVOL_RDONLY != 0 {
                io::set_flags(f.as_fd(), flags & !io::SUBVOL_RDONLY)
                    .ctx(|| format!("make {}/{rel} writable for deletion", self.snapshots))?;
            }
        }
        fault::point("delete:writable");
        for (rel, id) in nested.iter().rev() {
            // Each child's back reference must lead into the victim tree we enumerated.
            let parent_ok = io::parent_ref(self.top.as_fd(), *id)
                .ctx(|| format!("look up the parent of subvolume {id}"))?
                .is_some_and(|(p, _, _)| p == info.id || nested.iter().any(|(_, n)| *n == p));
            if !parent_ok {
                return Err(Error::Refused(format!(
                    "nested subvolume {id} ({}/{name}/{rel}) moved while deleting; stopping",
                    self.snapshots
                )));
            }
            io::snap_destroy_by_id(snaps.as_fd(), *id).ctx(|| {
                format!(
                    "delete nested subvolume {}/{name}/{rel} (id {id})",
                    self.snapshots
                )
            })?;
            fault::point("delete:child-deleted");
        }
        io::snap_destroy_by_id(snaps.as_fd(), info.id).ctx(|| {
            format!(
                "delete subvolume {}/{name} (id {})",
                self.snapshots, info.id
            )
        })?;
        fault::point("delete:deleted");
        Ok(())
    }

    /// Snapshot `src` (with its nested subvolumes, recursively) into `dst_dir/name`. Nested
    /// snapshots replace the empty placeholder directories a btrfs snapshot leaves.
    fn clone_tree(
        &self,
        src: &OwnedFd,
        src_desc: &str,
        dst_dir: &OwnedFd,
        name: &str,
        point: &str,
    ) -> Result<()> {
        let src_info =
            io::subvol_info(src.as_fd()).ctx(|| format!("GET_SUBVOL_INFO {src_desc}"))?;
        io::snap_create(dst_dir.as_fd(), src.as_fd(), name, false)
            .ctx(|| format!("snapshot {src_desc} as {}/{name}", self.snapshots))?;
        fault::point(point);
        let nested = self.nested(src_info.id)?;
        if nested.is_empty() {
            return Ok(());
        }
        let dst =
            open_dir_beneath(dst_dir, name).ctx(|| format!("open {}/{name}", self.snapshots))?;
        for (rel, id) in &nested {
            let child = open_dir_beneath(src, rel).ctx(|| format!("open {src_desc}/{rel}"))?;
            let cinfo = io::subvol_info(child.as_fd())
                .ctx(|| format!("GET_SUBVOL_INFO {src_desc}/{rel}"))?;
            if cinfo.id != *id {
                return Err(Error::Refused(format!(
                    "{src_desc}/{rel} is not subvolume {id} (something is mounted over it?)"
                )));
            }
            let (parent, base) = split_parent(rel);
            let pdir = open_dir_beneath(&dst, parent)
                .ctx(|| format!("open {}/{name}/{parent}", self.snapshots))?;
            match rustix::fs::unlinkat(&pdir, base, rustix::fs::AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::sys(
                        format!("remove placeholder {}/{name}/{rel}", self.snapshots),
                        e,
                    ))
                }
            }
            io::snap_create(pdir.as_fd(), child.as_fd(), base, false).ctx(|| {
                format!(
                    "snapshot nested {src_desc}/{rel} into {}/{name}",
                    self.snapshots
                )
            })?;
            fault::point(if point == "keep:staged" {
                "keep:nested"
            } else {
                "new-root:child"
            });
        }
        Ok(())
    }

    fn root_parent_and_base(&self) -> Result<(OwnedFd, String)> {
        let (parent, base) = split_parent(&self.root);
        let fd = open_dir_beneath(&self.top, parent).ctx(|| {
            format!(
                "open the directory holding root {} on {}",
                self.root, self.device
            )
        })?;
        Ok((fd, base.to_string()))
    }

    /// Make `<snapshots>/<rel>` and every subvolume nested in it read-only, children first (once a
    /// parent is read-only nothing below it may change its entries). Already read-only ones are
    /// left alone, so this is safe to repeat after a crash.
    fn make_tree_readonly(&self, snaps: &OwnedFd, rel: &str) -> Result<()> {
        let top = open_dir_beneath(snaps, rel).ctx(|| format!("open {}/{rel}", self.snapshots))?;
        let info = io::subvol_info(top.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{rel}", self.snapshots))?;
        let nested = self.nested(info.id)?;
        let paths = nested
            .iter()
            .rev()
            .map(|(p, _)| format!("{rel}/{p}"))
            .chain(std::iter::once(rel.to_string()));
        for path in paths {
            let f =
                open_dir_beneath(snaps, &path).ctx(|| format!("open {}/{path}", self.snapshots))?;
            let flags = io::get_flags(f.as_fd())
                .ctx(|| format!("get flags of {}/{path}", self.snapshots))?;
            if flags & io::SUBVOL_RDONLY == 0 {
                io::set_flags(f.as_fd(), flags | io::SUBVOL_RDONLY)
                    .ctx(|| format!("make {}/{path} read-only", self.snapshots))?;
            }
        }
        Ok(())
    }

    fn rename_noreplace(
        &self,
        from_dir: &OwnedFd,
        from: &str,
        to_dir: &OwnedFd,
        to: &str,
        what: &str,
    ) -> Result<()> {
        rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
            .ctx(|| what.to_string())
    }
}

fn libc_einval() -> i32 {
    Errno::INVAL.raw_os_error()
}

impl Backend for Btrfs {
    fn inventory(&mut self) -> Result<Inventory> {
        let mut inv = Inventory {
            fs: format!("btrfs on {}", self.device),
            moves_roots: true,
            ..Default::default()
        };
        let mi = mounts::read_mountinfo()?;
        // The root.
        match open_dir_beneath(&self.top, &self.root) {
            Err(Errno::NOENT) => {}
            Err(Errno::XDEV) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                return Err(Error::Refused(format!(
                    "root path {} escapes the filesystem, contains a symlink or is not a directory; name a subvolume relative to the top level, e.g. @root",
                    self.root
                )))
            }
            Err(e) => return Err(Error::sys(format!("open root {} on {}", self.root, self.device), e)),
            Ok(fd) => {
                if !is_subvol_root(&fd).ctx(|| "fstat root")? {
                    return Err(Error::Refused(format!(
                        "root {} on {} is a plain directory, not a subvolume; create it with `btrfs subvolume create`",
                        self.root, self.device
                    )));
                }
                let info = io::subvol_info(fd.as_fd()).ctx(|| format!("GET_SUBVOL_INFO {}", self.root))?;
                let nested = self.nested(info.id)?;
                let by_path = mounts::mounted_below(&mi, self.dev.0, self.dev.1, &self.root);
                let by_id = mi.iter().filter(|m| (m.major, m.minor) == self.dev).find(|m| {
                    m.super_opt("subvolid")
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|id| id == info.id || nested.iter().any(|(_, n)| *n == id))
                });
                inv.root_mounted_at = by_path.or(by_id).map(|m| m.mount_point.clone());
                if io::default_subvol(self.top.as_fd()).ctx(|| "read the default subvolume")? == info.id {
                    inv.refusals.push(format!(
                        "root {} is the default subvolume of {}, which btrfs cannot delete; run `btrfs subvolume set-default 5 <mountpoint>` and mount the root with subvol={}",
                        self.root, self.device, self.root
                    ));
                }
                // Nothing to keep: an empty root (whatever its generation: reading it may update
                // atimes), or a snapshot (blank template, restored old root) that no transaction
                // touched since it was made. A plain subvolume can be created *and filled* within
                // one transaction, so for those the generation alone proves nothing.
                let fresh = dir_is_empty(&fd)?
                    || (info.generation == info.otransid && !uuid_zero(&info.parent_uuid))
                    || self.fresh_record() == Some((info.uuid, info.generation));
                inv.root = Some(RootState {
                    began: info.otime,
                    fresh,
                    kept_as: None,
                    nested: nested.iter().map(|(p, _)| p.clone()).collect(),
                    retire_as: format!("{RETIRED_ROOT_PREFIX}{}", info.id),
                    describe: format!("{} (subvolume {})", self.root, info.id),
                });
                // Old roots come below; remember what identifies "this root kept, unchanged".
                self.scan_snapshots(&mut inv, Some((info.uuid, info.generation)))?;
            }
        }
        if inv.root.is_none() {
            self.scan_snapshots(&mut inv, None)?;
            inv.root_replacement_pending = !inv.unsealed.is_empty()
                || inv
                    .retired
                    .iter()
                    .any(|n| n.starts_with(RETIRED_ROOT_PREFIX));
        }
        if let Some(b) = &self.blank {
            inv.blank_exists = Some(match open_dir_beneath(&self.top, b) {
                Ok(fd) => is_subvol_root(&fd).unwrap_or(false),
                Err(_) => false,
            });
        }
        Ok(inv)
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
        self.destroy_in_snapshots(name)?;
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
                let fd =
                    open_dir_beneath(&self.top, b).ctx(|| format!("open blank template {b}"))?;
                self.clone_tree(&fd, b, &snaps, NEW_ROOT, "new-root:created")?;
            }
            RootSource::OldRoot(n) => {
                let fd = open_dir_beneath(&snaps, n)
                    .ctx(|| format!("open old root {}/{n}", self.snapshots))?;
                self.clone_tree(
                    &fd,
                    &format!("{}/{n}", self.snapshots),
                    &snaps,
                    NEW_ROOT,
                    "new-root:created",
                )?;
            }
        }
        fault::point("new-root:placeholders");
        if *src != RootSource::Empty {
            // Assembling nested subvolumes changed the new root after its snapshot was taken:
            // commit, and record its generation so the next run knows nothing has touched it.
            io::sync(self.top.as_fd())
                .ctx(|| format!("commit btrfs transaction on {}", self.device))?;
            let nr = open_dir_beneath(&snaps, NEW_ROOT)
                .ctx(|| format!("open {}/{NEW_ROOT}", self.snapshots))?;
            let info = io::subvol_info(nr.as_fd()).ctx(|| "GET_SUBVOL_INFO new root")?;
            let hex: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = format!("{FRESH_RECORD}.tmp");
            let f = rustix::fs::openat(
                &snaps,
                &tmp,
                OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .ctx(|| format!("write {}/{tmp}", self.snapshots))?;
            rustix::io::write(&f, format!("{hex} {}\n", info.generation).as_bytes())
                .ctx(|| format!("write {}/{tmp}", self.snapshots))?;
            rustix::fs::renameat(&snaps, &tmp, &snaps, FRESH_RECORD)
                .ctx(|| format!("rename {}/{tmp}", self.snapshots))?;
        }
        Ok(())
    }

    fn keep_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let root =
            open_dir_beneath(&self.top, &self.root).ctx(|| format!("open root {}", self.root))?;
        let staging = format!("{INCOMPLETE_PREFIX}{name}");
        self.clone_tree(&root, &self.root, &snaps, &staging, "keep:staged")?;
        self.make_tree_readonly(&snaps, &staging)?;
        fault::point("keep:readonly");
        self.rename_noreplace(
            &snaps,
            &staging,
            &snaps,
            name,
            &format!("rename {}/{staging} to {name}", self.snapshots),
        )?;
        fault::point("keep:committed");
        Ok(())
    }

    fn retire_root(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        let rfd = open_dir_beneath(&pfd, &base).ctx(|| format!("open root {}", self.root))?;
        let id = io::subvol_info(rfd.as_fd())
            .ctx(|| "GET_SUBVOL_INFO root")?
            .id;
        let to = format!("{RETIRED_ROOT_PREFIX}{id}");
        self.rename_noreplace(
            &pfd,
            &base,
            &snaps,
            &to,
            &format!("move root {} to {}/{to}", self.root, self.snapshots),
        )?;
        fault::point("retire:moved");
        Ok(())
    }

    fn activate_new_root(&mut self) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        self.rename_noreplace(
            &snaps,
            NEW_ROOT,
            &pfd,
            &base,
            &format!("move {}/{NEW_ROOT} to {}", self.snapshots, self.root),
        )?;
        fault::point("activate:moved");
        Ok(())
    }

    fn move_root_aside(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        let to = format!("{KEPT_PREFIX}{name}");
        self.rename_noreplace(
            &pfd,
            &base,
            &snaps,
            &to,
            &format!("move root {} to {}/{to}", self.root, self.snapshots),
        )?;
        fault::point("move:moved");
        Ok(())
    }

    fn seal_old_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let from = format!("{KEPT_PREFIX}{name}");
        let fd = match open_dir_beneath(&snaps, &from) {
            Ok(fd) => fd,
            // Already sealed by an earlier, interrupted run.
            Err(Errno::NOENT) if open_dir_beneath(&snaps, name).is_ok() => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}/{from}", self.snapshots), e)),
        };
        drop(fd);
        self.make_tree_readonly(&snaps, &from)?;
        fault::point("seal:readonly");
        self.rename_noreplace(
            &snaps,
            &from,
            &snaps,
            name,
            &format!("rename {}/{from} to {name}", self.snapshots),
        )?;
        fault::point("seal:sealed");
        Ok(())
    }

    fn delete_retired(&mut self, name: &str) -> Result<()> {
        if !(name.starts_with(RETIRED_ROOT_PREFIX)
            || name.starts_with(DELETING_PREFIX)
            || name == BASELINE)
        {
            return Err(Error::Refused(format!(
                "{name} is not a retired root or a pruned old root"
            )));
        }
        self.destroy_in_snapshots(name)
    }

    fn delete_old_root(&mut self, name: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let to = format!("{DELETING_PREFIX}{name}");
        self.rename_noreplace(
            &snaps,
            name,
            &snaps,
            &to,
            &format!("rename old root {}/{name} for deletion", self.snapshots),
        )?;
        fault::point("delete-old:renamed");
        if let Err(e) = pins::forget(&snaps, &self.snapshots, name) {
            log::warn!("{e}");
        }
        self.destroy_in_snapshots(&to)
    }

    fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()> {
        let snaps = self.snaps_fd()?;
        pins::set(&snaps, &self.snapshots, name, pinned)?;
        self.sync()
    }

    fn sync(&mut self) -> Result<()> {
        io::sync(self.top.as_fd())
            .ctx(|| format!("commit btrfs transaction on {}", self.device))?;
        fault::point("sync:done");
        Ok(())
    }

    fn old_root_path(&mut self, name: &str) -> Result<PathBuf> {
        let p = self.mount_path().join(&self.snapshots).join(name);
        Ok(p)
    }

    fn root_path(&mut self) -> Result<PathBuf> {
        Ok(self.mount_path().join(&self.root))
    }

    fn take_baseline(&mut self) -> Result<()> {
        self.baseline_take()
    }

    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        self.baseline_dir()
    }

    fn changed_since_baseline(&mut self) -> Result<Option<super::Changed>> {
        self.baseline_changes()
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

/// `<snapshots>/.fresh-root`: "uuid generation" of the last root we assembled from a template.
const FRESH_RECORD: &str = ".fresh-root";

impl Btrfs {
    fn fresh_record(&self) -> Option<([u8; 16], u64)> {
        let snaps = open_dir_beneath(&self.top, &self.snapshots).ok()?;
        let f = rustix::fs::openat(
            &snaps,
            FRESH_RECORD,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut buf = [0u8; 128];
        let n = rustix::io::read(&f, &mut buf).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let (hex, generation) = text.trim().split_once(' ')?;
        let mut uuid = [0u8; 16];
        for (i, b) in uuid.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some((uuid, generation.parse().ok()?))
    }

    fn mount_path(&self) -> PathBuf {
        self.mount
            .as_ref()
            .map(|m| m.path.clone())
            .unwrap_or_default()
    }

    /// Fill old roots, leftovers and retired entries from the snapshots location. `root` is the
    /// current root's (uuid, generation), to recognise "already kept, unchanged".
    fn scan_snapshots(&self, inv: &mut Inventory, root: Option<([u8; 16], u64)>) -> Result<()> {
        let snaps = match open_dir_beneath(&self.top, &self.snapshots) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(()),
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
        let mut names: Vec<String> = Vec::new();
        let dir = rustix::fs::Dir::read_from(&snaps).ctx(|| format!("read {}", self.snapshots))?;
        for e in dir {
            let e = e.ctx(|| format!("read {}", self.snapshots))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if n != "." && n != ".." {
                names.push(n);
            }
        }
        names.sort();
        for n in names {
            let (time, seq) = match classify_entry(&n) {
                Entry::Leftover => {
                    inv.leftovers.push(n);
                    continue;
                }
                Entry::Retired => {
                    inv.retired.push(n);
                    continue;
                }
                Entry::Unsealed(name) => {
                    inv.unsealed.push(name.to_string());
                    continue;
                }
                Entry::BadKept => {
                    return Err(Error::Refused(format!(
                        "{}/{n} is not a name this program makes; move it away by hand",
                        self.snapshots
                    )));
                }
                Entry::Baseline => {
                    inv.baseline = true;
                    continue;
                }
                Entry::OldRoot(time, seq) => (time, seq),
                Entry::Other => continue,
            };
            let Ok(fd) = open_dir_beneath(&snaps, &n) else {
                continue;
            };
            if !is_subvol_root(&fd).unwrap_or(false) {
                continue;
            }
            let info = io::subvol_info(fd.as_fd())
                .ctx(|| format!("GET_SUBVOL_INFO {}/{n}", self.snapshots))?;
            if let Some((uuid, generation)) = root {
                if !uuid_zero(&uuid) && info.parent_uuid == uuid && info.otransid >= generation {
                    if let Some(r) = inv.root.as_mut() {
                        r.kept_as = Some(n.clone());
                    }
                }
            }
            let nested = self.nested(info.id)?.into_iter().map(|(p, _)| p).collect();
            inv.old_roots.push(OldRoot {
                pinned: pins::has(&snaps, &n),
                name: n,
                time,
                seq,
                kept_at: Some(info.otime),
                readonly: info.readonly,
                nested,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::has_nested_below;

    #[test]
    fn only_parents_of_nested_subvolumes_are_made_writable() {
        let nested: Vec<(String, u64)> = ["var/lib/machines", "var/lib/machines/inner", "srv"]
            .iter()
            .enumerate()
            .map(|(i, p)| (p.to_string(), 300 + i as u64))
            .collect();
        for (rel, want) in [
            ("", true),
            ("var/lib/machines", true),
            ("var/lib/machines/inner", false),
            ("srv", false),
            ("var/lib/mach", false),
            ("var", true),
        ] {
            assert_eq!(has_nested_below(rel, &nested), want, "{rel}");
        }
        assert!(!has_nested_below("", &[]));
    }
}
