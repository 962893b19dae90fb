//! `rollback`, `list`, `gc`, `pin` and `check` against real btrfs on loop devices.

mod common;
use common::*;

fn setup(tag: &str) -> Option<LoopFs> {
    if !require_root(tag) {
        return None;
    }
    let mut fs = LoopFs::new(tag);
    fs.subvol("@root");
    fs.subvol("@persist");
    fs.write("@persist/keep-me", "persisted");
    Some(fs)
}

#[test]
fn rollback_keeps_old_root_with_nested_subvolumes_and_wipes() {
    let Some(mut fs) = setup("basic") else { return };
    fill_root(&mut fs, "boot1");
    let out = fs.run(&["rollback"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("step 1/"), "{log}");
    assert!(log.contains("rollback finished in"), "{log}");
    fs.ok(&["finish", "--no-baseline"]);

    // The root is new and empty; persisted data untouched.
    assert_eq!(fs.ls("@root"), Vec::<String>::new());
    assert_eq!(fs.read("@persist/keep-me").as_deref(), Some("persisted"));
    // Exactly one old root, read-only, holding everything including nested subvolumes.
    let olds = fs.old_roots();
    assert_eq!(olds.len(), 1, "{olds:?}");
    let o = format!("@snapshots/{}", olds[0]);
    assert!(fs.is_readonly(&o));
    assert_eq!(
        fs.read(&format!("{o}/etc/boot1.conf")).as_deref(),
        Some("boot1")
    );
    assert_eq!(
        fs.read(&format!("{o}/var/lib/machines/vm/disk")).as_deref(),
        Some("machine boot1")
    );
    assert_eq!(
        fs.read(&format!("{o}/var/lib/machines/inner/data"))
            .as_deref(),
        Some("inner boot1")
    );
    assert!(fs.is_readonly(&format!("{o}/var/lib/machines")));
    assert!(fs.is_readonly(&format!("{o}/var/lib/machines/inner")));
    // No leftovers, and the nested subvolumes no longer exist under @root.
    assert_eq!(fs.ls("@snapshots"), olds);
    let subs = fs.subvols();
    assert!(!subs.iter().any(|s| s.starts_with("@root/")), "{subs:?}");

    // Second boot: new files, second rollback, two old roots, each with its own content.
    fs.write("@root/etc/boot2.conf", "boot2");
    fs.boot(&["rollback"]);
    let olds2 = fs.old_roots();
    assert_eq!(olds2.len(), 2, "{olds2:?}");
    let second = olds2.iter().find(|n| **n != olds[0]).unwrap().clone();
    assert_eq!(
        fs.read(&format!("@snapshots/{second}/etc/boot2.conf"))
            .as_deref(),
        Some("boot2")
    );
    assert!(!fs.exists(&format!("@snapshots/{second}/etc/boot1.conf")));
    assert!(!fs.exists("@root/etc/boot2.conf"));

    // A rollback right after a rollback keeps nothing new: the root is still fresh.
    fs.boot(&["rollback"]);
    assert_eq!(fs.old_roots(), olds2);

    // list --json shows both, with RFC 3339 times and a newest marker.
    let js = fs.ok(&["list", "--json"]);
    for n in &olds2 {
        assert!(js.contains(&format!("\"name\":\"{n}\"")), "{js}");
    }
    assert!(js.contains("\"time\":\"20"), "{js}");
    assert!(js.contains("Z\""), "{js}");
    assert_eq!(js.matches("\"newest\":true").count(), 1, "{js}");
    assert!(js.contains("\"pinned\":false"), "{js}");
    let text = fs.ok(&["list"]);
    assert!(text.contains("← newest"), "{text}");
}

#[test]
fn dry_run_changes_nothing_and_prints_the_plan() {
    let Some(mut fs) = setup("dryrun") else {
        return;
    };
    fill_root(&mut fs, "x");
    let before = fs.fingerprint();
    let out = fs.ok(&["rollback", "--dry-run"]);
    assert!(out.contains("create the snapshots location"), "{out}");
    assert!(
        out.contains("move the current root, with its nested subvolumes, aside"),
        "{out}"
    );
    assert!(out.contains("put the next root in place"), "{out}");
    // Sealing is `finish`'s work, after boot.
    assert!(!out.contains("read-only as old root"), "{out}");
    assert_eq!(fs.fingerprint(), before);
    // Nor does a dry run leave a status record.
    assert!(!fs.dir.join("state/last-rollback.json").exists());
}

#[test]
fn rollback_moves_the_root_aside_and_finish_seals_it() {
    let Some(mut fs) = setup("split") else { return };
    fill_root(&mut fs, "s1");
    fs.ok(&["rollback"]);
    // Before `finish`: the previous root is `.kept.<name>`, whole and still writable, and counts
    // as an old root that is not sealed yet.
    let dots: Vec<String> = fs
        .ls("@snapshots")
        .into_iter()
        .filter(|n| n.starts_with(".kept."))
        .collect();
    assert_eq!(dots.len(), 1, "{:?}", fs.ls("@snapshots"));
    let kept = format!("@snapshots/{}", dots[0]);
    let name = dots[0].trim_start_matches(".kept.").to_string();
    assert!(!fs.is_readonly(&kept));
    assert_eq!(
        fs.read(&format!("{kept}/var/lib/machines/inner/data"))
            .as_deref(),
        Some("inner s1")
    );
    assert_eq!(fs.ls("@root"), Vec::<String>::new());
    let list = fs.ok(&["list"]);
    assert!(
        list.contains(&name) && list.contains("not sealed yet"),
        "{list}"
    );
    let js = fs.ok(&["list", "--json"]);
    assert!(js.contains("\"sealed\":false"), "{js}");
    let (clean, entries) = fs.check_json(&[]);
    assert!(!clean);
    assert!(
        entries.contains(&(dots[0].clone(), "pending".into())),
        "{entries:?}"
    );
    // `finish` seals it: read-only, with its nested subvolumes, under its name.
    let o = fs.run(&["finish", "--no-baseline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs.old_roots(), vec![name.clone()]);
    assert!(fs.is_readonly(&format!("@snapshots/{name}")));
    assert!(fs.is_readonly(&format!("@snapshots/{name}/var/lib/machines/inner")));
    let (clean, entries) = fs.check_json(&[]);
    assert!(clean, "{entries:?}");
    assert_eq!(entries, vec![(name.clone(), "old-root".to_string())]);

    // If `finish` never runs, the next rollback does its work after its own.
    fs.write("@root/etc/s2", "2");
    fs.ok(&["rollback"]);
    fs.write("@root/etc/s3", "3");
    let o = fs.run(&["rollback"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`finish` did not run after the last boot"),
        "{}",
        stderr(&o)
    );
    let snaps = fs.ls("@snapshots");
    assert_eq!(
        snaps.iter().filter(|n| n.starts_with(".kept.")).count(),
        1,
        "{snaps:?}"
    );
    assert_eq!(fs.old_roots().len(), 2, "{snaps:?}");
}

#[test]
fn audit_mode_keeps_but_does_not_wipe() {
    let Some(mut fs) = setup("audit") else { return };
    fs.write("@root/etc/a", "a");
    fs.boot(&["rollback", "--mode", "audit"]);
    assert_eq!(fs.read("@root/etc/a").as_deref(), Some("a"));
    let olds = fs.old_roots();
    assert_eq!(olds.len(), 1);
    // The same root, changed again, is kept again under the next sequence name.
    fs.write("@root/etc/b", "b");
    fs.boot(&["rollback", "--mode", "audit"]);
    let olds2 = fs.old_roots();
    assert_eq!(olds2.len(), 2, "{olds2:?}");
    assert!(olds2.contains(&format!("{}-2", olds[0])), "{olds2:?}");
    assert!(fs.exists(&format!("@snapshots/{}-2/etc/b", olds[0])));
    // Kernel command line forces audit over a wipe config.
    fs.write("@root/etc/c", "c");
    fs.boot(&[
        "rollback",
        "--mode",
        "wipe",
        "--kernel-cmdline",
        "quiet rd.ephemeral_root=audit",
    ]);
    assert_eq!(fs.read("@root/etc/c").as_deref(), Some("c"));
    assert_eq!(fs.old_roots().len(), 3);
}

#[test]
fn blank_template_and_kernel_cmdline_skip_and_restore() {
    let Some(mut fs) = setup("blank") else { return };
    fs.subvol("@blank");
    fs.write("@blank/etc/from-blank", "blank");
    fs.write("@root/etc/boot1", "1");
    fs.boot(&["rollback", "--blank", "@blank"]);
    assert_eq!(fs.ls("@root"), vec!["etc".to_string()]);
    assert_eq!(fs.read("@root/etc/from-blank").as_deref(), Some("blank"));
    assert!(!fs.is_readonly("@root"));
    let first = fs.old_roots()[0].clone();

    // skip: nothing changes at all.
    fs.write("@root/etc/boot2", "2");
    let before = fs.fingerprint();
    let o = fs.run(&[
        "rollback",
        "--blank",
        "@blank",
        "--kernel-cmdline",
        "rd.ephemeral_root=skip",
    ]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("leaving root @root untouched"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs.fingerprint(), before);

    // Unknown values are warnings, never fatal.
    let o = fs.run(&[
        "rollback",
        "--dry-run",
        "--kernel-cmdline",
        "rd.ephemeral_root=skipp",
    ]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("ignoring unknown kernel parameter \"rd.ephemeral_root=skipp\""),
        "{}",
        stderr(&o)
    );

    // restore=NAME: the new root is a writable copy of that old root; the current one is kept.
    fs.boot(&[
        "rollback",
        "--blank",
        "@blank",
        "--kernel-cmdline",
        &format!("rd.ephemeral_root.restore={first}"),
    ]);
    assert_eq!(fs.read("@root/etc/boot1").as_deref(), Some("1"));
    assert!(!fs.exists("@root/etc/boot2"));
    assert!(!fs.is_readonly("@root"));
    fs.write("@root/etc/writable", "yes");
    assert_eq!(fs.old_roots().len(), 2);
    // The restored-from old root is unchanged and still read-only.
    assert!(fs.is_readonly(&format!("@snapshots/{first}")));
    assert!(!fs.exists(&format!("@snapshots/{first}/etc/writable")));
}

#[test]
fn restore_of_old_root_with_nested_subvolumes_brings_them_back() {
    let Some(mut fs) = setup("restore-nested") else {
        return;
    };
    fill_root(&mut fs, "n");
    fs.boot(&["rollback"]);
    let name = fs.old_roots()[0].clone();
    fs.boot(&[
        "rollback",
        "--kernel-cmdline",
        &format!("rd.ephemeral_root.restore={name}"),
    ]);
    assert_eq!(
        fs.read("@root/var/lib/machines/inner/data").as_deref(),
        Some("inner n")
    );
    assert!(fs
        .subvols()
        .contains(&"@root/var/lib/machines/inner".to_string()));
    assert!(!fs.is_readonly("@root/var/lib/machines"));
}

#[test]
fn retention_gc_pin_and_dry_run() {
    let Some(mut fs) = setup("gc") else { return };
    fs.subvol("@snapshots");
    // Old roots from the past, made the way rollback makes them (read-only snapshots).
    let names = [
        "2025-01-05T10-00-00Z",
        "2025-06-01T10-00-00Z",
        "2025-06-20T10-00-00Z",
        "2026-10-01T10-00-00Z",
        "2026-11-01T10-00-00Z",
        "2026-11-02T10-00-00Z",
    ];
    fs.write("@root/f", "f");
    fs.mount();
    for n in names {
        sh(&format!(
            "btrfs -q subvolume snapshot -r {} {}",
            fs.p("@root").display(),
            fs.p(&format!("@snapshots/{n}")).display()
        ));
    }
    // A foreign entry in the snapshots location is never touched.
    fs.write("@snapshots/README", "mine");
    fs.ok(&["pin", "2025-01-05T10-00-00Z"]);
    let before = fs.fingerprint();
    let plan = fs.ok(&["gc", "--keep", "2", "--dry-run"]);
    assert!(plan.contains("prune  2025-06-01T10-00-00Z"), "{plan}");
    assert!(
        plan.contains("keep   2025-01-05T10-00-00Z  (pinned)"),
        "{plan}"
    );
    assert_eq!(fs.fingerprint(), before, "gc --dry-run changed something");
    fs.ok(&["gc", "--keep", "2"]);
    assert_eq!(
        fs.old_roots(),
        vec![
            "2025-01-05T10-00-00Z",
            "2026-11-01T10-00-00Z",
            "2026-11-02T10-00-00Z",
            "README"
        ]
    );
    let js = fs.ok(&["list", "--json"]);
    assert!(
        js.contains("{\"name\":\"2025-01-05T10-00-00Z\",\"time\":\"2025-01-05T10:00:00Z\""),
        "{js}"
    );
    assert!(js.contains("\"pinned\":true"), "{js}");
    fs.ok(&["unpin", "2025-01-05T10-00-00Z"]);
    fs.ok(&["gc", "--keep", "2"]);
    assert_eq!(
        fs.old_roots(),
        vec!["2026-11-01T10-00-00Z", "2026-11-02T10-00-00Z", "README"]
    );
    // keep 0: the newest is never deleted.
    fs.ok(&["gc", "--keep", "0"]);
    assert_eq!(fs.old_roots(), vec!["2026-11-02T10-00-00Z", "README"]);
    assert_eq!(fs.read("@snapshots/README").as_deref(), Some("mine"));
    // pin of a missing name: clear error, exit 2.
    let o = fs.run(&["pin", "2020-01-01T00-00-00Z"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("old root \"2020-01-01T00-00-00Z\" does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rollback_applies_retention_including_the_root_it_kept() {
    let Some(mut fs) = setup("rollback-keep") else {
        return;
    };
    for i in 0..4 {
        fs.write(&format!("@root/boot{i}"), "x");
        fs.boot(&["rollback", "--keep", "2"]);
    }
    let olds = fs.old_roots();
    assert_eq!(olds.len(), 2, "{olds:?}");
    // The two kept are the last two boots.
    let all: Vec<String> = olds
        .iter()
        .flat_map(|o| fs.ls(&format!("@snapshots/{o}")))
        .collect();
    assert!(
        all.contains(&"boot3".to_string()) && all.contains(&"boot2".to_string()),
        "{all:?}"
    );
}

#[test]
fn config_file_is_read_and_cli_wins() {
    let Some(mut fs) = setup("config") else {
        return;
    };
    fs.subvol("@os-root");
    fs.write("@os-root/x", "x");
    let conf = fs.dir.join("er.conf");
    std::fs::write(
        &conf,
        "# test\nroot = @os-root\nsnapshots = @old\nkeep = 3\nmode = audit\n",
    )
    .unwrap();
    let c = conf.to_string_lossy().to_string();
    fs.boot(&["rollback", "--config", &c]);
    assert_eq!(
        fs.read("@os-root/x").as_deref(),
        Some("x"),
        "audit from the file"
    );
    assert_eq!(fs.ls("@old").len(), 1);
    fs.write("@os-root/y", "y");
    fs.boot(&["rollback", "--config", &c, "--mode", "wipe"]);
    assert!(
        !fs.exists("@os-root/x"),
        "--mode wipe on the command line wins"
    );
    assert_eq!(fs.ls("@old").len(), 2);
}

#[test]
fn uncommitted_changes_on_a_mounted_filesystem_are_seen() {
    // After boot the filesystem is mounted and recent writes may not be committed yet; generation
    // numbers change only at commit, so rollback/check must commit before deciding "unchanged".
    let Some(mut fs) = setup("uncommitted") else {
        return;
    };
    fs.write("@root/a", "a");
    fs.boot(&["rollback", "--mode", "audit"]);
    fs.mount();
    fs.write("@root/b", "b"); // no sync: still in the running transaction
    let o = fs.run_keep_mounted(
        &["rollback", "--mode", "audit", "--kernel-cmdline", ""],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    fs.ok(&["finish", "--no-baseline"]);
    let olds = fs.old_roots();
    assert_eq!(
        olds.len(),
        2,
        "the change to @root was not noticed: {olds:?}"
    );
    assert!(fs.exists(&format!("@snapshots/{}/b", olds[1])));
}

#[test]
fn finish_takes_the_baseline_once_per_boot() {
    let Some(mut fs) = setup("finish-baseline") else {
        return;
    };
    fs.write("@root/etc/a", "a");
    fs.ok(&["rollback"]);
    fs.ok(&["finish"]);
    let id = |fs: &mut LoopFs| {
        let out = sh(&format!("btrfs subvolume list {}", fs.mount().display()));
        out.lines()
            .find(|l| l.ends_with(" path @snapshots/.baseline"))
            .map(str::to_string)
    };
    let first = id(&mut fs).expect("finish took a baseline");
    // A second finish in the same boot (a re-started unit) keeps it: `diff` still sees the file.
    fs.write("@root/var/lib/new/state", "x");
    let o = fs.run(&["finish"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("baseline already taken this boot"),
        "{}",
        stderr(&o)
    );
    assert_eq!(id(&mut fs).as_deref(), Some(first.as_str()));
    let d = fs.ok(&["diff"]);
    assert!(d.contains("/var/lib/new"), "{d}");
    // The next boot (a new /run) takes a new one; `baseline` itself always does.
    fs.ok(&["baseline"]);
    assert_ne!(id(&mut fs).as_deref(), Some(first.as_str()));
}
