//! The persistence checks' decisions as plain functions with table tests: which paths are
//! critical, which store entries a declaration covers, and how an entry on the root compares with
//! its persisted copy.

use crate::walk::{Kind, Meta};

/// `p` is `q` or below it (absolute paths as bytes, normalized).
pub fn under(p: &[u8], q: &[u8]) -> bool {
    p == q || (p.len() > q.len() && p.starts_with(q) && (q == b"/" || p[q.len()] == b'/'))
}

fn basename(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// A file name that looks like a secret key or keyfile: `key`, `keyfile`, `*.key`, `*_key`,
/// `*-key`, `key.*`, `key_*`, `key-*`, anything with `keyfile` in it, an SSH private key
/// (`id_rsa`, `id_ed25519`, …). Not: `monkey`, `keyboard`, `hotkeys.conf`, `*.pub`.
pub fn named_like_a_key(name: &[u8]) -> bool {
    let n = name.to_ascii_lowercase();
    if n.ends_with(b".pub") {
        return false;
    }
    let has = |w: &[u8]| n.windows(w.len()).any(|x| x == w);
    n == b"key"
        || has(b"keyfile")
        || [&b".key"[..], b"_key", b"-key"]
            .iter()
            .any(|s| n.ends_with(s))
        || [&b"key."[..], b"key_", b"key-"]
            .iter()
            .any(|s| n.starts_with(s))
        || (n.starts_with(b"id_")
            && [
                &b"rsa"[..],
                b"dsa",
                b"ecdsa",
                b"ed25519",
                b"ecdsa_sk",
                b"ed25519_sk",
            ]
            .iter()
            .any(|k| &n[3..] == *k))
}

/// Why a missing `p` (a persisted path, absolute) is an error rather than a warning: the next
/// boot without it fails or changes the machine's identity. `listed`: the config's `critical`
/// paths (a listed path below `p` makes `p` critical too: it is missing with it).
pub fn critical_reason(p: &[u8], listed: &[Vec<u8>]) -> Option<&'static str> {
    if listed.iter().any(|c| under(p, c) || under(c, p)) {
        return Some("listed under `critical` in the config");
    }
    if p == b"/etc/machine-id" {
        return Some("the machine's identity (journal, DHCP, systemd): a new one is made at boot");
    }
    if p == b"/etc/ssh" || (under(p, b"/etc/ssh") && basename(p).starts_with(b"ssh_host_")) {
        return Some("SSH host keys: new ones are made at boot and every client warns");
    }
    if under(p, b"/boot") {
        return Some("under /boot, read before the root is mounted (a LUKS keyfile, a boot key)");
    }
    if named_like_a_key(basename(p)) {
        return Some("named like a key or keyfile (a LUKS or service key)");
    }
    None
}

/// How an entry of the store relates to the declarations (persisted paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// A declared path or inside one.
    Covered,
    /// A directory above a declared path (the store holds the declared path below it).
    Ancestor,
    /// Neither: no declaration mounts it (impermanence#228).
    Stray,
}

/// `p`: the entry's path below the store, as on the root (`/var/lib/x` for `<store>/var/lib/x`).
pub fn coverage(p: &[u8], declared: &[Vec<u8>]) -> Coverage {
    if declared.iter().any(|d| under(p, d)) {
        Coverage::Covered
    } else if declared.iter().any(|d| under(d, p)) {
        Coverage::Ancestor
    } else {
        Coverage::Stray
    }
}

/// The declared paths that are not inside another declared path, sorted, each once.
pub fn top_level(declared: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = declared
        .iter()
        .filter(|d| !declared.iter().any(|o| o != *d && under(d, o)))
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An entry on the root, under a persisted path, against its persisted copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// The store holds the same (same kind; files: same size and modification time, or the same
    /// content; symlinks: same target).
    Same,
    /// The store has nothing there: only the root holds it.
    Missing,
    /// Different, and the root's is the newer (or of another kind): the root holds data the store
    /// lacks.
    Newer,
    /// Different, and the store's is newer: most likely the root's is the version the store's copy
    /// was made from (superseded).
    Older,
    /// Files of the same size, the root's newer: only their content can tell.
    ReadContent,
}

/// Compare by kind, size, modification time (ns) and symlink text; content is never read here
/// (see [`Compared::ReadContent`]). Directories present on both sides are the same (their
/// entries are compared one by one).
pub fn compare(
    root: &Meta,
    root_link: Option<&[u8]>,
    store: Option<(&Meta, Option<&[u8]>)>,
) -> Compared {
    let Some((s, s_link)) = store else {
        return Compared::Missing;
    };
    if root.kind != s.kind {
        return Compared::Newer;
    }
    let newer = root.mtime > s.mtime;
    let by_time = if newer {
        Compared::Newer
    } else {
        Compared::Older
    };
    match root.kind {
        Kind::Dir | Kind::Other => Compared::Same,
        Kind::Symlink => {
            if root_link == s_link {
                Compared::Same
            } else {
                by_time
            }
        }
        Kind::File => {
            if root.size == s.size && root.mtime == s.mtime {
                Compared::Same
            } else if root.size == s.size && newer {
                Compared::ReadContent
            } else {
                by_time
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn critical_paths() {
        let listed = vec![b"/var/lib/secrets/luks".to_vec()];
        let cases: &[(&str, bool)] = &[
            ("/etc/machine-id", true),
            ("/etc/machine-info", false),
            ("/etc/ssh/ssh_host_ed25519_key", true),
            ("/etc/ssh/ssh_host_rsa_key.pub", true),
            ("/etc/ssh", true),
            ("/etc/ssh/sshd_config", false),
            ("/etc/sshx/ssh_host_x", false),
            ("/boot/keyfile_nvme0n1p1", true),
            ("/boot", true),
            ("/bootloader/x", false),
            ("/etc/secrets/initrd/ssh_host_ed25519_key", true),
            ("/var/lib/sops-nix/key.txt", true),
            ("/etc/luks.key", true),
            ("/etc/wireguard/private-key", true),
            ("/var/lib/x/keyfile", true),
            ("/root/.ssh/id_ed25519", true),
            ("/root/.ssh/id_ed25519.pub", false),
            ("/root/.ssh/id_rsa_old", false),
            ("/var/lib/monkey", false),
            ("/etc/keyboard", false),
            ("/home/u/.config/hotkeys.conf", false),
            ("/var/lib/secrets", true),
            ("/var/lib/secrets/luks", true),
            ("/var/lib/secrets/luks/a", true),
            ("/var/lib/secretsx", false),
            ("/var/lib/postgresql", false),
        ];
        for (p, want) in cases {
            assert_eq!(
                critical_reason(p.as_bytes(), &listed).is_some(),
                *want,
                "{p}"
            );
        }
        assert_eq!(
            critical_reason(b"/var/lib/secrets", &listed),
            Some("listed under `critical` in the config")
        );
    }

    #[test]
    fn store_entries_and_declarations() {
        let d = vec![
            b"/var/lib/nixos".to_vec(),
            b"/etc/machine-id".to_vec(),
            b"/var/log".to_vec(),
        ];
        for (p, want) in [
            ("/var", Coverage::Ancestor),
            ("/var/lib", Coverage::Ancestor),
            ("/var/lib/nixos", Coverage::Covered),
            ("/var/lib/nixos/uid-map", Coverage::Covered),
            ("/var/lib/nixosx", Coverage::Stray),
            ("/var/lib/old-db", Coverage::Stray),
            ("/etc", Coverage::Ancestor),
            ("/etc/machine-id", Coverage::Covered),
            ("/etc/ssh", Coverage::Stray),
            ("/home", Coverage::Stray),
        ] {
            assert_eq!(coverage(p.as_bytes(), &d), want, "{p}");
        }
        assert_eq!(coverage(b"/x", &[]), Coverage::Stray);
        let t = top_level(&[
            b"/var/lib".to_vec(),
            b"/var/lib/nixos".to_vec(),
            b"/etc/ssh".to_vec(),
            b"/var/lib".to_vec(),
            b"/var/libx".to_vec(),
        ]);
        assert_eq!(
            t,
            vec![
                b"/etc/ssh".to_vec(),
                b"/var/lib".to_vec(),
                b"/var/libx".to_vec()
            ]
        );
    }

    #[test]
    fn root_against_store() {
        let m = |kind: Kind, size: u64, mtime: i64| Meta {
            kind,
            size,
            dev: 0,
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: (mtime, 0),
            ctime: (0, 0),
            allocated: 0,
        };
        use Compared::*;
        use Kind::*;
        let f = m(File, 10, 100);
        let cases: Vec<(Meta, Option<&[u8]>, Option<(Meta, Option<&[u8]>)>, Compared)> = vec![
            (f, None, None, Missing),
            (m(Dir, 0, 5), None, None, Missing),
            (f, None, Some((m(File, 10, 100), None)), Same),
            (f, None, Some((m(File, 11, 100), None)), Older),
            (f, None, Some((m(File, 11, 99), None)), Newer),
            (f, None, Some((m(File, 11, 101), None)), Older),
            (f, None, Some((m(File, 10, 99), None)), ReadContent),
            (f, None, Some((m(File, 10, 101), None)), Older),
            (f, None, Some((m(Dir, 0, 200), None)), Newer),
            (m(Dir, 0, 5), None, Some((m(Dir, 0, 500), None)), Same),
            (
                m(Symlink, 1, 5),
                Some(b"a"),
                Some((m(Symlink, 1, 1), Some(b"a"))),
                Same,
            ),
            (
                m(Symlink, 1, 5),
                Some(b"a"),
                Some((m(Symlink, 1, 1), Some(b"b"))),
                Newer,
            ),
            (
                m(Symlink, 1, 5),
                Some(b"a"),
                Some((m(Symlink, 1, 9), Some(b"b"))),
                Older,
            ),
            (m(Other, 0, 5), None, Some((m(Other, 0, 1), None)), Same),
        ];
        for (i, (r, rl, s, want)) in cases.iter().enumerate() {
            let got = compare(r, *rl, s.as_ref().map(|(m, l)| (m, *l)));
            assert_eq!(got, *want, "case {i}");
        }
    }
}
