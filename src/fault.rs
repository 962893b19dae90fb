//! Fault injection for crash-safety tests (cargo feature `fault-injection`).
//!
//! `EPHEMERAL_ROOT_FAULT=<point>` aborts the process (no cleanup, no unmount) when execution reaches
//! that named point; `EPHEMERAL_ROOT_FAULT_DELAY_MS=<ms>` sleeps at every point, which widens the
//! window for the power-cut VM tests. Without the feature, [`point`] compiles to nothing.

/// Every fault point, in the order a full rollback reaches them. Tests iterate over this list.
pub const POINTS: &[&str] = &[
    "step:create-snapshots-location",
    "snapshots-location:created",
    "step:discard",
    "discard:child-deleted",
    "step:build-new-root",
    "new-root:created",
    "new-root:child",
    "new-root:placeholders",
    "step:keep-root",
    "keep:staged",
    "keep:nested",
    "keep:readonly",
    "keep:committed",
    "step:move-root-aside",
    "move:moved",
    "step:seal-old-root",
    "seal:readonly",
    "seal:sealed",
    "step:retire-root",
    "retire:moved",
    "step:activate-new-root",
    "activate:moved",
    "step:delete-retired",
    "delete:writable",
    "delete:child-deleted",
    "delete:deleted",
    "step:delete-old-root",
    "delete-old:renamed",
    "step:sync",
    "sync:done",
];

/// Points in `restore` (not part of a rollback, so not in [`POINTS`], which the crash-safety
/// tests walk): before each non-directory is copied, and after the copy is complete but before
/// it is synced and renamed into place.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub const RESTORE_POINTS: &[&str] = &["restore:copying", "restore:copied"];

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    debug_assert!(
        POINTS.contains(&name) || RESTORE_POINTS.contains(&name),
        "unregistered fault point {name}"
    );
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
pub fn point(_name: &str) {}

pub const ENABLED: bool = cfg!(feature = "fault-injection");
