//! The kernel command line: `rd.ephemeral_root=skip|audit|wipe` and
//! `rd.ephemeral_root.restore=NAME`. Unknown values are reported as warnings and ignored.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    pub skip: bool,
    pub force_mode: Option<crate::config::Mode>,
    pub restore: Option<String>,
    /// Human-readable warnings about parameters we did not understand.
    pub warnings: Vec<String>,
}

/// Split like the kernel does: whitespace separated, double quotes group (`a="b c"`).
fn words(cmdline: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

pub fn parse(cmdline: &str) -> KernelArgs {
    use crate::config::Mode;
    let mut k = KernelArgs::default();
    for w in words(cmdline) {
        let (key, val) = match w.split_once('=') {
            Some((a, b)) => (a.to_string(), Some(b.to_string())),
            None => (w.clone(), None),
        };
        // The kernel treats '-' and '_' alike in parameter names; so do we.
        let key = key.replace('-', "_");
        if !key.starts_with("rd.ephemeral_root") {
            continue;
        }
        match (key.as_str(), val.as_deref()) {
            ("rd.ephemeral_root", Some("skip")) => k.skip = true,
            ("rd.ephemeral_root", Some("audit")) => k.force_mode = Some(Mode::Audit),
            ("rd.ephemeral_root", Some("wipe")) => k.force_mode = Some(Mode::Wipe),
            ("rd.ephemeral_root.restore", Some(name)) if !name.is_empty() => {
                k.restore = Some(name.to_string())
            }
            _ => k.warnings.push(format!(
                "ignoring unknown kernel parameter {w:?}; known: rd.ephemeral_root=skip|audit|wipe, rd.ephemeral_root.restore=NAME"
            )),
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn table() {
        let cases: Vec<(&str, KernelArgs)> = vec![
            ("", KernelArgs::default()),
            ("quiet root=/dev/vda rw", KernelArgs::default()),
            (
                "rd.ephemeral_root=skip",
                KernelArgs {
                    skip: true,
                    ..Default::default()
                },
            ),
            (
                "a rd.ephemeral_root=audit b",
                KernelArgs {
                    force_mode: Some(Mode::Audit),
                    ..Default::default()
                },
            ),
            (
                "rd.ephemeral-root=wipe",
                KernelArgs {
                    force_mode: Some(Mode::Wipe),
                    ..Default::default()
                },
            ),
            (
                "rd.ephemeral_root.restore=2026-11-20T22-48-03Z",
                KernelArgs {
                    restore: Some("2026-11-20T22-48-03Z".into()),
                    ..Default::default()
                },
            ),
            (
                "rd.ephemeral_root.restore=\"2026-11-20T22-48-03Z\"",
                KernelArgs {
                    restore: Some("2026-11-20T22-48-03Z".into()),
                    ..Default::default()
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{line:?}");
        }
    }

    #[test]
    fn unknown_values_warn_but_never_fail() {
        for line in [
            "rd.ephemeral_root=skp",
            "rd.ephemeral_root",
            "rd.ephemeral_root.restore=",
            "rd.ephemeral_root.keep=3",
        ] {
            let k = parse(line);
            assert!(
                !k.skip && k.force_mode.is_none() && k.restore.is_none(),
                "{line}"
            );
            assert_eq!(k.warnings.len(), 1, "{line}");
            assert!(
                k.warnings[0].contains("ignoring unknown kernel parameter"),
                "{line}"
            );
        }
        // A warning does not hide valid parameters next to it.
        let k = parse("rd.ephemeral_root=bogus rd.ephemeral_root=skip");
        assert!(k.skip);
        assert_eq!(k.warnings.len(), 1);
    }
}
