//! `restore OLD_ROOT PATH [--to DEST] [--force] [--replace-type] [--keep-privileges]`: copy a
//! file or a tree back from an old root, with the copy engine in [`crate::copy`] (the rules it
//! follows are in `docs/path-safety.md`, each with the test that checks it). This module holds what
//! is restore's own: PATH inside the old root (no `..`), the default destination (`/PATH`, missing
//! parents created with the old root's metadata) or `--to`, nested subvolumes kept beside an old
//! root (bcachefs), the shared lock, and the summary.

use crate::cli::Cli;
use crate::config::Settings;
use crate::copy::{copy_into, dest_components, Dest, Opts, Src, Summary};
use crate::error::{Context, Error, Result};
use crate::escape::{cut, escape as esc};
use crate::signals as interrupt;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

// ------------------------------------------------------------------------------------------------
// Paths given by the user

/// PATH as a relative path inside the old root (bytes): no `..`, no empty result.
pub fn safe_rel(path: &OsStr) -> Result<Vec<u8>> {
    let b = path.as_bytes();
    if b.contains(&0) {
        return Err(Error::Usage("PATH contains a NUL byte".into()));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in b.split(|&x| x == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::Refused(format!(
                    "{}: `..` is not allowed; name the path as it is inside the old root",
                    cut(b)
                )))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(Error::Usage(format!(
            "\"{}\" names the whole old root; name a file or directory inside it, e.g. /var/lib/foo",
            cut(b)
        )));
    }
    Ok(parts.join(&b'/'))
}

fn below(child: &[u8], parent: &[u8]) -> bool {
    child.len() > parent.len() + 1 && child.starts_with(parent) && child[parent.len()] == b'/'
}

/// Where `rel` (relative to the root) lives when it is in, or is, one of `nested` (path relative
/// to the root, directory holding that subvolume's tree): (base directory, path below it). The
/// deepest match wins; `None` when `rel` is not inside any of them.
pub fn source_in_nested(rel: &[u8], nested: &[(String, PathBuf)]) -> Option<(PathBuf, Vec<u8>)> {
    let (p, dir) = nested
        .iter()
        .filter(|(p, _)| rel == p.as_bytes() || below(rel, p.as_bytes()))
        .max_by_key(|(p, _)| p.len())?;
    if rel == p.as_bytes() {
        // The nested subvolume itself: read it as an entry of the directory holding it.
        let parent = dir.parent()?.to_path_buf();
        let name = dir.file_name()?.as_bytes().to_vec();
        Some((parent, name))
    } else {
        Some((dir.clone(), rel[p.len() + 1..].to_vec()))
    }
}

/// The destination: a descriptor taken before anything else (`/`, or the current directory for a
/// relative `--to`), and the path below it.

fn open_base(p: &[u8]) -> Result<OwnedFd> {
    rustix::fs::open(
        OsStr::from_bytes(p),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", esc(p)))
}

pub fn run(cli: &Cli, s: &Settings, old: &str, path: &OsStr) -> Result<()> {
    let rel = safe_rel(path)?;
    // The destination's base and the mount table are taken before anything else, in the mount
    // namespace we were started in (the backend moves us into a private one).
    let (base_fd, mut comps, abs) = match &cli.to {
        None => {
            let mut abs = vec![b'/'];
            abs.extend_from_slice(&rel);
            (open_base(b"/")?, dest_components(&rel)?, abs)
        }
        Some(to) => {
            let b = to.as_os_str().as_bytes();
            let comps = dest_components(b)?;
            if b.first() == Some(&b'/') {
                (open_base(b"/")?, comps, b.to_vec())
            } else {
                let mut abs = std::env::current_dir()
                    .map(|p| p.into_os_string().into_vec())
                    .unwrap_or_default();
                abs.push(b'/');
                abs.extend_from_slice(b);
                (open_base(b".")?, comps, abs)
            }
        }
    };
    let mountinfo = crate::mounts::read_mountinfo()?;
    let name = comps.pop().unwrap_or_default();
    let dest = Dest {
        base: base_fd.as_fd(),
        parent: comps,
        name,
        abs: abs.clone(),
    };
    let opts = Opts {
        force: cli.force,
        replace_type: cli.replace_type,
        keep_privileges: cli.keep_privileges,
        create_parents: cli.to.is_none(),
    };
    let (mut b, st) = crate::protocol::open_locked(
        s,
        crate::clock::now(),
        Some(crate::lock::Request::new(
            "restore",
            crate::lock::Mode::Shared,
            cli.lock_wait,
        )),
    )?;
    interrupt::install();
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
        let base = rustix::fs::open(
            &base_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open old root {old}"))?;
        let mut sum = copy_into(&base, Src::OldRoot(old), &src_rel, &dest, &opts, &mountinfo)?;
        // Nested subvolumes below PATH are not in the copy just made (they are kept beside the
        // old root): put each in its place, parents first.
        for (q, _) in nested.iter().filter(|(q, _)| below(q.as_bytes(), &rel)) {
            let Some((qbase, qname)) = source_in_nested(q.as_bytes(), &nested) else {
                continue;
            };
            let qdir = rustix::fs::open(
                &qbase,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open {}", esc(qbase.as_os_str().as_bytes())))?;
            let sub = dest.child(&q.as_bytes()[rel.len() + 1..]);
            let o = Opts {
                force: false,
                create_parents: false,
                ..opts
            };
            let part = copy_into(&qdir, Src::OldRoot(old), &qname, &sub, &o, &mountinfo)?;
            sum.add(part);
        }
        Ok(sum)
    })();
    b.close()?;
    let sum = match result {
        Ok(s) => s,
        Err(e) => {
            if let Some(sig) = interrupt::caught() {
                log::error!("{e}");
                interrupt::reraise(sig);
            }
            return Err(e);
        }
    };
    for (p, n, e) in &sum.xattr_failures {
        log::warn!("could not copy extended attribute {n} of {p}: {e}");
    }
    for p in &sum.skipped {
        log::warn!("skipped {p}");
    }
    const SHOW: usize = 20;
    for p in sum.stripped.iter().take(SHOW) {
        log::warn!("not restored (pass --keep-privileges to restore it): {p}");
    }
    if sum.stripped.len() > SHOW {
        log::warn!(
            "… and {} more privilege bits or capabilities not restored",
            sum.stripped.len() - SHOW
        );
    }
    let stripped = if sum.stripped.is_empty() {
        String::new()
    } else {
        format!(
            "; {} setuid/setgid bits or file capabilities NOT restored (--keep-privileges restores them)",
            sum.stripped.len()
        )
    };
    println!(
        "restored /{} from old root {old} to {}: {} files, {} directories, {} hard links, {}{stripped}",
        cut(&rel),
        cut(&abs),
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
    use crate::error::Error;
    use std::ffi::OsString;

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
        let m = |p: &str, s: &str| Some((PathBuf::from(p), s.as_bytes().to_vec()));
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
            assert_eq!(source_in_nested(rel.as_bytes(), &nested), want, "{rel}");
        }
        assert_eq!(source_in_nested(b"var/lib/machines/x", &[]), None);
    }

    #[test]
    fn relative_paths() {
        let r = |s: &[u8]| safe_rel(OsStr::from_bytes(s));
        assert_eq!(r(b"/var/lib/x/").unwrap(), b"var/lib/x");
        assert_eq!(r(b"etc//./ssh").unwrap(), b"etc/ssh");
        assert_eq!(r(b"/srv/\xff\xfe/a\nb").unwrap(), b"srv/\xff\xfe/a\nb");
        assert!(matches!(r(b"/var/../etc"), Err(Error::Refused(_))));
        assert!(matches!(r(b"../x"), Err(Error::Refused(_))));
        assert!(matches!(r(b"/"), Err(Error::Usage(_))));
        assert!(matches!(r(b""), Err(Error::Usage(_))));
        assert!(dest_components(b"/a/../b").is_err());
        assert!(dest_components(b"/").is_err());
        assert_eq!(
            dest_components(b"/a//b/./c").unwrap(),
            vec![
                OsString::from("a"),
                OsString::from("b"),
                OsString::from("c")
            ]
        );
    }
}
