//! btrfs inspection for `diff`, `baseline` and `status` (a child module of `btrfs`, so it works on
//! the same private mount and helpers):
//!
//! - [`Btrfs::baseline_take`]: a read-only snapshot of the root (and its nested subvolumes) as
//!   `<snapshots>/.baseline`, built as `.baseline.new` and swapped in with `RENAME_EXCHANGE`;
//! - [`Btrfs::baseline_changes`]: the paths that changed since the baseline, found the way
//!   `btrfs subvolume find-new` does: `TREE_SEARCH` on the root's file tree for tree blocks
//!   written after the baseline's transaction, then per inode item its own `transid` and ctime;
//!   changed directories are compared entry by entry with the baseline.
//!
//! What is detected (per subvolume, the root and each nested one):
//! - created, modified (content or metadata: mode, owner, xattrs) files, links and directories:
//!   their inode item carries a newer transid and ctime;
//! - renamed or moved entries, and new hard links: the directory they now sit in changed, and the
//!   entry's name there is missing from the baseline (or names another inode); a moved directory
//!   is listed with its whole subtree, since every path below it is new;
//! - a whole nested subvolume created after the baseline: listed completely.
//!
//! Not reported: deletions (nothing is left on the root to lose: the entry is gone), entries whose
//! only change is an access time (relatime updates rewrite the inode item, but the inode keeps the
//! ctime it has in the baseline, which is compared to the nanosecond), and
//! files with more than one name reached only through `INODE_EXTREF` items (hundreds of links in
//! one directory): those are found through their directory's comparison only.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use super::*;
use crate::diff::walk;

/// Fields of a `btrfs_inode_item` (packed, 160 bytes) that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeItem {
    pub transid: u64,
    pub mode: u32,
    pub ctime: u64,
}

pub fn parse_inode_item(d: &[u8]) -> Option<InodeItem> {
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?)) };
    Some(InodeItem {
        transid: u64_at(8)?,
        mode: u32::from_le_bytes(d.get(52..56)?.try_into().ok()?),
        ctime: u64_at(124)?,
    })
}

/// Exclusive bytes of subvolume `id` from its level-0 qgroup, when quotas are enabled:
/// `Ok(None)` when quotas are off; the flag says the numbers are marked inconsistent.
pub fn qgroup_exclusive(fd: BorrowedFd, id: u64) -> Result<Option<(u64, bool)>, Errno> {
    let status = match io::search(fd, io::QUOTA_TREE_OBJECTID, 0, 240) {
        Ok(s) => s,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let inconsistent = status
        .first()
        .and_then(|it| it.data.get(16..24))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .is_some_and(|f| f & (1 << 2) != 0);
    let infos = io::search(fd, io::QUOTA_TREE_OBJECTID, 0, io::QGROUP_INFO_KEY)?;
    Ok(infos
        .iter()
        .find(|it| it.offset == id)
        .and_then(|it| it.data.get(24..32))
        .and_then(|b| b.try_into().ok())
        .map(|b| (u64::from_le_bytes(b), inconsistent)))
}

use rustix::fd::BorrowedFd;

fn is_dir_mode(mode: u32) -> bool {
    mode & 0o170000 == 0o040000
}

fn join(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}/{rel}"),
    }
}

/// Add `rel` and everything below it (within its subvolume) to `out`.
fn add_subtree(fd: &OwnedFd, rel: &str, out: &mut BTreeSet<String>) -> Result<()> {
    out.insert(rel.to_string());
    let mut p = walk::Progress::new("listing new directories");
    walk::walk(fd, rel, true, &mut p, &mut |e| {
        out.insert(e.path);
    })?;
    p.done();
    Ok(())
}

use std::collections::{BTreeSet, HashMap};

/// `rel` is the same inode in the root and the baseline, with the same ctime (to the ns).
fn unchanged_ctime(rfd: &OwnedFd, bfd: &OwnedFd, rel: &str) -> bool {
    let at = if rel.is_empty() { "." } else { rel };
    match (
        rustix::fs::statat(rfd, at, AtFlags::SYMLINK_NOFOLLOW),
        rustix::fs::statat(bfd, at, AtFlags::SYMLINK_NOFOLLOW),
    ) {
        (Ok(a), Ok(b)) => {
            a.st_ino == b.st_ino && a.st_ctime == b.st_ctime && a.st_ctime_nsec == b.st_ctime_nsec
        }
        _ => false,
    }
}

impl Btrfs {
    fn baseline_fd(&self) -> Result<Option<OwnedFd>> {
        let snaps = match open_dir_beneath(&self.t.fd, &self.t.snapshots) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::sys(format!("open {}", self.t.snapshots), e)),
        };
        match open_dir_beneath(&snaps, BASELINE) {
            Ok(fd) if is_subvol_root(&fd).unwrap_or(false) => Ok(Some(fd)),
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::sys(
                format!("open {}/{BASELINE}", self.t.snapshots),
                e,
            )),
        }
    }

    /// Paths (relative to the root, no leading `/`) changed since the baseline; `None` without a
    /// baseline of this root.
    pub(super) fn baseline_changes(&mut self) -> Result<Option<Vec<String>>> {
        let Some(base) = self.baseline_fd()? else {
            return Ok(None);
        };
        let root = open_dir_beneath(&self.t.fd, &self.t.root)
            .ctx(|| format!("open root {} on {}", self.t.root, self.t.source))?;
        let rinfo =
            io::subvol_info(root.as_fd()).ctx(|| format!("GET_SUBVOL_INFO {}", self.t.root))?;
        let binfo = io::subvol_info(base.as_fd())
            .ctx(|| format!("GET_SUBVOL_INFO {}/{BASELINE}", self.t.snapshots))?;
        if binfo.parent_uuid != rinfo.uuid {
            log::warn!(
                "{}/{BASELINE} is not a snapshot of the current root {}; ignoring it (run `ephemeral-root baseline` again)",
                self.t.snapshots,
                self.t.root
            );
            return Ok(None);
        }
        // Inode updates sit in btrfs's delayed-inode queue until a commit: commit first, so the
        // search sees every change made so far.
        io::sync(self.t.fd.as_fd())
            .ctx(|| format!("commit btrfs transaction on {}", self.t.source))?;
        let mut out = BTreeSet::new();
        self.changes_in(&root, rinfo.id, &base, &binfo, "", &mut out)?;
        let bnested: HashMap<String, u64> = self
            .nested(binfo.id)?
            .into_iter()
            .map(|(p, i)| (p.to_string_lossy().into_owned(), i))
            .collect();
        for (rel, _) in self.nested(rinfo.id)? {
            let rel = rel.to_string_lossy().into_owned();
            let rfd =
                open_dir_beneath(&root, &rel).ctx(|| format!("open {}/{rel}", self.t.root))?;
            let ri = io::subvol_info(rfd.as_fd())
                .ctx(|| format!("GET_SUBVOL_INFO {}/{rel}", self.t.root))?;
            if bnested.contains_key(&rel) {
                let bfd = open_dir_beneath(&base, &rel)
                    .ctx(|| format!("open {}/{BASELINE}/{rel}", self.t.snapshots))?;
                let bi = io::subvol_info(bfd.as_fd())
                    .ctx(|| format!("GET_SUBVOL_INFO {}/{BASELINE}/{rel}", self.t.snapshots))?;
                if bi.parent_uuid == ri.uuid {
                    self.changes_in(&rfd, ri.id, &bfd, &bi, &rel, &mut out)?;
                    continue;
                }
            }
            add_subtree(&rfd, &rel, &mut out)?;
        }
        out.remove("");
        Ok(Some(out.into_iter().collect()))
    }

    /// Changes inside one subvolume (`rfd`, tree `tree`) against its baseline snapshot.
    fn changes_in(
        &self,
        rfd: &OwnedFd,
        tree: u64,
        bfd: &OwnedFd,
        binfo: &io::SubvolInfo,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) -> Result<()> {
        let since_gen = binfo.otransid;
        let mut changed: Vec<(u64, bool)> = Vec::new();
        io::search_since(
            self.t.fd.as_fd(),
            tree,
            (io::FIRST_FREE_OBJECTID, io::INODE_ITEM_KEY, 0),
            (io::LAST_FREE_OBJECTID, io::INODE_ITEM_KEY, u64::MAX),
            since_gen + 1,
            |it| {
                if it.key.1 != io::INODE_ITEM_KEY {
                    return;
                }
                if let Some(ii) = parse_inode_item(it.data) {
                    if ii.transid > since_gen {
                        changed.push((it.key.0, is_dir_mode(ii.mode)));
                    }
                }
            },
        )
        .ctx(|| {
            format!("TREE_SEARCH subvolume {tree} for changes since transaction {since_gen}")
        })?;
        let rdev = rustix::fs::fstat(rfd).ctx(|| "fstat root")?.st_dev;
        for (ino, is_dir) in changed {
            let rel = match io::ino_lookup(self.t.fd.as_fd(), tree, ino) {
                Ok(p) => p.to_string_lossy().trim_end_matches('/').to_string(),
                // Unlinked but still open, or gone since the search.
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    return Err(Error::sys(
                        format!("INO_LOOKUP inode {ino} in subvolume {tree}"),
                        e,
                    ))
                }
            };
            if unchanged_ctime(rfd, bfd, &rel) {
                // Same inode with the same change time in the baseline: only the access time
                // moved (relatime), which rewrites the inode item but changes nothing.
                continue;
            }
            if !is_dir {
                out.insert(join(prefix, &rel));
                continue;
            }
            let Ok(rdir) = open_dir_beneath(rfd, &rel) else {
                continue;
            };
            let bdir = match open_dir_beneath(bfd, &rel) {
                Ok(b) => b,
                // New directory: its parent changed too and lists it with everything below.
                Err(_) => continue,
            };
            let same_dir = match (rustix::fs::fstat(&rdir), rustix::fs::fstat(&bdir)) {
                (Ok(a), Ok(b)) => a.st_ino == b.st_ino,
                _ => false,
            };
            if !same_dir {
                continue;
            }
            let names = walk::read_names(&rdir).ctx(|| format!("read {}/{rel}", self.t.root))?;
            for n in names {
                let Ok(st) = rustix::fs::statat(&rdir, n.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                else {
                    continue;
                };
                if st.st_dev != rdev {
                    continue; // a nested subvolume: handled on its own
                }
                let is_new = match rustix::fs::statat(&bdir, n.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(b) => {
                        b.st_ino != st.st_ino || (b.st_mode & 0o170000) != (st.st_mode & 0o170000)
                    }
                    Err(_) => true,
                };
                if !is_new {
                    continue;
                }
                let path = join(prefix, &join(&rel, &n));
                if is_dir_mode(st.st_mode as u32) {
                    match walk::open_dir(&rdir, &n) {
                        Ok(fd) => add_subtree(&fd, &path, out)?,
                        Err(_) => {
                            out.insert(path);
                        }
                    }
                } else {
                    out.insert(path);
                }
            }
        }
        Ok(())
    }
}

use rustix::fs::AtFlags;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_item_fields() {
        let mut d = vec![0u8; 160];
        d[8..16].copy_from_slice(&42u64.to_le_bytes());
        d[52..56].copy_from_slice(&0o040755u32.to_le_bytes());
        d[124..132].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        let ii = parse_inode_item(&d).unwrap();
        assert_eq!(
            ii,
            InodeItem {
                transid: 42,
                mode: 0o040755,
                ctime: 1_700_000_000
            }
        );
        assert!(is_dir_mode(ii.mode));
        assert!(parse_inode_item(&d[..100]).is_none());
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("v/m", ""), "v/m");
        assert_eq!(join("v/m", "a"), "v/m/a");
    }
}
