//! Bad input gets one clear line, a non-zero exit, and nothing touched.

mod common;
use common::*;

fn setup(tag: &str) -> Option<LoopFs> {
    if !require_root(tag) {
        return None;
    }
    let mut fs = LoopFs::new(tag);
    fs.subvol("@root");
    fill_root(&mut fs, tag);
    Some(fs)
}

/// Run, expect failure with `code` and a message containing `want`, and nothing changed.
fn refuses(fs: &mut LoopFs, args: &[&str], code: i32, want: &str) {
    let before = fs.fingerprint();
    let o = fs.run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert_eq!(fs.fingerprint(), before, "{args:?} changed the filesystem");
}

#[test]
fn missing_root_subvolume() {
    let Some(mut fs) = setup("g-missing") else {
        return;
    };
    refuses(
        &mut fs,
        &["rollback", "--root", "@nope"],
        2,
        "root \"@nope\" not found",
    );
}

#[test]
fn root_is_mounted() {
    let Some(mut fs) = setup("g-mounted") else {
        return;
    };
    let live = fs.dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    sh(&format!(
        "mount -o subvol=@root {} {}",
        fs.dev,
        live.display()
    ));
    let before = fs.fingerprint();
    let o = fs.run(&["rollback"]);
    let err = stderr(&o);
    sh(&format!("umount {}", live.display()));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("is mounted at {}", live.display())),
        "{err}"
    );
    assert_eq!(fs.fingerprint(), before);
}

#[test]
fn nested_subvolume_of_root_is_mounted() {
    let Some(mut fs) = setup("g-nested-mounted") else {
        return;
    };
    let live = fs.dir.join("machines");
    std::fs::create_dir_all(&live).unwrap();
    sh(&format!(
        "mount -o subvol=@root/var/lib/machines {} {}",
        fs.dev,
        live.display()
    ));
    let o = fs.run(&["rollback"]);
    sh(&format!("umount {}", live.display()));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is mounted at"), "{}", stderr(&o));
    assert!(fs.exists("@root/var/lib/machines/vm/disk"));
}

#[test]
fn not_btrfs_and_nonexistent_device() {
    if !require_root("g-notbtrfs") {
        return;
    }
    let mut zero = LoopFs::with_mkfs("g-zero", "");
    let o = zero.run(&["rollback"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not hold a btrfs or bcachefs filesystem"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        sh(&format!(
            "head -c 1048576 {} | tr -d '\\0' | wc -c",
            zero.img.display()
        ))
        .trim(),
        "0"
    );

    let mut ext4 = LoopFs::with_mkfs("g-ext4", "mkfs.ext4 -q -F");
    let o = ext4.run(&["rollback", "--fstype", "btrfs"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not hold a btrfs or bcachefs filesystem"),
        "{}",
        stderr(&o)
    );

    let o = std::process::Command::new(bin())
        .args([
            "rollback",
            "--device",
            "/dev/does-not-exist",
            "--kernel-cmdline",
            "",
            "--config",
            "/dev/null",
        ])
        .env("EPHEMERAL_ROOT_LOG", "stderr")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("device /dev/does-not-exist cannot be read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fstype_mismatch() {
    let Some(mut fs) = setup("g-fstype") else {
        return;
    };
    refuses(
        &mut fs,
        &["rollback", "--fstype", "bcachefs"],
        1,
        "holds btrfs, but fstype is bcachefs",
    );
}

#[test]
fn bad_config_and_options() {
    let Some(mut fs) = setup("g-config") else {
        return;
    };
    let conf = fs.dir.join("bad.conf");
    std::fs::write(&conf, "root = @root\nsnapshot = @snapshots\n").unwrap();
    let c = conf.to_string_lossy().to_string();
    refuses(
        &mut fs,
        &["rollback", "--config", &c],
        2,
        "bad.conf:2: unknown key `snapshot` (did you mean `snapshots`?)",
    );
    std::fs::write(&conf, "keep = 5 4w 12x\n").unwrap();
    refuses(
        &mut fs,
        &["rollback", "--config", &c],
        2,
        "bad.conf:1: key `keep`: bad retention word \"12x\"",
    );
    refuses(
        &mut fs,
        &["rollback", "--config", "/nonexistent.conf"],
        2,
        "cannot read config file /nonexistent.conf",
    );
    refuses(
        &mut fs,
        &["rollback", "--keep", "five"],
        2,
        "--keep: bad retention word \"five\"",
    );
    refuses(
        &mut fs,
        &["rollback", "--root", "../etc"],
        2,
        "must be a plain path",
    );
    refuses(
        &mut fs,
        &["rollback", "--snapshots", "@root/snaps"],
        2,
        "overlap",
    );
    refuses(
        &mut fs,
        &["rollback", "--mode", "nuke"],
        2,
        "unknown mode \"nuke\"",
    );
}

#[test]
fn root_path_through_symlink_or_plain_directory() {
    let Some(mut fs) = setup("g-escape") else {
        return;
    };
    fs.mount();
    std::os::unix::fs::symlink("/etc", fs.p("link")).unwrap();
    std::fs::create_dir_all(fs.p("plain")).unwrap();
    refuses(
        &mut fs,
        &["rollback", "--root", "link"],
        1,
        "escapes the filesystem, contains a symlink or is not a directory",
    );
    refuses(
        &mut fs,
        &["rollback", "--root", "plain"],
        1,
        "is a plain directory, not a subvolume",
    );
}

#[test]
fn root_is_default_subvolume() {
    let Some(mut fs) = setup("g-default") else {
        return;
    };
    fs.mount();
    sh(&format!(
        "btrfs subvolume set-default {}",
        fs.p("@root").display()
    ));
    refuses(&mut fs, &["rollback"], 1, "is the default subvolume");
}

#[test]
fn restore_of_missing_old_root() {
    let Some(mut fs) = setup("g-restore") else {
        return;
    };
    refuses(
        &mut fs,
        &[
            "rollback",
            "--kernel-cmdline",
            "rd.ephemeral_root.restore=2020-01-01T00-00-00Z",
        ],
        2,
        "old root \"2020-01-01T00-00-00Z\" (rd.ephemeral_root.restore) does not exist",
    );
}

#[test]
fn missing_blank_template() {
    let Some(mut fs) = setup("g-blank") else {
        return;
    };
    refuses(
        &mut fs,
        &["rollback", "--blank", "@nothing"],
        2,
        "blank template \"@nothing\" does not exist",
    );
}

#[test]
fn check_reports_plan_and_problems() {
    let Some(mut fs) = setup("g-check") else {
        return;
    };
    let o = fs.run(&["check"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("rollback would:") && out.contains("move the current root"),
        "{out}"
    );
    assert!(out.contains("check: ok"), "{out}");
    let o = fs.run(&["check", "--root", "@missing"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("problem: root \"@missing\" not found"));
}
