//! The one definition of every name this program puts in the snapshots location, and the pure
//! classification of a name read back from disk. Every backend, `check --json`, the tests and the
//! VM harness rely on this (the harness through `check --json`, never on its own patterns).
//!
//! ```text
//! <snapshots>/
//!   2026-11-22T00-48-03Z      an old root (read-only), named after the time that root began (UTC)
//!   2026-11-22T00-48-03Z-2    the second old root of a root that began at that second (audit mode)
//!   .kept.<old-root name>     the previous root, moved here whole by `rollback`, not yet sealed:
//!                             `finish` (or the next `rollback`) makes it read-only as <old-root name>
//!   .retired-root.<id>        a root moved aside that holds nothing worth keeping: deleted
//!   .deleting.<name>          an old root (or baseline) being pruned: deleted
//!   .incomplete.<name>        something being assembled (a copy, a seal): discarded
//!   .new-root                 the next root being assembled: discarded
//!   .baseline                 read-only snapshot of the root taken after boot (`baseline`)
//!   .pins/<old-root name>     pinned old roots
//!   .fresh-root               record of the roots we built (see `record`)
//!   <name>.nested/            bcachefs: the nested subvolumes kept beside old root <name>
//! ```
//!
//! Names read from disk are bytes; anything that is not valid UTF-8 is foreign by definition (we
//! only ever create ASCII names).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

pub const NEW_ROOT: &str = ".new-root";
pub const INCOMPLETE_PREFIX: &str = ".incomplete.";
pub const KEPT_PREFIX: &str = ".kept.";
pub const RETIRED_ROOT_PREFIX: &str = ".retired-root.";
pub const DELETING_PREFIX: &str = ".deleting.";
pub const PINS_DIR: &str = ".pins";
pub const BASELINE: &str = ".baseline";
/// Where a new baseline is assembled (a leftover when a run is interrupted).
pub const BASELINE_STAGING: &str = ".incomplete.baseline";
pub const RECORD: &str = ".fresh-root";
/// Temporary name the record is written under before it is renamed over [`RECORD`].
pub const RECORD_TMP: &str = ".fresh-root.tmp";
/// Suffix of a directory holding the nested subvolumes of the entry it is named after (bcachefs).
pub const STORE_SUFFIX: &str = ".nested";

/// What a name in the snapshots location is, by its name alone. The protocol then checks the
/// backend's facts (a subvolume or dataset, read-only, …) before counting it as ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A kept old root: (time that root began, sequence number ≥ 1).
    OldRoot {
        time: i64,
        seq: u32,
    },
    /// `.kept.<old-root name>`: moved aside, to be sealed as that name.
    Kept {
        name: String,
        time: i64,
        seq: u32,
    },
    /// `.retired-root.*`: to be deleted.
    RetiredRoot,
    /// `.deleting.*`: to be deleted.
    Deleting,
    /// `.incomplete.*`: half-built, discarded.
    Incomplete,
    /// `.new-root`: half-built next root, discarded.
    NewRoot,
    Baseline,
    Pins,
    /// `.fresh-root` and its temporary.
    Record,
    /// `<owner>.nested`: part of entry `<owner>` (bcachefs); a leftover when the owner is gone.
    Store {
        owner: String,
    },
    /// Not a name this program makes (including `.kept.<not an old-root name>`).
    Foreign,
}

/// How `check --json` reports an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OldRoot,
    Baseline,
    Pins,
    State,
    Template,
    /// Something the next `finish`/`rollback` completes (seal, delete).
    Pending,
    /// Something the next run discards.
    Leftover,
    Foreign,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OldRoot => "old-root",
            Kind::Baseline => "baseline",
            Kind::Pins => "pins",
            Kind::State => "state",
            Kind::Template => "template",
            Kind::Pending => "pending",
            Kind::Leftover => "leftover",
            Kind::Foreign => "foreign",
        }
    }
}

pub fn classify(name: &OsStr) -> Class {
    let Ok(n) = std::str::from_utf8(name.as_bytes()) else {
        return Class::Foreign;
    };
    if n == NEW_ROOT {
        return Class::NewRoot;
    }
    if n == BASELINE {
        return Class::Baseline;
    }
    if n == PINS_DIR {
        return Class::Pins;
    }
    if n == RECORD || n == RECORD_TMP {
        return Class::Record;
    }
    // A store's owner may itself be any of our names (`.incomplete.X.nested`, `.deleting.X.nested`).
    if let Some(owner) = n.strip_suffix(STORE_SUFFIX) {
        if !owner.is_empty() && classify(OsStr::new(owner)) != Class::Foreign {
            return Class::Store {
                owner: owner.to_string(),
            };
        }
    }
    if n.len() > INCOMPLETE_PREFIX.len() && n.starts_with(INCOMPLETE_PREFIX) {
        return Class::Incomplete;
    }
    if n.len() > RETIRED_ROOT_PREFIX.len() && n.starts_with(RETIRED_ROOT_PREFIX) {
        return Class::RetiredRoot;
    }
    if n.len() > DELETING_PREFIX.len() && n.starts_with(DELETING_PREFIX) {
        return Class::Deleting;
    }
    if let Some(name) = n.strip_prefix(KEPT_PREFIX) {
        return match crate::timefmt::parse_old_root_name(name) {
            Some((time, seq)) => Class::Kept {
                name: name.to_string(),
                time,
                seq,
            },
            None => Class::Foreign,
        };
    }
    match crate::timefmt::parse_old_root_name(n) {
        Some((time, seq)) => Class::OldRoot { time, seq },
        None => Class::Foreign,
    }
}

pub fn kept(name: &str) -> String {
    format!("{KEPT_PREFIX}{name}")
}
pub fn incomplete(name: &str) -> String {
    format!("{INCOMPLETE_PREFIX}{name}")
}
pub fn deleting(name: &str) -> String {
    format!("{DELETING_PREFIX}{name}")
}
pub fn retired_root(id: &str) -> String {
    format!("{RETIRED_ROOT_PREFIX}{id}")
}
pub fn store(owner: &str) -> String {
    format!("{owner}{STORE_SUFFIX}")
}

/// Names whose entries are on their way out: a store renamed to such a name goes *after* its
/// owner (see the bcachefs backend); to any other name it goes *before* it, so that an owner
/// never appears under a committed name without its parts.
pub fn is_doomed(name: &str) -> bool {
    matches!(
        classify(OsStr::new(name)),
        Class::Deleting | Class::RetiredRoot | Class::Incomplete
    )
}

/// May an entry with this name be deleted by `discard` or `delete`? Only what is half-built or
/// on its way out; never an old root, a `.kept.*` root, the baseline or anything foreign (those
/// are pruned by renaming them to `.deleting.*` first).
pub fn destroyable(name: &str) -> bool {
    matches!(
        classify(OsStr::new(name)),
        Class::Incomplete
            | Class::NewRoot
            | Class::RetiredRoot
            | Class::Deleting
            | Class::Store { .. }
    )
}

/// `child` is strictly below `parent` in a `/`-separated name (a path relative to a root, or a
/// dataset name); everything non-empty is below the empty `parent`.
pub fn is_below(child: &str, parent: &str) -> bool {
    if parent.is_empty() {
        return !child.is_empty();
    }
    child.len() > parent.len() + 1
        && child.starts_with(parent)
        && child.as_bytes()[parent.len()] == b'/'
}

/// Split `a/b/c` into (`a/b`, `c`); leading and trailing slashes are ignored.
pub fn split_parent(path: &str) -> (&str, &str) {
    let path = path.trim_matches('/');
    match path.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names() {
        let t = crate::timefmt::parse_old_root_name("2026-11-22T00-48-03Z")
            .unwrap()
            .0;
        let kept = |seq| Class::Kept {
            name: if seq == 1 {
                "2026-11-22T00-48-03Z".into()
            } else {
                format!("2026-11-22T00-48-03Z-{seq}")
            },
            time: t,
            seq,
        };
        let store = |o: &str| Class::Store { owner: o.into() };
        for (name, want) in [
            ("2026-11-22T00-48-03Z", Class::OldRoot { time: t, seq: 1 }),
            ("2026-11-22T00-48-03Z-2", Class::OldRoot { time: t, seq: 2 }),
            (".kept.2026-11-22T00-48-03Z", kept(1)),
            (".kept.2026-11-22T00-48-03Z-3", kept(3)),
            (".kept.my-stuff", Class::Foreign),
            (".incomplete.2026-11-22T00-48-03Z", Class::Incomplete),
            (".incomplete.baseline", Class::Incomplete),
            (".incomplete.", Class::Foreign),
            (".new-root", Class::NewRoot),
            (".retired-root.257", Class::RetiredRoot),
            (".deleting.2026-11-22T00-48-03Z", Class::Deleting),
            (".deleting.baseline", Class::Deleting),
            (".baseline", Class::Baseline),
            (".pins", Class::Pins),
            (".fresh-root", Class::Record),
            (".fresh-root.tmp", Class::Record),
            ("2026-11-22T00-48-03Z.nested", store("2026-11-22T00-48-03Z")),
            (
                ".incomplete.2026-11-22T00-48-03Z.nested",
                store(".incomplete.2026-11-22T00-48-03Z"),
            ),
            (".baseline.nested", store(".baseline")),
            (
                ".kept.2026-11-22T00-48-03Z.nested",
                store(".kept.2026-11-22T00-48-03Z"),
            ),
            ("notes.nested", Class::Foreign),
            (".nested", Class::Foreign),
            (".template", Class::Foreign),
            ("2026-13-22T00-48-03Z", Class::Foreign),
            ("notes.txt", Class::Foreign),
            ("", Class::Foreign),
        ] {
            assert_eq!(classify(OsStr::new(name)), want, "{name:?}");
        }
        // Not UTF-8: never ours.
        assert_eq!(
            classify(OsStr::from_bytes(b".kept.2026-11-22T00-48-03Z\xff")),
            Class::Foreign
        );
        assert_eq!(classify(OsStr::from_bytes(b"\xff.nested")), Class::Foreign);
    }

    #[test]
    fn doomed() {
        for (n, want) in [
            (".deleting.2026-11-22T00-48-03Z", true),
            (".retired-root.5", true),
            (".incomplete.x", true),
            ("2026-11-22T00-48-03Z", false),
            (".kept.2026-11-22T00-48-03Z", false),
            (".baseline", false),
        ] {
            assert_eq!(is_doomed(n), want, "{n}");
        }
    }

    #[test]
    fn below() {
        for (child, parent, want) in [
            ("var/lib/machines", "var/lib", true),
            ("var/lib", "var/lib", false),
            ("var/libx", "var/lib", false),
            ("var/lib/", "var/lib", false),
            ("var", "", true),
            ("", "", false),
            ("rpool/a/b", "rpool/a", true),
            ("rpool/ab", "rpool/a", false),
        ] {
            assert_eq!(is_below(child, parent), want, "{child} below {parent}");
        }
    }

    #[test]
    fn parents() {
        for (p, want) in [
            ("a/b/c", ("a/b", "c")),
            ("c", ("", "c")),
            ("/a/b/", ("a", "b")),
            ("", ("", "")),
        ] {
            assert_eq!(split_parent(p), want, "{p}");
        }
    }
}
