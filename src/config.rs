//! Settings: the config file (`key = value`), command-line options, and their merge.
//! Command-line options win over the file; every error names the file, line and key.

use crate::retention::{parse_utc_offset, Policy, DEFAULT_POLICY};
use std::fmt;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/ephemeral-root.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Btrfs,
    Bcachefs,
    Zfs,
}

impl FsType {
    pub fn parse(s: &str) -> Result<FsType, String> {
        match s {
            "btrfs" => Ok(FsType::Btrfs),
            "bcachefs" => Ok(FsType::Bcachefs),
            "zfs" => Ok(FsType::Zfs),
            _ => Err(format!("unknown fstype {s:?}: use btrfs, bcachefs or zfs")),
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsType::Btrfs => "btrfs",
            FsType::Bcachefs => "bcachefs",
            FsType::Zfs => "zfs",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Wipe,
    Audit,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "wipe" => Ok(Mode::Wipe),
            "audit" => Ok(Mode::Audit),
            _ => Err(format!("unknown mode {s:?}: use wipe or audit")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Wipe => "wipe",
            Mode::Audit => "audit",
        })
    }
}

/// Settings as given (file or command line), before defaults. `None` = not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partial {
    pub device: Option<String>,
    pub fstype: Option<FsType>,
    pub root: Option<String>,
    pub snapshots: Option<String>,
    pub blank: Option<String>,
    pub keep: Option<Policy>,
    pub mode: Option<Mode>,
    pub persist: Option<Vec<String>>,
    pub timezone: Option<i64>,
}

/// Apply one `key = value` to a partial config. The error is about the value only.
pub fn apply_key(p: &mut Partial, key: &str, value: &str) -> Result<(), KeyError> {
    let nonempty = |v: &str| {
        if v.is_empty() {
            Err(KeyError::Value("is empty".into()))
        } else {
            Ok(v.to_string())
        }
    };
    match key {
        "device" => p.device = Some(nonempty(value)?),
        "fstype" => p.fstype = Some(FsType::parse(value).map_err(KeyError::Value)?),
        "root" => p.root = Some(check_name("root", nonempty(value)?)?),
        "snapshots" => p.snapshots = Some(check_name("snapshots", nonempty(value)?)?),
        "blank" => p.blank = Some(check_name("blank", nonempty(value)?)?),
        "keep" => p.keep = Some(Policy::parse(value).map_err(KeyError::Value)?),
        "mode" => p.mode = Some(Mode::parse(value).map_err(KeyError::Value)?),
        "persist" => {
            let list = p.persist.get_or_insert_with(Vec::new);
            for w in value.split_whitespace() {
                if !w.starts_with('/') {
                    return Err(KeyError::Value(format!(
                        "persistent path {w:?} is not absolute; write it as it appears on the running system, e.g. /var/lib/nixos"
                    )));
                }
                list.push(w.to_string());
            }
        }
        "timezone" => p.timezone = Some(parse_utc_offset(value).map_err(KeyError::Value)?),
        _ => return Err(KeyError::UnknownKey),
    }
    Ok(())
}

/// A subvolume/dataset name must be relative to the filesystem and not climb out of it.
fn check_name(what: &str, v: String) -> Result<String, KeyError> {
    let trimmed = v.trim_matches('/');
    if trimmed.is_empty() {
        return Err(KeyError::Value(format!(
            "{what} {v:?} names the top level of the filesystem itself; name a subvolume such as @root"
        )));
    }
    if trimmed
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(KeyError::Value(format!(
            "{what} {v:?} must be a plain path inside the filesystem (no '.', '..' or '//')"
        )));
    }
    if v.bytes().any(|b| b == 0 || b == b'\n') {
        return Err(KeyError::Value(format!("{what} contains a NUL or newline")));
    }
    Ok(trimmed.to_string())
}

#[derive(Debug)]
pub enum KeyError {
    UnknownKey,
    Value(String),
}

pub const KEYS: &[&str] = &[
    "device",
    "fstype",
    "root",
    "snapshots",
    "blank",
    "keep",
    "mode",
    "persist",
    "timezone",
];

/// Parse config file text. `origin` names the file in messages.
pub fn parse_file(text: &str, origin: &Path) -> Result<Partial, String> {
    let mut p = Partial::default();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = match raw.find('#') {
            Some(c) => &raw[..c],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "{}:{lineno}: expected `key = value`, found {:?}",
                origin.display(),
                line
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        match apply_key(&mut p, k, v) {
            Ok(()) => {}
            Err(KeyError::UnknownKey) => {
                let hint = suggest(k, KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "{}:{lineno}: unknown key `{k}`{hint}; known keys: {}",
                    origin.display(),
                    KEYS.join(", ")
                ));
            }
            Err(KeyError::Value(e)) => {
                return Err(format!("{}:{lineno}: key `{k}`: {e}", origin.display()))
            }
        }
    }
    Ok(p)
}

/// The closest known word within edit distance 2, for "did you mean".
pub fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Load the config file: a missing *default* file is an empty config; a missing explicit one is an
/// error.
pub fn load(path: Option<&Path>) -> Result<(Partial, Option<PathBuf>), String> {
    let (p, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok((parse_file(&text, &p)?, Some(p))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok((Partial::default(), None))
        }
        Err(e) => Err(format!(
            "cannot read config file {}: {e}; pass an existing file with --config or create it",
            p.display()
        )),
    }
}

/// Final settings after merging and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub device: Option<String>,
    pub fstype: Option<FsType>,
    pub root: String,
    pub snapshots: String,
    pub blank: Option<String>,
    pub keep: Policy,
    pub keep_text: String,
    pub mode: Mode,
    pub persist: Vec<String>,
    pub timezone: i64,
    pub config_file: Option<PathBuf>,
}

/// Merge: command line (`cli`) wins over file (`file`), then defaults.
pub fn merge(cli: Partial, file: Partial, config_file: Option<PathBuf>) -> Settings {
    let keep = cli.keep.or(file.keep).unwrap_or_default();
    Settings {
        device: cli.device.or(file.device),
        fstype: cli.fstype.or(file.fstype),
        root: cli.root.or(file.root).unwrap_or_else(|| "@root".into()),
        snapshots: cli
            .snapshots
            .or(file.snapshots)
            .unwrap_or_else(|| "@snapshots".into()),
        blank: cli.blank.or(file.blank),
        keep_text: keep.to_string(),
        keep,
        mode: cli.mode.or(file.mode).unwrap_or(Mode::Wipe),
        persist: cli.persist.or(file.persist).unwrap_or_default(),
        timezone: cli.timezone.or(file.timezone).unwrap_or(0),
        config_file,
    }
}

impl Settings {
    /// Root and snapshots location must not contain each other (nor the blank template).
    pub fn check_layout(&self) -> Result<(), String> {
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if inside(&self.root, &self.snapshots) || inside(&self.snapshots, &self.root) {
            return Err(format!(
                "root {:?} and snapshots location {:?} overlap; keep old roots outside the root, e.g. --snapshots @snapshots",
                self.root, self.snapshots
            ));
        }
        if let Some(b) = &self.blank {
            if inside(b, &self.root) || inside(&self.root, b) {
                return Err(format!(
                    "blank template {b:?} overlaps the root {:?}; keep the template outside the root",
                    self.root
                ));
            }
        }
        Ok(())
    }
}

#[allow(dead_code)]
pub fn default_keep() -> &'static str {
    DEFAULT_POLICY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Partial, String> {
        parse_file(text, Path::new("/etc/x.conf"))
    }

    #[test]
    fn full_file() {
        let p = parse(
            "# comment\n\ndevice = /dev/vdb\nfstype=btrfs\nroot = /@root/ # trailing\nsnapshots = @snapshots\nblank = @blank\nkeep = \"5 4w 12m\"\nmode = audit\npersist = /var/log /etc/machine-id\npersist = /var/lib/nixos\ntimezone = +01:00\n",
        )
        .unwrap();
        assert_eq!(p.device.as_deref(), Some("/dev/vdb"));
        assert_eq!(p.fstype, Some(FsType::Btrfs));
        assert_eq!(p.root.as_deref(), Some("@root"));
        assert_eq!(p.keep, Some(Policy::default()));
        assert_eq!(p.mode, Some(Mode::Audit));
        assert_eq!(
            p.persist,
            Some(vec![
                "/var/log".into(),
                "/etc/machine-id".into(),
                "/var/lib/nixos".into()
            ])
        );
        assert_eq!(p.timezone, Some(3600));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "devcie = /dev/vda\n",
                "/etc/x.conf:1: unknown key `devcie` (did you mean `device`?)",
            ),
            (
                "\n\nkeep = 5 4x\n",
                "/etc/x.conf:3: key `keep`: bad retention word \"4x\"",
            ),
            (
                "mode = wipeout\n",
                "/etc/x.conf:1: key `mode`: unknown mode \"wipeout\"",
            ),
            ("fstype = ext4\n", "key `fstype`: unknown fstype \"ext4\""),
            ("root\n", "/etc/x.conf:1: expected `key = value`"),
            (
                "root = ../etc\n",
                "key `root`: root \"../etc\" must be a plain path",
            ),
            ("root = /\n", "names the top level"),
            ("persist = var/log\n", "is not absolute"),
            ("device =\n", "key `device`: is empty"),
            ("timezone = CET\n", "bad timezone"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn cli_wins_and_defaults_apply() {
        let file = parse("root = @fileroot\nkeep = 3\nmode = audit\n").unwrap();
        let cli = Partial {
            root: Some("@cliroot".into()),
            ..Default::default()
        };
        let s = merge(cli, file, None);
        assert_eq!(s.root, "@cliroot");
        assert_eq!(s.keep_text, "3");
        assert_eq!(s.mode, Mode::Audit);
        assert_eq!(s.snapshots, "@snapshots");
        let d = merge(Partial::default(), Partial::default(), None);
        assert_eq!(d.keep_text, "5 4w 12m");
        assert_eq!(d.mode, Mode::Wipe);
    }

    #[test]
    fn overlap_guard() {
        let mk = |r: &str, s: &str| {
            merge(
                Partial {
                    root: Some(r.into()),
                    snapshots: Some(s.into()),
                    ..Default::default()
                },
                Partial::default(),
                None,
            )
        };
        assert!(mk("@root", "@snapshots").check_layout().is_ok());
        assert!(mk("@root", "@root/snaps").check_layout().is_err());
        assert!(mk("a/b", "a").check_layout().is_err());
        assert!(mk("@root", "@root").check_layout().is_err());
        assert!(mk("@root", "@rootsnaps").check_layout().is_ok());
    }

    #[test]
    fn missing_files() {
        assert!(load(Some(Path::new("/nonexistent/ephemeral-root.conf")))
            .unwrap_err()
            .contains("/nonexistent/ephemeral-root.conf"));
    }
}
