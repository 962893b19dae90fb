// Test-only helper for the bcachefs VM tests: create a bcachefs subvolume (the guest has no
// bcachefs-tools). Usage: bch-subvol create PATH...   (the parent directory must exist)
// Built with: rustc -O --target x86_64-unknown-linux-musl bch-subvol.rs (static, no crates).
// ioctl: BCH_IOCTL_SUBVOLUME_CREATE = _IOW(0xbc, 16, struct bch_ioctl_subvolume) = 0x4020bc10
// (see docs/kernel-interfaces.md#bcachefs-numbers).
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_ulong};

#[repr(C)]
struct BchIoctlSubvolume {
    flags: u32,
    dirfd: u32,
    mode: u16,
    pad: [u16; 3],
    dst_ptr: u64,
    src_ptr: u64,
}

extern "C" {
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn ioctl(fd: c_int, req: c_int, ...) -> c_int;
}

const O_RDONLY: c_int = 0;
const O_DIRECTORY: c_int = 0o200000;
const AT_FDCWD: i32 = -100;
const BCH_IOCTL_SUBVOLUME_CREATE: c_ulong = 0x4020bc10;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args[1] != "create" {
        eprintln!("usage: bch-subvol create PATH...");
        std::process::exit(2);
    }
    let mut rc = 0;
    for p in &args[2..] {
        let parent = match std::path::Path::new(p).parent() {
            Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let cparent = CString::new(parent.to_str().unwrap()).unwrap();
        let cdst = CString::new(p.as_str()).unwrap();
        let fd = unsafe { open(cparent.as_ptr(), O_RDONLY | O_DIRECTORY) };
        if fd < 0 {
            eprintln!("bch-subvol: open {}: {}", parent.display(), std::io::Error::last_os_error());
            rc = 1;
            continue;
        }
        let arg = BchIoctlSubvolume {
            flags: 0,
            dirfd: AT_FDCWD as u32,
            mode: 0o755,
            pad: [0; 3],
            dst_ptr: cdst.as_ptr() as u64,
            src_ptr: 0,
        };
        let r = unsafe { ioctl(fd, BCH_IOCTL_SUBVOLUME_CREATE as c_int, &arg as *const BchIoctlSubvolume) };
        if r < 0 {
            eprintln!("bch-subvol: create {}: {}", p, std::io::Error::last_os_error());
            rc = 1;
        } else {
            println!("bch-subvol: created subvolume {}", p);
        }
    }
    std::process::exit(rc);
}
