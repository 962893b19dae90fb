//! `report` on a real btrfs loop device, over old roots made by real rollbacks: several boots in
//! audit mode (compared by btrfs generation search), then wipe-mode boots (compared by walking).
//! Needs root (see tests/common).

mod common;
use common::*;
use std::process::{Command, Stdio};

/// `report --json` through Python: (ready, methods, [(path, verdict, boots_changed)], verdict).
fn report_json(
    fs: &mut LoopFs,
    extra: &[&str],
) -> (bool, Vec<String>, Vec<(String, String, u64)>, String) {
    let mut args = vec!["report", "--json"];
    args.extend_from_slice(extra);
    let js = fs.ok(&args);
    let py = r#"
import json, sys
d = json.load(sys.stdin)
print(d["ready"])
print(",".join(c["method"] for c in d["comparisons"]))
print(d["verdict"])
for p in d["places"]:
    print(p["path"], p["verdict"].replace(" ", "_"), p["boots_changed"])
"#;
    let mut c = Command::new("python3")
        .args(["-c", py])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(js.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "report --json is not JSON: {js}");
    let text = String::from_utf8(o.stdout).unwrap();
    let mut l = text.lines();
    let ready = l.next() == Some("True");
    let methods = l
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let verdict = l.next().unwrap().to_string();
    let places = l
        .map(|x| {
            let f: Vec<&str> = x.split(' ').collect();
            (
                f[0].to_string(),
                f[1].replace('_', " "),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    (ready, methods, places, verdict)
}

fn boots(places: &[(String, String, u64)], path: &str) -> Option<u64> {
    places.iter().find(|p| p.0 == path).map(|p| p.2)
}

#[test]
fn report_over_audit_and_wipe_boots() {
    if !require_root("report_over_audit_and_wipe_boots") {
        return;
    }
    let mut fs = LoopFs::new("report");
    fs.subvol("@root");
    let audit = ["rollback", "--mode", "audit", "--keep", "all"];
    // Boot 1 leaves a service's state, a cache, a log and the machine id.
    fs.write("@root/var/lib/app/db", "1");
    fs.write("@root/var/cache/app/c1", "cache");
    fs.write("@root/var/log/app.log", "log 1\n");
    fs.write("@root/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    fs.write("@root/etc/NIXOS", "");
    fs.boot(&audit);
    let out = fs.ok(&["report"]);
    assert!(
        out.contains("\nverdict: not enough old roots to judge: 1 kept"),
        "{out}"
    );
    // Boot 2: the service writes its state, the cache grows.
    fs.write("@root/var/lib/app/db", "22");
    fs.write("@root/var/cache/app/c2", "cache");
    fs.boot(&audit);
    // Boot 3: only the cache and the log.
    fs.write("@root/var/cache/app/c3", "cache");
    fs.write("@root/var/log/app.log", "log 1\nlog 3\n");
    fs.boot(&audit);
    // Boot 4: the cache, and the state again.
    fs.write("@root/var/cache/app/c4", "cache");
    fs.write("@root/var/lib/app/db", "4444");
    fs.boot(&audit);
    let olds = fs.old_roots();
    assert_eq!(olds.len(), 4, "{olds:?}");

    let out = fs.ok(&["report"]);
    eprintln!("{out}");
    assert!(
        out.starts_with(&format!(
            "report: 4 old root(s) from {} to {}, 3 boot-to-boot comparison(s)\n",
            olds[0], olds[3]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  {} -> {}: 2 files, 7 B (btrfs generation search)\n",
            olds[0], olds[1]
        )),
        "{out}"
    );
    let line = |p: &str| {
        out.lines()
            .find(|l| l.contains(&format!("  {p}")))
            .unwrap_or_else(|| panic!("no line for {p}:\n{out}"))
            .split_whitespace()
            .scan(false, |seen, w| {
                let keep = !*seen;
                *seen |= w.contains('/');
                keep.then_some(w)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("/var/cache/app/"), "probably not 3/3");
    assert_eq!(line("/var/lib/app/"), "persist 2/3");
    assert_eq!(line("/var/log/app.log"), "optional 1/3");
    assert!(!out.contains("machine-id"), "unchanged after boot 1: {out}");
    assert!(
        out.ends_with(
            "\nverdict: not ready for wipe: persist /var/lib/app/ first (1 place(s) changed over 3 boot(s))\n"
        ),
        "{out}"
    );
    // The line that keeps it, in the configured form (none configured: impermanence, /persist).
    assert!(
        out.contains(
            "\n  environment.persistence.\"/persist\".directories = [ \"/var/lib/app\" ];\n"
        ),
        "{out}"
    );
    let conf = fs.dir.join("preservation.conf");
    std::fs::write(
        &conf,
        "store = /nix/persist\npersist_format = preservation\n",
    )
    .unwrap();
    let pres = fs.ok(&["report", "--config", conf.to_str().unwrap()]);
    assert!(
        pres.contains(
            "\n  preservation.preserveAt.\"/nix/persist\".directories = [ \"/var/lib/app\" ];\n"
        ),
        "{pres}"
    );
    assert!(!pres.contains("environment.persistence"), "{pres}");
    std::fs::write(&conf, "store = /state\npersist_format = fstab\n").unwrap();
    let js = fs.ok(&["report", "--json", "--config", conf.to_str().unwrap()]);
    assert!(
        js.contains("\"persist_line\":\"fileSystems.\\\"/var/lib/app\\\" = { device = \\\"/state/var/lib/app\\\"; options = [ \\\"bind\\\" ]; };\""),
        "{js}"
    );
    let (ready, methods, places, _) = report_json(&mut fs, &[]);
    assert!(!ready);
    assert_eq!(methods, vec!["btrfs generation search"; 3]);
    assert_eq!(boots(&places, "/var/lib/app"), Some(2));

    // Persisting the state is what makes it ready.
    let (ready, _, places, verdict) = report_json(&mut fs, &["--persist", "/var/lib/app"]);
    assert!(ready, "{verdict}");
    assert_eq!(boots(&places, "/var/lib/app"), None);
    assert!(
        verdict.starts_with("ready to switch to wipe: "),
        "{verdict}"
    );

    // --since: only the old roots from boot 3 on.
    let (_, methods, places, _) = report_json(&mut fs, &["--since", &olds[2]]);
    assert_eq!(methods.len(), 1);
    assert_eq!(boots(&places, "/var/lib/app"), Some(1));
    let o = fs.run(&["report", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--since \"last tuesday\": give a date"),
        "{}",
        stderr(&o)
    );

    // Wipe mode: the root moved aside is no snapshot of the same subvolume as the audit copies,
    // and the next root starts empty: those are compared by walking both.
    fs.write("@root/var/cache/app/c5", "cache");
    fs.boot(&["rollback", "--keep", "all"]);
    fs.write("@root/var/lib/app/db", "6");
    fs.write("@root/etc/NIXOS", "");
    fs.boot(&["rollback", "--keep", "all"]);
    let (ready, methods, places, _) = report_json(&mut fs, &[]);
    assert!(!ready);
    assert_eq!(
        methods,
        [
            "btrfs generation search",
            "btrfs generation search",
            "btrfs generation search",
            "walk of both",
            "walk of both"
        ]
    );
    // The walk saw exactly what changed (c5), not the whole root moved aside; then the wiped
    // boot's own state.
    assert_eq!(boots(&places, "/var/cache/app"), Some(4));
    assert_eq!(boots(&places, "/var/lib/app"), Some(3));
    assert_eq!(boots(&places, "/etc/NIXOS"), None, "boot noise is hidden");
}
