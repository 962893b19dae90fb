//! The wall clock, read once per command (the plan carries it; backends are given it).
//!
//! Fault-injection builds read `EPHEMERAL_ROOT_CLOCK_OFFSET=<seconds>` and add it, so tests can
//! make a clock read land in another second than the filesystem's own timestamps (issue 16: a
//! second clock read once decided an old root's name).

pub fn now() -> i64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    t + offset()
}

#[cfg(feature = "fault-injection")]
fn offset() -> i64 {
    std::env::var("EPHEMERAL_ROOT_CLOCK_OFFSET")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
}

#[cfg(not(feature = "fault-injection"))]
fn offset() -> i64 {
    0
}

/// The wall clock and the boot clock read together, and this boot's id. Their difference changes
/// only when the wall clock is stepped or slewed (`CLOCK_BOOTTIME` also counts time suspended), so
/// two readings in one boot tell whether file times taken between them can be compared with the
/// first one (`diff` against the baseline, see src/diff/mod.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub real_ns: i128,
    pub boot_ns: i128,
    pub boot_id: String,
}

fn ns(t: rustix::time::Timespec) -> i128 {
    t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), hex digits only; empty if unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect()
}

pub fn reading() -> Reading {
    use rustix::time::{clock_gettime, ClockId};
    Reading {
        real_ns: ns(clock_gettime(ClockId::Realtime)),
        boot_ns: ns(clock_gettime(ClockId::Boottime)),
        boot_id: boot_id(),
    }
}
