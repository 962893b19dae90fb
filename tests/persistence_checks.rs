//! `diff`, `check` and `status` before the reboot, on a running system whose `/` is the btrfs root
//! subvolume (tests/common/sys.rs): content on the root under a persisted path's bind mount that
//! the store lacks (hidden, and a hidden critical key), a declared critical keyfile missing from
//! the store, an undeclared critical path, a stray directory in the store; plain and `--json`
//! output, exit status, the Prometheus gauges; and the warnings gone once fixed. Needs root.

mod common;
use common::sys::Sys;
use common::*;
use std::process::{Command, Output};

const CONF: &str = "store = /persist
persist = /var/lib/app /boot/keyfile_nvme0n1p1 /etc/machine-id /var/lib/declared
critical = /var/lib/secrets/luks.key
";

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Values from `--json` output, by a Python expression over `d` (the parsed object).
fn py(json: &str, expr: &str) -> String {
    let o = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import json,sys; d=json.load(sys.stdin); print({expr})"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(json.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3");
    assert!(
        o.status.success(),
        "{expr} over:\n{json}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn setup(fs: &mut LoopFs) {
    let t = |p: &str, when: &str, fs: &LoopFs| {
        sh(&format!("touch -d '{when}' {}", fs.p(p).display()));
    };
    // /var/lib/app: persisted, bind-mounted from the store; the root holds other data under it.
    for (p, c) in [
        ("a", "same"),
        ("b", "the root's newer version"),
        ("old", "the first version"),
        ("new/x", "written before /var/lib/app was persisted"),
        ("server.key", "a key only the root has"),
    ] {
        fs.write(&format!("@root/var/lib/app/{p}"), c);
    }
    for (p, c) in [
        ("a", "same"),
        ("b", "stored version"),
        ("old", "the second version, in the store"),
        ("s", "only in the store"),
    ] {
        fs.write(&format!("@persist/var/lib/app/{p}"), c);
    }
    t("@root/var/lib/app/a", "2024-01-01 00:00", fs);
    t("@persist/var/lib/app/a", "2024-01-01 00:00", fs);
    t("@root/var/lib/app/b", "2025-06-01 00:00", fs);
    t("@persist/var/lib/app/b", "2024-06-01 00:00", fs);
    t("@root/var/lib/app/old", "2023-01-01 00:00", fs);
    t("@persist/var/lib/app/old", "2025-01-01 00:00", fs);
    // Declared and in the store: fine.
    fs.write("@root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    fs.write(
        "@persist/etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    t("@root/etc/machine-id", "2024-01-01 00:00", fs);
    t("@persist/etc/machine-id", "2024-01-01 00:00", fs);
    // Declared, critical, in neither place (seed 000's LUKS keyfile).
    std::fs::create_dir_all(fs.p("@root/boot")).unwrap();
    // Declared, not critical, only on the root.
    fs.write("@root/var/lib/declared/state", "s");
    // Critical, not declared, on the root.
    fs.write("@root/var/lib/secrets/luks.key", "k");
    // Stray: a service no longer persisted.
    fs.write("@persist/var/lib/old-service/db", &"x".repeat(1 << 20));
    fs.write("@persist/var/lib/old-service/log", "y");
}

#[test]
fn warnings_before_the_reboot_and_gone_once_fixed() {
    if !require_root("warnings_before_the_reboot_and_gone_once_fixed") {
        return;
    }
    let mut sys = Sys::new("persisted-checks", CONF, setup);
    let r = sys.root.display().to_string();
    sys.ns_sh(&format!(
        "mount --bind {r}/persist/var/lib/app {r}/var/lib/app"
    ));

    // diff: the report, then the persistence lines; errors make it exit 1.
    let o = sys.er(&["diff"]);
    let text = out(&o);
    eprintln!("{text}{}", stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        stderr(&o).contains("3 critical persisted file(s) would be lost at the next boot"),
        "{}",
        stderr(&o)
    );
    let section = text
        .split("persistence (store /persist):\n")
        .nth(1)
        .expect("a persistence section");
    let lines: Vec<&str> = section.lines().collect();
    let want = [
        "  error: /boot/keyfile_nvme0n1p1 is declared persistent but missing from the store (/persist/boot/keyfile_nvme0n1p1), and it is critical (under /boot, read before the root is mounted (a LUKS keyfile, a boot key)): the next boot starts without it; it is not on the root either: restore it into /persist/boot/keyfile_nvme0n1p1",
        "  error: /var/lib/secrets/luks.key is critical (listed under `critical` in the config) but not declared persistent: it is on the root, and the next boot erases it; `ephemeral-root persist /var/lib/secrets/luks.key` copies it",
        "  error: /var/lib/app/server.key is on the root under /var/lib/app but not in the store, and it is critical (named like a key or keyfile (a LUKS or service key)): hidden by the bind mount, erased at the next boot; run `ephemeral-root persist /var/lib/app --merge`",
        "  warning: /var/lib/declared is declared persistent but missing from the store (/persist/var/lib/declared): the next boot starts with it empty; it is on the root now: `ephemeral-root persist /var/lib/declared --merge` copies it there",
        "  warning: /var/lib/app: 4 entries (",
        "  info: /var/lib/app: 1 entries on the root are older versions of what /persist/var/lib/app holds (superseded; erased at the next boot)",
        "  info: /persist/var/lib/old-service: 1.0 MiB in 3 entries that no persisted path covers (stray",
    ];
    for w in want {
        assert!(
            lines.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in:\n{section}"
        );
    }
    let hidden = lines
        .iter()
        .find(|l| l.starts_with("  warning: /var/lib/app: 4 entries"))
        .unwrap();
    assert!(
        hidden.contains("are not in /persist/var/lib/app (e.g. "),
        "{hidden}"
    );
    assert!(
        hidden.contains("/var/lib/app/b") && hidden.contains("/var/lib/app/new/x"),
        "{hidden}"
    );
    assert!(hidden.contains("hidden by the bind mount, erased at the next boot; run `ephemeral-root persist /var/lib/app --merge` or delete it"), "{hidden}");
    assert!(!section.contains("machine-id"), "{section}");
    assert!(
        !section.contains("/var/lib/app/a,")
            && !section.contains("/var/lib/app/s,")
            && !section.contains("/var/lib/app/s)"),
        "{section}"
    );

    // diff --json: the same, as data.
    let o = sys.er(&["diff", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j = out(&o);
    assert_eq!(py(&j, "d['persistence']['errors']"), "3");
    assert_eq!(py(&j, "d['persistence']['store']"), "/persist");
    assert_eq!(
        py(&j, "[(h['path'], h['mounted'], h['entries'], h['superseded'], sorted(e['path'] for e in h['examples']), [c['path'] for c in h['critical']]) for h in d['persistence']['hidden']]"),
        "[('/var/lib/app', True, 4, 1, ['/var/lib/app/b', '/var/lib/app/new', '/var/lib/app/new/x', '/var/lib/app/server.key'], ['/var/lib/app/server.key'])]"
    );
    assert_eq!(
        py(&j, "sorted((m['path'], m['critical'], m['declared'], m['on_root']) for m in d['persistence']['missing'])"),
        "[('/boot/keyfile_nvme0n1p1', True, True, False), ('/var/lib/declared', False, True, True), ('/var/lib/secrets/luks.key', True, False, True)]"
    );
    assert_eq!(
        py(
            &j,
            "[(s['path'], s['entries'], s['bytes']) for s in d['persistence']['stray']]"
        ),
        "[('/var/lib/old-service', 3, 1048577)]"
    );

    // check: the same lines after its own; exit 1. check --json carries them too.
    let o = sys.er(&["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("  error: /boot/keyfile_nvme0n1p1 is declared persistent but missing"),
        "{}",
        out(&o)
    );
    let o = sys.er(&["check", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        py(
            &out(&o),
            "(d['persistence']['errors'], len(d['persistence']['hidden']))"
        ),
        "(3, 1)"
    );

    // status: lines and the gauges the alert rules read.
    let o = sys.er(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out(&o).contains("missing:         3 persisted paths not in the store, 3 CRITICAL"),
        "{}",
        out(&o)
    );
    let o = sys.er(&["status", "--prometheus"]);
    let p = out(&o);
    for (name, v) in [
        ("hidden_entries", "4".to_string()),
        ("missing_persisted", "3".into()),
        ("missing_critical", "3".into()),
        ("stray_bytes", "1048577".into()),
    ] {
        assert!(
            p.contains(&format!("\nephemeral_root_{name} {v}\n")),
            "{name} {v}:\n{p}"
        );
        assert!(
            p.contains(&format!("# TYPE ephemeral_root_{name} gauge")),
            "{p}"
        );
    }
    assert!(p.contains("\nephemeral_root_hidden_bytes "), "{p}");

    // Fixed: the hidden content merged (b is a conflict: the root's newer version is copied by
    // hand), the keyfile restored, the rest persisted or declared, the stray removed.
    let o = sys.er(&["persist", "/var/lib/app", "--merge"]);
    assert_eq!(o.status.code(), Some(1), "b is a conflict: {}", stderr(&o));
    std::fs::copy(
        sys.host("@root/var/lib/app/b"),
        sys.host("@persist/var/lib/app/b"),
    )
    .unwrap();
    sh(&format!(
        "touch -r {} {}",
        sys.host("@root/var/lib/app/b").display(),
        sys.host("@persist/var/lib/app/b").display()
    ));
    let o = sys.er(&["persist", "/var/lib/declared", "--merge"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sys.er(&["persist", "/var/lib/secrets/luks.key"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::create_dir_all(sys.host("@persist/boot")).unwrap();
    std::fs::write(sys.host("@persist/boot/keyfile_nvme0n1p1"), "restored").unwrap();
    std::fs::remove_dir_all(sys.host("@persist/var/lib/old-service")).unwrap();
    sys.write_run(
        "er.conf",
        &format!(
            "device = {}\n{CONF}persist = /var/lib/secrets/luks.key\n",
            sys.fs.dev
        ),
    );
    let o = sys.er(&["check"]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    let o = sys.er(&["diff"]);
    assert!(o.status.success(), "{}{}", out(&o), stderr(&o));
    let section = out(&o);
    let section = section
        .split("persistence (store /persist):\n")
        .nth(1)
        .unwrap();
    assert!(
        !section.contains("error:") && !section.contains("warning:"),
        "{section}"
    );
    assert!(section.contains("superseded"), "{section}");
}
