//! Directory plumbing shared by the backends that keep their snapshots location as a directory
//! tree (btrfs, bcachefs): opening beneath a directory without following symlinks or crossing
//! mounts, listing entries as bytes, pins as empty files in `.pins/`, and the record of the roots
//! we built (`.fresh-root`).

use crate::error::{Context, Error, Result};
use crate::layout::{PINS_DIR, RECORD, RECORD_TMP};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Open directory `rel` (a `/`-separated path) beneath `base`: no `..` escape, no symlink, no
/// magic link, no mount crossed. An empty `rel` opens `base` itself.
/// (docs/kernel-interfaces.md#vfs-openat2)
pub fn open_dir_beneath(base: impl AsFd, rel: impl AsRef<OsStr>) -> Result<OwnedFd, Errno> {
    let b = rel.as_ref().as_bytes();
    let start = b.iter().position(|&c| c != b'/').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b'/').map_or(start, |i| i + 1);
    let b = &b[start..end.max(start)];
    let rel = if b.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(b)
    };
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

/// The entries of a directory except `.` and `..`, as bytes, sorted, with the type readdir gives.
pub fn entries(fd: impl AsFd) -> Result<Vec<(OsString, FileType)>, Errno> {
    let mut v = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        v.push((OsString::from_vec(n.to_vec()), e.file_type()));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Is `fd` an empty directory?
pub fn is_empty_dir(fd: impl AsFd) -> Result<bool, Errno> {
    for e in rustix::fs::Dir::read_from(fd)? {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Pins as empty files `<snapshots>/.pins/<name>`.
pub mod pins {
    use super::*;

    pub fn has(snaps: impl AsFd, name: &str) -> bool {
        rustix::fs::statat(
            snaps,
            format!("{PINS_DIR}/{name}"),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Pin or unpin `name`; `label` names the snapshots location in errors. The caller syncs.
    pub fn set(snaps: &OwnedFd, label: &str, name: &str, pinned: bool) -> Result<()> {
        if !pinned {
            return forget(snaps, label, name);
        }
        match rustix::fs::mkdirat(snaps, PINS_DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::sys(format!("create {label}/{PINS_DIR}"), e)),
        }
        let dir = open_dir_beneath(snaps, PINS_DIR).ctx(|| format!("open {label}/{PINS_DIR}"))?;
        rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .ctx(|| format!("create pin {label}/{PINS_DIR}/{name}"))?;
        Ok(())
    }

    /// Remove the pin of `name`, if any.
    pub fn forget(snaps: &OwnedFd, label: &str, name: &str) -> Result<()> {
        let dir = match open_dir_beneath(snaps, PINS_DIR) {
            Ok(d) => d,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {label}/{PINS_DIR}"), e)),
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("remove pin {label}/{PINS_DIR}/{name}"),
                e,
            )),
        }
    }
}

/// One line of `.fresh-root`: a root we built, identified by a backend's token (no spaces), when
/// it began, and what it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub key: String,
    pub began: i64,
    pub source: crate::backend::RootSource,
}

/// The record of the roots we built (`.fresh-root`), one line each:
/// `v2 <key> <began> empty|blank <path>|old <entry>`. A root's line is written once, when the
/// root is built, and kept while that root may still be the live root (the backend keeps the
/// lines of the current root and of the root it builds), so the time a root began is read back,
/// never taken again from a clock.
pub mod record {
    use super::*;
    use crate::backend::RootSource;

    pub fn parse(text: &str) -> Vec<Built> {
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(5, ' ');
                if it.next()? != "v2" {
                    return None;
                }
                let key = it.next()?.to_string();
                let began = it.next()?.parse().ok()?;
                let source = match (it.next()?, it.next()) {
                    ("empty", None) => RootSource::Empty,
                    ("blank", Some(b)) if !b.is_empty() => RootSource::Blank(b.to_string()),
                    ("old", Some(o)) if !o.is_empty() => RootSource::OldRoot(o.to_string()),
                    _ => return None,
                };
                Some(Built { key, began, source })
            })
            .collect()
    }

    pub fn render(lines: &[Built]) -> String {
        let mut s = String::new();
        for b in lines {
            let src = match &b.source {
                RootSource::Empty => "empty".to_string(),
                RootSource::Blank(x) => format!("blank {x}"),
                RootSource::OldRoot(x) => format!("old {x}"),
            };
            s.push_str(&format!("v2 {} {} {src}\n", b.key, b.began));
        }
        s
    }

    /// Read the record; missing or unreadable is an empty record (roots are then kept again
    /// when in doubt, which is safe).
    pub fn read(snaps: impl AsFd) -> Vec<Built> {
        let Ok(f) = rustix::fs::openat(
            snaps,
            RECORD,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) else {
            return Vec::new();
        };
        let mut buf = vec![0u8; 16384];
        let mut n = 0;
        while n < buf.len() {
            match rustix::io::read(&f, &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(Errno::INTR) => continue,
                Err(_) => return Vec::new(),
            }
        }
        parse(&String::from_utf8_lossy(&buf[..n]))
    }

    /// Replace the record with `lines` (written to a temporary, then renamed over it).
    pub fn write(snaps: &OwnedFd, label: &str, lines: &[Built]) -> Result<()> {
        let f = rustix::fs::openat(
            snaps,
            RECORD_TMP,
            OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .ctx(|| format!("write {label}/{RECORD_TMP}"))?;
        let body = render(lines);
        let mut off = 0;
        while off < body.len() {
            off += rustix::io::write(&f, &body.as_bytes()[off..])
                .ctx(|| format!("write {label}/{RECORD_TMP}"))?;
        }
        rustix::fs::renameat(snaps, RECORD_TMP, snaps, RECORD)
            .ctx(|| format!("rename {label}/{RECORD_TMP} to {RECORD}"))
    }

    /// Record the root just built (`new`), keeping the lines `keep` accepts (the live root's):
    /// a root's line is written once and stays while that root may still be the live root.
    pub fn add(
        snaps: &OwnedFd,
        label: &str,
        keep: impl Fn(&Built) -> bool,
        new: Built,
    ) -> Result<()> {
        let mut lines: Vec<Built> = read(snaps).into_iter().filter(|b| keep(b)).collect();
        lines.push(new);
        write(snaps, label, &lines)?;
        crate::fault::point(crate::fault::Point::NewRootRecorded);
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_garbage() {
            let v = vec![
                Built {
                    key: "bch:300:4096".into(),
                    began: 1_795_135_683,
                    source: RootSource::Empty,
                },
                Built {
                    key: "btrfs:00ff:17".into(),
                    began: 5,
                    source: RootSource::Blank("@blank".into()),
                },
                Built {
                    key: "k".into(),
                    began: -1,
                    source: RootSource::OldRoot(".kept.2026-11-22T00-48-03Z".into()),
                },
            ];
            assert_eq!(parse(&render(&v)), v);
            for bad in [
                "",
                "v1 k 5 empty",
                "v2 k x empty",
                "v2 k 5 blank",
                "v2 k 5 elsewhere x",
                "bcachefs1 300 4096 5 empty",
                "v2 k 5 empty extra",
            ] {
                assert_eq!(parse(bad), vec![], "{bad:?}");
            }
        }
    }
}

/// `a/b` for byte paths (nested subvolume paths are bytes, like every name).
pub fn join_os(a: &OsStr, b: &OsStr) -> OsString {
    if a.is_empty() {
        return b.to_os_string();
    }
    if b.is_empty() {
        return a.to_os_string();
    }
    let mut v = a.as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(b.as_bytes());
    OsString::from_vec(v)
}

/// Split a byte path into (parent, last component); the parent of a single component is empty.
pub fn split_os(p: &OsStr) -> (&OsStr, &OsStr) {
    let b = p.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => (OsStr::from_bytes(&b[..i]), OsStr::from_bytes(&b[i + 1..])),
        None => (OsStr::new(""), p),
    }
}

/// The private mount of a filesystem's top level, with the configured root, snapshots location
/// and blank template as paths below it: what the btrfs and bcachefs backends share.
pub struct Top {
    /// The device or member list, for messages.
    pub source: String,
    pub root: String,
    pub snapshots: String,
    pub blank: Option<String>,
    mount: Option<crate::mounts::Mounted>,
    pub fd: OwnedFd,
    /// major:minor of the filesystem as mountinfo shows it.
    pub dev: (u32, u32),
    /// Someone else has this filesystem mounted too (after boot; tests), not only our private
    /// mount (as in the initrd).
    pub mounted_elsewhere: bool,
}

impl Top {
    /// Mount `source` (the caller has entered a private mount namespace) at
    /// `/run/ephemeral-root/top`. `einval`: the message for EINVAL (not this filesystem, or a
    /// member missing).
    pub fn mount(
        source: &str,
        fstype: &str,
        data: &str,
        einval: impl FnOnce() -> String,
        s: &crate::config::Settings,
    ) -> Result<Top> {
        use crate::mounts::{self, Mounted};
        use std::path::{Path, PathBuf};
        let target = PathBuf::from(format!("{}/top", mounts::RUN_DIR));
        let mount = Mounted::mount(
            source,
            &target,
            fstype,
            rustix::mount::MountFlags::NOATIME,
            data,
        )
        .map_err(|e| match e.errno() {
            Some(n) if n == Errno::INVAL.raw_os_error() => Error::Refused(einval()),
            _ => e,
        })?;
        let fd = rustix::fs::open(
            &target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .ctx(|| format!("open {}", target.display()))?;
        let mi = mounts::read_mountinfo()?;
        let me = mi
            .iter()
            .rev()
            .find(|m| Path::new(&m.mount_point) == target)
            .ok_or_else(|| Error::Other(format!("our mount of {source} is not in mountinfo")))?;
        let dev = (me.major, me.minor);
        let mounted_elsewhere = mi
            .iter()
            .any(|m| (m.major, m.minor) == dev && Path::new(&m.mount_point) != target);
        let trim = |p: &str| p.trim_matches('/').to_string();
        Ok(Top {
            source: source.to_string(),
            root: trim(&s.root),
            snapshots: trim(&s.snapshots),
            blank: s.blank.as_deref().map(trim),
            mount: Some(mount),
            fd,
            dev,
            mounted_elsewhere,
        })
    }

    pub fn snaps_fd(&self) -> Result<OwnedFd> {
        open_dir_beneath(&self.fd, &self.snapshots).ctx(|| {
            format!(
                "open snapshots location {} on {}",
                self.snapshots, self.source
            )
        })
    }

    pub fn snapshots_exists(&self) -> Result<bool> {
        match open_dir_beneath(&self.fd, &self.snapshots) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(Errno::NOTDIR) => Err(Error::Refused(format!(
                "snapshots location {} exists but is not a directory",
                self.snapshots
            ))),
            Err(e) => Err(Error::sys(
                format!("open snapshots location {}", self.snapshots),
                e,
            )),
        }
    }

    /// Create the snapshots location with `create` (a subvolume) unless it exists: checked first,
    /// since the out-of-tree bcachefs logs a failed SUBVOLUME_CREATE, EEXIST included, to the
    /// kernel log (docs/kernel-interfaces.md#bcachefs-kernel-log); 6.12 does not.
    pub fn create_snapshots_location(
        &self,
        create: impl FnOnce(rustix::fd::BorrowedFd, &OsStr) -> Result<(), Errno>,
    ) -> Result<()> {
        let (parent, base) = crate::layout::split_parent(&self.snapshots);
        let pfd = open_dir_beneath(&self.fd, parent).ctx(|| {
            format!(
                "open the directory that should hold {} (create it first)",
                self.snapshots
            )
        })?;
        if open_dir_beneath(&pfd, base).is_ok() {
            return Ok(());
        }
        create(pfd.as_fd(), OsStr::new(base))
            .ctx(|| format!("create snapshots subvolume {}", self.snapshots))?;
        crate::fault::point(crate::fault::Point::SnapshotsLocationCreated);
        Ok(())
    }

    /// The directory holding the root, and the root's last component.
    pub fn root_parent_and_base(&self) -> Result<(OwnedFd, String)> {
        let (parent, base) = crate::layout::split_parent(&self.root);
        let fd = open_dir_beneath(&self.fd, parent).ctx(|| {
            format!(
                "open the directory holding root {} on {}",
                self.root, self.source
            )
        })?;
        Ok((fd, base.to_string()))
    }

    fn rename_noreplace(
        from_dir: &OwnedFd,
        from: &str,
        to_dir: &OwnedFd,
        to: &str,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        rustix::fs::renameat_with(
            from_dir,
            from,
            to_dir,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .ctx(what)
    }

    /// Rename entry `from` of the snapshots location to `to`, never replacing.
    pub fn rename(&self, snaps: &OwnedFd, from: &str, to: &str) -> Result<()> {
        Top::rename_noreplace(snaps, from, snaps, to, || {
            format!("rename {}/{from} to {to}", self.snapshots)
        })
    }

    /// Move the root to entry `to` of the snapshots location, never replacing.
    pub fn move_root(&self, to: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        Top::rename_noreplace(&pfd, &base, &snaps, to, || {
            format!("move root {} to {}/{to}", self.root, self.snapshots)
        })?;
        crate::fault::point(crate::fault::Point::MoveMoved);
        Ok(())
    }

    /// Move entry `from` of the snapshots location into the root's place, never replacing.
    pub fn activate(&self, from: &str) -> Result<()> {
        let snaps = self.snaps_fd()?;
        let (pfd, base) = self.root_parent_and_base()?;
        Top::rename_noreplace(&snaps, from, &pfd, &base, || {
            format!("move {}/{from} to {}", self.snapshots, self.root)
        })?;
        crate::fault::point(crate::fault::Point::ActivateMoved);
        Ok(())
    }

    pub fn set_pinned(&self, name: &str, pinned: bool) -> Result<()> {
        let snaps = self.snaps_fd()?;
        pins::set(&snaps, &self.snapshots, name, pinned)
    }

    /// Where our private mount is (paths for the tools that read trees).
    #[cfg(feature = "tools")]
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.mount
            .as_ref()
            .map(|m| m.path.clone())
            .unwrap_or_default()
            .join(rel)
    }

    #[cfg(feature = "tools")]
    pub fn entry_path(&self, name: &str) -> std::path::PathBuf {
        self.path(&self.snapshots).join(name)
    }

    /// Unmount (the last unmount of the filesystem also commits it).
    pub fn close(mut self) -> Result<()> {
        match self.mount.take() {
            Some(m) => {
                drop(self.fd);
                m.unmount()
            }
            None => Ok(()),
        }
    }
}

/// `Browse::root_path` and `Browse::entry_path` for a backend whose trees are directories below
/// its [`Top`] (a field `t`).
#[cfg(feature = "tools")]
macro_rules! top_paths {
    () => {
        fn root_path(&mut self) -> Result<std::path::PathBuf> {
            Ok(self.t.path(&self.t.root))
        }

        fn entry_path(&mut self, name: &str) -> Result<std::path::PathBuf> {
            Ok(self.t.entry_path(name))
        }
    };
}
#[cfg(feature = "tools")]
pub(crate) use top_paths;

/// The [`crate::backend::Fs`] primitives that are the same for every backend whose filesystem is a
/// directory tree below its [`Top`] (a field `t`): naming, the snapshots location's existence,
/// activating the next root, pins, closing. `$fs` names the filesystem in messages.
macro_rules! top_fs {
    ($fs:literal) => {
        fn describe(&self) -> String {
            format!("{} {}", $fs, self.t.source)
        }

        fn snapshots_label(&self) -> String {
            self.t.snapshots.clone()
        }

        fn snapshots_exists(&mut self) -> Result<bool> {
            self.t.snapshots_exists()
        }

        fn activate(&mut self, from: &str) -> Result<()> {
            self.t.activate(from)
        }

        fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()> {
            self.t.set_pinned(name, pinned)
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.t.close()
        }

        fn lock_fd(&self) -> rustix::fd::BorrowedFd<'_> {
            rustix::fd::AsFd::as_fd(&self.t.fd)
        }

        fn blank_exists(&mut self) -> Result<Option<bool>> {
            Ok(self.t.blank.as_ref().map(|b| self.is_subvolume(b)))
        }
    };
}
pub(crate) use top_fs;
