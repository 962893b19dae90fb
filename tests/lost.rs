//! `lost` on a real btrfs loop device after a real rollback, against a real journal: written by a
//! private systemd-journald from services in their own cgroups (tests/journal/make-journal) and
//! read back by the real `journalctl --file`. Needs root (see tests/common).

mod common;
use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Run tests/journal/make-journal with `spec` on stdin; the journal file.
fn make_journal(fs: &LoopFs, spec: &[u8]) -> PathBuf {
    let out = fs.dir.join("test.journal");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/journal/make-journal");
    let mut c = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run make-journal");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(spec).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "make-journal failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Read back by the real journalctl: the services' fields are journald's own.
    let j = Command::new("journalctl")
        .arg("--file")
        .arg(&out)
        .args(["-o", "json", "--output-fields=_SYSTEMD_UNIT,UNIT"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&j.stdout);
    assert!(
        text.contains("\"_SYSTEMD_UNIT\":\"nginx.service\""),
        "journald did not record the unit: {text}"
    );
    out
}

fn nix_parse(line: &str) {
    let o = Command::new("nix-instantiate")
        .args(["--parse", "-E"])
        .arg(format!("{{ {line} }}"))
        .output()
        .expect("nix-instantiate (Debian's nix-bin)");
    assert!(
        o.status.success(),
        "nix-instantiate --parse rejected {line}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The lost items of `lost --json` via Python: (unit, path bytes, restore bytes, command,
/// persist line or "", files, bytes).
type Item = (String, Vec<u8>, Vec<u8>, String, String, u64, u64);

fn parse_json(js: &[u8]) -> (Vec<Item>, String) {
    let py = r#"
import json, sys
d = json.load(sys.stdin)
b = lambda o, k: bytes.fromhex(o[k + "_hex"]) if k + "_hex" in o else o[k].encode()
for s in d["services"]:
    for l in s["lost"]:
        print("\t".join([b(s, "unit").hex(), b(l, "path").hex(), b(l, "restore").hex(),
                         l["restore_command"].encode().hex(), (l["persist_line"] or "").encode().hex(),
                         str(l["files"]), str(l["bytes"])]))
print("failed", ",".join(sorted(s["unit"] + "=" + s["failed"] for s in d["services"] if s["failed"])))
"#;
    let mut c = Command::new("python3")
        .args(["-c", py])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(js).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "lost --json is not JSON: {}",
        String::from_utf8_lossy(js)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let s = |h: &str| String::from_utf8(hex(h)).unwrap();
    let mut items = Vec::new();
    let mut failed = String::new();
    for l in text.lines() {
        if let Some(f) = l.strip_prefix("failed ") {
            failed = f.to_string();
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        items.push((
            s(f[0]),
            hex(f[1]),
            hex(f[2]),
            s(f[3]),
            s(f[4]),
            f[5].parse().unwrap(),
            f[6].parse().unwrap(),
        ));
    }
    (items, failed)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

#[test]
fn lost_names_the_missing_files_and_brings_them_back() {
    if !require_root("lost_names_the_missing_files_and_brings_them_back") {
        return;
    }
    let mut fs = LoopFs::new("lost");
    fs.subvol("@root");
    // The previous boot's root: service state that was never persisted.
    let r = fs.p("@root");
    let put = |rel: &[u8], len: usize| {
        let p = r.join(os(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![b'k'; len]).unwrap();
    };
    put(b"var/lib/acme/example.org/fullchain.pem", 1500);
    put(b"var/lib/acme/example.org/key.pem", 300);
    put(b"etc/ssh/ssh_host_ed25519_key", 411);
    put(b"var/lib/private/app/state.db", 2000);
    symlink("private/app", r.join("var/lib/app")).unwrap();
    put(b"var/lib/foo/data", 10);
    put(b"var/lib/caf\xe9/db", 5);
    put(b"srv/\x1b[31mred", 7);
    put(b"var/log/nginx/error.log", 99);
    fs.boot(&["rollback"]);
    let old = fs.old_roots().pop().expect("an old root");
    // This boot: systemd recreated the state directory and nginx its log.
    let r = fs.p("@root");
    std::fs::create_dir_all(r.join("var/lib/acme")).unwrap();
    std::fs::create_dir_all(r.join("var/log/nginx")).unwrap();
    std::fs::write(r.join("var/log/nginx/error.log"), "new").unwrap();
    // The journal starts after the old root began (whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let spec: &[u8] = b"nginx.service\tnginx\tnginx: [emerg] cannot load certificate \"/var/lib/acme/example.org/fullchain.pem\": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory:calling fopen(/var/lib/acme/example.org/fullchain.pem, r) error:10000080:BIO routines::no such file)
nginx.service\tnginx\tnginx: [emerg] open() \"/var/log/nginx/error.log\" failed (2: No such file or directory)
@nginx.service\texit-code
sshd.service\tsshd\tCould not load host key: /etc/ssh/ssh_host_ed25519_key
sshd.service\tsshd\tsshd: no hostkeys available -- exiting.
@sshd.service\texit-code
postgresql.service\tpostgres\t2026-11-30 12:00:00.000 UTC [812] FATAL:  could not open file \"global/pg_filenode.map\": No such file or directory
postgresql.service\tpostgres\tpostgres: could not access directory \"/var/lib/postgresql/16\": No such file or directory
app.service\tapp\tError: open /var/lib/app/state.db: no such file or directory
!foo.service\tfoo.service: Failed to set up mount namespacing: /run/systemd/unit-root/var/lib/foo: No such file or directory
@foo.service\texit-code
odd.service\todd\topen(/var/lib/caf\\xe9/db) failed: No such file or directory
odd.service\todd\tcannot open \"/srv/\\x1b[31mred\": No such file or directory
odd.service\todd\tStarted.
";
    let journal = make_journal(&fs, spec);
    let jf = journal.to_str().unwrap();

    let out = fs.run(&["lost", "--journal-file", jf]);
    let text = String::from_utf8(out.stdout.clone()).expect("output is text");
    assert!(out.status.success(), "{text}{}", stderr(&out));
    eprintln!("{text}");
    assert!(!text.contains('\u{1b}'), "raw escape in output");
    for want in [
        format!("compared with old root {old}\n"),
        "\nnginx.service: failed (exit-code)\n".into(),
        format!("  missing /var/lib/acme/example.org/fullchain.pem: in old root {old}\n"),
        format!("    restore: ephemeral-root restore {old} /var/lib/acme/example.org   # directory, 2 files, 1.8 KiB\n"),
        "    persist: environment.persistence.\"/persist\".directories = [ \"/var/lib/acme\" ];\n".into(),
        "  exists now: /var/log/nginx/error.log\n".into(),
        "\nsshd.service: failed (exit-code)\n".into(),
        format!("    restore: ephemeral-root restore {old} /etc/ssh/ssh_host_ed25519_key   # 411 B\n"),
        "    persist: environment.persistence.\"/persist\".files = [ \"/etc/ssh/ssh_host_ed25519_key\" ];\n".into(),
        format!("  not in old root {old} either (not lost by the wipe): /var/lib/postgresql/16\n"),
        "  no path named: 2026-11-30 12:00:00.000 UTC [812] FATAL:  could not open file \"global/pg_filenode.map\": No such file or directory\n".into(),
        format!("  missing /var/lib/app/state.db: in old root {old}\n"),
        format!("    restore: ephemeral-root restore {old} /var/lib/private/app   # directory, 1 file, 2.0 KiB\n"),
        "    persist: environment.persistence.\"/persist\".directories = [ \"/var/lib/private/app\" ];\n".into(),
        "\nfoo.service: failed (exit-code)\n".into(),
        format!("    restore: ephemeral-root restore {old} /var/lib/foo   # directory, 1 file, 10 B\n"),
        format!("  missing /var/lib/caf\\xe9/db: in old root {old}\n"),
        format!("    restore: ephemeral-root restore {old} $'/var/lib/caf\\xe9'   # directory, 1 file, 5 B\n"),
        "    persist: /var/lib/caf\\xe9 (add by hand: a Nix string cannot hold this name)\n".into(),
        format!("  missing /srv/\\x1b[31mred: in old root {old}\n"),
        format!("    restore: ephemeral-root restore {old} $'/srv/\\x1b[31mred'   # 7 B\n"),
        format!("3 unit(s) failed, 6 complained about missing files; 6 path(s) can be brought back from {old}\n"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("\nodd.service: failed"), "{text}");

    // A declared persisted path that the store lacks is said to be so, with no line to add.
    let out = fs.ok(&["lost", "--journal-file", jf, "--persist", "/etc/ssh"]);
    assert!(
        out.contains(&format!("  missing /etc/ssh/ssh_host_ed25519_key: in old root {old} (declared persisted: the store lacks it)\n    restore: ")),
        "{out}"
    );
    assert!(
        !out.contains("\"/etc/ssh/ssh_host_ed25519_key\" ];"),
        "{out}"
    );

    // --json: every path comes back byte for byte; every persistence line parses as Nix.
    let js = fs.ok(&["lost", "--journal-file", jf, "--json"]);
    let (items, failed) = parse_json(js.as_bytes());
    assert_eq!(
        failed,
        "foo.service=exit-code,nginx.service=exit-code,sshd.service=exit-code"
    );
    let restores: Vec<&[u8]> = items.iter().map(|i| i.2.as_slice()).collect();
    for want in [
        &b"/var/lib/acme/example.org"[..],
        b"/etc/ssh/ssh_host_ed25519_key",
        b"/var/lib/private/app",
        b"/var/lib/foo",
        b"/var/lib/caf\xe9",
        b"/srv/\x1b[31mred",
    ] {
        assert!(restores.contains(&want), "{want:?} not in {restores:?}");
    }
    assert_eq!(items.len(), 6, "{items:?}");
    for (_, _, _, _, line, _, _) in &items {
        if !line.is_empty() {
            nix_parse(line);
        }
    }

    // Without `store =` the lines name /persist and say so.
    assert!(
        text.contains("no `store =` in the config, so they name /persist"),
        "{text}"
    );
    // The configured store and form (`store`, `persist_format`: the NixOS module writes them).
    let conf = fs.dir.join("preservation.conf");
    std::fs::write(
        &conf,
        "store = /nix/persist\npersist_format = preservation\n",
    )
    .unwrap();
    let out = fs.ok(&[
        "lost",
        "--journal-file",
        jf,
        "--config",
        conf.to_str().unwrap(),
    ]);
    for want in [
        "    persist: preservation.preserveAt.\"/nix/persist\".directories = [ \"/var/lib/acme\" ];\n",
        "    persist: preservation.preserveAt.\"/nix/persist\".files = [ \"/etc/ssh/ssh_host_ed25519_key\" ];\n",
        "persistence lines: preservation's preservation.preserveAt with the store /nix/persist",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("environment.persistence"), "{out}");
    std::fs::write(&conf, "store = /state\npersist_format = fstab\n").unwrap();
    let js = fs.ok(&[
        "lost",
        "--journal-file",
        jf,
        "--json",
        "--config",
        conf.to_str().unwrap(),
    ]);
    let (items, _) = parse_json(js.as_bytes());
    let lines: Vec<&String> = items
        .iter()
        .map(|i| &i.4)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        lines.contains(&&"fileSystems.\"/var/lib/acme\" = { device = \"/state/var/lib/acme\"; options = [ \"bind\" ]; };".to_string()),
        "{lines:?}"
    );
    assert!(
        js.contains("\"persist_format\":\"fstab\",\"store\":\"/state\",\"store_assumed\":false"),
        "{js}"
    );
    for line in &lines {
        assert!(line.starts_with("fileSystems."), "{line}");
        nix_parse(line);
    }

    // Each printed restore command, run as printed (into the mounted new root with --to),
    // brings the old bytes back.
    let live = fs.dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    sh(&format!(
        "mount -o subvol=@root {} {}",
        fs.dev,
        live.display()
    ));
    for d in ["etc/ssh", "var/lib/private", "srv"] {
        std::fs::create_dir_all(live.join(d)).unwrap();
    }
    let bindir = Path::new(bin()).parent().unwrap();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap());
    for (unit, _, restore, cmd, _, _, _) in &items {
        assert!(
            cmd.starts_with(&format!("ephemeral-root restore {old} ")),
            "{cmd}"
        );
        let mut dest = live.as_os_str().as_bytes().to_vec();
        dest.extend_from_slice(restore);
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{cmd} --device \"$DEV\" --config /dev/null --to \"$DEST\""
            ))
            .env("PATH", &path)
            .env("DEV", &fs.dev)
            .env("DEST", os(&dest))
            .env("EPHEMERAL_ROOT_STATE_DIR", fs.dir.join("state"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{unit}: `{cmd}` failed: {}", stderr(&o));
    }
    sh(&format!("umount {}", live.display()));
    fs.mount();
    for f in [
        &b"var/lib/acme/example.org/fullchain.pem"[..],
        b"var/lib/acme/example.org/key.pem",
        b"etc/ssh/ssh_host_ed25519_key",
        b"var/lib/private/app/state.db",
        b"var/lib/foo/data",
        b"var/lib/caf\xe9/db",
        b"srv/\x1b[31mred",
    ] {
        let was = std::fs::read(fs.p(&format!("@snapshots/{old}")).join(os(f))).unwrap();
        let now = std::fs::read(fs.p("@root").join(os(f)))
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(f)));
        assert_eq!(was, now, "{}", String::from_utf8_lossy(f));
    }
    // Once back, nothing is missing any more.
    let again = fs.ok(&["lost", "--journal-file", jf]);
    assert!(again.contains("0 path(s) can be brought back"), "{again}");
    assert!(
        again.contains("  exists now: /etc/ssh/ssh_host_ed25519_key\n"),
        "{again}"
    );

    // Bad input: one clear line, non-zero.
    for (args, code, want) in [
        (
            vec!["lost", "--journal-file", jf, "--boot", "-1"],
            1,
            "journalctl -b -1 failed: ",
        ),
        (
            vec!["lost", "--boot", "yesterday"],
            2,
            "--boot \"yesterday\": give an offset",
        ),
    ] {
        let o = fs.run(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
    }
}
