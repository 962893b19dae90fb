//! `status`: root age, old roots (count, and exclusive size when btrfs quotas are on), free space,
//! the last rollback (from the record the initrd step leaves in `/run/ephemeral-root`), and what
//! is not persisted right now (the `diff` machinery: cheap with a baseline on btrfs, a walk of the
//! root otherwise). `--prometheus` prints the same as node-exporter textfile metrics.

// `stat` field types differ between architectures: keep the casts.
#![allow(clippy::unnecessary_cast)]

use crate::backend::btrfs::inspect;
use crate::backend::btrfs_ioctl as io;
use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Context, Result};
use crate::timefmt::{human_age, human_bytes};
use rustix::fd::AsFd;
use rustix::fs::{Mode, OFlags};
use std::fmt::Write;

/// The last rollback record (`last-rollback.json`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastRollback {
    pub result: String,
    pub mode: String,
    pub time: String,
    pub duration_ms: Option<u64>,
    pub kept: Option<String>,
    pub error: Option<String>,
}

/// Parse the flat JSON object `write_record` writes (string, number and null values).
pub fn parse_record(text: &str) -> Option<LastRollback> {
    let mut r = LastRollback::default();
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = body.chars().peekable();
    let read_string = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Option<String> {
        let mut s = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(s),
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'u' => {
                        let h: String = (0..4).filter_map(|_| chars.next()).collect();
                        s.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    };
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(_) => return None,
        }
        let key = read_string(&mut chars)?;
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ':') {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            Some(read_string(&mut chars)?)
        } else {
            let mut raw = String::new();
            while chars.peek().is_some_and(|c| *c != ',') {
                raw.push(chars.next()?);
            }
            let raw = raw.trim().to_string();
            (raw != "null").then_some(raw)
        };
        match key.as_str() {
            "result" => r.result = value.unwrap_or_default(),
            "mode" => r.mode = value.unwrap_or_default(),
            "time" => r.time = value.unwrap_or_default(),
            "duration_ms" => r.duration_ms = value.and_then(|v| v.parse().ok()),
            "kept" => r.kept = value,
            "error" => r.error = value,
            _ => {}
        }
    }
    Some(r)
}

/// Everything `status` reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub root: String,
    pub root_age: Option<i64>,
    pub old_roots: usize,
    /// Sum of exclusive bytes of old roots (btrfs quotas), and whether quotas flag it stale.
    pub old_roots_exclusive: Option<(u64, bool)>,
    pub free_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    pub baseline: bool,
    pub last: Option<LastRollback>,
    pub unpersisted: Option<(u64, u64)>,
    /// Branches of the root the count could not look into (too deep, unreadable).
    pub unpersisted_incomplete: Option<u64>,
}

fn gather(s: &Settings) -> Result<Status> {
    let mut st = Status {
        root: s.root.clone(),
        ..Default::default()
    };
    let rec = format!("{}/last-rollback.json", crate::engine::state_dir());
    st.last = std::fs::read_to_string(&rec)
        .ok()
        .and_then(|t| parse_record(&t));
    let mut b = crate::engine::open_backend(s)?;
    let r = (|| -> Result<()> {
        let inv = b.inventory()?;
        let now = crate::engine::now();
        st.root_age = inv.root.as_ref().map(|r| now - r.began);
        st.old_roots = inv.old_roots.len();
        st.baseline = inv.baseline;
        let root = b.root_path()?;
        if let Ok(v) = rustix::fs::statvfs(&root) {
            st.free_bytes = Some(v.f_bavail * v.f_frsize);
            st.size_bytes = Some(v.f_blocks * v.f_frsize);
        }
        let mut total = Some((0u64, false));
        for o in &inv.old_roots {
            let p = b.old_root_path(&o.name)?;
            let fd = rustix::fs::open(
                &p,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open old root {}", crate::escape::cut_str(&o.name)))?;
            let ex = if io::is_btrfs(&fd).unwrap_or(false) {
                let id = io::subvol_info(fd.as_fd())
                    .ctx(|| format!("GET_SUBVOL_INFO {}", o.name))?
                    .id;
                inspect::qgroup_exclusive(fd.as_fd(), id).ctx(|| "read btrfs quota groups")?
            } else {
                None
            };
            total = match (total, ex) {
                (Some((t, i)), Some((e, i2))) => Some((t + e, i || i2)),
                _ => None,
            };
        }
        st.old_roots_exclusive = total;
        if inv.root.is_some() {
            let rep = crate::diff::collect_current(b.as_mut(), s)?;
            st.unpersisted = Some((rep.files(), rep.bytes()));
            st.unpersisted_incomplete = Some(rep.incomplete_count());
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
    let _ = writeln!(o, "old roots:       {} ({size})", st.old_roots);
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
                crate::engine::state_dir()
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
        let r = parse_record(t).unwrap();
        assert_eq!(r.result, "failed");
        assert_eq!(r.duration_ms, Some(1234));
        assert_eq!(r.kept, None);
        assert_eq!(r.error.as_deref(), Some("step 3/9 (x): \"boom\""));
        assert_eq!(parse_rfc3339(&r.time), Some(1767323045));
        assert_eq!(parse_rfc3339(&rfc3339(1767323045)), Some(1767323045));
        assert!(parse_record("nope").is_none());
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
