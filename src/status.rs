//! `status`: root age, old roots (count, and exclusive size when btrfs quotas are on), free space,
//! the last rollback (from the record the initrd step leaves in `/run/ephemeral-root`), and what
//! is not persisted right now (the `diff` machinery: cheap with a baseline on btrfs, a walk of the
//! root otherwise). `--prometheus` prints the same as node-exporter textfile metrics.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use crate::cli::Cli;
use crate::config::Settings;
use crate::error::Result;
use crate::timefmt::{human_age, human_bytes};
use std::fmt::Write;

use crate::lastrun::LastRollback;

/// Everything `status` reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub root: String,
    pub root_age: Option<i64>,
    pub old_roots: usize,
    /// Old roots moved aside but not sealed yet (`.kept.*`: `finish` has not run since).
    pub pending: usize,
    /// Sum of exclusive bytes of old roots (btrfs quotas), and whether quotas flag it stale.
    pub old_roots_exclusive: Option<(u64, bool)>,
    pub free_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    pub baseline: bool,
    pub last: Option<LastRollback>,
    pub unpersisted: Option<(u64, u64)>,
    /// Branches of the root the count could not look into (too deep, unreadable).
    pub unpersisted_incomplete: Option<u64>,
    /// Hidden, missing and stray state (src/persisted/), when a store or persisted paths are
    /// configured.
    pub persistence: Option<crate::persisted::Findings>,
}

fn gather(s: &Settings) -> Result<Status> {
    let mut st = Status {
        root: s.root.clone(),
        ..Default::default()
    };
    st.last = crate::lastrun::read();
    let now = crate::clock::now();
    let (mut b, state) = crate::protocol::open(s, now)?;
    let r = (|| -> Result<()> {
        st.root_age = state.root.as_ref().map(|r| now - r.facts.began);
        let olds = state.old_roots();
        st.old_roots = olds.len();
        st.pending = olds.iter().filter(|o| !o.sealed).count();
        st.baseline = state.has_baseline();
        let root = b.root_path()?;
        if let Ok(v) = rustix::fs::statvfs(&root) {
            st.free_bytes = Some(v.f_bavail * v.f_frsize);
            st.size_bytes = Some(v.f_blocks * v.f_frsize);
        }
        let mut total = Some((0u64, false));
        for o in &olds {
            let ex = b.exclusive_bytes(o.entry)?;
            total = match (total, ex) {
                (Some((t, i)), Some((e, i2))) => Some((t + e, i || i2)),
                _ => None,
            };
        }
        st.old_roots_exclusive = total;
        if state.root.is_some() {
            let rep = crate::diff::collect_current(b.as_mut(), s, crate::diff::Compare::Auto)?;
            st.unpersisted = Some((rep.files(), rep.bytes()));
            st.unpersisted_incomplete = Some(rep.incomplete_count());
            st.persistence = crate::persisted::gather(b.as_mut(), s);
        }
        Ok(())
    })();
    b.close()?;
    r?;
    Ok(st)
}

/// Text from the record file, escaped and cut for the terminal.
fn esc(s: &str) -> String {
    crate::escape::cut_str(s)
}

fn human(st: &Status) -> String {
    let mut o = String::new();
    let opt_bytes = |b: Option<u64>| b.map(human_bytes).unwrap_or_else(|| "unknown".into());
    let _ = writeln!(
        o,
        "root:            {} (age {})",
        st.root,
        st.root_age
            .map(human_age)
            .unwrap_or_else(|| "missing".into())
    );
    let size = match st.old_roots_exclusive {
        Some((b, false)) => format!("{} exclusive", human_bytes(b)),
        Some((b, true)) => format!(
            "{} exclusive (quota numbers inconsistent: run `btrfs quota rescan`)",
            human_bytes(b)
        ),
        None if st.old_roots == 0 => "nothing".into(),
        None => "size unknown (quotas off)".into(),
    };
    let _ = writeln!(
        o,
        "old roots:       {} ({size}){}",
        st.old_roots,
        if st.pending > 0 {
            format!(
                "; {} not sealed yet (`ephemeral-root finish` seals them)",
                st.pending
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "free space:      {} of {}",
        opt_bytes(st.free_bytes),
        opt_bytes(st.size_bytes)
    );
    let _ = writeln!(
        o,
        "baseline:        {}",
        if st.baseline {
            "yes"
        } else {
            "none (`ephemeral-root baseline`)"
        }
    );
    match &st.last {
        Some(l) => {
            let _ = writeln!(
                o,
                "last rollback:   {} at {} ({} mode, {}){}{}",
                esc(&l.result),
                esc(&l.time),
                esc(&l.mode),
                l.duration_ms
                    .map(|d| format!("{d} ms"))
                    .unwrap_or_else(|| "duration unknown".into()),
                l.kept
                    .as_ref()
                    .map(|k| format!(", kept {}", esc(k)))
                    .unwrap_or_default(),
                l.error
                    .as_ref()
                    .map(|e| format!(": {}", esc(e)))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(
                o,
                "last rollback:   no record in {}",
                crate::lastrun::state_dir()
            );
        }
    }
    let _ = writeln!(
        o,
        "not persisted:   {}{}",
        st.unpersisted
            .map(|(f, b)| format!(
                "{f} files, {} (`ephemeral-root diff` lists them)",
                human_bytes(b)
            ))
            .unwrap_or_else(|| "unknown".into()),
        match st.unpersisted_incomplete {
            Some(n) if n > 0 => format!(
                "; at least: {n} branch(es) could not be looked into (`ephemeral-root diff` names them)"
            ),
            _ => String::new(),
        }
    );
    if let Some(f) = &st.persistence {
        o.push_str(&crate::persisted::output::status_lines(f));
    }
    o
}

/// One metric family: HELP, TYPE and samples.
fn metric(o: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(o, "# HELP ephemeral_root_{name} {help}");
    let _ = writeln!(o, "# TYPE ephemeral_root_{name} gauge");
    for (labels, v) in samples {
        let _ = writeln!(o, "ephemeral_root_{name}{labels} {v}");
    }
}

fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// node-exporter textfile metrics.
pub fn prometheus(st: &Status) -> String {
    let mut o = String::new();
    let one = |v: Option<f64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    let root = format!("{{root=\"{}\"}}", label_value(&st.root));
    metric(
        &mut o,
        "root_age_seconds",
        "Seconds since the current root was created.",
        &st.root_age
            .map(|a| vec![(root.clone(), a as f64)])
            .unwrap_or_default(),
    );
    metric(
        &mut o,
        "old_roots",
        "Number of kept old roots.",
        &one(Some(st.old_roots as f64)),
    );
    metric(
        &mut o,
        "pending_old_roots",
        "Old roots moved aside but not sealed read-only yet (finish has not run since the rollback).",
        &one(Some(st.pending as f64)),
    );
    metric(
        &mut o,
        "last_rollback_recorded",
        "1 if this boot's rollback left its record in /run/ephemeral-root, 0 if not (it did not run).",
        &one(Some(if st.last.is_some() { 1.0 } else { 0.0 })),
    );
    metric(
        &mut o,
        "old_roots_exclusive_bytes",
        "Bytes only the old roots hold (btrfs quotas; absent when quotas are off).",
        &one(st.old_roots_exclusive.map(|x| x.0 as f64)),
    );
    metric(
        &mut o,
        "filesystem_free_bytes",
        "Bytes available on the filesystem holding the root.",
        &one(st.free_bytes.map(|x| x as f64)),
    );
    metric(
        &mut o,
        "filesystem_size_bytes",
        "Size of the filesystem holding the root.",
        &one(st.size_bytes.map(|x| x as f64)),
    );
    metric(
        &mut o,
        "baseline_present",
        "1 if a baseline of the current root exists.",
        &one(Some(if st.baseline { 1.0 } else { 0.0 })),
    );
    if let Some(l) = &st.last {
        metric(
            &mut o,
            "last_rollback_success",
            "1 if the last rollback succeeded (or was skipped), 0 if it failed.",
            &[(
                format!(
                    "{{result=\"{}\",mode=\"{}\"}}",
                    label_value(&l.result),
                    label_value(&l.mode)
                ),
                if l.result == "failed" { 0.0 } else { 1.0 },
            )],
        );
        metric(
            &mut o,
            "last_rollback_backlog_failed",
            "1 if the last rollback could not do the work a missed finish left (the boot went on).",
            &one(Some(if l.backlog_error.is_some() { 1.0 } else { 0.0 })),
        );
        metric(
            &mut o,
            "last_rollback_duration_seconds",
            "How long the last rollback took.",
            &one(l.duration_ms.map(|d| d as f64 / 1000.0)),
        );
        metric(
            &mut o,
            "last_rollback_timestamp_seconds",
            "When the last rollback ran (Unix time).",
            &one(parse_rfc3339(&l.time).map(|t| t as f64)),
        );
    }
    metric(
        &mut o,
        "unpersisted_files",
        "Files on the root that the next boot erases (after noise rules).",
        &one(st.unpersisted.map(|x| x.0 as f64)),
    );
    metric(
        &mut o,
        "unpersisted_bytes",
        "Bytes on the root that the next boot erases (after noise rules).",
        &one(st.unpersisted.map(|x| x.1 as f64)),
    );
    metric(
        &mut o,
        "unpersisted_incomplete_branches",
        "Directories the unpersisted counts could not look into (too deep, unreadable): the counts are a lower bound when this is above 0.",
        &one(st.unpersisted_incomplete.map(|x| x as f64)),
    );
    // Persistence checks: only when a store is configured (otherwise nothing was compared).
    let f = st.persistence.as_ref().filter(|f| f.store.is_some());
    let n = |g: fn(&crate::persisted::Findings) -> u64| one(f.map(|f| g(f) as f64));
    metric(
        &mut o,
        "hidden_entries",
        "Entries on the root under persisted paths (hidden by their bind mounts) that the store lacks: erased at the next boot.",
        &n(|f| f.hidden_entries()),
    );
    metric(
        &mut o,
        "hidden_bytes",
        "Bytes of the hidden entries.",
        &n(|f| f.hidden_bytes()),
    );
    metric(
        &mut o,
        "missing_persisted",
        "Declared persisted paths (and undeclared critical paths on the root) that the store does not hold.",
        &n(|f| f.missing_persisted()),
    );
    metric(
        &mut o,
        "missing_critical",
        "Critical files (machine-id, SSH host keys, /boot, keys, `critical =`) that the next boot would lose.",
        &n(|f| f.missing_critical()),
    );
    metric(
        &mut o,
        "stray_bytes",
        "Bytes in the store that no persisted path covers.",
        &n(|f| f.stray_bytes()),
    );
    o
}

/// `YYYY-MM-DDTHH:MM:SSZ` → Unix seconds.
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z')?;
    let (d, h) = t.split_once('T')?;
    let mut dp = d.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (dp.next()??, dp.next()??, dp.next()??);
    let mut hp = h.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (hp.next()??, hp.next()??, hp.next()??);
    let days = crate::timefmt::days_from_civil(y, m as u32, dd as u32);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

pub fn run(cli: &Cli, s: &Settings) -> Result<()> {
    let st = gather(s)?;
    if cli.prometheus {
        print!("{}", prometheus(&st));
    } else {
        print!("{}", human(&st));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::rfc3339;

    #[test]
    fn record_round_trip() {
        let t = "{\"result\":\"failed\",\"mode\":\"wipe\",\"time\":\"2026-01-02T03:04:05Z\",\"duration_ms\":1234,\"kept\":null,\"error\":\"step 3/9 (x): \\\"boom\\\"\"}\n";
        let r = crate::lastrun::parse(t).unwrap();
        assert_eq!(r.result, "failed");
        assert_eq!(r.duration_ms, Some(1234));
        assert_eq!(r.kept, None);
        assert_eq!(r.error.as_deref(), Some("step 3/9 (x): \"boom\""));
        assert_eq!(parse_rfc3339(&r.time), Some(1767323045));
        assert_eq!(parse_rfc3339(&rfc3339(1767323045)), Some(1767323045));
        assert!(crate::lastrun::parse("nope").is_none());
    }

    #[test]
    fn prometheus_families_have_help_and_type() {
        let st = Status {
            root: "@ro\"ot".into(),
            root_age: Some(60),
            old_roots: 2,
            last: Some(LastRollback {
                result: "ok".into(),
                mode: "wipe".into(),
                time: "2026-01-02T03:04:05Z".into(),
                duration_ms: Some(1500),
                ..Default::default()
            }),
            unpersisted: Some((3, 4096)),
            ..Default::default()
        };
        let p = prometheus(&st);
        assert!(
            p.contains("ephemeral_root_root_age_seconds{root=\"@ro\\\"ot\"} 60\n"),
            "{p}"
        );
        assert!(p.contains("ephemeral_root_last_rollback_duration_seconds 1.5\n"));
        assert!(!p.contains("old_roots_exclusive_bytes"));
        for line in p.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(p.contains(&format!("# TYPE {name} gauge")), "{line}");
        }
    }
}
