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
