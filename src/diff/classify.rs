//! Grouping entries into state directories and judging them: a pure, table-driven mapping from a
//! path to its group (`/var/lib/<service>`, `/home/<user>/<top-level entry>`, …) and a verdict
//! with the reason, after the seed's table (`/var/lib/<svc>` usually persist, `/var/cache/<svc>`
//! usually not, `/var/log/<svc>` optional, `/etc/<svc>` only if generated at run time).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Persist,
    OnlyIfGenerated,
    Optional,
    ProbablyNot,
    /// No rule knows this place: look at it.
    Review,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Persist => "persist",
            Verdict::OnlyIfGenerated => "only-if-generated",
            Verdict::Optional => "optional",
            Verdict::ProbablyNot => "probably not",
            Verdict::Review => "review",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row: a path pattern (components; `*` is any one component, `x*` any component starting
/// with `x`), the verdict for everything below a match, and why. The group is the matched prefix:
/// as many components as the pattern has. First match wins.
pub struct Row {
    pub pattern: &'static str,
    pub verdict: Verdict,
    pub reason: &'static str,
}

const fn row(pattern: &'static str, verdict: Verdict, reason: &'static str) -> Row {
    Row {
        pattern,
        verdict,
        reason,
    }
}

use Verdict::*;

/// System paths.
pub const SYSTEM: &[Row] = &[
    row("/var/lib/nixos", Persist, "NixOS uid/gid allocations; without it ids can change between boots"),
    row("/var/lib/systemd", Persist, "systemd state: persistent timers, random seed, backlight, coredumps"),
    row("/var/lib/private/*", Persist, "state of a DynamicUser= service (reached through /var/lib/<name>)"),
    row("/var/lib/logrotate.status", Optional, "logrotate bookkeeping; only matters if /var/log is persisted"),
    row("/var/lib/*", Persist, "service state under /var/lib: usually must persist"),
    row("/var/cache/*", ProbablyNot, "cache: rebuilt by the service when missing"),
    row("/var/log/journal", Optional, "the journal: persist /var/log to keep logs across boots"),
    row("/var/log/*", Optional, "logs: persist /var/log if you want them across boots"),
    row("/var/tmp", ProbablyNot, "temporary files"),
    row("/var/spool/*", Persist, "queued work (mail, print, cron jobs) that has not been processed yet"),
    row("/var/db/*", Optional, "small bookkeeping (e.g. sudo lecture stamps)"),
    row("/etc/machine-id", Persist, "generated on first boot; journal, DHCP and D-Bus identity change every boot without it"),
    row("/etc/ssh/ssh_host_*", Persist, "SSH host key generated at first start: clients see a changed host key every boot without it"),
    row("/etc/NetworkManager/system-connections", Persist, "Wi-Fi and VPN connections created at run time"),
    row("/etc/nixos", Persist, "your NixOS configuration"),
    row("/etc/adjtime", Optional, "hardware clock drift, written by hwclock / timedated"),
    row("/etc/*", OnlyIfGenerated, "/etc comes from your configuration; persist only what a program writes at run time"),
    row("/tmp", ProbablyNot, "temporary files"),
    row("/srv/*", Persist, "data served by this machine"),
    row("/var/*", Review, "unusual place under /var"),
    row("/*", Review, "outside the places NixOS and services normally keep state"),
];

/// Paths inside a home directory (relative, without leading `/`).
pub const HOME: &[Row] = &[
    row(
        ".cache",
        ProbablyNot,
        "per-user cache: rebuilt when missing",
    ),
    row(".ssh", Persist, "SSH keys and known hosts"),
    row(".gnupg", Persist, "GnuPG keys"),
    row(".password-store", Persist, "pass passwords"),
    row(".config", Persist, "application settings"),
    row(".local/share", Persist, "application data (XDG_DATA_HOME)"),
    row(
        ".local/state",
        Optional,
        "application state such as histories (XDG_STATE_HOME)",
    ),
    row(".local/*", Review, "unusual place under ~/.local"),
    row(".mozilla", Persist, "Firefox profile"),
    row(".thunderbird", Persist, "Thunderbird profile"),
    row(".bash_history", Optional, "shell history"),
    row(".zsh_history", Optional, "shell history"),
    row(".python_history", Optional, "interpreter history"),
    row(".lesshst", ProbablyNot, "less history"),
    row(".viminfo", Optional, "vim history and marks"),
    row(
        ".Xauthority",
        ProbablyNot,
        "X session cookie, recreated at login",
    ),
    row(
        ".ICEauthority",
        ProbablyNot,
        "session cookie, recreated at login",
    ),
    row(
        ".cargo",
        Optional,
        "Rust toolchain and crate downloads: can be fetched again",
    ),
    row(".rustup", Optional, "Rust toolchains: can be fetched again"),
    row(".npm", ProbablyNot, "npm download cache"),
    row(
        ".nix-profile",
        Optional,
        "link to your nix profile (nix-env / home-manager)",
    ),
    row(".nix-defexpr", Optional, "nix channels for nix-env"),
    row(
        ".*",
        Review,
        "application dotfile: persist it if the program's settings or data matter",
    ),
    row("*", Persist, "your files"),
];

/// A group: the place a person would persist, what it is, and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Absolute path of the group (`/var/lib/postgresql`, `/home/alice/.ssh`), as bytes.
    pub path: Vec<u8>,
    /// For home paths: (user name, home directory, path relative to home).
    pub home: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    pub verdict: Verdict,
    pub reason: &'static str,
}

fn component_matches(pat: &str, c: &[u8]) -> bool {
    if pat == "*" {
        return true;
    }
    match pat.strip_suffix('*') {
        Some(prefix) => c.starts_with(prefix.as_bytes()),
        None => pat.as_bytes() == c,
    }
}

/// Match `comps` against a table; returns (number of components of the group, row).
fn lookup<'t>(table: &'t [Row], comps: &[&[u8]]) -> Option<(usize, &'t Row)> {
    table.iter().find_map(|r| {
        let pat = r.pattern.trim_start_matches('/');
        let n = pat.split('/').count();
        (n <= comps.len()
            && pat
                .split('/')
                .zip(comps)
                .all(|(p, c)| component_matches(p, c)))
        .then_some((n, r))
    })
}

fn components(path: &[u8]) -> Vec<&[u8]> {
    let p = path.strip_prefix(b"/").unwrap_or(path);
    p.split(|&b| b == b'/').collect()
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The user, home directory and the rest of the path, for `/home/<user>/…` and `/root/…`.
pub fn split_home(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<&[u8]>)> {
    let comps = components(path);
    match comps.as_slice() {
        [b"root", rest @ ..] if !rest.is_empty() => {
            Some((b"root".to_vec(), b"/root".to_vec(), rest.to_vec()))
        }
        [b"home", user, rest @ ..] if !rest.is_empty() => {
            Some((user.to_vec(), [b"/home/", *user].concat(), rest.to_vec()))
        }
        _ => None,
    }
}

/// The group and verdict of an absolute path.
pub fn group_of(path: &[u8]) -> Group {
    if let Some((user, home, rest)) = split_home(path) {
        let (n, r) = lookup(HOME, &rest).unwrap_or((rest.len(), &HOME[HOME.len() - 1]));
        let rel = join(&rest[..n]);
        return Group {
            path: [home.as_slice(), b"/", &rel].concat(),
            home: Some((user, home, rel)),
            verdict: r.verdict,
            reason: r.reason,
        };
    }
    let comps = components(path);
    match lookup(SYSTEM, &comps) {
        Some((n, r)) => Group {
            path: [b"/".as_slice(), &join(&comps[..n])].concat(),
            home: None,
            verdict: r.verdict,
            reason: r.reason,
        },
        None => Group {
            path: path.to_vec(),
            home: None,
            verdict: Review,
            reason: "outside the places NixOS and services normally keep state",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_verdicts() {
        let cases: &[(&str, &str, Verdict)] = &[
            (
                "/var/lib/postgresql/16/base/1/1259",
                "/var/lib/postgresql",
                Persist,
            ),
            (
                "/var/lib/tailscale/tailscaled.state",
                "/var/lib/tailscale",
                Persist,
            ),
            (
                "/var/lib/private/step-ca/db",
                "/var/lib/private/step-ca",
                Persist,
            ),
            (
                "/var/lib/systemd/timers/stamp-x.timer",
                "/var/lib/systemd",
                Persist,
            ),
            ("/var/lib/nixos/uid-map", "/var/lib/nixos", Persist),
            (
                "/var/lib/logrotate.status",
                "/var/lib/logrotate.status",
                Optional,
            ),
            (
                "/var/cache/nginx/proxy/1/ab",
                "/var/cache/nginx",
                ProbablyNot,
            ),
            ("/var/log/nginx/access.log", "/var/log/nginx", Optional),
            (
                "/var/log/journal/abc/system.journal",
                "/var/log/journal",
                Optional,
            ),
            ("/var/log/wtmp", "/var/log/wtmp", Optional),
            ("/var/tmp/systemd-private-x/tmp/f", "/var/tmp", ProbablyNot),
            (
                "/var/spool/postfix/maildrop/1",
                "/var/spool/postfix",
                Persist,
            ),
            ("/etc/machine-id", "/etc/machine-id", Persist),
            (
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key",
                Persist,
            ),
            (
                "/etc/ssh/ssh_host_rsa_key.pub",
                "/etc/ssh/ssh_host_rsa_key.pub",
                Persist,
            ),
            ("/etc/ssh/moduli", "/etc/ssh", OnlyIfGenerated),
            (
                "/etc/NetworkManager/system-connections/home.nmconnection",
                "/etc/NetworkManager/system-connections",
                Persist,
            ),
            (
                "/etc/NetworkManager/NetworkManager.conf",
                "/etc/NetworkManager",
                OnlyIfGenerated,
            ),
            ("/etc/nginx/nginx.conf", "/etc/nginx", OnlyIfGenerated),
            ("/etc/resolv.conf", "/etc/resolv.conf", OnlyIfGenerated),
            ("/tmp/x/y", "/tmp", ProbablyNot),
            ("/srv/www/index.html", "/srv/www", Persist),
            ("/opt/thing/bin/x", "/opt", Review),
            ("/var/weird/x", "/var/weird", Review),
            (
                "/home/alice/.cache/mozilla/x",
                "/home/alice/.cache",
                ProbablyNot,
            ),
            ("/home/alice/.ssh/known_hosts", "/home/alice/.ssh", Persist),
            (
                "/home/alice/.config/nvim/init.lua",
                "/home/alice/.config",
                Persist,
            ),
            (
                "/home/alice/.local/share/fish/fish_history",
                "/home/alice/.local/share",
                Persist,
            ),
            (
                "/home/alice/.local/state/wireplumber/x",
                "/home/alice/.local/state",
                Optional,
            ),
            (
                "/home/alice/.bash_history",
                "/home/alice/.bash_history",
                Optional,
            ),
            ("/home/alice/.weirdapp/db", "/home/alice/.weirdapp", Review),
            (
                "/home/alice/projects/x/main.rs",
                "/home/alice/projects",
                Persist,
            ),
            ("/home/alice/notes.txt", "/home/alice/notes.txt", Persist),
            ("/root/.bash_history", "/root/.bash_history", Optional),
            ("/root/.ssh/id_ed25519", "/root/.ssh", Persist),
        ];
        for (p, g, v) in cases {
            let got = group_of(p.as_bytes());
            assert_eq!(
                (got.path.as_slice(), got.verdict),
                (g.as_bytes(), *v),
                "{p}"
            );
        }
        let g = group_of(b"/home/alice/.local/share/x");
        assert_eq!(
            g.home,
            Some((
                b"alice".to_vec(),
                b"/home/alice".to_vec(),
                b".local/share".to_vec()
            ))
        );
        assert_eq!(
            group_of(b"/root/x").home.map(|h| h.0),
            Some(b"root".to_vec())
        );
        assert_eq!(group_of(b"/home/alice").home, None);
        // Names are bytes: a non-UTF-8 user or service keeps its bytes.
        let g = group_of(b"/var/lib/\xff\n/x");
        assert_eq!(g.path, b"/var/lib/\xff\n");
        let g = group_of(b"/home/\xfe/notes");
        assert_eq!(g.home.map(|h| h.0), Some(b"\xfe".to_vec()));
    }
}
