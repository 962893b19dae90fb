//! `restore` against hostile and careless input, on real btrfs loop devices (issue #10): mounts
//! inside the destination, symlinks swapped into the destination path, one kind of file over
//! another, names that are not text, deep chains under a low descriptor limit, sparse files,
//! setuid bits and file capabilities, interruption and stale partial copies. Each test names the
//! rule of docs/path-safety.md it checks. Needs root (see tests/common).

mod common;
use common::*;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A bind mount, undone on drop (also when the test fails).
struct Bind(PathBuf);

impl Bind {
    fn new(src: &Path, dst: &Path) -> Bind {
        sh(&format!(
            "mount --bind '{}' '{}'",
            src.display(),
            dst.display()
        ));
        Bind(dst.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

fn mounted_at(p: &Path) -> bool {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_str().unwrap();
    mi.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// A filesystem whose only old root holds what `build` wrote into @root.
fn with_old_root(tag: &str, build: impl FnOnce(&mut LoopFs)) -> (LoopFs, String) {
    let mut fs = LoopFs::new(tag);
    fs.subvol("@root");
    fs.subvol("@persist");
    build(&mut fs);
    fs.boot(&["rollback", "--keep", "all"]);
    let name = fs.old_roots().pop().unwrap();
    (fs, name)
}

/// Entries of a directory as bytes, sorted (hidden ones included).
fn names(p: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    v.sort();
    v
}

fn run_os(fs: &mut LoopFs, args: &[&OsStr]) -> Output {
    fs.umount();
    fs.command(args).output().unwrap()
}

/// The error: exactly one `error:` line, and nothing else but warnings/info.
fn one_error_line(o: &Output) -> String {
    assert!(!o.status.success(), "succeeded: {}", stderr(o));
    let e = stderr(o);
    let errs: Vec<&str> = e.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errs.len(), 1, "{e}");
    errs[0].to_string()
}

fn boot8() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect()
}

/// Rule 5 (docs/path-safety.md): replacing never crosses into a mount, and a destination that is
/// or holds a mount point is refused before anything is touched.
#[test]
fn force_never_replaces_a_tree_that_holds_a_mount() {
    if !require_root("force_never_replaces_a_tree_that_holds_a_mount") {
        return;
    }
    let (mut fs, name) = with_old_root("r-mounts", |fs| {
        fs.write("@root/var/lib/app/state/db", "old db");
        fs.write("@root/var/lib/app/conf", "old conf");
    });
    let out = fs.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let app = out.join("app");
    fs.ok(&[
        "restore",
        &name,
        "/var/lib/app",
        "--to",
        app.to_str().unwrap(),
    ]);
    // The persisted copy, bind-mounted over app/state as impermanence does under /var/lib.
    let persist = fs.dir.join("persist/state");
    std::fs::create_dir_all(&persist).unwrap();
    std::fs::write(persist.join("db"), "persisted db").unwrap();
    let _m = Bind::new(&persist, &app.join("state"));
    std::fs::write(app.join("conf"), "new conf").unwrap();
    let before = names(&out);

    let o = fs.run(&[
        "restore",
        &name,
        "/var/lib/app",
        "--to",
        app.to_str().unwrap(),
        "--force",
    ]);
    // The mounted data first (what the issue lost), then nothing renamed, then the message.
    assert_eq!(
        std::fs::read_to_string(persist.join("db")).ok().as_deref(),
        Some("persisted db"),
        "the mounted data was deleted: {}",
        stderr(&o)
    );
    assert!(mounted_at(&app.join("state")), "the mount is gone");
    assert_eq!(
        std::fs::read_to_string(app.join("state/db")).unwrap(),
        "persisted db"
    );
    assert_eq!(
        names(&out),
        before,
        "something was renamed or left in {out:?}: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(app.join("conf")).unwrap(),
        "new conf"
    );
    let e = one_error_line(&o);
    assert!(e.contains("mount point"), "{e}");

    // The destination itself is a mount point.
    let whole = fs.dir.join("persist/whole");
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::write(whole.join("conf"), "persisted conf").unwrap();
    let app2 = out.join("app2");
    std::fs::create_dir_all(&app2).unwrap();
    let _m2 = Bind::new(&whole, &app2);
    let o = fs.run(&[
        "restore",
        &name,
        "/var/lib/app",
        "--to",
        app2.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        one_error_line(&o).contains("is a mount point"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(whole.join("conf")).unwrap(),
        "persisted conf"
    );
    assert!(mounted_at(&app2));

    // A partial copy left by an interrupted restore that holds a mount: removing it stops at the
    // mount (and says so); the mounted data stays.
    let other_boot = if boot8() == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let stale = out.join(format!(".x.ephemeral-root-restore.{other_boot}.1.1"));
    std::fs::create_dir_all(stale.join("inner")).unwrap();
    std::fs::write(stale.join("junk"), "junk").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).unwrap();
    let keep = fs.dir.join("persist/keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("precious"), "precious").unwrap();
    let _m3 = Bind::new(&keep, &stale.join("inner"));
    let o = fs.run(&[
        "restore",
        &name,
        "/var/lib/app/conf",
        "--to",
        out.join("conf2").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stopped removing") && stderr(&o).contains("mount point"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(keep.join("precious")).unwrap(),
        "precious"
    );
    assert!(mounted_at(&stale.join("inner")));
    assert_eq!(
        std::fs::read_to_string(out.join("conf2")).unwrap(),
        "old conf"
    );
}

/// Rule 2 (docs/path-safety.md): the destination is opened component by component without
/// following symlinks; a symlink anywhere in it is refused and nothing is written.
#[test]
fn destination_symlinks_are_refused_and_nothing_is_written() {
    if !require_root("destination_symlinks_are_refused_and_nothing_is_written") {
        return;
    }
    let base = format!("/tmp/er-hostile-{}", std::process::id());
    let (mut fs, name) = with_old_root("r-symlinks", |fs| {
        fs.write(&format!("@root{base}/home/dir/file"), "restored");
        fs.write(&format!("@root{base}/home/link2/newdir/file"), "restored");
    });
    // On the running system a user (uid 1000) owns `home` and has swapped `dir` and `link2` for
    // symlinks to a directory only root may write.
    let b = Path::new(&base);
    let _ = std::fs::remove_dir_all(b);
    std::fs::create_dir_all(b.join("home")).unwrap();
    std::fs::create_dir_all(b.join("rootonly")).unwrap();
    std::fs::set_permissions(b.join("rootonly"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for l in ["dir", "link2"] {
        symlink(b.join("rootonly"), b.join("home").join(l)).unwrap();
    }
    sh(&format!(
        "chown -h 1000:1000 {base}/home {base}/home/dir {base}/home/link2"
    ));
    let home_before = names(&b.join("home"));

    for (path, to) in [
        (format!("{base}/home/dir/file"), None),
        (format!("{base}/home/link2/newdir/file"), None),
        (
            format!("{base}/home/dir/file"),
            Some(format!("{base}/home/dir/copy")),
        ),
    ] {
        let mut args = vec!["restore", name.as_str(), path.as_str()];
        if let Some(t) = &to {
            args.extend(["--to", t.as_str()]);
        }
        let o = fs.run(&args);
        let e = one_error_line(&o);
        assert!(e.contains("is a symlink"), "{path}: {e}");
        assert!(
            names(&b.join("rootonly")).is_empty(),
            "{path}: written through the symlink: {:?}",
            names(&b.join("rootonly"))
        );
        assert_eq!(names(&b.join("home")), home_before, "{path}");
    }

    // The real directories instead of the symlinks: restored, missing parents created with the
    // old root's owner and mode.
    std::fs::remove_file(b.join("home/link2")).unwrap();
    fs.ok(&["restore", &name, &format!("{base}/home/link2/newdir/file")]);
    assert_eq!(
        std::fs::read_to_string(b.join("home/link2/newdir/file")).unwrap(),
        "restored"
    );
    let m = std::fs::symlink_metadata(b.join("home/link2/newdir")).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
    std::fs::remove_dir_all(b).unwrap();
}

/// Rule 4 (docs/path-safety.md): one kind of file never replaces another (file, directory,
/// symlink) unless --replace-type asks, even with --force.
#[test]
fn one_kind_never_replaces_another_without_replace_type() {
    if !require_root("one_kind_never_replaces_another_without_replace_type") {
        return;
    }
    let (mut fs, name) = with_old_root("r-types", |fs| {
        fs.write("@root/var/lib/app/conf", "conf from old root");
        fs.write("@root/var/lib/app/dir/x", "x");
        symlink("target", fs.p("@root/var/lib/app/sym")).unwrap();
    });
    let out = fs.dir.join("out");
    std::fs::create_dir_all(out.join("t1")).unwrap();
    std::fs::write(out.join("t1/keep"), "keep").unwrap();
    std::fs::write(out.join("t2"), "a file").unwrap();
    std::fs::create_dir_all(out.join("t3")).unwrap();
    std::fs::write(out.join("t3/keep"), "keep").unwrap();
    symlink(out.join("t1"), out.join("t4")).unwrap();
    let before = names(&out);
    for (src, to, want) in [
        ("/var/lib/app/conf", "t1", "is a directory and"),
        ("/var/lib/app/dir", "t2", "is a file and"),
        ("/var/lib/app/sym", "t3", "is a directory and"),
        ("/var/lib/app/dir", "t4", "is a symlink and"),
    ] {
        let dest = out.join(to);
        let o = fs.run(&[
            "restore",
            &name,
            src,
            "--to",
            dest.to_str().unwrap(),
            "--force",
        ]);
        let e = one_error_line(&o);
        assert!(
            e.contains(want) && e.contains("--replace-type"),
            "{src} onto {to}: {e}"
        );
        assert_eq!(names(&out), before, "{src} onto {to}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("t1/keep")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_to_string(out.join("t2")).unwrap(), "a file");
    assert_eq!(
        std::fs::read_to_string(out.join("t3/keep")).unwrap(),
        "keep"
    );
    assert!(std::fs::symlink_metadata(out.join("t4"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Asked for explicitly: done.
    for (src, to) in [
        ("/var/lib/app/conf", "t1"),
        ("/var/lib/app/dir", "t2"),
        ("/var/lib/app/sym", "t3"),
        ("/var/lib/app/dir", "t4"),
    ] {
        let dest = out.join(to);
        fs.ok(&[
            "restore",
            &name,
            src,
            "--to",
            dest.to_str().unwrap(),
            "--force",
            "--replace-type",
        ]);
    }
    assert_eq!(
        std::fs::read_to_string(out.join("t1")).unwrap(),
        "conf from old root"
    );
    assert_eq!(std::fs::read_to_string(out.join("t2/x")).unwrap(), "x");
    assert_eq!(
        std::fs::read_link(out.join("t3")).unwrap(),
        Path::new("target")
    );
    assert_eq!(std::fs::read_to_string(out.join("t4/x")).unwrap(), "x");
    // The symlink was replaced, not followed: t1 (its old target) is the restored file.
    assert_eq!(
        std::fs::read_to_string(out.join("t1")).unwrap(),
        "conf from old root"
    );
    assert!(
        names(&out).iter().all(|n| n[0] != b'.'),
        "{:?}",
        names(&out)
    );
}

/// Rule 8 (docs/path-safety.md): names are bytes end to end; messages escape and cut them.
#[test]
fn names_are_bytes_and_messages_escape_them() {
    if !require_root("names_are_bytes_and_messages_escape_them") {
        return;
    }
    let odd: Vec<Vec<u8>> = vec![
        b"caf\xe9".to_vec(),
        b"line\nbreak".to_vec(),
        b"\x1b[31mred\x1b[0m".to_vec(),
        b"tab\there".to_vec(),
        "日本語".as_bytes().to_vec(),
        vec![b'n'; 255],
    ];
    let (mut fs, name) = with_old_root("r-names", |fs| {
        let d = fs.p("@root/srv/odd");
        std::fs::create_dir_all(d.join(OsStr::from_bytes(b"d\xff"))).unwrap();
        for n in &odd {
            std::fs::write(d.join(OsStr::from_bytes(n)), n).unwrap();
        }
        std::fs::write(d.join(OsStr::from_bytes(b"d\xff/inner\x7f")), "inner").unwrap();
    });
    let out = fs.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let to = out.join("odd");
    fs.ok(&["restore", &name, "/srv/odd", "--to", to.to_str().unwrap()]);
    let mut want = odd.clone();
    want.push(b"d\xff".to_vec());
    want.sort();
    assert_eq!(names(&to), want);
    for n in &odd {
        assert_eq!(&std::fs::read(to.join(OsStr::from_bytes(n))).unwrap(), n);
    }
    assert_eq!(
        std::fs::read(to.join(OsStr::from_bytes(b"d\xff/inner\x7f"))).unwrap(),
        b"inner"
    );

    // PATH and --to that are not UTF-8.
    let single = out.join(OsStr::from_bytes(b"single\xe9"));
    let o = run_os(
        &mut fs,
        &[
            OsStr::new("restore"),
            OsStr::new(&name),
            OsStr::from_bytes(b"/srv/odd/caf\xe9"),
            OsStr::new("--to"),
            single.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&single).unwrap(), b"caf\xe9");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("single\\xe9"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A name with an escape sequence and a newline in an error: escaped, one line.
    let o = run_os(
        &mut fs,
        &[
            OsStr::new("restore"),
            OsStr::new(&name),
            OsStr::from_bytes(b"/srv/odd/\x1b[31mnope\nforged: ok"),
            OsStr::new("--to"),
            out.join("x").as_os_str(),
        ],
    );
    let e = one_error_line(&o);
    assert!(e.contains("\\x1b[31mnope\\nforged: ok"), "{e}");
    assert!(!o.stderr.contains(&0x1b), "raw ESC in stderr");
    // A 3,000-byte path: the message keeps both ends and says how long it was.
    let long = format!("/srv/{}/end", "d/".repeat(1500));
    let o = fs.run(&[
        "restore",
        &name,
        &long,
        "--to",
        out.join("x").to_str().unwrap(),
    ]);
    let e = one_error_line(&o);
    assert!(e.len() < 600, "{} bytes: {e}", e.len());
    assert!(
        e.contains("/srv/d/d") && e.contains("d/end") && e.contains("bytes)"),
        "{e}"
    );
}

fn make_chain(top: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut cur = rustix::fs::open(
        top,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
        cur = rustix::fs::openat(
            &cur,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
    }
    let f = rustix::fs::openat(
        &cur,
        "bottom",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&f, b"bottom").unwrap();
}

/// Depth of a `d/d/d/.../bottom` chain, walked one descriptor at a time.
fn chain_depth(top: &Path) -> Option<usize> {
    use rustix::fs::{Mode, OFlags};
    let mut cur = rustix::fs::open(
        top,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut n = 0;
    loop {
        match rustix::fs::openat(
            &cur,
            "d",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(next) => {
                cur = next;
                n += 1;
            }
            Err(_) => {
                let f = rustix::fs::openat(
                    &cur,
                    "bottom",
                    OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()?;
                let mut b = [0u8; 16];
                let k = rustix::io::read(&f, &mut b).ok()?;
                return (&b[..k] == b"bottom").then_some(n);
            }
        }
    }
}

/// Rule 7 (docs/path-safety.md): traversal holds a bounded number of descriptors and does not
/// recurse: a 3,000-level chain restores under `ulimit -n 1024`; a 30,000-level one works or
/// fails with one line, never a crash.
#[test]
fn deep_chains_restore_with_bounded_descriptors() {
    if !require_root("deep_chains_restore_with_bounded_descriptors") {
        return;
    }
    let (mut fs, name) = with_old_root("r-deep", |fs| {
        fs.mount();
        std::fs::create_dir_all(fs.p("@root/srv/deep")).unwrap();
        std::fs::create_dir_all(fs.p("@root/srv/deeper")).unwrap();
        make_chain(&fs.p("@root/srv/deep"), 3000);
        make_chain(&fs.p("@root/srv/deeper"), 30000);
    });
    // Destination: the filesystem's @persist, mounted beside our view (the test can drop it with
    // the loop device instead of deleting a 30,000-level tree).
    fs.umount();
    let live = fs.dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    sh(&format!(
        "mount -o subvol=@persist {} {}",
        fs.dev,
        live.display()
    ));
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .output();
        }
    }
    let _u = Umount(live.clone());
    let limited = |fs: &LoopFs, args: &[&str]| -> Output {
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("ulimit -n 1024 && exec \"$@\"")
            .arg("sh")
            .arg(bin());
        let inner = fs.command(args);
        c.args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.output().unwrap()
    };
    let o = limited(
        &fs,
        &[
            "restore",
            &name,
            "/srv/deep",
            "--to",
            live.join("deep").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(chain_depth(&live.join("deep")), Some(3000));

    let t = std::time::Instant::now();
    let o = limited(
        &fs,
        &[
            "restore",
            &name,
            "/srv/deeper",
            "--to",
            live.join("deeper").to_str().unwrap(),
        ],
    );
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    if o.status.success() {
        assert_eq!(chain_depth(&live.join("deeper")), Some(30000));
    } else {
        one_error_line(&o);
        assert!(!live.join("deeper").exists());
    }
    eprintln!(
        "30,000-level chain: {} in {:.1} s",
        if o.status.success() {
            "restored"
        } else {
            "refused"
        },
        t.elapsed().as_secs_f64()
    );
    assert!(
        names(&live).iter().all(|n| n[0] != b'.'),
        "{:?}",
        names(&live)
    );
}

/// Rule 9 (docs/path-safety.md): sparse files keep their holes when no reflink is possible, and
/// setuid/setgid bits and file capabilities are restored only with --keep-privileges.
#[test]
fn holes_stay_holes_and_privileges_need_asking() {
    if !require_root("holes_stay_holes_and_privileges_need_asking") {
        return;
    }
    // cap_net_bind_service, effective (vfs_cap_data revision 2).
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    for w in [1u32 << 10, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    let cap2 = cap.clone();
    let (mut fs, name) = with_old_root("r-sparse", move |fs| {
        let d = fs.p("@root/srv");
        std::fs::create_dir_all(&d).unwrap();
        let f = std::fs::File::create(d.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"data in the middle", 32 << 20).unwrap();
        std::fs::write(d.join("suid"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::write(d.join("sgid"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.join("sgid"), std::fs::Permissions::from_mode(0o2755)).unwrap();
        std::fs::write(d.join("capped"), "#!/bin/sh\n").unwrap();
        rustix::fs::setxattr(
            d.join("capped"),
            "security.capability",
            &cap2,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("shared")).unwrap();
        std::fs::set_permissions(d.join("shared"), std::fs::Permissions::from_mode(0o2775))
            .unwrap();
    });
    // The destination is on another filesystem (/tmp), so no reflink: holes must be kept by
    // copying only the data.
    let out = fs.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = fs.run(&[
        "restore",
        &name,
        "/srv",
        "--to",
        out.join("srv").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = out.join("srv/sparse");
    let m = std::fs::metadata(&s).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        m.blocks() * 512
    );
    let content = std::fs::read(&s).unwrap();
    assert_eq!(&content[32 << 20..(32 << 20) + 18], b"data in the middle");
    assert!(content[..32 << 20].iter().all(|&b| b == 0));

    let e = stderr(&o);
    for (f, what) in [
        ("suid", "setuid bit of"),
        ("sgid", "setgid bit of"),
        ("capped", "file capabilities of"),
    ] {
        assert!(e.contains(&format!("{what} {name}:/srv/{f}")), "{f}: {e}");
    }
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("3 setuid/setgid bits or file capabilities NOT restored"));
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("srv/suid"), 0o755);
    assert_eq!(mode("srv/sgid"), 0o755);
    assert_eq!(mode("srv/shared"), 0o2775, "setgid on a directory is kept");
    let mut buf = [0u8; 64];
    assert!(
        rustix::fs::getxattr(out.join("srv/capped"), "security.capability", &mut buf[..]).is_err()
    );

    let o = fs.run(&[
        "restore",
        &name,
        "/srv",
        "--to",
        out.join("srv2").to_str().unwrap(),
        "--keep-privileges",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("not restored"), "{}", stderr(&o));
    assert_eq!(mode("srv2/suid"), 0o4755);
    assert_eq!(mode("srv2/sgid"), 0o2755);
    let n =
        rustix::fs::getxattr(out.join("srv2/capped"), "security.capability", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], &cap[..]);
}

#[cfg(feature = "fault-injection")]
fn wait_for_hidden(dir: &Path) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(20) {
        if std::fs::read_dir(dir)
            .map(|rd| rd.flatten().any(|e| e.file_name().as_bytes()[0] == b'.'))
            .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Rule 6 (docs/path-safety.md): an interrupted restore removes its partial copy; a later one
/// removes partial copies it can prove are its own, and nothing else.
#[cfg(feature = "fault-injection")]
#[test]
fn interrupted_restores_clean_up_and_stale_copies_are_removed_only_with_proof() {
    if !require_root("interrupted_restores_clean_up_and_stale_copies_are_removed_only_with_proof") {
        return;
    }
    let (mut fs, name) = with_old_root("r-interrupt", |fs| {
        for i in 0..200 {
            fs.write(&format!("@root/srv/many/f{i:03}"), "x");
        }
    });
    let out = fs.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let to = out.join("many");
    fs.umount();
    for sig in ["INT", "TERM", "HUP"] {
        let mut c = fs.command(&["restore", &name, "/srv/many", "--to", to.to_str().unwrap()]);
        c.env("EPHEMERAL_ROOT_FAULT_DELAY_MS", "20")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = c.spawn().unwrap();
        assert!(wait_for_hidden(&out), "SIG{sig}: no partial copy appeared");
        std::thread::sleep(std::time::Duration::from_millis(300));
        sh(&format!("kill -{sig} {}", child.id()));
        let o = child.wait_with_output().unwrap();
        let num = match sig {
            "INT" => 2,
            "TERM" => 15,
            _ => 1,
        };
        assert_eq!(
            o.status.signal(),
            Some(num),
            "SIG{sig}: {:?} {}",
            o.status,
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("interrupted by SIG")
                && stderr(&o).contains("partial copy was removed"),
            "{}",
            stderr(&o)
        );
        assert!(names(&out).is_empty(), "SIG{sig}: left {:?}", names(&out));
    }

    // Killed without a chance to clean up (abort at a fault point): the partial copy stays, made
    // by root with mode 0700.
    let o = fs.run_env(
        &["restore", &name, "/srv/many", "--to", to.to_str().unwrap()],
        &[("EPHEMERAL_ROOT_FAULT", "restore:copying")],
    );
    assert_eq!(o.status.signal(), Some(6), "{}", stderr(&o));
    let left = names(&out);
    assert_eq!(left.len(), 1, "{left:?}");
    let partial = out.join(OsStr::from_bytes(&left[0]));
    let m = std::fs::symlink_metadata(&partial).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
    // Decoys: named like ours but owned by a user; and one whose creator (this test) is alive.
    let decoy = out.join(format!(".many.ephemeral-root-restore.{}.1.1", boot8()));
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o700)).unwrap();
    sh(&format!("chown 1000 {}", decoy.display()));
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let live = out.join(format!(
        ".many.ephemeral-root-restore.{}.{}.{start}",
        boot8(),
        std::process::id()
    ));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o700)).unwrap();

    let o = fs.run(&["restore", &name, "/srv/many", "--to", to.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("a partial copy left by an interrupted restore"),
        "{e}"
    );
    assert!(e.contains("it is not owned by root"), "{e}");
    assert!(e.contains("still running"), "{e}");
    assert!(!partial.exists(), "the stale partial copy is still there");
    assert!(decoy.exists() && live.exists(), "removed without proof");
    assert_eq!(names(&to).len(), 200);
    let _ = OsString::new();
}
