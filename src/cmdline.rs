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

/// Split like the kernel does: whitespace separated, double quotes group (`a="b c"`). Bytes: the
/// kernel command line need not be UTF-8.
fn words(cmdline: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut any = false;
    for &c in cmdline {
        match c {
            b'"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
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

pub fn parse(cmdline: &[u8]) -> KernelArgs {
    use crate::config::Mode;
    let mut k = KernelArgs::default();
    for w in words(cmdline) {
        let (key, val) = match w.iter().position(|&b| b == b'=') {
            Some(i) => (&w[..i], Some(&w[i + 1..])),
            None => (&w[..], None),
        };
        // The kernel treats '-' and '_' alike in parameter names; so do we.
        let key: Vec<u8> = key
            .iter()
            .map(|&b| if b == b'-' { b'_' } else { b })
            .collect();
        if !key.starts_with(b"rd.ephemeral_root") {
            continue;
        }
        let name = val
            .filter(|v| !v.is_empty())
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| v.is_ascii() && !v.bytes().any(|b| b.is_ascii_control()));
        match (key.as_slice(), val) {
            (b"rd.ephemeral_root", Some(b"skip")) => k.skip = true,
            (b"rd.ephemeral_root", Some(b"audit")) => k.force_mode = Some(Mode::Audit),
            (b"rd.ephemeral_root", Some(b"wipe")) => k.force_mode = Some(Mode::Wipe),
            (b"rd.ephemeral_root.restore", Some(_)) if name.is_some() => {
                k.restore = name.map(str::to_string)
            }
            _ => k.warnings.push(format!(
                "ignoring unknown kernel parameter {}; known: rd.ephemeral_root=skip|audit|wipe, rd.ephemeral_root.restore=NAME",
                crate::escape::quoted(&w)
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
            assert_eq!(parse(line.as_bytes()), want, "{line:?}");
        }
    }

    #[test]
    fn unknown_values_warn_but_never_fail() {
        for line in [
            "rd.ephemeral_root=skp",
            "rd.ephemeral_root",
            "rd.ephemeral_root.restore=",
            "rd.ephemeral_root.keep=3",
            "rd.ephemeral_root.restore=\u{1b}[31m",
        ] {
            let k = parse(line.as_bytes());
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
        let k = parse(b"rd.ephemeral_root=bogus rd.ephemeral_root=skip");
        assert!(k.skip);
        assert_eq!(k.warnings.len(), 1);
        // Bytes that are not UTF-8 elsewhere on the line do not hide our parameters; in ours
        // they are warned about, escaped.
        let k = parse(b"quiet x=\xff\xfe rd.ephemeral_root=skip rd.ephemeral_root.restore=\xff");
        assert!(k.skip && k.restore.is_none());
        assert_eq!(k.warnings.len(), 1);
        assert!(
            k.warnings[0].contains("\"rd.ephemeral_root.restore=\\xff\""),
            "{:?}",
            k.warnings
        );
    }
}
