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

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

extern "C" {
    fn ioctl(fd: c_int, req: c_int, ...) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
    fn open(p: *const c_char, flags: c_int, ...) -> c_int;
    fn __errno_location() -> *mut c_int;
    fn close(fd: c_int) -> c_int;
    fn syncfs(fd: c_int) -> c_int;
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
        _ => die("usage: see the source".into()),
    }
    let _: c_ulong = 0;
}
