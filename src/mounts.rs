//! Mount plumbing: a private mount namespace for our work mounts, mounting and unmounting, and
//! parsing `/proc/self/mountinfo` to find out whether the root is in use.

use crate::error::{Context, Result};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::path::{Path, PathBuf};

/// Where our private mounts live.
pub const RUN_DIR: &str = "/run/ephemeral-root";

/// Move this process into its own mount namespace with private propagation, so the mounts we
/// make are invisible to everyone else and disappear with the process, even if it is killed.
#[allow(unsafe_code)]
pub fn enter_private_namespace() -> Result<()> {
    // SAFETY: NEWNS only affects the mount namespace, not the file descriptor table, so no
    // thread can observe a descriptor from an unshared table (the hazard of this call).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .ctx(|| "unshare the mount namespace (are we root?)")?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .ctx(|| "make / private in our mount namespace")?;
    Ok(())
}

/// A mount we made; unmounted on drop if not unmounted explicitly.
pub struct Mounted {
    pub path: PathBuf,
    active: bool,
}

impl Mounted {
    pub fn mount(
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> Result<Mounted> {
        std::fs::create_dir_all(target)
            .ctx(|| format!("create mount point {}", target.display()))?;
        let cdata = std::ffi::CString::new(data).map_err(|_| {
            crate::error::Error::Usage(format!("mount options {data:?} contain NUL"))
        })?;
        rustix::mount::mount(source, target, fstype, flags, Some(cdata.as_c_str()))
            .ctx(|| format!("mount {source} ({fstype}, {data}) on {}", target.display()))?;
        Ok(Mounted {
            path: target.to_path_buf(),
            active: true,
        })
    }
    /// `source` read-only at `target`. A ZFS dataset mounted read-write elsewhere (the running
    /// system's `/` or `/persist`) cannot be mounted with `MS_RDONLY`: OpenZFS reuses the
    /// dataset's superblock and refuses a different read-only flag with EBUSY (`zpl_mount`). Then
    /// it is mounted with the superblock's flags and this mount alone is made read-only
    /// (`MS_REMOUNT | MS_BIND | MS_RDONLY` changes the mount, not the superblock or the other
    /// mounts), in our private namespace, before anything reads it.
    #[cfg(feature = "tools")]
    pub fn mount_readonly(
        source: &str,
        target: &Path,
        fstype: &str,
        data: &str,
    ) -> Result<Mounted> {
        match Mounted::mount(source, target, fstype, MountFlags::RDONLY, data) {
            Err(crate::error::Error::Sys { source: e, .. })
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) =>
            {
                let m = Mounted::mount(source, target, fstype, MountFlags::empty(), data)?;
                rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                    .ctx(|| {
                        format!(
                            "make the mount of {source} on {} read-only",
                            target.display()
                        )
                    })?;
                Ok(m)
            }
            r => r,
        }
    }

    /// Already unmounted (detached with its parent): nothing to do on drop.
    #[cfg(feature = "tools")]
    pub fn forget(mut self) {
        self.active = false;
    }

    pub fn unmount(mut self) -> Result<()> {
        self.active = false;
        rustix::mount::unmount(&self.path, UnmountFlags::empty())
            .ctx(|| format!("unmount {}", self.path.display()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active {
            let _ = rustix::mount::unmount(&self.path, UnmountFlags::DETACH);
        }
    }
}

/// Is `/` a tmpfs (no subvolumes to compare: walk `/` itself)?
pub fn root_is_tmpfs(mi: &[MountInfo]) -> bool {
    mi.iter()
        .rev()
        .find(|m| m.mount_point == "/")
        .is_some_and(|m| m.fstype == "tmpfs")
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount id (`statx` `STATX_MNT_ID` reports the same number).
    pub id: u64,
    pub major: u32,
    pub minor: u32,
    /// Path inside the filesystem that is the root of this mount (btrfs: `/@root`).
    pub root: String,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

impl MountInfo {
    pub fn super_opt(&self, key: &str) -> Option<&str> {
        self.super_opts
            .split(',')
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
    }
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s.as_bytes())).into_owned()
}

/// Parse mountinfo text. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (maj, min) = l.get(2)?.split_once(':')?;
            Some(MountInfo {
                id: l.first()?.parse().ok()?,
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                root: unescape(l.get(3)?),
                mount_point: unescape(l.get(4)?),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
                super_opts: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

pub fn read_mountinfo() -> Result<Vec<MountInfo>> {
    // Bytes: a mount point that is not UTF-8 (anyone with FUSE can make one) must not make every
    // command fail; such a line never matches our own mounts.
    let t = std::fs::read("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&String::from_utf8_lossy(&t)))
}

/// Mount points of this mount namespace, as bytes (octal escapes of mountinfo undone).
#[cfg(feature = "tools")]
pub fn mount_points() -> Vec<Vec<u8>> {
    let Ok(t) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    t.split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(unescape_bytes)
        .collect()
}

fn unescape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Is `path` (a subvolume path relative to the top level, without leading '/') or anything
/// below it the root of a mount? Returns the mount point of the first such mount.
pub fn mounted_below<'a>(
    mounts: &'a [MountInfo],
    major: u32,
    minor: u32,
    path: &str,
) -> Option<&'a MountInfo> {
    let want = format!("/{}", path.trim_matches('/'));
    mounts.iter().find(|m| {
        m.major == major
            && m.minor == minor
            && (m.root == want || m.root.starts_with(&format!("{want}/")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:33 /@root / rw,relatime shared:2 - btrfs /dev/vdb rw,space_cache=v2,subvolid=256,subvol=/@root
37 22 0:33 /@persist /persist rw shared:3 - btrfs /dev/vdb rw,subvolid=257,subvol=/@persist
38 22 0:33 /@root/var/lib/machines /var/lib/machines rw - btrfs /dev/vdb rw,subvolid=260,subvol=/@root/var/lib/machines
39 22 0:40 / /mnt/with\\040space rw - tmpfs none rw
bogus line
";

    #[test]
    fn parse() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].root, "/@root");
        assert_eq!((m[1].id, m[2].id), (36, 37));
        assert_eq!(m[1].super_opt("subvolid"), Some("256"));
        assert_eq!(m[4].mount_point, "/mnt/with space");
    }

    #[test]
    fn mounted_detection() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(
            mounted_below(&m, 0, 33, "@root").map(|m| m.mount_point.as_str()),
            Some("/")
        );
        assert_eq!(
            mounted_below(&m, 0, 33, "@persist").map(|m| m.mount_point.as_str()),
            Some("/persist")
        );
        assert!(mounted_below(&m, 0, 33, "@roo").is_none());
        assert!(mounted_below(&m, 0, 33, "@snapshots").is_none());
        assert!(mounted_below(&m, 0, 34, "@root").is_none());
        assert_eq!(
            mounted_below(&m, 0, 33, "@root/var/lib").map(|m| m.mount_point.as_str()),
            Some("/var/lib/machines")
        );
    }
}
