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
use super::{same, walk_each, Mounts, Tally};
use crate::clock::Reading;
use crate::error::Result;
use crate::walk::{meta_at, open_dir_crossing, Entry, Kind, Meta};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// How far before the recorded baseline clock a change time must be to be trusted.
pub const MARGIN_NS: i128 = 1_000_000_000;
/// More drift than this between the wall and boot clocks since the baseline: the clock was set.
pub const MAX_DRIFT_NS: i128 = 250_000_000;

/// `diff --compare`: how the current root is compared with its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// The generation search where the filesystem has one (btrfs), else change times when the
    /// clocks allow it, else every entry.
    #[default]
    Auto,
    /// A walk trusting change times when the clocks allow it (on btrfs too).
    Ctime,
    /// A walk looking every entry up in the baseline.
    Full,
}

impl Compare {
    pub fn parse(v: &str) -> Option<Compare> {
        match v {
            "auto" => Some(Compare::Auto),
            "ctime" => Some(Compare::Ctime),
            "full" => Some(Compare::Full),
            _ => None,
        }
    }
}

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
    // The baseline is a snapshot of this root: its top is the same directory.
    let mut lv = vec![Level {
        name: Vec::new(),
        state: State::Same,
        fd: Some(base),
        missing: false,
    }];
    let mut nested = nested;
    let mut n = Counts::default();
    walk_each(t, dir, b"", Mounts::Ours, p, &mut |t, e| {
        n.entries += 1;
        let d = e.depth.max(1);
        lv.truncate(d);
        // Every directory's own entry comes before its entries; if not, count it as changed.
        let (changed, mut state) = if lv.len() == d {
            judge(&mut lv, d - 1, e, before, &mut n)
        } else {
            (true, State::New)
        };
        if changed {
            t.add(e);
        } else if e.meta.kind != Kind::Dir || e.empty_dir {
            t.hide(Rule::Unchanged, e.meta.size);
        }
        if e.meta.kind == Kind::Dir {
            let mut fd = None;
            if let Some(i) = nested
                .iter()
                .position(|(path, _)| path.as_slice() == e.path)
            {
                fd = Some(nested.swap_remove(i).1);
                if state == State::New {
                    state = State::Other;
                }
            }
            lv.push(Level {
                name: e.name().to_vec(),
                state,
                fd,
                missing: false,
            });
        }
    })?;
    Ok(n)
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
