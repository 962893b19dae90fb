use super::*;
use crate::backend::{Facts, RawEntry, RootFacts};
use crate::protocol::{classify, Root, State};

const N: &str = "2026-11-20T00-48-03Z";
const BEGAN: i64 = 1_795_135_683;

fn root(fresh: bool, kept_as: Option<&str>) -> Option<Root> {
    Some(Root {
        facts: RootFacts {
            began: BEGAN,
            fresh,
            id: "256".into(),
            describe: "@root (subvolume 256)".into(),
            mounted_at: None,
        },
        kept_as: kept_as.map(str::to_string),
    })
}

fn tree(readonly: bool) -> Facts {
    Facts {
        tree: true,
        readonly,
        id: "300".into(),
        ..Default::default()
    }
}

/// A state with these entries (trees; old roots read-only, everything else writable).
fn state(root: Option<Root>, names: &[&str]) -> State {
    let mut names = names.to_vec();
    names.sort();
    let raw = names
        .iter()
        .map(|n| RawEntry {
            name: n.into(),
            facts: tree(crate::timefmt::parse_old_root_name(n).is_some()),
        })
        .collect();
    State {
        fs: "btrfs /dev/x".into(),
        snapshots: "@snapshots".into(),
        snapshots_exists: true,
        root,
        entries: classify(raw, None),
        ..Default::default()
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

fn k(n: &str) -> String {
    format!(".kept.{n}")
}

#[test]
fn rollback_table() {
    use Step::*;
    let all = Policy::All;
    let n2 = format!("{N}-2");
    let cases: Vec<(&str, State, Request, Result<(Vec<Step>, Vec<Step>), &str>)> = vec![
        (
            "first run: create the location, build, move aside, activate, commit",
            State {
                snapshots_exists: false,
                ..state(root(false, None), &[])
            },
            req(Mode::Wipe, None, &all),
            Ok((
                vec![
                    CreateSnapshotsLocation,
                    Build(RootSource::Empty),
                    MoveRootAside(N.into()),
                    Activate,
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "fresh root: nothing to do",
            state(root(true, None), &[N]),
            req(Mode::Wipe, None, &all),
            Ok((vec![], vec![])),
        ),
        (
            "a name in use gets the next sequence number",
            state(root(false, None), &[N]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![Build(RootSource::Empty), MoveRootAside(n2.clone()), Activate, Sync],
                vec![],
            )),
        ),
        (
            "finish never ran: the boot's own work first, then seal the previous root",
            state(root(false, None), &[&k("2026-11-19T00-00-00Z")]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![Build(RootSource::Empty), MoveRootAside(N.into()), Activate, Sync],
                vec![
                    Seal(k("2026-11-19T00-00-00Z"), "2026-11-19T00-00-00Z".into()),
                    Sync,
                ],
            )),
        ),
        (
            "crash after building: the half-built next root is discarded first",
            state(root(false, None), &[".new-root"]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![
                    Discard(".new-root".into()),
                    Build(RootSource::Empty),
                    MoveRootAside(N.into()),
                    Activate,
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "crash after moving aside: root missing, .kept pending: build and activate",
            state(None, &[&k(N), ".new-root"]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![Discard(".new-root".into()), Build(RootSource::Empty), Activate, Sync],
                vec![Seal(k(N), N.into()), Sync],
            )),
        ),
        (
            "missing root without anything moved aside: config error",
            state(None, &[N]),
            req(Mode::Wipe, None, &all),
            Err("root \"@root\" not found"),
        ),
        (
            "audit: copy, then name it .kept (sealed by finish)",
            state(root(false, None), &[]),
            req(Mode::Audit, None, &all),
            Ok((
                vec![CopyRoot(N.into()), Rename(format!(".incomplete.{N}"), k(N)), Sync],
                vec![],
            )),
        ),
        (
            "audit after a crashed copy: discard it first; the leftover is not a backlog",
            state(root(false, None), &[&format!(".incomplete.{N}")]),
            req(Mode::Audit, None, &all),
            Ok((
                vec![
                    Discard(format!(".incomplete.{N}")),
                    CopyRoot(N.into()),
                    Rename(format!(".incomplete.{N}"), k(N)),
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "already kept by audit, unchanged, now wipe: retire without a second copy",
            state(root(false, Some(N)), &[N]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![
                    Build(RootSource::Empty),
                    RetireRoot(".retired-root.256".into()),
                    Activate,
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "restore on a fresh root still replaces it",
            state(root(true, None), &[N]),
            req(Mode::Audit, Some(N), &all),
            Ok((
                vec![
                    Build(RootSource::OldRoot(N.into())),
                    RetireRoot(".retired-root.256".into()),
                    Activate,
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "restore of a root not sealed yet reads it from .kept",
            state(root(false, None), &[&k("2026-11-19T00-00-00Z")]),
            req(Mode::Wipe, Some("2026-11-19T00-00-00Z"), &all),
            Ok((
                vec![
                    Build(RootSource::OldRoot(k("2026-11-19T00-00-00Z"))),
                    MoveRootAside(N.into()),
                    Activate,
                    Sync,
                ],
                vec![
                    Seal(k("2026-11-19T00-00-00Z"), "2026-11-19T00-00-00Z".into()),
                    Sync,
                ],
            )),
        ),
        (
            "restore of a missing old root: config error naming the newest",
            state(root(false, None), &[N]),
            req(Mode::Wipe, Some("2020-01-01T00-00-00Z"), &all),
            Err("does not exist; `ephemeral-root list` shows the names; the newest is 2026-11-20T00-48-03Z"),
        ),
        (
            "the baseline goes with the root it describes",
            state(root(false, None), &[".baseline"]),
            req(Mode::Wipe, None, &all),
            Ok((
                vec![
                    Build(RootSource::Empty),
                    MoveRootAside(N.into()),
                    Activate,
                    Rename(".baseline".into(), ".deleting.baseline".into()),
                    Sync,
                ],
                vec![],
            )),
        ),
        (
            "live root: refused",
            State {
                root: root(false, None).map(|mut r| {
                    r.facts.mounted_at = Some("/".into());
                    r
                }),
                ..state(None, &[])
            },
            req(Mode::Wipe, None, &all),
            Err("root \"@root\" is mounted at / (a running system?)"),
        ),
        (
            "other refusals",
            State {
                refusals: vec!["root is the default subvolume".into()],
                ..state(root(false, None), &[])
            },
            req(Mode::Wipe, None, &all),
            Err("default subvolume"),
        ),
    ];
    for (what, st, r, want) in cases {
        match (plan_rollback(&st, &r), want) {
            (Ok(p), Ok((steps, backlog))) => {
                assert_eq!(p.steps, steps, "{what}: steps");
                assert_eq!(p.backlog, backlog, "{what}: backlog");
            }
            (Err(PlanError::Refused(e) | PlanError::Config(e)), Err(frag)) => {
                assert!(e.contains(frag), "{what}: {e}")
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn finish_table() {
    use Step::*;
    let all = Policy::All;
    let keep1 = Policy::parse("1").unwrap();
    let old1 = "2026-11-01T00-00-00Z";
    let old2 = "2026-11-02T00-00-00Z";
    let cases: Vec<(&str, State, &Policy, Vec<Step>)> = vec![
        (
            "clean: nothing",
            state(root(true, None), &[N]),
            &all,
            vec![],
        ),
        (
            "seal, delete the retired root, discard leftovers",
            state(
                root(true, None),
                &[&k(N), ".retired-root.256", ".incomplete.x", ".deleting.y"],
            ),
            &all,
            vec![
                Discard(".incomplete.x".into()),
                Delete(".deleting.y".into()),
                Delete(".retired-root.256".into()),
                Seal(k(N), N.into()),
                Sync,
            ],
        ),
        (
            "retired roots stay while the root is missing",
            state(None, &[".retired-root.256", ".deleting.y"]),
            &all,
            vec![Delete(".deleting.y".into()), Sync],
        ),
        (
            "prune what retention drops, sealing only what stays",
            state(root(true, None), &[old1, old2, &k(N)]),
            &keep1,
            vec![
                Seal(k(N), N.into()),
                Prune {
                    entry: old2.into(),
                    name: old2.into(),
                    why: "retention policy 1".into(),
                },
                Prune {
                    entry: old1.into(),
                    name: old1.into(),
                    why: "retention policy 1".into(),
                },
                Sync,
            ],
        ),
        (
            "a pending root that retention drops is pruned without sealing",
            state(root(true, None), &[&k(old1), old2]),
            &keep1,
            vec![
                Prune {
                    entry: k(old1),
                    name: old1.into(),
                    why: "retention policy 1".into(),
                },
                Sync,
            ],
        ),
        (
            "a .kept whose name is taken by a different root is sealed under the next name",
            state(root(true, None), &[N, &k(N)]),
            &all,
            vec![Seal(k(N), format!("{N}-2")), Sync],
        ),
        (
            "a .kept whose name is taken by its own sealed copy: the original goes",
            State {
                sealed_copies: vec![k(N)],
                ..state(root(true, None), &[N, &k(N)])
            },
            &all,
            vec![
                Rename(k(N), ".retired-root.kept-300".into()),
                Delete(".retired-root.kept-300".into()),
                Sync,
            ],
        ),
    ];
    for (what, st, policy, want) in cases {
        let p = plan_finish(&st, policy, 1_795_200_000, 0);
        assert_eq!(p.steps, want, "{what}");
        assert!(p.backlog.is_empty());
    }
}

#[test]
fn names_never_reuse_a_lower_sequence() {
    // N was pruned earlier; N-2 (sealed) and N-3 (pending) remain: the next one is N-4.
    let st = state(
        root(false, None),
        &[&format!("{N}-2"), &k(&format!("{N}-3"))],
    );
    let p = plan_rollback(&st, &req(Mode::Wipe, None, &Policy::All)).unwrap();
    assert_eq!(p.kept.as_deref(), Some(format!("{N}-4").as_str()));
}

#[test]
fn the_root_kept_now_is_never_pruned_even_with_a_1970_clock() {
    let keep1 = Policy::parse("1").unwrap();
    let mut st = state(root(false, None), &[N, &k("2026-11-19T00-00-00Z")]);
    if let Some(r) = st.root.as_mut() {
        r.facts.began = 5; // created by an initrd that thought it was 1970
    }
    let p = plan_rollback(&st, &req(Mode::Wipe, None, &keep1)).unwrap();
    assert_eq!(p.kept.as_deref(), Some("1970-01-01T00-00-05Z"));
    let pruned: Vec<&str> = p
        .backlog
        .iter()
        .filter_map(|s| match s {
            Step::Prune { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert!(!pruned.iter().any(|n| n.starts_with("1970")), "{pruned:?}");
    assert_eq!(pruned, vec!["2026-11-19T00-00-00Z"], "{:?}", p.backlog);
}

#[test]
fn blank_missing_is_a_config_error() {
    let p = Policy::All;
    let st = State {
        blank_exists: Some(false),
        ..state(root(false, None), &[])
    };
    let mut r = req(Mode::Wipe, None, &p);
    r.blank = Some("@blank");
    assert!(
        matches!(plan_rollback(&st, &r), Err(PlanError::Config(e)) if e.contains("blank template \"@blank\""))
    );
}
