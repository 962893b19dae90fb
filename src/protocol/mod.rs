//! The rollback protocol, written once for every filesystem: read what is on disk through a
//! backend's primitives ([`scan`]), classify every entry of the snapshots location by its name
//! ([`crate::layout`]) and the backend's facts into a [`State`], compute a plan from it (pure:
//! [`plan`]), print or execute it ([`exec`]).
//!
//! The work is split by deadline (docs/protocol.md):
//! - `rollback`, in the initrd before `sysroot.mount`, does only what must happen before the root
//!   is mounted: build the next root, move the current root aside whole as `.kept.<name>` (or copy
//!   it, in audit mode), put the next root in place, make it durable.
//! - `finish`, after boot, does the rest: seal every `.kept.<name>` read-only as old root `<name>`,
//!   delete retired roots, prune by the retention policy, take the baseline. If it never ran, the
//!   next `rollback` does it after its own work (and a failure there does not fail the boot).

pub mod exec;
pub mod plan;

use crate::backend::{Backend, Facts, Fs, RawEntry, RootFacts};
use crate::config::Settings;
use crate::error::Result;
use crate::layout::{self, Class, Kind};
use std::ffi::{OsStr, OsString};

/// One direct entry of the snapshots location, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub class: Class,
    pub kind: Kind,
    pub facts: Facts,
    /// For parts (a bcachefs `N.nested` store): the entry they belong to.
    pub belongs_to: Option<String>,
}

impl Entry {
    /// The name as text; entries that are not UTF-8 are foreign and never used by name.
    pub fn name_str(&self) -> Option<&str> {
        self.name.to_str()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub facts: RootFacts,
    /// An entry (old root, or `.kept.*`) that is an unchanged copy of the root (audit mode).
    pub kept_as: Option<String>,
}

/// Everything the planner knows about one filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub fs: String,
    pub snapshots: String,
    pub snapshots_exists: bool,
    pub root: Option<Root>,
    pub entries: Vec<Entry>,
    /// `Some(false)` when a blank template is configured but missing.
    pub blank_exists: Option<bool>,
    /// Reasons to refuse any change.
    pub refusals: Vec<String>,
    /// `.kept.N` entries whose old root `N` exists and is, the backend says, a sealed copy of it
    /// (a crash inside a seal by copying).
    pub sealed_copies: Vec<String>,
}

/// An old root, or a root moved aside that will become one (`.kept.<name>`, not sealed yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldRoot<'a> {
    /// The old-root name (`2026-11-22T00-48-03Z`).
    pub name: &'a str,
    /// The entry that holds it now (`name`, or `.kept.<name>`).
    pub entry: &'a str,
    pub time: i64,
    pub seq: u32,
    pub sealed: bool,
    pub facts: &'a Facts,
}

impl State {
    /// Sealed old roots and pending `.kept.*` ones, oldest first.
    pub fn old_roots(&self) -> Vec<OldRoot<'_>> {
        let mut v: Vec<OldRoot> = self
            .entries
            .iter()
            .filter_map(|e| {
                let entry = e.name_str()?;
                match (&e.class, e.kind) {
                    (Class::OldRoot { time, seq }, Kind::OldRoot) => Some(OldRoot {
                        name: entry,
                        entry,
                        time: *time,
                        seq: *seq,
                        sealed: true,
                        facts: &e.facts,
                    }),
                    (Class::Kept { name, time, seq }, Kind::Pending) => Some(OldRoot {
                        name,
                        entry,
                        time: *time,
                        seq: *seq,
                        sealed: false,
                        facts: &e.facts,
                    }),
                    _ => None,
                }
            })
            .collect();
        v.sort_by(|a, b| (a.time, a.seq, a.sealed).cmp(&(b.time, b.seq, b.sealed)));
        v
    }

    /// The entry holding old root `name`: `name` itself when sealed, else `.kept.<name>`.
    pub fn find_old_root(&self, name: &str) -> Option<OldRoot<'_>> {
        let v = self.old_roots();
        v.iter()
            .find(|o| o.name == name && o.sealed)
            .or_else(|| v.iter().find(|o| o.name == name))
            .cloned()
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == OsStr::new(name))
    }

    pub fn has_baseline(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.kind == Kind::Baseline && e.belongs_to.is_none())
    }

    /// Nothing pending, nothing left over, nothing foreign, every old root read-only, a root.
    pub fn clean(&self) -> bool {
        self.root.is_some()
            && self.problems().is_empty()
            && self.entries.iter().all(|e| {
                matches!(
                    e.kind,
                    Kind::OldRoot | Kind::Baseline | Kind::Pins | Kind::State | Kind::Template
                )
            })
    }

    /// Things wrong with what is on disk (not work in progress): a writable old root, …
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for e in self.entries.iter().filter(|e| e.belongs_to.is_none()) {
            let n = crate::escape::name(&e.name);
            match e.kind {
                Kind::OldRoot if !e.facts.readonly => p.push(format!(
                    "old root {}/{n} is writable (it should be read-only)",
                    self.snapshots
                )),
                Kind::Baseline if !e.facts.readonly => p.push(format!(
                    "baseline {}/{n} is writable (it should be read-only)",
                    self.snapshots
                )),
                _ => {}
            }
        }
        p.extend(self.refusals.iter().cloned());
        p
    }
}

/// The kind of an entry from its class, the backend's facts and (for parts) the kind of its
/// owner. Pure; table-tested.
pub fn kind_of(class: &Class, facts: &Facts, owner: Option<Kind>, template: bool) -> Kind {
    if template {
        return Kind::Template;
    }
    match class {
        Class::OldRoot { .. } if facts.tree => Kind::OldRoot,
        Class::Kept { .. } | Class::RetiredRoot | Class::Deleting if facts.tree => Kind::Pending,
        Class::Incomplete | Class::NewRoot if facts.tree => Kind::Leftover,
        Class::Baseline if facts.tree => Kind::Baseline,
        Class::Pins if facts.dir => Kind::Pins,
        Class::Record if facts.file => Kind::State,
        Class::Store { .. } if facts.store => match owner {
            Some(k @ (Kind::OldRoot | Kind::Baseline | Kind::Pending)) => k,
            // The owner is half-built, or gone (an interrupted keep or prune).
            _ => Kind::Leftover,
        },
        _ => Kind::Foreign,
    }
}

/// The blank template when it is an entry of the snapshots location (ZFS `S/.template@blank`):
/// reported as a template, never as foreign.
fn template_entry(s: &Settings) -> Option<String> {
    let b = s.blank.as_deref()?;
    let fs = b.split('@').next()?;
    let rest = fs.strip_prefix(&s.snapshots)?.strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
}

/// Open the filesystem the settings name and read its state.
pub fn open(s: &Settings, now: i64) -> Result<(Box<dyn Backend>, State)> {
    open_locked(s, now, None)
}

/// [`open`], taking the lock (when given) after opening and before scanning, so the state read is
/// the one this command changes; held until the backend is closed (or the process ends).
pub fn open_locked(
    s: &Settings,
    now: i64,
    lock: Option<crate::lock::Request<'_>>,
) -> Result<(Box<dyn Backend>, State)> {
    let mut b = crate::backend::open(s, now)?;
    if let Some(l) = lock {
        let what = b.describe();
        if let Err(e) = crate::lock::acquire(b.lock_fd(), l.mode, &what, l.command, l.wait) {
            let _ = b.close();
            return Err(e);
        }
    }
    let st = scan(b.as_mut(), template_entry(s).as_deref())?;
    Ok((b, st))
}

/// Read everything the planner needs.
pub fn scan(fs: &mut dyn Fs, template: Option<&str>) -> Result<State> {
    let snapshots_exists = fs.snapshots_exists()?;
    let raw: Vec<RawEntry> = if snapshots_exists {
        fs.entries()?
    } else {
        Vec::new()
    };
    let entries = classify(raw, template);
    let root = match fs.root()? {
        None => None,
        Some(facts) => {
            let mut r = Root {
                facts,
                kept_as: None,
            };
            if !r.facts.fresh {
                r.kept_as = unchanged_copy(fs, &entries, r.facts.began)?;
            }
            Some(r)
        }
    };
    let mut sealed_copies = Vec::new();
    for e in &entries {
        if let (Class::Kept { name, .. }, Kind::Pending, Some(k)) = (&e.class, e.kind, e.name_str())
        {
            let sealed = entries
                .iter()
                .any(|o| o.kind == Kind::OldRoot && o.name == OsStr::new(name));
            if sealed && fs.is_sealed_copy(k, name)? {
                sealed_copies.push(k.to_string());
            }
        }
    }
    Ok(State {
        sealed_copies,
        fs: fs.describe(),
        snapshots: fs.snapshots_label(),
        snapshots_exists,
        root,
        entries,
        blank_exists: fs.blank_exists()?,
        refusals: fs.refusals()?,
    })
}

/// Classify raw entries (pure). `template`: the name of an entry that is the configured blank
/// template (ZFS keeps it in the snapshots location).
pub fn classify(raw: Vec<RawEntry>, template: Option<&str>) -> Vec<Entry> {
    let classes: Vec<Class> = raw.iter().map(|r| layout::classify(&r.name)).collect();
    // Kinds of non-parts first, then parts from their owners.
    let mut kinds: Vec<Kind> = raw
        .iter()
        .zip(&classes)
        .map(|(r, c)| {
            let t = template.is_some_and(|t| r.name == OsStr::new(t));
            kind_of(c, &r.facts, None, t)
        })
        .collect();
    let mut belongs: Vec<Option<String>> = vec![None; raw.len()];
    for i in 0..raw.len() {
        if let Class::Store { owner } = &classes[i] {
            let o = raw
                .iter()
                .position(|r| r.name == OsStr::new(owner))
                .map(|j| kinds[j]);
            kinds[i] = kind_of(&classes[i], &raw[i].facts, o, false);
            if o.is_some() {
                belongs[i] = Some(owner.clone());
            }
        }
    }
    raw.into_iter()
        .zip(classes)
        .zip(kinds)
        .zip(belongs)
        .map(|(((r, class), kind), belongs_to)| Entry {
            name: r.name,
            class,
            kind,
            facts: r.facts,
            belongs_to,
        })
        .collect()
}

/// The newest old root (or pending one) named after `began` that the backend says is an unchanged
/// copy of the root.
fn unchanged_copy(fs: &mut dyn Fs, entries: &[Entry], began: i64) -> Result<Option<String>> {
    let cand = entries
        .iter()
        .filter_map(|e| match (&e.class, e.kind) {
            (Class::OldRoot { time, seq }, Kind::OldRoot)
            | (Class::Kept { time, seq, .. }, Kind::Pending)
                if *time == began =>
            {
                Some((*seq, e.name_str()?))
            }
            _ => None,
        })
        .max_by_key(|(seq, n)| (*seq, n.starts_with(layout::KEPT_PREFIX)));
    match cand {
        Some((_, n)) if fs.root_unchanged_since_copy(n)? => Ok(Some(n.to_string())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(readonly: bool) -> Facts {
        Facts {
            tree: true,
            readonly,
            ..Default::default()
        }
    }

    #[test]
    fn kinds() {
        let t = crate::timefmt::parse_old_root_name("2026-11-22T00-48-03Z")
            .unwrap()
            .0;
        let old = Class::OldRoot { time: t, seq: 1 };
        let kept = Class::Kept {
            name: "x".into(),
            time: t,
            seq: 1,
        };
        let store = Class::Store { owner: "o".into() };
        let st = Facts {
            store: true,
            ..Default::default()
        };
        let dir = Facts {
            dir: true,
            ..Default::default()
        };
        let file = Facts {
            file: true,
            ..Default::default()
        };
        let none = Facts::default();
        for (what, class, facts, owner, template, want) in [
            ("old root", &old, &tree(true), None, false, Kind::OldRoot),
            (
                "writable old root is still one (a problem)",
                &old,
                &tree(false),
                None,
                false,
                Kind::OldRoot,
            ),
            (
                "old-root name, plain directory",
                &old,
                &dir,
                None,
                false,
                Kind::Foreign,
            ),
            ("kept", &kept, &tree(false), None, false, Kind::Pending),
            ("kept, plain dir", &kept, &dir, None, false, Kind::Foreign),
            (
                "retired",
                &Class::RetiredRoot,
                &tree(false),
                None,
                false,
                Kind::Pending,
            ),
            (
                "deleting",
                &Class::Deleting,
                &tree(true),
                None,
                false,
                Kind::Pending,
            ),
            (
                "incomplete",
                &Class::Incomplete,
                &tree(false),
                None,
                false,
                Kind::Leftover,
            ),
            (
                "incomplete file",
                &Class::Incomplete,
                &file,
                None,
                false,
                Kind::Foreign,
            ),
            (
                "new root",
                &Class::NewRoot,
                &tree(false),
                None,
                false,
                Kind::Leftover,
            ),
            (
                "baseline",
                &Class::Baseline,
                &tree(true),
                None,
                false,
                Kind::Baseline,
            ),
            ("pins", &Class::Pins, &dir, None, false, Kind::Pins),
            (
                "pins as a file",
                &Class::Pins,
                &file,
                None,
                false,
                Kind::Foreign,
            ),
            ("record", &Class::Record, &file, None, false, Kind::State),
            (
                "store of an old root",
                &store,
                &st,
                Some(Kind::OldRoot),
                false,
                Kind::OldRoot,
            ),
            (
                "store of a pending entry",
                &store,
                &st,
                Some(Kind::Pending),
                false,
                Kind::Pending,
            ),
            (
                "store of a leftover",
                &store,
                &st,
                Some(Kind::Leftover),
                false,
                Kind::Leftover,
            ),
            ("orphan store", &store, &st, None, false, Kind::Leftover),
            (
                "store-named plain subvolume",
                &store,
                &tree(false),
                None,
                false,
                Kind::Foreign,
            ),
            (
                "foreign",
                &Class::Foreign,
                &tree(false),
                None,
                false,
                Kind::Foreign,
            ),
            (
                "template",
                &Class::Foreign,
                &tree(false),
                None,
                true,
                Kind::Template,
            ),
            ("nothing known", &old, &none, None, false, Kind::Foreign),
        ] {
            assert_eq!(kind_of(class, facts, owner, template), want, "{what}");
        }
    }

    #[test]
    fn classify_parts_and_clean() {
        let raw = |n: &str, f: Facts| RawEntry {
            name: n.into(),
            facts: f,
        };
        let st = Facts {
            store: true,
            ..Default::default()
        };
        let es = classify(
            vec![
                raw("2026-11-22T00-48-03Z", tree(true)),
                raw("2026-11-22T00-48-03Z.nested", st.clone()),
                raw("2026-11-21T00-00-00Z.nested", st.clone()),
                raw(".template", tree(true)),
            ],
            Some(".template"),
        );
        let k: Vec<(Kind, Option<&str>)> = es
            .iter()
            .map(|e| (e.kind, e.belongs_to.as_deref()))
            .collect();
        assert_eq!(
            k,
            vec![
                (Kind::OldRoot, None),
                (Kind::OldRoot, Some("2026-11-22T00-48-03Z")),
                (Kind::Leftover, None),
                (Kind::Template, None),
            ]
        );
        let mut s = State {
            snapshots: "@snapshots".into(),
            root: Some(Root {
                facts: RootFacts {
                    began: 0,
                    fresh: true,
                    id: "256".into(),
                    describe: "@root".into(),
                    mounted_at: None,
                },
                kept_as: None,
            }),
            entries: es,
            ..Default::default()
        };
        assert!(!s.clean(), "an orphan store is a leftover");
        s.entries.remove(2);
        assert!(s.clean());
        s.entries[0].facts.readonly = false;
        assert!(!s.clean());
        assert_eq!(s.problems().len(), 1, "{:?}", s.problems());
        s.entries[0].facts.readonly = true;
        s.root = None;
        assert!(!s.clean(), "no root");
    }
}
