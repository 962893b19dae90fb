//! Noise rules: entries that are on the root but are not state a person needs to decide about.
//! Pure functions over an entry's path, kind, link text and emptiness, plus a small context
//! (persisted paths, `/etc/.clean`, mount points). Each rule is reported in `diff`'s summary with
//! how much it hid.

use crate::walk::{Entry, Kind};
use std::collections::HashSet;

/// Why an entry is hidden (summary lines come in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Below a configured persistent path (`--persist`, `persist =`).
    Persisted,
    /// `/etc/<x>` symlinks into `/etc/static`, and `/etc/static` itself.
    EtcStatic,
    /// Files NixOS copies into `/etc` at activation (listed in `/etc/.clean`).
    EtcCopied,
    /// Files and links NixOS activation or systemd recreate on every boot (table below).
    BootFile,
    /// Empty directories that are mount points (`/proc`, `/nix`, `/persist`, …).
    EmptyMountPoint,
    /// Empty directories that activation or systemd-tmpfiles create on every boot.
    EmptyBootDir,
    /// Unchanged since the baseline (counted by `diff`, not by [`classify`]).
    Unchanged,
}

impl Rule {
    /// Short machine name (`--json`).
    pub fn id(self) -> &'static str {
        match self {
            Rule::Persisted => "persisted",
            Rule::EtcStatic => "etc-static-links",
            Rule::EtcCopied => "etc-copied-files",
            Rule::BootFile => "boot-files",
            Rule::EmptyMountPoint => "empty-mount-points",
            Rule::EmptyBootDir => "empty-boot-dirs",
            Rule::Unchanged => "unchanged-since-baseline",
        }
    }
    /// What it hides, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Persisted => "under persisted paths (--persist / persist =)",
            Rule::EtcStatic => "NixOS /etc links into /etc/static (recreated by setup-etc.pl)",
            Rule::EtcCopied => "NixOS /etc files copied at activation (listed in /etc/.clean)",
            Rule::BootFile => "files NixOS activation and systemd recreate every boot",
            Rule::EmptyMountPoint => "empty mount-point directories",
            Rule::EmptyBootDir => "empty directories created at boot (activation, tmpfiles)",
            Rule::Unchanged => "unchanged since the baseline",
        }
    }
}

/// What NixOS recreates on every boot, with where it comes from (nixpkgs unless noted).
/// `link_only`: only when the entry is a symlink (a regular file there is someone's state).
pub struct BootFile {
    pub path: &'static str,
    pub link_only: bool,
    /// Where it comes from (documentation; shown by nothing).
    #[allow(dead_code)]
    pub source: &'static str,
}

pub const BOOT_FILES: &[BootFile] = &[
    BootFile { path: "/etc/static", link_only: true, source: "nixos/modules/system/etc/setup-etc.pl (atomic_symlink $etc, $static)" },
    BootFile { path: "/etc/.clean", link_only: false, source: "nixos/modules/system/etc/setup-etc.pl (list of copied files)" },
    BootFile { path: "/etc/NIXOS", link_only: false, source: "nixos/modules/system/etc/setup-etc.pl (\"Create /etc/NIXOS tag if not exists\")" },
    BootFile { path: "/etc/.updated", link_only: false, source: "systemd-update-done.service (ConditionNeedsUpdate stamp)" },
    BootFile { path: "/var/.updated", link_only: false, source: "systemd-update-done.service (ConditionNeedsUpdate stamp)" },
    BootFile { path: "/etc/mtab", link_only: true, source: "systemd tmpfiles.d/etc.conf (L+ /etc/mtab - - - - ../proc/self/mounts)" },
    BootFile { path: "/etc/.pwd.lock", link_only: false, source: "nixos/modules/config/update-users-groups.pl (lckpwdf lock file)" },
    BootFile { path: "/etc/passwd", link_only: false, source: "nixos/modules/config/update-users-groups.pl (rewritten from users.users + /var/lib/nixos)" },
    BootFile { path: "/etc/group", link_only: false, source: "nixos/modules/config/update-users-groups.pl" },
    BootFile { path: "/etc/shadow", link_only: false, source: "nixos/modules/config/update-users-groups.pl" },
    BootFile { path: "/etc/subuid", link_only: false, source: "nixos/modules/config/update-users-groups.pl" },
    BootFile { path: "/etc/subgid", link_only: false, source: "nixos/modules/config/update-users-groups.pl" },
    BootFile { path: "/bin/sh", link_only: true, source: "nixos/modules/config/shells-environment.nix (activationScripts.binsh)" },
    BootFile { path: "/usr/bin/env", link_only: true, source: "nixos/modules/system/activation/activation-script.nix (activationScripts.usrbinenv)" },
    BootFile { path: "/lib64/ld-linux-x86-64.so.2", link_only: true, source: "nixos/modules/config/ldso.nix (environment.ldso stub loader)" },
];

/// Empty directories created every boot: activation (`nixos/modules/system/activation/
/// activation-script.nix`: `/var/empty`, `/usr/bin`, `/bin`), systemd-tmpfiles (`tmpfiles.d/
/// {home,tmp,var,systemd}.conf`: `/home`, `/root`, `/srv`, `/tmp`, `/var/tmp`, `/var/lib/private`,
/// …) and the filesystem hierarchy NixOS creates in stage 2 (`nixos/modules/system/boot/stage-2-init.sh`).
pub const BOOT_DIRS: &[&str] = &[
    "/bin",
    "/etc",
    "/home",
    "/root",
    "/srv",
    "/mnt",
    "/opt",
    "/media",
    "/usr",
    "/usr/bin",
    "/var",
    "/var/empty",
    "/var/tmp",
    "/var/lib",
    "/var/log",
    "/var/cache",
    "/var/spool",
    "/var/db",
    "/var/lib/private",
    "/var/cache/private",
    "/var/log/private",
    "/var/lib/systemd",
    "/var/lib/nixos",
    "/var/log/journal",
    "/etc/nixos",
    "/etc/ssh",
    "/etc/tmpfiles.d",
    "/etc/systemd",
    "/lib64",
];

/// Usual mount points on NixOS (checked in addition to what is mounted now).
pub const MOUNT_DIRS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/nix",
    "/boot",
    "/efi",
    "/persist",
    "/persistent",
];

/// What the rules look at besides the entry. Paths are bytes.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Persisted paths, absolute, without trailing `/`.
    pub persist: Vec<Vec<u8>>,
    /// Contents of `/etc/.clean` on the root being looked at, as absolute paths.
    pub etc_clean: HashSet<Vec<u8>>,
    /// Mount points of the running system.
    pub mount_points: HashSet<Vec<u8>>,
}

impl Context {
    pub fn new(persist: &[Vec<u8>], etc_clean_text: &[u8], mount_points: HashSet<Vec<u8>>) -> Self {
        Context {
            persist: persist
                .iter()
                .map(|p| normalize(p))
                .filter(|p| !p.is_empty())
                .collect(),
            etc_clean: etc_clean_text
                .split(|&b| b == b'\n')
                .map(|l| l.trim_ascii())
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let l = l.strip_prefix(b"/").unwrap_or(l);
                    [b"/etc/".as_slice(), l].concat()
                })
                .collect(),
            mount_points,
        }
    }
}

/// `/a//b/` → `/a/b`; `/` → `` (empty: the whole tree).
pub fn normalize(p: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(p.len());
    for c in p
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
    {
        o.push(b'/');
        o.extend_from_slice(c);
    }
    o
}

/// Is `path` equal to `base` or below it, comparing whole components (`/var/lib` does not
/// contain `/var/library`).
pub fn is_under(path: &[u8], base: &[u8]) -> bool {
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/") || base.is_empty(),
        None => false,
    }
}

/// Is `path` a strict ancestor of `other` (on components)?
pub fn is_ancestor(path: &[u8], other: &[u8]) -> bool {
    other.len() > path.len() && is_under(other, path)
}

/// The rule that hides this entry, if any (the first that applies, in the order below).
pub fn classify(e: &Entry, cx: &Context) -> Option<Rule> {
    let p = e.path;
    if cx.persist.iter().any(|b| is_under(p, b)) {
        return Some(Rule::Persisted);
    }
    // An empty directory on the path to a persisted path is the skeleton impermanence creates.
    if e.meta.kind == Kind::Dir && e.empty_dir && cx.persist.iter().any(|b| is_ancestor(p, b)) {
        return Some(Rule::Persisted);
    }
    if e.meta.kind == Kind::Symlink && is_under(p, b"/etc") && p != b"/etc/static" {
        if let Some(l) = e.link {
            if l.starts_with(b"/etc/static/") {
                return Some(Rule::EtcStatic);
            }
        }
    }
    if e.meta.kind == Kind::File && cx.etc_clean.contains(p) {
        return Some(Rule::EtcCopied);
    }
    if e.meta.kind != Kind::Dir
        && BOOT_FILES
            .iter()
            .any(|b| b.path.as_bytes() == p && (!b.link_only || e.meta.kind == Kind::Symlink))
    {
        return Some(Rule::BootFile);
    }
    if e.meta.kind == Kind::Dir && e.empty_dir {
        if cx.mount_points.contains(p) || MOUNT_DIRS.iter().any(|m| m.as_bytes() == p) {
            return Some(Rule::EmptyMountPoint);
        }
        if BOOT_DIRS.iter().any(|d| d.as_bytes() == p) {
            return Some(Rule::EmptyBootDir);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walk::Meta;

    fn entry<'a>(path: &'a str, kind: Kind, empty: bool, link: Option<&'a str>) -> Entry<'a> {
        Entry {
            path: path.as_bytes(),
            depth: 1,
            meta: Meta::of(kind, 1),
            empty_dir: empty,
            link: link.map(str::as_bytes),
        }
    }

    #[test]
    fn component_prefixes() {
        let cases = [
            ("/var/lib", "/var/lib", true),
            ("/var/lib/x", "/var/lib", true),
            ("/var/library", "/var/lib", false),
            ("/var", "/var/lib", false),
            ("/etc/machine-id", "/etc/machine-id", true),
            ("/etc/machine-id.old", "/etc/machine-id", false),
            ("/anything", "", true),
        ];
        for (p, b, want) in cases {
            assert_eq!(is_under(p.as_bytes(), b.as_bytes()), want, "{p} under {b}");
        }
        assert_eq!(normalize(b"/var//lib/"), b"/var/lib");
        assert_eq!(normalize(b"/"), b"");
        assert!(is_ancestor(b"/var", b"/var/lib"));
        assert!(!is_ancestor(b"/var/lib", b"/var/lib"));
    }

    #[test]
    fn rules_table() {
        let mounts: HashSet<Vec<u8>> = [b"/data".to_vec()].into_iter().collect();
        let cx = Context::new(
            &[
                b"/var/log".to_vec(),
                b"/etc/machine-id".to_vec(),
                b"/home/alice/.ssh/".to_vec(),
                b"/var/lib/\xff".to_vec(),
            ],
            b"sudoers\nssh/ssh_known_hosts\n",
            mounts,
        );
        use Kind::*;
        let cases: &[(&str, Kind, bool, Option<&str>, Option<Rule>)] = &[
            (
                "/var/log/nginx/access.log",
                File,
                false,
                None,
                Some(Rule::Persisted),
            ),
            ("/var/log", Dir, true, None, Some(Rule::Persisted)),
            ("/var/logs/x", File, false, None, None),
            ("/etc/machine-id", File, false, None, Some(Rule::Persisted)),
            ("/etc/machine-id.old", File, false, None, None),
            (
                "/home/alice/.ssh/id_ed25519",
                File,
                false,
                None,
                Some(Rule::Persisted),
            ),
            ("/home/alice", Dir, true, None, Some(Rule::Persisted)),
            ("/home/alice", Dir, false, None, None),
            (
                "/etc/hosts",
                Symlink,
                false,
                Some("/etc/static/hosts"),
                Some(Rule::EtcStatic),
            ),
            (
                "/etc/ssh/sshd_config",
                Symlink,
                false,
                Some("/etc/static/ssh/sshd_config"),
                Some(Rule::EtcStatic),
            ),
            (
                "/etc/localtime",
                Symlink,
                false,
                Some("/nix/store/x-tzdata/share/zoneinfo/UTC"),
                None,
            ),
            (
                "/etc/static",
                Symlink,
                false,
                Some("/nix/store/abc-etc/etc"),
                Some(Rule::BootFile),
            ),
            ("/etc/sudoers", File, false, None, Some(Rule::EtcCopied)),
            (
                "/etc/ssh/ssh_known_hosts",
                File,
                false,
                None,
                Some(Rule::EtcCopied),
            ),
            ("/etc/ssh/ssh_host_ed25519_key", File, false, None, None),
            ("/etc/.clean", File, false, None, Some(Rule::BootFile)),
            ("/etc/NIXOS", File, false, None, Some(Rule::BootFile)),
            ("/etc/.updated", File, false, None, Some(Rule::BootFile)),
            ("/var/.updated", File, false, None, Some(Rule::BootFile)),
            (
                "/etc/mtab",
                Symlink,
                false,
                Some("../proc/self/mounts"),
                Some(Rule::BootFile),
            ),
            ("/etc/mtab", File, false, None, None),
            (
                "/bin/sh",
                Symlink,
                false,
                Some("/nix/store/x-bash/bin/sh"),
                Some(Rule::BootFile),
            ),
            ("/bin/sh", File, false, None, None),
            (
                "/usr/bin/env",
                Symlink,
                false,
                Some("/nix/store/x/bin/env"),
                Some(Rule::BootFile),
            ),
            ("/etc/passwd", File, false, None, Some(Rule::BootFile)),
            ("/proc", Dir, true, None, Some(Rule::EmptyMountPoint)),
            ("/data", Dir, true, None, Some(Rule::EmptyMountPoint)),
            ("/data", Dir, false, None, None),
            ("/var/empty", Dir, true, None, Some(Rule::EmptyBootDir)),
            (
                "/var/lib/private",
                Dir,
                true,
                None,
                Some(Rule::EmptyBootDir),
            ),
            ("/var/lib/postgresql", Dir, true, None, None),
            ("/var/lib/postgresql/16/base", File, false, None, None),
            ("/var/lib/\u{fffd}/x", File, false, None, None),
        ];
        for (p, k, empty, link, want) in cases {
            let got = classify(&entry(p, *k, *empty, *link), &cx);
            assert_eq!(got, *want, "{p} ({k:?})");
        }
        // A persisted non-UTF-8 path hides exactly its own bytes.
        let e = Entry {
            path: b"/var/lib/\xff/db",
            ..entry("", File, false, None)
        };
        assert_eq!(classify(&e, &cx), Some(Rule::Persisted));
    }
}
