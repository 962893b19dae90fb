//! The report `diff` builds (groups with counts, bytes and verdicts; what each noise rule hid)
//! and its three renderings: for people, `--json`, and `--nix` (an `environment.persistence`
//! block in the shape of nix-community/impermanence).

use super::classify::{Group, Verdict};
use super::noise::Rule;
use crate::json;
use crate::timefmt::human_bytes;
use std::collections::BTreeMap;

/// One state directory (or file) with what is in it.
#[derive(Debug, Clone)]
pub struct GroupStat {
    pub group: Group,
    /// A directory (persist under `directories`) or a single file (`files`).
    pub is_dir: bool,
    /// Non-directory entries (files, symlinks, devices) and empty directories below it.
    pub files: u64,
    pub bytes: u64,
    /// The largest entries: (bytes, path), largest first, at most [`LARGEST`].
    pub largest: Vec<(u64, String)>,
}

pub const LARGEST: usize = 3;

/// How many entries and bytes a noise rule hid; `None` when not counted (btrfs generation
/// search never looks at unchanged files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hidden {
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `root @root`, `old root 2026-…`, `/ (tmpfs)`.
    pub source: String,
    /// How unchanged entries were recognised (or `walk`).
    pub method: String,
    pub groups: Vec<GroupStat>,
    pub hidden: BTreeMap<Rule, Hidden>,
}

impl Report {
    pub fn files(&self) -> u64 {
        self.groups.iter().map(|g| g.files).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.groups.iter().map(|g| g.bytes).sum()
    }
    /// Largest first, then by path.
    pub fn sort(&mut self) {
        self.groups.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.files.cmp(&a.files))
                .then(a.group.path.cmp(&b.group.path))
        });
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            o.push(',');
        }
        o.push(c);
    }
    o
}

fn entries(n: u64) -> String {
    format!(
        "{} {}",
        thousands(n),
        if n == 1 { "entry" } else { "entries" }
    )
}

/// The report for people.
pub fn human(r: &Report, verbose: bool) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "{} ({}): {} files, {} in {} places\n",
        r.source,
        r.method,
        thousands(r.files()),
        human_bytes(r.bytes()),
        r.groups.len()
    ));
    if !r.groups.is_empty() {
        o.push_str(&format!(
            "\n{:<17} {:>8} {:>10}  {}\n",
            "VERDICT", "FILES", "SIZE", "PATH  — WHY"
        ));
    }
    for g in &r.groups {
        o.push_str(&format!(
            "{:<17} {:>8} {:>10}  {}{}  — {}\n",
            g.group.verdict.as_str(),
            thousands(g.files),
            human_bytes(g.bytes),
            g.group.path,
            if g.is_dir { "/" } else { "" },
            g.group.reason
        ));
        if verbose {
            for (b, p) in &g.largest {
                o.push_str(&format!("{:>38}  {p} ({})\n", "", human_bytes(*b)));
            }
        }
    }
    o.push('\n');
    for (rule, h) in &r.hidden {
        let what = match (h.entries, h.bytes) {
            (Some(n), Some(b)) => format!("{} ({})", entries(n), human_bytes(b)),
            (Some(n), None) => entries(n),
            _ => "not counted (never read)".to_string(),
        };
        o.push_str(&format!("hidden: {:<32} {}\n", what, rule.describe()));
    }
    if r.groups.iter().any(|g| g.group.verdict == Verdict::Persist) {
        o.push_str(
            "\n`ephemeral-root diff --nix` prints the \"persist\" places as an environment.persistence block.\n",
        );
    }
    o
}

/// `--json`.
pub fn json(r: &Report) -> String {
    let groups: Vec<String> = r
        .groups
        .iter()
        .map(|g| {
            json::object(&[
                ("path", json::string(&g.group.path)),
                (
                    "kind",
                    json::string(if g.is_dir { "directory" } else { "file" }),
                ),
                ("verdict", json::string(g.group.verdict.as_str())),
                ("reason", json::string(g.group.reason)),
                ("files", g.files.to_string()),
                ("bytes", g.bytes.to_string()),
                (
                    "user",
                    json::opt_string(g.group.home.as_ref().map(|h| h.0.as_str())),
                ),
                (
                    "largest",
                    json::array(
                        &g.largest
                            .iter()
                            .map(|(b, p)| {
                                json::object(&[("path", json::string(p)), ("bytes", b.to_string())])
                            })
                            .collect::<Vec<_>>(),
                    ),
                ),
            ])
        })
        .collect();
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "null".into());
    let hidden: Vec<String> = r
        .hidden
        .iter()
        .map(|(rule, h)| {
            json::object(&[
                ("rule", json::string(rule.id())),
                ("description", json::string(rule.describe())),
                ("entries", opt(h.entries)),
                ("bytes", opt(h.bytes)),
            ])
        })
        .collect();
    json::object(&[
        ("source", json::string(&r.source)),
        ("method", json::string(&r.method)),
        ("files", r.files().to_string()),
        ("bytes", r.bytes().to_string()),
        ("groups", json::array(&groups)),
        ("hidden", json::array(&hidden)),
    ])
}

/// A Nix string literal: `"` and `\` escaped, `${` kept from starting an interpolation.
pub fn nix_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => o.push_str("\\$"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// An attribute name: bare when it is a plain identifier (and not a keyword), quoted otherwise.
pub fn nix_attr(s: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or",
    ];
    let mut cs = s.chars();
    let ident = cs
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''));
    if ident && !KEYWORDS.contains(&s) {
        s.to_string()
    } else {
        nix_string(s)
    }
}

fn nix_list(o: &mut String, indent: &str, name: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    o.push_str(&format!("{indent}{name} = [\n"));
    for i in items {
        o.push_str(&format!("{indent}  {}\n", nix_string(i)));
    }
    o.push_str(&format!("{indent}];\n"));
}

/// `--nix`: the places with verdict "persist", ready to paste into a NixOS module. Home paths go
/// under `users.<name>` (relative to the home directory), which makes impermanence create the
/// parent directories owned by that user; `/root/…` goes under `users.root`.
pub fn nix(r: &Report) -> String {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut users: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut groups: Vec<&GroupStat> = r
        .groups
        .iter()
        .filter(|g| g.group.verdict == Verdict::Persist)
        .collect();
    groups.sort_by(|a, b| a.group.path.cmp(&b.group.path));
    for g in groups {
        match &g.group.home {
            Some((user, _, rel)) => {
                let u = users.entry(user.clone()).or_default();
                if g.is_dir { &mut u.0 } else { &mut u.1 }.push(rel.clone());
            }
            None => if g.is_dir { &mut dirs } else { &mut files }.push(g.group.path.clone()),
        }
    }
    let mut o = String::new();
    o.push_str(&format!(
        "# Suggested by `ephemeral-root diff` from {} ({} places judged \"persist\"); review before use.\n",
        r.source,
        dirs.len() + files.len() + users.values().map(|u| u.0.len() + u.1.len()).sum::<usize>()
    ));
    o.push_str("environment.persistence.\"/persist\" = {\n");
    nix_list(&mut o, "  ", "directories", &dirs);
    nix_list(&mut o, "  ", "files", &files);
    for (user, (d, f)) in &users {
        o.push_str(&format!("  users.{} = {{\n", nix_attr(user)));
        nix_list(&mut o, "    ", "directories", d);
        nix_list(&mut o, "    ", "files", f);
        o.push_str("  };\n");
    }
    o.push_str("};\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_escaping() {
        let cases = [
            ("/var/lib/x", "\"/var/lib/x\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("${x}", "\"\\${x}\""),
            ("$x", "\"$x\""),
            ("a\nb", "\"a\\nb\""),
        ];
        for (i, want) in cases {
            assert_eq!(nix_string(i), want, "{i:?}");
        }
        assert_eq!(nix_attr("alice"), "alice");
        assert_eq!(nix_attr("a-b_c'"), "a-b_c'");
        assert_eq!(nix_attr("in"), "\"in\"");
        assert_eq!(nix_attr("1x"), "\"1x\"");
        assert_eq!(nix_attr("john.doe"), "\"john.doe\"");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn nix_block_shape() {
        let g = |p: &str, dir: bool| GroupStat {
            group: super::super::classify::group_of(p),
            is_dir: dir,
            files: 1,
            bytes: 1,
            largest: vec![],
        };
        let r = Report {
            source: "root @root".into(),
            method: "walk".into(),
            groups: vec![
                g("/var/lib/postgresql", true),
                g("/etc/machine-id", false),
                g("/home/alice/.ssh", true),
                g("/home/alice/notes.txt", false),
                g("/var/cache/nginx", true),
            ],
            hidden: BTreeMap::new(),
        };
        let n = nix(&r);
        assert!(n.contains("environment.persistence.\"/persist\" = {\n  directories = [\n    \"/var/lib/postgresql\"\n  ];\n  files = [\n    \"/etc/machine-id\"\n  ];\n"), "{n}");
        assert!(n.contains("  users.alice = {\n    directories = [\n      \".ssh\"\n    ];\n    files = [\n      \"notes.txt\"\n    ];\n  };\n"), "{n}");
        assert!(!n.contains("nginx"));
    }
}
