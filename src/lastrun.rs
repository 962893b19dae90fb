//! The record the last `rollback` leaves in `/run/ephemeral-root/last-rollback.json` (kept across
//! switch-root: systemd carries /run over), written and read here only.

use crate::json;

/// Where the record lives (`EPHEMERAL_ROOT_STATE_DIR` overrides it, for tests).
pub fn state_dir() -> String {
    std::env::var("EPHEMERAL_ROOT_STATE_DIR").unwrap_or_else(|_| crate::mounts::RUN_DIR.to_string())
}

/// `finish` takes the baseline once per boot: this file in /run (gone at the next boot) says it
/// did.
fn baseline_marker() -> String {
    format!("{}/baseline-taken", state_dir())
}

pub fn baseline_taken_this_boot() -> bool {
    std::path::Path::new(&baseline_marker()).exists()
}

/// Remember that the baseline was taken, and the clocks read just before it was begun (`at`):
/// `diff` trusts a change time earlier than that only while the record is of this boot and the
/// wall clock was not stepped since (src/diff/baseline.rs, `trusted_before`).
pub fn mark_baseline_taken(at: &crate::clock::Reading) {
    let res = std::fs::create_dir_all(state_dir())
        .and_then(|_| std::fs::write(baseline_marker(), baseline_record(at)));
    if let Err(e) = res {
        log::warn!("could not write {}: {e}", baseline_marker());
    }
}

fn baseline_record(at: &crate::clock::Reading) -> String {
    format!(
        "taken realtime-ns={} boottime-ns={} boot-id={}\n",
        at.real_ns, at.boot_ns, at.boot_id
    )
}

/// The clocks recorded by [`mark_baseline_taken`] (`None`: no record, or one this version cannot
/// read, e.g. an older one without clocks).
#[cfg(feature = "tools")]
pub fn baseline_clock() -> Option<crate::clock::Reading> {
    parse_baseline_record(&std::fs::read_to_string(baseline_marker()).ok()?)
}

#[cfg(any(feature = "tools", test))]
fn parse_baseline_record(text: &str) -> Option<crate::clock::Reading> {
    let mut words = text.split_whitespace();
    if words.next()? != "taken" {
        return None;
    }
    let (mut real, mut boot, mut id) = (None, None, None);
    for w in words {
        match w.split_once('=')? {
            ("realtime-ns", v) => real = v.parse().ok(),
            ("boottime-ns", v) => boot = v.parse().ok(),
            ("boot-id", v) => id = Some(v.to_string()),
            _ => {}
        }
    }
    Some(crate::clock::Reading {
        real_ns: real?,
        boot_ns: boot?,
        boot_id: id.filter(|i| !i.is_empty())?,
    })
}

pub fn path() -> String {
    format!("{}/last-rollback.json", state_dir())
}

/// The last rollback record (`last-rollback.json`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastRollback {
    pub result: String,
    pub mode: String,
    pub time: String,
    pub duration_ms: Option<u64>,
    pub kept: Option<String>,
    pub error: Option<String>,
    /// Work a `finish` that never ran left behind, which this rollback could not do (the boot
    /// went on): the error.
    pub backlog_error: Option<String>,
}

#[cfg(feature = "tools")]
/// Parse the flat JSON object [`render`] writes (string, number and null values).
pub fn parse(text: &str) -> Option<LastRollback> {
    let mut r = LastRollback::default();
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut chars = body.chars().peekable();
    let read_string = |chars: &mut std::iter::Peekable<std::str::Chars>| -> Option<String> {
        let mut s = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(s),
                '\\' => match chars.next()? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'u' => {
                        let h: String = (0..4).filter_map(|_| chars.next()).collect();
                        s.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    c => s.push(c),
                },
                c => s.push(c),
            }
        }
    };
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('"') => {}
            Some(_) => return None,
        }
        let key = read_string(&mut chars)?;
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ':') {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            Some(read_string(&mut chars)?)
        } else {
            let mut raw = String::new();
            while chars.peek().is_some_and(|c| *c != ',') {
                raw.push(chars.next()?);
            }
            let raw = raw.trim().to_string();
            (raw != "null").then_some(raw)
        };
        match key.as_str() {
            "result" => r.result = value.unwrap_or_default(),
            "mode" => r.mode = value.unwrap_or_default(),
            "time" => r.time = value.unwrap_or_default(),
            "duration_ms" => r.duration_ms = value.and_then(|v| v.parse().ok()),
            "kept" => r.kept = value,
            "error" => r.error = value,
            "backlog_error" => r.backlog_error = value,
            _ => {}
        }
    }
    Some(r)
}

pub fn render(r: &LastRollback) -> String {
    json::object(&[
        ("result", json::string(&r.result)),
        ("mode", json::string(&r.mode)),
        ("time", json::string(&r.time)),
        (
            "duration_ms",
            r.duration_ms
                .map(|d| d.to_string())
                .unwrap_or_else(|| "null".into()),
        ),
        ("kept", json::opt_string(r.kept.as_deref())),
        ("error", json::opt_string(r.error.as_deref())),
        (
            "backlog_error",
            json::opt_string(r.backlog_error.as_deref()),
        ),
    ])
}

/// Write the record (atomically: a temporary renamed over it). Failing to write it is only
/// worth a warning: the boot must not depend on /run.
pub fn write(r: &LastRollback) {
    let dir = state_dir();
    let tmp = format!("{dir}/last-rollback.json.tmp");
    let res = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&tmp, format!("{}\n", render(r))))
        .and_then(|_| std::fs::rename(&tmp, path()));
    if let Err(e) = res {
        log::warn!("could not write {}: {e}", path());
    }
}

#[cfg(feature = "tools")]
pub fn read() -> Option<LastRollback> {
    std::fs::read_to_string(path()).ok().and_then(|t| parse(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_record_round_trip_and_rejects() {
        let r = crate::clock::Reading {
            real_ns: 1_764_000_000_123_456_789,
            boot_ns: 42_000_000_001,
            boot_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        };
        assert_eq!(parse_baseline_record(&baseline_record(&r)), Some(r));
        for bad in [
            "1\n",
            "",
            "taken realtime-ns=1 boottime-ns=2\n",
            "taken realtime-ns=x boottime-ns=2 boot-id=ab\n",
            "taken realtime-ns=1 boottime-ns=2 boot-id=\n",
            "taken realtime-ns=1 boottime-ns boot-id=ab\n",
        ] {
            assert_eq!(parse_baseline_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        let r = LastRollback {
            result: "ok".into(),
            mode: "wipe".into(),
            time: "2026-11-22T00:48:03Z".into(),
            duration_ms: Some(53),
            kept: Some("2026-11-22T00-48-03Z".into()),
            error: Some("a \"quoted\" \\ thing\nnext".into()),
            backlog_error: None,
        };
        assert_eq!(parse(&render(&r)), Some(r));
        assert!(parse("nope").is_none());
    }
}
