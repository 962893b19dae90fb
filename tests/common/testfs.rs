//! One filesystem interface for the crash-safety scenarios (tests/crash_safety.rs) and the invariants
//! (invariants.rs), so the same scenarios run on all three filesystems:
//!
//! - btrfs on a loop device ([`LoopFs`], on the host: the default);
//! - bcachefs inside a VM guest ([`BchFs`]): `EPHEMERAL_ROOT_TESTFS=bcachefs:<top mount dir>:<device>`,
//!   each scenario in its own directory at the top, subvolumes made by `bchtool` (vm-tests/guest/bchtool.rs);
//! - ZFS inside a VM guest ([`ZfsFs`]): `EPHEMERAL_ROOT_TESTFS=zfs:<parent dataset>`, each scenario its own
//!   dataset tree `<parent>/<tag>/{local/root,local/old-roots,safe/persist}` (as vm-tests/guest/zfs-tests.sh).
//!
//! Paths are written as on btrfs: `@root/...`, `@snapshots/...`, `@persist/...`; each filesystem maps them.
//! In the guest, `EPHEMERAL_ROOT_TEST_BIN` names the binary under test (vm-tests/guest/crashsafety.sh).

use super::{bin, check_bin, parse_check_json, LoopFs};
use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh scenario filesystem the tests set up, run the binary on and inspect.
pub trait TestFs {
    fn kind(&self) -> &'static str;
    fn write(&mut self, rel: &str, content: &str);
    fn read(&mut self, rel: &str) -> Option<String>;
    fn exists(&mut self, rel: &str) -> bool;
    /// Entries of a directory (on ZFS, of the snapshots location: its child datasets), sorted.
    fn ls(&mut self, rel: &str) -> Vec<String>;
    /// A new empty subvolume (dataset) at `rel`, parents made as needed.
    fn subvol(&mut self, rel: &str);
    fn is_readonly(&mut self, rel: &str) -> bool;
    /// Every subvolume, as `@root[/..]`, `@snapshots[/..]`, `@persist`, or the raw name of anything else.
    fn subvols(&mut self) -> Vec<String>;
    /// The binary (`prog`) with ARGS and this filesystem's options; no fault, no clock offset.
    fn command_for(&mut self, prog: &str, args: &[&str]) -> Command;
    /// Fault points this filesystem's primitives never pass.
    fn unreachable_points(&self) -> &'static [&'static str];

    fn run_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command_for(bin(), args);
        for (k, v) in env {
            c.env(k, v);
        }
        traced_output(&mut c).expect("run ephemeral-root")
    }

    /// Run and require success; returns stdout.
    fn ok(&mut self, args: &[&str]) -> String {
        let o = self.run_env(args, &[]);
        super::succeeded(format_args!("ephemeral-root {args:?}"), &o)
    }

    /// One boot: `rollback` (ARGS), then `finish` with the same settings.
    fn boot(&mut self, args: &[&str]) -> String {
        self.boot_env(args, &[])
    }

    /// [`TestFs::boot`] with environment variables (a skewed clock) in both runs.
    fn boot_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> String {
        assert_eq!(args.first(), Some(&"rollback"), "boot() runs rollback");
        let mut runs = vec![args.to_vec()];
        if subject_has_finish() {
            runs.push(finish_args(args));
        }
        let mut out = String::new();
        for (k, a) in runs.iter().enumerate() {
            let o = self.run_env(a, env);
            let stdout = super::succeeded(format_args!("ephemeral-root {a:?}"), &o);
            if k == 0 {
                out = stdout;
            }
        }
        out
    }

    /// `check --json` (by [`check_bin`]) as (clean, [(name, kind)]).
    fn check_json(&mut self, extra: &[&str]) -> (bool, Vec<(String, String)>) {
        let mut args = vec!["check", "--json"];
        args.extend_from_slice(extra);
        let o = self
            .command_for(check_bin(), &args)
            .output()
            .expect("run check --json");
        parse_check_json(&String::from_utf8_lossy(&o.stdout))
    }

    /// Old roots: names in the snapshots location that look like one (`YYYY-MM-DDTHH-MM-SSZ[-N]`).
    fn old_roots(&mut self) -> Vec<String> {
        self.ls("@snapshots")
            .into_iter()
            .filter(|n| is_old_root_name(n))
            .collect()
    }
}

impl<T: TestFs + ?Sized> TestFs for Box<T> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn write(&mut self, rel: &str, content: &str) {
        (**self).write(rel, content)
    }
    fn read(&mut self, rel: &str) -> Option<String> {
        (**self).read(rel)
    }
    fn exists(&mut self, rel: &str) -> bool {
        (**self).exists(rel)
    }
    fn ls(&mut self, rel: &str) -> Vec<String> {
        (**self).ls(rel)
    }
    fn subvol(&mut self, rel: &str) {
        (**self).subvol(rel)
    }
    fn is_readonly(&mut self, rel: &str) -> bool {
        (**self).is_readonly(rel)
    }
    fn subvols(&mut self) -> Vec<String> {
        (**self).subvols()
    }
    fn command_for(&mut self, prog: &str, args: &[&str]) -> Command {
        (**self).command_for(prog, args)
    }
    fn unreachable_points(&self) -> &'static [&'static str] {
        (**self).unreachable_points()
    }
}

/// Whether the binary under test has `finish` (builds before it sealed and pruned in `rollback`;
/// EPHEMERAL_ROOT_TEST_BIN may name one, to show that a test fails on it).
pub fn subject_has_finish() -> bool {
    static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        let o = Command::new(bin())
            .arg("--help")
            .output()
            .expect("run --help");
        let h =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        h.lines().any(|l| l.trim_start().starts_with("finish "))
    })
}

/// `finish --no-baseline` with a rollback's settings (without `--kernel-cmdline`).
pub fn finish_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut f = vec!["finish", "--no-baseline"];
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        if *a == "--kernel-cmdline" {
            it.next();
            continue;
        }
        f.push(a);
    }
    f
}

pub fn is_old_root_name(n: &str) -> bool {
    let b = n.as_bytes();
    let shape = b"0000-00-00T00-00-00Z";
    if b.len() < shape.len() {
        return false;
    }
    let head_ok = shape.iter().zip(b).all(|(s, c)| match s {
        b'0' => c.is_ascii_digit(),
        _ => s == c,
    });
    let tail = &n[shape.len()..];
    head_ok
        && (tail.is_empty()
            || (tail.len() > 1
                && tail.starts_with('-')
                && tail[1..].bytes().all(|c| c.is_ascii_digit())))
}

/// True when a VM guest's filesystem is selected (EPHEMERAL_ROOT_TESTFS).
pub fn selected_in_guest() -> bool {
    std::env::var("EPHEMERAL_ROOT_TESTFS").is_ok_and(|v| !v.is_empty() && v != "btrfs")
}

/// A fresh scenario filesystem with `@root` and `@persist/keep-me` ("persisted"), of the kind selected
/// by EPHEMERAL_ROOT_TESTFS (btrfs on a loop device when unset).
pub fn new_scenario_fs(tag: &str) -> Box<dyn TestFs> {
    let sel = std::env::var("EPHEMERAL_ROOT_TESTFS").unwrap_or_default();
    let mut fs: Box<dyn TestFs> = match sel.split_once(':') {
        None if sel.is_empty() || sel == "btrfs" => Box::new(LoopFs::new(tag)),
        Some(("bcachefs", rest)) => {
            let (top, dev) = rest
                .split_once(':')
                .expect("EPHEMERAL_ROOT_TESTFS=bcachefs:<top mount dir>:<device>");
            Box::new(BchFs::new(top, dev, tag))
        }
        Some(("zfs", parent)) => Box::new(ZfsFs::new(parent, tag)),
        _ => panic!(
            "EPHEMERAL_ROOT_TESTFS={sel}: want btrfs, bcachefs:<dir>:<device> or zfs:<dataset>"
        ),
    };
    fs.subvol("@root");
    fs.subvol("@persist");
    fs.write("@persist/keep-me", "persisted");
    fs
}

fn run_quiet(prog: &str, args: &[&str]) -> Output {
    traced_output(Command::new(prog).args(args)).unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

/// `c.output()`; with EPHEMERAL_ROOT_TEST_TRACE set, one line on stderr per command with its
/// wall time (where a slow guest's test time goes: `trace: 812 ms zfs create ...`).
pub fn traced_output(c: &mut Command) -> std::io::Result<Output> {
    if std::env::var_os("EPHEMERAL_ROOT_TEST_TRACE").is_none() {
        return c.output();
    }
    let t = std::time::Instant::now();
    let o = c.output();
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "trace: {} ms {} {}",
        t.elapsed().as_millis(),
        c.get_program().to_string_lossy(),
        args.join(" ")
    );
    o
}

fn must(prog: &str, args: &[&str]) -> String {
    let o = run_quiet(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sorted_dir(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn base_command(prog: &str, args: &[&str], state: &std::path::Path) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c.env("EPHEMERAL_ROOT_LOG", "stderr")
        .env("EPHEMERAL_ROOT_STATE_DIR", state);
    c.env_remove("EPHEMERAL_ROOT_FAULT")
        .env_remove("EPHEMERAL_ROOT_CLOCK_OFFSET")
        .env_remove("JOURNAL_STREAM");
    if !args.contains(&"--config") {
        let conf = state.with_extension("conf");
        std::fs::write(&conf, "").unwrap();
        c.arg("--config").arg(conf);
    }
    if !args.contains(&"--kernel-cmdline") && args.first() == Some(&"rollback") {
        c.arg("--kernel-cmdline").arg("");
    }
    c
}

// ------------------------------------------------------------------------------------------------
// btrfs on a loop device (the host)
// ------------------------------------------------------------------------------------------------

impl TestFs for LoopFs {
    fn kind(&self) -> &'static str {
        "btrfs"
    }
    fn write(&mut self, rel: &str, content: &str) {
        LoopFs::write(self, rel, content)
    }
    fn read(&mut self, rel: &str) -> Option<String> {
        LoopFs::read(self, rel)
    }
    fn exists(&mut self, rel: &str) -> bool {
        LoopFs::exists(self, rel)
    }
    fn ls(&mut self, rel: &str) -> Vec<String> {
        LoopFs::ls(self, rel)
    }
    fn subvol(&mut self, rel: &str) {
        LoopFs::subvol(self, rel)
    }
    fn is_readonly(&mut self, rel: &str) -> bool {
        LoopFs::is_readonly(self, rel)
    }
    fn subvols(&mut self) -> Vec<String> {
        LoopFs::subvols(self)
    }
    fn command_for(&mut self, prog: &str, args: &[&str]) -> Command {
        self.umount();
        self.command_of(prog, args)
    }
    fn unreachable_points(&self) -> &'static [&'static str] {
        // bcachefs seals by copying, with stores
        &["rename:store", "seal:copied"]
    }
}

// ------------------------------------------------------------------------------------------------
// bcachefs in a VM guest: one directory per scenario at the top of a mounted filesystem
// ------------------------------------------------------------------------------------------------

pub struct BchFs {
    /// The scenario's directory (top/tag) and its name relative to the filesystem's root.
    dir: PathBuf,
    rel: String,
    dev: String,
    state: PathBuf,
}

fn bchtool() -> String {
    std::env::var("EPHEMERAL_ROOT_TEST_BCHTOOL").unwrap_or_else(|_| "bchtool".into())
}

impl BchFs {
    pub fn new(top: &str, dev: &str, tag: &str) -> BchFs {
        let dir = PathBuf::from(top).join(tag);
        let _ = run_quiet(&bchtool(), &["rmrf", &dir.to_string_lossy()]);
        std::fs::create_dir_all(&dir).unwrap();
        let state = std::env::temp_dir().join(format!("er-state-{tag}"));
        let _ = std::fs::remove_dir_all(&state);
        BchFs {
            dir,
            rel: tag.to_string(),
            dev: dev.to_string(),
            state,
        }
    }

    /// The real path of `rel`: an old root's nested subvolumes live in `<old>.nested/<encoded path>`.
    fn resolve(&self, rel: &str) -> PathBuf {
        let direct = self.dir.join(rel);
        if direct.symlink_metadata().is_ok() {
            return direct;
        }
        let Some(rest) = rel.strip_prefix("@snapshots/") else {
            return direct;
        };
        let Some((old, inner)) = rest.split_once('/') else {
            return direct;
        };
        let store = self.dir.join("@snapshots").join(format!("{old}.nested"));
        let mut best: Option<(usize, PathBuf)> = None;
        for enc in sorted_dir(&store) {
            let dec = enc.replace("%2F", "/").replace("%25", "%");
            if let Some(tail) = inner.strip_prefix(&format!("{dec}/")) {
                if best.as_ref().map_or(true, |(l, _)| dec.len() > *l) {
                    best = Some((dec.len(), store.join(&enc).join(tail)));
                }
            } else if inner == dec && best.is_none() {
                best = Some((dec.len(), store.join(&enc)));
            }
        }
        best.map(|(_, p)| p).unwrap_or(direct)
    }
}

impl Drop for BchFs {
    fn drop(&mut self) {
        let _ = run_quiet(&bchtool(), &["rmrf", &self.dir.to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl TestFs for BchFs {
    fn kind(&self) -> &'static str {
        "bcachefs"
    }
    fn write(&mut self, rel: &str, content: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    fn read(&mut self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.resolve(rel)).ok()
    }
    fn exists(&mut self, rel: &str) -> bool {
        self.resolve(rel).symlink_metadata().is_ok()
    }
    fn ls(&mut self, rel: &str) -> Vec<String> {
        sorted_dir(&self.resolve(rel))
    }
    fn subvol(&mut self, rel: &str) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        must(&bchtool(), &["create", &p.to_string_lossy()]);
    }
    fn is_readonly(&mut self, rel: &str) -> bool {
        let p = self.resolve(rel);
        run_quiet(&bchtool(), &["isro", &p.to_string_lossy()])
            .status
            .success()
    }
    fn subvols(&mut self) -> Vec<String> {
        let out = must(&bchtool(), &["subvols", &self.dir.to_string_lossy()]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }
    fn command_for(&mut self, prog: &str, args: &[&str]) -> Command {
        std::fs::create_dir_all(&self.state).unwrap();
        let mut c = base_command(prog, args, &self.state);
        c.arg("--device").arg(&self.dev);
        c.arg("--root").arg(format!("{}/@root", self.rel));
        c.arg("--snapshots").arg(format!("{}/@snapshots", self.rel));
        c
    }
    fn unreachable_points(&self) -> &'static [&'static str] {
        &[]
    }
}

// ------------------------------------------------------------------------------------------------
// ZFS in a VM guest: one dataset tree per scenario
// ------------------------------------------------------------------------------------------------

pub struct ZfsFs {
    /// `<parent>/<tag>`
    t: String,
    mnt: PathBuf,
    state: PathBuf,
    /// `zfs list` of the tree, until the next change (a run of the binary, a new dataset).
    cache: std::cell::RefCell<Option<Vec<String>>>,
}

impl ZfsFs {
    pub fn new(parent: &str, tag: &str) -> ZfsFs {
        let t = format!("{parent}/{tag}");
        let _ = run_quiet("zfs", &["destroy", "-r", &t]);
        must(
            "zfs",
            &["create", "-p", "-o", "canmount=off", &format!("{t}/local")],
        );
        must(
            "zfs",
            &["create", "-o", "canmount=off", &format!("{t}/safe")],
        );
        let mnt = std::env::temp_dir().join(format!("er-zfs-{tag}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let state = std::env::temp_dir().join(format!("er-state-{tag}"));
        let _ = std::fs::remove_dir_all(&state);
        ZfsFs {
            t,
            mnt,
            state,
            cache: Default::default(),
        }
    }

    fn datasets(&self) -> Vec<String> {
        if let Some(v) = self.cache.borrow().as_ref() {
            return v.clone();
        }
        let out = run_quiet("zfs", &["list", "-H", "-o", "name", "-r", &self.t]);
        let v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        *self.cache.borrow_mut() = Some(v.clone());
        v
    }

    /// `@root/a/b` -> (dataset, path inside it): the longest existing dataset that is a prefix.
    fn resolve(&self, rel: &str) -> (String, String) {
        let (head, rest) = rel.split_once('/').unwrap_or((rel, ""));
        let base = match head {
            "@root" => format!("{}/local/root", self.t),
            "@snapshots" => format!("{}/local/old-roots", self.t),
            "@persist" => format!("{}/safe/persist", self.t),
            o => panic!("ZfsFs: path {o} is not under @root, @snapshots or @persist"),
        };
        let all = self.datasets();
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        for k in (0..=parts.len()).rev() {
            let ds = if k == 0 {
                base.clone()
            } else {
                format!("{base}/{}", parts[..k].join("/"))
            };
            if all.contains(&ds) {
                return (ds, parts[k..].join("/"));
            }
        }
        (base, parts.join("/"))
    }

    /// Mount dataset `ds` at our mount point, run `f` on the path of `inner`, unmount.
    fn with_mount<R>(
        &self,
        ds: &str,
        rw: bool,
        inner: &str,
        f: impl FnOnce(PathBuf) -> R,
    ) -> Option<R> {
        let opts = if rw { "rw" } else { "ro" };
        let m = self.mnt.to_string_lossy().into_owned();
        let o = run_quiet("mount", &["-t", "zfs", "-o", opts, ds, &m]);
        if !o.status.success() {
            return None;
        }
        let r = f(self.mnt.join(inner));
        must("umount", &[&m]);
        Some(r)
    }
}

impl Drop for ZfsFs {
    fn drop(&mut self) {
        let _ = run_quiet("umount", &[&self.mnt.to_string_lossy()]);
        let _ = run_quiet("zfs", &["destroy", "-r", &self.t]);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl TestFs for ZfsFs {
    fn kind(&self) -> &'static str {
        "zfs"
    }
    fn write(&mut self, rel: &str, content: &str) {
        let (ds, inner) = self.resolve(rel);
        self.with_mount(&ds, true, &inner, |p| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        })
        .unwrap_or_else(|| panic!("cannot mount {ds} to write {rel}"));
    }
    fn read(&mut self, rel: &str) -> Option<String> {
        let (ds, inner) = self.resolve(rel);
        self.with_mount(&ds, false, &inner, |p| std::fs::read_to_string(p).ok())
            .flatten()
    }
    fn exists(&mut self, rel: &str) -> bool {
        let (ds, inner) = self.resolve(rel);
        if inner.is_empty() {
            return self.datasets().contains(&ds);
        }
        self.with_mount(&ds, false, &inner, |p| p.symlink_metadata().is_ok())
            .unwrap_or(false)
    }
    fn ls(&mut self, rel: &str) -> Vec<String> {
        let (ds, inner) = self.resolve(rel);
        if rel.starts_with("@snapshots") && inner.is_empty() {
            // the snapshots location's entries are its child datasets
            let pre = format!("{ds}/");
            let mut v: Vec<String> = self
                .datasets()
                .iter()
                .filter_map(|d| d.strip_prefix(&pre))
                .filter(|n| !n.contains('/'))
                .map(str::to_string)
                .collect();
            v.sort();
            return v;
        }
        if !rel.starts_with("@snapshots") && inner.is_empty() && !self.datasets().contains(&ds) {
            return vec![];
        }
        self.with_mount(&ds, false, &inner, |p| sorted_dir(&p))
            .unwrap_or_default()
    }
    fn subvol(&mut self, rel: &str) {
        let (head, rest) = rel.split_once('/').unwrap_or((rel, ""));
        let ds = match head {
            "@root" => format!("{}/local/root", self.t),
            "@persist" => format!("{}/safe/persist", self.t),
            o => panic!("ZfsFs: cannot create a dataset under {o}"),
        };
        let ds = if rest.is_empty() {
            ds
        } else {
            format!("{ds}/{rest}")
        };
        let mut a = vec!["create", "-p"];
        if rest.is_empty() {
            a.extend(["-o", "mountpoint=legacy"]);
        }
        a.push(&ds);
        *self.cache.borrow_mut() = None;
        must("zfs", &a);
    }
    fn is_readonly(&mut self, rel: &str) -> bool {
        let (ds, _) = self.resolve(rel);
        must("zfs", &["get", "-H", "-o", "value", "readonly", &ds]).trim() == "on"
    }
    fn subvols(&mut self) -> Vec<String> {
        let pre = format!("{}/", self.t);
        let mut v: Vec<String> = self
            .datasets()
            .iter()
            .filter_map(|d| {
                let r = d.strip_prefix(&pre)?;
                if r == "local" || r == "safe" {
                    return None;
                }
                Some(if let Some(x) = r.strip_prefix("local/root") {
                    format!("@root{x}")
                } else if let Some(x) = r.strip_prefix("local/old-roots") {
                    format!("@snapshots{x}")
                } else if r == "safe/persist" {
                    "@persist".to_string()
                } else {
                    d.clone()
                })
            })
            .collect();
        v.sort();
        v
    }
    fn command_for(&mut self, prog: &str, args: &[&str]) -> Command {
        std::fs::create_dir_all(&self.state).unwrap();
        // the run may change the datasets: list them again afterwards
        *self.cache.borrow_mut() = None;
        let mut c = base_command(prog, args, &self.state);
        c.arg("--fstype").arg("zfs");
        c.arg("--root").arg(format!("{}/local/root", self.t));
        c.arg("--snapshots")
            .arg(format!("{}/local/old-roots", self.t));
        c
    }
    fn unreachable_points(&self) -> &'static [&'static str] {
        &[]
    }
}
