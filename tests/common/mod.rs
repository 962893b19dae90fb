//! Test fixtures: real btrfs filesystems on loop devices, and running the real binary.
//!
//! These tests need root (loop devices, mounts). Without root they FAIL with a loud message,
//! unless EPHEMERAL_ROOT_ALLOW_SKIP=1 is set, in which case they print "SKIPPED" loudly and
//! return early; CI never sets it.
#![allow(dead_code)]

pub mod invariants;
pub mod json;
pub mod sys;
pub mod testfs;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

static LOSETUP: Mutex<()> = Mutex::new(());

/// The binary under test: cargo's, or EPHEMERAL_ROOT_TEST_BIN (the test binary running inside a VM
/// guest, or an older build to show that a test fails on it).
pub fn bin() -> &'static str {
    static B: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        std::env::var("EPHEMERAL_ROOT_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ephemeral-root").to_string())
    })
}

/// The binary whose `check --json` judges the state: EPHEMERAL_ROOT_TEST_CHECK_BIN, else [`bin`]
/// (an older build under test may predate `check --json`; the judge stays today's).
pub fn check_bin() -> &'static str {
    static B: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        std::env::var("EPHEMERAL_ROOT_TEST_CHECK_BIN").unwrap_or_else(|_| bin().to_string())
    })
}

/// `check --json` output parsed into (clean, [(name, kind)]).
pub fn parse_check_json(js: &str) -> (bool, Vec<(String, String)>) {
    let j =
        json::parse(js.trim()).unwrap_or_else(|e| panic!("check --json is not JSON ({e}): {js}"));
    let clean = match j.get("clean") {
        Some(json::Json::Bool(b)) => *b,
        o => panic!("check --json: \"clean\" is {o:?}: {js}"),
    };
    let entries = match j.get("entries") {
        Some(json::Json::Arr(a)) => a
            .iter()
            .map(|e| {
                let f = |k: &str| {
                    e.get(k)
                        .and_then(json::Json::str)
                        .unwrap_or("?")
                        .to_string()
                };
                (f("name"), f("kind"))
            })
            .collect(),
        o => panic!("check --json: \"entries\" is {o:?}: {js}"),
    };
    (clean, entries)
}

/// True if the test may run; false (after a loud message) if it must be skipped.
pub fn require_root(test: &str) -> bool {
    let root = rustix_like_geteuid() == 0;
    if root && testfs::selected_in_guest() {
        return true; // a VM guest's filesystem (testfs.rs): no loop devices needed
    }
    let loopdev = Path::new("/dev/loop-control").exists();
    let mkfs = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    if root && loopdev && mkfs {
        return true;
    }
    let why = format!(
        "{test}: needs root, /dev/loop-control and mkfs.btrfs (root={root}, loop-control={loopdev}, mkfs.btrfs={mkfs})"
    );
    if std::env::var("EPHEMERAL_ROOT_ALLOW_SKIP").as_deref() == Ok("1")
        && std::env::var("CI").is_err()
    {
        eprintln!("\n*** SKIPPED *** {why}\n");
        return false;
    }
    panic!(
        "{why}; run as root (sudo), or set EPHEMERAL_ROOT_ALLOW_SKIP=1 to skip loudly outside CI"
    );
}

fn rustix_like_geteuid() -> u32 {
    // /proc/self/status "Uid:" line: real, effective, saved, fs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// `umount DIR`, retried while it is busy: the tests of one binary run in threads, and a child
/// another thread is forking holds copies of every descriptor (a file just written here
/// included) until it execs, which on a loaded machine can take a while.
pub fn umount_retrying(dir: &std::path::Path) {
    let mut last = String::new();
    for _ in 0..100 {
        let o = Command::new("umount")
            .arg(dir)
            .output()
            .expect("run umount");
        if o.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&o.stderr).into_owned();
        if !last.contains("busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("`umount {}` failed: {last}", dir.display());
}

pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A btrfs filesystem in a sparse file on a loop device, mounted (top level) at `mnt` while the
/// test sets it up or inspects it.
pub struct LoopFs {
    pub dir: PathBuf,
    pub img: PathBuf,
    pub dev: String,
    pub mnt: PathBuf,
    mounted: bool,
}

impl LoopFs {
    pub fn new(tag: &str) -> LoopFs {
        Self::with_mkfs(tag, "mkfs.btrfs -q -f")
    }

    pub fn with_mkfs(tag: &str, mkfs: &str) -> LoopFs {
        let dir = std::env::temp_dir().join(format!("er-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        sh(&format!("truncate -s 1G {}", img.display()));
        if !mkfs.is_empty() {
            sh(&format!("{mkfs} {} >/dev/null 2>&1", img.display()));
        }
        let dev = {
            let _g = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
            sh(&format!("losetup -f --show {}", img.display()))
                .trim()
                .to_string()
        };
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        LoopFs {
            dir,
            img,
            dev,
            mnt,
            mounted: false,
        }
    }

    pub fn mount(&mut self) -> &Path {
        if !self.mounted {
            sh(&format!(
                "mount -o subvolid=5,noatime {} {}",
                self.dev,
                self.mnt.display()
            ));
            self.mounted = true;
        }
        &self.mnt
    }

    pub fn umount(&mut self) {
        if self.mounted {
            umount_retrying(&self.mnt);
            self.mounted = false;
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn subvol(&mut self, rel: &str) {
        self.mount();
        if let Some(parent) = Path::new(rel).parent() {
            std::fs::create_dir_all(self.p(&parent.to_string_lossy())).unwrap();
        }
        sh(&format!(
            "btrfs -q subvolume create {}",
            self.p(rel).display()
        ));
    }

    pub fn write(&mut self, rel: &str, content: &str) {
        self.mount();
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&mut self, rel: &str) -> Option<String> {
        self.mount();
        std::fs::read_to_string(self.p(rel)).ok()
    }

    pub fn exists(&mut self, rel: &str) -> bool {
        self.mount();
        self.p(rel).symlink_metadata().is_ok()
    }

    /// Entries of a directory, sorted.
    pub fn ls(&mut self, rel: &str) -> Vec<String> {
        self.mount();
        let mut v: Vec<String> = match std::fs::read_dir(self.p(rel)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        };
        v.sort();
        v
    }

    /// Subvolume paths (relative to the top level), sorted.
    pub fn subvols(&mut self) -> Vec<String> {
        self.mount();
        let out = sh(&format!("btrfs subvolume list {}", self.mnt.display()));
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(" path ").nth(1).map(str::to_string))
            .collect();
        v.sort();
        v
    }

    pub fn is_readonly(&mut self, rel: &str) -> bool {
        self.mount();
        sh(&format!(
            "btrfs property get -ts {} ro",
            self.p(rel).display()
        ))
        .contains("ro=true")
    }

    /// Everything: subvolumes, and every path with its file content, for "nothing changed" checks.
    pub fn fingerprint(&mut self) -> String {
        self.mount();
        let subs = self.subvols().join("\n");
        let files = sh(&format!(
            "cd {} && find . -print0 | sort -z | xargs -0 -r sh -c 'for f; do if [ -f \"$f\" ]; then echo \"$f $(cat \"$f\" | md5sum)\"; else echo \"$f\"; fi; done' x",
            self.mnt.display()
        ));
        format!("{subs}\n---\n{files}")
    }

    /// Run the binary with `--device` for this filesystem (unmounting our view first).
    pub fn run(&mut self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.umount();
        self.run_keep_mounted(args, env)
    }

    /// Run while our own mount stays (with whatever it has not committed yet).
    pub fn run_keep_mounted(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run ephemeral-root")
    }

    /// The command [`LoopFs::run_keep_mounted`] runs, to spawn it (several at once, or to signal
    /// it). Does not unmount our view.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        self.command_of(bin(), args)
    }

    /// [`LoopFs::command`] with another binary (the judge, [`check_bin`]).
    pub fn command_of<S: AsRef<std::ffi::OsStr>>(&self, prog: &str, args: &[S]) -> Command {
        let has = |w: &str| args.iter().any(|a| a.as_ref() == std::ffi::OsStr::new(w));
        let mut c = Command::new(prog);
        c.args(args).arg("--device").arg(&self.dev);
        c.env("EPHEMERAL_ROOT_LOG", "stderr")
            .env("EPHEMERAL_ROOT_STATE_DIR", self.dir.join("state"));
        c.env_remove("EPHEMERAL_ROOT_FAULT")
            .env_remove("EPHEMERAL_ROOT_CLOCK_OFFSET")
            .env_remove("JOURNAL_STREAM");
        if !has("--config") {
            c.arg("--config").arg(self.dir.join("none.conf"));
            std::fs::write(self.dir.join("none.conf"), "").unwrap();
        }
        if !has("--kernel-cmdline") && args.first().map(|a| a.as_ref()) == Some("rollback".as_ref())
        {
            c.arg("--kernel-cmdline").arg("");
        }
        c
    }

    /// Run and require success; returns stdout.
    pub fn ok(&mut self, args: &[&str]) -> String {
        let o = self.run(args);
        succeeded(format_args!("ephemeral-root {args:?}"), &o)
    }

    /// One boot as the machine does it: `rollback` (ARGS, in the initrd), then `finish` (after
    /// boot) with the same settings. Returns rollback's stdout.
    pub fn boot(&mut self, args: &[&str]) -> String {
        assert_eq!(args.first(), Some(&"rollback"), "boot() runs rollback");
        let out = self.ok(args);
        self.ok(&testfs::finish_args(args));
        out
    }

    /// `check --json` parsed into (clean, [(name, kind)]), so tests read the state the way every
    /// harness does (run by [`check_bin`]).
    pub fn check_json(&mut self, extra: &[&str]) -> (bool, Vec<(String, String)>) {
        let mut args = vec!["check", "--json"];
        args.extend_from_slice(extra);
        self.umount();
        let o = self
            .command_of(check_bin(), &args)
            .output()
            .expect("run check --json");
        parse_check_json(&String::from_utf8_lossy(&o.stdout))
    }

    /// Old roots (entries of @snapshots that are not dot-names), sorted.
    pub fn old_roots(&mut self) -> Vec<String> {
        self.ls("@snapshots")
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            // Busy (a descriptor inherited by some child): detach it anyway, so the removal
            // below never walks into the filesystem.
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).output();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// stderr of an Output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Require that a command succeeded (the message names WHAT, its status, stdout and stderr);
/// returns its stdout.
pub fn succeeded(what: impl std::fmt::Display, o: &Output) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A root like a small NixOS machine after a day: files, a nested subvolume with a nested child.
pub fn fill_root(fs: &mut LoopFs, tag: &str) {
    fs.write(&format!("@root/etc/{tag}.conf"), tag);
    fs.write(
        &format!("@root/var/lib/app-{tag}/state"),
        &format!("state of {tag}"),
    );
    fs.write(&format!("@root/root/.bash_history-{tag}"), "ls\n");
    fs.subvol("@root/var/lib/machines");
    fs.write("@root/var/lib/machines/vm/disk", &format!("machine {tag}"));
    fs.subvol("@root/var/lib/machines/inner");
    fs.write("@root/var/lib/machines/inner/data", &format!("inner {tag}"));
}
