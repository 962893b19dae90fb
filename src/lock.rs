//! One writer per filesystem.
//!
//! Every command that changes the root or the snapshots location (`rollback`, `gc`, `pin`,
//! `unpin`, `baseline`) takes an exclusive `flock` before it reads the inventory; `restore`
//! takes a shared one (restores may run side by side, but never while the old root they read
//! can be pruned or the root replaced). The lock sits on a descriptor that every mount of the
//! filesystem shares, so our private mounts in separate mount namespaces see the same lock:
//!
//! - btrfs, bcachefs: the top-level directory of the filesystem (one inode per superblock,
//!   whichever mount it is reached through); nothing is written to the filesystem.
//! - ZFS: `/dev/zfs`, through which every change goes. One devtmpfs instance serves every
//!   mount namespace (the initrd's `/dev` is moved to the real root), so this is one lock per
//!   machine rather than per pool: two pools never change at the same time, which costs
//!   milliseconds. A per-pool object would need a dataset mounted (the snapshots dataset may be
//!   `canmount=off`), and a lock file would need a writable dataset.
//!
//! `flock` locks belong to the open file and die with the process, so a crash (or a power cut)
//! never leaves a stale lock. On contention the holder is named from `/proc/locks` (the inode
//! and the device as mountinfo shows it) and `/proc/PID/cmdline`, then we wait up to the
//! timeout (`--lock-wait SECONDS`, default [`DEFAULT_WAIT_SECS`]; 0 refuses at once) and refuse
//! with one line if it is still held. `rollback` waits too: refusing would fail the boot on a
//! fail-closed machine, and once it has the lock it reads the inventory afresh, so it sees what
//! the other run did (a fresh root: nothing to keep) or left (an interrupted run: finished).

use crate::error::{Error, Result};
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, FlockOperation, StatxFlags};
use rustix::io::Errno;
use std::time::{Duration, Instant};

/// How long a writer waits for another one by default (seconds). Below the initrd unit's
/// `TimeoutStartSec` (5 min), so a stuck holder is reported by us, not by a systemd timeout.
pub const DEFAULT_WAIT_SECS: u64 = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Readers that need the old roots to stay put (`restore`).
    #[cfg_attr(not(feature = "tools"), allow(dead_code))]
    Shared,
    /// Writers.
    Exclusive,
}

/// How a command takes the lock.
pub struct Request<'a> {
    pub mode: Mode,
    /// For messages: `rollback`, `gc`, …
    pub command: &'a str,
    pub wait: Duration,
}

impl<'a> Request<'a> {
    /// `wait`: `--lock-wait SECONDS`, if given.
    pub fn new(command: &'a str, mode: Mode, wait: Option<u64>) -> Request<'a> {
        Request {
            mode,
            command,
            wait: Duration::from_secs(wait.unwrap_or(DEFAULT_WAIT_SECS)),
        }
    }
}

/// One line of `/proc/locks` that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    pub kind: String,
    pub write: bool,
    pub pid: i64,
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
    /// A waiter (`->` lines), not a holder.
    pub blocked: bool,
}

/// Parse `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 7934 00:27:256 0 EOF`, waiters as
/// `1: -> FLOCK ...`). Unparsable lines are skipped.
pub fn parse_locks(text: &str) -> Vec<LockLine> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.next()?; // "N:"
            let mut kind = w.next()?;
            let blocked = kind == "->";
            if blocked {
                kind = w.next()?;
            }
            w.next()?; // ADVISORY / MANDATORY
            let rw = w.next()?;
            let pid: i64 = w.next()?.parse().ok()?;
            let mut dev = w.next()?.split(':');
            let major = u32::from_str_radix(dev.next()?, 16).ok()?;
            let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
            let ino: u64 = dev.next()?.parse().ok()?;
            Some(LockLine {
                kind: kind.to_string(),
                write: rw == "WRITE",
                pid,
                major,
                minor,
                ino,
                blocked,
            })
        })
        .collect()
}

/// PIDs holding a `flock` on (major, minor, ino), other than `me`.
pub fn holders(locks: &[LockLine], dev: (u32, u32), ino: u64, me: i64) -> Vec<i64> {
    let mut v: Vec<i64> = Vec::new();
    for l in locks {
        let ours = l.kind == "FLOCK" && !l.blocked && (l.major, l.minor) == dev && l.ino == ino;
        if ours && l.pid != me && l.pid > 0 && !v.contains(&l.pid) {
            v.push(l.pid);
        }
    }
    v
}

/// The major:minor mountinfo shows for mount `mnt_id` (the superblock's device; `stat` may show
/// another one, e.g. a btrfs subvolume's anonymous device).
fn mount_dev(mountinfo: &str, mnt_id: u64) -> Option<(u32, u32)> {
    mountinfo.lines().find_map(|l| {
        let mut w = l.split(' ');
        let id: u64 = w.next()?.parse().ok()?;
        if id != mnt_id {
            return None;
        }
        let (a, b) = w.nth(1)?.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

/// `pid N (cmdline)` for each process holding a lock on `fd`'s file; empty if none can be seen
/// (a holder in another PID namespace).
pub fn describe_holders(fd: BorrowedFd<'_>) -> String {
    let Ok(st) = rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::INO | StatxFlags::MNT_ID,
    ) else {
        return String::new();
    };
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(dev) = mount_dev(&mi, st.stx_mnt_id) else {
        return String::new();
    };
    let locks = parse_locks(&std::fs::read_to_string("/proc/locks").unwrap_or_default());
    let me = std::process::id() as i64;
    holders(&locks, dev, st.stx_ino, me)
        .into_iter()
        .map(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return format!(
                    "pid {pid} (gone; a process that inherited its descriptor still holds the lock)"
                );
            };
            let words: Vec<String> = cmd
                .split(|&b| b == 0)
                .filter(|w| !w.is_empty())
                .map(crate::escape::escape)
                .collect();
            format!("pid {pid} ({})", crate::escape::text(&words.join(" ")))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn try_lock(fd: BorrowedFd<'_>, mode: Mode) -> rustix::io::Result<()> {
    rustix::fs::flock(
        fd,
        match mode {
            Mode::Shared => FlockOperation::NonBlockingLockShared,
            Mode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        },
    )
}

/// Take the lock on `fd` (held until `fd` is closed, i.e. until the backend is closed, or the
/// process ends). `what` names the filesystem, `command` this command, for messages.
pub fn acquire(
    fd: BorrowedFd<'_>,
    mode: Mode,
    what: &str,
    command: &str,
    wait: Duration,
) -> Result<()> {
    #[cfg(feature = "fault-injection")]
    if std::env::var("EPHEMERAL_ROOT_TEST_NO_LOCK").as_deref() == Ok("1") {
        log::warn!("fault injection: running {command} WITHOUT the filesystem lock");
        return Ok(());
    }
    let start = Instant::now();
    let mut told = false;
    loop {
        match try_lock(fd, mode) {
            Ok(()) => {
                if told {
                    log::info!(
                        "{command}: got the lock on {what} after {} ms",
                        start.elapsed().as_millis()
                    );
                }
                return Ok(());
            }
            Err(Errno::WOULDBLOCK) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(Error::sys(format!("lock {what} for {command} (flock)"), e)),
        }
        let who = describe_holders(fd);
        let who = if who.is_empty() {
            "a process this one cannot see (another PID namespace?)".to_string()
        } else {
            who
        };
        if start.elapsed() >= wait {
            let waited = if wait.is_zero() {
                String::new()
            } else {
                format!(" after waiting {} s", wait.as_secs())
            };
            return Err(Error::Refused(format!(
                "{command}: {what} is locked by another writer: {who}; gave up{waited} (let it finish, or pass --lock-wait SECONDS to wait longer)"
            )));
        }
        if !told {
            log::warn!(
                "{command}: {what} is being changed by {who}; waiting up to {} s for it to finish",
                wait.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: FLOCK  ADVISORY  WRITE 7691 fe:00:10010903 0 EOF
2: FLOCK  ADVISORY  READ 7691 fe:00:604 0 EOF
3: OFDLCK ADVISORY  READ -1 00:27:256 201 201
4: POSIX  ADVISORY  WRITE 812 00:27:256 0 EOF
5: FLOCK  ADVISORY  WRITE 7934 00:27:256 0 EOF
5: -> FLOCK  ADVISORY  WRITE 8000 00:27:256 0 EOF
6: FLOCK  ADVISORY  READ 8001 00:27:256 0 EOF
7: FLOCK  ADVISORY  READ 8002 00:28:256 0 EOF
8: FLOCK  ADVISORY  READ 8003 00:27:257 0 EOF
garbage
";

    #[test]
    fn holders_of_one_inode() {
        let l = parse_locks(LOCKS);
        assert_eq!(l.len(), 9);
        assert!(l[5].blocked && l[5].pid == 8000);
        assert_eq!(l[0].major, 0xfe);
        // Only FLOCK holders of 0:0x27 inode 256; the waiter and ourselves excluded.
        assert_eq!(holders(&l, (0, 0x27), 256, 0), vec![7934, 8001]);
        assert_eq!(holders(&l, (0, 0x27), 256, 7934), vec![8001]);
        assert_eq!(holders(&l, (0, 0x28), 256, 0), vec![8002]);
        assert!(holders(&l, (0, 0x29), 256, 0).is_empty());
    }

    #[test]
    fn device_from_mountinfo() {
        let mi =
            "22 1 0:21 / / rw - ext4 /dev/vda rw\n43 27 0:39 / /tmp/lkm rw - btrfs /dev/loop0 rw\n";
        assert_eq!(mount_dev(mi, 43), Some((0, 39)));
        assert_eq!(mount_dev(mi, 22), Some((0, 21)));
        assert_eq!(mount_dev(mi, 7), None);
    }
}
