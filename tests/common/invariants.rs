//! The invariants every crash-safety and concurrency test checks after a recovery, written once
//! (tests/crash_safety.rs, tests/lock.rs; tests/invariants.rs shows each one can fail), on any
//! filesystem of testfs.rs (btrfs loop devices on the host, bcachefs and ZFS in the VM guests).

use super::testfs::TestFs;

/// What the filesystem must look like.
pub struct Expect<'a> {
    /// Old roots that must still exist, with a file each must contain.
    pub survivors: Vec<(String, String)>,
    /// A file the root kept by the run under test holds: in exactly one old root.
    pub kept_marker: &'a str,
    /// A file (path, content) inside a nested subvolume of that old root.
    pub kept_nested: Option<(&'a str, &'a str)>,
    /// How many old roots there must be, if known.
    pub total_old_roots: Option<usize>,
    /// `@persist/keep-me` must still say "persisted".
    pub persisted: bool,
}

/// Check every invariant; the first one broken, as a sentence.
pub fn invariants<F: TestFs + ?Sized>(fs: &mut F, e: &Expect) -> Result<(), String> {
    // The binary's own view agrees: nothing pending, nothing left over, nothing foreign.
    let (clean, entries) = fs.check_json(&[]);
    if !clean {
        return Err(format!("check --json says not clean: {entries:?}"));
    }
    // Exactly one root: a fresh, empty, writable subvolume.
    if !fs.exists("@root") {
        return Err("no root".into());
    }
    let root = fs.ls("@root");
    if !root.is_empty() {
        return Err(format!("root not fresh: {root:?}"));
    }
    if fs.is_readonly("@root") {
        return Err("root read-only".into());
    }
    // Nothing half-done left behind in the snapshots location.
    let dots: Vec<String> = fs
        .ls("@snapshots")
        .into_iter()
        .filter(|n| n.starts_with('.') && n != ".pins" && n != ".fresh-root")
        .collect();
    if !dots.is_empty() {
        return Err(format!("left in the snapshots location: {dots:?}"));
    }
    let olds = TestFs::old_roots(fs);
    if let Some(t) = e.total_old_roots {
        if olds.len() != t {
            return Err(format!("{} old roots, want {t}: {olds:?}", olds.len()));
        }
    }
    for (name, file) in &e.survivors {
        if !fs.exists(&format!("@snapshots/{name}/{file}")) {
            return Err(format!("old root {name} lost {file}"));
        }
    }
    let holding: Vec<String> = olds
        .iter()
        .filter(|o| fs.exists(&format!("@snapshots/{o}/{}", e.kept_marker)))
        .cloned()
        .collect();
    if holding.len() != 1 {
        return Err(format!(
            "the root's data ({}) is in {holding:?}",
            e.kept_marker
        ));
    }
    if let Some((path, content)) = e.kept_nested {
        let got = fs.read(&format!("@snapshots/{}/{path}", holding[0]));
        if got.as_deref() != Some(content) {
            return Err(format!("old root {} lost {path} ({got:?})", holding[0]));
        }
    }
    // Every old root and every nested subvolume in it is read-only; no stray subvolumes.
    for s in fs.subvols() {
        if s.starts_with("@snapshots/") {
            if !fs.is_readonly(&s) {
                return Err(format!("{s} writable"));
            }
        } else if !(s == "@root" || s == "@snapshots" || (e.persisted && s == "@persist")) {
            return Err(format!("stray subvolume {s}"));
        }
    }
    for p in fs.ls("@snapshots/.pins") {
        if !olds.contains(&p) {
            return Err(format!("pin {p} of an old root that does not exist"));
        }
    }
    if e.persisted && fs.read("@persist/keep-me").as_deref() != Some("persisted") {
        return Err("persisted data changed".into());
    }
    Ok(())
}
