//! `restore` from an old root on a real btrfs loop device: byte-identical content and metadata
//! (mode, owner, ns timestamps, symlinks, hard links, FIFOs, xattrs incl. trusted.* and a POSIX
//! ACL; setuid bits with --keep-privileges), refusal of escapes and of existing destinations.
//! Hostile destinations, names, depths and interruptions: tests/restore_hostile.rs. Needs root
//! (see tests/common).

mod common;
use common::*;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap();
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut v = vec![0u8; 65536];
        let l = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(l);
        out.push((name, v));
    }
    out.sort();
    out
}

/// Everything compared: type+mode, owner, size, mtime/atime (ns), nlink, link text, content, xattrs.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        // Contents are read after every stat (reading moves atimes of the destination).
        let content = if m.is_file() {
            format!("content:{}", p.display())
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        v.push(format!(
            "{rel} mode={:o} uid={} gid={} size={} mtime={}.{} atime={}.{} nlink={} {content} {:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec(),
            if m.is_dir() { 0 } else { m.atime() },
            if m.is_dir() { 0 } else { m.atime_nsec() },
            if m.is_dir() { 0 } else { m.nlink() },
            xattrs(&p)
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    v.sort();
    v.into_iter()
        .map(|line| match line.split_once("content:") {
            Some((head, rest)) => {
                let (path, tail) = rest.split_once(' ').unwrap();
                format!("{head}{:x} {tail}", md5ish(&std::fs::read(path).unwrap()))
            }
            None => line,
        })
        .collect()
}

fn md5ish(b: &[u8]) -> u64 {
    // FNV-1a: enough to tell contents apart in a test.
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// A POSIX ACL (system.posix_acl_access, version 2): user::rw- user:1000:r-- group::r-- mask::r-- other::---
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn build_tree(fs: &mut LoopFs) {
    let base = fs.p("@root/var/lib/app");
    std::fs::create_dir_all(base.join("sub/deeper")).unwrap();
    std::fs::write(base.join("data.db"), vec![7u8; 300_000]).unwrap();
    std::fs::write(base.join("sub/secret"), "s3cret").unwrap();
    std::fs::write(base.join("suid"), "#!/bin/sh\n").unwrap();
    std::fs::hard_link(base.join("data.db"), base.join("sub/data-link.db")).unwrap();
    symlink("../data.db", base.join("sub/link")).unwrap();
    symlink("/nonexistent/target", base.join("dangling")).unwrap();
    sh(&format!("mkfifo {}", base.join("sub/fifo").display()));
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
    // An escape attempt: a symlink inside the old root pointing out of it.
    symlink("/etc", fs.p("@root/var/lib/escape")).unwrap();
}

#[test]
fn restore_brings_back_trees_with_metadata_and_refuses_escapes() {
    if !require_root("restore_brings_back_trees_with_metadata_and_refuses_escapes") {
        return;
    }
    let mut fs = LoopFs::new("restore");
    fs.subvol("@root");
    build_tree(&mut fs);
    let marker = format!("er-restore-{}", std::process::id());
    fs.write(
        &format!("@root/tmp/{marker}/deep/file"),
        "default destination",
    );
    fs.boot(&["rollback"]);
    let name = fs.old_roots().pop().unwrap();

    let dest = fs.dir.join("out");
    std::fs::create_dir_all(&dest).unwrap();
    let to = dest.join("app");
    let out = fs.ok(&[
        "restore",
        &name,
        "/var/lib/app",
        "--to",
        to.to_str().unwrap(),
        "--keep-privileges",
    ]);
    assert!(out.contains("restored /var/lib/app"), "{out}");
    fs.mount();
    let src = fs.p(&format!("@snapshots/{name}/var/lib/app"));
    assert_eq!(fingerprint(&src), fingerprint(&to));
    // The hard link is a hard link again.
    let a = std::fs::metadata(to.join("data.db")).unwrap();
    let b = std::fs::metadata(to.join("sub/data-link.db")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert!(
        !std::fs::read_dir(&dest).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no temporary left"
    );

    // A single file, and refusing to overwrite.
    let f = dest.join("secret");
    fs.ok(&[
        "restore",
        &name,
        "var/lib/app/sub/secret",
        "--to",
        f.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "s3cret");
    std::fs::write(&f, "changed").unwrap();
    let o = fs.run(&[
        "restore",
        &name,
        "/var/lib/app/sub/secret",
        "--to",
        f.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("exists") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "changed");
    fs.ok(&[
        "restore",
        &name,
        "/var/lib/app/sub/secret",
        "--to",
        f.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "s3cret");
    // --force over a directory swaps the whole tree.
    std::fs::write(to.join("extra"), "x").unwrap();
    fs.ok(&[
        "restore",
        &name,
        "/var/lib/app",
        "--to",
        to.to_str().unwrap(),
        "--force",
        "--keep-privileges",
    ]);
    assert!(!to.join("extra").exists());
    fs.mount();
    assert_eq!(fingerprint(&src), fingerprint(&to));

    // Escapes.
    for (p, want) in [
        ("/var/lib/escape/passwd", "symlink"),
        ("/var/lib/app/../../../etc/passwd", "not allowed"),
        ("/var/lib/nothing-here", "does not exist"),
    ] {
        let o = fs.run(&[
            "restore",
            &name,
            p,
            "--to",
            dest.join("x").to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{p}");
        assert!(stderr(&o).contains(want), "{p}: {}", stderr(&o));
        assert!(!dest.join("x").exists());
    }
    let o = fs.run(&[
        "restore",
        "2020-01-01T00-00-00Z",
        "/var/lib/app",
        "--to",
        "/tmp/x",
    ]);
    assert!(stderr(&o).contains("ephemeral-root list"), "{}", stderr(&o));

    // Default destination: the same path on the running system, parents created.
    let host = Path::new("/tmp").join(&marker);
    let _ = std::fs::remove_dir_all(&host);
    fs.ok(&["restore", &name, &format!("/tmp/{marker}/deep/file")]);
    assert_eq!(
        std::fs::read_to_string(host.join("deep/file")).unwrap(),
        "default destination"
    );
    std::fs::remove_dir_all(&host).unwrap();
}
