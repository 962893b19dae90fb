//! The progress counter `diff` shows while walking.

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
    /// Set the count (several walkers counting together) and show it as [`Progress::tick`] does.
    pub fn set(&mut self, count: u64) {
        self.count = count.saturating_sub(1);
        self.tick();
    }
    pub fn done(&mut self) {
        if self.enabled && self.count >= 1024 {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
