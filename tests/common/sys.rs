//! A running system whose `/` is the ephemeral root, for the commands that look at the running
//! system (`persist`; `diff`, `check` and `status` on hidden content): a btrfs loop device with
//! `@root`, `@persist` and `@snapshots`; a mount namespace (kept alive by a `sleep` started with
//! `unshare -m`) in which `@root` is mounted at `<dir>/sys` and `@persist` at `<dir>/sys/persist`,
//! with the host's `/usr` (read-only), `/proc`, `/dev`, `/sys`, a tmpfs `/run` and the binary at
//! `/er`; commands run `chroot`ed there, so `/` is the root subvolume, `/persist` the store, and a
//! bind mount of the store over a path on the root is what impermanence makes at boot.

use super::{bin, LoopFs};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub struct Sys {
    ns: Child,
    pub root: PathBuf,
    pub fs: LoopFs,
}

fn ns_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

impl Sys {
    /// A new system; `setup` writes into the filesystem (mounted at `fs.mnt`: `@root/…`,
    /// `@persist/…`) before the namespace is made. `conf` is the config file's text (the device
    /// line is added).
    pub fn new(tag: &str, conf: &str, setup: impl FnOnce(&mut LoopFs)) -> Sys {
        let mut fs = LoopFs::new(tag);
        fs.subvol("@root");
        fs.subvol("@persist");
        fs.subvol("@snapshots");
        let r = fs.p("@root");
        for d in [
            "persist", "usr", "proc", "dev", "sys", "run", "tmp", "etc", "var/lib",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for (l, t) in [
            ("lib", "usr/lib"),
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(t, r.join(l)).unwrap();
        }
        std::fs::write(r.join("er"), "").unwrap();
        setup(&mut fs);
        fs.umount();
        let mine = ns_of(std::process::id());
        let ns = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "3600"])
            .spawn()
            .expect("unshare");
        for _ in 0..200 {
            if ns_of(ns.id()).is_some() && ns_of(ns.id()) != mine {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let root = fs.dir.join("sys");
        std::fs::create_dir_all(&root).unwrap();
        let s = Sys { ns, root, fs };
        let r = s.root.display().to_string();
        let dev = s.fs.dev.clone();
        s.ns_sh(&format!(
            "set -e; mount -o subvol=@root,noatime {dev} {r}; mount -o subvol=@persist,noatime {dev} {r}/persist; \
             mount --bind -o ro /usr {r}/usr; mount -t proc proc {r}/proc; mount --rbind /dev {r}/dev; \
             mount --rbind /sys {r}/sys; mount -t tmpfs tmpfs {r}/run; mount --bind {} {r}/er",
            bin()
        ));
        s.write_run("er.conf", &format!("device = {dev}\n{conf}"));
        s
    }

    /// A shell command in the namespace, outside the chroot (must succeed); stdout.
    pub fn ns_sh(&self, script: &str) -> String {
        let o = Command::new("nsenter")
            .args(["-t", &self.ns.id().to_string(), "-m", "sh", "-c", script])
            .output()
            .expect("nsenter");
        assert!(
            o.status.success(),
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A file in the chroot's tmpfs /run.
    pub fn write_run(&self, name: &str, text: &str) {
        let tmp = self.fs.dir.join(format!("run-{name}"));
        std::fs::write(&tmp, text).unwrap();
        self.ns_sh(&format!(
            "cp {} {}/run/{name}",
            tmp.display(),
            self.root.display()
        ));
    }

    /// The command that runs `argv` chrooted in the system.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.ns.id().to_string(), "-m", "chroot"])
            .arg(&self.root)
            .args(argv)
            .env("EPHEMERAL_ROOT_LOG", "stderr")
            .env_remove("JOURNAL_STREAM")
            .env_remove("EPHEMERAL_ROOT_FAULT");
        c
    }

    /// A shell command in the system (chrooted); its output, whatever the status.
    pub fn sh(&self, script: &str) -> Output {
        self.command(&["sh", "-c", script]).output().expect("sh")
    }

    /// A shell command in the system that must succeed; stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "`{script}` failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ephemeral-root ARGS --config /run/er.conf` in the system.
    pub fn er(&self, args: &[&str]) -> Output {
        let mut a = vec!["/er"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--config", "/run/er.conf"]);
        self.command(&a).output().expect("run ephemeral-root")
    }

    /// A process in the system that runs `script` (after printing "ready"); returns once it is
    /// ready. Kill it with [`Child::kill`].
    pub fn spawn(&self, script: &str) -> Child {
        let mut c = self
            .command(&["sh", "-c", &format!("{script}; echo ready; exec sleep 600")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        let out = c.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{script}");
        c
    }

    /// A path of the filesystem as the test sees it (`@root/…`, `@persist/…`), mounted.
    pub fn host(&mut self, rel: &str) -> PathBuf {
        self.fs.mount();
        self.fs.p(rel)
    }
}

impl Drop for Sys {
    fn drop(&mut self) {
        let _ = self.ns.kill();
        let _ = self.ns.wait();
        // The namespace's mounts go with its last process; the loop device is freed by LoopFs.
    }
}
