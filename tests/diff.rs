//! `diff` and `baseline` on real btrfs loop devices, with a root filled like a NixOS machine after
//! a day of use. Needs root (see tests/common).

mod common;
use common::*;
use std::os::unix::fs::symlink;
use std::process::Command;

/// What NixOS activation and systemd leave on a fresh root at every boot.
fn boot_noise(fs: &mut LoopFs) {
    let r = fs.p("@root");
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "nix",
        "boot",
        "persist",
        "var/empty",
        "tmp",
        "etc/ssh",
        "usr/bin",
        "bin",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    symlink("/nix/store/0123-etc/etc", r.join("etc/static")).unwrap();
    symlink("/etc/static/hosts", r.join("etc/hosts")).unwrap();
    symlink("/etc/static/ssh/sshd_config", r.join("etc/ssh/sshd_config")).unwrap();
    symlink("../proc/self/mounts", r.join("etc/mtab")).unwrap();
    symlink("/nix/store/0123-bash/bin/sh", r.join("bin/sh")).unwrap();
    symlink("/nix/store/0123-coreutils/bin/env", r.join("usr/bin/env")).unwrap();
    for (p, c) in [
        ("etc/.clean", "sudoers\n"),
        ("etc/sudoers", "root ALL=(ALL) ALL\n"),
        ("etc/NIXOS", ""),
        ("etc/.updated", "TIMESTAMP_NSEC=1\n"),
        ("var/.updated", "TIMESTAMP_NSEC=1\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:!:1::::::\n"),
        ("var/lib/nixos/uid-map", "{}"),
        ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
    ] {
        fs.write(&format!("@root/{p}"), c);
    }
}

fn big(n: usize) -> String {
    "x".repeat(n)
}

/// A day of use: services, caches, logs, a user's files.
fn day_of_use(fs: &mut LoopFs) {
    for (p, c) in [
        ("var/lib/postgresql/16/base/1/1259", big(200_000)),
        ("var/lib/postgresql/16/base/1/1249", big(100_000)),
        ("var/lib/tailscale/tailscaled.state", big(2_000)),
        ("var/cache/nginx/proxy/a/b", big(500_000)),
        ("var/log/nginx/access.log", big(50_000)),
        ("var/log/journal/0123/system.journal", big(80_000)),
        ("etc/ssh/ssh_host_ed25519_key", big(400)),
        ("etc/ssh/ssh_host_ed25519_key.pub", big(100)),
        (
            "etc/NetworkManager/system-connections/home.nmconnection",
            big(300),
        ),
        ("home/alice/.ssh/id_ed25519", big(400)),
        ("home/alice/.config/nvim/init.lua", big(1_000)),
        ("home/alice/.cache/thumbnails/x.png", big(300_000)),
        ("home/alice/.bash_history", big(3_000)),
        ("home/alice/projects/app/main.rs", big(5_000)),
        ("home/alice/we\"ird ${x}/note", big(10)),
        ("root/.bash_history", big(100)),
        ("tmp/build-123/obj.o", big(7_000)),
    ] {
        fs.write(&format!("@root/{p}"), &c);
    }
}

fn new_fs(tag: &str) -> LoopFs {
    let mut fs = LoopFs::new(tag);
    fs.subvol("@root");
    fs
}

const PERSIST: &[&str] = &[
    "--persist",
    "/var/lib/nixos",
    "--persist",
    "/etc/machine-id",
    "--persist",
    "/var/log/journal/",
];

fn args<'a>(a: &[&'a str]) -> Vec<&'a str> {
    let mut v = a.to_vec();
    v.extend_from_slice(PERSIST);
    v
}

/// The human line of a group: "verdict files size path/ — why".
fn line_of<'a>(out: &'a str, path: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.split_whitespace()
                .any(|w| w == path || w == format!("{path}/"))
        })
        .unwrap_or_else(|| panic!("no line for {path} in:\n{out}"))
}

fn hidden_entries(json: &str, rule: &str) -> String {
    let at = json
        .find(&format!("\"rule\":\"{rule}\""))
        .unwrap_or_else(|| panic!("no rule {rule} in {json}"));
    let rest = &json[at..];
    let e = rest.find("\"entries\":").unwrap() + 10;
    rest[e..].split([',', '}']).next().unwrap().to_string()
}

fn nix_parse(block: &str) -> Option<String> {
    // Debian's nix-bin; the block is a module fragment, so parse it inside an attribute set.
    let o = Command::new("nix-instantiate")
        .args(["--parse", "-E"])
        .arg(format!("{{ {block} }}"))
        .output()
        .ok()?;
    assert!(
        o.status.success(),
        "nix-instantiate --parse rejected:\n{block}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn diff_lists_state_with_verdicts_and_hides_noise() {
    if !require_root("diff_lists_state_with_verdicts_and_hides_noise") {
        return;
    }
    let mut fs = new_fs("diff-walk");
    boot_noise(&mut fs);
    day_of_use(&mut fs);
    fs.subvol("@root/var/lib/machines");
    fs.write("@root/var/lib/machines/web/disk.raw", &big(1_000));

    let out = fs.ok(&args(&["diff"]));
    for (path, verdict) in [
        ("/var/lib/postgresql", "persist"),
        ("/var/lib/tailscale", "persist"),
        ("/var/lib/machines", "persist"),
        ("/var/cache/nginx", "probably not"),
        ("/var/log/nginx", "optional"),
        ("/etc/ssh/ssh_host_ed25519_key", "persist"),
        ("/etc/NetworkManager/system-connections", "persist"),
        ("/home/alice/.ssh", "persist"),
        ("/home/alice/.config", "persist"),
        ("/home/alice/.cache", "probably not"),
        ("/home/alice/.bash_history", "optional"),
        ("/home/alice/projects", "persist"),
        ("/root/.bash_history", "optional"),
        ("/tmp", "probably not"),
    ] {
        let l = line_of(&out, path);
        assert!(l.starts_with(verdict), "{path}: want {verdict}: {l}");
    }
    // Sizes and counts: postgresql has 2 files, 300,000 bytes.
    let pg = line_of(&out, "/var/lib/postgresql");
    assert!(pg.contains(" 2 ") && pg.contains("293.0 KiB"), "{pg}");
    // Sorted by size: the nginx cache (500 kB) comes first.
    let first = out
        .lines()
        .find(|l| l.contains(" — ") && !l.starts_with("VERDICT"))
        .unwrap();
    assert!(first.contains("/var/cache/nginx"), "{out}");
    // Noise and persisted paths are hidden.
    for p in [
        "/etc/hosts",
        "/etc/static",
        "/etc/sudoers",
        "/etc/NIXOS",
        "/etc/mtab",
        "/bin/sh",
        "/etc/passwd",
        "/var/lib/nixos",
        "/etc/machine-id",
        "/var/log/journal",
        "/proc",
        "/usr/bin/env",
        "/var/empty",
        "/var/.updated",
    ] {
        assert!(
            !out.lines().any(|l| l.contains(" — ")
                && l.split_whitespace().any(|w| w == p || w == format!("{p}/"))),
            "{p} should be hidden:\n{out}"
        );
    }
    assert!(out.contains("hidden:"), "{out}");

    let json = fs.ok(&args(&["diff", "--json"]));
    assert_eq!(hidden_entries(&json, "persisted"), "3", "{json}");
    assert_eq!(hidden_entries(&json, "etc-static-links"), "2");
    assert_eq!(hidden_entries(&json, "etc-copied-files"), "1");
    // /etc/static /etc/.clean /etc/NIXOS /etc/.updated /var/.updated /etc/mtab /bin/sh
    // /usr/bin/env /etc/passwd /etc/group /etc/shadow
    assert_eq!(hidden_entries(&json, "boot-files"), "11");
    // /proc /sys /dev /run /nix /boot /persist
    assert_eq!(hidden_entries(&json, "empty-mount-points"), "7");
    assert_eq!(hidden_entries(&json, "empty-boot-dirs"), "1"); // /var/empty
                                                               // The JSON parses (Nix has a JSON parser).
    let j = fs.dir.join("diff.json");
    std::fs::write(&j, &json).unwrap();
    if let Ok(o) = Command::new("nix-instantiate")
        .args(["--eval", "-E"])
        .arg(format!(
            "builtins.length (builtins.fromJSON (builtins.readFile {})).groups",
            j.display()
        ))
        .output()
    {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    let nix = fs.ok(&args(&["diff", "--nix"]));
    assert!(
        nix.contains("environment.persistence.\"/persist\" = {"),
        "{nix}"
    );
    for want in [
        "\"/var/lib/postgresql\"",
        "\"/var/lib/tailscale\"",
        "\"/etc/NetworkManager/system-connections\"",
        "\"/etc/ssh/ssh_host_ed25519_key\"",
        "users.alice = {",
        "\".ssh\"",
        "\"projects\"",
        "\"we\\\"ird \\${x}\"",
    ] {
        assert!(nix.contains(want), "missing {want} in:\n{nix}");
    }
    assert!(!nix.contains("nginx") && !nix.contains(".cache"), "{nix}");
    match nix_parse(&nix) {
        Some(parsed) => assert!(parsed.contains("persistence"), "{parsed}"),
        None => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must install nix-bin so the --nix block is really parsed"
            );
            eprintln!("*** nix-instantiate not installed: --nix checked structurally only ***")
        }
    }
}

#[test]
fn baseline_diff_shows_only_what_changed_since_boot() {
    if !require_root("baseline_diff_shows_only_what_changed_since_boot") {
        return;
    }
    let mut fs = new_fs("diff-baseline");
    boot_noise(&mut fs);
    // State that existed at boot: unchanged ones must not show up.
    fs.write("@root/var/lib/tailscale/tailscaled.state", "old");
    fs.write("@root/var/lib/unchanged/db", &big(10_000));
    fs.write("@root/var/lib/renamed-before/data/a", "a");
    fs.write("@root/var/lib/gone/x", "x");
    fs.write("@root/etc/static-ish.conf", "read me");
    fs.subvol("@root/var/lib/machines");
    fs.write("@root/var/lib/machines/old/disk", "old disk");
    fs.ok(&["baseline"]);
    fs.mount();
    assert!(fs.exists("@snapshots/.baseline"));
    assert!(fs.is_readonly("@snapshots/.baseline"));
    assert_eq!(
        fs.read("@snapshots/.baseline/var/lib/machines/old/disk")
            .as_deref(),
        Some("old disk")
    );

    // A day of use after the baseline.
    day_of_use(&mut fs);
    fs.write("@root/var/lib/tailscale/tailscaled.state", &big(2_000));
    let r = fs.p("@root");
    std::fs::rename(
        r.join("var/lib/renamed-before"),
        r.join("var/lib/renamed-after"),
    )
    .unwrap();
    std::fs::remove_dir_all(r.join("var/lib/gone")).unwrap();
    let _ = std::fs::read(r.join("etc/static-ish.conf")).unwrap(); // atime only
    let _ = std::fs::read(r.join("var/lib/unchanged/db")).unwrap();
    fs.write("@root/var/lib/machines/new/disk", "new disk");
    fs.subvol("@root/var/lib/docker");
    fs.write("@root/var/lib/docker/overlay/l", "layer");

    let json = fs.ok(&args(&["diff", "--json"]));
    assert!(json.contains("by btrfs generation"), "{json}");
    assert_eq!(hidden_entries(&json, "unchanged-since-baseline"), "null");
    let out = fs.ok(&args(&["diff", "-v"]));
    for p in [
        "/var/lib/postgresql",
        "/var/lib/tailscale",
        "/var/lib/renamed-after",
        "/var/lib/machines",
        "/var/lib/docker",
        "/var/cache/nginx",
        "/home/alice/.ssh",
        "/etc/ssh/ssh_host_ed25519_key",
    ] {
        line_of(&out, p);
    }
    assert!(
        out.contains("/var/lib/renamed-after/data/a"),
        "moved tree listed with its files:\n{out}"
    );
    assert!(out.contains("/var/lib/machines/new/disk"), "{out}");
    assert!(!out.contains("/var/lib/machines/old/disk"), "{out}");
    for p in [
        "/var/lib/unchanged",
        "/etc/static-ish.conf",
        "/var/lib/gone",
        "/var/lib/renamed-before",
        "/etc/hosts",
        "/proc",
    ] {
        assert!(!out.contains(p), "{p} should not be listed:\n{out}");
    }
    let ts = line_of(&out, "/var/lib/tailscale");
    assert!(ts.contains(" 1 ") && ts.contains("2.0 KiB"), "{ts}");

    // Taking a new baseline replaces the old one: nothing changed since.
    fs.ok(&["baseline"]);
    let again = fs.ok(&args(&["diff", "--json"]));
    assert!(
        again.contains("\"files\":0,\"bytes\":0,\"groups\":[]"),
        "{again}"
    );
    fs.mount();
    assert!(!fs.exists("@snapshots/.baseline.new"));

    // The rollback that replaces the root deletes the baseline with it.
    fs.ok(&["rollback"]);
    fs.mount();
    assert!(
        !fs.exists("@snapshots/.baseline"),
        "{:?}",
        fs.ls("@snapshots")
    );
}

#[test]
fn diff_of_an_old_root() {
    if !require_root("diff_of_an_old_root") {
        return;
    }
    let mut fs = new_fs("diff-old");
    boot_noise(&mut fs);
    day_of_use(&mut fs);
    fs.ok(&["rollback"]);
    // Kept but not sealed until `finish`: diff reads it as it is.
    let name = fs
        .ls("@snapshots")
        .into_iter()
        .find_map(|n| n.strip_prefix(".kept.").map(str::to_string))
        .expect("a kept root");
    let out = fs.ok(&args(&["diff", &name]));
    assert!(out.starts_with(&format!("old root {name}")), "{out}");
    line_of(&out, "/var/lib/postgresql");
    fs.ok(&["finish", "--no-baseline"]);
    assert_eq!(fs.old_roots(), vec![name.clone()]);
    let out = fs.ok(&args(&["diff", &name]));
    assert!(out.starts_with(&format!("old root {name}")), "{out}");
    line_of(&out, "/var/lib/postgresql");
    let o = fs.run(&["diff", "2020-01-01T00-00-00Z"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("does not exist") && e.contains("ephemeral-root list") && e.lines().count() == 1,
        "{e}"
    );
    // The fresh root after the rollback: nothing to lose.
    let now = fs.ok(&["diff"]);
    assert!(now.contains(": 0 files"), "{now}");
}

/// A real tmpfs `/`: in a private mount namespace, a tmpfs is filled like an impermanence root
/// (state written at run time, a persisted directory bind-mounted over its path, /usr and /proc
/// mounted), and the binary runs chrooted into it, so `/` in its mountinfo is that tmpfs.
#[test]
fn diff_on_a_tmpfs_root_walks_slash_without_crossing_mounts() {
    if !require_root("diff_on_a_tmpfs_root_walks_slash_without_crossing_mounts") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("er-tmpfs-root-{}", std::process::id()));
    let src = std::env::temp_dir().join(format!("er-tmpfs-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("persisted-file"), "kept elsewhere").unwrap();
    let script = r#"
set -e
mount -t tmpfs -o mode=755 tmpfs "$D"
cd "$D"
mkdir -p proc usr etc/ssh var/lib/postgresql var/lib/kept var/cache/fontconfig root tmp
ln -s usr/lib lib; ln -s usr/lib64 lib64; ln -s usr/bin bin
mount --bind /usr usr
mount -t proc proc proc
mount --bind "$SRC" var/lib/kept
printf '%s' 'rows rows rows' > var/lib/postgresql/base
printf '%s' 'ls -l' > root/.bash_history
printf '%s' 'key' > etc/ssh/ssh_host_ed25519_key
printf '%s' 'c' > var/cache/fontconfig/cache
: > ephemeral-root
mount --bind "$BIN" ephemeral-root
chroot "$D" /ephemeral-root diff --json --persist /etc/ssh > "$D/../er-tmpfs-out-$$" 2>&1 || { cat "$D/../er-tmpfs-out-$$"; exit 3; }
cat "$D/../er-tmpfs-out-$$"; rm -f "$D/../er-tmpfs-out-$$"
echo "---"
chroot "$D" /ephemeral-root baseline 2>&1 && exit 4
echo "baseline rc=$?"
"#;
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("D", &dir)
        .env("SRC", &src)
        .env("BIN", bin())
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("unshare");
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir_all(&src);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (json, rest) = out.split_once("---").unwrap();
    assert!(json.contains(r#""source":"/ (tmpfs)""#), "{json}");
    assert!(
        json.contains(r#""method":"walk of / without crossing mounts""#),
        "{json}"
    );
    for want in [
        r#""path":"/var/lib/postgresql","kind":"directory","verdict":"persist""#,
        r#""path":"/root/.bash_history""#,
        r#""path":"/var/cache/fontconfig""#,
    ] {
        assert!(json.contains(want), "missing {want}: {json}");
    }
    // Mounted over (persisted bind mount, /usr, /proc) or persisted by configuration: not listed.
    for not in [
        "/var/lib/kept",
        "persisted-file",
        "\"/usr",
        "\"/proc",
        "/etc/ssh",
    ] {
        assert!(!json.contains(not), "{not} listed: {json}");
    }
    assert_eq!(hidden_entries(json, "persisted"), "1", "{json}");
    assert!(
        rest.contains("/ is a tmpfs") && rest.contains("baseline rc=2"),
        "{rest}"
    );
}

/// Run the binary (as `LoopFs::run` does) under `ulimit -n 1024`, the usual soft limit.
fn run_limited(fs: &mut LoopFs, args: &[&str]) -> std::process::Output {
    fs.umount();
    std::fs::write(fs.dir.join("none.conf"), "").unwrap();
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .arg("--device")
        .arg(&fs.dev)
        .arg("--config")
        .arg(fs.dir.join("none.conf"))
        .env("EPHEMERAL_ROOT_LOG", "stderr")
        .env("EPHEMERAL_ROOT_STATE_DIR", fs.dir.join("state"))
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ephemeral-root")
}

/// A chain `d/d/…` `n` levels deep below `rel` on the mounted filesystem, with a file at the
/// bottom, made through directory descriptors (a path that long cannot be named at once).
fn chain(fs: &mut LoopFs, rel: &str, n: usize) {
    use rustix::fs::{Mode, OFlags};
    fs.mount();
    std::fs::create_dir_all(fs.p(rel)).unwrap();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur = rustix::fs::open(fs.p(rel), flags, Mode::empty()).unwrap();
    for _ in 0..n {
        rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
        cur = rustix::fs::openat(&cur, "d", flags, Mode::empty()).unwrap();
    }
    let f = rustix::fs::openat(
        &cur,
        "leaf",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&f, b"bottom").unwrap();
}

fn ok_out(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
            .chars()
            .take(3000)
            .collect::<String>(),
        String::from_utf8_lossy(&o.stderr)
            .chars()
            .take(3000)
            .collect::<String>()
    );
    String::from_utf8(o.stdout.clone()).expect("output is UTF-8")
}

/// Issue 10 item 6: a 3,000-level chain (any user can make one) under `ulimit -n 1024`, and a
/// 30,000-level chain, in `diff` (walk and btrfs generation search) and `status --prometheus`.
#[test]
fn deep_chains_under_the_usual_fd_limit() {
    if !require_root("deep_chains_under_the_usual_fd_limit") {
        return;
    }
    let mut fs = new_fs("diff-deep");
    fs.write("@root/var/lib/app/state", "s");
    fs.ok(&["baseline"]);
    chain(&mut fs, "@root/home/mallory/c3k", 3000);
    // With a baseline: the generation search lists the new chain.
    let o = run_limited(&mut fs, &["diff", "--json"]);
    let json = ok_out(&o, "diff --json (baseline, 3000 levels)");
    assert!(json.contains("by btrfs generation"), "{}", &json[..300]);
    assert!(
        json.contains(r#""path":"/home/mallory/c3k","kind":"directory""#),
        "{}",
        &json[..500]
    );
    assert!(json.contains(r#""incomplete":[]"#), "{}", &json[..500]);
    // Without one: a walk.
    fs.mount();
    sh(&format!(
        "btrfs -q subvolume delete {}",
        fs.p("@snapshots/.baseline").display()
    ));
    let o = run_limited(&mut fs, &["diff", "--json"]);
    let json = ok_out(&o, "diff --json (walk, 3000 levels)");
    assert!(json.contains("walk; no baseline"), "{}", &json[..300]);
    assert!(
        json.contains(r#""path":"/home/mallory/c3k","kind":"directory","verdict":"persist","reason":"your files","files":1,"bytes":6"#),
        "{}",
        &json[..600]
    );
    let o = run_limited(&mut fs, &["status", "--prometheus"]);
    let p = ok_out(&o, "status --prometheus (3000 levels)");
    assert!(p.contains("ephemeral_root_unpersisted_files 2\n"), "{p}");
    assert!(
        p.contains("ephemeral_root_unpersisted_incomplete_branches 0\n"),
        "{p}"
    );

    // 30,000 levels: no stack overflow, the walk gives up on the branch below 4096 levels and
    // says so in one short line, everything else is still listed.
    chain(&mut fs, "@root/home/mallory/c30k", 30_000);
    let o = run_limited(&mut fs, &["diff"]);
    let out = ok_out(&o, "diff (30000 levels)");
    let note = out
        .lines()
        .find(|l| l.starts_with("incomplete: gave up on /home/mallory/c30k/d/d/"))
        .unwrap_or_else(|| panic!("no note in:\n{}", &out[..out.len().min(3000)]));
    assert!(
        note.contains("more than 4096 levels deep") && note.len() < 400,
        "{note}"
    );
    assert!(note.contains('…') && note.contains("bytes)"), "{note}");
    assert!(
        out.lines().all(|l| l.len() < 400),
        "a long line in the output"
    );
    line_of(&out, "/var/lib/app");
    let e = stderr(&o);
    assert!(
        e.contains("gave up on") && e.lines().all(|l| l.len() < 500),
        "{}",
        &e[..e.len().min(2000)]
    );
    let o = run_limited(&mut fs, &["status", "--prometheus"]);
    let p = ok_out(&o, "status --prometheus (30000 levels)");
    assert!(
        p.contains("ephemeral_root_unpersisted_incomplete_branches 1\n"),
        "{p}"
    );
    let o = run_limited(&mut fs, &["status"]);
    let s = ok_out(&o, "status (30000 levels)");
    assert!(s.contains("1 branch(es) could not be looked into"), "{s}");
    // And with a baseline taken before the deep chain appeared (generation search).
    fs.ok(&["baseline"]);
    chain(&mut fs, "@root/home/mallory/c30k-later", 30_000);
    let t = std::time::Instant::now();
    let o = run_limited(&mut fs, &["diff", "--json"]);
    let json = ok_out(&o, "diff --json (baseline, 30000 levels)");
    eprintln!(
        "diff with baseline over a new 30000-level chain: {:?}",
        t.elapsed()
    );
    // Nothing countable (every directory of the chain has an entry; the file is too deep), but
    // the branch is named, in full, in the JSON.
    let want = format!(
        r#""incomplete":[{{"path":"/home/mallory/c30k-later{}","why":"more than 4096 levels deep"#,
        "/d".repeat(4096 - 3)
    );
    assert!(
        json.contains(&want),
        "{}",
        &json[json.len().saturating_sub(400)..]
    );
}

/// Each kind of change after a baseline: content, mode (file and directory), rename in place,
/// move into a new directory, a new hard link, a moved directory (listed with everything below
/// it), an atime-only read, a new empty directory. Each case sits in its own /var/lib/<name>
/// group, so `diff -v` names every file. And directories two levels down, where the walk splits
/// the tree between its threads (src/diff/baseline.rs `SPLIT_DEPTH`): a new empty one
/// (/srv/empty-new), one emptied since the baseline (/srv/emptied) and one empty and untouched
/// since before it (/srv/empty-old, not listed). `settle`: wait this long after writing the tree before
/// the baseline (so the ctime comparison can trust the untouched entries). Returns the file system
/// with the changes made and the baseline taken.
fn each_kind_of_change(tag: &str, settle: std::time::Duration) -> LoopFs {
    let mut fs = new_fs(tag);
    for p in [
        "content/f",
        "mode/f",
        "ren/from",
        "out/f",
        "link/f",
        "read/f",
        "tree/sub/deep/f",
        "still/x",
        "swap/a/x",
        "swap/b/y",
    ] {
        fs.write(&format!("@root/var/lib/{p}"), "old");
    }
    fs.write("@root/srv/emptied/f", "old");
    std::fs::create_dir(fs.p("@root/srv/empty-old")).unwrap();
    std::thread::sleep(settle);
    fs.ok(&["baseline"]);
    fs.mount();
    let r = fs.p("@root/var/lib");
    std::fs::write(r.join("content/f"), "new content").unwrap();
    sh(&format!("chmod 600 {}", r.join("mode/f").display()));
    sh(&format!("chmod 700 {}", r.join("still").display()));
    std::fs::rename(r.join("ren/from"), r.join("ren/to")).unwrap();
    std::fs::create_dir(r.join("fresh")).unwrap();
    std::fs::rename(r.join("out/f"), r.join("fresh/moved-in")).unwrap();
    std::fs::create_dir(r.join("linkdir")).unwrap();
    std::fs::hard_link(r.join("link/f"), r.join("linkdir/f2")).unwrap();
    std::fs::create_dir(r.join("moved")).unwrap();
    std::fs::rename(r.join("tree"), r.join("moved/tree")).unwrap();
    // Two directories swap names: each is where the other was, their entries untouched.
    std::fs::rename(r.join("swap/a"), r.join("swap/t")).unwrap();
    std::fs::rename(r.join("swap/b"), r.join("swap/a")).unwrap();
    std::fs::rename(r.join("swap/t"), r.join("swap/b")).unwrap();
    // Reads that update access times (the test's own mount is noatime otherwise).
    sh(&format!(
        "mount -o remount,strictatime {}",
        fs.mnt.display()
    ));
    let before = std::fs::metadata(r.join("read/f")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let _ = std::fs::read(r.join("read/f")).unwrap();
    let _ = std::fs::read_dir(r.join("read")).unwrap().count();
    sh("sync");
    let after = std::fs::metadata(r.join("read/f")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        before.atime_nsec(),
        after.atime_nsec(),
        "the read moved the access time"
    );
    std::fs::create_dir(r.join("empty-new")).unwrap();
    std::fs::create_dir(fs.p("@root/srv/empty-new")).unwrap();
    std::fs::remove_file(fs.p("@root/srv/emptied/f")).unwrap();
    fs.umount();
    fs
}

/// `diff -v` output of [`each_kind_of_change`]: every change listed, nothing else (a walk also
/// lists /var/lib/out, emptied since the baseline: an empty directory that changed). `Err`: what
/// is wrong.
fn lists_each_kind_of_change(out: &str, walk: bool) -> Result<(), String> {
    for want in [
        "/var/lib/content/f (",
        "/var/lib/mode/f (",
        "/var/lib/ren/to (",
        "/var/lib/fresh/moved-in (",
        "/var/lib/moved/tree/sub/deep/f (",
        "/var/lib/swap/a/y (",
        "/var/lib/swap/b/x (",
        "/var/lib/empty-new/ ",
        "/srv/empty-new/ ",
    ] {
        if !out.lines().any(|l| l.contains(want)) {
            return Err(format!("{want} missing:\n{out}"));
        }
    }
    // The hard link: the inode is listed under one of its names.
    if !(out.contains("/var/lib/link/f (") || out.contains("/var/lib/linkdir/f2 (")) {
        return Err(format!("the hard link is missing:\n{out}"));
    }
    // Unchanged, read only, or only a directory's mode: not listed.
    let mut nots = vec![
        "/var/lib/read",
        "/var/lib/ren/from",
        "/var/lib/tree",
        "/var/lib/still",
        "/srv/empty-old",
    ];
    if !walk {
        nots.push("/var/lib/out");
        nots.push("/srv/emptied");
    } else if !out.lines().any(|l| l.contains("/srv/emptied/ ")) {
        return Err(format!("/srv/emptied/ missing:\n{out}"));
    }
    for not in nots {
        if out
            .lines()
            .any(|l| l.contains(&format!("{not}/")) || l.contains(&format!("{not} ")))
        {
            return Err(format!("{not} listed:\n{out}"));
        }
    }
    Ok(())
}

/// The generation search (btrfs, with a baseline) on each kind of change.
#[test]
fn baseline_diff_follows_each_kind_of_change() {
    if !require_root("baseline_diff_follows_each_kind_of_change") {
        return;
    }
    let mut fs = each_kind_of_change("diff-kinds", std::time::Duration::ZERO);
    let json = fs.ok(&["diff", "--json"]);
    assert!(json.contains("by btrfs generation"), "{json}");
    let out = fs.ok(&["diff", "-v"]);
    lists_each_kind_of_change(&out, false).unwrap();
}

/// The walk that bcachefs and ZFS use (`--compare ctime`, and `--compare full`), on btrfs (its
/// snapshots keep inode numbers and times as theirs do): each kind of change found, and with
/// ctime, the untouched entries not looked up in the baseline. Then the record of the baseline's
/// clock planted wrong: an hour later with both clocks moved (so nothing shows a step), the walk
/// trusts change times it must not and misses changes (the check above sees it); with only the
/// wall clock moved (the clock was set), every entry is compared and nothing is missed.
#[test]
fn walk_diff_with_a_baseline_follows_each_kind_of_change() {
    if !require_root("walk_diff_with_a_baseline_follows_each_kind_of_change") {
        return;
    }
    let mut fs = each_kind_of_change("diff-kinds-walk", std::time::Duration::from_millis(1200));
    let json = fs.ok(&["diff", "--json", "--compare", "ctime"]);
    let method = json_str(&json, "method");
    assert!(
        method.starts_with("walk, compared with the baseline; entries older than the baseline trusted by their change time"),
        "{method}"
    );
    // "N of M looked up": fewer than all (the untouched entries are skipped)
    let nums: Vec<u64> = method
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(nums.len() == 2 && nums[0] < nums[1], "{method}");
    lists_each_kind_of_change(&fs.ok(&["diff", "-v", "--compare", "ctime"]), true).unwrap();
    let json = fs.ok(&["diff", "--json", "--compare", "full"]);
    assert!(
        json_str(&json, "method").ends_with("every entry looked up (--compare full)"),
        "{json}"
    );
    lists_each_kind_of_change(&fs.ok(&["diff", "-v", "--compare", "full"]), true).unwrap();

    // Planted: the record claims the baseline was taken an hour later than it was.
    let rec_path = fs.dir.join("state/baseline-taken");
    let rec = std::fs::read_to_string(&rec_path).unwrap();
    let shift = |rec: &str, keys: &[&str]| -> String {
        rec.split_whitespace()
            .map(|w| match w.split_once('=') {
                Some((k, v)) if keys.contains(&k) => {
                    format!("{k}={}", v.parse::<i128>().unwrap() + 3_600_000_000_000)
                }
                _ => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    std::fs::write(&rec_path, shift(&rec, &["realtime-ns", "boottime-ns"])).unwrap();
    let out = fs.ok(&["diff", "-v", "--compare", "ctime"]);
    let err = lists_each_kind_of_change(&out, true)
        .expect_err("a wrong record must make changes disappear");
    assert!(err.contains("missing"), "{err}");
    // The same record with only the wall clock an hour ahead: a clock step, everything compared.
    std::fs::write(&rec_path, shift(&rec, &["realtime-ns"])).unwrap();
    let json = fs.ok(&["diff", "--json", "--compare", "ctime"]);
    assert!(
        json_str(&json, "method")
            .contains("every entry looked up: the wall clock was set by 3600.0 s"),
        "{json}"
    );
    lists_each_kind_of_change(&fs.ok(&["diff", "-v", "--compare", "ctime"]), true).unwrap();
    // No record (a baseline taken by an older version): everything compared.
    std::fs::remove_file(&rec_path).unwrap();
    let json = fs.ok(&["diff", "--json", "--compare", "ctime"]);
    assert!(
        json_str(&json, "method").contains("every entry looked up: no record"),
        "{json}"
    );
    lists_each_kind_of_change(&fs.ok(&["diff", "-v", "--compare", "ctime"]), true).unwrap();
}

/// The string value of top-level `key` in `json`.
fn json_str(json: &str, key: &str) -> String {
    let j = common::json::parse(json.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    j.get(key)
        .and_then(common::json::Json::str)
        .unwrap_or_else(|| panic!("no string {key} in {json}"))
        .to_string()
}

/// Issue 10 item 5: names are bytes. A non-UTF-8 name, a name with a newline and one with a
/// terminal escape sequence, in walk mode and with a baseline (generation search): plain output
/// shows them escaped on one line each, `--json` parses and gives the exact bytes back, `--nix`
/// parses.
#[test]
fn odd_names_are_listed_escaped_and_round_trip() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    if !require_root("odd_names_are_listed_escaped_and_round_trip") {
        return;
    }
    let names: &[&[u8]] = &[
        b"/var/lib/bad\xff\xfename/db",
        b"/var/lib/new\nline/db",
        b"/var/lib/\x1b[31mred\x1b[0m/db",
        b"/home/al\xffce/notes",
        b"/srv/tab\there/x",
    ];
    let mut fs = new_fs("diff-names");
    fs.write("@root/var/lib/plain/db", "p");
    let write_all = |fs: &mut LoopFs, tag: &[u8]| {
        fs.mount();
        for n in names {
            let p = fs
                .p("@root")
                .join(OsStr::from_bytes(&[&n[1..], tag].concat()));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "data").unwrap();
        }
    };
    write_all(&mut fs, b"");
    let check = |fs: &mut LoopFs, tag: &[u8], method: &str| {
        let o = fs.run(&["diff", "-v"]);
        assert!(o.status.success(), "{}", stderr(&o));
        // No control character but the line ends, nothing that is not UTF-8.
        let out = String::from_utf8(o.stdout.clone()).expect("plain output is UTF-8");
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters in:\n{out:?}"
        );
        for want in [
            "/var/lib/bad\\xff\\xfename/",
            "/var/lib/new\\nline/",
            "/var/lib/\\x1b[31mred\\x1b[0m/",
            "/home/al\\xffce/notes",
            "/srv/tab\\there",
        ] {
            let l = out
                .lines()
                .find(|l| l.contains(want))
                .unwrap_or_else(|| panic!("{want} missing ({method}):\n{out}"));
            assert!(l.contains(" — ") || l.trim_start().starts_with('/'), "{l}");
        }
        // JSON: parses, and each path comes back as its exact bytes.
        let json = fs.ok(&["diff", "--json"]);
        let j = fs.dir.join("names.json");
        std::fs::write(&j, &json).unwrap();
        let py = Command::new("python3")
            .arg("-c")
            .arg(
                "import json,sys\n\
                 d=json.load(open(sys.argv[1]))\n\
                 for g in d['groups']:\n\
                 \x20   for o in [g]+g['largest']:\n\
                 \x20       b=bytes.fromhex(o['path_hex']) if 'path_hex' in o else o['path'].encode()\n\
                 \x20       print(b.hex())\n",
            )
            .arg(&j)
            .output()
            .expect("python3");
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let got: Vec<Vec<u8>> = String::from_utf8(py.stdout)
            .unwrap()
            .lines()
            .map(|h| {
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect();
        for n in names {
            let full = [n, tag].concat();
            assert!(got.contains(&full), "{full:?} not in {got:?} ({method})");
        }
        assert!(json.contains(method), "{json}");
        // Nix: parses; names it cannot hold printably are in comments, the newline one is "\n".
        let nix = fs.ok(&["diff", "--nix"]);
        assert!(!nix.chars().any(|c| c.is_control() && c != '\n'), "{nix:?}");
        assert!(nix.contains("\"/var/lib/new\\nline\""), "{nix}");
        assert!(
            nix.contains("# left out") && nix.contains("bad\\xff\\xfename"),
            "{nix}"
        );
        if let Some(parsed) = nix_parse(&nix) {
            assert!(parsed.contains("persistence"), "{parsed}");
        } else {
            assert!(std::env::var("CI").is_err(), "CI must install nix-bin");
        }
    };
    check(&mut fs, b"", "walk; no baseline");
    fs.ok(&["baseline"]);
    write_all(&mut fs, b"-2");
    check(&mut fs, b"-2", "by btrfs generation");
}

/// `diff | head`: a reader that stops early ends `diff` quietly (SIGPIPE, as for other Unix
/// tools), not with a panic from a failed write to stdout.
#[test]
fn a_closed_pipe_ends_diff_quietly() {
    if !require_root("a_closed_pipe_ends_diff_quietly") {
        return;
    }
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let mut fs = new_fs("pipe");
    // More than a pipe's 64 KiB of output after the first line.
    for d in 0..3000 {
        fs.write(&format!("@root/srv/app{d}/state"), "x");
    }
    fs.umount();
    for form in [&["diff"][..], &["diff", "--json"][..]] {
        let mut c = fs.command(form);
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // stdout is closed here: the rest of the output goes to a pipe nobody reads.
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert!(!first.is_empty(), "{form:?}: no output");
        assert!(!e.contains("panicked"), "{form:?}: {e}");
        assert!(
            o.status.success() || o.status.signal() == Some(13),
            "{form:?}: {:?} {e}",
            o.status
        );
    }
}
