//! Walking a tree through directory file descriptors: every entry is `lstat`ed relative to its
//! directory's descriptor, symlinks are never followed, and at most one descriptor per level of
//! depth is open at a time.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use crate::error::{Context, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets.
    Other,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// The parts of `lstat` that `diff` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Meta {
    pub fn from_stat(st: &rustix::fs::Stat) -> Meta {
        let kind = Kind::from_mode(st.st_mode as u32);
        Meta {
            kind,
            size: if kind == Kind::Dir {
                0
            } else {
                st.st_size as u64
            },
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// One entry of the walk. `path` is absolute as seen from the walked root (`/var/lib/x`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub meta: Meta,
    /// For directories: no entries at all.
    pub empty_dir: bool,
    /// For symlinks: the link text.
    pub link: Option<String>,
}

/// A one-line counter on stderr, only when stderr is a terminal.
pub struct Progress {
    enabled: bool,
    what: String,
    count: u64,
    last: Instant,
}

impl Progress {
    pub fn new(what: &str) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            what: what.to_string(),
            count: 0,
            last: Instant::now(),
        }
    }
    pub fn tick(&mut self) {
        self.count += 1;
        if self.enabled
            && self.count % 1024 == 0
            && self.last.elapsed() > Duration::from_millis(200)
        {
            self.last = Instant::now();
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[K{}: {} entries",
                self.what,
                self.count
            );
        }
    }
    pub fn done(&mut self) {
        if self.enabled && self.count >= 1024 {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

pub fn open_dir(dirfd: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dirfd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Names in a directory (without `.` and `..`).
pub fn read_names(fd: &OwnedFd) -> rustix::io::Result<Vec<String>> {
    let mut v = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            v.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(v)
}

/// `lstat` of `rel` below `dirfd` as an [`Entry`] named `path`; reads the link text of symlinks
/// and the emptiness of directories. `None` if it vanished.
pub fn entry_at(dirfd: impl AsFd, rel: &str, path: String) -> Result<Option<Entry>> {
    let st = match rustix::fs::statat(&dirfd, rel, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(crate::error::Error::sys(format!("lstat {path}"), e)),
    };
    let meta = Meta::from_stat(&st);
    let mut e = Entry {
        path,
        meta,
        empty_dir: false,
        link: None,
    };
    match meta.kind {
        Kind::Symlink => {
            e.link = rustix::fs::readlinkat(&dirfd, rel, Vec::new())
                .ok()
                .map(|c| c.to_string_lossy().into_owned());
        }
        Kind::Dir => {
            e.empty_dir = match open_dir(&dirfd, rel) {
                Ok(fd) => read_names(&fd)
                    .ctx(|| format!("read directory {}", e.path))?
                    .is_empty(),
                Err(_) => false,
            };
        }
        _ => {}
    }
    Ok(Some(e))
}

/// Walk everything below `root`, calling `f` for every entry (directories too, before their
/// contents). With `one_dev`, entries on another device than `root` (mount points, bind-mounted
/// files) are skipped and not descended into. `prefix` is prepended to reported paths.
pub fn walk(
    root: &OwnedFd,
    prefix: &str,
    one_dev: bool,
    progress: &mut Progress,
    f: &mut dyn FnMut(Entry),
) -> Result<()> {
    let dev = rustix::fs::fstat(root)
        .ctx(|| format!("stat {}", if prefix.is_empty() { "/" } else { prefix }))?
        .st_dev as u64;
    let shown = if prefix.is_empty() { "/" } else { prefix };
    let names = read_names(root).ctx(|| format!("read directory {shown}"))?;
    visit(root, prefix, names, one_dev.then_some(dev), progress, f)
}

fn visit(
    dir: &OwnedFd,
    path: &str,
    mut names: Vec<String>,
    dev: Option<u64>,
    progress: &mut Progress,
    f: &mut dyn FnMut(Entry),
) -> Result<()> {
    names.sort_unstable();
    for name in names {
        let child = format!("{path}/{name}");
        let st = match rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(crate::error::Error::sys(format!("lstat {child}"), e)),
        };
        if dev.is_some_and(|d| d != st.st_dev as u64) {
            continue;
        }
        progress.tick();
        let meta = Meta::from_stat(&st);
        match meta.kind {
            Kind::Dir => {
                let fd = match open_dir(dir, &name) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(crate::error::Error::sys(format!("open {child}"), e)),
                };
                let kids = read_names(&fd).ctx(|| format!("read directory {child}"))?;
                f(Entry {
                    path: child.clone(),
                    meta,
                    empty_dir: kids.is_empty(),
                    link: None,
                });
                if !kids.is_empty() {
                    visit(&fd, &child, kids, dev, progress, f)?;
                }
            }
            Kind::Symlink => {
                let link = rustix::fs::readlinkat(dir, name.as_str(), Vec::new())
                    .ok()
                    .map(|c| c.to_string_lossy().into_owned());
                f(Entry {
                    path: child,
                    meta,
                    empty_dir: false,
                    link,
                });
            }
            _ => f(Entry {
                path: child,
                meta,
                empty_dir: false,
                link: None,
            }),
        }
    }
    Ok(())
}
