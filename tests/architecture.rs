//! The shape of the program, checked: no module imports a module that imports it (directly or
//! through others), and `unsafe` appears only in the modules allowed to hold it.
//!
//! A module is a file (or directory) directly under src/: `src/backend/btrfs.rs` belongs to
//! `backend`… except the backends themselves, which are counted on their own (`backend::btrfs`),
//! so that a backend importing another backend is caught too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file belongs to, by its path below src/.
fn module_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [m] => m.clone(),
        [b, f, ..] if b == "backend" && f != "mod" => {
            // btrfs_ioctl and btrfs_inspect are parts of btrfs.
            let f = f.split('_').next().unwrap_or(f);
            format!("backend::{f}")
        }
        [m, ..] => m.clone(),
        [] => String::new(),
    }
}

/// Module names a file refers to through `crate::…` paths.
fn refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name == "backend" {
            let sub: String = rest[name.len()..]
                .strip_prefix("::")
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let sub = sub.split('_').next().unwrap_or("").to_string();
            if ["btrfs", "bcachefs", "zfs"].contains(&sub.as_str()) {
                out.insert(format!("backend::{sub}"));
                continue;
            }
        }
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(f.strip_prefix(&src).unwrap());
        let text = std::fs::read_to_string(&f).unwrap();
        // Tests may reach anywhere.
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text,
        };
        // Comments (doc links) are not imports.
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let e = g.entry(m.clone()).or_default();
        for r in refs(code) {
            if r != m && !(m.starts_with("backend::") && r == "backend") {
                e.insert(r);
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let g = graph();
    assert!(
        g.contains_key("protocol") && g.contains_key("backend::btrfs"),
        "{g:?}"
    );
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
    // No backend imports another backend.
    for (m, deps) in &g {
        if m.starts_with("backend::") {
            let others: Vec<&String> = deps.iter().filter(|d| d.starts_with("backend::")).collect();
            assert!(others.is_empty(), "{m} imports {others:?}");
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // The check above can fail: a planted cycle is found.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("engine".into()).or_default().insert("diff".into());
    g.entry("diff".into()).or_default().insert("status".into());
    g.entry("status".into())
        .or_default()
        .insert("engine".into());
    let c = find_cycle(&g).expect("a cycle");
    assert_eq!(c.first(), c.last(), "{c:?}");
    g.get_mut("status").unwrap().clear();
    assert_eq!(find_cycle(&g), None);
    assert_eq!(
        refs("use crate::backend::btrfs_ioctl as io; crate::diff::x"),
        ["backend::btrfs".to_string(), "diff".into()]
            .into_iter()
            .collect()
    );
}

#[test]
fn unsafe_only_where_allowed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap();
    assert!(main.contains("#![deny(unsafe_code)]"));
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut allowed = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("allow(unsafe_code)") {
            allowed.push(f.strip_prefix(&src).unwrap().display().to_string());
        }
        // Every unsafe block or impl says why it is sound.
        for (i, l) in text.lines().enumerate() {
            let t = l.trim_start();
            if (t.contains("unsafe {") || t.starts_with("unsafe impl")) && !t.starts_with("//") {
                let before: Vec<&str> = text.lines().take(i).collect();
                let window = before[before.len().saturating_sub(6)..].join("\n");
                assert!(
                    window.contains("SAFETY:") || l.contains("SAFETY:"),
                    "{}:{}: unsafe without a // SAFETY: comment",
                    f.display(),
                    i + 1
                );
            }
        }
    }
    allowed.sort();
    assert_eq!(
        allowed,
        vec![
            "backend/bcachefs_ioctl.rs",
            "backend/btrfs_ioctl.rs",
            "mounts.rs",
            "signals.rs",
            "zfs/ioctl.rs"
        ],
        "unsafe is allowed only in the ioctl modules, the one unshare call and restore's signal handler (sigaction)"
    );
}
