//! btrfs inspection for `diff`, `baseline` and `status` (a child module of `btrfs`, so it works on
//! the same private mount and helpers):
//!
//! - the baseline itself is taken by `Fs::take_baseline` (btrfs.rs): a read-only snapshot of the
//!   root (and its nested subvolumes) as `<snapshots>/.baseline`, built as `.incomplete.baseline`
//!   and swapped in with `RENAME_EXCHANGE`;
//! - [`Btrfs::baseline_changes`]: the paths that changed since the baseline, found the way
//!   `btrfs subvolume find-new` does: one `TREE_SEARCH_V2` over the root's file tree for the
//!   inode items and inode names (`INODE_REF`) in tree blocks written after the baseline's
//!   transaction. Its cost follows the number of changed tree leaves, not the number of files.
//!
//! Per inode item newer than the baseline (per subvolume, the root and each nested one):
//! - an inode created after the baseline (its generation is newer): listed;
//! - an inode the baseline has too (same number and generation, looked up in the baseline's tree,
//!   one search each): unchanged if its ctime is the same to the nanosecond (only the access time
//!   moved: relatime rewrites the inode item); otherwise a changed file, link or device is listed;
//!   a directory is listed with its whole subtree only if it moved (its name or parent differs
//!   from the baseline's), since every path below a moved directory is new; a directory whose
//!   entries or metadata changed is not itself listed (its new or changed entries are);
//! - a whole nested subvolume created after the baseline: listed completely.
//!
//! Paths are put together from the `INODE_REF` items the search returns (the names of changed
//! inodes), remembered per directory, with one extra search or `INO_LOOKUP` for a directory whose
//! name did not change; so a 30,000-level chain costs one step per level, and inodes deeper than
//! the walker's limit ([`crate::walk::MAX_DEPTH`]) are reported as one "too deep" note for the
//! directory at the limit instead of being listed.
//!
//! Not reported: deletions (nothing is left on the root to lose: the entry is gone), entries whose
//! only change is an access time, and renames of a file that keeps its inode and ctime (btrfs
//! updates the ctime on rename, so in practice none).

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use super::*;
use crate::backend::Changed;
use crate::walk;

/// Fields of a `btrfs_inode_item` (packed, 160 bytes) that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeItem {
    /// The transaction that created the inode.
    pub generation: u64,
    /// The transaction that last wrote the item.
    pub transid: u64,
    pub mode: u32,
    /// (seconds, nanoseconds).
    pub ctime: (u64, u32),
}

pub fn parse_inode_item(d: &[u8]) -> Option<InodeItem> {
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?)) };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?)) };
    Some(InodeItem {
        generation: u64_at(0)?,
        transid: u64_at(8)?,
        mode: u32_at(52)?,
        ctime: (u64_at(124)?, u32_at(132)?),
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

fn join(prefix: &[u8], rel: &[u8]) -> Vec<u8> {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_vec(),
        (false, true) => prefix.to_vec(),
        (false, false) => [prefix, b"/", rel].concat(),
    }
}

/// What the change listing found: paths (relative to the root) and branches it could not list.
#[derive(Default)]
struct Found {
    paths: BTreeSet<Vec<u8>>,
    incomplete: Vec<(Vec<u8>, walk::Problem)>,
}

impl Found {
    fn problem(&mut self, path: &[u8], p: walk::Problem) {
        if p != walk::Problem::Vanished && self.incomplete.len() < 1000 {
            self.incomplete.push((path.to_vec(), p));
        }
    }
}

/// Add `rel` and everything below it (within its subvolume) to `out`, through the walker; what it
/// cannot list goes to `out.incomplete`.
fn add_subtree(fd: &OwnedFd, rel: &[u8], out: &mut Found) -> Result<()> {
    out.paths.insert(rel.to_vec());
    let depth = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
    let opts = walk::Options {
        same_dev: true,
        read_links: false,
        max_depth: walk::MAX_DEPTH.saturating_sub(depth).max(1),
        ..Default::default()
    };
    let mut w = walk::Walker::new(fd.as_fd(), rel, opts)
        .ctx(|| format!("read directory {}", crate::escape::cut(rel)))?;
    while let Some(ev) = w.next() {
        match ev {
            walk::Event::Entry(e) => {
                out.paths.insert(e.path.to_vec());
            }
            walk::Event::Problem(p, why) => out.problem(p, why),
            walk::Event::Mount(_) => {}
        }
    }
    Ok(())
}

use std::collections::{BTreeSet, HashMap, HashSet};

/// The root directory of every btrfs subvolume (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOL_DIR: u64 = 256;

/// Paths of inodes in one subvolume tree from their names (`INODE_REF`: parent directory and
/// name), with depths remembered per directory.
struct Names<'a> {
    fd: BorrowedFd<'a>,
    tree: u64,
    /// inode → (parent directory, name).
    refs: HashMap<u64, (u64, Vec<u8>)>,
    /// Directories whose whole path came from `INO_LOOKUP` (no name found by search).
    looked_up: HashMap<u64, Vec<u8>>,
    depth: HashMap<u64, usize>,
    /// For inodes deeper than `max_depth`: their ancestor at `max_depth`.
    anchor: HashMap<u64, u64>,
    max_depth: usize,
}

/// Where an inode is.
enum Place {
    Path(Vec<u8>),
    /// Deeper than the limit: below this inode (at the limit).
    TooDeep(u64),
    /// Gone, or its name cannot be found.
    Unknown,
}

impl<'a> Names<'a> {
    /// (parent, name) of `ino`: from the search, else one search of its `INODE_REF` items.
    fn parent(&mut self, ino: u64) -> Option<(u64, &[u8])> {
        if !self.refs.contains_key(&ino) {
            let items = io::search(self.fd, self.tree, ino, io::INODE_REF_KEY).ok()?;
            let it = items.first()?;
            let name = io::parse_inode_ref_name(&it.data)?.to_vec();
            self.refs.insert(ino, (it.offset, name));
        }
        self.refs.get(&ino).map(|(p, n)| (*p, n.as_slice()))
    }

    /// Depth below the subvolume's root directory; `None` if a name is missing on the way up.
    /// Climbs through the names the search returned; the first directory it did not return is
    /// asked for its whole path with one `INO_LOOKUP` (or, if that path is longer than the
    /// 4 KB the ioctl can return, for its own name, and the climb goes on).
    fn depth_of(&mut self, ino: u64) -> Option<usize> {
        let mut chain = Vec::new();
        let mut cur = ino;
        let base = loop {
            if cur == SUBVOL_DIR {
                break 0;
            }
            if let Some(d) = self.depth.get(&cur) {
                break *d;
            }
            if let Some(p) = self.looked_up.get(&cur) {
                break p.split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
            }
            if chain.len() > 1 << 20 {
                return None; // a loop of names: not a tree
            }
            if let Some((p, _)) = self.refs.get(&cur) {
                chain.push(cur);
                cur = *p;
                continue;
            }
            match io::ino_lookup(self.fd, self.tree, cur).map(OsString::into_vec) {
                Ok(path) => {
                    let path = path.strip_suffix(b"/").unwrap_or(&path).to_vec();
                    let d = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
                    self.looked_up.insert(cur, path);
                    break d;
                }
                Err(Errno::NAMETOOLONG) => match self.parent(cur) {
                    Some((p, _)) => {
                        chain.push(cur);
                        cur = p;
                    }
                    None => return None,
                },
                Err(_) => return None,
            }
        };
        let mut d = base;
        for &i in chain.iter().rev() {
            d += 1;
            self.depth.insert(i, d);
        }
        self.depth.get(&ino).copied().or(Some(base))
    }

    /// The ancestor of `ino` at `max_depth` (`ino` is deeper).
    fn anchor_of(&mut self, ino: u64) -> Option<u64> {
        let mut chain = Vec::new();
        let mut cur = ino;
        let found = loop {
            if let Some(a) = self.anchor.get(&cur) {
                break *a;
            }
            let (p, _) = self.parent(cur)?;
            if self.depth_of(p)? <= self.max_depth {
                break p;
            }
            chain.push(cur);
            cur = p;
        };
        for i in chain {
            self.anchor.insert(i, found);
        }
        self.anchor.insert(ino, found);
        Some(found)
    }

    /// The path of `ino` (relative to the subvolume), if it is not deeper than the limit.
    fn place(&mut self, ino: u64) -> Place {
        let Some(d) = self.depth_of(ino) else {
            return Place::Unknown;
        };
        if d > self.max_depth {
            return match self.anchor_of(ino) {
                Some(a) => Place::TooDeep(a),
                None => Place::Unknown,
            };
        }
        let mut names: Vec<&[u8]> = Vec::with_capacity(d);
        let mut cur = ino;
        let head: &[u8] = loop {
            if cur == SUBVOL_DIR {
                break b"";
            }
            if let Some(p) = self.looked_up.get(&cur) {
                break p;
            }
            match self.refs.get(&cur) {
                Some((p, n)) if names.len() <= d => {
                    names.push(n);
                    cur = *p;
                }
                _ => return Place::Unknown,
            }
        };
        let mut out = head.to_vec();
        for n in names.iter().rev() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(n);
        }
        Place::Path(out)
    }
}

/// An inode's item and first name in a tree (one ioctl: its items sit together).
fn inode_in(
    s: &mut io::Searcher,
    fd: BorrowedFd,
    tree: u64,
    ino: u64,
) -> Result<(Option<InodeItem>, Option<(u64, Vec<u8>)>), Errno> {
    let mut item = None;
    let mut name = None;
    s.search_batches(
        fd,
        tree,
        (ino, io::INODE_ITEM_KEY, 0),
        (ino, io::INODE_REF_KEY, u64::MAX),
        0,
        1,
        |it| match it.key.1 {
            io::INODE_ITEM_KEY => item = parse_inode_item(it.data),
            io::INODE_REF_KEY if name.is_none() => {
                name = io::parse_inode_ref_name(it.data).map(|n| (it.key.2, n.to_vec()))
            }
            _ => {}
        },
    )?;
    Ok((item, name))
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

    /// Paths (relative to the root, no leading `/`) changed since the baseline, and branches that
    /// could not be listed; `None` without a baseline of this root.
    pub(super) fn baseline_changes(&mut self) -> Result<Option<Changed>> {
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
        let mut out = Found::default();
        self.changes_in(rinfo.id, &root, &binfo, b"", &mut out)?;
        let bnested: HashMap<OsString, u64> = self.nested(binfo.id)?.into_iter().collect();
        for (rel, _) in self.nested(rinfo.id)? {
            let shown = crate::escape::name(&rel);
            let rfd =
                open_dir_beneath(&root, &rel).ctx(|| format!("open {}/{shown}", self.t.root))?;
            let ri = io::subvol_info(rfd.as_fd())
                .ctx(|| format!("GET_SUBVOL_INFO {}/{shown}", self.t.root))?;
            if bnested.contains_key(&rel) {
                let bfd = open_dir_beneath(&base, &rel)
                    .ctx(|| format!("open {}/{BASELINE}/{shown}", self.t.snapshots))?;
                let bi = io::subvol_info(bfd.as_fd())
                    .ctx(|| format!("GET_SUBVOL_INFO {}/{BASELINE}/{shown}", self.t.snapshots))?;
                if bi.parent_uuid == ri.uuid {
                    self.changes_in(ri.id, &rfd, &bi, rel.as_bytes(), &mut out)?;
                    continue;
                }
            }
            add_subtree(&rfd, rel.as_bytes(), &mut out)?;
        }
        out.paths.remove(&b""[..]);
        Ok(Some(Changed {
            paths: out.paths.into_iter().collect(),
            incomplete: out.incomplete,
        }))
    }

    /// Changes inside one subvolume (tree `tree`, open as `rfd`) against its baseline snapshot
    /// (`binfo`); paths get `prefix` in front.
    fn changes_in(
        &self,
        tree: u64,
        rfd: &OwnedFd,
        binfo: &io::SubvolInfo,
        prefix: &[u8],
        out: &mut Found,
    ) -> Result<()> {
        let since = binfo.otransid;
        let fd = self.t.fd.as_fd();
        let mut searcher = io::Searcher::new();
        let mut changed: Vec<(u64, InodeItem)> = Vec::new();
        let mut refs: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
        searcher
            .search(
                fd,
                tree,
                (io::FIRST_FREE_OBJECTID, io::INODE_ITEM_KEY, 0),
                (io::LAST_FREE_OBJECTID, io::INODE_REF_KEY, u64::MAX),
                since + 1,
                |it| match it.key.1 {
                    io::INODE_ITEM_KEY => {
                        if let Some(ii) = parse_inode_item(it.data) {
                            if ii.transid > since {
                                changed.push((it.key.0, ii));
                            }
                        }
                    }
                    io::INODE_REF_KEY => {
                        if let Some(n) = io::parse_inode_ref_name(it.data) {
                            refs.entry(it.key.0)
                                .or_insert_with(|| (it.key.2, n.to_vec()));
                        }
                    }
                    _ => {}
                },
            )
            .ctx(|| {
                format!("TREE_SEARCH subvolume {tree} for changes since transaction {since}")
            })?;
        let prefix_depth = prefix
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .count();
        let mut names = Names {
            fd,
            tree,
            refs,
            looked_up: HashMap::new(),
            depth: HashMap::new(),
            anchor: HashMap::new(),
            max_depth: walk::MAX_DEPTH.saturating_sub(prefix_depth).max(1),
        };
        let mut too_deep: HashSet<u64> = HashSet::new();
        let mut moved: Vec<u64> = Vec::new();
        for (ino, ii) in changed {
            if ino == SUBVOL_DIR {
                continue;
            }
            if ii.generation <= since {
                // An inode the baseline may have too: compare with its item there.
                let (bitem, bname) = inode_in(&mut searcher, fd, binfo.id, ino).ctx(|| {
                    format!(
                        "TREE_SEARCH baseline subvolume {} for inode {ino}",
                        binfo.id
                    )
                })?;
                if let Some(b) = bitem.filter(|b| b.generation == ii.generation) {
                    if b.ctime == ii.ctime {
                        // Only the access time moved (relatime rewrites the inode item).
                        continue;
                    }
                    if is_dir_mode(ii.mode) {
                        let now = names.parent(ino).map(|(p, n)| (p, n.to_vec()));
                        if now != bname {
                            moved.push(ino);
                        }
                        // Entries or metadata changed: its entries speak for themselves.
                        continue;
                    }
                }
            }
            match names.place(ino) {
                Place::Path(p) => {
                    out.paths.insert(join(prefix, &p));
                }
                Place::TooDeep(a) => {
                    too_deep.insert(a);
                }
                Place::Unknown => {}
            }
        }
        // Moved directories: every path below them is new.
        for ino in moved {
            match names.place(ino) {
                Place::Path(p) => match walk::open_dir_beneath(rfd, &p) {
                    Ok(dfd) => add_subtree(&dfd, &join(prefix, &p), out)?,
                    Err(Errno::NOENT) => {}
                    Err(e) => out.problem(&join(prefix, &p), walk::Problem::from_errno(e)),
                },
                Place::TooDeep(a) => {
                    too_deep.insert(a);
                }
                Place::Unknown => {}
            }
        }
        for a in too_deep {
            if let Place::Path(p) = names.place(a) {
                out.problem(&join(prefix, &p), walk::Problem::TooDeep(walk::MAX_DEPTH));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_item_fields() {
        let mut d = vec![0u8; 160];
        d[8..16].copy_from_slice(&42u64.to_le_bytes());
        d[52..56].copy_from_slice(&0o040755u32.to_le_bytes());
        d[124..132].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        d[0..8].copy_from_slice(&7u64.to_le_bytes());
        d[132..136].copy_from_slice(&5u32.to_le_bytes());
        let ii = parse_inode_item(&d).unwrap();
        assert_eq!(
            ii,
            InodeItem {
                generation: 7,
                transid: 42,
                mode: 0o040755,
                ctime: (1_700_000_000, 5)
            }
        );
        assert!(is_dir_mode(ii.mode));
        assert!(parse_inode_item(&d[..100]).is_none());
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"v/m", b""), b"v/m");
        assert_eq!(join(b"v/m", b"a"), b"v/m/a");
    }
}
