//! What `diff`, `check` and `status` say before the reboot about the persisted paths and the
//! store (`store =`, `persist =`, `critical =` in the config):
//!
//! - **hidden**: content on the root *at* a persisted path (read through the backend's private
//!   mount of the root, so under a bind mount too) that the store's copy lacks: missing there, or
//!   newer there on the root. Hidden by the bind mount and erased at the next boot (or, where the
//!   path is not mounted yet, replaced by the store's copy at the next boot). Entries the store
//!   holds a newer version of are counted as superseded, not hidden. A hidden entry named like a
//!   critical file ([`classify::critical_reason`]) is an error.
//! - **missing**: declared persisted paths that the store does not hold, and `critical` paths that
//!   are on the root but not declared; critical ones are errors (the next boot may not come up, or
//!   comes up as another machine), the others warnings.
//! - **stray**: entries of the store no declaration covers (nix-community/impermanence#228), with
//!   their sizes, as information.
//!
//! Entries are compared by kind, size, modification time and symlink text; file content is read
//! only for files of equal size whose root copy is newer ([`classify::compare`]). The store is
//! walked without crossing mounts; what a declaration covers is not walked.

pub mod classify;
pub mod output;

use crate::backend::Backend;
use crate::config::Settings;
use crate::error::Error;
use crate::escape::cut;
use crate::walk::{Event, Kind, Meta, Options, Walker};
use classify::{Compared, Coverage};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// How many hidden paths are named per persisted path.
pub const EXAMPLES: usize = 5;

/// Content on the root at one persisted path that the store lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    /// The persisted path (as declared).
    pub path: Vec<u8>,
    /// A mount point now (bind-mounted): the content is hidden; otherwise the next boot's mount
    /// replaces it.
    pub mounted: bool,
    pub entries: u64,
    pub bytes: u64,
    /// Entries the store holds a newer version of (not counted above).
    pub superseded: u64,
    /// The first few hidden paths.
    pub examples: Vec<Vec<u8>>,
    /// Hidden entries that are critical files: (path, why).
    pub critical: Vec<(Vec<u8>, &'static str)>,
}

/// A persisted path the store does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub path: Vec<u8>,
    /// Why it is an error, if it is.
    pub critical: Option<&'static str>,
    /// Declared persistent (false: a `critical` path that no declaration covers).
    pub declared: bool,
    /// The root has it (so `persist` can still copy it).
    pub on_root: bool,
}

/// An entry of the store that no declaration covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// Its path below the store, as on the root.
    pub path: Vec<u8>,
    pub entries: u64,
    pub bytes: u64,
}

/// Everything the checks found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// `None`: no store configured, nothing could be checked (see `notes`).
    pub store: Option<Vec<u8>>,
    pub hidden: Vec<Hidden>,
    pub missing: Vec<Missing>,
    pub stray: Vec<Stray>,
    /// What could not be checked, and why.
    pub notes: Vec<String>,
}

impl Findings {
    pub fn hidden_entries(&self) -> u64 {
        self.hidden.iter().map(|h| h.entries).sum()
    }
    pub fn hidden_bytes(&self) -> u64 {
        self.hidden.iter().map(|h| h.bytes).sum()
    }
    pub fn missing_persisted(&self) -> u64 {
        self.missing.len() as u64
    }
    /// Missing critical paths, and critical files among the hidden entries.
    pub fn missing_critical(&self) -> u64 {
        self.missing.iter().filter(|m| m.critical.is_some()).count() as u64
            + self
                .hidden
                .iter()
                .map(|h| h.critical.len() as u64)
                .sum::<u64>()
    }
    pub fn stray_bytes(&self) -> u64 {
        self.stray.iter().map(|s| s.bytes).sum()
    }
    /// Errors: what makes `diff` and `check` exit non-zero.
    pub fn errors(&self) -> u64 {
        self.missing_critical()
    }
}

const HOW: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn lstat(base: BorrowedFd<'_>, rel: &[u8]) -> Option<Meta> {
    crate::copy::lstat_beneath(base, rel)
        .ok()
        .flatten()
        .map(|st| Meta::from_statx(&st))
}

fn readlink(base: BorrowedFd<'_>, rel: &[u8]) -> Option<Vec<u8>> {
    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let d = crate::copy::open_dir_beneath(base, parent).ok()?;
    rustix::fs::readlinkat(&d, OsStr::from_bytes(name), Vec::new())
        .ok()
        .map(|t| t.into_bytes())
}

/// Whether the regular files `rel` below `a` and `b` hold the same bytes.
fn same_content(a: BorrowedFd<'_>, b: BorrowedFd<'_>, rel: &[u8]) -> bool {
    let open = |base: BorrowedFd<'_>| -> Option<std::fs::File> {
        let fd = rustix::fs::openat2(
            base,
            OsStr::from_bytes(rel),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            HOW,
        )
        .ok()?;
        Some(std::fs::File::from(fd))
    };
    let (Some(mut fa), Some(mut fb)) = (open(a), open(b)) else {
        return false;
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match std::io::Read::read(&mut fa, &mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return matches!(std::io::Read::read(&mut fb, &mut bb[..1]), Ok(0));
        }
        if std::io::Read::read_exact(&mut fb, &mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Root entry `rel` (meta `m`, symlink text `link`) against the store.
fn judge(
    root: BorrowedFd<'_>,
    store: BorrowedFd<'_>,
    rel: &[u8],
    m: &Meta,
    link: Option<&[u8]>,
) -> Compared {
    let s = lstat(store, rel);
    let s_link = match &s {
        Some(sm) if sm.kind == Kind::Symlink => readlink(store, rel),
        _ => None,
    };
    match classify::compare(m, link, s.as_ref().map(|sm| (sm, s_link.as_deref()))) {
        Compared::ReadContent if same_content(root, store, rel) => Compared::Same,
        Compared::ReadContent => Compared::Newer,
        c => c,
    }
}

/// Content on the root at persisted path `p` that the store lacks.
fn hidden_at(
    root: &OwnedFd,
    store: &OwnedFd,
    store_path: &[u8],
    p: &[u8],
    critical: &[Vec<u8>],
    mounted: bool,
) -> Option<Hidden> {
    let rel = &p[1..];
    let m = lstat(root.as_fd(), rel)?;
    let mut h = Hidden {
        path: p.to_vec(),
        mounted,
        ..Default::default()
    };
    let count = |h: &mut Hidden, path: &[u8], meta: &Meta| {
        h.entries += 1;
        h.bytes += meta.size;
        if h.examples.len() < EXAMPLES {
            h.examples.push(path.to_vec());
        }
        if meta.kind != Kind::Dir {
            if let Some(why) = classify::critical_reason(path, critical) {
                h.critical.push((path.to_vec(), why));
            }
        }
    };
    let link = (m.kind == Kind::Symlink)
        .then(|| readlink(root.as_fd(), rel))
        .flatten();
    // impermanence's `method = "symlink"`: a link into the store is the persisted path itself.
    if link
        .as_deref()
        .is_some_and(|l| classify::under(l, store_path))
    {
        return None;
    }
    lstat(store.as_fd(), rel)?;
    match judge(root.as_fd(), store.as_fd(), rel, &m, link.as_deref()) {
        Compared::Same | Compared::ReadContent if m.kind == Kind::Dir => {}
        Compared::Same | Compared::ReadContent => return None,
        Compared::Older => {
            h.superseded += 1;
            return Some(h);
        }
        Compared::Missing | Compared::Newer => {
            count(&mut h, p, &m);
            return Some(h);
        }
    }
    // Both directories: every entry below.
    let dir = crate::copy::open_dir_beneath(root.as_fd(), rel).ok()?;
    let sdir = crate::copy::open_dir_beneath(store.as_fd(), rel).ok();
    let opts = Options {
        cross_mounts: true,
        ..Options::default()
    };
    let mut w = Walker::new(dir.as_fd(), p, opts).ok()?;
    let mut missing_dir: Option<Vec<u8>> = None;
    while let Some(ev) = w.next() {
        let Event::Entry(e) = ev else { continue };
        if missing_dir
            .as_ref()
            .is_some_and(|d| classify::under(e.path, d))
        {
            count(&mut h, e.path, &e.meta);
            continue;
        }
        missing_dir = None;
        let Some(sdir) = &sdir else {
            count(&mut h, e.path, &e.meta);
            continue;
        };
        let sub = &e.path[p.len() + 1..];
        match judge(dir.as_fd(), sdir.as_fd(), sub, &e.meta, e.link) {
            Compared::Same | Compared::ReadContent => {}
            Compared::Older => h.superseded += 1,
            Compared::Newer => count(&mut h, e.path, &e.meta),
            Compared::Missing => {
                if e.meta.kind == Kind::Dir {
                    missing_dir = Some(e.path.to_vec());
                }
                count(&mut h, e.path, &e.meta);
            }
        }
    }
    (h.entries > 0 || h.superseded > 0).then_some(h)
}

/// Entries of the store no declaration covers, each with the size of what is below it.
fn strays(store: &OwnedFd, declared: &[Vec<u8>]) -> Vec<Stray> {
    let mut out: Vec<Stray> = Vec::new();
    let Ok(mut w) = Walker::new(store.as_fd(), b"", Options::default()) else {
        return out;
    };
    // The stray entry whose subtree is being summed: (index in out, its path).
    let mut cur: Option<(usize, Vec<u8>)> = None;
    while let Some(ev) = w.next() {
        let Event::Entry(e) = ev else { continue };
        if let Some((i, top)) = &cur {
            if classify::under(e.path, top) {
                out[*i].entries += 1;
                out[*i].bytes += e.meta.size;
                continue;
            }
            cur = None;
        }
        match classify::coverage(e.path, declared) {
            Coverage::Covered => w.skip_subtree(),
            Coverage::Ancestor => {}
            Coverage::Stray => {
                out.push(Stray {
                    path: e.path.to_vec(),
                    entries: 1,
                    bytes: e.meta.size,
                });
                cur = Some((out.len() - 1, e.path.to_vec()));
            }
        }
    }
    out
}

/// Run the checks with the backend open (the root through its private mount). `None` when there
/// is nothing to check: no store and no persisted path configured.
pub fn gather(b: &mut dyn Backend, s: &Settings) -> Option<Findings> {
    let Some(store) = s.store.clone() else {
        if s.persist.is_empty() {
            return None;
        }
        return Some(Findings {
            notes: vec![
                "persisted paths not checked against the store: no `store =` in the config (the NixOS module sets it when impermanence or preservation declares exactly one location)".into(),
            ],
            ..Default::default()
        });
    };
    let mut f = Findings {
        store: Some(store.clone()),
        ..Default::default()
    };
    let root = match b.root_path().and_then(|p| {
        rustix::fs::open(
            &p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open the root", e))
    }) {
        Ok(fd) => fd,
        Err(e) => {
            f.notes.push(format!("persistence not checked: {e}"));
            return Some(f);
        }
    };
    let declared: Vec<Vec<u8>> = s
        .persist
        .iter()
        .map(|p| normalize(p))
        .filter(|p| p.len() > 1)
        .collect();
    let store_fd = match rustix::fs::openat2(
        rustix::fs::CWD,
        OsStr::from_bytes(&store),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Some(fd),
        Err(e) => {
            f.notes.push(format!(
                "the store {} cannot be opened ({}): every persisted path counts as missing",
                cut(&store),
                std::io::Error::from(e)
            ));
            None
        }
    };
    let mounts: std::collections::HashSet<Vec<u8>> =
        crate::mounts::mount_points().into_iter().collect();
    // (b) Missing from the store.
    for p in &declared {
        let in_store = store_fd
            .as_ref()
            .is_some_and(|sf| lstat(sf.as_fd(), &p[1..]).is_some());
        if !in_store {
            f.missing.push(Missing {
                path: p.clone(),
                critical: classify::critical_reason(p, &s.critical),
                declared: true,
                on_root: lstat(root.as_fd(), &p[1..]).is_some(),
            });
        }
    }
    for c in s
        .critical
        .iter()
        .map(|c| normalize(c))
        .filter(|c| c.len() > 1)
    {
        let covered = declared.iter().any(|d| classify::under(&c, d));
        if f.missing.iter().any(|m| classify::under(&c, &m.path)) {
            continue;
        }
        let in_store = store_fd
            .as_ref()
            .is_some_and(|sf| lstat(sf.as_fd(), &c[1..]).is_some());
        let on_root = lstat(root.as_fd(), &c[1..]).is_some();
        if (covered && !in_store) || (!covered && on_root) {
            f.missing.push(Missing {
                path: c.clone(),
                critical: Some("listed under `critical` in the config"),
                declared: covered,
                on_root,
            });
        }
    }
    let Some(store_fd) = store_fd else {
        return Some(f);
    };
    // (a) Hidden, under each top-level persisted path.
    for p in classify::top_level(&declared) {
        if let Some(h) = hidden_at(
            &root,
            &store_fd,
            &store,
            &p,
            &s.critical,
            mounts.contains(&p),
        ) {
            f.hidden.push(h);
        }
    }
    // (c) Stray.
    f.stray = strays(&store_fd, &declared);
    Some(f)
}

/// `//a/b/` → `/a/b`.
fn normalize(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in p
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}
