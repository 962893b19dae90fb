//! ZFS backend: talks to `/dev/zfs` directly (`crate::zfs::ioctl`), never runs `zfs`/`zpool`.
//!
//! The root dataset R is kept by *moving* it (an atomic DSL rename) under the snapshots dataset S,
//! exactly like btrfs moves its root subvolume: `S/.new-root` is created (empty with R's locally
//! set properties, or a clone of the blank snapshot / of an old root), R is renamed to
//! `S/.kept.<name>`, `S/.new-root` is renamed to R, then `S/.kept.<name>` and every dataset below
//! it get `readonly=on, canmount=noauto` and the dataset is renamed to `S/<name>`
//! (docs/kernel-interfaces.md#zfs-ops, #zfs-props). Child datasets
//! of R travel with it (the ZFS equivalent of nested subvolumes). Every DSL ioctl returns after
//! its transaction group has synced, so each step is on disk when it returns.
//!
//! Freshness: every root we build gets a snapshot `@ephemeral-root-fresh.<t>` right after it is
//! created, before anyone can mount it. A root whose most recent snapshot is that one and whose
//! `written` (bytes written since the most recent snapshot) is 0, and whose child datasets (a
//! restored root's) all carry the same marker with nothing written since, is unchanged since we
//! built it. Audit copies are clones of `R@ephemeral-root-audit.<name>.<t>`:
//! R is "already kept as <name>" when that is still its most recent snapshot, nothing was written
//! since, and old root `<name>`'s origin is that snapshot.
//!
//! Deletion only ever touches `S/<entry>` and datasets below it (checked by name with the `S/`
//! boundary), children before parents, snapshots before their dataset. Snapshots that are the
//! origin of clones inside R or S (audit copies, restored roots) are handed over to the clone
//! with PROMOTE first; a clone anywhere else stops the deletion with a message.

#[cfg(feature = "tools")]
use super::Browse;
use super::{Detail, Facts, Fs, RawEntry, RootFacts, RootSource};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::layout::{self, is_below};
use crate::mounts::{self, Mounted};
use crate::zfs::ioctl::{self as z, DatasetStats, ListEntry, ModuleVersion, ZfsError};
use crate::zfs::nvlist::{NvList, Value};
use rustix::io::Errno;
#[cfg(feature = "tools")]
use std::path::PathBuf;

/// Snapshot taken of every root we build, right after it is built (prefix; `.<t>` follows).
pub const FRESH_SNAP: &str = "ephemeral-root-fresh";
/// Snapshot of the root an audit copy is cloned from (prefix; `<name>.<t>` follows).
pub const AUDIT_SNAP: &str = "ephemeral-root-audit.";
/// Snapshot of an old root a restored root is cloned from (prefix; `.<t>` follows).
pub const RESTORE_SNAP: &str = "ephemeral-root-restore";
/// Snapshot of the root (and its child datasets) taken by `baseline`. It travels with the root
/// when the root is kept and is destroyed with that old root.
pub const BASELINE_SNAP: &str = "ephemeral-root-baseline";
/// User property recording the root's own `canmount` before sealing changed it ("-" = not set).
pub const ROOT_CANMOUNT_PROP: &str = "ephemeral-root:root-canmount";

/// Properties never copied from the root to a new root or an old-root copy.
const NOT_COPIED: &[&str] = &[
    "readonly",
    "canmount",
    "version",
    "encryption",
    "keyformat",
    "keylocation",
    "pbkdf2iters",
    "pbkdf2salt",
    "encryptionroot",
    "keystatus",
    "origin",
];

fn ze(what: impl std::fmt::Display, e: ZfsError) -> Error {
    if e.is(Errno::ACCESS) {
        return Error::Refused(format!("{what}: {e}"));
    }
    Error::Other(format!("{what}: {e}"))
}

/// A dataset name as the user gives it: `pool/a/b`, no snapshot, no leading slash.
pub fn check_dataset_name(what: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
        || name.contains(['@', '%', '#'])
        || !name.contains('/')
        || name.len() >= z::MAX_DATASET_NAME_LEN - 64;
    if bad {
        return Err(Error::Usage(format!(
            "on zfs, {what} must be a dataset name below the pool, e.g. rpool/local/root and rpool/local/old-roots (got {name:?}); set --{what} / `{what} =`"
        )));
    }
    Ok(())
}

/// `name` is `parent/…` (strictly below `parent`).
fn below(name: &str, parent: &str) -> bool {
    !parent.is_empty() && is_below(name, parent)
}

fn fs_of(snap: &str) -> &str {
    snap.split('@').next().unwrap_or(snap)
}

/// Locally set properties of `st` that a copy of it should get: everything local except
/// `readonly`, encryption parameters and our own `ephemeral-root:*` user properties; `canmount`
/// is the root's own value (recorded in [`ROOT_CANMOUNT_PROP`] when sealing changed it).
pub fn copied_props(st: &DatasetStats) -> NvList {
    let mut out = NvList::new();
    for (name, v) in st.local_props().pairs() {
        if NOT_COPIED.contains(&name.as_str()) || name.starts_with("ephemeral-root:") {
            continue;
        }
        match v {
            Value::Uint64(_) | Value::String(_) => {
                out.insert(name.clone(), v.clone());
            }
            _ => {}
        }
    }
    match st.prop(ROOT_CANMOUNT_PROP).map(|p| p.value) {
        Some(Value::String(s)) if s == "-" => {}
        Some(Value::String(s)) => {
            if let Ok(n) = s.parse::<u64>() {
                out.insert("canmount", Value::Uint64(n));
            }
        }
        _ => {
            if st.is_local("canmount") {
                out.insert("canmount", Value::Uint64(st.canmount()));
            }
        }
    }
    out
}

/// Prefer a mounted-at path of `ds` or anything below it.
fn mounted_at(mi: &[mounts::MountInfo], ds: &str) -> Option<String> {
    mi.iter()
        .find(|m| m.fstype == "zfs" && (m.source == ds || below(&m.source, ds)))
        .map(|m| format!("{} ({})", m.mount_point, m.source))
}

pub fn open(s: &Settings, now: i64) -> Result<Box<dyn super::Backend>> {
    check_dataset_name("root", &s.root)?;
    check_dataset_name("snapshots", &s.snapshots)?;
    if z::pool_of(&s.root) != z::pool_of(&s.snapshots) {
        return Err(Error::Usage(format!(
            "root {} and snapshots location {} are in different pools; they must share a pool (a dataset can only be renamed within its pool)",
            s.root, s.snapshots
        )));
    }
    if s.root == s.snapshots || below(&s.root, &s.snapshots) || below(&s.snapshots, &s.root) {
        return Err(Error::Usage(format!(
            "root {} and snapshots location {} overlap; keep old roots outside the root, e.g. rpool/local/old-roots",
            s.root, s.snapshots
        )));
    }
    if let Some(b) = &s.blank {
        let ok = b.contains('@') && !b.starts_with('/') && z::pool_of(b) == z::pool_of(&s.root);
        if !ok {
            return Err(Error::Usage(format!(
                "on zfs, blank must be a snapshot in pool {} such as rpool/local/old-roots/.template@blank (got {b:?})",
                z::pool_of(&s.root)
            )));
        }
    }
    if s.device.is_some() {
        log::info!("zfs: --device / `device =` is ignored (the pool is imported before this runs)");
    }
    let version = z::check_module_version().map_err(|e| Error::Refused(e.to_string()))?;
    let dev = z::Zfs::open().map_err(|e| Error::Refused(e.to_string()))?;
    mounts::enter_private_namespace()?;
    Ok(Box::new(Zfs {
        dev,
        version,
        pool: z::pool_of(&s.root).to_string(),
        root: s.root.clone(),
        snaps: s.snapshots.clone(),
        blank: s.blank.clone(),
        mounts: Vec::new(),
        now,
    }))
}

pub struct Zfs {
    dev: z::Zfs,
    version: ModuleVersion,
    pool: String,
    root: String,
    snaps: String,
    blank: Option<String>,
    mounts: Vec<Mounted>,
    /// The time of this command (snapshot names, pins).
    now: i64,
}

impl Zfs {
    fn s(&self, entry: &str) -> String {
        format!("{}/{entry}", self.snaps)
    }

    fn stats(&self, name: &str) -> Result<Option<DatasetStats>> {
        self.dev
            .objset_stats(name)
            .map_err(|e| ze("read dataset properties", e))
    }

    fn exists(&self, name: &str) -> Result<bool> {
        self.dev
            .exists(name)
            .map_err(|e| ze("check dataset existence", e))
    }

    /// All datasets below `name` (not `name` itself), parents before children.
    fn tree(&self, name: &str) -> Result<Vec<ListEntry>> {
        let mut out = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(p) = stack.pop() {
            let mut kids = self
                .dev
                .list_children(&p)
                .map_err(|e| ze(format!("list child datasets of {p}"), e))?;
            kids.sort_by(|a, b| b.name.cmp(&a.name));
            for k in kids {
                stack.push(k.name.clone());
                out.push(k);
            }
        }
        // Pre-order by name: a parent sorts before its children.
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn rel<'a>(&self, base: &str, full: &'a str) -> &'a str {
        full.strip_prefix(base)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(full)
    }

    fn unique_snap(&self, fs: &str, prefix: &str) -> Result<String> {
        let t = self.now;
        for k in 0..100 {
            let cand = if k == 0 {
                format!("{fs}@{prefix}.{t}")
            } else {
                format!("{fs}@{prefix}.{t}-{k}")
            };
            if !self.exists(&cand)? {
                return Ok(cand);
            }
        }
        Err(Error::Other(format!(
            "no free snapshot name {fs}@{prefix}.{t}-N"
        )))
    }

    fn rename_ds(&self, from: &str, to: &str, what: &str) -> Result<()> {
        self.dev
            .rename(from, to)
            .map_err(|e| ze(format!("{what} ({from} → {to})"), e))
    }

    /// The properties a new root gets: from the root, or (root missing after an interrupted run)
    /// from the root that run moved aside.
    fn root_props(&self) -> Result<NvList> {
        if let Some(st) = self.stats(&self.root)? {
            return Ok(copied_props(&st));
        }
        let mut kids = self
            .dev
            .list_children(&self.snaps)
            .map_err(|e| ze(format!("list {}", self.snaps), e))?;
        kids.sort_by(|a, b| b.fast.creation_txg.cmp(&a.fast.creation_txg));
        for k in kids {
            let base = self.rel(&self.snaps, &k.name);
            if base.starts_with(layout::KEPT_PREFIX)
                || base.starts_with(layout::RETIRED_ROOT_PREFIX)
            {
                if let Some(st) = self.stats(&k.name)? {
                    return Ok(copied_props(&st));
                }
            }
        }
        log::warn!(
            "root {} is missing and no moved-aside root records its properties: the new root gets none of its own",
            self.root
        );
        Ok(NvList::new())
    }

    /// Snapshots of `ds` that have clones: hand each over to its clone (PROMOTE) when that clone
    /// is the root or inside the snapshots location; refuse otherwise.
    fn release_clones(&self, ds: &str, victims: &[String]) -> Result<()> {
        // Promoting a clone of the newest snapshot that has clones moves that snapshot and every
        // earlier one to the clone; repeat until `ds` has no snapshot with clones left.
        for _ in 0..16 {
            // Each snapshot's clone count, from its own stats (SNAPSHOT_LIST_NEXT fills it too,
            // docs/kernel-interfaces.md#zfs-list; one more call per snapshot, only when pruning).
            let mut newest: Option<ListEntry> = None;
            for s in self
                .dev
                .list_snapshots(ds, 0, 0)
                .map_err(|e| ze(format!("list snapshots of {ds}"), e))?
            {
                if let Some(st) = self.stats(&s.name)? {
                    if st.fast.num_clones > 0 {
                        newest = Some(ListEntry {
                            name: s.name,
                            fast: st.fast,
                        });
                    }
                }
            }
            let Some(s) = newest else {
                return Ok(());
            };
            let mut scope: Vec<ListEntry> = self.tree(&self.snaps)?;
            if let Some(r) = self.stats(&self.root)? {
                scope.push(ListEntry {
                    name: self.root.clone(),
                    fast: r.fast.clone(),
                });
                scope.extend(self.tree(&self.root)?);
            }
            let clones: Vec<&ListEntry> = scope
                .iter()
                .filter(|c| c.fast.origin == s.name && !victims.contains(&c.name))
                .collect();
            let Some(c) = clones.iter().max_by_key(|c| c.fast.creation_txg) else {
                return Err(Error::Refused(format!(
                    "snapshot {} has {} clone(s) outside {} and {}; not deleting {ds}: destroy or `zfs promote` those clones first",
                    s.name, s.fast.num_clones, self.root, self.snaps
                )));
            };
            log::info!(
                "{} is the origin of {}: promoting it before deleting {ds}",
                s.name,
                c.name
            );
            self.dev
                .promote(&c.name)
                .map_err(|e| ze(format!("hand snapshot {} over to its clone", s.name), e))?;
        }
        Err(Error::Other(format!(
            "{ds} still has snapshots with clones after 16 promotions; not deleting it"
        )))
    }

    /// Delete `S/<entry>` with everything below it. Only names strictly below S are accepted.
    fn destroy_in_snapshots(&self, entry: &str) -> Result<()> {
        if entry.is_empty() || entry.contains(['/', '@']) {
            return Err(Error::Refused(format!(
                "{entry:?} is not an entry of the snapshots location; not deleting it"
            )));
        }
        let top = self.s(entry);
        if !below(&top, &self.snaps) {
            return Err(Error::Refused(format!(
                "{top} is not inside {}; not deleting it",
                self.snaps
            )));
        }
        if !self.exists(&top)? {
            return Ok(());
        }
        let mi = mounts::read_mountinfo()?;
        if let Some(at) = mounted_at(&mi, &top) {
            return Err(Error::Refused(format!(
                "{top} is mounted at {at}; unmount it first"
            )));
        }
        let mut all: Vec<String> = vec![top.clone()];
        all.extend(self.tree(&top)?.into_iter().map(|e| e.name));
        for ds in &all {
            if !(ds == &top || below(ds, &top)) || !below(ds, &self.snaps) {
                return Err(Error::Refused(format!(
                    "{ds} is not inside {top}; stopping"
                )));
            }
        }
        for ds in all.iter().rev() {
            self.release_clones(ds, &all)?;
        }
        fault::point(Point::DeleteWritable);
        for ds in all.iter().rev() {
            let snaps = self
                .dev
                .list_snapshots(ds, 0, 0)
                .map_err(|e| ze(format!("list snapshots of {ds}"), e))?;
            if !snaps.is_empty() {
                let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
                self.dev
                    .destroy_snaps(&names, false)
                    .map_err(|e| ze(format!("destroy the snapshots of {ds}"), e))?;
            }
            match self.dev.destroy(ds, false) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ze(format!("destroy dataset {ds}"), e)),
            }
            fault::point(if ds == &top {
                Point::DeleteDeleted
            } else {
                Point::DeleteChildDeleted
            });
        }
        Ok(())
    }

    /// Clone `src_fs` (and its child datasets) at snapshot name `snap` (`@…` part) to `dst`,
    /// each with the source's copied properties plus `extra`.
    fn clone_tree(
        &self,
        src_fs: &str,
        snap: &str,
        dst: &str,
        extra: &NvList,
        child_point: Point,
    ) -> Result<()> {
        let kids = self.tree(src_fs)?;
        let mut names = vec![format!("{src_fs}@{snap}")];
        names.extend(kids.iter().map(|k| format!("{}@{snap}", k.name)));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let existing = self.exists(&names[0])?;
        if !existing {
            self.dev
                .snapshot(&refs, &[])
                .map_err(|e| ze(format!("snapshot {src_fs} (with its child datasets)"), e))?;
        }
        let st = self
            .stats(src_fs)?
            .ok_or_else(|| Error::Other(format!("{src_fs} vanished")))?;
        let mut props = copied_props(&st);
        for (k, v) in extra.pairs() {
            props.insert(k.clone(), v.clone());
        }
        self.dev
            .clone_snapshot(dst, &names[0], &props)
            .map_err(|e| ze(format!("clone {} as {dst}", names[0]), e))?;
        for k in &kids {
            let rel = self.rel(src_fs, &k.name);
            let cst = self
                .stats(&k.name)?
                .ok_or_else(|| Error::Other(format!("{} vanished", k.name)))?;
            let mut props = copied_props(&cst);
            for (kk, v) in extra.pairs() {
                props.insert(kk.clone(), v.clone());
            }
            let to = format!("{dst}/{rel}");
            let origin = format!("{}@{snap}", k.name);
            self.dev
                .clone_snapshot(&to, &origin, &props)
                .map_err(|e| ze(format!("clone {origin} as {to}"), e))?;
            fault::point(child_point);
        }
        Ok(())
    }

    /// Every child dataset of the root has the same most recent snapshot (`@tag` of `snap`) and
    /// nothing written since: the whole tree is unchanged since that (atomic) snapshot.
    fn children_unchanged_since(&self, snap: &str) -> Result<bool> {
        let tag = snap.split('@').nth(1).unwrap_or_default();
        for k in self.tree(&self.root)? {
            let (latest, unwritten) = self.latest_snapshot(&k.name)?;
            if latest != Some(format!("{}@{tag}", k.name)) || !unwritten {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn sealed_props(&self, st: &DatasetStats) -> NvList {
        let mut p = NvList::new();
        p.insert("readonly", Value::Uint64(1));
        p.insert("canmount", Value::Uint64(z::CANMOUNT_NOAUTO));
        if st.prop(ROOT_CANMOUNT_PROP).is_none() {
            let orig = if st.is_local("canmount") {
                st.canmount().to_string()
            } else {
                "-".to_string()
            };
            p.insert(ROOT_CANMOUNT_PROP, Value::String(orig));
        }
        p
    }

    #[cfg(feature = "tools")]
    /// Mount filesystem `ds` (or its snapshot `ds@snap`) read-only at `at`, then each child
    /// dataset (or its snapshot of the same name, where it has one) over its directory.
    fn mount_ro(&mut self, ds: &str, snap: Option<&str>, at: PathBuf) -> Result<PathBuf> {
        let name = |fs: &str| match snap {
            Some(s) => format!("{fs}@{s}"),
            None => fs.to_string(),
        };
        let top = name(ds);
        // Mounting at `at` again (root_path twice: `diff`'s walk and its persistence checks)
        // detaches the earlier mount and the child datasets' below it: those are forgotten here,
        // not unmounted a second time at close (EINVAL).
        let _ = rustix::mount::unmount(&at, rustix::mount::UnmountFlags::DETACH);
        let (gone, kept): (Vec<Mounted>, Vec<Mounted>) = std::mem::take(&mut self.mounts)
            .into_iter()
            .partition(|m| m.path.starts_with(&at));
        self.mounts = kept;
        gone.into_iter().for_each(Mounted::forget);
        let m = Mounted::mount_readonly(&top, &at, "zfs", "").map_err(|e| match e {
            Error::Sys { what, source, .. } => Error::Sys {
                what,
                source,
                hint: Some(format!("mount {top} read-only")),
            },
            e => e,
        })?;
        self.mounts.push(m);
        // Child datasets (nested) over their directories, where those exist.
        for k in self.tree(ds)? {
            let kn = name(&k.name);
            let p = at.join(self.rel(ds, &k.name));
            if p.is_dir() && (snap.is_none() || self.exists(&kn)?) {
                match Mounted::mount_readonly(&kn, &p, "zfs", "") {
                    Ok(m) => self.mounts.push(m),
                    Err(e) => log::warn!("cannot mount child {kn}: {e}"),
                }
            }
        }
        Ok(at)
    }
}

impl Zfs {
    /// The root's encryption and location refusals, and the blank template's (see [`Fs::refusals`]).
    fn refusal_list(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        let s_stats = self.stats(&self.snaps)?;
        // Where S gets its key from: S itself, or the parent it will be created under.
        let s_encroot: Option<String> = match &s_stats {
            Some(s) => s.encryption_root().map(str::to_string),
            None => {
                let parent = self.snaps.rsplit_once('/').map(|x| x.0).unwrap_or("");
                match self.stats(parent)? {
                    Some(p) => p.encryption_root().map(str::to_string),
                    None => {
                        v.push(format!(
                            "the parent of snapshots location {} does not exist; create it (e.g. `zfs create -o canmount=off -o mountpoint=none {parent}`) or pick another --snapshots",
                            self.snaps
                        ));
                        None
                    }
                }
            }
        };
        if let Some(r) = self.stats(&self.root)? {
            if r.key_missing() {
                v.push(format!(
                    "root {} is encrypted and its key is not loaded (keystatus {}): unlock it before ephemeral-root runs (order the unit after the pool's key is loaded, e.g. zfs-load-key)",
                    self.root,
                    match r.keystatus() {
                        z::KEYSTATUS_UNAVAILABLE => "unavailable",
                        _ => "unknown",
                    }
                ));
            } else if r.is_encrypted() {
                let er = r.encryption_root().unwrap_or("");
                if er == self.root {
                    v.push(format!(
                        "root {} is its own encryption root: a new root would need its key material, which ephemeral-root does not have; let the root inherit its key from a parent (e.g. rpool/local)",
                        self.root
                    ));
                } else if s_encroot.as_deref() != Some(er) {
                    v.push(format!(
                        "root {} takes its key from {er}, but snapshots location {} {}; ZFS cannot move a dataset to another encryption root: put the snapshots location under {er}",
                        self.root,
                        self.snaps,
                        match &s_encroot {
                            Some(o) => format!("takes it from {o}"),
                            None => "is not encrypted".to_string(),
                        }
                    ));
                }
            } else if let Some(o) = &s_encroot {
                v.push(format!(
                    "root {} is not encrypted but snapshots location {} is (encryption root {o}); ZFS cannot move an unencrypted dataset under an encrypted one",
                    self.root, self.snaps
                ));
            }
        }
        if let Some(b) = &self.blank {
            let fs = fs_of(b);
            if fs == self.root || below(fs, &self.root) {
                v.push(format!(
                    "blank template {b} is a snapshot of the root, which moves away every boot; make a permanent template once: `zfs clone {b} {}/.template && zfs promote {}/.template`, then set blank = {}/.template@{}",
                    self.snaps,
                    self.snaps,
                    self.snaps,
                    b.split('@').nth(1).unwrap_or("blank")
                ));
            } else if below(fs, &self.snaps) && !self.rel(&self.snaps, fs).starts_with('.') {
                v.push(format!(
                    "blank template {b} is inside an old root, which may be pruned; use a template dataset whose name starts with '.', e.g. {}/.template@blank",
                    self.snaps
                ));
            }
        }
        Ok(v)
    }

    /// The latest snapshot of the root and whether nothing was written since.
    fn root_latest(&self) -> Result<(Option<String>, bool)> {
        self.latest_snapshot(&self.root)
    }

    /// The most recent snapshot of `ds` that says how it began (the freshness marker, an audit
    /// snapshot), and whether nothing was written since. The baseline `finish` takes after boot
    /// is looked through when nothing was written between it and the snapshot before it.
    fn latest_snapshot(&self, ds: &str) -> Result<(Option<String>, bool)> {
        let snaps = self
            .dev
            .list_snapshots(ds, 0, 0)
            .map_err(|e| ze(format!("list snapshots of {ds}"), e))?;
        let mut unwritten = self.stats(ds)?.and_then(|s| s.prop_u64("written")) == Some(0);
        for s in snaps.iter().rev() {
            if s.name.ends_with(&format!("@{BASELINE_SNAP}")) {
                // `written` of a snapshot: what changed between the one before it and it.
                unwritten &= self.stats(&s.name)?.and_then(|x| x.prop_u64("written")) == Some(0);
                continue;
            }
            return Ok((Some(s.name.clone()), unwritten));
        }
        Ok((None, unwritten))
    }
}

impl Fs for Zfs {
    fn describe(&self) -> String {
        format!("zfs pool {} (OpenZFS module {})", self.pool, self.version)
    }

    fn snapshots_label(&self) -> String {
        self.snaps.clone()
    }

    fn snapshots_exists(&mut self) -> Result<bool> {
        match self.stats(&self.snaps)? {
            None => Ok(false),
            Some(s) if s.fast.is_snapshot || s.fast.objset_type != z::DMU_OST_ZFS => {
                Err(Error::Refused(format!(
                    "snapshots location {} is not a filesystem dataset",
                    self.snaps
                )))
            }
            Some(_) => Ok(true),
        }
    }

    fn entries(&mut self, detail: Detail) -> Result<Vec<RawEntry>> {
        let mut kids = self
            .dev
            .list_children(&self.snaps)
            .map_err(|e| ze(format!("list {}", self.snaps), e))?;
        kids.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for k in kids {
            let name = self.rel(&self.snaps, &k.name).to_string();
            let mut facts = Facts::default();
            if let Some(st) = self.stats(&k.name)? {
                let children = match detail {
                    Detail::Full => self.tree(&k.name)?,
                    Detail::Names => Vec::new(),
                };
                let mut readonly = st.readonly();
                for c in &children {
                    readonly &= self.stats(&c.name)?.is_some_and(|s| s.readonly());
                }
                facts = Facts {
                    tree: !st.fast.is_snapshot && st.fast.objset_type == z::DMU_OST_ZFS,
                    readonly,
                    pinned: st.is_local(z::PINNED_PROP),
                    nested: children
                        .iter()
                        .map(|c| self.rel(&k.name, &c.name).into())
                        .collect(),
                    id: format!("{:016x}", st.fast.guid),
                    ..Facts::default()
                };
            }
            out.push(RawEntry {
                name: name.into(),
                facts,
            });
        }
        Ok(out)
    }

    fn root(&mut self) -> Result<Option<RootFacts>> {
        let Some(r) = self.stats(&self.root)? else {
            return Ok(None);
        };
        if r.fast.is_snapshot || r.fast.objset_type != z::DMU_OST_ZFS {
            return Err(Error::Refused(format!(
                "root {} is not a filesystem dataset (a volume?); name the root filesystem with --root",
                self.root
            )));
        }
        let mi = mounts::read_mountinfo()?;
        let (latest, unwritten) = self.root_latest()?;
        let latest = latest.unwrap_or_default();
        let fresh = unwritten
            && latest
                .strip_prefix(&format!("{}@{FRESH_SNAP}", self.root))
                .is_some()
            && self.children_unchanged_since(&latest)?;
        let began = r.creation().ok_or_else(|| {
            Error::Other(format!(
                "root {} reports no creation time; cannot name its old root",
                self.root
            ))
        })?;
        Ok(Some(RootFacts {
            began: began as i64,
            fresh,
            id: format!("{:016x}", r.fast.guid),
            describe: format!("{} (dataset guid {:016x})", self.root, r.fast.guid),
            mounted_at: mounted_at(&mi, &self.root),
        }))
    }

    fn refusals(&mut self) -> Result<Vec<String>> {
        self.refusal_list()
    }

    fn blank_exists(&mut self) -> Result<Option<bool>> {
        match &self.blank {
            None => Ok(None),
            Some(b) => Ok(Some(self.exists(b)?)),
        }
    }

    fn root_unchanged_since_copy(&mut self, copy: &str) -> Result<bool> {
        let (latest, unwritten) = self.root_latest()?;
        let Some(latest) = latest else {
            return Ok(false);
        };
        let audit = latest
            .strip_prefix(&format!("{}@{AUDIT_SNAP}", self.root))
            .is_some();
        let origin = self
            .stats(&self.s(copy))?
            .map(|s| s.fast.origin.clone())
            .unwrap_or_default();
        Ok(audit && unwritten && origin == latest && self.children_unchanged_since(&latest)?)
    }

    fn is_sealed_copy(&mut self, _kept: &str, _old: &str) -> Result<bool> {
        // Sealing is in place (properties, then one rename).
        Ok(false)
    }

    fn create_snapshots_location(&mut self) -> Result<()> {
        if self.exists(&self.snaps)? {
            return Ok(());
        }
        let props = NvList::new()
            .with("canmount", Value::Uint64(z::CANMOUNT_OFF))
            .with("mountpoint", Value::String("none".into()));
        self.dev
            .create(&self.snaps, &props)
            .map_err(|e| ze(format!("create snapshots location {}", self.snaps), e))?;
        fault::point(Point::SnapshotsLocationCreated);
        Ok(())
    }

    fn build(&mut self, name: &str, src: &RootSource) -> Result<()> {
        let nr = self.s(name);
        let props = self.root_props()?;
        match src {
            RootSource::Empty => {
                self.dev
                    .create(&nr, &props)
                    .map_err(|e| ze(format!("create the next root {nr}"), e))?;
            }
            RootSource::Blank(b) => {
                self.dev
                    .clone_snapshot(&nr, b, &props)
                    .map_err(|e| ze(format!("clone blank template {b} as {nr}"), e))?;
            }
            RootSource::OldRoot(n) => {
                let from = self.s(n);
                let snap = self.unique_snap(&from, RESTORE_SNAP)?;
                let tag = snap.split('@').nth(1).unwrap_or(RESTORE_SNAP).to_string();
                // The old root's own properties are its root's; only readonly/canmount differ.
                self.clone_tree(&from, &tag, &nr, &NvList::new(), Point::NewRootChild)?;
            }
        }
        fault::point(Point::NewRootCreated);
        // The freshness marker, on the new root and its child datasets (restored ones), atomically.
        let marker = self.unique_snap(&nr, FRESH_SNAP)?;
        let tag = marker.split('@').nth(1).unwrap_or(FRESH_SNAP).to_string();
        let mut names = vec![marker.clone()];
        names.extend(
            self.tree(&nr)?
                .into_iter()
                .map(|k| format!("{}@{tag}", k.name)),
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.dev
            .snapshot(&refs, &[])
            .map_err(|e| ze(format!("snapshot the next root as {marker}"), e))?;
        fault::point(Point::NewRootRecorded);
        Ok(())
    }

    fn copy_root(&mut self, name: &str) -> Result<()> {
        let staging = self.s(name);
        let old_name = name.strip_prefix(layout::INCOMPLETE_PREFIX).unwrap_or(name);
        let snap = self.unique_snap(&self.root, &format!("{AUDIT_SNAP}{old_name}"))?;
        let tag = snap.split('@').nth(1).unwrap_or_default().to_string();
        let extra = NvList::new()
            .with("readonly", Value::Uint64(1))
            .with("canmount", Value::Uint64(z::CANMOUNT_NOAUTO));
        let root = self.root.clone();
        // Clone the root (and its child datasets) read-only into the staging name.
        let kids = self.tree(&root)?;
        let mut names = vec![snap.clone()];
        names.extend(kids.iter().map(|k| format!("{}@{tag}", k.name)));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.dev
            .snapshot(&refs, &[])
            .map_err(|e| ze(format!("snapshot root {root} as {snap}"), e))?;
        let st = self
            .stats(&root)?
            .ok_or_else(|| Error::Other(format!("root {root} vanished")))?;
        let mut props = copied_props(&st);
        for (k, v) in extra.pairs() {
            props.insert(k.clone(), v.clone());
        }
        props.insert(
            ROOT_CANMOUNT_PROP,
            Value::String(if st.is_local("canmount") {
                st.canmount().to_string()
            } else {
                "-".into()
            }),
        );
        self.dev
            .clone_snapshot(&staging, &snap, &props)
            .map_err(|e| ze(format!("clone {snap} as {staging}"), e))?;
        fault::point(Point::CopyStaged);
        for k in &kids {
            let rel = self.rel(&root, &k.name).to_string();
            let cst = self
                .stats(&k.name)?
                .ok_or_else(|| Error::Other(format!("{} vanished", k.name)))?;
            let mut p = copied_props(&cst);
            for (kk, v) in extra.pairs() {
                p.insert(kk.clone(), v.clone());
            }
            let to = format!("{staging}/{rel}");
            let origin = format!("{}@{tag}", k.name);
            self.dev
                .clone_snapshot(&to, &origin, &p)
                .map_err(|e| ze(format!("clone {origin} as {to}"), e))?;
            fault::point(Point::CopyNested);
        }
        Ok(())
    }

    fn move_root(&mut self, to: &str) -> Result<()> {
        if !self.exists(&self.root)? {
            return Err(Error::Other(format!("root {} does not exist", self.root)));
        }
        self.rename_ds(&self.root, &self.s(to), "move the root aside")?;
        fault::point(Point::MoveMoved);
        Ok(())
    }

    fn activate(&mut self, from: &str) -> Result<()> {
        self.rename_ds(&self.s(from), &self.root, "put the next root in place")?;
        fault::point(Point::ActivateMoved);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.rename_ds(&self.s(from), &self.s(to), "rename")?;
        fault::point(Point::RenameDone);
        Ok(())
    }

    fn seal(&mut self, kept: &str, to: &str) -> Result<()> {
        let from = self.s(kept);
        let dst = self.s(to);
        if !self.exists(&from)? {
            if self.exists(&dst)? {
                return Ok(());
            }
            return Err(Error::Other(format!(
                "neither {from} nor {dst} exists; cannot seal old root {to}"
            )));
        }
        let mut all = vec![from.clone()];
        all.extend(self.tree(&from)?.into_iter().map(|e| e.name));
        for ds in all.iter().rev() {
            let st = self
                .stats(ds)?
                .ok_or_else(|| Error::Other(format!("{ds} vanished while sealing")))?;
            if st.readonly() && st.canmount() == z::CANMOUNT_NOAUTO && st.is_local("readonly") {
                continue;
            }
            let p = self.sealed_props(&st);
            self.dev.set_props(ds, &p).map_err(|e| {
                ze(
                    format!("make {ds} read-only (readonly=on, canmount=noauto)"),
                    e,
                )
            })?;
        }
        fault::point(Point::SealReadonly);
        self.rename_ds(&from, &dst, "give the old root its name")?;
        fault::point(Point::SealCommitted);
        Ok(())
    }

    fn destroy(&mut self, name: &str) -> Result<()> {
        self.destroy_in_snapshots(name)
    }

    fn set_pinned(&mut self, name: &str, pinned: bool) -> Result<()> {
        // The pin is a property of the dataset holding the old root, sealed or not.
        let ds = [self.s(name), self.s(&layout::kept(name))]
            .into_iter()
            .find(|d| self.exists(d).unwrap_or(false));
        let Some(ds) = ds else {
            return if pinned {
                Err(Error::Usage(format!("old root {name} does not exist")))
            } else {
                Ok(())
            };
        };
        if pinned {
            let p = NvList::new().with(
                z::PINNED_PROP,
                Value::String(crate::timefmt::rfc3339(self.now)),
            );
            self.dev
                .set_props(&ds, &p)
                .map_err(|e| ze(format!("pin {ds}"), e))
        } else {
            self.dev
                .inherit_prop(&ds, z::PINNED_PROP)
                .map_err(|e| ze(format!("unpin {ds}"), e))
        }
    }

    fn sync(&mut self) -> Result<()> {
        self.dev
            .pool_sync(&self.pool, false)
            .map_err(|e| ze(format!("sync pool {}", self.pool), e))?;
        Ok(())
    }

    /// `R@ephemeral-root-baseline` and the same snapshot of each child dataset, in one atomic
    /// snapshot request; an older baseline is destroyed first. Touches only snapshots of the root.
    fn take_baseline(&mut self) -> Result<()> {
        if !self.exists(&self.root)? {
            return Err(Error::Usage(format!(
                "root {} does not exist; check --root",
                self.root
            )));
        }
        let mut fss = vec![self.root.clone()];
        fss.extend(self.tree(&self.root)?.into_iter().map(|e| e.name));
        let names: Vec<String> = fss.iter().map(|f| format!("{f}@{BASELINE_SNAP}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.dev
            .destroy_snaps(&refs, false)
            .map_err(|e| ze(format!("destroy the old baseline {}", names[0]), e))?;
        fault::point(Point::BaselineStaged);
        self.dev.snapshot(&refs, &[]).map_err(|e| {
            ze(
                format!("snapshot {} (with its child datasets)", names[0]),
                e,
            )
        })?;
        Ok(())
    }

    fn lock_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        rustix::fd::AsFd::as_fd(&self.dev)
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        let mut first: Option<Error> = None;
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = m.unmount() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(feature = "tools")]
impl Browse for Zfs {
    fn root_path(&mut self) -> Result<PathBuf> {
        let at = PathBuf::from(format!("{}/zfs/root", mounts::RUN_DIR));
        let r = self.root.clone();
        self.mount_ro(&r, None, at)
    }

    fn entry_path(&mut self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '@']) {
            return Err(Error::Usage(format!("{name:?} is not an old-root name")));
        }
        let ds = self.s(name);
        let at = PathBuf::from(format!("{}/zfs/{name}", mounts::RUN_DIR));
        self.mount_ro(&ds, None, at)
    }

    fn entry_nested(&mut self, _name: &str) -> Result<Vec<(String, PathBuf)>> {
        // Child datasets are mounted over their directories by `entry_path`.
        Ok(Vec::new())
    }

    /// The baseline snapshots mounted read-only (the root's, then each child dataset's that has
    /// one, over its directory).
    fn baseline_path(&mut self) -> Result<Option<PathBuf>> {
        let snap = format!("{}@{BASELINE_SNAP}", self.root);
        if !self.exists(&snap)? {
            return Ok(None);
        }
        let at = PathBuf::from(format!("{}/zfs/baseline", mounts::RUN_DIR));
        let r = self.root.clone();
        self.mount_ro(&r, Some(BASELINE_SNAP), at).map(Some)
    }

    fn baseline_nested(&mut self) -> Result<Vec<(String, PathBuf)>> {
        Ok(Vec::new())
    }

    fn changed_since_baseline(&mut self) -> Result<Option<super::Changed>> {
        Ok(None)
    }

    fn exclusive_bytes(&mut self, name: &str) -> Result<Option<(u64, bool)>> {
        // `used`: what destroying the dataset (with its children and snapshots) would free.
        Ok(self
            .stats(&self.s(name))?
            .and_then(|s| s.prop_u64("used"))
            .map(|b| (b, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_dataset_name("root", "rpool/local/root").is_ok());
        for bad in [
            "@root",
            "rpool",
            "/rpool/x",
            "rpool/x@s",
            "rpool//x",
            "rpool/x/",
        ] {
            assert!(check_dataset_name("root", bad).is_err(), "{bad}");
        }
        assert!(below("rpool/a/b", "rpool/a"));
        assert!(!below("rpool/ab", "rpool/a"));
        assert!(!below("rpool/a", "rpool/a"));
        assert_eq!(fs_of("rpool/a@b"), "rpool/a");
    }

    fn prop(v: Value, src: &str) -> Value {
        Value::NvList(
            NvList::new()
                .with("value", v)
                .with("source", Value::String(src.into())),
        )
    }

    #[test]
    fn copied_props_filter() {
        let me = "rpool/local/root";
        let props = NvList::new()
            .with("mountpoint", prop(Value::String("legacy".into()), me))
            .with("compression", prop(Value::Uint64(15), "rpool"))
            .with("readonly", prop(Value::Uint64(1), me))
            .with("canmount", prop(Value::Uint64(2), me))
            .with("acltype", prop(Value::Uint64(2), me))
            .with(z::PINNED_PROP, prop(Value::String("x".into()), me))
            .with("user:note", prop(Value::String("hi".into()), me))
            .with(ROOT_CANMOUNT_PROP, prop(Value::String("-".into()), me));
        let st = DatasetStats {
            name: me.into(),
            fast: z::FastStats {
                num_clones: 0,
                creation_txg: 1,
                guid: 1,
                objset_type: 2,
                is_snapshot: false,
                inconsistent: false,
                origin: String::new(),
            },
            props,
        };
        let c = copied_props(&st);
        let keys: Vec<&str> = c.pairs().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["mountpoint", "acltype", "user:note"]);
        let mut st2 = st.clone();
        st2.props.remove(ROOT_CANMOUNT_PROP);
        let c = copied_props(&st2);
        assert_eq!(c.get_u64("canmount"), Some(2));
    }
}
