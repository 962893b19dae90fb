//! `lost [--boot N] [--json]`: after a wipe, which missing file broke which service, and how to
//! get it back. Reads the boot's journal (`journalctl -b N -o json`, [`journal`]), keeps failed
//! units and messages saying a file does not exist ([`extract`]), looks every path they name up
//! in the old root that preceded the boot (the newest one that began before the boot's first
//! journal entry; a `.kept.*` one not sealed yet counts) and now, and prints per service: the
//! paths the old root had and the system lacks now, with their size, the line to add to the
//! persistence configuration and the `restore` command that brings each back. Paths that exist
//! now, paths the old root did not have either, and messages naming no absolute path are
//! summarized, never guessed at.

pub mod extract;
pub mod journal;

use crate::cli::Cli;
use crate::config::Settings;
use crate::diff::classify::{group_of, Group};
use crate::error::{Error, Result};
use crate::escape::{self, escape};
use crate::json;
use crate::persist::rules::Target;
use crate::timefmt::human_bytes;
use crate::walk::{self, Kind, Meta};
use rustix::fd::{AsFd, OwnedFd};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Messages without a path kept per service, to show (the rest are counted).
const SHOWN: usize = 3;

/// What the journal says about one unit (or program).
#[derive(Debug, Default)]
pub struct Service {
    /// systemd said the unit failed: its result (`exit-code`, …).
    pub failed: Option<Vec<u8>>,
    /// Absolute paths on the root named by messages saying something is missing.
    pub paths: Vec<Vec<u8>>,
    /// Messages saying a file is missing without naming an absolute path (the first few).
    pub no_path: Vec<Vec<u8>>,
    pub no_path_count: usize,
}

/// Everything read from the journal (pure: [`Findings::add`] per entry).
#[derive(Debug, Default)]
pub struct Findings {
    pub services: BTreeMap<Vec<u8>, Service>,
    /// Paths under /proc, /sys, /dev, /run, /nix: not on the root.
    pub elsewhere: usize,
    pub first_us: Option<u64>,
    pub entries: u64,
}

impl Findings {
    pub fn add(&mut self, e: &journal::Entry) {
        self.entries += 1;
        if self.first_us.is_none() {
            self.first_us = e.realtime_us;
        }
        let msg = e.get("MESSAGE").unwrap_or_default();
        let id = e.get("MESSAGE_ID");
        let failed = if id == Some(journal::JOB_FAILED) || e.get("JOB_RESULT") == Some(b"failed") {
            Some(b"start job failed".to_vec())
        } else if id == Some(journal::UNIT_FAILED) || e.get("UNIT_RESULT").is_some() {
            extract::failed_result(msg, e.get("UNIT_RESULT"))
        } else if e.get("UNIT").is_some() {
            extract::failed_result(msg, None)
        } else {
            None
        };
        let mark = extract::marker(msg);
        if failed.is_none() && mark == extract::Marker::None {
            return;
        }
        let named = if mark == extract::Marker::None {
            Default::default()
        } else {
            extract::paths(msg)
        };
        self.elsewhere += named.elsewhere;
        if failed.is_none() && named.paths.is_empty() && mark != extract::Marker::Strong {
            return;
        }
        let s = self.services.entry(e.who()).or_default();
        if let Some(r) = failed {
            // A unit's own result wins over "start job failed".
            if s.failed.is_none() || r != b"start job failed" {
                s.failed = Some(r);
            }
        }
        if mark == extract::Marker::Strong && named.paths.is_empty() && named.elsewhere == 0 {
            s.no_path_count += 1;
            if s.no_path.len() < SHOWN {
                s.no_path.push(msg.to_vec());
            }
        }
        for p in named.paths {
            if !s.paths.contains(&p) {
                s.paths.push(p);
            }
        }
    }
}

/// One tree entry as [`resolve`] sees it: its metadata and, for a symlink, its text.
pub type Look = Option<(Meta, Option<Vec<u8>>)>;

/// Resolve absolute `path` in a tree the way that system would: symlinks in parent components are
/// followed inside the tree (an absolute target from the tree's top, at most 40 links); the last
/// component is not followed (a missing symlink is what to bring back). `lookup` gets absolute
/// paths with no symlink in them. Returns the real path and its metadata; `None` if not there.
pub fn resolve(path: &[u8], lookup: &mut dyn FnMut(&[u8]) -> Look) -> Option<(Vec<u8>, Meta)> {
    let comps = |p: &[u8]| -> Vec<Vec<u8>> {
        p.split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect()
    };
    let mut pending = comps(path);
    pending.reverse();
    let mut cur: Vec<u8> = Vec::new();
    let mut meta = None;
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == b".." {
            cur.truncate(cur.iter().rposition(|&b| b == b'/').unwrap_or(0));
            meta = None;
            continue;
        }
        let cand = [cur.as_slice(), b"/", &c].concat();
        let (m, link) = lookup(&cand)?;
        match link {
            Some(t) if !pending.is_empty() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                if t.first() == Some(&b'/') {
                    cur.clear();
                }
                let mut more = comps(&t);
                more.reverse();
                pending.extend(more);
            }
            _ => {
                cur = cand;
                meta = Some(m);
            }
        }
    }
    // The path named the top, or climbed there with `..`: nothing to bring back.
    Some((cur, meta?))
}

/// Single-quote what a shell would change; `$'…'` (bash, zsh) with the plain-output escapes
/// for names with control characters or bytes that are not UTF-8.
pub fn shell_word(b: &[u8]) -> String {
    let safe = |c: &u8| c.is_ascii_alphanumeric() || b"/._+:@%,=-".contains(c);
    if !b.is_empty() && b.iter().all(safe) {
        String::from_utf8_lossy(b).into_owned()
    } else if escape::is_plain(b) && !b.contains(&b'\'') {
        format!("'{}'", String::from_utf8_lossy(b))
    } else {
        format!("$'{}'", escape(b).replace('\'', "\\'"))
    }
}

/// The configuration line that keeps `g` (a directory or a file), in the configured form and
/// store ([`Target::line`], shared with `persist` and `report`); `None` when a Nix string cannot
/// hold the name printably.
pub fn persist_line(t: &Target, g: &Group, dir: bool) -> Option<String> {
    t.line(
        &g.path,
        dir,
        g.home
            .as_ref()
            .map(|(u, _, rel)| (u.as_slice(), rel.as_slice())),
    )
}

/// A path the old root had and the system lacks now.
#[derive(Debug, Clone)]
pub struct Lost {
    /// As the message named it.
    pub named: Vec<u8>,
    /// What to restore: the topmost missing ancestor of the real path, not above its group.
    pub restore: Vec<u8>,
    pub kind: Kind,
    pub files: u64,
    pub bytes: u64,
    pub group: Group,
    pub group_dir: bool,
    /// Under a declared persisted path: the store lacks it.
    pub declared: bool,
}

/// What became of one named path.
#[derive(Debug)]
pub enum Fate {
    Lost(Lost),
    /// Exists now (the wipe did not take it).
    Present,
    /// The old root did not have it either.
    Absent,
}

fn below_or_at(p: &[u8], top: &[u8]) -> bool {
    p == top || (p.starts_with(top) && p.get(top.len()) == Some(&b'/'))
}

/// The old root a boot is compared with: the newest that began before the boot's first entry.
pub fn preceding<'a>(
    olds: &[crate::protocol::OldRoot<'a>],
    start: i64,
) -> Option<crate::protocol::OldRoot<'a>> {
    olds.iter().rev().find(|o| o.time < start).cloned()
}

/// A tree read through the backend's private mount: an old root (with nested subvolumes kept
/// beside it, bcachefs) or the current root.
struct Tree {
    dir: OwnedFd,
    nested: Vec<(String, PathBuf, OwnedFd)>,
}

impl Tree {
    /// The directory holding absolute path `p` and the path below it.
    fn at<'a>(&'a self, p: &[u8]) -> (&'a OwnedFd, Vec<u8>) {
        let rel = &p[1.min(p.len())..];
        let v: Vec<(String, PathBuf)> = self
            .nested
            .iter()
            .map(|(r, d, _)| (r.clone(), d.clone()))
            .collect();
        if let Some((dir, below)) = crate::restore::source_in_nested(rel, &v) {
            if let Some((_, _, fd)) = self.nested.iter().find(|(_, d, _)| d == &dir) {
                return (fd, below);
            }
        }
        (&self.dir, rel.to_vec())
    }

    fn look(&self, p: &[u8]) -> Look {
        let (dir, rel) = self.at(p);
        let m = walk::meta_beneath(dir, &rel).ok()??;
        let link = (m.kind == Kind::Symlink)
            .then(|| walk::readlink_beneath(dir, &rel).ok())
            .flatten();
        Some((m, link))
    }

    /// Files and bytes at `p` (a whole tree for a directory).
    fn size(&self, p: &[u8], m: &Meta) -> (u64, u64) {
        if m.kind != Kind::Dir {
            return (1, m.size);
        }
        let (dir, rel) = self.at(p);
        let Ok(fd) = walk::open_dir_beneath(dir, &rel) else {
            return (0, 0);
        };
        let opts = walk::Options {
            cross_mounts: true,
            ..Default::default()
        };
        let (mut files, mut bytes) = (0, 0);
        if let Ok(mut w) = walk::Walker::new(fd.as_fd(), b"", opts) {
            while let Some(ev) = w.next() {
                if let walk::Event::Entry(e) = ev {
                    if e.meta.kind != Kind::Dir {
                        files += 1;
                        bytes += e.meta.size;
                    }
                }
            }
        }
        (files, bytes)
    }
}

/// The system now: the current root (through the private mount, so a path counts as present only
/// if the root itself has it) and, when that root is the one mounted at `/`, the running system
/// (where persisted paths are mounted).
struct Now {
    root: Tree,
    live: bool,
}

impl Now {
    fn has(&self, p: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        resolve(p, &mut |q| self.root.look(q)).is_some()
            || (self.live
                && Path::new(std::ffi::OsStr::from_bytes(p))
                    .symlink_metadata()
                    .is_ok())
    }
}

fn fate(old: &Tree, now: &Now, persisted: &[Vec<u8>], named: &[u8]) -> Fate {
    if now.has(named) {
        return Fate::Present;
    }
    let Some((real, meta)) = resolve(named, &mut |p| old.look(p)) else {
        return Fate::Absent;
    };
    if real != named && now.has(&real) {
        return Fate::Present;
    }
    let group = group_of(&real);
    // The topmost ancestor (not above the group) that is missing now.
    let mut restore = real.clone();
    let mut rmeta = meta;
    while let Some(i) = restore.iter().rposition(|&b| b == b'/').filter(|&i| i > 0) {
        let parent = &restore[..i];
        if !below_or_at(parent, &group.path) || now.has(parent) {
            break;
        }
        match old.look(parent) {
            Some((m, None)) => {
                rmeta = m;
                restore.truncate(i);
            }
            _ => break,
        }
    }
    let (files, bytes) = old.size(&restore, &rmeta);
    let group_dir = restore.len() > group.path.len()
        || old
            .look(&group.path)
            .is_some_and(|(m, _)| m.kind == Kind::Dir);
    let declared = persisted.iter().any(|d| {
        let d = d.strip_suffix(b"/").unwrap_or(d);
        below_or_at(&real, d)
    });
    Fate::Lost(Lost {
        named: named.to_vec(),
        restore,
        kind: rmeta.kind,
        files,
        bytes,
        group,
        group_dir,
        declared,
    })
}

/// The result for one service.
struct Row<'a> {
    unit: &'a [u8],
    s: &'a Service,
    lost: Vec<Lost>,
    present: Vec<&'a [u8]>,
    absent: Vec<&'a [u8]>,
}

struct Outcome<'a> {
    boot: &'a str,
    started: Option<i64>,
    old_root: String,
    sealed: bool,
    rows: Vec<Row<'a>>,
    elsewhere: usize,
    entries: u64,
    target: Target,
}

fn restore_cmd(old: &str, l: &Lost) -> String {
    format!("ephemeral-root restore {old} {}", shell_word(&l.restore))
}

fn what(l: &Lost) -> String {
    match l.kind {
        Kind::Dir => format!(
            "directory, {} file{}, {}",
            l.files,
            if l.files == 1 { "" } else { "s" },
            human_bytes(l.bytes)
        ),
        Kind::Symlink => "symlink".into(),
        _ => human_bytes(l.bytes),
    }
}

fn human(o: &Outcome) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "lost: journal of boot {} ({} entries{}), compared with old root {}{}",
        escape::cut_str(o.boot),
        o.entries,
        o.started
            .map(|s| format!(", from {}", crate::timefmt::rfc3339(s)))
            .unwrap_or_default(),
        o.old_root,
        if o.sealed { "" } else { " (not sealed yet)" }
    );
    let mut restorable = 0;
    for r in &o.rows {
        let _ = write!(t, "\n{}", escape::cut(r.unit));
        match &r.s.failed {
            Some(res) => {
                let _ = writeln!(t, ": failed ({})", escape::cut(res));
            }
            None => t.push('\n'),
        }
        let mut cmds: Vec<&[u8]> = Vec::new();
        for l in &r.lost {
            let _ = writeln!(
                t,
                "  missing {}: in old root {}{}",
                escape::cut(&l.named),
                o.old_root,
                if l.declared {
                    " (declared persisted: the store lacks it)"
                } else {
                    ""
                }
            );
            if !cmds.contains(&l.restore.as_slice()) {
                cmds.push(&l.restore);
                restorable += 1;
                let _ = writeln!(
                    t,
                    "    restore: {}   # {}",
                    restore_cmd(&o.old_root, l),
                    what(l)
                );
            }
            if !l.declared {
                let _ = writeln!(
                    t,
                    "    persist: {}",
                    persist_line(&o.target, &l.group, l.group_dir).unwrap_or_else(|| format!(
                        "{} (add by hand: a Nix string cannot hold this name)",
                        escape(&l.group.path)
                    ))
                );
            }
        }
        for p in &r.absent {
            let _ = writeln!(
                t,
                "  not in old root {} either (not lost by the wipe): {}",
                o.old_root,
                escape::cut(p)
            );
        }
        for p in &r.present {
            let _ = writeln!(t, "  exists now: {}", escape::cut(p));
        }
        for m in &r.s.no_path {
            let _ = writeln!(t, "  no path named: {}", escape::cut(m));
        }
        if r.s.no_path_count > r.s.no_path.len() {
            let _ = writeln!(
                t,
                "  no path named: {} more such messages",
                r.s.no_path_count - r.s.no_path.len()
            );
        }
    }
    let failed = o.rows.iter().filter(|r| r.s.failed.is_some()).count();
    let _ = writeln!(
        t,
        "\n{} unit(s) failed, {} complained about missing files; {} path(s) can be brought back from {}{}",
        failed,
        o.rows.iter().filter(|r| !r.s.paths.is_empty() || r.s.no_path_count > 0).count(),
        restorable,
        o.old_root,
        if o.elsewhere > 0 {
            format!(
                "; {} path(s) under /proc, /sys, /dev, /run or /nix were not looked up (not on the root)",
                o.elsewhere
            )
        } else {
            String::new()
        }
    );
    if o.rows.iter().any(|r| r.lost.iter().any(|l| !l.declared)) {
        let _ = writeln!(t, "{}", o.target.note());
    }
    t
}

fn to_json(o: &Outcome) -> String {
    let names = |v: &[&[u8]]| {
        json::array(
            &v.iter()
                .map(|p| json::object(&json::name_fields("path", "path_hex", p)))
                .collect::<Vec<_>>(),
        )
    };
    let rows: Vec<String> = o
        .rows
        .iter()
        .map(|r| {
            let mut f = json::name_fields("unit", "unit_hex", r.unit);
            f.push((
                "failed",
                r.s.failed
                    .as_ref()
                    .map(|x| json::string(&String::from_utf8_lossy(x)))
                    .unwrap_or_else(|| "null".into()),
            ));
            let lost: Vec<String> = r
                .lost
                .iter()
                .map(|l| {
                    let mut f = json::name_fields("path", "path_hex", &l.named);
                    f.extend(json::name_fields("restore", "restore_hex", &l.restore));
                    f.extend([
                        (
                            "kind",
                            json::string(match l.kind {
                                Kind::Dir => "directory",
                                Kind::Symlink => "symlink",
                                Kind::File => "file",
                                Kind::Other => "other",
                            }),
                        ),
                        ("files", l.files.to_string()),
                        ("bytes", l.bytes.to_string()),
                        (
                            "restore_command",
                            json::string(&restore_cmd(&o.old_root, l)),
                        ),
                        ("declared_persisted", l.declared.to_string()),
                    ]);
                    f.extend(json::name_fields("persist", "persist_hex", &l.group.path));
                    f.push((
                        "persist_line",
                        json::opt_string(persist_line(&o.target, &l.group, l.group_dir).as_deref()),
                    ));
                    json::object(&f)
                })
                .collect();
            f.push(("lost", json::array(&lost)));
            f.push(("not_in_old_root", names(&r.absent)));
            f.push(("exists_now", names(&r.present)));
            let msgs: Vec<String> =
                r.s.no_path
                    .iter()
                    .map(|m| json::object(&json::name_fields("message", "message_hex", m)))
                    .collect();
            f.push(("no_path", json::array(&msgs)));
            f.push(("no_path_count", r.s.no_path_count.to_string()));
            json::object(&f)
        })
        .collect();
    let mut top = vec![
        ("boot", json::string(o.boot)),
        (
            "boot_started",
            json::opt_string(o.started.map(crate::timefmt::rfc3339).as_deref()),
        ),
        ("entries", o.entries.to_string()),
        ("old_root", json::string(&o.old_root)),
        ("old_root_sealed", o.sealed.to_string()),
        ("services", json::array(&rows)),
        ("elsewhere", o.elsewhere.to_string()),
        ("persist_format", json::string(&o.target.format.to_string())),
    ];
    top.extend(json::name_fields("store", "store_hex", &o.target.store));
    top.push(("store_assumed", o.target.assumed.to_string()));
    json::object(&top)
}

/// `--boot` takes an offset (`0`, `-1`) or a 32-digit boot id, as journalctl does.
fn check_boot(b: &str) -> Result<()> {
    let digits = b.strip_prefix(['-', '+']).unwrap_or(b);
    let offset = !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit());
    let id = b.len() == 32 && b.bytes().all(|c| c.is_ascii_hexdigit());
    if offset || id {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--boot \"{}\": give an offset (0 is this boot, -1 the one before) or a boot id; `journalctl --list-boots` shows them",
            escape::cut_str(b)
        )))
    }
}

pub fn run(cli: &Cli, s: &Settings) -> Result<()> {
    let boot = cli.boot.as_deref().unwrap_or("0");
    check_boot(boot)?;
    let mut f = Findings::default();
    journal::read(boot, cli.journal_file.as_deref(), &mut |e| f.add(&e))?;
    let started = f.first_us.map(|us| (us / 1_000_000) as i64);
    let Some(start) = started else {
        return Err(Error::Refused(format!(
            "the journal has no entries for boot {}; `journalctl --list-boots` shows the boots",
            escape::cut_str(boot)
        )));
    };
    let (mut b, st) = crate::protocol::open(s, crate::clock::now())?;
    let r = (|| -> Result<String> {
        let olds = st.old_roots();
        let Some(o) = preceding(&olds, start) else {
            return Err(Error::Refused(format!(
                "no old root in {} began before boot {} (first entry {}): nothing to compare with; `ephemeral-root list` shows the old roots",
                s.snapshots,
                escape::cut_str(boot),
                crate::timefmt::rfc3339(start)
            )));
        };
        let open = crate::diff::open_root_dir;
        let dir = open(&b.entry_path(o.entry)?)?;
        let mut nested = Vec::new();
        for (rel, p) in b.entry_nested(o.entry)? {
            let fd = open(&p)?;
            nested.push((rel, p, fd));
        }
        let tree = Tree { dir, nested };
        let root = open(&b.root_path()?)?;
        let same = |a: &OwnedFd, p: &Path| {
            let (x, y) = (rustix::fs::fstat(a).ok(), rustix::fs::stat(p).ok());
            matches!((x, y), (Some(x), Some(y)) if (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino))
        };
        let live = same(&root, Path::new("/"));
        let now = Now {
            root: Tree {
                dir: root,
                nested: Vec::new(),
            },
            live,
        };
        let mut rows = Vec::new();
        for (unit, sv) in &f.services {
            let mut row = Row {
                unit,
                s: sv,
                lost: Vec::new(),
                present: Vec::new(),
                absent: Vec::new(),
            };
            for p in &sv.paths {
                match fate(&tree, &now, &s.persist, p) {
                    Fate::Lost(l) => row.lost.push(l),
                    Fate::Present => row.present.push(p),
                    Fate::Absent => row.absent.push(p),
                }
            }
            rows.push(row);
        }
        // Services with something to bring back first, then failed ones, then the rest.
        rows.sort_by_key(|r| (r.lost.is_empty(), r.s.failed.is_none()));
        let out = Outcome {
            boot,
            started,
            old_root: o.name.to_string(),
            sealed: o.sealed,
            rows,
            elsewhere: f.elsewhere,
            entries: f.entries,
            target: Target::of(s),
        };
        Ok(if cli.json {
            format!("{}\n", to_json(&out))
        } else {
            human(&out)
        })
    })();
    b.close()?;
    print!("{}", r?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn meta(kind: Kind) -> Meta {
        Meta::of(kind, 7)
    }

    #[test]
    fn resolving_inside_a_tree() {
        // /var/lib/app -> private/app (DynamicUser), /etc/ssh -> /persist/ssh, a loop.
        let tree: HashMap<&[u8], (Kind, Option<&[u8]>)> = [
            (&b"/var"[..], (Kind::Dir, None)),
            (b"/var/lib", (Kind::Dir, None)),
            (b"/var/lib/app", (Kind::Symlink, Some(&b"private/app"[..]))),
            (b"/var/lib/private", (Kind::Dir, None)),
            (b"/var/lib/private/app", (Kind::Dir, None)),
            (b"/var/lib/private/app/db", (Kind::File, None)),
            (b"/etc", (Kind::Dir, None)),
            (b"/etc/ssh", (Kind::Symlink, Some(b"/persist/ssh/"))),
            (b"/etc/conf", (Kind::Symlink, Some(b"../var/lib/app/db"))),
            (b"/persist", (Kind::Dir, None)),
            (b"/loop", (Kind::Symlink, Some(b"/loop"))),
        ]
        .into_iter()
        .collect();
        let mut look =
            |p: &[u8]| -> Look { tree.get(p).map(|(k, l)| (meta(*k), l.map(<[u8]>::to_vec))) };
        let r = |p: &str, look: &mut dyn FnMut(&[u8]) -> Look| {
            resolve(p.as_bytes(), look).map(|(p, m)| (String::from_utf8(p).unwrap(), m.kind))
        };
        assert_eq!(
            r("/var/lib/app/db", &mut look),
            Some(("/var/lib/private/app/db".into(), Kind::File))
        );
        assert_eq!(
            r("/var/lib/app", &mut look),
            Some(("/var/lib/app".into(), Kind::Symlink)),
            "the last component is not followed"
        );
        assert_eq!(r("/etc/ssh/ssh_host_ed25519_key", &mut look), None);
        assert_eq!(
            r("/etc/conf", &mut look),
            Some(("/etc/conf".into(), Kind::Symlink))
        );
        assert_eq!(
            r("/var/lib/../lib/./private/app/db", &mut look),
            Some(("/var/lib/private/app/db".into(), Kind::File))
        );
        assert_eq!(r("/loop/x", &mut look), None, "link loop");
        assert_eq!(r("/..", &mut look), None, "the top is nothing to restore");
    }

    #[test]
    fn shell_words() {
        for (b, want) in [
            (&b"/var/lib/acme"[..], "/var/lib/acme"),
            (b"/home/alice/My Documents", "'/home/alice/My Documents'"),
            (b"/srv/it's", "$'/srv/it\\'s'"),
            (b"/srv/\xff\n", "$'/srv/\\xff\\n'"),
            (b"/srv/\x1b[31m$x", "$'/srv/\\x1b[31m$x'"),
            (b"/srv/a\\b", "$'/srv/a\\\\b'"),
            (b"", "''"),
        ] {
            assert_eq!(shell_word(b), want, "{b:?}");
        }
    }

    #[test]
    fn persist_lines() {
        use crate::config::PersistFormat;
        let t = |format, store: &[u8]| Target {
            format,
            store: store.to_vec(),
            assumed: false,
        };
        let imp = t(PersistFormat::Impermanence, b"/persist");
        let g = group_of(b"/var/lib/acme/example.org/fullchain.pem");
        assert_eq!(
            persist_line(&imp, &g, true).unwrap(),
            "environment.persistence.\"/persist\".directories = [ \"/var/lib/acme\" ];"
        );
        let g = group_of(b"/etc/ssh/ssh_host_ed25519_key");
        assert_eq!(
            persist_line(&imp, &g, false).unwrap(),
            "environment.persistence.\"/persist\".files = [ \"/etc/ssh/ssh_host_ed25519_key\" ];"
        );
        let home = group_of(b"/home/alice/.ssh/id_ed25519");
        assert_eq!(
            persist_line(&imp, &home, true).unwrap(),
            "environment.persistence.\"/persist\".users.alice.directories = [ \".ssh\" ];"
        );
        assert_eq!(
            persist_line(&imp, &group_of(b"/var/lib/\xff/x"), true),
            None
        );
        // The configured form and store.
        let pres = t(PersistFormat::Preservation, b"/nix/persist");
        assert_eq!(
            persist_line(&pres, &g, false).unwrap(),
            "preservation.preserveAt.\"/nix/persist\".files = [ \"/etc/ssh/ssh_host_ed25519_key\" ];"
        );
        assert_eq!(
            persist_line(&pres, &home, true).unwrap(),
            "preservation.preserveAt.\"/nix/persist\".users.alice.directories = [ \".ssh\" ];"
        );
        let fstab = t(PersistFormat::Fstab, b"/state");
        assert_eq!(
            persist_line(&fstab, &home, true).unwrap(),
            "fileSystems.\"/home/alice/.ssh\" = { device = \"/state/home/alice/.ssh\"; options = [ \"bind\" ]; };"
        );
        // A store a Nix string cannot hold: no line.
        let odd = t(PersistFormat::Impermanence, b"/p\xff");
        assert_eq!(persist_line(&odd, &g, false), None);
    }

    #[test]
    fn findings_per_service() {
        let e = |fields: &[(&str, &[u8])]| journal::Entry {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            realtime_us: Some(5_000_000),
        };
        let mut f = Findings::default();
        for x in [
            e(&[
                ("_SYSTEMD_UNIT", b"nginx.service"),
                ("MESSAGE", b"nginx: [emerg] open() \"/var/log/nginx/error.log\" failed (2: No such file or directory)"),
            ]),
            e(&[
                ("_SYSTEMD_UNIT", b"init.scope"),
                ("UNIT", b"nginx.service"),
                ("MESSAGE_ID", journal::UNIT_FAILED),
                ("UNIT_RESULT", b"exit-code"),
                ("MESSAGE", b"nginx.service: Failed with result 'exit-code'."),
            ]),
            e(&[
                ("UNIT", b"nginx.service"),
                ("MESSAGE_ID", journal::JOB_FAILED),
                ("JOB_RESULT", b"failed"),
                ("MESSAGE", b"Failed to start nginx.service."),
            ]),
            e(&[
                ("_SYSTEMD_UNIT", b"postgresql.service"),
                ("MESSAGE", b"FATAL:  could not open file \"global/pg_filenode.map\": No such file or directory"),
            ]),
            e(&[("SYSLOG_IDENTIFIER", b"app"), ("MESSAGE", b"Started.")]),
            e(&[
                ("SYSLOG_IDENTIFIER", b"app"),
                ("MESSAGE", b"FATAL: database \"x\" does not exist"),
            ]),
            e(&[
                ("SYSLOG_IDENTIFIER", b"sshd"),
                ("MESSAGE", b"Missing privilege separation directory: /run/sshd"),
            ]),
        ] {
            f.add(&x);
        }
        assert_eq!(f.entries, 7);
        assert_eq!(f.first_us, Some(5_000_000));
        assert_eq!(f.elsewhere, 1);
        let keys: Vec<&[u8]> = f.services.keys().map(Vec::as_slice).collect();
        assert_eq!(keys, vec![&b"nginx.service"[..], b"postgresql.service"]);
        let n = &f.services[&b"nginx.service"[..]];
        assert_eq!(n.failed.as_deref(), Some(&b"exit-code"[..]));
        assert_eq!(n.paths, vec![b"/var/log/nginx/error.log".to_vec()]);
        let p = &f.services[&b"postgresql.service"[..]];
        assert_eq!(
            (p.failed.is_none(), p.no_path_count, p.paths.len()),
            (true, 1, 0)
        );
    }

    #[test]
    fn the_old_root_before_a_boot() {
        let facts = crate::backend::Facts::default();
        let o = |name: &'static str, time: i64, seq: u32| crate::protocol::OldRoot {
            name,
            entry: name,
            time,
            seq,
            sealed: true,
            facts: &facts,
        };
        // Oldest first, as State::old_roots gives them; the root a boot ran on began after the
        // boot's first entry (in its initrd), so it is not the one before it.
        let olds = [
            o("a", 100, 1),
            o("b", 200, 1),
            o("b-2", 200, 2),
            o("c", 300, 1),
        ];
        let name = |start| preceding(&olds, start).map(|x| x.name);
        assert_eq!(name(1000), Some("c"));
        assert_eq!(
            name(300),
            Some("b-2"),
            "same second: that root is the boot's own"
        );
        assert_eq!(name(250), Some("b-2"));
        assert_eq!(name(150), Some("a"));
        assert_eq!(name(100), None);
    }

    #[test]
    fn boot_arguments() {
        for ok in ["0", "-1", "+2", "0123456789abcdef0123456789abcdef"] {
            assert!(check_boot(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-", "x", "-1x", "--file=/etc/shadow", "1 2"] {
            assert!(check_boot(bad).is_err(), "{bad}");
        }
    }
}
