//! Bad input on the command line and in the config file, through the real binary (issue 10 items
//! 8 and 9): a repeated config key names both lines, a key with a NUL or escape sequence is shown
//! escaped, a 1 MB value is cut in the message, non-UTF-8 arguments are named escaped. All are
//! usage errors (exit 2, one line) found before any device is touched, so no root is needed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ephemeral-root")
}

fn run(args: Vec<OsString>) -> Output {
    Command::new(bin())
        .args(args)
        .env("EPHEMERAL_ROOT_LOG", "stderr")
        .env("EPHEMERAL_ROOT_STATE_DIR", "/nonexistent/er-state")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run ephemeral-root")
}

fn with_config(tag: &str, text: &[u8], extra: &[&[u8]]) -> (Output, String) {
    let p = std::env::temp_dir().join(format!("er-cli-{}-{tag}.conf", std::process::id()));
    std::fs::write(&p, text).unwrap();
    let mut args: Vec<OsString> = vec!["check".into(), "--config".into(), p.clone().into()];
    args.extend(extra.iter().map(|a| OsString::from_vec(a.to_vec())));
    let o = run(args);
    let _ = std::fs::remove_file(&p);
    (o, p.display().to_string())
}

fn usage_line(o: &Output) -> String {
    let e = String::from_utf8(o.stderr.clone()).expect("messages are UTF-8");
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(
        !e.trim_end().chars().any(|c| c.is_control()),
        "raw control characters: {e:?}"
    );
    e
}

#[test]
fn repeated_config_keys_name_both_lines() {
    let (o, path) = with_config(
        "dup",
        b"# c\nroot = @root\nkeep = 5\nroot = @persist\n",
        &[],
    );
    let e = usage_line(&o);
    assert!(
        e.contains(&format!(
            "{path}:4: key `root` is given again (first at {path}:2)"
        )),
        "{e}"
    );
    // persist may repeat.
    let (o, _) = with_config(
        "persist",
        b"persist = /a\npersist = /b\nmode = wipeout\n",
        &[],
    );
    let e = usage_line(&o);
    assert!(e.contains(":3: key `mode`"), "{e}");
}

#[test]
fn odd_keys_and_huge_values_are_escaped_and_cut() {
    let (o, path) = with_config("nul", b"root\0 = @root\n", &[]);
    let e = usage_line(&o);
    assert!(
        e.contains(&format!(
            "{path}:1: unknown key `root\\x00`: it contains a control character"
        )),
        "{e}"
    );
    let (o, _) = with_config("esc", b"\x1b[2Jroot = @root\n", &[]);
    let e = usage_line(&o);
    assert!(e.contains("`\\x1b[2Jroot`"), "{e}");
    let big = [b"keep = ".as_slice(), &vec![b'7'; 1 << 20], b"x\n"].concat();
    let (o, _) = with_config("big", &big, &[]);
    let e = usage_line(&o);
    assert!(
        e.len() < 600 && e.contains('…') && e.contains("bytes)"),
        "{} bytes",
        e.len()
    );
    // The same on the command line.
    // (one argument can be at most 128 KiB: MAX_ARG_STRLEN)
    let arg = [b"--keep=".as_slice(), &vec![b'7'; 100_000], b"x"].concat();
    let (o, _) = with_config("bigarg", b"", &[&arg]);
    let e = usage_line(&o);
    assert!(e.len() < 600, "{} bytes", e.len());
}

#[test]
fn non_utf8_arguments_are_named_escaped() {
    for (args, want) in [
        (
            vec![&b"diff"[..], b"\xff\x1b[31m"],
            "no old root is named \"\\xff\\x1b[31m\"",
        ),
        (vec![&b"\x1b[2Jlist"[..]], "unknown command `\\x1b[2Jlist`"),
        (
            vec![&b"list"[..], b"--root", b"@r\xff"],
            "--root: value \"@r\\xff\" is not valid UTF-8",
        ),
    ] {
        let o = run(args
            .iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect());
        let e = usage_line(&o);
        assert!(e.contains(want), "{e}");
    }
}
