//! Fleet monitoring end to end: `status --prometheus` on a real btrfs loop device after real
//! rollbacks is checked by `promtool check metrics`, then fed (as it is, sample for sample) to the
//! shipped alert rules (contrib/prometheus/ephemeral-root.rules.yml) with `promtool test rules`,
//! which must fire exactly the alerts the state calls for. So a metric renamed in the code, or
//! misspelled in a rule, fails here. Needs root (see tests/common) and promtool (Debian's
//! promtool package; .ci/run installs it).

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install -t trixie promtool (Debian's prometheus tools; .ci/run does)");
    if let Some(s) = stdin {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn sample(prom: &str, name: &str) -> Option<f64> {
    prom.lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A promtool unit test: the samples of `prom` held for 30 hours on host "h"; the alerts firing
/// after 26 hours must be exactly `want`.
fn alerts_fire(fs: &LoopFs, prom: &str, want: &[&str]) {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/ephemeral-root.rules.yml");
    let mut t = format!(
        "rule_files: [{}]\nevaluation_interval: 1m\ntests:\n  - interval: 2m\n    input_series:\n",
        rules.display()
    );
    for l in prom.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = l.rsplit_once(' ').unwrap();
        let series = match series.split_once('{') {
            Some((n, rest)) => format!("{n}{{instance=\"h\",{rest}"),
            None => format!("{series}{{instance=\"h\"}}"),
        };
        t.push_str(&format!(
            "      - series: '{}'\n        values: '{v}x900'\n",
            series.replace('\'', "''")
        ));
    }
    t.push_str("    promql_expr_test:\n      - expr: count by (alertname) (ALERTS{alertstate=\"firing\"})\n        eval_time: 26h\n        exp_samples:\n");
    if want.is_empty() {
        t.push_str("          []\n");
    }
    for a in want {
        t.push_str(&format!(
            "          - labels: '{{alertname=\"{a}\"}}'\n            value: 1\n"
        ));
    }
    let f = fs.dir.join("alerts.test.yml");
    std::fs::write(&f, &t).unwrap();
    let (ok, out) = promtool(&["test", "rules", f.to_str().unwrap()], None);
    assert!(ok, "want {want:?} firing:\n{out}\n{t}");
}

#[test]
fn real_metrics_fire_the_shipped_alerts() {
    if !require_root("real_metrics_fire_the_shipped_alerts") {
        return;
    }
    let mut fs = LoopFs::new("fleet");
    fs.subvol("@root");
    fill_root(&mut fs, "a");
    // A rollback whose finish never ran: the old root is pending.
    fs.ok(&["rollback"]);
    let out = fs.ok(&["status"]);
    assert!(
        out.contains("; 1 not sealed yet (`ephemeral-root finish` seals them)\n"),
        "{out}"
    );
    let prom = fs.ok(&["status", "--prometheus"]);
    let (ok, lint) = promtool(&["check", "metrics"], Some(&prom));
    assert!(ok, "promtool check metrics: {lint}\n{prom}");
    assert_eq!(sample(&prom, "ephemeral_root_pending_old_roots"), Some(1.0));
    assert_eq!(
        sample(&prom, "ephemeral_root_last_rollback_recorded"),
        Some(1.0)
    );
    assert_eq!(
        sample(&prom, "ephemeral_root_last_rollback_backlog_failed"),
        Some(0.0)
    );
    alerts_fire(&fs, &prom, &["EphemeralRootSealPending"]);

    // finish seals it: a healthy host fires nothing.
    fs.ok(&["finish", "--no-baseline"]);
    let prom = fs.ok(&["status", "--prometheus"]);
    assert_eq!(sample(&prom, "ephemeral_root_pending_old_roots"), Some(0.0));
    alerts_fire(&fs, &prom, &[]);

    // A failed rollback that also could not do a missed finish's work.
    std::fs::write(
        fs.dir.join("state/last-rollback.json"),
        "{\"result\":\"failed\",\"mode\":\"wipe\",\"time\":\"2026-01-02T03:04:05Z\",\"duration_ms\":12,\"kept\":null,\"error\":\"boom\",\"backlog_error\":\"seal: EBUSY\"}\n",
    )
    .unwrap();
    let prom = fs.ok(&["status", "--prometheus"]);
    let (ok, lint) = promtool(&["check", "metrics"], Some(&prom));
    assert!(ok, "promtool check metrics: {lint}\n{prom}");
    assert_eq!(
        sample(&prom, "ephemeral_root_last_rollback_backlog_failed"),
        Some(1.0)
    );
    alerts_fire(
        &fs,
        &prom,
        &["EphemeralRootBacklogFailed", "EphemeralRootRollbackFailed"],
    );

    // No record at all: the initrd did not run the rollback this boot.
    std::fs::remove_file(fs.dir.join("state/last-rollback.json")).unwrap();
    let prom = fs.ok(&["status", "--prometheus"]);
    assert_eq!(
        sample(&prom, "ephemeral_root_last_rollback_recorded"),
        Some(0.0)
    );
    alerts_fire(&fs, &prom, &["EphemeralRootRollbackDidNotRun"]);
}
