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
    /// Which member of its filesystem this device is (btrfs devid, bcachefs device index): two
    /// devices that claim the same member of the same filesystem are copies.
    pub member: u64,
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
            member: u64::from_le_bytes(sb_btrfs[0xC9..0xD1].try_into().ok()?),
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
                member: u64::from(dev_idx),
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
                // Kernel block device names are ASCII; anything else is not one we can name.
                .filter_map(|e| e.file_name().to_str().map(|n| format!("/dev/{n}")))
                .filter(|p| std::path::Path::new(p).exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Resolve `UUID=…`, `LABEL=…` or a path to the device path(s) of the filesystem: for a
/// multi-device filesystem, every member with the same UUID. `UUID=`/`LABEL=` matching more than
/// one filesystem, or two devices that claim to be the same member of one filesystem (a `dd`
/// copy), is an error naming every device; an empty `UUID=`/`LABEL=` is a usage error.
pub fn resolve_devices(spec: &str) -> Result<(Vec<String>, Option<Super>)> {
    let scan = |pred: &dyn Fn(&Super) -> bool| -> Vec<(String, Super)> {
        block_devices()
            .into_iter()
            .filter_map(|d| match read_super(&d) {
                Ok(Some(s)) if pred(&s) => Some((d, s)),
                _ => None,
            })
            .collect()
    };
    let shown = crate::escape::cut_str(spec);
    let by_tag = if let Some(u) = spec.strip_prefix("UUID=") {
        Some(("UUID", u))
    } else {
        spec.strip_prefix("LABEL=").map(|l| ("LABEL", l))
    };
    if let Some((tag, value)) = by_tag {
        if value.is_empty() {
            return Err(Error::Usage(format!(
                "--device {tag}= has an empty value (it would match any filesystem without one); name the filesystem by {tag}=<value> or by its device path"
            )));
        }
        let found = if tag == "UUID" {
            let u = value.to_ascii_lowercase();
            scan(&|s| format_uuid(&s.uuid) == u)
        } else {
            scan(&|s| s.label == value)
        };
        return pick(&shown, found).map(|(d, s)| (d, Some(s)));
    }
    let sup = match read_super(spec) {
        Ok(s) => s,
        Err(e) => {
            return Err(Error::Usage(format!(
                "device {shown} cannot be read ({}); check --device / `device =` in the config",
                e.errno()
                    .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                    .unwrap_or_else(|| e.to_string())
            )))
        }
    };
    match sup {
        None => Ok((vec![spec.to_string()], None)),
        Some(s) if s.nr_devices > 1 => {
            let canon = std::fs::canonicalize(spec)
                .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
                .unwrap_or_else(|_| spec.as_bytes().to_vec());
            let mut members = scan(&|o| o.uuid == s.uuid);
            if !members
                .iter()
                .any(|(d, _)| d.as_bytes() == canon || d == spec)
            {
                members.push((spec.to_string(), s.clone()));
            }
            let (mut devs, _) = pick(&shown, members)?;
            devs.retain(|m| m.as_bytes() != canon && m != spec);
            devs.insert(0, spec.to_string());
            Ok((devs, Some(s)))
        }
        Some(s) => Ok((vec![spec.to_string()], Some(s))),
    }
}

/// From the devices that matched `spec`: the members of the one filesystem they hold, or an error
/// naming every device when they hold more than one filesystem (by UUID) or when two of them claim
/// the same member of one filesystem.
pub fn pick(spec: &str, found: Vec<(String, Super)>) -> Result<(Vec<String>, Super)> {
    let Some((_, first)) = found.first() else {
        return Err(Error::Usage(format!(
            "no block device has a btrfs or bcachefs filesystem with {spec}; check --device / `device =` (by-uuid/by-label links, `blkid`)"
        )));
    };
    let first = first.clone();
    let describe = |(d, s): &(String, Super)| {
        format!(
            "{} ({} UUID {}{})",
            crate::escape::cut_str(d),
            s.fstype,
            format_uuid(&s.uuid),
            if s.label.is_empty() {
                String::new()
            } else {
                format!(", label \"{}\"", crate::escape::cut_str(&s.label))
            }
        )
    };
    let mut uuids: Vec<[u8; 16]> = found.iter().map(|(_, s)| s.uuid).collect();
    uuids.sort();
    uuids.dedup();
    if uuids.len() > 1 {
        return Err(Error::Usage(format!(
            "{spec} matches {} filesystems: {}; pass --device with the device path (or UUID=) of the one you mean",
            uuids.len(),
            found.iter().map(describe).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut by_member: std::collections::BTreeMap<u64, Vec<&(String, Super)>> = Default::default();
    for f in &found {
        by_member.entry(f.1.member).or_default().push(f);
    }
    if let Some((m, devs)) = by_member.iter().find(|(_, v)| v.len() > 1) {
        return Err(Error::Usage(format!(
            "{spec}: {} devices claim to be member {m} of the same {} filesystem {} (copies, e.g. made with dd?): {}; detach the copy, or give it a new UUID (btrfstune -u), then try again",
            devs.len(),
            first.fstype,
            format_uuid(&first.uuid),
            devs.iter().map(|f| crate::escape::cut_str(&f.0)).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((found.into_iter().map(|(d, _)| d).collect(), first))
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
    fn ambiguous_matches_name_every_device() {
        let sup = |uuid: u8, member: u64, nr: u32| Super {
            fstype: FsType::Btrfs,
            uuid: [uuid; 16],
            label: "nixos".into(),
            nr_devices: nr,
            member,
        };
        let d = |n: &str, s: Super| (n.to_string(), s);
        // One filesystem on one device; one on two (members 1 and 2): fine.
        let (devs, _) = pick("LABEL=nixos", vec![d("/dev/a", sup(1, 1, 1))]).unwrap();
        assert_eq!(devs, ["/dev/a"]);
        let (devs, _) = pick(
            "LABEL=nixos",
            vec![d("/dev/a", sup(1, 1, 2)), d("/dev/b", sup(1, 2, 2))],
        )
        .unwrap();
        assert_eq!(devs, ["/dev/a", "/dev/b"]);
        // Two filesystems with one label: every device named.
        let e = pick(
            "LABEL=nixos",
            vec![
                d("/dev/a", sup(1, 1, 1)),
                d("/dev/b", sup(2, 1, 1)),
                d("/dev/c", sup(2, 2, 2)),
            ],
        )
        .unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(
            m.starts_with("LABEL=nixos matches 2 filesystems: /dev/a (btrfs UUID 01010101-"),
            "{m}"
        );
        assert!(
            m.contains("/dev/b (btrfs UUID 02020202-") && m.contains("/dev/c ("),
            "{m}"
        );
        // A dd copy: same filesystem, same member, two devices.
        let e = pick(
            "UUID=x",
            vec![d("/dev/a", sup(1, 1, 1)), d("/dev/b", sup(1, 1, 1))],
        )
        .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("2 devices claim to be member 1 of the same btrfs filesystem")
                && m.contains("/dev/a, /dev/b"),
            "{m}"
        );
        // Nothing found.
        assert!(pick("UUID=x", vec![])
            .unwrap_err()
            .to_string()
            .contains("no block device"));
        // Empty values are usage errors before anything is read.
        for spec in ["LABEL=", "UUID="] {
            let e = resolve_devices(spec).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("has an empty value"), "{e}");
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
