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
