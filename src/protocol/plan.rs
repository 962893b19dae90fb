//! Plans as data: from a [`State`] and a request, the steps `rollback`, `finish` or `gc` will take.
//! Pure functions; `--dry-run` prints the plan, otherwise [`super::exec`] executes it.

use super::State;
use crate::backend::RootSource;
use crate::config::Mode;
use crate::layout::{self, Class, Kind};
use crate::retention::{decide, Decision, Item, Policy, Reason};
use crate::timefmt::old_root_name;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateSnapshotsLocation,
    /// Delete a leftover of an interrupted run (`.new-root`, `.incomplete.*`, an orphan store).
    Discard(String),
    /// Build the next root as `.new-root`.
    Build(RootSource),
    /// Move the root, whole, to `.kept.<name>`.
    MoveRootAside(String),
    /// Copy the root as `.incomplete.<name>` (audit mode; renamed to `.kept.<name>` next).
    CopyRoot(String),
    /// Move the root to this `.retired-root.<id>` entry (nothing in it is worth keeping).
    RetireRoot(String),
    /// Move `.new-root` into the root's place.
    Activate,
    Rename(String, String),
    /// Make `.kept.<name>` (first) read-only as old root (second).
    Seal(String, String),
    /// Delete a retired root or an old root being pruned (`.retired-root.*`, `.deleting.*`).
    Delete(String),
    /// Prune: rename entry (first) to `.deleting.<old-root name>` (second), forget its pin, delete.
    Prune {
        entry: String,
        name: String,
        why: String,
    },
    Sync,
}

impl Step {
    pub fn fault_point(&self) -> crate::fault::Point {
        use crate::fault::Point as P;
        match self {
            Step::CreateSnapshotsLocation => P::StepCreateSnapshotsLocation,
            Step::Discard(_) => P::StepDiscard,
            Step::Build(_) => P::StepBuildNewRoot,
            Step::MoveRootAside(_) => P::StepMoveRootAside,
            Step::CopyRoot(_) => P::StepCopyRoot,
            Step::RetireRoot(_) => P::StepRetireRoot,
            Step::Activate => P::StepActivateNewRoot,
            Step::Rename(..) => P::StepRename,
            Step::Seal(..) => P::StepSealOldRoot,
            Step::Delete(_) => P::StepDelete,
            Step::Prune { .. } => P::StepPrune,
            Step::Sync => P::StepSync,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateSnapshotsLocation => f.write_str("create the snapshots location"),
            Step::Discard(n) => write!(f, "discard {n} left by an interrupted run"),
            Step::Build(s) => write!(f, "build the next root ({s})"),
            Step::MoveRootAside(n) => write!(
                f,
                "move the current root, with its nested subvolumes, aside to become old root {n}"
            ),
            Step::CopyRoot(n) => write!(
                f,
                "copy the current root, with its nested subvolumes, to become old root {n} (audit)"
            ),
            Step::RetireRoot(n) => write!(f, "move the current root aside as {n}"),
            Step::Activate => f.write_str("put the next root in place"),
            Step::Rename(a, b) => write!(f, "rename {a} to {b}"),
            Step::Seal(k, n) => write!(f, "make {k} read-only as old root {n}"),
            Step::Delete(n) => write!(f, "delete {n}"),
            Step::Prune { name, why, .. } => write!(f, "prune old root {name} ({why})"),
            Step::Sync => f.write_str("commit to disk"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps; any failure fails the command.
    pub steps: Vec<Step>,
    /// `rollback` only: the work a `finish` that never ran left behind, done after `steps`. A
    /// failure there is reported but does not fail the boot: the new root is already in place.
    pub backlog: Vec<Step>,
    /// Things worth saying that are not steps ("root is unchanged: nothing to keep").
    pub notes: Vec<String>,
    /// The old root this run keeps, if any.
    pub kept: Option<String>,
    /// Retention decisions for every old root (when the plan prunes).
    pub retention: Vec<Decision>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.backlog.is_empty()
    }
}

/// What `rollback` is asked to do.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub root_name: &'a str,
    pub mode: Mode,
    pub restore: Option<&'a str>,
    pub blank: Option<&'a str>,
    pub policy: &'a Policy,
    pub now: i64,
    pub utc_offset: i64,
}

/// Why a plan cannot be made; nothing has been touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A guard said no (live root, …).
    Refused(String),
    /// The configuration names something that is not there.
    Config(String),
}

/// (time, seq) of every old-root name in use: sealed, pending, and assigned by this plan.
struct Names(Vec<(i64, u32)>);

impl Names {
    fn of(st: &State) -> Names {
        Names(st.old_roots().iter().map(|o| (o.time, o.seq)).collect())
    }
    /// The next name for a root that began at `time`: after every name with that time, so a newer
    /// root never sorts before an older one, and a pruned sequence number is never reused.
    fn next(&mut self, time: i64) -> String {
        let seq = self
            .0
            .iter()
            .filter(|(t, _)| *t == time)
            .map(|(_, s)| s + 1)
            .max()
            .unwrap_or(1);
        self.0.push((time, seq));
        old_root_name(time, seq)
    }
}

fn has_entry(st: &State, name: &str) -> bool {
    st.entry(name).is_some()
}

pub fn plan_rollback(st: &State, req: &Request) -> Result<Plan, PlanError> {
    if let Some(at) = st.root.as_ref().and_then(|r| r.facts.mounted_at.as_ref()) {
        return Err(PlanError::Refused(format!(
            "root {:?} is mounted at {at} (a running system?); rollback only runs before the root is mounted, from the initrd — use `check` or `rollback --dry-run` to preview",
            req.root_name
        )));
    }
    if !st.refusals.is_empty() {
        return Err(PlanError::Refused(st.refusals.join("; ")));
    }
    let source = match (req.restore, req.blank) {
        (Some(r), _) => match st.find_old_root(r) {
            Some(o) => RootSource::OldRoot(o.entry.to_string()),
            None => {
                let olds = st.old_roots();
                let hint = match olds.last() {
                    Some(o) => format!("; the newest is {}", o.name),
                    None => "; there are no old roots yet".into(),
                };
                return Err(PlanError::Config(format!(
                    "old root {r:?} (rd.ephemeral_root.restore) does not exist; `ephemeral-root list` shows the names{hint}"
                )));
            }
        },
        (None, Some(b)) => {
            if st.blank_exists == Some(false) {
                return Err(PlanError::Config(format!(
                    "blank template {b:?} does not exist or is not a subvolume; create it (e.g. `btrfs subvolume create <top>/{b}`) or remove `blank`"
                )));
            }
            RootSource::Blank(b.to_string())
        }
        (None, None) => RootSource::Empty,
    };
    let mut plan = Plan::default();
    let mut names = Names::of(st);
    if !st.snapshots_exists {
        plan.steps.push(Step::CreateSnapshotsLocation);
    }
    // Leftovers of an interrupted run go first: they may hold a name this run is about to use
    // (`.new-root`, `.incomplete.<name>`, an orphan `.kept.<name>.nested`). They exist only after a
    // crash; on a normal boot there are none.
    for e in &st.entries {
        if e.kind == Kind::Leftover && e.belongs_to.is_none() {
            if let Some(n) = e.name_str() {
                plan.steps.push(Step::Discard(n.to_string()));
            }
        }
    }
    let build = |plan: &mut Plan| {
        plan.steps.push(Step::Build(source.clone()));
    };
    let mut replaced = false;
    match &st.root {
        None => {
            let pending = st.entries.iter().any(|e| {
                e.kind == Kind::Pending
                    && matches!(e.class, Class::Kept { .. } | Class::RetiredRoot)
            });
            if !pending {
                return Err(PlanError::Config(format!(
                    "root {:?} not found on {}; fix --root / `root =`, or create it once (btrfs: `btrfs subvolume create <top>/{}`)",
                    req.root_name, st.fs, req.root_name
                )));
            }
            plan.notes.push(
                "the root is missing because an interrupted run already moved it aside; building the new root".into(),
            );
            build(&mut plan);
            plan.steps.push(Step::Activate);
        }
        Some(r) => {
            let replace = req.restore.is_some() || req.mode == Mode::Wipe;
            if r.facts.fresh {
                plan.notes.push(format!(
                    "root {} is unchanged since it was created: nothing to keep",
                    r.facts.describe
                ));
            } else if let Some(k) = &r.kept_as {
                plan.notes.push(format!(
                    "root {} is already kept, unchanged, as {k}",
                    r.facts.describe
                ));
            }
            let worth = !r.facts.fresh && r.kept_as.is_none();
            if worth && replace {
                let n = names.next(r.facts.began);
                build(&mut plan);
                plan.steps.push(Step::MoveRootAside(n.clone()));
                plan.steps.push(Step::Activate);
                plan.kept = Some(n);
                replaced = true;
            } else {
                if worth {
                    let n = names.next(r.facts.began);
                    let staging = layout::incomplete(&n);
                    plan.steps.push(Step::CopyRoot(n.clone()));
                    plan.steps.push(Step::Rename(staging, layout::kept(&n)));
                    plan.kept = Some(n);
                }
                if replace && (!r.facts.fresh || req.restore.is_some()) {
                    let to = layout::retired_root(&r.facts.id);
                    if has_entry(st, &to) {
                        // A crash after building but before retiring left the same name behind
                        // (only possible if the root was already retired and re-activated).
                        plan.steps.push(Step::Delete(to.clone()));
                    }
                    build(&mut plan);
                    plan.steps.push(Step::RetireRoot(to));
                    plan.steps.push(Step::Activate);
                    replaced = true;
                } else if req.mode == Mode::Audit && !r.facts.fresh {
                    plan.notes
                        .push("audit mode: the root is kept but not wiped".into());
                }
            }
        }
    }
    // The baseline describes the root being replaced: it goes with it.
    if replaced && st.has_baseline() {
        let doomed = layout::deleting(layout::BASELINE.trim_start_matches('.'));
        if has_entry(st, &doomed) {
            plan.steps.push(Step::Delete(doomed.clone()));
        }
        plan.steps
            .push(Step::Rename(layout::BASELINE.into(), doomed));
    }
    if !plan.steps.is_empty() {
        plan.steps.push(Step::Sync);
    }
    // What a finish that never ran left behind (this run's new `.kept.*` is finish's next time),
    // except what the steps above already discarded.
    let handled: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Discard(n) | Step::Delete(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let backlog_due = st.entries.iter().any(|e| {
        matches!(e.kind, Kind::Pending | Kind::Leftover)
            && e.belongs_to.is_none()
            && !handled.iter().any(|h| e.name == std::ffi::OsStr::new(h))
    });
    if backlog_due {
        let just_kept: Vec<Item> = plan.kept.iter().filter_map(|n| item(n, false)).collect();
        let mut b = plan_finish_with(
            st,
            req.policy,
            req.now,
            req.utc_offset,
            &just_kept,
            &handled,
            &mut names,
        );
        plan.backlog = std::mem::take(&mut b.steps);
        plan.retention = b.retention;
        plan.notes.extend(b.notes);
    }
    Ok(plan)
}

fn item(name: &str, pinned: bool) -> Option<Item> {
    let (time, seq) = crate::timefmt::parse_old_root_name(name)?;
    Some(Item {
        name: name.to_string(),
        time,
        seq,
        pinned,
    })
}

/// `finish` (and `gc`): discard leftovers, seal every `.kept.*` as its old root, delete retired
/// roots and old roots being pruned, then apply the retention policy.
pub fn plan_finish(st: &State, policy: &Policy, now: i64, utc_offset: i64) -> Plan {
    let mut names = Names::of(st);
    plan_finish_with(st, policy, now, utc_offset, &[], &[], &mut names)
}

fn plan_finish_with(
    st: &State,
    policy: &Policy,
    now: i64,
    utc_offset: i64,
    just_kept: &[Item],
    handled: &[String],
    names: &mut Names,
) -> Plan {
    let mut plan = Plan::default();
    // Parts go with their owners; an orphan part is discarded on its own.
    let own = |e: &&super::Entry| {
        e.belongs_to.is_none() && !handled.iter().any(|h| e.name == std::ffi::OsStr::new(h))
    };
    for e in st.entries.iter().filter(own) {
        if e.kind == Kind::Leftover {
            if let Some(n) = e.name_str() {
                plan.steps.push(Step::Discard(n.to_string()));
            }
        }
    }
    // Old roots after this plan: (entry now, final old-root name, pinned).
    let mut olds: Vec<(String, String, bool)> = Vec::new();
    for o in st.old_roots() {
        if o.sealed {
            olds.push((o.entry.to_string(), o.name.to_string(), o.facts.pinned));
        }
    }
    for o in st.old_roots().into_iter().filter(|o| !o.sealed) {
        let collides = st.old_roots().iter().any(|s| s.sealed && s.name == o.name);
        if collides && st.sealed_copies.iter().any(|k| k == o.entry) {
            // A crash inside a seal by copying: the copy was committed; the original goes.
            let to = layout::retired_root(&format!("kept-{}", o.facts.id));
            plan.notes.push(format!(
                "{} was already sealed as {}; deleting the writable original",
                o.entry, o.name
            ));
            plan.steps
                .push(Step::Rename(o.entry.to_string(), to.clone()));
            plan.steps.push(Step::Delete(to));
            continue;
        }
        let target = if collides {
            let m = names.next(o.time);
            plan.notes.push(format!(
                "{} and old root {} both exist and hold different roots; keeping {} as {m}",
                o.entry, o.name, o.entry
            ));
            m
        } else {
            o.name.to_string()
        };
        olds.push((o.entry.to_string(), target, o.facts.pinned));
    }
    let retired_ok = st.root.is_some();
    for e in st.entries.iter().filter(own) {
        if e.kind != Kind::Pending {
            continue;
        }
        let Some(n) = e.name_str() else { continue };
        match e.class {
            // A retired root is deleted only once a root is back in place.
            Class::RetiredRoot if retired_ok => plan.steps.push(Step::Delete(n.to_string())),
            Class::Deleting => plan.steps.push(Step::Delete(n.to_string())),
            _ => {}
        }
    }
    // Retention over every old root after this plan, plus the one a running rollback keeps.
    let items: Vec<Item> = olds
        .iter()
        .filter_map(|(_, n, p)| item(n, *p))
        .chain(just_kept.iter().cloned())
        .collect();
    plan.retention = decide(&items, policy, now, utc_offset);
    for d in plan.retention.iter_mut() {
        if d.keep.is_none() && just_kept.iter().any(|j| j.name == d.name) {
            // Never pruned by the run that keeps it, whatever its time says (no RTC: 1970).
            d.keep = Some(Reason::JustKept);
        }
    }
    let pruned: Vec<&str> = plan
        .retention
        .iter()
        .filter(|d| d.keep.is_none())
        .map(|d| d.name.as_str())
        .collect();
    for (entry, name, _) in &olds {
        if pruned.contains(&name.as_str()) {
            continue;
        }
        if entry.starts_with(layout::KEPT_PREFIX) {
            plan.steps.push(Step::Seal(entry.clone(), name.clone()));
        }
    }
    for d in plan.retention.iter().filter(|d| d.keep.is_none()) {
        if let Some((entry, name, _)) = olds.iter().find(|(_, n, _)| *n == d.name) {
            plan.steps.push(Step::Prune {
                entry: entry.clone(),
                name: name.clone(),
                why: format!("retention policy {policy}"),
            });
        }
    }
    if !plan.steps.is_empty() {
        plan.steps.push(Step::Sync);
    }
    plan
}

#[cfg(test)]
mod tests;
