//! Plans as data: from an [`Inventory`] and a request, the list of steps `rollback` or `gc` will
//! take. Pure functions; `--dry-run` prints the plan, otherwise the engine executes it.

use crate::backend::{Inventory, RootSource};
use crate::config::Mode;
use crate::retention::{decide, Decision, Item, Policy};
use crate::timefmt::old_root_name;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateSnapshotsLocation,
    Discard(String),
    BuildNewRoot(RootSource),
    KeepRoot(String),
    MoveRootAside(String),
    RetireRoot(String),
    ActivateNewRoot,
    SealOldRoot(String),
    DeleteRetired(String),
    DeleteOldRoot(String, String),
    Sync,
}

impl Step {
    /// The fault-injection point reached just before this step runs.
    pub fn fault_point(&self) -> &'static str {
        match self {
            Step::CreateSnapshotsLocation => "step:create-snapshots-location",
            Step::Discard(_) => "step:discard",
            Step::BuildNewRoot(_) => "step:build-new-root",
            Step::KeepRoot(_) => "step:keep-root",
            Step::MoveRootAside(_) => "step:move-root-aside",
            Step::SealOldRoot(_) => "step:seal-old-root",
            Step::RetireRoot(_) => "step:retire-root",
            Step::ActivateNewRoot => "step:activate-new-root",
            Step::DeleteRetired(_) => "step:delete-retired",
            Step::DeleteOldRoot(..) => "step:delete-old-root",
            Step::Sync => "step:sync",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateSnapshotsLocation => f.write_str("create the snapshots location"),
            Step::Discard(n) => write!(f, "discard {n} left by an interrupted run"),
            Step::BuildNewRoot(s) => write!(f, "build the next root ({s})"),
            Step::KeepRoot(n) => write!(
                f,
                "keep the current root as read-only old root {n} (snapshot)"
            ),
            Step::MoveRootAside(n) => {
                write!(f, "move the current root, with its nested subvolumes, aside to become old root {n}")
            }
            Step::SealOldRoot(n) => write!(f, "make old root {n} read-only and give it its name"),
            Step::RetireRoot(n) => write!(f, "move the current root aside as {n}"),
            Step::ActivateNewRoot => f.write_str("put the next root in place"),
            Step::DeleteRetired(n) => write!(f, "delete {n}"),
            Step::DeleteOldRoot(n, why) => write!(f, "prune old root {n} ({why})"),
            Step::Sync => f.write_str("commit to disk"),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Things worth saying that are not steps ("root is unchanged: nothing to keep").
    pub notes: Vec<String>,
    /// The old root this run keeps, if any.
    pub kept: Option<String>,
    /// Retention decisions for every old root after this run.
    pub retention: Vec<Decision>,
}

/// What the caller wants.
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

/// The old-root name for a root that began at `began`: the next sequence number after every
/// existing old root with the same start time, so a newer root never sorts before an older one.
pub fn next_name(inv: &Inventory, began: i64) -> String {
    let seq = inv
        .old_roots
        .iter()
        .filter(|o| o.time == began)
        .map(|o| o.seq + 1)
        .max()
        .unwrap_or(1);
    old_root_name(began, seq)
}

pub fn plan_rollback(inv: &Inventory, req: &Request) -> Result<Plan, PlanError> {
    if let Some(at) = &inv.root_mounted_at {
        return Err(PlanError::Refused(format!(
            "root {:?} is mounted at {at} (a running system?); rollback only runs before the root is mounted, from the initrd — use `check` or `rollback --dry-run` to preview",
            req.root_name
        )));
    }
    if !inv.refusals.is_empty() {
        return Err(PlanError::Refused(inv.refusals.join("; ")));
    }
    if let Some(r) = req.restore {
        if !inv.old_roots.iter().any(|o| o.name == r) {
            let hint = match inv.old_roots.iter().max_by_key(|o| (o.time, o.seq)) {
                Some(o) => format!("; the newest is {}", o.name),
                None => "; there are no old roots yet".into(),
            };
            return Err(PlanError::Config(format!(
                "old root {r:?} (rd.ephemeral_root.restore) does not exist; `ephemeral-root list` shows the names{hint}"
            )));
        }
    }
    if let (Some(b), Some(false)) = (req.blank, inv.blank_exists) {
        return Err(PlanError::Config(format!(
            "blank template {b:?} does not exist or is not a subvolume; create it (e.g. `btrfs subvolume create <top>/{b}`) or remove `blank`"
        )));
    }
    let source = match (req.restore, req.blank) {
        (Some(r), _) => RootSource::OldRoot(r.to_string()),
        (None, Some(b)) => RootSource::Blank(b.to_string()),
        (None, None) => RootSource::Empty,
    };
    let mut plan = Plan::default();
    if !inv.snapshots_exists {
        plan.steps.push(Step::CreateSnapshotsLocation);
    }
    for l in &inv.leftovers {
        plan.steps.push(Step::Discard(l.clone()));
    }
    // Old roots this run adds (moved or snapshotted now, or moved by an interrupted run).
    let mut new_old_roots: Vec<Item> = Vec::new();
    let mut retire_this: Option<String> = None;
    // Old roots to seal after the new root is in place: interrupted ones first.
    let mut seal: Vec<String> = inv.unsealed.clone();
    match &inv.root {
        None if !inv.root_replacement_pending => {
            return Err(PlanError::Config(format!(
                "root {:?} not found on {}; fix --root / `root =`, or create it once (btrfs: `btrfs subvolume create <top>/{}`)",
                req.root_name, inv.fs, req.root_name
            )));
        }
        None => {
            plan.notes.push(
                "the root is missing because an interrupted run already kept and moved it; building the new root".into(),
            );
            plan.steps.push(Step::BuildNewRoot(source));
            plan.steps.push(Step::ActivateNewRoot);
        }
        Some(r) => {
            let replace = req.restore.is_some() || req.mode == Mode::Wipe;
            if r.fresh {
                plan.notes.push(format!(
                    "root {} is unchanged since it was created: nothing to keep",
                    r.describe
                ));
            } else if let Some(k) = &r.kept_as {
                plan.notes.push(format!(
                    "root {} is already kept, unchanged, as {k}",
                    r.describe
                ));
            }
            let worth_keeping = !r.fresh && r.kept_as.is_none();
            if worth_keeping && replace && inv.moves_roots {
                // Keep by moving: O(1), nested subvolumes travel with the root.
                let name = next_name(inv, r.began);
                plan.steps.push(Step::BuildNewRoot(source));
                plan.steps.push(Step::MoveRootAside(name.clone()));
                plan.steps.push(Step::ActivateNewRoot);
                new_old_roots.push(item(&name, r.began));
                plan.kept = Some(name.clone());
                seal.push(name);
            } else {
                if worth_keeping {
                    let name = next_name(inv, r.began);
                    plan.steps.push(Step::KeepRoot(name.clone()));
                    new_old_roots.push(item(&name, r.began));
                    plan.kept = Some(name);
                }
                if replace && (!r.fresh || req.restore.is_some()) {
                    plan.steps.push(Step::BuildNewRoot(source));
                    plan.steps.push(Step::RetireRoot(r.retire_as.clone()));
                    plan.steps.push(Step::ActivateNewRoot);
                    retire_this = Some(r.retire_as.clone());
                } else if req.mode == Mode::Audit && !r.fresh {
                    plan.notes
                        .push("audit mode: the root is kept but not wiped".into());
                }
            }
        }
    }
    for n in &inv.unsealed {
        if let Some((time, _)) = crate::timefmt::parse_old_root_name(n) {
            new_old_roots.push(item(n, time));
        }
    }
    for n in &seal {
        plan.steps.push(Step::SealOldRoot(n.clone()));
    }
    // The baseline describes the root being replaced: it goes with it.
    let replaced =
        retire_this.is_some() || inv.root.is_none() || plan.kept.is_some() && inv.moves_roots;
    let baseline = (inv.baseline && replaced).then(|| crate::backend::BASELINE.to_string());
    for x in inv
        .retired
        .iter()
        .chain(retire_this.iter())
        .chain(baseline.iter())
    {
        let st = Step::DeleteRetired(x.clone());
        if !plan.steps.contains(&st) {
            plan.steps.push(st);
        }
    }
    prune(
        inv,
        &new_old_roots,
        req.policy,
        req.now,
        req.utc_offset,
        &mut plan,
    );
    plan.steps.push(Step::Sync);
    Ok(plan)
}

fn item(name: &str, time: i64) -> Item {
    let seq = crate::timefmt::parse_old_root_name(name)
        .map(|x| x.1)
        .unwrap_or(1);
    Item {
        name: name.to_string(),
        time,
        seq,
        pinned: false,
    }
}

fn prune(inv: &Inventory, extra: &[Item], policy: &Policy, now: i64, off: i64, plan: &mut Plan) {
    let items: Vec<Item> = inv
        .old_roots
        .iter()
        .map(|o| Item {
            name: o.name.clone(),
            time: o.time,
            seq: o.seq,
            pinned: o.pinned,
        })
        .chain(extra.iter().cloned())
        .collect();
    plan.retention = decide(&items, policy, now, off);
    // The old root kept by this very run is never pruned by it, whatever its time says (a machine
    // without a real-time clock may think its root began in 1970).
    for d in plan.retention.iter_mut() {
        if d.keep.is_none() && extra.iter().any(|e| e.name == d.name) {
            d.keep = Some(crate::retention::Reason::JustKept);
        }
    }
    for d in &plan.retention {
        if d.keep.is_none() {
            plan.steps.push(Step::DeleteOldRoot(
                d.name.clone(),
                format!("retention policy {policy}"),
            ));
        }
    }
}

/// `gc`: finish interrupted deletions, then apply the retention policy.
pub fn plan_gc(inv: &Inventory, policy: &Policy, now: i64, utc_offset: i64) -> Plan {
    let mut plan = Plan::default();
    for x in &inv.retired {
        // A retired root is deleted only once a root is back in place (rollback does that).
        if inv.root.is_some() || !x.starts_with(crate::backend::RETIRED_ROOT_PREFIX) {
            plan.steps.push(Step::DeleteRetired(x.clone()));
        }
    }
    prune(inv, &[], policy, now, utc_offset, &mut plan);
    if !plan.steps.is_empty() {
        plan.steps.push(Step::Sync);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{OldRoot, RootState};

    fn root(fresh: bool, kept_as: Option<&str>) -> RootState {
        RootState {
            began: 1_795_135_683,
            fresh,
            kept_as: kept_as.map(str::to_string),
            nested: vec![],
            retire_as: ".retired-root.256".into(),
            describe: "@root (subvolume 256)".into(),
        }
    }

    fn old(name: &str) -> OldRoot {
        let (time, seq) = crate::timefmt::parse_old_root_name(name).unwrap();
        OldRoot {
            name: name.into(),
            time,
            seq,
            pinned: false,
            kept_at: None,
            readonly: true,
            nested: vec![],
        }
    }

    fn req<'a>(mode: Mode, restore: Option<&'a str>, policy: &'a Policy) -> Request<'a> {
        Request {
            root_name: "@root",
            mode,
            restore,
            blank: None,
            policy,
            now: 1_795_200_000,
            utc_offset: 0,
        }
    }

    const N: &str = "2026-11-20T00-48-03Z";

    #[test]
    fn table() {
        let all = Policy::All;
        let base = Inventory {
            fs: "btrfs on /dev/x".into(),
            snapshots_exists: true,
            ..Default::default()
        };
        use Step::*;
        let cases: Vec<(&str, Inventory, Request, Result<Vec<Step>, &str>)> = vec![
            (
                "first run: create location, keep, replace",
                Inventory { snapshots_exists: false, root: Some(root(false, None)), ..base.clone() },
                req(Mode::Wipe, None, &all),
                Ok(vec![
                    CreateSnapshotsLocation,
                    KeepRoot(N.into()),
                    BuildNewRoot(RootSource::Empty),
                    RetireRoot(".retired-root.256".into()),
                    ActivateNewRoot,
                    DeleteRetired(".retired-root.256".into()),
                    Sync,
                ]),
            ),
            (
                "fresh root: nothing to do",
                Inventory { root: Some(root(true, None)), ..base.clone() },
                req(Mode::Wipe, None, &all),
                Ok(vec![Sync]),
            ),
            (
                "audit: keep only",
                Inventory { root: Some(root(false, None)), ..base.clone() },
                req(Mode::Audit, None, &all),
                Ok(vec![KeepRoot(N.into()), Sync]),
            ),
            (
                "audit again: second name",
                Inventory { root: Some(root(false, None)), old_roots: vec![old(N)], ..base.clone() },
                req(Mode::Audit, None, &all),
                Ok(vec![KeepRoot(format!("{N}-2")), Sync]),
            ),
            (
                "crash after keep: do not keep twice",
                Inventory { root: Some(root(false, Some(N))), old_roots: vec![old(N)], ..base.clone() },
                req(Mode::Wipe, None, &all),
                Ok(vec![
                    BuildNewRoot(RootSource::Empty),
                    RetireRoot(".retired-root.256".into()),
                    ActivateNewRoot,
                    DeleteRetired(".retired-root.256".into()),
                    Sync,
                ]),
            ),
            (
                "crash between retire and activate: rebuild and activate, then delete",
                Inventory {
                    root: None,
                    root_replacement_pending: true,
                    retired: vec![".retired-root.256".into()],
                    leftovers: vec![".new-root".into()],
                    old_roots: vec![old(N)],
                    ..base.clone()
                },
                req(Mode::Wipe, None, &all),
                Ok(vec![
                    Discard(".new-root".into()),
                    BuildNewRoot(RootSource::Empty),
                    ActivateNewRoot,
                    DeleteRetired(".retired-root.256".into()),
                    Sync,
                ]),
            ),
            (
                "missing root without a retired one: config error",
                Inventory { root: None, ..base.clone() },
                req(Mode::Wipe, None, &all),
                Err("root \"@root\" not found"),
            ),
            (
                "restore a missing old root: config error, nothing planned",
                Inventory { root: Some(root(false, None)), old_roots: vec![old(N)], ..base.clone() },
                req(Mode::Wipe, Some("2020-01-01T00-00-00Z"), &all),
                Err("does not exist; `ephemeral-root list` shows the names; the newest is 2026-11-20T00-48-03Z"),
            ),
            (
                "restore on a fresh root still replaces it",
                Inventory { root: Some(root(true, None)), old_roots: vec![old(N)], ..base.clone() },
                req(Mode::Audit, Some(N), &all),
                Ok(vec![
                    BuildNewRoot(RootSource::OldRoot(N.into())),
                    RetireRoot(".retired-root.256".into()),
                    ActivateNewRoot,
                    DeleteRetired(".retired-root.256".into()),
                    Sync,
                ]),
            ),
            (
                "live root: refused",
                Inventory { root: Some(root(false, None)), root_mounted_at: Some("/".into()), ..base.clone() },
                req(Mode::Wipe, None, &all),
                Err("root \"@root\" is mounted at / (a running system?)"),
            ),
            (
                "other refusals",
                Inventory { root: Some(root(false, None)), refusals: vec!["root is the default subvolume".into()], ..base.clone() },
                req(Mode::Wipe, None, &all),
                Err("default subvolume"),
            ),
        ];
        for (what, inv, r, want) in cases {
            match (plan_rollback(&inv, &r), want) {
                (Ok(p), Ok(steps)) => assert_eq!(p.steps, steps, "{what}"),
                (Err(PlanError::Refused(e) | PlanError::Config(e)), Err(frag)) => {
                    assert!(e.contains(frag), "{what}: {e}")
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn names_never_reuse_a_lower_sequence() {
        // T was pruned earlier; T-2 and T-3 remain: the next one is T-4, not T.
        let inv = Inventory {
            old_roots: vec![old(&format!("{N}-2")), old(&format!("{N}-3"))],
            ..Default::default()
        };
        assert_eq!(next_name(&inv, 1_795_135_683), format!("{N}-4"));
    }

    #[test]
    fn the_root_kept_now_is_never_pruned_even_with_a_1970_clock() {
        let keep1 = Policy::parse("1").unwrap();
        let mut r = root(false, None);
        r.began = 5; // created by an initrd that thought it was 1970
        let inv = Inventory {
            snapshots_exists: true,
            root: Some(r),
            old_roots: vec![old(N)],
            ..Default::default()
        };
        let p = plan_rollback(&inv, &req(Mode::Wipe, None, &keep1)).unwrap();
        assert_eq!(p.kept.as_deref(), Some("1970-01-01T00-00-05Z"));
        assert!(
            !p.steps
                .iter()
                .any(|s| matches!(s, Step::DeleteOldRoot(n, _) if n.starts_with("1970"))),
            "{:?}",
            p.steps
        );
    }

    #[test]
    fn move_and_seal_table() {
        use Step::*;
        let all = Policy::All;
        let base = Inventory {
            fs: "btrfs".into(),
            snapshots_exists: true,
            moves_roots: true,
            ..Default::default()
        };
        let cases: Vec<(&str, Inventory, Request, Vec<Step>)> = vec![
            (
                "wipe: build, move aside, activate, seal",
                Inventory {
                    root: Some(root(false, None)),
                    ..base.clone()
                },
                req(Mode::Wipe, None, &all),
                vec![
                    BuildNewRoot(RootSource::Empty),
                    MoveRootAside(N.into()),
                    ActivateNewRoot,
                    SealOldRoot(N.into()),
                    Sync,
                ],
            ),
            (
                "crash after move, before activate: root missing, .kept pending",
                Inventory {
                    root: None,
                    root_replacement_pending: true,
                    unsealed: vec![N.into()],
                    leftovers: vec![".new-root".into()],
                    ..base.clone()
                },
                req(Mode::Wipe, None, &all),
                vec![
                    Discard(".new-root".into()),
                    BuildNewRoot(RootSource::Empty),
                    ActivateNewRoot,
                    SealOldRoot(N.into()),
                    Sync,
                ],
            ),
            (
                "crash after activate, before seal: fresh root, seal only",
                Inventory {
                    root: Some(root(true, None)),
                    unsealed: vec![N.into()],
                    ..base.clone()
                },
                req(Mode::Wipe, None, &all),
                vec![SealOldRoot(N.into()), Sync],
            ),
            (
                "audit still snapshots",
                Inventory {
                    root: Some(root(false, None)),
                    ..base.clone()
                },
                req(Mode::Audit, None, &all),
                vec![KeepRoot(N.into()), Sync],
            ),
            (
                "already kept by audit and unchanged, now wipe: retire without a second copy",
                Inventory {
                    root: Some(root(false, Some(N))),
                    old_roots: vec![old(N)],
                    ..base.clone()
                },
                req(Mode::Wipe, None, &all),
                vec![
                    BuildNewRoot(RootSource::Empty),
                    RetireRoot(".retired-root.256".into()),
                    ActivateNewRoot,
                    DeleteRetired(".retired-root.256".into()),
                    Sync,
                ],
            ),
        ];
        for (what, inv, r, want) in cases {
            assert_eq!(plan_rollback(&inv, &r).map(|p| p.steps), Ok(want), "{what}");
        }
        // An unsealed old root counts for retention and is never pruned by the run that seals it.
        let inv = Inventory {
            root: Some(root(true, None)),
            unsealed: vec![N.into()],
            old_roots: vec![old("2026-11-01T00-00-00Z")],
            ..base.clone()
        };
        let p = plan_rollback(&inv, &req(Mode::Wipe, None, &Policy::parse("1").unwrap())).unwrap();
        assert!(
            p.steps.contains(&DeleteOldRoot(
                "2026-11-01T00-00-00Z".into(),
                "retention policy 1".into()
            )),
            "{:?}",
            p.steps
        );
        assert!(!p
            .steps
            .iter()
            .any(|s| matches!(s, DeleteOldRoot(n, _) if n == N)));
    }

    #[test]
    fn blank_missing_is_a_config_error() {
        let p = Policy::All;
        let inv = Inventory {
            snapshots_exists: true,
            root: Some(root(false, None)),
            blank_exists: Some(false),
            ..Default::default()
        };
        let mut r = req(Mode::Wipe, None, &p);
        r.blank = Some("@blank");
        assert!(
            matches!(plan_rollback(&inv, &r), Err(PlanError::Config(e)) if e.contains("blank template \"@blank\""))
        );
    }

    #[test]
    fn retention_counts_the_root_kept_now() {
        let keep1 = Policy::parse("1").unwrap();
        let inv = Inventory {
            snapshots_exists: true,
            root: Some(root(false, None)),
            old_roots: vec![old("2026-11-01T00-00-00Z"), old("2026-11-02T00-00-00Z")],
            ..Default::default()
        };
        let p = plan_rollback(&inv, &req(Mode::Wipe, None, &keep1)).unwrap();
        let pruned: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| {
                if let Step::DeleteOldRoot(n, _) = s {
                    Some(n.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(pruned, vec!["2026-11-02T00-00-00Z", "2026-11-01T00-00-00Z"]);
        assert_eq!(p.kept.as_deref(), Some(N));
    }

    #[test]
    fn gc_never_deletes_a_retired_root_while_the_root_is_missing() {
        let inv = Inventory {
            snapshots_exists: true,
            root: None,
            retired: vec![".retired-root.256".into(), ".deleting.x".into()],
            ..Default::default()
        };
        let p = plan_gc(&inv, &Policy::All, 0, 0);
        assert_eq!(
            p.steps,
            vec![Step::DeleteRetired(".deleting.x".into()), Step::Sync]
        );
    }
}
