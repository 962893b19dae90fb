//! `--device LABEL=…` / `UUID=…` on real loop devices (issue 10 item 7): two btrfs filesystems
//! with one label, a `dd` copy with the same UUID, an empty value, and a two-device btrfs
//! filesystem whose members share a UUID (not ambiguous). Needs root (see tests/common).

mod common;
use common::*;
use std::process::{Command, Output};

/// Run the binary with `--device SPEC` (and no config file); nothing is mounted by the caller.
fn run_spec(dir: &std::path::Path, spec: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join("none.conf"), "").unwrap();
    Command::new(bin())
        .args(args)
        .arg("--device")
        .arg(spec)
        .arg("--config")
        .arg(dir.join("none.conf"))
        .env("EPHEMERAL_ROOT_LOG", "stderr")
        .env("EPHEMERAL_ROOT_STATE_DIR", dir.join("state"))
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ephemeral-root")
}

fn uuid_of(dev: &str) -> String {
    sh(&format!("blkid -p -s UUID -o value {dev}"))
        .trim()
        .to_string()
}

#[test]
fn ambiguous_labels_and_uuids_are_refused_naming_every_device() {
    if !require_root("ambiguous_labels_and_uuids_are_refused_naming_every_device") {
        return;
    }
    // A label no other test or machine uses.
    let label = format!("ertest{}", std::process::id());
    let mkfs = format!("mkfs.btrfs -q -f -L {label}");
    let mut a = LoopFs::with_mkfs("dev-a", &mkfs);
    a.subvol("@root");
    a.umount();
    let b = LoopFs::with_mkfs("dev-b", &mkfs);
    let spec = format!("LABEL={label}");

    // Two filesystems with one label: an error naming both devices, nothing touched.
    let before = a.fingerprint();
    a.umount();
    let o = run_spec(&a.dir, &spec, &["list"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(&format!("{spec} matches 2 filesystems")), "{e}");
    assert!(e.contains(&a.dev) && e.contains(&b.dev), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let o = run_spec(&a.dir, &spec, &["rollback", "--kernel-cmdline", ""]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        a.fingerprint(),
        before,
        "a refused rollback touched the filesystem"
    );
    a.umount();

    // Empty values.
    for empty in ["LABEL=", "UUID="] {
        let o = run_spec(&a.dir, empty, &["list"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains("has an empty value"), "{e}");
    }

    // A dd copy of A: the same UUID on two devices.
    drop(b);
    let uuid = uuid_of(&a.dev);
    assert!(!uuid.is_empty());
    let spec = format!("UUID={uuid}");
    let o = run_spec(&a.dir, &spec, &["list"]);
    assert!(o.status.success(), "one filesystem: {}", stderr(&o));
    let copy = a.dir.join("copy.img");
    sh(&format!(
        "cp --sparse=always {} {}",
        a.img.display(),
        copy.display()
    ));
    let cdev = sh(&format!("losetup -f --show {}", copy.display()))
        .trim()
        .to_string();
    let o = run_spec(&a.dir, &spec, &["list"]);
    let e = stderr(&o);
    let _ = Command::new("losetup").arg("-d").arg(&cdev).output();
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("2 devices claim to be member 1 of the same btrfs filesystem")
            && e.contains(&a.dev)
            && e.contains(&cdev),
        "{e}"
    );
}

/// One btrfs filesystem on two loop devices (raid1, labelled `er<tag><pid>`), with `@root`,
/// unmounted; returns its members and label.
fn two_device_btrfs(tag: &str) -> (LoopFs, LoopFs, String) {
    let label = format!("er{tag}{}", std::process::id());
    let mut b = LoopFs::with_mkfs(&format!("{tag}-b"), "");
    let mut a = LoopFs::with_mkfs(&format!("{tag}-a"), "");
    sh(&format!(
        "mkfs.btrfs -q -f -L {label} -d raid1 -m raid1 {} {}",
        a.dev, b.dev
    ));
    sh(&format!("btrfs device scan {} {}", a.dev, b.dev));
    a.subvol("@root");
    a.umount();
    b.umount();
    (a, b, label)
}

#[test]
fn members_of_one_multi_device_filesystem_are_not_ambiguous() {
    if !require_root("members_of_one_multi_device_filesystem_are_not_ambiguous") {
        return;
    }
    let (a, _b, label) = two_device_btrfs("multi");
    for spec in [
        format!("LABEL={label}"),
        format!("UUID={}", uuid_of(&a.dev)),
    ] {
        let o = run_spec(&a.dir, &spec, &["list"]);
        assert!(
            o.status.success(),
            "{spec}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
}

/// `--device /dev/a:/dev/b` (the bcachefs mount syntax NixOS and the dracut module write): the
/// members of one filesystem are accepted in any order; a device of another filesystem, an empty
/// entry or a `UUID=` inside the list is one line naming it, and nothing is touched.
#[test]
fn colon_lists_of_members_are_one_filesystem() {
    if !require_root("colon_lists_of_members_are_one_filesystem") {
        return;
    }
    let (mut a, b, label) = two_device_btrfs("colon");
    let mut c = LoopFs::with_mkfs("colon-c", "");
    c.umount();
    for spec in [
        format!("{}:{}", a.dev, b.dev),
        format!("{}:{}", b.dev, a.dev),
    ] {
        let o = run_spec(&a.dir, &spec, &["list"]);
        assert!(o.status.success(), "{spec}: {}", stderr(&o));
    }
    for (spec, want) in [
        (
            format!("{}:{}", a.dev, c.dev),
            format!("{} is not a member", c.dev),
        ),
        (
            format!("{}::{}", a.dev, b.dev),
            "without empty entries".to_string(),
        ),
        (
            format!("{}:LABEL={label}", a.dev),
            "without empty entries, UUID= or LABEL=".to_string(),
        ),
    ] {
        let o = run_spec(&a.dir, &spec, &["rollback"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{spec}: {e}");
        assert!(e.contains(&want), "{spec}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{spec}: {e}");
    }
    // Nothing was touched: no snapshots location was made by the refused rollbacks.
    a.mount();
    assert!(
        !a.exists("@snapshots"),
        "a refused rollback touched the filesystem"
    );
}
