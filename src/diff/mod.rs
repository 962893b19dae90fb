//! `diff` and `baseline`: what the next boot erases from the root (or what an earlier reboot
//! erased), grouped into the places a person would persist, with boot noise and persisted paths
//! hidden and counted.
//!
//! - [`walk`]: reading a tree through directory descriptors;
//! - [`noise`]: the rules that hide entries (persisted paths, NixOS boot noise);
//! - [`classify`]: grouping into state directories and verdicts;
//! - [`output`]: the report and its renderings (people, `--json`, `--nix`).
//!
//! Where entries come from:
//! - current root, backend with a generation search (btrfs) and a baseline: only what changed
//!   since the baseline ([`Backend::changed_since_baseline`]);
//! - current root with a baseline but no such search: a walk of both, comparing inode number,
//!   size, mode, owner, mtime and ctime;
//! - otherwise a walk of the root (or old root) through the backend's private mount of the top
//!   level, so bind-mounted persisted paths and other mounts are not seen;
//! - a tmpfs root (`/` is tmpfs in mountinfo): a walk of `/` that does not cross mounts.

pub mod classify;
pub mod noise;
pub mod output;
pub mod walk;

use crate::backend::Backend;
use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Context, Error, Result};
use crate::mounts;
use noise::Rule;
use output::{GroupStat, Hidden, Report};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use walk::{Entry, Kind, Meta, Progress};

pub use crate::mounts::root_is_tmpfs;

/// Accumulates entries into groups and hidden counts.
pub struct Tally {
    cx: noise::Context,
    groups: HashMap<String, GroupStat>,
    hidden: std::collections::BTreeMap<Rule, Hidden>,
}

impl Tally {
    pub fn new(cx: noise::Context) -> Tally {
        Tally {
            cx,
            groups: HashMap::new(),
            hidden: Default::default(),
        }
    }

    /// Count an entry as hidden by `rule`.
    pub fn hide(&mut self, rule: Rule, e: &Entry) {
        let h = self.hidden.entry(rule).or_insert(Hidden {
            entries: Some(0),
            bytes: Some(0),
        });
        h.entries = h.entries.map(|n| n + 1);
        h.bytes = h.bytes.map(|b| b + e.meta.size);
    }

    /// Record that `rule` applied but nothing was counted.
    pub fn uncounted(&mut self, rule: Rule) {
        self.hidden.insert(rule, Hidden::default());
    }

    pub fn add(&mut self, e: Entry) {
        if e.meta.kind == Kind::Dir && !e.empty_dir {
            return;
        }
        if let Some(rule) = noise::classify(&e, &self.cx) {
            self.hide(rule, &e);
            return;
        }
        let g = classify::group_of(&e.path);
        let below = e.path.len() > g.path.len();
        let st = self.groups.entry(g.path.clone()).or_insert(GroupStat {
            group: g,
            is_dir: false,
            files: 0,
            bytes: 0,
            largest: Vec::new(),
        });
        st.is_dir |= below || e.meta.kind == Kind::Dir;
        st.files += 1;
        st.bytes += e.meta.size;
        if e.meta.kind != Kind::Dir {
            st.largest.push((e.meta.size, e.path));
            st.largest
                .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            st.largest.truncate(output::LARGEST);
        }
    }

    pub fn finish(self, source: String, method: String) -> Report {
        let mut r = Report {
            source,
            method,
            groups: self.groups.into_values().collect(),
            hidden: self.hidden,
        };
        r.sort();
        r
    }
}

fn open_root_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", path.display()))
}

fn mount_points() -> HashSet<String> {
    mounts::read_mountinfo()
        .map(|mi| mi.into_iter().map(|m| m.mount_point).collect())
        .unwrap_or_default()
}

fn context_for(s: &Settings, dir: &OwnedFd) -> noise::Context {
    let clean = rustix::fs::openat(
        dir,
        "etc/.clean",
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| {
        let mut f = std::fs::File::from(fd);
        let mut t = String::new();
        std::io::Read::read_to_string(&mut f, &mut t).ok()?;
        Some(t)
    })
    .unwrap_or_default();
    noise::Context::new(&s.persist, &clean, mount_points())
}

/// Walk `dir` into the tally.
fn walk_into(t: &mut Tally, dir: &OwnedFd, one_dev: bool, what: &str) -> Result<()> {
    let mut p = Progress::new(what);
    let r = walk::walk(dir, "", one_dev, &mut p, &mut |e| t.add(e));
    p.done();
    r
}

/// Identity and content signature: equal means "unchanged since the baseline".
fn same(a: &Meta, b: &Meta) -> bool {
    (
        a.kind, a.size, a.ino, a.mode, a.uid, a.gid, a.mtime, a.ctime,
    ) == (
        b.kind, b.size, b.ino, b.mode, b.uid, b.gid, b.mtime, b.ctime,
    )
}

/// The current root (through the backend) as a report.
pub fn collect_current(b: &mut dyn Backend, s: &Settings) -> Result<Report> {
    let root = b.root_path()?;
    let dir = open_root_dir(&root)?;
    let mut t = Tally::new(context_for(s, &dir));
    let source = format!("root {}", s.root);
    if let Some(changed) = b.changed_since_baseline()? {
        let mut p = Progress::new("reading changed entries");
        for rel in changed {
            p.tick();
            let rel = rel.trim_start_matches('/');
            if let Some(e) = walk::entry_at(&dir, rel, format!("/{rel}"))? {
                t.add(e);
            }
        }
        p.done();
        t.uncounted(Rule::Unchanged);
        return Ok(t.finish(
            source,
            "changed since the baseline, by btrfs generation".into(),
        ));
    }
    if let Some(base) = b.baseline_path()? {
        let bdir = open_root_dir(&base)?;
        let mut old: HashMap<String, Meta> = HashMap::new();
        let mut p = Progress::new("reading the baseline");
        walk::walk(&bdir, "", false, &mut p, &mut |e| {
            old.insert(e.path, e.meta);
        })?;
        for (rel, np) in b.baseline_nested()? {
            let nd = open_root_dir(&np)?;
            walk::walk(&nd, &format!("/{rel}"), false, &mut p, &mut |e| {
                old.insert(e.path, e.meta);
            })?;
        }
        p.done();
        let mut p = Progress::new("comparing with the baseline");
        let mut unchanged = Vec::new();
        walk::walk(&dir, "", false, &mut p, &mut |e| {
            if old.get(&e.path).is_some_and(|m| same(m, &e.meta)) {
                if e.meta.kind != Kind::Dir || e.empty_dir {
                    unchanged.push(e);
                }
            } else {
                t.add(e);
            }
        })?;
        p.done();
        for e in &unchanged {
            t.hide(Rule::Unchanged, e);
        }
        return Ok(t.finish(source, "walk, compared with the baseline".into()));
    }
    walk_into(&mut t, &dir, false, "scanning the root")?;
    Ok(t.finish(source, "walk; no baseline".into()))
}

fn collect_old(
    b: &mut dyn Backend,
    st: &crate::protocol::State,
    s: &Settings,
    name: &str,
) -> Result<Report> {
    let Some(o) = st.find_old_root(name) else {
        return Err(Error::Usage(format!(
            "old root \"{}\" does not exist in {}; `ephemeral-root list` shows the names",
            crate::escape::text(name),
            s.snapshots
        )));
    };
    if !o.sealed {
        log::info!(
            "old root {name} is not sealed yet (read-only once `finish` runs); reading it as it is"
        );
    }
    let entry = o.entry.to_string();
    let path = b.entry_path(&entry)?;
    let dir = open_root_dir(&path)?;
    let mut t = Tally::new(context_for(s, &dir));
    walk_into(&mut t, &dir, false, "scanning the old root")?;
    // Nested subvolumes kept beside the old root (bcachefs), at their places in the tree.
    for (rel, p) in b.entry_nested(&entry)? {
        let nd = open_root_dir(&p)?;
        let mut pr = Progress::new("scanning a nested subvolume");
        let r = walk::walk(&nd, &format!("/{rel}"), false, &mut pr, &mut |e| t.add(e));
        pr.done();
        r?;
    }
    Ok(t.finish(format!("old root {name}"), "walk".into()))
}

fn collect_tmpfs(s: &Settings) -> Result<Report> {
    let dir = open_root_dir(Path::new("/"))?;
    let mut t = Tally::new(context_for(s, &dir));
    walk_into(&mut t, &dir, true, "scanning /")?;
    Ok(t.finish(
        "/ (tmpfs)".into(),
        "walk of / without crossing mounts".into(),
    ))
}

/// The report for `diff [OLD_ROOT]` (also used by `status`).
pub fn collect(s: &Settings, old: Option<&str>) -> Result<Report> {
    if old.is_none() && root_is_tmpfs(&mounts::read_mountinfo()?) {
        return collect_tmpfs(s);
    }
    let (mut b, st) = crate::protocol::open(s, crate::clock::now())?;
    let r = match old {
        Some(n) => collect_old(b.as_mut(), &st, s, n),
        None => collect_current(b.as_mut(), s),
    };
    b.close()?;
    r
}

pub fn run(cli: &Cli, s: &Settings, old: Option<&str>) -> Result<()> {
    let r = collect(s, old)?;
    let text = if cli.json {
        format!("{}\n", output::json(&r))
    } else if cli.nix {
        output::nix(&r)
    } else {
        output::human(&r, cli.verbosity > 0)
    };
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_root_detection() {
        let tmpfs = mounts::parse_mountinfo(
            "1 0 0:2 / / rw - rootfs rootfs rw\n22 1 0:21 / / rw,relatime - tmpfs none rw,mode=755\n23 22 0:33 /@persist/var/log /var/log rw - btrfs /dev/vdb rw\n",
        );
        assert!(root_is_tmpfs(&tmpfs));
        let btrfs =
            mounts::parse_mountinfo("22 1 0:33 /@root / rw - btrfs /dev/vdb rw,subvolid=256\n");
        assert!(!root_is_tmpfs(&btrfs));
    }
}
