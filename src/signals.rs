//! SIGINT, SIGTERM and SIGHUP for `restore`: a handler that only records the signal, so the copy
//! can stop between entries, remove its partial copy, and then die of the same signal (the
//! caller sees the usual status). `libc`'s `sigaction`: rustix has no stable signal API, and
//! nix's wrapper of the same call added 20 KB to the binary.

use std::sync::atomic::{AtomicI32, Ordering};

static CAUGHT: AtomicI32 = AtomicI32::new(0);
const SIGNALS: [(libc::c_int, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

extern "C" fn on_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

#[allow(unsafe_code)]
fn set(sig: libc::c_int, handler: libc::sighandler_t) -> bool {
    // SAFETY: `sigaction` is given a zeroed (valid) struct with an empty mask, and a handler
    // that is either the default disposition or `on_signal`, which only stores into an atomic
    // integer (async-signal-safe). This program starts no threads.
    unsafe {
        let mut a: libc::sigaction = std::mem::zeroed();
        a.sa_sigaction = handler;
        a.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut a.sa_mask);
        libc::sigaction(sig, &a, std::ptr::null_mut()) == 0
    }
}

/// From now on these signals only set a flag, which the copy checks between entries and
/// between chunks of data.
pub fn install() {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for (s, name) in SIGNALS {
        if !set(s, h) {
            log::warn!("cannot catch {name}; an interrupted restore may leave its partial copy for the next run to remove");
        }
    }
}

/// For commands that only read and print (`diff`, `list`, `status`, …): a closed pipe on stdout
/// (`diff --json | head`) ends the process quietly, as for other Unix tools, instead of a panic
/// from `println!` (Rust ignores SIGPIPE by default). Never for commands that write to disk:
/// those must reach their own cleanup.
pub fn default_sigpipe() {
    if !set(libc::SIGPIPE, libc::SIG_DFL) {
        log::debug!("cannot restore the default SIGPIPE disposition");
    }
}

/// The signal caught, if any.
pub fn caught() -> Option<Signal> {
    let s = CAUGHT.load(Ordering::SeqCst);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == s)
        .map(|&(n, name)| Signal(n, name))
}

#[derive(Debug, Clone, Copy)]
pub struct Signal(libc::c_int, &'static str);

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.1)
    }
}

/// Die of the caught signal (after the cleanup), so the caller sees the usual status.
#[allow(unsafe_code)]
pub fn reraise(s: Signal) {
    if set(s.0, libc::SIG_DFL) {
        // SAFETY: raising a signal whose disposition is now the default; no memory involved.
        unsafe {
            libc::raise(s.0);
        }
    }
}
