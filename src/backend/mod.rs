//! Filesystems, each behind the same small set of primitives. The rollback protocol itself (what
//! is on disk, what it means, what to do next, in which order) is written once, in
//! [`crate::protocol`]; a backend only knows how to do one primitive on its filesystem, atomically
//! or staged under a name of [`crate::layout`] that the protocol recognises after a crash.
//!
//! # What a new backend must provide
//!
//! 1. `open`: find the filesystem from the [`Settings`], mount what it needs privately (the caller
//!    has entered a private mount namespace), and refuse in one line when it is not what the
//!    settings say. Add it to [`open`].
//! 2. [`Fs`]: the facts (the root, each direct entry of the snapshots location) and the writing
//!    primitives. Every writing primitive is one atomic step, or a sequence whose intermediate
//!    states carry the names of [`crate::layout`] (`.incomplete.*` is discarded, `.retired-root.*`
//!    and `.deleting.*` are deleted, `.kept.*` is sealed), so that the protocol can finish or undo
//!    it after a power cut. Deleting proves first that the victim is an entry of the snapshots
//!    location this program made; nothing outside the snapshots location is ever deleted.
//!    Renames never replace (`RENAME_NOREPLACE` or the filesystem's equivalent).
//! 3. [`Browse`]: read-only access to the root, old roots and the baseline for `diff`, `restore`
//!    and `status`.
//! 4. Fault points ([`crate::fault::Point`]) between the system calls of a multi-call primitive,
//!    and the crash-safety tests run against it (tests/crash_safety.rs; the VM suites for
//!    filesystems the host kernel lacks).
//!
//! The kernel interfaces each backend relies on are described in docs/kernel-interfaces.md.

pub mod bcachefs;
pub mod bcachefs_ioctl;
pub mod btrfs;
pub mod btrfs_ioctl;
pub mod dirs;
pub mod zfs;

use crate::config::{FsType, Settings};
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::fmt;
#[cfg(feature = "tools")]
use std::path::PathBuf;

/// What changed since the baseline (see [`Backend::changed_since_baseline`]).
#[cfg(feature = "tools")]
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
    /// A blank template (a subvolume path, or a ZFS snapshot).
    Blank(String),
    /// An entry of the snapshots location: an old root, or a `.kept.*` one not sealed yet.
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

/// What a backend knows about one direct entry of the snapshots location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// A subvolume root or a filesystem dataset: the only kind of entry that can be an old root,
    /// a pending or a leftover tree. A plain file or directory with one of our names is foreign.
    pub tree: bool,
    /// A plain directory holding only subvolume roots (bcachefs keeps an old root's nested
    /// subvolumes in one): the only kind of entry that can be a store.
    pub store: bool,
    /// A plain directory (`.pins`).
    pub dir: bool,
    /// A regular file (`.fresh-root`).
    pub file: bool,
    /// The tree and everything nested in it is read-only.
    pub readonly: bool,
    pub pinned: bool,
    /// Nested subvolumes or child datasets, as paths relative to the entry, parents first (for a
    /// store: the decoded paths of the subvolumes it holds).
    pub nested: Vec<OsString>,
    /// A stable identity of the tree (subvolume id, dataset guid), for `.retired-root.<id>`.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: OsString,
    pub facts: Facts,
}

/// What a backend knows about the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFacts {
    /// When this root began (Unix seconds), read back from the filesystem or from the record we
    /// wrote when we built it; never from the clock of the run that looks at it.
    pub began: i64,
    /// Unchanged since we built it: nothing to keep.
    pub fresh: bool,
    /// A stable identity (subvolume id, dataset guid), for `.retired-root.<id>`.
    pub id: String,
    /// For messages: `@root (subvolume 256)`.
    pub describe: String,
    /// Where the root, or something inside it, is mounted: nothing may change it then.
    pub mounted_at: Option<String>,
}

/// The protocol's primitives. See the module documentation for the rules every one follows.
pub trait Fs {
    /// `btrfs /dev/vdb`, for messages.
    fn describe(&self) -> String;
    /// The snapshots location as configured, for messages.
    fn snapshots_label(&self) -> String;

    fn snapshots_exists(&mut self) -> Result<bool>;
    /// Every direct entry of the snapshots location, with its facts.
    fn entries(&mut self) -> Result<Vec<RawEntry>>;
    fn root(&mut self) -> Result<Option<RootFacts>>;
    /// Reasons to refuse any change that only this filesystem knows (the root is the default
    /// subvolume, an encryption key is not loaded, …).
    fn refusals(&mut self) -> Result<Vec<String>>;
    /// `None` when no blank template is configured.
    fn blank_exists(&mut self) -> Result<Option<bool>>;
    /// Is the root unchanged since entry `copy` (an old root or a `.kept.*` entry) was copied
    /// from it (audit mode)? `false` when unsure: the root is then kept again, which is safe.
    fn root_unchanged_since_copy(&mut self, copy: &str) -> Result<bool>;
    /// Both `.kept.N` and old root `N` exist (a crash inside [`Fs::seal`] on a filesystem that
    /// seals by copying): is `N` a sealed copy of `kept`? `false` when unsure: `kept` is then
    /// sealed under another name, which is safe.
    fn is_sealed_copy(&mut self, kept: &str, old: &str) -> Result<bool>;

    fn create_snapshots_location(&mut self) -> Result<()>;
    /// A new writable tree `name` in the snapshots location, from `src`.
    fn build(&mut self, name: &str, src: &RootSource) -> Result<()>;
    /// A copy of the root and its nested subvolumes as entry `name` (audit mode).
    fn copy_root(&mut self, name: &str) -> Result<()>;
    /// Move the root, whole (nested subvolumes or child datasets travel with it), to entry `to`.
    fn move_root(&mut self, to: &str) -> Result<()>;
    /// Move entry `from` into the root's place.
    fn activate(&mut self, from: &str) -> Result<()>;
    /// Rename an entry (and the parts kept beside it), never replacing.
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    /// Make entry `kept` and everything in it read-only as old root `to`: in place (then rename),
    /// or by a read-only copy committed as `to` after which `kept` is deleted.
    fn seal(&mut self, kept: &str, to: &str) -> Result<()>;
    /// Delete entry `name` with everything in it. Nothing happens if it does not exist.
    fn destroy(&mut self, name: &str) -> Result<()>;
    fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()>;
    /// Make everything done so far durable.
    fn sync(&mut self) -> Result<()>;
    /// Take a read-only snapshot of the root as the baseline, replacing an older one (the caller
    /// has created the snapshots location, and syncs).
    fn take_baseline(&mut self) -> Result<()>;
    /// Unmount and release.
    fn close(self: Box<Self>) -> Result<()>;
    /// A descriptor every mount of this filesystem shares, for the one-writer lock
    /// (src/lock.rs): the top-level directory, or `/dev/zfs`. Locked while the backend is open.
    fn lock_fd(&self) -> rustix::fd::BorrowedFd<'_>;
}

/// Read access for the tools that run after boot (`diff`, `restore`, `status`).
#[cfg(feature = "tools")]
pub trait Browse {
    /// A directory where the current root can be read (through our private mount).
    fn root_path(&mut self) -> Result<PathBuf>;
    /// A directory where entry `name` (an old root, or a `.kept.*` one) can be read.
    fn entry_path(&mut self, name: &str) -> Result<PathBuf>;
    /// Nested subvolumes of entry `name` kept *beside* it (bcachefs: `<name>.nested/`): (path
    /// relative to the root, directory to read it from), parents first. Empty where nested
    /// subvolumes sit inside the entry.
    fn entry_nested(&mut self, name: &str) -> Result<Vec<(String, PathBuf)>>;
    /// A directory where the baseline can be read, if one exists.
    fn baseline_path(&mut self) -> Result<Option<PathBuf>>;
    /// Nested subvolumes of the baseline kept beside it, like [`Browse::entry_nested`].
    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>>;
    /// Paths changed since the baseline, when the filesystem can tell without walking every file
    /// (btrfs generation numbers). `None`: walk and compare.
    fn changed_since_baseline(&mut self) -> Result<Option<Changed>>;
    /// Bytes only entry `name` holds, when the filesystem tracks it (btrfs quotas, ZFS `used`),
    /// and whether the filesystem says the number may be stale (btrfs: quotas inconsistent).
    fn exclusive_bytes(&mut self, name: &str) -> Result<Option<(u64, bool)>>;
}

/// A whole backend.
#[cfg(feature = "tools")]
pub trait Backend: Fs + Browse {}
#[cfg(feature = "tools")]
impl<T: Fs + Browse> Backend for T {}
/// A whole backend (the initrd build reads no trees).
#[cfg(not(feature = "tools"))]
pub trait Backend: Fs {}
#[cfg(not(feature = "tools"))]
impl<T: Fs> Backend for T {}

/// Find the device when none is configured: the filesystem mounted at `/`.
fn device_for(s: &Settings) -> Result<String> {
    if let Some(d) = &s.device {
        return Ok(d.clone());
    }
    let mi = crate::mounts::read_mountinfo()?;
    if let Some(m) = mi
        .iter()
        .rev()
        .find(|m| m.mount_point == "/" && (m.fstype == "btrfs" || m.fstype == "bcachefs"))
    {
        return Ok(m.source.split(':').next().unwrap_or(&m.source).to_string());
    }
    Err(Error::Usage(
        "no device given and / is not on btrfs or bcachefs; pass --device or set `device =` in /etc/ephemeral-root.conf".into(),
    ))
}

/// Find the filesystem the settings name, enter a private mount namespace and open its backend.
/// `now` is the time of the command, used wherever a backend records a time.
pub fn open(s: &Settings, now: i64) -> Result<Box<dyn Backend>> {
    if s.fstype == Some(FsType::Zfs) {
        return zfs::open(s, now);
    }
    let device = device_for(s)?;
    let (members, sup) = crate::probe::resolve_devices(&device)?;
    let found = sup.as_ref().map(|x| x.fstype);
    let fstype = match (s.fstype, found) {
        (_, None) => {
            return Err(Error::Refused(format!(
                "{device} does not hold a btrfs or bcachefs filesystem (no superblock found); check --device / `device =`"
            )))
        }
        (Some(want), Some(got)) if want != got => {
            return Err(Error::Refused(format!(
                "{device} holds {got}, but fstype is {want}; fix --fstype / `fstype =` or the device"
            )))
        }
        (_, Some(got)) => got,
    };
    crate::mounts::enter_private_namespace()?;
    match fstype {
        FsType::Btrfs => btrfs::open(&members, s, now),
        FsType::Bcachefs => bcachefs::open(&members, s, now),
        FsType::Zfs => zfs::open(s, now),
    }
}
