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

pub mod baseline;
pub mod classify;
pub mod noise;
pub mod output;
pub mod walk;

use crate::backend::Backend;
use crate::cli::Cli;
use crate::config::Settings;
use crate::error::{Context, Error, Result};
use crate::escape;
use crate::mounts;
use crate::walk::{Entry, Event, Kind, Meta, Options, Problem, Walker};
pub use baseline::Compare;
use noise::Rule;
use output::{GroupStat, Hidden, Report};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use walk::Progress;

pub use crate::mounts::root_is_tmpfs;

/// How many branches the report names that could not be listed (the rest are counted).
pub const INCOMPLETE_SHOWN: usize = 20;

/// Accumulates entries into groups and hidden counts.
pub struct Tally {
    pub(crate) cx: noise::Context,
    groups: HashMap<Vec<u8>, GroupStat>,
    hidden: std::collections::BTreeMap<Rule, Hidden>,
    incomplete: Vec<(Vec<u8>, Problem)>,
    incomplete_more: u64,
}

impl Tally {
    pub fn new(cx: noise::Context) -> Tally {
        Tally {
            cx,
            groups: HashMap::new(),
            hidden: Default::default(),
            incomplete: Vec::new(),
            incomplete_more: 0,
        }
    }

    /// Count an entry of `size` bytes as hidden by `rule`.
    pub fn hide(&mut self, rule: Rule, size: u64) {
        let h = self.hidden.entry(rule).or_insert(Hidden {
            entries: Some(0),
            bytes: Some(0),
        });
        h.entries = h.entries.map(|n| n + 1);
        h.bytes = h.bytes.map(|b| b + size);
    }

    /// Record that `rule` applied but nothing was counted.
    pub fn uncounted(&mut self, rule: Rule) {
        self.hidden.insert(rule, Hidden::default());
    }

    /// A branch that could not be listed (an entry that vanished meanwhile is not worth a note:
    /// there is nothing left of it to lose).
    pub fn problem(&mut self, path: &[u8], p: Problem) {
        if p == Problem::Vanished {
            return;
        }
        let shown = if path.is_empty() { b"/" } else { path };
        if self.keep_incomplete(shown.to_vec(), p) {
            log::warn!("gave up on {}: {}", escape::cut(shown), p.describe());
        }
    }

    /// Name the branch if it is among the [`INCOMPLETE_SHOWN`] first in byte order seen so far,
    /// else count it; true if named. The named ones are the same whatever order the branches come
    /// in (several threads walk the tree), so the report is the same from one run to the next.
    fn keep_incomplete(&mut self, path: Vec<u8>, p: Problem) -> bool {
        if self.incomplete.len() < INCOMPLETE_SHOWN {
            self.incomplete.push((path, p));
            return true;
        }
        self.incomplete_more += 1;
        let last = self
            .incomplete
            .iter()
            .enumerate()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0))
            .map(|(i, _)| i);
        match last {
            Some(i) if path < self.incomplete[i].0 => {
                self.incomplete[i] = (path, p);
                true
            }
            _ => false,
        }
    }

    pub fn add(&mut self, e: &Entry) {
        if e.meta.kind == Kind::Dir && !e.empty_dir {
            return;
        }
        if let Some(rule) = noise::classify(e, &self.cx) {
            self.hide(rule, e.meta.size);
            return;
        }
        let g = classify::group_of(e.path);
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
        if e.meta.kind != Kind::Dir
            && (st.largest.len() < output::LARGEST
                || st.largest.last().is_some_and(|l| l.0 <= e.meta.size))
        {
            st.largest.push((e.meta.size, e.path.to_vec()));
            keep_largest(&mut st.largest);
        }
    }

    /// Add what another tally (of another part of the same tree) counted.
    pub fn merge(&mut self, o: Tally) {
        for (k, st) in o.groups {
            match self.groups.get_mut(&k) {
                None => {
                    self.groups.insert(k, st);
                }
                Some(mine) => {
                    mine.is_dir |= st.is_dir;
                    mine.files += st.files;
                    mine.bytes += st.bytes;
                    mine.largest.extend(st.largest);
                    keep_largest(&mut mine.largest);
                }
            }
        }
        for (rule, h) in o.hidden {
            let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(x), Some(y)) => Some(x + y),
                (x, None) | (None, x) => x,
            };
            let mine = self.hidden.entry(rule).or_default();
            mine.entries = add(mine.entries, h.entries);
            mine.bytes = add(mine.bytes, h.bytes);
        }
        for (path, p) in o.incomplete {
            self.keep_incomplete(path, p);
        }
        self.incomplete_more += o.incomplete_more;
        self.incomplete.sort_by(|a, b| a.0.cmp(&b.0));
    }

    pub fn finish(self, source: String, method: String) -> Report {
        let mut r = Report {
            source,
            method,
            groups: self.groups.into_values().collect(),
            hidden: self.hidden,
            incomplete: self.incomplete,
            incomplete_more: self.incomplete_more,
        };
        r.sort();
        r
    }
}

/// Largest first (then by path), at most [`output::LARGEST`].
fn keep_largest(v: &mut Vec<(u64, Vec<u8>)>) {
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.truncate(output::LARGEST);
}

pub(crate) fn open_root_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", escape::cut(path.as_os_str().as_encoded_bytes())))
}

pub(crate) fn context_for(s: &Settings, dir: &OwnedFd) -> noise::Context {
    let clean = rustix::fs::openat(
        dir,
        "etc/.clean",
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| {
        let mut f = std::fs::File::from(fd);
        let mut t = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut t).ok()?;
        Some(t)
    })
    .unwrap_or_default();
    let mounts: HashSet<Vec<u8>> = mounts::mount_points().into_iter().collect();
    noise::Context::new(&s.persist, &clean, mounts)
}

/// How a tree is walked: through the backend's private mount, mounts below the root are the
/// backend's own (ZFS child datasets) and part of the tree; a tmpfs `/` is walked without entering
/// any mount.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mounts {
    Ours,
    NotEntered,
}

/// Walk below `dir` (entries named `prefix/…`), calling `f` for each entry; branches that cannot
/// be listed go to `t`'s notes.
pub(crate) fn walk_each(
    t: &mut Tally,
    dir: &OwnedFd,
    prefix: &[u8],
    mounts: Mounts,
    p: &mut Progress,
    f: &mut dyn FnMut(&mut Tally, &Entry),
) -> Result<()> {
    let opts = Options {
        cross_mounts: mounts == Mounts::Ours,
        ..Options::default()
    };
    let mut w = Walker::new(dir.as_fd(), prefix, opts).ctx(|| {
        format!(
            "read directory {}",
            escape::cut(if prefix.is_empty() { b"/" } else { prefix })
        )
    })?;
    while let Some(ev) = w.next() {
        match ev {
            Event::Entry(e) => {
                p.tick();
                f(t, &e);
            }
            Event::Mount(_) => {}
            Event::Problem(path, pr) => t.problem(path, pr),
        }
    }
    Ok(())
}

/// Walk `dir` into the tally.
fn walk_into(
    t: &mut Tally,
    dir: &OwnedFd,
    prefix: &[u8],
    mounts: Mounts,
    what: &str,
) -> Result<()> {
    let mut p = Progress::new(what);
    let r = walk_each(t, dir, prefix, mounts, &mut p, &mut |t, e| t.add(e));
    p.done();
    r
}

/// Identity and content signature: equal means "unchanged since the baseline".
pub(crate) fn same(a: &Meta, b: &Meta) -> bool {
    (
        a.kind, a.size, a.ino, a.mode, a.uid, a.gid, a.mtime, a.ctime,
    ) == (
        b.kind, b.size, b.ino, b.mode, b.uid, b.gid, b.mtime, b.ctime,
    )
}

/// One changed path (relative to the root, from the backend) into the tally.
pub(crate) fn add_changed(t: &mut Tally, dir: &OwnedFd, rel: &[u8], path: &mut Vec<u8>) {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    path.clear();
    path.push(b'/');
    path.extend_from_slice(rel);
    match crate::walk::stat_beneath(dir, rel) {
        Ok(Some((meta, empty_dir))) => {
            let link = (meta.kind == Kind::Symlink)
                .then(|| crate::walk::readlink_beneath(dir, rel).ok())
                .flatten();
            t.add(&Entry {
                path,
                depth: rel.split(|&b| b == b'/').count(),
                meta,
                empty_dir,
                link: link.as_deref(),
            });
        }
        Ok(None) => {}
        Err(e) => t.problem(path, Problem::from_errno(e)),
    }
}

/// The current root (through the backend) as a report.
pub fn collect_current(b: &mut dyn Backend, s: &Settings, compare: Compare) -> Result<Report> {
    let root = b.root_path()?;
    let dir = open_root_dir(&root)?;
    let mut t = Tally::new(context_for(s, &dir));
    let source = format!("root {}", s.root);
    let search = match compare {
        Compare::Auto => b.changed_since_baseline()?,
        Compare::Ctime | Compare::Full => None,
    };
    if let Some(changed) = search {
        let mut p = Progress::new("reading changed entries");
        let mut path = Vec::new();
        for rel in changed.paths {
            p.tick();
            add_changed(&mut t, &dir, &rel, &mut path);
        }
        for (rel, why) in changed.incomplete {
            t.problem(&[b"/".as_slice(), &rel].concat(), why);
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
        let mut nested = Vec::new();
        for (rel, np) in b.baseline_nested()? {
            let prefix = [b"/".as_slice(), rel.as_bytes()].concat();
            nested.push((prefix, open_root_dir(&np)?));
        }
        let (before, how) = match compare {
            Compare::Full => (None, "every entry looked up (--compare full)".to_string()),
            _ => match baseline::trusted_before(
                crate::lastrun::baseline_clock().as_ref(),
                &crate::clock::reading(),
            ) {
                Ok(b) => (Some(b), String::new()),
                Err(why) => {
                    log::info!("comparing every entry with the baseline: {why}");
                    (None, format!("every entry looked up: {why}"))
                }
            },
        };
        let mut p = Progress::new("comparing with the baseline");
        let n = baseline::compare(&mut t, &dir, bdir, nested, before, &mut p)?;
        p.done();
        let how = if before.is_some() {
            format!(
                "entries older than the baseline trusted by their change time, {} of {} looked up",
                n.looked_up, n.entries
            )
        } else {
            how
        };
        return Ok(t.finish(source, format!("walk, compared with the baseline; {how}")));
    }
    walk_into(&mut t, &dir, b"", Mounts::Ours, "scanning the root")?;
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
            escape::text(name),
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
    walk_into(&mut t, &dir, b"", Mounts::Ours, "scanning the old root")?;
    // Nested subvolumes kept beside the old root (bcachefs), at their places in the tree.
    for (rel, p) in b.entry_nested(&entry)? {
        let nd = open_root_dir(&p)?;
        let prefix = [b"/".as_slice(), rel.as_bytes()].concat();
        walk_into(
            &mut t,
            &nd,
            &prefix,
            Mounts::Ours,
            "scanning a nested subvolume",
        )?;
    }
    Ok(t.finish(format!("old root {name}"), "walk".into()))
}

fn collect_tmpfs(s: &Settings) -> Result<Report> {
    let dir = open_root_dir(Path::new("/"))?;
    let mut t = Tally::new(context_for(s, &dir));
    walk_into(&mut t, &dir, b"", Mounts::NotEntered, "scanning /")?;
    Ok(t.finish(
        "/ (tmpfs)".into(),
        "walk of / without crossing mounts".into(),
    ))
}

/// The report for `diff [OLD_ROOT]`, and for the current root the persistence checks
/// ([`crate::persisted`]).
pub fn collect_all(
    s: &Settings,
    old: Option<&str>,
    compare: Compare,
) -> Result<(Report, Option<crate::persisted::Findings>)> {
    if old.is_none() && root_is_tmpfs(&mounts::read_mountinfo()?) {
        return Ok((collect_tmpfs(s)?, None));
    }
    let (mut b, st) = crate::protocol::open(s, crate::clock::now())?;
    let r = match old {
        Some(n) => collect_old(b.as_mut(), &st, s, n).map(|r| (r, None)),
        None => collect_current(b.as_mut(), s, compare)
            .map(|r| (r, crate::persisted::gather(b.as_mut(), s))),
    };
    b.close()?;
    r
}

pub fn run(cli: &Cli, s: &Settings, old: Option<&str>) -> Result<()> {
    let (r, found) = collect_all(s, old, cli.compare)?;
    let text = if cli.json {
        let mut f = output::json_fields(&r);
        if let Some(p) = &found {
            f.push(("persistence", crate::persisted::output::json(p)));
        }
        format!("{}\n", crate::json::object(&f))
    } else if cli.nix {
        output::nix(&r)
    } else {
        let mut t = output::human(&r, cli.verbosity > 0);
        if let Some(p) = &found {
            t.push('\n');
            t.push_str(&crate::persisted::output::human(p));
        }
        t
    };
    print!("{text}");
    match found.map(|p| p.errors()) {
        Some(n) if n > 0 => Err(Error::Other(format!(
            "{n} critical persisted file(s) would be lost at the next boot (listed above as errors)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_branches_named_do_not_depend_on_the_order_they_come_in() {
        let cx = || noise::Context::new(&[], b"", HashSet::new());
        let paths: Vec<Vec<u8>> = (0..27).map(|i| format!("/d{i:02}").into_bytes()).collect();
        let run = |order: &[usize], split: usize| {
            // two walkers' tallies, merged as the threads of a walk are
            let (mut a, mut b) = (Tally::new(cx()), Tally::new(cx()));
            for (k, &i) in order.iter().enumerate() {
                let t = if k < split { &mut a } else { &mut b };
                t.problem(&paths[i], Problem::Denied);
            }
            a.merge(b);
            let r = a.finish(String::new(), String::new());
            (
                r.incomplete.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
                r.incomplete_more,
            )
        };
        let forward: Vec<usize> = (0..27).collect();
        let backward: Vec<usize> = (0..27).rev().collect();
        let shuffled: Vec<usize> = (0..27).map(|i| (i * 10) % 27).collect();
        let want = (paths[..INCOMPLETE_SHOWN].to_vec(), 7);
        for (order, split) in [
            (&forward, 27),
            (&backward, 27),
            (&backward, 5),
            (&shuffled, 13),
        ] {
            assert_eq!(run(order, split), want, "{order:?} split at {split}");
        }
    }

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
