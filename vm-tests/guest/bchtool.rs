//! bchtool: a tiny static test helper for the bcachefs VM tests (NOT part of ephemeral-root).
//! It creates the subvolumes a test needs and reports what the kernel says, so the test script can
//! set up `@root` with nested subvolumes and check the results (busybox knows nothing of bcachefs,
//! and Debian no longer ships bcachefs-tools). Built with plain rustc for x86_64-unknown-linux-musl.
//!
//!   bchtool create PATH...         new empty subvolume(s)
//!   bchtool snap [-r] SRC DST      snapshot (read-only with -r)
//!   bchtool destroy PATH           destroy a subvolume (one attempt, prints errno on failure)
//!   bchtool subvol PATH            print stx_subvol
//!   bchtool stat PATH              print "ino subvol btime ctime mtime mask"
//!   bchtool subvols DIR            every subvolume root below DIR (relative paths)
//!   bchtool isro DIR               exit 0 if an O_TMPFILE in DIR fails with EROFS, 1 if it works
//!   bchtool rmtree-timing PARENT CHILD   destroy CHILD then retry PARENT until it works; print ms
//! and, on any filesystem (the ZFS guest has it too; busybox has no xattr or FIEMAP tool):
//!   bchtool setxattr PATH NAME VALUE     set an extended attribute (not following a symlink)
//!   bchtool tree DIR               one line per entry below DIR (sorted): path, type, mode, owner,
//!                                  size, mtime (ns), hard-link group, content hash (FNV-1a 64),
//!                                  symlink target, every xattr with its value (hex)
//!   bchtool shared FILE            "extents=N shared=M" from FIEMAP (M: FIEMAP_EXTENT_SHARED)

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

extern "C" {
    fn ioctl(fd: c_int, req: c_int, ...) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
    fn open(p: *const c_char, flags: c_int, ...) -> c_int;
    fn __errno_location() -> *mut c_int;
    fn close(fd: c_int) -> c_int;
    fn syncfs(fd: c_int) -> c_int;
    fn lsetxattr(p: *const c_char, n: *const c_char, v: *const c_void, len: usize, flags: c_int) -> c_int;
    fn llistxattr(p: *const c_char, list: *mut c_char, len: usize) -> isize;
    fn lgetxattr(p: *const c_char, n: *const c_char, v: *mut c_void, len: usize) -> isize;
}

/// Every xattr of `p` (not following a symlink): "name=hexvalue,..." sorted.
fn xattrs(p: &str) -> String {
    let c = CString::new(p).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = unsafe { llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if n < 0 {
        return format!("error{}", errno());
    }
    let mut names: Vec<&[u8]> = buf[..n as usize].split(|b| *b == 0).filter(|x| !x.is_empty()).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let m = unsafe { lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut c_void, v.len()) };
        let val = if m < 0 { format!("error{}", errno()) } else { v[..m as usize].iter().map(|b| format!("{b:02x}")).collect() };
        out.push(format!("{}={val}", String::from_utf8_lossy(name)));
    }
    out.join(",")
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn tree(base: &str) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![String::new()];
    let mut lines = Vec::new();
    let mut links: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
    let mut entries = Vec::new();
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() { base.to_string() } else { format!("{base}/{rel}") };
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| die(format!("lstat {p}: {e}")));
        if m.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&p).unwrap_or_else(|e| die(format!("read {p}: {e}")))
                .filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(if rel.is_empty() { n } else { format!("{rel}/{n}") });
            }
        }
        entries.push((rel, p, m));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, p, m) in entries {
        let ft = m.file_type();
        let (kind, content, link) = if ft.is_dir() {
            ("dir", String::new(), String::new())
        } else if ft.is_symlink() {
            ("symlink", String::new(), std::fs::read_link(&p).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default())
        } else if ft.is_file() {
            ("file", format!("{:016x}", fnv(&std::fs::read(&p).unwrap_or_else(|e| die(format!("read {p}: {e}"))))), String::new())
        } else {
            ("other", String::new(), String::new())
        };
        let group = if !ft.is_dir() && m.nlink() > 1 {
            links.entry(m.ino()).or_insert_with(|| rel.clone()).clone()
        } else {
            String::new()
        };
        lines.push(format!("/{rel} {kind} mode={:o} owner={}:{} size={} mtime={}.{:09} nlink={} link-group={group} content={content} target={link} xattrs={}",
            m.mode(), m.uid(), m.gid(), if ft.is_dir() { 0 } else { m.size() }, m.mtime(), m.mtime_nsec(),
            if ft.is_dir() { 0 } else { m.nlink() }, xattrs(&p)));
    }
    for l in lines { println!("{l}") }
}

/// (extents, shared extents) of a file from FS_IOC_FIEMAP.
fn fiemap(p: &str) -> Result<(u32, u32), i32> {
    const N: usize = 256;
    #[repr(C)]
    struct Extent { logical: u64, physical: u64, length: u64, r64: [u64; 2], flags: u32, r32: [u32; 3] }
    #[repr(C)]
    struct Fiemap { start: u64, length: u64, flags: u32, mapped: u32, count: u32, reserved: u32, ext: [Extent; N] }
    let c = CString::new(p).unwrap();
    let fd = unsafe { open(c.as_ptr(), 0) };
    if fd < 0 { return Err(errno()) }
    let (mut total, mut shared, mut start) = (0u32, 0u32, 0u64);
    loop {
        let mut f: Fiemap = unsafe { std::mem::zeroed() };
        f.start = start;
        f.length = u64::MAX - start;
        f.flags = 1; // FIEMAP_FLAG_SYNC
        f.count = N as u32;
        // FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap)
        let r = unsafe { ioctl(fd, 0xC020660Bu32 as c_int, &mut f as *mut Fiemap as *mut c_void) };
        if r < 0 { let e = errno(); unsafe { close(fd) }; return Err(e) }
        if f.mapped == 0 { break }
        let mut last = false;
        for e in &f.ext[..f.mapped as usize] {
            total += 1;
            if e.flags & 0x2000 != 0 { shared += 1 }
            if e.flags & 1 != 0 { last = true }
            start = e.logical + e.length;
        }
        if last { break }
    }
    unsafe { close(fd) };
    Ok((total, shared))
}

#[repr(C)]
struct Subvol {
    flags: u32,
    dirfd: u32,
    mode: u16,
    pad: [u16; 3],
    dst: u64,
    src: u64,
}

const CREATE: c_int = 0x4020bc10u32 as c_int;
const DESTROY: c_int = 0x4020bc11u32 as c_int;
const AT_FDCWD: i32 = -100;

fn errno() -> i32 {
    unsafe { *__errno_location() }
}

fn sv(flags: u32, dst: &CString, src: Option<&CString>) -> i32 {
    let a = Subvol {
        flags,
        dirfd: AT_FDCWD as u32,
        mode: 0o755,
        pad: [0; 3],
        dst: dst.as_ptr() as u64,
        src: src.map(|s| s.as_ptr() as u64).unwrap_or(0),
    };
    // the ioctl goes to the parent directory of dst (an fd on the filesystem)
    let parent = {
        let s = dst.to_str().unwrap();
        let p = match s.rfind('/') { Some(0) => "/", Some(i) => &s[..i], None => "." };
        CString::new(p).unwrap()
    };
    let pfd = unsafe { open(parent.as_ptr(), 0o200000) };
    if pfd < 0 {
        return errno();
    }
    let req = if flags == u32::MAX { DESTROY } else { CREATE };
    let mut a = a;
    if flags == u32::MAX {
        a.flags = 0;
    }
    let r = unsafe { ioctl(pfd, req, &a as *const Subvol as *const c_void) };
    let e = if r < 0 { errno() } else { 0 };
    if std::env::var("BCHTOOL_SYNCFS").is_ok() { unsafe { syncfs(pfd) }; }
    unsafe { close(pfd) };
    e
}

#[repr(C)]
struct Ts { sec: i64, nsec: u32, _r: i32 }
#[repr(C)]
struct Statx {
    mask: u32, blksize: u32, attributes: u64, nlink: u32, uid: u32, gid: u32, mode: u16, _s0: u16,
    ino: u64, size: u64, blocks: u64, attributes_mask: u64,
    atime: Ts, btime: Ts, ctime: Ts, mtime: Ts,
    rdev_major: u32, rdev_minor: u32, dev_major: u32, dev_minor: u32,
    mnt_id: u64, dio_mem_align: u32, dio_offset_align: u32, subvol: u64,
    spare: [u64; 11],
}

fn statx(p: &str) -> Result<Statx, i32> {
    let c = CString::new(p).unwrap();
    let mut st: Statx = unsafe { std::mem::zeroed() };
    // SYS_statx = 332 on x86_64; AT_SYMLINK_NOFOLLOW = 0x100; mask: basic | btime | subvol
    let r = unsafe { syscall(332, AT_FDCWD as c_long, c.as_ptr(), 0x100 as c_long, (0x7ff | 0x800 | 0x8000) as c_uint as c_long, &mut st as *mut Statx) };
    if r < 0 { Err(errno()) } else { Ok(st) }
}

fn die(msg: String) -> ! {
    eprintln!("bchtool: {msg}");
    std::process::exit(1)
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let s = |i: usize| a.get(i).cloned().unwrap_or_else(|| die("missing argument".into()));
    match a.first().map(|x| x.as_str()) {
        Some("create") => {
            for p in a.iter().skip(1) {
                let e = sv(0, &CString::new(p.as_str()).unwrap(), None);
                if e != 0 { die(format!("create {p}: errno {e}")) }
            }
        }
        Some("snap") => {
            let (ro, i) = if s(1) == "-r" { (true, 2) } else { (false, 1) };
            let src = CString::new(s(i)).unwrap();
            let dst = CString::new(s(i + 1)).unwrap();
            let e = sv(1 | if ro { 2 } else { 0 }, &dst, Some(&src));
            if e != 0 { die(format!("snap {} {}: errno {e}", s(i), s(i + 1))) }
        }
        Some("destroy") => {
            let e = sv(u32::MAX, &CString::new(s(1)).unwrap(), None);
            if e != 0 { die(format!("destroy {}: errno {e}", s(1))) }
        }
        Some("subvol") => match statx(&s(1)) {
            Ok(st) => println!("{}", st.subvol),
            Err(e) => die(format!("statx {}: errno {e}", s(1))),
        },
        Some("stat") => match statx(&s(1)) {
            Ok(st) => println!("ino={} subvol={} btime={}.{} ctime={}.{} mtime={}.{} mask={:#x} mode={:o}",
                st.ino, st.subvol, st.btime.sec, st.btime.nsec, st.ctime.sec, st.ctime.nsec, st.mtime.sec, st.mtime.nsec, st.mask, st.mode),
            Err(e) => die(format!("statx {}: errno {e}", s(1))),
        },
        Some("isro") => {
            let c = CString::new(s(1)).unwrap();
            // O_TMPFILE | O_WRONLY = 0o20200000 | 1
            let fd = unsafe { open(c.as_ptr(), 0o20200000 | 1, 0o600 as c_uint) };
            if fd >= 0 { std::process::exit(1) }
            let e = errno();
            if e == 30 { std::process::exit(0) }
            die(format!("O_TMPFILE in {}: errno {e}", s(1)))
        }
        Some("rmtree-timing") => {
            let child = CString::new(s(2)).unwrap();
            let parent = CString::new(s(1)).unwrap();
            let e = sv(u32::MAX, &child, None);
            if e != 0 { die(format!("destroy {}: errno {e}", s(2))) }
            let t = std::time::Instant::now();
            let mut tries = 0;
            loop {
                tries += 1;
                let e = sv(u32::MAX, &parent, None);
                if e == 0 { break }
                if e != 39 || t.elapsed().as_secs() > 60 { die(format!("destroy {}: errno {e} after {tries} tries", s(1))) }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            println!("enotempty_window_ms={} tries={}", t.elapsed().as_millis(), tries);
        }
        Some("rmrf") => {
            // Destroy every subvolume below DIR (deepest first, retrying ENOTEMPTY), then DIR.
            let base = s(1);
            let out = std::process::Command::new("/proc/self/exe").args(["subvols", &base]).output().unwrap();
            let mut subs: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            subs.sort();
            for sub in subs.iter().rev() {
                let c = CString::new(format!("{base}/{sub}")).unwrap();
                let t = std::time::Instant::now();
                loop {
                    let e = sv(u32::MAX, &c, None);
                    if e == 0 || e == 2 { break }
                    if e != 39 || t.elapsed().as_secs() > 30 { die(format!("destroy {base}/{sub}: errno {e}")) }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let _ = std::fs::remove_dir_all(&base);
        }
        Some("subvols") => {
            // Every subvolume root below DIR (relative paths, parents first), by stx_subvol.
            let base = s(1);
            let top = statx(&base).unwrap_or_else(|e| die(format!("statx {base}: errno {e}")));
            let mut stack = vec![(String::new(), top.subvol)];
            let mut out = Vec::new();
            while let Some((rel, sub)) = stack.pop() {
                let dir = if rel.is_empty() { base.clone() } else { format!("{base}/{rel}") };
                let mut names: Vec<String> = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
                    Err(e) => die(format!("read {dir}: {e}")),
                };
                names.sort();
                for n in names.into_iter().rev() {
                    let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
                    let st = match statx(&format!("{base}/{r}")) { Ok(s) => s, Err(_) => continue };
                    if st.mode & 0o170000 != 0o040000 { continue }
                    if st.subvol != sub { out.push(r.clone()); }
                    stack.push((r, st.subvol));
                }
            }
            for o in out { println!("{o}") }
        }
        Some("setxattr") => {
            let (p, n) = (CString::new(s(1)).unwrap(), CString::new(s(2)).unwrap());
            let v = s(3);
            if unsafe { lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr() as *const c_void, v.len(), 0) } < 0 {
                die(format!("setxattr {} {}: errno {}", s(1), s(2), errno()))
            }
        }
        Some("tree") => tree(&s(1)),
        Some("shared") => match fiemap(&s(1)) {
            Ok((t, sh)) => println!("extents={t} shared={sh}"),
            Err(e) => die(format!("fiemap {}: errno {e}", s(1))),
        },
        _ => die("usage: see the source".into()),
    }
    let _: c_ulong = 0;
}
