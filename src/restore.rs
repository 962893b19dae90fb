//! `restore OLD_ROOT PATH [--to DEST] [--force]`: copy a file or a tree back from an old root.
//!
//! - The source is resolved below the old root's directory with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`: `..` and symlinks anywhere in PATH are refused, so nothing outside
//!   the old root can be read. Below PATH, entries are opened one component at a time with
//!   `O_NOFOLLOW`; symlinks are copied as symlinks.
//! - Preserved: content (`copy_file_range`, which reflinks on btrfs), mode (incl. setuid bits),
//!   owner, access and modification times (ns), symlinks, hard links inside the copied tree,
//!   FIFOs and device nodes, extended attributes (`user.*`, `security.*`, `trusted.*`, and POSIX
//!   ACLs, which are `system.posix_acl_*` attributes). An attribute the destination refuses is
//!   reported, not fatal. Sockets are skipped. The change time cannot be set by anyone.
//! - The copy is built under a temporary name next to the destination and renamed into place, so
//!   a failure leaves no half file. An existing destination is refused unless `--force`; with
//!   `--force` a file is replaced by `rename`, a directory by `RENAME_EXCHANGE`, after which the
//!   old tree is deleted.
//! - Default destination: the same path on the running system. Missing parent directories are
//!   created with the mode, owner and times of the old root's.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use crate::cli::Cli;
use crate::config::Settings;
use crate::diff::walk::read_names;
use crate::error::{Context, Error, Result};
use crate::layout::is_below;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a restore copied.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Extended attributes the destination refused: (path, name, error).
    pub xattr_failures: Vec<(String, String, String)>,
    pub skipped: Vec<String>,
}

impl Summary {
    fn add(&mut self, o: Summary) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.links += o.links;
        self.bytes += o.bytes;
        self.xattr_failures.extend(o.xattr_failures);
        self.skipped.extend(o.skipped);
    }
}

/// PATH as a relative path inside the old root: no `..`, no empty result.
pub fn safe_rel(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::Refused(format!(
                    "{path}: `..` is not allowed; name the path as it is inside the old root"
                )))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(Error::Usage(format!(
            "{path:?} names the whole old root; name a file or directory inside it, e.g. /var/lib/foo"
        )));
    }
    if path.contains('\0') {
        return Err(Error::Usage("PATH contains a NUL byte".into()));
    }
    Ok(parts.join("/"))
}

/// Where `rel` (relative to the root) lives when it is in, or is, one of `nested` (path relative
/// to the root, directory holding that subvolume's tree): (base directory, path below it). The
/// deepest match wins; `None` when `rel` is not inside any of them.
pub fn source_in_nested(rel: &str, nested: &[(String, PathBuf)]) -> Option<(PathBuf, String)> {
    let (p, dir) = nested
        .iter()
        .filter(|(p, _)| rel == p || is_below(rel, p))
        .max_by_key(|(p, _)| p.len())?;
    if rel == p {
        // The nested subvolume itself: read it as an entry of the directory holding it.
        let parent = dir.parent()?.to_path_buf();
        let name = dir.file_name()?.to_str()?.to_string();
        Some((parent, name))
    } else {
        Some((dir.clone(), rel[p.len() + 1..].to_string()))
    }
}

fn resolve_beneath(base: &OwnedFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        base,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

fn escape_error(old: &str, path: &str, e: Errno) -> Error {
    match e {
        Errno::LOOP => Error::Refused(format!(
            "{path} in old root {old} goes through a symlink; name the real path (symlinks in PATH are refused so the copy cannot leave the old root)"
        )),
        Errno::XDEV => Error::Refused(format!("{path} escapes old root {old}; refused")),
        Errno::NOENT => Error::Usage(format!(
            "{path} does not exist in old root {old}; `ephemeral-root diff {old}` shows what it holds"
        )),
        e => Error::sys(format!("open {path} in old root {old}"), e),
    }
}

fn ts(sec: i64, nsec: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: sec as _,
        tv_nsec: nsec as _,
    }
}

fn times_of(st: &Stat) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: ts(st.st_atime as i64, st.st_atime_nsec as i64),
        last_modification: ts(st.st_mtime as i64, st.st_mtime_nsec as i64),
    }
}

fn owner(st: &Stat) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
}

fn perm(st: &Stat) -> Mode {
    Mode::from_raw_mode((st.st_mode as u32 & 0o7777) as _)
}

/// Where extended attributes are read or written: an open file, or a path through
/// `/proc/self/fd` for symlinks and special files (which cannot be opened for I/O).
enum XTarget<'a> {
    Fd(&'a OwnedFd),
    At(&'a OwnedFd, &'a str),
}

impl XTarget<'_> {
    fn proc_path(dir: &OwnedFd, name: &str) -> String {
        format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
    }
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XTarget::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XTarget::At(d, n) => rustix::fs::llistxattr(Self::proc_path(d, n), buf),
        }
    }
    fn get(&self, name: &str, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            XTarget::At(d, n) => rustix::fs::lgetxattr(Self::proc_path(d, n), name, buf),
        }
    }
    fn set(&self, name: &str, value: &[u8]) -> rustix::io::Result<()> {
        let f = rustix::fs::XattrFlags::empty();
        match self {
            XTarget::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, f),
            XTarget::At(d, n) => rustix::fs::lsetxattr(Self::proc_path(d, n), name, value, f),
        }
    }
}

struct Copier {
    summary: Summary,
    /// (dev, ino) of multiply linked files already copied → path relative to `dst_root`.
    links: HashMap<(u64, u64), String>,
    buf: Vec<u8>,
    val: Vec<u8>,
}

impl Copier {
    fn new() -> Copier {
        Copier {
            summary: Summary::default(),
            links: HashMap::new(),
            buf: vec![0; 65536],
            val: vec![0; 65536],
        }
    }

    fn xattrs(&mut self, src: XTarget, dst: XTarget, shown: &str) -> Result<()> {
        let n = match src.list(&mut self.buf) {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(()),
            Err(e) => {
                return Err(Error::sys(
                    format!("list extended attributes of {shown}"),
                    e,
                ))
            }
        };
        let names: Vec<String> = self.buf[..n]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        for name in names {
            let len = match src.get(&name, &mut self.val) {
                Ok(l) => l,
                Err(Errno::NODATA) => continue,
                Err(e) => {
                    return Err(Error::sys(
                        format!("read extended attribute {name} of {shown}"),
                        e,
                    ))
                }
            };
            if let Err(e) = dst.set(&name, &self.val[..len]) {
                self.summary
                    .xattr_failures
                    .push((shown.to_string(), name, e.to_string()));
            }
        }
        Ok(())
    }

    /// Copy `name` from `sdir` to `dname` in `ddir`. `rel` is the destination path relative to
    /// `droot` (for hard links), `shown` the source path for messages.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        sdir: &OwnedFd,
        name: &str,
        ddir: &OwnedFd,
        dname: &str,
        droot: &OwnedFd,
        rel: &str,
        shown: &str,
    ) -> Result<()> {
        let st = rustix::fs::statat(sdir, name, AtFlags::SYMLINK_NOFOLLOW)
            .ctx(|| format!("lstat {shown}"))?;
        let (uid, gid) = owner(&st);
        match st.st_mode as u32 & 0o170000 {
            0o100000 => {
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(st.st_dev as u64, st.st_ino as u64)) {
                        rustix::fs::linkat(droot, first.as_str(), ddir, dname, AtFlags::empty())
                            .ctx(|| format!("hard-link {rel} to {first}"))?;
                        self.summary.links += 1;
                        return Ok(());
                    }
                    self.links
                        .insert((st.st_dev as u64, st.st_ino as u64), rel.to_string());
                }
                let src = rustix::fs::openat(
                    sdir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| format!("open {shown}"))?;
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
                .ctx(|| format!("create {rel}"))?;
                let mut sf = std::fs::File::from(src);
                let mut df = std::fs::File::from(dst);
                let n = std::io::copy(&mut sf, &mut df).ctx(|| format!("copy {shown}"))?;
                let dst = OwnedFd::from(df);
                let src = OwnedFd::from(sf);
                rustix::fs::fchown(&dst, uid, gid).ctx(|| format!("chown {rel}"))?;
                rustix::fs::fchmod(&dst, perm(&st)).ctx(|| format!("chmod {rel}"))?;
                self.xattrs(XTarget::Fd(&src), XTarget::Fd(&dst), shown)?;
                rustix::fs::futimens(&dst, &times_of(&st)).ctx(|| format!("set times of {rel}"))?;
                rustix::fs::fsync(&dst).ctx(|| format!("fsync {rel}"))?;
                self.summary.files += 1;
                self.summary.bytes += n;
            }
            0o040000 => {
                rustix::fs::mkdirat(ddir, dname, Mode::from_raw_mode(0o700))
                    .ctx(|| format!("create directory {rel}"))?;
                let s = crate::diff::walk::open_dir(sdir, name).ctx(|| format!("open {shown}"))?;
                let d = crate::diff::walk::open_dir(ddir, dname).ctx(|| format!("open {rel}"))?;
                let mut names = read_names(&s).ctx(|| format!("read directory {shown}"))?;
                names.sort();
                for n in names {
                    self.copy(
                        &s,
                        &n,
                        &d,
                        &n,
                        droot,
                        &format!("{rel}/{n}"),
                        &format!("{shown}/{n}"),
                    )?;
                }
                rustix::fs::fchown(&d, uid, gid).ctx(|| format!("chown {rel}"))?;
                rustix::fs::fchmod(&d, perm(&st)).ctx(|| format!("chmod {rel}"))?;
                self.xattrs(XTarget::Fd(&s), XTarget::Fd(&d), shown)?;
                rustix::fs::futimens(&d, &times_of(&st)).ctx(|| format!("set times of {rel}"))?;
                self.summary.dirs += 1;
            }
            0o140000 => {
                self.summary.skipped.push(format!("{shown} (socket)"));
            }
            kind => {
                if kind == 0o120000 {
                    let target = rustix::fs::readlinkat(sdir, name, Vec::new())
                        .ctx(|| format!("read symlink {shown}"))?;
                    rustix::fs::symlinkat(target.as_c_str(), ddir, dname)
                        .ctx(|| format!("create symlink {rel}"))?;
                } else {
                    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode as _);
                    rustix::fs::mknodat(ddir, dname, ft, perm(&st), st.st_rdev as _)
                        .ctx(|| format!("create special file {rel}"))?;
                    rustix::fs::chmodat(ddir, dname, perm(&st), AtFlags::empty())
                        .ctx(|| format!("chmod {rel}"))?;
                }
                rustix::fs::chownat(ddir, dname, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .ctx(|| format!("chown {rel}"))?;
                if kind != 0o120000 {
                    // chown may clear setuid/setgid bits: put the mode back.
                    rustix::fs::chmodat(ddir, dname, perm(&st), AtFlags::empty())
                        .ctx(|| format!("chmod {rel}"))?;
                }
                self.xattrs(XTarget::At(sdir, name), XTarget::At(ddir, dname), shown)?;
                rustix::fs::utimensat(ddir, dname, &times_of(&st), AtFlags::SYMLINK_NOFOLLOW)
                    .ctx(|| format!("set times of {rel}"))?;
                self.summary.files += 1;
            }
        }
        Ok(())
    }
}

/// Remove `name` in `dir` and everything below it (our own temporary copies and replaced trees).
pub fn remove_tree(dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if st.st_mode as u32 & 0o170000 == 0o040000 {
        let d = crate::diff::walk::open_dir(dir, name)?;
        // A read-only directory (mode 0555) still lets root unlink; nothing to change.
        for n in read_names(&d)? {
            remove_tree(&d, &n)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
    }
}

fn open_dir_path(p: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Create missing parents of `dest`, copying the metadata of the matching directories of the old
/// root (`base`, `rel_parent`) where they exist.
fn make_parents(base: &OwnedFd, rel_parent: &str, dest_parent: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = dest_parent.to_path_buf();
    let mut r = rel_parent.to_string();
    while rustix::fs::stat(&p).is_err() {
        missing.push((p.clone(), r.clone()));
        match (p.parent(), r.rsplit_once('/')) {
            (Some(pp), rr) => {
                p = pp.to_path_buf();
                r = rr.map(|x| x.0.to_string()).unwrap_or_default();
            }
            (None, _) => break,
        }
    }
    for (p, r) in missing.into_iter().rev() {
        rustix::fs::mkdir(&p, Mode::from_raw_mode(0o755))
            .ctx(|| format!("create parent directory {}", p.display()))?;
        if r.is_empty() {
            continue;
        }
        if let Ok(s) = resolve_beneath(base, &r, OFlags::RDONLY | OFlags::DIRECTORY) {
            let st = rustix::fs::fstat(&s).ctx(|| format!("stat {r}"))?;
            let d = open_dir_path(&p).ctx(|| format!("open {}", p.display()))?;
            let (u, g) = owner(&st);
            rustix::fs::fchown(&d, u, g).ctx(|| format!("chown {}", p.display()))?;
            rustix::fs::fchmod(&d, perm(&st)).ctx(|| format!("chmod {}", p.display()))?;
            rustix::fs::futimens(&d, &times_of(&st))
                .ctx(|| format!("set times of {}", p.display()))?;
        }
    }
    Ok(())
}

/// Copy `rel` from the old root open at `base` to `dest`.
pub fn restore_from(
    base: &OwnedFd,
    old: &str,
    rel: &str,
    dest: &Path,
    force: bool,
    create_parents: bool,
) -> Result<Summary> {
    let (rel_parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let sdir = resolve_beneath(
        base,
        if rel_parent.is_empty() {
            "."
        } else {
            rel_parent
        },
        OFlags::RDONLY | OFlags::DIRECTORY,
    )
    .map_err(|e| escape_error(old, &format!("/{rel}"), e))?;
    if let Err(e) = rustix::fs::statat(&sdir, name, AtFlags::SYMLINK_NOFOLLOW) {
        return Err(escape_error(old, &format!("/{rel}"), e));
    }
    let dname = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("destination {} has no file name", dest.display())))?
        .to_string();
    let dparent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if create_parents {
        make_parents(base, rel_parent, dparent)?;
    }
    let ddir = open_dir_path(dparent).ctx(|| {
        format!(
            "open destination directory {} (create it first)",
            dparent.display()
        )
    })?;
    let existing = rustix::fs::statat(&ddir, dname.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
    if existing.is_some() && !force {
        return Err(Error::Refused(format!(
            "{} exists; not overwriting it (pass --force to replace it, or --to another path)",
            dest.display()
        )));
    }
    let tmp = format!(".{dname}.ephemeral-root-restore.{}", std::process::id());
    let _ = remove_tree(&ddir, &tmp);
    let mut c = Copier::new();
    let r = c.copy(
        &sdir,
        name,
        &ddir,
        &tmp,
        &ddir,
        &tmp,
        &format!("{old}:/{rel}"),
    );
    if let Err(e) = r {
        let _ = remove_tree(&ddir, &tmp);
        return Err(e);
    }
    let src_is_dir = rustix::fs::statat(&ddir, tmp.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| s.st_mode as u32 & 0o170000 == 0o040000);
    let committed = match existing {
        None => rustix::fs::renameat_with(&ddir, &tmp, &ddir, &dname, RenameFlags::NOREPLACE),
        Some(ex) if src_is_dir || ex.st_mode as u32 & 0o170000 == 0o040000 => {
            rustix::fs::renameat_with(&ddir, &tmp, &ddir, &dname, RenameFlags::EXCHANGE).and_then(
                // The old destination now has the temporary name.
                |_| remove_tree(&ddir, &tmp),
            )
        }
        Some(_) => rustix::fs::renameat(&ddir, &tmp, &ddir, &dname),
    };
    if let Err(e) = committed {
        let _ = remove_tree(&ddir, &tmp);
        return Err(match e {
            Errno::EXIST | Errno::NOTEMPTY => Error::Refused(format!(
                "{} appeared while copying; not overwriting it (pass --force)",
                dest.display()
            )),
            e => Error::sys(
                format!("rename the copy into place as {}", dest.display()),
                e,
            ),
        });
    }
    let _ = rustix::fs::fsync(&ddir);
    Ok(c.summary)
}

pub fn run(cli: &Cli, s: &Settings, old: &str, path: &str) -> Result<()> {
    let rel = safe_rel(path)?;
    let dest: PathBuf = cli
        .to
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/{rel}")));
    let (mut b, st) = crate::protocol::open(s, crate::clock::now())?;
    let result = (|| -> Result<Summary> {
        let Some(o) = st.find_old_root(old) else {
            return Err(Error::Usage(format!(
                "old root \"{}\" does not exist in {}; `ephemeral-root list` shows the names",
                crate::escape::text(old),
                s.snapshots
            )));
        };
        if !o.sealed {
            log::info!("old root {old} is not sealed yet (read-only once `finish` runs); restoring from it as it is");
        }
        let entry = o.entry.to_string();
        let base_path = b.entry_path(&entry)?;
        let nested = b.entry_nested(&entry)?;
        // A path inside a nested subvolume kept beside the old root is read from there.
        let (base_path, src_rel) = match source_in_nested(&rel, &nested) {
            Some((p, r)) => (p, r),
            None => (base_path, rel.clone()),
        };
        let base = open_dir_path(&base_path).ctx(|| format!("open old root {old}"))?;
        let mut sum = restore_from(&base, old, &src_rel, &dest, cli.force, cli.to.is_none())?;
        // Nested subvolumes below PATH are not in the copy just made (they are kept beside the
        // old root): put each in its place, parents first.
        for (q, _) in nested.iter().filter(|(q, _)| is_below(q, &rel)) {
            let Some((qbase, qname)) = source_in_nested(q, &nested) else {
                continue;
            };
            let qdir = open_dir_path(&qbase).ctx(|| format!("open {}", qbase.display()))?;
            let part = restore_from(
                &qdir,
                old,
                &qname,
                &dest.join(&q[rel.len() + 1..]),
                false,
                false,
            )?;
            sum.add(part);
        }
        Ok(sum)
    })();
    b.close()?;
    let sum = result?;
    for (p, n, e) in &sum.xattr_failures {
        log::warn!("could not copy extended attribute {n} of {p}: {e}");
    }
    for p in &sum.skipped {
        log::warn!("skipped {p}");
    }
    println!(
        "restored /{rel} from old root {old} to {}: {} files, {} directories, {} hard links, {}",
        dest.display(),
        sum.files,
        sum.dirs,
        sum.links,
        crate::timefmt::human_bytes(sum.bytes)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_nested_subvolumes_kept_beside_the_old_root() {
        let store = PathBuf::from("/run/er/top/@snapshots/N.nested");
        let nested = vec![
            (
                "var/lib/machines".to_string(),
                store.join("var%2Flib%2Fmachines"),
            ),
            (
                "var/lib/machines/inner".to_string(),
                store.join("var%2Flib%2Fmachines%2Finner"),
            ),
        ];
        let m = |p: &str, s: &str| Some((PathBuf::from(p), s.to_string()));
        for (rel, want) in [
            ("etc/hosts", None),
            ("var/lib/machinesX/f", None),
            (
                "var/lib/machines/vm/disk",
                m(
                    "/run/er/top/@snapshots/N.nested/var%2Flib%2Fmachines",
                    "vm/disk",
                ),
            ),
            (
                "var/lib/machines/inner/data",
                m(
                    "/run/er/top/@snapshots/N.nested/var%2Flib%2Fmachines%2Finner",
                    "data",
                ),
            ),
            (
                "var/lib/machines",
                m("/run/er/top/@snapshots/N.nested", "var%2Flib%2Fmachines"),
            ),
        ] {
            assert_eq!(source_in_nested(rel, &nested), want, "{rel}");
        }
        assert_eq!(source_in_nested("var/lib/machines/x", &[]), None);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(safe_rel("/var/lib/x/").unwrap(), "var/lib/x");
        assert_eq!(safe_rel("etc//./ssh").unwrap(), "etc/ssh");
        assert!(matches!(safe_rel("/var/../etc"), Err(Error::Refused(_))));
        assert!(matches!(safe_rel("../x"), Err(Error::Refused(_))));
        assert!(matches!(safe_rel("/"), Err(Error::Usage(_))));
        assert!(matches!(safe_rel(""), Err(Error::Usage(_))));
    }
}
