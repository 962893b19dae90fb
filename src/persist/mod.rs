//! `persist PATH… [--store DIR] [--dry-run] [--merge] [--bind]`: move state that lives on the
//! ephemeral root into the persistent store before declaring it persistent, so the bind mount that
//! impermanence, preservation or `fileSystems` puts over PATH at the next boot shows the data
//! instead of hiding it (nix-community/impermanence#169).
//!
//! For each PATH (absolute, as on the running system):
//!
//! 1. Where it is, seen from the caller's mount namespace (descriptors taken before the backend
//!    moves the process into a private one): every directory above PATH is opened from `/` with
//!    `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and its mount id compared with `/`'s, so a
//!    PATH below another filesystem's mount point, a PATH that is a mount point, and one that is
//!    bind-mounted from the store (same device and inode as `<store>PATH`) are told apart.
//! 2. What it is on the root: read through the backend's private mount of the root (bind mounts
//!    are not followed, so what a persisted path's bind mount hides is seen), which must be the
//!    running system's `/` (same device and inode).
//! 3. [`rules::judge`]: copy, merge, or one line saying why not; then the writers
//!    ([`procs::writers`]) and the room in the store ([`rules::space`]). Every PATH is checked
//!    before anything is written: a refusal changes nothing.
//! 4. The copy: [`crate::copy::copy_into`] (the engine `restore` uses: fd-relative, never
//!    following a symlink, no mount crossed on the store's side, owner, mode, times, ACLs and
//!    other extended attributes, hard links, holes, reflinks when the store is on the root's
//!    filesystem, one `syncfs`, staged under a temporary name and renamed into place, cleaned up
//!    on SIGINT/SIGTERM/SIGHUP). Setuid/setgid bits and file capabilities are kept: the copy goes
//!    back to the same path with the same owner. Missing parents in the store are created with
//!    the root's owner, mode and times.
//!
//!    `--merge` ([`crate::copy::merge_into`]): copy only what `<store>PATH` lacks, never replacing,
//!    changing or removing anything there; entries present on both sides that differ are listed
//!    as conflicts and left (the root's version stays on the root until the next boot; the command
//!    exits 1). Allowed on paths already persisted: that is how content hidden under a persisted
//!    path's bind mount is saved.
//! 5. The configuration lines to add, in the form `persist_format` names (impermanence,
//!    preservation or `fileSystems` bind mounts), as a Nix attribute set on stdout (comments
//!    above it say what was done), and with `--bind`, a bind mount of `<store>PATH` over PATH in
//!    the caller's mount namespace, once the copy is durable.

mod procs;
pub mod rules;

use crate::cli::Cli;
use crate::config::Settings;
use crate::copy::{self, Dest, Merged, Opts, Src, Summary};
use crate::error::{Context, Error, Result};
use crate::escape::cut;
use crate::signals as interrupt;
use crate::timefmt::human_bytes;
use crate::walk::{Event, Kind, Options, Walker};
use rules::{Action, Facts, Mount};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Statx, StatxFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

const HOW: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn statx_fd(fd: BorrowedFd<'_>) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )
}

fn same_inode(a: &Statx, b: &Statx) -> bool {
    (a.stx_dev_major, a.stx_dev_minor, a.stx_ino) == (b.stx_dev_major, b.stx_dev_minor, b.stx_ino)
}

fn mnt_id(st: &Statx, what: &str) -> Result<u64> {
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(Error::Refused(format!(
            "this kernel does not report mount ids (Linux 5.8 or later is needed), so persist cannot tell whether {what} is on the ephemeral root; nothing was copied"
        )));
    }
    Ok(st.stx_mnt_id)
}

/// The store, opened from the caller's `/` without following a symlink (mounts are crossed:
/// the store is one).
fn open_store(croot: &OwnedFd, store: &[u8]) -> Result<OwnedFd> {
    let shown = cut(store);
    rustix::fs::openat2(
        croot,
        os(&store[1..]),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        HOW,
    )
    .map_err(|e| match e {
        Errno::NOENT => Error::Usage(format!(
            "the store {shown} does not exist; mount the persistent filesystem there, or fix --store / `store =`"
        )),
        Errno::LOOP => Error::Refused(format!(
            "the store's path {shown} goes through a symlink; name the real directory (--store / `store =`)"
        )),
        Errno::NOTDIR => Error::Usage(format!("the store {shown} is not a directory")),
        e => Error::sys(format!("open the store {shown}"), e),
    })
}

/// Where `p` is in the caller's mount namespace ([`Mount`]).
fn locate(croot: &OwnedFd, root_mnt: u64, store: &OwnedFd, p: &[u8]) -> Result<Mount> {
    let comps: Vec<&[u8]> = p[1..].split(|&b| b == b'/').collect();
    let (last, parents) = comps
        .split_last()
        .ok_or_else(|| Error::Usage("empty PATH".into()))?;
    let mut cur: Option<OwnedFd> = None;
    let mut prefix: Vec<u8> = Vec::new();
    let from_store = |st: &Statx, at: &[u8]| {
        copy::lstat_beneath(store.as_fd(), &at[1..])
            .ok()
            .flatten()
            .is_some_and(|s| same_inode(&s, st))
    };
    for c in parents {
        prefix.push(b'/');
        prefix.extend_from_slice(c);
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(croot.as_fd());
        match rustix::fs::openat2(
            base,
            os(c),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            HOW,
        ) {
            Ok(fd) => {
                let st = statx_fd(fd.as_fd()).ctx(|| format!("statx {}", cut(&prefix)))?;
                if mnt_id(&st, "PATH")? != root_mnt {
                    let fs = from_store(&st, &prefix);
                    return Ok(Mount::BelowMount {
                        at: prefix,
                        from_store: fs,
                    });
                }
                cur = Some(fd);
            }
            // Not on the running system (hidden, or only on the root): judged on the root.
            Err(Errno::NOENT) => return Ok(Mount::OnRoot),
            Err(Errno::LOOP) => {
                return Err(Error::Refused(format!(
                    "{}: {} is a symlink on the running system; name the real path",
                    cut(p),
                    cut(&prefix)
                )))
            }
            Err(Errno::NOTDIR) => {
                return Err(Error::Usage(format!(
                    "{}: {} is not a directory",
                    cut(p),
                    cut(&prefix)
                )))
            }
            Err(e) => return Err(Error::sys(format!("open {}", cut(&prefix)), e)),
        }
    }
    let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(croot.as_fd());
    match rustix::fs::statx(
        base,
        os(last),
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    ) {
        Ok(st) if mnt_id(&st, "PATH")? != root_mnt => Ok(Mount::MountPoint {
            from_store: from_store(&st, p),
        }),
        Ok(_) | Err(Errno::NOENT) => Ok(Mount::OnRoot),
        Err(e) => Err(Error::sys(format!("statx {}", cut(p)), e)),
    }
}

/// Whether the mounts `a` and `b` (ids) are of one filesystem (same superblock), so a reflink
/// between them is possible.
fn same_filesystem(mi: &[crate::mounts::MountInfo], a: u64, b: u64) -> bool {
    let dev = |id| mi.iter().find(|m| m.id == id).map(|m| (m.major, m.minor));
    matches!((dev(a), dev(b)), (Some(x), Some(y)) if x == y)
}

/// What a copy of one PATH would write: data bytes (allocated, hard links once), entries, and
/// the files (device, inode) for the writers' check.
#[derive(Debug, Default)]
struct Tally {
    data: u64,
    entries: u64,
    files: HashSet<(u64, u64)>,
}

impl Tally {
    fn add(&mut self, kind: Kind, dev: u64, ino: u64, allocated: u64) {
        self.entries += 1;
        if kind == Kind::File && self.files.insert((dev, ino)) {
            self.data += allocated;
        }
    }
}

/// Count what copying `rel` (below `root`, lstat `st`) writes; with `store_copy` (merge), only
/// the entries `store_copy` lacks.
fn tally(root: &OwnedFd, rel: &[u8], st: &Statx, store_copy: Option<&OwnedFd>) -> Result<Tally> {
    let mut t = Tally::default();
    let meta = crate::walk::Meta::from_statx(st);
    if meta.kind != Kind::Dir {
        if store_copy.is_none() {
            t.add(meta.kind, meta.dev, meta.ino, meta.allocated);
        }
        return Ok(t);
    }
    if store_copy.is_none() {
        t.entries += 1;
    }
    let dir = copy::open_dir_beneath(root.as_fd(), rel)
        .map_err(|e| Error::sys(format!("open /{} on the root", cut(rel)), e))?;
    let opts = Options {
        read_links: false,
        cross_mounts: true,
        ..Options::default()
    };
    let mut w = Walker::new(dir.as_fd(), b"", opts)
        .map_err(|e| Error::sys(format!("read /{} on the root", cut(rel)), e))?;
    let mut missing: Option<Vec<u8>> = None;
    let mut n = 0u32;
    while let Some(ev) = w.next() {
        n = n.wrapping_add(1);
        if n % 1024 == 0 && interrupt::caught().is_some() {
            return Err(Error::Other("interrupted; nothing was copied".into()));
        }
        let Event::Entry(e) = ev else { continue };
        if let Some(sc) = store_copy {
            let inside = missing.as_ref().is_some_and(|m| rules::under(e.path, m));
            if !inside {
                missing = None;
                let absent = copy::lstat_beneath(sc.as_fd(), &e.path[1..])
                    .map(|x| x.is_none())
                    .unwrap_or(false);
                if !absent {
                    continue;
                }
                if e.meta.kind == Kind::Dir {
                    missing = Some(e.path.to_vec());
                }
            }
        }
        t.add(e.meta.kind, e.meta.dev, e.meta.ino, e.meta.allocated);
    }
    Ok(t)
}

/// One PATH through the command.
struct Target {
    path: Vec<u8>,
    mount: Mount,
    is_dir: bool,
    action: Action,
    declared: bool,
    tally: Tally,
    done: Option<Merged>,
}

impl Target {
    fn rel(&self) -> &[u8] {
        &self.path[1..]
    }
}

/// The destination `<store>PATH` below the store's descriptor.
fn dest<'a>(store_fd: &'a OwnedFd, store: &[u8], p: &[u8]) -> Dest<'a> {
    let mut parent: Vec<OsString> = p[1..]
        .split(|&b| b == b'/')
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect();
    let name = parent.pop().unwrap_or_default();
    let mut abs = store.to_vec();
    abs.extend_from_slice(p);
    Dest {
        base: store_fd.as_fd(),
        parent,
        name,
        abs,
    }
}

/// Bind-mount `<store>PATH` over PATH in the current (the caller's) mount namespace, both opened
/// by descriptor without following a symlink.
fn bind(croot: &OwnedFd, store_fd: &OwnedFd, store: &[u8], p: &[u8]) -> Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let open = |base: &OwnedFd, what: &str| {
        rustix::fs::openat2(
            base,
            os(&p[1..]),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            HOW,
        )
        .map_err(|e| Error::sys(format!("open {what}"), e))
    };
    let mut shown_src = store.to_vec();
    shown_src.extend_from_slice(p);
    let src = open(store_fd, &cut(&shown_src))?;
    let tree = rustix::mount::open_tree(
        &src,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| Error::sys(format!("clone a mount of {}", cut(&shown_src)), e))?;
    let dst = open(croot, &cut(p))?;
    rustix::mount::move_mount(
        &tree,
        "",
        &dst,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| Error::sys(format!("bind-mount {} on {}", cut(&shown_src), cut(p)), e))
}

pub fn run(cli: &Cli, s: &Settings, args: &[PathBuf]) -> Result<()> {
    let store = s.store.clone().ok_or_else(|| {
        Error::Usage(format!(
            "no persistent store is configured: pass --store DIR or set `store = /persist` in {} (the NixOS module sets it when impermanence or preservation declares exactly one location)",
            s.config_file
                .as_ref()
                .map(|p| crate::escape::path(p))
                .unwrap_or_else(|| crate::config::DEFAULT_CONFIG.into())
        ))
    })?;
    let mut paths = Vec::new();
    for a in args {
        paths.push(rules::path_arg(a.as_os_str().as_bytes(), &store).map_err(Error::Usage)?);
    }
    if let Some((a, b)) = rules::overlap(&paths) {
        return Err(Error::Usage(format!(
            "{} and {} overlap; name each path once",
            cut(a),
            cut(b)
        )));
    }
    // The caller's view, before the backend moves us into a private mount namespace.
    let croot = rustix::fs::open(
        "/",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /")?;
    let ns = if cli.bind && !cli.dry_run {
        Some(
            rustix::fs::open(
                "/proc/self/ns/mnt",
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| "open /proc/self/ns/mnt")?,
        )
    } else {
        None
    };
    let mountinfo = crate::mounts::read_mountinfo()?;
    let croot_st = statx_fd(croot.as_fd()).ctx(|| "statx /")?;
    let root_mnt = mnt_id(&croot_st, "/")?;
    let store_fd = open_store(&croot, &store)?;
    let store_st = statx_fd(store_fd.as_fd()).ctx(|| format!("statx {}", cut(&store)))?;
    if mnt_id(&store_st, "the store")? == root_mnt {
        return Err(Error::Refused(format!(
            "the store {} is on the ephemeral root itself (it is not a mount point), so the next boot would erase whatever is copied there; mount the persistent filesystem on {}",
            cut(&store),
            cut(&store)
        )));
    }
    let reflink = same_filesystem(&mountinfo, root_mnt, store_st.stx_mnt_id);
    let mut mounts = Vec::new();
    for p in &paths {
        mounts.push(locate(&croot, root_mnt, &store_fd, p)?);
    }
    // Open files, seen from the caller's namespace (their paths are the running system's).
    let writers = procs::open_for_writing();
    let lock = (!cli.dry_run)
        .then(|| crate::lock::Request::new("persist", crate::lock::Mode::Shared, cli.lock_wait));
    let (mut b, _) = crate::protocol::open_locked(s, crate::clock::now(), lock)?;
    interrupt::install();
    let mut targets: Vec<Target> = Vec::new();
    let result = (|| -> Result<()> {
        let root_path = b.root_path()?;
        let root = rustix::fs::open(
            &root_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open root {}", s.root))?;
        let root_st = statx_fd(root.as_fd()).ctx(|| format!("statx root {}", s.root))?;
        if !same_inode(&root_st, &croot_st) {
            return Err(Error::Refused(format!(
                "/ is not the ephemeral root {} of {} (another filesystem or subvolume is mounted there); persist copies from the running root, so run it on the system booted from it",
                s.root,
                b.describe()
            )));
        }
        for (p, mount) in paths.iter().zip(mounts) {
            let rel = &p[1..];
            let on_root = match copy::lstat_beneath(root.as_fd(), rel) {
                Ok(x) => x,
                Err(Errno::LOOP) => {
                    return Err(Error::Refused(format!(
                        "{}: a directory on the way goes through a symlink on the root; name the real path",
                        cut(p)
                    )))
                }
                Err(e) => return Err(Error::sys(format!("lstat {} on the root", cut(p)), e)),
            };
            let in_store = copy::lstat_beneath(store_fd.as_fd(), rel)
                .map_err(|e| {
                    Error::sys(format!("lstat {}{} in the store", cut(&store), cut(p)), e)
                })?
                .is_some();
            let declared = s
                .persist
                .iter()
                .find(|d| rules::under(p, d))
                .map(|d| &d[..]);
            let facts = Facts {
                path: p,
                declared,
                mount: mount.clone(),
                on_root: on_root.is_some(),
                in_store,
            };
            let action = rules::judge(&facts, &store, cli.merge).map_err(|r| {
                if r.usage {
                    Error::Usage(r.line)
                } else {
                    Error::Refused(r.line)
                }
            })?;
            let Some(st) = on_root else {
                return Err(Error::Usage(format!(
                    "{} does not exist on the root",
                    cut(p)
                )));
            };
            let store_copy = match action {
                Action::Merge if st.stx_mode as u32 & 0o170000 == 0o040000 => Some(
                    copy::open_dir_beneath(store_fd.as_fd(), rel)
                        .map_err(|e| Error::sys(format!("open {}{}", cut(&store), cut(p)), e))?,
                ),
                _ => None,
            };
            let merge_leaf = action == Action::Merge && store_copy.is_none();
            let tally = if merge_leaf {
                Tally::default()
            } else {
                tally(&root, rel, &st, store_copy.as_ref())?
            };
            targets.push(Target {
                path: p.clone(),
                mount,
                is_dir: st.stx_mode as u32 & 0o170000 == 0o040000,
                action,
                declared: declared.is_some(),
                tally,
                done: None,
            });
        }
        // Nobody may be writing to what is copied.
        for t in &targets {
            let mine: Vec<&procs::Writer> = writers
                .iter()
                .filter(|x| t.tally.files.contains(&x.id))
                .collect();
            if let Some(first) = mine.first() {
                return Err(Error::Refused(rules::writer_refusal(
                    &t.path,
                    &first.file,
                    first.pid,
                    &first.comm,
                    &first.unit,
                    mine.len() - 1,
                )));
            }
        }
        // Room in the store.
        let vfs = rustix::fs::fstatvfs(&store_fd).ctx(|| format!("statvfs {}", cut(&store)))?;
        let avail = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let data: u64 = targets.iter().map(|t| t.tally.data).sum();
        let entries: u64 = targets.iter().map(|t| t.tally.entries).sum();
        let what = targets
            .iter()
            .map(|t| cut(&t.path))
            .collect::<Vec<_>>()
            .join(", ");
        rules::space(&store, &what, data, entries, reflink, avail).map_err(Error::Refused)?;
        if cli.dry_run {
            return Ok(());
        }
        // Every check passed: copy.
        let opts = Opts {
            force: false,
            replace_type: false,
            keep_privileges: true,
            create_parents: true,
        };
        for i in 0..targets.len() {
            let t = &targets[i];
            let d = dest(&store_fd, &store, &t.path);
            let r = match t.action {
                Action::Copy => copy::copy_into(&root, Src::Root, t.rel(), &d, &opts, &mountinfo)
                    .map(|copied| Merged {
                        copied,
                        added: 1,
                        ..Default::default()
                    }),
                Action::Merge => copy::merge_into(&root, Src::Root, t.rel(), &d, &opts, &mountinfo),
            };
            match r {
                Ok(m) => targets[i].done = Some(m),
                Err(e) => {
                    let done: Vec<String> = targets[..i].iter().map(|t| cut(&t.path)).collect();
                    if !done.is_empty() {
                        log::error!(
                            "{} already copied into {} (complete and durable); {} not",
                            done.join(", "),
                            cut(&store),
                            cut(&targets[i].path)
                        );
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    })();
    b.close()?;
    if let Err(e) = result {
        if let Some(sig) = interrupt::caught() {
            log::error!("{e}");
            interrupt::reraise(sig);
        }
        return Err(e);
    }
    report(
        cli,
        s,
        &store,
        &targets,
        reflink,
        &croot,
        &store_fd,
        ns.as_ref(),
    )
}

fn summary_line(sum: &Summary) -> String {
    let reflinked = if sum.reflinked > 0 {
        format!(" ({} reflinked)", human_bytes(sum.reflinked))
    } else {
        String::new()
    };
    format!(
        "{} files, {} directories, {} hard links, {}{reflinked}",
        sum.files,
        sum.dirs,
        sum.links,
        human_bytes(sum.bytes)
    )
}

/// What was done (comments), the bind mounts, and the configuration lines (a Nix attribute set).
#[allow(clippy::too_many_arguments)]
fn report(
    cli: &Cli,
    s: &Settings,
    store: &[u8],
    targets: &[Target],
    reflink: bool,
    croot: &OwnedFd,
    store_fd: &OwnedFd,
    ns: Option<&OwnedFd>,
) -> Result<()> {
    let mut out = String::new();
    let mut conflicts = 0usize;
    let sharing = if reflink {
        "reflinked: the store is on the root's filesystem"
    } else {
        "copied: the store is on another filesystem"
    };
    for t in targets {
        let p = cut(&t.path);
        let mut sp = store.to_vec();
        sp.extend_from_slice(&t.path);
        let sp = cut(&sp);
        match (&t.done, t.action) {
            (None, Action::Copy) => out.push_str(&format!(
                "# would copy {p} to {sp}: {} entries, {} of data ({sharing})\n",
                t.tally.entries,
                human_bytes(t.tally.data)
            )),
            (None, Action::Merge) => out.push_str(&format!(
                "# would merge {p} into {sp}: {} entries the store lacks, {} of data ({sharing}); nothing in the store is replaced\n",
                t.tally.entries,
                human_bytes(t.tally.data)
            )),
            (Some(m), Action::Copy) => out.push_str(&format!(
                "# copied {p} to {sp}: {}\n",
                summary_line(&m.copied)
            )),
            (Some(m), Action::Merge) => {
                out.push_str(&format!(
                    "# merged {p} into {sp}: {} missing entries copied ({}), {} already there, {} conflicts\n",
                    m.added,
                    summary_line(&m.copied),
                    m.same,
                    m.conflicts.len()
                ));
                for (c, how) in &m.conflicts {
                    log::warn!(
                        "conflict: {c}: {how}; left as it is in the store (the root's version stays on the root until the next boot: compare them and copy by hand what you need)"
                    );
                }
                conflicts += m.conflicts.len();
            }
        }
        if let Some(m) = &t.done {
            for (p, n, e) in &m.copied.xattr_failures {
                log::warn!("could not copy extended attribute {n} of {p}: {e}");
            }
            for p in &m.copied.skipped {
                log::warn!("skipped {p}");
            }
            for p in &m.copied.stale_removed {
                log::info!("removed {p}, a partial copy left by an interrupted copy");
            }
        }
    }
    if cli.dry_run {
        out.push_str("# dry run: nothing was copied\n");
    }
    // --bind, in the caller's mount namespace, now that the copies are durable.
    if cli.bind {
        for t in targets {
            let p = cut(&t.path);
            let line = match (&t.mount, &t.done) {
                (Mount::MountPoint { from_store: true }, _) => {
                    format!("# {p} is already bind-mounted from the store")
                }
                (Mount::BelowMount { at, .. }, _) => format!(
                    "# {p} is not bind-mounted: it is inside {}, which already shows the store's copy",
                    cut(at)
                ),
                (_, None) => format!("# would bind-mount {}{p} on {p}", cut(store)),
                (_, Some(m)) if !m.conflicts.is_empty() => format!(
                    "# {p} is not bind-mounted: resolve the conflicts first (the mount would hide the root's versions)"
                ),
                (_, Some(_)) => {
                    let Some(ns) = ns else { continue };
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Mount),
                    )
                    .ctx(|| "return to the caller's mount namespace for --bind")?;
                    bind(croot, store_fd, store, &t.path)?;
                    format!(
                        "# bind-mounted {}{p} on {p} now (until the next boot; the configuration below mounts it from then on)",
                        cut(store)
                    )
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    let items: Vec<rules::Item> = targets
        .iter()
        .filter(|t| {
            !t.declared
                && !matches!(
                    t.mount,
                    Mount::MountPoint { from_store: true }
                        | Mount::BelowMount {
                            from_store: true,
                            ..
                        }
                )
        })
        .map(|t| (t.path.clone(), t.is_dir))
        .collect();
    if items.is_empty() {
        out.push_str("# already persisted: nothing to add to the configuration\n");
    } else {
        let how = rules::form(s.persist_format);
        out.push_str(&format!(
            "# Add to the NixOS configuration ({how}; `persist_format` in the config); from the next boot the store's copy is bind-mounted over each path:\n"
        ));
        out.push_str(&rules::config_lines(s.persist_format, store, &items));
    }
    print!("{out}");
    if conflicts > 0 {
        return Err(Error::Other(format!(
            "{conflicts} conflict(s) between the root and the store, listed above; nothing in the store was replaced"
        )));
    }
    Ok(())
}
