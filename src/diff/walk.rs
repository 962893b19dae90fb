//! The progress counter `diff` shows while walking, and what `src/restore.rs` still uses from the
//! walker that came before `crate::walk` (until restore moves onto it).

use rustix::fd::{AsFd, OwnedFd};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A one-line counter on stderr, only when stderr is a terminal.
pub struct Progress {
    enabled: bool,
    what: String,
    count: u64,
    last: Instant,
}

impl Progress {
    pub fn new(what: &str) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            what: what.to_string(),
            count: 0,
            last: Instant::now(),
        }
    }
    pub fn tick(&mut self) {
        self.count += 1;
        if self.enabled
            && self.count % 1024 == 0
            && self.last.elapsed() > Duration::from_millis(200)
        {
            self.last = Instant::now();
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[K{}: {} entries",
                self.what,
                self.count
            );
        }
    }
    pub fn done(&mut self) {
        if self.enabled && self.count >= 1024 {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// Open directory `name` in `dirfd` (one component; no symlinks, no mounts).
pub fn open_dir(dirfd: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    crate::walk::open_dir(dirfd, name.as_bytes())
}

/// Names in a directory (without `.` and `..`) for `src/restore.rs`, which still handles names as
/// `String`: a name that is not UTF-8 is an error (`EILSEQ`), never converted lossily.
pub fn read_names(fd: &OwnedFd) -> rustix::io::Result<Vec<String>> {
    crate::walk::read_names(fd)?
        .into_iter()
        .map(|n| String::from_utf8(n).map_err(|_| rustix::io::Errno::ILSEQ))
        .collect()
}
