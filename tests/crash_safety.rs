//! Crash safety: abort at every fault point (and again during recovery), then run again without a
//! fault, and check the invariants: exactly one root, fresh; no old root lost or duplicated; no
//! half-built or half-deleted object counted as kept; every old root read-only; nothing else touched.
//!
//! Needs the binary built with `--features fault-injection` (the README's test command does that).

mod common;
use common::*;
use std::os::unix::process::ExitStatusExt;

#[cfg(not(feature = "fault-injection"))]
#[test]
fn crash_tests_need_the_fault_injection_feature() {
    if std::env::var("EPHEMERAL_ROOT_ALLOW_SKIP").as_deref() == Ok("1")
        && std::env::var("CI").is_err()
    {
        eprintln!("\n*** SKIPPED *** crash-safety tests: build with `cargo test --features fault-injection`\n");
        return;
    }
    panic!("crash-safety tests need `cargo test --features fault-injection` (or EPHEMERAL_ROOT_ALLOW_SKIP=1 outside CI)");
}

fn points() -> Vec<String> {
    let o = std::process::Command::new(bin())
        .arg("fault-points")
        .output()
        .unwrap();
    assert!(o.status.success(), "fault-points: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Faults injected during the *recovery* run, to prove recovery itself is crash-safe.
const RECOVERY_FAULTS: &[&str] = &[
    "step:discard",
    "discard:child-deleted",
    "delete:writable",
    "delete:child-deleted",
    "new-root:child",
];

/// Run with a fault; returns the point if the process aborted there.
fn run_fault(fs: &mut LoopFs, args: &[&str], point: &str) -> Option<String> {
    let o = fs.run_env(args, &[("EPHEMERAL_ROOT_FAULT", point)]);
    if o.status.signal() == Some(6) {
        assert!(
            stderr(&o).contains(&format!("fault injection: aborting at {point}")),
            "{}",
            stderr(&o)
        );
        return Some(point.to_string());
    }
    assert!(
        o.status.success(),
        "run with unreached fault {point} failed: {}",
        stderr(&o)
    );
    None
}

struct Expect {
    /// Old roots that must still exist, with a file each must contain.
    survivors: Vec<(String, String)>,
    /// Marker file the root kept in this run must contain (in exactly one new old root).
    kept_marker: &'static str,
    total_old_roots: usize,
}

fn check_invariants(fs: &mut LoopFs, e: &Expect, ctx: &str) {
    // Exactly one root: a fresh, empty, writable subvolume.
    assert_eq!(
        fs.ls("@root"),
        Vec::<String>::new(),
        "{ctx}: root not empty"
    );
    assert!(!fs.is_readonly("@root"), "{ctx}");
    // Nothing half-done left behind in the snapshots location.
    let dots: Vec<String> = fs
        .ls("@snapshots")
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".pins" && n != ".fresh-root")
        .collect();
    assert!(dots.is_empty(), "{ctx}: leftovers {dots:?}");
    let olds = fs.old_roots();
    assert_eq!(olds.len(), e.total_old_roots, "{ctx}: old roots {olds:?}");
    for (name, file) in &e.survivors {
        assert!(
            fs.exists(&format!("@snapshots/{name}/{file}")),
            "{ctx}: old root {name} lost {file}"
        );
    }
    let holding: Vec<&String> = olds
        .iter()
        .filter(|o| fs_exists(fs, &format!("@snapshots/{o}/{}", e.kept_marker)))
        .collect();
    assert_eq!(holding.len(), 1, "{ctx}: the root's data is in {holding:?}");
    let k = holding[0].clone();
    assert_eq!(
        fs.read(&format!("@snapshots/{k}/var/lib/machines/inner/data"))
            .as_deref(),
        Some("inner now"),
        "{ctx}"
    );
    // Every old root and every nested subvolume in it is read-only; no stray subvolumes.
    for s in fs.subvols() {
        if s.starts_with("@snapshots/") {
            assert!(fs.is_readonly(&s), "{ctx}: {s} writable");
        } else {
            assert!(
                ["@root", "@snapshots", "@persist"].contains(&s.as_str()),
                "{ctx}: stray subvolume {s}"
            );
        }
    }
    assert_eq!(
        fs.read("@persist/keep-me").as_deref(),
        Some("persisted"),
        "{ctx}"
    );
}

fn fs_exists(fs: &mut LoopFs, p: &str) -> bool {
    fs.exists(p)
}

fn fill_now(fs: &mut LoopFs) {
    fs.write("@root/etc/now.conf", "now");
    fs.subvol("@root/var/lib/machines");
    fs.subvol("@root/var/lib/machines/inner");
    fs.write("@root/var/lib/machines/inner/data", "inner now");
}

#[cfg(feature = "fault-injection")]
#[test]
fn every_fault_point_then_recovery() {
    if !require_root("crash_safety") {
        return;
    }
    let all = points();
    assert!(all.len() >= 20, "{all:?}");
    let mut hit: std::collections::BTreeSet<String> = Default::default();
    for (i, p) in all.iter().enumerate() {
        let q = RECOVERY_FAULTS[i % RECOVERY_FAULTS.len()];

        // Scenario A: the first rollback ever (no snapshots location yet).
        let mut fs = LoopFs::new(&format!("crashA{i}"));
        fs.subvol("@root");
        fs.subvol("@persist");
        fs.write("@persist/keep-me", "persisted");
        fill_now(&mut fs);
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "all"], p));
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "all"], q));
        fs.ok(&["rollback", "--keep", "all"]);
        let e = Expect {
            survivors: vec![],
            kept_marker: "etc/now.conf",
            total_old_roots: 1,
        };
        check_invariants(&mut fs, &e, &format!("A fault {p} then {q}"));
        fs.ok(&["rollback", "--keep", "all"]);
        check_invariants(&mut fs, &e, &format!("A fault {p} then {q}, rerun"));
        drop(fs);

        // Scenario B: an earlier old root with nested subvolumes exists and is pruned (--keep 1).
        let mut fs = LoopFs::new(&format!("crashB{i}"));
        fs.subvol("@root");
        fs.subvol("@persist");
        fs.write("@persist/keep-me", "persisted");
        fs.write("@root/etc/earlier.conf", "earlier");
        fs.subvol("@root/srv");
        fs.subvol("@root/srv/inner");
        fs.write("@root/srv/inner/x", "x");
        fs.ok(&["rollback", "--keep", "all"]);
        let earlier = fs.old_roots();
        assert_eq!(earlier.len(), 1);
        fs.ok(&["pin", &earlier[0]]);
        fs.ok(&["unpin", &earlier[0]]);
        fill_now(&mut fs);
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "1"], p));
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "1"], q));
        fs.ok(&["rollback", "--keep", "1"]);
        let e = Expect {
            survivors: vec![],
            kept_marker: "etc/now.conf",
            total_old_roots: 1,
        };
        check_invariants(&mut fs, &e, &format!("B fault {p} then {q}"));

        // Scenario C: same, but retention keeps everything: the earlier old root must survive.
        let mut fs = LoopFs::new(&format!("crashC{i}"));
        fs.subvol("@root");
        fs.subvol("@persist");
        fs.write("@persist/keep-me", "persisted");
        fs.write("@root/etc/earlier.conf", "earlier");
        fs.ok(&["rollback", "--keep", "all"]);
        let earlier = fs.old_roots()[0].clone();
        fill_now(&mut fs);
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "all"], p));
        fs.ok(&["rollback", "--keep", "all"]);
        let e = Expect {
            survivors: vec![(earlier.clone(), "etc/earlier.conf".into())],
            kept_marker: "etc/now.conf",
            total_old_roots: 2,
        };
        check_invariants(&mut fs, &e, &format!("C fault {p}"));
        drop(fs);

        // Scenario D: restore an old root that has nested subvolumes (rd.ephemeral_root.restore).
        let mut fs = LoopFs::new(&format!("crashD{i}"));
        fs.subvol("@root");
        fs.write("@root/etc/earlier.conf", "earlier");
        fs.subvol("@root/srv");
        fs.subvol("@root/srv/inner");
        fs.write("@root/srv/inner/x", "x");
        fs.ok(&["rollback", "--keep", "all"]);
        let earlier = fs.old_roots()[0].clone();
        fs.write("@root/etc/now.conf", "now");
        let cmdline = format!("rd.ephemeral_root.restore={earlier}");
        let args = [
            "rollback",
            "--keep",
            "all",
            "--kernel-cmdline",
            cmdline.as_str(),
        ];
        hit.extend(run_fault(&mut fs, &args, p));
        hit.extend(run_fault(&mut fs, &args, q));
        fs.ok(&args);
        let ctx = format!("D fault {p} then {q}");
        assert_eq!(fs.read("@root/srv/inner/x").as_deref(), Some("x"), "{ctx}");
        assert_eq!(
            fs.read("@root/etc/earlier.conf").as_deref(),
            Some("earlier"),
            "{ctx}"
        );
        assert!(!fs.exists("@root/etc/now.conf"), "{ctx}");
        assert!(!fs.is_readonly("@root/srv/inner"), "{ctx}");
        let olds = fs.old_roots();
        assert_eq!(olds.len(), 2, "{ctx}: {olds:?}");
        let dots: Vec<String> = fs
            .ls("@snapshots")
            .into_iter()
            .filter(|n| n.starts_with('.') && n != ".fresh-root")
            .collect();
        assert!(dots.is_empty(), "{ctx}: leftovers {dots:?}");
        assert!(
            fs.exists(&format!("@snapshots/{earlier}/srv/inner/x")),
            "{ctx}"
        );
        assert_eq!(
            olds.iter()
                .filter(|o| fs_exists(&mut fs, &format!("@snapshots/{o}/etc/now.conf")))
                .count(),
            1,
            "{ctx}"
        );
    }
    // Scenario E (per point): audit mode keeps by snapshot; a later wipe of the unchanged root
    // retires it without a second copy. Faults in both runs.
    for (i, p) in all.iter().enumerate() {
        let mut fs = LoopFs::new(&format!("crashE{i}"));
        fs.subvol("@root");
        fs.subvol("@persist");
        fs.write("@persist/keep-me", "persisted");
        fill_now(&mut fs);
        hit.extend(run_fault(
            &mut fs,
            &["rollback", "--mode", "audit", "--keep", "all"],
            p,
        ));
        fs.ok(&["rollback", "--mode", "audit", "--keep", "all"]);
        let ctx = format!("E audit fault {p}");
        assert_eq!(
            fs.read("@root/etc/now.conf").as_deref(),
            Some("now"),
            "{ctx}: audit wiped the root"
        );
        assert_eq!(
            fs.read("@root/var/lib/machines/inner/data").as_deref(),
            Some("inner now"),
            "{ctx}"
        );
        assert_eq!(fs.old_roots().len(), 1, "{ctx}: {:?}", fs.old_roots());
        hit.extend(run_fault(&mut fs, &["rollback", "--keep", "all"], p));
        fs.ok(&["rollback", "--keep", "all"]);
        let e = Expect {
            survivors: vec![],
            kept_marker: "etc/now.conf",
            total_old_roots: 1,
        };
        check_invariants(&mut fs, &e, &format!("E audit then wipe, fault {p}"));
    }
    let missed: Vec<&String> = all.iter().filter(|p| !hit.contains(*p)).collect();
    assert!(
        missed.is_empty(),
        "fault points never reached by any scenario: {missed:?}"
    );
    eprintln!(
        "crash safety: aborted at all {} fault points; invariants held after every recovery",
        all.len()
    );
}
