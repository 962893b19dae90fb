//! `report [--since DATE] [--json]`: the rollout verdict for audit mode. Over the old roots kept
//! (audit copies, or wipe-mode roots), compares each with the one before it: what a boot wrote
//! outside persistence, grouped like `diff` (the same [`Tally`], classification and noise rules),
//! then counts in how many boots each place changed. A place judged "persist" or "review" that
//! changed is state the host would lose in wipe mode; none such: "ready to switch to wipe".
//!
//! Two old roots are compared by btrfs generation search when the backend can
//! ([`crate::backend::Browse::changed_between`]: snapshots of one subvolume), otherwise by walking
//! both and comparing inode number, size, mode, owner, mtime and ctime, as `diff` does with a
//! baseline. Deletions are not changes here (nothing is left to lose).

use crate::backend::Backend;
use crate::cli::Cli;
use crate::config::Settings;
use crate::diff::classify::{Group, Verdict};
use crate::diff::output::Report;
use crate::diff::{self, walk::Progress, Mounts, Tally};
use crate::error::{Error, Result};
use crate::escape::{self, escape};
use crate::json;
use crate::persist::rules::Target;
use crate::protocol::OldRoot;
use crate::timefmt::human_bytes;
use crate::walk::{Meta, Problem};
use std::collections::HashMap;
use std::fmt::Write;

/// One place over all comparisons.
#[derive(Debug, Clone)]
pub struct Place {
    pub group: Group,
    pub is_dir: bool,
    /// In how many comparisons it changed.
    pub boots: usize,
    /// Files and bytes changed the last time it changed.
    pub files: u64,
    pub bytes: u64,
    /// The old root in which it last changed.
    pub last: String,
}

/// The whole report.
#[derive(Debug, Default)]
pub struct Rollout {
    pub olds: Vec<String>,
    /// (older, newer, method, files, bytes) per comparison.
    pub steps: Vec<(String, String, String, u64, u64)>,
    pub places: Vec<Place>,
    pub incomplete: Vec<(Vec<u8>, Problem)>,
}

/// Verdicts that block the switch: state to persist, and places no rule knows.
pub fn blocks(v: Verdict) -> bool {
    matches!(v, Verdict::Persist | Verdict::Review)
}

impl Rollout {
    /// Fold one comparison (`newer`'s report against the old root before it) in. Pure.
    pub fn add(&mut self, older: &str, newer: &str, r: Report) {
        self.steps.push((
            older.into(),
            newer.into(),
            r.method.clone(),
            r.files(),
            r.bytes(),
        ));
        for g in r.groups {
            match self
                .places
                .iter_mut()
                .find(|p| p.group.path == g.group.path)
            {
                Some(p) => {
                    p.boots += 1;
                    p.is_dir |= g.is_dir;
                    (p.files, p.bytes, p.last) = (g.files, g.bytes, newer.into());
                }
                None => self.places.push(Place {
                    group: g.group,
                    is_dir: g.is_dir,
                    boots: 1,
                    files: g.files,
                    bytes: g.bytes,
                    last: newer.into(),
                }),
            }
        }
        self.incomplete.extend(r.incomplete);
        // Most often changed first, then by verdict, size and path.
        self.places.sort_by(|a, b| {
            b.boots
                .cmp(&a.boots)
                .then(a.group.verdict.cmp(&b.group.verdict))
                .then(b.bytes.cmp(&a.bytes))
                .then(a.group.path.cmp(&b.group.path))
        });
    }

    /// The places still to persist (verdict "persist" or "review" and changed at least once).
    pub fn to_persist(&self) -> Vec<&Place> {
        self.places
            .iter()
            .filter(|p| blocks(p.group.verdict))
            .collect()
    }

    /// The configuration lines that keep the places still to persist, in the configured form
    /// and store (shared with `persist` and `lost`): (place, line or `None` when a Nix string
    /// cannot hold its name).
    pub fn persist_lines(&self, t: &Target) -> Vec<(&Place, Option<String>)> {
        self.to_persist()
            .into_iter()
            .map(|p| {
                let home = p
                    .group
                    .home
                    .as_ref()
                    .map(|(u, _, rel)| (u.as_slice(), rel.as_slice()));
                (p, t.line(&p.group.path, p.is_dir, home))
            })
            .collect()
    }

    pub fn verdict(&self) -> String {
        let n = self.steps.len();
        if n == 0 {
            return format!(
                "not enough old roots to judge: {} kept{}, at least two are needed (boot a few times in audit mode)",
                self.olds.len(),
                if self.olds.is_empty() { "" } else { " in the period" }
            );
        }
        let todo = self.to_persist();
        if todo.is_empty() {
            let note = if self.incomplete.is_empty() {
                String::new()
            } else {
                format!(
                    " (but {} branch(es) could not be looked into; see above)",
                    self.incomplete.len()
                )
            };
            return format!(
                "ready to switch to wipe: nothing judged \"persist\" or \"review\" changed over {n} boot(s){note}"
            );
        }
        let list: Vec<String> = todo
            .iter()
            .take(10)
            .map(|p| {
                format!(
                    "{}{}",
                    escape::cut(&p.group.path),
                    if p.is_dir { "/" } else { "" }
                )
            })
            .collect();
        format!(
            "not ready for wipe: persist {}{} first ({} place(s) changed over {n} boot(s))",
            list.join(", "),
            if todo.len() > 10 { ", …" } else { "" },
            todo.len()
        )
    }
}

fn human(r: &Rollout, t: &Target) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "report: {} old root(s){}, {} boot-to-boot comparison(s)",
        r.olds.len(),
        match (r.olds.first(), r.olds.last()) {
            (Some(a), Some(b)) if a != b => format!(" from {a} to {b}"),
            (Some(a), _) => format!(" ({a})"),
            _ => String::new(),
        },
        r.steps.len()
    );
    for (a, b, m, f, by) in &r.steps {
        let _ = writeln!(o, "  {a} -> {b}: {f} files, {} ({m})", human_bytes(*by));
    }
    if !r.places.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<17} {:>7} {:>8} {:>10}  PATH  — WHY",
            "VERDICT", "BOOTS", "FILES", "SIZE"
        );
    }
    for p in &r.places {
        let _ = writeln!(
            o,
            "{:<17} {:>7} {:>8} {:>10}  {}{}  — {}",
            p.group.verdict.as_str(),
            format!("{}/{}", p.boots, r.steps.len()),
            p.files,
            human_bytes(p.bytes),
            escape(&p.group.path),
            if p.is_dir { "/" } else { "" },
            p.group.reason
        );
    }
    for (p, why) in r.incomplete.iter().take(diff::INCOMPLETE_SHOWN) {
        let _ = writeln!(
            o,
            "incomplete: gave up on {}: {}",
            escape::cut(p),
            why.describe()
        );
    }
    let lines = r.persist_lines(t);
    if !lines.is_empty() {
        let _ = writeln!(
            o,
            "\nto keep them, add to the NixOS configuration (review the places judged \"review\" first; `ephemeral-root persist PATH` copies the current content into the store):"
        );
        for (p, line) in &lines {
            match line {
                Some(l) => {
                    let _ = writeln!(o, "  {l}");
                }
                None => {
                    let _ = writeln!(
                        o,
                        "  # {} (add by hand: a Nix string cannot hold this name)",
                        escape(&p.group.path)
                    );
                }
            }
        }
        let _ = writeln!(o, "{}", t.note());
    }
    let _ = writeln!(o, "\nverdict: {}", r.verdict());
    o
}

fn to_json(r: &Rollout, t: &Target) -> String {
    let places: Vec<String> = r
        .places
        .iter()
        .map(|p| {
            let mut f = crate::diff::output::group_fields(&p.group, p.is_dir);
            f.extend([
                ("boots_changed", p.boots.to_string()),
                ("files", p.files.to_string()),
                ("bytes", p.bytes.to_string()),
                ("last_changed_in", json::string(&p.last)),
                ("blocks_wipe", blocks(p.group.verdict).to_string()),
            ]);
            if blocks(p.group.verdict) {
                let home = p
                    .group
                    .home
                    .as_ref()
                    .map(|(u, _, rel)| (u.as_slice(), rel.as_slice()));
                f.push((
                    "persist_line",
                    json::opt_string(t.line(&p.group.path, p.is_dir, home).as_deref()),
                ));
            }
            json::object(&f)
        })
        .collect();
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|(a, b, m, f, by)| {
            json::object(&[
                ("from", json::string(a)),
                ("to", json::string(b)),
                ("method", json::string(m)),
                ("files", f.to_string()),
                ("bytes", by.to_string()),
            ])
        })
        .collect();
    let incomplete = crate::diff::output::incomplete_json(&r.incomplete);
    let olds: Vec<String> = r.olds.iter().map(|n| json::string(n)).collect();
    let mut top = vec![
        ("old_roots", json::array(&olds)),
        ("comparisons", json::array(&steps)),
        ("places", json::array(&places)),
        ("incomplete", json::array(&incomplete)),
        (
            "ready",
            (!r.steps.is_empty() && r.to_persist().is_empty()).to_string(),
        ),
        ("verdict", json::string(&r.verdict())),
        ("persist_format", json::string(&t.format.to_string())),
    ];
    top.extend(json::name_fields("store", "store_hex", &t.store));
    top.push(("store_assumed", t.assumed.to_string()));
    json::object(&top)
}

/// `--since`: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` (UTC) or an old-root name, as the (time,
/// sequence) an old root's name sorts by. Old roots are named after the time their root began:
/// audit copies of one root share it and differ by sequence (`…Z-2`), so naming one is exact.
pub fn parse_since(s: &str) -> Option<(i64, u32)> {
    if let Some(t) = crate::timefmt::parse_old_root_name(s) {
        return Some(t);
    }
    if let Some(t) = crate::status::parse_rfc3339(s) {
        return Some((t, 0));
    }
    crate::timefmt::parse_old_root_name(&format!("{s}T00-00-00Z"))
        .filter(|_| s.len() == 10)
        .map(|(t, _)| (t, 0))
}

/// Walk entry `name` (and its nested subvolumes kept beside it) into a map of path → metadata.
fn read_tree(b: &mut dyn Backend, t: &mut Tally, name: &str) -> Result<HashMap<Vec<u8>, Meta>> {
    let mut m = HashMap::new();
    let mut p = Progress::new("reading an old root");
    let dir = diff::open_root_dir(&b.entry_path(name)?)?;
    diff::walk_each(t, &dir, b"", Mounts::Ours, &mut p, &mut |_, e| {
        m.insert(e.path.to_vec(), e.meta);
    })?;
    for (rel, np) in b.entry_nested(name)? {
        let nd = diff::open_root_dir(&np)?;
        let prefix = [b"/".as_slice(), rel.as_bytes()].concat();
        diff::walk_each(t, &nd, &prefix, Mounts::Ours, &mut p, &mut |_, e| {
            m.insert(e.path.to_vec(), e.meta);
        })?;
    }
    p.done();
    Ok(m)
}

/// What `newer` holds that `older` did not (or held otherwise).
fn compare(b: &mut dyn Backend, s: &Settings, older: &OldRoot, newer: &OldRoot) -> Result<Report> {
    let dir = diff::open_root_dir(&b.entry_path(newer.entry)?)?;
    let mut t = Tally::new(diff::context_for(s, &dir));
    let source = format!("old root {}", newer.name);
    if let Some(changed) = b.changed_between(older.entry, newer.entry)? {
        let mut path = Vec::new();
        for rel in changed.paths {
            diff::add_changed(&mut t, &dir, &rel, &mut path);
        }
        for (rel, why) in changed.incomplete {
            t.problem(&[b"/".as_slice(), &rel].concat(), why);
        }
        return Ok(t.finish(source, "btrfs generation search".into()));
    }
    let old = read_tree(b, &mut t, older.entry)?;
    let mut p = Progress::new("comparing old roots");
    let mut each = |t: &mut Tally, e: &crate::walk::Entry| {
        if !old.get(e.path).is_some_and(|m| diff::same(m, &e.meta)) {
            t.add(e);
        }
    };
    diff::walk_each(&mut t, &dir, b"", Mounts::Ours, &mut p, &mut each)?;
    for (rel, np) in b.entry_nested(newer.entry)? {
        let nd = diff::open_root_dir(&np)?;
        let prefix = [b"/".as_slice(), rel.as_bytes()].concat();
        diff::walk_each(&mut t, &nd, &prefix, Mounts::Ours, &mut p, &mut each)?;
    }
    p.done();
    Ok(t.finish(source, "walk of both".into()))
}

pub fn run(cli: &Cli, s: &Settings) -> Result<()> {
    let since = match cli.since.as_deref() {
        Some(d) => Some(parse_since(d).ok_or_else(|| {
            Error::Usage(format!(
                "--since \"{}\": give a date (2026-11-01), a time (2026-11-01T08:00:00Z) or an old-root name",
                escape::cut_str(d)
            ))
        })?),
        None => None,
    };
    let (mut b, st) = crate::protocol::open(s, crate::clock::now())?;
    let r = (|| -> Result<Rollout> {
        let olds: Vec<OldRoot> = st
            .old_roots()
            .into_iter()
            .filter(|o| since.map_or(true, |t| (o.time, o.seq) >= t))
            .collect();
        let mut r = Rollout {
            olds: olds.iter().map(|o| o.name.to_string()).collect(),
            ..Default::default()
        };
        for w in olds.windows(2) {
            let rep = compare(b.as_mut(), s, &w[0], &w[1])?;
            r.add(w[0].name, w[1].name, rep);
        }
        Ok(r)
    })();
    b.close()?;
    let r = r?;
    if cli.json {
        println!("{}", to_json(&r, &Target::of(s)));
    } else {
        print!("{}", human(&r, &Target::of(s)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::classify::group_of;
    use crate::diff::output::GroupStat;

    fn rep(groups: &[(&str, u64)]) -> Report {
        Report {
            source: "x".into(),
            method: "walk of both".into(),
            groups: groups
                .iter()
                .map(|(p, n)| GroupStat {
                    group: group_of(p.as_bytes()),
                    is_dir: true,
                    files: *n,
                    bytes: n * 10,
                    largest: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        let mut r = Rollout {
            olds: vec!["a".into()],
            ..Default::default()
        };
        assert!(
            r.verdict().starts_with("not enough old roots"),
            "{}",
            r.verdict()
        );
        r.olds = vec!["a".into(), "b".into(), "c".into()];
        r.add("a", "b", rep(&[("/var/cache/app", 3), ("/var/log/app", 1)]));
        r.add("b", "c", rep(&[("/var/cache/app", 5)]));
        assert_eq!(
            r.verdict(),
            "ready to switch to wipe: nothing judged \"persist\" or \"review\" changed over 2 boot(s)"
        );
        assert_eq!(r.places[0].boots, 2);
        assert_eq!((r.places[0].files, r.places[0].last.as_str()), (5, "c"));
        r.add(
            "c",
            "d",
            rep(&[("/var/lib/app", 1), ("/opt/x", 2), ("/var/cache/app", 1)]),
        );
        assert_eq!(
            r.verdict(),
            "not ready for wipe: persist /var/lib/app/, /opt/ first (2 place(s) changed over 3 boot(s))"
        );
        let imp = Target {
            format: crate::config::PersistFormat::Impermanence,
            store: b"/persist".to_vec(),
            assumed: true,
        };
        let j = to_json(&r, &imp);
        assert!(j.contains("\"ready\":false"), "{j}");
        assert!(
            j.contains("\"persist_line\":\"environment.persistence.\\\"/persist\\\".directories = [ \\\"/var/lib/app\\\" ];\""),
            "{j}"
        );
        assert!(j.contains("\"store_assumed\":true"), "{j}");
        let h = human(&r, &imp);
        assert!(
            h.contains("\n  environment.persistence.\"/persist\".directories = [ \"/var/lib/app\" ];\n  environment.persistence.\"/persist\".directories = [ \"/opt\" ];\n"),
            "{h}"
        );
        assert!(
            h.contains("no `store =` in the config, so they name /persist"),
            "{h}"
        );
        // The configured form and store.
        let fstab = Target {
            format: crate::config::PersistFormat::Fstab,
            store: b"/state".to_vec(),
            assumed: false,
        };
        let h = human(&r, &fstab);
        assert!(
            h.contains("\n  fileSystems.\"/var/lib/app\" = { device = \"/state/var/lib/app\"; options = [ \"bind\" ]; };\n"),
            "{h}"
        );
        assert!(!h.contains("environment.persistence"), "{h}");
        let pres = Target {
            format: crate::config::PersistFormat::Preservation,
            store: b"/nix/persist".to_vec(),
            assumed: false,
        };
        let h = human(&r, &pres);
        assert!(
            h.contains("  preservation.preserveAt.\"/nix/persist\".directories = [ \"/opt\" ];\n"),
            "{h}"
        );
        assert!(h.contains("with the store /nix/persist"), "{h}");
        // A store that is not UTF-8: its exact bytes in store_hex, no line a Nix string cannot hold.
        let odd = Target {
            format: crate::config::PersistFormat::Impermanence,
            store: b"/p\xff".to_vec(),
            assumed: false,
        };
        let j = to_json(&r, &odd);
        assert!(j.contains("\"store_hex\":\"2f70ff\""), "{j}");
        assert!(j.contains("\"persist_line\":null"), "{j}");
        assert!(
            j.contains(
                "\"path\":\"/var/cache/app\",\"kind\":\"directory\",\"verdict\":\"probably not\""
            ),
            "{j}"
        );
    }

    #[test]
    fn since_dates() {
        assert_eq!(parse_since("2026-01-02"), Some((1767312000, 0)));
        assert_eq!(parse_since("2026-01-02T03:04:05Z"), Some((1767323045, 0)));
        assert_eq!(parse_since("2026-01-02T03-04-05Z"), Some((1767323045, 1)));
        assert_eq!(parse_since("2026-01-02T03-04-05Z-2"), Some((1767323045, 2)));
        for bad in ["", "yesterday", "2026-13-01", "2026-01-02x", "2026-1-2"] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
    }
}
