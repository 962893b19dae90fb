//! What a journal message says about a missing file: a pure reading of the message's bytes, with
//! table tests over messages as systemd, sshd, nginx, PostgreSQL and common runtimes write them.
//!
//! - [`marker`]: does the message say that something does not exist? *Strong* markers
//!   ("No such file or directory", `ENOENT`) count even when no path can be read from the message
//!   (such messages are summarized); *weak* ones ("does not exist", "not found", "missing",
//!   sshd's "Could not load host key") only together with an absolute path.
//! - [`paths`]: the absolute paths the message names, quoted (`"…"`, `'…'`, `` `…' ``, `“…”`) or
//!   not (ended by white space, a control character, a bracket, a comma or a semicolon; a trailing
//!   `:` or `.` is punctuation). systemd's `/run/systemd/unit-root` prefix (a unit's private mount
//!   namespace) is removed; `.` components and repeated slashes go; a path with `..` is not
//!   trusted and dropped; paths under `/proc`, `/sys`, `/dev`, `/run` and `/nix` are not on the
//!   root and are counted apart ([`Named::elsewhere`]).

/// How a message says that something is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Marker {
    None,
    /// Only with a path: "does not exist", "not found", "missing", "could not load host key".
    Weak,
    /// "No such file or directory", `ENOENT`.
    Strong,
}

const STRONG: &[&str] = &["no such file or directory", "enoent"];
const WEAK: &[&str] = &[
    "does not exist",
    "not found",
    "missing",
    "could not load host key",
    "unable to load host key",
    "cannot find",
    "can't find",
];

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// See the module documentation.
pub fn marker(msg: &[u8]) -> Marker {
    if STRONG.iter().any(|m| contains_ci(msg, m)) {
        Marker::Strong
    } else if WEAK.iter().any(|m| contains_ci(msg, m)) {
        Marker::Weak
    } else {
        Marker::None
    }
}

/// The paths a message names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Named {
    /// On the root: absolute, normalized, in order of appearance, without repeats.
    pub paths: Vec<Vec<u8>>,
    /// Under `/proc`, `/sys`, `/dev`, `/run`, `/nix`: not on the root, not our business.
    pub elsewhere: usize,
}

/// Mounts of their own on every systemd machine (NixOS: `/nix` too): never on the root.
const ELSEWHERE: &[&[u8]] = &[b"/proc", b"/sys", b"/dev", b"/run", b"/nix"];
/// systemd shows paths inside a unit's mount namespace with this prefix.
const UNIT_ROOT: &[u8] = b"/run/systemd/unit-root";

fn ends_unquoted(c: u8) -> bool {
    c <= b' '
        || c == 0x7f
        || matches!(
            c,
            b'"' | b'\''
                | b'`'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'<'
                | b'>'
                | b','
                | b';'
                | b'|'
        )
}

/// May an unquoted path start after this byte? Not inside a word (`I/O`, `2/3`, `a/b`).
fn starts_after(prev: Option<u8>) -> bool {
    match prev {
        None => true,
        Some(c) => c <= b' ' || matches!(c, b'(' | b'[' | b'{' | b'<' | b'=' | b':' | b','),
    }
}

/// Closing quote for an opening quote at `msg[i..]`: (length of the opening quote, closing bytes).
fn quote_at(msg: &[u8], i: usize) -> Option<(usize, &'static [u8])> {
    let rest = &msg[i..];
    match rest.first()? {
        b'"' => Some((1, b"\"")),
        b'\'' => Some((1, b"'")),
        b'`' => Some((1, b"'")),
        _ if rest.starts_with("“".as_bytes()) => Some((3, "”".as_bytes())),
        _ if rest.starts_with("‘".as_bytes()) => Some((3, "’".as_bytes())),
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Clean up a raw path: strip systemd's unit-root prefix, drop `.` components and repeated
/// slashes. `None` for a path with `..` or nothing left.
pub fn normalize(raw: &[u8]) -> Option<Vec<u8>> {
    let raw = match raw.strip_prefix(UNIT_ROOT) {
        Some(r) if r.first() == Some(&b'/') => r,
        _ => raw,
    };
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                out.push(b'/');
                out.extend_from_slice(c);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_elsewhere(p: &[u8]) -> bool {
    ELSEWHERE
        .iter()
        .any(|e| p.starts_with(e) && (p.len() == e.len() || p[e.len()] == b'/'))
}

/// See the module documentation.
pub fn paths(msg: &[u8]) -> Named {
    let mut out = Named::default();
    let push = |raw: &[u8], out: &mut Named| {
        // `//host/x` is a URL's tail or a UNC name, not a path.
        if raw.starts_with(b"//") {
            return;
        }
        let Some(p) = normalize(raw) else { return };
        if is_elsewhere(&p) {
            out.elsewhere += 1;
        } else if !out.paths.contains(&p) {
            out.paths.push(p);
        }
    };
    let mut i = 0;
    while i < msg.len() {
        if let Some((ql, close)) = quote_at(msg, i) {
            let start = i + ql;
            if msg.get(start) == Some(&b'/') {
                if let Some(len) = find(&msg[start..], close) {
                    let raw = &msg[start..start + len];
                    if !raw.iter().any(|&c| c == 0 || c == b'\n') {
                        push(raw, &mut out);
                        i = start + len + close.len();
                        continue;
                    }
                }
            }
            i += ql;
            continue;
        }
        if msg[i] == b'/' && starts_after(i.checked_sub(1).map(|j| msg[j])) {
            let len = msg[i..]
                .iter()
                .position(|&c| ends_unquoted(c))
                .unwrap_or(msg.len() - i);
            let mut raw = &msg[i..i + len];
            while let Some((&last, rest)) = raw.split_last() {
                if matches!(last, b':' | b'.' | b'!' | b'?') && rest.len() > 1 {
                    raw = rest;
                } else {
                    break;
                }
            }
            if raw.len() > 1 {
                push(raw, &mut out);
            }
            i += len.max(1);
            continue;
        }
        i += 1;
    }
    out
}

/// A unit's result when the message is systemd saying that the unit failed: `UNIT_RESULT`, or
/// the text `<unit>: Failed with result '<result>'.` (messages without the structured field).
pub fn failed_result(msg: &[u8], unit_result: Option<&[u8]>) -> Option<Vec<u8>> {
    if let Some(r) = unit_result {
        return Some(r.to_vec());
    }
    let at = find(msg, b"Failed with result '")? + b"Failed with result '".len();
    let len = msg[at..].iter().position(|&c| c == b'\'')?;
    Some(msg[at..at + len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (message, marker, paths on the root, paths elsewhere)
    const CASES: &[(&str, Marker, &[&str], usize)] = &[
        // systemd (PID 1, on behalf of a unit)
        (
            "nginx.service: Failed to set up mount namespacing: /run/systemd/unit-root/var/lib/acme/example.org: No such file or directory",
            Marker::Strong,
            &["/var/lib/acme/example.org"],
            0,
        ),
        (
            "foo.service: Failed to load environment files: No such file or directory",
            Marker::Strong,
            &[],
            0,
        ),
        (
            "foo.service: Failed to execute /usr/local/bin/foo: No such file or directory",
            Marker::Strong,
            &["/usr/local/bin/foo"],
            0,
        ),
        (
            "foo.service: Failed at step EXEC spawning /nix/store/abc-foo/bin/foo: No such file or directory",
            Marker::Strong,
            &[],
            1,
        ),
        (
            "foo.service: Failed to set up credentials: /etc/credstore/foo.key: No such file or directory",
            Marker::Strong,
            &["/etc/credstore/foo.key"],
            0,
        ),
        ("sshd.service: Failed with result 'exit-code'.", Marker::None, &[], 0),
        // sshd
        (
            "Could not load host key: /etc/ssh/ssh_host_ed25519_key",
            Marker::Weak,
            &["/etc/ssh/ssh_host_ed25519_key"],
            0,
        ),
        (
            "Unable to load host key \"/etc/ssh/ssh_host_rsa_key\": No such file or directory",
            Marker::Strong,
            &["/etc/ssh/ssh_host_rsa_key"],
            0,
        ),
        ("sshd: no hostkeys available -- exiting.", Marker::None, &[], 0),
        (
            "Missing privilege separation directory: /run/sshd",
            Marker::Weak,
            &[],
            1,
        ),
        // nginx
        (
            "nginx: [emerg] open() \"/var/log/nginx/error.log\" failed (2: No such file or directory)",
            Marker::Strong,
            &["/var/log/nginx/error.log"],
            0,
        ),
        (
            "2026/11/30 12:00:00 [emerg] 1234#1234: cannot load certificate \"/var/lib/acme/example.org/fullchain.pem\": BIO_new_file() failed (SSL: error:80000002:system library::No such file or directory:calling fopen(/var/lib/acme/example.org/fullchain.pem, r) error:10000080:BIO routines::no such file)",
            Marker::Strong,
            &["/var/lib/acme/example.org/fullchain.pem"],
            0,
        ),
        (
            "nginx: [emerg] mkdir() \"/var/cache/nginx/client_body\" failed (2: No such file or directory)",
            Marker::Strong,
            &["/var/cache/nginx/client_body"],
            0,
        ),
        // PostgreSQL
        (
            "postgres: could not access directory \"/var/lib/postgresql/16\": No such file or directory",
            Marker::Strong,
            &["/var/lib/postgresql/16"],
            0,
        ),
        (
            "2026-11-30 12:00:00.000 UTC [812] FATAL:  could not open file \"global/pg_filenode.map\": No such file or directory",
            Marker::Strong,
            &[],
            0,
        ),
        (
            "FATAL:  could not load server certificate file \"server.crt\": No such file or directory",
            Marker::Strong,
            &[],
            0,
        ),
        ("FATAL:  database \"app\" does not exist", Marker::Weak, &[], 0),
        // Runtimes and tools
        (
            "open(/var/lib/foo/state.db) failed: No such file or directory",
            Marker::Strong,
            &["/var/lib/foo/state.db"],
            0,
        ),
        (
            "Error: open /var/lib/tailscale/tailscaled.state: no such file or directory",
            Marker::Strong,
            &["/var/lib/tailscale/tailscaled.state"],
            0,
        ),
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/var/lib/app/db.sqlite'",
            Marker::Strong,
            &["/var/lib/app/db.sqlite"],
            0,
        ),
        (
            "Error: ENOENT: no such file or directory, open '/var/lib/grafana/grafana.db'",
            Marker::Strong,
            &["/var/lib/grafana/grafana.db"],
            0,
        ),
        (
            "thread 'main' panicked at src/main.rs:10:5: No such file or directory (os error 2)",
            Marker::Strong,
            &[],
            0,
        ),
        (
            "cat: /var/lib/app//./config.toml: No such file or directory",
            Marker::Strong,
            &["/var/lib/app/config.toml"],
            0,
        ),
        (
            "config file=/etc/app/app.conf not found.",
            Marker::Weak,
            &["/etc/app/app.conf"],
            0,
        ),
        (
            "Directory ‘/srv/data’ does not exist",
            Marker::Weak,
            &["/srv/data"],
            0,
        ),
        (
            "stat `/home/alice/My Documents' failed: No such file or directory",
            Marker::Strong,
            &["/home/alice/My Documents"],
            0,
        ),
        // Not paths: words with slashes, URLs, `..`, the root alone.
        (
            "I/O error on 2/3 of the reads: see https://example.org/x/y (No such file or directory)",
            Marker::Strong,
            &[],
            0,
        ),
        (
            "open /var/lib/../../etc/shadow: No such file or directory",
            Marker::Strong,
            &[],
            0,
        ),
        ("chdir / failed: No such file or directory", Marker::Strong, &[], 0),
        ("Started nginx.service.", Marker::None, &[], 0),
    ];

    #[test]
    fn messages() {
        for (msg, m, want, elsewhere) in CASES {
            assert_eq!(marker(msg.as_bytes()), *m, "{msg}");
            let got = paths(msg.as_bytes());
            let want: Vec<Vec<u8>> = want.iter().map(|p| p.as_bytes().to_vec()).collect();
            assert_eq!(got.paths, want, "{msg}");
            assert_eq!(got.elsewhere, *elsewhere, "{msg}");
        }
    }

    #[test]
    fn names_are_bytes() {
        // A name that is not UTF-8, and one with a terminal escape: kept whole inside quotes
        // (shown escaped), the end of an unquoted path.
        let got = paths(b"open(/var/lib/caf\xe9/db) failed: No such file or directory");
        assert_eq!(got.paths, vec![b"/var/lib/caf\xe9/db".to_vec()]);
        let got = paths(b"cannot open \"/srv/\x1b[31mred\": No such file or directory");
        assert_eq!(got.paths, vec![b"/srv/\x1b[31mred".to_vec()]);
        let got = paths(b"/var/lib/x\x1b[0m: No such file or directory");
        assert_eq!(got.paths, vec![b"/var/lib/x".to_vec()]);
        assert_eq!(
            normalize(b"/run/systemd/unit-root"),
            Some(b"/run/systemd/unit-root".to_vec())
        );
        assert_eq!(
            normalize(b"/run/systemd/unit-root/etc/x"),
            Some(b"/etc/x".to_vec())
        );
        assert_eq!(normalize(b"///"), None);
    }

    #[test]
    fn unit_results() {
        assert_eq!(
            failed_result(b"sshd.service: Failed with result 'exit-code'.", None),
            Some(b"exit-code".to_vec())
        );
        assert_eq!(
            failed_result(b"whatever", Some(b"timeout")),
            Some(b"timeout".to_vec())
        );
        assert_eq!(failed_result(b"Started sshd.service.", None), None);
    }
}
