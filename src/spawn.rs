//! Running one program and reading its output (`lost` reads `journalctl`): libc's
//! `posix_spawnp` with the child's stdout and stderr on pipes and stdin on /dev/null. std's
//! `Command` did the same and added 57 KB to the static binary (its environment handling, the
//! fork/exec fallback and the error pipe); this is the one call, about 2 KB.

use rustix::fd::{FromRawFd, OwnedFd};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;

extern "C" {
    static environ: *const *mut libc::c_char;
}

/// A child started by [`spawn`]: its process id, and the read ends of its stdout and stderr.
pub struct Child {
    pid: rustix::process::Pid,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
}

impl Child {
    /// Wait for it; its exit code (`128 + N` when killed by signal N).
    pub fn wait(self) -> io::Result<i32> {
        drop((self.stdout, self.stderr));
        let (_, st) =
            rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty())?
                .ok_or_else(|| io::Error::other("waitpid returned nothing"))?;
        Ok(st
            .exit_status()
            .or_else(|| st.terminating_signal().map(|s| 128 + s))
            .unwrap_or(-1))
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    #[allow(unsafe_code)]
    // SAFETY: `pipe2` writes two descriptors into the two-element array it is given; on success
    // both are open and owned by nobody else, so each goes into exactly one OwnedFd.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Start `argv[0]` (looked up in `PATH`) with `argv`, this process's environment, stdin on
/// /dev/null and stdout and stderr on pipes.
pub fn spawn(argv: &[&OsStr]) -> io::Result<Child> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        })
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr() as *mut _).collect();
    ptrs.push(std::ptr::null_mut());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    use rustix::fd::AsRawFd;
    let mut pid: libc::pid_t = 0;
    #[allow(unsafe_code)]
    // SAFETY: the file actions are initialised before use and destroyed after; every pointer
    // handed to posix_spawnp (program name, argv, environ) points to NUL-terminated strings in a
    // NULL-terminated array that outlives the call (`args`, `ptrs`, the process environment); the
    // descriptors dup'ed are open (owned by `out_w`/`err_w` until after the call). The child gets
    // copies; ours are close-on-exec, so it inherits only 0, 1 and 2.
    let rc = unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawn_file_actions_addopen(
            &mut fa,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        );
        libc::posix_spawn_file_actions_adddup2(&mut fa, out_w.as_raw_fd(), 1);
        libc::posix_spawn_file_actions_adddup2(&mut fa, err_w.as_raw_fd(), 2);
        let rc = libc::posix_spawnp(
            &mut pid,
            args[0].as_ptr(),
            &fa,
            std::ptr::null(),
            ptrs.as_ptr(),
            environ,
        );
        libc::posix_spawn_file_actions_destroy(&mut fa);
        rc
    };
    drop((out_w, err_w));
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::other("no pid"))?;
    Ok(Child {
        pid,
        stdout: out_r.into(),
        stderr: err_r.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn runs_and_reports() {
        let a = |s: &str| OsStr::new(s).to_owned();
        let args = [a("sh"), a("-c"), a("printf 'a\\nb'; echo oops >&2; exit 3")];
        let argv: Vec<&OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        let mut c = spawn(&argv).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        c.stdout.read_to_string(&mut out).unwrap();
        c.stderr.read_to_string(&mut err).unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("a\nb", "oops\n"));
        assert_eq!(c.wait().unwrap(), 3);
        let args = [a("sh"), a("-c"), a("kill -TERM $$")];
        let argv: Vec<&OsStr> = args.iter().map(|x| x.as_os_str()).collect();
        assert_eq!(spawn(&argv).unwrap().wait().unwrap(), 128 + 15);
        let e = spawn(&[OsStr::new("/nonexistent/journalctl")])
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(spawn(&[OsStr::new("a\0b")]).is_err());
    }
}
