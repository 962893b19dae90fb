//! Comparing trees in tests: every entry's kind, mode, owner, size, times (ns), link count, link
//! text, content and extended attributes (`tests/restore.rs`, `tests/persist.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap();
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut v = vec![0u8; 65536];
        let l = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(l);
        out.push((name, v));
    }
    out.sort();
    out
}

/// Everything compared: type+mode, owner, size, mtime/atime (ns), nlink, link text, content, xattrs.
pub fn fingerprint(root: &Path) -> Vec<String> {
    fingerprint_with(root, true)
}

/// [`fingerprint`], with or without access times (a live tree's change when it is read).
pub fn fingerprint_with(root: &Path, atime: bool) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        // Contents are read after every stat (reading moves atimes of the destination).
        let content = if m.is_file() {
            format!("content:{}", p.display())
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        v.push(format!(
            "{rel} mode={:o} uid={} gid={} size={} mtime={}.{} atime={}.{} nlink={} {content} {:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec(),
            if m.is_dir() || !atime { 0 } else { m.atime() },
            if m.is_dir() || !atime {
                0
            } else {
                m.atime_nsec()
            },
            if m.is_dir() { 0 } else { m.nlink() },
            xattrs(&p)
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    v.sort();
    v.into_iter()
        .map(|line| match line.split_once("content:") {
            Some((head, rest)) => {
                let (path, tail) = rest.split_once(' ').unwrap();
                format!("{head}{:x} {tail}", md5ish(&std::fs::read(path).unwrap()))
            }
            None => line,
        })
        .collect()
}

pub fn md5ish(b: &[u8]) -> u64 {
    // FNV-1a: enough to tell contents apart in a test.
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

/// A POSIX ACL (system.posix_acl_access, version 2): user::rw- user:1000:r-- group::r-- mask::r-- other::---
pub fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}
