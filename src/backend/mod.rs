//! The filesystem behind one small trait. The engine decides *what* to do from an [`Inventory`];
//! a backend does each step atomically or in a way that is safe to repeat after a crash.
//!
//! Names inside the snapshots location (same on every backend):
//! - `YYYY-MM-DDTHH-MM-SSZ[-N]`: a kept old root (read-only);
//! - `.incomplete.<name>`: an old root being assembled (discarded on the next run);
//! - `.new-root`: the next root being assembled (discarded on the next run);
//! - `.kept.<name>`: the previous root, moved here whole (with its nested subvolumes) and about
//!   to become old root `<name>` once read-only; never discarded, always finished;
//! - `.retired-root.<id>`: a root moved aside that holds nothing worth keeping (deleted);
//! - `.deleting.<name>`: an old root being pruned (deleted; no longer counted as kept);
//! - `.pins/<name>`: pinned old roots.

pub mod bcachefs;
pub mod bcachefs_ioctl;
pub mod btrfs;
pub mod btrfs_ioctl;
pub mod zfs;

use crate::error::Result;
use std::fmt;
use std::path::PathBuf;

pub const INCOMPLETE_PREFIX: &str = ".incomplete.";
pub const NEW_ROOT: &str = ".new-root";
pub const RETIRED_ROOT_PREFIX: &str = ".retired-root.";
pub const KEPT_PREFIX: &str = ".kept.";
pub const DELETING_PREFIX: &str = ".deleting.";
pub const PINS_DIR: &str = ".pins";
/// A read-only snapshot of the root taken right after boot (`ephemeral-root baseline`).
pub const BASELINE: &str = ".baseline";

/// What a direct entry of the snapshots location is, by its name alone (the backend then checks
/// that it really is a subvolume/dataset before counting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// `.incomplete.*`, `.new-root`: left by an interrupted run; discarded.
    Leftover,
    /// `.retired-root.*`, `.deleting.*`: deleted.
    Retired,
    /// `.kept.<name>` with a valid old-root name: to be sealed as `<name>`.
    Unsealed(&'a str),
    /// `.kept.<something else>`: not a name this program makes.
    BadKept,
    /// `.baseline`.
    Baseline,
    /// An old-root name: (time, sequence number).
    OldRoot(i64, u32),
    /// Anything else (`.pins`, a user's own entries, a backend's side stores): not ours to count.
    Other,
}

pub fn classify_entry(n: &str) -> Entry<'_> {
    if n.starts_with(INCOMPLETE_PREFIX) || n == NEW_ROOT {
        return Entry::Leftover;
    }
    if n.starts_with(RETIRED_ROOT_PREFIX) || n.starts_with(DELETING_PREFIX) {
        return Entry::Retired;
    }
    if let Some(name) = n.strip_prefix(KEPT_PREFIX) {
        return match crate::timefmt::parse_old_root_name(name) {
            Some(_) => Entry::Unsealed(name),
            None => Entry::BadKept,
        };
    }
    if n == BASELINE {
        return Entry::Baseline;
    }
    match crate::timefmt::parse_old_root_name(n) {
        Some((time, seq)) => Entry::OldRoot(time, seq),
        None => Entry::Other,
    }
}

/// `child` is strictly below `parent` in a `/`-separated name (a path relative to a root, or a
/// dataset name); everything non-empty is below the empty `parent`.
pub fn is_below(child: &str, parent: &str) -> bool {
    if parent.is_empty() {
        return !child.is_empty();
    }
    child.len() > parent.len() + 1
        && child.starts_with(parent)
        && child.as_bytes()[parent.len()] == b'/'
}

/// Pins of backends that keep them as empty files `<snapshots>/.pins/<name>` (btrfs, bcachefs).
pub mod pins {
    use super::PINS_DIR;
    use crate::error::{Context, Error, Result};
    use rustix::fd::OwnedFd;
    use rustix::fs::{AtFlags, Mode, OFlags};
    use rustix::io::Errno;

    pub fn has(snaps: &OwnedFd, name: &str) -> bool {
        rustix::fs::statat(
            snaps,
            format!("{PINS_DIR}/{name}"),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Pin or unpin `name`; `label` names the snapshots location in errors. The caller syncs.
    pub fn set(snaps: &OwnedFd, label: &str, name: &str, pinned: bool) -> Result<()> {
        match rustix::fs::mkdirat(snaps, PINS_DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Error::sys(format!("create {label}/{PINS_DIR}"), e)),
        }
        let p = format!("{PINS_DIR}/{name}");
        if pinned {
            rustix::fs::openat(
                snaps,
                &p,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .ctx(|| format!("create pin {label}/{p}"))?;
        } else {
            forget(snaps, label, name)?;
        }
        Ok(())
    }

    /// Remove the pin of `name`, if any.
    pub fn forget(snaps: &OwnedFd, label: &str, name: &str) -> Result<()> {
        let p = format!("{PINS_DIR}/{name}");
        match rustix::fs::unlinkat(snaps, &p, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::sys(format!("remove pin {label}/{p}"), e)),
        }
    }
}

/// What changed since the baseline (see [`Backend::changed_since_baseline`]).
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// Paths relative to the root, as bytes (no leading `/`).
    pub paths: Vec<Vec<u8>>,
    /// Branches that could not be listed (paths relative to the root) and why.
    pub incomplete: Vec<(Vec<u8>, crate::walk::Problem)>,
}

/// Where a new root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    Empty,
    Blank(String),
    OldRoot(String),
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSource::Empty => f.write_str("empty"),
            RootSource::Blank(b) => write!(f, "a writable snapshot of blank template {b}"),
            RootSource::OldRoot(n) => write!(f, "a writable copy of old root {n}"),
        }
    }
}

/// The current root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootState {
    /// When this root was created (Unix seconds).
    pub began: i64,
    /// Unchanged since it was created: nothing to keep.
    pub fresh: bool,
    /// Already kept, unchanged since, as this old root (a re-run after a crash).
    pub kept_as: Option<String>,
    /// Nested subvolumes, as paths relative to the root, parents before children.
    pub nested: Vec<String>,
    /// The name it gets in the snapshots location when retired.
    pub retire_as: String,
    /// For messages: `@root (subvolume 256)`.
    pub describe: String,
}

/// One kept old root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldRoot {
    pub name: String,
    /// When that root began (from the name).
    pub time: i64,
    pub seq: u32,
    pub pinned: bool,
    /// When it was kept (the snapshot's creation time), if known.
    pub kept_at: Option<i64>,
    pub readonly: bool,
    /// Nested subvolumes kept with it (relative paths).
    pub nested: Vec<String>,
}

/// Everything the planner needs to know about the filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// `btrfs /dev/vdb (uuid …)`
    pub fs: String,
    pub root: Option<RootState>,
    pub snapshots_exists: bool,
    pub old_roots: Vec<OldRoot>,
    /// Half-built objects to discard before anything else.
    pub leftovers: Vec<String>,
    /// Retired roots and pruned old roots awaiting deletion.
    pub retired: Vec<String>,
    /// Old roots moved aside but not yet sealed read-only (`.kept.<name>`): the names.
    pub unsealed: Vec<String>,
    /// The backend can keep the root by moving it (and seal it read-only afterwards); otherwise
    /// it is kept with a read-only snapshot.
    pub moves_roots: bool,
    /// The root is missing because an earlier run retired it after keeping it: create a new one.
    pub root_replacement_pending: bool,
    /// A baseline of the current root exists (deleted when the root is replaced).
    pub baseline: bool,
    /// `Some(false)` when a blank template is configured but missing or not a subvolume.
    pub blank_exists: Option<bool>,
    /// Where the root (or something inside it) is mounted: `rollback` refuses to touch a live root.
    pub root_mounted_at: Option<String>,
    /// Other reasons to refuse any change (root is the default subvolume, …).
    pub refusals: Vec<String>,
}

/// One filesystem. Every method that changes something is a single step of a plan: atomic, or
/// staged under a dot-name so that a crash leaves something the next run recognises.
pub trait Backend {
    fn inventory(&mut self) -> Result<Inventory>;
    fn create_snapshots_location(&mut self) -> Result<()>;
    /// Delete a leftover (`.incomplete.*`, `.new-root`) from an interrupted run.
    fn discard(&mut self, name: &str) -> Result<()>;
    /// Assemble the next root as `.new-root` in the snapshots location.
    fn build_new_root(&mut self, src: &RootSource) -> Result<()>;
    /// Keep the current root (and its nested subvolumes) as read-only old root `name`.
    fn keep_root(&mut self, name: &str) -> Result<()>;
    /// Move the current root aside as `.retired-root.<id>` (it was kept before).
    fn retire_root(&mut self) -> Result<()>;
    /// Move `.new-root` into the root's place.
    fn activate_new_root(&mut self) -> Result<()>;
    /// Move the current root, whole, to `.kept.<name>` (backends with `moves_roots`).
    fn move_root_aside(&mut self, _name: &str) -> Result<()> {
        Err(crate::error::Error::Other(
            "this filesystem cannot keep a root by moving it".into(),
        ))
    }
    /// Make `.kept.<name>` and everything nested in it read-only, then rename it to `<name>`.
    fn seal_old_root(&mut self, _name: &str) -> Result<()> {
        Err(crate::error::Error::Other(
            "this filesystem cannot keep a root by moving it".into(),
        ))
    }
    /// Delete a retired root or a pruned old root (`.retired-root.*`, `.deleting.*`).
    fn delete_retired(&mut self, name: &str) -> Result<()>;
    /// Prune old root `name`: first rename it to `.deleting.<name>` (so it is no longer counted),
    /// then delete it.
    fn delete_old_root(&mut self, name: &str) -> Result<()>;
    fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()>;
    /// Make everything so far durable.
    fn sync(&mut self) -> Result<()>;
    /// A directory where old root `name` can be read.
    fn old_root_path(&mut self, name: &str) -> Result<PathBuf>;
    /// Nested subvolumes of old root `name` that are kept *beside* it rather than inside it
    /// (bcachefs: `<name>.nested/`): (path relative to the root, directory to read it from),
    /// parents before children. Empty where nested subvolumes sit inside the old root.
    fn old_root_nested(&mut self, _name: &str) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
    /// A directory where the current root can be read (through our private mount).
    fn root_path(&mut self) -> Result<PathBuf>;
    /// Unmount and release.
    fn close(self: Box<Self>) -> Result<()>;

    /// Take a read-only snapshot of the current root as `.baseline` (replacing an older one).
    fn take_baseline(&mut self) -> Result<()> {
        Err(crate::error::Error::Usage(
            "baseline is not supported on this filesystem yet".into(),
        ))
    }
    /// A directory where the baseline can be read, if one exists.
    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    /// Nested subvolumes of the baseline kept beside it (bcachefs), like [`Backend::old_root_nested`].
    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }
    /// Paths changed since the baseline, when the filesystem can tell without walking every file
    /// (btrfs generation numbers). `None`: walk and compare.
    fn changed_since_baseline(&mut self) -> Result<Option<Changed>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below() {
        for (child, parent, want) in [
            ("var/lib/machines", "var/lib", true),
            ("var/lib", "var/lib", false),
            ("var/libx", "var/lib", false),
            ("var/lib/", "var/lib", false),
            ("var", "", true),
            ("", "", false),
            ("rpool/a/b", "rpool/a", true),
            ("rpool/ab", "rpool/a", false),
        ] {
            assert_eq!(is_below(child, parent), want, "{child} below {parent}");
        }
    }

    #[test]
    fn snapshot_location_names() {
        let t = crate::timefmt::parse_old_root_name("2026-11-22T00-48-03Z")
            .unwrap()
            .0;
        for (name, want) in [
            ("2026-11-22T00-48-03Z", Entry::OldRoot(t, 1)),
            ("2026-11-22T00-48-03Z-2", Entry::OldRoot(t, 2)),
            (".incomplete.2026-11-22T00-48-03Z", Entry::Leftover),
            (".incomplete.baseline", Entry::Leftover),
            (".new-root", Entry::Leftover),
            (".retired-root.257", Entry::Retired),
            (".deleting.2026-11-22T00-48-03Z", Entry::Retired),
            (
                ".kept.2026-11-22T00-48-03Z",
                Entry::Unsealed("2026-11-22T00-48-03Z"),
            ),
            (".kept.my-stuff", Entry::BadKept),
            (".baseline", Entry::Baseline),
            (".pins", Entry::Other),
            ("2026-11-22T00-48-03Z.nested", Entry::Other),
            (".template", Entry::Other),
            ("2026-13-22T00-48-03Z", Entry::Other),
            ("notes.txt", Entry::Other),
        ] {
            assert_eq!(classify_entry(name), want, "{name}");
        }
    }
}
