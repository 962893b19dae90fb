//! Command-line parsing (lexopt). Options may come before or after the command name.

use crate::config::{apply_key, FsType, KeyError, Mode, Partial};
use crate::error::{Error, Result};
use crate::escape;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Rollback,
    Finish,
    List,
    Gc,
    Pin(String),
    Unpin(String),
    Check,
    Diff(Option<String>),
    Baseline,
    Restore {
        old_root: String,
        /// A path on the running system: bytes, not necessarily UTF-8.
        path: PathBuf,
    },
    Status,
    /// After a wipe: which missing file broke which service (`--boot`, `--journal-file`).
    Lost,
    /// Over the old roots: what kept changing outside persistence (`--since`).
    Report,
    /// `persist PATH…`: paths on the running system, bytes.
    #[cfg(feature = "tools")]
    Persist(Vec<PathBuf>),
    Help,
    Version,
    /// Hidden: list fault-injection points (tests).
    FaultPoints,
}

/// `diff --compare`: how the current root is compared with its baseline.
#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compare {
    /// The generation search where the filesystem has one (btrfs), else change times when the
    /// clocks allow it, else every entry.
    #[default]
    Auto,
    /// A walk trusting change times when the clocks allow it (on btrfs too).
    Ctime,
    /// A walk looking every entry up in the baseline.
    Full,
}

#[cfg(feature = "tools")]
impl Compare {
    pub fn parse(v: &str) -> Option<Compare> {
        match v {
            "auto" => Some(Compare::Auto),
            "ctime" => Some(Compare::Ctime),
            "full" => Some(Compare::Full),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Cli {
    pub command: Option<Command>,
    pub config: Option<PathBuf>,
    pub settings: Partial,
    /// `--kernel-cmdline` (bytes, like /proc/cmdline).
    pub kernel_cmdline: Option<Vec<u8>>,
    pub dry_run: bool,
    pub json: bool,
    pub nix: bool,
    pub prometheus: bool,
    pub force: bool,
    pub no_baseline: bool,
    /// diff: how the current root is compared with its baseline (`--compare`).
    #[cfg(feature = "tools")]
    pub compare: Compare,
    pub to: Option<PathBuf>,
    /// restore: replace a destination of another kind (file/directory/symlink) with --force.
    pub replace_type: bool,
    /// restore: restore setuid/setgid bits and file capabilities too.
    pub keep_privileges: bool,
    /// Seconds to wait for another writer's lock on the filesystem (see src/lock.rs).
    pub lock_wait: Option<u64>,
    /// persist: copy only what the store lacks (see src/persist/mod.rs).
    #[cfg(feature = "tools")]
    pub merge: bool,
    /// persist: bind-mount the copy over the path now.
    #[cfg(feature = "tools")]
    pub bind: bool,
    pub verbosity: i32,
    /// lost: the boot (journalctl -b), and a journal file to read instead (tests; hidden).
    pub boot: Option<String>,
    pub journal_file: Option<PathBuf>,
    /// report: only old roots that began at or after this date.
    pub since: Option<String>,
}

// The help text; `persist` and its options only in the full build (the initrd build must not grow).
macro_rules! usage_head {
    () => {
        "\
usage: ephemeral-root [OPTIONS] COMMAND [ARGS] [OPTIONS]

commands:
  rollback              keep the root as a read-only old root and replace it with a fresh one
                        (the initrd step; --dry-run prints the plan)
  finish                after boot: make the kept root read-only, prune old roots by the
                        retention policy, take the baseline (--dry-run, --no-baseline)
  list                  list old roots (--json)
  gc                    apply the retention policy now (--dry-run)
  pin NAME | unpin NAME protect an old root from pruning, or stop protecting it
  check                 validate config, device and layout and say what rollback would do
  diff [OLD_ROOT]       what the next boot erases, or what was erased at that reboot
                        (--json, --nix)
  baseline              snapshot the root right after boot, so diff shows only what changed
  restore OLD_ROOT PATH copy PATH back from an old root (--to DEST, --force,
                        --replace-type, --keep-privileges)
  status                root age, old roots, free space, last rollback (--prometheus)
  lost                  after a wipe: which missing file broke which service, and the
                        restore and persistence lines that fix it (--boot N, --json)
  report                audit rollout: what kept changing outside persistence from boot
                        to boot, and whether the host is ready for wipe (--since DATE, --json)
"
    };
}
#[cfg(feature = "tools")]
macro_rules! usage_persist {
    () => {
        "\
  persist PATH...       copy PATH from the root into the persistent store (--store DIR, default
                        `store =` of the config) and print the configuration lines to add
                        (--dry-run; --merge: copy only what the store lacks, never overwrite;
                        --bind: bind-mount the copy over PATH now)
"
    };
}
macro_rules! usage_tail {
    () => {
        "
options:
  --config PATH         config file (default /etc/ephemeral-root.conf)
  --device DEV          block device, UUID=… or LABEL=… (not needed for zfs)
  --fstype TYPE         btrfs, bcachefs or zfs (default: read from the device)
  --root NAME           root subvolume or dataset (default @root)
  --snapshots NAME      where old roots are kept (default @snapshots)
  --blank NAME          new roots are writable snapshots of this template
  --keep POLICY         retention, e.g. \"5 4w 12m\" or \"all\" (default \"5 4w 12m\")
  --mode wipe|audit     audit keeps the root but does not wipe it (default wipe)
  --persist PATH        a persisted path, for diff (repeatable)
  --timezone OFFSET     UTC or +HH:MM, for retention periods (default UTC)
  --kernel-cmdline STR  use STR instead of /proc/cmdline
  --lock-wait SECONDS   wait this long for another ephemeral-root changing the same
                        filesystem (default 120; 0 refuses at once)
  --compare HOW         diff with a baseline: auto (default: btrfs generations, else change
                        times when the clock was not set since the baseline), ctime, full
  --dry-run  --json  --nix  --prometheus  --force  --to DEST  --no-baseline
  -v, --verbose  -q, --quiet  -h, --help  -V, --version
"
    };
}
#[cfg(feature = "tools")]
pub const USAGE: &str = concat!(usage_head!(), usage_persist!(), usage_tail!());
#[cfg(not(feature = "tools"))]
pub const USAGE: &str = concat!(usage_head!(), usage_tail!());

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}; see `ephemeral-root --help`", msg.into()))
}

/// A lexopt error as a usage error (its text quotes the argument: cut it).
fn lexopt_err(e: lexopt::Error) -> Error {
    usage_err(escape::cut_str(&e.to_string()))
}

/// An old-root name from the command line: names this program makes are ASCII, so anything else
/// cannot name one (said with the argument escaped, never converted lossily).
fn old_root_arg(a: &OsString) -> Result<String> {
    a.to_str().map(str::to_string).ok_or_else(|| {
        Error::Usage(format!(
            "no old root is named \"{}\" (old-root names look like 2026-01-02T03-04-05Z); `ephemeral-root list` shows the names",
            escape::cut(a.as_bytes())
        ))
    })
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut cli = Cli::default();
    let mut positional: Vec<OsString> = Vec::new();
    loop {
        let arg = p.next().map_err(lexopt_err)?;
        let Some(arg) = arg else { break };
        let key_value = |key: &str, p: &mut lexopt::Parser, s: &mut Partial| -> Result<()> {
            let v = p.value().map_err(lexopt_err)?;
            match apply_key(s, key, v.as_bytes()) {
                Ok(()) => Ok(()),
                Err(KeyError::Value(e)) => Err(Error::Usage(format!("--{key}: {e}"))),
                Err(KeyError::UnknownKey) => Err(usage_err(format!("unknown option --{key}"))),
            }
        };
        match arg {
            Long(
                k @ ("device" | "fstype" | "root" | "snapshots" | "blank" | "keep" | "mode"
                | "persist" | "timezone"),
            ) => {
                let k = k.to_string();
                key_value(&k, &mut p, &mut cli.settings)?
            }
            #[cfg(feature = "tools")]
            Long(k @ "store") => {
                let k = k.to_string();
                key_value(&k, &mut p, &mut cli.settings)?
            }
            #[cfg(feature = "tools")]
            Long("merge") => cli.merge = true,
            #[cfg(feature = "tools")]
            Long("bind") => cli.bind = true,
            Long("config") => cli.config = Some(PathBuf::from(p.value().map_err(lexopt_err)?)),
            Long("kernel-cmdline") => {
                cli.kernel_cmdline = Some(p.value().map_err(lexopt_err)?.into_vec())
            }
            Long("lock-wait") => {
                let v = p.value().map_err(lexopt_err)?;
                let n = v
                    .to_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| usage_err("--lock-wait takes a number of seconds"))?;
                cli.lock_wait = Some(n);
            }
            Long(k @ ("boot" | "journal-file" | "since")) => {
                let k = k.to_string();
                let v = p.value().map_err(lexopt_err)?;
                if k == "journal-file" {
                    cli.journal_file = Some(PathBuf::from(v));
                } else {
                    let v = v.into_string().map_err(|v| {
                        usage_err(format!(
                            "--{k} \"{}\" is not text",
                            escape::cut(v.as_bytes())
                        ))
                    })?;
                    *if k == "boot" {
                        &mut cli.boot
                    } else {
                        &mut cli.since
                    } = Some(v);
                }
            }
            #[cfg(feature = "tools")]
            Long("compare") => {
                let v = p.value().map_err(lexopt_err)?;
                cli.compare = v.to_str().and_then(Compare::parse).ok_or_else(|| {
                    usage_err(format!(
                        "--compare \"{}\": want auto, ctime or full",
                        escape::cut(v.as_bytes())
                    ))
                })?;
            }
            Long("replace-type") => cli.replace_type = true,
            Long("keep-privileges") => cli.keep_privileges = true,
            Long("to") => cli.to = Some(PathBuf::from(p.value().map_err(lexopt_err)?)),
            Long("dry-run") | Short('n') => cli.dry_run = true,
            Long("json") => cli.json = true,
            Long("nix") => cli.nix = true,
            Long("prometheus") => cli.prometheus = true,
            Long("force") | Short('f') => cli.force = true,
            Long("no-baseline") => cli.no_baseline = true,
            Long("verbose") | Short('v') => cli.verbosity += 1,
            Long("quiet") | Short('q') => cli.verbosity -= 1,
            Long("help") | Short('h') => cli.command = Some(Command::Help),
            Long("version") | Short('V') => cli.command = Some(Command::Version),
            Value(v) => positional.push(v),
            Long(other) => {
                let known = [
                    "device",
                    "fstype",
                    "root",
                    "snapshots",
                    "blank",
                    "keep",
                    "mode",
                    "persist",
                    "timezone",
                    "config",
                    "kernel-cmdline",
                    "to",
                    "dry-run",
                    "json",
                    "nix",
                    "prometheus",
                    "force",
                    "replace-type",
                    "keep-privileges",
                    "lock-wait",
                    "no-baseline",
                    "compare",
                    "boot",
                    "since",
                    "verbose",
                    "quiet",
                    "help",
                    "version",
                ];
                let hint = crate::config::suggest(other, &known)
                    .or_else(|| {
                        cfg!(feature = "tools")
                            .then(|| crate::config::suggest(other, &["store", "merge", "bind"]))
                            .flatten()
                    })
                    .map(|s| format!(" (did you mean --{s}?)"))
                    .unwrap_or_default();
                return Err(usage_err(format!(
                    "unknown option --{}{hint}",
                    escape::cut_str(other)
                )));
            }
            Short(c) => {
                return Err(usage_err(format!(
                    "unknown option -{}",
                    escape::escape(c.to_string().as_bytes())
                )))
            }
        }
    }
    if cli.command.is_some() {
        return Ok(cli);
    }
    let mut it = positional.into_iter();
    let Some(cmd_os) = it.next() else {
        return Err(usage_err("no command given"));
    };
    let cmd = escape::cut(cmd_os.as_bytes());
    let rest: Vec<OsString> = it.collect();
    let want = |n: std::ops::RangeInclusive<usize>, what: &str| -> Result<()> {
        if n.contains(&rest.len()) {
            Ok(())
        } else {
            Err(usage_err(format!(
                "`{cmd}` takes {what}, got {} argument(s)",
                rest.len()
            )))
        }
    };
    let command = match cmd_os.as_bytes() {
        b"rollback" => want(0..=0, "no arguments").map(|_| Command::Rollback)?,
        b"finish" => want(0..=0, "no arguments").map(|_| Command::Finish)?,
        b"list" | b"ls" => want(0..=0, "no arguments").map(|_| Command::List)?,
        b"gc" => want(0..=0, "no arguments").map(|_| Command::Gc)?,
        b"pin" => {
            want(1..=1, "one old-root NAME")?;
            Command::Pin(old_root_arg(&rest[0])?)
        }
        b"unpin" => {
            want(1..=1, "one old-root NAME")?;
            Command::Unpin(old_root_arg(&rest[0])?)
        }
        b"check" => want(0..=0, "no arguments").map(|_| Command::Check)?,
        b"diff" => {
            want(0..=1, "at most one old-root NAME")?;
            Command::Diff(rest.first().map(old_root_arg).transpose()?)
        }
        b"baseline" => want(0..=0, "no arguments").map(|_| Command::Baseline)?,
        b"restore" => {
            want(2..=2, "OLD_ROOT and PATH")?;
            Command::Restore {
                old_root: old_root_arg(&rest[0])?,
                path: PathBuf::from(&rest[1]),
            }
        }
        b"status" => want(0..=0, "no arguments").map(|_| Command::Status)?,
        b"lost" => want(0..=0, "no arguments").map(|_| Command::Lost)?,
        b"report" => want(0..=0, "no arguments").map(|_| Command::Report)?,
        #[cfg(feature = "tools")]
        b"persist" => {
            want(1..=usize::MAX, "one or more PATHs")?;
            Command::Persist(rest.iter().map(PathBuf::from).collect())
        }
        b"help" => Command::Help,
        b"version" => Command::Version,
        b"fault-points" => Command::FaultPoints,
        _ => {
            let other = cmd.as_str();
            let cmds = [
                "rollback", "finish", "list", "gc", "pin", "unpin", "check", "diff", "baseline",
                "restore", "status", "lost", "report", "help",
            ];
            let hint = crate::config::suggest(other, &cmds)
                .or_else(|| {
                    cfg!(feature = "tools")
                        .then(|| crate::config::suggest(other, &["persist"]))
                        .flatten()
                })
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(usage_err(format!("unknown command `{other}`{hint}")));
        }
    };
    cli.command = Some(command);
    Ok(cli)
}

#[allow(dead_code)]
fn _types(_: FsType, _: Mode) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli> {
        parse(args.iter().map(|s| std::ffi::OsString::from(*s)))
    }

    #[test]
    fn options_after_command() {
        let c = p(&[
            "rollback",
            "--device",
            "/dev/vdb",
            "--root",
            "@root",
            "--snapshots",
            "@snapshots",
            "--keep",
            "5 4w 12m",
        ])
        .unwrap();
        assert_eq!(c.command, Some(Command::Rollback));
        assert_eq!(c.settings.device.as_deref(), Some("/dev/vdb"));
        assert_eq!(
            c.settings.keep.map(|k| k.to_string()).as_deref(),
            Some("5 4w 12m")
        );
    }

    #[test]
    fn options_before_command_and_equals_form() {
        let c = p(&["--mode=audit", "-v", "list", "--json"]).unwrap();
        assert_eq!(c.command, Some(Command::List));
        assert_eq!(c.settings.mode, Some(Mode::Audit));
        assert!(c.json);
        assert_eq!(c.verbosity, 1);
    }

    #[test]
    fn positional_commands() {
        assert_eq!(
            p(&["pin", "X"]).unwrap().command,
            Some(Command::Pin("X".into()))
        );
        assert_eq!(p(&["diff"]).unwrap().command, Some(Command::Diff(None)));
        assert_eq!(
            p(&["restore", "N", "/etc/x", "--to", "/tmp/x"])
                .unwrap()
                .command,
            Some(Command::Restore {
                old_root: "N".into(),
                path: PathBuf::from("/etc/x")
            })
        );
        // PATH is bytes: a non-UTF-8 name reaches restore unchanged.
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"/srv/\xff\n");
        let c = parse(
            [
                std::ffi::OsStr::new("restore"),
                std::ffi::OsStr::new("N"),
                odd,
                std::ffi::OsStr::new("--replace-type"),
                std::ffi::OsStr::new("--keep-privileges"),
                std::ffi::OsStr::new("--lock-wait"),
                std::ffi::OsStr::new("0"),
            ]
            .into_iter()
            .map(|s| s.to_os_string()),
        )
        .unwrap();
        assert!(c.replace_type && c.keep_privileges && c.lock_wait == Some(0));
        assert_eq!(
            c.command,
            Some(Command::Restore {
                old_root: "N".into(),
                path: PathBuf::from(odd)
            })
        );
    }

    #[test]
    fn arguments_are_bytes() {
        use std::os::unix::ffi::OsStringExt;
        let os = |b: &[u8]| OsString::from_vec(b.to_vec());
        let c = parse(vec![
            os(b"restore"),
            os(b"2026-01-02T03-04-05Z"),
            os(b"/etc/\xff\nx"),
            os(b"--persist"),
            os(b"/var/lib/\xfe"),
            os(b"--kernel-cmdline"),
            os(b"a=\xff rd.ephemeral_root=skip"),
        ])
        .unwrap();
        assert_eq!(
            c.command,
            Some(Command::Restore {
                old_root: "2026-01-02T03-04-05Z".into(),
                path: PathBuf::from(os(b"/etc/\xff\nx"))
            })
        );
        assert_eq!(c.settings.persist, Some(vec![b"/var/lib/\xfe".to_vec()]));
        assert_eq!(
            c.kernel_cmdline.as_deref(),
            Some(&b"a=\xff rd.ephemeral_root=skip"[..])
        );
        // Names that cannot be ours, and odd commands, are usage errors that escape them.
        for (args, want) in [
            (
                vec![os(b"diff"), os(b"\xff\x1b[31m")],
                "no old root is named \"\\xff\\x1b[31m\"",
            ),
            (
                vec![os(b"pin"), os(b"\xff")],
                "no old root is named \"\\xff\"",
            ),
            (
                vec![os(b"\x1b[2Jrollback")],
                "unknown command `\\x1b[2Jrollback`",
            ),
            (
                vec![os(b"rollback"), os(b"--root"), os(b"@r\xff")],
                "--root: value \"@r\\xff\" is not valid UTF-8",
            ),
            (vec![os(b"rollback"), os(b"--\x1b[31m")], "unknown option"),
        ] {
            let Err(e) = parse(args.clone()) else {
                panic!("accepted {args:?}")
            };
            let m = e.to_string();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(m.contains(want), "{args:?}: {m}");
            assert!(!m.chars().any(escape::dangerous), "{m:?}");
        }
        let big = "y".repeat(1 << 20);
        for args in [
            vec!["rollback", "--keep", &big],
            vec!["rollback", "--root", &big],
            vec![&big],
            vec!["diff", "a", &big],
        ] {
            let Err(e) = p(&args) else {
                panic!("accepted a 1 MB argument")
            };
            let m = e.to_string();
            assert!(m.len() < 1000, "{}", &m[..200]);
        }
    }

    #[test]
    fn errors_are_usage_errors_with_hints() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no command given"),
            (
                &["rollbak"],
                "unknown command `rollbak` (did you mean `rollback`?)",
            ),
            (
                &["rollback", "--devise", "/dev/x"],
                "unknown option --devise (did you mean --device?)",
            ),
            (
                &["rollback", "--keep", "5 4x"],
                "--keep: bad retention word",
            ),
            (&["rollback", "--mode", "erase"], "--mode: unknown mode"),
            (&["pin"], "`pin` takes one old-root NAME"),
            (&["list", "extra"], "`list` takes no arguments"),
            (&["rollback", "--root"], "missing argument"),
        ];
        for (args, want) in cases {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(want), "{args:?}: {e}");
        }
    }
}
