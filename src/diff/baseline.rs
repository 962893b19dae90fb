//! `diff` of the current root against its baseline where there is no generation search (bcachefs,
//! ZFS; btrfs with `--compare ctime|full`): one walk of the current root, looking entries up in
//! the baseline only where they may have changed.
//!
//! Why entries may be skipped: the baseline is a snapshot of this root (same inode numbers, same
//! times) taken after the clocks recorded in /run by `take_baseline` (src/engine.rs,
//! src/lastrun.rs). Any change to an inode sets its change time (ctime) to the wall clock, and so
//! does every change to the names that lead to it: creating it, linking it, unlinking one of its
//! names, renaming it (in place, in or out of a directory). So while the wall clock has not been
//! set back since the record, an entry whose ctime is before the record has been under this name,
//! in this directory, with this metadata since before the baseline. If that directory is also
//! where it was in the baseline (the root is; a directory is if its parent is and it is either
//! such an entry itself or has the baseline's inode number under the same name), the entry is in
//! the baseline at the same path, unchanged: it is counted without touching the baseline, which
//! costs what `find -newer` costs (one `statx` per entry).
//!
//! Every other entry is looked up in the baseline (one `statx` relative to the baseline's
//! directory, opened once per directory, crossing only the baseline's own mounts) and compared
//! whole ([`super::same`]); entries below a directory the baseline does not have at that path are
//! new without a look.
//!
//! Inode times come from the kernel's coarse clock, which lags the wall clock by up to a tick: the
//! trusted instant is the record minus [`MARGIN_NS`], minus the drift between the wall and boot
//! clocks seen since. A drift over [`MAX_DRIFT_NS`] (the clock was set), a record of another boot
//! or none at all (the baseline was taken by an older version), and `--compare full`, make every
//! entry a look-up. What this cannot see: the clock set back and then forward again by the same
//! amount between the baseline and `diff`; `--compare full` does not depend on the clock.

use super::noise::Rule;
use super::walk::Progress;
use super::{same, Tally};
use crate::clock::Reading;
use crate::error::{Context, Result};
use crate::walk::{
    meta_at, meta_of, open_dir_beneath_crossing, open_dir_crossing, Entry, Event, Kind, Meta,
    Options, Problem, Scratch, Walker,
};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How far before the recorded baseline clock a change time must be to be trusted.
pub const MARGIN_NS: i128 = 1_000_000_000;
/// More drift than this between the wall and boot clocks since the baseline: the clock was set.
pub const MAX_DRIFT_NS: i128 = 250_000_000;

pub use crate::cli::Compare;

/// The instant (seconds, nanoseconds) before which a change time shows an entry unchanged since
/// the baseline recorded at `rec`, read again `now`; or why there is none.
pub fn trusted_before(
    rec: Option<&Reading>,
    now: &Reading,
) -> std::result::Result<(i64, i64), String> {
    let Some(r) = rec else {
        return Err("no record of when the baseline was taken in this boot".into());
    };
    if r.boot_id.is_empty() || r.boot_id != now.boot_id {
        return Err("the baseline's clock record is of another boot".into());
    }
    let drift = ((now.real_ns - now.boot_ns) - (r.real_ns - r.boot_ns)).abs();
    if drift > MAX_DRIFT_NS {
        return Err(format!(
            "the wall clock was set by {:.1} s since the baseline",
            drift as f64 / 1e9
        ));
    }
    let t = r.real_ns - MARGIN_NS - drift;
    Ok((
        t.div_euclid(1_000_000_000) as i64,
        t.rem_euclid(1_000_000_000) as i64,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The same directory (inode) at the same path as in the baseline: an entry older than the
    /// record is unchanged.
    Same,
    /// The baseline has a directory at this path, not known to be this one: look each entry up.
    Other,
    /// Not in the baseline: everything below is new.
    New,
}

struct Level {
    name: Vec<u8>,
    state: State,
    /// The baseline's directory at this path, opened when first needed.
    fd: Option<OwnedFd>,
    /// The baseline has no (readable) directory here.
    missing: bool,
}

/// The baseline's directory for level `i`, opening the levels above it as needed.
fn base_dir(lv: &mut [Level], i: usize) -> Option<BorrowedFd<'_>> {
    let mut j = i;
    while lv[j].fd.is_none() && !lv[j].missing && j > 0 {
        j -= 1;
    }
    if lv[j].missing || lv[j].fd.is_none() {
        return None;
    }
    for k in j + 1..=i {
        let opened = lv[k - 1]
            .fd
            .as_ref()
            .map(|p| open_dir_crossing(p, &lv[k].name));
        match opened {
            Some(Ok(fd)) => lv[k].fd = Some(fd),
            _ => {
                for l in &mut lv[k..=i] {
                    l.missing = true;
                }
                return None;
            }
        }
    }
    lv[i].fd.as_ref().map(|f| f.as_fd())
}

/// What the comparison did, for the report's method line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub looked_up: u64,
}

/// Directories this many levels below the root are walked by several threads (their subtrees
/// taken from a shared list), each with its own bounded set of descriptors and its own tally.
const SPLIT_DEPTH: usize = 2;
/// At most this many threads.
const MAX_THREADS: usize = 4;

/// What every part of the walk shares.
struct Shared<'a> {
    live_root: BorrowedFd<'a>,
    base_root: BorrowedFd<'a>,
    /// Baselines of nested subvolumes: path in the root (`/var/lib/x`) and directory.
    nested: &'a [(Vec<u8>, OwnedFd)],
    before: Option<(i64, i64)>,
}

/// The comparison state of one walker: the levels from the root to the entry being looked at.
struct Cmp<'a> {
    sh: &'a Shared<'a>,
    lv: Vec<Level>,
    n: Counts,
}

impl<'a> Cmp<'a> {
    /// Levels for a walk below `chain` (names and states of the directories from the root's
    /// child down; empty for the root).
    fn new(sh: &'a Shared<'a>, chain: &[(Vec<u8>, State)]) -> Cmp<'a> {
        let root = Level {
            name: Vec::new(),
            // The baseline is a snapshot of this root: its top is the same directory.
            state: State::Same,
            fd: dup(sh.base_root),
            missing: false,
        };
        let mut lv = vec![root];
        let mut path = Vec::new();
        for (name, state) in chain {
            path.push(b'/');
            path.extend_from_slice(name);
            lv.push(Level {
                name: name.clone(),
                state: *state,
                fd: sh.nested_fd(&path),
                missing: false,
            });
        }
        Cmp {
            sh,
            lv,
            n: Counts::default(),
        }
    }

    /// Entry `e`, `depth` levels below the root: into `t`, and its level if it is a directory.
    /// Whether it changed since the baseline.
    fn entry(&mut self, t: &mut Tally, e: &Entry, depth: usize) -> bool {
        self.n.entries += 1;
        let d = depth.max(1);
        self.lv.truncate(d);
        // Every directory's own entry comes before its entries; if not, count it as changed.
        let (changed, mut state) = if self.lv.len() == d {
            judge(&mut self.lv, d - 1, e, self.sh.before, &mut self.n)
        } else {
            (true, State::New)
        };
        if changed {
            t.add(e);
        } else if e.meta.kind != Kind::Dir || e.empty_dir {
            t.hide(Rule::Unchanged, e.meta.size);
        }
        if e.meta.kind == Kind::Dir {
            let fd = self.sh.nested_fd(e.path);
            if fd.is_some() && state == State::New {
                state = State::Other;
            }
            self.lv.push(Level {
                name: e.name().to_vec(),
                state,
                fd,
                missing: false,
            });
        }
        changed
    }

    /// Names and states of the directories from the root's child to the last one entered.
    fn chain(&self) -> Vec<(Vec<u8>, State)> {
        self.lv[1..]
            .iter()
            .map(|l| (l.name.clone(), l.state))
            .collect()
    }
}

impl Shared<'_> {
    /// The baseline of the nested subvolume at `path`, if there is one (a descriptor of its own).
    fn nested_fd(&self, path: &[u8]) -> Option<OwnedFd> {
        self.nested
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .and_then(|(_, fd)| dup(fd.as_fd()))
    }
}

fn dup(fd: BorrowedFd) -> Option<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).ok()
}

/// A directory [`SPLIT_DEPTH`] levels down, whose subtree one of the threads walks. The walk
/// above it does not read it (a directory read twice costs a `getdents64` per entry on
/// bcachefs 6.12); whether it is empty, which decides whether it counts itself, is known once
/// its own walk reads it.
struct Unit {
    path: Vec<u8>,
    chain: Vec<(Vec<u8>, State)>,
    meta: Meta,
    changed: bool,
}

fn walk_options() -> Options {
    Options {
        cross_mounts: true,
        ..Options::default()
    }
}

/// Walk `dir` (the current root) into `t`, comparing with `base` (the baseline's root) and the
/// baselines of nested subvolumes (`nested`: path in the root such as `/var/lib/x`, and its
/// baseline's directory). `before`: see [`trusted_before`]; `None` looks every entry up.
pub(crate) fn compare(
    t: &mut Tally,
    dir: &OwnedFd,
    base: OwnedFd,
    nested: Vec<(Vec<u8>, OwnedFd)>,
    before: Option<(i64, i64)>,
    p: &mut Progress,
) -> Result<Counts> {
    let sh = Shared {
        live_root: dir.as_fd(),
        base_root: base.as_fd(),
        nested: &nested,
        before,
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(MAX_THREADS))
        .unwrap_or(1);
    // The top of the tree here; the subtrees below SPLIT_DEPTH into `units`.
    let mut top = Cmp::new(&sh, &[]);
    let mut units: Vec<Unit> = Vec::new();
    let top_options = Options {
        leaf_depth: SPLIT_DEPTH,
        ..walk_options()
    };
    let mut w = Walker::new(dir.as_fd(), b"", top_options).ctx(|| "read directory /")?;
    while let Some(ev) = w.next() {
        let unit = match ev {
            Event::Entry(e) => {
                p.tick();
                let changed = top.entry(t, &e, e.depth);
                // Split even with one thread: one code path whatever the machine.
                (e.meta.kind == Kind::Dir && e.depth == SPLIT_DEPTH).then(|| Unit {
                    path: e.path.to_vec(),
                    chain: top.chain(),
                    meta: e.meta,
                    changed,
                })
            }
            Event::Mount(_) => None,
            Event::Problem(path, pr) => {
                t.problem(path, pr);
                None
            }
        };
        if let Some(u) = unit {
            w.skip_subtree();
            units.push(u);
        }
    }
    let mut n = top.n;
    if units.is_empty() {
        return Ok(n);
    }
    let next = AtomicUsize::new(0);
    let seen = AtomicU64::new(0);
    let parts: Vec<(Tally, Counts)> = std::thread::scope(|s| {
        let (sh, units, next, seen) = (&sh, &units, &next, &seen);
        let helpers: Vec<_> = (1..threads.min(units.len()))
            .map(|_| {
                let cx = t.cx.clone();
                s.spawn(move || walk_units(sh, units, next, seen, Tally::new(cx), None))
            })
            .collect();
        let mut parts = vec![walk_units(
            sh,
            units,
            next,
            seen,
            Tally::new(t.cx.clone()),
            Some(p),
        )];
        // A helper that panicked aborts the process (panic = "abort"); elsewhere (tests) its
        // panic goes on here: a part of the tree is never dropped silently.
        for h in helpers {
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    for (part, c) in parts {
        t.merge(part);
        n.entries += c.entries;
        n.looked_up += c.looked_up;
    }
    Ok(n)
}

/// Take units from `units` (the next index in `next`) until none is left.
fn walk_units(
    sh: &Shared,
    units: &[Unit],
    next: &AtomicUsize,
    seen: &AtomicU64,
    mut t: Tally,
    mut p: Option<&mut Progress>,
) -> (Tally, Counts) {
    let mut n = Counts::default();
    let mut scratch = Scratch::default();
    while let Some(u) = units.get(next.fetch_add(1, Ordering::Relaxed)) {
        // The directory the top walk saw, opened again from the root (crossing only our own
        // mounts, as the walk does) and checked to be the same one.
        let fd = match open_unit(sh.live_root, u) {
            Ok(fd) => fd,
            Err(pr) => {
                t.problem(&u.path, pr);
                continue;
            }
        };
        let mut c = Cmp::new(sh, &u.chain);
        let opts = Options {
            max_depth: walk_options().max_depth.saturating_sub(SPLIT_DEPTH),
            ..walk_options()
        };
        let mut w =
            match Walker::with_scratch(fd.as_fd(), &u.path, opts, std::mem::take(&mut scratch)) {
                Ok(w) => w,
                Err(e) => {
                    t.problem(&u.path, Problem::from_errno(e));
                    continue;
                }
            };
        if w.root_is_empty() {
            // The directory itself, now that it is known to be empty (what the walk above it
            // would have reported had it read it).
            let e = Entry {
                path: &u.path,
                depth: SPLIT_DEPTH,
                meta: u.meta,
                empty_dir: true,
                link: None,
            };
            if u.changed {
                t.add(&e);
            } else {
                t.hide(Rule::Unchanged, u.meta.size);
            }
        }
        while let Some(ev) = w.next() {
            match ev {
                Event::Entry(e) => {
                    let k = seen.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = p.as_deref_mut() {
                        p.set(k);
                    }
                    c.entry(&mut t, &e, e.depth + SPLIT_DEPTH);
                }
                Event::Mount(_) => {}
                Event::Problem(path, pr) => t.problem(path, pr),
            }
        }
        scratch = w.into_scratch();
        n.entries += c.n.entries;
        n.looked_up += c.n.looked_up;
    }
    (t, n)
}

fn open_unit(root: BorrowedFd, u: &Unit) -> std::result::Result<OwnedFd, Problem> {
    let rel = u.path.strip_prefix(b"/").unwrap_or(&u.path);
    let fd = open_dir_beneath_crossing(root, rel).map_err(|e| match e {
        rustix::io::Errno::NOENT => Problem::Vanished,
        rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => Problem::Replaced,
        e => Problem::from_errno(e),
    })?;
    match meta_of(&fd) {
        Ok(m) if (m.dev, m.ino) == (u.meta.dev, u.meta.ino) => Ok(fd),
        Ok(_) => Err(Problem::Replaced),
        Err(e) => Err(Problem::from_errno(e)),
    }
}

/// Whether entry `e` (a child of level `parent`) changed since the baseline, and the state of
/// its own level if it is a directory.
fn judge(
    lv: &mut [Level],
    parent: usize,
    e: &Entry,
    before: Option<(i64, i64)>,
    n: &mut Counts,
) -> (bool, State) {
    let in_place = match lv[parent].state {
        State::New => return (true, State::New),
        State::Same if before.is_some_and(|b| e.meta.ctime < b) => return (false, State::Same),
        State::Same => true,
        State::Other => false,
    };
    n.looked_up += 1;
    let old: Option<Meta> = match base_dir(lv, parent) {
        // An error reading the baseline counts as a change: never hide what may be lost.
        Some(fd) => meta_at(fd, e.name()).ok().flatten(),
        None => None,
    };
    let here = |m: &Meta| {
        if in_place && m.ino == e.meta.ino {
            State::Same
        } else {
            State::Other
        }
    };
    match old {
        Some(m) if same(&m, &e.meta) => (false, here(&m)),
        Some(m) if m.kind == Kind::Dir => (true, here(&m)),
        _ => (true, State::New),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(real_s: i128, boot_s: i128, id: &str) -> Reading {
        Reading {
            real_ns: real_s * 1_000_000_000,
            boot_ns: boot_s * 1_000_000_000,
            boot_id: id.into(),
        }
    }

    #[test]
    fn when_change_times_are_trusted() {
        let rec = r(1_000_000, 50, "ab");
        // (now, expected): Ok(seconds) or Err(part of the reason)
        let cases: &[(Reading, std::result::Result<i64, &str>)] = &[
            // an hour later, clocks in step: the record minus the margin
            (r(1_003_600, 3_650, "ab"), Ok(999_999)),
            // suspended for a day (boot clock counts it): still in step
            (r(1_090_000, 90_050, "ab"), Ok(999_999)),
            // wall clock set back an hour
            (r(1_000_000, 3_650, "ab"), Err("set by 3600.0 s")),
            // wall clock set forward a minute
            (r(1_003_660, 3_650, "ab"), Err("set by 60.0 s")),
            // another boot
            (r(1_003_600, 3_650, "cd"), Err("another boot")),
        ];
        for (now, want) in cases {
            let got = trusted_before(Some(&rec), now);
            match (want, &got) {
                (Ok(s), Ok((gs, gn))) => assert_eq!((*s, 0), (*gs, *gn), "{now:?}"),
                (Err(part), Err(why)) => assert!(why.contains(part), "{now:?}: {why}"),
                _ => panic!("{now:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(trusted_before(None, &rec)
            .unwrap_err()
            .contains("no record"));
        assert!(trusted_before(Some(&r(1, 1, "")), &r(1, 1, ""))
            .unwrap_err()
            .contains("another boot"));
        // a small drift (slewing) is subtracted as well as the margin
        let mut now = r(1_003_600, 3_650, "ab");
        now.real_ns -= 200_000_000;
        assert_eq!(trusted_before(Some(&rec), &now), Ok((999_998, 800_000_000)));
        // nanoseconds below zero borrow from the seconds
        let mut rec2 = r(10, 5, "ab");
        rec2.real_ns += 300;
        assert_eq!(trusted_before(Some(&rec2), &rec2.clone()), Ok((9, 300)));
    }

    #[test]
    fn compare_option_values() {
        assert_eq!(Compare::parse("auto"), Some(Compare::Auto));
        assert_eq!(Compare::parse("ctime"), Some(Compare::Ctime));
        assert_eq!(Compare::parse("full"), Some(Compare::Full));
        assert_eq!(Compare::parse("Full"), None);
        assert_eq!(Compare::parse(""), None);
    }
}
