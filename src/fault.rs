//! Fault injection for crash-safety tests (cargo feature `fault-injection`).
//!
//! `EPHEMERAL_ROOT_FAULT=<point>` aborts the process (no cleanup, no unmount) when execution reaches
//! that point; `EPHEMERAL_ROOT_FAULT_DELAY_MS=<ms>` sleeps at every point, which widens the window
//! for the power-cut VM tests. Without the feature, [`point`] compiles to nothing. The hidden
//! command `ephemeral-root fault-points` prints every point, one per line, in the order a full
//! rollback and finish reach them: tests iterate over that list.

macro_rules! points {
    ($($(#[$doc:meta])* $v:ident = $s:literal,)*) => {
        /// Every place a crash can be injected.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Point {
            $($(#[$doc])* $v,)*
        }
        impl Point {
            pub const ALL: &'static [Point] = &[$(Point::$v,)*];
            pub fn name(self) -> &'static str {
                match self {
                    $(Point::$v => $s,)*
                }
            }
        }
    };
}

points! {
    /// Before each step of a plan (one per kind of step).
    StepCreateSnapshotsLocation = "step:create-snapshots-location",
    SnapshotsLocationCreated = "snapshots-location:created",
    StepDiscard = "step:discard",
    StepBuildNewRoot = "step:build-new-root",
    NewRootCreated = "new-root:created",
    NewRootChild = "new-root:child",
    NewRootRecorded = "new-root:recorded",
    StepCopyRoot = "step:copy-root",
    CopyStaged = "copy:staged",
    CopyNested = "copy:nested",
    StepMoveRootAside = "step:move-root-aside",
    StepRetireRoot = "step:retire-root",
    MoveMoved = "move:moved",
    StepActivateNewRoot = "step:activate-new-root",
    ActivateMoved = "activate:moved",
    StepRename = "step:rename",
    RenameStore = "rename:store",
    RenameDone = "rename:done",
    StepSync = "step:sync",
    SyncDone = "sync:done",
    StepSealOldRoot = "step:seal-old-root",
    /// btrfs, ZFS: the tree is read-only, not yet renamed.
    SealReadonly = "seal:readonly",
    /// bcachefs: the read-only copy is staged, not yet committed.
    SealCopied = "seal:copied",
    SealCommitted = "seal:committed",
    StepDelete = "step:delete",
    DeleteWritable = "delete:writable",
    DeleteChildDeleted = "delete:child-deleted",
    DeleteDeleted = "delete:deleted",
    StepPrune = "step:prune",
    PruneRenamed = "prune:renamed",
    BaselineStaged = "baseline:staged",
    BaselineDone = "baseline:done",
}

impl Point {
    #[cfg(test)]
    pub fn parse(s: &str) -> Option<Point> {
        Point::ALL.iter().copied().find(|p| p.name() == s)
    }
}

/// Points in `restore` (not part of a rollback or finish, so not in [`Point::ALL`], which the
/// crash-safety tests walk): before each non-directory is copied, and after the copy is complete
/// but before it is synced and renamed into place.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub const RESTORE_POINTS: &[&str] = &["restore:copying", "restore:copied"];

#[cfg(feature = "fault-injection")]
pub fn point(p: Point) {
    hit(p.name())
}

/// A point of [`RESTORE_POINTS`].
#[cfg(feature = "fault-injection")]
pub fn restore_point(name: &str) {
    debug_assert!(
        RESTORE_POINTS.contains(&name),
        "unregistered fault point {name}"
    );
    hit(name)
}

#[cfg(feature = "fault-injection")]
fn hit(name: &str) {
    if let Some(ms) = std::env::var("EPHEMERAL_ROOT_FAULT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if std::env::var("EPHEMERAL_ROOT_FAULT").ok().as_deref() == Some(name) {
        log::error!("fault injection: aborting at {name}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_p: Point) {}

pub const ENABLED: bool = cfg!(feature = "fault-injection");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        for (i, p) in Point::ALL.iter().enumerate() {
            assert_eq!(Point::parse(p.name()), Some(*p));
            assert!(
                !Point::ALL[..i].iter().any(|q| q.name() == p.name()),
                "{} twice",
                p.name()
            );
        }
        assert_eq!(Point::parse("nope"), None);
    }
}
