//! Settings: the config file (`key = value`), command-line options, and their merge.
//! Command-line options win over the file; every error names the file, line and key.

use crate::escape;
use crate::retention::{parse_utc_offset, Policy, DEFAULT_POLICY};
use std::collections::HashMap;
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
            _ => Err(format!(
                "unknown fstype {}: use btrfs, bcachefs or zfs",
                escape::quoted(s.as_bytes())
            )),
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
            _ => Err(format!(
                "unknown mode {}: use wipe or audit",
                escape::quoted(s.as_bytes())
            )),
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
    /// Paths are bytes (a persisted path need not be UTF-8).
    pub persist: Option<Vec<Vec<u8>>>,
    pub timezone: Option<i64>,
}

/// Keys that may be given more than once (their values add up).
pub const REPEATABLE: &[&str] = &["persist"];

/// Apply one `key = value` to a partial config. The error is about the value only. Values are
/// bytes: `persist` takes any bytes but NUL; every other key needs UTF-8.
pub fn apply_key(p: &mut Partial, key: &str, value: &[u8]) -> Result<(), KeyError> {
    if key == "persist" {
        let list = p.persist.get_or_insert_with(Vec::new);
        for w in value
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            if !w.starts_with(b"/") {
                return Err(KeyError::Value(format!(
                    "persistent path {} is not absolute; write it as it appears on the running system, e.g. /var/lib/nixos",
                    escape::quoted(w)
                )));
            }
            if w.contains(&0) {
                return Err(KeyError::Value(format!(
                    "persistent path {} contains a NUL byte",
                    escape::quoted(w)
                )));
            }
            list.push(w.to_vec());
        }
        return Ok(());
    }
    if !KEYS.contains(&key) {
        return Err(KeyError::UnknownKey);
    }
    let value = std::str::from_utf8(value).map_err(|_| {
        KeyError::Value(format!(
            "value {} is not valid UTF-8",
            escape::quoted(value)
        ))
    })?;
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
        "timezone" => p.timezone = Some(parse_utc_offset(value).map_err(KeyError::Value)?),
        _ => return Err(KeyError::UnknownKey),
    }
    Ok(())
}

/// A subvolume/dataset name must be relative to the filesystem and not climb out of it.
fn check_name(what: &str, v: String) -> Result<String, KeyError> {
    let trimmed = v.trim_matches('/');
    let q = escape::quoted(v.as_bytes());
    if trimmed.is_empty() {
        return Err(KeyError::Value(format!(
            "{what} {q} names the top level of the filesystem itself; name a subvolume such as @root"
        )));
    }
    if trimmed
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(KeyError::Value(format!(
            "{what} {q} must be a plain path inside the filesystem (no '.', '..' or '//')"
        )));
    }
    if trimmed.split('/').any(|c| c.len() > 255) || trimmed.len() > 4000 {
        return Err(KeyError::Value(format!(
            "{what} {q} is too long (a name is at most 255 bytes per component)"
        )));
    }
    if v.chars().any(escape::dangerous) {
        return Err(KeyError::Value(format!(
            "{what} {q} contains a control character (shown escaped)"
        )));
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

/// Parse config file text (bytes). `origin` names the file in messages. A key given twice is an
/// error naming both lines, except keys in [`REPEATABLE`].
pub fn parse_file(text: &[u8], origin: &Path) -> Result<Partial, String> {
    let o = escape::cut(origin.as_os_str().as_encoded_bytes());
    let mut p = Partial::default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let line = match raw.iter().position(|&b| b == b'#') {
            Some(c) => &raw[..c],
            None => raw,
        }
        .trim_ascii();
        if line.is_empty() {
            continue;
        }
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            return Err(format!(
                "{o}:{lineno}: expected `key = value`, found {}",
                escape::quoted(line)
            ));
        };
        let (k, v) = (line[..eq].trim_ascii(), line[eq + 1..].trim_ascii());
        let v = v
            .strip_prefix(b"\"")
            .and_then(|x| x.strip_suffix(b"\""))
            .unwrap_or(v);
        let Some(key) = KEYS.iter().copied().find(|known| known.as_bytes() == k) else {
            return Err(unknown_key(&o, lineno, k));
        };
        if let Some(first) = seen.insert(key, lineno) {
            if !REPEATABLE.contains(&key) {
                return Err(format!(
                    "{o}:{lineno}: key `{key}` is given again (first at {o}:{first}); keep one of the two lines"
                ));
            }
        }
        match apply_key(&mut p, key, v) {
            Ok(()) => {}
            Err(KeyError::UnknownKey) => return Err(unknown_key(&o, lineno, k)),
            Err(KeyError::Value(e)) => return Err(format!("{o}:{lineno}: key `{key}`: {e}")),
        }
    }
    Ok(p)
}

/// "unknown key" with a hint; a key with control characters or other odd bytes is shown escaped
/// and said to be so (otherwise `root\0` would read "unknown key `root` (did you mean `root`?)").
fn unknown_key(o: &str, lineno: usize, k: &[u8]) -> String {
    let shown = escape::cut(k);
    let printable: String = k
        .utf8_chunks()
        .flat_map(|c| c.valid().chars())
        .filter(|c| !escape::dangerous(*c))
        .collect();
    let odd = !escape::is_plain(k);
    let hint = suggest(&printable, KEYS)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    if odd {
        format!(
            "{o}:{lineno}: unknown key `{shown}`: it contains a control character or bytes that are not UTF-8 (shown escaped){hint}; known keys: {}",
            KEYS.join(", ")
        )
    } else {
        format!(
            "{o}:{lineno}: unknown key `{shown}`{hint}; known keys: {}",
            KEYS.join(", ")
        )
    }
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
    match std::fs::read(&p) {
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
    pub persist: Vec<Vec<u8>>,
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
        parse_file(text.as_bytes(), Path::new("/etc/x.conf"))
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
                b"/var/log".to_vec(),
                b"/etc/machine-id".to_vec(),
                b"/var/lib/nixos".to_vec()
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
    fn repeated_keys_name_both_lines() {
        let cases = [
            (
                "root = @root\n# x\nroot = @persist\n",
                "/etc/x.conf:3: key `root` is given again (first at /etc/x.conf:1); keep one of the two lines",
            ),
            (
                "keep = 5\nmode = wipe\nkeep = all\n",
                "/etc/x.conf:3: key `keep` is given again (first at /etc/x.conf:1)",
            ),
            (
                "device = /dev/a\n  device=/dev/a\n",
                "/etc/x.conf:2: key `device` is given again (first at /etc/x.conf:1)",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Keys meant to repeat add up.
        let p = parse("persist = /a\npersist = /b /c\n").unwrap();
        assert_eq!(p.persist.map(|v| v.len()), Some(3));
    }

    #[test]
    fn odd_bytes_in_keys_and_values() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"root\0 = @root\n",
                "/etc/x.conf:1: unknown key `root\\x00`: it contains a control character or bytes that are not UTF-8 (shown escaped) (did you mean `root`?)",
            ),
            (
                b"\x1b[31mroot = @root\n",
                "unknown key `\\x1b[31mroot`: it contains a control character",
            ),
            (b"r\xffoot = x\n", "unknown key `r\\xffoot`: it contains"),
            (b"root = @r\xffoot\n", "key `root`: value \"@r\\xffoot\" is not valid UTF-8"),
            (
                b"root = @ro\x1bot\n",
                "key `root`: root \"@ro\\x1bot\" contains a control character",
            ),
        ];
        for (text, want) in cases {
            let e = parse_file(text, Path::new("/etc/x.conf")).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.chars().any(escape::dangerous), "{e:?}");
        }
        // A persisted path is bytes.
        let p = parse_file(b"persist = /var/lib/\xff\n", Path::new("/x")).unwrap();
        assert_eq!(p.persist, Some(vec![b"/var/lib/\xff".to_vec()]));
    }

    #[test]
    fn huge_values_are_cut_in_messages() {
        let big = "x".repeat(1 << 20);
        for text in [
            format!("keep = {big}\n"),
            format!("mode = {big}\n"),
            format!("fstype = {big}\n"),
            format!("timezone = {big}\n"),
            format!("root = ../{big}\n"),
            format!("persist = {big}\n"),
            format!("{big} = 1\n"),
            format!("{big}\n"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.len() < 1000, "{} bytes: {}", e.len(), &e[..200]);
            assert!(e.contains("…") && e.contains("bytes)"), "{e}");
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
