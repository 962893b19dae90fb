//! Command-line parsing (lexopt). Options may come before or after the command name.

use crate::config::{apply_key, FsType, KeyError, Mode, Partial};
use crate::error::{Error, Result};
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
        path: String,
    },
    Status,
    Help,
    Version,
    /// Hidden: list fault-injection points (tests).
    FaultPoints,
}

#[derive(Debug, Clone, Default)]
pub struct Cli {
    pub command: Option<Command>,
    pub config: Option<PathBuf>,
    pub settings: Partial,
    pub kernel_cmdline: Option<String>,
    pub dry_run: bool,
    pub json: bool,
    pub nix: bool,
    pub prometheus: bool,
    pub force: bool,
    pub no_baseline: bool,
    pub to: Option<PathBuf>,
    pub verbosity: i32,
}

pub const USAGE: &str = "\
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
  restore OLD_ROOT PATH copy PATH back from an old root (--to DEST, --force)
  status                root age, old roots, free space, last rollback (--prometheus)

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
  --dry-run  --json  --nix  --prometheus  --force  --to DEST  --no-baseline
  -v, --verbose  -q, --quiet  -h, --help  -V, --version
";

fn usage_err(msg: impl Into<String>) -> Error {
    Error::Usage(format!("{}; see `ephemeral-root --help`", msg.into()))
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut cli = Cli::default();
    let mut positional: Vec<String> = Vec::new();
    loop {
        let arg = p.next().map_err(|e| usage_err(e.to_string()))?;
        let Some(arg) = arg else { break };
        let key_value = |key: &str, p: &mut lexopt::Parser, s: &mut Partial| -> Result<()> {
            let v = p
                .value()
                .map_err(|e| usage_err(e.to_string()))?
                .into_string()
                .map_err(|_| usage_err(format!("--{key} is not valid UTF-8")))?;
            match apply_key(s, key, &v) {
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
            Long("config") => {
                cli.config = Some(PathBuf::from(
                    p.value().map_err(|e| usage_err(e.to_string()))?,
                ))
            }
            Long("kernel-cmdline") => {
                cli.kernel_cmdline = Some(
                    p.value()
                        .map_err(|e| usage_err(e.to_string()))?
                        .into_string()
                        .map_err(|_| usage_err("--kernel-cmdline is not valid UTF-8"))?,
                )
            }
            Long("to") => {
                cli.to = Some(PathBuf::from(
                    p.value().map_err(|e| usage_err(e.to_string()))?,
                ))
            }
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
            Value(v) => positional.push(
                v.into_string()
                    .map_err(|_| usage_err("argument is not valid UTF-8"))?,
            ),
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
                    "no-baseline",
                    "verbose",
                    "quiet",
                    "help",
                    "version",
                ];
                let hint = crate::config::suggest(other, &known)
                    .map(|s| format!(" (did you mean --{s}?)"))
                    .unwrap_or_default();
                return Err(usage_err(format!("unknown option --{other}{hint}")));
            }
            Short(c) => return Err(usage_err(format!("unknown option -{c}"))),
        }
    }
    if cli.command.is_some() {
        return Ok(cli);
    }
    let mut it = positional.into_iter();
    let Some(cmd) = it.next() else {
        return Err(usage_err("no command given"));
    };
    let rest: Vec<String> = it.collect();
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
    let command = match cmd.as_str() {
        "rollback" => want(0..=0, "no arguments").map(|_| Command::Rollback)?,
        "finish" => want(0..=0, "no arguments").map(|_| Command::Finish)?,
        "list" | "ls" => want(0..=0, "no arguments").map(|_| Command::List)?,
        "gc" => want(0..=0, "no arguments").map(|_| Command::Gc)?,
        "pin" => want(1..=1, "one old-root NAME").map(|_| Command::Pin(rest[0].clone()))?,
        "unpin" => want(1..=1, "one old-root NAME").map(|_| Command::Unpin(rest[0].clone()))?,
        "check" => want(0..=0, "no arguments").map(|_| Command::Check)?,
        "diff" => want(0..=1, "at most one old-root NAME")
            .map(|_| Command::Diff(rest.first().cloned()))?,
        "baseline" => want(0..=0, "no arguments").map(|_| Command::Baseline)?,
        "restore" => want(2..=2, "OLD_ROOT and PATH").map(|_| Command::Restore {
            old_root: rest[0].clone(),
            path: rest[1].clone(),
        })?,
        "status" => want(0..=0, "no arguments").map(|_| Command::Status)?,
        "help" => Command::Help,
        "version" => Command::Version,
        "fault-points" => Command::FaultPoints,
        other => {
            let cmds = [
                "rollback", "finish", "list", "gc", "pin", "unpin", "check", "diff", "baseline",
                "restore", "status", "help",
            ];
            let hint = crate::config::suggest(other, &cmds)
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
                path: "/etc/x".into()
            })
        );
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
