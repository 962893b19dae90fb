//! The findings as lines for people (`diff`, `check`), as `--json`, and as `status` lines.

use super::{Findings, Missing};
use crate::escape::cut;
use crate::json;
use crate::timefmt::human_bytes;

fn store_of(f: &Findings, p: &[u8]) -> String {
    let mut v = f.store.clone().unwrap_or_default();
    v.extend_from_slice(p);
    cut(&v)
}

fn missing_line(f: &Findings, m: &Missing) -> String {
    let p = cut(&m.path);
    let sp = store_of(f, &m.path);
    let fix = if m.on_root {
        format!("it is on the root now: `ephemeral-root persist {p} --merge` copies it there")
    } else {
        format!(
            "it is not on the root either: restore it into {sp} (`ephemeral-root restore OLD_ROOT {p} --to {sp}`) or from a backup"
        )
    };
    match (m.declared, m.critical) {
        (true, Some(why)) => format!(
            "error: {p} is declared persistent but missing from the store ({sp}), and it is critical ({why}): the next boot starts without it; {fix}"
        ),
        (true, None) => format!(
            "warning: {p} is declared persistent but missing from the store ({sp}): the next boot starts with it empty; {fix}"
        ),
        (false, why) => format!(
            "error: {p} is critical ({}) but not declared persistent: it is on the root, and the next boot erases it; `ephemeral-root persist {p}` copies it to the store and prints the lines to declare it",
            why.unwrap_or("listed under `critical`")
        ),
    }
}

/// One line per finding, most severe first (`error:`, `warning:`, `info:`), under a heading.
pub fn human(f: &Findings) -> String {
    let mut o = String::new();
    match &f.store {
        Some(s) => o.push_str(&format!("persistence (store {}):\n", cut(s))),
        None => o.push_str("persistence:\n"),
    }
    let mut lines: Vec<(u8, String)> = Vec::new();
    for m in &f.missing {
        let l = missing_line(f, m);
        lines.push((if l.starts_with("error") { 0 } else { 1 }, l));
    }
    for h in &f.hidden {
        let p = cut(&h.path);
        for (c, why) in &h.critical {
            lines.push((
                0,
                format!(
                    "error: {} is on the root under {p} but not in the store, and it is critical ({why}): {}; run `ephemeral-root persist {p} --merge`",
                    cut(c),
                    if h.mounted {
                        "hidden by the bind mount, erased at the next boot"
                    } else {
                        "the next boot mounts the store's copy over it and erases it"
                    }
                ),
            ));
        }
        if h.entries > 0 {
            let eg: Vec<String> = h.examples.iter().map(|e| cut(e)).collect();
            let more = if h.entries as usize > eg.len() {
                ", …"
            } else {
                ""
            };
            lines.push((
                1,
                format!(
                    "warning: {p}: {} entries ({}) on the root are not in {} (e.g. {}{more}): {}; run `ephemeral-root persist {p} --merge` or delete it",
                    h.entries,
                    human_bytes(h.bytes),
                    store_of(f, &h.path),
                    eg.join(", "),
                    if h.mounted {
                        "hidden by the bind mount, erased at the next boot"
                    } else {
                        "not mounted yet: the next boot mounts the store's copy over them and erases them"
                    }
                ),
            ));
        }
        if h.superseded > 0 {
            lines.push((
                2,
                format!(
                    "info: {p}: {} entries on the root are older versions of what {} holds (superseded; erased at the next boot)",
                    h.superseded,
                    store_of(f, &h.path)
                ),
            ));
        }
    }
    for s in &f.stray {
        lines.push((
            2,
            format!(
                "info: {}: {} in {} entries that no persisted path covers (stray: nothing mounts it; remove it if it is not needed)",
                store_of(f, &s.path),
                human_bytes(s.bytes),
                s.entries
            ),
        ));
    }
    for n in &f.notes {
        lines.push((1, format!("warning: {n}")));
    }
    lines.sort_by_key(|l| l.0);
    if lines.is_empty() {
        o.push_str("  ok: every persisted path is in the store, nothing is hidden under one, nothing stray\n");
    }
    for (_, l) in lines {
        o.push_str("  ");
        o.push_str(&l);
        o.push('\n');
    }
    o
}

/// `--json`: `{"store", "errors", "hidden": [...], "missing": [...], "stray": [...], "notes"}`;
/// paths as [`json::name_fields`] (`path`, plus `path_hex` when not UTF-8).
pub fn json(f: &Findings) -> String {
    let hidden: Vec<String> = f
        .hidden
        .iter()
        .map(|h| {
            let mut o = json::name_fields("path", "path_hex", &h.path);
            o.extend([
                ("mounted", h.mounted.to_string()),
                ("entries", h.entries.to_string()),
                ("bytes", h.bytes.to_string()),
                ("superseded", h.superseded.to_string()),
                (
                    "examples",
                    json::array(
                        &h.examples
                            .iter()
                            .map(|e| json::object(&json::name_fields("path", "path_hex", e)))
                            .collect::<Vec<_>>(),
                    ),
                ),
                (
                    "critical",
                    json::array(
                        &h.critical
                            .iter()
                            .map(|(c, why)| {
                                let mut o = json::name_fields("path", "path_hex", c);
                                o.push(("why", json::string(why)));
                                json::object(&o)
                            })
                            .collect::<Vec<_>>(),
                    ),
                ),
            ]);
            json::object(&o)
        })
        .collect();
    let missing: Vec<String> = f
        .missing
        .iter()
        .map(|m| {
            let mut o = json::name_fields("path", "path_hex", &m.path);
            o.extend([
                ("critical", m.critical.is_some().to_string()),
                ("why", json::opt_string(m.critical)),
                ("declared", m.declared.to_string()),
                ("on_root", m.on_root.to_string()),
            ]);
            json::object(&o)
        })
        .collect();
    let stray: Vec<String> = f
        .stray
        .iter()
        .map(|s| {
            let mut o = json::name_fields("path", "path_hex", &s.path);
            o.extend([
                ("entries", s.entries.to_string()),
                ("bytes", s.bytes.to_string()),
            ]);
            json::object(&o)
        })
        .collect();
    let mut o = match &f.store {
        Some(s) => json::name_fields("store", "store_hex", s),
        None => vec![("store", "null".to_string())],
    };
    o.extend([
        ("errors", f.errors().to_string()),
        ("hidden", json::array(&hidden)),
        ("missing", json::array(&missing)),
        ("stray", json::array(&stray)),
        (
            "notes",
            json::array(&f.notes.iter().map(|n| json::string(n)).collect::<Vec<_>>()),
        ),
    ]);
    json::object(&o)
}

/// The `status` lines.
pub fn status_lines(f: &Findings) -> String {
    if f.store.is_none() {
        return f
            .notes
            .iter()
            .map(|n| format!("persistence:     not checked ({n})\n"))
            .collect();
    }
    let crit = f.missing_critical();
    format!(
        "hidden:          {} entries, {} on the root under persisted paths, not in the store{}\n\
         missing:         {} persisted paths not in the store{}\n\
         stray:           {} in the store that no persisted path covers\n",
        f.hidden_entries(),
        human_bytes(f.hidden_bytes()),
        if f.hidden_entries() > 0 {
            " (`ephemeral-root diff` names them)"
        } else {
            ""
        },
        f.missing_persisted(),
        if crit > 0 {
            format!(", {crit} CRITICAL (`ephemeral-root check` names them)")
        } else {
            String::new()
        },
        human_bytes(f.stray_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Hidden, Stray};
    use super::*;

    fn sample() -> Findings {
        Findings {
            store: Some(b"/persist".to_vec()),
            hidden: vec![Hidden {
                path: b"/var/lib/app".to_vec(),
                mounted: true,
                entries: 2,
                bytes: 2048,
                superseded: 1,
                examples: vec![
                    b"/var/lib/app/a".to_vec(),
                    b"/var/lib/app/\x1b[31m".to_vec(),
                ],
                critical: vec![(
                    b"/var/lib/app/server.key".to_vec(),
                    "named like a key or keyfile (a LUKS or service key)",
                )],
            }],
            missing: vec![
                Missing {
                    path: b"/boot/keyfile".to_vec(),
                    critical: Some("under /boot"),
                    declared: true,
                    on_root: false,
                },
                Missing {
                    path: b"/var/lib/x".to_vec(),
                    critical: None,
                    declared: true,
                    on_root: true,
                },
            ],
            stray: vec![Stray {
                path: b"/var/lib/old".to_vec(),
                entries: 3,
                bytes: 5 << 20,
            }],
            notes: vec![],
        }
    }

    #[test]
    fn lines_for_people() {
        let f = sample();
        let h = human(&f);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], "persistence (store /persist):");
        assert!(lines[1].starts_with("  error: /boot/keyfile is declared persistent but missing from the store (/persist/boot/keyfile), and it is critical (under /boot)"), "{h}");
        assert!(
            lines[1].contains(
                "`ephemeral-root restore OLD_ROOT /boot/keyfile --to /persist/boot/keyfile`"
            ),
            "{h}"
        );
        assert!(lines[2].starts_with("  error: /var/lib/app/server.key is on the root under /var/lib/app but not in the store"), "{h}");
        assert!(h.contains("  warning: /var/lib/x is declared persistent but missing from the store (/persist/var/lib/x): the next boot starts with it empty; it is on the root now: `ephemeral-root persist /var/lib/x --merge` copies it there\n"), "{h}");
        assert!(h.contains("  warning: /var/lib/app: 2 entries (2.0 KiB) on the root are not in /persist/var/lib/app (e.g. /var/lib/app/a, /var/lib/app/\\x1b[31m): hidden by the bind mount, erased at the next boot; run `ephemeral-root persist /var/lib/app --merge` or delete it\n"), "{h}");
        assert!(
            h.contains("  info: /var/lib/app: 1 entries on the root are older versions"),
            "{h}"
        );
        assert!(
            h.contains(
                "  info: /persist/var/lib/old: 5.0 MiB in 3 entries that no persisted path covers"
            ),
            "{h}"
        );
        assert!(!h.contains('\u{1b}'));
        assert_eq!(f.errors(), 2);
        assert_eq!(
            (
                f.hidden_entries(),
                f.hidden_bytes(),
                f.missing_persisted(),
                f.missing_critical(),
                f.stray_bytes()
            ),
            (2, 2048, 2, 2, 5 << 20)
        );
        let ok = human(&Findings {
            store: Some(b"/p".to_vec()),
            ..Default::default()
        });
        assert!(
            ok.contains("  ok: every persisted path is in the store"),
            "{ok}"
        );
        let s = status_lines(&f);
        assert!(
            s.contains("missing:         2 persisted paths not in the store, 2 CRITICAL"),
            "{s}"
        );
    }

    #[test]
    fn json_is_json() {
        let j = json(&sample());
        assert!(j.starts_with("{\"store\":\"/persist\",\"errors\":2,\"hidden\":[{\"path\":\"/var/lib/app\",\"mounted\":true,\"entries\":2,"), "{j}");
        assert!(j.contains("{\"path\":\"/var/lib/app/\\u001b[31m\"}"), "{j}");
        assert!(j.contains("\"missing\":[{\"path\":\"/boot/keyfile\",\"critical\":true,\"why\":\"under /boot\",\"declared\":true,\"on_root\":false}"), "{j}");
        let f = Findings {
            store: Some(b"/p\xff".to_vec()),
            ..Default::default()
        };
        assert!(
            json(&f).starts_with("{\"store\":\"/p\\\\xff\",\"store_hex\":\"2f70ff\""),
            "{}",
            json(&f)
        );
    }
}
