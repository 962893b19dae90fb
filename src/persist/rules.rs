//! `persist`'s decisions as plain functions with table tests: which PATHs are accepted, what is
//! done with each (copy, merge) or why it is refused, whether the store has room, who is writing,
//! which unit to stop, and the configuration lines to print.

use crate::config::PersistFormat;
use crate::diff::output::{nix_attr, nix_string};
use crate::escape::cut;
use crate::timefmt::human_bytes;

pub use crate::persisted::classify::under;

/// A PATH argument: absolute, normalized (`//` and a trailing `/` dropped), without `.`, `..` or
/// NUL, not `/`, and neither inside the store nor holding it.
pub fn path_arg(arg: &[u8], store: &[u8]) -> Result<Vec<u8>, String> {
    let shown = cut(arg);
    if !arg.starts_with(b"/") {
        return Err(format!(
            "{shown}: PATH must be absolute, as on the running system (e.g. /var/lib/foo)"
        ));
    }
    if arg.contains(&0) {
        return Err(format!("{shown}: PATH contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in arg.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if c == b"." || c == b".." {
            return Err(format!(
                "{shown}: `.` and `..` are not allowed; name the path as it is (e.g. /var/lib/foo)"
            ));
        }
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        return Err("/ is the whole root; name what to persist, e.g. /var/lib/foo".into());
    }
    if out == store {
        return Err(format!(
            "{} is the store itself; name a path on the root, e.g. /var/lib/foo",
            cut(&out)
        ));
    }
    if under(&out, store) {
        return Err(format!(
            "{} is inside the store {}; name the path on the root (e.g. {})",
            cut(&out),
            cut(store),
            cut(&out[store.len()..])
        ));
    }
    if under(store, &out) {
        return Err(format!(
            "{} holds the store {}; persist the paths inside it instead",
            cut(&out),
            cut(store)
        ));
    }
    Ok(out)
}

/// Two arguments that are the same path or one inside the other.
pub fn overlap(paths: &[Vec<u8>]) -> Option<(&[u8], &[u8])> {
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            if under(a, b) || under(b, a) {
                return Some((a, b));
            }
        }
    }
    None
}

/// Where PATH is, as the running system sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// PATH and every directory above it are on the root's mount.
    OnRoot,
    /// PATH itself is a mount point. `from_store`: what is mounted is the store's copy of PATH
    /// (the same inode as `<store>PATH`), as impermanence and preservation bind-mount it.
    MountPoint { from_store: bool },
    /// A directory above PATH (`at`) is a mount point; `from_store` as above, for `at`.
    BelowMount { at: Vec<u8>, from_store: bool },
}

/// What `persist` knows about one PATH before deciding.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub path: &'a [u8],
    /// The declared persisted path (config `persist`) that is PATH or holds it.
    pub declared: Option<&'a [u8]>,
    pub mount: Mount,
    /// PATH exists on the root (read through the backend's private mount).
    pub on_root: bool,
    /// `<store>PATH` exists.
    pub in_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy PATH to `<store>PATH`, which does not exist.
    Copy,
    /// Copy what `<store>PATH` lacks, never overwriting (`--merge`).
    Merge,
}

/// Why a PATH is refused: one line; `usage` when it is a mistake in the arguments (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: String,
    pub usage: bool,
}

fn refused(line: String) -> Refusal {
    Refusal { line, usage: false }
}

/// What to do with PATH, or why not. In this order: not on the ephemeral root (below another
/// mount), a mount point that is not the store's, missing on the root, already persisted (a bind
/// mount of the store, or declared) and already in the store — the last two only with `--merge`.
pub fn judge(f: &Facts, store: &[u8], merge: bool) -> Result<Action, Refusal> {
    let p = cut(f.path);
    let s = cut(store);
    let merge_hint =
        "`--merge` copies what the root holds there that the store lacks, never overwriting";
    let persisted = match &f.mount {
        Mount::BelowMount {
            at,
            from_store: false,
        } => {
            return Err(refused(format!(
                "{p} is not on the ephemeral root: {} is a mount point (another filesystem, kept across boots); nothing to persist",
                cut(at)
            )))
        }
        Mount::MountPoint { from_store: false } => {
            return Err(refused(format!(
                "{p} is a mount point (another filesystem, not the store's copy); persist works on paths that live on the ephemeral root"
            )))
        }
        Mount::MountPoint { from_store: true } => Some(format!(
            "it is bind-mounted from the store ({s}{p})"
        )),
        Mount::BelowMount {
            at,
            from_store: true,
        } => Some(format!(
            "it is inside {}, bind-mounted from the store",
            cut(at)
        )),
        Mount::OnRoot => None,
    };
    if !f.on_root {
        return Err(Refusal {
            line: format!("{p} does not exist on the root; nothing to persist"),
            usage: true,
        });
    }
    let persisted = persisted.or_else(|| {
        f.declared.map(|d| {
            if d == f.path {
                "it is declared persistent (`persist =` in the config)".to_string()
            } else {
                format!(
                    "it is inside {}, declared persistent (`persist =` in the config)",
                    cut(d)
                )
            }
        })
    });
    if let Some(why) = persisted {
        if !merge {
            return Err(refused(format!(
                "{p} is already persisted: {why}; {merge_hint}"
            )));
        }
        return Ok(if f.in_store {
            Action::Merge
        } else {
            Action::Copy
        });
    }
    if f.in_store {
        if !merge {
            return Err(refused(format!(
                "{s}{p} already exists in the store; {merge_hint}"
            )));
        }
        return Ok(Action::Merge);
    }
    Ok(Action::Copy)
}

/// Metadata a copied entry costs the store besides its data (inode, directory entry, extent
/// item): a rough upper bound for btrfs, bcachefs, ZFS and ext4.
pub const PER_ENTRY: u64 = 512;

/// Whether `data` bytes in `entries` entries fit in `avail` bytes of the store. With `reflink`
/// (the store is on the root's filesystem) the data is shared, not written: only the entries
/// count. `Err` is the one-line refusal.
pub fn space(
    store: &[u8],
    what: &str,
    data: u64,
    entries: u64,
    reflink: bool,
    avail: u64,
) -> Result<u64, String> {
    let meta = entries.saturating_mul(PER_ENTRY);
    let need = if reflink {
        meta
    } else {
        data.saturating_add(meta)
    };
    if need <= avail {
        return Ok(need);
    }
    let why = if reflink {
        format!(
            "the store is on the root's filesystem, so the {} of data are reflinked, not written: this is metadata for {entries} entries",
            human_bytes(data)
        )
    } else {
        format!(
            "{} of data in {entries} entries; the store is on another filesystem, so nothing is shared",
            human_bytes(data)
        )
    };
    Err(format!(
        "not enough space in the store {}: copying {what} needs about {} ({why}), and {} is free there; free some space or persist less",
        cut(store),
        human_bytes(need),
        human_bytes(avail)
    ))
}

/// From `/proc/PID/fdinfo/N`: is the descriptor open for writing (`O_WRONLY` or `O_RDWR` in the
/// octal `flags:` line)?
pub fn fdinfo_writable(text: &str) -> bool {
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|f| f & 3 == 1 || f & 3 == 2)
}

/// The systemd unit a process runs in, from `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// A system service: `systemctl stop NAME`.
    System(String),
    /// A service of a user's manager (`user@UID.service`): `systemctl --user -M UID@ stop NAME`.
    User { uid: String, name: String },
    /// No service (a login session, a container, no systemd).
    None,
}

/// The innermost `.service` of the unified (`0::`) hierarchy line, or of the named `systemd`
/// one (cgroup v1).
pub fn unit_of(cgroup: &str) -> Unit {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|x| x.1))
        });
    let Some(path) = path else { return Unit::None };
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some(i) = comps.iter().rposition(|c| c.ends_with(".service")) else {
        return Unit::None;
    };
    let name = comps[i];
    let manager = comps[..i].iter().rev().find_map(|c| {
        c.strip_prefix("user@")
            .and_then(|r| r.strip_suffix(".service"))
    });
    if let Some(uid) = manager {
        return Unit::User {
            uid: uid.to_string(),
            name: name.to_string(),
        };
    }
    if let Some(uid) = name
        .strip_prefix("user@")
        .and_then(|r| r.strip_suffix(".service"))
    {
        // The user manager itself.
        return Unit::User {
            uid: uid.to_string(),
            name: String::new(),
        };
    }
    Unit::System(name.to_string())
}

/// How to stop the writer.
pub fn stop_hint(unit: &Unit, pid: u32) -> String {
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:-\\".contains(c))
    };
    match unit {
        Unit::System(n) if safe(n) => format!("systemctl stop {n}"),
        Unit::User { uid, name } if !name.is_empty() && safe(name) && safe(uid) => {
            format!("systemctl --user -M {uid}@ stop {name}")
        }
        _ => format!("stop process {pid}"),
    }
}

/// One writer: the refusal line for PATH.
pub fn writer_refusal(
    path: &[u8],
    file: &[u8],
    pid: u32,
    comm: &str,
    unit: &Unit,
    more: usize,
) -> String {
    let u = match unit {
        Unit::System(n) => format!(", unit {}", crate::escape::cut_str(n)),
        Unit::User { uid, name } if !name.is_empty() => format!(
            ", unit {} of user {}",
            crate::escape::cut_str(name),
            crate::escape::cut_str(uid)
        ),
        _ => String::new(),
    };
    let others = match more {
        0 => String::new(),
        1 => " (and 1 more open file)".into(),
        n => format!(" (and {n} more open files)"),
    };
    format!(
        "{}: {} is open for writing by {} (PID {pid}{u}){others}; a copy taken now could be inconsistent: stop it first (`{}`), then persist again",
        cut(path),
        cut(file),
        crate::escape::cut_str(comm),
        stop_hint(unit, pid)
    )
}

/// One path to declare: the path on the root, and whether it is a directory.
pub type Item = (Vec<u8>, bool);

fn nix_list(o: &mut String, indent: &str, name: &str, items: &[&Item], left: &mut Vec<Vec<u8>>) {
    let ok: Vec<String> = items
        .iter()
        .filter_map(|(p, _)| match nix_string(p) {
            Some(s) => Some(s),
            None => {
                left.push(p.clone());
                None
            }
        })
        .collect();
    if ok.is_empty() {
        return;
    }
    o.push_str(&format!("{indent}{name} = [\n"));
    for s in ok {
        o.push_str(&format!("{indent}  {s}\n"));
    }
    o.push_str(&format!("{indent}];\n"));
}

/// Where `persist`, `lost` and `report` say a path is to be kept: the configured form and store.
/// Without `store =` in the config the lines name [`ASSUMED_STORE`] and say so ([`Target::note`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub format: PersistFormat,
    pub store: Vec<u8>,
    /// The store was not configured: `store` is [`ASSUMED_STORE`].
    pub assumed: bool,
}

/// The store the lines name when the config has none (impermanence's usual location).
pub const ASSUMED_STORE: &[u8] = b"/persist";

impl Target {
    pub fn of(s: &crate::config::Settings) -> Target {
        match &s.store {
            Some(st) => Target {
                format: s.persist_format,
                store: st.clone(),
                assumed: false,
            },
            None => Target {
                format: s.persist_format,
                store: ASSUMED_STORE.to_vec(),
                assumed: true,
            },
        }
    }

    /// One line about the form of the lines (and the assumed store), for the output's end.
    pub fn note(&self) -> String {
        let how = form(self.format);
        if self.assumed {
            format!(
                "persistence lines: {how} (`persist_format` in the config); no `store =` in the config, so they name {}: set `store =` (NixOS: boot.ephemeralRoot.store) to your persistent store",
                cut(ASSUMED_STORE)
            )
        } else {
            format!(
                "persistence lines: {how} with the store {} (`persist_format`, `store` in the config)",
                cut(&self.store)
            )
        }
    }

    /// The one line that keeps `path` (a directory or a file); for impermanence and preservation
    /// a path in a home directory (`home` = (user, path relative to the home)) goes under
    /// `users.<user>`. `None` when a Nix string cannot hold a name printably.
    pub fn line(&self, path: &[u8], dir: bool, home: Option<(&[u8], &[u8])>) -> Option<String> {
        let list = if dir { "directories" } else { "files" };
        match location_attr(self.format, &self.store)? {
            Some(at) => Some(match home {
                Some((user, rel)) => format!(
                    "{at}.users.{}.{list} = [ {} ];",
                    nix_attr(user)?,
                    nix_string(rel)?
                ),
                None => format!("{at}.{list} = [ {} ];", nix_string(path)?),
            }),
            None => fstab_entry(&self.store, path),
        }
    }
}

/// The form's name, for people.
pub fn form(format: PersistFormat) -> &'static str {
    match format {
        PersistFormat::Impermanence => "impermanence's environment.persistence",
        PersistFormat::Preservation => "preservation's preservation.preserveAt",
        PersistFormat::Fstab => "bind mounts in fileSystems",
    }
}

/// `environment.persistence."<store>"` or `preservation.preserveAt."<store>"`; `Some(None)` for
/// fstab (no location attribute); `None` when a Nix string cannot hold the store's path.
fn location_attr(format: PersistFormat, store: &[u8]) -> Option<Option<String>> {
    let st = nix_string(store)?;
    Some(match format {
        PersistFormat::Impermanence => Some(format!("environment.persistence.{st}")),
        PersistFormat::Preservation => Some(format!("preservation.preserveAt.{st}")),
        PersistFormat::Fstab => None,
    })
}

/// `fileSystems."<path>" = { device = "<store><path>"; options = [ "bind" ]; };`
fn fstab_entry(store: &[u8], path: &[u8]) -> Option<String> {
    let mut dev = store.to_vec();
    dev.extend_from_slice(path);
    Some(format!(
        "fileSystems.{} = {{ device = {}; options = [ \"bind\" ]; }};",
        nix_string(path)?,
        nix_string(&dev)?
    ))
}

/// The configuration lines for `items`, as a Nix attribute set (a NixOS module body) preceded by
/// comments: `nix-instantiate --parse` accepts the whole text. A path a Nix string cannot hold
/// printably is listed in a comment, escaped, to be added by hand.
pub fn config_lines(format: PersistFormat, store: &[u8], items: &[Item]) -> String {
    let mut o = String::new();
    let mut left: Vec<Vec<u8>> = Vec::new();
    let Some(at) = location_attr(format, store) else {
        return format!(
            "# the store's path {} cannot be written as a Nix string; declare these paths by hand:\n{}",
            cut(store),
            items
                .iter()
                .map(|(p, _)| format!("#   {}\n", cut(p)))
                .collect::<String>()
        );
    };
    let dirs: Vec<&Item> = items.iter().filter(|i| i.1).collect();
    let files: Vec<&Item> = items.iter().filter(|i| !i.1).collect();
    let mut body = String::new();
    match at {
        Some(at) => {
            body.push_str(&format!("  {at} = {{\n"));
            nix_list(&mut body, "    ", "directories", &dirs, &mut left);
            nix_list(&mut body, "    ", "files", &files, &mut left);
            body.push_str("  };\n");
        }
        None => {
            for (p, _) in items {
                match fstab_entry(store, p) {
                    Some(line) => body.push_str(&format!("  {line}\n")),
                    None => left.push(p.clone()),
                }
            }
        }
    }
    for p in &left {
        o.push_str(&format!(
            "# left out, a Nix string cannot hold this name printably (add it by hand): {}\n",
            crate::escape::escape(p)
        ));
    }
    o.push_str("{\n");
    o.push_str(&body);
    o.push_str("}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_arguments() {
        let ok = |a: &str| path_arg(a.as_bytes(), b"/persist").unwrap();
        assert_eq!(ok("/var/lib/foo"), b"/var/lib/foo");
        assert_eq!(ok("//var//lib/foo/"), b"/var/lib/foo");
        assert_eq!(ok("/persistent/x"), b"/persistent/x");
        assert_eq!(
            path_arg(b"/srv/\xff\n", b"/persist").unwrap(),
            b"/srv/\xff\n"
        );
        for (a, want) in [
            ("var/lib/foo", "must be absolute"),
            ("/var/../etc", "`..` are not allowed"),
            ("/./etc", "`..` are not allowed"),
            ("/", "whole root"),
            ("//", "whole root"),
            (
                "/persist/var/lib/foo",
                "is inside the store /persist; name the path on the root (e.g. /var/lib/foo)",
            ),
            ("/persist", "is the store itself"),
        ] {
            let e = path_arg(a.as_bytes(), b"/persist").unwrap_err();
            assert!(e.contains(want), "{a}: {e}");
        }
        let e = path_arg(b"/mnt", b"/mnt/persist").unwrap_err();
        assert!(e.contains("holds the store"), "{e}");
        let e = path_arg(b"/x\0y", b"/persist").unwrap_err();
        assert!(e.contains("NUL"), "{e}");
        assert_eq!(
            overlap(&[b"/a/b".to_vec(), b"/c".to_vec(), b"/a".to_vec()]),
            Some((&b"/a/b"[..], &b"/a"[..]))
        );
        assert_eq!(overlap(&[b"/a/b".to_vec(), b"/a/bc".to_vec()]), None);
        assert!(under(b"/a/b", b"/"));
        assert!(!under(b"/ab", b"/a"));
    }

    #[test]
    fn judging_each_path() {
        use Action::*;
        let f =
            |mount: Mount, declared: Option<&'static [u8]>, on_root: bool, in_store: bool| Facts {
                path: b"/var/lib/foo",
                declared,
                mount,
                on_root,
                in_store,
            };
        let below = |from_store| Mount::BelowMount {
            at: b"/var/lib".to_vec(),
            from_store,
        };
        let mp = |from_store| Mount::MountPoint { from_store };
        let d: Option<&'static [u8]> = Some(b"/var/lib/foo");
        let dp: Option<&'static [u8]> = Some(b"/var/lib");
        // (facts, merge, Ok(action) or Err(text in the refusal))
        let cases: Vec<(Facts, bool, Result<Action, &str>)> = vec![
            (f(Mount::OnRoot, None, true, false), false, Ok(Copy)),
            (f(Mount::OnRoot, None, true, false), true, Ok(Copy)),
            (
                f(Mount::OnRoot, None, true, true),
                false,
                Err("/persist/var/lib/foo already exists in the store; `--merge`"),
            ),
            (f(Mount::OnRoot, None, true, true), true, Ok(Merge)),
            (
                f(Mount::OnRoot, None, false, false),
                false,
                Err("does not exist on the root"),
            ),
            (
                f(below(false), None, true, false),
                true,
                Err("is not on the ephemeral root: /var/lib is a mount point"),
            ),
            (
                f(mp(false), None, true, false),
                true,
                Err("is a mount point (another filesystem"),
            ),
            (
                f(mp(true), d, true, true),
                false,
                Err("already persisted: it is bind-mounted from the store (/persist/var/lib/foo)"),
            ),
            (f(mp(true), d, true, true), true, Ok(Merge)),
            (
                f(below(true), dp, true, true),
                false,
                Err("already persisted: it is inside /var/lib, bind-mounted"),
            ),
            (f(below(true), dp, true, false), true, Ok(Copy)),
            (
                f(Mount::OnRoot, d, true, false),
                false,
                Err("already persisted: it is declared persistent"),
            ),
            (
                f(Mount::OnRoot, dp, true, true),
                false,
                Err("it is inside /var/lib, declared persistent"),
            ),
            (f(Mount::OnRoot, d, true, false), true, Ok(Copy)),
            (f(Mount::OnRoot, d, true, true), true, Ok(Merge)),
            // Not on the root at all beats "already persisted".
            (
                f(mp(true), d, false, true),
                true,
                Err("does not exist on the root"),
            ),
        ];
        for (i, (facts, merge, want)) in cases.into_iter().enumerate() {
            let got = judge(&facts, b"/persist", merge);
            match (got, want) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "case {i}"),
                (Err(r), Err(w)) => {
                    assert!(r.line.contains(w), "case {i}: {}", r.line);
                    assert!(!r.line.contains('\n'), "case {i}");
                }
                (g, w) => panic!("case {i}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn room_in_the_store() {
        let g = 1u64 << 30;
        assert_eq!(
            space(b"/persist", "/x", 10 * g, 100, true, g),
            Ok(100 * PER_ENTRY)
        );
        let e = space(b"/persist", "/x", 10 * g, 100, false, g).unwrap_err();
        assert!(
            e.contains("not enough space in the store /persist: copying /x needs about 10.0 GiB"),
            "{e}"
        );
        assert!(e.contains("another filesystem"), "{e}");
        assert!(space(b"/persist", "/x", g, 0, false, g).is_ok());
        assert!(space(b"/persist", "/x", g, 1, false, g).is_err());
        let e = space(b"/persist", "/x", 0, 1 << 40, true, g).unwrap_err();
        assert!(e.contains("reflinked"), "{e}");
    }

    #[test]
    fn writers_and_their_units() {
        assert!(fdinfo_writable("pos:\t0\nflags:\t0100002\nmnt_id:\t29\n"));
        assert!(fdinfo_writable("pos:\t0\nflags:\t02100001\n"));
        assert!(!fdinfo_writable("pos:\t0\nflags:\t0100000\n"));
        assert!(!fdinfo_writable("pos:\t0\n"));
        assert!(!fdinfo_writable("flags:\tzz\n"));
        let cases = [
            (
                "0::/system.slice/postgresql.service\n",
                Unit::System("postgresql.service".into()),
            ),
            (
                "0::/system.slice/docker.service/docker/abc\n",
                Unit::System("docker.service".into()),
            ),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service\n",
                Unit::User {
                    uid: "1000".into(),
                    name: "syncthing.service".into(),
                },
            ),
            (
                "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
                Unit::User {
                    uid: "1000".into(),
                    name: String::new(),
                },
            ),
            (
                "0::/user.slice/user-1000.slice/session-3.scope\n",
                Unit::None,
            ),
            (
                "12:name=systemd:/system.slice/nginx.service\n3:cpu:/\n",
                Unit::System("nginx.service".into()),
            ),
            ("0::/\n", Unit::None),
            ("", Unit::None),
        ];
        for (text, want) in cases {
            assert_eq!(unit_of(text), want, "{text:?}");
        }
        assert_eq!(
            stop_hint(&Unit::System("a.service".into()), 7),
            "systemctl stop a.service"
        );
        assert_eq!(
            stop_hint(
                &Unit::User {
                    uid: "1000".into(),
                    name: "s.service".into()
                },
                7
            ),
            "systemctl --user -M 1000@ stop s.service"
        );
        assert_eq!(stop_hint(&Unit::None, 7), "stop process 7");
        // A unit name that could do something in a shell is not suggested.
        assert_eq!(
            stop_hint(&Unit::System("a;rm -rf /.service".into()), 7),
            "stop process 7"
        );
        let l = writer_refusal(
            b"/var/lib/db",
            b"/var/lib/db/x\n",
            42,
            "postgres\x1b",
            &Unit::System("postgresql.service".into()),
            2,
        );
        assert!(l.contains("/var/lib/db: /var/lib/db/x\\n is open for writing by postgres\\x1b (PID 42, unit postgresql.service) (and 2 more open files)"), "{l}");
        assert!(l.contains("`systemctl stop postgresql.service`"), "{l}");
    }

    #[test]
    fn configuration_lines() {
        let items = vec![
            (b"/var/lib/foo".to_vec(), true),
            (b"/etc/machine-id".to_vec(), false),
            (b"/var/lib/\x1b[31mred".to_vec(), true),
            (b"/srv/a \"b\" ${c}".to_vec(), true),
        ];
        let i = config_lines(PersistFormat::Impermanence, b"/persist", &items);
        assert!(i.contains("{\n  environment.persistence.\"/persist\" = {\n    directories = [\n      \"/var/lib/foo\"\n      \"/srv/a \\\"b\\\" \\${c}\"\n    ];\n    files = [\n      \"/etc/machine-id\"\n    ];\n  };\n}\n"), "{i}");
        assert!(i.contains("# left out, a Nix string cannot hold this name printably (add it by hand): /var/lib/\\x1b[31mred\n"), "{i}");
        assert!(!i.contains('\u{1b}'));
        let p = config_lines(PersistFormat::Preservation, b"/state", &items[..1]);
        assert_eq!(p, "{\n  preservation.preserveAt.\"/state\" = {\n    directories = [\n      \"/var/lib/foo\"\n    ];\n  };\n}\n");
        let f = config_lines(PersistFormat::Fstab, b"/persist", &items[..2]);
        assert_eq!(f, "{\n  fileSystems.\"/var/lib/foo\" = { device = \"/persist/var/lib/foo\"; options = [ \"bind\" ]; };\n  fileSystems.\"/etc/machine-id\" = { device = \"/persist/etc/machine-id\"; options = [ \"bind\" ]; };\n}\n");
        // One line per path (lost, report): the same forms.
        let t = Target {
            format: PersistFormat::Fstab,
            store: b"/persist".to_vec(),
            assumed: false,
        };
        assert_eq!(
            t.line(b"/var/lib/foo", true, None).unwrap(),
            "fileSystems.\"/var/lib/foo\" = { device = \"/persist/var/lib/foo\"; options = [ \"bind\" ]; };"
        );
        assert!(f.contains(&t.line(b"/etc/machine-id", false, None).unwrap()));
        assert_eq!(t.line(b"/var/lib/\x1b[31mred", true, None), None);
        let s = crate::config::merge(Default::default(), Default::default(), None);
        assert_eq!(s.store, None);
        let d = Target::of(&s);
        assert!(d.assumed && d.store == ASSUMED_STORE && d.format == PersistFormat::Impermanence);
        assert!(
            d.note()
                .contains("no `store =` in the config, so they name /persist"),
            "{}",
            d.note()
        );
        let odd = config_lines(PersistFormat::Fstab, b"/p\xff", &items[..1]);
        assert!(
            odd.starts_with("# the store's path /p\\xff cannot be written"),
            "{odd}"
        );
    }
}
