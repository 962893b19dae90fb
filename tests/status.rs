//! `status` and `status --prometheus` on a real btrfs loop device. The exposition format is checked
//! by a small parser of the Prometheus text format (names, HELP/TYPE before samples, labels,
//! float values). Needs root (see tests/common).

mod common;
use common::*;
use std::collections::HashSet;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parse Prometheus text exposition format; returns (name, labels, value) samples.
fn parse_exposition(text: &str) -> Vec<(String, String, f64)> {
    let mut help = HashSet::new();
    let mut typed = HashSet::new();
    let mut seen_samples = HashSet::new();
    let mut out = Vec::new();
    assert!(text.ends_with('\n'), "must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kind, name, arg) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap_or(""));
            assert!(valid_name(name), "{line}");
            assert!(
                !seen_samples.contains(name),
                "HELP/TYPE after samples: {line}"
            );
            match kind {
                "HELP" => assert!(help.insert(name.to_string()) && !arg.is_empty(), "{line}"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg),
                        "{line}"
                    );
                    assert!(typed.insert(name.to_string()), "{line}");
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line");
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                // label="value" pairs, values with \" \\ \n escapes.
                let mut rest = l;
                while !rest.is_empty() {
                    let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(valid_name(k) && !k.starts_with("__"), "{line}");
                    let mut end = None;
                    let mut esc = false;
                    for (i, c) in v.char_indices() {
                        match (esc, c) {
                            (true, _) => esc = false,
                            (false, '\\') => esc = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("{line}"));
                    rest = v[end + 1..].trim_start_matches(',');
                }
                (n, l.to_string())
            }
            None => (head, String::new()),
        };
        assert!(valid_name(name), "{line}");
        assert!(
            typed.contains(name) && help.contains(name),
            "sample before TYPE/HELP: {line}"
        );
        seen_samples.insert(name.to_string());
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        out.push((name.to_string(), labels, v));
    }
    out
}

fn sample(s: &[(String, String, f64)], name: &str) -> Option<f64> {
    s.iter().find(|x| x.0 == name).map(|x| x.2)
}

#[test]
fn status_and_prometheus() {
    if !require_root("status_and_prometheus") {
        return;
    }
    let mut fs = LoopFs::new("status");
    fs.subvol("@root");
    fill_root(&mut fs, "a");
    fs.write("@root/var/lib/svc/big", &"x".repeat(100_000));
    fs.ok(&["rollback"]);
    fs.write("@root/var/lib/svc/new", &"y".repeat(5_000));
    fs.write("@root/etc/NIXOS", "");

    let out = fs.ok(&["status"]);
    assert!(
        out.contains("old roots:       1 (size unknown (quotas off))"),
        "{out}"
    );
    assert!(out.contains("last rollback:   ok"), "{out}");
    assert!(out.contains("not persisted:   1 files"), "{out}");

    let p = fs.ok(&["status", "--prometheus"]);
    let s = parse_exposition(&p);
    assert_eq!(sample(&s, "ephemeral_root_old_roots"), Some(1.0));
    assert_eq!(
        sample(&s, "ephemeral_root_last_rollback_success"),
        Some(1.0)
    );
    assert_eq!(sample(&s, "ephemeral_root_unpersisted_files"), Some(1.0));
    assert_eq!(sample(&s, "ephemeral_root_unpersisted_bytes"), Some(5000.0));
    assert!(sample(&s, "ephemeral_root_filesystem_free_bytes").unwrap() > 0.0);
    assert!(sample(&s, "ephemeral_root_last_rollback_duration_seconds").is_some());
    assert!(sample(&s, "ephemeral_root_old_roots_exclusive_bytes").is_none());

    // With quotas on, the old roots' exclusive size is known.
    fs.mount();
    sh(&format!(
        "btrfs quota enable {m} && btrfs quota rescan -w {m} >/dev/null",
        m = fs.mnt.display()
    ));
    let p = fs.ok(&["status", "--prometheus"]);
    let s = parse_exposition(&p);
    let ex = sample(&s, "ephemeral_root_old_roots_exclusive_bytes")
        .expect("exclusive bytes with quotas on");
    assert!(ex >= 100_000.0, "{p}");
    let out = fs.ok(&["status"]);
    assert!(out.contains("exclusive"), "{out}");

    // A failed rollback record.
    std::fs::write(
        fs.dir.join("state/last-rollback.json"),
        "{\"result\":\"failed\",\"mode\":\"wipe\",\"time\":\"2026-01-02T03:04:05Z\",\"duration_ms\":12,\"kept\":null,\"error\":\"boom \\\"x\\\"\"}\n",
    )
    .unwrap();
    let s = parse_exposition(&fs.ok(&["status", "--prometheus"]));
    assert_eq!(
        sample(&s, "ephemeral_root_last_rollback_success"),
        Some(0.0)
    );
    assert_eq!(
        sample(&s, "ephemeral_root_last_rollback_timestamp_seconds"),
        Some(1767323045.0)
    );
}

/// Issue 10 item 9: `rollback --dry-run` writes nothing: no status record (also when the kernel
/// command line says skip), and the filesystem is unchanged.
#[test]
fn rollback_dry_run_writes_no_record() {
    if !require_root("rollback_dry_run_writes_no_record") {
        return;
    }
    let mut fs = LoopFs::new("dry-run");
    fs.subvol("@root");
    fill_root(&mut fs, "a");
    let before = fs.fingerprint();
    let record = fs.dir.join("state/last-rollback.json");
    for cmdline in ["", "rd.ephemeral_root=skip", "rd.ephemeral_root=audit"] {
        let out = fs.ok(&["rollback", "--dry-run", "--kernel-cmdline", cmdline]);
        assert!(
            !record.exists(),
            "--dry-run with {cmdline:?} wrote {}",
            record.display()
        );
        assert!(!out.is_empty() || cmdline.contains("skip"), "{out}");
    }
    assert_eq!(fs.fingerprint(), before, "a dry run changed the filesystem");
    // The real thing does write it.
    fs.ok(&["rollback"]);
    assert!(record.exists());
}
