//! Every invariant the crash-safety and concurrency tests check can fail: each violation is planted
//! on a real filesystem after a good boot, and the shared check (tests/common/invariants.rs) must
//! name it. A check that passes on a broken state would be worse than none.

mod common;
use common::invariants::{invariants, Expect};
use common::*;

/// A filesystem after two good boots: one earlier old root, one holding today's marker with a
/// nested subvolume; `@persist` untouched.
fn good() -> Option<(LoopFs, String, String)> {
    if !require_root("invariants") {
        return None;
    }
    let mut fs = LoopFs::new("invariants");
    fs.subvol("@root");
    fs.subvol("@persist");
    fs.write("@persist/keep-me", "persisted");
    fs.write("@root/etc/earlier.conf", "earlier");
    fs.boot(&["rollback", "--keep", "all"]);
    let earlier = fs.old_roots()[0].clone();
    fs.write("@root/etc/now.conf", "now");
    fs.subvol("@root/var/lib/machines");
    fs.write("@root/var/lib/machines/data", "inner now");
    fs.boot(&["rollback", "--keep", "all"]);
    let now = fs
        .old_roots()
        .into_iter()
        .find(|o| *o != earlier)
        .expect("second old root");
    Some((fs, earlier, now))
}

fn expect(earlier: &str) -> Expect<'static> {
    Expect {
        survivors: vec![(earlier.to_string(), "etc/earlier.conf".into())],
        kept_marker: "etc/now.conf",
        kept_nested: Some(("var/lib/machines/data", "inner now")),
        total_old_roots: Some(2),
        persisted: true,
    }
}

#[test]
fn each_planted_violation_is_reported() {
    let Some((mut fs, earlier, now)) = good() else {
        return;
    };
    let e = expect(&earlier);
    assert_eq!(invariants(&mut fs, &e), Ok(()), "the good state must pass");
    let snap = |fs: &mut LoopFs, from: &str, to: &str, ro: bool| {
        let m = fs.mount().to_path_buf();
        sh(&format!(
            "btrfs -q subvolume snapshot {} {} {}",
            if ro { "-r" } else { "" },
            m.join(from).display(),
            m.join(to).display()
        ));
    };
    let set_ro = |fs: &mut LoopFs, p: &str, ro: bool| {
        let m = fs.mount().to_path_buf();
        sh(&format!(
            "btrfs property set -ts {} ro {ro}",
            m.join(p).display()
        ));
    };
    // (what is planted, how to plant it, how to undo it, what the check must say)
    type Act = Box<dyn Fn(&mut LoopFs)>;
    let (e2, n2, n3, n4, n5, n6) = (
        earlier.clone(),
        now.clone(),
        now.clone(),
        now.clone(),
        earlier.clone(),
        earlier.clone(),
    );
    let cases: Vec<(&str, Act, Act, &str)> = vec![
        (
            "a root moved aside and never sealed (.kept)",
            Box::new(move |fs| {
                snap(
                    fs,
                    &format!("@snapshots/{e2}"),
                    "@snapshots/.kept.2020-01-01T00-00-00Z",
                    false,
                )
            }),
            Box::new(|fs| {
                let m = fs.mount().to_path_buf();
                sh(&format!(
                    "btrfs -q subvolume delete {}",
                    m.join("@snapshots/.kept.2020-01-01T00-00-00Z").display()
                ));
            }),
            "not clean",
        ),
        (
            "a writable old root",
            Box::new(move |fs| set_ro(fs, &format!("@snapshots/{n2}"), false)),
            Box::new(move |_| {
                let _ = &n3;
            }),
            "not clean",
        ),
        (
            "a writable nested subvolume in an old root",
            Box::new(move |fs| {
                set_ro(fs, &format!("@snapshots/{n4}"), false);
                set_ro(fs, &format!("@snapshots/{n4}/var/lib/machines"), false);
                set_ro(fs, &format!("@snapshots/{n4}"), true);
            }),
            Box::new(move |_| {
                let _ = &n5;
            }),
            "not clean",
        ),
        (
            "a second root (a stray subvolume beside it)",
            Box::new(|fs| fs.subvol("@root2")),
            Box::new(|fs| {
                let m = fs.mount().to_path_buf();
                sh(&format!(
                    "btrfs -q subvolume delete {}",
                    m.join("@root2").display()
                ));
            }),
            "stray subvolume @root2",
        ),
        (
            "a root that is not fresh",
            Box::new(|fs| fs.write("@root/etc/stale", "x")),
            Box::new(|fs| {
                let p = fs.p("@root/etc");
                std::fs::remove_dir_all(p).unwrap();
            }),
            "root not fresh",
        ),
        (
            "persisted data changed",
            Box::new(|fs| fs.write("@persist/keep-me", "gone")),
            Box::new(|fs| fs.write("@persist/keep-me", "persisted")),
            "persisted data changed",
        ),
        (
            "an old root lost",
            Box::new(move |fs| {
                let m = fs.mount().to_path_buf();
                sh(&format!(
                    "btrfs property set -ts {} ro false && rm {}",
                    m.join(format!("@snapshots/{n6}")).display(),
                    m.join(format!("@snapshots/{n6}/etc/earlier.conf"))
                        .display()
                ));
            }),
            Box::new(|_| {}),
            "lost etc/earlier.conf",
        ),
    ];
    for (what, plant, _undo, want) in &cases[..cases.len() - 1] {
        plant(&mut fs);
        let got = invariants(&mut fs, &e);
        assert!(
            got.as_ref().is_err_and(|m| m.contains(want)),
            "{what}: the check said {got:?}, want an error with {want:?}"
        );
        // Every plant is undone before the next, so each is the only violation.
        _undo(&mut fs);
        // Every old root and everything nested in it read-only again.
        for sv in fs.subvols() {
            if sv.starts_with("@snapshots/") {
                set_ro(&mut fs, &sv, true);
            }
        }
        assert_eq!(invariants(&mut fs, &e), Ok(()), "after undoing {what}");
    }
    // The root kept twice (a duplicate old root holding today's marker).
    snap(
        &mut fs,
        &format!("@snapshots/{now}"),
        "@snapshots/2020-01-01T00-00-00Z",
        true,
    );
    let e3 = Expect {
        total_old_roots: Some(3),
        ..expect(&earlier)
    };
    let got = invariants(&mut fs, &e3);
    assert!(
        got.as_ref()
            .is_err_and(|m| m.contains("the root's data (etc/now.conf) is in")),
        "duplicate: {got:?}"
    );
    // Last (it cannot be undone): an old root loses its files.
    let (what, plant, _, want) = &cases[cases.len() - 1];
    plant(&mut fs);
    let got = invariants(&mut fs, &e3);
    assert!(
        got.as_ref()
            .is_err_and(|m| m.contains(want) || m.contains("not clean")),
        "{what}: {got:?}"
    );
}
