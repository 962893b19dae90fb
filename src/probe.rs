//! Reading superblocks of block devices: which filesystem a device holds, and finding devices by
//! `UUID=`/`LABEL=` or by membership of a multi-device filesystem, without udev or blkid.

use crate::config::FsType;
use crate::error::{Context, Error, Result};
use std::io::{Read, Seek, SeekFrom};

const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
const BCHFS_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x66, 0xce, 0x90, 0xa9, 0xd9, 0x6a, 0x60, 0xcf, 0x80, 0x3d, 0xf7, 0xef,
];
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];

/// What a device's superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Super {
    pub fstype: FsType,
    /// The filesystem UUID users see (btrfs fsid, bcachefs user_uuid).
    pub uuid: [u8; 16],
    pub label: String,
    /// bcachefs: number of member devices the filesystem has.
    pub nr_devices: u32,
}

fn read_at(f: &mut std::fs::File, off: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    f.seek(SeekFrom::Start(off))?;
    match f.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn label_of(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parse the superblock region. `sb_btrfs` is the 4 KiB at 64 KiB, `sb_bch` the 4 KiB at 4 KiB.
pub fn parse_super(sb_bch: &[u8], sb_btrfs: &[u8]) -> Option<Super> {
    if sb_btrfs.len() >= 0x12B + 256 && &sb_btrfs[0x40..0x48] == BTRFS_MAGIC {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb_btrfs[0x20..0x30]);
        return Some(Super {
            fstype: FsType::Btrfs,
            uuid,
            label: label_of(&sb_btrfs[0x12B..0x12B + 256]),
            nr_devices: u64::from_le_bytes(sb_btrfs[0x88..0x90].try_into().ok()?) as u32,
        });
    }
    if sb_bch.len() >= 128 {
        let magic = &sb_bch[24..40];
        let offset = u64::from_le_bytes(sb_bch[104..112].try_into().ok()?);
        let (dev_idx, nr) = (sb_bch[122], sb_bch[123]);
        let legacy_ok = magic == BCACHE_MAGIC && offset == 8 && nr > 0 && dev_idx < nr;
        if magic == BCHFS_MAGIC || legacy_ok {
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&sb_bch[56..72]);
            return Some(Super {
                fstype: FsType::Bcachefs,
                uuid,
                label: label_of(&sb_bch[72..104]),
                nr_devices: u32::from(nr),
            });
        }
    }
    None
}

/// Read the superblock of a device (or image file).
pub fn read_super(dev: &str) -> Result<Option<Super>> {
    let mut f = std::fs::File::open(dev).ctx(|| format!("open device {dev}"))?;
    let mut a = vec![0u8; 4096];
    let mut b = vec![0u8; 4096];
    let ok_a = read_at(&mut f, 4096, &mut a).ctx(|| format!("read superblock of {dev}"))?;
    let ok_b = read_at(&mut f, 65536, &mut b).ctx(|| format!("read superblock of {dev}"))?;
    Ok(parse_super(
        if ok_a { &a } else { &[] },
        if ok_b { &b } else { &[] },
    ))
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// All block devices (as /dev paths) from /sys/class/block.
fn block_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
                .filter(|p| std::path::Path::new(p).exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Resolve `UUID=…`, `LABEL=…` or a path to the device path(s) of the filesystem: for a
/// multi-device filesystem, every member with the same UUID.
pub fn resolve_devices(spec: &str) -> Result<(Vec<String>, Option<Super>)> {
    let by = |pred: &dyn Fn(&Super) -> bool| -> Vec<(String, Super)> {
        block_devices()
            .into_iter()
            .filter_map(|d| match read_super(&d) {
                Ok(Some(s)) if pred(&s) => Some((d, s)),
                _ => None,
            })
            .collect()
    };
    let found: Vec<(String, Super)> = if let Some(u) = spec.strip_prefix("UUID=") {
        let u = u.to_ascii_lowercase();
        by(&|s| format_uuid(&s.uuid) == u)
    } else if let Some(l) = spec.strip_prefix("LABEL=") {
        by(&|s| s.label == l)
    } else {
        let sup = match read_super(spec) {
            Ok(s) => s,
            Err(e) => {
                return Err(Error::Usage(format!(
                    "device {spec} cannot be read ({}); check --device / `device =` in the config",
                    e.errno()
                        .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                        .unwrap_or_else(|| e.to_string())
                )))
            }
        };
        match sup {
            None => return Ok((vec![spec.to_string()], None)),
            Some(s) if s.nr_devices > 1 => {
                let mut members: Vec<String> = by(&|o| o.uuid == s.uuid)
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect();
                let canon = std::fs::canonicalize(spec)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or(spec.to_string());
                members.retain(|m| *m != canon && m != spec);
                members.insert(0, spec.to_string());
                return Ok((members, Some(s)));
            }
            Some(s) => return Ok((vec![spec.to_string()], Some(s))),
        }
    };
    match found.first() {
        None => Err(Error::Usage(format!(
            "no block device has a btrfs or bcachefs filesystem with {spec}; check --device / `device =` (by-uuid/by-label links, `blkid`)"
        ))),
        Some((_, s)) => {
            let s = s.clone();
            Ok((found.into_iter().filter(|(_, o)| o.uuid == s.uuid).map(|(d, _)| d).collect(), Some(s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btrfs_super() {
        let mut b = vec![0u8; 4096];
        b[0x40..0x48].copy_from_slice(BTRFS_MAGIC);
        b[0x20] = 0xab;
        b[0x88] = 1;
        b[0x12B..0x12B + 5].copy_from_slice(b"nixos");
        let s = parse_super(&[0u8; 4096], &b).unwrap();
        assert_eq!(s.fstype, FsType::Btrfs);
        assert_eq!(s.label, "nixos");
        assert_eq!(s.uuid[0], 0xab);
        assert_eq!(parse_super(&[0u8; 4096], &[0u8; 4096]), None);
        assert_eq!(parse_super(&[], &[]), None);
    }

    #[test]
    fn bcachefs_super_and_legacy_magic_rules() {
        let mut a = vec![0u8; 4096];
        a[24..40].copy_from_slice(&BCHFS_MAGIC);
        a[104] = 8;
        a[122] = 1;
        a[123] = 2;
        a[72..77].copy_from_slice(b"nixos");
        let s = parse_super(&a, &[]).unwrap();
        assert_eq!(
            (s.fstype, s.nr_devices, s.label.as_str()),
            (FsType::Bcachefs, 2, "nixos")
        );
        // Old bcache magic counts only with a sane offset and device index.
        a[24..40].copy_from_slice(&BCACHE_MAGIC);
        assert!(parse_super(&a, &[]).is_some());
        a[104] = 9;
        assert!(parse_super(&a, &[]).is_none());
    }

    /// The first 80 KiB of a fixture image (shared/fixtures, beside the repository).
    fn fixture_head(name: &str) -> Option<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures")
            .join(name);
        if !path.exists() {
            let allow = std::env::var("EPHEMERAL_ROOT_ALLOW_SKIP").as_deref() == Ok("1")
                && std::env::var("CI").is_err();
            assert!(
                allow,
                "fixture {} missing (set EPHEMERAL_ROOT_ALLOW_SKIP=1 to skip outside CI)",
                path.display()
            );
            eprintln!("*** SKIPPED *** fixture {} not found", path.display());
            return None;
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc '{}' | head -c 81920", path.display()))
            .output()
            .expect("zstd");
        assert_eq!(
            out.stdout.len(),
            81920,
            "zstd -dc {} failed",
            path.display()
        );
        Some(out.stdout)
    }

    #[test]
    fn real_bcachefs_fixture_superblocks() {
        let cases = [
            (
                "bcachefs-blank-512M.img.zst",
                "5f44da2f-ee43-42a6-ad75-39b104b50099",
                1,
            ),
            (
                "bcachefs-2dev-a-512M.img.zst",
                "b46556d9-b41d-4f06-8f93-774e6f471f6f",
                2,
            ),
            (
                "bcachefs-2dev-b-512M.img.zst",
                "b46556d9-b41d-4f06-8f93-774e6f471f6f",
                2,
            ),
        ];
        for (file, uuid, nr) in cases {
            let Some(img) = fixture_head(file) else {
                continue;
            };
            let s = parse_super(&img[4096..8192], &img[65536..69632]).expect(file);
            assert_eq!(s.fstype, FsType::Bcachefs, "{file}");
            assert_eq!(format_uuid(&s.uuid), uuid, "{file}");
            assert_eq!(s.label, "nixos", "{file}");
            assert_eq!(s.nr_devices, nr, "{file}");
        }
    }

    #[test]
    fn uuid_format() {
        let u = [
            0x5f, 0x44, 0xda, 0x2f, 0xee, 0x43, 0x42, 0xa6, 0xad, 0x75, 0x39, 0xb1, 0x04, 0xb5,
            0x00, 0x99,
        ];
        assert_eq!(format_uuid(&u), "5f44da2f-ee43-42a6-ad75-39b104b50099");
    }
}
