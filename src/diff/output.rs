//! The report `diff` builds (groups with counts, bytes and verdicts; what each noise rule hid)
//! and its three renderings: for people, `--json`, and `--nix` (an `environment.persistence`
//! block in the shape of nix-community/impermanence).

use super::classify::{Group, Verdict};
use super::noise::Rule;
use crate::escape::{self, escape};
use crate::json;
use crate::timefmt::human_bytes;
use crate::walk::Problem;
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
    pub largest: Vec<(u64, Vec<u8>)>,
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
    /// Branches that could not be listed (at most [`super::INCOMPLETE_SHOWN`]) and how many more.
    pub incomplete: Vec<(Vec<u8>, Problem)>,
    pub incomplete_more: u64,
}

impl Report {
    pub fn files(&self) -> u64 {
        self.groups.iter().map(|g| g.files).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.groups.iter().map(|g| g.bytes).sum()
    }
    /// How many branches could not be listed.
    pub fn incomplete_count(&self) -> u64 {
        self.incomplete.len() as u64 + self.incomplete_more
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
            escape(&g.group.path),
            if g.is_dir { "/" } else { "" },
            g.group.reason
        ));
        if verbose {
            for (b, p) in &g.largest {
                o.push_str(&format!(
                    "{:>38}  {} ({})\n",
                    "",
                    escape(p),
                    human_bytes(*b)
                ));
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
    if r.incomplete_count() > 0 {
        o.push('\n');
        for (p, why) in &r.incomplete {
            o.push_str(&format!(
                "incomplete: gave up on {}: {}\n",
                escape::cut(p),
                why.describe()
            ));
        }
        if r.incomplete_more > 0 {
            o.push_str(&format!(
                "incomplete: and {} more branches not listed\n",
                r.incomplete_more
            ));
        }
    }
    if r.groups.iter().any(|g| g.group.verdict == Verdict::Persist) {
        o.push_str(
            "\n`ephemeral-root diff --nix` prints the \"persist\" places as an environment.persistence block.\n",
        );
    }
    o
}

/// The JSON fields naming one group (path, kind, verdict, reason), shared by `diff` and `report`.
pub fn group_fields(g: &Group, is_dir: bool) -> Vec<(&'static str, String)> {
    let mut f = json::name_fields("path", "path_hex", &g.path);
    f.extend([
        (
            "kind",
            json::string(if is_dir { "directory" } else { "file" }),
        ),
        ("verdict", json::string(g.verdict.as_str())),
        ("reason", json::string(g.reason)),
    ]);
    f
}

/// The branches a walk gave up on, as JSON objects (`path`, `why`), shared by `diff` and `report`.
pub fn incomplete_json(list: &[(Vec<u8>, Problem)]) -> Vec<String> {
    list.iter()
        .map(|(p, why)| {
            let mut o = json::name_fields("path", "path_hex", p);
            o.push(("why", json::string(&why.describe())));
            json::object(&o)
        })
        .collect()
}

/// `--json`. Names are bytes: see [`json::name_fields`] for how a name that is not UTF-8 is
/// written (a readable `path` plus the exact bytes in `path_hex`). The fields of the object; the
/// caller adds its own (`persistence`) and writes it with [`json::object`].
pub fn json_fields(r: &Report) -> Vec<(&'static str, String)> {
    let groups: Vec<String> = r
        .groups
        .iter()
        .map(|g| {
            let mut f = group_fields(&g.group, g.is_dir);
            f.extend([
                ("files", g.files.to_string()),
                ("bytes", g.bytes.to_string()),
            ]);
            match g.group.home.as_ref() {
                Some(h) => f.extend(json::name_fields("user", "user_hex", &h.0)),
                None => f.push(("user", "null".into())),
            }
            f.push((
                "largest",
                json::array(
                    &g.largest
                        .iter()
                        .map(|(b, p)| {
                            let mut o = json::name_fields("path", "path_hex", p);
                            o.push(("bytes", b.to_string()));
                            json::object(&o)
                        })
                        .collect::<Vec<_>>(),
                ),
            ));
            json::object(&f)
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
    let incomplete = incomplete_json(&r.incomplete);
    vec![
        ("source", json::string(&r.source)),
        ("method", json::string(&r.method)),
        ("files", r.files().to_string()),
        ("bytes", r.bytes().to_string()),
        ("groups", json::array(&groups)),
        ("hidden", json::array(&hidden)),
        ("incomplete", json::array(&incomplete)),
        ("incomplete_more", r.incomplete_more.to_string()),
    ]
}

/// A Nix string literal for a name: `"` and `\` escaped, `${` kept from starting an
/// interpolation, newline, CR and tab as `\n` `\r` `\t`. `None` for a name Nix cannot hold
/// printably: not UTF-8 (Nix has no byte escapes), or with another control character, a C1
/// control or a bidirectional override (written raw they would act on the terminal).
pub fn nix_string(b: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(b).ok()?;
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
            c if escape::dangerous(c) => return None,
            c => o.push(c),
        }
    }
    o.push('"');
    Some(o)
}

/// An attribute name: bare when it is a plain identifier (and not a keyword), quoted otherwise;
/// `None` when [`nix_string`] cannot write it.
pub fn nix_attr(b: &[u8]) -> Option<String> {
    const KEYWORDS: &[&[u8]] = &[
        b"if", b"then", b"else", b"assert", b"with", b"let", b"in", b"rec", b"inherit", b"or",
    ];
    let ident = b
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'\''));
    if ident && !KEYWORDS.contains(&b) {
        std::str::from_utf8(b).ok().map(str::to_string)
    } else {
        nix_string(b)
    }
}

fn nix_list(o: &mut String, indent: &str, name: &str, items: &[Vec<u8>]) {
    if items.is_empty() {
        return;
    }
    o.push_str(&format!("{indent}{name} = [\n"));
    for i in items {
        // Callers only pass names nix_string can write.
        if let Some(s) = nix_string(i) {
            o.push_str(&format!("{indent}  {s}\n"));
        }
    }
    o.push_str(&format!("{indent}];\n"));
}

/// `--nix`: the places with verdict "persist", ready to paste into a NixOS module. Home paths go
/// under `users.<name>` (relative to the home directory), which makes impermanence create the
/// parent directories owned by that user; `/root/…` goes under `users.root`. A place whose name
/// a Nix string cannot hold printably (see [`nix_string`]) is listed in a comment instead,
/// escaped as in plain output.
pub fn nix(r: &Report) -> String {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut left_out: Vec<&[u8]> = Vec::new();
    let mut users: BTreeMap<Vec<u8>, (Vec<Vec<u8>>, Vec<Vec<u8>>)> = BTreeMap::new();
    let mut groups: Vec<&GroupStat> = r
        .groups
        .iter()
        .filter(|g| g.group.verdict == Verdict::Persist)
        .collect();
    groups.sort_by(|a, b| a.group.path.cmp(&b.group.path));
    for g in groups {
        match &g.group.home {
            Some((user, _, rel)) if nix_attr(user).is_some() && nix_string(rel).is_some() => {
                let u = users.entry(user.clone()).or_default();
                if g.is_dir { &mut u.0 } else { &mut u.1 }.push(rel.clone());
            }
            None if nix_string(&g.group.path).is_some() => {
                if g.is_dir { &mut dirs } else { &mut files }.push(g.group.path.clone())
            }
            _ => left_out.push(&g.group.path),
        }
    }
    let mut o = String::new();
    o.push_str(&format!(
        "# Suggested by `ephemeral-root diff` from {} ({} places judged \"persist\"); review before use.\n",
        escape::cut_str(&r.source),
        dirs.len() + files.len() + left_out.len() + users.values().map(|u| u.0.len() + u.1.len()).sum::<usize>()
    ));
    for p in &left_out {
        o.push_str(&format!(
            "# left out, a Nix string cannot hold this name printably (add it by hand): {}\n",
            escape(p)
        ));
    }
    o.push_str("environment.persistence.\"/persist\" = {\n");
    nix_list(&mut o, "  ", "directories", &dirs);
    nix_list(&mut o, "  ", "files", &files);
    for (user, (d, f)) in &users {
        o.push_str(&format!(
            "  users.{} = {{\n",
            nix_attr(user).unwrap_or_default()
        ));
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
            assert_eq!(nix_string(i.as_bytes()).as_deref(), Some(want), "{i:?}");
        }
        for bad in [
            &b"\xff"[..],
            b"\x1b[31m",
            "\u{9b}".as_bytes(),
            "\u{202e}".as_bytes(),
            b"\x00",
        ] {
            assert_eq!(nix_string(bad), None, "{bad:?}");
        }
        let attr = |s: &str| nix_attr(s.as_bytes()).unwrap();
        assert_eq!(attr("alice"), "alice");
        assert_eq!(attr("a-b_c'"), "a-b_c'");
        assert_eq!(attr("in"), "\"in\"");
        assert_eq!(attr("1x"), "\"1x\"");
        assert_eq!(attr("john.doe"), "\"john.doe\"");
        assert_eq!(nix_attr(b"\xffx"), None);
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
            group: super::super::classify::group_of(p.as_bytes()),
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
                g("/var/lib/\u{1b}[31mred", true),
            ],
            hidden: BTreeMap::new(),
            ..Default::default()
        };
        let n = nix(&r);
        assert!(n.contains("environment.persistence.\"/persist\" = {\n  directories = [\n    \"/var/lib/postgresql\"\n  ];\n  files = [\n    \"/etc/machine-id\"\n  ];\n"), "{n}");
        assert!(n.contains("  users.alice = {\n    directories = [\n      \".ssh\"\n    ];\n    files = [\n      \"notes.txt\"\n    ];\n  };\n"), "{n}");
        assert!(!n.contains("nginx"));
        assert!(
            n.contains("# left out, a Nix string cannot hold this name printably (add it by hand): /var/lib/\\x1b[31mred\n"),
            "{n}"
        );
        assert!(!n.contains('\u{1b}'));
    }
}
