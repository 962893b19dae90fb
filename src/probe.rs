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
    /// bcachefs: number of member slots (`nr_devices`); btrfs: `num_devices`.
    pub nr_devices: u32,
    /// Which member of its filesystem this device is (btrfs devid, bcachefs device index): two
    /// devices that claim the same member of the same filesystem are copies.
    pub member: u64,
    /// bcachefs: the on-disk metadata version (e.g. 1037 = 1.13, 1063 = 1.39); btrfs: 0.
    pub version: u16,
    /// bcachefs: the device UUID of each member slot, by index (all zero: an empty slot, a removed
    /// device), from the members_v2 or members_v1 field; empty when the superblock has neither.
    pub members: Vec<[u8; 16]>,
}

// bcachefs superblock (`struct bch_sb`, offsets from its start at byte 4096 of the device): the
// variable-length fields begin after the fixed header and the embedded layout, at 0x2f0; `u64s`
// (0x7c) is their length in u64s. Each field: le32 u64s (including this header), le32 type.
const BCH_SB_FIELDS: usize = 0x2f0;
const BCH_SB_FIELD_MEMBERS_V1: u32 = 1;
const BCH_SB_FIELD_MEMBERS_V2: u32 = 11;
/// `struct bch_member` in members_v1 (members_v2 records its own size).
const BCH_MEMBER_V1_BYTES: usize = 56;
/// How much of the superblock `read_super` reads (fields beyond this are not parsed).
const BCH_SB_READ: usize = 61440;

/// The member device UUIDs of a bcachefs superblock, by index (`nr` slots).
fn bch_members(sb: &[u8], nr: usize) -> Vec<[u8; 16]> {
    let u64s = sb
        .get(0x7c..0x80)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0) as usize;
    let end = (BCH_SB_FIELDS + u64s * 8).min(sb.len());
    let mut off = BCH_SB_FIELDS;
    let mut v1 = None;
    while off + 8 <= end {
        let fu = u32::from_le_bytes([sb[off], sb[off + 1], sb[off + 2], sb[off + 3]]) as usize;
        let ty = u32::from_le_bytes([sb[off + 4], sb[off + 5], sb[off + 6], sb[off + 7]]);
        if fu == 0 || off + fu * 8 > end {
            break;
        }
        let field = &sb[off..off + fu * 8];
        let (base, size) = match ty {
            BCH_SB_FIELD_MEMBERS_V2 if field.len() >= 16 => {
                (16, u16::from_le_bytes([field[8], field[9]]) as usize)
            }
            BCH_SB_FIELD_MEMBERS_V1 => (8, BCH_MEMBER_V1_BYTES),
            _ => (0, 0),
        };
        if size >= 16 && base + nr * size <= field.len() {
            let m: Vec<[u8; 16]> = (0..nr)
                .filter_map(|i| field[base + i * size..base + i * size + 16].try_into().ok())
                .collect();
            if ty == BCH_SB_FIELD_MEMBERS_V2 {
                return m;
            }
            v1 = Some(m);
        }
        off += fu * 8;
    }
    v1.unwrap_or_default()
}

/// Read up to `buf.len()` bytes at `off`; returns how many were read (short at the end of a device).
fn read_upto(f: &mut std::fs::File, off: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    f.seek(SeekFrom::Start(off))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn label_of(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parse the superblock region. `sb_btrfs` is the 4 KiB at 64 KiB, `sb_bch` the bytes from 4 KiB
/// (at least 4 KiB; more holds more of the bcachefs fields).
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
            version: 0,
            members: Vec::new(),
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
                version: u16::from_le_bytes([sb_bch[16], sb_bch[17]]),
                members: bch_members(sb_bch, usize::from(nr)),
            });
        }
    }
    None
}

/// Read the superblock of a device (or image file): one read of bytes [4 KiB, 68 KiB), the
/// bcachefs superblock's first 60 KiB and btrfs's 4 KiB at 64 KiB together (one I/O on the boot
/// path instead of two: each cold read of the device cost a few ms in bench/rollback.sh).
pub fn read_super(dev: &str) -> Result<Option<Super>> {
    const _: () = assert!(4096 + BCH_SB_READ == 65536);
    let mut f = std::fs::File::open(dev).ctx(|| format!("open device {dev}"))?;
    let mut buf = vec![0u8; BCH_SB_READ + 4096];
    let n = read_upto(&mut f, 4096, &mut buf).ctx(|| format!("read superblock of {dev}"))?;
    let (a, b) = buf.split_at(BCH_SB_READ);
    let n_a = n.min(BCH_SB_READ);
    Ok(parse_super(
        if n_a >= 4096 { &a[..n_a] } else { &[] },
        if n == BCH_SB_READ + 4096 { b } else { &[] },
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

/// A multi-device bcachefs filesystem must be whole before anything is done to it: every member
/// slot that holds a device (non-zero device UUID in the members field; every index below
/// `nr_devices` when the field could not be read) must be among `found` (device, superblock) with
/// the filesystem's UUID. Otherwise one line naming each missing member, and nothing is touched:
/// a filesystem we cannot see whole is never rolled back (mounting it would need `degraded`).
pub fn check_members(spec: &str, s: &Super, found: &[(String, Super)]) -> Result<()> {
    if s.fstype != FsType::Bcachefs || s.nr_devices <= 1 {
        return Ok(());
    }
    let nr = s.nr_devices as usize;
    let want: Vec<(u64, Option<[u8; 16]>)> = if s.members.len() == nr {
        (0u64..)
            .zip(s.members.iter())
            .filter(|(_, u)| **u != [0u8; 16])
            .map(|(i, u)| (i, Some(*u)))
            .collect()
    } else {
        (0..u64::from(s.nr_devices)).map(|i| (i, None)).collect()
    };
    let mut have: Vec<(u64, &str)> = found
        .iter()
        .filter(|(_, o)| o.uuid == s.uuid)
        .map(|(d, o)| (o.member, d.as_str()))
        .collect();
    have.sort();
    have.dedup();
    let missing: Vec<String> = want
        .iter()
        .filter(|(i, _)| !have.iter().any(|(h, _)| h == i))
        .map(|(i, u)| match u {
            Some(u) => format!("member {i} (device UUID {})", format_uuid(u)),
            None => format!("member {i}"),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let seen: Vec<String> = have.iter().map(|(i, d)| format!("{i} {d}")).collect();
    Err(Error::Refused(format!(
        "bcachefs filesystem {} (from {spec}) has {} member devices but {} missing: {}; found: {}; nothing was touched: attach the missing device and boot again (a degraded filesystem is never rolled back)",
        format_uuid(&s.uuid),
        want.len(),
        if missing.len() == 1 { "this one is".to_string() } else { format!("{} are", missing.len()) },
        missing.join(", "),
        if seen.is_empty() { "none".to_string() } else { seen.join(", ") },
    )))
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
    // `/dev/vda:/dev/vdb` (the bcachefs mount syntax, which NixOS's `fileSystems.<x>.device`
    // and our dracut module use): every listed device must be a member of one filesystem. A path
    // that exists as given (by-path names hold colons) is one device.
    if spec.contains(':')
        && !spec.starts_with("UUID=")
        && !spec.starts_with("LABEL=")
        && !std::path::Path::new(spec).exists()
    {
        return resolve_list(spec);
    }
    resolve_one(spec)
}

/// A colon-separated list of member devices: resolved by its first member (which finds every
/// member by scanning and refuses a filesystem with one missing); each listed device must be one
/// of the members found, with the same filesystem UUID.
fn resolve_list(spec: &str) -> Result<(Vec<String>, Option<Super>)> {
    let shown = crate::escape::cut_str(spec);
    let parts: Vec<&str> = spec.split(':').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.starts_with("UUID=") || p.starts_with("LABEL="))
    {
        return Err(Error::Usage(format!(
            "--device {shown}: a list of member devices is device paths separated by `:`, without empty entries, UUID= or LABEL=; or name the filesystem once by UUID=<uuid>"
        )));
    }
    let (members, sup) = resolve_one(parts[0])?;
    let Some(sup) = sup else {
        return Err(Error::Usage(format!(
            "--device {shown}: {} holds no btrfs or bcachefs filesystem; check --device / `device =`",
            crate::escape::cut_str(parts[0])
        )));
    };
    let canon = |d: &str| std::fs::canonicalize(d).unwrap_or_else(|_| d.into());
    for p in &parts[1..] {
        let other = read_super(p).ok().flatten();
        let same = other.as_ref().is_some_and(|o| o.uuid == sup.uuid);
        if !same || !members.iter().any(|m| canon(m) == canon(p)) {
            return Err(Error::Usage(format!(
                "--device {shown}: {} is not a member of the filesystem on {} (UUID {}; members found: {}); list only that filesystem's devices, or name it by UUID={}",
                crate::escape::cut_str(p),
                crate::escape::cut_str(parts[0]),
                format_uuid(&sup.uuid),
                members.join(", "),
                format_uuid(&sup.uuid),
            )));
        }
    }
    Ok((members, Some(sup)))
}

fn resolve_one(spec: &str) -> Result<(Vec<String>, Option<Super>)> {
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
        let (devs, s) = pick(&shown, found.clone())?;
        check_members(&shown, &s, &found)?;
        return Ok((devs, Some(s)));
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
            check_members(&shown, &s, &members)?;
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
        assert_eq!((s.member, s.members.len()), (1, 0));
        // A members_v2 field (member_bytes 40) then a members_v1 field: v2 wins.
        a[0x7c..0x80].copy_from_slice(&((16 + 2 * 40 + 8 + 2 * 56) as u32 / 8).to_le_bytes());
        let f2 = BCH_SB_FIELDS;
        a[f2..f2 + 4].copy_from_slice(&(((16 + 2 * 40) / 8) as u32).to_le_bytes());
        a[f2 + 4..f2 + 8].copy_from_slice(&BCH_SB_FIELD_MEMBERS_V2.to_le_bytes());
        a[f2 + 8..f2 + 10].copy_from_slice(&40u16.to_le_bytes());
        a[f2 + 16] = 0xa0;
        a[f2 + 16 + 40] = 0xa1;
        let f1 = f2 + 16 + 2 * 40;
        a[f1..f1 + 4].copy_from_slice(&(((8 + 2 * 56) / 8) as u32).to_le_bytes());
        a[f1 + 4..f1 + 8].copy_from_slice(&BCH_SB_FIELD_MEMBERS_V1.to_le_bytes());
        a[f1 + 8] = 0xb0;
        a[f1 + 8 + 56] = 0xb1;
        let s = parse_super(&a, &[]).unwrap();
        assert_eq!((s.members[0][0], s.members[1][0]), (0xa0, 0xa1));
        // Only members_v1 (the v2 field's type changed to something else): v1 is used.
        a[f2 + 4] = 99;
        let s = parse_super(&a, &[]).unwrap();
        assert_eq!((s.members[0][0], s.members[1][0]), (0xb0, 0xb1));
        // A field running past the superblock's length is not read.
        a[f1..f1 + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(parse_super(&a, &[]).unwrap().members.is_empty());
        a[0x7c..0x80].copy_from_slice(&0u32.to_le_bytes());
        a[f1] = 0;
        // Old bcache magic counts only with a sane offset and device index.
        a[24..40].copy_from_slice(&BCACHE_MAGIC);
        assert!(parse_super(&a, &[]).is_some());
        a[104] = 9;
        assert!(parse_super(&a, &[]).is_none());
    }

    /// The first 80 KiB of a fixture image in tests/fixtures (see its README).
    fn fixture_head(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        assert!(path.exists(), "fixture {} missing", path.display());
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
        out.stdout
    }

    /// `read_super` on files: the one read of [4 KiB, 68 KiB) gives what parse_super gives on the
    /// same bytes; a file that ends before 68 KiB still identifies a bcachefs (its superblock is at
    /// 4 KiB) and never a btrfs (its superblock at 64 KiB is cut off).
    #[test]
    fn read_super_from_files() {
        let dir = std::env::temp_dir().join(format!("er-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let put = |name: &str, data: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            p.to_str().unwrap().to_string()
        };
        let img = fixture_head("bcachefs-2dev-b-512M.img.zst");
        let want = parse_super(&img[4096..65536], &img[65536..69632]).unwrap();
        assert_eq!(read_super(&put("bch", &img)).unwrap(), Some(want.clone()));
        let short = read_super(&put("bch-short", &img[..20000]))
            .unwrap()
            .unwrap();
        assert_eq!((short.uuid, short.member), (want.uuid, want.member));
        let mut b = vec![0u8; 69632];
        b[65536 + 0x40..65536 + 0x48].copy_from_slice(BTRFS_MAGIC);
        b[65536 + 0x20] = 0xcd;
        b[65536 + 0x88] = 1;
        let s = read_super(&put("btrfs", &b)).unwrap().unwrap();
        assert_eq!((s.fstype, s.uuid[0]), (FsType::Btrfs, 0xcd));
        assert_eq!(read_super(&put("btrfs-cut", &b[..69631])).unwrap(), None);
        assert_eq!(read_super(&put("empty", &[])).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn parse_uuid(s: &str) -> [u8; 16] {
        let h: Vec<u8> = s
            .bytes()
            .filter(|c| *c != b'-')
            .collect::<Vec<u8>>()
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        h.try_into().unwrap()
    }

    const M2_139: [&str; 2] = [
        "384a324d-bdd6-4ed0-8383-91c45adde7ef",
        "1aa048bf-9367-43f5-87aa-327b1bd9dc35",
    ];
    const M2_113: [&str; 2] = [
        "0eca0381-8321-4c4d-bcd6-8aa7f48dd3e7",
        "e9c5f0b9-03f1-422c-8125-b52bf18157c4",
    ];
    const M5: [&str; 5] = [
        "0cadc827-8f43-426b-91e0-0cd60143bd9b",
        "504aff19-f256-4dab-a44b-a7753849b357",
        "46f72f92-d973-4b1a-993a-441100efc897",
        "8e24a1a3-dbe7-47ea-88fa-f461b308264d",
        "34787694-fa0a-4334-8595-cd8537f60943",
    ];

    /// Every bcachefs fixture: metadata 1.13 (Linux 6.12) and 1.39 (bcachefs-tools v1.39.2, the
    /// out-of-tree module people run today): UUID, label, member index and count, version and the
    /// member device UUIDs (members_v1 + members_v2 in 1.13, members_v2 only in 1.39).
    #[test]
    fn real_bcachefs_fixture_superblocks() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, u32, u32, u16, &[&str])] = &[
            ("bcachefs-blank-512M.img.zst", "5f44da2f-ee43-42a6-ad75-39b104b50099", 0, 1, 1037, &["0c6a7127-cd65-40ac-8747-6c7b3c9811b2"]),
            ("bcachefs-2dev-a-512M.img.zst", "b46556d9-b41d-4f06-8f93-774e6f471f6f", 0, 2, 1037, &M2_113),
            ("bcachefs-2dev-b-512M.img.zst", "b46556d9-b41d-4f06-8f93-774e6f471f6f", 1, 2, 1037, &M2_113),
            ("bcachefs139-blank-512M.img.zst", "f2f438a5-0b34-4cc8-8ee0-5cad800eb7ca", 0, 1, 1063, &["f3b83d8f-6f59-425e-bc23-07b0b5f2b714"]),
            ("bcachefs139-2dev-a-512M.img.zst", "ae33e0f5-1d83-4b6f-84af-f70493bf93de", 0, 2, 1063, &M2_139),
            ("bcachefs139-2dev-b-512M.img.zst", "ae33e0f5-1d83-4b6f-84af-f70493bf93de", 1, 2, 1063, &M2_139),
            ("bcachefs-5dev-a-512M.img.zst", "4ddc73dd-cdb5-48a4-b9c5-c69841925c89", 0, 5, 1037, &M5),
            ("bcachefs-5dev-b-512M.img.zst", "4ddc73dd-cdb5-48a4-b9c5-c69841925c89", 1, 5, 1037, &M5),
            ("bcachefs-5dev-c-512M.img.zst", "4ddc73dd-cdb5-48a4-b9c5-c69841925c89", 2, 5, 1037, &M5),
            ("bcachefs-5dev-d-512M.img.zst", "4ddc73dd-cdb5-48a4-b9c5-c69841925c89", 3, 5, 1037, &M5),
            ("bcachefs-5dev-e-512M.img.zst", "4ddc73dd-cdb5-48a4-b9c5-c69841925c89", 4, 5, 1037, &M5),
        ];
        for (file, uuid, idx, nr, version, members) in cases {
            let img = fixture_head(file);
            let s = parse_super(&img[4096..65536], &img[65536..69632]).expect(file);
            assert_eq!(s.fstype, FsType::Bcachefs, "{file}");
            assert_eq!(format_uuid(&s.uuid), *uuid, "{file}");
            assert_eq!(s.label, "nixos", "{file}");
            assert_eq!(
                (s.member, s.nr_devices, s.version),
                (u64::from(*idx), *nr, *version),
                "{file}"
            );
            let got: Vec<String> = s.members.iter().map(format_uuid).collect();
            assert_eq!(got, *members, "{file}");
            // Only the first 4 KiB of the superblock (an older reader): the same identity.
            let short = parse_super(&img[4096..8192], &[]).expect(file);
            assert_eq!(
                (short.uuid, short.member, short.nr_devices),
                (s.uuid, s.member, s.nr_devices)
            );
        }
    }

    fn bch(uuid: &str, idx: u32, members: &[&str]) -> Super {
        Super {
            fstype: FsType::Bcachefs,
            uuid: parse_uuid(uuid),
            label: "nixos".into(),
            nr_devices: members.len() as u32,
            member: u64::from(idx),
            version: 1037,
            members: members.iter().map(|m| parse_uuid(m)).collect(),
        }
    }

    /// A multi-device filesystem with a member missing is refused in one line naming the member
    /// (index and device UUID); a whole one, a single-device one and btrfs pass.
    #[test]
    fn missing_member_is_refused_by_name() {
        let fs = "4ddc73dd-cdb5-48a4-b9c5-c69841925c89";
        let dev = |i: u32| {
            (
                format!("/dev/vd{}", (b'a' + i as u8) as char),
                bch(fs, i, &M5),
            )
        };
        let all: Vec<(String, Super)> = (0..5).map(dev).collect();
        let sup = bch(fs, 0, &M5);
        assert!(check_members("/dev/vda", &sup, &all).is_ok());
        // member 2 (file c) missing
        let four: Vec<(String, Super)> = [0, 1, 3, 4].into_iter().map(dev).collect();
        let e = check_members("/dev/vda", &sup, &four)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains("member 2 (device UUID 46f72f92-d973-4b1a-993a-441100efc897)"),
            "{e}"
        );
        assert!(
            e.contains("has 5 member devices")
                && e.contains(fs)
                && e.contains("nothing was touched"),
            "{e}"
        );
        assert!(!e.contains("member 3 ("), "{e}");
        assert!(matches!(
            check_members("/dev/vda", &sup, &four),
            Err(Error::Refused(_))
        ));
        // two missing; a device of another filesystem with the right index does not count
        let mut other = dev(4);
        other.1.uuid = parse_uuid("b46556d9-b41d-4f06-8f93-774e6f471f6f");
        let e = check_members("UUID=x", &sup, &[dev(0), dev(1), dev(2), other])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 are missing") && e.contains("member 3 (") && e.contains("member 4 ("),
            "{e}"
        );
        // the same member twice (two paths) is still one member
        let e = check_members("/dev/vda", &sup, &[dev(0), dev(0), dev(1), dev(2), dev(3)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("member 4 (device UUID 34787694"), "{e}");
        // a removed device (zero UUID in its slot) is not expected
        let mut holes = bch(fs, 0, &M5);
        holes.members[2] = [0u8; 16];
        assert!(check_members("/dev/vda", &holes, &four).is_ok());
        // no members field readable: every index below nr_devices is expected
        let mut bare = bch(fs, 0, &M5);
        bare.members.clear();
        let e = check_members("/dev/vda", &bare, &four)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: member 2;"), "{e}");
        // single device and btrfs: nothing to check
        let one = bch(
            "5f44da2f-ee43-42a6-ad75-39b104b50099",
            0,
            &["0c6a7127-cd65-40ac-8747-6c7b3c9811b2"],
        );
        assert!(check_members("/dev/vda", &one, &[]).is_ok());
        let mut b = bch(fs, 0, &M5);
        b.fstype = FsType::Btrfs;
        assert!(check_members("/dev/vda", &b, &[]).is_ok());
    }

    /// The real five-device fixture: members found from their own superblocks, one left out.
    #[test]
    fn missing_member_of_the_five_device_fixture() {
        let found: Vec<(String, Super)> = "abcde"
            .chars()
            .map(|c| {
                let f = format!("bcachefs-5dev-{c}-512M.img.zst");
                let img = fixture_head(&f);
                (f, parse_super(&img[4096..65536], &[]).unwrap())
            })
            .collect();
        let sup = found[0].1.clone();
        assert!(check_members("a", &sup, &found).is_ok());
        let without_d: Vec<(String, Super)> = found
            .iter()
            .filter(|(f, _)| !f.contains("-d-"))
            .cloned()
            .collect();
        let e = check_members("a", &sup, &without_d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("member 3 (device UUID 8e24a1a3-dbe7-47ea-88fa-f461b308264d)"),
            "{e}"
        );
    }

    #[test]
    fn ambiguous_matches_name_every_device() {
        let sup = |uuid: u8, member: u64, nr: u32| Super {
            fstype: FsType::Btrfs,
            uuid: [uuid; 16],
            label: "nixos".into(),
            nr_devices: nr,
            member,
            version: 0,
            members: Vec::new(),
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
