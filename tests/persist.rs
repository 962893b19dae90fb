//! `persist` on a running system whose `/` is the btrfs root subvolume (tests/common/sys.rs): the
//! copy keeps everything (content byte for byte, owner, mode incl. setuid, ns times, ACLs and
//! other extended attributes, hard links, symlinks, FIFOs, holes) and is reflinked when the store
//! is on the root's filesystem; `--bind` mounts it now; the configuration lines parse as Nix in
//! each format; every refusal is one line and changes nothing; `--merge` copies only what is
//! missing and reports conflicts. Needs root (see tests/common).

mod common;
use common::sys::Sys;
use common::tree::{acl, fingerprint_with};
use common::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const CONF: &str = "store = /persist\n";

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    succeeded(what, &o)
}

/// The whole stdout of `persist` is Nix: comments, then an attribute set.
fn nix_parses(text: &str, dir: &Path) {
    let f = dir.join("lines.nix");
    std::fs::write(&f, text).unwrap();
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&f)
        .output()
        .expect("nix-instantiate (Debian: nix-bin) is needed");
    assert!(
        o.status.success(),
        "nix-instantiate --parse rejected:\n{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A service's state: every kind of entry and metadata a copy must keep.
fn app_tree(base: &Path) {
    std::fs::create_dir_all(base.join("sub/deeper")).unwrap();
    std::fs::write(base.join("data.db"), vec![7u8; 300_000]).unwrap();
    std::fs::write(base.join("sub/secret"), "s3cret").unwrap();
    std::fs::write(base.join("suid"), "#!/bin/sh\n").unwrap();
    std::fs::hard_link(base.join("data.db"), base.join("sub/data-link.db")).unwrap();
    symlink("../data.db", base.join("sub/link")).unwrap();
    symlink("/nonexistent/target", base.join("dangling")).unwrap();
    sh(&format!("mkfifo {}", base.join("sub/fifo").display()));
    // 4 MiB of varied data (reflinked to a store on the same filesystem), and a sparse file.
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(base.join("big"), big).unwrap();
    sh(&format!(
        "truncate -s 64M {s} && printf tail >> {s}",
        s = base.join("sparse").display()
    ));
    sh(&format!("chown -R 1000:100 {}", base.display()));
    sh(&format!(
        "chown -h 1001:101 {}",
        base.join("sub/link").display()
    ));
    std::fs::set_permissions(
        base.join("sub/secret"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(base.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(
        base.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let f = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(base.join("data.db"), "user.origin", b"test", f).unwrap();
    rustix::fs::setxattr(base.join("data.db"), "trusted.tag", b"t", f).unwrap();
    rustix::fs::setxattr(
        base.join("sub/secret"),
        "system.posix_acl_access",
        &acl(),
        f,
    )
    .unwrap();
    rustix::fs::setxattr(base.join("sub"), "user.dir", b"d", f).unwrap();
    sh(&format!(
        "touch -h -d '2024-02-03 04:05:06.123456789' {b}/sub/link {b}/dangling && touch -d '2023-01-02 03:04:05.987654321' {b}/data.db {b}/sub/secret {b}/suid {b}/sub/fifo {b}/sub/deeper {b}/sub {b}",
        b = base.display()
    ));
}

fn temporaries(dir: &Path) -> Vec<String> {
    sh(&format!(
        "find {} -name '*.ephemeral-root-restore.*'",
        dir.display()
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn persist_copies_everything_reflinks_and_binds() {
    if !require_root("persist_copies_everything_reflinks_and_binds") {
        return;
    }
    let mut sys = Sys::new("persist-copy", CONF, |fs| {
        app_tree(&fs.p("@root/var/lib/app"));
        sh(&format!("chmod 0751 {}", fs.p("@root/var/lib").display()));
        sh(&format!("chown 0:7 {}", fs.p("@root/var").display()));
    });
    let before = fingerprint_with(&sys.host("@root/var/lib/app"), false);
    let o = sys.er(&["persist", "/var/lib/app", "--bind"]);
    let text = ok(o, "persist --bind");
    eprintln!("{text}");
    assert!(
        text.contains("# copied /var/lib/app to /persist/var/lib/app: "),
        "{text}"
    );
    assert!(text.contains(" reflinked)"), "{text}");
    assert!(
        text.contains("# bind-mounted /persist/var/lib/app on /var/lib/app now"),
        "{text}"
    );
    assert!(
        text.contains("{\n  environment.persistence.\"/persist\" = {\n    directories = [\n      \"/var/lib/app\"\n    ];\n  };\n}\n"),
        "{text}"
    );
    nix_parses(&text, &sys.fs.dir);

    // Byte for byte, with owner, mode (setuid kept: the copy goes back to the same path), ns
    // times, xattrs, ACL, link counts; the root's copy is untouched.
    let stored = fingerprint_with(&sys.host("@persist/var/lib/app"), false);
    assert_eq!(stored, before);
    assert_eq!(
        fingerprint_with(&sys.host("@root/var/lib/app"), false),
        before
    );
    let m = |p: &str| std::fs::symlink_metadata(sys.fs.p(p)).unwrap();
    assert_eq!(m("@persist/var/lib/app/suid").mode() & 0o7777, 0o4755);
    assert_eq!(
        m("@persist/var/lib/app/data.db").ino(),
        m("@persist/var/lib/app/sub/data-link.db").ino()
    );
    // Parents created in the store have the root's owner and mode.
    assert_eq!(m("@persist/var/lib").mode() & 0o7777, 0o751);
    assert_eq!((m("@persist/var").uid(), m("@persist/var").gid()), (0, 7));
    // Reflinked (shared extents), and holes stay holes.
    let frag = sh(&format!(
        "filefrag -v {}",
        sys.fs.p("@persist/var/lib/app/big").display()
    ));
    assert!(frag.contains("shared"), "{frag}");
    assert!(m("@persist/var/lib/app/sparse").blocks() * 512 < 1 << 20);
    assert_eq!(temporaries(&sys.host("@persist")), Vec::<String>::new());

    // Bound now: /var/lib/app is the store's copy.
    let ids = sys.sh_ok("stat -c %d:%i /var/lib/app /persist/var/lib/app");
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids[0], ids[1], "{ids:?}");
    sys.sh_ok("echo new > /var/lib/app/written-after");
    assert!(sys.host("@persist/var/lib/app/written-after").exists());
    assert!(!sys.host("@root/var/lib/app/written-after").exists());

    // Again: it is persisted now (a bind mount of the store), so refused without --merge.
    let o = sys.er(&["persist", "/var/lib/app"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is already persisted: it is bind-mounted from the store"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn other_formats_and_a_store_on_another_filesystem() {
    if !require_root("other_formats_and_a_store_on_another_filesystem") {
        return;
    }
    let mut sys = Sys::new("persist-formats", CONF, |fs| {
        fs.write("@root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        fs.write("@root/var/lib/a\"b ${x}/state", "x");
        sh(&format!(
            "truncate -s 64M {s} && printf tail >> {s}",
            s = fs.p("@root/var/lib/sparse").display()
        ));
    });
    for (format, want) in [
        ("impermanence", "environment.persistence.\"/persist\" = {"),
        ("preservation", "preservation.preserveAt.\"/persist\" = {"),
        ("fstab", "fileSystems.\"/etc/machine-id\" = { device = \"/persist/etc/machine-id\"; options = [ \"bind\" ]; };"),
    ] {
        sys.write_run("er.conf", &format!("device = {}\n{CONF}persist_format = {format}\n", sys.fs.dev));
        let text = ok(
            sys.er(&["persist", "/etc/machine-id", "/var/lib/a\"b ${x}", "--dry-run"]),
            format,
        );
        assert!(text.contains(want), "{format}: {text}");
        assert!(text.contains("\"/var/lib/a\\\"b \\${x}\""), "{format}: {text}");
        assert!(text.contains("# dry run: nothing was copied"), "{text}");
        nix_parses(&text, &sys.fs.dir);
    }
    assert!(
        !sys.host("@persist/etc").exists(),
        "a dry run wrote to the store"
    );
    // A store on another filesystem (tmpfs): no reflink, and the copy keeps the holes by itself.
    sys.ns_sh(&format!(
        "mkdir -p {r}/other && mount -t tmpfs -o size=64m tmpfs {r}/other",
        r = sys.root.display()
    ));
    let text = ok(
        sys.er(&["persist", "/var/lib/sparse", "--store", "/other"]),
        "persist to tmpfs",
    );
    assert!(
        text.contains("# copied /var/lib/sparse to /other/var/lib/sparse"),
        "{text}"
    );
    assert!(!text.contains("reflinked"), "{text}");
    let blocks = sys.sh_ok("stat -c %b /other/var/lib/sparse");
    assert!(
        blocks.trim().parse::<u64>().unwrap() * 512 < 1 << 20,
        "{blocks}"
    );
    assert_eq!(sys.sh_ok("tail -c 4 /other/var/lib/sparse"), "tail");
}

/// One error line on stderr, and a failure exit.
fn refused(o: &Output, want: &str, what: &str) {
    let e = stderr(o);
    assert!(!o.status.success(), "{what}: not refused\n{}", out(o));
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "{what}: not one line:\n{e}"
    );
    assert!(e.contains(want), "{what}: {e}");
    assert!(out(o).is_empty(), "{what}: printed {}", out(o));
}

#[test]
fn refusals_are_one_line_and_change_nothing() {
    if !require_root("refusals_are_one_line_and_change_nothing") {
        return;
    }
    let conf = "store = /persist\npersist = /var/lib/declared /var/lib/bound\n";
    let mut sys = Sys::new("persist-refuse", conf, |fs| {
        fs.write("@root/var/lib/declared/s", "d");
        fs.write("@root/var/lib/bound/under", "hidden");
        fs.write("@persist/var/lib/bound/s", "stored");
        fs.write("@root/var/lib/instore/s", "root");
        fs.write("@persist/var/lib/instore/old", "stored");
        fs.write("@root/var/lib/busy/db", "live");
        fs.write("@root/var/lib/tiny/s", "t");
        std::fs::create_dir_all(fs.p("@root/mnt/other")).unwrap();
        std::fs::create_dir_all(fs.p("@root/srv/mp")).unwrap();
        std::fs::create_dir_all(fs.p("@root/small")).unwrap();
        std::fs::create_dir_all(fs.p("@root/srv/data")).unwrap();
        symlink("/tmp", fs.p("@root/var/linkdir")).unwrap();
        fs.write("@root/tmp/x", "through a link");
        // Most of the filesystem's free space in one file (allocated, not written).
        std::fs::create_dir_all(fs.p("@root/var/lib/big")).unwrap();
        sh(&format!(
            "fallocate -l 560M {}",
            fs.p("@root/var/lib/big/blob").display()
        ));
    });
    let r = sys.root.display().to_string();
    sys.ns_sh(&format!(
        "mount --bind {r}/persist/var/lib/bound {r}/var/lib/bound && \
         mount -t tmpfs tmpfs {r}/mnt/other && echo x > {r}/mnt/other/x && \
         mount -t tmpfs tmpfs {r}/srv/mp && mount -t tmpfs -o size=64m tmpfs {r}/small"
    ));
    let mut writer = sys.spawn("exec 3>>/var/lib/busy/db");
    let store_before = fingerprint_with(&sys.host("@persist"), false);
    let root_dirs = ["declared", "bound", "instore", "busy", "tiny"];
    let root_before: Vec<Vec<String>> = root_dirs
        .iter()
        .map(|d| fingerprint_with(&sys.host(&format!("@root/var/lib/{d}")), false))
        .collect();
    let pid = writer.id();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["/var/lib/declared"], "/var/lib/declared is already persisted: it is declared persistent".into()),
        (vec!["/var/lib/bound"], "/var/lib/bound is already persisted: it is bind-mounted from the store (/persist/var/lib/bound)".into()),
        (vec!["/var/lib/bound/under"], "is already persisted: it is inside /var/lib/bound, bind-mounted from the store".into()),
        (vec!["/var/lib/instore"], "/persist/var/lib/instore already exists in the store; `--merge` copies".into()),
        (vec!["/mnt/other/x"], "/mnt/other/x is not on the ephemeral root: /mnt/other is a mount point".into()),
        (vec!["/srv/mp"], "/srv/mp is a mount point (another filesystem, not the store's copy)".into()),
        (vec!["/var/lib/busy"], format!("/var/lib/busy: /var/lib/busy/db is open for writing by sleep (PID {pid}")),
        (vec!["/var/lib/big", "--store", "/small"], "not enough space in the store /small: copying /var/lib/big needs about 560.0 MiB (560.0 MiB of data in 2 entries; the store is on another filesystem".into()),
        (vec!["/var/lib/nothing"], "/var/lib/nothing does not exist on the root".into()),
        (vec!["/var/linkdir/x"], "/var/linkdir/x: /var/linkdir is a symlink on the running system".into()),
        (vec!["/var/lib/tiny", "/var/lib/tiny/s"], "/var/lib/tiny and /var/lib/tiny/s overlap".into()),
        (vec!["var/lib/tiny"], "PATH must be absolute".into()),
        (vec!["/persist/var/lib/x"], "is inside the store /persist".into()),
        (vec!["/var/lib/tiny", "--store", "/nonexistent"], "the store /nonexistent does not exist".into()),
        (vec!["/var/lib/tiny", "--store", "/srv/data"], "the store /srv/data is on the ephemeral root itself".into()),
    ];
    for (args, want) in &cases {
        let mut a = vec!["persist"];
        a.extend_from_slice(args);
        let o = sys.er(&a);
        refused(&o, want, &format!("{args:?}"));
    }
    // The writer's unit: none here (no systemd in this container), so the process is named.
    let o = sys.er(&["persist", "/var/lib/busy"]);
    assert!(
        stderr(&o).contains(&format!("stop it first (`stop process {pid}`)"))
            || stderr(&o).contains("stop it first (`systemctl"),
        "{}",
        stderr(&o)
    );
    // Usage mistakes exit 2, refusals 1.
    assert_eq!(sys.er(&["persist", "var/x"]).status.code(), Some(2));
    assert_eq!(
        sys.er(&["persist", "/var/lib/declared"]).status.code(),
        Some(1)
    );
    let _ = writer.kill();
    let _ = writer.wait();
    // Nothing changed, in the store or on the root.
    assert_eq!(fingerprint_with(&sys.host("@persist"), false), store_before);
    for (d, b) in root_dirs.iter().zip(&root_before) {
        assert_eq!(
            &fingerprint_with(&sys.host(&format!("@root/var/lib/{d}")), false),
            b,
            "{d}"
        );
    }
    // No store configured at all.
    sys.write_run("er.conf", &format!("device = {}\n", sys.fs.dev));
    let o = sys.er(&["persist", "/var/lib/tiny"]);
    refused(
        &o,
        "no persistent store is configured: pass --store DIR",
        "no store",
    );
    assert_eq!(o.status.code(), Some(2));
    sys.write_run("er.conf", &format!("device = {}\n{conf}", sys.fs.dev));
    // The same big file fits the store on the root's filesystem: reflinks share its data. (Without
    // the reflink it would need more than is free.)
    let free = sys.sh_ok("stat -f -c '%a %S' /persist");
    let f: Vec<u64> = free
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        f[0] * f[1] < 560 << 20,
        "the test needs less than 560 MiB free: {free}"
    );
    let text = ok(
        sys.er(&["persist", "/var/lib/big"]),
        "persist big to the same filesystem",
    );
    assert!(text.contains("# copied /var/lib/big to /persist/var/lib/big: 1 files, 1 directories, 0 hard links, 560.0 MiB (560.0 MiB reflinked)"), "{text}");
}

#[test]
fn merge_copies_only_what_is_missing_and_reports_conflicts() {
    if !require_root("merge_copies_only_what_is_missing_and_reports_conflicts") {
        return;
    }
    let conf = "store = /persist\npersist = /var/lib/h\n";
    let mut sys = Sys::new("persist-merge", conf, |fs| {
        for (p, c) in [
            ("a", "same"),
            ("b", "root version"),
            ("d", "only on the root"),
            ("sub/c", "same"),
            ("sub/e", "only on the root"),
            ("new/f", "a whole new directory"),
        ] {
            fs.write(&format!("@root/var/lib/m/{p}"), c);
        }
        symlink("a", fs.p("@root/var/lib/m/l")).unwrap();
        for (p, c) in [
            ("a", "same"),
            ("b", "store version"),
            ("sub/c", "same"),
            ("x", "only in the store"),
        ] {
            fs.write(&format!("@persist/var/lib/m/{p}"), c);
        }
        symlink("b", fs.p("@persist/var/lib/m/l")).unwrap();
        sh(&format!(
            "chown 1000:100 {}",
            fs.p("@root/var/lib/m/new").display()
        ));
        // Content hidden under a persisted path's bind mount.
        fs.write(
            "@root/var/lib/h/hidden",
            "written before /var/lib/h was persisted",
        );
        fs.write("@persist/var/lib/h/visible", "v");
    });
    let r = sys.root.display().to_string();
    sys.ns_sh(&format!("mount --bind {r}/persist/var/lib/h {r}/var/lib/h"));

    let o = sys.er(&["persist", "/var/lib/m", "--merge"]);
    let e = stderr(&o);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{e}");
    assert!(
        text.contains("# merged /var/lib/m into /persist/var/lib/m: 3 missing entries copied"),
        "{text}"
    );
    assert!(text.contains("2 already there, 2 conflicts"), "{text}");
    assert!(e.contains("conflict: /var/lib/m/b: different size (12 bytes on the source, 13 in the destination); left as it is in the store"), "{e}");
    assert!(
        e.contains("conflict: /var/lib/m/l: symlink to a on the source, to b in the destination"),
        "{e}"
    );
    assert!(
        e.contains("2 conflict(s) between the root and the store"),
        "{e}"
    );
    nix_parses(&text, &sys.fs.dir);
    let read = |s: &mut Sys, p: &str| std::fs::read_to_string(s.host(p)).unwrap();
    assert_eq!(read(&mut sys, "@persist/var/lib/m/b"), "store version");
    assert_eq!(read(&mut sys, "@persist/var/lib/m/d"), "only on the root");
    assert_eq!(
        read(&mut sys, "@persist/var/lib/m/sub/e"),
        "only on the root"
    );
    assert_eq!(
        read(&mut sys, "@persist/var/lib/m/new/f"),
        "a whole new directory"
    );
    assert_eq!(read(&mut sys, "@persist/var/lib/m/x"), "only in the store");
    assert_eq!(
        std::fs::read_link(sys.host("@persist/var/lib/m/l")).unwrap(),
        Path::new("b")
    );
    assert_eq!(
        std::fs::metadata(sys.host("@persist/var/lib/m/new"))
            .unwrap()
            .uid(),
        1000
    );
    assert_eq!(temporaries(&sys.host("@persist")), Vec::<String>::new());
    // Again: everything is there now but the conflicts.
    let o = sys.er(&["persist", "/var/lib/m", "--merge"]);
    assert!(out(&o).contains("0 missing entries copied"), "{}", out(&o));

    // Hidden content under a persisted path: refused without --merge, saved with it.
    let o = sys.er(&["persist", "/var/lib/h"]);
    refused(
        &o,
        "/var/lib/h is already persisted: it is bind-mounted from the store",
        "hidden",
    );
    let text = ok(
        sys.er(&["persist", "/var/lib/h", "--merge"]),
        "merge hidden",
    );
    assert!(text.contains("1 missing entries copied"), "{text}");
    assert!(
        text.contains("# already persisted: nothing to add to the configuration"),
        "{text}"
    );
    assert_eq!(
        sys.sh_ok("cat /var/lib/h/hidden"),
        "written before /var/lib/h was persisted"
    );
}
